//! The producer's callbacks: delivery reports, and errors that concern the whole client.
//!
//! rust-rdkafka's `FutureProducer` answers with the error code only. The gateway needs
//! librdkafka's own verdict on whether a failed message may have been written
//! (`rd_kafka_message_status`), which rust-rdkafka does not wrap, so this context reads it from
//! the delivered message and hands the whole report to the waiting request through a oneshot.
//!
//! It also keeps what the watchdog reads: acknowledgements and delivery timeouts counted as they
//! are reported, and the latest of librdkafka's statistics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message};
use rdkafka::producer::ProducerContext;
use rdkafka::{ClientContext, Timestamp};
use tokio::sync::oneshot;

use super::classify::{DeliveryFailure, FailureKind, Persistence};
use super::watchdog::{Snapshot, Tick};

/// Where Kafka put an acknowledged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// The record's timestamp in milliseconds since the epoch.
    pub(crate) timestamp_ms: i64,
}

pub(crate) type DeliveryReport = Result<Ack, DeliveryFailure>;

/// How long an identical client error stays quiet after it was logged. librdkafka repeats
/// errors such as "all brokers down" on every reconnect attempt.
const REPEAT_QUIET: Duration = Duration::from_secs(30);

/// Callbacks of one producer instance.
#[derive(Debug, Default, Clone)]
pub(super) struct DeliveryContext {
    /// Set when librdkafka raised a fatal error: this producer instance can never produce again.
    fatal: Arc<AtomicBool>,
    /// When each distinct client error was last logged.
    logged: Arc<Mutex<HashMap<String, Instant>>>,
    /// The latest client error and when it came, for `/readyz` to say why Kafka is unreachable
    /// (a refused certificate, failed SASL authentication, brokers down).
    latest: Arc<Mutex<Option<(String, Instant)>>>,
    observed: Arc<Observed>,
}

/// What happened since the watchdog last looked.
#[derive(Debug, Default)]
struct Observed {
    acked: AtomicU64,
    timed_out: AtomicU64,
    refused: AtomicU64,
    stats: Mutex<Option<Snapshot>>,
}

impl DeliveryContext {
    pub(super) fn is_fatal(&self) -> bool {
        self.fatal.load(Ordering::Acquire)
    }

    /// The latest client error if it came within `within`: librdkafka's reason, which names
    /// the broker and the cause but never a credential.
    ///
    /// `/readyz` shows it, so why it cannot carry a password matters: librdkafka's error
    /// callback reports what happened on a connection (the broker's name, a socket, TLS or SASL
    /// failure, the broker's own authentication answer) and never the value of a configuration
    /// property; the most it names of the configuration is a file path (`ssl.ca.location`).
    /// Configuration errors, which do quote values, happen when the producer is built and
    /// never reach this callback.
    pub(super) fn recent_error(&self, within: Duration) -> Option<String> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest
            .as_ref()
            .filter(|(_, at)| at.elapsed() < within)
            .map(|(reason, _)| reason.clone())
    }

    /// What was observed since the previous call.
    pub(super) fn take_tick(&self) -> Tick {
        Tick {
            acked: self.observed.acked.swap(0, Ordering::Relaxed),
            timed_out: self.observed.timed_out.swap(0, Ordering::Relaxed),
            refused: self.observed.refused.swap(0, Ordering::Relaxed),
            stats: self
                .observed
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        }
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // Connection failures (facility FAIL) also arrive through `error` below, which logs
        // them once; here they would repeat on every reconnect attempt.
        match level {
            _ if facility == "FAIL" => tracing::debug!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        {
            // "All brokers are down" follows the error that says why (a refused certificate,
            // a failed authentication): it must not hide that one.
            let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            let consequence = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
            if !consequence || latest.is_none() {
                *latest = Some((reason.to_owned(), Instant::now()));
            }
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.fatal.store(true, Ordering::Release);
            tracing::error!(%error, reason, "the Kafka producer hit a fatal error");
        } else {
            // Transient client-level errors (a broker connection dropped, all brokers down);
            // librdkafka keeps retrying and individual deliveries report their own outcome.
            // Keyed by the error alone: the reason changes with the broker count it reports.
            let text = error.to_string();
            let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            let repeated = logged
                .get(&text)
                .is_some_and(|at| at.elapsed() < REPEAT_QUIET);
            if repeated {
                tracing::debug!(%error, reason, "Kafka client error (repeated)");
            } else {
                tracing::warn!(%error, reason, "Kafka client error");
                logged.insert(text, Instant::now());
            }
        }
    }

    /// Once every `statistics.interval.ms`, on librdkafka's polling thread: only the few fields
    /// the watchdog reads are decoded.
    fn stats_raw(&self, statistics: &[u8]) {
        match Snapshot::parse(statistics) {
            Ok(snapshot) => {
                *self
                    .observed
                    .stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
            }
            Err(error) => tracing::debug!(%error, "unreadable librdkafka statistics"),
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<oneshot::Sender<DeliveryReport>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let report = match result {
            Ok(message) => {
                self.observed.acked.fetch_add(1, Ordering::Relaxed);
                Ok(Ack {
                    partition: message.partition(),
                    offset: message.offset(),
                    timestamp_ms: broker_timestamp(message.timestamp()).unwrap_or(-1),
                })
            }
            Err((error, message)) => {
                let failure = DeliveryFailure::from_report(error, message_status(message));
                // What the watchdog counts: failures that are not the event's own fault.
                let counter = match failure.kind {
                    FailureKind::TimedOut => Some(&self.observed.timed_out),
                    FailureKind::Unavailable | FailureKind::ProducerFatal => {
                        Some(&self.observed.refused)
                    }
                    _ => None,
                };
                if let Some(counter) = counter {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(failure)
            }
        };
        // The publishing task always waits for its report; a closed channel only means the
        // runtime is shutting down, and the outcome is logged there.
        let _ = reply.send(report);
    }
}

/// The record's timestamp as the broker reported it, if it did.
///
/// For `CreateTime` topics the record keeps the time the gateway set (the caller knows it); for
/// `LogAppendTime` topics the broker's time replaces it. Brokers that report an append time
/// before the year 2000 (librdkafka's mock cluster reports 1234 ms) are not reporting one.
fn broker_timestamp(timestamp: Timestamp) -> Option<i64> {
    const YEAR_2000_MS: i64 = 946_684_800_000;
    match timestamp {
        Timestamp::LogAppendTime(ms) if ms >= YEAR_2000_MS => Some(ms),
        _ => None,
    }
}

/// librdkafka's persistence verdict for a delivered (or failed) message.
#[allow(unsafe_code)]
fn message_status(message: &BorrowedMessage<'_>) -> Persistence {
    use rdkafka::bindings::{rd_kafka_message_status, rd_kafka_msg_status_t as S};
    // SAFETY: `message` borrows the rd_kafka_message_t of the delivery report being handled, so
    // the pointer is valid for this call; rd_kafka_message_status only reads it.
    match unsafe { rd_kafka_message_status(message.ptr()) } {
        S::RD_KAFKA_MSG_STATUS_NOT_PERSISTED => Persistence::NotPersisted,
        S::RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED => Persistence::PossiblyPersisted,
        S::RD_KAFKA_MSG_STATUS_PERSISTED => Persistence::Persisted,
    }
}
