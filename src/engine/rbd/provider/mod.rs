//! The Ceph RBD provider ("diskshadow Ceph RBD provider", `VSS_PROV_HARDWARE`): a shadow of
//! an RBD volume is an RBD snapshot inside the cluster, made while the set's writes are held
//! (O(1): the cluster marks the point in time, nothing is copied).
//!
//! - A set of one image is a plain image snapshot, `diskshadow.<shadow>` (with `.t` appended
//!   when transportable).
//! - A set of several images is ONE RBD group snapshot, `diskshadow.<set>[.t]`, of a group
//!   holding exactly the set's images, so the set is atomic across images as VSS sets are.
//!   An RBD image belongs to at most one group, so the rule is: images shadowed together form
//!   a group `diskshadow.<first set>`, created on demand for images in no group; a set whose
//!   images are in a group that holds other images is refused with the image and group named
//!   (the group snapshots of that group would otherwise lose an image).
//!
//! Everything an importer needs is in the names: the snapshot of shadow `S` of set `T` is the
//! image snapshot naming `S`, or the image's snapshot in the group namespace of the group
//! snapshot naming `T`. The cluster is the shadow's only copy: a snapshot removed behind
//! diskshadow's back makes the shadow missing (never served), and a create cut off between
//! the snapshot and the store's commit leaves a snapshot no shadow owns, which `check`
//! reports (never removes: another store attached to the same pool may be about to import
//! it, as transported sets live only in the cluster until imported).

mod reach;

use reach::SnapshotFile;
pub use reach::{volume_path, volume_spec, Pools, VolumeSpec};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::cabinet::ManifestShadow;
use crate::engine::catalog::{ShadowRecord, VolumeRecord};
use crate::engine::ids::{ProviderId, ShadowId, ShadowSetId};
use crate::engine::model::{ProviderInfo, ProviderKind};
use crate::engine::progress::Progress;
use crate::engine::provider::{DataPathKind, DeferredCopies, Provider, ProviderContext, SetMember};
use crate::engine::store::DurableFile;
use crate::engine::vss::Attributes;

/// `{6e1b7c24-d83f-4a59-b1e6-2f9a0c4d8b73}`: diskshadow's Ceph RBD (hardware) provider.
pub const RBD_PROVIDER_ID: uuid::Uuid =
    uuid::Uuid::from_u128(0x6e1b7c24_d83f_4a59_b1e6_2f9a0c4d8b73);
pub const RBD_PROVIDER_NAME: &str = "diskshadow Ceph RBD provider";

/// Every snapshot and group this provider makes starts with it.
const PREFIX: &str = "diskshadow.";
/// Appended to the snapshot of a transportable shadow.
const TRANSPORTABLE_SUFFIX: &str = ".t";

/// Where a shadow's point in time is held in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdSnapshot {
    pub pool: String,
    pub image: String,
    /// The image snapshot's ID (what the shadow is read at).
    pub snap_id: u64,
    /// The image snapshot's name (a group snapshot's image snapshots have librbd's names).
    pub snap_name: String,
    /// The group snapshot holding it: `(group, group snapshot)`.
    pub group: Option<(String, String)>,
    /// The image's size at the snapshot.
    pub size: u64,
}

impl std::fmt::Display for RbdSnapshot {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.group {
            None => write!(formatter, "{}/{}@{}", self.pool, self.image, self.snap_name),
            Some((group, snapshot)) => write!(
                formatter,
                "{}/{}@{} (group {}/{group}@{snapshot})",
                self.pool, self.image, self.snap_name, self.pool
            ),
        }
    }
}

/// The name of the image snapshot of a set of one image.
pub fn image_snapshot_name(shadow: ShadowId, transportable: bool) -> String {
    snapshot_name(&shadow.0.hyphenated().to_string(), transportable)
}

/// The name of the group snapshot of a set of several images.
pub fn group_snapshot_name(set: ShadowSetId, transportable: bool) -> String {
    snapshot_name(&set.0.hyphenated().to_string(), transportable)
}

fn snapshot_name(id: &str, transportable: bool) -> String {
    let suffix = if transportable {
        TRANSPORTABLE_SUFFIX
    } else {
        ""
    };
    format!("{PREFIX}{id}{suffix}")
}

/// The ID a snapshot name of this provider names, and whether it is transportable.
pub fn parse_snapshot_name(name: &str) -> Option<(uuid::Uuid, bool)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (id, transportable) = match rest.strip_suffix(TRANSPORTABLE_SUFFIX) {
        Some(id) => (id, true),
        None => (rest, false),
    };
    uuid::Uuid::parse_str(id).ok().map(|id| (id, transportable))
}

pub struct RbdProvider;

impl Provider for RbdProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: ProviderId(RBD_PROVIDER_ID),
            name: RBD_PROVIDER_NAME.to_string(),
            kind: ProviderKind::Hardware,
            version: "1.0.0.0".to_string(),
            clsid: ProviderId(RBD_PROVIDER_ID),
        }
    }

    /// A snapshot the cluster keeps: hardware-assisted and differential (the cluster shares
    /// unchanged objects with the live image).
    fn attributes(&self) -> Attributes {
        Attributes(Attributes::HARDWARE_ASSISTED | Attributes::DIFFERENTIAL)
    }

    fn unsupported_attributes(&self) -> u32 {
        Attributes::PLEX
    }

    /// Exactly the RBD volumes (the engine also requires a store attached to their pool).
    fn supports(&self, volume: &VolumeRecord) -> bool {
        volume_spec(&volume.path).is_some()
    }

    fn transportable(&self) -> bool {
        true
    }

    fn data_path(&self) -> Option<DataPathKind> {
        None
    }

    /// With every image's writes held: flushes what the live data path wrote through librbd,
    /// then makes one image snapshot (a set of one) or one group snapshot (several).
    fn prepare_set(
        &self,
        context: &ProviderContext<'_>,
        members: &[SetMember<'_>],
        _progress: &dyn Progress,
    ) -> io::Result<DeferredCopies> {
        for member in members {
            member.volume.image().sync_data()?;
        }
        snapshot_set(&Pools(&context.rbd_pools), &members_of(members))?;
        Ok(DeferredCopies::new())
    }

    fn abort_set(&self, context: &ProviderContext<'_>, members: &[SetMember<'_>]) {
        // Best effort: what is left is reported by `check` as belonging to no shadow copy.
        let _ = unsnapshot_set(&Pools(&context.rbd_pools), &members_of(members));
    }

    fn open_shadow(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
    ) -> io::Result<Option<Arc<dyn DurableFile>>> {
        let (pool, snapshot) = locate_record(context, shadow)?;
        open_snapshot(&pool, &snapshot).map(Some)
    }

    /// Removes the shadow's snapshot for every store (a snapshot is one object in the
    /// cluster); a group snapshot goes with the last shadow of its set on this store.
    fn remove_shadow(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
    ) -> io::Result<Option<PathBuf>> {
        let (pool, snapshot) = match locate_record(context, shadow) {
            Ok(found) => found,
            // Already gone (removed behind diskshadow's back): nothing to remove.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let last_of_set = !context
            .shadow_sets
            .iter()
            .any(|(id, set)| *id != shadow.id && *set == shadow.set_id);
        remove_snapshot(&pool, &snapshot, last_of_set)?;
        Ok(None)
    }

    fn check_shadow(&self, context: &ProviderContext<'_>, shadow: &ShadowRecord) -> Vec<String> {
        match locate_record(context, shadow) {
            Ok(_) => Vec::new(),
            Err(error) => vec![format!("RBD shadow copy {}: {error}", shadow.id)],
        }
    }

    fn finds_own_shadows(&self) -> bool {
        true
    }

    fn find_transported(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ManifestShadow,
        set: ShadowSetId,
    ) -> Result<(PathBuf, u64), String> {
        transported(&Pools(&context.rbd_pools), shadow, set)
    }

    fn break_off(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
        progress: &dyn Progress,
    ) -> io::Result<PathBuf> {
        let (pool, snapshot) = locate_record(context, shadow)?;
        break_off(&pool, &snapshot, shadow.id, progress)
    }

    fn leaked(
        &self,
        context: &ProviderContext<'_>,
        is_shadow: &dyn Fn(ShadowId) -> bool,
        is_set: &dyn Fn(ShadowSetId) -> bool,
    ) -> Vec<String> {
        leaked_snapshots(
            &Pools(&context.rbd_pools),
            &mut context.volume_paths.values().map(PathBuf::as_path),
            is_shadow,
            is_set,
        )
    }

    fn locate_shadow(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
    ) -> Result<Option<String>, String> {
        locate_record(context, shadow)
            .map(|(_, snapshot)| Some(format!("RBD snapshot: {snapshot}")))
            .map_err(|error| error.to_string())
    }
}

/// The image read-only at `snapshot`, as the engine reads an independent shadow.
pub fn open_snapshot(
    pool: &super::Pool,
    snapshot: &RbdSnapshot,
) -> io::Result<Arc<dyn DurableFile>> {
    let image = pool
        .open_at_snap_id(&snapshot.image, snapshot.snap_id)
        .map_err(|error| {
            io::Error::other(format!(
                "the RBD snapshot {snapshot} cannot be opened: {error}"
            ))
        })?;
    Ok(Arc::new(SnapshotFile {
        image,
        size: snapshot.size,
    }))
}

/// Removes a shadow's snapshot: an image snapshot at once, a group snapshot with the last
/// shadow of its set (`last_of_set`).
pub fn remove_snapshot(
    pool: &super::Pool,
    snapshot: &RbdSnapshot,
    last_of_set: bool,
) -> io::Result<()> {
    match &snapshot.group {
        None => pool
            .open(&snapshot.image)
            .and_then(|image| image.snap_remove(&snapshot.snap_name))
            .map_err(to_io),
        Some((group, group_snapshot)) if last_of_set => {
            pool.group_snap_remove(group, group_snapshot).map_err(to_io)
        }
        Some(_) => Ok(()),
    }
}

fn to_io(error: super::RbdError) -> io::Error {
    io::Error::other(error.to_string())
}

/// One image of a set being made.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    /// The volume: `rbd:POOL/IMAGE`.
    pub path: &'a Path,
    pub shadow: ShadowId,
    pub set: ShadowSetId,
    pub transportable: bool,
}

fn members_of<'a>(members: &'a [SetMember<'_>]) -> Vec<Member<'a>> {
    members
        .iter()
        .map(|member| Member {
            path: member.image_path,
            shadow: member.shadow,
            set: member.set_id,
            transportable: member.attributes.contains(Attributes::TRANSPORTABLE),
        })
        .collect()
}

/// The pool and image of an RBD volume.
fn volume_of(pools: &Pools<'_>, path: &Path) -> io::Result<(super::Pool, String)> {
    let spec = volume_spec(path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not an RBD volume", path.display()),
        )
    })?;
    let pool = pools.pool(&spec.pool).map_err(to_io)?;
    Ok((pool, spec.image))
}

/// Makes the set's snapshot: an image snapshot for one member, a group snapshot for several.
pub fn snapshot_set(pools: &Pools<'_>, members: &[Member<'_>]) -> io::Result<()> {
    let Some(first) = members.first() else {
        return Ok(());
    };
    let transportable = first.transportable;
    if let [member] = members {
        let (pool, image) = volume_of(pools, member.path)?;
        let name = image_snapshot_name(member.shadow, transportable);
        return pool
            .open(&image)
            .and_then(|image| image.snap_create(&name))
            .map_err(to_io);
    }
    let mut images = Vec::with_capacity(members.len());
    let mut opened = Vec::with_capacity(members.len());
    for member in members {
        let (pool, image) = volume_of(pools, member.path)?;
        images.push(image);
        opened.push(pool);
    }
    let pool = &opened[0];
    let pool_name = pool.name().to_string();
    if let Some(other) = opened.iter().find(|other| other.name() != pool_name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a shadow copy set over several RBD images is one group snapshot, and this \
                 provider keeps a group inside one pool: the set has images in pools {pool_name} \
                 and {}",
                other.name()
            ),
        ));
    }
    let group = group_for(pool, &images, first.set)?;
    let name = group_snapshot_name(first.set, transportable);
    pool.group_snap_create(&group, &name).map_err(to_io)
}

/// The group holding exactly `images`: an existing one, or `diskshadow.<set>` made now for
/// images in no group. Refused when an image is in a group with other images.
fn group_for(pool: &super::Pool, images: &[String], set: ShadowSetId) -> io::Result<String> {
    let mut wanted: Vec<&str> = images.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    let mut holder: Option<String> = None;
    for group in pool.list_groups().map_err(to_io)? {
        let mut members: Vec<String> = pool
            .group_images(&group)
            .map_err(to_io)?
            .into_iter()
            .map(|member| member.image)
            .collect();
        members.sort_unstable();
        let shared: Vec<&String> = members
            .iter()
            .filter(|member| wanted.contains(&member.as_str()))
            .collect();
        if shared.is_empty() {
            continue;
        }
        if members.iter().map(String::as_str).collect::<Vec<_>>() == wanted {
            holder = Some(group);
            break;
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the RBD image {}/{} is in the group {}/{group} with the images {}: an RBD \
                 image can be in one group only, and a set over several images is one group \
                 snapshot of a group holding exactly them; shadow the same images together, or \
                 take the image out of its group (rbd group image remove) once its group \
                 snapshots are gone",
                pool.name(),
                shared[0],
                pool.name(),
                members.join(", ")
            ),
        ));
    }
    if let Some(group) = holder {
        return Ok(group);
    }
    let group = format!("{PREFIX}{}", set.0.hyphenated());
    pool.create_group(&group).map_err(to_io)?;
    for image in images {
        if let Err(error) = pool.group_add_image(&group, image) {
            let _ = pool.remove_group(&group);
            return Err(to_io(error));
        }
    }
    Ok(group)
}

/// Undoes [`snapshot_set`]: the snapshot it made, and the group if it made that too.
pub fn unsnapshot_set(pools: &Pools<'_>, members: &[Member<'_>]) -> io::Result<()> {
    let Some(first) = members.first() else {
        return Ok(());
    };
    let transportable = first.transportable;
    if let [member] = members {
        let (pool, image) = volume_of(pools, member.path)?;
        let name = image_snapshot_name(member.shadow, transportable);
        return pool
            .open(&image)
            .and_then(|image| image.snap_remove(&name))
            .map_err(to_io);
    }
    let (pool, _) = volume_of(pools, first.path)?;
    let name = group_snapshot_name(first.set, transportable);
    let made_group = format!("{PREFIX}{}", first.set.0.hyphenated());
    for group in pool.list_groups().map_err(to_io)? {
        if pool
            .group_snaps(&group)
            .map_err(to_io)?
            .iter()
            .any(|snapshot| snapshot.name == name)
        {
            pool.group_snap_remove(&group, &name).map_err(to_io)?;
        }
        if group == made_group {
            // Removing the group removes it from its images too.
            pool.remove_group(&group).map_err(to_io)?;
        }
    }
    Ok(())
}

/// Finds the snapshot holding a shadow: the image snapshot naming it, else the image's
/// snapshot of the group snapshot naming its set. `NotFound` when neither exists.
pub fn locate(
    pools: &Pools<'_>,
    path: &Path,
    shadow: ShadowId,
    set: ShadowSetId,
) -> io::Result<(super::Pool, RbdSnapshot)> {
    let (pool, image_name) = volume_of(pools, path)?;
    let found = find_snapshot(&pool, &image_name, shadow.0, set.0)?;
    match found {
        Some(snapshot) => Ok((pool, snapshot)),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "its RBD snapshot is missing from {}/{image_name} (removed outside diskshadow?): \
                 no snapshot {} and no group snapshot {}",
                pool.name(),
                image_snapshot_name(shadow, false),
                group_snapshot_name(set, false)
            ),
        )),
    }
}

/// [`locate`] for a shadow of this store.
fn locate_record(
    context: &ProviderContext<'_>,
    shadow: &ShadowRecord,
) -> io::Result<(super::Pool, RbdSnapshot)> {
    let path = context.volume_path(shadow.volume).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("the volume {} is not registered", shadow.volume),
        )
    })?;
    locate(&Pools(&context.rbd_pools), &path, shadow.id, shadow.set_id)
}

/// The snapshot of `image` for shadow `shadow` of set `set`, if there is one.
pub fn find_snapshot(
    pool: &super::Pool,
    image_name: &str,
    shadow: uuid::Uuid,
    set: uuid::Uuid,
) -> io::Result<Option<RbdSnapshot>> {
    let image = pool.open_read_only(image_name).map_err(to_io)?;
    for snap in image.snaps().map_err(to_io)? {
        let group = group_of(&snap);
        let named = match &group {
            None => parse_snapshot_name(&snap.name).map(|(id, _)| id) == Some(shadow),
            Some((_, group_snapshot)) => {
                parse_snapshot_name(group_snapshot).map(|(id, _)| id) == Some(set)
            }
        };
        if named {
            return Ok(Some(RbdSnapshot {
                pool: pool.name().to_string(),
                image: image_name.to_string(),
                snap_id: snap.id,
                snap_name: snap.name,
                group,
                size: snap.size,
            }));
        }
    }
    Ok(None)
}

/// The group and group snapshot a snapshot belongs to (`None`: an image snapshot).
fn group_of(snap: &super::Snapshot) -> Option<(String, String)> {
    match &snap.namespace {
        super::SnapNamespace::Group {
            group,
            group_snapshot,
            ..
        } => Some((group.clone(), group_snapshot.clone())),
        _ => None,
    }
}

/// For `import`: the RBD volume and size of a transported shadow, found in the cluster from
/// what the metadata cabinet names (its original volume, `rbd:POOL/IMAGE`; its ID; its set).
pub fn transported(
    pools: &Pools<'_>,
    shadow: &ManifestShadow,
    set: ShadowSetId,
) -> Result<(PathBuf, u64), String> {
    let path = PathBuf::from(&shadow.original_volume);
    let (pool, image) = volume_of(pools, &path).map_err(|_| {
        format!(
            "its original volume {} is not an RBD volume (rbd:POOL/IMAGE)",
            shadow.original_volume
        )
    })?;
    let snapshot = find_snapshot(&pool, &image, shadow.shadow_id.0, set.0)
        .map_err(|error| error.to_string())?
        .ok_or_else(|| {
            format!(
                "its RBD snapshot is missing from {}/{image} (deleted, or removed outside \
                 diskshadow)",
                pool.name()
            )
        })?;
    let name = snapshot
        .group
        .as_ref()
        .map_or(&snapshot.snap_name, |(_, group_snapshot)| group_snapshot);
    if !parse_snapshot_name(name).is_some_and(|(_, transportable)| transportable) {
        return Err(format!(
            "its RBD snapshot {snapshot} is not transportable; create the set with `set option \
             transportable`"
        ));
    }
    Ok((path, snapshot.size))
}

/// The image a broken-off shadow becomes: `<image>.shadow-<shadow>`.
pub fn broken_image_name(image: &str, shadow: ShadowId) -> String {
    format!("{image}.shadow-{}", shadow.0.hyphenated())
}

/// For `break`: makes a new image holding the shadow's snapshot, and returns its volume path.
/// An image snapshot is cloned and the clone flattened (the cluster copies, with progress):
/// this needs the image's `layering` feature. A group snapshot's image snapshot cannot be
/// cloned by name, so it is copied through librbd, its allocated extents only. The new image
/// is complete before this returns; a failure removes it.
pub fn break_off(
    pool: &super::Pool,
    snapshot: &RbdSnapshot,
    shadow: ShadowId,
    progress: &dyn Progress,
) -> io::Result<PathBuf> {
    let child = broken_image_name(&snapshot.image, shadow);
    let made = match &snapshot.group {
        None => {
            let parent = pool.open(&snapshot.image).map_err(to_io)?;
            let features = parent.features().map_err(to_io)?;
            if features & super::features::LAYERING == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "the RBD image {}/{} has no `layering` feature, which a clone needs; \
                         enable it (rbd feature enable {}/{} layering) and break again",
                        pool.name(),
                        snapshot.image,
                        pool.name(),
                        snapshot.image
                    ),
                ));
            }
            // A clone's parent snapshot is protected while the clone depends on it; the
            // flatten ends that, and the snapshot is removed with the shadow afterwards.
            let protected = parent
                .snap_is_protected(&snapshot.snap_name)
                .map_err(to_io)?;
            if !protected {
                parent.snap_protect(&snapshot.snap_name).map_err(to_io)?;
            }
            let made = pool
                .clone_image(&snapshot.image, &snapshot.snap_name, &child, features)
                .and_then(|()| pool.open(&child))
                .and_then(|image| image.flatten(progress))
                .map_err(to_io);
            if !protected {
                let _ = parent.snap_unprotect(&snapshot.snap_name);
            }
            made
        }
        Some(_) => copy_snapshot(pool, snapshot, &child, progress),
    };
    if let Err(error) = made {
        let _ = pool.remove_image(&child);
        return Err(error);
    }
    Ok(volume_path(pool.name(), &child))
}

/// Copies an image at a snapshot into a new image `child` of its size, through librbd.
fn copy_snapshot(
    pool: &super::Pool,
    snapshot: &RbdSnapshot,
    child: &str,
    progress: &dyn Progress,
) -> io::Result<()> {
    let source = pool
        .open_at_snap_id(&snapshot.image, snapshot.snap_id)
        .map_err(to_io)?;
    let features = source.features().map_err(to_io)?;
    pool.create_image(child, snapshot.size, features)
        .map_err(to_io)?;
    let target = pool.open(child).map_err(to_io)?;
    let size = snapshot.size;
    const STEP: u64 = 4 << 20;
    let mut buffer = vec![0u8; STEP as usize];
    progress.begin("break", size);
    // Only the allocated extents are copied: a new image reads as zeros everywhere else.
    for extent in source.allocation(0, size).map_err(to_io)? {
        let end = (extent.offset + extent.length).min(size);
        let mut position = extent.offset;
        while position < end {
            let length = (end - position).min(STEP) as usize;
            let read = source
                .read_at(&mut buffer[..length], position)
                .map_err(to_io)?;
            target.write_at(&buffer[..read], position).map_err(to_io)?;
            position += length as u64;
            progress.advance(length as u64);
        }
    }
    target.flush().map_err(to_io)?;
    progress.finish();
    Ok(())
}

/// For `check`: snapshots of this provider on the store's RBD volumes that belong to no
/// shadow copy of this store and are not transportable (those live only in the cluster until
/// imported): a create cut off between the snapshot and the commit, or a set whose creation
/// a crash interrupted. Reported, never removed: the pool is shared with other stores.
pub fn leaked_snapshots(
    pools: &Pools<'_>,
    volumes: &mut dyn Iterator<Item = &Path>,
    is_shadow: &dyn Fn(ShadowId) -> bool,
    is_set: &dyn Fn(ShadowSetId) -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen_groups = std::collections::BTreeSet::new();
    for path in volumes {
        let Some(spec) = volume_spec(path) else {
            continue;
        };
        let Ok(pool) = pools.pool(&spec.pool) else {
            continue;
        };
        let Ok(image) = pool.open_read_only(&spec.image) else {
            continue;
        };
        let Ok(snaps) = image.snaps() else {
            continue;
        };
        for snap in snaps {
            match group_of(&snap) {
                None => {
                    if let Some((id, false)) = parse_snapshot_name(&snap.name) {
                        if !is_shadow(ShadowId(id)) {
                            problems.push(format!(
                                "the RBD snapshot {}/{}@{} belongs to no shadow copy of this \
                                 store (a create cut off before its commit?); remove it with \
                                 rbd snap rm if no other store uses it",
                                spec.pool, spec.image, snap.name
                            ));
                        }
                    }
                }
                Some((group, group_snapshot)) => {
                    if let Some((id, false)) = parse_snapshot_name(&group_snapshot) {
                        if !is_set(ShadowSetId(id))
                            && seen_groups.insert((group.clone(), group_snapshot.clone()))
                        {
                            problems.push(format!(
                                "the RBD group snapshot {}/{group}@{group_snapshot} belongs to no \
                                 shadow copy set of this store (a create cut off before its \
                                 commit?); remove it with rbd group snap rm if no other store \
                                 uses it",
                                spec.pool
                            ));
                        }
                    }
                }
            }
        }
    }
    problems
}
