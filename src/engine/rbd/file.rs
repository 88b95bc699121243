//! An open RBD image as a [`DurableFile`]: how the store's data path reads and writes an
//! `rbd:POOL/IMAGE` volume through librbd.
//!
//! - `sync_data` is `rbd_flush`: every completed write is then durable in the cluster.
//! - `next_data` / `next_hole` come from `rbd_diff_iterate2` (byte granularity, the parent's
//!   data included for a clone); `punch_hole` is `rbd_write_zeroes`, which zeroes exactly and
//!   deallocates what it can (a plain discard skips ranges smaller than librbd's granularity).
//! - An RBD image cannot be resized or stamped here: `set_len` and `set_modified` fail with
//!   `Unsupported` (the data path then keeps the fingerprint as it is).
//! - The fingerprint is the image's size and identity: `inode` is a hash of the image ID, so
//!   an image removed and created again under the same name is a different volume; its
//!   modification time is always 0, since RBD keeps none per write. Writes by other clients
//!   of the shared cluster are not detectable here (FORMAT.md, "Change detection").

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use super::{Cluster, Image, RbdError, CONNECT_TIMEOUT};
use crate::engine::model::{ArrayAttachment, RbdPool};
use crate::engine::store::backend::{DurableBackend, DurableFile, FileFingerprint};
use crate::engine::vss::VssCode;

/// An open image (live, or at a snapshot when read-only) as a file.
pub struct RbdFile {
    image: Image,
    identity: u64,
}

impl std::fmt::Debug for RbdFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RbdFile")
            .field("image", &self.image)
            .finish()
    }
}

/// An [`RbdError`] as the `io::Error` the data path expects, keeping its errno and message.
pub fn io_error(error: RbdError) -> io::Error {
    match error.errno() {
        Some(errno) => io::Error::new(
            io::Error::from_raw_os_error(errno).kind(),
            error.to_string(),
        ),
        None => io::Error::new(io::ErrorKind::Unsupported, error.to_string()),
    }
}

impl RbdFile {
    pub fn new(image: Image) -> Result<RbdFile, RbdError> {
        let id = image.id()?;
        // FNV-1a: stable across processes and versions, unlike the standard hasher.
        let identity = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        Ok(RbdFile { image, identity })
    }

    /// The image.
    pub fn image(&self) -> &Image {
        &self.image
    }
}

impl DurableFile for RbdFile {
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        self.image.read_at(buffer, offset).map_err(io_error)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.image.write_at(data, offset).map_err(io_error)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.image.flush().map_err(io_error)
    }

    fn size(&self) -> io::Result<u64> {
        self.image.size().map_err(io_error)
    }

    fn set_len(&self, _length: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "RBD image {} cannot be resized by diskshadow",
                self.image.spec()
            ),
        ))
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        let size = self.size()?;
        if offset >= size {
            return Ok(None);
        }
        let extents = self
            .image
            .allocation(offset, size - offset)
            .map_err(io_error)?;
        Ok(extents.first().map(|extent| extent.offset.max(offset)))
    }

    fn next_hole(&self, offset: u64) -> io::Result<u64> {
        let size = self.size()?;
        if offset >= size {
            return Ok(offset);
        }
        let extents = self
            .image
            .allocation(offset, size - offset)
            .map_err(io_error)?;
        match extents.first() {
            Some(extent) if extent.offset <= offset => {
                Ok((extent.offset + extent.length).min(size))
            }
            _ => Ok(offset),
        }
    }

    fn fingerprint(&self) -> io::Result<FileFingerprint> {
        Ok(FileFingerprint {
            size: self.size()?,
            modified_ns: 0,
            inode: self.identity,
        })
    }

    fn punch_hole(&self, offset: u64, length: u64) -> io::Result<()> {
        self.image.write_zeroes(offset, length).map_err(io_error)
    }
}

/// The pools a store is attached to, by pool name: where [`RbdRouting`] finds the cluster of
/// an `rbd:POOL/IMAGE` path. Shared between the engine (which updates it as pools are
/// attached and detached) and the routing backend.
#[derive(Debug, Clone, Default)]
pub struct AttachedPools(Arc<RwLock<BTreeMap<String, RbdPool>>>);

impl AttachedPools {
    /// Replaces the pools by those among `arrays` (a store's attached arrays).
    pub fn set<'a>(&self, arrays: impl IntoIterator<Item = &'a ArrayAttachment>) {
        let pools = arrays
            .into_iter()
            .filter_map(|attachment| attachment.rbd.clone())
            .map(|pool| (pool.pool.clone(), pool))
            .collect();
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = pools;
    }

    /// The attached pool called `pool`.
    pub fn get(&self, pool: &str) -> Option<RbdPool> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(pool)
            .cloned()
    }

    /// Opens image `image` of the attached pool `pool` (read-only or read-write), through this
    /// process's connection to its cluster.
    pub fn open(&self, pool: &str, image: &str, read_only: bool) -> Result<RbdFile, OpenError> {
        let attached = self.get(pool).ok_or_else(|| OpenError::NotAttached {
            pool: pool.to_string(),
        })?;
        let cluster = Cluster::shared(
            &attached.conf,
            attached.client_id.as_deref(),
            CONNECT_TIMEOUT,
        )?;
        let pool = cluster.pool(pool)?;
        let image = if read_only {
            pool.open_read_only(image)?
        } else {
            pool.open(image)?
        };
        Ok(RbdFile::new(image)?)
    }
}

/// Why an `rbd:POOL/IMAGE` volume cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("this store is attached to no Ceph pool `{pool}`")]
    NotAttached { pool: String },
    #[error(transparent)]
    Rbd(#[from] RbdError),
}

impl OpenError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            OpenError::NotAttached { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            OpenError::Rbd(error) => error.vss_code(),
        }
    }
}

/// `rbd:POOL/IMAGE` -> `(POOL, IMAGE)`; `None` for any other path (an image file).
pub fn volume_path_parts(path: &Path) -> Option<(&str, &str)> {
    let (pool, image) = path.to_str()?.strip_prefix("rbd:")?.split_once('/')?;
    (!pool.is_empty() && !image.is_empty() && !image.contains('/') && !image.contains('@'))
        .then_some((pool, image))
}

pub use crate::engine::model::is_rbd_volume_path as is_volume_path;

/// The store's backend with `rbd:POOL/IMAGE` paths opened through librbd: every other path
/// and operation goes to the backend it wraps, so crash-testing backends still see every
/// file of the store.
pub struct RbdRouting {
    inner: Arc<dyn DurableBackend>,
    pools: AttachedPools,
}

impl RbdRouting {
    pub fn new(inner: Arc<dyn DurableBackend>, pools: AttachedPools) -> RbdRouting {
        RbdRouting { inner, pools }
    }

    fn open_rbd(&self, path: &Path, read_only: bool) -> Option<io::Result<Arc<dyn DurableFile>>> {
        if !is_volume_path(path) {
            return None;
        }
        let Some((pool, image)) = volume_path_parts(path) else {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not an RBD volume name (rbd:POOL/IMAGE)",
                    path.display()
                ),
            )));
        };
        Some(
            self.pools
                .open(pool, image, read_only)
                .map(|file| Arc::new(file) as Arc<dyn DurableFile>)
                .map_err(|error| match error {
                    OpenError::Rbd(error) => io_error(error),
                    other => io::Error::new(io::ErrorKind::NotFound, other.to_string()),
                }),
        )
    }
}

impl DurableBackend for RbdRouting {
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DurableFile>> {
        self.open_rbd(path, false)
            .unwrap_or_else(|| self.inner.open_file(path, create))
    }

    fn open_file_read_only(&self, path: &Path) -> io::Result<Arc<dyn DurableFile>> {
        self.open_rbd(path, true)
            .unwrap_or_else(|| self.inner.open_file_read_only(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
}
