//! Shared by the tests of the in-box writers: an ext4 file system on an attached diskshadow
//! volume, loop-mounted, for an application's data; and the tools those tests need.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::diskshadow;

pub fn sh(command: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .expect("sh")
}

pub fn sh_ok(command: &str) -> String {
    let output = sh(command);
    assert!(
        output.status.success(),
        "`{command}` failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// True when every tool is present; else says `skipped:` (a failure under
/// DISKSHADOW_REQUIRE_TOOLS=1) and returns false.
pub fn have_tools(tools: &[&str]) -> bool {
    if !sh("test \"$(id -u)\" = 0").status.success() {
        super::skip("these tests need root (loop devices, FUSE, servers run as their users)");
        return false;
    }
    for tool in tools {
        let present = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            sh(&format!("command -v {tool}")).status.success()
        };
        if !present {
            super::skip(format!(
                "{tool} is not installed (.ci/run installs postgresql, mariadb-server, sqlite3, fuse3, e2fsprogs)"
            ));
            return false;
        }
    }
    true
}

/// An ext4 image attached through the service (FUSE) and loop-mounted at `mount_point`: what
/// an application writes there goes through the provider, so shadows of it are live.
pub struct AttachedExt4 {
    pub store: PathBuf,
    pub image: PathBuf,
    pub mount_point: PathBuf,
    stops: Vec<String>,
}

impl AttachedExt4 {
    pub fn new(work: &Path, name: &str, size: &str) -> Self {
        let store = work.join("store");
        let image = work.join(format!("{name}.img"));
        let attach = work.join("attach");
        let mount_point = work.join("mnt");
        std::fs::create_dir_all(&attach).expect("attach dir");
        std::fs::create_dir_all(&mount_point).expect("mount dir");
        sh_ok(&format!(
            "mkfs.ext4 -q -F -b 4096 {} {size}",
            image.display()
        ));
        diskshadow(&store)
            .args(["volume", "attach"])
            .arg(&image)
            .arg(&attach)
            .current_dir(work)
            .assert()
            .success();
        sh_ok(&format!(
            "mount -o loop {} {}",
            attach.join(format!("{name}.img")).display(),
            mount_point.display()
        ));
        Self {
            store,
            image,
            mount_point,
            stops: Vec::new(),
        }
    }

    /// A shell command run at cleanup, before unmounting (stopping the servers).
    pub fn on_cleanup(&mut self, command: String) {
        self.stops.push(command);
    }
}

impl Drop for AttachedExt4 {
    fn drop(&mut self) {
        for command in self.stops.iter().rev() {
            let _ = sh(command);
        }
        let _ = sh(&format!(
            "umount {} 2>/dev/null || umount -l {} 2>/dev/null",
            self.mount_point.display(),
            self.mount_point.display()
        ));
        let _ = diskshadow(&self.store).args(["service", "stop"]).output();
    }
}

/// An in-box writer driven over its protocol by the test itself.
pub struct WriterProcess {
    child: std::process::Child,
    input: Option<std::process::ChildStdin>,
    answers: std::io::BufReader<std::process::ChildStdout>,
    next_id: u64,
}

impl WriterProcess {
    pub fn start(arguments: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_diskshadow-writer"))
            .args(arguments)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the writer starts");
        let input = child.stdin.take();
        let answers = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            input,
            answers,
            next_id: 1,
        }
    }

    /// Sends `event` with `fields` and returns the answer (log lines skipped).
    pub fn send(&mut self, event: &str, fields: serde_json::Value) -> serde_json::Value {
        use std::io::{BufRead, Write};
        let id = self.next_id;
        self.next_id += 1;
        let mut request = fields;
        request["id"] = serde_json::Value::from(id);
        request["event"] = serde_json::Value::from(event);
        let input = self.input.as_mut().expect("input open");
        writeln!(input, "{request}").expect("send");
        input.flush().expect("flush");
        loop {
            let mut line = String::new();
            assert!(
                self.answers.read_line(&mut line).expect("read") > 0,
                "the writer ended at {event}"
            );
            let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            if value.get("id") == Some(&serde_json::Value::from(id)) {
                return value;
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes the input (end of input is abort) and waits for the writer to exit.
    pub fn finish(&mut self) -> bool {
        self.input = None;
        self.child
            .wait()
            .map(|status| status.success())
            .unwrap_or(false)
    }
}

impl Drop for WriterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A write load: one transaction per statement through a client kept open (`psql`, `mariadb`),
/// numbered from 1, remembering which ones the server acknowledged. `statement(n)` must print
/// `n` on a line of its own once transaction `n` is committed.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acknowledged: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(mut client: Command, statement: fn(u64) -> String) -> Self {
        use std::io::{BufRead, Write};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut child = client
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the load's client starts");
        let (thread_stop, thread_acknowledged) = (stop.clone(), acknowledged.clone());
        let thread = std::thread::spawn(move || {
            let mut input = child.stdin.take().expect("stdin");
            let mut output = std::io::BufReader::new(child.stdout.take().expect("stdout"));
            let mut number = 0u64;
            // Bounded: at most 20000 transactions, a few hundred a second.
            while !thread_stop.load(Ordering::SeqCst) && number < 20_000 {
                number += 1;
                if writeln!(input, "{}", statement(number))
                    .and_then(|()| input.flush())
                    .is_err()
                {
                    break;
                }
                let mut line = String::new();
                if output.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line.trim() == number.to_string() {
                    thread_acknowledged.store(number, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            drop(input);
            let _ = child.wait();
        });
        Self {
            stop,
            acknowledged,
            thread: Some(thread),
        }
    }

    pub fn last_acknowledged(&self) -> u64 {
        self.acknowledged.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the load and returns the last acknowledged transaction.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.last_acknowledged()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Cleanup = Box<dyn FnOnce() + Send>;

static AT_EXIT: std::sync::Mutex<Vec<Cleanup>> = std::sync::Mutex::new(Vec::new());

extern "C" fn run_at_exit() {
    let cleanups = match AT_EXIT.lock() {
        Ok(mut cleanups) => std::mem::take(&mut *cleanups),
        Err(_) => return,
    };
    for cleanup in cleanups.into_iter().rev() {
        cleanup();
    }
}

/// Runs `cleanup` when the test binary exits (a server shared by its tests is stopped by PID
/// and its volume unmounted then), last registered first.
pub fn at_exit(cleanup: Cleanup) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: run_at_exit is a plain extern "C" function that never unwinds (the cleanups
        // ignore their errors).
        unsafe {
            libc::atexit(run_at_exit);
        }
    });
    AT_EXIT.lock().expect("cleanups").push(cleanup);
}

/// Runs `diskshadow writer check NAME` on the store; it must pass and say so.
pub fn assert_writer_check_passes(store: &Path, name: &str) {
    let checked = diskshadow(store)
        .args(["writer", "check", name])
        .output()
        .expect("check");
    let report = String::from_utf8_lossy(&checked.stdout).to_string();
    assert!(
        checked.status.success() && report.contains("The writer follows the protocol."),
        "writer check: {report}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}
