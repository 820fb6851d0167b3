//! The contract of claiming and settling many keys in one call: one answer per key, in order,
//! each exactly what the one-key call would have said.

use super::*;
use crate::idempotency::{ClaimRequest, SettleRequest, StoreError};

contract!(each_key_of_a_batch_gets_its_own_answer_in_order, LONG);
contract!(a_batch_settles_what_its_owners_hold_and_nothing_else, LONG);
contract!(an_empty_batch_is_no_call_at_all, LONG);
contract!(
    concurrent_single_claims_and_settles_each_get_their_own_answer,
    LONG
);

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
    let claims = all_answered(store.claim_many(&requests, Claimant::Client).await);

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

    let settled = all_answered(store.settle_many(&requests).await);

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
    assert!(store.claim_many(&[], Claimant::Client).await.is_empty());
    assert!(store.settle_many(&[]).await.is_empty());
}

/// Every key's answer, where the store answered for every key.
fn all_answered<T>(answers: Vec<Result<T, StoreError>>) -> Vec<T> {
    answers
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("the store answers for every key")
}

/// Many requests' own claims and settles at once, each for its key with its own owner (the
/// Redis store sends such requests together in shared calls): every one gets exactly the answer
/// it would get alone.
async fn concurrent_single_claims_and_settles_each_get_their_own_answer(
    store: &dyn IdempotencyStore,
) {
    const KEYS: usize = 150;
    let keys: Vec<IdempotencyKey> = (0..KEYS).map(|i| key(&format!("c-{i}"))).collect();
    let owners: Vec<String> = (0..KEYS).map(|i| format!("owner-{i}")).collect();
    // Every third key is done already, every fifth (not third) in flight under another owner.
    for (i, key) in keys.iter().enumerate() {
        if i.is_multiple_of(3) {
            claim(store, key, FP, "earlier").await;
            assert!(settle(store, key, "earlier", &answer(Settlement::Done)).await);
        } else if i.is_multiple_of(5) {
            claim(store, key, FP, "earlier").await;
        }
    }
    // Every seventh request carries another event: a mismatch where a record is there.
    let fingerprint = |i: usize| if i.is_multiple_of(7) { OTHER_FP } else { FP };

    let claims = futures::future::join_all(
        (0..KEYS).map(|i| claim(store, &keys[i], fingerprint(i), &owners[i])),
    )
    .await;

    for (i, claim) in claims.iter().enumerate() {
        let recorded = i.is_multiple_of(3) || i.is_multiple_of(5);
        let expected = if recorded && i.is_multiple_of(7) {
            "mismatch"
        } else if i.is_multiple_of(3) {
            "replayed"
        } else if i.is_multiple_of(5) {
            "conflict"
        } else {
            // Fresh keys, whatever their event.
            "claimed"
        };
        assert_eq!(claim.label(), expected, "key {i}: {claim:?}");
    }
    // Each settles with an answer of its own; only the claimed ones are theirs to settle.
    let answers: Vec<StoredAnswer> = (0..KEYS)
        .map(|i| {
            StoredAnswer::Done(Delivered {
                position: Position {
                    partition: (i % 3) as i32,
                    offset: i as i64,
                },
                timestamp_ms: 1_796_000_000_000 + i as i64,
            })
        })
        .collect();
    let settled = futures::future::join_all(
        (0..KEYS).map(|i| settle(store, &keys[i], &owners[i], &answers[i])),
    )
    .await;
    for (i, settled) in settled.into_iter().enumerate() {
        let claimed = claims[i].label() == "claimed";
        assert_eq!(settled, claimed, "key {i}");
        if claimed {
            assert_eq!(
                store
                    .status(scoped(&topic("orders")), &keys[i])
                    .await
                    .unwrap(),
                Some(KeyStatus::Settled(answers[i].clone())),
                "key {i}"
            );
        }
    }
}
