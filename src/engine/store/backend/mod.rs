//! The one door for durable I/O. Every byte the engine must keep (catalog, diff areas, index
//! logs, live volume writes) goes through [`DurableBackend`] and [`DurableFile`], so that tests
//! can replace the disk with [`FaultBackend`], which simulates a power loss at any sync point.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod fault;

pub use fault::{CrashMode, FaultBackend};

/// What identifies one state of an image file: if any field differs from what diskshadow
/// recorded after its own last write, someone else changed the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub modified_ns: i128,
    pub inode: u64,
}

/// The nanoseconds field diskshadow gives an image's modification time after each of its own
/// writes (a multiple of 1 µs, so file systems with µs or 100 ns timestamps keep it). The
/// kernel stamps a write with the current time, so an image whose mtime carries this mark was
/// last changed by diskshadow (or by nobody since); any other writer leaves a time without it
/// (a chance of about one in a million on µs file systems, one in 10^9 on ns ones). This is
/// what lets open-time recovery tell diskshadow's own interrupted writes from a change made
/// while the service was down (FORMAT.md, "Change detection").
pub const WRITE_MARK_NS: i128 = 31_416_000;

impl FileFingerprint {
    /// Whether the modification time carries diskshadow's write mark.
    pub fn is_write_marked(&self) -> bool {
        self.modified_ns.rem_euclid(1_000_000_000) == WRITE_MARK_NS
    }

    /// The marked modification time in the same second as this one.
    pub fn write_marked_ns(&self) -> i128 {
        self.modified_ns.div_euclid(1_000_000_000) * 1_000_000_000 + WRITE_MARK_NS
    }

    fn from_metadata(metadata: &std::fs::Metadata) -> Self {
        Self {
            size: metadata.len(),
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
            inode: metadata.ino(),
        }
    }

    /// A sentence naming what differs between `self` (recorded) and `current`.
    pub fn describe_change(&self, current: &FileFingerprint) -> String {
        let mut parts = Vec::new();
        if self.size != current.size {
            parts.push(format!(
                "size changed from {} to {} bytes",
                self.size, current.size
            ));
        }
        if self.inode != current.inode {
            parts.push(format!(
                "the file was replaced (inode {} is now {})",
                self.inode, current.inode
            ));
        }
        if self.modified_ns != current.modified_ns {
            parts.push("modification time changed".to_string());
        }
        format!(
            "the image was changed outside diskshadow: {}",
            parts.join(", ")
        )
    }
}

/// An open file. Offsets are absolute; there is no file position.
pub trait DurableFile: Send + Sync {
    /// Reads up to `buffer.len()` bytes; fewer only at end of file.
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data`. Not durable until [`DurableFile::sync_data`].
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// A sync point: every completed write to this file becomes durable.
    fn sync_data(&self) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    fn set_len(&self, length: u64) -> io::Result<()>;
    /// The first offset at or after `offset` that holds data (`SEEK_DATA`), `None` when only a
    /// hole follows. Used to skip copying never-written chunks.
    fn next_data(&self, offset: u64) -> io::Result<Option<u64>>;
    fn fingerprint(&self) -> io::Result<FileFingerprint>;

    /// Sets the modification time (nanoseconds since the Unix epoch), leaving the access time.
    /// Used to put diskshadow's write mark on a live image (see [`WRITE_MARK_NS`]).
    fn set_modified(&self, _modified_ns: i128) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this file cannot have its modification time set",
        ))
    }

    /// The first offset at or after `offset` that is in a hole (`SEEK_HOLE`); the end of the
    /// file counts as one. The default, for files that cannot tell, is the end of the file:
    /// everything before it is data, which is always a correct answer.
    fn next_hole(&self, offset: u64) -> io::Result<u64> {
        Ok(self.size()?.max(offset))
    }

    /// Starts writing dirty data back to the disk without waiting; not a sync point (nothing
    /// becomes durable until `sync_data`). Lets the write-back overlap other work.
    fn start_writeback(&self) -> io::Result<()> {
        Ok(())
    }

    /// Tells the kernel that `[offset, offset + length)` will not be read soon, so its cached
    /// pages can be freed once clean (`POSIX_FADV_DONTNEED`); not a sync point and never loses
    /// data (dirty pages are only written back, not dropped). Used for preserved copies that
    /// were just synced: they are cold, and recycling their pages at once keeps the next
    /// copies from paying for fresh memory.
    fn drop_cached(&self, _offset: u64, _length: u64) -> io::Result<()> {
        Ok(())
    }

    /// Makes `target` a reflink clone of this whole file (`FICLONE`), sharing its blocks.
    /// `Ok(false)` where the file system cannot; the caller then copies.
    fn clone_to(&self, _target: &dyn DurableFile) -> io::Result<bool> {
        Ok(false)
    }

    /// Makes `[offset, offset + length)` read as zeros and frees its storage where the file
    /// system can (`FALLOC_FL_PUNCH_HOLE`); the size never changes. Not durable until
    /// [`DurableFile::sync_data`]. The default writes zeros, which is always correct.
    fn punch_hole(&self, offset: u64, length: u64) -> io::Result<()> {
        write_zeros(self, offset, length)
    }

    /// The descriptor, where the file is a plain open file (lets copies stay in the kernel).
    fn raw_descriptor(&self) -> Option<RawFd> {
        None
    }

    /// Copies `length` bytes at `source_offset` to `target_offset` of `target`; bytes past the
    /// end of this file copy as zeros. Not durable until `target` is synced.
    fn copy_to(
        &self,
        source_offset: u64,
        target: &dyn DurableFile,
        target_offset: u64,
        length: u64,
    ) -> io::Result<()> {
        copy_through_buffer(self, source_offset, target, target_offset, length)
    }

    /// Fills `buffer` completely, treating bytes past the end of file as zeros.
    fn read_exact_or_zero(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buffer.len() {
            let read = self.read_at(offset + done as u64, &mut buffer[done..])?;
            if read == 0 {
                buffer[done..].fill(0);
                break;
            }
            done += read;
        }
        Ok(())
    }
}

fn write_zeros<F: DurableFile + ?Sized>(file: &F, offset: u64, length: u64) -> io::Result<()> {
    let zeros = vec![0u8; length.min(1 << 20) as usize];
    let mut done = 0u64;
    while done < length {
        let step = (length - done).min(zeros.len() as u64) as usize;
        file.write_at(offset + done, &zeros[..step])?;
        done += step as u64;
    }
    Ok(())
}

fn copy_through_buffer<F: DurableFile + ?Sized>(
    source: &F,
    source_offset: u64,
    target: &dyn DurableFile,
    target_offset: u64,
    length: u64,
) -> io::Result<()> {
    let mut buffer = vec![0u8; length.min(1 << 20) as usize];
    let mut done = 0u64;
    while done < length {
        let step = (length - done).min(buffer.len() as u64) as usize;
        source.read_exact_or_zero(source_offset + done, &mut buffer[..step])?;
        target.write_at(target_offset + done, &buffer[..step])?;
        done += step as u64;
    }
    Ok(())
}

/// `futimens` with the access time left alone.
fn set_modified_time(file: &File, modified_ns: i128) -> io::Result<()> {
    let seconds = libc::time_t::try_from(modified_ns.div_euclid(1_000_000_000))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "time out of range"))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: seconds,
            tv_nsec: modified_ns.rem_euclid(1_000_000_000) as libc::c_long,
        },
    ];
    // SAFETY: futimens reads two timespecs from a live array; the descriptor is ours.
    let result = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The first hole at or after `offset` (`SEEK_HOLE`; the end of the file is one). Past the end
/// it answers `offset`; file systems without `SEEK_HOLE` answer the end of the file.
pub fn seek_hole(file: &File, offset: u64) -> io::Result<u64> {
    let Ok(signed_offset) = libc::off_t::try_from(offset) else {
        return Ok(offset);
    };
    // SAFETY: lseek on a descriptor the caller owns; it does not touch memory.
    let result = unsafe { libc::lseek(file.as_raw_fd(), signed_offset, libc::SEEK_HOLE) };
    if result < 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENXIO) => Ok(offset),
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(file.metadata()?.len().max(offset)),
            _ => Err(error),
        };
    }
    Ok(result as u64)
}

/// The first data at or after `offset` (`SEEK_DATA`), `None` when only a hole follows. File
/// systems without `SEEK_DATA` answer `offset` (data everywhere).
pub fn seek_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    let Ok(signed_offset) = libc::off_t::try_from(offset) else {
        return Ok(None);
    };
    // SAFETY: lseek on a descriptor the caller owns; it does not touch memory.
    let result = unsafe { libc::lseek(file.as_raw_fd(), signed_offset, libc::SEEK_DATA) };
    if result < 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some(offset)),
            _ => Err(error),
        };
    }
    Ok(Some(result as u64))
}

/// File-system operations that must be ordered and made durable explicitly.
pub trait DurableBackend: Send + Sync {
    /// Opens `path` read-write; creates it (empty, mode 0600) when `create` is set and it is
    /// missing.
    /// A newly created file's name is durable only after [`DurableBackend::sync_dir`] of its
    /// directory.
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DurableFile>>;
    /// Opens an existing `path` for reading only (`check-store`, which changes nothing).
    fn open_file_read_only(&self, path: &Path) -> io::Result<Arc<dyn DurableFile>> {
        self.open_file(path, false)
    }
    /// Replaces `to` by `from` atomically; durable after `sync_dir` of the directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// A sync point: names created, renamed or removed in `dir` become durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates `dir` and its missing parents, private to the owner (0700).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// The real disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealBackend;

struct RealFile {
    file: File,
}

impl DurableFile for RealFile {
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read_at(buffer, offset) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        self.file.set_len(length)
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        let Ok(signed_offset) = libc::off_t::try_from(offset) else {
            return Ok(None);
        };
        // SAFETY: lseek on a descriptor we own; it does not touch memory.
        let result = unsafe { libc::lseek(self.file.as_raw_fd(), signed_offset, libc::SEEK_DATA) };
        if result < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENXIO) => Ok(None),
                // File systems without SEEK_DATA: report data everywhere (always copy).
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some(offset)),
                _ => Err(error),
            };
        }
        Ok(Some(result as u64))
    }

    fn next_hole(&self, offset: u64) -> io::Result<u64> {
        seek_hole(&self.file, offset)
    }

    fn punch_hole(&self, offset: u64, length: u64) -> io::Result<()> {
        if length == 0 {
            return Ok(());
        }
        let (Ok(start), Ok(span)) = (libc::off_t::try_from(offset), libc::off_t::try_from(length))
        else {
            return write_zeros(self, offset, length);
        };
        // SAFETY: fallocate on a descriptor we own; it does not touch memory.
        let result = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                start,
                span,
            )
        };
        if result == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            // File systems without hole punching get zeros written.
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => write_zeros(self, offset, length),
            _ => Err(error),
        }
    }

    fn fingerprint(&self) -> io::Result<FileFingerprint> {
        Ok(FileFingerprint::from_metadata(&self.file.metadata()?))
    }

    fn set_modified(&self, modified_ns: i128) -> io::Result<()> {
        set_modified_time(&self.file, modified_ns)
    }

    fn raw_descriptor(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn clone_to(&self, target: &dyn DurableFile) -> io::Result<bool> {
        let Some(target_descriptor) = target.raw_descriptor() else {
            return Ok(false);
        };
        /// `_IOW(0x94, 9, int)` from `linux/fs.h`.
        const FICLONE: libc::c_ulong = 0x4004_9409;
        // SAFETY: FICLONE takes the source descriptor as its integer argument; both are open.
        let result = unsafe { libc::ioctl(target_descriptor, FICLONE as _, self.file.as_raw_fd()) };
        if result == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EOPNOTSUPP)
            | Some(libc::EXDEV)
            | Some(libc::EINVAL)
            | Some(libc::ENOTTY)
            | Some(libc::ENOSYS) => Ok(false),
            _ => Err(error),
        }
    }

    fn start_writeback(&self) -> io::Result<()> {
        // SAFETY: sync_file_range on a descriptor we own; no memory is passed.
        let result = unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
        };
        if result != 0 {
            // Only a hint: file systems without it lose nothing.
            return Ok(());
        }
        Ok(())
    }

    fn drop_cached(&self, offset: u64, length: u64) -> io::Result<()> {
        let (Ok(signed_offset), Ok(signed_length)) =
            (libc::off_t::try_from(offset), libc::off_t::try_from(length))
        else {
            return Ok(());
        };
        // SAFETY: posix_fadvise on a descriptor we own; no memory is passed. Only a hint: a
        // file system that ignores it loses nothing, so its result is not an error.
        let _ = unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                signed_offset,
                signed_length,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        Ok(())
    }

    /// `copy_file_range`: the data never passes through user space.
    fn copy_to(
        &self,
        source_offset: u64,
        target: &dyn DurableFile,
        target_offset: u64,
        length: u64,
    ) -> io::Result<()> {
        let Some(target_descriptor) = target.raw_descriptor() else {
            return copy_through_buffer(self, source_offset, target, target_offset, length);
        };
        let (Ok(mut input), Ok(mut output)) = (
            libc::off64_t::try_from(source_offset),
            libc::off64_t::try_from(target_offset),
        ) else {
            return copy_through_buffer(self, source_offset, target, target_offset, length);
        };
        let mut remaining = length;
        while remaining > 0 {
            // SAFETY: both descriptors are open for the life of this call, and the offsets are
            // plain integers the kernel updates.
            let copied = unsafe {
                libc::copy_file_range(
                    self.file.as_raw_fd(),
                    &mut input,
                    target_descriptor,
                    &mut output,
                    remaining as usize,
                    0,
                )
            };
            if copied < 0 {
                let error = io::Error::last_os_error();
                return match error.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EXDEV)
                    | Some(libc::ENOSYS)
                    | Some(libc::EINVAL)
                    | Some(libc::EOPNOTSUPP) => {
                        let done = length - remaining;
                        copy_through_buffer(
                            self,
                            source_offset + done,
                            target,
                            target_offset + done,
                            remaining,
                        )
                    }
                    _ => Err(error),
                };
            }
            if copied == 0 {
                // End of the source: the rest reads as zeros.
                let done = length - remaining;
                return target.write_at(target_offset + done, &vec![0u8; remaining as usize]);
            }
            remaining -= copied as u64;
        }
        Ok(())
    }
}

impl DurableBackend for RealBackend {
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DurableFile>> {
        let file = super::private_open_options()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile { file }))
    }

    fn open_file_read_only(&self, path: &Path) -> io::Result<Arc<dyn DurableFile>> {
        let file = OpenOptions::new().read(true).open(path)?;
        Ok(Arc::new(RealFile { file }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        super::create_private_dir_all(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_backend_drops_unsynced_writes_and_keeps_synced_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        std::fs::write(&path, b"original").expect("write");
        let backend = FaultBackend::new(Some(1), CrashMode::DropUnsynced);
        let file = backend.open_file(&path, false).expect("open");
        file.write_at(0, b"synced!!").expect("write");
        file.sync_data().expect("first sync point survives");
        file.write_at(0, b"lost").expect("write");
        file.write_at(8, b"-tail").expect("write");
        assert!(file.sync_data().is_err(), "second sync point is the crash");
        assert!(backend.has_crashed());
        assert!(file.write_at(0, b"x").is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"synced!!");
    }

    #[test]
    fn fault_backend_undoes_unsynced_renames() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("catalog");
        let new = dir.path().join("catalog.new");
        std::fs::write(&old, b"old").expect("write");
        std::fs::write(&new, b"new").expect("write");
        let backend = FaultBackend::new(Some(0), CrashMode::DropUnsynced);
        backend.rename(&new, &old).expect("rename");
        assert!(backend
            .sync_dir(Path::new("/nonexistent-dir-for-test"))
            .is_err());
        assert_eq!(std::fs::read(&old).expect("read"), b"old");
        assert_eq!(std::fs::read(&new).expect("read"), b"new");
    }

    #[test]
    fn real_backend_finds_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sparse");
        let file = RealBackend.open_file(&path, true).expect("open");
        file.set_len(4 << 20).expect("set_len");
        file.write_at(2 << 20, &[1u8; 4096]).expect("write");
        let first = file.next_data(0).expect("seek");
        assert!(
            matches!(first, Some(offset) if offset <= 2 << 20 && offset > 0) || first == Some(0)
        );
        assert_eq!(file.next_data(3 << 20).expect("seek"), None);
    }
}
