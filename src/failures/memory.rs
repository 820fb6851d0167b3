//! Failure records in process memory, for `ackgate dev`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    FailureFilter, FailurePage, FailureRecord, FailureState, FailureStats, FailureStore,
    FailureStoreError, id_time_ms,
};

/// An in-memory failure store; ids are ULIDs, so the map is in time order.
#[derive(Debug, Default)]
pub(crate) struct MemoryFailureStore {
    records: Mutex<BTreeMap<String, FailureRecord>>,
}

impl MemoryFailureStore {
    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FailureRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl FailureStore for MemoryFailureStore {
    async fn insert(&self, record: &FailureRecord) -> Result<(), FailureStoreError> {
        self.records()
            .entry(record.id.clone())
            .or_insert_with(|| record.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError> {
        Ok(self.records().get(id).cloned())
    }

    async fn replace(
        &self,
        expected: FailureState,
        record: &FailureRecord,
    ) -> Result<bool, FailureStoreError> {
        let mut records = self.records();
        match records.get_mut(&record.id) {
            Some(current) if current.state == expected => {
                *current = record.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn list(
        &self,
        filter: &FailureFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<FailurePage, FailureStoreError> {
        let records = self.records();
        let start = cursor.map_or(Bound::Unbounded, |c| Bound::Excluded(c.to_owned()));
        let mut matching = records
            .range((start, Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| filter.topic.as_ref().is_none_or(|t| *t == r.event.topic))
            .filter(|r| filter.state.is_none_or(|s| s == r.state));
        let items: Vec<FailureRecord> = matching.by_ref().take(limit).cloned().collect();
        let more = matching.next().is_some();
        Ok(FailurePage {
            next_cursor: more.then(|| items.last().map(|r| r.id.clone())).flatten(),
            items,
        })
    }

    async fn stats(&self) -> Result<FailureStats, FailureStoreError> {
        let records = self.records();
        let open: Vec<&FailureRecord> = records
            .values()
            .filter(|r| r.state == FailureState::Open)
            .collect();
        Ok(FailureStats {
            open: open.len() as u64,
            oldest_open_ms: open.first().and_then(|r| id_time_ms(&r.id)),
        })
    }
}
