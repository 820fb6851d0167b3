//! The broker and the Redis the bench shares with the gateway: a Redis connection, the Redis
//! server's pid and version, and the clean-up after each phase (its keys, its Kafka topic).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use redis::aio::ConnectionManager;

use crate::cli::gateway_settings;

/// A connection manager configured as the gateway's, but connected at once: the bench has no
/// use for a Redis it cannot reach.
pub(crate) async fn redis_connection(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("invalid Redis URL")?;
    let config = ackgate::redis_link::connection_config(gateway_settings().redis_timeout());
    ConnectionManager::new_with_config(client, config)
        .await
        .context("connecting to Redis")
}

/// Deletes every key under `prefix` (the bench's, never anyone else's).
pub(crate) async fn delete_keys(conn: &mut ConnectionManager, prefix: &str) -> anyhow::Result<u64> {
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(5000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// `INFO server` fields: the Redis server's pid (for its CPU) and version.
pub(crate) async fn redis_server_info(conn: &mut ConnectionManager) -> (Option<u32>, String) {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    let pid = field("process_id").and_then(|p| p.parse().ok());
    // Only a Redis on this machine has its CPU in our /proc.
    let local_pid = pid.filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
    (
        local_pid,
        field("redis_version").unwrap_or_else(|| "unknown".into()),
    )
}

/// A numeric field of `INFO <section>` (e.g. `memory`, `used_memory`).
pub(crate) async fn redis_info_u64(
    conn: &mut ConnectionManager,
    section: &str,
    field: &str,
) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg(section).query_async(conn).await?;
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {field} in INFO {section}"))
}

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?)
}

pub(crate) async fn create_topic(brokers: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin = admin(brokers)?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&topic], &options).await? {
        if let Err((name, code)) = result {
            bail!("creating topic {name} failed: {code:?}");
        }
    }
    Ok(())
}

/// Best effort: the broker keeps its data in memory, so each phase's topic goes once measured.
pub(crate) async fn delete_topic(brokers: &str, name: &str) {
    if let Ok(admin) = admin(brokers) {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let _ = admin.delete_topics(&[name], &options).await;
    }
}
