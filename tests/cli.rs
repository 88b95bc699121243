//! Process-level tests of the binaries: arguments, exit statuses, stdin scripts, `/l` logs,
//! and `volume read|write` through the engine.

use std::fs;
use std::path::Path;

use assert_cmd::Command;

mod support;

use support::process::{diskshadow, wait_for};

fn image(path: &Path, size: u64) {
    fs::File::create(path)
        .and_then(|file| file.set_len(size))
        .expect("image");
}

/// Runs `text` as a script (`-s`) against `store`; it must succeed. Returns its stdout.
fn run_script(store: &Path, dir: &Path, text: &str) -> String {
    let script = dir.join("script.dsh");
    fs::write(&script, text).expect("script");
    let output = diskshadow(store)
        .arg("-s")
        .arg(&script)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Creates a persistent shadow of `volume` with a script and returns its ID.
fn persistent_shadow(store: &Path, dir: &Path, volume: &Path) -> String {
    let stdout = run_script(
        store,
        dir,
        &format!(
            "set context persistent nowriters\nadd volume {} alias s\ncreate\n",
            volume.display()
        ),
    );
    stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("Alias s for shadow ID ")
                .and_then(|rest| rest.split_whitespace().next())
        })
        .expect("shadow ID printed")
        .to_string()
}

#[test]
fn check_reports_every_error_and_exits_2() {
    let work = tempfile::tempdir().expect("tempdir");
    let script = work.path().join("bad.dsh");
    fs::write(
        &script,
        "set context persistent\ncrate\nlist shadows everything\nexit\n",
    )
    .expect("script");
    let output = Command::cargo_bin("diskshadow")
        .expect("binary")
        .arg("--check")
        .arg(&script)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("dsh::parse::unknown_command"), "{stderr}");
    assert!(
        stderr.contains("create"),
        "a did-you-mean suggestion: {stderr}"
    );
    assert!(stderr.contains("2 syntax errors"), "{stderr}");
}

#[test]
fn check_accepts_every_shipped_script() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut checked = 0;
    for entry in fs::read_dir(&scripts).expect("scripts/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|extension| extension == "dsh") {
            Command::cargo_bin("diskshadow")
                .expect("binary")
                .arg("--check")
                .arg(&path)
                .assert()
                .success();
            checked += 1;
        }
    }
    assert!(checked > 0, "no scripts in scripts/");
}

#[test]
fn a_script_stops_at_its_first_failure_with_status_1_and_logs_with_slash_l() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let script = work.path().join("stop.dsh");
    let log = work.path().join("run.log");
    fs::write(&script, "set verbose on\r\ndelete shadows id {00000000-0000-0000-0000-000000000001}\r\nset verbose off\r\n").expect("script");
    let output = diskshadow(&store)
        .arg("/s")
        .arg(&script)
        .arg("/l")
        .arg(&log)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("-> set verbose on"), "{stdout}");
    assert!(stdout.contains("DiskShadow is exiting."), "{stdout}");
    assert!(
        !stdout.contains("-> set verbose off"),
        "the script went on after the failure: {stdout}"
    );
    let logged = fs::read_to_string(&log).expect("log written");
    assert!(
        logged.contains("-> set verbose on") && logged.contains("DiskShadow is exiting."),
        "{logged}"
    );
    assert!(
        logged.contains("VSS_E_OBJECT_NOT_FOUND"),
        "errors reach the log too: {logged}"
    );
}

#[test]
fn syntax_errors_in_a_script_run_nothing_and_exit_2() {
    let work = tempfile::tempdir().expect("tempdir");
    let script = work.path().join("bad.dsh");
    fs::write(
        &script,
        "add alias x {11111111-2222-3333-4444-555555555555}\nlst shadows all\n",
    )
    .expect("script");
    let output = diskshadow(&work.path().join("store"))
        .arg("-s")
        .arg(&script)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("-> add alias"),
        "nothing may run"
    );
}

#[test]
fn standard_input_is_a_script_with_parameters_unavailable() {
    let work = tempfile::tempdir().expect("tempdir");
    let output = diskshadow(&work.path().join("store"))
        .write_stdin("list providers\nexit\n")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("-> list providers"), "{stdout}");
    assert!(
        stdout.contains("{b5946137-7b9f-4925-af80-51abd60b20d5}"),
        "{stdout}"
    );
}

#[test]
fn script_parameters_expand() {
    let work = tempfile::tempdir().expect("tempdir");
    let script = work.path().join("params.dsh");
    fs::write(&script, "add alias p %DISKSH_PARAM_1%\nadd\n").expect("script");
    let output = diskshadow(&work.path().join("store"))
        .arg("-s")
        .arg(&script)
        .arg("{11111111-2222-3333-4444-555555555555}")
        .output()
        .expect("runs");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("Alias p = {11111111-2222-3333-4444-555555555555}"));
}

#[test]
fn windows_help_switch_and_bad_switches() {
    Command::cargo_bin("diskshadow")
        .expect("binary")
        .arg("/?")
        .assert()
        .success();
    Command::cargo_bin("diskshadow")
        .expect("binary")
        .arg("--bogus")
        .assert()
        .code(2);
}

#[test]
fn volume_write_and_read_go_through_the_engine_and_shadows_keep_their_bytes() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let volume = work.path().join("data.img");
    image(&volume, 1 << 20);
    let before = work.path().join("before.bin");
    fs::write(&before, vec![0x5a; 8192]).expect("input");
    diskshadow(&store)
        .args(["volume", "write"])
        .arg(&volume)
        .args(["--offset", "4096", "--input"])
        .arg(&before)
        .assert()
        .success();

    let shadow_id = persistent_shadow(&store, work.path(), &volume);

    diskshadow(&store)
        .args(["volume", "write"])
        .arg(&volume)
        .args(["--offset", "4096"])
        .write_stdin(vec![0xa5u8; 8192])
        .assert()
        .success();
    let live = diskshadow(&store)
        .args(["volume", "read"])
        .arg(&volume)
        .args(["--offset", "4096", "--length", "8192"])
        .output()
        .expect("read");
    assert_eq!(live.stdout, vec![0xa5u8; 8192]);
    let shadow = diskshadow(&store)
        .args([
            "volume", "read", &shadow_id, "--offset", "4096", "--length", "8192",
        ])
        .output()
        .expect("read");
    assert_eq!(
        shadow.stdout,
        vec![0x5au8; 8192],
        "the shadow shows the bytes from before the write"
    );
    let info = diskshadow(&store)
        .args(["volume", "info"])
        .arg(&volume)
        .arg("--json")
        .output()
        .expect("info");
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(json["size"], 1 << 20);
}

#[test]
fn a_killed_requester_loses_its_volatile_shadows_and_keeps_its_persistent_ones() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let volume = work.path().join("data.img");
    image(&volume, 1 << 20);
    let marker = work.path().join("created");
    let wait = work.path().join("wait.sh");
    fs::write(
        &wait,
        format!("#!/bin/sh\ntouch {}\nsleep 30\n", marker.display()),
    )
    .expect("script");
    let script = work.path().join("hold.dsh");
    fs::write(
        &script,
        format!(
            "set context persistent nowriters\nadd volume {v}\ncreate\nset context volatile nowriters\nadd volume {v}\ncreate\nexec {w}\n",
            v = volume.display(),
            w = wait.display()
        ),
    )
    .expect("script");
    let binary = assert_cmd::cargo::cargo_bin("diskshadow");
    let mut requester = std::process::Command::new(binary)
        .arg("--store")
        .arg(&store)
        .arg("-s")
        .arg(&script)
        .env("DISKSHADOW_IDLE_TIMEOUT", "5")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("requester starts");
    wait_for(30, "the script never reached its exec step", || {
        marker.exists()
    });
    requester.kill().expect("kill");
    let _ = requester.wait();
    // The service notices the dropped connection; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listing = diskshadow(&store)
            .write_stdin("list shadows all\n")
            .output()
            .expect("list");
        let stdout = String::from_utf8_lossy(&listing.stdout).to_string();
        if stdout.contains("Number of shadow copies listed: 1") {
            assert!(
                stdout.contains("No_Auto_Release Persistent No_Writers Differential"),
                "{stdout}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the volatile shadow outlived its requester: {stdout}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn writer_check_passes_a_conforming_writer_and_reports_violations() {
    let work = tempfile::tempdir().expect("tempdir");
    let python =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/writers/python_writer.py");
    let python_available = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if python_available {
        let good = work.path().join("good.toml");
        fs::write(
            &good,
            format!(
                "name = \"Python Writer\"\nid = \"{{7a7a7a7a-1111-4222-8333-444444444444}}\"\ncommand = [\"python3\", {:?}, \"/srv/data.img\", {:?}]\n",
                python.display().to_string(),
                work.path().join("record.jsonl").display().to_string()
            ),
        )
        .expect("registration");
        let output = diskshadow(&work.path().join("store"))
            .args(["writer", "check"])
            .arg(&good)
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(
            stdout.contains("The writer follows the protocol."),
            "{stdout}"
        );
    } else {
        support::skip("python3 is not installed");
    }
    let bad = work.path().join("bad.toml");
    fs::write(
        &bad,
        format!(
            "name = \"Bad Writer\"\nid = \"{{7a7a7a7a-1111-4222-8333-555555555555}}\"\ncommand = [{:?}, \"--name\", \"Bad Writer\", \"--on\", \"thaw=garbage\"]\n",
            env!("CARGO_BIN_EXE_diskshadow-test-writer")
        ),
    )
    .expect("registration");
    let output = diskshadow(&work.path().join("store"))
        .args(["writer", "check"])
        .arg(&bad)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("violation: [full backup] thaw"), "{stdout}");
}

#[test]
fn a_requester_killed_mid_freeze_leaves_writers_thawed_or_aborted_and_no_partial_set() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    image(&work.path().join("one.img"), 1 << 20);
    image(&work.path().join("two.img"), 1 << 20);
    let record = work.path().join("events.jsonl");
    fs::create_dir_all(store.join("writers")).expect("writers");
    fs::write(
        store.join("writers/slow.toml"),
        format!(
            "name = \"Slow Writer\"\nid = \"{{66666666-aaaa-4bbb-8ccc-777777777777}}\"\ncommand = [{:?}, \"--name\", \"Slow Writer\", \"--component\", {:?}, \"--on\", \"freeze=delay:1500\", \"--record\", {:?}]\n",
            env!("CARGO_BIN_EXE_diskshadow-test-writer"),
            format!("db={}", work.path().join("one.img").display()),
            record.display().to_string()
        ),
    )
    .expect("registration");
    let script = work.path().join("backup.dsh");
    fs::write(
        &script,
        format!(
            "set context persistent\nadd volume {}\nadd volume {}\ncreate\n",
            work.path().join("one.img").display(),
            work.path().join("two.img").display()
        ),
    )
    .expect("script");
    let mut requester = std::process::Command::new(assert_cmd::cargo::cargo_bin("diskshadow"))
        .arg("--store")
        .arg(&store)
        .arg("-s")
        .arg(&script)
        .env("DISKSHADOW_IDLE_TIMEOUT", "5")
        // DiskShadow saves a metadata .cab in the working directory when writers take part.
        .current_dir(work.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("requester");
    let events = |record: &Path| -> Vec<String> {
        fs::read_to_string(record)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|request| request["event"].as_str().map(str::to_string))
            .collect()
    };
    wait_for(30, "the writer never got freeze", || {
        events(&record).iter().any(|event| event == "freeze")
    });
    requester.kill().expect("kill the requester mid-freeze");
    let _ = requester.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let seen = events(&record);
        let after_freeze: Vec<&String> = seen
            .iter()
            .skip_while(|event| *event != "freeze")
            .skip(1)
            .collect();
        let endings = after_freeze
            .iter()
            .filter(|event| ***event == "thaw" || ***event == "abort")
            .count();
        if endings > 0 {
            assert_eq!(
                endings, 1,
                "exactly one thaw or abort after freeze: {seen:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the frozen writer was never thawed or aborted: {seen:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let listing = diskshadow(&store)
        .write_stdin("list shadows all\n")
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        listing.contains("Number of shadow copies listed: 0")
            || listing.contains("Number of shadow copies listed: 2"),
        "a set is all or nothing: {listing}"
    );
}

#[test]
fn a_volume_can_be_registered_with_its_own_chunk_size_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let volume = work.path().join("small-chunks.img");
    image(&volume, 1 << 20);
    let output = diskshadow(&store)
        .args(["volume", "register"])
        .arg(&volume)
        .args(["--chunk-size", "16K"])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("16384-byte chunks"));
    let info = diskshadow(&store)
        .args(["volume", "info"])
        .arg(&volume)
        .arg("--json")
        .output()
        .expect("info");
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(json["chunk_size"], 16384);
    let again = diskshadow(&store)
        .args(["volume", "register"])
        .arg(&volume)
        .args(["--chunk-size", "1M"])
        .output()
        .expect("runs");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("chosen once, at registration"));
    diskshadow(&store)
        .args(["volume", "register"])
        .arg(&volume)
        .args(["--chunk-size", "3K"])
        .assert()
        .code(2);
}

/// A read that fails (here: of a shadow made suspect by a change behind diskshadow's back)
/// leaves no partial output file, and an older file of that name keeps its bytes.
#[test]
fn a_failed_volume_read_leaves_no_partial_output() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let volume = work.path().join("data.img");
    image(&volume, 1 << 20);
    let stdout = support::process::run_script(
        &store,
        work.path(),
        "snap.dsh",
        "set context persistent nowriters\nadd volume data.img\ncreate\n",
    );
    let shadow = support::process::shadow_ids(&stdout)
        .pop()
        .expect("shadow ID printed");
    // Behind diskshadow's back: the shadow becomes suspect and is not served.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::OpenOptions::new()
        .write(true)
        .open(&volume)
        .and_then(|file| {
            use std::os::unix::fs::FileExt;
            file.write_all_at(b"outside", 0)
        })
        .expect("outside write");

    let fresh = work.path().join("fresh.bin");
    let failed = diskshadow(&store)
        .args(["volume", "read", &shadow, "--output"])
        .arg(&fresh)
        .output()
        .expect("read");
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("suspect"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(!fresh.exists(), "a failed read left {}", fresh.display());

    let older = work.path().join("older.bin");
    fs::write(&older, b"keep me").expect("older");
    let failed = diskshadow(&store)
        .args(["volume", "read", &shadow, "--output"])
        .arg(&older)
        .output()
        .expect("read");
    assert!(!failed.status.success());
    assert_eq!(fs::read(&older).expect("older"), b"keep me");
    let leftovers: Vec<_> = fs::read_dir(work.path())
        .expect("dir")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Shadows deleted to make room in a limited diff area are never deleted silently: the write
/// that caused it warns, the service log says which and why, and `list shadows` and
/// `vssadmin list shadowstorage` say so afterwards, across service restarts.
#[test]
fn shadows_deleted_to_fit_a_diff_area_limit_are_reported_everywhere() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let volume = work.path().join("data.img");
    image(&volume, 32 << 20);
    let mut created = Vec::new();
    for _ in 0..2 {
        let stdout = support::process::run_script(
            &store,
            work.path(),
            "snap.dsh",
            "set context persistent nowriters\nadd volume data.img\ncreate\n",
        );
        created.extend(support::process::shadow_ids(&stdout));
    }
    let vssadmin = |args: &[&str]| {
        let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("vssadmin"))
            .arg("--store")
            .arg(&store)
            .args(args)
            .env("DISKSHADOW_IDLE_TIMEOUT", "5")
            .current_dir(work.path())
            .output()
            .expect("vssadmin");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    vssadmin(&[
        "resize",
        "shadowstorage",
        "/for=data.img",
        "/on=data.img",
        "/maxsize=10%",
    ]);

    let write = diskshadow(&store)
        .args(["volume", "write", "data.img", "--offset", "0"])
        .write_stdin(vec![0x77u8; 8 << 20])
        .current_dir(work.path())
        .output()
        .expect("write");
    let stderr = String::from_utf8_lossy(&write.stderr).to_string();
    assert!(write.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: ") && stderr.contains("deleted") && stderr.contains(&created[0]),
        "the write warns which shadow went: {stderr}"
    );
    let log = fs::read_to_string(store.join("service.log")).expect("service log");
    assert!(
        log.lines().any(
            |line| line.contains("to make room in the diff area") && line.contains(&created[0])
        ),
        "{log}"
    );

    diskshadow(&store)
        .args(["service", "stop"])
        .assert()
        .success();
    let listing =
        support::process::run_script(&store, work.path(), "list.dsh", "list shadows all\n");
    assert!(
        listing
            .lines()
            .any(|line| line.starts_with("Note: ") && line.contains("to make room")),
        "{listing}"
    );
    let storage = vssadmin(&["list", "shadowstorage"]);
    assert!(
        storage.contains("deleted on") && storage.contains(&created[0]),
        "{storage}"
    );
}

/// A hostile .cab fails only the requester that loads it: the service keeps running (same
/// pid) and another requester's volatile shadow survives.
#[test]
fn requester_a_hostile_metadata_file_fails_only_its_requester() {
    let work = support::scratch("requester-hostile-cab");
    let store = work.join("store");
    let volume = work.join("data.img");
    image(&volume, 1 << 20);
    let marker = work.join("created");
    let release = work.join("release");
    let wait = work.join("wait.sh");
    fs::write(
        &wait,
        format!(
            "#!/bin/sh\ntouch {}\nwhile [ ! -e {} ]; do sleep 0.1; done\n",
            marker.display(),
            release.display()
        ),
    )
    .expect("script");
    let hold = work.join("hold.dsh");
    fs::write(
        &hold,
        format!(
            "set context volatile nowriters\nadd volume {}\ncreate\nexec {}\n",
            volume.display(),
            wait.display()
        ),
    )
    .expect("script");
    let mut holder = std::process::Command::new(assert_cmd::cargo::cargo_bin("diskshadow"))
        .arg("--store")
        .arg(&store)
        .arg("-s")
        .arg(&hold)
        .env("DISKSHADOW_IDLE_TIMEOUT", "5")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("holder starts");
    wait_for(30, "the holder never reached its exec step", || {
        marker.exists()
    });
    let service_pid = || {
        let output = diskshadow(&store)
            .args(["service", "status"])
            .output()
            .expect("status");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find(|line| line.to_lowercase().contains("pid"))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let before = service_pid();
    assert!(!before.is_empty(), "no service pid");

    let deep = work.join("deep.cab");
    support::cabs::write_deeply_nested_cab(&deep, 100_000);
    let corrupt = work.join("corrupt.cab");
    support::cabs::write_cab_with_corrupt_folder_offset(&corrupt);
    for (cab, expected) in [
        (&deep, "deeper than 64 levels"),
        (&corrupt, "the cab reader failed on its entry"),
    ] {
        let script = work.join("load.dsh");
        fs::write(&script, format!("load metadata {}\n", cab.display())).expect("script");
        let output = diskshadow(&store)
            .arg("-s")
            .arg(&script)
            .current_dir(&work)
            .output()
            .expect("runs");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(1), "{all}");
        assert!(all.contains(expected), "{all}");
        assert!(all.contains("VSS_E_CORRUPT_XML_DOCUMENT"), "{all}");
        assert!(all.contains("Manifest.xml"), "{all}");
        assert!(!all.contains("panicked"), "{all}");
    }
    assert_eq!(service_pid(), before, "the service restarted");
    let listing = diskshadow(&store)
        .write_stdin("list shadows all\n")
        .output()
        .expect("list");
    let stdout = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        stdout.contains("Number of shadow copies listed: 1"),
        "the holder's volatile shadow is gone: {stdout}"
    );
    fs::write(&release, b"").expect("release");
    assert!(holder.wait().expect("holder").success());
}

/// Aliases of a foreign .cab reach `exec` children only under plain, new names: never as
/// `BASH_ENV`, `LD_PRELOAD` or `PATH`, and each one held back is reported.
#[test]
fn requester_foreign_metadata_aliases_do_not_set_sensitive_environment() {
    let work = support::scratch("requester-cab-environment");
    let store = work.join("store");
    let trap = work.join("trap.sh");
    fs::write(&trap, "echo TRAPPED\n").expect("trap");
    let cab = work.join("foreign.cab");
    let trap_text = trap.display().to_string();
    support::cabs::write_cab_with_aliases(
        &cab,
        &[
            ("BASH_ENV", trap_text.as_str()),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("PATH", "/tmp/evil-bin"),
            ("Data_1", "{11111111-1111-1111-1111-111111111111}"),
        ],
    );
    let printenv = work.join("printenv.sh");
    fs::write(&printenv, "#!/bin/bash\nenv\n").expect("printenv");
    fs::set_permissions(
        &printenv,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let script = work.join("load.dsh");
    fs::write(
        &script,
        format!(
            "load metadata {}\nexec {}\n",
            cab.display(),
            printenv.display()
        ),
    )
    .expect("script");
    let output = diskshadow(&store)
        .arg("-s")
        .arg(&script)
        .current_dir(&work)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Data_1={11111111-1111-1111-1111-111111111111}"),
        "{stdout}"
    );
    assert!(!stdout.contains("TRAPPED"), "{stdout}");
    let environment: Vec<&str> = stdout.lines().filter(|line| line.contains('=')).collect();
    assert!(
        !environment
            .iter()
            .any(|line| line.starts_with("BASH_ENV=") || line.starts_with("LD_PRELOAD=")),
        "{stdout}"
    );
    assert!(
        environment.contains(&"PATH=/usr/local/bin:/usr/bin:/bin"),
        "{stdout}"
    );
    for name in ["BASH_ENV", "LD_PRELOAD", "PATH"] {
        assert!(
            stdout.contains(&format!("Alias {name} for value"))
                && stdout.contains("not as an environment variable"),
            "{stdout}"
        );
        assert!(
            stderr.contains(&format!("warning: the alias {name} is not passed to")),
            "{stderr}"
        );
    }
    support::process::diskshadow(&store)
        .args(["service", "stop"])
        .assert()
        .success();
}

/// `add alias a %a%%a%` doubles the alias on each line; the expansion bound stops it at once
/// with an error naming the line and column, instead of a minute and a gigabyte.
#[test]
fn requester_self_doubling_alias_stops_at_the_expansion_bound() {
    let work = support::scratch("requester-alias-doubling");
    let store = work.join("store");
    let mut body = String::from("add alias a x\n");
    for _ in 0..26 {
        body.push_str("add alias a %a%%a%\n");
    }
    let script = work.join("double.dsh");
    fs::write(&script, body).expect("script");
    let started = std::time::Instant::now();
    let output = diskshadow(&store)
        .arg("-s")
        .arg(&script)
        .env("DISKSHADOW_IN_PROCESS", "1")
        .output()
        .expect("runs");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("double.dsh:17: error[dsh::expand]: %a% at column 16 makes the line longer than 65536 bytes"),
        "{stderr}"
    );
    assert!(
        output.stdout.len() < 4 << 20,
        "{} bytes of output",
        output.stdout.len()
    );
    assert!(
        elapsed < std::time::Duration::from_secs(2),
        "took {elapsed:?}"
    );
}

fn utf16le_with_bom(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    bytes
}

/// Scripts saved by Notepad, as UTF-8 with a BOM or as UTF-16LE with CRLF line ends, run with
/// `-s` and check with `--check`, with line numbers counted as the editor shows them.
#[test]
fn requester_bom_and_utf16_scripts_run_and_check() {
    let work = support::scratch("requester-script-encodings");
    let store = work.join("store");
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(b"list providers\r\nexit\r\n");
    let scripts = [
        ("bom.dsh", bom),
        (
            "utf16.dsh",
            utf16le_with_bom("# saved by Notepad\r\nlist providers\r\nexit\r\n"),
        ),
    ];
    for (name, bytes) in scripts {
        let script = work.join(name);
        fs::write(&script, bytes).expect("script");
        let output = diskshadow(&store)
            .arg("-s")
            .arg(&script)
            .env("DISKSHADOW_IN_PROCESS", "1")
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("-> list providers"), "{name}: {stdout}");
        assert!(stdout.contains("providers registered."), "{name}: {stdout}");
        let check = diskshadow(&store)
            .arg("--check")
            .arg(&script)
            .output()
            .expect("checks");
        assert!(
            String::from_utf8_lossy(&check.stdout).contains("no syntax errors"),
            "{name}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let broken = work.join("broken16.dsh");
    fs::write(
        &broken,
        utf16le_with_bom("# saved by Notepad\r\nlist providers\r\nfrobnicate now\r\n"),
    )
    .expect("script");
    let check = diskshadow(&store)
        .arg("--check")
        .arg(&broken)
        .output()
        .expect("checks");
    let stderr = String::from_utf8_lossy(&check.stderr).to_string();
    assert_eq!(check.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broken16.dsh:3:1"), "{stderr}");
    assert!(stderr.contains("unknown command `frobnicate`"), "{stderr}");
    let odd = work.join("odd16.dsh");
    let mut bytes = utf16le_with_bom("list providers\r\n");
    bytes.push(b'x');
    fs::write(&odd, bytes).expect("script");
    let output = diskshadow(&store)
        .arg("-s")
        .arg(&odd)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("odd number of bytes"), "{stderr}");
}

fn interrupt(child: &std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
}

/// Collects a child's stdout on a thread, so a test can wait for a line while it runs.
fn collect_stdout(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stdout = child.stdout.take().expect("piped stdout");
    let sink = std::sync::Arc::clone(&text);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let mut text = sink.lock().expect("stdout");
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

/// Ctrl-C never kills the shell: a script stops after the command that was running, says so,
/// and exits with status 1 as any stopped script does.
#[test]
fn ctrl_c_stops_a_script_after_its_running_command_without_killing_the_shell() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let pause = work.path().join("pause.sh");
    fs::write(&pause, "#!/bin/sh\nsleep 1\necho paused\n").expect("pause");
    fs::set_permissions(&pause, fs::Permissions::from_mode(0o755)).expect("mode");
    fs::write(
        work.path().join("long.dsh"),
        "exec pause.sh\nadd alias after yes\n",
    )
    .expect("script");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("diskshadow"))
        .arg("--store")
        .arg(&store)
        .args(["-s", "long.dsh"])
        .env("DISKSHADOW_IDLE_TIMEOUT", "5")
        .current_dir(work.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("diskshadow");
    let stdout = collect_stdout(&mut child);
    wait_for(20, "the script reached exec", || {
        stdout.lock().expect("stdout").contains("-> exec pause.sh")
    });
    interrupt(&child);
    let status = child.wait().expect("wait");
    wait_for(5, "the output ended", || {
        stdout
            .lock()
            .expect("stdout")
            .contains("DiskShadow is exiting.")
    });
    let text = stdout.lock().expect("stdout").clone();
    assert_eq!(status.code(), Some(1), "not killed by the signal: {text}");
    assert!(
        text.contains("paused"),
        "the running command finished: {text}"
    );
    assert!(text.contains("interrupted (Ctrl-C)"), "{text}");
    assert!(!text.contains("-> add alias after"), "{text}");
}

/// A store whose one writer (the test writer, recording its events) holds `one.img`, and a
/// running `diskshadow -s step.dsh` that creates a persistent set with `step_command`, with
/// piped stdin and stdout. Returns the work directory, the store, the events file and the child.
fn spawn_step_mode_create(
    step_command: &str,
    freeze_timeout: Option<&str>,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::process::Child,
) {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    image(&work.path().join("one.img"), 1 << 20);
    let record = work.path().join("events.jsonl");
    fs::create_dir_all(store.join("writers")).expect("writers");
    let timeout = freeze_timeout
        .map(|timeout| format!("freeze_timeout = \"{timeout}\"\n"))
        .unwrap_or_default();
    fs::write(
        store.join("writers/step.toml"),
        format!(
            "name = \"Step Writer\"\nid = \"{{66666666-aaaa-4bbb-8ccc-999999999999}}\"\n{timeout}command = [{:?}, \"--name\", \"Step Writer\", \"--component\", {:?}, \"--record\", {:?}]\n",
            env!("CARGO_BIN_EXE_diskshadow-test-writer"),
            format!("db={}", work.path().join("one.img").display()),
            record.display().to_string()
        ),
    )
    .expect("registration");
    fs::write(
        work.path().join("step.dsh"),
        format!("{step_command}\nset context persistent\nadd volume one.img\ncreate\n"),
    )
    .expect("script");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("diskshadow"))
        .arg("--store")
        .arg(&store)
        .args(["-s", "step.dsh"])
        .env("DISKSHADOW_IDLE_TIMEOUT", "5")
        .current_dir(work.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("diskshadow");
    (work, store, record, child)
}

/// Ctrl-C at the step prompt aborts the writers' sequence: the writer gets its abort, no
/// shadow is left, and the shell ends the script as a failure instead of dying.
#[test]
fn ctrl_c_at_the_step_prompt_aborts_the_writers_sequence() {
    let (_work, store, record, mut child) = spawn_step_mode_create("set step on", None);
    let _keep_stdin_open = child.stdin.take();
    let stdout = collect_stdout(&mut child);
    wait_for(30, "the step prompt", || {
        stdout
            .lock()
            .expect("stdout")
            .contains("Step: the next writer event is")
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    interrupt(&child);
    let status = child.wait().expect("wait");
    let text = stdout.lock().expect("stdout").clone();
    assert_eq!(status.code(), Some(1), "not killed by the signal: {text}");
    assert!(text.contains("Ctrl-C: aborting."), "{text}");
    let listing = diskshadow(&store)
        .write_stdin("list shadows all\n")
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        listing.contains("Number of shadow copies listed: 0"),
        "{listing}"
    );
    let events = fs::read_to_string(&record).unwrap_or_default();
    if events.contains("\"freeze\"") {
        assert!(
            events.contains("\"abort\""),
            "a frozen writer is aborted: {events}"
        );
    }
}

/// `add volume` warns when the image is written outside diskshadow: a loop device backed by
/// it, or another process holding it open for writing.
#[test]
fn add_volume_warns_of_writers_outside_diskshadow() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let volume = work.path().join("data.img");
    image(&volume, 4 << 20);
    fs::write(work.path().join("add.dsh"), "add volume data.img\n").expect("script");
    let run = || {
        let output = diskshadow(&store)
            .args(["-s", "add.dsh"])
            .current_dir(work.path())
            .output()
            .expect("diskshadow");
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    assert!(!run().contains("Warning"), "nobody else writes it yet");

    let mut holder = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec 3<>data.img; sleep 30")
        .current_dir(work.path())
        .spawn()
        .expect("holder");
    wait_for(10, "the holder opened the image", || {
        fs::read_dir(format!("/proc/{}/fd", holder.id()))
            .map(|fds| fds.count() > 3)
            .unwrap_or(false)
    });
    let warned = run();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        warned.contains("Warning: the volume")
            && warned.contains(&format!("process {}", holder.id())),
        "{warned}"
    );

    let losetup = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&volume)
        .output();
    match losetup {
        Ok(output) if output.status.success() => {
            let device = String::from_utf8_lossy(&output.stdout).trim().to_string();
            let warned = run();
            let _ = std::process::Command::new("losetup")
                .args(["-d", &device])
                .status();
            assert!(
                warned.contains(&format!("the loop device {device}")),
                "{warned}"
            );
        }
        _ => support::skip("losetup cannot attach a loop device here (root and util-linux)"),
    }
}

/// `volume register --provider row` makes every later shadow of the volume a
/// redirect-on-write one (no `provider {ID}` needed in the script); an unknown provider is a
/// usage error naming the choices.
#[test]
fn providers_volume_register_with_the_redirect_on_write_provider() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let volume = work.path().join("data.img");
    image(&volume, 1 << 20);
    diskshadow(&store)
        .args(["volume", "register"])
        .arg(&volume)
        .args(["--provider", "row"])
        .assert()
        .success();
    let stdout = support::process::run_script(
        &store,
        work.path(),
        "row.dsh",
        "list providers\nset context persistent nowriters\nadd volume data.img\ncreate\n",
    );
    assert!(stdout.contains("5 providers registered."), "{stdout}");
    assert!(
        stdout.contains("- Provider ID: {3f0c6a1e-9d42-4b7a-8e15-6c2d9b7f4a30}"),
        "{stdout}"
    );
    let again = diskshadow(&store)
        .args(["volume", "register"])
        .arg(&volume)
        .args(["--provider", "cow"])
        .output()
        .expect("runs");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("chosen once, at registration"));
    let unknown = diskshadow(&store)
        .args(["volume", "register"])
        .arg(&volume)
        .args(["--provider", "zfs"])
        .output()
        .expect("runs");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown provider 'zfs'"));
}

/// Issue 11, item 12: the interactive shell (on a terminal, through `script`'s pty) leaves two
/// blank lines after its banner and one after each command's output.
#[test]
fn fidelity_the_shell_leaves_two_blank_lines_after_the_banner_and_one_after_output() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip("`script` (util-linux) is not installed: no pty to run the shell in");
        return;
    }
    let work = support::scratch("fidelity-shell-blank-lines");
    let command = format!(
        "{} --store {}",
        env!("CARGO_BIN_EXE_diskshadow"),
        work.join("store").display()
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("DISKSHADOW_STORE")
        .env("DISKSHADOW_IN_PROCESS", "1")
        .write_stdin("list providers\nexit\n")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    let after_banner = stdout
        .split_once(" PM\n")
        .or_else(|| stdout.split_once(" AM\n"))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no banner: {stdout}"));
    assert!(after_banner.starts_with("\n\n"), "{stdout:?}");
    assert!(!after_banner.starts_with("\n\n\n"), "{stdout:?}");
    assert!(stdout.contains("5 providers registered.\n\n"), "{stdout:?}");
}

/// Issue 11, item 15: the interactive shell's `-l` log holds the typed commands too, not only
/// what was printed.
#[test]
fn fidelity_the_interactive_log_keeps_the_typed_commands() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip("`script` (util-linux) is not installed: no pty to run the shell in");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let log = work.path().join("shell.log");
    let command = format!(
        "{} --store {} -l {}",
        env!("CARGO_BIN_EXE_diskshadow"),
        work.path().join("store").display(),
        log.display()
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("DISKSHADOW_STORE")
        .env("DISKSHADOW_IN_PROCESS", "1")
        // One line: rustyline flushes type-ahead when it takes the terminal back.
        .write_stdin("list providers\n")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    let logged = fs::read_to_string(&log).expect("log");
    assert!(logged.contains("DISKSHADOW> list providers"), "{logged}");
    assert!(logged.contains("5 providers registered."), "{logged}");
}

/// Issue 11, item 18: `--json` for lists and the drive map, `service status` fails when no
/// service runs, and byte counts take suffixes.
#[test]
fn fidelity_json_listings_status_exit_and_size_suffixes() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    image(&work.path().join("data.img"), 4 << 20);
    let status = diskshadow(&store)
        .args(["service", "status"])
        .output()
        .expect("status");
    assert_eq!(status.status.code(), Some(1), "no service runs yet");
    let status = diskshadow(&store)
        .args(["service", "status", "--json"])
        .output()
        .expect("status");
    assert_eq!(status.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "null");

    let stdout = support::process::run_script(
        &store,
        work.path(),
        "snap.dsh",
        "set context persistent nowriters\nadd volume data.img\ncreate\n",
    );
    let shadow = support::process::shadow_ids(&stdout).pop().expect("shadow");
    let listed = diskshadow(&store)
        .args(["list", "shadows", "--json"])
        .output()
        .expect("list");
    assert!(listed.status.success());
    let shadows: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let listed_id = shadows[0]["id"]
        .as_str()
        .expect("an ID")
        .trim_matches(['{', '}']);
    assert!(shadow.contains(listed_id), "{shadow} vs {listed_id}");
    let text = diskshadow(&store)
        .args(["list", "shadows"])
        .output()
        .expect("list");
    assert!(String::from_utf8_lossy(&text.stdout).contains("Number of shadow copies listed: 1"));
    let providers = diskshadow(&store)
        .args(["list", "providers", "--json"])
        .output()
        .expect("list");
    let providers: serde_json::Value = serde_json::from_slice(&providers.stdout).expect("json");
    assert!(providers.as_array().is_some_and(|list| list.len() >= 2));
    let writers = diskshadow(&store)
        .args(["list", "writers", "--json"])
        .output()
        .expect("list");
    assert!(serde_json::from_slice::<serde_json::Value>(&writers.stdout).is_ok());

    diskshadow(&store)
        .args(["drive", "map", "D:", "data.img"])
        .current_dir(work.path())
        .assert()
        .success();
    let drives = diskshadow(&store)
        .args(["drive", "list", "--json"])
        .output()
        .expect("drives");
    let drives: serde_json::Value = serde_json::from_slice(&drives.stdout).expect("json");
    assert_eq!(drives[0]["letter"], "D");
    assert_eq!(drives[0]["kind"], "volume");

    diskshadow(&store)
        .args(["volume", "write", "data.img", "--offset", "1M"])
        .write_stdin(vec![0x42u8; 4096])
        .current_dir(work.path())
        .assert()
        .success();
    let read = diskshadow(&store)
        .args([
            "volume", "read", "data.img", "--offset", "1MiB", "--length", "4K",
        ])
        .current_dir(work.path())
        .output()
        .expect("read");
    assert_eq!(read.stdout, vec![0x42u8; 4096]);
    let status = diskshadow(&store)
        .args(["service", "status", "--json"])
        .output()
        .expect("status");
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert!(status["pid"].as_u64().is_some(), "{status}");
}

/// `service stop` returns once the service has exited, so the next command gets a new service
/// on a free store, never a greeting from the one that is stopping; run back to back, each
/// command after a stop is served.
#[test]
fn service_stop_waits_for_the_service_to_exit_and_the_next_command_is_served() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    image(&work.path().join("data.img"), 1 << 20);
    let service_pid = |store: &Path| {
        let status = diskshadow(store)
            .args(["service", "status", "--json"])
            .output()
            .expect("status");
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
        status["pid"].as_u64().expect("a running service has a pid")
    };
    let mut pids = Vec::new();
    for round in 0..5 {
        diskshadow(&store)
            .args(["volume", "info", "data.img"])
            .current_dir(work.path())
            .assert()
            .success();
        let pid = service_pid(&store);
        assert!(
            !pids.contains(&pid),
            "round {round}: a new service each time"
        );
        pids.push(pid);
        let stopped = diskshadow(&store)
            .args(["service", "stop"])
            .output()
            .expect("stop");
        assert!(stopped.status.success());
        assert!(
            String::from_utf8_lossy(&stopped.stdout).contains("has stopped."),
            "{}",
            String::from_utf8_lossy(&stopped.stdout)
        );
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        assert!(
            matches!(state, None | Some("Z" | "X")),
            "round {round}: pid {pid} still runs after the stop returned: {stat}"
        );
    }
    let again = diskshadow(&store)
        .args(["service", "stop"])
        .output()
        .expect("stop");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("No service is running"));
}

/// Runs `create` in step mode with a writer whose freeze deadline is 2 s, answering `c` to each
/// prompt until the one before Thaw, which gets no answer for `wait`; returns the output, the
/// exit status and the writer's events.
fn step_past_the_freeze_deadline(
    hold: bool,
    wait: std::time::Duration,
) -> (String, Option<i32>, String) {
    use std::io::Write;
    let step = if hold {
        "set step on hold"
    } else {
        "set step on"
    };
    let (_work, store, record, mut child) = spawn_step_mode_create(step, Some("2s"));
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = collect_stdout(&mut child);
    let prompts = |text: &str| text.matches("Step: the next writer event is").count();
    // Answer every prompt before Thaw at once.
    let mut answered = 0;
    loop {
        wait_for(30, "the next step prompt", || {
            prompts(&stdout.lock().expect("stdout")) > answered
        });
        let text = stdout.lock().expect("stdout").clone();
        if text.contains("Step: the next writer event is thaw") {
            break;
        }
        writeln!(stdin, "c").expect("answer");
        answered += 1;
    }
    std::thread::sleep(wait);
    // Whatever is still asked gets "continue" now.
    for _ in 0..4 {
        let _ = writeln!(stdin, "c");
    }
    drop(stdin);
    let status = child.wait().expect("wait");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let text = stdout.lock().expect("stdout").clone();
    let events = fs::read_to_string(&record).unwrap_or_default();
    let _ = diskshadow(&store).args(["service", "stop"]).output();
    (text, status.code(), events)
}

/// Issue 13, item 8: a step prompt while writers are frozen says how long their freeze
/// deadline has left and aborts the set when it passes; `set step on hold` keeps them frozen
/// past it, with a warning, and sends Thaw when the developer goes on.
#[test]
fn step_mode_aborts_at_the_freeze_deadline_unless_asked_to_hold() {
    let (text, status, events) =
        step_past_the_freeze_deadline(false, std::time::Duration::from_millis(3500));
    assert!(text.contains("Warning: the writers are frozen"), "{text}");
    assert!(text.contains("The freeze deadline passed"), "{text}");
    assert_eq!(status, Some(1), "{text}");
    assert!(
        events.contains("\"abort\""),
        "the frozen writer is aborted: {events}"
    );
    assert!(!events.contains("\"thaw\""), "{events}");

    let (text, status, events) =
        step_past_the_freeze_deadline(true, std::time::Duration::from_millis(3000));
    assert!(text.contains("they stay frozen past it"), "{text}");
    assert!(
        text.contains("Warning: the freeze deadline has passed; the writers are held frozen"),
        "{text}"
    );
    // diskshadow does not abort: the held writer gets its thaw, and answers it as its own
    // deadline makes it (the test writer, like VSS writers, may report the overrun).
    assert!(
        events.contains("\"thaw\""),
        "held writers are thawed at the end: {events}"
    );
    assert!(!text.contains("aborting the shadow copy set"), "{text}");
    assert!(status.is_some(), "not killed: {text}");
}

#[test]
fn fidelity_lf_chop_reads_an_lf_only_script_as_windows_does_when_asked() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    // Written for Windows' DiskShadow: each LF-ended line carries a sacrificial last character.
    let script = work.path().join("chop.dsh");
    fs::write(
        &script,
        "set verbose on.\nset context persistent nowriters_\n\nset \n",
    )
    .expect("script");
    let plain = diskshadow(&store)
        .arg("-s")
        .arg(&script)
        .output()
        .expect("runs");
    assert_eq!(
        plain.status.code(),
        Some(2),
        "off by default: the characters are read"
    );
    for chop in [
        diskshadow(&store)
            .arg("--lf-chop")
            .arg("-s")
            .arg(&script)
            .output(),
        diskshadow(&store)
            .env("DISKSHADOW_LF_CHOP", "1")
            .arg("-s")
            .arg(&script)
            .output(),
    ] {
        let chop = chop.expect("runs");
        let stdout = String::from_utf8_lossy(&chop.stdout);
        assert!(
            chop.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&chop.stderr)
        );
        assert!(stdout.contains("-> set verbose on\n"), "{stdout}");
        assert!(
            stdout.contains("-> set context persistent nowriters\n"),
            "{stdout}"
        );
        assert!(stdout.contains("Verbose: on"), "{stdout}");
    }
    // A CR LF script has real line ends: nothing is dropped.
    fs::write(&script, "set verbose on\r\nset\r\n").expect("script");
    let crlf = diskshadow(&store)
        .arg("--lf-chop")
        .arg("-s")
        .arg(&script)
        .output()
        .expect("runs");
    assert!(crlf.status.success());
    assert!(String::from_utf8_lossy(&crlf.stdout).contains("Verbose: on"));
}

/// Through the service process, `set verbose on` shows what DiskShadow shows (the writer's
/// inclusion) and `set trace on` the writer trace (each event sent, each reply).
#[test]
fn fidelity_the_writer_trace_crosses_the_service_only_with_set_trace_on() {
    for (setting, traced) in [("set verbose on", false), ("set trace on", true)] {
        let (_work, _store, _record, mut child) = spawn_step_mode_create(setting, None);
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("diskshadow ends");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{setting}: {stdout}");
        assert_eq!(
            stdout.contains("Sent identify to writer \"Step Writer\"."),
            traced,
            "{setting}: {stdout}"
        );
        assert_eq!(
            stdout.contains("Writer \"Step Writer\" answered freeze in "),
            traced,
            "{setting}: {stdout}"
        );
        assert_eq!(
            stdout.contains("* Including writer \"Step Writer\":"),
            !traced,
            "{setting}: {stdout}"
        );
    }
}

#[test]
fn drive_list_and_attachments_print_plain_tables() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    image(&work.path().join("data.img"), 4 << 20);
    std::fs::create_dir(work.path().join("exposed")).expect("directory");
    let list = || {
        let output = diskshadow(&store)
            .args(["drive", "list"])
            .output()
            .expect("drive list");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert_eq!(list(), "No drive letters are mapped.\n");
    for (letter, target) in [("D:", "data.img"), ("E:", "exposed")] {
        diskshadow(&store)
            .args(["drive", "map", letter, target])
            .current_dir(work.path())
            .assert()
            .success();
    }
    let listed = list();
    let lines: Vec<&str> = listed.lines().collect();
    let data = work.path().join("data.img").display().to_string();
    let exposed = work.path().join("exposed").display().to_string();
    assert_eq!(
        lines,
        [
            "DRIVE  KIND       PATH".to_string(),
            format!("D:     volume     {data}"),
            format!("E:     directory  {exposed}"),
        ],
        "{listed}"
    );
    assert!(lines.iter().all(|line| line.trim_end() == *line));

    let attachments = diskshadow(&store)
        .args(["volume", "attachments"])
        .output()
        .expect("attachments");
    assert!(attachments.status.success(), "{attachments:?}");
    assert_eq!(
        String::from_utf8_lossy(&attachments.stdout),
        "0 volumes attached.\n",
        "no table header without attachments"
    );
}

/// `add shadow` and `resync` run over the service socket: the damaged volume reads the
/// shadow's bytes again.
#[test]
fn resync_over_the_service_gives_the_volume_the_shadow_bytes_back() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let volume = work.path().join("lun.img");
    image(&volume, 1 << 20);
    let write = |byte: u8| {
        diskshadow(&store)
            .args(["volume", "write"])
            .arg(&volume)
            .args(["--offset", "4096"])
            .write_stdin(vec![byte; 8192])
            .assert()
            .success();
    };
    write(0x5a);
    let shadow_id = persistent_shadow(&store, work.path(), &volume);
    write(0xa5);
    let stdout = run_script(
        &store,
        work.path(),
        &format!("add shadow {shadow_id}\nresync\n"),
    );
    assert!(
        stdout.contains("65536 bytes copied"),
        "one chunk was damaged: {stdout}"
    );
    let live = diskshadow(&store)
        .args(["volume", "read"])
        .arg(&volume)
        .args(["--offset", "4096", "--length", "8192"])
        .output()
        .expect("read");
    assert_eq!(live.stdout, vec![0x5au8; 8192]);
}
