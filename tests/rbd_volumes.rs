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
        stderr.contains("librbd is not installed (librbd-missing.so.1 not found)")
            && stderr.contains("help: apt-get install librbd1"),
        "{stderr}"
    );
}

/// `volume write VOLUME --offset OFFSET` of `data` (through a file in `work`).
fn write_volume(store: &Path, work: &Path, volume: &str, offset: &str, data: &[u8]) {
    let input = work.join("input");
    std::fs::write(&input, data).expect("input");
    succeeds(
        store,
        &[
            "volume",
            "write",
            volume,
            "--offset",
            offset,
            "--input",
            input.to_str().expect("input path"),
        ],
    );
}

/// A store attached to the test cluster's pool, and a fresh image of `size` bytes in it.
fn attached_store(
    ceph: &support::ceph::TestCluster,
    scratch: &str,
    size: u64,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let work = support::scratch(scratch);
    let store = work.join("store");
    succeeds(
        &store,
        &[
            "array",
            "attach",
            "rbd:rbd",
            "--conf",
            ceph.conf.to_str().unwrap(),
        ],
    );
    let image = ceph.image(scratch, size, diskshadow::engine::rbd::features::DEFAULT);
    (work, store, image)
}

#[test]
fn an_rbd_volume_is_written_and_read_through_librbd() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let (work, store, image) = attached_store(ceph, "rbd_volumes_io", 16 << 20);
    let volume = format!("rbd:rbd/{image}");
    let data: Vec<u8> = (0..(300 << 10)).map(|index| (index % 253) as u8).collect();
    write_volume(&store, &work, &volume, "1M", &data);
    let output = work.join("output");
    succeeds(
        &store,
        &[
            "volume",
            "read",
            &volume,
            "--offset",
            "1M",
            "--length",
            &data.len().to_string(),
            "--output",
            output.to_str().unwrap(),
        ],
    );
    assert!(
        std::fs::read(&output).expect("output") == data,
        "read back differs"
    );
    // The cluster has it: `rbd export` agrees.
    let exported = ceph.rbd(&["export", &format!("rbd/{image}"), "-"]);
    assert_eq!(exported.len(), 16 << 20);
    assert!(
        exported[1 << 20..(1 << 20) + data.len()] == data[..],
        "rbd export differs: {}",
        support::describe(&exported[1 << 20..(1 << 20) + data.len()])
    );
    assert!(exported[..1 << 20].iter().all(|byte| *byte == 0));

    let info: serde_json::Value =
        serde_json::from_str(&succeeds(&store, &["volume", "info", &volume, "--json"]))
            .expect("JSON");
    let text = info.to_string();
    assert!(text.contains(&volume), "{text}");
    assert!(text.contains(&(16u64 << 20).to_string()), "{text}");
    let registered = succeeds(&store, &["volume", "register", &volume]);
    assert!(registered.contains("is registered with"), "{registered}");
    // Registered once: naming it again finds the same volume.
    let again: serde_json::Value =
        serde_json::from_str(&succeeds(&store, &["volume", "info", &volume, "--json"]))
            .expect("JSON");
    assert_eq!(info, again);
}

#[test]
fn rbd_volume_names_refuse_a_missing_image_an_unattached_pool_and_software_providers() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let (work, store, image) = attached_store(ceph, "rbd_volumes_errors", 4 << 20);
    let missing = fails(&store, &["volume", "info", "rbd:rbd/no-such-image"]);
    assert!(
        missing.contains("RBD image rbd/no-such-image does not exist"),
        "{missing}"
    );
    let unattached = fails(&store, &["volume", "info", "rbd:otherpool/x"]);
    assert!(
        unattached.contains("this store is attached to no Ceph pool `otherpool`"),
        "{unattached}"
    );
    let malformed = fails(&store, &["volume", "info", "rbd:rbd"]);
    assert!(malformed.contains("rbd:POOL/IMAGE"), "{malformed}");

    // The software providers do not shadow RBD volumes (named explicitly: VSS's own choice
    // for an RBD volume is the Ceph RBD provider).
    for provider in [
        "{b5946137-7b9f-4925-af80-51abd60b20d5}",
        "{3f0c6a1e-9d42-4b7a-8e15-6c2d9b7f4a30}",
        "{8c4a3e5f-2b1d-4f6e-9a7c-3d5e6f708192}",
    ] {
        let refused = support::process::run_failing_script(
            &store,
            &work,
            "software.dsh",
            &format!(
                "set context persistent nowriters\nadd volume rbd:rbd/{image} provider {provider}\n\
                 create\n"
            ),
        );
        assert!(
            refused.contains("VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER"),
            "{refused}"
        );
    }
}

#[test]
fn an_rbd_volume_attached_over_nbd_reads_as_the_cluster_has_it() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    if !support::tool("qemu-img", "qemu-utils") {
        return;
    }
    let (work, store, image) = attached_store(ceph, "rbd_volumes_nbd", 8 << 20);
    let volume = format!("rbd:rbd/{image}");
    let data: Vec<u8> = (0..(64 << 10))
        .map(|index| (index % 241) as u8 ^ 0x5a)
        .collect();
    write_volume(&store, &work, &volume, "3M", &data);
    let socket = work.join("nbd.sock");
    let target = format!("nbd+unix:///live?socket={}", socket.display());
    succeeds(&store, &["volume", "attach", &volume, &target]);
    let copy = work.join("copy.raw");
    let converted = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &target])
        .arg(&copy)
        .output()
        .expect("qemu-img runs");
    let detached = run(&store, &["volume", "detach", &target]);
    assert!(
        converted.status.success(),
        "qemu-img convert failed: {}",
        String::from_utf8_lossy(&converted.stderr)
    );
    assert!(detached.0, "detach failed: {}{}", detached.1, detached.2);
    let copied = std::fs::read(&copy).expect("copy");
    let exported = ceph.rbd(&["export", &format!("rbd/{image}"), "-"]);
    assert_eq!(copied.len(), 8 << 20);
    assert!(
        copied == exported,
        "the NBD copy differs from rbd export: {} vs {}",
        support::describe(&copied),
        support::describe(&exported)
    );
    assert!(copied[3 << 20..(3 << 20) + data.len()] == data[..]);
}

#[test]
fn a_drive_letter_maps_to_an_rbd_volume() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let (work, store, image) = attached_store(ceph, "rbd_volumes_drive", 4 << 20);
    let volume = format!("rbd:rbd/{image}");
    succeeds(&store, &["drive", "map", "E:", &volume]);
    let listed = succeeds(&store, &["drive", "list"]);
    assert!(listed.contains(&volume), "{listed}");
    write_volume(&store, &work, "E:", "0", b"through a drive letter");
    let exported = ceph.rbd(&["export", &format!("rbd/{image}"), "-"]);
    assert!(exported.starts_with(b"through a drive letter"));
}

/// The shell's `map` takes `rbd:POOL/IMAGE` as `drive map` does (the name is no path under
/// the working directory), and `add volume` of the letter then shadows the image.
#[test]
fn the_shells_map_takes_an_rbd_volume() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let (work, store, image) = attached_store(ceph, "rbd_volumes_shell_map", 4 << 20);
    let volume = format!("rbd:rbd/{image}");
    let script = work.join("map.dsh");
    std::fs::write(
        &script,
        format!("map e: {volume}\nmap\nset context persistent nowriters\nadd volume e:\ncreate\n"),
    )
    .expect("script");
    let listed = succeeds(&store, &["-s", script.to_str().expect("script path")]);
    assert!(
        listed.contains(&format!("E:\\  volume     {volume}")),
        "{listed}"
    );
    assert!(
        listed.contains("Provider ID: {6e1b7c24-d83f-4a59-b1e6-2f9a0c4d8b73}"),
        "{listed}"
    );
}

#[test]
fn an_rbd_volume_of_a_cluster_gone_down_fails_within_seconds() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let work = support::scratch("rbd_volumes_gone_down");
    let store = work.join("store");
    let conf = work.join("ceph.conf");
    std::fs::copy(&ceph.conf, &conf).expect("conf copy");
    succeeds(
        &store,
        &[
            "array",
            "attach",
            "rbd:rbd",
            "--conf",
            conf.to_str().unwrap(),
        ],
    );
    let image = ceph.image(
        "gone-down",
        1 << 20,
        diskshadow::engine::rbd::features::LAYERING,
    );
    // The cluster this store knows moves away: its configuration now names a dead monitor.
    succeeds(&store, &["service", "stop"]);
    let down = ceph.down_conf(&work);
    std::fs::copy(&down, &conf).expect("conf now names a dead monitor");
    let started = Instant::now();
    let error = fails(&store, &["volume", "info", &format!("rbd:rbd/{image}")]);
    let elapsed = started.elapsed();
    assert!(
        error.contains(&format!(
            "rbd:rbd/{image} cannot be used as a volume: cannot reach the Ceph cluster of {}",
            conf.display()
        )),
        "{error}"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let listed = succeeds(&store, &["array", "list"]);
    assert!(
        listed.contains("    unreachable: cannot reach the Ceph cluster"),
        "{listed}"
    );
}

#[test]
fn an_rbd_volume_without_librbd_says_what_to_install() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let (_work, store, image) = attached_store(ceph, "rbd_volumes_lost_librbd", 1 << 20);
    succeeds(&store, &["service", "stop"]);
    let output = diskshadow(&store)
        .env("DISKSHADOW_LIBRBD", "librbd-missing.so.1")
        .args(["volume", "info", &format!("rbd:rbd/{image}")])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("librbd is not installed (librbd-missing.so.1 not found)")
            && stderr.contains("help: apt-get install librbd1"),
        "{stderr}"
    );
}
