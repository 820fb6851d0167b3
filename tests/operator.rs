//! When Kafka cannot take it: classified outcomes, 202 for slow acknowledgements, failure
//! records and the operator's loop, the spool, and the producer healing itself. Faults come
//! from librdkafka's mock cluster; every test checks what is (or is not) in the topic.

mod common;

use std::time::{Duration, Instant};

use ackgate::Backend;
use ackgate::settings::Settings;
use common::faults::{PRODUCER_FAULTS, idempotency_record};
use common::mock::MockKafka;
use common::*;
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;

const TOPIC: &str = "ops";
const REBUILDS: &str = "ackgate_producer_rebuilds_total{reason=\"fatal\"}";

fn short_delivery() -> Settings {
    Settings {
        delivery_timeout_ms: 2_000,
        // Final answers, not 202: reconnect back-off can stretch a failing delivery.
        wait_timeout_ms: 15_000,
        ..test_settings()
    }
}

/// Publishes with every broker down; returns the failure id of the answer.
async fn fail_with_brokers_down(kafka: &MockKafka, app: &TestApp, key: &str) -> String {
    kafka.all_down();
    let reply = app.post_event(TOPIC, key, r#"{"order":1}"#).await;
    kafka.all_up();
    kafka.wait_until_publishing(app).await;
    assert!(matches!(reply.status, 503 | 504), "{}", reply.body);
    assert_eq!(reply.json()["persistence"], "not_persisted");
    reply.json()["failure_id"]
        .as_str()
        .expect("a failure record")
        .to_owned()
}

#[tokio::test]
async fn an_operator_retry_publishes_a_kept_event_exactly_once() {
    let kafka = MockKafka::start(TOPIC);
    let app = kafka.spawn(short_delivery()).await;
    kafka.warm_up(&app).await;
    let id = fail_with_brokers_down(&kafka, &app, "k-retry").await;

    // Two operators press "retry" at the same moment.
    let retry = || app.retry_failure_as(&id, "alice");
    let (a, b) = tokio::join!(retry(), retry());
    let (won, lost) = if a.status == 200 { (a, b) } else { (b, a) };

    assert_eq!(won.status, 200, "{}", won.body);
    lost.assert_problem(409, "failure-not-open");
    let record = won.json();
    assert_eq!(record["state"], "resolved");
    assert_eq!(record["resolution"]["action"], "retried");
    assert_eq!(record["resolution"]["by"], "alice");
    let in_kafka = kafka.records_with_key("k-retry");
    assert_eq!(in_kafka.len(), 1, "published exactly once: {in_kafka:?}");
    assert_eq!(
        i64::from(in_kafka[0].partition),
        record["resolution"]["partition"].as_i64().unwrap()
    );
    assert_eq!(
        in_kafka[0].offset,
        record["resolution"]["offset"].as_i64().unwrap()
    );
    assert_eq!(in_kafka[0].value, br#"{"order":1}"#);

    // The client's own retry now replays the success instead of publishing again.
    let client_retry = app.post_event(TOPIC, "k-retry", r#"{"order":1}"#).await;
    assert_eq!(client_retry.status, 201, "{}", client_retry.body);
    assert_eq!(client_retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(kafka.records_with_key("k-retry").len(), 1);
    // A resolved record cannot be retried again.
    retry().await.assert_problem(409, "failure-not-open");
    let metrics = app.metrics().await.body;
    assert!(
        metrics.contains(&format!(
            r#"ackgate_failure_records_created_total{{topic="{TOPIC}",code="MessageTimedOut"}}"#
        )),
        "failure records are counted by topic and code"
    );
}

#[tokio::test]
async fn failure_records_are_listed_by_topic_and_state_and_can_be_discarded() {
    let kafka = MockKafka::start(TOPIC);
    let app = kafka.spawn(short_delivery()).await;
    kafka.warm_up(&app).await;
    let first = fail_with_brokers_down(&kafka, &app, "k-list-1").await;
    let second = fail_with_brokers_down(&kafka, &app, "k-list-2").await;

    // Page through every open record of the topic, one per page. (Probes sent while the
    // producer reconnected may have left records of their own.)
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .list_failures(&format!("topic={TOPIC}&state=open&limit=1{cursor}"))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 1);
        ids.extend(items.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let position = |id: &str| ids.iter().position(|i| i == id).expect("listed");
    assert!(
        position(&first) < position(&second),
        "oldest first: {ids:?}"
    );
    let mut unique_ids = ids.clone();
    unique_ids.dedup();
    assert_eq!(unique_ids.len(), ids.len(), "no record twice across pages");

    // No reason: a body the typed method would not send.
    app.post_json(&format!("/v1/failures/{first}/discard"), "{}")
        .await
        .assert_problem(400, "invalid-json");
    let discarded = app
        .discard_failure_as(&first, "duplicate of order 1", "bob")
        .await;
    assert_eq!(discarded.status, 200, "{}", discarded.body);
    assert_eq!(discarded.json()["state"], "discarded");
    assert_eq!(
        discarded.json()["resolution"]["reason"],
        "duplicate of order 1"
    );

    let open = app
        .list_failures(&format!("topic={TOPIC}&state=open"))
        .await
        .json();
    let open_ids: Vec<_> = open["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert!(
        !open_ids.contains(&first.as_str().into()) && open_ids.contains(&second.as_str().into())
    );
    let gone = app
        .list_failures(&format!("topic={TOPIC}&state=discarded"))
        .await
        .json();
    assert_eq!(gone["items"][0]["id"], first.as_str());
    app.list_failures("state=nope")
        .await
        .assert_problem(400, "invalid-query");
    app.retry_failure(&first)
        .await
        .assert_problem(409, "failure-not-open");
    assert!(
        kafka.records_with_key("k-list-1").is_empty(),
        "a discarded event is not published"
    );
}

#[tokio::test]
async fn retriable_errors_that_clear_in_time_give_one_record() {
    let kafka = MockKafka::start(TOPIC);
    let app = kafka.spawn(test_settings()).await;
    kafka.warm_up(&app).await;
    kafka.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );

    let reply = app.post_event(TOPIC, "k-flaky", r#"{"n":1}"#).await;

    assert_eq!(
        reply.status, 201,
        "the producer's own retries absorb it: {}",
        reply.body
    );
    // The mock cluster appends nothing when it answers an injected error, so this shows the
    // retries, not idempotence: a resend of a batch the broker did append is
    // tests/producer.rs (`a_reply_lost_after_the_append_is_resent_and_kept_to_one_record`).
    let in_kafka = kafka.records_with_key("k-flaky");
    assert_eq!(in_kafka.len(), 1, "one record: {in_kafka:?}");
    assert_at_answered_place(&reply, &in_kafka[0]);
}

/// The 201 names the partition and offset of `record`.
fn assert_at_answered_place(reply: &Reply, record: &Record) {
    let answer = reply.json();
    assert_eq!(
        (i64::from(record.partition), record.offset),
        (
            answer["partition"].as_i64().unwrap(),
            answer["offset"].as_i64().unwrap()
        ),
        "the record is where the 201 says: {answer}"
    );
}

/// A failure answer names a failure record that holds the event, and Kafka holds the event at
/// most as often as `persistence` allows: never when `not_persisted`, at most once otherwise.
async fn assert_kept(app: &TestApp, reply: &Reply, key: &str, in_kafka: &[Record]) {
    let problem = reply.json();
    let id = problem["failure_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{key}: a failure record: {problem}"));
    let record = app.get_failure(id).await;
    assert_eq!(record.status, 200, "{key}: {}", record.body);
    assert_eq!(record.json()["event"]["idempotency_key"], key);
    match problem["persistence"].as_str() {
        Some("not_persisted") => assert!(in_kafka.is_empty(), "{key}: {in_kafka:?}"),
        Some("possibly_persisted") => assert!(in_kafka.len() <= 1, "{key}: {in_kafka:?}"),
        other => panic!("{key}: persistence {other:?}"),
    }
}

#[tokio::test]
async fn permanent_errors_get_the_right_4xx_at_once() {
    let kafka = MockKafka::start(TOPIC);
    // A producer limit below the gateway's body limit, as a cluster with a smaller
    // `message.max.bytes` would impose.
    let settings = Settings {
        kafka_properties: vec![("message.max.bytes".into(), "1000000".into())].into(),
        ..test_settings()
    };
    let app = kafka.spawn(settings).await;
    kafka.warm_up(&app).await;

    // Above the producer's message.max.bytes but within the gateway's 1 MiB.
    let big = "x".repeat(1_000_500);
    let started = Instant::now();
    let too_large = app
        .post_event_with(TOPIC, "k-big", big, &[("Content-Type", "text/plain")])
        .await;
    too_large.assert_problem(413, "message-too-large");
    assert_eq!(too_large.json()["persistence"], "not_persisted");
    assert!(
        too_large.json()["failure_id"].is_null(),
        "the client's mistake needs no operator"
    );

    kafka.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let forbidden = app.post_event(TOPIC, "k-acl", "{}").await;
    forbidden.assert_problem(403, "topic-not-authorized");
    assert!(
        forbidden.json()["failure_id"].is_string(),
        "an ACL problem is kept for an operator"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "permanent errors are not retried until the delivery timeout"
    );
    assert!(kafka.records_with_key("k-big").is_empty());
    assert!(kafka.records_with_key("k-acl").is_empty());
}

/// The broker refuses the record itself: 422 `record-rejected` at once, nothing in Kafka, no
/// failure record (the client's event, not an operator's problem), and the key released, so
/// the same key publishes once the event is acceptable.
#[tokio::test]
async fn a_record_the_broker_rejects_gets_422_and_releases_its_key() {
    let kafka = MockKafka::start(TOPIC);
    let settings = test_settings();
    let prefix = settings.redis_key_prefix.clone();
    let app = kafka.spawn(settings).await;
    kafka.warm_up(&app).await;
    kafka.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );

    let started = Instant::now();
    let reply = app.post_event(TOPIC, "k-rejected", r#"{"n":1}"#).await;

    reply.assert_problem(422, "record-rejected");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried until the delivery timeout"
    );
    let problem = reply.json();
    assert_eq!(problem["persistence"], "not_persisted", "{problem}");
    assert!(problem["failure_id"].is_null(), "{problem}");
    assert_eq!(
        reply.header("retry-after"),
        None,
        "retrying alone cannot help"
    );
    assert!(kafka.records_with_key("k-rejected").is_empty());
    let record = idempotency_record(&redis_url(), &prefix, TOPIC, "k-rejected").await;
    assert_eq!(
        record.get("state").map(String::as_str),
        Some("released"),
        "{record:?}"
    );
    let status = app.event_status(TOPIC, "k-rejected").await;
    assert_eq!(status.json()["state"], "not_persisted", "{}", status.body);

    // Released, not pinned: the same key publishes again (the broker takes it this time).
    let again = app.post_event(TOPIC, "k-rejected", r#"{"n":1}"#).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), None);
    let in_kafka = kafka.records_with_key("k-rejected");
    assert_eq!(in_kafka.len(), 1, "{in_kafka:?}");
    assert_at_answered_place(&again, &in_kafka[0]);
}

#[tokio::test]
async fn a_fatal_producer_error_is_healed_and_the_next_requests_succeed() {
    let _only_this_test_rebuilds = PRODUCER_FAULTS.lock().await;
    let kafka = MockKafka::start(TOPIC);
    let settings = test_settings();
    let app = Application::build_for(&kafka.brokers(), settings).await;
    kafka.warm_up(&app.app).await;
    let rebuilds = app.app.metric(REBUILDS).await;

    app.publisher.inject_fatal_error();
    // The request that meets the dead producer may fail (with a failure record); the ones
    // after it go through a fresh producer.
    let first = app.app.post_event(TOPIC, "k-fatal-1", "{}").await;
    let first_in_kafka = kafka.records_with_key("k-fatal-1");
    match first.status {
        201 => {
            assert_eq!(first_in_kafka.len(), 1, "{first_in_kafka:?}");
            assert_at_answered_place(&first, &first_in_kafka[0]);
        }
        503 | 504 => assert_kept(&app.app, &first, "k-fatal-1", &first_in_kafka).await,
        other => panic!("unexpected {other}: {}", first.body),
    }
    for i in 0..5 {
        let key = format!("k-after-fatal-{i}");
        let reply = app.app.post_event(TOPIC, &key, "{}").await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let in_kafka = kafka.records_with_key(&key);
        assert_eq!(in_kafka.len(), 1);
        assert_at_answered_place(&reply, &in_kafka[0]);
    }
    assert_eq!(
        app.app.metric(REBUILDS).await - rebuilds,
        1.0,
        "one fatal error, one rebuild, counted"
    );
}

#[tokio::test]
async fn a_failure_record_survives_redis_being_down_via_the_spool() {
    let kafka = MockKafka::start(TOPIC);
    let mut redis = OwnRedis::start();
    let spool = std::env::temp_dir().join(format!("{}.spool", unique("spool")));
    let settings = Settings {
        failure_spool_path: spool.clone(),
        ..short_delivery()
    };
    let app = TestApp::spawn(settings, &kafka.brokers(), Backend::redis(redis.url())).await;
    kafka.warm_up(&app).await;

    kafka.all_down();
    let pending = tokio::spawn(app.post_event(TOPIC, "k-spool", r#"{"keep":"me"}"#));
    // The claim has happened; Redis dies while the delivery is failing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    let reply = pending.await.unwrap();
    kafka.all_up();

    assert!(matches!(reply.status, 503 | 504), "{}", reply.body);
    let id = reply.json()["failure_id"]
        .as_str()
        .expect("kept")
        .to_owned();
    let spooled = std::fs::read_to_string(&spool).expect("the spool file exists");
    assert!(
        spooled.contains(&id) && spooled.contains(r#"{\"keep\":\"me\"}"#),
        "{spooled}"
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let record = app.get_failure(&id).await;
        if record.status == 200 {
            assert_eq!(record.json()["event"]["value"]["data"], r#"{"keep":"me"}"#);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spool was imported: {}",
            record.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!spool.exists(), "the spool is emptied after the import");
}

#[tokio::test]
async fn a_slow_ack_gets_202_and_the_status_shows_the_offset_when_it_lands() {
    let kafka = MockKafka::start(TOPIC);
    let settings = Settings {
        wait_timeout_ms: 500,
        ..test_settings()
    };
    let app = kafka.spawn(settings).await;
    kafka.warm_up(&app).await;
    kafka.set_rtt(Duration::from_millis(2_500));

    let reply = app.post_event(TOPIC, "k/slow?", r#"{"n":1}"#).await;

    assert_eq!(reply.status, 202, "{}", reply.body);
    let location = reply.header("location").expect("Location").to_owned();
    assert_eq!(location, format!("/v1/topics/{TOPIC}/events/k%2Fslow%3F"));
    assert_eq!(reply.json()["links"]["status"], location.as_str());
    let retry = app.post_event(TOPIC, "k/slow?", r#"{"n":1}"#).await;
    assert_eq!(
        retry.status, 202,
        "a retry while unsettled gets the same 202"
    );
    assert_eq!(retry.body, reply.body);
    let status = app.get(&location).await.json();
    assert_eq!(status["state"], "in_flight");

    let deadline = Instant::now() + Duration::from_secs(15);
    let settled = loop {
        let status = app.get(&location).await.json();
        if status["state"] != "in_flight" {
            break status;
        }
        assert!(Instant::now() < deadline, "the delivery settles");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(settled["state"], "persisted", "{settled}");
    assert_eq!(settled["answer_status"], 201);
    kafka.set_rtt(Duration::ZERO);
    // Once settled, a retry gets the final answer (not the 202 again), replayed, and publishes
    // nothing.
    let after = app.post_event(TOPIC, "k/slow?", r#"{"n":1}"#).await;
    assert_eq!(after.status, 201, "{}", after.body);
    assert_eq!(after.header("idempotent-replayed"), Some("true"));
    assert_eq!(after.json(), settled["answer"], "the stored answer");
    let in_kafka = kafka.records_with_key("k/slow?");
    assert_eq!(in_kafka.len(), 1, "{in_kafka:?}");
    assert_at_answered_place(&after, &in_kafka[0]);
    app.event_status(TOPIC, "never-sent")
        .await
        .assert_problem(404, "event-not-found");
}

#[tokio::test]
async fn with_dead_letter_topics_on_a_failed_event_is_copied_to_its_dlt() {
    let kafka = MockKafka::start(TOPIC);
    let settings = Settings {
        dead_letter_topics: true,
        ..short_delivery()
    };
    let app = kafka.spawn(settings).await;
    kafka.warm_up(&app).await;

    let id = fail_with_brokers_down(&kafka, &app, "k-dlt").await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let copy = loop {
        let record = app.get_failure(&id).await.json();
        if !record["dead_letter"].is_null() {
            break record["dead_letter"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the record is mirrored: {record}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(copy["topic"], format!("{TOPIC}.dlt"));
    let dlt: Vec<Record> = consume_to_end(&kafka.brokers(), &format!("{TOPIC}.dlt"), 1)
        .into_iter()
        .filter(|r| r.header("dlt-failure-id") == Some(id.as_bytes()))
        .collect();
    assert_eq!(dlt.len(), 1, "one copy: {dlt:?}");
    let copied = &dlt[0];
    assert_eq!(copied.offset, copy["offset"].as_i64().unwrap());
    assert_eq!(copied.value, br#"{"order":1}"#);
    assert_eq!(copied.header("idempotency-key"), Some(&b"k-dlt"[..]));
    assert_eq!(copied.header("dlt-original-topic"), Some(TOPIC.as_bytes()));
    assert_eq!(
        copied.header("dlt-error-code"),
        Some(&b"MessageTimedOut"[..])
    );
    assert_eq!(
        copied.header("dlt-persistence"),
        Some(&b"not_persisted"[..])
    );
    assert!(copied.header("dlt-attempts").is_some() && copied.header("dlt-failed-at").is_some());
    assert!(
        kafka.records_with_key("k-dlt").is_empty(),
        "the original topic still has none"
    );
}

#[tokio::test]
async fn a_broker_that_lost_the_producer_state_does_not_wedge_the_gateway() {
    let _only_this_test_rebuilds = PRODUCER_FAULTS.lock().await;
    // UNKNOWN_PRODUCER_ID: librdkafka bumps the epoch itself and resends, no fatal error, so
    // nothing to rebuild (a rebuild here would be one too many). OUT_OF_ORDER_SEQUENCE_NUMBER:
    // a fatal error for an idempotent producer, so exactly one rebuild.
    for (error, expected_rebuilds) in [
        (RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID, 0.0),
        (
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            1.0,
        ),
    ] {
        let kafka = MockKafka::start(TOPIC);
        let app = kafka.spawn(test_settings()).await;
        kafka.warm_up(&app).await;
        let rebuilds = app.metric(REBUILDS).await;
        kafka
            .cluster
            .request_errors(RDKafkaApiKey::Produce, &[error]);

        // The request that meets the error may fail, with a failure record; the gateway must
        // recover (epoch bump or a rebuilt producer) and go on serving.
        let hit = app.post_event(TOPIC, "k-state-lost", "{}").await;
        let in_kafka = kafka.records_with_key("k-state-lost");
        match hit.status {
            201 => {
                assert_eq!(in_kafka.len(), 1, "{error:?}: {in_kafka:?}");
                assert_at_answered_place(&hit, &in_kafka[0]);
            }
            503 | 504 => assert_kept(&app, &hit, "k-state-lost", &in_kafka).await,
            other => panic!("{error:?}: unexpected {other}: {}", hit.body),
        }
        for i in 0..5 {
            let key = format!("k-after-{i}");
            let reply = app.post_event(TOPIC, &key, "{}").await;
            assert_eq!(reply.status, 201, "{error:?}: {}", reply.body);
            let in_kafka = kafka.records_with_key(&key);
            assert_eq!(in_kafka.len(), 1, "{error:?}");
            assert_at_answered_place(&reply, &in_kafka[0]);
        }
        assert_eq!(
            app.metric(REBUILDS).await - rebuilds,
            expected_rebuilds,
            "{error:?}: rebuilds of this app's producer"
        );
    }
}

/// An app plus a handle on its publisher, for fault injection.
struct Application {
    app: TestApp,
    publisher: ackgate::publisher::FaultInjector,
}

impl Application {
    async fn build_for(brokers: &str, settings: Settings) -> Application {
        let (app, publisher) =
            TestApp::spawn_with_publisher(settings, brokers, Backend::redis(redis_url())).await;
        Application { app, publisher }
    }
}
