//! One service per store: the lock file, the socket's place, the address file and the log.
//!
//! Files in the store:
//!
//! | file | what |
//! |---|---|
//! | `service.lock` | `flock`ed (exclusively) by the running service for its whole life; holds its pid |
//! | `service.sock` | the listening socket, when its absolute path fits in `sun_path` (107 bytes) |
//! | `service.addr` | only when `service.sock` would not fit: the path of the socket actually used |
//! | `service.log`  | the service's log, appended to (0600); past 1 MiB it becomes `service.log.1` and a new one starts |
//!
//! When `<store>/service.sock` is longer than 107 bytes, the socket lives in
//! `$XDG_RUNTIME_DIR/diskshadow/` (or `/tmp/diskshadow-<uid>/`, created with mode 0700 and
//! checked to be ours) under a random name, and `service.addr` records that path. Requesters
//! read `service.addr` first and fall back to `service.sock`.
//!
//! **Invariant:** a socket file is only ever removed by a process that holds the store lock
//! (a stale one at start, its own at stop), so a starting service never removes the socket of a
//! live one.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::TransportError;
use super::log::ServiceLog;
use super::server::{
    check_socket_path_length, remove_stale_socket, start_server, Handler, ServerHandle,
    ServerOptions, MAX_SOCKET_PATH_BYTES,
};
use crate::engine::store::{create_private_dir_all, private_open_options};

/// The service's files in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePaths {
    /// The store directory, made absolute.
    pub store: PathBuf,
    /// `<store>/service.lock`.
    pub lock_file: PathBuf,
    /// `<store>/service.sock`, the socket's usual place.
    pub socket_file: PathBuf,
    /// `<store>/service.addr`, written only when the socket lives elsewhere.
    pub address_file: PathBuf,
    /// `<store>/service.log`.
    pub log_file: PathBuf,
}

impl ServicePaths {
    /// The paths for `store`. The store is canonicalized when it exists (else made absolute),
    /// so the service and every requester spell the socket path the same way, whatever their
    /// current directory or symlinks, and agree on whether it fits in `sun_path`.
    pub fn for_store(store: &Path) -> ServicePaths {
        let store = std::fs::canonicalize(store)
            .or_else(|_| std::path::absolute(store))
            .unwrap_or_else(|_| store.to_path_buf());
        ServicePaths {
            lock_file: store.join("service.lock"),
            socket_file: store.join("service.sock"),
            address_file: store.join("service.addr"),
            log_file: store.join("service.log"),
            store,
        }
    }

    /// Where a requester should connect: the path in `service.addr` when that file exists,
    /// else `service.sock`.
    pub fn socket_for_requesters(&self) -> PathBuf {
        match fs::read_to_string(&self.address_file) {
            Ok(recorded) if !recorded.trim().is_empty() => {
                PathBuf::from(recorded.trim_end_matches('\n'))
            }
            _ => self.socket_file.clone(),
        }
    }
}

/// Held by the server for its life: dropping it removes the address file (if any) and then
/// releases the store lock by closing the locked file.
pub(crate) struct StoreGuard {
    lock_file: File,
    address_file: Option<PathBuf>,
}

impl Drop for StoreGuard {
    fn drop(&mut self) {
        if let Some(address_file) = self.address_file.take() {
            let _ = fs::remove_file(address_file);
        }
        // Empty the pid so a reader never takes a dead service's pid for a live one; the lock
        // itself is released when `lock_file` closes right after.
        let _ = self.lock_file.set_len(0);
    }
}

/// Takes the store's lock without waiting. `AlreadyRunning` when another service holds it.
fn lock_store(paths: &ServicePaths) -> Result<File, TransportError> {
    let lock_error = |source| TransportError::Lock {
        path: paths.lock_file.clone(),
        source,
    };
    let mut lock_file = private_open_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&paths.lock_file)
        .map_err(lock_error)?;
    // SAFETY: flock on a descriptor we own; LOCK_NB makes it return at once.
    if unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            let mut recorded = String::new();
            let _ = lock_file.read_to_string(&mut recorded);
            return Err(TransportError::AlreadyRunning {
                store: paths.store.clone(),
                pid: recorded.trim().parse().ok(),
            });
        }
        return Err(lock_error(error));
    }
    lock_file.set_len(0).map_err(lock_error)?;
    lock_file.rewind().map_err(lock_error)?;
    writeln!(lock_file, "{}", std::process::id()).map_err(lock_error)?;
    Ok(lock_file)
}

/// Removes a socket file left by a dead service. Anything else at that path is refused rather
/// than deleted.
fn remove_if_stale_socket(path: &Path) -> Result<(), TransportError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => remove_stale_socket(path),
        Ok(_) => Err(TransportError::AddressInUse {
            path: path.to_path_buf(),
        }),
        Err(_) => Ok(()),
    }
}

/// A private directory for sockets whose store path is too long.
fn fallback_socket_directory() -> Result<PathBuf, TransportError> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let directory = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(runtime) if runtime.is_absolute() && runtime.is_dir() => runtime.join("diskshadow"),
        _ => std::env::temp_dir().join(format!("diskshadow-{uid}")),
    };
    // In a shared /tmp someone else could have made the directory first: use it only if it is
    // a real directory of ours that nobody else can use.
    crate::engine::store::ensure_private_directory(&directory, false).map_err(|source| {
        TransportError::SocketDirectory {
            path: directory.clone(),
            source,
        }
    })?;
    Ok(directory)
}

fn write_address_file(paths: &ServicePaths, socket: &Path) -> Result<(), TransportError> {
    let address_error = |source| TransportError::AddressFile {
        path: paths.address_file.clone(),
        source,
    };
    let temporary = paths.store.join("service.addr.tmp");
    let mut content = socket.as_os_str().as_encoded_bytes().to_vec();
    content.push(b'\n');
    let mut file = private_open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(address_error)?;
    file.write_all(&content).map_err(address_error)?;
    drop(file);
    fs::rename(&temporary, &paths.address_file).map_err(address_error)
}

/// Serves `handler` as the one service of `store`.
///
/// Creates the store directory if needed, takes `<store>/service.lock` (or fails with
/// [`TransportError::AlreadyRunning`]), opens `<store>/service.log` unless `options.log` is set,
/// removes stale sockets, and listens on `<store>/service.sock` (or a fallback recorded in
/// `service.addr`, see the module documentation). The lock is held until the server stopped.
pub fn serve_store<H: Handler>(
    store: &Path,
    handler: Arc<H>,
    mut options: ServerOptions,
) -> Result<ServerHandle, TransportError> {
    create_private_dir_all(store).map_err(|source| TransportError::StoreDirectory {
        path: store.to_path_buf(),
        source,
    })?;
    let paths = ServicePaths::for_store(store);
    let lock_file = lock_store(&paths)?;
    let store_mode = fs::metadata(&paths.store)
        .map(|metadata| metadata.mode() & 0o777)
        .unwrap_or(0);
    let log = match options.log.take() {
        Some(log) => log,
        None => Arc::new(ServiceLog::open(&paths.log_file)?),
    };
    options.log = Some(Arc::clone(&log));
    // A store made by an older version (or opened by its owner) is left as it is: its owner
    // may have opened it on purpose for the users of its allow list. Every file diskshadow
    // creates in it is 0600 anyway; the log says what others can see.
    if store_mode & 0o077 != 0 {
        log.write(&format!(
            "warning: the store directory {} has mode {store_mode:o}; other users can see the names in it (`chmod 700` it unless access.toml allows others)",
            paths.store.display()
        ));
    }

    // We hold the lock, so any socket named by this store is a dead service's.
    if let Ok(recorded) = fs::read_to_string(&paths.address_file) {
        let recorded = PathBuf::from(recorded.trim_end_matches('\n'));
        if recorded.as_os_str().len() <= MAX_SOCKET_PATH_BYTES
            && remove_if_stale_socket(&recorded).is_ok()
        {
            log.write(&format!("removed the stale socket {}", recorded.display()));
        }
        let _ = fs::remove_file(&paths.address_file);
    }
    if paths.socket_file.exists() {
        remove_if_stale_socket(&paths.socket_file)?;
        log.write(&format!(
            "removed the stale socket {}",
            paths.socket_file.display()
        ));
    }

    let (socket, address_file) = if check_socket_path_length(&paths.socket_file).is_ok() {
        (paths.socket_file.clone(), None)
    } else {
        let socket =
            fallback_socket_directory()?.join(format!("{}.sock", uuid::Uuid::new_v4().simple()));
        check_socket_path_length(&socket)?;
        (socket, Some(paths.address_file.clone()))
    };
    let guard = StoreGuard {
        lock_file,
        address_file: address_file.clone(),
    };
    let server = start_server(
        &socket,
        handler,
        options,
        Some(paths.store.clone()),
        Some(Box::new(guard)),
    )?;
    // Written after the bind, so a requester that finds the file finds a listening socket.
    if address_file.is_some() {
        if let Err(error) = write_address_file(&paths, &socket) {
            server.stop();
            drop(server);
            return Err(error);
        }
    }
    Ok(server)
}
