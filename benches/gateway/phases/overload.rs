//! The overload phase: one gateway with `--max-in-flight` = the reference window under
//! closed-loop load, then 4× the sustainable rate open-loop from more connections, then
//! closed-loop load again; its [`OverloadSummary`] has a per-second timeline of 201s, 503s, RSS
//! and CPU.

use serde::Serialize;

use crate::load::pacing::{Pace, Window};
use crate::phases::{Run, Watch};
use crate::report::append_line;
use crate::results::Latency;

impl Run {
    /// One gateway with `--max-in-flight cap`: calm, 4× the sustainable rate, calm again.
    pub(crate) async fn overload(
        &mut self,
        cap: usize,
        sustainable: f64,
    ) -> anyhow::Result<OverloadSummary> {
        let extra = ["--max-in-flight".to_owned(), cap.to_string()];
        let watched = self.start_watched("overload", &extra).await?;
        let rate = 4.0 * sustainable;
        let calm = self.args.calm_secs;
        let crowd = self.args.overload_connections.unwrap_or(4 * cap);
        let mut segments = Vec::new();
        let mut rss_at = Vec::new();
        for (segment, pace, connections, seconds) in [
            ("overload_before", Pace::Closed, cap, calm),
            (
                "overload_4x",
                Pace::Overload(rate),
                crowd,
                self.args.overload_secs,
            ),
            ("overload_after", Pace::Closed, cap, calm),
        ] {
            let window = Window::starting_now(1.0, seconds);
            let events = self.events(&format!("{}-{segment}", watched.topic));
            let load = watched.load(events, connections, pace, window);
            let result = self.measure_http(segment, &watched.gateway, load).await?;
            rss_at.push(watched.gateway.rss_mib());
            segments.push(result.clone());
            self.push(result)?;
        }
        let Watch {
            timeline,
            samples,
            peak_rss,
        } = self.stop_watched(watched).await?;

        let seconds: Vec<TimelineSecond> = timeline
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (from, to) = (i as f64, i as f64 + 1.0);
                TimelineSecond {
                    second: i,
                    ok: s.ok,
                    shed: s.shed,
                    other: s.other,
                    skipped: s.skipped,
                    ok_p99_ms: (!s.ok_latency.is_empty())
                        .then(|| s.ok_latency.value_at_quantile(0.99) as f64 / 1000.0),
                    rss_mib: samples.at(to).and_then(|e| e.rss),
                    cpu_pct: samples.cpu_pct(from, to, |s| s.cpu),
                }
            })
            .collect();
        let before = &segments[0];
        let during = &segments[1];
        let after = &segments[2];
        let answered = during.answers.values().sum::<u64>();
        let summary = OverloadSummary {
            kind: "overload",
            run_id: self.run_id.clone(),
            max_in_flight: cap,
            connections: crowd,
            sustainable_eps: sustainable,
            offered_eps: rate,
            sent_eps: answered as f64 / during.duration_s,
            ok_eps: during.throughput_eps,
            shed_eps: during.shed_latency_ms.map_or(0.0, |_| {
                during
                    .answers
                    .get("503 + Retry-After")
                    .copied()
                    .unwrap_or(0) as f64
                    / during.duration_s
            }),
            other_answers: during.failures,
            skipped_tickets: during.skipped_tickets,
            shed_latency_ms: during.shed_latency_ms,
            ok_latency_ms: during.latency_ms,
            throughput_before_eps: before.throughput_eps,
            throughput_after_eps: after.throughput_eps,
            recovered_ratio: after.throughput_eps / before.throughput_eps.max(f64::MIN_POSITIVE),
            rss_mib_end_before: rss_at[0],
            rss_mib_end_overload: rss_at[1],
            rss_mib_end_after: rss_at[2],
            rss_mib_max_during_overload: overload_rss(&seconds).0,
            rss_mib_drift_during_overload: overload_rss(&seconds).1,
            transport_errors: during
                .answers
                .iter()
                .filter(|(k, _)| k.starts_with("error"))
                .map(|(_, n)| n)
                .sum(),
            peak_rss_mib: peak_rss,
            timeline: seconds,
        };
        append_line(&self.jsonl, &serde_json::to_string(&summary)?)?;
        Ok(summary)
    }
}

/// RSS during the seconds the gateway shed load: the maximum, and the drift from two seconds
/// in (once the extra connections are open) to the last such second.
fn overload_rss(seconds: &[TimelineSecond]) -> (Option<f64>, Option<f64>) {
    let shedding: Vec<&TimelineSecond> = seconds.iter().filter(|s| s.shed > 0).collect();
    let (Some(first), Some(last)) = (shedding.first(), shedding.last()) else {
        return (None, None);
    };
    let span: Vec<&TimelineSecond> = seconds
        .iter()
        .filter(|s| s.second >= first.second && s.second <= last.second)
        .collect();
    let max = span.iter().filter_map(|s| s.rss_mib).reduce(f64::max);
    let settled = span
        .iter()
        .find(|s| s.second >= first.second + 2)
        .and_then(|s| s.rss_mib);
    let drift = match (settled, last.rss_mib) {
        (Some(a), Some(b)) if last.second > first.second + 2 => Some(b - a),
        _ => None,
    };
    (max, drift)
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimelineSecond {
    pub(crate) second: usize,
    pub(crate) ok: u64,
    pub(crate) shed: u64,
    pub(crate) other: u64,
    pub(crate) skipped: u64,
    pub(crate) ok_p99_ms: Option<f64>,
    pub(crate) rss_mib: Option<f64>,
    pub(crate) cpu_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct OverloadSummary {
    pub(crate) kind: &'static str,
    pub(crate) run_id: String,
    pub(crate) max_in_flight: usize,
    pub(crate) connections: usize,
    pub(crate) sustainable_eps: f64,
    /// The open-loop rate asked for (4 × sustainable).
    pub(crate) offered_eps: f64,
    /// Requests actually sent (and answered) per second; below `offered_eps` when the
    /// generator's connections were all busy (see `skipped_tickets`).
    pub(crate) sent_eps: f64,
    pub(crate) ok_eps: f64,
    pub(crate) shed_eps: f64,
    pub(crate) other_answers: u64,
    pub(crate) skipped_tickets: u64,
    pub(crate) shed_latency_ms: Option<Latency>,
    pub(crate) ok_latency_ms: Option<Latency>,
    pub(crate) throughput_before_eps: f64,
    pub(crate) throughput_after_eps: f64,
    pub(crate) recovered_ratio: f64,
    pub(crate) rss_mib_end_before: Option<f64>,
    pub(crate) rss_mib_end_overload: Option<f64>,
    pub(crate) rss_mib_end_after: Option<f64>,
    pub(crate) rss_mib_max_during_overload: Option<f64>,
    /// RSS change from 2 s into the overload to its end, MiB.
    pub(crate) rss_mib_drift_during_overload: Option<f64>,
    /// Connection errors and timeouts during the overload.
    pub(crate) transport_errors: u64,
    pub(crate) peak_rss_mib: Option<f64>,
    pub(crate) timeline: Vec<TimelineSecond>,
}
