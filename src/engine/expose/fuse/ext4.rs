//! ext2/3/4 through `ext4-view`: the reader reads the device directly, a block at a time, so
//! large files are never loaded whole and holes read as zeros.
//!
//! `ext4-view` keeps a file's extents private, and reads an uninitialized (unwritten) extent as
//! if it were written: the stale blocks behind it, with the file blocks after it shifted. So
//! where our own extent reader (`ext4_extents`) knows a regular file's map, that map answers:
//! holes (`SEEK_HOLE`/`SEEK_DATA`), `st_blocks`, and the file's bytes (written extents from the
//! device or the journal, everything else zeros). That also serves sparse block-mapped
//! (ext2/ext3) files, which `ext4-view` fails to read (EIO) where a hole spans an indirect
//! block. Where our reader does not know (inline files, a journal it cannot replay, damage),
//! the file is read through `ext4-view` and shows as all data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ext4_view::{Ext4, Ext4Error, Ext4Read};
use fuser::{Errno, FileType};

use super::ext4_extents::{ExtentReader, FileMap};
use super::tree::{ListedEntry, NodeAttributes, TreeSource};
use crate::engine::device::BlockDevice;

struct DeviceReader(Arc<dyn BlockDevice>);

impl Ext4Read for DeviceReader {
    fn read(
        &mut self,
        start_byte: u64,
        destination: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_at(start_byte, destination).map_err(Into::into)
    }
}

/// An open file: `ext4-view`'s handle, and the file's map when our extent reader knows it.
struct OpenFile {
    file: ext4_view::File,
    map: Option<Arc<FileMap>>,
}

pub(super) struct Ext4Source {
    filesystem: Ext4,
    extents: ExtentReader,
    open_files: HashMap<u64, OpenFile>,
    next_handle: u64,
    device_size: u64,
}

impl Ext4Source {
    pub(super) fn load(device: Arc<dyn BlockDevice>) -> Result<Ext4Source, String> {
        let device_size = device.size();
        let extents = ExtentReader::new(device.clone());
        let filesystem =
            Ext4::load(Box::new(DeviceReader(device))).map_err(|error| error.to_string())?;
        Ok(Ext4Source {
            filesystem,
            extents,
            open_files: HashMap::new(),
            next_handle: 1,
            device_size,
        })
    }
}

fn path_of(bytes: &[u8]) -> Result<ext4_view::Path<'_>, Errno> {
    ext4_view::Path::try_from(bytes).map_err(|_| Errno::EINVAL)
}

fn errno_of(error: Ext4Error) -> Errno {
    match error {
        Ext4Error::NotFound => Errno::ENOENT,
        Ext4Error::NotADirectory => Errno::ENOTDIR,
        Ext4Error::IsADirectory => Errno::EISDIR,
        Ext4Error::NotASymlink | Ext4Error::MalformedPath | Ext4Error::NotAbsolute => Errno::EINVAL,
        Ext4Error::IsASpecialFile => Errno::EPERM,
        _ => Errno::EIO,
    }
}

fn kind_of(file_type: ext4_view::FileType) -> FileType {
    match file_type {
        ext4_view::FileType::BlockDevice => FileType::BlockDevice,
        ext4_view::FileType::CharacterDevice => FileType::CharDevice,
        ext4_view::FileType::Directory => FileType::Directory,
        ext4_view::FileType::Fifo => FileType::NamedPipe,
        ext4_view::FileType::Regular => FileType::RegularFile,
        ext4_view::FileType::Socket => FileType::Socket,
        ext4_view::FileType::Symlink => FileType::Symlink,
    }
}

fn time_of(timestamp: ext4_view::Timestamp) -> SystemTime {
    let seconds = timestamp.seconds();
    let nanoseconds = Duration::from_nanos(u64::from(timestamp.nanoseconds()));
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs()) + nanoseconds
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()) + nanoseconds
    }
}

impl TreeSource for Ext4Source {
    fn attributes(&mut self, path: &[u8]) -> Result<NodeAttributes, Errno> {
        let metadata = self
            .filesystem
            .symlink_metadata(path_of(path)?)
            .map_err(errno_of)?;
        let modified = time_of(metadata.modified());
        let allocated = if metadata.file_type() == ext4_view::FileType::Regular {
            self.extents
                .file_map(path, metadata.len())
                .map(|map| map.allocated)
        } else {
            None
        };
        Ok(NodeAttributes {
            kind: kind_of(metadata.file_type()),
            size: metadata.len(),
            permissions: metadata.mode(),
            uid: metadata.uid(),
            gid: metadata.gid(),
            accessed: time_of(metadata.accessed()),
            modified,
            // ext4-view does not expose ctime; the modification time is the closest truth.
            changed: modified,
            created: metadata.created().map(time_of).unwrap_or(modified),
            links: if metadata.is_dir() { 2 } else { 1 },
            allocated,
        })
    }

    fn list_directory(&mut self, path: &[u8]) -> Result<Vec<ListedEntry>, Errno> {
        let mut entries = Vec::new();
        for entry in self.filesystem.read_dir(path_of(path)?).map_err(errno_of)? {
            let entry = entry.map_err(errno_of)?;
            let name = entry.file_name().as_ref().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = kind_of(entry.file_type().map_err(errno_of)?);
            entries.push(ListedEntry { name, kind });
        }
        Ok(entries)
    }

    fn read_link(&mut self, path: &[u8]) -> Result<Vec<u8>, Errno> {
        let target = self
            .filesystem
            .read_link(path_of(path)?)
            .map_err(errno_of)?;
        Ok(target.as_ref().to_vec())
    }

    fn open_file(&mut self, path: &[u8]) -> Result<u64, Errno> {
        let file = self.filesystem.open(path_of(path)?).map_err(errno_of)?;
        let map = self.extents.file_map(path, file.metadata().len());
        let handle = self.next_handle;
        self.next_handle += 1;
        self.open_files.insert(handle, OpenFile { file, map });
        Ok(handle)
    }

    fn read_file(&mut self, handle: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let open = self.open_files.get_mut(&handle).ok_or(Errno::EBADF)?;
        if let Some(map) = &open.map {
            return self
                .extents
                .read(map, offset, u64::from(size))
                .map_err(|_| Errno::EIO);
        }
        let file = &mut open.file;
        let file_size = file.metadata().len();
        if offset >= file_size {
            return Ok(Vec::new());
        }
        let wanted = u64::from(size).min(file_size - offset) as usize;
        let mut buffer = vec![0u8; wanted];
        file.seek_to(offset).map_err(errno_of)?;
        let mut filled = 0;
        // read_bytes stops at block boundaries; keep going until the request is full.
        while filled < wanted {
            let count = file.read_bytes(&mut buffer[filled..]).map_err(errno_of)?;
            if count == 0 {
                break;
            }
            filled += count;
        }
        buffer.truncate(filled);
        Ok(buffer)
    }

    fn close_file(&mut self, handle: u64) {
        self.open_files.remove(&handle);
    }

    fn holes(&mut self, handle: u64) -> Result<Vec<(u64, u64)>, Errno> {
        let open = self.open_files.get(&handle).ok_or(Errno::EBADF)?;
        Ok(open
            .map
            .as_ref()
            .map(|map| map.holes.clone())
            .unwrap_or_default())
    }

    fn capacity(&mut self) -> (u64, u32) {
        (self.device_size / 4096, 4096)
    }
}
