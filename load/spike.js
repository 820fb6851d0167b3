// Spike test: a steady baseline, then a sudden jump in arrival rate, then back. The gateway
// must keep answering: every request gets 201, or 503 `overloaded` with Retry-After when its
// local queue is full (load shedding, counted separately); never another 5xx, a dropped
// connection or a timeout. Before the spike and once it is over (after RECOVERY_GRACE), at the
// base rate, nearly every request must be a 201: a gateway that sheds everything, or that does
// not come back after the spike, fails.
//
//   ACKGATE_KEY=<key> scripts/k6.sh run load/spike.js
//   k6 run -e BASE_URL=http://localhost:8080 -e SPIKE_RATE=2000 load/spike.js
//
// Environment (defaults in brackets):
//   BASE_URL [http://localhost:8080]  TOPIC [events]
//   ACKGATE_KEY [unset]               API key sent as `Authorization: Bearer` (lib/auth.js)
//   BASE_RATE [20]  SPIKE_RATE [500]   requests/s before/after and during the spike
//   WARMUP [10s]  SPIKE_RAMP [2s]  SPIKE_HOLD [20s]  RECOVERY [20s]
//   RECOVERY_GRACE [5s]                the first part of RECOVERY, not judged: the backlog of
//                                      the spike may still drain
//   PRE_VUS [100]  MAX_VUS [1000]  REQUEST_TIMEOUT [30s]
//   P99_MS [2000]                      p99 latency of the 201 answers
//   MIN_CREATED [half the requests sent at BASE_RATE during WARMUP and the judged part of
//                RECOVERY]             fewest 201 answers in the run: the p99 is over at least
//                                      these many
//   MIN_CALM_SUCCESS_RATE [0.99]       share of 201 answers before the spike (warmup_201) and
//                                      after it (recovery_201)
//   MIN_CALM_ANSWER_SHARE [0.5]        each of those two phases must get at least this share
//                                      of the answers BASE_RATE asks for (warmup_answers,
//                                      recovery_answers): a rate over too few answers, or none,
//                                      proves nothing
//   MAX_SERVER_ERROR_RATE [0]          allowed share of 5xx other than 503 overloaded, and of
//                                      transport errors (status 0: refused, reset, timed out)
//   MAX_OVERLOADED_RATE [0.5]          allowed share of 503 overloaded over the whole run
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { requireAccess, withKey } from './lib/auth.js';
import { Counter, Rate } from 'k6/metrics';

const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
const TOPIC = __ENV.TOPIC || 'events';
const num = (name, def) => (__ENV[name] !== undefined && __ENV[name] !== '' ? Number(__ENV[name]) : def);
const str = (name, def) => (__ENV[name] !== undefined && __ENV[name] !== '' ? __ENV[name] : def);

// k6 duration strings as used here ("500ms", "10s", "1m30s", "1h"), in milliseconds.
function millis(name, def) {
  const text = str(name, def);
  const units = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  let total = 0;
  const rest = text.replace(/(\d+(?:\.\d+)?)(ms|s|m|h)/g, (_, n, unit) => {
    total += Number(n) * units[unit];
    return '';
  });
  if (rest !== '' || text === '') throw new Error(`${name}=${text} is not a duration like 10s or 1m30s`);
  return total;
}

const BASE_RATE = num('BASE_RATE', 20);
const SPIKE_RATE = num('SPIKE_RATE', 500);
const WARMUP = str('WARMUP', '10s');
const SPIKE_RAMP = str('SPIKE_RAMP', '2s');
const SPIKE_HOLD = str('SPIKE_HOLD', '20s');
const RECOVERY = str('RECOVERY', '20s');

// The phases, as milliseconds since the scenario started: [0, WARMUP) is the warmup; the
// recovery is judged from RECOVERY_START to the end; the rest is the spike.
const WARMUP_MS = millis('WARMUP', WARMUP);
const RECOVERY_START_MS =
  WARMUP_MS + 2 * millis('SPIKE_RAMP', SPIKE_RAMP) + millis('SPIKE_HOLD', SPIKE_HOLD) +
  millis('RECOVERY_GRACE', '5s');
const JUDGED_RECOVERY_MS = millis('RECOVERY', RECOVERY) - millis('RECOVERY_GRACE', '5s');
if (WARMUP_MS < 1000 || JUDGED_RECOVERY_MS < 1000) {
  throw new Error('WARMUP and RECOVERY - RECOVERY_GRACE must be at least 1s: they are judged');
}
const expected = (ms) => Math.floor((BASE_RATE * ms) / 1000);
const MIN_CALM_ANSWER_SHARE = num('MIN_CALM_ANSWER_SHARE', 0.5);
const MIN_WARMUP_ANSWERS = Math.max(1, Math.floor(MIN_CALM_ANSWER_SHARE * expected(WARMUP_MS)));
const MIN_RECOVERY_ANSWERS = Math.max(1, Math.floor(MIN_CALM_ANSWER_SHARE * expected(JUDGED_RECOVERY_MS)));
const MIN_CREATED = num('MIN_CREATED', Math.max(1, Math.floor(0.5 * expected(WARMUP_MS + JUDGED_RECOVERY_MS))));
const MIN_CALM_SUCCESS_RATE = num('MIN_CALM_SUCCESS_RATE', 0.99);

// 5xx other than a well-formed 503 overloaded, or no HTTP answer at all.
const serverErrors = new Rate('server_errors');
// 503 overloaded with Retry-After: the gateway shedding load as designed.
const overloaded = new Rate('overloaded_503');
const overloadedCount = new Counter('overloaded_503_total');
// Before the spike and after it (past the grace): the share of 201s, and how many answers
// there were (a Rate with no samples passes its threshold, so the count is checked too).
const warmup201 = new Rate('warmup_201');
const warmupAnswers = new Counter('warmup_answers');
const recovery201 = new Rate('recovery_201');
const recoveryAnswers = new Counter('recovery_answers');

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: BASE_RATE,
      timeUnit: '1s',
      preAllocatedVUs: num('PRE_VUS', 100),
      maxVUs: num('MAX_VUS', 1000),
      stages: [
        { target: BASE_RATE, duration: WARMUP },
        { target: SPIKE_RATE, duration: SPIKE_RAMP },
        { target: SPIKE_RATE, duration: SPIKE_HOLD },
        { target: BASE_RATE, duration: SPIKE_RAMP },
        { target: BASE_RATE, duration: RECOVERY },
      ],
      gracefulStop: '35s',
    },
  },
  thresholds: {
    server_errors: [`rate<=${num('MAX_SERVER_ERROR_RATE', 0)}`],
    overloaded_503: [`rate<=${num('MAX_OVERLOADED_RATE', 0.5)}`],
    // The p99 is only meaningful over enough 201s: with none it would pass.
    'http_reqs{status:201}': [`count>=${MIN_CREATED}`],
    'http_req_duration{status:201}': [`p(99)<${num('P99_MS', 2000)}`],
    warmup_201: [`rate>=${MIN_CALM_SUCCESS_RATE}`],
    warmup_answers: [`count>=${MIN_WARMUP_ANSWERS}`],
    recovery_201: [`rate>=${MIN_CALM_SUCCESS_RATE}`],
    recovery_answers: [`count>=${MIN_RECOVERY_ANSWERS}`],
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
  requireAccess(BASE_URL, TOPIC);
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
  // The phase the request was sent in.
  const sentAt = Date.now() - exec.scenario.startTime;
  const res = http.post(
    `${BASE_URL}/v1/topics/${TOPIC}/events`,
    JSON.stringify({ run: data.run, n: n, at: Date.now() }),
    {
      headers: withKey({
        'Content-Type': 'application/json',
        'Idempotency-Key': `spike-${data.run}-${n}`,
        'Kafka-Key': `customer-${n % 1000}`,
      }),
      tags: { name: 'POST /v1/topics/{topic}/events' },
      timeout: str('REQUEST_TIMEOUT', '30s'),
    },
  );
  const shed = res.status === 503 && problemCode(res) === 'overloaded' && res.headers['Retry-After'] !== undefined;
  overloaded.add(shed);
  if (shed) overloadedCount.add(1);
  serverErrors.add(res.status === 0 || (res.status >= 500 && !shed));
  if (sentAt < WARMUP_MS) {
    warmup201.add(res.status === 201);
    warmupAnswers.add(1);
  } else if (sentAt >= RECOVERY_START_MS) {
    recovery201.add(res.status === 201);
    recoveryAnswers.add(1);
  }
  check(res, {
    'answered 201, or 503 overloaded with Retry-After': (r) => r.status === 201 || shed,
  });
}
