//! Idempotency records in process memory, for `ackgate dev`.
//!
//! The same state machine as the Redis store, behind a mutex that is never held across an
//! `.await`. Nothing here survives a restart, and nothing is shared between processes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;

use super::{
    Claim, Claimant, IdempotencyStore, KeyStatus, Lifetimes, Renewal, Settlement, StoreError,
    StoreHealth, StoredAnswer,
};
use crate::event::{IdempotencyKey, KeyScope, TopicName};

#[derive(Debug)]
struct Record {
    fingerprint: String,
    owner: String,
    attempt: u32,
    accepted: bool,
    /// `None` while in flight.
    settled: Option<StoredAnswer>,
    lease_until: Instant,
    /// When a claim first found the lease out (see [`super`]).
    suspect_since: Option<Instant>,
    /// `None` while pinned (settled `failed`, until an operator acts).
    expires_at: Option<Instant>,
}

impl Record {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// Records by principal, topic and key.
type Slot = (String, TopicName, IdempotencyKey);
type Records = HashMap<Slot, Record>;

/// An in-memory store with the same semantics as [`super::RedisStore`].
#[derive(Debug)]
pub(crate) struct MemoryStore {
    lifetimes: Lifetimes,
    records: Mutex<Records>,
    calls: AtomicU64,
}

impl MemoryStore {
    pub(crate) fn new(lifetimes: Lifetimes) -> Self {
        MemoryStore {
            lifetimes,
            records: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
        }
    }

    fn with_records<T>(&self, f: impl FnOnce(&mut Records, Instant) -> T) -> T {
        let now = Instant::now();
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        // Expire lazily, but only every 1024 calls: a full scan per request would be quadratic.
        if self
            .calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
        {
            records.retain(|_, r| r.is_live(now));
        }
        f(&mut records, now)
    }
}

fn slot(scope: KeyScope<'_>, key: &IdempotencyKey) -> Slot {
    (scope.principal.to_owned(), scope.topic.clone(), key.clone())
}

fn live<'a>(
    records: &'a mut Records,
    scope: KeyScope<'_>,
    key: &IdempotencyKey,
    now: Instant,
) -> Option<&'a mut Record> {
    records
        .get_mut(&slot(scope, key))
        .filter(|r| r.is_live(now))
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
        owner: &str,
        claimant: Claimant,
    ) -> Result<Claim, StoreError> {
        let Lifetimes { lease, grace, ttl } = self.lifetimes;
        Ok(self.with_records(|records, now| {
            let Some(record) = live(records, scope, key, now) else {
                records.insert(
                    slot(scope, key),
                    Record {
                        fingerprint: fingerprint.to_owned(),
                        owner: owner.to_owned(),
                        attempt: 1,
                        accepted: false,
                        settled: None,
                        lease_until: now + lease,
                        suspect_since: None,
                        expires_at: Some(now + ttl),
                    },
                );
                return Claim::Claimed {
                    attempt: 1,
                    took_over: false,
                };
            };
            if record.fingerprint != fingerprint {
                return Claim::Mismatch;
            }
            let reclaim = match record.settled.as_ref().map(StoredAnswer::settlement) {
                Some(Settlement::Released) => true,
                Some(Settlement::Failed) => claimant == Claimant::Operator,
                Some(Settlement::Done) => false,
                None if record.lease_until > now => false,
                // The lease ran out: suspect the owner first, take over a grace later.
                None => match record.suspect_since {
                    None => {
                        record.suspect_since = Some(now);
                        return Claim::InFlight {
                            retry_after: grace,
                            accepted: record.accepted,
                        };
                    }
                    Some(since) if now < since + grace => {
                        return Claim::InFlight {
                            retry_after: since + grace - now,
                            accepted: record.accepted,
                        };
                    }
                    Some(_) => true,
                },
            };
            if reclaim {
                let took_over = record.settled.is_none();
                record.owner = owner.to_owned();
                record.attempt += 1;
                record.accepted = false;
                record.settled = None;
                record.lease_until = now + lease;
                record.suspect_since = None;
                record.expires_at = Some(now + ttl);
                return Claim::Claimed {
                    attempt: record.attempt,
                    took_over,
                };
            }
            match &record.settled {
                Some(answer) => Claim::Replay(answer.clone()),
                None => Claim::InFlight {
                    retry_after: record.lease_until - now,
                    accepted: record.accepted,
                },
            }
        }))
    }

    async fn mark_accepted(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.with_records(|records, now| {
            if let Some(record) = live(records, scope, key, now)
                && record.owner == owner
                && record.settled.is_none()
            {
                record.accepted = true;
            }
        });
        Ok(())
    }

    async fn status(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyStatus>, StoreError> {
        Ok(self.with_records(|records, now| {
            live(records, scope, key, now).map(|record| match &record.settled {
                None => KeyStatus::InFlight,
                Some(answer) => KeyStatus::Settled(answer.clone()),
            })
        }))
    }

    async fn settle(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        let ttl = self.lifetimes.ttl;
        Ok(
            self.with_records(|records, now| match live(records, scope, key, now) {
                Some(record) if record.owner == owner => match &record.settled {
                    None => {
                        record.settled = Some(answer.clone());
                        record.suspect_since = None;
                        record.expires_at = match answer.settlement() {
                            Settlement::Failed => None,
                            _ => Some(now + ttl),
                        };
                        true
                    }
                    Some(settled) => settled.settlement() == answer.settlement(),
                },
                _ => false,
            }),
        )
    }

    async fn renew(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<Renewal, StoreError> {
        let Lifetimes { lease, ttl, .. } = self.lifetimes;
        Ok(
            self.with_records(|records, now| match live(records, scope, key, now) {
                Some(record) if record.owner == owner && record.settled.is_none() => {
                    record.lease_until = now + lease;
                    record.suspect_since = None;
                    record.expires_at = Some(now + ttl);
                    Renewal::Renewed
                }
                Some(record) if record.owner == owner => Renewal::Settled,
                _ => Renewal::Lost,
            }),
        )
    }

    async fn unpin(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
        fingerprint: &str,
    ) -> Result<bool, StoreError> {
        let ttl = self.lifetimes.ttl;
        Ok(
            self.with_records(|records, now| match live(records, scope, key, now) {
                Some(record)
                    if record.fingerprint == fingerprint
                        && record.settled.as_ref().map(StoredAnswer::settlement)
                            == Some(Settlement::Failed) =>
                {
                    record.expires_at = Some(now + ttl);
                    true
                }
                _ => false,
            }),
        )
    }

    fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    async fn health(&self) -> Result<StoreHealth, StoreError> {
        Ok(StoreHealth {
            warnings: vec!["idempotency records are held in memory (ackgate dev)".to_owned()],
        })
    }
}
