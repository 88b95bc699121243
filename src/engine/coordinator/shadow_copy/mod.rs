//! The shadow-copy protocol in one place: [`ShadowCopyCoordinator`] owns the engine, the writer
//! host and the auto-recovery overlays, and runs every step that spans them — the creation
//! sequence with writers and the provider commit, the metadata document, the read-write views
//! of auto-recovery and the sealed overlays after it, the release of a requester's volatile
//! shadows, revert, deletion, the restore events and the store check. The service is a thin adapter over it;
//! exposures (FUSE mounts, NBD servers) stay in the service and are reached through
//! [`ExposureKeeper`].
//!
//! **Invariants:**
//! - A shadow is deleted only after its exposure is down, on every path that this type runs
//!   (explicit delete, a requester's release, a failed creation). A shadow the engine deletes
//!   by itself inside a write (diff-area limit; also a revert's writes) cannot wait for that:
//!   the write holds the volume and an exposure's server may be blocked reading it. Those
//!   deletions reach the coordinator through the engine's [`DeletionSink`]; their exposures go
//!   at the next [`ShadowCopyCoordinator::reap_exposures`], which the service's tick, revert
//!   and `set_max_diff_area` run, and until then the exposure serves read errors, never data
//!   of another shadow.
//! - An overlay lives exactly as long as its shadow: every deletion path, the engine's own
//!   included (through the sink), removes it; a leftover (a crash between the two) is reported
//!   by [`ShadowCopyCoordinator::check`] as leaked and removed when a service next takes the
//!   store over ([`ShadowCopyCoordinator::reclaim_leaked_overlays`]).
//! - No shadow of a failed creation remains, nor its overlays.

mod create;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::engine::cabinet::MetadataWriteError;
use crate::engine::clock::IdSource;
use crate::engine::core::{
    CheckReport, CreateError, DeleteError, DeviceError, ExposureError, FullCopyError, RevertError,
    StorageError,
};
use crate::engine::deletions::{DeletionSink, DiffAreaDeletion};
use crate::engine::device::BlockDevice;
use crate::engine::ids::{ShadowId, VolumeId};
use crate::engine::model::{
    CreatedSet, DeleteSelector, Exposure, RequesterId, ShadowInfo, VolumeInfo,
};
use crate::engine::overlay::{OverlayDevice, OverlayStore, OVERLAY_CHUNK};
use crate::engine::progress::Progress;
use crate::engine::vss::{Attributes, BackupType, Context, VssCode};
use crate::engine::writer::host::{HostOptions, WriterHost};
use crate::engine::Engine;

use super::{
    BackupSession, Coordinator, CreationFailure, EngineObserver, RestoreError, RestoreInvolvement,
    RestoreWriter, SelectionError, SilentObserver, WriterEventError, WriterSelection,
};

/// The live exposures of shadows, kept by the service (mounts and servers are its business).
pub trait ExposureKeeper: Send + Sync {
    /// The shadows exposed now.
    fn exposed(&self) -> Vec<ShadowId>;
    /// Takes the exposure of `shadow` down (no listener, socket, mount or thread is left);
    /// returns it if there was one.
    fn take_down(&self, shadow: ShadowId) -> Option<Exposure>;
}

/// One `create`, as the requester asked it.
#[derive(Debug, Clone)]
pub struct ShadowSetRequest {
    /// The set's volumes, each with the provider asked for (if any).
    pub volumes: Vec<(VolumeInfo, Option<crate::engine::ids::ProviderId>)>,
    pub context: Context,
    pub extra_attributes: Attributes,
    pub backup_type: BackupType,
    pub writers: WriterSelection,
    /// Shadow aliases by position in `volumes`, for the metadata file.
    pub aliases: Vec<Option<String>>,
    /// Where the metadata file is written, if anywhere.
    pub metadata_path: Option<PathBuf>,
    /// When writers take part and `metadata_path` is `None`: the directory of DiskShadow's
    /// default metadata file and the requester's UTC offset in seconds for its name.
    pub default_metadata: Option<(PathBuf, i32)>,
    /// Mounted file systems to flush and hold around the commit.
    pub flush_mount_points: Vec<PathBuf>,
}

/// A created set.
#[derive(Debug, Clone)]
pub struct ShadowSetOutcome {
    pub set: CreatedSet,
    /// The members of the metadata file written, in order (empty if none was).
    pub metadata_files: Vec<String>,
    pub metadata_path: Option<PathBuf>,
    /// Why the metadata file could not be written. The set is kept all the same, as
    /// DiskShadow keeps it: the shadows exist and the requester says the file is missing.
    pub metadata_error: Option<String>,
    /// The requester stopped the full copies made after thaw (Ctrl-C): what state that left.
    /// The set is kept; its shadows whose copy is still pending are served from their points
    /// in time, and the service makes their copies again when it next starts.
    pub copy_stopped: Option<String>,
}

/// What one requester holds between its commands.
#[derive(Debug, Default)]
pub struct RequesterState {
    /// The writers of the last `create`, until `end backup` (or the requester's end).
    pub backup: Option<BackupSession>,
}

/// Why a step of the shadow-copy protocol failed. Each engine error keeps its type.
#[derive(Debug, thiserror::Error)]
pub enum ShadowCopyError {
    #[error("another requester is creating a shadow copy set")]
    SetInProgress,
    #[error(transparent)]
    Selection(SelectionError),
    /// The creation failed; no shadow of the set remains. `provider` is the provider's own
    /// error when the commit itself was refused.
    #[error("the shadow copy set was not created: {failure}")]
    Creation {
        failure: Box<CreationFailure>,
        provider: Option<CreateError>,
    },
    /// The set was committed but could not be marked complete; it was deleted.
    #[error("the shadow copy set was not created: it could not be kept: {source}")]
    NotKept { source: CreateError },
    #[error("the metadata file {} was not written: {source}", path.display())]
    Metadata {
        path: PathBuf,
        source: MetadataWriteError,
    },
    #[error(transparent)]
    Delete(#[from] DeleteError),
    #[error(transparent)]
    Revert(#[from] RevertError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Exposure(#[from] ExposureError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The set was committed and its writers thawed, but a full copy made after thaw failed:
    /// the set was deleted, as a failed creation leaves nothing.
    #[error("{source}; the shadow copy set was deleted")]
    FullCopy { source: FullCopyError },
    #[error("the auto-recovery overlay {} cannot be read: {source}", path.display())]
    Overlay {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the auto-recovery overlay {} of a deleted shadow copy cannot be removed: {source}", path.display())]
    OverlayRemoval {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reverting the recovered chunks: {source}")]
    RevertRecovered { source: std::io::Error },
    #[error("shadow copy {shadow} was not found")]
    ShadowNotFound { shadow: ShadowId },
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Writers(Vec<WriterEventError>),
}

impl ShadowCopyError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            ShadowCopyError::SetInProgress => VssCode::VSS_E_SNAPSHOT_SET_IN_PROGRESS,
            ShadowCopyError::Selection(error) => error.vss_code(),
            ShadowCopyError::Creation {
                provider: Some(error),
                ..
            } => error.vss_code(),
            ShadowCopyError::Creation { failure, .. } => failure.vss_code(),
            ShadowCopyError::Metadata { source, .. } => source.vss_code(),
            ShadowCopyError::NotKept { source } => source.vss_code(),
            ShadowCopyError::Delete(error) => error.vss_code(),
            ShadowCopyError::Revert(error) => error.vss_code(),
            ShadowCopyError::Device(error) => error.vss_code(),
            ShadowCopyError::Exposure(error) => error.vss_code(),
            ShadowCopyError::Storage(error) => error.vss_code(),
            ShadowCopyError::FullCopy { source } => source.vss_code(),
            ShadowCopyError::Overlay { .. }
            | ShadowCopyError::OverlayRemoval { .. }
            | ShadowCopyError::RevertRecovered { .. } => VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR,
            ShadowCopyError::ShadowNotFound { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            ShadowCopyError::Restore(error) => error.vss_code(),
            ShadowCopyError::Writers(errors) => errors
                .first()
                .map(WriterEventError::vss_code)
                .unwrap_or(VssCode::VSS_E_UNEXPECTED_WRITER_ERROR),
        }
    }
}

/// Shadows the engine deleted inside a write, waiting for their exposures to go.
#[derive(Default)]
struct PendingDeletions {
    shadows: Mutex<Vec<ShadowId>>,
}

/// The engine's deletion sink: removes the overlays of shadows the engine deleted by itself,
/// queues their exposures for the next reap, and passes the event on (the service log).
struct DeletionRelay {
    overlays: OverlayStore,
    pending: Arc<PendingDeletions>,
    next: RwLock<Option<Arc<dyn DeletionSink>>>,
}

impl DeletionSink for DeletionRelay {
    fn deleted(&self, event: &DiffAreaDeletion) {
        // Called with the volume held: only file removal here, nothing that waits on a reader.
        for shadow in &event.shadows {
            let _ = self.overlays.remove(*shadow);
        }
        self.pending
            .shadows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(event.shadows.iter().copied());
        if let Some(next) = self
            .next
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            next.deleted(event);
        }
    }
}

/// The shadow-copy protocol over one engine, shared by every requester of a service.
pub struct ShadowCopyCoordinator {
    engine: Arc<Engine>,
    /// Gives shadow copy set IDs before the commit (writers hear of the set first).
    ids: Arc<dyn IdSource>,
    /// Held for the whole creation sequence; a second requester gets
    /// VSS_E_SNAPSHOT_SET_IN_PROGRESS instead of waiting (as VSS does).
    creation: Mutex<()>,
    /// The writer host and the registration files it was loaded from: the writers registered
    /// in the store's `writers/` directory, started on first need.
    writers: Mutex<
        Option<(
            crate::engine::writer::registration::RegistrationsFingerprint,
            Arc<WriterHost>,
        )>,
    >,
    writer_options: HostOptions,
    overlays: OverlayStore,
    exposures: RwLock<Option<Arc<dyn ExposureKeeper>>>,
    relay: Arc<DeletionRelay>,
}

impl ShadowCopyCoordinator {
    /// Takes over the engine's deletion sink (see [`Self::set_deletion_sink`] for the log).
    /// Changes nothing in the store: `check-store` runs one over a read-only engine.
    pub fn new(engine: Arc<Engine>, ids: Arc<dyn IdSource>, writer_options: HostOptions) -> Self {
        let overlays = OverlayStore::new(engine.store_dir());
        let relay = Arc::new(DeletionRelay {
            overlays: overlays.clone(),
            pending: Arc::new(PendingDeletions::default()),
            next: RwLock::new(None),
        });
        engine.set_deletion_sink(relay.clone());
        Self {
            engine,
            ids,
            creation: Mutex::new(()),
            writers: Mutex::new(None),
            writer_options,
            overlays,
            exposures: RwLock::new(None),
            relay,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Where each shadow deleted to fit a diff-area limit is told after the coordinator has
    /// seen it (the service's log).
    pub fn set_deletion_sink(&self, sink: Arc<dyn DeletionSink>) {
        *self
            .relay
            .next
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sink);
    }

    /// The service's exposures, taken down before their shadows are deleted.
    pub fn set_exposure_keeper(&self, keeper: Arc<dyn ExposureKeeper>) {
        *self
            .exposures
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(keeper);
    }

    fn keeper(&self) -> Option<Arc<dyn ExposureKeeper>> {
        self.exposures
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The store's overlays (paths, for tests and tools).
    pub fn overlays(&self) -> &OverlayStore {
        &self.overlays
    }

    /// Removes overlays and view directories whose shadow is gone (a crash between a shadow's
    /// deletion and its overlay's). The service runs it when it takes the store over; returns
    /// what was removed.
    pub fn reclaim_leaked_overlays(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for leaked in self
            .overlays
            .leaked(&|shadow| self.engine.shadow(shadow).is_some())
        {
            let outcome = if leaked.path.is_dir() {
                std::fs::remove_dir(&leaked.path)
            } else {
                std::fs::remove_file(&leaked.path)
            };
            if outcome.is_ok() {
                removed.push(leaked.path);
            }
        }
        removed
    }

    // ---- writers ------------------------------------------------------------------------

    /// The store's directory of writer registrations.
    pub fn writers_directory(&self) -> PathBuf {
        self.engine.store_dir().join("writers")
    }

    /// The writer host, loading the registrations the first time and again whenever a
    /// registration file was added, removed or changed since (so `writer add` and `writer
    /// remove` take effect without restarting the service). A backup already running keeps the
    /// host it started with; the replaced host's writers get end of input when its last user
    /// lets go of it.
    pub fn writer_host(&self) -> Arc<WriterHost> {
        use crate::engine::writer::registration::registrations_fingerprint;
        let directory = self.writers_directory();
        let fingerprint = registrations_fingerprint(&directory);
        let mut slot = self
            .writers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((loaded_from, host)) = slot.as_ref() {
            if *loaded_from == fingerprint {
                return host.clone();
            }
        }
        let host = Arc::new(WriterHost::from_directory(
            &directory,
            self.writer_options.clone(),
        ));
        let replaced = slot.replace((fingerprint, host.clone()));
        drop(slot);
        // Shut the old writers down outside the lock.
        drop(replaced);
        host
    }

    /// The writer host with every writer identified at least once. Writers already identified
    /// are not asked again: `identify` starts a writer's backup state afresh, and looking must
    /// not erase the state of a backup in progress.
    pub fn identified_writer_host(&self) -> Arc<WriterHost> {
        let host = self.writer_host();
        if host
            .statuses()
            .iter()
            .any(|status| status.instance_id.is_none() || host.metadata(status.index).is_none())
        {
            Coordinator::new(&host, &SilentObserver).gather_metadata();
        }
        host
    }

    /// `end backup`: BackupComplete then BackupShutdown to the writers of the last set.
    pub fn end_backup(
        &self,
        requester: &mut RequesterState,
        observer: &dyn EngineObserver,
    ) -> Result<(), ShadowCopyError> {
        let Some(session) = requester.backup.take() else {
            return Ok(());
        };
        let host = self.writer_host();
        let coordinator = Coordinator::new(&host, observer);
        let completed = coordinator.backup_complete(&session, true);
        let shut = coordinator.backup_shutdown(&session);
        completed.map_err(ShadowCopyError::Writers)?;
        shut.map_err(ShadowCopyError::Writers)
    }

    // ---- restore ------------------------------------------------------------------------

    /// `simulate restore`: which writers a restore would involve, sending no event.
    pub fn simulate_restore(
        &self,
        writers: &[RestoreWriter],
    ) -> Result<Vec<RestoreInvolvement>, ShadowCopyError> {
        let host = self.writer_host();
        Ok(Coordinator::new(&host, &SilentObserver).simulate_restore(writers)?)
    }

    /// `begin restore`: PreRestore to the writers that ask for restore events.
    pub fn begin_restore(
        &self,
        writers: &[RestoreWriter],
        observer: &dyn EngineObserver,
    ) -> Result<(), ShadowCopyError> {
        let host = self.writer_host();
        Ok(Coordinator::new(&host, observer).pre_restore(writers)?)
    }

    /// `end restore`: PostRestore, the files are back.
    pub fn end_restore(
        &self,
        writers: &[RestoreWriter],
        observer: &dyn EngineObserver,
    ) -> Result<(), ShadowCopyError> {
        let host = self.writer_host();
        Ok(Coordinator::new(&host, observer).post_restore(writers)?)
    }

    // ---- reading, exposure --------------------------------------------------------------

    /// A shadow copy as requesters read and expose it: the point-in-time content with its
    /// sealed auto-recovery overlay, if writers changed it during PostSnapshot.
    pub fn open_shadow(&self, shadow: ShadowId) -> Result<Arc<dyn BlockDevice>, ShadowCopyError> {
        let base = self.engine.open_shadow(shadow)?;
        self.overlays
            .open_sealed(shadow, base)
            .map_err(|source| ShadowCopyError::Overlay {
                path: self.overlays.overlay_path(shadow),
                source,
            })
    }

    /// Records in the catalog that `shadow` is exposed (the service made the exposure).
    pub fn record_exposure(
        &self,
        shadow: ShadowId,
        exposure: Exposure,
    ) -> Result<(), ShadowCopyError> {
        Ok(self.engine.set_exposure(shadow, Some(exposure))?)
    }

    /// Takes down the exposure of `shadow`, if any, and clears the catalog's record.
    pub fn unexpose(&self, shadow: ShadowId) -> Result<Option<Exposure>, ShadowCopyError> {
        let Some(keeper) = self.keeper() else {
            return Ok(None);
        };
        let Some(exposure) = keeper.take_down(shadow) else {
            return Ok(None);
        };
        if self.engine.shadow(shadow).is_some() {
            self.engine.set_exposure(shadow, None)?;
        }
        Ok(Some(exposure))
    }

    /// Takes down exposures whose shadow is gone (the engine deleted it inside a write, to fit
    /// a diff-area limit), so no exposure serves a deleted shadow. Returns those shadows.
    pub fn reap_exposures(&self) -> Vec<ShadowId> {
        let pending: Vec<ShadowId> = std::mem::take(
            &mut *self
                .relay
                .pending
                .shadows
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let Some(keeper) = self.keeper() else {
            return Vec::new();
        };
        let mut gone: Vec<ShadowId> = keeper
            .exposed()
            .into_iter()
            .filter(|shadow| pending.contains(shadow) || self.engine.shadow(*shadow).is_none())
            .collect();
        gone.sort();
        gone.dedup();
        gone.retain(|shadow| keeper.take_down(*shadow).is_some());
        gone
    }

    // ---- deletion, release, revert, limits ----------------------------------------------

    /// Deletes the selected shadows: exposures down first, then the shadows, then their
    /// overlays. Returns what was deleted, oldest first.
    pub fn delete_shadows(
        &self,
        selector: &DeleteSelector,
    ) -> Result<Vec<ShadowInfo>, ShadowCopyError> {
        let all = self.engine.shadows();
        for shadow in &all {
            if shadow.exposure.is_some() && selected(selector, shadow, &all) {
                self.unexpose(shadow.id)?;
            }
        }
        let deleted = self.engine.delete_shadows(selector)?;
        let mut failure = None;
        for shadow in &deleted {
            if let Err(source) = self.overlays.remove(shadow.id) {
                failure.get_or_insert(ShadowCopyError::OverlayRemoval {
                    path: self.overlays.overlay_path(shadow.id),
                    source,
                });
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(deleted),
        }
    }

    /// A requester ended: its backup's writers get BackupShutdown only, and its volatile
    /// shadows are deleted (exposures and overlays with them).
    pub fn release_requester(
        &self,
        requester_id: RequesterId,
        requester: &mut RequesterState,
    ) -> Result<Vec<ShadowInfo>, ShadowCopyError> {
        if let Some(session) = requester.backup.take() {
            let host = self.writer_host();
            let _ = Coordinator::new(&host, &SilentObserver).backup_shutdown(&session);
        }
        self.delete_shadows(&DeleteSelector::OwnedBy(requester_id))
    }

    /// Makes the volume's content the shadow's, what writers repaired during auto-recovery
    /// included (through the normal write path). The writes may delete shadows to fit a
    /// diff-area limit: their exposures go before this returns.
    pub fn revert(&self, shadow: ShadowId, progress: &dyn Progress) -> Result<(), ShadowCopyError> {
        let reverted = self.revert_with_overlay(shadow, progress);
        self.reap_exposures();
        reverted
    }

    fn revert_with_overlay(
        &self,
        shadow: ShadowId,
        progress: &dyn Progress,
    ) -> Result<(), ShadowCopyError> {
        self.engine.revert(shadow, progress)?;
        if !self.overlays.has_overlay(shadow) {
            return Ok(());
        }
        let info = self
            .engine
            .shadow(shadow)
            .ok_or(ShadowCopyError::ShadowNotFound { shadow })?;
        let base = self.engine.open_shadow(shadow)?;
        let path = self.overlays.overlay_path(shadow);
        let overlay = OverlayDevice::open(base, &path, false)
            .map_err(|source| ShadowCopyError::Overlay { path, source })?;
        let volume = self.engine.open_volume(info.volume.id)?;
        let mut buffer = vec![0u8; OVERLAY_CHUNK as usize];
        for chunk in overlay.overlaid_chunks() {
            let start = chunk * OVERLAY_CHUNK;
            let length = (overlay.size() - start).min(OVERLAY_CHUNK) as usize;
            overlay
                .read_at(start, &mut buffer[..length])
                .and_then(|()| volume.write_at(start, &buffer[..length]))
                .map_err(|source| ShadowCopyError::RevertRecovered { source })?;
        }
        volume
            .flush()
            .map_err(|source| ShadowCopyError::RevertRecovered { source })
    }

    /// Sets (or clears) a volume's diff-area limit; shadows deleted to fit it lose their
    /// exposures and overlays.
    pub fn set_max_diff_area(
        &self,
        volume: VolumeId,
        max_bytes: Option<u64>,
    ) -> Result<Vec<ShadowInfo>, ShadowCopyError> {
        let deleted = self.engine.set_max_diff_area(volume, max_bytes);
        self.reap_exposures();
        Ok(deleted?)
    }

    /// The engine's check, with overlays and view directories whose shadow is gone reported
    /// as leaked.
    pub fn check(&self) -> CheckReport {
        let mut report = self.engine.check();
        for leaked in self
            .overlays
            .leaked(&|shadow| self.engine.shadow(shadow).is_some())
        {
            report.leaked_bytes += leaked.bytes;
            report.problems.push(format!(
                "the auto-recovery overlay {} belongs to no shadow copy (leaked)",
                leaked.path.display()
            ));
        }
        report
    }
}

impl fmt::Debug for ShadowCopyCoordinator {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ShadowCopyCoordinator")
            .field("store", &self.engine.store_dir())
            .finish_non_exhaustive()
    }
}

/// Whether `selector` picks `shadow` (as the engine will decide), among `all`.
fn selected(selector: &DeleteSelector, shadow: &ShadowInfo, all: &[ShadowInfo]) -> bool {
    match selector {
        DeleteSelector::All => true,
        DeleteSelector::Volume(volume) => shadow.volume.id == *volume,
        DeleteSelector::Oldest(volume) => {
            shadow.volume.id == *volume
                && all
                    .iter()
                    .filter(|other| other.volume.id == *volume)
                    .map(|other| other.sequence)
                    .min()
                    == Some(shadow.sequence)
        }
        DeleteSelector::Set(set) => shadow.set_id == *set,
        DeleteSelector::Id(id) => shadow.id == *id,
        DeleteSelector::OwnedBy(requester) => shadow.owner == Some(*requester),
    }
}
