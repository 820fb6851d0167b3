#!/usr/bin/env bash
# Browser test of the API docs: drives the Swagger UI at /docs of `ackgate dev` in headless
# Chromium (Debian's package, through playwright-core; Playwright never downloads a browser).
# The gateway runs with an auth file holding a fresh API key (`ackgate new-key`) that may publish
# to `events`; the test gets the key as ACKGATE_KEY and enters it through Authorize.
#
# Usage: scripts/browser-test.sh [extra node --test args...]   e.g. --test-reporter=spec
#
# Environment:
#   ACKGATE_BIN          the gateway binary (default: target/debug/ackgate, built if missing)
#   CHROMIUM             the browser (default: /usr/bin/chromium, apt-installed if missing)
#   BROWSER_TIMEOUT_MS   how long one wait in the browser may take (default: 30000)
#
# Writes target/browser/: docs.png, try-it-out-401.png, authorized.png, try-it-out.png,
# failure-*.png on a failure, ackgate-dev.log.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

OUT="$REPO/target/browser"
LOG="$OUT/ackgate-dev.log"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

step "ensure Chromium ($CHROMIUM)"
if [[ ! -x "$CHROMIUM" ]]; then
    [[ "$CHROMIUM" == /usr/bin/chromium ]] || die "CHROMIUM=$CHROMIUM is not an executable"
    echo "installing Debian's chromium"
    { apt_update_once && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } ||
        die "could not install chromium"
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
ensure_gateway_bin

step "start ackgate dev"
mkdir -p "$OUT"
SHOTS=(docs.png try-it-out-401.png authorized.png try-it-out.png)
rm -f "${SHOTS[@]/#/$OUT/}" "$OUT"/failure-*.png
GATEWAY_PID=""
AUTH_FILE=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_dev_gateway 5
    [[ -z "$AUTH_FILE" ]] || rm -f "$AUTH_FILE"
    if ((rc != 0)) && [[ -n "$GATEWAY_PID" ]]; then
        show_gateway_log "$LOG"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# A key that may publish to `events` (the topic dev creates), for this run only: the auth file
# goes with it, so the key the screenshots may show opens nothing afterwards.
AUTH_FILE="$(mktemp "${TMPDIR:-/tmp}/ackgate-browser-XXXXXX.toml")"
make_auth_file "$ACKGATE_BIN" "$AUTH_FILE" browser-test '["events"]'
# Its spool (and the spool's lock file) in the output directory, not the working directory.
READY_SECS=60 start_dev_gateway "$ACKGATE_BIN" "$(free_port)" "$LOG" \
    --failure-spool-path "$OUT/ackgate-dev.spool" --auth-file "$AUTH_FILE"
URL="$GATEWAY_URL"

step "run the browser test (node --test tests/browser/docs.test.mjs)"
(cd tests/browser && ACKGATE_URL="$URL" ACKGATE_KEY="$ACKGATE_KEY" node --test "$@" docs.test.mjs)

step "screenshots"
ls -l "${SHOTS[@]/#/$OUT/}"
