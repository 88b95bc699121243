//! Ceph pools as arrays and RBD images as volumes, through the `diskshadow` binary and its
//! service, against a real one-node cluster (`support::ceph`).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::process::diskshadow;

/// Runs `diskshadow --store STORE ARGUMENTS`: success, stdout, stderr.
fn run(store: &Path, arguments: &[&str]) -> (bool, String, String) {
    let output = diskshadow(store).args(arguments).output().expect("runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn succeeds(store: &Path, arguments: &[&str]) -> String {
    let (succeeded, stdout, stderr) = run(store, arguments);
    assert!(succeeded, "{arguments:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// The command must fail; returns stdout and stderr together.
fn fails(store: &Path, arguments: &[&str]) -> String {
    let (succeeded, stdout, stderr) = run(store, arguments);
    assert!(!succeeded, "{arguments:?} should fail:\n{stdout}");
    format!("{stdout}{stderr}")
}

#[test]
fn attach_list_and_detach_a_ceph_pool() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let work = support::scratch("rbd_volumes_attach");
    let store = work.join("store");
    let conf = ceph.conf.to_str().expect("conf path");
    let attached = succeeds(&store, &["array", "attach", "rbd:rbd", "--conf", conf]);
    assert!(
        attached.starts_with("Attached to the Ceph pool rbd as the array rbd ({"),
        "{attached}"
    );
    // Attaching the same pool again is refused, under any name.
    let again = fails(
        &store,
        &[
            "array", "attach", "rbd:rbd", "--conf", conf, "--name", "other",
        ],
    );
    assert!(again.contains("already attached"), "{again}");

    let listed = succeeds(&store, &["array", "list"]);
    assert!(listed.contains("    kind: rbd (Ceph pool rbd)"), "{listed}");
    assert!(listed.contains(&format!("    conf: {conf}")), "{listed}");
    assert!(!listed.contains("unreachable"), "{listed}");
    assert!(listed.ends_with("Number of arrays listed: 1\n"), "{listed}");
    let json: serde_json::Value =
        serde_json::from_str(&succeeds(&store, &["array", "list", "--json"])).expect("JSON");
    assert_eq!(json[0]["name"], "rbd");
    assert_eq!(json[0]["path"], "rbd:rbd");
    assert_eq!(json[0]["rbd"]["pool"], "rbd");
    assert_eq!(json[0]["rbd"]["conf"], conf);
    // The attachment is in the store's catalog: a new service process still has it.
    succeeds(&store, &["service", "stop"]);
    let listed = succeeds(&store, &["array", "list"]);
    assert!(listed.contains("    kind: rbd (Ceph pool rbd)"), "{listed}");

    succeeds(&store, &["array", "detach", "rbd"]);
    let listed = succeeds(&store, &["array", "list"]);
    assert!(listed.ends_with("Number of arrays listed: 0\n"), "{listed}");

    // A name of the store's choosing, and a client ID.
    let attached = succeeds(
        &store,
        &[
            "array", "attach", "rbd:rbd", "--conf", conf, "--id", "admin", "--name", "ceph",
        ],
    );
    assert!(attached.contains("as the array ceph"), "{attached}");
    let listed = succeeds(&store, &["array", "list"]);
    assert!(listed.contains("    client: client.admin"), "{listed}");
}

#[test]
fn attaching_refuses_a_missing_pool_a_missing_conf_and_a_directory_with_conf() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let work = support::scratch("rbd_volumes_attach_errors");
    let store = work.join("store");
    let conf = ceph.conf.to_str().expect("conf path");
    let missing_pool = fails(&store, &["array", "attach", "rbd:nopool", "--conf", conf]);
    assert!(
        missing_pool.contains("pool nopool does not exist in the Ceph cluster"),
        "{missing_pool}"
    );
    let no_conf = fails(&store, &["array", "attach", "rbd:rbd"]);
    assert!(
        no_conf.contains("a Ceph pool needs its cluster's configuration"),
        "{no_conf}"
    );
    let missing_conf = work.join("missing.conf");
    let missing = fails(
        &store,
        &[
            "array",
            "attach",
            "rbd:rbd",
            "--conf",
            missing_conf.to_str().unwrap(),
        ],
    );
    assert!(
        missing.contains(&format!(
            "the Ceph configuration {} does not exist",
            missing_conf.display()
        )),
        "{missing}"
    );
    let directory = fails(
        &store,
        &["array", "attach", work.to_str().unwrap(), "--conf", conf],
    );
    assert!(
        directory.contains("--conf and --id are for a Ceph pool"),
        "{directory}"
    );
    let bad_pool = fails(&store, &["array", "attach", "rbd:a/b", "--conf", conf]);
    assert!(
        bad_pool.contains("`a/b` is not a usable Ceph pool name"),
        "{bad_pool}"
    );
    let listed = succeeds(&store, &["array", "list"]);
    assert!(listed.ends_with("Number of arrays listed: 0\n"), "{listed}");
}

#[test]
fn attaching_a_cluster_that_is_down_fails_within_seconds() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let work = support::scratch("rbd_volumes_down");
    let store = work.join("store");
    let conf = ceph.down_conf(&work);
    let started = Instant::now();
    let error = fails(
        &store,
        &[
            "array",
            "attach",
            "rbd:rbd",
            "--conf",
            conf.to_str().unwrap(),
        ],
    );
    let elapsed = started.elapsed();
    assert!(
        error.contains(&format!(
            "cannot reach the Ceph cluster of {} within 5 s",
            conf.display()
        )),
        "{error}"
    );
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
}

#[test]
fn attaching_without_librbd_says_what_to_install() {
    let work = support::scratch("rbd_volumes_no_librbd");
    let store = work.join("store");
    let conf = work.join("ceph.conf");
    std::fs::write(&conf, "[global]\nmon host = v1:127.0.0.1:1\n").expect("conf");
    let output = diskshadow(&store)
        .env("DISKSHADOW_LIBRBD", "librbd-missing.so.1")
        .args([
            "array",
            "attach",
            "rbd:rbd",
            "--conf",
            conf.to_str().unwrap(),
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "librbd is not installed (librbd-missing.so.1 not found): apt-get install librbd1"
        ),
        "{stderr}"
    );
}
