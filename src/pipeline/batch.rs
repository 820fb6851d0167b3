//! The path of a batch: the steps of one event ([`super`]), taken for many at once where a
//! round trip can be shared.
//!
//! 1. The topic is checked once, before any key is claimed.
//! 2. Every key is claimed in one call to the store (one Redis round trip). Each key then goes
//!    its own way: a replay, a conflict or a mismatch is answered at once, as it would be alone.
//! 3. The claimed events are handed to the producer in the batch's order, in a task of their
//!    own (see [`super::delivery`] for why a task): events with the same Kafka key land in
//!    Kafka in batch order. Their leases are held together.
//! 4. When every report is in, the keys are settled in one call. Acknowledged events are
//!    answered as their reports come in; failures once their settle was tried, as alone.
//! 5. The request waits `wait_timeout` for all of it. An event without an answer by then gets
//!    `202 Accepted`, exactly as it would alone, and its key says so to retries.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::join_all;
use tokio::sync::oneshot;

use super::Pipeline;
use super::delivery::{Claimed, Keep};
use super::outcome::{Outcome, Receipt, Refusal};
use super::unfinished::Running;
use crate::event::{Event, TopicName};
use crate::idempotency::{ClaimRequest, Claimant, SettleRequest, StoredAnswer};
use crate::publisher::TopicStatus;

/// The answers of a batch's claimed events, filled in by its delivery task as they come.
type Slots = Arc<Mutex<Vec<Option<Outcome>>>>;

impl Pipeline {
    /// Publishes each event once per idempotency key and says what Kafka said of each, in the
    /// order given. Every event has `topic`. `Err` when the topic does not exist: nothing is
    /// claimed.
    pub(crate) async fn submit_batch(
        &self,
        topic: &TopicName,
        events: Vec<Event>,
    ) -> Result<Vec<Outcome>, Refusal> {
        match self.publisher.topic_status(topic).await {
            Ok(TopicStatus::Exists) => {}
            Ok(TopicStatus::Missing) => return Err(Refusal::TopicNotFound),
            Err(error) => {
                tracing::warn!(%error, %topic, "could not read topic metadata");
                return Ok(vec![
                    Outcome::Refused(Refusal::KafkaUnavailable);
                    events.len()
                ]);
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (mut outcomes, claimed) = self.claim_batch(events).await;
        if claimed.is_empty() {
            return Ok(outcomes.into_iter().map(|o| o.expect("answered")).collect());
        }
        let places: Vec<usize> = claimed.iter().map(|(place, _)| *place).collect();
        let claimed: Vec<Claimed> = claimed.into_iter().map(|(_, c)| c).collect();
        let slots: Slots = Arc::new(Mutex::new(vec![None; claimed.len()]));
        let names: Vec<_> = claimed.iter().map(Claimed::names).collect();
        let all_answered = self.spawn_batch_delivery(claimed, slots.clone());
        let in_time = tokio::time::timeout(self.wait_timeout, all_answered)
            .await
            .is_ok();
        // Taken one by one, so that a report arriving later still finds its place (and is
        // settled; nobody reads it).
        let answered: Vec<Option<Outcome>> = {
            let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.iter_mut().map(Option::take).collect()
        };
        let mut late = Vec::new();
        for ((place, answer), names) in places.into_iter().zip(answered).zip(&names) {
            outcomes[place] = Some(match answer {
                Some(outcome) => outcome,
                // The task always answers before it returns, unless it panicked.
                None if in_time => Outcome::Lost,
                None => {
                    late.push(names);
                    Outcome::Accepted
                }
            });
        }
        // Retries of a late key now get the same 202 instead of 409 (see `submit`).
        join_all(
            late.into_iter()
                .map(|(principal, topic, key, owner)| async move {
                    let scope = crate::event::KeyScope { principal, topic };
                    if let Err(error) = self.store.mark_accepted(scope, key, owner).await {
                        tracing::warn!(
                            error = &error as &dyn std::error::Error,
                            "could not mark a key accepted"
                        );
                    }
                }),
        )
        .await;
        Ok(outcomes.into_iter().map(|o| o.expect("answered")).collect())
    }

    /// Claims every key in one call. Returns each event's answer where the claim decided it,
    /// and the claimed events with their places.
    async fn claim_batch(
        &self,
        events: Vec<Event>,
    ) -> (Vec<Option<Outcome>>, Vec<(usize, Claimed)>) {
        let owner = super::delivery::new_owner();
        let fingerprints: Vec<String> = events.iter().map(Event::fingerprint).collect();
        let requests: Vec<ClaimRequest<'_>> = events
            .iter()
            .zip(&fingerprints)
            .map(|(event, fingerprint)| ClaimRequest {
                scope: event.scope(),
                key: &event.idempotency_key,
                fingerprint,
                owner: &owner,
            })
            .collect();
        let claims = self.store.claim_many(&requests, Claimant::Client).await;
        drop(requests);
        let mut outcomes = Vec::with_capacity(events.len());
        let mut claimed = Vec::new();
        let mut unavailable = 0_u64;
        for (place, (event, claim)) in events.into_iter().zip(claims).enumerate() {
            // A key the store could not answer for (on a cluster, its node is down) gets the
            // answer it would get alone; the others go on.
            let claim = match claim {
                Ok(claim) => claim,
                Err(error) => {
                    if unavailable == 0 {
                        tracing::error!(error = &error as &dyn std::error::Error, "claim failed");
                    }
                    unavailable += 1;
                    outcomes.push(Some(Outcome::Refused(Refusal::StoreUnavailable)));
                    continue;
                }
            };
            match self.claimed(event, claim, owner.clone()) {
                Ok(one) => {
                    outcomes.push(None);
                    claimed.push((place, one));
                }
                Err(not_claimed) => outcomes.push(Some(not_claimed.outcome())),
            }
        }
        if unavailable > 0 {
            metrics::counter!("ackgate_dedupe_outcomes_total", "outcome" => "store_unavailable")
                .increment(unavailable);
        }
        (outcomes, claimed)
    }

    /// Publishes the claimed events in order and settles them together, in a task that runs to
    /// the end even if nobody waits. The receiver resolves once every event has its answer.
    fn spawn_batch_delivery(&self, claimed: Vec<Claimed>, slots: Slots) -> oneshot::Receiver<()> {
        let (done, all_answered) = oneshot::channel();
        let this = self.clone();
        let running: Vec<_> = claimed
            .iter()
            .map(|one| {
                self.unfinished.register(Running {
                    event: one.event.clone(),
                    owner: one.owner.clone(),
                    attempt: one.attempt,
                    retried: None,
                })
            })
            .collect();
        self.tasks.spawn(async move {
            let _running = running;
            let work = this.deliver_batch(&claimed, &slots, done);
            this.holding_leases(&claimed, work).await
        });
        all_answered
    }

    async fn deliver_batch(&self, claimed: &[Claimed], slots: &Slots, done: oneshot::Sender<()>) {
        let events: Vec<&Event> = claimed.iter().map(|one| &one.event).collect();
        let started = Instant::now();
        let reports = self.publisher.publish_in_order(&events).await;
        let answers = join_all(reports.into_iter().zip(claimed).enumerate().map(
            |(place, (report, one))| async move {
                let report = report.await;
                metrics::histogram!("ackgate_produce_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                match report {
                    Ok(ack) => {
                        let receipt = Receipt::new(&one.event, ack);
                        let answer = receipt.stored_answer();
                        // Kafka has it: answered now, whatever the settle meets.
                        fill(slots, place, Outcome::Persisted(receipt));
                        (answer, None)
                    }
                    Err(failure) => {
                        let (failure, answer) = self.fail(one, failure, Keep::NewRecord).await;
                        (answer, Some(Outcome::Failed(failure)))
                    }
                }
            },
        ))
        .await;
        self.publisher.heal_if_fatal().await;
        let requests: Vec<SettleRequest<'_>> = claimed
            .iter()
            .zip(&answers)
            .map(|(one, (answer, _))| SettleRequest {
                scope: one.event.scope(),
                key: &one.event.idempotency_key,
                owner: &one.owner,
                answer,
            })
            .collect();
        // Failures are answered once their settle was tried, so that a retry of a released
        // key can claim it at once; if the store does not answer, they hear first and the
        // settle goes on trying (see `delivery`).
        let mut failures: Vec<(usize, Outcome)> = answers
            .iter()
            .enumerate()
            .filter_map(|(place, (_, failed))| failed.clone().map(|outcome| (place, outcome)))
            .collect();
        let mut done = Some(done);
        let mut answer_now = || {
            for (place, outcome) in failures.drain(..) {
                fill(slots, place, outcome);
            }
            if let Some(done) = done.take() {
                let _ = done.send(());
            }
        };
        let answers: Vec<&StoredAnswer> = answers.iter().map(|(answer, _)| answer).collect();
        self.settle_batch(claimed, &requests, &answers, &mut answer_now)
            .await;
        answer_now();
    }
}

fn fill(slots: &Slots, place: usize, outcome: Outcome) {
    if let Some(slot) = slots
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(place)
    {
        *slot = Some(outcome);
    }
}
