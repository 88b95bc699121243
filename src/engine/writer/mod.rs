//! Writers: their registrations, their processes and the JSON-lines protocol spoken with them
//! (`docs/writer-protocol.md`).

pub mod host;
pub mod metadata;
pub mod protocol;
pub mod registration;

pub use host::{
    EventFailure, EventReply, EventRequest, HostOptions, IgnoreWriterTraffic, WriterHost,
    WriterIndex, WriterObserver, WriterStatus,
};
pub use metadata::WriterMetadata;
pub use protocol::{WriterErrorCode, WriterEvent};
pub use registration::{
    load_registrations, Registration, RegistrationError, RegistrationProblem, RegistrationSet,
};
