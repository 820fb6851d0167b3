//! Hostile input, generated: property tests on everything that parses what a client sends.
//!
//! The parsers (`TopicName::parse`, `IdempotencyKey::parse`) are checked directly against a
//! model of the contract with many cases. The whole request path is checked through the real
//! application against the real broker and Redis, with requests written byte by byte on a raw
//! socket (so no client library tidies them up first), and a model that predicts every answer:
//!
//! - never a 5xx (a panic would be a 500 from the catch-panic layer), never a dropped connection;
//! - every non-2xx is `application/problem+json` with the predicted `code`;
//! - a refused request publishes nothing and leaves no key in Redis (Redis is compared with the
//!   model after every request, Kafka once at the end);
//! - what is accepted is in Kafka byte for byte, where the 201 says, and a repeated event is
//!   replayed, not published again.
//!
//! Bytes HTTP forbids in a header (control characters, `{` in a name) never reach the
//! application: hyper answers them with a bare 400 (see
//! `malformed_header_bytes_are_refused_before_the_application`).
//!
//! Run: `bash scripts/tansu.sh start 19094`, then
//! `ACKGATE_TEST_KAFKA_BROKERS=127.0.0.1:19094 cargo test --test hostile`. The HTTP property
//! runs 64 cases; `ACKGATE_HOSTILE_CASES=2000` hunts longer.
//!
//! Here are the tests; beside them: `request` (a request as it goes on the wire),
//! `strategies` (what proptest generates), `raw_http` (the raw HTTP/1.1 client), `model`
//! (what the gateway must answer) and `harness` (one case of the HTTP property).

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod model;
mod raw_http;
mod request;
mod strategies;

use std::cell::RefCell;
use std::collections::HashMap;

use ackgate::event::{IdempotencyKey, TopicName};
use ackgate::settings::Settings;
use common::*;
use harness::Harness;
use model::{ExpectedRecord, check_problem, model_key, model_topic};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use raw_http::RawReply;
use request::{Body, LIMIT};
use strategies::{raw_keys, requests, topic_names, visible_ascii};

/// Partitions of the HTTP property's topic.
pub(crate) const PARTITIONS: i32 = 3;

// ---------------------------------------------------------------------------------------------
// The parsers, directly.

proptest! {
    #![proptest_config(Config {
        cases: 4096,
        // Integration tests have no lib.rs beside them for proptest's regression files.
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn idempotency_key_parse_is_the_contract(raw in raw_keys()) {
        let parsed = IdempotencyKey::parse(&raw);
        match model_key(&raw) {
            Some(inner) => {
                let key = parsed.map_err(|why| {
                    TestCaseError::fail(format!("{raw:?} refused: {why}"))
                })?;
                prop_assert_eq!(key.as_str().as_bytes(), inner);
            }
            None => prop_assert!(parsed.is_err(), "{:?} accepted as {:?}", raw, parsed),
        }
    }

    #[test]
    fn a_quoted_key_is_the_same_key(inner in visible_ascii(1..=255)) {
        let quoted = [&b"\""[..], &inner, b"\""].concat();
        let key = IdempotencyKey::parse(&quoted).unwrap();
        prop_assert_eq!(key.as_str().as_bytes(), &inner[..]);
        // Only one layer of quotes comes off: `""k""` is the key `"k"`.
        let twice = [&b"\""[..], &quoted, b"\""].concat();
        match IdempotencyKey::parse(&twice) {
            Ok(key) => prop_assert_eq!(key.as_str().as_bytes(), &quoted[..]),
            Err(_) => prop_assert!(quoted.len() > 255),
        }
    }

    #[test]
    fn topic_name_parse_is_the_contract(name in topic_names()) {
        let parsed = TopicName::parse(&name);
        if model_topic(&name) {
            let topic = parsed.map_err(|why| {
                TestCaseError::fail(format!("{name:?} refused: {why}"))
            })?;
            prop_assert_eq!(topic.as_str(), name.as_str());
        } else {
            prop_assert!(parsed.is_err(), "{:?} accepted", name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP property: generated requests on the wire, every answer checked against the model.

#[test]
fn hostile_requests_get_problems_and_leave_no_trace_valid_ones_land_byte_for_byte() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let settings = Settings {
        max_body_bytes: LIMIT,
        ..test_settings()
    };
    let prefix = settings.redis_key_prefix.clone();
    let topic = unique("hostile");
    let app = runtime.block_on(async {
        create_topic(&kafka_brokers(), &topic, PARTITIONS).await;
        TestApp::spawn_default(settings).await
    });
    let harness = Harness {
        addr: app.addr,
        topic: topic.clone(),
        prefix,
        model: RefCell::default(),
    };

    // 64 keeps the suite fast; raise it for a longer hunt.
    let cases = std::env::var("ACKGATE_HOSTILE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&requests(topic.clone()), |(request, reuse)| {
        runtime.block_on(harness.case(request, reuse))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }

    // Kafka holds exactly what the 201s named, byte for byte: no refused request got through.
    let model = harness.model.into_inner();
    eprintln!("answers: {:?}", model.outcomes);
    // Read to the end of every partition: the count is also the check that nothing refused
    // was published.
    let in_kafka = consume_to_end(&kafka_brokers(), &topic, PARTITIONS);
    let in_kafka: HashMap<(i32, i64), ExpectedRecord> = in_kafka
        .into_iter()
        .map(|r| ((r.partition, r.offset), ExpectedRecord::from(r)))
        .collect();
    assert!(
        !model.records.is_empty(),
        "no generated request was accepted"
    );
    assert_eq!(in_kafka.len(), model.records.len(), "records in Kafka");
    for (at, expected) in &model.records {
        assert_eq!(in_kafka.get(at), Some(expected), "the record at {at:?}");
    }

    runtime.block_on(async {
        let health = app.healthz().await;
        assert_eq!(health.status, 200, "the gateway survived");
        app.stop().await.expect("a clean shutdown");
    });
}

// ---------------------------------------------------------------------------------------------
// Fixed hostile cases the generators do not reach.

/// An app with a fresh one-partition topic, and the raw client pointed at it.
struct Fixture {
    app: TestApp,
    topic: String,
}

impl Fixture {
    async fn start(topic_prefix: &str) -> Fixture {
        let app = TestApp::spawn_default(test_settings()).await;
        let topic = unique(topic_prefix);
        create_topic(&kafka_brokers(), &topic, 1).await;
        Fixture { app, topic }
    }

    fn events_path(&self) -> String {
        format!("/v1/topics/{}/events", self.topic)
    }

    /// POSTs exactly these headers and `body` to `path`, on a raw connection.
    async fn post(
        &self,
        path: &str,
        headers: &[(String, Vec<u8>)],
        body: &[u8],
    ) -> Result<RawReply, String> {
        raw_http::post(self.app.addr, path, headers, body.to_vec()).await
    }

    /// POSTs `body` to the topic's events under `key`, declared as `content_type`.
    async fn post_event(&self, key: &str, content_type: &str, body: &[u8]) -> RawReply {
        let headers = [
            ("Idempotency-Key".to_owned(), key.as_bytes().to_vec()),
            ("Content-Type".to_owned(), content_type.as_bytes().to_vec()),
        ];
        self.post(&self.events_path(), &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    /// Every key the app has under its own Redis prefix.
    async fn redis_keys(&self) -> Vec<String> {
        let pattern = format!("{}:*", self.app.settings.redis_key_prefix);
        redis_keys(&redis_url(), &pattern).await
    }

    /// Asserts that no key is claimed in Redis and nothing is in the topic.
    async fn assert_no_trace(&self) {
        let keys = self.redis_keys().await;
        assert!(keys.is_empty(), "no key claimed: {keys:?}");
        let records = self.records();
        assert!(records.is_empty(), "nothing published: {records:?}");
    }

    /// Every record of the topic, read to its end (so an empty answer means nothing is there).
    fn records(&self) -> Vec<Record> {
        consume_to_end(&kafka_brokers(), &self.topic, 1)
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
    }
}

/// Paths the generated (percent-encoded) topics never spell: encoded dots, bytes that are not
/// UTF-8, encoded slashes and NULs. Each reaches the handler (or no route) and gets a problem.
#[tokio::test]
async fn raw_topic_segments_get_problems() {
    let fixture = Fixture::start("hostile-raw").await;
    let topic = &fixture.topic;
    let headers = [
        ("Idempotency-Key".to_owned(), b"raw-1".to_vec()),
        ("Content-Type".to_owned(), b"application/json".to_vec()),
    ];
    for (segment, status, code) in [
        (".", 400, "invalid-topic"),
        ("..", 400, "invalid-topic"),
        ("%2E", 400, "invalid-topic"),
        ("%2e%2E", 400, "invalid-topic"),
        ("%FF", 400, "invalid-topic"),
        ("%C3%28", 400, "invalid-topic"),
        ("a%00b", 400, "invalid-topic"),
        ("a%2Fb", 400, "invalid-topic"),
        (&format!("{topic}%20"), 400, "invalid-topic"),
        ("%", 400, "invalid-topic"),
        (&"a".repeat(250), 400, "invalid-topic"),
        (&format!("{topic}/x"), 404, "not-found"),
    ] {
        let path = format!("/v1/topics/{segment}/events");
        let reply = fixture
            .post(&path, &headers, b"{}")
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        check_problem(&reply, status, code).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    fixture.assert_no_trace().await;
    fixture.stop().await;
}

/// Bytes HTTP does not allow in a header (control characters, `{` in a name) are refused by
/// the HTTP parser before the application runs: 400 with an empty body, not a problem
/// document, because no handler ever sees the request. What matters is that nothing is
/// published and no key is claimed.
#[tokio::test]
async fn malformed_header_bytes_are_refused_before_the_application() {
    let fixture = Fixture::start("hostile-ctl").await;
    let cases: Vec<Vec<(String, Vec<u8>)>> = vec![
        vec![("Idempotency-Key".into(), b"ctl-\x00".to_vec())],
        vec![("Idempotency-Key".into(), b"ctl-\x01".to_vec())],
        vec![
            ("Idempotency-Key".into(), b"ctl-2".to_vec()),
            ("Kafka-Key".into(), b"a\x1bb".to_vec()),
        ],
        vec![
            ("Idempotency-Key".into(), b"ctl-3".to_vec()),
            ("Kafka-Header-Trace".into(), b"a\x7fb".to_vec()),
        ],
        vec![
            ("Idempotency-Key".into(), b"ctl-4".to_vec()),
            ("Kafka-Header-{name}".into(), b"x".to_vec()),
        ],
        vec![
            ("Idempotency-Key".into(), b"ctl-5".to_vec()),
            ("Content-Type".into(), b"text/plain\rX".to_vec()),
        ],
    ];
    for headers in cases {
        let reply = fixture
            .post(&fixture.events_path(), &headers, b"{}")
            .await
            .unwrap_or_else(|e| panic!("{headers:?}: {e}"));
        assert_eq!(reply.status, 400, "{headers:?}: {reply:?}");
    }
    fixture.assert_no_trace().await;
    let health = fixture.app.healthz().await;
    assert_eq!(health.status, 200);
    fixture.stop().await;
}

/// The default limit (1 MiB): one byte over is 413 `payload-too-large` whatever the body
/// says; exactly at the limit is published, as the README promises.
#[tokio::test]
async fn bodies_at_and_over_the_default_limit() {
    let fixture = Fixture::start("hostile-limit").await;
    let limit = fixture.app.settings.max_body_bytes;
    assert_eq!(limit, 1024 * 1024, "the default limit");

    let mut over_json = vec![b'"'; limit + 1];
    over_json[1..limit].fill(b'o');
    for (key, content_type, body) in [
        ("over-text", "text/plain", vec![0xffu8; limit + 1]),
        ("over-json", "application/json", over_json),
        ("over-nested", "application/json", vec![b'['; limit + 1]),
    ] {
        let reply = fixture.post_event(key, content_type, &body).await;
        check_problem(&reply, 413, "payload-too-large").unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    fixture.assert_no_trace().await;

    // Exactly at the limit is what the README promises to publish (`--max-body-bytes`, 1 MiB):
    // 201, and the record in Kafka byte for byte. (The producer's `message.max.bytes` is raised
    // above the body limit for that; a 413 `message-too-large` here is a broken promise.)
    let at_limit: Vec<u8> = (0..limit).map(|i| (i % 256) as u8).collect();
    let reply = fixture
        .post_event("at-limit", "application/octet-stream", &at_limit)
        .await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let in_kafka = fixture.records();
    assert_eq!(in_kafka.len(), 1, "only the event at the limit");
    assert_eq!(in_kafka[0].value, at_limit, "byte for byte");
    assert_eq!(
        in_kafka[0].header("idempotency-key"),
        Some(&b"at-limit"[..])
    );
    fixture.stop().await;
}

/// 100 000 levels of nesting. serde_json skips a value it ignores without recursing, so depth
/// is no danger to the gateway's stack: the unclosed document is `invalid-json`, the closed
/// one is valid JSON and lands byte for byte.
#[tokio::test]
async fn deeply_nested_json_is_judged_without_a_crash() {
    let fixture = Fixture::start("hostile-deep").await;
    let closed = Body::Nested { closed: true }.bytes();
    let open = Body::Nested { closed: false }.bytes();
    for content_type in ["application/json", "application/cloudevents+json; x=y"] {
        let reply = fixture.post_event("deep-open", content_type, &open).await;
        check_problem(&reply, 400, "invalid-json").unwrap_or_else(|e| panic!("{e}"));
    }
    let keys = fixture.redis_keys().await;
    assert!(keys.is_empty(), "no key claimed: {keys:?}");

    let reply = fixture
        .post_event("deep-closed", "application/json", &closed)
        .await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let in_kafka = fixture.records();
    assert_eq!(in_kafka.len(), 1, "only the valid document");
    assert!(in_kafka[0].value == closed, "byte for byte");
    fixture.stop().await;
}
