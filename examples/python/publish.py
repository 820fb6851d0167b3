#!/usr/bin/env python3
"""Publish one event to ackgate with the retry loop its contract needs (Python stdlib only).

Copy `publish()` into your code. It keeps ackgate's exactly-once promise on the client side:
the same Idempotency-Key on every attempt, waits where the gateway says to wait, stops where a
retry cannot help. The rules are in the comments, each with its reason; examples/README.md has
them as a table.

    publish.py <base-url> <topic> <idempotency-key> <json-body>

Environment: ACKGATE_KEY (bearer token), ACKGATE_TIMEOUT_MS (per attempt, default 15000),
ACKGATE_DEADLINE_MS (overall, default 60000). Prints one JSON line describing the outcome; exit
status 0 persisted, 2 failed (possibly persisted), 3 rejected, 4 unknown (gave up), 1 usage.
"""

import http.client
import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

USAGE = "usage: publish.py <base-url> <topic> <idempotency-key> <json-body>"
# A Retry-After longer than this is not waited for in full: the overall deadline decides.
MAX_RETRY_AFTER_S = 20.0
# How often a 202's Location is polled.
POLL_INTERVAL_S = 0.5


def publish(base_url, topic, key, event, token, attempt_timeout_s=15.0, deadline_s=60.0, log=None):
    """Publishes `event` (bytes, JSON) under `key`; returns the outcome as a dict.

    outcome: "persisted" (in Kafka: `answer` is the 201 body), "failed" (may be in Kafka, the
    gateway keeps it in failure record `failure_id`), "rejected" (not published, fix the request:
    `code`), "unknown" (gave up at the deadline: retry later WITH THE SAME KEY).
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    url = f"{base_url.rstrip('/')}/v1/topics/{urllib.parse.quote(topic, safe='')}/events"
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    # Rule: one key per event, the same on every attempt. The gateway deduplicates by key, so a
    # retry can never publish the event twice; a new key per attempt would.
    post_headers = {**auth, "Idempotency-Key": key, "Content-Type": "application/json"}
    end = time.monotonic() + deadline_s
    attempts = polls = no_answers = 0
    status_url = None  # set by a 202: poll it instead of posting again
    reason = "deadline reached before any answer"

    def result(outcome, **fields):
        return {"outcome": outcome, **fields, "attempts": attempts, "polls": polls}

    while True:
        left = end - time.monotonic()
        if left <= 0:
            # Rule: at the deadline the outcome is unknown, not failed: the event may be in
            # Kafka. The caller retries later with the same key (the gateway replays or publishes).
            return result("unknown", reason=reason)
        timeout = min(attempt_timeout_s, left)
        if status_url is None:
            attempts += 1
            what = f"key={key} attempt {attempts}: POST"
            status, headers, doc = _request("POST", url, post_headers, event, timeout)
        else:
            polls += 1
            what = f"key={key} poll {polls}: GET {status_url}"
            status, headers, doc = _request("GET", status_url, auth, None, timeout)

        if status is None:
            # Rule: a lost connection or a timeout means "unknown", never "failed": the gateway
            # may have published and answered into the void. Retry with the same key: it replays
            # that answer (or says 409 while the first attempt is still being delivered).
            no_answers += 1
            reason = f"no answer: {doc}"
            wait = _backoff(no_answers)
            log(f"{what} -> {reason}; retrying with the same key in {wait:.2f} s")
            _sleep(wait, end)
            continue
        code = doc.get("code", "")
        got = f"{what} -> {status} {code or doc.get('state') or doc.get('status', '')}".rstrip()

        if status == 201:
            # Persisted: Kafka acknowledged (partition/offset in the body). A replay of an
            # earlier attempt's answer says Idempotent-Replayed: true.
            replayed = headers.get("Idempotent-Replayed", "").lower() == "true"
            log(got + (" (replayed)" if replayed else ""))
            return result("persisted", status=201, replayed=replayed, answer=doc)
        if status == 202 and status_url is None:
            # Rule: 202 = Kafka has not answered yet but the delivery goes on. Poll Location until
            # it settles, rather than treating it as success or failure.
            status_url = urllib.parse.urljoin(url, headers.get("Location") or doc["links"]["status"])
            log(f"{got}; polling its Location")
            _sleep(POLL_INTERVAL_S, end)
            continue
        if status == 200 and status_url is not None:
            state = doc.get("state")
            answer = doc.get("answer") or {}
            log(got)
            if state == "persisted":
                return result("persisted", status=doc.get("answer_status", 201), replayed=False,
                              answer=answer)
            if state == "failed":
                # May be in Kafka and the key is pinned: stop and surface the failure id.
                return result("failed", status=doc.get("answer_status"), code=answer.get("code"),
                              failure_id=answer.get("failure_id"),
                              failure=(answer.get("links") or {}).get("failure"))
            if state == "not_persisted":
                # Rule: certainly not written: send it again, with the same key.
                status_url = None
                continue
            _sleep(POLL_INTERVAL_S, end)  # in_flight
            continue
        if status == 404 and status_url is not None:
            # The status record is gone (expired): sending again with the same key is safe.
            log(f"{got}; sending again with the same key")
            status_url = None
            continue

        if doc.get("persistence") == "possibly_persisted":
            # Rule: 504/503 with persistence "possibly_persisted" = Kafka may have written it.
            # The key is pinned to this answer: a retry only replays it. Stop and surface the
            # failure id (GET /v1/failures/{id} shows the record); an operator resolves it.
            log(f"{got} possibly_persisted; stopping: failure {doc.get('failure_id')}")
            return result("failed", status=status, code=code, failure_id=doc.get("failure_id"),
                          failure=(doc.get("links") or {}).get("failure"))
        retry_after = _retry_after(headers)
        if retry_after is not None:
            # Rule: 409 (in progress), 429 (rate limit), 503 (overloaded, store or Kafka down,
            # not persisted) come with Retry-After: nothing was published by this attempt, and
            # waiting then retrying with the same key can succeed.
            reason = f"{status} {code}"
            wait = min(retry_after, MAX_RETRY_AFTER_S)
            log(f"{got}; waiting {wait:.1f} s (Retry-After), then the same key again")
            _sleep(wait, end)
            continue
        if status in (408, 500, 502, 503, 504):
            # 408: the body was not stored, safe to send again. 500 and a 5xx from something in
            # between: the outcome is unknown; retrying with the same key is safe (the gateway
            # answers 409 while it still decides, then the real answer).
            no_answers += 1
            reason = f"{status} {code}".rstrip()
            wait = _backoff(no_answers)
            log(f"{got}; outcome unknown, the same key again in {wait:.2f} s")
            _sleep(wait, end)
            continue
        # Rule: never retry 400/401/403/404/413/422 as they are: the request itself is wrong (or
        # the key was used for another event, 422). Retrying cannot help; fix the request.
        log(f"{got}; not retried")
        return result("rejected", status=status, code=code, detail=doc.get("detail"))


def _request(method, url, headers, body, timeout):
    """(status, headers, parsed JSON body) or (None, None, error text) when no answer came."""
    # urllib's timeout bounds connecting and each wait for bytes, which is what a gateway that
    # does not answer trips; it is not a bound on a slowly trickling answer.
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, hdrs, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:  # 4xx/5xx: an answer, not an error
        status, hdrs, raw = e.code, e.headers, e.read()
    except (OSError, http.client.HTTPException) as e:  # timeout, reset, refused, closed early
        return None, None, f"{type(e).__name__}: {e}"
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {}
    return status, hdrs, doc if isinstance(doc, dict) else {}


def _retry_after(headers):
    """Retry-After in seconds; None when absent (an HTTP-date is treated as absent here)."""
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None


def _backoff(n):
    """Exponential backoff with jitter, for retries the gateway gave no Retry-After for."""
    return min(5.0, 0.1 * 2 ** (n - 1)) * random.uniform(0.5, 1.0)


def _sleep(seconds, end):
    time.sleep(max(0.0, min(seconds, end - time.monotonic())))


def main(argv):
    if len(argv) != 5:
        print(USAGE, file=sys.stderr)
        return 1
    _, base_url, topic, key, body = argv
    outcome = publish(
        base_url, topic, key, body.encode(), os.environ.get("ACKGATE_KEY", ""),
        attempt_timeout_s=int(os.environ.get("ACKGATE_TIMEOUT_MS", "15000")) / 1000,
        deadline_s=int(os.environ.get("ACKGATE_DEADLINE_MS", "60000")) / 1000,
    )
    print(json.dumps(outcome, separators=(",", ":")), flush=True)
    return {"persisted": 0, "failed": 2, "rejected": 3, "unknown": 4}[outcome["outcome"]]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
