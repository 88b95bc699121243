//! File-system flush-and-hold: the Linux counterpart of `IOCTL_VOLSNAP_FLUSH_AND_HOLD_WRITES`.
//! `FIFREEZE` flushes a mounted file system and blocks new writes until `FITHAW`.
//!
//! **Invariant:** every file system frozen here is thawed when the [`HeldFileSystems`] value is
//! dropped, whatever path the caller takes (error, early return, panic in the commit).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `_IOWR('X', 119, int)`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
/// `_IOWR('X', 120, int)`.
const FITHAW: libc::c_ulong = 0xC004_5878;

/// A file system that could not be frozen.
#[derive(Debug, thiserror::Error)]
#[error("cannot flush and hold writes on {}: {source}", mount_point.display())]
pub struct FlushAndHoldError {
    pub mount_point: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// File systems whose writes are held; thawed on drop.
#[derive(Debug, Default)]
pub struct HeldFileSystems {
    held: Vec<(PathBuf, File)>,
}

impl HeldFileSystems {
    /// Freezes each mount point in order. If one fails, the ones already frozen are thawed
    /// before the error is returned.
    pub fn freeze(mount_points: &[PathBuf]) -> Result<Self, FlushAndHoldError> {
        let mut held = Self::default();
        for mount_point in mount_points {
            // Freezing a path that is not a mount point would freeze whatever file system holds
            // it (possibly the root, and the service with it); only mount points are accepted.
            if !is_mount_point(mount_point) {
                return Err(FlushAndHoldError {
                    mount_point: mount_point.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "it is not the mount point of a file system",
                    ),
                });
            }
            let file = File::open(mount_point).map_err(|source| FlushAndHoldError {
                mount_point: mount_point.clone(),
                source,
            })?;
            ioctl(&file, FIFREEZE).map_err(|source| FlushAndHoldError {
                mount_point: mount_point.clone(),
                source,
            })?;
            held.held.push((mount_point.clone(), file));
        }
        Ok(held)
    }

    pub fn mount_points(&self) -> impl Iterator<Item = &Path> {
        self.held.iter().map(|(path, _)| path.as_path())
    }

    /// Thaws every held file system now. Errors are ignored: a file system that cannot be
    /// thawed was thawed already (or unmounted), and nothing else can be done here.
    pub fn release(mut self) {
        self.thaw_all();
    }

    fn thaw_all(&mut self) {
        for (_, file) in self.held.drain(..).rev() {
            let _ = ioctl(&file, FITHAW);
        }
    }
}

impl Drop for HeldFileSystems {
    fn drop(&mut self) {
        self.thaw_all();
    }
}

/// A directory is a mount point when its device differs from its parent's (or it is `/`).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(canonical) = path.canonicalize() else {
        return false;
    };
    let Some(parent) = canonical.parent() else {
        return true;
    };
    match (std::fs::metadata(&canonical), std::fs::metadata(parent)) {
        (Ok(own), Ok(parents)) => {
            own.is_dir() && (own.dev() != parents.dev() || own.ino() == parents.ino())
        }
        _ => false,
    }
}

fn ioctl(file: &File, request: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: FIFREEZE and FITHAW take an integer argument that the kernel ignores; the file
    // descriptor is valid for the duration of the call because `file` is borrowed.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), request as _, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_mount_points_hold_nothing() {
        let held = HeldFileSystems::freeze(&[]).expect("nothing to freeze");
        assert_eq!(held.mount_points().count(), 0);
        held.release();
    }

    #[test]
    fn a_directory_that_is_not_a_mount_point_is_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        let inner = directory.path().join("inner");
        std::fs::create_dir(&inner).expect("mkdir");
        let error = HeldFileSystems::freeze(&[inner]).expect_err("not a mount point");
        assert!(error.to_string().contains("not the mount point"), "{error}");
    }

    #[test]
    fn a_missing_mount_point_is_a_clear_error() {
        let error = HeldFileSystems::freeze(&[PathBuf::from("/nonexistent/mount/point")])
            .expect_err("missing");
        assert!(
            error.to_string().contains("/nonexistent/mount/point"),
            "{error}"
        );
    }
}
