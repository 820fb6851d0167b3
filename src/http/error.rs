//! Errors as RFC 9457 problem documents.
//!
//! Every error a client can see goes through [`ApiError`], so every error body is
//! `application/problem+json` with a stable `code`, and no internal error text reaches a
//! client: the cause is logged once, where the error is made, inside the request's span.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::contract::{Problem, ProblemCode};

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer.
#[derive(Debug)]
pub(super) struct ApiError {
    // Boxed: errors travel through every `Result` of request parsing, keep them one pointer.
    problem: Box<Problem>,
    retry_after: Option<Duration>,
}

impl ApiError {
    pub(super) fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError {
            problem: Box::new(Problem::new(code, detail)),
            retry_after: None,
        }
    }

    pub(super) fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub(super) fn code(&self) -> &str {
        &self.problem.code
    }

    /// Status, body and `Retry-After`, for an answer that is not a response of its own (one
    /// result of a batch).
    pub(super) fn into_parts(self) -> (u16, String, Option<Duration>) {
        let body = serde_json::to_string(&self.problem).expect("a problem always serializes");
        (self.problem.status, body, self.retry_after)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body, retry_after) = self.into_parts();
        problem_response(status, body, retry_after)
    }
}

/// A JSON response with the right content type for its status.
pub(crate) fn json_response(status: u16, body: String, retry_after: Option<Duration>) -> Response {
    if status >= 400 {
        return problem_response(status, body, retry_after);
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn problem_response(status: u16, body: String, retry_after: Option<Duration>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response();
    if let Some(after) = retry_after {
        // Whole seconds, rounded up: `Retry-After: 0` would invite a busy loop.
        let secs = after.as_millis().div_ceil(1000).max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
    }
    response
}
