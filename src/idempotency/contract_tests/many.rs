//! The contract of claiming and settling many keys in one call: one answer per key, in order,
//! each exactly what the one-key call would have said.

use super::*;
use crate::idempotency::{ClaimRequest, SettleRequest};

contract!(each_key_of_a_batch_gets_its_own_answer_in_order, LONG);
contract!(a_batch_settles_what_its_owners_hold_and_nothing_else, LONG);
contract!(an_empty_batch_is_no_call_at_all, LONG);

/// Fresh, replayed, reused, in-flight and released keys in one claim: each gets the answer a
/// claim of its own would get, at its own place.
async fn each_key_of_a_batch_gets_its_own_answer_in_order(store: &dyn IdempotencyStore) {
    let orders = topic("orders");
    let keys: Vec<IdempotencyKey> = ["done", "fresh", "reused", "busy", "released", "fresh-2"]
        .into_iter()
        .map(key)
        .collect();
    for (name, settlement) in [("done", Settlement::Done), ("reused", Settlement::Done)] {
        claim(store, &key(name), FP, "a").await;
        assert!(settle(store, &key(name), "a", &answer(settlement)).await);
    }
    claim(store, &key("busy"), FP, "a").await;
    claim(store, &key("released"), FP, "a").await;
    assert!(settle(store, &key("released"), "a", &answer(Settlement::Released)).await);

    let fingerprints = [FP, FP, "another event", FP, FP, FP];
    let requests: Vec<ClaimRequest<'_>> = keys
        .iter()
        .zip(fingerprints)
        .map(|(key, fingerprint)| ClaimRequest {
            scope: scoped(&orders),
            key,
            fingerprint,
            owner: "b",
        })
        .collect();
    let claims = store.claim_many(&requests, Claimant::Client).await.unwrap();

    assert_eq!(claims.len(), 6);
    assert_eq!(claims[0], Claim::Replay(answer(Settlement::Done)));
    assert_eq!(
        claims[1],
        Claim::Claimed {
            attempt: 1,
            took_over: false
        }
    );
    assert_eq!(claims[2], Claim::Mismatch);
    assert!(!in_flight(claims[3].clone()).1);
    assert_eq!(
        claims[4],
        Claim::Claimed {
            attempt: 2,
            took_over: false
        }
    );
    assert_eq!(
        claims[5],
        Claim::Claimed {
            attempt: 1,
            took_over: false
        }
    );
    // The fresh keys are "b"'s now.
    assert!(settle(store, &key("fresh"), "b", &answer(Settlement::Done)).await);
}

/// One settle for many keys: each key is settled only by its owner, and a key settled the same
/// way before (a lost reply) answers true again.
async fn a_batch_settles_what_its_owners_hold_and_nothing_else(store: &dyn IdempotencyStore) {
    let orders = topic("orders");
    let keys: Vec<IdempotencyKey> = (0..5).map(|i| key(&format!("k-{i}"))).collect();
    for key in &keys[..4] {
        claim(store, key, FP, "a").await;
    }
    assert!(settle(store, &keys[3], "a", &answer(Settlement::Done)).await);
    let answers = [
        answer(Settlement::Done),
        answer(Settlement::Failed),
        answer(Settlement::Released),
        answer(Settlement::Done),
        answer(Settlement::Done),
    ];
    let owners = ["a", "a", "a", "a", "a"];
    let mut requests: Vec<SettleRequest<'_>> = keys
        .iter()
        .zip(&answers)
        .zip(owners)
        .map(|((key, answer), owner)| SettleRequest {
            scope: scoped(&orders),
            key,
            owner,
            answer,
        })
        .collect();
    // Not the owner of k-2.
    requests[2].owner = "b";

    let settled = store.settle_many(&requests).await.unwrap();

    // k-3 was settled the same way already; k-4 was never claimed.
    assert_eq!(settled, [true, true, false, true, false]);
    for (key, expected) in keys.iter().zip([
        Some(KeyStatus::Settled(answer(Settlement::Done))),
        Some(KeyStatus::Settled(answer(Settlement::Failed))),
        Some(KeyStatus::InFlight),
        Some(KeyStatus::Settled(answer(Settlement::Done))),
        None,
    ]) {
        assert_eq!(
            store.status(scoped(&orders), key).await.unwrap(),
            expected,
            "{key}"
        );
    }
}

async fn an_empty_batch_is_no_call_at_all(store: &dyn IdempotencyStore) {
    assert_eq!(
        store.claim_many(&[], Claimant::Client).await.unwrap(),
        vec![]
    );
    assert_eq!(store.settle_many(&[]).await.unwrap(), Vec::<bool>::new());
}
