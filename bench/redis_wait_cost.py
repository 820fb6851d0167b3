"""What WAIT would cost each settled key on a Redis Cluster master: SET alone vs SET + WAIT 1.

Redis replicates asynchronously: a master that dies right after acknowledging a write may take
it with it (ackgate's failover test counts such lost records). `WAIT 1 <ms>` after a write
blocks until one replica has it. This measures what that costs a writer, on one connection and
on eight, against a master of a test cluster:

    scripts/redis-cluster.sh start 31000
    python3 -m venv /tmp/rv && /tmp/rv/bin/pip install redis==5.2.1
    /tmp/rv/bin/python bench/redis_wait_cost.py 31000
    scripts/redis-cluster.sh stop 31000

The keys share one hash tag, `{w}`, so that they all live on one master, whose port is found
from CLUSTER NODES; it is a measurement, not a test (the figures depend on the machine).
"""

import sys
import threading
import time

import redis

N = 3000


def master_of(port: int, key: str) -> int:
    node = redis.Redis(port=port)
    slot = node.execute_command("CLUSTER", "KEYSLOT", key)
    for line in node.execute_command("CLUSTER", "NODES").decode().splitlines():
        fields = line.split()
        if "master" not in fields[2]:
            continue
        for span in fields[8:]:
            start, _, end = span.partition("-")
            if int(start) <= slot <= int(end or start):
                return int(fields[1].split("@")[0].split(":")[1])
    raise SystemExit(f"no master owns slot {slot}")


def run(port: int, wait: bool, connections: int) -> float:
    def work(tid: int) -> None:
        conn = redis.Redis(port=port)
        for i in range(N):
            conn.set(f"{{w}}:{tid}:{i}", "x" * 60, px=60_000)
            if wait:
                conn.execute_command("WAIT", 1, 1000)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def main() -> None:
    port = master_of(int(sys.argv[1]) if len(sys.argv) > 1 else 31000, "{w}")
    for connections in (1, 8):
        alone = run(port, False, connections)
        waited = run(port, True, connections)
        print(
            f"{connections} connection(s): SET {N * connections / alone:,.0f} writes/s "
            f"({alone / N * 1e6:,.0f} us each), SET + WAIT 1 {N * connections / waited:,.0f} "
            f"writes/s ({waited / N * 1e6:,.0f} us each): {alone / waited:.2f}x"
        )


if __name__ == "__main__":
    main()
