//! The idempotency record of each key: claim, settle, release.
//!
//! One record per (topic, idempotency key) moves through a small state machine, each step one
//! atomic operation in the store so that concurrent requests — in this process or in another
//! gateway sharing the same Redis — see exactly one winner:
//!
//! ```text
//!   (none) ──claim──▶ in_flight ──settle(done)─────▶ done      (replays the stored answer)
//!                        │  └─────settle(failed)───▶ failed    (replays the failure answer,
//!                        │                                       until an operator retries)
//!                        └────────settle(released)─▶ released  (nothing was written: the next
//!                                                                claim publishes again)
//! ```
//!
//! A released record keeps its answer so that `GET /v1/topics/{topic}/events/{key}` can still
//! tell a client that lost its response what happened.
//!
//! An `in_flight` record carries an owner and a lease, which the owner renews while its delivery
//! is pending. A request that finds a live lease gets 409. One that finds an expired lease only
//! *suspects* the owner: a lease also runs out on Redis's clock while Redis itself is stalled,
//! and a live owner then renews or settles the moment Redis answers again. The key is taken over
//! only by a claim that comes a grace period after the first suspicion, with no renewal since —
//! so the owner really is gone (crashed, or cut off from Redis for longer than lease and grace).
//! Settling and releasing check the owner, so a stale owner can never overwrite a newer one.
//!
//! A key settled `failed` may have reached Kafka, so it is pinned: it never expires until an
//! operator acts on its failure record (a retry claims it again, a discard unpins it), after
//! which it lives for the normal TTL.
//!
//! This module knows nothing of HTTP or Kafka: it stores typed answers ([`StoredAnswer`]) — for
//! an acknowledged event the facts of the acknowledgement, for a failure the problem document's
//! bytes as given — so nobody has to parse bytes back.
//!
//! A batch claims its keys with one call ([`IdempotencyStore::claim_many`]) and settles them
//! with one ([`IdempotencyStore::settle_many`]): one round trip to Redis each (one per hash
//! slot on a Redis Cluster), not one per event.

#[cfg(test)]
mod contract_tests;
mod durability;
mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::event::{IdempotencyKey, KeyScope};

pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redis::RedisStore;
/// The Lua scripts, for the benchmark's raw-Redis phase.
#[doc(hidden)]
pub use self::redis::{CLAIM as CLAIM_SCRIPT, SETTLE as SETTLE_SCRIPT};

/// The answer stored for a settled key, replayed to later requests exactly as the first one got
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredAnswer {
    /// Kafka acknowledged the event. Only the facts are kept: the `201` body is rendered from
    /// them (with the key's topic and idempotency key) by one function, so every replay is the
    /// first answer byte for byte, and the record stays a few dozen bytes.
    Done(Delivered),
    /// The event may be in Kafka: the key stays pinned to this problem until an operator acts.
    Failed(StoredProblem),
    /// Kafka certainly did not write it: the problem is kept for status queries, and the next
    /// claim with the same event publishes again.
    Released(StoredProblem),
}

impl StoredAnswer {
    pub(crate) fn settlement(&self) -> Settlement {
        match self {
            StoredAnswer::Done(_) => Settlement::Done,
            StoredAnswer::Failed(_) => Settlement::Failed,
            StoredAnswer::Released(_) => Settlement::Released,
        }
    }

    /// The HTTP status of the answer.
    pub(crate) fn status(&self) -> u16 {
        match self {
            StoredAnswer::Done(_) => 201,
            StoredAnswer::Failed(problem) | StoredAnswer::Released(problem) => problem.status,
        }
    }
}

/// What Kafka's acknowledgement said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub(crate) position: Position,
    /// The record's timestamp, in milliseconds since the Unix epoch.
    pub(crate) timestamp_ms: i64,
}

/// A failure's answer: its status and problem document, as sent to the first client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredProblem {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// A record's place in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The caller owns the key and must settle or release it. `attempt` is 1 for a fresh key and
    /// counts every claim of it since (a released key claimed again, an operator's retry).
    /// `took_over` is set when the key was taken from an owner whose lease ran out: it crashed
    /// before settling, and the event may already be in Kafka.
    Claimed { attempt: u32, took_over: bool },
    /// The key was settled before with the same event: answer with this.
    Replay(StoredAnswer),
    /// Another request owns the key right now. `accepted` is true once that request was
    /// answered `202 Accepted` (it outlived the wait timeout).
    InFlight {
        retry_after: Duration,
        accepted: bool,
    },
    /// The key was used with a different event.
    Mismatch,
}

impl Claim {
    /// A stable label for metrics and logs.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Claim::Claimed {
                took_over: false, ..
            } => "claimed",
            Claim::Claimed {
                took_over: true, ..
            } => "takeover",
            Claim::Replay(_) => "replayed",
            Claim::InFlight { .. } => "conflict",
            Claim::Mismatch => "mismatch",
        }
    }
}

/// How a claimed key ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// Kafka acknowledged the event.
    Done,
    /// The event may be in Kafka; the key stays pinned to its failure answer until an operator
    /// acts, so a retry cannot publish it a second time.
    Failed,
    /// Kafka certainly did not write it: the answer is kept for status queries, and the next
    /// claim with the same event publishes again.
    Released,
}

impl Settlement {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Settlement::Done => "done",
            Settlement::Failed => "failed",
            Settlement::Released => "released",
        }
    }
}

/// Who is claiming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claimant {
    /// A client request.
    Client,
    /// An operator retrying a failure record: may take back a key pinned as `failed`.
    Operator,
}

/// What a status query finds for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyStatus {
    InFlight,
    Settled(StoredAnswer),
}

/// The store could not answer; the caller must fail closed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the idempotency store is unreachable")]
    Unavailable(#[source] ::redis::RedisError),
    #[error("the idempotency store returned an unexpected reply: {0}")]
    Protocol(String),
}

impl StoreError {
    /// What went wrong, for `/readyz` and start-up logs: the cause (refused, TLS verification,
    /// authentication), never the URL or a password.
    pub(crate) fn reason(&self) -> String {
        match self {
            StoreError::Unavailable(error) => crate::redis_link::describe(error),
            StoreError::Protocol(_) => self.to_string(),
        }
    }
}

/// What `/readyz` learns from the store.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoreHealth {
    /// Conditions that do not stop traffic but put the guarantee at risk.
    pub(crate) warnings: Vec<String>,
}

/// One key to claim, in a [`IdempotencyStore::claim_many`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimRequest<'a> {
    pub(crate) scope: KeyScope<'a>,
    pub(crate) key: &'a IdempotencyKey,
    pub(crate) fingerprint: &'a str,
    pub(crate) owner: &'a str,
}

/// One key to settle, in a [`IdempotencyStore::settle_many`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SettleRequest<'a> {
    pub(crate) scope: KeyScope<'a>,
    pub(crate) key: &'a IdempotencyKey,
    pub(crate) owner: &'a str,
    pub(crate) answer: &'a StoredAnswer,
}

/// Where idempotency records live: Redis in production, memory under `ackgate dev`.
#[async_trait]
pub(crate) trait IdempotencyStore: Send + Sync + 'static {
    /// [`claim`](Self::claim) for every request (each key atomically, all in one call, or one
    /// per hash slot on a Redis Cluster): one answer per request, in order. Where the store
    /// cannot answer for a key (its cluster node is down), that key's answer is the error.
    async fn claim_many(
        &self,
        requests: &[ClaimRequest<'_>],
        claimant: Claimant,
    ) -> Vec<Result<Claim, StoreError>> {
        let mut claims = Vec::with_capacity(requests.len());
        for r in requests {
            claims.push(
                self.claim(r.scope, r.key, r.fingerprint, r.owner, claimant)
                    .await,
            );
        }
        claims
    }

    /// [`settle`](Self::settle) for every request, as one step: one answer per request, in
    /// order, as [`claim_many`](Self::claim_many).
    async fn settle_many(&self, requests: &[SettleRequest<'_>]) -> Vec<Result<bool, StoreError>> {
        let mut settled = Vec::with_capacity(requests.len());
        for r in requests {
            settled.push(self.settle(r.scope, r.key, r.owner, r.answer).await);
        }
        settled
    }

    /// Atomically claims `key` for `owner`, or reports why not.
    async fn claim(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
        owner: &str,
        claimant: Claimant,
    ) -> Result<Claim, StoreError>;

    /// Notes that the owner's request was answered `202 Accepted`, so that retries get the same
    /// answer instead of 409.
    async fn mark_accepted(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// The current state of a key, if it has a record.
    async fn status(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyStatus>, StoreError>;

    /// Stores the final answer if `owner` still holds the key. Returns whether the key is now
    /// settled by `owner` as `answer.settlement`: settling again the way it already is (a retry
    /// whose first reply was lost) changes nothing and returns true. A `failed` key is pinned (no
    /// expiry); any other lives for the TTL.
    async fn settle(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError>;

    /// Extends `owner`'s lease (and the record's life) while its delivery is pending, and
    /// clears any suspicion a claim raised while the lease was out.
    async fn renew(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<Renewal, StoreError>;

    /// An operator acted on the failure of a key pinned `failed` with this fingerprint: from
    /// now on it lives for the normal TTL. Returns whether such a key was found.
    async fn unpin(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> Result<bool, StoreError>;

    /// The lifetimes this store applies.
    fn lifetimes(&self) -> Lifetimes;

    /// Checks that the store answers.
    async fn health(&self) -> Result<StoreHealth, StoreError>;
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// The key is still the caller's, in flight; its lease starts again.
    Renewed,
    /// The caller settled the key already (its settle landed even if the reply was lost).
    Settled,
    /// Someone else owns the key, or it has no record: the caller lost it.
    Lost,
}

impl Renewal {
    /// A stable label for metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Renewal::Renewed => "renewed",
            Renewal::Settled => "settled",
            Renewal::Lost => "lost",
        }
    }
}

/// Lifetimes every store applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    /// How long a claim (or its last renewal) stays in flight before its owner is suspected.
    pub(crate) lease: Duration,
    /// How long a suspected owner has to renew before a claim may take the key over. Counted
    /// from the first claim that found the lease out, so only while the store was answering.
    pub(crate) grace: Duration,
    /// How long a record lives (refreshed when it is settled or renewed); `failed` records are
    /// pinned until an operator acts, then live this long.
    pub(crate) ttl: Duration,
}
