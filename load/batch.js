// Batches: every iteration posts one batch of BATCH_SIZE new events (unique keys, values of
// about EVENT_BYTES) to POST /v1/topics/{topic}/events:batch, then the same batch again.
//
//   ACKGATE_KEY=<key> scripts/k6.sh run load/batch.js
//   k6 run -e BASE_URL=http://localhost:8080 -e BATCH_SIZE=500 -e VUS=4 -e ITERATIONS=50 load/batch.js
//
// What is checked:
//   - the first send answers 207 with one result per event, in request order (each result
//     names its event's key), and every result is a fresh 201 (replayed: false) with a
//     partition and an offset;
//   - the second send answers 207 and every result is a replay (replayed: true) of the first
//     answer: the same body, partition/offset included;
//   - thresholds: every check passes, no request failed (http_req_failed: anything but 207 is
//     a failure), and exactly VUS x ITERATIONS x BATCH_SIZE events were published
//     (batch_events_published), so a run cut short by MAX_DURATION fails too.
// The summary shows batch_events_published with its rate (events per second of the whole
// run, the replaying second sends included) and batch_events_per_second (per first send:
// BATCH_SIZE divided by that request's duration).
// What the script cannot see is the topic: with LOG_ANSWERS=1 it prints the body of every
// first 201 on a line of its own (console.log), and `scripts/k6.sh ci` runs
// `ackgate audit --acks` on them: each event must be in the topic once, where its answer says.
//
// Environment (defaults in brackets):
//   BASE_URL [http://localhost:8080]  TOPIC [events]
//   ACKGATE_KEY [unset]               API key sent as `Authorization: Bearer` (lib/auth.js)
//   BATCH_SIZE [100]                  events per batch (at most the gateway's --max-batch-events)
//   EVENT_BYTES [1024]                approximate size of each event's JSON value
//   VUS [2]  ITERATIONS [10]          each VU sends ITERATIONS batches, each twice
//   MAX_DURATION [60s]
//   LOG_ANSWERS [unset]               1: print every first 201 body with console.log
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';
import { requireAccess, withKey } from './lib/auth.js';

const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
const TOPIC = __ENV.TOPIC || 'events';
const num = (name, def) => (__ENV[name] !== undefined && __ENV[name] !== '' ? Number(__ENV[name]) : def);
const BATCH_SIZE = num('BATCH_SIZE', 100);
const EVENT_BYTES = num('EVENT_BYTES', 1024);
const VUS = num('VUS', 2);
const ITERATIONS = num('ITERATIONS', 10);
const LOG_ANSWERS = __ENV.LOG_ANSWERS === '1';

// Events whose first send was answered 201 (not a replay): must be every event of the run.
const published = new Counter('batch_events_published');
// Events whose second send was answered as a replay of the first answer.
const replayed = new Counter('batch_events_replayed');
// Per first send: events in the batch divided by the request's duration in seconds.
const eventsPerSecond = new Trend('batch_events_per_second');

export const options = {
  scenarios: {
    batches: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: ITERATIONS,
      maxDuration: __ENV.MAX_DURATION || '60s',
    },
  },
  thresholds: {
    checks: ['rate==1.0'],
    http_req_failed: ['rate==0'],
    batch_events_published: [`count==${VUS * ITERATIONS * BATCH_SIZE}`],
    batch_events_replayed: [`count==${VUS * ITERATIONS * BATCH_SIZE}`],
  },
};

// A batch is answered 207 whatever its events' results: those are checked one by one.
http.setResponseCallback(http.expectedStatuses(207));

export function setup() {
  const ready = http.get(`${BASE_URL}/readyz`, { responseCallback: http.expectedStatuses(200) });
  if (ready.status !== 200) {
    exec.test.abort(`gateway at ${BASE_URL} is not ready: ${ready.status} ${ready.body}`);
  }
  requireAccess(BASE_URL, TOPIC);
  return { run: crypto.randomUUID() };
}

// The request body for this iteration: BATCH_SIZE events, each with its own key.
function batchBody(data) {
  const prefix = `batch-${data.run}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`;
  const pad = 'x'.repeat(Math.max(0, EVENT_BYTES - 64));
  const keys = [];
  const events = [];
  for (let i = 0; i < BATCH_SIZE; i++) {
    const key = `${prefix}-${i}`;
    keys.push(key);
    events.push({ idempotency_key: key, key: `customer-${i % 16}`, value: { key: key, pad: pad } });
  }
  return { keys: keys, body: JSON.stringify({ events: events }) };
}

function send(body) {
  return http.post(`${BASE_URL}/v1/topics/${TOPIC}/events:batch`, body, {
    headers: withKey({ 'Content-Type': 'application/json' }),
    tags: { name: 'POST /v1/topics/{topic}/events:batch' },
  });
}

// The results of a 207 with one result per key, in order; null (and a failed check) otherwise.
function resultsOf(res, keys, what) {
  let results = null;
  try {
    // JSON.parse keeps the fields in the order the gateway wrote them (res.json() does not).
    results = JSON.parse(res.body).results;
  } catch (e) {
    // Not JSON: the checks below fail.
  }
  const ok = check(res, {
    [`${what}: status 207`]: (r) => r.status === 207,
    [`${what}: one result per event, in request order`]: () =>
      Array.isArray(results) &&
      results.length === keys.length &&
      results.every((r, i) => r !== null && r.idempotency_key === keys[i]),
  });
  if (!ok) {
    console.error(`${what}: ${res.status} ${String(res.body).slice(0, 500)}`);
    return null;
  }
  return results;
}

// `value` as JSON with the fields of every object sorted: equal for equal documents.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

export default function (data) {
  const { keys, body } = batchBody(data);

  const first = send(body);
  const created = resultsOf(first, keys, 'first send');
  if (created === null) return;
  eventsPerSecond.add(BATCH_SIZE / (first.timings.duration / 1000));
  const fresh = created.filter(
    (r) => r.status === 201 && r.replayed === false && Number.isInteger(r.body.partition) && Number.isInteger(r.body.offset),
  );
  published.add(fresh.length);
  if (LOG_ANSWERS) fresh.forEach((r) => console.log(JSON.stringify(r.body)));
  const allCreated = check(null, { 'first send: every result is a fresh 201': () => fresh.length === keys.length });
  if (!allCreated) {
    const other = created.find((r) => !fresh.includes(r));
    console.error(`first send: ${JSON.stringify(other)}`);
  }

  const second = send(body);
  const again = resultsOf(second, keys, 'second send');
  if (again === null) return;
  const replays = again.filter(
    (r, i) => r.status === created[i].status && r.replayed === true && canonical(r.body) === canonical(created[i].body),
  );
  replayed.add(replays.length);
  const allReplayed = check(null, {
    'second send: every result replays the first answer': () => replays.length === keys.length,
  });
  if (!allReplayed) {
    const i = again.findIndex((r) => !replays.includes(r));
    console.error(`second send: ${JSON.stringify(again[i])}, first: ${JSON.stringify(created[i])}`);
  }
}
