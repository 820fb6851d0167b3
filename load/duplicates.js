// Duplicate storm: many VUs send the same small set of events at the same time, each event
// always with its own Idempotency-Key and the same body, as clients retrying would. The
// gateway must publish each event exactly once and give every request for a key the same
// answer.
//
//   ACKGATE_KEY=<key> scripts/k6.sh run load/duplicates.js
//   k6 run -e BASE_URL=http://localhost:8080 -e VUS=50 -e KEYS=20 -e ROUNDS=10 load/duplicates.js
//
// Every VU walks through the keys ROUNDS times, all VUs in step, so they collide on each key.
// What is checked:
//   - every request for a key ends in 201 (409 request-in-progress is allowed and retried,
//     after Retry-After capped at RETRY_SLEEP_MAX seconds);
//   - within a VU, every 201 for a key has the same partition/offset and the same body, byte
//     for byte, and every answer after the VU's first one is a replay (Idempotent-Replayed);
//   - across VUs: exactly one 201 per key is not a replay (threshold first_publishes
//     count==KEYS), i.e. each event was published once. A second publish would also show up
//     as a VU whose later replays differ from its first answer;
//   - at the end (teardown) every key replays.
// What the script cannot see is the topic itself: the answers only say what the gateway
// claims. With LOG_ANSWERS=1 it prints every 201 body on a line of its own (console.log), and
// `scripts/k6.sh ci` saves them (k6 --console-output) and runs `ackgate audit --acks` on the
// topic afterwards: each key must be in the topic exactly once, where its answers say.
//
// Environment (defaults in brackets):
//   BASE_URL [http://localhost:8080]  TOPIC [events]
//   ACKGATE_KEY [unset]               API key sent as `Authorization: Bearer` (lib/auth.js)
//   VUS [20]  KEYS [20]  ROUNDS [5]      each VU sends KEYS x ROUNDS events
//   MAX_ATTEMPTS [200]                   409 retries per request before giving up
//   RETRY_SLEEP_MAX [0.1]                upper bound of the wait after a 409, in seconds
//   MAX_DURATION [60s]
//   LOG_ANSWERS [unset]                  1: print every 201 body with console.log, for the audit
import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { requireAccess, withKey } from './lib/auth.js';
import { Counter } from 'k6/metrics';

const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
const TOPIC = __ENV.TOPIC || 'events';
const num = (name, def) => (__ENV[name] !== undefined && __ENV[name] !== '' ? Number(__ENV[name]) : def);
const VUS = num('VUS', 20);
const KEYS = num('KEYS', 20);
const ROUNDS = num('ROUNDS', 5);
const MAX_ATTEMPTS = num('MAX_ATTEMPTS', 200);
const RETRY_SLEEP_MAX = num('RETRY_SLEEP_MAX', 0.1);
const LOG_ANSWERS = __ENV.LOG_ANSWERS === '1';

// 201 answers that were not replays: the gateway published. Must be exactly one per key.
const firstPublishes = new Counter('first_publishes');
// 409 request-in-progress answers (another request with the key was being delivered).
const conflicts = new Counter('conflicts_409');

export const options = {
  scenarios: {
    duplicates: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: KEYS * ROUNDS,
      maxDuration: __ENV.MAX_DURATION || '60s',
    },
  },
  thresholds: {
    checks: ['rate==1.0'],
    first_publishes: [`count==${KEYS}`],
  },
};

http.setResponseCallback(http.expectedStatuses(201, 409));

export function setup() {
  const ready = http.get(`${BASE_URL}/readyz`, { responseCallback: http.expectedStatuses(200) });
  if (ready.status !== 200) {
    exec.test.abort(`gateway at ${BASE_URL} is not ready: ${ready.status} ${ready.body}`);
  }
  requireAccess(BASE_URL, TOPIC);
  return { run: crypto.randomUUID() };
}

function keyOf(data, i) {
  return `dup-${data.run}-${i}`;
}

function send(data, i) {
  // The same event every time for key i: same body, same Kafka key, same headers.
  return http.post(
    `${BASE_URL}/v1/topics/${TOPIC}/events`,
    JSON.stringify({ duplicates: data.run, event: i }),
    {
      headers: withKey({
        'Content-Type': 'application/json',
        'Idempotency-Key': keyOf(data, i),
        'Kafka-Key': `dup-${i}`,
      }),
      tags: { name: 'POST /v1/topics/{topic}/events' },
    },
  );
}

// A 201's body, for `ackgate audit --acks` (one JSON object per line).
function logAnswer(res) {
  if (LOG_ANSWERS && res.status === 201) console.log(res.body);
}

function parse(res) {
  try {
    return res.json();
  } catch (e) {
    return null;
  }
}

// Per VU: key index -> the first 201 this VU got for it.
const seen = {};

export default function (data) {
  const i = __ITER % KEYS;
  let res = send(data, i);
  for (let attempt = 1; res.status === 409 && attempt < MAX_ATTEMPTS; attempt++) {
    conflicts.add(1);
    const problem = parse(res);
    check(res, {
      '409 is request-in-progress with Retry-After': (r) =>
        problem !== null && problem.code === 'request-in-progress' && r.headers['Retry-After'] !== undefined,
    });
    const retryAfter = Number(res.headers['Retry-After']) || RETRY_SLEEP_MAX;
    sleep(Math.min(retryAfter, RETRY_SLEEP_MAX) * (0.5 + Math.random() / 2));
    res = send(data, i);
  }

  logAnswer(res);
  const ok = check(res, { 'every request for a key ends in 201': (r) => r.status === 201 });
  if (!ok) {
    console.error(`key ${keyOf(data, i)}: ${res.status} ${res.body}`);
    return;
  }
  const body = parse(res);
  const replayed = res.headers['Idempotent-Replayed'] === 'true';
  if (!replayed) firstPublishes.add(1);

  const first = seen[i];
  if (first === undefined) {
    seen[i] = { body: res.body, position: body && `${body.partition}/${body.offset}` };
    return;
  }
  const position = body && `${body.partition}/${body.offset}`;
  const same = check(res, {
    'same partition/offset for every 201 of a key': () => position !== null && position === first.position,
    'same body, byte for byte, for every 201 of a key': (r) => r.body === first.body,
    'later answers for a key are replays': () => replayed,
  });
  if (!same) {
    console.error(`key ${keyOf(data, i)}: first ${first.position}, now ${position} (replayed: ${replayed})`);
  }
}

export function teardown(data) {
  for (let i = 0; i < KEYS; i++) {
    const res = send(data, i);
    logAnswer(res);
    check(res, {
      'teardown: every key replays its 201': (r) =>
        r.status === 201 && r.headers['Idempotent-Replayed'] === 'true',
    });
  }
}
