//! PostgreSQL Writer: one component per cluster (data directory, tablespaces, WAL directory).
//! PrepareForSnapshot runs `CHECKPOINT`; Freeze starts a non-exclusive base backup
//! (`pg_backup_start`) on a `psql` session kept open; Thaw stops it (`pg_backup_stop`) and keeps
//! the returned `backup_label`; PostSnapshot writes it, with the WAL the backup needs, into the
//! shadow through the auto-recovery view, so a server started on the shadow recovers from the
//! backup's checkpoint to its end. A non-exclusive backup ends with its session, so an abort, a
//! killed writer or a passed deadline leaves the server out of backup mode. PreRestore stops the
//! server, PostRestore starts it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::mounts;
use crate::protocol::{log, Answer, Failure, Writer};
use crate::session::{Dialect, Session, SessionError};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The cluster's data directory.
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    /// The directory of the server's Unix socket.
    #[arg(long, value_name = "DIR")]
    pub socket_dir: PathBuf,
    #[arg(long, default_value_t = 5432)]
    pub port: u16,
    /// The database role (default: the owner of the data directory, as initdb names it).
    #[arg(long)]
    pub user: Option<String>,
    /// The directory of pg_ctl (default: the newest /usr/lib/postgresql/*/bin, else PATH).
    #[arg(long, value_name = "DIR")]
    pub bindir: Option<PathBuf>,
}

/// What `pg_backup_stop` returned, kept for PostSnapshot.
struct StoppedBackup {
    label: String,
    tablespace_map: String,
    /// The WAL segment holding the backup's end.
    stop_segment: String,
}

pub struct PostgresWriter {
    options: Options,
    session: Option<Session>,
    in_backup: bool,
    stopped: Option<StoppedBackup>,
}

fn hex_decode(text: &str) -> String {
    let bytes: Vec<u8> = (0..text.len() / 2)
        .filter_map(|index| u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).to_string()
}

impl PostgresWriter {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            session: None,
            in_backup: false,
            stopped: None,
        }
    }

    fn owner(&self) -> Option<(u32, u32, String)> {
        let metadata = std::fs::metadata(&self.options.pgdata).ok()?;
        let uid = metadata.uid();
        // SAFETY: getpwuid returns a pointer to static storage or null; read at once.
        let name = unsafe {
            let entry = libc::getpwuid(uid);
            if entry.is_null() {
                return None;
            }
            std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_string_lossy()
                .to_string()
        };
        Some((uid, metadata.gid(), name))
    }

    /// `program` run as the data directory's owner when this writer runs as root (PostgreSQL
    /// refuses to run as root, and peer authentication expects the owner).
    fn as_owner(&self, program: &str) -> Command {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        match self.owner() {
            Some((uid, _, name)) if root && uid != 0 => {
                let mut command = Command::new("runuser");
                command.args(["-u", &name, "--", program]);
                command
            }
            _ => Command::new(program),
        }
    }

    fn bin(&self, program: &str) -> String {
        let directory = self.options.bindir.clone().or_else(|| {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.join(program).is_file())
                .collect();
            found.sort();
            found.pop()
        });
        match directory {
            Some(directory) => directory.join(program).display().to_string(),
            None => program.to_string(),
        }
    }

    fn session(&mut self) -> Result<&mut Session, Failure> {
        if !self.session.as_mut().is_some_and(Session::is_alive) {
            self.in_backup = false;
            let mut command = self.as_owner("psql");
            command
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
                .arg("-h")
                .arg(&self.options.socket_dir)
                .arg("-p")
                .arg(self.options.port.to_string())
                .args(["-d", "postgres"]);
            if let Some(user) = &self.options.user {
                command.args(["-U", user]);
            }
            let session = Session::start(command, Dialect::Psql)
                .map_err(|error| Failure::nonretryable(error.to_string()))?;
            self.session = Some(session);
        }
        self.session
            .as_mut()
            .ok_or_else(|| Failure::nonretryable("no session"))
    }

    fn run(&mut self, statements: &str, budget: Duration) -> Result<Vec<String>, Failure> {
        let socket = self.options.socket_dir.display().to_string();
        let result = self.session()?.run(statements, budget);
        result.map_err(|error| match error {
            SessionError::Ended(message) => Failure::retryable(format!(
                "the PostgreSQL server with its socket in {socket} is not reachable: {message}"
            )),
            SessionError::Timeout(_) => Failure::timeout(format!(
                "the PostgreSQL server did not answer `{}` within {} ms",
                statements.trim(),
                budget.as_millis()
            )),
            other => Failure::retryable(format!("PostgreSQL refused: {other}")),
        })
    }

    /// Writes the backup label and the WAL the backup needs into the shadow's copy of the
    /// cluster, mounted from the read-write view `image`.
    fn complete_shadow(&self, image: &Path, stopped: &StoppedBackup) -> Result<(), Failure> {
        let all = mounts::mounts();
        let pgdata_inside = mounts::path_inside_file_system(&self.options.pgdata, &all)
            .ok_or_else(|| {
                Failure::nonretryable("cannot place the data directory in its file system")
            })?;
        let live_wal = std::fs::canonicalize(self.options.pgdata.join("pg_wal"))
            .unwrap_or_else(|_| self.options.pgdata.join("pg_wal"));
        let same_volume = mounts::mount_of(&live_wal, &all).map(|mount| mount.mount_point)
            == mounts::mount_of(&self.options.pgdata, &all).map(|mount| mount.mount_point);
        let wal_inside = if same_volume {
            mounts::path_inside_file_system(&live_wal, &all)
        } else {
            None
        };
        let start_segment = stopped
            .label
            .lines()
            .find_map(|line| line.strip_prefix("START WAL LOCATION:"))
            .and_then(|rest| rest.split("(file ").nth(1))
            .map(|rest| rest.trim_end_matches(')').trim().to_string())
            .ok_or_else(|| Failure::nonretryable("the backup label names no start WAL file"))?;
        let copied = mounts::with_view_mounted(image, |root| -> Result<usize, String> {
            let owner = self.owner();
            let target = root.join(&pgdata_inside);
            let place = |path: &Path, bytes: &[u8]| -> Result<(), String> {
                std::fs::write(path, bytes)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
                if let Some((uid, gid, _)) = owner {
                    std::os::unix::fs::chown(path, Some(uid), Some(gid))
                        .map_err(|error| format!("{}: {error}", path.display()))?;
                }
                Ok(())
            };
            place(&target.join("backup_label"), stopped.label.as_bytes())?;
            // The live server's lock file would stop a server started on the shadow while the
            // live one runs (pg_basebackup leaves it out for the same reason).
            let _ = std::fs::remove_file(target.join("postmaster.pid"));
            if !stopped.tablespace_map.trim().is_empty() {
                place(
                    &target.join("tablespace_map"),
                    stopped.tablespace_map.as_bytes(),
                )?;
            }
            let mut copied = 0;
            if let Some(wal_inside) = wal_inside {
                let shadow_wal = root.join(wal_inside);
                let mut segments: Vec<String> = std::fs::read_dir(&live_wal)
                    .map_err(|error| format!("{}: {error}", live_wal.display()))?
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().to_string())
                    .filter(|name| name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit()))
                    .filter(|name| *name >= start_segment && *name <= stopped.stop_segment)
                    .collect();
                segments.sort();
                for segment in segments {
                    let bytes = std::fs::read(live_wal.join(&segment))
                        .map_err(|error| format!("{segment}: {error}"))?;
                    place(&shadow_wal.join(&segment), &bytes)?;
                    copied += 1;
                }
            }
            Ok(copied)
        })?;
        log(&format!(
            "wrote backup_label and {copied} WAL segment(s) into the shadow of {}",
            self.options.pgdata.display()
        ));
        Ok(())
    }
}

impl Writer for PostgresWriter {
    fn identify(&mut self, budget: Duration) -> Result<Value, Failure> {
        let lines = self.run(
            "SHOW data_directory;\nSELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global');",
            budget,
        )?;
        let data_directory = lines
            .first()
            .map(|line| PathBuf::from(line.trim()))
            .ok_or_else(|| Failure::retryable("the server did not say its data directory"))?;
        let all = mounts::mounts();
        let devices = BTreeMap::new();
        let mut files = vec![mounts::file_entry(&data_directory, &all, &devices)];
        for tablespace in lines.iter().skip(1).filter(|line| !line.trim().is_empty()) {
            files.push(mounts::file_entry(
                Path::new(tablespace.trim()),
                &all,
                &devices,
            ));
        }
        let wal = std::fs::canonicalize(data_directory.join("pg_wal"))
            .unwrap_or_else(|_| data_directory.join("pg_wal"));
        if !wal.starts_with(&data_directory) {
            files.push(mounts::file_entry(&wal, &all, &devices));
        }
        Ok(json!({
            "usage": "user_data",
            "source": "transacted_db",
            "restore_method": {"method": "stop_restore_start", "writer_restore": "always", "reboot_required": false},
            "components": [{
                "name": "cluster",
                "logical_path": "postgresql",
                "type": "database",
                "caption": format!("PostgreSQL cluster {}", data_directory.display()),
                "selectable": true,
                "selectable_for_restore": true,
                "notify_on_backup_complete": false,
                "files": files,
            }],
            "excludes": [
                {"volume": files[0]["volume"].clone(), "path": format!("{}/postmaster.pid", files[0]["path"].as_str().unwrap_or("")), "filespec": "postmaster.pid", "recursive": false}
            ],
        }))
    }

    fn prepare_snapshot(&mut self, _request: &Value, budget: Duration) -> Result<(), Failure> {
        self.stopped = None;
        self.run("CHECKPOINT;", budget).map(|_| ())
    }

    fn freeze(&mut self, request: &Value, budget: Duration) -> Result<Answer, Failure> {
        let set = request
            .get("snapshot_set_id")
            .and_then(Value::as_str)
            .unwrap_or("diskshadow")
            .replace('\'', "");
        self.run(
            &format!("SELECT pg_backup_start('diskshadow {set}', true);"),
            budget,
        )?;
        self.in_backup = true;
        Ok(Answer::new())
    }

    fn thaw(&mut self, budget: Duration) -> Result<(), Failure> {
        let lines = self.run(
            "SELECT encode(convert_to(labelfile, 'UTF8'), 'hex') || '|' || encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex') || '|' || pg_walfile_name(lsn) FROM pg_backup_stop(false);",
            budget,
        );
        self.in_backup = false;
        let lines = lines?;
        let fields: Vec<&str> = lines
            .first()
            .map(|line| line.split('|').collect())
            .unwrap_or_default();
        if fields.len() != 3 {
            return Err(Failure::nonretryable(format!(
                "pg_backup_stop answered {lines:?}"
            )));
        }
        self.stopped = Some(StoppedBackup {
            label: hex_decode(fields[0]),
            tablespace_map: hex_decode(fields[1]),
            stop_segment: fields[2].trim().to_string(),
        });
        Ok(())
    }

    fn post_snapshot(&mut self, request: &Value, _budget: Duration) -> Result<(), Failure> {
        let Some(stopped) = self.stopped.take() else {
            return Ok(());
        };
        let view = mounts::recovery_view_of(&self.options.pgdata, request);
        match view {
            Some(image) => self.complete_shadow(&image, &stopped),
            None => {
                log("no auto-recovery view of the data directory's volume: the shadow is crash-consistent and starts with crash recovery");
                Ok(())
            }
        }
    }

    fn abort(&mut self, budget: Duration) -> Result<(), Failure> {
        if self.in_backup {
            self.in_backup = false;
            if self
                .run("SELECT 1 FROM pg_backup_stop(false);", budget)
                .is_err()
            {
                // The backup ends with its session.
                self.session = None;
            }
        }
        self.stopped = None;
        Ok(())
    }

    fn pre_restore(&mut self, budget: Duration) -> Result<(), Failure> {
        self.session = None;
        let mut command = self.as_owner(&self.bin("pg_ctl"));
        command
            .args(["stop", "-m", "fast", "-w", "-t"])
            .arg(budget.as_secs().max(1).to_string())
            .arg("-D")
            .arg(&self.options.pgdata);
        let output = command
            .output()
            .map_err(|error| Failure::nonretryable(format!("pg_ctl: {error}")))?;
        // Already stopped is fine for a restore.
        let text = String::from_utf8_lossy(&output.stderr);
        if output.status.success() || text.contains("Is server running?") {
            Ok(())
        } else {
            Err(Failure::nonretryable(format!(
                "pg_ctl stop failed: {}",
                text.trim()
            )))
        }
    }

    fn post_restore(&mut self, budget: Duration) -> Result<(), Failure> {
        let log_file = self.options.pgdata.join("diskshadow-post-restore.log");
        let mut command = self.as_owner(&self.bin("pg_ctl"));
        command
            .args(["start", "-w", "-t"])
            .arg(budget.as_secs().max(1).to_string())
            .arg("-D")
            .arg(&self.options.pgdata)
            .arg("-l")
            .arg(&log_file)
            .arg("-o")
            .arg(format!(
                "-k {} -p {}",
                self.options.socket_dir.display(),
                self.options.port
            ));
        mounts::run_checked(&mut command, "pg_ctl start")
    }
}
