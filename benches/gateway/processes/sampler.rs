//! The once-a-second [`Sampler`] of the timeline phases (overload, soak): RSS and CPU-seconds of
//! the gateway, Redis and the broker, and what they say between two moments ([`Samples`]).

use std::time::{Duration, Instant};

use crate::processes::procfs::{Probes, cpu_seconds, status_mib};

/// The RSS and CPU-seconds of the gateway, Redis and the broker at one moment of a phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Seconds since the phase's origin.
    pub(crate) at: f64,
    pub(crate) rss: Option<f64>,
    pub(crate) cpu: Option<f64>,
    pub(crate) redis_rss: Option<f64>,
    pub(crate) redis_cpu: Option<f64>,
    pub(crate) broker_rss: Option<f64>,
    pub(crate) broker_cpu: Option<f64>,
}

/// Samples the probed processes once a second until stopped (overload and soak timelines).
pub(crate) struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub(crate) fn start(origin: Instant, probes: Probes) -> Sampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let rss = |pid: Option<u32>| pid.and_then(|p| status_mib(p, "VmRSS:"));
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => samples.push(Sample {
                        at: origin.elapsed().as_secs_f64(),
                        rss: rss(probes.gateway),
                        cpu: cpu_seconds(probes.gateway),
                        redis_rss: rss(probes.redis),
                        redis_cpu: cpu_seconds(probes.redis),
                        broker_rss: rss(probes.broker),
                        broker_cpu: cpu_seconds(probes.broker),
                    }),
                    _ = &mut stopped => return samples,
                }
            }
        });
        Sampler { stop, task }
    }

    pub(crate) async fn stop(self) -> anyhow::Result<Samples> {
        let _ = self.stop.send(());
        Ok(Samples(self.task.await?))
    }
}

pub(crate) struct Samples(pub(crate) Vec<Sample>);

impl Samples {
    /// The sample nearest to `t` seconds.
    pub(crate) fn at(&self, t: f64) -> Option<Sample> {
        self.0
            .iter()
            .min_by(|a, b| (a.at - t).abs().total_cmp(&(b.at - t).abs()))
            .copied()
    }

    /// CPU use between the samples nearest to `from` and `to`, in % of one core.
    pub(crate) fn cpu_pct(
        &self,
        from: f64,
        to: f64,
        cpu: fn(&Sample) -> Option<f64>,
    ) -> Option<f64> {
        let (a, b) = (self.at(from)?, self.at(to)?);
        if b.at <= a.at {
            return None;
        }
        Some(100.0 * (cpu(&b)? - cpu(&a)?) / (b.at - a.at))
    }
}
