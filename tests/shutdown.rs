//! Shutdown when a delivery outlasts the grace period: it is not dropped without a trace, but
//! kept as a failure record — in the spool here, since Redis stalls — that says the event may
//! be in Kafka.

mod common;

use std::time::Duration;

use ackgate::Backend;
use ackgate::settings::Settings;
use common::mock::MockKafka;
use common::*;
use serde_json::Value;

const TOPIC: &str = "shutdown";

#[tokio::test]
async fn a_delivery_unfinished_when_the_grace_ends_is_kept_before_exit() {
    let kafka = MockKafka::start(TOPIC);
    let redis = OwnRedis::start();
    let spool = std::env::temp_dir().join(format!("{}.spool", unique("shutdown")));
    let settings = Settings {
        delivery_timeout_ms: 1_000,
        // The least the settings allow: the delivery timeout plus 5 s.
        shutdown_grace_ms: 6_000,
        wait_timeout_ms: 500,
        // A stalled Redis holds a command this long: far beyond the grace period.
        redis_timeout_ms: 30_000,
        failure_spool_path: spool.clone(),
        ..test_settings()
    };
    let mut app = TestApp::spawn(settings, &kafka.brokers(), Backend::redis(redis.url())).await;
    kafka.warm_up(&app).await;

    // Kafka holds the produce; the client gets 202 while the delivery goes on.
    kafka.set_rtt(Duration::from_secs(60));
    let key = unique("k-unfinished");
    let reply = app.post_event(TOPIC, &key, r#"{"n":1}"#).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    // Redis stalls: the delivery, failing, cannot keep its failure record before the grace
    // period is over.
    redis.pause();
    app.begin_shutdown();
    let stopped = app.join().await;
    let spooled = std::fs::read_to_string(&spool).unwrap_or_default();
    redis.resume();
    stopped.expect("a clean stop");

    let kept: Vec<Value> = spooled
        .lines()
        .map(|line| serde_json::from_str(line).expect("a spooled record"))
        .filter(|record: &Value| record["event"]["idempotency_key"] == key.as_str())
        .collect();
    assert_eq!(kept.len(), 1, "kept once, before exit: {spooled:?}");
    let record = &kept[0];
    assert_eq!(record["state"], "open");
    assert_eq!(record["persistence"], "possibly_persisted");
    assert_eq!(record["event"]["topic"], TOPIC);
    assert_eq!(record["event"]["value"]["data"], r#"{"n":1}"#);
    let _ = std::fs::remove_file(&spool);
}
