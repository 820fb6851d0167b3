//! Faults injected with librdkafka's mock cluster: slow brokers, dead brokers, clients that hang
//! up, shutdown under load. Each test asserts the whole chain: HTTP answer, failure record,
//! idempotency record and what is (or is not) in the topic.

mod common;

use std::time::{Duration, Instant};

use ackgate::Backend;
use ackgate::settings::Settings;
use common::faults::idempotency_record;
use common::mock::MockKafka;
use common::*;

const TOPIC: &str = "faults";

#[tokio::test]
async fn a_retry_while_the_first_request_is_in_flight_gets_409() {
    let kafka = MockKafka::start(TOPIC);
    let app = kafka.spawn(test_settings()).await;
    kafka.warm_up(&app).await;
    kafka.set_rtt(Duration::from_millis(1500));

    let first = tokio::spawn(app.post_event(TOPIC, "k-slow", r#"{"n":1}"#));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let retry = app.post_event(TOPIC, "k-slow", r#"{"n":1}"#).await;

    retry.assert_problem(409, "request-in-progress");
    assert!(retry.header("retry-after").is_some());
    let first = first.await.unwrap();
    assert_eq!(first.status, 201, "{}", first.body);
    kafka.set_rtt(Duration::ZERO);
    let after = app.post_event(TOPIC, "k-slow", r#"{"n":1}"#).await;
    assert_eq!(after.body, first.body);
    assert_eq!(after.header("idempotent-replayed"), Some("true"));
    let in_kafka = kafka.records();
    let with_key: Vec<_> = in_kafka
        .iter()
        .filter(|r| r.header("idempotency-key") == Some(b"k-slow"))
        .collect();
    assert_eq!(with_key.len(), 1, "one record for the key: {in_kafka:?}");
}

#[tokio::test]
async fn a_client_that_hangs_up_does_not_orphan_its_key() {
    let kafka = MockKafka::start(TOPIC);
    let app = kafka.spawn(test_settings()).await;
    kafka.warm_up(&app).await;
    kafka.set_rtt(Duration::from_millis(1500));

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let request = app.event_request(TOPIC, "k-hangup", r#"{"n":1}"#);
    let gave_up = impatient.execute(request.build().unwrap()).await;
    assert!(
        gave_up.is_err(),
        "the client timed out before Kafka answered"
    );

    // The delivery goes on without the client; once it lands, the retry replays its answer.
    let mut last = None;
    for _ in 0..50 {
        let reply = app.post_event(TOPIC, "k-hangup", r#"{"n":1}"#).await;
        if reply.status != 409 {
            last = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = last.expect("the key settles");
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("idempotent-replayed"), Some("true"));
    kafka.set_rtt(Duration::ZERO);
    let with_key = kafka
        .records()
        .into_iter()
        .filter(|r| r.header("idempotency-key") == Some(b"k-hangup"))
        .count();
    assert_eq!(with_key, 1);
}

#[tokio::test]
async fn with_all_brokers_down_the_event_is_kept_and_a_retry_publishes_it_once() {
    let kafka = MockKafka::start(TOPIC);
    let settings = Settings {
        delivery_timeout_ms: 2_000,
        ..test_settings()
    };
    let app = kafka.spawn(settings).await;
    kafka.warm_up(&app).await;
    kafka.all_down();

    let reply = app
        .post_event_with(TOPIC, "k-down", r#"{"order":7}"#, &[("Kafka-Key", "c-7")])
        .await;

    assert!(matches!(reply.status, 503 | 504), "{}", reply.body);
    let problem = reply.json();
    assert_eq!(problem["persistence"], "not_persisted", "{problem}");
    assert!(reply.header("retry-after").is_some());
    let failure_id = problem["failure_id"].as_str().expect("a failure record");
    assert_eq!(
        problem["links"]["failure"],
        format!("/v1/failures/{failure_id}")
    );
    let record = app.get_failure(failure_id).await;
    assert_eq!(record.status, 200, "{}", record.body);
    let record = record.json();
    assert_eq!(record["state"], "open");
    assert_eq!(record["persistence"], "not_persisted");
    assert_eq!(record["event"]["topic"], TOPIC);
    assert_eq!(record["event"]["idempotency_key"], "k-down");
    assert_eq!(record["event"]["key"]["data"], "c-7");
    assert_eq!(record["event"]["value"]["data"], r#"{"order":7}"#);
    assert_eq!(record["error"]["code"], "MessageTimedOut");

    // Nothing was written, so the key was released: the client's retry goes through, once.
    kafka.all_up();
    let mut retry = None;
    for _ in 0..30 {
        let reply = app
            .post_event_with(TOPIC, "k-down", r#"{"order":7}"#, &[("Kafka-Key", "c-7")])
            .await;
        if reply.status == 201 {
            retry = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let retry = retry.expect("the retry succeeds once the brokers are back");
    assert_eq!(retry.header("idempotent-replayed"), None);
    let with_key = kafka
        .records()
        .into_iter()
        .filter(|r| r.header("idempotency-key") == Some(b"k-down"))
        .count();
    assert_eq!(with_key, 1);
}

#[tokio::test]
async fn an_ambiguous_timeout_pins_the_key_so_a_retry_cannot_duplicate() {
    let kafka = MockKafka::start(TOPIC);
    let settings = Settings {
        delivery_timeout_ms: 1_000,
        ..test_settings()
    };
    let prefix = settings.redis_key_prefix.clone();
    let lease = settings.lease();
    let app = kafka.spawn(settings).await;
    kafka.warm_up(&app).await;
    // The broker writes the record but answers after the delivery timeout.
    kafka.set_rtt(Duration::from_millis(2_500));

    let claimed_before = Instant::now();
    let reply = app.post_event(TOPIC, "k-ambiguous", r#"{"n":1}"#).await;

    reply.assert_problem(504, "delivery-timed-out");
    let problem = reply.json();

    assert_eq!(problem["persistence"], "possibly_persisted", "{problem}");
    assert!(problem["failure_id"].is_string());
    kafka.set_rtt(Duration::ZERO);
    let retry = app.post_event(TOPIC, "k-ambiguous", r#"{"n":1}"#).await;
    assert_eq!(retry.status, 504);
    assert_eq!(
        retry.body, reply.body,
        "the key stays pinned to its failure"
    );
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let record = idempotency_record(&redis_url(), &prefix, TOPIC, "k-ambiguous").await;
    assert_eq!(
        record.get("state").map(String::as_str),
        Some("failed"),
        "{record:?}"
    );

    // Pinned for good, not only while the first claim's lease lasts: after it, a retry
    // still replays instead of taking the key over and publishing again.
    tokio::time::sleep(lease.saturating_sub(claimed_before.elapsed()) + Duration::from_millis(500))
        .await;
    let after_lease = app.post_event(TOPIC, "k-ambiguous", r#"{"n":1}"#).await;
    assert_eq!(after_lease.status, 504, "{}", after_lease.body);
    assert_eq!(after_lease.body, reply.body);
    assert_eq!(after_lease.header("idempotent-replayed"), Some("true"));

    // The broker did write it (the mock appends a produce when it receives it): exactly once.
    let with_key = kafka.records_with_key("k-ambiguous");
    assert_eq!(with_key.len(), 1, "written once, never twice: {with_key:?}");
}

#[tokio::test]
async fn shutdown_answers_in_flight_requests_from_their_delivery_reports() {
    let kafka = MockKafka::start(TOPIC);
    let mut app = kafka.spawn(test_settings()).await;
    kafka.warm_up(&app).await;
    kafka.set_rtt(Duration::from_millis(1_000));

    let in_flight = tokio::spawn(app.post_event(TOPIC, "k-drain", r#"{"n":1}"#));
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.begin_shutdown();
    let reply = in_flight.await.unwrap();

    assert_eq!(reply.status, 201, "{}", reply.body);
    let addr = app.addr;
    app.join().await.expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    kafka.set_rtt(Duration::ZERO);
    let json = reply.json();
    let landed = kafka.records().into_iter().any(|r| {
        r.header("idempotency-key") == Some(b"k-drain")
            && i64::from(r.partition) == json["partition"].as_i64().unwrap()
            && r.offset == json["offset"].as_i64().unwrap()
    });
    assert!(landed, "the acknowledged event is where the answer says");
}

#[tokio::test]
async fn the_in_memory_backend_of_ackgate_dev_keeps_the_same_contract() {
    let kafka = MockKafka::start(TOPIC);
    let app = TestApp::spawn(test_settings(), &kafka.brokers(), Backend::Memory).await;

    let first = app.post_event(TOPIC, "k-mem", r#"{"n":1}"#).await;
    let replay = app.post_event(TOPIC, "k-mem", r#"{"n":1}"#).await;
    let reused = app.post_event(TOPIC, "k-mem", r#"{"n":2}"#).await;
    let missing = app.post_event("no-such-topic", "k-mem", "{}").await;

    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    reused.assert_problem(422, "idempotency-key-reused");
    missing.assert_problem(404, "topic-not-found");
    assert_eq!(kafka.records().len(), 1);
}
