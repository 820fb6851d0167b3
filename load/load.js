// Load test: a ramp of new events (every request a new Idempotency-Key) at a target arrival
// rate, with latency and error thresholds.
//
//   ACKGATE_KEY=<key> scripts/k6.sh run load/load.js
//   k6 run -e BASE_URL=http://localhost:8080 -e RATE=500 -e HOLD=5m load/load.js
//
// Environment (defaults in brackets):
//   BASE_URL [http://localhost:8080]   TOPIC [events]
//   ACKGATE_KEY [unset]                API key sent as `Authorization: Bearer` (lib/auth.js)
//   START_RATE [10]  RATE [200]        requests/s at the start and at the plateau
//   RAMP [30s]  HOLD [1m]  RAMP_DOWN [10s]
//   PRE_VUS [50]  MAX_VUS [500]        VUs k6 may use to keep up with the rate
//   BODY_BYTES [512]                   size of each event body
//   P95_MS [250]  P99_MS [1000]        latency thresholds (every request waits for acks=all)
//   MAX_FAILED_RATE [0.01]             allowed share of non-201 answers / transport errors
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { requireAccess, withKey } from './lib/auth.js';

const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
const TOPIC = __ENV.TOPIC || 'events';
const num = (name, def) => (__ENV[name] !== undefined && __ENV[name] !== '' ? Number(__ENV[name]) : def);
const BODY_BYTES = num('BODY_BYTES', 512);

export const options = {
  scenarios: {
    load: {
      executor: 'ramping-arrival-rate',
      startRate: num('START_RATE', 10),
      timeUnit: '1s',
      preAllocatedVUs: num('PRE_VUS', 50),
      maxVUs: num('MAX_VUS', 500),
      stages: [
        { target: num('RATE', 200), duration: __ENV.RAMP || '30s' },
        { target: num('RATE', 200), duration: __ENV.HOLD || '1m' },
        { target: 0, duration: __ENV.RAMP_DOWN || '10s' },
      ],
      gracefulStop: '35s', // a request may wait up to the delivery timeout (30 s)
    },
  },
  thresholds: {
    http_req_duration: [`p(95)<${num('P95_MS', 250)}`, `p(99)<${num('P99_MS', 1000)}`],
    http_req_failed: [`rate<${num('MAX_FAILED_RATE', 0.01)}`],
    checks: [`rate>${1 - num('MAX_FAILED_RATE', 0.01)}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

// Only 201 is a success here: every request is a new event.
http.setResponseCallback(http.expectedStatuses(201));

export function setup() {
  const ready = http.get(`${BASE_URL}/readyz`, { responseCallback: http.expectedStatuses(200) });
  if (ready.status !== 200) {
    exec.test.abort(`gateway at ${BASE_URL} is not ready: ${ready.status} ${ready.body}`);
  }
  requireAccess(BASE_URL, TOPIC);
  // One id per run, so keys never collide with an earlier run's (still replayable) keys.
  return { run: crypto.randomUUID() };
}

const padding = 'x'.repeat(Math.max(0, BODY_BYTES - 120));

export default function (data) {
  const n = exec.scenario.iterationInTest;
  const key = `load-${data.run}-${n}`;
  const body = JSON.stringify({ run: data.run, n: n, at: Date.now(), pad: padding });
  const res = http.post(`${BASE_URL}/v1/topics/${TOPIC}/events`, body, {
    headers: withKey({
      'Content-Type': 'application/json',
      'Idempotency-Key': key,
      'Kafka-Key': `customer-${n % 1000}`,
    }),
    tags: { name: 'POST /v1/topics/{topic}/events' },
  });
  check(res, {
    'persisted (201)': (r) => r.status === 201,
    'not a replay': (r) => r.headers['Idempotent-Replayed'] === undefined,
  });
}
