//! `gateway_wrk`: single events at the reference window with wrk as the load generator instead
//! of the bench's own client, so that the single-event target is judged with both (it was wrk
//! that measured the 74.8 µs per event the target started from).
//!
//! wrk runs `bench/wrk/unique.lua` (unique keys, the bench's 1 KiB event shape, only 201 counts
//! as a success) twice on a fresh gateway: once for the warm-up, then for the measured window.
//! The CPU of the gateway, Redis and the broker is sampled around the measured run; wrk reports
//! its own. Without wrk installed the phase is skipped with a warning.

use std::collections::BTreeMap;
use std::process::Stdio;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::process::Command;

use crate::load::pacing::Pace;
use crate::phases::Run;
use crate::processes::procfs::clock_ticks_per_sec;
use crate::results::{Counts, Latency, reported};

/// The wrk script, from the repository's root (where `scripts/bench.sh` runs the bench).
const SCRIPT: &str = "bench/wrk/unique.lua";

/// The line `done` in the script prints.
#[derive(Debug, Deserialize)]
struct Report {
    created: u64,
    other: u64,
    duration_us: u64,
    errors: Errors,
    latency_us: LatencyUs,
    cpu_ticks: u64,
}

#[derive(Debug, Deserialize)]
struct Errors {
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
}

#[derive(Debug, Deserialize)]
struct LatencyUs {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

impl Report {
    fn seconds(&self) -> f64 {
        self.duration_us as f64 / 1e6
    }

    fn counts(&self) -> Counts {
        let e = &self.errors;
        let answers: BTreeMap<String, u64> = [
            ("201", self.created),
            ("other status", self.other),
            ("error: connect", e.connect),
            ("error: read", e.read),
            ("error: write", e.write),
            ("error: timeout", e.timeout),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| (name.to_owned(), n))
        .collect();
        let ms = |us: f64| us / 1000.0;
        let l = &self.latency_us;
        Counts {
            events: self.created,
            latency: (self.created > 0).then(|| Latency {
                p50: ms(l.p50),
                p99: ms(l.p99),
                p999: ms(l.p999),
                max: ms(l.max),
                mean: ms(l.mean),
            }),
            replay_latency: None,
            shed_latency: None,
            failures: self.other + e.connect + e.read + e.write + e.timeout,
            answers,
            skipped: 0,
            reconnects: 0,
        }
    }
}

/// Whether wrk is on the PATH.
pub(crate) fn wrk_installed() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Run {
    /// `gateway_wrk` with `connections`: a fresh gateway, wrk's warm-up run, then its measured
    /// run with the CPU of the gateway, Redis and the broker sampled around it.
    pub(crate) async fn gateway_wrk(&mut self, connections: usize) -> anyhow::Result<()> {
        let (topic, prefix, gateway) = self.start_gateway("wrk", &[]).await?;
        let url = format!("http://{}/v1/topics/{topic}/events", gateway.addr);
        if self.args.warmup >= 0.5 {
            self.run_wrk(
                &url,
                connections,
                self.args.warmup,
                &format!("{topic}-warm"),
            )
            .await?;
        }
        let probes = self.probes(Some(&gateway));
        let before = probes.sample();
        let report = self
            .run_wrk(
                &url,
                connections,
                self.args.duration,
                &format!("{topic}-run"),
            )
            .await?;
        let after = probes.sample();
        let wrk_cpu = report.cpu_ticks as f64 / clock_ticks_per_sec();
        let measured = reported(report.counts(), report.seconds(), (before, after), wrk_cpu);
        let result = self.result(
            "gateway_wrk",
            connections,
            Pace::Closed,
            Some(&gateway),
            &measured,
        );
        self.stop_gateway(gateway, &topic, &prefix).await?;
        self.push(result)
    }

    /// One wrk run of `seconds` (whole seconds, at least one) with `connections` on `url`, its
    /// keys starting with `run`.
    async fn run_wrk(
        &self,
        url: &str,
        connections: usize,
        seconds: f64,
        run: &str,
    ) -> anyhow::Result<Report> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let output = Command::new("wrk")
            .arg(format!("--threads={}", threads.min(connections)))
            .arg(format!("--connections={connections}"))
            .arg(format!("--duration={}s", seconds.round().max(1.0)))
            .arg("--timeout=45s")
            .args(["--script", SCRIPT, url, "--", run])
            .arg(self.args.event_bytes.to_string())
            .kill_on_drop(true)
            .output()
            .await
            .context("running wrk")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().find(|l| l.starts_with("{\"wrk\":"));
        match (output.status.success(), line) {
            (true, Some(line)) => serde_json::from_str(line)
                .with_context(|| format!("wrk's report is not what {SCRIPT} prints: {line}")),
            _ => bail!(
                "wrk failed ({}): {} {}",
                output.status,
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }
}
