//! A batch whose acknowledgements outlive the wait timeout (202 per event, on librdkafka's mock
//! cluster), and the metrics a batch leaves.

use std::time::{Duration, Instant};

use ackgate::settings::Settings;
use common::mock::MockKafka;

use super::*;

const TOPIC: &str = "batch-slow";

#[tokio::test]
async fn events_not_acknowledged_within_the_wait_timeout_get_202_and_settle() {
    let kafka = MockKafka::start(TOPIC);
    let settings = Settings {
        wait_timeout_ms: 500,
        ..test_settings()
    };
    let app = kafka.spawn(settings).await;
    kafka.warm_up(&app).await;
    kafka.set_rtt(Duration::from_millis(2_500));
    let keys = ["slow-1", "slow/2?", "slow-3"];
    let events: Vec<Value> = keys.iter().map(|k| event(k, json!({"k": k}))).collect();

    let accepted = results(&app.post_batch(TOPIC, batch(&events)).await, 3);

    let mut links = Vec::new();
    for (item, key) in accepted.iter().zip(keys) {
        assert_eq!(item.status, 202, "{item:?}");
        assert_eq!(item.idempotency_key, key);
        let body = item.body();
        assert_eq!(body["status"], "accepted", "{body}");
        let link = format!("/v1/topics/{TOPIC}/events/{}", path_segment(key));
        assert_eq!(body["links"]["status"], link.as_str(), "{body}");
        links.push(link);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut settled = Vec::new();
    for link in &links {
        let status = loop {
            let status = app.get(link).await.json();
            if status["state"] != "in_flight" {
                break status;
            }
            assert!(Instant::now() < deadline, "{link} settles");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(status["state"], "persisted", "{status}");
        assert_eq!(status["answer_status"], 201, "{status}");
        settled.push(status["answer"].clone());
    }
    kafka.set_rtt(Duration::ZERO);

    // Once settled, the batch again gets the final answers, replayed, and publishes nothing.
    let again = results(&app.post_batch(TOPIC, batch(&events)).await, 3);
    for ((item, answer), key) in again.iter().zip(&settled).zip(keys) {
        assert_eq!((item.status, item.replayed), (201, Some(true)), "{item:?}");
        assert_eq!(&item.body(), answer, "the stored answer");
        let in_kafka = kafka.records_with_key(key);
        assert_eq!(in_kafka.len(), 1, "{key}: {in_kafka:?}");
        assert_eq!(
            (in_kafka[0].partition, in_kafka[0].offset),
            item.place(),
            "{key}"
        );
    }
}

/// The sum of the samples of `name` whose labels include `label`.
fn sample_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_events_per_batch_and_results_by_status() {
    let app = TestApp::spawn_default(test_settings()).await;
    let topic = topic("batch-metrics").await;
    let events = [
        event("m-1", json!({"n": 1})),
        event("m 2", json!({"n": 2})),
        event("m-3", json!({"n": 3})),
    ];
    let answers = results(&app.post_batch(&topic, batch(&events)).await, 3);
    assert_eq!(
        answers.iter().map(|i| i.status).collect::<Vec<_>>(),
        [201, 400, 201]
    );

    let metrics = app.metrics().await.body;

    for name in ["ackgate_batch_events_bucket", "ackgate_batch_events_count"] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The recorder may be shared by the tests of this binary: at least this batch's results.
    let results_total = "ackgate_batch_results_total";
    assert!(
        sample_sum(&metrics, results_total, r#"status="201""#) >= 2.0,
        "{metrics}"
    );
    assert!(
        sample_sum(&metrics, results_total, r#"status="400""#) >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/v1/topics/{topic}/events:batch""#),
        "requests are labelled with the batch route's template"
    );
}
