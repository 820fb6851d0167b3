//! What a phase reports: its [`PhaseResult`] (throughput, latency percentiles, answers, the
//! CPU of every process involved, the gateway's peak RSS), made from the [`Tally`] of its load
//! and the CPU [`measure`]d at the start and end of its measured window.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::pacing::Window;
use crate::processes::gateway::Gateway;
use crate::processes::procfs::{CpuSample, Probes, delta};
use crate::tally::Tally;

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    (!h.is_empty()).then(|| Latency {
        p50: h.value_at_quantile(0.50) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        p999: h.value_at_quantile(0.999) as f64 / 1000.0,
        max: h.max() as f64 / 1000.0,
        mean: h.mean() / 1000.0,
    })
}

/// CPU of each process per successful event of a phase, microseconds (from `/proc`).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct CpuPerEvent {
    pub(crate) gateway: Option<f64>,
    pub(crate) redis: Option<f64>,
    pub(crate) broker: Option<f64>,
    /// The bench's own process: the load generator (in raw phases, the raw client).
    pub(crate) generator: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseResult {
    pub(crate) kind: &'static str,
    pub(crate) run_id: String,
    pub(crate) phase: String,
    pub(crate) window: usize,
    /// Open-loop rate asked for, events/s (fixed-rate and overload phases).
    pub(crate) target_rate_eps: Option<f64>,
    pub(crate) event_bytes: usize,
    /// Events per request (`gateway_batch`; the window counts events, not requests). Latency
    /// is then that of the whole batch request.
    pub(crate) batch_events: Option<usize>,
    pub(crate) duration_s: f64,
    /// Successful events in the measured window (201s, replays, acks, settled keys).
    pub(crate) events: u64,
    pub(crate) throughput_eps: f64,
    /// Latency of first answers (201 / acks / claim+settle), ms.
    pub(crate) latency_ms: Option<Latency>,
    /// Latency of replayed 201s, ms (duplicate mix).
    pub(crate) replay_latency_ms: Option<Latency>,
    /// Latency of 503 answers, ms (overload).
    pub(crate) shed_latency_ms: Option<Latency>,
    pub(crate) answers: BTreeMap<String, u64>,
    /// Answers that are neither a success nor a 503 + Retry-After.
    pub(crate) failures: u64,
    pub(crate) skipped_tickets: u64,
    pub(crate) reconnects: u64,
    /// "gateway" for gateway phases; "bench" (this process, the client) for raw phases.
    pub(crate) measured_process: &'static str,
    pub(crate) process_cpu_s: f64,
    /// CPU-seconds of the measured process per 10 000 successful events.
    pub(crate) process_cpu_s_per_10k: Option<f64>,
    /// Percent of one core.
    pub(crate) process_cpu_pct: f64,
    pub(crate) gateway_peak_rss_mib: Option<f64>,
    pub(crate) generator_cpu_s: Option<f64>,
    pub(crate) generator_cpu_pct: Option<f64>,
    pub(crate) broker_cpu_pct: Option<f64>,
    pub(crate) redis_cpu_pct: Option<f64>,
    /// Busy share of all the machine's cores (everything on it, not only the bench), percent.
    pub(crate) machine_busy_pct: Option<f64>,
    pub(crate) cpu_us_per_event: CpuPerEvent,
    /// Extra phase run under `perf record`: perturbed, left out of ratios and targets.
    pub(crate) profiled: bool,
}

/// What a phase's load counted: from its own [`Tally`], or from what an outside load
/// generator (wrk) reported.
pub(crate) struct Counts {
    /// Successful events (201s, replays, acks, settled keys).
    pub(crate) events: u64,
    pub(crate) latency: Option<Latency>,
    pub(crate) replay_latency: Option<Latency>,
    pub(crate) shed_latency: Option<Latency>,
    pub(crate) answers: BTreeMap<String, u64>,
    pub(crate) failures: u64,
    pub(crate) skipped: u64,
    pub(crate) reconnects: u64,
}

impl Counts {
    fn of(tally: &Tally) -> Counts {
        Counts {
            events: tally.successes(),
            latency: latency(&tally.ok),
            replay_latency: latency(&tally.replayed),
            shed_latency: latency(&tally.shed),
            answers: tally.answers.clone(),
            failures: tally.failures(),
            skipped: tally.skipped,
            reconnects: tally.reconnects,
        }
    }
}

pub(crate) struct Measured {
    counts: Counts,
    /// Length of the measured window, seconds.
    seconds: f64,
    before: CpuSample,
    after: CpuSample,
    /// CPU-seconds the load generator spent in the window: this process, or an outside one.
    generator_cpu: f64,
}

/// Runs `load` while sampling CPU at the start and end of the measured window.
pub(crate) async fn measure<F>(probes: Probes, window: Window, load: F) -> anyhow::Result<Measured>
where
    F: std::future::Future<Output = anyhow::Result<Tally>>,
{
    let samples = async {
        tokio::time::sleep_until(tokio::time::Instant::from_std(window.measure_from)).await;
        let before = probes.sample();
        tokio::time::sleep_until(tokio::time::Instant::from_std(window.end)).await;
        (before, probes.sample())
    };
    let (tally, (before, after)) = tokio::join!(load, samples);
    Ok(Measured {
        counts: Counts::of(&tally?),
        seconds: window.seconds(),
        generator_cpu: after.this - before.this,
        before,
        after,
    })
}

/// What an outside load generator measured over `seconds`, with the CPU samples taken around
/// its run and the `generator_cpu` it reported for itself.
pub(crate) fn reported(
    counts: Counts,
    seconds: f64,
    (before, after): (CpuSample, CpuSample),
    generator_cpu: f64,
) -> Measured {
    Measured {
        counts,
        seconds,
        before,
        after,
        generator_cpu,
    }
}

pub(crate) struct PhaseMeta<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) phase: &'a str,
    pub(crate) window: usize,
    pub(crate) target_rate: Option<f64>,
    pub(crate) event_bytes: usize,
    pub(crate) batch_events: Option<usize>,
    pub(crate) gateway: Option<&'a Gateway>,
}

pub(crate) fn phase_result(meta: PhaseMeta<'_>, m: &Measured) -> PhaseResult {
    let secs = m.seconds;
    let pct = |cpu: Option<f64>| cpu.map(|c| 100.0 * c / secs);
    let events = m.counts.events;
    let this_cpu = m.generator_cpu;
    let gateway_cpu = delta(m.before.gateway, m.after.gateway);
    let (measured_process, process_cpu, generator_cpu) = match meta.gateway {
        Some(_) => ("gateway", gateway_cpu.unwrap_or(0.0), Some(this_cpu)),
        None => ("bench", this_cpu, None),
    };
    let broker_cpu = delta(m.before.broker, m.after.broker);
    let redis_cpu = delta(m.before.redis, m.after.redis);
    let per_event = |cpu: Option<f64>| cpu.filter(|_| events > 0).map(|c| c / events as f64 * 1e6);
    PhaseResult {
        kind: "phase",
        run_id: meta.run_id.to_owned(),
        phase: meta.phase.to_owned(),
        window: meta.window,
        target_rate_eps: meta.target_rate,
        event_bytes: meta.event_bytes,
        batch_events: meta.batch_events,
        duration_s: secs,
        events,
        throughput_eps: events as f64 / secs,
        latency_ms: m.counts.latency,
        replay_latency_ms: m.counts.replay_latency,
        shed_latency_ms: m.counts.shed_latency,
        answers: m.counts.answers.clone(),
        failures: m.counts.failures,
        skipped_tickets: m.counts.skipped,
        reconnects: m.counts.reconnects,
        measured_process,
        process_cpu_s: process_cpu,
        process_cpu_s_per_10k: (events > 0).then(|| process_cpu / events as f64 * 10_000.0),
        process_cpu_pct: 100.0 * process_cpu / secs,
        gateway_peak_rss_mib: meta.gateway.and_then(Gateway::peak_rss_mib),
        generator_cpu_s: generator_cpu,
        generator_cpu_pct: pct(generator_cpu),
        broker_cpu_pct: pct(broker_cpu),
        redis_cpu_pct: pct(redis_cpu),
        machine_busy_pct: match (m.before.machine, m.after.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some(100.0 * (b1 - b0) / (t1 - t0)),
            _ => None,
        },
        cpu_us_per_event: CpuPerEvent {
            gateway: per_event(meta.gateway.and(gateway_cpu)),
            redis: per_event(redis_cpu),
            broker: per_event(broker_cpu),
            generator: per_event(Some(this_cpu)),
        },
        profiled: false,
    }
}
