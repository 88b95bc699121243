//! The engine core: one store, its catalog, its volumes and the copy-on-write provider,
//! behind one `Send + Sync` handle.
//!
//! **Architecture Invariant (locking):** locks are taken in this order and never the other
//! way: the volume table, then volume locks in ascending `VolumeId` order, then the catalog.
//! Shadow reads take a volume's lock shared, so they run concurrently; writes to a volume
//! take it exclusively, so they serialize.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::engine::array::{
    self, ArrayAttachError, ArrayAttachment, ArrayError, ArrayHost, ArrayInfo, ImportError,
    ImportedSetError, ShadowLun,
};
use crate::engine::cabinet::MetadataCabinet;
use crate::engine::catalog::{
    Catalog, CatalogChange, CatalogError, CatalogState, RevertRecord, ShadowRecord, VolumeRecord,
};
use crate::engine::clock::{Clock, IdSource, RandomIds, SystemClock};
use crate::engine::deletions::{DeletionLog, DeletionReason, DeletionSink, DiffAreaDeletion};
use crate::engine::device::{file_extents, write_zeroes_through, BlockDevice, Extent};
pub use crate::engine::folds::DEFAULT_FOLD_STEP_CHUNKS;
use crate::engine::folds::{Folds, StepOutcome};
use crate::engine::ids::{parse_guid, ProviderId, ShadowId, ShadowSetId, VolumeId};
use crate::engine::model::{
    CreateSpec, CreatedSet, DeleteSelector, DriveTarget, Exposure, ExposureKind, ProviderInfo,
    ProviderKind, ShadowHealth, ShadowInfo, StorageInfo, VolumeInfo,
};
use crate::engine::progress::{NoProgress, Progress};
use crate::engine::provider::cow::{self, DiffAreaError, MAX_SEQUENCE};
use crate::engine::provider::{DataPathKind, Provider, ProviderContext, SetMember, VolumeProvider};
use crate::engine::store::LockFailure;
use crate::engine::store::{DurableBackend, FileFingerprint, RealBackend, StoreLayout, StoreLock};
use crate::engine::vss::{self, limits, Attributes, Context};

mod arrays;
mod check;
mod create;
mod delete;
mod devices;
mod error;
mod full_copy;
mod open;
mod providers;
mod rbd;
/// LUN resync: a child of this module because it hooks the volume device and the one write
/// path.
pub mod resync;
mod revert;
mod storage;
mod volumes;
mod write_path;

pub use check::CheckReport;
use error::WriteFailure;
pub use error::{
    CreateError, DeleteError, DeviceError, DriveMapError, ExposureError, FoldError, OpenError,
    RevertError, StorageError, VolumeError,
};
pub use full_copy::FullCopyError;
pub use providers::{provider_by_id, provider_by_name, providers};

/// The default copy-on-write granularity: 64 KiB, as qcow2 clusters and dm-thin chunks;
/// `benches/engine.rs` measures it.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 << 10;
pub const MIN_CHUNK_SIZE: u32 = 4 << 10;
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// First writes buffered per volume before one group commit of the diff area.
pub const DEFAULT_WRITE_BACK_BYTES: usize = 32 << 20;

/// What the engine is given from outside.
#[derive(Clone)]
pub struct EngineOptions {
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    /// Shown as the originating and service machine of every shadow.
    pub machine_name: String,
    /// Chunk size of newly registered volumes (power of two, 4 KiB to 1 MiB).
    pub default_chunk_size: u32,
    pub backend: Arc<dyn DurableBackend>,
    /// Bytes of first-write data buffered per volume before the diff area is synced.
    pub write_back_bytes: usize,
    /// Fold redirect-on-write chunks back into the image on a background thread after a
    /// delete (the default). Off: the fold runs when a caller waits for it
    /// ([`Engine::wait_for_folds`]) or when the engine closes, which makes the sync points of
    /// a run deterministic (crash tests).
    pub background_folds: bool,
    /// Chunks folded per step, the volume locked for each step only.
    pub fold_step_chunks: usize,
}

impl EngineOptions {
    pub fn new(
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        machine_name: impl Into<String>,
        default_chunk_size: u32,
        backend: Arc<dyn DurableBackend>,
    ) -> Self {
        Self {
            clock,
            ids,
            machine_name: machine_name.into(),
            default_chunk_size,
            backend,
            write_back_bytes: DEFAULT_WRITE_BACK_BYTES,
            background_folds: true,
            fold_step_chunks: DEFAULT_FOLD_STEP_CHUNKS,
        }
    }

    /// The real clock, random GUIDs, this host's name, 64 KiB chunks and the real disk.
    pub fn system() -> Self {
        Self::new(
            Arc::new(SystemClock),
            Arc::new(RandomIds),
            host_name(),
            DEFAULT_CHUNK_SIZE,
            Arc::new(RealBackend),
        )
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for EngineOptions {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("EngineOptions")
            .field("machine_name", &self.machine_name)
            .field("default_chunk_size", &self.default_chunk_size)
            .field("write_back_bytes", &self.write_back_bytes)
            .finish_non_exhaustive()
    }
}

/// This host's name (`gethostname`), or `localhost`.
pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return "localhost".to_string();
    }
    let length = buffer
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

enum VolumeSlot {
    Ready(Box<dyn VolumeProvider>),
    Unavailable(String),
}

struct VolumeHandle {
    id: VolumeId,
    state: RwLock<VolumeSlot>,
    /// A resync onto this volume in progress. Installed and removed with `state` held for
    /// writing, so a holder of `state` sees a settled answer.
    resync: Mutex<Option<Arc<resync::ActiveResync>>>,
}

struct Shared {
    layout: StoreLayout,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    machine_name: String,
    default_chunk_size: u32,
    backend: Arc<dyn DurableBackend>,
    /// The Ceph pools this store is attached to, where `backend` opens `rbd:` volumes.
    rbd_pools: crate::engine::rbd::file::AttachedPools,
    write_back_bytes: usize,
    catalog: Mutex<Catalog>,
    volumes: RwLock<BTreeMap<VolumeId, Arc<VolumeHandle>>>,
    /// Shadow sequences start here at least (above every tag in any diff area).
    sequence_floor: u64,
    /// Shadows deleted to fit diff-area limits: kept in the store and told to the service.
    deletions: DeletionLog,
    /// Opened by `check-store`: nothing on disk changes, and nothing can be changed.
    read_only: bool,
    /// Redirect-on-write chunks waiting to be folded back into their images.
    folds: Arc<Folds>,
    /// Shadows whose full copy is being made now (`full_copy.rs`): one copy at a time each.
    copies_running: Mutex<BTreeSet<ShadowId>>,
    _lock: Option<StoreLock>,
}

impl Shared {
    fn handle(&self, volume: VolumeId) -> Option<Arc<VolumeHandle>> {
        read_lock(&self.volumes).get(&volume).cloned()
    }

    /// Change detection before diskshadow's own use of the image (see the callers).
    fn verify_unchanged(&self, cow: &mut dyn VolumeProvider) -> Result<(), WriteFailure> {
        let current = cow.image().fingerprint().map_err(WriteFailure::Io)?;
        if current == cow.fingerprint() {
            return Ok(());
        }
        let reason = cow.fingerprint().describe_change(&current);
        // Durable first: the shadows are suspect in the catalog before anything (a write, a
        // read answered) could depend on the new state.
        lock_mutex(&self.catalog)
            .commit(vec![
                CatalogChange::MarkSuspect {
                    volume: cow.volume(),
                    reason,
                },
                CatalogChange::SetVolumeState {
                    volume: cow.volume(),
                    fingerprint: Some(current),
                    // Writes of diskshadow's own may still be buffered: they keep the flag.
                    writing: !cow.persisted_clean(),
                    size: current.size,
                },
                CatalogChange::RecordIndexLog {
                    volume: cow.volume(),
                    bytes: cow.durable_index_bytes(),
                },
            ])
            .map_err(WriteFailure::Catalog)?;
        cow.set_fingerprint(current);
        cow.set_suspect_through(cow.suspect_through().max(cow.newest_shadow().unwrap_or(0)));
        Ok(())
    }

    /// Records durably, once per flush cycle, that diskshadow is about to change the image.
    fn mark_writing(&self, cow: &mut dyn VolumeProvider) -> Result<(), WriteFailure> {
        if cow.persisted_clean() {
            lock_mutex(&self.catalog)
                .commit(vec![CatalogChange::SetVolumeState {
                    volume: cow.volume(),
                    fingerprint: Some(cow.fingerprint()),
                    writing: true,
                    size: cow.size(),
                }])
                .map_err(WriteFailure::Catalog)?;
            cow.set_persisted_clean(false);
        }
        Ok(())
    }

    /// One step of the fold of a locked volume: change detection, the image marked as being
    /// written, then up to `max_chunks` chunks folded.
    fn fold_step_locked(
        &self,
        cow: &mut dyn VolumeProvider,
        max_chunks: usize,
    ) -> Result<(), WriteFailure> {
        self.verify_unchanged(cow)?;
        self.mark_writing(cow)?;
        cow.fold_step(max_chunks).map_err(WriteFailure::Io)
    }

    /// The background worker's step: the volume is locked for one step only.
    fn background_fold_step(&self, volume: VolumeId) -> StepOutcome {
        let Some(handle) = self.handle(volume) else {
            return StepOutcome::Done;
        };
        let mut guard = write_lock(&handle.state);
        let VolumeSlot::Ready(cow) = &mut *guard else {
            return StepOutcome::Done;
        };
        if cow.versions_waiting_for_fold() == 0 {
            return StepOutcome::Done;
        }
        match self.fold_step_locked(&mut **cow, self.folds.step_chunks) {
            Err(_) => StepOutcome::Failed,
            Ok(()) if cow.versions_waiting_for_fold() > 0 => StepOutcome::More,
            Ok(()) => StepOutcome::Done,
        }
    }
}

/// The engine: the store, its catalog and volumes, and the providers.
pub struct Engine {
    shared: Arc<Shared>,
}

fn lock_mutex<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match lock.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match lock.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn exposure_attributes(exposure: &Option<Exposure>) -> u32 {
    match exposure.as_ref().map(|exposure| exposure.kind) {
        Some(ExposureKind::Directory) | Some(ExposureKind::Drive) => Attributes::EXPOSED_LOCALLY,
        Some(ExposureKind::Share) => Attributes::EXPOSED_REMOTELY,
        None => 0,
    }
}

fn volume_info(state: &CatalogState, record: &VolumeRecord, live_size: Option<u64>) -> VolumeInfo {
    let drive_letter = state
        .drives
        .iter()
        .find(|(_, target)| matches!(target, DriveTarget::Volume(path) if *path == record.path))
        .map(|(letter, _)| *letter);
    VolumeInfo {
        id: record.id,
        path: record.path.clone(),
        size: live_size.unwrap_or(record.size),
        chunk_size: record.chunk_size,
        drive_letter,
    }
}

fn shadow_info(
    state: &CatalogState,
    record: &ShadowRecord,
    unavailable: Option<&str>,
) -> ShadowInfo {
    let volume = match state.volumes.get(&record.volume) {
        Some(volume_record) => volume_info(state, volume_record, None),
        None => VolumeInfo {
            id: record.volume,
            path: PathBuf::new(),
            size: record.volume_size,
            chunk_size: 0,
            drive_letter: None,
        },
    };
    let health = match (&record.suspect, unavailable) {
        (Some(reason), _) => ShadowHealth::Suspect {
            reason: reason.clone(),
        },
        (None, Some(reason)) => ShadowHealth::Suspect {
            reason: reason.to_string(),
        },
        (None, None) if record.copy_pending => ShadowHealth::CopyPending,
        (None, None) => ShadowHealth::Good,
    };
    ShadowInfo {
        id: record.id,
        set_id: record.set_id,
        original_count: record.original_count,
        volume,
        created_at: record.created_at,
        sequence: record.sequence,
        device_name: format!(
            "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy{}",
            record.device_number
        ),
        originating_machine: record.originating_machine.clone(),
        service_machine: record.service_machine.clone(),
        exposure: record.exposure.clone(),
        provider_id: record.provider_id,
        attributes: record
            .attributes
            .with(exposure_attributes(&record.exposure)),
        context: record.context,
        health,
        owner: record.owner,
        location: None,
    }
}

/// Asks the provider of an independent shadow where it is held (`list shadows` shows it); a
/// shadow whose provider cannot find it any more is missing, hence not served.
fn locate_independent(context: &ProviderContext<'_>, record: &ShadowRecord, info: &mut ShadowInfo) {
    let Some(provider) = provider_of(record).filter(|provider| provider.data_path().is_none())
    else {
        return;
    };
    match provider.locate_shadow(context, record) {
        Ok(location) => info.location = location,
        Err(reason) if info.health == ShadowHealth::Good => {
            info.health = ShadowHealth::Suspect { reason }
        }
        Err(_) => {}
    }
}

/// The provider that made a shadow (`None`: an ID this engine does not know).
fn provider_of(record: &ShadowRecord) -> Option<&'static dyn Provider> {
    provider_by_id(Some(record.provider_id))
}

/// The data path a shadow lives in (`None`: it is independent of it, e.g. a full copy).
fn data_path_of(record: &ShadowRecord) -> Option<DataPathKind> {
    provider_of(record).and_then(|provider| provider.data_path())
}

/// Whether a shadow has a point in time in its volume's data path: a differential shadow, or
/// an independent one whose copy is still being made from it.
fn in_data_path(record: &ShadowRecord, kind: DataPathKind) -> bool {
    data_path_of(record) == Some(kind) || (record.copy_pending && data_path_of(record).is_none())
}

/// Files in a volume's diff directory that no catalog shadow owns (a create interrupted
/// between a provider's preparation and the commit).
fn orphan_files(diff_dir: &Path, state: &CatalogState) -> Vec<PathBuf> {
    let is_shadow = |shadow: ShadowId| state.shadows.contains_key(&shadow);
    providers()
        .into_iter()
        .flat_map(|provider| provider.orphans(diff_dir, &is_shadow))
        .collect()
}

/// Every `diff/<volume>` directory: `(directory name, path)`.
fn diff_areas(layout: &StoreLayout) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(layout.diff_root()) else {
        return Vec::new();
    };
    let mut areas: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .collect();
    areas.sort();
    areas
}

/// Whether a diff area holds anything: index records, preserved chunks or full copies.
fn diff_area_holds_data(diff_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(diff_dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|entry| entry.metadata().is_ok_and(|metadata| metadata.len() > 0))
}

impl Engine {
    /// The store directory.
    pub fn store_dir(&self) -> &Path {
        &self.shared.layout.root
    }

    fn handle(&self, volume: VolumeId) -> Option<Arc<VolumeHandle>> {
        self.shared.handle(volume)
    }

    fn handles(&self) -> Vec<Arc<VolumeHandle>> {
        read_lock(&self.shared.volumes).values().cloned().collect()
    }

    // ---- shadows ------------------------------------------------------------------------

    fn unavailable_reasons(&self) -> BTreeMap<VolumeId, String> {
        self.handles()
            .iter()
            // A volume locked for writing is in use, hence available.
            .filter_map(|handle| match &*handle.state.try_read().ok()? {
                VolumeSlot::Unavailable(reason) => Some((handle.id, reason.clone())),
                VolumeSlot::Ready(_) => None,
            })
            .collect()
    }

    /// Every shadow copy, oldest first.
    pub fn shadows(&self) -> Vec<ShadowInfo> {
        self.verify_all();
        let unavailable = self.unavailable_reasons();
        let catalog = lock_mutex(&self.shared.catalog);
        let state = catalog.state();
        let mut shadows: Vec<ShadowInfo> = state
            .shadows
            .values()
            .map(|record| {
                shadow_info(
                    state,
                    record,
                    unavailable.get(&record.volume).map(String::as_str),
                )
            })
            .collect();
        let records: Vec<ShadowRecord> = state.shadows.values().cloned().collect();
        let context = self.provider_context(state);
        drop(catalog);
        for (shadow, record) in shadows.iter_mut().zip(&records) {
            locate_independent(&context, record, shadow);
        }
        shadows.sort_by_key(|shadow| shadow.sequence);
        shadows
    }

    pub fn shadow(&self, id: ShadowId) -> Option<ShadowInfo> {
        let volume = lock_mutex(&self.shared.catalog)
            .state()
            .shadows
            .get(&id)?
            .volume;
        if let Some(handle) = self.handle(volume) {
            if let VolumeSlot::Ready(cow) = &mut *write_lock(&handle.state) {
                let _ = self.verify_unchanged(&mut **cow);
            }
        }
        let unavailable = self.unavailable_reasons();
        let catalog = lock_mutex(&self.shared.catalog);
        let state = catalog.state();
        let record = state.shadows.get(&id)?.clone();
        let mut info = shadow_info(
            state,
            &record,
            unavailable.get(&record.volume).map(String::as_str),
        );
        let context = self.provider_context(state);
        drop(catalog);
        locate_independent(&context, &record, &mut info);
        Some(info)
    }

    // ---- exposure, providers ------------------------------------------------------------

    /// Records where a shadow is exposed (or that it no longer is).
    pub fn set_exposure(
        &self,
        shadow: ShadowId,
        exposure: Option<Exposure>,
    ) -> Result<(), ExposureError> {
        let mut catalog = lock_mutex(&self.shared.catalog);
        if !catalog.state().shadows.contains_key(&shadow) {
            return Err(ExposureError::NotFound { shadow });
        }
        catalog.commit(vec![CatalogChange::SetExposure { shadow, exposure }])?;
        Ok(())
    }

    pub fn providers(&self) -> Vec<ProviderInfo> {
        providers()
            .into_iter()
            .map(|provider| provider.info())
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Only the last handle (devices hold engine clones) stops the fold worker, finishes
        // the folds (the images then hold the volumes' content for any other tool) and drains
        // the write-back buffers. The fold gate keeps the worker from holding a reference
        // while this handle decides it is the last.
        let gate = self.shared.folds.gate();
        if Arc::strong_count(&self.shared) > 1 || self.shared.read_only {
            return;
        }
        self.shared.folds.stop_locked();
        drop(gate);
        self.shared.folds.join();
        let _ = self.wait_for_folds(&NoProgress);
        let _ = self.flush();
    }
}
