//! The array provider ("diskshadow Array provider", `VSS_PROV_HARDWARE`): a shadow of a LUN
//! is a whole-LUN clone inside its array, a reflink clone (`FICLONE`, O(extents)) where the
//! array's file system shares blocks, else a full copy made after thaw from a point in time,
//! with progress (the full-copy provider's mechanism). Once the clone exists the host does no
//! copy-on-write for the shadow: the clone is independent of later writes to the LUN.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::catalog::{ShadowRecord, VolumeRecord};
use crate::engine::device::BlockDevice;
use crate::engine::ids::ProviderId;
use crate::engine::model::{ProviderInfo, ProviderKind};
use crate::engine::progress::Progress;
use crate::engine::provider::api::{clone_or_defer, copy_live_chunks};
use crate::engine::provider::{
    plex, DataPathKind, DeferredCopies, Provider, ProviderContext, SetMember,
};
use crate::engine::store::DurableFile;
use crate::engine::vss::Attributes;

use super::{array_root_of, clone_path, inside, relative_to, update, ArrayError, ArrayShadow};

/// `{5d2e8f41-7a3c-4b69-9e02-b8c4d1f6a357}`: diskshadow's array (hardware) provider.
pub const ARRAY_PROVIDER_ID: uuid::Uuid =
    uuid::Uuid::from_u128(0x5d2e8f41_7a3c_4b69_9e02_b8c4d1f6a357);
pub const ARRAY_PROVIDER_NAME: &str = "diskshadow Array provider";

pub struct ArrayProvider;

impl ArrayProvider {
    /// The array and clone of a shadow, from its record: the array is the one holding the
    /// shadow's volume on this host.
    fn clone_of(&self, context: &ProviderContext<'_>, shadow: &ShadowRecord) -> Option<PathBuf> {
        let volume = context.volume_path(shadow.volume)?;
        let root = array_root_of(&volume)?;
        Some(clone_path(&root, shadow.id))
    }
}

impl ArrayProvider {
    /// As [`ArrayProvider::clone_of`], an error when no attached array holds it.
    fn reachable_clone(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
    ) -> io::Result<PathBuf> {
        self.clone_of(context, shadow).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the shadow LUN of {} is in no array this store reaches",
                    shadow.id
                ),
            )
        })
    }
}

fn to_io(error: ArrayError) -> io::Error {
    io::Error::other(error.to_string())
}

impl Provider for ArrayProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: ProviderId(ARRAY_PROVIDER_ID),
            name: ARRAY_PROVIDER_NAME.to_string(),
            kind: ProviderKind::Hardware,
            version: "1.0.0.0".to_string(),
            clsid: ProviderId(ARRAY_PROVIDER_ID),
        }
    }

    /// A clone is a split mirror (plex) that the array made.
    fn attributes(&self) -> Attributes {
        Attributes(Attributes::HARDWARE_ASSISTED | Attributes::PLEX)
    }

    fn unsupported_attributes(&self) -> u32 {
        Attributes::DIFFERENTIAL
    }

    /// A LUN: a volume whose image is inside an array (the engine also requires the array
    /// to be attached to this store).
    fn supports(&self, volume: &VolumeRecord) -> bool {
        array_root_of(&volume.path).is_some()
    }

    fn transportable(&self) -> bool {
        true
    }

    fn data_path(&self) -> Option<DataPathKind> {
        None
    }

    /// Clones each LUN inside its array with a reflink where the array's file system can (the
    /// whole clone, O(extents)), and records it in the array's catalog, both durably, before
    /// the store's commit. Elsewhere the clone is deferred: the engine keeps the point in time
    /// in the LUN's data path and [`Provider::finish_deferred_copy`] copies it after thaw, as
    /// the full-copy provider does.
    fn prepare_set(
        &self,
        context: &ProviderContext<'_>,
        members: &[SetMember<'_>],
        _progress: &dyn Progress,
    ) -> io::Result<DeferredCopies> {
        clone_or_defer(members, |member| clone_lun(context, member)).map_err(|(error, made)| {
            self.abort_set(context, &members[..made]);
            error
        })
    }

    fn finish_deferred_copy(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
        source: &dyn BlockDevice,
        progress: &dyn Progress,
    ) -> io::Result<()> {
        let path = self.reachable_clone(context, shadow)?;
        plex::copy_point_in_time(context.backend, source, &path, progress).map(|_| ())
    }

    fn abort_set(&self, context: &ProviderContext<'_>, members: &[SetMember<'_>]) {
        for member in members {
            let Some(root) = array_root_of(member.image_path) else {
                continue;
            };
            let _ = context
                .backend
                .remove_file(&clone_path(&root, member.shadow));
            let _ = update(&root, |catalog| {
                catalog.shadows.remove(&member.shadow);
                Ok::<(), ArrayError>(())
            });
        }
    }

    fn open_shadow(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
    ) -> io::Result<Option<Arc<dyn DurableFile>>> {
        let path = self.reachable_clone(context, shadow)?;
        context
            .backend
            .open_file_read_only(&path)
            .map(Some)
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!(
                        "the shadow LUN {} cannot be opened: {error}",
                        path.display()
                    ),
                )
            })
    }

    /// Deletes the clone from the array (for every host: a shadow LUN is one object).
    fn remove_shadow(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
    ) -> io::Result<Option<PathBuf>> {
        let Some(path) = self.clone_of(context, shadow) else {
            return Ok(None);
        };
        if let Some(root) = path.parent().and_then(Path::parent) {
            update(root, |catalog| {
                catalog.shadows.remove(&shadow.id);
                Ok::<(), ArrayError>(())
            })
            .map_err(to_io)?;
        }
        match context.backend.remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(path.parent().map(Path::to_path_buf)),
        }
    }

    fn check_shadow(&self, context: &ProviderContext<'_>, shadow: &ShadowRecord) -> Vec<String> {
        match self.clone_of(context, shadow) {
            Some(path) if path.is_file() => Vec::new(),
            Some(path) => vec![format!(
                "array shadow copy {} has lost its shadow LUN {}",
                shadow.id,
                path.display()
            )],
            None => vec![format!(
                "array shadow copy {} is in no array this store reaches",
                shadow.id
            )],
        }
    }
}

/// Clones one LUN into its array (a reflink, or nothing yet where the file system cannot share
/// blocks) and records it in the array catalog. Returns whether it was cloned now.
fn clone_lun(context: &ProviderContext<'_>, member: &SetMember<'_>) -> io::Result<bool> {
    let root = array_root_of(member.image_path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is in no array", member.image_path.display()),
        )
    })?;
    let lun = relative_to(&root, member.image_path).ok_or_else(|| {
        io::Error::other(format!(
            "{} is not inside the array {}",
            member.image_path.display(),
            root.display()
        ))
    })?;
    let path = clone_path(&root, member.shadow);
    context
        .backend
        .create_dir_all(path.parent().unwrap_or(&root))?;
    let volume = member.volume;
    let reflink = plex::clone_image(context.backend, &**volume.image(), volume.size(), &path)?;
    if reflink {
        copy_live_chunks(context.backend, volume, &path)?;
    }
    let clone = relative_to(&root, &path).unwrap_or_default();
    inside(&root, &clone).map_err(to_io)?;
    let record = ArrayShadow {
        set_id: member.set_id,
        lun,
        clone,
        size: volume.size(),
        created_by: context.layout.root.clone(),
        reflink,
        transportable: member.attributes.contains(Attributes::TRANSPORTABLE),
        imported_by: Vec::new(),
    };
    update(&root, |catalog| {
        catalog.shadows.insert(member.shadow, record);
        Ok::<(), ArrayError>(())
    })
    .map_err(to_io)?;
    Ok(reflink)
}
