//! Keeping the event of a failed delivery: in the failure store, else in the local spool, and
//! always in one log line with the whole record, so that even with every store down the event
//! can be recovered.

use std::time::Duration;

use super::classify::Verdict;
use super::{Pipeline, now_rfc3339};
use crate::event::Event;
use crate::failures::{FailureError, FailureRecord, FailureState, StoredEvent};
use crate::publisher::DeliveryFailure;

impl Pipeline {
    /// Keeps a new failure record for `event`. Returns its id if it is kept in the store or
    /// the spool (it is always logged, whole).
    pub(super) async fn keep_new(
        &self,
        event: &Event,
        failure: &DeliveryFailure,
        verdict: &Verdict,
        attempt: u32,
    ) -> Option<String> {
        self.keep_new_within(event, failure, verdict, attempt, None)
            .await
    }

    /// [`Pipeline::keep_new`], giving the store at most `store_within` before the spool is used
    /// (at exit, where a stalled Redis must not hold the process past its grace period).
    pub(super) async fn keep_new_within(
        &self,
        event: &Event,
        failure: &DeliveryFailure,
        verdict: &Verdict,
        attempt: u32,
        store_within: Option<Duration>,
    ) -> Option<String> {
        let record = FailureRecord {
            id: ulid::Ulid::new().to_string(),
            state: FailureState::Open,
            created_at: now_rfc3339(),
            event: StoredEvent::from(event),
            error: failure_error(failure),
            persistence: verdict.persistence.as_str().to_owned(),
            http_status: verdict.row().code.status(),
            attempts: attempt,
            updated_at: now_rfc3339(),
            resolution: None,
            dead_letter: None,
        };
        log_failure(&record);
        metrics::counter!("ackgate_failure_records_created_total",
            "topic" => record.event.topic.clone(), "code" => record.error.code.clone())
        .increment(1);
        if let Some(dead_letters) = &self.dead_letters {
            dead_letters.enqueue(&record.id);
        }
        let insert = self.failures.insert(&record);
        let stored = match store_within {
            None => insert.await.map_err(|error| error.to_string()),
            Some(limit) => match tokio::time::timeout(limit, insert).await {
                Ok(stored) => stored.map_err(|error| error.to_string()),
                Err(_) => Err(format!("no answer within {limit:?}")),
            },
        };
        let Err(error) = stored else {
            return Some(record.id);
        };
        tracing::warn!(
            %error,
            failure_id = %record.id,
            "failure store unavailable; spooling the record locally"
        );
        match self.spool.append(&record).await {
            Ok(()) => Some(record.id),
            Err(error) => {
                tracing::error!(
                    %error,
                    failure_id = %record.id,
                    spool = %self.spool.path().display(),
                    "could not spool a failure record; only the log line above keeps the event"
                );
                None
            }
        }
    }

    /// An operator's retry failed again: the record it retried is open again with the new
    /// error, one attempt more.
    pub(super) async fn reopen_failed(
        &self,
        retried: FailureRecord,
        failure: &DeliveryFailure,
        verdict: &Verdict,
    ) -> FailureRecord {
        let record = FailureRecord {
            state: FailureState::Open,
            error: failure_error(failure),
            persistence: verdict.persistence.as_str().to_owned(),
            http_status: verdict.row().code.status(),
            attempts: retried.attempts + 1,
            updated_at: now_rfc3339(),
            ..retried
        };
        log_failure(&record);
        self.reopen(&record).await;
        record
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

fn failure_error(failure: &DeliveryFailure) -> FailureError {
    FailureError {
        code: failure.code_name(),
        kind: format!("{:?}", failure.kind),
        reason: failure.reason.clone(),
    }
}

/// One structured line per failure, with the whole record.
fn log_failure(record: &FailureRecord) {
    let json = serde_json::to_string(record).unwrap_or_default();
    tracing::error!(
        failure_id = %record.id,
        topic = %record.event.topic,
        idempotency_key = %record.event.idempotency_key,
        code = %record.error.code,
        persistence = %record.persistence,
        record = %json,
        "delivery failed; event kept for an operator"
    );
}
