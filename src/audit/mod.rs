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
//! prints it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::IDEMPOTENCY_KEY_HEADER;

/// How long the topic must stay quiet after every partition reported its end.
pub const DEFAULT_IDLE_MS: u64 = 2_000;
/// How long Kafka may take to answer a metadata, watermark or offset request, and how long
/// reading may go without any progress.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Positions of records without the header that the report lists (all are counted).
pub const MAX_LISTED_WITHOUT_HEADER: usize = 1_000;
/// Problem items the human-readable summary prints (`--json` lists them all).
const SUMMARY_ITEMS: usize = 20;

/// Consumer properties the audit sets itself.
const RESERVED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
];

/// Flags of `ackgate audit`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Exit status: 0 clean; 1 acknowledged keys missing, offset mismatches or \
                        duplicate keys found; 2 usage or connection error."
)]
pub struct AuditArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "ACKGATE_KAFKA_BROKERS", default_value = "localhost:9092")]
    pub kafka_brokers: String,

    /// The topic to audit (every partition is read).
    #[arg(long, value_name = "NAME")]
    pub topic: String,

    /// Read every partition from its first record (the default).
    #[arg(long, conflicts_with = "since")]
    pub from_beginning: bool,

    /// Start each partition at its first record with a timestamp at or after this time
    /// (RFC 3339, e.g. 2026-11-23T14:00:00Z), found with Kafka's offsets-for-times lookup.
    /// Acknowledged answers for earlier offsets are counted as not checked.
    #[arg(long, value_name = "RFC3339", value_parser = parse_since)]
    pub since: Option<OffsetDateTime>,

    /// A file of the gateway's 201 answers, one JSON object per line, as the gateway returned
    /// them. Each acknowledged key must be in the topic at the partition and offset its answer
    /// names. Lines that are not persisted answers (202s, problem documents, other text) are
    /// ignored and counted; answers for other topics too.
    #[arg(long, value_name = "FILE")]
    pub acks: Option<PathBuf>,

    /// Print one JSON object with every figure and list instead of the summary.
    #[arg(long)]
    pub json: bool,

    /// Report keys that occur more than once without failing. Expected after the documented
    /// edge: a gateway died after Kafka wrote a record but before it recorded that, and a retry
    /// published the event again after the lease ran out.
    #[arg(long)]
    pub allow_duplicates: bool,

    /// Extra librdkafka consumer property as KEY=VALUE (repeatable), e.g. for SASL/SSL:
    /// `--kafka-property security.protocol=SASL_SSL`. In the environment, separate several
    /// with commas.
    #[arg(long = "kafka-property", env = "ACKGATE_KAFKA_PROPERTIES", value_name = "KEY=VALUE",
          hide_env_values = true,
          value_delimiter = ',', value_parser = parse_kafka_property)]
    pub kafka_properties: Vec<(String, String)>,

    /// How long nothing new may arrive, once every partition reported its end, before the
    /// audit stops reading. Raise it for brokers that are slow to serve the last records.
    #[arg(long, default_value_t = DEFAULT_IDLE_MS,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub idle_ms: u64,

    /// How long Kafka may take to answer a metadata, watermark or offset request, and how long
    /// reading may make no progress at all, before the audit gives up (exit status 2).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub timeout_ms: u64,
}

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
    pub kafka_properties: Vec<(String, String)>,
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
            kafka_properties: Vec::new(),
            idle: Duration::from_millis(DEFAULT_IDLE_MS),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            allow_duplicates: false,
            progress: false,
        }
    }
}

impl From<&AuditArgs> for AuditConfig {
    fn from(args: &AuditArgs) -> Self {
        AuditConfig {
            brokers: args.kafka_brokers.clone(),
            topic: args.topic.clone(),
            start: match args.since {
                Some(since) => StartAt::Since(since),
                None => StartAt::Beginning,
            },
            acks: args.acks.clone(),
            kafka_properties: args.kafka_properties.clone(),
            idle: Duration::from_millis(args.idle_ms),
            timeout: Duration::from_millis(args.timeout_ms),
            allow_duplicates: args.allow_duplicates,
            progress: std::io::stderr().is_terminal(),
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

/// Why reading a partition stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The broker reported the partition's end and the topic stayed quiet for `--idle-ms`.
    EndOfPartition,
    /// A record written after the audit started was reached past the starting watermark.
    Watermark,
}

/// What was read from one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    /// The offset reading started at.
    pub start_offset: i64,
    /// One past the last offset audited.
    pub end_offset: i64,
    /// The high watermark Kafka reported when the audit started.
    pub high_watermark_at_start: i64,
    /// Records audited.
    pub records: u64,
    pub stopped_at: StopReason,
}

/// An idempotency key found on more than one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateKey {
    pub idempotency_key: String,
    /// Every record with the key, in (partition, offset) order.
    pub records: Vec<Position>,
}

/// An acknowledged key with no record in the audited range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingKey {
    pub idempotency_key: String,
    /// Where the answer said the record is.
    pub acknowledged: Position,
}

/// What an acknowledged position holds when it is not the acknowledged key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FoundThere {
    /// No record at that position was read (there is none, or the partition does not exist).
    NoRecord,
    /// A record without the `idempotency-key` header.
    WithoutHeader,
    /// A record with another key.
    OtherKey { idempotency_key: String },
}

/// An acknowledged key that is in the topic, but not where its answer said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsetMismatch {
    pub idempotency_key: String,
    pub acknowledged: Position,
    pub found_there: FoundThere,
    /// Where the key's records are.
    pub key_found_at: Vec<Position>,
}

/// The check of the saved answers (`--acks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcksReport {
    pub file: String,
    /// Non-empty lines in the file.
    pub lines: u64,
    /// Persisted answers for the audited topic (repeated identical answers count once).
    pub persisted_answers: u64,
    /// Lines that are not persisted answers.
    pub ignored_lines: u64,
    /// Persisted answers for other topics (ignored).
    pub other_topics: u64,
    /// Answers whose position is outside what was audited (before `--since`, deleted by
    /// retention, or written after the audit started): not checked.
    pub not_checked: u64,
    /// Answers checked against the topic.
    pub checked: u64,
    pub missing: Vec<MissingKey>,
    pub offset_mismatches: Vec<OffsetMismatch>,
}

/// Counts of what makes the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Problems {
    pub missing: u64,
    pub offset_mismatches: u64,
    pub duplicate_keys: u64,
}

/// Everything the audit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub topic: String,
    /// `beginning`, or the `--since` time (RFC 3339).
    pub start: String,
    /// No acknowledged key missing, no offset mismatch, and no duplicate key (unless
    /// `allow_duplicates`).
    pub clean: bool,
    pub allow_duplicates: bool,
    pub problems: Problems,
    pub records_read: u64,
    /// Distinct `idempotency-key` values.
    pub distinct_keys: u64,
    /// Records beyond the first of each key.
    pub duplicate_records: u64,
    pub duplicate_keys: Vec<DuplicateKey>,
    pub records_without_header: u64,
    /// The first [`MAX_LISTED_WITHOUT_HEADER`] of them.
    pub records_without_header_positions: Vec<Position>,
    pub partitions: Vec<PartitionReport>,
    pub acks: Option<AcksReport>,
}

/// The outcome the exit status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditVerdict {
    Clean,
    ProblemsFound,
}

impl AuditReport {
    pub fn verdict(&self) -> AuditVerdict {
        if self.clean {
            AuditVerdict::Clean
        } else {
            AuditVerdict::ProblemsFound
        }
    }
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
        Some(path) => Some(load_acks(path, &config.topic)?),
        None => None,
    };
    let mut tally = Tally::new(acks.as_ref().map(|a| &a.entries[..]).unwrap_or_default());
    let partitions = read_topic(config, &mut tally)?;
    Ok(tally.into_report(config, partitions, acks))
}

// ---------------------------------------------------------------------------------------------
// The saved answers

struct Ack {
    key: String,
    position: Position,
}

struct Acks {
    file: String,
    lines: u64,
    ignored_lines: u64,
    other_topics: u64,
    entries: Vec<Ack>,
}

fn load_acks(path: &std::path::Path, topic: &str) -> anyhow::Result<Acks> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the acks file {}", path.display()))?;
    let mut acks = Acks {
        file: path.display().to_string(),
        lines: 0,
        ignored_lines: 0,
        other_topics: 0,
        entries: Vec::new(),
    };
    let mut seen = HashSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        acks.lines += 1;
        let Some(answer) = parse_ack_line(line) else {
            acks.ignored_lines += 1;
            continue;
        };
        if answer.topic != topic {
            acks.other_topics += 1;
            continue;
        }
        let position = Position {
            partition: answer.partition,
            offset: answer.offset,
        };
        // A replayed answer is the first answer again: check it once.
        if seen.insert((answer.idempotency_key.clone(), position)) {
            acks.entries.push(Ack {
                key: answer.idempotency_key,
                position,
            });
        }
    }
    Ok(acks)
}

/// The fields of a persisted answer (`contract::Persisted`) the audit needs; others are
/// ignored, so answers saved by older or newer gateways parse alike.
#[derive(Debug, PartialEq, Eq, Deserialize)]
struct SavedAnswer {
    status: String,
    topic: String,
    partition: i32,
    offset: i64,
    idempotency_key: String,
}

/// A persisted answer: the 201 body, or the status resource's `answer` when it is one.
fn parse_ack_line(line: &str) -> Option<SavedAnswer> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let body = match value.get("answer") {
        Some(answer) if value.get("state").is_some() => answer.clone(),
        _ => value,
    };
    let answer: SavedAnswer = serde_json::from_value(body).ok()?;
    (answer.status == "persisted").then_some(answer)
}

// ---------------------------------------------------------------------------------------------
// Grouping records

/// What a record at an acknowledged position carries.
enum Observed {
    Key(String),
    WithoutHeader,
}

struct Tally {
    records: u64,
    /// Each key's first record.
    first: HashMap<Box<str>, Position>,
    /// Every record of the keys seen more than once.
    repeated: HashMap<Box<str>, Vec<Position>>,
    without_header: u64,
    without_header_positions: Vec<Position>,
    /// The acknowledged positions, and what was read there.
    watched: HashMap<Position, Option<Observed>>,
}

impl Tally {
    fn new(acks: &[Ack]) -> Self {
        Tally {
            records: 0,
            first: HashMap::new(),
            repeated: HashMap::new(),
            without_header: 0,
            without_header_positions: Vec::new(),
            watched: acks.iter().map(|a| (a.position, None)).collect(),
        }
    }

    fn observe(&mut self, position: Position, key: Option<&str>) {
        self.records += 1;
        if let Some(slot) = self.watched.get_mut(&position) {
            *slot = Some(match key {
                Some(key) => Observed::Key(key.to_owned()),
                None => Observed::WithoutHeader,
            });
        }
        let Some(key) = key else {
            self.without_header += 1;
            if self.without_header_positions.len() < MAX_LISTED_WITHOUT_HEADER {
                self.without_header_positions.push(position);
            }
            return;
        };
        match self.first.get(key) {
            None => {
                self.first.insert(key.into(), position);
            }
            Some(first) => self
                .repeated
                .entry(key.into())
                .or_insert_with(|| vec![*first])
                .push(position),
        }
    }

    /// Where a key's records are.
    fn positions(&self, key: &str) -> Vec<Position> {
        match (self.repeated.get(key), self.first.get(key)) {
            (Some(all), _) => all.clone(),
            (None, Some(first)) => vec![*first],
            (None, None) => Vec::new(),
        }
    }

    fn into_report(
        self,
        config: &AuditConfig,
        partitions: Vec<PartitionReport>,
        acks: Option<Acks>,
    ) -> AuditReport {
        let acks = acks.map(|acks| self.check_acks(acks, &partitions));
        let mut duplicate_keys: Vec<DuplicateKey> = self
            .repeated
            .iter()
            .map(|(key, positions)| {
                let mut records = positions.clone();
                records.sort();
                DuplicateKey {
                    idempotency_key: key.to_string(),
                    records,
                }
            })
            .collect();
        duplicate_keys.sort_by(|a, b| a.records.cmp(&b.records));
        let duplicate_records = duplicate_keys
            .iter()
            .map(|d| d.records.len() as u64 - 1)
            .sum();
        let problems = Problems {
            missing: acks.as_ref().map_or(0, |a| a.missing.len() as u64),
            offset_mismatches: acks
                .as_ref()
                .map_or(0, |a| a.offset_mismatches.len() as u64),
            duplicate_keys: duplicate_keys.len() as u64,
        };
        let clean = problems.missing == 0
            && problems.offset_mismatches == 0
            && (problems.duplicate_keys == 0 || config.allow_duplicates);
        AuditReport {
            topic: config.topic.clone(),
            start: match &config.start {
                StartAt::Beginning => "beginning".to_owned(),
                StartAt::Since(since) => {
                    since.format(&Rfc3339).unwrap_or_else(|_| since.to_string())
                }
            },
            clean,
            allow_duplicates: config.allow_duplicates,
            problems,
            records_read: self.records,
            distinct_keys: self.first.len() as u64,
            duplicate_records,
            duplicate_keys,
            records_without_header: self.without_header,
            records_without_header_positions: self.without_header_positions,
            partitions,
            acks,
        }
    }

    fn check_acks(&self, acks: Acks, partitions: &[PartitionReport]) -> AcksReport {
        let ranges: HashMap<i32, &PartitionReport> =
            partitions.iter().map(|p| (p.partition, p)).collect();
        let mut report = AcksReport {
            file: acks.file,
            lines: acks.lines,
            persisted_answers: acks.entries.len() as u64,
            ignored_lines: acks.ignored_lines,
            other_topics: acks.other_topics,
            not_checked: 0,
            checked: 0,
            missing: Vec::new(),
            offset_mismatches: Vec::new(),
        };
        for ack in acks.entries {
            let in_range = match ranges.get(&ack.position.partition) {
                // An answer naming a partition the topic does not have is checked (and fails).
                None => true,
                Some(p) => {
                    ack.position.offset >= p.start_offset
                        && (p.stopped_at == StopReason::EndOfPartition
                            || ack.position.offset < p.end_offset)
                }
            };
            if !in_range {
                report.not_checked += 1;
                continue;
            }
            report.checked += 1;
            let found_there = match self.watched.get(&ack.position) {
                Some(Some(Observed::Key(key))) if *key == ack.key => continue,
                Some(Some(Observed::Key(key))) => FoundThere::OtherKey {
                    idempotency_key: key.clone(),
                },
                Some(Some(Observed::WithoutHeader)) => FoundThere::WithoutHeader,
                Some(None) | None => FoundThere::NoRecord,
            };
            let key_found_at = self.positions(&ack.key);
            if key_found_at.is_empty() {
                report.missing.push(MissingKey {
                    idempotency_key: ack.key,
                    acknowledged: ack.position,
                });
            } else {
                report.offset_mismatches.push(OffsetMismatch {
                    idempotency_key: ack.key,
                    acknowledged: ack.position,
                    found_there,
                    key_found_at,
                });
            }
        }
        report.missing.sort_by_key(|m| m.acknowledged);
        report.offset_mismatches.sort_by_key(|m| m.acknowledged);
        report
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the topic

struct PartitionState {
    start: i64,
    high_at_start: i64,
    /// One past the last offset audited.
    next: i64,
    records: u64,
    at_eof: bool,
    stopped: Option<StopReason>,
}

fn create_consumer(config: &AuditConfig) -> anyhow::Result<BaseConsumer> {
    let mut client = ClientConfig::new();
    // rust-rdkafka wants a group id to assign partitions; the audit never joins the group and
    // commits nothing. `--kafka-property group.id=…` replaces it (for ACLs on group names).
    client.set(
        "group.id",
        format!(
            "ackgate-audit-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        ),
    );
    for (key, value) in &config.kafka_properties {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false");
    client.create().map_err(|error| match error {
        // The message names the property; the value is left out, it may be a secret.
        KafkaError::ClientConfig(_, description, _, _) => {
            anyhow!("invalid Kafka consumer configuration: {description}")
        }
        other => anyhow!("could not create the Kafka consumer: {other}"),
    })
}

fn read_topic(config: &AuditConfig, tally: &mut Tally) -> anyhow::Result<Vec<PartitionReport>> {
    let topic = config.topic.as_str();
    let consumer = create_consumer(config)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), config.timeout)
        .map_err(|error| {
            anyhow!(
                "could not read the metadata of topic {topic} from Kafka at {}: {error}",
                config.brokers
            )
        })?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("Kafka did not describe topic {topic}"))?;
    if let Some(error) = found.error() {
        return Err(match RDKafkaErrorCode::from(error) {
            RDKafkaErrorCode::UnknownTopicOrPartition => anyhow!("topic {topic} does not exist"),
            code => anyhow!("Kafka refused to describe topic {topic}: {code}"),
        });
    }
    let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    if ids.is_empty() {
        bail!("topic {topic} has no partitions");
    }

    let started_ms = now_ms();
    let mut parts: BTreeMap<i32, PartitionState> = BTreeMap::new();
    for &id in &ids {
        let (low, high) = consumer
            .fetch_watermarks(topic, id, config.timeout)
            .map_err(|error| anyhow!("could not read the offsets of {topic}/{id}: {error}"))?;
        parts.insert(
            id,
            PartitionState {
                start: low,
                high_at_start: high,
                next: low,
                records: 0,
                at_eof: false,
                stopped: None,
            },
        );
    }
    if let StartAt::Since(since) = &config.start {
        let millis = i64::try_from(since.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| anyhow!("--since is out of range"))?;
        let mut query = TopicPartitionList::new();
        for &id in &ids {
            query.add_partition_offset(topic, id, Offset::Offset(millis))?;
        }
        let offsets = consumer
            .offsets_for_times(query, config.timeout)
            .map_err(|error| anyhow!("could not look up offsets for --since: {error}"))?;
        for element in offsets.elements_for_topic(topic) {
            element.error().map_err(|error| {
                anyhow!(
                    "could not look up the --since offset of {topic}/{}: {error}",
                    element.partition()
                )
            })?;
            if let Some(state) = parts.get_mut(&element.partition()) {
                state.start = match element.offset() {
                    Offset::Offset(offset) => offset.max(state.start),
                    // No record that late: nothing before the watermark to read.
                    _ => state.high_at_start.max(state.start),
                };
                state.next = state.start;
            }
        }
    }

    let mut assignment = TopicPartitionList::new();
    for (&id, state) in &parts {
        assignment.add_partition_offset(topic, id, Offset::Offset(state.start))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|error| anyhow!("could not assign the partitions of {topic}: {error}"))?;

    let mut progress = Progress::new(config.progress, topic, parts.len());
    let mut last_record = Instant::now();
    let mut last_event = Instant::now();
    let mut last_error: Option<KafkaError> = None;
    let mut last_check = Instant::now();
    loop {
        // Whether this poll only added a record: the stop conditions need not be looked at
        // after every record of a long topic.
        let mut only_a_record = false;
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_event = Instant::now();
                let partition = message.partition();
                let offset = message.offset();
                match parts.get_mut(&partition) {
                    Some(state) if state.stopped.is_none() => {
                        last_record = last_event;
                        state.at_eof = false;
                        let written_after_start = message
                            .timestamp()
                            .to_millis()
                            .is_some_and(|t| t > started_ms);
                        if offset >= state.high_at_start && written_after_start {
                            state.stopped = Some(StopReason::Watermark);
                            // Everything below the starting watermark was audited (offsets
                            // there without a record are gaps); answers for later offsets
                            // were given after the audit started.
                            state.next = state.next.max(state.high_at_start);
                            let mut paused = TopicPartitionList::new();
                            paused.add_partition(topic, partition);
                            // Only saves fetching: later records of it are skipped anyway.
                            let _ = consumer.pause(&paused);
                        } else if offset >= state.next {
                            state.next = offset + 1;
                            state.records += 1;
                            let key = message.headers().and_then(|headers| {
                                headers
                                    .iter()
                                    .find(|h| h.key == IDEMPOTENCY_KEY_HEADER)
                                    .and_then(|h| h.value)
                                    .map(String::from_utf8_lossy)
                            });
                            tally.observe(Position { partition, offset }, key.as_deref());
                            only_a_record = true;
                        }
                    }
                    // A stopped partition's records still in the queue, or a stranger's.
                    _ => only_a_record = true,
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                last_event = Instant::now();
                if let Some(state) = parts.get_mut(&partition) {
                    state.at_eof = true;
                }
            }
            Some(Err(error)) => {
                check_consumer_error(topic, &error)?;
                last_error = Some(error);
            }
            None => {}
        }
        if only_a_record && last_check.elapsed() < Duration::from_millis(100) {
            continue;
        }
        last_check = Instant::now();

        let finished = parts
            .values()
            .filter(|s| s.stopped.is_some() || s.at_eof)
            .count();
        let waiting_for_quiet = parts.values().any(|s| s.stopped.is_none());
        if finished == parts.len() && (!waiting_for_quiet || last_record.elapsed() >= config.idle) {
            break;
        }
        if finished < parts.len() && last_event.elapsed() >= config.timeout {
            progress.clear();
            let stuck: Vec<String> = parts
                .iter()
                .filter(|(_, s)| s.stopped.is_none() && !s.at_eof)
                .map(|(id, _)| id.to_string())
                .collect();
            let cause = last_error
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            bail!(
                "no progress reading {topic} for {} ms: partition(s) {} did not reach their \
                 end{cause}",
                config.timeout.as_millis(),
                stuck.join(", ")
            );
        }
        progress.show(tally.records, finished);
    }
    progress.clear();

    Ok(parts
        .into_iter()
        .map(|(partition, state)| PartitionReport {
            partition,
            start_offset: state.start,
            end_offset: state.next,
            high_watermark_at_start: state.high_at_start,
            records: state.records,
            stopped_at: state.stopped.unwrap_or(StopReason::EndOfPartition),
        })
        .collect())
}

/// Errors that make the audit's answer meaningless stop it; the rest (a broker connection
/// dropped, a leader moving) librdkafka recovers from, and the no-progress timeout bounds them.
fn check_consumer_error(topic: &str, error: &KafkaError) -> anyhow::Result<()> {
    let code = match error {
        KafkaError::MessageConsumptionFatal(code) => {
            bail!("reading {topic} failed: {error} ({code})")
        }
        KafkaError::MessageConsumption(code) => *code,
        _ => return Ok(()),
    };
    match code {
        RDKafkaErrorCode::UnknownTopicOrPartition
        | RDKafkaErrorCode::UnknownTopic
        | RDKafkaErrorCode::UnknownPartition => bail!("topic {topic} does not exist ({code})"),
        // Not the group's: the audit reads without its group, whose coordinator lookup may be
        // refused on clusters with ACLs.
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            bail!("not authorized to read {topic}: {code}")
        }
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            bail!("Kafka authentication failed: {code}")
        }
        _ => Ok(()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One line on stderr, redrawn in place, when stderr is a terminal.
struct Progress<'a> {
    enabled: bool,
    topic: &'a str,
    partitions: usize,
    drawn: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(enabled: bool, topic: &'a str, partitions: usize) -> Self {
        Progress {
            enabled,
            topic,
            partitions,
            drawn: None,
        }
    }

    fn show(&mut self, records: u64, finished: usize) {
        if !self.enabled
            || self
                .drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2Kauditing {}: {records} records read, {finished}/{} partitions at their end",
            self.topic, self.partitions
        );
        let _ = stderr.flush();
    }

    fn clear(&mut self) {
        if self.enabled && self.drawn.take().is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// The human-readable summary `ackgate audit` prints without `--json`.
pub fn render_summary(report: &AuditReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let start = if report.start == "beginning" {
        "from the beginning".to_owned()
    } else {
        format!("since {}", report.start)
    };
    let _ = writeln!(
        out,
        "Audit of topic {} ({} partitions, {start})",
        report.topic,
        report.partitions.len()
    );

    let _ = writeln!(out, "\nPartitions");
    for p in report.partitions.iter().take(SUMMARY_ITEMS) {
        let stop = match p.stopped_at {
            StopReason::EndOfPartition => "end of partition",
            StopReason::Watermark => "watermark at start",
        };
        let _ = writeln!(
            out,
            "  {:>4}  offsets {}..{}  {} records  (stopped at: {stop})",
            p.partition, p.start_offset, p.end_offset, p.records
        );
    }
    more(
        &mut out,
        report.partitions.len(),
        SUMMARY_ITEMS,
        "partitions",
    );

    let _ = writeln!(out, "\nRecords");
    let _ = writeln!(
        out,
        "  records read                 {}",
        report.records_read
    );
    let _ = writeln!(
        out,
        "  distinct idempotency keys    {}",
        report.distinct_keys
    );
    let _ = writeln!(
        out,
        "  keys seen more than once     {} ({} extra records){}",
        report.duplicate_keys.len(),
        report.duplicate_records,
        if report.allow_duplicates && !report.duplicate_keys.is_empty() {
            ", allowed by --allow-duplicates"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  records without the header   {}",
        report.records_without_header
    );

    if let Some(acks) = &report.acks {
        let _ = writeln!(out, "\nAcknowledged answers ({})", acks.file);
        let _ = writeln!(out, "  lines                        {}", acks.lines);
        let _ = writeln!(
            out,
            "  persisted answers            {}",
            acks.persisted_answers
        );
        let _ = writeln!(out, "  ignored lines                {}", acks.ignored_lines);
        let _ = writeln!(out, "  answers for other topics     {}", acks.other_topics);
        let _ = writeln!(out, "  checked                      {}", acks.checked);
        let _ = writeln!(out, "  not checked (outside range)  {}", acks.not_checked);
        let _ = writeln!(out, "  missing from the topic       {}", acks.missing.len());
        let _ = writeln!(
            out,
            "  offset mismatches            {}",
            acks.offset_mismatches.len()
        );
    }

    let mut items: Vec<String> = Vec::new();
    if let Some(acks) = &report.acks {
        items.extend(acks.missing.iter().map(|m| {
            format!(
                "missing    {}: acknowledged at {}, not in the topic",
                m.idempotency_key, m.acknowledged
            )
        }));
        items.extend(acks.offset_mismatches.iter().map(|m| {
            let there = match &m.found_there {
                FoundThere::NoRecord => "no record there".to_owned(),
                FoundThere::WithoutHeader => "a record without the header there".to_owned(),
                FoundThere::OtherKey { idempotency_key } => {
                    format!("key {idempotency_key} there")
                }
            };
            format!(
                "mismatch   {}: acknowledged at {}, {there}; the key is at {}",
                m.idempotency_key,
                m.acknowledged,
                list(&m.key_found_at)
            )
        }));
    }
    items.extend(report.duplicate_keys.iter().map(|d| {
        format!(
            "duplicate  {}: {} records at {}",
            d.idempotency_key,
            d.records.len(),
            list(&d.records)
        )
    }));
    if !items.is_empty() {
        let _ = writeln!(out, "\nProblems");
        for item in items.iter().take(SUMMARY_ITEMS) {
            let _ = writeln!(out, "  {item}");
        }
        more(
            &mut out,
            items.len(),
            SUMMARY_ITEMS,
            "problems (see --json)",
        );
    }
    if report.records_without_header > 0 {
        let _ = writeln!(out, "\nRecords without the idempotency-key header");
        for position in report
            .records_without_header_positions
            .iter()
            .take(SUMMARY_ITEMS)
        {
            let _ = writeln!(out, "  {position}");
        }
        more(
            &mut out,
            report.records_without_header as usize,
            SUMMARY_ITEMS,
            "records",
        );
    }

    let _ = writeln!(out);
    if report.clean {
        let _ = writeln!(out, "Verdict: clean");
    } else {
        let mut reasons = Vec::new();
        let p = report.problems;
        if p.missing > 0 {
            reasons.push(format!("{} acknowledged keys missing", p.missing));
        }
        if p.offset_mismatches > 0 {
            reasons.push(format!("{} offset mismatches", p.offset_mismatches));
        }
        if p.duplicate_keys > 0 && !report.allow_duplicates {
            reasons.push(format!("{} duplicate keys", p.duplicate_keys));
        }
        let _ = writeln!(out, "Verdict: PROBLEMS FOUND ({})", reasons.join(", "));
    }
    out
}

fn list(positions: &[Position]) -> String {
    let shown: Vec<String> = positions
        .iter()
        .take(5)
        .map(|p| format!("{}/{}", p.partition, p.offset))
        .collect();
    let rest = positions.len().saturating_sub(shown.len());
    if rest > 0 {
        format!("{} and {rest} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn more(out: &mut String, total: usize, shown: usize, what: &str) {
    use std::fmt::Write as _;
    if total > shown {
        let _ = writeln!(out, "  … and {} more {what}", total - shown);
    }
}

// ---------------------------------------------------------------------------------------------
// Flag parsing

fn parse_since(value: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|_| format!("'{value}' is not an RFC 3339 timestamp (e.g. 2026-11-23T14:00:00Z)"))
}

fn parse_kafka_property(value: &str) -> Result<(String, String), String> {
    let (key, val) = crate::settings::parse_key_value(value)?;
    if RESERVED_KAFKA_PROPERTIES.contains(&key.as_str()) {
        return Err(format!(
            "'{key}' is set by the audit itself (use --kafka-brokers for the servers)"
        ));
    }
    Ok((key, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    fn ack(key: &str, partition: i32, offset: i64) -> Ack {
        Ack {
            key: key.to_owned(),
            position: at(partition, offset),
        }
    }

    fn read_to_end(partition: i32, start: i64, end: i64) -> PartitionReport {
        PartitionReport {
            partition,
            start_offset: start,
            end_offset: end,
            high_watermark_at_start: end,
            records: (end - start) as u64,
            stopped_at: StopReason::EndOfPartition,
        }
    }

    #[test]
    fn answers_are_read_from_201_bodies_and_status_resources_only() {
        let body = r#"{"status":"persisted","topic":"t","partition":2,"offset":7,"timestamp":"2026-11-23T14:00:00.123Z","idempotency_key":"k-1"}"#;
        let parsed = parse_ack_line(body).unwrap();
        assert_eq!((parsed.partition, parsed.offset), (2, 7));
        let status = format!(
            r#"{{"state":"persisted","topic":"t","idempotency_key":"k-1","answer_status":201,"answer":{body}}}"#
        );
        assert_eq!(parse_ack_line(&status).unwrap(), parsed);
        assert!(
            parse_ack_line(r#"{"status":"accepted","topic":"t","idempotency_key":"k"}"#).is_none()
        );
        assert!(
            parse_ack_line(r#"{"type":"urn:ackgate:problem:overloaded","status":503}"#).is_none()
        );
        assert!(parse_ack_line("HTTP/1.1 201 Created").is_none());
    }

    #[test]
    fn acks_are_checked_against_what_was_read() {
        let acks = vec![
            ack("ok", 0, 0),
            ack("gone", 0, 5),
            ack("moved", 0, 1),
            ack("early", 1, 3),
        ];
        let mut tally = Tally::new(&acks);
        tally.observe(at(0, 0), Some("ok"));
        tally.observe(at(0, 1), Some("other"));
        tally.observe(at(0, 2), Some("moved"));
        tally.observe(at(0, 3), None);
        tally.observe(at(0, 4), Some("ok"));
        let mut config = AuditConfig::new("b", "t");
        let acks = Acks {
            file: "f".into(),
            lines: 6,
            ignored_lines: 1,
            other_topics: 1,
            entries: acks,
        };
        let partitions = vec![read_to_end(0, 0, 5), read_to_end(1, 10, 10)];
        config.allow_duplicates = true;
        let report = tally.into_report(&config, partitions, Some(acks));
        let acks = report.acks.as_ref().unwrap();
        assert_eq!(
            (acks.checked, acks.not_checked),
            (3, 1),
            "1/3 is before the range"
        );
        assert_eq!(acks.missing.len(), 1);
        assert_eq!(acks.missing[0].idempotency_key, "gone");
        assert_eq!(acks.offset_mismatches.len(), 1);
        let mismatch = &acks.offset_mismatches[0];
        assert_eq!(mismatch.idempotency_key, "moved");
        assert_eq!(
            mismatch.found_there,
            FoundThere::OtherKey {
                idempotency_key: "other".into()
            }
        );
        assert_eq!(mismatch.key_found_at, vec![at(0, 2)]);
        assert_eq!(report.records_read, 5);
        assert_eq!(report.distinct_keys, 3);
        assert_eq!(report.duplicate_records, 1);
        assert_eq!(report.duplicate_keys[0].records, vec![at(0, 0), at(0, 4)]);
        assert_eq!(report.records_without_header_positions, vec![at(0, 3)]);
        assert!(
            !report.clean,
            "missing and mismatch fail even with duplicates allowed"
        );
    }

    #[test]
    fn duplicates_fail_unless_allowed() {
        let mut tally = Tally::new(&[]);
        tally.observe(at(0, 0), Some("k"));
        tally.observe(at(1, 0), Some("k"));
        let mut config = AuditConfig::new("b", "t");
        let report = tally.into_report(&config, vec![], None);
        assert_eq!(report.verdict(), AuditVerdict::ProblemsFound);
        config.allow_duplicates = true;
        let mut tally = Tally::new(&[]);
        tally.observe(at(0, 0), Some("k"));
        tally.observe(at(1, 0), Some("k"));
        let report = tally.into_report(&config, vec![], None);
        assert_eq!(report.verdict(), AuditVerdict::Clean);
        assert_eq!(report.problems.duplicate_keys, 1);
        assert!(render_summary(&report).contains("allowed by --allow-duplicates"));
    }

    #[test]
    fn flags_parse() {
        assert!(parse_since("2026-11-23T14:00:00Z").is_ok());
        assert!(parse_since("2026-11-23T14:00:00.5+01:00").is_ok());
        assert!(parse_since("yesterday").is_err());
        assert!(parse_kafka_property("enable.auto.commit=true").is_err());
        assert!(parse_kafka_property("group.id=team-audit").is_ok());
        assert!(parse_kafka_property("noequals").is_err());
        assert_eq!(
            parse_kafka_property("sasl.password=a=b").unwrap(),
            ("sasl.password".to_owned(), "a=b".to_owned())
        );
    }
}
