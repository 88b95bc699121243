//! An append-only journal application and its VSS writer, as an example of the writer
//! protocol (`spec/writer-protocol.md`).
//!
//! ```text
//! journal run FILE [COUNT] [INTERVAL_MS]   append COUNT records (default: forever)
//! journal writer FILE VOLUME               the writer: speaks JSON lines on stdin/stdout
//! journal verify FILE                      check that FILE holds whole, consecutive records
//! ```
//!
//! Register the writer in the store's `writers/` directory:
//!
//! ```toml
//! name = "Journal Writer"
//! id = "{6f1b9d7e-3c2a-4e5f-9a8b-1c2d3e4f5a6b}"
//! command = ["/path/to/journal", "writer", "/srv/journal/app.jnl", "/srv/vol/data.img"]
//! freeze_timeout = "20s"
//! ```
//!
//! On `freeze` the writer waits for the append in progress, holds every further append and
//! makes the journal durable; on `thaw`, `abort`, end of input or when the freeze deadline
//! passes, appends resume. A shadow copy taken while frozen holds only whole records.

mod journal;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

fn run(path: &Path, count: Option<u64>, interval: Duration) -> Result<(), String> {
    let mut journal =
        journal::Journal::open(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mut appended = 0;
    while count.is_none_or(|count| appended < count) {
        let sequence = journal
            .append(b"journal entry")
            .map_err(|error| error.to_string())?;
        appended += 1;
        if sequence % 1000 == 0 {
            eprintln!("journal: record {sequence}");
        }
        thread::sleep(interval);
    }
    Ok(())
}

/// A freeze in force: the hold lives in a thread that ends it on thaw or at the deadline.
struct Freeze {
    release: mpsc::Sender<()>,
    expired: Arc<AtomicBool>,
    holder: thread::JoinHandle<()>,
}

impl Freeze {
    fn start(path: &Path, deadline: Duration) -> Result<Self, String> {
        let hold =
            journal::AppendHold::acquire(path, deadline).map_err(|error| error.to_string())?;
        let (release, released) = mpsc::channel::<()>();
        let expired = Arc::new(AtomicBool::new(false));
        let expired_flag = Arc::clone(&expired);
        let holder = thread::spawn(move || {
            if released.recv_timeout(deadline).is_err() {
                // The deadline passed (or the writer is ending): appends must not wait longer.
                expired_flag.store(true, Ordering::SeqCst);
            }
            drop(hold);
        });
        Ok(Self {
            release,
            expired,
            holder,
        })
    }

    /// Ends the freeze; returns whether it had already expired.
    fn end(self) -> bool {
        let _ = self.release.send(());
        let _ = self.holder.join();
        self.expired.load(Ordering::SeqCst)
    }
}

fn answer(value: Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{value}");
    let _ = stdout.flush();
}

fn writer(path: &Path, volume: &str) -> Result<(), String> {
    let directory = path
        .parent()
        .map(|parent| parent.display().to_string())
        .unwrap_or_default();
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut freeze: Option<Freeze> = None;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|error| error.to_string())?;
        let Ok(request) = serde_json::from_str::<Value>(&line) else {
            eprintln!("journal writer: ignoring a request that is not JSON: {line}");
            continue;
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let event = request
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match event {
            "identify" => answer(json!({"id": id, "ok": true, "metadata": {
                "usage": "user_data",
                "source": "nontransacted_db",
                "restore_method": {"method": "restore_if_can_replace", "writer_restore": "never", "reboot_required": false},
                "components": [{
                    "name": "journal", "logical_path": "", "type": "filegroup", "caption": "Journal",
                    "selectable": true, "selectable_for_restore": true, "notify_on_backup_complete": false,
                    "files": [{"volume": volume, "path": directory, "filespec": file_name, "recursive": false}]
                }],
                "excludes": []
            }})),
            "freeze" => {
                let deadline = Duration::from_millis(
                    request
                        .get("deadline_ms")
                        .and_then(Value::as_u64)
                        .unwrap_or(60_000),
                );
                if let Some(previous) = freeze.take() {
                    previous.end();
                }
                match Freeze::start(path, deadline) {
                    Ok(started) => {
                        freeze = Some(started);
                        answer(json!({"log": "journal appends held"}));
                        answer(json!({"id": id, "ok": true}));
                    }
                    Err(message) => answer(
                        json!({"id": id, "ok": false, "error": "retryable", "message": message}),
                    ),
                }
            }
            "thaw" => {
                let expired = freeze.take().is_some_and(Freeze::end);
                answer(json!({"log": "journal appends resumed"}));
                if expired {
                    answer(
                        json!({"id": id, "ok": false, "error": "timeout", "message": "the freeze deadline passed before thaw"}),
                    );
                } else {
                    answer(json!({"id": id, "ok": true}));
                }
            }
            "abort" => {
                if let Some(active) = freeze.take() {
                    active.end();
                }
                answer(json!({"id": id, "ok": true}));
            }
            _ => answer(json!({"id": id, "ok": true})),
        }
    }
    // End of input means abort: resume appends and exit.
    if let Some(active) = freeze.take() {
        active.end();
    }
    Ok(())
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let result = match arguments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["run", file, rest @ ..] => {
            let count = rest.first().and_then(|count| count.parse().ok());
            let interval = Duration::from_millis(rest.get(1).and_then(|ms| ms.parse().ok()).unwrap_or(1));
            run(&PathBuf::from(file), count, interval)
        }
        ["writer", file, volume] => writer(&PathBuf::from(file), volume),
        ["verify", file] => match journal::verify_file(Path::new(file)) {
            Ok(records) => {
                println!("{records} records, consistent");
                Ok(())
            }
            Err(inconsistency) => Err(format!("inconsistent {inconsistency}")),
        },
        _ => Err("usage: journal run FILE [COUNT] [INTERVAL_MS] | journal writer FILE VOLUME | journal verify FILE".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("journal: {message}");
            ExitCode::FAILURE
        }
    }
}
