//! Writer processes: started on first need, kept running, spoken to in JSON lines
//! (`docs/writer-protocol.md`, "Transport"), with their VSS_WRITER_STATE.
//!
//! **Invariants:**
//! - A writer that does not answer in time, or whose process ends, fails the event it was given
//!   (`VSS_WS_FAILED_AT_<EVENT>`, `VSS_E_WRITER_NOT_RESPONDING`) and its process is stopped; it
//!   is started again the next time it is identified.
//! - Only `identify` and the restore events start a process. Every other event belongs to a
//!   backup that began with `identify`, and a fresh process would not know it.
//! - The answers to one event are read from every writer as they come, each against its own
//!   deadline from when its request was sent: a hung writer never hides a healthy one's answer.
//! - An answer that no request is waiting for (a writer answering twice, or naming a request
//!   that was never sent) fails the writer's current or next event
//!   ([`EventFailure::ProtocolViolation`]) and its process is stopped, like a hung writer's.
//! - When the host is dropped, every writer's standard input closes (a writer treats end of
//!   input as `abort`), and a writer that has not exited after a grace period is killed.

mod exchange;
mod observer;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

pub use observer::{EngineObserver, SilentObserver, StepDecision};

use super::metadata::WriterMetadata;
use super::protocol::{WriterErrorCode, WriterEvent};
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
    /// An answer that no request was waiting for: a repeated answer, or one to a request that
    /// was never sent.
    #[error("the writer broke the protocol: {0}")]
    ProtocolViolation(String),
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
            | EventFailure::InvalidAnswer(_)
            | EventFailure::ProtocolViolation(_) => VssCode::VSS_E_UNEXPECTED_WRITER_ERROR,
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
    /// A line of standard output, with when it was read (an answer's latency is measured to
    /// when it arrived, not to when the host got round to it).
    Stdout(String, Instant),
    Stderr(String),
    StdoutClosed,
}

struct WriterProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<ProcessLine>,
}

impl WriterProcess {
    fn start(registration: &Registration, activity: &Arc<Activity>) -> Result<Self, String> {
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
            let activity = Arc::clone(activity);
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if sender
                        .send(ProcessLine::Stdout(line, Instant::now()))
                        .is_err()
                    {
                        return;
                    }
                    activity.notify();
                }
                let _ = sender.send(ProcessLine::StdoutClosed);
                activity.notify();
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let activity = Arc::clone(activity);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(ProcessLine::Stderr(line)).is_err() {
                        return;
                    }
                    activity.notify();
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

/// Wakes an exchange when any writer process writes a line, so that the answers of several
/// writers are read as they come, not one writer after another.
#[derive(Default)]
struct Activity {
    lines: Mutex<u64>,
    changed: Condvar,
}

impl Activity {
    fn lock(&self) -> MutexGuard<'_, u64> {
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self) {
        let mut lines = self.lock();
        *lines = lines.wrapping_add(1);
        self.changed.notify_all();
    }

    fn count(&self) -> u64 {
        *self.lock()
    }

    /// Waits until a line arrives after `count()` returned `seen`, or until `until`.
    fn wait(&self, seen: u64, until: Instant) {
        let mut lines = self.lock();
        while *lines == seen {
            let remaining = until.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return;
            }
            lines = match self.changed.wait_timeout(lines, remaining) {
                Ok((lines, _)) => lines,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// A request sent to a writer, remembered so that a stray answer can be named.
struct SentRequest {
    id: u64,
    event: WriterEvent,
    answered: bool,
}

/// How many recent requests a slot remembers; an answer to an older one is "never sent".
const REMEMBERED_REQUESTS: usize = 64;

/// Why an answer with this id breaks the protocol: no request was waiting for it.
fn stray_answer(sent: &VecDeque<SentRequest>, id: u64) -> String {
    match sent.iter().find(|request| request.id == id) {
        Some(request) if request.answered => {
            format!("answered twice to {} (request {id})", request.event)
        }
        Some(request) => format!(
            "answered {} (request {id}) after the service had stopped waiting for it",
            request.event
        ),
        None => format!("answered request id {id}, which was never sent"),
    }
}

/// One writer's answer being awaited by an exchange.
struct PendingAnswer {
    writer: WriterIndex,
    request_id: u64,
    sent_at: Instant,
    deadline: Instant,
    /// `None` while the answer is awaited.
    outcome: Option<Result<Map<String, Value>, EventFailure>>,
    latency: Duration,
    /// The writer hung or broke the protocol: it is stopped once every answer is in.
    stop: bool,
}

impl PendingAnswer {
    fn resolve(&mut self, outcome: Result<Map<String, Value>, EventFailure>, at: Instant) {
        self.outcome = Some(outcome);
        self.latency = at.saturating_duration_since(self.sent_at);
    }

    /// An answer no request was waiting for: the event fails, even if it was answered.
    fn broke_protocol(&mut self, violation: String, at: Instant) {
        if !matches!(self.outcome, Some(Err(_))) {
            self.resolve(Err(EventFailure::ProtocolViolation(violation)), at);
        }
        self.stop = true;
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
    sent: VecDeque<SentRequest>,
}

impl WriterSlot {
    fn remember_sent(&mut self, id: u64, event: WriterEvent) {
        self.sent.push_back(SentRequest {
            id,
            event,
            answered: false,
        });
        while self.sent.len() > REMEMBERED_REQUESTS {
            self.sent.pop_front();
        }
    }

    fn mark_answered(&mut self, id: u64) {
        if let Some(request) = self.sent.iter_mut().find(|request| request.id == id) {
            request.answered = true;
        }
    }

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
    activity: Arc<Activity>,
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
                sent: VecDeque::new(),
            })
            .collect();
        Self {
            slots: Mutex::new(slots),
            problems: registrations.problems,
            options,
            activity: Arc::new(Activity::default()),
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
    pub fn identify_all(&self, observer: &dyn EngineObserver) -> Vec<EventReply> {
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
        observer: &dyn EngineObserver,
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
        observer: &dyn EngineObserver,
    ) -> Vec<EventReply> {
        self.exchange(event, requests, observer, |_, _| Ok(()))
    }

    /// Sends `abort` to each given writer whose process is still running. A writer whose
    /// process ended has already seen end of input, which it treats as abort.
    pub fn abort(
        &self,
        requests: &[EventRequest],
        observer: &dyn EngineObserver,
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
