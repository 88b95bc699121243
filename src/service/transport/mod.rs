//! The service process plumbing: JSON lines over a Unix stream socket, one requester session
//! per connection, one service per store, auto-start and idle exit.
//!
//! The transport is generic over the request and response types: the integrator implements
//! [`Handler`] for the engine and the session layer calls [`Client::call`] with its request
//! type. The wire format is described in [`wire`]; the store files (`service.lock`,
//! `service.sock`, `service.addr`, `service.log`) in [`store`]; who may connect in [`access`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use diskshadow::service::transport::{
//!     connect_or_start, serve_store, EventSink, Handler, ServerOptions, SessionId,
//! };
//!
//! struct Echo;
//! impl Handler for Echo {
//!     type Request = String;
//!     type Response = String;
//!     fn handle(&self, _session: SessionId, request: String, events: &EventSink) -> String {
//!         let _ = events.send(serde_json::json!({"progress": 50}));
//!         request
//!     }
//!     fn session_ended(&self, _session: SessionId) {}
//!     fn keeps_service_alive(&self) -> bool { false }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = std::path::Path::new("/tmp/store");
//! // In `diskshadow service run`:
//! let server = serve_store(store, Arc::new(Echo), ServerOptions {
//!     handle_termination_signals: true,
//!     ..ServerOptions::default()
//! })?;
//! let _reason = server.wait();
//! // In a requester:
//! let mut client = connect_or_start(store, &|| std::process::Command::new("diskshadow").spawn())?;
//! let reply: String = client.call(&"hello", &mut |_event| None)?;
//! # Ok(()) }
//! ```

mod accept;
pub mod access;
mod client;
mod connection;
mod control;
mod descriptor;
mod error;
mod events;
mod log;
mod server;
mod signals;
pub mod store;
pub mod wire;

pub use client::{
    connect_or_start, connect_or_start_within, spawn_detached, Client, DEFAULT_START_WAIT,
};
pub use control::STOP_GRACE_PERIOD;
pub use error::TransportError;
pub use log::ServiceLog;
pub use server::{
    serve, EventSink, Handler, Incoming, ServerHandle, ServerOptions, SessionId, StopReason,
    DEFAULT_IDLE_TIMEOUT, MAX_SOCKET_PATH_BYTES,
};
pub use store::{serve_store, ServicePaths};
pub use wire::{RemoteErrorKind, ServiceStatus, PROTOCOL_VERSION};
