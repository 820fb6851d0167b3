//! The soak phase (`--soak-secs`): one gateway under closed-loop load at the largest window for
//! minutes, the RSS and CPU of it, Redis and the broker sampled every second, to show whether
//! anything grows without bound ([`SoakSummary`], one row a minute).

use serde::Serialize;

use crate::load::pacing::{Pace, Window};
use crate::phases::{Run, Watch};
use crate::report::append_line;

impl Run {
    /// One gateway under closed-loop load at `window` for `seconds`: memory and CPU sampled
    /// every second, to show whether anything grows without bound.
    pub(crate) async fn soak(
        &mut self,
        window: usize,
        seconds: f64,
    ) -> anyhow::Result<SoakSummary> {
        let watched = self.start_watched("soak", &[]).await?;
        let measured_window = Window::starting_now(0.0, seconds);
        let events = self.events(&format!("{}-soak", watched.topic));
        let load = watched.load(events, window, Pace::Closed, measured_window);
        let result = self.measure_http("soak", &watched.gateway, load).await?;
        let Watch {
            timeline,
            samples,
            peak_rss,
        } = self.stop_watched(watched).await?;

        // One row per minute: events answered, RSS at its end, CPU over it.
        let minutes = (seconds / 60.0).ceil() as usize;
        let rows: Vec<SoakMinute> = (0..minutes)
            .map(|m| {
                let (from, to) = (m as f64 * 60.0, ((m + 1) as f64 * 60.0).min(seconds));
                let events: u64 = timeline
                    .seconds
                    .iter()
                    .skip(from as usize)
                    .take((to - from).ceil() as usize)
                    .map(|s| s.ok)
                    .sum();
                let end = samples.at(to);
                SoakMinute {
                    minute: m + 1,
                    events_per_s: events as f64 / (to - from).max(f64::MIN_POSITIVE),
                    rss_mib: end.and_then(|e| e.rss),
                    cpu_pct: samples.cpu_pct(from, to, |s| s.cpu),
                    redis_rss_mib: end.and_then(|e| e.redis_rss),
                    redis_cpu_pct: samples.cpu_pct(from, to, |s| s.redis_cpu),
                    broker_rss_mib: end.and_then(|e| e.broker_rss),
                    broker_cpu_pct: samples.cpu_pct(from, to, |s| s.broker_cpu),
                }
            })
            .collect();
        let rss = |t: f64| samples.at(t).and_then(|s| s.rss);
        let summary = SoakSummary {
            kind: "soak",
            run_id: self.run_id.clone(),
            window,
            duration_s: seconds,
            throughput_eps: result.throughput_eps,
            failures: result.failures,
            rss_mib_after_first_minute: rss(60.0_f64.min(seconds)),
            rss_mib_at_half: rss(seconds / 2.0),
            rss_mib_end: rss(seconds),
            rss_mib_max: samples.0.iter().filter_map(|s| s.rss).reduce(f64::max),
            peak_rss_mib: peak_rss,
            minutes: rows,
        };
        self.push(result)?;
        append_line(&self.jsonl, &serde_json::to_string(&summary)?)?;
        Ok(summary)
    }
}

/// A soak run: does the gateway's memory settle under steady load?
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SoakSummary {
    pub(crate) kind: &'static str,
    pub(crate) run_id: String,
    pub(crate) window: usize,
    pub(crate) duration_s: f64,
    pub(crate) throughput_eps: f64,
    pub(crate) failures: u64,
    pub(crate) rss_mib_after_first_minute: Option<f64>,
    pub(crate) rss_mib_at_half: Option<f64>,
    pub(crate) rss_mib_end: Option<f64>,
    pub(crate) rss_mib_max: Option<f64>,
    pub(crate) peak_rss_mib: Option<f64>,
    pub(crate) minutes: Vec<SoakMinute>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SoakMinute {
    pub(crate) minute: usize,
    pub(crate) events_per_s: f64,
    pub(crate) rss_mib: Option<f64>,
    pub(crate) cpu_pct: Option<f64>,
    pub(crate) redis_rss_mib: Option<f64>,
    pub(crate) redis_cpu_pct: Option<f64>,
    pub(crate) broker_rss_mib: Option<f64>,
    pub(crate) broker_cpu_pct: Option<f64>,
}
