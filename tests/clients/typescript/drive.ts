// Drives a running gateway with openapi-fetch over the types openapi-typescript generated from
// openapi/openapi.json (target/clients/typescript/schema.d.ts): every call, status and body goes
// through those types, and `tsc --strict` checks this file against them.
//
// Environment: ACKGATE_URL, ACKGATE_KEY (a bearer secret that may publish to ACKGATE_TOPIC,
// default `events`), optionally ACKGATE_SLOW_URL (`ackgate dev --kafka-rtt-ms 700
// --wait-timeout-ms 200`, same key) for the 202. One line per check; exit 1 on a difference.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Persisted = components["schemas"]["Persisted"];
type Accepted = components["schemas"]["Accepted"];
type Problem = components["schemas"]["Problem"];
type EventAnswer = components["schemas"]["EventAnswer"];

function fail(message: string): never {
  console.log(`FAIL ${message}`);
  process.exit(1);
}

function ok(message: string): void {
  console.log(`ok   ${message}`);
}

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") fail(`${name} is not set`);
  return value;
}

function expectStatus(response: Response, expected: number, what: string): void {
  if (response.status !== expected) fail(`${what}: HTTP ${response.status}, expected ${expected}`);
}

// The three answers are told apart by their required fields and `status` literals.
function isPersisted(body: EventAnswer): body is Persisted {
  return body.status === "persisted";
}
function isProblem(body: EventAnswer): body is Problem {
  return typeof body.status === "number";
}
function isAccepted(body: EventAnswer): body is Accepted {
  return body.status === "accepted";
}

const url = env("ACKGATE_URL");
const token = env("ACKGATE_KEY");
const topic = process.env.ACKGATE_TOPIC ?? "events";
const run = Math.random().toString(36).slice(2, 12);
const client = createClient<paths>({ baseUrl: url, headers: { Authorization: `Bearer ${token}` } });
const event = { order: 1001, total: 42.5, items: ["a", "b"] };
const key = `ts-${run}-1`;

const publish = (
  api: typeof client,
  idempotencyKey: string,
  body: unknown,
  kafkaKey?: string,
) =>
  api.POST("/v1/topics/{topic}/events", {
    params: {
      path: { topic },
      header:
        kafkaKey === undefined
          ? { "Idempotency-Key": idempotencyKey }
          : { "Idempotency-Key": idempotencyKey, "Kafka-Key": kafkaKey },
    },
    body,
  });

// 1. Publish with the bearer token and a Kafka-Key.
const first = await publish(client, key, event, "customer-42");
expectStatus(first.response, 201, "publish");
if (first.data === undefined || !("partition" in first.data)) fail(`publish: ${JSON.stringify(first)}`);
const persisted: Persisted = first.data;
if (persisted.status !== "persisted" || persisted.idempotency_key !== key) {
  fail(`publish: ${JSON.stringify(persisted)}`);
}
if (first.response.headers.has("Idempotent-Replayed")) fail("publish: a first answer is replayed");
ok(`publish 201 Persisted partition=${persisted.partition} offset=${persisted.offset}`);

// 2. Again: the first answer, replayed.
const again = await publish(client, key, event, "customer-42");
expectStatus(again.response, 201, "replay");
if (again.data === undefined || !("partition" in again.data)) fail(`replay: ${JSON.stringify(again)}`);
if (again.data.partition !== persisted.partition || again.data.offset !== persisted.offset) {
  fail(`replay: ${JSON.stringify(again.data)} differs from ${JSON.stringify(persisted)}`);
}
if (again.response.headers.get("Idempotent-Replayed") !== "true") fail("replay: not Idempotent-Replayed");
ok("replay 201 Persisted, same partition/offset, Idempotent-Replayed: true");

// 3. The status resource.
const looked = await client.GET("/v1/topics/{topic}/events/{idempotency_key}", {
  params: { path: { topic, idempotency_key: key } },
});
expectStatus(looked.response, 200, "status");
if (looked.data === undefined) fail(`status: ${JSON.stringify(looked.error)}`);
const answer = looked.data.answer;
if (looked.data.state !== "persisted" || looked.data.answer_status !== 201 || answer == null) {
  fail(`status: ${JSON.stringify(looked.data)}`);
}
if (!isPersisted(answer) || answer.offset !== persisted.offset || answer.partition !== persisted.partition) {
  fail(`status: answer ${JSON.stringify(answer)}`);
}
ok("status 200 state=persisted, answer is the same Persisted");

// 4. The same key with another body: a typed problem.
const reused = await publish(client, key, { order: 1002 }, "customer-42");
expectStatus(reused.response, 422, "reused key");
const problem: Problem | undefined = reused.error;
if (problem?.code !== "idempotency-key-reused") fail(`reused key: ${JSON.stringify(reused.error)}`);
ok("same key, other body: 422 Problem idempotency-key-reused");

// 5. No token.
const anonymous = createClient<paths>({ baseUrl: url });
const refused = await publish(anonymous, `ts-${run}-anon`, event);
expectStatus(refused.response, 401, "no token");
if (refused.error?.code !== "unauthenticated") fail(`no token: ${JSON.stringify(refused.error)}`);
if (!refused.response.headers.get("WWW-Authenticate")?.startsWith("Bearer")) fail("no token: no challenge");
ok("no token: 401 Problem unauthenticated, WWW-Authenticate: Bearer");

// 6. A batch: a new event, the reused key with another body, raw bytes.
const batch = await client.POST("/v1/topics/{topic}/events:batch", {
  params: { path: { topic } },
  body: {
    events: [
      { idempotency_key: `ts-${run}-2`, key: "customer-43", headers: { "trace-id": run }, value: [1, "two", null] },
      { idempotency_key: key, key: "customer-42", value: { order: 1003 } },
      {
        idempotency_key: `ts-${run}-3`,
        value_base64: Buffer.from([0, 1, 2, 114, 97, 119]).toString("base64"),
        content_type: "application/octet-stream",
      },
    ],
  },
});
expectStatus(batch.response, 207, "batch");
if (batch.data === undefined) fail(`batch: ${JSON.stringify(batch.error)}`);
const results = batch.data.results;
if (results.map((r) => r.status).join() !== "201,422,201") fail(`batch: ${JSON.stringify(results)}`);
const [one, two, three] = results.map((r) => r.body);
if (one === undefined || two === undefined || three === undefined) fail("batch: not three results");
if (!isPersisted(one) || !isProblem(two) || !isPersisted(three)) fail(`batch: ${JSON.stringify(results)}`);
if (two.code !== "idempotency-key-reused") fail(`batch: second result ${JSON.stringify(two)}`);
if (one.idempotency_key !== `ts-${run}-2` || three.idempotency_key !== `ts-${run}-3`) {
  fail(`batch: out of order ${JSON.stringify(results)}`);
}
ok("batch 207: [201 Persisted, 422 Problem idempotency-key-reused, 201 Persisted] in order");

// 7. A slow Kafka: 202 with Location, then the status settles.
const slowUrl = process.env.ACKGATE_SLOW_URL;
if (slowUrl === undefined || slowUrl === "") {
  ok("202: skipped (no ACKGATE_SLOW_URL)");
} else {
  const slow = createClient<paths>({ baseUrl: slowUrl, headers: { Authorization: `Bearer ${token}` } });
  const slowKey = `ts-${run}-slow`;
  const pending = await publish(slow, slowKey, event);
  expectStatus(pending.response, 202, "slow publish");
  if (pending.data === undefined || !isAccepted(pending.data)) fail(`slow publish: ${JSON.stringify(pending.data)}`);
  const location = pending.response.headers.get("Location");
  if (location !== pending.data.links.status) fail(`slow publish: Location ${location}`);
  ok(`slow publish: 202 Accepted, Location ${location}`);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const polled = await slow.GET("/v1/topics/{topic}/events/{idempotency_key}", {
      params: { path: { topic, idempotency_key: slowKey } },
    });
    expectStatus(polled.response, 200, "slow status");
    if (polled.data === undefined) fail("slow status: no body");
    const settled = polled.data.answer;
    if (polled.data.state === "persisted" && settled != null && isPersisted(settled)) {
      ok(`slow status: in_flight, then persisted at offset ${settled.offset}`);
      break;
    }
    if (polled.data.state !== "in_flight") fail(`slow status: ${JSON.stringify(polled.data)}`);
    if (Date.now() > deadline) fail("slow status: still in flight after 30 s");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
