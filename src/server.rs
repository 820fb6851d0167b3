//! The HTTP server loop: accept, cap, time out, drain.
//!
//! `axum::serve` has no knobs for slow or abusive clients, so connections are served with
//! hyper-util directly (as in axum's `serve-with-hyper` example), which adds:
//! - a cap on open connections: past it, new connections wait in the kernel's accept backlog
//!   instead of costing memory here;
//! - a header read timeout: a client that trickles its request head (slowloris) is cut off
//!   instead of holding a connection forever;
//! - a maximum request-head size;
//! - HTTPS (rustls) when a certificate is configured: the handshake runs in the connection's
//!   own task, bounded by the header read timeout, so a slow or failed handshake never holds up
//!   the accept loop; a verified client certificate's names go with each of its requests.
//!
//! The body read timeout and the in-flight request cap live with the routes (`http`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::middleware::AddExtension;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::Layer;
use tower::util::Either;

use crate::tls::{ClientCertificate, ServerTls};

/// What serves one connection: the router, with the client certificate's names on every
/// request when there is one.
type ConnectionService = Either<AddExtension<Router, ClientCertificate>, Router>;

/// Limits on what one client can hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` resolves, then stops
/// accepting and waits up to `grace` for open connections to finish their requests. Returns
/// whether they all did.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ServerTls>>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> bool {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => {
                permit.expect("the semaphore is never closed")
            }
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Watched from now: a shutdown waits for a handshake in progress, and stops the
        // connection as soon as it begins.
        let watcher = graceful.watcher();
        let (builder, router, tls) = (builder.clone(), router.clone(), tls.clone());
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let served = match tls {
                None => serve_connection(&builder, stream, Either::Right(router), watcher).await,
                Some(tls) => match handshake(&tls, stream, router, handshake_timeout).await {
                    Some((stream, service)) => {
                        serve_connection(&builder, stream, service, watcher).await
                    }
                    None => Ok(()),
                },
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }

    tracing::info!(addr = ?listener.local_addr().ok(), "shutdown requested; draining open connections");
    drop(listener);
    tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok()
}

/// The TLS handshake of one connection, and the service for its requests. `None` when the
/// handshake failed or took longer than `timeout`: logged at debug level and counted, since a
/// port scanner or a client with the wrong CA is no fault of the gateway's.
async fn handshake(
    tls: &ServerTls,
    stream: TcpStream,
    router: Router,
    timeout: Duration,
) -> Option<(
    tokio_rustls::server::TlsStream<TcpStream>,
    ConnectionService,
)> {
    let peer = stream.peer_addr().ok();
    let failed = |reason: &dyn std::fmt::Display| {
        tracing::debug!(?peer, %reason, "TLS handshake failed");
        metrics::counter!("ackgate_tls_handshake_failures_total").increment(1);
    };
    let stream = match tokio::time::timeout(timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            failed(&error);
            return None;
        }
        Err(_) => {
            failed(&"timed out");
            return None;
        }
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[_]>::first)
        .and_then(|der| ClientCertificate::from_der(der));
    let service = match certificate {
        Some(certificate) => Either::Left(Extension(certificate).layer(router)),
        None => Either::Right(router),
    };
    Some((stream, service))
}

/// Serves the requests of one connection until it closes or a graceful shutdown ends it.
async fn serve_connection<S>(
    builder: &Builder<TokioExecutor>,
    stream: S,
    service: ConnectionService,
    watcher: Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
        .into_owned();
    watcher.watch(connection).await
}
