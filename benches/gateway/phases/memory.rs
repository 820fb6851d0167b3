//! The memory phase `redis_memory`: a `redis-server` of the bench's own, one gateway on it, a
//! fixed number of unique events with keys shaped like UUIDs (principal `anonymous`, the
//! bench's topic name, the gateway's default key prefix), and Redis's `used_memory` before the
//! gateway starts and after it stopped: bytes per settled idempotency record.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::backends::{delete_topic, redis_connection, redis_info_u64, redis_server_info};
use crate::cli::{Args, gateway_settings};
use crate::load::batch::{BatchLoad, run_batches};
use crate::load::http::{HttpLoad, run_http};
use crate::load::pacing::{Pace, Tickets, Window};
use crate::phases::Run;
use crate::phases::batch::batch_connections;
use crate::processes::gateway::Gateway;
use crate::processes::redis_server::RedisServer;
use crate::report::{append_line, command_output};

/// The longest the memory phase's load may take (it stops at its count of events long before).
const LOAD_LIMIT_SECS: f64 = 600.0;

/// What one memory phase measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemorySummary {
    pub(crate) kind: &'static str,
    pub(crate) run_id: String,
    /// `current` (the gateway under test) or `baseline` (`--baseline-bin`).
    pub(crate) build: &'static str,
    pub(crate) ackgate_version: String,
    /// How the events were sent: `batch` (`events:batch`) or `single` (one per request).
    pub(crate) endpoint: &'static str,
    pub(crate) events_sent: u64,
    /// Events answered 201: one settled record each.
    pub(crate) settled: u64,
    pub(crate) answers: BTreeMap<String, u64>,
    pub(crate) failures: u64,
    pub(crate) load_seconds: f64,
    pub(crate) redis_version: String,
    /// Keys in the bench's Redis after the load (the records, and whatever else the gateway
    /// keeps there).
    pub(crate) dbsize: u64,
    pub(crate) used_memory_before: u64,
    pub(crate) used_memory_after: u64,
    /// (used_memory after − before) / settled records.
    pub(crate) bytes_per_record: Option<f64>,
    /// One record's key, and `MEMORY USAGE` of it (Redis's own estimate for that key).
    pub(crate) sample_key: Option<String>,
    pub(crate) sample_key_memory_usage: Option<u64>,
}

impl Run {
    /// `redis_memory` for the gateway binary `bin` (`build`: `current` or `baseline`), its
    /// events sent through the batch endpoint if `batch`, else one per request.
    pub(crate) async fn redis_memory(
        &mut self,
        build: &'static str,
        bin: &Path,
        batch: bool,
    ) -> anyhow::Result<MemorySummary> {
        let name = format!("redis-memory-{}-{build}", self.run_id);
        let server =
            RedisServer::start(&self.args.redis_server, &self.args.work_dir, &name).await?;
        let mut conn = redis_connection(&server.url()).await?;
        let (_, redis_version) = redis_server_info(&mut conn).await;
        let (topic, _) = self.fresh_names().await?;
        let args = Args {
            gateway_bin: bin.to_owned(),
            redis_url: server.url(),
            ..self.args.clone()
        };
        let prefix = gateway_settings().redis_key_prefix;
        let before = redis_info_u64(&mut conn, "memory", "used_memory").await?;
        let gateway = Gateway::start(&args, &prefix, &format!("{topic}-{build}"), &[]).await?;

        let records = self.args.memory_records;
        let window = Window::starting_now(0.0, LOAD_LIMIT_SECS);
        let events = self.uuid_events(&topic);
        let started = Instant::now();
        let tally = if batch {
            let n = self.args.batch_events;
            run_batches(BatchLoad {
                addr: gateway.addr,
                topic: topic.clone(),
                events,
                connections: batch_connections(self.args.batch_window, n),
                batch_events: n,
                tickets: Tickets::counted(records.div_ceil(n as u64), window),
            })
            .await?
        } else {
            let connections = self.args.windows.iter().copied().max().unwrap_or(256);
            run_http(HttpLoad {
                tickets: Tickets::counted(records, window),
                ..HttpLoad::new(
                    gateway.addr,
                    &topic,
                    events,
                    connections,
                    Pace::Closed,
                    window,
                )
            })
            .await?
        };
        let load_seconds = started.elapsed().as_secs_f64();
        gateway.stop().await?;

        let after = redis_info_u64(&mut conn, "memory", "used_memory").await?;
        let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
        let (sample_key, sample_key_memory_usage) = sample_record(&mut conn, &prefix).await;
        drop(conn);
        server.stop().await?;
        delete_topic(&self.args.brokers, &topic).await;

        let settled = tally.ok.len();
        let summary = MemorySummary {
            kind: "redis_memory",
            run_id: self.run_id.clone(),
            build,
            ackgate_version: command_output(&bin.to_string_lossy(), &["--version"])
                .unwrap_or_else(|| "unknown".into()),
            endpoint: if batch { "batch" } else { "single" },
            events_sent: tally.answers.values().sum(),
            settled,
            answers: tally.answers.clone(),
            failures: tally.failures(),
            load_seconds,
            redis_version,
            dbsize,
            used_memory_before: before,
            used_memory_after: after,
            bytes_per_record: (settled > 0)
                .then(|| (after as f64 - before as f64) / settled as f64),
            sample_key,
            sample_key_memory_usage,
        };
        println!("{}", memory_line(&summary));
        append_line(&self.jsonl, &serde_json::to_string(&summary)?)?;
        Ok(summary)
    }
}

/// One key under `prefix` and its `MEMORY USAGE` (best effort: for the report only).
async fn sample_record(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> (Option<String>, Option<u64>) {
    let scanned: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(format!("{prefix}:*"))
        .arg("COUNT")
        .arg(1000)
        .query_async(conn)
        .await;
    let Some(key) = scanned.ok().and_then(|(_, keys)| keys.into_iter().next()) else {
        return (None, None);
    };
    let usage: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query_async(conn)
        .await
        .ok();
    (Some(key), usage)
}

pub(crate) fn memory_line(m: &MemorySummary) -> String {
    format!(
        "{:<23} {:<8} {} records ({}) in {:.1} s, DBSIZE {}, used_memory {} → {} B: {} B per \
         record; failures {}",
        "redis_memory",
        m.build,
        m.settled,
        m.endpoint,
        m.load_seconds,
        m.dbsize,
        m.used_memory_before,
        m.used_memory_after,
        m.bytes_per_record
            .map_or_else(|| "–".to_owned(), |b| format!("{b:.0}")),
        m.failures
    )
}
