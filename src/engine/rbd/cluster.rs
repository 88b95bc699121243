//! Loading librados and librbd, and the connections to clusters: one per configuration
//! file and client, made on first use and shared.

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libloading::Library;

use super::{c_string, check, ffi, Pool, RbdError, LIBRADOS, LIBRBD};

/// The loaded libraries and their entry points.
pub struct Ceph {
    pub(super) rados: ffi::Rados,
    pub(super) rbd: ffi::Rbd,
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
    pub(super) ceph: Arc<Ceph>,
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
