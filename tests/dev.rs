//! `ackgate dev` as a user runs it: the process, its banner, and the slow Kafka it can play
//! for trying a client's handling of 202.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::process::{ackgate, audit};
use common::{free_port, unique};

/// A running `ackgate dev`, killed when dropped.
struct Dev {
    child: Child,
    port: u16,
    /// The mock cluster's bootstrap servers, as the banner prints them.
    kafka: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ackgate dev` with these flags and reads its banner up to the Kafka line.
fn dev(args: &[&str]) -> Dev {
    let port = free_port();
    let mut child = ackgate()
        .arg("dev")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ackgate dev starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let kafka = loop {
        let line = lines
            .next()
            .expect("the banner names the mock cluster before stderr ends")
            .unwrap();
        if let Some(rest) = line.trim_start().strip_prefix("kafka ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the process never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Dev { child, port, kafka }
}

#[tokio::test]
async fn a_slow_mock_kafka_gives_a_202_that_settles_and_can_be_audited_from_outside() {
    let dev = dev(&["--kafka-rtt-ms", "700", "--wait-timeout-ms", "200"]);
    let base = format!("http://127.0.0.1:{}", dev.port);
    let client = reqwest::Client::new();
    let key = unique("dev-slow");

    let first = client
        .post(format!("{base}/v1/topics/events/events"))
        .header("Idempotency-Key", &key)
        .header("Content-Type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        first.status(),
        202,
        "Kafka answers later than the wait timeout"
    );
    let location = first.headers()["location"].to_str().unwrap().to_owned();

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status: serde_json::Value = client
            .get(format!("{base}{location}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["state"] != "in_flight" {
            break status;
        }
        assert!(Instant::now() < deadline, "the delivery never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["state"], "persisted", "{status}");

    // What the status resource says is in Kafka is in Kafka, once, read by another process
    // through the address the banner printed.
    let acks = std::env::temp_dir().join(format!("{}.jsonl", unique("dev-acks")));
    std::fs::write(&acks, format!("{}\n", status["answer"])).unwrap();
    let (code, report) = audit(&dev.kafka, "events", &acks);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(report["records_read"], 1, "{report:#}");
}
