//! Files, directories and sockets private to the store's owner, whatever the umask.
//!
//! The diff area holds old contents of volumes whatever the volumes' own modes, the service
//! socket lets its users read and write any path the service can, and share sockets serve
//! shadow copies: none of them may be readable or connectable by other users. The umask can
//! only take permission bits away, so giving every `create` an explicit mode is enough.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// The mode of every file diskshadow creates in a store: the diff area holds old contents of
/// volumes whatever their own mode, so only the store's owner may read it.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// The mode of every directory diskshadow creates in a store (and of the store itself).
pub const PRIVATE_DIRECTORY_MODE: u32 = 0o700;

/// `OpenOptions` whose `create` makes the file `PRIVATE_FILE_MODE` (0600), whatever the umask
/// allows beyond that (the umask can only take bits away).
pub fn private_open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(PRIVATE_FILE_MODE);
    options
}

/// Creates `directory` and any missing parents with mode `PRIVATE_DIRECTORY_MODE` (0700).
/// Directories that already exist keep their mode.
pub fn create_private_dir_all(directory: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIRECTORY_MODE)
        .create(directory)
}

/// Makes sure `directory` is a directory only this user can use, creating it (0700) when
/// missing: what a socket may be put in when others can write the parent (`/tmp`).
///
/// Refused (`PermissionDenied`, naming the reason) when it is a symbolic link, not a
/// directory, belongs to another user, or, unless `tighten`, gives group or other users any
/// permission: in a shared parent someone else could have made it first to catch the socket.
/// With `tighten`, a directory of ours that is too open is made 0700 instead (a store's own
/// `shares/` made by an older version).
pub fn ensure_private_directory(directory: &Path, tighten: bool) -> io::Result<()> {
    if let Some(parent) = directory.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            create_private_dir_all(parent)?;
        }
    }
    match DirBuilder::new()
        .mode(PRIVATE_DIRECTORY_MODE)
        .create(directory)
    {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    let refuse = |reason: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory of this user: {reason}; remove it (another user may have made it to catch the sockets put there)",
                directory.display()
            ),
        ))
    };
    let metadata = std::fs::symlink_metadata(directory)?;
    if metadata.file_type().is_symlink() {
        return refuse("it is a symbolic link".to_string());
    }
    if !metadata.is_dir() {
        return refuse("it is not a directory".to_string());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if metadata.uid() != uid {
        return refuse(format!("it belongs to uid {}", metadata.uid()));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        if !tighten {
            return refuse(format!("other users have access to it (mode {mode:o})"));
        }
        std::fs::set_permissions(
            directory,
            std::fs::Permissions::from_mode(PRIVATE_DIRECTORY_MODE),
        )?;
    }
    Ok(())
}

/// Binds and listens on a Unix stream socket at `path` whose file has mode `mode` from the
/// moment it exists.
///
/// `bind(2)` gives the socket file the socket inode's mode less the umask, so the mode is set
/// on the unbound socket with `fchmod` first: no connection can slip in between the bind and a
/// later `chmod`. The mode is set again on the path afterwards, for kernels that ignore the
/// first. `path` must fit in `sun_path` and must not exist.
pub fn bind_private_socket(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is a valid value of the type.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= address.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path is too long for a Unix socket or contains a NUL byte",
        ));
    }
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(socket.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let length = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: `address` is a live, initialized sockaddr_un and `length` does not exceed it.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_un).cast(),
            length,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    // SAFETY: listen(2) on a bound descriptor we own.
    if unsafe { libc::listen(socket.as_raw_fd(), 128) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixListener::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_directory_is_refused_and_a_missing_one_made_private() {
        let directory = tempfile::tempdir().expect("tempdir");
        let fresh = directory.path().join("fresh");
        ensure_private_directory(&fresh, false).expect("made");
        assert_eq!(
            std::fs::metadata(&fresh).expect("metadata").mode() & 0o777,
            0o700
        );
        ensure_private_directory(&fresh, false).expect("ours, private: used again");

        let target = directory.path().join("elsewhere");
        std::fs::create_dir(&target).expect("mkdir");
        let link = directory.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let error = ensure_private_directory(&link, true).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");

        let open = directory.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = ensure_private_directory(&open, false).unwrap_err();
        assert!(error.to_string().contains("mode 777"), "{error}");
        ensure_private_directory(&open, true).expect("tightened");
        assert_eq!(
            std::fs::metadata(&open).expect("metadata").mode() & 0o777,
            0o700
        );

        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let theirs = directory.path().join("theirs");
            std::fs::create_dir(&theirs).expect("mkdir");
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
            let error = ensure_private_directory(&theirs, true).unwrap_err();
            assert!(
                error.to_string().contains("belongs to uid 65534"),
                "{error}"
            );
        }
    }

    #[test]
    fn files_directories_and_sockets_are_private_even_with_an_open_umask() {
        let directory = tempfile::tempdir().expect("tempdir");
        // SAFETY: umask cannot fail. Other tests in this process only create files with
        // explicit modes or in their own temporary directories, so a brief 000 is harmless.
        let previous = unsafe { libc::umask(0) };
        let nested = directory.path().join("a/b");
        let made = create_private_dir_all(&nested);
        let file = private_open_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(nested.join("f"));
        let socket = bind_private_socket(&nested.join("s.sock"), 0o600);
        // SAFETY: as above.
        unsafe { libc::umask(previous) };
        made.expect("directories");
        drop(file.expect("file"));
        let _listener = socket.expect("socket");
        for (path, wanted) in [
            (directory.path().join("a"), 0o700),
            (nested.clone(), 0o700),
            (nested.join("f"), 0o600),
            (nested.join("s.sock"), 0o600),
        ] {
            let mode = std::fs::symlink_metadata(&path).expect("metadata").mode() & 0o777;
            assert_eq!(mode, wanted, "{}", path.display());
        }
    }
}
