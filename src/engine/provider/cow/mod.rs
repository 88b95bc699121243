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
mod index_log;
mod slots;

use ahead::AheadCopy;
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

/// A file that does not exist, opened read-only: empty, refusing writes.
struct AbsentFile;

impl DurableFile for AbsentFile {
    fn read_at(&self, _offset: u64, _buffer: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(read_only_error())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn set_len(&self, _length: u64) -> io::Result<()> {
        Err(read_only_error())
    }
    fn next_data(&self, _offset: u64) -> io::Result<Option<u64>> {
        Ok(None)
    }
    fn fingerprint(&self) -> io::Result<FileFingerprint> {
        Ok(FileFingerprint {
            size: 0,
            modified_ns: 0,
            inode: 0,
        })
    }
}

fn read_only_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the store is open read-only (check-store changes nothing)",
    )
}

#[derive(Debug, Clone, Copy)]
enum ReadSource {
    Live,
    Zero,
    /// Byte offset in the diff-area data file.
    Diff(u64),
}

/// A contiguous piece of a shadow read, `[from, to)` in volume bytes.
#[derive(Debug, Clone, Copy)]
struct ReadRun {
    source: ReadSource,
    from: u64,
    to: u64,
}

/// A first write held back until its chunk's preserved copy is durable: the chunk's whole new
/// content (what reads of the live volume see) and the byte range within it that was written,
/// which is all the drain has to write (the rest is still on the live image unchanged).
struct PendingChunk {
    content: Vec<u8>,
    written_from: usize,
    written_to: usize,
}

/// A change a write made to the write-back buffer, and how to undo it.
enum BufferUndo {
    Remove {
        chunk: ChunkIndex,
    },
    Restore {
        chunk: ChunkIndex,
        written_from: usize,
        written_to: usize,
        within: usize,
        old_bytes: Vec<u8>,
    },
}

/// What one write did so far (see `CowVolume::roll_back`).
#[derive(Default)]
struct WriteJournal {
    buffered: Vec<BufferUndo>,
    preserved: Vec<ChunkIndex>,
    direct_runs: Vec<(u64, u64)>,
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
    /// Opens the live image and the diff area, replays the index log, and drops versions that
    /// no shadow in `shadows` needs.
    ///
    /// A torn append (the tail after the last valid record, beyond what the catalog recorded
    /// as durable, with no valid record after it) is ignored, and cut when not read-only.
    /// Anything else wrong is damage ([`DiffAreaError::Corrupt`], naming the file and the
    /// record): a bad record followed by a valid one, a bad or missing record the catalog
    /// recorded as durable, a record for a sequence the catalog never handed out, a free of a
    /// version a current shadow needs, a slot past the end of `chunks.dat`, a missing file a
    /// shadow depends on. Nothing is written before the whole log has been judged.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        backend: Arc<dyn DurableBackend>,
        volume: VolumeId,
        live_path: &Path,
        diff_dir: &Path,
        chunk_size: u32,
        shadows: BTreeSet<u64>,
        pending_limit: usize,
        options: &OpenOptions,
    ) -> Result<(CowVolume, Recovery), DiffAreaError> {
        let read_only = options.read_only;
        let live = if read_only {
            backend.open_file_read_only(live_path)
        } else {
            backend.open_file(live_path, false)
        }
        .map_err(|error| io_context(error, "cannot open the image", live_path))?;
        let data_path = Self::data_path(diff_dir);
        let index_path = Self::index_path(diff_dir);
        let corrupt = |path: &Path, detail: String| DiffAreaError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let data_exists = data_path.exists();
        let index_exists = index_path.exists();
        let data_length = std::fs::metadata(&data_path).map_or(0, |metadata| metadata.len());
        let recorded_index_bytes = options.recorded_index_bytes.unwrap_or(0);
        if !index_exists {
            if recorded_index_bytes > 0 {
                return Err(corrupt(
                    &index_path,
                    format!(
                        "the file is missing, but the catalog recorded {recorded_index_bytes} \
                         bytes of it"
                    ),
                ));
            }
            if !shadows.is_empty() {
                return Err(corrupt(
                    &index_path,
                    format!(
                        "the file is missing, but the volume has {} shadow copies that depend on it",
                        shadows.len()
                    ),
                ));
            }
            if data_length > 0 {
                return Err(corrupt(
                    &index_path,
                    format!("the file is missing, but chunks.dat holds {data_length} bytes of preserved chunks"),
                ));
            }
        }
        if !data_exists && !shadows.is_empty() {
            return Err(corrupt(
                &data_path,
                format!(
                    "the file is missing, but the volume has {} shadow copies that depend on it",
                    shadows.len()
                ),
            ));
        }
        let open_store_file = |path: &Path, exists: bool| -> io::Result<Arc<dyn DurableFile>> {
            if !read_only {
                backend.open_file(path, true)
            } else if exists {
                backend.open_file_read_only(path)
            } else {
                Ok(Arc::new(AbsentFile))
            }
        };
        if !read_only {
            backend.create_dir_all(diff_dir)?;
        }
        let data = open_store_file(&data_path, data_exists)?;
        let index_log = open_store_file(&index_path, index_exists)?;
        if !read_only && (!data_exists || !index_exists) {
            backend.sync_dir(diff_dir)?;
        }
        let fingerprint = live.fingerprint()?;
        let write_stamp = super::stamp::WriteStamp::open(&backend, diff_dir, read_only)?;
        let chunk_size = u64::from(chunk_size);

        let mut recovery = Recovery::default();
        let log_length = index_log.size()?;
        if log_length < recorded_index_bytes {
            return Err(corrupt(
                &index_path,
                format!(
                    "the file is {log_length} bytes, but the catalog recorded {recorded_index_bytes} \
                     bytes of it as durable: it was truncated"
                ),
            ));
        }
        let mut bytes = vec![0u8; log_length as usize];
        index_log.read_exact_or_zero(0, &mut bytes)?;
        let mut versions: BTreeMap<(ChunkIndex, Tag), (Slot, u32)> = BTreeMap::new();
        let mut position = 0usize;
        let describe = |position: usize| {
            format!(
                "record {} (bytes {}..{})",
                position / RECORD_BYTES,
                position,
                position + RECORD_BYTES
            )
        };
        while let Some(record_bytes) = bytes.get(position..position + RECORD_BYTES) {
            let record = match IndexRecord::decode(record_bytes) {
                Ok(record) => record,
                Err(RecordFault::OldFormat) => {
                    return Err(corrupt(
                        &index_path,
                        "it was written by an older diskshadow (index format 1, without chunk \
                         checksums), which this version cannot read; delete its shadow copies \
                         with the older version, or move the store aside"
                            .to_string(),
                    ))
                }
                Err(RecordFault::Invalid) => break,
            };
            if let Some(limit) = options.sequence_limit {
                if u64::from(record.tag) >= limit {
                    return Err(corrupt(
                        &index_path,
                        format!(
                            "{} is for shadow sequence {}, but the catalog has handed out only \
                             sequences below {limit}: the catalog (catalog/journal.log) lost \
                             transactions",
                            describe(position),
                            record.tag
                        ),
                    ));
                }
            }
            match record.kind {
                KIND_PRESERVE => {
                    if options.recorded_clean
                        && options.recorded_index_bytes.is_some()
                        && position as u64 >= recorded_index_bytes
                    {
                        return Err(corrupt(
                            &index_path,
                            format!(
                                "{} preserves chunk {} after the end the catalog recorded (byte \
                                 {recorded_index_bytes}) while the catalog says the image was \
                                 not being written: the catalog (catalog/journal.log) lost \
                                 transactions",
                                describe(position),
                                record.chunk
                            ),
                        ));
                    }
                    if record.slot != ZERO_SLOT && record.slot > MAX_SLOT {
                        return Err(corrupt(
                            &index_path,
                            format!(
                                "{} names slot {}, which no slot can be",
                                describe(position),
                                record.slot
                            ),
                        ));
                    }
                    versions.insert(
                        (record.chunk, record.tag),
                        (record.slot, record.slot_checksum),
                    );
                }
                _ => {
                    if versions.remove(&(record.chunk, record.tag)).is_some() {
                        let previous_tag = versions
                            .range((record.chunk, 0)..(record.chunk, record.tag))
                            .next_back()
                            .map_or(0, |(&(_, tag), _)| u64::from(tag));
                        if let Some(needing) = shadows
                            .range(previous_tag + 1..=u64::from(record.tag))
                            .next()
                        {
                            return Err(corrupt(
                                &index_path,
                                format!(
                                    "{} frees chunk {} of shadow sequence {}, which the catalog's \
                                     shadow copy with sequence {needing} still needs: the catalog \
                                     (catalog/journal.log) lost the delete",
                                    describe(position),
                                    record.chunk,
                                    record.tag
                                ),
                            ));
                        }
                    }
                }
            }
            position += RECORD_BYTES;
        }
        if (position as u64) < log_length {
            if (position as u64) < recorded_index_bytes {
                return Err(corrupt(
                    &index_path,
                    format!(
                        "{} is damaged, but the catalog recorded the log as durable up to byte \
                         {recorded_index_bytes}",
                        describe(position)
                    ),
                ));
            }
            let mut later = position + RECORD_BYTES;
            while let Some(record_bytes) = bytes.get(later..later + RECORD_BYTES) {
                if IndexRecord::decode(record_bytes).is_ok() {
                    return Err(corrupt(
                        &index_path,
                        format!(
                            "{} is damaged, but valid records follow it (the first is {}): this \
                             is damage, not an append torn by a crash",
                            describe(position),
                            describe(later)
                        ),
                    ));
                }
                later += RECORD_BYTES;
            }
            recovery.torn_records = (log_length - position as u64).div_ceil(RECORD_BYTES as u64);
        }
        // Every slot a version points at must lie within chunks.dat.
        if let Some((&(chunk, tag), &(slot, _))) = versions
            .iter()
            .filter(|(_, (slot, _))| *slot != ZERO_SLOT)
            .max_by_key(|(_, (slot, _))| *slot)
        {
            let slot_end = (u64::from(slot) + 1) * chunk_size;
            if slot_end > data_length {
                return Err(corrupt(
                    &data_path,
                    format!(
                        "the file is {data_length} bytes, but slot {slot} (chunk {chunk}, shadow \
                         sequence {tag}) ends at byte {slot_end}: it was truncated or replaced"
                    ),
                ));
            }
        }
        if recovery.torn_records > 0 && !read_only {
            // A torn record from a crash mid-append: it was never durable.
            index_log.set_len(position as u64)?;
            index_log.sync_data()?;
        }
        let records_read = (position / RECORD_BYTES) as u64;

        // Keep a version only if some shadow reads it: one in (previous kept tag, tag].
        let mut map = BlockMap::new();
        let mut slot_checksums: Vec<u32> = Vec::new();
        let mut previous: Option<(ChunkIndex, Tag)> = None;
        for (&(chunk, tag), &(slot, checksum)) in &versions {
            let previous_tag = match previous {
                Some((previous_chunk, previous_tag)) if previous_chunk == chunk => {
                    u64::from(previous_tag)
                }
                _ => 0,
            };
            if shadows
                .range(previous_tag + 1..=u64::from(tag))
                .next()
                .is_some()
            {
                map.insert(chunk, tag, slot);
                if slot != ZERO_SLOT {
                    let index = slot as usize;
                    if slot_checksums.len() <= index {
                        slot_checksums.resize(index + 1, 0);
                    }
                    slot_checksums[index] = checksum;
                }
                previous = Some((chunk, tag));
            } else {
                recovery.reclaimed_versions += 1;
            }
        }

        let mut volume = CowVolume {
            volume,
            chunk_size,
            size: fingerprint.size,
            backend,
            diff_dir: diff_dir.to_path_buf(),
            live,
            data,
            index_log,
            index_log_length: position as u64,
            map,
            shadows,
            free_slots: Vec::new(),
            slot_high_water: 0,
            data_slots_used: 0,
            slot_checksums,
            slot_verified: Vec::new(),
            read_only,
            index_rewrite_wanted: false,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            pending_limit,
            diff_unsynced: false,
            unsynced_data_range: None,
            synced_data_range: None,
            sequential_next: None,
            ahead_chunks: 1,
            unsynced_ahead: None,
            ahead_copy: None,
            copy_buffer: Vec::new(),
            record_buffer: Vec::new(),
            max_diff_bytes: None,
            fingerprint,
            persisted_clean: true,
            suspect_through: 0,
            unsynced_preserved: BTreeSet::new(),
            write_stamp,
        };
        volume.index_rewrite_wanted =
            recovery.reclaimed_versions > 0 || records_read > 2 * volume.map.len() as u64 + 4096;
        volume.rebuild_slots()?;
        Ok((volume, recovery))
    }

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
            if let Some(buffered) = self.pending.get_mut(&chunk) {
                journal.buffered.push(BufferUndo::Restore {
                    chunk,
                    written_from: buffered.written_from,
                    written_to: buffered.written_to,
                    within,
                    old_bytes: buffered.content[within..within + piece.len()].to_vec(),
                });
                buffered.content[within..within + piece.len()].copy_from_slice(piece);
                buffered.written_from = buffered.written_from.min(within);
                buffered.written_to = buffered.written_to.max(within + piece.len());
                continue;
            }
            if self.sequential_next == Some(chunk) {
                // A sequential writer: preserve the rest of this write with one group commit,
                // write the live chunks directly (no buffering, no extra copy), and prepare a
                // growing window ahead of the writer whose write-back overlaps its next writes.
                // What the writer never reaches costs diff-area space, bounded by the window.
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
                direct_run = Some((piece_start, piece_end));
                continue;
            }
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
        }
        if let Some(run) = direct_run {
            journal.direct_runs.push(run);
        }
        Ok(())
    }

    /// Undoes what a failed write did to the write-back buffer, newest change first, so that
    /// a failed write leaves nothing to be read or to land later. Chunks it preserved keep
    /// their versions (the chunk's current content, which the newest shadow reads either way);
    /// while those are not yet durable, a later write to them syncs before touching the image.
    fn roll_back(&mut self, journal: WriteJournal) {
        for undo in journal.buffered.into_iter().rev() {
            match undo {
                BufferUndo::Remove { chunk } => {
                    if let Some(removed) = self.pending.remove(&chunk) {
                        self.pending_bytes -= removed.content.len();
                    }
                }
                BufferUndo::Restore {
                    chunk,
                    written_from,
                    written_to,
                    within,
                    old_bytes,
                } => {
                    if let Some(buffered) = self.pending.get_mut(&chunk) {
                        buffered.content[within..within + old_bytes.len()]
                            .copy_from_slice(&old_bytes);
                        buffered.written_from = written_from;
                        buffered.written_to = written_to;
                    }
                }
            }
        }
        if self.diff_unsynced {
            for chunk in journal.preserved {
                if !self.pending.contains_key(&chunk) {
                    self.unsynced_preserved.insert(chunk);
                }
            }
        }
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

    /// Makes the preserved chunks and their index records durable, then writes the buffered
    /// live chunks. The live writes themselves are not synced here.
    pub fn drain(&mut self) -> io::Result<()> {
        self.sync_diff()?;
        if !self.pending.is_empty() {
            self.write_stamp.cover_write()?;
        }
        while let Some((chunk, buffered)) = self.pending.pop_first() {
            // Only the written bytes: a 4 KiB write into a 64 KiB chunk writes 4 KiB.
            let written = self.live.write_at(
                chunk * self.chunk_size + buffered.written_from as u64,
                &buffered.content[buffered.written_from..buffered.written_to],
            );
            if let Err(error) = written {
                // Acknowledged writes stay buffered (and visible) until a drain succeeds.
                self.pending.insert(chunk, buffered);
                let _ = self.refresh_fingerprint();
                return Err(error);
            }
            self.pending_bytes -= buffered.content.len();
        }
        self.release_synced_copies()?;
        self.refresh_fingerprint()
    }

    /// Drains and syncs the live image.
    pub fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.live.sync_data()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reads the live volume (including buffered writes).
    pub fn read_live(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.live.read_exact_or_zero(offset, buffer)?;
        if buffer.is_empty() || self.pending.is_empty() {
            return Ok(());
        }
        let end = offset + buffer.len() as u64;
        let first = offset / self.chunk_size;
        let last = (end - 1) / self.chunk_size;
        for (&chunk, buffered) in self.pending.range(first..=last) {
            let content = &buffered.content;
            let chunk_start = chunk * self.chunk_size;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + content.len() as u64);
            if from < to {
                buffer[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                    &content[(from - chunk_start) as usize..(to - chunk_start) as usize],
                );
            }
        }
        Ok(())
    }

    /// Reads shadow `sequence`'s view: one block-map lookup per chunk.
    pub fn read_shadow(&self, sequence: u64, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        if buffer.is_empty() {
            return Ok(());
        }
        let tag = tag_of(sequence);
        let end = offset + buffer.len() as u64;
        let first = offset / self.chunk_size;
        let last = (end - 1) / self.chunk_size;
        // Adjacent pieces from the same place (the live image, or consecutive diff-area slots)
        // are read with one call.
        let mut run: Option<ReadRun> = None;
        for chunk in first..=last {
            let chunk_start = chunk * self.chunk_size;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + self.chunk_size);
            let source = match self.map.lookup(chunk, tag) {
                None => ReadSource::Live,
                Some(version) if version.slot == ZERO_SLOT => ReadSource::Zero,
                Some(version) => ReadSource::Diff(
                    u64::from(version.slot) * self.chunk_size + (from - chunk_start),
                ),
            };
            if let Some(current) = &mut run {
                let continues = match (current.source, source) {
                    (ReadSource::Live, ReadSource::Live) | (ReadSource::Zero, ReadSource::Zero) => {
                        true
                    }
                    (ReadSource::Diff(start), ReadSource::Diff(next)) => {
                        start + (current.to - current.from) == next
                    }
                    _ => false,
                };
                if continues {
                    current.to = to;
                    continue;
                }
                self.read_run(current, offset, buffer)?;
            }
            run = Some(ReadRun { source, from, to });
        }
        if let Some(current) = &run {
            self.read_run(current, offset, buffer)?;
        }
        Ok(())
    }

    fn read_run(&self, run: &ReadRun, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let target = &mut buffer[(run.from - offset) as usize..(run.to - offset) as usize];
        match run.source {
            ReadSource::Live => self.read_live(run.from, target),
            ReadSource::Zero => {
                target.fill(0);
                Ok(())
            }
            ReadSource::Diff(start) => {
                self.data.read_exact_or_zero(start, target)?;
                self.verify_run(start, target)
            }
        }
    }

    /// Checks every slot a diff-area read touched that was not checked since the open: one
    /// CRC-32 per slot, over the bytes just read when the read covered the whole slot, else
    /// over the whole slot read again. A damaged slot is an error, never its bytes.
    fn verify_run(&self, start: u64, read: &[u8]) -> io::Result<()> {
        let end = start + read.len() as u64;
        let mut slot_start = start - start % self.chunk_size;
        let mut whole_slot: Vec<u8> = Vec::new();
        while slot_start < end {
            let slot = Slot::try_from(slot_start / self.chunk_size).map_err(io::Error::other)?;
            let slot_end = slot_start + self.chunk_size;
            if !self.slot_is_verified(slot) {
                if slot_start >= start && slot_end <= end {
                    let from = (slot_start - start) as usize;
                    self.verify_slot(slot, &read[from..from + self.chunk_size as usize])?;
                } else {
                    whole_slot.resize(self.chunk_size as usize, 0);
                    self.data.read_exact_or_zero(slot_start, &mut whole_slot)?;
                    self.verify_slot(slot, &whole_slot)?;
                    // The bytes served must be the bytes checked.
                    let from = start.max(slot_start);
                    let to = end.min(slot_end);
                    if read[(from - start) as usize..(to - start) as usize]
                        != whole_slot[(from - slot_start) as usize..(to - slot_start) as usize]
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{} changed while slot {slot} was read",
                                Self::data_path(&self.diff_dir).display()
                            ),
                        ));
                    }
                }
            }
            slot_start = slot_end;
        }
        Ok(())
    }

    /// The live image's data and holes in `[offset, offset + length)` (clamped to the volume),
    /// from `SEEK_DATA`/`SEEK_HOLE`, with chunks whose first write is still buffered counted as
    /// data. A prefix of the range when it has very many extents.
    pub fn allocation_live(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
        let extents = self.live_image_extents(offset, length)?;
        let Some(covered_end) = extents.last().map(Extent::end) else {
            return Ok(extents);
        };
        if self.pending.is_empty() {
            return Ok(extents);
        }
        let first = offset / self.chunk_size;
        let last = (covered_end - 1) / self.chunk_size;
        let buffered: Vec<(u64, u64)> = self
            .pending
            .range(first..=last)
            .map(|(&chunk, buffered)| {
                let start = chunk * self.chunk_size;
                (start, start + buffered.content.len() as u64)
            })
            .collect();
        Ok(mark_data(&extents, &buffered))
    }

    fn live_image_extents(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
        let end = offset.saturating_add(length).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let live = &self.live;
        file_extents(
            offset,
            end - offset,
            |at| live.next_data(at),
            |at| live.next_hole(at),
        )
    }

    /// Shadow `sequence`'s data and holes in `[offset, offset + length)` (clamped to the
    /// volume): a preserved chunk is data, a chunk preserved as never written is a hole, and
    /// every other chunk is what the live image's map says. Chunks without any version are
    /// skipped in one step, so the cost follows the preserved chunks, not the volume size.
    pub fn allocation_shadow(
        &self,
        sequence: u64,
        offset: u64,
        length: u64,
    ) -> io::Result<Vec<Extent>> {
        let tag = tag_of(sequence);
        let end = offset.saturating_add(length).min(self.size);
        let mut extents = Vec::new();
        let mut position = offset;
        while position < end && extents.len() < MAX_EXTENTS_PER_CALL {
            let chunk = position / self.chunk_size;
            let live_until = match self.map.next_chunk_with_versions(chunk) {
                Some(next) => next.saturating_mul(self.chunk_size).clamp(position, end),
                None => end,
            };
            // By the buffer invariant no shadow reads a buffered chunk from the live image,
            // so the image's own map is the truth for these chunks.
            let (from, to) = if live_until > position {
                (position, live_until)
            } else {
                let chunk_end = (chunk + 1).saturating_mul(self.chunk_size).min(end);
                match self.map.lookup(chunk, tag) {
                    None => (position, chunk_end),
                    Some(version) => {
                        let piece = if version.slot == ZERO_SLOT {
                            Extent::hole(position, chunk_end - position)
                        } else {
                            Extent::data(position, chunk_end - position)
                        };
                        push_extent(&mut extents, piece);
                        position = chunk_end;
                        continue;
                    }
                }
            };
            for extent in self.live_image_extents(from, to - from)? {
                push_extent(&mut extents, extent);
            }
            position = extents.last().map_or(to, Extent::end);
        }
        Ok(extents)
    }

    /// Chunks whose content differs (may differ) from shadow `sequence`'s: those written
    /// since it was created.
    pub fn chunks_changed_since(&self, sequence: u64) -> Vec<ChunkIndex> {
        self.map.chunks_changed_since(tag_of(sequence))
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
        Ok(freed_count)
    }

    /// Read-only consistency check of the block map against the diff area.
    pub fn check(&self) -> io::Result<Vec<DiffAreaProblem>> {
        let mut problems = Vec::new();
        let data_length = self.data.size()?;
        let data_path = Self::data_path(&self.diff_dir);
        let mut content = Vec::new();
        let mut seen_slots = BTreeSet::new();
        let mut previous: Option<(ChunkIndex, Tag)> = None;
        for (chunk, tag, slot) in self.map.entries() {
            if slot != ZERO_SLOT {
                let slot_end = (u64::from(slot) + 1) * self.chunk_size;
                if slot_end > data_length {
                    problems.push(DiffAreaProblem {
                        description: format!(
                            "{}: chunk {chunk} (shadow sequence {tag}) points at slot {slot}, \
                             which ends at byte {slot_end}, past the end of the file \
                             ({data_length} bytes)",
                            data_path.display()
                        ),
                        leaked_bytes: 0,
                    });
                } else {
                    content.resize(self.chunk_size as usize, 0);
                    self.data
                        .read_exact_or_zero(u64::from(slot) * self.chunk_size, &mut content)?;
                    let actual = crc32fast::hash(&content);
                    let expected = self.slot_checksum(slot);
                    if actual != expected {
                        problems.push(DiffAreaProblem {
                            description: format!(
                                "{}: slot {slot} (chunk {chunk}, shadow sequence {tag}) has \
                                 checksum {actual:08x}, but its index record says {expected:08x}: \
                                 the preserved chunk is damaged",
                                data_path.display()
                            ),
                            leaked_bytes: 0,
                        });
                    }
                }
                if !seen_slots.insert(slot) {
                    problems.push(DiffAreaProblem {
                        description: format!("slot {slot} is used by more than one preserved chunk (chunk {chunk}, tag {tag})"),
                        leaked_bytes: 0,
                    });
                }
            }
            let previous_tag = match previous {
                Some((previous_chunk, previous_tag)) if previous_chunk == chunk => {
                    u64::from(previous_tag)
                }
                _ => 0,
            };
            if self
                .shadows
                .range(previous_tag + 1..=u64::from(tag))
                .next()
                .is_none()
            {
                problems.push(DiffAreaProblem {
                    description: format!(
                        "chunk {chunk} preserved under tag {tag} is needed by no shadow (leaked)"
                    ),
                    leaked_bytes: if slot == ZERO_SLOT {
                        0
                    } else {
                        self.chunk_size
                    },
                });
            }
            previous = Some((chunk, tag));
        }
        if self.free_slots.iter().any(|slot| seen_slots.contains(slot)) {
            problems.push(DiffAreaProblem {
                description: "a slot is both free and in use".to_string(),
                leaked_bytes: 0,
            });
        }
        Ok(problems)
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
mod tests {
    use super::*;
    use crate::engine::store::{CrashMode, FaultBackend, RealBackend};

    const CHUNK: u32 = 4096;
    /// Enough chunks for several windows ahead (2, 4, 8, ... chunks).
    const CHUNKS: u64 = 200;
    /// Chunks from here on are a hole in the image.
    const DATA_CHUNKS: u64 = 150;

    fn original() -> Vec<u8> {
        (0..CHUNKS * u64::from(CHUNK))
            .map(|index| {
                let chunk = index / u64::from(CHUNK);
                if chunk < DATA_CHUNKS {
                    (chunk as u8) | 1
                } else {
                    0
                }
            })
            .collect()
    }

    fn make_image(dir: &Path) -> PathBuf {
        let path = dir.join("live.img");
        let content = original();
        let data_bytes = (DATA_CHUNKS * u64::from(CHUNK)) as usize;
        std::fs::write(&path, &content[..data_bytes]).expect("write image");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open image");
        file.set_len(content.len() as u64).expect("extend image");
        file.sync_all().expect("sync image");
        create_diff_area(dir);
        path
    }

    fn open(backend: Arc<dyn DurableBackend>, dir: &Path) -> io::Result<CowVolume> {
        CowVolume::open(
            backend,
            VolumeId(uuid::Uuid::from_u128(1)),
            &dir.join("live.img"),
            &dir.join("diff"),
            CHUNK,
            BTreeSet::from([1]),
            3 * CHUNK as usize,
            &OpenOptions::default(),
        )
        .map(|(volume, _)| volume)
        .map_err(|error| match error {
            DiffAreaError::Io(error) => error,
            other => io::Error::other(other.to_string()),
        })
    }

    /// Creates the (empty) diff area the way registering a volume does, before any shadow.
    fn create_diff_area(dir: &Path) {
        CowVolume::open(
            Arc::new(RealBackend),
            VolumeId(uuid::Uuid::from_u128(1)),
            &dir.join("live.img"),
            &dir.join("diff"),
            CHUNK,
            BTreeSet::new(),
            3 * CHUNK as usize,
            &OpenOptions::default(),
        )
        .expect("create the diff area");
    }

    fn read_shadow_all(volume: &CowVolume) -> Vec<u8> {
        let mut buffer = vec![0u8; volume.size as usize];
        volume.read_shadow(1, 0, &mut buffer).expect("read shadow");
        buffer
    }

    /// Chunk-aligned sequential writes over the whole volume, then a flush. Returns whether a
    /// window was being copied ahead at some point.
    fn sequential_run(volume: &mut CowVolume, expected_shadow: Option<&[u8]>) -> io::Result<bool> {
        let mut copied_ahead = false;
        for chunk in 0..CHUNKS {
            volume.write(chunk * u64::from(CHUNK), &[0xEE; CHUNK as usize])?;
            copied_ahead |= volume.ahead_copy.is_some();
            if let Some(expected) = expected_shadow {
                assert!(
                    read_shadow_all(volume) == expected,
                    "the shadow changed after the write of chunk {chunk}"
                );
            }
        }
        volume.flush()?;
        Ok(copied_ahead)
    }

    #[test]
    fn a_window_copied_ahead_keeps_the_shadow_exact_while_in_flight_and_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        make_image(dir.path());
        let expected = original();
        let mut volume = open(Arc::new(RealBackend), dir.path()).expect("open");
        let copied_ahead = sequential_run(&mut volume, Some(&expected)).expect("run");
        assert!(copied_ahead, "the run never copied a window ahead");
        let mut live = vec![0u8; volume.size as usize];
        volume.read_live(0, &mut live).expect("read live");
        assert!(live.iter().all(|byte| *byte == 0xEE));
        assert_eq!(volume.check().expect("check"), Vec::new());
        // Holes are preserved as zero markers: only the data chunks take space.
        assert_eq!(volume.used_bytes(), DATA_CHUNKS * u64::from(CHUNK));
        drop(volume);
        let volume = open(Arc::new(RealBackend), dir.path()).expect("reopen");
        assert!(read_shadow_all(&volume) == expected);
        assert_eq!(volume.check().expect("check"), Vec::new());
    }

    #[test]
    fn a_damaged_slot_is_a_read_error_naming_chunks_dat_never_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        make_image(dir.path());
        let mut volume = open(Arc::new(RealBackend), dir.path()).expect("open");
        // Random first writes (preserve) and a sequential run (copies made ahead by a helper).
        volume
            .write(7 * u64::from(CHUNK) + 5, &[0xAB; 10])
            .expect("write");
        sequential_run(&mut volume, None).expect("run");
        drop(volume);
        let volume = open(Arc::new(RealBackend), dir.path()).expect("reopen");
        assert!(
            read_shadow_all(&volume) == original(),
            "every slot checks out"
        );
        drop(volume);
        let data_path = dir.path().join("diff").join("chunks.dat");
        let mut bytes = std::fs::read(&data_path).expect("read");
        bytes[3 * CHUNK as usize + 17] ^= 0x10;
        std::fs::write(&data_path, &bytes).expect("write");
        let volume = open(Arc::new(RealBackend), dir.path()).expect("reopen");
        let chunk = (0..CHUNKS)
            .find(|chunk| {
                volume
                    .map
                    .lookup(*chunk, 1)
                    .is_some_and(|version| version.slot == 3)
            })
            .expect("a chunk in slot 3");
        // A one-byte read of the damaged slot is checked against the whole slot.
        let mut byte = [0u8; 1];
        let error = volume
            .read_shadow(1, chunk * u64::from(CHUNK) + 1, &mut byte)
            .expect_err("the damaged slot is not served");
        let message = error.to_string();
        assert!(
            message.contains(&data_path.display().to_string()) && message.contains("slot 3"),
            "{message}"
        );
        let mut buffer = vec![0u8; volume.size as usize];
        assert!(volume.read_shadow(1, 0, &mut buffer).is_err());
        // Other slots are still served.
        let other = if chunk == 0 { 1 } else { 0 };
        let mut piece = vec![0u8; CHUNK as usize];
        volume
            .read_shadow(1, other * u64::from(CHUNK), &mut piece)
            .expect("an undamaged slot");
        let start = (other * u64::from(CHUNK)) as usize;
        assert!(piece == original()[start..start + CHUNK as usize]);
        let problems = volume.check().expect("check");
        assert!(
            problems
                .iter()
                .any(|problem| problem.description.contains("slot 3")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_crash_at_any_sync_point_of_a_sequential_run_keeps_the_shadow_exact() {
        let counting_dir = tempfile::tempdir().expect("tempdir");
        make_image(counting_dir.path());
        let counting = FaultBackend::new(None, CrashMode::DropUnsynced);
        let mut volume = open(Arc::new(counting.clone()), counting_dir.path()).expect("open");
        sequential_run(&mut volume, None).expect("run");
        drop(volume);
        let total = counting.sync_points();
        assert!(total > 10, "the run has {total} sync points");
        let expected = original();
        for crash_point in 0..total {
            let dir = tempfile::tempdir().expect("tempdir");
            make_image(dir.path());
            // The adversarial case: live writes reach the disk unsynced, the diff area's do not.
            let backend = FaultBackend::new(
                Some(crash_point),
                CrashMode::KeepUnsyncedOutside(dir.path().join("diff")),
            );
            if let Ok(mut volume) = open(Arc::new(backend.clone()), dir.path()) {
                let _ = sequential_run(&mut volume, None);
            }
            assert!(
                backend.has_crashed(),
                "sync point {crash_point} was reached"
            );
            let volume = open(Arc::new(RealBackend), dir.path()).expect("reopen");
            assert!(
                read_shadow_all(&volume) == expected,
                "the shadow changed after a crash at sync point {crash_point} of {total}"
            );
            assert_eq!(volume.check().expect("check"), Vec::new());
        }
    }
}
