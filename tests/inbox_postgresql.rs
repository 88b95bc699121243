//! The PostgreSQL Writer against a real PostgreSQL server started by the test, its data
//! directory on ext4 on an attached diskshadow volume: a shadow taken with the writer under a
//! write load starts as a second server with every transaction committed before the freeze;
//! the writer killed at freeze leaves no backup running; a server that is down fails Identify
//! with the reason.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use support::inbox::{have_tools, sh_ok, AttachedExt4, Load};
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

/// A `psql` session for the load: one insert per transaction, numbered.
fn load_client(socket: &Path, port: u16) -> Command {
    let mut command = Command::new("runuser");
    command
        .args([
            "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-q", "-d", "postgres", "-h",
        ])
        .arg(socket)
        .arg("-p")
        .arg(port.to_string());
    command
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
    std::fs::create_dir_all(&socket).expect("socket dir");
    sh_ok(&format!(
        "chmod 755 {work} && mkdir -p {data} && chown postgres: {data} {socket} {mnt}",
        work = work.display(),
        data = data.display(),
        socket = socket.display(),
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

    let load = Load::start(load_client(&socket, 5433), |number| {
        format!("INSERT INTO load VALUES ({number}) RETURNING id;")
    });
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

    let copy = start_copy(&bin, &mut volume, &work, &shadow_of(&output), "copy");
    assert!(copy.backup_label, "the shadow holds the backup label");
    assert!(!copy.log.contains("PANIC"), "{}", copy.log);
    assert!(
        copy.log.contains("consistent recovery state reached") || copy.log.contains("redo done"),
        "the second server recovered from the backup label: {}",
        copy.log
    );
    assert!(
        !copy.crash_recovery(),
        "with the writer the second server does backup recovery, not crash recovery: {}",
        copy.log
    );
    let (count, max) = (copy.count, copy.max);
    copy.stop();
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

    // The same load, shadows taken nowriters: crash-consistent, so each copy starts with crash
    // recovery (counted), and still holds every insert committed before the create.
    let created = psql(
        &socket,
        5433,
        "CREATE TABLE load_nowriters (id bigint PRIMARY KEY);",
    );
    assert!(created.status.success());
    let load = Load::start(load_client(&socket, 5433), |number| {
        format!("INSERT INTO load_nowriters VALUES ({number}) RETURNING id;")
    });
    wait_for(60, "the load commits", || load.last_acknowledged() >= 20);
    const NOWRITERS_ROUNDS: usize = 2;
    let mut crash_recoveries = 0;
    for round in 0..NOWRITERS_ROUNDS {
        let committed_before = load.last_acknowledged();
        let output = run_script(
            &volume.store,
            &work,
            &format!("nowriters-{round}.dsh"),
            "set context persistent nowriters\nadd volume pg.img\ncreate\n",
        );
        let at_most = load.last_acknowledged() + 1;
        let copy = start_copy(
            &bin,
            &mut volume,
            &work,
            &shadow_of(&output),
            &format!("nowriters-{round}"),
        );
        assert!(!copy.backup_label, "no writer wrote a backup label");
        assert!(!copy.log.contains("PANIC"), "{}", copy.log);
        let answer = psql(
            &copy.socket,
            5434,
            "SELECT count(*), coalesce(max(id), 0) FROM load_nowriters;",
        );
        copy.stop();
        let text = String::from_utf8_lossy(&answer.stdout).trim().to_string();
        let (count, max) = text.split_once('|').expect("count|max");
        let (count, max): (u64, u64) = (count.parse().expect("count"), max.parse().expect("max"));
        assert!(
            max >= committed_before && max <= at_most && count == max,
            "nowriters round {round}: {count} rows up to {max}, committed before {committed_before}"
        );
        crash_recoveries += usize::from(copy.crash_recovery());
    }
    load.finish();
    eprintln!(
        "PostgreSQL under load: copies started with crash recovery: 0/1 with the writer, {crash_recoveries}/{NOWRITERS_ROUNDS} nowriters"
    );

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

/// A second server started on a copy of a shadow's data directory (port 5434).
struct CopyServer {
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    log: String,
    backup_label: bool,
    count: u64,
    max: u64,
}

impl CopyServer {
    /// True when the server started with crash recovery (a data directory that was not shut
    /// down, and no backup label: PostgreSQL says `automatic recovery in progress`).
    fn crash_recovery(&self) -> bool {
        self.log.contains("automatic recovery in progress")
    }

    fn stop(&self) {
        let _ = support::inbox::sh(&as_postgres(
            &self.bin,
            "pg_ctl",
            &format!("stop -m immediate -D {}", self.data.display()),
        ));
    }
}

/// Exposes `shadow`, copies the cluster out of it, and starts the copy as a second server;
/// reads its log and the `load` table's count and largest id.
fn start_copy(
    bin: &Path,
    volume: &mut AttachedExt4,
    work: &Path,
    shadow: &str,
    tag: &str,
) -> CopyServer {
    let exposed = work.join(format!("exposed-{tag}"));
    std::fs::create_dir_all(&exposed).expect("expose dir");
    run_script(
        &volume.store,
        work,
        &format!("expose-{tag}.dsh"),
        &format!("expose {shadow} {}\n", exposed.display()),
    );
    let copy = work.join(tag);
    let copied = support::inbox::sh(&format!(
        // A copy taken without the writer still holds the live server's lock file.
        "cp -a {exposed}/data {copy} && rm -f {copy}/postmaster.pid && chown -R postgres: {copy} && chmod 700 {copy}",
        exposed = exposed.display(),
        copy = copy.display(),
    ));
    let _ = support::inbox::sh(&format!("umount -l {}", exposed.display()));
    assert!(copied.status.success(), "copied out of the shadow");
    let socket = work.join(format!("{tag}-socket"));
    std::fs::create_dir_all(&socket).expect("socket dir");
    let log = work.join(format!("{tag}.log"));
    sh_ok(&format!(
        "touch {log} && chown postgres: {log} {socket}",
        log = log.display(),
        socket = socket.display()
    ));
    let backup_label = copy.join("backup_label").is_file();
    start_cluster(bin, &copy, &socket, 5434, &log);
    volume.on_cleanup(as_postgres(
        bin,
        "pg_ctl",
        &format!("stop -m immediate -D {}", copy.display()),
    ));
    let answer = psql(
        &socket,
        5434,
        "SELECT count(*), coalesce(max(id), 0) FROM load;",
    );
    let text = String::from_utf8_lossy(&answer.stdout).trim().to_string();
    let (count, max) = text.split_once('|').unwrap_or(("0", "0"));
    CopyServer {
        bin: bin.to_path_buf(),
        data: copy,
        socket,
        log: std::fs::read_to_string(&log).unwrap_or_default(),
        backup_label,
        count: count.parse().unwrap_or(0),
        max: max.parse().unwrap_or(0),
    }
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
