//! The operator's side of failure records: retry and discard.
//!
//! A retry publishes the stored event again under its original idempotency key, through the
//! same claim → publish → settle path as a client request, so that:
//! - two retries of one record at once cannot both publish: the record moves `open →
//!   retrying` with a compare-and-set first, and the loser gets a conflict;
//! - a retry racing a client's own retry cannot publish twice: both claim the same key;
//! - once the retry lands, the key is settled `done`, so a client retry replays the success.

use std::time::Instant;

use super::{Pipeline, now_rfc3339, persisted_response};
use crate::contract::Persisted;
use crate::failures::{FailureRecord, FailureState, Resolution};
use crate::idempotency::{Claim, Claimant};

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
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
pub enum RetryOutcome {
    /// The event is in Kafka now; the record is resolved.
    Resolved(FailureRecord),
    /// Kafka did not take it this time either; the record is open again with the new error,
    /// and this is the answer a client would have had.
    Failed(FailureRecord, super::Answer),
}

impl Pipeline {
    /// Marks an open record discarded: the event will not be published by the gateway.
    pub async fn discard_failure(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<FailureRecord, OperatorError> {
        let record = self.open_record(id).await?;
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
    pub async fn retry_failure(&self, id: &str, by: &str) -> Result<RetryOutcome, OperatorError> {
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
        let task = self.tasks.spawn(async move {
            let owner = ulid::Ulid::new().to_string();
            let claim = this
                .store
                .claim(
                    &event.topic,
                    &event.idempotency_key,
                    &event.fingerprint(),
                    &owner,
                    Claimant::Operator,
                )
                .await;
            let attempt = match claim {
                Ok(Claim::Claimed { attempt }) => attempt,
                // A client's retry got it into Kafka first.
                Ok(Claim::Replay(response)) if (200..300).contains(&response.status) => {
                    let persisted: Option<Persisted> = serde_json::from_str(&response.body).ok();
                    let resolved = resolve(&retrying, "already_persisted", &by, persisted.as_ref());
                    this.transition(FailureState::Retrying, &resolved).await?;
                    return Ok(RetryOutcome::Resolved(resolved));
                }
                Ok(Claim::InFlight { .. }) => {
                    this.reopen(&retrying).await;
                    return Err(OperatorError::KeyInFlight);
                }
                Ok(other) => {
                    this.reopen(&retrying).await;
                    return Err(OperatorError::Unreadable(format!(
                        "the idempotency key answers {other:?}"
                    )));
                }
                Err(error) => {
                    tracing::error!(error = &error as &dyn std::error::Error, "operator claim failed");
                    this.reopen(&retrying).await;
                    return Err(OperatorError::IdempotencyStoreUnavailable);
                }
            };

            let started = Instant::now();
            let report = this.publisher.publish(&event).await;
            metrics::histogram!("ackgate_produce_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            match report {
                Ok(ack) => {
                    let response = persisted_response(&event, ack);
                    this.settle_persisted(&event, &owner, &response).await;
                    let persisted: Option<Persisted> = serde_json::from_str(&response.body).ok();
                    let resolved = resolve(&retrying, "retried", &by, persisted.as_ref());
                    this.transition(FailureState::Retrying, &resolved).await?;
                    tracing::info!(failure_id = %resolved.id, by, partition = ack.partition,
                        offset = ack.offset, "failure record retried and persisted");
                    Ok(RetryOutcome::Resolved(resolved))
                }
                Err(failure) => {
                    metrics::counter!("ackgate_delivery_errors_total", "code" => failure.code_name())
                        .increment(1);
                    let answer = this
                        .handle_failure(&event, &owner, attempt, failure, Some(&retrying))
                        .await;
                    let reopened = this
                        .failures
                        .get(&retrying.id)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or(retrying);
                    Ok(RetryOutcome::Failed(reopened, answer))
                }
            }
        });
        task.await
            .unwrap_or(Err(OperatorError::FailureStoreUnavailable))
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

    /// Puts a `retrying` record back to `open` (with whatever `record` carries).
    pub(super) async fn reopen(&self, record: &FailureRecord) {
        let open = FailureRecord {
            state: FailureState::Open,
            ..record.clone()
        };
        if let Err(error) = self.failures.replace(FailureState::Retrying, &open).await {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                failure_id = %record.id,
                "could not reopen a failure record; it stays 'retrying'"
            );
        }
    }
}

fn resolve(
    record: &FailureRecord,
    action: &str,
    by: &str,
    persisted: Option<&Persisted>,
) -> FailureRecord {
    FailureRecord {
        state: FailureState::Resolved,
        updated_at: now_rfc3339(),
        resolution: Some(Resolution {
            action: action.to_owned(),
            by: by.to_owned(),
            reason: None,
            at: now_rfc3339(),
            partition: persisted.map(|p| p.partition),
            offset: persisted.map(|p| p.offset),
        }),
        ..record.clone()
    }
}
