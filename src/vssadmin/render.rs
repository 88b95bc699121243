//! The Windows tool's words: sizes, volume labels, context types, writer states and errors, and
//! the observer that passes the service's lines through.

use super::Outcome;
use crate::service::model::VolumeInfo;
use crate::service::vss::{Context, VssCode, WriterState};
use crate::service::ServiceObserver;

/// Shows the service's lines (what a revert detached, say) and nothing of verbose mode or
/// progress.
pub(super) struct LineObserver<'a> {
    pub(super) outcome: &'a mut Outcome,
}

impl ServiceObserver for LineObserver<'_> {
    fn verbose_line(&mut self, _line: &str) {}
    fn line(&mut self, line: &str) {
        self.outcome.out(line);
    }
    fn progress_begin(&mut self, _what: &str, _total: u64) {}
    fn progress_advance(&mut self, _units: u64) {}
    fn progress_end(&mut self) {}
}

/// `20.2 GB`, as vssadmin shows sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(super) fn volume_label(volume: &VolumeInfo) -> String {
    match volume.drive_letter {
        Some(letter) => format!("({letter}:){}", volume.device_name()),
        None => format!("({}){}", volume.path.display(), volume.device_name()),
    }
}

pub(super) fn context_type(context: Context) -> &'static str {
    match context {
        Context::ClientAccessible => "ClientAccessible",
        Context::Persistent => "ApplicationRollback",
        Context::PersistentNoWriters => "DataVolumeRollback",
        Context::Volatile => "Backup",
        Context::VolatileNoWriters => "FileShareBackup",
    }
}

/// vssadmin's words for a writer state: `[1] Stable`, `[5] Waiting for completion`, `[9] Failed`.
pub(super) fn writer_state_text(state: WriterState) -> String {
    let words = match state {
        WriterState::VSS_WS_STABLE => "Stable",
        WriterState::VSS_WS_WAITING_FOR_FREEZE => "Waiting for freeze",
        WriterState::VSS_WS_WAITING_FOR_THAW => "Waiting for thaw",
        WriterState::VSS_WS_WAITING_FOR_POST_SNAPSHOT => "Waiting for post snapshot",
        WriterState::VSS_WS_WAITING_FOR_BACKUP_COMPLETE => "Waiting for completion",
        WriterState::VSS_WS_UNKNOWN => "Unknown",
        _ => "Failed",
    };
    format!("[{}] {words}", state.value())
}

/// vssadmin's words for a writer's last error.
pub(super) fn writer_error_text(failure: Option<VssCode>) -> &'static str {
    match failure {
        None => "No error",
        Some(VssCode::VSS_E_WRITERERROR_RETRYABLE) => "Retryable error",
        Some(VssCode::VSS_E_WRITERERROR_NONRETRYABLE) => "Non-retryable error",
        Some(VssCode::VSS_E_WRITERERROR_TIMEOUT) | Some(VssCode::VSS_E_WRITER_NOT_RESPONDING) => {
            "Timed out"
        }
        Some(VssCode::VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT) => "Inconsistent shadow copy",
        Some(VssCode::VSS_E_WRITERERROR_OUTOFRESOURCES) => "Out of resources",
        Some(_) => "Unexpected error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_with_one_decimal() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(20 * (1 << 30) + (1 << 29)), "20.5 GB");
    }
}
