//! NTFS through the `ntfs` crate. Files are read through their unnamed `$DATA` stream, a piece
//! at a time; NTFS has no POSIX modes, so files show as 0444 and directories as 0555, owned by
//! the mounting user. System files (MFT records below 16: `$MFT`, `$Bitmap`, `$Extend`, ...) are
//! hidden, as ntfs-3g hides them. Reparse points (junctions, symlinks) show as the plain
//! directory or file they are stored as.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileType};
use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::NtfsFileNamespace;
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsReadSeek, NtfsTime};

use super::tree::{ListedEntry, NodeAttributes, TreeSource};
use crate::engine::device::BlockDevice;

/// Records below this number are the filesystem's own metadata files.
const FIRST_USER_RECORD: u64 = 16;
const ROOT_RECORD: u64 = 5;
/// 100-nanosecond intervals between 1601-01-01 (NTFS epoch) and 1970-01-01.
const NT_TO_UNIX_INTERVALS: u64 = 116_444_736_000_000_000;

/// A seekable reader over the device, as the `ntfs` crate wants one.
struct DeviceCursor {
    device: Arc<dyn BlockDevice>,
    position: u64,
}

impl Read for DeviceCursor {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let size = self.device.size();
        if self.position >= size {
            return Ok(0);
        }
        let count = (size - self.position).min(buffer.len() as u64) as usize;
        self.device.read_at(self.position, &mut buffer[..count])?;
        self.position += count as u64;
        Ok(count)
    }
}

impl Seek for DeviceCursor {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        let target = match position {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.device.size().checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.position = target;
        Ok(target)
    }
}

pub(super) struct NtfsSource {
    ntfs: Ntfs,
    reader: DeviceCursor,
    /// Path -> MFT record number, filled as paths are resolved.
    records: HashMap<Vec<u8>, u64>,
    open_files: HashMap<u64, u64>,
    next_handle: u64,
}

impl NtfsSource {
    pub(super) fn load(device: Arc<dyn BlockDevice>) -> Result<NtfsSource, String> {
        let mut reader = DeviceCursor {
            device,
            position: 0,
        };
        let mut ntfs = Ntfs::new(&mut reader).map_err(|error| error.to_string())?;
        // Name lookups compare case-insensitively through the volume's own upcase table.
        ntfs.read_upcase_table(&mut reader)
            .map_err(|error| error.to_string())?;
        Ok(NtfsSource {
            ntfs,
            reader,
            records: HashMap::from([(b"/".to_vec(), ROOT_RECORD)]),
            open_files: HashMap::new(),
            next_handle: 1,
        })
    }

    fn resolve(&mut self, path: &[u8]) -> Result<u64, Errno> {
        if let Some(record) = self.records.get(path) {
            return Ok(*record);
        }
        let split = path
            .iter()
            .rposition(|byte| *byte == b'/')
            .ok_or(Errno::EINVAL)?;
        let parent_path = if split == 0 {
            b"/".as_slice()
        } else {
            &path[..split]
        };
        let name = std::str::from_utf8(&path[split + 1..]).map_err(|_| Errno::ENOENT)?;
        let parent_record = self.resolve(parent_path)?;
        let parent = self
            .ntfs
            .file(&mut self.reader, parent_record)
            .map_err(|_| Errno::EIO)?;
        if !parent.is_directory() {
            return Err(Errno::ENOTDIR);
        }
        let index = parent
            .directory_index(&mut self.reader)
            .map_err(|_| Errno::EIO)?;
        let mut finder = index.finder();
        let entry = NtfsFileNameIndex::find(&mut finder, &self.ntfs, &mut self.reader, name)
            .ok_or(Errno::ENOENT)?
            .map_err(|_| Errno::EIO)?;
        let record = entry.file_reference().file_record_number();
        if record < FIRST_USER_RECORD {
            return Err(Errno::ENOENT);
        }
        self.records.insert(path.to_vec(), record);
        Ok(record)
    }
}

fn time_of(time: NtfsTime) -> SystemTime {
    let intervals = time.nt_timestamp();
    if intervals >= NT_TO_UNIX_INTERVALS {
        let since_epoch = intervals - NT_TO_UNIX_INTERVALS;
        UNIX_EPOCH
            + Duration::from_secs(since_epoch / 10_000_000)
            + Duration::from_nanos((since_epoch % 10_000_000) * 100)
    } else {
        UNIX_EPOCH - Duration::from_secs((NT_TO_UNIX_INTERVALS - intervals) / 10_000_000)
    }
}

/// Where a file's data stream has holes (`(offset, length)`, in order) and how many bytes
/// its data runs allocate.
struct SparseLayout {
    holes: Vec<(u64, u64)>,
    allocated: u64,
}

impl NtfsSource {
    /// A node's attributes from its MFT record (all data: `allocated` is left unknown).
    fn attributes_of_record(&mut self, record: u64) -> Result<NodeAttributes, Errno> {
        let file = self
            .ntfs
            .file(&mut self.reader, record)
            .map_err(|_| Errno::EIO)?;
        let information = file.info().map_err(|_| Errno::EIO)?;
        let is_directory = file.is_directory();
        let size = if is_directory {
            0
        } else {
            match file.data(&mut self.reader, "") {
                Some(item) => {
                    let item = item.map_err(|_| Errno::EIO)?;
                    item.to_attribute().map_err(|_| Errno::EIO)?.value_length()
                }
                None => 0,
            }
        };
        Ok(NodeAttributes {
            kind: if is_directory {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            size,
            permissions: if is_directory { 0o555 } else { 0o444 },
            // SAFETY: getuid and getgid have no preconditions and cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            accessed: time_of(information.access_time()),
            modified: time_of(information.modification_time()),
            changed: time_of(information.mft_record_modification_time()),
            created: time_of(information.creation_time()),
            links: if is_directory {
                2
            } else {
                u32::from(file.hard_link_count().max(1))
            },
            allocated: None,
        })
    }

    /// The holes of a file's unnamed data stream (its sparse data runs, within the stream's
    /// length) and the bytes its other runs allocate. `None` where that is not known from the
    /// runs alone: a resident value, one spread over an attribute list, or a compressed one
    /// (whose sparse runs are the unused rest of compression units, not holes); such a file
    /// shows as all data.
    fn sparse_layout(&mut self, record: u64) -> Result<Option<SparseLayout>, Errno> {
        let file = self
            .ntfs
            .file(&mut self.reader, record)
            .map_err(|_| Errno::EIO)?;
        let Some(item) = file.data(&mut self.reader, "") else {
            return Ok(None);
        };
        let item = item.map_err(|_| Errno::EIO)?;
        let attribute = item.to_attribute().map_err(|_| Errno::EIO)?;
        if attribute.flags().contains(NtfsAttributeFlags::COMPRESSED) {
            return Ok(None);
        }
        let NtfsAttributeValue::NonResident(value) =
            attribute.value(&mut self.reader).map_err(|_| Errno::EIO)?
        else {
            return Ok(None);
        };
        let length = value.len();
        let mut holes: Vec<(u64, u64)> = Vec::new();
        let mut allocated = 0;
        let mut position = 0u64;
        for run in value.data_runs() {
            let run = run.map_err(|_| Errno::EIO)?;
            let size = run.allocated_size();
            let end = position.saturating_add(size).min(length);
            if run.data_position().value().is_some() {
                allocated += size;
            } else if end > position {
                match holes.last_mut() {
                    Some((start, hole)) if *start + *hole == position => *hole += end - position,
                    _ => holes.push((position, end - position)),
                }
            }
            position = position.saturating_add(size);
        }
        Ok(Some(SparseLayout { holes, allocated }))
    }
}

impl TreeSource for NtfsSource {
    fn attributes(&mut self, path: &[u8]) -> Result<NodeAttributes, Errno> {
        let record = self.resolve(path)?;
        let mut attributes = self.attributes_of_record(record)?;
        if attributes.kind == FileType::RegularFile {
            attributes.allocated = self.sparse_layout(record)?.map(|layout| layout.allocated);
        }
        Ok(attributes)
    }

    fn list_directory(&mut self, path: &[u8]) -> Result<Vec<ListedEntry>, Errno> {
        let record = self.resolve(path)?;
        let directory = self
            .ntfs
            .file(&mut self.reader, record)
            .map_err(|_| Errno::EIO)?;
        if !directory.is_directory() {
            return Err(Errno::ENOTDIR);
        }
        let index = directory
            .directory_index(&mut self.reader)
            .map_err(|_| Errno::EIO)?;
        let mut entries = index.entries();
        let mut listed = Vec::new();
        let mut resolved = Vec::new();
        while let Some(entry) = entries.next(&mut self.reader) {
            let entry = entry.map_err(|_| Errno::EIO)?;
            let Some(Ok(file_name)) = entry.key() else {
                continue;
            };
            // A long name and its 8.3 alias point at the same file: show the long name only.
            if file_name.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            let child_record = entry.file_reference().file_record_number();
            if child_record < FIRST_USER_RECORD {
                continue;
            }
            let name = file_name.name().to_string_lossy().into_bytes();
            let kind = if file_name.is_directory() {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            let mut child_path = path.to_vec();
            if !child_path.ends_with(b"/") {
                child_path.push(b'/');
            }
            child_path.extend_from_slice(&name);
            resolved.push((child_path, child_record));
            listed.push(ListedEntry { name, kind });
        }
        self.records.extend(resolved);
        Ok(listed)
    }

    fn read_link(&mut self, _path: &[u8]) -> Result<Vec<u8>, Errno> {
        Err(Errno::EINVAL)
    }

    fn open_file(&mut self, path: &[u8]) -> Result<u64, Errno> {
        let record = self.resolve(path)?;
        let file = self
            .ntfs
            .file(&mut self.reader, record)
            .map_err(|_| Errno::EIO)?;
        if file.is_directory() {
            return Err(Errno::EISDIR);
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.open_files.insert(handle, record);
        Ok(handle)
    }

    fn read_file(&mut self, handle: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let record = *self.open_files.get(&handle).ok_or(Errno::EBADF)?;
        let file = self
            .ntfs
            .file(&mut self.reader, record)
            .map_err(|_| Errno::EIO)?;
        let Some(item) = file.data(&mut self.reader, "") else {
            return Ok(Vec::new());
        };
        let item = item.map_err(|_| Errno::EIO)?;
        let attribute = item.to_attribute().map_err(|_| Errno::EIO)?;
        let mut value = attribute.value(&mut self.reader).map_err(|_| Errno::EIO)?;
        let length = value.len();
        if offset >= length {
            return Ok(Vec::new());
        }
        let wanted = u64::from(size).min(length - offset) as usize;
        let mut buffer = vec![0u8; wanted];
        value
            .seek(&mut self.reader, SeekFrom::Start(offset))
            .map_err(|_| Errno::EIO)?;
        let mut filled = 0;
        while filled < wanted {
            let count = value
                .read(&mut self.reader, &mut buffer[filled..])
                .map_err(|_| Errno::EIO)?;
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
        let record = *self.open_files.get(&handle).ok_or(Errno::EBADF)?;
        Ok(self
            .sparse_layout(record)?
            .map(|layout| layout.holes)
            .unwrap_or_default())
    }

    fn capacity(&mut self) -> (u64, u32) {
        let cluster_size = self.ntfs.cluster_size();
        (
            self.ntfs.size() / u64::from(cluster_size.max(1)),
            cluster_size,
        )
    }
}
