//! Records left `retrying` by a gateway that died mid-retry.
//!
//! An operator's retry moves its record `open → retrying` first (the lock that keeps two
//! retries apart) and back to `open` or on to `resolved` when the delivery ends. If the gateway
//! dies in between, nothing would ever move it again, and no operator could act on it: every
//! action needs `open`. A live retry ends within a delivery timeout and a few Redis round trips,
//! so a record `retrying` for longer than the retrying timeout (a setting, longer than the
//! in-flight lease) is put back to `open`, with the same compare-and-set an operator's action
//! uses: a retry that does finish after all simply finds the record changed.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{FailureFilter, FailureRecord, FailureState, FailureStore, FailureStoreError};

/// How many records one page of the scan reads.
const PAGE: usize = 200;

/// Puts every record `retrying` since before `now - timeout` (by its `updated_at`) back to
/// `open`. Returns the ids it reopened.
pub(crate) async fn reopen_stale(
    store: &dyn FailureStore,
    timeout: Duration,
    now: OffsetDateTime,
) -> Result<Vec<String>, FailureStoreError> {
    let filter = FailureFilter {
        topic: None,
        state: Some(FailureState::Retrying),
    };
    let deadline = now - timeout;
    let mut reopened = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(&filter, cursor.as_deref(), PAGE).await?;
        for record in page.items.iter().filter(|r| stale(r, deadline)) {
            let open = FailureRecord {
                state: FailureState::Open,
                updated_at: now.format(&Rfc3339).unwrap_or_default(),
                ..record.clone()
            };
            if store.replace(FailureState::Retrying, &open).await? {
                reopened.push(record.id.clone());
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(reopened),
        }
    }
}

/// Retrying since before `deadline`. A time that cannot be read counts as stale: such a record
/// would otherwise stay stuck for good.
fn stale(record: &FailureRecord, deadline: OffsetDateTime) -> bool {
    OffsetDateTime::parse(&record.updated_at, &Rfc3339).map_or(true, |at| at < deadline)
}

/// One maintenance round's share: reopens, logs each record and counts them.
pub(crate) async fn reopen_stale_now(store: &dyn FailureStore, timeout: Duration) {
    match reopen_stale(store, timeout, OffsetDateTime::now_utc()).await {
        Ok(ids) => {
            for id in &ids {
                tracing::warn!(failure_id = %id, timeout_secs = timeout.as_secs(),
                    "failure record was 'retrying' past the retrying timeout (its gateway \
                     stopped mid-retry); it is open again");
            }
            metrics::counter!("ackgate_failure_records_reopened_total").increment(ids.len() as u64);
        }
        Err(error) => tracing::debug!(
            error = &error as &dyn std::error::Error,
            "could not look for stale 'retrying' records"
        ),
    }
}
