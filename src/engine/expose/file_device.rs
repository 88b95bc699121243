//! A [`BlockDevice`] over a plain file: what tests serve, and what anyone needs who wants to
//! expose an image file without going through a provider.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::device::{file_extents, BlockDevice, Extent};
use crate::engine::store::backend::{seek_data, seek_hole};

/// A fixed-size device backed by a file. Its size is the file's length when it was opened;
/// writes never grow it, exactly like a disk.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    size: u64,
    read_only: bool,
    /// How many times [`BlockDevice::flush`] reached this device. Tests use it to prove that a
    /// client's flush (NBD `FLUSH`, FUSE `fsync`) travelled all the way down.
    flush_count: AtomicU64,
    /// How many [`BlockDevice::write_at`] calls succeeded.
    write_count: AtomicU64,
}

impl FileDevice {
    /// Opens `path` as a device; `read_only` refuses every write with `PermissionDenied`.
    pub fn open(path: &Path, read_only: bool) -> io::Result<FileDevice> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let size = file.metadata()?.len();
        Ok(FileDevice {
            file,
            size,
            read_only,
            flush_count: AtomicU64::new(0),
            write_count: AtomicU64::new(0),
        })
    }

    /// How many flushes reached this device so far.
    pub fn flush_count(&self) -> u64 {
        self.flush_count.load(Ordering::SeqCst)
    }

    /// How many writes reached this device so far.
    pub fn write_count(&self) -> u64 {
        self.write_count.load(Ordering::SeqCst)
    }

    fn check_range(&self, offset: u64, length: usize, kind: io::ErrorKind) -> io::Result<()> {
        let end = offset.checked_add(length as u64);
        match end {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                kind,
                format!(
                    "range {offset}+{length} goes past the end of the {}-byte device",
                    self.size
                ),
            )),
        }
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.check_range(offset, buffer.len(), io::ErrorKind::UnexpectedEof)?;
        self.file.read_exact_at(buffer, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the device is read-only",
            ));
        }
        self.check_range(offset, data.len(), io::ErrorKind::InvalidInput)?;
        self.file.write_all_at(data, offset)?;
        self.write_count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        if !self.read_only {
            self.file.sync_data()?;
        }
        self.flush_count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn allocation(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
        let length = length.min(self.size.saturating_sub(offset));
        file_extents(
            offset,
            length,
            |at| seek_data(&self.file, at),
            |at| seek_hole(&self.file, at),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_refuses_past_the_end() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("disk.img");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let device = FileDevice::open(&path, false).unwrap();
        assert_eq!(device.size(), 8192);
        device.write_at(4096, b"hello").unwrap();
        let mut buffer = [0u8; 5];
        device.read_at(4096, &mut buffer).unwrap();
        assert_eq!(&buffer, b"hello");
        assert_eq!(
            device.read_at(8190, &mut buffer).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(device.write_at(8190, b"hello").is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
        device.flush().unwrap();
        assert_eq!(device.flush_count(), 1);
        assert_eq!(device.write_count(), 1);
    }

    #[test]
    fn read_only_device_refuses_writes() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("disk.img");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let device = FileDevice::open(&path, true).unwrap();
        assert!(device.is_read_only());
        assert_eq!(
            device.write_at(0, b"x").unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
    }
}
