//! The providers the engine has built in beside the array and Ceph ones: the system provider
//! (copy-on-write), the redirect-on-write provider and the full-copy (plex) provider.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::catalog::ShadowRecord;
use crate::engine::device::BlockDevice;
use crate::engine::ids::{ProviderId, ShadowId};
use crate::engine::model::{ProviderInfo, ProviderKind};
use crate::engine::progress::Progress;
use crate::engine::store::DurableFile;
use crate::engine::vss::{providers as vss_providers, Attributes};

use super::api::{
    clone_or_defer, copy_live_chunks, DataPathKind, DeferredCopies, Provider, ProviderContext,
    SetMember, FULL_COPY_PROVIDER_ID, FULL_COPY_PROVIDER_NAME, ROW_PROVIDER_ID, ROW_PROVIDER_NAME,
};
use super::plex;

/// The system provider: copy-on-write.
pub struct SystemProvider;

impl Provider for SystemProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: ProviderId(vss_providers::SYSTEM_PROVIDER_ID),
            name: vss_providers::SYSTEM_PROVIDER_NAME.to_string(),
            kind: ProviderKind::System,
            version: vss_providers::SYSTEM_PROVIDER_VERSION.to_string(),
            clsid: ProviderId(vss_providers::SYSTEM_PROVIDER_CLSID),
        }
    }
    fn attributes(&self) -> Attributes {
        Attributes(Attributes::DIFFERENTIAL)
    }
    fn unsupported_attributes(&self) -> u32 {
        Attributes::PLEX | Attributes::TRANSPORTABLE | Attributes::HARDWARE_ASSISTED
    }
    fn data_path(&self) -> Option<DataPathKind> {
        Some(DataPathKind::CopyOnWrite)
    }
}

/// diskshadow's redirect-on-write provider.
pub struct RedirectOnWriteProvider;

impl Provider for RedirectOnWriteProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: ProviderId(ROW_PROVIDER_ID),
            name: ROW_PROVIDER_NAME.to_string(),
            kind: ProviderKind::Software,
            version: "1.0.0.0".to_string(),
            clsid: ProviderId(ROW_PROVIDER_ID),
        }
    }
    fn attributes(&self) -> Attributes {
        Attributes(Attributes::DIFFERENTIAL)
    }
    fn unsupported_attributes(&self) -> u32 {
        Attributes::PLEX | Attributes::TRANSPORTABLE | Attributes::HARDWARE_ASSISTED
    }
    fn data_path(&self) -> Option<DataPathKind> {
        Some(DataPathKind::RedirectOnWrite)
    }
}

/// diskshadow's full-copy (plex) provider: each shadow is a complete copy of the image, a
/// reflink clone in the commit or a copy made after thaw from a point in time.
pub struct FullCopyProvider;

impl Provider for FullCopyProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: ProviderId(FULL_COPY_PROVIDER_ID),
            name: FULL_COPY_PROVIDER_NAME.to_string(),
            kind: ProviderKind::Software,
            version: "1.0.0.0".to_string(),
            clsid: ProviderId(FULL_COPY_PROVIDER_ID),
        }
    }
    fn attributes(&self) -> Attributes {
        Attributes(Attributes::PLEX)
    }
    fn unsupported_attributes(&self) -> u32 {
        Attributes::DIFFERENTIAL | Attributes::TRANSPORTABLE | Attributes::HARDWARE_ASSISTED
    }
    fn data_path(&self) -> Option<DataPathKind> {
        None
    }

    /// Clones each volume with a reflink where the file system can (the whole copy, in
    /// O(extents)), synced before the commit; every other volume's copy is deferred to after
    /// thaw, made from a point in time the engine keeps in the volume's data path.
    fn prepare_set(
        &self,
        context: &ProviderContext<'_>,
        members: &[SetMember<'_>],
        _progress: &dyn Progress,
    ) -> io::Result<DeferredCopies> {
        clone_or_defer(members, |member| {
            let volume = member.volume;
            let path = plex::copy_path(&context.diff_dir(volume.volume()), member.shadow);
            let cloned =
                plex::clone_image(context.backend, &**volume.image(), volume.size(), &path)?;
            if cloned {
                copy_live_chunks(context.backend, volume, &path)?;
            }
            Ok(cloned)
        })
        .map_err(|(error, made)| {
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
        let path = plex::copy_path(&context.diff_dir(shadow.volume), shadow.id);
        plex::copy_point_in_time(context.backend, source, &path, progress).map(|_| ())
    }

    fn abort_set(&self, context: &ProviderContext<'_>, members: &[SetMember<'_>]) {
        for member in members {
            let path = plex::copy_path(&context.diff_dir(member.volume.volume()), member.shadow);
            let _ = context.backend.remove_file(&path);
        }
    }

    fn open_shadow(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
    ) -> io::Result<Option<Arc<dyn DurableFile>>> {
        let path = plex::copy_path(&context.diff_dir(shadow.volume), shadow.id);
        context
            .backend
            .open_file(&path, false)
            .map(Some)
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("the full copy {} cannot be opened: {error}", path.display()),
                )
            })
    }

    fn remove_shadow(
        &self,
        context: &ProviderContext<'_>,
        shadow: &ShadowRecord,
    ) -> io::Result<Option<PathBuf>> {
        let dir = context.diff_dir(shadow.volume);
        match context
            .backend
            .remove_file(&plex::copy_path(&dir, shadow.id))
        {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(Some(dir)),
        }
    }

    fn check_shadow(&self, context: &ProviderContext<'_>, shadow: &ShadowRecord) -> Vec<String> {
        let path = plex::copy_path(&context.diff_dir(shadow.volume), shadow.id);
        if path.is_file() {
            Vec::new()
        } else {
            vec![format!(
                "full-copy shadow copy {} has lost its copy {}",
                shadow.id,
                path.display()
            )]
        }
    }

    fn orphans(&self, diff_dir: &Path, is_shadow: &dyn Fn(ShadowId) -> bool) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(diff_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let shadow = plex::shadow_of_copy(&name)?;
                (!is_shadow(shadow)).then(|| entry.path())
            })
            .collect()
    }
}
