//! Helpers for tests that run the binaries as users do: through the service process.

use std::fs;
use std::path::Path;

use assert_cmd::Command;

/// `diskshadow --store STORE` with a short service idle timeout, so services started by tests
/// exit soon after them.
pub fn diskshadow(store: &Path) -> Command {
    let mut command = Command::cargo_bin("diskshadow").expect("binary");
    command
        .arg("--store")
        .arg(store)
        .env_remove("DISKSHADOW_STORE")
        .env("DISKSHADOW_IDLE_TIMEOUT", "5");
    command
}

/// Writes `body` to `work/name` and runs it with `-s`; the script must succeed. Returns stdout.
pub fn run_script(store: &Path, work: &Path, name: &str, body: &str) -> String {
    let (succeeded, stdout, stderr) = run_script_file(store, work, name, body);
    assert!(succeeded, "{name} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Writes `body` to `work/name` and runs it with `-s`; the script must fail. Returns stdout
/// followed by stderr.
pub fn run_failing_script(store: &Path, work: &Path, name: &str, body: &str) -> String {
    let (succeeded, stdout, stderr) = run_script_file(store, work, name, body);
    assert!(!succeeded, "{name} should fail:\n{stdout}");
    format!("{stdout}{stderr}")
}

/// Writes `body` to `work/name` and runs it with `-s` in `work`: success, stdout, stderr.
fn run_script_file(store: &Path, work: &Path, name: &str, body: &str) -> (bool, String, String) {
    let script = work.join(name);
    fs::write(&script, body).expect("script");
    let output = diskshadow(store)
        .arg("-s")
        .arg(&script)
        .current_dir(work)
        .output()
        .expect("runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// The shadow IDs of `* Shadow copy ID = {…}` lines, in order.
pub fn shadow_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("* Shadow copy ID = "))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Polls `condition` every 20 ms until it holds, failing the test with `what` after `seconds`.
pub fn wait_for(seconds: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How many processes have `needle` in their command line (a test's store path names the
/// processes it started, the service included).
pub fn processes_mentioning(needle: &Path) -> usize {
    let needle = needle.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.bytes().all(|byte| byte.is_ascii_digit()))
        })
        .filter_map(|entry| fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| {
            cmdline
                .windows(needle.len().max(1))
                .any(|window| window == needle)
        })
        .count()
}

/// `vssadmin --store STORE` with a short service idle timeout.
pub fn vssadmin(store: &Path) -> Command {
    let mut command = Command::cargo_bin("vssadmin").expect("binary");
    command
        .arg("--store")
        .arg(store)
        .env_remove("DISKSHADOW_STORE")
        .env_remove("DISKSHADOW_SPAWNED_SERVICE")
        .env_remove("DISKSHADOW_SERVICE_BINARY")
        .env("DISKSHADOW_IDLE_TIMEOUT", "5");
    command
}
