#!/usr/bin/env bash
# A local Redis Cluster for tests: 3 masters and 3 replicas of Debian's redis-server, on six
# consecutive ports, each node in its own directory with an append-only file, a short
# cluster-node-timeout so that a killed master's replica takes over within a couple of seconds.
#
# Usage:
#   scripts/redis-cluster.sh start PORT   nodes on PORT..PORT+5 (PORT+5 <= 55535, so that the
#                                         cluster bus ports, +10000, stay valid); prints the
#                                         seed URLs, comma-separated, once the cluster is ok
#   scripts/redis-cluster.sh stop PORT    stops the nodes and removes their directory
#
# Each node keeps its pid in target/redis-cluster-PORT/NODE_PORT/redis.pid (tests kill masters).
#
# Environment: ACKGATE_CLUSTER_NODE_TIMEOUT_MS (default 1000), ACKGATE_TEST_REDIS_SERVER
# (default: redis-server on PATH). Nothing here touches the shared Redis on 6379.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command="${1:-}"
port="${2:-}"
[[ "$port" =~ ^[0-9]+$ ]] || die "usage: $0 start|stop PORT"
((port + 5 <= 55535)) || die "PORT+5 must be at most 55535 (the cluster bus uses port+10000)"
dir="$REPO/target/redis-cluster-$port"
server="${ACKGATE_TEST_REDIS_SERVER:-$(command -v redis-server || true)}"
node_timeout="${ACKGATE_CLUSTER_NODE_TIMEOUT_MS:-1000}"
ports=("$port" $((port + 1)) $((port + 2)) $((port + 3)) $((port + 4)) $((port + 5)))

cluster_state() {
    redis-cli -p "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p'
}

start() {
    [[ -x "$server" ]] || die "redis-server not found (scripts/redis.sh installs it)"
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found (scripts/redis.sh installs it)"
    stop >/dev/null 2>&1 || true
    mkdir -p "$dir"
    for p in "${ports[@]}"; do
        mkdir -p "$dir/$p"
        "$server" --port "$p" --bind 127.0.0.1 --dir "$dir/$p" --daemonize yes \
            --pidfile "$dir/$p/redis.pid" --logfile "$dir/$p/redis.log" \
            --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout "$node_timeout" \
            --appendonly yes --save "" --maxmemory-policy noeviction </dev/null
    done
    for p in "${ports[@]}"; do
        local deadline=$((SECONDS + 15))
        until [[ "$(redis-cli -p "$p" ping 2>/dev/null)" == PONG ]]; do
            ((SECONDS < deadline)) || die "node $p did not answer PING within 15 s ($dir/$p/redis.log)"
            sleep 0.1
        done
    done
    local nodes=()
    for p in "${ports[@]}"; do nodes+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
        || { cat "$dir/create.log" >&2; die "redis-cli --cluster create failed"; }
    local deadline=$((SECONDS + 30))
    for p in "${ports[@]}"; do
        until [[ "$(cluster_state "$p")" == ok ]]; do
            ((SECONDS < deadline)) || die "the cluster is not ok on node $p within 30 s"
            sleep 0.2
        done
    done
    # Every replica attached to its master, so that a failover has someone to promote.
    until (($(redis-cli -p "$port" cluster nodes | grep -c ' slave ') == 3)); do
        ((SECONDS < deadline)) || die "the replicas did not attach within 30 s"
        sleep 0.2
    done
    local urls=()
    for p in "${ports[@]:0:3}"; do urls+=("redis://127.0.0.1:$p"); done
    (IFS=,; echo "${urls[*]}")
}

stop() {
    for p in "${ports[@]}"; do
        if [[ -f "$dir/$p/redis.pid" ]]; then
            kill "$(cat "$dir/$p/redis.pid")" 2>/dev/null || true
        fi
    done
    for p in "${ports[@]}"; do
        local deadline=$((SECONDS + 10))
        while redis-cli -p "$p" ping >/dev/null 2>&1; do
            ((SECONDS < deadline)) || break
            sleep 0.1
        done
    done
    rm -rf "$dir"
}

case "$command" in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop PORT" ;;
esac
