//! Reads: of the live volume (through the write-back buffer) and of a shadow (each chunk from
//! its preserved version or the live image), with slot checksums checked once; and the
//! allocation maps of both.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum ReadSource {
    Live,
    Zero,
    /// Byte offset in the diff-area data file.
    Diff(u64),
}

/// A contiguous piece of a shadow read, `[from, to)` in volume bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadRun {
    pub(super) source: ReadSource,
    pub(super) from: u64,
    pub(super) to: u64,
}

impl CowVolume {
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

    pub(super) fn read_run(&self, run: &ReadRun, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
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
    pub(super) fn verify_run(&self, start: u64, read: &[u8]) -> io::Result<()> {
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

    pub(super) fn live_image_extents(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
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
}
