//! An NBD server for one device, written to the NBD protocol (fixed newstyle negotiation,
//! simple or structured replies, the `base:allocation` meta context answered from the device's
//! map, [`crate::engine::device::BlockDevice::allocation`]): any NBD client (qemu-img, qemu-io, nbdcopy, nbdinfo, nbd-client) can read a
//! shadow copy or read and write a live volume through it.
//!
//! Each export listens on a Unix socket or a loopback TCP port and serves every client on its own
//! thread; a client's changes run in order on one worker and its reads on a few more, so
//! requests in flight overlap (replies carry the cookie and may leave out of order). There is no authentication, which is why TCP is refused on anything but loopback.
//!
//! **Invariant:** once [`NbdExport::stop`] returns (or the export is dropped), nothing listens,
//! every client connection is closed and its thread has ended, and the socket file this export
//! created is gone.

mod connection;
mod protocol;

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use thiserror::Error;

use crate::engine::device::BlockDevice;
use crate::engine::vss::VssCode;
use connection::{serve_client, ExportSpec};

/// Where an export listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdListener {
    /// A Unix socket created at this path (it must not exist, or be a stale socket nobody
    /// listens on).
    Unix(PathBuf),
    /// A TCP port on a loopback address; port 0 picks a free port.
    Tcp(SocketAddr),
}

/// Why an export could not be started.
#[derive(Debug, Error)]
pub enum NbdError {
    #[error("the export name is empty or longer than 4096 bytes")]
    InvalidExportName,
    #[error("the device is read-only and cannot be exported read-write")]
    DeviceIsReadOnly,
    #[error("NBD exports have no authentication, so they listen on loopback only; {address} is not a loopback address (use 127.0.0.1 or ::1)")]
    NotLoopback { address: SocketAddr },
    #[error("{path} is already in use by a listening server")]
    SocketInUse { path: PathBuf },
    #[error("{path} exists and is not a socket")]
    PathIsNotASocket { path: PathBuf },
    #[error("cannot listen on {location}: {source}")]
    Listen {
        location: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the NBD accept thread: {0}")]
    Thread(#[source] io::Error),
}

impl NbdError {
    /// The VSS failure this corresponds to.
    pub fn vss_code(&self) -> VssCode {
        match self {
            NbdError::SocketInUse { .. } | NbdError::PathIsNotASocket { .. } => {
                VssCode::VSS_E_OBJECT_ALREADY_EXISTS
            }
            NbdError::InvalidExportName
            | NbdError::NotLoopback { .. }
            | NbdError::DeviceIsReadOnly => VssCode::VSS_E_NOT_SUPPORTED,
            NbdError::Listen { .. } | NbdError::Thread(_) => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

/// A running export. Dropping it stops it, as [`NbdExport::stop`] does.
pub struct NbdExport {
    url: String,
    export_name: String,
    location: BoundLocation,
    shared: Arc<ServerShared>,
    accept_thread: Option<JoinHandle<()>>,
    /// Writing a byte here wakes the accept thread so that it notices `stopping`.
    waker: UnixStream,
}

#[derive(Debug, Clone)]
enum BoundLocation {
    Unix {
        path: PathBuf,
        device: u64,
        inode: u64,
    },
    Tcp(SocketAddr),
}

/// A client connection, kept so that stopping the export can close it under its thread.
enum ClientSocket {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl ClientSocket {
    fn shutdown(&self) {
        // The peer may already be gone; closing is all that matters here.
        let _ = match self {
            ClientSocket::Unix(stream) => stream.shutdown(Shutdown::Both),
            ClientSocket::Tcp(stream) => stream.shutdown(Shutdown::Both),
        };
    }
}

struct ServerShared {
    export: ExportSpec,
    stopping: AtomicBool,
    clients: Mutex<Clients>,
}

#[derive(Default)]
struct Clients {
    next_id: u64,
    sockets: HashMap<u64, ClientSocket>,
    threads: Vec<JoinHandle<()>>,
}

enum Listening {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Starts serving `device` as `export_name`. `read_only` exports refuse writes with `EPERM`.
pub fn serve_nbd(
    device: Arc<dyn BlockDevice>,
    export_name: &str,
    listener: NbdListener,
    read_only: bool,
) -> Result<NbdExport, NbdError> {
    if export_name.is_empty() || export_name.len() > 4096 {
        return Err(NbdError::InvalidExportName);
    }
    if !read_only && device.is_read_only() {
        return Err(NbdError::DeviceIsReadOnly);
    }
    let (listening, location) = bind(&listener)?;
    let url = match &location {
        BoundLocation::Unix { path, .. } => {
            format!(
                "nbd+unix:///{}?socket={}",
                percent_encode(export_name),
                path.display()
            )
        }
        BoundLocation::Tcp(address) => format!("nbd://{address}/{}", percent_encode(export_name)),
    };
    let (waker, wakee) = UnixStream::pair().map_err(NbdError::Thread)?;
    let shared = Arc::new(ServerShared {
        export: ExportSpec {
            device,
            name: export_name.to_string(),
            read_only,
        },
        stopping: AtomicBool::new(false),
        clients: Mutex::new(Clients::default()),
    });
    let thread_shared = Arc::clone(&shared);
    let accept_thread = thread::Builder::new()
        .name(format!("nbd-accept-{export_name}"))
        .spawn(move || accept_loop(listening, wakee, thread_shared))
        .map_err(NbdError::Thread)?;
    Ok(NbdExport {
        url,
        export_name: export_name.to_string(),
        location,
        shared,
        accept_thread: Some(accept_thread),
        waker,
    })
}

impl NbdExport {
    /// The NBD URI clients connect to: `nbd+unix:///name?socket=/path` or
    /// `nbd://127.0.0.1:port/name`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The export name clients ask for.
    pub fn export_name(&self) -> &str {
        &self.export_name
    }

    /// The Unix socket path, for Unix-socket exports.
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.location {
            BoundLocation::Unix { path, .. } => Some(path),
            BoundLocation::Tcp(_) => None,
        }
    }

    /// The bound TCP address (with the real port when port 0 was asked), for TCP exports.
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        match &self.location {
            BoundLocation::Tcp(address) => Some(*address),
            BoundLocation::Unix { .. } => None,
        }
    }

    /// How many clients are connected right now.
    pub fn connected_clients(&self) -> usize {
        self.shared
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sockets
            .len()
    }

    /// Stops accepting, disconnects every client, waits for their threads and removes the socket
    /// file.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // If the write fails the accept thread has already ended, which is what we want.
        let _ = io::Write::write_all(&mut self.waker, &[1]);
        let _ = accept_thread.join();

        let threads = {
            let mut clients = self
                .shared
                .clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for socket in clients.sockets.values() {
                socket.shutdown();
            }
            std::mem::take(&mut clients.threads)
        };
        for thread in threads {
            let _ = thread.join();
        }

        if let BoundLocation::Unix {
            path,
            device,
            inode,
        } = &self.location
        {
            // Only remove the file we created: another export may have replaced it since.
            if let Ok(metadata) = std::fs::symlink_metadata(path) {
                if metadata.dev() == *device && metadata.ino() == *inode {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

impl Drop for NbdExport {
    fn drop(&mut self) {
        self.stop_now();
    }
}

impl std::fmt::Debug for NbdExport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NbdExport")
            .field("url", &self.url)
            .field("read_only", &self.shared.export.read_only)
            .finish()
    }
}

fn bind(listener: &NbdListener) -> Result<(Listening, BoundLocation), NbdError> {
    match listener {
        NbdListener::Tcp(address) => {
            if !address.ip().is_loopback() {
                return Err(NbdError::NotLoopback { address: *address });
            }
            let tcp = TcpListener::bind(address).map_err(|source| NbdError::Listen {
                location: address.to_string(),
                source,
            })?;
            let bound = tcp.local_addr().map_err(|source| NbdError::Listen {
                location: address.to_string(),
                source,
            })?;
            Ok((Listening::Tcp(tcp), BoundLocation::Tcp(bound)))
        }
        NbdListener::Unix(path) => {
            remove_stale_socket(path)?;
            let listen_error = |source| NbdError::Listen {
                location: path.display().to_string(),
                source,
            };
            // NBD has no authentication: the socket's mode (0600) is what keeps other users out.
            let unix =
                crate::engine::store::bind_private_socket(path, 0o600).map_err(listen_error)?;
            let metadata = std::fs::symlink_metadata(path).map_err(listen_error)?;
            Ok((
                Listening::Unix(unix),
                BoundLocation::Unix {
                    path: path.clone(),
                    device: metadata.dev(),
                    inode: metadata.ino(),
                },
            ))
        }
    }
}

/// A socket file left by a crashed server is replaced; a live one, or any other file, is not.
fn remove_stale_socket(path: &Path) -> Result<(), NbdError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(NbdError::Listen {
                location: path.display().to_string(),
                source,
            })
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(NbdError::PathIsNotASocket {
            path: path.to_path_buf(),
        });
    }
    if super::stale::socket_is_live(path) {
        return Err(NbdError::SocketInUse {
            path: path.to_path_buf(),
        });
    }
    std::fs::remove_file(path).map_err(|source| NbdError::Listen {
        location: path.display().to_string(),
        source,
    })
}

fn accept_loop(listening: Listening, wakee: UnixStream, shared: Arc<ServerShared>) {
    loop {
        if !wait_readable(&listening, &wakee) || shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let accepted = match &listening {
            Listening::Unix(listener) => listener.accept().and_then(|(stream, _)| {
                let kept = stream.try_clone()?;
                Ok((ClientConnection::Unix(stream), ClientSocket::Unix(kept)))
            }),
            Listening::Tcp(listener) => listener.accept().and_then(|(stream, _)| {
                // Replies are a header then data; without NODELAY the data waits for an ACK.
                stream.set_nodelay(true)?;
                let kept = stream.try_clone()?;
                Ok((ClientConnection::Tcp(stream), ClientSocket::Tcp(kept)))
            }),
        };
        let (connection, socket) = match accepted {
            Ok(pair) => pair,
            // A client that vanished between connect and accept, or a transient shortage of file
            // descriptors, must not end the export; the pause keeps a persistent failure from
            // spinning.
            Err(_) => {
                thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        let mut clients = shared
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        clients.threads.retain(|thread| !thread.is_finished());
        let client_id = clients.next_id;
        clients.next_id += 1;
        clients.sockets.insert(client_id, socket);
        let thread_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("nbd-client-{client_id}"))
            .spawn(move || {
                // Errors end this connection only: the client sees its socket close.
                let _ = match connection {
                    ClientConnection::Unix(mut stream) => {
                        serve_client(&mut stream, &thread_shared.export)
                    }
                    ClientConnection::Tcp(mut stream) => {
                        serve_client(&mut stream, &thread_shared.export)
                    }
                };
                thread_shared
                    .clients
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .sockets
                    .remove(&client_id);
            });
        match spawned {
            Ok(thread) => clients.threads.push(thread),
            Err(_) => {
                if let Some(socket) = clients.sockets.remove(&client_id) {
                    socket.shutdown();
                }
            }
        }
    }
}

enum ClientConnection {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Waits until a client is waiting to be accepted (true) or the waker fired or polling failed
/// (false).
fn wait_readable(listening: &Listening, wakee: &UnixStream) -> bool {
    let listener_fd = match listening {
        Listening::Unix(listener) => listener.as_fd().as_raw_fd(),
        Listening::Tcp(listener) => listener.as_fd().as_raw_fd(),
    };
    let mut fds = [
        libc::pollfd {
            fd: listener_fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wakee.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd structures for the duration of the call,
        // and both descriptors stay open because their owners outlive this call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        return fds[0].revents & libc::POLLIN != 0;
    }
}

/// Encodes an export name for the path of an NBD URI (RFC 3986 unreserved characters pass).
fn percent_encode(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names_are_percent_encoded_in_urls() {
        assert_eq!(percent_encode("shadow-1"), "shadow-1");
        assert_eq!(percent_encode("{ab cd}"), "%7Bab%20cd%7D");
    }
}
