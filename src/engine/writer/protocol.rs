//! The JSON-lines vocabulary of `docs/writer-protocol.md`: events, error codes, and how one line
//! from a writer is read.

use std::fmt;

use serde_json::{Map, Value};

use crate::engine::vss::{VssCode, WriterState};

/// A writer event, in the order of a backup (`docs/writer-protocol.md`, "Events").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriterEvent {
    Identify,
    PrepareBackup,
    PrepareSnapshot,
    Freeze,
    Thaw,
    PostSnapshot,
    BackupComplete,
    BackupShutdown,
    Abort,
    PreRestore,
    PostRestore,
}

impl WriterEvent {
    pub const ALL: [WriterEvent; 11] = [
        WriterEvent::Identify,
        WriterEvent::PrepareBackup,
        WriterEvent::PrepareSnapshot,
        WriterEvent::Freeze,
        WriterEvent::Thaw,
        WriterEvent::PostSnapshot,
        WriterEvent::BackupComplete,
        WriterEvent::BackupShutdown,
        WriterEvent::Abort,
        WriterEvent::PreRestore,
        WriterEvent::PostRestore,
    ];

    /// The `event` field on the wire.
    pub fn protocol_name(self) -> &'static str {
        match self {
            WriterEvent::Identify => "identify",
            WriterEvent::PrepareBackup => "prepare_backup",
            WriterEvent::PrepareSnapshot => "prepare_snapshot",
            WriterEvent::Freeze => "freeze",
            WriterEvent::Thaw => "thaw",
            WriterEvent::PostSnapshot => "post_snapshot",
            WriterEvent::BackupComplete => "backup_complete",
            WriterEvent::BackupShutdown => "backup_shutdown",
            WriterEvent::Abort => "abort",
            WriterEvent::PreRestore => "pre_restore",
            WriterEvent::PostRestore => "post_restore",
        }
    }

    pub fn from_protocol_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|event| event.protocol_name() == name)
    }

    /// The VSS handler name (`OnFreeze`), for messages.
    pub fn handler_name(self) -> &'static str {
        match self {
            WriterEvent::Identify => "OnIdentify",
            WriterEvent::PrepareBackup => "OnPrepareBackup",
            WriterEvent::PrepareSnapshot => "OnPrepareSnapshot",
            WriterEvent::Freeze => "OnFreeze",
            WriterEvent::Thaw => "OnThaw",
            WriterEvent::PostSnapshot => "OnPostSnapshot",
            WriterEvent::BackupComplete => "OnBackupComplete",
            WriterEvent::BackupShutdown => "OnBackupShutdown",
            WriterEvent::Abort => "OnAbort",
            WriterEvent::PreRestore => "OnPreRestore",
            WriterEvent::PostRestore => "OnPostRestore",
        }
    }

    /// `VSS_WS_FAILED_AT_<EVENT>`. An abort that fails leaves the writer failed where it was;
    /// VSS has no FAILED_AT_ABORT state, so it is reported as failed at freeze.
    pub fn failed_state(self) -> WriterState {
        match self {
            WriterEvent::Identify => WriterState::VSS_WS_FAILED_AT_IDENTIFY,
            WriterEvent::PrepareBackup => WriterState::VSS_WS_FAILED_AT_PREPARE_BACKUP,
            WriterEvent::PrepareSnapshot => WriterState::VSS_WS_FAILED_AT_PREPARE_SNAPSHOT,
            WriterEvent::Freeze | WriterEvent::Abort => WriterState::VSS_WS_FAILED_AT_FREEZE,
            WriterEvent::Thaw => WriterState::VSS_WS_FAILED_AT_THAW,
            WriterEvent::PostSnapshot => WriterState::VSS_WS_FAILED_AT_POST_SNAPSHOT,
            WriterEvent::BackupComplete => WriterState::VSS_WS_FAILED_AT_BACKUP_COMPLETE,
            WriterEvent::BackupShutdown => WriterState::VSS_WS_FAILED_AT_BACKUPSHUTDOWN,
            WriterEvent::PreRestore => WriterState::VSS_WS_FAILED_AT_PRE_RESTORE,
            WriterEvent::PostRestore => WriterState::VSS_WS_FAILED_AT_POST_RESTORE,
        }
    }

    /// The state a writer is in after answering this event with `ok`.
    pub fn state_after_success(self) -> WriterState {
        match self {
            WriterEvent::PrepareSnapshot => WriterState::VSS_WS_WAITING_FOR_FREEZE,
            WriterEvent::Freeze => WriterState::VSS_WS_WAITING_FOR_THAW,
            WriterEvent::Thaw => WriterState::VSS_WS_WAITING_FOR_POST_SNAPSHOT,
            WriterEvent::PostSnapshot => WriterState::VSS_WS_WAITING_FOR_BACKUP_COMPLETE,
            _ => WriterState::VSS_WS_STABLE,
        }
    }
}

impl fmt::Display for WriterEvent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.protocol_name())
    }
}

/// The `error` values a writer may answer with (VSS_E_WRITERERROR_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriterErrorCode {
    Retryable,
    Nonretryable,
    Timeout,
    OutOfResources,
    InconsistentSnapshot,
    PartialFailure,
    RecoveryFailed,
}

impl WriterErrorCode {
    pub const ALL: [WriterErrorCode; 7] = [
        WriterErrorCode::Retryable,
        WriterErrorCode::Nonretryable,
        WriterErrorCode::Timeout,
        WriterErrorCode::OutOfResources,
        WriterErrorCode::InconsistentSnapshot,
        WriterErrorCode::PartialFailure,
        WriterErrorCode::RecoveryFailed,
    ];

    pub fn protocol_name(self) -> &'static str {
        match self {
            WriterErrorCode::Retryable => "retryable",
            WriterErrorCode::Nonretryable => "nonretryable",
            WriterErrorCode::Timeout => "timeout",
            WriterErrorCode::OutOfResources => "out_of_resources",
            WriterErrorCode::InconsistentSnapshot => "inconsistent_snapshot",
            WriterErrorCode::PartialFailure => "partial_failure",
            WriterErrorCode::RecoveryFailed => "recovery_failed",
        }
    }

    pub fn from_protocol_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|code| code.protocol_name() == name)
    }

    pub fn vss_code(self) -> VssCode {
        match self {
            WriterErrorCode::Retryable => VssCode::VSS_E_WRITERERROR_RETRYABLE,
            WriterErrorCode::Nonretryable => VssCode::VSS_E_WRITERERROR_NONRETRYABLE,
            WriterErrorCode::Timeout => VssCode::VSS_E_WRITERERROR_TIMEOUT,
            WriterErrorCode::OutOfResources => VssCode::VSS_E_WRITERERROR_OUTOFRESOURCES,
            WriterErrorCode::InconsistentSnapshot => {
                VssCode::VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT
            }
            WriterErrorCode::PartialFailure => VssCode::VSS_E_WRITERERROR_PARTIAL_FAILURE,
            WriterErrorCode::RecoveryFailed => VssCode::VSS_E_WRITERERROR_RECOVERY_FAILED,
        }
    }
}

/// One line a writer wrote on its standard output, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum WriterLine {
    /// `{"id": N, "ok": true, ...}`: the other fields, without `id` and `ok`.
    Success { id: u64, fields: Map<String, Value> },
    /// `{"id": N, "ok": false, "error": "...", "message": "..."}`.
    Failure {
        id: u64,
        error: String,
        message: String,
    },
    /// `{"log": "..."}` with no `id`.
    Log(String),
    /// Anything else: not JSON, not an object, or an object that is neither an answer nor a log.
    /// It makes the writer fail the current event.
    Invalid { line: String, reason: String },
}

impl WriterLine {
    pub fn parse(line: &str) -> Self {
        let invalid = |reason: &str| WriterLine::Invalid {
            line: line.to_string(),
            reason: reason.to_string(),
        };
        let mut object = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return invalid("the line is JSON but not an object"),
            Err(_) => return invalid("the line is not JSON"),
        };
        let id = match object.remove("id") {
            None => {
                return match object.get("log") {
                    Some(Value::String(text)) => WriterLine::Log(text.clone()),
                    Some(other) => WriterLine::Log(other.to_string()),
                    None => invalid("the object has neither `id` nor `log`"),
                };
            }
            Some(Value::Number(number)) => match number.as_u64() {
                Some(id) => id,
                None => return invalid("`id` is not a non-negative integer"),
            },
            Some(_) => return invalid("`id` is not a number"),
        };
        match object.remove("ok") {
            Some(Value::Bool(true)) => WriterLine::Success { id, fields: object },
            Some(Value::Bool(false)) => {
                let error = match object.get("error") {
                    Some(Value::String(error)) => error.clone(),
                    _ => String::new(),
                };
                let message = match object.get("message") {
                    Some(Value::String(message)) => message.clone(),
                    _ => String::new(),
                };
                WriterLine::Failure { id, error, message }
            }
            _ => invalid("`ok` is missing or not a boolean"),
        }
    }
}

/// Builds the request line `{"id": N, "event": "...", ...fields}` (without the newline).
pub fn request_line(id: u64, event: WriterEvent, fields: &Map<String, Value>) -> String {
    let mut object = Map::new();
    object.insert("id".to_string(), Value::from(id));
    object.insert("event".to_string(), Value::from(event.protocol_name()));
    for (key, value) in fields {
        object.insert(key.clone(), value.clone());
    }
    Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_answers_logs_or_invalid() {
        assert!(matches!(WriterLine::parse(r#"{"id":3,"ok":true,"x":1}"#),
            WriterLine::Success { id: 3, fields } if fields.get("x") == Some(&Value::from(1))));
        assert_eq!(
            WriterLine::parse(r#"{"id":4,"ok":false,"error":"retryable","message":"busy"}"#),
            WriterLine::Failure {
                id: 4,
                error: "retryable".into(),
                message: "busy".into()
            }
        );
        assert_eq!(
            WriterLine::parse(r#"{"log":"flushed"}"#),
            WriterLine::Log("flushed".into())
        );
        assert!(matches!(
            WriterLine::parse("garbage"),
            WriterLine::Invalid { .. }
        ));
        assert!(matches!(
            WriterLine::parse(r#"{"id":1}"#),
            WriterLine::Invalid { .. }
        ));
        assert!(matches!(
            WriterLine::parse(r#"{"hello":1}"#),
            WriterLine::Invalid { .. }
        ));
    }

    #[test]
    fn every_error_code_maps_to_its_writer_error_hresult() {
        for code in WriterErrorCode::ALL {
            assert_eq!(
                WriterErrorCode::from_protocol_name(code.protocol_name()),
                Some(code)
            );
            assert!(code.vss_code().name().starts_with("VSS_E_WRITERERROR_"));
        }
        assert_eq!(WriterErrorCode::from_protocol_name("oops"), None);
    }

    #[test]
    fn requests_carry_id_event_and_fields() {
        let mut fields = Map::new();
        fields.insert("deadline_ms".into(), Value::from(1000));
        let line = request_line(7, WriterEvent::Freeze, &fields);
        let value: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["id"], 7);
        assert_eq!(value["event"], "freeze");
        assert_eq!(value["deadline_ms"], 1000);
    }
}
