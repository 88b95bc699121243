//! The redirect-on-write provider for one volume.
//!
//! After a shadow the image keeps the shadow's bytes; new writes go to the diff area
//! (`row-chunks.dat`, `row-index.log`, the copy-on-write index format and block map). A
//! version written while the newest shadow is `k` is tagged `k`: the live volume reads a
//! chunk's newest version, shadow `s` the newest version tagged < `s`, else the image. A
//! first write costs a plain write (nothing is read or copied first, except the rest of a
//! chunk a write covers only partly); a rewrite of a version no shadow reads goes in place.
//!
//! **Invariant (shadows):** a version tagged < the newest shadow is never written again, and
//! the image chunk is written only when no shadow reads it (no shadow at all and no version,
//! or a fold). Shadows are synced at their creation (the engine flushes before the commit), so
//! they survive any crash.
//!
//! **Invariant (durability):** a version's data is synced before its index record is written,
//! so a durable record never points at data that is not there; a freed slot is reused only
//! after its free record is durable. Folding the versions no shadow needs back into the image
//! (deleting the oldest shadow, recovery) writes and syncs the image before the free records.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::ids::VolumeId;
use crate::engine::store::{DurableBackend, DurableFile, FileFingerprint};

use super::cow::{
    slot_layout, tag_of, DiffAreaError, DiffAreaProblem, IndexRecord, OpenOptions, KIND_PRESERVE,
    RECORD_BYTES,
};
use super::index::{BlockMap, ChunkIndex, Slot, Tag, MAX_SLOT};
use super::stamp::WriteStamp;
use super::writeback::WriteBackStarter;

mod fold;
mod read;

/// The files of a redirect-on-write diff area.
pub fn data_path(diff_dir: &Path) -> PathBuf {
    diff_dir.join("row-chunks.dat")
}

pub fn index_path(diff_dir: &Path) -> PathBuf {
    diff_dir.join("row-index.log")
}

/// True when `diff_dir` holds redirected versions (an index log that is not empty): the
/// volume's data path is redirect-on-write until they are folded back.
pub fn has_versions(diff_dir: &Path) -> bool {
    std::fs::metadata(index_path(diff_dir)).is_ok_and(|metadata| metadata.len() > 0)
}

/// What replaying an index log found: the versions `(chunk, tag) -> slot`, the length of
/// its valid records and how many there were.
struct Replayed {
    versions: std::collections::BTreeMap<(ChunkIndex, Tag), Slot>,
    length: u64,
    records_read: u64,
}

/// Applies the log's records in order (a version written, a version freed) up to the first
/// invalid one: a torn append, cut off unless `read_only`.
fn replay(index_log: &dyn DurableFile, read_only: bool) -> io::Result<Replayed> {
    let log_length = index_log.size()?;
    let mut bytes = vec![0u8; log_length as usize];
    index_log.read_exact_or_zero(0, &mut bytes)?;
    let mut versions = std::collections::BTreeMap::new();
    let mut position = 0usize;
    while let Some(Ok(record)) = bytes
        .get(position..position + RECORD_BYTES)
        .map(IndexRecord::decode)
    {
        if record.kind == KIND_PRESERVE {
            versions.insert((record.chunk, record.tag), record.slot);
        } else {
            versions.remove(&(record.chunk, record.tag));
        }
        position += RECORD_BYTES;
    }
    if (position as u64) < log_length && !read_only {
        index_log.set_len(position as u64)?;
        index_log.sync_data()?;
    }
    Ok(Replayed {
        versions,
        length: position as u64,
        records_read: (position / RECORD_BYTES) as u64,
    })
}

fn record(kind: u8, tag: Tag, chunk: ChunkIndex, slot: Slot) -> [u8; RECORD_BYTES] {
    IndexRecord {
        kind,
        tag,
        chunk,
        slot,
        slot_checksum: 0,
    }
    .encode()
}

/// Replaces the index log by one holding only `map`'s versions (write `row-index.log.new`,
/// sync, rename, sync the directory: a crash leaves the old or the new log, both correct).
fn rewrite_log(
    backend: &dyn DurableBackend,
    diff_dir: &Path,
    map: &BlockMap,
) -> io::Result<(Arc<dyn DurableFile>, u64)> {
    let new_path = diff_dir.join("row-index.log.new");
    let mut bytes = Vec::with_capacity(map.len() * RECORD_BYTES);
    for (chunk, tag, slot) in map.entries() {
        bytes.extend_from_slice(&record(KIND_PRESERVE, tag, chunk, slot));
    }
    let file = backend.open_file(&new_path, true)?;
    file.set_len(0)?;
    file.write_at(0, &bytes)?;
    file.sync_data()?;
    backend.rename(&new_path, &index_path(diff_dir))?;
    backend.sync_dir(diff_dir)?;
    Ok((file, bytes.len() as u64))
}

/// Adjacent pieces of a write going to one place: `data[from..to]` at byte `target` of the
/// image or of the data file, and the new versions whose slots it fills.
struct WriteRun {
    target: u64,
    from: usize,
    to: usize,
    to_image: bool,
    new_versions: Vec<(ChunkIndex, Slot)>,
}

/// One volume under the redirect-on-write provider.
pub struct RowVolume {
    pub volume: VolumeId,
    pub chunk_size: u64,
    pub size: u64,
    backend: Arc<dyn DurableBackend>,
    diff_dir: PathBuf,
    /// The image: the oldest shadow's bytes where it has no older version.
    pub live: Arc<dyn DurableFile>,
    data: Arc<dyn DurableFile>,
    index_log: Arc<dyn DurableFile>,
    index_log_length: u64,
    map: BlockMap,
    shadows: BTreeSet<u64>,
    free_slots: Vec<Slot>,
    /// Slots whose free records are not durable yet: reusable after the next index sync.
    released_slots: Vec<Slot>,
    slot_high_water: u64,
    data_slots_used: u64,
    record_buffer: Vec<u8>,
    /// Data or records written since the last sync.
    unsynced: bool,
    /// The image was written directly since the last flush.
    image_unsynced: bool,
    /// Records buffered before a sync is forced (bounds their memory).
    sync_limit_records: usize,
    /// Starts the data file's write-back off the writer's thread.
    write_back: WriteBackStarter,
    chunk_buffer: Vec<u8>,
    pub max_diff_bytes: Option<u64>,
    pub fingerprint: FileFingerprint,
    pub persisted_clean: bool,
    pub suspect_through: u64,
    pub write_stamp: WriteStamp,
}

fn io_context(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

impl RowVolume {
    /// Opens the image and the redirect-on-write diff area, replays its index log and drops
    /// versions that neither the live volume nor a shadow in `shadows` reads. Versions older
    /// than the oldest shadow stay until [`RowVolume::fold`] (which writes the image).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        backend: Arc<dyn DurableBackend>,
        volume: VolumeId,
        live_path: &Path,
        diff_dir: &Path,
        chunk_size: u32,
        shadows: BTreeSet<u64>,
        write_back_bytes: usize,
        options: &OpenOptions,
    ) -> Result<RowVolume, DiffAreaError> {
        let read_only = options.read_only;
        let (data_file, index_file) = (data_path(diff_dir), index_path(diff_dir));
        if read_only && (!data_file.exists() || !index_file.exists()) {
            return Err(DiffAreaError::Corrupt {
                path: index_file,
                detail: "the redirect-on-write diff area is missing".to_string(),
            });
        }
        let live = if read_only {
            backend.open_file_read_only(live_path)
        } else {
            backend.open_file(live_path, false)
        }
        .map_err(|error| io_context(error, "cannot open the image", live_path))?;
        let (data, index_log) = if read_only {
            (
                backend.open_file_read_only(&data_file)?,
                backend.open_file_read_only(&index_file)?,
            )
        } else {
            backend.create_dir_all(diff_dir)?;
            let created = !data_file.exists() || !index_file.exists();
            let files = (
                backend.open_file(&data_file, true)?,
                backend.open_file(&index_file, true)?,
            );
            if created {
                backend.sync_dir(diff_dir)?;
            }
            files
        };
        let fingerprint = live.fingerprint()?;
        let write_stamp = WriteStamp::open(&backend, diff_dir, read_only)?;
        let replayed = replay(&*index_log, read_only)?;
        // A version tagged t serves the shadows in (t, next tag] and, when it is the newest,
        // the live volume.
        let mut map = BlockMap::new();
        let mut reclaimed = 0u64;
        let versions: Vec<((ChunkIndex, Tag), Slot)> = replayed.versions.into_iter().collect();
        for (position, &((chunk, tag), slot)) in versions.iter().enumerate() {
            let next_tag = versions
                .get(position + 1)
                .filter(|((next_chunk, _), _)| *next_chunk == chunk)
                .map(|((_, next_tag), _)| u64::from(*next_tag));
            let needed = match next_tag {
                None => true,
                Some(next_tag) => shadows
                    .range(u64::from(tag) + 1..=next_tag)
                    .next()
                    .is_some(),
            };
            if needed {
                map.insert(chunk, tag, slot);
            } else {
                reclaimed += 1;
            }
        }
        let chunk_size = u64::from(chunk_size);
        let mut row = RowVolume {
            volume,
            chunk_size,
            size: fingerprint.size,
            backend,
            diff_dir: diff_dir.to_path_buf(),
            live,
            data,
            index_log,
            index_log_length: replayed.length,
            map,
            shadows,
            free_slots: Vec::new(),
            released_slots: Vec::new(),
            slot_high_water: 0,
            data_slots_used: 0,
            record_buffer: Vec::new(),
            unsynced: false,
            image_unsynced: false,
            // The records buffered cost 32 bytes per chunk written: the write-back budget
            // bounds their memory, not a sync per budget of data (that would stall a stream).
            sync_limit_records: (write_back_bytes / RECORD_BYTES).max(16),
            write_back: WriteBackStarter::default(),
            chunk_buffer: Vec::new(),
            max_diff_bytes: None,
            fingerprint,
            persisted_clean: true,
            suspect_through: 0,
            write_stamp,
        };
        let used = row.map.entries().into_iter().map(|(_, _, slot)| slot);
        let (free, high_water, used_count) = slot_layout(used.collect());
        row.free_slots = free;
        row.slot_high_water = high_water;
        row.data_slots_used = used_count;
        if read_only {
            return Ok(row);
        }
        // Space past the last used slot is leaked by a crash; give it back.
        if row.data.size()? > high_water * chunk_size {
            row.data.set_len(high_water * chunk_size)?;
            row.data.sync_data()?;
        }
        if reclaimed > 0 || replayed.records_read > 2 * row.map.len() as u64 + 4096 {
            let (file, length) = rewrite_log(&*row.backend, &row.diff_dir, &row.map)?;
            row.index_log = file;
            row.index_log_length = length;
        }
        Ok(row)
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

    pub fn used_bytes(&self) -> u64 {
        self.data_slots_used * self.chunk_size
    }

    pub fn allocated_bytes(&self) -> u64 {
        self.slot_high_water * self.chunk_size
    }

    pub fn versions(&self) -> usize {
        self.map.len()
    }

    pub fn max_tag(&self) -> Option<Tag> {
        self.map.max_tag()
    }

    pub fn index_memory_bytes(&self) -> usize {
        self.map.memory_bytes()
    }

    /// True when nothing is redirected: the image is the live volume.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn chunk_length(&self, chunk: ChunkIndex) -> u64 {
        self.chunk_size
            .min(self.size.saturating_sub(chunk * self.chunk_size))
    }

    /// The tag a write made now gets: the newest shadow's sequence (0 without shadows).
    fn write_tag(&self) -> Tag {
        tag_of(self.newest_shadow().unwrap_or(0))
    }

    /// Where a write to `chunk` goes: `Some(slot)` in place (a version no shadow reads),
    /// `None` for a new version; `Err(())` straight to the image.
    fn write_target(&self, chunk: ChunkIndex) -> Result<Option<Slot>, ()> {
        match self.map.lookup_below(chunk, Tag::MAX) {
            None if self.shadows.is_empty() => Err(()),
            None => Ok(None),
            Some(version) => {
                let read_by_a_shadow = self
                    .shadows
                    .range(u64::from(version.tag) + 1..)
                    .next()
                    .is_some();
                Ok((!read_by_a_shadow).then_some(version.slot))
            }
        }
    }

    /// Diff-area bytes a write of `length` bytes at `offset` adds (new versions).
    pub fn redirection_bytes_needed(&self, offset: u64, length: u64) -> u64 {
        if length == 0 || self.shadows.is_empty() {
            return 0;
        }
        let first = offset / self.chunk_size;
        let last = (offset + length - 1) / self.chunk_size;
        let new_versions = (first..=last)
            .filter(|chunk| matches!(self.write_target(*chunk), Ok(None)))
            .count() as u64;
        new_versions * self.chunk_size
    }

    fn allocate_slot(&mut self) -> io::Result<Slot> {
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

    fn append_record(&mut self, kind: u8, tag: Tag, chunk: ChunkIndex, slot: Slot) {
        self.record_buffer
            .extend_from_slice(&record(kind, tag, chunk, slot));
        self.unsynced = true;
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
        let tag = self.write_tag();
        let first = offset / self.chunk_size;
        let last = (end - 1) / self.chunk_size;
        // Adjacent pieces going to the image, or to consecutive slots, are written with one
        // call; new versions enter the block map only once their data is written.
        let mut run: Option<WriteRun> = None;
        let planned = self.plan_write(offset, end, data, tag, first, last, &mut run);
        let finished = planned.and_then(|()| self.flush_run(&mut run, data, tag));
        if let Err(error) = finished {
            if let Some(abandoned) = run {
                self.free_slots
                    .extend(abandoned.new_versions.iter().map(|(_, slot)| *slot));
            }
            return Err(error);
        }
        if self.record_buffer.len() / RECORD_BYTES >= self.sync_limit_records {
            self.sync()?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_write(
        &mut self,
        offset: u64,
        end: u64,
        data: &[u8],
        tag: Tag,
        first: ChunkIndex,
        last: ChunkIndex,
        run: &mut Option<WriteRun>,
    ) -> io::Result<()> {
        for chunk in first..=last {
            let chunk_start = chunk * self.chunk_size;
            let chunk_length = self.chunk_length(chunk);
            let piece_start = offset.max(chunk_start);
            let piece_end = end.min(chunk_start + chunk_length);
            let within = piece_start - chunk_start;
            let (from, to) = (
                (piece_start - offset) as usize,
                (piece_end - offset) as usize,
            );
            let mut new_version = None;
            let (target, to_image) = match self.write_target(chunk) {
                Err(()) => (piece_start, true),
                Ok(Some(slot)) => (u64::from(slot) * self.chunk_size + within, false),
                Ok(None) => {
                    let slot = self.allocate_slot()?;
                    let slot_start = u64::from(slot) * self.chunk_size;
                    if (piece_end - piece_start) != chunk_length {
                        // A partial first write: the rest of the chunk comes from the
                        // current live content.
                        let mut content = std::mem::take(&mut self.chunk_buffer);
                        content.resize(chunk_length as usize, 0);
                        let written = self.read_live(chunk_start, &mut content).and_then(|()| {
                            content[within as usize..within as usize + (to - from)]
                                .copy_from_slice(&data[from..to]);
                            self.data.write_at(slot_start, &content)
                        });
                        self.chunk_buffer = content;
                        if let Err(error) = written {
                            // Nothing refers to the slot: it is free again.
                            self.free_slots.push(slot);
                            return Err(error);
                        }
                        self.unsynced = true;
                        self.record_version(chunk, tag, slot);
                        continue;
                    }
                    new_version = Some((chunk, slot));
                    (slot_start, false)
                }
            };
            if let Some(current) = run {
                if current.to_image == to_image
                    && current.target + (current.to - current.from) as u64 == target
                {
                    current.to = to;
                    current.new_versions.extend(new_version);
                    continue;
                }
            }
            if let Err(error) = self.flush_run(run, data, tag) {
                self.free_slots.extend(new_version.map(|(_, slot)| slot));
                return Err(error);
            }
            *run = Some(WriteRun {
                target,
                from,
                to,
                to_image,
                new_versions: new_version.into_iter().collect(),
            });
        }
        Ok(())
    }

    fn record_version(&mut self, chunk: ChunkIndex, tag: Tag, slot: Slot) {
        self.append_record(KIND_PRESERVE, tag, chunk, slot);
        self.map.insert(chunk, tag, slot);
        self.data_slots_used += 1;
    }

    /// Writes a planned run; its new versions enter the block map when it succeeded (on
    /// failure `run` keeps them, for the caller to give their slots back).
    fn flush_run(&mut self, run: &mut Option<WriteRun>, data: &[u8], tag: Tag) -> io::Result<()> {
        let Some(current) = run.as_ref() else {
            return Ok(());
        };
        if current.to_image {
            self.write_stamp.cover_write()?;
            let written = self
                .live
                .write_at(current.target, &data[current.from..current.to]);
            self.image_unsynced = true;
            self.refresh_fingerprint()?;
            written?;
        } else {
            self.unsynced = true;
            self.data
                .write_at(current.target, &data[current.from..current.to])?;
            // A stream of redirected writes: their write-back starts as they go, overlapping
            // the writer, instead of all at the next sync (a hint, not a sync point).
            self.write_back
                .wrote(&self.data, (current.to - current.from) as u64);
        }
        if let Some(done) = run.take() {
            for (chunk, slot) in done.new_versions {
                self.record_version(chunk, tag, slot);
            }
        }
        Ok(())
    }

    /// Makes every version durable: data first, then the index records that point at it.
    /// Slots freed before become reusable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.data.sync_data()?;
            if !self.record_buffer.is_empty() {
                self.index_log
                    .write_at(self.index_log_length, &self.record_buffer)?;
                self.index_log_length += self.record_buffer.len() as u64;
                self.record_buffer.clear();
                self.index_log.sync_data()?;
            }
            self.unsynced = false;
        }
        if !self.released_slots.is_empty() {
            self.free_slots.append(&mut self.released_slots);
            // Lowest slot last (popped first): a stream of first writes gets consecutive
            // slots, written with one call per run.
            self.free_slots.sort_unstable_by(|a, b| b.cmp(a));
        }
        Ok(())
    }

    /// Syncs the diff area and the image.
    pub fn flush(&mut self) -> io::Result<()> {
        self.sync()?;
        if self.image_unsynced {
            self.live.sync_data()?;
            self.image_unsynced = false;
        }
        Ok(())
    }

    /// As `CowVolume::refresh_fingerprint`: records (and marks) the image after diskshadow's
    /// own write to it.
    pub fn refresh_fingerprint(&mut self) -> io::Result<()> {
        let current = self.live.fingerprint()?;
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

    /// Zeros a range through the write path, freeing storage where no shadow needs it. A
    /// whole chunk is never written with zeros: without a version and without shadows its
    /// image chunk is punched; a version no shadow reads is punched in place in the diff area
    /// (its slot keeps no storage); a chunk a shadow reads (the image's or an older version)
    /// gets a new version whose slot is a hole. The ends of the range that cover a chunk only
    /// partly are written with zeros.
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
        // The whole chunks: from the first chunk starting at or after `offset` to the last
        // one ending at or before `end` (the volume's last chunk may be short).
        let first_whole = offset.div_ceil(self.chunk_size);
        let mut end_whole = end / self.chunk_size;
        if end == self.size && self.size % self.chunk_size != 0 {
            end_whole += 1;
        }
        if first_whole >= end_whole {
            return self.write_zeros(offset, end);
        }
        let whole_start = first_whole * self.chunk_size;
        let whole_end = (end_whole * self.chunk_size).min(self.size);
        self.write_zeros(offset, whole_start)?;
        let tag = self.write_tag();
        let mut image_punched = false;
        for chunk in first_whole..end_whole {
            let chunk_start = chunk * self.chunk_size;
            let chunk_length = self.chunk_length(chunk);
            match self.write_target(chunk) {
                Err(()) => {
                    if !image_punched {
                        self.write_stamp.cover_write()?;
                        image_punched = true;
                    }
                    self.image_unsynced = true;
                    self.live.punch_hole(chunk_start, chunk_length)?;
                }
                Ok(Some(slot)) => {
                    self.unsynced = true;
                    self.data
                        .punch_hole(u64::from(slot) * self.chunk_size, chunk_length)?;
                }
                Ok(None) => {
                    let slot = self.allocate_slot()?;
                    // A reused slot may hold an old version's bytes: the hole zeroes them.
                    if let Err(error) = self
                        .data
                        .punch_hole(u64::from(slot) * self.chunk_size, chunk_length)
                    {
                        self.free_slots.push(slot);
                        return Err(error);
                    }
                    self.unsynced = true;
                    self.record_version(chunk, tag, slot);
                }
            }
        }
        if image_punched {
            self.refresh_fingerprint()?;
        }
        self.write_zeros(whole_end, end)?;
        if self.record_buffer.len() / RECORD_BYTES >= self.sync_limit_records {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes zeros over `[from, to)` through [`RowVolume::write`].
    fn write_zeros(&mut self, from: u64, to: u64) -> io::Result<()> {
        const ZERO_PIECE: u64 = 1 << 20;
        let mut position = from;
        while position < to {
            let piece = (to - position).min(ZERO_PIECE) as usize;
            self.write(position, &vec![0u8; piece])?;
            position += piece as u64;
        }
        Ok(())
    }

    /// Read-only consistency check of the block map against the diff area.
    pub fn check(&self) -> io::Result<Vec<DiffAreaProblem>> {
        let mut problems = Vec::new();
        let data_length = self.data.size()?;
        let mut seen_slots = BTreeSet::new();
        let entries = self.map.entries();
        for (position, &(chunk, tag, slot)) in entries.iter().enumerate() {
            if (u64::from(slot) + 1) * self.chunk_size
                > data_length.max(self.slot_high_water * self.chunk_size)
            {
                problems.push(DiffAreaProblem {
                    description: format!(
                        "redirected chunk {chunk} (tag {tag}) points at slot {slot}, past the end of the diff area"
                    ),
                    leaked_bytes: 0,
                });
            }
            if !seen_slots.insert(slot) {
                problems.push(DiffAreaProblem {
                    description: format!(
                        "slot {slot} is used by more than one redirected chunk (chunk {chunk}, tag {tag})"
                    ),
                    leaked_bytes: 0,
                });
            }
            let next_tag = entries
                .get(position + 1)
                .filter(|(next_chunk, _, _)| *next_chunk == chunk)
                .map(|(_, next_tag, _)| u64::from(*next_tag));
            if let Some(next_tag) = next_tag {
                if self
                    .shadows
                    .range(u64::from(tag) + 1..=next_tag)
                    .next()
                    .is_none()
                {
                    problems.push(DiffAreaProblem {
                        description: format!(
                            "redirected chunk {chunk} under tag {tag} is read by no shadow (leaked)"
                        ),
                        leaked_bytes: self.chunk_size,
                    });
                }
            }
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

#[cfg(test)]
mod tests;
