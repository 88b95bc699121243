//! Full copies made after the commit: the engine's half of a deferred copy.
//!
//! A provider that cannot make a shadow's content inside the commit in O(1) (a full copy on
//! a file system without reflink) defers it (`Provider::prepare_set` returns the shadow in
//! its [`DeferredCopies`](crate::engine::provider::DeferredCopies)). The commit then records
//! the shadow with `copy_pending` and gives it a point in time in the volume's data path at
//! its own sequence, in the same catalog transaction as the shadow itself, so a crash never
//! loses track of it. After thaw, [`Engine::complete_full_copy`] has the provider copy from
//! that point in time (`Provider::finish_deferred_copy`) while the volume stays writable,
//! records the shadow complete, and releases the point in time.
//!
//! **Architecture Invariant:** a shadow whose copy is pending is never read from its copy:
//! its reads, revert and exposure go through the point in time until `FullCopyComplete` is
//! durable, and the point in time is released only after that.

use std::io;

use super::{lock_mutex, provider_of, write_lock, Engine, VolumeSlot, WriteFailure};
use crate::engine::catalog::CatalogChange;
use crate::engine::ids::{ShadowId, ShadowSetId, VolumeId};
use crate::engine::progress::{Progress, Stopped};
use crate::engine::vss::VssCode;

use super::{CatalogError, DeviceError};

#[derive(Debug, thiserror::Error)]
pub enum FullCopyError {
    #[error("shadow copy {shadow} was not found")]
    NotFound { shadow: ShadowId },
    #[error("shadow copy {shadow} was deleted while its full copy was being made; nothing of the copy is kept")]
    Deleted { shadow: ShadowId },
    #[error("the store is open read-only; the full copy of shadow copy {shadow} cannot be made")]
    ReadOnly { shadow: ShadowId },
    #[error(
        "the full copy of shadow copy {shadow} was stopped (Ctrl-C); the shadow copy is kept, \
         complete and readable from its point in time in the volume's data path (copy \
         pending), and its copy is made again from the start when the service next starts"
    )]
    Stopped { shadow: ShadowId },
    #[error("the full copy of shadow copy {shadow} is already being made")]
    InProgress { shadow: ShadowId },
    #[error("cannot read the point in time of shadow copy {shadow}: {source}")]
    Source {
        shadow: ShadowId,
        source: DeviceError,
    },
    #[error(
        "the full copy of shadow copy {shadow} (volume {volume}) failed: {source}; the shadow \
         copy is not complete: it is still served from its point in time, and can be deleted \
         or copied again"
    )]
    Io {
        shadow: ShadowId,
        volume: VolumeId,
        source: io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl FullCopyError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            FullCopyError::NotFound { .. } | FullCopyError::Deleted { .. } => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            FullCopyError::Stopped { .. } => VssCode::VSS_S_ASYNC_CANCELLED,
            FullCopyError::ReadOnly { .. } | FullCopyError::InProgress { .. } => {
                VssCode::VSS_E_BAD_STATE
            }
            FullCopyError::Source { source, .. } => source.vss_code(),
            FullCopyError::Io { source, .. }
                if source.kind() == io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(libc::ENOSPC) =>
            {
                VssCode::VSS_E_INSUFFICIENT_STORAGE
            }
            FullCopyError::Io { .. } | FullCopyError::Catalog(_) => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
        }
    }
}

impl Engine {
    /// Shadows whose full copy is still to be made (a copy cut off by a crash or a failure),
    /// oldest first.
    pub fn pending_full_copies(&self) -> Vec<ShadowId> {
        let catalog = lock_mutex(&self.shared.catalog);
        let mut pending: Vec<(u64, ShadowId)> = catalog
            .state()
            .shadows
            .values()
            .filter(|record| record.copy_pending)
            .map(|record| (record.sequence, record.id))
            .collect();
        pending.sort();
        pending.into_iter().map(|(_, shadow)| shadow).collect()
    }

    /// True while a full copy is being made (a service must not idle out under it).
    pub fn full_copies_running(&self) -> bool {
        !lock_mutex(&self.shared.copies_running).is_empty()
    }

    /// Makes the pending full copies of a set's shadows (`None`: of every shadow), one after
    /// the other, stopping at the first failure. Returns the shadows completed.
    pub fn complete_full_copies(
        &self,
        set: Option<ShadowSetId>,
        progress: &dyn Progress,
    ) -> Result<Vec<ShadowId>, FullCopyError> {
        let pending: Vec<ShadowId> = {
            let shadows = self.pending_full_copies();
            let catalog = lock_mutex(&self.shared.catalog);
            shadows
                .into_iter()
                .filter(|shadow| {
                    set.is_none()
                        || catalog
                            .state()
                            .shadows
                            .get(shadow)
                            .map(|record| record.set_id)
                            == set
                })
                .collect()
        };
        let mut completed = Vec::new();
        for shadow in pending {
            if self.complete_full_copy(shadow, progress)? {
                completed.push(shadow);
            }
        }
        Ok(completed)
    }

    /// Makes the full copy of `shadow` from its point in time, while the volume stays
    /// writable (the volume's lock is taken per read, never for the whole copy), then records
    /// it complete and releases the point in time. Restarts from the beginning whatever an
    /// earlier attempt left. Returns `false` when the shadow was already complete.
    ///
    /// On failure the shadow stays pending (served from its point in time, removable) and the
    /// partial copy's space is given back. A copy stopped at the requester's request
    /// ([`Progress::cancelled`]) ends the same way, with [`FullCopyError::Stopped`].
    pub fn complete_full_copy(
        &self,
        shadow: ShadowId,
        progress: &dyn Progress,
    ) -> Result<bool, FullCopyError> {
        if !lock_mutex(&self.shared.copies_running).insert(shadow) {
            return Err(FullCopyError::InProgress { shadow });
        }
        let result = self.copy_and_release(shadow, progress);
        lock_mutex(&self.shared.copies_running).remove(&shadow);
        result
    }

    fn copy_and_release(
        &self,
        shadow: ShadowId,
        progress: &dyn Progress,
    ) -> Result<bool, FullCopyError> {
        let record = lock_mutex(&self.shared.catalog)
            .state()
            .shadows
            .get(&shadow)
            .cloned()
            .ok_or(FullCopyError::NotFound { shadow })?;
        if !record.copy_pending {
            return Ok(false);
        }
        if self.shared.read_only {
            return Err(FullCopyError::ReadOnly { shadow });
        }
        let provider = provider_of(&record).ok_or(FullCopyError::Source {
            shadow,
            source: DeviceError::Unavailable {
                volume: record.volume,
                reason: format!("provider {} is not registered", record.provider_id),
            },
        })?;
        let source = self
            .open_shadow(shadow)
            .map_err(|source| FullCopyError::Source { shadow, source })?;
        let context = self.provider_context(lock_mutex(&self.shared.catalog).state());
        let io_error = |source| FullCopyError::Io {
            shadow,
            volume: record.volume,
            source,
        };
        if let Err(error) = provider.finish_deferred_copy(&context, &record, &*source, progress) {
            if self.shadow_exists(shadow) && Stopped::is(&error) {
                return Err(FullCopyError::Stopped { shadow });
            }
            if self.shadow_exists(shadow) {
                return Err(io_error(error));
            }
            // Deleted meanwhile (also by the diff-area limit, which deletes oldest first):
            // the copy's failure is only a symptom, and what it wrote goes.
            let _ = provider.remove_shadow(&context, &record);
            return Err(FullCopyError::Deleted { shadow });
        }

        // Complete, then release: the catalog says so before the point in time goes.
        let handle = self.handle(record.volume);
        let mut guard = handle.as_ref().map(|handle| write_lock(&handle.state));
        let mut catalog = lock_mutex(&self.shared.catalog);
        let current = catalog.state().shadows.get(&shadow).cloned();
        match current {
            Some(current) if current.copy_pending => {
                if let Some(reason) = current.suspect {
                    // The volume changed outside diskshadow: what was read cannot be trusted.
                    drop(catalog);
                    return Err(io_error(io::Error::other(format!(
                        "the point in time became suspect during the copy: {reason}"
                    ))));
                }
                catalog.commit(vec![CatalogChange::FullCopyComplete { shadow }])?;
            }
            Some(_) => return Ok(false),
            None => {
                drop(catalog);
                drop(guard);
                let _ = provider.remove_shadow(&context, &record);
                return Err(FullCopyError::Deleted { shadow });
            }
        }
        drop(catalog);
        if let Some(VolumeSlot::Ready(cow)) = guard.as_deref_mut() {
            // Copies preserved for the point in time may still wait in the write-back buffer:
            // drained first, they are in the map when the release frees them (as a delete
            // drains), instead of landing afterwards under a tag no shadow needs.
            let release = |cow: &mut dyn super::VolumeProvider| {
                self.drain_checked(cow)?;
                self.delete_in_data_path(cow, record.sequence)
            };
            release(&mut **cow).map_err(|failure| match failure {
                WriteFailure::Catalog(error) => FullCopyError::Catalog(error),
                other => io_error(other.into()),
            })?;
        }
        Ok(true)
    }

    fn shadow_exists(&self, shadow: ShadowId) -> bool {
        lock_mutex(&self.shared.catalog)
            .state()
            .shadows
            .contains_key(&shadow)
    }
}
