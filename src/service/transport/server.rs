//! The generic server: an accept loop, one thread per requester session, the idle timer and
//! graceful stop. It knows nothing of the request types; a [`Handler`] supplies them.
//!
//! **Invariants:**
//! - [`Handler::session_ended`] is called exactly once per session, after its last `handle`
//!   returned, whether the requester closed cleanly, was killed, or the service is stopping.
//! - The server unlinks its socket file only if the file is still the one it bound, and before
//!   the store lock (if any) is released, so it never removes a successor's socket.
//! - The idle timer runs only while no session is connected and the handler says nothing
//!   outlives requesters; any session or keep-alive resets it.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::access::{peer_credentials, AccessControl, PeerCredentials};
use super::descriptor::DescriptorStream;
use super::error::TransportError;
use super::log::{log_to, ServiceLog};
use super::signals;
use super::store::StoreGuard;
use super::wire::{read_bytes, write_bytes, BytesHeader};
use super::wire::{
    read_frame_line, write_frame, ClientFrame, ControlRequest, Hello, RemoteError, RemoteErrorKind,
    ServerFrame, ServiceStatus, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

/// The longest socket path that fits in `sockaddr_un.sun_path` with its terminating zero.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The idle timeout of a service started with default options, as VSS's `IdleTimeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a stop waits for running requests to finish before it cuts their connections.
const STOP_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// One requester connection, unique for the lifetime of a service process (counting from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "session {}", self.0)
    }
}

/// What the service runs: the engine adapter the integrator plugs in.
pub trait Handler: Send + Sync + 'static {
    /// The request type read from `{"request": …}` frames.
    type Request: serde::de::DeserializeOwned + Send;
    /// The response type written as `{"response": …}`.
    type Response: serde::Serialize + Send;

    /// Called for each request on a connection, one at a time per connection (different
    /// connections run concurrently). `events` lets a long request stream progress, log or
    /// step messages to that requester, and ask it questions, before the final response.
    fn handle(
        &self,
        session: SessionId,
        request: Self::Request,
        events: &EventSink,
    ) -> Self::Response;

    /// The connection ended, however it ended (clean close, requester killed, service
    /// stopping): release the session's volatile state. Called once per session. A requester
    /// killed during a request is noticed when that request's `handle` returns (or at once,
    /// if the handler is waiting in [`EventSink::ask`] or writing events).
    fn session_ended(&self, session: SessionId);

    /// True while something outlives requesters (an exposure, an attached volume): the service
    /// must not idle-exit. Polled by the accept loop every tick, so it must be cheap and must
    /// not block on a long request.
    fn keeps_service_alive(&self) -> bool;
}

/// How a server behaves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Exit after this long with no session connected and nothing kept alive; `None` never
    /// idles out.
    pub idle_timeout: Option<Duration>,
    /// Turn SIGTERM and SIGINT into a graceful stop. Installs process-wide signal handlers,
    /// so only the service process (`service run`) should set it.
    pub handle_termination_signals: bool,
    /// Where to log. [`serve_store`](super::serve_store) opens `<store>/service.log` when this
    /// is `None`; [`serve`] then logs nowhere.
    pub log: Option<Arc<ServiceLog>>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            handle_termination_signals: false,
            log: None,
        }
    }
}

/// Why a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// No session and no keep-alive for the idle timeout.
    IdleTimeout,
    /// [`ServerHandle::stop`] or a requester's stop request.
    StopRequested,
    /// SIGTERM or SIGINT.
    TerminationSignal,
    /// The accept loop panicked; the log says more.
    Crashed,
}

impl fmt::Display for StopReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            StopReason::IdleTimeout => "idle timeout",
            StopReason::StopRequested => "stop requested",
            StopReason::TerminationSignal => "termination signal",
            StopReason::Crashed => "accept loop crashed",
        })
    }
}

/// A message from the service during a request, as the requester sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A progress, log or step event; any answer is ignored.
    Event(serde_json::Value),
    /// A question; the requester answers with `Some(answer)` or declines with `None`.
    Question(serde_json::Value),
}

/// The reading and writing halves of one connection.
pub(crate) struct ConnectionIo {
    pub(crate) reader: BufReader<DescriptorStream>,
    pub(crate) writer: UnixStream,
}

type Callback = Box<dyn FnMut(Incoming) -> Option<serde_json::Value> + Send>;

enum SinkTarget {
    Connection(Mutex<ConnectionIo>),
    Callback(Mutex<Callback>),
    Discard,
}

/// Sends events and questions to the requester of the running request.
///
/// Usable from several threads of one request (it is `Sync`); frames never interleave.
pub struct EventSink {
    target: SinkTarget,
    /// The binary payload that came with the request (`bytes` frame), until taken.
    request_bytes: Mutex<Vec<u8>>,
    /// The binary payload to send before the response, if the handler set one.
    response_bytes: Mutex<Option<Vec<u8>>>,
    /// The file descriptor that came with the request (`descriptor` frame), until taken.
    request_descriptor: Mutex<Option<OwnedFd>>,
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl EventSink {
    /// A sink that hands events and questions to `callback`, for running a handler in-process
    /// (tests, or an embedded service) with the same code path as over the socket.
    pub fn from_callback(
        callback: impl FnMut(Incoming) -> Option<serde_json::Value> + Send + 'static,
    ) -> EventSink {
        EventSink::with_target(SinkTarget::Callback(Mutex::new(Box::new(callback))))
    }

    /// A sink that drops events; questions fail with [`TransportError::AskUnavailable`].
    pub fn discard() -> EventSink {
        EventSink::with_target(SinkTarget::Discard)
    }

    pub(crate) fn connection(io: ConnectionIo) -> EventSink {
        EventSink::with_target(SinkTarget::Connection(Mutex::new(io)))
    }

    fn with_target(target: SinkTarget) -> EventSink {
        EventSink {
            target,
            request_bytes: Mutex::new(Vec::new()),
            response_bytes: Mutex::new(None),
            request_descriptor: Mutex::new(None),
        }
    }

    /// Gives the request its binary payload (what the requester sent in a `bytes` frame).
    pub fn with_request_bytes(self, bytes: Vec<u8>) -> EventSink {
        *lock_ignoring_poison(&self.request_bytes) = bytes;
        self
    }

    /// Gives the request the file descriptor the requester sent in a `descriptor` frame.
    pub fn with_request_descriptor(self, descriptor: Option<OwnedFd>) -> EventSink {
        *lock_ignoring_poison(&self.request_descriptor) = descriptor;
        self
    }

    /// Takes the request's file descriptor, if it came with one.
    pub fn take_request_descriptor(&self) -> Option<OwnedFd> {
        lock_ignoring_poison(&self.request_descriptor).take()
    }

    /// Takes the request's binary payload (empty when it had none).
    pub fn take_request_bytes(&self) -> Vec<u8> {
        std::mem::take(&mut *lock_ignoring_poison(&self.request_bytes))
    }

    /// Sets the binary payload sent as raw bytes before the response.
    pub fn set_response_bytes(&self, bytes: Vec<u8>) {
        *lock_ignoring_poison(&self.response_bytes) = Some(bytes);
    }

    /// Takes the response's binary payload, if the handler set one.
    pub fn take_response_bytes(&self) -> Option<Vec<u8>> {
        lock_ignoring_poison(&self.response_bytes).take()
    }

    fn into_connection(self) -> Option<ConnectionIo> {
        match self.target {
            SinkTarget::Connection(io) => Some(match io.into_inner() {
                Ok(io) => io,
                Err(poisoned) => poisoned.into_inner(),
            }),
            _ => None,
        }
    }

    /// Writes `{"event": event}` to the requester.
    pub fn send(&self, event: serde_json::Value) -> Result<(), TransportError> {
        match &self.target {
            SinkTarget::Connection(io) => {
                let mut io = lock_ignoring_poison(io);
                write_frame(&mut io.writer, &ServerFrame::Event(event)).map_err(|source| {
                    TransportError::Send {
                        peer: "requester",
                        source,
                    }
                })
            }
            SinkTarget::Callback(callback) => {
                (lock_ignoring_poison(callback))(Incoming::Event(event));
                Ok(())
            }
            SinkTarget::Discard => Ok(()),
        }
    }

    /// Writes `{"ask": question}` and waits for the requester's answer.
    pub fn ask(&self, question: serde_json::Value) -> Result<serde_json::Value, TransportError> {
        match &self.target {
            SinkTarget::Connection(io) => {
                let mut io = lock_ignoring_poison(io);
                write_frame(&mut io.writer, &ServerFrame::Ask(question)).map_err(|source| {
                    TransportError::Send {
                        peer: "requester",
                        source,
                    }
                })?;
                let line = read_frame_line(&mut io.reader, MAX_FRAME_BYTES)
                    .map_err(|source| TransportError::Receive {
                        peer: "requester",
                        source,
                    })?
                    .ok_or(TransportError::ConnectionClosed { peer: "requester" })?;
                match serde_json::from_slice::<ClientFrame>(&line) {
                    Ok(ClientFrame::Answer(answer)) => Ok(answer),
                    Ok(ClientFrame::Decline {}) => Err(TransportError::AskDeclined),
                    Ok(_) => Err(TransportError::MalformedFrame {
                        peer: "requester",
                        message: "expected an answer to the pending question".to_string(),
                    }),
                    Err(error) => Err(TransportError::MalformedFrame {
                        peer: "requester",
                        message: error.to_string(),
                    }),
                }
            }
            SinkTarget::Callback(callback) => {
                (lock_ignoring_poison(callback))(Incoming::Question(question))
                    .ok_or(TransportError::AskDeclined)
            }
            SinkTarget::Discard => Err(TransportError::AskUnavailable),
        }
    }
}

struct ServerState {
    /// A clone of each connected session's stream, so a stop can shut its reading side.
    sessions: HashMap<SessionId, UnixStream>,
    next_session: u64,
    /// When the service last became idle; `None` while it is busy.
    idle_since: Option<Instant>,
}

/// The part of a server that does not depend on the handler type.
struct Control {
    stop_requested: AtomicBool,
    wake_writer: UnixStream,
    state: Mutex<ServerState>,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    socket_path: PathBuf,
    store: Option<PathBuf>,
    idle_timeout: Option<Duration>,
    log: Option<Arc<ServiceLog>>,
    /// Who may connect, checked on every accepted connection.
    access: AccessControl,
}

impl Control {
    fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        // The wake-up stream is non-blocking: if its buffer is full a wake-up is already due.
        let _ = (&self.wake_writer).write(&[1]);
    }

    fn status(&self) -> ServiceStatus {
        let sessions = lock_ignoring_poison(&self.state).sessions.len();
        ServiceStatus {
            pid: std::process::id(),
            started_at: self.started_at,
            uptime_seconds: self.started.elapsed().as_secs(),
            sessions,
            store: self.store.clone(),
            socket: self.socket_path.clone(),
            idle_timeout_milliseconds: self
                .idle_timeout
                .map(|timeout| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

struct Shared<H> {
    handler: Arc<H>,
    control: Arc<Control>,
}

/// A running server. Dropping it stops the server gracefully and waits for it.
pub struct ServerHandle {
    control: Arc<Control>,
    accept_thread: Option<JoinHandle<StopReason>>,
}

impl ServerHandle {
    /// The socket the server listens on.
    pub fn socket_path(&self) -> &Path {
        &self.control.socket_path
    }

    /// The same status a requester gets from [`Client::status`](super::Client::status).
    pub fn status(&self) -> ServiceStatus {
        self.control.status()
    }

    /// Asks the server to stop gracefully; returns at once. Running requests finish and get
    /// their responses; then every session ends.
    pub fn stop(&self) {
        self.control.request_stop();
    }

    /// True once the server has stopped (idle, stop, signal).
    pub fn is_finished(&self) -> bool {
        self.accept_thread
            .as_ref()
            .is_none_or(|thread| thread.is_finished())
    }

    /// Blocks until the server has stopped, its sessions ended, its socket removed and its
    /// store lock released, and says why it stopped.
    pub fn wait(mut self) -> StopReason {
        self.join()
    }

    fn join(&mut self) -> StopReason {
        match self.accept_thread.take() {
            Some(thread) => thread.join().unwrap_or(StopReason::Crashed),
            None => StopReason::Crashed,
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.accept_thread.is_some() {
            self.control.request_stop();
            self.join();
        }
    }
}

/// Serves `handler` on a Unix socket at `socket_path`, without a store lock.
///
/// An existing socket file at the path is removed if nothing answers on it (a stale socket of
/// a killed service); if a service answers, this fails with [`TransportError::AddressInUse`].
/// For a store's service use [`serve_store`](super::serve_store), which adds the lock, the log
/// and the long-path fallback.
pub fn serve<H: Handler>(
    socket_path: &Path,
    handler: Arc<H>,
    options: ServerOptions,
) -> Result<ServerHandle, TransportError> {
    check_socket_path_length(socket_path)?;
    if let Ok(metadata) = std::fs::symlink_metadata(socket_path) {
        if !metadata.file_type().is_socket() || UnixStream::connect(socket_path).is_ok() {
            return Err(TransportError::AddressInUse {
                path: socket_path.to_path_buf(),
            });
        }
        remove_stale_socket(socket_path)?;
    }
    start_server(socket_path, handler, options, None, None)
}

pub(crate) fn check_socket_path_length(socket_path: &Path) -> Result<(), TransportError> {
    let length = socket_path.as_os_str().len();
    if length > MAX_SOCKET_PATH_BYTES {
        return Err(TransportError::SocketPathTooLong {
            path: socket_path.to_path_buf(),
            length,
            limit: MAX_SOCKET_PATH_BYTES,
        });
    }
    Ok(())
}

pub(crate) fn remove_stale_socket(socket_path: &Path) -> Result<(), TransportError> {
    match std::fs::remove_file(socket_path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TransportError::Bind {
            path: socket_path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn start_server<H: Handler>(
    socket_path: &Path,
    handler: Arc<H>,
    options: ServerOptions,
    store: Option<PathBuf>,
    store_guard: Option<StoreGuard>,
) -> Result<ServerHandle, TransportError> {
    let setup = |action: &'static str| move |source| TransportError::ServerSetup { action, source };
    let signal_fd = if options.handle_termination_signals {
        Some(signals::install_termination_handler()?)
    } else {
        None
    };
    // Only the owner may connect through the file system; the peer check in `start_session`
    // decides about anyone else the socket mode lets through (see `access`).
    let access = AccessControl::new(store.clone());
    let listener = crate::engine::store::bind_private_socket(socket_path, access.socket_mode())
        .map_err(|source| TransportError::Bind {
            path: socket_path.to_path_buf(),
            source,
        })?;
    let socket_identity = std::fs::symlink_metadata(socket_path)
        .map(|metadata| (metadata.dev(), metadata.ino()))
        .map_err(|source| TransportError::Bind {
            path: socket_path.to_path_buf(),
            source,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(setup("make its socket non-blocking"))?;
    let (wake_writer, wake_reader) =
        UnixStream::pair().map_err(setup("create its wake-up pipe"))?;
    wake_writer
        .set_nonblocking(true)
        .map_err(setup("make its wake-up pipe non-blocking"))?;
    wake_reader
        .set_nonblocking(true)
        .map_err(setup("make its wake-up pipe non-blocking"))?;

    let started = Instant::now();
    let control = Arc::new(Control {
        stop_requested: AtomicBool::new(false),
        wake_writer,
        state: Mutex::new(ServerState {
            sessions: HashMap::new(),
            next_session: 1,
            idle_since: Some(started),
        }),
        started,
        started_at: chrono::Utc::now(),
        socket_path: socket_path.to_path_buf(),
        store,
        idle_timeout: options.idle_timeout,
        log: options.log,
        access,
    });
    log_to(
        &control.log,
        &format!(
            "service started on {} (idle timeout {})",
            socket_path.display(),
            match control.idle_timeout {
                Some(timeout) => format!("{} ms", timeout.as_millis()),
                None => "none".to_string(),
            }
        ),
    );
    let shared = Arc::new(Shared {
        handler,
        control: Arc::clone(&control),
    });
    let accept_loop = AcceptLoop {
        shared,
        listener,
        wake_reader,
        signal_fd,
        socket_identity,
        store_guard,
        session_threads: Vec::new(),
    };
    let accept_thread = thread::Builder::new()
        .name("service-accept".to_string())
        .spawn(move || accept_loop.run())
        .map_err(setup("start its accept thread"))?;
    Ok(ServerHandle {
        control,
        accept_thread: Some(accept_thread),
    })
}

struct AcceptLoop<H: Handler> {
    shared: Arc<Shared<H>>,
    listener: UnixListener,
    wake_reader: UnixStream,
    signal_fd: Option<RawFd>,
    socket_identity: (u64, u64),
    store_guard: Option<StoreGuard>,
    session_threads: Vec<JoinHandle<()>>,
}

impl<H: Handler> AcceptLoop<H> {
    fn control(&self) -> &Control {
        &self.shared.control
    }

    /// How often the loop wakes to check the idle timer and the keep-alive: a tenth of the
    /// timeout, so an idle exit comes at most 10% late, between 10 ms and 1 s.
    fn tick(&self) -> Duration {
        match self.control().idle_timeout {
            Some(timeout) => {
                (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
            }
            None => Duration::from_secs(1),
        }
    }

    fn run(mut self) -> StopReason {
        let reason = self.serve_until_stopped();
        self.shut_down(reason);
        reason
    }

    fn serve_until_stopped(&mut self) -> StopReason {
        let tick_milliseconds = i32::try_from(self.tick().as_millis()).unwrap_or(1000);
        loop {
            let mut descriptors = vec![
                libc::pollfd {
                    fd: self.listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake_reader.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if let Some(signal_fd) = self.signal_fd {
                descriptors.push(libc::pollfd {
                    fd: signal_fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // SAFETY: `descriptors` is a live array of initialized pollfd of the given length.
            let ready = unsafe {
                libc::poll(
                    descriptors.as_mut_ptr(),
                    descriptors.len() as libc::nfds_t,
                    tick_milliseconds,
                )
            };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    log_to(&self.control().log, &format!("poll failed: {error}"));
                    thread::sleep(Duration::from_millis(u64::from(
                        tick_milliseconds.unsigned_abs(),
                    )));
                }
            }
            if self.signal_fd.is_some() && signals::termination_requested() {
                return StopReason::TerminationSignal;
            }
            if descriptors[1].revents != 0 {
                let mut drained = [0u8; 64];
                while matches!((&self.wake_reader).read(&mut drained), Ok(count) if count > 0) {}
            }
            if self.control().stop_requested.load(Ordering::SeqCst) {
                return StopReason::StopRequested;
            }
            if descriptors[0].revents != 0 {
                self.accept_pending();
            }
            self.session_threads.retain(|thread| !thread.is_finished());
            if self.idle_timeout_expired() {
                return StopReason::IdleTimeout;
            }
        }
    }

    fn accept_pending(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.start_session(stream),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Resource exhaustion (EMFILE) or a connection reset before accept: log and
                    // let the next poll retry rather than stopping the service.
                    log_to(&self.control().log, &format!("accept failed: {error}"));
                    return;
                }
            }
        }
    }

    /// Refuses a peer the access control does not allow: an `access_denied` error frame
    /// instead of the greeting, then the connection is closed. Returns the peer's credentials
    /// when it is allowed. A refused connection never becomes a session.
    fn admit(&self, stream: &UnixStream) -> Option<PeerCredentials> {
        let control = self.control();
        let peer = match peer_credentials(stream) {
            Ok(peer) => peer,
            Err(error) => {
                log_to(
                    &control.log,
                    &format!("refused a connection whose peer is unknown: {error}"),
                );
                return None;
            }
        };
        let denied = match control.access.check(peer.uid) {
            Ok(()) => return Some(peer),
            Err(denied) => denied,
        };
        log_to(
            &control.log,
            &format!(
                "refused a connection of uid {} (pid {}): access denied{}",
                peer.uid,
                peer.pid,
                denied
                    .allow_list_problem
                    .as_deref()
                    .map(|problem| format!("; the allow list is not used: {problem}"))
                    .unwrap_or_default()
            ),
        );
        // A fresh connection's send buffer is empty, so this small write does not block the
        // accept loop; the timeout bounds it anyway.
        let mut writer = stream;
        let _ = writer.set_nonblocking(false);
        let _ = writer.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = write_frame(
            &mut writer,
            &refusal(RemoteErrorKind::AccessDenied, denied.message),
        );
        None
    }

    fn start_session(&mut self, stream: UnixStream) {
        let Some(peer) = self.admit(&stream) else {
            return;
        };
        let control = &self.shared.control;
        let registered = stream
            .set_nonblocking(false)
            .and_then(|()| stream.try_clone());
        let stop_handle = match registered {
            Ok(stop_handle) => stop_handle,
            Err(error) => {
                log_to(
                    &control.log,
                    &format!("cannot set up a new connection: {error}"),
                );
                return;
            }
        };
        let session = {
            let mut state = lock_ignoring_poison(&control.state);
            let session = SessionId(state.next_session);
            state.next_session += 1;
            state.sessions.insert(session, stop_handle);
            state.idle_since = None;
            session
        };
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name(format!("service-session-{}", session.0))
            .spawn(move || run_session(&shared, session, stream, peer));
        match spawned {
            Ok(thread) => self.session_threads.push(thread),
            Err(error) => {
                log_to(
                    &control.log,
                    &format!("cannot start a thread for {session}: {error}"),
                );
                let mut state = lock_ignoring_poison(&control.state);
                state.sessions.remove(&session);
                if state.sessions.is_empty() {
                    state.idle_since = Some(Instant::now());
                }
            }
        }
    }

    fn idle_timeout_expired(&self) -> bool {
        let Some(timeout) = self.control().idle_timeout else {
            return false;
        };
        // Ask the handler before taking our lock: the handler may be slow or take its own locks.
        let kept_alive = self.shared.handler.keeps_service_alive();
        let now = Instant::now();
        let mut state = lock_ignoring_poison(&self.control().state);
        if kept_alive || !state.sessions.is_empty() {
            state.idle_since = None;
            return false;
        }
        let idle_since = *state.idle_since.get_or_insert(now);
        now.duration_since(idle_since) >= timeout
    }

    fn shut_down(mut self, reason: StopReason) {
        let control = Arc::clone(&self.shared.control);
        log_to(&control.log, &format!("service stopping: {reason}"));
        // Unlink first, so new requesters fail to connect (and start a new service) instead of
        // queueing on a listener that will never accept them.
        let still_ours = std::fs::symlink_metadata(&control.socket_path)
            .map(|metadata| (metadata.dev(), metadata.ino()) == self.socket_identity)
            .unwrap_or(false);
        if still_ours {
            if let Err(error) = std::fs::remove_file(&control.socket_path) {
                log_to(&control.log, &format!("cannot remove the socket: {error}"));
            }
        }
        // Connections already queued are closed unserved; their requesters see the connection
        // close before the greeting and retry.
        while let Ok((stream, _)) = self.listener.accept() {
            drop(stream);
        }
        drop(self.listener);
        // Shutting the reading side lets a running request finish and deliver its response;
        // the session thread then reads end-of-stream and ends the session.
        for stream in lock_ignoring_poison(&control.state).sessions.values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        // A requester that stopped reading (suspended, say) could block a session thread in a
        // write forever. After a grace period, shut the writing side too, which fails that write.
        let grace_deadline = Instant::now() + STOP_GRACE_PERIOD;
        while self
            .session_threads
            .iter()
            .any(|thread| !thread.is_finished())
            && Instant::now() < grace_deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        for stream in lock_ignoring_poison(&control.state).sessions.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for thread in self.session_threads.drain(..) {
            if thread.join().is_err() {
                log_to(&control.log, "a session thread panicked");
            }
        }
        // Releasing the store lock comes last: until here the socket path is ours.
        drop(self.store_guard.take());
        log_to(&control.log, &format!("service stopped: {reason}"));
    }
}

fn run_session<H: Handler>(
    shared: &Shared<H>,
    session: SessionId,
    stream: UnixStream,
    peer: PeerCredentials,
) {
    let control = &shared.control;
    log_to(
        &control.log,
        &format!("{session} connected (pid {}, uid {})", peer.pid, peer.uid),
    );
    let ending = match serve_session(shared, session, stream) {
        Ok(ending) => ending.to_string(),
        Err(error) => error.to_string(),
    };
    if catch_unwind(AssertUnwindSafe(|| shared.handler.session_ended(session))).is_err() {
        log_to(
            &control.log,
            &format!("the handler panicked while ending {session}"),
        );
    }
    let mut state = lock_ignoring_poison(&control.state);
    state.sessions.remove(&session);
    if state.sessions.is_empty() {
        state.idle_since = Some(Instant::now());
    }
    drop(state);
    log_to(&control.log, &format!("{session} ended: {ending}"));
}

fn send_to_requester(io: &mut ConnectionIo, frame: &ServerFrame) -> Result<(), TransportError> {
    write_frame(&mut io.writer, frame).map_err(|source| TransportError::Send {
        peer: "requester",
        source,
    })
}

fn refusal(kind: RemoteErrorKind, message: String) -> ServerFrame {
    ServerFrame::Error(RemoteError { kind, message })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Serves one connection until it ends; returns how it ended.
fn serve_session<H: Handler>(
    shared: &Shared<H>,
    session: SessionId,
    stream: UnixStream,
) -> Result<&'static str, TransportError> {
    let control = &shared.control;
    let writer = stream.try_clone().map_err(|source| TransportError::Send {
        peer: "requester",
        source,
    })?;
    let mut io = ConnectionIo {
        reader: BufReader::new(DescriptorStream::new(stream)),
        writer,
    };
    send_to_requester(
        &mut io,
        &ServerFrame::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
        }),
    )?;
    // The binary payload announced by a `bytes` frame, for the request that follows it.
    let mut request_bytes: Vec<u8> = Vec::new();
    // The descriptor taken by a `descriptor` frame, for the request that follows it.
    let mut request_descriptor: Option<OwnedFd> = None;
    loop {
        let line = match read_frame_line(&mut io.reader, MAX_FRAME_BYTES) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok("the requester closed the connection"),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                // The rest of the oversized line is still in the stream, so the connection
                // cannot be resynchronized: refuse and close.
                send_to_requester(
                    &mut io,
                    &refusal(RemoteErrorKind::MalformedRequest, error.to_string()),
                )?;
                return Ok("the requester sent an oversized frame");
            }
            Err(source) => {
                return Err(TransportError::Receive {
                    peer: "requester",
                    source,
                })
            }
        };
        let frame = match serde_json::from_slice::<ClientFrame>(&line) {
            Ok(frame) => frame,
            Err(error) => {
                log_to(
                    &control.log,
                    &format!("{session} sent a malformed frame: {error}"),
                );
                send_to_requester(
                    &mut io,
                    &refusal(
                        RemoteErrorKind::MalformedRequest,
                        format!("not a request frame: {error}"),
                    ),
                )?;
                continue;
            }
        };
        match frame {
            ClientFrame::Bytes(header) => match read_bytes(&mut io.reader, header) {
                Ok(bytes) => request_bytes = bytes,
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    // The payload is still in the stream: the connection cannot go on.
                    send_to_requester(
                        &mut io,
                        &refusal(RemoteErrorKind::MalformedRequest, error.to_string()),
                    )?;
                    return Ok("the requester sent an oversized binary payload");
                }
                Err(source) => {
                    return Err(TransportError::Receive {
                        peer: "requester",
                        source,
                    })
                }
            },
            ClientFrame::Descriptor {} => match io.reader.get_mut().take_descriptor() {
                Some(descriptor) => request_descriptor = Some(descriptor),
                None => {
                    // A request that needs a descriptor then fails saying so.
                    request_descriptor = None;
                    log_to(
                        &control.log,
                        &format!("{session} sent a descriptor frame without a descriptor"),
                    );
                }
            },
            ClientFrame::Request(value) => {
                let bytes = std::mem::take(&mut request_bytes);
                let descriptor = request_descriptor.take();
                let request = match serde_json::from_value::<H::Request>(value) {
                    Ok(request) => request,
                    Err(error) => {
                        log_to(
                            &control.log,
                            &format!("{session} sent an unknown request: {error}"),
                        );
                        send_to_requester(
                            &mut io,
                            &refusal(
                                RemoteErrorKind::MalformedRequest,
                                format!("not a valid request: {error}"),
                            ),
                        )?;
                        continue;
                    }
                };
                let sink = EventSink::connection(io)
                    .with_request_bytes(bytes)
                    .with_request_descriptor(descriptor);
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    shared.handler.handle(session, request, &sink)
                }));
                let response_bytes = sink.take_response_bytes();
                io = sink
                    .into_connection()
                    .ok_or(TransportError::ConnectionClosed { peer: "requester" })?;
                if let (Some(bytes), Ok(_)) = (response_bytes, &outcome) {
                    let header = ServerFrame::Bytes(BytesHeader {
                        length: bytes.len() as u64,
                    });
                    write_bytes(&mut io.writer, &header, &bytes).map_err(|source| {
                        TransportError::Send {
                            peer: "requester",
                            source,
                        }
                    })?;
                }
                let reply = match outcome {
                    Ok(response) => match serde_json::to_value(&response) {
                        Ok(response) => ServerFrame::Response(response),
                        Err(error) => {
                            refusal(RemoteErrorKind::ResponseNotSerializable, error.to_string())
                        }
                    },
                    Err(payload) => {
                        let message = panic_message(payload.as_ref());
                        log_to(
                            &control.log,
                            &format!("the handler panicked on a request of {session}: {message}"),
                        );
                        refusal(RemoteErrorKind::HandlerPanicked, message)
                    }
                };
                send_to_requester(&mut io, &reply)?;
            }
            ClientFrame::Answer(_) | ClientFrame::Decline {} => {
                send_to_requester(
                    &mut io,
                    &refusal(
                        RemoteErrorKind::UnexpectedFrame,
                        "no question is pending".to_string(),
                    ),
                )?;
            }
            ClientFrame::Control(ControlRequest::Status) => {
                send_to_requester(&mut io, &ServerFrame::Status(control.status()))?;
            }
            ClientFrame::Control(ControlRequest::Stop) => {
                log_to(
                    &control.log,
                    &format!("{session} asked the service to stop"),
                );
                send_to_requester(&mut io, &ServerFrame::Stopping {})?;
                control.request_stop();
            }
        }
    }
}
