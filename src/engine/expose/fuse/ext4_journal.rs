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
//! Checksums (journal checksum v2/v3, crc32c seeded with the journal's UUID) are checked as
//! the kernel's recovery checks them: a commit block whose checksum fails ends the log there
//! (that transaction is not replayed); a descriptor, revoke or data block whose checksum fails
//! makes the kernel refuse the journal, and so gives `None` here.
//!
//! **Invariant:** any journal this reader does not fully understand (an escaped block, fast
//! commits, asynchronous commits, an unknown feature, a bad superblock or checksum) gives
//! `None`, and the caller trusts nothing it would have read.

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
const SUPERBLOCK_UUID_OFFSET: usize = 0x30;
const COMMIT_CHECKSUM_OFFSET: usize = 16;

/// crc32c (Castagnoli, reflected) as the kernel's `crc32c()` computes it: no inversion on
/// entry or exit, so that checksums chain (`update(update(seed, a), b)`).
fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut index = 0;
        while index < 256 {
            let mut value = index as u32;
            let mut bit = 0;
            while bit < 8 {
                value = if value & 1 != 0 {
                    (value >> 1) ^ 0x82F6_3B78
                } else {
                    value >> 1
                };
                bit += 1;
            }
            table[index] = value;
            index += 1;
        }
        table
    };
    for byte in data {
        crc = TABLE[((crc ^ u32::from(*byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The checksum of `block` with the 4 bytes at `field` counted as zeros.
fn block_checksum(seed: u32, block: &[u8], field: usize) -> u32 {
    let crc = crc32c_update(seed, &block[..field]);
    let crc = crc32c_update(crc, &[0; 4]);
    crc32c_update(crc, &block[field + 4..])
}

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
    let seed = crc32c_update(
        !0,
        superblock.get(SUPERBLOCK_UUID_OFFSET..SUPERBLOCK_UUID_OFFSET + UUID_SIZE)?,
    );
    // The tail checksum of a descriptor or revoke block, when the journal has them.
    let tail_is_valid = |block: &[u8]| {
        !has_tail
            || be32(block, descriptor_end) == Some(block_checksum(seed, block, descriptor_end))
    };
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
                if !tail_is_valid(&block) {
                    return None;
                }
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
                    if has_tail {
                        let data = read(position)?;
                        let sum =
                            crc32c_update(crc32c_update(seed, &sequence.to_be_bytes()), &data);
                        let valid = if checksum_v3 {
                            be32(&block, offset + 12)? == sum
                        } else {
                            be16(&block, offset + 4)? == sum as u16
                        };
                        if !valid {
                            return None;
                        }
                    }
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
                if !tail_is_valid(&block) {
                    return None;
                }
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
                if has_tail
                    && be32(&block, COMMIT_CHECKSUM_OFFSET)?
                        != block_checksum(seed, &block, COMMIT_CHECKSUM_OFFSET)
                {
                    // The kernel ends the log at a commit that fails its checksum.
                    break;
                }
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
    /// The journal's UUID in these tests.
    const UUID: [u8; 16] = *b"diskshadow-jrnl!";

    fn seed() -> u32 {
        crc32c_update(!0, &UUID)
    }

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
        bytes[SUPERBLOCK_UUID_OFFSET..SUPERBLOCK_UUID_OFFSET + 16].copy_from_slice(&UUID);
        bytes
    }

    fn seal_tail(bytes: &mut [u8]) {
        let sum = block_checksum(seed(), bytes, BLOCK_SIZE - 4);
        put(bytes, BLOCK_SIZE - 4, sum);
    }

    /// A descriptor with checksum-v3 tags for `(target, data)` (the last flagged), each with
    /// `flags`, and the data blocks that follow it.
    fn descriptor(sequence: u32, tags: &[(u64, &[u8])], flags: u32) -> Vec<Vec<u8>> {
        let mut bytes = block(DESCRIPTOR_BLOCK, sequence);
        let mut offset = HEADER_SIZE;
        for (index, (target, data)) in tags.iter().enumerate() {
            put(&mut bytes, offset, *target as u32);
            let last = if index + 1 == tags.len() { TAG_LAST } else { 0 };
            put(&mut bytes, offset + 4, flags | TAG_SAME_UUID | last);
            put(&mut bytes, offset + 8, (*target >> 32) as u32);
            let sum = crc32c_update(crc32c_update(seed(), &sequence.to_be_bytes()), data);
            put(&mut bytes, offset + 12, sum);
            offset += 16;
        }
        seal_tail(&mut bytes);
        std::iter::once(bytes)
            .chain(tags.iter().map(|(_, data)| data.to_vec()))
            .collect()
    }

    fn revoke(sequence: u32, blocks: &[u64]) -> Vec<u8> {
        let mut bytes = block(REVOKE_BLOCK, sequence);
        put(&mut bytes, HEADER_SIZE, (16 + 8 * blocks.len()) as u32);
        for (index, target) in blocks.iter().enumerate() {
            put(&mut bytes, 16 + 8 * index, (*target >> 32) as u32);
            put(&mut bytes, 20 + 8 * index, *target as u32);
        }
        seal_tail(&mut bytes);
        bytes
    }

    fn commit(sequence: u32) -> Vec<u8> {
        let mut bytes = block(COMMIT_BLOCK, sequence);
        let sum = block_checksum(seed(), &bytes, COMMIT_CHECKSUM_OFFSET);
        put(&mut bytes, COMMIT_CHECKSUM_OFFSET, sum);
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
    const ONES: &[u8] = &[0x11; BLOCK_SIZE];
    const TWOS: &[u8] = &[0x22; BLOCK_SIZE];

    /// Transaction 7 writes blocks 100 and 0x1_0000_0200; transaction 8 writes block 100 again
    /// and block 300, and revokes 0x1_0000_0200; transaction 9 never commits.
    fn three_transactions() -> Vec<Vec<u8>> {
        let mut journal = vec![superblock(1, FEATURES)];
        journal.extend(descriptor(7, &[(100, ONES), (0x1_0000_0200, ONES)], 0));
        journal.push(commit(7));
        journal.extend(descriptor(8, &[(100, TWOS), (300, TWOS)], 0));
        journal.push(revoke(8, &[0x1_0000_0200]));
        journal.push(commit(8));
        journal.extend(descriptor(9, &[(400, ONES)], 0));
        journal
    }

    #[test]
    fn crc32c_is_the_castagnoli_checksum() {
        // The standard check value, with the usual inversion on entry and exit.
        assert_eq!(!crc32c_update(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn committed_transactions_replay_and_revokes_and_open_ones_do_not() {
        assert_eq!(
            replay(&three_transactions()),
            Some(BTreeMap::from([(100, 6), (300, 7)]))
        );
    }

    #[test]
    fn a_commit_that_fails_its_checksum_ends_the_log() {
        let mut journal = three_transactions();
        journal[9][60] ^= 1; // the commit of transaction 8
        assert_eq!(
            replay(&journal),
            Some(BTreeMap::from([(100, 2), (0x1_0000_0200, 3)]))
        );
    }

    #[test]
    fn a_descriptor_revoke_or_data_block_that_fails_its_checksum_gives_no_map() {
        for (what, block) in [("descriptor", 5), ("data", 6), ("revoke", 8)] {
            let mut journal = three_transactions();
            journal[block][BLOCK_SIZE / 2] ^= 1;
            assert_eq!(replay(&journal), None, "{what} block");
        }
    }

    #[test]
    fn a_clean_journal_replaces_nothing() {
        assert_eq!(replay(&[superblock(0, FEATURES)]), Some(BTreeMap::new()));
    }

    #[test]
    fn journals_not_fully_understood_give_no_map() {
        let mut escaped = vec![superblock(1, FEATURES)];
        escaped.extend(descriptor(7, &[(100, ONES)], TAG_ESCAPED));
        escaped.push(commit(7));
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
        assert_eq!(replay(&[vec![0; BLOCK_SIZE]]), None, "no superblock");
        let unknown_block = vec![superblock(1, FEATURES), block(9, 7)];
        assert_eq!(replay(&unknown_block), None, "an unknown block type");
    }

    #[test]
    fn the_log_wraps_at_the_end_of_the_journal() {
        let mut journal = vec![vec![0u8; BLOCK_SIZE]; 32];
        journal[0] = superblock(30, FEATURES);
        let blocks = descriptor(7, &[(100, ONES), (101, TWOS)], 0);
        journal[30] = blocks[0].clone();
        journal[31] = blocks[1].clone();
        journal[1] = blocks[2].clone();
        journal[2] = commit(7);
        assert_eq!(
            replay(&journal),
            Some(BTreeMap::from([(100, 31), (101, 1)]))
        );
    }
}
