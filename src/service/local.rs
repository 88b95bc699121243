//! The service in-process: the engine behind the [`ShadowService`] trait, for one requester.
//! The service process serves every connection through one of these, and tests use it
//! directly.

use crate::engine::ids::ProviderId;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::api::{
    CreateOutcome, CreateRequest, LoadedMetadata, OperationId, ServiceObserver, ShadowService,
    WriterListing,
};
use super::error::{ServiceError, ServiceErrorKind};
use super::events::WriterReply;
use super::file_io;
use crate::engine::cabinet::MetadataCabinet;
use crate::engine::clock::{IdSource, RandomIds};
use crate::engine::coordinator::shadow_copy::{
    CreationObserver, ExposureKeeper, RequesterState, ShadowCopyCoordinator, ShadowCopyError,
    ShadowSetRequest,
};
use crate::engine::coordinator::{
    CoordinatorObserver, CreationFailure, RestoreWriter, SelectionError, StepDecision,
};
use crate::engine::device::BlockDevice;
use crate::engine::ids::VolumeId;
use crate::engine::ids::{parse_guid, ShadowId};
use crate::engine::model::ExposureKind;
use crate::engine::model::{
    DeleteSelector, DriveTarget, Exposure, ProviderInfo, RequesterId, ShadowInfo, StorageInfo,
    VolumeInfo,
};
use crate::engine::progress::{CancelToken, Progress};
use crate::engine::resync::ResyncOutcome;
use crate::engine::vss::VssCode;
use crate::engine::writer::host::{EventFailure, HostOptions, WriterHost, WriterStatus};
use crate::engine::writer::listing;
use crate::engine::writer::protocol::WriterEvent;
use crate::engine::Engine;
use crate::service::exposure::{open_exposure, parse_target, Exposures};

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

/// The one place a shadow-copy protocol error becomes a service error: its kind, VSS code
/// and the way out the requester is shown.
pub fn coordinator_error(error: ShadowCopyError) -> ServiceError {
    let message = error.to_string();
    let code = error.vss_code();
    match &error {
        ShadowCopyError::SetInProgress => ServiceError::invalid(message).with_code(code).with_help(
            "try again when it has finished (vssadmin create shadow /AutoRetry=N waits)",
        ),
        ShadowCopyError::Selection(selection) => {
            let help = match selection {
                SelectionError::EveryWriterFailedIdentify { .. } => {
                    "`list writers status` shows why each writer failed; `writer exclude` them, or `set context … nowriters`, to create the set without writers"
                }
                _ => "`list writers` shows the writers and their components",
            };
            ServiceError::new(ServiceErrorKind::Writer, message)
                .with_code(code)
                .with_help(help)
        }
        ShadowCopyError::NotKept { .. } => ServiceError::new(ServiceErrorKind::Io, message)
            .with_code(code)
            .with_help("check the store's disk; no shadow copy of the set was kept"),
        ShadowCopyError::Creation { failure, .. } => {
            let (kind, help) = match &**failure {
                CreationFailure::CommitFailed { .. } => (
                    ServiceErrorKind::Invalid,
                    "the provider refused the set: `list providers` shows the providers (plex needs the full-copy provider, `add volume … provider {…}`)",
                ),
                CreationFailure::StepAborted { .. } => (
                    ServiceErrorKind::Writer,
                    "you aborted in step mode; every writer was told, and no shadow copy of the set was kept",
                ),
                CreationFailure::FlushAndHold(_) | CreationFailure::CommitTooSlow { .. } => (
                    ServiceErrorKind::Io,
                    "a file system could not be held, or the commit was too slow; try again when the volumes are less busy",
                ),
                CreationFailure::WriterFailed { .. }
                | CreationFailure::FreezeDeadlineExceeded { .. } => (
                    ServiceErrorKind::Writer,
                    "`list writers status` shows which writer failed; no shadow copy of the set was kept",
                ),
            };
            ServiceError::new(kind, message)
                .with_code(code)
                .with_help(help)
        }
        ShadowCopyError::Restore(_) => {
            ServiceError::new(ServiceErrorKind::Writer, message).with_code(code)
        }
        ShadowCopyError::Writers(_) => ServiceError::new(ServiceErrorKind::Writer, message)
            .with_code(code)
            .with_help("`list writers status` shows each writer's state and failure"),
        ShadowCopyError::Overlay { .. }
        | ShadowCopyError::OverlayRemoval { .. }
        | ShadowCopyError::RevertRecovered { .. } => ServiceError::io(message),
        ShadowCopyError::ShadowNotFound { .. } => ServiceError::not_found(message),
        ShadowCopyError::Metadata { .. }
        | ShadowCopyError::Delete(_)
        | ShadowCopyError::Revert(_)
        | ShadowCopyError::Device(_)
        | ShadowCopyError::Exposure(_)
        | ShadowCopyError::Storage(_)
        | ShadowCopyError::FullCopy { .. } => engine_error(code, message),
    }
}

/// Forwards engine progress to an observer, and a stop the requester asked for (by
/// [`ShadowService::cancel`], or its observer's [`ServiceObserver::stop_requested`] in
/// process) to the engine. The engine's progress trait is `Sync`, so the observer sits
/// behind a mutex.
struct ObserverProgress<'o> {
    observer: std::sync::Mutex<&'o mut dyn ServiceObserver>,
    stop: CancelToken,
}

impl<'o> ObserverProgress<'o> {
    fn new(observer: &'o mut dyn ServiceObserver, stop: CancelToken) -> Self {
        Self {
            observer: std::sync::Mutex::new(observer),
            stop,
        }
    }
}

/// The stop asked for either way: the token fired by a `cancel` request, or the in-process
/// requester's wish (latched into the token).
fn stop_asked(stop: &CancelToken, observer: &mut dyn ServiceObserver) -> bool {
    if !stop.is_cancelled() && observer.stop_requested() {
        stop.cancel();
    }
    stop.is_cancelled()
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
    fn cancelled(&self) -> bool {
        match self.observer.lock() {
            Ok(mut observer) => stop_asked(&self.stop, &mut **observer),
            Err(_) => self.stop.is_cancelled(),
        }
    }
}

/// A running request that can be stopped, registered with the service until it ends.
struct RunningOperation<'c> {
    core: &'c ServiceCore,
    id: OperationId,
    stop: CancelToken,
}

impl Drop for RunningOperation<'_> {
    fn drop(&mut self) {
        lock_ignoring_poison(&self.core.operations).remove(&self.id);
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What rewrites a whole volume, for the in-use check and its messages.
#[derive(Clone, Copy)]
enum Rewrite {
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
    fn lock(&self) -> std::sync::MutexGuard<'_, Exposures> {
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
    exposures: Arc<LiveExposures>,
    /// Live volumes served read-write by `attach`, until `detach` or the service's end.
    attachments: Mutex<Exposures<VolumeId>>,
    /// The running requests that can be stopped, by the name told to their requester. A
    /// `cancel` arrives on another connection than its request, so this is shared.
    operations: Mutex<std::collections::HashMap<OperationId, CancelToken>>,
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
    fn begin_operation(&self, observer: &mut dyn ServiceObserver) -> RunningOperation<'_> {
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
    fn cancel_operation(&self, operation: OperationId) -> bool {
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
    fn release_for_revert(
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
    fn check_resync_destination(&self, volume: &VolumeInfo) -> Result<(), ServiceError> {
        let mut silent = super::api::SilentObserver;
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

    fn release_volume(
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
    fn filesystems_to_hold(&self, volumes: &[VolumeId]) -> Vec<PathBuf> {
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

/// Hears the coordinator and tells the requester's observer; also keeps the creation log for
/// the metadata file. The coordinator calls it through `&self`, so the observer sits behind a
/// mutex.
struct CoordinatorBridge<'o> {
    observer: Mutex<&'o mut dyn ServiceObserver>,
    step: bool,
    log: Mutex<Vec<String>>,
    /// Stops the full copies after thaw, the one part of a creation that can stop.
    stop: CancelToken,
}

impl<'o> CoordinatorBridge<'o> {
    fn new(observer: &'o mut dyn ServiceObserver, step: bool, stop: CancelToken) -> Self {
        Self {
            observer: Mutex::new(observer),
            step,
            log: Mutex::new(Vec::new()),
            stop,
        }
    }

    fn with<R>(&self, work: impl FnOnce(&mut dyn ServiceObserver) -> R) -> R {
        let mut observer = self
            .observer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut **observer)
    }

    fn record(&self, line: &str) {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line.to_string());
    }

    fn log_text(&self) -> String {
        let log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut text = log.join("\r\n");
        text.push_str("\r\n");
        text
    }
}

/// A full copy (plex) inside the commit reports its progress to the requester.
impl Progress for CoordinatorBridge<'_> {
    fn begin(&self, what: &str, total: u64) {
        self.with(|observer| observer.progress_begin(what, total));
    }
    fn advance(&self, units: u64) {
        self.with(|observer| observer.progress_advance(units));
    }
    fn finish(&self) {
        self.with(|observer| observer.progress_end());
    }
    fn cancelled(&self) -> bool {
        self.with(|observer| stop_asked(&self.stop, observer))
    }
}

impl CreationObserver for CoordinatorBridge<'_> {
    fn log_text(&self) -> String {
        CoordinatorBridge::log_text(self)
    }
}

impl CoordinatorObserver for CoordinatorBridge<'_> {
    fn event_sent(&self, writer: &WriterStatus, event: WriterEvent) {
        let line = format!("Sent {event} to writer \"{}\".", writer.name);
        self.record(&line);
        self.with(|observer| observer.trace_line(&line));
    }

    fn reply_received(
        &self,
        writer: &WriterStatus,
        event: WriterEvent,
        latency: Duration,
        outcome: &Result<(), EventFailure>,
    ) {
        let outcome = outcome
            .as_ref()
            .map(|_| ())
            .map_err(|failure| failure.to_string());
        let reply = WriterReply::new(&writer.name, &event.to_string(), latency, outcome);
        self.record(&reply.line(false));
        self.with(|observer| observer.writer_reply(&reply));
    }

    fn writer_log(&self, writer: &str, line: &str) {
        let line = format!("Writer \"{writer}\" log: {line}");
        self.record(&line);
        self.with(|observer| observer.trace_line(&line));
    }

    fn protocol_violation(&self, writer: &str, description: &str) {
        let line = format!("Warning: writer \"{writer}\" broke the writer protocol: {description}");
        self.record(&line);
        self.with(|observer| observer.line(&line));
    }

    fn verbose(&self, line: &str) {
        self.record(line);
        self.with(|observer| observer.verbose_line(line));
    }

    fn trace(&self, line: &str) {
        self.record(line);
        self.with(|observer| observer.trace_line(line));
    }

    fn before_event(
        &self,
        event: WriterEvent,
        writers: &[WriterStatus],
        freeze_left: Option<Duration>,
    ) -> StepDecision {
        if !self.step {
            return StepDecision::Continue;
        }
        let lines = listing::status_lines(writers);
        if self.with(|observer| observer.step(&event.to_string(), &lines, freeze_left)) {
            StepDecision::Continue
        } else {
            StepDecision::Abort
        }
    }
}

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

    fn writer_error(message: String, code: VssCode) -> ServiceError {
        ServiceError::new(ServiceErrorKind::Writer, message).with_code(code)
    }

    /// The restore's writers, after checking every `writer verify` entry is among them.
    fn restore_writers(&self, verify: &[String]) -> Result<Vec<RestoreWriter>, ServiceError> {
        let Some(cabinet) = &self.loaded else {
            return Err(ServiceError::invalid("no metadata is loaded")
                .with_code(VssCode::VSS_E_BAD_STATE)
                .with_help("`load metadata <file.cab>` first"));
        };
        let writers = cabinet.restore_writers();
        for wanted in verify {
            let found = writers.iter().any(|writer| {
                writer.name.eq_ignore_ascii_case(wanted)
                    || writer.writer_id.to_string().eq_ignore_ascii_case(wanted)
                    || writer.components.iter().any(|component| {
                        format!("{}:{}", writer.name, component).eq_ignore_ascii_case(wanted)
                    })
            });
            if !found {
                return Err(Self::writer_error(
                    format!("the writer or component `{wanted}` that `writer verify` requires is not in the loaded metadata"),
                    VssCode::VSS_E_WRITER_INFRASTRUCTURE,
                )
                .with_help("`simulate restore` lists the writers and components the metadata holds"));
            }
        }
        Ok(writers)
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
            .map_err(|error| {
                let stopped = matches!(error, crate::engine::resync::ResyncError::Stopped { .. });
                let failure = engine_error(error.vss_code(), error.to_string());
                if stopped {
                    failure.with_help(
                        "`resync` again takes the copy up where it stopped; until it ends, the volume cannot be reverted, shadowed or resynchronized from another shadow copy",
                    )
                } else {
                    failure
                }
            });
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
        let Some(shadow) = self.core.engine.shadow(shadow_id) else {
            return Err(
                ServiceError::not_found(format!("shadow copy {shadow_id} was not found"))
                    .with_help("`list shadows all` shows the shadow copies"),
            );
        };
        if !shadow.context.is_persistent()
            || shadow.context == crate::engine::vss::Context::ClientAccessible
        {
            return Err(ServiceError::invalid(format!(
                "shadow copy {shadow_id} was made in the {} context; only persistent shadow copies can be exposed",
                shadow.context.name()
            ))
            .with_code(VssCode::VSS_E_UNSUPPORTED_CONTEXT)
            .with_help("create it after `set context persistent` (or `persistent nowriters`)"));
        }
        let store = self.core.engine.store_dir().to_path_buf();
        let parsed = parse_target(
            target,
            shadow_id,
            base_dir,
            &store,
            &self.core.engine.drive_map(),
        )?;
        let mut exposures = self.core.exposures.lock();
        if exposures.contains(shadow_id) {
            return Err(ServiceError::invalid(format!(
                "shadow copy {shadow_id} is already exposed"
            ))
            .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
            .with_help("`unexpose` it first; `list shadows all` shows where"));
        }
        let device = self.core.shadow_device(shadow_id)?;
        let options = crate::engine::expose::MountOptions::read_only_files(&shadow_id.to_string());
        let (exposure, handle) = open_exposure(
            device,
            parsed,
            true,
            options,
            None,
            "the shadow copy cannot be exposed at",
        )?;
        if let Err(error) = self
            .core
            .coordinator
            .record_exposure(shadow_id, exposure.clone())
        {
            handle.close();
            return Err(coordinator_error(error));
        }
        exposures.insert(shadow_id, exposure.clone(), handle);
        Ok(exposure)
    }

    fn unexpose(&mut self, target: &str, base_dir: &Path) -> Result<ShadowInfo, ServiceError> {
        let shadow_id = match parse_guid(target) {
            Some(uuid) => ShadowId(uuid),
            None => {
                let text = target.trim();
                let resolved = if Path::new(text).is_absolute() {
                    PathBuf::from(text)
                } else {
                    base_dir.join(text)
                };
                let name = match crate::engine::model::parse_drive_letter(text) {
                    Some(letter) => format!("{letter}:"),
                    None => text.to_string(),
                };
                let found = self.core.exposures.lock().find(&name, &resolved);
                found.ok_or_else(|| {
                    ServiceError::not_found(format!("nothing is exposed at {text}"))
                        .with_help("`list shadows all` shows where shadow copies are exposed")
                })?
            }
        };
        match self
            .core
            .coordinator
            .unexpose(shadow_id)
            .map_err(coordinator_error)?
        {
            Some(_) => self.core.engine.shadow(shadow_id).ok_or_else(|| {
                ServiceError::not_found(format!("shadow copy {shadow_id} was not found"))
            }),
            None => Err(
                ServiceError::not_found(format!("shadow copy {shadow_id} is not exposed"))
                    .with_help("`list shadows all` shows where shadow copies are exposed"),
            ),
        }
    }

    fn attach(
        &mut self,
        volume: &str,
        target: &str,
        base_dir: &Path,
    ) -> Result<Exposure, ServiceError> {
        let info = from_engine!(self.core.engine.resolve_volume(volume, base_dir))?;
        let key = info.id;
        let store = self.core.engine.store_dir().to_path_buf();
        let parsed = parse_target(
            target,
            ShadowId(info.id.0),
            base_dir,
            &store,
            &self.core.engine.drive_map(),
        )?;
        let mut attachments = self
            .core
            .attachments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if attachments.contains(key) {
            return Err(ServiceError::invalid(format!(
                "the volume {} is already attached",
                info.display_name()
            ))
            .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
            .with_help("`detach` it first"));
        }
        let device = from_engine!(self.core.engine.open_volume(info.id))?;
        let file_name = info
            .path
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_else(|| "volume.img".to_string());
        let options = crate::engine::expose::MountOptions::image_file(
            &info.id.to_string(),
            &file_name,
            false,
        );
        let (attachment, handle) = open_exposure(
            device,
            parsed,
            false,
            options,
            Some(&file_name),
            "the volume cannot be attached at",
        )?;
        attachments.insert(key, attachment.clone(), handle);
        Ok(attachment)
    }

    fn detach(&mut self, target: &str, base_dir: &Path) -> Result<VolumeInfo, ServiceError> {
        let text = target.trim();
        let resolved = if Path::new(text).is_absolute() {
            PathBuf::from(text)
        } else {
            base_dir.join(text)
        };
        let by_volume = self
            .core
            .engine
            .resolve_volume(text, base_dir)
            .ok()
            .map(|volume| volume.id);
        let mut attachments = self
            .core
            .attachments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = by_volume
            .filter(|key| attachments.contains(*key))
            .or_else(|| attachments.find(text, &resolved))
            .ok_or_else(|| {
                ServiceError::not_found(format!("nothing is attached as {text}"))
                    .with_help("`diskshadow volume attachments` lists the attached volumes")
            })?;
        if let Some((_, handle)) = attachments.remove(key) {
            handle.close();
        }
        self.core
            .engine
            .volumes()
            .into_iter()
            .find(|volume| volume.id == key)
            .ok_or_else(|| ServiceError::not_found("the attached volume is no longer registered"))
    }

    fn outside_users(&mut self, volume: &VolumeInfo) -> Result<Vec<String>, ServiceError> {
        Ok(crate::service::exposure::outside_users(&volume.path))
    }

    fn attachments(&mut self) -> Result<Vec<(VolumeInfo, Exposure)>, ServiceError> {
        let volumes = self.core.engine.volumes();
        let attachments = self
            .core
            .attachments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(attachments
            .iter()
            .filter_map(|(key, exposure)| {
                volumes
                    .iter()
                    .find(|volume| volume.id == *key)
                    .map(|volume| (volume.clone(), exposure.clone()))
            })
            .collect())
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

    fn list_writers(&mut self, listing_kind: WriterListing) -> Result<Vec<String>, ServiceError> {
        let host = self.core.coordinator.identified_writer_host();
        let mut lines = Vec::new();
        for problem in host.problems() {
            lines.push(format!("Warning: {problem}"));
        }
        let statuses = host.statuses();
        if listing_kind == WriterListing::Status {
            lines.extend(listing::status_lines(&statuses));
            return Ok(lines);
        }
        lines.push("Listing writer metadata ...".to_string());
        let engine = self.core.engine.clone();
        let display = move |name: &str| match engine.resolve_volume(name, Path::new("/")) {
            Ok(volume) => volume.display_name(),
            Err(_) => name.to_string(),
        };
        let mut listed = 0;
        for status in &statuses {
            let (Some(instance_id), Some(metadata)) =
                (status.instance_id, host.metadata(status.index))
            else {
                lines.push(format!(
                    "* WRITER \"{}\" did not identify itself: {} [{}]",
                    status.name,
                    status
                        .failure_message
                        .clone()
                        .unwrap_or_else(|| "no answer".to_string()),
                    status.failure_code_text()
                ));
                continue;
            };
            listed += 1;
            lines.extend(listing::metadata_lines(
                &status.name,
                status.writer_id,
                instance_id,
                &metadata,
                &display,
            ));
            if listing_kind == WriterListing::Detailed {
                for component in &metadata.components {
                    lines.push(format!(
                        "    - Files of component \"{}\":",
                        component.full_path()
                    ));
                    for file in &component.files {
                        let recursive = if file.recursive { " (recursive)" } else { "" };
                        lines.push(format!(
                            "       - Volume {}, Path = {}, Filespec = {}{recursive}",
                            display(&file.volume),
                            file.path,
                            file.filespec
                        ));
                    }
                }
            }
            lines.push(String::new());
        }
        lines.push(format!(
            "{listed} writer{} listed.",
            if listed == 1 { "" } else { "s" }
        ));
        Ok(lines)
    }

    fn writer_statuses(&mut self) -> Result<Vec<super::api::WriterStatusView>, ServiceError> {
        let host = self.core.coordinator.identified_writer_host();
        Ok(host
            .statuses()
            .into_iter()
            .map(|status| super::api::WriterStatusView {
                name: status.name,
                writer_id: status.writer_id,
                instance_id: status.instance_id,
                state: status.state,
                failure: status.failure,
            })
            .collect())
    }

    fn end_backup(&mut self, observer: &mut dyn ServiceObserver) -> Result<(), ServiceError> {
        let bridge = CoordinatorBridge::new(observer, false, CancelToken::new());
        self.core
            .coordinator
            .end_backup(&mut self.state, &bridge)
            .map_err(coordinator_error)
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
            return Err(engine_error(error.vss_code(), error.to_string()));
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
        let mut files = vec![crate::engine::cabinet::MANIFEST_FILE.to_string()];
        if cabinet.backup_components.is_some() {
            files.push(crate::engine::cabinet::BACKUP_COMPONENTS_FILE.to_string());
        }
        files.extend((0..cabinet.writers.len()).map(|index| format!("WM{index}.xml")));
        files.push(cabinet.log_name.clone());
        let loaded = LoadedMetadata {
            set_id: cabinet.snapshot_set_id,
            aliases: cabinet.aliases.clone(),
            files,
            writers: cabinet
                .writers
                .iter()
                .map(|writer| writer.name.clone())
                .collect(),
        };
        self.loaded = Some(cabinet);
        Ok(loaded)
    }

    fn simulate_restore(&mut self, verify: &[String]) -> Result<Vec<String>, ServiceError> {
        let writers = self.restore_writers(verify)?;
        let involvement = self
            .core
            .coordinator
            .simulate_restore(&writers)
            .map_err(coordinator_error)?;
        let mut lines = Vec::new();
        for writer in &involvement {
            lines.push(format!(
                "* WRITER \"{}\" {}: {}, {}",
                writer.name,
                writer.writer_id,
                if writer.registered {
                    "registered"
                } else {
                    "not registered here"
                },
                if writer.gets_restore_events {
                    "gets PreRestore and PostRestore"
                } else {
                    "gets no restore events"
                }
            ));
            for component in &writer.components {
                lines.push(format!("        + Component: {component}"));
            }
        }
        lines.push(format!(
            "{} writer{} involved in the restore.",
            involvement.len(),
            if involvement.len() == 1 { "" } else { "s" }
        ));
        Ok(lines)
    }

    fn begin_restore(
        &mut self,
        verify: &[String],
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        let writers = self.restore_writers(verify)?;
        let bridge = CoordinatorBridge::new(observer, false, CancelToken::new());
        self.core
            .coordinator
            .begin_restore(&writers, &bridge)
            .map_err(coordinator_error)?;
        self.restoring = Some(writers);
        Ok(())
    }

    fn end_restore(&mut self, observer: &mut dyn ServiceObserver) -> Result<(), ServiceError> {
        let Some(writers) = self.restoring.take() else {
            return Err(ServiceError::invalid("no restore is in progress")
                .with_code(VssCode::VSS_E_BAD_STATE)
                .with_help("`begin restore` starts one"));
        };
        let bridge = CoordinatorBridge::new(observer, false, CancelToken::new());
        self.core
            .coordinator
            .end_restore(&writers, &bridge)
            .map_err(coordinator_error)
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
