//! The contract of [`IdempotencyStore`], written once and run against every backend.
//!
//! Each case is an async function of `&dyn IdempotencyStore`; [`contract!`] turns it into one
//! test per backend (`<case>::memory`, `<case>::redis`, `<case>::redis_cluster`), so that the
//! in-memory store of `ackgate dev` cannot drift from the Redis scripts it imitates, and a
//! cluster answers as one server does. The Redis store is the reference. The Redis tests use
//! `ACKGATE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) and the cluster tests
//! `ACKGATE_TEST_REDIS_CLUSTER_URL` (`scripts/redis-cluster.sh start`), each under a key prefix
//! of its own.

use std::time::Duration;

use super::{
    Claim, Claimant, Delivered, IdempotencyStore, KeyStatus, Lifetimes, MemoryStore, Position,
    RedisStore, Settlement, StoredAnswer, StoredProblem,
};
use crate::event::{IdempotencyKey, KeyScope, TopicName};

/// Lifetimes long enough that nothing expires during a test.
const LONG: Lifetimes = Lifetimes {
    lease: Duration::from_secs(30),
    grace: Duration::from_secs(30),
    ttl: Duration::from_secs(60),
};

/// A lease and a grace that run out within a test.
const SHORT_LEASE: Lifetimes = Lifetimes {
    lease: Duration::from_millis(200),
    grace: Duration::from_millis(300),
    ttl: Duration::from_secs(60),
};

/// A record that expires within a test.
const SHORT_TTL: Lifetimes = Lifetimes {
    lease: Duration::from_millis(200),
    grace: Duration::from_millis(300),
    ttl: Duration::from_millis(1_000),
};

/// `contract!(case, lifetimes)`: the tests `case::memory`, `case::redis` and
/// `case::redis_cluster`, each running the async fn `case` against a fresh store of that
/// backend.
macro_rules! contract {
    ($case:ident, $lifetimes:expr) => {
        mod $case {
            use super::*;
            use crate::test_redis::Scratch;

            #[tokio::test]
            async fn memory() {
                super::$case(&MemoryStore::new($lifetimes)).await;
            }

            #[tokio::test]
            async fn redis() {
                let scratch = Scratch::new();
                let store = super::redis_store(&scratch, $lifetimes);
                scratch.run(super::$case(&store)).await;
            }

            #[tokio::test]
            async fn redis_cluster() {
                let scratch = Scratch::cluster();
                let store = super::redis_store(&scratch, $lifetimes);
                scratch.run(super::$case(&store)).await;
            }
        }
    };
}

/// The Redis store on `scratch`'s connection and prefix.
fn redis_store(scratch: &crate::test_redis::Scratch, lifetimes: Lifetimes) -> RedisStore {
    RedisStore::new(
        scratch.conn.clone(),
        &scratch.prefix,
        lifetimes,
        Duration::from_secs(5),
    )
}

contract!(a_fresh_key_is_claimed, LONG);
contract!(a_second_claim_in_flight_conflicts, LONG);
contract!(only_the_owner_marks_accepted, LONG);
contract!(another_event_is_a_mismatch_in_every_state, LONG);
contract!(only_the_owner_settles_and_only_once, LONG);
contract!(a_done_key_replays_its_answer, LONG);
contract!(a_failed_key_replays_until_an_operator_reclaims_it, LONG);
contract!(a_released_key_is_claimed_again, LONG);
contract!(status_reports_what_was_settled, LONG);
contract!(odd_bodies_and_long_keys_round_trip, LONG);
contract!(keys_are_scoped_by_topic, LONG);
contract!(keys_are_scoped_by_principal, LONG);
contract!(concurrent_claims_and_settles_have_one_winner, LONG);
contract!(health_answers, LONG);

/// Leases that run out and records that expire.
mod expiry;
/// Renewals, suspicion before a takeover, pinned keys.
mod leases;
/// Many keys in one call, as a batch claims and settles them.
mod many;

// ---------------------------------------------------------------------------------------------
// The cases.

async fn a_fresh_key_is_claimed(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    assert_eq!(store.status(scoped(&topic), &key).await.unwrap(), None);
    assert_eq!(
        claim(store, &key, FP, "a").await,
        Claim::Claimed {
            attempt: 1,
            took_over: false
        }
    );
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::InFlight)
    );
}

async fn a_second_claim_in_flight_conflicts(store: &dyn IdempotencyStore) {
    let key = key("k-1");
    claim(store, &key, FP, "a").await;
    for claimant in [Claimant::Client, Claimant::Operator] {
        let claim = store
            .claim(scoped(&topic("orders")), &key, FP, "b", claimant)
            .await
            .unwrap();
        let (retry_after, accepted) = in_flight(claim);
        assert!(!accepted, "{claimant:?}");
        assert!(
            !retry_after.is_zero() && retry_after <= LONG.lease,
            "{claimant:?}: retry after {retry_after:?}"
        );
    }
    // A conflicting claim takes nothing over: the owner still settles.
    assert!(settle(store, &key, "a", &answer(Settlement::Done)).await);
}

async fn only_the_owner_marks_accepted(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    store
        .mark_accepted(scoped(&topic), &key, "b")
        .await
        .unwrap();
    assert!(!in_flight(claim(store, &key, FP, "c").await).1);
    store
        .mark_accepted(scoped(&topic), &key, "a")
        .await
        .unwrap();
    let (retry_after, accepted) = in_flight(claim(store, &key, FP, "c").await);
    assert!(accepted);
    assert!(!retry_after.is_zero() && retry_after <= LONG.lease);
    // Once settled, the mark is history: a late mark neither hides the answer nor errs.
    let done = answer(Settlement::Done);
    assert!(settle(store, &key, "a", &done).await);
    store
        .mark_accepted(scoped(&topic), &key, "a")
        .await
        .unwrap();
    assert_eq!(claim(store, &key, FP, "c").await, Claim::Replay(done));
    // Marking a key that has no record creates none.
    store
        .mark_accepted(scoped(&topic), &self::key("none"), "a")
        .await
        .unwrap();
    assert_eq!(
        store
            .status(scoped(&topic), &self::key("none"))
            .await
            .unwrap(),
        None
    );
}

async fn another_event_is_a_mismatch_in_every_state(store: &dyn IdempotencyStore) {
    let in_flight = key("in-flight");
    claim(store, &in_flight, FP, "a").await;
    for settlement in [
        None,
        Some(Settlement::Done),
        Some(Settlement::Failed),
        Some(Settlement::Released),
    ] {
        let key = match settlement {
            None => in_flight.clone(),
            Some(settlement) => {
                let key = key(settlement.as_str());
                claim(store, &key, FP, "a").await;
                assert!(settle(store, &key, "a", &answer(settlement)).await);
                key
            }
        };
        let before = store.status(scoped(&topic("orders")), &key).await.unwrap();
        for claimant in [Claimant::Client, Claimant::Operator] {
            let claim = store
                .claim(scoped(&topic("orders")), &key, OTHER_FP, "b", claimant)
                .await
                .unwrap();
            assert_eq!(claim, Claim::Mismatch, "{settlement:?} {claimant:?}");
        }
        // A mismatch changes nothing.
        assert_eq!(
            store.status(scoped(&topic("orders")), &key).await.unwrap(),
            before
        );
    }
    // Nor did the mismatches take the in-flight key from its owner.
    assert!(settle(store, &in_flight, "a", &answer(Settlement::Done)).await);
}

async fn only_the_owner_settles_and_only_once(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    assert!(!settle(store, &key, "b", &answer(Settlement::Done)).await);
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::InFlight)
    );
    assert!(matches!(
        claim(store, &key, FP, "c").await,
        Claim::InFlight { .. }
    ));

    let first = answer(Settlement::Done);
    assert!(settle(store, &key, "a", &first).await);
    let second = StoredAnswer::Failed(StoredProblem {
        status: 502,
        body: r#"{"second":true}"#.to_owned(),
    });
    assert!(!settle(store, &key, "a", &second).await, "settled twice");
    assert!(!settle(store, &key, "b", &second).await);
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::Settled(first.clone()))
    );
    assert_eq!(claim(store, &key, FP, "c").await, Claim::Replay(first));

    // Settling a key that was never claimed is refused and creates nothing.
    let unknown = self::key("unknown");
    assert!(!settle(store, &unknown, "a", &answer(Settlement::Done)).await);
    assert_eq!(store.status(scoped(&topic), &unknown).await.unwrap(), None);
}

async fn a_done_key_replays_its_answer(store: &dyn IdempotencyStore) {
    let extreme = StoredAnswer::Done(Delivered {
        position: Position {
            partition: i32::MAX,
            offset: i64::MAX,
        },
        timestamp_ms: i64::MAX,
    });
    for (name, done) in [("typical", answer(Settlement::Done)), ("extreme", extreme)] {
        let key = key(name);
        claim(store, &key, FP, "a").await;
        assert!(settle(store, &key, "a", &done).await);
        for claimant in [Claimant::Client, Claimant::Operator, Claimant::Client] {
            let claim = store
                .claim(scoped(&topic("orders")), &key, FP, "b", claimant)
                .await
                .unwrap();
            assert_eq!(claim, Claim::Replay(done.clone()), "{name} {claimant:?}");
        }
    }
}

async fn a_failed_key_replays_until_an_operator_reclaims_it(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    let failed = answer(Settlement::Failed);
    assert!(settle(store, &key, "a", &failed).await);
    for owner in ["b", "c"] {
        assert_eq!(
            claim(store, &key, FP, owner).await,
            Claim::Replay(failed.clone())
        );
    }

    let reclaimed = store
        .claim(scoped(&topic), &key, FP, "operator", Claimant::Operator)
        .await
        .unwrap();
    assert_eq!(
        reclaimed,
        Claim::Claimed {
            attempt: 2,
            took_over: false
        }
    );
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::InFlight)
    );
    // The operator's claim is a fresh in-flight one: clients wait, the old owner is out.
    assert!(!in_flight(claim(store, &key, FP, "d").await).1);
    assert!(!settle(store, &key, "a", &answer(Settlement::Done)).await);

    let done = answer(Settlement::Done);
    assert!(settle(store, &key, "operator", &done).await);
    assert_eq!(claim(store, &key, FP, "e").await, Claim::Replay(done));
}

async fn a_released_key_is_claimed_again(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    let released = answer(Settlement::Released);
    assert!(settle(store, &key, "a", &released).await);
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::Settled(released.clone()))
    );

    assert_eq!(
        claim(store, &key, FP, "b").await,
        Claim::Claimed {
            attempt: 2,
            took_over: false
        }
    );
    assert_eq!(
        store.status(scoped(&topic), &key).await.unwrap(),
        Some(KeyStatus::InFlight)
    );
    assert!(!settle(store, &key, "a", &answer(Settlement::Done)).await);
    assert!(settle(store, &key, "b", &released).await);

    // An operator's claim reclaims a released key just the same, and attempts keep counting.
    let third = store
        .claim(scoped(&topic), &key, FP, "operator", Claimant::Operator)
        .await
        .unwrap();
    assert_eq!(
        third,
        Claim::Claimed {
            attempt: 3,
            took_over: false
        }
    );
    assert!(!in_flight(claim(store, &key, FP, "c").await).1);
}

async fn status_reports_what_was_settled(store: &dyn IdempotencyStore) {
    let topic = topic("orders");
    assert_eq!(
        store.status(scoped(&topic), &key("unknown")).await.unwrap(),
        None
    );
    for settlement in [Settlement::Done, Settlement::Failed, Settlement::Released] {
        let key = key(settlement.as_str());
        claim(store, &key, FP, "a").await;
        assert_eq!(
            store.status(scoped(&topic), &key).await.unwrap(),
            Some(KeyStatus::InFlight)
        );
        let answer = answer(settlement);
        assert!(settle(store, &key, "a", &answer).await);
        assert_eq!(
            store.status(scoped(&topic), &key).await.unwrap(),
            Some(KeyStatus::Settled(answer)),
            "{settlement:?}"
        );
    }
}

async fn odd_bodies_and_long_keys_round_trip(store: &dyn IdempotencyStore) {
    let bodies = [
        String::new(),
        "{\"emoji\":\"🦀 ü ß 中文 \u{200d} \u{fffd}\"}".to_owned(),
        "nul \0 bytes\r\n\ttabs, ]] [[ Lua ]==] quotes ' \" and \\ backslashes".to_owned(),
        "x".repeat(256 * 1024),
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        // 255 visible ASCII characters, `:` `*` `"` `\` and all, one key per body.
        let long: Vec<u8> = std::iter::once(b'0' + i as u8)
            .chain((0x21..=0x7e_u8).cycle())
            .take(255)
            .collect();
        let long = IdempotencyKey::parse(&long).unwrap();
        assert_eq!(long.as_str().len(), 255);
        for key in [long, key(&format!("body-{i}"))] {
            let answer = StoredAnswer::Failed(StoredProblem {
                status: 504,
                body: body.clone(),
            });
            claim(store, &key, FP, "a").await;
            assert!(settle(store, &key, "a", &answer).await);
            assert_eq!(
                claim(store, &key, FP, "b").await,
                Claim::Replay(answer.clone()),
                "body {i}, key {key}"
            );
            assert_eq!(
                store.status(scoped(&topic("orders")), &key).await.unwrap(),
                Some(KeyStatus::Settled(answer)),
                "body {i}, key {key}"
            );
        }
    }
}

async fn keys_are_scoped_by_topic(store: &dyn IdempotencyStore) {
    let key = key("k-1");
    claim(store, &key, FP, "a").await;
    let other = store
        .claim(
            scoped(&topic("payments")),
            &key,
            OTHER_FP,
            "b",
            Claimant::Client,
        )
        .await
        .unwrap();
    assert_eq!(
        other,
        Claim::Claimed {
            attempt: 1,
            took_over: false
        }
    );
    assert_eq!(
        store.status(scoped(&topic("refunds")), &key).await.unwrap(),
        None,
        "a topic without the key"
    );
}

async fn keys_are_scoped_by_principal(store: &dyn IdempotencyStore) {
    let (orders, key) = (topic("orders"), key("k-1"));
    claim(store, &key, FP, "a").await;
    settle(store, &key, "a", &answer(Settlement::Done)).await;
    // Principals whose names would collide if the key were spelled naively (`a:b` + `c` versus
    // `a` + `b:c`) are still apart, and so is a name with `%` in it.
    for principal in ["other", "te:sts", "tests%3A", "tests:orders"] {
        let scope = KeyScope {
            principal,
            topic: &orders,
        };
        assert_eq!(
            store.status(scope, &key).await.unwrap(),
            None,
            "{principal}"
        );
        let claimed = store
            .claim(scope, &key, OTHER_FP, principal, Claimant::Client)
            .await
            .unwrap();
        assert_eq!(
            claimed,
            Claim::Claimed {
                attempt: 1,
                took_over: false
            },
            "{principal}"
        );
    }
    assert!(matches!(
        store.status(scoped(&orders), &key).await.unwrap(),
        Some(KeyStatus::Settled(a)) if a.settlement() == Settlement::Done
    ));
    // `tests` + `orders` + `x:y` against `tests:orders` + `x` + `y`.
    claim(store, &self::key("x:y"), FP, "a").await;
    let shifted = KeyScope {
        principal: "tests:orders",
        topic: &topic("x"),
    };
    assert_eq!(store.status(shifted, &self::key("y")).await.unwrap(), None);
}

async fn concurrent_claims_and_settles_have_one_winner(store: &dyn IdempotencyStore) {
    let (topic, key) = (topic("orders"), key("k-1"));
    let owners: Vec<String> = (0..16).map(|i| format!("owner-{i}")).collect();
    let claims = futures::future::join_all(
        owners
            .iter()
            .map(|owner| store.claim(scoped(&topic), &key, FP, owner, Claimant::Client)),
    )
    .await;
    let claims: Vec<Claim> = claims.into_iter().map(Result::unwrap).collect();
    let winners: Vec<&String> = owners
        .iter()
        .zip(&claims)
        .filter(|(_, claim)| {
            **claim
                == Claim::Claimed {
                    attempt: 1,
                    took_over: false,
                }
        })
        .map(|(owner, _)| owner)
        .collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    assert_eq!(
        claims
            .iter()
            .filter(|claim| matches!(claim, Claim::InFlight { .. }))
            .count(),
        owners.len() - 1,
        "{claims:?}"
    );

    let done = answer(Settlement::Done);
    let settled = futures::future::join_all(
        owners
            .iter()
            .map(|owner| store.settle(scoped(&topic), &key, owner, &done)),
    )
    .await;
    let settled: Vec<&String> = owners
        .iter()
        .zip(settled)
        .filter(|(_, settled)| *settled.as_ref().unwrap())
        .map(|(owner, _)| owner)
        .collect();
    assert_eq!(settled, winners);
}

async fn health_answers(store: &dyn IdempotencyStore) {
    // The warnings differ by backend (memory says it is memory, Redis checks its eviction
    // policy); the contract is only that a reachable store answers.
    store.health().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const FP: &str = "fingerprint-of-the-event";
const OTHER_FP: &str = "fingerprint-of-another-event";

/// Keys of the tests' principal on `topic`.
fn scoped(topic: &TopicName) -> KeyScope<'_> {
    KeyScope {
        principal: "tests",
        topic,
    }
}

fn topic(name: &str) -> TopicName {
    TopicName::parse(name).unwrap()
}

fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::parse(name.as_bytes()).unwrap()
}

/// A client's claim on `orders`.
async fn claim(store: &dyn IdempotencyStore, key: &IdempotencyKey, fp: &str, owner: &str) -> Claim {
    store
        .claim(scoped(&topic("orders")), key, fp, owner, Claimant::Client)
        .await
        .unwrap()
}

/// Settles a key of `orders`.
async fn settle(
    store: &dyn IdempotencyStore,
    key: &IdempotencyKey,
    owner: &str,
    answer: &StoredAnswer,
) -> bool {
    store
        .settle(scoped(&topic("orders")), key, owner, answer)
        .await
        .unwrap()
}

/// A typical answer for each settlement.
fn answer(settlement: Settlement) -> StoredAnswer {
    match settlement {
        Settlement::Done => StoredAnswer::Done(Delivered {
            position: Position {
                partition: 2,
                offset: 41,
            },
            timestamp_ms: 1_796_000_000_123,
        }),
        Settlement::Failed => StoredAnswer::Failed(StoredProblem {
            status: 502,
            body: r#"{"failure_id":"01J0000000000000000000000"}"#.to_owned(),
        }),
        Settlement::Released => StoredAnswer::Released(StoredProblem {
            status: 503,
            body: r#"{"title":"Kafka is unavailable"}"#.to_owned(),
        }),
    }
}

/// The `(retry_after, accepted)` of an in-flight claim.
#[track_caller]
fn in_flight(claim: Claim) -> (Duration, bool) {
    match claim {
        Claim::InFlight {
            retry_after,
            accepted,
        } => (retry_after, accepted),
        other => panic!("expected in flight, got {other:?}"),
    }
}
