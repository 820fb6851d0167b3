//! `POST /v1/topics/{topic}/events:batch`: many events in one request, each answered exactly as
//! it would be alone.
//!
//! The request as a whole is refused only for what makes it no batch at all (not JSON, no
//! events, one key named twice, too large) or what holds for every event (credentials, the
//! topic): then nothing is claimed. Otherwise the answer is `207 Multi-Status` with one result
//! per event in request order, and one bad event never fails the others.

mod parse;

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use self::parse::{EventLimits, Refused};
use super::error::ApiError;
use super::render::{self, Answer};
use super::request::{self, BodyLimits};
use super::{AppState, auth};
use crate::auth::Principal;
use crate::contract::{BatchRequest, BatchResponse, BatchResult, Problem, ProblemCode};
use crate::event::{Event, IdempotencyKey, TopicName, is_json};

/// How large a batch may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// `--max-batch-events`.
    pub(crate) max_events: usize,
    /// `--max-batch-bytes` and the body read timeout.
    pub(crate) body: BodyLimits,
}

/// Publish many events to one topic; each is answered as it would be alone.
///
/// Each event carries its own idempotency key and is claimed, published and answered exactly as
/// by `POST /v1/topics/{topic}/events`: the answer is `207 Multi-Status` with one result per
/// event, in request order, whose `status` and `body` are what that event alone would have got
/// (a replay, a conflict, a failure with its failure record, its own 400…). Batches and single
/// requests share one key space. Events with the same Kafka key land in Kafka in batch order.
/// All keys are claimed in one Redis round trip and settled in one.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/events:batch",
    tag = "events",
    security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "Kafka topic: 1-249 characters of [a-zA-Z0-9._-]. It must exist."),
    ),
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 207, description = "One result per event, in request order: the status and body that event alone would have got. Retry only the events whose result asks for it, with the same idempotency keys.", body = BatchResponse, headers(("RateLimit-Policy" = String, description = "When the client has a rate: `\"client\";q=<events per second>;w=1` (IETF ratelimit-headers draft)."), ("RateLimit" = String, description = "When the client has a rate: `\"client\";r=<events left>;t=<seconds until the quota is whole>`."))),
        (status = 400, description = "`invalid-json` (the body is not JSON), `invalid-batch` (no `events` array, or it is empty) or `duplicate-idempotency-key` (two events name one key), or an invalid topic. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No credentials, or unknown, expired or invalid ones (`unauthenticated`, with `WWW-Authenticate: Bearer`). Nothing was stored.", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"ackgate\"`, with `error=\"invalid_token\"` for a credential that was sent but is not valid."))),
        (status = 403, description = "`topic-forbidden`: this client may not publish to this topic. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The topic does not exist. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the body read timeout. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`too-many-events` (more than `--max-batch-events`) or `payload-too-large` (more than `--max-batch-bytes`). Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: the body must be `application/json`. Nothing was stored.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The gateway or this client has as many requests in progress as it accepts (`overloaded`). Nothing was stored; retry after `Retry-After`.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u32, description = "Seconds to wait before retrying with the same Idempotency-Key; sent only where waiting may change the answer."))),
    )
)]
pub(crate) async fn publish_batch(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    topic: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let span = tracing::Span::current();
    let Path(topic) = topic
        .map_err(|_| ApiError::new(ProblemCode::InvalidTopic, "The topic is not valid UTF-8."))?;
    let topic = TopicName::parse(&topic).map_err(|why| {
        ApiError::new(ProblemCode::InvalidTopic, format!("Invalid topic: {why}."))
    })?;
    span.record("topic", topic.as_str());
    if let Some(content_type) = headers.get(header::CONTENT_TYPE)
        && !content_type.to_str().is_ok_and(is_json)
    {
        return Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            "A batch is JSON: send it as `Content-Type: application/json`.",
        ));
    }
    let body = request::read_body(&headers, body, state.batch_limits.body).await?;
    let items = parse::envelope(&body, state.batch_limits.max_events)?;

    let limits = EventLimits {
        max_value_bytes: state.body_limits.max_bytes,
    };
    let mut results: Vec<(Option<String>, Option<Answer>)> = Vec::with_capacity(items.len());
    let mut events: Vec<(usize, Event)> = Vec::with_capacity(items.len());
    for (place, item) in items.iter().enumerate() {
        match parse::event(item, &principal, &topic, limits) {
            Ok(event) => {
                results.push((Some(event.idempotency_key.to_string()), None));
                events.push((place, event));
            }
            Err(Refused {
                idempotency_key,
                error,
            }) => results.push((idempotency_key, Some(error.into()))),
        }
    }
    refuse_duplicates(&events)?;
    metrics::histogram!("ackgate_batch_events").record(items.len() as f64);
    let allowance = charge_rate(&principal, &mut events, &mut results);

    let (places, events): (Vec<usize>, Vec<Event>) = events.into_iter().unzip();
    let keys: Vec<IdempotencyKey> = events.iter().map(|e| e.idempotency_key.clone()).collect();
    let outcomes = state
        .pipeline
        .submit_batch(&topic, events)
        .await
        .map_err(render::refusal)?;
    for ((place, outcome), key) in places.into_iter().zip(outcomes).zip(&keys) {
        results[place].1 = Some(render::answer(outcome, &topic, key));
    }
    span.record("outcome", "batch");
    let mut response = multi_status(results);
    if let Some(allowance) = allowance {
        auth::set_rate_headers(&mut response, allowance);
    }
    Ok(response)
}

/// One key names one event: two events with the same key in one batch cannot both be answered
/// as the key's event, so the batch is refused before anything is claimed.
fn refuse_duplicates(events: &[(usize, Event)]) -> Result<(), ApiError> {
    let mut seen = HashSet::with_capacity(events.len());
    for (_, event) in events {
        if !seen.insert(event.idempotency_key.as_str()) {
            return Err(ApiError::new(
                ProblemCode::DuplicateIdempotencyKey,
                format!(
                    "The idempotency key '{}' names two events of this batch; one key names one \
                     event. Nothing was stored.",
                    event.idempotency_key
                ),
            ));
        }
    }
    Ok(())
}

/// Counts the client's rate in events, in batch order: the events past it get 429 and are not
/// submitted. Returns what is left of the quota, for the `RateLimit` headers.
fn charge_rate(
    principal: &Principal,
    events: &mut Vec<(usize, Event)>,
    results: &mut [(Option<String>, Option<Answer>)],
) -> Option<crate::auth::Allowance> {
    let rate = principal.rate()?;
    let mut allowance = None;
    events.retain(|(place, _)| match rate.take(NonZeroU32::MIN) {
        Ok(left) => {
            allowance = Some(left);
            true
        }
        Err(wait) => {
            metrics::counter!("ackgate_requests_rate_limited_total",
                "client" => principal.label().to_owned())
            .increment(1);
            results[*place].1 = Some(auth::rate_limited_problem(rate.per_second(), wait).into());
            false
        }
    });
    allowance
}

/// `207 Multi-Status` with every result.
fn multi_status(results: Vec<(Option<String>, Option<Answer>)>) -> Response {
    let results = results
        .into_iter()
        .map(|(idempotency_key, answer)| {
            let answer = answer.unwrap_or_else(|| {
                // Every event is answered above; this would be a defect.
                ApiError::new(ProblemCode::Internal, "An unexpected error occurred.").into()
            });
            metrics::counter!("ackgate_batch_results_total",
                "status" => status_label(answer.status))
            .increment(1);
            BatchResult {
                idempotency_key,
                status: answer.status,
                replayed: answer.replayed,
                body: serde_json::value::RawValue::from_string(answer.body)
                    .expect("every answer body is JSON"),
                retry_after: answer
                    .retry_after
                    .map(|after| after.as_millis().div_ceil(1000).max(1) as u64),
            }
        })
        .collect();
    let body = serde_json::to_string(&BatchResponse { results }).expect("results serialize");
    (
        StatusCode::MULTI_STATUS,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A bounded label for a result's status.
fn status_label(status: u16) -> &'static str {
    match status {
        201 => "201",
        202 => "202",
        400 => "400",
        403 => "403",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}
