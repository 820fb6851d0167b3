//! `ackgate dev`: the whole gateway with nothing to install.
//!
//! Kafka is librdkafka's in-process mock cluster and the idempotency and failure stores live in
//! memory, behind the same traits as the Redis ones. The request path is exactly the one
//! `ackgate serve` runs; only the places where data is kept differ, and none of them survives
//! a restart.

use std::str::FromStr;

use anyhow::Context;
use clap::Args;
use rdkafka::mocking::MockCluster;

use crate::settings::Settings;
use crate::{Application, Backend, Config};

/// A topic to create in the mock cluster: `NAME` or `NAME:PARTITIONS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}

impl FromStr for TopicSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (name, partitions) = match spec.split_once(':') {
            Some((name, n)) => (
                name,
                n.parse::<i32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| format!("'{n}' is not a partition count from 1 to 1000"))?,
            ),
            None => (spec, 3),
        };
        crate::event::TopicName::parse(name).map_err(str::to_owned)?;
        Ok(TopicSpec {
            name: name.to_owned(),
            partitions,
        })
    }
}

/// Flags of `ackgate dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Topic to create, as NAME or NAME:PARTITIONS (repeatable).
    #[arg(
        long = "topic",
        default_value = "events:3",
        value_name = "NAME[:PARTITIONS]"
    )]
    pub topics: Vec<TopicSpec>,

    /// Brokers in the mock cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=9))]
    pub brokers: i32,

    /// Delay every answer of every mock broker by this many milliseconds: a slow Kafka, to try
    /// a client's handling of 202, of its own timeouts and of 504 (with --wait-timeout-ms and
    /// --delivery-timeout-ms below it).
    #[arg(long, default_value_t = 0, value_name = "MS",
        value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub kafka_rtt_ms: u64,

    #[command(flatten)]
    pub settings: Settings,
}

/// Runs the gateway against an in-process Kafka and in-memory stores until `shutdown`.
pub async fn run(
    args: DevArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cluster =
        MockCluster::new(args.brokers).context("could not start the mock Kafka cluster")?;
    let replication = args.brokers.min(3);
    for topic in &args.topics {
        cluster
            .create_topic(&topic.name, topic.partitions, replication)
            .with_context(|| format!("could not create topic {}", topic.name))?;
    }
    if args.kafka_rtt_ms > 0 {
        let rtt = std::time::Duration::from_millis(args.kafka_rtt_ms);
        // The mock cluster numbers its brokers from 1.
        for broker in 1..=args.brokers {
            cluster
                .broker_round_trip_time(broker, rtt)
                .context("could not slow down the mock Kafka cluster")?;
        }
    }
    let bootstrap = cluster.bootstrap_servers();
    let args_open = !args.settings.auth.is_configured();
    let https = args.settings.tls.is_enabled();
    let app = Application::build(Config {
        settings: args.settings,
        kafka_brokers: bootstrap.clone(),
        backend: Backend::Memory,
    })
    .await?;
    let topics: Vec<String> = args
        .topics
        .iter()
        .map(|t| format!("{} ({} partitions)", t.name, t.partitions))
        .collect();
    let addr = app.local_addr();
    let scheme = if https { "https" } else { "http" };
    eprintln!();
    eprintln!("  ackgate dev — in-memory Kafka and idempotency store.");
    eprintln!(
        "  !!! NOTHING IS KEPT: every event, key and failure record is lost when this process stops. !!!"
    );
    eprintln!();
    eprintln!("  listening on  {scheme}://{addr}   (API docs: {scheme}://{addr}/docs)");
    if let Some(admin) = app.admin_addr() {
        eprintln!("  admin         http://{admin}   (/healthz, /readyz, /metrics)");
    }
    eprintln!("  topics        {}", topics.join(", "));
    // Any Kafka client (kcat, `ackgate audit`, a consumer under test) can read the mock
    // cluster while this process runs.
    eprintln!("  kafka         {bootstrap}   (in-process mock cluster)");
    if args.kafka_rtt_ms > 0 {
        eprintln!(
            "  slow kafka    every broker answers {} ms late (--kafka-rtt-ms)",
            args.kafka_rtt_ms
        );
    }
    if args_open {
        eprintln!(
            "  auth          OFF: no credentials needed (give --auth-file or --jwt-* to try them)"
        );
    } else {
        eprintln!("  auth          on: send Authorization: Bearer <API key or JWT>");
    }
    eprintln!();
    tracing::warn!("ackgate dev keeps everything in memory; nothing survives a restart");
    let result = app.run_until(shutdown).await;
    // The mock cluster must outlive the producer, which `run_until` has flushed and dropped.
    drop(cluster);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_specs() {
        assert_eq!(
            "orders:6".parse::<TopicSpec>().unwrap(),
            TopicSpec {
                name: "orders".into(),
                partitions: 6
            }
        );
        assert_eq!("events".parse::<TopicSpec>().unwrap().partitions, 3);
        assert!("bad/name".parse::<TopicSpec>().is_err());
        assert!("x:0".parse::<TopicSpec>().is_err());
    }
}
