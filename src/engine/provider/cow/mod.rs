//! The copy-on-write (system) provider for one volume.
//!
//! The first write to a chunk after the newest shadow preserves the chunk's old content once,
//! tagged with that shadow's sequence number, in the diff area; every older shadow reads
//! through the same copy. Shadow `s` reads chunk `c` from the preserved version with the
//! smallest tag >= `s`, else from the live image.
//!
//! **Invariant (durability):** a preserved chunk and its index record are synced before the
//! overwrite of the live chunk is issued. First writes are held in a bounded write-back buffer
//! (`pending`), so one pair of syncs covers a whole batch; reads of the live volume see it.
//!
//! **Invariant (buffer):** every chunk in `pending` has a version tagged >= the newest shadow,
//! so shadow reads never need the buffer. The buffer is drained before anything that could
//! break this (creating or deleting a shadow, revert, flush).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::engine::device::{file_extents, mark_data, push_extent, Extent, MAX_EXTENTS_PER_CALL};
use crate::engine::ids::VolumeId;
use crate::engine::store::{DurableBackend, DurableFile, FileFingerprint};

use super::index::{BlockMap, ChunkIndex, Slot, Tag, MAX_SLOT, ZERO_SLOT};

mod ahead;
mod buffer;
mod index_log;
mod open;
mod read;
mod slots;

use ahead::AheadCopy;
use buffer::{BufferUndo, PendingChunk, WriteJournal};
use index_log::RecordFault;
pub(super) use index_log::{IndexRecord, KIND_FREE, KIND_PRESERVE, RECORD_BYTES};
pub(super) use slots::slot_layout;

/// The block-map tag of a shadow sequence number. The engine refuses to create shadows whose
/// sequence does not fit.
pub fn tag_of(sequence: u64) -> Tag {
    Tag::try_from(sequence).unwrap_or(Tag::MAX)
}

/// The largest shadow sequence number the block map can tag.
pub const MAX_SEQUENCE: u64 = Tag::MAX as u64 - 1;

/// Why a diff area cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiffAreaError {
    /// The diff area is damaged: serving its shadows could return wrong bytes.
    #[error("{} is damaged: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How to open a diff area, and what the catalog knows about it.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Change nothing on disk: no file is created, cut or rewritten (`check-store`).
    pub read_only: bool,
    /// The length of `index.log` the catalog recorded when it last recorded the image clean:
    /// those bytes were durable then, so a bad or missing record below it is damage.
    pub recorded_index_bytes: Option<u64>,
    /// The catalog's next shadow sequence: every tag in the log must be below it.
    pub sequence_limit: Option<u64>,
    /// The catalog says diskshadow was not writing the image (`writing` clear): then no
    /// preserve record can lie past `recorded_index_bytes`, since every write marks the image
    /// as being written (durably) before it preserves anything.
    pub recorded_clean: bool,
}

fn read_only_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the store is open read-only (check-store changes nothing)",
    )
}

/// What opening a diff area found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Index records cut off at the end of the log (torn by a crash).
    pub torn_records: u64,
    /// Preserved versions no shadow needed any more (a delete interrupted by a crash, or
    /// volatile shadows that vanished with it); their space was reclaimed.
    pub reclaimed_versions: u64,
}

/// A problem `check` found in one diff area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffAreaProblem {
    pub description: String,
    pub leaked_bytes: u64,
}

/// One volume under the copy-on-write provider.
pub struct CowVolume {
    pub volume: VolumeId,
    pub chunk_size: u64,
    /// The live image's size.
    pub size: u64,
    backend: Arc<dyn DurableBackend>,
    diff_dir: PathBuf,
    pub live: Arc<dyn DurableFile>,
    data: Arc<dyn DurableFile>,
    index_log: Arc<dyn DurableFile>,
    index_log_length: u64,
    map: BlockMap,
    /// Sequences of this volume's current shadows.
    shadows: BTreeSet<u64>,
    free_slots: Vec<Slot>,
    slot_high_water: u64,
    /// Starts the live image's write-back as direct writes go (off the writer's thread).
    live_write_back: super::writeback::WriteBackStarter,
    data_slots_used: u64,
    /// CRC-32 of each slot's content, by slot (as recorded in the index log).
    slot_checksums: Vec<u32>,
    /// One bit per slot: its content was checked against its checksum since the open (or
    /// written by this process), so reads need not check it again.
    slot_verified: Vec<AtomicU64>,
    /// Opened by `check-store`: nothing on disk may change.
    read_only: bool,
    index_rewrite_wanted: bool,
    pending: BTreeMap<ChunkIndex, PendingChunk>,
    pending_bytes: usize,
    pending_limit: usize,
    diff_unsynced: bool,
    /// The byte range of `chunks.dat` written since the last sync: its pages are dropped from
    /// the page cache once the sync made them durable.
    unsynced_data_range: Option<(u64, u64)>,
    /// The byte range of `chunks.dat` synced but still cached (see `release_synced_copies`).
    synced_data_range: Option<(u64, u64)>,
    /// The chunk a sequential writer is expected to touch next, and how many chunks to
    /// preserve ahead of it (doubling up to `MAX_AHEAD_BYTES`).
    sequential_next: Option<ChunkIndex>,
    ahead_chunks: u64,
    /// Chunks `[start, end)` preserved ahead of a sequential writer whose copies are being
    /// written back but are not yet synced: they must not be overwritten before a sync.
    unsynced_ahead: Option<(ChunkIndex, ChunkIndex)>,
    /// One chunk of scratch space, reused by every preservation.
    copy_buffer: Vec<u8>,
    /// The window ahead of a sequential writer being copied by a helper thread.
    ahead_copy: Option<AheadCopy>,
    /// Encoded index records not yet written to the log.
    record_buffer: Vec<u8>,
    /// The diff-area limit, so preserving ahead never overshoots it.
    pub max_diff_bytes: Option<u64>,
    /// The image as diskshadow last left it (refreshed after each of its own writes).
    pub fingerprint: FileFingerprint,
    /// The catalog holds a fingerprint that is still true (no write since it was recorded).
    pub persisted_clean: bool,
    /// Shadows with sequence <= this are suspect and not served.
    pub suspect_through: u64,
    /// Chunks preserved by a write that failed before the sync that makes their versions
    /// durable and not in the buffer: the next write to one syncs first (see `roll_back`).
    unsynced_preserved: BTreeSet<ChunkIndex>,
    /// Until when diskshadow may write the image (see [`super::stamp`]): what lets recovery
    /// tell a write cut off by a crash from a change made after it.
    pub write_stamp: super::stamp::WriteStamp,
}

fn io_context(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

impl CowVolume {
    pub fn shadows(&self) -> &BTreeSet<u64> {
        &self.shadows
    }

    pub fn add_shadow(&mut self, sequence: u64) {
        self.shadows.insert(sequence);
    }

    pub fn newest_shadow(&self) -> Option<u64> {
        self.shadows.last().copied()
    }

    pub fn oldest_shadow(&self) -> Option<u64> {
        self.shadows.first().copied()
    }

    /// Bytes of preserved chunk data.
    pub fn used_bytes(&self) -> u64 {
        self.data_slots_used * self.chunk_size
    }

    /// Bytes the diff-area data file occupies (including free slots for reuse).
    pub fn allocated_bytes(&self) -> u64 {
        self.slot_high_water * self.chunk_size
    }

    pub fn preserved_versions(&self) -> usize {
        self.map.len()
    }

    pub fn max_tag(&self) -> Option<Tag> {
        self.map.max_tag()
    }

    pub fn index_memory_bytes(&self) -> usize {
        self.map.memory_bytes()
    }

    fn chunk_length(&self, chunk: ChunkIndex) -> u64 {
        self.chunk_size
            .min(self.size.saturating_sub(chunk * self.chunk_size))
    }

    fn needs_preservation(&self, chunk: ChunkIndex) -> bool {
        if let Some(copy) = &self.ahead_copy {
            if (copy.chunks.0..copy.chunks.1).contains(&chunk) {
                return false;
            }
        }
        match self.newest_shadow() {
            Some(newest) => {
                !self.pending.contains_key(&chunk)
                    && self.map.lookup(chunk, tag_of(newest)).is_none()
            }
            None => false,
        }
    }

    /// Upper bound on the diff-area bytes a write of `length` bytes at `offset` adds.
    pub fn preservation_bytes_needed(&self, offset: u64, length: u64) -> u64 {
        if length == 0 || self.shadows.is_empty() {
            return 0;
        }
        let first = offset / self.chunk_size;
        let last = (offset + length - 1) / self.chunk_size;
        let needing = (first..=last)
            .filter(|chunk| self.needs_preservation(*chunk))
            .count() as u64;
        needing * self.chunk_size
    }

    /// Notes that `[from, to)` of `chunks.dat` was written and is not yet synced.
    fn note_data_written(&mut self, from: u64, to: u64) {
        self.unsynced_data_range = Some(match self.unsynced_data_range {
            Some((old_from, old_to)) => (old_from.min(from), old_to.max(to)),
            None => (from, to),
        });
    }

    fn chunk_is_hole(&self, chunk_start: u64, chunk_length: u64) -> io::Result<bool> {
        Ok(match self.live.next_data(chunk_start)? {
            None => true,
            Some(data_offset) => data_offset >= chunk_start + chunk_length,
        })
    }

    /// Writes through the provider. The caller has made room in the diff area.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("write past the end of the volume ({} bytes)", self.size),
                )
            })?;
        if self.shadows.is_empty() && self.pending.is_empty() {
            self.live.write_at(offset, data)?;
            return self.refresh_fingerprint();
        }
        // A full buffer is drained before this write, so that a failing drain fails this
        // write with nothing of it applied.
        if self.pending_bytes >= self.pending_limit {
            self.drain()?;
        }
        let mut journal = WriteJournal::default();
        let applied = self
            .write_pieces(offset, end, data, &mut journal)
            .and_then(|()| {
                if !journal.direct_runs.is_empty() {
                    self.write_stamp.cover_write()?;
                }
                for (run_start, run_end) in &journal.direct_runs {
                    self.live.write_at(
                        *run_start,
                        &data[(run_start - offset) as usize..(run_end - offset) as usize],
                    )?;
                    // Every chunk of a direct run has its old content durable (or needs
                    // none), so its pages may reach the disk at any time: their write-back
                    // starts as a stream goes, instead of all at the flush.
                    self.live_write_back.wrote(&self.live, run_end - run_start);
                }
                Ok(())
            });
        if let Err(error) = applied {
            self.roll_back(journal);
            // Part of a direct run may have reached the image: that is diskshadow's own.
            let _ = self.refresh_fingerprint();
            return Err(error);
        }
        self.release_synced_copies()?;
        self.refresh_fingerprint()
    }

    /// The fallible part of a write: preservations, syncs and buffer updates, each noted in
    /// `journal` so that a failure can be undone; direct live writes are only planned.
    fn write_pieces(
        &mut self,
        offset: u64,
        end: u64,
        data: &[u8],
        journal: &mut WriteJournal,
    ) -> io::Result<()> {
        let first = offset / self.chunk_size;
        let last = (end - 1) / self.chunk_size;
        // Runs of pieces that go straight to the live image, written (one call each) only
        // after every preservation this write needs has succeeded.
        let mut direct_run: Option<(u64, u64)> = None;
        for chunk in first..=last {
            let chunk_start = chunk * self.chunk_size;
            let chunk_length = self.chunk_length(chunk);
            let piece_start = offset.max(chunk_start);
            let piece_end = end.min(chunk_start + chunk_length);
            let within = (piece_start - chunk_start) as usize;
            let piece = &data[(piece_start - offset) as usize..(piece_end - offset) as usize];
            if let Some((ahead_start, ahead_end)) = self.unsynced_ahead {
                if (ahead_start..ahead_end).contains(&chunk) {
                    // The writer reached the window prepared ahead of it: wait for its copies
                    // to be durable, and prepare the next one while it writes this one.
                    self.sync_diff()?;
                    self.prepare_ahead(ahead_end)?;
                }
            }
            if self.unsynced_preserved.contains(&chunk) {
                // Preserved by a write that failed before its sync: durable first.
                self.sync_diff()?;
            }
            let direct = !self.pending.contains_key(&chunk) && !self.needs_preservation(chunk);
            if direct {
                direct_run = Some(match direct_run {
                    Some((run_start, _)) => (run_start, piece_end),
                    None => (piece_start, piece_end),
                });
                continue;
            }
            if let Some(run) = direct_run.take() {
                journal.direct_runs.push(run);
            }
            // Three ways to take a piece that is not written straight through: into the
            // chunk's buffered new content; preserved with the rest of a sequential run and
            // written straight through; or preserved alone and buffered.
            if let Some(buffered) = self.pending.get_mut(&chunk) {
                journal
                    .buffered
                    .push(buffered.overwrite(chunk, within, piece));
                continue;
            }
            if self.sequential_next == Some(chunk) {
                self.preserve_sequential_run(chunk, first, last, journal)?;
                direct_run = Some((piece_start, piece_end));
                continue;
            }
            self.buffer_first_write(chunk, within, piece, journal)?;
        }
        if let Some(run) = direct_run {
            journal.direct_runs.push(run);
        }
        Ok(())
    }

    /// A sequential writer: preserve the rest of this write (chunks `chunk..=last`) with one
    /// group commit, so its live chunks can be written directly (no buffering, no extra copy),
    /// and prepare a growing window ahead of the writer whose write-back overlaps its next
    /// writes. What the writer never reaches costs diff-area space, bounded by the window.
    fn preserve_sequential_run(
        &mut self,
        chunk: ChunkIndex,
        first: ChunkIndex,
        last: ChunkIndex,
        journal: &mut WriteJournal,
    ) -> io::Result<()> {
        for ahead in chunk..=last {
            if self.needs_preservation(ahead) {
                self.preserve(ahead)?;
                journal.preserved.push(ahead);
            }
        }
        self.sync_diff()?;
        if chunk == first {
            // Sequential across calls: worth preparing ahead.
            self.prepare_ahead(last + 1)?;
        } else {
            self.sequential_next = Some(last + 1);
        }
        Ok(())
    }

    /// A first write to `chunk` off any sequential run: preserve the chunk, then hold its new
    /// content (`piece` at `within`, the rest as it was) in the write-back buffer until a sync
    /// makes the preserved copy durable.
    fn buffer_first_write(
        &mut self,
        chunk: ChunkIndex,
        within: usize,
        piece: &[u8],
        journal: &mut WriteJournal,
    ) -> io::Result<()> {
        let chunk_length = self.chunk_length(chunk);
        self.ahead_chunks = 1;
        self.sequential_next = Some(chunk + 1);
        self.preserve(chunk)?;
        journal.preserved.push(chunk);
        let content = if piece.len() as u64 == chunk_length {
            piece.to_vec()
        } else {
            let mut content = self.copy_buffer[..chunk_length as usize].to_vec();
            content[within..within + piece.len()].copy_from_slice(piece);
            content
        };
        self.pending_bytes += content.len();
        journal.buffered.push(BufferUndo::Remove { chunk });
        self.pending.insert(
            chunk,
            PendingChunk {
                content,
                written_from: within,
                written_to: within + piece.len(),
            },
        );
        Ok(())
    }

    /// Makes `[offset, offset + length)` read as zeros and frees the live image's storage
    /// behind it (`FALLOC_FL_PUNCH_HOLE`; the file system zeroes partial blocks). Shadows keep
    /// their bytes: every chunk in the range that a shadow still needs is preserved (a
    /// never-written one as a zero marker) and synced before the hole is punched, exactly as
    /// before a first write. Buffered first writes in the range are zeroed (or dropped, when
    /// their whole chunk is).
    pub fn punch_hole(&mut self, offset: u64, length: u64) -> io::Result<()> {
        let end = offset
            .checked_add(length)
            .filter(|end| *end <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("zeroing past the end of the volume ({} bytes)", self.size),
                )
            })?;
        if length == 0 {
            return Ok(());
        }
        let first = offset / self.chunk_size;
        let last = (end - 1) / self.chunk_size;
        if !self.shadows.is_empty() {
            for chunk in first..=last {
                if self.needs_preservation(chunk) {
                    self.preserve(chunk)?;
                }
            }
        }
        // The preserved copies (and those of any buffered first write in the range) must be
        // durable before the live chunks change.
        let buffered_in_range = self.pending.range(first..=last).next().is_some();
        if self.diff_unsynced || self.ahead_copy.is_some() || buffered_in_range {
            self.sync_diff()?;
        }
        let buffered: Vec<ChunkIndex> = self
            .pending
            .range(first..=last)
            .map(|(&chunk, _)| chunk)
            .collect();
        for chunk in buffered {
            let chunk_start = chunk * self.chunk_size;
            let from = (offset.max(chunk_start) - chunk_start) as usize;
            let to = (end.min(chunk_start + self.chunk_length(chunk)) - chunk_start) as usize;
            let Some(entry) = self.pending.get_mut(&chunk) else {
                continue;
            };
            if from == 0 && to == entry.content.len() {
                self.pending_bytes -= entry.content.len();
                self.pending.remove(&chunk);
            } else {
                // The drain writes `written_from..written_to` over the punched range, so it
                // must cover the zeros too.
                entry.content[from..to].fill(0);
                entry.written_from = entry.written_from.min(from);
                entry.written_to = entry.written_to.max(to);
            }
        }
        if !self.shadows.is_empty() {
            self.write_stamp.cover_write()?;
        }
        self.live.punch_hole(offset, length)?;
        self.refresh_fingerprint()
    }

    /// Drops the synced preserved copies from the page cache. Preserved copies are cold (read
    /// only through a shadow): keeping them cached doubles the page cache cost of a first
    /// write, and the freed pages serve the next copies at once. Called after a window ahead
    /// was handed to its helper, so that this overlaps the copying.
    fn release_synced_copies(&mut self) -> io::Result<()> {
        if let Some((from, to)) = self.synced_data_range.take() {
            self.data.drop_cached(from, to - from)?;
        }
        Ok(())
    }

    /// Records the image's state after diskshadow's own change, so that change detection only
    /// ever reports changes made by others.
    ///
    /// The image's modification time gets diskshadow's write mark (`WRITE_MARK_NS`, in the
    /// second the kernel stamped): a later write by anyone else replaces it with a kernel time,
    /// which the next check sees even within the same clock tick, and after a crash a marked
    /// time tells diskshadow's own interrupted writes from a change made while it was down.
    /// A file system that cannot keep the mark only makes recovery more conservative.
    pub fn refresh_fingerprint(&mut self) -> io::Result<()> {
        let current = self.live.fingerprint()?;
        // Unchanged (nothing reached the image) or already marked: leave the time alone.
        if current == self.fingerprint || current.is_write_marked() {
            self.fingerprint = current;
            return Ok(());
        }
        if self.live.set_modified(current.write_marked_ns()).is_err() {
            self.fingerprint = current;
            return Ok(());
        }
        self.fingerprint = self.live.fingerprint()?;
        Ok(())
    }

    /// Copies a chunk's current content into the diff area or records a zero marker for a
    /// hole, tagged with the newest shadow. Not yet durable. Afterwards `copy_buffer` holds the
    /// old content (zeros for a hole). A plain read and write through one reused buffer is
    /// several times cheaper than `copy_file_range` for chunk-sized pieces (splice overhead).
    fn preserve(&mut self, chunk: ChunkIndex) -> io::Result<()> {
        let chunk_start = chunk * self.chunk_size;
        let chunk_length = self.chunk_length(chunk);
        let mut buffer = std::mem::take(&mut self.copy_buffer);
        // Slots always hold `chunk_size` bytes (a short last chunk is padded with zeros), so
        // the slot checksum covers a fixed length.
        buffer.resize(self.chunk_size as usize, 0);
        let (slot, slot_checksum) = if self.chunk_is_hole(chunk_start, chunk_length)? {
            buffer.fill(0);
            (ZERO_SLOT, 0)
        } else {
            let slot = self.allocate_slot()?;
            let slot_start = u64::from(slot) * self.chunk_size;
            let copied = self
                .live
                .read_exact_or_zero(chunk_start, &mut buffer[..chunk_length as usize])
                .and_then(|()| {
                    buffer[chunk_length as usize..].fill(0);
                    self.data.write_at(slot_start, &buffer)
                });
            if let Err(error) = copied {
                // Nothing refers to the slot: it is free again (ENOSPC, EFBIG, EIO).
                self.free_slots.push(slot);
                self.copy_buffer = buffer;
                return Err(error);
            }
            self.note_data_written(slot_start, slot_start + buffer.len() as u64);
            self.data_slots_used += 1;
            let checksum = crc32fast::hash(&buffer);
            self.set_slot_checksum(slot, checksum);
            (slot, checksum)
        };
        self.copy_buffer = buffer;
        let tag = tag_of(self.newest_shadow().unwrap_or(0));
        self.append_record(IndexRecord {
            kind: KIND_PRESERVE,
            tag,
            chunk,
            slot,
            slot_checksum,
        })?;
        self.map.insert(chunk, tag, slot);
        Ok(())
    }

    /// Syncs the diff area's data and index: every preserved chunk so far becomes durable.
    fn sync_diff(&mut self) -> io::Result<()> {
        self.finish_ahead_copy()?;
        if self.diff_unsynced {
            self.write_records()?;
            self.data.sync_data()?;
            self.index_log.sync_data()?;
            self.diff_unsynced = false;
            if let Some((from, to)) = self.unsynced_data_range.take() {
                self.synced_data_range = Some(match self.synced_data_range {
                    Some((old_from, old_to)) => (old_from.min(from), old_to.max(to)),
                    None => (from, to),
                });
            }
        }
        self.unsynced_ahead = None;
        self.unsynced_preserved.clear();
        Ok(())
    }

    /// Drains and syncs the live image.
    pub fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.live.sync_data()
    }

    /// Forgets shadow `sequence` and frees the versions only it needed: O(versions tagged
    /// between it and the next newer shadow). Free records are not synced: a crash before
    /// they reach the disk leaves versions that reopening reclaims.
    pub fn delete_shadow(&mut self, sequence: u64) -> io::Result<u64> {
        if !self.shadows.remove(&sequence) {
            return Ok(0);
        }
        let previous_shadow = self
            .shadows
            .range(..sequence)
            .next_back()
            .copied()
            .unwrap_or(0);
        let next_shadow = self
            .shadows
            .range(sequence + 1..)
            .next()
            .copied()
            .unwrap_or(u64::MAX);
        let mut freed_count = 0;
        for tag in self.map.tags_in(tag_of(sequence), next_shadow) {
            // A version tagged `tag` serves shadows in (previous tag, tag]; the only shadow
            // left that could be there is `previous_shadow`.
            let freed = self.map.free_where(tag, |map, chunk| {
                let previous_tag = map.previous_tag(chunk, tag).map_or(0, u64::from);
                previous_shadow <= previous_tag
            });
            for (chunk, slot) in freed {
                self.append_record(IndexRecord {
                    kind: KIND_FREE,
                    tag,
                    chunk,
                    slot,
                    slot_checksum: 0,
                })?;
                if slot != ZERO_SLOT {
                    self.free_slots.push(slot);
                    self.data_slots_used -= 1;
                }
                freed_count += 1;
            }
        }
        if freed_count > 0 {
            // Lowest slot last (popped first): the next first writes, a stream of them after
            // rolling shadows, get consecutive slots, copied with one call per run into
            // blocks the file already has.
            self.free_slots.sort_unstable_by(|a, b| b.cmp(a));
        }
        Ok(freed_count)
    }
}

impl Drop for CowVolume {
    /// A helper still copying must not outlive the volume: a reopened diff area could
    /// otherwise be written behind its back.
    fn drop(&mut self) {
        if let Some(handle) = self.ahead_copy.take().and_then(|copy| copy.handle) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests;
