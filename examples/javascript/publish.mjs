#!/usr/bin/env node
// Publish one event to ackgate with the retry loop its contract needs (Node 20, global fetch,
// no dependencies).
//
// Copy `publish()` into your code. It keeps ackgate's exactly-once promise on the client side:
// the same Idempotency-Key on every attempt, waits where the gateway says to wait, stops where a
// retry cannot help. The rules are in the comments, each with its reason; examples/README.md has
// them as a table.
//
//   node publish.mjs <base-url> <topic> <idempotency-key> <json-body>
//
// Environment: ACKGATE_KEY (bearer token), ACKGATE_TIMEOUT_MS (per attempt, default 15000),
// ACKGATE_DEADLINE_MS (overall, default 60000). Prints one JSON line describing the outcome; exit
// status 0 persisted, 2 failed (possibly persisted), 3 rejected, 4 unknown (gave up), 1 usage.

import { pathToFileURL } from "node:url";

// A Retry-After longer than this is not waited for in full: the overall deadline decides.
const MAX_RETRY_AFTER_MS = 20_000;
// How often a 202's Location is polled.
const POLL_INTERVAL_MS = 500;

/**
 * Publishes `event` (a JSON string) under `key`; resolves to the outcome.
 *
 * outcome: "persisted" (in Kafka: `answer` is the 201 body), "failed" (may be in Kafka, the
 * gateway keeps it in failure record `failure_id`), "rejected" (not published, fix the request:
 * `code`), "unknown" (gave up at the deadline: retry later WITH THE SAME KEY).
 */
export async function publish(baseUrl, topic, key, event, {
  token = "", attemptTimeoutMs = 15_000, deadlineMs = 60_000, log = (line) => console.error(line),
} = {}) {
  const url = `${baseUrl.replace(/\/+$/, "")}/v1/topics/${encodeURIComponent(topic)}/events`;
  const auth = token ? { Authorization: `Bearer ${token}` } : {};
  // Rule: one key per event, the same on every attempt. The gateway deduplicates by key, so a
  // retry can never publish the event twice; a new key per attempt would.
  const postHeaders = { ...auth, "Idempotency-Key": key, "Content-Type": "application/json" };
  const end = Date.now() + deadlineMs;
  let attempts = 0, polls = 0, noAnswers = 0;
  let statusUrl = null; // set by a 202: poll it instead of posting again
  let reason = "deadline reached before any answer";
  const result = (outcome, fields) => ({ outcome, ...fields, attempts, polls });

  for (;;) {
    const left = end - Date.now();
    if (left <= 0) {
      // Rule: at the deadline the outcome is unknown, not failed: the event may be in Kafka.
      // The caller retries later with the same key (the gateway replays or publishes).
      return result("unknown", { reason });
    }
    const timeout = Math.min(attemptTimeoutMs, left);
    let what, answer;
    if (statusUrl === null) {
      attempts += 1;
      what = `key=${key} attempt ${attempts}: POST`;
      answer = await request("POST", url, postHeaders, event, timeout);
    } else {
      polls += 1;
      what = `key=${key} poll ${polls}: GET ${statusUrl}`;
      answer = await request("GET", statusUrl, auth, undefined, timeout);
    }

    if (answer.error) {
      // Rule: a lost connection or a timeout means "unknown", never "failed": the gateway may
      // have published and answered into the void. Retry with the same key: it replays that
      // answer (or says 409 while the first attempt is still being delivered).
      noAnswers += 1;
      reason = `no answer: ${answer.error}`;
      const wait = backoff(noAnswers);
      log(`${what} -> ${reason}; retrying with the same key in ${(wait / 1000).toFixed(2)} s`);
      await sleep(wait, end);
      continue;
    }
    const { status, headers, doc } = answer;
    const code = doc.code ?? "";
    const got = `${what} -> ${status} ${code || doc.state || doc.status || ""}`.trimEnd();

    if (status === 201) {
      // Persisted: Kafka acknowledged (partition/offset in the body). A replay of an earlier
      // attempt's answer says Idempotent-Replayed: true.
      const replayed = headers.get("idempotent-replayed")?.toLowerCase() === "true";
      log(got + (replayed ? " (replayed)" : ""));
      return result("persisted", { status: 201, replayed, answer: doc });
    }
    if (status === 202 && statusUrl === null) {
      // Rule: 202 = Kafka has not answered yet but the delivery goes on. Poll Location until it
      // settles, rather than treating it as success or failure.
      statusUrl = new URL(headers.get("location") ?? doc.links.status, url).href;
      log(`${got}; polling its Location`);
      await sleep(POLL_INTERVAL_MS, end);
      continue;
    }
    if (status === 200 && statusUrl !== null) {
      const settled = doc.answer ?? {};
      log(got);
      if (doc.state === "persisted") {
        return result("persisted", { status: doc.answer_status ?? 201, replayed: false, answer: settled });
      }
      if (doc.state === "failed") {
        // May be in Kafka and the key is pinned: stop and surface the failure id.
        return result("failed", {
          status: doc.answer_status, code: settled.code, failure_id: settled.failure_id,
          failure: settled.links?.failure,
        });
      }
      if (doc.state === "not_persisted") {
        // Rule: certainly not written: send it again, with the same key.
        statusUrl = null;
        continue;
      }
      await sleep(POLL_INTERVAL_MS, end); // in_flight
      continue;
    }
    if (status === 404 && statusUrl !== null) {
      // The status record is gone (expired): sending again with the same key is safe.
      log(`${got}; sending again with the same key`);
      statusUrl = null;
      continue;
    }

    if (doc.persistence === "possibly_persisted") {
      // Rule: 504/503 with persistence "possibly_persisted" = Kafka may have written it. The key
      // is pinned to this answer: a retry only replays it. Stop and surface the failure id
      // (GET /v1/failures/{id} shows the record); an operator resolves it.
      log(`${got} possibly_persisted; stopping: failure ${doc.failure_id}`);
      return result("failed", {
        status, code, failure_id: doc.failure_id, failure: doc.links?.failure,
      });
    }
    const retryAfter = retryAfterMs(headers);
    if (retryAfter !== null) {
      // Rule: 409 (in progress), 429 (rate limit), 503 (overloaded, store or Kafka down, not
      // persisted) come with Retry-After: nothing was published by this attempt, and waiting
      // then retrying with the same key can succeed.
      reason = `${status} ${code}`;
      const wait = Math.min(retryAfter, MAX_RETRY_AFTER_MS);
      log(`${got}; waiting ${(wait / 1000).toFixed(1)} s (Retry-After), then the same key again`);
      await sleep(wait, end);
      continue;
    }
    if ([408, 500, 502, 503, 504].includes(status)) {
      // 408: the body was not stored, safe to send again. 500 and a 5xx from something in
      // between: the outcome is unknown; retrying with the same key is safe (the gateway answers
      // 409 while it still decides, then the real answer).
      noAnswers += 1;
      reason = `${status} ${code}`.trimEnd();
      const wait = backoff(noAnswers);
      log(`${got}; outcome unknown, the same key again in ${(wait / 1000).toFixed(2)} s`);
      await sleep(wait, end);
      continue;
    }
    // Rule: never retry 400/401/403/404/413/422 as they are: the request itself is wrong (or the
    // key was used for another event, 422). Retrying cannot help; fix the request.
    log(`${got}; not retried`);
    return result("rejected", { status, code, detail: doc.detail });
  }
}

/** {status, headers, doc} or {error} when no answer came (timeout, reset, refused). */
async function request(method, url, headers, body, timeoutMs) {
  try {
    // The signal bounds the whole attempt: connecting, waiting, and reading the body.
    const resp = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) });
    const text = await resp.text();
    let doc = {};
    try { doc = text ? JSON.parse(text) : {}; } catch { doc = {}; }
    if (doc === null || typeof doc !== "object") doc = {};
    return { status: resp.status, headers: resp.headers, doc };
  } catch (e) {
    return { error: `${e.name}: ${e.cause?.message ?? e.message}` };
  }
}

/** Retry-After in ms; null when absent (an HTTP-date is treated as absent here). */
function retryAfterMs(headers) {
  const value = headers.get("retry-after");
  if (value === null || !/^\s*\d+(\.\d+)?\s*$/.test(value)) return null;
  return Number(value) * 1000;
}

/** Exponential backoff with jitter, for retries the gateway gave no Retry-After for. */
function backoff(n) {
  return Math.min(5000, 100 * 2 ** (n - 1)) * (0.5 + Math.random() / 2);
}

function sleep(ms, end) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(ms, end - Date.now()))));
}

async function main(argv) {
  if (argv.length !== 4) {
    console.error("usage: node publish.mjs <base-url> <topic> <idempotency-key> <json-body>");
    return 1;
  }
  const [baseUrl, topic, key, body] = argv;
  const outcome = await publish(baseUrl, topic, key, body, {
    token: process.env.ACKGATE_KEY ?? "",
    attemptTimeoutMs: Number(process.env.ACKGATE_TIMEOUT_MS ?? 15000),
    deadlineMs: Number(process.env.ACKGATE_DEADLINE_MS ?? 60000),
  });
  process.stdout.write(JSON.stringify(outcome) + "\n");
  return { persisted: 0, failed: 2, rejected: 3, unknown: 4 }[outcome.outcome];
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
