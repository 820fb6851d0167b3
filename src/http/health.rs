//! Liveness, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::pipeline::Readiness as Dependencies;

/// How long a readiness check may wait for each dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `{"status":"ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Alive {
    status: &'static str,
}

/// The state of one dependency.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Check {
    /// `ok` or `error`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The dependencies the gateway needs to accept events.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Checks {
    redis: Check,
    kafka: Check,
}

/// Readiness report.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready`, `not_ready`, or `stopping` (asked to stop: serving on while load balancers take
    /// it out, `--drain-delay-ms`).
    status: &'static str,
    checks: Checks,
    /// Conditions that do not stop traffic but put the guarantee at risk, e.g. a Redis that may
    /// evict idempotency records, or keeps nothing on disk (a restart forgets every settled key).
    warnings: Vec<String>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Alive)))]
pub(crate) async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

/// Redis answers and Kafka metadata is reachable.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready (warnings may still be listed)", body = Readiness),
        (status = 503, description = "Not ready; `checks` says why", body = Readiness),
    ))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let Dependencies {
        store: redis,
        kafka,
        kafka_reason,
        producer_fatal,
    } = state.pipeline.readiness(CHECK_TIMEOUT).await;
    let mut warnings = Vec::new();
    let redis = match redis {
        Ok(Ok(health)) => {
            warnings.extend(health.warnings);
            ok()
        }
        Ok(Err(error)) => failed(format!("Redis: {}", error.reason())),
        Err(_) => failed("Redis did not answer in time".to_owned()),
    };
    let kafka = match kafka {
        Ok(Ok(brokers)) if brokers > 0 => ok(),
        Ok(Ok(_)) => failed("Kafka metadata lists no brokers".to_owned()),
        Ok(Err(_)) | Err(_) => failed(match kafka_reason {
            Some(reason) => format!("Kafka metadata could not be read: {reason}"),
            None => "Kafka metadata could not be read".to_owned(),
        }),
    };
    if producer_fatal {
        warnings.push("the Kafka producer hit a fatal error".to_owned());
    }
    if let Some(warning) = state.access.warning() {
        warnings.push(warning.to_owned());
    }
    let stopping = state.stopping.is_cancelled();
    let ready = redis.status == "ok" && kafka.status == "ok" && !stopping;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: match (ready, stopping) {
            (true, _) => "ready",
            (false, true) => "stopping",
            (false, false) => "not_ready",
        },
        checks: Checks { redis, kafka },
        warnings,
    };
    (status, Json(body))
}

fn ok() -> Check {
    Check {
        status: "ok",
        detail: None,
    }
}

fn failed(detail: String) -> Check {
    Check {
        status: "error",
        detail: Some(detail),
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
