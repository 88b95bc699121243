//! A real one-node Ceph cluster for the tests that need one: one monitor and one BlueStore OSD
//! on a sparse file, bound to 127.0.0.1 only, no authentication, pool size 1.
//!
//! One cluster per test binary: [`cluster`] starts it on first use (about 15 s) and every test
//! of the binary shares it, each with its own image names ([`TestCluster::unique`]). Both
//! daemons are children of the test process; a watcher process started first learns their
//! PIDs through a pipe and, when the pipe closes (the test process ended, whatever way),
//! stops them by PID and removes the cluster's directory.
//!
//! Where the Ceph tools or librbd are missing, [`cluster`] says `skipped:` (see
//! [`super::skip`]) and returns `None`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use diskshadow::engine::rbd::{Ceph, Cluster};

/// The pool every test cluster has, initialized for RBD.
pub const POOL: &str = "rbd";

/// A running test cluster.
pub struct TestCluster {
    pub directory: PathBuf,
    pub conf: PathBuf,
    pub pool: String,
    /// The watcher's stdin: closing it (at exit) stops the daemons.
    _watcher: Mutex<ChildStdin>,
    connection: Mutex<Option<Arc<Cluster>>>,
}

/// `None` where Ceph is missing; `Some(Err(why))` when it failed to start (every test of the
/// binary then fails with that reason, instead of each trying again).
static CLUSTER: OnceLock<Option<Result<TestCluster, String>>> = OnceLock::new();
static NAMES: AtomicU64 = AtomicU64::new(0);

/// The binary's cluster, started on first use; `None` (after `skipped:`) where Ceph is missing.
pub fn cluster() -> Option<&'static TestCluster> {
    CLUSTER
        .get_or_init(|| {
            let tools = [
                ("monmaptool", "ceph-common"),
                ("ceph-mon", "ceph-mon"),
                ("ceph-osd", "ceph-osd"),
                ("ceph", "ceph-common"),
                ("rbd", "ceph-common"),
            ];
            if !tools
                .iter()
                .all(|(tool, package)| super::tool(tool, package))
            {
                return None;
            }
            if let Err(error) = Ceph::load() {
                super::skip(error);
                return None;
            }
            Some(std::panic::catch_unwind(start).map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                    .unwrap_or_default()
            }))
        })
        .as_ref()
        .map(|started| match started {
            Ok(cluster) => cluster,
            Err(why) => panic!("the Ceph test cluster did not start: {why}"),
        })
}

/// A port on 127.0.0.1 that nothing listens on at the moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Runs a set-up command (given `timeout 60` in front, so nothing hangs the start); it must
/// succeed. Returns its stdout.
fn run(directory: &Path, what: &str, arguments: &[&str]) -> String {
    let attempt = || {
        Command::new("timeout")
            .arg("60")
            .args(arguments)
            .current_dir(directory)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("{what}: {error}"))
    };
    let mut output = attempt();
    // A monitor that has just started can refuse a command before it has formed its quorum
    // ("Error EPERM: problem getting command descriptions from mon."); every monitor command
    // here is idempotent, so it is asked again for up to half a minute.
    let asks_the_monitor = matches!(arguments.first(), Some(&"ceph") | Some(&"rbd"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while asks_the_monitor && !output.status.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        output = attempt();
    }
    assert!(
        output.status.success(),
        "{what} failed ({}): {}\n{}\nthe monitor's log ends:\n{}\nthe OSD's log ends:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        log_tail(&directory.join("mon.a.log")),
        log_tail(&directory.join("osd.0.log")),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn daemon(directory: &Path, name: &str, arguments: &[&str]) -> Child {
    let log = |suffix: &str| {
        fs::File::create(directory.join(format!("{name}.{suffix}"))).expect("daemon log file")
    };
    Command::new(arguments[0])
        .args(&arguments[1..])
        .current_dir(directory)
        .stdin(Stdio::null())
        .stdout(log("out"))
        .stderr(log("err"))
        .spawn()
        .unwrap_or_else(|error| panic!("start {name}: {error}"))
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn start() -> TestCluster {
    let started = Instant::now();
    let directory = std::env::temp_dir().join(format!(
        "diskshadow-ceph-{}-{}",
        std::process::id(),
        NAMES.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&directory);
    fs::create_dir_all(directory.join("run")).expect("cluster directory");
    fs::create_dir_all(directory.join("mon")).expect("mon directory");
    fs::create_dir_all(directory.join("osd/ceph-0")).expect("osd directory");

    // The watcher comes first, so that whatever happens next the daemons it hears of are
    // stopped when this process ends. It ignores the signals that end a test run (Ctrl-C, a
    // `timeout` killing the process group), so that it outlives the test process and cleans
    // up after it.
    let script = format!(
        "trap '' INT TERM HUP; pids=; while read pid; do pids=\"$pids $pid\"; done; \
         [ -n \"$pids\" ] && kill -TERM $pids 2>/dev/null; \
         for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 $pids 2>/dev/null || break; sleep 0.5; done; \
         [ -n \"$pids\" ] && kill -KILL $pids 2>/dev/null; rm -rf '{}'",
        directory.display()
    );
    let mut watcher = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cluster watcher");
    let mut watcher_stdin = watcher.stdin.take().expect("watcher stdin");
    // Reaped by init once this process ends; nothing here waits for it.
    std::mem::forget(watcher);

    let port = free_port();
    let fsid = uuid();
    let dir = directory.display();
    let conf = directory.join("ceph.conf");
    fs::write(
        &conf,
        format!(
            "[global]
fsid = {fsid}
mon host = v1:127.0.0.1:{port}
public addr = 127.0.0.1
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon osd nearfull ratio = 0.97
mon osd backfillfull ratio = 0.98
mon osd full ratio = 0.99
osd failsafe full ratio = 0.995
mon data avail crit = 1
mon data avail warn = 2
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
log file = {dir}/$name.log
mon data = {dir}/mon/$cluster-$id
osd data = {dir}/osd/$cluster-$id
osd objectstore = bluestore
bluestore block path = {dir}/osd-block-$id
bluestore block create = true
bluestore block size = 4294967296
client mount timeout = 30
osd crush update on start = false
osd class update on start = false
"
        ),
    )
    .expect("ceph.conf");
    let conf_text = conf.display().to_string();

    let monitor_address = format!("[v1:127.0.0.1:{port}]");
    run(
        &directory,
        "monmaptool",
        &[
            "monmaptool",
            "--create",
            "--addv",
            "a",
            &monitor_address,
            "--fsid",
            &fsid,
            "monmap",
        ],
    );
    run(
        &directory,
        "ceph-mon --mkfs",
        &[
            "ceph-mon", "--mkfs", "-i", "a", "--monmap", "monmap", "-c", &conf_text,
        ],
    );
    let monitor = daemon(
        &directory,
        "mon.a",
        &["ceph-mon", "-f", "-i", "a", "-c", &conf_text],
    );
    writeln!(watcher_stdin, "{}", monitor.id()).expect("tell the watcher");
    std::mem::forget(monitor);

    let osd_uuid = uuid();
    let osd_id = run(
        &directory,
        "ceph osd new",
        &[
            "ceph",
            "-c",
            &conf_text,
            "--connect-timeout",
            "30",
            "osd",
            "new",
            &osd_uuid,
        ],
    );
    assert_eq!(osd_id.trim(), "0", "the first OSD's ID");
    run(
        &directory,
        "ceph-osd --mkfs",
        &[
            "ceph-osd",
            "--mkfs",
            "-i",
            "0",
            "--osd-uuid",
            &osd_uuid,
            "-c",
            &conf_text,
        ],
    );
    // The OSD's place in the CRUSH map is set here rather than by the OSD as it starts
    // (`osd crush update on start = false`): a just-started OSD's own monitor commands can race
    // its monitor map and be refused ("wrong fsid"), which kills it.
    run(
        &directory,
        "ceph osd crush add",
        &[
            "ceph",
            "-c",
            &conf_text,
            "osd",
            "crush",
            "add",
            "osd.0",
            "1.0",
            "host=localhost",
            "root=default",
        ],
    );
    let osd = daemon(
        &directory,
        "osd.0",
        &["ceph-osd", "-f", "-i", "0", "-c", &conf_text],
    );
    writeln!(watcher_stdin, "{}", osd.id()).expect("tell the watcher");
    std::mem::forget(osd);

    run(
        &directory,
        "ceph osd pool create",
        &[
            "ceph", "-c", &conf_text, "osd", "pool", "create", POOL, "8", "8",
        ],
    );
    run(
        &directory,
        "rbd pool init",
        &["rbd", "-c", &conf_text, "pool", "init", POOL],
    );
    eprintln!(
        "ceph test cluster started in {:.1} s at {}",
        started.elapsed().as_secs_f64(),
        directory.display()
    );
    TestCluster {
        directory,
        conf,
        pool: POOL.to_string(),
        _watcher: Mutex::new(watcher_stdin),
        connection: Mutex::new(None),
    }
}

impl TestCluster {
    /// A name no other test of this binary uses: `prefix-N`.
    pub fn unique(&self, prefix: &str) -> String {
        format!("{prefix}-{}", NAMES.fetch_add(1, Ordering::Relaxed))
    }

    /// The binary's shared connection to the cluster.
    pub fn connect(&self) -> Arc<Cluster> {
        let mut connection = self.connection.lock().expect("connection lock");
        connection
            .get_or_insert_with(|| {
                Cluster::connect(&self.conf, None, Duration::from_secs(20)).expect("connect")
            })
            .clone()
    }

    /// Creates a fresh image `prefix-N` of `size` bytes with `features`; returns its name.
    pub fn image(&self, prefix: &str, size: u64, features: u64) -> String {
        let name = self.unique(prefix);
        self.connect()
            .pool(&self.pool)
            .expect("test pool")
            .create_image(&name, size, features)
            .expect("create test image");
        name
    }

    /// Runs the `rbd` tool against the cluster; it must succeed. Returns its stdout.
    pub fn rbd(&self, arguments: &[&str]) -> Vec<u8> {
        let output = Command::new("rbd")
            .arg("-c")
            .arg(&self.conf)
            .args(arguments)
            .stdin(Stdio::null())
            .output()
            .expect("rbd runs");
        assert!(
            output.status.success(),
            "rbd {arguments:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// A configuration naming a monitor port nothing listens on: a cluster that is down.
    pub fn down_conf(&self, directory: &Path) -> PathBuf {
        let conf = directory.join("down.conf");
        fs::write(
            &conf,
            format!(
                "[global]\nmon host = v1:127.0.0.1:{}\nauth cluster required = none\n\
                 auth service required = none\nauth client required = none\n",
                free_port()
            ),
        )
        .expect("down.conf");
        conf
    }
}
