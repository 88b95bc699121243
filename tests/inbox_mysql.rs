//! The MySQL Writer against a real MariaDB server started by the test on a Unix socket only:
//! Freeze holds FLUSH TABLES WITH READ LOCK (no insert lands while frozen) and records the
//! binary log position; Thaw, the writer's death and the deadline each release it; a server
//! that is down fails Identify with the reason.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::inbox::{have_tools, sh_ok, WriterProcess};
use support::process::wait_for;

struct Server {
    child: Child,
    socket: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stopped by its PID, whatever the test did.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(socket: &Path, sql: &str) -> std::process::Output {
    Command::new("mariadb")
        .arg(format!("--socket={}", socket.display()))
        .args(["--user=root", "--batch", "--skip-column-names", "-e", sql])
        .output()
        .expect("mariadb")
}

fn start_server(work: &Path) -> Server {
    let data = work.join("data");
    let socket = work.join("mysqld.sock");
    sh_ok(&format!(
        "mariadb-install-db --no-defaults --datadir={} --user=root --auth-root-authentication-method=socket --skip-test-db >/dev/null 2>&1",
        data.display()
    ));
    let child = Command::new("mariadbd")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", work.join("mysqld.pid").display()))
        .arg(format!("--log-error={}", work.join("error.log").display()))
        .arg(format!("--log-bin={}", work.join("binlog").display()))
        .args(["--skip-networking", "--user=root", "--server-id=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mariadbd");
    let server = Server { child, socket };
    wait_for(60, "MariaDB accepts connections", || {
        client(&server.socket, "SELECT 1;").status.success()
    });
    server
}

#[test]
fn inbox_mysql_freeze_holds_the_read_lock_records_the_binlog_and_always_releases() {
    if !have_tools(&["mariadbd", "mariadb-install-db", "mariadb"]) {
        return;
    }
    let work = support::scratch("inbox_mysql_lock");
    let server = start_server(&work);
    assert!(client(&server.socket, "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO app.t VALUES (1);").status.success());
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
    assert!(
        freeze["binlog_position"]["file"]
            .as_str()
            .unwrap_or_default()
            .starts_with("binlog."),
        "{freeze}"
    );
    assert!(!blocked_insert(2), "no insert while frozen");
    assert_eq!(writer.send("thaw", json!({}))["ok"], true);
    assert!(blocked_insert(3), "inserts resume after thaw");

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
    let count = client(&server.socket, "SELECT count(*) FROM app.t;");
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "5");

    // The server stopped before Identify: a clear failure naming the socket.
    drop(server);
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
