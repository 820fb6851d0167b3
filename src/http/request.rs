//! From an HTTP request to the parts of an event: what is HTTP's own to check.
//!
//! Here: a header sent twice, the `Kafka-Header-<name>` spelling, the body's size limit and
//! read timeout. Whether the parts make a valid event is [`Event::try_from`]'s call, shared with
//! every other way an event arrives.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::error::ApiError;
use crate::auth::Principal;
use crate::contract::ProblemCode;
use crate::event::{Event, EventParts, InvalidEvent, Single};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const KAFKA_KEY: &str = "kafka-key";
/// Request headers named `Kafka-Header-<name>` become record headers `<name>`.
const KAFKA_HEADER_PREFIX: &str = "kafka-header-";

/// How much of an oversize body is read and thrown away before answering 413. Closing the
/// connection while the client is still sending makes many clients (k6, curl) see a reset
/// instead of the 413; past this much, the connection is closed anyway.
const DRAIN_BYTES: u64 = 8 * 1024 * 1024;

/// Limits on reading a body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    pub(crate) max_bytes: usize,
    pub(crate) read_timeout: Duration,
}

/// Validates everything the client sent and builds the event.
pub(super) async fn event(
    principal: &Principal,
    topic: &str,
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
) -> Result<Event, ApiError> {
    let record_headers = headers
        .iter()
        // http lower-cases header names, so the prefix match is case-insensitive.
        .filter_map(|(name, value)| {
            let name = name.as_str().strip_prefix(KAFKA_HEADER_PREFIX)?;
            Some((name, value.as_bytes()))
        })
        .collect();
    let parts = EventParts {
        principal: principal.shared_name().clone(),
        topic,
        idempotency_key: single(headers, IDEMPOTENCY_KEY),
        key: single(headers, KAFKA_KEY),
        headers: record_headers,
        content_type: single(headers, header::CONTENT_TYPE.as_str()),
        value: Bytes::new(),
    };
    // A request with a bad head is refused before its body is read.
    let head = parts.head().map_err(invalid)?;
    let value = read_body(headers, body, limits).await?;
    head.with_value(value).map_err(invalid)
}

/// The problem for an invalid event, in HTTP's words where HTTP spells things its own way.
pub(super) fn invalid(why: InvalidEvent) -> ApiError {
    let code = match &why {
        InvalidEvent::Topic(_) => ProblemCode::InvalidTopic,
        InvalidEvent::MissingIdempotencyKey => ProblemCode::MissingIdempotencyKey,
        InvalidEvent::IdempotencyKey(_) => ProblemCode::InvalidIdempotencyKey,
        InvalidEvent::Repeated(_)
        | InvalidEvent::EmptyHeaderName
        | InvalidEvent::ReservedHeader(_)
        | InvalidEvent::ReservedHeaderPrefix
        | InvalidEvent::ContentType => ProblemCode::InvalidHeader,
        InvalidEvent::Json(_) => ProblemCode::InvalidJson,
    };
    let detail = match why {
        InvalidEvent::MissingIdempotencyKey => "Send an Idempotency-Key header (1-255 visible \
            ASCII characters, e.g. a UUID) that names this event; retries of the same event \
            reuse it."
            .to_owned(),
        InvalidEvent::Repeated(name) => format!("The {name} header may appear only once."),
        InvalidEvent::EmptyHeaderName => {
            "Kafka-Header- needs a name after the prefix, e.g. Kafka-Header-Trace-Id.".to_owned()
        }
        other => other.to_string(),
    };
    ApiError::new(code, detail)
}

/// A header that may appear once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Single<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Single::Absent,
        (Some(one), None) => Single::One(one.as_bytes()),
        (Some(_), Some(_)) => Single::Repeated,
    }
}

pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
) -> Result<Bytes, ApiError> {
    let BodyLimits {
        max_bytes: limit,
        read_timeout: timeout,
    } = limits;
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
