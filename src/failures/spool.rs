//! The local spool: where a failure record goes when its store cannot take it.
//!
//! A failure record is the last copy of an event Kafka did not take, so it must not depend on
//! Redis being up at that very moment. Records that cannot be stored are appended to a local
//! file as JSON lines and fsync'd before the client is answered; a background task imports them
//! into the store once it answers again. Importing is idempotent (a record that is already
//! stored is left as it is), so a crash mid-import loses nothing and duplicates nothing.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{FailureRecord, FailureStore};

/// A spool file, one per gateway process.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    path: Arc<PathBuf>,
    /// Appends and imports never interleave.
    lock: Arc<Mutex<()>>,
}

impl Spool {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Spool {
            path: Arc::new(path.into()),
            lock: Arc::new(Mutex::new(())),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and waits until it is on disk.
    pub(crate) async fn append(&self, record: &FailureRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = OpenOptions::new().create(true).append(true).open(&*path)?;
            file.write_all(&line)?;
            file.sync_data()
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Records waiting in the spool.
    pub(crate) async fn len(&self) -> io::Result<usize> {
        let _guard = self.lock.lock().await;
        Ok(self.read().await?.len())
    }

    /// Moves every spooled record into `store`. Returns how many were imported; records the
    /// store refused stay in the spool for the next attempt.
    pub(crate) async fn import_into(&self, store: &dyn FailureStore) -> io::Result<usize> {
        let _guard = self.lock.lock().await;
        let records = self.read().await?;
        if records.is_empty() {
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
        self.rewrite(left).await?;
        Ok(imported)
    }

    async fn read(&self) -> io::Result<Vec<FailureRecord>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let file = match fs::File::open(&*path) {
                Ok(file) => file,
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(error) => return Err(error),
            };
            let mut records = Vec::new();
            for line in BufReader::new(file).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str(&line) {
                    Ok(record) => records.push(record),
                    // A torn last line from a crash mid-append: its client got no answer.
                    Err(error) => {
                        tracing::error!(%error, line, "unreadable line in the failure spool")
                    }
                }
            }
            Ok(records)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Replaces the spool with `records` atomically (write a new file, fsync, rename).
    async fn rewrite(&self, records: Vec<FailureRecord>) -> io::Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if records.is_empty() {
                return match fs::remove_file(&*path) {
                    Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                    _ => Ok(()),
                };
            }
            let tmp = path.with_extension("tmp");
            let mut file = fs::File::create(&tmp)?;
            for record in &records {
                serde_json::to_writer(&mut file, record).map_err(io::Error::other)?;
                file.write_all(b"\n")?;
            }
            file.sync_all()?;
            fs::rename(&tmp, &*path)
        })
        .await
        .map_err(io::Error::other)?
    }
}
