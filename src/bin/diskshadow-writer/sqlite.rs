//! SQLite Writer: for each configured database, Freeze checkpoints the write-ahead log into the
//! database (`PRAGMA wal_checkpoint(TRUNCATE)`) and takes the write lock (`BEGIN IMMEDIATE`) in
//! a `sqlite3` session kept open, so the shadow holds only whole transactions; Thaw rolls the
//! empty transaction back. The lock dies with the session (abort, crash, deadline).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::mounts;
use crate::protocol::{log, Answer, Failure, Writer};
use crate::session::{Dialect, Session};

/// How many times Freeze takes the lock again when a commit slipped in after the checkpoint.
const FREEZE_ATTEMPTS: u32 = 5;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// A database file (repeatable).
    #[arg(long = "db", value_name = "FILE", required = true)]
    pub databases: Vec<PathBuf>,
    /// The sqlite3 program.
    #[arg(long, default_value = "sqlite3")]
    pub sqlite3: String,
}

pub struct SqliteWriter {
    options: Options,
    /// One session per database while frozen.
    held: Vec<Session>,
}

impl SqliteWriter {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            held: Vec::new(),
        }
    }
}

impl Writer for SqliteWriter {
    fn identify(&mut self, _budget: Duration) -> Result<Value, Failure> {
        let all = mounts::mounts();
        let mut components = Vec::new();
        for database in &self.options.databases {
            if !database.is_file() {
                return Err(Failure::retryable(format!(
                    "the database {} does not exist",
                    database.display()
                )));
            }
            let directory = database.parent().unwrap_or(std::path::Path::new("/"));
            let mut file = mounts::file_entry(directory, &all, &BTreeMap::new());
            let name = database
                .file_name()
                .map(|name| name.to_string_lossy().to_string())
                .unwrap_or_default();
            file["filespec"] = Value::from(format!("{name}*"));
            file["recursive"] = Value::from(false);
            components.push(json!({
                "name": database.display().to_string(),
                "logical_path": "sqlite",
                "type": "database",
                "caption": format!("SQLite database {name}"),
                "selectable": true,
                "selectable_for_restore": true,
                "notify_on_backup_complete": false,
                "files": [file],
            }));
        }
        Ok(json!({
            "usage": "user_data",
            "source": "transacted_db",
            "restore_method": {"method": "restore_if_not_there", "writer_restore": "never", "reboot_required": false},
            "components": components,
            "excludes": [],
        }))
    }

    fn freeze(&mut self, _request: &Value, budget: Duration) -> Result<Answer, Failure> {
        let started = std::time::Instant::now();
        for database in &self.options.databases {
            let mut command = Command::new(&self.options.sqlite3);
            command.arg("-batch").arg(database);
            let mut session = Session::start(command, Dialect::Sqlite).map_err(|error| {
                Failure::nonretryable(format!("{}: {error}", database.display()))
            })?;
            // A transaction can commit between the checkpoint and the lock; then the log holds
            // it again, and the lock is let go and taken again (a few times, within the
            // budget), so that the shadow's log is empty and opening it needs no recovery.
            let wal = PathBuf::from(format!("{}-wal", database.display()));
            for attempt in 1..=FREEZE_ATTEMPTS {
                let left = budget.saturating_sub(started.elapsed());
                let wait_ms = left.as_millis().max(1);
                let statements = format!(
                    ".timeout {wait_ms}\nPRAGMA wal_checkpoint(TRUNCATE);\nBEGIN IMMEDIATE;"
                );
                session.run(&statements, left).map_err(|error| {
                    let message = format!("cannot lock {}: {error}", database.display());
                    match error {
                        crate::session::SessionError::Timeout(_) => Failure::timeout(message),
                        _ => Failure::retryable(message),
                    }
                })?;
                let log_is_empty = std::fs::metadata(&wal).map_or(true, |wal| wal.len() == 0);
                if log_is_empty || attempt == FREEZE_ATTEMPTS || started.elapsed() >= budget / 2 {
                    if !log_is_empty {
                        log(&format!(
                            "{}: a transaction committed after the checkpoint stays in the log; the shadow replays it when opened",
                            database.display()
                        ));
                    }
                    break;
                }
                let left = budget.saturating_sub(started.elapsed());
                session.run("ROLLBACK;", left).map_err(|error| {
                    Failure::retryable(format!("{}: {error}", database.display()))
                })?;
            }
            self.held.push(session);
        }
        log(&format!(
            "holding the write lock on {} database(s)",
            self.held.len()
        ));
        Ok(Answer::new())
    }

    fn thaw(&mut self, budget: Duration) -> Result<(), Failure> {
        let mut problems = Vec::new();
        for mut session in self.held.drain(..) {
            if let Err(error) = session.run("ROLLBACK;", budget) {
                problems.push(error.to_string());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            // The sessions are closed either way, so the locks are gone.
            Err(Failure::nonretryable(problems.join("; ")))
        }
    }

    fn abort(&mut self, _budget: Duration) -> Result<(), Failure> {
        // Ending the sessions rolls back and releases every lock.
        self.held.clear();
        Ok(())
    }
}
