// Spike test: a steady baseline, then a sudden jump in arrival rate, then back. The gateway
// must keep answering: every request gets 201, or 503 `overloaded` with Retry-After when its
// local queue is full (load shedding, counted separately); never another 5xx, a dropped
// connection or a timeout.
//
//   scripts/k6.sh run load/spike.js
//   k6 run -e BASE_URL=http://localhost:8080 -e SPIKE_RATE=2000 load/spike.js
//
// Environment (defaults in brackets):
//   BASE_URL [http://localhost:8080]  TOPIC [events]
//   BASE_RATE [20]  SPIKE_RATE [500]   requests/s before/after and during the spike
//   WARMUP [10s]  SPIKE_RAMP [2s]  SPIKE_HOLD [20s]  RECOVERY [20s]
//   PRE_VUS [100]  MAX_VUS [1000]
//   P99_MS [2000]                      p99 latency of the 201 answers
//   MAX_SERVER_ERROR_RATE [0]          allowed share of 5xx other than 503 overloaded, and of
//                                      transport errors (status 0: refused, reset, timed out)
//   MAX_OVERLOADED_RATE [1]            allowed share of 503 overloaded (1 = any; set e.g. 0.2
//                                      to also bound load shedding)
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate } from 'k6/metrics';

const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
const TOPIC = __ENV.TOPIC || 'events';
const num = (name, def) => (__ENV[name] !== undefined && __ENV[name] !== '' ? Number(__ENV[name]) : def);
const BASE_RATE = num('BASE_RATE', 20);
const SPIKE_RATE = num('SPIKE_RATE', 500);

// 5xx other than a well-formed 503 overloaded, or no HTTP answer at all.
const serverErrors = new Rate('server_errors');
// 503 overloaded with Retry-After: the gateway shedding load as designed.
const overloaded = new Rate('overloaded_503');
const overloadedCount = new Counter('overloaded_503_total');

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: BASE_RATE,
      timeUnit: '1s',
      preAllocatedVUs: num('PRE_VUS', 100),
      maxVUs: num('MAX_VUS', 1000),
      stages: [
        { target: BASE_RATE, duration: __ENV.WARMUP || '10s' },
        { target: SPIKE_RATE, duration: __ENV.SPIKE_RAMP || '2s' },
        { target: SPIKE_RATE, duration: __ENV.SPIKE_HOLD || '20s' },
        { target: BASE_RATE, duration: __ENV.SPIKE_RAMP || '2s' },
        { target: BASE_RATE, duration: __ENV.RECOVERY || '20s' },
      ],
      gracefulStop: '35s',
    },
  },
  thresholds: {
    server_errors: [`rate<=${num('MAX_SERVER_ERROR_RATE', 0)}`],
    overloaded_503: [`rate<=${num('MAX_OVERLOADED_RATE', 1)}`],
    'http_req_duration{status:201}': [`p(99)<${num('P99_MS', 2000)}`],
    checks: ['rate==1.0'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

// 503 is reported through overloaded_503 / server_errors, not as a failed request.
http.setResponseCallback(http.expectedStatuses(201, 503));

export function setup() {
  const ready = http.get(`${BASE_URL}/readyz`, { responseCallback: http.expectedStatuses(200) });
  if (ready.status !== 200) {
    exec.test.abort(`gateway at ${BASE_URL} is not ready: ${ready.status} ${ready.body}`);
  }
  return { run: crypto.randomUUID() };
}

function problemCode(res) {
  try {
    return res.json('code');
  } catch (e) {
    return undefined;
  }
}

export default function (data) {
  const n = exec.scenario.iterationInTest;
  const res = http.post(
    `${BASE_URL}/v1/topics/${TOPIC}/events`,
    JSON.stringify({ run: data.run, n: n, at: Date.now() }),
    {
      headers: {
        'Content-Type': 'application/json',
        'Idempotency-Key': `spike-${data.run}-${n}`,
        'Kafka-Key': `customer-${n % 1000}`,
      },
      tags: { name: 'POST /v1/topics/{topic}/events' },
    },
  );
  const shed = res.status === 503 && problemCode(res) === 'overloaded' && res.headers['Retry-After'] !== undefined;
  overloaded.add(shed);
  if (shed) overloadedCount.add(1);
  serverErrors.add(res.status === 0 || (res.status >= 500 && !shed));
  check(res, {
    'answered 201, or 503 overloaded with Retry-After': (r) => r.status === 201 || shed,
  });
}
