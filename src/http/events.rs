//! `POST /v1/topics/{topic}/events`: turn an HTTP request into an [`Event`] and answer with
//! what the pipeline says.
//!
//! Everything the client sent is validated here, before anything is stored: a request refused
//! at this stage leaves no trace, so the client can fix it and retry with the same key.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use bytes::BytesMut;
use futures::StreamExt;

use super::AppState;
use super::error::{ApiError, json_response};
use crate::contract::{
    Accepted, EventStatus, Persisted, Problem, ProblemCode, StatusLinks, status_path,
};
use crate::event::{CONTENT_TYPE_HEADER, Event, IDEMPOTENCY_KEY_HEADER, IdempotencyKey, TopicName};
use crate::idempotency::{KeyStatus, Settlement};
use crate::pipeline::{Answer, Refusal, Submitted};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const KAFKA_KEY: &str = "kafka-key";
/// Request headers named `Kafka-Header-<name>` become record headers `<name>`.
const KAFKA_HEADER_PREFIX: &str = "kafka-header-";
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

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
    params(
        ("topic" = String, Path, description = "Kafka topic: 1-249 characters of [a-zA-Z0-9._-]. It must exist."),
        ("Idempotency-Key" = String, Header, description = "Required. 1-255 visible ASCII characters; the bare form or an RFC 8941 string (\"…\"). One key names one event: the same key with a different topic, key, headers or body is refused with 422."),
        ("Kafka-Key" = Option<String>, Header, description = "The record key (decides the partition)."),
        // OpenAPI has no templated header names, and `{`/`}` may not appear in an HTTP header
        // name: one concrete example stands for the whole `Kafka-Header-<name>` family.
        ("Kafka-Header-Trace-Id" = Option<String>, Header, description = "An example of the `Kafka-Header-<name>` family: every request header `Kafka-Header-<name>` becomes record header `<name>` (lower-cased, as HTTP header names are case-insensitive), so this one becomes `trace-id`. `idempotency-key` and `content-type` are reserved."),
        ("Content-Type" = Option<String>, Header, description = "Copied to the record header `content-type`. A JSON type (application/json, */*+json) requires a body that parses as JSON."),
    ),
    request_body(content = String, description = "The record value, forwarded byte for byte.",
        content_type = "application/json", example = json!({"order": 1001, "total": 42.5})),
    responses(
        (status = 201, description = "Kafka acknowledged the record (acks=all). Replays carry `Idempotent-Replayed: true`.", body = Persisted),
        (status = 202, description = "No answer from Kafka within the wait timeout; the delivery goes on. `Location` points to the event's status. Retries of the key get this same answer until the delivery settles.", body = Accepted),
        (status = 400, description = "Invalid topic name, Idempotency-Key, header or JSON body. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The gateway may not write to this topic; a failure record keeps the event.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The topic does not exist. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the body read timeout. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this key is in progress; retry after `Retry-After` seconds. Nothing was published.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body exceeds the size limit, or Kafka refused the record as too large.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The key was used before with a different event (`idempotency-key-reused`), or Kafka rejected the record (`record-rejected`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis or Kafka unavailable, or the gateway is overloaded. `persistence` says whether the event may be in Kafka; `failure_id` names the failure record that keeps it. Retry after `Retry-After` when it is given.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "Kafka did not acknowledge within the delivery timeout; the event may have been written. The key stays pinned to this answer and a failure record keeps the event.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn publish_event(
    State(state): State<Arc<AppState>>,
    topic: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let span = tracing::Span::current();
    let Path(topic) = topic
        .map_err(|_| ApiError::new(ProblemCode::InvalidTopic, "The topic is not valid UTF-8."))?;
    let event = parse_event(
        &topic,
        &headers,
        body,
        state.max_body_bytes,
        state.body_read_timeout,
    )
    .await;
    let event = match event {
        Ok(event) => event,
        Err(error) => {
            span.record("outcome", error.code());
            return Err(error);
        }
    };
    span.record("topic", event.topic.as_str());

    let (topic, key) = (event.topic.clone(), event.idempotency_key.clone());
    let answer = match state.pipeline.submit(event).await {
        Ok(Submitted::Answered(answer)) => answer,
        Ok(Submitted::Accepted) | Err(Refusal::InFlight { accepted: true, .. }) => {
            span.record("outcome", "accepted");
            return Ok(accepted_response(&topic, &key));
        }
        Err(refusal) => {
            let error = refusal_error(refusal);
            span.record("outcome", error.code());
            return Err(error);
        }
    };
    span.record(
        "outcome",
        if answer.replayed {
            "replayed"
        } else {
            status_outcome(answer.response.status)
        },
    );
    Ok(answer_response(answer))
}

/// `202 Accepted`: Kafka has not answered within the wait timeout. The same answer goes to
/// every retry of the key until the delivery settles.
fn accepted_response(topic: &TopicName, key: &IdempotencyKey) -> Response {
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
    let mut response = json_response(
        202,
        serde_json::to_string(&body).expect("an accepted body always serializes"),
        None,
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The current outcome of an event, for a client that lost its answer or got a 202.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/events/{idempotency_key}",
    tag = "events",
    params(
        ("topic" = String, Path, description = "The event's topic"),
        ("idempotency_key" = String, Path, description = "The event's Idempotency-Key (percent-encoded)"),
    ),
    responses(
        (status = 200, description = "The outcome so far", body = EventStatus),
        (status = 400, description = "Invalid topic or key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No record: never sent, refused before it was stored, or expired", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The idempotency store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn event_status(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<EventStatus>, ApiError> {
    let Path((topic, key)) =
        path.map_err(|_| ApiError::new(ProblemCode::InvalidTopic, "The path is not valid UTF-8."))?;
    let topic = TopicName::parse(&topic).map_err(|why| {
        ApiError::new(ProblemCode::InvalidTopic, format!("Invalid topic: {why}."))
    })?;
    let key = IdempotencyKey::parse(key.as_bytes())
        .map_err(|why| ApiError::new(ProblemCode::InvalidIdempotencyKey, format!("{why}.")))?;
    let status = state.store.status(&topic, &key).await.map_err(|error| {
        tracing::error!(
            error = &error as &dyn std::error::Error,
            "status lookup failed"
        );
        refusal_error(Refusal::StoreUnavailable)
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
        Some(KeyStatus::Settled {
            settlement,
            response,
        }) => {
            let name = match settlement {
                Settlement::Done => "persisted",
                Settlement::Failed => "failed",
                Settlement::Released => "not_persisted",
            };
            (name, Some(response))
        }
    };
    Ok(Json(EventStatus {
        state: state_name.to_owned(),
        topic: topic.to_string(),
        idempotency_key: key.to_string(),
        answer_status: answer.as_ref().map(|a| a.status),
        answer: answer.and_then(|a| serde_json::from_str(&a.body).ok()),
    }))
}

fn status_outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "persisted",
        400..=499 => "rejected",
        _ => "failed",
    }
}

fn answer_response(answer: Answer) -> Response {
    let Answer {
        response,
        replayed,
        retry_after,
    } = answer;
    let mut http = json_response(response.status, response.body, retry_after);
    if replayed {
        http.headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    http.into_response()
}

fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::TopicNotFound => ApiError::new(
            ProblemCode::TopicNotFound,
            "The topic does not exist. Create it first; the gateway does not create topics.",
        ),
        Refusal::KafkaUnavailable => ApiError::new(
            ProblemCode::KafkaUnavailable,
            "Kafka metadata could not be read, so the topic could not be checked. Nothing was \
             published; retry later with the same Idempotency-Key.",
        )
        .retry_after(Duration::from_secs(1)),
        Refusal::StoreUnavailable => ApiError::new(
            ProblemCode::IdempotencyStoreUnavailable,
            "The idempotency store (Redis) did not answer, and the gateway never publishes what \
             it cannot deduplicate. Nothing was published; retry later with the same \
             Idempotency-Key.",
        )
        .retry_after(Duration::from_secs(1)),
        Refusal::InFlight { retry_after, .. } => ApiError::new(
            ProblemCode::RequestInProgress,
            "Another request with this Idempotency-Key is being delivered. Retry later to get \
             its answer.",
        )
        .retry_after(retry_after.min(Duration::from_secs(1))),
        Refusal::Mismatch => ApiError::new(
            ProblemCode::IdempotencyKeyReused,
            "This Idempotency-Key was used for a different event (topic, Kafka-Key, headers or \
             body differ). Use a new key for a new event.",
        ),
    }
}

/// Validates everything the client sent and builds the event.
async fn parse_event(
    topic: &str,
    headers: &HeaderMap,
    body: Body,
    max_body_bytes: usize,
    body_read_timeout: std::time::Duration,
) -> Result<Event, ApiError> {
    let topic = TopicName::parse(topic).map_err(|why| {
        ApiError::new(ProblemCode::InvalidTopic, format!("Invalid topic: {why}."))
    })?;
    let idempotency_key = idempotency_key(headers)?;
    let key = single_header(headers, KAFKA_KEY)?.map(|v| Bytes::copy_from_slice(v.as_bytes()));
    let record_headers = record_headers(headers)?;
    let content_type = match single_header(headers, header::CONTENT_TYPE.as_str())? {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::new(
                        ProblemCode::InvalidHeader,
                        "Content-Type is not visible ASCII.",
                    )
                })?
                .to_owned(),
        ),
    };
    let value = read_body(headers, body, max_body_bytes, body_read_timeout).await?;
    if content_type.as_deref().is_some_and(is_json) {
        // Parsing into `IgnoredAny` checks the syntax without building a value or recursing,
        // so deeply nested input costs neither memory nor stack.
        serde_json::from_slice::<serde::de::IgnoredAny>(&value).map_err(|error| {
            ApiError::new(
                ProblemCode::InvalidJson,
                format!("The body is declared as JSON but does not parse: {error}."),
            )
        })?;
    }
    Ok(Event {
        topic,
        idempotency_key,
        key,
        headers: record_headers,
        content_type,
        value,
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let value = single_header(headers, IDEMPOTENCY_KEY)?.ok_or_else(|| {
        ApiError::new(
            ProblemCode::MissingIdempotencyKey,
            "Send an Idempotency-Key header (1-255 visible ASCII characters, e.g. a UUID) that \
             names this event; retries of the same event reuse it.",
        )
    })?;
    IdempotencyKey::parse(value.as_bytes())
        .map_err(|why| ApiError::new(ProblemCode::InvalidIdempotencyKey, format!("{why}.")))
}

/// The header's value, refusing it when it appears more than once.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a HeaderValue>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::new(
            ProblemCode::InvalidHeader,
            format!("The {name} header may appear only once."),
        ));
    }
    Ok(first)
}

fn record_headers(headers: &HeaderMap) -> Result<Vec<(String, Bytes)>, ApiError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        // http lower-cases header names, so the prefix match is case-insensitive.
        let Some(record_name) = name.as_str().strip_prefix(KAFKA_HEADER_PREFIX) else {
            continue;
        };
        if record_name.is_empty() {
            return Err(ApiError::new(
                ProblemCode::InvalidHeader,
                "Kafka-Header- needs a name after the prefix, e.g. Kafka-Header-Trace-Id.",
            ));
        }
        if record_name == IDEMPOTENCY_KEY_HEADER || record_name == CONTENT_TYPE_HEADER {
            return Err(ApiError::new(
                ProblemCode::InvalidHeader,
                format!(
                    "The record header '{record_name}' is set by the gateway; use the \
                     {record_name} request header instead."
                ),
            ));
        }
        out.push((
            record_name.to_owned(),
            Bytes::copy_from_slice(value.as_bytes()),
        ));
    }
    Ok(out)
}

/// How much of an oversize body is read and thrown away before answering 413. Closing the
/// connection while the client is still sending makes many clients (k6, curl) see a reset
/// instead of the 413; past this much, the connection is closed anyway.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut over_limit = declared.is_some_and(|len| len > limit as u64);
    let mut buffer =
        BytesMut::with_capacity(declared.map_or(0, |len| len.min(limit as u64)) as usize);
    let mut seen: u64 = 0;
    let mut stream = body.into_data_stream();
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let Ok(next) = next else {
            return Err(ApiError::new(
                ProblemCode::BodyTimeout,
                format!("The body did not arrive within {} ms.", timeout.as_millis()),
            ));
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|error| {
            tracing::debug!(%error, "could not read the request body");
            ApiError::new(
                ProblemCode::InvalidBody,
                "The request body could not be read.",
            )
        })?;
        seen += chunk.len() as u64;
        if !over_limit && buffer.len() + chunk.len() > limit {
            over_limit = true;
            buffer = BytesMut::new();
        }
        if over_limit {
            if seen > limit as u64 + DRAIN_BYTES {
                break;
            }
            continue;
        }
        buffer.extend_from_slice(&chunk);
    }
    if over_limit {
        return Err(ApiError::new(
            ProblemCode::PayloadTooLarge,
            format!("The body is larger than the limit of {limit} bytes."),
        ));
    }
    Ok(buffer.freeze())
}

/// `application/json`, `application/cloudevents+json` and other `+json` types, with or
/// without parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonl"));
    }
}
