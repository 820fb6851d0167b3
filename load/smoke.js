// Smoke test of the ackgate contract: one request for every answer a healthy gateway gives
// (201, replay, 422, 400 x5, 404, 413), each checked against the documented contract.
//
//   scripts/k6.sh run load/smoke.js
//   k6 run -e BASE_URL=http://localhost:8080 -e TOPIC=events load/smoke.js
//
// Environment: BASE_URL (default http://localhost:8080), TOPIC (an existing topic, default
// events), MAX_BODY_BYTES (the gateway's --max-body-bytes, default 1048576), ITERATIONS
// (default 1). Every check must pass (threshold checks rate==1.0), so any deviation from the
// contract makes k6 exit non-zero.
import http from 'k6/http';
import { check, group } from 'k6';
import exec from 'k6/execution';

const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
const TOPIC = __ENV.TOPIC || 'events';
const MAX_BODY_BYTES = Number(__ENV.MAX_BODY_BYTES || 1048576);

// Transport errors (no HTTP answer) on the 413 request; see the 413 group below.

export const options = {
  scenarios: {
    smoke: {
      executor: 'per-vu-iterations',
      vus: 1,
      iterations: Number(__ENV.ITERATIONS || 1),
      maxDuration: '60s',
    },
  },
  thresholds: {
    checks: ['rate==1.0'],
  },
};

// Every status the smoke test provokes on purpose is "expected" (http_req_failed stays 0).
http.setResponseCallback(http.expectedStatuses(201, 400, 404, 413, 422));

function eventsUrl(topic) {
  return `${BASE_URL}/v1/topics/${topic}/events`;
}

function post(topic, key, body, headers) {
  const h = Object.assign({ 'Content-Type': 'application/json' }, headers || {});
  if (key !== null) h['Idempotency-Key'] = key;
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
}

export default function () {
  const run = crypto.randomUUID();
  const key = `smoke-${run}`;
  const body = JSON.stringify({ smoke: true, run: run, total: 42.5 });
  const headers = { 'Kafka-Key': `customer-${run}`, 'Kafka-Header-Trace-Id': run };
  let first = null;

  group('201 persisted', () => {
    const res = post(TOPIC, key, body, headers);
    first = res;
    const b = json(res);
    check(res, {
      '201: status 201': (r) => r.status === 201,
      '201: content-type application/json': (r) => (r.headers['Content-Type'] || '').startsWith('application/json'),
      '201: status persisted': () => b !== null && b.status === 'persisted',
      '201: topic': () => b !== null && b.topic === TOPIC,
      '201: partition is an integer >= 0': () => b !== null && Number.isInteger(b.partition) && b.partition >= 0,
      '201: offset is an integer >= 0': () => b !== null && Number.isInteger(b.offset) && b.offset >= 0,
      '201: timestamp': () => b !== null && typeof b.timestamp === 'string' && !Number.isNaN(Date.parse(b.timestamp)),
      '201: idempotency_key': () => b !== null && b.idempotency_key === key,
      '201: first answer is not a replay': (r) => r.headers['Idempotent-Replayed'] === undefined,
    });
  });

  group('201 replayed', () => {
    const res = post(TOPIC, key, body, headers);
    check(res, {
      'replay: status 201': (r) => r.status === 201,
      'replay: Idempotent-Replayed: true': (r) => r.headers['Idempotent-Replayed'] === 'true',
      'replay: same body, byte for byte': (r) => first !== null && r.body === first.body,
    });
  });

  group('422 idempotency-key-reused', () => {
    const res = post(TOPIC, key, JSON.stringify({ smoke: true, run: run, total: 43 }), headers);
    checkProblem(res, 422, 'idempotency-key-reused');
  });

  group('400 missing-idempotency-key', () => {
    checkProblem(post(TOPIC, null, body), 400, 'missing-idempotency-key');
  });

  group('400 invalid-idempotency-key', () => {
    checkProblem(post(TOPIC, `smoke ${run}`, body), 400, 'invalid-idempotency-key');
    checkProblem(post(TOPIC, 'k'.repeat(256), body), 400, 'invalid-idempotency-key');
  });

  group('400 invalid-json', () => {
    const k = `smoke-json-${run}`;
    checkProblem(post(TOPIC, k, '{"total":'), 400, 'invalid-json');
    // Nothing was stored for the key: the fixed request is a new event.
    check(post(TOPIC, k, '{"total":1}'), {
      'invalid-json: the fixed request with the same key is persisted': (r) =>
        r.status === 201 && r.headers['Idempotent-Replayed'] === undefined,
    });
  });

  group('400 invalid-header', () => {
    // idempotency-key is a reserved record header: the gateway sets it.
    const res = post(TOPIC, `smoke-header-${run}`, body, { 'Kafka-Header-Idempotency-Key': run });
    checkProblem(res, 400, 'invalid-header');
  });

  group('400 invalid-topic', () => {
    checkProblem(post('bad!topic', `smoke-topic-${run}`, body), 400, 'invalid-topic');
  });

  group('404 topic-not-found', () => {
    checkProblem(post(`missing-${run}`, `smoke-404-${run}`, body), 404, 'topic-not-found');
  });

  group('413 payload-too-large', () => {
    const big = 'a'.repeat(MAX_BODY_BYTES + 1);
    // The gateway reads (and discards) an oversize body before it answers, so the client gets
    // the 413 rather than a reset while it is still sending; a reset fails this check.
    const res = post(TOPIC, `smoke-413-${run}`, big, { 'Content-Type': 'application/octet-stream' });
    checkProblem(res, 413, 'payload-too-large');
  });
}
