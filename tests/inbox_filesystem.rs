//! The File System Writer on a real ext4 file system loop-mounted from a volume's image:
//! Freeze holds its writes (FIFREEZE), Thaw releases them, and a writer killed while frozen
//! still thaws (its freeze holder sees end of input). Registered on an attached volume it passes
//! `writer check`, and shadows taken while a loop writes files are clean under `e2fsck -fn`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use support::inbox::{
    assert_writer_check_passes, have_tools, sh, sh_ok, AttachedExt4, WriterProcess,
};
use support::process::{diskshadow, run_script, shadow_ids, wait_for};

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "fsfreeze -u {0} 2>/dev/null; umount {0}",
            self.0.display()
        ));
    }
}

/// Starts creating a file on `mount`; a write to a frozen file system waits (uninterruptibly)
/// until the thaw, so it is watched rather than waited for.
fn start_write(mount: &std::path::Path, name: &str) -> std::process::Child {
    std::process::Command::new("touch")
        .arg(mount.join(name))
        .spawn()
        .expect("touch")
}

/// True when a file can be created on `mount` within half a second. When it cannot, the write
/// is left to finish after the thaw: `blocked` collects it.
fn writable(mount: &std::path::Path, name: &str, blocked: &mut Vec<std::process::Child>) -> bool {
    let mut child = start_write(mount, name);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(500) {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    blocked.push(child);
    false
}

#[test]
fn inbox_filesystem_freeze_holds_writes_and_a_killed_writer_still_thaws() {
    if !have_tools(&["mkfs.ext4", "timeout"]) {
        return;
    }
    let work = support::scratch("inbox_filesystem_freeze");
    let image = work.join("fs.img");
    let mount = work.join("mnt");
    std::fs::create_dir_all(&mount).expect("mnt");
    sh_ok(&format!("mkfs.ext4 -q -F {} 16M", image.display()));
    sh_ok(&format!(
        "mount -o loop {} {}",
        image.display(),
        mount.display()
    ));
    let _unmount = Unmount(mount.clone());
    let image_name = image.display().to_string();
    let mut blocked = Vec::new();

    let mut writer = WriterProcess::start(&["filesystem"]);
    let metadata = writer.send("identify", json!({}));
    let components = metadata["metadata"]["components"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        components
            .iter()
            .any(|component| component["name"] == mount.display().to_string()
                && component["files"][0]["volume"] == image_name.as_str()),
        "the mounted volume is a component: {metadata}"
    );
    assert_eq!(
        writer.send("prepare_snapshot", json!({"volumes": [image_name]}))["ok"],
        true
    );
    let freeze = writer.send("freeze", json!({"deadline_ms": 5000}));
    assert_eq!(freeze["ok"], true, "{freeze}");
    assert!(
        !writable(&mount, "during", &mut blocked),
        "no write while frozen"
    );
    let thaw = writer.send("thaw", json!({}));
    assert_eq!(thaw["ok"], true, "{thaw}");
    assert!(
        writable(&mount, "after", &mut blocked),
        "writes resume after thaw"
    );

    // A set without this volume freezes nothing.
    assert_eq!(
        writer.send("prepare_snapshot", json!({"volumes": ["/elsewhere.img"]}))["ok"],
        true
    );
    assert_eq!(
        writer.send("freeze", json!({"deadline_ms": 20000}))["ok"],
        true
    );
    assert!(writable(&mount, "other-set", &mut blocked));
    assert_eq!(writer.send("thaw", json!({}))["ok"], true);

    // Killed while frozen: the holder thaws.
    assert_eq!(
        writer.send("prepare_snapshot", json!({"volumes": [image_name]}))["ok"],
        true
    );
    assert_eq!(
        writer.send("freeze", json!({"deadline_ms": 20000}))["ok"],
        true
    );
    assert!(!writable(&mount, "frozen-again", &mut blocked));
    writer.kill();
    wait_for(5, "the file system thaws after the writer died", || {
        writable(&mount, "after-kill", &mut blocked)
    });
    for mut write in blocked {
        assert!(
            write.wait().expect("wait").success(),
            "held writes complete after the thaw"
        );
    }
}

/// Writes, renames and deletes files on `mount` until stopped; counts the files written.
fn start_file_load(
    mount: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let payload = vec![0x5a_u8; 48 * 1024];
        // Bounded: at most 20000 files, a few hundred a second.
        for number in 0..20_000u64 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let directory = mount.join(format!("d{}", number % 16));
            let _ = std::fs::create_dir_all(&directory);
            let temporary = directory.join(format!("f{number}.tmp"));
            if std::fs::write(&temporary, &payload).is_err()
                || std::fs::rename(&temporary, directory.join(format!("f{number}"))).is_err()
            {
                continue;
            }
            // At most 256 files live (12 MiB), so the file system never fills up.
            if number >= 256 {
                let _ = std::fs::remove_file(
                    mount
                        .join(format!("d{}", (number - 256) % 16))
                        .join(format!("f{}", number - 256)),
                );
            }
            written.store(number + 1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    })
}

#[test]
fn inbox_filesystem_passes_the_check_and_shadows_under_a_file_load_are_clean() {
    if !have_tools(&["mkfs.ext4", "e2fsck", "fusermount3"]) {
        return;
    }
    let work = support::scratch("inbox_filesystem_shadow");
    let volume = AttachedExt4::new(&work, "fs", "96M");
    // The attachment keeps the service past its idle timeout (5 s in tests): a file system
    // mounted from it stays usable with no requester connected.
    std::thread::sleep(std::time::Duration::from_millis(6500));
    std::fs::write(
        volume.mount_point.join("after-idle"),
        b"written after the idle timeout",
    )
    .expect("write");
    sh_ok(&format!(
        "sync -f {}",
        volume.mount_point.join("after-idle").display()
    ));
    let service_log = std::fs::read_to_string(volume.store.join("service.log")).unwrap_or_default();
    assert!(
        !service_log.contains("service stopping"),
        "the service stayed for its attachment: {service_log}"
    );
    diskshadow(&volume.store)
        .args(["writer", "add", "filesystem"])
        .assert()
        .success();
    assert_writer_check_passes(&volume.store, "File System Writer");

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let load = start_file_load(volume.mount_point.clone(), stop.clone(), written.clone());
    wait_for(60, "the load writes files", || {
        written.load(Ordering::SeqCst) >= 50
    });
    for round in 0..3 {
        let before = written.load(Ordering::SeqCst);
        let output = run_script(
            &volume.store,
            &work,
            &format!("create-{round}.dsh"),
            "set context persistent\nset verbose on\nadd volume fs.img\ncreate\n",
        );
        assert!(output.contains("File System Writer"), "{output}");
        let shadow = shadow_ids(&output)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no shadow copy in {output}"));
        let image = work.join(format!("shadow-{round}.img"));
        diskshadow(&volume.store)
            .args(["volume", "read", &shadow, "--output"])
            .arg(&image)
            .assert()
            .success();
        let check = std::process::Command::new("e2fsck")
            .arg("-fn")
            .arg(&image)
            .output()
            .expect("e2fsck");
        assert!(
            check.status.success(),
            "round {round}: the shadow's ext4 is clean: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let _ = std::fs::remove_file(&image);
        wait_for(30, "the load goes on after the thaw", || {
            written.load(Ordering::SeqCst) > before
        });
    }
    stop.store(true, Ordering::SeqCst);
    let _ = load.join();
}
