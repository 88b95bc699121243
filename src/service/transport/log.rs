//! The service log: `<store>/service.log`, appended to, one timestamped line per event.
//!
//! The service runs detached, so this file is the only place where its life is visible: start,
//! sessions, refused frames, idle exit and stop. The start command also sends the process's
//! stderr here, so panics land in the same file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::ServiceError;

/// An append-only, timestamped log file shared by the service's threads.
#[derive(Debug)]
pub struct ServiceLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl ServiceLog {
    /// Opens (creating if needed) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<ServiceLog, ServiceError> {
        let file = crate::engine::store::private_open_options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| ServiceError::Log {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(ServiceLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// The file this log appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line: `2026-11-24T21:00:00.123Z [pid 4242] message`.
    ///
    /// Logging never fails the caller: a full disk must not stop the service from serving, so
    /// a failed write is dropped.
    pub fn write(&self, message: &str) {
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let line = format!("{timestamp} [pid {}] {message}\n", std::process::id());
        // A poisoned lock only means another thread panicked mid-write; the file is still fine.
        let mut file = match self.file.lock() {
            Ok(file) => file,
            Err(poisoned) => poisoned.into_inner(),
        };
        // One write of the whole line with O_APPEND keeps lines from interleaving.
        let _ = file.write_all(line.as_bytes());
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
}
