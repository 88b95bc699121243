//! Which diskshadow volume holds a path: the mount that contains it, the loop device behind
//! that mount, and the image file behind the loop device, either a volume's image itself or
//! the FUSE file of an attached volume (a `fuse.diskshadow` mount named by the volume GUID).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::protocol::Failure;

#[derive(Debug, Clone)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// The path inside the file system that is mounted (not `/` for bind mounts).
    pub root: PathBuf,
    pub fstype: String,
    pub source: String,
}

fn unescape(text: &str) -> String {
    text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub fn mounts() -> Vec<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split_whitespace().collect();
            let after: Vec<&str> = after.split_whitespace().collect();
            Some(Mount {
                root: PathBuf::from(unescape(fields.get(3)?)),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fstype: after.first()?.to_string(),
                source: unescape(after.get(1)?),
            })
        })
        .collect()
}

/// The mount that holds `path` (the last, longest mount point that is a prefix of it).
pub fn mount_of(path: &Path, all: &[Mount]) -> Option<Mount> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    all.iter()
        .filter(|mount| path.starts_with(&mount.mount_point))
        .max_by_key(|mount| mount.mount_point.as_os_str().len())
        .cloned()
}

/// The image file behind `/dev/loopN`.
pub fn loop_backing_file(device: &str) -> Option<PathBuf> {
    let name = device.strip_prefix("/dev/")?;
    if !name.starts_with("loop") {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim()))
}

/// Where a file system's block device comes from, as a diskshadow volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSource {
    /// The volume as the shell names it: an image path or a volume GUID.
    pub volume: String,
    /// True when the service flushes and holds this file system itself (a loop device on an
    /// attached volume's FUSE file): a writer must not freeze it a second time.
    pub held_by_service: bool,
}

/// A FUSE mount of an attached volume: diskshadow names it by the volume GUID (`{…}`); the
/// type is `fuse.diskshadow`, or plain `fuse` when the kernel mount took no subtype.
fn is_attached_volume(mount: &Mount) -> bool {
    let guid =
        mount.source.len() == 38 && mount.source.starts_with('{') && mount.source.ends_with('}');
    guid && (mount.fstype == "fuse" || mount.fstype == "fuse.diskshadow")
}

/// The volume behind a mount's source device, if it is one. `devices` maps other block devices
/// (an NBD device connected to an attached volume) to their volumes.
pub fn volume_of_device(
    source: &str,
    all: &[Mount],
    devices: &BTreeMap<String, String>,
) -> Option<VolumeSource> {
    if let Some(volume) = devices.get(source) {
        return Some(VolumeSource {
            volume: volume.clone(),
            held_by_service: false,
        });
    }
    let backing = loop_backing_file(source)?;
    if let Some(fuse) = mount_of(&backing, all).filter(is_attached_volume) {
        return Some(VolumeSource {
            volume: fuse.source,
            held_by_service: true,
        });
    }
    Some(VolumeSource {
        volume: backing.display().to_string(),
        held_by_service: false,
    })
}

/// A component file entry for the directory `path`: its volume (or its device when it is on no
/// volume, which excludes the component from any set) and its path inside that file system.
pub fn file_entry(path: &Path, all: &[Mount], devices: &BTreeMap<String, String>) -> Value {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let (volume, inside) = match mount_of(&canonical, all) {
        Some(mount) => {
            let relative = canonical
                .strip_prefix(&mount.mount_point)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let volume = volume_of_device(&mount.source, all, devices)
                .map(|source| source.volume)
                .unwrap_or(mount.source.clone());
            (volume, mount.root.join(relative))
        }
        None => (String::from("/"), canonical.clone()),
    };
    json!({"volume": volume, "path": inside.display().to_string(), "filespec": "*", "recursive": true})
}

/// The path of `path` relative to the root of its file system, for finding it in a shadow.
pub fn path_inside_file_system(path: &Path, all: &[Mount]) -> Option<PathBuf> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let mount = mount_of(&canonical, all)?;
    let relative = canonical.strip_prefix(&mount.mount_point).ok()?;
    let inside = mount.root.join(relative);
    Some(
        inside
            .strip_prefix("/")
            .map(Path::to_path_buf)
            .unwrap_or(inside),
    )
}

/// Runs `command`; a failure carries its output.
pub fn run_checked(command: &mut std::process::Command, what: &str) -> Result<(), Failure> {
    let output = command
        .output()
        .map_err(|error| Failure::nonretryable(format!("{what}: {error}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Failure::nonretryable(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        )))
    }
}

/// The auto-recovery view (a read-write image of the shadow, offered during PostSnapshot) of
/// the volume that holds `path`, found in the request's `shadows` by volume or volume GUID.
pub fn recovery_view_of(path: &Path, request: &Value) -> Option<PathBuf> {
    let volume = file_entry(path, &mounts(), &BTreeMap::new())["volume"].clone();
    let mine = volume.as_str()?;
    request
        .get("shadows")
        .and_then(Value::as_array)?
        .iter()
        .find(|shadow| {
            shadow.get("volume") == Some(&volume)
                || shadow
                    .get("volume_id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| mine.eq_ignore_ascii_case(id))
        })
        .and_then(|shadow| shadow.get("path"))
        .and_then(Value::as_str)
        .map(PathBuf::from)
}

/// Loop-mounts the auto-recovery view `image` on a temporary directory, runs `work` with the
/// mount point, then syncs and unmounts it (also when `work` failed).
pub fn with_view_mounted<T>(
    image: &Path,
    work: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, Failure> {
    let mount_point = tempfile::Builder::new()
        .prefix("diskshadow-view-")
        .tempdir()
        .map_err(|error| Failure::nonretryable(format!("a mount point: {error}")))?;
    run_checked(
        std::process::Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(image)
            .arg(mount_point.path()),
        "mounting the auto-recovery view",
    )?;
    let result = work(mount_point.path());
    let _ = std::process::Command::new("sync").status();
    let unmounted = run_checked(
        std::process::Command::new("umount").arg(mount_point.path()),
        "unmounting the auto-recovery view",
    );
    let value = result.map_err(|error| {
        Failure::nonretryable(format!("writing into the shadow failed: {error}"))
    })?;
    unmounted?;
    Ok(value)
}
