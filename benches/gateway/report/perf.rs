//! `perf record` of the gateway during one measured window (`--perf`), and its report: where the
//! gateway's CPU goes by component and by innermost frame, then perf's own tables
//! (`--perf-report` prints it for an existing recording).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// How `perf record` samples the gateway (`--perf`).
pub(crate) const PERF_RECORD: &str = "-F 249 --call-graph dwarf,32768";

/// Where a profiled gateway's CPU goes, by component: each sample counts for the first
/// component (in this order) that any frame of its stack belongs to.
const PERF_COMPONENTS: &[(&str, &[&str])] = &[
    (
        "tracing: the request span and its fields",
        &[
            "tracing_subscriber",
            "tracing_core::event",
            "tracing::span::Span::new",
            "nu_ansi_term",
        ],
    ),
    (
        "metrics: counters, histograms, in-flight gauge",
        &[
            "metrics_util",
            "metrics_exporter",
            "metrics::",
            "track_metrics",
        ],
    ),
    (
        "Redis client: claim + settle (redis-rs and its socket I/O)",
        &["redis::", "RedisStore"],
    ),
    (
        "Kafka: produce call and delivery report (request side)",
        &["rd_kafka", "rdkafka::", "Publisher"],
    ),
    (
        "request parsing: body, JSON syntax check, fingerprint",
        &[
            "parse_event",
            "read_body",
            "serde_json::de",
            "fingerprint",
            "sha2",
        ],
    ),
    (
        "request id (ULID)",
        &["ulid", "MakeRequestUlid", "SetRequestId"],
    ),
    (
        "HTTP read: recv + hyper head parsing",
        &["poll_read_head", "poll_read_from_io"],
    ),
    (
        "HTTP write: hyper encoding + writev",
        &["poll_flush", "Http1Transaction>::encode", "writev"],
    ),
    (
        "tokio: I/O driver, parking, wake-ups",
        &["Driver::turn", "park", "epoll_wait", "futex"],
    ),
];

/// The component table of a `perf record` file (empty if `perf script` fails).
fn perf_components(data: &Path) -> String {
    let Ok(out) = Command::new("perf")
        .args(["script", "-F", "comm,ip,sym,dso", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
    else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut components: BTreeMap<&str, u64> = BTreeMap::new();
    let mut leaves: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0u64;
    for block in text.split("\n\n") {
        let mut lines = block.lines().map(str::trim).filter(|l| !l.is_empty());
        let Some(thread) = lines.next() else { continue };
        let frames: Vec<&str> = lines.collect();
        total += 1;
        let component = if thread.starts_with("rdk:") || thread.starts_with("producer") {
            "librdkafka's own threads: batching, broker I/O, reports"
        } else {
            PERF_COMPONENTS
                .iter()
                .find(|(_, needles)| {
                    frames
                        .iter()
                        .any(|frame| needles.iter().any(|needle| frame.contains(needle)))
                })
                .map_or(
                    "other: hyper/axum/tower plumbing, handler, pipeline, task spawns",
                    |(name, _)| name,
                )
        };
        *components.entry(component).or_default() += 1;
        let leaf = frames.first().copied().unwrap_or_default();
        let kind = if leaf.contains("[kernel") {
            "kernel"
        } else if [
            "malloc",
            "free",
            "_int_",
            "unlink_chunk",
            "memalign",
            "consolidate",
            "mi_",
        ]
        .iter()
        .any(|n| leaf.contains(n))
        {
            "allocator (malloc/free)"
        } else if leaf.contains("memmove") || leaf.contains("memcpy") {
            "memcpy/memmove"
        } else {
            "user code"
        };
        *leaves.entry(kind).or_default() += 1;
    }
    if total == 0 {
        return String::new();
    }
    let mut out = format!(
        "## by component ({total} samples; each counts for the first component its stack \
         belongs to)\n\n"
    );
    let mut sorted: Vec<_> = components.into_iter().collect();
    sorted.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    for (name, n) in sorted {
        let _ = writeln!(out, "  {:5.1}%  {name}", 100.0 * n as f64 / total as f64);
    }
    out.push_str("\n## by where the sample landed (the innermost frame)\n\n");
    let mut sorted: Vec<_> = leaves.into_iter().collect();
    sorted.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    for (name, n) in sorted {
        let _ = writeln!(out, "  {:5.1}%  {name}", 100.0 * n as f64 / total as f64);
    }
    out.push('\n');
    out
}

/// The report of a `perf record` file of the gateway: components, then perf's own tables.
pub(crate) fn perf_text(data: &Path, what: &str) -> anyhow::Result<String> {
    let mut text = format!(
        "# perf profile of the gateway process, {what}\n\
         # perf record {PERF_RECORD} -p <gateway pid> during the measured window\n\
         # (the release build has no frame pointers: stacks come from DWARF unwinding)\n\n"
    );
    text.push_str(&perf_components(data));
    for (title, sort, children, lines) in [
        ("by thread", "comm", "--no-children", 10),
        ("by shared object", "dso", "--no-children", 10),
        ("by symbol, self time", "symbol", "--no-children", 40),
    ] {
        let out = Command::new("perf")
            .args(["report", "--stdio", children, "-i"])
            .arg(data)
            .args(["--sort", sort, "--percent-limit", "0.5", "-g", "none"])
            .stderr(Stdio::null())
            .output()
            .context("perf report")?;
        let report = String::from_utf8_lossy(&out.stdout);
        let _ = writeln!(text, "## {title}\n");
        for line in report
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(lines)
        {
            let _ = writeln!(text, "{}", line.trim_end().trim_end_matches(['-', ' ']));
        }
        text.push('\n');
    }
    Ok(text)
}
