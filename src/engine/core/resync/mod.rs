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
use std::sync::{Arc, Mutex};

use super::{lock_mutex, Engine};
use crate::engine::catalog::CatalogError;
use crate::engine::device::{BlockDevice, Extent};
use crate::engine::ids::{ShadowId, VolumeId};
use crate::engine::provider::VolumeProvider;
use crate::engine::store::DurableFile;
use crate::engine::vss::VssCode;

mod copy;
mod resume;

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
    #[error("shadow copy {shadow} was not found")]
    NotFound { shadow: ShadowId },
    #[error(
        "shadow copy {shadow} was made in the {context} context; only persistent shadow copies \
         can be resynchronized"
    )]
    UnsupportedContext {
        shadow: ShadowId,
        context: &'static str,
    },
    #[error("shadow copy {shadow} is suspect ({reason}); it cannot be resynchronized")]
    Suspect { shadow: ShadowId, reason: String },
    #[error("volume {volume} is not registered")]
    DestinationNotFound { volume: VolumeId },
    #[error("volume {volume} cannot be written: {reason}")]
    VolumeUnavailable { volume: VolumeId, reason: String },
    #[error(
        "volume {volume} holds {size} bytes, less than the {needed} bytes of shadow copy \
         {shadow}"
    )]
    TooSmall {
        volume: VolumeId,
        shadow: ShadowId,
        size: u64,
        needed: u64,
    },
    #[error("volume {volume} is already being resynchronized from shadow copy {shadow}")]
    InProgress { volume: VolumeId, shadow: ShadowId },
    #[error(
        "the diff area of volume {volume} is too small to resynchronize while keeping shadow \
         copy {shadow}"
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
         until the copy ends (the service finishes it when it next starts)"
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
