//! A small read-only reader of ext4's own layout, beside `ext4-view`, for what that crate keeps
//! private: a file's extents (so a sparse file shows its holes through `SEEK_HOLE`/`SEEK_DATA`
//! and a true `st_blocks`) and the inode numbers behind paths (read from the raw directory
//! blocks).
//!
//! Layout read here: the superblock (block size, inodes per group, inode size, the 64bit
//! descriptor size), a group descriptor's inode table, the inode's `i_block` extent tree
//! (header magic 0xF30A, depth, index and leaf entries), and linear directory entries (an
//! htree directory keeps linear entries in its leaf blocks; its index lives in entries with
//! inode 0, which are skipped). Block-mapped files (ext2/ext3, and ext4 files without the
//! extents flag) are read through their direct and indirect block pointers instead; a zero
//! pointer is a hole.
//!
//! Committed journal transactions not yet written in place (a crash-consistent shadow of a
//! mounted file system has them) are replayed in memory first (`ext4_journal`): every block
//! this reader reads, metadata and data, comes from the journal where the journal has a newer
//! copy, as `ext4-view` reads it.
//!
//! **Invariant:** a hole is reported only where this reader is sure of it. Whatever it cannot
//! read with certainty (inline files, `meta_bg`, a journal it does not fully understand, a
//! damaged or oversized tree or block map, a size that disagrees with `ext4-view`) answers
//! `None`, and the caller shows the file as all data, read through `ext4-view`, as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::ext4_journal;
use super::tree::child_path;
use crate::engine::device::BlockDevice;

const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_MAGIC: u16 = 0xEF53;
const EXTENT_MAGIC: u16 = 0xF30A;
const ROOT_INODE: u32 = 2;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;

const INODE_FLAG_EXTENTS: u32 = 0x0008_0000;
const INODE_FLAG_INLINE_DATA: u32 = 0x1000_0000;
const MODE_TYPE_MASK: u16 = 0xF000;
const MODE_REGULAR: u16 = 0x8000;
const MODE_DIRECTORY: u16 = 0x4000;

/// An extent longer than this is uninitialized (allocated, unwritten: it reads as zeros), and
/// its length is `ee_len - 32768`.
const MAXIMUM_INITIALIZED_LENGTH: u16 = 32768;
/// ext4 never builds a deeper tree.
const MAXIMUM_DEPTH: u16 = 5;
const ENTRY_SIZE: usize = 12;
const I_BLOCK_SIZE: usize = 60;

/// Work bounds per call, so that a huge or hostile tree cannot stall a FUSE call: past them
/// the answer is `None` (all data). 64 tree blocks hold up to 21,760 extents (340 a 4 KiB
/// block); each `SEEK_HOLE`/`SEEK_DATA` walks the hole list, so it must stay that short.
const MAXIMUM_TREE_BLOCKS: usize = 64;
const MAXIMUM_DIRECTORY_BLOCKS: u64 = 4096;
/// Indirect blocks of a block-mapped file (4 MiB of reads in 4 KiB blocks: a 4 GiB file), and
/// the extents they may give (as many as 64 extent-tree blocks hold).
const MAXIMUM_INDIRECT_BLOCKS: usize = 1024;
const MAXIMUM_EXTENTS: usize = 64 * 340;
/// Cached paths (inode numbers and file maps); the caches start over past this.
const MAXIMUM_CACHED_PATHS: usize = 1 << 20;

/// One extent of a file: `length` blocks from file block `logical`, stored from device block
/// `physical`. An uninitialized extent reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Extent {
    pub logical: u64,
    pub length: u64,
    pub physical: u64,
    pub initialized: bool,
}

/// Where a regular file's bytes are: its extents, and what follows from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileMap {
    pub size: u64,
    block_size: u64,
    /// In file order, not overlapping.
    extents: Vec<Extent>,
    /// `(offset, length)` of every range that reads as zeros without data behind it, in order
    /// and within the size.
    pub holes: Vec<(u64, u64)>,
    /// Bytes of the file backed by written blocks (`st_blocks * 512`).
    pub allocated: u64,
}

impl FileMap {
    /// Builds the map of a file of `size` bytes from its extents; `None` if they overlap or
    /// are out of order (a damaged tree).
    pub(super) fn new(extents: Vec<Extent>, block_size: u64, size: u64) -> Option<FileMap> {
        let mut holes: Vec<(u64, u64)> = Vec::new();
        let mut allocated = 0u64;
        let mut position = 0u64;
        let mut next_free_block = 0u64;
        for extent in &extents {
            if extent.logical < next_free_block || extent.length == 0 {
                return None;
            }
            next_free_block = extent.logical.checked_add(extent.length)?;
            if !extent.initialized {
                continue;
            }
            let start = extent.logical.checked_mul(block_size)?.min(size);
            let end = next_free_block.checked_mul(block_size)?.min(size);
            if start >= end {
                continue;
            }
            if start > position {
                holes.push((position, start - position));
            }
            // Whole blocks, as st_blocks counts them.
            allocated += (end - start).div_ceil(block_size) * block_size;
            position = end;
        }
        if position < size {
            holes.push((position, size - position));
        }
        Some(FileMap {
            size,
            block_size,
            extents,
            holes,
            allocated,
        })
    }

    /// Reads up to `length` bytes at `offset` (fewer only at the end of the file): written
    /// extents from the device (a block the journal replaces from its journal block, as in
    /// `data=journal` mode), everything else as zeros.
    pub(super) fn read(
        &self,
        device: &dyn BlockDevice,
        journal: &BTreeMap<u64, u64>,
        offset: u64,
        length: u64,
    ) -> std::io::Result<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let end = offset.saturating_add(length).min(self.size);
        let mut buffer = vec![0u8; (end - offset) as usize];
        let first = self
            .extents
            .partition_point(|extent| (extent.logical + extent.length) * self.block_size <= offset);
        for extent in &self.extents[first..] {
            let extent_start = extent.logical * self.block_size;
            if extent_start >= end {
                break;
            }
            if !extent.initialized {
                continue;
            }
            let from = extent_start.max(offset);
            let to = ((extent.logical + extent.length) * self.block_size).min(end);
            read_mapped(
                device,
                journal,
                self.block_size,
                extent.physical * self.block_size + (from - extent_start),
                &mut buffer[(from - offset) as usize..(to - offset) as usize],
            )?;
        }
        Ok(buffer)
    }
}

/// Reads `buffer` from device byte `offset`, taking each block the journal replaces from its
/// journal block instead; one device read when the journal replaces none of them.
fn read_mapped(
    device: &dyn BlockDevice,
    journal: &BTreeMap<u64, u64>,
    block_size: u64,
    offset: u64,
    buffer: &mut [u8],
) -> std::io::Result<()> {
    let first_block = offset / block_size;
    let end = offset + buffer.len() as u64;
    if journal
        .range(first_block..end.div_ceil(block_size))
        .next()
        .is_none()
    {
        return device.read_at(offset, buffer);
    }
    let mut position = offset;
    while position < end {
        let block = position / block_size;
        let piece_end = ((block + 1) * block_size).min(end);
        let source = match journal.get(&block) {
            Some(replacement) => replacement * block_size + position % block_size,
            None => position,
        };
        device.read_at(
            source,
            &mut buffer[(position - offset) as usize..(piece_end - offset) as usize],
        )?;
        position = piece_end;
    }
    Ok(())
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

/// A file's extents from its `i_block` (the tree's root node), reading deeper nodes with
/// `read_block` (a whole block by device block number). Every extent must end within
/// `blocks_count`. `None` for any damage: a bad magic, a depth past 5 or not one less than its
/// parent's, more entries than the node holds, a tree of more than `MAXIMUM_TREE_BLOCKS`
/// nodes, or a node that cannot be read.
pub(super) fn parse_extent_tree(
    i_block: &[u8],
    blocks_count: u64,
    read_block: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
) -> Option<Vec<Extent>> {
    let mut extents = Vec::new();
    let mut blocks_read = 0usize;
    walk_node(
        i_block,
        None,
        blocks_count,
        read_block,
        &mut blocks_read,
        &mut extents,
    )?;
    Some(extents)
}

fn walk_node(
    node: &[u8],
    expected_depth: Option<u16>,
    blocks_count: u64,
    read_block: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
    blocks_read: &mut usize,
    extents: &mut Vec<Extent>,
) -> Option<()> {
    if u16_at(node, 0)? != EXTENT_MAGIC {
        return None;
    }
    let entries = usize::from(u16_at(node, 2)?);
    let maximum = usize::from(u16_at(node, 4)?);
    let depth = u16_at(node, 6)?;
    let capacity = node.len().checked_sub(ENTRY_SIZE)? / ENTRY_SIZE;
    if depth > MAXIMUM_DEPTH
        || expected_depth.is_some_and(|expected| expected != depth)
        || entries > maximum
        || maximum > capacity
    {
        return None;
    }
    for index in 0..entries {
        let entry = node.get(ENTRY_SIZE * (index + 1)..ENTRY_SIZE * (index + 2))?;
        if depth == 0 {
            let logical = u64::from(u32_at(entry, 0)?);
            let raw_length = u16_at(entry, 4)?;
            let physical = u64::from(u16_at(entry, 6)?) << 32 | u64::from(u32_at(entry, 8)?);
            let (length, initialized) = if raw_length > MAXIMUM_INITIALIZED_LENGTH {
                (raw_length - MAXIMUM_INITIALIZED_LENGTH, false)
            } else {
                (raw_length, true)
            };
            let length = u64::from(length);
            if length == 0 || physical.checked_add(length)? > blocks_count {
                return None;
            }
            extents.push(Extent {
                logical,
                length,
                physical,
                initialized,
            });
        } else {
            let child = u64::from(u16_at(entry, 8)?) << 32 | u64::from(u32_at(entry, 4)?);
            if child == 0 || child >= blocks_count {
                return None;
            }
            *blocks_read += 1;
            if *blocks_read > MAXIMUM_TREE_BLOCKS {
                return None;
            }
            let block = read_block(child)?;
            walk_node(
                &block,
                Some(depth - 1),
                blocks_count,
                read_block,
                blocks_read,
                extents,
            )?;
        }
    }
    Some(())
}

/// The extents of a block-mapped (ext2/ext3) file of `file_blocks` blocks from its `i_block`:
/// 12 direct pointers, then a single, a double and a triple indirect block, each holding
/// `block_size / 4` pointers; a zero pointer is a hole (its whole subtree). Consecutive blocks
/// stored consecutively become one extent. `None` for a pointer past `blocks_count`, more than
/// `MAXIMUM_INDIRECT_BLOCKS` indirect blocks, more than `MAXIMUM_EXTENTS` extents or an
/// indirect block that cannot be read.
pub(super) fn parse_block_map(
    i_block: &[u8],
    block_size: u64,
    blocks_count: u64,
    file_blocks: u64,
    read_block: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
) -> Option<Vec<Extent>> {
    let mut walk = BlockMapWalk {
        pointers_per_block: block_size / 4,
        blocks_count,
        file_blocks,
        read_block,
        indirect_blocks_read: 0,
        extents: Vec::new(),
    };
    let mut logical = 0u64;
    for (slot, depth) in (0..12)
        .map(|slot| (slot, 0))
        .chain([(12, 1), (13, 2), (14, 3)])
    {
        if logical >= file_blocks {
            break;
        }
        let pointer = u64::from(u32_at(i_block, slot * 4)?);
        walk.visit(pointer, depth, logical)?;
        logical = logical.checked_add(walk.pointers_per_block.checked_pow(depth)?)?;
    }
    Some(walk.extents)
}

struct BlockMapWalk<'a> {
    pointers_per_block: u64,
    blocks_count: u64,
    file_blocks: u64,
    read_block: &'a mut dyn FnMut(u64) -> Option<Vec<u8>>,
    indirect_blocks_read: usize,
    extents: Vec<Extent>,
}

impl BlockMapWalk<'_> {
    /// Visits `pointer`, which maps file blocks from `logical`: a data block at depth 0,
    /// otherwise an indirect block of pointers one depth lower.
    fn visit(&mut self, pointer: u64, depth: u32, logical: u64) -> Option<()> {
        if pointer == 0 {
            return Some(());
        }
        if pointer >= self.blocks_count {
            return None;
        }
        if depth == 0 {
            match self.extents.last_mut() {
                Some(last)
                    if last.logical + last.length == logical
                        && last.physical + last.length == pointer =>
                {
                    last.length += 1;
                }
                _ => {
                    if self.extents.len() >= MAXIMUM_EXTENTS {
                        return None;
                    }
                    self.extents.push(Extent {
                        logical,
                        length: 1,
                        physical: pointer,
                        initialized: true,
                    });
                }
            }
            return Some(());
        }
        self.indirect_blocks_read += 1;
        if self.indirect_blocks_read > MAXIMUM_INDIRECT_BLOCKS {
            return None;
        }
        let block = (self.read_block)(pointer)?;
        let child_span = self.pointers_per_block.checked_pow(depth - 1)?;
        for index in 0..self.pointers_per_block {
            let child_logical = logical.checked_add(index.checked_mul(child_span)?)?;
            if child_logical >= self.file_blocks {
                break;
            }
            let child = u64::from(u32_at(&block, (index * 4) as usize)?);
            self.visit(child, depth - 1, child_logical)?;
        }
        Some(())
    }
}

/// What the superblock and the group descriptors say about where inodes are.
#[derive(Debug, Clone)]
struct Geometry {
    block_size: u64,
    blocks_count: u64,
    inodes_count: u32,
    inodes_per_group: u32,
    inode_size: u64,
    descriptor_size: u64,
    /// Byte offset of the first group descriptor.
    descriptor_table: u64,
}

/// The parts of an inode this reader uses.
struct RawInode {
    mode: u16,
    flags: u32,
    size: u64,
    i_block: [u8; I_BLOCK_SIZE],
}

/// Reads extents and directory entries of one ext4 file system on a device. `geometry` is
/// `None` when the file system is one this reader does not trust itself with: then every file
/// is all data.
pub(super) struct ExtentReader {
    device: Arc<dyn BlockDevice>,
    geometry: Option<Geometry>,
    /// File system block -> the device block of its newest copy in the journal.
    journal: BTreeMap<u64, u64>,
    /// Path -> inode number, filled as directories are scanned.
    inodes: HashMap<Vec<u8>, u32>,
    /// Directories already scanned (or found unreadable), by path.
    scanned: HashSet<Vec<u8>>,
    /// Path -> the file's map (`None`: not known, all data). Shadows never change, so an
    /// answer stays true for the life of the view.
    maps: HashMap<Vec<u8>, Option<Arc<FileMap>>>,
}

impl ExtentReader {
    pub(super) fn new(device: Arc<dyn BlockDevice>) -> ExtentReader {
        let mut reader = ExtentReader {
            device,
            geometry: None,
            journal: BTreeMap::new(),
            inodes: HashMap::new(),
            scanned: HashSet::new(),
            maps: HashMap::new(),
        };
        reader.geometry = reader.read_geometry();
        if reader.geometry.is_some() {
            match reader.journal_map() {
                Some(journal) => reader.journal = journal,
                None => reader.geometry = None,
            }
        }
        reader
    }

    /// `length` bytes at device byte `offset`, through the journal's replacements.
    fn read_bytes(&self, offset: u64, length: usize) -> Option<Vec<u8>> {
        let mut buffer = vec![0u8; length];
        if offset.checked_add(length as u64)? > self.device.size() {
            return None;
        }
        let block_size = self
            .geometry
            .as_ref()
            .map_or(1024, |geometry| geometry.block_size);
        read_mapped(
            self.device.as_ref(),
            &self.journal,
            block_size,
            offset,
            &mut buffer,
        )
        .ok()?;
        Some(buffer)
    }

    fn read_geometry(&self) -> Option<Geometry> {
        let superblock = self.read_bytes(SUPERBLOCK_OFFSET, 1024)?;
        if u16_at(&superblock, 0x38)? != SUPERBLOCK_MAGIC {
            return None;
        }
        let incompatible = u32_at(&superblock, 0x60)?;
        // meta_bg moves the descriptors, and a journal device is elsewhere.
        if incompatible & (INCOMPAT_META_BG | INCOMPAT_JOURNAL_DEV) != 0 {
            return None;
        }
        let log_block_size = u32_at(&superblock, 0x18)?;
        if log_block_size > 6 {
            return None;
        }
        let block_size = 1024u64 << log_block_size;
        let is_64bit = incompatible & INCOMPAT_64BIT != 0;
        let blocks_count_high = if is_64bit {
            u64::from(u32_at(&superblock, 0x150)?)
        } else {
            0
        };
        let blocks_count = blocks_count_high << 32 | u64::from(u32_at(&superblock, 0x4)?);
        let inode_size = if u32_at(&superblock, 0x4C)? == 0 {
            128
        } else {
            u64::from(u16_at(&superblock, 0x58)?)
        };
        let descriptor_size = if is_64bit {
            u64::from(u16_at(&superblock, 0xFE)?)
        } else {
            32
        };
        let inodes_per_group = u32_at(&superblock, 0x28)?;
        if inode_size < 128
            || inode_size > block_size
            || !(32..=block_size).contains(&descriptor_size)
            || inodes_per_group == 0
            || blocks_count.checked_mul(block_size)? > self.device.size()
        {
            return None;
        }
        let first_data_block = u64::from(u32_at(&superblock, 0x14)?);
        Some(Geometry {
            block_size,
            blocks_count,
            inodes_count: u32_at(&superblock, 0x0)?,
            inodes_per_group,
            inode_size,
            descriptor_size,
            descriptor_table: (first_data_block + 1) * block_size,
        })
    }

    /// The blocks the journal replaces (empty when it needs no recovery), as device blocks;
    /// `None` for a journal this reader cannot replay with certainty. Called before any
    /// replacement is known, so the journal inode is read in place, as the kernel reads it.
    fn journal_map(&self) -> Option<BTreeMap<u64, u64>> {
        let geometry = self.geometry.as_ref()?;
        let superblock = self.read_bytes(SUPERBLOCK_OFFSET, 1024)?;
        let compatible = u32_at(&superblock, 0x5C)?;
        let incompatible = u32_at(&superblock, 0x60)?;
        if compatible & COMPAT_HAS_JOURNAL == 0 || incompatible & INCOMPAT_RECOVER == 0 {
            return Some(BTreeMap::new());
        }
        let inode = self.read_inode(u32_at(&superblock, 0xE0)?)?;
        let extents = self.extents_of(&inode)?;
        let journal_length = extents
            .iter()
            .map(|extent| extent.logical + extent.length)
            .max()?;
        let device_block = |journal_block: u64| {
            extents
                .iter()
                .find(|extent| {
                    extent.initialized
                        && (extent.logical..extent.logical + extent.length).contains(&journal_block)
                })
                .map(|extent| extent.physical + journal_block - extent.logical)
        };
        let block_size = geometry.block_size;
        let replaced =
            ext4_journal::replay_map(journal_length, block_size, &mut |journal_block| {
                self.read_bytes(
                    device_block(journal_block)? * block_size,
                    block_size as usize,
                )
            })?;
        replaced
            .into_iter()
            .map(|(block, journal_block)| {
                let source = device_block(journal_block)?;
                (block < geometry.blocks_count).then_some((block, source))
            })
            .collect()
    }

    fn read_inode(&self, number: u32) -> Option<RawInode> {
        let geometry = self.geometry.as_ref()?;
        if number == 0 || number > geometry.inodes_count {
            return None;
        }
        let group = u64::from((number - 1) / geometry.inodes_per_group);
        let index = u64::from((number - 1) % geometry.inodes_per_group);
        let descriptor = self.read_bytes(
            geometry.descriptor_table + group * geometry.descriptor_size,
            geometry.descriptor_size as usize,
        )?;
        let table_high = if geometry.descriptor_size >= 64 {
            u64::from(u32_at(&descriptor, 0x28)?)
        } else {
            0
        };
        let inode_table = table_high << 32 | u64::from(u32_at(&descriptor, 0x8)?);
        if inode_table == 0 || inode_table >= geometry.blocks_count {
            return None;
        }
        let inode = self.read_bytes(
            inode_table * geometry.block_size + index * geometry.inode_size,
            128,
        )?;
        let mut i_block = [0u8; I_BLOCK_SIZE];
        i_block.copy_from_slice(inode.get(0x28..0x28 + I_BLOCK_SIZE)?);
        Some(RawInode {
            mode: u16_at(&inode, 0x0)?,
            flags: u32_at(&inode, 0x20)?,
            size: u64::from(u32_at(&inode, 0x6C)?) << 32 | u64::from(u32_at(&inode, 0x4)?),
            i_block,
        })
    }

    /// The extents of an inode that uses an extent tree (not inline data, not block maps).
    fn extents_of(&self, inode: &RawInode) -> Option<Vec<Extent>> {
        let geometry = self.geometry.as_ref()?;
        if inode.flags & INODE_FLAG_INLINE_DATA != 0 {
            return None;
        }
        let block_size = geometry.block_size;
        let mut read_block = |block: u64| self.read_bytes(block * block_size, block_size as usize);
        if inode.flags & INODE_FLAG_EXTENTS != 0 {
            parse_extent_tree(&inode.i_block, geometry.blocks_count, &mut read_block)
        } else {
            parse_block_map(
                &inode.i_block,
                block_size,
                geometry.blocks_count,
                inode.size.div_ceil(block_size),
                &mut read_block,
            )
        }
    }

    /// The `(name, inode)` of every entry of the directory with inode `directory`, from its
    /// linear entries; `None` if it is not a readable extent-mapped directory or is larger than
    /// `MAXIMUM_DIRECTORY_BLOCKS`.
    fn scan_directory(&self, directory: u32) -> Option<Vec<(Vec<u8>, u32)>> {
        let geometry = self.geometry.as_ref()?;
        let inode = self.read_inode(directory)?;
        if inode.mode & MODE_TYPE_MASK != MODE_DIRECTORY {
            return None;
        }
        let extents = self.extents_of(&inode)?;
        let mut entries = Vec::new();
        let mut blocks_scanned = 0u64;
        for extent in extents.iter().filter(|extent| extent.initialized) {
            for block in extent.physical..extent.physical + extent.length {
                blocks_scanned += 1;
                if blocks_scanned > MAXIMUM_DIRECTORY_BLOCKS {
                    return None;
                }
                let bytes =
                    self.read_bytes(block * geometry.block_size, geometry.block_size as usize)?;
                for (entry_inode, entry_name) in directory_entries(&bytes)? {
                    entries.push((entry_name.to_vec(), entry_inode));
                }
            }
        }
        Some(entries)
    }

    /// The inode number behind an absolute path, walking down from the root.
    fn resolve(&mut self, path: &[u8]) -> Option<u32> {
        if path == b"/" {
            return Some(ROOT_INODE);
        }
        if let Some(inode) = self.inodes.get(path) {
            return Some(*inode);
        }
        let split = path.iter().rposition(|byte| *byte == b'/')?;
        let parent_path = if split == 0 {
            &b"/"[..]
        } else {
            &path[..split]
        };
        // A directory is scanned once: what it did not hold then, it does not hold.
        if self.scanned.contains(parent_path) {
            return None;
        }
        let parent = self.resolve(parent_path)?;
        let entries = self.scan_directory(parent).unwrap_or_default();
        // Every entry is kept (a directory's scan is bounded), so listing a large directory
        // scans it once, not once per file.
        if self.inodes.len() + entries.len() > MAXIMUM_CACHED_PATHS {
            self.inodes.clear();
            self.scanned.clear();
        }
        self.scanned.insert(parent_path.to_vec());
        self.inodes.extend(
            entries
                .into_iter()
                .map(|(name, inode)| (child_path(parent_path, &name), inode)),
        );
        self.inodes.get(path).copied()
    }

    /// The map of the regular file at `path` whose size `ext4-view` reports as `size`;
    /// `None` when it is not known for sure (the file then shows as all data).
    pub(super) fn file_map(&mut self, path: &[u8], size: u64) -> Option<Arc<FileMap>> {
        self.geometry.as_ref()?;
        if let Some(known) = self.maps.get(path) {
            return known.clone();
        }
        let map = self.build_file_map(path, size).map(Arc::new);
        if self.maps.len() >= MAXIMUM_CACHED_PATHS {
            self.maps.clear();
        }
        self.maps.insert(path.to_vec(), map.clone());
        map
    }

    fn build_file_map(&mut self, path: &[u8], size: u64) -> Option<FileMap> {
        let geometry = self.geometry.clone()?;
        let number = self.resolve(path)?;
        let inode = self.read_inode(number)?;
        // A size that disagrees means this is not the inode ext4-view reads.
        if inode.mode & MODE_TYPE_MASK != MODE_REGULAR || inode.size != size {
            return None;
        }
        FileMap::new(self.extents_of(&inode)?, geometry.block_size, size)
    }

    /// Reads a file through its map (see [`FileMap::read`]).
    pub(super) fn read(&self, map: &FileMap, offset: u64, length: u64) -> std::io::Result<Vec<u8>> {
        map.read(self.device.as_ref(), &self.journal, offset, length)
    }
}

/// The `(inode, name)` of every entry in use in one directory block ("." and ".." excluded);
/// `None` if an entry's length runs past the block or cannot hold its name.
fn directory_entries(block: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    while offset < block.len() {
        let inode = u32_at(block, offset)?;
        let raw_length = usize::from(u16_at(block, offset + 4)?);
        // Blocks of 64 KiB store a whole-block entry as 0 or 65535, and larger lengths with
        // their low bits moved up.
        let record_length = if block.len() >= 65536 && (raw_length == 0 || raw_length == 65535) {
            block.len()
        } else {
            (raw_length & 65532) | ((raw_length & 3) << 16)
        };
        let name_length = usize::from(*block.get(offset + 6)?);
        if record_length < 8
            || record_length % 4 != 0
            || offset + record_length > block.len()
            || 8 + name_length > record_length
        {
            return None;
        }
        let name = &block[offset + 8..offset + 8 + name_length];
        if inode != 0 && name != b"." && name != b".." {
            entries.push((inode, name));
        }
        offset += record_length;
    }
    Some(entries)
}

#[cfg(test)]
mod tests;
