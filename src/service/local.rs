//! The service in-process: the engine behind the [`ShadowService`] trait, for one requester.
//! The service process serves every connection through one of these, and tests use it
//! directly.

use std::path::Path;
use std::sync::Arc;

use super::api::{CreateOutcome, CreateRequest, ServiceObserver, ShadowService};
use super::error::{ServiceError, ServiceErrorKind};
use crate::engine::device::BlockDevice;
use crate::engine::ids::{parse_guid, ShadowId};
use crate::engine::model::{
    CreateSpec, CreateVolume, DeleteSelector, DriveTarget, Exposure, ProviderInfo, RequesterId,
    ShadowInfo, StorageInfo, VolumeInfo,
};
use crate::engine::progress::Progress;
use crate::engine::vss::VssCode;
use crate::engine::Engine;

/// Maps an engine error (anything with a VSS code and a message) into the service error.
pub fn engine_error(code: VssCode, message: String) -> ServiceError {
    let kind = match code {
        VssCode::VSS_E_OBJECT_NOT_FOUND => ServiceErrorKind::NotFound,
        VssCode::VSS_E_NOT_SUPPORTED | VssCode::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER => {
            ServiceErrorKind::NotSupported
        }
        VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR | VssCode::VSS_E_INSUFFICIENT_STORAGE => {
            ServiceErrorKind::Io
        }
        _ => ServiceErrorKind::Invalid,
    };
    ServiceError::new(kind, message).with_code(code)
}

macro_rules! from_engine {
    ($result:expr) => {
        $result.map_err(|error| engine_error(error.vss_code(), error.to_string()))
    };
}

/// Forwards engine progress to an observer. The engine's progress trait is `Sync`, so the
/// observer sits behind a mutex.
struct ObserverProgress<'o> {
    observer: std::sync::Mutex<&'o mut dyn ServiceObserver>,
}

impl Progress for ObserverProgress<'_> {
    fn begin(&self, what: &str, total: u64) {
        if let Ok(mut observer) = self.observer.lock() {
            observer.progress_begin(what, total);
        }
    }
    fn advance(&self, units: u64) {
        if let Ok(mut observer) = self.observer.lock() {
            observer.progress_advance(units);
        }
    }
    fn finish(&self) {
        if let Ok(mut observer) = self.observer.lock() {
            observer.progress_end();
        }
    }
}

/// What every requester of one service shares: the engine, and the rule that one shadow copy
/// set is created at a time.
pub struct ServiceCore {
    pub engine: Arc<Engine>,
    /// Held for the whole creation sequence; a second requester gets
    /// VSS_E_SNAPSHOT_SET_IN_PROGRESS instead of waiting (as VSS does).
    creation: std::sync::Mutex<()>,
}

impl ServiceCore {
    pub fn new(engine: Arc<Engine>) -> Arc<Self> {
        Arc::new(Self {
            engine,
            creation: std::sync::Mutex::new(()),
        })
    }
}

/// One requester's view of the service.
pub struct LocalService {
    core: Arc<ServiceCore>,
    engine: Arc<Engine>,
    requester: RequesterId,
}

impl LocalService {
    /// A requester with a service of its own (tests, `DISKSHADOW_IN_PROCESS`).
    pub fn new(engine: Arc<Engine>, requester: RequesterId) -> Self {
        Self::with_core(ServiceCore::new(engine), requester)
    }

    /// A requester sharing `core` with the service's other requesters.
    pub fn with_core(core: Arc<ServiceCore>, requester: RequesterId) -> Self {
        let engine = core.engine.clone();
        Self {
            core,
            engine,
            requester,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// A shadow copy (`{GUID}`) or a volume, as a device.
    fn open_target(
        &self,
        target: &str,
        base_dir: &Path,
    ) -> Result<Arc<dyn BlockDevice>, ServiceError> {
        if let Some(uuid) = parse_guid(target) {
            let shadow = ShadowId(uuid);
            if self.engine.shadow(shadow).is_some() {
                return from_engine!(self.engine.open_shadow(shadow));
            }
        }
        let volume = from_engine!(self.engine.resolve_volume(target, base_dir))?;
        from_engine!(self.engine.open_volume(volume.id))
    }
}

impl ShadowService for LocalService {
    fn resolve_volume(&mut self, spec: &str, base_dir: &Path) -> Result<VolumeInfo, ServiceError> {
        from_engine!(self.engine.resolve_volume(spec, base_dir))
    }

    fn volumes(&mut self) -> Result<Vec<VolumeInfo>, ServiceError> {
        Ok(self.engine.volumes())
    }

    fn drive_map(&mut self) -> Result<Vec<(char, DriveTarget)>, ServiceError> {
        Ok(self.engine.drive_map())
    }

    fn map_drive(&mut self, letter: char, target: DriveTarget) -> Result<(), ServiceError> {
        from_engine!(self.engine.map_drive(letter, target))
    }

    fn unmap_drive(&mut self, letter: char) -> Result<(), ServiceError> {
        from_engine!(self.engine.unmap_drive(letter))
    }

    fn create(
        &mut self,
        request: &CreateRequest,
        _observer: &mut dyn ServiceObserver,
    ) -> Result<CreateOutcome, ServiceError> {
        if request.context.has_writers() {
            return Err(ServiceError::not_supported(format!(
                "the context `{}` involves writers, and this build has no writer coordinator yet",
                request.context.diskshadow_words()
            ))
            .with_help("`set context persistent nowriters` or `set context volatile nowriters` makes crash-consistent shadow copies"));
        }
        if request.metadata_path.is_some() {
            return Err(ServiceError::not_supported(
                "metadata files (`set metadata`) are not supported yet",
            )
            .with_help("leave `set metadata` out; the shadow copies are recorded in the store"));
        }
        let core = self.core.clone();
        let _creating = match core.creation.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(ServiceError::invalid(
                    "another requester is creating a shadow copy set",
                )
                .with_code(VssCode::VSS_E_SNAPSHOT_SET_IN_PROGRESS)
                .with_help(
                    "try again when it has finished (vssadmin create shadow /AutoRetry=N waits)",
                ));
            }
        };
        let spec = CreateSpec {
            volumes: request
                .volumes
                .iter()
                .map(|volume| CreateVolume {
                    volume: volume.volume.id,
                    provider: volume.provider,
                })
                .collect(),
            context: request.context,
            extra_attributes: request.extra_attributes,
            requester: self.requester,
            set_id: None,
        };
        let set = from_engine!(self.engine.create_shadow_set(&spec))?;
        Ok(CreateOutcome {
            set,
            metadata_files: Vec::new(),
        })
    }

    fn shadows(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        Ok(self.engine.shadows())
    }

    fn delete_shadows(
        &mut self,
        selector: &DeleteSelector,
    ) -> Result<Vec<ShadowInfo>, ServiceError> {
        from_engine!(self.engine.delete_shadows(selector))
    }

    fn revert(
        &mut self,
        shadow: ShadowId,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        let progress = ObserverProgress {
            observer: std::sync::Mutex::new(observer),
        };
        from_engine!(self.engine.revert(shadow, &progress))
    }

    fn providers(&mut self) -> Result<Vec<ProviderInfo>, ServiceError> {
        Ok(self.engine.providers())
    }

    fn storage(&mut self) -> Result<Vec<StorageInfo>, ServiceError> {
        Ok(self.engine.storage())
    }

    fn set_max_diff_area(
        &mut self,
        volume: &VolumeInfo,
        max_bytes: Option<u64>,
    ) -> Result<Vec<ShadowInfo>, ServiceError> {
        from_engine!(self.engine.set_max_diff_area(volume.id, max_bytes))
    }

    fn expose(
        &mut self,
        _shadow: ShadowId,
        _target: &str,
        _base_dir: &Path,
    ) -> Result<Exposure, ServiceError> {
        Err(ServiceError::not_supported(
            "`expose` is not supported yet: this build cannot mount or share shadow copies",
        )
        .with_help("`diskshadow volume read {shadow-id}` reads a shadow copy's bytes"))
    }

    fn unexpose(&mut self, _target: &str, _base_dir: &Path) -> Result<ShadowInfo, ServiceError> {
        Err(ServiceError::not_supported(
            "`unexpose` is not supported yet: this build cannot mount or share shadow copies",
        ))
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
        let info = from_engine!(self.engine.resolve_volume(volume, base_dir))?;
        let device = from_engine!(self.engine.open_volume(info.id))?;
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

    fn check_store(&mut self) -> Result<super::api::StoreCheck, ServiceError> {
        let report = self.engine.check();
        Ok(super::api::StoreCheck {
            clean: report.is_clean(),
            volumes_checked: report.volumes_checked,
            shadows_checked: report.shadows_checked,
            preserved_chunks: report.preserved_chunks,
            leaked_bytes: report.leaked_bytes,
            problems: report.problems.clone(),
        })
    }

    fn release_requester(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        from_engine!(self
            .engine
            .delete_shadows(&DeleteSelector::OwnedBy(self.requester)))
    }
}
