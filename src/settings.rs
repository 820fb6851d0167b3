//! Every setting the gateway reads, in one typed place.
//!
//! Settings come from flags or the environment (flags win) and are validated once, at start-up:
//! a bad setting stops the process with one clear line instead of surfacing later as a strange
//! request failure. Nothing else in the crate reads environment variables.
//!
//! Tests build a [`Settings`] with [`Settings::defaults`] and struct-update syntax, so they never
//! touch the process environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, FromArgMatches, ValueEnum};

mod kafka;
mod properties_file;

pub use kafka::{AuditKafkaProperties, KafkaProperties, is_sensitive};

/// librdkafka's own default is 300 000 ms; a client waiting five minutes for an answer is not
/// what an HTTP caller expects, so the gateway uses 30 s.
pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 30_000;
/// How long a request waits for the delivery report before it is answered 202.
pub const DEFAULT_WAIT_TIMEOUT_MS: u64 = 10_000;
/// Where undeliverable failure records are spooled while Redis is unreachable.
pub const DEFAULT_FAILURE_SPOOL_PATH: &str = "ackgate-failures.spool";
/// How long a completed idempotency record is kept (and replayed): 24 hours.
pub const DEFAULT_IDEMPOTENCY_TTL_SECS: u64 = 86_400;
/// Largest accepted event body: 1 MiB (Kafka's default `message.max.bytes` is about the same).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default `--max-batch-events`.
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 500;
/// Default `--max-batch-bytes`: 16 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// What the shutdown grace must leave beyond the delivery timeout: a delivery that started just
/// before the signal gets its report within the delivery timeout, and then still has to claim,
/// keep its failure record (Redis, else the spool) and settle its key.
pub const SHUTDOWN_MARGIN_MS: u64 = 5_000;
/// The delivery timeout's default plus the margin.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = DEFAULT_DELIVERY_TIMEOUT_MS + SHUTDOWN_MARGIN_MS;
/// How long a failure record may stay `retrying` before it is taken for the leftover of a
/// gateway that died mid-retry and put back to `open`: 5 minutes, far beyond a live retry
/// (one delivery timeout and a few Redis round trips).
pub const DEFAULT_FAILURE_RETRYING_TIMEOUT_SECS: u64 = 300;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Settings shared by `ackgate serve` and `ackgate dev`.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address the HTTP server listens on.
    #[arg(long, env = "ACKGATE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// A second address, plain HTTP, for `/metrics`, `/healthz` and `/readyz`, so they need not
    /// be reachable where clients are; the main listener then answers 404 for them. Without it
    /// they are served on --listen. Must differ from --listen.
    #[arg(long, env = "ACKGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub tls: crate::tls::ListenerTls,

    /// How long librdkafka may try to deliver one event, retries included
    /// (`delivery.timeout.ms`). A request is answered within about this time.
    #[arg(long, env = "ACKGATE_DELIVERY_TIMEOUT_MS", default_value_t = DEFAULT_DELIVERY_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub delivery_timeout_ms: u64,

    /// How long a request waits for Kafka's answer before it is answered `202 Accepted` (with a
    /// `Location` to poll) while the delivery goes on. Set it above the delivery timeout to
    /// always wait for the final answer.
    #[arg(long, env = "ACKGATE_WAIT_TIMEOUT_MS", default_value_t = DEFAULT_WAIT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub wait_timeout_ms: u64,

    /// Where failure records go when Redis cannot take them (JSON lines, fsync'd); they are
    /// imported into Redis when it answers again. One file per gateway process.
    #[arg(long, env = "ACKGATE_FAILURE_SPOOL_PATH", default_value = DEFAULT_FAILURE_SPOOL_PATH)]
    pub failure_spool_path: std::path::PathBuf,

    /// How long an idempotency record is kept after the request completed; a retry within this
    /// time replays the stored answer, a retry after it is treated as a new event.
    #[arg(long, env = "ACKGATE_IDEMPOTENCY_TTL_SECS", default_value_t = DEFAULT_IDEMPOTENCY_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub idempotency_ttl_secs: u64,

    /// Largest accepted request body in bytes; larger bodies get 413. In a batch, the limit of
    /// each event's value.
    #[arg(long, env = "ACKGATE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES,
          value_parser = parse_body_limit)]
    pub max_body_bytes: usize,

    /// Most events in one batch (`POST /v1/topics/{topic}/events:batch`); more get 413.
    #[arg(long, env = "ACKGATE_MAX_BATCH_EVENTS", default_value_t = DEFAULT_MAX_BATCH_EVENTS,
          value_parser = parse_batch_events)]
    pub max_batch_events: usize,

    /// Largest accepted batch body in bytes; larger batches get 413.
    #[arg(long, env = "ACKGATE_MAX_BATCH_BYTES", default_value_t = DEFAULT_MAX_BATCH_BYTES,
          value_parser = parse_body_limit)]
    pub max_batch_bytes: usize,

    // `--kafka-property` (`ACKGATE_KAFKA_PROPERTIES`) and `--kafka-properties-file`: extra
    // librdkafka producer properties, which may hold the cluster's credentials (settings/kafka.rs).
    #[command(flatten)]
    pub kafka_properties: KafkaProperties,

    /// Copy every failure record's event to the dead-letter topic `<topic>.dlt` (which must
    /// exist) once Kafka takes it, with headers naming the original topic, error and attempts.
    #[arg(long, env = "ACKGATE_DEAD_LETTER_TOPICS", default_value_t = false)]
    pub dead_letter_topics: bool,

    /// Let the broker create unknown topics on first use. Off by default: a typo in a topic name
    /// gets a prompt 404 instead of a new topic.
    #[arg(long, env = "ACKGATE_AUTO_CREATE_TOPICS", default_value_t = false)]
    pub auto_create_topics: bool,

    /// How long the answer "this topic exists" is cached before Kafka metadata is asked again.
    #[arg(long, env = "ACKGATE_METADATA_REFRESH_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub metadata_refresh_ms: u64,

    /// Timeout for connecting to Redis and for each Redis command. When Redis does not answer
    /// in time the request gets 503 and nothing is published.
    #[arg(long, env = "ACKGATE_REDIS_TIMEOUT_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub redis_timeout_ms: u64,

    /// Prefix of every Redis key the gateway writes, so several deployments can share one Redis.
    #[arg(long, env = "ACKGATE_REDIS_KEY_PREFIX", default_value = "ackgate",
          value_parser = parse_key_prefix)]
    pub redis_key_prefix: String,

    /// Most connections open at once; more wait in the kernel's accept backlog. Each idle
    /// connection costs a few KiB.
    #[arg(long, env = "ACKGATE_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,

    /// Most event requests in progress at once; past it, new ones get 503 `overloaded` with
    /// `Retry-After` at once. Bounds memory: each holds its body (up to --max-body-bytes) until
    /// Kafka answers, so the worst case is this × the body limit (2048 × 1 MiB = 2 GiB).
    #[arg(long, env = "ACKGATE_MAX_IN_FLIGHT", default_value_t = 2_048,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_in_flight: usize,

    /// Most batch requests in progress at once, counted apart from single events; past it, new
    /// ones get 503 `overloaded`. Bounds memory: each holds its body (up to --max-batch-bytes)
    /// until its events are answered (64 × 16 MiB = 1 GiB).
    #[arg(long, env = "ACKGATE_MAX_BATCHES_IN_FLIGHT", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_batches_in_flight: usize,

    /// How long a client may take to send its request line and headers (slowloris guard).
    #[arg(long, env = "ACKGATE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_read_timeout_ms: u64,

    /// How long a client may take to send its request body; slower bodies get 408.
    #[arg(long, env = "ACKGATE_BODY_READ_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub body_read_timeout_ms: u64,

    /// Largest request head (request line and headers) in bytes; larger ones are refused.
    #[arg(long, env = "ACKGATE_MAX_HEADER_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(8_192..=1_048_576))]
    pub max_header_bytes: usize,

    /// On SIGTERM/SIGINT, how long in-flight requests and deliveries may take to finish before
    /// the producer is flushed and the process exits. At least the delivery timeout plus 5000 ms;
    /// a delivery still unfinished then is kept as a failure record (possibly persisted).
    #[arg(long, env = "ACKGATE_SHUTDOWN_GRACE_MS", default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,

    /// On SIGTERM/SIGINT, how long to go on serving with `/readyz` answering 503 before the
    /// listeners close and the shutdown grace starts: time for a load balancer's health checks
    /// to take this replica out, so that no new connection meets a closed port. Set it to the
    /// balancer's check interval times its fall count, or leave it 0 where something else
    /// stops the traffic first (Kubernetes' preStop sleep).
    #[arg(long, env = "ACKGATE_DRAIN_DELAY_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=300_000))]
    pub drain_delay_ms: u64,

    /// How long a failure record may stay `retrying` (an operator's retry in progress) before it
    /// is put back to `open`: a retry whose gateway died never finishes by itself. Must be longer
    /// than the in-flight lease (the delivery timeout plus 10 s).
    #[arg(long, env = "ACKGATE_FAILURE_RETRYING_TIMEOUT_SECS",
          default_value_t = DEFAULT_FAILURE_RETRYING_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub failure_retrying_timeout_secs: u64,

    /// Log format.
    #[arg(long, env = "ACKGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `ackgate=debug,rdkafka=warn`.
    #[arg(long, env = "ACKGATE_LOG", default_value = "info")]
    pub log_filter: String,

    /// Who may call (README, "Identity and access").
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
}

impl Settings {
    /// The documented defaults, without reading flags or the environment: what the flags above
    /// are when none is given, so each default is written once, in its `#[arg]`.
    pub fn defaults() -> Self {
        let matches = flags_without_env()
            .try_get_matches_from(["ackgate"])
            .expect("every setting's default passes its own value parser");
        Settings::from_arg_matches(&matches).expect("every setting's default fits its field")
    }

    /// Checks that hold between settings; each error is one line for the operator.
    pub fn validate(&self) -> Result<(), String> {
        self.tls.validate()?;
        // Port 0 asks the kernel for a free port, so two of them never collide.
        if self.admin_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(format!(
                "--admin-listen ({}) must differ from --listen",
                self.listen
            ));
        }
        if self.idempotency_ttl().as_millis() <= self.lease().as_millis() {
            return Err(format!(
                "--idempotency-ttl-secs ({}) must be longer than the in-flight lease ({} ms, \
                 the delivery timeout plus a margin)",
                self.idempotency_ttl_secs,
                self.lease().as_millis()
            ));
        }
        let least_grace = self.delivery_timeout_ms + SHUTDOWN_MARGIN_MS;
        if self.shutdown_grace_ms < least_grace {
            return Err(format!(
                "--shutdown-grace-ms ({}) must be at least --delivery-timeout-ms ({}) plus \
                 {SHUTDOWN_MARGIN_MS} ms, i.e. {least_grace}: a delivery started before the \
                 signal must get its report before the process exits",
                self.shutdown_grace_ms, self.delivery_timeout_ms
            ));
        }
        if self.failure_retrying_timeout().as_millis() <= self.lease().as_millis() {
            return Err(format!(
                "--failure-retrying-timeout-secs ({}) must be longer than the in-flight lease \
                 ({} ms, --delivery-timeout-ms plus 10 s), or a live retry could be reopened",
                self.failure_retrying_timeout_secs,
                self.lease().as_millis()
            ));
        }
        Ok(())
    }

    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }

    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    /// How long a claimed key stays in flight before its owner is suspected of being gone.
    ///
    /// It outlives librdkafka's delivery timeout: `delivery.timeout.ms` bounds the whole
    /// delivery, retries included, so a live owner normally settles its key within its first
    /// lease. The owner renews it while its delivery or its settle is still pending, so a slow
    /// settle after a late acknowledgement keeps the key too.
    pub fn lease(&self) -> Duration {
        self.delivery_timeout() + Duration::from_secs(10)
    }

    /// How long a claim waits, after it first found a lease run out, before it takes the key
    /// over. A lease also runs out while Redis itself is stalled; a live owner then renews or
    /// settles as soon as Redis answers again: its queued command, or its next try (at most a
    /// second apart, each waiting up to the Redis timeout). This covers two of those.
    pub fn takeover_grace(&self) -> Duration {
        self.redis_timeout() * 2 + Duration::from_secs(1)
    }

    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn metadata_refresh(&self) -> Duration {
        Duration::from_millis(self.metadata_refresh_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    pub fn failure_retrying_timeout(&self) -> Duration {
        Duration::from_secs(self.failure_retrying_timeout_secs)
    }
}

/// The settings' flags, without their environment variables: clap reads the environment when a
/// flag is given one (`Arg::env`), so they are taken off before anything is parsed.
fn flags_without_env() -> clap::Command {
    Settings::augment_args(clap::Command::new("ackgate")).mut_args(|arg| arg.env(None))
}

fn parse_body_limit(value: &str) -> Result<usize, String> {
    let bytes: usize = value
        .parse()
        .map_err(|_| format!("'{value}' is not a number of bytes"))?;
    if !(1..=64 * 1024 * 1024).contains(&bytes) {
        return Err("must be between 1 and 67108864 bytes (64 MiB)".to_owned());
    }
    Ok(bytes)
}

fn parse_batch_events(value: &str) -> Result<usize, String> {
    let events: usize = value
        .parse()
        .map_err(|_| format!("'{value}' is not a number of events"))?;
    if !(1..=10_000).contains(&events) {
        return Err("must be between 1 and 10000 events".to_owned());
    }
    Ok(events)
}

fn parse_key_prefix(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("must be 1-64 characters of [A-Za-z0-9._-]".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_parses_into_its_field() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        // Catches a value parser whose type differs from its field (clap panics at runtime).
        let cli = Cli::try_parse_from([
            "ackgate",
            "--listen=127.0.0.1:1",
            "--admin-listen=127.0.0.1:2",
            "--tls-cert-file=/c.pem",
            "--tls-key-file=/k.pem",
            "--tls-client-ca-file=/ca.pem",
            "--delivery-timeout-ms=2000",
            "--wait-timeout-ms=1000",
            "--failure-spool-path=/tmp/x.spool",
            "--idempotency-ttl-secs=600",
            "--max-body-bytes=10",
            "--kafka-property=linger.ms=1",
            "--dead-letter-topics",
            "--auto-create-topics",
            "--metadata-refresh-ms=100",
            "--redis-timeout-ms=10",
            "--redis-key-prefix=p",
            "--max-connections=3",
            "--max-in-flight=4",
            "--header-read-timeout-ms=100",
            "--body-read-timeout-ms=100",
            "--max-header-bytes=8192",
            "--shutdown-grace-ms=1",
            "--failure-retrying-timeout-secs=7",
            "--log-format=json",
            "--log-filter=debug",
        ])
        .expect("parses");
        let s = cli.settings;
        assert_eq!(
            (
                s.max_connections,
                s.max_in_flight,
                s.max_header_bytes,
                s.max_body_bytes
            ),
            (3, 4, 8192, 10)
        );
        assert!(s.dead_letter_topics && s.auto_create_topics);
        assert_eq!(
            s.kafka_properties,
            vec![("linger.ms".into(), "1".into())].into()
        );
        assert_eq!(s.admin_listen, Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(
            s.tls.tls_client_ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
    }

    #[test]
    fn the_defaults_are_the_flags_defaults_field_by_field() {
        use clap::parser::ValueSource;
        // Each field of `defaults()` is its flag's `default_value`, never the environment.
        let flags = flags_without_env();
        let matches = flags.clone().try_get_matches_from(["ackgate"]).unwrap();
        for arg in flags.get_arguments() {
            let id = arg.get_id().as_str();
            assert_eq!(arg.get_env(), None, "--{id} would read the environment");
            match (id, matches.value_source(id)) {
                (_, Some(ValueSource::DefaultValue)) => {}
                // The settings without a default: no extra properties, no admin listener, no
                // HTTPS, no auth file or JWT (open; `serve` refuses that unless --no-auth), and
                // the in-flight share derived from --max-in-flight.
                (
                    "kafka_properties"
                    | "kafka_properties_file"
                    | "admin_listen"
                    | "tls_cert_file"
                    | "tls_key_file"
                    | "tls_client_ca_file"
                    | "auth_file"
                    | "jwt_jwks_file"
                    | "jwt_issuer"
                    | "jwt_audience"
                    | "max_in_flight_per_client",
                    None,
                ) => {}
                (_, source) => panic!("--{id} did not take its default: {source:?}"),
            }
        }
        assert_eq!(
            format!("{:?}", Settings::defaults()),
            format!("{:?}", Settings::from_arg_matches(&matches).unwrap())
        );
        // The flags as `ackgate serve` parses them do read the environment.
        let with_env = Settings::augment_args(clap::Command::new("ackgate"));
        assert!(with_env.get_arguments().any(|arg| arg.get_env().is_some()));

        // The public constants are the flags' defaults.
        let d = Settings::defaults();
        assert_eq!(
            (
                d.delivery_timeout_ms,
                d.wait_timeout_ms,
                d.failure_spool_path.to_str(),
                d.idempotency_ttl_secs,
                d.max_body_bytes
            ),
            (
                DEFAULT_DELIVERY_TIMEOUT_MS,
                DEFAULT_WAIT_TIMEOUT_MS,
                Some(DEFAULT_FAILURE_SPOOL_PATH),
                DEFAULT_IDEMPOTENCY_TTL_SECS,
                DEFAULT_MAX_BODY_BYTES
            )
        );
    }

    #[test]
    fn debug_output_of_the_config_holds_no_secret() {
        let config = crate::Config {
            settings: Settings {
                kafka_properties: vec![
                    ("sasl.username".to_owned(), "svc".to_owned()),
                    ("sasl.password".to_owned(), "hunter2,with=commas".to_owned()),
                    ("ssl.key.password".to_owned(), "hunter3".to_owned()),
                ]
                .into(),
                ..Settings::defaults()
            },
            kafka_brokers: "kafka:9093".to_owned(),
            backend: crate::Backend::redis("rediss://app:hunter4@redis:6380/0"),
        };
        let shown = format!("{config:?}\n{config:#?}");
        assert!(!shown.contains("hunter"), "{shown}");
        for visible in [
            "\"sasl.username\": \"svc\"",
            "sasl.password",
            "redis:6380",
            "kafka:9093",
        ] {
            assert!(shown.contains(visible), "{visible}: {shown}");
        }
    }

    #[test]
    fn the_admin_listener_needs_an_address_of_its_own() {
        let settings = |listen: &str, admin: &str| Settings {
            listen: listen.parse().unwrap(),
            admin_listen: Some(admin.parse().unwrap()),
            ..Settings::defaults()
        };
        let error = settings("0.0.0.0:8080", "0.0.0.0:8080")
            .validate()
            .unwrap_err();
        assert!(
            error.starts_with("--admin-listen (0.0.0.0:8080)"),
            "{error}"
        );
        assert!(
            settings("0.0.0.0:8080", "127.0.0.1:9090")
                .validate()
                .is_ok()
        );
        assert!(settings("127.0.0.1:0", "127.0.0.1:0").validate().is_ok());
    }

    #[test]
    fn ttl_must_outlive_the_lease() {
        let settings = Settings {
            idempotency_ttl_secs: 60,
            delivery_timeout_ms: 60_000,
            ..Settings::defaults()
        };
        assert!(settings.validate().is_err());
        assert!(Settings::defaults().validate().is_ok());
    }

    #[test]
    fn the_grace_must_cover_a_delivery_and_the_margin() {
        let settings = |grace, delivery| Settings {
            shutdown_grace_ms: grace,
            delivery_timeout_ms: delivery,
            ..Settings::defaults()
        };
        let error = settings(30_000, 30_000).validate().unwrap_err();
        for named in [
            "--shutdown-grace-ms (30000)",
            "--delivery-timeout-ms (30000)",
            "35000",
        ] {
            assert!(error.contains(named), "{named}: {error}");
        }
        assert!(settings(10_999, 6_000).validate().is_err());
        assert!(settings(11_000, 6_000).validate().is_ok());
    }

    #[test]
    fn a_record_may_stay_retrying_longer_than_a_live_retry_takes() {
        let settings = |timeout_secs, delivery_ms| Settings {
            failure_retrying_timeout_secs: timeout_secs,
            delivery_timeout_ms: delivery_ms,
            shutdown_grace_ms: delivery_ms + SHUTDOWN_MARGIN_MS,
            ..Settings::defaults()
        };
        let error = settings(40, 30_000).validate().unwrap_err();
        assert!(
            error.contains("--failure-retrying-timeout-secs (40)"),
            "{error}"
        );
        assert!(settings(41, 30_000).validate().is_ok());
        assert!(Settings::defaults().failure_retrying_timeout() > Settings::defaults().lease());
    }
}
