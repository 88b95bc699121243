//! What the server's parts share: the [`Handler`] it runs, its sessions and state
//! ([`Control`]), why it stopped, and the guard it drops last. The server (`server`) builds them,
//! the accept loop (`accept`) and each session (`connection`) use them.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::access::AccessControl;
use super::events::{lock_ignoring_poison, EventSink};
use super::log::ServiceLog;
use super::wire::ServiceStatus;

/// How long a stop waits for running requests to finish before it cuts their connections.
pub const STOP_GRACE_PERIOD: Duration = Duration::from_secs(30);

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

/// Why a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// No session and no keep-alive for the idle timeout.
    IdleTimeout,
    /// [`ServerHandle::stop`](super::ServerHandle::stop) or a requester's stop request.
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

pub(super) struct ServerState {
    /// A clone of each connected session's stream, so a stop can shut its reading side.
    pub(super) sessions: HashMap<SessionId, UnixStream>,
    pub(super) next_session: u64,
    /// When the service last became idle; `None` while it is busy.
    pub(super) idle_since: Option<Instant>,
}

/// The part of a server that does not depend on the handler type.
pub(super) struct Control {
    pub(super) stop_requested: AtomicBool,
    pub(super) wake_writer: UnixStream,
    pub(super) state: Mutex<ServerState>,
    pub(super) started: Instant,
    pub(super) started_at: chrono::DateTime<chrono::Utc>,
    pub(super) socket_path: PathBuf,
    pub(super) store: Option<PathBuf>,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) log: Option<Arc<ServiceLog>>,
    /// Who may connect, checked on every accepted connection.
    pub(super) access: AccessControl,
}

impl Control {
    pub(super) fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        // The wake-up stream is non-blocking: if its buffer is full a wake-up is already due.
        let _ = (&self.wake_writer).write(&[1]);
    }

    pub(super) fn status(&self) -> ServiceStatus {
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

pub(super) struct Shared<H> {
    pub(super) handler: Arc<H>,
    pub(super) control: Arc<Control>,
}

/// What a server holds for its life and drops last, after its socket is gone: the store's lock
/// when it serves a store (`store.rs`), so the socket path stays its own until then.
pub(crate) type StoreGuard = Box<dyn Send>;
