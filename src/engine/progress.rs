//! Progress of long work (revert, full copy, delete of large diff areas, transport), and the
//! request to stop it. The engine reports; the terminal decides whether and how to show it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Receives progress reports. Implementations must be cheap: `advance` is called per chunk.
///
/// The reporter also carries the requester's wish to stop ([`Progress::cancelled`]), so that
/// every long operation that reports progress can be stopped without one more parameter
/// through each layer and the provider seam. Long work asks only at points where stopping
/// leaves a state it can describe (between resync chunks, between pieces of a full copy);
/// work that cannot stop halfway (a revert) never asks.
pub trait Progress: Send + Sync {
    /// Work named `what` starts; `total` units (bytes or chunks) are expected.
    fn begin(&self, what: &str, total: u64);
    /// `units` more are done.
    fn advance(&self, units: u64);
    /// The work ended (successfully or not).
    fn finish(&self);
    /// True once the requester asked the work to stop at its next safe point.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Discards all reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _what: &str, _total: u64) {}
    fn advance(&self, _units: u64) {}
    fn finish(&self) {}
}

/// A request to stop long work at its next safe point. Clones share one flag: the service
/// keeps one clone to fire from another requester connection, the work's reporter another.
#[derive(Debug, Default, Clone)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop; it stops at its next safe point (or ends first).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The I/O error a copy returns when it stopped because it was asked to
/// ([`Progress::cancelled`]), so callers can tell a requested stop from a failure.
#[derive(Debug, thiserror::Error)]
#[error("stopped at the requester's request")]
pub struct Stopped;

impl Stopped {
    pub fn error() -> io::Error {
        io::Error::new(io::ErrorKind::Interrupted, Stopped)
    }

    /// Whether `error` is a requested stop.
    pub fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|inner| inner.is::<Stopped>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_fires_for_every_clone_and_stops_are_told_from_failures() {
        let token = CancelToken::new();
        let kept = token.clone();
        assert!(!kept.is_cancelled());
        token.cancel();
        assert!(kept.is_cancelled());
        assert!(Stopped::is(&Stopped::error()));
        assert!(!Stopped::is(&io::Error::new(
            io::ErrorKind::Interrupted,
            "signal"
        )));
        assert!(!NoProgress.cancelled());
    }
}
