//! The phases of a run and what they share ([`Run`]): a fresh topic and Redis prefix per phase,
//! clean-up after it, and the results written as they come. The phases themselves:
//! [`throughput`] (raw producer, raw Redis, the gateway closed-loop or at a fixed rate),
//! [`overload`] and [`soak`].

pub(crate) mod overload;
pub(crate) mod soak;
pub(crate) mod throughput;

use std::path::PathBuf;

use redis::aio::ConnectionManager;

use crate::backends::{create_topic, delete_keys, delete_topic};
use crate::cli::Args;
use crate::load::Events;
use crate::load::pacing::Window;
use crate::processes::procfs::Probes;
use crate::report::{append_line, summary_line};
use crate::results::PhaseResult;

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

    fn events(&self, topic: &str) -> Events {
        Events {
            run: topic.to_owned(),
            bytes: self.args.event_bytes,
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
}
