//! Holding a key until it is settled: the lease is renewed while a delivery is pending, and a
//! settle the store did not answer is tried again, for a persisted event and a failed one alike.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

#[tokio::test]
async fn a_delivery_that_outlasts_its_first_lease_keeps_its_key() {
    let lease = Duration::from_millis(600);
    let h = Harness::with(Options {
        lease: Some(lease),
        ..Options::default()
    });
    assert!(matches!(
        h.pipeline.submit(event("warm", "{}")).await,
        Outcome::Persisted(_)
    ));
    h.cluster
        .broker_round_trip_time(1, Duration::from_millis(2_000))
        .unwrap();
    let first = tokio::spawn({
        let pipeline = h.pipeline.clone();
        async move { pipeline.submit(event("k1", "{}")).await }
    });
    // Past the first lease, and past the grace a suspicion would give: an owner that did not
    // renew would have lost the key to the second of these requests.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    for _ in 0..2 {
        let again = h.pipeline.submit(event("k1", "{}")).await;
        assert!(
            matches!(again, Outcome::Refused(Refusal::InFlight { .. })),
            "{again:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let Outcome::Persisted(receipt) = first.await.unwrap() else {
        panic!("expected the slow event to be persisted");
    };
    h.cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let replay = h.pipeline.submit(event("k1", "{}")).await;
    assert!(
        matches!(&replay, Outcome::Replayed(a) if *a == receipt.stored_answer()),
        "{replay:?}"
    );
    let k1: Vec<_> = h.records().into_iter().filter(|r| r.2 == "k1").collect();
    assert_eq!(k1.len(), 1, "published once: {k1:?}");
}

#[tokio::test]
async fn a_settle_the_store_did_not_answer_is_tried_again() {
    let store = Arc::new(FlakySettle {
        inner: MemoryStore::new(LIFETIMES),
        failures_left: AtomicU32::new(0),
    });
    let h = Harness::with(Options {
        store: Some(store.clone()),
        ..Options::default()
    });
    let topic = TopicName::parse(TOPIC).unwrap();

    // Kafka took it: the client has its 201 at once, the key settles `done` later.
    store.failures_left.store(3, Ordering::SeqCst);
    let Outcome::Persisted(receipt) = h.pipeline.submit(event("persisted", "{}")).await else {
        panic!("expected the event to be persisted");
    };
    h.pipeline.tasks.close();
    h.pipeline.tasks.wait().await;
    h.pipeline.tasks.reopen();
    assert_eq!(store.failures_left.load(Ordering::SeqCst), 0);
    let key = IdempotencyKey::parse(b"persisted").unwrap();
    let status = store.inner.status(scoped(&topic), &key).await.unwrap();
    assert!(
        matches!(&status, Some(KeyStatus::Settled(a)) if *a == receipt.stored_answer()),
        "{status:?}"
    );

    // Kafka refused it: the client hears of it when the first settle failed, and the settle
    // goes on until the store answers.
    store.failures_left.store(3, Ordering::SeqCst);
    h.fail_produce(&[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED]);
    let Outcome::Failed(failure) = h.pipeline.submit(event("failed", "{}")).await else {
        panic!("expected a failure");
    };
    h.pipeline.tasks.close();
    h.pipeline.tasks.wait().await;
    assert_eq!(store.failures_left.load(Ordering::SeqCst), 0);
    let status = store
        .inner
        .status(scoped(&topic), &failure.idempotency_key)
        .await;
    assert!(
        matches!(status.as_ref().unwrap(), Some(KeyStatus::Settled(a)) if a.status() == failure.status()),
        "not left in flight: {status:?}"
    );
}

/// A store whose settle fails (as an unreachable Redis does) while `failures_left` lasts.
struct FlakySettle {
    inner: MemoryStore,
    failures_left: AtomicU32,
}

#[async_trait]
impl IdempotencyStore for FlakySettle {
    async fn claim(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
        owner: &str,
        claimant: Claimant,
    ) -> Result<Claim, StoreError> {
        self.inner
            .claim(scope, key, fingerprint, owner, claimant)
            .await
    }
    async fn mark_accepted(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.inner.mark_accepted(scope, key, owner).await
    }
    async fn status(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyStatus>, StoreError> {
        self.inner.status(scope, key).await
    }
    async fn settle(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        let failed = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failed.is_ok() {
            let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
            return Err(StoreError::Unavailable(timeout.into()));
        }
        self.inner.settle(scope, key, owner, answer).await
    }
    async fn renew(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<Renewal, StoreError> {
        self.inner.renew(scope, key, owner).await
    }
    async fn unpin(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> Result<bool, StoreError> {
        self.inner.unpin(scope, key, fingerprint).await
    }
    fn lifetimes(&self) -> Lifetimes {
        self.inner.lifetimes()
    }
    async fn health(&self) -> Result<StoreHealth, StoreError> {
        self.inner.health().await
    }
}
