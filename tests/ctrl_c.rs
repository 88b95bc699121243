//! Ctrl-C during a long command, as a user meets it: the shell (in a script, and at its
//! interactive prompt on a terminal) asks the service to stop a running resync where that is
//! safe, says what state it left, and goes on; the service's state afterwards (the shadow
//! listed, the destination's bytes) is the one it said.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::process::{diskshadow, shadow_ids, wait_for};

/// Data of the resync's source: a copy of several chunks and checkpoints (the test holds the
/// service still while the Ctrl-C travels, see [`HeldService`]).
const DATA_BYTES: usize = 256 << 20;
const VOLUME_BYTES: u64 = 320 << 20;

/// Stops the store's service when the test ends, however it ends.
struct ServiceGuard(PathBuf);

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let _ = diskshadow(&self.0).args(["service", "stop"]).output();
    }
}

fn content() -> &'static [u8] {
    static CONTENT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CONTENT.get_or_init(|| {
        // Each byte is (its index / 4093) | 1: one period of 256 steps, repeated.
        let period: Vec<u8> = (0..4093 * 256)
            .map(|index| (index / 4093) as u8 | 1)
            .collect();
        let mut content = Vec::with_capacity(DATA_BYTES);
        while content.len() < DATA_BYTES {
            let take = period.len().min(DATA_BYTES - content.len());
            content.extend_from_slice(&period[..take]);
        }
        content
    })
}

/// A 320 MiB sparse image holding 256 MiB of data, and two empty target images as large.
fn images(work: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let source = work.join("lun.img");
    let file = fs::File::create(&source).expect("image");
    file.set_len(VOLUME_BYTES).expect("size");
    std::os::unix::fs::FileExt::write_all_at(&file, content(), 0).expect("data");
    let target = |name: &str| {
        let path = work.join(name);
        fs::File::create(&path)
            .and_then(|file| file.set_len(VOLUME_BYTES))
            .expect("target");
        path
    };
    (
        source,
        target("script-target.img"),
        target("shell-target.img"),
    )
}

/// Collects what a reader gives on a thread, so a test can wait for text while it runs.
fn collect(reader: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    collect_to_end(reader).0
}

/// Like [`collect`], with the thread: joined, it has read everything up to end of file.
fn collect_to_end(
    mut reader: impl Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let reading = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = reader.read(&mut buffer) {
            if read == 0 {
                break;
            }
            sink.lock()
                .expect("output")
                .push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    });
    (text, reading)
}

fn text_of(output: &Arc<Mutex<String>>) -> String {
    output.lock().expect("output").clone()
}

/// The resyncs the store records as unfinished (`<store>/resync/*.resync`): a resync's state
/// file is there from its start, so a test knows the copy runs when it sends Ctrl-C.
fn resyncs_recorded(store: &Path) -> Vec<PathBuf> {
    fs::read_dir(store.join("resync"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "resync"))
                .collect()
        })
        .unwrap_or_default()
}

/// What `volume read` gives of the target through the service, compared with the source's
/// data and zeros after it.
fn target_reads_as_the_shadow(store: &Path, target: &Path, work: &Path) -> bool {
    let out = work.join("read.bin");
    let output = diskshadow(store)
        .args(["volume", "read"])
        .arg(target)
        .arg("--output")
        .arg(&out)
        .output()
        .expect("volume read");
    assert!(output.status.success(), "{output:?}");
    let read = fs::read(&out).expect("read back");
    let _ = fs::remove_file(&out);
    read.len() as u64 == VOLUME_BYTES
        && read[..DATA_BYTES] == content()[..]
        && read[DATA_BYTES..].iter().all(|byte| *byte == 0)
}

/// A shell on a new pseudo-terminal, as a user's terminal runs it: its own session with the
/// terminal as controlling terminal, so a typed Ctrl-C (byte 0x03) raises SIGINT in it.
struct Terminal {
    child: Child,
    input: fs::File,
    output: Arc<Mutex<String>>,
}

impl Terminal {
    fn spawn(store: &Path, work: &Path) -> Terminal {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty fills two descriptors; the null pointers ask for no name, default
        // termios and window size.
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("diskshadow"));
        command
            .arg("--store")
            .arg(store)
            .env_remove("DISKSHADOW_STORE")
            .env("DISKSHADOW_IDLE_TIMEOUT", "5")
            .env("TERM", "dumb")
            .current_dir(work)
            .stdin(Stdio::from(slave.try_clone().expect("slave")))
            .stdout(Stdio::from(slave.try_clone().expect("slave")))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec only setsid and ioctl, both async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("diskshadow on a terminal");
        let reader = fs::File::from(master.try_clone().expect("master"));
        let input = fs::File::from(master);
        Terminal {
            child,
            input,
            output: collect(reader),
        }
    }

    fn type_line(&mut self, line: &str) {
        self.input
            .write_all(format!("{line}\r").as_bytes())
            .expect("type");
    }

    fn ctrl_c(&mut self) {
        self.input.write_all(&[0x03]).expect("Ctrl-C");
    }

    /// Waits until the output after `from` contains `needle`; returns the output's length
    /// after it.
    fn wait_for_text(&self, from: usize, needle: &str, seconds: u64) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let text = text_of(&self.output);
            if let Some(at) = text.get(from..).and_then(|rest| rest.find(needle)) {
                return from + at + needle.len();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "`{needle}` did not come on the terminal:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The whole story: a script's resync stopped by SIGINT (the script stops, exit status 1),
/// then the same resync taken up at the interactive prompt and stopped again with a typed
/// Ctrl-C (the prompt comes back, the shell lives on, the shadow is listed, the target reads
/// as the shadow while only part of it was copied), then finished by a last resync.
/// Holds the store's service still (SIGSTOP) until dropped (SIGCONT): a resync caught at its
/// start stays there while the Ctrl-C travels, as on a volume large enough that the copy takes
/// minutes, so the test does not race a 256 MiB copy that ends in well under a second. The
/// requester's stop request waits in the socket's queue meanwhile (its greeting wait is 5 s).
struct HeldService(i32);

impl HeldService {
    fn hold(store: &Path) -> HeldService {
        let pid: i32 = fs::read_to_string(store.join("service.lock"))
            .expect("the service's lock file")
            .trim()
            .parse()
            .expect("the service's pid");
        // SAFETY: kill(2) on the service this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        HeldService(pid)
    }
}

impl Drop for HeldService {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the service this test stopped.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn ctrl_c_stops_a_resync_where_it_is_safe_and_the_shell_goes_on() {
    let work = support::scratch("ctrl-c-resync");
    let store = work.join("store");
    let _service = ServiceGuard(store.clone());
    let (source, target, shell_target) = images(&work);

    // A script: create a shadow, pair it with the target, resync; SIGINT once it started.
    let script = work.join("resync.dsh");
    fs::write(
        &script,
        format!(
            "set context persistent\nadd volume {}\ncreate\nadd shadow %VSS_SHADOW_1% {}\nresync\nlist shadows all\n",
            source.display(),
            target.display()
        ),
    )
    .expect("script");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("diskshadow"))
        .arg("--store")
        .arg(&store)
        .arg("-s")
        .arg(&script)
        .env_remove("DISKSHADOW_STORE")
        .env("DISKSHADOW_IDLE_TIMEOUT", "5")
        .current_dir(&work)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("diskshadow -s");
    let (stdout, stdout_read) = collect_to_end(child.stdout.take().expect("stdout"));
    let (stderr, stderr_read) = collect_to_end(child.stderr.take().expect("stderr"));
    wait_for(60, "the resync started", || {
        !resyncs_recorded(&store).is_empty()
    });
    let held = HeldService::hold(&store);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    // The shell notices within its 100 ms poll and queues its stop request.
    std::thread::sleep(Duration::from_millis(1000));
    drop(held);
    let status = child.wait().expect("wait");
    // Both pipes read to their end: the two readers run apart, and the one of standard error
    // may lag behind the other's last line.
    stdout_read.join().expect("stdout read");
    stderr_read.join().expect("stderr read");
    let (out, err) = (text_of(&stdout), text_of(&stderr));
    assert_eq!(status.code(), Some(1), "stopped, not killed: {out}\n{err}");
    assert!(err.contains("was stopped (Ctrl-C) at"), "{out}\n{err}");
    assert!(
        err.contains("help: `resync` again takes the copy up"),
        "{err}"
    );
    assert!(out.contains("interrupted (Ctrl-C)"), "{out}");
    assert!(
        !out.contains("-> list shadows all"),
        "the script stopped: {out}"
    );
    let shadow = shadow_ids(&out)
        .first()
        .cloned()
        .expect("the created shadow");

    // The service's state is what the shell said: the target reads as the shadow already,
    // while its image holds only part of the copy.
    assert!(target_reads_as_the_shadow(&store, &target, &work));
    let raw = fs::read(&target).expect("target image");
    assert!(
        raw[..DATA_BYTES] != content()[..],
        "the resync stopped before its end"
    );
    drop(raw);

    // The interactive shell on a terminal: a resync onto the other target, Ctrl-C a second
    // in.
    let mut terminal = Terminal::spawn(&store, &work);
    let mut seen = terminal.wait_for_text(0, "DISKSHADOW>", 30);
    terminal.type_line(&format!("add shadow {shadow} {}", shell_target.display()));
    seen = terminal.wait_for_text(seen, "will be resynchronized", 30);
    seen = terminal.wait_for_text(seen, "DISKSHADOW>", 30);
    // The first resync's record stays while it is stopped (unless a service start finished
    // it meanwhile): this one's is the record that was not there before.
    let before = resyncs_recorded(&store);
    terminal.type_line("resync");
    wait_for(60, "the second resync started", || {
        resyncs_recorded(&store)
            .iter()
            .any(|path| !before.contains(path))
    });
    let held = HeldService::hold(&store);
    terminal.ctrl_c();
    std::thread::sleep(Duration::from_millis(1000));
    drop(held);
    seen = terminal.wait_for_text(seen, "was stopped (Ctrl-C) at", 60);
    seen = terminal.wait_for_text(seen, "DISKSHADOW>", 30);
    assert!(
        terminal.child.try_wait().expect("status").is_none(),
        "the shell lives on: {}",
        text_of(&terminal.output)
    );
    terminal.type_line("list shadows all");
    seen = terminal.wait_for_text(seen, &shadow, 30);
    terminal.wait_for_text(seen, "DISKSHADOW>", 30);
    assert!(target_reads_as_the_shadow(&store, &shell_target, &work));
    terminal.type_line("exit");
    wait_for(30, "the shell exits", || {
        terminal.child.try_wait().ok().flatten().is_some()
    });
    let status = terminal.child.wait().expect("status");
    assert!(status.success(), "{}", text_of(&terminal.output));

    // A last resync of both pairs, left to run, finishes both copies onto the images.
    let finished = support::process::run_script(
        &store,
        &work,
        "finish.dsh",
        &format!(
            "add shadow {shadow} {}\nadd shadow {shadow} {}\nresync\n",
            target.display(),
            shell_target.display()
        ),
    );
    assert_eq!(
        finished
            .matches("was resynchronized onto the volume")
            .count(),
        2,
        "{finished}"
    );
    let _ = diskshadow(&store).args(["service", "stop"]).output();
    for image in [&target, &shell_target] {
        let raw = fs::read(image).expect("target image");
        assert!(raw[..DATA_BYTES] == content()[..], "the finished copy");
        assert!(raw[DATA_BYTES..].iter().all(|byte| *byte == 0));
    }
}

/// Ctrl-C at the step prompt of the interactive shell aborts the writers' sequence and
/// returns to the prompt: no shadow is left, the writer got its abort if it was frozen, and
/// the shell goes on.
#[test]
fn ctrl_c_at_the_step_prompt_returns_to_the_prompt() {
    let work = support::scratch("ctrl-c-step");
    let store = work.join("store");
    let _service = ServiceGuard(store.clone());
    let volume = work.join("one.img");
    fs::File::create(&volume)
        .and_then(|file| file.set_len(1 << 20))
        .expect("image");
    let record = work.join("events.jsonl");
    fs::create_dir_all(store.join("writers")).expect("writers");
    fs::write(
        store.join("writers/step.toml"),
        format!(
            "name = \"Step Writer\"\nid = \"{{66666666-aaaa-4bbb-8ccc-999999999999}}\"\ncommand = [{:?}, \"--name\", \"Step Writer\", \"--component\", {:?}, \"--record\", {:?}]\n",
            env!("CARGO_BIN_EXE_diskshadow-test-writer"),
            format!("db={}", volume.display()),
            record.display().to_string()
        ),
    )
    .expect("registration");
    let mut terminal = Terminal::spawn(&store, &work);
    let mut seen = terminal.wait_for_text(0, "DISKSHADOW>", 30);
    for line in [
        "set step on",
        "set context persistent",
        "add volume one.img",
    ] {
        terminal.type_line(line);
        seen = terminal.wait_for_text(seen, "DISKSHADOW>", 30);
    }
    terminal.type_line("create");
    seen = terminal.wait_for_text(seen, "[c/s/a]", 30);
    terminal.ctrl_c();
    seen = terminal.wait_for_text(seen, "Ctrl-C: aborting.", 30);
    seen = terminal.wait_for_text(seen, "DISKSHADOW>", 30);
    assert!(
        terminal.child.try_wait().expect("status").is_none(),
        "the shell lives on: {}",
        text_of(&terminal.output)
    );
    terminal.type_line("list shadows all");
    terminal.wait_for_text(seen, "Number of shadow copies listed: 0", 30);
    terminal.type_line("exit");
    wait_for(30, "the shell exits", || {
        terminal.child.try_wait().ok().flatten().is_some()
    });
    let events = fs::read_to_string(&record).unwrap_or_default();
    if events.contains("\"freeze\"") {
        assert!(
            events.contains("\"abort\""),
            "a frozen writer is aborted: {events}"
        );
    }
}
