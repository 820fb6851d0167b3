#!/usr/bin/env bash
# Contract test: Schemathesis generates requests from the gateway's own OpenAPI document and
# checks every answer against it (no 5xx, only documented status codes, documented content
# types, bodies that match the documented schemas).
#
# Usage:
#   scripts/schemathesis.sh [extra `st run` args...]    e.g. --seed 1, or -n 50 --max-time 300
#
# Makes a fresh API key (`ackgate new-key`) and an auth file whose one client may publish to every
# topic and is an operator, starts `ackgate dev` with it (mock Kafka with topic `events`,
# in-memory stores) on a free port, runs Schemathesis against
# http://127.0.0.1:PORT/openapi.json with `Authorization: Bearer <key>` on every request, stops
# the gateway. Exits non-zero on any failure. Schemathesis is installed from PyPI into target/tools/schemathesis-venv when
# missing.
#
# Environment:
#   ACKGATE_BIN       gateway binary (default: target/debug/ackgate; build it first)
#   ST_MAX_EXAMPLES   test cases per operation and phase (default 30)
#   ST_MAX_TIME       time budget of the whole run in seconds (default 75; the fuzzing and
#                     stateful phases repeat until it is spent)
#   ST_WORKERS        concurrent workers (default 2)
#   TOOLS             where tools are cached (default: target/tools)
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# 4.x: OpenAPI 3.1 support, `st run --config-file` with `[parameters]`.
ST_VERSION="4.32.5"
ST_VENV="$TOOLS/schemathesis-venv"
ST="$ST_VENV/bin/st"
# Hypothesis' example database, Schemathesis' cache and any reports stay out of the work tree.
WORK_DIR="$REPO/target/schemathesis"

ensure_schemathesis() {
    if [[ -x "$ST" ]] && [[ "$("$ST" --version 2>/dev/null)" == *" $ST_VERSION" ]]; then
        return 0
    fi
    step "install schemathesis==$ST_VERSION from PyPI into $ST_VENV"
    rm -rf "$ST_VENV"
    venv_install "$ST_VENV" "schemathesis==$ST_VERSION"
    [[ "$("$ST" --version)" == *" $ST_VERSION" ]] || die "installed st is not $ST_VERSION"
}

# Globals, not locals: the EXIT trap runs after the function that set them has returned.
GATEWAY_PID=""
ST_PID=""
GATEWAY_LOG=""
CONFIG=""
AUTH_FILE=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_child "$ST_PID"
    stop_dev_gateway
    if [[ -n "$CONFIG" ]]; then
        rm -f "$CONFIG"
    fi
    if [[ -n "$AUTH_FILE" ]]; then
        rm -f "$AUTH_FILE"
    fi
    if [[ -n "$GATEWAY_LOG" ]]; then
        if ((rc != 0)); then
            show_gateway_log "$GATEWAY_LOG"
        else
            rm -f "$GATEWAY_LOG"
        fi
    fi
    exit "$rc"
}

main() {
    local bin="${ACKGATE_BIN:-$REPO/target/debug/ackgate}"
    [[ -x "$bin" ]] || die "gateway binary not found: $bin (build it with 'cargo build' or set ACKGATE_BIN)"
    ensure_schemathesis
    "$ST" --version

    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    mkdir -p "$WORK_DIR"
    GATEWAY_LOG="$(mktemp "${TMPDIR:-/tmp}/ackgate-schemathesis-XXXXXX.log")"
    # An operator that may publish anywhere: every documented route is reachable with the key,
    # so the run exercises the handlers rather than the 403s.
    AUTH_FILE="$(mktemp "${TMPDIR:-/tmp}/ackgate-schemathesis-XXXXXX.toml")"
    make_auth_file "$bin" "$AUTH_FILE" schemathesis '["*"]' true
    # For the config below (read from the environment, so the key is on no command line).
    export ACKGATE_KEY
    start_dev_gateway "$bin" "$(free_port)" "$GATEWAY_LOG" --topic events:3 \
        --failure-spool-path "$WORK_DIR/dev-failures.spool" --auth-file "$AUTH_FILE"
    local base="$GATEWAY_URL"

    # `path.topic` pins every `{topic}` to the one topic `ackgate dev` has, so the POSTs reach
    # the pipeline and Kafka instead of stopping at 404 topic-not-found. Everything else
    # (idempotency keys, Kafka-Key, headers, bodies, failure ids, queries) is generated.
    # Every request sends the key; Schemathesis substitutes ${ACKGATE_KEY} from the environment.
    # The key lives as long as this run's auth file, so the reports may show it
    # (--output-sanitize false).
    CONFIG="$(mktemp "${TMPDIR:-/tmp}/ackgate-schemathesis-XXXXXX.toml")"
    cat >"$CONFIG" <<'TOML'
headers = { Authorization = "Bearer ${ACKGATE_KEY}" }

[parameters]
"path.topic" = "events"
TOML

    step "schemathesis against $base/openapi.json"
    # Checks: the four the contract promises. Not enabled, and why:
    # - negative_data_rejection / positive_data_acceptance: the document states the rules of
    #   topics and keys in prose, not as JSON Schema patterns, so Schemathesis cannot know which
    #   generated values are valid.
    # - response_headers_conformance, missing_required_header, unsupported_method and the
    #   auth / stateful-resource checks: not part of this contract test.
    # Run in the background and wait, so that a signal to this script is handled at once (bash
    # runs traps only between foreground commands).
    (
        cd "$WORK_DIR"
        exec "$ST" --config-file "$CONFIG" run "$base/openapi.json" \
            --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
            --max-examples "${ST_MAX_EXAMPLES:-30}" \
            --max-time "${ST_MAX_TIME:-75}" \
            --workers "${ST_WORKERS:-2}" \
            --request-timeout 20 \
            --no-color \
            --output-sanitize false \
            "$@"
    ) &
    ST_PID=$!
    local rc=0
    wait "$ST_PID" || rc=$?
    ST_PID=""
    ((rc == 0)) || die "schemathesis found failures (exit code $rc)"
    step "schemathesis: no failures"
}

main "$@"
