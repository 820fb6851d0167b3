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
//! An `in_flight` record carries an owner and a lease. A request that finds a live lease gets
//! 409; one that finds an expired lease (its owner crashed) takes the key over. Settling and
//! releasing check the owner, so a stale owner can never overwrite a newer one.
//!
//! This module knows nothing of HTTP or Kafka: it stores an answer's bytes as given, with the
//! few typed facts (how the key settled, where Kafka put the event) that callers act on, so
//! nobody has to parse the bytes back.

#[cfg(test)]
mod contract_tests;
mod durability;
mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::event::{IdempotencyKey, TopicName};

pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redis::RedisStore;
/// The Lua scripts, for the benchmark's raw-Redis phase.
#[doc(hidden)]
pub use self::redis::{CLAIM as CLAIM_SCRIPT, SETTLE as SETTLE_SCRIPT};

/// The answer stored for a settled key, replayed byte for byte to later requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAnswer {
    pub(crate) settlement: Settlement,
    pub(crate) status: u16,
    /// The JSON body as sent to the first client.
    pub(crate) body: String,
    /// Where Kafka put the event, for a key settled [`Settlement::Done`].
    pub(crate) position: Option<Position>,
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
#[derive(Debug, thiserror::Error)]
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

/// Where idempotency records live: Redis in production, memory under `ackgate dev`.
#[async_trait]
pub(crate) trait IdempotencyStore: Send + Sync + 'static {
    /// Atomically claims `key` for `owner`, or reports why not.
    async fn claim(
        &self,
        topic: &TopicName,
        key: &IdempotencyKey,
        fingerprint: &str,
        owner: &str,
        claimant: Claimant,
    ) -> Result<Claim, StoreError>;

    /// Notes that the owner's request was answered `202 Accepted`, so that retries get the same
    /// answer instead of 409.
    async fn mark_accepted(
        &self,
        topic: &TopicName,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// The current state of a key, if it has a record.
    async fn status(
        &self,
        topic: &TopicName,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyStatus>, StoreError>;

    /// Stores the final answer if `owner` still holds the key. Returns whether it did.
    async fn settle(
        &self,
        topic: &TopicName,
        key: &IdempotencyKey,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError>;

    /// Checks that the store answers.
    async fn health(&self) -> Result<StoreHealth, StoreError>;
}

/// Lifetimes every store applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    /// How long a claim stays in flight before it may be taken over.
    pub(crate) lease: Duration,
    /// How long a record lives (refreshed when it is settled).
    pub(crate) ttl: Duration,
}
