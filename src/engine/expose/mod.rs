//! Exposure: serving a [`BlockDevice`](crate::engine::device::BlockDevice) to the rest of the system.
//!
//! - [`nbd`]: an NBD server on a Unix socket or loopback TCP port (DiskShadow's "share" target),
//!   read-only for shadow copies, read-write for attached live volumes.
//! - [`fuse`]: a FUSE mount (DiskShadow's directory and drive-letter targets) showing either the
//!   files of the ext4 or NTFS filesystem the device holds, or one file holding the whole device.
//! - [`stale`]: cleaning up mounts and sockets left behind by a service that crashed.
//!
//! Everything here serves an `Arc<dyn BlockDevice>` and knows nothing about shadows, providers or
//! the store: the service decides what to expose and keeps the handles alive.
//!
//! **Architecture Invariant:** a handle returned here ([`nbd::NbdExport`], [`fuse::FuseMount`])
//! owns the exposure; dropping it takes the exposure down completely (no listener, no mount, no
//! socket file, no thread left behind).

mod file_device;
pub mod fuse;
pub mod nbd;
pub mod stale;

pub use file_device::FileDevice;
pub use fuse::{
    detect_filesystem, mount, FilesystemKind, FuseMount, MountError, MountOptions, MountView,
    MountedView,
};
pub use nbd::{serve_nbd, NbdError, NbdExport, NbdListener};
pub use stale::{cleanup_stale, StaleCleanup};
