//! File System Writer: at Freeze, flushes and holds (FIFREEZE) every file system mounted from a
//! volume of the set that the service does not hold already: file systems loop-mounted from a
//! volume's image, ones on NBD devices connected to an attached volume's NBD export (found
//! through `--store`, see `nbd.rs`), and ones on block devices given with `--device`. A loop device on an attached volume's FUSE file is held by the service
//! itself during the commit, so it is reported but not frozen a second time.
//!
//! The freeze is held by a child process (`freeze-holder`) that thaws when its input closes,
//! when it is told to, or when the deadline passes: so the file systems are thawed even when
//! this writer is killed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mounts;
use crate::nbd;
use crate::protocol::{log, Answer, Failure, Writer};

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// A block device and the volume it shows, `DEVICE=VOLUME` (repeatable), for devices that
    /// are not loop devices (for example /dev/nbd0 connected to an attached volume).
    #[arg(long = "device", value_name = "DEVICE=VOLUME")]
    pub devices: Vec<String>,
    /// The store whose service serves the attached volumes: NBD devices connected to their
    /// NBD exports are found without `--device`.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct HolderOptions {
    #[arg(long)]
    pub deadline_ms: u64,
    pub mount_points: Vec<PathBuf>,
}

/// One file system mounted from a volume.
struct Candidate {
    mount_point: PathBuf,
    volume: String,
    held_by_service: bool,
}

pub struct FileSystemWriter {
    /// Block devices given with `--device`.
    devices: BTreeMap<String, String>,
    store: Option<PathBuf>,
    /// The set's volumes, from PrepareForSnapshot.
    set_volumes: Vec<String>,
    holder: Option<(Child, mpsc::Receiver<String>)>,
    problem: Option<String>,
}

fn same_volume(left: &str, right: &str) -> bool {
    if left.eq_ignore_ascii_case(right) {
        return true;
    }
    match (std::fs::canonicalize(left), std::fs::canonicalize(right)) {
        (Ok(left), Ok(right)) => left == right,
        _ => false,
    }
}

impl FileSystemWriter {
    pub fn new(options: Options) -> Self {
        let mut devices = BTreeMap::new();
        let mut problem = None;
        for text in &options.devices {
            match text.split_once('=') {
                Some((device, volume)) => {
                    devices.insert(device.to_string(), volume.to_string());
                }
                None => problem = Some(format!("--device {text}: expected DEVICE=VOLUME")),
            }
        }
        Self {
            devices,
            store: options.store,
            set_volumes: Vec::new(),
            holder: None,
            problem,
        }
    }

    fn candidates(&self) -> Vec<Candidate> {
        let all = mounts::mounts();
        // The service is asked only when a file system is mounted from an NBD device that
        // --device does not name (so no service is started, or asked during a create, for
        // nothing); devices given with --device win over discovered ones.
        let unnamed_nbd = all.iter().any(|mount| {
            mount.source.starts_with("/dev/nbd") && !self.devices.contains_key(&mount.source)
        });
        let mut devices = match (&self.store, unnamed_nbd) {
            (Some(store), true) => nbd::discover(store),
            _ => BTreeMap::new(),
        };
        devices.extend(self.devices.clone());
        let mut seen = Vec::new();
        let mut found = Vec::new();
        for mount in &all {
            if !mount.source.starts_with("/dev/") || mount.root != Path::new("/") {
                continue;
            }
            let Some(source) = mounts::volume_of_device(&mount.source, &all, &devices) else {
                continue;
            };
            // The same file system mounted twice is frozen once.
            if seen.contains(&mount.source) {
                continue;
            }
            seen.push(mount.source.clone());
            found.push(Candidate {
                mount_point: mount.mount_point.clone(),
                volume: source.volume,
                held_by_service: source.held_by_service,
            });
        }
        found
    }

    fn release(&mut self, budget: Duration) -> Result<(), Failure> {
        let Some((mut child, lines)) = self.holder.take() else {
            return Ok(());
        };
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = writeln!(stdin, "thaw");
        }
        child.stdin = None;
        let answer = lines.recv_timeout(budget);
        let _ = child.wait();
        match answer {
            Ok(line) if line.starts_with("thawed") => Ok(()),
            Ok(line) => Err(Failure::nonretryable(format!(
                "the freeze holder said: {line}"
            ))),
            // The holder thaws on end of input whatever happened.
            Err(_) => Ok(()),
        }
    }
}

impl Writer for FileSystemWriter {
    fn identify(&mut self, _budget: Duration) -> Result<Value, Failure> {
        if let Some(problem) = &self.problem {
            return Err(Failure::nonretryable(problem.clone()));
        }
        let components: Vec<Value> = self
            .candidates()
            .iter()
            .map(|candidate| {
                json!({
                    "name": candidate.mount_point.display().to_string(),
                    "logical_path": "filesystems",
                    "type": "filegroup",
                    "caption": if candidate.held_by_service {
                        format!("{} (held by the service)", candidate.mount_point.display())
                    } else {
                        format!("{}", candidate.mount_point.display())
                    },
                    "selectable": true,
                    "selectable_for_restore": false,
                    "notify_on_backup_complete": false,
                    "files": [{"volume": candidate.volume, "path": "/", "filespec": "*", "recursive": true}],
                })
            })
            .collect();
        Ok(json!({
            "usage": "system_service",
            "source": "other",
            "restore_method": {"method": "restore_if_can_replace", "writer_restore": "never", "reboot_required": false},
            "components": components,
            "excludes": [],
        }))
    }

    fn prepare_snapshot(&mut self, request: &Value, _budget: Duration) -> Result<(), Failure> {
        self.set_volumes = request
            .get("volumes")
            .and_then(Value::as_array)
            .map(|volumes| {
                volumes
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(())
    }

    fn freeze(&mut self, request: &Value, budget: Duration) -> Result<Answer, Failure> {
        let targets: Vec<PathBuf> = self
            .candidates()
            .into_iter()
            .filter(|candidate| !candidate.held_by_service)
            .filter(|candidate| {
                self.set_volumes.is_empty()
                    || self
                        .set_volumes
                        .iter()
                        .any(|volume| same_volume(volume, &candidate.volume))
            })
            .map(|candidate| candidate.mount_point)
            .collect();
        let _ = request;
        if targets.is_empty() {
            log("no file system of the set needs holding by this writer");
            return Ok(Answer::new());
        }
        let program = std::env::current_exe()
            .map_err(|error| Failure::nonretryable(format!("cannot find myself: {error}")))?;
        let mut child = Command::new(program)
            .arg("freeze-holder")
            .arg("--deadline-ms")
            .arg(budget.as_millis().to_string())
            .args(&targets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| {
                Failure::nonretryable(format!("cannot start the freeze holder: {error}"))
            })?;
        let (sender, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let first = lines.recv_timeout(budget);
        self.holder = Some((child, lines));
        match first {
            Ok(line) if line.starts_with("frozen") => {
                log(&format!(
                    "holding writes on {}",
                    line.trim_start_matches("frozen").trim()
                ));
                Ok(Answer::new())
            }
            Ok(line) => {
                let _ = self.release(budget);
                Err(Failure::retryable(
                    line.trim_start_matches("error").trim().to_string(),
                ))
            }
            Err(_) => {
                let _ = self.release(Duration::from_secs(1));
                Err(Failure::timeout(
                    "the file systems could not be frozen in time",
                ))
            }
        }
    }

    fn thaw(&mut self, budget: Duration) -> Result<(), Failure> {
        self.release(budget)
    }

    fn abort(&mut self, budget: Duration) -> Result<(), Failure> {
        self.release(budget)
    }
}

fn ioctl(file: &File, request: libc::c_ulong) -> std::io::Result<()> {
    let mut argument: libc::c_int = 0;
    // SAFETY: FIFREEZE and FITHAW take an int pointer; the file is open.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), request as _, &mut argument) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The holder: freezes, says `frozen` (or `error ...`), and thaws on `thaw`, on end of input or
/// at the deadline, whichever comes first; then says `thawed` and exits.
pub fn run_holder(options: HolderOptions) -> Result<(), String> {
    let mut held: Vec<(PathBuf, File)> = Vec::new();
    let mut skipped = Vec::new();
    let mut stdout = std::io::stdout();
    for mount_point in &options.mount_points {
        let file = match File::open(mount_point) {
            Ok(file) => file,
            Err(error) => {
                for (_, file) in held.iter().rev() {
                    let _ = ioctl(file, FITHAW);
                }
                let _ = writeln!(
                    stdout,
                    "error cannot open {}: {error}",
                    mount_point.display()
                );
                return Ok(());
            }
        };
        match ioctl(&file, FIFREEZE) {
            Ok(()) => held.push((mount_point.clone(), file)),
            // Frozen already by someone else: it is held, and that holder will thaw it.
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                skipped.push(mount_point.display().to_string())
            }
            Err(error) => {
                for (_, file) in held.iter().rev() {
                    let _ = ioctl(file, FITHAW);
                }
                let _ = writeln!(
                    stdout,
                    "error cannot freeze {}: {error}",
                    mount_point.display()
                );
                return Ok(());
            }
        }
    }
    let names: Vec<String> = held
        .iter()
        .map(|(path, _)| path.display().to_string())
        .collect();
    let _ = writeln!(
        stdout,
        "frozen {}{}",
        names.join(" "),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" (already frozen elsewhere: {})", skipped.join(" "))
        }
    );
    let _ = stdout.flush();
    let (sender, input) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = sender.send(());
    });
    let deadline = Instant::now() + Duration::from_millis(options.deadline_ms);
    let _ = input.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    for (_, file) in held.iter().rev() {
        let _ = ioctl(file, FITHAW);
    }
    let _ = writeln!(stdout, "thawed");
    let _ = stdout.flush();
    Ok(())
}
