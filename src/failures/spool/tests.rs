//! The spool on its own: appends, imports, torn and corrupt lines, the lock.

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::failures::{
    FailureError, FailureFilter, FailurePage, FailureState, FailureStats, FailureStoreError,
    MemoryFailureStore, Payload, StoredEvent,
};
use std::fs::{self, OpenOptions};
use std::io::Write;

fn record(n: usize) -> FailureRecord {
    FailureRecord {
        id: format!("01JD3Q4ZJ8M3S6Y5F3N2W1V{n:03}"),
        state: FailureState::Open,
        created_at: "2026-11-23T14:00:00Z".into(),
        event: StoredEvent {
            principal: "tests".into(),
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
        let spool = Spool::open(dir.join("failures.spool")).expect("a spool of its own");
        TempSpool { dir, spool }
    }
}

impl TempSpool {
    fn corrupt_path(&self) -> PathBuf {
        self.dir.join("failures.spool.corrupt")
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
    assert_eq!(
        ids(&temp.spool.read().await.unwrap().records),
        ids(&records[2..])
    );
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
    assert!(!temp.spool.path().exists(), "the imported spool is removed");
    assert_eq!(
        fs::read(temp.corrupt_path()).expect("the torn line is set aside"),
        [&torn[..torn.len() / 2], b"\n"].concat(),
        "byte for byte"
    );
}

#[tokio::test]
async fn corrupt_lines_are_set_aside_never_deleted() {
    let temp = TempSpool::new();
    temp.spool.append(&record(0)).await.unwrap();
    // Lines no gateway wrote: not JSON, not a record, not even UTF-8.
    let garbage: [&[u8]; 3] = [b"{\"id\": 17", b"{\"id\":\"x\"}", b"\xff\xfe not utf-8"];
    let mut file = OpenOptions::new()
        .append(true)
        .open(temp.spool.path())
        .unwrap();
    for line in garbage {
        file.write_all(&[line, b"\n"].concat()).unwrap();
    }
    drop(file);
    temp.spool.append(&record(1)).await.unwrap();

    // The store is down at first: nothing imported, and nothing lost either.
    let down = Flaky {
        refuse: vec![0],
        ..Flaky::default()
    };
    assert_eq!(temp.spool.import_into(&down).await.unwrap(), 0);
    assert_eq!(temp.spool.len().await.unwrap(), 2);
    let store = MemoryFailureStore::default();
    assert_eq!(temp.spool.import_into(&store).await.unwrap(), 2);
    assert_eq!(stored(&store).await, ids(&[record(0), record(1)]));

    let aside = fs::read(temp.corrupt_path()).expect("the corrupt lines are set aside");
    assert_eq!(
        aside,
        garbage.map(|l| [l, b"\n"].concat()).concat(),
        "each once"
    );
    // A spool with nothing but a corrupt line is set aside too, and then removed.
    fs::write(temp.spool.path(), b"not a record\n").unwrap();
    assert_eq!(temp.spool.import_into(&store).await.unwrap(), 0);
    assert!(!temp.spool.path().exists());
    assert!(
        fs::read(temp.corrupt_path())
            .unwrap()
            .ends_with(b"\nnot a record\n")
    );
}

#[tokio::test]
async fn only_its_owner_can_read_the_spool() {
    use std::os::unix::fs::PermissionsExt;
    let temp = TempSpool::new();
    temp.spool.append(&record(0)).await.unwrap();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(temp.spool.path()), 0o600, "created by an append");
    temp.spool.append(&record(1)).await.unwrap();
    // A rewrite (an import that leaves a record behind) creates the file anew.
    let store = Flaky {
        refuse: vec![1],
        ..Flaky::default()
    };
    assert_eq!(temp.spool.import_into(&store).await.unwrap(), 1);
    assert_eq!(mode(temp.spool.path()), 0o600, "rewritten");
    // A spool an older version left readable to all is closed on the next append.
    fs::set_permissions(temp.spool.path(), fs::Permissions::from_mode(0o644)).unwrap();
    temp.spool.append(&record(2)).await.unwrap();
    assert_eq!(mode(temp.spool.path()), 0o600, "appended to");
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

#[tokio::test]
async fn one_spool_file_has_one_owner_until_it_is_closed() {
    let temp = TempSpool::new();
    let error = Spool::open(temp.spool.path()).expect_err("taken");
    assert!(matches!(error, SpoolOpenError::InUse { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&temp.spool.path().display().to_string()),
        "{message}"
    );

    temp.spool.close().await;
    let next = Spool::open(temp.spool.path()).expect("free once closed");
    assert!(
        temp.spool.append(&record(0)).await.is_err(),
        "a closed spool takes nothing more"
    );
    next.append(&record(0)).await.unwrap();
    assert_eq!(next.len().await.unwrap(), 1);
}
