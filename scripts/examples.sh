#!/usr/bin/env bash
# Runs the hand-written client examples (examples/python, examples/javascript, examples/java)
# against `ackgate dev` gateways and checks from outside that each keeps the contract's retry
# rules: tests/examples/check.py drives them through a fault proxy of its own
# (tests/examples/fault_proxy.py), and `ackgate audit` reads every topic back: exactly one
# record per acknowledged key, no duplicates.
#
# Usage: scripts/examples.sh [python|javascript|java ...]      (default: all three)
#
# Environment:
#   ACKGATE_BIN   the gateway binary (default: target/debug/ackgate, built if missing)
#
# Needs python3, node (20 or newer) and java (17 or newer); installs nothing. Writes
# target/examples/: each example's stderr (<language>.log), the acks files and audit reports,
# the gateways' logs.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

OUT="$REPO/target/examples"
LANGUAGES=("$@")
((${#LANGUAGES[@]} > 0)) || LANGUAGES=(python javascript java)

step "check the example runtimes"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed (the Python example and the checks need it)"
command -v node >/dev/null 2>&1 || die "node is not installed (the JavaScript example needs Node.js 20 or newer)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "Node.js $(node --version) is too old: the JavaScript example needs 20 or newer (global fetch)"
command -v java >/dev/null 2>&1 || die "java is not installed (the Java example needs a JDK 17 or newer)"
java_major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')"
if [[ -z "$java_major" ]] || ((java_major < 17)); then
    die "java ${java_major:-?} is too old: the Java example needs 17 or newer"
fi
echo "$(python3 --version), node $(node --version), java $java_major"

step "ensure the gateway binary"
ensure_gateway_bin

rm -rf "$OUT"
mkdir -p "$OUT"
JAVA_CLASSES=()
if command -v javac >/dev/null 2>&1; then
    # Compiled once: `java Publish.java` would compile it again for every run.
    step "javac examples/java/Publish.java"
    javac -d "$OUT/java-classes" examples/java/Publish.java
    JAVA_CLASSES=(--java-classes "$OUT/java-classes")
fi

GATEWAY_PIDS=()
AUTH_FILE=""
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${GATEWAY_PIDS[@]}"; do
        GATEWAY_PID="$pid"
        stop_dev_gateway 5
    done
    [[ -z "$AUTH_FILE" ]] || rm -f "$AUTH_FILE" "$AUTH_FILE.rated"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "make the clients' keys (for this run only)"
# Two clients in one auth file: `examples` publishes to the three topics, `examples-rated` too
# but with `rate = 2` (events/s), for the 429 scenario. The examples must send the token.
AUTH_FILE="$(mktemp "${TMPDIR:-/tmp}/ackgate-examples-XXXXXX.toml")"
make_auth_file "$ACKGATE_BIN" "$AUTH_FILE.rated" examples-rated '["py", "js", "java"]'
EXAMPLES_RATED_KEY="$ACKGATE_KEY"
echo "rate = 2" >>"$AUTH_FILE.rated"
make_auth_file "$ACKGATE_BIN" "$AUTH_FILE" examples '["py", "js", "java"]'
EXAMPLES_KEY="$ACKGATE_KEY"
cat "$AUTH_FILE.rated" >>"$AUTH_FILE"
rm -f "$AUTH_FILE.rated"

GATEWAYS_FILE="$OUT/gateways.txt"
: >"$GATEWAYS_FILE"
# add_gateway NAME WAIT [DEV ARGS...]: starts `ackgate dev` with the three topics and the auth
# file, and appends "NAME URL KAFKA" to GATEWAYS_FILE (KAFKA read from the banner). WAIT is
# `ready` (waits for /readyz) or `alive` (waits for /healthz: /readyz asks Kafka with a 1 s
# limit, longer than a very slow mock Kafka answers; the banner is printed before either answers).
add_gateway() {
    local name="$1" wait="$2" port log kafka
    shift 2
    port="$(free_port)"
    log="$OUT/gateway-$name.log"
    local args=(--topic py --topic js --topic java --auth-file "$AUTH_FILE"
        --failure-spool-path "$OUT/gateway-$name.spool" "$@")
    local ready_path=/readyz
    [[ "$wait" == ready ]] || ready_path=/healthz
    READY_PATH="$ready_path" start_dev_gateway "$ACKGATE_BIN" "$port" "$log" "${args[@]}"
    GATEWAY_PIDS+=("$GATEWAY_PID")
    kafka="$(dev_kafka_address "$log")"
    echo "$name http://127.0.0.1:$port $kafka" >>"$GATEWAYS_FILE"
}

# Fast: plain publishes, replays, dropped and held answers, 429, 422.
add_gateway plain ready
# Slow Kafka (each broker answers 600 ms late): the example's 250 ms timeout fires, its retry
# finds the key in flight (409 + Retry-After), then gets the replayed 201.
add_gateway slow ready --kafka-rtt-ms 600
# Slow Kafka and a 150 ms wait: a real 202 whose Location the example polls.
add_gateway accept ready --kafka-rtt-ms 600 --wait-timeout-ms 150
# A delivery that times out while its produce request is out: 504 delivery-timed-out,
# possibly_persisted. The topic check (one metadata request, limited by the delivery timeout)
# must succeed, so the Kafka answers late (1900 ms, below the 4000 ms delivery timeout) and
# linger.ms holds the produce request back until 3600 ms (out before the timeout): its answer
# would come at 5500 ms. librdkafka looks for timed-out requests once a second, so it sees this
# one between 4000 and 5000 ms: always before the answer. (With the answer inside that second,
# some deliveries were persisted instead.)
# A timed-out produce makes the next deliveries of that producer wait for its late answer, so
# each language gets a fresh gateway for its first such delivery.
for lang in "${LANGUAGES[@]}"; do
    add_gateway "timeout-$lang" alive --kafka-rtt-ms 1900 --delivery-timeout-ms 4000 \
        --wait-timeout-ms 7000 --kafka-property linger.ms=3600
    # The same delivery answered 202 first: the example polls Location until `failed`.
    add_gateway "accept-timeout-$lang" alive --kafka-rtt-ms 1900 --delivery-timeout-ms 4000 \
        --wait-timeout-ms 500 --kafka-property linger.ms=3600
done

step "run the examples' scenarios (tests/examples/check.py)"
ACKGATE_BIN="$ACKGATE_BIN" EXAMPLES_KEY="$EXAMPLES_KEY" EXAMPLES_RATED_KEY="$EXAMPLES_RATED_KEY" \
    python3 tests/examples/check.py --gateways "$GATEWAYS_FILE" --out "$OUT" \
    "${JAVA_CLASSES[@]}" "${LANGUAGES[@]}"
