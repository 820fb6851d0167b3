//! A gateway that dies holding a key: its claim blocks the key until the lease runs out, the
//! next request suspects the owner, and one after the grace takes the key over — counted,
//! flagged `maybe_duplicate`, and the dead owner can no longer settle it. The crash is a real one: `ackgate serve` in its own process, SIGKILLed
//! while its delivery cannot complete.

mod common;

use std::time::Duration;

use ackgate::Backend;
use ackgate::settings::Settings;
use common::faults::*;
use common::mock::MockKafka;
use common::*;

const TOPIC: &str = "takeover";
const TAKEOVERS: &str = r#"ackgate_dedupe_outcomes_total{outcome="takeover"}"#;
const KEY: &str = "k-orphaned";
const EVENT: &str = r#"{"order":9}"#;

#[tokio::test]
async fn a_key_left_by_a_crashed_gateway_is_taken_over_after_its_lease() {
    let kafka = MockKafka::start(TOPIC);
    let redis = redis_url();
    let prefix = unique("t");

    // Gateway A claims the key, then dies before Kafka could answer.
    let mut crashed = GatewayProcess::start(&[
        "--kafka-brokers",
        &kafka.brokers(),
        "--redis-url",
        &redis,
        "--redis-key-prefix",
        &prefix,
        "--delivery-timeout-ms",
        "3000",
    ]);
    let warm = crashed
        .post_event(TOPIC, &unique("warm-up"), "{}")
        .await
        .unwrap();
    assert_eq!(warm.status, 201, "{}", warm.body);
    kafka.all_down();
    let orphaned = tokio::spawn({
        let url = crashed.url("");
        async move {
            // Never answered: the process dies first.
            let client = reqwest::Client::new();
            client
                .post(format!("{url}/v1/topics/{TOPIC}/events"))
                .header("Idempotency-Key", KEY)
                .header("Content-Type", "application/json")
                .body(EVENT)
                .send()
                .await
        }
    });
    let claim = loop {
        let record = idempotency_record(&redis, &prefix, TOPIC, KEY).await;
        if record.get("state").map(String::as_str) == Some("in_flight") {
            break record;
        }
        assert!(!orphaned.is_finished(), "A answered before it could crash");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    crashed.kill();
    assert!(orphaned.await.unwrap().is_err(), "A died without answering");
    kafka.all_up();
    let dead_owner = claim["owner"].clone();
    let lease_until: i64 = claim["lease_until"].parse().unwrap();
    assert_eq!(claim["attempt"], "1");

    // Gateway B, sharing the Redis: the dead owner's lease still blocks the key.
    let settings = Settings {
        redis_key_prefix: prefix.clone(),
        ..test_settings()
    };
    let app = TestApp::spawn(settings, &kafka.brokers(), Backend::redis(redis.clone())).await;
    kafka.wait_until_publishing(&app).await;
    assert!(
        redis_now_ms(&redis).await < lease_until,
        "the test got here within A's lease"
    );
    app.post_event(TOPIC, KEY, EVENT)
        .await
        .assert_problem(409, "request-in-progress");
    let takeovers = app.metric(TAKEOVERS).await;

    // After the lease (on Redis's clock), the next request only suspects the owner: Redis may
    // have stalled past the lease while a live owner waited to renew. It gets 409 for the grace.
    while redis_now_ms(&redis).await <= lease_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let suspected = app.post_event(TOPIC, KEY, EVENT).await;
    suspected.assert_problem(409, "request-in-progress");
    let record = idempotency_record(&redis, &prefix, TOPIC, KEY).await;
    let suspect_since: i64 = record["suspect_since"].parse().expect("suspected");
    assert_eq!(record["owner"], dead_owner, "not taken over yet");
    assert_eq!(
        app.metric(TAKEOVERS).await,
        takeovers,
        "a suspicion is no takeover"
    );

    // The dead owner renews nothing: a grace later (on Redis's clock) the key is taken over.
    let grace = app.settings.takeover_grace().as_millis() as i64;
    while redis_now_ms(&redis).await < suspect_since + grace {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = app.post_event(TOPIC, KEY, EVENT).await;

    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.header("idempotent-replayed"), None, "published anew");
    let in_kafka = kafka.records_with_key(KEY);
    assert_eq!(in_kafka.len(), 1, "A never reached Kafka: {in_kafka:?}");
    let answer = reply.json();
    assert_eq!(
        (i64::from(in_kafka[0].partition), in_kafka[0].offset),
        (
            answer["partition"].as_i64().unwrap(),
            answer["offset"].as_i64().unwrap()
        )
    );
    assert_eq!(
        app.metric(TAKEOVERS).await - takeovers,
        1.0,
        "the takeover is counted"
    );
    let record = idempotency_record(&redis, &prefix, TOPIC, KEY).await;
    assert_eq!(record["state"], "done", "{record:?}");
    assert_eq!(
        record.get("maybe_duplicate").map(String::as_str),
        Some("1"),
        "the event may be in Kafka twice, and the record says so: {record:?}"
    );
    assert_ne!(record["owner"], dead_owner);

    // The dead owner (had it only been slow) can no longer settle the key.
    let mut conn = redis_connection(&redis).await;
    let mut released = 503_u16.to_be_bytes().to_vec();
    released.extend_from_slice(br#"{"stale":true}"#);
    let settled: Vec<i64> = redis::Script::new(ackgate::idempotency::SETTLE_SCRIPT)
        .key(idempotency_record_key(&prefix, TOPIC, KEY))
        .arg(60_000)
        .arg(hex::decode(&dead_owner).unwrap())
        .arg("R")
        .arg(released)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(settled, [0], "a stale owner's settle is refused");
    let replay = app.post_event(TOPIC, KEY, EVENT).await;
    assert_eq!(replay.status, 201, "{}", replay.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, reply.body, "the new owner's answer stands");
    assert_eq!(kafka.records_with_key(KEY).len(), 1);
}
