//! MySQL Writer (MariaDB or MySQL): Freeze blocks every commit on a `mariadb` (or `mysql`)
//! client session kept open: `BACKUP STAGE START` … `BLOCK_COMMIT` on MariaDB 10.4 and later
//! (what mariabackup uses: DDL and commits wait, reads and running transactions go on), else
//! `FLUSH TABLES WITH READ LOCK`; it records the binary log position, and PostSnapshot writes it
//! into the shadow's data directory (`diskshadow_binlog_info`, as mariabackup's
//! `mariadb_backup_binlog_info`). Thaw runs `BACKUP STAGE END` or `UNLOCK TABLES`. The lock
//! belongs to the session's connection, so it is released when the session ends for any reason
//! (abort, writer killed, freeze deadline).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
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

/// How the freeze blocks commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockKind {
    /// MariaDB 10.4 and later: the backup stages up to BLOCK_COMMIT.
    BackupStage,
    /// Other servers: FLUSH TABLES WITH READ LOCK.
    GlobalReadLock,
}

impl LockKind {
    /// From `SELECT VERSION()`, for example `10.11.6-MariaDB-0+deb12u1`.
    fn for_version(version: &str) -> Self {
        let mut numbers = version
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|part| part.parse::<u32>().ok());
        let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        if version.contains("MariaDB") && (major, minor) >= (10, 4) {
            LockKind::BackupStage
        } else {
            LockKind::GlobalReadLock
        }
    }

    fn take(self) -> &'static str {
        match self {
            LockKind::BackupStage => "BACKUP STAGE START;\nBACKUP STAGE FLUSH;\nBACKUP STAGE BLOCK_DDL;\nBACKUP STAGE BLOCK_COMMIT;",
            LockKind::GlobalReadLock => "FLUSH TABLES WITH READ LOCK;",
        }
    }

    fn release(self) -> &'static str {
        match self {
            LockKind::BackupStage => "BACKUP STAGE END;",
            LockKind::GlobalReadLock => "UNLOCK TABLES;",
        }
    }

    fn name(self) -> &'static str {
        match self {
            LockKind::BackupStage => "backup_stage",
            LockKind::GlobalReadLock => "flush_tables_with_read_lock",
        }
    }
}

/// The binary log position at the freeze: where a replica of the shadow starts.
#[derive(Debug, Clone)]
struct BinlogPosition {
    file: String,
    position: u64,
    /// MariaDB's `@@gtid_binlog_pos` (empty elsewhere).
    gtid: String,
}

pub struct MysqlWriter {
    options: Options,
    session: Option<Session>,
    /// The lock held now, if any.
    locked: Option<LockKind>,
    /// The position recorded at the last freeze, written into the shadow at PostSnapshot.
    position: Option<BinlogPosition>,
}

impl MysqlWriter {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            session: None,
            locked: None,
            position: None,
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

    fn datadir(&mut self, budget: Duration) -> Result<PathBuf, Failure> {
        let lines = self.run("SELECT @@datadir;", budget)?;
        lines
            .first()
            .map(|line| PathBuf::from(line.trim()))
            .ok_or_else(|| Failure::retryable("the server did not say its data directory"))
    }

    /// Releases the lock if one is held. The lock goes with the connection, so a release that
    /// fails ends the session, which releases it on the server.
    fn release(&mut self, budget: Duration) -> Result<(), Failure> {
        let Some(kind) = self.locked.take() else {
            return Ok(());
        };
        if !self.session.as_mut().is_some_and(Session::is_alive) {
            // The connection that held the lock is gone, and the lock with it.
            self.session = None;
            return Ok(());
        }
        let result = self.run(kind.release(), budget);
        if result.is_err() {
            self.session = None;
        }
        result.map(|_| ())
    }
}

/// The file PostSnapshot writes into the shadow's data directory: `FILE<TAB>POSITION<TAB>GTID`.
pub const BINLOG_INFO_FILE: &str = "diskshadow_binlog_info";

impl Writer for MysqlWriter {
    fn identify(&mut self, budget: Duration) -> Result<Value, Failure> {
        let datadir = self.datadir(budget)?;
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
        self.position = None;
        let version = self.run("SELECT VERSION();", budget)?;
        let kind = LockKind::for_version(version.first().map(String::as_str).unwrap_or(""));
        let seconds = budget.as_secs().max(1);
        // lock_wait_timeout bounds the wait for running statements on the server side too.
        self.locked = Some(kind);
        self.run(
            &format!(
                "SET SESSION lock_wait_timeout = {seconds};\n{}",
                kind.take()
            ),
            budget,
        )?;
        let status = self.run("SHOW MASTER STATUS;", budget).unwrap_or_default();
        let mut answer = Answer::new();
        answer.insert("lock".into(), json!(kind.name()));
        match status
            .first()
            .map(|line| line.split('\t').collect::<Vec<_>>())
        {
            Some(fields) if fields.len() >= 2 => {
                let gtid = if kind == LockKind::BackupStage {
                    self.run("SELECT @@gtid_binlog_pos;", budget)
                        .ok()
                        .and_then(|lines| lines.first().cloned())
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                let position = BinlogPosition {
                    file: fields[0].to_string(),
                    position: fields[1].trim().parse::<u64>().unwrap_or(0),
                    gtid: gtid.trim().to_string(),
                };
                log(&format!(
                    "binary log position at freeze: {} {} (gtid {})",
                    position.file, position.position, position.gtid
                ));
                answer.insert(
                    "binlog_position".into(),
                    json!({"file": position.file, "position": position.position, "gtid": position.gtid}),
                );
                self.position = Some(position);
            }
            _ => log("the binary log is off; no position to record"),
        }
        Ok(answer)
    }

    fn thaw(&mut self, budget: Duration) -> Result<(), Failure> {
        self.release(budget)
    }

    fn post_snapshot(&mut self, request: &Value, budget: Duration) -> Result<(), Failure> {
        let Some(position) = self.position.take() else {
            return Ok(());
        };
        let datadir = self.datadir(budget)?;
        let Some(image) = mounts::recovery_view_of(&datadir, request) else {
            log("no auto-recovery view of the data directory's volume: the binary log position is only in the freeze answer");
            return Ok(());
        };
        let all = mounts::mounts();
        let inside = mounts::path_inside_file_system(&datadir, &all).ok_or_else(|| {
            Failure::nonretryable("cannot place the data directory in its file system")
        })?;
        let owner = std::fs::metadata(&datadir)
            .map(|metadata| (metadata.uid(), metadata.gid()))
            .ok();
        mounts::with_view_mounted(&image, |root| {
            let path = root.join(&inside).join(BINLOG_INFO_FILE);
            std::fs::write(
                &path,
                format!(
                    "{}\t{}\t{}\n",
                    position.file, position.position, position.gtid
                ),
            )
            .map_err(|error| format!("{}: {error}", path.display()))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|error| format!("{}: {error}", path.display()))?;
            }
            Ok(())
        })?;
        log(&format!(
            "wrote {BINLOG_INFO_FILE} ({} {}) into the shadow of {}",
            position.file,
            position.position,
            datadir.display()
        ));
        Ok(())
    }

    fn abort(&mut self, budget: Duration) -> Result<(), Failure> {
        self.position = None;
        // Releasing what is not held is harmless; a failed release ends the connection.
        let _ = self.release(budget);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::LockKind;

    #[test]
    fn backup_stages_on_mariadb_10_4_and_later_else_the_global_read_lock() {
        assert_eq!(
            LockKind::for_version("10.11.6-MariaDB-0+deb12u1"),
            LockKind::BackupStage
        );
        assert_eq!(
            LockKind::for_version("10.4.0-MariaDB"),
            LockKind::BackupStage
        );
        assert_eq!(
            LockKind::for_version("11.2.2-MariaDB"),
            LockKind::BackupStage
        );
        assert_eq!(
            LockKind::for_version("10.3.39-MariaDB"),
            LockKind::GlobalReadLock
        );
        assert_eq!(LockKind::for_version("8.0.36"), LockKind::GlobalReadLock);
        assert_eq!(LockKind::for_version(""), LockKind::GlobalReadLock);
    }
}
