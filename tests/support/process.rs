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
    let script = work.join(name);
    fs::write(&script, body).expect("script");
    let output = diskshadow(store)
        .arg("-s")
        .arg(&script)
        .current_dir(work)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
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
