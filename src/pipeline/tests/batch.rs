//! A batch through the pipeline: each event answered as it would be alone, in order, with the
//! claimed ones in Kafka once and in batch order.

use super::*;

fn keyed(key: &str, kafka_key: &'static str, value: &'static str) -> Event {
    Event {
        key: Some(Bytes::from_static(kafka_key.as_bytes())),
        ..event(key, value)
    }
}

#[tokio::test]
async fn each_event_of_a_batch_is_answered_as_alone_and_published_once() {
    let h = Harness::start();
    let topic = TopicName::parse(TOPIC).unwrap();
    let Outcome::Persisted(first) = h.pipeline.submit(event("sent-alone", "{}")).await else {
        panic!("expected the single event to be persisted");
    };
    let batch = vec![
        event("b-1", r#"{"n":1}"#),
        event("sent-alone", "{}"),
        event("b-2", r#"{"n":2}"#),
        event("sent-alone-reused", "{}"),
    ];
    // The fourth key names another event once it is settled with this one.
    assert!(matches!(
        h.pipeline.submit(event("sent-alone-reused", "[]")).await,
        Outcome::Persisted(_)
    ));

    let outcomes = h.pipeline.submit_batch(&topic, batch).await.unwrap();

    assert_eq!(outcomes.len(), 4);
    assert!(matches!(outcomes[0], Outcome::Persisted(_)), "{outcomes:?}");
    assert_eq!(outcomes[1], Outcome::Replayed(first.stored_answer()));
    assert!(matches!(outcomes[2], Outcome::Persisted(_)), "{outcomes:?}");
    assert_eq!(outcomes[3], Outcome::Refused(Refusal::Mismatch));
    let keys: Vec<String> = h.records().into_iter().map(|r| r.2).collect();
    for key in ["b-1", "b-2", "sent-alone", "sent-alone-reused"] {
        assert_eq!(
            keys.iter().filter(|k| *k == key).count(),
            1,
            "{key}: {keys:?}"
        );
    }

    // The batch again: every event replays its first answer, and nothing is published.
    let again = h
        .pipeline
        .submit_batch(
            &topic,
            vec![event("b-1", r#"{"n":1}"#), event("b-2", r#"{"n":2}"#)],
        )
        .await
        .unwrap();
    for (outcome, first) in again.iter().zip([&outcomes[0], &outcomes[2]]) {
        let Outcome::Persisted(receipt) = first else {
            unreachable!()
        };
        assert_eq!(*outcome, Outcome::Replayed(receipt.stored_answer()));
    }
    assert_eq!(h.records().len(), 4);
}

#[tokio::test]
async fn events_with_one_kafka_key_land_in_batch_order() {
    let h = Harness::start();
    let topic = TopicName::parse(TOPIC).unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("ordered-{i:02}")).collect();
    let batch = names
        .iter()
        .map(|name| Event {
            idempotency_key: IdempotencyKey::parse(name.as_bytes()).unwrap(),
            ..keyed("placeholder", "customer-42", "{}")
        })
        .collect();

    let outcomes = h.pipeline.submit_batch(&topic, batch).await.unwrap();

    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Persisted(_))));
    let mut records = h.records();
    records.sort_by_key(|r| (r.0, r.1));
    let in_kafka: Vec<String> = records.into_iter().map(|r| r.2).collect();
    assert_eq!(in_kafka, names, "one partition, in batch order");
}

#[tokio::test]
async fn events_without_a_report_in_time_are_accepted_and_settle_later() {
    let h = Harness::with(Options {
        wait_timeout: Duration::from_millis(200),
        ..Options::default()
    });
    let topic = TopicName::parse(TOPIC).unwrap();
    let warm = h.pipeline.submit(event("warm", "{}")).await;
    assert!(matches!(warm, Outcome::Persisted(_) | Outcome::Accepted));
    h.settled("warm").await;
    h.cluster
        .broker_round_trip_time(1, Duration::from_millis(1000))
        .unwrap();

    let outcomes = h
        .pipeline
        .submit_batch(&topic, vec![event("slow-1", "{}"), event("slow-2", "{}")])
        .await
        .unwrap();

    assert_eq!(outcomes, [Outcome::Accepted, Outcome::Accepted]);
    // A retry while the deliveries go on gets the same 202, not 409.
    assert_eq!(
        h.pipeline.submit(event("slow-1", "{}")).await,
        Outcome::Accepted
    );
    for key in ["slow-1", "slow-2"] {
        assert_eq!(h.settled(key).await.settlement(), Settlement::Done);
    }
    h.cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    assert_eq!(h.records().len(), 3);
}

#[tokio::test]
async fn an_unknown_topic_refuses_the_whole_batch_and_claims_nothing() {
    let h = Harness::start();
    let missing = TopicName::parse("no-such-topic").unwrap();
    let event = Event {
        topic: missing.clone(),
        ..event("k-1", "{}")
    };
    assert_eq!(
        h.pipeline.submit_batch(&missing, vec![event]).await,
        Err(Refusal::TopicNotFound)
    );
    assert_eq!(
        h.store
            .status(scoped(&missing), &IdempotencyKey::parse(b"k-1").unwrap())
            .await
            .unwrap(),
        None
    );
}
