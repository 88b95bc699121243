//! The catalog: volumes, the drive map, shadow copies and per-volume settings.
//!
//! It is a base snapshot (`catalog/base.json`) plus an append-only journal
//! (`catalog/journal.log`) of transactions. A transaction is one journal record, made durable
//! by one `sync_data`; it is the commit point, so a crash leaves the state before or after it,
//! never a mix. When the journal outgrows the base, the state is written to a new base (write,
//! sync, rename, sync directory) and the journal is emptied; records carry the base generation
//! they apply to, so records already folded into a newer base are skipped after a crash.
//! Committing is O(size of the change), not O(size of the catalog), amortized.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::ids::{ProviderId, ShadowId, ShadowSetId, VolumeId};
use crate::engine::model::ArrayAttachment;
use crate::engine::model::{DriveTarget, Exposure, RequesterId};
use crate::engine::store::{DurableBackend, DurableFile, FileFingerprint};
use crate::engine::vss::{Attributes, Context};

mod records;

/// Format 2 adds `state_crc32`; format 1 bases (no checksum) are refused with a clear message.
const BASE_FORMAT_VERSION: u32 = 2;
const JOURNAL_MAGIC: u32 = 0x4453_4a31; // "DSJ1"
const RECORD_HEADER_BYTES: usize = 20;
/// The journal is folded into a new base once it is larger than this and than the base.
const MIN_COMPACTION_BYTES: u64 = 256 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub id: VolumeId,
    pub path: PathBuf,
    pub size: u64,
    pub chunk_size: u32,
    pub max_diff_area_bytes: Option<u64>,
    /// The image as diskshadow last left it.
    pub fingerprint: Option<FileFingerprint>,
    /// Set (durably) before diskshadow first modifies the image after recording a fingerprint,
    /// cleared when it records the next one. A crash while set means the fingerprint is stale
    /// because of diskshadow's own writes, so it is re-recorded rather than reported.
    pub writing: bool,
    /// The provider chosen for the volume at registration (`volume register --provider`):
    /// what `add volume` without `provider {ID}` uses. `None`: the system provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderId>,
    /// The length of the diff area's `index.log` when it was last known durable: the log can
    /// only grow from there (until the next recording), so a shorter log or a bad record
    /// below it is damage, not a torn append. `None` while a rewrite of the log is under way.
    #[serde(default)]
    pub index_log_bytes: Option<u64>,
    /// A shadow LUN broken off without `writable` (`break`): readable, never written.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowRecord {
    pub id: ShadowId,
    pub set_id: ShadowSetId,
    pub original_count: u32,
    pub volume: VolumeId,
    /// The volume's size at the point in time; what the shadow device serves.
    pub volume_size: u64,
    pub created_at: DateTime<Utc>,
    pub sequence: u64,
    pub device_number: u64,
    pub originating_machine: String,
    pub service_machine: String,
    #[serde(default, with = "records::via_option")]
    pub exposure: Option<Exposure>,
    pub provider_id: ProviderId,
    /// Context, extra and provider bits; exposure bits are derived from `exposure`.
    #[serde(with = "records::via")]
    pub attributes: Attributes,
    #[serde(with = "records::via")]
    pub context: Context,
    #[serde(default, with = "records::via_option")]
    pub owner: Option<RequesterId>,
    pub suspect: Option<String>,
    /// The set's writers have not finished their part after the commit (thaw, post-snapshot):
    /// the shadow is not yet kept. A shadow still in creation when the store is opened belongs
    /// to a creation that a crash interrupted, and is deleted. Absent means `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub in_creation: bool,
    /// A full copy (or clone) made after the commit: until it is complete, the shadow is
    /// kept as a point in time in its volume's data path at `sequence`, which serves its
    /// reads and which the copy is made from. Cleared (`FullCopyComplete`) once the copy is
    /// synced; the point in time is released after that. Absent means `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub copy_pending: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertRecord {
    pub volume: VolumeId,
    pub shadow: ShadowId,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CatalogState {
    pub volumes: BTreeMap<VolumeId, VolumeRecord>,
    #[serde(with = "records::via_map")]
    pub drives: BTreeMap<char, DriveTarget>,
    pub shadows: BTreeMap<ShadowId, ShadowRecord>,
    /// The next shadow sequence number; sequences start at 1 and never repeat.
    pub next_sequence: u64,
    /// N of the next `HarddiskVolumeShadowCopyN`; starts at 1.
    pub next_device_number: u64,
    /// A revert that must be finished after a restart.
    pub reverts_in_progress: Vec<RevertRecord>,
    /// The storage arrays this store (host) is attached to, by the name it gives them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arrays: BTreeMap<String, ArrayAttachment>,
}

/// One change; a transaction is a list of them, applied together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogChange {
    RegisterVolume(VolumeRecord),
    MapDrive {
        letter: char,
        #[serde(with = "records::via")]
        target: DriveTarget,
    },
    UnmapDrive {
        letter: char,
    },
    AddShadow(ShadowRecord),
    DeleteShadow(ShadowId),
    SetExposure {
        shadow: ShadowId,
        #[serde(default, with = "records::via_option")]
        exposure: Option<Exposure>,
    },
    SetMaxDiffArea {
        volume: VolumeId,
        max_bytes: Option<u64>,
    },
    SetVolumeState {
        volume: VolumeId,
        fingerprint: Option<FileFingerprint>,
        writing: bool,
        size: u64,
    },
    /// Every current shadow of the volume becomes suspect.
    MarkSuspect {
        volume: VolumeId,
        reason: String,
    },
    RevertStarted(RevertRecord),
    RevertFinished {
        volume: VolumeId,
    },
    /// The set's creation is complete: its shadows are no longer in creation.
    FinishCreation {
        set_id: ShadowSetId,
    },
    /// The full copy of a shadow made after the commit is synced: the shadow no longer
    /// needs its point in time in the data path.
    FullCopyComplete {
        shadow: ShadowId,
    },
    /// The durable length of the volume's index log (see `VolumeRecord::index_log_bytes`).
    RecordIndexLog {
        volume: VolumeId,
        bytes: Option<u64>,
    },
    AttachArray {
        name: String,
        attachment: ArrayAttachment,
    },
    DetachArray {
        name: String,
    },
}

impl CatalogState {
    fn new() -> Self {
        Self {
            next_sequence: 1,
            next_device_number: 1,
            ..Self::default()
        }
    }

    pub fn apply(&mut self, change: &CatalogChange) {
        match change {
            CatalogChange::RegisterVolume(record) => {
                self.volumes.insert(record.id, record.clone());
            }
            CatalogChange::AttachArray { name, attachment } => {
                self.arrays.insert(name.clone(), attachment.clone());
            }
            CatalogChange::DetachArray { name } => {
                self.arrays.remove(name);
            }
            CatalogChange::MapDrive { letter, target } => {
                self.drives.insert(*letter, target.clone());
            }
            CatalogChange::UnmapDrive { letter } => {
                self.drives.remove(letter);
            }
            CatalogChange::AddShadow(record) => {
                self.next_sequence = self.next_sequence.max(record.sequence + 1);
                self.next_device_number = self.next_device_number.max(record.device_number + 1);
                self.shadows.insert(record.id, record.clone());
            }
            CatalogChange::DeleteShadow(id) => {
                self.shadows.remove(id);
            }
            CatalogChange::SetExposure { shadow, exposure } => {
                if let Some(record) = self.shadows.get_mut(shadow) {
                    record.exposure = exposure.clone();
                }
            }
            CatalogChange::SetMaxDiffArea { volume, max_bytes } => {
                if let Some(record) = self.volumes.get_mut(volume) {
                    record.max_diff_area_bytes = *max_bytes;
                }
            }
            CatalogChange::SetVolumeState {
                volume,
                fingerprint,
                writing,
                size,
            } => {
                if let Some(record) = self.volumes.get_mut(volume) {
                    record.fingerprint = *fingerprint;
                    record.writing = *writing;
                    record.size = *size;
                }
            }
            CatalogChange::MarkSuspect { volume, reason } => {
                // Full copies (PLEX) do not depend on the volume's later content, unless their
                // copy is still to be made from the volume's data path.
                for record in self.shadows.values_mut().filter(|record| {
                    record.volume == *volume
                        && (!record.attributes.contains(Attributes::PLEX) || record.copy_pending)
                }) {
                    if record.suspect.is_none() {
                        record.suspect = Some(reason.clone());
                    }
                }
            }
            CatalogChange::RevertStarted(revert) => {
                self.reverts_in_progress
                    .retain(|existing| existing.volume != revert.volume);
                self.reverts_in_progress.push(revert.clone());
            }
            CatalogChange::RevertFinished { volume } => {
                self.reverts_in_progress
                    .retain(|existing| existing.volume != *volume);
            }
            CatalogChange::FinishCreation { set_id } => {
                for record in self.shadows.values_mut() {
                    if record.set_id == *set_id {
                        record.in_creation = false;
                    }
                }
            }
            CatalogChange::FullCopyComplete { shadow } => {
                if let Some(record) = self.shadows.get_mut(shadow) {
                    record.copy_pending = false;
                }
            }
            CatalogChange::RecordIndexLog { volume, bytes } => {
                if let Some(record) = self.volumes.get_mut(volume) {
                    record.index_log_bytes = *bytes;
                }
            }
        }
    }

    /// Shadows of one volume, oldest first.
    pub fn shadows_of(&self, volume: VolumeId) -> Vec<&ShadowRecord> {
        let mut shadows: Vec<&ShadowRecord> = self
            .shadows
            .values()
            .filter(|record| record.volume == volume)
            .collect();
        shadows.sort_by_key(|record| record.sequence);
        shadows
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot {action} the catalog file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the catalog file {} is damaged ({detail})",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("the store is open read-only (check-store changes nothing)")]
    ReadOnly,
}

/// How `base.json` is written: the state's CRC-32 (over its compact JSON) guards it.
#[derive(Serialize)]
struct BaseFileOut<'state> {
    format_version: u32,
    generation: u64,
    state_crc32: u32,
    state: &'state CatalogState,
}

#[derive(Deserialize)]
struct BaseFileHeader {
    format_version: u32,
}

#[derive(Deserialize)]
struct BaseFile {
    generation: u64,
    state_crc32: u32,
    state: CatalogState,
}

/// CRC-32 of the generation (u64 LE) followed by the state's compact JSON. Serialization is
/// deterministic (ordered maps), so a base that parses to what it was written from has the
/// same checksum, and one that parses to anything else does not.
fn state_checksum(generation: u64, state: &CatalogState) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(&serde_json::to_vec(state).unwrap_or_default());
    hasher.finalize()
}

/// The open catalog. Not internally synchronized: the engine holds it behind a mutex.
pub struct Catalog {
    backend: Arc<dyn DurableBackend>,
    dir: PathBuf,
    state: CatalogState,
    generation: u64,
    journal: Arc<dyn DurableFile>,
    journal_length: u64,
    base_length: u64,
    read_only: bool,
}

impl Catalog {
    fn base_path(dir: &Path) -> PathBuf {
        dir.join("base.json")
    }

    fn journal_path(dir: &Path) -> PathBuf {
        dir.join("journal.log")
    }

    fn io_error<'path>(
        action: &'static str,
        path: &'path Path,
    ) -> impl FnOnce(io::Error) -> CatalogError + 'path {
        move |source| CatalogError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Opens (creating if missing) the catalog in `dir`, replaying the journal and cutting off
    /// a torn last record.
    pub fn open(backend: Arc<dyn DurableBackend>, dir: &Path) -> Result<Catalog, CatalogError> {
        Self::open_with(backend, dir, false)
    }

    /// Opens the catalog without changing anything on disk (`check-store`): nothing is
    /// created or cut, and commits are refused.
    pub fn open_read_only(
        backend: Arc<dyn DurableBackend>,
        dir: &Path,
    ) -> Result<Catalog, CatalogError> {
        Self::open_with(backend, dir, true)
    }

    fn open_with(
        backend: Arc<dyn DurableBackend>,
        dir: &Path,
        read_only: bool,
    ) -> Result<Catalog, CatalogError> {
        if !read_only {
            backend
                .create_dir_all(dir)
                .map_err(Self::io_error("create the directory of", dir))?;
        }
        let base_path = Self::base_path(dir);
        let base_exists = base_path.exists();
        let (mut state, generation, base_length) = if base_exists {
            let file = backend
                .open_file_read_only(&base_path)
                .map_err(Self::io_error("open", &base_path))?;
            let length = file.size().map_err(Self::io_error("read", &base_path))?;
            let mut bytes = vec![0u8; length as usize];
            file.read_exact_or_zero(0, &mut bytes)
                .map_err(Self::io_error("read", &base_path))?;
            let (state, generation) = Self::decode_base(&base_path, &bytes)?;
            (state, generation, length)
        } else {
            (CatalogState::new(), 0, 0)
        };

        let journal_path = Self::journal_path(dir);
        let journal_existed = journal_path.exists();
        let journal = if read_only {
            if journal_existed {
                Some(
                    backend
                        .open_file_read_only(&journal_path)
                        .map_err(Self::io_error("open", &journal_path))?,
                )
            } else {
                None
            }
        } else {
            let journal = backend
                .open_file(&journal_path, true)
                .map_err(Self::io_error("open", &journal_path))?;
            if !journal_existed {
                backend
                    .sync_dir(dir)
                    .map_err(Self::io_error("create", &journal_path))?;
            }
            Some(journal)
        };
        let mut bytes = Vec::new();
        if let Some(journal) = &journal {
            let journal_bytes_total = journal
                .size()
                .map_err(Self::io_error("read", &journal_path))?;
            bytes = vec![0u8; journal_bytes_total as usize];
            journal
                .read_exact_or_zero(0, &mut bytes)
                .map_err(Self::io_error("read", &journal_path))?;
        }
        let corrupt = |detail: String| CatalogError::Corrupt {
            path: journal_path.clone(),
            detail,
        };
        let mut position = 0usize;
        while let Some((record_generation, changes, record_length)) =
            Self::decode_record(&bytes[position..])
        {
            if record_generation == generation {
                for change in &changes {
                    state.apply(change);
                }
            } else if !base_exists || record_generation > generation {
                // Records of a base that is not there: the base was lost or replaced.
                return Err(CatalogError::Corrupt {
                    path: base_path.clone(),
                    detail: format!(
                        "the journal's record at byte {position} applies to base generation \
                         {record_generation}, but the base {}",
                        if base_exists {
                            format!("is generation {generation}")
                        } else {
                            "is missing".to_string()
                        }
                    ),
                });
            }
            position += record_length;
        }
        if position < bytes.len() {
            // A bad record with a valid one after it is damage; at the very end it is an append
            // torn by a crash, never committed.
            if let Some(later) = (position + 1..bytes.len()).find(|&offset| {
                bytes[offset..].starts_with(&JOURNAL_MAGIC.to_le_bytes())
                    && Self::decode_record(&bytes[offset..]).is_some()
            }) {
                return Err(corrupt(format!(
                    "the record at byte {position} is damaged, but a valid record follows at byte \
                     {later}: the transactions from byte {position} on cannot be trusted"
                )));
            }
            if !read_only {
                if let Some(journal) = &journal {
                    journal
                        .set_len(position as u64)
                        .map_err(Self::io_error("truncate", &journal_path))?;
                    journal
                        .sync_data()
                        .map_err(Self::io_error("sync", &journal_path))?;
                }
            }
        }
        let journal: Arc<dyn DurableFile> = match journal {
            Some(journal) => journal,
            None => Arc::new(ClosedJournal),
        };
        Ok(Catalog {
            backend,
            dir: dir.to_path_buf(),
            state,
            generation,
            journal,
            journal_length: position as u64,
            base_length,
            read_only,
        })
    }

    /// The state and generation of a base file's bytes.
    fn decode_base(path: &Path, bytes: &[u8]) -> Result<(CatalogState, u64), CatalogError> {
        let corrupt = |detail: String| CatalogError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let header: BaseFileHeader = serde_json::from_slice(bytes)
            .map_err(|error| corrupt(format!("it is not a catalog base: {error}")))?;
        if header.format_version == 1 {
            return Err(corrupt(
                "it was written by an older diskshadow (catalog format 1, without a checksum), \
                 which this version cannot read; use the older version to delete its shadow \
                 copies, or move the store aside"
                    .to_string(),
            ));
        }
        if header.format_version != BASE_FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {} is not supported (this diskshadow reads version \
                 {BASE_FORMAT_VERSION})",
                header.format_version
            )));
        }
        let base: BaseFile = serde_json::from_slice(bytes)
            .map_err(|error| corrupt(format!("it is not a catalog base: {error}")))?;
        let actual = state_checksum(base.generation, &base.state);
        if actual != base.state_crc32 {
            return Err(corrupt(format!(
                "the state's checksum is {actual:08x}, but the file says {:08x}",
                base.state_crc32
            )));
        }
        Ok((base.state, base.generation))
    }

    /// `(generation, changes, bytes used)` of the record at the start of `bytes`, or `None`
    /// when it is missing, torn or damaged.
    fn decode_record(bytes: &[u8]) -> Option<(u64, Vec<CatalogChange>, usize)> {
        let header = bytes.get(..RECORD_HEADER_BYTES)?;
        let magic = u32::from_le_bytes(header[0..4].try_into().ok()?);
        let generation = u64::from_le_bytes(header[4..12].try_into().ok()?);
        let length = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
        let checksum = u32::from_le_bytes(header[16..20].try_into().ok()?);
        if magic != JOURNAL_MAGIC {
            return None;
        }
        let payload = bytes.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES.checked_add(length)?)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[4..16]);
        hasher.update(payload);
        if hasher.finalize() != checksum {
            return None;
        }
        let changes: Vec<CatalogChange> = serde_json::from_slice(payload).ok()?;
        Some((generation, changes, RECORD_HEADER_BYTES + length))
    }

    fn encode_record(generation: u64, changes: &[CatalogChange]) -> Vec<u8> {
        let payload = serde_json::to_vec(changes).unwrap_or_default();
        let mut header = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
        header.extend_from_slice(&JOURNAL_MAGIC.to_le_bytes());
        header.extend_from_slice(&generation.to_le_bytes());
        header.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[4..16]);
        hasher.update(&payload);
        header.extend_from_slice(&hasher.finalize().to_le_bytes());
        header.extend_from_slice(&payload);
        header
    }

    pub fn state(&self) -> &CatalogState {
        &self.state
    }

    /// Commits `changes` as one transaction: durable when this returns `Ok`, and applied to the
    /// in-memory state only then.
    pub fn commit(&mut self, changes: Vec<CatalogChange>) -> Result<(), CatalogError> {
        if changes.is_empty() {
            return Ok(());
        }
        if self.read_only {
            return Err(CatalogError::ReadOnly);
        }
        let journal_path = Self::journal_path(&self.dir);
        let record = Self::encode_record(self.generation, &changes);
        self.journal
            .write_at(self.journal_length, &record)
            .map_err(Self::io_error("append to", &journal_path))?;
        self.journal
            .sync_data()
            .map_err(Self::io_error("sync", &journal_path))?;
        self.journal_length += record.len() as u64;
        for change in &changes {
            self.state.apply(change);
        }
        if self.journal_length > MIN_COMPACTION_BYTES.max(self.base_length) {
            self.compact()?;
        }
        Ok(())
    }

    /// Folds the journal into a new base.
    pub fn compact(&mut self) -> Result<(), CatalogError> {
        if self.read_only {
            return Err(CatalogError::ReadOnly);
        }
        let base_path = Self::base_path(&self.dir);
        let new_path = self.dir.join("base.json.new");
        let journal_path = Self::journal_path(&self.dir);
        let base = BaseFileOut {
            format_version: BASE_FORMAT_VERSION,
            generation: self.generation + 1,
            state_crc32: state_checksum(self.generation + 1, &self.state),
            state: &self.state,
        };
        let bytes = serde_json::to_vec(&base).map_err(|error| CatalogError::Corrupt {
            path: new_path.clone(),
            detail: error.to_string(),
        })?;
        let file = self
            .backend
            .open_file(&new_path, true)
            .map_err(Self::io_error("create", &new_path))?;
        file.set_len(0)
            .map_err(Self::io_error("truncate", &new_path))?;
        file.write_at(0, &bytes)
            .map_err(Self::io_error("write", &new_path))?;
        file.sync_data()
            .map_err(Self::io_error("sync", &new_path))?;
        self.backend
            .rename(&new_path, &base_path)
            .map_err(Self::io_error("replace", &base_path))?;
        self.backend
            .sync_dir(&self.dir)
            .map_err(Self::io_error("sync the directory of", &base_path))?;
        // From here the new base is the truth; old journal records carry the old generation.
        self.generation += 1;
        self.base_length = bytes.len() as u64;
        self.journal
            .set_len(0)
            .map_err(Self::io_error("truncate", &journal_path))?;
        self.journal
            .sync_data()
            .map_err(Self::io_error("sync", &journal_path))?;
        self.journal_length = 0;
        Ok(())
    }
}

/// The journal of a read-only catalog that has none: empty, refusing writes.
struct ClosedJournal;

impl DurableFile for ClosedJournal {
    fn read_at(&self, _offset: u64, _buffer: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the catalog is open read-only",
        ))
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn set_len(&self, _length: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the catalog is open read-only",
        ))
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

#[cfg(test)]
mod tests;
