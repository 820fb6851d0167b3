#!/usr/bin/env bash
# Browser test of the API docs: drives the Swagger UI at /docs of `ackgate dev` in headless
# Chromium (Debian's package, through playwright-core; Playwright never downloads a browser).
#
# Usage: scripts/browser-test.sh [extra node --test args...]   e.g. --test-reporter=spec
#
# Environment:
#   ACKGATE_BIN          the gateway binary (default: target/debug/ackgate, built if missing)
#   CHROMIUM             the browser (default: /usr/bin/chromium, apt-installed if missing)
#   BROWSER_TIMEOUT_MS   how long one wait in the browser may take (default: 30000)
#
# Writes target/browser/: docs.png, try-it-out.png, failure-*.png on a failure, ackgate-dev.log.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

OUT="$REPO/target/browser"
LOG="$OUT/ackgate-dev.log"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

step "ensure Chromium ($CHROMIUM)"
if [[ ! -x "$CHROMIUM" ]]; then
    [[ "$CHROMIUM" == /usr/bin/chromium ]] || die "CHROMIUM=$CHROMIUM is not an executable"
    echo "installing Debian's chromium"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
# Debian's wrapper script prints a harmless shell warning on some machines; keep only the version.
"$CHROMIUM" --version 2>/dev/null || die "$CHROMIUM --version failed"

step "ensure Node.js (>= 20) and the test's packages"
command -v node >/dev/null 2>&1 || die "node is not installed (Node.js 20 or newer is needed)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "Node.js $(node --version) is too old: playwright-core needs 20 or newer"
echo "node $(node --version), npm $(npm --version 2>/dev/null)"
(cd tests/browser && npm ci --no-audit --no-fund)

step "ensure the gateway binary"
if [[ -z "${ACKGATE_BIN:-}" ]]; then
    ACKGATE_BIN="target/debug/ackgate"
    if [[ ! -x "$ACKGATE_BIN" ]]; then
        if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
            export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        fi
        echo "$ACKGATE_BIN is missing: cargo build --bin ackgate"
        cargo build --bin ackgate
    fi
fi
[[ -x "$ACKGATE_BIN" ]] || die "ACKGATE_BIN=$ACKGATE_BIN is not an executable"
echo "$ACKGATE_BIN"

step "start ackgate dev"
mkdir -p "$OUT"
rm -f "$OUT"/docs.png "$OUT"/try-it-out.png "$OUT"/failure-*.png
PORT="$(node -e '
const s = require("net").createServer();
s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });
')"
URL="http://127.0.0.1:$PORT"
GATEWAY_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$GATEWAY_PID" ]] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
        step "stop ackgate dev (pid $GATEWAY_PID)"
        kill -TERM "$GATEWAY_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$GATEWAY_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$GATEWAY_PID" 2>/dev/null; then
            echo "still running after 5 s: SIGKILL"
            kill -KILL "$GATEWAY_PID" 2>/dev/null || true
        fi
        wait "$GATEWAY_PID" 2>/dev/null || true
    fi
    if ((rc != 0)) && [[ -n "$GATEWAY_PID" ]]; then
        printf '\n--- last lines of %s ---\n' "$LOG"
        if [[ -s "$LOG" ]]; then tail -n 40 "$LOG"; else echo "(empty)"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$ACKGATE_BIN" dev --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
GATEWAY_PID=$!
echo "pid $GATEWAY_PID on $URL, log $LOG"

step "wait for $URL/readyz"
ready=""
for _ in $(seq 120); do
    kill -0 "$GATEWAY_PID" 2>/dev/null || die "ackgate dev exited before it was ready (see the log below)"
    if node -e '
fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
  .then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1));
' "$URL/readyz"; then
        ready=1
        break
    fi
    sleep 0.5
done
[[ -n "$ready" ]] || die "$URL/readyz did not answer 200 within 60 s"
echo "ready"

step "run the browser test (node --test tests/browser/docs.test.mjs)"
(cd tests/browser && ACKGATE_URL="$URL" node --test "$@" docs.test.mjs)

step "screenshots"
ls -l "$OUT"/docs.png "$OUT"/try-it-out.png
