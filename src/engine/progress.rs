//! Progress of long work (revert, full copy, delete of large diff areas, transport).
//! The engine reports; the terminal decides whether and how to show it.

/// Receives progress reports. Implementations must be cheap: `advance` is called per chunk.
pub trait Progress: Send + Sync {
    /// Work named `what` starts; `total` units (bytes or chunks) are expected.
    fn begin(&self, what: &str, total: u64);
    /// `units` more are done.
    fn advance(&self, units: u64);
    /// The work ended (successfully or not).
    fn finish(&self);
}

/// Discards all reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _what: &str, _total: u64) {}
    fn advance(&self, _units: u64) {}
    fn finish(&self) {}
}
