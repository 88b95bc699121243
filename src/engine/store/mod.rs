//! The store: one directory holding the catalog, the diff areas and the lock that makes one
//! process its owner. The on-disk formats are described in `FORMAT.md` beside this file.

pub mod backend;
mod private;

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::engine::ids::VolumeId;

pub use private::{
    bind_private_socket, create_private_dir_all, ensure_private_directory, private_open_options,
    PRIVATE_DIRECTORY_MODE, PRIVATE_FILE_MODE,
};

pub use backend::{
    CrashMode, DurableBackend, DurableFile, FaultBackend, FileFingerprint, RealBackend,
};

/// Where each part of a store lives.
#[derive(Debug, Clone)]
pub struct StoreLayout {
    pub root: PathBuf,
}

impl StoreLayout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("store.lock")
    }

    pub fn catalog_dir(&self) -> PathBuf {
        self.root.join("catalog")
    }

    pub fn diff_root(&self) -> PathBuf {
        self.root.join("diff")
    }

    /// One directory per volume: `diff/<volume-guid>/`.
    pub fn diff_dir(&self, volume: VolumeId) -> PathBuf {
        self.diff_root().join(volume.0.hyphenated().to_string())
    }
}

/// An exclusive `flock` on the store's lock file, held for the life of the engine. The kernel
/// releases it when the process ends, however it ends, so a crash never leaves a stale lock.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// Why the store lock could not be taken.
#[derive(Debug)]
pub enum LockFailure {
    HeldElsewhere,
    Io(io::Error),
}

impl StoreLock {
    pub fn acquire(path: &Path) -> Result<StoreLock, LockFailure> {
        let file = private_open_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(LockFailure::Io)?;
        // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockFailure::HeldElsewhere);
            }
            return Err(LockFailure::Io(error));
        }
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_store_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.lock");
        let first = StoreLock::acquire(&path).expect("first lock");
        assert!(matches!(
            StoreLock::acquire(&path),
            Err(LockFailure::HeldElsewhere)
        ));
        drop(first);
        assert!(StoreLock::acquire(&path).is_ok());
    }
}
