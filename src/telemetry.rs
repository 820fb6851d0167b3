//! Logs and metrics set-up, once per process.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Latency buckets in seconds: from a fast local ack to the default delivery timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the global tracing subscriber. Call once, from `main`.
pub fn init_tracing(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid --log-filter '{filter}': {e}"))?;
    // Colours only for a person at a terminal: escape codes would litter files and log
    // collectors, and styling every field costs CPU on every request.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("could not install the log subscriber: {e}"))
}

/// The process-wide Prometheus recorder, installed on first use.
///
/// `metrics` has one global recorder per process; several applications in one process (as in
/// Buckets of `ackgate_batch_events`: 1 to the largest `--max-batch-events`.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// the tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".to_owned()),
                    LATENCY_BUCKETS,
                )
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("ackgate_batch_events".to_owned()),
                    BATCH_SIZE_BUCKETS,
                )
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, which this crate never does.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "ackgate_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "ackgate_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route and method"
    );
    describe_gauge!(
        "ackgate_http_requests_in_flight",
        "HTTP requests being served"
    );
    describe_histogram!(
        "ackgate_batch_events",
        Unit::Count,
        "Events per batch request (POST /v1/topics/{topic}/events:batch), of batches read whole"
    );
    describe_counter!(
        "ackgate_batch_results_total",
        "Results of the events of batches, by the HTTP status each would have had alone"
    );
    describe_histogram!(
        "ackgate_produce_duration_seconds",
        Unit::Seconds,
        "Time from handing an event to the producer to its delivery report"
    );
    describe_counter!(
        "ackgate_delivery_errors_total",
        "Failed deliveries by librdkafka error code"
    );
    describe_counter!(
        "ackgate_requests_shed_total",
        "Event requests refused with 503 because --max-in-flight were in progress"
    );
    describe_counter!(
        "ackgate_dedupe_outcomes_total",
        "Idempotency claims by outcome: claimed, takeover, replayed, conflict, mismatch, store_unavailable"
    );
    describe_counter!(
        "ackgate_lease_renewals_total",
        "Lease renewals of pending deliveries by outcome: renewed, settled, lost, error"
    );
    describe_counter!(
        "ackgate_settle_retries_total",
        "Settles tried again because the idempotency store did not answer"
    );
    describe_counter!(
        "ackgate_tls_handshake_failures_total",
        "TLS handshakes on the HTTPS listener that failed or timed out"
    );
    describe_counter!(
        "ackgate_tls_reloads_total",
        "Reloads of the HTTPS listener's files by outcome: ok, failed (the previous ones stay in use)"
    );
    describe_gauge!(
        "ackgate_tls_certificate_expiry_seconds",
        Unit::Seconds,
        "When the HTTPS listener's certificate expires (notAfter), in seconds since the Unix epoch"
    );
    describe_counter!(
        "ackgate_auth_failures_total",
        "Requests answered 401, by reason: missing, bad_scheme, unknown_api_key, unknown_certificate, \
         or the JWT's (expired, bad_signature, wrong_audience, …)"
    );
    describe_counter!(
        "ackgate_requests_forbidden_total",
        "Requests answered 403 by access control, by reason: topic (not granted), operator"
    );
    describe_counter!(
        "ackgate_requests_rate_limited_total",
        "Event requests answered 429, by client (the auth-file name; `jwt` for every JWT subject)"
    );
    describe_counter!(
        "ackgate_client_share_shed_total",
        "Event requests refused with 503 because their client had --max-in-flight-per-client in \
         progress, by client (as for rate limits)"
    );
    describe_gauge!(
        "ackgate_auth_reload_failing",
        "1 while the last reload of the auth file and JWKS file failed (the previous ones are in force)"
    );
    describe_counter!(
        "ackgate_auth_reloads_total",
        "Reloads of the auth file and JWKS file on SIGHUP by outcome: ok, failed (the previous ones \
         stay in force)"
    );
    describe_counter!(
        "ackgate_leases_lost_total",
        "Keys taken over while their delivery was pending, by step (renew, settle): the event may be in Kafka twice"
    );
}
