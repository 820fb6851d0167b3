//! Replacing a producer that can no longer deliver: at once after a fatal error, and when the
//! watchdog finds it wedged while the cluster answers.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::producer::Producer;
use tokio::time::MissedTickBehavior;

use super::watchdog::{Watchdog, Wedge};
use super::{KafkaProducer, Publisher, WATCH_INTERVAL, build_producer, cluster_answers, is_fatal};

impl Publisher {
    /// Replaces a producer that hit a fatal error (e.g. an idempotence sequence fault, or a
    /// broker that lost the producer's state): after such an error every produce fails, so
    /// without this the gateway would be wedged until restarted.
    pub(super) async fn heal(&self) {
        self.rebuild(Cause::Fatal, |current| is_fatal(current))
            .await;
    }

    /// Watches the producer and rebuilds it when the watchdog finds it wedged — making no
    /// progress, with no error to heal on — and a metadata request confirms that the cluster
    /// answers. Runs until its task is aborted.
    pub(crate) async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut watched = self.producer.load_full();
        let mut dog = Watchdog::new(self.config.delivery_timeout, Instant::now());
        loop {
            tick.tick().await;
            let current = self.producer.load_full();
            if !Arc::ptr_eq(&current, &watched) {
                // Rebuilt after a fatal error: what was seen belongs to the old producer.
                watched = current;
                dog.replaced(Instant::now());
            }
            let observed = watched.context().take_tick();
            let Some(wedge) = dog.observe(Instant::now(), observed) else {
                continue;
            };
            // The statistics are up to a second old, and say only that a connection is open.
            if let Err(error) = cluster_answers(watched.clone()).await {
                tracing::debug!(%error, %wedge, "the producer looks wedged, but the cluster does not answer");
                dog.cluster_silent();
                continue;
            }
            let wedged = watched.clone();
            let still_wedged = move |current: &Arc<KafkaProducer>| Arc::ptr_eq(current, &wedged);
            if self.rebuild(Cause::Wedged(&wedge), still_wedged).await {
                dog.rebuilt_for_wedge(Instant::now());
            }
        }
    }

    /// Builds a new producer and swaps it in atomically if `needed` still holds for the current
    /// one (another request may have rebuilt it meanwhile). The old one is flushed, not dropped
    /// at once (dropping purges its queue), so every message it holds still gets its delivery
    /// report — a failure, which its request turns into a failure record.
    async fn rebuild(
        &self,
        cause: Cause<'_>,
        needed: impl Fn(&Arc<KafkaProducer>) -> bool,
    ) -> bool {
        let _one_at_a_time = self.rebuilding.lock().await;
        let current = self.producer.load_full();
        if !needed(&current) {
            return false;
        }
        let fresh = match build_producer(&self.config) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::error!(%error, "could not rebuild the Kafka producer");
                return false;
            }
        };
        self.producer.store(Arc::new(fresh));
        let in_flight = current.in_flight_count();
        match cause {
            Cause::Fatal => {
                metrics::counter!("ackgate_producer_rebuilds_total", "reason" => "fatal")
                    .increment(1);
                let fatal = current.client().fatal_error();
                tracing::warn!(
                    ?fatal,
                    in_flight,
                    "the Kafka producer hit a fatal error and was rebuilt"
                );
            }
            Cause::Wedged(wedge) => {
                metrics::counter!("ackgate_producer_rebuilds_total", "reason" => "wedged")
                    .increment(1);
                tracing::warn!(
                    why = %wedge,
                    in_flight,
                    "the Kafka producer made no progress while the cluster answered, and was rebuilt"
                );
            }
        }
        let timeout = self.config.delivery_timeout;
        tokio::task::spawn_blocking(move || {
            if let Err(error) = current.flush(timeout) {
                tracing::debug!(%error, "flushing the replaced producer");
            }
        });
        true
    }
}

/// Why a producer is rebuilt.
enum Cause<'a> {
    Fatal,
    Wedged(&'a Wedge),
}
