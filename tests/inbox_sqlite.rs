//! The SQLite Writer against the real `sqlite3`: Freeze holds the write lock so no transaction
//! lands while frozen, Thaw (or the writer's death, or the deadline) releases it; a missing
//! database fails Identify with the reason; `writer check` passes on it; shadows taken under a
//! write load pass `PRAGMA integrity_check` and hold every transaction committed before the
//! freeze, and are compared with shadows taken `nowriters` (how many need WAL recovery).

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::inbox::{have_tools, AttachedExt4, Load, WriterProcess};
use support::process::{diskshadow, run_script, shadow_ids, wait_for};

fn sqlite(database: &std::path::Path, sql: &str) -> std::process::Output {
    Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 100")
        .arg(database)
        .arg(sql)
        .output()
        .expect("sqlite3")
}

fn rows(database: &std::path::Path) -> u64 {
    String::from_utf8_lossy(&sqlite(database, "SELECT count(*) FROM t;").stdout)
        .trim()
        .parse()
        .expect("count")
}

#[test]
fn inbox_sqlite_freeze_holds_the_write_lock_until_thaw_and_dies_with_the_writer() {
    if !have_tools(&["sqlite3"]) {
        return;
    }
    let work = support::scratch("inbox_sqlite_lock");
    let database = work.join("app.db");
    assert!(sqlite(
        &database,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);"
    )
    .status
    .success());
    let name = database.display().to_string();
    let mut writer = WriterProcess::start(&["sqlite", "--db", &name]);
    let metadata = writer.send("identify", json!({}));
    assert_eq!(metadata["ok"], true, "{metadata}");
    assert_eq!(metadata["metadata"]["components"][0]["name"], name.as_str());
    assert_eq!(
        writer.send("prepare_snapshot", json!({"volumes": []}))["ok"],
        true
    );
    assert_eq!(
        writer.send("freeze", json!({"deadline_ms": 20000}))["ok"],
        true
    );
    assert!(
        !sqlite(&database, "INSERT INTO t VALUES (2);")
            .status
            .success(),
        "no write while frozen"
    );
    assert!(
        !work.join("app.db-wal").exists()
            || std::fs::metadata(work.join("app.db-wal"))
                .map(|m| m.len())
                .unwrap_or(0)
                == 0,
        "the log was checkpointed into the database"
    );
    assert_eq!(writer.send("thaw", json!({}))["ok"], true);
    assert!(
        sqlite(&database, "INSERT INTO t VALUES (3);")
            .status
            .success(),
        "writes resume after thaw"
    );
    // Killed while frozen: the lock goes with its sqlite3 session.
    assert_eq!(
        writer.send("freeze", json!({"deadline_ms": 20000}))["ok"],
        true
    );
    assert!(!sqlite(&database, "INSERT INTO t VALUES (4);")
        .status
        .success());
    writer.kill();
    support::process::wait_for(5, "the lock is released after the writer died", || {
        sqlite(&database, "INSERT INTO t VALUES (5);")
            .status
            .success()
    });
    // The deadline: the writer releases on its own and says so at thaw.
    let mut writer = WriterProcess::start(&["sqlite", "--db", &name]);
    assert_eq!(
        writer.send("freeze", json!({"deadline_ms": 300}))["ok"],
        true
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        sqlite(&database, "INSERT INTO t VALUES (6);")
            .status
            .success(),
        "released at the deadline"
    );
    let thaw = writer.send("thaw", json!({}));
    assert_eq!(thaw["error"], "timeout", "{thaw}");
    assert!(writer.finish(), "exits at end of input");
    assert_eq!(rows(&database), 4);
}

#[test]
fn inbox_sqlite_missing_database_fails_identify_and_the_registration_passes_the_check() {
    if !have_tools(&["sqlite3"]) {
        return;
    }
    let work = support::scratch("inbox_sqlite_check");
    let missing = work.join("gone.db");
    let mut writer = WriterProcess::start(&["sqlite", "--db", &missing.display().to_string()]);
    let answer = writer.send("identify", json!({}));
    assert_eq!(answer["ok"], false);
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("gone.db"),
        "{answer}"
    );

    let database = work.join("app.db");
    assert!(sqlite(&database, "CREATE TABLE t(x);").status.success());
    let store = work.join("store");
    diskshadow(&store)
        .args(["writer", "add", "sqlite", "--db"])
        .arg(&database)
        .assert()
        .success();
    let listed = diskshadow(&store)
        .args(["writer", "list"])
        .output()
        .expect("list");
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains("SQLite Writer") && listed.contains("1 writer registration."),
        "{listed}"
    );
    let again = diskshadow(&store)
        .args(["writer", "add", "sqlite", "--db"])
        .arg(&database)
        .output()
        .expect("add");
    assert!(
        !again.status.success(),
        "a second registration of the same writer is refused"
    );
    let check = diskshadow(&store)
        .args(["writer", "check", "SQLite Writer"])
        .output()
        .expect("check");
    let report = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        check.status.success() && report.contains("The writer follows the protocol."),
        "{report}"
    );
    diskshadow(&store)
        .args(["writer", "remove", "SQLite Writer"])
        .assert()
        .success();
    assert!(!store.join("writers/sqlite.toml").exists());
    diskshadow(&store)
        .args(["writer", "remove", "SQLite Writer"])
        .assert()
        .failure();
}

#[test]
fn inbox_sqlite_the_running_service_picks_up_added_and_removed_registrations() {
    if !have_tools(&["sqlite3"]) {
        return;
    }
    let work = support::scratch("inbox_sqlite_reload");
    let store = work.join("store");
    let database = work.join("app.db");
    assert!(sqlite(&database, "CREATE TABLE t(x);").status.success());
    let list = |name: &str| support::process::run_script(&store, &work, name, "list writers\n");
    let pid = || {
        let status = diskshadow(&store)
            .args(["service", "status"])
            .output()
            .expect("status");
        String::from_utf8_lossy(&status.stdout)
            .lines()
            .find(|line| line.contains("\"pid\""))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let before = list("before.dsh");
    assert!(!before.contains("SQLite Writer"), "{before}");
    let service = pid();
    assert!(!service.is_empty(), "the service runs");
    diskshadow(&store)
        .args(["writer", "add", "sqlite", "--db"])
        .arg(&database)
        .assert()
        .success();
    let added = list("added.dsh");
    assert!(
        added.contains("SQLite Writer"),
        "an added registration is listed: {added}"
    );
    diskshadow(&store)
        .args(["writer", "remove", "SQLite Writer"])
        .assert()
        .success();
    let removed = list("removed.dsh");
    assert!(
        !removed.contains("SQLite Writer"),
        "a removed registration is gone: {removed}"
    );
    assert_eq!(pid(), service, "the same service, not restarted");
    let _ = diskshadow(&store).args(["service", "stop"]).output();
}

/// What one shadow of the database held.
struct ShadowDatabase {
    /// The shadow's write-ahead log was not empty: opening it replays the log (recovery).
    needs_recovery: bool,
    integrity: String,
    count: u64,
    max: u64,
}

/// Takes a shadow of `db.img`'s file system under the load (with or without writers), copies
/// the database out of it and opens the copy.
fn shadow_of_database(
    volume: &AttachedExt4,
    work: &std::path::Path,
    round: usize,
    nowriters: bool,
) -> ShadowDatabase {
    let context = if nowriters {
        "persistent nowriters"
    } else {
        "persistent"
    };
    let output = run_script(
        &volume.store,
        work,
        &format!("create-{round}.dsh"),
        &format!("set context {context}\nadd volume db.img\ncreate\n"),
    );
    let shadow = shadow_ids(&output)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no shadow copy in {output}"));
    let exposed = work.join(format!("exposed-{round}"));
    let copy = work.join(format!("copy-{round}"));
    std::fs::create_dir_all(&exposed).expect("expose dir");
    std::fs::create_dir_all(&copy).expect("copy dir");
    run_script(
        &volume.store,
        work,
        &format!("expose-{round}.dsh"),
        &format!("expose {shadow} {}\n", exposed.display()),
    );
    for name in ["app.db", "app.db-wal"] {
        if exposed.join(name).exists() {
            std::fs::copy(exposed.join(name), copy.join(name)).expect("copy out of the shadow");
        }
    }
    run_script(
        &volume.store,
        work,
        &format!("unexpose-{round}.dsh"),
        &format!("unexpose {}\n", exposed.display()),
    );
    let needs_recovery = std::fs::metadata(copy.join("app.db-wal")).is_ok_and(|wal| wal.len() > 0);
    let database = copy.join("app.db");
    let integrity = String::from_utf8_lossy(&sqlite(&database, "PRAGMA integrity_check;").stdout)
        .trim()
        .to_string();
    let answer = String::from_utf8_lossy(
        &sqlite(
            &database,
            "SELECT count(*) || ' ' || coalesce(max(id), 0) FROM t;",
        )
        .stdout,
    )
    .trim()
    .to_string();
    let (count, max) = answer.split_once(' ').expect("count and max");
    ShadowDatabase {
        needs_recovery,
        integrity,
        count: count.parse().expect("count"),
        max: max.parse().expect("max"),
    }
}

#[test]
fn inbox_sqlite_shadows_under_load_are_intact_and_hold_every_commit_compared_with_nowriters() {
    if !have_tools(&["sqlite3", "mkfs.ext4", "fusermount3"]) {
        return;
    }
    let work = support::scratch("inbox_sqlite_shadow");
    let volume = AttachedExt4::new(&work, "db", "64M");
    let database = volume.mount_point.join("app.db");
    assert!(sqlite(
        &database,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB);"
    )
    .status
    .success());
    diskshadow(&volume.store)
        .args(["writer", "add", "sqlite", "--db"])
        .arg(&database)
        .assert()
        .success();
    let mut load_client = Command::new("sqlite3");
    load_client.arg("-cmd").arg(".timeout 30000").arg(&database);
    let load = Load::start(load_client, |number| {
        format!("INSERT INTO t VALUES ({number}, randomblob(300)); SELECT {number};")
    });
    wait_for(60, "the load commits", || load.last_acknowledged() >= 20);

    const ROUNDS: usize = 3;
    let mut recoveries = [0usize; 2];
    for round in 0..ROUNDS * 2 {
        let nowriters = round % 2 == 1;
        let committed_before = load.last_acknowledged();
        let shadow = shadow_of_database(&volume, &work, round, nowriters);
        let sent_after = load.last_acknowledged() + 1;
        let kind = if nowriters {
            "nowriters"
        } else {
            "with the SQLite Writer"
        };
        assert_eq!(shadow.integrity, "ok", "round {round}, {kind}");
        assert!(
            shadow.max >= committed_before,
            "round {round}, {kind}: every transaction committed before the freeze ({} < {committed_before})",
            shadow.max
        );
        assert!(shadow.max <= sent_after, "round {round}, {kind}");
        assert_eq!(shadow.count, shadow.max, "round {round}, {kind}: no hole");
        if !nowriters {
            assert!(
                !shadow.needs_recovery,
                "round {round}: the writer checkpointed the log and held the lock, so the shadow needs no recovery"
            );
        }
        recoveries[usize::from(nowriters)] += usize::from(shadow.needs_recovery);
    }
    let total = load.finish();
    eprintln!(
        "SQLite under load ({total} transactions): shadows needing WAL recovery: {}/{ROUNDS} with the writer, {}/{ROUNDS} nowriters",
        recoveries[0], recoveries[1]
    );
}
