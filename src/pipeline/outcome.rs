//! What became of an event, as types: the pipeline says what happened, the edge renders it.
//!
//! Like vector's typed `KafkaResponse`, an [`Outcome`] carries what a caller needs to decide
//! (the ack's partition and offset, the failure's classification and record) rather than a
//! serialized answer. A replay ([`Outcome::Replayed`]) must be exactly what the first client got:
//! a `201` body is rendered by [`persisted_body`] from the acknowledgement's facts, the first
//! time and every time after; a failure's problem is made by [`Failure::problem`] and its bytes
//! are kept as they are.

use std::time::Duration;

use super::classify::Verdict;
use crate::contract::{Links, Persisted, Problem};
use crate::event::{Event, IdempotencyKey, TopicName};
use crate::idempotency::{Delivered, Position, Settlement, StoredAnswer, StoredProblem};
use crate::publisher::Ack;

/// What became of one submitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Kafka acknowledged the event during this request.
    Persisted(Receipt),
    /// The delivery ended without an acknowledgement.
    Failed(Failure),
    /// The key was settled before with this event: the first answer, byte for byte.
    Replayed(StoredAnswer),
    /// No delivery report within the wait timeout (for this request, or for the one that holds
    /// the key); the delivery goes on in the background.
    Accepted,
    /// Nothing was published, and why.
    Refused(Refusal),
    /// The delivery task ended without an answer (it panicked): whether the event is in Kafka
    /// is unknown until the key's lease runs out.
    Lost,
}

/// Why an event was not published. Each one leaves no record behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    TopicNotFound,
    /// Kafka metadata could not be read, so the topic could not be checked.
    KafkaUnavailable,
    /// The idempotency store did not answer: fail closed.
    StoreUnavailable,
    /// Another request holds the key right now.
    InFlight {
        retry_after: Duration,
    },
    /// The key was used with another event.
    Mismatch,
}

/// Kafka's acknowledgement of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Receipt {
    pub(crate) delivered: Delivered,
    /// The `201` body, rendered once for this client by [`persisted_body`], the function that
    /// renders it again for every replay.
    pub(crate) body: String,
}

impl Receipt {
    pub(crate) fn new(event: &Event, ack: Ack) -> Self {
        let delivered = Delivered {
            position: Position {
                partition: ack.partition,
                offset: ack.offset,
            },
            timestamp_ms: ack.timestamp_ms,
        };
        Receipt {
            delivered,
            body: persisted_body(&event.topic, &event.idempotency_key, delivered),
        }
    }

    pub(crate) fn position(&self) -> Position {
        self.delivered.position
    }

    /// What the idempotency store keeps: the facts, not the body.
    pub(crate) fn stored_answer(&self) -> StoredAnswer {
        StoredAnswer::Done(self.delivered)
    }
}

/// The `201` body of an acknowledged event. The first answer and every replay are rendered
/// here, from the same facts, so they are the same bytes.
pub(crate) fn persisted_body(
    topic: &TopicName,
    key: &IdempotencyKey,
    delivered: Delivered,
) -> String {
    let body = Persisted {
        status: "persisted".to_owned(),
        topic: topic.to_string(),
        partition: delivered.position.partition,
        offset: delivered.position.offset,
        timestamp: super::rfc3339_from_ms(delivered.timestamp_ms),
        idempotency_key: key.to_string(),
    };
    serde_json::to_string(&body).expect("a persisted body always serializes")
}

/// The status and body of a stored answer, as the first client got them.
pub(crate) fn stored_body(
    answer: &StoredAnswer,
    topic: &TopicName,
    key: &IdempotencyKey,
) -> (u16, String) {
    match answer {
        StoredAnswer::Done(delivered) => (201, persisted_body(topic, key, *delivered)),
        StoredAnswer::Failed(problem) | StoredAnswer::Released(problem) => {
            (problem.status, problem.body.clone())
        }
    }
}

/// A delivery that ended without an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) topic: TopicName,
    pub(crate) idempotency_key: IdempotencyKey,
    pub(crate) verdict: Verdict,
    /// The failure record that keeps the event, when one was written (or spooled).
    pub(crate) record_id: Option<String>,
}

impl Failure {
    /// What the idempotency store keeps for this failure, replayed to a retry of its key.
    pub(crate) fn stored_answer(&self) -> StoredAnswer {
        let problem = StoredProblem {
            status: self.status(),
            body: serde_json::to_string(&self.problem()).expect("a problem always serializes"),
        };
        match self.verdict.settlement() {
            Settlement::Released => StoredAnswer::Released(problem),
            // A failure is never `Done`; were it so, pinning is the safe reading.
            Settlement::Failed | Settlement::Done => StoredAnswer::Failed(problem),
        }
    }

    /// The problem document the client reads.
    pub(crate) fn problem(&self) -> Problem {
        let mut problem = Problem::new(self.verdict.row().code, self.verdict.detail());
        problem.persistence = Some(self.verdict.persistence.as_str().to_owned());
        problem.topic = Some(self.topic.to_string());
        problem.idempotency_key = Some(self.idempotency_key.to_string());
        if let Some(id) = &self.record_id {
            problem.detail = format!(
                "{} The event is kept in failure record {id}.",
                problem.detail
            );
            problem.links = Some(Links {
                failure: format!("/v1/failures/{id}"),
            });
            problem.failure_id = Some(id.clone());
        }
        problem
    }

    pub(crate) fn status(&self) -> u16 {
        self.verdict.row().code.status()
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.verdict.retry_after()
    }
}
