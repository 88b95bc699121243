//! Reaching the cluster: an RBD volume's path (`rbd:POOL/IMAGE`), the pools the store is
//! attached to, and a shadow's snapshot opened read-only as a [`DurableFile`].

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::engine::model::RbdPool;
use crate::engine::store::{DurableFile, FileFingerprint};

use super::to_io;

/// An RBD volume's pool and image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub pool: String,
    pub image: String,
}

/// The pool and image of a volume named `rbd:POOL/IMAGE` (`None`: not an RBD volume).
pub fn volume_spec(path: &Path) -> Option<VolumeSpec> {
    let text = path.to_str()?.strip_prefix("rbd:")?;
    let (pool, image) = text.split_once('/')?;
    (!pool.is_empty() && !image.is_empty() && !image.contains('/')).then(|| VolumeSpec {
        pool: pool.to_string(),
        image: image.to_string(),
    })
}

/// The volume path of image `image` of pool `pool`.
pub fn volume_path(pool: &str, image: &str) -> PathBuf {
    PathBuf::from(format!("rbd:{pool}/{image}"))
}

/// The pools a store is attached to, by name.
pub struct Pools<'a>(pub &'a BTreeMap<String, RbdPool>);

impl Pools<'_> {
    /// The pool `pool` (the store must be attached to it), through this process's
    /// connection to its cluster.
    pub fn pool(
        &self,
        pool: &str,
    ) -> Result<crate::engine::rbd::Pool, crate::engine::rbd::RbdError> {
        let access =
            self.0
                .get(pool)
                .ok_or_else(|| crate::engine::rbd::RbdError::PoolNotFound {
                    pool: format!(
                        "{pool} (this store is not attached to it: array attach rbd:{pool})"
                    ),
                })?;
        crate::engine::rbd::Cluster::shared(
            &access.conf,
            access.client_id.as_deref(),
            crate::engine::rbd::CONNECT_TIMEOUT,
        )?
        .pool(pool)
    }
}

/// An image open read-only at a shadow's snapshot, as the engine reads independent shadows.
pub(super) struct SnapshotFile {
    pub(super) image: crate::engine::rbd::Image,
    pub(super) size: u64,
}

impl SnapshotFile {
    fn read_only(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the RBD snapshot of {} is read-only", self.image.spec()),
        )
    }
}

impl DurableFile for SnapshotFile {
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        self.image.read_at(buffer, offset).map_err(to_io)
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(self.read_only())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
    fn set_len(&self, _length: u64) -> io::Result<()> {
        Err(self.read_only())
    }
    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        if offset >= self.size {
            return Ok(None);
        }
        let extents = self
            .image
            .allocation(offset, self.size - offset)
            .map_err(to_io)?;
        Ok(extents
            .iter()
            .find(|extent| extent.offset + extent.length > offset)
            .map(|extent| extent.offset.max(offset)))
    }
    fn next_hole(&self, offset: u64) -> io::Result<u64> {
        if offset >= self.size {
            return Ok(offset);
        }
        let extents = self
            .image
            .allocation(offset, self.size - offset)
            .map_err(to_io)?;
        let mut hole = offset;
        for extent in extents {
            if extent.offset > hole {
                break;
            }
            hole = hole.max(extent.offset + extent.length);
        }
        Ok(hole.min(self.size))
    }
    /// A snapshot never changes: its size and ID are its fingerprint.
    fn fingerprint(&self) -> io::Result<FileFingerprint> {
        Ok(FileFingerprint {
            size: self.size,
            modified_ns: 0,
            inode: self.image.snap_id().unwrap_or_default(),
        })
    }
}
