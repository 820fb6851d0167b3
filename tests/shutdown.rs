//! Shutdown when a delivery outlasts the grace period: it is not dropped without a trace, but
//! kept as a failure record — in the spool here, since Redis stalls — that says the event may
//! be in Kafka. And the drain delay: asked to stop, a gateway says it is not ready and serves
//! on for `--drain-delay-ms`, so that a load balancer takes it out before its ports close.

mod common;

use std::time::{Duration, Instant};

use ackgate::Backend;
use ackgate::settings::Settings;
use common::mock::MockKafka;
use common::process::{Gateway, post};
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

#[tokio::test]
async fn asked_to_stop_a_gateway_is_not_ready_and_serves_on_for_the_drain_delay() {
    const DRAIN_DELAY: Duration = Duration::from_millis(2_000);
    let topic = unique("drain-delay");
    create_topic(&kafka_brokers(), &topic, 1).await;
    let admin = free_port();
    let spool = std::env::temp_dir().join(format!("{}.spool", unique("drain-delay")));
    let mut gateway = Gateway::new(&[
        "--kafka-brokers".to_owned(),
        kafka_brokers(),
        "--redis-url".to_owned(),
        redis_url(),
        "--redis-key-prefix".to_owned(),
        unique("drain-delay"),
        "--admin-listen".to_owned(),
        format!("127.0.0.1:{admin}"),
        "--failure-spool-path".to_owned(),
        spool.display().to_string(),
        "--drain-delay-ms".to_owned(),
        DRAIN_DELAY.as_millis().to_string(),
    ]);
    gateway.start();
    let http = reqwest::Client::new();
    let readyz = || send(http.get(format!("http://127.0.0.1:{admin}/readyz")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz().await.status != 200 {
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = post(&http, &gateway, &topic, "before", "{}", &[]).await;
    assert_eq!(before.status, 201, "{}", before.body);

    gateway.signal_nowait("-TERM");
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = readyz().await;
    assert_eq!(stopping.status, 503, "{}", stopping.body);
    assert_eq!(stopping.json()["status"], "stopping", "{}", stopping.body);
    // Still serving: a request sent now is published and answered.
    let during = post(&http, &gateway, &topic, "during", "{}", &[]).await;
    assert_eq!(during.status, 201, "{}", during.body);
    assert!(
        signalled.elapsed() < DRAIN_DELAY,
        "the checks above took the whole drain delay: the test proves nothing"
    );

    let status = gateway
        .wait(Duration::from_secs(30))
        .expect("the gateway exits after the drain delay and the drain");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() >= DRAIN_DELAY,
        "it exited {:?} after SIGTERM, before the drain delay ran out",
        signalled.elapsed()
    );
    let keys: Vec<String> = consume_to_end(&kafka_brokers(), &topic, 1)
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(keys, ["before", "during"]);
    let _ = std::fs::remove_file(&spool);
}
