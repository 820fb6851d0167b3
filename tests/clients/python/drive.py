"""Drives a running gateway with the client openapi-python-client generated from
openapi/openapi.json (package `ackgate_client`, on PYTHONPATH): every call, every status and
every body goes through the generated code, so a type it cannot express fails here.

Environment: ACKGATE_URL, ACKGATE_KEY (a bearer secret that may publish to ACKGATE_TOPIC,
default `events`), and optionally ACKGATE_SLOW_URL: a gateway whose Kafka answers after its
wait timeout (`ackgate dev --kafka-rtt-ms 700 --wait-timeout-ms 200`, same key), for the 202.

Prints one line per check; exits 1 on the first difference.
"""

from __future__ import annotations

import base64
import os
import sys
import time
import uuid
from typing import NoReturn, TypeVar, cast

from ackgate_client import AuthenticatedClient, Client
from ackgate_client.api.events import event_status, publish_batch, publish_event
from ackgate_client.models import (
    Accepted,
    AcceptedStatus,
    BatchEvent,
    BatchEventHeaders,
    BatchRequest,
    BatchResponse,
    EventStatus,
    Persisted,
    PersistedStatus,
    Problem,
)
from ackgate_client.types import Response, Unset

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    print(f"FAIL {message}", flush=True)
    sys.exit(1)


def ok(message: str) -> None:
    print(f"ok   {message}", flush=True)


def expect(value: object, kind: type[T], what: str) -> T:
    """The parsed body as the generated type `kind`, or a failure naming what came instead."""
    if not isinstance(value, kind):
        fail(
            f"{what}: expected a {kind.__name__}, got {type(value).__name__}: {value!r}"
        )
    return value


def status(response: Response[T], expected: int, what: str) -> None:
    if response.status_code != expected:
        fail(
            f"{what}: HTTP {int(response.status_code)}, expected {expected}: {response.content!r}"
        )


def main() -> None:
    url = os.environ["ACKGATE_URL"]
    token = os.environ["ACKGATE_KEY"]
    topic = os.environ.get("ACKGATE_TOPIC", "events")
    run = uuid.uuid4().hex[:12]
    client = AuthenticatedClient(
        base_url=url, token=token, raise_on_unexpected_status=True
    )

    # 1. Publish a JSON event with the bearer token and a Kafka-Key.
    key = f"py-{run}-1"
    event = {"order": 1001, "total": 42.5, "items": ["a", "b"]}
    first = publish_event.sync_detailed(
        topic, client=client, body=event, idempotency_key=key, kafka_key="customer-42"
    )
    status(first, 201, "publish")
    persisted = expect(first.parsed, Persisted, "publish")
    if (
        persisted.status != PersistedStatus.PERSISTED
        or persisted.idempotency_key != key
    ):
        fail(f"publish: unexpected body {persisted!r}")
    if "idempotent-replayed" in first.headers:
        fail("publish: a first answer carries Idempotent-Replayed")
    ok(
        f"publish 201 Persisted partition={persisted.partition} offset={persisted.offset}"
    )

    # 2. The same request again: the first answer, replayed.
    again = publish_event.sync_detailed(
        topic, client=client, body=event, idempotency_key=key, kafka_key="customer-42"
    )
    status(again, 201, "replay")
    replayed = expect(again.parsed, Persisted, "replay")
    if (replayed.partition, replayed.offset) != (persisted.partition, persisted.offset):
        fail(f"replay: {replayed!r} differs from {persisted!r}")
    if again.headers.get("Idempotent-Replayed") != "true":
        fail(
            f"replay: Idempotent-Replayed is {again.headers.get('Idempotent-Replayed')!r}"
        )
    ok("replay 201 Persisted, same partition/offset, Idempotent-Replayed: true")

    # 3. The status resource tells the same.
    looked = event_status.sync_detailed(topic, key, client=client)
    status(looked, 200, "status")
    event_state = expect(looked.parsed, EventStatus, "status")
    answer = expect(event_state.answer, Persisted, "status answer")
    if event_state.state != "persisted" or event_state.answer_status != 201:
        fail(f"status: {event_state!r}")
    if (answer.partition, answer.offset) != (persisted.partition, persisted.offset):
        fail(f"status: answer {answer!r} differs from {persisted!r}")
    ok("status 200 state=persisted, answer is the same Persisted")

    # 4. The same key with another body: refused, as a typed problem.
    reused = publish_event.sync_detailed(
        topic,
        client=client,
        body={"order": 1002},
        idempotency_key=key,
        kafka_key="customer-42",
    )
    status(reused, 422, "reused key")
    problem = expect(reused.parsed, Problem, "reused key")
    if problem.code != "idempotency-key-reused" or problem.status != 422:
        fail(f"reused key: {problem!r}")
    ok("same key, other body: 422 Problem idempotency-key-reused")

    # 5. No token: 401 with a challenge.
    # The generated functions take an AuthenticatedClient (every /v1 operation requires the
    # bearer scheme); a plain Client is what sends no Authorization header at all.
    anonymous = cast(
        AuthenticatedClient, Client(base_url=url, raise_on_unexpected_status=True)
    )
    refused = publish_event.sync_detailed(
        topic, client=anonymous, body=event, idempotency_key=f"py-{run}-anon"
    )
    status(refused, 401, "no token")
    problem = expect(refused.parsed, Problem, "no token")
    if problem.code != "unauthenticated":
        fail(f"no token: {problem!r}")
    if not refused.headers.get("WWW-Authenticate", "").startswith("Bearer"):
        fail(
            f"no token: WWW-Authenticate is {refused.headers.get('WWW-Authenticate')!r}"
        )
    ok("no token: 401 Problem unauthenticated, WWW-Authenticate: Bearer")

    # 6. A batch: a new JSON event, the reused key with another body, raw bytes.
    headers = BatchEventHeaders()
    headers["trace-id"] = f"trace-{run}"
    batch = BatchRequest(
        events=[
            BatchEvent(
                idempotency_key=f"py-{run}-2",
                key="customer-43",
                headers=headers,
                value=[1, "two", None],
            ),
            BatchEvent(idempotency_key=key, key="customer-42", value={"order": 1003}),
            BatchEvent(
                idempotency_key=f"py-{run}-3",
                value_base64=base64.b64encode(b"\x00\x01\x02raw").decode(),
                content_type="application/octet-stream",
            ),
        ]
    )
    multi = publish_batch.sync_detailed(topic, client=client, body=batch)
    status(multi, 207, "batch")
    results = expect(multi.parsed, BatchResponse, "batch").results
    if [r.status for r in results] != [201, 422, 201]:
        fail(f"batch: statuses {[r.status for r in results]}, expected [201, 422, 201]")
    one = expect(results[0].body, Persisted, "batch result 1")
    two = expect(results[1].body, Problem, "batch result 2")
    three = expect(results[2].body, Persisted, "batch result 3")
    if two.code != "idempotency-key-reused":
        fail(f"batch result 2: {two!r}")
    keys = [r.idempotency_key for r in results]
    bodies = [one.idempotency_key, three.idempotency_key]
    if keys != [f"py-{run}-2", key, f"py-{run}-3"] or bodies != [keys[0], keys[2]]:
        fail(f"batch: results out of order: {keys}")
    ok(
        "batch 207: [201 Persisted, 422 Problem idempotency-key-reused, 201 Persisted] in order"
    )

    # 7. A slow Kafka: 202 Accepted with Location, then the status settles.
    slow_url = os.environ.get("ACKGATE_SLOW_URL")
    if not slow_url:
        ok("202: skipped (no ACKGATE_SLOW_URL)")
        return
    slow = AuthenticatedClient(
        base_url=slow_url, token=token, raise_on_unexpected_status=True
    )
    slow_key = f"py-{run}-slow"
    pending = publish_event.sync_detailed(
        topic, client=slow, body=event, idempotency_key=slow_key
    )
    status(pending, 202, "slow publish")
    accepted = expect(pending.parsed, Accepted, "slow publish")
    location = pending.headers.get("Location")
    if accepted.status != AcceptedStatus.ACCEPTED or location != accepted.links.status:
        fail(f"slow publish: Location {location!r}, body {accepted!r}")
    ok(f"slow publish: 202 Accepted, Location {location}")
    deadline = time.monotonic() + 30
    while True:
        polled = event_status.sync_detailed(topic, slow_key, client=slow)
        status(polled, 200, "slow status")
        state = expect(polled.parsed, EventStatus, "slow status")
        if state.state == "persisted":
            settled = expect(state.answer, Persisted, "slow status answer")
            ok(f"slow status: in_flight, then persisted at offset {settled.offset}")
            break
        if state.state != "in_flight" or not isinstance(state.answer, Unset | None):
            fail(f"slow status: {state!r}")
        if time.monotonic() > deadline:
            fail("slow status: still in flight after 30 s")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
