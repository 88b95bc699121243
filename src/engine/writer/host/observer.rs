//! The engine's one observer: what a creation, a restore or a writer exchange reports while it
//! runs. The writer host hears the traffic first, so the trait lives beside the writer states it
//! names; the coordinator adds its verbose and trace lines and the step decision, a creation its
//! log and progress. Every method has a default that ignores it, so an observer implements what
//! it cares about. The service turns it into its requester's `ServiceObserver`.

use std::time::Duration;

use super::{EventFailure, WriterStatus};
use crate::engine::progress::{NoProgress, Progress};
use crate::engine::writer::protocol::WriterEvent;

/// Whether to go on at a step (the shell's step-through mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDecision {
    Continue,
    Abort,
}

/// Hears the engine's work.
///
/// The writer-traffic methods are called while the host is busy with an exchange: they must
/// not call back into the [`super::WriterHost`] (that would wait for the exchange to end,
/// forever).
pub trait EngineObserver {
    /// The host sent `event` to `writer`.
    fn event_sent(&self, _writer: &WriterStatus, _event: WriterEvent) {}
    /// `writer` answered `event` (or failed it) after `latency`.
    fn reply_received(
        &self,
        _writer: &WriterStatus,
        _event: WriterEvent,
        _latency: Duration,
        _outcome: &Result<(), EventFailure>,
    ) {
    }
    /// A `{"log": ...}` line or a line of standard error.
    fn writer_log(&self, _writer: &str, _line: &str) {}
    /// A line that broke the protocol without failing an event (an answer to a request that
    /// was not the current one).
    fn protocol_violation(&self, _writer: &str, _description: &str) {}
    /// A line DiskShadow prints in verbose mode (writer inclusion and exclusion).
    fn verbose(&self, _line: &str) {}
    /// A line of the writer trace for writer developers (not DiskShadow's): what the
    /// coordinator does around the writers, such as holding a file system's writes.
    fn trace(&self, _line: &str) {}
    /// Called before each writer event is sent to the participating writers. While writers
    /// are frozen (from Freeze until Thaw is sent), `freeze_left` is what remains of their
    /// freeze deadline: a step prompt must not hold them past it unless asked to.
    fn before_event(
        &self,
        _event: WriterEvent,
        _writers: &[WriterStatus],
        _freeze_left: Option<Duration>,
    ) -> StepDecision {
        StepDecision::Continue
    }
    /// A creation's log so far (CRLF lines), for the metadata file; empty when not kept.
    fn log_text(&self) -> String {
        String::new()
    }
    /// Where a creation reports the progress of its commit and full copies, and asks whether
    /// the requester wants them stopped.
    fn progress(&self) -> &dyn Progress {
        &NoProgress
    }
}

/// An observer that hears nothing and always continues.
#[derive(Debug, Default, Clone, Copy)]
pub struct SilentObserver;

impl EngineObserver for SilentObserver {}
