//! Every way a produce can end, sorted in one place.
//!
//! librdkafka already retries everything retriable inside `delivery.timeout.ms` (the idempotent
//! producer makes those retries safe), so an error that reaches a delivery report is final for
//! that attempt. What is left to say is what kind of failure it was and whether the event may be
//! in Kafka anyway. What each kind means for the client (status, Retry-After, a failure record)
//! is decided in one table, `pipeline/classify.rs`.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Serialize;

/// Whether the broker may hold the record, in librdkafka's own terms
/// (`rd_kafka_message_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Persistence {
    /// Acknowledged by all in-sync replicas.
    Persisted,
    /// Sent, but no acknowledgement came back: the record may or may not be in Kafka.
    PossiblyPersisted,
    /// Certainly not written.
    NotPersisted,
}

impl Persistence {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Persistence::Persisted => "persisted",
            Persistence::PossiblyPersisted => "possibly_persisted",
            Persistence::NotPersisted => "not_persisted",
        }
    }
}

/// The class of a failed produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// librdkafka's local queue is full: back-pressure, nothing was enqueued.
    QueueFull,
    /// The record is larger than the producer or the broker accept.
    MessageTooLarge,
    /// The topic does not exist (and is not auto-created).
    UnknownTopic,
    /// The gateway's credentials may not write to this topic.
    NotAuthorized,
    /// The broker refused the record itself (invalid record, policy or schema violation).
    RecordRejected,
    /// The delivery timeout ran out before an acknowledgement.
    TimedOut,
    /// The producer hit a fatal error (e.g. an idempotence sequence fault) and must be rebuilt.
    ProducerFatal,
    /// Anything else the cluster answered: brokers down, no leader, not enough replicas…
    Unavailable,
}

impl FailureKind {
    /// Sorts a librdkafka error code.
    pub(crate) fn of(code: RDKafkaErrorCode) -> Self {
        use RDKafkaErrorCode as C;
        match code {
            C::QueueFull => FailureKind::QueueFull,
            C::MessageSizeTooLarge => FailureKind::MessageTooLarge,
            C::UnknownTopic | C::UnknownTopicOrPartition | C::UnknownPartition => {
                FailureKind::UnknownTopic
            }
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication => FailureKind::NotAuthorized,
            C::InvalidRecord | C::InvalidMessage | C::InvalidMessageSize | C::PolicyViolation => {
                FailureKind::RecordRejected
            }
            C::MessageTimedOut | C::RequestTimedOut => FailureKind::TimedOut,
            C::Fatal
            | C::OutOfOrderSequenceNumber
            | C::DuplicateSequenceNumber
            | C::UnknownProducerId
            | C::InvalidProducerEpoch
            | C::ProducerFenced
            | C::Fenced
            | C::Inconsistent
            | C::GaplessGuarantee
            | C::InvalidProducerIdMapping => FailureKind::ProducerFatal,
            _ => FailureKind::Unavailable,
        }
    }
}

/// A produce that did not end in an acknowledgement.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryFailure {
    pub(crate) kind: FailureKind,
    pub(crate) code: RDKafkaErrorCode,
    pub(crate) persistence: Persistence,
    /// librdkafka's own words, for operators and logs; never sent to clients.
    pub(crate) reason: String,
}

impl DeliveryFailure {
    /// A failure from a delivery report, with librdkafka's persistence verdict.
    pub(crate) fn from_report(error: &KafkaError, persistence: Persistence) -> Self {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        DeliveryFailure {
            kind: FailureKind::of(code),
            code,
            persistence,
            reason: error.to_string(),
        }
    }

    /// A failure to enqueue: nothing left the process.
    pub(crate) fn not_enqueued(error: &KafkaError) -> Self {
        Self::from_report(error, Persistence::NotPersisted)
    }

    /// The stable name of the error code, for metrics and failure records
    /// (e.g. `MessageTimedOut`, `QueueFull`).
    pub(crate) fn code_name(&self) -> String {
        format!("{:?}", self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode as C;

    #[test]
    fn sorts_the_codes_that_matter() {
        assert_eq!(FailureKind::of(C::QueueFull), FailureKind::QueueFull);
        assert_eq!(
            FailureKind::of(C::MessageSizeTooLarge),
            FailureKind::MessageTooLarge
        );
        assert_eq!(
            FailureKind::of(C::UnknownTopicOrPartition),
            FailureKind::UnknownTopic
        );
        assert_eq!(
            FailureKind::of(C::TopicAuthorizationFailed),
            FailureKind::NotAuthorized
        );
        assert_eq!(FailureKind::of(C::MessageTimedOut), FailureKind::TimedOut);
        assert_eq!(
            FailureKind::of(C::OutOfOrderSequenceNumber),
            FailureKind::ProducerFatal
        );
        assert_eq!(
            FailureKind::of(C::NotEnoughReplicas),
            FailureKind::Unavailable
        );
        assert_eq!(FailureKind::of(C::AllBrokersDown), FailureKind::Unavailable);
    }
}
