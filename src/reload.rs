//! `SIGHUP`: read the reloadable files again — the auth file and the JWKS file, and the HTTPS
//! listener's certificate and key.
//!
//! A file that does not load leaves what is in force: the old clients, keys or certificate keep
//! serving, and a warning names the file and the problem. Requests in progress keep the
//! principal they were given; open connections keep their certificate.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::auth::Access;
use crate::tls::ServerTls;

/// Spawns the task that reloads on each SIGHUP. The handler is installed before this returns:
/// from then on a SIGHUP no longer ends the process.
pub(crate) fn on_sighup(access: Arc<Access>, tls: Option<Arc<ServerTls>>) -> JoinHandle<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let hangups = signal(SignalKind::hangup());
        tokio::spawn(async move {
            let mut hangups = match hangups {
                Ok(hangups) => hangups,
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "cannot listen for SIGHUP: the auth files are not reloadable (the \
                         certificate still is, when its files change)"
                    );
                    return;
                }
            };
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading files");
                reload_access(&access);
                if let Some(tls) = &tls {
                    // `reload` logs and counts its own outcome.
                    let _ = tls.reload();
                }
            }
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (access, tls);
        tokio::spawn(std::future::pending::<()>())
    }
}

fn reload_access(access: &Access) {
    match access.reload() {
        Ok(()) => {
            metrics::counter!("ackgate_auth_reloads_total", "outcome" => "ok").increment(1);
            metrics::gauge!("ackgate_auth_reload_failing").set(0.0);
            tracing::info!("auth settings reloaded");
        }
        Err(error) => {
            metrics::counter!("ackgate_auth_reloads_total", "outcome" => "failed").increment(1);
            metrics::gauge!("ackgate_auth_reload_failing").set(1.0);
            tracing::warn!(%error, "auth settings not reloaded; the old ones stay in force");
        }
    }
}
