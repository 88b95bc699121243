//! Preserving ahead of a sequential writer: a window of chunks after the one being written is
//! copied into the diff area in one group (by a helper thread when it is large), so a long
//! sequential write pays one pair of syncs per window instead of one per batch.

use super::*;
// How much a helper copies before starting the write-back of what it copied.
use crate::engine::provider::writeback::WRITEBACK_PIECE_BYTES;

/// The most chunks `batch_run` puts in one run of fresh consecutive slots.
pub(super) const MAX_RUN_BYTES: u64 = 1 << 20;

/// The most a sequential writer gets preserved ahead of it in one group commit.
pub(super) const MAX_AHEAD_BYTES: u64 = 64 << 20;

/// Makes `copies` from the live image into the diff area, then starts their write-back and the
/// live image's. The start of write-back is a hint, never a sync point (see
/// `DurableFile::start_writeback`): the copies are made durable by `sync_diff`, and every dirty
/// live page may reach the disk at any time (its chunk's copy was synced before it was
/// written), so no ordering changes.
pub(super) fn copy_and_start_writeback(
    live: &dyn DurableFile,
    data: &dyn DurableFile,
    copies: &[RangeCopy],
    chunk_size: u64,
) -> io::Result<Vec<(Slot, u32)>> {
    // Write-back starts after each piece, so the disk writes while the rest is copied. Each
    // piece is read back (from the page cache) for the slot checksums of what was copied.
    let mut checksums = Vec::new();
    let mut buffer = vec![0u8; chunk_size as usize];
    for copy in copies {
        let mut done = 0;
        while done < copy.length {
            let piece = (copy.length - done).min(WRITEBACK_PIECE_BYTES);
            live.copy_to(copy.source + done, data, copy.target + done, piece)?;
            data.start_writeback()?;
            let mut checked = 0;
            while checked < piece {
                let offset = copy.target + done + checked;
                data.read_exact_or_zero(offset, &mut buffer)?;
                let slot = Slot::try_from(offset / chunk_size).map_err(io::Error::other)?;
                checksums.push((slot, crc32fast::hash(&buffer)));
                checked += chunk_size;
            }
            done += piece;
        }
    }
    live.start_writeback()?;
    Ok(checksums)
}

/// `(slot, CRC-32 of its content)` of copied slots.
pub(super) type SlotChecksums = Vec<(Slot, u32)>;

/// One in-kernel copy from the live image into the diff area.
#[derive(Debug, Clone, Copy)]
pub(super) struct RangeCopy {
    pub(super) source: u64,
    pub(super) target: u64,
    pub(super) length: u64,
}

/// A window ahead of a sequential writer whose copies a helper thread is making.
pub(super) struct AheadCopy {
    /// `None` when the copies were made without a helper.
    pub(super) handle: Option<std::thread::JoinHandle<io::Result<SlotChecksums>>>,
    /// The slot checksums of copies made without a helper.
    pub(super) inline_checksums: Vec<(Slot, u32)>,
    /// The versions the copies preserve, recorded when they are done.
    pub(super) versions: Vec<(ChunkIndex, Slot)>,
    pub(super) tag: Tag,
    /// The chunks `[start, end)` the window covers: none of them needs preserving meanwhile.
    pub(super) chunks: (ChunkIndex, ChunkIndex),
}

impl CowVolume {
    /// Plans the preservation of a window of chunks from `start` (doubling per window up to
    /// `MAX_AHEAD_BYTES`, never past the diff-area limit) and hands the copying, then the
    /// write-back, to a helper thread, so the writer writes its current window meanwhile. The
    /// window is recorded in `unsynced_ahead` until the next sync, which first waits for the
    /// helper and only then records the versions (`finish_ahead_copy`).
    pub(super) fn prepare_ahead(&mut self, start: ChunkIndex) -> io::Result<()> {
        // Callers sync first: a second window in flight would lose the first one's guard.
        debug_assert!(self.ahead_copy.is_none() && self.unsynced_ahead.is_none());
        let chunk_count = self.size.div_ceil(self.chunk_size);
        self.ahead_chunks = (self.ahead_chunks * 2).min((MAX_AHEAD_BYTES / self.chunk_size).max(1));
        let end = (start + self.ahead_chunks).min(chunk_count);
        let mut copies: Vec<RangeCopy> = Vec::new();
        let mut versions: Vec<(ChunkIndex, Slot)> = Vec::new();
        let mut chunk = start;
        while chunk < end {
            if self.pending.contains_key(&chunk) {
                break;
            }
            if !self.needs_preservation(chunk) {
                chunk += 1;
                continue;
            }
            let room = self
                .max_diff_bytes
                .is_none_or(|max| self.used_bytes() + self.chunk_size <= max);
            if !room {
                break;
            }
            let chunk_length = self.chunk_length(chunk);
            if self.chunk_is_hole(chunk * self.chunk_size, chunk_length)? {
                versions.push((chunk, ZERO_SLOT));
                chunk += 1;
                continue;
            }
            let slot = self.allocate_slot()?;
            self.data_slots_used += 1;
            versions.push((chunk, slot));
            // Whole slots: bytes past the end of the image copy as zeros.
            self.plan_copy(&mut copies, chunk, slot, self.chunk_size);
            let run = self.batch_run(chunk + 1, end)?.unwrap_or(0);
            if self.slot_high_water + run > u64::from(MAX_SLOT) {
                return Err(io::Error::other(
                    "the diff area is full: it cannot address more chunks",
                ));
            }
            for next in chunk + 1..chunk + 1 + run {
                let slot = self.slot_high_water as Slot;
                self.slot_high_water += 1;
                self.data_slots_used += 1;
                versions.push((next, slot));
                self.plan_copy(&mut copies, next, slot, self.chunk_size);
            }
            chunk += 1 + run;
        }
        let prepared_end = chunk;
        self.sequential_next = Some(prepared_end);
        if versions.is_empty() {
            return Ok(());
        }
        let (live, data, planned) = (self.live.clone(), self.data.clone(), copies.clone());
        let chunk_size = self.chunk_size;
        let mut inline_checksums = Vec::new();
        let handle = match std::thread::Builder::new()
            .name("diskshadow-preserve".into())
            .spawn(move || copy_and_start_writeback(&*live, &*data, &planned, chunk_size))
        {
            Ok(handle) => Some(handle),
            // No thread to be had: copy here instead.
            Err(_) => {
                inline_checksums =
                    copy_and_start_writeback(&*self.live, &*self.data, &copies, chunk_size)?;
                None
            }
        };
        self.ahead_copy = Some(AheadCopy {
            handle,
            inline_checksums,
            versions,
            tag: tag_of(self.newest_shadow().unwrap_or(0)),
            chunks: (start, prepared_end),
        });
        self.unsynced_ahead = Some((start, prepared_end));
        Ok(())
    }

    /// Adds the copy of `chunk` into `slot` to `copies`, extending the last copy when both
    /// follow on from it.
    pub(super) fn plan_copy(
        &mut self,
        copies: &mut Vec<RangeCopy>,
        chunk: ChunkIndex,
        slot: Slot,
        length: u64,
    ) {
        let source = chunk * self.chunk_size;
        let target = u64::from(slot) * self.chunk_size;
        self.note_data_written(target, target + length);
        if let Some(last) = copies.last_mut() {
            if last.source + last.length == source && last.target + last.length == target {
                last.length += length;
                return;
            }
        }
        copies.push(RangeCopy {
            source,
            target,
            length,
        });
    }

    /// Waits for the helper copying the window ahead and records its versions (in the block
    /// map and, not yet durably, in the index log). Until then the window's chunks are neither
    /// in the map (shadows read them from the live image, which keeps their old content until
    /// the next sync) nor in need of preservation.
    pub(super) fn finish_ahead_copy(&mut self) -> io::Result<()> {
        let Some(copy) = self.ahead_copy.take() else {
            return Ok(());
        };
        let copied = match copy.handle {
            Some(handle) => handle.join().unwrap_or_else(|_| {
                Err(io::Error::other("the preservation helper thread panicked"))
            }),
            None => Ok(copy.inline_checksums),
        };
        let checksums = match copied {
            Ok(checksums) => checksums,
            Err(error) => {
                // Nothing was recorded: the chunks still need preserving, and their slots
                // are free.
                for (_, slot) in copy.versions {
                    if slot != ZERO_SLOT {
                        self.free_slots.push(slot);
                        self.data_slots_used -= 1;
                    }
                }
                return Err(error);
            }
        };
        for (slot, checksum) in checksums {
            self.set_slot_checksum(slot, checksum);
        }
        for (chunk, slot) in copy.versions {
            let slot_checksum = if slot == ZERO_SLOT {
                0
            } else {
                self.slot_checksum(slot)
            };
            self.append_record(IndexRecord {
                kind: KIND_PRESERVE,
                tag: copy.tag,
                chunk,
                slot,
                slot_checksum,
            })?;
            self.map.insert(chunk, copy.tag, slot);
        }
        Ok(())
    }

    /// How many chunks from `start` (below `end`, at most `MAX_RUN_BYTES`) can be preserved as
    /// one run: full-size, not holes, needing preservation, with fresh consecutive slots after the one
    /// just allocated, and room in the diff area.
    pub(super) fn batch_run(&self, start: ChunkIndex, end: ChunkIndex) -> io::Result<Option<u64>> {
        if !self.free_slots.is_empty() {
            return Ok(None);
        }
        let most = (MAX_RUN_BYTES / self.chunk_size).max(1);
        let mut count = 0;
        while count < most && start + count < end {
            let chunk = start + count;
            let room = self
                .max_diff_bytes
                .is_none_or(|max| self.used_bytes() + (count + 1) * self.chunk_size <= max);
            if !room
                || self.pending.contains_key(&chunk)
                || !self.needs_preservation(chunk)
                || self.chunk_length(chunk) != self.chunk_size
                || self.chunk_is_hole(chunk * self.chunk_size, self.chunk_size)?
            {
                break;
            }
            count += 1;
        }
        Ok((count > 0).then_some(count))
    }
}
