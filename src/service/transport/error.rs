//! The one error type of the service transport: connecting, serving, framing and auto-start.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::wire::RemoteErrorKind;

/// Everything that can go wrong between a requester and the service process.
///
/// None of these are VSS failures: they say that the service could not be reached or spoke
/// out of turn, so they carry no `VssCode`. Errors of the engine travel inside the handler's
/// response type instead.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Another service process holds the store's lock. `service run` should exit quietly
    /// (status 0) on this error: it is how the loser of a start race learns it lost.
    #[error("a diskshadow service is already running for the store {}{}", store.display(), pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    AlreadyRunning { store: PathBuf, pid: Option<u32> },

    /// The store directory could not be created or opened.
    #[error("cannot prepare the store directory {}: {source}", path.display())]
    StoreDirectory { path: PathBuf, source: io::Error },

    /// The lock file could not be opened or locked for a reason other than contention.
    #[error("cannot lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },

    /// The service log could not be opened for appending.
    #[error("cannot open the service log {}: {source}", path.display())]
    Log { path: PathBuf, source: io::Error },

    /// A socket path does not fit in `sun_path` (107 bytes plus the terminating zero).
    #[error("the socket path {} is {length} bytes long; Unix sockets allow at most {limit}", path.display())]
    SocketPathTooLong {
        path: PathBuf,
        length: usize,
        limit: usize,
    },

    /// No directory for a fallback socket could be prepared.
    #[error("cannot prepare a directory for the service socket {}: {source}", path.display())]
    SocketDirectory { path: PathBuf, source: io::Error },

    /// A live service already listens on this socket path.
    #[error("another service is already listening on {}", path.display())]
    AddressInUse { path: PathBuf },

    /// Binding or listening on the socket failed.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },

    /// Reading or writing the socket-address file `service.addr` failed.
    #[error("cannot use the socket address file {}: {source}", path.display())]
    AddressFile { path: PathBuf, source: io::Error },

    /// The server's own machinery (wake-up pipe, poll, thread start) failed.
    #[error("the service could not {action}: {source}")]
    ServerSetup {
        action: &'static str,
        source: io::Error,
    },

    /// Connecting to the service socket failed (no service, or a stale socket).
    #[error("cannot connect to the diskshadow service at {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },

    /// Writing a frame to the peer failed.
    #[error("cannot send to the {peer}: {source}")]
    Send {
        peer: &'static str,
        source: io::Error,
    },

    /// Reading a frame from the peer failed.
    #[error("cannot receive from the {peer}: {source}")]
    Receive {
        peer: &'static str,
        source: io::Error,
    },

    /// The peer closed the connection while a frame was expected.
    #[error("the {peer} closed the connection")]
    ConnectionClosed { peer: &'static str },

    /// The peer sent a line that is not a frame of this protocol.
    #[error("the {peer} sent a malformed frame: {message}")]
    MalformedFrame { peer: &'static str, message: String },

    /// The service speaks another protocol version (an older or newer diskshadow binary).
    #[error("the service speaks protocol version {theirs}, this program speaks {ours}; stop the old service (`diskshadow service stop`) and retry")]
    ProtocolMismatch { ours: u32, theirs: u32 },

    /// The service refused a request (malformed, out of turn) or its handler panicked.
    #[error("the service rejected the request ({kind}): {message}")]
    Remote {
        kind: RemoteErrorKind,
        message: String,
    },

    /// The service refused this user (its peer check, or the socket's mode).
    #[error("{message}")]
    AccessDenied { message: String },

    /// A value could not be turned into JSON, or JSON into the expected type.
    #[error("cannot {action}: {source}")]
    Json {
        action: &'static str,
        source: serde_json::Error,
    },

    /// The requester answered an `ask` with no answer.
    #[error("the requester gave no answer to the question")]
    AskDeclined,

    /// This event sink has no requester that could answer a question.
    #[error("this request has no interactive requester to ask")]
    AskUnavailable,

    /// Running the start command for the service failed.
    #[error("cannot start the diskshadow service: {source} (see the log {})", log.display())]
    StartFailed { log: PathBuf, source: io::Error },

    /// The started service exited with a failure before anyone could connect.
    #[error("the diskshadow service exited with {status} before it accepted connections; see the log {}", log.display())]
    ServiceExitedEarly { log: PathBuf, status: ExitStatus },

    /// The service did not accept connections within the bounded wait.
    #[error("the diskshadow service did not come up within {} ms; see the log {}", waited.as_millis(), log.display())]
    StartTimedOut { log: PathBuf, waited: Duration },
}

impl TransportError {
    /// True when the error says another service owns the store (see [`TransportError::AlreadyRunning`]).
    pub fn is_already_running(&self) -> bool {
        matches!(self, TransportError::AlreadyRunning { .. })
    }
}
