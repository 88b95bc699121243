//! A byte-addressed device: what exposure (FUSE, NBD) and `volume read|write` serve.
//! The engine implements it for shadow copies (read-only) and live volumes (every write passes
//! the provider); tests implement it over plain files.

use std::io;

/// A fixed-size, byte-addressed device. Implementations are shared between threads.
pub trait BlockDevice: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Fills all of `buffer` from `offset`. Reading past the end is an
    /// `io::ErrorKind::UnexpectedEof` error; callers clamp to [`BlockDevice::size`].
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()>;

    /// Writes all of `data` at `offset`. Read-only devices answer
    /// `io::ErrorKind::PermissionDenied`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;

    /// True when every write is refused.
    fn is_read_only(&self) -> bool;
}
