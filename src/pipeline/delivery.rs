//! The one claimed-delivery path: claim the key, publish, answer, settle.
//!
//! A client's request and an operator's retry differ only in who claims ([`Claimant`]) and
//! where a failed event is kept ([`Keep`]); everything else — the task that outlives the
//! caller, answering from the delivery report, settling only as the key's owner — is this file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Pipeline;
use super::classify::Verdict;
use super::outcome::{Failure, Outcome, Receipt, Refusal};
use super::unfinished::Running;
use crate::event::{Event, IdempotencyKey, TopicName};
use crate::failures::FailureRecord;
use crate::idempotency::{Claim, Claimant, StoredAnswer};
use crate::publisher::DeliveryFailure;

/// A key this process owns until it settles it.
#[derive(Debug)]
pub(super) struct Claimed {
    pub(super) event: Event,
    /// This claim's owner id: only it may settle the key. Shared with the delivery's
    /// registration and its 202 path, so a copy is a reference count.
    pub(super) owner: Arc<str>,
    /// 1 for a fresh key; more after a takeover or an operator's retry.
    pub(super) attempt: u32,
}

impl Claimed {
    pub(super) fn names(&self) -> (Arc<str>, TopicName, IdempotencyKey, Arc<str>) {
        (
            self.event.principal.clone(),
            self.event.topic.clone(),
            self.event.idempotency_key.clone(),
            self.owner.clone(),
        )
    }
}

/// Why a claim did not make the caller the key's owner.
#[derive(Debug)]
pub(super) enum NotClaimed {
    /// Settled before with the same event.
    Replay(StoredAnswer),
    /// Another request holds the key; `accepted` once it was answered 202.
    InFlight {
        retry_after: Duration,
        accepted: bool,
    },
    /// The key was used with a different event.
    Mismatch,
    /// The store did not answer: fail closed.
    StoreUnavailable,
}

impl NotClaimed {
    /// The answer to an event whose key was not claimed.
    pub(super) fn outcome(self) -> Outcome {
        match self {
            NotClaimed::Replay(answer) => Outcome::Replayed(answer),
            NotClaimed::InFlight { accepted: true, .. } => Outcome::Accepted,
            NotClaimed::InFlight { retry_after, .. } => {
                Outcome::Refused(Refusal::InFlight { retry_after })
            }
            NotClaimed::Mismatch => Outcome::Refused(Refusal::Mismatch),
            NotClaimed::StoreUnavailable => Outcome::Refused(Refusal::StoreUnavailable),
        }
    }
}

/// A new claim's owner id: a ULID, unique across gateways and sortable by time.
pub(super) fn new_owner() -> Arc<str> {
    let mut buf = [0u8; ulid::ULID_LEN];
    Arc::from(ulid::Ulid::new().array_to_str(&mut buf))
}

/// Where the event of a failed delivery is kept.
#[derive(Debug)]
pub(super) enum Keep {
    /// A client's event: in a new failure record, when the classification asks for one.
    NewRecord,
    /// An operator's retry: in the record being retried, open again with the new error.
    Reopen(Box<FailureRecord>),
}

impl Pipeline {
    /// Claims the event's key for a new owner.
    pub(super) async fn claim(
        &self,
        event: Event,
        claimant: Claimant,
    ) -> Result<Claimed, NotClaimed> {
        let owner = new_owner();
        let claim = self
            .store
            .claim(
                event.scope(),
                &event.idempotency_key,
                &event.fingerprint(),
                &owner,
                claimant,
            )
            .await;
        let claim = claim.map_err(|error| {
            tracing::error!(error = &error as &dyn std::error::Error, "claim failed");
            metrics::counter!("ackgate_dedupe_outcomes_total", "outcome" => "store_unavailable")
                .increment(1);
            NotClaimed::StoreUnavailable
        })?;
        self.claimed(event, claim, owner)
    }

    /// What the store's answer to a claim means for `event`: counted, and said loudly when the
    /// key was taken from a gateway that did not settle it.
    pub(super) fn claimed(
        &self,
        event: Event,
        claim: Claim,
        owner: Arc<str>,
    ) -> Result<Claimed, NotClaimed> {
        metrics::counter!("ackgate_dedupe_outcomes_total", "outcome" => claim.label()).increment(1);
        match claim {
            Claim::Claimed { attempt, took_over } => {
                if took_over {
                    tracing::warn!(
                        topic = %event.topic,
                        idempotency_key = %event.idempotency_key,
                        attempt,
                        "took over the key of a gateway that did not settle it in time; the \
                         event may be in Kafka twice (consumers dedupe by the idempotency-key \
                         header)"
                    );
                }
                Ok(Claimed {
                    event,
                    owner,
                    attempt,
                })
            }
            Claim::Replay(answer) => Err(NotClaimed::Replay(answer)),
            Claim::InFlight {
                retry_after,
                accepted,
            } => Err(NotClaimed::InFlight {
                retry_after,
                accepted,
            }),
            Claim::Mismatch => Err(NotClaimed::Mismatch),
        }
    }

    /// Publishes and settles in a task of its own, which runs to the end even if nobody waits
    /// for its answer.
    pub(super) fn spawn_delivery(
        &self,
        claimed: Claimed,
        keep: Keep,
    ) -> oneshot::Receiver<Outcome> {
        let (reply, answer) = oneshot::channel();
        let this = self.clone();
        // Registered until the task ends, so that shutdown can keep it if the grace period
        // runs out first.
        let running = self.unfinished.register(Running {
            event: claimed.event.clone(),
            owner: claimed.owner.clone(),
            attempt: claimed.attempt,
            retried: match &keep {
                Keep::Reopen(record) => Some((**record).clone()),
                Keep::NewRecord => None,
            },
        });
        self.tasks.spawn(async move {
            let _running = running;
            this.deliver(claimed, keep, reply).await
        });
        answer
    }

    /// Publishes, answers through `reply`, then finishes the bookkeeping — holding the key's
    /// lease all along.
    async fn deliver(&self, claimed: Claimed, keep: Keep, reply: oneshot::Sender<Outcome>) {
        self.holding_lease(&claimed, self.publish_and_settle(&claimed, keep, reply))
            .await
    }

    async fn publish_and_settle(
        &self,
        claimed: &Claimed,
        keep: Keep,
        reply: oneshot::Sender<Outcome>,
    ) {
        let started = Instant::now();
        let report = self.publisher.publish(&claimed.event).await;
        metrics::histogram!("ackgate_produce_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match report {
            Ok(ack) => {
                let receipt = Receipt::new(&claimed.event, ack);
                let answer = receipt.stored_answer();
                // Kafka has the event: the client gets 201 whatever happens next. Then record
                // it, however long Redis takes, so that a retry replays instead of publishing.
                let _ = reply.send(Outcome::Persisted(receipt));
                self.settle(claimed, &answer, &mut || {}).await;
            }
            Err(failure) => {
                // Boxed: keeping a failure is a long path that a delivery rarely takes, and the
                // task's future is copied whole when it is spawned and when it ends.
                let (failure, answer) = Box::pin(self.fail(claimed, failure, keep)).await;
                // Settled before the answer, so that a retry of a released key can claim it at
                // once. If the store does not answer, the client hears first and the settle
                // goes on trying: a pinned key left in flight would be taken over after its
                // lease, and its event, which may be in Kafka, published again.
                let mut reply = Some((reply, Outcome::Failed(failure)));
                let mut answer_now = || {
                    if let Some((reply, outcome)) = reply.take() {
                        let _ = reply.send(outcome);
                    }
                };
                self.settle(claimed, &answer, &mut answer_now).await;
                answer_now();
            }
        }
    }

    /// Classifies a failed delivery and keeps the event as `keep` says. Returns the failure and
    /// the answer to settle the key with.
    pub(super) async fn fail(
        &self,
        claimed: &Claimed,
        failure: DeliveryFailure,
        keep: Keep,
    ) -> (Failure, StoredAnswer) {
        let Claimed { event, attempt, .. } = claimed;
        metrics::counter!("ackgate_delivery_errors_total", "code" => failure.code_name())
            .increment(1);
        let verdict = Verdict::of(&failure);
        let record_id = match keep {
            Keep::Reopen(record) => Some(self.reopen_failed(*record, &failure, &verdict).await.id),
            Keep::NewRecord if verdict.row().keep_record => {
                self.keep_new(event, &failure, &verdict, *attempt).await
            }
            Keep::NewRecord => None,
        };
        let failure = Failure {
            topic: event.topic.clone(),
            idempotency_key: event.idempotency_key.clone(),
            verdict,
            record_id,
        };
        let answer = failure.stored_answer();
        (failure, answer)
    }
}
