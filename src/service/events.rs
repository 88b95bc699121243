//! What travels from the service to the requester while a request runs: who hears it (the
//! requester's [`ServiceObserver`]) and one serde [`Event`] per report. `EventObserver` sends them in the service process;
//! [`Event::replay`] hands them to the requester's observer and answers step questions.
//!
//! On the wire an event is the payload of an `event` frame (a `step` rides in an `ask` frame,
//! and the requester's `answer` is a JSON boolean): `{"verbose": LINE}`, `{"trace": LINE}`,
//! `{"line": LINE}`, `{"writer_reply": {…}}`, `{"step": {…}}`,
//! `{"progress_begin": {"what": …, "total": N}}`, `{"progress_advance": N}`,
//! `"progress_end"`, `{"cancellable": ID}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::api::{OperationId, WriterStatusView};
use super::transport::EventSink;

/// What the service reports while it works on a request: verbose lines (writer inclusion and
/// exclusion), the writer trace (events, replies, writer log lines) and progress. The shell
/// renders them; the service never prints.
pub trait ServiceObserver: Send {
    /// A line for verbose mode: what DiskShadow's verbose mode prints (writer inclusion and
    /// exclusion).
    fn verbose_line(&mut self, line: &str);
    /// A line of the writer trace (`set trace on`): each event sent, each writer log line.
    fn trace_line(&mut self, _line: &str) {}
    /// A line shown whatever the verbose setting.
    fn line(&mut self, line: &str);
    /// A writer answered an event (the trace shows it with its latency).
    fn writer_reply(&mut self, reply: &WriterReply) {
        self.trace_line(&reply.line(true));
    }
    /// Step-through mode: the coordinator is about to send `event`; `writers` are the
    /// participating writers' states. Returns false to abort the creation.
    /// `freeze_left`: while writers are frozen, what remains of their freeze deadline.
    fn step(
        &mut self,
        _event: &str,
        _writers: &[WriterStatusView],
        _freeze_left: Option<std::time::Duration>,
    ) -> bool {
        true
    }
    /// The running request can be stopped where that is safe (resync, the full copies after
    /// thaw), under this name: a requester that wants it stopped while its connection waits
    /// for the answer asks [`super::ShadowService::cancel`] on another connection.
    fn cancellable(&mut self, _operation: OperationId) {}
    /// Whether the requester wants the running request stopped (Ctrl-C). Asked at the
    /// request's safe points when the service runs in the requester's process; over the
    /// socket the requester sends [`super::ShadowService::cancel`] instead.
    fn stop_requested(&mut self) -> bool {
        false
    }
    /// Long work started / advanced / ended.
    fn progress_begin(&mut self, what: &str, total: u64);
    fn progress_advance(&mut self, units: u64);
    fn progress_end(&mut self);
}

/// An observer that keeps nothing.
#[derive(Debug, Default)]
pub struct SilentObserver;

impl ServiceObserver for SilentObserver {
    fn verbose_line(&mut self, _line: &str) {}
    fn line(&mut self, _line: &str) {}
    fn progress_begin(&mut self, _what: &str, _total: u64) {}
    fn progress_advance(&mut self, _units: u64) {}
    fn progress_end(&mut self) {}
}

/// A writer's answer to one event, for the writer trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterReply {
    pub writer: String,
    pub event: String,
    pub latency_ms: u64,
    /// `None`: the writer answered ok.
    pub error: Option<String>,
}

impl WriterReply {
    pub fn new(writer: &str, event: &str, latency: Duration, outcome: Result<(), String>) -> Self {
        Self {
            writer: writer.to_string(),
            event: event.to_string(),
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            error: outcome.err(),
        }
    }

    /// The trace line, the one place it is worded: `Writer "NAME" answered EVENT in N ms: ok`
    /// (`failed: …` for an error), without the latency unless `with_latency` (transcripts
    /// leave it out, since it changes from run to run).
    pub fn line(&self, with_latency: bool) -> String {
        let shown = match &self.error {
            None => "ok".to_string(),
            Some(error) => format!("failed: {error}"),
        };
        let timing = if with_latency {
            format!(" in {} ms", self.latency_ms)
        } else {
            String::new()
        };
        format!(
            "Writer \"{}\" answered {}{timing}: {shown}",
            self.writer, self.event
        )
    }
}

/// Step-through mode's question: the coordinator is about to send `event`; `writers` are the
/// participating writers' states (what `list writers status` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepQuestion {
    pub event: String,
    pub writers: Vec<WriterStatusView>,
    /// While writers are frozen, what remains of their freeze deadline.
    pub freeze_left_ms: Option<u64>,
}

/// One report of a running request, as it travels to the requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Verbose(String),
    Trace(String),
    Line(String),
    WriterReply(WriterReply),
    /// Asked, not told: the requester answers whether to go on.
    Step(StepQuestion),
    ProgressBegin {
        what: String,
        total: u64,
    },
    ProgressAdvance(u64),
    ProgressEnd,
    Cancellable(OperationId),
}

impl Event {
    /// Parses an event frame's payload; `None` for one this build does not know.
    pub fn parse(value: serde_json::Value) -> Option<Event> {
        serde_json::from_value(value).ok()
    }

    /// Hands the event to the requester's observer. A step question returns its answer.
    pub fn replay(self, observer: &mut dyn ServiceObserver) -> Option<serde_json::Value> {
        match self {
            Event::Verbose(line) => observer.verbose_line(&line),
            Event::Trace(line) => observer.trace_line(&line),
            Event::Line(line) => observer.line(&line),
            Event::WriterReply(reply) => observer.writer_reply(&reply),
            Event::Step(question) => {
                let freeze_left = question.freeze_left_ms.map(Duration::from_millis);
                let go_on = observer.step(&question.event, &question.writers, freeze_left);
                return Some(serde_json::Value::Bool(go_on));
            }
            Event::ProgressBegin { what, total } => observer.progress_begin(&what, total),
            Event::ProgressAdvance(units) => observer.progress_advance(units),
            Event::ProgressEnd => observer.progress_end(),
            Event::Cancellable(operation) => observer.cancellable(operation),
        }
        None
    }

    fn to_json(&self) -> serde_json::Value {
        // An enum of strings, numbers and IDs always encodes.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends a service observer's reports to the requester as events.
pub(super) struct EventObserver<'e> {
    pub(super) events: &'e EventSink,
}

impl EventObserver<'_> {
    fn send(&mut self, event: Event) {
        // A requester that went away misses its reports; the request still finishes.
        let _ = self.events.send(event.to_json());
    }
}

impl ServiceObserver for EventObserver<'_> {
    fn verbose_line(&mut self, line: &str) {
        self.send(Event::Verbose(line.to_string()));
    }
    fn trace_line(&mut self, line: &str) {
        self.send(Event::Trace(line.to_string()));
    }
    fn line(&mut self, line: &str) {
        self.send(Event::Line(line.to_string()));
    }
    fn progress_begin(&mut self, what: &str, total: u64) {
        self.send(Event::ProgressBegin {
            what: what.to_string(),
            total,
        });
    }
    fn progress_advance(&mut self, units: u64) {
        self.send(Event::ProgressAdvance(units));
    }
    fn progress_end(&mut self) {
        self.send(Event::ProgressEnd);
    }
    fn cancellable(&mut self, operation: OperationId) {
        self.send(Event::Cancellable(operation));
    }
    fn writer_reply(&mut self, reply: &WriterReply) {
        self.send(Event::WriterReply(reply.clone()));
    }
    fn step(
        &mut self,
        event: &str,
        writers: &[WriterStatusView],
        freeze_left: Option<Duration>,
    ) -> bool {
        let question = Event::Step(StepQuestion {
            event: event.to_string(),
            writers: writers.to_vec(),
            freeze_left_ms: freeze_left
                .map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
        });
        // A requester that cannot answer (it went away) aborts, never leaves writers frozen.
        match self.events.ask(question.to_json()) {
            Ok(answer) => answer.as_bool().unwrap_or(false),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_survives_the_wire() {
        let events = [
            Event::Verbose("v".into()),
            Event::Trace("t".into()),
            Event::Line("l".into()),
            Event::WriterReply(WriterReply::new(
                "W",
                "freeze",
                Duration::from_millis(7),
                Err("no".into()),
            )),
            Event::Step(StepQuestion {
                event: "thaw".into(),
                writers: Vec::new(),
                freeze_left_ms: Some(3),
            }),
            Event::ProgressBegin {
                what: "copying".into(),
                total: 9,
            },
            Event::ProgressAdvance(4),
            Event::ProgressEnd,
            Event::Cancellable(OperationId(uuid::Uuid::nil())),
        ];
        for event in events {
            let wire = serde_json::to_string(&event).expect("encodes");
            let parsed = Event::parse(serde_json::from_str(&wire).expect("json"));
            assert_eq!(parsed, Some(event), "{wire}");
        }
        assert_eq!(Event::parse(serde_json::json!({"no_such_event": 1})), None);
    }

    #[test]
    fn the_writer_reply_line_shows_latency_only_when_asked() {
        let ok = WriterReply::new("W", "freeze", Duration::from_millis(12), Ok(()));
        assert_eq!(ok.line(true), "Writer \"W\" answered freeze in 12 ms: ok");
        assert_eq!(ok.line(false), "Writer \"W\" answered freeze: ok");
        let failed = WriterReply::new("W", "thaw", Duration::ZERO, Err("timed out".into()));
        assert_eq!(
            failed.line(false),
            "Writer \"W\" answered thaw: failed: timed out"
        );
    }
}
