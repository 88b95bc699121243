//! The write stamp of a live image: a durable promise "diskshadow may write this image until
//! time T". It closes the gap the write mark leaves (FORMAT.md, "Change detection"): the
//! kernel stamps an unmarked mtime the moment a write begins, so a service killed during one of
//! its own writes, before it could mark the time, leaves an unmarked mtime that would
//! otherwise make every shadow suspect. After such a crash, an unmarked mtime no later than the
//! stamp is diskshadow's own write; a later one is someone else's.
//!
//! Before each write, flush or drain reaches the image, the stamp is moved to now + 2 s when
//! less than 0.5 s of it is left, and made durable first: one small synced write at most every
//! 1.5 s while writes go on, none while they do not. The cost is a blind window: a change made
//! by someone else within 2 s after the service died mid-write is taken for diskshadow's own.
//!
//! Times are the kernel's real clock, as file times are, not the engine's injected clock: the
//! stamp is only ever compared with modification times the kernel wrote.
//!
//! File `write-stamp` in the volume's diff directory: 16 bytes, the stamp in nanoseconds since
//! the Unix epoch (i128 little-endian), then its CRC-32 (4 bytes, little-endian). A missing or
//! damaged file is no stamp (recovery is then as conservative as before).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::store::{DurableBackend, DurableFile};

/// How far ahead a stamp reaches.
pub const STAMP_REACH_NS: i128 = 2_000_000_000;
/// A stamp with less than this left is moved before the next write.
const STAMP_RENEW_NS: i128 = 500_000_000;
const STAMP_BYTES: usize = 20;

pub struct WriteStamp {
    /// `None` on a read-only open of a store that has no stamp file (nothing is created).
    file: Option<Arc<dyn DurableFile>>,
    /// The stamp on disk (durable), if any.
    until_ns: Option<i128>,
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i128)
}

impl WriteStamp {
    /// Opens (creating it unless `read_only`) the stamp of the diff area `diff_dir`.
    pub fn open(
        backend: &Arc<dyn DurableBackend>,
        diff_dir: &Path,
        read_only: bool,
    ) -> io::Result<WriteStamp> {
        let path = diff_dir.join("write-stamp");
        let existed = path.exists();
        let file = match (read_only, existed) {
            (true, false) => {
                return Ok(WriteStamp {
                    file: None,
                    until_ns: None,
                })
            }
            (true, true) => backend.open_file_read_only(&path)?,
            (false, _) => backend.open_file(&path, true)?,
        };
        if !existed {
            backend.sync_dir(diff_dir)?;
        }
        let mut bytes = [0u8; STAMP_BYTES];
        let until_ns = match file.read_at(0, &mut bytes) {
            Ok(STAMP_BYTES) => {
                let stamp: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
                let crc = u32::from_le_bytes(bytes[16..].try_into().expect("4 bytes"));
                (crc32fast::hash(&stamp) == crc).then(|| i128::from_le_bytes(stamp))
            }
            _ => None,
        };
        Ok(WriteStamp {
            file: Some(file),
            until_ns,
        })
    }

    /// The durable stamp: diskshadow promised to write the image no later than this.
    pub fn until_ns(&self) -> Option<i128> {
        self.until_ns
    }

    /// Makes sure the durable stamp covers a write starting now; syncs only when it must move.
    pub fn cover_write(&mut self) -> io::Result<()> {
        let now = now_ns();
        if self
            .until_ns
            .is_some_and(|until| now + STAMP_RENEW_NS <= until)
        {
            return Ok(());
        }
        let until = now + STAMP_REACH_NS;
        let stamp = until.to_le_bytes();
        let mut bytes = [0u8; STAMP_BYTES];
        bytes[..16].copy_from_slice(&stamp);
        bytes[16..].copy_from_slice(&crc32fast::hash(&stamp).to_le_bytes());
        let file = self.file.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the store was opened read-only",
            )
        })?;
        file.write_at(0, &bytes)?;
        file.sync_data()?;
        self.until_ns = Some(until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::RealBackend;

    #[test]
    fn a_stamp_is_durable_reaches_ahead_and_is_renewed_only_when_short() {
        let directory = tempfile::tempdir().expect("tempdir");
        let backend: Arc<dyn DurableBackend> = Arc::new(RealBackend);
        let mut stamp = WriteStamp::open(&backend, directory.path(), false).expect("open");
        assert_eq!(stamp.until_ns(), None);
        let before = now_ns();
        stamp.cover_write().expect("cover");
        let first = stamp.until_ns().expect("stamped");
        assert!(first >= before + STAMP_REACH_NS);
        stamp.cover_write().expect("cover again");
        assert_eq!(
            stamp.until_ns(),
            Some(first),
            "not renewed while far from its end"
        );
        let reopened = WriteStamp::open(&backend, directory.path(), false).expect("reopen");
        assert_eq!(reopened.until_ns(), Some(first));
    }

    #[test]
    fn a_damaged_stamp_is_no_stamp() {
        let directory = tempfile::tempdir().expect("tempdir");
        std::fs::write(directory.path().join("write-stamp"), [7u8; STAMP_BYTES]).expect("write");
        let backend: Arc<dyn DurableBackend> = Arc::new(RealBackend);
        assert_eq!(
            WriteStamp::open(&backend, directory.path(), false)
                .expect("open")
                .until_ns(),
            None
        );
    }
}
