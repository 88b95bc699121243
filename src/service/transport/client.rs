//! The requester side: connecting, calling, and starting the service on demand.

use std::io::{self, BufReader};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::descriptor::send_with_descriptor;
use super::error::TransportError;
use super::server::Incoming;
use super::store::ServicePaths;
use super::wire::{read_bytes, write_bytes, BytesHeader};
use super::wire::{
    read_frame_line_waiting, write_frame, ClientFrame, ControlRequest, Hello, RemoteErrorKind,
    ServerFrame, ServiceStatus, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

/// How long [`connect_or_start`] waits for a started service to accept connections.
pub const DEFAULT_START_WAIT: Duration = Duration::from_secs(5);

/// How long [`Client::connect`] waits for the service's greeting. A live service greets at
/// once; a service that is stopping closes the connection instead.
const GREETING_WAIT: Duration = Duration::from_secs(5);

/// A requester session: one connection to the service.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket_path: PathBuf,
    service_pid: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("socket_path", &self.socket_path)
            .field("service_pid", &self.service_pid)
            .finish()
    }
}

fn receive_error(source: io::Error) -> TransportError {
    TransportError::Receive {
        peer: "service",
        source,
    }
}

impl Client {
    /// Connects to the socket at `socket_path` and waits for the service's greeting.
    pub fn connect(socket_path: &Path) -> Result<Client, TransportError> {
        let connect_error = |source| TransportError::Connect {
            path: socket_path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(socket_path).map_err(|source| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                TransportError::AccessDenied {
                    message: format!(
                        "Access is denied. The diskshadow service socket {} does not let this user connect; the store's owner can allow users in its access.toml",
                        socket_path.display()
                    ),
                }
            } else {
                connect_error(source)
            }
        })?;
        let writer = stream.try_clone().map_err(connect_error)?;
        stream
            .set_read_timeout(Some(GREETING_WAIT))
            .map_err(connect_error)?;
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
            socket_path: socket_path.to_path_buf(),
            service_pid: 0,
        };
        let hello: Hello = match client.receive()? {
            ServerFrame::Hello(hello) => hello,
            ServerFrame::Error(error) if error.kind == RemoteErrorKind::AccessDenied => {
                return Err(TransportError::AccessDenied {
                    message: error.message,
                })
            }
            other => {
                return Err(TransportError::MalformedFrame {
                    peer: "service",
                    message: format!("expected a greeting, got {other:?}"),
                })
            }
        };
        if hello.protocol != PROTOCOL_VERSION {
            return Err(TransportError::ProtocolMismatch {
                ours: PROTOCOL_VERSION,
                theirs: hello.protocol,
            });
        }
        client
            .reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(connect_error)?;
        client.service_pid = hello.pid;
        Ok(client)
    }

    /// Connects to the service of `store` (see [`ServicePaths::socket_for_requesters`]).
    pub fn connect_store(store: &Path) -> Result<Client, TransportError> {
        Client::connect(&ServicePaths::for_store(store).socket_for_requesters())
    }

    /// The process ID the service gave in its greeting.
    pub fn service_pid(&self) -> u32 {
        self.service_pid
    }

    /// The socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    fn send(&mut self, frame: &ClientFrame) -> Result<(), TransportError> {
        write_frame(&mut self.writer, frame).map_err(|source| TransportError::Send {
            peer: "service",
            source,
        })
    }

    fn receive(&mut self) -> Result<ServerFrame, TransportError> {
        self.receive_waiting(None)
    }

    /// Receives one frame; with `on_wait`, on a connection with a read timeout, calls it each
    /// time the timeout passes before the frame is complete.
    fn receive_waiting(
        &mut self,
        on_wait: Option<&mut dyn FnMut()>,
    ) -> Result<ServerFrame, TransportError> {
        let line = read_frame_line_waiting(&mut self.reader, MAX_FRAME_BYTES, on_wait)
            .map_err(receive_error)?
            .ok_or(TransportError::ConnectionClosed { peer: "service" })?;
        serde_json::from_slice(&line).map_err(|error| TransportError::MalformedFrame {
            peer: "service",
            message: error.to_string(),
        })
    }

    /// Sends one request and waits for its response. Events are passed to `on_event` (its
    /// result ignored); questions too, and `on_event` answers with `Some(answer)` or declines
    /// with `None`. Use [`Client::call_distinguishing`] when the payloads alone do not tell
    /// events from questions.
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        request: &Req,
        on_event: &mut dyn FnMut(serde_json::Value) -> Option<serde_json::Value>,
    ) -> Result<Resp, TransportError> {
        self.call_distinguishing(request, &mut |incoming| match incoming {
            Incoming::Event(event) => on_event(event),
            Incoming::Question(question) => on_event(question),
        })
    }

    /// Like [`Client::call`], but tells events and questions apart.
    pub fn call_distinguishing<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        request: &Req,
        on_message: &mut dyn FnMut(Incoming) -> Option<serde_json::Value>,
    ) -> Result<Resp, TransportError> {
        self.call_with_bytes(request, None, on_message)
            .map(|(response, _)| response)
    }

    /// Like [`Client::call_distinguishing`], with binary payloads: `request_bytes` travel as
    /// raw bytes before the request, and the response's raw bytes (empty when the service sent
    /// none) come back beside it. Neither is ever put into JSON.
    pub fn call_with_bytes<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        request: &Req,
        request_bytes: Option<&[u8]>,
        on_message: &mut dyn FnMut(Incoming) -> Option<serde_json::Value>,
    ) -> Result<(Resp, Vec<u8>), TransportError> {
        self.call_inner(
            request,
            request_bytes,
            None,
            None,
            &mut |incoming| match incoming {
                Some(incoming) => on_message(incoming),
                None => None,
            },
        )
    }

    /// Like [`Client::call_with_bytes`], with `descriptor` (a file the request reads or writes
    /// directly) passed to the service in a `descriptor` frame (`SCM_RIGHTS`); while it waits
    /// for the service, `on_message` is also called with `None` every `interval` without a
    /// message, so the requester can act meanwhile (send a `cancel` on another connection when
    /// its user pressed Ctrl-C).
    pub fn call_waiting<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        request: &Req,
        request_bytes: Option<&[u8]>,
        descriptor: Option<BorrowedFd<'_>>,
        interval: Duration,
        on_message: &mut dyn FnMut(Option<Incoming>) -> Option<serde_json::Value>,
    ) -> Result<(Resp, Vec<u8>), TransportError> {
        let set_timeout = |client: &Client, timeout: Option<Duration>| {
            client
                .reader
                .get_ref()
                .set_read_timeout(timeout)
                .map_err(receive_error)
        };
        set_timeout(self, Some(interval))?;
        let answer = self.call_inner(
            request,
            request_bytes,
            descriptor,
            Some(interval),
            on_message,
        );
        set_timeout(self, None)?;
        answer
    }

    fn call_inner<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        request: &Req,
        request_bytes: Option<&[u8]>,
        descriptor: Option<BorrowedFd<'_>>,
        interval: Option<Duration>,
        on_message: &mut dyn FnMut(Option<Incoming>) -> Option<serde_json::Value>,
    ) -> Result<(Resp, Vec<u8>), TransportError> {
        let request = serde_json::to_value(request).map_err(|source| TransportError::Json {
            action: "encode the request",
            source,
        })?;
        if let Some(descriptor) = descriptor {
            let mut line = serde_json::to_vec(&ClientFrame::Descriptor {}).map_err(|source| {
                TransportError::Json {
                    action: "encode the descriptor frame",
                    source,
                }
            })?;
            line.push(b'\n');
            send_with_descriptor(&self.writer, &line, descriptor).map_err(|source| {
                TransportError::Send {
                    peer: "service",
                    source,
                }
            })?;
        }
        if let Some(bytes) = request_bytes {
            let header = ClientFrame::Bytes(BytesHeader {
                length: bytes.len() as u64,
            });
            write_bytes(&mut self.writer, &header, bytes).map_err(|source| {
                TransportError::Send {
                    peer: "service",
                    source,
                }
            })?;
        }
        self.send(&ClientFrame::Request(request))?;
        let mut response_bytes = Vec::new();
        loop {
            let frame = match interval {
                Some(_) => self.receive_waiting(Some(&mut || {
                    on_message(None);
                }))?,
                None => self.receive()?,
            };
            match frame {
                ServerFrame::Event(event) => {
                    on_message(Some(Incoming::Event(event)));
                }
                ServerFrame::Ask(question) => {
                    let reply = match on_message(Some(Incoming::Question(question))) {
                        Some(answer) => ClientFrame::Answer(answer),
                        None => ClientFrame::Decline {},
                    };
                    self.send(&reply)?;
                }
                ServerFrame::Bytes(header) => {
                    // The raw bytes follow at once: read them without the timeout, which
                    // would cut them.
                    if interval.is_some() {
                        self.reader
                            .get_ref()
                            .set_read_timeout(None)
                            .map_err(receive_error)?;
                    }
                    response_bytes = read_bytes(&mut self.reader, header).map_err(receive_error)?;
                    if interval.is_some() {
                        self.reader
                            .get_ref()
                            .set_read_timeout(interval)
                            .map_err(receive_error)?;
                    }
                }
                ServerFrame::Response(response) => {
                    let response = serde_json::from_value(response).map_err(|source| {
                        TransportError::Json {
                            action: "decode the response",
                            source,
                        }
                    })?;
                    return Ok((response, response_bytes));
                }
                ServerFrame::Error(error) => {
                    return Err(TransportError::Remote {
                        kind: error.kind,
                        message: error.message,
                    })
                }
                other => {
                    return Err(TransportError::MalformedFrame {
                        peer: "service",
                        message: format!("unexpected frame during a request: {other:?}"),
                    })
                }
            }
        }
    }

    /// The service's status (pid, uptime, sessions, store).
    pub fn status(&mut self) -> Result<ServiceStatus, TransportError> {
        self.send(&ClientFrame::Control(ControlRequest::Status))?;
        match self.receive()? {
            ServerFrame::Status(status) => Ok(status),
            ServerFrame::Error(error) => Err(TransportError::Remote {
                kind: error.kind,
                message: error.message,
            }),
            other => Err(TransportError::MalformedFrame {
                peer: "service",
                message: format!("expected a status, got {other:?}"),
            }),
        }
    }

    /// Asks the service to stop gracefully. Returns once the service acknowledged; running
    /// requests of other sessions still finish.
    pub fn request_stop(&mut self) -> Result<(), TransportError> {
        self.send(&ClientFrame::Control(ControlRequest::Stop))?;
        match self.receive()? {
            ServerFrame::Stopping {} => Ok(()),
            ServerFrame::Error(error) => Err(TransportError::Remote {
                kind: error.kind,
                message: error.message,
            }),
            other => Err(TransportError::MalformedFrame {
                peer: "service",
                message: format!("expected a stop acknowledgement, got {other:?}"),
            }),
        }
    }
}

/// Connects to the service of `store`, starting it with `start` when none answers, and waits
/// up to [`DEFAULT_START_WAIT`] for it. See [`connect_or_start_within`].
pub fn connect_or_start(
    store: &Path,
    start: &dyn Fn() -> io::Result<Child>,
) -> Result<Client, TransportError> {
    connect_or_start_within(store, start, DEFAULT_START_WAIT)
}

/// The most service processes one call may start. Each start after the first follows a
/// started service that exited quietly because it lost the lock to one that then went away
/// (for example one that was idling out), so a few are plenty.
const MAX_STARTS: u32 = 4;

/// Connects to the service of `store`, starting it with `start` when none answers.
///
/// `start` spawns `diskshadow service run --store DIR` detached (stdin and stdout null, stderr
/// to `<store>/service.log`, `setsid` in `pre_exec`). Connection is retried with a growing
/// pause for up to `wait`. When two requesters start a service at once, the store lock picks
/// one; the other service exits with status 0 and both requesters connect to the winner. A
/// started service that exits with a failure ends the wait at once with an error naming the log.
/// Started children are reaped by a background thread, so a long-lived requester leaves no
/// zombies.
pub fn connect_or_start_within(
    store: &Path,
    start: &dyn Fn() -> io::Result<Child>,
    wait: Duration,
) -> Result<Client, TransportError> {
    let paths = ServicePaths::for_store(store);
    match Client::connect(&paths.socket_for_requesters()) {
        Ok(client) => return Ok(client),
        // A service of another version is running, or one refuses this user: starting one more
        // cannot help.
        Err(
            error @ (TransportError::ProtocolMismatch { .. } | TransportError::AccessDenied { .. }),
        ) => return Err(error),
        Err(_) => {}
    }
    let deadline = Instant::now() + wait;
    let mut starts = 0;
    let mut child: Option<Child> = None;
    let mut pause = Duration::from_millis(10);
    loop {
        if child.is_none() && starts < MAX_STARTS {
            starts += 1;
            child = Some(start().map_err(|source| TransportError::StartFailed {
                log: paths.log_file.clone(),
                source,
            })?);
        }
        thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(200));
        match Client::connect(&paths.socket_for_requesters()) {
            Ok(client) => {
                if let Some(child) = child.take() {
                    reap_in_background(child);
                }
                return Ok(client);
            }
            Err(
                error @ (TransportError::ProtocolMismatch { .. }
                | TransportError::AccessDenied { .. }),
            ) => return Err(error),
            Err(_) => {}
        }
        if let Some(running) = child.as_mut() {
            match running.try_wait() {
                Ok(Some(status)) if status.success() => child = None,
                Ok(Some(status)) => {
                    return Err(TransportError::ServiceExitedEarly {
                        log: paths.log_file.clone(),
                        status,
                    })
                }
                Ok(None) => {}
                Err(_) => child = None,
            }
        }
        if Instant::now() >= deadline {
            if let Some(child) = child.take() {
                reap_in_background(child);
            }
            return Err(TransportError::StartTimedOut {
                log: paths.log_file,
                waited: wait,
            });
        }
    }
}

/// Waits for a started service in a detached thread, so it does not stay a zombie after it
/// exits while this requester lives on.
fn reap_in_background(mut child: Child) {
    let _ = thread::Builder::new()
        .name("service-reaper".to_string())
        .spawn(move || {
            let _ = child.wait();
        });
}

/// Spawns `command` as a detached service process: stdin and stdout null, stderr appended to
/// `log_file` (so panics land in the service log), and a new session (`setsid`), so the
/// terminal's signals and hang-up do not reach it. Meant for the `start` closure of
/// [`connect_or_start`]:
///
/// ```no_run
/// # use std::path::Path;
/// # use diskshadow::service::transport::{connect_or_start, spawn_detached, ServicePaths};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Path::new("/tmp/store");
/// let start = || {
///     let mut command = std::process::Command::new(std::env::current_exe()?);
///     command.args(["service", "run", "--store"]).arg(store);
///     spawn_detached(command, &ServicePaths::for_store(store).log_file)
/// };
/// let client = connect_or_start(store, &start)?;
/// # Ok(()) }
/// ```
pub fn spawn_detached(mut command: Command, log_file: &Path) -> io::Result<Child> {
    if let Some(directory) = log_file.parent() {
        crate::engine::store::create_private_dir_all(directory)?;
    }
    let log = crate::engine::store::private_open_options()
        .create(true)
        .append(true)
        .open(log_file)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: the closure runs between fork and exec and only calls setsid(2), which is
    // async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}
