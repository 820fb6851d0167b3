//! Replays: a batch sent again, and keys shared between batches and single events (one key
//! space), publish nothing new and answer the first answer byte for byte.

use super::*;

#[tokio::test]
async fn the_same_batch_again_replays_every_answer_and_publishes_nothing() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic("batch-again").await;
    let body = r#"{"events": [
        {"idempotency_key": "r-1", "value": {"n": 1}},
        {"idempotency_key": "r-2", "key": "c-2", "headers": {"trace-id": "t-2"}, "value": [2]},
        {"idempotency_key": "r-3", "value_base64": "AAEC", "content_type": "application/octet-stream"},
        {"idempotency_key": "r-4", "value": {"n": 4}, "content_type": "application/cloudevents+json"}
    ]}"#;
    let keys = ["r-1", "r-2", "r-3", "r-4"];

    let first = results(&app.post_batch(&topic, body).await, 4);
    let second = results(&app.post_batch(&topic, body).await, 4);

    for ((one, two), key) in first.iter().zip(&second).zip(keys) {
        one.assert_created(&topic, key);
        assert_eq!(two.idempotency_key, key);
        two.assert_replays(&one.raw, 201);
    }
    assert_eq!(
        keys_in(&records(&topic)),
        keys,
        "the replays published nothing"
    );
}

#[tokio::test]
async fn a_key_sent_alone_replays_in_a_batch_and_the_other_way_round() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic("batch-single").await;
    let alone_json = app
        .post_event_with(
            &topic,
            "alone-json",
            r#"{"n": 1}"#,
            &[("Kafka-Key", "c-1"), ("Kafka-Header-Trace-Id", "t-1")],
        )
        .await;
    let alone_bytes = app
        .post_event_with(
            &topic,
            "alone-bytes",
            [0u8, 1, 2],
            &[("Content-Type", "application/octet-stream")],
        )
        .await;
    assert_eq!(alone_json.status, 201, "{}", alone_json.body);
    assert_eq!(alone_bytes.status, 201, "{}", alone_bytes.body);
    // The same events in a batch (a single event's Kafka-Header-Trace-Id is record header
    // trace-id), beside two new ones.
    let body = r#"{"events": [
        {"idempotency_key": "alone-json", "key": "c-1", "headers": {"trace-id": "t-1"}, "value": {"n": 1}},
        {"idempotency_key": "alone-bytes", "value_base64": "AAEC", "content_type": "application/octet-stream"},
        {"idempotency_key": "batch-json", "key": "c-2", "headers": {"trace-id": "t-2"}, "value": {"m": 2}},
        {"idempotency_key": "batch-bytes", "value_base64": "AwQF", "content_type": "application/octet-stream"}
    ]}"#;

    let results = results(&app.post_batch(&topic, body).await, 4);

    results[0].assert_replays(&alone_json.body, 201);
    results[1].assert_replays(&alone_bytes.body, 201);
    results[2].assert_created(&topic, "batch-json");
    results[3].assert_created(&topic, "batch-bytes");
    // And the other way round: the batch's events sent alone replay the batch's answers.
    let json_again = app
        .post_event_with(
            &topic,
            "batch-json",
            r#"{"m": 2}"#,
            &[("Kafka-Key", "c-2"), ("Kafka-Header-Trace-Id", "t-2")],
        )
        .await;
    let bytes_again = app
        .post_event_with(
            &topic,
            "batch-bytes",
            [3u8, 4, 5],
            &[("Content-Type", "application/octet-stream")],
        )
        .await;
    for (reply, item) in [(&json_again, &results[2]), (&bytes_again, &results[3])] {
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.header("idempotent-replayed"), Some("true"));
        assert_eq!(reply.body, item.raw, "the batch's answer, byte for byte");
    }
    assert_eq!(
        keys_in(&records(&topic)),
        ["alone-bytes", "alone-json", "batch-bytes", "batch-json"],
        "one record per key"
    );
}

#[tokio::test]
async fn a_key_reused_for_another_event_is_refused_in_its_own_result() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic("batch-reused").await;
    let first = [
        event("u-1", json!({"n": 1})),
        json!({"idempotency_key": "u-2", "key": "c-2", "value": {"n": 2}}),
        json!({"idempotency_key": "u-3", "headers": {"a": "b"}, "value": {"n": 3}}),
    ];
    for (item, key) in results(&app.post_batch(&topic, batch(&first)).await, 3)
        .iter()
        .zip(["u-1", "u-2", "u-3"])
    {
        item.assert_created(&topic, key);
    }

    // Each first key with a different value, Kafka key or headers; and one new key.
    let second = [
        event("u-1", json!({"n": 99})),
        json!({"idempotency_key": "u-2", "key": "other", "value": {"n": 2}}),
        json!({"idempotency_key": "u-3", "headers": {"a": "c"}, "value": {"n": 3}}),
        event("u-4", json!({"n": 4})),
    ];
    let results = results(&app.post_batch(&topic, batch(&second)).await, 4);

    for item in &results[..3] {
        item.assert_problem(422, "idempotency-key-reused");
    }
    results[3].assert_created(&topic, "u-4");
    // A single event with a first key and another body is refused the same way.
    app.post_event(&topic, "u-1", r#"{"n":99}"#)
        .await
        .assert_problem(422, "idempotency-key-reused");
    assert_eq!(keys_in(&records(&topic)), ["u-1", "u-2", "u-3", "u-4"]);
}
