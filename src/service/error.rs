//! The one error type that crosses the service boundary. Engine errors are mapped into it with
//! their VSS code and a way out, so the shell can show them the same way in-process and remote.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::engine::vss::VssCode;

/// What kind of failure, for exit codes and rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceErrorKind {
    /// The request named something that does not exist (shadow, volume, drive, writer).
    NotFound,
    /// The request is invalid in the current state or context.
    Invalid,
    /// The operation is known but this build cannot do it.
    NotSupported,
    /// A writer failed or vetoed.
    Writer,
    /// I/O or durability failure in the store.
    Io,
    /// The service could not be reached or broke the protocol.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceError {
    pub kind: ServiceErrorKind,
    pub code: Option<VssCode>,
    /// Names the problem, in one sentence.
    pub message: String,
    /// A way out, in one sentence.
    pub help: Option<String>,
}

impl ServiceError {
    pub fn new(kind: ServiceErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_code(mut self, code: VssCode) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the help to an engine failure's way out, when it has one (it is more precise
    /// than a help the caller chose for the whole kind of failure).
    pub fn with_way_out(mut self, way_out: Option<String>) -> Self {
        if way_out.is_some() {
            self.help = way_out;
        }
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ServiceErrorKind::NotFound, message).with_code(VssCode::VSS_E_OBJECT_NOT_FOUND)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ServiceErrorKind::Invalid, message)
    }

    /// For commands the language has but this build cannot carry out: said plainly, never
    /// pretended.
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(ServiceErrorKind::NotSupported, message).with_code(VssCode::VSS_E_NOT_SUPPORTED)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ServiceErrorKind::Io, message)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.message)?;
        if let Some(code) = self.code {
            write!(formatter, " [{code}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServiceError {}
