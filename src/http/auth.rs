//! Authentication and the guards in front of the routes.
//!
//! - [`authenticate`] runs on every client and operator route: it turns the request's
//!   credentials into a [`Principal`] (a request extension and the span's `principal` field)
//!   or answers 401 with `WWW-Authenticate: Bearer`.
//! - [`guard`] authenticates the same way on the publish routes and then guards them, before
//!   the body is read (the batch route's handler charges the rate per event): the topic must be
//!   one the principal may publish to (403), within its rate (429) and within its share of the
//!   in-flight requests (503).
//! - [`operator_only`] runs on the failure-record routes an operator alone may use (403).
//!
//! None of them claims, stores or publishes anything: a refused request leaves no trace.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Allowance, Credentials, Principal, Unauthenticated};
use crate::contract::ProblemCode;
use crate::event::TopicName;

const RATE_LIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATE_LIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Authenticates the request, or answers 401.
pub(super) async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticated(&state, &mut request) {
        Ok(_) => next.run(request).await,
        Err(why) => unauthenticated(why),
    }
}

/// The request's principal, also put on it as an extension and in the span's `principal`
/// field; or why there is none (counted and logged), for a 401.
fn authenticated(state: &AppState, request: &mut Request) -> Result<Principal, Unauthenticated> {
    let certificate = request
        .extensions()
        .get::<crate::tls::ClientCertificate>()
        .map(|certificate| certificate.names.clone());
    let credentials = Credentials {
        authorization: request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        certificate: certificate.as_deref(),
    };
    match state.access.authenticate(credentials) {
        Ok(principal) => {
            tracing::Span::current().record("principal", principal.name());
            request.extensions_mut().insert(principal.clone());
            Ok(principal)
        }
        Err(why) => {
            metrics::counter!("ackgate_auth_failures_total", "reason" => why.label()).increment(1);
            tracing::info!(reason = why.label(), "request not authenticated");
            Err(why)
        }
    }
}

/// 401 with the RFC 6750 challenge; `error="invalid_token"` when a token was sent.
fn unauthenticated(why: Unauthenticated) -> Response {
    let (detail, challenge) = match why {
        Unauthenticated::Missing => (
            "Send `Authorization: Bearer <API key or JWT>`. Nothing was stored or published.",
            r#"Bearer realm="ackgate""#,
        ),
        Unauthenticated::BadScheme => (
            "The Authorization header must be `Bearer <API key or JWT>`. Nothing was stored or \
             published.",
            r#"Bearer realm="ackgate", error="invalid_request""#,
        ),
        Unauthenticated::UnknownCertificate => (
            "The client certificate is not mapped to a client. Send `Authorization: Bearer \
             <API key or JWT>`. Nothing was stored or published.",
            r#"Bearer realm="ackgate""#,
        ),
        Unauthenticated::UnknownKey | Unauthenticated::Jwt(_) => (
            "The bearer credential is unknown, expired or not valid for this gateway. Nothing \
             was stored or published.",
            r#"Bearer realm="ackgate", error="invalid_token""#,
        ),
    };
    let mut response = ApiError::new(ProblemCode::Unauthenticated, detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The principal `authenticate` (or a publish guard) put on the request. Every route that reads
/// it authenticates first; a request without one is a wiring defect, answered 500.
pub(super) fn principal(request: &Request) -> Result<Principal, ApiError> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("a guarded route ran without an authenticated principal");
            ApiError::new(ProblemCode::Internal, "An unexpected error occurred.")
        })
}

/// Where a guarded route's rate is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Charge {
    /// One event per request, here: the publish route.
    OneEvent,
    /// Per event, by the handler once it has read them: the batch route.
    InHandler,
}

/// A publish route's guards, after authentication (one layer for both: each layer costs every
/// request a boxed future): topic permission, the rate when it is charged here, and the
/// in-flight share.
pub(super) async fn guard(
    State((state, charge)): State<(Arc<AppState>, Charge)>,
    topic: Result<Path<String>, PathRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match authenticated(&state, &mut request) {
        Ok(principal) => principal,
        Err(why) => return unauthenticated(why),
    };
    // An invalid topic name is the handler's 400; only a valid one can be forbidden.
    if let Ok(Path(topic)) = &topic
        && TopicName::parse(topic).is_ok()
        && !principal.may_produce(topic)
    {
        metrics::counter!("ackgate_requests_forbidden_total", "reason" => "topic").increment(1);
        tracing::info!(principal = principal.name(), topic, "topic not granted");
        return ApiError::new(
            ProblemCode::TopicForbidden,
            "This client may not publish to this topic (its `produce` patterns do not allow it; \
             internal topics need a pattern that names them). Nothing was stored or published.",
        )
        .into_response();
    }
    let allowance = match principal
        .rate()
        .filter(|_| charge == Charge::OneEvent)
        .map(|rate| (rate, rate.take(NonZeroU32::MIN)))
    {
        None => None,
        Some((_, Ok(allowance))) => Some(allowance),
        Some((rate, Err(wait))) => {
            metrics::counter!("ackgate_requests_rate_limited_total",
                "client" => principal.label().to_owned())
            .increment(1);
            return rate_limited(rate.per_second(), wait);
        }
    };
    let _share = if state.access.is_open() {
        None
    } else {
        match state.access.shares().enter(principal.shared_name()) {
            Some(share) => Some(share),
            None => {
                metrics::counter!("ackgate_client_share_shed_total",
                    "client" => principal.label().to_owned())
                .increment(1);
                return ApiError::new(
                    ProblemCode::Overloaded,
                    format!(
                        "This client has {} requests in progress, its share of the gateway \
                         (--max-in-flight-per-client). Nothing was published; retry with the \
                         same Idempotency-Key.",
                        state.access.shares().per_client()
                    ),
                )
                .retry_after(Duration::from_secs(1))
                .into_response();
            }
        }
    };
    let mut response = next.run(request).await;
    if let Some(allowance) = allowance {
        set_rate_headers(&mut response, allowance);
    }
    response
}

/// The problem of an event past its client's rate, with `Retry-After`.
pub(super) fn rate_limited_problem(per_second: u32, wait: Duration) -> ApiError {
    ApiError::new(
        ProblemCode::RateLimited,
        format!(
            "This client may send {per_second} events per second. Nothing was stored or \
             published; retry after `Retry-After` seconds with the same Idempotency-Key."
        ),
    )
    .retry_after(wait)
}

/// 429 with `Retry-After` and the IETF ratelimit-headers draft's fields.
fn rate_limited(per_second: u32, wait: Duration) -> Response {
    let mut response = rate_limited_problem(per_second, wait).into_response();
    let reset_secs = wait.as_millis().div_ceil(1000).max(1) as u64;
    set_rate_headers(
        &mut response,
        Allowance {
            limit: per_second,
            remaining: 0,
            reset_secs,
        },
    );
    response
}

/// `RateLimit-Policy: "client";q=<per second>;w=1` and `RateLimit: "client";r=<left>;t=<secs>`
/// (draft-ietf-httpapi-ratelimit-headers: a named policy, its quota over a one-second window,
/// what remains of it and when it is whole again).
pub(super) fn set_rate_headers(response: &mut Response, allowance: Allowance) {
    let headers = response.headers_mut();
    let policy = format!("\"client\";q={};w=1", allowance.limit);
    let state = format!(
        "\"client\";r={};t={}",
        allowance.remaining, allowance.reset_secs
    );
    if let (Ok(policy), Ok(state)) = (HeaderValue::try_from(policy), HeaderValue::try_from(state)) {
        headers.insert(RATE_LIMIT_POLICY, policy);
        headers.insert(RATE_LIMIT, state);
    }
}

/// Only operators pass.
pub(super) async fn operator_only(request: Request, next: Next) -> Response {
    match principal(&request) {
        Ok(principal) if principal.is_operator() => next.run(request).await,
        Ok(principal) => {
            metrics::counter!("ackgate_requests_forbidden_total", "reason" => "operator")
                .increment(1);
            tracing::info!(principal = principal.name(), "operator route refused");
            forbidden().into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// 403 `forbidden`: the principal is not an operator (and, for one failure record, not the
/// principal whose event it holds).
pub(super) fn forbidden() -> ApiError {
    ApiError::new(
        ProblemCode::Forbidden,
        "This resource is for operators (`operator = true` in the auth file, or the `operator` \
         scope).",
    )
}
