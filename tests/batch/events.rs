//! What a valid batch publishes: every event where its result says, byte for byte, in batch
//! order per Kafka key; a bad event fails alone and leaves its key free.

use ackgate::settings::Settings;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;

/// What one event of a batch must be in Kafka.
struct Expected {
    idempotency_key: &'static str,
    key: Option<&'static [u8]>,
    value: &'static [u8],
    content_type: &'static [u8],
}

impl Expected {
    fn new(
        idempotency_key: &'static str,
        value: &'static [u8],
        content_type: &'static [u8],
    ) -> Expected {
        Expected {
            idempotency_key,
            key: None,
            value,
            content_type,
        }
    }

    fn with_key(self, key: &'static [u8]) -> Expected {
        Expected {
            key: Some(key),
            ..self
        }
    }
}

#[tokio::test]
async fn a_mixed_batch_is_in_kafka_exactly_where_its_results_say() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic("batch-mixed").await;
    // Written by hand: the first value's odd spacing must reach Kafka as it is in the request.
    let body = r#"{"events": [
        {"idempotency_key": "o-1", "key": "customer-42",
         "headers": {"Trace-Id": "abc", "source": "checkout"}, "value": {"a": 1,  "b":[1, 2]}},
        {"idempotency_key": "o-2", "value_base64": "AAEC/w==",
         "content_type": "application/octet-stream"},
        {"idempotency_key": "o-3", "key": "customer-42", "value": "just text"},
        {"idempotency_key": "o-4", "value": {"specversion": "1.0"},
         "content_type": "application/cloudevents+json"},
        {"idempotency_key": "o-5", "value_base64": "eyJuIjogMX0=", "content_type": "application/json"}
    ]}"#;

    let reply = app.post_batch(&topic, body).await;

    let results = results(&reply, 5);
    let in_kafka = records(&topic);
    assert_eq!(in_kafka.len(), 5, "one record per event: {in_kafka:?}");
    let expected = [
        Expected::new("o-1", br#"{"a": 1,  "b":[1, 2]}"#, b"application/json")
            .with_key(b"customer-42"),
        Expected::new("o-2", &[0, 1, 2, 255], b"application/octet-stream"),
        Expected::new("o-3", br#""just text""#, b"application/json").with_key(b"customer-42"),
        Expected::new(
            "o-4",
            br#"{"specversion": "1.0"}"#,
            b"application/cloudevents+json",
        ),
        Expected::new("o-5", br#"{"n": 1}"#, b"application/json"),
    ];
    for (item, expected) in results.iter().zip(expected) {
        let key = expected.idempotency_key;
        item.assert_created(&topic, key);
        let record = record_at(&in_kafka, item);
        assert_eq!(record.key.as_deref(), expected.key, "{key}: the record key");
        assert_eq!(
            record.value, expected.value,
            "{key}: the value, byte for byte"
        );
        let content_type = record.header("content-type");
        assert_eq!(content_type, Some(expected.content_type), "{key}");
        assert_eq!(record.header("idempotency-key"), Some(key.as_bytes()));
    }
    let first = record_at(&in_kafka, &results[0]);
    assert_eq!(
        first.header("Trace-Id"),
        Some(&b"abc"[..]),
        "header names are kept as given: {first:?}"
    );
    assert_eq!(first.header("source"), Some(&b"checkout"[..]));
}

#[tokio::test]
async fn one_bad_event_fails_alone_and_leaves_its_key_free() {
    let settings = Settings {
        max_body_bytes: 1024,
        ..test_settings()
    };
    let app = TestApp::spawn_default(settings).await;
    let topic = topic("batch-bad").await;
    let b64 = |bytes: &[u8]| STANDARD.encode(bytes);
    // A JSON string of n bytes as the value's text.
    let text_of = |n: usize| Value::String("t".repeat(n - 2));
    let fine = json!({"n": 1});
    // (the event, its answer: status and problem code, or None for a code the contract leaves
    // open, and the event fixed, where its key is one to reuse).
    let cases: Vec<(Value, u16, Option<&str>, Option<Value>)> = vec![
        (event("ok-1", fine.clone()), 201, None, None),
        (
            event("has space", fine.clone()),
            400,
            Some("invalid-idempotency-key"),
            None,
        ),
        (
            json!({"idempotency_key": "kafka-key-number", "key": 42, "value": fine}),
            400,
            None,
            Some(json!({"idempotency_key": "kafka-key-number", "key": "42", "value": fine})),
        ),
        (
            json!({"idempotency_key": "reserved-key", "headers": {"idempotency-key": "x"}, "value": fine}),
            400,
            Some("invalid-header"),
            Some(json!({"idempotency_key": "reserved-key", "headers": {"x": "x"}, "value": fine})),
        ),
        (
            json!({"idempotency_key": "reserved-type", "headers": {"content-type": "text/plain"}, "value": fine}),
            400,
            Some("invalid-header"),
            Some(event("reserved-type", fine.clone())),
        ),
        (
            json!({"idempotency_key": "reserved-dlt", "headers": {"dlt-failure-id": "01FORGED"}, "value": fine}),
            400,
            Some("invalid-header"),
            Some(event("reserved-dlt", fine.clone())),
        ),
        (
            json!({"idempotency_key": "header-number", "headers": {"n": 1}, "value": fine}),
            400,
            None,
            Some(json!({"idempotency_key": "header-number", "headers": {"n": "1"}, "value": fine})),
        ),
        (
            json!({"idempotency_key": "both", "value": fine, "value_base64": "AA=="}),
            400,
            None,
            Some(event("both", fine.clone())),
        ),
        (
            json!({"idempotency_key": "neither", "key": "k"}),
            400,
            None,
            Some(json!({"idempotency_key": "neither", "key": "k", "value": fine})),
        ),
        (
            json!({"idempotency_key": "bad-base64", "value_base64": "not base64!"}),
            400,
            None,
            Some(json!({"idempotency_key": "bad-base64", "value_base64": b64(b"not base64!")})),
        ),
        (
            json!({"idempotency_key": "json-type", "value_base64": b64(b"{not json"),
                   "content_type": "application/json"}),
            400,
            Some("invalid-json"),
            Some(
                json!({"idempotency_key": "json-type", "value_base64": b64(b"{not json"),
                        "content_type": "text/plain"}),
            ),
        ),
        (
            event("too-large-json", text_of(1025)),
            413,
            Some("payload-too-large"),
            Some(event("too-large-json", text_of(1024))),
        ),
        (
            json!({"idempotency_key": "too-large-bytes", "value_base64": b64(&[7; 1025])}),
            413,
            Some("payload-too-large"),
            Some(json!({"idempotency_key": "too-large-bytes", "value_base64": b64(&[7; 1024])})),
        ),
        (
            json!({"idempotency_key": "unknown-field", "value": fine, "partition": 2}),
            400,
            Some("invalid-body"),
            Some(event("unknown-field", fine.clone())),
        ),
        (
            json!({"value": fine}),
            400,
            Some("missing-idempotency-key"),
            None,
        ),
        (
            json!({"idempotency_key": 7, "value": fine}),
            400,
            Some("invalid-idempotency-key"),
            None,
        ),
        (event("ok-2", text_of(1024)), 201, None, None),
        (
            json!({"idempotency_key": "ok-3", "value_base64": b64(&[8; 1024])}),
            201,
            None,
            None,
        ),
    ];
    let events: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();

    let reply = app.post_batch(&topic, batch(&events)).await;

    let answers = results(&reply, cases.len());
    for ((event, status, code, _), item) in cases.iter().zip(&answers) {
        // The key as sent, or null where it was missing or not a string.
        let sent = match &event["idempotency_key"] {
            Value::String(key) => Value::String(key.clone()),
            _ => Value::Null,
        };
        assert_eq!(item.idempotency_key, sent, "{item:?}");
        match (status, code) {
            (201, _) => {
                item.assert_created(&topic, sent.as_str().unwrap());
            }
            (status, Some(code)) => item.assert_problem(*status, code),
            (status, None) => {
                item.assert_some_problem(*status);
            }
        }
    }
    let in_kafka = records(&topic);
    assert_eq!(
        keys_in(&in_kafka),
        ["ok-1", "ok-2", "ok-3"],
        "only the good events are in Kafka"
    );
    assert_eq!(
        record_at(&in_kafka, &answers[cases.len() - 1]).value,
        [8; 1024]
    );

    // Nothing was claimed for a refused event: each fixed one goes through under its key.
    let fixed: Vec<Value> = cases.iter().filter_map(|c| c.3.clone()).collect();
    let again = app.post_batch(&topic, batch(&fixed)).await;
    for (item, event) in results(&again, fixed.len()).iter().zip(&fixed) {
        item.assert_created(&topic, event["idempotency_key"].as_str().unwrap());
    }
    assert_eq!(records(&topic).len(), 3 + fixed.len());
}

#[tokio::test]
async fn events_with_one_kafka_key_land_in_one_partition_in_batch_order() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic("batch-order").await;
    let events: Vec<Value> = (0..50)
        .map(|i| json!({"idempotency_key": format!("seq-{i:02}"), "key": "one-customer", "value": {"seq": i}}))
        .collect();

    let reply = app.post_batch(&topic, batch(&events)).await;

    let results = results(&reply, 50);
    let places: Vec<(i32, i64)> = results
        .iter()
        .enumerate()
        .map(|(i, item)| item.assert_created(&topic, &format!("seq-{i:02}")))
        .collect();
    let in_kafka = records(&topic);
    assert_eq!(in_kafka.len(), 50);
    let partition = in_kafka[0].partition;
    assert!(
        in_kafka.iter().all(|r| r.partition == partition),
        "one Kafka key, one partition: {in_kafka:?}"
    );
    // Read in offset order, the values are in batch order, where the results said.
    for (i, record) in in_kafka.iter().enumerate() {
        assert_eq!(record.value, format!(r#"{{"seq":{i}}}"#).as_bytes());
        assert_eq!((record.partition, record.offset), places[i], "event {i}");
    }
}
