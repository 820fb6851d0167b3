//! The failure spool across processes: a spool file left by an earlier gateway process (Redis
//! was down when it kept those failure records) is imported when the next one starts, and
//! importing it again creates no duplicates and does not undo what an operator did since.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

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
        assert_eq!(found, spooled, "imported whole");
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
