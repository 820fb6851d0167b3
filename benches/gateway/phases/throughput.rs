//! The throughput phases, for every window: the raw producer and raw Redis (the gateway's
//! physical limits), the gateway closed-loop with unique events and with the duplicate mix
//! (and with unique events on a baseline build, with `--baseline-bin`),
//! the gateway and the raw producer at one fixed open-loop rate, and the gateway under
//! `perf record` (`--perf`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context as _;

use crate::backends::redis_connection;
use crate::cli::Args;
use crate::load::http::HttpLoad;
use crate::load::pacing::{Pace, Window};
use crate::load::raw_producer::{RawProducerLoad, run_raw_producer};
use crate::load::raw_redis::{RawRedisLoad, run_raw_redis};
use crate::phases::Run;
use crate::report::file_stem;
use crate::report::perf::{PERF_RECORD, perf_text};
use crate::results::measure;

impl Run {
    pub(crate) async fn raw_producer(
        &mut self,
        window_size: usize,
        pace: Pace,
    ) -> anyhow::Result<()> {
        let (topic, prefix) = self.fresh_names().await?;
        let window = self.window();
        let load = RawProducerLoad {
            brokers: &self.args.brokers,
            topic: &topic,
            events: self.events(&topic),
            window_size,
            pace,
            window,
        };
        let measured = measure(self.probes(None), window, run_raw_producer(load)).await?;
        let phase = match pace {
            Pace::Rate(_) => "raw_producer_fixed",
            _ => "raw_producer",
        };
        let result = self.result(phase, window_size, pace, None, &measured);
        self.cleanup(&topic, &prefix).await;
        self.push(result)
    }

    pub(crate) async fn raw_redis(&mut self, window_size: usize) -> anyhow::Result<()> {
        let (topic, prefix) = self.fresh_names().await?;
        let window = self.window();
        let load = RawRedisLoad {
            conn: redis_connection(&self.args.redis_url).await?,
            prefix: prefix.clone(),
            topic: topic.clone(),
            events: self.events(&topic),
            window_size,
            window,
        };
        let measured = measure(self.probes(None), window, run_raw_redis(load)).await?;
        let result = self.result("raw_redis", window_size, Pace::Closed, None, &measured);
        self.cleanup(&topic, &prefix).await;
        self.push(result)
    }

    /// One gateway process, one load; `perf` profiles the measured window.
    pub(crate) async fn gateway(
        &mut self,
        window_size: usize,
        pace: Pace,
        duplicate_percent: u32,
        perf: bool,
    ) -> anyhow::Result<()> {
        let phase = match (pace, duplicate_percent) {
            (Pace::Rate(_), _) => "gateway_fixed".to_owned(),
            (_, 0) => "gateway_unique".to_owned(),
            (_, p) => format!("gateway_dup{p}"),
        };
        let args = self.args.clone();
        self.gateway_phase(&args, &phase, window_size, pace, duplicate_percent, perf)
            .await
    }

    /// `gateway_unique_baseline`: `gateway_unique` on the baseline build `bin`, for a before /
    /// after comparison within one run.
    pub(crate) async fn gateway_baseline(
        &mut self,
        window_size: usize,
        bin: &Path,
    ) -> anyhow::Result<()> {
        let args = Args {
            gateway_bin: bin.to_owned(),
            ..self.args.clone()
        };
        let phase = "gateway_unique_baseline";
        self.gateway_phase(&args, phase, window_size, Pace::Closed, 0, false)
            .await
    }

    /// A gateway phase on the gateway `args` name.
    async fn gateway_phase(
        &mut self,
        args: &Args,
        phase: &str,
        window_size: usize,
        pace: Pace,
        duplicate_percent: u32,
        perf: bool,
    ) -> anyhow::Result<()> {
        let (topic, prefix, gateway) = self.start_gateway_with(args, phase, &[]).await?;
        let window = self.window();
        let events = self.events(&topic);
        let load = HttpLoad {
            duplicate_percent,
            ..HttpLoad::new(gateway.addr, &topic, events, window_size, pace, window)
        };
        let profiler = if perf {
            Some(self.start_perf(gateway.pid, window)?)
        } else {
            None
        };
        let mut result = self.measure_http(phase, &gateway, load).await?;
        result.profiled = perf;
        // perf first: it must see the gateway exit only after it has written its data.
        if let Some(profiler) = profiler {
            self.finish_perf(profiler, phase, window_size)?;
        }
        self.stop_gateway(gateway, &topic, &prefix).await?;
        self.push(result)
    }

    /// `perf record` on the gateway during the measured window (waits for it to begin).
    fn start_perf(&self, pid: u32, window: Window) -> anyhow::Result<(Child, PathBuf)> {
        let data = self
            .args
            .work_dir
            .join(format!("perf-{}.data", self.run_id));
        let delay = window
            .measure_from
            .saturating_duration_since(Instant::now());
        let seconds = window.seconds();
        let script = format!(
            "sleep {:.3}; exec perf record -q {PERF_RECORD} -p {pid} -o {} -- sleep {seconds:.3}",
            delay.as_secs_f64(),
            data.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf")?;
        Ok((child, data))
    }

    fn finish_perf(
        &self,
        (mut child, data): (Child, PathBuf),
        phase: &str,
        window: usize,
    ) -> anyhow::Result<()> {
        let status = child.wait()?;
        if !status.success() || std::fs::metadata(&data).map_or(0, |m| m.len()) == 0 {
            eprintln!("warning: perf record failed ({status}); no profile");
            return Ok(());
        }
        let text = perf_text(&data, &format!("phase {phase}, window {window}"))?;
        let path = self
            .args
            .out_dir
            .join(format!("{}-{}-perf.txt", file_stem(), self.run_id));
        std::fs::write(&path, text)?;
        println!("profile: {}", path.display());
        Ok(())
    }
}
