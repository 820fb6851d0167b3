//! Slow and abusive clients: slowloris, trickled bodies, oversized heads, more requests than
//! the gateway accepts at once. None of them may starve other clients, publish anything, or
//! leave a claimed idempotency key behind.

mod common;

use std::time::Duration;

use ackgate::settings::Settings;
use common::mock::MockKafka;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOPIC: &str = "abuse";

#[tokio::test]
async fn slowloris_clients_are_cut_off_and_do_not_starve_others() {
    let kafka = MockKafka::start(TOPIC);
    let settings = Settings {
        max_connections: 20,
        header_read_timeout_ms: 1_000,
        ..test_settings()
    };
    let app = kafka.spawn(settings).await;

    // Take every connection slot with a client that never finishes its request head.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut conn = TcpStream::connect(app.addr).await.unwrap();
        conn.write_all(
            format!("POST /v1/topics/{TOPIC}/events HTTP/1.1\r\nHost: x\r\n").as_bytes(),
        )
        .await
        .unwrap();
        slow.push(conn);
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            for conn in &mut slow {
                let _ = conn.write_all(b"X-Slow: 1\r\n").await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        slow
    });

    // A well-behaved client still gets its answer once the slow ones are cut off.
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        app.post_event(TOPIC, "k-polite", r#"{"n":1}"#),
    )
    .await
    .expect("a normal request is served despite the slowloris clients");
    assert_eq!(reply.status, 201, "{}", reply.body);

    let mut slow = trickle.await.unwrap();
    for conn in &mut slow {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
        // Closed (EOF or reset) or answered with an error status; never left hanging.
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => assert!(
                String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 4"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => panic!("a slowloris connection was left open"),
        }
    }
    assert_eq!(kafka.records_with_key("k-polite").len(), 1);
}

#[tokio::test]
async fn a_trickled_body_times_out_with_408_and_claims_nothing() {
    let kafka = MockKafka::start(TOPIC);
    let settings = Settings {
        body_read_timeout_ms: 500,
        ..test_settings()
    };
    let prefix = settings.redis_key_prefix.clone();
    let app = kafka.spawn(settings).await;

    let mut conn = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/topics/{TOPIC}/events HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-trickle\r\n\
         Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n0123456789"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);

    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("application/problem+json") && response.contains("body-timeout"));
    assert!(kafka.records_with_key("k-trickle").is_empty());
    assert!(
        redis_keys(&redis_url(), &format!("{prefix}:*"))
            .await
            .is_empty()
    );
}

/// Sends a POST whose head carries `padding` bytes in one record header, on a raw connection
/// (no client library in between to refuse or trim it), and returns the answer's status line.
async fn post_with_padded_head(app: &TestApp, key: &str, padding: usize) -> String {
    let head = format!(
        "POST /v1/topics/{TOPIC}/events HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {key}\r\n\
         Content-Type: application/json\r\nKafka-Header-Padding: {}\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        "p".repeat(padding)
    );
    let mut conn = TcpStream::connect(app.addr).await.unwrap();
    // The gateway may answer (and close) before it read the whole head: a failed write is
    // fine, the answer is what counts.
    let _ = conn.write_all(head.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let kafka = MockKafka::start(TOPIC);
    // Below the default (64 KiB), so that a gateway ignoring the setting lets 32 KiB through.
    let settings = Settings {
        max_header_bytes: 16 * 1024,
        ..test_settings()
    };
    let app = kafka.spawn(settings).await;

    let status = post_with_padded_head(&app, "k-big-head", 32 * 1024).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // Under the limit the same request is served: the limit is the one configured.
    let status = post_with_padded_head(&app, "k-fit-head", 12 * 1024).await;
    assert_eq!(status, "HTTP/1.1 201 Created");

    assert!(kafka.records_with_key("k-big-head").is_empty());
    assert_eq!(kafka.records_with_key("k-fit-head").len(), 1);
}

#[tokio::test]
async fn past_the_in_flight_cap_requests_are_shed_with_503_and_can_be_retried() {
    let kafka = MockKafka::start(TOPIC);
    let settings = Settings {
        max_in_flight: 2,
        ..test_settings()
    };
    let app = kafka.spawn(settings).await;
    kafka.warm_up(&app).await;
    kafka.set_rtt(Duration::from_millis(1_500));

    let requests = (0..6).map(|i| app.post_event(TOPIC, &format!("k-cap-{i}"), "{}"));
    let replies = futures::future::join_all(requests).await;

    let shed: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert!(!shed.is_empty(), "some requests were shed");
    assert_eq!(created + shed.len(), 6, "only 201 or 503");
    for reply in &shed {
        reply.assert_problem(503, "overloaded");
        assert!(reply.header("retry-after").is_some());
    }
    kafka.set_rtt(Duration::ZERO);
    // A shed request published nothing (read to the end of every partition, before any retry)…
    let shed_keys: Vec<String> = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == 503)
        .map(|(i, _)| format!("k-cap-{i}"))
        .collect();
    let in_kafka = kafka.records();
    for key in &shed_keys {
        let published: Vec<_> = in_kafka
            .iter()
            .filter(|r| r.header("idempotency-key") == Some(key.as_bytes()))
            .collect();
        assert!(
            published.is_empty(),
            "shed {key} was published: {published:?}"
        );
    }
    // …and claimed nothing: its retry publishes (a fresh 201, not a replay), once.
    for i in 0..6 {
        let key = format!("k-cap-{i}");
        let retry = app.post_event(TOPIC, &key, "{}").await;
        assert_eq!(retry.status, 201, "{}", retry.body);
        if shed_keys.contains(&key) {
            assert_eq!(
                retry.header("idempotent-replayed"),
                None,
                "{key} was shed: its retry is the first publish"
            );
        } else {
            assert_eq!(retry.header("idempotent-replayed"), Some("true"), "{key}");
        }
    }
    let in_kafka = kafka.records();
    for i in 0..6 {
        let key = format!("k-cap-{i}");
        let published = in_kafka
            .iter()
            .filter(|r| r.header("idempotency-key") == Some(key.as_bytes()))
            .count();
        assert_eq!(published, 1, "{key} once");
    }
    let metrics = app.metrics().await.body;
    assert!(metrics.contains("ackgate_requests_shed_total"));
}
