//! The failure spool across processes: a spool file left by an earlier gateway process (Redis
//! was down when it kept those failure records) is imported when the next one starts, and
//! importing it again creates no duplicates and does not undo what an operator did since. One
//! spool file belongs to one process; a record a dead process left `retrying` is opened again.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use ackgate::settings::Settings;
use ackgate::{Application, Backend, Config};
use common::*;
use serde_json::{Value, json};

/// One spooled failure record, as a gateway writes it.
fn spooled(id: &str, topic: &str, n: usize) -> Value {
    json!({
        "id": id,
        "state": "open",
        "created_at": "2026-11-23T14:00:00Z",
        "event": {
            "topic": topic,
            "idempotency_key": format!("spooled-{n}"),
            "key": null,
            "headers": [{"name": "trace-id", "value": {"encoding": "utf8", "data": "abc"}}],
            "content_type": "application/json",
            "value": {"encoding": "utf8", "data": format!(r#"{{"n":{n}}}"#)},
        },
        "error": {
            "code": "MessageTimedOut",
            "kind": "timed_out",
            "reason": "Local: Message timed out",
        },
        "persistence": "possibly_persisted",
        "http_status": 504,
        "attempts": 1,
        "updated_at": "2026-11-23T14:00:00Z",
        "resolution": null,
        "dead_letter": null,
    })
}

fn write_spool(path: &Path, records: &[Value]) {
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The failure records of `topic` the app lists, oldest first.
async fn listed(app: &TestApp, topic: &str) -> Vec<Value> {
    let reply = app.list_failures(&format!("topic={topic}&limit=100")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["items"].as_array().unwrap().clone()
}

/// Waits until the app has imported its spool (an empty spool is removed). At start-up, not at
/// the next maintenance round (every 5 s): the deadline is shorter than that.
async fn wait_until_imported(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while path.exists() {
        assert!(
            Instant::now() < deadline,
            "the spool {} was not imported",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_spool_left_by_an_earlier_process_is_imported_at_start_up_once() {
    // The records' topic need not exist: it only names them.
    let topic = unique("spooled");
    // Ids in time order, as a gateway appends them (ULIDs of one millisecond are not).
    let mut ids: Vec<String> = (0..3).map(|_| ulid::Ulid::new().to_string()).collect();
    ids.sort();
    let records: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| spooled(id, &topic, n))
        .collect();
    let settings = test_settings();
    let spool = settings.failure_spool_path.clone();
    write_spool(&spool, &records);

    let app = TestApp::spawn_default(settings.clone()).await;
    wait_until_imported(&spool).await;
    let found = listed(&app, &topic).await;
    let found_ids: Vec<&str> = found.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(found_ids, ids, "every spooled record, in order");
    for (found, spooled) in found.iter().zip(&records) {
        // Spooled before access control, the record belongs to `anonymous` once imported.
        let mut expected = spooled.clone();
        expected["event"]["principal"] = "anonymous".into();
        assert_eq!(found, &expected, "imported whole");
    }
    // An operator closes one; the gateway stops.
    let discarded = app.discard_failure(&ids[0], "a test").await;
    assert_eq!(discarded.status, 200, "{}", discarded.body);
    app.stop().await.unwrap();

    // The same spool again (a crash before the earlier import removed it): nothing new, and
    // the record the operator closed stays closed.
    write_spool(&spool, &records);
    let app = TestApp::spawn_default(settings).await;
    wait_until_imported(&spool).await;
    let found = listed(&app, &topic).await;
    let found_ids: Vec<&str> = found.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(found_ids, ids, "no duplicates");
    let states: Vec<&str> = found.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["discarded", "open", "open"]);
    let open = app
        .list_failures(&format!("topic={topic}&state=open"))
        .await;
    assert_eq!(open.json()["items"].as_array().unwrap().len(), 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn two_gateways_cannot_share_one_spool_file() {
    let settings = test_settings();
    let spool = settings.failure_spool_path.display().to_string();
    let first = TestApp::spawn_default(settings.clone()).await;

    let second = Application::build(Config {
        settings: Settings {
            redis_key_prefix: unique("t"),
            ..settings.clone()
        },
        kafka_brokers: kafka_brokers(),
        backend: Backend::redis(redis_url()),
    })
    .await;
    let error = second
        .err()
        .expect("a second gateway on the same spool file does not start");
    let message = format!("{error:#}");
    assert!(
        message.contains(&spool) && message.contains("in use"),
        "{message}"
    );

    // Once the first one has stopped, the file is free again.
    first.stop().await.unwrap();
    let next = TestApp::spawn_default(settings).await;
    next.stop().await.unwrap();
}

#[tokio::test]
async fn a_record_left_retrying_by_a_dead_gateway_is_opened_again() {
    let topic = unique("stuck");
    let mut ids: Vec<String> = (0..2).map(|_| ulid::Ulid::new().to_string()).collect();
    ids.sort();
    let retrying_since = |at: &str, n: usize| {
        let mut record = spooled(ids[n].as_str(), &topic, n);
        record["state"] = json!("retrying");
        record["updated_at"] = json!(at);
        record
    };
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // The first one's gateway died an hour ago mid-retry (the default timeout is 5 minutes);
    // the second one is being retried right now.
    let records = [
        retrying_since("2026-01-01T00:00:00Z", 0),
        retrying_since(&now, 1),
    ];
    let settings = test_settings();
    let spool = settings.failure_spool_path.clone();
    write_spool(&spool, &records);

    let app = TestApp::spawn_default(settings).await;
    wait_until_imported(&spool).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stale = app.get_failure(&ids[0]).await.json();
        if stale["state"] == "open" {
            break;
        }
        assert!(Instant::now() < deadline, "still not open: {stale}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = app.get_failure(&ids[1]).await.json();
    assert_eq!(fresh["state"], "retrying", "a live retry is left alone");
    // An operator can act on it again.
    let discarded = app.discard_failure(&ids[0], "a test").await;
    assert_eq!(discarded.status, 200, "{}", discarded.body);
    app.stop().await.unwrap();
}
