//! An open RBD image as a [`DurableFile`]: how the store's data path reads and writes an
//! `rbd:POOL/IMAGE` volume through librbd.
//!
//! - `sync_data` is `rbd_flush`: every completed write is then durable in the cluster.
//! - `next_data` / `next_hole` come from `rbd_diff_iterate2` (byte granularity, the parent's
//!   data included for a clone); `punch_hole` is `rbd_write_zeroes`, which zeroes exactly and
//!   deallocates what it can (a plain discard skips ranges smaller than librbd's granularity).
//! - An RBD image cannot be resized or stamped here: `set_len` and `set_modified` fail with
//!   `Unsupported` (the data path then keeps the fingerprint as it is).
//! - The fingerprint is the image's size and identity: `inode` is a hash of the image ID, so
//!   an image removed and created again under the same name is a different volume; its
//!   modification time is always 0, since RBD keeps none per write. Writes by other clients
//!   of the shared cluster are not detectable here (FORMAT.md, "Change detection").

use std::io;

use super::{Image, RbdError};
use crate::engine::store::backend::{DurableFile, FileFingerprint};

/// An open image (live, or at a snapshot when read-only) as a file.
pub struct RbdFile {
    image: Image,
    identity: u64,
}

impl std::fmt::Debug for RbdFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RbdFile")
            .field("image", &self.image)
            .finish()
    }
}

/// An [`RbdError`] as the `io::Error` the data path expects, keeping its errno and message.
pub fn io_error(error: RbdError) -> io::Error {
    match error.errno() {
        Some(errno) => io::Error::new(
            io::Error::from_raw_os_error(errno).kind(),
            error.to_string(),
        ),
        None => io::Error::new(io::ErrorKind::Unsupported, error.to_string()),
    }
}

impl RbdFile {
    pub fn new(image: Image) -> Result<RbdFile, RbdError> {
        let id = image.id()?;
        // FNV-1a: stable across processes and versions, unlike the standard hasher.
        let identity = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        Ok(RbdFile { image, identity })
    }

    /// The image.
    pub fn image(&self) -> &Image {
        &self.image
    }
}

impl DurableFile for RbdFile {
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        self.image.read_at(buffer, offset).map_err(io_error)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.image.write_at(data, offset).map_err(io_error)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.image.flush().map_err(io_error)
    }

    fn size(&self) -> io::Result<u64> {
        self.image.size().map_err(io_error)
    }

    fn set_len(&self, _length: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "RBD image {} cannot be resized by diskshadow",
                self.image.spec()
            ),
        ))
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        let size = self.size()?;
        if offset >= size {
            return Ok(None);
        }
        let extents = self
            .image
            .allocation(offset, size - offset)
            .map_err(io_error)?;
        Ok(extents.first().map(|extent| extent.offset.max(offset)))
    }

    fn next_hole(&self, offset: u64) -> io::Result<u64> {
        let size = self.size()?;
        if offset >= size {
            return Ok(offset);
        }
        let extents = self
            .image
            .allocation(offset, size - offset)
            .map_err(io_error)?;
        match extents.first() {
            Some(extent) if extent.offset <= offset => {
                Ok((extent.offset + extent.length).min(size))
            }
            _ => Ok(offset),
        }
    }

    fn fingerprint(&self) -> io::Result<FileFingerprint> {
        Ok(FileFingerprint {
            size: self.size()?,
            modified_ns: 0,
            inode: self.identity,
        })
    }

    fn punch_hole(&self, offset: u64, length: u64) -> io::Result<()> {
        self.image.write_zeroes(offset, length).map_err(io_error)
    }
}
