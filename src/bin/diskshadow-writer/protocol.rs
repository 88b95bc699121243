//! The protocol loop shared by every in-box writer: requests from standard input, one JSON
//! answer per line on standard output, a timeout per event, the freeze deadline kept even when
//! no thaw comes, and end of input treated as abort.

use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// A failed event: a `VSS_E_WRITERERROR_*` code on the wire and the reason.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    /// The application is down or refused; trying again later may work.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            code: "retryable",
            message: message.into(),
        }
    }

    pub fn nonretryable(message: impl Into<String>) -> Self {
        Self {
            code: "nonretryable",
            message: message.into(),
        }
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self {
            code: "timeout",
            message: message.into(),
        }
    }
}

/// Extra fields of a successful answer.
pub type Answer = Map<String, Value>;

/// What one in-box writer does at each event. `budget` is how long the event may take.
pub trait Writer {
    fn identify(&mut self, budget: Duration) -> Result<Value, Failure>;
    fn prepare_snapshot(&mut self, _request: &Value, _budget: Duration) -> Result<(), Failure> {
        Ok(())
    }
    fn freeze(&mut self, request: &Value, budget: Duration) -> Result<Answer, Failure>;
    fn thaw(&mut self, budget: Duration) -> Result<(), Failure>;
    fn post_snapshot(&mut self, _request: &Value, _budget: Duration) -> Result<(), Failure> {
        Ok(())
    }
    /// Releases whatever the freeze holds; safe to call when nothing is held.
    fn abort(&mut self, budget: Duration) -> Result<(), Failure>;
    fn pre_restore(&mut self, _budget: Duration) -> Result<(), Failure> {
        Ok(())
    }
    fn post_restore(&mut self, _budget: Duration) -> Result<(), Failure> {
        Ok(())
    }
}

pub fn log(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", json!({ "log": text }));
    let _ = stdout.flush();
}

fn answer(id: &Value, result: Result<Answer, Failure>) {
    let line = match result {
        Ok(mut fields) => {
            fields.insert("id".into(), id.clone());
            fields.insert("ok".into(), Value::Bool(true));
            Value::Object(fields)
        }
        Err(failure) => {
            json!({"id": id, "ok": false, "error": failure.code, "message": failure.message})
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Runs `writer` until end of input.
pub fn serve(mut writer: impl Writer, event_timeout: Duration) -> Result<(), String> {
    let (sender, requests) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    // While frozen: when the freeze must end on its own, and whether it already did.
    let mut frozen_until: Option<Instant> = None;
    let mut overran = false;
    loop {
        let line = match frozen_until {
            Some(until) => {
                match requests.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(line) => line,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // No thaw came in time: release now, so the application never stays held
                        // past the deadline, and say so at thaw.
                        frozen_until = None;
                        overran = true;
                        log("the freeze deadline passed before thaw; released the hold");
                        if let Err(failure) = writer.abort(event_timeout) {
                            log(&format!(
                                "releasing after the deadline failed: {}",
                                failure.message
                            ));
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            None => match requests.recv() {
                Ok(line) => line,
                Err(_) => break,
            },
        };
        let request: Value = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(error) => {
                log(&format!(
                    "ignored a request that is not JSON ({error}): {line}"
                ));
                continue;
            }
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let event = request
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let result: Result<Answer, Failure> = match event {
            "identify" => writer.identify(event_timeout).map(|metadata| {
                let mut fields = Answer::new();
                fields.insert("metadata".into(), metadata);
                fields
            }),
            "prepare_backup" | "backup_complete" | "backup_shutdown" => Ok(Answer::new()),
            "prepare_snapshot" => writer
                .prepare_snapshot(&request, event_timeout)
                .map(|()| Answer::new()),
            "freeze" => {
                let deadline = Duration::from_millis(
                    request
                        .get("deadline_ms")
                        .and_then(Value::as_u64)
                        .unwrap_or(60_000),
                );
                let started = Instant::now();
                overran = false;
                let result = writer.freeze(&request, deadline);
                if result.is_ok() {
                    frozen_until = Some(started + deadline);
                } else {
                    // A failed freeze holds nothing.
                    let _ = writer.abort(event_timeout);
                }
                result
            }
            "thaw" => {
                let was_frozen = frozen_until.take().is_some();
                if overran {
                    overran = false;
                    Err(Failure::timeout(
                        "the freeze deadline passed before thaw; the hold was released then",
                    ))
                } else if was_frozen {
                    writer.thaw(event_timeout).map(|()| Answer::new())
                } else {
                    Ok(Answer::new())
                }
            }
            "post_snapshot" => writer
                .post_snapshot(&request, event_timeout)
                .map(|()| Answer::new()),
            "abort" => {
                frozen_until = None;
                overran = false;
                writer.abort(event_timeout).map(|()| Answer::new())
            }
            "pre_restore" => writer.pre_restore(event_timeout).map(|()| Answer::new()),
            "post_restore" => writer.post_restore(event_timeout).map(|()| Answer::new()),
            other => Err(Failure::nonretryable(format!("unknown event '{other}'"))),
        };
        answer(&id, result);
    }
    // End of input is abort: release and exit.
    let _ = writer.abort(event_timeout);
    Ok(())
}
