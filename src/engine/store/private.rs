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
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
    use std::os::unix::fs::MetadataExt;

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
