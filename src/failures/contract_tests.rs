//! The contract of [`FailureStore`], written once and run against every backend.
//!
//! Each case is an async function of `&dyn FailureStore`; [`contract!`] turns it into one test
//! per backend (`<case>::memory`, `<case>::redis`), so that the in-memory store of `ackgate dev`
//! cannot drift from the Redis one. The Redis store is the reference. The Redis tests use
//! `ACKGATE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), each under a key prefix of its
//! own that is deleted at the end.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ulid::Ulid;

use super::retrying::reopen_stale;
use super::{
    DeadLetter, FailureError, FailureFilter, FailureRecord, FailureState, FailureStats,
    FailureStore, MemoryFailureStore, Payload, RedisFailureStore, Resolution, Spool, StoredEvent,
    StoredHeader,
};

/// `contract!(case)`: the tests `case::memory`, `case::redis` and `case::redis_cluster`, each
/// running the async fn `case` against a fresh, empty store of that backend.
macro_rules! contract {
    ($case:ident) => {
        mod $case {
            use super::*;
            use crate::test_redis::Scratch;

            #[tokio::test]
            async fn memory() {
                super::$case(&MemoryFailureStore::default()).await;
            }

            #[tokio::test]
            async fn redis() {
                let scratch = Scratch::new();
                let store = RedisFailureStore::new(scratch.conn.clone(), &scratch.prefix);
                scratch.run(super::$case(&store)).await;
            }

            #[tokio::test]
            async fn redis_cluster() {
                let scratch = Scratch::cluster();
                let store = RedisFailureStore::new(scratch.conn.clone(), &scratch.prefix);
                scratch.run(super::$case(&store)).await;
            }
        }
    };
}

contract!(insert_then_get_returns_the_whole_record);
contract!(inserting_an_existing_id_keeps_the_first);
contract!(replace_is_compare_and_set);
contract!(concurrent_replaces_have_one_winner);
contract!(list_filters_by_topic_and_state);
contract!(list_pages_oldest_first);
contract!(stats_count_open_records_and_the_oldest);
contract!(the_spool_imports_into_the_store_once);
contract!(a_record_retrying_past_the_timeout_is_open_again);

// ---------------------------------------------------------------------------------------------
// The cases.

async fn insert_then_get_returns_the_whole_record(store: &dyn FailureStore) {
    let [full, minimal] = ids().map(|id| record(id, "orders", FailureState::Open));
    let full = FailureRecord {
        state: FailureState::Resolved,
        event: StoredEvent {
            principal: "tests".into(),
            key: Some(Payload::Base64("AP8Q".to_owned())),
            headers: vec![
                StoredHeader {
                    name: "trace-id".to_owned(),
                    value: Payload::Utf8("🦀 ü \"quoted\" \\ \0".to_owned()),
                },
                StoredHeader {
                    name: "binary".to_owned(),
                    value: Payload::Base64("gICA".to_owned()),
                },
                StoredHeader {
                    name: "trace-id".to_owned(),
                    value: Payload::Utf8(String::new()),
                },
            ],
            value: Payload::Utf8("{\"text\":\"中文\\n\",\"n\":1e400}\r\n".to_owned()),
            ..full.event
        },
        attempts: 3,
        resolution: Some(Resolution {
            action: "retried".to_owned(),
            by: "ops@example.com".to_owned(),
            reason: Some("broker back".to_owned()),
            at: "2025-01-02T03:04:05.678Z".to_owned(),
            partition: Some(i32::MAX),
            offset: Some(i64::MAX),
        }),
        dead_letter: Some(DeadLetter {
            topic: "orders.dlt".to_owned(),
            partition: 0,
            offset: 0,
        }),
        ..full
    };
    let minimal = FailureRecord {
        event: StoredEvent {
            principal: "tests".into(),
            key: None,
            headers: vec![],
            content_type: None,
            value: Payload::Utf8(String::new()),
            ..minimal.event
        },
        ..minimal
    };
    for record in [&full, &minimal] {
        store.insert(record).await.unwrap();
    }
    for record in [full, minimal] {
        assert_eq!(store.get(&record.id).await.unwrap(), Some(record));
    }
    assert_eq!(store.get(&Ulid::new().to_string()).await.unwrap(), None);
}

async fn inserting_an_existing_id_keeps_the_first(store: &dyn FailureStore) {
    let [id] = ids();
    let first = record(id, "orders", FailureState::Open);
    store.insert(&first).await.unwrap();
    // A spool import after a timeout inserts the same record again: harmless, whatever it says.
    let again = FailureRecord {
        state: FailureState::Discarded,
        attempts: 9,
        ..record(id, "payments", FailureState::Discarded)
    };
    store.insert(&again).await.unwrap();
    assert_eq!(store.get(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(list(store, None, None).await, vec![first.clone()]);
    assert_eq!(list(store, Some("payments"), None).await, vec![]);
    assert_eq!(
        list(store, None, Some(FailureState::Discarded)).await,
        vec![]
    );
    assert_eq!(
        store.stats().await.unwrap(),
        FailureStats {
            open: 1,
            oldest_open_ms: Some(id.timestamp_ms()),
        }
    );
}

async fn replace_is_compare_and_set(store: &dyn FailureStore) {
    let [id] = ids();
    let open = record(id, "orders", FailureState::Open);
    store.insert(&open).await.unwrap();

    let retrying = FailureRecord {
        state: FailureState::Retrying,
        attempts: 2,
        updated_at: "2025-01-01T00:01:00Z".to_owned(),
        ..open.clone()
    };
    // The wrong expectation loses and changes nothing.
    for expected in [
        FailureState::Retrying,
        FailureState::Resolved,
        FailureState::Discarded,
    ] {
        assert!(!store.replace(expected, &retrying).await.unwrap());
        assert_eq!(store.get(&open.id).await.unwrap(), Some(open.clone()));
    }
    assert!(store.replace(FailureState::Open, &retrying).await.unwrap());
    assert_eq!(store.get(&open.id).await.unwrap(), Some(retrying.clone()));

    let resolved = FailureRecord {
        state: FailureState::Resolved,
        resolution: Some(Resolution {
            action: "retried".to_owned(),
            by: "operator".to_owned(),
            reason: None,
            at: "2025-01-01T00:02:00Z".to_owned(),
            partition: Some(1),
            offset: Some(7),
        }),
        ..retrying.clone()
    };
    let discarded = FailureRecord {
        state: FailureState::Discarded,
        ..resolved.clone()
    };
    // A second operator who still believes the record is open loses.
    assert!(!store.replace(FailureState::Open, &discarded).await.unwrap());
    assert!(
        store
            .replace(FailureState::Retrying, &resolved)
            .await
            .unwrap()
    );
    assert_eq!(store.get(&open.id).await.unwrap(), Some(resolved.clone()));
    assert!(
        !store
            .replace(FailureState::Retrying, &discarded)
            .await
            .unwrap()
    );
    assert_eq!(store.get(&open.id).await.unwrap(), Some(resolved.clone()));

    // The lists and the figures follow the state.
    assert_eq!(list(store, None, Some(FailureState::Open)).await, vec![]);
    assert_eq!(
        list(store, None, Some(FailureState::Retrying)).await,
        vec![]
    );
    assert_eq!(
        list(store, Some("orders"), Some(FailureState::Resolved)).await,
        vec![resolved.clone()]
    );
    assert_eq!(list(store, None, None).await, vec![resolved.clone()]);
    assert_eq!(store.stats().await.unwrap(), FailureStats::default());

    // Replacing the same state with itself is allowed, and is a compare-and-set too.
    let annotated = FailureRecord {
        updated_at: "2025-01-01T00:03:00Z".to_owned(),
        ..resolved
    };
    assert!(
        store
            .replace(FailureState::Resolved, &annotated)
            .await
            .unwrap()
    );
    assert_eq!(store.get(&open.id).await.unwrap(), Some(annotated.clone()));
    assert_eq!(
        list(store, None, Some(FailureState::Resolved)).await,
        vec![annotated]
    );

    // A record that does not exist is never replaced, nor created.
    let [unknown] = ids();
    let unknown = record(unknown, "orders", FailureState::Retrying);
    for expected in [FailureState::Open, FailureState::Retrying] {
        assert!(!store.replace(expected, &unknown).await.unwrap());
    }
    assert_eq!(store.get(&unknown.id).await.unwrap(), None);
    assert_eq!(
        list(store, None, Some(FailureState::Retrying)).await,
        vec![]
    );
}

async fn concurrent_replaces_have_one_winner(store: &dyn FailureStore) {
    let [id] = ids();
    let open = record(id, "orders", FailureState::Open);
    store.insert(&open).await.unwrap();
    let contenders: Vec<FailureRecord> = (0..16)
        .map(|i| FailureRecord {
            state: if i % 2 == 0 {
                FailureState::Retrying
            } else {
                FailureState::Discarded
            },
            updated_at: format!("2025-01-01T00:00:{i:02}Z"),
            ..open.clone()
        })
        .collect();
    let won = futures::future::join_all(
        contenders
            .iter()
            .map(|record| store.replace(FailureState::Open, record)),
    )
    .await;
    let winners: Vec<&FailureRecord> = contenders
        .iter()
        .zip(won)
        .filter(|(_, won)| *won.as_ref().unwrap())
        .map(|(record, _)| record)
        .collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(
        store.get(&open.id).await.unwrap().as_ref(),
        Some(winners[0])
    );
    assert_eq!(
        list(store, None, Some(winners[0].state)).await,
        vec![winners[0].clone()]
    );
    assert_eq!(store.stats().await.unwrap().open, 0);
}

async fn list_filters_by_topic_and_state(store: &dyn FailureStore) {
    use FailureState::{Discarded, Open, Resolved, Retrying};
    let layout = [
        ("payments", Open),
        ("orders", Open),
        ("orders", Resolved),
        ("payments", Discarded),
        ("orders", Retrying),
        ("orders", Open),
        ("orders.dlt", Open),
        ("payments", Open),
    ];
    let records: Vec<FailureRecord> = ids::<8>()
        .into_iter()
        .zip(layout)
        .map(|(id, (topic, state))| record(id, topic, state))
        .collect();
    // Inserted newest first: the lists must still come back oldest first.
    for record in records.iter().rev() {
        store.insert(record).await.unwrap();
    }
    for topic in [
        None,
        Some("orders"),
        Some("payments"),
        Some("orders.dlt"),
        Some("refunds"),
    ] {
        for state in [
            None,
            Some(Open),
            Some(Retrying),
            Some(Resolved),
            Some(Discarded),
        ] {
            let expected: Vec<FailureRecord> = records
                .iter()
                .filter(|r| topic.is_none_or(|t| t == r.event.topic))
                .filter(|r| state.is_none_or(|s| s == r.state))
                .cloned()
                .collect();
            assert_eq!(
                list(store, topic, state).await,
                expected,
                "topic {topic:?}, state {state:?}"
            );
        }
    }
}

async fn list_pages_oldest_first(store: &dyn FailureStore) {
    let records: Vec<FailureRecord> = ids::<7>()
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let state = if i == 3 {
                FailureState::Discarded
            } else {
                FailureState::Open
            };
            record(id, "orders", state)
        })
        .collect();
    // Inserted out of order.
    for i in [4, 0, 6, 2, 5, 1, 3] {
        store.insert(&records[i]).await.unwrap();
    }
    let everything = FailureFilter::default();
    let open = FailureFilter {
        state: Some(FailureState::Open),
        ..FailureFilter::default()
    };
    let open_records: Vec<FailureRecord> = records
        .iter()
        .filter(|r| r.state == FailureState::Open)
        .cloned()
        .collect();
    for (filter, expected) in [(&everything, &records), (&open, &open_records)] {
        for limit in 1..=expected.len() + 1 {
            let mut pages = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = store.list(filter, cursor.as_deref(), limit).await.unwrap();
                assert!(page.items.len() <= limit);
                cursor = page.next_cursor.clone();
                let last = page.items.last().map(|r| r.id.clone());
                pages.push(page.items);
                match &cursor {
                    // The cursor is the last id of the page.
                    Some(cursor) => assert_eq!(Some(cursor), last.as_ref()),
                    None => break,
                }
                assert!(pages.len() <= expected.len(), "paging does not end");
            }
            // Full pages, then the rest; no empty last page.
            let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
            let mut expected_sizes = vec![limit; expected.len() / limit];
            if expected.len() % limit != 0 {
                expected_sizes.push(expected.len() % limit);
            }
            assert_eq!(sizes, expected_sizes, "{filter:?}, limit {limit}");
            assert_eq!(&pages.concat(), expected, "{filter:?}, limit {limit}");
        }
    }

    // A cursor need not be a stored id: the page starts after it.
    let page = store
        .list(&everything, Some(&records[2].id), 10)
        .await
        .unwrap();
    assert_eq!(page.items, records[3..]);
    assert_eq!(page.next_cursor, None);
    let before_all = Ulid::from_parts(0, 0).to_string();
    let page = store.list(&everything, Some(&before_all), 2).await.unwrap();
    assert_eq!(page.items, records[..2]);
    assert_eq!(page.next_cursor, Some(records[1].id.clone()));
    let page = store
        .list(&everything, Some(&records[6].id), 2)
        .await
        .unwrap();
    assert_eq!(page.items, vec![]);
    assert_eq!(page.next_cursor, None);
}

async fn stats_count_open_records_and_the_oldest(store: &dyn FailureStore) {
    assert_eq!(store.stats().await.unwrap(), FailureStats::default());
    let [oldest, older, newer] = ids();
    let records = [
        record(oldest, "orders", FailureState::Resolved),
        record(older, "payments", FailureState::Open),
        record(newer, "orders", FailureState::Open),
    ];
    for record in records.iter().rev() {
        store.insert(record).await.unwrap();
    }
    assert_eq!(
        store.stats().await.unwrap(),
        FailureStats {
            open: 2,
            oldest_open_ms: Some(older.timestamp_ms()),
        }
    );
    let discarded = FailureRecord {
        state: FailureState::Discarded,
        ..records[1].clone()
    };
    assert!(store.replace(FailureState::Open, &discarded).await.unwrap());
    assert_eq!(
        store.stats().await.unwrap(),
        FailureStats {
            open: 1,
            oldest_open_ms: Some(newer.timestamp_ms()),
        }
    );
}

async fn the_spool_imports_into_the_store_once(store: &dyn FailureStore) {
    let path = std::env::temp_dir().join(format!("ackgate-contract-{}.spool", Ulid::new()));
    let spool = Spool::open(&path).expect("a spool of its own");
    let [a, b, c] = ids().map(|id| record(id, "orders", FailureState::Open));
    spool.append(&a).await.unwrap();
    spool.append(&b).await.unwrap();
    assert_eq!(spool.len().await.unwrap(), 2);
    assert_eq!(spool.import_into(store).await.unwrap(), 2);
    assert_eq!(spool.len().await.unwrap(), 0);
    assert_eq!(list(store, None, None).await, vec![a.clone(), b.clone()]);

    // A record imported before (a crash mid-import) is not imported over the stored one.
    let changed_a = FailureRecord {
        attempts: 5,
        ..a.clone()
    };
    spool.append(&changed_a).await.unwrap();
    spool.append(&c).await.unwrap();
    assert_eq!(spool.import_into(store).await.unwrap(), 2);
    assert_eq!(spool.len().await.unwrap(), 0);
    assert_eq!(list(store, None, None).await, vec![a, b, c]);
    assert!(!path.exists(), "an empty spool leaves no file");
}

async fn a_record_retrying_past_the_timeout_is_open_again(store: &dyn FailureStore) {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let now = OffsetDateTime::parse("2026-01-01T12:00:00Z", &Rfc3339).unwrap();
    let ago = |secs| (now - Duration::from_secs(secs)).format(&Rfc3339).unwrap();
    let timeout = Duration::from_secs(300);
    let [stale, live, open] = ids();
    let stale = FailureRecord {
        updated_at: ago(301),
        ..record(stale, "orders", FailureState::Retrying)
    };
    let live = FailureRecord {
        updated_at: ago(299),
        ..record(live, "payments", FailureState::Retrying)
    };
    let open = FailureRecord {
        updated_at: ago(3_600),
        ..record(open, "orders", FailureState::Open)
    };
    for r in [&stale, &live, &open] {
        store.insert(r).await.unwrap();
    }

    let reopened = reopen_stale(store, timeout, now).await.unwrap();

    assert_eq!(reopened, vec![stale.id.clone()]);
    let stale = FailureRecord {
        state: FailureState::Open,
        updated_at: now.format(&Rfc3339).unwrap(),
        ..stale
    };
    assert_eq!(store.get(&stale.id).await.unwrap(), Some(stale.clone()));
    assert_eq!(
        list(store, None, Some(FailureState::Retrying)).await,
        vec![live]
    );
    assert_eq!(
        list(store, Some("orders"), Some(FailureState::Open)).await,
        vec![stale, open]
    );
    assert!(reopen_stale(store, timeout, now).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `N` ULIDs a second apart, oldest first, all in the last few minutes.
fn ids<const N: usize>() -> [Ulid; N] {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::array::from_fn(|i| {
        Ulid::from_parts(now - 300_000 + i as u64 * 1_000, Ulid::new().random())
    })
}

/// A record as the pipeline writes it.
fn record(id: Ulid, topic: &str, state: FailureState) -> FailureRecord {
    FailureRecord {
        id: id.to_string(),
        state,
        created_at: "2025-01-01T00:00:00Z".to_owned(),
        event: StoredEvent {
            principal: "tests".into(),
            topic: topic.to_owned(),
            idempotency_key: format!("key-{id}"),
            key: Some(Payload::Utf8("customer-42".to_owned())),
            headers: vec![StoredHeader {
                name: "source".to_owned(),
                value: Payload::Utf8("checkout".to_owned()),
            }],
            content_type: Some("application/json".to_owned()),
            value: Payload::Utf8(r#"{"order":42}"#.to_owned()),
        },
        error: FailureError {
            code: "MessageTimedOut".to_owned(),
            kind: "timed_out".to_owned(),
            reason: "Local: Message timed out".to_owned(),
        },
        persistence: "possibly_persisted".to_owned(),
        http_status: 504,
        attempts: 1,
        updated_at: "2025-01-01T00:00:00Z".to_owned(),
        resolution: None,
        dead_letter: None,
    }
}

/// Every record matching the filter, in one page.
async fn list(
    store: &dyn FailureStore,
    topic: Option<&str>,
    state: Option<FailureState>,
) -> Vec<FailureRecord> {
    let filter = FailureFilter {
        topic: topic.map(str::to_owned),
        state,
    };
    let page = store.list(&filter, None, 1_000).await.unwrap();
    assert_eq!(page.next_cursor, None);
    page.items
}
