//! The bodies of the public contract: what a client reads back.
//!
//! Kept apart from the HTTP plumbing because the pipeline builds and stores these bodies (a
//! replay must be byte-for-byte the first answer), and the OpenAPI document describes them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The answer to an event Kafka acknowledged (`201 Created`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "status": "persisted", "topic": "orders", "partition": 2, "offset": 1234,
    "timestamp": "2026-11-23T14:00:00.123Z", "idempotency_key": "7f1c9a0e-order-1001"
}))]
pub(crate) struct Persisted {
    #[schema(schema_with = always_persisted)]
    pub status: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (RFC 3339, UTC).
    pub timestamp: Option<String>,
    pub idempotency_key: String,
}

/// The answer to an event whose delivery outlived the wait timeout (`202 Accepted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "status": "accepted", "topic": "orders", "idempotency_key": "7f1c9a0e-order-1001",
    "detail": "Kafka has not answered yet; the delivery goes on. Poll the status link.",
    "links": {"status": "/v1/topics/orders/events/7f1c9a0e-order-1001"}
}))]
pub(crate) struct Accepted {
    #[schema(schema_with = always_accepted)]
    pub status: String,
    pub topic: String,
    pub idempotency_key: String,
    pub detail: String,
    pub links: StatusLinks,
}

/// A string that is always `value`: a one-value enum, so that generated clients get a literal
/// type to tell the answers apart by, and refuse another kind of document in its place.
fn always(value: &str, description: &str) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some([value]))
        .description(Some(description))
        .build()
}

fn always_persisted() -> utoipa::openapi::Object {
    always(
        "persisted",
        "Always `persisted`: it tells this document from an `Accepted` one and a problem.",
    )
}

fn always_accepted() -> utoipa::openapi::Object {
    always(
        "accepted",
        "Always `accepted`: it tells this document from a `Persisted` one and a problem.",
    )
}

/// Any answer to one event: `201` `Persisted`, `202` `Accepted` or a problem document (the
/// HTTP status says which). Each has required fields the others lack.
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub(crate) enum EventAnswer {
    Persisted(Persisted),
    Accepted(Accepted),
    Problem(Problem),
}

/// A publish's success: `201` `Persisted` or `202` `Accepted` (`status` tells them apart).
// Both success codes share it: generators that give an operation one return type (OpenAPI
// Generator's Java and typescript-fetch clients) type it from the first 2xx alone, and could not
// read a 202 otherwise.
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub(crate) enum PublishAnswer {
    Persisted(Persisted),
    Accepted(Accepted),
}

/// A final answer to one event: `Persisted` (`201`) or a problem document; `null` while the
/// event is in flight.
// The null is the schema's own rather than the field's: OpenAPI Generator's Java client
// deserializes a null into a oneOf model only when the model itself admits null.
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub(crate) enum FinalAnswer {
    Persisted(Persisted),
    Problem(Problem),
    None,
}

/// Where to follow an accepted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct StatusLinks {
    /// `GET` this for the outcome (also sent as `Location`).
    pub status: String,
}

/// The current outcome of an event, by idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "state": "persisted", "topic": "orders", "idempotency_key": "7f1c9a0e-order-1001",
    "answer_status": 201,
    "answer": {"status": "persisted", "topic": "orders", "partition": 2, "offset": 1234,
               "timestamp": "2026-11-23T14:00:00.123Z", "idempotency_key": "7f1c9a0e-order-1001"}
}))]
pub(crate) struct EventStatus {
    /// `in_flight`, `persisted`, `failed` (may be in Kafka; pinned until an operator acts) or
    /// `not_persisted` (certainly not written; sending it again publishes it).
    pub state: String,
    pub topic: String,
    pub idempotency_key: String,
    /// The HTTP status of the final answer, once there is one.
    pub answer_status: Option<u16>,
    /// The final answer's body: a `Persisted` body or a problem document; `null` while in flight.
    #[schema(value_type = FinalAnswer)]
    pub answer: Option<Box<serde_json::value::RawValue>>,
}

/// A batch of events for one topic (`POST /v1/topics/{topic}/events:batch`). It documents the
/// request; the handler reads an event field by field (`http/batch/parse.rs`), so that a bad
/// event is its own 400 and a value keeps its exact text.
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
#[schema(example = json!({"events": [
    {"idempotency_key": "o-1001", "key": "customer-42", "headers": {"trace-id": "abc"},
     "value": {"order": 1001}},
    {"idempotency_key": "o-1002", "value_base64": "AAEC", "content_type": "application/octet-stream"}
]}))]
pub(crate) struct BatchRequest {
    /// The events, at most `--max-batch-events` (500 by default), each with its own
    /// idempotency key.
    pub events: Vec<BatchEvent>,
}

/// One event of a batch: what `POST /v1/topics/{topic}/events` takes in headers and body, as
/// fields. Exactly one of `value` and `value_base64`. Leave a field out rather than send
/// `null`: only `value` may be `null` (a record value of `null`).
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
pub(crate) struct BatchEvent {
    /// 1-255 visible ASCII characters; the same key space as the `Idempotency-Key` header.
    pub idempotency_key: String,
    /// The record key (decides the partition).
    #[schema(value_type = String, required = false)]
    pub key: Option<String>,
    /// Record headers (string values), in this order. `idempotency-key`, `content-type` and
    /// the prefix `dlt-` are reserved.
    #[schema(value_type = std::collections::BTreeMap<String, String>, required = false)]
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
    /// Any JSON: the record value is this JSON text exactly as it appears in the request, with
    /// record header `content-type: application/json` (or `content_type`, a JSON type).
    #[schema(value_type = serde_json::Value, required = false)]
    pub value: Option<serde_json::Value>,
    /// The record value as standard base64 (with padding): raw bytes.
    #[schema(value_type = String, format = Byte, required = false)]
    pub value_base64: Option<String>,
    /// Copied to the record header `content-type`. A JSON type requires a value that parses.
    #[schema(value_type = String, required = false)]
    pub content_type: Option<String>,
}

/// The answer to a batch (`207 Multi-Status`): one result per event, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchResponse {
    pub results: Vec<BatchResult>,
}

/// What `POST /v1/topics/{topic}/events` would have answered for this event alone.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"idempotency_key": "o-1001", "status": 201, "replayed": false,
    "body": {"status": "persisted", "topic": "orders", "partition": 2, "offset": 1234,
             "timestamp": "2026-11-23T14:00:00.123Z", "idempotency_key": "o-1001"}}))]
pub(crate) struct BatchResult {
    /// The event's key as sent; null when it was missing or not a string.
    pub idempotency_key: Option<String>,
    /// The HTTP status the event would have had alone.
    pub status: u16,
    /// The first answer to this key, again (`Idempotent-Replayed: true` alone).
    pub replayed: bool,
    /// The body it would have had alone: a `Persisted` or `Accepted` document, or a problem.
    #[schema(value_type = EventAnswer)]
    pub body: Box<serde_json::value::RawValue>,
    /// Seconds to wait before retrying this event, where `Retry-After` would have been sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// The path of an event's status resource; the key is percent-encoded as a path segment.
pub(crate) fn status_path(topic: &str, key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("/v1/topics/{topic}/events/{encoded}")
}

/// Every kind of error, with its HTTP status and stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProblemCode {
    MissingIdempotencyKey,
    InvalidIdempotencyKey,
    InvalidTopic,
    InvalidHeader,
    InvalidJson,
    InvalidBody,
    PayloadTooLarge,
    BodyTimeout,
    MessageTooLarge,
    TopicNotFound,
    RecordRejected,
    TopicNotAuthorized,
    RequestInProgress,
    IdempotencyKeyReused,
    Overloaded,
    KafkaUnavailable,
    DeliveryTimedOut,
    DeliveryFailed,
    IdempotencyStoreUnavailable,
    FailureStoreUnavailable,
    FailureNotFound,
    FailureNotOpen,
    EventNotFound,
    InvalidQuery,
    NotFound,
    MethodNotAllowed,
    Internal,
    Unauthenticated,
    TopicForbidden,
    Forbidden,
    RateLimited,
    InvalidBatch,
    DuplicateIdempotencyKey,
    TooManyEvents,
    UnsupportedMediaType,
}

impl ProblemCode {
    /// The stable code, also the last part of the problem `type`.
    pub(crate) fn slug(self) -> &'static str {
        use ProblemCode::*;
        match self {
            MissingIdempotencyKey => "missing-idempotency-key",
            InvalidIdempotencyKey => "invalid-idempotency-key",
            InvalidTopic => "invalid-topic",
            InvalidHeader => "invalid-header",
            InvalidJson => "invalid-json",
            InvalidBody => "invalid-body",
            PayloadTooLarge => "payload-too-large",
            BodyTimeout => "body-timeout",
            MessageTooLarge => "message-too-large",
            TopicNotFound => "topic-not-found",
            RecordRejected => "record-rejected",
            TopicNotAuthorized => "topic-not-authorized",
            RequestInProgress => "request-in-progress",
            IdempotencyKeyReused => "idempotency-key-reused",
            Overloaded => "overloaded",
            KafkaUnavailable => "kafka-unavailable",
            DeliveryTimedOut => "delivery-timed-out",
            DeliveryFailed => "delivery-failed",
            IdempotencyStoreUnavailable => "idempotency-store-unavailable",
            FailureStoreUnavailable => "failure-store-unavailable",
            FailureNotFound => "failure-not-found",
            FailureNotOpen => "failure-not-open",
            EventNotFound => "event-not-found",
            InvalidQuery => "invalid-query",
            NotFound => "not-found",
            MethodNotAllowed => "method-not-allowed",
            Internal => "internal",
            Unauthenticated => "unauthenticated",
            TopicForbidden => "topic-forbidden",
            Forbidden => "forbidden",
            RateLimited => "rate-limited",
            InvalidBatch => "invalid-batch",
            DuplicateIdempotencyKey => "duplicate-idempotency-key",
            TooManyEvents => "too-many-events",
            UnsupportedMediaType => "unsupported-media-type",
        }
    }

    pub(crate) fn status(self) -> u16 {
        use ProblemCode::*;
        match self {
            MissingIdempotencyKey
            | InvalidIdempotencyKey
            | InvalidTopic
            | InvalidHeader
            | InvalidJson
            | InvalidBody
            | InvalidQuery
            | InvalidBatch
            | DuplicateIdempotencyKey => 400,
            Unauthenticated => 401,
            TopicNotAuthorized | TopicForbidden | Forbidden => 403,
            TopicNotFound | FailureNotFound | EventNotFound | NotFound => 404,
            MethodNotAllowed => 405,
            BodyTimeout => 408,
            RequestInProgress | FailureNotOpen => 409,
            PayloadTooLarge | MessageTooLarge | TooManyEvents => 413,
            UnsupportedMediaType => 415,
            RecordRejected | IdempotencyKeyReused => 422,
            RateLimited => 429,
            Internal => 500,
            Overloaded
            | KafkaUnavailable
            | DeliveryFailed
            | IdempotencyStoreUnavailable
            | FailureStoreUnavailable => 503,
            DeliveryTimedOut => 504,
        }
    }

    pub(crate) fn title(self) -> &'static str {
        use ProblemCode::*;
        match self {
            MissingIdempotencyKey => "Idempotency-Key header is missing",
            InvalidIdempotencyKey => "Idempotency-Key header is invalid",
            InvalidTopic => "Invalid topic name",
            InvalidHeader => "Invalid header",
            InvalidJson => "Body is not valid JSON",
            InvalidBody => "Body could not be read",
            PayloadTooLarge => "Body too large",
            BodyTimeout => "Body not received in time",
            MessageTooLarge => "Kafka refused the record as too large",
            TopicNotFound => "Topic not found",
            RecordRejected => "Kafka rejected the record",
            TopicNotAuthorized => "The gateway may not write to this topic",
            RequestInProgress => "A request with this Idempotency-Key is in progress",
            IdempotencyKeyReused => "Idempotency-Key reused with a different event",
            Overloaded => "The gateway is overloaded",
            KafkaUnavailable => "Kafka is unavailable",
            DeliveryTimedOut => "Kafka did not acknowledge in time",
            DeliveryFailed => "Kafka delivery failed",
            IdempotencyStoreUnavailable => "The idempotency store is unavailable",
            FailureStoreUnavailable => "The failure store is unavailable",
            FailureNotFound => "Failure record not found",
            FailureNotOpen => "The failure record is not open",
            EventNotFound => "No record of this event",
            InvalidQuery => "Invalid query parameter",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            Unauthenticated => "Missing or invalid credentials",
            TopicForbidden => "This client may not publish to this topic",
            Forbidden => "This client may not use this resource",
            RateLimited => "Too many events from this client",
            InvalidBatch => "Not a batch of events",
            DuplicateIdempotencyKey => "One Idempotency-Key named two events of the batch",
            TooManyEvents => "Too many events in one batch",
            UnsupportedMediaType => "Unsupported Content-Type",
            Internal => "Internal error",
        }
    }
}

/// Links to related resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Links {
    /// The failure record of this event: `/v1/failures/{id}`.
    pub failure: String,
}

/// An RFC 9457 problem (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:ackgate:problem:delivery-timed-out", "title": "Kafka did not acknowledge in time",
    "status": 504, "code": "delivery-timed-out",
    "detail": "Kafka did not acknowledge the event within the delivery timeout; it may have been written. The event is kept in failure record 01JD3Q4ZJ8M3S6Y5F3N2W1V0TA.",
    "persistence": "possibly_persisted", "topic": "orders", "idempotency_key": "7f1c9a0e-order-1001",
    "failure_id": "01JD3Q4ZJ8M3S6Y5F3N2W1V0TA", "links": {"failure": "/v1/failures/01JD3Q4ZJ8M3S6Y5F3N2W1V0TA"}
}))]
pub(crate) struct Problem {
    /// `urn:ackgate:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    /// Stable machine-readable code, e.g. `topic-not-found`.
    pub code: String,
    /// What happened and what to do, for a human.
    pub detail: String,
    /// For delivery failures: whether the event may be in Kafka
    /// (`not_persisted`, `possibly_persisted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The failure record that keeps the event, when one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Links>,
}

impl Problem {
    pub(crate) fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Problem {
            problem_type: format!("urn:ackgate:problem:{}", code.slug()),
            title: code.title().to_owned(),
            status: code.status(),
            code: code.slug().to_owned(),
            detail: detail.into(),
            persistence: None,
            topic: None,
            idempotency_key: None,
            failure_id: None,
            links: None,
        }
    }
}
