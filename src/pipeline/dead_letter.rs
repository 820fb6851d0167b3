//! Mirroring failure records to dead-letter topics (`--dead-letter-topics`, off by default).
//!
//! Each new failure record is copied to `<topic>.dlt` — same key, value and headers, plus the
//! headers dead-letter consumers expect — once Kafka takes it. The copy's place is written back
//! into the record, so a record is mirrored once; records still waiting at start-up (or left
//! over by a restart) are found again by a scan of the open records. A crash between the copy
//! and the write-back can copy a record twice: consumers dedupe by `dlt-failure-id`.
//!
//! A record that cannot be copied yet (its `<topic>.dlt` is missing, Kafka or Redis is down) is
//! tried again later, with a growing delay, while the records behind it go on: one topic
//! without a dead-letter topic must not hold back the copies of every other.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;

use super::Pipeline;
use crate::event::{Event, TopicName};
use crate::failures::{DeadLetter, FailureFilter, FailureRecord, FailureState};
use crate::publisher::TopicStatus;

/// How long to wait before trying a record again when Kafka (or its DLT topic) is not there;
/// doubled on each further attempt, up to [`RETRY_AT_MOST`].
const RETRY_EVERY: Duration = Duration::from_secs(5);
const RETRY_AT_MOST: Duration = Duration::from_secs(300);

/// The suffix of a dead-letter topic.
const DLT_SUFFIX: &str = ".dlt";

/// Hands failure record ids to the mirroring task.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetters {
    queue: mpsc::UnboundedSender<String>,
}

impl DeadLetters {
    /// The queue, and its receiving end for [`Pipeline::mirror_dead_letters`].
    pub(crate) fn new() -> (DeadLetters, mpsc::UnboundedReceiver<String>) {
        let (queue, ids) = mpsc::unbounded_channel();
        (DeadLetters { queue }, ids)
    }

    pub(crate) fn enqueue(&self, id: &str) {
        let _ = self.queue.send(id.to_owned());
    }
}

impl Pipeline {
    /// Mirrors every record whose id arrives on `ids`, and first every open record that has no
    /// copy yet. Runs until the sender side is dropped.
    pub(crate) async fn mirror_dead_letters(self, mut ids: mpsc::UnboundedReceiver<String>) {
        self.enqueue_unmirrored().await;
        let mut later = DelayQueue::new();
        let mut attempts: HashMap<String, u32> = HashMap::new();
        loop {
            let id = tokio::select! {
                Some(id) = ids.recv() => id,
                Some(due) = later.next() => due.into_inner(),
                else => return,
            };
            let Err(postponed) = self.mirror(&id).await else {
                attempts.remove(&id);
                continue;
            };
            let attempt = attempts.entry(id.clone()).or_insert(0);
            *attempt += 1;
            let delay = RETRY_EVERY
                .saturating_mul(1 << (*attempt - 1).min(16))
                .min(RETRY_AT_MOST);
            match postponed {
                Postponed::MissingTopic(dlt) => {
                    tracing::warn!(failure_id = %id, %dlt, retry_in_secs = delay.as_secs(),
                        "dead-letter topic does not exist; this copy waits, the others go on");
                    metrics::counter!("ackgate_dead_letter_topic_missing_total", "topic" => dlt)
                        .increment(1);
                }
                Postponed::Other(why) => tracing::warn!(failure_id = %id, why,
                    retry_in_secs = delay.as_secs(), "dead-letter copy postponed"),
            }
            later.insert(id, delay);
        }
    }

    async fn enqueue_unmirrored(&self) {
        let Some(dead_letters) = &self.dead_letters else {
            return;
        };
        let filter = FailureFilter {
            topic: None,
            state: Some(FailureState::Open),
        };
        let mut cursor: Option<String> = None;
        loop {
            let Ok(page) = self.failures.list(&filter, cursor.as_deref(), 500).await else {
                return; // The store is down; new records still arrive through the queue.
            };
            for record in page.items.iter().filter(|r| r.dead_letter.is_none()) {
                dead_letters.enqueue(&record.id);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return,
            }
        }
    }

    /// Copies one record to its dead-letter topic, unless it already has a copy.
    async fn mirror(&self, id: &str) -> Result<(), Postponed> {
        let record = self
            .failures
            .get(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the record is not in the store (yet)")?;
        if record.dead_letter.is_some() {
            return Ok(());
        }
        let event = dead_letter_event(&record)?;
        match self.publisher.topic_status(&event.topic).await {
            Ok(TopicStatus::Exists) => {}
            Ok(TopicStatus::Missing) => {
                return Err(Postponed::MissingTopic(event.topic.to_string()));
            }
            Err(error) => return Err(error.to_string().into()),
        }
        let ack = self
            .publisher
            .publish(&event)
            .await
            .map_err(|failure| failure.reason)?;
        let copy = DeadLetter {
            topic: event.topic.to_string(),
            partition: ack.partition,
            offset: ack.offset,
        };
        // The record may change state meanwhile (an operator acts): re-read and retry.
        for _ in 0..3 {
            let current = self
                .failures
                .get(id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the record vanished")?;
            let mirrored = FailureRecord {
                dead_letter: Some(copy.clone()),
                ..current.clone()
            };
            if self
                .failures
                .replace(current.state, &mirrored)
                .await
                .map_err(|e| e.to_string())?
            {
                tracing::info!(failure_id = id, dlt = %copy.topic, partition = copy.partition,
                    offset = copy.offset, "failure record copied to its dead-letter topic");
                return Ok(());
            }
        }
        Err("the record kept changing; its copy may be repeated".into())
    }
}

/// Why a record was not copied this time.
#[derive(Debug)]
enum Postponed {
    /// Its `<topic>.dlt` does not exist (named here).
    MissingTopic(String),
    Other(String),
}

impl From<String> for Postponed {
    fn from(why: String) -> Self {
        Postponed::Other(why)
    }
}

impl From<&str> for Postponed {
    fn from(why: &str) -> Self {
        Postponed::Other(why.to_owned())
    }
}

/// The event as it goes to `<topic>.dlt`: the original record, plus headers saying where it
/// came from and why it failed.
fn dead_letter_event(record: &FailureRecord) -> Result<Event, String> {
    let original = record.event.to_event()?;
    let topic = TopicName::parse(&format!("{}{DLT_SUFFIX}", original.topic))
        .map_err(|why| format!("no dead-letter topic for {}: {why}", original.topic))?;
    let mut headers = original.headers.clone();
    for (name, value) in [
        ("dlt-original-topic", original.topic.to_string()),
        ("dlt-failure-id", record.id.clone()),
        ("dlt-error-code", record.error.code.clone()),
        ("dlt-error-reason", record.error.reason.clone()),
        ("dlt-persistence", record.persistence.clone()),
        ("dlt-attempts", record.attempts.to_string()),
        ("dlt-failed-at", record.created_at.clone()),
    ] {
        headers.push((name.to_owned(), Bytes::from(value)));
    }
    Ok(Event {
        topic,
        headers,
        ..original
    })
}
