//! Writers: their registrations, their processes and the JSON-lines protocol spoken with them
//! (`docs/writer-protocol.md`).

pub mod host;
pub mod metadata;
pub mod protocol;
pub mod registration;

pub use host::{
    EngineObserver, EventFailure, EventReply, EventRequest, HostOptions, SilentObserver,
    StepDecision, WriterHost, WriterIndex, WriterStatus,
};
pub use metadata::WriterMetadata;
pub use protocol::{WriterErrorCode, WriterEvent};
pub use registration::{
    load_registrations, Registration, RegistrationError, RegistrationProblem, RegistrationSet,
};
