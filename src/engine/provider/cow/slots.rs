//! The slots of the data file (`chunks.dat`): which are free, the high-water mark, each
//! slot's CRC-32 and whether its content was checked since the open.

use super::*;

/// The free slots (to pop, lowest last), the high-water mark and the count of used slots of
/// a data file whose used slots are `used` (any order, `ZERO_SLOT` ignored).
pub(in crate::engine::provider) fn slot_layout(mut used: Vec<Slot>) -> (Vec<Slot>, u64, u64) {
    used.retain(|slot| *slot != ZERO_SLOT);
    used.sort_unstable();
    used.dedup();
    let high_water = used.last().map_or(0, |last| u64::from(*last) + 1);
    let mut free = Vec::new();
    let mut used_iter = used.iter().peekable();
    for slot in 0..high_water as Slot {
        if used_iter.next_if_eq(&&slot).is_none() {
            free.push(slot);
        }
    }
    free.reverse();
    (free, high_water, used.len() as u64)
}

impl CowVolume {
    pub(super) fn data_path(diff_dir: &Path) -> PathBuf {
        diff_dir.join("chunks.dat")
    }

    pub(super) fn rebuild_slots(&mut self) -> io::Result<()> {
        let used = self.map.entries().into_iter().map(|(_, _, slot)| slot);
        let (free, high_water, used_count) = slot_layout(used.collect());
        self.data_slots_used = used_count;
        self.slot_high_water = high_water;
        self.free_slots = free;
        self.slot_checksums.resize(self.slot_high_water as usize, 0);
        self.slot_verified = (0..self.slot_high_water.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        // While the durable log still holds records of reclaimed versions (a rewrite is
        // wanted), their slots may lie past the high water: the space goes after the rewrite,
        // or a crash in between would leave records pointing past the end of the file.
        if !self.index_rewrite_wanted {
            self.cut_data_past_high_water()?;
        }
        Ok(())
    }

    /// Space past the last used slot is leaked by a crash (or freed by a rewrite of the
    /// log); gives it back.
    pub(super) fn cut_data_past_high_water(&mut self) -> io::Result<()> {
        if !self.read_only && self.data.size()? > self.slot_high_water * self.chunk_size {
            self.data.set_len(self.slot_high_water * self.chunk_size)?;
            self.data.sync_data()?;
        }
        Ok(())
    }

    pub(super) fn slot_checksum(&self, slot: Slot) -> u32 {
        self.slot_checksums.get(slot as usize).copied().unwrap_or(0)
    }

    /// Records the checksum of what was just written into `slot` (and that it is verified).
    pub(super) fn set_slot_checksum(&mut self, slot: Slot, checksum: u32) {
        let index = slot as usize;
        if self.slot_checksums.len() <= index {
            self.slot_checksums.resize(index + 1, 0);
        }
        self.slot_checksums[index] = checksum;
        let word = index / 64;
        while self.slot_verified.len() <= word {
            self.slot_verified.push(AtomicU64::new(0));
        }
        self.slot_verified[word].fetch_or(1 << (index % 64), Ordering::Relaxed);
    }

    pub(super) fn slot_is_verified(&self, slot: Slot) -> bool {
        let index = slot as usize;
        self.slot_verified
            .get(index / 64)
            .is_some_and(|word| word.load(Ordering::Relaxed) & (1 << (index % 64)) != 0)
    }

    pub(super) fn mark_slot_verified(&self, slot: Slot) {
        let index = slot as usize;
        if let Some(word) = self.slot_verified.get(index / 64) {
            word.fetch_or(1 << (index % 64), Ordering::Relaxed);
        }
    }

    /// Checks one slot's content (`chunk_size` bytes) against its recorded checksum.
    pub(super) fn verify_slot(&self, slot: Slot, content: &[u8]) -> io::Result<()> {
        let expected = self.slot_checksum(slot);
        let actual = crc32fast::hash(content);
        if actual != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged: slot {slot} (bytes {}..{}) has checksum {actual:08x}, but its \
                     index record says {expected:08x}; the shadow copies reading it cannot be \
                     served (run `diskshadow check-store`, restore the store from a backup)",
                    Self::data_path(&self.diff_dir).display(),
                    u64::from(slot) * self.chunk_size,
                    (u64::from(slot) + 1) * self.chunk_size
                ),
            ));
        }
        self.mark_slot_verified(slot);
        Ok(())
    }

    pub(super) fn allocate_slot(&mut self) -> io::Result<Slot> {
        if let Some(slot) = self.free_slots.pop() {
            return Ok(slot);
        }
        if self.slot_high_water > u64::from(MAX_SLOT) {
            return Err(io::Error::other(
                "the diff area is full: it cannot address more chunks",
            ));
        }
        let slot = self.slot_high_water as Slot;
        self.slot_high_water += 1;
        Ok(slot)
    }
}
