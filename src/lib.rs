//! ackgate: an HTTP-to-Kafka gateway that answers only after Kafka has acknowledged.
//!
//! # Layout
//!
//! The modules follow the path of one request:
//!
//! - [`auth`]: who is calling (API keys, client certificates, JWTs) and what each principal
//!   may do: topics, the operator role, rates, in-flight shares.
//! - [`http`]: the HTTP surface. Parses and validates requests, translates answers into
//!   responses and RFC 9457 problem documents; decides nothing itself.
//! - [`pipeline`]: the path of one event — check the topic, claim the key, publish, settle or
//!   keep a failure. The only module that knows the three below.
//! - [`idempotency`]: the claim/settle/release state machine of each idempotency key, in Redis
//!   (Lua scripts) or in memory.
//! - [`publisher`]: the one shared idempotent producer, the topic check, and the classification
//!   of every Kafka outcome.
//! - [`failures`]: failure records, the events Kafka did not acknowledge, kept for an operator.
//! - [`event`] and [`contract`]: the domain types parsed at the edge, and the response bodies.
//! - [`redis_link`]: the Redis connection (TLS, client certificates) and how its errors are
//!   described without secrets.
//! - [`server`]: the accept loop with connection caps and header timeouts, and draining.
//! - [`tls`]: HTTPS on the main listener, reloaded when its files change, and the names of
//!   client certificates.
//! - [`settings`], [`telemetry`], [`dev`]: configuration, logs and metrics, and the
//!   self-contained `ackgate dev` mode.
//! - [`audit`]: `ackgate audit`, which reads a topic back and checks it against the answers.
//!
//! [`Application::build`] wires them together and binds the listeners (the main one and the
//! optional admin one); [`Application::run_until`] serves until a shutdown signal, then drains
//! and flushes.

pub mod audit;
pub mod auth;
mod contract;
pub mod dev;
pub mod event;
mod failures;
pub mod http;
pub mod idempotency;
mod pipeline;
pub mod publisher;
pub mod redis_link;
mod reload;
mod server;
pub mod settings;
pub mod telemetry;
#[cfg(test)]
mod test_redis;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::failures::{FailureStore, MemoryFailureStore, RedisFailureStore, Spool};
use crate::http::{AppState, BatchLimits, BodyLimits};
use crate::idempotency::{IdempotencyStore, Lifetimes, MemoryStore, RedisStore};
use crate::pipeline::{DeadLetters, Pipeline};
use crate::publisher::{Publisher, PublisherConfig};
use crate::settings::Settings;
use crate::tls::ServerTls;

/// Where idempotency and failure records are kept. (`Debug` is in `redis_link`: it hides the
/// URL's password.)
#[derive(Clone)]
pub enum Backend {
    /// A Redis server shared by every gateway replica, over TLS for `rediss://` URLs; with
    /// `cluster`, a Redis Cluster whose seed nodes `url` lists, comma-separated.
    Redis {
        url: String,
        tls: redis_link::RedisTls,
        cluster: bool,
    },
    /// Process memory: nothing survives a restart (`ackgate dev`).
    Memory,
}

impl Backend {
    /// Redis at `url`, with the system's trust store for `rediss://`.
    pub fn redis(url: impl Into<String>) -> Self {
        Backend::Redis {
            url: url.into(),
            tls: redis_link::RedisTls::default(),
            cluster: false,
        }
    }

    /// The Redis Cluster whose seed nodes `urls` lists, comma-separated.
    pub fn redis_cluster(urls: impl Into<String>) -> Self {
        Backend::Redis {
            url: urls.into(),
            tls: redis_link::RedisTls::default(),
            cluster: true,
        }
    }
}

/// Everything needed to build the application.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    /// `bootstrap.servers`.
    pub kafka_brokers: String,
    pub backend: Backend,
}

/// A bound, ready-to-run gateway.
pub struct Application {
    listener: TcpListener,
    /// `--admin-listen`: the probes' own listener.
    admin_listener: Option<TcpListener>,
    /// The main listener's TLS, when it speaks HTTPS.
    tls: Option<Arc<ServerTls>>,
    /// How often the TLS files are checked for changes.
    tls_poll_interval: Duration,
    state: AppState,
    tasks: TaskTracker,
    settings: Settings,
    dead_letter_queue: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    /// The parts shutdown and the background jobs need beside the router's state.
    publisher: Arc<Publisher>,
    failures: Arc<dyn FailureStore>,
    spool: Spool,
}

impl Application {
    /// Connects the clients and binds the listener. Fails with a one-line reason on bad
    /// configuration; an unreachable Redis or Kafka is not a start-up error (`/readyz` reports
    /// it, and requests fail closed until it is back).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let Config {
            settings,
            kafka_brokers,
            backend,
        } = config;
        settings.validate().map_err(anyhow::Error::msg)?;
        let access = Arc::new(
            auth::Access::new(&settings.auth, settings.max_in_flight)
                .map_err(anyhow::Error::msg)?,
        );
        let tls = ServerTls::load(&settings.tls).map_err(anyhow::Error::msg)?;
        let lifetimes = Lifetimes {
            lease: settings.lease(),
            grace: settings.takeover_grace(),
            ttl: settings.idempotency_ttl(),
        };
        let (store, failures): (Arc<dyn IdempotencyStore>, Arc<dyn FailureStore>) = match backend {
            Backend::Redis { url, tls, cluster } => {
                let conn = redis_link::connect(&url, &tls, settings.redis_timeout(), cluster)?;
                (
                    Arc::new(RedisStore::new(
                        conn.clone(),
                        &settings.redis_key_prefix,
                        lifetimes,
                        settings.redis_timeout(),
                    )),
                    Arc::new(RedisFailureStore::new(conn, &settings.redis_key_prefix)),
                )
            }
            Backend::Memory => (
                Arc::new(MemoryStore::new(lifetimes)),
                Arc::new(MemoryFailureStore::default()),
            ),
        };
        let publisher = Arc::new(
            Publisher::new(PublisherConfig::new(kafka_brokers, &settings)).map_err(|error| {
                match error {
                    // The message names the property; the value is left out, it may be a secret.
                    rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => {
                        anyhow::anyhow!("invalid Kafka producer configuration: {description}")
                    }
                    other => anyhow::anyhow!("could not create the Kafka producer: {other}"),
                }
            })?,
        );
        let tasks = TaskTracker::new();
        let spool = Spool::open(&settings.failure_spool_path).map_err(anyhow::Error::new)?;
        let (dead_letters, dead_letter_queue) = if settings.dead_letter_topics {
            let (queue, ids) = DeadLetters::new();
            (Some(queue), Some(ids))
        } else {
            (None, None)
        };
        let pipeline = Pipeline::new(pipeline::Parts {
            store,
            failures: failures.clone(),
            spool: spool.clone(),
            publisher: publisher.clone(),
            tasks: tasks.clone(),
            wait_timeout: settings.wait_timeout(),
            dead_letters,
            unfinished: Default::default(),
        });
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("could not listen on {}", settings.listen))?;
        let admin_listener = match settings.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|error| {
                anyhow::anyhow!("--admin-listen: could not listen on {addr}: {error}")
            })?),
            None => None,
        };
        let state = AppState {
            pipeline,
            access,
            metrics: telemetry::metrics_handle(),
            body_limits: BodyLimits {
                max_bytes: settings.max_body_bytes,
                read_timeout: settings.body_read_timeout(),
            },
            batch_limits: BatchLimits {
                max_events: settings.max_batch_events,
                body: BodyLimits {
                    max_bytes: settings.max_batch_bytes,
                    read_timeout: settings.body_read_timeout(),
                },
            },
            max_in_flight: settings.max_in_flight,
            max_batches_in_flight: settings.max_batches_in_flight,
            stopping: CancellationToken::new(),
        };
        Ok(Application {
            listener,
            admin_listener,
            tls,
            tls_poll_interval: tls::POLL_INTERVAL,
            state,
            tasks,
            settings,
            dead_letter_queue,
            publisher,
            failures,
            spool,
        })
    }

    /// A handle that forces producer faults, for tests of the healing path.
    #[cfg(feature = "test-hooks")]
    pub fn fault_injector(&self) -> publisher::FaultInjector {
        publisher::FaultInjector::new(self.publisher.clone())
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of the admin listener (`--admin-listen`), if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener.as_ref().map(|listener| {
            listener
                .local_addr()
                .expect("a bound listener has an address")
        })
    }

    /// The main listener's TLS configuration, when it speaks HTTPS: what a SIGHUP reloads.
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.tls.clone()
    }

    /// Checks the TLS files for changes this often instead of every 10 s.
    #[cfg(feature = "test-hooks")]
    pub fn set_tls_poll_interval(&mut self, every: Duration) {
        self.tls_poll_interval = every;
    }

    /// Serves until `shutdown` resolves, then drains: stop accepting, let in-flight requests
    /// finish within the grace period, wait for every delivery report, flush the producer.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            admin_listener,
            tls,
            tls_poll_interval,
            state,
            tasks,
            settings,
            dead_letter_queue,
            publisher,
            failures,
            spool,
        } = self;
        let reloads = reload::on_sighup(state.access.clone(), tls.clone());
        self::warn_about_store(&state.pipeline).await;
        if let Some(warning) = state.access.warning() {
            tracing::warn!("{warning}");
        }
        // The Prometheus recorder only drains its histogram samples on upkeep (or a scrape):
        // without this, memory grows with every request until /metrics is scraped.
        let upkeep = {
            let metrics = state.metrics.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    metrics.run_upkeep();
                }
            })
        };
        let maintenance = tokio::spawn(failures::maintain(
            failures,
            spool.clone(),
            settings.failure_retrying_timeout(),
        ));
        let watchdog = tokio::spawn(publisher.clone().watch());
        let mirroring = dead_letter_queue
            .map(|ids| tokio::spawn(state.pipeline.clone().mirror_dead_letters(ids)));
        let tls_watch = tls
            .clone()
            .map(|tls| tokio::spawn(tls.watch(tls_poll_interval)));
        let grace = settings.shutdown_grace();
        let signalled = Arc::new(std::sync::OnceLock::<Instant>::new());
        let stopping = CancellationToken::new();
        let signal = {
            let (signalled, stopping) = (signalled.clone(), stopping.clone());
            let (not_ready, drain_delay) = (state.stopping.clone(), settings.drain_delay());
            async move {
                shutdown.await;
                // Not ready from now, still serving: the balancers' health checks take this
                // replica out before its ports close.
                not_ready.cancel();
                if !drain_delay.is_zero() {
                    tracing::info!(
                        drain_delay_ms = drain_delay.as_millis() as u64,
                        "shutdown requested; /readyz answers 503, serving on for the drain delay"
                    );
                    tokio::time::sleep(drain_delay).await;
                }
                let _ = signalled.set(Instant::now());
                stopping.cancel();
            }
        };
        let limits = server::ConnectionLimits {
            max_connections: settings.max_connections,
            header_read_timeout: settings.header_read_timeout(),
            max_header_bytes: settings.max_header_bytes,
        };
        let pipeline = state.pipeline.clone();
        let (router, admin_router) = http::routers(state, admin_listener.is_some());
        // The admin listener stops with the main one: same signal, same grace.
        let admin = admin_listener.zip(admin_router).map(|(listener, router)| {
            tokio::spawn(server::serve(
                listener,
                router,
                None,
                limits,
                stopping.cancelled_owned(),
                grace,
            ))
        });
        let drained = server::serve(listener, router, tls, limits, signal, grace).await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        reloads.abort();
        if let Some(tls_watch) = tls_watch {
            tls_watch.abort();
        }
        if !drained {
            tracing::warn!(
                grace_ms = settings.shutdown_grace_ms,
                "grace period over with requests still open; closing them"
            );
        }

        // Delivery tasks outlive their requests: wait for their reports even when the client
        // has gone, so that every outcome is recorded.
        tasks.close();
        let since_signal = signalled.get().map_or(Duration::ZERO, Instant::elapsed);
        let remaining = grace
            .saturating_sub(since_signal)
            .max(Duration::from_secs(1));
        if tokio::time::timeout(remaining, tasks.wait()).await.is_err() {
            // Settings::validate makes the grace outlast a delivery; what is left now is stuck
            // (a stalled Redis, a report that never came). Keep each before the process ends.
            let unfinished = pipeline.keep_unfinished().await;
            tracing::warn!(
                unfinished,
                "deliveries unfinished when the grace period ended; each is kept as a failure \
                 record (possibly persisted), in Redis or the spool"
            );
        }
        let in_flight = publisher.in_flight_count();
        if let Err(error) = publisher.flush(Duration::from_secs(5)).await {
            tracing::error!(%error, in_flight, "flushing the producer failed");
        }
        maintenance.abort();
        watchdog.abort();
        upkeep.abort();
        let _ = maintenance.await;
        if let Some(mirroring) = mirroring {
            mirroring.abort();
            let _ = mirroring.await;
        }
        // Another process may take the spool now; a delivery task still running writes no more.
        spool.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn warn_about_store(pipeline: &Pipeline) {
    match tokio::time::timeout(Duration::from_secs(3), pipeline.store_health()).await {
        Ok(Ok(health)) => {
            for warning in health.warnings {
                tracing::warn!("{warning}");
            }
        }
        Ok(Err(error)) => tracing::warn!(
            reason = error.reason(),
            "Redis is not reachable yet; requests get 503 until it is"
        ),
        Err(_) => {
            tracing::warn!("Redis did not answer at start-up; requests get 503 until it does")
        }
    }
}
