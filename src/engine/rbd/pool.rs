//! A pool's I/O context: its images (list, create, open, clone, remove), groups, group
//! snapshots and their members.

use std::ffi::{c_char, c_int, CStr};
use std::sync::{Arc, Mutex};

use crate::engine::progress::Progress;

use super::{
    c_string, check, ffi, lock, owned, report_progress, reporter_data, Cluster, Image,
    ProgressReporter, RbdError,
};

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
    pub(super) cluster: Arc<Cluster>,
    pub(super) ioctx: ffi::IoctxT,
    pub(super) name: String,
    pub(super) id: i64,
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

    /// Creates image `name` of `size` bytes with the feature bits `features` ([`features`](super::features)).
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
