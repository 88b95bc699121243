//! Ceph RBD through `librbd`, loaded at run time: clusters, pools, images, snapshots, groups.
//!
//! diskshadow builds and runs without Ceph. The first use of this module loads
//! `librados.so.2` and `librbd.so.1` ([`Ceph::load`]); where they are missing, every
//! operation fails with [`RbdError::NotInstalled`], which says which package to install.
//!
//! The API is a thin, safe layer over the C one: a [`Cluster`] is one connection
//! (`rados_t`), a [`Pool`] one I/O context in it, an [`Image`] one open image (live, or
//! read-only at a snapshot). All three may be shared between threads, as librados and librbd
//! allow. Every error carries librbd's errno and says what was being done, naming the pool,
//! image, snapshot or group.
//!
//! ## Groups and group snapshots (as found on Ceph 16)
//!
//! - An image belongs to at most one group: adding it to a second one fails with `EEXIST`.
//! - A group snapshot (`rbd_group_snap_create`) makes one snapshot in each member image,
//!   atomically across them (the images' I/O is quiesced while the snapshots are taken).
//!   Those snapshots live in the *group* snapshot namespace of each image, under a generated
//!   name (`.group.<pool>_<group id>_<group snapshot id>`), so they are found and read by
//!   snapshot ID: [`Pool::group_snapshot_members`] maps a group snapshot to each member's
//!   snapshot ID through `rbd_snap_list` and `rbd_snap_get_group_namespace`, and
//!   [`Pool::open_at_snap_id`] opens an image at one of them.
//! - Removing an image from the group keeps its group-namespace snapshots in the image: they
//!   can still be read by ID, and [`Image::group_snap_id`] still finds them. The group
//!   snapshot stays complete and still records that image's snapshot (by image ID), but the
//!   group no longer lists the image, so [`Pool::group_snapshot_members`] no longer reports
//!   it: whoever needs every member of a group snapshot after a membership change must keep
//!   the image names (and snapshot IDs) itself. Removing the group snapshot afterwards still
//!   removes the departed image's snapshot too. (Checked by `tests/rbd_lib.rs`,
//!   `image_removed_from_group_keeps_its_group_snapshot`.)
//! - Removing a group snapshot removes its snapshot from every member image; removing a group
//!   that still has snapshots removes them with it.

mod cluster;
mod ffi;
pub mod file;
mod image;
mod pool;
pub mod provider;

pub use cluster::{use_library_files, Ceph, Cluster, CONNECT_TIMEOUT};
pub use image::{Extent, Image, SnapNamespace, Snapshot};
pub use pool::{GroupImage, GroupSnapshot, GroupSnapshotMember, Pool};
pub use provider::{RbdProvider, RBD_PROVIDER_ID, RBD_PROVIDER_NAME};

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::progress::Progress;
use crate::engine::vss::VssCode;

/// The file name `librbd` is loaded by.
pub const LIBRBD: &str = "librbd.so.1";
/// The file name `librados` is loaded by.
pub const LIBRADOS: &str = "librados.so.2";

/// Image feature bits (`rbd/features.h`).
pub mod features {
    pub const LAYERING: u64 = 1 << 0;
    pub const STRIPINGV2: u64 = 1 << 1;
    pub const EXCLUSIVE_LOCK: u64 = 1 << 2;
    pub const OBJECT_MAP: u64 = 1 << 3;
    pub const FAST_DIFF: u64 = 1 << 4;
    pub const DEEP_FLATTEN: u64 = 1 << 5;
    pub const JOURNALING: u64 = 1 << 6;
    pub const DATA_POOL: u64 = 1 << 7;
    pub const OPERATIONS: u64 = 1 << 8;

    /// What `rbd create` gives by default on Ceph 16.
    pub const DEFAULT: u64 = LAYERING | EXCLUSIVE_LOCK | OBJECT_MAP | FAST_DIFF | DEEP_FLATTEN;

    /// The names of the bits set in `bits`, as `rbd info` spells them.
    pub fn names(bits: u64) -> Vec<&'static str> {
        [
            (LAYERING, "layering"),
            (STRIPINGV2, "striping"),
            (EXCLUSIVE_LOCK, "exclusive-lock"),
            (OBJECT_MAP, "object-map"),
            (FAST_DIFF, "fast-diff"),
            (DEEP_FLATTEN, "deep-flatten"),
            (JOURNALING, "journaling"),
            (DATA_POOL, "data-pool"),
            (OPERATIONS, "operations"),
        ]
        .into_iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| name)
        .collect()
    }
}

/// Why an RBD operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RbdError {
    #[error("{library} is not installed ({file} not found)")]
    NotInstalled {
        library: &'static str,
        file: String,
        package: &'static str,
    },
    #[error("{file} is not a usable {library}: {detail}")]
    Incompatible {
        library: &'static str,
        file: String,
        detail: String,
    },
    #[error("the Ceph configuration {} cannot be read: {}", conf.display(), describe(*errno))]
    Config { conf: PathBuf, errno: i32 },
    #[error(
        "cannot reach the Ceph cluster of {} within {} s: {}",
        conf.display(),
        timeout.as_secs_f64(),
        describe(*errno)
    )]
    Unreachable {
        conf: PathBuf,
        timeout: Duration,
        errno: i32,
    },
    #[error("pool {pool} does not exist in the Ceph cluster")]
    PoolNotFound { pool: String },
    #[error("RBD image {pool}/{image} does not exist")]
    ImageNotFound { pool: String, image: String },
    #[error("{what} failed: {}", describe(*errno))]
    Call { what: String, errno: i32 },
}

impl RbdError {
    /// librbd's (or librados's) errno, where the failure came from a call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RbdError::Config { errno, .. }
            | RbdError::Unreachable { errno, .. }
            | RbdError::Call { errno, .. } => Some(*errno),
            RbdError::PoolNotFound { .. } | RbdError::ImageNotFound { .. } => Some(libc::ENOENT),
            RbdError::NotInstalled { .. } | RbdError::Incompatible { .. } => None,
        }
    }

    /// Whether the thing operated on does not exist (`ENOENT`).
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }

    pub fn vss_code(&self) -> VssCode {
        match self {
            RbdError::NotInstalled { .. } | RbdError::Incompatible { .. } => {
                VssCode::VSS_E_NOT_SUPPORTED
            }
            RbdError::PoolNotFound { .. } | RbdError::ImageNotFound { .. } => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            RbdError::Call { errno, .. } if *errno == libc::ENOENT => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            RbdError::Call { errno, .. } if *errno == libc::EEXIST => {
                VssCode::VSS_E_OBJECT_ALREADY_EXISTS
            }
            RbdError::Call { errno, .. } if *errno == libc::EBUSY => VssCode::VSS_E_VOLUME_IN_USE,
            RbdError::Config { .. } | RbdError::Unreachable { .. } | RbdError::Call { .. } => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
        }
    }
}

/// `strerror` for a positive errno, with its number.
fn describe(errno: i32) -> String {
    format!(
        "{} (errno {errno})",
        std::io::Error::from_raw_os_error(errno)
    )
    .replace(&format!(" (os error {errno})"), "")
}

/// A negative return value as an [`RbdError::Call`] naming `what` was done.
fn check(result: c_int, what: impl FnOnce() -> String) -> Result<c_int, RbdError> {
    if result < 0 {
        Err(RbdError::Call {
            what: what(),
            errno: -result,
        })
    } else {
        Ok(result)
    }
}

fn c_string(text: &str, what: &str) -> Result<CString, RbdError> {
    CString::new(text).map_err(|_| RbdError::Call {
        what: format!("{what}: the name {text:?} holds a NUL byte"),
        errno: libc::EINVAL,
    })
}

/// Copies a C string librbd owns.
///
/// # Safety
/// `text` is NULL or a NUL-terminated string alive for the call.
unsafe fn owned(text: *const c_char) -> String {
    if text.is_null() {
        String::new()
    } else {
        CStr::from_ptr(text).to_string_lossy().into_owned()
    }
}

/// Turns librbd's `(offset, total)` callbacks into [`Progress`] reports.
struct ProgressReporter<'a> {
    progress: &'a dyn Progress,
    what: String,
    started: bool,
    done: u64,
}

impl<'a> ProgressReporter<'a> {
    fn new(progress: &'a dyn Progress, what: String) -> Self {
        ProgressReporter {
            progress,
            what,
            started: false,
            done: 0,
        }
    }

    fn report(&mut self, offset: u64, total: u64) {
        if !self.started {
            self.progress.begin(&self.what, total);
            self.started = true;
        }
        if offset > self.done {
            self.progress.advance(offset - self.done);
            self.done = offset;
        }
    }

    fn end(&mut self) {
        if self.started {
            self.progress.finish();
        }
    }
}

fn lock<'a, 'b>(
    reporter: &'b Mutex<ProgressReporter<'a>>,
) -> std::sync::MutexGuard<'b, ProgressReporter<'a>> {
    reporter
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The callback data for [`report_progress`]: librbd may call it from its own threads, so
/// the reporter sits behind a mutex.
fn reporter_data(reporter: &Mutex<ProgressReporter<'_>>) -> *mut c_void {
    (reporter as *const Mutex<ProgressReporter<'_>>)
        .cast_mut()
        .cast()
}

unsafe extern "C" fn report_progress(offset: u64, total: u64, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `Mutex<ProgressReporter>` its caller passed, alive for the call.
    let reporter = unsafe { &*data.cast::<Mutex<ProgressReporter>>() };
    lock(reporter).report(offset, total);
    0
}
