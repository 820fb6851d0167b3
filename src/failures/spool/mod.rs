//! The local spool: where a failure record goes when its store cannot take it.
//!
//! A failure record is the last copy of an event Kafka did not take, so it must not depend on
//! Redis being up at that very moment. Records that cannot be stored are appended to a local
//! file as JSON lines and fsync'd before the client is answered; a background task imports them
//! into the store once it answers again. Importing is idempotent (a record that is already
//! stored is left as it is), so a crash mid-import loses nothing and duplicates nothing.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{FailureRecord, FailureStore};

/// A spool file, one per gateway process.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    path: Arc<PathBuf>,
    /// Appends and imports never interleave.
    lock: Arc<Mutex<()>>,
}

impl Spool {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Spool {
            path: Arc::new(path.into()),
            lock: Arc::new(Mutex::new(())),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and waits until it is on disk.
    pub(crate) async fn append(&self, record: &FailureRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&*path)?;
            // A crash mid-append leaves a last line without its newline: end it first, or this
            // record is glued onto it and dropped with it as unreadable.
            if file.metadata()?.len() > 0 {
                let mut last = [0u8; 1];
                file.seek(SeekFrom::End(-1))?;
                file.read_exact(&mut last)?;
                if last[0] != b'\n' {
                    line.insert(0, b'\n');
                }
            }
            file.write_all(&line)?;
            file.sync_data()
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Records waiting in the spool.
    pub(crate) async fn len(&self) -> io::Result<usize> {
        let _guard = self.lock.lock().await;
        Ok(self.read().await?.len())
    }

    /// Moves every spooled record into `store`. Returns how many were imported; records the
    /// store refused stay in the spool for the next attempt.
    pub(crate) async fn import_into(&self, store: &dyn FailureStore) -> io::Result<usize> {
        let _guard = self.lock.lock().await;
        let records = self.read().await?;
        if records.is_empty() {
            return Ok(0);
        }
        let mut imported = 0;
        let mut left = Vec::new();
        for record in records {
            if left.is_empty() && store.insert(&record).await.is_ok() {
                imported += 1;
            } else {
                left.push(record);
            }
        }
        self.rewrite(left).await?;
        Ok(imported)
    }

    async fn read(&self) -> io::Result<Vec<FailureRecord>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let file = match fs::File::open(&*path) {
                Ok(file) => file,
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(error) => return Err(error),
            };
            let mut records = Vec::new();
            for line in BufReader::new(file).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str(&line) {
                    Ok(record) => records.push(record),
                    // A torn last line from a crash mid-append: its client got no answer.
                    Err(error) => {
                        tracing::error!(%error, line, "unreadable line in the failure spool")
                    }
                }
            }
            Ok(records)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Replaces the spool with `records` atomically (write a new file, fsync, rename).
    async fn rewrite(&self, records: Vec<FailureRecord>) -> io::Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if records.is_empty() {
                return match fs::remove_file(&*path) {
                    Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                    _ => Ok(()),
                };
            }
            let tmp = path.with_extension("tmp");
            let mut file = fs::File::create(&tmp)?;
            for record in &records {
                serde_json::to_writer(&mut file, record).map_err(io::Error::other)?;
                file.write_all(b"\n")?;
            }
            file.sync_all()?;
            fs::rename(&tmp, &*path)
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::failures::{
        FailureError, FailureFilter, FailurePage, FailureState, FailureStats, FailureStoreError,
        MemoryFailureStore, Payload, StoredEvent,
    };

    fn record(n: usize) -> FailureRecord {
        FailureRecord {
            id: format!("01JD3Q4ZJ8M3S6Y5F3N2W1V{n:03}"),
            state: FailureState::Open,
            created_at: "2026-11-23T14:00:00Z".into(),
            event: StoredEvent {
                topic: "orders".into(),
                idempotency_key: format!("k-{n}"),
                key: None,
                headers: Vec::new(),
                content_type: Some("application/json".into()),
                value: Payload::Utf8(format!(r#"{{"n":{n}}}"#)),
            },
            error: FailureError {
                code: "MessageTimedOut".into(),
                kind: "timed_out".into(),
                reason: "Local: Message timed out".into(),
            },
            persistence: "possibly_persisted".into(),
            http_status: 504,
            attempts: 1,
            updated_at: "2026-11-23T14:00:00Z".into(),
            resolution: None,
            dead_letter: None,
        }
    }

    /// A spool in a directory of its own, removed at the end.
    struct TempSpool {
        dir: PathBuf,
        spool: Spool,
    }

    impl TempSpool {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "ackgate-spool-test-{}",
                ulid::Ulid::new().to_string().to_lowercase()
            ));
            fs::create_dir_all(&dir).unwrap();
            let spool = Spool::new(dir.join("failures.spool"));
            TempSpool { dir, spool }
        }
    }

    impl Drop for TempSpool {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// A store that records the order of what it took and refuses the inserts whose number
    /// (counted from 0, over its whole life) is in `refuse`.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryFailureStore,
        calls: AtomicUsize,
        refuse: Vec<usize>,
        taken: StdMutex<Vec<String>>,
    }

    #[async_trait]
    impl FailureStore for Flaky {
        async fn insert(&self, record: &FailureRecord) -> Result<(), FailureStoreError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.refuse.contains(&call) {
                return Err(FailureStoreError::Unavailable(::redis::RedisError::from((
                    ::redis::ErrorKind::Io,
                    "refused by the test",
                ))));
            }
            self.taken.lock().unwrap().push(record.id.clone());
            self.inner.insert(record).await
        }
        async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError> {
            self.inner.get(id).await
        }
        async fn replace(
            &self,
            expected: FailureState,
            record: &FailureRecord,
        ) -> Result<bool, FailureStoreError> {
            self.inner.replace(expected, record).await
        }
        async fn list(
            &self,
            filter: &FailureFilter,
            cursor: Option<&str>,
            limit: usize,
        ) -> Result<FailurePage, FailureStoreError> {
            self.inner.list(filter, cursor, limit).await
        }
        async fn stats(&self) -> Result<FailureStats, FailureStoreError> {
            self.inner.stats().await
        }
    }

    fn ids(records: &[FailureRecord]) -> Vec<String> {
        records.iter().map(|r| r.id.clone()).collect()
    }

    async fn stored(store: &dyn FailureStore) -> Vec<String> {
        let page = store
            .list(&FailureFilter::default(), None, 1000)
            .await
            .unwrap();
        ids(&page.items)
    }

    #[tokio::test]
    async fn a_store_that_refuses_partway_keeps_the_rest_in_order_for_the_next_import() {
        let temp = TempSpool::new();
        let records: Vec<FailureRecord> = (0..5).map(record).collect();
        for r in &records {
            temp.spool.append(r).await.unwrap();
        }
        // The third insert is refused; the store would take the fourth and fifth.
        let store = Flaky {
            refuse: vec![2],
            ..Flaky::default()
        };

        assert_eq!(temp.spool.import_into(&store).await.unwrap(), 2);
        assert_eq!(
            *store.taken.lock().unwrap(),
            ids(&records[..2]),
            "nothing after the refused record is imported before it"
        );
        assert_eq!(ids(&temp.spool.read().await.unwrap()), ids(&records[2..]));
        assert_eq!(temp.spool.len().await.unwrap(), 3);

        assert_eq!(temp.spool.import_into(&store).await.unwrap(), 3);
        assert_eq!(
            *store.taken.lock().unwrap(),
            ids(&records),
            "in spool order"
        );
        assert_eq!(stored(&store).await, ids(&records));
        assert_eq!(temp.spool.len().await.unwrap(), 0);
        assert!(!temp.spool.path().exists(), "an empty spool is removed");
    }

    #[tokio::test]
    async fn a_torn_last_line_is_dropped_and_the_records_before_it_are_imported() {
        let temp = TempSpool::new();
        let records: Vec<FailureRecord> = (0..3).map(record).collect();
        for r in &records {
            temp.spool.append(r).await.unwrap();
        }
        // A crash mid-append: half a line, no newline. Its client was never answered.
        let torn = serde_json::to_vec(&record(3)).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(temp.spool.path())
            .unwrap();
        file.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(file);

        assert_eq!(temp.spool.len().await.unwrap(), 3);
        let store = MemoryFailureStore::default();
        assert_eq!(temp.spool.import_into(&store).await.unwrap(), 3);
        assert_eq!(stored(&store).await, ids(&records));
        assert!(
            !temp.spool.path().exists(),
            "the torn line is not kept once the rest is imported"
        );
    }

    #[tokio::test]
    async fn a_torn_line_does_not_swallow_the_record_appended_after_it() {
        let temp = TempSpool::new();
        temp.spool.append(&record(0)).await.unwrap();
        let torn = serde_json::to_vec(&record(1)).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(temp.spool.path())
            .unwrap();
        file.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(file);
        // The next process appends before its first import.
        temp.spool.append(&record(2)).await.unwrap();

        let store = MemoryFailureStore::default();
        assert_eq!(temp.spool.import_into(&store).await.unwrap(), 2);
        assert_eq!(stored(&store).await, ids(&[record(0), record(2)]));
    }

    #[tokio::test]
    async fn importing_the_same_records_twice_stores_each_once() {
        let temp = TempSpool::new();
        let records: Vec<FailureRecord> = (0..3).map(record).collect();
        for r in &records {
            temp.spool.append(r).await.unwrap();
        }
        let saved = fs::read(temp.spool.path()).unwrap();
        let store = MemoryFailureStore::default();
        assert_eq!(temp.spool.import_into(&store).await.unwrap(), 3);
        // An operator acts on one of them…
        let mut discarded = records[0].clone();
        discarded.state = FailureState::Discarded;
        assert!(store.replace(FailureState::Open, &discarded).await.unwrap());
        // …and the same lines are imported again (a crash after the store took them but
        // before the spool was rewritten).
        fs::write(temp.spool.path(), &saved).unwrap();
        assert_eq!(temp.spool.import_into(&store).await.unwrap(), 3);

        assert_eq!(stored(&store).await, ids(&records), "each once");
        assert_eq!(
            store.get(&records[0].id).await.unwrap(),
            Some(discarded),
            "a repeated import does not reopen what an operator closed"
        );
        assert_eq!(temp.spool.len().await.unwrap(), 0);
    }
}
