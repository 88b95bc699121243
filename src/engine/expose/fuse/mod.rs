//! FUSE mounts of a device: DiskShadow's directory and drive-letter exposure targets, and the
//! read-write attachment of a live volume as one file.
//!
//! Two views:
//! - [`MountView::ImageFile`]: the mount point holds one file, the whole device. Read-write
//!   mounts send every write to [`BlockDevice::write_at`] and every `fsync` to
//!   [`BlockDevice::flush`], so the file can back a loop-mounted filesystem.
//! - [`MountView::Filesystem`]: when the device holds ext4 or NTFS, its files and directories,
//!   read-only; otherwise the image-file view.
//!
//! The FUSE session runs on a background thread. **Invariant:** a [`FuseMount`] is mounted for
//! exactly as long as it lives; `unmount` or drop detaches the mount (lazily, so a busy mount
//! cannot make the caller hang) and ends the session thread.

mod ext4;
mod ext4_extents;
mod ext4_journal;
mod image;
mod ntfs;
mod tree;

use std::fs::OpenOptions;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionUnmounter};
use thiserror::Error;

use super::stale;
use crate::engine::device::BlockDevice;
use crate::engine::vss::VssCode;

/// What a mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountView {
    /// One file named `file_name` holding the whole device.
    ImageFile { file_name: String },
    /// The files of the ext4 or NTFS filesystem on the device, always read-only; a device
    /// holding anything else is shown as one file named `fallback_file_name`.
    Filesystem { fallback_file_name: String },
}

/// How to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub view: MountView,
    /// Refuse every write (`EROFS`). Shadow copies are always mounted read-only; only live
    /// volumes attached as an image file are mounted read-write.
    pub read_only: bool,
    /// The source name `mount` and `/proc/self/mountinfo` show, e.g. the shadow copy ID.
    pub source_name: String,
}

impl MountOptions {
    /// A read-only view of the files on the device (or the image, when they cannot be read).
    pub fn read_only_files(source_name: &str) -> MountOptions {
        MountOptions {
            view: MountView::Filesystem {
                fallback_file_name: "volume.img".to_string(),
            },
            read_only: true,
            source_name: source_name.to_string(),
        }
    }

    /// One file holding the device.
    pub fn image_file(source_name: &str, file_name: &str, read_only: bool) -> MountOptions {
        MountOptions {
            view: MountView::ImageFile {
                file_name: file_name.to_string(),
            },
            read_only,
            source_name: source_name.to_string(),
        }
    }
}

/// The filesystem a device holds, as far as diskshadow can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesystemKind {
    Ext4,
    Ntfs,
    Unknown,
}

/// What a mount ended up showing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountedView {
    Ext4Files,
    NtfsFiles,
    ImageFile { file_name: String },
}

/// Why a mount failed.
#[derive(Debug, Error)]
pub enum MountError {
    #[error("mount point {path} does not exist")]
    MountPointMissing { path: PathBuf },
    #[error("mount point {path} is not a directory")]
    MountPointNotADirectory { path: PathBuf },
    #[error("mount point {path} is not empty (it holds {first:?}); a mount there would hide what it holds")]
    MountPointNotEmpty { path: PathBuf, first: String },
    #[error("{path} is already a mount point")]
    MountPointInUse { path: PathBuf },
    #[error("/dev/fuse cannot be opened ({source})")]
    DevFuseUnavailable {
        #[source]
        source: io::Error,
    },
    #[error("fusermount3 is not installed and this process is not root, so it cannot mount")]
    FusermountMissing,
    #[error("the file name {name:?} is not a valid single file name")]
    InvalidFileName { name: String },
    #[error("the device is read-only and cannot be mounted read-write")]
    DeviceIsReadOnly,
    #[error("the {kind:?} filesystem on the device cannot be read: {reason}")]
    UnreadableFilesystem {
        kind: FilesystemKind,
        reason: String,
    },
    #[error("mounting at {path} failed: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {path} failed: {reason}")]
    Unmount { path: PathBuf, reason: String },
}

impl MountError {
    /// The VSS failure this corresponds to.
    pub fn vss_code(&self) -> VssCode {
        match self {
            MountError::MountPointMissing { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            MountError::MountPointInUse { .. } | MountError::MountPointNotEmpty { .. } => {
                VssCode::VSS_E_OBJECT_ALREADY_EXISTS
            }
            MountError::MountPointNotADirectory { .. }
            | MountError::InvalidFileName { .. }
            | MountError::DeviceIsReadOnly
            | MountError::DevFuseUnavailable { .. }
            | MountError::FusermountMissing => VssCode::VSS_E_NOT_SUPPORTED,
            MountError::UnreadableFilesystem { .. } => VssCode::VSS_E_VOLUME_NOT_SUPPORTED,
            MountError::Mount { .. } | MountError::Unmount { .. } => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

/// A mounted device. Dropping it unmounts, as [`FuseMount::unmount`] does.
pub struct FuseMount {
    mountpoint: PathBuf,
    view: MountedView,
    unmounter: Option<SessionUnmounter>,
    session_thread: Option<JoinHandle<io::Result<()>>>,
}

/// How long unmounting waits for the session thread. A lazily detached mount that a process still
/// uses (an open file, a loop device) keeps the session alive until that use ends; the thread is
/// then left to finish by itself rather than blocking the caller.
const SESSION_END_WAIT: Duration = Duration::from_secs(5);

impl FuseMount {
    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What it shows.
    pub fn view(&self) -> &MountedView {
        &self.view
    }

    /// Unmounts and ends the session.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> Result<(), MountError> {
        let Some(mut unmounter) = self.unmounter.take() else {
            return Ok(());
        };
        // A plain unmount fails with EBUSY while a file under the mount is open; detaching
        // lazily then takes the mount out of the namespace at once, and the kernel ends the
        // session when the last user lets go.
        let (result, detached_while_busy) = match unmounter.unmount() {
            Ok(()) => (Ok(()), false),
            Err(_) => {
                let detached =
                    stale::lazy_unmount(&self.mountpoint).map_err(|reason| MountError::Unmount {
                        path: self.mountpoint.clone(),
                        reason,
                    });
                (detached, true)
            }
        };
        // A busy mount's session lives on until its last user lets go: do not wait for it.
        if let Some(thread) = self.session_thread.take().filter(|_| !detached_while_busy) {
            let deadline = Instant::now() + SESSION_END_WAIT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                // The session's own result (an error reading /dev/fuse at the end) changes
                // nothing: the mount is gone.
                let _ = thread.join();
            }
        }
        result
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        // Drop cannot report; `unmount` is there for callers who want the error.
        let _ = self.unmount_now();
    }
}

impl std::fmt::Debug for FuseMount {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FuseMount")
            .field("mountpoint", &self.mountpoint)
            .field("view", &self.view)
            .finish()
    }
}

/// Looks at the first sectors of the device for an ext4 or NTFS signature.
pub fn detect_filesystem(device: &dyn BlockDevice) -> FilesystemKind {
    let mut boot = [0u8; 2048];
    if device.size() < boot.len() as u64 || device.read_at(0, &mut boot).is_err() {
        return FilesystemKind::Unknown;
    }
    if &boot[3..11] == b"NTFS    " && boot[510] == 0x55 && boot[511] == 0xAA {
        return FilesystemKind::Ntfs;
    }
    // The ext2/3/4 superblock starts at byte 1024; its magic is at offset 56. ext4-view reads
    // ext2 and ext3 too, so all three are shown.
    if boot[1024 + 56] == 0x53 && boot[1024 + 57] == 0xEF {
        return FilesystemKind::Ext4;
    }
    FilesystemKind::Unknown
}

/// Mounts `device` at `mountpoint` and serves it on a background thread.
pub fn mount(
    device: Arc<dyn BlockDevice>,
    mountpoint: &Path,
    options: MountOptions,
) -> Result<FuseMount, MountError> {
    check_mountpoint(mountpoint)?;
    check_fuse_available()?;
    if !options.read_only && device.is_read_only() {
        return Err(MountError::DeviceIsReadOnly);
    }

    let mut mount_options = vec![
        MountOption::FSName(sanitize_source_name(&options.source_name)),
        MountOption::Subtype("diskshadow".to_string()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    let mut config = Config::default();

    match &options.view {
        MountView::ImageFile { file_name } => {
            let view = MountedView::ImageFile {
                file_name: file_name.clone(),
            };
            let filesystem = image::ImageFileSystem::new(device, file_name, options.read_only)?;
            push_access_options(&mut mount_options, options.read_only);
            config.mount_options = mount_options;
            start_session(filesystem, mountpoint, &config, view)
        }
        MountView::Filesystem { fallback_file_name } => {
            let kind = detect_filesystem(device.as_ref());
            let read_only_tree = |mut mount_options: Vec<MountOption>| {
                mount_options.push(MountOption::RO);
                // The kernel checks the modes shown, so the view enforces the volume's own
                // permissions for every user but root.
                mount_options.push(MountOption::DefaultPermissions);
                mount_options
            };
            match kind {
                FilesystemKind::Ext4 => {
                    let filesystem =
                        tree::TreeFileSystem::start(move || ext4::Ext4Source::load(device))
                            .map_err(|reason| MountError::UnreadableFilesystem { kind, reason })?;
                    config.mount_options = read_only_tree(mount_options);
                    start_session(filesystem, mountpoint, &config, MountedView::Ext4Files)
                }
                FilesystemKind::Ntfs => {
                    let filesystem =
                        tree::TreeFileSystem::start(move || ntfs::NtfsSource::load(device))
                            .map_err(|reason| MountError::UnreadableFilesystem { kind, reason })?;
                    config.mount_options = read_only_tree(mount_options);
                    start_session(filesystem, mountpoint, &config, MountedView::NtfsFiles)
                }
                FilesystemKind::Unknown => {
                    let view = MountedView::ImageFile {
                        file_name: fallback_file_name.clone(),
                    };
                    let filesystem =
                        image::ImageFileSystem::new(device, fallback_file_name, options.read_only)?;
                    push_access_options(&mut mount_options, options.read_only);
                    config.mount_options = mount_options;
                    start_session(filesystem, mountpoint, &config, view)
                }
            }
        }
    }
}

fn push_access_options(mount_options: &mut Vec<MountOption>, read_only: bool) {
    mount_options.push(if read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
}

/// Mount options are comma-separated: a source name must not smuggle in options.
fn sanitize_source_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|character| {
            if character == ',' || character.is_whitespace() || character == '\\' {
                '_'
            } else {
                character
            }
        })
        .collect();
    if cleaned.is_empty() {
        "diskshadow".to_string()
    } else {
        cleaned
    }
}

fn start_session<FS: fuser::Filesystem>(
    filesystem: FS,
    mountpoint: &Path,
    config: &Config,
    view: MountedView,
) -> Result<FuseMount, MountError> {
    let mount_error = |source| MountError::Mount {
        path: mountpoint.to_path_buf(),
        source,
    };
    let mut session = Session::new(filesystem, mountpoint, config).map_err(mount_error)?;
    let unmounter = session.unmount_callable();
    let session_thread = std::thread::Builder::new()
        .name("diskshadow-fuse".to_string())
        .spawn(move || session.run())
        .map_err(mount_error)?;
    Ok(FuseMount {
        mountpoint: mountpoint.to_path_buf(),
        view,
        unmounter: Some(unmounter),
        session_thread: Some(session_thread),
    })
}

fn check_mountpoint(mountpoint: &Path) -> Result<(), MountError> {
    // A dead FUSE mount answers ENOTCONN to stat; that is a mount point in use, not a missing one.
    if stale::is_mount_point(mountpoint) {
        return Err(MountError::MountPointInUse {
            path: mountpoint.to_path_buf(),
        });
    }
    match std::fs::metadata(mountpoint) {
        Ok(metadata) if metadata.is_dir() => {
            let entries = std::fs::read_dir(mountpoint).map_err(|source| MountError::Mount {
                path: mountpoint.to_path_buf(),
                source,
            })?;
            match entries.flatten().next() {
                Some(entry) => Err(MountError::MountPointNotEmpty {
                    path: mountpoint.to_path_buf(),
                    first: entry.file_name().to_string_lossy().to_string(),
                }),
                None => Ok(()),
            }
        }
        Ok(_) => Err(MountError::MountPointNotADirectory {
            path: mountpoint.to_path_buf(),
        }),
        Err(error) if error.kind() == ErrorKind::NotFound => Err(MountError::MountPointMissing {
            path: mountpoint.to_path_buf(),
        }),
        Err(source) => Err(MountError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        }),
    }
}

fn check_fuse_available() -> Result<(), MountError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|source| MountError::DevFuseUnavailable { source })?;
    // Root mounts directly; everyone else needs the setuid helper.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root && !fusermount_installed() {
        return Err(MountError::FusermountMissing);
    }
    Ok(())
}

/// True when `fusermount3` can be started (found on the search path).
pub(crate) fn fusermount_installed() -> bool {
    match Command::new("fusermount3").arg("-V").output() {
        Ok(_) => true,
        Err(error) => error.kind() != ErrorKind::NotFound,
    }
}

/// A single path component, not `.` or `..`, without `/` or NUL.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_must_be_single_components() {
        assert!(valid_file_name("volume.img"));
        assert!(!valid_file_name("a/b"));
        assert!(!valid_file_name(".."));
        assert!(!valid_file_name(""));
    }

    #[test]
    fn source_names_cannot_inject_mount_options() {
        assert_eq!(
            sanitize_source_name("{abc},allow_other"),
            "{abc}_allow_other"
        );
        assert_eq!(sanitize_source_name(""), "diskshadow");
    }
}
