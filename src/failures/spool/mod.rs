//! The local spool: where a failure record goes when its store cannot take it.
//!
//! A failure record is the last copy of an event Kafka did not take, so it must not depend on
//! Redis being up at that very moment. Records that cannot be stored are appended to a local
//! file as JSON lines and fsync'd before the client is answered; a background task imports them
//! into the store once it answers again. Importing is idempotent (a record that is already
//! stored is left as it is), so a crash mid-import loses nothing and duplicates nothing.
//!
//! The file holds whole events, so only its owner may read it (mode 0600). A new file and a
//! rename are made durable by an fsync of the directory too: without it, a machine crash can
//! lose the file's name even though its content was synced. One process owns a spool: an OS
//! lock on `<spool>.lock` stops a second one at start-up, since two importers rewriting one
//! file would lose each other's appends. A line that cannot be read is never dropped: it is
//! moved to `<spool>.corrupt` for an operator, and counted.

mod file;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use self::file::{Contents, Owner};
use super::{FailureRecord, FailureStore};

/// A second process wants a spool that is taken, or its lock file cannot be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolOpenError {
    #[error(
        "the failure spool {} is in use by another process (it holds {}); give each gateway \
         process its own --failure-spool-path",
        .spool.display(), .lock.display()
    )]
    InUse { spool: PathBuf, lock: PathBuf },
    #[error("could not open the lock file {} of the failure spool: {error}", .lock.display())]
    Io { lock: PathBuf, error: io::Error },
}

/// A spool file, one per gateway process.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    path: Arc<PathBuf>,
    /// Appends and imports never interleave. Holds the OS lock until [`Spool::close`].
    owner: Arc<Mutex<Option<Owner>>>,
}

impl Spool {
    /// Takes the spool at `path` for this process.
    pub(crate) fn open(path: impl Into<PathBuf>) -> Result<Self, SpoolOpenError> {
        let path = path.into();
        let owner = Owner::lock(&path)?;
        Ok(Spool {
            path: Arc::new(path),
            owner: Arc::new(Mutex::new(Some(owner))),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Lets the spool go (at exit): another process may take it, and this one writes no more.
    pub(crate) async fn close(&self) {
        self.owner.lock().await.take();
    }

    /// Appends one record and waits until it is on disk.
    pub(crate) async fn append(&self, record: &FailureRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let owner = self.owner.lock().await;
        owned(&owner)?;
        let path = self.path.clone();
        blocking(move || file::append(&path, line)).await
    }

    /// Records waiting in the spool.
    pub(crate) async fn len(&self) -> io::Result<usize> {
        let _owner = self.owner.lock().await;
        Ok(self.read().await?.records.len())
    }

    /// Moves every spooled record into `store`. Returns how many were imported; records the
    /// store refused stay in the spool for the next attempt, and unreadable lines are set
    /// aside in `<spool>.corrupt`.
    pub(crate) async fn import_into(&self, store: &dyn FailureStore) -> io::Result<usize> {
        let owner = self.owner.lock().await;
        owned(&owner)?;
        let Contents { records, corrupt } = self.read().await?;
        if records.is_empty() && corrupt.is_empty() {
            return Ok(0);
        }
        let mut imported = 0;
        let mut left = Vec::new();
        for record in records {
            if left.is_empty() && store.insert(&record).await.is_ok() {
                imported += 1;
            } else {
                left.push(record);
            }
        }
        let path = self.path.clone();
        blocking(move || {
            // Set aside before the rewrite drops them from the spool.
            file::set_aside(&path, &corrupt)?;
            file::rewrite(&path, &left)
        })
        .await?;
        Ok(imported)
    }

    async fn read(&self) -> io::Result<Contents> {
        let path = self.path.clone();
        blocking(move || file::read(&path)).await
    }
}

fn owned(owner: &Option<Owner>) -> io::Result<()> {
    match owner {
        Some(_) => Ok(()),
        None => Err(io::Error::other("the failure spool was closed at shutdown")),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}
