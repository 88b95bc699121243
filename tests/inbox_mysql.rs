//! The MySQL Writer against a real MariaDB server, started once for this test binary on a Unix
//! socket only, its data directory on ext4 on an attached diskshadow volume: Freeze blocks
//! commits (BACKUP STAGE … BLOCK_COMMIT) and records the binary log position; Thaw, the writer's
//! death and the deadline each release it; a shadow taken with the writer under an insert load
//! starts as a second server with every insert committed before the freeze, none after the
//! thaw, and the binary log position in its data directory; a server that is down fails
//! Identify with the reason; `writer check` passes on the registration.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde_json::json;
use support::inbox::{
    assert_writer_check_passes, at_exit, have_tools, sh_ok, AttachedExt4, Load, WriterProcess,
};
use support::process::{diskshadow, run_script, shadow_ids, wait_for};

/// The server every test of this binary shares; stopped by PID when the binary exits.
struct SharedServer {
    work: PathBuf,
    store: PathBuf,
    socket: PathBuf,
}

/// The tests freeze the whole server, so they take turns.
static TURN: Mutex<()> = Mutex::new(());

const SERVER_OPTIONS: [&str; 4] = [
    "--innodb-log-file-size=16M",
    "--innodb-buffer-pool-size=32M",
    "--skip-networking",
    "--user=root",
];

fn client(socket: &Path, sql: &str) -> std::process::Output {
    Command::new("mariadb")
        .arg(format!("--socket={}", socket.display()))
        .args(["--user=root", "--batch", "--skip-column-names", "-e", sql])
        .output()
        .expect("mariadb")
}

fn query(socket: &Path, sql: &str) -> String {
    let output = client(socket, sql);
    assert!(
        output.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `mariadbd` on `data`, listening on `socket` only.
fn start_mariadbd(data: &Path, socket: &Path, log: &Path, server_id: u32) -> Child {
    let child = Command::new("mariadbd")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}.pid", socket.display()))
        .arg(format!("--log-error={}", log.display()))
        .arg("--log-bin=binlog")
        .arg(format!("--server-id={server_id}"))
        .args(SERVER_OPTIONS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mariadbd");
    wait_for(60, "MariaDB accepts connections", || {
        client(socket, "SELECT 1;").status.success()
    });
    child
}

fn start_shared_server() -> SharedServer {
    let work = support::scratch("inbox_mysql_server");
    let volume = AttachedExt4::new(&work, "db", "200M");
    let data = volume.mount_point.join("data");
    let socket = work.join("mysqld.sock");
    sh_ok(&format!(
        "mariadb-install-db --no-defaults --datadir={} {} --auth-root-authentication-method=socket --skip-test-db >/dev/null 2>&1",
        data.display(),
        SERVER_OPTIONS.join(" ")
    ));
    let mut server = start_mariadbd(&data, &socket, &work.join("error.log"), 1);
    let store = volume.store.clone();
    at_exit(Box::new(move || {
        let _ = server.kill();
        let _ = server.wait();
        drop(volume);
    }));
    query(&socket, "CREATE DATABASE app;");
    SharedServer {
        work,
        store,
        socket,
    }
}

/// The shared server and this test's turn with it; None (after `skipped:`) without the tools.
fn shared_server() -> Option<(&'static SharedServer, MutexGuard<'static, ()>)> {
    if !have_tools(&[
        "mariadbd",
        "mariadb-install-db",
        "mariadb",
        "mkfs.ext4",
        "fusermount3",
    ]) {
        return None;
    }
    static SERVER: OnceLock<SharedServer> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Some((SERVER.get_or_init(start_shared_server), turn))
}

#[test]
fn inbox_mysql_freeze_blocks_commits_records_the_binlog_and_always_releases() {
    let Some((server, _turn)) = shared_server() else {
        return;
    };
    query(
        &server.socket,
        "CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO app.t VALUES (1);",
    );
    let socket = server.socket.display().to_string();
    let blocked_insert = |id: u32| {
        client(
            &server.socket,
            &format!("SET SESSION lock_wait_timeout = 1; INSERT INTO app.t VALUES ({id});"),
        )
        .status
        .success()
    };

    let mut writer = WriterProcess::start(&["mysql", "--socket", &socket]);
    let metadata = writer.send("identify", json!({}));
    assert_eq!(metadata["ok"], true, "{metadata}");
    assert_eq!(metadata["metadata"]["components"][0]["name"], "mysql");
    let freeze = writer.send("freeze", json!({"deadline_ms": 30000}));
    assert_eq!(freeze["ok"], true, "{freeze}");
    assert_eq!(freeze["lock"], "backup_stage", "MariaDB 10.4+: {freeze}");
    assert!(
        freeze["binlog_position"]["file"]
            .as_str()
            .unwrap_or_default()
            .starts_with("binlog."),
        "{freeze}"
    );
    assert!(
        freeze["binlog_position"]["position"].as_u64().unwrap_or(0) > 0,
        "{freeze}"
    );
    assert!(!blocked_insert(2), "no commit while frozen");
    assert!(
        client(&server.socket, "SELECT count(*) FROM app.t;")
            .status
            .success(),
        "reads go on while frozen"
    );
    assert_eq!(writer.send("thaw", json!({}))["ok"], true);
    assert!(blocked_insert(3), "commits resume after thaw");

    // Abort after freeze releases.
    assert_eq!(
        writer.send("freeze", json!({"deadline_ms": 30000}))["ok"],
        true
    );
    assert_eq!(
        writer.send("abort", json!({"reason": "requester"}))["ok"],
        true
    );
    assert!(blocked_insert(4), "released by abort");

    // Killed at freeze: the lock goes with the client's connection.
    assert_eq!(
        writer.send("freeze", json!({"deadline_ms": 30000}))["ok"],
        true
    );
    writer.kill();
    wait_for(10, "the lock is gone with the killed writer", || {
        blocked_insert(5)
    });
    // The deadline passes without thaw: released, and thaw says timeout.
    let mut writer = WriterProcess::start(&["mysql", "--socket", &socket]);
    assert_eq!(
        writer.send("freeze", json!({"deadline_ms": 500}))["ok"],
        true
    );
    std::thread::sleep(Duration::from_millis(900));
    assert!(blocked_insert(6), "released at the deadline");
    assert_eq!(writer.send("thaw", json!({}))["error"], "timeout");
    assert!(writer.finish());
    assert_eq!(query(&server.socket, "SELECT count(*) FROM app.t;"), "5");
}

#[test]
fn inbox_mysql_identify_fails_with_the_reason_when_the_server_is_down() {
    if !have_tools(&["mariadb"]) {
        return;
    }
    // A stopped server leaves no socket behind.
    let work = support::scratch("inbox_mysql_down");
    let socket = work.join("stopped.sock").display().to_string();
    let mut writer = WriterProcess::start(&["mysql", "--socket", &socket]);
    let answer = writer.send("identify", json!({}));
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["error"], "retryable");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not reachable") && message.contains(&socket),
        "{message}"
    );
}

#[test]
fn inbox_mysql_shadow_starts_as_a_second_server_with_every_committed_insert() {
    let Some((server, _turn)) = shared_server() else {
        return;
    };
    let work = &server.work;
    query(
        &server.socket,
        "CREATE TABLE app.load (id BIGINT PRIMARY KEY) ENGINE=InnoDB;",
    );
    diskshadow(&server.store)
        .args(["writer", "add", "mysql", "--socket"])
        .arg(&server.socket)
        .assert()
        .success();
    assert_writer_check_passes(&server.store, "MySQL Writer");

    let mut load_client = Command::new("mariadb");
    load_client
        .arg(format!("--socket={}", server.socket.display()))
        .args([
            "--user=root",
            "--batch",
            "--skip-column-names",
            "--unbuffered",
        ]);
    let load = Load::start(load_client, |number| {
        format!("INSERT INTO app.load VALUES ({number}); SELECT {number};")
    });
    wait_for(60, "the load commits", || load.last_acknowledged() >= 20);
    let committed_before = load.last_acknowledged();
    let output = run_script(
        &server.store,
        work,
        "create.dsh",
        "set context persistent\nset verbose on\nset trace on\nadd volume db.img alias d\ncreate\n",
    );
    let sent_after = load.finish() + 1;
    assert!(output.contains("MySQL Writer"), "{output}");
    assert!(
        output.contains("diskshadow_binlog_info"),
        "the writer wrote the binary log position into the shadow: {output}"
    );
    let shadow = shadow_ids(&output)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no shadow copy in {output}"));

    // Copy the data directory out of the exposed shadow and start it as a second server.
    let exposed = work.join("exposed");
    std::fs::create_dir_all(&exposed).expect("expose dir");
    run_script(
        &server.store,
        work,
        "expose.dsh",
        &format!("expose {shadow} {}\n", exposed.display()),
    );
    let copy = work.join("copy");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(exposed.join("data"))
        .arg(&copy)
        .status();
    let _ = Command::new("umount").arg("-l").arg(&exposed).status();
    assert!(copied.is_ok_and(|status| status.success()), "copied");
    let binlog_info = std::fs::read_to_string(copy.join("diskshadow_binlog_info"))
        .expect("the shadow holds the binary log position");
    let fields: Vec<&str> = binlog_info.trim_end().split('\t').collect();
    assert!(
        fields.len() == 3 && fields[0].starts_with("binlog."),
        "{binlog_info}"
    );
    let position: u64 = fields[1].parse().expect("a position");
    let binlog_length = std::fs::metadata(copy.join(fields[0]))
        .map(|metadata| metadata.len())
        .unwrap_or(0);
    assert!(
        binlog_length >= position,
        "the shadow's binary log reaches the recorded position ({binlog_length} < {position})"
    );

    let copy_socket = work.join("copy.sock");
    let copy_log = work.join("copy-error.log");
    let mut second = start_mariadbd(&copy, &copy_socket, &copy_log, 2);
    let rows = client(
        &copy_socket,
        "SELECT count(*), coalesce(max(id), 0) FROM app.load;",
    );
    let _ = second.kill();
    let _ = second.wait();
    let server_log = std::fs::read_to_string(&copy_log).unwrap_or_default();
    assert!(
        !server_log.contains("[ERROR]"),
        "the second server opened the shadow without errors: {server_log}"
    );
    let text = String::from_utf8_lossy(&rows.stdout).trim().to_string();
    let (count, max) = text.split_once('\t').expect("count and max");
    let (count, max): (u64, u64) = (count.parse().expect("count"), max.parse().expect("max"));
    assert!(
        max >= committed_before,
        "every insert committed before the freeze is there ({max} < {committed_before})"
    );
    assert_eq!(count, max, "no hole: each committed insert is there once");
    assert!(
        max < sent_after,
        "nothing sent after thaw is there ({max} >= {sent_after})"
    );
    eprintln!(
        "shadow with {max} rows, {committed_before} committed before create; InnoDB crash recovery on the copy: {}",
        server_log.contains("crash recovery")
    );
}
