//! The `ackgate` binary: parse flags, set up logs, run a subcommand.

use std::process::ExitCode;

use ackgate::dev::DevArgs;
use ackgate::settings::Settings;
use ackgate::{Application, Backend, Config, telemetry};
use clap::{Args, Parser, Subcommand};
use utoipa::OpenApi;

// mimalloc instead of glibc's malloc: a request allocates and frees many small buffers across
// the runtime's threads, where glibc spent a sixth of the gateway's CPU (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ackgate",
    version,
    about = "HTTP-to-Kafka gateway that answers only after Kafka has acknowledged"
)]
struct Cli {
    /// Threads of the async runtime that serves HTTP and talks to Redis (librdkafka runs its
    /// own threads besides). Default: one per available CPU core. Set it to a container's CPU
    /// limit, or lower where the gateway shares its cores with Redis or Kafka.
    #[arg(long, global = true, env = "ACKGATE_WORKER_THREADS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    worker_threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway against Kafka and Redis.
    Serve(ServeArgs),
    /// Run the gateway with an in-process Kafka and in-memory stores (nothing is kept).
    Dev(DevArgs),
    /// Print the OpenAPI document (JSON).
    Openapi,
    /// Make a new API key: prints the secret (for the client) and the auth-file entry that
    /// holds only its SHA-256.
    NewKey(NewKeyArgs),
    /// Read a topic back and check it against the gateway's answers.
    ///
    /// Reports keys written more than once, records without the `idempotency-key` header and,
    /// with --acks, acknowledged events missing from the topic or not at the partition/offset
    /// their answer named. Exit status: 0 clean, 1 problems found, 2 usage or connection error.
    Audit(ackgate::audit::AuditArgs),
}

#[derive(Debug, Args)]
struct NewKeyArgs {
    /// The client's name (its principal).
    #[arg(long, default_value = "my-service")]
    name: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "ACKGATE_KAFKA_BROKERS", default_value = "localhost:9092")]
    kafka_brokers: String,

    /// Redis URL for idempotency and failure records: redis://[user:password@]host[:port][/db],
    /// or rediss:// for TLS. With --redis-cluster: the cluster's seed nodes, comma-separated.
    #[arg(
        long,
        env = "ACKGATE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,

    /// --redis-url names a Redis Cluster (or a managed Redis in cluster mode): commands go to
    /// the node that owns their keys' hash slot.
    #[arg(long, env = "ACKGATE_REDIS_CLUSTER", default_value_t = false)]
    redis_cluster: bool,

    #[command(flatten)]
    redis_tls: ackgate::redis_link::RedisTls,

    #[command(flatten)]
    settings: Settings,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.worker_threads {
        runtime.worker_threads(threads);
    }
    match runtime.build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Openapi => {
            println!("{}", openapi_json());
            Ok(())
        }
        Command::NewKey(args) => ackgate::auth::new_key(&args.name).map(|key| print!("{key}")),
        Command::Audit(args) => {
            return match ackgate::audit::run(args).await {
                Ok(ackgate::audit::AuditVerdict::Clean) => ExitCode::SUCCESS,
                Ok(ackgate::audit::AuditVerdict::ProblemsFound) => ExitCode::from(1),
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Serve(args) => serve(args).await,
        Command::Dev(args) => {
            match telemetry::init_tracing(args.settings.log_format, &args.settings.log_filter) {
                Ok(()) => ackgate::dev::run(args, shutdown_signal()).await,
                Err(error) => Err(error),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Secure by default: an open production gateway is an explicit choice.
    args.settings
        .auth
        .refuse_open()
        .map_err(anyhow::Error::msg)?;
    telemetry::init_tracing(args.settings.log_format, &args.settings.log_filter)?;
    let app = Application::build(Config {
        settings: args.settings,
        kafka_brokers: args.kafka_brokers,
        backend: Backend::Redis {
            url: args.redis_url,
            tls: args.redis_tls,
            cluster: args.redis_cluster,
        },
    })
    .await?;
    tracing::info!(addr = %app.local_addr(), "ackgate listening");
    app.run_until(shutdown_signal()).await
}

fn openapi_json() -> String {
    ackgate::http::ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document always serializes")
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
