//! The binary as an operator meets it: help, bad settings, the OpenAPI printout, and a real
//! SIGTERM to a real process.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mock::MockKafka;
use common::process::{Gateway, ackgate, serve_refused, warm_up};
use common::*;

#[test]
fn serve_help_documents_every_setting_with_its_environment_variable() {
    let output = ackgate().args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "ACKGATE_LISTEN"),
        ("--kafka-brokers", "ACKGATE_KAFKA_BROKERS"),
        ("--redis-url", "ACKGATE_REDIS_URL"),
        ("--delivery-timeout-ms", "ACKGATE_DELIVERY_TIMEOUT_MS"),
        ("--idempotency-ttl-secs", "ACKGATE_IDEMPOTENCY_TTL_SECS"),
        ("--max-body-bytes", "ACKGATE_MAX_BODY_BYTES"),
        ("--kafka-property", "ACKGATE_KAFKA_PROPERTIES"),
        ("--kafka-properties-file", "ACKGATE_KAFKA_PROPERTIES_FILE"),
        ("--log-format", "ACKGATE_LOG_FORMAT"),
    ] {
        assert!(help.contains(flag), "{flag} is documented");
        assert!(help.contains(env), "{env} is documented");
    }
    assert!(
        help.contains("[default: 30000]"),
        "delivery timeout default"
    );
}

/// Flags, environment, and a word the error must mention.
type BadSetting<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn a_bad_setting_stops_start_up_with_one_clear_line() {
    let cases: &[BadSetting] = &[
        (
            &["--delivery-timeout-ms", "abc"],
            &[],
            "delivery-timeout-ms",
        ),
        (&["--kafka-property", "acks=1"], &[], "acks"),
        (&[], &[("ACKGATE_MAX_BODY_BYTES", "0")], "max-body-bytes"),
        (&["--redis-url", "http://nope"], &[], "redis-url"),
        (
            &[
                "--idempotency-ttl-secs",
                "60",
                "--delivery-timeout-ms",
                "60000",
            ],
            &[],
            "idempotency-ttl-secs",
        ),
        (
            &["--kafka-property", "no.such.property=1"],
            &[],
            "no.such.property",
        ),
        // A grace period a delivery cannot finish in: both flags and the least allowed.
        (
            &["--shutdown-grace-ms", "30000"],
            &[],
            "--shutdown-grace-ms (30000) must be at least --delivery-timeout-ms (30000) plus \
             5000 ms, i.e. 35000",
        ),
        (
            &["--failure-retrying-timeout-secs", "30"],
            &[],
            "--failure-retrying-timeout-secs (30)",
        ),
    ];
    for (args, env, mentions) in cases {
        let stderr = serve_refused(args, env);
        let error_lines: Vec<_> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(
            error_lines.len(),
            1,
            "one error line for {args:?}: {stderr}"
        );
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
    }
}

#[test]
fn a_value_with_commas_in_the_environment_reaches_librdkafka_whole() {
    // librdkafka quotes the value it refuses: `SASL,SSL` arrives as one value, after a password
    // with commas that was neither cut nor taken for a property.
    let stderr = serve_refused(
        &[],
        &[(
            "ACKGATE_KAFKA_PROPERTIES",
            "sasl.password=hun,ter2,security.protocol=SASL,SSL",
        )],
    );
    assert!(
        stderr.contains("\"SASL,SSL\"") && stderr.contains("security.protocol"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hun") && !stderr.contains("ter2"),
        "{stderr}"
    );

    // An escaped comma never separates, even before something that looks like a property.
    let stderr = serve_refused(
        &[],
        &[(
            "ACKGATE_KAFKA_PROPERTIES",
            r"security.protocol=SSL\,no.such=1",
        )],
    );
    assert!(stderr.contains("\"SSL,no.such=1\""), "{stderr}");

    // Any flag replaces the variable: its bad property is never read.
    let stderr = serve_refused(
        &["--kafka-property", "security.protocol=bogus"],
        &[("ACKGATE_KAFKA_PROPERTIES", "no.such.property=1")],
    );
    assert!(
        stderr.contains("bogus") && !stderr.contains("no.such.property"),
        "{stderr}"
    );
}

#[test]
fn the_properties_file_is_read_and_checked_line_by_line() {
    let path = std::env::temp_dir().join(format!("{}.properties", unique("cli")));
    let path_text = path.display().to_string();
    // What the file sets reaches librdkafka: its refusal names the property.
    std::fs::write(
        &path,
        "# managed\nsasl.password=hunter2\nno.such.property=1\n",
    )
    .unwrap();
    let stderr = serve_refused(&["--kafka-properties-file", &path_text], &[]);
    assert!(stderr.contains("no.such.property"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // A property given explicitly (here in the environment) wins over the file's.
    std::fs::write(&path, "security.protocol=from-file\n").unwrap();
    let stderr = serve_refused(
        &[],
        &[
            ("ACKGATE_KAFKA_PROPERTIES_FILE", &path_text),
            ("ACKGATE_KAFKA_PROPERTIES", "security.protocol=from-env"),
        ],
    );
    assert!(
        stderr.contains("from-env") && !stderr.contains("from-file"),
        "{stderr}"
    );

    // A refused property and a bad line: one line naming the file and the line, no value.
    for (text, mentions) in [
        (
            "linger.ms=1\nacks=0\n",
            "line 2: 'acks' is set by ackgate itself",
        ),
        ("hunter2\n", "line 1: not key=value"),
    ] {
        std::fs::write(&path, text).unwrap();
        let stderr = serve_refused(&["--kafka-properties-file", &path_text], &[]);
        let error_lines: Vec<_> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(error_lines.len(), 1, "{stderr}");
        assert!(error_lines[0].contains(&path_text), "{stderr}");
        assert!(error_lines[0].contains(mentions), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    std::fs::remove_file(&path).unwrap();
    let stderr = serve_refused(&["--kafka-properties-file", &path_text], &[]);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn openapi_prints_the_document() {
    let output = ackgate().arg("openapi").output().unwrap();
    assert!(output.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/topics/{topic}/events"]["post"].is_object());

    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is checked in");
    assert!(
        checked_in == String::from_utf8(output.stdout).unwrap(),
        "openapi/openapi.json is stale: run `cargo run -q -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let topic = unique("cli");
    let spool = std::env::temp_dir().join(format!("{topic}.spool"));
    create_topic(&kafka_brokers(), &topic, 1).await;
    let port = free_port();
    let mut child = ackgate()
        .arg("serve")
        .arg("--no-auth")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--kafka-brokers", &kafka_brokers()])
        .args(["--redis-url", &redis_url()])
        .args(["--redis-key-prefix", &unique("cli")])
        .args(["--failure-spool-path", &spool.display().to_string()])
        .args(["--log-format", "json"])
        // Request lines are DEBUG; this is how the README says to turn them on.
        .args(["--log-filter", "info,tower_http=debug"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "ackgate serve did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = client
        .post(format!("{base}/v1/topics/{topic}/events"))
        .header("Idempotency-Key", "k-cli")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201);

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");

    // JSON logs: every line parses, and the request line names route and outcome.
    let logs: Vec<serde_json::Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).expect("a JSON log line"))
        .collect();
    assert!(
        logs.iter().any(|l| l["span"]["outcome"] == "persisted"
            && l["span"]["route"] == "/v1/topics/{topic}/events"),
        "a request log line with route and outcome"
    );
    assert_eq!(consume_to_end(&kafka_brokers(), &topic, 1).len(), 1);
}

/// SIGTERM while a request waits for a slow broker: the process stops only after that request
/// got its 201 from the delivery report, and the record is where the answer says.
#[tokio::test]
async fn sigterm_answers_a_request_in_flight_from_its_delivery_report() {
    const TOPIC: &str = "cli-drain";
    // The broker's answer takes this long, so the request is surely in flight at the signal.
    const RTT: Duration = Duration::from_secs(2);
    let kafka = MockKafka::start(TOPIC);
    let spool = std::env::temp_dir().join(format!("{}.spool", unique("cli-drain")));
    let mut gateway = Gateway::new(&[
        "--kafka-brokers",
        &kafka.brokers(),
        "--redis-url",
        &redis_url(),
        "--redis-key-prefix",
        &unique("cli-drain"),
        "--failure-spool-path",
        &spool.display().to_string(),
    ]);
    gateway.start();
    let client = reqwest::Client::new();
    warm_up(&client, &gateway, TOPIC).await;
    kafka.set_rtt(RTT);

    let key = unique("k-drain");
    let in_flight = tokio::spawn(
        client
            .post(gateway.url(&format!("/v1/topics/{TOPIC}/events")))
            .header("Idempotency-Key", &key)
            .header("Content-Type", "application/json")
            .body(r#"{"n":1}"#)
            .send(),
    );
    // The key is claimed: the request is waiting for Kafka.
    let status_url = gateway.url(&format!("/v1/topics/{TOPIC}/events/{key}"));
    let deadline = Instant::now() + RTT / 2;
    loop {
        let status = send(client.get(&status_url)).await;
        if status.status == 200 {
            assert_eq!(status.json()["state"], "in_flight", "{}", status.body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request was not claimed in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    gateway.signal_nowait("-TERM");

    let reply = Reply::from(in_flight.await.unwrap().expect("answered, not cut")).await;
    let answered_after = signalled.elapsed();
    let exit = gateway.wait(Duration::from_secs(20));

    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(
        answered_after >= RTT / 2,
        "the answer waited for the broker across the signal ({answered_after:?})"
    );
    assert_eq!(
        exit.map(|s| s.code()),
        Some(Some(0)),
        "SIGTERM drains, exit 0"
    );
    kafka.set_rtt(Duration::ZERO);
    let answer = reply.json();
    let at = (
        answer["partition"].as_i64().unwrap() as i32,
        answer["offset"].as_i64().unwrap(),
    );
    let records: Vec<_> = kafka
        .records_with_key(&key)
        .into_iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(records, vec![at], "one record, at the answered offset");
}
