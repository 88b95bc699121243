//! Live volumes and file views through the real service process, on real ext4 file systems:
//! an attached volume is loop-mounted from its FUSE file and written by ordinary tools while
//! shadows are taken; exposed shadows show their files as they were.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

mod support;

use support::process::{diskshadow, run_script, shadow_ids};

fn sh(command: &str) -> std::process::Output {
    Process::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .expect("sh")
}

/// Root, /dev/fuse, loop devices, fusermount3 and mkfs.ext4: what these tests need.
fn can_run() -> bool {
    let checks = [
        ("root", sh("test \"$(id -u)\" = 0").status.success()),
        ("/dev/fuse", Path::new("/dev/fuse").exists()),
        ("loop devices", Path::new("/dev/loop-control").exists()),
        ("fusermount3", sh("command -v fusermount3").status.success()),
        ("mkfs.ext4", sh("command -v mkfs.ext4").status.success()),
        ("e2fsck", sh("command -v e2fsck").status.success()),
    ];
    for (what, present) in checks {
        if !present {
            support::skip(format!(
                "{what} is not available (CI installs fuse3 and e2fsprogs and runs as root)"
            ));
            return false;
        }
    }
    true
}

/// Unmounts and detaches whatever a test mounted, even when it fails.
struct Cleanup(Vec<PathBuf>, PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for mount in &self.0 {
            let _ = sh(&format!("umount -l {} 2>/dev/null", mount.display()));
        }
        let _ = Process::new(assert_cmd::cargo::cargo_bin("diskshadow"))
            .arg("--store")
            .arg(&self.1)
            .args(["service", "stop"])
            .output();
    }
}

/// A file name and the bytes synced to it before a shadow was taken.
type SyncedFile = (String, Vec<u8>);

fn make_ext4(image: &Path, content: &Path) {
    let output = Process::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(content)
        .arg(image)
        .arg("32M")
        .output()
        .expect("mkfs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_file_copied_from_an_exposed_shadow_is_the_file_as_it_was() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let content = work.path().join("content");
    fs::create_dir_all(content.join("docs")).expect("content");
    fs::write(content.join("docs/report.txt"), "version 1\n".repeat(1000)).expect("file");
    fs::write(
        content.join("big.bin"),
        (0..3u32 << 20)
            .map(|index| (index * 7 % 253) as u8)
            .collect::<Vec<u8>>(),
    )
    .expect("file");
    let image = work.path().join("data.img");
    make_ext4(&image, &content);
    for directory in ["shadow", "live", "mnt"] {
        fs::create_dir_all(work.path().join(directory)).expect("dir");
    }
    let _cleanup = Cleanup(
        vec![
            work.path().join("mnt"),
            work.path().join("shadow"),
            work.path().join("live"),
        ],
        store.clone(),
    );

    run_script(
        &store,
        work.path(),
        "expose.dsh",
        "set context persistent nowriters\nadd volume data.img alias a\ncreate\nexpose %a% shadow\n",
    );
    // Change the live volume through diskshadow: attach it, loop-mount its file, edit a file.
    diskshadow(&store)
        .args(["volume", "attach", "data.img", "live"])
        .current_dir(work.path())
        .assert()
        .success();
    let mounted = sh(&format!(
        "mount -o loop {} {}",
        work.path().join("live/data.img").display(),
        work.path().join("mnt").display()
    ));
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    fs::write(work.path().join("mnt/docs/report.txt"), "version 2\n").expect("edit");
    assert!(sh(&format!(
        "sync && umount {}",
        work.path().join("mnt").display()
    ))
    .status
    .success());
    diskshadow(&store)
        .args(["volume", "detach", "data.img"])
        .current_dir(work.path())
        .assert()
        .success();

    let copied = work.path().join("copied.txt");
    assert!(sh(&format!(
        "cp {} {}",
        work.path().join("shadow/docs/report.txt").display(),
        copied.display()
    ))
    .status
    .success());
    assert_eq!(
        fs::read_to_string(&copied).expect("copy"),
        "version 1\n".repeat(1000)
    );
    assert_eq!(
        fs::read(work.path().join("shadow/big.bin")).expect("big"),
        fs::read(content.join("big.bin")).expect("original")
    );
    // And the live volume did change.
    let live = sh(&format!(
        "debugfs -R 'cat /docs/report.txt' {} 2>/dev/null",
        image.display()
    ));
    assert_eq!(String::from_utf8_lossy(&live.stdout), "version 2\n");
    let listing = run_script(
        &store,
        work.path(),
        "unexpose.dsh",
        "unexpose shadow\nlist shadows all\n",
    );
    assert!(listing.contains("Not exposed"), "{listing}");
}

#[test]
fn shadows_of_a_live_mounted_ext4_check_clean_and_keep_every_synced_file() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let content = work.path().join("content");
    fs::create_dir_all(&content).expect("content");
    let image = work.path().join("live.img");
    make_ext4(&image, &content);
    fs::create_dir_all(work.path().join("attach")).expect("dir");
    fs::create_dir_all(work.path().join("mnt")).expect("dir");
    let mnt = work.path().join("mnt");
    let _cleanup = Cleanup(vec![mnt.clone(), work.path().join("attach")], store.clone());
    diskshadow(&store)
        .args(["volume", "attach", "live.img", "attach"])
        .current_dir(work.path())
        .assert()
        .success();
    let mounted = sh(&format!(
        "mount -o loop {} {}",
        work.path().join("attach/live.img").display(),
        mnt.display()
    ));
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );

    // Ordinary tools keep writing while shadows are taken.
    let writer = Process::new("sh")
        .arg("-c")
        .arg(format!("i=0; while [ $i -lt 400 ]; do dd if=/dev/urandom of={}/busy.$((i % 7)) bs=64k count=2 2>/dev/null; i=$((i+1)); done", mnt.display()))
        .spawn()
        .expect("background writer");
    let mut expectations: Vec<(String, Vec<SyncedFile>)> = Vec::new();
    for round in 0..3 {
        let name = format!("synced-{round}.txt");
        let body = format!("round {round}\n").repeat(2000).into_bytes();
        fs::write(mnt.join(&name), &body).expect("write");
        assert!(sh(&format!("sync -f {}", mnt.join(&name).display()))
            .status
            .success());
        let stdout = run_script(
            &store,
            work.path(),
            &format!("take-{round}.dsh"),
            "set context persistent nowriters\nadd volume live.img\ncreate\n",
        );
        let id = shadow_ids(&stdout).pop().expect("a shadow");
        let synced: Vec<(String, Vec<u8>)> = (0..=round)
            .map(|earlier| {
                (
                    format!("synced-{earlier}.txt"),
                    format!("round {earlier}\n").repeat(2000).into_bytes(),
                )
            })
            .collect();
        expectations.push((id, synced));
    }
    let mut writer = writer;
    let _ = writer.wait();
    assert!(sh(&format!("umount {}", mnt.display())).status.success());
    diskshadow(&store)
        .args(["volume", "detach", "live.img"])
        .current_dir(work.path())
        .assert()
        .success();

    for (id, synced) in expectations {
        let copy = work.path().join(format!("copy-{}.img", &id[1..9]));
        diskshadow(&store)
            .args(["volume", "read", &id, "--output"])
            .arg(&copy)
            .assert()
            .success();
        // The shadow is crash-consistent: replaying the journal makes it clean.
        let replay = Process::new("e2fsck")
            .args(["-fy"])
            .arg(&copy)
            .output()
            .expect("e2fsck");
        assert!(
            replay.status.code().unwrap_or(8) < 4,
            "e2fsck -fy of {id}: {}",
            String::from_utf8_lossy(&replay.stdout)
        );
        let check = Process::new("e2fsck")
            .args(["-fn"])
            .arg(&copy)
            .output()
            .expect("e2fsck");
        assert!(
            check.status.success(),
            "e2fsck -fn of {id} is not clean: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        for (name, body) in synced {
            let read = sh(&format!(
                "debugfs -R 'cat /{name}' {} 2>/dev/null",
                copy.display()
            ));
            assert!(
                read.stdout == body,
                "{name} in shadow {id} is not as it was synced"
            );
        }
    }
}

/// A revert rewrites blocks under whoever uses the volume: with a file system mounted from the
/// attached volume it is refused, naming the mount; once unmounted, the attachment itself still
/// refuses it unless vssadmin's `/ForceDismount` detaches it (and says so). The file system is
/// clean afterwards and holds the shadow's content.
#[test]
fn revert_of_a_volume_in_use_is_refused_and_force_dismount_detaches_first() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let content = work.path().join("content");
    fs::create_dir_all(&content).expect("content");
    fs::write(content.join("state.txt"), "before\n").expect("file");
    let image = work.path().join("data.img");
    make_ext4(&image, &content);
    for directory in ["live", "mnt"] {
        fs::create_dir_all(work.path().join(directory)).expect("dir");
    }
    let _cleanup = Cleanup(vec![work.path().join("mnt")], store.clone());

    diskshadow(&store)
        .args(["volume", "attach", "data.img", "live"])
        .current_dir(work.path())
        .assert()
        .success();
    let stdout = run_script(
        &store,
        work.path(),
        "create.dsh",
        "set context persistent nowriters\nadd volume data.img\ncreate\n",
    );
    let shadow = shadow_ids(&stdout).pop().expect("shadow");
    let mnt = work.path().join("mnt");
    let mounted = sh(&format!(
        "mount -o loop {} {}",
        work.path().join("live/data.img").display(),
        mnt.display()
    ));
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    fs::write(mnt.join("state.txt"), "after\n").expect("edit");
    assert!(sh("sync").status.success());

    let revert = |extra: &str| {
        Process::new(assert_cmd::cargo::cargo_bin("vssadmin"))
            .arg("--store")
            .arg(&store)
            .args(["revert", "shadow", &format!("/shadow={shadow}")])
            .args(extra.split_whitespace())
            .env("DISKSHADOW_IDLE_TIMEOUT", "5")
            .current_dir(work.path())
            .output()
            .expect("vssadmin")
    };
    let text = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    // Mounted: refused even with force, naming the mount point.
    for extra in ["", "/ForceDismount"] {
        let refused = revert(extra);
        assert!(!refused.status.success(), "{}", text(&refused));
        assert!(
            text(&refused).contains("in use")
                && text(&refused).contains(&mnt.display().to_string()),
            "{}",
            text(&refused)
        );
    }
    assert_eq!(
        fs::read_to_string(mnt.join("state.txt")).unwrap(),
        "after\n"
    );
    assert!(sh(&format!("umount {}", mnt.display())).status.success());

    // Attached: refused without force.
    let refused = revert("");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("is attached at") && text(&refused).contains("/ForceDismount"),
        "{}",
        text(&refused)
    );

    // Forced: detached first, said so, then reverted.
    let forced = revert("/ForceDismount");
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(
        text(&forced).contains("was detached from"),
        "{}",
        text(&forced)
    );
    let attachments = diskshadow(&store)
        .args(["volume", "attachments"])
        .current_dir(work.path())
        .output()
        .expect("attachments");
    assert!(
        !String::from_utf8_lossy(&attachments.stdout).contains("data.img"),
        "{}",
        String::from_utf8_lossy(&attachments.stdout)
    );
    let fsck = Process::new("e2fsck")
        .args(["-fn"])
        .arg(&image)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let dump = Process::new("debugfs")
        .args(["-R", "cat /state.txt"])
        .arg(&image)
        .output()
        .expect("debugfs");
    assert_eq!(String::from_utf8_lossy(&dump.stdout), "before\n");
}
