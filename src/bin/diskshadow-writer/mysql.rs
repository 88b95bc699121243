//! MySQL Writer (MariaDB or MySQL): Freeze runs `FLUSH TABLES WITH READ LOCK` on a `mariadb`
//! (or `mysql`) client session kept open and records the binary log position; Thaw runs
//! `UNLOCK TABLES`. The lock belongs to the session's connection, so it is released when the
//! session ends for any reason (abort, writer killed, freeze deadline).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::mounts;
use crate::protocol::{log, Answer, Failure, Writer};
use crate::session::{Dialect, Session, SessionError};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The server's Unix socket.
    #[arg(long, value_name = "FILE")]
    pub socket: PathBuf,
    /// The account (it needs the RELOAD privilege; root over the socket by default).
    #[arg(long, default_value = "root")]
    pub user: String,
    /// The client program (default: `mariadb`, else `mysql`).
    #[arg(long)]
    pub client: Option<String>,
}

pub struct MysqlWriter {
    options: Options,
    session: Option<Session>,
    locked: bool,
}

impl MysqlWriter {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            session: None,
            locked: false,
        }
    }

    fn client(&self) -> String {
        if let Some(client) = &self.options.client {
            return client.clone();
        }
        let found = std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path).any(|directory| directory.join("mariadb").is_file())
            })
            .unwrap_or(false);
        if found { "mariadb" } else { "mysql" }.to_string()
    }

    fn session(&mut self) -> Result<&mut Session, Failure> {
        if !self.session.as_mut().is_some_and(Session::is_alive) {
            let mut command = Command::new(self.client());
            command
                .arg("--batch")
                .arg("--skip-column-names")
                .arg("--unbuffered")
                .arg("--force")
                .arg(format!("--socket={}", self.options.socket.display()))
                .arg(format!("--user={}", self.options.user));
            let session = Session::start(command, Dialect::Mariadb)
                .map_err(|error| Failure::nonretryable(error.to_string()))?;
            self.session = Some(session);
        }
        self.session
            .as_mut()
            .ok_or_else(|| Failure::nonretryable("no session"))
    }

    fn run(&mut self, statements: &str, budget: Duration) -> Result<Vec<String>, Failure> {
        let socket = self.options.socket.display().to_string();
        let result = self.session()?.run(statements, budget);
        result.map_err(|error| match error {
            SessionError::Ended(message) => Failure::retryable(format!(
                "the MariaDB/MySQL server at {socket} is not reachable: {message}"
            )),
            SessionError::Timeout(_) => Failure::timeout(format!(
                "the server at {socket} did not answer `{}` within {} ms",
                statements.trim(),
                budget.as_millis()
            )),
            other => Failure::retryable(format!("the server at {socket} refused: {other}")),
        })
    }
}

impl Writer for MysqlWriter {
    fn identify(&mut self, budget: Duration) -> Result<Value, Failure> {
        let lines = self.run("SELECT @@datadir;", budget)?;
        let datadir = lines
            .first()
            .map(|line| PathBuf::from(line.trim()))
            .ok_or_else(|| Failure::retryable("the server did not say its data directory"))?;
        let all = mounts::mounts();
        let file = mounts::file_entry(&datadir, &all, &BTreeMap::new());
        Ok(json!({
            "usage": "user_data",
            "source": "transacted_db",
            "restore_method": {"method": "stop_restore_start", "writer_restore": "never", "reboot_required": false},
            "components": [{
                "name": "mysql",
                "logical_path": "",
                "type": "database",
                "caption": format!("MariaDB/MySQL server at {}", self.options.socket.display()),
                "selectable": true,
                "selectable_for_restore": true,
                "notify_on_backup_complete": false,
                "files": [file],
            }],
            "excludes": [],
        }))
    }

    fn freeze(&mut self, _request: &Value, budget: Duration) -> Result<Answer, Failure> {
        let seconds = budget.as_secs().max(1);
        // lock_wait_timeout bounds the wait for running statements on the server side too.
        self.run(
            &format!("SET SESSION lock_wait_timeout = {seconds};\nFLUSH TABLES WITH READ LOCK;"),
            budget,
        )?;
        self.locked = true;
        let status = self.run("SHOW MASTER STATUS;", budget).unwrap_or_default();
        let mut answer = Answer::new();
        match status
            .first()
            .map(|line| line.split('\t').collect::<Vec<_>>())
        {
            Some(fields) if fields.len() >= 2 => {
                log(&format!(
                    "binary log position at freeze: {} {}",
                    fields[0], fields[1]
                ));
                answer.insert(
                    "binlog_position".into(),
                    json!({"file": fields[0], "position": fields[1].parse::<u64>().unwrap_or(0)}),
                );
            }
            _ => log("the binary log is off; no position to record"),
        }
        Ok(answer)
    }

    fn thaw(&mut self, budget: Duration) -> Result<(), Failure> {
        let result = self.run("UNLOCK TABLES;", budget);
        self.locked = false;
        if result.is_err() {
            // Ending the connection releases the lock in any case.
            self.session = None;
        }
        result.map(|_| ())
    }

    fn abort(&mut self, budget: Duration) -> Result<(), Failure> {
        if self.locked {
            self.locked = false;
            if self.run("UNLOCK TABLES;", budget).is_err() {
                self.session = None;
            }
        }
        Ok(())
    }
}
