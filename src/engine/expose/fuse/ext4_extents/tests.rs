//! The extent reader against hand-built ext4 structures.

use super::*;

fn header(entries: u16, maximum: u16, depth: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&EXTENT_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&entries.to_le_bytes());
    bytes.extend_from_slice(&maximum.to_le_bytes());
    bytes.extend_from_slice(&depth.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes
}

fn leaf(logical: u32, length: u16, physical: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&logical.to_le_bytes());
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&((physical >> 32) as u16).to_le_bytes());
    bytes.extend_from_slice(&(physical as u32).to_le_bytes());
    bytes
}

fn index(logical: u32, child: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&logical.to_le_bytes());
    bytes.extend_from_slice(&(child as u32).to_le_bytes());
    bytes.extend_from_slice(&((child >> 32) as u16).to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes
}

/// An `i_block` (60 bytes) or a tree block (`size` bytes) from its parts.
fn node(parts: &[Vec<u8>], size: usize) -> Vec<u8> {
    let mut bytes = parts.concat();
    bytes.resize(size, 0);
    bytes
}

fn no_blocks(_: u64) -> Option<Vec<u8>> {
    panic!("a depth-0 tree reads no block")
}

fn extent(logical: u64, length: u64, physical: u64, initialized: bool) -> Extent {
    Extent {
        logical,
        length,
        physical,
        initialized,
    }
}

#[test]
fn a_depth_zero_tree_with_an_uninitialized_extent_gives_its_holes() {
    // Blocks 0-1 written, 4-7 allocated but unwritten, 10 written; 12 blocks of 1 KiB.
    let i_block = node(
        &[
            header(3, 4, 0),
            leaf(0, 2, 100),
            leaf(4, 32768 + 4, 200),
            leaf(10, 1, 300),
        ],
        I_BLOCK_SIZE,
    );
    let extents = parse_extent_tree(&i_block, 1000, &mut no_blocks).unwrap();
    assert_eq!(
        extents,
        vec![
            extent(0, 2, 100, true),
            extent(4, 4, 200, false),
            extent(10, 1, 300, true),
        ]
    );
    let map = FileMap::new(extents, 1024, 12 * 1024 - 100).unwrap();
    assert_eq!(
        map.holes,
        vec![(2048, 8 * 1024), (11 * 1024, 1024 - 100)],
        "the unwritten extent is part of the hole"
    );
    assert_eq!(map.allocated, 3 * 1024);
}

#[test]
fn a_full_length_extent_of_32768_blocks_is_written() {
    let i_block = node(&[header(1, 4, 0), leaf(0, 32768, 1)], I_BLOCK_SIZE);
    let extents = parse_extent_tree(&i_block, 40000, &mut no_blocks).unwrap();
    assert_eq!(extents, vec![extent(0, 32768, 1, true)]);
}

#[test]
fn a_depth_one_tree_reads_its_leaves() {
    let block_size = 1024;
    let i_block = node(
        &[header(2, 4, 1), index(0, 50), index(100, 0x1_0000_0033)],
        I_BLOCK_SIZE,
    );
    let first_leaf = node(
        &[header(2, 84, 0), leaf(0, 8, 500), leaf(20, 32768 + 2, 600)],
        block_size,
    );
    let second_leaf = node(&[header(1, 84, 0), leaf(100, 3, 700)], block_size);
    let mut reads = Vec::new();
    let extents = parse_extent_tree(&i_block, 0x2_0000_0000, &mut |block| {
        reads.push(block);
        match block {
            50 => Some(first_leaf.clone()),
            0x1_0000_0033 => Some(second_leaf.clone()),
            _ => None,
        }
    })
    .unwrap();
    assert_eq!(reads, vec![50, 0x1_0000_0033]);
    assert_eq!(
        extents,
        vec![
            extent(0, 8, 500, true),
            extent(20, 2, 600, false),
            extent(100, 3, 700, true),
        ]
    );
    let map = FileMap::new(extents, 1024, 103 * 1024).unwrap();
    assert_eq!(map.holes, vec![(8 * 1024, 92 * 1024)]);
    assert_eq!(map.allocated, 11 * 1024);
}

#[test]
fn damaged_trees_give_no_map_not_a_panic() {
    let good_leaf = leaf(0, 1, 10);
    let mut bad_magic = node(&[header(1, 4, 0), good_leaf.clone()], I_BLOCK_SIZE);
    bad_magic[0] = 0;
    let too_deep = node(&[header(1, 4, 6), index(0, 10)], I_BLOCK_SIZE);
    let past_the_block = node(&[header(5, 5, 0), good_leaf.clone()], I_BLOCK_SIZE);
    let more_than_maximum = node(&[header(3, 2, 0), good_leaf.clone()], I_BLOCK_SIZE);
    let zero_length = node(&[header(1, 4, 0), leaf(0, 0, 10)], I_BLOCK_SIZE);
    let past_the_device = node(&[header(1, 4, 0), leaf(0, 5, 998)], I_BLOCK_SIZE);
    let truncated = header(1, 4, 0);
    for (what, i_block) in [
        ("bad magic", bad_magic),
        ("depth 6", too_deep),
        ("5 entries in a 60-byte root", past_the_block),
        ("entries past the maximum", more_than_maximum),
        ("a zero-length extent", zero_length),
        ("an extent past the device", past_the_device),
        ("a root cut short", truncated),
    ] {
        assert_eq!(
            parse_extent_tree(&i_block, 1000, &mut |_| Some(vec![0; 1024])),
            None,
            "{what}"
        );
    }

    // A child whose depth is not one less than its parent's, one that cannot be read, and
    // a tree that points at itself.
    let root = node(&[header(1, 4, 2), index(0, 10)], I_BLOCK_SIZE);
    let wrong_depth = node(&[header(1, 84, 0), good_leaf.clone()], 1024);
    assert_eq!(
        parse_extent_tree(&root, 1000, &mut |_| Some(wrong_depth.clone())),
        None
    );
    assert_eq!(parse_extent_tree(&root, 1000, &mut |_| None), None);
    let root = node(&[header(1, 4, 1), index(0, 10)], I_BLOCK_SIZE);
    let looping = node(&[header(1, 84, 1), index(0, 10)], 1024);
    assert_eq!(
        parse_extent_tree(&root, 1000, &mut |_| Some(looping.clone())),
        None
    );
    // A wide three-level tree (340 entries a node in 4 KiB blocks): bounded, no answer.
    let wide = |depth: u16, child: u64| {
        let parts: Vec<Vec<u8>> = std::iter::once(header(340, 340, depth))
            .chain((0..340).map(|entry| index(entry, child)))
            .collect();
        node(&parts, 4096)
    };
    let root = node(&[header(1, 4, 3), index(0, 10)], I_BLOCK_SIZE);
    let leaf_block = node(&[header(1, 340, 0), good_leaf], 4096);
    let mut reads = 0;
    let answer = parse_extent_tree(&root, 1000, &mut |block| {
        reads += 1;
        Some(match block {
            10 => wide(2, 11),
            11 => wide(1, 12),
            _ => leaf_block.clone(),
        })
    });
    assert_eq!(answer, None);
    assert_eq!(reads, MAXIMUM_TREE_BLOCKS);
}

/// An `i_block` of 15 little-endian pointers.
fn pointers(values: &[u32]) -> Vec<u8> {
    let mut bytes: Vec<u8> = values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    bytes.resize(I_BLOCK_SIZE, 0);
    bytes
}

#[test]
fn a_block_map_gives_merged_extents_and_holes() {
    // 1 KiB blocks (256 pointers a block). Direct: blocks 0-1 at 500-501, a hole, block 3
    // at 700. Single indirect (block 50): file block 12 at 800, 13 at 801. Double indirect
    // (block 51 -> block 52 for file blocks 268..524): file block 270 at 900.
    let i_block = pointers(&[500, 501, 0, 700, 0, 0, 0, 0, 0, 0, 0, 0, 50, 51, 0]);
    let block_of = |values: &[(usize, u32)]| {
        let mut bytes = vec![0u8; 1024];
        for (index, value) in values {
            bytes[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    };
    let mut reads = Vec::new();
    let extents = parse_block_map(&i_block, 1024, 10_000, 300, &mut |block| {
        reads.push(block);
        match block {
            50 => Some(block_of(&[(0, 800), (1, 801)])),
            51 => Some(block_of(&[(0, 52)])),
            52 => Some(block_of(&[(2, 900)])),
            _ => None,
        }
    })
    .unwrap();
    assert_eq!(reads, vec![50, 51, 52]);
    assert_eq!(
        extents,
        vec![
            extent(0, 2, 500, true),
            extent(3, 1, 700, true),
            extent(12, 2, 800, true),
            extent(270, 1, 900, true),
        ]
    );
    let map = FileMap::new(extents, 1024, 300 * 1024).unwrap();
    assert_eq!(
        map.holes,
        vec![
            (2048, 1024),
            (4 * 1024, 8 * 1024),
            (14 * 1024, 256 * 1024),
            (271 * 1024, 29 * 1024)
        ]
    );
}

#[test]
fn damaged_block_maps_give_no_map() {
    let past_the_device = pointers(&[5000]);
    assert_eq!(
        parse_block_map(&past_the_device, 1024, 1000, 1, &mut |_| None),
        None
    );
    let unreadable = pointers(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    assert_eq!(
        parse_block_map(&unreadable, 1024, 1000, 20, &mut |_| None),
        None
    );
    // A full triple indirect tree (block 7 points at 256 double indirect blocks 8, each at
    // 256 single indirect blocks 9, all holes): bounded.
    let deep = pointers(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    let mut reads = 0;
    let answer = parse_block_map(&deep, 1024, 1000, u64::from(u32::MAX), &mut |block| {
        reads += 1;
        Some(match block {
            7 => 8u32.to_le_bytes().repeat(256),
            8 => 9u32.to_le_bytes().repeat(256),
            _ => vec![0; 1024],
        })
    });
    assert_eq!(answer, None);
    assert_eq!(reads, MAXIMUM_INDIRECT_BLOCKS);
    // Blocks past the file's size are not visited.
    let short = pointers(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 9999]);
    assert_eq!(
        parse_block_map(&short, 1024, 1000, 12, &mut |_| None),
        Some(vec![extent(0, 12, 1, true)])
    );
}

#[test]
fn overlapping_extents_give_no_map() {
    let extents = vec![extent(0, 4, 10, true), extent(2, 4, 20, true)];
    assert_eq!(FileMap::new(extents, 4096, 6 * 4096), None);
    let out_of_order = vec![extent(8, 1, 10, true), extent(0, 1, 20, true)];
    assert_eq!(FileMap::new(out_of_order, 4096, 9 * 4096), None);
}

#[test]
fn directory_blocks_list_their_entries_and_skip_index_and_tail_entries() {
    let mut block = Vec::new();
    let mut push = |inode: u32, record_length: u16, name: &[u8]| {
        let start = block.len();
        block.extend_from_slice(&inode.to_le_bytes());
        block.extend_from_slice(&record_length.to_le_bytes());
        block.push(name.len() as u8);
        block.push(1);
        block.extend_from_slice(name);
        block.resize(start + usize::from(record_length), 0);
    };
    push(2, 12, b".");
    push(2, 12, b"..");
    push(12, 16, b"sparse");
    push(0, 16, b"deleted");
    push(13, 1024 - 56 - 12, b"last");
    push(0, 12, b""); // the checksum tail
    assert_eq!(
        directory_entries(&block),
        Some(vec![(12, &b"sparse"[..]), (13, &b"last"[..])])
    );
    let mut damaged = block.clone();
    damaged[28] = 0xff; // "sparse" now runs past the block
    assert_eq!(directory_entries(&damaged), None);
    let mut name_too_long = block.clone();
    name_too_long[30] = 200;
    assert_eq!(directory_entries(&name_too_long), None);
}

#[test]
fn reads_give_written_extents_and_zeros_elsewhere() {
    struct Memory(Vec<u8>);
    impl BlockDevice for Memory {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
            buffer.copy_from_slice(&self.0[offset as usize..offset as usize + buffer.len()]);
            Ok(())
        }
        fn write_at(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
            Err(std::io::ErrorKind::PermissionDenied.into())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn is_read_only(&self) -> bool {
            true
        }
    }
    // Device blocks of 16 bytes: block n is filled with byte n.
    let device = Memory((0..64u8).flat_map(|block| [block; 16]).collect());
    let extents = vec![
        extent(1, 2, 10, true),
        extent(3, 1, 20, false),
        extent(5, 1, 30, true),
    ];
    let map = FileMap::new(extents, 16, 90).unwrap();
    assert_eq!(map.holes, vec![(0, 16), (48, 32)]);
    let no_journal = BTreeMap::new();
    let whole = map.read(&device, &no_journal, 0, 1000).unwrap();
    let mut expected = vec![0u8; 90];
    expected[16..32].fill(10);
    expected[32..48].fill(11);
    expected[80..90].fill(30);
    assert_eq!(whole, expected);
    assert_eq!(
        map.read(&device, &no_journal, 30, 20).unwrap(),
        expected[30..50]
    );
    assert_eq!(
        map.read(&device, &no_journal, 85, 100).unwrap(),
        expected[85..90]
    );
    assert!(map.read(&device, &no_journal, 90, 10).unwrap().is_empty());
    // Device block 11 replaced by the journal's copy in block 40.
    let journal = BTreeMap::from([(11, 40)]);
    let mut replaced = expected.clone();
    replaced[32..48].fill(40);
    assert_eq!(map.read(&device, &journal, 0, 1000).unwrap(), replaced);
    assert_eq!(
        map.read(&device, &journal, 20, 20).unwrap(),
        replaced[20..40]
    );
}
