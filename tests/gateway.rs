//! The core contract against a real Kafka-protocol broker and a real Redis: what a response
//! claims is checked against what is actually in Kafka.

mod common;

use std::collections::HashSet;

use ackgate::Backend;
use ackgate::settings::Settings;
use common::*;

const PARTITIONS: i32 = 3;

async fn topic() -> String {
    let name = unique("gw");
    create_topic(&kafka_brokers(), &name, PARTITIONS).await;
    name
}

/// Every record of the topic, read to the end of every partition: the counts below are also
/// checks that nothing *else* was published.
fn records(topic: &str) -> Vec<Record> {
    consume_to_end(&kafka_brokers(), topic, PARTITIONS)
}

#[tokio::test]
async fn a_persisted_event_is_in_kafka_exactly_where_the_response_says() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic().await;
    let body = r#"{"order": 1001, "total": 42.5}"#;

    let reply = app
        .post_event_with(
            &topic,
            "order-1001",
            body,
            &[
                ("Kafka-Key", "customer-42"),
                ("Kafka-Header-Trace-Id", "abc-123"),
                ("Kafka-Header-Source", "checkout"),
            ],
        )
        .await;

    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("idempotent-replayed"), None);
    let json = reply.json();
    assert_eq!(json["status"], "persisted");
    assert_eq!(json["topic"], topic.as_str());
    assert_eq!(json["idempotency_key"], "order-1001");
    assert!(json["timestamp"].as_str().unwrap().ends_with('Z'));

    let in_kafka = records(&topic);
    assert_eq!(in_kafka.len(), 1, "exactly one record: {in_kafka:?}");
    let record = &in_kafka[0];
    assert_eq!(
        i64::from(record.partition),
        json["partition"].as_i64().unwrap()
    );
    assert_eq!(record.offset, json["offset"].as_i64().unwrap());
    assert_eq!(record.key.as_deref(), Some(&b"customer-42"[..]));
    assert_eq!(
        record.value,
        body.as_bytes(),
        "the value is forwarded byte for byte"
    );
    assert_eq!(record.header("trace-id"), Some(&b"abc-123"[..]));
    assert_eq!(record.header("source"), Some(&b"checkout"[..]));
    assert_eq!(
        record.header("content-type"),
        Some(&b"application/json"[..])
    );
    assert_eq!(record.header("idempotency-key"), Some(&b"order-1001"[..]));
}

#[tokio::test]
async fn a_repeated_request_replays_the_answer_and_publishes_nothing() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic().await;

    let first = app.post_event(&topic, "k-1", r#"{"n":1}"#).await;
    let second = app.post_event(&topic, "k-1", r#"{"n":1}"#).await;
    // The structured-field form of the same key is the same key.
    let quoted = app.post_event(&topic, "\"k-1\"", r#"{"n":1}"#).await;

    assert_eq!(first.status, 201, "{}", first.body);
    for replay in [&second, &quoted] {
        assert_eq!(replay.status, first.status);
        assert_eq!(
            replay.body, first.body,
            "a replay is byte-for-byte the first answer"
        );
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    }
    assert_eq!(records(&topic).len(), 1, "the replays added no record");
}

#[tokio::test]
async fn the_same_key_with_a_different_event_is_refused() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic().await;

    let first = app.post_event(&topic, "k-reused", r#"{"n":1}"#).await;
    let other_body = app.post_event(&topic, "k-reused", r#"{"n":2}"#).await;
    let other_key = app
        .post_event_with(&topic, "k-reused", r#"{"n":1}"#, &[("Kafka-Key", "x")])
        .await;
    let other_header = app
        .post_event_with(&topic, "k-reused", r#"{"n":1}"#, &[("Kafka-Header-A", "b")])
        .await;

    assert_eq!(first.status, 201);
    for reply in [&other_body, &other_key, &other_header] {
        reply.assert_problem(422, "idempotency-key-reused");
    }
    assert_eq!(records(&topic).len(), 1);
}

#[tokio::test]
async fn invalid_requests_get_400_and_leave_nothing_behind() {
    let settings = test_settings();
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let topic = topic().await;

    let missing_key = app.post_event_raw(&topic, &[], "{}").await;
    missing_key.assert_problem(400, "missing-idempotency-key");

    for bad_key in ["has space", &"x".repeat(256), "\"\""] {
        let reply = app.post_event(&topic, bad_key, "{}").await;
        reply.assert_problem(400, "invalid-idempotency-key");
    }

    let invalid_topic = app.post_event("bad$topic", "k", "{}").await;
    invalid_topic.assert_problem(400, "invalid-topic");
    let long_topic = app.post_event(&"t".repeat(250), "k", "{}").await;
    long_topic.assert_problem(400, "invalid-topic");

    let bad_json = app.post_event(&topic, "k-json", "{not json").await;
    bad_json.assert_problem(400, "invalid-json");
    let deep_json = app.post_event(&topic, "k-deep", "[".repeat(10_000)).await;
    deep_json.assert_problem(400, "invalid-json");

    let reserved = app
        .post_event_with(
            &topic,
            "k-reserved",
            "{}",
            &[("Kafka-Header-Idempotency-Key", "other")],
        )
        .await;
    reserved.assert_problem(400, "invalid-header");
    // The gateway's own dead-letter headers cannot be forged on the original record.
    let forged = app
        .post_event_with(
            &topic,
            "k-forged-dlt",
            "{}",
            &[("Kafka-Header-DLT-Failure-Id", "01FORGED")],
        )
        .await;
    forged.assert_problem(400, "invalid-header");
    let detail = forged.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("'dlt-' is reserved"), "{detail}");

    let two_keys = app
        .post_event_raw(
            &topic,
            &[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
            "{}",
        )
        .await;
    two_keys.assert_problem(400, "invalid-header");

    // Not JSON, and not declared as JSON: forwarded as it is.
    let text = app
        .post_event_with(
            &topic,
            "k-text",
            "{not json",
            &[("Content-Type", "text/plain")],
        )
        .await;
    assert_eq!(text.status, 201, "{}", text.body);

    let in_kafka = records(&topic);
    assert_eq!(in_kafka.len(), 1, "only the valid text event: {in_kafka:?}");
    let keys = redis_keys(&redis_url(), &format!("{prefix}:i:*")).await;
    assert_eq!(
        keys.len(),
        1,
        "only the valid event claimed a key: {keys:?}"
    );
}

#[tokio::test]
async fn an_unknown_topic_is_a_prompt_404_before_any_key_is_claimed() {
    let settings = test_settings();
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let missing = unique("missing");

    let started = std::time::Instant::now();
    let reply = app.post_event(&missing, "k", "{}").await;

    reply.assert_problem(404, "topic-not-found");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the 404 does not wait for the delivery timeout"
    );
    let keys = redis_keys(&redis_url(), &format!("{prefix}:*")).await;
    assert!(keys.is_empty(), "no key claimed: {keys:?}");
    // And the gateway did not create the topic.
    let again = app.post_event(&missing, "k", "{}").await;
    again.assert_problem(404, "topic-not-found");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_at_the_limit_are_published() {
    let settings = ackgate::settings::Settings {
        max_body_bytes: 1024,
        ..test_settings()
    };
    let app = TestApp::spawn_default(settings).await;
    let topic = topic().await;
    let at_limit = "a".repeat(1024);
    let over_limit = "a".repeat(1025);
    let text = |key: &str, body: &str| {
        app.post_event_with(&topic, key, body, &[("Content-Type", "text/plain")])
    };

    let over = text("k-over", &over_limit).await;
    over.assert_problem(413, "payload-too-large");
    // A client that writes its whole (large) body before reading gets the 413, not a reset.
    for i in 0..5 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let body = vec![b'a'; 4 * 1024 * 1024];
        let head = format!(
            "POST /v1/topics/{topic}/events HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-huge-{i}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&body)
            .await
            .expect("the gateway reads the body it refuses instead of resetting");
        let mut response = vec![0; 12];
        conn.read_exact(&mut response).await.unwrap();
        assert_eq!(&response, b"HTTP/1.1 413");
    }
    // Without Content-Length (chunked), the limit still holds while reading.
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(over_limit.clone())]);
    let chunked = app
        .post_event_raw(
            &topic,
            &[("Idempotency-Key", "k-chunked")],
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    chunked.assert_problem(413, "payload-too-large");

    let at = text("k-at", &at_limit).await;
    assert_eq!(at.status, 201, "{}", at.body);
    let in_kafka = records(&topic);
    assert_eq!(in_kafka.len(), 1);
    assert_eq!(in_kafka[0].value.len(), 1024);
}

#[tokio::test]
async fn with_redis_down_nothing_is_published_and_service_resumes_when_it_is_back() {
    let mut redis = OwnRedis::start();
    let app = TestApp::spawn(
        test_settings(),
        &kafka_brokers(),
        Backend::redis(redis.url()),
    )
    .await;
    let topic = topic().await;
    let ready = app.readyz().await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    redis.kill();
    let reply = app.post_event(&topic, "k-down", r#"{"n":1}"#).await;
    reply.assert_problem(503, "idempotency-store-unavailable");
    assert!(
        reply.header("retry-after").is_some(),
        "503 says when to retry"
    );
    let not_ready = app.readyz().await;
    assert_eq!(not_ready.status, 503);
    assert_eq!(not_ready.json()["checks"]["redis"]["status"], "error");
    assert_eq!(records(&topic).len(), 0, "fail closed: nothing published");

    redis.restart();
    let mut status = 0;
    for _ in 0..50 {
        let retry = app.post_event(&topic, "k-down", r#"{"n":1}"#).await;
        status = retry.status;
        if status == 201 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(status, 201, "the gateway reconnects to Redis by itself");
    assert_eq!(records(&topic).len(), 1);
}

#[tokio::test]
async fn two_gateways_sharing_redis_publish_50_concurrent_duplicates_once() {
    // One Redis key prefix, as replicas share it; a spool each, as replicas must.
    let settings = test_settings();
    let a = TestApp::spawn_default(settings.clone()).await;
    let b = TestApp::spawn_default(Settings {
        failure_spool_path: test_settings().failure_spool_path,
        ..settings
    })
    .await;
    let topic = topic().await;

    let mut requests = Vec::new();
    for i in 0..50 {
        let app = if i % 2 == 0 { &a } else { &b };
        requests.push(app.post_event(&topic, "shared-key", r#"{"same":"event"}"#));
    }
    let replies = futures::future::join_all(requests).await;

    let mut created_bodies = HashSet::new();
    for reply in &replies {
        match reply.status {
            201 => {
                created_bodies.insert(reply.body.clone());
            }
            409 => {
                reply.assert_problem(409, "request-in-progress");
                assert!(reply.header("retry-after").is_some());
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!(created_bodies.len(), 1, "every 201 carries the same answer");
    let in_kafka = records(&topic);
    assert_eq!(
        in_kafka.len(),
        1,
        "exactly one record in Kafka: {in_kafka:?}"
    );
    let fresh = replies
        .iter()
        .filter(|r| r.status == 201 && r.header("idempotent-replayed").is_none());
    assert_eq!(fresh.count(), 1, "exactly one request published");
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_routes() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic().await;
    let _ = app.post_event(&topic, "k-metrics", "{}").await;

    let health = app.healthz().await;
    assert_eq!(health.status, 200);
    let ready = app.readyz().await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["status"], "ready");

    let metrics = app.metrics().await;
    assert_eq!(metrics.status, 200);
    for name in [
        "ackgate_http_requests_total",
        "ackgate_http_request_duration_seconds_bucket",
        "ackgate_produce_duration_seconds_bucket",
        "ackgate_dedupe_outcomes_total",
        "ackgate_http_requests_in_flight",
    ] {
        assert!(metrics.body.contains(name), "{name} missing from /metrics");
    }
    assert!(
        metrics
            .body
            .contains(r#"route="/v1/topics/{topic}/events""#),
        "labels use the route template, not the raw path"
    );

    let unknown = app.get("/nope").await;
    unknown.assert_problem(404, "not-found");
    let wrong_method = app.get(&format!("/v1/topics/{topic}/events")).await;
    wrong_method.assert_problem(405, "method-not-allowed");
    let no_failure = app.get_failure("01JD3Q4ZJ8M3S6Y5F3N2W1V0TA").await;
    no_failure.assert_problem(404, "failure-not-found");
}

#[tokio::test]
async fn a_body_exactly_at_the_default_limit_is_published() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic().await;
    let body = vec![b'z'; ackgate::settings::DEFAULT_MAX_BODY_BYTES];

    let reply = app
        .post_event_with(
            &topic,
            "k-1mib",
            &body,
            &[("Content-Type", "application/octet-stream")],
        )
        .await;

    assert_eq!(reply.status, 201, "{}", reply.body);
    let in_kafka = records(&topic);
    assert_eq!(in_kafka.len(), 1);
    assert_eq!(in_kafka[0].value, body, "1 MiB, byte for byte");
}

/// The checks above that nothing was published stand on `consume_to_end`: it must refuse a read
/// that never got to the end, where a reader that stops at its deadline returns nothing and the
/// check would pass.
#[tokio::test]
async fn a_read_that_did_not_reach_the_end_fails_the_absence_check() {
    let topic = topic().await;
    let wrong_partitions = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            consume_to_end(&kafka_brokers(), &topic, PARTITIONS - 1)
        })
    };
    let message = panic_message(wrong_partitions.await);
    assert!(
        message.contains("has 3 partitions, the test reads 2"),
        "{message}"
    );

    // A broker that takes the connection and never answers: nothing is read, no error is
    // reported within the deadline, and that is not an empty topic.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_at = stuck.local_addr().unwrap().to_string();
    let unread = tokio::task::spawn_blocking(move || {
        consume_to_end_within(
            &stuck_at,
            &topic,
            PARTITIONS,
            std::time::Duration::from_secs(3),
        )
    });
    let message = panic_message(unread.await);
    drop(stuck);
    assert!(
        message.contains("did not reach the end of partition(s) [0, 1, 2]"),
        "{message}"
    );
}

fn panic_message(joined: Result<Vec<Record>, tokio::task::JoinError>) -> String {
    match joined {
        Ok(records) => panic!("the read passed: {records:?}"),
        Err(error) => {
            let payload = error.into_panic();
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        }
    }
}
