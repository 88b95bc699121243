//! Leftovers of a service that crashed: FUSE mounts whose server is gone (every access answers
//! `ENOTCONN`, "Transport endpoint is not connected") and socket files nobody listens on.
//! The service calls [`cleanup_stale`] with the mount points and sockets its runtime state
//! recorded before it exposes anything again.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What [`cleanup_stale`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StaleCleanup {
    /// FUSE mounts that were detached.
    pub unmounted: Vec<PathBuf>,
    /// Socket files that were removed.
    pub removed_sockets: Vec<PathBuf>,
    /// Paths that could not be cleaned, with the reason; they need a person (or root).
    pub failures: Vec<(PathBuf, String)>,
}

/// Lazily unmounts every FUSE mount found at one of `mountpoints` (`fusermount3 -uz`, then
/// `umount2(MNT_DETACH)` when that helper is missing) and removes every file in `sockets` that is
/// a Unix socket nobody listens on. Paths that are not FUSE mounts, not sockets, or still in use
/// are left alone: this never unmounts a real filesystem or steals a live server's socket.
///
/// Call it only for mount points this store's service created: a FUSE mount there is by
/// definition a leftover once the service that served it has restarted.
pub fn cleanup_stale(mountpoints: &[PathBuf], sockets: &[PathBuf]) -> StaleCleanup {
    let mut cleanup = StaleCleanup::default();
    for mountpoint in mountpoints {
        // A mount point can be stacked several times if a crash repeated; detach all of them.
        let mut attempts = 0;
        while is_fuse_mount_point(mountpoint) && attempts < 8 {
            attempts += 1;
            match lazy_unmount(mountpoint) {
                Ok(()) => {
                    if !cleanup.unmounted.contains(mountpoint) {
                        cleanup.unmounted.push(mountpoint.clone());
                    }
                }
                Err(reason) => {
                    cleanup.failures.push((mountpoint.clone(), reason));
                    break;
                }
            }
        }
    }
    for socket in sockets {
        let Ok(metadata) = std::fs::symlink_metadata(socket) else {
            continue;
        };
        if !metadata.file_type().is_socket() || socket_is_live(socket) {
            continue;
        }
        match std::fs::remove_file(socket) {
            Ok(()) => cleanup.removed_sockets.push(socket.clone()),
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => cleanup.failures.push((socket.clone(), error.to_string())),
        }
    }
    cleanup
}

/// True when a server accepts connections on the Unix socket at `path`.
pub(crate) fn socket_is_live(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// One line of `/proc/self/mountinfo`, the fields we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub mount_point: PathBuf,
    pub filesystem_type: String,
}

/// Every mount this process can see, from `/proc/self/mountinfo`.
pub(crate) fn mount_table() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default()
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            let filesystem_type = after.split(' ').next()?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
                filesystem_type: filesystem_type.to_string(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as three-digit octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\' && index + 4 <= bytes.len() {
            let digits = &bytes[index + 1..index + 4];
            let parsed = std::str::from_utf8(digits)
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok());
            if let Some(value) = parsed {
                out.push(value);
                index += 4;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The absolute form of `path` as mountinfo would show it, without touching the filesystem
/// beyond the path's parent (a dead FUSE mount cannot be stat'ed or canonicalized itself).
pub(crate) fn mountinfo_form(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|directory| directory.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => match parent.canonicalize() {
            Ok(parent) => parent.join(name),
            Err(_) => absolute,
        },
        _ => absolute,
    }
}

/// True when something is mounted at `path`.
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let wanted = mountinfo_form(path);
    mount_table()
        .iter()
        .any(|entry| entry.mount_point == wanted)
}

/// True when a FUSE filesystem is mounted at `path`.
pub(crate) fn is_fuse_mount_point(path: &Path) -> bool {
    let wanted = mountinfo_form(path);
    mount_table().iter().any(|entry| {
        entry.mount_point == wanted
            && (entry.filesystem_type == "fuse" || entry.filesystem_type.starts_with("fuse."))
    })
}

pub(crate) fn lazy_unmount(mountpoint: &Path) -> Result<(), String> {
    let helper = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg("--")
        .arg(mountpoint)
        .output();
    let helper_failure = match helper {
        Ok(output) if output.status.success() => return Ok(()),
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
        Err(error) => format!("fusermount3 could not run ({error})"),
    };
    // Root (or a process with CAP_SYS_ADMIN) can detach without the helper.
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) else {
        return Err("the mount point path contains a NUL byte".to_string());
    };
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    let result = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    Err(format!(
        "fusermount3 -uz failed ({helper_failure}) and umount2 failed ({error}); install fuse3 or run `umount -l {}` as root",
        mountpoint.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 35 0:50 / /tmp/x rw,nosuid,nodev shared:5 - fuse.diskshadow diskshadow rw,user_id=0\n";
        let entries = parse_mountinfo(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(entries[0].filesystem_type, "ext3");
        assert_eq!(entries[1].filesystem_type, "fuse.diskshadow");
    }

    #[test]
    fn stale_sockets_are_removed_and_live_ones_kept() {
        let directory = tempfile::tempdir().unwrap();
        let stale = directory.path().join("stale.sock");
        let live = directory.path().join("live.sock");
        let plain = directory.path().join("plain.file");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        std::fs::write(&plain, b"keep me").unwrap();
        let cleanup = cleanup_stale(&[], &[stale.clone(), live.clone(), plain.clone()]);
        assert_eq!(cleanup.removed_sockets, vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(live.exists());
        assert!(plain.exists());
    }
}
