//! The path of one event: check the topic, claim the key, publish, settle — or keep a failure.
//!
//! This is where the three domain modules meet; none of them knows the others, and the HTTP
//! layer reaches them only through [`Pipeline`]. The steps run in this order for a reason:
//!
//! 1. The topic is checked *before* the key is claimed, so a typo costs nothing and leaves no
//!    record behind.
//! 2. The claim is one atomic step in the store. If the store cannot answer, nothing is
//!    published: the gateway never publishes what it cannot dedupe.
//! 3. Publishing and settling run in a task of their own ([`delivery`]). hyper drops a
//!    handler's future when the client disconnects; if the delivery were awaited there, the
//!    outcome would never be written, the key would stay in flight, and the retry after the
//!    lease would publish a duplicate. The handler only waits for the task's answer.
//! 4. The answer comes from the delivery report, never before it. A request that waited
//!    `wait_timeout` without one is answered `202 Accepted`; the task records the outcome when
//!    it arrives, for `GET /v1/topics/{topic}/events/{key}`.
//!
//! Client requests and the operator's retries ([`operator`]) share steps 2 to 4; a batch
//! ([`batch`]) takes them for many events at once.
//!
//! - [`outcome`]: what became of an event, as types the edge renders.
//! - [`classify`]: the table from a failed delivery to its answer.
//! - [`delivery`]: the one claimed-delivery path.
//! - [`lease`]: holding a claimed key until it is settled (renewals, settle retries).
//! - [`records`]: keeping failure records (store, spool, log).
//! - [`unfinished`]: the deliveries running now, kept at exit if the grace period cut them short.

mod batch;
mod classify;
mod dead_letter;
mod delivery;
mod lease;
mod operator;
mod outcome;
mod records;
#[cfg(test)]
mod tests;
mod unfinished;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::error::Elapsed;
use tokio_util::task::TaskTracker;

pub(crate) use self::dead_letter::DeadLetters;
use self::delivery::Keep;
pub(crate) use self::operator::{OperatorError, RetryOutcome};
pub(crate) use self::outcome::{Failure, Outcome, Refusal, stored_body};
pub(crate) use self::unfinished::Unfinished;
use crate::event::{Event, IdempotencyKey, KeyScope};
use crate::failures::{
    FailureFilter, FailurePage, FailureRecord, FailureStore, FailureStoreError, Spool,
};
use crate::idempotency::{Claimant, IdempotencyStore, KeyStatus, StoreError, StoreHealth};
use crate::publisher::{Publisher, TopicStatus};
use rdkafka::error::KafkaError;

/// The shared path of every event, and the only way the HTTP layer reaches the stores and the
/// producer. Cloning it (once per delivery task) costs one reference count.
#[derive(Clone)]
pub(crate) struct Pipeline(Arc<Parts>);

/// The parts a [`Pipeline`] is made of.
pub(crate) struct Parts {
    pub(crate) store: Arc<dyn IdempotencyStore>,
    pub(crate) failures: Arc<dyn FailureStore>,
    pub(crate) spool: Spool,
    pub(crate) publisher: Arc<Publisher>,
    /// Delivery tasks are tracked so that shutdown can wait for their reports.
    pub(crate) tasks: TaskTracker,
    /// How long a request waits for the delivery report before it is answered 202.
    pub(crate) wait_timeout: Duration,
    /// Set when failure records are mirrored to dead-letter topics.
    pub(crate) dead_letters: Option<DeadLetters>,
    /// The deliveries running now.
    pub(crate) unfinished: Arc<Unfinished>,
}

/// The pipeline's steps read its parts as their own fields.
impl std::ops::Deref for Pipeline {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// What readiness depends on; `Err(Elapsed)` when a check did not answer in time.
pub(crate) struct Readiness {
    pub(crate) store: Result<Result<StoreHealth, StoreError>, Elapsed>,
    /// How many brokers Kafka metadata lists.
    pub(crate) kafka: Result<Result<usize, KafkaError>, Elapsed>,
    /// librdkafka's latest client error, which says why metadata could not be read.
    pub(crate) kafka_reason: Option<String>,
    /// The producer hit a fatal error and is not rebuilt yet.
    pub(crate) producer_fatal: bool,
}

impl Pipeline {
    pub(crate) fn new(parts: Parts) -> Self {
        Pipeline(Arc::new(parts))
    }

    /// Publishes `event` once per idempotency key and says what Kafka said.
    pub(crate) async fn submit(&self, event: Event) -> Outcome {
        match self.publisher.topic_status(&event.topic).await {
            Ok(TopicStatus::Exists) => {}
            Ok(TopicStatus::Missing) => return Outcome::Refused(Refusal::TopicNotFound),
            Err(error) => {
                tracing::warn!(%error, topic = %event.topic, "could not read topic metadata");
                return Outcome::Refused(Refusal::KafkaUnavailable);
            }
        }
        let claimed = match self.claim(event, Claimant::Client).await {
            Ok(claimed) => claimed,
            Err(not_claimed) => return not_claimed.outcome(),
        };
        let (principal, topic, key, owner) = claimed.names();
        let answer = self.spawn_delivery(claimed, Keep::NewRecord);
        match tokio::time::timeout(self.wait_timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            // The task always answers before it returns, unless it panicked.
            Ok(Err(_)) => Outcome::Lost,
            Err(_) => {
                let scope = KeyScope {
                    principal: &principal,
                    topic: &topic,
                };
                // Retries of this key now get the same 202 instead of 409. If this fails, they
                // get 409 until the delivery settles: still correct, only less friendly.
                if let Err(error) = self.store.mark_accepted(scope, &key, &owner).await {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "could not mark a key accepted"
                    );
                }
                Outcome::Accepted
            }
        }
    }

    /// The current state of an event's key, if it has a record.
    pub(crate) async fn status(
        &self,
        scope: KeyScope<'_>,
        key: &IdempotencyKey,
    ) -> Result<Option<KeyStatus>, StoreError> {
        self.store.status(scope, key).await
    }

    /// One page of failure records.
    pub(crate) async fn list_failures(
        &self,
        filter: &FailureFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<FailurePage, FailureStoreError> {
        self.failures.list(filter, cursor, limit).await
    }

    /// One failure record.
    pub(crate) async fn failure(
        &self,
        id: &str,
    ) -> Result<Option<FailureRecord>, FailureStoreError> {
        self.failures.get(id).await
    }

    /// Whether the idempotency store answers, and what it warns about.
    pub(crate) async fn store_health(&self) -> Result<StoreHealth, StoreError> {
        self.store.health().await
    }

    /// Asks the store and Kafka whether they answer, each within `timeout`.
    pub(crate) async fn readiness(&self, timeout: Duration) -> Readiness {
        let (store, kafka) = tokio::join!(
            tokio::time::timeout(timeout, self.store.health()),
            tokio::time::timeout(timeout, self.publisher.health()),
        );
        Readiness {
            store,
            kafka,
            kafka_reason: self.publisher.recent_client_error(),
            producer_fatal: self.publisher.is_fatal(),
        }
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn rfc3339_from_ms(ms: i64) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    at.format(&Rfc3339).ok()
}
