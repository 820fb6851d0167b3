//! Typed outcomes rendered as HTTP answers: the only place that decides what a client sees.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;

use super::error::{ApiError, json_response};
use crate::contract::{Accepted, ProblemCode, StatusLinks, status_path};
use crate::event::{IdempotencyKey, TopicName};
use crate::pipeline::{Failure, Outcome, Refusal, stored_body};

const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// An answer to one event, before it becomes an HTTP response (or one result of a batch).
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    /// JSON: the persisted document, the 202 body or a problem.
    pub(super) body: String,
    /// The first answer again (`Idempotent-Replayed: true`).
    pub(super) replayed: bool,
    /// `Retry-After`, where waiting may help.
    pub(super) retry_after: Option<Duration>,
    /// `Location`: the event's status resource, for a 202.
    pub(super) location: Option<String>,
}

impl Answer {
    fn new(status: u16, body: String) -> Self {
        Answer {
            status,
            body,
            replayed: false,
            retry_after: None,
            location: None,
        }
    }

    pub(super) fn into_response(self) -> Response {
        let mut response = json_response(self.status, self.body, self.retry_after);
        let headers = response.headers_mut();
        if self.replayed {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        if let Some(location) = self.location.and_then(|l| HeaderValue::try_from(l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        response
    }
}

impl From<ApiError> for Answer {
    fn from(error: ApiError) -> Self {
        let (status, body, retry_after) = error.into_parts();
        Answer {
            retry_after,
            ..Answer::new(status, body)
        }
    }
}

/// The answer to an event request.
pub(super) fn outcome(outcome: Outcome, topic: &TopicName, key: &IdempotencyKey) -> Response {
    answer(outcome, topic, key).into_response()
}

/// What a client hears of an event's outcome.
pub(super) fn answer(outcome: Outcome, topic: &TopicName, key: &IdempotencyKey) -> Answer {
    match outcome {
        Outcome::Persisted(receipt) => Answer::new(201, receipt.body),
        Outcome::Failed(failure) => Answer {
            retry_after: failure.retry_after(),
            ..Answer::new(
                failure.status(),
                serde_json::to_string(&failure.problem()).expect("a problem always serializes"),
            )
        },
        Outcome::Replayed(answer) => {
            let (status, body) = stored_body(&answer, topic, key);
            Answer {
                replayed: true,
                ..Answer::new(status, body)
            }
        }
        Outcome::Accepted => accepted(topic, key),
        Outcome::Refused(why) => refusal(why).into(),
        Outcome::Lost => ApiError::new(
            ProblemCode::Internal,
            "The delivery ended without an answer; the event may or may not be in Kafka. GET \
             its status, or retry with the same Idempotency-Key after a while.",
        )
        .into(),
    }
}

/// A delivery failure's problem document, with `Retry-After` when a retry may help.
pub(super) fn failure(failure: &Failure) -> Response {
    json_response(
        failure.status(),
        serde_json::to_string(&failure.problem()).expect("a problem always serializes"),
        failure.retry_after(),
    )
}

/// A stable label for the request span.
pub(super) fn label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Persisted(_) => "persisted",
        Outcome::Failed(failure) if failure.status() < 500 => "rejected",
        Outcome::Failed(_) => "failed",
        Outcome::Replayed(_) => "replayed",
        Outcome::Accepted => "accepted",
        Outcome::Refused(why) => refusal_code(why).slug(),
        Outcome::Lost => ProblemCode::Internal.slug(),
    }
}

/// `202 Accepted`: Kafka has not answered within the wait timeout. The same answer goes to
/// every retry of the key until the delivery settles.
fn accepted(topic: &TopicName, key: &IdempotencyKey) -> Answer {
    let location = status_path(topic.as_str(), key.as_str());
    let body = Accepted {
        status: "accepted".to_owned(),
        topic: topic.to_string(),
        idempotency_key: key.to_string(),
        detail: "Kafka has not answered yet; the delivery goes on. GET the status link for the \
                 outcome, or retry with the same Idempotency-Key."
            .to_owned(),
        links: StatusLinks {
            status: location.clone(),
        },
    };
    Answer {
        location: Some(location),
        ..Answer::new(
            202,
            serde_json::to_string(&body).expect("an accepted body always serializes"),
        )
    }
}

fn refusal_code(refusal: &Refusal) -> ProblemCode {
    match refusal {
        Refusal::TopicNotFound => ProblemCode::TopicNotFound,
        Refusal::KafkaUnavailable => ProblemCode::KafkaUnavailable,
        Refusal::StoreUnavailable => ProblemCode::IdempotencyStoreUnavailable,
        Refusal::InFlight { .. } => ProblemCode::RequestInProgress,
        Refusal::Mismatch => ProblemCode::IdempotencyKeyReused,
    }
}

/// Why nothing was published, as a problem.
pub(super) fn refusal(refusal: Refusal) -> ApiError {
    let code = refusal_code(&refusal);
    match refusal {
        Refusal::TopicNotFound => ApiError::new(
            code,
            "The topic does not exist. Create it first; the gateway does not create topics.",
        ),
        Refusal::KafkaUnavailable => ApiError::new(
            code,
            "Kafka metadata could not be read, so the topic could not be checked. Nothing was \
             published; retry later with the same Idempotency-Key.",
        )
        .retry_after(Duration::from_secs(1)),
        Refusal::StoreUnavailable => ApiError::new(
            code,
            "The idempotency store (Redis) did not answer, and the gateway never publishes what \
             it cannot deduplicate. Nothing was published; retry later with the same \
             Idempotency-Key.",
        )
        .retry_after(Duration::from_secs(1)),
        Refusal::InFlight { retry_after } => ApiError::new(
            code,
            "Another request with this Idempotency-Key is being delivered. Retry later to get \
             its answer.",
        )
        .retry_after(retry_after.min(Duration::from_secs(1))),
        Refusal::Mismatch => ApiError::new(
            code,
            "This Idempotency-Key was used for a different event (topic, Kafka-Key, headers or \
             body differ). Use a new key for a new event.",
        ),
    }
}
