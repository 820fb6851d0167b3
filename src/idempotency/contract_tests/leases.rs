//! The contract of what keeps a key from being published twice while its owner is slow:
//! renewing a lease, suspecting an owner before taking its key over, settling again after a
//! lost reply, and pinning a key that may have reached Kafka until an operator acts.

use super::*;
use crate::idempotency::Renewal;

contract!(a_suspected_owner_that_renews_keeps_its_key, SHORT_LEASE);
contract!(a_renewed_lease_is_not_suspected, SHORT_LEASE);
contract!(only_the_owner_renews_and_only_while_in_flight, LONG);
contract!(a_settle_repeated_by_its_owner_changes_nothing, LONG);
contract!(a_failed_key_is_pinned_until_an_operator_acts, SHORT_TTL);
contract!(only_a_failed_key_with_its_event_is_unpinned, LONG);

/// Redis stalled past the lease, and a claim queued during the stall ran before the owner's
/// renewal: the owner renews as soon as it can, and keeps its key.
async fn a_suspected_owner_that_renews_keeps_its_key(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    tokio::time::sleep(SHORT_LEASE.lease + Duration::from_millis(50)).await;
    assert_eq!(
        in_flight(claim(store, &key, FP, "b").await).0,
        SHORT_LEASE.grace
    );
    assert_eq!(
        store.renew(scoped(&topic), &key, "a").await.unwrap(),
        Renewal::Renewed
    );
    // Past that suspicion's grace (and past the renewed lease too): no takeover, only a fresh
    // suspicion with a grace of its own.
    tokio::time::sleep(SHORT_LEASE.grace + Duration::from_millis(50)).await;
    assert_eq!(
        in_flight(claim(store, &key, FP, "c").await).0,
        SHORT_LEASE.grace
    );
    let done = answer(Settlement::Done);
    assert!(settle(store, &key, "a", &done).await);
    assert_eq!(claim(store, &key, FP, "c").await, Claim::Replay(done));
}

async fn a_renewed_lease_is_not_suspected(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    // Renewed every half lease, the key outlives its first lease many times over.
    for _ in 0..6 {
        tokio::time::sleep(SHORT_LEASE.lease / 2).await;
        assert_eq!(
            store.renew(scoped(&topic), &key, "a").await.unwrap(),
            Renewal::Renewed
        );
        let (retry_after, _) = in_flight(claim(store, &key, FP, "b").await);
        assert!(
            retry_after > Duration::ZERO && retry_after <= SHORT_LEASE.lease,
            "a live lease, not a suspicion: {retry_after:?}"
        );
    }
    assert!(settle(store, &key, "a", &answer(Settlement::Done)).await);
}

async fn only_the_owner_renews_and_only_while_in_flight(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    assert_eq!(
        store.renew(scoped(&topic), &key, "b").await.unwrap(),
        Renewal::Lost
    );
    let unknown = self::key("unknown");
    assert_eq!(
        store.renew(scoped(&topic), &unknown, "a").await.unwrap(),
        Renewal::Lost
    );
    assert_eq!(
        store.status(scoped(&topic), &unknown).await.unwrap(),
        None,
        "renewing creates nothing"
    );
    assert_eq!(
        store.renew(scoped(&topic), &key, "a").await.unwrap(),
        Renewal::Renewed
    );
    let released = answer(Settlement::Released);
    assert!(settle(store, &key, "a", &released).await);
    assert_eq!(
        store.renew(scoped(&topic), &key, "a").await.unwrap(),
        Renewal::Settled
    );
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::Settled(released)),
        "renewing a settled key changes nothing"
    );
    // Reclaimed by another request: the first owner has lost it.
    claim(store, &key, FP, "b").await;
    assert_eq!(
        store.renew(scoped(&topic), &key, "a").await.unwrap(),
        Renewal::Lost
    );
    assert_eq!(
        store.renew(scoped(&topic), &key, "b").await.unwrap(),
        Renewal::Renewed
    );
}

/// A settle whose reply was lost (Redis stalled; the command ran later) is tried again: the
/// owner learns that its key is settled, and nothing changes.
async fn a_settle_repeated_by_its_owner_changes_nothing(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    let done = answer(Settlement::Done);
    assert!(settle(store, &key, "a", &done).await);
    assert!(
        settle(store, &key, "a", &done).await,
        "the same settle again"
    );
    let other_facts = StoredAnswer::Done(Delivered {
        position: Position {
            partition: 9,
            offset: 9,
        },
        timestamp_ms: 9,
    });
    assert!(settle(store, &key, "a", &other_facts).await);
    assert!(!settle(store, &key, "b", &done).await, "not the owner");
    assert!(!settle(store, &key, "a", &answer(Settlement::Failed)).await);
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::Settled(done.clone())),
        "the first answer stands"
    );
    assert_eq!(claim(store, &key, FP, "c").await, Claim::Replay(done));
}

/// A key that may have reached Kafka replays its failure until an operator acts, however long
/// that takes; after a retry or a discard it lives for the normal TTL.
async fn a_failed_key_is_pinned_until_an_operator_acts(store: &dyn IdempotencyStore) {
    let topic = topic("orders");
    let ttl = SHORT_TTL.ttl;
    let (pinned, retried, discarded, released) = (
        key("pinned"),
        key("retried"),
        key("discarded"),
        key("released"),
    );
    let failed = answer(Settlement::Failed);
    for key in [&pinned, &retried, &discarded] {
        claim(store, key, FP, "a").await;
        assert!(settle(store, key, "a", &failed).await);
    }
    claim(store, &released, FP, "a").await;
    assert!(settle(store, &released, "a", &answer(Settlement::Released)).await);
    tokio::time::sleep(ttl * 6 / 10).await;
    // The operator acts on two of them.
    let reclaimed = store
        .claim(scoped(&topic), &retried, FP, "operator", Claimant::Operator)
        .await
        .unwrap();
    assert!(matches!(reclaimed, Claim::Claimed { attempt: 2, .. }));
    assert!(settle(store, &retried, "operator", &answer(Settlement::Done)).await);
    assert!(store.unpin(scoped(&topic), &discarded, FP).await.unwrap());
    tokio::time::sleep(ttl * 6 / 10).await;

    // Past the TTL of the failure: only the released key is gone.
    assert_eq!(store.status(scoped(&topic), &released).await.unwrap(), None);
    for key in [&pinned, &discarded] {
        assert_eq!(
            claim(store, key, FP, "b").await,
            Claim::Replay(failed.clone()),
            "{key}"
        );
    }
    assert_eq!(
        claim(store, &retried, FP, "b").await,
        Claim::Replay(answer(Settlement::Done))
    );
    tokio::time::sleep(ttl * 6 / 10).await;

    // Past the TTL of the operator's actions: those keys are gone, the pinned one stays.
    for key in [&retried, &discarded] {
        assert_eq!(
            store.status(scoped(&topic), key).await.unwrap(),
            None,
            "{key}"
        );
    }
    assert_eq!(claim(store, &pinned, FP, "b").await, Claim::Replay(failed));
}

async fn only_a_failed_key_with_its_event_is_unpinned(store: &dyn IdempotencyStore) {
    let topic = topic("orders");
    assert!(
        !store
            .unpin(scoped(&topic), &key("unknown"), FP)
            .await
            .unwrap()
    );
    assert_eq!(
        store.status(scoped(&topic), &key("unknown")).await.unwrap(),
        None
    );
    let in_flight = key("in-flight");
    claim(store, &in_flight, FP, "a").await;
    assert!(!store.unpin(scoped(&topic), &in_flight, FP).await.unwrap());
    for settlement in [Settlement::Done, Settlement::Released] {
        let key = key(settlement.as_str());
        claim(store, &key, FP, "a").await;
        assert!(settle(store, &key, "a", &answer(settlement)).await);
        assert!(
            !store.unpin(scoped(&topic), &key, FP).await.unwrap(),
            "{key}"
        );
    }
    let failed = key("failed");
    claim(store, &failed, FP, "a").await;
    assert!(settle(store, &failed, "a", &answer(Settlement::Failed)).await);
    assert!(
        !store
            .unpin(scoped(&topic), &failed, OTHER_FP)
            .await
            .unwrap()
    );
    assert!(store.unpin(scoped(&topic), &failed, FP).await.unwrap());
    assert_eq!(
        claim(store, &failed, FP, "b").await,
        Claim::Replay(answer(Settlement::Failed)),
        "unpinned, it still replays its failure"
    );
}
