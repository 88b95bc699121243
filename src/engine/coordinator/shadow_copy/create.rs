//! Creation (DoSnapshotSet) under [`ShadowCopyCoordinator`]: the writers' sequence, the
//! commit, the auto-recovery views for PostSnapshot, the sealed overlays and the metadata
//! document.

use std::path::{Path, PathBuf};
use std::sync::{Arc, TryLockError};

use crate::engine::cabinet::{
    log_file_name, write_metadata_cab, BackupComponents, ManifestShadow, MetadataCabinet,
    WriterDocument,
};
use crate::engine::core::{CreateError, FullCopyError};
use crate::engine::ids::{ShadowId, ShadowSetId, VolumeId};
use crate::engine::model::{
    CreateSpec, CreateVolume, CreatedSet, DeleteSelector, RequesterId, ShadowHealth, VolumeInfo,
};
use crate::engine::overlay::OverlayDevice;
use crate::engine::vss::Attributes;

use crate::engine::coordinator::{
    BackupSession, Coordinator, CreationFailure, CreationRequest, EngineObserver, GatheredMetadata,
    PostSnapshotShadow, SelectionPlan, SilentObserver,
};

use super::{
    RequesterState, ShadowCopyCoordinator, ShadowCopyError, ShadowSetOutcome, ShadowSetRequest,
};

impl ShadowCopyCoordinator {
    /// DoSnapshotSet: writers' sequence, commit, auto-recovery views, metadata document.
    /// Refused with [`ShadowCopyError::SetInProgress`] while another creation runs.
    pub fn create(
        &self,
        requester_id: RequesterId,
        requester: &mut RequesterState,
        request: &ShadowSetRequest,
        step_observer: &dyn EngineObserver,
    ) -> Result<ShadowSetOutcome, ShadowCopyError> {
        let _creating = match self.creation.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(ShadowCopyError::SetInProgress),
        };
        let host = self.writer_host();
        if let Some(previous) = requester.backup.take() {
            // A new set replaces the backup of the last one: its writers hear BackupShutdown.
            let _ = Coordinator::new(&host, &SilentObserver).backup_shutdown(&previous);
        }
        let set_id = ShadowSetId(self.ids.new_uuid());
        let mut spec = CreateSpec {
            volumes: request
                .volumes
                .iter()
                .map(|(volume, provider)| CreateVolume {
                    volume: volume.id,
                    provider: *provider,
                })
                .collect(),
            context: request.context,
            extra_attributes: request.extra_attributes,
            requester: requester_id,
            set_id: Some(set_id),
        };
        let volume_names: Vec<String> = request
            .volumes
            .iter()
            .map(|(volume, _)| volume.path.display().to_string())
            .collect();
        let volume_ids: Vec<VolumeId> = request
            .volumes
            .iter()
            .map(|(volume, _)| volume.id)
            .collect();
        let coordinator = Coordinator::new(&host, step_observer);
        let (gathered, plan) = if request.context.has_writers() {
            let gathered = coordinator.gather_metadata();
            let resolve = |name: &str| {
                self.engine
                    .resolve_volume(name, Path::new("/"))
                    .ok()
                    .map(|volume| volume.id)
            };
            let plan = coordinator
                .select(&gathered, &request.writers, &volume_ids, &resolve)
                .map_err(ShadowCopyError::Selection)?;
            (gathered, plan)
        } else {
            (
                GatheredMetadata::default(),
                SelectionPlan::without_writers(),
            )
        };
        // A writers context on a host with no writer registered makes a set no writer took
        // part in: it says so in its attributes, as a nowriters context's set does.
        if request.context.has_writers()
            && gathered.writers.is_empty()
            && gathered.unavailable.is_empty()
        {
            spec.extra_attributes = spec.extra_attributes.with(Attributes::NO_WRITERS);
        }
        for file_system in &request.flush_mount_points {
            step_observer.trace(&format!(
                "Flushing and holding writes on the file system at {}.",
                file_system.display()
            ));
        }
        let creation = CreationRequest {
            snapshot_set_id: set_id,
            context: request.context,
            backup_type: request.backup_type,
            volumes: volume_names.clone(),
            flush_mount_points: request.flush_mount_points.clone(),
            autorecover: !request
                .extra_attributes
                .contains(Attributes::NO_AUTORECOVERY),
        };
        // The writer sequence reports a refused commit as a message; the provider's own error
        // is kept here so that it reaches the requester with its type.
        let provider_error: std::cell::RefCell<Option<CreateError>> = std::cell::RefCell::new(None);
        // When writers still thaw and post-snapshot after the commit, the set is committed in
        // creation and kept only once they are done: a crash before then leaves no shadow of it.
        let writers_after_commit = request.context.has_writers() && !plan.writers.is_empty();
        let mut commit = || {
            let committed = if writers_after_commit {
                self.engine
                    .create_shadow_set_in_creation(&spec, step_observer.progress())
            } else {
                self.engine
                    .create_shadow_set_with_progress(&spec, step_observer.progress())
            };
            committed.map_err(|error| {
                let message = error.to_string();
                *provider_error.borrow_mut() = Some(error);
                message
            })
        };
        // Auto-recovery: writers get a read-write view of each new shadow during PostSnapshot.
        let recovering =
            creation.autorecover && request.context.has_writers() && !plan.writers.is_empty();
        let mut recovery_mounts: Vec<(ShadowId, crate::engine::expose::FuseMount)> = Vec::new();
        let mut post_snapshot = |set: &CreatedSet| {
            set.shadows
                .iter()
                .zip(volume_names.iter().zip(&volume_ids))
                .map(|(shadow, (volume, volume_id))| {
                    let path = if recovering {
                        match self.recovery_view(shadow.id) {
                            Ok((path, mount)) => {
                                recovery_mounts.push((shadow.id, mount));
                                Some(path)
                            }
                            Err(error) => {
                                step_observer.verbose(&format!(
                                    "Warning: no auto-recovery view for shadow copy {}: {error}",
                                    shadow.id
                                ));
                                None
                            }
                        }
                    } else {
                        None
                    };
                    PostSnapshotShadow {
                        volume: volume.clone(),
                        volume_id: Some(*volume_id),
                        shadow_id: shadow.id,
                        path,
                    }
                })
                .collect()
        };
        let outcome =
            coordinator.create_shadow_set(&creation, &plan, &mut commit, &mut post_snapshot);
        // The shadows are sealed: their recovery views go, their overlays stay (read-only).
        for (shadow, mount) in recovery_mounts.drain(..) {
            let _ = mount.unmount();
            self.overlays.remove_view_directory(shadow);
        }
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                if let Some(set) = &error.committed {
                    // No shadow of a failed set may remain, nor its recovery overlays.
                    let _ = self.delete_shadows(&DeleteSelector::Set(set.set_id));
                }
                let provider = match &*error.failure {
                    CreationFailure::CommitFailed { .. } => provider_error.borrow_mut().take(),
                    _ => None,
                };
                return Err(ShadowCopyError::Creation {
                    failure: error.failure,
                    provider,
                });
            }
        };
        let mut set = outcome.committed;
        // A transportable set exists only in its metadata file until it is imported, so
        // DiskShadow always saves one for it.
        let transportable = request.extra_attributes.contains(Attributes::TRANSPORTABLE);
        let default_path = match (&request.metadata_path, &request.default_metadata) {
            (None, Some((directory, offset_seconds)))
                if !outcome.session.writers.is_empty() || transportable =>
            {
                Some(directory.join(default_metadata_name(&set, *offset_seconds)))
            }
            _ => None,
        };
        let written_path = request.metadata_path.clone().or(default_path);
        let (metadata_files, metadata_error) = match written_path.as_ref() {
            Some(path) => match self.write_metadata(
                path,
                request,
                &set,
                &outcome.session,
                &gathered,
                step_observer.log_text(),
            ) {
                Ok(files) => (files, None),
                Err(ShadowCopyError::Metadata { source, .. }) => {
                    (Vec::new(), Some(source.to_string()))
                }
                Err(error) => (Vec::new(), Some(error.to_string())),
            },
            None => (Vec::new(), None),
        };
        if let Err(source) = self.engine.finish_creation(set.set_id) {
            let _ = Coordinator::new(&host, &SilentObserver)
                .abort(&outcome.session, "the shadow copy set could not be kept");
            let _ = self.delete_shadows(&DeleteSelector::Set(set.set_id));
            return Err(ShadowCopyError::NotKept { source });
        }
        // Full copies the commit deferred are made now, after thaw, from their points in
        // time, while the volumes stay writable; the command waits for them with progress.
        let mut copy_stopped = None;
        match self
            .engine
            .complete_full_copies(Some(set.set_id), step_observer.progress())
        {
            Ok(_) => {}
            // Stopped on request: nothing is wrong with the set, whose shadows are complete
            // points in time; only their copies are still to be made, as after a crash.
            Err(stopped @ FullCopyError::Stopped { .. }) => {
                copy_stopped = Some(stopped.to_string());
            }
            Err(source) => {
                let _ = Coordinator::new(&host, &SilentObserver)
                    .abort(&outcome.session, "the full copy of a shadow copy failed");
                let _ = self.delete_shadows(&DeleteSelector::Set(set.set_id));
                return Err(ShadowCopyError::FullCopy { source });
            }
        }
        // What the requester is shown is the shadows as they are now: complete.
        for shadow in &mut set.shadows {
            if shadow.health == ShadowHealth::CopyPending {
                if let Some(now) = self.engine.shadow(shadow.id) {
                    *shadow = now;
                }
            }
        }
        // Transportable shadows are made but not surfaced on this host: the array keeps their
        // shadow LUNs for `import`, here or on another host.
        if transportable {
            if let Err(source) = self.engine.unsurface_transportable_set(set.set_id) {
                let _ = Coordinator::new(&host, &SilentObserver)
                    .abort(&outcome.session, "the shadow copy set could not be kept");
                let _ = self.delete_shadows(&DeleteSelector::Set(set.set_id));
                return Err(ShadowCopyError::NotKept {
                    source: source.into(),
                });
            }
        }
        requester.backup = Some(outcome.session);
        Ok(ShadowSetOutcome {
            set,
            metadata_files,
            metadata_path: written_path,
            metadata_error,
            copy_stopped,
        })
    }

    /// A read-write view of a new shadow for PostSnapshot: a FUSE image file over the shadow's
    /// own overlay, never the live volume.
    fn recovery_view(
        &self,
        shadow: ShadowId,
    ) -> Result<(PathBuf, crate::engine::expose::FuseMount), String> {
        let base = self
            .engine
            .open_shadow(shadow)
            .map_err(|error| error.to_string())?;
        let overlay = OverlayDevice::open(base, &self.overlays.overlay_path(shadow), true)
            .map_err(|error| error.to_string())?;
        let directory = self.overlays.view_directory(shadow);
        crate::engine::store::create_private_dir_all(&directory)
            .map_err(|error| error.to_string())?;
        let options = crate::engine::expose::MountOptions::image_file(
            &shadow.to_string(),
            "volume.img",
            false,
        );
        let mount = crate::engine::expose::mount(Arc::new(overlay), &directory, options)
            .map_err(|error| error.to_string())?;
        Ok((directory.join("volume.img"), mount))
    }

    fn write_metadata(
        &self,
        path: &Path,
        request: &ShadowSetRequest,
        set: &CreatedSet,
        session: &BackupSession,
        gathered: &GatheredMetadata,
        log: String,
    ) -> Result<Vec<String>, ShadowCopyError> {
        let mut aliases: Vec<(String, String)> = Vec::new();
        let shadows = set
            .shadows
            .iter()
            .enumerate()
            .map(|(index, shadow)| {
                let alias = request.aliases.get(index).cloned().flatten();
                let name = alias
                    .clone()
                    .unwrap_or_else(|| format!("VSS_SHADOW_{}", index + 1));
                aliases.push((name, shadow.id.to_string()));
                ManifestShadow {
                    shadow_id: shadow.id,
                    alias,
                    original_volume: manifest_volume_name(&shadow.volume),
                    provider_id: shadow.provider_id,
                }
            })
            .collect();
        aliases.push(("VSS_SHADOW_SET".to_string(), set.set_id.to_string()));
        let cabinet = MetadataCabinet {
            snapshot_set_id: set.set_id,
            machine_name: set
                .shadows
                .first()
                .map(|shadow| shadow.originating_machine.clone())
                .unwrap_or_default(),
            shadows,
            aliases,
            backup_components: (!session.writers.is_empty())
                .then(|| BackupComponents::from_session(session)),
            writers: WriterDocument::for_identified(gathered),
            log_name: log_file_name(self.ids.new_uuid().as_u128()),
            log,
        };
        write_metadata_cab(path, &cabinet).map_err(|source| ShadowCopyError::Metadata {
            path: path.to_path_buf(),
            source,
        })
    }
}

fn manifest_volume_name(volume: &VolumeInfo) -> String {
    // An RBD volume by its name in the cluster, which another store attached to the same
    // pool reaches: `import` finds the shadow's snapshot through it.
    if crate::engine::rbd::provider::volume_spec(&volume.path).is_some() {
        return volume.path.display().to_string();
    }
    match volume.drive_letter {
        Some(letter) => format!("{letter}:\\"),
        None => volume.path.display().to_string(),
    }
}

/// DiskShadow's name for the metadata file it saves unasked:
/// `<yyyy-MM-dd>_<hh-mm-ss>_<COMPUTERNAME>.cab`, a 12-hour clock without AM/PM (observed).
fn default_metadata_name(set: &CreatedSet, offset_seconds: i32) -> String {
    let created = set
        .shadows
        .first()
        .map(|shadow| shadow.created_at)
        .unwrap_or_default();
    let offset = chrono::FixedOffset::east_opt(offset_seconds)
        .unwrap_or_else(|| chrono::Offset::fix(&chrono::Utc));
    let machine = set
        .shadows
        .first()
        .map(|shadow| shadow.originating_machine.to_ascii_uppercase())
        .unwrap_or_default();
    format!(
        "{}_{}.cab",
        created.with_timezone(&offset).format("%Y-%m-%d_%I-%M-%S"),
        machine
    )
}
