//! The bench's flags (each also an `ACKGATE_BENCH_*` variable), and the gateway settings the
//! bench starts the gateway with and copies into its raw phases.

use std::path::PathBuf;

use ackgate::settings::Settings;
use clap::Parser;

/// Idempotency TTL for the bench's records (the keys are also deleted after each phase).
pub(crate) const TTL_SECS: u64 = 3_600;

/// The gateway's settings as the bench runs it: its defaults, but for the idempotency TTL
/// ([`TTL_SECS`], passed as `--idempotency-ttl-secs`). The raw phases take the gateway's
/// producer configuration, Redis timeout, lease and TTL from here, so that they stay what the
/// gateway does.
pub(crate) fn gateway_settings() -> Settings {
    Settings {
        idempotency_ttl_secs: TTL_SECS,
        ..Settings::defaults()
    }
}

#[derive(Debug, Clone, Parser)]
#[command(about = "ackgate benchmark: raw producer, raw Redis and the gateway, same window")]
pub(crate) struct Args {
    /// Kafka bootstrap servers (a broker of the bench's own: topics are created per phase).
    #[arg(long, env = "ACKGATE_BENCH_KAFKA_BROKERS", default_value = "")]
    pub(crate) brokers: String,
    #[arg(
        long,
        env = "ACKGATE_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub(crate) redis_url: String,
    /// The gateway binary (`cargo build --release --bin ackgate`).
    #[arg(
        long,
        env = "ACKGATE_BENCH_GATEWAY_BIN",
        default_value = "target/release/ackgate"
    )]
    pub(crate) gateway_bin: PathBuf,
    /// Extra `ackgate serve` flags for every gateway, whitespace-separated.
    #[arg(long, env = "ACKGATE_BENCH_GATEWAY_ARGS", default_value = "")]
    pub(crate) gateway_args: String,
    /// Events outstanding at once, per phase.
    #[arg(
        long,
        env = "ACKGATE_BENCH_WINDOWS",
        value_delimiter = ',',
        default_value = "64,256,1024"
    )]
    pub(crate) windows: Vec<usize>,
    /// Measured seconds per phase.
    #[arg(long, env = "ACKGATE_BENCH_DURATION_SECS", default_value_t = 15.0)]
    pub(crate) duration: f64,
    /// Unmeasured seconds at the start of each phase.
    #[arg(long, env = "ACKGATE_BENCH_WARMUP_SECS", default_value_t = 2.0)]
    pub(crate) warmup: f64,
    /// Body size of each event, bytes.
    #[arg(long, env = "ACKGATE_BENCH_EVENT_BYTES", default_value_t = 1024)]
    pub(crate) event_bytes: usize,
    /// Partitions of each phase's topic.
    #[arg(long, env = "ACKGATE_BENCH_PARTITIONS", default_value_t = 3)]
    pub(crate) partitions: i32,
    /// Share of requests that are retries of answered events, in the duplicate mix (percent).
    #[arg(long, env = "ACKGATE_BENCH_DUPLICATE_PERCENT", default_value_t = 10)]
    pub(crate) duplicate_percent: u32,
    /// Window of the fixed-rate comparison and of the overload phase (default: 256 if measured,
    /// else the largest window).
    #[arg(long, env = "ACKGATE_BENCH_REFERENCE_WINDOW")]
    pub(crate) reference_window: Option<usize>,
    /// Events per request of the batch phase (`gateway_batch`).
    #[arg(long, env = "ACKGATE_BENCH_BATCH_EVENTS", default_value_t = 100)]
    pub(crate) batch_events: usize,
    /// Events outstanding in the batch phase: connections = this ÷ events per batch, rounded,
    /// each with one batch in flight. A raw producer phase at this window runs as its reference.
    #[arg(long, env = "ACKGATE_BENCH_BATCH_WINDOW", default_value_t = 1024)]
    pub(crate) batch_window: usize,
    /// Skip the batch phase (a gateway build without `events:batch`); the memory phase then
    /// sends one event per request.
    #[arg(long)]
    pub(crate) no_batch: bool,
    /// Events the memory phase (`redis_memory`) publishes to a Redis of its own (0: no memory
    /// phase).
    #[arg(long, env = "ACKGATE_BENCH_MEMORY_RECORDS", default_value_t = 100_000)]
    pub(crate) memory_records: u64,
    /// The `redis-server` binary the memory phase starts.
    #[arg(
        long,
        env = "ACKGATE_BENCH_REDIS_SERVER",
        default_value = "redis-server"
    )]
    pub(crate) redis_server: PathBuf,
    /// An older gateway binary measured in the same run for a before / after comparison: its
    /// own `gateway_unique_baseline` phase at every window, and a memory phase (one event per
    /// request: it need not have the batch endpoint).
    #[arg(long, env = "ACKGATE_BENCH_BASELINE_BIN")]
    pub(crate) baseline_bin: Option<PathBuf>,
    /// Skip `gateway_wrk` (single events at the reference window with wrk as the load
    /// generator; skipped anyway when wrk is not installed).
    #[arg(long)]
    pub(crate) no_wrk: bool,
    /// Skip the fixed-rate (half of max throughput) comparison.
    #[arg(long)]
    pub(crate) no_fixed_rate: bool,
    /// Skip the overload phase.
    #[arg(long)]
    pub(crate) no_overload: bool,
    /// Only the gateway phases (to compare gateway builds or flags quickly).
    #[arg(long)]
    pub(crate) gateway_only: bool,
    /// Seconds at 4× the sustainable rate in the overload phase.
    #[arg(long, env = "ACKGATE_BENCH_OVERLOAD_SECS", default_value_t = 15.0)]
    pub(crate) overload_secs: f64,
    /// Seconds of closed-loop load before and after the overload.
    #[arg(long, env = "ACKGATE_BENCH_CALM_SECS", default_value_t = 5.0)]
    pub(crate) calm_secs: f64,
    /// Seconds of the soak phase (0: none): one gateway under closed-loop load at the largest
    /// window, RSS sampled every second (`scripts/bench.sh --soak`: 600).
    #[arg(long, env = "ACKGATE_BENCH_SOAK_SECS", default_value_t = 0.0)]
    pub(crate) soak_secs: f64,
    /// Connections of the overload segment (default: 4 × the reference window).
    #[arg(long, env = "ACKGATE_BENCH_OVERLOAD_CONNECTIONS")]
    pub(crate) overload_connections: Option<usize>,
    /// Profile one extra gateway_unique phase (reference window) with `perf record`.
    #[arg(long, env = "ACKGATE_BENCH_PERF")]
    pub(crate) perf: bool,
    /// Where the .jsonl, .md and .svg go.
    #[arg(long, env = "ACKGATE_BENCH_OUT_DIR", default_value = "bench/results")]
    pub(crate) out_dir: PathBuf,
    /// Where scratch files (gateway logs, spools, perf data) go.
    #[arg(long, env = "ACKGATE_BENCH_WORK_DIR", default_value = "target/bench")]
    pub(crate) work_dir: PathBuf,
    /// The broker's pid, to report its CPU.
    #[arg(long, env = "ACKGATE_BENCH_BROKER_PID")]
    pub(crate) broker_pid: Option<u32>,
    /// The broker's version, for the report.
    #[arg(long, env = "ACKGATE_BENCH_BROKER_VERSION", default_value = "unknown")]
    pub(crate) broker_version: String,
    /// A short run (CI): label only; the windows and durations come from the flags.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Print the report of an existing `perf record` file of the gateway, and exit.
    #[arg(long, value_name = "PERF_DATA")]
    pub(crate) perf_report: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub(crate) bench: bool,
}
