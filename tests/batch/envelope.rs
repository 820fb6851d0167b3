//! Requests refused whole: a problem document, nothing claimed, nothing published, and the same
//! events fixed then go through under the same keys.

use ackgate::settings::Settings;

use super::*;

fn two_events() -> Vec<Value> {
    vec![event("e-1", json!({"n": 1})), event("e-2", json!({"n": 2}))]
}

#[tokio::test]
async fn a_malformed_batch_is_refused_whole_and_claims_nothing() {
    let settings = test_settings();
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let topic = topic("batch-malformed").await;
    let events = two_events();
    let list = serde_json::to_string(&events).unwrap();
    let cases = [
        (format!(r#"{{"events": {list}"#), 400, "invalid-json"),
        ("".to_owned(), 400, "invalid-json"),
        (list.clone(), 400, "invalid-batch"),
        (format!(r#"{{"event": {list}}}"#), 400, "invalid-batch"),
        (
            format!(r#"{{"events": {}}}"#, events[0]),
            400,
            "invalid-batch",
        ),
        (r#"{"events": []}"#.to_owned(), 400, "invalid-batch"),
        // The same event twice is still two events naming one key.
        (
            batch(&[events[0].clone(), events[1].clone(), events[0].clone()]),
            400,
            "duplicate-idempotency-key",
        ),
    ];

    for (body, status, code) in &cases {
        let reply = app.post_batch(&topic, body).await;
        assert_eq!(reply.status, *status, "{body}: {}", reply.body);
        reply.assert_problem(*status, code);
    }

    assert_nothing_claimed(&prefix).await;
    assert!(records(&topic).is_empty(), "nothing published");
    let fixed = app.post_batch(&topic, batch(&events)).await;
    for (i, item) in results(&fixed, 2).iter().enumerate() {
        item.assert_created(&topic, &format!("e-{}", i + 1));
    }
    assert_eq!(records(&topic).len(), 2);
}

#[tokio::test]
async fn batches_past_the_limits_get_413_and_batches_at_them_go_through() {
    let settings = Settings {
        max_batch_events: 3,
        max_batch_bytes: 1024,
        max_body_bytes: 512,
        ..test_settings()
    };
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let topic = topic("batch-limits").await;
    let events: Vec<Value> = (1..=4)
        .map(|i| event(&format!("e-{i}"), json!({ "n": i })))
        .collect();
    // Trailing white space takes a body to an exact size and leaves it the same JSON.
    let padded = |events: &[Value], size: usize| {
        let body = batch(events);
        assert!(body.len() <= size);
        format!("{body}{}", " ".repeat(size - body.len()))
    };

    app.post_batch(&topic, batch(&events))
        .await
        .assert_problem(413, "too-many-events");
    app.post_batch(&topic, padded(&events[..3], 1025))
        .await
        .assert_problem(413, "payload-too-large");
    // Without Content-Length (chunked), the limit holds while reading.
    let chunks = vec![Ok::<_, std::io::Error>(padded(&events[..3], 1025))];
    app.post_batch_raw(
        &topic,
        &[("Content-Type", "application/json")],
        reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
    )
    .await
    .assert_problem(413, "payload-too-large");

    assert_nothing_claimed(&prefix).await;
    assert!(records(&topic).is_empty(), "nothing published");
    // At both limits at once: three events in exactly 1024 bytes.
    let at_limits = padded(&events[..3], 1024);
    let reply = app.post_batch(&topic, &at_limits).await;
    for (i, item) in results(&reply, 3).iter().enumerate() {
        item.assert_created(&topic, &format!("e-{}", i + 1));
    }
    assert_eq!(records(&topic).len(), 3);
}

#[tokio::test]
async fn a_missing_topic_or_another_content_type_is_refused_whole() {
    let settings = test_settings();
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let topic = topic("batch-whole").await;
    let body = batch(&two_events());

    app.post_batch(&unique("missing"), &body)
        .await
        .assert_problem(404, "topic-not-found");
    app.post_batch("bad$topic", &body)
        .await
        .assert_problem(400, "invalid-topic");
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        app.post_batch_raw(&topic, &[("Content-Type", content_type)], body.clone())
            .await
            .assert_problem(415, "unsupported-media-type");
    }

    assert_nothing_claimed(&prefix).await;
    assert!(records(&topic).is_empty(), "nothing published");
    // Without a Content-Type the body is taken as JSON.
    let untyped = app.post_batch_raw(&topic, &[], body.clone()).await;
    for (i, item) in results(&untyped, 2).iter().enumerate() {
        item.assert_created(&topic, &format!("e-{}", i + 1));
    }
    // A JSON type with parameters is JSON.
    let more = batch(&[event("e-3", json!({"n": 3}))]);
    let typed = app
        .post_batch_raw(
            &topic,
            &[("Content-Type", "application/json; charset=utf-8")],
            more,
        )
        .await;
    results(&typed, 1)[0].assert_created(&topic, "e-3");
    assert_eq!(records(&topic).len(), 3);
}
