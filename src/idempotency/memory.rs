//! Idempotency records in process memory, for `ackgate dev`.
//!
//! The same state machine as the Redis store, behind a mutex that is never held across an
//! `.await`. Nothing here survives a restart, and nothing is shared between processes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    Claim, IdempotencyStore, Lifetimes, Settlement, StoreError, StoreHealth, StoredResponse,
};
use crate::event::{IdempotencyKey, TopicName};

#[derive(Debug)]
struct Record {
    fingerprint: String,
    owner: String,
    attempt: u32,
    /// `None` while in flight.
    settled: Option<StoredResponse>,
    lease_until: Instant,
    expires_at: Instant,
}

/// An in-memory store with the same semantics as [`super::RedisStore`].
#[derive(Debug)]
pub struct MemoryStore {
    lifetimes: Lifetimes,
    records: Mutex<HashMap<(TopicName, IdempotencyKey), Record>>,
}

impl MemoryStore {
    pub fn new(lifetimes: Lifetimes) -> Self {
        MemoryStore {
            lifetimes,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn with_records<T>(
        &self,
        f: impl FnOnce(&mut HashMap<(TopicName, IdempotencyKey), Record>, Instant) -> T,
    ) -> T {
        let now = Instant::now();
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.retain(|_, r| r.expires_at > now);
        f(&mut records, now)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        topic: &TopicName,
        key: &IdempotencyKey,
        fingerprint: &str,
        owner: &str,
    ) -> Result<Claim, StoreError> {
        let Lifetimes { lease, ttl } = self.lifetimes;
        Ok(self.with_records(|records, now| {
            let id = (topic.clone(), key.clone());
            let Some(record) = records.get_mut(&id) else {
                records.insert(
                    id,
                    Record {
                        fingerprint: fingerprint.to_owned(),
                        owner: owner.to_owned(),
                        attempt: 1,
                        settled: None,
                        lease_until: now + lease,
                        expires_at: now + ttl,
                    },
                );
                return Claim::Claimed { attempt: 1 };
            };
            if record.fingerprint != fingerprint {
                return Claim::Mismatch;
            }
            if let Some(response) = &record.settled {
                return Claim::Replay(response.clone());
            }
            if record.lease_until > now {
                return Claim::InFlight {
                    retry_after: record.lease_until - now,
                };
            }
            record.owner = owner.to_owned();
            record.attempt += 1;
            record.lease_until = now + lease;
            record.expires_at = now + ttl;
            Claim::Claimed {
                attempt: record.attempt,
            }
        }))
    }

    async fn settle(
        &self,
        topic: &TopicName,
        key: &IdempotencyKey,
        owner: &str,
        _settlement: Settlement,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let ttl = self.lifetimes.ttl;
        Ok(self.with_records(
            |records, now| match records.get_mut(&(topic.clone(), key.clone())) {
                Some(record) if record.owner == owner && record.settled.is_none() => {
                    record.settled = Some(response.clone());
                    record.expires_at = now + ttl;
                    true
                }
                _ => false,
            },
        ))
    }

    async fn release(
        &self,
        topic: &TopicName,
        key: &IdempotencyKey,
        owner: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.with_records(|records, _| {
            let id = (topic.clone(), key.clone());
            match records.get(&id) {
                Some(record) if record.owner == owner && record.settled.is_none() => {
                    records.remove(&id);
                    true
                }
                _ => false,
            }
        }))
    }

    async fn health(&self) -> Result<StoreHealth, StoreError> {
        Ok(StoreHealth {
            warnings: vec!["idempotency records are held in memory (ackgate dev)".to_owned()],
        })
    }
}
