//! The operator's side of failure records: retry and discard.
//!
//! A retry publishes the stored event again under its original idempotency key, through the
//! same claim → publish → settle path as a client request, so that:
//! - two retries of one record at once cannot both publish: the record moves `open →
//!   retrying` with a compare-and-set first, and the loser gets a conflict;
//! - a retry racing a client's own retry cannot publish twice: both claim the same key;
//! - once the retry lands, the key is settled `done`, so a client retry replays the success.

use super::delivery::{Keep, NotClaimed};
use super::outcome::{Failure, Outcome};
use super::{Pipeline, now_rfc3339};
use crate::event::Event;
use crate::failures::{FailureRecord, FailureState, Resolution};
use crate::idempotency::{Claimant, Position, StoredAnswer};

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OperatorError {
    #[error("no failure record has this id")]
    NotFound,
    #[error("the failure record is {}, not open", .0.as_str())]
    NotOpen(FailureState),
    #[error("another operator changed the failure record at the same time")]
    Conflict,
    #[error("a request with this idempotency key is being delivered right now")]
    KeyInFlight,
    #[error("the failure store is unavailable")]
    FailureStoreUnavailable,
    #[error("the idempotency store is unavailable")]
    IdempotencyStoreUnavailable,
    #[error("the stored event cannot be rebuilt: {0}")]
    Unreadable(String),
}

/// What an operator's retry did.
#[derive(Debug, Clone)]
pub(crate) enum RetryOutcome {
    /// The event is in Kafka now; the record is resolved.
    Resolved(Box<FailureRecord>),
    /// Kafka did not take it this time either; the record is open again with the new error.
    /// This is the answer a client would have had.
    Failed(Failure),
}

impl Pipeline {
    /// Marks an open record discarded: the event will not be published by the gateway.
    pub(crate) async fn discard_failure(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<FailureRecord, OperatorError> {
        let record = self.open_record(id).await?;
        self.unpin(&record).await?;
        let discarded = FailureRecord {
            state: FailureState::Discarded,
            updated_at: now_rfc3339(),
            resolution: Some(Resolution {
                action: "discarded".to_owned(),
                by: by.to_owned(),
                reason: Some(reason.to_owned()),
                at: now_rfc3339(),
                partition: None,
                offset: None,
            }),
            ..record
        };
        self.transition(FailureState::Open, &discarded).await?;
        tracing::info!(failure_id = id, by, reason, "failure record discarded");
        Ok(discarded)
    }

    /// Publishes the record's event again under its idempotency key.
    pub(crate) async fn retry_failure(
        &self,
        id: &str,
        by: &str,
    ) -> Result<RetryOutcome, OperatorError> {
        let record = self.open_record(id).await?;
        let event = record.event.to_event().map_err(OperatorError::Unreadable)?;
        let retrying = FailureRecord {
            state: FailureState::Retrying,
            updated_at: now_rfc3339(),
            ..record
        };
        // The lock: of two concurrent retries, only one moves the record out of `open`.
        self.transition(FailureState::Open, &retrying).await?;

        // The rest runs in a task of its own, like a client's delivery: an operator who hangs
        // up must not leave the record stuck in `retrying` or the key in flight.
        let this = self.clone();
        let by = by.to_owned();
        let task = self
            .tasks
            .spawn(async move { this.retry(event, retrying, &by).await });
        task.await
            .unwrap_or(Err(OperatorError::FailureStoreUnavailable))
    }

    async fn retry(
        &self,
        event: Event,
        retrying: FailureRecord,
        by: &str,
    ) -> Result<RetryOutcome, OperatorError> {
        let claimed = match self.claim(event, Claimant::Operator).await {
            Ok(claimed) => claimed,
            // A client's retry got it into Kafka first.
            Err(NotClaimed::Replay(StoredAnswer::Done(delivered))) => {
                let resolved =
                    resolve(&retrying, "already_persisted", by, Some(delivered.position));
                self.transition(FailureState::Retrying, &resolved).await?;
                return Ok(RetryOutcome::Resolved(Box::new(resolved)));
            }
            Err(not_claimed) => {
                self.reopen(&retrying).await;
                return Err(match not_claimed {
                    NotClaimed::InFlight { .. } => OperatorError::KeyInFlight,
                    NotClaimed::StoreUnavailable => OperatorError::IdempotencyStoreUnavailable,
                    other => {
                        OperatorError::Unreadable(format!("the idempotency key answers {other:?}"))
                    }
                });
            }
        };
        let id = retrying.id.clone();
        let answer = self.spawn_delivery(claimed, Keep::Reopen(Box::new(retrying.clone())));
        match answer.await {
            Ok(Outcome::Persisted(receipt)) => {
                let resolved = resolve(&retrying, "retried", by, Some(receipt.position()));
                self.transition(FailureState::Retrying, &resolved).await?;
                let position = receipt.position();
                tracing::info!(failure_id = %id, by, partition = position.partition,
                    offset = position.offset, "failure record retried and persisted");
                Ok(RetryOutcome::Resolved(Box::new(resolved)))
            }
            Ok(Outcome::Failed(failure)) => Ok(RetryOutcome::Failed(failure)),
            // The delivery task died (or answered what a delivery cannot): the record stays
            // `retrying` and the key in flight until its lease, like any crashed delivery.
            Ok(other) => Err(OperatorError::Unreadable(format!(
                "the delivery answered {other:?}"
            ))),
            Err(_) => Err(OperatorError::Unreadable(
                "the delivery task ended without an answer".to_owned(),
            )),
        }
    }

    /// The event's key was pinned to its failure, so that no retry could publish the event a
    /// second time while nobody had decided. Now an operator has: from here on the key lives
    /// for the normal TTL, replaying the failure until then. (A retry unpins it by claiming it.)
    async fn unpin(&self, record: &FailureRecord) -> Result<(), OperatorError> {
        let event = match record.event.to_event() {
            Ok(event) => event,
            Err(why) => {
                // Nothing to match the key against; it stays pinned, as it was.
                tracing::warn!(
                    failure_id = %record.id, %why,
                    "cannot unpin the key of an unreadable event"
                );
                return Ok(());
            }
        };
        self.store
            .unpin(event.scope(), &event.idempotency_key, &event.fingerprint())
            .await
            .map(|_| ())
            .map_err(|_| OperatorError::IdempotencyStoreUnavailable)
    }

    async fn open_record(&self, id: &str) -> Result<FailureRecord, OperatorError> {
        let record = self
            .failures
            .get(id)
            .await
            .map_err(|_| OperatorError::FailureStoreUnavailable)?
            .ok_or(OperatorError::NotFound)?;
        if record.state != FailureState::Open {
            return Err(OperatorError::NotOpen(record.state));
        }
        Ok(record)
    }

    async fn transition(
        &self,
        expected: FailureState,
        record: &FailureRecord,
    ) -> Result<(), OperatorError> {
        match self.failures.replace(expected, record).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(OperatorError::Conflict),
            Err(_) => Err(OperatorError::FailureStoreUnavailable),
        }
    }
}

fn resolve(
    record: &FailureRecord,
    action: &str,
    by: &str,
    position: Option<Position>,
) -> FailureRecord {
    FailureRecord {
        state: FailureState::Resolved,
        updated_at: now_rfc3339(),
        resolution: Some(Resolution {
            action: action.to_owned(),
            by: by.to_owned(),
            reason: None,
            at: now_rfc3339(),
            partition: position.map(|p| p.partition),
            offset: position.map(|p| p.offset),
        }),
        ..record.clone()
    }
}
