//! Who may send a batch where, and how fast: the batch route is guarded like the single one,
//! and a client's rate counts events, not requests.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn a_batch_needs_credentials_and_a_grant_for_its_topic() {
    let (allowed, other) = (topic("batch-ok").await, topic("batch-other").await);
    let file = AuthFile::new(&[("narrow", "k-narrow", &format!("produce = [\"{allowed}\"]"))]);
    let settings = file.settings();
    let prefix = settings.redis_key_prefix.clone();
    let app = TestApp::spawn_default(settings).await;
    let narrow = app.as_client("k-narrow");
    let body = batch(&[event("a-1", json!({"n": 1}))]);

    narrow
        .post_batch(&other, &body)
        .await
        .assert_problem(403, "topic-forbidden");
    // A forbidden topic is refused before the body is looked at.
    narrow
        .post_batch(&other, "{not json")
        .await
        .assert_problem(403, "topic-forbidden");
    let anonymous = app.post_batch(&allowed, &body).await;
    anonymous.assert_problem(401, "unauthenticated");
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some(r#"Bearer realm="ackgate""#)
    );
    app.as_client("k-wrong")
        .post_batch(&allowed, &body)
        .await
        .assert_problem(401, "unauthenticated");
    assert_nothing_claimed(&prefix).await;

    let reply = narrow.post_batch(&allowed, &body).await;
    results(&reply, 1)[0].assert_created(&allowed, "a-1");
    assert_eq!(keys_in(&records(&allowed)), ["a-1"]);
    assert!(
        records(&other).is_empty(),
        "nothing reached the forbidden topic"
    );
}

#[tokio::test]
async fn events_past_the_clients_rate_get_429_and_only_the_admitted_are_in_kafka() {
    let topic = topic("batch-rate").await;
    let file = AuthFile::new(&[("slow", "k-slow", "produce = [\"*\"]\nrate = 5")]);
    let app = TestApp::spawn_default(file.settings()).await;
    let slow = app.as_client("k-slow");
    let keys: Vec<String> = (0..20).map(|i| format!("rate-{i:02}")).collect();
    let events: Vec<Value> = keys.iter().map(|k| event(k, json!({"k": k}))).collect();

    let reply = slow.post_batch(&topic, batch(&events)).await;

    let answers = results(&reply, 20);
    let admitted: Vec<String> = keys
        .iter()
        .zip(&answers)
        .filter(|(_, item)| item.status == 201)
        .map(|(key, _)| key.clone())
        .collect();
    assert!(
        !admitted.is_empty() && admitted.len() < 20,
        "a batch of 20 at 5 events per second is admitted in part: {answers:?}"
    );
    for (key, item) in keys.iter().zip(&answers) {
        if item.status == 201 {
            item.assert_created(&topic, key);
            continue;
        }
        item.assert_problem(429, "rate-limited");
        assert!(
            item.retry_after.is_some_and(|secs| secs >= 1),
            "a 429 says when to retry: {item:?}"
        );
    }
    // Admission takes the events in batch order: the client resends the tail.
    assert!(
        answers[..admitted.len()].iter().all(|i| i.status == 201),
        "the admitted events come first: {answers:?}"
    );
    assert_eq!(
        keys_in(&records(&topic)),
        admitted,
        "exactly the 201s are in Kafka"
    );

    // A refused key was not claimed: once the rate allows, it is a first answer.
    let refused = &keys[admitted.len()];
    let wait = answers[admitted.len()].retry_after.unwrap();
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(100)).await;
    let retry = slow
        .post_batch(&topic, batch(&[events[admitted.len()].clone()]))
        .await;
    results(&retry, 1)[0].assert_created(&topic, refused);
}
