//! Flush-and-hold on a real file system: writes to a mounted ext4 volume wait while the
//! provider commits, and go through after. Needs root, mkfs.ext4 and loop mounts.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use diskshadow::engine::coordinator::{
    Coordinator, CreationRequest, SelectionPlan, SilentObserver,
};
use diskshadow::engine::ids::ShadowSetId;
use diskshadow::engine::vss::{BackupType, Context};
use diskshadow::engine::writer::{HostOptions, RegistrationSet, WriterHost};
use uuid::Uuid;

/// Unmounts the loop-mounted file system however the test ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_ext4(directory: &Path) -> Result<Mounted, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("loop mounts need root".to_string());
    }
    let image = directory.join("volume.img");
    let mount_point = directory.join("mnt");
    std::fs::create_dir(&mount_point).map_err(|error| error.to_string())?;
    std::fs::File::create(&image)
        .and_then(|file| file.set_len(16 << 20))
        .map_err(|error| error.to_string())?;
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&image)
        .status();
    if !made.map(|status| status.success()).unwrap_or(false) {
        return Err("mkfs.ext4 is not available (apt-get install e2fsprogs)".to_string());
    }
    let mounted = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mount_point)
        .status();
    if !mounted.map(|status| status.success()).unwrap_or(false) {
        return Err("loop mounts are not available here".to_string());
    }
    Ok(Mounted(mount_point))
}

#[test]
fn writes_to_a_held_file_system_wait_until_the_commit_is_done() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mounted = match mount_ext4(directory.path()) {
        Ok(mounted) => mounted,
        Err(reason) => {
            support::skip(reason);
            return;
        }
    };
    let host = WriterHost::new(RegistrationSet::default(), HostOptions::default());
    let coordinator = Coordinator::new(&host, &SilentObserver);
    let request = CreationRequest {
        snapshot_set_id: ShadowSetId(Uuid::from_u128(1)),
        context: Context::PersistentNoWriters,
        backup_type: BackupType::Copy,
        volumes: Vec::new(),
        flush_mount_points: vec![mounted.0.clone()],
        autorecover: false,
    };
    let target = mounted.0.join("written-during-commit");
    let (done_sender, done) = mpsc::channel();
    let mut writer_thread = None;
    let outcome = coordinator.create_shadow_set(
        &request,
        &SelectionPlan::without_writers(),
        &mut || -> Result<bool, String> {
            let target = target.clone();
            let done_sender = done_sender.clone();
            writer_thread = Some(std::thread::spawn(move || {
                let written = std::fs::write(&target, b"after the hold");
                let _ = done_sender.send(written.is_ok());
            }));
            // While the file system is held, the write cannot finish.
            Ok(done.recv_timeout(Duration::from_millis(300)).is_err())
        },
        &mut |_| Vec::new(),
    );
    let held_during_commit = outcome.expect("created").committed;
    assert!(
        held_during_commit,
        "a write went through while the file system was held"
    );
    assert_eq!(
        done.recv_timeout(Duration::from_secs(10)),
        Ok(true),
        "the write completes after release"
    );
    if let Some(thread) = writer_thread {
        thread.join().expect("join");
    }
    assert_eq!(std::fs::read(&target).expect("read"), b"after the hold");
}
