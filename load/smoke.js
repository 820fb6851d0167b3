// Smoke test of the ackgate contract: one request for every answer a healthy gateway gives
// (201, replay, 422, 400 x5, 404, 413, and 401 when it needs a key), each checked against the
// documented contract.
//
//   ACKGATE_KEY=<key> scripts/k6.sh run load/smoke.js
//   k6 run -e BASE_URL=http://localhost:8080 -e TOPIC=events load/smoke.js
//
// Environment: BASE_URL (default http://localhost:8080), TOPIC (an existing topic, default
// events), ACKGATE_KEY (an API key that may publish to TOPIC, sent as `Authorization: Bearer`;
// unset for a gateway without authentication; see lib/auth.js), MAX_BODY_BYTES (the gateway's
// --max-body-bytes, default 1048576), ITERATIONS (default 1). Every check must pass (threshold checks rate==1.0), so any deviation from the
// contract makes k6 exit non-zero.
//
// Each step (one answer of the contract) runs in its own try/catch: an exception in a step
// (an unparsable answer, a missing header, a bug here) records a failed check named after the
// step and the next steps still run. Every step that finishes is counted, and the count must
// be every step of every iteration (threshold smoke_steps_completed), so a step that never
// ran, or an iteration cut short, fails the run too: `checks rate==1.0` alone holds when
// checks are skipped.
import http from 'k6/http';
import { check, group } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { HAS_KEY, requireAccess, withKey } from './lib/auth.js';

const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
const TOPIC = __ENV.TOPIC || 'events';
const MAX_BODY_BYTES = Number(__ENV.MAX_BODY_BYTES || 1048576);
const ITERATIONS = Number(__ENV.ITERATIONS || 1);

// Steps that ran to their end without an exception.
const stepsCompleted = new Counter('smoke_steps_completed');

// One request (or a few) per answer of the contract, in this order; each gets the iteration's
// context `t` (the function declarations below are hoisted).
const STEPS = [
  ['201 persisted', persisted],
  ['201 replayed', replayed],
  ['422 idempotency-key-reused', keyReused],
  ['400 missing-idempotency-key', missingKey],
  ['400 invalid-idempotency-key', invalidKey],
  ['400 invalid-json', invalidJson],
  ['400 invalid-header', invalidHeader],
  ['400 invalid-topic', invalidTopic],
  ['404 topic-not-found', topicNotFound],
  ['413 payload-too-large', payloadTooLarge],
];
// With a key, the gateway checks credentials: a request without them gets 401.
if (HAS_KEY) STEPS.push(['401 unauthenticated', unauthenticated]);

export const options = {
  scenarios: {
    smoke: {
      executor: 'per-vu-iterations',
      vus: 1,
      iterations: ITERATIONS,
      maxDuration: '60s',
    },
  },
  thresholds: {
    checks: ['rate==1.0'],
    // Every step of every iteration ran to its end.
    smoke_steps_completed: [`count==${ITERATIONS * STEPS.length}`],
  },
};

// Every status the smoke test provokes on purpose is "expected" (http_req_failed stays 0).
http.setResponseCallback(http.expectedStatuses(201, 400, 401, 404, 413, 422));

function eventsUrl(topic) {
  return `${BASE_URL}/v1/topics/${topic}/events`;
}

// A POST with the API key; `anonymous` leaves the key out.
function post(topic, key, body, headers, anonymous) {
  let h = Object.assign({ 'Content-Type': 'application/json' }, headers || {});
  if (key !== null) h['Idempotency-Key'] = key;
  if (!anonymous) h = withKey(h);
  return http.post(eventsUrl(topic), body, { headers: h, tags: { name: 'POST /v1/topics/{topic}/events' } });
}

function json(res) {
  try {
    return res.json();
  } catch (e) {
    return null;
  }
}

// A problem document (RFC 9457) with the given status and code.
function checkProblem(res, status, code) {
  const body = json(res);
  return check(res, {
    [`${code}: status ${status}`]: (r) => r.status === status,
    [`${code}: content-type application/problem+json`]: (r) =>
      (r.headers['Content-Type'] || '').startsWith('application/problem+json'),
    [`${code}: body.code`]: () => body !== null && body.code === code,
    [`${code}: body.status`]: () => body !== null && body.status === status,
    [`${code}: body.type`]: () => body !== null && body.type === `urn:ackgate:problem:${code}`,
    [`${code}: title and detail`]: () =>
      body !== null && typeof body.title === 'string' && body.title.length > 0 &&
      typeof body.detail === 'string' && body.detail.length > 0,
    [`${code}: not a replay`]: (r) => r.headers['Idempotent-Replayed'] === undefined,
  });
}

export function setup() {
  const ready = http.get(`${BASE_URL}/readyz`, { responseCallback: http.expectedStatuses(200) });
  if (ready.status !== 200) {
    exec.test.abort(`gateway at ${BASE_URL} is not ready: ${ready.status} ${ready.body}`);
  }
  requireAccess(BASE_URL, TOPIC);
}

export default function () {
  const run = crypto.randomUUID();
  const t = {
    run: run,
    key: `smoke-${run}`,
    body: JSON.stringify({ smoke: true, run: run, total: 42.5 }),
    headers: { 'Kafka-Key': `customer-${run}`, 'Kafka-Header-Trace-Id': run },
    first: null, // the answer of the first step, which the replay must repeat
  };
  for (const [name, step] of STEPS) {
    group(name, () => {
      try {
        step(t);
        stepsCompleted.add(1);
      } catch (e) {
        // A failed check, so that `checks rate==1.0` fails too, and the next steps run.
        check(null, { [`${name}: ran to its end without an exception`]: () => false });
        console.error(`step ${name}: ${e}`);
      }
    });
  }
}

function persisted(t) {
  const res = post(TOPIC, t.key, t.body, t.headers);
  t.first = res;
  const b = json(res);
  check(res, {
    '201: status 201': (r) => r.status === 201,
    '201: content-type application/json': (r) => (r.headers['Content-Type'] || '').startsWith('application/json'),
    '201: status persisted': () => b !== null && b.status === 'persisted',
    '201: topic': () => b !== null && b.topic === TOPIC,
    '201: partition is an integer >= 0': () => b !== null && Number.isInteger(b.partition) && b.partition >= 0,
    '201: offset is an integer >= 0': () => b !== null && Number.isInteger(b.offset) && b.offset >= 0,
    '201: timestamp': () => b !== null && typeof b.timestamp === 'string' && !Number.isNaN(Date.parse(b.timestamp)),
    '201: idempotency_key': () => b !== null && b.idempotency_key === t.key,
    '201: first answer is not a replay': (r) => r.headers['Idempotent-Replayed'] === undefined,
  });
}

function replayed(t) {
  const res = post(TOPIC, t.key, t.body, t.headers);
  check(res, {
    'replay: status 201': (r) => r.status === 201,
    'replay: Idempotent-Replayed: true': (r) => r.headers['Idempotent-Replayed'] === 'true',
    'replay: same body, byte for byte': (r) => t.first !== null && r.body === t.first.body,
  });
}

function keyReused(t) {
  const res = post(TOPIC, t.key, JSON.stringify({ smoke: true, run: t.run, total: 43 }), t.headers);
  checkProblem(res, 422, 'idempotency-key-reused');
}

function missingKey(t) {
  checkProblem(post(TOPIC, null, t.body), 400, 'missing-idempotency-key');
}

function invalidKey(t) {
  checkProblem(post(TOPIC, `smoke ${t.run}`, t.body), 400, 'invalid-idempotency-key');
  checkProblem(post(TOPIC, 'k'.repeat(256), t.body), 400, 'invalid-idempotency-key');
}

function invalidJson(t) {
  const k = `smoke-json-${t.run}`;
  checkProblem(post(TOPIC, k, '{"total":'), 400, 'invalid-json');
  // Nothing was stored for the key: the fixed request is a new event.
  check(post(TOPIC, k, '{"total":1}'), {
    'invalid-json: the fixed request with the same key is persisted': (r) =>
      r.status === 201 && r.headers['Idempotent-Replayed'] === undefined,
  });
}

function invalidHeader(t) {
  // idempotency-key is a reserved record header: the gateway sets it.
  const res = post(TOPIC, `smoke-header-${t.run}`, t.body, { 'Kafka-Header-Idempotency-Key': t.run });
  checkProblem(res, 400, 'invalid-header');
}

function invalidTopic(t) {
  checkProblem(post('bad!topic', `smoke-topic-${t.run}`, t.body), 400, 'invalid-topic');
}

function topicNotFound(t) {
  checkProblem(post(`missing-${t.run}`, `smoke-404-${t.run}`, t.body), 404, 'topic-not-found');
}

function payloadTooLarge(t) {
  const big = 'a'.repeat(MAX_BODY_BYTES + 1);
  // The gateway reads (and discards) an oversize body before it answers, so the client gets
  // the 413 rather than a reset while it is still sending; a reset fails this check.
  const res = post(TOPIC, `smoke-413-${t.run}`, big, { 'Content-Type': 'application/octet-stream' });
  checkProblem(res, 413, 'payload-too-large');
}

function unauthenticated(t) {
  // The whole, valid event, only without the key: refused before anything is stored.
  const k = `smoke-401-${t.run}`;
  const res = post(TOPIC, k, t.body, t.headers, true);
  checkProblem(res, 401, 'unauthenticated');
  check(res, {
    'unauthenticated: WWW-Authenticate: Bearer': (r) => /^Bearer\b/.test(r.headers['Www-Authenticate'] || ''),
  });
  // Nothing was stored for the key: the same request with the key is a new event.
  check(post(TOPIC, k, t.body, t.headers), {
    'unauthenticated: the same request with the key is persisted': (r) =>
      r.status === 201 && r.headers['Idempotent-Replayed'] === undefined,
  });
}
