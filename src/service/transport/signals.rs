//! SIGTERM and SIGINT turn into a graceful stop, through a self-pipe; SIGPIPE is ignored.
//!
//! The handler only does async-signal-safe things: it sets a flag and writes one byte to a
//! pipe. Every server that asked for signal handling polls the pipe's read end and checks the
//! flag. The byte is never drained, so the pipe stays readable and all such servers in the
//! process see the request; termination is not something to undo.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

use super::error::TransportError;

static TERMINATION_REQUESTED: AtomicBool = AtomicBool::new(false);
static PIPE_WRITE_END: AtomicI32 = AtomicI32::new(-1);
static PIPE_READ_END: OnceLock<Result<RawFd, i32>> = OnceLock::new();

extern "C" fn on_termination_signal(_signal: libc::c_int) {
    TERMINATION_REQUESTED.store(true, Ordering::SeqCst);
    let write_end = PIPE_WRITE_END.load(Ordering::SeqCst);
    if write_end >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a live local byte.
        unsafe {
            libc::write(write_end, (&byte as *const u8).cast(), 1);
        }
    }
}

/// Installs the handlers once per process and returns the pipe's read end to poll.
pub(crate) fn install_termination_handler() -> Result<RawFd, TransportError> {
    let installed = PIPE_READ_END.get_or_init(|| {
        let mut ends = [-1 as RawFd; 2];
        // SAFETY: `ends` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        PIPE_WRITE_END.store(ends[1], Ordering::SeqCst);
        let handler = on_termination_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        for signal in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: the handler is an `extern "C"` function that only touches atomics and
            // calls write(2).
            if unsafe { libc::signal(signal, handler) } == libc::SIG_ERR {
                return Err(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINVAL));
            }
        }
        // A requester killed mid-response must cost the service an EPIPE on that connection,
        // never its life: SIGPIPE's default action would end the whole process.
        // SAFETY: SIG_IGN is always a valid disposition for SIGPIPE.
        if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL));
        }
        Ok(ends[0])
    });
    (*installed).map_err(|errno| TransportError::ServerSetup {
        action: "install its SIGTERM handler",
        source: io::Error::from_raw_os_error(errno),
    })
}

/// True once SIGTERM or SIGINT arrived (after [`install_termination_handler`]).
pub(crate) fn termination_requested() -> bool {
    TERMINATION_REQUESTED.load(Ordering::SeqCst)
}
