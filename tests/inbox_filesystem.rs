//! The File System Writer on a real ext4 file system loop-mounted from a volume's image:
//! Freeze holds its writes (FIFREEZE), Thaw releases them, and a writer killed while frozen
//! still thaws (its freeze holder sees end of input).

mod support;

use serde_json::json;
use support::inbox::{have_tools, sh, sh_ok, WriterProcess};

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
    support::process::wait_for(5, "the file system thaws after the writer died", || {
        writable(&mount, "after-kill", &mut blocked)
    });
    for mut write in blocked {
        assert!(
            write.wait().expect("wait").success(),
            "held writes complete after the thaw"
        );
    }
}
