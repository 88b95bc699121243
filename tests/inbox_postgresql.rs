//! The PostgreSQL Writer against a real PostgreSQL server started by the test, its data
//! directory on ext4 on an attached diskshadow volume: a shadow taken with the writer under a
//! write load starts as a second server with every transaction committed before the freeze;
//! the writer killed at freeze leaves no backup running; a server that is down fails Identify
//! with the reason.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::inbox::{have_tools, sh_ok, AttachedExt4};
use support::process::{diskshadow, run_script, wait_for};

fn bindir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn writer_binary() -> &'static str {
    env!("CARGO_BIN_EXE_diskshadow-writer")
}

/// `psql` as postgres on the server whose socket is in `socket`.
fn psql(socket: &Path, port: u16, sql: &str) -> std::process::Output {
    Command::new("runuser")
        .args([
            "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-q", "-d", "postgres", "-h",
        ])
        .arg(socket)
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(sql)
        .output()
        .expect("psql")
}

fn as_postgres(bin: &Path, program: &str, arguments: &str) -> String {
    format!(
        "runuser -u postgres -- {} {arguments}",
        bin.join(program).display()
    )
}

/// Inserts one row per transaction, numbered, and remembers which inserts were acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(socket: &Path, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let mut child = Command::new("runuser")
            .args([
                "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-q", "-d", "postgres", "-h",
            ])
            .arg(socket)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("load psql");
        let (thread_stop, thread_acknowledged) = (stop.clone(), acknowledged.clone());
        let thread = std::thread::spawn(move || {
            let mut input = child.stdin.take().expect("stdin");
            let mut output = BufReader::new(child.stdout.take().expect("stdout"));
            let mut number = 0u64;
            // Bounded: at most 20000 transactions, a few hundred a second.
            while !thread_stop.load(Ordering::SeqCst) && number < 20_000 {
                number += 1;
                writeln!(input, "INSERT INTO load VALUES ({number}) RETURNING id;").expect("send");
                input.flush().expect("flush");
                let mut line = String::new();
                if output.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line.trim() == number.to_string() {
                    thread_acknowledged.lock().expect("lock").push(number);
                }
                std::thread::sleep(Duration::from_millis(2));
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

    fn last_acknowledged(&self) -> u64 {
        self.acknowledged
            .lock()
            .expect("lock")
            .last()
            .copied()
            .unwrap_or(0)
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.last_acknowledged()
    }
}

fn start_cluster(bin: &Path, data: &Path, socket: &Path, port: u16, log: &Path) {
    sh_ok(&as_postgres(
        bin,
        "pg_ctl",
        &format!(
            "start -w -t 60 -D {} -l {} -o \"-k {} -p {port} -c listen_addresses=''\"",
            data.display(),
            log.display(),
            socket.display()
        ),
    ));
}

#[test]
fn inbox_postgresql_shadow_starts_as_a_second_server_with_every_committed_transaction() {
    if !have_tools(&[
        "runuser",
        "mkfs.ext4",
        "fusermount3",
        "psql",
        "/usr/lib/postgresql",
    ]) {
        return;
    }
    let Some(bin) = bindir() else {
        support::skip("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)");
        return;
    };
    let work = support::scratch("inbox_postgresql_shadow");
    let mut volume = AttachedExt4::new(&work, "pg", "160M");
    let data = volume.mount_point.join("data");
    let socket = work.join("socket");
    let copy_socket = work.join("copy-socket");
    std::fs::create_dir_all(&socket).expect("socket dir");
    std::fs::create_dir_all(&copy_socket).expect("socket dir");
    sh_ok(&format!(
        "chmod 755 {work} && mkdir -p {data} && chown postgres: {data} {socket} {copy_socket} {mnt}",
        work = work.display(),
        data = data.display(),
        socket = socket.display(),
        copy_socket = copy_socket.display(),
        mnt = volume.mount_point.display()
    ));
    sh_ok(&as_postgres(
        &bin,
        "initdb",
        &format!("-A trust -N -D {} >/dev/null", data.display()),
    ));
    let log = work.join("server.log");
    sh_ok(&format!(
        "touch {log} && chown postgres: {log}",
        log = log.display()
    ));
    start_cluster(&bin, &data, &socket, 5433, &log);
    volume.on_cleanup(as_postgres(
        &bin,
        "pg_ctl",
        &format!("stop -m immediate -D {}", data.display()),
    ));
    let created = psql(&socket, 5433, "CREATE TABLE load (id bigint PRIMARY KEY);");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    diskshadow(&volume.store)
        .args(["writer", "add", "postgresql", "--pgdata"])
        .arg(&data)
        .arg("--socket-dir")
        .arg(&socket)
        .args(["--port", "5433"])
        .assert()
        .success();
    let checked = diskshadow(&volume.store)
        .args(["writer", "check", "PostgreSQL Writer"])
        .output()
        .expect("check");
    let report = String::from_utf8_lossy(&checked.stdout).to_string();
    assert!(
        checked.status.success(),
        "writer check: {report}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        report.contains("The writer follows the protocol."),
        "{report}"
    );
    // The check ran a restore: the server was stopped and started again.
    wait_for(30, "the server is back after the check's restore", || {
        psql(&socket, 5433, "SELECT 1;").status.success()
    });

    let load = Load::start(&socket, 5433);
    wait_for(60, "the load commits", || load.last_acknowledged() >= 20);
    let committed_before = load.last_acknowledged();
    let started = Instant::now();
    let output = run_script(
        &volume.store,
        &work,
        "create.dsh",
        "set context persistent\nset verbose on\nset trace on\nadd volume pg.img alias p\ncreate\nlist writers status\n",
    );
    let created_in = started.elapsed();
    let sent_after = load.finish() + 1;
    assert!(output.contains("PostgreSQL Writer"), "{output}");
    assert!(
        output.contains("backup_label"),
        "the writer completed the shadow: {output}"
    );

    // Copy the cluster out of the exposed shadow and start it as a second server.
    let exposed = work.join("exposed");
    std::fs::create_dir_all(&exposed).expect("expose dir");
    run_script(
        &volume.store,
        &work,
        "expose.dsh",
        &format!("expose %p% {}\n", exposed.display()).replace("%p%", &shadow_of(&output)),
    );
    volume.on_cleanup(format!("umount -l {} 2>/dev/null", exposed.display()));
    let copy = work.join("copy");
    sh_ok(&format!(
        "cp -a {}/data {} && chown -R postgres: {} && chmod 700 {}",
        exposed.display(),
        copy.display(),
        copy.display(),
        copy.display()
    ));
    assert!(
        copy.join("backup_label").is_file(),
        "the shadow holds the backup label"
    );
    let copy_log = work.join("copy.log");
    sh_ok(&format!(
        "touch {log} && chown postgres: {log}",
        log = copy_log.display()
    ));
    start_cluster(&bin, &copy, &copy_socket, 5434, &copy_log);
    volume.on_cleanup(as_postgres(
        &bin,
        "pg_ctl",
        &format!("stop -m immediate -D {}", copy.display()),
    ));
    let server_log = std::fs::read_to_string(&copy_log).unwrap_or_default();
    assert!(!server_log.contains("PANIC"), "{server_log}");
    assert!(
        server_log.contains("consistent recovery state reached")
            || server_log.contains("redo done"),
        "the second server recovered from the backup label: {server_log}"
    );
    let answer = psql(
        &copy_socket,
        5434,
        "SELECT count(*), coalesce(max(id), 0) FROM load;",
    );
    let text = String::from_utf8_lossy(&answer.stdout).trim().to_string();
    let (count, max) = text.split_once('|').expect("count|max");
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
    eprintln!("shadow with {max} rows, {committed_before} committed before create, made in {created_in:?}");

    // Fault: the writer killed while frozen leaves no backup running on the server.
    let mut writer = Command::new(writer_binary())
        .args(["postgresql", "--pgdata"])
        .arg(&data)
        .arg("--socket-dir")
        .arg(&socket)
        .args(["--port", "5433"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("writer");
    let mut input = writer.stdin.take().expect("stdin");
    let mut answers = BufReader::new(writer.stdout.take().expect("stdout"));
    for request in [
        r#"{"id":1,"event":"identify"}"#,
        r#"{"id":2,"event":"prepare_snapshot","snapshot_set_id":"{0}","volumes":[]}"#,
        r#"{"id":3,"event":"freeze","snapshot_set_id":"{0}","deadline_ms":30000}"#,
    ] {
        writeln!(input, "{request}").expect("send");
        input.flush().expect("flush");
        let mut line = String::new();
        loop {
            line.clear();
            answers.read_line(&mut line).expect("answer");
            if !line.contains("\"log\"") {
                break;
            }
        }
        assert!(line.contains("\"ok\":true"), "{request}: {line}");
    }
    let in_backup = || {
        let output = psql(
            &socket,
            5433,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_backup_start%';",
        );
        String::from_utf8_lossy(&output.stdout).trim() != "0"
    };
    assert!(
        in_backup(),
        "the writer's session is in backup mode while frozen"
    );
    writer.kill().expect("kill");
    let _ = writer.wait();
    // A non-exclusive backup belongs to its session: the session gone, the backup is gone.
    wait_for(
        10,
        "the backup ends with the killed writer's session",
        || !in_backup(),
    );
}

/// The `{GUID}` of the first shadow copy created in `output`.
fn shadow_of(output: &str) -> String {
    support::process::shadow_ids(output)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no shadow copy in {output}"))
}

#[test]
fn inbox_postgresql_identify_fails_with_the_reason_when_the_server_is_down() {
    if !have_tools(&["psql"]) {
        return;
    }
    let work = support::scratch("inbox_postgresql_down");
    let data = work.join("data");
    std::fs::create_dir_all(&data).expect("data");
    let output = Command::new(writer_binary())
        .args(["postgresql", "--pgdata"])
        .arg(&data)
        .arg("--socket-dir")
        .arg(&work)
        .args(["--port", "5499"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut child| {
            writeln!(
                child.stdin.as_mut().expect("stdin"),
                r#"{{"id":1,"event":"identify"}}"#
            )?;
            drop(child.stdin.take());
            child.wait_with_output()
        })
        .expect("writer");
    let text = String::from_utf8_lossy(&output.stdout);
    let answer: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("an answer")).expect("json");
    assert_eq!(answer["ok"], false, "{text}");
    assert_eq!(answer["error"], "retryable", "{text}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(message.contains("not reachable"), "{message}");
    assert!(
        message.contains(&work.display().to_string()),
        "names the socket: {message}"
    );
}
