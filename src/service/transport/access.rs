//! Who may use a store's service: the peer check made on every accepted connection.
//!
//! Anyone who can talk to the service can make it read or write any path it can, so the
//! service asks the kernel who is on the other end (`SO_PEERCRED`) and serves only:
//!
//! - root (uid 0) and the user the service runs as;
//! - the owner of the store directory;
//! - the users named in the store's allow list, `<store>/access.toml` (VSS's
//!   `VssAccessControl` registry key), when that file belongs to the store's owner (or root)
//!   and nobody else can write it.
//!
//! Anyone else gets an `error` frame of kind `access_denied` instead of the greeting, and the
//! refusal is logged. The allow list is read again on every connection, so an edit takes
//! effect for the next requester without a restart.
//!
//! The file system is the first gate: the socket is 0600 unless the allow list names someone
//! (then 0666, and this check is the gate), and the store directory is 0700 unless its owner
//! opens it (`chmod 711`) for the users they allow.
//!
//! ```toml
//! # <store>/access.toml: who besides root and the store's owner may use this store.
//! users = ["alice", "backup"]
//! uids = [1001]
//! ```

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use serde::Deserialize;

/// The allow list's file name in the store.
pub const ACCESS_FILE_NAME: &str = "access.toml";

/// The socket mode when only root and the owner may connect.
pub const OWNER_ONLY_SOCKET_MODE: u32 = 0o600;

/// The socket mode when the allow list names other users: the peer check is then the gate.
pub const SHARED_SOCKET_MODE: u32 = 0o666;

/// Who is on the other end of a connection, from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Asks the kernel for the credentials of the process that connected `stream`.
pub fn peer_credentials(stream: &UnixStream) -> io::Result<PeerCredentials> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut length = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `credentials` and `length` are live and sized for SO_PEERCRED's ucred.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        pid: credentials.pid,
        uid: credentials.uid,
        gid: credentials.gid,
    })
}

/// `<store>/access.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    uids: Vec<u32>,
}

/// The peer check of one service.
#[derive(Debug, Clone)]
pub struct AccessControl {
    /// The store whose owner and allow list decide; `None` for a bare socket server, which
    /// serves only root and its own user.
    store: Option<PathBuf>,
    service_uid: u32,
}

/// Why a peer was refused, for the log and the requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub uid: u32,
    /// What the log and the requester are told, starting with Windows' "Access is denied.".
    pub message: String,
    /// A problem with the allow list itself, for the log only (its owner should fix it).
    pub allow_list_problem: Option<String>,
}

impl AccessControl {
    pub fn new(store: Option<PathBuf>) -> AccessControl {
        AccessControl {
            store,
            // SAFETY: geteuid has no preconditions and cannot fail.
            service_uid: unsafe { libc::geteuid() },
        }
    }

    /// The owner of the store directory.
    fn store_owner(&self) -> Option<u32> {
        let store = self.store.as_ref()?;
        std::fs::metadata(store).ok().map(|metadata| metadata.uid())
    }

    /// The uids the allow list names, or why the list cannot be trusted. A missing file is an
    /// empty list.
    fn allow_list(&self) -> Result<BTreeSet<u32>, String> {
        let Some(store) = &self.store else {
            return Ok(BTreeSet::new());
        };
        let path = store.join(ACCESS_FILE_NAME);
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let owner = self.store_owner();
        if !metadata.is_file() {
            return Err(format!("{} is not a regular file", path.display()));
        }
        if metadata.uid() != 0 && Some(metadata.uid()) != owner {
            return Err(format!(
                "{} belongs to uid {}, not to the store's owner; only the owner may say who else uses the store",
                path.display(),
                metadata.uid()
            ));
        }
        if metadata.mode() & 0o022 != 0 {
            return Err(format!(
                "{} can be written by other users (mode {:o}); `chmod go-w` it",
                path.display(),
                metadata.mode() & 0o777
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        parse_allow_list(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// True when the allow list names anyone: the socket must then let others reach this check.
    pub fn allows_other_users(&self) -> bool {
        self.allow_list().is_ok_and(|uids| !uids.is_empty())
    }

    /// The socket mode this store's service should listen with.
    pub fn socket_mode(&self) -> u32 {
        if self.allows_other_users() {
            SHARED_SOCKET_MODE
        } else {
            OWNER_ONLY_SOCKET_MODE
        }
    }

    /// Decides about one peer.
    pub fn check(&self, uid: u32) -> Result<(), Refusal> {
        if uid == 0 || uid == self.service_uid || Some(uid) == self.store_owner() {
            return Ok(());
        }
        let (allowed, allow_list_problem) = match self.allow_list() {
            Ok(uids) => (uids.contains(&uid), None),
            Err(problem) => (false, Some(problem)),
        };
        if allowed {
            return Ok(());
        }
        let message = match &self.store {
            Some(store) => format!(
                "Access is denied. uid {uid} may not use the diskshadow service of the store {}; its owner can allow it in {}",
                store.display(),
                store.join(ACCESS_FILE_NAME).display()
            ),
            None => format!("Access is denied. uid {uid} may not use this diskshadow service"),
        };
        Err(Refusal {
            uid,
            message,
            allow_list_problem,
        })
    }
}

/// Parses the allow list's text into uids, resolving user names.
fn parse_allow_list(text: &str) -> Result<BTreeSet<u32>, String> {
    let file: AccessFile = toml::from_str(text).map_err(|error| {
        format!("{error}; the file holds `users = [\"name\", …]` and `uids = [1001, …]`")
    })?;
    let mut uids: BTreeSet<u32> = file.uids.into_iter().collect();
    for user in &file.users {
        uids.insert(uid_of_user(user).ok_or_else(|| format!("there is no user named `{user}`"))?);
    }
    Ok(uids)
}

/// The uid of a user name, from the system's user database.
fn uid_of_user(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: an all-zero passwd is a valid value; getpwnam_r fills it from `buffer`.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: every pointer is live for the call and `buffer.len()` is its real length.
    let status = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
    (status == 0 && !result.is_null()).then_some(entry.pw_uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_names_users_and_uids() {
        let uids = parse_allow_list("users = [\"root\"]\nuids = [1001, 1002]\n").expect("parses");
        assert_eq!(uids.into_iter().collect::<Vec<_>>(), vec![0, 1001, 1002]);
        assert!(parse_allow_list("users = [\"no-such-user-here\"]")
            .unwrap_err()
            .contains("no user named `no-such-user-here`"));
        assert!(parse_allow_list("groups = [\"x\"]")
            .unwrap_err()
            .contains("users = ["));
    }

    #[test]
    fn owner_root_and_listed_uids_are_allowed_and_others_refused() {
        let directory = tempfile::tempdir().expect("tempdir");
        let access = AccessControl::new(Some(directory.path().to_path_buf()));
        assert!(access.check(0).is_ok());
        let refusal = access.check(4242).unwrap_err();
        assert!(
            refusal.message.starts_with("Access is denied."),
            "{refusal:?}"
        );
        assert_eq!(access.socket_mode(), OWNER_ONLY_SOCKET_MODE);
        std::fs::write(directory.path().join(ACCESS_FILE_NAME), "uids = [4242]\n").expect("write");
        let path = directory.path().join(ACCESS_FILE_NAME);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
        assert!(access.check(4242).is_ok());
        assert!(access.check(4243).is_err());
        assert_eq!(access.socket_mode(), SHARED_SOCKET_MODE);
        // A list that others could have written is not trusted.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod");
        let refusal = access.check(4242).unwrap_err();
        assert!(
            refusal
                .allow_list_problem
                .as_deref()
                .is_some_and(|problem| problem.contains("written by other users")),
            "{refusal:?}"
        );
    }
}
