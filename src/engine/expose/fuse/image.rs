//! The image-file view: a directory holding one file, the whole device.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenAccMode,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::{valid_file_name, MountError};
use crate::engine::device::BlockDevice;

const FILE_INODE: INodeNo = INodeNo(2);
/// Attributes never change behind the kernel's back (the size is fixed), so they can be cached.
const ATTRIBUTE_TTL: Duration = Duration::from_secs(1);
/// How many allocation answers `st_blocks` walks before counting the rest as allocated: a
/// badly fragmented volume must not make every `stat` slow.
const MAX_ALLOCATION_CALLS_PER_STAT: usize = 16;

pub(super) struct ImageFileSystem {
    device: Arc<dyn BlockDevice>,
    file_name: String,
    read_only: bool,
    mounted_at: SystemTime,
    uid: u32,
    gid: u32,
}

impl ImageFileSystem {
    pub(super) fn new(
        device: Arc<dyn BlockDevice>,
        file_name: &str,
        read_only: bool,
    ) -> Result<ImageFileSystem, MountError> {
        if !valid_file_name(file_name) {
            return Err(MountError::InvalidFileName {
                name: file_name.to_string(),
            });
        }
        // SAFETY: getuid and getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(ImageFileSystem {
            device,
            file_name: file_name.to_string(),
            read_only,
            mounted_at: SystemTime::now(),
            uid,
            gid,
        })
    }

    fn attributes(&self, inode: INodeNo) -> Option<FileAttr> {
        let (kind, size, perm, nlink, allocated) = if inode == INodeNo::ROOT {
            (FileType::Directory, 0, 0o555, 2, 0)
        } else if inode == FILE_INODE {
            let perm = if self.read_only { 0o444 } else { 0o644 };
            let size = self.device.size();
            (
                FileType::RegularFile,
                size,
                perm,
                1,
                self.allocated_bytes(size),
            )
        } else {
            return None;
        };
        Some(FileAttr {
            ino: inode,
            size,
            blocks: allocated.div_ceil(512),
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl ImageFileSystem {
    /// Bytes the device's map says hold data (what `st_blocks` reports, so `du` and
    /// `cp --sparse` see the holes). A failing map counts as fully allocated.
    fn allocated_bytes(&self, size: u64) -> u64 {
        let mut allocated = 0;
        let mut position = 0;
        for _ in 0..MAX_ALLOCATION_CALLS_PER_STAT {
            if position >= size {
                return allocated;
            }
            let Ok(extents) = self.device.allocation(position, size - position) else {
                break;
            };
            let Some(last) = extents.last() else {
                break;
            };
            allocated += extents
                .iter()
                .filter(|extent| !extent.hole)
                .map(|extent| extent.length)
                .sum::<u64>();
            position = last.end();
        }
        allocated + size.saturating_sub(position)
    }

    /// `SEEK_DATA`/`SEEK_HOLE` from the device's map: the first data (or hole) at or after
    /// `offset`; the end of the device counts as a hole, and there is no data past it.
    fn seek_allocation(&self, offset: u64, want_data: bool) -> Result<u64, Errno> {
        let size = self.device.size();
        if offset >= size {
            return Err(Errno::ENXIO);
        }
        let mut position = offset;
        while position < size {
            let extents = self
                .device
                .allocation(position, size - position)
                .map_err(|error| io_errno(&error))?;
            let Some(last) = extents.last() else {
                return Err(Errno::EIO);
            };
            if let Some(found) = extents.iter().find(|extent| extent.hole != want_data) {
                return Ok(found.offset.max(offset));
            }
            position = last.end();
        }
        if want_data {
            Err(Errno::ENXIO)
        } else {
            Ok(size)
        }
    }
}

impl fuser::Filesystem for ImageFileSystem {
    fn lseek(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        if inode != FILE_INODE {
            return reply.error(Errno::EINVAL);
        }
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        let want_data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            // The kernel answers SEEK_SET, SEEK_CUR and SEEK_END itself.
            _ => return reply.error(Errno::EINVAL),
        };
        match self.seek_allocation(offset, want_data) {
            Ok(found) => reply.offset(found as i64),
            Err(errno) => reply.error(errno),
        }
    }

    fn lookup(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent != INodeNo::ROOT || name != OsStr::new(&self.file_name) {
            return reply.error(Errno::ENOENT);
        }
        match self.attributes(FILE_INODE) {
            Some(attributes) => reply.entry(&ATTRIBUTE_TTL, &attributes, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        match self.attributes(inode) {
            Some(attributes) => reply.attr(&ATTRIBUTE_TTL, &attributes),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _request: &Request,
        inode: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _handle: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if self.read_only {
            return reply.error(Errno::EROFS);
        }
        // A disk has a fixed size and no owner or mode of its own. Setting the size it already
        // has is allowed (tools such as `dd` do it); anything else is refused. Time updates are
        // accepted and ignored.
        if mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        if size.is_some_and(|size| size != self.device.size()) {
            return reply.error(Errno::EPERM);
        }
        match self.attributes(inode) {
            Some(attributes) => reply.attr(&ATTRIBUTE_TTL, &attributes),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _request: &Request, inode: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if inode != FILE_INODE {
            return reply.error(Errno::EISDIR);
        }
        let wants_write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        if wants_write && self.read_only {
            return reply.error(Errno::EROFS);
        }
        if flags.0 & libc::O_TRUNC != 0 && self.device.size() != 0 {
            return reply.error(Errno::EPERM);
        }
        // Read-write files bypass the page cache: the device is the only copy, and other paths
        // (NBD, the shell's own I/O) may change it. Read-only devices never change, so their
        // pages may stay cached.
        let open_flags = if self.read_only {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::FOPEN_DIRECT_IO
        };
        reply.opened(FileHandle(0), open_flags);
    }

    fn read(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if inode != FILE_INODE {
            return reply.error(Errno::EISDIR);
        }
        let device_size = self.device.size();
        if offset >= device_size {
            return reply.data(&[]);
        }
        let length = u64::from(size).min(device_size - offset) as usize;
        let mut buffer = vec![0u8; length];
        match self.device.read_at(offset, &mut buffer) {
            Ok(()) => reply.data(&buffer),
            Err(error) => reply.error(io_errno(&error)),
        }
    }

    fn write(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if inode != FILE_INODE {
            return reply.error(Errno::EISDIR);
        }
        if self.read_only {
            return reply.error(Errno::EROFS);
        }
        // A disk cannot grow: a write past the end is "no space left", as on a block device.
        let fits = offset
            .checked_add(data.len() as u64)
            .is_some_and(|end| end <= self.device.size());
        if !fits {
            return reply.error(Errno::ENOSPC);
        }
        let synchronous = flags.0 & (libc::O_SYNC | libc::O_DSYNC) != 0;
        let result = self.device.write_at(offset, data).and_then(|()| {
            if synchronous {
                self.device.flush()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(error) => reply.error(io_errno(&error)),
        }
    }

    fn fallocate(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if inode != FILE_INODE {
            return reply.error(Errno::EISDIR);
        }
        if self.read_only {
            return reply.error(Errno::EROFS);
        }
        // Only zeroing inside the disk makes sense: it cannot grow, and preallocation of a
        // device that is already fully addressable has nothing to do.
        let may_punch = if mode == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE {
            true
        } else if mode == libc::FALLOC_FL_ZERO_RANGE
            || mode == libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        {
            false
        } else {
            return reply.error(Errno::EOPNOTSUPP);
        };
        let size = self.device.size();
        let end = offset.saturating_add(length).min(size);
        if offset >= end {
            return reply.ok();
        }
        match self.device.write_zeroes(offset, end - offset, may_punch) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(io_errno(&error)),
        }
    }

    fn flush(
        &self,
        _request: &Request,
        _inode: INodeNo,
        _handle: FileHandle,
        _owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not a durability point; fsync is.
        reply.ok();
    }

    fn fsync(
        &self,
        _request: &Request,
        _inode: INodeNo,
        _handle: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.read_only {
            return reply.ok();
        }
        match self.device.flush() {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(io_errno(&error)),
        }
    }

    fn readdir(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if inode != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (FILE_INODE, FileType::RegularFile, self.file_name.as_str()),
        ];
        for (index, (entry_inode, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*entry_inode, index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _request: &Request, _inode: INodeNo, reply: ReplyStatfs) {
        let blocks = self.device.size().div_ceil(4096);
        reply.statfs(blocks, 0, 0, 2, 0, 4096, 255, 4096);
    }
}

/// The errno a device error becomes.
pub(super) fn io_errno(error: &std::io::Error) -> Errno {
    if let Some(code) = error.raw_os_error() {
        return Errno::from_i32(code);
    }
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => Errno::EROFS,
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::UnexpectedEof => Errno::EINVAL,
        std::io::ErrorKind::StorageFull => Errno::ENOSPC,
        _ => Errno::EIO,
    }
}
