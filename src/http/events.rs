//! `POST /v1/topics/{topic}/events` and the event's status: turn an HTTP request into an
//! [`Event`], hand it to the pipeline, render what it says.
//!
//! Everything the client sent is validated before anything is stored: a request refused at
//! this stage leaves no trace, so the client can fix it and retry with the same key.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::error::ApiError;
use super::{AppState, render, request};
use crate::auth::Principal;
use crate::contract::{EventStatus, Problem, ProblemCode, PublishAnswer};
use crate::event::{IdempotencyKey, KeyScope, TopicName};
use crate::idempotency::{KeyStatus, Settlement, StoredAnswer};
use crate::pipeline::{Refusal, stored_body};

/// Publish one event and wait for Kafka's acknowledgement.
///
/// The body is the record value, forwarded byte for byte. The answer comes only after every
/// in-sync replica acknowledged the record (`acks=all`), or from the failure that ended the
/// delivery. A request repeated with the same `Idempotency-Key` and the same event publishes
/// nothing and gets the first answer again, with `Idempotent-Replayed: true`, for as long as
/// the idempotency record lives (24 hours by default, counted from when the first request
/// completed).
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/events",
    tag = "events",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "Kafka topic: 1-249 characters of [a-zA-Z0-9._-]. It must exist."),
        ("Idempotency-Key" = String, Header, description = "Required. 1-255 visible ASCII characters; the bare form or an RFC 8941 string (\"…\"). One key names one event: the same key with a different topic, key, headers or body is refused with 422."),
        ("Kafka-Key" = Option<String>, Header, nullable = false, description = "The record key (decides the partition)."),
        // OpenAPI has no templated header names, and `{`/`}` may not appear in an HTTP header
        // name: one concrete example stands for the whole `Kafka-Header-<name>` family.
        ("Kafka-Header-Trace-Id" = Option<String>, Header, nullable = false, description = "An example of the `Kafka-Header-<name>` family: every request header `Kafka-Header-<name>` becomes record header `<name>` (lower-cased, as HTTP header names are case-insensitive), so this one becomes `trace-id`. `idempotency-key` and `content-type` are reserved, and so is the prefix `dlt-` of the headers the gateway writes on dead-letter copies (`invalid-header`)."),
    ),
    // No `Content-Type` parameter: OpenAPI ignores header parameters of that name; the
    // content type is the request body's. The body is declared as JSON only: a second media type
    // for raw bytes sorts first in the document (`*/*` before `application/json`), so Swagger UI
    // and OpenAPI Generator take it as the default, and `application/octet-stream` beside JSON
    // makes openapi-python-client 0.29 emit `isinstance(body, Any)`, which raises on every call.
    request_body(
        description = "The record value, forwarded byte for byte: any JSON value. The request's \
            `Content-Type` is copied to the record header `content-type`; a JSON type \
            (application/json, */*+json) requires a body that parses as JSON. Any other content \
            type (e.g. `application/octet-stream`) takes any bytes as they are.",
        content(
            (serde_json::Value = "application/json", example = json!({"order": 1001, "total": 42.5})),
        ),
    ),
    responses(
        (status = 201, description = "Kafka acknowledged the record (acks=all): a `Persisted` document. Replays carry `Idempotent-Replayed: true`.", body = PublishAnswer, headers(("Idempotent-Replayed" = String, description = "`true` when this is the first answer to this key again: nothing was published this time."), ("RateLimit-Policy" = String, description = "When the client has a rate: `\"client\";q=<events per second>;w=1` (IETF ratelimit-headers draft)."), ("RateLimit" = String, description = "When the client has a rate: `\"client\";r=<events left>;t=<seconds until the quota is whole>`."))),
        (status = 202, description = "No answer from Kafka within the wait timeout; the delivery goes on: an `Accepted` document. `Location` points to the event's status. Retries of the key get this same answer until the delivery settles.", body = PublishAnswer, headers(("Location" = String, description = "The event's status resource (as `links.status`)."), ("RateLimit-Policy" = String, description = "When the client has a rate: `\"client\";q=<events per second>;w=1` (IETF ratelimit-headers draft)."), ("RateLimit" = String, description = "When the client has a rate: `\"client\";r=<events left>;t=<seconds until the quota is whole>`."))),
        (status = 400, description = "Invalid topic name, Idempotency-Key, header or JSON body. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No credentials, or unknown, expired or invalid ones (`unauthenticated`, with `WWW-Authenticate: Bearer`). Nothing was stored.", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"ackgate\"`, with `error=\"invalid_token\"` for a credential that was sent but is not valid."))),
        (status = 403, description = "`topic-forbidden`: this client may not publish to this topic (its grants do not name it; internal topics — `_…` and `….dlt` — need a grant that names them literally); nothing was stored. `topic-not-authorized`: Kafka refused the gateway itself; a failure record keeps the event.", body = Problem, content_type = "application/problem+json", headers(("Idempotent-Replayed" = String, description = "`true` when this is the first answer to this key again: nothing was published this time."))),
        (status = 404, description = "The topic does not exist. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the body read timeout. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this key is in progress; retry after `Retry-After` seconds. Nothing was published.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u32, description = "Seconds to wait before retrying with the same Idempotency-Key; sent only where waiting may change the answer."))),
        (status = 413, description = "The body exceeds the size limit, or Kafka refused the record as too large.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The key was used before with a different event (`idempotency-key-reused`), or Kafka rejected the record (`record-rejected`).", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate-limited`: this client is past its events per second. Nothing was stored; retry after `Retry-After` seconds. `RateLimit-Policy` and `RateLimit` (IETF draft) describe the quota.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u32, description = "Seconds to wait before retrying with the same Idempotency-Key; sent only where waiting may change the answer."), ("RateLimit-Policy" = String, description = "When the client has a rate: `\"client\";q=<events per second>;w=1` (IETF ratelimit-headers draft)."), ("RateLimit" = String, description = "When the client has a rate: `\"client\";r=<events left>;t=<seconds until the quota is whole>`."))),
        (status = 503, description = "Redis or Kafka unavailable, or the gateway is overloaded. `persistence` says whether the event may be in Kafka; `failure_id` names the failure record that keeps it. Retry after `Retry-After` when it is given.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u32, description = "Seconds to wait before retrying with the same Idempotency-Key; sent only where waiting may change the answer."), ("Idempotent-Replayed" = String, description = "`true` when this is the first answer to this key again: nothing was published this time."))),
        (status = 500, description = "The delivery ended without an answer (a defect in the gateway): the event may or may not be in Kafka. GET its status; once the key's lease and the takeover grace have run out, a retry with the same Idempotency-Key takes over.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "Kafka did not acknowledge within the delivery timeout; the event may have been written. The key stays pinned to this answer and a failure record keeps the event.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u32, description = "Seconds to wait before retrying with the same Idempotency-Key; sent only where waiting may change the answer."), ("Idempotent-Replayed" = String, description = "`true` when this is the first answer to this key again: nothing was published this time."))),
    )
)]
pub(crate) async fn publish_event(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    topic: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let span = tracing::Span::current();
    let Path(topic) = topic
        .map_err(|_| ApiError::new(ProblemCode::InvalidTopic, "The topic is not valid UTF-8."))?;
    let event = match request::event(&principal, &topic, &headers, body, state.body_limits).await {
        Ok(event) => event,
        Err(error) => {
            span.record("outcome", error.code());
            return Err(error);
        }
    };
    span.record("topic", event.topic.as_str());
    let (topic, key) = (event.topic.clone(), event.idempotency_key.clone());
    let outcome = state.pipeline.submit(event).await;
    span.record("outcome", render::label(&outcome));
    Ok(render::outcome(outcome, &topic, &key))
}

/// The current outcome of an event, for a client that lost its answer or got a 202.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/events/{idempotency_key}",
    tag = "events",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "The event's topic"),
        ("idempotency_key" = String, Path, description = "The event's Idempotency-Key (percent-encoded)"),
    ),
    responses(
        (status = 200, description = "The outcome so far", body = EventStatus),
        (status = 400, description = "Invalid topic or key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No credentials, or unknown, expired or invalid ones (`unauthenticated`, with `WWW-Authenticate: Bearer`). Nothing was stored.", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"ackgate\"`, with `error=\"invalid_token\"` for a credential that was sent but is not valid."))),
        (status = 404, description = "No record of this client's key: never sent, refused before it was stored, expired, or another client's (keys are scoped by client)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The idempotency store is unavailable", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u32, description = "Seconds to wait before retrying with the same Idempotency-Key; sent only where waiting may change the answer."))),
    )
)]
pub(crate) async fn event_status(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<EventStatus>, ApiError> {
    let Path((topic, key)) =
        path.map_err(|_| ApiError::new(ProblemCode::InvalidTopic, "The path is not valid UTF-8."))?;
    let topic = TopicName::parse(&topic).map_err(|why| {
        ApiError::new(ProblemCode::InvalidTopic, format!("Invalid topic: {why}."))
    })?;
    let key = IdempotencyKey::parse(key.as_bytes())
        .map_err(|why| ApiError::new(ProblemCode::InvalidIdempotencyKey, format!("{why}.")))?;
    let scope = KeyScope {
        principal: principal.name(),
        topic: &topic,
    };
    let status = state.pipeline.status(scope, &key).await.map_err(|error| {
        tracing::error!(
            error = &error as &dyn std::error::Error,
            "status lookup failed"
        );
        render::refusal(Refusal::StoreUnavailable)
    })?;
    let (state_name, answer) = match status {
        None => {
            return Err(ApiError::new(
                ProblemCode::EventNotFound,
                "No event with this Idempotency-Key is known for this topic: it was never sent, \
                 was refused before anything was stored, or its record expired.",
            ));
        }
        Some(KeyStatus::InFlight) => ("in_flight", None),
        Some(KeyStatus::Settled(answer)) => {
            let name = match answer.settlement() {
                Settlement::Done => "persisted",
                Settlement::Failed => "failed",
                Settlement::Released => "not_persisted",
            };
            (name, Some(answer))
        }
    };
    Ok(Json(EventStatus {
        state: state_name.to_owned(),
        topic: topic.to_string(),
        idempotency_key: key.to_string(),
        answer_status: answer.as_ref().map(StoredAnswer::status),
        // The first answer's bytes, embedded as they are.
        answer: answer.and_then(|answer| {
            let (_, body) = stored_body(&answer, &topic, &key);
            serde_json::value::RawValue::from_string(body).ok()
        }),
    }))
}
