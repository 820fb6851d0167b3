//! The path of one event: check the topic, claim the key, publish, settle — or keep a failure.
//!
//! This is where the three domain modules meet; none of them knows the others. The steps run
//! in this order for a reason:
//!
//! 1. The topic is checked *before* the key is claimed, so a typo costs nothing and leaves no
//!    record behind.
//! 2. The claim is one atomic step in the store. If the store cannot answer, nothing is
//!    published: the gateway never publishes what it cannot dedupe.
//! 3. Publishing and settling run in a task of their own. hyper drops a handler's future when
//!    the client disconnects; if the delivery were awaited there, the outcome would never be
//!    written, the key would stay in flight, and the retry after the lease would publish a
//!    duplicate. The handler only waits for the task's answer.
//! 4. The answer comes from the delivery report, never before it. A request that waited
//!    `wait_timeout` without one is answered `202 Accepted`; the task records the outcome when
//!    it arrives, for `GET /v1/topics/{topic}/events/{key}`.

mod dead_letter;
mod operator;

pub use self::dead_letter::DeadLetters;

pub use self::operator::{OperatorError, RetryOutcome};

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use crate::contract::{Links, Persisted, Problem, ProblemCode};
use crate::event::Event;
use crate::failures::{
    FailureError, FailureRecord, FailureState, FailureStore, Spool, StoredEvent,
};
use crate::idempotency::{Claim, Claimant, IdempotencyStore, Settlement, StoredResponse};
use crate::publisher::{Ack, DeliveryFailure, FailureKind, Persistence, Publisher, TopicStatus};

/// How long a client is told to wait before retrying after a transient failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often settling is tried when Redis fails right after Kafka acknowledged.
const SETTLE_ATTEMPTS: u32 = 10;

/// Why an event was not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TopicNotFound,
    /// Kafka metadata could not be read, so the topic could not be checked.
    KafkaUnavailable,
    /// The idempotency store did not answer: fail closed.
    StoreUnavailable,
    /// Another request holds the key; `accepted` once that request was answered 202.
    InFlight {
        retry_after: Duration,
        accepted: bool,
    },
    /// The key was used with another event.
    Mismatch,
}

/// What became of a submitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// The delivery ended (or had ended before): this is the answer.
    Answered(Answer),
    /// No delivery report within the wait timeout; the delivery goes on in the background.
    Accepted,
}

/// A final answer to an event request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub response: StoredResponse,
    /// True when the answer is a stored one, replayed.
    pub replayed: bool,
    /// Set when retrying the same request later may succeed.
    pub retry_after: Option<Duration>,
}

/// The shared path of every event.
#[derive(Clone)]
pub struct Pipeline {
    store: Arc<dyn IdempotencyStore>,
    failures: Arc<dyn FailureStore>,
    spool: Spool,
    publisher: Arc<Publisher>,
    tasks: TaskTracker,
    wait_timeout: Duration,
    /// Set when failure records are mirrored to dead-letter topics.
    dead_letters: Option<DeadLetters>,
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn IdempotencyStore>,
        failures: Arc<dyn FailureStore>,
        spool: Spool,
        publisher: Arc<Publisher>,
        tasks: TaskTracker,
        wait_timeout: Duration,
        dead_letters: Option<DeadLetters>,
    ) -> Self {
        Pipeline {
            store,
            failures,
            spool,
            publisher,
            tasks,
            wait_timeout,
            dead_letters,
        }
    }

    /// Publishes `event` once per idempotency key and answers with what Kafka said.
    pub async fn submit(&self, event: Event) -> Result<Submitted, Refusal> {
        match self.publisher.topic_status(&event.topic).await {
            Ok(TopicStatus::Exists) => {}
            Ok(TopicStatus::Missing) => return Err(Refusal::TopicNotFound),
            Err(error) => {
                tracing::warn!(%error, topic = %event.topic, "could not read topic metadata");
                return Err(Refusal::KafkaUnavailable);
            }
        }

        let owner = ulid::Ulid::new().to_string();
        let claim = self
            .store
            .claim(
                &event.topic,
                &event.idempotency_key,
                &event.fingerprint(),
                &owner,
                Claimant::Client,
            )
            .await;
        let claim = match claim {
            Ok(claim) => claim,
            Err(error) => {
                tracing::error!(error = &error as &dyn std::error::Error, "claim failed");
                metrics::counter!("ackgate_dedupe_outcomes_total", "outcome" => "store_unavailable")
                    .increment(1);
                return Err(Refusal::StoreUnavailable);
            }
        };
        metrics::counter!("ackgate_dedupe_outcomes_total", "outcome" => claim.label()).increment(1);
        let attempt = match claim {
            Claim::Claimed { attempt } => attempt,
            Claim::Replay(response) => {
                return Ok(Submitted::Answered(Answer {
                    response,
                    replayed: true,
                    retry_after: None,
                }));
            }
            Claim::InFlight {
                retry_after,
                accepted,
            } => {
                return Err(Refusal::InFlight {
                    retry_after,
                    accepted,
                });
            }
            Claim::Mismatch => return Err(Refusal::Mismatch),
        };
        if attempt > 1 {
            tracing::warn!(
                topic = %event.topic,
                idempotency_key = %event.idempotency_key,
                attempt,
                "took over the key of a gateway that did not settle it in time; \
                 the event may be in Kafka twice (consumers dedupe by the idempotency-key header)"
            );
        }

        let topic = event.topic.clone();
        let key = event.idempotency_key.clone();
        let (reply, answer) = oneshot::channel();
        let this = self.clone();
        let owner_for_task = owner.clone();
        self.tasks.spawn(async move {
            this.deliver(event, owner_for_task, attempt, reply).await;
        });
        match tokio::time::timeout(self.wait_timeout, answer).await {
            Ok(Ok(answer)) => Ok(Submitted::Answered(answer)),
            // The task always replies before it returns, unless it panicked.
            Ok(Err(_)) => Err(Refusal::StoreUnavailable),
            Err(_) => {
                // Retries of this key now get the same 202 instead of 409. If this fails, they
                // get 409 until the delivery settles: still correct, only less friendly.
                if let Err(error) = self.store.mark_accepted(&topic, &key, &owner).await {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "could not mark a key accepted"
                    );
                }
                Ok(Submitted::Accepted)
            }
        }
    }

    /// Publishes, answers through `reply`, then finishes the bookkeeping even if nobody waits.
    async fn deliver(
        &self,
        event: Event,
        owner: String,
        attempt: u32,
        reply: oneshot::Sender<Answer>,
    ) {
        let started = Instant::now();
        let report = self.publisher.publish(&event).await;
        metrics::histogram!("ackgate_produce_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match report {
            Ok(ack) => {
                let response = persisted_response(&event, ack);
                let _ = reply.send(Answer {
                    response: response.clone(),
                    replayed: false,
                    retry_after: None,
                });
                self.settle_persisted(&event, &owner, &response).await;
            }
            Err(failure) => {
                metrics::counter!("ackgate_delivery_errors_total", "code" => failure.code_name())
                    .increment(1);
                let answer = self
                    .handle_failure(&event, &owner, attempt, failure, None)
                    .await;
                let _ = reply.send(answer);
            }
        }
    }

    /// Kafka has the event: the client gets 201 whatever happens next. If Redis fails now, keep
    /// trying for as long as the lease protects the key, so a retry replays instead of
    /// publishing again.
    async fn settle_persisted(&self, event: &Event, owner: &str, response: &StoredResponse) {
        let mut backoff = Duration::from_millis(50);
        for _ in 0..SETTLE_ATTEMPTS {
            match self
                .store
                .settle(
                    &event.topic,
                    &event.idempotency_key,
                    owner,
                    Settlement::Done,
                    response,
                )
                .await
            {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        topic = %event.topic, idempotency_key = %event.idempotency_key,
                        "the key was taken over before this delivery settled"
                    );
                    return;
                }
                Err(error) => {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "settle failed; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        tracing::error!(
            topic = %event.topic, idempotency_key = %event.idempotency_key, body = %response.body,
            "could not record a persisted event in the idempotency store; \
             a retry after the lease may publish it again"
        );
    }

    async fn handle_failure(
        &self,
        event: &Event,
        owner: &str,
        attempt: u32,
        failure: DeliveryFailure,
        // An operator's retry updates the record it retries instead of making a new one.
        retried: Option<&FailureRecord>,
    ) -> Answer {
        let (code, retry_after) = match failure.kind {
            FailureKind::QueueFull => (ProblemCode::Overloaded, Some(RETRY_AFTER)),
            FailureKind::MessageTooLarge => (ProblemCode::MessageTooLarge, None),
            FailureKind::UnknownTopic => (ProblemCode::TopicNotFound, None),
            FailureKind::RecordRejected => (ProblemCode::RecordRejected, None),
            FailureKind::NotAuthorized => (ProblemCode::TopicNotAuthorized, None),
            FailureKind::TimedOut => (ProblemCode::DeliveryTimedOut, Some(RETRY_AFTER)),
            FailureKind::ProducerFatal | FailureKind::Unavailable => {
                (ProblemCode::DeliveryFailed, Some(RETRY_AFTER))
            }
        };
        // An acknowledgement with an error would be a librdkafka bug; treat it as ambiguous.
        let persistence = match failure.persistence {
            Persistence::Persisted => Persistence::PossiblyPersisted,
            other => other,
        };

        let mut problem = Problem::new(code, detail(code, persistence));
        problem.persistence = Some(persistence.as_str().to_owned());
        problem.topic = Some(event.topic.to_string());
        problem.idempotency_key = Some(event.idempotency_key.to_string());

        // Back-pressure and the client's own mistakes need no operator; every other failure
        // keeps the event where an operator can find it.
        let keep = failure.kind != FailureKind::QueueFull && !failure.kind.is_client_fault();
        if keep || retried.is_some() {
            let kept = match retried {
                Some(previous) => {
                    let record = FailureRecord {
                        state: FailureState::Open,
                        error: failure_error(&failure),
                        persistence: persistence.as_str().to_owned(),
                        http_status: code.status(),
                        attempts: previous.attempts + 1,
                        updated_at: now_rfc3339(),
                        ..previous.clone()
                    };
                    log_failure(&record);
                    self.reopen(&record).await;
                    Some(record)
                }
                None => {
                    let record =
                        failure_record(event, &failure, persistence, code.status(), attempt);
                    self.keep(&record).await.then_some(record)
                }
            };
            if let Some(record) = kept {
                problem.detail = format!(
                    "{} The event is kept in failure record {}.",
                    problem.detail, record.id
                );
                problem.links = Some(Links {
                    failure: format!("/v1/failures/{}", record.id),
                });
                problem.failure_id = Some(record.id.clone());
            }
        }

        let response = StoredResponse {
            status: code.status(),
            body: serde_json::to_string(&problem).expect("a problem always serializes"),
        };
        let settlement = match persistence {
            // Nothing was written: the next request with this key publishes again.
            Persistence::NotPersisted => Settlement::Released,
            // It may be in Kafka: pin the key to this answer until an operator acts, so a retry
            // cannot publish it a second time.
            _ => Settlement::Failed,
        };
        if let Err(error) = self
            .store
            .settle(
                &event.topic,
                &event.idempotency_key,
                owner,
                settlement,
                &response,
            )
            .await
        {
            // The key stays in flight until its lease runs out, then it can be claimed again.
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                "could not settle a failed key"
            );
        }
        Answer {
            response,
            replayed: false,
            retry_after: retry_after.filter(|_| persistence == Persistence::NotPersisted),
        }
    }
}

impl Pipeline {
    /// Keeps a failure record: in the store, or else in the local spool. Returns whether it
    /// is kept (it is always logged, whole).
    async fn keep(&self, record: &FailureRecord) -> bool {
        log_failure(record);
        metrics::counter!("ackgate_failure_records_created_total",
            "topic" => record.event.topic.clone(), "code" => record.error.code.clone())
        .increment(1);
        if let Some(dead_letters) = &self.dead_letters {
            dead_letters.enqueue(&record.id);
        }
        let Err(error) = self.failures.insert(record).await else {
            return true;
        };
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            failure_id = %record.id,
            "failure store unavailable; spooling the record locally"
        );
        match self.spool.append(record).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(
                    %error,
                    failure_id = %record.id,
                    spool = %self.spool.path().display(),
                    "could not spool a failure record; only the log line above keeps the event"
                );
                false
            }
        }
    }
}

fn detail(code: ProblemCode, persistence: Persistence) -> String {
    let written = match persistence {
        Persistence::NotPersisted => {
            "It was not written; retrying with the same Idempotency-Key is safe."
        }
        _ => {
            "It may have been written; retries with this Idempotency-Key replay this answer \
             until an operator resolves the failure."
        }
    };
    let what = match code {
        ProblemCode::Overloaded => "The gateway's queue to Kafka is full.",
        ProblemCode::MessageTooLarge => {
            "Kafka refused the record as larger than the broker or topic accepts."
        }
        ProblemCode::TopicNotFound => "The topic does not exist.",
        ProblemCode::RecordRejected => "Kafka rejected the record (invalid record or policy).",
        ProblemCode::TopicNotAuthorized => {
            "The gateway's credentials do not allow writing to this topic."
        }
        ProblemCode::DeliveryTimedOut => {
            "Kafka did not acknowledge the event within the delivery timeout."
        }
        _ => "Kafka could not take the event.",
    };
    format!("{what} {written}")
}

fn persisted_response(event: &Event, ack: Ack) -> StoredResponse {
    let body = Persisted {
        status: "persisted".to_owned(),
        topic: event.topic.to_string(),
        partition: ack.partition,
        offset: ack.offset,
        timestamp: rfc3339_from_ms(ack.timestamp_ms),
        idempotency_key: event.idempotency_key.to_string(),
    };
    StoredResponse {
        status: 201,
        body: serde_json::to_string(&body).expect("a persisted body always serializes"),
    }
}

fn failure_record(
    event: &Event,
    failure: &DeliveryFailure,
    persistence: Persistence,
    http_status: u16,
    attempt: u32,
) -> FailureRecord {
    FailureRecord {
        id: ulid::Ulid::new().to_string(),
        state: FailureState::Open,
        created_at: now_rfc3339(),
        event: StoredEvent::from(event),
        error: failure_error(failure),
        persistence: persistence.as_str().to_owned(),
        http_status,
        attempts: attempt,
        updated_at: now_rfc3339(),
        resolution: None,
        dead_letter: None,
    }
}

fn failure_error(failure: &DeliveryFailure) -> FailureError {
    FailureError {
        code: failure.code_name(),
        kind: format!("{:?}", failure.kind),
        reason: failure.reason.clone(),
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// One structured line per failure, with the whole record: even if every store is down, the
/// event can be recovered from the logs.
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

pub(crate) fn rfc3339_from_ms(ms: i64) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    at.format(&Rfc3339).ok()
}
