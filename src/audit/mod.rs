//! `ackgate audit`: read a topic back and check what the gateway promised.
//!
//! Every record the gateway publishes carries the header `idempotency-key`, and every `201`
//! answer names the partition and offset Kafka gave the record. The audit reads every partition
//! of one topic (a plain assignment: it joins no consumer group and commits nothing), groups the
//! records by that header and reports keys that occur more than once and records without the
//! header. Given the saved `201` answers (`--acks`), it also reports acknowledged keys that are
//! not in the topic, and answers whose partition/offset does not hold a record with their key.
//!
//! # Where reading stops
//!
//! The audit covers the topic as it was when the audit started. It reads each partition's high
//! watermark first; on Kafka the watermark is never behind an `acks=all` acknowledgement, so the
//! records below it are everything that was acknowledged before the audit began. Some
//! Kafka-compatible brokers (Tansu, the test broker) report a watermark that lags far behind,
//! so the watermark alone cannot end a partition. A partition is finished when either
//!
//! - the broker reported its end (partition EOF) and nothing new arrived on any partition for
//!   `--idle-ms`, or
//! - a record at or past the starting watermark was written after the audit started (its
//!   timestamp is later): the topic is being written to and the snapshot is complete. That
//!   record and the ones after it are not audited.
//!
//! Records past a lagging watermark that are older than the audit are audited like the rest.
//!
//! [`audit`] does the work and returns an [`AuditReport`]; [`run`] is the subcommand, which
//! prints it. Inside: `flags` (the command line), `reader` (reading the topic back from Kafka),
//! `tally` (the saved answers, and counting and checking every record read against them) and
//! `report` (what was found, and the summary printed of it).

mod flags;
mod reader;
mod report;
mod tally;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;

pub use flags::AuditArgs;
pub use report::{
    AcksReport, AuditReport, DuplicateKey, FoundThere, MissingKey, OffsetMismatch, PartitionReport,
    Problems, StopReason, render_summary,
};

/// How long the topic must stay quiet after every partition reported its end.
pub const DEFAULT_IDLE_MS: u64 = 2_000;
/// How long Kafka may take to answer a metadata, watermark or offset request, and how long
/// reading may go without any progress.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Positions of records without the header that the report lists (all are counted).
pub const MAX_LISTED_WITHOUT_HEADER: usize = 1_000;

/// Where each partition is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// The first record still in the partition.
    Beginning,
    /// The first record with a timestamp at or after this time.
    Since(OffsetDateTime),
}

/// Everything [`audit`] needs.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    pub start: StartAt,
    /// The file of saved 201 answers, if any.
    pub acks: Option<PathBuf>,
    /// Extra librdkafka consumer properties.
    pub kafka_properties: crate::settings::KafkaProperties,
    pub idle: Duration,
    pub timeout: Duration,
    /// Whether duplicate keys leave the verdict clean.
    pub allow_duplicates: bool,
    /// Draw a progress line on stderr.
    pub progress: bool,
}

impl AuditConfig {
    /// The defaults: from the beginning, no acks file, no progress line.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        AuditConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            start: StartAt::Beginning,
            acks: None,
            kafka_properties: Default::default(),
            idle: Duration::from_millis(DEFAULT_IDLE_MS),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            allow_duplicates: false,
            progress: false,
        }
    }
}

/// One record's place in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "partition {} offset {}", self.partition, self.offset)
    }
}

/// The outcome the exit status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditVerdict {
    Clean,
    ProblemsFound,
}

/// `ackgate audit`: audits, prints the summary (or JSON) on stdout, returns the verdict.
pub async fn run(args: AuditArgs) -> anyhow::Result<AuditVerdict> {
    let report = audit(AuditConfig::from(&args)).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("serializing the report")?
        );
    } else {
        print!("{}", render_summary(&report));
    }
    Ok(report.verdict())
}

/// Reads the topic and checks it (and the saved answers, if any).
///
/// Errors are usage or connection problems: an unreadable acks file, a topic that does not
/// exist, a broker that does not answer within the timeout, refused authorization.
pub async fn audit(config: AuditConfig) -> anyhow::Result<AuditReport> {
    tokio::task::spawn_blocking(move || audit_blocking(&config))
        .await
        .context("the audit task failed")?
}

fn audit_blocking(config: &AuditConfig) -> anyhow::Result<AuditReport> {
    let acks = match &config.acks {
        Some(path) => Some(tally::load_acks(path, &config.topic)?),
        None => None,
    };
    let mut tally = tally::Tally::new(acks.as_ref().map(|a| &a.entries[..]).unwrap_or_default());
    let partitions = reader::read_topic(config, &mut tally)?;
    Ok(tally.into_report(config, partitions, acks))
}
