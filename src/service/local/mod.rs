//! The service in-process: the engine behind the [`ShadowService`] trait, for one requester.
//! The service process serves every connection through one of these, and tests use it
//! directly.
//!
//! The trait's methods are here; the longer ones live beside what they share: exposures and
//! attachments in `serving`, writer listings and restore in `writers`. What every requester of
//! one service shares ([`ServiceCore`]) is in `shared`, and the adapters from the engine's and
//! the coordinator's observers to the requester's in `observe`.

use crate::engine::ids::ProviderId;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;

use std::path::PathBuf;

use super::api::{CreateOutcome, CreateRequest, LoadedMetadata, OperationId, ShadowService};
use super::error::ServiceError;
use super::events::ServiceObserver;
use super::file_io;
use crate::engine::cabinet::MetadataCabinet;
use crate::engine::coordinator::shadow_copy::{RequesterState, ShadowSetRequest};
use crate::engine::coordinator::RestoreWriter;
use crate::engine::device::BlockDevice;
use crate::engine::ids::VolumeId;
use crate::engine::ids::{parse_guid, ShadowId};
use crate::engine::model::{
    DeleteSelector, DriveTarget, Exposure, ProviderInfo, RequesterId, ShadowInfo, StorageInfo,
    VolumeInfo,
};
use crate::engine::progress::CancelToken;
use crate::engine::resync::ResyncOutcome;
use crate::engine::vss::VssCode;
use crate::engine::Engine;

pub(crate) use super::way_out::coordinator_error;
use super::way_out::engine_failure;

macro_rules! from_engine {
    ($result:expr) => {
        $result.map_err(|error| $crate::service::way_out::engine_failure(&error))
    };
}

mod observe;
mod serving;
mod shared;
mod writers;

use observe::{CoordinatorBridge, ObserverProgress};
pub use shared::{LiveExposures, ServiceCore};

/// One requester's view of the service, with what it holds between commands.
pub struct LocalService {
    core: Arc<ServiceCore>,
    requester: RequesterId,
    /// What the coordinator keeps for this requester between commands (its backup).
    state: RequesterState,
    /// The metadata loaded by `load metadata`.
    loaded: Option<MetadataCabinet>,
    /// The writers told of a restore by `begin restore`, until `end restore`.
    restoring: Option<Vec<RestoreWriter>>,
}

impl LocalService {
    /// A requester with a service of its own (tests, `DISKSHADOW_IN_PROCESS`).
    pub fn new(engine: Arc<Engine>, requester: RequesterId) -> Self {
        Self::with_core(ServiceCore::new(engine), requester)
    }

    /// A requester sharing `core` with the service's other requesters.
    pub fn with_core(core: Arc<ServiceCore>, requester: RequesterId) -> Self {
        Self {
            core,
            requester,
            state: RequesterState::default(),
            loaded: None,
            restoring: None,
        }
    }

    /// A shadow copy (`{GUID}`) or a volume, as a device.
    fn open_target(
        &self,
        target: &str,
        base_dir: &Path,
    ) -> Result<Arc<dyn BlockDevice>, ServiceError> {
        if let Some(uuid) = parse_guid(target) {
            let shadow = ShadowId(uuid);
            if self.core.engine.shadow(shadow).is_some() {
                return self.core.shadow_device(shadow);
            }
        }
        let volume = from_engine!(self.core.engine.resolve_volume(target, base_dir))?;
        from_engine!(self.core.engine.open_volume(volume.id))
    }
}

impl ShadowService for LocalService {
    fn resolve_volume(&mut self, spec: &str, base_dir: &Path) -> Result<VolumeInfo, ServiceError> {
        from_engine!(self.core.engine.resolve_volume(spec, base_dir))
    }

    fn register_volume(
        &mut self,
        path: &str,
        chunk_size: Option<u32>,
        provider: Option<ProviderId>,
        base_dir: &Path,
    ) -> Result<VolumeInfo, ServiceError> {
        // An RBD volume (`rbd:POOL/IMAGE`) is a name, not a path below `base_dir`.
        let full = if Path::new(path).is_absolute()
            || crate::engine::rbd::file::is_volume_path(Path::new(path))
        {
            PathBuf::from(path)
        } else {
            base_dir.join(path)
        };
        let canonical = full.canonicalize().unwrap_or_else(|_| full.clone());
        if let Some(existing) = self
            .core
            .engine
            .volumes()
            .into_iter()
            .find(|volume| volume.path == canonical)
        {
            if chunk_size.is_some_and(|wanted| wanted != existing.chunk_size) {
                return Err(ServiceError::invalid(format!(
                    "{} is already registered with {}-byte chunks; the chunk size is chosen once, at registration",
                    existing.display_name(),
                    existing.chunk_size
                ))
                .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
                .with_help("register a copy of the image under another path to use another chunk size"));
            }
            if let Some(wanted) = provider {
                let current = self.core.engine.volume_provider(existing.id);
                if current != Some(wanted) {
                    return Err(ServiceError::invalid(format!(
                        "{} is already registered for another provider; the provider is chosen once, at registration",
                        existing.display_name()
                    ))
                    .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
                    .with_help("name the provider per shadow copy instead: add volume ... provider {ID}"));
                }
            }
            return Ok(existing);
        }
        from_engine!(self
            .core
            .engine
            .register_volume_with_provider(&full, chunk_size, provider))
    }

    fn volumes(&mut self) -> Result<Vec<VolumeInfo>, ServiceError> {
        Ok(self.core.engine.volumes())
    }

    fn drive_map(&mut self) -> Result<Vec<(char, DriveTarget)>, ServiceError> {
        Ok(self.core.engine.drive_map())
    }

    fn map_drive(&mut self, letter: char, target: DriveTarget) -> Result<(), ServiceError> {
        from_engine!(self.core.engine.map_drive(letter, target))
    }

    fn unmap_drive(&mut self, letter: char) -> Result<(), ServiceError> {
        from_engine!(self.core.engine.unmap_drive(letter))
    }

    fn create(
        &mut self,
        request: &CreateRequest,
        observer: &mut dyn ServiceObserver,
    ) -> Result<CreateOutcome, ServiceError> {
        let volume_ids: Vec<VolumeId> = request
            .volumes
            .iter()
            .map(|volume| volume.volume.id)
            .collect();
        let set_request = ShadowSetRequest {
            volumes: request
                .volumes
                .iter()
                .map(|volume| (volume.volume.clone(), volume.provider))
                .collect(),
            context: request.context,
            extra_attributes: request.extra_attributes,
            backup_type: request.backup_type,
            writers: request.writers.clone(),
            aliases: request.aliases.clone(),
            metadata_path: request.metadata_path.clone(),
            default_metadata: request.default_metadata.clone(),
            flush_mount_points: self.core.filesystems_to_hold(&volume_ids),
        };
        let core = self.core.clone();
        let operation = core.begin_operation(observer);
        let bridge = CoordinatorBridge::new(observer, request.step, operation.stop.clone());
        let outcome = self
            .core
            .coordinator
            .create(self.requester, &mut self.state, &set_request, &bridge)
            .map_err(coordinator_error)?;
        Ok(CreateOutcome {
            set: outcome.set,
            metadata_files: outcome.metadata_files,
            metadata_path: outcome.metadata_path,
            metadata_error: outcome.metadata_error,
            copy_stopped: outcome.copy_stopped,
        })
    }

    fn shadows(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        Ok(self.core.engine.shadows())
    }

    fn delete_shadows(
        &mut self,
        selector: &DeleteSelector,
    ) -> Result<Vec<ShadowInfo>, ServiceError> {
        self.core
            .coordinator
            .delete_shadows(selector)
            .map_err(coordinator_error)
    }

    fn revert(
        &mut self,
        shadow: ShadowId,
        force_dismount: bool,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        if let Some(info) = self.core.engine.shadow(shadow) {
            self.core
                .release_for_revert(&info.volume, shadow, force_dismount, observer)?;
        }
        // A revert never stops halfway (as on Windows, it cannot be cancelled): it is not
        // offered to the requester as cancellable, and never asks.
        let progress = ObserverProgress::new(observer, CancelToken::new());
        self.core
            .coordinator
            .revert(shadow, &progress)
            .map_err(coordinator_error)
    }

    fn resync(
        &mut self,
        shadow: ShadowId,
        destination: Option<VolumeId>,
        no_volume_check: bool,
        observer: &mut dyn ServiceObserver,
    ) -> Result<ResyncOutcome, ServiceError> {
        if !no_volume_check {
            let target =
                destination.or_else(|| self.core.engine.shadow(shadow).map(|info| info.volume.id));
            if let Some(volume) = target.and_then(|target| {
                self.core
                    .engine
                    .volumes()
                    .into_iter()
                    .find(|volume| volume.id == target)
            }) {
                self.core.check_resync_destination(&volume)?;
            }
        }
        let core = self.core.clone();
        let operation = core.begin_operation(observer);
        let progress = ObserverProgress::new(observer, operation.stop.clone());
        let outcome = self
            .core
            .engine
            .resync(shadow, destination, &progress)
            .map_err(|error| engine_failure(&error));
        // Shadows deleted to fit a diff-area limit during the resync lose their exposures.
        self.core.coordinator.reap_exposures();
        outcome
    }

    fn cancel(&mut self, operation: OperationId) -> Result<(), ServiceError> {
        if self.core.cancel_operation(operation) {
            Ok(())
        } else {
            Err(ServiceError::not_found(format!(
                "no request that can be stopped runs as {operation}; it has ended"
            )))
        }
    }

    fn providers(&mut self) -> Result<Vec<ProviderInfo>, ServiceError> {
        Ok(self.core.engine.providers())
    }

    fn storage(&mut self) -> Result<Vec<StorageInfo>, ServiceError> {
        Ok(self.core.engine.storage())
    }

    fn set_max_diff_area(
        &mut self,
        volume: &VolumeInfo,
        max_bytes: Option<u64>,
    ) -> Result<Vec<ShadowInfo>, ServiceError> {
        self.core
            .coordinator
            .set_max_diff_area(volume.id, max_bytes)
            .map_err(coordinator_error)
    }

    fn expose(
        &mut self,
        shadow_id: ShadowId,
        target: &str,
        base_dir: &Path,
    ) -> Result<Exposure, ServiceError> {
        self.expose_shadow(shadow_id, target, base_dir)
    }

    fn unexpose(&mut self, target: &str, base_dir: &Path) -> Result<ShadowInfo, ServiceError> {
        self.take_down_exposure(target, base_dir)
    }

    fn attach(
        &mut self,
        volume: &str,
        target: &str,
        base_dir: &Path,
    ) -> Result<Exposure, ServiceError> {
        self.attach_volume(volume, target, base_dir)
    }

    fn detach(&mut self, target: &str, base_dir: &Path) -> Result<VolumeInfo, ServiceError> {
        self.detach_target(target, base_dir)
    }

    fn outside_users(&mut self, volume: &VolumeInfo) -> Result<Vec<String>, ServiceError> {
        Ok(crate::service::exposure::outside_users(&volume.path))
    }

    fn attachments(&mut self) -> Result<Vec<(VolumeInfo, Exposure)>, ServiceError> {
        self.live_attachments()
    }

    fn read(
        &mut self,
        target: &str,
        offset: u64,
        length: u64,
        base_dir: &Path,
    ) -> Result<Vec<u8>, ServiceError> {
        let device = self.open_target(target, base_dir)?;
        let size = device.size();
        if offset > size {
            return Err(ServiceError::invalid(format!(
                "offset {offset} is past the end ({size} bytes)"
            ))
            .with_help("`diskshadow volume info` shows the size"));
        }
        let length = length.min(size - offset);
        let mut buffer = vec![
            0u8;
            usize::try_from(length)
                .map_err(|_| ServiceError::invalid("length too large"))?
        ];
        device
            .read_at(offset, &mut buffer)
            .map_err(|error| ServiceError::io(format!("reading {target}: {error}")))?;
        Ok(buffer)
    }

    fn write(
        &mut self,
        volume: &str,
        offset: u64,
        data: &[u8],
        base_dir: &Path,
    ) -> Result<(), ServiceError> {
        let info = from_engine!(self.core.engine.resolve_volume(volume, base_dir))?;
        let device = from_engine!(self.core.engine.open_volume(info.id))?;
        let end = offset.saturating_add(data.len() as u64);
        if end > device.size() {
            return Err(ServiceError::invalid(format!(
                "the write ends at byte {end}, past the end of the volume ({} bytes)",
                device.size()
            ))
            .with_help("volumes keep their size; write inside it"));
        }
        device
            .write_at(offset, data)
            .and_then(|()| device.flush())
            .map_err(|error| ServiceError::io(format!("writing {volume}: {error}")))
    }

    fn read_into(
        &mut self,
        target: &str,
        offset: u64,
        length: u64,
        output: BorrowedFd<'_>,
        sparse: bool,
        base_dir: &Path,
        observer: &mut dyn ServiceObserver,
    ) -> Result<u64, ServiceError> {
        let device = self.open_target(target, base_dir)?;
        file_io::read_into(&*device, target, offset, length, output, sparse, observer)
    }

    fn write_from(
        &mut self,
        volume: &str,
        offset: u64,
        input: BorrowedFd<'_>,
        base_dir: &Path,
        observer: &mut dyn ServiceObserver,
    ) -> Result<u64, ServiceError> {
        let info = from_engine!(self.core.engine.resolve_volume(volume, base_dir))?;
        let device = from_engine!(self.core.engine.open_volume(info.id))?;
        file_io::write_from(&*device, volume, offset, input, observer)
    }

    fn list_writers(&mut self, metadata: bool) -> Result<super::api::WriterReport, ServiceError> {
        self.writer_report(metadata)
    }

    fn writer_statuses(&mut self) -> Result<Vec<super::api::WriterStatusView>, ServiceError> {
        self.writer_status_views()
    }

    fn end_backup(&mut self, observer: &mut dyn ServiceObserver) -> Result<(), ServiceError> {
        self.finish_backup(observer)
    }

    fn attach_array(
        &mut self,
        dir: &Path,
        name: Option<&str>,
    ) -> Result<crate::engine::array::ArrayInfo, ServiceError> {
        from_engine!(self.core.engine.attach_array(dir, name))
    }

    fn attach_rbd_pool(
        &mut self,
        pool: &str,
        conf: &Path,
        client_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<crate::engine::array::ArrayInfo, ServiceError> {
        from_engine!(self
            .core
            .engine
            .attach_rbd_pool(pool, conf, client_id, name))
    }

    fn detach_array(&mut self, name: &str) -> Result<(), ServiceError> {
        from_engine!(self.core.engine.detach_array(name))
    }

    fn arrays(&mut self) -> Result<Vec<crate::engine::array::ArrayInfo>, ServiceError> {
        Ok(self.core.engine.arrays())
    }

    fn import(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        let Some(cabinet) = self.loaded.as_ref() else {
            let error = crate::engine::array::ImportError::NothingLoaded;
            return Err(engine_failure(&error));
        };
        from_engine!(self.core.engine.import_shadows(cabinet))
    }

    fn mask(
        &mut self,
        set_id: crate::engine::ids::ShadowSetId,
    ) -> Result<Vec<ShadowInfo>, ServiceError> {
        from_engine!(self.core.engine.mask_set(set_id))
    }

    fn break_set(
        &mut self,
        set_id: crate::engine::ids::ShadowSetId,
        writable: bool,
    ) -> Result<Vec<VolumeInfo>, ServiceError> {
        from_engine!(self.core.engine.break_set(
            set_id,
            writable,
            &crate::engine::progress::NoProgress
        ))
    }

    fn load_metadata(&mut self, cabinet: MetadataCabinet) -> Result<LoadedMetadata, ServiceError> {
        self.keep_metadata(cabinet)
    }

    fn simulate_restore(&mut self, verify: &[String]) -> Result<Vec<String>, ServiceError> {
        self.restore_simulation(verify)
    }

    fn begin_restore(
        &mut self,
        verify: &[String],
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        self.start_restore(verify, observer)
    }

    fn end_restore(&mut self, observer: &mut dyn ServiceObserver) -> Result<(), ServiceError> {
        self.finish_restore(observer)
    }

    fn check_store(&mut self) -> Result<super::api::StoreCheck, ServiceError> {
        let report = self.core.coordinator.check();
        Ok(super::api::StoreCheck {
            clean: report.is_clean(),
            volumes_checked: report.volumes_checked,
            shadows_checked: report.shadows_checked,
            preserved_chunks: report.preserved_chunks,
            leaked_bytes: report.leaked_bytes,
            problems: report.problems.clone(),
            suspect_shadows: report
                .suspect_shadows
                .iter()
                .map(|(shadow, reason)| super::api::SuspectShadow {
                    shadow: *shadow,
                    reason: reason.clone(),
                })
                .collect(),
            orphaned_diff_areas: report.orphaned_diff_areas.clone(),
        })
    }

    fn release_requester(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        self.loaded = None;
        self.restoring = None;
        self.core
            .coordinator
            .release_requester(self.requester, &mut self.state)
            .map_err(coordinator_error)
    }
}
