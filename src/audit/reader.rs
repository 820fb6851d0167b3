//! Reading the topic back from Kafka: every partition, from its start to where the audit stops
//! (see "Where reading stops" in the module above).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::report::{PartitionReport, StopReason};
use super::tally::Tally;
use super::{AuditConfig, Position, StartAt};
use crate::event::IDEMPOTENCY_KEY_HEADER;

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
    for (key, value) in config.kafka_properties.iter() {
        client.set(key, value);
    }
    // Set after the extra properties, so these win; `--kafka-property` refuses them
    // (`settings::RESERVED_KAFKA_PROPERTIES`).
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false");
    client
        .create()
        .map_err(|error| match config.kafka_properties.redact_error(error) {
            // The message names the property; the value is left out, and a secret one is taken
            // out of the description too.
            KafkaError::ClientConfig(_, description, _, _) => {
                anyhow!("invalid Kafka consumer configuration: {description}")
            }
            other => anyhow!("could not create the Kafka consumer: {other}"),
        })
}

pub(crate) fn read_topic(
    config: &AuditConfig,
    tally: &mut Tally,
) -> anyhow::Result<Vec<PartitionReport>> {
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
