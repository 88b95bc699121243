//! Who can reach a store and what they can read in it: the service's peer check and allow
//! list, private store files and sockets whatever the umask, share names that stay in the
//! store, and the service log's mode and rotation.
//!
//! These tests run the binary as root and, for the other user, as `nobody` (uid 65534) through
//! `CommandExt::uid`; they skip when not run as root.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::process::wait_for;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        support::skip("these tests switch users and need root");
    }
    root
}

/// `diskshadow --store STORE ARGS` with `stdin`, run with umask 000 (so nothing it creates is
/// private by accident), as `uid` when given.
fn run(store: &Path, work: &Path, uid: Option<u32>, args: &[&str], stdin: &str) -> Output {
    run_with_temporary_directory(store, work, uid, args, stdin, None)
}

/// `run`, with `TMPDIR` (where fallback socket directories go) set when given.
fn run_with_temporary_directory(
    store: &Path,
    work: &Path,
    uid: Option<u32>,
    args: &[&str],
    stdin: &str,
    temporary: Option<&Path>,
) -> Output {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("diskshadow"));
    command
        .arg("--store")
        .arg(store)
        .args(args)
        .current_dir(work)
        .env_remove("DISKSHADOW_STORE")
        .env_remove("DISKSHADOW_IN_PROCESS")
        .env("DISKSHADOW_IDLE_TIMEOUT", "20")
        .env("HOME", work)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(temporary) = temporary {
        command
            .env("TMPDIR", temporary)
            .env_remove("XDG_RUNTIME_DIR");
    }
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    // SAFETY: umask(2) is async-signal-safe and cannot fail.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("diskshadow runs");
    if let Some(mut input) = child.stdin.take() {
        use std::io::Write;
        input.write_all(stdin.as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("diskshadow ends")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .mode()
        & 0o777
}

fn stop_service(store: &Path, work: &Path) {
    let _ = run(store, work, None, &["service", "stop"], "");
    wait_for(10, "the service stops", || {
        !store.join("service.sock").exists()
    });
}

/// A scratch directory other users can traverse (the binary under /work is world-executable).
fn open_scratch(name: &str) -> PathBuf {
    let work = support::scratch(name);
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755)).expect("chmod");
    work
}

fn every_entry(directory: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(directory).expect("read_dir").flatten() {
        let path = entry.path();
        found.push(path.clone());
        if entry.file_type().expect("type").is_dir() {
            every_entry(&path, found);
        }
    }
}

/// A scratch directory `name` others can traverse, holding a store whose service its owner
/// (root) started with a `list shadows all`; `None` (the test skips) when not run as root.
fn store_served_to_its_owner(name: &str) -> Option<(PathBuf, PathBuf)> {
    if !is_root() {
        return None;
    }
    let work = open_scratch(name);
    let store = work.join("store");
    let listed = run(&store, &work, None, &[], "list shadows all\n");
    assert!(listed.status.success(), "{}", text(&listed));
    Some((work, store))
}

#[test]
fn access_other_users_are_refused_until_the_allow_list_names_them() {
    let Some((work, store)) = store_served_to_its_owner("access-peer-check") else {
        return;
    };
    // Made with umask 000, and still private.
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("service.sock")), 0o600);
    assert_eq!(mode(&store.join("service.log")), 0o600);

    // Another user cannot even reach the socket.
    let refused = run(&store, &work, Some(NOBODY), &[], "list shadows all\n");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("Access is denied."),
        "{}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("E_ACCESSDENIED (0x80070005)"),
        "{}",
        text(&refused)
    );

    // The owner opens the store to some other user: the socket becomes connectable, and the
    // peer check refuses nobody, who is not on the list.
    stop_service(&store, &work);
    fs::write(store.join("access.toml"), "uids = [12345]\n").expect("allow list");
    fs::set_permissions(store.join("access.toml"), fs::Permissions::from_mode(0o644))
        .expect("chmod");
    fs::set_permissions(&store, fs::Permissions::from_mode(0o711)).expect("chmod");
    let listed = run(&store, &work, None, &[], "list shadows all\n");
    assert!(listed.status.success(), "{}", text(&listed));
    assert_eq!(mode(&store.join("service.sock")), 0o666);
    let refused = run(&store, &work, Some(NOBODY), &[], "list shadows all\n");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("Access is denied. uid 65534 may not use"),
        "{}",
        text(&refused)
    );
    assert!(
        text(&refused).contains("E_ACCESSDENIED"),
        "{}",
        text(&refused)
    );
    let log = fs::read_to_string(store.join("service.log")).expect("log");
    assert!(
        log.contains("refused a connection of uid 65534"),
        "the refusal is logged:\n{log}"
    );

    // Named in the list (by name this time), nobody is served: the list is read on every
    // connection, so no restart is needed.
    fs::write(store.join("access.toml"), "users = [\"nobody\"]\n").expect("allow list");
    let accepted = run(&store, &work, Some(NOBODY), &[], "list shadows all\n");
    assert!(accepted.status.success(), "{}", text(&accepted));
    assert!(
        text(&accepted).contains("Number of shadow copies listed: 0"),
        "{}",
        text(&accepted)
    );
    stop_service(&store, &work);
}

#[test]
fn access_a_refused_requester_fails_at_add_volume_as_diskshadow_does() {
    let Some((work, store)) = store_served_to_its_owner("access-add-volume") else {
        return;
    };
    // The settings run; `add volume`, the first command that needs the service, fails in
    // DiskShadow's words, and the script stops there.
    let refused = run(
        &store,
        &work,
        Some(NOBODY),
        &[],
        "set context persistent\nadd volume data.img\ncreate\n",
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(
        stdout.contains(
            "-> set context persistent\n-> add volume data.img\n\nCOM call \"(*vssObject)->InitializeForBackup\" failed.\n"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("-> create"), "{stdout}");
    assert!(
        text(&refused).contains("E_ACCESSDENIED"),
        "{}",
        text(&refused)
    );
    stop_service(&store, &work);
}

#[test]
fn access_every_file_in_the_store_is_private_with_an_open_umask() {
    if !is_root() {
        return;
    }
    let work = open_scratch("access-private-store");
    let store = work.join("store");
    let data: Vec<u8> = (0..4u32 << 20).map(|index| (index % 251) as u8).collect();
    fs::write(work.join("data.img"), &data).expect("image");
    fs::set_permissions(work.join("data.img"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let script = "set context persistent nowriters\nadd volume data.img\ncreate\n\
                  set option plex\nadd volume data.img provider {8c4a3e5f-2b1d-4f6e-9a7c-3d5e6f708192}\ncreate\n";
    let created = run(&store, &work, None, &[], script);
    assert!(created.status.success(), "{}", text(&created));
    // Writing over the volume preserves old chunks into the diff area.
    let mut command_input = String::new();
    command_input.push_str(&"x".repeat(1 << 20));
    let written = run(
        &store,
        &work,
        None,
        &["volume", "write", "data.img", "--offset", "0"],
        &command_input,
    );
    assert!(written.status.success(), "{}", text(&written));

    let mut entries = Vec::new();
    every_entry(&store, &mut entries);
    let names: Vec<String> = entries
        .iter()
        .filter_map(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().to_string())
        })
        .collect();
    for wanted in ["chunks.dat", "index.log", "journal.log", "service.log"] {
        assert!(
            names.iter().any(|name| name == wanted),
            "{wanted} is in the store: {names:?}"
        );
    }
    assert!(
        names.iter().any(|name| name.starts_with("plex-")),
        "a plex copy is in the store: {names:?}"
    );
    let chunks = entries
        .iter()
        .find(|path| path.ends_with("chunks.dat"))
        .expect("chunks.dat");
    assert!(
        fs::metadata(chunks).expect("chunks").len() > 0,
        "old contents were preserved"
    );
    assert_eq!(mode(&store), 0o700);
    for path in &entries {
        assert_eq!(
            mode(path) & 0o077,
            0,
            "{} has mode {:o}",
            path.display(),
            mode(path)
        );
    }
    stop_service(&store, &work);
}

#[test]
fn access_tcp_expose_reports_the_bound_port_and_warns() {
    if !is_root() {
        return;
    }
    let work = open_scratch("access-tcp-port");
    let store = work.join("store");
    fs::write(work.join("data.img"), vec![7u8; 1 << 20]).expect("image");
    let script = "set context persistent nowriters\nadd volume data.img alias snap\ncreate\n\
                  expose %snap% nbd://127.0.0.1:0/x\n";
    let exposed = run(&store, &work, None, &[], script);
    let output = text(&exposed);
    assert!(exposed.status.success(), "{output}");
    let shown = output
        .lines()
        .find_map(|line| line.strip_prefix("The shadow copy was successfully exposed as "))
        .unwrap_or_else(|| panic!("no expose reply in {output}"));
    let url = shown.trim_end_matches('.');
    let port: u16 = url
        .strip_prefix("nbd://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/x"))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("not a TCP URL with a port: {url}"));
    assert_ne!(port, 0, "the bound port is reported, not the requested 0");
    assert!(
        output.contains(&format!(
            "Warning: {url} has no authentication: any user of this machine can connect"
        )),
        "{output}"
    );
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the reported port listens");

    let listed = run(&store, &work, None, &[], "list shadows all\n");
    let listing = text(&listed);
    assert!(
        listing.contains(&format!("- Exposed remotely as {url}")),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("- Warning: {url} has no authentication")),
        "{listing}"
    );
    stop_service(&store, &work);
}

#[test]
fn access_share_names_cannot_leave_the_store() {
    if !is_root() {
        return;
    }
    let work = open_scratch("access-share-names");
    let store = work.join("store");
    fs::write(work.join("data.img"), vec![7u8; 1 << 20]).expect("image");
    let script = "set context persistent nowriters\nadd volume data.img alias snap\ncreate\n\
                  expose %snap% \\\\host\\../../x/y\n";
    let refused = run(&store, &work, None, &[], script);
    let output = text(&refused);
    assert!(!refused.status.success(), "{output}");
    assert!(
        output.contains("`../../x/y` in `\\\\host\\../../x/y` is not a valid share name"),
        "{output}"
    );
    assert!(
        !work.join("x").exists(),
        "no directory was made outside the store"
    );
    assert!(
        !store.join("x").exists(),
        "no directory was made in the store"
    );
    stop_service(&store, &work);
}

#[test]
fn access_a_hostile_fallback_share_directory_is_refused() {
    if !is_root() {
        return;
    }
    let work = open_scratch("access-share-fallback");
    // A store path so long that its share sockets cannot live in it.
    let store = work.join("s".repeat(70));
    let temporary = work.join("tmp");
    fs::create_dir(&temporary).expect("tmp");
    fs::write(work.join("data.img"), vec![7u8; 1 << 20]).expect("image");
    // Another user got there first: a symbolic link to a directory of theirs.
    let theirs = work.join("theirs");
    fs::create_dir(&theirs).expect("theirs");
    std::os::unix::fs::symlink(&theirs, temporary.join("diskshadow-shares-0")).expect("symlink");
    let script = "set context persistent nowriters\nadd volume data.img alias snap\ncreate\n\
                  expose %snap% \\\\localhost\\data\n";
    let refused = run_with_temporary_directory(&store, &work, None, &[], script, Some(&temporary));
    let output = text(&refused);
    assert!(!refused.status.success(), "{output}");
    assert!(
        output.contains("is not a private directory of this user: it is a symbolic link"),
        "{output}"
    );
    assert_eq!(
        fs::read_dir(&theirs).expect("theirs").count(),
        0,
        "no socket was put in the other user's directory"
    );

    // An open directory (mode 0777) is refused too; a private one of ours is used.
    fs::remove_file(temporary.join("diskshadow-shares-0")).expect("unlink");
    let open = temporary.join("diskshadow-shares-0");
    fs::create_dir(&open).expect("mkdir");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
    let expose = "expose %snap% \\\\localhost\\data\n";
    let again = format!(
        "set context persistent nowriters\nadd volume data.img alias snap\ncreate\n{expose}"
    );
    let refused = run_with_temporary_directory(&store, &work, None, &[], &again, Some(&temporary));
    assert!(
        text(&refused).contains("other users have access to it (mode 777)"),
        "{}",
        text(&refused)
    );
    fs::set_permissions(&open, fs::Permissions::from_mode(0o700)).expect("chmod");
    let exposed = run_with_temporary_directory(&store, &work, None, &[], &again, Some(&temporary));
    assert!(exposed.status.success(), "{}", text(&exposed));
    assert_eq!(mode(&open.join("data.sock")), 0o600);
    let _ = run_with_temporary_directory(
        &store,
        &work,
        None,
        &["service", "stop"],
        "",
        Some(&temporary),
    );
}
