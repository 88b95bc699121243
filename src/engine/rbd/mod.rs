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

mod ffi;
pub mod file;
pub mod provider;

pub use provider::{RbdProvider, RBD_PROVIDER_ID, RBD_PROVIDER_NAME};

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libloading::Library;

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
    #[error("{library} is not installed ({file} not found): apt-get install {package}")]
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

/// The loaded libraries and their entry points.
pub struct Ceph {
    rados: ffi::Rados,
    rbd: ffi::Rbd,
    // The entry points above point into these: they are unloaded last.
    _rbd_library: Library,
    _rados_library: Library,
}

impl std::fmt::Debug for Ceph {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Ceph (librados and librbd)")
    }
}

/// Which files [`Ceph::load`] loads: set once per process, before the first load, by a binary
/// that lets its user choose them (tests point them at a missing name).
static LIBRARY_FILES: OnceLock<(String, String)> = OnceLock::new();
static SYSTEM: Mutex<Option<Arc<Ceph>>> = Mutex::new(None);

/// Makes [`Ceph::load`] load `rbd_file` and `rados_file` instead of [`LIBRBD`] and
/// [`LIBRADOS`]. Has no effect once set or once the libraries are loaded.
pub fn use_library_files(rbd_file: &str, rados_file: &str) {
    let _ = LIBRARY_FILES.set((rbd_file.to_string(), rados_file.to_string()));
}

impl Ceph {
    /// The libraries of this process, loaded on first use (by the names
    /// [`use_library_files`] set, else [`LIBRBD`] and [`LIBRADOS`]) and kept loaded.
    pub fn load() -> Result<Arc<Ceph>, RbdError> {
        let mut loaded = SYSTEM
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(ceph) = loaded.as_ref() {
            return Ok(ceph.clone());
        }
        let (rbd_file, rados_file) = LIBRARY_FILES
            .get()
            .cloned()
            .unwrap_or_else(|| (LIBRBD.to_string(), LIBRADOS.to_string()));
        let ceph = Arc::new(Ceph::load_files(&rbd_file, &rados_file)?);
        *loaded = Some(ceph.clone());
        Ok(ceph)
    }

    /// Loads the libraries from the files named (a bare name searches the loader's path).
    pub fn load_files(rbd_file: &str, rados_file: &str) -> Result<Ceph, RbdError> {
        let rados_library = open_library(rados_file, "librados", "librados2")?;
        let rbd_library = open_library(rbd_file, "librbd", "librbd1")?;
        // SAFETY: the files are librados and librbd, whose C API `ffi` declares.
        let rados = unsafe { ffi::Rados::resolve(&rados_library) }.map_err(|detail| {
            RbdError::Incompatible {
                library: "librados",
                file: rados_file.to_string(),
                detail,
            }
        })?;
        // SAFETY: as above.
        let rbd = unsafe { ffi::Rbd::resolve(&rbd_library) }.map_err(|detail| {
            RbdError::Incompatible {
                library: "librbd",
                file: rbd_file.to_string(),
                detail,
            }
        })?;
        Ok(Ceph {
            rados,
            rbd,
            _rbd_library: rbd_library,
            _rados_library: rados_library,
        })
    }
}

fn lock_connections() -> std::sync::MutexGuard<'static, Vec<(ClusterKey, Arc<Cluster>)>> {
    CONNECTIONS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_library(
    file: &str,
    library: &'static str,
    package: &'static str,
) -> Result<Library, RbdError> {
    // SAFETY: loading runs the library's initializers; librados and librbd have no
    // initializers with preconditions.
    unsafe { Library::new(file) }.map_err(|error| {
        let detail = error.to_string();
        if detail.contains("No such file") || detail.contains("cannot open shared object") {
            RbdError::NotInstalled {
                library,
                file: file.to_string(),
                package,
            }
        } else {
            RbdError::Incompatible {
                library,
                file: file.to_string(),
                detail,
            }
        }
    })
}

/// How long connecting to a cluster may take before it counts as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections of this process, by configuration file and client: one per cluster and
/// client, made on first use and kept (see [`Cluster::shared`]).
type ClusterKey = (PathBuf, Option<String>);
static CONNECTIONS: Mutex<Vec<(ClusterKey, Arc<Cluster>)>> = Mutex::new(Vec::new());

/// One connection to a Ceph cluster.
pub struct Cluster {
    ceph: Arc<Ceph>,
    handle: ffi::RadosT,
    conf: PathBuf,
    timeout: Duration,
}

// SAFETY: a `rados_t` may be used from any thread at once (librados is thread-safe).
unsafe impl Send for Cluster {}
// SAFETY: as above.
unsafe impl Sync for Cluster {}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Cluster")
            .field("conf", &self.conf)
            .finish()
    }
}

impl Cluster {
    /// Connects to the cluster that `conf` (a `ceph.conf`) names, as `client.<client_id>`
    /// (`client.admin` when `None`), with the libraries of this process ([`Ceph::load`]).
    ///
    /// `timeout` bounds connecting and every monitor operation, so a cluster that is down fails
    /// within it instead of hanging; object (OSD) operations get at least 30 s, so that a busy
    /// cluster is not mistaken for a down one, and never hang either.
    pub fn connect(
        conf: &Path,
        client_id: Option<&str>,
        timeout: Duration,
    ) -> Result<Arc<Cluster>, RbdError> {
        Cluster::connect_with(Ceph::load()?, conf, client_id, timeout)
    }

    /// This process's connection to the cluster of `conf` as `client_id`: made by
    /// [`Cluster::connect`] on first use and kept for the life of the process, so every
    /// pool, image and volume of a store shares one. A failed connection is not kept: the
    /// next call tries again.
    pub fn shared(
        conf: &Path,
        client_id: Option<&str>,
        timeout: Duration,
    ) -> Result<Arc<Cluster>, RbdError> {
        let key = (conf.to_path_buf(), client_id.map(str::to_string));
        if let Some((_, cluster)) = lock_connections().iter().find(|(known, _)| *known == key) {
            return Ok(cluster.clone());
        }
        // Connecting may take the whole timeout: not under the lock, so that a down cluster
        // does not hold up the others. Two threads may both connect; the first one kept wins.
        let cluster = Cluster::connect(conf, client_id, timeout)?;
        let mut connections = lock_connections();
        if let Some((_, kept)) = connections.iter().find(|(known, _)| *known == key) {
            return Ok(kept.clone());
        }
        connections.push((key, cluster.clone()));
        Ok(cluster)
    }

    /// [`Cluster::connect`] with the libraries given.
    pub fn connect_with(
        ceph: Arc<Ceph>,
        conf: &Path,
        client_id: Option<&str>,
        timeout: Duration,
    ) -> Result<Arc<Cluster>, RbdError> {
        let config_error = |errno| RbdError::Config {
            conf: conf.to_path_buf(),
            errno,
        };
        if !conf.is_file() {
            return Err(config_error(libc::ENOENT));
        }
        let conf_text = c_string(&conf.to_string_lossy(), "read the Ceph configuration")?;
        let client = client_id
            .map(|id| c_string(id, "connect to the Ceph cluster"))
            .transpose()?;
        let mut handle: ffi::RadosT = std::ptr::null_mut();
        // SAFETY: `handle` is written by rados_create; `client` outlives the call.
        let result = unsafe {
            (ceph.rados.rados_create)(
                &mut handle,
                client.as_ref().map_or(std::ptr::null(), |id| id.as_ptr()),
            )
        };
        check(result, || "create a Ceph client".to_string())?;
        let cluster = Cluster {
            ceph,
            handle,
            conf: conf.to_path_buf(),
            timeout,
        };
        // SAFETY: the handle is alive; the path is NUL-terminated.
        let result = unsafe {
            (cluster.ceph.rados.rados_conf_read_file)(cluster.handle, conf_text.as_ptr())
        };
        if result < 0 {
            return Err(config_error(-result));
        }
        let seconds = timeout.as_secs().max(1);
        let osd_seconds = seconds.max(30);
        for (option, value) in [
            ("client_mount_timeout", seconds.to_string()),
            ("rados_mon_op_timeout", seconds.to_string()),
            ("rados_osd_op_timeout", osd_seconds.to_string()),
            ("log_to_stderr", "false".to_string()),
            ("err_to_stderr", "false".to_string()),
        ] {
            cluster.set_option(option, &value)?;
        }
        // SAFETY: the handle is alive and configured.
        let result = unsafe { (cluster.ceph.rados.rados_connect)(cluster.handle) };
        if result < 0 {
            return Err(RbdError::Unreachable {
                conf: conf.to_path_buf(),
                timeout,
                errno: -result,
            });
        }
        Ok(Arc::new(cluster))
    }

    fn set_option(&self, option: &str, value: &str) -> Result<(), RbdError> {
        let what = || format!("set the Ceph option {option} = {value}");
        let option_text = c_string(option, "set a Ceph option")?;
        let value_text = c_string(value, "set a Ceph option")?;
        // SAFETY: the handle is alive; both strings are NUL-terminated.
        let result = unsafe {
            (self.ceph.rados.rados_conf_set)(self.handle, option_text.as_ptr(), value_text.as_ptr())
        };
        check(result, what).map(drop)
    }

    /// The configuration file it was connected with.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The timeout it was connected with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The pool `name`; [`RbdError::PoolNotFound`] when the cluster has none by that name.
    pub fn pool(self: &Arc<Self>, name: &str) -> Result<Pool, RbdError> {
        let name_text = c_string(name, "open a pool")?;
        // SAFETY: the handle is connected; the name is NUL-terminated.
        let id = unsafe { (self.ceph.rados.rados_pool_lookup)(self.handle, name_text.as_ptr()) };
        if id == -(libc::ENOENT as i64) {
            return Err(RbdError::PoolNotFound {
                pool: name.to_string(),
            });
        }
        check(id.max(i64::from(i32::MIN)) as c_int, || {
            format!("look up pool {name}")
        })?;
        let mut ioctx: ffi::IoctxT = std::ptr::null_mut();
        // SAFETY: as above; `ioctx` is written on success.
        let result = unsafe {
            (self.ceph.rados.rados_ioctx_create)(self.handle, name_text.as_ptr(), &mut ioctx)
        };
        if result == -libc::ENOENT {
            return Err(RbdError::PoolNotFound {
                pool: name.to_string(),
            });
        }
        check(result, || format!("open pool {name}"))?;
        Ok(Pool {
            cluster: self.clone(),
            ioctx,
            name: name.to_string(),
            id,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: the handle came from rados_create; pools and images hold an Arc to the
        // cluster, so none is alive any more.
        unsafe { (self.ceph.rados.rados_shutdown)(self.handle) };
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupImage {
    pub image: String,
    pub pool_id: i64,
    /// False while an add or remove is half done (`RBD_GROUP_IMAGE_STATE_INCOMPLETE`).
    pub attached: bool,
}

/// One group snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub name: String,
    /// False when its creation did not finish (`RBD_GROUP_SNAP_STATE_INCOMPLETE`).
    pub complete: bool,
}

/// A member image's snapshot that belongs to a group snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshotMember {
    pub image: String,
    pub snap_id: u64,
    /// The image's size at the snapshot.
    pub size: u64,
}

/// One I/O context: a pool of the cluster.
pub struct Pool {
    cluster: Arc<Cluster>,
    ioctx: ffi::IoctxT,
    name: String,
    id: i64,
}

// SAFETY: an I/O context may be used from several threads at once for the calls made here
// (librados documents only its snapshot-context and locator setters as not thread-safe, and
// they are not used).
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl std::fmt::Debug for Pool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Pool")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the context came from rados_ioctx_create; open images keep their own.
        unsafe { (self.cluster.ceph.rados.rados_ioctx_destroy)(self.ioctx) };
    }
}

/// Reads a NUL-separated name list from `call(buffer, &mut size)`, growing the buffer on
/// `ERANGE`.
fn name_list(
    mut call: impl FnMut(*mut c_char, *mut usize) -> c_int,
    what: impl Fn() -> String,
) -> Result<Vec<String>, RbdError> {
    let mut size = 1024usize;
    loop {
        let mut buffer = vec![0u8; size];
        let mut wanted = size;
        let result = call(buffer.as_mut_ptr().cast(), &mut wanted);
        if result == -libc::ERANGE && wanted > size {
            size = wanted;
            continue;
        }
        check(result, &what)?;
        buffer.truncate(wanted.min(size));
        return Ok(buffer
            .split(|byte| *byte == 0)
            .filter(|name| !name.is_empty())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect());
    }
}

/// A `rbd_group_*_list` call: `(ioctx, group, entries, entry size, &mut count)`.
type GroupListFn<Entry> =
    unsafe extern "C" fn(ffi::IoctxT, *const c_char, *mut Entry, usize, *mut usize) -> c_int;
/// Its cleanup: `(entries, entry size, count)`.
type GroupListCleanupFn<Entry> = unsafe extern "C" fn(*mut Entry, usize, usize) -> c_int;

/// Runs a group list call, growing the array on `ERANGE`, and turns each entry into an item
/// before librbd's cleanup frees the entries' strings.
fn group_list<Entry, Item>(
    ioctx: ffi::IoctxT,
    group: &CStr,
    list: GroupListFn<Entry>,
    cleanup: GroupListCleanupFn<Entry>,
    item: impl Fn(&Entry) -> Item,
    what: impl Fn() -> String,
) -> Result<Vec<Item>, RbdError> {
    let entry_size = std::mem::size_of::<Entry>();
    let mut capacity = 16usize;
    loop {
        let mut entries: Vec<Entry> = Vec::with_capacity(capacity);
        let mut count = capacity;
        // SAFETY: the context is open; `entries` has room for `count` entries of the size
        // given.
        let result = unsafe {
            list(
                ioctx,
                group.as_ptr(),
                entries.as_mut_ptr(),
                entry_size,
                &mut count,
            )
        };
        if result == -libc::ERANGE && count > capacity {
            capacity = count;
            continue;
        }
        check(result, &what)?;
        // SAFETY: librbd filled `count` entries.
        unsafe { entries.set_len(count) };
        let items = entries.iter().map(&item).collect();
        // SAFETY: the entries came from the list call; they are not used afterwards.
        unsafe { cleanup(entries.as_mut_ptr(), entry_size, count) };
        return Ok(items);
    }
}

impl Pool {
    fn rbd(&self) -> &ffi::Rbd {
        &self.cluster.ceph.rbd
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's ID in the cluster.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The cluster it belongs to.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The names of its images, sorted.
    pub fn list_images(&self) -> Result<Vec<String>, RbdError> {
        let rbd_list = self.rbd().rbd_list;
        let mut names = name_list(
            // SAFETY: the buffer holds `size` bytes; librbd writes at most that.
            |buffer, size| unsafe { rbd_list(self.ioctx, buffer, size) },
            || format!("list the images of pool {}", self.name),
        )?;
        names.sort();
        Ok(names)
    }

    /// Creates image `name` of `size` bytes with the feature bits `features` ([`features`]).
    pub fn create_image(&self, name: &str, size: u64, features: u64) -> Result<(), RbdError> {
        let what = || format!("create RBD image {}/{name}", self.name);
        let name_text = c_string(name, &what())?;
        let mut order: c_int = 0;
        // SAFETY: the context is open; the name is NUL-terminated.
        let result = unsafe {
            (self.rbd().rbd_create2)(self.ioctx, name_text.as_ptr(), size, features, &mut order)
        };
        check(result, what).map(drop)
    }

    /// Removes image `name` (it must have no snapshots).
    pub fn remove_image(&self, name: &str) -> Result<(), RbdError> {
        let what = || format!("remove RBD image {}/{name}", self.name);
        let name_text = c_string(name, &what())?;
        // SAFETY: as above.
        let result = unsafe { (self.rbd().rbd_remove)(self.ioctx, name_text.as_ptr()) };
        if result == -libc::ENOENT {
            return Err(self.image_not_found(name));
        }
        check(result, what).map(drop)
    }

    fn image_not_found(&self, image: &str) -> RbdError {
        RbdError::ImageNotFound {
            pool: self.name.clone(),
            image: image.to_string(),
        }
    }

    fn open_image(&self, name: &str, read_only: bool) -> Result<Image, RbdError> {
        let what = || format!("open RBD image {}/{name}", self.name);
        let name_text = c_string(name, &what())?;
        let mut handle: ffi::ImageT = std::ptr::null_mut();
        let open = if read_only {
            self.rbd().rbd_open_read_only
        } else {
            self.rbd().rbd_open
        };
        // SAFETY: the context is open; `handle` is written on success.
        let result = unsafe {
            open(
                self.ioctx,
                name_text.as_ptr(),
                &mut handle,
                std::ptr::null(),
            )
        };
        if result == -libc::ENOENT {
            return Err(self.image_not_found(name));
        }
        check(result, what)?;
        Ok(Image {
            cluster: self.cluster.clone(),
            handle,
            pool: self.name.clone(),
            name: name.to_string(),
            snap_id: None,
        })
    }

    /// Opens image `name` read-write, at its live head.
    pub fn open(&self, name: &str) -> Result<Image, RbdError> {
        self.open_image(name, false)
    }

    /// Opens image `name` read-only, at its live head.
    pub fn open_read_only(&self, name: &str) -> Result<Image, RbdError> {
        self.open_image(name, true)
    }

    /// Opens image `name` read-only at the snapshot `snap_id`, whatever namespace the
    /// snapshot lives in (group snapshots have no user-visible name, so they are opened by
    /// ID).
    pub fn open_at_snap_id(&self, name: &str, snap_id: u64) -> Result<Image, RbdError> {
        let mut image = self.open_image(name, true)?;
        // SAFETY: the image is open.
        let result = unsafe { (self.rbd().rbd_snap_set_by_id)(image.handle, snap_id) };
        check(result, || {
            format!(
                "open RBD image {}/{name} at snapshot ID {snap_id}",
                self.name
            )
        })?;
        image.snap_id = Some(snap_id);
        Ok(image)
    }

    /// Clones `parent@snapshot` (a protected snapshot, unless the cluster uses clone format 2)
    /// into a new image `child` of this pool, with the parent's features.
    pub fn clone_image(
        &self,
        parent: &str,
        snapshot: &str,
        child: &str,
        features: u64,
    ) -> Result<(), RbdError> {
        let what = || {
            format!(
                "clone RBD image {pool}/{parent}@{snapshot} to {pool}/{child}",
                pool = self.name
            )
        };
        let parent_text = c_string(parent, &what())?;
        let snapshot_text = c_string(snapshot, &what())?;
        let child_text = c_string(child, &what())?;
        let mut order: c_int = 0;
        // SAFETY: the context is open; the names are NUL-terminated.
        let result = unsafe {
            (self.rbd().rbd_clone)(
                self.ioctx,
                parent_text.as_ptr(),
                snapshot_text.as_ptr(),
                self.ioctx,
                child_text.as_ptr(),
                features,
                &mut order,
            )
        };
        check(result, what).map(drop)
    }

    /// The names of the pool's groups, sorted.
    pub fn list_groups(&self) -> Result<Vec<String>, RbdError> {
        let rbd_group_list = self.rbd().rbd_group_list;
        let mut names = name_list(
            // SAFETY: the buffer holds `size` bytes.
            |buffer, size| unsafe { rbd_group_list(self.ioctx, buffer, size) },
            || format!("list the groups of pool {}", self.name),
        )?;
        names.sort();
        Ok(names)
    }

    /// Creates group `name`.
    pub fn create_group(&self, name: &str) -> Result<(), RbdError> {
        let what = || format!("create RBD group {}/{name}", self.name);
        let name_text = c_string(name, &what())?;
        // SAFETY: the context is open; the name is NUL-terminated.
        let result = unsafe { (self.rbd().rbd_group_create)(self.ioctx, name_text.as_ptr()) };
        check(result, what).map(drop)
    }

    /// Removes group `name`, with its group snapshots (the images stay).
    pub fn remove_group(&self, name: &str) -> Result<(), RbdError> {
        let what = || format!("remove RBD group {}/{name}", self.name);
        let name_text = c_string(name, &what())?;
        // SAFETY: as above.
        let result = unsafe { (self.rbd().rbd_group_remove)(self.ioctx, name_text.as_ptr()) };
        check(result, what).map(drop)
    }

    /// Adds `image` (of this pool) to `group`. An image belongs to one group at most.
    pub fn group_add_image(&self, group: &str, image: &str) -> Result<(), RbdError> {
        let what = || {
            format!(
                "add RBD image {pool}/{image} to group {pool}/{group}",
                pool = self.name
            )
        };
        let group_text = c_string(group, &what())?;
        let image_text = c_string(image, &what())?;
        // SAFETY: the context is open; the names are NUL-terminated.
        let result = unsafe {
            (self.rbd().rbd_group_image_add)(
                self.ioctx,
                group_text.as_ptr(),
                self.ioctx,
                image_text.as_ptr(),
            )
        };
        check(result, what).map(drop)
    }

    /// Removes `image` from `group`.
    pub fn group_remove_image(&self, group: &str, image: &str) -> Result<(), RbdError> {
        let what = || {
            format!(
                "remove RBD image {pool}/{image} from group {pool}/{group}",
                pool = self.name
            )
        };
        let group_text = c_string(group, &what())?;
        let image_text = c_string(image, &what())?;
        // SAFETY: as above.
        let result = unsafe {
            (self.rbd().rbd_group_image_remove)(
                self.ioctx,
                group_text.as_ptr(),
                self.ioctx,
                image_text.as_ptr(),
            )
        };
        check(result, what).map(drop)
    }

    /// The members of `group`.
    pub fn group_images(&self, group: &str) -> Result<Vec<GroupImage>, RbdError> {
        let what = || format!("list the images of RBD group {}/{group}", self.name);
        let group_text = c_string(group, &what())?;
        group_list(
            self.ioctx,
            &group_text,
            self.rbd().rbd_group_image_list,
            self.rbd().rbd_group_image_list_cleanup,
            // SAFETY (of `owned`): librbd's strings, alive until the cleanup.
            |entry: &ffi::GroupImageInfo| GroupImage {
                image: unsafe { owned(entry.name) },
                pool_id: entry.pool,
                attached: entry.state == 0,
            },
            what,
        )
    }

    /// Takes group snapshot `snapshot` of `group`: one snapshot in every member image, all at
    /// the same point in time.
    pub fn group_snap_create(&self, group: &str, snapshot: &str) -> Result<(), RbdError> {
        let what = || format!("create group snapshot {}/{group}@{snapshot}", self.name);
        let group_text = c_string(group, &what())?;
        let snapshot_text = c_string(snapshot, &what())?;
        // SAFETY: the context is open; the names are NUL-terminated.
        let result = unsafe {
            (self.rbd().rbd_group_snap_create)(
                self.ioctx,
                group_text.as_ptr(),
                snapshot_text.as_ptr(),
            )
        };
        check(result, what).map(drop)
    }

    /// Removes group snapshot `snapshot` of `group`, with its member snapshots.
    pub fn group_snap_remove(&self, group: &str, snapshot: &str) -> Result<(), RbdError> {
        let what = || format!("remove group snapshot {}/{group}@{snapshot}", self.name);
        let group_text = c_string(group, &what())?;
        let snapshot_text = c_string(snapshot, &what())?;
        // SAFETY: as above.
        let result = unsafe {
            (self.rbd().rbd_group_snap_remove)(
                self.ioctx,
                group_text.as_ptr(),
                snapshot_text.as_ptr(),
            )
        };
        check(result, what).map(drop)
    }

    /// The group snapshots of `group`.
    pub fn group_snaps(&self, group: &str) -> Result<Vec<GroupSnapshot>, RbdError> {
        let what = || format!("list the snapshots of RBD group {}/{group}", self.name);
        let group_text = c_string(group, &what())?;
        group_list(
            self.ioctx,
            &group_text,
            self.rbd().rbd_group_snap_list,
            self.rbd().rbd_group_snap_list_cleanup,
            // SAFETY (of `owned`): librbd's strings, alive until the cleanup.
            |entry: &ffi::GroupSnapInfo| GroupSnapshot {
                name: unsafe { owned(entry.name) },
                complete: entry.state == ffi::GROUP_SNAP_STATE_COMPLETE,
            },
            what,
        )
    }

    /// Rolls every member of `group` back to group snapshot `snapshot`, reporting progress.
    pub fn group_snap_rollback(
        &self,
        group: &str,
        snapshot: &str,
        progress: &dyn Progress,
    ) -> Result<(), RbdError> {
        let what = || {
            format!(
                "roll back to group snapshot {}/{group}@{snapshot}",
                self.name
            )
        };
        let group_text = c_string(group, &what())?;
        let snapshot_text = c_string(snapshot, &what())?;
        let reporter = Mutex::new(ProgressReporter::new(progress, what()));
        // SAFETY: the context is open; the callback's data outlives the call.
        let result = unsafe {
            (self.rbd().rbd_group_snap_rollback_with_progress)(
                self.ioctx,
                group_text.as_ptr(),
                snapshot_text.as_ptr(),
                report_progress,
                reporter_data(&reporter),
            )
        };
        lock(&reporter).end();
        check(result, what).map(drop)
    }

    /// Each current member image's snapshot in group snapshot `snapshot` of `group`, in the
    /// order the group lists its images. An image removed from the group since is not listed
    /// (see the module documentation).
    pub fn group_snapshot_members(
        &self,
        group: &str,
        snapshot: &str,
    ) -> Result<Vec<GroupSnapshotMember>, RbdError> {
        let mut members = Vec::new();
        for member in self.group_images(group)? {
            if member.pool_id != self.id {
                continue;
            }
            let image = self.open_read_only(&member.image)?;
            let Some(snap) = image.group_snap(group, snapshot)? else {
                continue;
            };
            members.push(GroupSnapshotMember {
                image: member.image,
                snap_id: snap.id,
                size: snap.size,
            });
        }
        Ok(members)
    }
}

/// The namespace a snapshot lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapNamespace {
    /// An ordinary, named snapshot.
    User,
    /// A member of group snapshot `group_snapshot` of `group` (in pool `group_pool_id`).
    Group {
        group_pool_id: i64,
        group: String,
        group_snapshot: String,
    },
    /// A removed snapshot that clones still use.
    Trash,
    /// Another namespace (mirroring).
    Other(i32),
}

/// One snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: u64,
    pub name: String,
    /// The image's size at the snapshot.
    pub size: u64,
    pub namespace: SnapNamespace,
}

/// A run of allocated bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
}

/// One open image: live and read-write, live and read-only, or read-only at a snapshot.
pub struct Image {
    cluster: Arc<Cluster>,
    handle: ffi::ImageT,
    pool: String,
    name: String,
    snap_id: Option<u64>,
}

// SAFETY: librbd image handles may be used from several threads at once for I/O and
// snapshot calls (librbd serializes internally).
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

impl std::fmt::Debug for Image {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.spec())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: the handle came from rbd_open*; the cluster is alive (held by `self`).
        unsafe { (self.cluster.ceph.rbd.rbd_close)(self.handle) };
    }
}

/// Reads and writes in pieces of at most this many bytes (librbd returns the count as an
/// `int`).
const MAX_IO: usize = 64 << 20;

impl Image {
    fn rbd(&self) -> &ffi::Rbd {
        &self.cluster.ceph.rbd
    }

    /// `pool/image`, with `@snapid` when opened at a snapshot.
    pub fn spec(&self) -> String {
        match self.snap_id {
            Some(id) => format!("{}/{}@{{snap id {id}}}", self.pool, self.name),
            None => format!("{}/{}", self.pool, self.name),
        }
    }

    /// The image's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The snapshot it is opened at, if any.
    pub fn snap_id(&self) -> Option<u64> {
        self.snap_id
    }

    /// Its size in bytes (at the snapshot, when opened at one).
    pub fn size(&self) -> Result<u64, RbdError> {
        let mut size = 0u64;
        // SAFETY: the image is open.
        let result = unsafe { (self.rbd().rbd_get_size)(self.handle, &mut size) };
        check(result, || {
            format!("get the size of RBD image {}", self.spec())
        })?;
        Ok(size)
    }

    /// Its ID in the pool: stable for the image's life, new for an image created again under
    /// the same name.
    pub fn id(&self) -> Result<String, RbdError> {
        let mut buffer = vec![0u8; 64];
        // SAFETY: the image is open; the buffer holds `len` bytes.
        let result = unsafe {
            (self.rbd().rbd_get_id)(self.handle, buffer.as_mut_ptr().cast(), buffer.len())
        };
        check(result, || {
            format!("get the ID of RBD image {}", self.spec())
        })?;
        let end = buffer
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(buffer.len());
        Ok(String::from_utf8_lossy(&buffer[..end]).into_owned())
    }

    /// Its feature bits ([`features`]).
    pub fn features(&self) -> Result<u64, RbdError> {
        let mut bits = 0u64;
        // SAFETY: the image is open.
        let result = unsafe { (self.rbd().rbd_get_features)(self.handle, &mut bits) };
        check(result, || {
            format!("get the features of RBD image {}", self.spec())
        })?;
        Ok(bits)
    }

    /// Reads into `buffer` from `offset`; returns how many bytes were read (fewer only at
    /// the end of the image).
    pub fn read_at(&self, buffer: &mut [u8], offset: u64) -> Result<usize, RbdError> {
        // librbd refuses (EINVAL) a read that crosses the end; a read here stops at it.
        let size = self.size()?;
        let wanted = buffer.len().min(size.saturating_sub(offset) as usize);
        let mut done = 0usize;
        while done < wanted {
            let piece = (wanted - done).min(MAX_IO);
            let at = offset + done as u64;
            // SAFETY: the image is open; the pointer covers `piece` writable bytes.
            let result = unsafe {
                (self.rbd().rbd_read)(self.handle, at, piece, buffer[done..].as_mut_ptr().cast())
            };
            if result < 0 {
                return Err(RbdError::Call {
                    what: format!("read {piece} bytes at {at} of RBD image {}", self.spec()),
                    errno: (-result) as i32,
                });
            }
            if result == 0 {
                break;
            }
            done += result as usize;
        }
        Ok(done)
    }

    /// Writes all of `data` at `offset` (inside the image's size).
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<(), RbdError> {
        let mut done = 0usize;
        while done < data.len() {
            let piece = (data.len() - done).min(MAX_IO);
            let at = offset + done as u64;
            // SAFETY: the image is open; the pointer covers `piece` readable bytes.
            let result = unsafe {
                (self.rbd().rbd_write)(self.handle, at, piece, data[done..].as_ptr().cast())
            };
            if result <= 0 {
                return Err(RbdError::Call {
                    what: format!("write {piece} bytes at {at} of RBD image {}", self.spec()),
                    errno: if result == 0 {
                        libc::EIO
                    } else {
                        (-result) as i32
                    },
                });
            }
            done += result as usize;
        }
        Ok(())
    }

    /// Makes every completed write durable in the cluster.
    pub fn flush(&self) -> Result<(), RbdError> {
        // SAFETY: the image is open.
        let result = unsafe { (self.rbd().rbd_flush)(self.handle) };
        check(result, || format!("flush RBD image {}", self.spec())).map(drop)
    }

    /// Deallocates `length` bytes at `offset`, which read as zeros afterwards, except that
    /// librbd skips the parts of the range not aligned to its discard granularity
    /// (`rbd_discard_granularity_bytes`, 64 KiB by default): a small discard may change
    /// nothing. [`Image::write_zeroes`] zeroes exactly.
    pub fn discard(&self, offset: u64, length: u64) -> Result<(), RbdError> {
        // SAFETY: the image is open.
        let result = unsafe { (self.rbd().rbd_discard)(self.handle, offset, length) };
        check(result, || {
            format!(
                "discard {length} bytes at {offset} of RBD image {}",
                self.spec()
            )
        })
        .map(drop)
    }

    /// Writes zeros over `length` bytes at `offset`, deallocating where it can.
    pub fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), RbdError> {
        let mut done = 0u64;
        while done < length {
            let piece = (length - done).min(MAX_IO as u64);
            let at = offset + done;
            // SAFETY: the image is open.
            let result =
                unsafe { (self.rbd().rbd_write_zeroes)(self.handle, at, piece as usize, 0, 0) };
            check(result, || {
                format!(
                    "write {piece} zero bytes at {at} of RBD image {}",
                    self.spec()
                )
            })?;
            done += piece;
        }
        Ok(())
    }

    fn snap_call(
        &self,
        call: unsafe extern "C" fn(ffi::ImageT, *const c_char) -> c_int,
        verb: &str,
        snapshot: &str,
    ) -> Result<(), RbdError> {
        let what = || format!("{verb} snapshot {}@{snapshot}", self.spec());
        let snapshot_text = c_string(snapshot, &what())?;
        // SAFETY: the image is open; the name is NUL-terminated.
        let result = unsafe { call(self.handle, snapshot_text.as_ptr()) };
        check(result, what).map(drop)
    }

    /// Takes snapshot `name` of the live image.
    pub fn snap_create(&self, name: &str) -> Result<(), RbdError> {
        self.snap_call(self.rbd().rbd_snap_create, "create", name)
    }

    /// Removes snapshot `name` (it must be unprotected and have no clones).
    pub fn snap_remove(&self, name: &str) -> Result<(), RbdError> {
        self.snap_call(self.rbd().rbd_snap_remove, "remove", name)
    }

    /// Protects snapshot `name`, so it can be cloned and not removed.
    pub fn snap_protect(&self, name: &str) -> Result<(), RbdError> {
        self.snap_call(self.rbd().rbd_snap_protect, "protect", name)
    }

    /// Unprotects snapshot `name` (it must have no clones).
    pub fn snap_unprotect(&self, name: &str) -> Result<(), RbdError> {
        self.snap_call(self.rbd().rbd_snap_unprotect, "unprotect", name)
    }

    /// Whether snapshot `name` is protected.
    pub fn snap_is_protected(&self, name: &str) -> Result<bool, RbdError> {
        let what = || format!("check protection of snapshot {}@{name}", self.spec());
        let name_text = c_string(name, &what())?;
        let mut protected: c_int = 0;
        // SAFETY: the image is open; the name is NUL-terminated.
        let result = unsafe {
            (self.rbd().rbd_snap_is_protected)(self.handle, name_text.as_ptr(), &mut protected)
        };
        check(result, what)?;
        Ok(protected != 0)
    }

    /// All its snapshots, of every namespace, oldest first.
    pub fn snaps(&self) -> Result<Vec<Snapshot>, RbdError> {
        let what = || format!("list the snapshots of RBD image {}", self.spec());
        let mut capacity: c_int = 16;
        let raw = loop {
            let mut entries: Vec<ffi::SnapInfo> = Vec::with_capacity(capacity as usize + 1);
            let mut max = capacity;
            // SAFETY: `entries` has room for `max` entries (plus librbd's end marker).
            let result =
                unsafe { (self.rbd().rbd_snap_list)(self.handle, entries.as_mut_ptr(), &mut max) };
            if result == -libc::ERANGE && max > capacity {
                capacity = max;
                continue;
            }
            let count = check(result, what)? as usize;
            // SAFETY: librbd filled `count` entries.
            unsafe { entries.set_len(count) };
            let snapshots: Vec<(u64, String, u64)> = entries
                .iter()
                // SAFETY: librbd's strings, alive until rbd_snap_list_end.
                .map(|entry| (entry.id, unsafe { owned(entry.name) }, entry.size))
                .collect();
            // SAFETY: the entries came from rbd_snap_list.
            unsafe { (self.rbd().rbd_snap_list_end)(entries.as_mut_ptr()) };
            break snapshots;
        };
        raw.into_iter()
            .map(|(id, name, size)| {
                Ok(Snapshot {
                    id,
                    name,
                    size,
                    namespace: self.snap_namespace(id)?,
                })
            })
            .collect()
    }

    /// The namespace of snapshot `snap_id`.
    pub fn snap_namespace(&self, snap_id: u64) -> Result<SnapNamespace, RbdError> {
        let what = || {
            format!(
                "get the namespace of snapshot ID {snap_id} of RBD image {}",
                self.spec()
            )
        };
        let mut kind: c_int = -1;
        // SAFETY: the image is open.
        let result =
            unsafe { (self.rbd().rbd_snap_get_namespace_type)(self.handle, snap_id, &mut kind) };
        check(result, what)?;
        match kind {
            ffi::SNAP_NAMESPACE_TYPE_USER => Ok(SnapNamespace::User),
            ffi::SNAP_NAMESPACE_TYPE_TRASH => Ok(SnapNamespace::Trash),
            ffi::SNAP_NAMESPACE_TYPE_GROUP => {
                let mut namespace = ffi::SnapGroupNamespace {
                    group_pool: 0,
                    group_name: std::ptr::null_mut(),
                    group_snap_name: std::ptr::null_mut(),
                };
                let size = std::mem::size_of::<ffi::SnapGroupNamespace>();
                // SAFETY: the image is open; `namespace` has the size given.
                let result = unsafe {
                    (self.rbd().rbd_snap_get_group_namespace)(
                        self.handle,
                        snap_id,
                        &mut namespace,
                        size,
                    )
                };
                check(result, what)?;
                // SAFETY: librbd's strings, alive until the cleanup below.
                let found = unsafe {
                    SnapNamespace::Group {
                        group_pool_id: namespace.group_pool,
                        group: owned(namespace.group_name),
                        group_snapshot: owned(namespace.group_snap_name),
                    }
                };
                // SAFETY: filled by rbd_snap_get_group_namespace.
                unsafe { (self.rbd().rbd_snap_group_namespace_cleanup)(&mut namespace, size) };
                Ok(found)
            }
            other => Ok(SnapNamespace::Other(other)),
        }
    }

    /// Its snapshot that belongs to group snapshot `group_snapshot` of `group`, if any.
    pub fn group_snap(
        &self,
        group: &str,
        group_snapshot: &str,
    ) -> Result<Option<Snapshot>, RbdError> {
        Ok(self.snaps()?.into_iter().find(|snap| {
            matches!(&snap.namespace, SnapNamespace::Group { group: found_group, group_snapshot: found_snapshot, .. }
                if found_group == group && found_snapshot == group_snapshot)
        }))
    }

    /// The ID of its snapshot in group snapshot `group_snapshot` of `group`, if any.
    pub fn group_snap_id(
        &self,
        group: &str,
        group_snapshot: &str,
    ) -> Result<Option<u64>, RbdError> {
        Ok(self.group_snap(group, group_snapshot)?.map(|snap| snap.id))
    }

    /// Rolls the live image back to snapshot `name`, reporting progress.
    pub fn snap_rollback(&self, name: &str, progress: &dyn Progress) -> Result<(), RbdError> {
        let what = || format!("roll back RBD image {} to snapshot {name}", self.spec());
        let name_text = c_string(name, &what())?;
        let reporter = Mutex::new(ProgressReporter::new(progress, what()));
        // SAFETY: the image is open; the callback's data outlives the call.
        let result = unsafe {
            (self.rbd().rbd_snap_rollback_with_progress)(
                self.handle,
                name_text.as_ptr(),
                report_progress,
                reporter_data(&reporter),
            )
        };
        lock(&reporter).end();
        check(result, what).map(drop)
    }

    /// Copies the parent's data into this clone and detaches it from the parent, reporting
    /// progress.
    pub fn flatten(&self, progress: &dyn Progress) -> Result<(), RbdError> {
        let what = || format!("flatten RBD image {}", self.spec());
        let reporter = Mutex::new(ProgressReporter::new(progress, what()));
        // SAFETY: the image is open; the callback's data outlives the call.
        let result = unsafe {
            (self.rbd().rbd_flatten_with_progress)(
                self.handle,
                report_progress,
                reporter_data(&reporter),
            )
        };
        lock(&reporter).end();
        check(result, what).map(drop)
    }

    /// The allocated extents within `length` bytes at `offset`, sorted and merged, at byte
    /// granularity where the cluster keeps it (the parent's data counts for a clone). What
    /// is outside them reads as zeros: a hole.
    pub fn allocation(&self, offset: u64, length: u64) -> Result<Vec<Extent>, RbdError> {
        let mut extents: Vec<Extent> = Vec::new();
        // SAFETY: the image is open; the callback's data outlives the call.
        let result = unsafe {
            (self.rbd().rbd_diff_iterate2)(
                self.handle,
                std::ptr::null(),
                offset,
                length,
                1,
                0,
                collect_extent,
                (&mut extents as *mut Vec<Extent>).cast(),
            )
        };
        check(result, || {
            format!("list the allocated extents of RBD image {}", self.spec())
        })?;
        extents.sort_by_key(|extent| extent.offset);
        let mut merged: Vec<Extent> = Vec::with_capacity(extents.len());
        for extent in extents {
            match merged.last_mut() {
                Some(last) if last.offset + last.length >= extent.offset => {
                    let end = (last.offset + last.length).max(extent.offset + extent.length);
                    last.length = end - last.offset;
                }
                _ => merged.push(extent),
            }
        }
        Ok(merged)
    }
}

unsafe extern "C" fn collect_extent(
    offset: u64,
    length: usize,
    exists: c_int,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Vec<Extent>` that `allocation` passed, alive for the call.
    let extents = unsafe { &mut *data.cast::<Vec<Extent>>() };
    if exists != 0 && length > 0 {
        extents.push(Extent {
            offset,
            length: length as u64,
        });
    }
    0
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
