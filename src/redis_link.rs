//! The connection to Redis: the URL, TLS (`rediss://`) with the operator's CA and client
//! certificate, and how the one shared connection times out and reconnects — to one Redis
//! server, or to a Redis Cluster (`--redis-cluster`) through its seed nodes.
//!
//! Redis errors shown to operators (`/readyz`, logs) go through [`describe`], which names the
//! cause (refused, TLS handshake, authentication) and never the URL, so a password in it is
//! never printed; where the URL itself is shown (`Debug` of [`crate::Backend`]),
//! [`redacted_url`] hides its password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    ClientTlsConfig, Cmd, ErrorKind, FromRedisValue, RedisError, RedisFuture, TlsCertificates,
    Value,
};

/// TLS files for `rediss://` URLs. Without a CA file the system's trust store is used.
#[derive(Debug, Clone, Default, Args)]
pub struct RedisTls {
    /// PEM file with the CA certificate(s) that signed the Redis server's certificate
    /// (`rediss://` only). Without it, the system's trust store is used.
    #[arg(long, env = "ACKGATE_REDIS_TLS_CA_FILE", value_name = "PEM")]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// PEM client certificate for Redis servers that require one (`tls-auth-clients yes`).
    /// Needs --redis-tls-key-file.
    #[arg(
        long,
        env = "ACKGATE_REDIS_TLS_CERT_FILE",
        value_name = "PEM",
        requires = "redis_tls_key_file"
    )]
    pub redis_tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, "BEGIN PRIVATE KEY") of the client certificate.
    #[arg(
        long,
        env = "ACKGATE_REDIS_TLS_KEY_FILE",
        value_name = "PEM",
        requires = "redis_tls_cert_file"
    )]
    pub redis_tls_key_file: Option<PathBuf>,
}

impl RedisTls {
    fn is_set(&self) -> bool {
        self.redis_tls_ca_file.is_some()
            || self.redis_tls_cert_file.is_some()
            || self.redis_tls_key_file.is_some()
    }

    /// Reads the files, naming the flag and the path of the one that cannot be read.
    fn certificates(&self) -> anyhow::Result<TlsCertificates> {
        let root_cert = self
            .redis_tls_ca_file
            .as_deref()
            .map(|path| read_pem("--redis-tls-ca-file", path))
            .transpose()?;
        let client_tls = match (&self.redis_tls_cert_file, &self.redis_tls_key_file) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_pem("--redis-tls-cert-file", cert)?,
                client_key: read_pem("--redis-tls-key-file", key)?,
            }),
            (None, None) => None,
            _ => anyhow::bail!(
                "--redis-tls-cert-file and --redis-tls-key-file must be given together"
            ),
        };
        Ok(TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

fn read_pem(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem =
        std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        anyhow::bail!("{flag}: {} is not a PEM file", path.display());
    }
    Ok(pem)
}

/// The one shared connection of the process.
///
/// To one server: a connection manager that multiplexes concurrent commands on one connection
/// and reconnects in the background. To a cluster: one multiplexed connection per node, with
/// commands routed by their keys' hash slot, redirections (`MOVED`, `ASK`) followed and the slot
/// map refreshed after a failover. Both connect lazily, so a Redis that is down at start-up
/// does not stop the gateway (`/readyz` says why it is not ready).
#[derive(Clone)]
pub(crate) enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// On a cluster, a script may only touch keys of one hash slot.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// A command about a server rather than a key (`INFO`, `CONFIG GET`, `CLUSTER INFO`). On a
    /// cluster it goes to one node, picked at random: the nodes of one cluster are set up
    /// alike, and each `/readyz` asks again.
    pub(crate) async fn ask_a_server<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        match self {
            RedisConn::Single(conn) => cmd.query_async(conn).await,
            RedisConn::Cluster(conn) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                let value = conn.route_command(cmd.clone(), routing).await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(conn) => conn.get_db(),
            RedisConn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The process's connection to the Redis at `url`, or with `cluster`, to the Redis Cluster
/// whose seed nodes `url` lists, comma-separated (the client learns the other nodes from them).
pub(crate) fn connect(
    url: &str,
    tls: &RedisTls,
    timeout: Duration,
    cluster: bool,
) -> anyhow::Result<RedisConn> {
    if cluster {
        return connect_cluster(url, tls, timeout);
    }
    if url.contains(',') {
        anyhow::bail!(
            "--redis-url lists several URLs: that is a Redis Cluster's seed nodes, which needs \
             --redis-cluster"
        );
    }
    let client = client(url, tls)?;
    let conn = ConnectionManager::new_lazy_with_config(client, connection_config(timeout))
        .context("could not set up the Redis connection")?;
    Ok(RedisConn::Single(conn))
}

fn connect_cluster(urls: &str, tls: &RedisTls, timeout: Duration) -> anyhow::Result<RedisConn> {
    let seeds: Vec<&str> = urls.split(',').map(str::trim).collect();
    if seeds.iter().any(|seed| seed.is_empty()) {
        anyhow::bail!("--redis-url: an empty seed node in the comma-separated list");
    }
    // Each seed is checked as a one-server URL is, and never echoed (it may hold a password).
    for seed in &seeds {
        client(seed, tls)?;
    }
    let schemes = seeds
        .iter()
        .filter(|seed| seed.starts_with("rediss://"))
        .count();
    if schemes != 0 && schemes != seeds.len() {
        anyhow::bail!("--redis-url: the seed nodes mix redis:// and rediss://; use one");
    }
    let builder = ClusterClientBuilder::new(seeds)
        // A failover takes a node timeout and an election, about a second or two: a command
        // that meets it is tried again a few times, a little later each time, before it fails.
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(100)
        .max_retry_wait(1_000);
    // The cluster client takes its own CA and client certificate only with rustls, and this
    // build's Redis TLS is native-tls: refused by name rather than ignored.
    if tls.is_set() {
        anyhow::bail!(
            "--redis-tls-* files are not supported with --redis-cluster: rediss:// seed nodes \
             are verified against the system's trust store (add the CA there)"
        );
    }
    let client = builder.build().map_err(|error| {
        let cause = error
            .detail()
            .map_or_else(|| error.to_string(), str::to_owned);
        anyhow::anyhow!("--redis-url: cannot use the Redis Cluster seed nodes: {cause}")
    })?;
    let config = ClusterConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    Ok(RedisConn::Cluster(
        client.get_pending_async_connection_with_config(config),
    ))
}

/// How often a cluster command that meets a failover (`CLUSTERDOWN`, `TRYAGAIN`, a lost
/// connection) is tried again.
const CLUSTER_RETRIES: u32 = 4;

/// The client for `url`; with `rediss://` and TLS files, one that trusts the given CA and
/// presents the given client certificate.
pub(crate) fn client(url: &str, tls: &RedisTls) -> anyhow::Result<redis::Client> {
    // The URL may hold a password: never echo it.
    let invalid = || {
        anyhow::anyhow!(
            "invalid --redis-url (expected redis://[user:password@]host[:port][/db] or rediss://…)"
        )
    };
    // The URL is checked once, the same way with and without TLS files.
    let plain = redis::Client::open(url).map_err(|_| invalid())?;
    if !tls.is_set() {
        return Ok(plain);
    }
    if !url.starts_with("rediss://") {
        anyhow::bail!(
            "--redis-tls-* files were given, but --redis-url does not start with rediss://"
        );
    }
    // What fails now is a file: a key that is not PKCS#8, a certificate OpenSSL cannot parse.
    // native-tls names the failing OpenSSL routine, never the files' contents.
    redis::Client::build_with_tls(url, tls.certificates()?).map_err(|error| {
        let cause = error
            .detail()
            .map_or_else(|| error.to_string(), str::to_owned);
        anyhow::anyhow!("the Redis TLS files cannot be used: {cause}")
    })
}

/// How the gateway's Redis connection times out and reconnects (the benchmark's raw-Redis
/// phase uses the same).
#[doc(hidden)]
pub fn connection_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1))
}

/// Why Redis could not be used, in words fit for `/readyz` and logs: the kind of failure and
/// the cause below it (a refused connection, a TLS verification failure, a refused password),
/// never the URL.
pub(crate) fn describe(error: &RedisError) -> String {
    let what = match error.kind() {
        ErrorKind::AuthenticationFailed => {
            return "authentication failed: check the user and password in --redis-url (or \
                    the ACL user's permissions)"
                .to_owned();
        }
        ErrorKind::Io if error.is_timeout() => "timed out",
        ErrorKind::Io if error.is_connection_refusal() => "connection refused",
        ErrorKind::Io => "connection failed",
        _ => "error",
    };
    let cause = std::iter::successors(std::error::Error::source(error), |e| e.source())
        .last()
        .map(ToString::to_string)
        .or_else(|| error.detail().map(str::to_owned));
    let cause = cause
        .filter(|cause| !cause.is_empty())
        .unwrap_or_else(|| error.to_string());
    // OpenSSL's reasons ("certificate verify failed", "wrong version number") say the TLS
    // handshake failed; name it, so the operator looks at the CA file and the URL's scheme.
    if cause.contains("SSL routines") || cause.contains("certificate") {
        return format!("TLS handshake failed: {cause}");
    }
    format!("{what}: {cause}")
}

/// `url` with the password of its user part replaced by `<redacted>`
/// (`redis://app:<redacted>@host:6379/0`), for `Debug` output. A user part without `:` may be a
/// bare password, so it is replaced whole.
pub(crate) fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL `client` accepts; it may still be a secret.
        return "<redacted>".to_owned();
    };
    // Cut at the last `@` of the whole rest, not of the host part: a password with an
    // unencoded `/` or `?` would otherwise be taken for the path and shown.
    match rest.rsplit_once('@') {
        Some((user_info, host_and_path)) => {
            let user = match user_info.split_once(':') {
                Some((user, _password)) if !user.contains(['/', '?', '#']) => {
                    format!("{user}:<redacted>")
                }
                _ => "<redacted>".to_owned(),
            };
            format!("{scheme}://{user}@{host_and_path}")
        }
        None => url.to_owned(),
    }
}

/// Written here rather than derived: the URL may hold a password ([`redacted_url`]).
impl std::fmt::Debug for crate::Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            crate::Backend::Redis { url, tls, cluster } => f
                .debug_struct("Redis")
                .field(
                    "url",
                    &url.split(',')
                        .map(redacted_url)
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .field("tls", tls)
                .field("cluster", cluster)
                .finish(),
            crate::Backend::Memory => f.write_str("Memory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_url_password() {
        for (url, shown) in [
            (
                "redis://app:hunter2@redis:6379/0",
                "redis://app:<redacted>@redis:6379/0",
            ),
            ("rediss://:hunter2@redis", "rediss://:<redacted>@redis"),
            ("redis://hunter2@redis", "redis://<redacted>@redis"),
            (
                "redis://u:p@ss:hunter2@redis/1",
                "redis://u:<redacted>@redis/1",
            ),
            ("redis://u:hun/ter?2@redis", "redis://u:<redacted>@redis"),
            ("redis://redis:6379", "redis://redis:6379"),
            ("hunter2", "<redacted>"),
        ] {
            assert_eq!(redacted_url(url), shown);
        }
        let backend = crate::Backend::redis("redis://app:hunter2@redis:6379");
        let debug = format!("{backend:?} {backend:#?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("redis:6379"),
            "{debug}"
        );
    }

    fn tls(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> RedisTls {
        RedisTls {
            redis_tls_ca_file: ca.map(PathBuf::from),
            redis_tls_cert_file: cert.map(PathBuf::from),
            redis_tls_key_file: key.map(PathBuf::from),
        }
    }

    fn error_of(url: &str, tls: &RedisTls) -> String {
        format!("{:#}", client(url, tls).expect_err("refused"))
    }

    #[test]
    fn plain_and_tls_urls_without_files_are_accepted() {
        assert!(client("redis://u:p@127.0.0.1:6379/0", &RedisTls::default()).is_ok());
        assert!(client("rediss://u:p@redis.example:6380", &RedisTls::default()).is_ok());
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let error = error_of("nonsense://user:hunter2@host", &RedisTls::default());
        assert!(error.contains("invalid --redis-url"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn tls_files_need_a_rediss_url() {
        let pem = std::env::temp_dir().join(format!("ackgate-ca-{}.pem", std::process::id()));
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let error = error_of("redis://127.0.0.1:6379", &tls(pem.to_str(), None, None));
        assert!(error.contains("rediss://"), "{error}");
        std::fs::remove_file(pem).unwrap();
    }

    #[test]
    fn an_unreadable_or_non_pem_file_is_named_with_its_flag() {
        let error = error_of(
            "rediss://:hunter2@127.0.0.1:6380",
            &tls(Some("/nonexistent/ca.pem"), None, None),
        );
        assert!(error.contains("--redis-tls-ca-file"), "{error}");
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");

        let not_pem = std::env::temp_dir().join(format!("ackgate-key-{}.txt", std::process::id()));
        std::fs::write(&not_pem, "just text").unwrap();
        let error = error_of(
            "rediss://127.0.0.1:6380",
            &tls(None, not_pem.to_str(), not_pem.to_str()),
        );
        assert!(error.contains("--redis-tls-cert-file"), "{error}");
        assert!(error.contains("not a PEM file"), "{error}");
        std::fs::remove_file(not_pem).unwrap();
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let error = error_of(
            "rediss://127.0.0.1:6380",
            &tls(None, Some("/tmp/cert.pem"), None),
        );
        assert!(error.contains("must be given together"), "{error}");
    }
}
