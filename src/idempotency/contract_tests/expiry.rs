//! The contract of time: a lease that runs out is taken over (after its grace), a late owner
//! still settles a key nobody took, and a record lives for its TTL after its last settle.

use super::*;

contract!(an_expired_lease_is_taken_over, SHORT_LEASE);
contract!(a_late_owner_settles_if_nobody_took_over, SHORT_LEASE);
contract!(a_record_lives_for_the_ttl_after_its_last_settle, SHORT_TTL);

async fn an_expired_lease_is_taken_over(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    store
        .mark_accepted(scoped(&topic), &key, "a")
        .await
        .unwrap();
    assert!(in_flight(claim(store, &key, FP, "b").await).1);
    tokio::time::sleep(SHORT_LEASE.lease + Duration::from_millis(150)).await;

    // The record is still there: another event is still refused.
    assert_eq!(claim(store, &key, OTHER_FP, "b").await, Claim::Mismatch);
    // The first claim after the lease only suspects the owner, and says how long it has left.
    let (retry_after, accepted) = in_flight(claim(store, &key, FP, "b").await);
    assert!(accepted, "the owner's 202 still stands");
    assert_eq!(retry_after, SHORT_LEASE.grace);
    let (retry_after, _) = in_flight(claim(store, &key, FP, "b").await);
    assert!(!retry_after.is_zero() && retry_after <= SHORT_LEASE.grace);
    // The owner did not renew within the grace: it is gone.
    tokio::time::sleep(SHORT_LEASE.grace + Duration::from_millis(50)).await;
    assert_eq!(
        claim(store, &key, FP, "b").await,
        Claim::Claimed {
            attempt: 2,
            took_over: true
        }
    );
    // The new owner has not been answered yet, whatever the crashed one was.
    let (retry_after, accepted) = in_flight(claim(store, &key, FP, "c").await);
    assert!(!accepted);
    assert!(!retry_after.is_zero() && retry_after <= SHORT_LEASE.lease);

    // The old owner is out: its mark and its settle change nothing.
    store
        .mark_accepted(scoped(&topic), &key, "a")
        .await
        .unwrap();
    assert!(!in_flight(claim(store, &key, FP, "c").await).1);
    assert!(!settle(store, &key, "a", &answer(Settlement::Failed)).await);
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::InFlight)
    );

    let done = answer(Settlement::Done);
    assert!(settle(store, &key, "b", &done).await);
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::Settled(done))
    );
}

async fn a_late_owner_settles_if_nobody_took_over(store: &dyn IdempotencyStore) {
    let key = key("k-1");
    claim(store, &key, FP, "a").await;
    tokio::time::sleep(SHORT_LEASE.lease + Duration::from_millis(150)).await;
    let done = answer(Settlement::Done);
    assert!(settle(store, &key, "a", &done).await);
    assert_eq!(claim(store, &key, FP, "b").await, Claim::Replay(done));
}

async fn a_record_lives_for_the_ttl_after_its_last_settle(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    let ttl = SHORT_TTL.ttl;
    // An in-flight record that is never settled expires too.
    let abandoned = self::key("abandoned");
    claim(store, &abandoned, FP, "a").await;
    claim(store, &key, FP, "a").await;
    tokio::time::sleep(ttl / 2).await;
    // Settling refreshes the TTL: the record outlives the claim's TTL.
    let done = answer(Settlement::Done);
    assert!(settle(store, &key, "a", &done).await);
    tokio::time::sleep(ttl * 6 / 10).await;
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::Settled(done.clone()))
    );
    assert_eq!(claim(store, &key, FP, "b").await, Claim::Replay(done));
    assert_eq!(
        store.status(scoped(&topic), &abandoned).await.unwrap(),
        None
    );
    assert_eq!(
        claim(store, &abandoned, FP, "b").await,
        Claim::Claimed {
            attempt: 1,
            took_over: false
        }
    );
    tokio::time::sleep(ttl * 6 / 10).await;

    // Gone: the key is new again, even for another event.
    assert_eq!(store.status(scoped(&topic), &key).await.unwrap(), None);
    assert_eq!(
        claim(store, &key, OTHER_FP, "c").await,
        Claim::Claimed {
            attempt: 1,
            took_over: false
        }
    );
}
