#!/usr/bin/env python3
"""Drives the client examples (examples/{python,javascript,java}) against `ackgate dev` gateways
and checks from outside that they keep the contract's retry rules (stdlib only).

scripts/examples.sh starts the gateways and runs this; by hand:

    check.py --gateways FILE --out DIR [--java-classes DIR] [python|javascript|java ...]

FILE has one gateway per line: `NAME URL KAFKA_BOOTSTRAP`, with the names
  plain                 a fast gateway (scenarios a, b, c, c2, f, g)
  slow                  --kafka-rtt-ms a few hundred ms (d: the client's own timeout, then 409)
  accept                slow Kafka and a small --wait-timeout-ms (e: 202, poll Location)
  timeout-<language>    a delivery that times out after the produce request went out (h: 504
                        possibly_persisted); one fresh gateway per language, see examples.sh
  accept-timeout-<lang> the same with a small --wait-timeout-ms (i: a 202 whose status ends
                        `failed`)
Each has the topics py, js and java (one per language, so each audit is about one example).
Environment: ACKGATE_BIN (for `ackgate audit`), EXAMPLES_KEY (the bearer token of a client
that may publish everywhere), EXAMPLES_RATED_KEY (a client with `rate = 2`).

Every proxy-routed request is recorded by tests/examples/fault_proxy.py; every 201 body an
example printed goes into an acks file per gateway and topic, and `ackgate audit` must find
exactly one record per acknowledged key and no duplicates. Exit status 0 when every check held.
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_proxy import FaultProxy  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOPIC = {"python": "py", "javascript": "js", "java": "java"}
EXIT = {"persisted": 0, "failed": 2, "rejected": 3, "unknown": 4}
RUN = uuid.uuid4().hex[:8]  # fresh keys on every run


class Failed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failed(message)


class Harness:
    def __init__(self, gateways, out, java_classes):
        self.gateways = gateways
        self.out = out
        self.java_classes = java_classes
        self.proxies = {}
        self.acks = defaultdict(list)  # (gateway, topic) -> 201 bodies
        self.possibly = defaultdict(int)  # (gateway, topic) -> events answered possibly_persisted
        self.used = set()  # (gateway, topic) pairs that saw traffic
        self.rows = []  # (language, scenario, verdict, note)
        self.failures = []
        self.a_answers = {}  # scenario a's 201 bodies, which b's replays must equal
        self.key = os.environ["EXAMPLES_KEY"]
        self.rated_key = os.environ["EXAMPLES_RATED_KEY"]

    def proxy(self, gateway):
        if gateway not in self.proxies:
            host, port = self.gateways[gateway][0].removeprefix("http://").rsplit(":", 1)
            self.proxies[gateway] = FaultProxy(host, int(port)).start()
        return self.proxies[gateway]

    def command(self, language):
        if language == "python":
            return [sys.executable, str(REPO / "examples/python/publish.py")]
        if language == "javascript":
            return ["node", str(REPO / "examples/javascript/publish.mjs")]
        if self.java_classes:
            return ["java", "-cp", str(self.java_classes), "Publish"]
        return ["java", str(REPO / "examples/java/Publish.java")]

    def run(self, language, gateway, key, body, token=None, timeout_ms=15000, deadline_ms=30000):
        """Runs one example through the gateway's proxy; returns (exit, outcome, stderr)."""
        proxy = self.proxy(gateway)
        topic = TOPIC[language]
        self.used.add((gateway, topic))
        env = dict(os.environ, ACKGATE_KEY=token or self.key, ACKGATE_TIMEOUT_MS=str(timeout_ms),
                   ACKGATE_DEADLINE_MS=str(deadline_ms))
        started = time.monotonic()
        proc = subprocess.run(self.command(language) + [proxy.url, topic, key, body], env=env,
                              capture_output=True, text=True, timeout=deadline_ms / 1000 + 30)
        took = time.monotonic() - started
        with open(self.out / f"{language}.log", "a") as log:
            log.write(f"$ publish {proxy.url} {topic} {key} {body}  (exit {proc.returncode}, "
                      f"{took:.1f} s)\n{proc.stderr}{proc.stdout}\n")
        lines = proc.stdout.strip().splitlines()
        expect(len(lines) == 1, f"{key}: expected one JSON line on stdout, got {proc.stdout!r} "
               f"(exit {proc.returncode}, stderr {proc.stderr.strip()[-300:]!r})")
        outcome = json.loads(lines[0])
        expect(proc.returncode == EXIT.get(outcome.get("outcome")),
               f"{key}: exit {proc.returncode} does not match outcome {outcome}")
        expect(len(proc.stderr.strip().splitlines()) >= outcome["attempts"] + outcome.get("polls", 0),
               f"{key}: fewer stderr lines than attempts and polls: {proc.stderr!r}")
        if outcome["outcome"] == "persisted":
            self.acks[(gateway, topic)].append(outcome["answer"])
        if outcome["outcome"] == "failed":
            self.possibly[(gateway, topic)] += 1
        return proc.returncode, outcome, proc.stderr

    def requests(self, gateway, idle_s=10):
        """What the gateway's proxy saw since the last call (after in-flight requests ended)."""
        proxy = self.proxy(gateway)
        proxy.wait_idle(idle_s)
        return proxy.take_log()

    # --- the scenarios ---------------------------------------------------------------------

    def a_plain(self, lang):
        self.requests("plain")
        keys = [f"{lang}-a-{RUN}-{i}" for i in range(3)]
        for i, key in enumerate(keys):
            code, out, _ = self.run(lang, "plain", key, json.dumps({"scenario": "a", "n": i}))
            expect(code == 0 and out["outcome"] == "persisted", f"{key}: {out}")
            expect(out["replayed"] is False and out["attempts"] == 1, f"{key}: {out}")
            self.a_answers[key] = out["answer"]
        seen = self.requests("plain")
        expect([r["key"] for r in seen] == keys, f"proxy saw keys {[r['key'] for r in seen]}")
        expect(all(r["method"] == "POST" and r["status"] == 201 for r in seen), f"proxy: {seen}")
        return f"{len(keys)} events, 1 attempt each"

    def b_replay(self, lang):
        key = f"{lang}-a-{RUN}-0"
        code, out, _ = self.run(lang, "plain", key, json.dumps({"scenario": "a", "n": 0}))
        expect(code == 0 and out["replayed"] is True and out["attempts"] == 1, f"{key}: {out}")
        expect(out["answer"] == self.a_answers.get(key), f"{key}: replay {out['answer']} differs "
               f"from the first answer {self.a_answers.get(key)}")
        seen = self.requests("plain")
        expect(len(seen) == 1 and seen[0]["key"] == key and seen[0]["replayed"], f"proxy: {seen}")
        return "replayed: true, same partition/offset"

    def _retried_after_fault(self, lang, fault, scenario, **run_args):
        proxy = self.proxy("plain")
        self.requests("plain")
        key = f"{lang}-{scenario}-{RUN}"
        proxy.set_fault(fault, hold_s=2.0)
        try:
            code, out, _ = self.run(lang, "plain", key, json.dumps({"scenario": scenario}),
                                    **run_args)
        finally:
            proxy.set_fault("pass")
        expect(code == 0 and out["outcome"] == "persisted", f"{key}: {out}")
        expect(out["replayed"] is True, f"{key}: not a replay: {out}")
        seen = self.requests("plain")
        keys = {r["key"] for r in seen}
        expect(keys == {key}, f"proxy saw keys {keys}, expected only {key}")
        posts = [r for r in seen if r["method"] == "POST"]
        expect(len(posts) >= 2, f"proxy saw {len(posts)} attempt(s) with {key}: {posts}")
        expect(posts[0]["fault"] == fault and posts[0]["status"] == 201,
               f"the first attempt was not published and spoiled: {posts[0]}")
        # >=: an attempt whose timeout fired before its request reached the proxy is not seen.
        expect(out["attempts"] >= len(posts), f"example says {out['attempts']} attempts, "
               f"proxy saw {len(posts)}")
        return f"{len(posts)} attempts, same key, replayed 201"

    def c_dropped(self, lang):
        return self._retried_after_fault(lang, "drop", "c")

    def c2_held(self, lang):
        return self._retried_after_fault(lang, "hold", "c2", timeout_ms=800)

    def d_client_timeout(self, lang):
        self.requests("slow")
        key = f"{lang}-d-{RUN}"
        code, out, err = self.run(lang, "slow", key, json.dumps({"scenario": "d"}), timeout_ms=250)
        expect(code == 0 and out["outcome"] == "persisted" and out["replayed"] is True,
               f"{key}: {out}")
        seen = self.requests("slow")
        expect({r["key"] for r in seen} == {key}, f"proxy saw keys {[r['key'] for r in seen]}")
        posts = [r for r in seen if r["method"] == "POST"]
        conflicts = [r for r in posts if r["status"] == 409 and r["retry_after"]]
        expect(conflicts, f"no 409 + Retry-After while the first attempt was in flight: {posts}")
        expect("timed out" in err.lower() or "timeout" in err.lower(),
               f"the example did not report its own timeout: {err!r}")
        # >=: a 250 ms timeout can fire before a (cold JVM's) request reached the proxy.
        expect(len(posts) >= 3 and out["attempts"] >= len(posts),
               f"expected timeout, 409, replay: example {out['attempts']}, proxy {posts}")
        return f"{len(posts)} attempts: timeout, {len(conflicts)}x 409, replay"

    def e_accepted(self, lang):
        self.requests("accept")
        key = f"{lang}-e-{RUN}"
        code, out, _ = self.run(lang, "accept", key, json.dumps({"scenario": "e"}))
        expect(code == 0 and out["outcome"] == "persisted", f"{key}: {out}")
        expect(out["attempts"] == 1 and out["polls"] >= 1, f"{key}: {out}")
        seen = self.requests("accept")
        posts = [r for r in seen if r["method"] == "POST"]
        polls = [r for r in seen if r["method"] == "GET"]
        expect(len(posts) == 1 and posts[0]["status"] == 202, f"proxy: {posts}")
        expect(polls and all(r["path"] == f"/v1/topics/{TOPIC[lang]}/events/{key}" for r in polls),
               f"polls: {polls}")
        expect(polls[-1]["state"] == "persisted", f"last poll: {polls[-1]}")
        return f"202, {len(polls)} poll(s) of Location, persisted"

    def f_rate_limited(self, lang):
        self.requests("plain")
        keys = [f"{lang}-f-{RUN}-{i}" for i in range(8)]
        # All eight at once: a client with rate = 2 gets 429s for most of them.
        with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
            results = list(pool.map(
                lambda k: self.run(lang, "plain", k, json.dumps({"scenario": "f", "key": k}),
                                   token=self.rated_key), keys))
        for key, (code, out, _) in zip(keys, results):
            expect(code == 0 and out["outcome"] == "persisted" and not out["replayed"],
                   f"{key}: {out}")
        seen = self.requests("plain")
        expect({r["key"] for r in seen} == set(keys), f"proxy saw keys {[r['key'] for r in seen]}")
        limited = [r for r in seen if r["status"] == 429]
        expect(limited and all(r["retry_after"] for r in limited), f"no 429 + Retry-After: {seen}")
        for key in keys:
            statuses = [r["status"] for r in seen if r["key"] == key]
            expect(statuses.count(201) == 1 and set(statuses) <= {201, 429},
                   f"{key}: answers {statuses}")
        return f"8 persisted after {len(limited)} 429s"

    def g_rejected(self, lang):
        key = f"{lang}-g-{RUN}"
        code, out, _ = self.run(lang, "plain", key, json.dumps({"scenario": "g", "v": 1}))
        expect(code == 0, f"{key}: {out}")
        self.requests("plain")
        code, out, _ = self.run(lang, "plain", key, json.dumps({"scenario": "g", "v": 2}))
        expect(code == 3 and out["outcome"] == "rejected" and out["status"] == 422
               and out["code"] == "idempotency-key-reused", f"{key}: {out}")
        seen = self.requests("plain")
        expect(len(seen) == 1 and out["attempts"] == 1,
               f"422 must not be retried: example {out['attempts']} attempts, proxy {seen}")
        return "exit 3, one attempt"

    def _fresh_keys_until(self, lang, gateway, scenario, judge):
        """Runs the example with up to three fresh keys on a gateway whose mock timing decides
        which path a delivery takes. `judge(key, code, outcome, posts, polls)` checks each run
        and returns (note, None) once the path under test was taken, or (None, what happened
        instead), which sends the next key."""
        others = []
        for attempt in range(3):
            self.requests(gateway)
            key = f"{lang}-{scenario}-{RUN}-{attempt}"
            code, out, _ = self.run(lang, gateway, key, json.dumps({"scenario": scenario}),
                                    deadline_ms=25000)
            seen = self.requests(gateway)
            posts = [r for r in seen if r["method"] == "POST"]
            polls = [r for r in seen if r["method"] == "GET"]
            expect(posts and all(r["key"] == key for r in posts), f"proxy: {posts}")
            note, other = judge(key, code, out, posts, polls)
            if note:
                return note + (f" (after {'; '.join(others)})" if others else "")
            others.append(other)
        raise Failed(f"the path under test never came in three tries: {others}")

    def h_possibly_persisted(self, lang):
        gateway = f"timeout-{lang}"

        def judge(key, code, out, posts, _polls):
            expect(out["attempts"] == len(posts), f"example {out['attempts']} attempts, proxy {posts}")
            pinned = [i for i, r in enumerate(posts) if r["persistence"] == "possibly_persisted"]
            if pinned:
                # Nothing may follow the first possibly_persisted answer: the key is pinned.
                expect(pinned[0] == len(posts) - 1,
                       f"retried after possibly_persisted: {[(r['status'], r['persistence']) for r in posts]}")
                expect(code == 2 and out["outcome"] == "failed" and out.get("failure_id"),
                       f"{key}: {out}")
                self.check_failure_record(gateway, out["failure_id"], key)
            else:
                expect(code != 2, f"{key}: failed without a possibly_persisted answer: {out}")
            if pinned == [0]:
                return f"exit 2, 1 attempt, failure {out['failure_id'][:10]}… readable", None
            # The gateway answered something else first (it happens with a mock's timing): the
            # example must have handled that too, checked above.
            first = posts[0]
            return None, (f"{first['status']} {first['code'] or ''} {first['persistence'] or ''}"
                          .strip() + f" -> {out['outcome']}")

        return self._fresh_keys_until(lang, gateway, "h", judge)

    def i_accepted_then_failed(self, lang):
        gateway = f"accept-timeout-{lang}"

        def judge(key, code, out, posts, polls):
            states = [r["state"] for r in polls]
            if posts[0]["status"] != 202 or "failed" not in states:
                # Another path (not_persisted, another answer to the POST): the example's
                # handling of it is checked by the audit.
                return None, f"{posts[0]['status']} then {states} -> {out['outcome']}"
            # The status resource said `failed` (possibly persisted): the example must stop
            # there, surface the failure id, and never POST the event again.
            expect(len(posts) == 1, f"POSTed again after a failed status: {posts}")
            expect(states[-1] == "failed" and states.count("failed") == 1,
                   f"polled on after `failed`: {states}")
            expect(code == 2 and out["outcome"] == "failed" and out.get("failure_id"),
                   f"{key}: {out}")
            self.check_failure_record(gateway, out["failure_id"], key)
            return (f"202, {len(polls)} poll(s) until failed, exit 2, failure "
                    f"{out['failure_id'][:10]}… readable"), None

        return self._fresh_keys_until(lang, gateway, "i", judge)

    def check_failure_record(self, gateway, failure_id, key):
        url = f"{self.gateways[gateway][0]}/v1/failures/{failure_id}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.key}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, doc = resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            status, doc = e.code, {}
        expect(status == 200, f"GET /v1/failures/{failure_id} answered {status}")
        expect(key in json.dumps(doc), f"failure record {failure_id} does not name {key}")

    SCENARIOS = [
        ("a", "plain publish", a_plain),
        ("b", "same key again", b_replay),
        ("c", "answer dropped", c_dropped),
        ("c2", "answer held past timeout", c2_held),
        ("d", "client timeout, slow Kafka", d_client_timeout),
        ("e", "202, poll Location", e_accepted),
        ("f", "429 rate = 2", f_rate_limited),
        ("g", "422 key reused", g_rejected),
        ("h", "504 possibly_persisted", h_possibly_persisted),
        ("i", "202, then status failed", i_accepted_then_failed),
    ]

    def scenarios(self, lang):
        for tag, title, fn in self.SCENARIOS:
            started = time.monotonic()
            try:
                note, verdict = fn(self, lang), "ok"
            except Failed as e:
                note, verdict = str(e), "FAIL"
                self.failures.append(f"{lang} {tag} ({title}): {e}")
            except Exception as e:  # noqa: BLE001 - a harness error is a failure too
                note, verdict = f"{type(e).__name__}: {e}", "FAIL"
                self.failures.append(f"{lang} {tag} ({title}): {note}")
            took = time.monotonic() - started
            self.rows.append((lang, f"{tag} {title}", verdict, f"{note} [{took:.1f} s]"))
            print(f"  {lang:<10} {tag:<3} {title:<27} {verdict:<4} {note}", flush=True)

    # --- the audit -------------------------------------------------------------------------

    def audit(self, gateway, topic):
        """Reads the topic back; returns its summary row (and records a failure)."""
        started = time.monotonic()
        acked = self.acks[(gateway, topic)]
        acks_file = self.out / f"acks-{gateway}-{topic}.jsonl"
        acks_file.write_text("".join(json.dumps(a) + "\n" for a in acked))
        proc = subprocess.run(
            [os.environ["ACKGATE_BIN"], "audit", "--kafka-brokers", self.gateways[gateway][1],
             "--topic", topic, "--acks", str(acks_file), "--json", "--idle-ms", "300"],
            capture_output=True, text=True, timeout=60)
        (self.out / f"audit-{gateway}-{topic}.json").write_text(proc.stdout + proc.stderr)
        keys = {a["idempotency_key"] for a in acked}
        possibly = self.possibly[(gateway, topic)]
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            report = {}
        name = f"audit {gateway}/{topic}"
        try:
            expect(proc.returncode == 0 and report.get("clean") is True,
                   f"exit {proc.returncode}: {proc.stdout.strip()[:400]} {proc.stderr.strip()[-300:]}")
            expect(report["duplicate_records"] == 0 and not report["duplicate_keys"],
                   f"duplicates: {report['duplicate_keys']}")
            expect(not report["acks"]["missing"] and not report["acks"]["offset_mismatches"],
                   f"acks: {report['acks']}")
            expect(report["acks"]["checked"] == len(keys), f"the audit checked "
                   f"{report['acks']['checked']} answers, the examples acknowledged {len(keys)} keys")
            # One record per acknowledged key; an event answered possibly_persisted may or may
            # not be there (that is what the answer says), nothing else may be.
            read = report["records_read"]
            expect(len(keys) <= read <= len(keys) + possibly,
                   f"{read} records for {len(keys)} acknowledged keys (+ up to {possibly} "
                   f"possibly persisted)")
            note = (f"{read} records, {len(keys)} acked keys, 0 duplicates"
                    + (f", {possibly} possibly persisted" if possibly else ""))
            note += f" [{time.monotonic() - started:.1f} s]"
            verdict = "ok"
        except Failed as e:
            note, verdict = str(e), "FAIL"
            self.failures.append(f"{name}: {e}")
        return (topic_language(topic), name, verdict, note)


def topic_language(topic):
    return {v: k for k, v in TOPIC.items()}[topic]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--java-classes", type=Path)
    parser.add_argument("languages", nargs="*", default=list(TOPIC))
    args = parser.parse_args()
    for lang in args.languages:
        if lang not in TOPIC:
            parser.error(f"unknown language {lang!r}: one of {', '.join(TOPIC)}")
    gateways = {}
    for line in args.gateways.read_text().splitlines():
        if line.strip():
            name, url, kafka = line.split()
            gateways[name] = (url, kafka)
    args.out.mkdir(parents=True, exist_ok=True)
    for lang in args.languages:
        (args.out / f"{lang}.log").write_text("")

    harness = Harness(gateways, args.out, args.java_classes)
    started = time.monotonic()
    for lang in args.languages:
        print(f"\n==> {lang} example (topic {TOPIC[lang]}; stderr in {args.out}/{lang}.log)",
              flush=True)
        harness.scenarios(lang)
    print("\n==> ackgate audit of every topic an example wrote to", flush=True)
    # In parallel: each waits for the (slow) mock cluster and --idle-ms, not for a CPU.
    with concurrent.futures.ThreadPoolExecutor(len(harness.used)) as pool:
        for row in pool.map(lambda gt: harness.audit(*gt), sorted(harness.used)):
            harness.rows.append(row)
            print(f"  {row[1]:<40} {row[2]:<4} {row[3]}", flush=True)

    for proxy in harness.proxies.values():
        proxy.close()
    print(f"\n==> summary ({time.monotonic() - started:.0f} s)")
    width = max(len(r[1]) for r in harness.rows)
    print(f"  {'language':<10} {'check':<{width}}  result  note")
    for lang, check, verdict, note in harness.rows:
        print(f"  {lang:<10} {check:<{width}}  {verdict:<6}  {note[:110]}")
    if harness.failures:
        print(f"\n{len(harness.failures)} check(s) FAILED:", file=sys.stderr)
        for failure in harness.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"\nall {len(harness.rows)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
