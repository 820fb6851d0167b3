//! Whether Redis keeps what it acknowledged across its own restart.
//!
//! A Redis with neither an append-only file nor RDB snapshots starts empty after a restart:
//! every settled key is forgotten, and a client's retry of an event already in Kafka publishes
//! it again. Nothing stops traffic for that (a cache-only Redis is a deployment choice), but
//! `/readyz` and the start-up log say so, and a gauge lets an alert say so too. Managed Redis
//! services often refuse `CONFIG`: then it is unknown, and said so, not an error.

use crate::redis_link::RedisConn;

/// What Redis keeps on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnDisk {
    /// An append-only file (with or without snapshots).
    Aof,
    /// RDB snapshots only.
    Rdb,
    Nothing,
    /// `INFO` or `CONFIG GET save` was refused.
    Unknown,
}

impl OnDisk {
    const ALL: [OnDisk; 4] = [OnDisk::Aof, OnDisk::Rdb, OnDisk::Nothing, OnDisk::Unknown];

    fn label(self) -> &'static str {
        match self {
            OnDisk::Aof => "aof",
            OnDisk::Rdb => "rdb",
            OnDisk::Nothing => "none",
            OnDisk::Unknown => "unknown",
        }
    }

    /// Asks Redis: `INFO persistence` for the AOF, `CONFIG GET save` for snapshots.
    /// On a cluster, of one node picked at random.
    pub(super) async fn of(conn: &mut RedisConn) -> OnDisk {
        let info: Result<String, _> = conn
            .ask_a_server(redis::cmd("INFO").arg("persistence"))
            .await;
        let Ok(info) = info else {
            return OnDisk::Unknown;
        };
        if info.lines().any(|line| line.trim() == "aof_enabled:1") {
            return OnDisk::Aof;
        }
        let save: Result<Vec<String>, _> = conn
            .ask_a_server(redis::cmd("CONFIG").arg("GET").arg("save"))
            .await;
        match save.as_deref() {
            Ok([_, points]) if points.trim().is_empty() => OnDisk::Nothing,
            Ok([_, _]) => OnDisk::Rdb,
            _ => OnDisk::Unknown,
        }
    }

    /// Sets the gauge `ackgate_redis_persistence{mode}`: 1 for this mode, 0 for the others.
    pub(super) fn report(self) {
        for mode in OnDisk::ALL {
            metrics::gauge!("ackgate_redis_persistence", "mode" => mode.label())
                .set(if mode == self { 1.0 } else { 0.0 });
        }
    }

    /// The warning for `/readyz` and the start-up log, if any.
    pub(super) fn warning(self) -> Option<String> {
        match self {
            OnDisk::Aof | OnDisk::Rdb => None,
            OnDisk::Nothing => Some(
                "Redis keeps nothing on disk (no AOF, no RDB snapshots): a restart of Redis \
                 forgets every settled key, and a retry of an event already in Kafka publishes \
                 it again; run it with 'appendonly yes'"
                    .to_owned(),
            ),
            OnDisk::Unknown => Some(
                "whether Redis keeps its data on disk is unknown (INFO or CONFIG GET refused); \
                 make sure it runs with 'appendonly yes', or a restart of Redis forgets every \
                 settled key"
                    .to_owned(),
            ),
        }
    }
}
