//! The one shared Kafka producer, and the topic check in front of it.
//!
//! One idempotent producer (`enable.idempotence=true`, `acks=all`) per process, shared by every
//! request: librdkafka batches concurrent events into one produce request per partition, and its
//! own retries — made safe by idempotence — handle everything transient inside
//! `delivery.timeout.ms`. [`Publisher::publish`] resolves only from the delivery report.
//!
//! A producer that can no longer deliver is replaced: at once after a fatal error, and when the
//! watchdog ([`Publisher::watch`]) finds it wedged while the cluster answers.
//!
//! This module knows nothing of HTTP or of idempotency records.

mod classify;
mod context;
mod healing;
mod watchdog;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::oneshot;

pub(crate) use self::classify::{DeliveryFailure, FailureKind, Persistence};
use self::context::DeliveryContext;
pub(crate) use self::context::{Ack, DeliveryReport};
use crate::event::{Event, TopicName};
use crate::settings::KafkaProperties;

type KafkaProducer = ThreadedProducer<DeliveryContext>;

/// A negative answer ("no such topic") is cached only briefly: a topic created a moment ago
/// should be usable at once.
const MISSING_TOPIC_TTL: Duration = Duration::from_secs(1);
/// Upper bound on one metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on the metadata request that checks whether the cluster answers.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often librdkafka reports its statistics and the watchdog looks at the producer: decoding
/// a few fields of one JSON document a second costs next to nothing.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How the publisher is configured. (`Debug` is written out below: it hides secret properties.)
#[derive(Clone)]
pub struct PublisherConfig {
    pub brokers: String,
    pub delivery_timeout: Duration,
    pub auto_create_topics: bool,
    pub metadata_refresh: Duration,
    /// Extra librdkafka properties (security, tuning), validated by the settings.
    pub properties: Vec<(String, String)>,
    /// The largest record the gateway may hand over (value, key and headers).
    pub max_message_bytes: usize,
}

impl PublisherConfig {
    /// The publisher configuration the settings describe.
    pub fn new(brokers: String, settings: &crate::settings::Settings) -> Self {
        PublisherConfig {
            brokers,
            delivery_timeout: settings.delivery_timeout(),
            auto_create_topics: settings.auto_create_topics,
            metadata_refresh: settings.metadata_refresh(),
            properties: settings
                .kafka_properties
                .iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            // The body plus room for the key, headers and record framing.
            max_message_bytes: settings.max_body_bytes + settings.max_header_bytes + 1024,
        }
    }
}

impl std::fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherConfig")
            .field("brokers", &self.brokers)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("auto_create_topics", &self.auto_create_topics)
            .field("metadata_refresh", &self.metadata_refresh)
            .field(
                "properties",
                &KafkaProperties::from(self.properties.clone()),
            )
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

/// Whether a topic can be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicStatus {
    Exists,
    Missing,
}

/// The shared producer.
pub(crate) struct Publisher {
    producer: ArcSwap<KafkaProducer>,
    config: PublisherConfig,
    topics: RwLock<HashMap<TopicName, (TopicStatus, Instant)>>,
    /// One rebuild at a time.
    rebuilding: tokio::sync::Mutex<()>,
}

/// An event librdkafka took, until its delivery report comes.
struct Pending {
    rx: oneshot::Receiver<DeliveryReport>,
    created_ms: i64,
}

impl Pending {
    async fn report(self) -> DeliveryReport {
        match self.rx.await {
            Ok(Ok(ack)) if ack.timestamp_ms < 0 => Ok(Ack {
                timestamp_ms: self.created_ms,
                ..ack
            }),
            Ok(report) => report,
            // The producer was destroyed with the message still inside: librdkafka purged it
            // without a report. It may have been sent.
            Err(_) => Err(DeliveryFailure::from_report(
                &KafkaError::MessageProduction(RDKafkaErrorCode::PurgeInflight),
                Persistence::PossiblyPersisted,
            )),
        }
    }
}

impl Publisher {
    /// Builds the producer. Fails on a configuration librdkafka refuses.
    pub(crate) fn new(config: PublisherConfig) -> Result<Self, KafkaError> {
        let producer = build_producer(&config)?;
        Ok(Publisher {
            producer: ArcSwap::from_pointee(producer),
            config,
            topics: RwLock::new(HashMap::new()),
            rebuilding: tokio::sync::Mutex::new(()),
        })
    }

    /// Hands the event to librdkafka and waits for its delivery report.
    pub(crate) async fn publish(&self, event: &Event) -> DeliveryReport {
        self.heal_if_fatal().await;
        let report = match self.enqueue(event) {
            Ok(pending) => pending.report().await,
            Err(failure) => Err(failure),
        };
        if report.is_err() {
            self.heal_if_fatal().await;
        }
        report
    }

    /// Hands the events to librdkafka in their order and waits for every delivery report. Once
    /// one is refused (a full local queue), the rest are refused with it, unsent: a later event
    /// must never overtake an earlier one with the same key.
    pub(crate) async fn publish_in_order(
        &self,
        events: &[&Event],
    ) -> Vec<futures::future::BoxFuture<'static, DeliveryReport>> {
        self.heal_if_fatal().await;
        let mut refused: Option<DeliveryFailure> = None;
        let mut reports = Vec::with_capacity(events.len());
        for event in events {
            let report: futures::future::BoxFuture<'static, DeliveryReport> = match &refused {
                Some(failure) => Box::pin(std::future::ready(Err(failure.clone()))),
                None => match self.enqueue(event) {
                    Ok(pending) => Box::pin(pending.report()),
                    Err(failure) => {
                        refused = Some(failure.clone());
                        Box::pin(std::future::ready(Err(failure)))
                    }
                },
            };
            reports.push(report);
        }
        reports
    }

    /// Replaces the producer if it hit a fatal error (a batch also calls this once its reports
    /// are in). The healing is boxed: it is rare and large, and inline it would make every
    /// delivery task's future that much larger to copy.
    pub(crate) async fn heal_if_fatal(&self) {
        if self.is_fatal() {
            Box::pin(self.heal()).await;
        }
    }

    /// Hands the event to librdkafka at once (never blocking), or says why it was not taken.
    fn enqueue(&self, event: &Event) -> Result<Pending, DeliveryFailure> {
        let producer = self.producer.load_full();
        let (tx, rx) = oneshot::channel();
        let headers = event
            .record_headers()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let created_ms = now_ms();
        let mut record = BaseRecord::with_opaque_to(event.topic.as_str(), Box::new(tx))
            .payload(event.value.as_ref())
            .headers(headers)
            .timestamp(created_ms);
        if let Some(key) = &event.key {
            record = record.key(key.as_ref());
        }
        // `send` never blocks: on a full local queue it hands the record back at once, which is
        // the back-pressure signal (nothing was enqueued).
        producer
            .send(record)
            .map_err(|(error, _record)| DeliveryFailure::not_enqueued(&error))?;
        Ok(Pending { rx, created_ms })
    }

    /// Whether `topic` exists, from cached metadata refreshed every `metadata_refresh`.
    ///
    /// librdkafka only reports an unknown topic when a message times out, so without this check
    /// a typo would hold a request for the whole delivery timeout.
    pub(crate) async fn topic_status(&self, topic: &TopicName) -> Result<TopicStatus, KafkaError> {
        if self.config.auto_create_topics {
            return Ok(TopicStatus::Exists);
        }
        let cached = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .copied();
        if let Some((status, fetched)) = cached {
            let ttl = match status {
                TopicStatus::Exists => self.config.metadata_refresh,
                TopicStatus::Missing => MISSING_TOPIC_TTL,
            };
            if fetched.elapsed() < ttl {
                return Ok(status);
            }
        }
        let status = self.fetch_topic_status(topic).await?;
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.clone(), (status, Instant::now()));
        Ok(status)
    }

    async fn fetch_topic_status(&self, topic: &TopicName) -> Result<TopicStatus, KafkaError> {
        let producer = self.producer.load_full();
        let name = topic.as_str().to_owned();
        let timeout = METADATA_TIMEOUT.min(self.config.delivery_timeout);
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&name), timeout)
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        let Some(found) = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic.as_str())
        else {
            return Ok(TopicStatus::Missing);
        };
        match found.error() {
            None if !found.partitions().is_empty() => Ok(TopicStatus::Exists),
            None | Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                Ok(TopicStatus::Missing)
            }
            Some(error) => Err(KafkaError::MetadataFetch(error.into())),
        }
    }

    /// Checks that at least one broker answers a metadata request.
    pub(crate) async fn health(&self) -> Result<usize, KafkaError> {
        cluster_answers(self.producer.load_full()).await
    }

    /// Why the producer cannot reach Kafka, from librdkafka's latest client error of the last
    /// minute: "SSL handshake failed: certificate verify failed", "SASL authentication error".
    pub(crate) fn recent_client_error(&self) -> Option<String> {
        self.producer
            .load()
            .context()
            .recent_error(Duration::from_secs(60))
    }

    /// Whether the current producer hit a fatal error and can no longer produce.
    ///
    /// Asks librdkafka directly: the error callback that also reports it arrives later, on the
    /// polling thread, and requests in between must not be sent to a dead producer.
    pub(crate) fn is_fatal(&self) -> bool {
        is_fatal(&self.producer.load())
    }

    /// Waits until every enqueued event has its delivery report, or `timeout` runs out.
    pub(crate) async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.load_full();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|_| KafkaError::Canceled)?
    }

    /// Events handed to librdkafka and not yet reported.
    pub(crate) fn in_flight_count(&self) -> i32 {
        self.producer.load().in_flight_count()
    }
}

/// How many brokers a metadata request through `producer` names; fails when none answers.
async fn cluster_answers(producer: Arc<KafkaProducer>) -> Result<usize, KafkaError> {
    let metadata =
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, HEALTH_TIMEOUT))
            .await
            .map_err(|_| KafkaError::Canceled)??;
    Ok(metadata.brokers().len())
}

fn is_fatal(producer: &KafkaProducer) -> bool {
    producer.context().is_fatal() || producer.client().fatal_error().is_some()
}

fn build_producer(config: &PublisherConfig) -> Result<KafkaProducer, KafkaError> {
    producer_config(config)
        .create_with_context(DeliveryContext::default())
        .map_err(|error| KafkaProperties::from(config.properties.clone()).redact_error(error))
}

/// The librdkafka properties of the gateway's producer. Public so that the benchmark's raw
/// producer is configured exactly the same way.
pub fn producer_config(config: &PublisherConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "ackgate")
        // The guarantee itself: idempotence (no duplicates from librdkafka's own retries, no
        // reordering) and acknowledgement by every in-sync replica.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "delivery.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        )
        .set(
            "allow.auto.create.topics",
            config.auto_create_topics.to_string(),
        )
        // What the watchdog reads to tell a wedged producer from a waiting one.
        .set(
            "statistics.interval.ms",
            WATCH_INTERVAL.as_millis().to_string(),
        );
    // librdkafka refuses messages above its own `message.max.bytes` (1 000 000 by default),
    // which is below the gateway's default body limit of 1 MiB: raise it to what the gateway
    // accepts, so the broker's limit is the one that applies. An explicit property wins.
    client.set(
        "message.max.bytes",
        config
            .max_message_bytes
            .clamp(1_000_000, 1_000_000_000)
            .to_string(),
    );
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Forces producer faults through librdkafka's own test hooks, for tests of the healing path.
/// Built only with the `test-hooks` feature, which only the test suite turns on.
#[cfg(feature = "test-hooks")]
pub struct FaultInjector(Arc<Publisher>);

#[cfg(feature = "test-hooks")]
impl FaultInjector {
    pub(crate) fn new(publisher: Arc<Publisher>) -> Self {
        FaultInjector(publisher)
    }

    /// Raises a fatal error (an idempotence sequence fault) on the current producer.
    #[allow(unsafe_code)]
    pub fn inject_fatal_error(&self) {
        use rdkafka::bindings::{rd_kafka_resp_err_t, rd_kafka_test_fatal_error};
        let producer = self.0.producer.load_full();
        let reason = std::ffi::CString::new("injected by a test").expect("no NUL");
        // SAFETY: the client pointer is valid while `producer` is alive; the call only records
        // a fatal error on that client and raises its error event.
        unsafe {
            rd_kafka_test_fatal_error(
                producer.client().native_ptr(),
                rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use rdkafka::producer::BaseProducer;

    use super::*;
    use crate::settings::Settings;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    /// The producer configuration `ackgate serve` builds from these flags.
    fn config_from_flags(flags: &[&str]) -> Result<ClientConfig, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("ackgate").chain(flags.iter().copied()))?;
        let publisher = PublisherConfig::new("127.0.0.1:9".to_owned(), &cli.settings);
        Ok(producer_config(&publisher))
    }

    #[test]
    fn the_producer_is_idempotent_with_acks_all_and_the_delivery_timeout() {
        let config = config_from_flags(&["--delivery-timeout-ms=4321"]).unwrap();
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("delivery.timeout.ms"), Some("4321"));
        assert_eq!(config.get("allow.auto.create.topics"), Some("false"));
        // Idempotence needs at most 5 requests in flight per connection; librdkafka sets 5
        // itself unless told otherwise, and nothing here may tell it otherwise.
        for name in [
            "max.in.flight.requests.per.connection",
            "max.in.flight",
            "retries",
            "message.send.max.retries",
            "request.required.acks",
            "message.timeout.ms",
            "transactional.id",
        ] {
            assert_eq!(config.get(name), None, "{name} is left to idempotence");
        }
    }

    #[test]
    fn librdkafka_holds_the_built_producer_to_idempotence() {
        // What librdkafka itself enforces once idempotence is on: a configuration that could
        // reorder or lose retries is refused at creation, so these prove idempotence is on in
        // the producer that gets built, not only in a map of strings.
        let with = |extra: &str| {
            config_from_flags(&[&format!("--kafka-property={extra}")])
                .unwrap()
                .create::<BaseProducer>()
        };
        assert!(with("max.in.flight.requests.per.connection=5").is_ok());
        for unsafe_setting in ["max.in.flight.requests.per.connection=6", "retries=0"] {
            let refused = with(unsafe_setting);
            assert!(
                refused.is_err(),
                "{unsafe_setting} must be refused by an idempotent producer"
            );
        }
    }

    #[test]
    fn kafka_properties_cannot_override_the_guarantee() {
        for property in [
            "enable.idempotence=false",
            "acks=1",
            "acks=0",
            "request.required.acks=1",
            "delivery.timeout.ms=600000",
            "message.timeout.ms=600000",
            "transactional.id=x",
            "allow.auto.create.topics=true",
            "bootstrap.servers=elsewhere:9092",
        ] {
            let flag = format!("--kafka-property={property}");
            assert!(
                config_from_flags(&[&flag]).is_err(),
                "{property} must be refused as a flag"
            );
        }
        // (`ACKGATE_KAFKA_PROPERTIES` is the same argument, so it goes through the same parser.)
        // Other properties pass, and land in the configuration.
        let config = config_from_flags(&["--kafka-property=linger.ms=7"]).unwrap();
        assert_eq!(config.get("linger.ms"), Some("7"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
    }
}
