//! Settings and deployment conditions whose effect is only visible end to end: a Redis that may
//! evict keys, or keeps nothing on disk, shows up in `/readyz`, and `--auto-create-topics` decides whether a POST to an
//! unknown topic publishes or gets 404 with nothing stored.

mod common;

use std::time::Duration;

use ackgate::Backend;
use ackgate::settings::Settings;
use common::faults::RedisWith;
use common::mock::MockKafka;
use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

#[tokio::test]
async fn readyz_warns_when_redis_may_evict_idempotency_records() {
    let kafka = MockKafka::start("ready");
    let aof_dir = std::env::temp_dir().join(unique("aof"));
    std::fs::create_dir_all(&aof_dir).unwrap();
    let aof_dir = aof_dir.display().to_string();
    for (policy, warned) in [("allkeys-lru", true), ("noeviction", false)] {
        // With an append-only file, so that only the eviction policy can be warned about.
        let redis = RedisWith::start(&[
            "--maxmemory-policy",
            policy,
            "--appendonly",
            "yes",
            "--dir",
            &aof_dir,
        ]);
        let app = TestApp::spawn(
            test_settings(),
            &kafka.brokers(),
            Backend::redis(redis.url()),
        )
        .await;

        let ready = app.readyz().await;

        // A warning, not a refusal: traffic goes on, the operator is told.
        assert_eq!(ready.status, 200, "{policy}: {}", ready.body);
        let body = ready.json();
        assert_eq!(body["status"], "ready", "{policy}: {body}");
        let warnings: Vec<&str> = body["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("{policy}: warnings are listed: {body}"))
            .iter()
            .map(|w| w.as_str().unwrap())
            // This test's gateway runs without authentication and says so too.
            .filter(|w| !w.contains("authentication is off"))
            .collect();
        if warned {
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains(policy) && w.contains("noeviction")),
                "{policy}: {warnings:?}"
            );
        } else {
            assert!(warnings.is_empty(), "{policy}: {warnings:?}");
        }
    }
}

#[tokio::test]
async fn readyz_warns_when_redis_keeps_nothing_on_disk() {
    let kafka = MockKafka::start("durable");
    let dir = std::env::temp_dir().join(unique("redis-files"));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.display().to_string();
    let noeviction = ["--maxmemory-policy", "noeviction", "--dir", &dir];
    // Flags beyond `--save "" --appendonly no` (nothing on disk), and the warning expected.
    let cases: [(&[&str], Option<&str>); 4] = [
        (&[], Some("keeps nothing on disk")),
        (&["--appendonly", "yes"], None),
        (&["--save", "3600 1"], None),
        // Managed Redis often refuses CONFIG: then it is not known, and said so.
        (&["--rename-command", "CONFIG", ""], Some("unknown")),
    ];
    for (flags, expected) in cases {
        let redis = RedisWith::start(&[&noeviction[..], flags].concat());
        let app = TestApp::spawn(
            test_settings(),
            &kafka.brokers(),
            Backend::redis(redis.url()),
        )
        .await;

        let ready = app.readyz().await;

        assert_eq!(ready.status, 200, "{flags:?}: {}", ready.body);
        let body = ready.json();
        assert_eq!(body["status"], "ready", "{flags:?}: {body}");
        let about_disk: Vec<&str> = body["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("{flags:?}: warnings are listed: {body}"))
            .iter()
            .map(|w| w.as_str().unwrap())
            .filter(|w| w.contains("on disk"))
            .collect();
        match expected {
            Some(words) => assert!(
                about_disk.len() == 1 && about_disk[0].contains(words),
                "{flags:?}: {body}"
            ),
            None => assert!(about_disk.is_empty(), "{flags:?}: {body}"),
        }
        app.stop().await.unwrap();
    }
}

/// How many partitions `topic` has, asking in a way that never creates it.
fn partitions_of(brokers: &str, topic: &str) -> usize {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("metadata client");
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len())
}

#[tokio::test]
async fn without_auto_create_topics_an_unknown_topic_is_404_and_nothing_is_stored() {
    let settings = test_settings();
    let prefix = settings.redis_key_prefix.clone();
    assert!(!settings.auto_create_topics, "off by default");
    let app = TestApp::spawn_default(settings).await;
    let topic = unique("never-created");

    let reply = app.post_event(&topic, "k-typo", r#"{"n":1}"#).await;

    reply.assert_problem(404, "topic-not-found");
    assert!(
        redis_keys(&redis_url(), &format!("{prefix}:*"))
            .await
            .is_empty(),
        "no key claimed, no failure record"
    );
    assert_eq!(
        partitions_of(&kafka_brokers(), &topic),
        0,
        "the topic was not created by asking about it"
    );
}

#[tokio::test]
async fn with_auto_create_topics_a_post_to_a_new_topic_publishes() {
    let settings = Settings {
        auto_create_topics: true,
        ..test_settings()
    };
    let app = TestApp::spawn_default(settings).await;
    let topic = unique("created-on-use");

    let reply = app.post_event(&topic, "k-new-topic", r#"{"n":1}"#).await;

    assert_eq!(reply.status, 201, "{}", reply.body);
    let partitions = partitions_of(&kafka_brokers(), &topic);
    assert!(partitions > 0, "the broker created the topic");
    let in_kafka = consume_to_end(&kafka_brokers(), &topic, partitions as i32);
    assert_eq!(in_kafka.len(), 1, "{in_kafka:?}");
    let answer = reply.json();
    assert_eq!(
        (i64::from(in_kafka[0].partition), in_kafka[0].offset),
        (
            answer["partition"].as_i64().unwrap(),
            answer["offset"].as_i64().unwrap()
        )
    );
    assert_eq!(in_kafka[0].value, br#"{"n":1}"#);
}
