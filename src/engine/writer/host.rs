//! Writer processes: started on first need, kept running, spoken to in JSON lines
//! (`spec/writer-protocol.md`, "Transport"), with their VSS_WRITER_STATE.
//!
//! **Invariants:**
//! - A writer that does not answer in time, or whose process ends, fails the event it was given
//!   (`VSS_WS_FAILED_AT_<EVENT>`, `VSS_E_WRITER_NOT_RESPONDING`) and its process is stopped; it
//!   is started again the next time it is identified.
//! - Only `identify` and the restore events start a process. Every other event belongs to a
//!   backup that began with `identify`, and a fresh process would not know it.
//! - When the host is dropped, every writer's standard input closes (a writer treats end of
//!   input as `abort`), and a writer that has not exited after a grace period is killed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::metadata::WriterMetadata;
use super::protocol::{request_line, WriterErrorCode, WriterEvent, WriterLine};
use super::registration::{Registration, RegistrationProblem, RegistrationSet};
use crate::engine::clock::{IdSource, RandomIds};
use crate::engine::ids::{WriterId, WriterInstanceId};
use crate::engine::vss::{VssCode, WriterState};

/// Timeouts of the host. Tests shorten them; the defaults are VSS's.
#[derive(Clone)]
pub struct HostOptions {
    /// How long a writer has to answer any event but `freeze` (whose limit is the freeze
    /// deadline).
    pub event_timeout: Duration,
    /// How long a writer has to exit after its standard input closed before it is killed.
    pub shutdown_grace: Duration,
    /// Gives instance IDs to writers whose metadata has none.
    pub ids: Arc<dyn IdSource>,
    /// After a writer misses its deadline, how long to keep listening for its late answer
    /// before stopping it, so a conformance check can report "answered after the deadline".
    /// Zero (the default) stops it at once.
    pub late_answer_grace: Duration,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            event_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(2),
            ids: Arc::new(RandomIds),
            late_answer_grace: Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for HostOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HostOptions")
            .field("event_timeout", &self.event_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("late_answer_grace", &self.late_answer_grace)
            .finish_non_exhaustive()
    }
}

/// A writer's position in the host (registration order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriterIndex(pub usize);

/// What `list writers status` shows of one writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStatus {
    pub index: WriterIndex,
    pub name: String,
    pub writer_id: WriterId,
    /// Known once the writer has been identified.
    pub instance_id: Option<WriterInstanceId>,
    pub state: WriterState,
    /// The failure HRESULT; `None` is S_OK.
    pub failure: Option<VssCode>,
    pub failure_message: Option<String>,
    pub running: bool,
}

impl WriterStatus {
    /// `0x00000000 (S_OK)` or `0x800423F3 (VSS_E_WRITERERROR_RETRYABLE)`, as DiskShadow prints
    /// the writer failure code.
    pub fn failure_code_text(&self) -> String {
        match self.failure {
            None => "0x00000000 (S_OK)".to_string(),
            Some(code) => format!("0x{:08X} ({})", code.hresult(), code.name()),
        }
    }
}

/// Hears what passes between the host and its writers.
///
/// The methods are called while the host is busy with an exchange: they must not call back
/// into the [`WriterHost`] (that would wait for the exchange to end, forever).
pub trait WriterObserver {
    fn event_sent(&self, _writer: &WriterStatus, _event: WriterEvent) {}
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
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoreWriterTraffic;

impl WriterObserver for IgnoreWriterTraffic {}

/// Why a writer failed one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventFailure {
    #[error("the writer vetoed with error '{}': {message}", code.protocol_name())]
    Vetoed {
        code: WriterErrorCode,
        message: String,
    },
    #[error("the writer answered with the unknown error code '{error}': {message}")]
    UnknownErrorCode { error: String, message: String },
    #[error("the writer did not answer within {} ms (not responding)", waited.as_millis())]
    NotResponding { waited: Duration },
    #[error("the writer process ended ({status}) before answering")]
    Exited { status: String },
    #[error("the writer wrote a line that breaks the protocol ({reason}): {line}")]
    InvalidLine { line: String, reason: String },
    #[error("the writer's answer is not valid: {0}")]
    InvalidAnswer(String),
    #[error("the writer could not be started: {0}")]
    StartFailed(String),
    #[error("the writer is not running (it stopped earlier in this backup)")]
    NotRunning,
}

impl EventFailure {
    pub fn vss_code(&self) -> VssCode {
        match self {
            EventFailure::Vetoed { code, .. } => code.vss_code(),
            EventFailure::NotResponding { .. }
            | EventFailure::Exited { .. }
            | EventFailure::NotRunning => VssCode::VSS_E_WRITER_NOT_RESPONDING,
            EventFailure::UnknownErrorCode { .. }
            | EventFailure::InvalidLine { .. }
            | EventFailure::InvalidAnswer(_) => VssCode::VSS_E_UNEXPECTED_WRITER_ERROR,
            EventFailure::StartFailed(_) => VssCode::VSS_E_WRITER_INFRASTRUCTURE,
        }
    }
}

/// One request to send: a writer, its fields and how long it may take.
#[derive(Debug, Clone)]
pub struct EventRequest {
    pub writer: WriterIndex,
    pub fields: Map<String, Value>,
    pub timeout: Duration,
}

/// A writer's answer to one event.
#[derive(Debug, Clone)]
pub struct EventReply {
    pub writer: WriterIndex,
    /// The answer's fields without `id` and `ok`, or why the event failed.
    pub outcome: Result<Map<String, Value>, EventFailure>,
    pub latency: Duration,
}

enum ProcessLine {
    Stdout(String),
    Stderr(String),
    StdoutClosed,
}

struct WriterProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<ProcessLine>,
}

impl WriterProcess {
    fn start(registration: &Registration) -> Result<Self, String> {
        let (program, arguments) = registration
            .command
            .split_first()
            .ok_or_else(|| "the registration has no command".to_string())?;
        let mut command = Command::new(program);
        command
            .args(arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(directory) = &registration.working_dir {
            command.current_dir(directory);
        }
        let mut child = command
            .spawn()
            .map_err(|error| format!("{program}: {error}"))?;
        let stdin = child.stdin.take();
        let (sender, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let sender = sender.clone();
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(ProcessLine::Stdout(line)).is_err() {
                        return;
                    }
                }
                let _ = sender.send(ProcessLine::StdoutClosed);
            });
        }
        if let Some(stderr) = child.stderr.take() {
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(ProcessLine::Stderr(line)).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Closes standard input (the writer's abort signal), waits up to `grace`, then kills.
    /// Returns whether the process exited on its own.
    fn stop(mut self, grace: Duration) -> bool {
        self.stdin = None;
        let deadline = Instant::now() + grace;
        loop {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return true;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    fn exit_status_text(&mut self) -> String {
        // The process closed its output; give it a moment to be reaped so the status is known.
        for _ in 0..50 {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(error) => return error.to_string(),
            }
        }
        "output closed".to_string()
    }
}

struct WriterSlot {
    registration: Registration,
    process: Option<WriterProcess>,
    state: WriterState,
    failure: Option<(VssCode, String)>,
    metadata: Option<WriterMetadata>,
    instance_id: Option<WriterInstanceId>,
    next_request_id: u64,
}

impl WriterSlot {
    fn status(&mut self, index: WriterIndex) -> WriterStatus {
        let running = self.process.as_mut().is_some_and(WriterProcess::is_running);
        WriterStatus {
            index,
            name: self.registration.name.clone(),
            writer_id: self.registration.writer_id,
            instance_id: self.instance_id,
            state: self.state,
            failure: self.failure.as_ref().map(|(code, _)| *code),
            failure_message: self.failure.as_ref().map(|(_, message)| message.clone()),
            running,
        }
    }

    fn record(&mut self, event: WriterEvent, outcome: &Result<(), EventFailure>) {
        match outcome {
            Ok(()) if event == WriterEvent::Identify => {
                self.state = WriterState::VSS_WS_STABLE;
                self.failure = None;
            }
            Ok(()) => {
                if !self.state.is_failed() {
                    self.state = event.state_after_success();
                }
            }
            Err(failure) => {
                self.state = event.failed_state();
                self.failure = Some((failure.vss_code(), failure.to_string()));
            }
        }
    }
}

/// The running writers of one service.
pub struct WriterHost {
    slots: Mutex<Vec<WriterSlot>>,
    problems: Vec<RegistrationProblem>,
    options: HostOptions,
}

impl WriterHost {
    pub fn new(registrations: RegistrationSet, options: HostOptions) -> Self {
        let slots = registrations
            .registrations
            .into_iter()
            .map(|registration| WriterSlot {
                registration,
                process: None,
                state: WriterState::VSS_WS_UNKNOWN,
                failure: None,
                metadata: None,
                instance_id: None,
                next_request_id: 1,
            })
            .collect();
        Self {
            slots: Mutex::new(slots),
            problems: registrations.problems,
            options,
        }
    }

    /// Loads the registrations of `directory` (the store's `writers/`) and hosts them.
    pub fn from_directory(directory: &std::path::Path, options: HostOptions) -> Self {
        Self::new(super::registration::load_registrations(directory), options)
    }

    pub fn options(&self) -> &HostOptions {
        &self.options
    }

    /// Registration files that were skipped, with their reasons.
    pub fn problems(&self) -> &[RegistrationProblem] {
        &self.problems
    }

    fn lock(&self) -> MutexGuard<'_, Vec<WriterSlot>> {
        // A panic while holding the lock leaves plain data behind; the states stay meaningful.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every registered writer's status, in registration order.
    pub fn statuses(&self) -> Vec<WriterStatus> {
        let mut slots = self.lock();
        slots
            .iter_mut()
            .enumerate()
            .map(|(index, slot)| slot.status(WriterIndex(index)))
            .collect()
    }

    pub fn status(&self, writer: WriterIndex) -> Option<WriterStatus> {
        self.lock()
            .get_mut(writer.0)
            .map(|slot| slot.status(writer))
    }

    pub fn registration(&self, writer: WriterIndex) -> Option<Registration> {
        self.lock()
            .get(writer.0)
            .map(|slot| slot.registration.clone())
    }

    /// The metadata of the writer's last successful `identify`.
    pub fn metadata(&self, writer: WriterIndex) -> Option<WriterMetadata> {
        self.lock()
            .get(writer.0)
            .and_then(|slot| slot.metadata.clone())
    }

    /// The writer with this class ID.
    pub fn find_by_id(&self, writer_id: WriterId) -> Option<WriterIndex> {
        self.lock()
            .iter()
            .position(|slot| slot.registration.writer_id == writer_id)
            .map(WriterIndex)
    }

    /// Sends `identify` to every writer (starting it if needed) and keeps their metadata.
    pub fn identify_all(&self, observer: &dyn WriterObserver) -> Vec<EventReply> {
        let requests: Vec<EventRequest> = (0..self.len())
            .map(|index| EventRequest {
                writer: WriterIndex(index),
                fields: Map::new(),
                timeout: self.options.event_timeout,
            })
            .collect();
        self.identify(&requests, observer)
    }

    /// Sends `identify` to the given writers and keeps their metadata.
    pub fn identify(
        &self,
        requests: &[EventRequest],
        observer: &dyn WriterObserver,
    ) -> Vec<EventReply> {
        let mut replies =
            self.exchange(WriterEvent::Identify, requests, observer, |slot, fields| {
                let metadata_value = fields.get("metadata").cloned().unwrap_or(Value::Null);
                if metadata_value.is_null() {
                    return Err(EventFailure::InvalidAnswer(
                        "the identify answer has no `metadata`".to_string(),
                    ));
                }
                let metadata: WriterMetadata =
                    serde_json::from_value(metadata_value).map_err(|error| {
                        EventFailure::InvalidAnswer(format!(
                            "`metadata` does not follow the schema: {error}"
                        ))
                    })?;
                // A writer that names no instance keeps the one given to its process until
                // the process is restarted.
                let instance_id = metadata
                    .instance_id
                    .or(slot.instance_id)
                    .unwrap_or_else(|| WriterInstanceId(self.options.ids.new_uuid()));
                slot.instance_id = Some(instance_id);
                slot.metadata = Some(metadata);
                Ok(())
            });
        replies.sort_by_key(|reply| reply.writer);
        replies
    }

    /// Sends one event to several writers at once and collects their answers. Every request
    /// is written before any answer is awaited, so the writers work in parallel and the wait
    /// is the slowest writer's, not the sum.
    pub fn send(
        &self,
        event: WriterEvent,
        requests: &[EventRequest],
        observer: &dyn WriterObserver,
    ) -> Vec<EventReply> {
        self.exchange(event, requests, observer, |_, _| Ok(()))
    }

    /// Sends `abort` to each given writer whose process is still running. A writer whose
    /// process ended has already seen end of input, which it treats as abort.
    pub fn abort(
        &self,
        requests: &[EventRequest],
        observer: &dyn WriterObserver,
    ) -> Vec<EventReply> {
        let running: Vec<EventRequest> = {
            let mut slots = self.lock();
            requests
                .iter()
                .filter(|request| {
                    slots
                        .get_mut(request.writer.0)
                        .and_then(|slot| slot.process.as_mut())
                        .is_some_and(WriterProcess::is_running)
                })
                .cloned()
                .collect()
        };
        self.send(WriterEvent::Abort, &running, observer)
    }

    fn exchange(
        &self,
        event: WriterEvent,
        requests: &[EventRequest],
        observer: &dyn WriterObserver,
        mut accept: impl FnMut(&mut WriterSlot, &Map<String, Value>) -> Result<(), EventFailure>,
    ) -> Vec<EventReply> {
        let may_start = matches!(
            event,
            WriterEvent::Identify | WriterEvent::PreRestore | WriterEvent::PostRestore
        );
        let mut slots = self.lock();
        let mut pending = Vec::new();
        let mut replies = Vec::new();
        for request in requests {
            let Some(slot) = slots.get_mut(request.writer.0) else {
                continue;
            };
            let started = Instant::now();
            match Self::write_request(slot, event, &request.fields, may_start, observer) {
                Ok(request_id) => {
                    let status = slot.status(request.writer);
                    observer.event_sent(&status, event);
                    pending.push((request.writer, request_id, started, request.timeout));
                }
                Err(failure) => {
                    let outcome = Err(failure);
                    slot.record(event, &outcome);
                    // Nothing was sent (the writer is not running or could not start); the
                    // failure is still a reply to the requester.
                    let status = slot.status(request.writer);
                    observer.reply_received(&status, event, Duration::ZERO, &outcome);
                    replies.push(EventReply {
                        writer: request.writer,
                        outcome: outcome.map(|()| Map::new()),
                        latency: Duration::ZERO,
                    });
                }
            }
        }
        for (writer, request_id, started, timeout) in pending {
            let Some(slot) = slots.get_mut(writer.0) else {
                continue;
            };
            let mut outcome = self.await_answer(slot, request_id, started + timeout, observer);
            if let Ok(fields) = &outcome {
                if let Err(failure) = accept(slot, fields) {
                    outcome = Err(failure);
                }
            }
            let latency = started.elapsed();
            let summary = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
            slot.record(event, &summary);
            let status = slot.status(writer);
            observer.reply_received(&status, event, latency, &summary);
            replies.push(EventReply {
                writer,
                outcome,
                latency,
            });
        }
        replies
    }

    fn write_request(
        slot: &mut WriterSlot,
        event: WriterEvent,
        fields: &Map<String, Value>,
        may_start: bool,
        observer: &dyn WriterObserver,
    ) -> Result<u64, EventFailure> {
        let running = slot.process.as_mut().is_some_and(WriterProcess::is_running);
        if !running {
            if let Some(ended) = slot.process.take() {
                Self::drain(&slot.registration.name, &ended, observer);
                let _ = ended.stop(Duration::ZERO);
            }
            if !may_start {
                return Err(EventFailure::NotRunning);
            }
            slot.process =
                Some(WriterProcess::start(&slot.registration).map_err(EventFailure::StartFailed)?);
            // A new process is a new writer instance.
            slot.instance_id = None;
        }
        let request_id = slot.next_request_id;
        slot.next_request_id += 1;
        let Some(process) = slot.process.as_mut() else {
            return Err(EventFailure::NotRunning);
        };
        Self::drain(&slot.registration.name, process, observer);
        let line = request_line(request_id, event, fields);
        let written = match process.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        };
        if written.is_err() {
            let status = process.exit_status_text();
            if let Some(ended) = slot.process.take() {
                let _ = ended.stop(Duration::ZERO);
            }
            return Err(EventFailure::Exited { status });
        }
        Ok(request_id)
    }

    /// Passes on log lines written between events.
    fn drain(writer: &str, process: &WriterProcess, observer: &dyn WriterObserver) {
        while let Ok(line) = process.lines.try_recv() {
            match line {
                ProcessLine::Stderr(text) => observer.writer_log(writer, &text),
                ProcessLine::Stdout(text) => match WriterLine::parse(&text) {
                    WriterLine::Log(text) => observer.writer_log(writer, &text),
                    WriterLine::Success { id, .. } | WriterLine::Failure { id, .. } => observer
                        .protocol_violation(
                            writer,
                            &format!(
                                "an answer with id {id} arrived when no request was waiting for it"
                            ),
                        ),
                    WriterLine::Invalid { line, reason } => observer
                        .protocol_violation(writer, &format!("{reason} between events: {line}")),
                },
                ProcessLine::StdoutClosed => {}
            }
        }
    }

    fn await_answer(
        &self,
        slot: &mut WriterSlot,
        request_id: u64,
        deadline: Instant,
        observer: &dyn WriterObserver,
    ) -> Result<Map<String, Value>, EventFailure> {
        let name = slot.registration.name.clone();
        let started = Instant::now();
        loop {
            let Some(process) = slot.process.as_mut() else {
                return Err(EventFailure::NotRunning);
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let received = if remaining.is_zero() {
                Err(RecvTimeoutError::Timeout)
            } else {
                process.lines.recv_timeout(remaining)
            };
            match received {
                Ok(ProcessLine::Stderr(text)) => observer.writer_log(&name, &text),
                Ok(ProcessLine::Stdout(text)) => match WriterLine::parse(&text) {
                    WriterLine::Log(text) => observer.writer_log(&name, &text),
                    WriterLine::Success { id, fields } if id == request_id => return Ok(fields),
                    WriterLine::Failure { id, error, message } if id == request_id => {
                        return Err(match WriterErrorCode::from_protocol_name(&error) {
                            Some(code) => EventFailure::Vetoed { code, message },
                            None => EventFailure::UnknownErrorCode { error, message },
                        });
                    }
                    WriterLine::Success { id, .. } | WriterLine::Failure { id, .. } => observer
                        .protocol_violation(
                            &name,
                            &format!(
                            "an answer with id {id} arrived while request {request_id} was waiting"
                        ),
                        ),
                    WriterLine::Invalid { line, reason } => {
                        return Err(EventFailure::InvalidLine { line, reason })
                    }
                },
                Ok(ProcessLine::StdoutClosed) | Err(RecvTimeoutError::Disconnected) => {
                    let status = process.exit_status_text();
                    if let Some(ended) = slot.process.take() {
                        Self::drain(&name, &ended, observer);
                        let _ = ended.stop(Duration::ZERO);
                    }
                    return Err(EventFailure::Exited { status });
                }
                Err(RecvTimeoutError::Timeout) => {
                    let waited = started.elapsed();
                    self.listen_for_late_answer(slot, request_id, observer);
                    // A hung writer is stopped so that the next backup starts it afresh; closing
                    // its input first lets a writer that is merely slow thaw on its own.
                    if let Some(hung) = slot.process.take() {
                        let _ =
                            hung.stop(self.options.shutdown_grace.min(Duration::from_millis(200)));
                    }
                    return Err(EventFailure::NotResponding { waited });
                }
            }
        }
    }

    /// Reports an answer that arrives within `late_answer_grace` after the deadline.
    fn listen_for_late_answer(
        &self,
        slot: &mut WriterSlot,
        request_id: u64,
        observer: &dyn WriterObserver,
    ) {
        let grace = self.options.late_answer_grace;
        if grace.is_zero() {
            return;
        }
        let name = slot.registration.name.clone();
        let Some(process) = slot.process.as_mut() else {
            return;
        };
        let missed = Instant::now();
        let until = missed + grace;
        while let Some(remaining) = until.checked_duration_since(Instant::now()) {
            match process.lines.recv_timeout(remaining) {
                Ok(ProcessLine::Stdout(text)) => match WriterLine::parse(&text) {
                    WriterLine::Success { id, .. } | WriterLine::Failure { id, .. }
                        if id == request_id =>
                    {
                        observer.protocol_violation(
                            &name,
                            &format!(
                                "answered request {request_id} {} ms after its deadline",
                                missed.elapsed().as_millis()
                            ),
                        );
                        return;
                    }
                    WriterLine::Log(text) => observer.writer_log(&name, &text),
                    _ => {}
                },
                Ok(ProcessLine::Stderr(text)) => observer.writer_log(&name, &text),
                Ok(ProcessLine::StdoutClosed) | Err(_) => return,
            }
        }
    }

    /// Closes every writer's standard input and waits for them to exit, killing those still
    /// running after the grace period. Returns each stopped writer's name and whether it
    /// exited on its own (a writer must treat end of input as abort and exit).
    pub fn shutdown(&self) -> Vec<(String, bool)> {
        let processes: Vec<(String, WriterProcess)> = self
            .lock()
            .iter_mut()
            .filter_map(|slot| {
                slot.process
                    .take()
                    .map(|process| (slot.registration.name.clone(), process))
            })
            .collect();
        let mut stoppers = Vec::new();
        for (name, process) in processes {
            let grace = self.options.shutdown_grace;
            stoppers.push((name, thread::spawn(move || process.stop(grace))));
        }
        stoppers
            .into_iter()
            .map(|(name, stopper)| (name, stopper.join().unwrap_or(false)))
            .collect()
    }
}

impl Drop for WriterHost {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
