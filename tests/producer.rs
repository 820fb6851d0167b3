//! The producer under faults that only its own configuration handles: a broker that wrote a
//! record but answered too late (librdkafka retries; idempotence must keep it to one record),
//! and a fatal error while requests wait for their reports (the producer is rebuilt; each
//! request still gets what Kafka said). Faults come from librdkafka's mock cluster.

mod common;

use std::time::{Duration, Instant};

use ackgate::Backend;
use ackgate::settings::Settings;
use common::faults::*;
use common::mock::MockKafka;
use common::*;

const TOPIC: &str = "producer";

/// The broker appends the record but its reply never arrives: after `socket.timeout.ms`
/// librdkafka gives up on the request, reconnects and sends the batch again. Only idempotence
/// (the same producer id and sequence number on the resend, which the broker recognises) keeps
/// the topic at one record; without it the resend is appended a second time.
///
/// This runs against a Tansu broker behind a proxy that eats the replies, not on the mock
/// cluster: librdkafka's mock broker checks producer ids and sequence numbers only for
/// transactional producers (`rd_kafka_mock_validate_records` returns early without a
/// transactional id), so there a resend by an idempotent producer is appended twice — the
/// mock cannot tell idempotence on from off.
#[tokio::test]
async fn a_reply_lost_after_the_append_is_resent_and_kept_to_one_record() {
    let mut proxy = ReplyEatingProxy::bind();
    let tansu = OwnTansu::start(proxy.port);
    proxy.forward_to(tansu.listen);
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let topic = unique("late-reply");
    create_topic(&brokers, &topic, 1).await;
    let settings = Settings {
        // How long librdkafka waits for a reply before it sends the request again.
        kafka_properties: vec![("socket.timeout.ms".into(), "1000".into())].into(),
        ..test_settings()
    };
    let app = TestApp::spawn(settings, &brokers, Backend::redis(redis_url())).await;
    let warm = app.post_event(&topic, &unique("warm-up"), "{}").await;
    assert_eq!(warm.status, 201, "{}", warm.body);

    // The produce goes through, its reply does not.
    proxy.silence_open_connections();
    let started = Instant::now();
    let reply = app.post_event(&topic, "k-lost-reply", r#"{"n":1}"#).await;

    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered after the resend, not at the delivery timeout"
    );
    let answer = reply.json();
    let in_kafka: Vec<Record> = consume_to_end(&brokers, &topic, 1)
        .into_iter()
        .filter(|r| r.header("idempotency-key") == Some(b"k-lost-reply"))
        .collect();
    assert_eq!(
        in_kafka.len(),
        1,
        "the resend was recognised as a duplicate: {in_kafka:?}"
    );
    // The resend was answered DUPLICATE_SEQUENCE_NUMBER (Tansu's answer; Kafka answers a
    // duplicate of its last five batches with the original offset), which librdkafka reports as
    // delivered without an offset: the 201 then says -1. The partition is always known.
    assert_eq!(
        i64::from(in_kafka[0].partition),
        answer["partition"].as_i64().unwrap(),
        "the 201 names the record's partition"
    );
    let offset = answer["offset"].as_i64().unwrap();
    assert!(
        offset == in_kafka[0].offset || offset == -1,
        "the 201 names the record's offset, or none: {answer} vs {in_kafka:?}"
    );
}

/// A fatal producer error while requests wait for their reports: the producer is rebuilt once,
/// and every waiting request still gets what Kafka said about its own event — a 201 whose
/// record is at the partition and offset it names, or a failure answer with a failure record
/// and nothing in Kafka. Then the gateway goes on publishing.
#[tokio::test]
async fn requests_waiting_when_the_producer_is_rebuilt_each_get_what_kafka_said() {
    const WAITING: usize = 20;
    let _only_this_test_rebuilds = PRODUCER_FAULTS.lock().await;
    let kafka = MockKafka::start(TOPIC);
    // Partitions 0 and 1 on broker 1, partition 2 on broker 2.
    for (partition, leader) in [(0, 1), (1, 1), (2, 2)] {
        kafka
            .cluster
            .partition_leader(TOPIC, partition, Some(leader))
            .unwrap();
    }
    let settings = Settings {
        delivery_timeout_ms: 3_000,
        ..test_settings()
    };
    let (app, faults) =
        TestApp::spawn_with_publisher(settings, &kafka.brokers(), Backend::redis(redis_url()))
            .await;
    kafka.warm_up(&app).await;
    // Where each record key goes (the partitioner is deterministic).
    let mut partition_of = Vec::new();
    for i in 0..WAITING {
        let reply = app
            .post_event_with(
                TOPIC,
                &unique("where"),
                "{}",
                &[("Kafka-Key", &format!("c-{i}"))],
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        partition_of.push(reply.json()["partition"].as_i64().unwrap());
    }
    assert!(
        partition_of.contains(&2) && partition_of.iter().any(|p| *p != 2),
        "{partition_of:?}"
    );
    let rebuilds = app
        .metric(r#"ackgate_producer_rebuilds_total{reason="fatal"}"#)
        .await;

    // Every request waits for its report: sent to the slow broker 1 and unanswered, or queued
    // for partition 2, whose broker is down.
    kafka.set_rtt(Duration::from_millis(1_000));
    kafka.cluster.broker_down(2).unwrap();
    let waiting: Vec<_> = (0..WAITING)
        .map(|i| {
            let reply = app.post_event_with(
                TOPIC,
                &format!("k-waiting-{i}"),
                format!(r#"{{"n":{i}}}"#),
                &[("Kafka-Key", &format!("c-{i}"))],
            );
            tokio::spawn(reply)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        waiting.iter().all(|reply| !reply.is_finished()),
        "every request is still waiting when the producer fails"
    );
    faults.inject_fatal_error();
    let mut replies = Vec::new();
    for reply in waiting {
        replies.push(reply.await.unwrap());
    }
    kafka.set_rtt(Duration::ZERO);
    kafka.all_up();

    let in_kafka = kafka.records();
    for (i, reply) in replies.iter().enumerate() {
        let key = format!("k-waiting-{i}");
        let with_key: Vec<(i64, i64)> = in_kafka
            .iter()
            .filter(|r| r.header("idempotency-key") == Some(key.as_bytes()))
            .map(|r| (i64::from(r.partition), r.offset))
            .collect();
        if partition_of[i] == 2 {
            // Never sent: failed by the fatal error, kept, and not in Kafka.
            reply.assert_problem(503, "delivery-failed");
            let problem = reply.json();
            assert_eq!(problem["persistence"], "not_persisted", "{key}: {problem}");
            let id = problem["failure_id"].as_str().unwrap_or_else(|| {
                panic!("{key}: a failed delivery names its failure record: {problem}")
            });
            let record = app.get_failure(id).await;
            assert_eq!(record.status, 200, "{key}: {}", record.body);
            assert_eq!(record.json()["event"]["idempotency_key"], key.as_str());
            assert!(with_key.is_empty(), "{key}: not persisted, not in Kafka");
        } else {
            // Sent before the fatal error: the broker's answer still reaches its request.
            assert_eq!(reply.status, 201, "{key}: {}", reply.body);
            let answer = reply.json();
            let place = (
                answer["partition"].as_i64().unwrap(),
                answer["offset"].as_i64().unwrap(),
            );
            assert_eq!(with_key, vec![place], "{key}: a 201 names its one record");
        }
    }

    // The next requests go through the rebuilt producer.
    kafka.wait_until_publishing(&app).await;
    for i in 0..3 {
        let key = format!("k-after-rebuild-{i}");
        let reply = app.post_event(TOPIC, &key, "{}").await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(kafka.records_with_key(&key).len(), 1);
    }
    assert_eq!(
        app.metric(r#"ackgate_producer_rebuilds_total{reason="fatal"}"#)
            .await
            - rebuilds,
        1.0,
        "one fatal error, one rebuild"
    );
}
