//! The raw producer load: an rdkafka `ThreadedProducer` configured exactly as the gateway's,
//! keeping a window of unique events with the gateway's record headers outstanding; latency is
//! send → delivery report. The gateway's physical limit on the Kafka side.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cli::gateway_settings;
use crate::load::pacing::{Pace, Tickets, Window};
use crate::load::{Events, REQUEST_TIMEOUT};
use crate::tally::{Outcome, Tally, lock, take_tally};

/// The gateway's producer settings, from the gateway's own code: the raw producer phase is
/// only the gateway's physical limit while it is configured exactly the same way.
fn gateway_producer_config(brokers: &str) -> ClientConfig {
    ackgate::publisher::producer_config(&ackgate::publisher::PublisherConfig::new(
        brokers.to_owned(),
        &gateway_settings(),
    ))
}

/// One outstanding event: when its latency starts, and its place in the window.
struct Outstanding {
    origin: Instant,
    _slot: OwnedSemaphorePermit,
}

struct RawContext {
    tally: Arc<Mutex<Tally>>,
    window: Window,
}

impl ClientContext for RawContext {}

impl ProducerContext for RawContext {
    type DeliveryOpaque = Box<Outstanding>;

    fn delivery(&self, result: &DeliveryResult<'_>, outstanding: Box<Outstanding>) {
        let done = Instant::now();
        if self.window.counts(done) {
            let latency = done - outstanding.origin;
            let mut tally = lock(&self.tally);
            match result {
                Ok(_) => tally.record(Outcome::Ok, "ack", latency),
                Err((error, _)) => {
                    tally.record(Outcome::Other, &format!("error: {error}"), latency)
                }
            }
        }
        // Dropping `outstanding` frees its slot in the window.
    }
}

pub(crate) struct RawProducerLoad<'a> {
    pub(crate) brokers: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) events: Events,
    pub(crate) window_size: usize,
    pub(crate) pace: Pace,
    pub(crate) window: Window,
}

pub(crate) async fn run_raw_producer(load: RawProducerLoad<'_>) -> anyhow::Result<Tally> {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let producer: ThreadedProducer<RawContext> = gateway_producer_config(load.brokers)
        .create_with_context(RawContext {
            tally: tally.clone(),
            window: load.window,
        })
        .context("creating the raw producer")?;
    let slots = Arc::new(Semaphore::new(load.window_size));
    let tickets = Tickets::new(load.pace, load.window);
    let mut seq = 0u64;
    while let Some(at) = tickets.take() {
        tickets.wait(at).await;
        let slot = slots.clone().acquire_owned().await?;
        seq += 1;
        let key = load.events.key(0, seq);
        let body = load.events.body(&key);
        // The record as the gateway builds it (src/publisher/mod.rs `publish_once`): value,
        // headers content-type and idempotency-key, creation timestamp.
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "content-type",
                value: Some("application/json"),
            })
            .insert(Header {
                key: "idempotency-key",
                value: Some(key.as_bytes()),
            });
        let sent = Instant::now();
        let outstanding = Box::new(Outstanding {
            origin: tickets.origin(at, sent),
            _slot: slot,
        });
        let record =
            BaseRecord::<(), [u8], Box<Outstanding>>::with_opaque_to(load.topic, outstanding)
                .payload(body.as_ref())
                .headers(headers)
                .timestamp(now_ms());
        if let Err((error, _record)) = producer.send(record) {
            // Not enqueued (queue full): counted, and the slot is freed with the record.
            if load.window.counts(sent) {
                let mut tally = lock(&tally);
                tally.record(
                    Outcome::Other,
                    &format!("not enqueued: {error}"),
                    Duration::ZERO,
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // Every outstanding event gets its report before the next phase starts.
    let all = u32::try_from(load.window_size).unwrap_or(u32::MAX);
    if tokio::time::timeout(REQUEST_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        bail!("the raw producer still had events outstanding after {REQUEST_TIMEOUT:?}");
    }
    let flushed = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)));
    flushed.await?.context("flushing the raw producer")?;
    Ok(take_tally(tally))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
