#!/usr/bin/env bash
# Ensure redis-server/redis-cli are installed and that a Redis answers PING on
# 127.0.0.1:6379. If none answers, start one (daemonized, no persistence).
# An already running Redis on 6379 is shared and is never stopped or restarted.
set -euo pipefail

HOST=127.0.0.1
PORT=6379

log() { echo "[redis.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not available; install $* manually"
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
        sudo=(sudo)
    fi
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
        apt_updated=1
    fi
    log "apt-get install -y $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >&2
}

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server redis-tools
fi
command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after install"
command -v redis-cli >/dev/null 2>&1 || die "redis-cli still missing after install"

ping_ok() {
    [[ "$(timeout 3 redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null || true)" == "PONG" ]]
}

if ping_ok; then
    log "redis already answering on $HOST:$PORT (left as is)"
    exit 0
fi

log "no redis answering on $HOST:$PORT; starting one"
redis-server --daemonize yes --bind "$HOST" --port "$PORT" --save "" --appendonly no >&2 </dev/null \
    || die "redis-server failed to start"

deadline=$((SECONDS + 15))
until ping_ok; do
    if ((SECONDS >= deadline)); then
        die "redis on $HOST:$PORT did not answer PING within 15s"
    fi
    sleep 0.2
done
log "redis answering on $HOST:$PORT"
