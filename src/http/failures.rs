//! The operator's view of failure records.

use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::error::ApiError;
use crate::contract::{Problem, ProblemCode};
use crate::failures::FailureRecord;

/// One failure record: the whole event, the error, and whether it may be in Kafka.
#[utoipa::path(get, path = "/v1/failures/{id}", tag = "failures",
    params(("id" = String, Path, description = "The failure id from the error response")),
    responses(
        (status = 200, description = "The failure record", body = FailureRecord),
        (status = 404, description = "No such record", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The failure store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_failure(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FailureRecord>, ApiError> {
    let not_found = || {
        ApiError::new(
            ProblemCode::FailureNotFound,
            "No failure record has this id.",
        )
    };
    // Ids are ULIDs; anything else cannot name a record, so don't ask the store.
    if ulid::Ulid::from_string(&id).is_err() {
        return Err(not_found());
    }
    match state.failures.get(&id).await {
        Ok(Some(record)) => Ok(Json(record)),
        Ok(None) => Err(not_found()),
        Err(error) => {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "reading a failure record failed"
            );
            Err(ApiError::new(
                ProblemCode::FailureStoreUnavailable,
                "The failure store did not answer; retry later.",
            ))
        }
    }
}
