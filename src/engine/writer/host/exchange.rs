//! One event's exchange with the writers: each request written (starting the writer's
//! process if needed), the answers read line by line until each writer answers, breaks the
//! protocol, exits or runs out of time, and a late answer listened for after a timeout.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::engine::writer::protocol::{request_line, WriterErrorCode, WriterEvent, WriterLine};

use super::{
    stray_answer, EngineObserver, EventFailure, EventReply, EventRequest, PendingAnswer,
    ProcessLine, SentRequest, WriterHost, WriterProcess, WriterSlot,
};

impl WriterHost {
    pub(super) fn exchange(
        &self,
        event: WriterEvent,
        requests: &[EventRequest],
        observer: &dyn EngineObserver,
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
            match self.write_request(slot, event, &request.fields, may_start, observer) {
                Ok(request_id) => {
                    // Each writer's deadline runs from when its own request was sent.
                    let sent_at = Instant::now();
                    slot.remember_sent(request_id, event);
                    let status = slot.status(request.writer);
                    observer.event_sent(&status, event);
                    pending.push(PendingAnswer {
                        writer: request.writer,
                        request_id,
                        sent_at,
                        deadline: sent_at + request.timeout,
                        outcome: None,
                        latency: Duration::ZERO,
                        stop: false,
                    });
                }
                Err(failure) => {
                    let outcome = Err(failure);
                    slot.record(event, &outcome);
                    // Nothing was sent (the writer is not running, could not start, or broke
                    // the protocol since its last event); the failure is still a reply.
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
        // Every writer is read as its lines come, each against its own deadline: a writer that
        // hangs never keeps a healthy writer's answer from being read. A writer that already
        // answered is still read while the others are awaited, so an answer it repeats is seen.
        loop {
            let lines_seen = self.activity.count();
            for answer in &mut pending {
                match slots.get_mut(answer.writer.0) {
                    Some(slot) => Self::read_lines(slot, answer, observer),
                    None => answer.resolve(Err(EventFailure::NotRunning), Instant::now()),
                }
            }
            let now = Instant::now();
            for answer in pending.iter_mut().filter(|answer| answer.outcome.is_none()) {
                if answer.deadline <= now {
                    let waited = now.saturating_duration_since(answer.sent_at);
                    answer.resolve(Err(EventFailure::NotResponding { waited }), now);
                    answer.stop = true;
                }
            }
            let next_deadline = pending
                .iter()
                .filter(|answer| answer.outcome.is_none())
                .map(|answer| answer.deadline)
                .min();
            let Some(next_deadline) = next_deadline else {
                break;
            };
            self.activity.wait(lines_seen, next_deadline);
        }
        for answer in pending {
            let Some(slot) = slots.get_mut(answer.writer.0) else {
                continue;
            };
            let mut outcome = answer.outcome.unwrap_or(Err(EventFailure::NotRunning));
            if answer.stop {
                if matches!(outcome, Err(EventFailure::NotResponding { .. })) {
                    self.listen_for_late_answer(slot, answer.request_id, observer);
                }
                // A hung writer, or one that broke the protocol, is stopped so that the next
                // backup starts it afresh. Closing its input is its abort (a writer treats end
                // of input as abort), so a frozen writer is still released exactly once.
                if let Some(stopped) = slot.process.take() {
                    let _ =
                        stopped.stop(self.options.shutdown_grace.min(Duration::from_millis(200)));
                }
            }
            if let Ok(fields) = &outcome {
                if let Err(failure) = accept(slot, fields) {
                    outcome = Err(failure);
                }
            }
            let summary = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
            slot.record(event, &summary);
            let status = slot.status(answer.writer);
            observer.reply_received(&status, event, answer.latency, &summary);
            replies.push(EventReply {
                writer: answer.writer,
                outcome,
                latency: answer.latency,
            });
        }
        replies
    }

    fn write_request(
        &self,
        slot: &mut WriterSlot,
        event: WriterEvent,
        fields: &Map<String, Value>,
        may_start: bool,
        observer: &dyn EngineObserver,
    ) -> Result<u64, EventFailure> {
        let running = slot.process.as_mut().is_some_and(WriterProcess::is_running);
        if !running {
            if let Some(ended) = slot.process.take() {
                Self::drain(&slot.registration.name, &ended, &slot.sent, observer);
                let _ = ended.stop(Duration::ZERO);
            }
            if !may_start {
                return Err(EventFailure::NotRunning);
            }
            slot.process = Some(
                WriterProcess::start(&slot.registration, &self.activity)
                    .map_err(EventFailure::StartFailed)?,
            );
            // A new process is a new writer instance.
            slot.instance_id = None;
        }
        let Some(process) = slot.process.as_mut() else {
            return Err(EventFailure::NotRunning);
        };
        // An answer that came since the last event (a repeated answer, or one to a request
        // that was never sent) breaks the protocol: the writer fails this event and is stopped.
        if let Some(violation) = Self::drain(&slot.registration.name, process, &slot.sent, observer)
        {
            if let Some(stopped) = slot.process.take() {
                let _ = stopped.stop(self.options.shutdown_grace.min(Duration::from_millis(200)));
            }
            return Err(EventFailure::ProtocolViolation(violation));
        }
        let request_id = slot.next_request_id;
        slot.next_request_id += 1;
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

    /// Passes on log lines written between events. Returns the first answer that no request
    /// was waiting for, described.
    fn drain(
        writer: &str,
        process: &WriterProcess,
        sent: &VecDeque<SentRequest>,
        observer: &dyn EngineObserver,
    ) -> Option<String> {
        let mut violation = None;
        while let Ok(line) = process.lines.try_recv() {
            match line {
                ProcessLine::Stderr(text) => observer.writer_log(writer, &text),
                ProcessLine::Stdout(text, _) => match WriterLine::parse(&text) {
                    WriterLine::Log(text) => observer.writer_log(writer, &text),
                    WriterLine::Success { id, .. } | WriterLine::Failure { id, .. } => {
                        violation.get_or_insert_with(|| stray_answer(sent, id));
                    }
                    WriterLine::Invalid { line, reason } => observer
                        .protocol_violation(writer, &format!("{reason} between events: {line}")),
                },
                ProcessLine::StdoutClosed => {}
            }
        }
        violation
    }

    /// Reads the lines a writer has written so far, as part of awaiting `answer`.
    fn read_lines(
        slot: &mut WriterSlot,
        answer: &mut PendingAnswer,
        observer: &dyn EngineObserver,
    ) {
        let name = slot.registration.name.clone();
        loop {
            let Some(process) = slot.process.as_mut() else {
                if answer.outcome.is_none() {
                    answer.resolve(Err(EventFailure::NotRunning), Instant::now());
                }
                return;
            };
            let line = match process.lines.try_recv() {
                Ok(line) => line,
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => ProcessLine::StdoutClosed,
            };
            match line {
                ProcessLine::Stderr(text) => observer.writer_log(&name, &text),
                ProcessLine::Stdout(text, received) => match WriterLine::parse(&text) {
                    WriterLine::Log(text) => observer.writer_log(&name, &text),
                    WriterLine::Success { id, fields }
                        if id == answer.request_id && answer.outcome.is_none() =>
                    {
                        slot.mark_answered(id);
                        answer.resolve(Ok(fields), received);
                    }
                    WriterLine::Failure { id, error, message }
                        if id == answer.request_id && answer.outcome.is_none() =>
                    {
                        slot.mark_answered(id);
                        let failure = match WriterErrorCode::from_protocol_name(&error) {
                            Some(code) => EventFailure::Vetoed { code, message },
                            None => EventFailure::UnknownErrorCode { error, message },
                        };
                        answer.resolve(Err(failure), received);
                    }
                    WriterLine::Success { id, .. } | WriterLine::Failure { id, .. } => {
                        let violation = stray_answer(&slot.sent, id);
                        answer.broke_protocol(violation, received);
                    }
                    WriterLine::Invalid { line, reason } => {
                        if answer.outcome.is_none() {
                            answer
                                .resolve(Err(EventFailure::InvalidLine { line, reason }), received);
                        } else {
                            observer.protocol_violation(
                                &name,
                                &format!("{reason} after its answer: {line}"),
                            );
                        }
                    }
                },
                ProcessLine::StdoutClosed => {
                    if answer.outcome.is_none() {
                        let status = process.exit_status_text();
                        if let Some(ended) = slot.process.take() {
                            let _ = Self::drain(&name, &ended, &slot.sent, observer);
                            let _ = ended.stop(Duration::ZERO);
                        }
                        answer.resolve(Err(EventFailure::Exited { status }), Instant::now());
                    }
                    // A writer that answered and then ended is found not running at its next
                    // event.
                    return;
                }
            }
        }
    }

    /// Reports an answer that arrives within `late_answer_grace` after the deadline.
    fn listen_for_late_answer(
        &self,
        slot: &mut WriterSlot,
        request_id: u64,
        observer: &dyn EngineObserver,
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
                Ok(ProcessLine::Stdout(text, _)) => match WriterLine::parse(&text) {
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
}
