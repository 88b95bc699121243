//! The accept loop: admits connections (access control), starts one session thread each,
//! runs the idle timer and the graceful stop.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::access::{peer_credentials, PeerCredentials};
use super::log::log_to;
use super::signals;
use super::wire::{write_frame, RemoteErrorKind};

use super::connection::{refusal, run_session};
use super::control::{
    Control, Handler, SessionId, Shared, StopReason, StoreGuard, STOP_GRACE_PERIOD,
};
use super::events::lock_ignoring_poison;

pub(super) struct AcceptLoop<H: Handler> {
    pub(super) shared: Arc<Shared<H>>,
    pub(super) listener: UnixListener,
    pub(super) wake_reader: UnixStream,
    pub(super) signal_fd: Option<RawFd>,
    pub(super) socket_identity: (u64, u64),
    pub(super) store_guard: Option<StoreGuard>,
    pub(super) session_threads: Vec<JoinHandle<()>>,
}

impl<H: Handler> AcceptLoop<H> {
    fn control(&self) -> &Control {
        &self.shared.control
    }

    /// How often the loop wakes to check the idle timer and the keep-alive: a tenth of the
    /// timeout, so an idle exit comes at most 10% late, between 10 ms and 1 s.
    fn tick(&self) -> Duration {
        match self.control().idle_timeout {
            Some(timeout) => {
                (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
            }
            None => Duration::from_secs(1),
        }
    }

    pub(super) fn run(mut self) -> StopReason {
        let reason = self.serve_until_stopped();
        self.shut_down(reason);
        reason
    }

    fn serve_until_stopped(&mut self) -> StopReason {
        let tick_milliseconds = i32::try_from(self.tick().as_millis()).unwrap_or(1000);
        loop {
            let mut descriptors = vec![
                libc::pollfd {
                    fd: self.listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake_reader.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if let Some(signal_fd) = self.signal_fd {
                descriptors.push(libc::pollfd {
                    fd: signal_fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // SAFETY: `descriptors` is a live array of initialized pollfd of the given length.
            let ready = unsafe {
                libc::poll(
                    descriptors.as_mut_ptr(),
                    descriptors.len() as libc::nfds_t,
                    tick_milliseconds,
                )
            };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    log_to(&self.control().log, &format!("poll failed: {error}"));
                    thread::sleep(Duration::from_millis(u64::from(
                        tick_milliseconds.unsigned_abs(),
                    )));
                }
            }
            if self.signal_fd.is_some() && signals::termination_requested() {
                return StopReason::TerminationSignal;
            }
            if descriptors[1].revents != 0 {
                let mut drained = [0u8; 64];
                while matches!((&self.wake_reader).read(&mut drained), Ok(count) if count > 0) {}
            }
            if self.stop_requested() {
                return StopReason::StopRequested;
            }
            if descriptors[0].revents != 0 {
                self.accept_pending();
            }
            self.session_threads.retain(|thread| !thread.is_finished());
            if self.idle_timeout_expired() {
                return StopReason::IdleTimeout;
            }
        }
    }

    fn accept_pending(&mut self) {
        loop {
            match self.listener.accept() {
                // A stop can be requested while this loop accepts (a stop request runs on its
                // session's thread). A connection taken after it is closed before the
                // greeting, so its requester starts a new service instead of getting a session
                // the stopping service cuts at once; what is still queued is closed unserved
                // by `shut_down`.
                Ok(_) if self.stop_requested() => return,
                Ok((stream, _)) => self.start_session(stream),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Resource exhaustion (EMFILE) or a connection reset before accept: log and
                    // let the next poll retry rather than stopping the service.
                    log_to(&self.control().log, &format!("accept failed: {error}"));
                    return;
                }
            }
        }
    }

    /// Refuses a peer the access control does not allow: an `access_denied` error frame
    /// instead of the greeting, then the connection is closed. Returns the peer's credentials
    /// when it is allowed. A refused connection never becomes a session.
    fn admit(&self, stream: &UnixStream) -> Option<PeerCredentials> {
        let control = self.control();
        let peer = match peer_credentials(stream) {
            Ok(peer) => peer,
            Err(error) => {
                log_to(
                    &control.log,
                    &format!("refused a connection whose peer is unknown: {error}"),
                );
                return None;
            }
        };
        let denied = match control.access.check(peer.uid) {
            Ok(()) => return Some(peer),
            Err(denied) => denied,
        };
        log_to(
            &control.log,
            &format!(
                "refused a connection of uid {} (pid {}): access denied{}",
                peer.uid,
                peer.pid,
                denied
                    .allow_list_problem
                    .as_deref()
                    .map(|problem| format!("; the allow list is not used: {problem}"))
                    .unwrap_or_default()
            ),
        );
        // A fresh connection's send buffer is empty, so this small write does not block the
        // accept loop; the timeout bounds it anyway.
        let mut writer = stream;
        let _ = writer.set_nonblocking(false);
        let _ = writer.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = write_frame(
            &mut writer,
            &refusal(RemoteErrorKind::AccessDenied, denied.message),
        );
        None
    }

    fn stop_requested(&self) -> bool {
        self.control().stop_requested.load(Ordering::SeqCst)
    }

    fn start_session(&mut self, stream: UnixStream) {
        let Some(peer) = self.admit(&stream) else {
            return;
        };
        let control = &self.shared.control;
        let registered = stream
            .set_nonblocking(false)
            .and_then(|()| stream.try_clone());
        let stop_handle = match registered {
            Ok(stop_handle) => stop_handle,
            Err(error) => {
                log_to(
                    &control.log,
                    &format!("cannot set up a new connection: {error}"),
                );
                return;
            }
        };
        let session = {
            let mut state = lock_ignoring_poison(&control.state);
            let session = SessionId(state.next_session);
            state.next_session += 1;
            state.sessions.insert(session, stop_handle);
            state.idle_since = None;
            session
        };
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name(format!("service-session-{}", session.0))
            .spawn(move || run_session(&shared, session, stream, peer));
        match spawned {
            Ok(thread) => self.session_threads.push(thread),
            Err(error) => {
                log_to(
                    &control.log,
                    &format!("cannot start a thread for {session}: {error}"),
                );
                let mut state = lock_ignoring_poison(&control.state);
                state.sessions.remove(&session);
                if state.sessions.is_empty() {
                    state.idle_since = Some(Instant::now());
                }
            }
        }
    }

    fn idle_timeout_expired(&self) -> bool {
        let Some(timeout) = self.control().idle_timeout else {
            return false;
        };
        // Ask the handler before taking our lock: the handler may be slow or take its own locks.
        let kept_alive = self.shared.handler.keeps_service_alive();
        let now = Instant::now();
        let mut state = lock_ignoring_poison(&self.control().state);
        if kept_alive || !state.sessions.is_empty() {
            state.idle_since = None;
            return false;
        }
        let idle_since = *state.idle_since.get_or_insert(now);
        now.duration_since(idle_since) >= timeout
    }

    fn shut_down(mut self, reason: StopReason) {
        let control = Arc::clone(&self.shared.control);
        log_to(&control.log, &format!("service stopping: {reason}"));
        // Unlink first, so new requesters fail to connect (and start a new service) instead of
        // queueing on a listener that will never accept them.
        let still_ours = std::fs::symlink_metadata(&control.socket_path)
            .map(|metadata| (metadata.dev(), metadata.ino()) == self.socket_identity)
            .unwrap_or(false);
        if still_ours {
            if let Err(error) = std::fs::remove_file(&control.socket_path) {
                log_to(&control.log, &format!("cannot remove the socket: {error}"));
            }
        }
        // Connections already queued are closed unserved; their requesters see the connection
        // close before the greeting and retry.
        while let Ok((stream, _)) = self.listener.accept() {
            drop(stream);
        }
        drop(self.listener);
        // Shutting the reading side lets a running request finish and deliver its response;
        // the session thread then reads end-of-stream and ends the session.
        for stream in lock_ignoring_poison(&control.state).sessions.values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        // A requester that stopped reading (suspended, say) could block a session thread in a
        // write forever. After a grace period, shut the writing side too, which fails that write.
        let grace_deadline = Instant::now() + STOP_GRACE_PERIOD;
        while self
            .session_threads
            .iter()
            .any(|thread| !thread.is_finished())
            && Instant::now() < grace_deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        for stream in lock_ignoring_poison(&control.state).sessions.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for thread in self.session_threads.drain(..) {
            if thread.join().is_err() {
                log_to(&control.log, "a session thread panicked");
            }
        }
        // Releasing the store lock comes last: until here the socket path is ours.
        drop(self.store_guard.take());
        log_to(&control.log, &format!("service stopped: {reason}"));
    }
}
