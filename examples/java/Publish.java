// Publish one event to ackgate with the retry loop its contract needs (JDK 17, java.net.http
// only, no dependencies).
//
// Copy `publish()` into your code. It keeps ackgate's exactly-once promise on the client side:
// the same Idempotency-Key on every attempt, waits where the gateway says to wait, stops where a
// retry cannot help. The rules are in the comments, each with its reason; examples/README.md has
// them as a table.
//
//   java Publish.java <base-url> <topic> <idempotency-key> <json-body>
//
// Environment: ACKGATE_KEY (bearer token), ACKGATE_TIMEOUT_MS (per attempt, default 15000),
// ACKGATE_DEADLINE_MS (overall, default 60000). Prints one JSON line describing the outcome; exit
// status 0 persisted, 2 failed (possibly persisted), 3 rejected, 4 unknown (gave up), 1 usage.
//
// The JDK has no JSON parser: the few fields read here are picked out by the small helpers at
// the end, which are enough for the gateway's flat answers. A real application uses its JSON
// library (Jackson, Gson, ...) instead.

import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class Publish {
    /** A Retry-After longer than this is not waited for in full: the overall deadline decides. */
    static final long MAX_RETRY_AFTER_MS = 20_000;
    /** How often a 202's Location is polled. */
    static final long POLL_INTERVAL_MS = 500;

    /**
     * The outcome: "persisted" (in Kafka: {@code answer} is the 201 body), "failed" (may be in
     * Kafka, the gateway keeps it in failure record {@code failureId}), "rejected" (not
     * published, fix the request: {@code code}), "unknown" (gave up at the deadline: retry later
     * WITH THE SAME KEY).
     */
    public record Outcome(String outcome, int status, boolean replayed, String answer, String code,
            String failureId, String failure, String detail, int attempts, int polls) {
        String toJson() {
            StringBuilder b = new StringBuilder("{\"outcome\":").append(q(outcome));
            if (status != 0) b.append(",\"status\":").append(status);
            if (outcome.equals("persisted")) b.append(",\"replayed\":").append(replayed).append(",\"answer\":").append(answer);
            if (code != null) b.append(",\"code\":").append(q(code));
            if (failureId != null) b.append(",\"failure_id\":").append(q(failureId));
            if (failure != null) b.append(",\"failure\":").append(q(failure));
            if (detail != null) b.append(outcome.equals("unknown") ? ",\"reason\":" : ",\"detail\":").append(q(detail));
            return b.append(",\"attempts\":").append(attempts).append(",\"polls\":").append(polls).append('}').toString();
        }
    }

    private final HttpClient http;
    private final String baseUrl;
    private final String token;
    private final Duration attemptTimeout;
    private final Duration deadline;

    public Publish(String baseUrl, String token, Duration attemptTimeout, Duration deadline) {
        // HTTP/1.1: a plain-HTTP gateway would otherwise be asked to upgrade to h2c.
        this.http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(attemptTimeout).build();
        this.baseUrl = baseUrl.replaceAll("/+$", "");
        this.token = token;
        this.attemptTimeout = attemptTimeout;
        this.deadline = deadline;
    }

    /** Publishes {@code event} (JSON) under {@code key}. */
    public Outcome publish(String topic, String key, String event) throws InterruptedException {
        URI url = URI.create(baseUrl + "/v1/topics/" + URLEncoder.encode(topic, StandardCharsets.UTF_8) + "/events");
        long end = System.nanoTime() + deadline.toNanos();
        int attempts = 0, polls = 0, noAnswers = 0;
        URI statusUrl = null; // set by a 202: poll it instead of posting again
        String reason = "deadline reached before any answer";

        while (true) {
            long left = (end - System.nanoTime()) / 1_000_000;
            if (left <= 0) {
                // Rule: at the deadline the outcome is unknown, not failed: the event may be in
                // Kafka. The caller retries later with the same key (the gateway replays or publishes).
                return new Outcome("unknown", 0, false, null, null, null, null, reason, attempts, polls);
            }
            Duration timeout = Duration.ofMillis(Math.min(attemptTimeout.toMillis(), left));
            String what;
            HttpRequest.Builder req;
            if (statusUrl == null) {
                attempts++;
                what = "key=" + key + " attempt " + attempts + ": POST";
                // Rule: one key per event, the same on every attempt. The gateway deduplicates by
                // key, so a retry can never publish the event twice; a new key per attempt would.
                req = HttpRequest.newBuilder(url).POST(HttpRequest.BodyPublishers.ofString(event))
                        .header("Idempotency-Key", key).header("Content-Type", "application/json");
            } else {
                polls++;
                what = "key=" + key + " poll " + polls + ": GET " + statusUrl;
                req = HttpRequest.newBuilder(statusUrl).GET();
            }
            if (!token.isEmpty()) req.header("Authorization", "Bearer " + token);

            HttpResponse<String> resp;
            try {
                resp = http.send(req.timeout(timeout).build(), HttpResponse.BodyHandlers.ofString());
            } catch (IOException e) {
                // Rule: a lost connection or a timeout means "unknown", never "failed": the
                // gateway may have published and answered into the void. Retry with the same
                // key: it replays that answer (or says 409 while the first attempt is still
                // being delivered).
                noAnswers++;
                reason = "no answer: " + e.getClass().getSimpleName() + ": " + e.getMessage();
                long wait = backoffMs(noAnswers);
                log(what + " -> " + reason + "; retrying with the same key in " + wait + " ms");
                sleep(wait, end);
                continue;
            }
            int status = resp.statusCode();
            String doc = resp.body();
            String code = stringField(doc, "code");
            String state = stringField(doc, "state");
            String got = (what + " -> " + status + " " + (code != null ? code : state != null ? state
                    : stringField(doc, "status") != null ? stringField(doc, "status") : "")).strip();

            if (status == 201) {
                // Persisted: Kafka acknowledged (partition/offset in the body). A replay of an
                // earlier attempt's answer says Idempotent-Replayed: true.
                boolean replayed = resp.headers().firstValue("Idempotent-Replayed").orElse("").equalsIgnoreCase("true");
                log(got + (replayed ? " (replayed)" : ""));
                return new Outcome("persisted", 201, replayed, doc.strip(), null, null, null, null, attempts, polls);
            }
            if (status == 202 && statusUrl == null) {
                // Rule: 202 = Kafka has not answered yet but the delivery goes on. Poll Location
                // until it settles, rather than treating it as success or failure.
                statusUrl = url.resolve(resp.headers().firstValue("Location").orElseThrow());
                log(got + "; polling its Location");
                sleep(POLL_INTERVAL_MS, end);
                continue;
            }
            if (status == 200 && statusUrl != null) {
                String answer = objectField(doc, "answer");
                log(got);
                if ("persisted".equals(state)) {
                    return new Outcome("persisted", 201, false, answer, null, null, null, null, attempts, polls);
                }
                if ("failed".equals(state)) {
                    // May be in Kafka and the key is pinned: stop and surface the failure id.
                    return new Outcome("failed", numberField(doc, "answer_status"), false, null,
                            stringField(answer, "code"), stringField(answer, "failure_id"),
                            stringField(answer, "failure"), null, attempts, polls);
                }
                if ("not_persisted".equals(state)) {
                    // Rule: certainly not written: send it again, with the same key.
                    statusUrl = null;
                    continue;
                }
                sleep(POLL_INTERVAL_MS, end); // in_flight
                continue;
            }
            if (status == 404 && statusUrl != null) {
                // The status record is gone (expired): sending again with the same key is safe.
                log(got + "; sending again with the same key");
                statusUrl = null;
                continue;
            }

            if ("possibly_persisted".equals(stringField(doc, "persistence"))) {
                // Rule: 504/503 with persistence "possibly_persisted" = Kafka may have written it.
                // The key is pinned to this answer: a retry only replays it. Stop and surface the
                // failure id (GET /v1/failures/{id} shows the record); an operator resolves it.
                String failureId = stringField(doc, "failure_id");
                log(got + " possibly_persisted; stopping: failure " + failureId);
                return new Outcome("failed", status, false, null, code, failureId,
                        stringField(doc, "failure"), null, attempts, polls);
            }
            Long retryAfter = retryAfterMs(resp);
            if (retryAfter != null) {
                // Rule: 409 (in progress), 429 (rate limit), 503 (overloaded, store or Kafka down,
                // not persisted) come with Retry-After: nothing was published by this attempt,
                // and waiting then retrying with the same key can succeed.
                reason = status + " " + code;
                long wait = Math.min(retryAfter, MAX_RETRY_AFTER_MS);
                log(got + "; waiting " + wait + " ms (Retry-After), then the same key again");
                sleep(wait, end);
                continue;
            }
            if (List.of(408, 500, 502, 503, 504).contains(status)) {
                // 408: the body was not stored, safe to send again. 500 and a 5xx from something
                // in between: the outcome is unknown; retrying with the same key is safe (the
                // gateway answers 409 while it still decides, then the real answer).
                noAnswers++;
                reason = (status + " " + (code == null ? "" : code)).strip();
                long wait = backoffMs(noAnswers);
                log(got + "; outcome unknown, the same key again in " + wait + " ms");
                sleep(wait, end);
                continue;
            }
            // Rule: never retry 400/401/403/404/413/422 as they are: the request itself is wrong
            // (or the key was used for another event, 422). Retrying cannot help; fix the request.
            log(got + "; not retried");
            return new Outcome("rejected", status, false, null, code == null ? "" : code, null, null,
                    stringField(doc, "detail"), attempts, polls);
        }
    }

    /** Retry-After in ms; null when absent (an HTTP-date is treated as absent here). */
    static Long retryAfterMs(HttpResponse<?> resp) {
        return resp.headers().firstValue("Retry-After").filter(v -> v.strip().matches("\\d+"))
                .map(v -> Long.parseLong(v.strip()) * 1000).orElse(null);
    }

    /** Exponential backoff with jitter, for retries the gateway gave no Retry-After for. */
    static long backoffMs(int n) {
        return (long) (Math.min(5000, 100L << Math.min(n - 1, 10)) * ThreadLocalRandom.current().nextDouble(0.5, 1.0));
    }

    static void sleep(long ms, long endNanos) throws InterruptedException {
        Thread.sleep(Math.max(0, Math.min(ms, (endNanos - System.nanoTime()) / 1_000_000)));
    }

    static void log(String line) {
        System.err.println(line);
    }

    // --- Minimal JSON reading (use your JSON library instead) ---------------------------------

    /** The first string value named {@code name}, unescaped for the common escapes; or null. */
    static String stringField(String json, String name) {
        if (json == null) return null;
        Matcher m = Pattern.compile("\"" + Pattern.quote(name) + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").matcher(json);
        return m.find() ? m.group(1).replace("\\\"", "\"").replace("\\/", "/").replace("\\\\", "\\") : null;
    }

    /** The first integer value named {@code name}; 0 when absent. */
    static int numberField(String json, String name) {
        Matcher m = Pattern.compile("\"" + Pattern.quote(name) + "\"\\s*:\\s*(\\d+)").matcher(json);
        return m.find() ? Integer.parseInt(m.group(1)) : 0;
    }

    /** The raw text of the first object value named {@code name}; "{}" when absent. */
    static String objectField(String json, String name) {
        Matcher m = Pattern.compile("\"" + Pattern.quote(name) + "\"\\s*:\\s*\\{").matcher(json);
        if (!m.find()) return "{}";
        int start = m.end() - 1, depth = 0;
        boolean inString = false;
        for (int i = start; i < json.length(); i++) {
            char c = json.charAt(i);
            if (inString) {
                if (c == '\\') i++;
                else if (c == '"') inString = false;
            } else if (c == '"') inString = true;
            else if (c == '{') depth++;
            else if (c == '}' && --depth == 0) return json.substring(start, i + 1);
        }
        return "{}";
    }

    static String q(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 4) {
            System.err.println("usage: java Publish.java <base-url> <topic> <idempotency-key> <json-body>");
            System.exit(1);
        }
        String env = System.getenv("ACKGATE_KEY");
        Publish client = new Publish(args[0], env == null ? "" : env,
                Duration.ofMillis(Long.parseLong(System.getenv().getOrDefault("ACKGATE_TIMEOUT_MS", "15000"))),
                Duration.ofMillis(Long.parseLong(System.getenv().getOrDefault("ACKGATE_DEADLINE_MS", "60000"))));
        Outcome outcome = client.publish(args[1], args[2], args[3]);
        System.out.println(outcome.toJson());
        System.exit(switch (outcome.outcome()) {
            case "persisted" -> 0;
            case "failed" -> 2;
            case "rejected" -> 3;
            default -> 4;
        });
    }
}
