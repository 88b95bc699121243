//! A read-only FUSE filesystem over any path-based file tree (ext4, NTFS).
//!
//! The readers (`ext4-view`, `ntfs`) are single-threaded (`ext4-view` shares its state through
//! `Rc`), while FUSE needs a `Send + Sync` filesystem. So the reader lives on its own worker
//! thread and the FUSE side sends it jobs and waits for the answer. Inode numbers are handed
//! out per path as the kernel discovers them; the tree never changes, so a path keeps its number
//! for the life of the mount.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenAccMode,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, Request,
};

/// The tree never changes while mounted (shadow copies are immutable), so the kernel may cache
/// attributes and names for long.
const TTL: Duration = Duration::from_secs(60);

/// What a reader says about one node (never following a final symlink).
#[derive(Debug, Clone)]
pub(super) struct NodeAttributes {
    pub kind: FileType,
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub permissions: u16,
    pub uid: u32,
    pub gid: u32,
    pub accessed: SystemTime,
    pub modified: SystemTime,
    pub changed: SystemTime,
    pub created: SystemTime,
    pub links: u32,
    /// Bytes backed by storage (`st_blocks`), when the reader knows; otherwise the size.
    pub allocated: Option<u64>,
}

/// A directory entry as a reader lists it ("." and ".." excluded).
pub(super) struct ListedEntry {
    pub name: Vec<u8>,
    pub kind: FileType,
}

/// A read-only file tree addressed by absolute byte paths ("/", "/dir/file").
pub(super) trait TreeSource {
    fn attributes(&mut self, path: &[u8]) -> Result<NodeAttributes, Errno>;
    fn list_directory(&mut self, path: &[u8]) -> Result<Vec<ListedEntry>, Errno>;
    fn read_link(&mut self, path: &[u8]) -> Result<Vec<u8>, Errno>;
    /// Opens a regular file for reading; the handle is the reader's own.
    fn open_file(&mut self, path: &[u8]) -> Result<u64, Errno>;
    /// Reads up to `size` bytes at `offset` (fewer only at the end of the file).
    fn read_file(&mut self, handle: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno>;
    fn close_file(&mut self, handle: u64);
    /// The holes of an open file as `(offset, length)`, in order. None by default: a reader
    /// that cannot see a file's extents (or is unsure of them) shows it as data.
    fn holes(&mut self, handle: u64) -> Result<Vec<(u64, u64)>, Errno> {
        let _ = handle;
        Ok(Vec::new())
    }
    /// (total blocks, block size) for statfs.
    fn capacity(&mut self) -> (u64, u32);
}

type Job = Box<dyn FnOnce(&mut dyn TreeSource) + Send>;

struct InodeTable {
    /// `paths[n]` is the path of inode `n + 1`; the root is inode 1.
    paths: Vec<Vec<u8>>,
    parents: Vec<INodeNo>,
    by_path: HashMap<Vec<u8>, INodeNo>,
}

impl InodeTable {
    fn inode_for(&mut self, path: Vec<u8>, parent: INodeNo) -> INodeNo {
        if let Some(inode) = self.by_path.get(&path) {
            return *inode;
        }
        let inode = INodeNo(self.paths.len() as u64 + 1);
        self.paths.push(path.clone());
        self.parents.push(parent);
        self.by_path.insert(path, inode);
        inode
    }

    fn path(&self, inode: INodeNo) -> Option<(Vec<u8>, INodeNo)> {
        let index = usize::try_from(inode.0.checked_sub(1)?).ok()?;
        Some((self.paths.get(index)?.clone(), *self.parents.get(index)?))
    }
}

/// One directory entry as readdir returns it.
type Listing = Vec<(INodeNo, FileType, Vec<u8>)>;

pub(super) struct TreeFileSystem {
    jobs: Mutex<Sender<Job>>,
    inodes: Mutex<InodeTable>,
    /// Listings taken at opendir, so that a large directory read in many readdir calls is
    /// listed once, not once per call.
    open_directories: Mutex<OpenDirectories>,
}

#[derive(Default)]
struct OpenDirectories {
    next_handle: u64,
    listings: HashMap<u64, Listing>,
}

impl TreeFileSystem {
    /// Starts the worker thread, builds the reader on it with `load`, and reports whether that
    /// worked.
    pub(super) fn start<S, L>(load: L) -> Result<TreeFileSystem, String>
    where
        S: TreeSource + 'static,
        L: FnOnce() -> Result<S, String> + Send + 'static,
    {
        let (job_sender, job_receiver) = mpsc::channel::<Job>();
        let (ready_sender, ready_receiver) = mpsc::sync_channel::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name("diskshadow-fuse-reader".to_string())
            .spawn(move || {
                let mut source = match load() {
                    Ok(source) => {
                        let _ = ready_sender.send(Ok(()));
                        source
                    }
                    Err(reason) => {
                        let _ = ready_sender.send(Err(reason));
                        return;
                    }
                };
                // Ends when the filesystem (the only sender) is dropped at session end.
                while let Ok(job) = job_receiver.recv() {
                    job(&mut source);
                }
            })
            .map_err(|error| format!("cannot start the reader thread: {error}"))?;
        ready_receiver
            .recv()
            .map_err(|_| "the reader thread ended while loading".to_string())??;
        Ok(TreeFileSystem {
            jobs: Mutex::new(job_sender),
            inodes: Mutex::new(InodeTable {
                paths: vec![b"/".to_vec()],
                parents: vec![INodeNo::ROOT],
                by_path: HashMap::from([(b"/".to_vec(), INodeNo::ROOT)]),
            }),
            open_directories: Mutex::new(OpenDirectories::default()),
        })
    }

    /// Runs `job` on the worker thread and waits for its answer.
    fn call<R, F>(&self, job: F) -> Result<R, Errno>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn TreeSource) -> Result<R, Errno> + Send + 'static,
    {
        let (answer_sender, answer_receiver) = mpsc::sync_channel(1);
        let boxed: Job = Box::new(move |source| {
            let _ = answer_sender.send(job(source));
        });
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(boxed)
            .map_err(|_| Errno::EIO)?;
        answer_receiver.recv().map_err(|_| Errno::EIO)?
    }

    fn path_of(&self, inode: INodeNo) -> Result<(Vec<u8>, INodeNo), Errno> {
        self.inodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .path(inode)
            .ok_or(Errno::ENOENT)
    }

    fn inode_for(&self, path: Vec<u8>, parent: INodeNo) -> INodeNo {
        self.inodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inode_for(path, parent)
    }

    /// Lists a directory with "." and "..", handing out inode numbers for the children.
    fn listing(&self, inode: INodeNo) -> Result<Listing, Errno> {
        let (path, parent) = self.path_of(inode)?;
        let listing_path = path.clone();
        let listed = self.call(move |source| source.list_directory(&listing_path))?;
        let mut entries = vec![
            (inode, FileType::Directory, b".".to_vec()),
            (parent, FileType::Directory, b"..".to_vec()),
        ];
        for entry in listed {
            let child = self.inode_for(child_path(&path, &entry.name), inode);
            entries.push((child, entry.kind, entry.name));
        }
        Ok(entries)
    }

    fn attributes_of(&self, inode: INodeNo, path: Vec<u8>) -> Result<FileAttr, Errno> {
        let attributes = self.call(move |source| source.attributes(&path))?;
        Ok(file_attr(inode, &attributes))
    }
}

/// The path of `name` in the directory at `parent`.
pub(super) fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = parent.to_vec();
    if !path.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// `SEEK_DATA` (`want_data`) or `SEEK_HOLE` from `offset` in a file of `size` bytes with
/// `holes` (in order): the first data or hole at or after `offset`; the end of the file
/// counts as a hole, and there is no data past it.
fn seek_in(holes: &[(u64, u64)], size: u64, offset: u64, want_data: bool) -> Result<u64, Errno> {
    if offset >= size {
        return Err(Errno::ENXIO);
    }
    let hole_at = |position: u64| {
        holes
            .iter()
            .find(|(start, length)| *start <= position && position < start + length)
    };
    let mut position = offset;
    loop {
        match (hole_at(position), want_data) {
            (Some(_), false) | (None, true) => return Ok(position),
            (Some((start, length)), true) => position = start + length,
            (None, false) => {
                // The next hole after `position`, or the end of the file.
                return Ok(holes
                    .iter()
                    .map(|(start, _)| *start)
                    .find(|start| *start > position)
                    .unwrap_or(size)
                    .min(size));
            }
        }
        if position >= size {
            return if want_data {
                Err(Errno::ENXIO)
            } else {
                Ok(size)
            };
        }
    }
}

fn file_attr(inode: INodeNo, attributes: &NodeAttributes) -> FileAttr {
    FileAttr {
        ino: inode,
        size: attributes.size,
        blocks: attributes
            .allocated
            .unwrap_or(attributes.size)
            .div_ceil(512),
        atime: attributes.accessed,
        mtime: attributes.modified,
        ctime: attributes.changed,
        crtime: attributes.created,
        kind: attributes.kind,
        perm: attributes.permissions,
        nlink: attributes.links,
        uid: attributes.uid,
        gid: attributes.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl fuser::Filesystem for TreeFileSystem {
    fn lookup(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = (|| {
            let (parent_path, _) = self.path_of(parent)?;
            let path = child_path(&parent_path, name.as_bytes());
            let probe = path.clone();
            let attributes = self.call(move |source| source.attributes(&probe))?;
            let inode = self.inode_for(path, parent);
            Ok::<_, Errno>(file_attr(inode, &attributes))
        })();
        match result {
            Ok(attributes) => reply.entry(&TTL, &attributes, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(
        &self,
        _request: &Request,
        inode: INodeNo,
        _handle: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        match self
            .path_of(inode)
            .and_then(|(path, _)| self.attributes_of(inode, path))
        {
            Ok(attributes) => reply.attr(&TTL, &attributes),
            Err(errno) => reply.error(errno),
        }
    }

    fn readlink(&self, _request: &Request, inode: INodeNo, reply: ReplyData) {
        let result = self
            .path_of(inode)
            .and_then(|(path, _)| self.call(move |source| source.read_link(&path)));
        match result {
            Ok(target) => reply.data(&target),
            Err(errno) => reply.error(errno),
        }
    }

    fn open(&self, _request: &Request, inode: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY) || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let result = self
            .path_of(inode)
            .and_then(|(path, _)| self.call(move |source| source.open_file(&path)));
        match result {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::FOPEN_KEEP_CACHE),
            Err(errno) => reply.error(errno),
        }
    }

    fn lseek(
        &self,
        _request: &Request,
        inode: INodeNo,
        handle: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        let want_data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            // The kernel answers SEEK_SET, SEEK_CUR and SEEK_END itself.
            _ => return reply.error(Errno::EINVAL),
        };
        let handle = handle.0;
        let result = self.path_of(inode).and_then(|(path, _)| {
            self.call(move |source| {
                let size = source.attributes(&path)?.size;
                let holes = source.holes(handle)?;
                seek_in(&holes, size, offset, want_data)
            })
        });
        match result {
            Ok(found) => reply.offset(found as i64),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _request: &Request,
        _inode: INodeNo,
        handle: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let handle = handle.0;
        match self.call(move |source| source.read_file(handle, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(errno) => reply.error(errno),
        }
    }

    fn release(
        &self,
        _request: &Request,
        _inode: INodeNo,
        handle: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let handle = handle.0;
        let _ = self.call(move |source| {
            source.close_file(handle);
            Ok(())
        });
        reply.ok();
    }

    fn opendir(&self, _request: &Request, inode: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.listing(inode) {
            Ok(listing) => {
                let mut directories = self
                    .open_directories
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                directories.next_handle += 1;
                let handle = directories.next_handle;
                directories.listings.insert(handle, listing);
                reply.opened(
                    FileHandle(handle),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                );
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _request: &Request,
        _inode: INodeNo,
        handle: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let directories = self
            .open_directories
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(entries) = directories.listings.get(&handle.0) else {
            return reply.error(Errno::EBADF);
        };
        for (index, (entry_inode, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                *entry_inode,
                index as u64 + 1,
                *kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _request: &Request,
        _inode: INodeNo,
        handle: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.open_directories
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .listings
            .remove(&handle.0);
        reply.ok();
    }

    fn statfs(&self, _request: &Request, _inode: INodeNo, reply: ReplyStatfs) {
        let (blocks, block_size) = self
            .call(|source| Ok(source.capacity()))
            .unwrap_or((0, 4096));
        let files = self
            .inodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .paths
            .len() as u64;
        reply.statfs(blocks, 0, 0, files, 0, block_size, 255, block_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeking_data_and_holes_follows_the_hole_list() {
        let holes = [(0, 10), (20, 5)];
        assert_eq!(seek_in(&holes, 40, 0, true), Ok(10));
        assert_eq!(seek_in(&holes, 40, 0, false), Ok(0));
        assert_eq!(seek_in(&holes, 40, 12, false), Ok(20));
        assert_eq!(seek_in(&holes, 40, 21, true), Ok(25));
        assert_eq!(seek_in(&holes, 40, 30, false), Ok(40));
        assert_eq!(seek_in(&holes, 40, 40, true), Err(Errno::ENXIO));
        assert_eq!(seek_in(&[(30, 10)], 40, 31, true), Err(Errno::ENXIO));
        assert_eq!(seek_in(&[], 40, 5, false), Ok(40));
    }
}
