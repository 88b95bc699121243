//! Exposures held by the service: what `expose` made, kept alive until `unexpose`, deletion of
//! the shadow, or the service's end. DiskShadow's targets map to Linux as follows:
//!
//! - a directory (mount point) or a drive letter mapped to a directory: a read-only FUSE mount;
//! - a share `\\host\name`: a read-only NBD export named `name` on a Unix socket in the store
//!   (`<store>/shares/<name>.sock`);
//! - `nbd://127.0.0.1:PORT/name` or `nbd+unix:///name?socket=PATH`: an NBD export there.
//!
//! **Architecture Invariant:** a shadow is exposed at most once, and the catalog's record of an
//! exposure and the live handle are added and removed together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::engine::expose::nbd::{NbdExport, NbdListener};
use crate::engine::expose::FuseMount;
use crate::engine::ids::ShadowId;
use crate::engine::model::{DriveTarget, Exposure, ExposureKind};
use crate::engine::vss::VssCode;
use crate::service::way_out::EngineFailure;
use crate::service::ServiceError;

/// Where a shadow is to be exposed, once the user's text is understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExposureTarget {
    /// A FUSE mount at `directory`; `name` is what the user wrote (`Z:` or the path).
    Mount {
        kind: ExposureKind,
        name: String,
        directory: PathBuf,
    },
    /// An NBD export.
    Share {
        name: String,
        export_name: String,
        listener: NbdListener,
        /// The directory diskshadow keeps share sockets in (`<store>/shares` or the fallback
        /// for long store paths), which must be private before a socket is put there; `None`
        /// for a socket path or port the user chose.
        share_directory: Option<ShareDirectory>,
    },
}

/// A directory of share sockets that diskshadow owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareDirectory {
    pub path: PathBuf,
    /// `<store>/shares` is ours to tighten; a fallback in a shared temporary directory that is
    /// not private already is refused, since someone else may have made it.
    pub in_store: bool,
}

/// The longest share name: it becomes a socket file name, and the socket path must fit in
/// `sun_path`.
pub const MAX_SHARE_NAME_BYTES: usize = 64;

/// Checks a share name (`\\host\NAME`): it becomes a file name, so it must not name a path.
fn check_share_name(name: &str, target: &str) -> Result<(), ServiceError> {
    let allowed = !name.is_empty()
        && name.len() <= MAX_SHARE_NAME_BYTES
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_.".contains(character));
    if allowed {
        return Ok(());
    }
    Err(ServiceError::invalid(format!(
        "`{name}` in `{target}` is not a valid share name: a share name is 1 to {MAX_SHARE_NAME_BYTES} letters, digits, `-`, `_` and `.`, not starting with `.` and without `..`"
    ))
    .with_help("write \\\\host\\NAME, for example \\\\localhost\\data"))
}

fn share_socket(store: &Path, export_name: &str) -> (PathBuf, ShareDirectory) {
    let in_store = store.join("shares");
    // A Unix socket path must fit in 108 bytes; long store paths fall back to a per-user
    // directory in the temporary directory, which must then be ours and private.
    if in_store
        .join(format!("{export_name}.sock"))
        .as_os_str()
        .len()
        < 100
    {
        let socket = in_store.join(format!("{export_name}.sock"));
        (
            socket,
            ShareDirectory {
                path: in_store,
                in_store: true,
            },
        )
    } else {
        let directory = std::env::temp_dir().join(format!("diskshadow-shares-{}", current_uid()));
        (
            directory.join(format!("{export_name}.sock")),
            ShareDirectory {
                path: directory,
                in_store: false,
            },
        )
    }
}

/// The effective user ID, for a per-user directory name (the directory must belong to it).
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Understands an `expose` / `unexpose` target.
pub fn parse_target(
    target: &str,
    shadow: ShadowId,
    base_dir: &Path,
    store: &Path,
    drive_map: &[(char, DriveTarget)],
) -> Result<ExposureTarget, ServiceError> {
    let text = target.trim();
    if let Some(letter) = crate::drive_letter::parse(text) {
        return match drive_map.iter().find(|(mapped, _)| *mapped == letter) {
            Some((_, DriveTarget::Directory(directory))) => Ok(ExposureTarget::Mount {
                kind: ExposureKind::Drive,
                name: format!("{letter}:"),
                directory: directory.clone(),
            }),
            Some((_, DriveTarget::Volume(path))) => Err(ServiceError::invalid(format!(
                "drive {letter}: is mapped to the volume {}, not to a directory a shadow copy can be exposed at",
                path.display()
            ))
            .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
            .with_help("choose another letter, or `map <letter>: <directory>` first")),
            None => Err(ServiceError::not_found(format!("drive {letter}: is not mapped"))
                .with_help(format!("map it to an empty directory first: `map {letter}: /mnt/shadow`"))),
        };
    }
    if let Some(rest) = text.strip_prefix("\\\\") {
        let mut parts = rest.split('\\').filter(|part| !part.is_empty());
        let _host = parts.next();
        let export_name = match parts.next() {
            Some(name) => {
                check_share_name(name, text)?;
                name.to_string()
            }
            None => shadow.to_string(),
        };
        if let Some(extra) = parts.next() {
            return Err(ServiceError::invalid(format!(
                "`{text}` names a path inside the share (`{extra}`); a share is named by one name after the host"
            ))
            .with_help("write \\\\host\\NAME, for example \\\\localhost\\data"));
        }
        let name = format!("\\\\{}", rest.trim_end_matches('\\'));
        let (socket, share_directory) = share_socket(store, &export_name);
        return Ok(ExposureTarget::Share {
            name,
            export_name,
            listener: NbdListener::Unix(socket),
            share_directory: Some(share_directory),
        });
    }
    if let Some(rest) = text.strip_prefix("nbd+unix:///") {
        let (export_name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let socket = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("socket="))
            .ok_or_else(|| {
                ServiceError::invalid(format!("`{text}` names no socket"))
                    .with_help("write nbd+unix:///NAME?socket=/path/to/socket")
            })?;
        let export_name = if export_name.is_empty() {
            shadow.to_string()
        } else {
            export_name.to_string()
        };
        // A relative socket path is the requester's, not the service's working directory.
        let socket = if Path::new(socket).is_absolute() {
            PathBuf::from(socket)
        } else {
            base_dir.join(socket)
        };
        return Ok(ExposureTarget::Share {
            name: text.to_string(),
            export_name,
            listener: NbdListener::Unix(socket),
            share_directory: None,
        });
    }
    if let Some(rest) = text.strip_prefix("nbd://") {
        let (address, export_name) = rest.split_once('/').unwrap_or((rest, ""));
        let address = address.replace("localhost", "127.0.0.1");
        let address: SocketAddr = address.parse().map_err(|_| {
            ServiceError::invalid(format!("`{text}` does not name an address and port"))
                .with_help("write nbd://127.0.0.1:10809/NAME")
        })?;
        if !address.ip().is_loopback() {
            return Err(ServiceError::invalid(format!(
                "{} is not a loopback address",
                address.ip()
            ))
            .with_help("shares listen on this machine only: use 127.0.0.1 or [::1]"));
        }
        let export_name = if export_name.is_empty() {
            shadow.to_string()
        } else {
            export_name.to_string()
        };
        return Ok(ExposureTarget::Share {
            name: text.to_string(),
            export_name,
            listener: NbdListener::Tcp(address),
            share_directory: None,
        });
    }
    let directory = if Path::new(text).is_absolute() {
        PathBuf::from(text)
    } else {
        base_dir.join(text)
    };
    Ok(ExposureTarget::Mount {
        kind: ExposureKind::Directory,
        name: directory.display().to_string(),
        directory,
    })
}

/// A live exposure.
pub enum Handle {
    Nbd(NbdExport),
    Fuse(FuseMount),
}

impl Handle {
    /// Takes the exposure down: no listener, socket, mount or thread is left.
    pub fn close(self) {
        match self {
            Handle::Nbd(export) => export.stop(),
            // A busy mount is detached lazily by the unmount itself; nothing is left mounted.
            Handle::Fuse(mount) => {
                let _ = mount.unmount();
            }
        }
    }
}

/// Starts serving `device` at `target`: an NBD export (read-only when `share_read_only`), or a
/// FUSE mount with `mount_options`. `mounted_file` names the one file a mount shows (attached
/// volumes); the exposure's location is then that file, else the mount point. Errors start
/// with `failure_prefix` (`the shadow copy cannot be exposed at`).
pub fn open_exposure(
    device: std::sync::Arc<dyn crate::engine::device::BlockDevice>,
    target: ExposureTarget,
    share_read_only: bool,
    mount_options: crate::engine::expose::MountOptions,
    mounted_file: Option<&str>,
    failure_prefix: &str,
) -> Result<(Exposure, Handle), ServiceError> {
    let failed = |name: &str, error: &dyn EngineFailure| {
        ServiceError::invalid(format!("{failure_prefix} {name}: {error}"))
            .with_code(error.code())
            .with_way_out(error.way_out())
    };
    match target {
        ExposureTarget::Share {
            name,
            export_name,
            listener,
            share_directory,
        } => {
            if let Some(directory) = &share_directory {
                crate::engine::store::ensure_private_directory(&directory.path, directory.in_store)
                    .map_err(|error| {
                        ServiceError::invalid(format!("{failure_prefix} {name}: {error}"))
                            .with_code(VssCode::VSS_E_UNEXPECTED)
                    })?;
            } else if let NbdListener::Unix(path) = &listener {
                if let Some(parent) = path.parent() {
                    crate::engine::store::create_private_dir_all(parent).map_err(|error| {
                        ServiceError::io(format!("{} cannot be created: {error}", parent.display()))
                    })?;
                }
            }
            let tcp = matches!(listener, NbdListener::Tcp(_));
            let export =
                crate::engine::expose::serve_nbd(device, &export_name, listener, share_read_only)
                    .map_err(|error| failed(&name, &error))?;
            // A TCP export is named by the address it really listens on: `nbd://127.0.0.1:0/x`
            // asked for any free port, and the user needs to know which one.
            let name = if tcp { export.url() } else { name };
            let exposure = Exposure {
                kind: ExposureKind::Share,
                name,
                location: export.url(),
            };
            Ok((exposure, Handle::Nbd(export)))
        }
        ExposureTarget::Mount {
            kind,
            name,
            directory,
        } => {
            let mount = crate::engine::expose::mount(device, &directory, mount_options)
                .map_err(|error| failed(&name, &error))?;
            let location = match mounted_file {
                Some(file) => directory.join(file),
                None => directory,
            };
            let exposure = Exposure {
                kind,
                name,
                location: location.display().to_string(),
            };
            Ok((exposure, Handle::Fuse(mount)))
        }
    }
}

/// The loop devices (`/dev/loopN`) whose backing file is `file`.
fn loop_devices_backed_by(file: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let backing = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            (name.starts_with("loop") && Path::new(backing.trim()) == file)
                .then(|| format!("/dev/{name}"))
        })
        .collect()
}

/// The mount points of file systems mounted from `file` through a loop device: what
/// flush-and-hold must freeze when `file` is an attached volume's FUSE file.
pub fn filesystems_on(file: &Path) -> Vec<PathBuf> {
    let devices = loop_devices_backed_by(file);
    if devices.is_empty() {
        return Vec::new();
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|line| {
            // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPEROPTIONS`
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split_whitespace().nth(4)?;
            let source = after.split_whitespace().nth(1)?;
            devices
                .iter()
                .any(|device| device == source)
                .then(|| PathBuf::from(unescape_mount_path(mount_point)))
        })
        .collect()
}

/// Who may write `image` behind diskshadow's back: loop devices backed by it (with where their
/// file systems are mounted) and other processes that hold it open for writing. This process
/// (the service, which writes only through the provider) is left out.
pub fn outside_users(image: &Path) -> Vec<String> {
    let mut users = Vec::new();
    let canonical = image.canonicalize().unwrap_or_else(|_| image.to_path_buf());
    for device in loop_devices_backed_by(&canonical) {
        users.push(format!("the loop device {device}"));
    }
    for mount_point in filesystems_on(&canonical) {
        users.push(format!(
            "a file system mounted at {}",
            mount_point.display()
        ));
    }
    let own = std::process::id().to_string();
    if let Ok(processes) = std::fs::read_dir("/proc") {
        for process in processes.flatten() {
            let pid = process.file_name().to_string_lossy().to_string();
            if !pid.bytes().all(|byte| byte.is_ascii_digit()) || pid == own {
                continue;
            }
            // This process's threads are this process, and its children between fork and exec
            // hold copies of its descriptors (closed at exec): neither writes behind its back.
            let status = std::fs::read_to_string(process.path().join("status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(str::trim)
            };
            if field("Tgid:") == Some(own.as_str()) || field("PPid:") == Some(own.as_str()) {
                continue;
            }
            let Ok(descriptors) = std::fs::read_dir(process.path().join("fd")) else {
                continue;
            };
            let writes = descriptors.flatten().any(|descriptor| {
                std::fs::read_link(descriptor.path()).is_ok_and(|target| target == canonical)
                    && std::fs::read_to_string(
                        process.path().join("fdinfo").join(descriptor.file_name()),
                    )
                    .ok()
                    .and_then(|info| {
                        info.lines()
                            .find_map(|line| line.strip_prefix("flags:"))
                            .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
                    })
                    .is_some_and(|flags| flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32)
            });
            if writes {
                let command =
                    std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
                users.push(format!("process {pid} ({})", command.trim()));
            }
        }
    }
    users
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(text: &str) -> String {
    text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Live exposures (by shadow) or attachments (by volume).
pub struct Exposures<K = ShadowId> {
    live: HashMap<K, (Exposure, Handle)>,
}

impl<K> Default for Exposures<K> {
    fn default() -> Self {
        Self {
            live: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> Exposures<K> {
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn contains(&self, key: K) -> bool {
        self.live.contains_key(&key)
    }

    pub fn insert(&mut self, key: K, exposure: Exposure, handle: Handle) {
        self.live.insert(key, (exposure, handle));
    }

    pub fn remove(&mut self, key: K) -> Option<(Exposure, Handle)> {
        self.live.remove(&key)
    }

    /// The shadow exposed under `name` (drive, directory or share, as the user wrote it or as
    /// the exposure records it).
    pub fn find(&self, name: &str, resolved: &Path) -> Option<K> {
        let wanted = name.trim_end_matches(['\\', '/']);
        self.live.iter().find_map(|(key, (exposure, _))| {
            let matches = exposure
                .name
                .trim_end_matches(['\\', '/'])
                .eq_ignore_ascii_case(wanted)
                || exposure.location == name
                || (exposure.kind != ExposureKind::Share
                    && Path::new(&exposure.location) == resolved);
            matches.then_some(*key)
        })
    }

    /// Every exposure, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Exposure)> {
        self.live.iter().map(|(key, (exposure, _))| (key, exposure))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow() -> ShadowId {
        ShadowId(uuid::Uuid::from_u128(7))
    }

    #[test]
    fn targets_are_understood_as_drive_share_url_or_directory() {
        let map = vec![
            ('Z', DriveTarget::Directory(PathBuf::from("/mnt/z"))),
            ('C', DriveTarget::Volume(PathBuf::from("/c.img"))),
        ];
        let store = Path::new("/s");
        let base = Path::new("/work");
        assert_eq!(
            parse_target("z:\\", shadow(), base, store, &map),
            Ok(ExposureTarget::Mount {
                kind: ExposureKind::Drive,
                name: "Z:".into(),
                directory: "/mnt/z".into()
            })
        );
        assert!(parse_target("c:", shadow(), base, store, &map).is_err());
        assert!(parse_target("q:", shadow(), base, store, &map).is_err());
        assert_eq!(
            parse_target("\\\\host\\data", shadow(), base, store, &map),
            Ok(ExposureTarget::Share {
                name: "\\\\host\\data".into(),
                export_name: "data".into(),
                listener: NbdListener::Unix("/s/shares/data.sock".into()),
                share_directory: Some(ShareDirectory {
                    path: "/s/shares".into(),
                    in_store: true
                }),
            })
        );
        for escaping in [
            "\\\\host\\../../x/y",
            "\\\\host\\..",
            "\\\\host\\a/b",
            "\\\\host\\.hidden",
            "\\\\host\\sp ace",
        ] {
            let error = parse_target(escaping, shadow(), base, store, &map).unwrap_err();
            assert!(
                error.message.contains("is not a valid share name"),
                "{escaping}: {error:?}"
            );
        }
        let long = format!("\\\\host\\{}", "n".repeat(MAX_SHARE_NAME_BYTES + 1));
        assert!(parse_target(&long, shadow(), base, store, &map).is_err());
        let nested = parse_target("\\\\host\\data\\more", shadow(), base, store, &map);
        assert!(nested
            .unwrap_err()
            .message
            .contains("a share is named by one name after the host"));
        assert!(parse_target("\\\\host\\my-share_1.v2", shadow(), base, store, &map).is_ok());
        assert!(matches!(
            parse_target("nbd://127.0.0.1:10809/x", shadow(), base, store, &map),
            Ok(ExposureTarget::Share {
                listener: NbdListener::Tcp(_),
                ..
            })
        ));
        assert!(parse_target("nbd://10.0.0.1:10809/x", shadow(), base, store, &map).is_err());
        assert_eq!(
            parse_target("mnt/shadow", shadow(), base, store, &map),
            Ok(ExposureTarget::Mount {
                kind: ExposureKind::Directory,
                name: "/work/mnt/shadow".into(),
                directory: "/work/mnt/shadow".into()
            })
        );
    }
}
