//! LUN resync: a shadow copy copied back onto its original volume or onto another registered
//! volume, while that volume stays usable.
//!
//! While a resync runs, the destination answers from two places: a chunk the resync has not
//! reached yet (and nobody wrote since it started) reads from the shadow; every other chunk
//! reads from the destination itself. A write to a pending chunk first fills the chunk with
//! the shadow's bytes (when it covers only part of it), then lands, and marks the chunk as
//! written: the resync skips it from then on, so it never overwrites a write made during it.
//! Every write, the resync's own included, goes through the engine's one write path, so the
//! destination's own shadows stay intact, and the shadow itself is never changed: the same
//! resync can run again.
//!
//! A requester may stop a resync (Ctrl-C): it stops between two chunks, flushes the
//! destination, persists the per-chunk state, and stays active but paused: the destination
//! still reads as described above, and a resync of the same pair takes it up where it stopped
//! (so does the next open, as after a crash).
//!
//! **Invariant (durability):** the per-chunk state (`<store>/resync/<volume>.resync`, laid
//! out in `src/engine/store/FORMAT.md`) is written only after the destination's data it
//! describes is durable: a checkpoint, a flush of the destination and the end of the resync
//! each flush the volume first, then write and sync the state. After a crash a chunk marked
//! done therefore holds what it should (the shadow's bytes, or a flushed write), and every
//! other chunk is copied again from the shadow when the store is opened; a resync that cannot
//! finish makes its destination unavailable with the reason, never silently mixed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{
    data_path_of, lock_mutex, read_lock, write_lock, Engine, VolumeHandle, VolumeSlot, WriteFailure,
};
use crate::engine::catalog::CatalogError;
use crate::engine::device::{BlockDevice, Extent};
use crate::engine::ids::{ShadowId, VolumeId};
use crate::engine::model::ShadowHealth;
use crate::engine::progress::{NoProgress, Progress};
use crate::engine::provider::VolumeProvider;
use crate::engine::store::DurableFile;
use crate::engine::vss::VssCode;

/// The directory of a store that holds the state of resyncs in progress.
pub const RESYNC_DIR: &str = "resync";
const MAGIC: &[u8; 8] = b"DSRSYNC1";
/// Bytes before the bitmaps: the header, padded.
const HEADER_BYTES: u64 = 128;
/// The header's fields end here; a CRC-32 of them follows.
const HEADER_FIELDS: usize = 64;
/// A checkpoint (volume flushed, then state synced) at least this often.
const CHECKPOINT_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("shadow copy {shadow} was not found; list shadows to see the existing ones")]
    NotFound { shadow: ShadowId },
    #[error(
        "shadow copy {shadow} was made in the {context} context; only persistent shadow copies \
         can be resynchronized (set context persistent before create)"
    )]
    UnsupportedContext {
        shadow: ShadowId,
        context: &'static str,
    },
    #[error("shadow copy {shadow} is suspect ({reason}); it cannot be resynchronized; delete it")]
    Suspect { shadow: ShadowId, reason: String },
    #[error("volume {volume} is not registered; name its image file to register it")]
    DestinationNotFound { volume: VolumeId },
    #[error("volume {volume} cannot be written: {reason}")]
    VolumeUnavailable { volume: VolumeId, reason: String },
    #[error(
        "volume {volume} holds {size} bytes, less than the {needed} bytes of shadow copy \
         {shadow}; resynchronize onto a volume at least as large"
    )]
    TooSmall {
        volume: VolumeId,
        shadow: ShadowId,
        size: u64,
        needed: u64,
    },
    #[error(
        "volume {volume} is already being resynchronized from shadow copy {shadow}; wait for \
         that resync to finish"
    )]
    InProgress { volume: VolumeId, shadow: ShadowId },
    #[error(
        "the diff area of volume {volume} is too small to resynchronize while keeping shadow \
         copy {shadow}; raise its maximum size (resize shadowstorage) and try again"
    )]
    InsufficientStorage { volume: VolumeId, shadow: ShadowId },
    #[error(
        "resync of volume {volume} failed: {source}; the resync resumes when the store is \
         opened again"
    )]
    Io { volume: VolumeId, source: io::Error },
    #[error(
        "the resync of shadow copy {shadow} onto volume {volume} was stopped (Ctrl-C) at \
         {done} of {bytes} bytes; the volume already reads as the shadow copy (the chunks not \
         copied yet are read from it, writes to the volume are kept), and it stays in resync \
         until the copy ends: run resync again to finish it, or it finishes when the service \
         next starts"
    )]
    Stopped {
        volume: VolumeId,
        shadow: ShadowId,
        /// Bytes of the destination done (copied, left alone, or written during the resync).
        done: u64,
        bytes: u64,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl ResyncError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            ResyncError::NotFound { .. } | ResyncError::DestinationNotFound { .. } => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            ResyncError::UnsupportedContext { .. } => VssCode::VSS_E_UNSUPPORTED_CONTEXT,
            ResyncError::Suspect { .. }
            | ResyncError::VolumeUnavailable { .. }
            | ResyncError::TooSmall { .. } => VssCode::VSS_E_VOLUME_NOT_SUPPORTED,
            ResyncError::InProgress { .. } => VssCode::VSS_E_RESYNC_IN_PROGRESS,
            ResyncError::Stopped { .. } => VssCode::VSS_S_ASYNC_CANCELLED,
            ResyncError::InsufficientStorage { .. } => VssCode::VSS_E_INSUFFICIENT_STORAGE,
            ResyncError::Io { .. } | ResyncError::Catalog(_) => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
        }
    }
}

/// What a finished resync did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResyncOutcome {
    pub shadow: ShadowId,
    pub destination: VolumeId,
    /// Bytes of the destination the resync covers (the shadow's volume size).
    pub bytes: u64,
    /// Bytes written from the shadow (data chunks that differed or could differ).
    pub bytes_copied: u64,
    /// Bytes made holes because the shadow has none there.
    pub bytes_punched: u64,
    /// Chunks left alone because they were written during the resync.
    pub chunks_written_during: u64,
}

/// Where the shadow's bytes are read from.
#[derive(Clone)]
enum ResyncSource {
    /// The shadow lives in the destination's own data path (resync onto the original volume
    /// of a copy-on-write or redirect-on-write shadow): read through the destination's
    /// provider, under the lock already held.
    DataPath { sequence: u64 },
    /// Any other shadow, opened as a read-only device.
    Device(Arc<dyn BlockDevice>),
}

/// A stopped resync's shadow, opened again for each read. The device a running resync reads
/// holds the engine, and the engine holds its resyncs: a stopped resync, which may stay for
/// as long as the engine does, keeps only this weak way back, so that the engine can still
/// close (and a store's lock go) with a resync stopped.
struct ReopeningShadow {
    shared: std::sync::Weak<super::Shared>,
    shadow: ShadowId,
    size: u64,
}

impl ReopeningShadow {
    fn open(&self) -> io::Result<Arc<dyn BlockDevice>> {
        let shared = self
            .shared
            .upgrade()
            .ok_or_else(|| io::Error::other("the store was closed"))?;
        Engine { shared }
            .open_shadow(self.shadow)
            .map_err(io::Error::other)
    }
}

impl BlockDevice for ReopeningShadow {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.open()?.read_at(offset, buffer)
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a resync source is read-only",
        ))
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn is_read_only(&self) -> bool {
        true
    }
    fn allocation(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
        self.open()?.allocation(offset, length)
    }
}

/// The per-chunk state: copied by the resync, or written during it.
struct ChunkMap {
    copied: Vec<u8>,
    written: Vec<u8>,
    /// Bytes of either bitmap changed since the last persist: `[first, last]`.
    dirty: Option<(usize, usize)>,
}

fn bit(bits: &[u8], chunk: u64) -> bool {
    bits[(chunk / 8) as usize] & (1 << (chunk % 8)) != 0
}

impl ChunkMap {
    fn new(chunks: u64) -> Self {
        let bytes = chunks.div_ceil(8) as usize;
        Self {
            copied: vec![0; bytes],
            written: vec![0; bytes],
            dirty: None,
        }
    }

    fn pending(&self, chunk: u64) -> bool {
        !bit(&self.copied, chunk) && !bit(&self.written, chunk)
    }

    fn set(bits: &mut [u8], dirty: &mut Option<(usize, usize)>, chunk: u64) {
        let byte = (chunk / 8) as usize;
        bits[byte] |= 1 << (chunk % 8);
        *dirty = Some(match *dirty {
            None => (byte, byte),
            Some((first, last)) => (first.min(byte), last.max(byte)),
        });
    }
}

/// A resync in progress, shared by the copy loop and the destination's device hooks.
pub(super) struct ActiveResync {
    pub(super) shadow: ShadowId,
    pub(super) destination: VolumeId,
    chunk_size: u64,
    /// Bytes covered: `[0, size)` of the destination.
    size: u64,
    chunk_count: u64,
    /// Swapped only when a stopped resync lets go of its shadow device and when it is taken
    /// up again; cloned out before any I/O.
    source: Mutex<ResyncSource>,
    map: Mutex<ChunkMap>,
    state_file: Arc<dyn DurableFile>,
    state_path: PathBuf,
    /// True while a copy loop runs; false once a requester stopped it (the resync stays
    /// active, its destination reading right, until a resync of the same pair takes it up).
    copying: std::sync::atomic::AtomicBool,
}

impl ActiveResync {
    fn chunk_range(&self, chunk: u64) -> (u64, usize) {
        let start = chunk * self.chunk_size;
        (start, (self.size - start).min(self.chunk_size) as usize)
    }

    /// The chunks of `[offset, offset + length)` the resync has not reached and nobody wrote.
    pub(super) fn pending_in(&self, offset: u64, length: u64) -> Vec<u64> {
        let end = offset.saturating_add(length).min(self.size);
        if length == 0 || offset >= end {
            return Vec::new();
        }
        let map = lock_mutex(&self.map);
        (offset / self.chunk_size..end.div_ceil(self.chunk_size))
            .filter(|chunk| map.pending(*chunk))
            .collect()
    }

    fn is_pending(&self, chunk: u64) -> bool {
        lock_mutex(&self.map).pending(chunk)
    }

    fn mark_copied(&self, chunk: u64) {
        let mut map = lock_mutex(&self.map);
        let ChunkMap { copied, dirty, .. } = &mut *map;
        ChunkMap::set(copied, dirty, chunk);
    }

    /// Marks chunks written during the resync (the caller has just written them).
    pub(super) fn mark_written(&self, chunks: &[u64]) {
        let mut map = lock_mutex(&self.map);
        let ChunkMap { written, dirty, .. } = &mut *map;
        for chunk in chunks {
            ChunkMap::set(written, dirty, *chunk);
        }
    }

    fn counts(&self) -> (u64, u64) {
        let map = lock_mutex(&self.map);
        let count = |bits: &[u8]| (0..self.chunk_count).filter(|c| bit(bits, *c)).count() as u64;
        (count(&map.copied), count(&map.written))
    }

    /// Writes the changed part of the bitmaps and syncs it. Call only after the destination's
    /// data is durable (see the module's invariant). Bits only ever go from 0 to 1, so a
    /// torn write leaves each byte old or new, and both are true.
    pub(super) fn persist(&self) -> io::Result<()> {
        let (copied, written, first, last) = {
            let mut map = lock_mutex(&self.map);
            let Some((first, last)) = map.dirty.take() else {
                return Ok(());
            };
            (
                map.copied[first..=last].to_vec(),
                map.written[first..=last].to_vec(),
                first,
                last,
            )
        };
        let bitmap_bytes = self.chunk_count.div_ceil(8);
        let outcome = self
            .state_file
            .write_at(HEADER_BYTES + first as u64, &copied)
            .and_then(|()| {
                self.state_file
                    .write_at(HEADER_BYTES + bitmap_bytes + first as u64, &written)
            })
            .and_then(|()| self.state_file.sync_data());
        if outcome.is_err() {
            // Not durable: the range stays to be written at the next persist.
            let mut map = lock_mutex(&self.map);
            map.dirty = Some(match map.dirty {
                None => (first, last),
                Some((a, b)) => (a.min(first), b.max(last)),
            });
        }
        outcome
    }

    /// Reads the shadow's bytes at `[offset, offset + buffer.len())` (inside one chunk or
    /// more). A data-path source reads through `provider` (the destination's, locked by the
    /// caller); a device source needs no volume lock of the destination.
    pub(super) fn read_source(
        &self,
        provider: Option<&dyn VolumeProvider>,
        offset: u64,
        buffer: &mut [u8],
    ) -> io::Result<()> {
        match &self.source() {
            ResyncSource::DataPath { sequence } => {
                let provider = provider.ok_or_else(|| {
                    io::Error::other("internal: a data-path resync source read without its volume")
                })?;
                if !provider.shadows().contains(sequence) {
                    return Err(io::Error::other(format!(
                        "shadow copy {} was deleted during its resync",
                        self.shadow
                    )));
                }
                provider.read_shadow(*sequence, offset, buffer)
            }
            ResyncSource::Device(device) => device.read_at(offset, buffer),
        }
    }

    fn source(&self) -> ResyncSource {
        lock_mutex(&self.source).clone()
    }

    /// Whether reading the source needs the destination's provider (and so its lock).
    pub(super) fn reads_through_destination(&self) -> bool {
        matches!(*lock_mutex(&self.source), ResyncSource::DataPath { .. })
    }

    /// Whether the shadow holds only zeros (a hole or known zeros) at the chunk.
    fn source_is_hole(
        &self,
        provider: Option<&dyn VolumeProvider>,
        start: u64,
        length: u64,
    ) -> io::Result<bool> {
        let extents = match &self.source() {
            ResyncSource::DataPath { sequence } => match provider {
                Some(provider) => provider.allocation_shadow(*sequence, start, length)?,
                None => return Ok(false),
            },
            ResyncSource::Device(device) => device.allocation(start, length)?,
        };
        Ok(all_zero(&extents, start + length))
    }

    /// Where chunk `chunk` starts on the destination.
    pub(super) fn chunk_start(&self, chunk: u64) -> u64 {
        chunk * self.chunk_size
    }

    /// The pending chunks a change of `[offset, offset + length)` covers only in part: it
    /// must start from the shadow's bytes there.
    pub(super) fn partial_pending(&self, offset: u64, length: u64) -> Vec<u64> {
        let end = offset.saturating_add(length);
        self.pending_in(offset, length)
            .into_iter()
            .filter(|chunk| {
                let (start, chunk_length) = self.chunk_range(*chunk);
                !(offset <= start && start + chunk_length as u64 <= end)
            })
            .collect()
    }

    /// The shadow's bytes of the chunks [`ActiveResync::partial_pending`] names: chunk ->
    /// bytes.
    pub(super) fn fills_for(
        &self,
        provider: Option<&dyn VolumeProvider>,
        offset: u64,
        length: u64,
    ) -> io::Result<BTreeMap<u64, Vec<u8>>> {
        let mut fills = BTreeMap::new();
        for chunk in self.partial_pending(offset, length) {
            let (start, chunk_length) = self.chunk_range(chunk);
            let mut bytes = vec![0u8; chunk_length];
            self.read_source(provider, start, &mut bytes)?;
            fills.insert(chunk, bytes);
        }
        Ok(fills)
    }

    /// Puts the shadow's bytes into `buffer` (read from the destination at `offset`) where
    /// its chunks are still pending. `provider` must be given for a data-path source.
    pub(super) fn overlay_pending(
        &self,
        provider: Option<&dyn VolumeProvider>,
        offset: u64,
        buffer: &mut [u8],
        pending: &[u64],
    ) -> io::Result<()> {
        let end = offset + buffer.len() as u64;
        for chunk in pending {
            let (start, chunk_length) = self.chunk_range(*chunk);
            let from = start.max(offset);
            let to = (start + chunk_length as u64).min(end);
            if from >= to {
                continue;
            }
            let slice = &mut buffer[(from - offset) as usize..(to - offset) as usize];
            self.read_source(provider, from, slice)?;
        }
        Ok(())
    }

    /// Answers an allocation query of the destination: pending chunks hold the shadow's
    /// bytes, so a range touching one is reported as data (always a correct answer).
    pub(super) fn allocation(&self, offset: u64, length: u64, live: Vec<Extent>) -> Vec<Extent> {
        if self.pending_in(offset, length).is_empty() {
            return live;
        }
        vec![Extent {
            offset,
            length,
            hole: false,
            zero: false,
        }]
    }
}

fn all_zero(extents: &[Extent], end: u64) -> bool {
    let covered = extents
        .iter()
        .map(|extent| extent.offset + extent.length)
        .max()
        .unwrap_or(0);
    !extents.is_empty() && covered >= end && extents.iter().all(|e| e.hole || e.zero)
}

/// The header of a resync state file.
struct StateHeader {
    shadow: ShadowId,
    destination: VolumeId,
    size: u64,
    chunk_size: u32,
    chunk_count: u64,
}

impl StateHeader {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_BYTES as usize);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(self.shadow.0.as_bytes());
        bytes.extend_from_slice(self.destination.0.as_bytes());
        bytes.extend_from_slice(&self.size.to_le_bytes());
        bytes.extend_from_slice(&self.chunk_size.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&self.chunk_count.to_le_bytes());
        debug_assert_eq!(bytes.len(), HEADER_FIELDS);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.resize(HEADER_BYTES as usize, 0);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_BYTES as usize || &bytes[..8] != MAGIC {
            return Err("it does not start with a resync state header".to_string());
        }
        let crc = u32::from_le_bytes(bytes[64..68].try_into().unwrap_or_default());
        if crc != crc32fast::hash(&bytes[..HEADER_FIELDS]) {
            return Err("its header checksum does not match".to_string());
        }
        let uuid = |range: std::ops::Range<usize>| {
            uuid::Uuid::from_slice(&bytes[range]).map_err(|error| error.to_string())
        };
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let header = StateHeader {
            shadow: ShadowId(uuid(8..24)?),
            destination: VolumeId(uuid(24..40)?),
            size: u64_at(40),
            chunk_size: u32::from_le_bytes(bytes[48..52].try_into().unwrap_or_default()),
            chunk_count: u64_at(56),
        };
        if header.chunk_size == 0
            || header.chunk_count != header.size.div_ceil(u64::from(header.chunk_size))
        {
            return Err("its chunk geometry is inconsistent".to_string());
        }
        Ok(header)
    }
}

fn state_path(root: &Path, destination: VolumeId) -> PathBuf {
    root.join(RESYNC_DIR)
        .join(format!("{}.resync", destination.0.hyphenated()))
}

impl Engine {
    /// Copies shadow copy `shadow` onto `destination` (its original volume when `None`):
    /// LUN resync. The destination is usable while it runs (see the module's comment);
    /// `progress` counts bytes and is called with no lock held. A crash resumes it when the
    /// store is opened again. When `progress` says the requester wants it stopped
    /// ([`Progress::cancelled`]), it stops between two chunks with [`ResyncError::Stopped`]:
    /// the destination reads as the shadow, and a resync of the same pair (or the next open)
    /// finishes the copy from where it stopped.
    pub fn resync(
        &self,
        shadow: ShadowId,
        destination: Option<VolumeId>,
        progress: &dyn Progress,
    ) -> Result<ResyncOutcome, ResyncError> {
        let (handle, active) = self.start_resync(shadow, destination)?;
        let outcome = self.run_resync(&handle, &active, progress);
        // Stopped on request between chunks, with the copy durable so far: the destination
        // reads right through the resync, which stays active (paused) for the next resync of
        // the same pair, or the next open, to finish. Any other failure stops it for good.
        if let Some(error) = outcome
            .as_ref()
            .err()
            .filter(|error| !matches!(error, ResyncError::Stopped { .. }))
        {
            self.stop_resync(
                &handle,
                format!(
                    "its resync from shadow copy {shadow} stopped ({error}); part of it holds the \
                     shadow's bytes and part its own, so it is not served until the store is \
                     opened again, which resumes the resync"
                ),
            );
        }
        outcome
    }

    /// A resync that cannot go on: its destination is made unavailable with `reason` (never
    /// served half-copied) and the resync is forgotten in memory; its state file stays for
    /// the next open. This also lets go of the shadow device the resync held, which holds
    /// the engine.
    fn stop_resync(&self, handle: &Arc<VolumeHandle>, reason: String) {
        let mut guard = write_lock(&handle.state);
        *guard = VolumeSlot::Unavailable(reason);
        *lock_mutex(&handle.resync) = None;
    }

    /// The resyncs in progress: `(shadow, destination)`.
    pub fn resyncs_in_progress(&self) -> Vec<(ShadowId, VolumeId)> {
        self.handles()
            .iter()
            .filter_map(|handle| {
                let active = lock_mutex(&handle.resync).clone()?;
                Some((active.shadow, active.destination))
            })
            .collect()
    }

    /// For `check`: resync state files no running resync owns (`check-store` opens the store
    /// read-only, so an interrupted resync is still there to report).
    pub(super) fn unfinished_resyncs(&self) -> Vec<String> {
        let running: Vec<PathBuf> = self
            .handles()
            .iter()
            .filter_map(|handle| Some(lock_mutex(&handle.resync).clone()?.state_path.clone()))
            .collect();
        let Ok(entries) = std::fs::read_dir(self.shared.layout.root.join(RESYNC_DIR)) else {
            return Vec::new();
        };
        let mut problems: Vec<String> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "resync")
            })
            .filter(|path| !running.contains(path))
            .map(|path| {
                format!(
                    "a resync is unfinished ({}); opening the store read-write finishes it",
                    path.display()
                )
            })
            .collect();
        problems.sort();
        problems
    }

    fn start_resync(
        &self,
        shadow: ShadowId,
        destination: Option<VolumeId>,
    ) -> Result<(Arc<VolumeHandle>, Arc<ActiveResync>), ResyncError> {
        let record = lock_mutex(&self.shared.catalog)
            .state()
            .shadows
            .get(&shadow)
            .cloned()
            .ok_or(ResyncError::NotFound { shadow })?;
        if !record.context.is_persistent() {
            return Err(ResyncError::UnsupportedContext {
                shadow,
                context: record.context.name(),
            });
        }
        if let Some(ShadowHealth::Suspect { reason }) = self.shadow(shadow).map(|info| info.health)
        {
            return Err(ResyncError::Suspect { shadow, reason });
        }
        let destination = destination.unwrap_or(record.volume);
        if self.shared.read_only {
            return Err(ResyncError::VolumeUnavailable {
                volume: destination,
                reason: "the store is open read-only (check-store changes nothing)".to_string(),
            });
        }
        let destination_read_only = lock_mutex(&self.shared.catalog)
            .state()
            .volumes
            .get(&destination)
            .is_some_and(|volume| volume.read_only);
        if destination_read_only {
            // A LUN broken off read-only (`break` without `writable`): the resync writes
            // through the engine's own write path, which does not pass the device's check.
            return Err(ResyncError::VolumeUnavailable {
                volume: destination,
                reason: "the volume is read-only (a shadow copy LUN broken off without \
                         `writable`)"
                    .to_string(),
            });
        }
        let handle = self
            .handle(destination)
            .ok_or(ResyncError::DestinationNotFound {
                volume: destination,
            })?;
        let in_data_path = record.volume == destination && data_path_of(&record).is_some();
        let source = if in_data_path {
            ResyncSource::DataPath {
                sequence: record.sequence,
            }
        } else {
            ResyncSource::Device(self.open_shadow(shadow).map_err(|error| {
                ResyncError::VolumeUnavailable {
                    volume: record.volume,
                    reason: error.to_string(),
                }
            })?)
        };
        let mut guard = write_lock(&handle.state);
        let cow = ready(&mut guard, destination)?;
        if let Some(running) = lock_mutex(&handle.resync).as_ref() {
            // A resync of the same pair that a requester stopped is taken up where it
            // stopped; a running one, or one from another shadow, is in the way.
            let ours = running.shadow == shadow
                && running
                    .copying
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
            if ours {
                let running = running.clone();
                // The copy loop reads through a device held open again.
                *lock_mutex(&running.source) = source;
                drop(guard);
                return Ok((handle.clone(), running));
            }
            return Err(ResyncError::InProgress {
                volume: destination,
                shadow: running.shadow,
            });
        }
        let io_error = |source| ResyncError::Io {
            volume: destination,
            source,
        };
        self.drain_checked(&mut **cow)
            .map_err(|failure| write_failure(failure, destination, shadow))?;
        if cow.size() < record.volume_size {
            return Err(ResyncError::TooSmall {
                volume: destination,
                shadow,
                size: cow.size(),
                needed: record.volume_size,
            });
        }
        let chunk_size = cow.chunk_size();
        let size = record.volume_size;
        let chunk_count = size.div_ceil(chunk_size);
        let mut map = ChunkMap::new(chunk_count);
        if in_data_path {
            // A shadow in the volume's own data path differs from it only where the volume
            // was written since: every other chunk already holds the shadow's bytes.
            let changed: std::collections::BTreeSet<u64> = cow
                .chunks_changed_since(record.sequence)
                .into_iter()
                .collect();
            for chunk in (0..chunk_count).filter(|chunk| !changed.contains(chunk)) {
                ChunkMap::set(&mut map.copied, &mut map.dirty, chunk);
            }
        }
        let header = StateHeader {
            shadow,
            destination,
            size,
            chunk_size: chunk_size as u32,
            chunk_count,
        };
        let path = state_path(&self.shared.layout.root, destination);
        let state_file = self
            .write_state_file(&path, &header, &map)
            .map_err(io_error)?;
        map.dirty = None;
        let active = Arc::new(ActiveResync {
            shadow,
            destination,
            chunk_size,
            size,
            chunk_count,
            source: Mutex::new(source),
            map: Mutex::new(map),
            state_file,
            state_path: path,
            copying: std::sync::atomic::AtomicBool::new(true),
        });
        *lock_mutex(&handle.resync) = Some(active.clone());
        drop(guard);
        Ok((handle, active))
    }

    /// Writes a new state file atomically: a temporary file, synced, renamed, the directory
    /// synced.
    fn write_state_file(
        &self,
        path: &Path,
        header: &StateHeader,
        map: &ChunkMap,
    ) -> io::Result<Arc<dyn DurableFile>> {
        let backend = &self.shared.backend;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.shared.layout.root.clone());
        backend.create_dir_all(&dir)?;
        let temporary = path.with_extension("resync.new");
        let file = backend.open_file(&temporary, true)?;
        file.set_len(0)?;
        let mut bytes = header.encode();
        bytes.extend_from_slice(&map.copied);
        bytes.extend_from_slice(&map.written);
        file.write_at(0, &bytes)?;
        file.sync_data()?;
        backend.rename(&temporary, path)?;
        backend.sync_dir(&dir)?;
        drop(file);
        backend.open_file(path, false)
    }

    /// The copy loop: every pending chunk, in order, from the shadow onto the destination.
    fn run_resync(
        &self,
        handle: &Arc<VolumeHandle>,
        active: &Arc<ActiveResync>,
        progress: &dyn Progress,
    ) -> Result<ResyncOutcome, ResyncError> {
        let destination = active.destination;
        let shadow = active.shadow;
        let io_error = |source| ResyncError::Io {
            volume: destination,
            source,
        };
        let protected = match active.source() {
            ResyncSource::DataPath { sequence } => Some(sequence),
            ResyncSource::Device(_) => None,
        };
        let checkpoint_chunks = (CHECKPOINT_BYTES.min(active.size / 16) / active.chunk_size).max(1);
        let (mut bytes_copied, mut bytes_punched) = (0u64, 0u64);
        let mut since_checkpoint = 0u64;
        let mut buffer = vec![0u8; active.chunk_size as usize];
        let mut current = vec![0u8; active.chunk_size as usize];
        progress.begin("resync", active.size);
        // Progress in steps of at least a chunk and about 1/1024 of the LUN, so a service
        // sends a bounded number of reports; always with no lock held.
        let report_every = (active.size / 1024).max(active.chunk_size);
        let unreported = std::cell::Cell::new(0u64);
        let report = |bytes: u64| {
            unreported.set(unreported.get() + bytes);
            if unreported.get() >= report_every {
                progress.advance(unreported.get());
                unreported.set(0);
            }
        };
        for chunk in 0..active.chunk_count {
            // Between chunks, with no lock held, is where a requested stop is safe: every
            // chunk is either copied (durable at the checkpoint below) or still read through
            // from the shadow.
            if progress.cancelled() {
                return Err(self.pause_resync(handle, active));
            }
            let (start, length) = active.chunk_range(chunk);
            if !active.is_pending(chunk) {
                report(length as u64);
                continue;
            }
            // A device source is read before the destination is locked (its own volume's
            // lock may be needed); the shadow never changes, so the bytes stay right.
            let mut hole = false;
            if !active.reads_through_destination() {
                hole = active
                    .source_is_hole(None, start, length as u64)
                    .map_err(io_error)?;
                if !hole {
                    active
                        .read_source(None, start, &mut buffer[..length])
                        .map_err(io_error)?;
                }
            }
            {
                let mut guard = write_lock(&handle.state);
                let cow = ready(&mut guard, destination)?;
                // Written since it was looked at: the write wins.
                if active.is_pending(chunk) {
                    if active.reads_through_destination() {
                        hole = active
                            .source_is_hole(Some(&**cow), start, length as u64)
                            .map_err(io_error)?;
                        if !hole {
                            active
                                .read_source(Some(&**cow), start, &mut buffer[..length])
                                .map_err(io_error)?;
                        }
                    }
                    if hole {
                        let live = cow
                            .allocation_live(start, length as u64)
                            .map_err(io_error)?;
                        if !all_zero(&live, start + length as u64) {
                            self.punch_locked(&mut **cow, start, length as u64)
                                .map_err(|failure| write_failure(failure, destination, shadow))?;
                            bytes_punched += length as u64;
                        }
                    } else {
                        // Onto the shadow's own volume a chunk written since the shadow may
                        // hold its bytes again (a resync run before): compare first, as
                        // rewriting it would cost a write and a preserved copy.
                        let same = active.reads_through_destination() && {
                            cow.read_live(start, &mut current[..length])
                                .map_err(io_error)?;
                            current[..length] == buffer[..length]
                        };
                        if !same {
                            self.write_locked(&mut **cow, start, &buffer[..length], protected)
                                .map_err(|failure| write_failure(failure, destination, shadow))?;
                            bytes_copied += length as u64;
                        }
                    }
                    active.mark_copied(chunk);
                    since_checkpoint += 1;
                    if since_checkpoint >= checkpoint_chunks {
                        // Data first, then the marks that describe it.
                        self.flush_locked(&mut **cow)
                            .map_err(|failure| write_failure(failure, destination, shadow))?;
                        active.persist().map_err(io_error)?;
                        since_checkpoint = 0;
                    }
                }
            }
            report(length as u64);
        }
        if unreported.get() > 0 {
            progress.advance(unreported.get());
        }
        let outcome = self.finish_resync(handle, active, bytes_copied, bytes_punched);
        progress.finish();
        outcome
    }

    /// A requested stop between two chunks: the destination's data is flushed, then the marks
    /// that describe it persisted (the module's invariant), and the resync stays active but
    /// no longer copying, so its destination keeps reading through to the shadow. A failure
    /// here is the failure it is, and the destination goes unavailable as for any failure.
    fn pause_resync(&self, handle: &Arc<VolumeHandle>, active: &Arc<ActiveResync>) -> ResyncError {
        let destination = active.destination;
        let shadow = active.shadow;
        let flushed = {
            let mut guard = write_lock(&handle.state);
            match ready(&mut guard, destination) {
                Ok(cow) => self
                    .flush_locked(&mut **cow)
                    .map_err(|failure| write_failure(failure, destination, shadow)),
                Err(error) => Err(error),
            }
        };
        if let Err(error) = flushed.and_then(|()| {
            active.persist().map_err(|source| ResyncError::Io {
                volume: destination,
                source,
            })
        }) {
            return error;
        }
        {
            let mut source = lock_mutex(&active.source);
            if let ResyncSource::Device(device) = &*source {
                *source = ResyncSource::Device(Arc::new(ReopeningShadow {
                    shared: Arc::downgrade(&self.shared),
                    shadow,
                    size: device.size(),
                }));
            }
        }
        active.copying.store(false, Ordering::SeqCst);
        let (copied, written) = active.counts();
        let done = ((copied + written) * active.chunk_size).min(active.size);
        ResyncError::Stopped {
            volume: destination,
            shadow,
            done,
            bytes: active.size,
        }
    }

    /// Makes the destination durable, then forgets the resync (state file removed, durably).
    fn finish_resync(
        &self,
        handle: &Arc<VolumeHandle>,
        active: &Arc<ActiveResync>,
        bytes_copied: u64,
        bytes_punched: u64,
    ) -> Result<ResyncOutcome, ResyncError> {
        let destination = active.destination;
        let io_error = |source| ResyncError::Io {
            volume: destination,
            source,
        };
        let mut guard = write_lock(&handle.state);
        if let VolumeSlot::Ready(cow) = &mut *guard {
            self.flush_locked(&mut **cow)
                .map_err(|failure| write_failure(failure, destination, active.shadow))?;
        }
        active.persist().map_err(io_error)?;
        self.shared
            .backend
            .remove_file(&active.state_path)
            .map_err(io_error)?;
        if let Some(dir) = active.state_path.parent() {
            self.shared.backend.sync_dir(dir).map_err(io_error)?;
        }
        *lock_mutex(&handle.resync) = None;
        let (_, written) = active.counts();
        Ok(ResyncOutcome {
            shadow: active.shadow,
            destination,
            bytes: active.size,
            bytes_copied,
            bytes_punched,
            chunks_written_during: written,
        })
    }

    /// At open: every resync a crash interrupted is taken up again (its destination reads
    /// right at once) and finished. One that cannot finish makes its destination
    /// unavailable, saying why.
    pub(super) fn resume_resyncs(&self) -> Result<(), (PathBuf, io::Error)> {
        let dir = self.shared.layout.root.join(RESYNC_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        paths.sort();
        for path in paths {
            let name = path.to_string_lossy();
            if name.ends_with(".resync.new") {
                // A state file never renamed into place: its resync never wrote anything.
                self.shared
                    .backend
                    .remove_file(&path)
                    .map_err(|error| (path.clone(), error))?;
                self.shared
                    .backend
                    .sync_dir(&dir)
                    .map_err(|error| (path.clone(), error))?;
                continue;
            }
            if !name.ends_with(".resync") {
                continue;
            }
            self.resume_one(&path)
                .map_err(|error| (path.clone(), error))?;
        }
        Ok(())
    }

    fn resume_one(&self, path: &Path) -> io::Result<()> {
        let file = self.shared.backend.open_file(path, false)?;
        let mut header_bytes = vec![0u8; HEADER_BYTES as usize];
        let read = file.read_at(0, &mut header_bytes)?;
        header_bytes.truncate(read);
        let header = StateHeader::decode(&header_bytes).map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the resync state {} is damaged: {why}", path.display()),
            )
        })?;
        let bitmap_bytes = header.chunk_count.div_ceil(8) as usize;
        let mut map = ChunkMap::new(header.chunk_count);
        file.read_exact_or_zero(HEADER_BYTES, &mut map.copied)?;
        file.read_exact_or_zero(HEADER_BYTES + bitmap_bytes as u64, &mut map.written)?;
        let Some(handle) = self.handle(header.destination) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the resync state {} names volume {}, which is not registered",
                    path.display(),
                    header.destination
                ),
            ));
        };
        let make_unavailable = |why: String| {
            self.stop_resync(
                &handle,
                format!(
                    "a resync from shadow copy {} onto it was interrupted and cannot finish \
                     ({why}); part of it holds the shadow's bytes and part its own: resync it \
                     again from another copy, or restore it ({} records the progress)",
                    header.shadow,
                    path.display()
                ),
            );
        };
        let record = lock_mutex(&self.shared.catalog)
            .state()
            .shadows
            .get(&header.shadow)
            .cloned();
        let Some(record) = record else {
            make_unavailable("the shadow copy no longer exists".to_string());
            return Ok(());
        };
        let in_data_path = record.volume == header.destination && data_path_of(&record).is_some();
        let source = if in_data_path {
            ResyncSource::DataPath {
                sequence: record.sequence,
            }
        } else {
            match self.open_shadow(header.shadow) {
                Ok(device) => ResyncSource::Device(device),
                Err(error) => {
                    make_unavailable(error.to_string());
                    return Ok(());
                }
            }
        };
        let chunk_size = match &*read_lock(&handle.state) {
            VolumeSlot::Ready(cow) => cow.chunk_size(),
            VolumeSlot::Unavailable(_) => return Ok(()),
        };
        if chunk_size != u64::from(header.chunk_size) {
            make_unavailable("its chunk size changed".to_string());
            return Ok(());
        }
        let active = Arc::new(ActiveResync {
            shadow: header.shadow,
            destination: header.destination,
            chunk_size,
            size: header.size,
            chunk_count: header.chunk_count,
            source: Mutex::new(source),
            map: Mutex::new(map),
            state_file: file,
            state_path: path.to_path_buf(),
            copying: std::sync::atomic::AtomicBool::new(true),
        });
        *lock_mutex(&handle.resync) = Some(active.clone());
        if let Err(error) = self.run_resync(&handle, &active, &NoProgress) {
            make_unavailable(error.to_string());
        }
        Ok(())
    }
}

/// The destination's provider, or why the destination cannot be written.
fn ready(
    slot: &mut VolumeSlot,
    destination: VolumeId,
) -> Result<&mut Box<dyn VolumeProvider>, ResyncError> {
    match slot {
        VolumeSlot::Ready(cow) => Ok(cow),
        VolumeSlot::Unavailable(reason) => Err(ResyncError::VolumeUnavailable {
            volume: destination,
            reason: reason.clone(),
        }),
    }
}

fn write_failure(failure: WriteFailure, volume: VolumeId, shadow: ShadowId) -> ResyncError {
    match failure {
        WriteFailure::Io(source) => ResyncError::Io { volume, source },
        WriteFailure::Catalog(error) => ResyncError::Catalog(error),
        WriteFailure::WouldDeleteProtected => ResyncError::InsufficientStorage { volume, shadow },
    }
}
