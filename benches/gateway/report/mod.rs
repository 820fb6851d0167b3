//! The run's report: what ran where ([`RunInfo`]), one JSON object a line appended to the
//! `.jsonl`, a line on the terminal per phase; the [`summary`] of ratios and targets, the
//! [`markdown`] report, the [`svg`] plot and the [`perf`] profile.

pub(crate) mod markdown;
pub(crate) mod perf;
pub(crate) mod summary;
pub(crate) mod svg;

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::Args;
use crate::results::PhaseResult;

pub(crate) fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{line}")?;
    Ok(())
}

pub(crate) fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

pub(crate) fn summary_line(r: &PhaseResult) -> String {
    format!(
        "{:<23} w={:<5} {:>9.0} ev/s  p50 {:>7} ms  p99 {:>7} ms  p99.9 {:>7} ms  cpu/10k {:>6} s  \
         rss {:>6} MiB  failures {}",
        r.phase,
        r.window,
        r.throughput_eps,
        fmt_opt(r.latency_ms.map(|l| l.p50), 2),
        fmt_opt(r.latency_ms.map(|l| l.p99), 2),
        fmt_opt(r.latency_ms.map(|l| l.p999), 2),
        fmt_opt(r.process_cpu_s_per_10k, 3),
        fmt_opt(r.gateway_peak_rss_mib, 1),
        r.failures,
    )
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunInfo {
    pub(crate) kind: &'static str,
    pub(crate) run_id: String,
    pub(crate) started_at: String,
    pub(crate) quick: bool,
    pub(crate) nproc: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory_gib: Option<f64>,
    pub(crate) kernel: String,
    pub(crate) git_sha: String,
    pub(crate) git_dirty: bool,
    pub(crate) ackgate_version: String,
    pub(crate) rustc: String,
    pub(crate) librdkafka: String,
    pub(crate) broker: String,
    pub(crate) redis: String,
    pub(crate) windows: Vec<usize>,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) event_bytes: usize,
    pub(crate) partitions: i32,
    pub(crate) duplicate_percent: u32,
    pub(crate) gateway_args: String,
    /// Events per batch and events outstanding of the batch phase (none: no batch phase).
    pub(crate) batch_events: Option<usize>,
    pub(crate) batch_window: Option<usize>,
    /// Events of the memory phase (0: none).
    pub(crate) memory_records: u64,
    /// `--version` of the baseline build (`--baseline-bin`), if one runs.
    pub(crate) baseline: Option<String>,
    pub(crate) load_average: String,
}

pub(crate) fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_sha() -> String {
    command_output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "nogit".into())
}

pub(crate) fn file_stem() -> String {
    static STEM: OnceLock<String> = OnceLock::new();
    STEM.get_or_init(|| {
        let date = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!("[year]-[month]-[day]"))
            .unwrap_or_else(|_| "undated".into());
        format!("{date}-{}", git_sha())
    })
    .clone()
}

pub(crate) fn run_info(args: &Args, run_id: &str, redis_version: &str) -> RunInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map(|kib| kib / 1024.0 / 1024.0);
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    RunInfo {
        kind: "run",
        run_id: run_id.to_owned(),
        started_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        quick: args.quick,
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model,
        memory_gib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        git_sha: git_sha(),
        git_dirty: command_output("git", &["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|s| !s.is_empty()),
        ackgate_version: command_output(&args.gateway_bin.to_string_lossy(), &["--version"])
            .unwrap_or_else(|| "unknown".into()),
        rustc: command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        librdkafka,
        broker: args.broker_version.clone(),
        redis: redis_version.to_owned(),
        windows: args.windows.clone(),
        duration_s: args.duration,
        warmup_s: args.warmup,
        event_bytes: args.event_bytes,
        partitions: args.partitions,
        duplicate_percent: args.duplicate_percent,
        gateway_args: args.gateway_args.clone(),
        batch_events: (!args.no_batch).then_some(args.batch_events),
        batch_window: (!args.no_batch).then_some(args.batch_window),
        memory_records: args.memory_records,
        baseline: args.baseline_bin.as_ref().map(|bin| {
            let version = command_output(&bin.to_string_lossy(), &["--version"]);
            format!(
                "{} ({})",
                version.unwrap_or_else(|| "unknown".into()),
                bin.display()
            )
        }),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}
