//! Ctrl-C in the shell. SIGINT never kills diskshadow: it is noted, and each place that can
//! stop safely looks at the note. The step prompt aborts the writers' sequence (every frozen
//! writer still gets its abort); a request the service offered as stoppable (a resync, the
//! full copies after thaw) is asked to stop at its next safe point, and answers with the
//! state it left; a script stops at the end of the running command; the REPL returns to its
//! prompt. Work that cannot be stopped halfway (a revert once begun) goes on, and the shell
//! says so. Children run by `exec` share the terminal's process group, so they
//! get the signal themselves and end as they choose.

use std::sync::atomic::{AtomicBool, Ordering};

static PENDING: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_signal: libc::c_int) {
    // Only an atomic store: nothing else is async-signal-safe here.
    PENDING.store(true, Ordering::SeqCst);
}

/// Replaces SIGINT's default (terminate) with noting it. Without SA_RESTART, so a blocking
/// wait for an answer at the step prompt wakes up.
pub fn install() {
    // SAFETY: a zeroed sigaction with a handler that only stores an atomic is valid; sigaction
    // and sigemptyset have no other preconditions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = note_interrupt as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = 0;
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

/// Whether Ctrl-C was pressed since the last [`take`].
pub fn pending() -> bool {
    PENDING.load(Ordering::SeqCst)
}

/// Whether Ctrl-C was pressed, clearing the note.
pub fn take() -> bool {
    PENDING.swap(false, Ordering::SeqCst)
}

/// What ended a wait for input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Standard input has something to read (or is at its end).
    Ready,
    Interrupted,
    TimedOut,
}

/// Waits until standard input has a line to read, Ctrl-C is pressed, or `deadline` passes.
pub fn wait_for_input(deadline: Option<std::time::Instant>) -> Waited {
    loop {
        if pending() {
            return Waited::Interrupted;
        }
        if deadline.is_some_and(|deadline| std::time::Instant::now() >= deadline) {
            return Waited::TimedOut;
        }
        let mut poll = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, its count, a timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, 100) };
        if ready > 0 {
            return Waited::Ready;
        }
        if ready < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // poll itself failed: let the read report what is wrong.
            return Waited::Ready;
        }
    }
}
