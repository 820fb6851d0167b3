#!/usr/bin/env bash
# Benchmark of ackgate against its physical limits (benches/gateway/main.rs; see bench/README.md).
#
# Usage: scripts/bench.sh [--quick] [--perf] [--soak] [-- extra bench flags]
#
#   (full)    windows 64,256,1024, 1 KiB events, 15 s measured (+2 s warm-up) per phase,
#             the batch phase (100 events per request, ~1024 outstanding), Redis memory per
#             record (100 000 records), the half-rate latency comparison and the overload
#             phase (~12 minutes); results in bench/results/<date>-<sha>.{jsonl,md,svg}
#   --quick   what CI runs: window 64, 3 s per phase, a short batch phase, a 5 000-record
#             memory phase, short overload (< 2 min once built); fails only if the benchmark
#             is broken (errors, no throughput, unexpected answers), never on a number;
#             results in target/bench/results/
#   --perf    also profile one extra gateway phase with `perf record` (installs linux-perf
#             from Debian's packages when missing); the report goes next to the results
#   --soak    also run one gateway for 10 minutes at the largest window, RSS sampled every
#             second (ACKGATE_BENCH_SOAK_SECS sets another length)
#
# Ensures Redis on 127.0.0.1:6379 (scripts/redis.sh), installs wrk when missing (Debian's
# package; the gateway_wrk phase), starts a Tansu broker of its own on a free port (stopped on
# exit), builds target/release/ackgate and the bench binary, and runs it.
# Any ACKGATE_BENCH_* variable (see `--help` of the bench binary) overrides a setting, e.g.
#   ACKGATE_BENCH_WINDOWS=256 ACKGATE_BENCH_DURATION_SECS=30 scripts/bench.sh
#   ACKGATE_BENCH_GATEWAY_ARGS='--log-filter warn' scripts/bench.sh
#   ACKGATE_BENCH_BASELINE_BIN=/path/to/older/ackgate scripts/bench.sh   # before / after
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

QUICK=0
PERF=0
EXTRA=()
while (($#)); do
    case "$1" in
    --quick) QUICK=1 ;;
    --perf) PERF=1 ;;
    --soak) export ACKGATE_BENCH_SOAK_SECS="${ACKGATE_BENCH_SOAK_SECS:-600}" ;;
    --) shift; EXTRA+=("$@"); break ;;
    -h | --help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ensure_cargo_on_path

step "ensure Redis on 127.0.0.1:6379"
bash scripts/redis.sh

if ((PERF)) && ! command -v perf >/dev/null 2>&1; then
    step "install perf (linux-perf)"
    apt_install linux-perf || echo "could not install linux-perf; the run goes on without a profile" >&2
fi

if ! command -v wrk >/dev/null 2>&1; then
    step "install wrk (the load generator of the gateway_wrk phase)"
    apt_install wrk || echo "could not install wrk; the run goes on without the gateway_wrk phase" >&2
fi

step "build (release): the gateway and the bench"
cargo build --release --locked --bin ackgate
BENCH_BIN="$(cargo bench --locked --bench gateway --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    target = msg.get("target") or {}
    if msg.get("reason") == "compiler-artifact" and target.get("name") == "gateway" \
            and "bench" in target.get("kind", []) and msg.get("executable"):
        print(msg["executable"])
')"
if [[ -z "$BENCH_BIN" || ! -x "$BENCH_BIN" ]]; then
    # Show the compiler's errors.
    cargo bench --locked --bench gateway --no-run
    echo "could not find the bench executable" >&2
    exit 1
fi
echo "bench binary: $BENCH_BIN"

step "start a Tansu broker of the bench's own"
start_tansu_until_exit

export ACKGATE_BENCH_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export ACKGATE_BENCH_REDIS_URL="${ACKGATE_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
# Another build of the gateway (e.g. a patched one) can be measured with ACKGATE_BENCH_GATEWAY_BIN.
export ACKGATE_BENCH_GATEWAY_BIN="${ACKGATE_BENCH_GATEWAY_BIN:-$REPO/target/release/ackgate}"
ACKGATE_BENCH_BROKER_PID="$(cat "target/tansu-$KAFKA_PORT.pid")"
ACKGATE_BENCH_BROKER_VERSION="$("$(bash scripts/tansu.sh path)" --version 2>/dev/null || echo tansu)"
export ACKGATE_BENCH_BROKER_PID ACKGATE_BENCH_BROKER_VERSION
# The memory phase starts a Redis of its own (scripts/redis.sh installed it).
ACKGATE_BENCH_REDIS_SERVER="${ACKGATE_BENCH_REDIS_SERVER:-$(command -v redis-server)}"
export ACKGATE_BENCH_REDIS_SERVER
export ACKGATE_BENCH_WORK_DIR="${ACKGATE_BENCH_WORK_DIR:-$REPO/target/bench}"

ARGS=()
if ((QUICK)); then
    export ACKGATE_BENCH_WINDOWS="${ACKGATE_BENCH_WINDOWS:-64}"
    export ACKGATE_BENCH_DURATION_SECS="${ACKGATE_BENCH_DURATION_SECS:-3}"
    export ACKGATE_BENCH_WARMUP_SECS="${ACKGATE_BENCH_WARMUP_SECS:-1}"
    export ACKGATE_BENCH_OVERLOAD_SECS="${ACKGATE_BENCH_OVERLOAD_SECS:-3}"
    export ACKGATE_BENCH_CALM_SECS="${ACKGATE_BENCH_CALM_SECS:-2}"
    export ACKGATE_BENCH_MEMORY_RECORDS="${ACKGATE_BENCH_MEMORY_RECORDS:-5000}"
    export ACKGATE_BENCH_OUT_DIR="${ACKGATE_BENCH_OUT_DIR:-$REPO/target/bench/results}"
    ARGS+=(--quick)
else
    export ACKGATE_BENCH_OUT_DIR="${ACKGATE_BENCH_OUT_DIR:-$REPO/bench/results}"
fi
((PERF)) && ARGS+=(--perf)

# One connection per outstanding event, on both sides of loopback.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

step "bench ($( ((QUICK)) && echo quick || echo full )); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
started=$SECONDS
"$BENCH_BIN" "${ARGS[@]}" "${EXTRA[@]}"
echo "bench finished in $((SECONDS - started)) s"
