//! `SIGHUP` reloads the auth file of a running `ackgate serve`: a client added is let in, a
//! client removed is shut out, a broken file changes nothing, and requests keep flowing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// Waits until `check` holds, or panics after 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_the_auth_file() {
    let topic = topic("auth-reload").await;
    let file = AuthFile::new(&[("first", "k-first", "produce = [\"*\"]")]);
    let port = free_port();
    let spool = std::env::temp_dir().join(format!("{}.spool", unique("reload")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ackgate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--kafka-brokers", &kafka_brokers()])
        .args(["--redis-url", &redis_url()])
        .args(["--redis-key-prefix", &unique("reload")])
        .args(["--failure-spool-path", &spool.display().to_string()])
        .arg("--auth-file")
        .arg(&file.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let post = |secret: &'static str, key: String| {
        let url = format!("{base}/v1/topics/{topic}/events");
        async move {
            reqwest::Client::new()
                .post(url)
                .header("Authorization", format!("Bearer {secret}"))
                .header("Idempotency-Key", key)
                .header("Content-Type", "application/json")
                .body("{}")
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("k-{n}")
    };
    eventually("the gateway serves", async || {
        post("k-first", next()).await == 201
    })
    .await;
    assert_eq!(post("k-second", next()).await, 401);

    // Add `second`, remove `first`.
    file.write(&[("second", "k-second", "produce = [\"*\"]")]);
    let pid = child.id().to_string();
    let hup = || {
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success());
    };
    hup();
    eventually("the added client is let in", async || {
        post("k-second", next()).await == 201
    })
    .await;
    assert_eq!(post("k-first", next()).await, 401);

    // A broken file keeps the clients in force, and a reload drops no request in progress:
    // requests keep flowing while the signals arrive.
    std::fs::write(&file.0, "[[clients]]\nname = \"broken\"\n").unwrap();
    let flowing = tokio::spawn({
        let requests: Vec<_> = (0..40)
            .map(|n| post("k-second", format!("flow-{n}")))
            .collect();
        async move {
            let mut statuses = Vec::new();
            for request in requests {
                statuses.push(request.await);
            }
            statuses
        }
    });
    for _ in 0..3 {
        hup();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses = flowing.await.unwrap();
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    assert_eq!(post("k-second", next()).await, 201);
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP does not end the process"
    );
    let failing = || {
        let url = format!("{base}/metrics");
        async move {
            let metrics = reqwest::get(url).await.unwrap().text().await.unwrap();
            metrics
                .lines()
                .find_map(|line| line.strip_prefix("ackgate_auth_reload_failing "))
                .map(str::to_owned)
        }
    };
    assert_eq!(failing().await.as_deref(), Some("1"), "the alert's gauge");
    file.write(&[("second", "k-second", "produce = [\"*\"]")]);
    hup();
    eventually("a good file clears the gauge", async || {
        failing().await.as_deref() == Some("0")
    })
    .await;

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    // Every 201 is one record in Kafka, and no refused request left one.
    // One for `first`, one when `second` was let in, the flow, and the last one.
    let created = 1 + 1 + statuses.len() + 1;
    assert_eq!(consume_to_end(&kafka_brokers(), &topic, 1).len(), created);
}
