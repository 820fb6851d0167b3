//! The phases of a run and what they share ([`Run`]): a fresh topic and Redis prefix per phase,
//! clean-up after it, and the results written as they come. The phases themselves:
//! [`throughput`] (raw producer, raw Redis, the gateway closed-loop or at a fixed rate),
//! [`batch`] (the gateway's batch endpoint), [`memory`] (Redis memory per record),
//! [`overload`], [`soak`], and [`wrk`] (single events with wrk as the load generator).

pub(crate) mod batch;
pub(crate) mod memory;
pub(crate) mod overload;
pub(crate) mod soak;
pub(crate) mod throughput;
pub(crate) mod wrk;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redis::aio::ConnectionManager;

use crate::backends::{create_topic, delete_keys, delete_topic};
use crate::cli::Args;
use crate::load::Events;
use crate::load::http::{HttpLoad, run_http};
use crate::load::pacing::{Pace, Window};
use crate::processes::gateway::Gateway;
use crate::processes::procfs::Probes;
use crate::processes::sampler::{Sampler, Samples};
use crate::report::{append_line, summary_line};
use crate::results::{Measured, PhaseMeta, PhaseResult, measure, phase_result};
use crate::tally::Timeline;

/// Everything shared by the phases of one run.
pub(crate) struct Run {
    pub(crate) args: Args,
    pub(crate) run_id: String,
    pub(crate) probes: Probes,
    pub(crate) redis: ConnectionManager,
    pub(crate) phase_count: usize,
    pub(crate) results: Vec<PhaseResult>,
    pub(crate) jsonl: PathBuf,
}

impl Run {
    /// A fresh topic and Redis prefix for the next phase.
    async fn fresh_names(&mut self) -> anyhow::Result<(String, String)> {
        self.phase_count += 1;
        let name = format!("bench-{}-{}", self.run_id, self.phase_count);
        create_topic(&self.args.brokers, &name, self.args.partitions).await?;
        Ok((name.clone(), name))
    }

    async fn cleanup(&mut self, topic: &str, prefix: &str) {
        delete_topic(&self.args.brokers, topic).await;
        if let Err(error) = delete_keys(&mut self.redis, prefix).await {
            eprintln!("warning: could not delete the bench's Redis keys under {prefix}: {error}");
        }
    }

    /// The unique events of a load, their keys starting with `run`.
    fn events(&self, run: &str) -> Events {
        Events {
            run: run.to_owned(),
            bytes: self.args.event_bytes,
            uuid_keys: false,
        }
    }

    /// The unique events of a load, their keys shaped like UUIDs (as clients send them).
    fn uuid_events(&self, run: &str) -> Events {
        Events {
            uuid_keys: true,
            ..self.events(run)
        }
    }

    fn window(&self) -> Window {
        Window::starting_now(self.args.warmup, self.args.duration)
    }

    fn push(&mut self, result: PhaseResult) -> anyhow::Result<()> {
        let line = serde_json::to_string(&result)?;
        println!("{}", summary_line(&result));
        append_line(&self.jsonl, &line)?;
        self.results.push(result);
        Ok(())
    }

    /// The processes a phase samples: Redis and the broker, and its gateway if it has one.
    fn probes(&self, gateway: Option<&Gateway>) -> Probes {
        Probes {
            gateway: gateway.map(|g| g.pid),
            ..self.probes
        }
    }

    /// The result of a phase that kept `window` events outstanding (connections, for the
    /// gateway) at `pace`.
    fn result(
        &self,
        phase: &str,
        window: usize,
        pace: Pace,
        gateway: Option<&Gateway>,
        measured: &Measured,
    ) -> PhaseResult {
        phase_result(
            PhaseMeta {
                run_id: &self.run_id,
                phase,
                window,
                target_rate: pace.target_rate(),
                event_bytes: self.args.event_bytes,
                batch_events: None,
                gateway,
            },
            measured,
        )
    }

    /// A fresh topic and Redis prefix, and a gateway on them named `<topic>-<suffix>` started
    /// with the `extra` flags.
    async fn start_gateway(
        &mut self,
        suffix: &str,
        extra: &[String],
    ) -> anyhow::Result<(String, String, Gateway)> {
        let args = self.args.clone();
        self.start_gateway_with(&args, suffix, extra).await
    }

    /// [`Run::start_gateway`] with other settings (e.g. the baseline build's binary).
    async fn start_gateway_with(
        &mut self,
        args: &Args,
        suffix: &str,
        extra: &[String],
    ) -> anyhow::Result<(String, String, Gateway)> {
        let (topic, prefix) = self.fresh_names().await?;
        let name = format!("{topic}-{suffix}");
        let gateway = Gateway::start(args, &prefix, &name, extra).await?;
        Ok((topic, prefix, gateway))
    }

    /// Stops a phase's gateway, then deletes its topic and Redis keys.
    async fn stop_gateway(
        &mut self,
        gateway: Gateway,
        topic: &str,
        prefix: &str,
    ) -> anyhow::Result<()> {
        gateway.stop().await?;
        self.cleanup(topic, prefix).await;
        Ok(())
    }

    /// Runs `load` on `gateway` and measures it as `phase`.
    async fn measure_http(
        &self,
        phase: &str,
        gateway: &Gateway,
        load: HttpLoad,
    ) -> anyhow::Result<PhaseResult> {
        let (connections, pace, window) =
            (load.connections, load.tickets.pace, load.tickets.window);
        let measured = measure(self.probes(Some(gateway)), window, run_http(load)).await?;
        Ok(self.result(phase, connections, pace, Some(gateway), &measured))
    }

    /// [`Run::start_gateway`], watched every second from now on: its answers in a timeline,
    /// the RSS and CPU of it, Redis and the broker (if throughput drifts, whose cost grew?).
    async fn start_watched(&mut self, suffix: &str, extra: &[String]) -> anyhow::Result<Watched> {
        let (topic, prefix, gateway) = self.start_gateway(suffix, extra).await?;
        let origin = Instant::now();
        let timeline = Arc::new(Mutex::new(Timeline {
            origin,
            seconds: Vec::new(),
        }));
        let sampler = Sampler::start(origin, self.probes(Some(&gateway)));
        Ok(Watched {
            topic,
            prefix,
            gateway,
            timeline,
            sampler,
        })
    }

    /// Stops the sampling, then the gateway ([`Run::stop_gateway`]): what was watched.
    async fn stop_watched(&mut self, watched: Watched) -> anyhow::Result<Watch> {
        let samples = watched.sampler.stop().await?;
        let peak_rss = watched.gateway.peak_rss_mib();
        self.stop_gateway(watched.gateway, &watched.topic, &watched.prefix)
            .await?;
        let timeline = Arc::try_unwrap(watched.timeline)
            .map_err(|_| anyhow::anyhow!("timeline still shared"))?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Ok(Watch {
            timeline,
            samples,
            peak_rss,
        })
    }
}

/// A gateway watched every second (overload, soak): see [`Run::start_watched`].
struct Watched {
    topic: String,
    prefix: String,
    gateway: Gateway,
    timeline: Arc<Mutex<Timeline>>,
    sampler: Sampler,
}

impl Watched {
    /// A load of `connections` on the watched gateway, its answers counted in the timeline.
    fn load(&self, events: Events, connections: usize, pace: Pace, window: Window) -> HttpLoad {
        HttpLoad {
            timeline: Some(self.timeline.clone()),
            ..HttpLoad::new(
                self.gateway.addr,
                &self.topic,
                events,
                connections,
                pace,
                window,
            )
        }
    }
}

/// What a watched gateway left: its answers per second, the samples, its peak RSS (VmHWM).
struct Watch {
    timeline: Timeline,
    samples: Samples,
    peak_rss: Option<f64>,
}
