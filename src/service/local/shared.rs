//! What every requester of one service shares ([`ServiceCore`]): the coordinator, the
//! exposures and attachments, the running requests that can be stopped.

use std::path::Path;
use std::sync::Arc;

use std::path::PathBuf;
use std::sync::Mutex;

use crate::engine::clock::{IdSource, RandomIds};
use crate::engine::coordinator::shadow_copy::{ExposureKeeper, ShadowCopyCoordinator};
use crate::engine::device::BlockDevice;
use crate::engine::ids::ShadowId;
use crate::engine::ids::VolumeId;
use crate::engine::model::ExposureKind;
use crate::engine::model::{Exposure, VolumeInfo};
use crate::engine::progress::CancelToken;
use crate::engine::vss::VssCode;
use crate::engine::writer::host::{HostOptions, WriterHost};
use crate::engine::Engine;
use crate::service::api::OperationId;
use crate::service::error::ServiceError;
use crate::service::events::ServiceObserver;
use crate::service::exposure::Exposures;

use super::coordinator_error;

/// A running request that can be stopped, registered with the service until it ends.
pub(super) struct RunningOperation<'c> {
    core: &'c ServiceCore,
    id: OperationId,
    pub(super) stop: CancelToken,
}

impl Drop for RunningOperation<'_> {
    fn drop(&mut self) {
        lock_ignoring_poison(&self.core.operations).remove(&self.id);
    }
}

pub(super) fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What rewrites a whole volume, for the in-use check and its messages.
#[derive(Clone, Copy)]
pub(super) enum Rewrite {
    Revert { shadow: ShadowId },
    Resync,
}

/// The exposures `expose` made, alive until `unexpose`, deletion, or the service's end. The
/// coordinator reaches them through [`ExposureKeeper`] to take one down before its shadow goes.
#[derive(Default)]
pub struct LiveExposures {
    live: Mutex<Exposures>,
}

impl LiveExposures {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Exposures> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ExposureKeeper for LiveExposures {
    fn exposed(&self) -> Vec<ShadowId> {
        self.lock().iter().map(|(shadow, _)| *shadow).collect()
    }

    fn take_down(&self, shadow: ShadowId) -> Option<Exposure> {
        let removed = self.lock().remove(shadow);
        removed.map(|(exposure, handle)| {
            handle.close();
            exposure
        })
    }
}

/// What every requester of one service shares: the shadow-copy coordinator (engine, writers,
/// overlays, the one-creation-at-a-time rule), the exposures and the attachments.
pub struct ServiceCore {
    pub engine: Arc<Engine>,
    pub coordinator: Arc<ShadowCopyCoordinator>,
    pub(super) exposures: Arc<LiveExposures>,
    /// Live volumes served read-write by `attach`, until `detach` or the service's end.
    pub(super) attachments: Mutex<Exposures<VolumeId>>,
    /// The running requests that can be stopped, by the name told to their requester. A
    /// `cancel` arrives on another connection than its request, so this is shared.
    pub(super) operations: Mutex<std::collections::HashMap<OperationId, CancelToken>>,
}

impl ServiceCore {
    pub fn new(engine: Arc<Engine>) -> Arc<Self> {
        Self::with_ids(engine, Arc::new(RandomIds), HostOptions::default())
    }

    /// With an injected ID source and writer timeouts (tests).
    pub fn with_ids(
        engine: Arc<Engine>,
        ids: Arc<dyn IdSource>,
        writer_options: HostOptions,
    ) -> Arc<Self> {
        let coordinator = Arc::new(ShadowCopyCoordinator::new(
            engine.clone(),
            ids,
            writer_options,
        ));
        let exposures = Arc::new(LiveExposures::default());
        coordinator.set_exposure_keeper(exposures.clone());
        Arc::new(Self {
            engine,
            coordinator,
            exposures,
            attachments: Mutex::new(Exposures::default()),
            operations: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Registers a request that can be stopped and tells its requester its name.
    pub(super) fn begin_operation(
        &self,
        observer: &mut dyn ServiceObserver,
    ) -> RunningOperation<'_> {
        let id = OperationId(uuid::Uuid::new_v4());
        let stop = CancelToken::new();
        lock_ignoring_poison(&self.operations).insert(id, stop.clone());
        observer.cancellable(id);
        RunningOperation {
            core: self,
            id,
            stop,
        }
    }

    /// Fires the stop of a running request; false when none runs under that name.
    pub(super) fn cancel_operation(&self, operation: OperationId) -> bool {
        match lock_ignoring_poison(&self.operations).get(&operation) {
            Some(stop) => {
                stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Where each shadow deleted to fit a diff-area limit is told (the service log), after
    /// the coordinator removed what it kept for it.
    pub fn set_deletion_sink(&self, sink: Arc<dyn crate::engine::deletions::DeletionSink>) {
        self.coordinator.set_deletion_sink(sink);
    }

    /// Makes sure nothing uses `volume` before a revert rewrites it, as Windows locks or
    /// dismounts the volume: a file system mounted from the image (or from its attached FUSE
    /// file) is always refused, since unmounting it is its owner's call; diskshadow's own
    /// attachment is refused unless `force_dismount`, which detaches it and says so.
    pub(super) fn release_for_revert(
        &self,
        volume: &VolumeInfo,
        shadow: ShadowId,
        force_dismount: bool,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        self.release_volume(volume, Rewrite::Revert { shadow }, force_dismount, observer)
    }

    /// The volume safety check of a resync (skipped by `novolcheck`): refused, with
    /// `VSS_E_VOLUME_IN_USE`, when a file system on it is mounted, when diskshadow attached
    /// it, or when a loop device (or another process) has its image open.
    pub(super) fn check_resync_destination(&self, volume: &VolumeInfo) -> Result<(), ServiceError> {
        let mut silent = crate::service::SilentObserver;
        self.release_volume(volume, Rewrite::Resync, false, &mut silent)?;
        let users = crate::service::exposure::outside_users(&volume.path);
        if let Some(first) = users.first() {
            return Err(ServiceError::invalid(format!(
                "the volume {} is in use: {} has its image open; a resync would change its blocks under it",
                volume.display_name(),
                users.join(", ")
            ))
            .with_code(VssCode::VSS_E_VOLUME_IN_USE)
            .with_help(format!(
                "release it first ({first}: `losetup -d` it, or stop the process), or run `resync novolcheck`"
            )));
        }
        Ok(())
    }

    pub(super) fn release_volume(
        &self,
        volume: &VolumeInfo,
        rewrite: Rewrite,
        force_dismount: bool,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        let operation = match rewrite {
            Rewrite::Revert { .. } => "revert",
            Rewrite::Resync => "resync",
        };
        let mut attachments = self
            .attachments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let attachment = attachments
            .iter()
            .find(|(key, _)| **key == volume.id)
            .map(|(_, exposure)| exposure.clone());
        let mut mounted = crate::service::exposure::filesystems_on(&volume.path);
        if let Some(attachment) = &attachment {
            mounted.extend(crate::service::exposure::filesystems_on(Path::new(
                &attachment.location,
            )));
        }
        let name = volume.display_name();
        if !mounted.is_empty() {
            let places: Vec<String> = mounted
                .iter()
                .map(|path| path.display().to_string())
                .collect();
            return Err(ServiceError::invalid(format!(
                "the volume {name} is in use: a file system on it is mounted at {}; a {operation} would change its blocks under it",
                places.join(", ")
            ))
            .with_code(VssCode::VSS_E_VOLUME_IN_USE)
            .with_help(format!(
                "unmount it first (`umount {}`), then {operation}",
                places[0]
            )));
        }
        let Some(attachment) = attachment else {
            return Ok(());
        };
        if !force_dismount {
            let help = match rewrite {
                Rewrite::Revert { shadow } => format!(
                    "`detach {}` first, or force it: `vssadmin revert shadow /shadow={shadow} /ForceDismount` detaches it for you",
                    attachment.name
                ),
                Rewrite::Resync => format!(
                    "`detach {}` first, or run `resync novolcheck`: the volume stays usable during a resync, and its clients see it change",
                    attachment.name
                ),
            };
            return Err(ServiceError::invalid(format!(
                "the volume {name} is in use: it is attached at {}, and its clients would see it change under them",
                attachment.name
            ))
            .with_code(VssCode::VSS_E_VOLUME_IN_USE)
            .with_help(help));
        }
        if let Some((_, handle)) = attachments.remove(volume.id) {
            handle.close();
        }
        observer.line(&format!(
            "The volume {name} was detached from {} for the revert; its clients were disconnected.",
            attachment.name
        ));
        Ok(())
    }

    /// The file systems mounted from the attached FUSE files of `volumes`: flush-and-hold
    /// freezes them around the commit, as VSS flushes and holds the file system.
    pub(super) fn filesystems_to_hold(&self, volumes: &[VolumeId]) -> Vec<PathBuf> {
        let attachments = self
            .attachments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        attachments
            .iter()
            .filter(|(volume, exposure)| {
                volumes.contains(volume) && exposure.kind != ExposureKind::Share
            })
            .flat_map(|(_, exposure)| {
                crate::service::exposure::filesystems_on(Path::new(&exposure.location))
            })
            .collect()
    }

    /// A shadow copy as requesters read it, with its sealed auto-recovery overlay.
    pub fn shadow_device(&self, shadow: ShadowId) -> Result<Arc<dyn BlockDevice>, ServiceError> {
        self.coordinator
            .open_shadow(shadow)
            .map_err(coordinator_error)
    }

    /// Takes down exposures whose shadow the engine deleted by itself (oldest first, when a
    /// write would exceed a diff-area limit), so no exposure serves a deleted shadow. Returns
    /// the shadows whose exposures went.
    pub fn reap_dangling_exposures(&self) -> Vec<ShadowId> {
        self.coordinator.reap_exposures()
    }

    /// True while a shadow is exposed or a volume attached: the service must not idle out
    /// under its clients (a file system mounted from an attachment would see I/O errors).
    pub fn has_exposures(&self) -> bool {
        !self.exposures.lock().is_empty()
            || !self
                .attachments
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .is_empty()
    }

    /// At service start: exposures recorded by a service that ended without taking them down
    /// (killed, crashed) have no handle; their mounts and sockets are cleaned and their
    /// records cleared.
    pub fn clear_stale_exposures(&self) -> Vec<ShadowId> {
        let mut cleared = Vec::new();
        let mut sockets = Vec::new();
        let mut mounts = Vec::new();
        for shadow in self.engine.shadows() {
            let Some(exposure) = &shadow.exposure else {
                continue;
            };
            match exposure.kind {
                ExposureKind::Share => {
                    if let Some(socket) = exposure.location.split("socket=").nth(1) {
                        sockets.push(PathBuf::from(socket));
                    }
                }
                ExposureKind::Directory | ExposureKind::Drive => {
                    mounts.push(PathBuf::from(&exposure.location))
                }
            }
            if self.engine.set_exposure(shadow.id, None).is_ok() {
                cleared.push(shadow.id);
            }
        }
        let _ = crate::engine::expose::cleanup_stale(&mounts, &sockets);
        cleared
    }

    /// The store's directory of writer registrations.
    pub fn writers_directory(&self) -> PathBuf {
        self.coordinator.writers_directory()
    }

    /// The writer host, loading the registrations the first time.
    pub fn writer_host(&self) -> Arc<WriterHost> {
        self.coordinator.writer_host()
    }
}
