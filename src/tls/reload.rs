//! The server configuration in use, and how it is replaced without a restart.
//!
//! Each accepted connection takes the configuration current at that moment, so a reload
//! changes what new connections see and leaves open ones as they are. A reload happens when
//! the files' modification times or sizes change (polled) and on demand ([`ServerTls::reload`],
//! on SIGHUP). New files that cannot be used leave the old configuration serving: a
//! half-written renewal must not take the listener down.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::{ListenerTls, Loaded};

/// How often the files are checked for changes.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// What a file looked like when it was last read: modification time and size (`None` when it
/// could not be read).
type Stamp = Option<(SystemTime, u64)>;

/// The HTTPS listener's configuration, replaceable while the listener runs.
pub struct ServerTls {
    files: ListenerTls,
    current: ArcSwap<ServerConfig>,
    /// The certificate's notAfter (Unix seconds), for the expiry gauge.
    not_after: std::sync::atomic::AtomicI64,
    /// The files' stamps at the last (re)load; held while reloading, so two reloads (the poll
    /// and a signal) do not interleave.
    seen: Mutex<Vec<Stamp>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files at start-up; `None` when HTTPS is off. An error is one line naming the
    /// flag and the file.
    pub(crate) fn load(files: &ListenerTls) -> Result<Option<Arc<ServerTls>>, String> {
        let seen = stamps(files);
        let Some(Loaded { config, not_after }) = files.server_config()? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(ServerTls {
            files: files.clone(),
            current: ArcSwap::new(config),
            not_after: not_after.into(),
            seen: Mutex::new(seen),
        })))
    }

    /// The acceptor for one new connection, with the configuration current now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Reads the files again and, if they can be used, serves new connections with them;
    /// otherwise keeps the current configuration. Logs and counts the outcome
    /// (`ackgate_tls_reloads_total`); the error names the flag, the file and the problem.
    pub fn reload(&self) -> Result<(), String> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Stamped before reading: a file written in between is read again at the next poll.
        *seen = stamps(&self.files);
        match self.files.server_config() {
            Ok(Some(Loaded { config, not_after })) => {
                self.current.store(config);
                self.not_after
                    .store(not_after, std::sync::atomic::Ordering::Relaxed);
                self.publish_expiry();
                metrics::counter!("ackgate_tls_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(
                    not_after = %format_time(not_after),
                    "TLS certificate reloaded; new connections use it"
                );
                Ok(())
            }
            Ok(None) => unreachable!("the certificate and key flags were set at start-up"),
            Err(reason) => {
                metrics::counter!("ackgate_tls_reloads_total", "outcome" => "failed").increment(1);
                tracing::warn!(
                    "TLS certificate not reloaded, the previous one stays in use: {reason}"
                );
                Err(reason)
            }
        }
    }

    /// Sets `ackgate_tls_certificate_expiry_seconds`, then reloads whenever a file's stamp
    /// changes, checking every `every`. Runs until aborted.
    pub(crate) async fn watch(self: Arc<Self>, every: Duration) {
        self.publish_expiry();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let changed = {
                let seen = self
                    .seen
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *seen != stamps(&self.files)
            };
            if changed {
                // The outcome is logged and counted by `reload`.
                let _ = self.reload();
            }
        }
    }

    fn publish_expiry(&self) {
        let not_after = self.not_after.load(std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("ackgate_tls_certificate_expiry_seconds").set(not_after as f64);
    }
}

fn stamps(files: &ListenerTls) -> Vec<Stamp> {
    files.files().map(stamp).collect()
}

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// `not_after` as RFC 3339, for the log line.
fn format_time(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_seconds.to_string())
}
