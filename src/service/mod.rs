//! The service API: what a requester (the shell, `vssadmin`, `diskshadow volume …`) may ask of
//! the service that owns a store. One trait, [`ShadowService`], implemented in-process by
//! [`local::LocalService`] and over the store's Unix socket by the client in `remote`. The
//! trait, the wire requests, the service's dispatch and the client come from one table
//! ([`protocol`]); what a running request reports travels as [`events::Event`]s.
//!
//! **Architecture Invariant:** requesters reach the engine only through this trait, so the same
//! session code runs in-process (tests) and against the service process (users). Like the
//! engine, the service never prints: it returns data and typed errors that requesters render.

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::dbg_macro)]

pub mod api;
pub mod error;
pub mod events;
pub mod exposure;
pub mod file_io;
pub mod local;
pub mod protocol;
pub mod refused;
pub mod remote;
pub mod transport;
pub mod way_out;

/// This host's name, as VSS shows the originating machine.
pub use crate::engine::core::host_name;
/// Whether a volume name is an RBD image of an attached Ceph pool (`rbd:POOL/IMAGE`), which
/// names no local file.
pub use crate::engine::rbd::file::is_volume_path as is_rbd_volume;
/// The vocabulary the API is spoken in (identifiers, the records it returns, VSS's codes,
/// contexts and limits), as the engine defines it. Requesters (the session, vssadmin) name
/// these types from here and never reach into the engine (tests/layering.rs).
pub use crate::engine::writer::metadata as writer_metadata;
pub use crate::engine::{ids, model, vss};
pub use api::*;
pub use error::{ServiceError, ServiceErrorKind};
pub use events::{ServiceObserver, SilentObserver};
