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
    assert!(kafka.records_with_key("k-polite").len() == 1);
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

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let kafka = MockKafka::start(TOPIC);
    let settings = Settings {
        max_header_bytes: 16 * 1024,
        ..test_settings()
    };
    let app = kafka.spawn(settings).await;

    let reply = app
        .event_request(TOPIC, "k-big-head", "{}")
        .header("Kafka-Header-Padding", "p".repeat(64 * 1024))
        .send()
        .await;

    match reply {
        Ok(reply) => assert_eq!(reply.status(), 431),
        Err(error) => assert!(error.is_request() || error.is_connect(), "{error}"),
    }
    assert!(kafka.records_with_key("k-big-head").is_empty());
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
    // A shed request claimed nothing: its retry publishes.
    for i in 0..6 {
        let key = format!("k-cap-{i}");
        let retry = app.post_event(TOPIC, &key, "{}").await;
        assert_eq!(retry.status, 201, "{}", retry.body);
        assert_eq!(kafka.records_with_key(&key).len(), 1, "{key} once");
    }
    let metrics = app.metrics().await.body;
    assert!(metrics.contains("ackgate_requests_shed_total"));
}
