//! The service API over the store's socket: [`Request`] and [`Reply`] are the wire messages,
//! [`EngineHandler`] serves them in the service process (one [`LocalService`] per requester
//! connection), and [`RemoteService`] is the requester's side of the same trait.
//!
//! Stopping a request: the service names a request that can stop in a `{"cancellable": ID}`
//! event; the requester's connection is busy until the answer, so [`RemoteService`] sends
//! [`Request::Cancel`] naming it on a second connection when its observer says the user asked
//! to stop. The request then answers on the first connection, with the state it left.

use crate::engine::ids::ProviderId;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{
    CreateOutcome, CreateRequest, LoadedMetadata, OperationId, ServiceObserver, ShadowService,
    WriterListing,
};
use super::error::{ServiceError, ServiceErrorKind};
use super::local::{LocalService, ServiceCore};
use super::transport::{self, EventSink, Handler, SessionId};
use crate::engine::array::ArrayInfo;
use crate::engine::ids::{ShadowId, ShadowSetId};
use crate::engine::model::{
    DeleteSelector, DriveTarget, Exposure, ProviderInfo, RequesterId, ShadowInfo, StorageInfo,
    VolumeInfo,
};
use crate::engine::Engine;

/// One request of the service API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    ResolveVolume {
        spec: String,
        base_dir: PathBuf,
    },
    Volumes,
    RegisterVolume {
        path: String,
        chunk_size: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<ProviderId>,
        base_dir: PathBuf,
    },
    DriveMap,
    MapDrive {
        letter: char,
        target: DriveTarget,
    },
    UnmapDrive {
        letter: char,
    },
    Create {
        request: CreateRequest,
    },
    Shadows,
    DeleteShadows {
        selector: DeleteSelector,
    },
    Revert {
        shadow: ShadowId,
        /// Detach diskshadow's own attachment of the volume first (vssadmin `/ForceDismount`).
        #[serde(default)]
        force_dismount: bool,
    },
    Resync {
        shadow: ShadowId,
        destination: Option<crate::engine::ids::VolumeId>,
        no_volume_check: bool,
    },
    Providers,
    /// Stops a running request of this requester (named by its `cancellable` event) at its
    /// next safe point. Sent on a second connection while the first waits for the answer.
    Cancel {
        operation: OperationId,
    },
    Storage,
    SetMaxDiffArea {
        volume: VolumeInfo,
        max_bytes: Option<u64>,
    },
    Expose {
        shadow: ShadowId,
        target: String,
        base_dir: PathBuf,
    },
    Unexpose {
        target: String,
        base_dir: PathBuf,
    },
    Read {
        target: String,
        offset: u64,
        length: u64,
        base_dir: PathBuf,
    },
    /// The bytes to write travel as the request's raw binary payload, never in JSON.
    Write {
        volume: String,
        offset: u64,
        base_dir: PathBuf,
    },
    /// The output file or pipe comes as the request's descriptor (`SCM_RIGHTS`).
    ReadInto {
        target: String,
        offset: u64,
        length: u64,
        sparse: bool,
        base_dir: PathBuf,
    },
    /// The input file or pipe comes as the request's descriptor (`SCM_RIGHTS`).
    WriteFrom {
        volume: String,
        offset: u64,
        base_dir: PathBuf,
    },
    ReleaseRequester,
    CheckStore,
    Attach {
        volume: String,
        target: String,
        base_dir: PathBuf,
    },
    Detach {
        target: String,
        base_dir: PathBuf,
    },
    Attachments,
    OutsideUsers {
        volume: VolumeInfo,
    },
    WriterStatuses,
    ListWriters {
        listing: WriterListing,
    },
    EndBackup,
    /// Parsed by the requester: the service never reads a metadata file.
    LoadMetadata {
        cabinet: Box<crate::engine::cabinet::MetadataCabinet>,
    },
    SimulateRestore {
        verify: Vec<String>,
    },
    BeginRestore {
        verify: Vec<String>,
    },
    EndRestore,
    AttachArray {
        dir: PathBuf,
        name: Option<String>,
    },
    AttachRbdPool {
        pool: String,
        conf: PathBuf,
        client_id: Option<String>,
        name: Option<String>,
    },
    DetachArray {
        name: String,
    },
    Arrays,
    Import,
    Mask {
        set_id: ShadowSetId,
    },
    Break {
        set_id: ShadowSetId,
        writable: bool,
    },
}

/// What a request returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Volume(VolumeInfo),
    Volumes(Vec<VolumeInfo>),
    DriveMap(Vec<(char, DriveTarget)>),
    Done,
    Created(Box<CreateOutcome>),
    Shadows(Vec<ShadowInfo>),
    Providers(Vec<ProviderInfo>),
    Storage(Vec<StorageInfo>),
    Exposure(Exposure),
    Shadow(Box<ShadowInfo>),
    /// The bytes read; they travel as the response's raw binary payload, never in JSON.
    Data,
    Check(super::api::StoreCheck),
    Lines(Vec<String>),
    Loaded(LoadedMetadata),
    Attachments(Vec<(VolumeInfo, Exposure)>),
    WriterStatuses(Vec<super::api::WriterStatusView>),
    Array(Box<ArrayInfo>),
    Arrays(Vec<ArrayInfo>),
    Resynced(crate::engine::resync::ResyncOutcome),
    /// Bytes moved between a volume and the requester's descriptor.
    Transferred(u64),
}

/// Sends a service observer's reports to the requester as events.
struct EventObserver<'e> {
    events: &'e EventSink,
}

impl ServiceObserver for EventObserver<'_> {
    fn verbose_line(&mut self, line: &str) {
        let _ = self.events.send(json!({ "verbose": line }));
    }
    fn trace_line(&mut self, line: &str) {
        let _ = self.events.send(json!({ "trace": line }));
    }
    fn line(&mut self, line: &str) {
        let _ = self.events.send(json!({ "line": line }));
    }
    fn progress_begin(&mut self, what: &str, total: u64) {
        let _ = self
            .events
            .send(json!({ "progress_begin": { "what": what, "total": total } }));
    }
    fn progress_advance(&mut self, units: u64) {
        let _ = self.events.send(json!({ "progress_advance": units }));
    }
    fn progress_end(&mut self) {
        let _ = self.events.send(json!({ "progress_end": true }));
    }
    fn cancellable(&mut self, operation: OperationId) {
        let _ = self.events.send(json!({ "cancellable": operation }));
    }
    fn writer_reply(
        &mut self,
        writer: &str,
        event: &str,
        latency: std::time::Duration,
        outcome: Result<(), String>,
    ) {
        let _ = self.events.send(json!({ "writer_reply": {
            "writer": writer, "event": event, "latency_ms": latency.as_millis() as u64, "error": outcome.err(),
        } }));
    }
    fn step(
        &mut self,
        event: &str,
        writers: &[String],
        freeze_left: Option<std::time::Duration>,
    ) -> bool {
        // A requester that cannot answer (it went away) aborts, never leaves writers frozen.
        let freeze_left_ms = freeze_left.map(|left| left.as_millis() as u64);
        match self.events.ask(json!({ "step": {
            "event": event, "writers": writers, "freeze_left_ms": freeze_left_ms,
        } })) {
            Ok(answer) => answer.as_bool().unwrap_or(false),
            Err(_) => false,
        }
    }
}

/// Replays events from the service on the requester's observer; answers step questions.
fn replay(observer: &mut dyn ServiceObserver, event: &Value) -> Option<Value> {
    if let Some(step) = event.get("step") {
        let name = step.get("event").and_then(Value::as_str).unwrap_or("");
        let writers: Vec<String> = step
            .get("writers")
            .and_then(Value::as_array)
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let freeze_left = step
            .get("freeze_left_ms")
            .and_then(Value::as_u64)
            .map(std::time::Duration::from_millis);
        return Some(Value::Bool(observer.step(name, &writers, freeze_left)));
    }
    if let Some(reply) = event.get("writer_reply") {
        let text = |key: &str| {
            reply
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let latency = std::time::Duration::from_millis(
            reply.get("latency_ms").and_then(Value::as_u64).unwrap_or(0),
        );
        let outcome = match reply.get("error").and_then(Value::as_str) {
            Some(error) => Err(error.to_string()),
            None => Ok(()),
        };
        observer.writer_reply(&text("writer"), &text("event"), latency, outcome);
        return None;
    }
    if let Some(line) = event.get("verbose").and_then(Value::as_str) {
        observer.verbose_line(line);
    } else if let Some(line) = event.get("trace").and_then(Value::as_str) {
        observer.trace_line(line);
    } else if let Some(line) = event.get("line").and_then(Value::as_str) {
        observer.line(line);
    } else if let Some(begin) = event.get("progress_begin") {
        let what = begin.get("what").and_then(Value::as_str).unwrap_or("");
        observer.progress_begin(
            what,
            begin.get("total").and_then(Value::as_u64).unwrap_or(0),
        );
    } else if let Some(units) = event.get("progress_advance").and_then(Value::as_u64) {
        observer.progress_advance(units);
    } else if event.get("progress_end").is_some() {
        observer.progress_end();
    }
    None
}

/// The service process's handler: the engine, shared; one requester per connection.
pub struct EngineHandler {
    core: Arc<ServiceCore>,
    sessions: Mutex<HashMap<u64, Arc<Mutex<LocalService>>>>,
}

impl EngineHandler {
    /// The handler of a service that just opened the store. Exposures the catalog records now
    /// were left by a service that ended without taking them down: they are cleaned first, and
    /// so are overlays of shadows that are gone.
    pub fn new(engine: Arc<Engine>) -> Self {
        let core = ServiceCore::new(engine);
        core.clear_stale_exposures();
        // Overlays a crash left behind its shadows' deletion: check-store reported them as
        // leaked; the service owning the store removes them.
        core.coordinator.reclaim_leaked_overlays();
        Self {
            core,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn session(&self, session: SessionId) -> Arc<Mutex<LocalService>> {
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions
            .entry(session.0)
            .or_insert_with(|| {
                Arc::new(Mutex::new(LocalService::with_core(
                    self.core.clone(),
                    RequesterId(session.0),
                )))
            })
            .clone()
    }
}

/// Runs one request against a requester's in-process service. `request_bytes` is the
/// request's binary payload (the data of a `Write`); the bytes a `Read` returns are put in
/// `response_bytes`; `request_descriptor` is the file a `ReadInto` or `WriteFrom` uses.
pub fn dispatch(
    service: &mut dyn ShadowService,
    request: Request,
    request_bytes: Vec<u8>,
    request_descriptor: Option<OwnedFd>,
    response_bytes: &mut Vec<u8>,
    observer: &mut dyn ServiceObserver,
) -> Result<Reply, ServiceError> {
    Ok(match request {
        Request::ResolveVolume { spec, base_dir } => {
            Reply::Volume(service.resolve_volume(&spec, &base_dir)?)
        }
        Request::Volumes => Reply::Volumes(service.volumes()?),
        Request::RegisterVolume {
            path,
            chunk_size,
            provider,
            base_dir,
        } => Reply::Volume(service.register_volume(&path, chunk_size, provider, &base_dir)?),
        Request::DriveMap => Reply::DriveMap(service.drive_map()?),
        Request::MapDrive { letter, target } => {
            service.map_drive(letter, target)?;
            Reply::Done
        }
        Request::UnmapDrive { letter } => {
            service.unmap_drive(letter)?;
            Reply::Done
        }
        Request::Create { request } => {
            Reply::Created(Box::new(service.create(&request, observer)?))
        }
        Request::Shadows => Reply::Shadows(service.shadows()?),
        Request::DeleteShadows { selector } => Reply::Shadows(service.delete_shadows(&selector)?),
        Request::Revert {
            shadow,
            force_dismount,
        } => {
            service.revert(shadow, force_dismount, observer)?;
            Reply::Done
        }
        Request::Resync {
            shadow,
            destination,
            no_volume_check,
        } => Reply::Resynced(service.resync(shadow, destination, no_volume_check, observer)?),
        Request::Providers => Reply::Providers(service.providers()?),
        Request::Cancel { operation } => {
            service.cancel(operation)?;
            Reply::Done
        }
        Request::Storage => Reply::Storage(service.storage()?),
        Request::SetMaxDiffArea { volume, max_bytes } => {
            Reply::Shadows(service.set_max_diff_area(&volume, max_bytes)?)
        }
        Request::Expose {
            shadow,
            target,
            base_dir,
        } => Reply::Exposure(service.expose(shadow, &target, &base_dir)?),
        Request::Unexpose { target, base_dir } => {
            Reply::Shadow(Box::new(service.unexpose(&target, &base_dir)?))
        }
        Request::Read {
            target,
            offset,
            length,
            base_dir,
        } => {
            *response_bytes = service.read(&target, offset, length, &base_dir)?;
            Reply::Data
        }
        Request::Write {
            volume,
            offset,
            base_dir,
        } => {
            service.write(&volume, offset, &request_bytes, &base_dir)?;
            Reply::Done
        }
        Request::ReadInto {
            target,
            offset,
            length,
            sparse,
            base_dir,
        } => {
            let output = request_descriptor.ok_or_else(missing_descriptor)?;
            Reply::Transferred(service.read_into(
                &target,
                offset,
                length,
                output.as_fd(),
                sparse,
                &base_dir,
                observer,
            )?)
        }
        Request::WriteFrom {
            volume,
            offset,
            base_dir,
        } => {
            let input = request_descriptor.ok_or_else(missing_descriptor)?;
            Reply::Transferred(service.write_from(
                &volume,
                offset,
                input.as_fd(),
                &base_dir,
                observer,
            )?)
        }
        Request::ReleaseRequester => Reply::Shadows(service.release_requester()?),
        Request::CheckStore => Reply::Check(service.check_store()?),
        Request::Attach {
            volume,
            target,
            base_dir,
        } => Reply::Exposure(service.attach(&volume, &target, &base_dir)?),
        Request::Detach { target, base_dir } => Reply::Volume(service.detach(&target, &base_dir)?),
        Request::Attachments => Reply::Attachments(service.attachments()?),
        Request::OutsideUsers { volume } => Reply::Lines(service.outside_users(&volume)?),
        Request::ListWriters { listing } => Reply::Lines(service.list_writers(listing)?),
        Request::WriterStatuses => Reply::WriterStatuses(service.writer_statuses()?),
        Request::EndBackup => {
            service.end_backup(observer)?;
            Reply::Done
        }
        Request::LoadMetadata { cabinet } => Reply::Loaded(service.load_metadata(*cabinet)?),
        Request::SimulateRestore { verify } => Reply::Lines(service.simulate_restore(&verify)?),
        Request::BeginRestore { verify } => {
            service.begin_restore(&verify, observer)?;
            Reply::Done
        }
        Request::EndRestore => {
            service.end_restore(observer)?;
            Reply::Done
        }
        Request::AttachArray { dir, name } => {
            Reply::Array(Box::new(service.attach_array(&dir, name.as_deref())?))
        }
        Request::AttachRbdPool {
            pool,
            conf,
            client_id,
            name,
        } => Reply::Array(Box::new(service.attach_rbd_pool(
            &pool,
            &conf,
            client_id.as_deref(),
            name.as_deref(),
        )?)),
        Request::DetachArray { name } => {
            service.detach_array(&name)?;
            Reply::Done
        }
        Request::Arrays => Reply::Arrays(service.arrays()?),
        Request::Import => Reply::Shadows(service.import()?),
        Request::Mask { set_id } => Reply::Shadows(service.mask(set_id)?),
        Request::Break { set_id, writable } => Reply::Volumes(service.break_set(set_id, writable)?),
    })
}

fn missing_descriptor() -> ServiceError {
    ServiceError::invalid("the request reads or writes a file descriptor, but none came with it")
        .with_help("send the descriptor in a `descriptor` frame (SCM_RIGHTS) before the request")
}

impl Handler for EngineHandler {
    type Request = Request;
    type Response = Result<Reply, ServiceError>;

    fn handle(&self, session: SessionId, request: Request, events: &EventSink) -> Self::Response {
        let service = self.session(session);
        let mut service = service
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut observer = EventObserver { events };
        let mut response_bytes = Vec::new();
        let reply = dispatch(
            &mut *service,
            request,
            events.take_request_bytes(),
            events.take_request_descriptor(),
            &mut response_bytes,
            &mut observer,
        );
        if !response_bytes.is_empty() {
            events.set_response_bytes(response_bytes);
        }
        reply
    }

    fn session_ended(&self, session: SessionId) {
        let ended = {
            let mut sessions = self
                .sessions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            sessions.remove(&session.0)
        };
        let service = ended.unwrap_or_else(|| {
            Arc::new(Mutex::new(LocalService::with_core(
                self.core.clone(),
                RequesterId(session.0),
            )))
        });
        let mut service = service
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The requester is gone however it went: its volatile shadows go with it.
        let _ = service.release_requester();
    }

    fn keeps_service_alive(&self) -> bool {
        // Polled on every tick of the service: also the moment to notice shadows the engine
        // deleted under an exposure.
        self.core.reap_dangling_exposures();
        // A full copy restarted in the background (`connect::run_service`) keeps it too.
        self.core.has_exposures() || self.core.engine.full_copies_running()
    }
}

impl EngineHandler {
    /// Where each shadow deleted to fit a diff-area limit is told (the service log).
    pub fn set_deletion_sink(&self, sink: Arc<dyn crate::engine::deletions::DeletionSink>) {
        self.core.set_deletion_sink(sink);
    }
}

/// How often a requester waiting for an answer looks whether its user asked to stop.
const STOP_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The requester's half of stopping a request: remembers the name the service gave the
/// running request (its `cancellable` event) and, once the user asks to stop (the observer's
/// [`ServiceObserver::stop_requested`], Ctrl-C in the shell), sends `cancel` once on a second
/// connection, since the first is busy waiting for the request's answer.
struct Stopper {
    socket: PathBuf,
    operation: Option<OperationId>,
    sent: bool,
}

impl Stopper {
    fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
            operation: None,
            sent: false,
        }
    }

    fn offered(&mut self, observer: &mut dyn ServiceObserver, operation: &Value) {
        if let Ok(operation) = serde_json::from_value::<OperationId>(operation.clone()) {
            self.operation = Some(operation);
            observer.cancellable(operation);
        }
    }

    fn poll(&mut self, observer: &mut dyn ServiceObserver) {
        let Some(operation) = self.operation.filter(|_| !self.sent) else {
            return;
        };
        if !observer.stop_requested() {
            return;
        }
        self.sent = true;
        let sent = transport::Client::connect(&self.socket).and_then(|mut client| {
            client
                .call::<_, Result<Reply, ServiceError>>(&Request::Cancel { operation }, &mut |_| {
                    None
                })
        });
        match sent {
            Ok(Ok(_)) => {}
            // It ended meanwhile: its own answer follows on the first connection.
            Ok(Err(error)) if error.kind == ServiceErrorKind::NotFound => {}
            Ok(Err(error)) => {
                observer.line(&format!("The service could not be asked to stop: {error}"))
            }
            Err(error) => {
                observer.line(&format!("The service could not be asked to stop: {error}"))
            }
        }
    }
}

/// The requester's side: every call goes over the socket.
/// Connects (or reconnects) to the service, starting it if needed.
pub type Connector = Box<dyn Fn() -> Result<transport::Client, ServiceError> + Send>;

pub struct RemoteService {
    /// `None` after the connection broke: the next request reconnects.
    client: Option<transport::Client>,
    reconnect: Option<Connector>,
}

impl RemoteService {
    pub fn new(client: transport::Client) -> Self {
        Self {
            client: Some(client),
            reconnect: None,
        }
    }

    /// A requester that reconnects (starting a new service) after its service went away. The
    /// request that found the connection broken fails; it is not sent again, since it may have
    /// been carried out. What the lost connection owned (volatile shadows) is gone with it.
    pub fn with_reconnect(client: transport::Client, reconnect: Connector) -> Self {
        Self {
            client: Some(client),
            reconnect: Some(reconnect),
        }
    }

    fn call(
        &mut self,
        request: Request,
        observer: &mut dyn ServiceObserver,
    ) -> Result<Reply, ServiceError> {
        self.call_with_bytes(request, None, observer)
            .map(|(reply, _)| reply)
    }

    /// A request with binary payloads in both directions (see [`transport::Client::call_with_bytes`]).
    fn call_with_bytes(
        &mut self,
        request: Request,
        request_bytes: Option<&[u8]>,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(Reply, Vec<u8>), ServiceError> {
        self.call_with_payload(request, request_bytes, None, observer)
    }

    /// A request with binary payloads and a passed file descriptor (see
    /// [`transport::Client::call_waiting`]).
    fn call_with_payload(
        &mut self,
        request: Request,
        request_bytes: Option<&[u8]>,
        descriptor: Option<BorrowedFd<'_>>,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(Reply, Vec<u8>), ServiceError> {
        if self.client.is_none() {
            if let Some(reconnect) = &self.reconnect {
                self.client = Some(reconnect()?);
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Err(ServiceError::new(
                ServiceErrorKind::Unavailable,
                "the connection to the service is closed",
            )
            .with_help("start the shell again"));
        };
        let mut stopper = Stopper::new(client.socket_path());
        let answer: Result<(Result<Reply, ServiceError>, Vec<u8>), _> = client.call_waiting(
            &request,
            request_bytes,
            descriptor,
            STOP_POLL_INTERVAL,
            &mut |incoming| {
                let answer = match incoming {
                    Some(
                        transport::Incoming::Event(event) | transport::Incoming::Question(event),
                    ) => match event.get("cancellable") {
                        Some(operation) => {
                            stopper.offered(observer, operation);
                            None
                        }
                        None => replay(observer, &event),
                    },
                    None => None,
                };
                stopper.poll(observer);
                answer
            },
        );
        match answer {
            Ok((reply, bytes)) => reply.map(|reply| (reply, bytes)),
            Err(error) => {
                self.client = None;
                let mut failure = ServiceError::new(
                    ServiceErrorKind::Unavailable,
                    format!("the service did not answer: {error}"),
                );
                if self.reconnect.is_some() {
                    failure = failure.with_help(
                        "the next command connects to a new service; volatile shadow copies of this session are gone",
                    );
                }
                Err(failure)
            }
        }
    }

    fn quiet(&mut self, request: Request) -> Result<Reply, ServiceError> {
        self.call(request, &mut super::api::SilentObserver)
    }
}

fn unexpected(reply: Reply) -> ServiceError {
    ServiceError::new(
        ServiceErrorKind::Unavailable,
        format!("the service answered out of turn: {reply:?}"),
    )
}

impl ShadowService for RemoteService {
    fn resolve_volume(&mut self, spec: &str, base_dir: &Path) -> Result<VolumeInfo, ServiceError> {
        match self.quiet(Request::ResolveVolume {
            spec: spec.to_string(),
            base_dir: base_dir.to_path_buf(),
        })? {
            Reply::Volume(volume) => Ok(volume),
            other => Err(unexpected(other)),
        }
    }
    fn register_volume(
        &mut self,
        path: &str,
        chunk_size: Option<u32>,
        provider: Option<ProviderId>,
        base_dir: &Path,
    ) -> Result<VolumeInfo, ServiceError> {
        let request = Request::RegisterVolume {
            path: path.to_string(),
            chunk_size,
            provider,
            base_dir: base_dir.to_path_buf(),
        };
        match self.quiet(request)? {
            Reply::Volume(volume) => Ok(volume),
            other => Err(unexpected(other)),
        }
    }
    fn volumes(&mut self) -> Result<Vec<VolumeInfo>, ServiceError> {
        match self.quiet(Request::Volumes)? {
            Reply::Volumes(volumes) => Ok(volumes),
            other => Err(unexpected(other)),
        }
    }
    fn drive_map(&mut self) -> Result<Vec<(char, DriveTarget)>, ServiceError> {
        match self.quiet(Request::DriveMap)? {
            Reply::DriveMap(map) => Ok(map),
            other => Err(unexpected(other)),
        }
    }
    fn map_drive(&mut self, letter: char, target: DriveTarget) -> Result<(), ServiceError> {
        self.quiet(Request::MapDrive { letter, target }).map(|_| ())
    }
    fn unmap_drive(&mut self, letter: char) -> Result<(), ServiceError> {
        self.quiet(Request::UnmapDrive { letter }).map(|_| ())
    }
    fn create(
        &mut self,
        request: &CreateRequest,
        observer: &mut dyn ServiceObserver,
    ) -> Result<CreateOutcome, ServiceError> {
        match self.call(
            Request::Create {
                request: request.clone(),
            },
            observer,
        )? {
            Reply::Created(outcome) => Ok(*outcome),
            other => Err(unexpected(other)),
        }
    }
    fn shadows(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        match self.quiet(Request::Shadows)? {
            Reply::Shadows(shadows) => Ok(shadows),
            other => Err(unexpected(other)),
        }
    }
    fn delete_shadows(
        &mut self,
        selector: &DeleteSelector,
    ) -> Result<Vec<ShadowInfo>, ServiceError> {
        match self.quiet(Request::DeleteShadows {
            selector: selector.clone(),
        })? {
            Reply::Shadows(shadows) => Ok(shadows),
            other => Err(unexpected(other)),
        }
    }
    fn revert(
        &mut self,
        shadow: ShadowId,
        force_dismount: bool,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        self.call(
            Request::Revert {
                shadow,
                force_dismount,
            },
            observer,
        )
        .map(|_| ())
    }
    fn resync(
        &mut self,
        shadow: ShadowId,
        destination: Option<crate::engine::ids::VolumeId>,
        no_volume_check: bool,
        observer: &mut dyn ServiceObserver,
    ) -> Result<crate::engine::resync::ResyncOutcome, ServiceError> {
        match self.call(
            Request::Resync {
                shadow,
                destination,
                no_volume_check,
            },
            observer,
        )? {
            Reply::Resynced(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }
    fn cancel(&mut self, operation: OperationId) -> Result<(), ServiceError> {
        self.quiet(Request::Cancel { operation }).map(|_| ())
    }
    fn providers(&mut self) -> Result<Vec<ProviderInfo>, ServiceError> {
        match self.quiet(Request::Providers)? {
            Reply::Providers(providers) => Ok(providers),
            other => Err(unexpected(other)),
        }
    }
    fn storage(&mut self) -> Result<Vec<StorageInfo>, ServiceError> {
        match self.quiet(Request::Storage)? {
            Reply::Storage(storage) => Ok(storage),
            other => Err(unexpected(other)),
        }
    }
    fn set_max_diff_area(
        &mut self,
        volume: &VolumeInfo,
        max_bytes: Option<u64>,
    ) -> Result<Vec<ShadowInfo>, ServiceError> {
        match self.quiet(Request::SetMaxDiffArea {
            volume: volume.clone(),
            max_bytes,
        })? {
            Reply::Shadows(shadows) => Ok(shadows),
            other => Err(unexpected(other)),
        }
    }
    fn expose(
        &mut self,
        shadow: ShadowId,
        target: &str,
        base_dir: &Path,
    ) -> Result<Exposure, ServiceError> {
        match self.quiet(Request::Expose {
            shadow,
            target: target.to_string(),
            base_dir: base_dir.to_path_buf(),
        })? {
            Reply::Exposure(exposure) => Ok(exposure),
            other => Err(unexpected(other)),
        }
    }
    fn unexpose(&mut self, target: &str, base_dir: &Path) -> Result<ShadowInfo, ServiceError> {
        match self.quiet(Request::Unexpose {
            target: target.to_string(),
            base_dir: base_dir.to_path_buf(),
        })? {
            Reply::Shadow(shadow) => Ok(*shadow),
            other => Err(unexpected(other)),
        }
    }
    fn read(
        &mut self,
        target: &str,
        offset: u64,
        length: u64,
        base_dir: &Path,
    ) -> Result<Vec<u8>, ServiceError> {
        let request = Request::Read {
            target: target.to_string(),
            offset,
            length,
            base_dir: base_dir.to_path_buf(),
        };
        match self.call_with_bytes(request, None, &mut super::api::SilentObserver)? {
            (Reply::Data, data) => Ok(data),
            (other, _) => Err(unexpected(other)),
        }
    }
    fn write(
        &mut self,
        volume: &str,
        offset: u64,
        data: &[u8],
        base_dir: &Path,
    ) -> Result<(), ServiceError> {
        let request = Request::Write {
            volume: volume.to_string(),
            offset,
            base_dir: base_dir.to_path_buf(),
        };
        self.call_with_bytes(request, Some(data), &mut super::api::SilentObserver)
            .map(|_| ())
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
        let request = Request::ReadInto {
            target: target.to_string(),
            offset,
            length,
            sparse,
            base_dir: base_dir.to_path_buf(),
        };
        match self.call_with_payload(request, None, Some(output), observer)? {
            (Reply::Transferred(bytes), _) => Ok(bytes),
            (other, _) => Err(unexpected(other)),
        }
    }
    fn write_from(
        &mut self,
        volume: &str,
        offset: u64,
        input: BorrowedFd<'_>,
        base_dir: &Path,
        observer: &mut dyn ServiceObserver,
    ) -> Result<u64, ServiceError> {
        let request = Request::WriteFrom {
            volume: volume.to_string(),
            offset,
            base_dir: base_dir.to_path_buf(),
        };
        match self.call_with_payload(request, None, Some(input), observer)? {
            (Reply::Transferred(bytes), _) => Ok(bytes),
            (other, _) => Err(unexpected(other)),
        }
    }
    fn check_store(&mut self) -> Result<super::api::StoreCheck, ServiceError> {
        match self.quiet(Request::CheckStore)? {
            Reply::Check(check) => Ok(check),
            other => Err(unexpected(other)),
        }
    }

    fn attach(
        &mut self,
        volume: &str,
        target: &str,
        base_dir: &Path,
    ) -> Result<Exposure, ServiceError> {
        let request = Request::Attach {
            volume: volume.to_string(),
            target: target.to_string(),
            base_dir: base_dir.to_path_buf(),
        };
        match self.quiet(request)? {
            Reply::Exposure(exposure) => Ok(exposure),
            other => Err(unexpected(other)),
        }
    }
    fn detach(&mut self, target: &str, base_dir: &Path) -> Result<VolumeInfo, ServiceError> {
        match self.quiet(Request::Detach {
            target: target.to_string(),
            base_dir: base_dir.to_path_buf(),
        })? {
            Reply::Volume(volume) => Ok(volume),
            other => Err(unexpected(other)),
        }
    }
    fn attachments(&mut self) -> Result<Vec<(VolumeInfo, Exposure)>, ServiceError> {
        match self.quiet(Request::Attachments)? {
            Reply::Attachments(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }
    fn outside_users(&mut self, volume: &VolumeInfo) -> Result<Vec<String>, ServiceError> {
        match self.quiet(Request::OutsideUsers {
            volume: volume.clone(),
        })? {
            Reply::Lines(lines) => Ok(lines),
            other => Err(unexpected(other)),
        }
    }
    fn list_writers(&mut self, listing: WriterListing) -> Result<Vec<String>, ServiceError> {
        match self.quiet(Request::ListWriters { listing })? {
            Reply::Lines(lines) => Ok(lines),
            other => Err(unexpected(other)),
        }
    }
    fn writer_statuses(&mut self) -> Result<Vec<super::api::WriterStatusView>, ServiceError> {
        match self.quiet(Request::WriterStatuses)? {
            Reply::WriterStatuses(statuses) => Ok(statuses),
            other => Err(unexpected(other)),
        }
    }
    fn end_backup(&mut self, observer: &mut dyn ServiceObserver) -> Result<(), ServiceError> {
        self.call(Request::EndBackup, observer).map(|_| ())
    }
    fn load_metadata(
        &mut self,
        cabinet: crate::engine::cabinet::MetadataCabinet,
    ) -> Result<LoadedMetadata, ServiceError> {
        match self.quiet(Request::LoadMetadata {
            cabinet: Box::new(cabinet),
        })? {
            Reply::Loaded(loaded) => Ok(loaded),
            other => Err(unexpected(other)),
        }
    }
    fn attach_array(&mut self, dir: &Path, name: Option<&str>) -> Result<ArrayInfo, ServiceError> {
        match self.quiet(Request::AttachArray {
            dir: dir.to_path_buf(),
            name: name.map(str::to_string),
        })? {
            Reply::Array(info) => Ok(*info),
            other => Err(unexpected(other)),
        }
    }
    fn attach_rbd_pool(
        &mut self,
        pool: &str,
        conf: &Path,
        client_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<ArrayInfo, ServiceError> {
        match self.quiet(Request::AttachRbdPool {
            pool: pool.to_string(),
            conf: conf.to_path_buf(),
            client_id: client_id.map(str::to_string),
            name: name.map(str::to_string),
        })? {
            Reply::Array(info) => Ok(*info),
            other => Err(unexpected(other)),
        }
    }
    fn detach_array(&mut self, name: &str) -> Result<(), ServiceError> {
        self.quiet(Request::DetachArray {
            name: name.to_string(),
        })
        .map(|_| ())
    }
    fn arrays(&mut self) -> Result<Vec<ArrayInfo>, ServiceError> {
        match self.quiet(Request::Arrays)? {
            Reply::Arrays(arrays) => Ok(arrays),
            other => Err(unexpected(other)),
        }
    }
    fn import(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        match self.quiet(Request::Import)? {
            Reply::Shadows(shadows) => Ok(shadows),
            other => Err(unexpected(other)),
        }
    }
    fn mask(&mut self, set_id: ShadowSetId) -> Result<Vec<ShadowInfo>, ServiceError> {
        match self.quiet(Request::Mask { set_id })? {
            Reply::Shadows(shadows) => Ok(shadows),
            other => Err(unexpected(other)),
        }
    }
    fn break_set(
        &mut self,
        set_id: ShadowSetId,
        writable: bool,
    ) -> Result<Vec<VolumeInfo>, ServiceError> {
        match self.quiet(Request::Break { set_id, writable })? {
            Reply::Volumes(volumes) => Ok(volumes),
            other => Err(unexpected(other)),
        }
    }
    fn simulate_restore(&mut self, verify: &[String]) -> Result<Vec<String>, ServiceError> {
        match self.quiet(Request::SimulateRestore {
            verify: verify.to_vec(),
        })? {
            Reply::Lines(lines) => Ok(lines),
            other => Err(unexpected(other)),
        }
    }
    fn begin_restore(
        &mut self,
        verify: &[String],
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError> {
        self.call(
            Request::BeginRestore {
                verify: verify.to_vec(),
            },
            observer,
        )
        .map(|_| ())
    }
    fn end_restore(&mut self, observer: &mut dyn ServiceObserver) -> Result<(), ServiceError> {
        self.call(Request::EndRestore, observer).map(|_| ())
    }

    fn release_requester(&mut self) -> Result<Vec<ShadowInfo>, ServiceError> {
        match self.quiet(Request::ReleaseRequester)? {
            Reply::Shadows(shadows) => Ok(shadows),
            other => Err(unexpected(other)),
        }
    }
}
