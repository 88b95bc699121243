//! Storage arrays and hardware shadow copies through the real service: two stores (two hosts)
//! attached to one array, a transportable set made on host A, imported on host B, exposed over
//! NBD and compared, masked, broken off as ordinary volumes. Once on a loop-mounted XFS with
//! reflink (the shadow LUNs are reflink clones), once on a plain directory (full copies).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

mod support;

use support::process::{diskshadow, run_failing_script, run_script};

fn sh(command: &str) -> bool {
    Process::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// An XFS file system with reflink on a loop device, unmounted (and its loop device freed)
/// when dropped, also when the test fails.
struct XfsMount {
    mount: PathBuf,
}

impl XfsMount {
    fn new(dir: &Path) -> Option<XfsMount> {
        if !support::tool("mkfs.xfs", "xfsprogs") {
            return None;
        }
        let image = dir.join("xfs.img");
        let mount = dir.join("xfs");
        fs::create_dir_all(&mount).expect("mount point");
        fs::File::create(&image)
            .and_then(|file| file.set_len(512 << 20))
            .expect("xfs image");
        let made = sh(&format!(
            "mkfs.xfs -q -f -m reflink=1 {} && mount -o loop {} {}",
            image.display(),
            image.display(),
            mount.display()
        ));
        if !made {
            support::skip("cannot make and loop-mount an XFS file system here");
            return None;
        }
        Some(XfsMount { mount })
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        if !sh(&format!("umount {} 2>/dev/null", self.mount.display())) {
            let _ = sh(&format!("umount -l {}", self.mount.display()));
        }
    }
}

/// Stops the services of the test's stores when dropped, so nothing keeps the array open.
struct Services(Vec<PathBuf>);

impl Drop for Services {
    fn drop(&mut self) {
        for store in &self.0 {
            let _ = diskshadow(store).args(["service", "stop"]).output();
        }
    }
}

fn pattern(length: usize, seed: u32) -> Vec<u8> {
    (0..length as u32)
        .map(|index| (index.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

fn array_catalog(array: &Path) -> serde_json::Value {
    let text = fs::read_to_string(array.join("diskshadow-array.json")).expect("array catalog");
    serde_json::from_str(&text).expect("array catalog is JSON")
}

/// The whole story on the array directory `array`; `reflink` says how its shadow LUNs must
/// have been made.
fn two_hosts_story(work: &Path, array: &Path, reflink: bool) {
    if !support::tool("qemu-img", "qemu-utils") {
        return;
    }
    let host_a = work.join("hostA");
    let host_b = work.join("hostB");
    let host_c = work.join("hostC");
    let _services = Services(vec![host_a.clone(), host_b.clone(), host_c.clone()]);
    let luns = array.join("luns");
    fs::create_dir_all(&luns).expect("luns");
    let lun = luns.join("p.img");
    let before = pattern(4 << 20, 1);
    fs::write(&lun, &before).expect("LUN");
    fs::write(work.join("local.img"), pattern(1 << 20, 2)).expect("local volume");

    // Both hosts attach to the array; the second one finds the array the first one made.
    diskshadow(&host_a)
        .args(["array", "attach"])
        .arg(array)
        .args(["--name", "san"])
        .assert()
        .success();
    let attached = diskshadow(&host_b)
        .args(["array", "attach"])
        .arg(array)
        .output()
        .expect("attach B");
    let attached = String::from_utf8_lossy(&attached.stdout).to_string();
    assert!(
        attached.contains("Attached to the array san") && attached.contains("2 hosts"),
        "{attached}"
    );
    let again = diskshadow(&host_b)
        .args(["array", "attach"])
        .arg(array)
        .output()
        .expect("attach B again");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("VSS_E_OBJECT_ALREADY_EXISTS"));
    let listed = diskshadow(&host_b)
        .args(["array", "list", "--json"])
        .output()
        .expect("list");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed[0]["name"], "san");
    assert_eq!(listed[0]["hosts"].as_array().map(Vec::len), Some(2));

    // Microsoft's import sample, run as written on host A with only its drive letter mapped.
    diskshadow(&host_a)
        .args(["drive", "map", "P:"])
        .arg(&lun)
        .assert()
        .success();
    let sample = "#Sample DiskShadow script demonstrating IMPORT\n\
                  SET CONTEXT PERSISTENT\n\
                  SET CONTEXT TRANSPORTABLE\n\
                  SET METADATA transHWshadow_p.cab\n\
                  #P: is the volume supported by the Hardware Shadow Copy provider\n\
                  ADD VOLUME P:\n\
                  CREATE\n\
                  END BACKUP\n\
                  #The (transportable) shadow copy is not in the system yet.\n\
                  #You can reset or exit now if you wish.\n\
                  \n\
                  LOAD METADATA transHWshadow_p.cab\n\
                  IMPORT\n\
                  #The shadow copy will now be loaded into the system.\n";
    let output = run_script(&host_a, work, "sample.dsh", sample);
    assert!(output.contains("was imported: 1 shadow copies"), "{output}");
    for word in ["Transportable", "Hardware_Assisted", "Imported", "Plex"] {
        assert!(output.contains(word), "{word} missing:\n{output}");
    }
    assert!(
        output.contains("Provider ID: {5d2e8f41-7a3c-4b69-9e02-b8c4d1f6a357}"),
        "{output}"
    );
    let catalog = array_catalog(array);
    let entries = catalog["shadows"].as_object().expect("shadows");
    assert_eq!(entries.len(), 1);
    let (shadow_id, entry) = entries.iter().next().expect("one shadow LUN");
    assert_eq!(entry["reflink"], reflink, "{entry}");
    assert_eq!(entry["transportable"], true);
    assert_eq!(entry["lun"], "luns/p.img");
    let clone = array.join(entry["clone"].as_str().expect("clone path"));
    assert!(
        fs::read(&clone).expect("clone") == before,
        "the shadow LUN holds the point in time"
    );

    // Host A masks the set it imported: gone from A, still in the array.
    let output = run_script(
        &host_a,
        work,
        "mask.dsh",
        "load metadata transHWshadow_p.cab\nmask %VSS_SHADOW_SET%\nlist shadows all\n",
    );
    assert!(
        output.contains("Number of shadow copies masked: 1"),
        "{output}"
    );
    assert!(
        output.contains("Number of shadow copies listed: 0"),
        "{output}"
    );
    assert!(clone.is_file(), "mask leaves the shadow LUN in the array");

    // The LUN changes after the point in time.
    diskshadow(&host_a)
        .args(["volume", "write", "P:", "--offset", "0"])
        .write_stdin(vec![0xffu8; 1 << 20])
        .assert()
        .success();

    // A set mixing a volume the array does not hold is refused, naming that volume.
    let mixed = run_failing_script(
        &host_a,
        work,
        "mixed.dsh",
        "set context persistent nowriters\nset option transportable\nset metadata mixed.cab\n\
         add volume P:\nadd volume local.img\ncreate\n",
    );
    let info = diskshadow(&host_a)
        .args(["volume", "info", "local.img"])
        .current_dir(work)
        .output()
        .expect("volume info");
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    let local_guid = info
        .split("Volume{")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("local.img's volume GUID");
    assert!(
        mixed.contains("VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER")
            && mixed.contains(&format!(
                "Transportable shadow copies of volume {{{local_guid}}}"
            )),
        "{mixed}"
    );

    // Host B imports the set A made, with its aliases, and reads it over NBD.
    let output = run_script(
        &host_b,
        work,
        "import.dsh",
        "load metadata transHWshadow_p.cab\nimport\n\
         expose %VSS_SHADOW_1% \\\\localhost\\lun\nlist shadows all\n",
    );
    assert!(output.contains(&shadow_id.to_string()), "{output}");
    assert!(
        output.contains("Number of shadow copies listed: 1"),
        "{output}"
    );
    let socket = host_b.join("shares/lun.sock");
    let copy = work.join("copy.img");
    let status = Process::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(format!("nbd+unix:///lun?socket={}", socket.display()))
        .arg(&copy)
        .status()
        .expect("qemu-img");
    assert!(status.success());
    assert!(
        fs::read(&copy).expect("copy") == before,
        "host B reads the LUN as it was at the point in time"
    );
    let imported_by = array_catalog(array)["shadows"][shadow_id]["imported_by"].clone();
    assert_eq!(
        imported_by.as_array().map(Vec::len),
        Some(1),
        "{imported_by}"
    );

    // And through FUSE (one exposure at a time, as on Windows: the share comes down, then back):
    // exposed on a directory, the imported shadow is one file holding the LUN as it was (its
    // bytes are no file system diskshadow reads).
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
    {
        let view = work.join("view");
        fs::create_dir_all(&view).expect("view directory");
        run_script(
            &host_b,
            work,
            "expose-fuse.dsh",
            &format!(
                "load metadata transHWshadow_p.cab\nunexpose \\\\localhost\\lun\n\
                 expose %VSS_SHADOW_1% {}\n",
                view.display()
            ),
        );
        let seen = fs::read(view.join("volume.img"));
        run_script(
            &host_b,
            work,
            "unexpose-fuse.dsh",
            &format!(
                "load metadata transHWshadow_p.cab\nunexpose {}\n\
                 expose %VSS_SHADOW_1% \\\\localhost\\lun\n",
                view.display()
            ),
        );
        assert!(
            seen.expect("the FUSE view's volume.img") == before,
            "host B reads the LUN as it was through FUSE too"
        );
    } else {
        support::skip("/dev/fuse cannot be opened");
    }

    // Importing twice, or on a store not attached to the array: the VSS error.
    let twice = run_failing_script(
        &host_b,
        work,
        "twice.dsh",
        "load metadata transHWshadow_p.cab\nimport\n",
    );
    assert!(twice.contains("VSS_E_OBJECT_ALREADY_EXISTS"), "{twice}");
    let stranger = run_failing_script(
        &host_c,
        work,
        "stranger.dsh",
        "load metadata transHWshadow_p.cab\nimport\n",
    );
    assert!(
        stranger.contains("VSS_E_NO_SNAPSHOTS_IMPORTED"),
        "{stranger}"
    );
    // LUN resync on B: the imported shadow copied back onto the damaged original LUN (A wrote
    // over its first MiB) and onto a new LUN; both read as the point in time afterwards.
    // `novolcheck`: host A's service may still hold the LUN open.
    let lun = array.join("luns/p.img");
    let fresh = work.join("fresh.img");
    fs::File::create(&fresh)
        .and_then(|file| file.set_len(before.len() as u64))
        .expect("new LUN");
    let output = run_script(
        &host_b,
        work,
        "resync.dsh",
        &format!(
            "load metadata transHWshadow_p.cab\nadd shadow %VSS_SHADOW_1%\n\
             add shadow %VSS_SHADOW_1% {}\nresync novolcheck\n",
            fresh.display()
        ),
    );
    assert!(output.contains("was resynchronized onto"), "{output}");
    assert!(
        fs::read(&lun).expect("original LUN") == before,
        "the damaged original reads as the point in time again"
    );
    assert!(
        fs::read(&fresh).expect("new LUN") == before,
        "the new LUN holds the point in time"
    );
    assert!(
        fs::read(&clone).expect("clone") == before,
        "the resync leaves the shadow LUN as it was"
    );
    // The LUN takes A's change again, so the rest of the story sees what it saw before.
    diskshadow(&host_a)
        .args(["volume", "write", "P:", "--offset", "0"])
        .write_stdin(vec![0xffu8; 1 << 20])
        .assert()
        .success();

    // A store with shadows on the array's LUNs cannot detach from it.
    let detach = diskshadow(&host_b)
        .args(["array", "detach", "san"])
        .output()
        .expect("detach");
    assert!(!detach.status.success());
    assert!(String::from_utf8_lossy(&detach.stderr).contains("VSS_E_VOLUME_IN_USE"));

    // LUN swap: B breaks the set off writable; the shadow LUN is an ordinary volume of B.
    let output = run_script(
        &host_b,
        work,
        "break.dsh",
        "load metadata transHWshadow_p.cab\nunexpose \\\\localhost\\lun\n\
         break writable %VSS_SHADOW_SET%\nlist shadows all\n",
    );
    assert!(output.contains("(read-write)"), "{output}");
    assert!(
        output.contains("Number of shadow copies listed: 0"),
        "{output}"
    );
    let broken = array
        .join("broken")
        .join(format!("{}.img", shadow_id.trim_matches(['{', '}'])));
    assert!(broken.is_file(), "{}", broken.display());
    assert!(!clone.exists(), "the shadow LUN left VSS management");
    diskshadow(&host_b)
        .args(["volume", "write"])
        .arg(&broken)
        .args(["--offset", "4096"])
        .write_stdin(vec![0x5au8; 4096])
        .assert()
        .success();
    let mut expected = before.clone();
    expected[4096..8192].fill(0x5a);
    assert!(fs::read(&broken).expect("broken LUN") == expected);

    // A second transportable set, broken off without `writable`: a read-only volume.
    run_script(
        &host_a,
        work,
        "second.dsh",
        "set context persistent nowriters\nset option transportable\nset metadata second.cab\n\
         add volume P:\ncreate\n",
    );
    let output = run_script(
        &host_b,
        work,
        "second-break.dsh",
        "load metadata second.cab\nimport\nbreak %VSS_SHADOW_SET%\n",
    );
    assert!(output.contains("(read-only)"), "{output}");
    let second_id = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("* Shadow copy ID = "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("second shadow ID")
        .trim_matches(['{', '}'])
        .to_string();
    let read_only = array.join("broken").join(format!("{second_id}.img"));
    let refused = diskshadow(&host_b)
        .args(["volume", "write"])
        .arg(&read_only)
        .args(["--offset", "0"])
        .write_stdin(vec![0u8; 512])
        .output()
        .expect("write");
    assert!(
        !refused.status.success(),
        "a read-only broken LUN is not written"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("read-only"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Nor is it resynchronized onto: a shadow of the writable LUN, resync onto the read-only
    // one, is refused before a byte changes (the resync writes through the engine, not the
    // device that refuses writes).
    let resync = run_failing_script(
        &host_b,
        work,
        "resync-onto-read-only.dsh",
        &format!(
            "set context persistent nowriters\nadd volume {} alias w\ncreate\n\
             add shadow %w% {}\nresync novolcheck\n",
            broken.display(),
            read_only.display()
        ),
    );
    assert!(resync.contains("read-only"), "{resync}");
    let mut after = before.clone();
    after[..1 << 20].fill(0xff);
    assert!(fs::read(&read_only).expect("second LUN") == after);

    // Host C, attached at last, detaches again; so does A (its shadows are all gone).
    diskshadow(&host_c)
        .args(["array", "attach"])
        .arg(array)
        .assert()
        .success();
    diskshadow(&host_c)
        .args(["array", "detach", "san"])
        .assert()
        .success();
    diskshadow(&host_a)
        .args(["array", "detach", "san"])
        .assert()
        .success();
    let hosts = array_catalog(array)["hosts"].clone();
    assert_eq!(hosts.as_array().map(Vec::len), Some(1), "{hosts}");
}

#[test]
fn two_hosts_share_an_array_on_xfs_with_reflink() {
    let work = support::scratch("array_xfs_reflink");
    let Some(xfs) = XfsMount::new(&work) else {
        return;
    };
    let array = xfs.mount.join("array");
    fs::create_dir_all(&array).expect("array dir");
    two_hosts_story(&work, &array, true);
}

#[test]
fn two_hosts_share_an_array_on_a_plain_directory_with_full_copies() {
    let work = support::scratch("array_plain_dir");
    let array = work.join("array");
    fs::create_dir_all(&array).expect("array dir");
    two_hosts_story(&work, &array, false);
}

#[test]
fn array_commands_refuse_bad_input_and_a_failed_create_leaves_no_shadow_lun() {
    let work = support::scratch("array_errors");
    let store = work.join("store");
    let _services = Services(vec![store.clone()]);
    let array = work.join("array");
    fs::create_dir_all(array.join("luns")).expect("array dir");
    let lun = array.join("luns/p.img");
    fs::write(&lun, pattern(1 << 20, 3)).expect("LUN");

    let refused = |arguments: &[&str], code: &str| {
        let output = diskshadow(&store)
            .args(arguments)
            .current_dir(&work)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(!output.status.success(), "{arguments:?} should fail");
        assert!(stderr.contains(code), "{arguments:?}: {stderr}");
    };
    refused(&["array", "attach", "missing"], "VSS_E_OBJECT_NOT_FOUND");
    refused(
        &["array", "attach", "array", "--name", "a b"],
        "VSS_E_BAD_STATE",
    );
    refused(&["array", "detach", "nothing"], "VSS_E_OBJECT_NOT_FOUND");
    diskshadow(&store)
        .args(["array", "attach", "array", "--name", "san"])
        .current_dir(&work)
        .assert()
        .success();
    fs::create_dir_all(work.join("other")).expect("other dir");
    refused(
        &["array", "attach", "other", "--name", "san"],
        "VSS_E_OBJECT_ALREADY_EXISTS",
    );

    // A shadow LUN this store made but never committed (a crash between the clone and the
    // commit) is reported by check-store as leaked, and left alone.
    let mut catalog = array_catalog(&array);
    let stray = "0e0e0e0e-0000-4000-8000-000000000001";
    catalog["shadows"][stray] = serde_json::json!({
        "set_id": "0e0e0e0e-0000-4000-8000-000000000002",
        "lun": "luns/p.img",
        "clone": format!("shadows/{stray}.lun"),
        "size": 1 << 20,
        "created_by": store,
        "reflink": false,
    });
    fs::write(
        array.join("diskshadow-array.json"),
        serde_json::to_vec(&catalog).expect("json"),
    )
    .expect("catalog");
    let stray_lun = array.join(format!("shadows/{stray}.lun"));
    fs::write(&stray_lun, b"stray").expect("stray LUN");
    let check = diskshadow(&store)
        .arg("check-store")
        .output()
        .expect("check-store");
    let report = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        report.contains(&format!(
            "the shadow LUN {} belongs to no shadow copy of this store",
            stray_lun.display()
        )),
        "{report}"
    );
    assert!(stray_lun.exists(), "check-store changes nothing");
    fs::remove_file(&stray_lun).expect("remove stray");

    // The array's catalog is damaged after the attach: the clone is made, cannot be
    // recorded, and is removed again; the store keeps no shadow.
    fs::write(array.join("diskshadow-array.json"), b"{ damaged").expect("damage");
    let failed = run_failing_script(
        &store,
        &work,
        "create.dsh",
        "set context persistent nowriters\nadd volume array/luns/p.img\ncreate\n",
    );
    assert!(failed.contains("is damaged"), "{failed}");
    let left: Vec<_> = fs::read_dir(array.join("shadows"))
        .expect("shadows dir")
        .collect();
    assert!(left.is_empty(), "no shadow LUN is left behind: {left:?}");
    let listing = run_script(&store, &work, "list.dsh", "list shadows all\n");
    assert!(
        listing.contains("Number of shadow copies listed: 0"),
        "{listing}"
    );
    let listed = diskshadow(&store)
        .args(["array", "list"])
        .output()
        .expect("list");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("unreadable: the array catalog"));
}
