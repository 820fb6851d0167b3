//! The HTTP surface: routes, middleware and the translation of outcomes into responses.
//!
//! Nothing here decides anything about Kafka or idempotency; handlers parse, call the
//! [`Pipeline`] (never the stores or the producer behind it), and render its typed answer.
//!
//! Routes come in four groups, each built by its own function with its own layers, so that a
//! guard added to one group covers every route in it and none outside it:
//! - [`client_routes`]: publishing events and reading their status;
//! - [`operator_routes`]: the failure records an operator inspects, retries or discards;
//! - [`probe_routes`]: health, readiness and metrics;
//! - [`docs_routes`]: the API documentation.
//!
//! [`routers`] merges them under the layers every request shares (request id, trace span,
//! panic catching, request metrics). With an admin listener (`--admin-listen`) the probes are
//! served there instead, under the same layers.

mod auth;
mod batch;
mod error;
mod events;
mod failures;
mod health;
mod render;
mod request;

use std::sync::Arc;
use std::time::Instant;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{BoxError, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub(crate) use self::batch::BatchLimits;
use self::error::ApiError;
pub(crate) use self::request::BodyLimits;
use crate::contract::ProblemCode;
use crate::pipeline::Pipeline;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach. Handlers get it behind one `Arc`, so extracting it costs one
/// reference count rather than one per field.
pub(crate) struct AppState {
    pub(crate) pipeline: Pipeline,
    /// Who may call, and each client's limits.
    pub(crate) access: Arc<crate::auth::Access>,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) body_limits: BodyLimits,
    /// How large a batch may be.
    pub(crate) batch_limits: BatchLimits,
    /// Most event requests in progress at once.
    pub(crate) max_in_flight: usize,
    /// Most batch requests in progress at once.
    pub(crate) max_batches_in_flight: usize,
    /// Cancelled when the process is asked to stop: `/readyz` answers 503 from then on, so that
    /// load balancers take the replica out while it still serves (`--drain-delay-ms`).
    pub(crate) stopping: tokio_util::sync::CancellationToken,
}

/// The OpenAPI document, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ackgate",
        description = "HTTP-to-Kafka gateway that answers only after Kafka has acknowledged.\n\n\
            Every event carries an `Idempotency-Key`. The gateway claims the key in Redis, publishes \
            through one idempotent producer (`enable.idempotence=true`, `acks=all`) and answers from \
            the delivery report: `201` with partition and offset, or a problem document that says \
            whether the event may be in Kafka and names the failure record that keeps it.\n\n\
            Idempotency records expire 24 hours (configurable) after the request completed; a key \
            reused after that publishes a new record. Every error is `application/problem+json` \
            (RFC 9457) with a stable `code`.\n\n\
            Every `/v1` route needs `Authorization: Bearer <API key or JWT>` (use Authorize \
            above) unless the gateway runs with `--no-auth`. Idempotency keys belong to the \
            client that sent them: two clients never share one.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        events::publish_event,
        batch::publish_batch,
        events::event_status,
        failures::list_failures,
        failures::get_failure,
        failures::retry_failure,
        failures::discard_failure,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(
        crate::contract::Persisted,
        crate::contract::Problem,
        crate::contract::Links,
        crate::contract::Accepted,
        crate::contract::EventStatus,
        crate::contract::BatchRequest,
        crate::contract::BatchEvent,
        crate::contract::BatchResponse,
        crate::contract::BatchResult,
        crate::failures::FailureRecord,
        crate::failures::FailurePage,
        // The retry's body names it by reference (it is optional).
        failures::RetryRequest,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "events", description = "Publish events"),
        (name = "failures", description = "Events Kafka did not acknowledge, kept for an operator"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme: an API key from the auth file or a JWT, as
/// `Authorization: Bearer <token>`. The `/docs` page's Authorize button fills it in.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key of a client in the gateway's auth file, or a JWT signed by a \
                         key of its JWKS file (`sub` is the client, `scope` its grants).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The main listener's router and, with `admin_listener`, the admin listener's: the probes
/// are then served only there, and the main listener answers 404 for them. Without it, the
/// first is the whole application.
pub(crate) fn routers(state: AppState, admin_listener: bool) -> (Router, Option<Router>) {
    let state = Arc::new(state);
    let main = Router::new()
        .merge(client_routes(state.clone()))
        .merge(operator_routes(state.clone()))
        .merge(docs_routes());
    if admin_listener {
        let admin = admin_router(state);
        (shared_layers(main), Some(admin))
    } else {
        (shared_layers(main.merge(probe_routes(state))), None)
    }
}

/// The admin listener's router: the probes alone.
fn admin_router(state: Arc<AppState>) -> Router {
    shared_layers(probe_routes(state))
}

/// The layers every request shares, on whichever listener, and the 404 for unknown paths.
///
/// They go on as one [`ServiceBuilder`] stack: each `Router::layer` call wraps every route in a
/// boxed service of its own, so six calls cost six boxed futures per request; one stack costs one.
fn shared_layers(routes: Router) -> Router {
    routes.fallback(not_found).layer(
        // Outermost first: whatever logs a request's headers (a debug line, a panic message)
        // shows the credential as `Sensitive`; the request id exists before the span that logs
        // it; panics become problem documents inside the span; the metrics are innermost, where
        // the matched route is known.
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([
                axum::http::header::AUTHORIZATION,
            ]))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUlid))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    // One line per request costs a tenth of the gateway's CPU at full load
                    // (bench/README.md): request lines are DEBUG, turned on with
                    // `--log-filter info,tower_http=debug`. Failures are logged where they
                    // happen, with their cause, inside this span (so with the request id).
                    .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                    .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
            )
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::new(ProblemCode::Internal, "An unexpected error occurred.")
                    .into_response()
            }))
            .layer(middleware::from_fn(track_metrics)),
    )
}

/// The span every request runs in: its route template, request id and, once known, the
/// principal, topic and outcome.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = request.method().as_str(),
        route,
        request_id,
        principal = tracing::field::Empty,
        topic = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

/// Publishing events and reading their status: what client services call. Every route
/// authenticates first: the publish routes in their guard, the status route on its own.
fn client_routes(state: Arc<AppState>) -> Router {
    let authenticate = middleware::from_fn_with_state(state.clone(), auth::authenticate);
    Router::new()
        .route(
            "/v1/topics/{topic}/events",
            guarded(
                post(events::publish_event),
                &state,
                auth::Charge::OneEvent,
                state.max_in_flight,
            ),
        )
        // Batches have a cap of their own: each may hold up to `--max-batch-bytes`.
        .route(
            "/v1/topics/{topic}/events:batch",
            guarded(
                post(batch::publish_batch),
                &state,
                auth::Charge::InHandler,
                state.max_batches_in_flight,
            ),
        )
        .route(
            "/v1/topics/{topic}/events/{idempotency_key}",
            get(events::event_status).layer(authenticate),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `route` behind [`auth::guard`], with at most `limit` requests in progress: one stack of
/// layers, so one boxed future per request. Past the cap, shed at once rather than queue: a
/// queued request holds its body in memory and would likely time out anyway.
fn guarded(
    route: MethodRouter<Arc<AppState>>,
    state: &Arc<AppState>,
    charge: auth::Charge,
    limit: usize,
) -> MethodRouter<Arc<AppState>> {
    route.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn_with_state(
                (state.clone(), charge),
                auth::guard,
            ))
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                metrics::counter!("ackgate_requests_shed_total").increment(1);
                ApiError::new(
                    ProblemCode::Overloaded,
                    "The gateway has as many requests in progress as it accepts. Nothing was \
                     published; retry with the same Idempotency-Key.",
                )
                .retry_after(std::time::Duration::from_secs(1))
            }))
            .load_shed()
            .concurrency_limit(limit),
    )
}

/// The operator's loop over failure records. Reading one record is also open to the principal
/// whose event it holds (checked in the handler); everything else is for operators.
fn operator_routes(state: Arc<AppState>) -> Router {
    let operator_only = middleware::from_fn(auth::operator_only);
    Router::new()
        .route(
            "/v1/failures",
            get(failures::list_failures).layer(operator_only.clone()),
        )
        .route("/v1/failures/{id}", get(failures::get_failure))
        .route(
            "/v1/failures/{id}/retry",
            post(failures::retry_failure).layer(operator_only.clone()),
        )
        .route(
            "/v1/failures/{id}/discard",
            post(failures::discard_failure).layer(operator_only),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// What the platform around the gateway reads: liveness, readiness, metrics.
fn probe_routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The API description: Swagger UI and the OpenAPI document (on the main listener always).
fn docs_routes() -> Router {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}

/// Request ids are ULIDs: sortable by time in logs, and made from a thread-local generator
/// (a UUID v4 asks the kernel for randomness on every request).
#[derive(Clone, Copy)]
struct MakeRequestUlid;

impl MakeRequestId for MakeRequestUlid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let mut buf = [0u8; ulid::ULID_LEN];
        let id = ulid::Ulid::new().array_to_str(&mut buf);
        axum::http::HeaderValue::from_str(id)
            .ok()
            .map(RequestId::new)
    }
}

/// Request count, latency and in-flight gauge, labelled by route template (never the raw path,
/// which would let clients create unbounded label values).
async fn track_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = bounded_method(request.method());
    let started = Instant::now();
    // A guard, because hyper drops this future when the client disconnects.
    let _in_flight = InFlight::enter();
    let response = next.run(request).await;
    let status = status_label(response.status());
    metrics::counter!("ackgate_http_requests_total",
        "route" => route.clone(), "method" => method, "status" => status)
    .increment(1);
    metrics::histogram!("ackgate_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter() -> Self {
        let gauge = metrics::gauge!("ackgate_http_requests_in_flight");
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The status code as a label: a static string for the codes the gateway answers with, so that
/// counting a request allocates nothing for it.
fn status_label(status: StatusCode) -> metrics::SharedString {
    const CODES: [&str; 20] = [
        "200", "201", "202", "207", "400", "401", "403", "404", "405", "408", "409", "413", "415",
        "422", "429", "500", "501", "502", "503", "504",
    ];
    match CODES.iter().find(|code| **code == status.as_str()) {
        Some(code) => metrics::SharedString::const_str(code),
        None => metrics::SharedString::from(status.as_str().to_owned()),
    }
}

fn bounded_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        ProblemCode::NotFound,
        "No such resource. The API is described at /docs.",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ProblemCode::MethodNotAllowed,
        "This resource does not support this method.",
    )
}
