#!/usr/bin/env bash
# Generated clients against a running gateway: generates clients from openapi/openapi.json with
# widely used generators, type-checks each with its driver, and drives `ackgate dev` with them
# (publish, replay, status, a reused key, no token, a batch, a 202 from a slow Kafka).
#   - Python: openapi-python-client; drive.py under mypy --strict.
#   - TypeScript: openapi-typescript + openapi-fetch; drive.ts under tsc --strict.
#   - OpenAPI Generator: `validate`, and its typescript-fetch client with drive-fetch.ts. (Its
#     Java clients need Jackson and more from Maven Central, which these machines cannot reach.)
# A generator warning this script does not expect fails the run: the document is to be fixed.
#
# Usage: scripts/generated-clients.sh
#
# Environment:
#   ACKGATE_BIN   the gateway binary (default: target/debug/ackgate, built if missing)
#
# Writes target/clients/ (the generated code, never committed) and its gateway logs.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

OUT="$REPO/target/clients"
CLIENTS="$REPO/tests/clients"
VENV="$TOOLS/clients-venv"

step "ensure the tools (Python venv $VENV, npm ci in tests/clients/typescript, Java)"
venv_install "$VENV" -r "$CLIENTS/python/requirements.txt"
command -v node >/dev/null 2>&1 || die "node is not installed (Node.js 20 or newer is needed)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "Node.js $(node --version) is too old: the drivers need 20 or newer (fetch)"
command -v java >/dev/null 2>&1 || die "java is not installed (OpenAPI Generator runs on it)"
(cd "$CLIENTS/typescript" && npm ci --no-audit --no-fund --loglevel=error)
TSC="$CLIENTS/typescript/node_modules/.bin/tsc"
export PATH="$VENV/bin:$PATH"

step "ensure the gateway binary"
if [[ -z "${ACKGATE_BIN:-}" ]]; then
    ACKGATE_BIN="target/debug/ackgate"
    if [[ ! -x "$ACKGATE_BIN" ]]; then
        ensure_cargo_on_path
        echo "$ACKGATE_BIN is missing: cargo build --bin ackgate"
        cargo build --bin ackgate
    fi
fi
[[ -x "$ACKGATE_BIN" ]] || die "ACKGATE_BIN=$ACKGATE_BIN is not an executable"
echo "$ACKGATE_BIN"
# The checked-in document is what users generate from; it must be the binary's.
cmp -s <("$ACKGATE_BIN" openapi) openapi/openapi.json ||
    die "openapi/openapi.json is not what $ACKGATE_BIN prints (cargo run -q -- openapi > openapi/openapi.json)"

# unexpected_warnings LOG WARNING ACCEPTED: the lines of LOG that match WARNING and not ACCEPTED
# (extended regular expressions).
unexpected_warnings() {
    grep -E "$2" "$1" | grep -Ev "$3" || true
}

rm -rf "$OUT"
mkdir -p "$OUT"

step "generate: openapi-python-client $(openapi-python-client --version | awk '{print $NF}')"
openapi-python-client generate --path openapi/openapi.json --meta none \
    --output-path "$OUT/python/ackgate_client" >"$OUT/python-generate.log" 2>&1 ||
    { cat "$OUT/python-generate.log"; die "openapi-python-client failed"; }
bad="$(unexpected_warnings "$OUT/python-generate.log" '[Ww]arn|WARN|^ERROR|not in PATH' '^$')"
[[ -z "$bad" ]] || { cat "$OUT/python-generate.log"; die "openapi-python-client warned: $bad"; }

step "type-check: mypy --strict (generated package and drive.py)"
MYPYPATH="$OUT/python" mypy --config-file "$CLIENTS/python/mypy.ini" --cache-dir "$TOOLS/clients-mypy-cache" \
    "$CLIENTS/python/drive.py" "$OUT/python/ackgate_client"

step "generate: openapi-typescript $(node -p 'require("./tests/clients/typescript/node_modules/openapi-typescript/package.json").version')"
mkdir -p "$OUT/typescript"
"$CLIENTS/typescript/node_modules/.bin/openapi-typescript" openapi/openapi.json \
    -o "$OUT/typescript/schema.d.ts" >"$OUT/typescript-generate.log" 2>&1 ||
    { cat "$OUT/typescript-generate.log"; die "openapi-typescript failed"; }
bad="$(unexpected_warnings "$OUT/typescript-generate.log" '[Ww]arn|WARN|[Ee]rror|ERROR' '^$')"
[[ -z "$bad" ]] || { cat "$OUT/typescript-generate.log"; die "openapi-typescript warned: $bad"; }

step "type-check and compile: tsc (strict) drive.ts"
cp "$CLIENTS/typescript/drive.ts" "$CLIENTS/typescript/tsconfig.json" "$CLIENTS/typescript/package.json" \
    "$OUT/typescript/"
ln -sfn "$CLIENTS/typescript/node_modules" "$OUT/typescript/node_modules"
"$TSC" -p "$OUT/typescript"

step "OpenAPI Generator $(openapi-generator-cli version 2>/dev/null | tail -n 1): validate"
openapi-generator-cli validate -i openapi/openapi.json

step "generate: OpenAPI Generator typescript-fetch"
# It says that 3.1 support is in beta, and logs one "Failed to get the schema name: null" for the
# document's untyped (any JSON) schemas; other warnings fail the run.
openapi-generator-cli generate -g typescript-fetch -i openapi/openapi.json \
    -o "$OUT/typescript-fetch/generated" \
    --additional-properties=supportsES6=true,importFileExtension=.js >"$OUT/typescript-fetch-generate.log" 2>&1 ||
    { cat "$OUT/typescript-fetch-generate.log"; die "openapi-generator-cli generate failed"; }
bad="$(unexpected_warnings "$OUT/typescript-fetch-generate.log" '^\[main\] (WARN|ERROR)' \
    'OpenAPI 3\.1 support is still in beta|Failed to get the schema name: null')"
[[ -z "$bad" ]] || { cat "$OUT/typescript-fetch-generate.log"; die "OpenAPI Generator warned: $bad"; }

step "type-check and compile: tsc (strict) drive-fetch.ts"
cp "$CLIENTS/typescript/drive-fetch.ts" "$CLIENTS/typescript/package.json" "$OUT/typescript-fetch/"
cp "$CLIENTS/typescript/tsconfig.fetch.json" "$OUT/typescript-fetch/tsconfig.json"
ln -sfn "$CLIENTS/typescript/node_modules" "$OUT/typescript-fetch/node_modules"
"$TSC" -p "$OUT/typescript-fetch"

step "start two gateways: ackgate dev, and one whose Kafka answers after the wait timeout"
FAST_PID="" SLOW_PID="" AUTH_FILE=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    GATEWAY_PID="$FAST_PID" stop_dev_gateway 5
    GATEWAY_PID="$SLOW_PID" stop_dev_gateway 5
    [[ -z "$AUTH_FILE" ]] || rm -f "$AUTH_FILE"
    if ((rc != 0)) && [[ -n "$FAST_PID" ]]; then
        show_gateway_log "$OUT/ackgate-dev.log"
        [[ -z "$SLOW_PID" ]] || show_gateway_log "$OUT/ackgate-dev-slow.log"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
AUTH_FILE="$(mktemp "${TMPDIR:-/tmp}/ackgate-clients-XXXXXX.toml")"
make_auth_file "$ACKGATE_BIN" "$AUTH_FILE" generated-clients '["events"]'
READY_SECS=60 start_dev_gateway "$ACKGATE_BIN" "$(free_port)" "$OUT/ackgate-dev.log" \
    --failure-spool-path "$OUT/ackgate-dev.spool" --auth-file "$AUTH_FILE"
FAST_PID="$GATEWAY_PID" FAST_URL="$GATEWAY_URL"
READY_SECS=60 start_dev_gateway "$ACKGATE_BIN" "$(free_port)" "$OUT/ackgate-dev-slow.log" \
    --failure-spool-path "$OUT/ackgate-dev-slow.spool" --auth-file "$AUTH_FILE" \
    --kafka-rtt-ms 700 --wait-timeout-ms 200
SLOW_PID="$GATEWAY_PID" SLOW_URL="$GATEWAY_URL"
export ACKGATE_URL="$FAST_URL" ACKGATE_SLOW_URL="$SLOW_URL" ACKGATE_KEY

step "drive: Python (openapi-python-client)"
PYTHONPATH="$OUT/python" "$VENV/bin/python" "$CLIENTS/python/drive.py"

step "drive: TypeScript (openapi-typescript + openapi-fetch)"
node "$OUT/typescript/out/drive.js"

step "drive: TypeScript (OpenAPI Generator typescript-fetch)"
node "$OUT/typescript-fetch/out/drive-fetch.js"

step "generated clients: all checks passed"
