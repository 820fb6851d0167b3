"""A small HTTP/1.1 fault proxy for the client examples' checks (Python asyncio, stdlib only).

It sits between an example and one gateway, forwards each request (one per connection: it asks
the gateway for `Connection: close` and closes the client's connection after the answer) and
records every request: method, path, Idempotency-Key, the gateway's status, problem code,
persistence, Retry-After and Idempotent-Replayed. So the driver can check from outside how many
attempts carried which key and what each got.

On command (`fault`) it spoils the FIRST POST of each key after the gateway answered it:
  "drop"  closes the client's connection without the answer (the event was published: the
          client must treat the lost answer as unknown and retry with the same key);
  "hold"  keeps the answer for `hold_s` seconds before sending it (past the client's timeout).
Later attempts with the same key pass through.
"""

import asyncio
import json
import threading
import time


class FaultProxy:
    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self.fault = "pass"
        self.hold_s = 0.0
        self.port = None
        self._lock = threading.Lock()
        self._log = []
        self._spoiled = set()
        self._pending = 0  # connections being served (a held answer counts until it is sent)
        # The serving tasks, held here: asyncio keeps only a weak reference to a task, and the
        # stream protocol drops its own when the client hangs up. A client that gave up (its
        # timeout fired) would otherwise let the garbage collector destroy the task while it
        # still waits for the gateway's answer, and that request would never be recorded.
        self._tasks = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # --- driver side (any thread) -------------------------------------------------------------

    def start(self):
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.port = server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def set_fault(self, fault, hold_s=0.0):
        assert fault in ("pass", "drop", "hold"), fault
        with self._lock:
            self.fault, self.hold_s = fault, hold_s

    def close(self):
        """Stops serving: cancels what is still open (a client that never sent a request)."""
        async def shutdown():
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            await asyncio.sleep(0.1)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def wait_idle(self, timeout_s):
        """Waits until no connection is being served (the gateway answered every forwarded
        request, held answers were sent), at most `timeout_s`."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if self._pending == 0:
                    return True
            time.sleep(0.05)
        return False

    def take_log(self):
        """Every request recorded since the last call, oldest first; clears the record."""
        with self._lock:
            log, self._log = self._log, []
            return log

    # --- proxy side (its own event loop) ------------------------------------------------------

    async def _handle(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        with self._lock:
            self._pending += 1
        try:
            await self._serve(reader, writer)
        finally:
            with self._lock:
                self._pending -= 1
            self._tasks.discard(task)

    async def _serve(self, reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = [tuple(part.strip() for part in line.split(":", 1))
                       for line in lines[1:] if ":" in line]
            lower = {name.lower(): value for name, value in headers}
            body = await reader.readexactly(int(lower.get("content-length", "0")))
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.CancelledError,
                ValueError, ConnectionError):
            # No complete request: a client that gave up before sending it, or the shutdown.
            writer.close()
            return
        key = lower.get("idempotency-key")
        entry = {"t": time.monotonic(), "method": method, "path": path, "key": key}

        # Forward: the same request, one per connection.
        out = [f"{method} {path} HTTP/1.1"]
        out += [f"{n}: {v}" for n, v in headers if n.lower() not in ("connection", "keep-alive")]
        out.append("Connection: close")
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
            await up_writer.drain()
            answer = await up_reader.read()  # until the gateway closes: Connection: close
            up_writer.close()
        except OSError as e:
            entry.update(status=None, error=str(e))
            self._record(entry)
            writer.close()
            return
        entry.update(self._describe(answer))

        with self._lock:
            fault = "pass"
            if method == "POST" and key is not None and key not in self._spoiled \
                    and self.fault != "pass":
                fault = self.fault
                self._spoiled.add(key)
            hold_s = self.hold_s
        entry["fault"] = fault
        self._record(entry)
        try:
            if fault == "drop":
                # The gateway answered (and published); the client never hears of it.
                writer.transport.abort()
                return
            if fault == "hold":
                await asyncio.sleep(hold_s)
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client gave up on this attempt: fine, that is the point of "hold"
        finally:
            writer.close()

    def _record(self, entry):
        with self._lock:
            self._log.append(entry)

    @staticmethod
    def _describe(answer):
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                hdrs[name.strip().lower()] = value.strip()
        try:
            doc = json.loads(body)
            doc = doc if isinstance(doc, dict) else {}
        except ValueError:
            doc = {}
        return {
            "status": int(lines[0].split(" ")[1]),
            "code": doc.get("code"),
            "persistence": doc.get("persistence"),
            "state": doc.get("state"),
            "retry_after": hdrs.get("retry-after"),
            "replayed": hdrs.get("idempotent-replayed") == "true",
        }
