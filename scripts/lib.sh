# shellcheck shell=bash
# Shared pieces of the scripts in this folder; each of them sources it first:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# It defines functions and REPO/TOOLS only: no shell options, no traps, no cd (a script sets
# `set -euo pipefail` itself, before sourcing).
#
#   REPO, TOOLS                 the repository; where tools are cached (default: target/tools)
#   step, die                   a `==> step` line; an error line and exit 1
#   ensure_cargo_on_path        add rustup's bin dir to PATH when cargo is not on it
#   as_root, apt_install        run as root (directly or through passwordless sudo); apt-get
#   free_port                   a free TCP port on 127.0.0.1
#   venv_install VENV PKG...    create a Python venv when missing and pip-install into it
#   start_tansu_until_exit      a Tansu broker for this run, stopped when the script exits
#   start_redis_cluster_until_exit  a Redis Cluster (3+3 nodes) for this run, the same way
#   start_dev_gateway           `ackgate dev` on a port, waited for until /readyz answers
#   start_gateway               the same for any subcommand (`serve` with its flags)
#   dev_kafka_address LOG       the mock Kafka's address that `ackgate dev` printed in LOG
#   make_auth_file              a fresh API key (`ackgate new-key`) and an auth file holding it
#   stop_dev_gateway, stop_child, show_gateway_log

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS:-$REPO/target/tools}"

step() { printf '\n==> %s\n' "$*"; }

die() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

# A non-login shell (e.g. CI) may lack rustup's bin dir on PATH.
ensure_cargo_on_path() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
}

# Runs a command as root: directly, or through passwordless sudo; fails otherwise.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        printf '%s: need root (or passwordless sudo) to run: %s\n' "${0##*/}" "$*" >&2
        return 1
    fi
}

APT_UPDATED=0
apt_update_once() {
    if ((APT_UPDATED == 0)); then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null || return 1
        APT_UPDATED=1
    fi
}

# apt_install PACKAGE...: from Debian's packages, without the recommended ones.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    apt_update_once || return 1
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# venv_install VENV PACKAGE...: creates the venv VENV when it has no python (with Debian's
# python3-venv installed first when `python3 -m venv` needs it), then pip-installs the packages.
venv_install() {
    local venv="$1"
    shift
    if [[ ! -x "$venv/bin/python" ]]; then
        mkdir -p "$(dirname "$venv")"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            # Debian's python3 ships venv/ensurepip separately.
            if ! { apt_install python3-venv && python3 -m venv "$venv" >/dev/null 2>&1; }; then
                rm -rf "$venv"
                die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
            fi
        fi
    fi
    PIP_ROOT_USER_ACTION=ignore "$venv/bin/python" -m pip install --quiet \
        --disable-pip-version-check --no-input "$@" >&2 ||
        die "pip install $* failed"
}

# start_tansu_until_exit [PORT]: starts a Tansu broker on PORT (default: a free port) and sets
# KAFKA_PORT. It sets the EXIT, INT and TERM traps to stop the broker (and the Redis Cluster of
# start_redis_cluster_until_exit), so the caller sets none.
start_tansu_until_exit() {
    KAFKA_PORT="${1:-$(free_port)}"
    _stop_test_services_on_exit
    bash "$REPO/scripts/tansu.sh" start "$KAFKA_PORT"
}

# start_redis_cluster_until_exit: a Redis Cluster of 3 masters and 3 replicas
# (scripts/redis-cluster.sh) on the first six consecutive free ports from 30000 (bus ports
# +10000 free too); sets REDIS_CLUSTER_PORT and REDIS_CLUSTER_URL (the seed URLs). Stopped
# when the script exits, as the broker is.
start_redis_cluster_until_exit() {
    local base
    base="$(python3 - <<'PY'
import socket
def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
for base in range(30000, 45500, 10):
    if all(free(p) and free(p + 10000) for p in range(base, base + 6)):
        print(base)
        break
PY
)"
    [[ -n "$base" ]] || die "no six free consecutive ports for the test Redis Cluster"
    REDIS_CLUSTER_PORT="$base"
    _stop_test_services_on_exit
    REDIS_CLUSTER_URL="$(bash "$REPO/scripts/redis-cluster.sh" start "$base")"
}

_stop_test_services_on_exit() {
    trap _stop_test_services EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

_stop_test_services() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "${KAFKA_PORT:-}" ]]; then
        bash "$REPO/scripts/tansu.sh" stop "$KAFKA_PORT" || true
    fi
    if [[ -n "${REDIS_CLUSTER_PORT:-}" ]]; then
        bash "$REPO/scripts/redis-cluster.sh" stop "$REDIS_CLUSTER_PORT" || true
    fi
    exit "$rc"
}

# ensure_gateway_bin: sets ACKGATE_BIN to the gateway binary to run: $ACKGATE_BIN when set (test.sh
# exports the one `cargo test` built), else target/debug/ackgate, built when missing.
ensure_gateway_bin() {
    if [[ -z "${ACKGATE_BIN:-}" ]]; then
        ACKGATE_BIN="$REPO/target/debug/ackgate"
        if [[ ! -x "$ACKGATE_BIN" ]]; then
            ensure_cargo_on_path
            echo "$ACKGATE_BIN is missing: cargo build --bin ackgate"
            (cd "$REPO" && cargo build --bin ackgate)
        fi
    fi
    [[ -x "$ACKGATE_BIN" ]] || die "ACKGATE_BIN=$ACKGATE_BIN is not an executable"
    # Absolute, for scripts that run it from another directory.
    ACKGATE_BIN="$(cd "$(dirname "$ACKGATE_BIN")" && pwd)/$(basename "$ACKGATE_BIN")"
    echo "$ACKGATE_BIN"
}

# start_dev_gateway BIN PORT LOG [DEV ARGS...]: starts `BIN dev --listen 127.0.0.1:PORT` in the
# background with its output in LOG, sets GATEWAY_PID and GATEWAY_URL, and waits until
# GATEWAY_URL/readyz answers (READY_PATH=/healthz: until it is alive, for a gateway whose Kafka
# answers slower than the readiness check waits); dies when the gateway exits first or after
# READY_SECS (default 30). The caller's EXIT trap should call stop_dev_gateway.
start_dev_gateway() {
    local bin="$1" port="$2" log="$3"
    shift 3
    start_gateway "$bin" "$port" "$log" dev "$@"
}

# start_gateway BIN PORT LOG SUBCOMMAND [ARGS...]: start_dev_gateway for any subcommand, e.g.
# `start_gateway "$bin" "$port" "$log" serve --kafka-brokers ... --redis-url ...`.
start_gateway() {
    local bin="$1" port="$2" log="$3" subcommand="$4"
    shift 4
    command -v curl >/dev/null 2>&1 || die "curl is needed to wait for the gateway"
    GATEWAY_URL="http://127.0.0.1:$port"
    step "start $bin $subcommand on 127.0.0.1:$port"
    NO_COLOR=1 "$bin" "$subcommand" --listen "127.0.0.1:$port" "$@" >"$log" 2>&1 &
    GATEWAY_PID=$!
    local i
    for ((i = 0; i < ${READY_SECS:-30} * 5; i++)); do
        if curl -fsS -o /dev/null --max-time 1 "$GATEWAY_URL${READY_PATH:-/readyz}" 2>/dev/null; then
            echo "ready: $GATEWAY_URL (pid $GATEWAY_PID, log $log)"
            return 0
        fi
        kill -0 "$GATEWAY_PID" 2>/dev/null || die "gateway exited during start-up"
        sleep 0.2
    done
    die "gateway not ready after ${READY_SECS:-30} s"
}

# dev_kafka_address LOG: the bootstrap servers of the mock cluster that `ackgate dev` printed in
# its banner in LOG (the `  kafka  HOST:PORT,…` line); dies when there is none.
dev_kafka_address() {
    local address
    address="$(sed -n 's/^ *kafka  *\([^ ]*\) .*/\1/p' "$1" | head -n 1)"
    [[ -n "$address" ]] || die "no 'kafka <address>' line in $1 (the ackgate dev banner changed?)"
    echo "$address"
}

# make_auth_file BIN FILE NAME PRODUCE [OPERATOR]: makes a fresh API key with `BIN new-key`,
# writes FILE (mode 0600) as an auth file with one client NAME that may publish to PRODUCE (a
# TOML array, e.g. '["*"]') and is an operator when OPERATOR is `true` (default false), and
# sets ACKGATE_KEY to the secret (not exported, never printed). The key exists for this run only.
make_auth_file() {
    local bin="$1" file="$2" name="$3" produce="$4" operator="${5:-false}" out secret digest
    out="$("$bin" new-key --name "$name")" || die "$bin new-key failed"
    # new-key prints the secret on the first line that is neither blank nor a comment, then the
    # entry with `key_sha256 = "<hex>"`.
    secret="$(printf '%s\n' "$out" | grep -v -e '^#' -e '^[[:space:]]*$' | head -n 1)"
    digest="$(printf '%s\n' "$out" | sed -n 's/^key_sha256 = "\([0-9a-f]\{64\}\)".*/\1/p')"
    [[ -n "$secret" && "$secret" != '['* && -n "$digest" ]] ||
        die "could not read the secret and its SHA-256 from '$bin new-key' (its output changed?)"
    (
        umask 077
        cat >"$file" <<TOML
# Made by ${0##*/} for one run; the key is thrown away with this file.
[[clients]]
name = "$name"
key_sha256 = "$digest"
produce = $produce
operator = $operator
TOML
    )
    ACKGATE_KEY="$secret"
}

# stop_dev_gateway [GRACE_SECS]: SIGTERM to GATEWAY_PID (ackgate drains and exits), SIGKILL
# after GRACE_SECS (default 10), then reaps it. Does nothing when it is not running.
stop_dev_gateway() {
    local grace="${1:-10}" i
    if [[ -z "${GATEWAY_PID:-}" ]] || ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
        return 0
    fi
    kill -TERM "$GATEWAY_PID" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$GATEWAY_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$GATEWAY_PID" 2>/dev/null; then
        echo "gateway did not stop within $grace s: killing it" >&2
        kill -KILL "$GATEWAY_PID" 2>/dev/null || true
    fi
    wait "$GATEWAY_PID" 2>/dev/null || true
}

# stop_child PID: stops a background child (k6, schemathesis) and reaps it.
stop_child() {
    local pid="${1:-}"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

# show_gateway_log LOG: the last 40 lines of the gateway's log, on stderr (after a failure).
show_gateway_log() {
    echo "--- gateway log (last 40 lines): $1" >&2
    if [[ -s "$1" ]]; then tail -n 40 "$1" >&2; else echo "(empty)" >&2; fi
}
