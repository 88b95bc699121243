//! An open image: reads, writes, allocation, snapshots and their namespaces, flatten.

use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Mutex};

use crate::engine::progress::Progress;

use super::{
    c_string, check, ffi, lock, owned, report_progress, reporter_data, Cluster, ProgressReporter,
    RbdError,
};

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
    pub(super) cluster: Arc<Cluster>,
    pub(super) handle: ffi::ImageT,
    pub(super) pool: String,
    pub(super) name: String,
    pub(super) snap_id: Option<u64>,
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

    /// Its feature bits ([`features`](super::features)).
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
