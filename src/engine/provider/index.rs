//! The in-memory block map of one volume: for each chunk, the preserved versions, each tagged
//! with a shadow sequence number and pointing at a diff-area slot (or at the zero marker).
//!
//! A shadow `s` reads chunk `c` from the version with the smallest tag >= `s`: one ordered
//! lookup, whatever the number of shadows. Entries are 16 bytes; most live in one sorted
//! vector, recent ones in a small ordered map that is merged into the vector when it grows
//! past 1/8 of it, so the memory per preserved chunk stays well under 32 bytes.

use std::collections::{BTreeMap, HashSet};

/// A chunk number within a volume (byte offset / chunk size).
pub type ChunkIndex = u64;
/// A shadow sequence number as stored in the block map.
pub type Tag = u32;
/// A chunk-sized slot in the diff-area data file.
pub type Slot = u32;

/// The slot value meaning "the chunk was a hole: read zeros, nothing was copied".
pub const ZERO_SLOT: Slot = u32::MAX;
/// Marks a removed entry inside the sorted vector until the next merge.
const TOMBSTONE: Slot = u32::MAX - 1;
/// The largest usable slot number.
pub const MAX_SLOT: Slot = u32::MAX - 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    chunk: ChunkIndex,
    tag: Tag,
    slot: Slot,
}

/// What one lookup finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub tag: Tag,
    pub slot: Slot,
}

/// Grows a vector by 1/8 instead of doubling it, so that spare capacity stays small: the
/// block map of a 1 TiB volume holds millions of entries.
fn grow_gently<T>(vector: &mut Vec<T>) {
    if vector.len() == vector.capacity() {
        vector.reserve_exact(64usize.max(vector.len() / 8));
    }
}

#[derive(Debug, Default)]
pub struct BlockMap {
    sorted: Vec<Entry>,
    recent: BTreeMap<(ChunkIndex, Tag), Slot>,
    /// Chunks preserved under each tag: what delete and revert walk, so they cost O(chunks
    /// owned) rather than O(volume size).
    by_tag: BTreeMap<Tag, Vec<ChunkIndex>>,
    tombstones: usize,
    live: usize,
}

impl BlockMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn sorted_lower_bound(&self, chunk: ChunkIndex, tag: Tag) -> usize {
        self.sorted
            .partition_point(|entry| (entry.chunk, entry.tag) < (chunk, tag))
    }

    /// The version with the smallest tag >= `min_tag`.
    pub fn lookup(&self, chunk: ChunkIndex, min_tag: Tag) -> Option<Version> {
        let mut best: Option<Version> = None;
        let mut position = self.sorted_lower_bound(chunk, min_tag);
        while let Some(entry) = self.sorted.get(position) {
            if entry.chunk != chunk {
                break;
            }
            if entry.slot != TOMBSTONE {
                best = Some(Version {
                    tag: entry.tag,
                    slot: entry.slot,
                });
                break;
            }
            position += 1;
        }
        if let Some((&(found_chunk, tag), &slot)) = self.recent.range((chunk, min_tag)..).next() {
            if found_chunk == chunk && best.is_none_or(|current| tag < current.tag) {
                best = Some(Version { tag, slot });
            }
        }
        best
    }

    /// The smallest chunk >= `from` that has any version in the map, so that walks over a
    /// sparse map (the allocation of a shadow) skip the chunks without one.
    pub fn next_chunk_with_versions(&self, from: ChunkIndex) -> Option<ChunkIndex> {
        let mut position = self.sorted_lower_bound(from, 0);
        let in_sorted = loop {
            match self.sorted.get(position) {
                None => break None,
                Some(entry) if entry.slot != TOMBSTONE => break Some(entry.chunk),
                Some(_) => position += 1,
            }
        };
        let in_recent = self
            .recent
            .range((from, 0)..)
            .next()
            .map(|(&(chunk, _), _)| chunk);
        match (in_sorted, in_recent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The largest tag < `tag` for `chunk`.
    pub fn previous_tag(&self, chunk: ChunkIndex, tag: Tag) -> Option<Tag> {
        self.lookup_below(chunk, tag).map(|version| version.tag)
    }

    /// The version with the largest tag < `max_tag`: what redirect-on-write reads (the live
    /// volume with `Tag::MAX`, shadow `s` with `s`). One ordered lookup.
    pub fn lookup_below(&self, chunk: ChunkIndex, max_tag: Tag) -> Option<Version> {
        let mut best: Option<Version> = None;
        let mut position = self.sorted_lower_bound(chunk, max_tag);
        while position > 0 {
            position -= 1;
            let entry = self.sorted[position];
            if entry.chunk != chunk {
                break;
            }
            if entry.slot != TOMBSTONE {
                best = Some(Version {
                    tag: entry.tag,
                    slot: entry.slot,
                });
                break;
            }
        }
        if let Some((&(found_chunk, tag), &slot)) =
            self.recent.range((chunk, 0)..(chunk, max_tag)).next_back()
        {
            if found_chunk == chunk && best.is_none_or(|current| tag > current.tag) {
                best = Some(Version { tag, slot });
            }
        }
        best
    }

    /// Adds a version; the caller guarantees `(chunk, tag)` is not present.
    pub fn insert(&mut self, chunk: ChunkIndex, tag: Tag, slot: Slot) {
        // Appending in order (sequential first writes) goes straight to the vector.
        // Lookups consult both parts, so only the vector's own order matters here.
        let appends_in_order = self
            .sorted
            .last()
            .is_none_or(|last| (last.chunk, last.tag) < (chunk, tag));
        if appends_in_order {
            grow_gently(&mut self.sorted);
            self.sorted.push(Entry { chunk, tag, slot });
        } else {
            self.recent.insert((chunk, tag), slot);
            if self.recent.len() > 4096usize.max(self.sorted.len() / 8) {
                self.merge();
            }
        }
        let list = self.by_tag.entry(tag).or_default();
        grow_gently(list);
        list.push(chunk);
        self.live += 1;
    }

    /// Removes a version, returning its slot. The chunk must also be dropped from the tag's
    /// list by the caller through [`BlockMap::forget_chunks_of_tag`].
    fn remove_entry(&mut self, chunk: ChunkIndex, tag: Tag) -> Option<Slot> {
        if let Some(slot) = self.recent.remove(&(chunk, tag)) {
            self.live -= 1;
            return Some(slot);
        }
        let position = self.sorted_lower_bound(chunk, tag);
        let entry = self.sorted.get_mut(position)?;
        if entry.chunk != chunk || entry.tag != tag || entry.slot == TOMBSTONE {
            return None;
        }
        let slot = entry.slot;
        entry.slot = TOMBSTONE;
        self.tombstones += 1;
        self.live -= 1;
        if self.tombstones > 4096usize.max(self.sorted.len() / 4) {
            self.merge();
        }
        Some(slot)
    }

    /// Removes the versions of `tag` for which `should_free(chunk)` is true, returning
    /// `(chunk, slot)` of each.
    pub fn free_where(
        &mut self,
        tag: Tag,
        mut should_free: impl FnMut(&Self, ChunkIndex) -> bool,
    ) -> Vec<(ChunkIndex, Slot)> {
        let Some(chunks) = self.by_tag.remove(&tag) else {
            return Vec::new();
        };
        let mut kept = Vec::with_capacity(chunks.len());
        let mut to_free = Vec::new();
        for chunk in chunks {
            if should_free(self, chunk) {
                to_free.push(chunk);
            } else {
                kept.push(chunk);
            }
        }
        let mut freed = Vec::with_capacity(to_free.len());
        for chunk in to_free {
            if let Some(slot) = self.remove_entry(chunk, tag) {
                freed.push((chunk, slot));
            }
        }
        if !kept.is_empty() {
            self.by_tag.insert(tag, kept);
        }
        freed
    }

    /// Tags present in `[from, to)`, ascending.
    pub fn tags_in(&self, from: Tag, to: u64) -> Vec<Tag> {
        let upper = to.min(u64::from(Tag::MAX) + 1);
        self.by_tag
            .range(from..)
            .map(|(tag, _)| *tag)
            .take_while(|tag| u64::from(*tag) < upper)
            .collect()
    }

    /// The chunks with a version tagged exactly `tag`, in insertion order.
    pub fn chunks_of_tag(&self, tag: Tag) -> &[ChunkIndex] {
        self.by_tag.get(&tag).map_or(&[], Vec::as_slice)
    }

    /// Every chunk with a version tagged >= `tag`, ascending and distinct: exactly the chunks
    /// written since shadow `tag` was created.
    pub fn chunks_changed_since(&self, tag: Tag) -> Vec<ChunkIndex> {
        let mut seen = HashSet::new();
        let mut chunks: Vec<ChunkIndex> = Vec::new();
        for list in self.by_tag.range(tag..).map(|(_, list)| list) {
            for &chunk in list {
                if seen.insert(chunk) {
                    chunks.push(chunk);
                }
            }
        }
        chunks.sort_unstable();
        chunks
    }

    /// All versions as `(chunk, tag, slot)`, in `(chunk, tag)` order.
    pub fn entries(&self) -> Vec<(ChunkIndex, Tag, Slot)> {
        let mut all: Vec<(ChunkIndex, Tag, Slot)> = self
            .sorted
            .iter()
            .filter(|entry| entry.slot != TOMBSTONE)
            .map(|entry| (entry.chunk, entry.tag, entry.slot))
            .chain(
                self.recent
                    .iter()
                    .map(|(&(chunk, tag), &slot)| (chunk, tag, slot)),
            )
            .collect();
        all.sort_unstable();
        all
    }

    pub fn max_tag(&self) -> Option<Tag> {
        self.by_tag.keys().next_back().copied()
    }

    fn merge(&mut self) {
        let recent = std::mem::take(&mut self.recent);
        let old = std::mem::take(&mut self.sorted);
        let mut merged = Vec::with_capacity(self.live);
        let mut recent_iter = recent
            .into_iter()
            .map(|((chunk, tag), slot)| Entry { chunk, tag, slot })
            .peekable();
        for entry in old.into_iter().filter(|entry| entry.slot != TOMBSTONE) {
            while let Some(next) =
                recent_iter.next_if(|next| (next.chunk, next.tag) < (entry.chunk, entry.tag))
            {
                merged.push(next);
            }
            merged.push(entry);
        }
        merged.extend(recent_iter);
        merged.shrink_to_fit();
        self.sorted = merged;
        self.tombstones = 0;
    }

    /// Bytes of heap this map uses (an estimate for the ordered-map parts, exact for vectors).
    pub fn memory_bytes(&self) -> usize {
        // A B-tree leaf holds up to 11 entries and is on average about 2/3 full.
        let btree_entry_bytes = std::mem::size_of::<((ChunkIndex, Tag), Slot)>() * 3 / 2 + 8;
        let tag_lists: usize = self
            .by_tag
            .values()
            .map(|list| list.capacity() * std::mem::size_of::<ChunkIndex>() + 48)
            .sum();
        self.sorted.capacity() * std::mem::size_of::<Entry>()
            + self.recent.len() * btree_entry_bytes
            + tag_lists
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_smallest_tag_at_or_above() {
        let mut map = BlockMap::new();
        map.insert(5, 3, 10);
        map.insert(5, 7, 11);
        map.insert(2, 7, 12);
        assert_eq!(map.lookup(5, 1), Some(Version { tag: 3, slot: 10 }));
        assert_eq!(map.lookup(5, 3), Some(Version { tag: 3, slot: 10 }));
        assert_eq!(map.lookup(5, 4), Some(Version { tag: 7, slot: 11 }));
        assert_eq!(map.lookup(5, 8), None);
        assert_eq!(map.lookup(3, 1), None);
        assert_eq!(map.previous_tag(5, 7), Some(3));
        assert_eq!(map.previous_tag(5, 3), None);
        let freed = map.free_where(7, |_, chunk| chunk == 5);
        assert_eq!(freed, vec![(5, 11)]);
        assert_eq!(map.lookup(5, 4), None);
        assert_eq!(map.lookup(2, 4), Some(Version { tag: 7, slot: 12 }));
        assert_eq!(map.chunks_changed_since(1), vec![2, 5]);
    }

    #[test]
    fn next_chunk_with_versions_skips_empty_and_freed_chunks() {
        let mut map = BlockMap::new();
        assert_eq!(map.next_chunk_with_versions(0), None);
        map.insert(3, 1, 10);
        map.insert(9, 1, 11);
        map.insert(20, 2, 12);
        assert_eq!(map.next_chunk_with_versions(0), Some(3));
        assert_eq!(map.next_chunk_with_versions(3), Some(3));
        assert_eq!(map.next_chunk_with_versions(4), Some(9));
        map.free_where(1, |_, chunk| chunk == 9);
        assert_eq!(map.next_chunk_with_versions(4), Some(20));
        assert_eq!(map.next_chunk_with_versions(21), None);
    }

    #[test]
    fn random_inserts_merge_and_stay_correct() {
        let mut map = BlockMap::new();
        let mut expected = BTreeMap::new();
        let mut state = 12345u64;
        for slot in 0..50_000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let chunk = (state >> 33) % 20_000;
            let tag = 1 + ((state >> 20) % 5) as u32;
            if expected.contains_key(&(chunk, tag)) {
                continue;
            }
            expected.insert((chunk, tag), slot);
            map.insert(chunk, tag, slot);
        }
        for chunk in 0..20_000u64 {
            for min_tag in 1..=6u32 {
                let want = expected
                    .range((chunk, min_tag)..=(chunk, u32::MAX))
                    .next()
                    .map(|(&(_, tag), &slot)| Version { tag, slot });
                assert_eq!(map.lookup(chunk, min_tag), want);
            }
        }
        assert_eq!(map.len(), expected.len());
    }

    #[test]
    fn memory_per_entry_stays_under_32_bytes_for_random_inserts() {
        let mut map = BlockMap::new();
        let mut state = 99u64;
        let mut seen = std::collections::HashSet::new();
        while map.len() < 300_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let chunk = (state >> 20) % 10_000_000;
            let tag = 1 + ((state >> 8) % 4) as u32;
            if seen.insert((chunk, tag)) {
                map.insert(chunk, tag, map.len() as u32);
            }
            if map.len() % 50_000 == 0 {
                let per_entry = map.memory_bytes() as f64 / map.len() as f64;
                assert!(
                    per_entry < 32.0,
                    "{per_entry} bytes per entry at {} entries",
                    map.len()
                );
            }
        }
    }
}
