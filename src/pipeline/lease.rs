//! Holding a claimed key until it is settled.
//!
//! A claim's lease is counted from the claim, on Redis's clock. The acknowledgement may come
//! near the end of the delivery timeout, and recording it may take long after that if Redis
//! is slow or away; meanwhile another request must not take the key over and publish the event
//! again. So the owner renews the lease for as long as its delivery and its settle are pending
//! ([`Pipeline::holding_lease`]), and it retries the settle until the store answers
//! ([`Pipeline::settle`]): a key left in flight would be taken over once its lease ran out.
//!
//! While Redis itself is stalled neither renewals nor settles get through, and the lease runs
//! out on Redis's clock all the same; the claim script covers that case by only suspecting the
//! owner at first (see [`crate::idempotency`]). The renewals and settles keep one command
//! queued behind the stall, so the owner answers that suspicion as soon as Redis runs again.

use std::future::Future;
use std::time::Duration;

use super::Pipeline;
use super::delivery::Claimed;
use crate::idempotency::{Renewal, SettleRequest, StoreError, StoredAnswer};

/// How soon a renewal is tried again after the store did not answer.
const RENEW_RETRY: Duration = Duration::from_millis(500);
/// The first and the longest wait between two tries of a settle.
const SETTLE_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

impl Pipeline {
    /// Runs `work` (a delivery and its settle) while renewing `claimed`'s lease.
    pub(super) async fn holding_lease<T>(
        &self,
        claimed: &Claimed,
        work: impl Future<Output = T>,
    ) -> T {
        self.holding_leases(std::slice::from_ref(claimed), work)
            .await
    }

    /// Runs `work` (a batch's deliveries and their settle) while renewing every claimed key's
    /// lease, each until it is settled or lost.
    pub(super) async fn holding_leases<T>(
        &self,
        claimed: &[Claimed],
        work: impl Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        tokio::select! {
            done = &mut work => return done,
            () = self.renew_leases(claimed) => {}
        }
        work.await
    }

    /// Renews each lease every third of it (the keys of a batch together), until the key is
    /// settled or someone else owns it. A renewal the store did not answer is tried again soon,
    /// and said once per key until one gets through.
    async fn renew_leases(&self, claimed: &[Claimed]) {
        let every = self.store.lifetimes().lease / 3;
        // Each key with whether its last renewal failed.
        let mut holding: Vec<(&Claimed, bool)> = claimed.iter().map(|one| (one, false)).collect();
        let mut wait = every;
        while !holding.is_empty() {
            tokio::time::sleep(wait).await;
            let renewals = futures::future::join_all(holding.iter().map(|(one, _)| {
                self.store
                    .renew(one.event.scope(), &one.event.idempotency_key, &one.owner)
            }))
            .await;
            wait = every;
            let mut still = Vec::with_capacity(holding.len());
            for ((one, failed_before), renewal) in holding.into_iter().zip(renewals) {
                let outcome = renewal.as_ref().map_or("error", |r| r.label());
                metrics::counter!("ackgate_lease_renewals_total", "outcome" => outcome)
                    .increment(1);
                match renewal {
                    Ok(Renewal::Renewed) => still.push((one, false)),
                    Ok(Renewal::Settled) => {}
                    Ok(Renewal::Lost) => self.key_lost(one, "renew", None),
                    Err(error) => {
                        if !failed_before {
                            tracing::warn!(
                                error = &error as &dyn std::error::Error,
                                topic = %one.event.topic,
                                idempotency_key = %one.event.idempotency_key,
                                "could not renew the lease of a pending delivery; trying again"
                            );
                        }
                        wait = RENEW_RETRY.min(every);
                        still.push((one, true));
                    }
                }
            }
            holding = still;
        }
    }

    /// Settles the key as its owner, trying again for as long as the store does not answer;
    /// `delayed` runs when the first try failed. Returns whether the key is settled with
    /// `answer`.
    pub(super) async fn settle(
        &self,
        claimed: &Claimed,
        answer: &StoredAnswer,
        delayed: &mut (dyn FnMut() + Send),
    ) -> bool {
        let Claimed { event, owner, .. } = claimed;
        let (mut backoff, longest) = SETTLE_BACKOFF;
        let mut tries = 0_u64;
        loop {
            let settled = self
                .store
                .settle(event.scope(), &event.idempotency_key, owner, answer)
                .await;
            tries += 1;
            match settled {
                Ok(true) => return true,
                Ok(false) => {
                    self.key_lost(claimed, "settle", Some(answer));
                    return false;
                }
                Err(error @ StoreError::Unavailable(_)) => {
                    if tries == 1 {
                        delayed();
                        tracing::warn!(
                            error = &error as &dyn std::error::Error,
                            topic = %event.topic, idempotency_key = %event.idempotency_key,
                            settlement = answer.settlement().as_str(),
                            "could not settle a key; trying again until the store answers"
                        );
                    }
                    metrics::counter!("ackgate_settle_retries_total").increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(longest);
                }
                Err(error) => {
                    tracing::error!(
                        error = &error as &dyn std::error::Error,
                        topic = %event.topic, idempotency_key = %event.idempotency_key,
                        settlement = answer.settlement().as_str(), ?answer,
                        "could not settle a key; it stays in flight, and a request after its \
                         lease may publish the event again"
                    );
                    return false;
                }
            }
        }
    }

    /// [`settle`](Self::settle) for a batch, in one call per try: `requests[i]` settles
    /// `claimed[i]` with `answers[i]`. A try that leaves some keys unsettled because the store
    /// could not answer for them (Redis down, or on a cluster their node in failover) tries
    /// those again, and only those.
    pub(super) async fn settle_batch(
        &self,
        claimed: &[Claimed],
        requests: &[SettleRequest<'_>],
        answers: &[&StoredAnswer],
        delayed: &mut (dyn FnMut() + Send),
    ) {
        let (mut backoff, longest) = SETTLE_BACKOFF;
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut tries = 0_u64;
        while !pending.is_empty() {
            let asked: Vec<SettleRequest<'_>> = pending.iter().map(|&i| requests[i]).collect();
            let settled = self.store.settle_many(&asked).await;
            tries += 1;
            let mut unavailable = None;
            let mut again = Vec::new();
            for (&i, settled) in pending.iter().zip(settled) {
                match settled {
                    Ok(true) => {}
                    Ok(false) => self.key_lost(&claimed[i], "settle", Some(answers[i])),
                    Err(error @ StoreError::Unavailable(_)) => {
                        unavailable.get_or_insert(error);
                        again.push(i);
                    }
                    Err(error) => {
                        let event = &claimed[i].event;
                        tracing::error!(
                            error = &error as &dyn std::error::Error,
                            topic = %event.topic, idempotency_key = %event.idempotency_key,
                            "could not settle a key of a batch; it stays in flight, and a \
                             request after its lease may publish the event again"
                        );
                    }
                }
            }
            pending = again;
            if let Some(error) = unavailable {
                if tries == 1 {
                    delayed();
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        keys = pending.len(),
                        "could not settle a batch's keys; trying again until the store answers"
                    );
                }
                metrics::counter!("ackgate_settle_retries_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(longest);
            }
        }
    }

    /// The key is someone else's now: a request took it over while this delivery was pending,
    /// so the event may be in Kafka twice. Said loudly, once, with what this delivery knows.
    fn key_lost(&self, claimed: &Claimed, step: &'static str, answer: Option<&StoredAnswer>) {
        metrics::counter!("ackgate_leases_lost_total", "step" => step).increment(1);
        tracing::error!(
            topic = %claimed.event.topic,
            idempotency_key = %claimed.event.idempotency_key,
            attempt = claimed.attempt,
            step,
            answer = ?answer,
            "another request took this key over while its delivery was pending; the event may \
             be in Kafka twice (consumers dedupe by the idempotency-key header)"
        );
    }
}
