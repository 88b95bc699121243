//! Shared by the tests of the in-box writers: an ext4 file system on an attached diskshadow
//! volume, loop-mounted, for an application's data; and the tools those tests need.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::diskshadow;

pub fn sh(command: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(command).output().expect("sh")
}

pub fn sh_ok(command: &str) -> String {
    let output = sh(command);
    assert!(
        output.status.success(),
        "`{command}` failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// True when every tool is present; else says `skipped:` (a failure under
/// DISKSHADOW_REQUIRE_TOOLS=1) and returns false.
pub fn have_tools(tools: &[&str]) -> bool {
    if !sh("test \"$(id -u)\" = 0").status.success() {
        super::skip("these tests need root (loop devices, FUSE, servers run as their users)");
        return false;
    }
    for tool in tools {
        let present = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            sh(&format!("command -v {tool}")).status.success()
        };
        if !present {
            super::skip(format!(
                "{tool} is not installed (.ci/run installs postgresql, mariadb-server, sqlite3, fuse3, e2fsprogs)"
            ));
            return false;
        }
    }
    true
}

/// An ext4 image attached through the service (FUSE) and loop-mounted at `mount_point`: what
/// an application writes there goes through the provider, so shadows of it are live.
pub struct AttachedExt4 {
    pub store: PathBuf,
    pub image: PathBuf,
    pub mount_point: PathBuf,
    stops: Vec<String>,
}

impl AttachedExt4 {
    pub fn new(work: &Path, name: &str, size: &str) -> Self {
        let store = work.join("store");
        let image = work.join(format!("{name}.img"));
        let attach = work.join("attach");
        let mount_point = work.join("mnt");
        std::fs::create_dir_all(&attach).expect("attach dir");
        std::fs::create_dir_all(&mount_point).expect("mount dir");
        sh_ok(&format!("mkfs.ext4 -q -F -b 4096 {} {size}", image.display()));
        diskshadow(&store)
            .args(["volume", "attach"])
            .arg(&image)
            .arg(&attach)
            .current_dir(work)
            .assert()
            .success();
        sh_ok(&format!(
            "mount -o loop {} {}",
            attach.join(format!("{name}.img")).display(),
            mount_point.display()
        ));
        Self {
            store,
            image,
            mount_point,
            stops: Vec::new(),
        }
    }

    /// A shell command run at cleanup, before unmounting (stopping the servers).
    pub fn on_cleanup(&mut self, command: String) {
        self.stops.push(command);
    }
}

impl Drop for AttachedExt4 {
    fn drop(&mut self) {
        for command in self.stops.iter().rev() {
            let _ = sh(command);
        }
        let _ = sh(&format!("umount {} 2>/dev/null || umount -l {} 2>/dev/null", self.mount_point.display(), self.mount_point.display()));
        let _ = diskshadow(&self.store).args(["service", "stop"]).output();
    }
}
