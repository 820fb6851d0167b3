//! The operator's API for failure records: list, read, retry, discard.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::ApiError;
use super::render;
use crate::auth::Principal;
use crate::contract::{Problem, ProblemCode};
use crate::failures::{FailureFilter, FailurePage, FailureRecord, FailureState};
use crate::pipeline::{OperatorError, RetryOutcome};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// Filters and paging of `GET /v1/failures`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only records of this topic.
    topic: Option<String>,
    /// Only records in this state: `open`, `retrying`, `resolved`, `discarded`.
    state: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Who retries, optionally.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct RetryRequest {
    /// Only with authentication off: who acts, for the record (default `operator`). With
    /// authentication, the record names the operator's principal and this is ignored.
    by: Option<String>,
}

/// Why an event is discarded.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct DiscardRequest {
    /// Required: why the event will not be published.
    reason: String,
    /// Only with authentication off: who acts, for the record (default `operator`). With
    /// authentication, the record names the operator's principal and this is ignored.
    by: Option<String>,
}

/// Failure records, oldest first, filtered by topic and state.
#[utoipa::path(get, path = "/v1/failures", tag = "failures",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page of records", body = FailurePage),
        (status = 400, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No credentials, or unknown, expired or invalid ones (`unauthenticated`, with `WWW-Authenticate: Bearer`). Nothing was stored.", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"ackgate\"`, with `error=\"invalid_token\"` for a credential that was sent but is not valid."))),
        (status = 403, description = "`forbidden`: this client is not an operator. Nothing was changed.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The failure store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_failures(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FailurePage>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::new(ProblemCode::InvalidQuery, e.body_text()))?;
    let filter_state = query
        .state
        .as_deref()
        .map(str::parse::<FailureState>)
        .transpose()
        .map_err(|why| ApiError::new(ProblemCode::InvalidQuery, why))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            ProblemCode::InvalidQuery,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if let Some(cursor) = &query.cursor
        && ulid::Ulid::from_string(cursor).is_err()
    {
        return Err(ApiError::new(
            ProblemCode::InvalidQuery,
            "cursor is not a failure id",
        ));
    }
    if let Some(topic) = &query.topic {
        crate::event::TopicName::parse(topic)
            .map_err(|why| ApiError::new(ProblemCode::InvalidQuery, format!("topic: {why}")))?;
    }
    let filter = FailureFilter {
        topic: query.topic,
        state: filter_state,
    };
    state
        .pipeline
        .list_failures(&filter, query.cursor.as_deref(), limit)
        .await
        .map(Json)
        .map_err(|error| {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "listing failure records failed"
            );
            store_unavailable()
        })
}

/// One failure record: the whole event, the error, and whether it may be in Kafka.
#[utoipa::path(get, path = "/v1/failures/{id}", tag = "failures",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The failure id from the error response")),
    responses(
        (status = 200, description = "The failure record", body = FailureRecord),
        (status = 401, description = "No credentials, or unknown, expired or invalid ones (`unauthenticated`, with `WWW-Authenticate: Bearer`). Nothing was stored.", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"ackgate\"`, with `error=\"invalid_token\"` for a credential that was sent but is not valid."))),
        (status = 403, description = "`forbidden`: this client is neither an operator nor the client whose event the record holds (asked of a record that does not exist, it answers the same).", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such record", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The failure store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_failure(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<FailureRecord>, ApiError> {
    // Anyone but an operator learns only of its own records: a missing record and another
    // client's both answer 403, so ids cannot be probed.
    let refuse = |missing: ApiError| {
        if principal.is_operator() {
            missing
        } else {
            super::auth::forbidden()
        }
    };
    let id = failure_id(path).map_err(refuse)?;
    // Ids are ULIDs; anything else cannot name a record, so don't ask the store.
    if ulid::Ulid::from_string(&id).is_err() {
        return Err(refuse(not_found()));
    }
    match state.pipeline.failure(&id).await {
        Ok(Some(record))
            if principal.is_operator() || record.event.principal == principal.name() =>
        {
            Ok(Json(record))
        }
        Ok(_) => Err(refuse(not_found())),
        Err(error) => {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "reading a failure record failed"
            );
            Err(store_unavailable())
        }
    }
}

/// Publishes the record's event again, under its original idempotency key.
///
/// Only an `open` record can be retried; two retries at once cannot both publish. On success
/// the record is `resolved` with the partition and offset, and the key is settled so that a
/// client's retry replays the success. If Kafka refuses again, the record is `open` again with
/// the new error and the answer is the problem a client would have had. For a record that is
/// `possibly_persisted`, check the topic first: the event may already be there.
#[utoipa::path(post, path = "/v1/failures/{id}/retry", tag = "failures",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The failure id")),
    // Optional, and never `null`: a `ref` keeps `required` off without the `oneOf [null, …]`
    // that `Option<RetryRequest>` would make (a generated client then sends `null`, which is
    // not a `RetryRequest`).
    request_body(content = ref("#/components/schemas/RetryRequest"), content_type = "application/json",
        description = "Optional: no body is the same as `{}`."),
    responses(
        (status = 200, description = "Published: the record is resolved", body = FailureRecord),
        (status = 401, description = "No credentials, or unknown, expired or invalid ones (`unauthenticated`, with `WWW-Authenticate: Bearer`). Nothing was stored.", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"ackgate\"`, with `error=\"invalid_token\"` for a credential that was sent but is not valid."))),
        (status = 400, description = "The body is not empty and not a valid `RetryRequest`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such record", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: this client is not an operator (nothing was changed); or `topic-not-authorized`: Kafka refused again, the gateway may not write to the topic (the record is open again)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The record is not open (already retrying, resolved or discarded), or its key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Kafka refused again: the record is too large (the record is open again)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Kafka refused again: the record was rejected (the record is open again)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Kafka refused again (the record is open again), or a store is unavailable", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent only where waiting may change the answer."))),
        (status = 504, description = "Kafka did not answer in time again (the record is open again)", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent only where waiting may change the answer."))),
    ))]
pub(crate) async fn retry_failure(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = failure_id(path)?;
    let request: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ProblemCode::InvalidJson,
                format!("The body does not parse: {e}."),
            )
        })?
    };
    let by = acting(&state, &principal, request.by);
    match state.pipeline.retry_failure(&id, &by).await {
        Ok(RetryOutcome::Resolved(record)) => Ok(Json(*record).into_response()),
        Ok(RetryOutcome::Failed(failure)) => Ok(render::failure(&failure)),
        Err(error) => Err(operator_error(error)),
    }
}

/// Marks the record discarded: the gateway will not publish this event.
#[utoipa::path(post, path = "/v1/failures/{id}/discard", tag = "failures",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The failure id")),
    request_body(content = DiscardRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Discarded", body = FailureRecord),
        (status = 401, description = "No credentials, or unknown, expired or invalid ones (`unauthenticated`, with `WWW-Authenticate: Bearer`). Nothing was stored.", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"ackgate\"`, with `error=\"invalid_token\"` for a credential that was sent but is not valid."))),
        (status = 403, description = "`forbidden`: this client is not an operator. Nothing was changed.", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "No reason given", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such record", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The record is not open", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The failure store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn discard_failure(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<FailureRecord>, ApiError> {
    let id = failure_id(path)?;
    let request: DiscardRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            ProblemCode::InvalidJson,
            r#"Send a JSON body with a reason: {"reason": "…", "by": "…"}."#,
        )
    })?;
    if request.reason.trim().is_empty() {
        return Err(ApiError::new(
            ProblemCode::InvalidJson,
            "The reason must not be empty.",
        ));
    }
    let by = acting(&state, &principal, request.by);
    state
        .pipeline
        .discard_failure(&id, &by, &request.reason)
        .await
        .map(Json)
        .map_err(operator_error)
}

/// Who the resolution names: the principal, unless authentication is off (then the body's
/// `by`, else `operator`).
fn acting(state: &AppState, principal: &Principal, by: Option<String>) -> String {
    if state.access.is_open() {
        by.unwrap_or_else(|| "operator".to_owned())
    } else {
        principal.name().to_owned()
    }
}

fn operator_error(error: OperatorError) -> ApiError {
    let detail = error.to_string();
    match error {
        OperatorError::NotFound => not_found(),
        OperatorError::NotOpen(_) | OperatorError::Conflict | OperatorError::KeyInFlight => {
            ApiError::new(ProblemCode::FailureNotOpen, format!("{detail}."))
        }
        OperatorError::IdempotencyStoreUnavailable => ApiError::new(
            ProblemCode::IdempotencyStoreUnavailable,
            "The idempotency store did not answer; nothing was published.",
        ),
        OperatorError::FailureStoreUnavailable => store_unavailable(),
        OperatorError::Unreadable(_) => {
            tracing::error!(%detail, "a failure record could not be retried");
            ApiError::new(
                ProblemCode::Internal,
                "The stored event could not be rebuilt.",
            )
        }
    }
}

/// The id from the path; one that is not even UTF-8 names no record.
fn failure_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|_| not_found())
}

fn not_found() -> ApiError {
    ApiError::new(
        ProblemCode::FailureNotFound,
        "No failure record has this id.",
    )
}

fn store_unavailable() -> ApiError {
    ApiError::new(
        ProblemCode::FailureStoreUnavailable,
        "The failure store did not answer; retry later.",
    )
}
