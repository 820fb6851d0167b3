// Drives a running gateway with the Java client OpenAPI Generator's `java` generator (library
// `native`: java.net.http and Jackson) made from openapi/openapi.json (target/clients/java/):
// publish, replay, status, the 422 of a reused key, and a batch, read through the generated models.
// Same environment as drive.py: ACKGATE_URL, ACKGATE_KEY (a bearer secret that may publish to
// ACKGATE_TOPIC, default `events`).
//
// Compiled with javac -Xlint:all -Werror against the generated classes and run by
// scripts/generated-clients.sh; one line per check, exit status 1 on the first difference.

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.ackgate.client.ApiClient;
import dev.ackgate.client.ApiException;
import dev.ackgate.client.ApiResponse;
import dev.ackgate.client.api.EventsApi;
import dev.ackgate.client.model.Accepted;
import dev.ackgate.client.model.BatchEvent;
import dev.ackgate.client.model.BatchRequest;
import dev.ackgate.client.model.BatchResponse;
import dev.ackgate.client.model.BatchResult;
import dev.ackgate.client.model.EventStatus;
import dev.ackgate.client.model.FinalAnswer;
import dev.ackgate.client.model.Persisted;
import dev.ackgate.client.model.Problem;
import dev.ackgate.client.model.PublishAnswer;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.UUID;

public final class Drive {
    private Drive() {}

    private static void fail(String message) {
        System.out.println("FAIL " + message);
        System.out.flush();
        System.exit(1);
    }

    private static void ok(String message) {
        System.out.println("ok   " + message);
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        if (value != null && !value.isEmpty()) {
            return value;
        }
        if (fallback == null) {
            fail(name + " is not set");
        }
        return fallback;
    }

    /** The values of one response header; the name is matched without regard to case. */
    private static List<String> header(Map<String, List<String>> headers, String name) {
        for (Map.Entry<String, List<String>> entry : headers.entrySet()) {
            if (entry.getKey() != null && entry.getKey().equalsIgnoreCase(name)) {
                return entry.getValue();
            }
        }
        return List.of();
    }

    /** The instance a oneOf wrapper holds, as the expected generated model, or a failed check. */
    private static <T> T expect(Object instance, Class<T> type, String what) {
        if (!type.isInstance(instance)) {
            fail(what + ": expected " + type.getSimpleName() + ", got " + instance);
        }
        return type.cast(instance);
    }

    public static void main(String[] args) throws Exception {
        try {
            drive();
        } catch (ApiException error) {
            // An answer the checks did not expect (e.g. a 401 for a wrong key): the generated
            // client throws it for any status outside 2xx.
            fail("HTTP " + error.getCode() + " " + error.getResponseBody());
        }
    }

    private static void drive() throws Exception {
        String url = env("ACKGATE_URL", null);
        String token = env("ACKGATE_KEY", null);
        String topic = env("ACKGATE_TOPIC", "events");
        String run = UUID.randomUUID().toString().substring(0, 10);

        // The native library has no authentication support of its own: the bearer secret goes in
        // through the request interceptor the generated ApiClient offers.
        ApiClient client = new ApiClient();
        client.updateBaseUri(url);
        client.setRequestInterceptor(request -> request.header("Authorization", "Bearer " + token));
        EventsApi api = new EventsApi(client);
        ObjectMapper mapper = client.getObjectMapper();
        String key = "java-" + run + "-1";

        // 1. Publish a JSON event with a record key.
        // A publish answers a PublishAnswer: a Persisted (201) or an Accepted (202).
        ApiResponse<PublishAnswer> first =
                api.publishEventWithHttpInfo(topic, key, Map.of("order", 1), "customer-42", null);
        Persisted persisted = expect(first.getData().getActualInstance(), Persisted.class, "publish");
        if (first.getStatusCode() != 201
                || persisted.getStatus() != Persisted.StatusEnum.PERSISTED
                || !key.equals(persisted.getIdempotencyKey())
                || !topic.equals(persisted.getTopic())) {
            fail("publish: HTTP " + first.getStatusCode() + " " + persisted);
        }
        if (!header(first.getHeaders(), "Idempotent-Replayed").isEmpty()) {
            fail("publish: a first publish says Idempotent-Replayed");
        }
        ok("publish 201 Persisted partition=" + persisted.getPartition() + " offset=" + persisted.getOffset());

        // 2. The same request again: the first answer, replayed.
        ApiResponse<PublishAnswer> again =
                api.publishEventWithHttpInfo(topic, key, Map.of("order", 1), "customer-42", null);
        Persisted replayed = expect(again.getData().getActualInstance(), Persisted.class, "replay");
        if (again.getStatusCode() != 201
                || !persisted.getPartition().equals(replayed.getPartition())
                || !persisted.getOffset().equals(replayed.getOffset())) {
            fail("replay: HTTP " + again.getStatusCode() + " " + replayed);
        }
        List<String> replayedHeader = header(again.getHeaders(), "Idempotent-Replayed");
        if (!replayedHeader.equals(List.of("true"))) {
            fail("replay: Idempotent-Replayed " + replayedHeader);
        }
        ok("replay 201 Persisted, same partition/offset, Idempotent-Replayed: true");

        // 3. The status resource of the key.
        EventStatus state = api.eventStatus(topic, key);
        FinalAnswer answer = state.getAnswer();
        if (!"persisted".equals(state.getState()) || answer == null) {
            fail("status: " + state);
        }
        Persisted stored = expect(answer.getActualInstance(), Persisted.class, "status answer");
        if (!persisted.getOffset().equals(stored.getOffset())
                || !persisted.getPartition().equals(stored.getPartition())) {
            fail("status: answer " + stored + ", published " + persisted);
        }
        ok("status 200 state=persisted, answer is the same Persisted");

        // 4. The same key with another body: an ApiException whose body is a Problem.
        try {
            api.publishEvent(topic, key, Map.of("order", 2), "customer-42", null);
            fail("reused key: no error");
        } catch (ApiException error) {
            String body = error.getResponseBody();
            if (error.getCode() != 422 || body == null) {
                fail("reused key: HTTP " + error.getCode() + " " + body);
            }
            List<String> type = error.getResponseHeaders().allValues("Content-Type");
            if (!type.equals(List.of("application/problem+json"))) {
                fail("reused key: Content-Type " + type);
            }
            Problem problem = mapper.readValue(body, Problem.class);
            if (!"idempotency-key-reused".equals(problem.getCode())
                    || problem.getStatus() == null
                    || problem.getStatus() != 422) {
                fail("reused key: " + problem);
            }
        }
        ok("same key, other body: 422 Problem idempotency-key-reused");

        // 5. A batch: a new JSON event with a record header, the reused key with another body,
        // raw bytes. One answer per event, in order.
        String second = "java-" + run + "-2";
        String third = "java-" + run + "-3";
        BatchRequest batch = new BatchRequest()
                .events(List.of(
                        new BatchEvent()
                                .idempotencyKey(second)
                                .key("customer-43")
                                .headers(Map.of("trace-id", "trace-" + run))
                                .value(List.of(1, "two", true)),
                        new BatchEvent().idempotencyKey(key).key("customer-42").value(Map.of("order", 1003)),
                        new BatchEvent()
                                .idempotencyKey(third)
                                .valueBase64("\u0000\u0001\u0002raw".getBytes(StandardCharsets.ISO_8859_1))
                                .contentType("application/octet-stream")));
        ApiResponse<BatchResponse> multi = api.publishBatchWithHttpInfo(topic, batch);
        if (multi.getStatusCode() != 207 || multi.getData() == null) {
            fail("batch: HTTP " + multi.getStatusCode() + " " + multi.getData());
        }
        List<BatchResult> results = multi.getData().getResults();
        List<Integer> statuses = results.stream().map(BatchResult::getStatus).toList();
        if (!statuses.equals(List.of(201, 422, 201))) {
            fail("batch: statuses " + statuses + ", expected [201, 422, 201]");
        }
        Persisted one = expect(results.get(0).getBody().getActualInstance(), Persisted.class, "batch result 1");
        Problem two = expect(results.get(1).getBody().getActualInstance(), Problem.class, "batch result 2");
        Persisted three = expect(results.get(2).getBody().getActualInstance(), Persisted.class, "batch result 3");
        if (!"idempotency-key-reused".equals(two.getCode())) {
            fail("batch result 2: " + two);
        }
        List<String> keys = results.stream().map(BatchResult::getIdempotencyKey).toList();
        if (!keys.equals(List.of(second, key, third))
                || !second.equals(one.getIdempotencyKey())
                || !third.equals(three.getIdempotencyKey())) {
            fail("batch: results out of order: " + keys);
        }
        ok("batch 207: [201 Persisted, 422 Problem idempotency-key-reused, 201 Persisted] in order");

        // 6. No token: 401, a Problem, and the Bearer challenge.
        ApiClient anonymous = new ApiClient();
        anonymous.updateBaseUri(url);
        try {
            new EventsApi(anonymous).publishEvent(topic, "java-" + run + "-anon", Map.of("order", 4), null, null);
            fail("no token: no error");
        } catch (ApiException error) {
            Problem problem = mapper.readValue(error.getResponseBody(), Problem.class);
            List<String> challenge = error.getResponseHeaders().allValues("WWW-Authenticate");
            if (error.getCode() != 401
                    || !"unauthenticated".equals(problem.getCode())
                    || challenge.isEmpty()
                    || !challenge.get(0).startsWith("Bearer")) {
                fail("no token: HTTP " + error.getCode() + " " + problem + " " + challenge);
            }
        }
        ok("no token: 401 Problem unauthenticated, WWW-Authenticate: Bearer");

        // 7. A slow Kafka: 202 Accepted with Location, then the status settles.
        String slowUrl = env("ACKGATE_SLOW_URL", "");
        if (slowUrl.isEmpty()) {
            ok("202: skipped (no ACKGATE_SLOW_URL)");
            return;
        }
        ApiClient slowClient = new ApiClient();
        slowClient.updateBaseUri(slowUrl);
        slowClient.setRequestInterceptor(request -> request.header("Authorization", "Bearer " + token));
        EventsApi slow = new EventsApi(slowClient);
        String slowKey = "java-" + run + "-slow";
        ApiResponse<PublishAnswer> pending =
                slow.publishEventWithHttpInfo(topic, slowKey, Map.of("order", 5), null, null);
        Accepted accepted = expect(pending.getData().getActualInstance(), Accepted.class, "slow publish");
        List<String> location = header(pending.getHeaders(), "Location");
        if (pending.getStatusCode() != 202 || !location.equals(List.of(accepted.getLinks().getStatus()))) {
            fail("slow publish: HTTP " + pending.getStatusCode() + " Location " + location + " " + accepted);
        }
        ok("slow publish: 202 Accepted, Location " + location.get(0));
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (true) {
            EventStatus polled = slow.eventStatus(topic, slowKey);
            if ("persisted".equals(polled.getState())) {
                Persisted settled = expect(polled.getAnswer().getActualInstance(), Persisted.class, "slow status");
                ok("slow status: in_flight, then persisted at offset " + settled.getOffset());
                break;
            }
            if (!"in_flight".equals(polled.getState()) || System.nanoTime() > deadline) {
                fail("slow status: " + polled);
            }
            Thread.sleep(200);
        }
    }
}
