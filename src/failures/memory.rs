//! Failure records in process memory, for `ackgate dev`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{FailureRecord, FailureStore, FailureStoreError};

/// An in-memory failure store; ids are ULIDs, so the map is in time order.
#[derive(Debug, Default)]
pub struct MemoryFailureStore {
    records: Mutex<BTreeMap<String, FailureRecord>>,
}

#[async_trait]
impl FailureStore for MemoryFailureStore {
    async fn insert(&self, record: &FailureRecord) -> Result<(), FailureStoreError> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned())
    }
}
