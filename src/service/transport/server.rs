//! The generic server: [`serve`] binds the socket and starts the accept loop (`accept`), which
//! runs one thread per requester session (`connection`), the idle timer and graceful stop;
//! a request's events travel through its [`EventSink`] (`events`); what these parts share is in
//! `control`. It knows nothing of the request types; a [`Handler`] supplies them.
//!
//! **Invariants:**
//! - [`Handler::session_ended`] is called exactly once per session, after its last `handle`
//!   returned, whether the requester closed cleanly, was killed, or the service is stopping.
//! - The server unlinks its socket file only if the file is still the one it bound, and before
//!   the store lock (if any) is released, so it never removes a successor's socket.
//! - The idle timer runs only while no session is connected and the handler says nothing
//!   outlives requesters; any session or keep-alive resets it.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::access::AccessControl;
use super::error::TransportError;
use super::log::{log_to, ServiceLog};
use super::signals;
use super::wire::ServiceStatus;

use super::accept::AcceptLoop;
pub(crate) use super::control::StoreGuard;
use super::control::{Control, ServerState, Shared};
pub use super::control::{Handler, SessionId, StopReason};
pub use super::events::{EventSink, Incoming};

/// The longest socket path that fits in `sockaddr_un.sun_path` with its terminating zero.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The idle timeout of a service started with default options, as VSS's `IdleTimeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(180);

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
