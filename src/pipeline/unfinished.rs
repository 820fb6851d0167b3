//! Deliveries still running, so that shutdown can keep the ones the grace period cut short.
//!
//! A delivery task ends by answering and keeping its outcome (a settled key, a failure record).
//! If it has not ended when the grace period is over — the report came late, or Redis stalls
//! while the failure is being kept — the process would exit with the event kept nowhere. So
//! each delivery is registered while it runs, and at exit every one still registered is kept as
//! a failure record, `possibly_persisted` (it may have been written), in the store or else the
//! spool, and its key is pinned to that failure, so that a retry cannot publish it again.
//! An operator's retry puts its record back to `open` instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::types::RDKafkaErrorCode;

use super::Pipeline;
use super::classify::Verdict;
use super::outcome::Failure;
use crate::event::Event;
use crate::failures::FailureRecord;
use crate::publisher::{DeliveryFailure, FailureKind, Persistence};

/// How long each store write at exit may take before the spool is used instead: Redis may be
/// what stalled the delivery in the first place.
const STORE_WITHIN: Duration = Duration::from_secs(2);

/// The deliveries running now.
#[derive(Debug, Default)]
pub(crate) struct Unfinished {
    next: AtomicU64,
    running: Mutex<HashMap<u64, Running>>,
}

/// What is needed to keep a delivery that did not finish.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) event: Event,
    /// The claim's owner id, to pin the key.
    pub(super) owner: Arc<str>,
    pub(super) attempt: u32,
    /// The record an operator's retry is publishing, if it is one.
    pub(super) retried: Option<FailureRecord>,
}

/// Unregisters its delivery when dropped, that is when the delivery task ends, however it ends.
#[derive(Debug)]
pub(super) struct Registration {
    registry: Arc<Unfinished>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.running().remove(&self.id);
    }
}

impl Unfinished {
    pub(super) fn register(self: &Arc<Self>, running: Running) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.running().insert(id, running);
        Registration {
            registry: self.clone(),
            id,
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Pipeline {
    /// Keeps every delivery still running (at exit, once the grace period is over). Returns how
    /// many there were.
    pub(crate) async fn keep_unfinished(&self) -> usize {
        let running: Vec<Running> = self.unfinished.running().drain().map(|(_, r)| r).collect();
        if running.is_empty() {
            return 0;
        }
        let failure = DeliveryFailure {
            kind: FailureKind::TimedOut,
            // librdkafka's code for an in-flight message purged, which is what exit does to it.
            code: RDKafkaErrorCode::PurgeInflight,
            persistence: Persistence::PossiblyPersisted,
            reason: "the gateway stopped before Kafka's delivery report arrived (the shutdown \
                     grace period was over); the event may be in Kafka"
                .to_owned(),
        };
        let verdict = Verdict::of(&failure);
        let kept = running
            .into_iter()
            .map(|running| self.keep_one_unfinished(running, &failure, &verdict));
        // No counter: the process ends before anyone could scrape it; the caller logs the count.
        futures::future::join_all(kept).await.len()
    }

    async fn keep_one_unfinished(
        &self,
        running: Running,
        failure: &DeliveryFailure,
        verdict: &Verdict,
    ) {
        let Running {
            event,
            owner,
            attempt,
            retried,
        } = running;
        if let Some(retried) = retried {
            // If this does not make it, the retrying timeout reopens the record later.
            let reopen = self.reopen_failed(retried, failure, verdict);
            let _ = tokio::time::timeout(STORE_WITHIN, reopen).await;
            return;
        }
        let record_id = self
            .keep_new_within(&event, failure, verdict, attempt, Some(STORE_WITHIN))
            .await;
        let failure = Failure {
            topic: event.topic.clone(),
            idempotency_key: event.idempotency_key.clone(),
            verdict: verdict.clone(),
            record_id,
        };
        let answer = failure.stored_answer();
        let pin = self
            .store
            .settle(event.scope(), &event.idempotency_key, &owner, &answer);
        if !matches!(tokio::time::timeout(STORE_WITHIN, pin).await, Ok(Ok(_))) {
            tracing::warn!(topic = %event.topic, idempotency_key = %event.idempotency_key,
                "could not pin the key of an unfinished delivery; it stays in flight until \
                 its lease runs out");
        }
    }
}
