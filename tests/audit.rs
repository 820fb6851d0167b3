//! `ackgate audit` against a real broker: what the gateway acknowledged is what the audit finds,
//! and every kind of problem it looks for is reported, by the library call and by the binary.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ackgate::audit::{
    AuditConfig, AuditReport, AuditVerdict, FoundThere, Position, StartAt, StopReason, audit,
};
use common::mock::MockKafka;
use common::*;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};

/// Audit settings for tests: a shorter quiet period than the default.
fn config(brokers: &str, topic: &str) -> AuditConfig {
    AuditConfig {
        idle: Duration::from_millis(1500),
        ..AuditConfig::new(brokers, topic)
    }
}

fn acks_file(lines: &[String]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.jsonl", unique("ackgate-acks")));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Writes one record straight to Kafka (not through the gateway), with the
/// `idempotency-key` header when `key` is given, and returns where it landed.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: Option<&str>,
) -> Position {
    let mut record = FutureRecord::<(), _>::to(topic)
        .partition(partition)
        .payload("{}");
    if let Some(key) = key {
        record = record.headers(OwnedHeaders::new().insert(Header {
            key: "idempotency-key",
            value: Some(key),
        }));
    }
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("delivered");
    Position {
        partition: delivery.partition,
        offset: delivery.offset,
    }
}

/// Publishes `count` events through a gateway and returns their 201 bodies.
async fn publish_through_gateway(
    topic: &str,
    keys: &[String],
    kafka_key: Option<&str>,
) -> Vec<String> {
    let app = TestApp::spawn_default(test_settings()).await;
    let mut bodies = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let headers: Vec<_> = kafka_key.map(|k| ("Kafka-Key", k)).into_iter().collect();
        let reply = app
            .post_event_with(topic, key, format!(r#"{{"n":{i}}}"#), &headers)
            .await;
        assert_eq!(reply.status, 201, "publishing {key}: {}", reply.body);
        bodies.push(reply.body);
    }
    app.stop().await.unwrap();
    bodies
}

fn position_of(body: &str) -> Position {
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    Position {
        partition: json["partition"].as_i64().unwrap() as i32,
        offset: json["offset"].as_i64().unwrap(),
    }
}

#[tokio::test]
async fn everything_the_gateway_acknowledged_is_found_and_the_audit_is_clean() {
    let brokers = kafka_brokers();
    let topic = unique("audit-clean");
    create_topic(&brokers, &topic, 3).await;
    let keys: Vec<String> = (0..30).map(|i| unique(&format!("k{i}"))).collect();
    let bodies = publish_through_gateway(&topic, &keys, None).await;

    // The answers as a client saved them, a replayed one twice, plus lines that are not
    // persisted answers, and an answer for another topic.
    let mut lines = bodies.clone();
    lines.push(bodies[0].clone());
    lines.push(
        r#"{"type":"urn:ackgate:problem:overloaded","title":"Overloaded","status":503,"code":"overloaded","detail":"…"}"#
            .to_owned(),
    );
    lines.push("not json at all".to_owned());
    lines.push(bodies[1].replace(&topic, "some-other-topic"));
    let report = audit(AuditConfig {
        acks: Some(acks_file(&lines)),
        ..config(&brokers, &topic)
    })
    .await
    .expect("the audit runs");

    assert!(report.clean, "{report:#?}");
    assert_eq!(report.verdict(), AuditVerdict::Clean);
    assert_eq!(report.records_read, 30);
    assert_eq!(report.distinct_keys, 30);
    assert_eq!(report.duplicate_records, 0);
    assert!(report.duplicate_keys.is_empty());
    assert_eq!(report.records_without_header, 0);
    assert_eq!(report.partitions.len(), 3);
    assert_eq!(report.partitions.iter().map(|p| p.records).sum::<u64>(), 30);
    let acks = report.acks.as_ref().unwrap();
    assert_eq!(acks.lines, 34);
    assert_eq!(
        acks.persisted_answers, 30,
        "the replayed answer counts once"
    );
    assert_eq!(acks.ignored_lines, 2);
    assert_eq!(acks.other_topics, 1);
    assert_eq!((acks.checked, acks.not_checked), (30, 0));
    assert!(acks.missing.is_empty() && acks.offset_mismatches.is_empty());

    // From a time before the first record: the same records.
    let since = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let report = audit(AuditConfig {
        start: StartAt::Since(since),
        ..config(&brokers, &topic)
    })
    .await
    .unwrap();
    assert_eq!(report.records_read, 30);
    assert!(report.clean);
}

/// `--since` between records: the records written before it are not read (a key written on
/// both sides of it is no duplicate to this audit), and the answers that name them are not
/// checked; the ones after it are.
#[tokio::test]
async fn since_a_time_between_records_audits_only_the_later_ones() {
    let brokers = kafka_brokers();
    let topic = unique("audit-since");
    create_topic(&brokers, &topic, 2).await;
    let producer = producer(&brokers);
    let dup = unique("dup");
    let before_keys: Vec<String> = (0..3).map(|i| unique(&format!("before{i}"))).collect();
    let after_keys: Vec<String> = (0..2).map(|i| unique(&format!("after{i}"))).collect();

    // One Kafka key: the gateway's records land in one partition, one after another.
    let mut bodies = publish_through_gateway(&topic, &before_keys, Some("customer-7")).await;
    let other = 1 - position_of(&bodies[0]).partition;
    produce(&producer, &topic, other, Some(&dup)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let since = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = publish_through_gateway(&topic, &after_keys, Some("customer-7")).await;
    let dup_after = produce(&producer, &topic, other, Some(&dup)).await;
    let first_after = position_of(&after[0]);
    bodies.extend(after.iter().cloned());

    let report = audit(AuditConfig {
        start: StartAt::Since(since),
        acks: Some(acks_file(&bodies)),
        ..config(&brokers, &topic)
    })
    .await
    .unwrap();
    assert_eq!(
        report.records_read, 3,
        "only the records after --since: {report:#?}"
    );
    assert_eq!(report.distinct_keys, 3);
    assert!(
        report.duplicate_keys.is_empty(),
        "{dup} is once on each side of --since: {report:#?}"
    );
    assert!(report.clean, "{report:#?}");
    let partition = |id: i32| {
        report
            .partitions
            .iter()
            .find(|p| p.partition == id)
            .unwrap()
    };
    assert_eq!(
        partition(first_after.partition).start_offset,
        first_after.offset
    );
    assert_eq!(partition(first_after.partition).records, 2);
    assert_eq!(partition(other).start_offset, dup_after.offset);
    assert_eq!(partition(other).records, 1);
    let acks = report.acks.as_ref().unwrap();
    assert_eq!(acks.persisted_answers, 5);
    assert_eq!(
        (acks.checked, acks.not_checked),
        (2, 3),
        "the answers before --since are not checked: {acks:#?}"
    );
    assert!(acks.missing.is_empty() && acks.offset_mismatches.is_empty());

    // From the beginning the same topic has all seven, and the duplicate.
    let report = audit(config(&brokers, &topic)).await.unwrap();
    assert_eq!(report.records_read, 7);
    assert_eq!(report.duplicate_keys.len(), 1);
    assert_eq!(report.duplicate_keys[0].idempotency_key, dup);
}

#[tokio::test]
async fn duplicate_keys_and_records_without_the_header_are_reported() {
    let brokers = kafka_brokers();
    let topic = unique("audit-dup");
    create_topic(&brokers, &topic, 2).await;
    let producer = producer(&brokers);
    let dup = unique("dup");
    let first = produce(&producer, &topic, 0, Some(&dup)).await;
    produce(&producer, &topic, 0, Some("solo")).await;
    let second = produce(&producer, &topic, 1, Some(&dup)).await;
    let bare = produce(&producer, &topic, 1, None).await;

    let report = audit(config(&brokers, &topic)).await.unwrap();
    assert_eq!(report.records_read, 4);
    assert_eq!(report.distinct_keys, 2);
    assert_eq!(report.duplicate_keys.len(), 1);
    assert_eq!(report.duplicate_keys[0].idempotency_key, dup);
    assert_eq!(report.duplicate_keys[0].records, vec![first, second]);
    assert_eq!(report.duplicate_records, 1);
    assert_eq!(report.records_without_header, 1);
    assert_eq!(report.records_without_header_positions, vec![bare]);
    assert_eq!(report.problems.duplicate_keys, 1);
    assert!(!report.clean);
    assert_eq!(report.verdict(), AuditVerdict::ProblemsFound);
    let summary = ackgate::audit::render_summary(&report);
    assert!(summary.contains(&format!(
        "duplicate  {dup}: 2 records at 0/{}",
        first.offset
    )));
    assert!(
        summary.contains("Verdict: PROBLEMS FOUND (1 duplicate keys)"),
        "{summary}"
    );

    // After the documented lease-takeover edge, duplicates are expected: reported, not failed.
    let report = audit(AuditConfig {
        allow_duplicates: true,
        ..config(&brokers, &topic)
    })
    .await
    .unwrap();
    assert_eq!(report.duplicate_keys.len(), 1);
    assert_eq!(report.verdict(), AuditVerdict::Clean);
}

#[tokio::test]
async fn acknowledged_keys_missing_or_at_another_offset_are_reported() {
    let brokers = kafka_brokers();
    let topic = unique("audit-acks");
    create_topic(&brokers, &topic, 3).await;
    let keys: Vec<String> = (0..3).map(|i| unique(&format!("k{i}"))).collect();
    // One Kafka key: all three records land in one partition, one after another.
    let bodies = publish_through_gateway(&topic, &keys, Some("customer-42")).await;
    let positions: Vec<Position> = bodies.iter().map(|b| position_of(b)).collect();
    assert!(
        positions
            .iter()
            .all(|p| p.partition == positions[0].partition)
    );

    let never = unique("never-published");
    let missing = bodies[0].replace(&keys[0], &never);
    // keys[1]'s answer, moved to where keys[2] is.
    let wrong_offset = bodies[1].replace(
        &format!(r#""offset":{}"#, positions[1].offset),
        &format!(r#""offset":{}"#, positions[2].offset),
    );
    // keys[2]'s answer, moved past the end of its partition.
    let beyond = bodies[2].replace(
        &format!(r#""offset":{}"#, positions[2].offset),
        &format!(r#""offset":{}"#, positions[2].offset + 1000),
    );
    let lines = vec![bodies[0].clone(), missing, wrong_offset, beyond];
    let report = audit(AuditConfig {
        acks: Some(acks_file(&lines)),
        ..config(&brokers, &topic)
    })
    .await
    .unwrap();

    assert!(!report.clean);
    assert_eq!(report.verdict(), AuditVerdict::ProblemsFound);
    assert!(report.duplicate_keys.is_empty());
    let acks = report.acks.as_ref().unwrap();
    assert_eq!((acks.persisted_answers, acks.checked), (4, 4));
    assert_eq!(acks.missing.len(), 1, "{acks:#?}");
    assert_eq!(acks.missing[0].idempotency_key, never);
    assert_eq!(acks.missing[0].acknowledged, positions[0]);

    assert_eq!(acks.offset_mismatches.len(), 2, "{acks:#?}");
    let moved = &acks.offset_mismatches[0];
    assert_eq!(moved.idempotency_key, keys[1]);
    assert_eq!(moved.acknowledged, positions[2]);
    assert_eq!(
        moved.found_there,
        FoundThere::OtherKey {
            idempotency_key: keys[2].clone()
        }
    );
    assert_eq!(moved.key_found_at, vec![positions[1]]);
    let past_end = &acks.offset_mismatches[1];
    assert_eq!(past_end.idempotency_key, keys[2]);
    assert_eq!(past_end.found_there, FoundThere::NoRecord);
    assert_eq!(past_end.key_found_at, vec![positions[2]]);
    assert_eq!(report.problems.missing, 1);
    assert_eq!(report.problems.offset_mismatches, 2);

    let summary = ackgate::audit::render_summary(&report);
    assert!(
        summary.contains(&format!("missing    {never}")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("mismatch   {}", keys[1])),
        "{summary}"
    );
    assert!(
        summary
            .contains("Verdict: PROBLEMS FOUND (1 acknowledged keys missing, 2 offset mismatches)"),
        "{summary}"
    );
}

fn ackgate() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ackgate"));
    // The tests decide every setting; nothing leaks in from the caller's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("ACKGATE_") && !key.starts_with("ACKGATE_TEST_") {
            command.env_remove(key);
        }
    }
    command.arg("audit");
    command
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", self.stdout))
    }
}

async fn run(command: &mut tokio::process::Command) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the audit finishes")
        .expect("the binary runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test]
async fn the_binary_prints_json_and_its_exit_status_is_the_verdict() {
    let brokers = kafka_brokers();
    let topic = unique("audit-bin");
    create_topic(&brokers, &topic, 2).await;
    let keys: Vec<String> = (0..5).map(|i| unique(&format!("k{i}"))).collect();
    let bodies = publish_through_gateway(&topic, &keys, None).await;
    let acks = acks_file(&bodies);
    let audit_args = |extra: &[&str]| {
        let mut command = ackgate();
        command
            .args([
                "--kafka-brokers",
                &brokers,
                "--topic",
                &topic,
                "--idle-ms",
                "1000",
            ])
            .args(["--acks", acks.to_str().unwrap()])
            .args(extra);
        command
    };

    let clean = run(&mut audit_args(&["--json"])).await;
    assert_eq!(clean.code, Some(0), "stderr: {}", clean.stderr);
    let json = clean.json();
    assert_eq!(json["clean"], true);
    assert_eq!(json["topic"], topic.as_str());
    assert_eq!(json["start"], "beginning");
    assert_eq!(json["records_read"], 5);
    assert_eq!(json["distinct_keys"], 5);
    assert_eq!(json["records_without_header"], 0);
    assert_eq!(json["duplicate_keys"], serde_json::json!([]));
    assert_eq!(json["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(json["acks"]["persisted_answers"], 5);
    assert_eq!(json["acks"]["checked"], 5);
    assert_eq!(json["acks"]["missing"], serde_json::json!([]));
    assert_eq!(json["acks"]["offset_mismatches"], serde_json::json!([]));
    assert_eq!(
        json["problems"],
        serde_json::json!({"missing": 0, "offset_mismatches": 0, "duplicate_keys": 0})
    );
    assert!(
        clean.stderr.is_empty(),
        "no progress line when stderr is not a terminal"
    );

    // The human summary, clean.
    let summary = run(&mut audit_args(&[])).await;
    assert_eq!(summary.code, Some(0));
    assert!(summary.stdout.contains(&format!(
        "Audit of topic {topic} (2 partitions, from the beginning)"
    )));
    assert!(
        summary.stdout.contains("records read                 5"),
        "{}",
        summary.stdout
    );
    assert!(
        summary.stdout.ends_with("Verdict: clean\n"),
        "{}",
        summary.stdout
    );

    // A duplicate of an acknowledged key: exit status 1, unless duplicates are allowed.
    let position = position_of(&bodies[0]);
    let second = produce(
        &producer(&brokers),
        &topic,
        1 - position.partition,
        Some(&keys[0]),
    )
    .await;
    let dirty = run(&mut audit_args(&["--json"])).await;
    assert_eq!(dirty.code, Some(1), "stderr: {}", dirty.stderr);
    let json = dirty.json();
    assert_eq!(json["clean"], false);
    assert_eq!(json["problems"]["duplicate_keys"], 1);
    assert_eq!(
        json["duplicate_keys"][0]["idempotency_key"],
        keys[0].as_str()
    );
    let mut expected = vec![position, second];
    expected.sort();
    assert_eq!(
        json["duplicate_keys"][0]["records"],
        serde_json::to_value(&expected).unwrap()
    );
    let allowed = run(&mut audit_args(&["--json", "--allow-duplicates"])).await;
    assert_eq!(allowed.code, Some(0), "stderr: {}", allowed.stderr);
    assert_eq!(allowed.json()["problems"]["duplicate_keys"], 1);
    let summary = run(&mut audit_args(&[])).await;
    assert_eq!(summary.code, Some(1));
    assert!(
        summary
            .stdout
            .contains("Verdict: PROBLEMS FOUND (1 duplicate keys)"),
        "{}",
        summary.stdout
    );
}

#[tokio::test]
async fn usage_and_connection_errors_exit_2_with_one_line() {
    let brokers = kafka_brokers();
    let missing_topic = unique("audit-no-such-topic");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--kafka-brokers".into(),
                brokers.clone(),
                "--topic".into(),
                missing_topic.clone(),
            ],
            "does not exist",
        ),
        (
            vec![
                "--kafka-brokers".into(),
                format!("127.0.0.1:{}", free_port()),
                "--topic".into(),
                "t".into(),
                "--timeout-ms".into(),
                "1000".into(),
            ],
            "could not read the metadata",
        ),
        (
            vec![
                "--kafka-brokers".into(),
                brokers.clone(),
                "--topic".into(),
                "t".into(),
                "--acks".into(),
                "/nonexistent/acks.jsonl".into(),
            ],
            "acks file",
        ),
        (
            vec![
                "--topic".into(),
                "t".into(),
                "--since".into(),
                "yesterday".into(),
            ],
            "RFC 3339",
        ),
        (
            vec![
                "--topic".into(),
                "t".into(),
                "--kafka-property".into(),
                "enable.auto.commit=true".into(),
            ],
            "enable.auto.commit",
        ),
        (vec![], "--topic"),
    ];
    for (args, mentions) in cases {
        let outcome = run(ackgate().args(&args)).await;
        assert_eq!(outcome.code, Some(2), "{args:?}: {}", outcome.stderr);
        assert!(outcome.stdout.is_empty(), "{args:?}: {}", outcome.stdout);
        assert!(
            outcome.stderr.contains(mentions),
            "{args:?}: {}",
            outcome.stderr
        );
        if !args.is_empty()
            && args
                .iter()
                .all(|a| a != "--since" && a != "--kafka-property")
        {
            assert_eq!(
                outcome.stderr.lines().count(),
                1,
                "one line: {}",
                outcome.stderr
            );
            assert!(outcome.stderr.starts_with("error: "));
        }
    }
}

/// On a broker whose high watermark is exact (librdkafka's mock cluster), a topic that is being
/// written to all the time is audited up to where it ended when the audit started, and the
/// audit finishes although the topic never goes quiet.
#[tokio::test]
async fn a_topic_being_written_to_is_audited_up_to_its_end_at_the_start() {
    let kafka = MockKafka::start("audit-live");
    let brokers = kafka.brokers();
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (brokers, writing, written) = (brokers.clone(), writing.clone(), written.clone());
        std::thread::spawn(move || {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "1")
                .create()
                .unwrap();
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                let key = format!("live-{n}");
                let record = BaseRecord::<(), _>::to("audit-live")
                    .partition((n % 3) as i32)
                    .payload("{}")
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "idempotency-key",
                        value: Some(&key),
                    }));
                if producer.send(record).is_ok() {
                    n += 1;
                    written.store(n, Ordering::Relaxed);
                }
                producer.poll(Duration::from_millis(5));
            }
            producer.flush(Duration::from_secs(5)).unwrap();
        })
    };
    let started = Instant::now();
    while written.load(Ordering::Relaxed) < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the writer writes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let began = Instant::now();
    // The quiet period alone would never end it: the topic is never quiet.
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        audit(AuditConfig {
            idle: Duration::from_secs(30),
            ..config(&brokers, "audit-live")
        }),
    )
    .await;
    let took = began.elapsed();
    writing.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    let report: AuditReport = outcome
        .expect("the audit stops at the watermark, not after 20 s")
        .expect("the audit runs");

    assert!(
        took < Duration::from_secs(20),
        "it stopped at the watermark: {took:?}"
    );
    let at_start: i64 = report
        .partitions
        .iter()
        .map(|p| p.high_watermark_at_start - p.start_offset)
        .sum();
    assert!(at_start >= 150, "{report:#?}");
    assert!(
        report
            .partitions
            .iter()
            .all(|p| p.stopped_at == StopReason::Watermark),
        "{:#?}",
        report.partitions
    );
    // Everything below the watermark, and at most a few records that were on their way then.
    assert!(report.records_read as i64 >= at_start, "{report:#?}");
    assert!(report.records_read as i64 <= at_start + 30, "{report:#?}");
    assert!(report.clean, "{report:#?}");
    assert_eq!(report.distinct_keys, report.records_read);
}
