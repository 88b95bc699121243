//! `vssadmin` over an in-process service: each command line and its output, as one snapshot.

mod support;

use chrono::FixedOffset;
use diskshadow::engine::model::{DriveTarget, RequesterId};
use diskshadow::service::local::LocalService;
use diskshadow::service::ShadowService;
use diskshadow::session::render::TimeZoneChoice;
use diskshadow::vssadmin;

/// A scratch store in `name` with an in-process service and C: mapped to an image of `size`
/// bytes; `directives` (`#! writer …`) are applied first.
fn service_with_drive_c(
    name: &str,
    size: u64,
    directives: &str,
) -> (std::path::PathBuf, LocalService) {
    let work = support::scratch(name);
    let image = work.join("system.img");
    std::fs::File::create(&image)
        .and_then(|file| file.set_len(size))
        .expect("image");
    support::apply_directives(directives, &work);
    let engine = support::open_engine(&work.join("store"));
    let mut service = LocalService::with_core(support::service_core(engine), RequesterId(7));
    service
        .map_drive('C', DriveTarget::Volume(image))
        .expect("drive map");
    (work, service)
}

#[test]
fn vssadmin_commands_over_the_same_store() {
    let (work, mut service) = service_with_drive_c(
        "vssadmin",
        2 << 30,
        "#! writer journal.toml Journal_Writer {6f1b9d7e-3c2a-4e5f-9a8b-1c2d3e4f5a6b} --component journal=C:",
    );
    let zone = TimeZoneChoice::Fixed(FixedOffset::east_opt(0).expect("UTC"));
    let lines = [
        ("", "list shadows"),
        ("", "create shadow /for=C:"),
        ("", "Create Shadow /For=c:"),
        ("", "list shadows /for=C:"),
        ("", "list providers"),
        ("", "list volumes"),
        ("", "list shadowstorage"),
        ("", "resize shadowstorage /for=C: /on=C: /maxsize=20%"),
        ("", "resize shadowstorage /for=C: /on=C: /maxsize=100MB"),
        ("", "add shadowstorage /for=C: /on=D: /maxsize=1GB"),
        ("", "list shadowstorage /for=C:"),
        ("n\n", "delete shadows /for=C: /oldest"),
        ("", "delete shadows /for=C: /oldest /quiet"),
        ("", "list shadows"),
        ("", "query reverts"),
        (
            "",
            "revert shadow /shadow={00000000-0000-0000-0000-000000000000}",
        ),
        ("", "list shadows /bogus"),
        ("", "frobnicate shadows"),
        ("", "list writers"),
        ("y\n", "delete shadows /all"),
        ("", "list shadows"),
        ("", "list shadows /?"),
        ("", "delete shadows /?"),
        ("", "revert shadow /?"),
        (
            "",
            "revert shadow /shadow={00000000-0000-0000-0000-000000000000} /quiet",
        ),
    ];
    let mut transcript = String::new();
    for (answer, line) in lines {
        let arguments: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let mut confirm = std::io::Cursor::new(answer.as_bytes().to_vec());
        let outcome = vssadmin::run(&mut service, &arguments, &work, zone, &mut confirm);
        transcript.push_str(&format!("$ vssadmin {line}\n"));
        for out in outcome.stdout.iter().skip(vssadmin::BANNER.len() + 1) {
            transcript.push_str(&format!("{out}\n"));
        }
        for err in &outcome.stderr {
            transcript.push_str(&format!("! {err}\n"));
        }
        transcript.push_str(&format!("[exit status: {}]\n", outcome.status));
    }
    // A shadow DiskShadow made: vssadmin's /Oldest does not count it, and says why.
    let volume = service
        .resolve_volume("C:", std::path::Path::new("/"))
        .expect("volume");
    service
        .create(
            &diskshadow::service::CreateRequest::one_volume(
                volume,
                diskshadow::engine::vss::Context::PersistentNoWriters,
                diskshadow::engine::vss::Attributes(0),
            ),
            &mut diskshadow::service::SilentObserver,
        )
        .expect("create");
    let arguments: Vec<String> = ["delete", "shadows", "/for=C:", "/oldest"]
        .map(str::to_string)
        .to_vec();
    let outcome = vssadmin::run(
        &mut service,
        &arguments,
        &work,
        zone,
        &mut std::io::Cursor::new(Vec::new()),
    );
    transcript.push_str("$ vssadmin delete shadows /for=C: /oldest\n");
    for out in outcome.stdout.iter().skip(vssadmin::BANNER.len() + 1) {
        transcript.push_str(&format!("{out}\n"));
    }
    insta::with_settings!({snapshot_path => "../snapshots/vssadmin", prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!("vssadmin", support::stable_paths(&transcript));
    });
}

#[test]
fn fidelity_vssadmin_list_json_takes_the_same_switches_and_prints_no_banner() {
    let (work, mut service) = service_with_drive_c("vssadmin-json", 64 << 20, "");
    let zone = TimeZoneChoice::Fixed(FixedOffset::east_opt(0).expect("UTC"));
    let mut run = |line: &str| {
        let arguments: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let mut confirm = std::io::Cursor::new(Vec::new());
        vssadmin::run(&mut service, &arguments, &work, zone, &mut confirm)
    };
    let json = |outcome: &vssadmin::Outcome| -> serde_json::Value {
        assert_eq!(outcome.status, 0, "{:?}", outcome.stderr);
        serde_json::from_str(&outcome.stdout.join("\n")).expect("the whole output is JSON")
    };
    assert_eq!(json(&run("list shadows --json")), serde_json::json!([]));
    assert_eq!(run("create shadow /for=C:").status, 0);
    let shadows = json(&run("list shadows /for=C: --json"));
    assert_eq!(shadows.as_array().map(Vec::len), Some(1), "{shadows}");
    let id = shadows[0]["id"].as_str().expect("an ID").to_string();
    let by_id = json(&run(&format!("list shadows /shadow={id} --json")));
    assert_eq!(by_id[0]["id"], id.as_str());
    assert_eq!(
        json(&run(
            "List Shadows /Set={00000000-0000-0000-0000-000000000001} --json"
        )),
        serde_json::json!([])
    );
    let providers = json(&run("list providers --json"));
    assert!(
        providers.as_array().is_some_and(|list| list.len() >= 2),
        "{providers}"
    );
    let volumes = json(&run("list volumes --json"));
    assert_eq!(volumes[0]["drive_letter"], "C", "{volumes}");
    let storage = json(&run("list shadowstorage /for=C: --json"));
    assert_eq!(storage.as_array().map(Vec::len), Some(1), "{storage}");
    assert_eq!(json(&run("list writers --json")), serde_json::json!([]));
    // Wrong switches fail as without --json, and nothing but the list commands takes it.
    let bogus = run("list shadows /bogus --json");
    assert_eq!(bogus.status, 2);
    assert!(bogus.stdout.is_empty(), "{:?}", bogus.stdout);
    assert_eq!(run("list providers /for=C: --json").status, 2);
}

/// `vssadmin` as the first requester of a fresh store starts the service with the `diskshadow`
/// binary beside it: once, not a storm of `vssadmin` processes starting each other.
#[test]
fn requester_vssadmin_first_requester_starts_one_diskshadow_service() {
    let work = support::scratch("requester-vssadmin-first");
    let store = work.join("store");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vssadmin"))
        .arg("--store")
        .arg(&store)
        .args(["list", "shadows"])
        .env_remove("DISKSHADOW_SPAWNED_SERVICE")
        .env_remove("DISKSHADOW_SERVICE_BINARY")
        .env("DISKSHADOW_IDLE_TIMEOUT", "5")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vssadmin runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut most = 0;
    let status = loop {
        most = most.max(support::process::processes_mentioning(&store));
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline || most > 8 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vssadmin did not finish: {most} processes mention the store");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.success(),
        "vssadmin failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("No items found"), "{stdout}");
    assert!(most <= 3, "{most} processes mention the store at once");
    // The service that runs is diskshadow's, and it is the only process left.
    let status = support::process::diskshadow(&store)
        .args(["service", "status"])
        .output()
        .expect("status");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("is running"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    assert_eq!(support::process::processes_mentioning(&store), 1);
    support::process::diskshadow(&store)
        .args(["service", "stop"])
        .assert()
        .success();
    support::process::wait_for(10, "the service stops", || {
        support::process::processes_mentioning(&store) == 0
    });
}

/// Without a `diskshadow` beside it, `vssadmin` says so and starts nothing.
#[test]
fn requester_vssadmin_without_diskshadow_beside_it_fails_clearly() {
    let work = support::scratch("requester-vssadmin-alone");
    let store = work.join("store");
    let alone = work.join("bin").join("vssadmin");
    std::fs::create_dir_all(alone.parent().expect("parent")).expect("bin");
    std::fs::copy(env!("CARGO_BIN_EXE_vssadmin"), &alone).expect("copy");
    // A test thread forking meanwhile can hold the copy's write descriptor open for a moment
    // (ETXTBSY, "Text file busy"): try again until the fork has exec'd.
    let mut attempts = 0;
    let output = loop {
        let run = std::process::Command::new(&alone)
            .arg("--store")
            .arg(&store)
            .args(["list", "shadows"])
            .env_remove("DISKSHADOW_SPAWNED_SERVICE")
            .env_remove("DISKSHADOW_SERVICE_BINARY")
            .output();
        match run {
            Err(error)
                if error.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 100 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.expect("runs"),
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the diskshadow binary that starts it is not beside"),
        "{stderr}"
    );
    assert_eq!(support::process::processes_mentioning(&store), 0);
    assert!(!store.join("service.log").exists());
}

/// A process started as a service never starts another, whatever binary it is.
#[test]
fn requester_vssadmin_as_a_started_service_starts_no_other() {
    let work = support::scratch("requester-vssadmin-spawned");
    let store = work.join("store");
    let output = support::process::vssadmin(&store)
        .args(["list", "shadows"])
        .env("DISKSHADOW_SPAWNED_SERVICE", "1")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("starts no other"), "{stderr}");
    assert_eq!(support::process::processes_mentioning(&store), 0);
}
