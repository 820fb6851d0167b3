//! The spool's file operations, blocking: owner-only files, fsync'd file and directory, the
//! lock, and the side file for unreadable lines.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SpoolOpenError;
use crate::failures::FailureRecord;

/// Read and write for the owner only: the spool holds whole events.
const MODE: u32 = 0o600;

/// The open lock file; the OS lock is held as long as it is open.
#[derive(Debug)]
pub(super) struct Owner {
    _lock: File,
}

impl Owner {
    pub(super) fn lock(spool: &Path) -> Result<Owner, SpoolOpenError> {
        let lock = beside(spool, ".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(MODE)
            .open(&lock);
        let file = match file {
            Ok(file) => file,
            Err(error) => return Err(SpoolOpenError::Io { lock, error }),
        };
        match file.try_lock() {
            Ok(()) => Ok(Owner { _lock: file }),
            Err(TryLockError::WouldBlock) => Err(SpoolOpenError::InUse {
                spool: spool.to_owned(),
                lock,
            }),
            Err(TryLockError::Error(error)) => Err(SpoolOpenError::Io { lock, error }),
        }
    }
}

/// What a spool file holds: the records, and the lines that are none.
#[derive(Debug, Default)]
pub(super) struct Contents {
    pub(super) records: Vec<FailureRecord>,
    /// Unreadable lines, as they are (not necessarily UTF-8), without their newline.
    pub(super) corrupt: Vec<Vec<u8>>,
}

pub(super) fn read(path: &Path) -> io::Result<Contents> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Contents::default()),
        Err(error) => return Err(error),
    };
    let mut contents = Contents::default();
    for line in bytes.split(|&b| b == b'\n') {
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => contents.records.push(record),
            // A torn last line from a crash mid-append (its client got no answer), or a line
            // no gateway wrote.
            Err(error) => {
                tracing::error!(%error, line = %String::from_utf8_lossy(line),
                    "unreadable line in the failure spool; it is set aside");
                contents.corrupt.push(line.to_vec());
            }
        }
    }
    Ok(contents)
}

/// Appends `line` (ending in a newline) and syncs it.
pub(super) fn append(path: &Path, mut line: Vec<u8>) -> io::Result<()> {
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(MODE)
        .open(path)?;
    let metadata = file.metadata()?;
    // A spool an older version created readable to others.
    if metadata.permissions().mode() & 0o777 != MODE {
        file.set_permissions(fs::Permissions::from_mode(MODE))?;
    }
    // A crash mid-append leaves a last line without its newline: end it first, or this record
    // is glued onto it and set aside with it as unreadable.
    if metadata.len() > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    file.write_all(&line)?;
    file.sync_data()?;
    if created {
        sync_dir(path)?;
    }
    Ok(())
}

/// Replaces the spool with `records` atomically (write a new file, fsync, rename, fsync the
/// directory); removes it when there are none.
pub(super) fn rewrite(path: &Path, records: &[FailureRecord]) -> io::Result<()> {
    if records.is_empty() {
        match fs::remove_file(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        }
        return sync_dir(path);
    }
    let tmp = beside(path, ".tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(MODE)
        .open(&tmp)?;
    for record in records {
        serde_json::to_writer(&mut file, record).map_err(io::Error::other)?;
        file.write_all(b"\n")?;
    }
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Appends unreadable lines to `<spool>.corrupt`, synced, before they leave the spool.
pub(super) fn set_aside(path: &Path, lines: &[Vec<u8>]) -> io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut text = Vec::new();
    for line in lines {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    append(&beside(path, ".corrupt"), text)?;
    metrics::counter!("ackgate_failure_spool_corrupt_lines_total").increment(lines.len() as u64);
    Ok(())
}

/// `<path><suffix>`, e.g. `failures.spool.lock`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes a new, renamed or removed name in the directory of `path` durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
