//! Every way a produce can end, sorted in one place.
//!
//! librdkafka already retries everything retriable inside `delivery.timeout.ms` (the idempotent
//! producer makes those retries safe), so an error that reaches a delivery report is final for
//! that attempt. What is left to decide is whose fault it was, whether the event may be in Kafka
//! anyway, and whether a later retry can help. To change how a Kafka error maps to an answer,
//! this is the file to open.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Serialize;

/// Whether the broker may hold the record, in librdkafka's own terms
/// (`rd_kafka_message_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persistence {
    /// Acknowledged by all in-sync replicas.
    Persisted,
    /// Sent, but no acknowledgement came back: the record may or may not be in Kafka.
    PossiblyPersisted,
    /// Certainly not written.
    NotPersisted,
}

impl Persistence {
    pub fn as_str(self) -> &'static str {
        match self {
            Persistence::Persisted => "persisted",
            Persistence::PossiblyPersisted => "possibly_persisted",
            Persistence::NotPersisted => "not_persisted",
        }
    }
}

/// The class of a failed produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
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
    pub fn of(code: RDKafkaErrorCode) -> Self {
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

    /// Whether the client caused it, so that no operator needs to look at it.
    pub fn is_client_fault(self) -> bool {
        matches!(
            self,
            FailureKind::MessageTooLarge | FailureKind::UnknownTopic | FailureKind::RecordRejected
        )
    }

    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            FailureKind::QueueFull
                | FailureKind::TimedOut
                | FailureKind::ProducerFatal
                | FailureKind::Unavailable
        )
    }
}

/// A produce that did not end in an acknowledgement.
#[derive(Debug, Clone)]
pub struct DeliveryFailure {
    pub kind: FailureKind,
    pub code: RDKafkaErrorCode,
    pub persistence: Persistence,
    /// librdkafka's own words, for operators and logs; never sent to clients.
    pub reason: String,
}

impl DeliveryFailure {
    /// A failure from a delivery report, with librdkafka's persistence verdict.
    pub fn from_report(error: &KafkaError, persistence: Persistence) -> Self {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        DeliveryFailure {
            kind: FailureKind::of(code),
            code,
            persistence,
            reason: error.to_string(),
        }
    }

    /// A failure to enqueue: nothing left the process.
    pub fn not_enqueued(error: &KafkaError) -> Self {
        Self::from_report(error, Persistence::NotPersisted)
    }

    /// The stable name of the error code, for metrics and failure records
    /// (e.g. `MessageTimedOut`, `QueueFull`).
    pub fn code_name(&self) -> String {
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

    #[test]
    fn client_faults_are_not_retriable() {
        for kind in [
            FailureKind::MessageTooLarge,
            FailureKind::UnknownTopic,
            FailureKind::RecordRejected,
        ] {
            assert!(kind.is_client_fault() && !kind.is_retriable(), "{kind:?}");
        }
        assert!(!FailureKind::NotAuthorized.is_client_fault());
        assert!(FailureKind::TimedOut.is_retriable());
    }
}
