//! Failure records across principals, and each client's share of the in-flight requests, on
//! librdkafka's mock cluster (brokers down on demand, round trips as slow as asked).

use std::time::Duration;

use super::*;
use common::mock::MockKafka;

const TOPIC: &str = "auth-ops";

fn clients() -> AuthFile {
    AuthFile::new(&[
        ("alpha", "k-alpha", "produce = [\"*\"]"),
        ("beta", "k-beta", "produce = [\"*\"]"),
        ("ops", "k-ops", "operator = true"),
    ])
}

#[tokio::test]
async fn failure_records_answer_their_owner_and_operators_and_name_the_operator() {
    let kafka = MockKafka::start(TOPIC);
    let file = clients();
    let app = kafka
        .spawn(Settings {
            delivery_timeout_ms: 2_000,
            wait_timeout_ms: 15_000,
            ..file.settings()
        })
        .await;
    let (alpha, beta, ops) = (
        app.as_client("k-alpha"),
        app.as_client("k-beta"),
        app.as_client("k-ops"),
    );
    kafka.warm_up(&alpha).await;

    kafka.all_down();
    let failed = alpha.post_event(TOPIC, "k-down", r#"{"n":1}"#).await;
    kafka.all_up();
    kafka.wait_until_publishing(&alpha).await;
    assert!(matches!(failed.status, 503 | 504), "{}", failed.body);
    let id = failed.json()["failure_id"].as_str().unwrap().to_owned();

    // The owner and operators read it; another client learns nothing, not even that it exists.
    let own = alpha.get_failure(&id).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.json()["event"]["principal"], "alpha");
    assert_eq!(ops.get_failure(&id).await.status, 200);
    beta.get_failure(&id).await.assert_problem(403, "forbidden");
    beta.get_failure("01JAAAAAAAAAAAAAAAAAAAAAAA")
        .await
        .assert_problem(403, "forbidden");
    // Listing, retrying and discarding are for operators, the owner included.
    alpha
        .list_failures("")
        .await
        .assert_problem(403, "forbidden");
    alpha
        .retry_failure(&id)
        .await
        .assert_problem(403, "forbidden");

    // The resolution names the operator's principal, whatever the body says.
    let discarded = ops
        .discard_failure_as(&id, "duplicate of k-1", "mallory")
        .await;
    assert_eq!(discarded.status, 200, "{}", discarded.body);
    assert_eq!(discarded.json()["resolution"]["by"], "ops");
    assert_eq!(kafka.records_with_key("k-down").len(), 0);
}

#[tokio::test]
async fn one_client_cannot_take_every_in_flight_request() {
    let kafka = MockKafka::start(TOPIC);
    let file = clients();
    let mut settings = file.settings();
    settings.max_in_flight = 8;
    settings.auth.max_in_flight_per_client = Some(2);
    let app = kafka.spawn(settings).await;
    let (alpha, beta) = (app.as_client("k-alpha"), app.as_client("k-beta"));
    kafka.warm_up(&alpha).await;

    // Each acknowledgement now takes a second: alpha's two requests hold its share meanwhile.
    kafka.set_rtt(Duration::from_millis(1_000));
    let held: Vec<_> = (0..2)
        .map(|n| tokio::spawn(alpha.post_event(TOPIC, &format!("held-{n}"), "{}")))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = alpha.post_event(TOPIC, "shed", "{}").await;
    shed.assert_problem(503, "overloaded");
    assert!(
        shed.body.contains("--max-in-flight-per-client"),
        "{}",
        shed.body
    );
    assert!(shed.header("retry-after").is_some());
    // Another client still gets through.
    let other = beta.post_event(TOPIC, "other", "{}").await;
    assert_eq!(other.status, 201, "{}", other.body);
    for request in held {
        assert_eq!(request.await.unwrap().status, 201);
    }
    kafka.set_rtt(Duration::ZERO);
    assert_eq!(kafka.records_with_key("shed").len(), 0);
    assert_eq!(kafka.records_with_key("other").len(), 1);
    // The refused key was never claimed.
    let retried = alpha.post_event(TOPIC, "shed", "{}").await;
    assert_eq!(retried.status, 201, "{}", retried.body);
}
