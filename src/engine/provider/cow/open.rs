//! Opening a diff area: replaying the index log, cutting what a crash tore, reclaiming versions
//! no shadow needs and finishing an interrupted rewrite; and `check`, which looks for what an
//! open would refuse or repair, changing nothing.

use super::*;

/// A file that does not exist, opened read-only: empty, refusing writes.
pub(super) struct AbsentFile;

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
        let write_stamp = super::super::stamp::WriteStamp::open(&backend, diff_dir, read_only)?;
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
            live_write_back: Default::default(),
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
