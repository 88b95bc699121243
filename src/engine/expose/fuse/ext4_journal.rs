//! Which blocks of an ext4 file system its jbd2 journal replaces: the committed transactions
//! still in the log (a crash-consistent shadow of a mounted file system has some), replayed in
//! memory the way the kernel's recovery would write them, so that `ext4_extents` reads the
//! metadata the files really have. Nothing is written.
//!
//! Layout (all big-endian): the journal superblock in journal block 0 (`s_blocksize`,
//! `s_maxlen`, `s_first`, `s_sequence`, `s_start`, features); from `s_start`, blocks that begin
//! with the magic and the expected sequence: descriptor blocks (tags naming the file system
//! block that each following journal block holds), revoke blocks (blocks that earlier
//! transactions must not replay) and a commit block closing each transaction. A transaction
//! without its commit block is not replayed.
//!
//! **Invariant:** any journal this reader does not fully understand (an escaped block, fast
//! commits, asynchronous commits, an unknown feature, a bad superblock) gives `None`, and the
//! caller trusts nothing it would have read.

use std::collections::{BTreeMap, HashMap};

const MAGIC: u32 = 0xC03B_3998;
const DESCRIPTOR_BLOCK: u32 = 1;
const COMMIT_BLOCK: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;
const REVOKE_BLOCK: u32 = 5;

const FEATURE_REVOKE: u32 = 0x1;
const FEATURE_64BIT: u32 = 0x2;
const FEATURE_CHECKSUM_V2: u32 = 0x8;
const FEATURE_CHECKSUM_V3: u32 = 0x10;
const UNDERSTOOD_FEATURES: u32 =
    FEATURE_REVOKE | FEATURE_64BIT | FEATURE_CHECKSUM_V2 | FEATURE_CHECKSUM_V3;

const TAG_ESCAPED: u32 = 0x1;
const TAG_SAME_UUID: u32 = 0x2;
const TAG_LAST: u32 = 0x8;
const HEADER_SIZE: usize = 12;
const UUID_SIZE: usize = 16;

fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn be16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

/// One committed transaction: the file system blocks it writes (block -> journal block), and
/// the blocks it revokes.
#[derive(Default)]
struct Transaction {
    writes: Vec<(u64, u64)>,
    revokes: Vec<u64>,
}

/// File system block -> the journal block (counted from the journal's start) that holds its
/// newest committed content, for a journal of `journal_length` blocks of `block_size` bytes
/// read with `read` (a whole journal block by its number). An empty map for a clean journal.
pub(super) fn replay_map(
    journal_length: u64,
    block_size: u64,
    read: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
) -> Option<BTreeMap<u64, u64>> {
    let superblock = read(0)?;
    let block_type = be32(&superblock, 4)?;
    if be32(&superblock, 0)? != MAGIC || !matches!(block_type, SUPERBLOCK_V1 | SUPERBLOCK_V2) {
        return None;
    }
    if u64::from(be32(&superblock, 0xC)?) != block_size {
        return None;
    }
    let maximum = u64::from(be32(&superblock, 0x10)?);
    let first = u64::from(be32(&superblock, 0x14)?);
    let mut sequence = be32(&superblock, 0x18)?;
    let start = u64::from(be32(&superblock, 0x1C)?);
    if start == 0 {
        return Some(BTreeMap::new());
    }
    if maximum > journal_length
        || first == 0
        || first >= maximum
        || !(first..maximum).contains(&start)
    {
        return None;
    }
    let features = if block_type == SUPERBLOCK_V2 {
        be32(&superblock, 0x28)?
    } else {
        0
    };
    if features & !UNDERSTOOD_FEATURES != 0 {
        return None;
    }
    let is_64bit = features & FEATURE_64BIT != 0;
    let checksum_v3 = features & FEATURE_CHECKSUM_V3 != 0;
    let has_tail = features & (FEATURE_CHECKSUM_V2 | FEATURE_CHECKSUM_V3) != 0;
    let tag_size = if checksum_v3 {
        16
    } else {
        8 + if features & FEATURE_CHECKSUM_V2 != 0 {
            2
        } else {
            0
        } + if is_64bit { 4 } else { 0 }
    };
    let descriptor_end = block_size as usize - if has_tail { 4 } else { 0 };
    let next = |position: u64| {
        if position + 1 >= maximum {
            first
        } else {
            position + 1
        }
    };

    let mut committed: Vec<Transaction> = Vec::new();
    let mut open = Transaction::default();
    let mut position = start;
    // Each journal block is visited at most once: the log cannot be longer than the journal.
    let mut visited = 0u64;
    loop {
        visited += 1;
        if visited > maximum {
            break;
        }
        let block = read(position)?;
        if be32(&block, 0)? != MAGIC || be32(&block, 8)? != sequence {
            break;
        }
        match be32(&block, 4)? {
            DESCRIPTOR_BLOCK => {
                let mut offset = HEADER_SIZE;
                while offset + tag_size <= descriptor_end {
                    let low = u64::from(be32(&block, offset)?);
                    let flags = if checksum_v3 {
                        be32(&block, offset + 4)?
                    } else {
                        u32::from(be16(&block, offset + 6)?)
                    };
                    let high = if is_64bit {
                        u64::from(be32(&block, offset + 8)?)
                    } else {
                        0
                    };
                    // A block that began with the magic is stored with it zeroed: not read here.
                    if flags & TAG_ESCAPED != 0 {
                        return None;
                    }
                    position = next(position);
                    visited += 1;
                    open.writes.push((high << 32 | low, position));
                    offset += tag_size;
                    if flags & TAG_SAME_UUID == 0 {
                        offset += UUID_SIZE;
                    }
                    if flags & TAG_LAST != 0 {
                        break;
                    }
                }
            }
            REVOKE_BLOCK => {
                let used = (be32(&block, HEADER_SIZE)? as usize).min(block.len());
                let record_size = if is_64bit { 8 } else { 4 };
                let mut offset = HEADER_SIZE + 4;
                while offset + record_size <= used {
                    let revoked = if is_64bit {
                        u64::from(be32(&block, offset)?) << 32
                            | u64::from(be32(&block, offset + 4)?)
                    } else {
                        u64::from(be32(&block, offset)?)
                    };
                    open.revokes.push(revoked);
                    offset += record_size;
                }
            }
            COMMIT_BLOCK => {
                committed.push(std::mem::take(&mut open));
                sequence = sequence.wrapping_add(1);
            }
            _ => return None,
        }
        position = next(position);
    }

    // A block revoked by transaction n is not replayed from transactions up to n.
    let mut revoked_until: HashMap<u64, usize> = HashMap::new();
    for (index, transaction) in committed.iter().enumerate() {
        for block in &transaction.revokes {
            revoked_until.insert(*block, index);
        }
    }
    let mut map = BTreeMap::new();
    for (index, transaction) in committed.iter().enumerate() {
        for (block, journal_block) in &transaction.writes {
            if revoked_until
                .get(block)
                .is_some_and(|until| *until >= index)
            {
                continue;
            }
            map.insert(*block, *journal_block);
        }
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK_SIZE: usize = 1024;

    fn block(block_type: u32, sequence: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; BLOCK_SIZE];
        bytes[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        bytes[4..8].copy_from_slice(&block_type.to_be_bytes());
        bytes[8..12].copy_from_slice(&sequence.to_be_bytes());
        bytes
    }

    fn put(bytes: &mut [u8], offset: usize, value: u32) {
        bytes[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
    }

    /// A journal of 32 blocks (log from block 1), checksum v3 and 64bit tags, sequence 7 first.
    fn superblock(start: u32, features: u32) -> Vec<u8> {
        let mut bytes = block(SUPERBLOCK_V2, 0);
        put(&mut bytes, 0xC, BLOCK_SIZE as u32);
        put(&mut bytes, 0x10, 32);
        put(&mut bytes, 0x14, 1);
        put(&mut bytes, 0x18, 7);
        put(&mut bytes, 0x1C, start);
        put(&mut bytes, 0x28, features);
        bytes
    }

    /// A descriptor with checksum-v3 tags for `blocks` (the last flagged), each with `flags`.
    fn descriptor(sequence: u32, blocks: &[u64], flags: u32) -> Vec<u8> {
        let mut bytes = block(DESCRIPTOR_BLOCK, sequence);
        let mut offset = HEADER_SIZE;
        for (index, target) in blocks.iter().enumerate() {
            put(&mut bytes, offset, *target as u32);
            let last = if index + 1 == blocks.len() {
                TAG_LAST
            } else {
                0
            };
            put(&mut bytes, offset + 4, flags | TAG_SAME_UUID | last);
            put(&mut bytes, offset + 8, (*target >> 32) as u32);
            offset += 16;
        }
        bytes
    }

    fn revoke(sequence: u32, blocks: &[u64]) -> Vec<u8> {
        let mut bytes = block(REVOKE_BLOCK, sequence);
        put(&mut bytes, HEADER_SIZE, (16 + 8 * blocks.len()) as u32);
        for (index, target) in blocks.iter().enumerate() {
            put(&mut bytes, 16 + 8 * index, (*target >> 32) as u32);
            put(&mut bytes, 20 + 8 * index, *target as u32);
        }
        bytes
    }

    fn replay(journal: &[Vec<u8>]) -> Option<BTreeMap<u64, u64>> {
        replay_map(32, BLOCK_SIZE as u64, &mut |index| {
            Some(
                journal
                    .get(index as usize)
                    .cloned()
                    .unwrap_or(vec![0; BLOCK_SIZE]),
            )
        })
    }

    const FEATURES: u32 = FEATURE_REVOKE | FEATURE_64BIT | FEATURE_CHECKSUM_V3;

    #[test]
    fn committed_transactions_replay_and_revokes_and_open_ones_do_not() {
        let data = vec![0x11u8; BLOCK_SIZE];
        let journal = vec![
            superblock(1, FEATURES),
            // Transaction 7: blocks 100 and 0x1_0000_0200.
            descriptor(7, &[100, 0x1_0000_0200], 0),
            data.clone(),
            data.clone(),
            block(COMMIT_BLOCK, 7),
            // Transaction 8: block 100 again (newer), block 300, then revokes 0x1_0000_0200.
            descriptor(8, &[100, 300], 0),
            data.clone(),
            data.clone(),
            revoke(8, &[0x1_0000_0200]),
            block(COMMIT_BLOCK, 8),
            // Transaction 9 never committed.
            descriptor(9, &[400], 0),
            data,
        ];
        assert_eq!(replay(&journal), Some(BTreeMap::from([(100, 6), (300, 7)])));
    }

    #[test]
    fn a_clean_journal_replaces_nothing() {
        assert_eq!(replay(&[superblock(0, FEATURES)]), Some(BTreeMap::new()));
    }

    #[test]
    fn journals_not_fully_understood_give_no_map() {
        let data = vec![0u8; BLOCK_SIZE];
        let escaped = vec![
            superblock(1, FEATURES),
            descriptor(7, &[100], TAG_ESCAPED),
            data.clone(),
            block(COMMIT_BLOCK, 7),
        ];
        assert_eq!(replay(&escaped), None, "an escaped block");
        let fast_commit = vec![superblock(1, FEATURES | 0x20)];
        assert_eq!(replay(&fast_commit), None, "fast commits");
        let asynchronous = vec![superblock(1, FEATURES | 0x4)];
        assert_eq!(replay(&asynchronous), None, "asynchronous commits");
        let mut wrong_size = superblock(1, FEATURES);
        put(&mut wrong_size, 0xC, 4096);
        assert_eq!(replay(&[wrong_size]), None, "another block size");
        assert_eq!(
            replay(&[superblock(40, FEATURES)]),
            None,
            "a start past the log"
        );
        assert_eq!(replay(&[data]), None, "no superblock");
        let unknown_block = vec![superblock(1, FEATURES), block(9, 7)];
        assert_eq!(replay(&unknown_block), None, "an unknown block type");
    }

    #[test]
    fn the_log_wraps_at_the_end_of_the_journal() {
        let data = vec![0u8; BLOCK_SIZE];
        let mut journal = vec![vec![0u8; BLOCK_SIZE]; 32];
        journal[0] = superblock(30, FEATURES);
        journal[30] = descriptor(7, &[100, 101], 0);
        journal[31] = data.clone();
        journal[1] = data;
        journal[2] = block(COMMIT_BLOCK, 7);
        assert_eq!(
            replay(&journal),
            Some(BTreeMap::from([(100, 31), (101, 1)]))
        );
    }
}
