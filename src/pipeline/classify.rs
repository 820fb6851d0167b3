//! What a failed delivery means — for the client, for the key, for an operator — in one table.
//!
//! [`crate::publisher`] sorts librdkafka's error codes into a [`FailureKind`] and reports
//! whether the broker may hold the record ([`Persistence`]). This file decides the rest, row by
//! row: the problem code (and with it the HTTP status), whether a later retry may succeed by
//! itself (`Retry-After`), whether a failure record keeps the event, and the words the client
//! reads. To change how a Kafka failure is answered, change a row here and nothing else.

use std::time::Duration;

use crate::contract::ProblemCode;
use crate::idempotency::Settlement;
use crate::publisher::{DeliveryFailure, FailureKind, Persistence};

/// How long a client is told to wait before retrying after a transient failure.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    /// The problem code; its HTTP status is `code.status()`.
    pub(crate) code: ProblemCode,
    /// The same request may succeed later without anyone changing anything.
    pub(crate) retriable: bool,
    /// An operator should see it: the event is kept in a failure record. Back-pressure and the
    /// client's own mistakes need no operator.
    pub(crate) keep_record: bool,
    /// What happened, for the client.
    pub(crate) what: &'static str,
}

/// The table.
pub(crate) fn row(kind: FailureKind) -> Row {
    use FailureKind as K;
    use ProblemCode as P;
    #[rustfmt::skip]
    let (code, retriable, keep_record, what) = match kind {
        //                   code                   retriable keep   what
        K::QueueFull =>       (P::Overloaded,         true,  false, "The gateway's queue to Kafka is full."),
        K::MessageTooLarge => (P::MessageTooLarge,    false, false, "Kafka refused the record as larger than the broker or topic accepts."),
        K::UnknownTopic =>    (P::TopicNotFound,      false, false, "The topic does not exist."),
        K::RecordRejected =>  (P::RecordRejected,     false, false, "Kafka rejected the record (invalid record or policy)."),
        K::NotAuthorized =>   (P::TopicNotAuthorized, false, true,  "The gateway's credentials do not allow writing to this topic."),
        K::TimedOut =>        (P::DeliveryTimedOut,   true,  true,  "Kafka did not acknowledge the event within the delivery timeout."),
        K::ProducerFatal =>   (P::DeliveryFailed,     true,  true,  "Kafka could not take the event."),
        K::Unavailable =>     (P::DeliveryFailed,     true,  true,  "Kafka could not take the event."),
    };
    Row {
        code,
        retriable,
        keep_record,
        what,
    }
}

/// A delivery failure, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) kind: FailureKind,
    /// Whether the event may be in Kafka: librdkafka's word, except that an acknowledgement
    /// that came with an error (a librdkafka bug if it ever happens) counts as ambiguous.
    pub(crate) persistence: Persistence,
}

impl Verdict {
    pub(crate) fn of(failure: &DeliveryFailure) -> Self {
        let persistence = match failure.persistence {
            Persistence::Persisted => Persistence::PossiblyPersisted,
            other => other,
        };
        Verdict {
            kind: failure.kind,
            persistence,
        }
    }

    /// The table's row for this failure.
    pub(crate) fn row(&self) -> Row {
        row(self.kind)
    }

    /// How the key ends: released when nothing was written, so the next request publishes
    /// again; otherwise pinned to this answer until an operator acts, so a retry cannot publish
    /// the event a second time.
    pub(crate) fn settlement(&self) -> Settlement {
        match self.persistence {
            Persistence::NotPersisted => Settlement::Released,
            _ => Settlement::Failed,
        }
    }

    /// `Retry-After`, only when a retry may help and cannot duplicate: a pinned key replays
    /// this answer, so waiting would change nothing.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        (self.row().retriable && self.persistence == Persistence::NotPersisted)
            .then_some(RETRY_AFTER)
    }

    /// What the client reads: what happened, and whether retrying is safe.
    pub(crate) fn detail(&self) -> String {
        let written = match self.persistence {
            Persistence::NotPersisted => {
                "It was not written; retrying with the same Idempotency-Key is safe."
            }
            _ => {
                "It may have been written; retries with this Idempotency-Key replay this answer \
                 until an operator resolves the failure."
            }
        };
        format!("{} {written}", self.row().what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table as the client sees it, so that a change to a row is a change here too.
    #[test]
    fn the_table() {
        use FailureKind as K;
        let expected = [
            (K::QueueFull, 503, "overloaded", true, false),
            (K::MessageTooLarge, 413, "message-too-large", false, false),
            (K::UnknownTopic, 404, "topic-not-found", false, false),
            (K::RecordRejected, 422, "record-rejected", false, false),
            (K::NotAuthorized, 403, "topic-not-authorized", false, true),
            (K::TimedOut, 504, "delivery-timed-out", true, true),
            (K::ProducerFatal, 503, "delivery-failed", true, true),
            (K::Unavailable, 503, "delivery-failed", true, true),
        ];
        for (kind, status, slug, retriable, keep) in expected {
            let row = row(kind);
            assert_eq!(
                (
                    row.code.status(),
                    row.code.slug(),
                    row.retriable,
                    row.keep_record
                ),
                (status, slug, retriable, keep),
                "{kind:?}"
            );
        }
    }

    fn verdict(kind: FailureKind, persistence: Persistence) -> Verdict {
        Verdict::of(&DeliveryFailure {
            kind,
            code: rdkafka::error::RDKafkaErrorCode::Fail,
            persistence,
            reason: String::new(),
        })
    }

    #[test]
    fn a_key_is_released_only_when_nothing_was_written() {
        let released = verdict(FailureKind::Unavailable, Persistence::NotPersisted);
        assert_eq!(released.settlement(), Settlement::Released);
        assert_eq!(released.retry_after(), Some(RETRY_AFTER));
        assert!(
            released
                .detail()
                .contains("retrying with the same Idempotency-Key is safe")
        );

        let pinned = verdict(FailureKind::TimedOut, Persistence::PossiblyPersisted);
        assert_eq!(pinned.settlement(), Settlement::Failed);
        assert_eq!(pinned.retry_after(), None);
        assert!(pinned.detail().contains("It may have been written"));
    }

    #[test]
    fn an_acknowledged_failure_counts_as_possibly_persisted() {
        let odd = verdict(FailureKind::Unavailable, Persistence::Persisted);
        assert_eq!(odd.persistence, Persistence::PossiblyPersisted);
        assert_eq!(odd.settlement(), Settlement::Failed);
    }

    #[test]
    fn client_mistakes_are_not_retried() {
        for kind in [
            FailureKind::MessageTooLarge,
            FailureKind::UnknownTopic,
            FailureKind::RecordRejected,
        ] {
            let v = verdict(kind, Persistence::NotPersisted);
            assert_eq!(v.retry_after(), None, "{kind:?}");
            assert!(!v.row().keep_record, "{kind:?}");
        }
    }
}
