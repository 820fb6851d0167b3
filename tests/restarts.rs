//! The documented edge, on real processes: a gateway answers 202, dies before the delivery
//! report, and the broker had written the record. The key stays in flight until its lease runs
//! out; then a retry on another gateway takes it over and publishes again. The event is in Kafka
//! twice — never more — the takeover is logged, and `ackgate audit` reports the duplicate.

mod common;

use std::time::{Duration, Instant};

use common::mock::MockKafka;
use common::process::{Gateway, ackgate, post, warm_up};
use common::*;

const TOPIC: &str = "restarts";
/// Short (the smallest allowed is 1 s), so the lease — this + 10 s — runs out within seconds;
/// long enough that the gateway is killed well before its delivery would time out.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(4);
const WAIT_TIMEOUT: Duration = Duration::from_secs(1);
/// `Settings::lease`: how long a claimed key stays in flight.
const LEASE: Duration = Duration::from_secs(DELIVERY_TIMEOUT.as_secs() + 10);
/// `Settings::takeover_grace` (default Redis timeout): how long a key whose lease ran out waits
/// for its owner to renew before a request takes it over.
const GRACE: Duration = Duration::from_secs(3);
/// Time the test itself may add to the lease: a poll interval and a publish.
const MARGIN: Duration = Duration::from_secs(3);

fn position(answer: &serde_json::Value) -> (i32, i64) {
    (
        answer["partition"].as_i64().expect("partition") as i32,
        answer["offset"].as_i64().expect("offset"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_left_in_flight_by_a_killed_gateway_is_taken_over_after_its_lease() {
    let kafka = MockKafka::start(TOPIC);
    let prefix = unique("restarts");
    let spool = std::env::temp_dir().join(format!("{prefix}.spool"));
    let args = [
        "--kafka-brokers",
        &kafka.brokers(),
        "--redis-url",
        &redis_url(),
        "--redis-key-prefix",
        &prefix,
        "--delivery-timeout-ms",
        &DELIVERY_TIMEOUT.as_millis().to_string(),
        "--wait-timeout-ms",
        &WAIT_TIMEOUT.as_millis().to_string(),
        "--failure-spool-path",
        &spool.display().to_string(),
        "--log-filter",
        "warn",
    ];
    let client = reqwest::Client::new();
    let mut first = Gateway::new(&args);
    first.start();
    warm_up(&client, &first, TOPIC).await;

    // The broker writes the record at once but answers only long after: the client gets 202.
    kafka.set_rtt(Duration::from_secs(60));
    let key = unique("k-restart");
    let body = r#"{"order":42}"#;
    let sent = Instant::now();
    let accepted = post(&client, &first, TOPIC, &key, body, &[]).await;
    let answered = Instant::now();
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let location = format!("/v1/topics/{TOPIC}/events/{key}");
    assert_eq!(accepted.header("location"), Some(location.as_str()));
    // Killed before the report (due in a minute) and before the delivery timeout: nobody will
    // settle the key.
    first.kill();
    assert!(
        answered.elapsed() < DELIVERY_TIMEOUT - WAIT_TIMEOUT,
        "killed before the delivery timed out"
    );
    kafka.set_rtt(Duration::ZERO);
    let written = kafka.records_with_key(&key);
    assert_eq!(
        written.len(),
        1,
        "the broker wrote it before the gateway died"
    );
    let first_record = (written[0].partition, written[0].offset);

    // Another gateway on the same Redis. Until the lease runs out the key is in flight: the
    // status says so and a retry gets the same 202.
    let mut second = Gateway::new(&args);
    second.start();
    warm_up(&client, &second, TOPIC).await;
    let mut polls = 0;
    let taken_over = loop {
        let status = send(client.get(second.url(&location))).await;
        assert_eq!(status.status, 200, "{}", status.body);
        assert_eq!(status.json()["state"], "in_flight", "{}", status.body);
        let retry = post(&client, &second, TOPIC, &key, body, &[]).await;
        if retry.status == 201 {
            break retry;
        }
        assert_eq!(retry.status, 202, "{}", retry.body);
        assert_eq!(retry.body, accepted.body, "the same 202 until it settles");
        assert!(
            answered.elapsed() < LEASE + GRACE + MARGIN,
            "no takeover {:?} after the claim (lease {LEASE:?}, grace {GRACE:?})",
            sent.elapsed()
        );
        polls += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let took_over_after = sent.elapsed();
    assert!(polls > 0, "the key was in flight at least once");
    // The claim came after `sent`, so its lease ran out no earlier than `sent` + lease, and
    // the grace of the first suspicion after that.
    assert!(
        took_over_after >= LEASE + GRACE,
        "taken over {took_over_after:?} after the claim, before the lease ({LEASE:?}) and the \
         grace ({GRACE:?}) ran out"
    );
    assert_eq!(taken_over.header("idempotent-replayed"), None);
    let second_record = position(&taken_over.json());
    assert_ne!(second_record, first_record);

    // The takeover is logged, with the key and the attempt.
    let takeovers = second.takeovers();
    assert_eq!(
        takeovers
            .iter()
            .map(|t| (t.topic.as_str(), t.idempotency_key.as_str(), t.attempt))
            .collect::<Vec<_>>(),
        vec![(TOPIC, key.as_str(), 2)],
        "one takeover warning"
    );
    // From now on the key replays, and its status is the 201.
    let status = send(client.get(second.url(&location))).await.json();
    assert_eq!(status["state"], "persisted", "{status}");
    assert_eq!(status["answer"], taken_over.json());
    let replay = post(&client, &second, TOPIC, &key, body, &[]).await;
    assert_eq!(replay.body, taken_over.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));

    // Kafka holds the event twice, no more: the first record and the answered one, alike.
    let records = kafka.records_with_key(&key);
    assert_eq!(
        records
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect::<Vec<_>>(),
        {
            let mut both = vec![first_record, second_record];
            both.sort();
            both
        }
    );
    assert_eq!(records[0].value, records[1].value);
    assert_eq!(records[0].value, body.as_bytes());

    // The audit knows nothing of takeovers: it reports a duplicate key (exit 1), with both
    // records, and the acknowledged one where its answer said; `--allow-duplicates` lists it
    // without failing.
    let acks = std::env::temp_dir().join(format!("{prefix}-acks.jsonl"));
    std::fs::write(&acks, format!("{}\n", taken_over.body)).unwrap();
    let audit = |extra: &[&str]| {
        let output = ackgate()
            .args([
                "audit",
                "--kafka-brokers",
                &kafka.brokers(),
                "--topic",
                TOPIC,
            ])
            .args(["--acks", &acks.display().to_string(), "--json"])
            .args(extra)
            .output()
            .expect("ackgate audit runs");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("JSON ({e}): {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), report)
    };
    let (exit, report) = audit(&[]);
    assert_eq!(exit, Some(1), "a duplicate fails the audit: {report}");
    assert_eq!(
        report["problems"],
        serde_json::json!({"missing": 0, "offset_mismatches": 0, "duplicate_keys": 1})
    );
    let positions = |places: &[(i32, i64)]| {
        places
            .iter()
            .map(|(p, o)| serde_json::json!({"partition": p, "offset": o}))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        report["duplicate_keys"],
        serde_json::json!([{
            "idempotency_key": key,
            "records": positions(
                &records.iter().map(|r| (r.partition, r.offset)).collect::<Vec<_>>()
            ),
        }])
    );
    assert_eq!(report["duplicate_records"], 1);
    assert_eq!(report["acks"]["checked"], 1);
    let (exit, allowed) = audit(&["--allow-duplicates"]);
    assert_eq!(exit, Some(0), "{allowed}");
    assert_eq!(allowed["duplicate_keys"], report["duplicate_keys"]);
}
