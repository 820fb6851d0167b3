// The API key the load scripts send, and the check that the gateway takes it.
//
// Every request carries `Authorization: Bearer ${ACKGATE_KEY}` when ACKGATE_KEY is set (k6
// reads it from the environment, or from `-e ACKGATE_KEY=...`). A key comes from
// `ackgate new-key --name NAME`: the secret goes here, the entry it prints into the gateway's
// auth file, with `produce` naming the topic under test. A gateway run with `--no-auth` (or
// `ackgate dev` without `--auth-file`) needs none.
//
// requireAccess(), called from setup(), sends one request that stores nothing and aborts the
// run at once when the gateway refuses the caller (401 or 403), instead of letting every
// request of the run fail.
import http from 'k6/http';
import exec from 'k6/execution';

const KEY = __ENV.ACKGATE_KEY || '';

/** Whether ACKGATE_KEY is set. */
export const HAS_KEY = KEY !== '';

/** `headers` with `Authorization: Bearer <ACKGATE_KEY>` added, when a key is set. */
export function withKey(headers) {
  return KEY === '' ? headers : Object.assign({ Authorization: `Bearer ${KEY}` }, headers);
}

/**
 * Aborts the test when the gateway at `baseUrl` does not let this key publish to `topic`.
 * The probe is a POST without an Idempotency-Key, so the gateway stores and publishes nothing:
 * an accepted caller gets 400 missing-idempotency-key (or 404 when the topic does not exist).
 */
export function requireAccess(baseUrl, topic) {
  const res = http.post(`${baseUrl}/v1/topics/${topic}/events`, '{}', {
    headers: withKey({ 'Content-Type': 'application/json' }),
    responseCallback: http.expectedStatuses(400, 401, 403, 404),
    tags: { name: 'access probe' },
  });
  let code = '';
  try {
    code = res.json('code') || '';
  } catch (e) {
    // Not a problem document: the status alone says enough below.
  }
  if (res.status === 401 && KEY === '') {
    exec.test.abort(
      `the gateway at ${baseUrl} needs an API key (401 ${code}): set ACKGATE_KEY to a key of its ` +
        'auth file (k6 run -e ACKGATE_KEY=... or export ACKGATE_KEY; make one with ' +
        '`ackgate new-key`), or run the gateway with --no-auth',
    );
  } else if (res.status === 401) {
    exec.test.abort(
      `the gateway at ${baseUrl} does not know ACKGATE_KEY (401 ${code}): is its SHA-256 in the ` +
        "gateway's auth file (the key_sha256 `ackgate new-key` printed with it)?",
    );
  } else if (res.status === 403) {
    exec.test.abort(
      `ACKGATE_KEY may not publish to topic ${topic} (403 ${code}): add the topic to the ` +
        "client's `produce` patterns in the gateway's auth file",
    );
  }
}
