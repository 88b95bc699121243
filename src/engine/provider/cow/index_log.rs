//! The index log (`index.log`): one 32-byte record per preserved version or freed slot,
//! appended and synced with the data it names; opening the diff area replays it (see
//! `FORMAT.md`). Here are the record format and the volume's writes to the log.

use super::*;

pub(in crate::engine::provider) const RECORD_BYTES: usize = 32;

/// Index format 2: records carry the CRC-32 of their chunk slot.
pub(super) const RECORD_MAGIC: u32 = 0x4453_4932; // "DSI2"

/// Index format 1 (no chunk checksums), refused with a clear message.
pub(super) const OLD_RECORD_MAGIC: u32 = 0x4453_4958; // "DSIX"

pub(in crate::engine::provider) const KIND_PRESERVE: u8 = 1;

pub(in crate::engine::provider) const KIND_FREE: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::engine::provider) struct IndexRecord {
    pub(in crate::engine::provider) kind: u8,
    pub(in crate::engine::provider) tag: Tag,
    pub(in crate::engine::provider) chunk: ChunkIndex,
    pub(in crate::engine::provider) slot: Slot,
    /// CRC-32 of the slot's `chunk_size` bytes (preserve records of real slots), else 0.
    pub(in crate::engine::provider) slot_checksum: u32,
}

/// Why a 32-byte index record cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::engine::provider) enum RecordFault {
    /// Bad magic, checksum or kind: torn or damaged.
    Invalid,
    /// A record of index format 1.
    OldFormat,
}

impl IndexRecord {
    pub(in crate::engine::provider) fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut bytes = [0u8; RECORD_BYTES];
        bytes[0] = self.kind;
        bytes[4..8].copy_from_slice(&self.tag.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.chunk.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.slot.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.slot_checksum.to_le_bytes());
        let checksum = crc32fast::hash(&bytes[0..24]);
        bytes[24..28].copy_from_slice(&checksum.to_le_bytes());
        bytes[28..32].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        bytes
    }

    pub(in crate::engine::provider) fn decode(bytes: &[u8]) -> Result<IndexRecord, RecordFault> {
        let field = |from: usize| -> Result<[u8; 4], RecordFault> {
            bytes
                .get(from..from + 4)
                .and_then(|piece| piece.try_into().ok())
                .ok_or(RecordFault::Invalid)
        };
        if bytes.len() != RECORD_BYTES {
            return Err(RecordFault::Invalid);
        }
        let magic = u32::from_le_bytes(field(28)?);
        let checksum = u32::from_le_bytes(field(24)?);
        let checksum_matches = checksum == crc32fast::hash(&bytes[0..24]);
        if magic == OLD_RECORD_MAGIC && checksum_matches {
            return Err(RecordFault::OldFormat);
        }
        if magic != RECORD_MAGIC || !checksum_matches {
            return Err(RecordFault::Invalid);
        }
        let kind = bytes[0];
        if kind != KIND_PRESERVE && kind != KIND_FREE {
            return Err(RecordFault::Invalid);
        }
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(&bytes[8..16]);
        Ok(IndexRecord {
            kind,
            tag: Tag::from_le_bytes(field(4)?),
            chunk: ChunkIndex::from_le_bytes(chunk),
            slot: Slot::from_le_bytes(field(16)?),
            slot_checksum: u32::from_le_bytes(field(20)?),
        })
    }
}

impl CowVolume {
    pub(super) fn index_path(diff_dir: &Path) -> PathBuf {
        diff_dir.join("index.log")
    }

    /// Whether opening found versions to drop or a bloated log: the caller (which must first
    /// make the catalog forget the log's recorded length) then calls `rewrite_index_log`.
    pub fn index_rewrite_wanted(&self) -> bool {
        self.index_rewrite_wanted && !self.read_only
    }

    /// The length of `index.log` that is durable (every record written was synced).
    pub fn durable_index_bytes(&self) -> Option<u64> {
        (!self.diff_unsynced && self.record_buffer.is_empty()).then_some(self.index_log_length)
    }

    /// Replaces the index log by one holding only the current versions (write, sync, rename,
    /// sync directory: a crash leaves the old or the new log, both correct).
    pub fn rewrite_index_log(&mut self) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        self.index_rewrite_wanted = false;
        let index_path = Self::index_path(&self.diff_dir);
        let new_path = self.diff_dir.join("index.log.new");
        let mut bytes = Vec::with_capacity(self.map.len() * RECORD_BYTES);
        for (chunk, tag, slot) in self.map.entries() {
            bytes.extend_from_slice(
                &IndexRecord {
                    kind: KIND_PRESERVE,
                    tag,
                    chunk,
                    slot,
                    slot_checksum: self.slot_checksum(slot),
                }
                .encode(),
            );
        }
        let file = self.backend.open_file(&new_path, true)?;
        file.set_len(0)?;
        file.write_at(0, &bytes)?;
        file.sync_data()?;
        self.backend.rename(&new_path, &index_path)?;
        self.backend.sync_dir(&self.diff_dir)?;
        self.index_log = file;
        self.index_log_length = bytes.len() as u64;
        self.cut_data_past_high_water()
    }

    /// Queues an index record; records reach the log in one write just before the sync that
    /// makes them durable (`sync_diff`), so a batch costs one system call.
    pub(super) fn append_record(&mut self, record: IndexRecord) -> io::Result<()> {
        self.record_buffer.extend_from_slice(&record.encode());
        self.diff_unsynced = true;
        Ok(())
    }

    pub(super) fn write_records(&mut self) -> io::Result<()> {
        if !self.record_buffer.is_empty() {
            self.index_log
                .write_at(self.index_log_length, &self.record_buffer)?;
            self.index_log_length += self.record_buffer.len() as u64;
            self.record_buffer.clear();
        }
        Ok(())
    }
}
