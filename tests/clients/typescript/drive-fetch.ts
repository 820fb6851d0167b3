// Drives a running gateway with the client OpenAPI Generator's `typescript-fetch` generator made
// from openapi/openapi.json (target/clients/typescript-fetch/generated): publish, replay, status,
// and the 422 of a reused key, read through the generated models. Same environment as drive.ts.
import {
  Configuration,
  EventsApi,
  ProblemFromJSON,
  ResponseError,
  instanceOfPersisted,
  type Persisted,
  type Problem,
} from "./generated/index.js";

function fail(message: string): never {
  console.log(`FAIL ${message}`);
  process.exit(1);
}

function ok(message: string): void {
  console.log(`ok   ${message}`);
}

const url = process.env.ACKGATE_URL ?? fail("ACKGATE_URL is not set");
const token = process.env.ACKGATE_KEY ?? fail("ACKGATE_KEY is not set");
const topic = process.env.ACKGATE_TOPIC ?? "events";
const run = Math.random().toString(36).slice(2, 12);
const api = new EventsApi(new Configuration({ basePath: url, accessToken: token }));
const key = `tsf-${run}-1`;
// The body is any JSON value (`any` in the generated request type).
const body = (value: unknown) => value;

// 1. Publish, 2. replay.
const first = await api.publishEventRaw({ topic, idempotencyKey: key, kafkaKey: "customer-42", body: body({ order: 1 }) });
if (first.raw.status !== 201) fail(`publish: HTTP ${first.raw.status}`);
// A publish answers `PublishAnswer`: a Persisted (201) or an Accepted (202).
const published = await first.value();
if (!instanceOfPersisted(published)) fail(`publish: not a Persisted: ${JSON.stringify(published)}`);
const persisted: Persisted = published;
if (persisted.status !== "persisted" || persisted.idempotencyKey !== key) fail(`publish: ${JSON.stringify(persisted)}`);
ok(`publish 201 Persisted partition=${persisted.partition} offset=${persisted.offset}`);

const again = await api.publishEventRaw({ topic, idempotencyKey: key, kafkaKey: "customer-42", body: body({ order: 1 }) });
const replayed = await again.value();
if (!instanceOfPersisted(replayed)) fail(`replay: not a Persisted: ${JSON.stringify(replayed)}`);
if (again.raw.status !== 201 || replayed.offset !== persisted.offset || replayed.partition !== persisted.partition) {
  fail(`replay: HTTP ${again.raw.status} ${JSON.stringify(replayed)}`);
}
if (again.raw.headers.get("Idempotent-Replayed") !== "true") fail("replay: not Idempotent-Replayed");
ok("replay 201 Persisted, same partition/offset, Idempotent-Replayed: true");

// 3. Status.
const state = await api.eventStatus({ topic, idempotencyKey: key });
const answer = state.answer;
if (state.state !== "persisted" || answer == null || !instanceOfPersisted(answer) || answer.offset !== persisted.offset) {
  fail(`status: ${JSON.stringify(state)}`);
}
ok("status 200 state=persisted, answer is the same Persisted");

// 4. The same key, another body: the generated client throws ResponseError; its body is a Problem.
try {
  await api.publishEvent({ topic, idempotencyKey: key, kafkaKey: "customer-42", body: body({ order: 2 }) });
  fail("reused key: no error");
} catch (error) {
  if (!(error instanceof ResponseError)) throw error;
  const problem: Problem = ProblemFromJSON(await error.response.json());
  if (error.response.status !== 422 || problem.code !== "idempotency-key-reused") {
    fail(`reused key: HTTP ${error.response.status} ${JSON.stringify(problem)}`);
  }
}
ok("same key, other body: 422 Problem idempotency-key-reused");
