//! Storage arrays: where hardware shadow copies live.
//!
//! An array is a directory of LUN image files, possibly on storage that several stores (each
//! one a "host") reach at once. A store attaches to an array (`diskshadow array attach DIR`);
//! a volume whose image is inside an attached array is a LUN of it, and the array provider
//! (`provider.rs`) makes its shadows as whole-LUN clones inside the array.
//!
//! The array keeps its own small catalog, `diskshadow-array.json` in its directory: its ID and
//! name, the hosts attached to it, and each shadow LUN (which LUN it clones, which set it
//! belongs to, whether it is transportable, which hosts imported it). Every host reads and
//! writes it under an `flock` on `diskshadow-array.lock` (shared to read, exclusive to
//! change), and every change is written atomically: a new file, synced, renamed over the old
//! one, the directory synced. Two hosts acting at once therefore serialize, and a crash leaves
//! the catalog before or after a change, never a mix. LUN paths are kept relative to the array
//! directory, so hosts that mount the shared directory at different places agree.
//!
//! ```text
//! <array>/diskshadow-array.json    the array catalog (its presence makes the directory an array)
//! <array>/diskshadow-array.lock    flock(LOCK_SH to read, LOCK_EX to change)
//! <array>/shadows/<shadow>.lun     one whole-LUN clone per shadow copy
//! <array>/*                        the LUNs: image files anywhere below the directory
//! ```

pub mod provider;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::ids::{ShadowId, ShadowSetId};
use crate::engine::vss::VssCode;

pub use provider::{ArrayProvider, ARRAY_PROVIDER_ID, ARRAY_PROVIDER_NAME};

/// The array catalog's file name; a directory holding it is an array.
pub const CATALOG_FILE: &str = "diskshadow-array.json";
const LOCK_FILE: &str = "diskshadow-array.lock";
const SHADOW_DIR: &str = "shadows";
const FORMAT_VERSION: u32 = 1;
/// A catalog larger than this is damage, not an array (it holds a few lines per shadow).
const MAX_CATALOG_BYTES: u64 = 64 << 20;

/// One host: a store, named by its directory as that host sees it and its machine name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ArrayHost {
    pub machine: String,
    pub store: PathBuf,
}

impl std::fmt::Display for ArrayHost {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} ({})", self.machine, self.store.display())
    }
}

/// One shadow LUN: a whole-LUN clone inside the array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayShadow {
    pub set_id: ShadowSetId,
    /// The LUN it is a clone of, relative to the array directory.
    pub lun: PathBuf,
    /// The clone, relative to the array directory.
    pub clone: PathBuf,
    /// The LUN's size at the point in time.
    pub size: u64,
    /// The host whose store made it.
    pub created_by: PathBuf,
    /// Made by a reflink clone (`FICLONE`), else by a full copy.
    pub reflink: bool,
    /// Made with `set option transportable`: surfaced only where it is imported.
    #[serde(default)]
    pub transportable: bool,
    /// The hosts it is imported on.
    #[serde(default)]
    pub imported_by: Vec<ArrayHost>,
}

/// The array's own catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayCatalog {
    pub format: u32,
    pub id: uuid::Uuid,
    pub name: String,
    pub hosts: Vec<ArrayHost>,
    pub shadows: BTreeMap<ShadowId, ArrayShadow>,
}

pub use crate::engine::model::{ArrayAttachment, RbdPool};

/// An attached array as `array list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayInfo {
    /// The name this store gives it.
    pub name: String,
    pub id: uuid::Uuid,
    pub path: PathBuf,
    pub hosts: Vec<ArrayHost>,
    pub shadow_luns: usize,
    /// Why its catalog cannot be read now, if it cannot.
    pub problem: Option<String>,
    /// Set when the array is a Ceph pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbd: Option<RbdPool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    #[error("{} is not a directory; an array is a directory of LUN image files", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is not an array: it has no {CATALOG_FILE}", path.display())]
    NotAnArray { path: PathBuf },
    #[error("the array catalog {} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("the array catalog {} could not be written or read: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl ArrayError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            ArrayError::NotADirectory { .. } | ArrayError::NotAnArray { .. } => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            ArrayError::Damaged { .. } | ArrayError::Io { .. } => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
        }
    }
}

/// An array shadow's LUNs as this host reaches them (what `resync` reads and writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowLun {
    /// The name this store gives the array.
    pub array_name: String,
    /// The LUN the shadow is a clone of.
    pub original: PathBuf,
    /// The shadow LUN.
    pub clone: PathBuf,
    /// The original LUN as a volume of this store.
    pub volume: crate::engine::ids::VolumeId,
    pub size: u64,
}

/// An array as `array list` shows it, from its catalog (or why that cannot be read).
pub fn array_info(name: &str, root: &Path, catalog: Result<ArrayCatalog, ArrayError>) -> ArrayInfo {
    match catalog {
        Ok(catalog) => ArrayInfo {
            name: name.to_string(),
            id: catalog.id,
            path: root.to_path_buf(),
            hosts: catalog.hosts,
            shadow_luns: catalog.shadows.len(),
            problem: None,
            rbd: None,
        },
        Err(error) => ArrayInfo {
            name: name.to_string(),
            id: uuid::Uuid::nil(),
            path: root.to_path_buf(),
            hosts: Vec::new(),
            shadow_luns: 0,
            problem: Some(error.to_string()),
            rbd: None,
        },
    }
}

/// `array attach` / `array detach`.
#[derive(Debug, thiserror::Error)]
pub enum ArrayAttachError {
    #[error(transparent)]
    Array(#[from] ArrayError),
    #[error("`{name}` is not a usable array name")]
    InvalidName { name: String },
    #[error("this store already calls another array `{name}` ({})", path.display())]
    NameInUse { name: String, path: PathBuf },
    #[error("this store is already attached to the array at {} as `{name}`", path.display())]
    AlreadyAttached { name: String, path: PathBuf },
    #[error("this store is attached to no array called `{name}`")]
    NotAttached { name: String },
    #[error("the array `{name}` holds {count} shadow copies of this store")]
    InUse { name: String, count: usize },
    #[error(transparent)]
    Catalog(#[from] crate::engine::catalog::CatalogError),
    #[error(transparent)]
    Rbd(#[from] crate::engine::rbd::RbdError),
    #[error("the Ceph configuration {} does not exist", conf.display())]
    RbdConfMissing { conf: PathBuf },
    #[error("`{pool}` is not a usable Ceph pool name")]
    InvalidPool { pool: String },
}

impl ArrayAttachError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            ArrayAttachError::Array(error) => error.vss_code(),
            ArrayAttachError::Rbd(error) => error.vss_code(),
            ArrayAttachError::RbdConfMissing { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            ArrayAttachError::InvalidPool { .. } => VssCode::VSS_E_BAD_STATE,
            ArrayAttachError::InvalidName { .. } => VssCode::VSS_E_BAD_STATE,
            ArrayAttachError::NameInUse { .. } | ArrayAttachError::AlreadyAttached { .. } => {
                VssCode::VSS_E_OBJECT_ALREADY_EXISTS
            }
            ArrayAttachError::NotAttached { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            ArrayAttachError::InUse { .. } => VssCode::VSS_E_VOLUME_IN_USE,
            ArrayAttachError::Catalog(_) => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

/// `import`.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("no metadata is loaded")]
    NothingLoaded,
    #[error("shadow copy {shadow} was made by provider {provider}, which makes no transportable shadow copies; only hardware shadow copies are imported")]
    NotHardware {
        shadow: ShadowId,
        provider: crate::engine::ids::ProviderId,
    },
    #[error("shadow copy {shadow} is not transportable")]
    NotTransportable { shadow: ShadowId },
    #[error("shadow copy {shadow} is already imported on this store")]
    AlreadyImported { shadow: ShadowId },
    #[error("shadow copy {shadow} is in no array this store is attached to ({attached})")]
    NotInAttachedArray { shadow: ShadowId, attached: String },
    #[error("the shadow LUN {} of shadow copy {shadow} is missing from its array", path.display())]
    CloneMissing { shadow: ShadowId, path: PathBuf },
    #[error(transparent)]
    Array(#[from] ArrayError),
    #[error("the LUN {} cannot be registered: {reason}", path.display())]
    Lun { path: PathBuf, reason: String },
    #[error("shadow copy {shadow} cannot be imported: {reason}")]
    NotFound { shadow: ShadowId, reason: String },
    #[error(transparent)]
    Catalog(#[from] crate::engine::catalog::CatalogError),
}

impl ImportError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            ImportError::NothingLoaded => VssCode::VSS_E_BAD_STATE,
            ImportError::NotHardware { .. } | ImportError::NotTransportable { .. } => {
                VssCode::VSS_E_NOT_SUPPORTED
            }
            ImportError::AlreadyImported { .. } => VssCode::VSS_E_OBJECT_ALREADY_EXISTS,
            ImportError::NotInAttachedArray { .. }
            | ImportError::CloneMissing { .. }
            | ImportError::NotFound { .. } => VssCode::VSS_E_NO_SNAPSHOTS_IMPORTED,
            ImportError::Array(error) => error.vss_code(),
            ImportError::Lun { .. } => VssCode::VSS_E_VOLUME_NOT_SUPPORTED,
            ImportError::Catalog(_) => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

/// `mask` and `break`: what they do to an imported set.
#[derive(Debug, thiserror::Error)]
pub enum ImportedSetError {
    #[error("shadow copy set {set_id} was not found")]
    SetNotFound { set_id: ShadowSetId },
    #[error("shadow copy {shadow} was not imported; `{command}` works on hardware shadow copies brought in by `import`")]
    NotImported {
        shadow: ShadowId,
        command: &'static str,
    },
    #[error("shadow copy {shadow} is exposed")]
    Exposed { shadow: ShadowId },
    #[error("the shadow LUN of {shadow} is in no array this store is attached to")]
    NoArray { shadow: ShadowId },
    #[error("the shadow LUN {} cannot become a volume: {reason}", path.display())]
    Volume { path: PathBuf, reason: String },
    #[error("the shadow LUN {} could not be moved: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Array(#[from] ArrayError),
    #[error(transparent)]
    Catalog(#[from] crate::engine::catalog::CatalogError),
}

impl ImportedSetError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            ImportedSetError::SetNotFound { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            ImportedSetError::NotImported { .. } => VssCode::VSS_E_NOT_SUPPORTED,
            ImportedSetError::Exposed { .. } => VssCode::VSS_E_VOLUME_IN_USE,
            ImportedSetError::NoArray { .. } | ImportedSetError::Array(_) => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
            ImportedSetError::Volume { .. } | ImportedSetError::Io { .. } => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
            ImportedSetError::Catalog(_) => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

/// Where a broken-off shadow LUN becomes an ordinary LUN of its array.
pub fn broken_lun_path(root: &Path, shadow: ShadowId) -> PathBuf {
    root.join("broken")
        .join(format!("{}.img", shadow.0.hyphenated()))
}

/// Whether `name` can name an array in a store.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ArrayError + '_ {
    move |source| ArrayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The array directory holding `path` (the nearest ancestor with an array catalog).
pub fn array_root_of(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|dir| dir.join(CATALOG_FILE).is_file())
        .map(Path::to_path_buf)
}

/// Where the clone of `shadow` lives in the array at `root`.
pub fn clone_path(root: &Path, shadow: ShadowId) -> PathBuf {
    root.join(SHADOW_DIR)
        .join(format!("{}.lun", shadow.0.hyphenated()))
}

/// `path` relative to the array at `root` (`None`: not inside it).
pub fn relative_to(root: &Path, path: &Path) -> Option<PathBuf> {
    path.strip_prefix(root).ok().map(Path::to_path_buf)
}

/// A relative path from an array catalog, refused if it could leave the array (a catalog on
/// shared storage is written by other hosts).
pub fn inside(root: &Path, relative: &Path) -> Result<PathBuf, ArrayError> {
    let safe = relative
        .components()
        .all(|component| matches!(component, std::path::Component::Normal(_)));
    if !safe || relative.as_os_str().is_empty() {
        return Err(ArrayError::Damaged {
            path: root.join(CATALOG_FILE),
            reason: format!("the path {} leaves the array", relative.display()),
        });
    }
    Ok(root.join(relative))
}

/// An `flock` on the array's lock file, released when dropped (or when the process ends).
struct ArrayLock {
    _file: File,
}

impl ArrayLock {
    fn take(root: &Path, exclusive: bool) -> Result<ArrayLock, ArrayError> {
        let path = root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(&path))?;
        let operation = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
            if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
                return Ok(ArrayLock { _file: file });
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(ArrayError::Io {
                    path,
                    source: error,
                });
            }
        }
    }
}

fn read_unlocked(root: &Path) -> Result<Option<ArrayCatalog>, ArrayError> {
    let path = root.join(CATALOG_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let length = file.metadata().map_err(io_error(&path))?.len();
    if length > MAX_CATALOG_BYTES {
        return Err(ArrayError::Damaged {
            path,
            reason: format!("it is {length} bytes long"),
        });
    }
    let catalog: ArrayCatalog =
        serde_json::from_reader(io::BufReader::new(file)).map_err(|error| ArrayError::Damaged {
            path: path.clone(),
            reason: error.to_string(),
        })?;
    if catalog.format != FORMAT_VERSION {
        return Err(ArrayError::Damaged {
            path,
            reason: format!(
                "format {} is not the format {FORMAT_VERSION} this diskshadow reads",
                catalog.format
            ),
        });
    }
    Ok(Some(catalog))
}

/// Writes the catalog atomically: new file, sync, rename, sync the directory.
fn write_unlocked(root: &Path, catalog: &ArrayCatalog) -> Result<(), ArrayError> {
    let path = root.join(CATALOG_FILE);
    let new_path = root.join(format!("{CATALOG_FILE}.new"));
    let text = serde_json::to_vec_pretty(catalog).map_err(|error| ArrayError::Damaged {
        path: path.clone(),
        reason: error.to_string(),
    })?;
    let mut file = File::create(&new_path).map_err(io_error(&new_path))?;
    file.write_all(&text).map_err(io_error(&new_path))?;
    file.sync_all().map_err(io_error(&new_path))?;
    drop(file);
    std::fs::rename(&new_path, &path).map_err(io_error(&path))?;
    File::open(root)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(root))
}

/// Reads the array catalog at `root` under a shared lock.
pub fn read(root: &Path) -> Result<ArrayCatalog, ArrayError> {
    let _lock = ArrayLock::take(root, false)?;
    read_unlocked(root)?.ok_or_else(|| ArrayError::NotAnArray {
        path: root.to_path_buf(),
    })
}

/// Changes the array catalog at `root` under the exclusive lock: `change` sees the current
/// catalog and what it returns is kept only if it succeeds. The catalog is written only when
/// `change` altered it.
pub fn update<T, E: From<ArrayError>>(
    root: &Path,
    change: impl FnOnce(&mut ArrayCatalog) -> Result<T, E>,
) -> Result<T, E> {
    let _lock = ArrayLock::take(root, true)?;
    let mut catalog = read_unlocked(root)?.ok_or_else(|| ArrayError::NotAnArray {
        path: root.to_path_buf(),
    })?;
    let before = catalog.clone();
    let result = change(&mut catalog)?;
    if catalog != before {
        write_unlocked(root, &catalog)?;
    }
    Ok(result)
}

/// Makes `root` an array if it is not one yet (a new ID, `name`), and records `host` as
/// attached to it. Returns its catalog.
pub fn attach_host(
    root: &Path,
    name: &str,
    new_id: uuid::Uuid,
    host: ArrayHost,
) -> Result<ArrayCatalog, ArrayError> {
    if !root.is_dir() {
        return Err(ArrayError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let _lock = ArrayLock::take(root, true)?;
    let mut catalog = read_unlocked(root)?.unwrap_or_else(|| ArrayCatalog {
        format: FORMAT_VERSION,
        id: new_id,
        name: name.to_string(),
        hosts: Vec::new(),
        shadows: BTreeMap::new(),
    });
    if !catalog.hosts.contains(&host) {
        catalog.hosts.push(host);
    }
    std::fs::create_dir_all(root.join(SHADOW_DIR)).map_err(io_error(root))?;
    write_unlocked(root, &catalog)?;
    Ok(catalog)
}

/// Removes `host` from the array's hosts.
pub fn detach_host(root: &Path, host: &ArrayHost) -> Result<(), ArrayError> {
    update(root, |catalog: &mut ArrayCatalog| {
        catalog.hosts.retain(|known| known != host);
        Ok::<(), ArrayError>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(store: &str) -> ArrayHost {
        ArrayHost {
            machine: "test".to_string(),
            store: PathBuf::from(store),
        }
    }

    #[test]
    fn attach_makes_an_array_that_two_hosts_share() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = uuid::Uuid::from_u128(7);
        let first = attach_host(dir.path(), "san", id, host("/a")).expect("attach a");
        assert_eq!(first.id, id);
        let second =
            attach_host(dir.path(), "other", uuid::Uuid::from_u128(8), host("/b")).expect("b");
        assert_eq!(second.id, id, "the array keeps its ID");
        assert_eq!(second.name, "san");
        assert_eq!(second.hosts, vec![host("/a"), host("/b")]);
        detach_host(dir.path(), &host("/a")).expect("detach");
        assert_eq!(read(dir.path()).expect("read").hosts, vec![host("/b")]);
        let lun = dir.path().join("luns").join("p.img");
        assert_eq!(array_root_of(&lun).as_deref(), Some(dir.path()));
    }

    #[test]
    fn a_damaged_catalog_and_a_path_leaving_the_array_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            read(dir.path()),
            Err(ArrayError::NotAnArray { .. })
        ));
        std::fs::write(dir.path().join(CATALOG_FILE), b"{ not json").expect("write");
        assert!(matches!(read(dir.path()), Err(ArrayError::Damaged { .. })));
        assert!(inside(dir.path(), Path::new("../etc/passwd")).is_err());
        assert!(inside(dir.path(), Path::new("/etc/passwd")).is_err());
        assert!(inside(dir.path(), Path::new("luns/p.img")).is_ok());
    }

    #[test]
    fn concurrent_updates_from_many_hosts_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        attach_host(dir.path(), "san", uuid::Uuid::from_u128(1), host("/a")).expect("attach");
        let threads: Vec<_> = (0..8)
            .map(|index| {
                let root = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for round in 0..10 {
                        attach_host(
                            &root,
                            "san",
                            uuid::Uuid::from_u128(2),
                            host(&format!("/h{index}-{round}")),
                        )
                        .expect("attach");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(read(dir.path()).expect("read").hosts.len(), 81);
    }
}
