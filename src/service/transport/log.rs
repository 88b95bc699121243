//! The service log: `<store>/service.log`, appended to, one timestamped line per event.
//!
//! The service runs detached, so this file is the only place where its life is visible: start,
//! sessions, refused frames, idle exit and stop. The start command also sends the process's
//! stderr here, so panics land in the same file.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::TransportError;

/// The size past which the log is rotated: `service.log` becomes `service.log.1` (replacing
/// the previous one) and a new `service.log` is started, so a storm of events costs at most
/// twice this much disk.
pub const DEFAULT_LOG_LIMIT_BYTES: u64 = 1 << 20;

/// An append-only, timestamped log file shared by the service's threads, rotated by size.
#[derive(Debug)]
pub struct ServiceLog {
    path: PathBuf,
    limit_bytes: u64,
    file: Mutex<File>,
}

fn open_for_append(path: &Path) -> Result<File, TransportError> {
    crate::engine::store::private_open_options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| TransportError::Log {
            path: path.to_path_buf(),
            source,
        })
}

impl ServiceLog {
    /// Opens (creating it 0600 if needed) the log at `path` for appending, rotated at
    /// `DEFAULT_LOG_LIMIT_BYTES`.
    pub fn open(path: &Path) -> Result<ServiceLog, TransportError> {
        ServiceLog::open_with_limit(path, DEFAULT_LOG_LIMIT_BYTES)
    }

    /// Like [`ServiceLog::open`], rotating once the file would grow past `limit_bytes`.
    pub fn open_with_limit(path: &Path, limit_bytes: u64) -> Result<ServiceLog, TransportError> {
        Ok(ServiceLog {
            path: path.to_path_buf(),
            limit_bytes,
            file: Mutex::new(open_for_append(path)?),
        })
    }

    /// The file this log appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The previous log, kept by rotation: `service.log.1`.
    pub fn previous_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Appends one line: `2026-11-24T21:00:00.123Z [pid 4242] message`.
    ///
    /// Logging never fails the caller: a full disk must not stop the service from serving, so
    /// a failed write (or rotation) is dropped.
    pub fn write(&self, message: &str) {
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let line = format!("{timestamp} [pid {}] {message}\n", std::process::id());
        // A poisoned lock only means another thread panicked mid-write; the file is still fine.
        let mut file = match self.file.lock() {
            Ok(file) => file,
            Err(poisoned) => poisoned.into_inner(),
        };
        let size = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
        if size > 0 && size + line.len() as u64 > self.limit_bytes {
            self.rotate(&mut file);
        }
        // One write of the whole line with O_APPEND keeps lines from interleaving.
        let _ = file.write_all(line.as_bytes());
    }

    /// Moves the full log to `service.log.1` and starts a new one. The service's stderr, which
    /// the start command pointed at the log (for panics), follows to the new file.
    fn rotate(&self, file: &mut File) {
        if std::fs::rename(&self.path, self.previous_path()).is_err() {
            return;
        }
        let Ok(fresh) = open_for_append(&self.path) else {
            return;
        };
        let old = std::mem::replace(file, fresh);
        if same_file(&old, 2) {
            // SAFETY: dup2 onto stderr from a descriptor we own; stderr stays open throughout.
            unsafe { libc::dup2(file.as_raw_fd(), 2) };
        }
    }
}

/// True when descriptor `descriptor` is open on the same file as `file`.
fn same_file(file: &File, descriptor: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(metadata) = file.metadata() else {
        return false;
    };
    // SAFETY: an all-zero stat is a valid value; fstat fills it or fails.
    let mut status: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `status` is live and sized for fstat.
    if unsafe { libc::fstat(descriptor, &mut status) } != 0 {
        return false;
    }
    status.st_dev as u64 == metadata.dev() && status.st_ino as u64 == metadata.ino()
}

/// Each shadow the engine deletes to fit a diff-area limit is a line of the log.
impl crate::engine::deletions::DeletionSink for ServiceLog {
    fn deleted(&self, event: &crate::engine::deletions::DiffAreaDeletion) {
        self.write(&event.describe());
    }
}

/// Writes to the log when there is one.
pub(crate) fn log_to(log: &Option<std::sync::Arc<ServiceLog>>, message: &str) {
    if let Some(log) = log {
        log.write(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_with_timestamps() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("service.log");
        ServiceLog::open(&path).unwrap().write("first");
        ServiceLog::open(&path).unwrap().write("second");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with("] first"), "{text}");
        assert!(lines[1].ends_with("] second"), "{text}");
        assert!(lines[0].starts_with("20"), "{text}");
    }

    #[test]
    fn the_log_is_private_and_rotated_past_its_limit() {
        use std::os::unix::fs::MetadataExt;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("service.log");
        let log = ServiceLog::open_with_limit(&path, 4096).unwrap();
        for index in 0..200 {
            log.write(&format!("event {index} of a storm"));
        }
        let current = std::fs::metadata(&path).unwrap();
        let previous = std::fs::metadata(log.previous_path()).unwrap();
        assert!(current.len() <= 4096, "{}", current.len());
        assert!(previous.len() <= 4096, "{}", previous.len());
        assert_eq!(current.mode() & 0o777, 0o600);
        assert_eq!(previous.mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("] event 199 of a storm\n"), "{text}");
        let earlier = std::fs::read_to_string(log.previous_path()).unwrap();
        assert!(!earlier.contains("event 199 "), "{earlier}");
        // Only one previous file is kept.
        assert!(!directory.path().join("service.log.2").exists());
        assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 2);
    }
}
