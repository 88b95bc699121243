//! The adapters from the engine's observer and progress to the requester's
//! [`ServiceObserver`].

use std::sync::Mutex;
use std::time::Duration;

use crate::engine::coordinator::{EngineObserver, StepDecision};
use crate::engine::progress::{CancelToken, Progress};
use crate::engine::writer::host::{EventFailure, WriterStatus};
use crate::engine::writer::protocol::WriterEvent;
use crate::service::api::WriterStatusView;
use crate::service::events::ServiceObserver;
use crate::service::events::WriterReply;

/// Forwards engine progress to an observer, and a stop the requester asked for (by
/// [`crate::service::ShadowService::cancel`], or its observer's [`ServiceObserver::stop_requested`] in
/// process) to the engine. The engine's progress trait is `Sync`, so the observer sits
/// behind a mutex.
pub(super) struct ObserverProgress<'o> {
    observer: std::sync::Mutex<&'o mut dyn ServiceObserver>,
    stop: CancelToken,
}

impl<'o> ObserverProgress<'o> {
    pub(super) fn new(observer: &'o mut dyn ServiceObserver, stop: CancelToken) -> Self {
        Self {
            observer: std::sync::Mutex::new(observer),
            stop,
        }
    }
}

/// The stop asked for either way: the token fired by a `cancel` request, or the in-process
/// requester's wish (latched into the token).
pub(super) fn stop_asked(stop: &CancelToken, observer: &mut dyn ServiceObserver) -> bool {
    if !stop.is_cancelled() && observer.stop_requested() {
        stop.cancel();
    }
    stop.is_cancelled()
}

impl Progress for ObserverProgress<'_> {
    fn begin(&self, what: &str, total: u64) {
        if let Ok(mut observer) = self.observer.lock() {
            observer.progress_begin(what, total);
        }
    }
    fn advance(&self, units: u64) {
        if let Ok(mut observer) = self.observer.lock() {
            observer.progress_advance(units);
        }
    }
    fn finish(&self) {
        if let Ok(mut observer) = self.observer.lock() {
            observer.progress_end();
        }
    }
    fn cancelled(&self) -> bool {
        match self.observer.lock() {
            Ok(mut observer) => stop_asked(&self.stop, &mut **observer),
            Err(_) => self.stop.is_cancelled(),
        }
    }
}

/// Hears the coordinator and tells the requester's observer; also keeps the creation log for
/// the metadata file. The coordinator calls it through `&self`, so the observer sits behind a
/// mutex.
pub(super) struct CoordinatorBridge<'o> {
    observer: Mutex<&'o mut dyn ServiceObserver>,
    step: bool,
    log: Mutex<Vec<String>>,
    /// Stops the full copies after thaw, the one part of a creation that can stop.
    stop: CancelToken,
}

impl<'o> CoordinatorBridge<'o> {
    pub(super) fn new(
        observer: &'o mut dyn ServiceObserver,
        step: bool,
        stop: CancelToken,
    ) -> Self {
        Self {
            observer: Mutex::new(observer),
            step,
            log: Mutex::new(Vec::new()),
            stop,
        }
    }

    fn with<R>(&self, work: impl FnOnce(&mut dyn ServiceObserver) -> R) -> R {
        let mut observer = self
            .observer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut **observer)
    }

    pub(super) fn record(&self, line: &str) {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line.to_string());
    }
}

/// A full copy (plex) inside the commit reports its progress to the requester.
impl Progress for CoordinatorBridge<'_> {
    fn begin(&self, what: &str, total: u64) {
        self.with(|observer| observer.progress_begin(what, total));
    }
    fn advance(&self, units: u64) {
        self.with(|observer| observer.progress_advance(units));
    }
    fn finish(&self) {
        self.with(|observer| observer.progress_end());
    }
    fn cancelled(&self) -> bool {
        self.with(|observer| stop_asked(&self.stop, observer))
    }
}

impl EngineObserver for CoordinatorBridge<'_> {
    fn event_sent(&self, writer: &WriterStatus, event: WriterEvent) {
        let line = format!("Sent {event} to writer \"{}\".", writer.name);
        self.record(&line);
        self.with(|observer| observer.trace_line(&line));
    }

    fn reply_received(
        &self,
        writer: &WriterStatus,
        event: WriterEvent,
        latency: Duration,
        outcome: &Result<(), EventFailure>,
    ) {
        let outcome = outcome
            .as_ref()
            .map(|_| ())
            .map_err(|failure| failure.to_string());
        let reply = WriterReply::new(&writer.name, &event.to_string(), latency, outcome);
        self.record(&reply.line(false));
        self.with(|observer| observer.writer_reply(&reply));
    }

    fn writer_log(&self, writer: &str, line: &str) {
        let line = format!("Writer \"{writer}\" log: {line}");
        self.record(&line);
        self.with(|observer| observer.trace_line(&line));
    }

    fn protocol_violation(&self, writer: &str, description: &str) {
        let line = format!("Warning: writer \"{writer}\" broke the writer protocol: {description}");
        self.record(&line);
        self.with(|observer| observer.line(&line));
    }

    fn verbose(&self, line: &str) {
        self.record(line);
        self.with(|observer| observer.verbose_line(line));
    }

    fn trace(&self, line: &str) {
        self.record(line);
        self.with(|observer| observer.trace_line(line));
    }

    fn before_event(
        &self,
        event: WriterEvent,
        writers: &[WriterStatus],
        freeze_left: Option<Duration>,
    ) -> StepDecision {
        if !self.step {
            return StepDecision::Continue;
        }
        let writers: Vec<WriterStatusView> = writers.iter().cloned().map(status_view).collect();
        if self.with(|observer| observer.step(&event.to_string(), &writers, freeze_left)) {
            StepDecision::Continue
        } else {
            StepDecision::Abort
        }
    }

    fn log_text(&self) -> String {
        let log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut text = log.join("\r\n");
        text.push_str("\r\n");
        text
    }

    fn progress(&self) -> &dyn Progress {
        self
    }
}

/// A writer's state as the API shows it.
pub(super) fn status_view(status: WriterStatus) -> WriterStatusView {
    WriterStatusView {
        name: status.name,
        writer_id: status.writer_id,
        instance_id: status.instance_id,
        state: status.state,
        failure: status.failure,
    }
}
