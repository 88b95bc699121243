//! Reads of the redirect-on-write volume: the live view and each shadow's, and their
//! allocation maps, one block-map lookup per chunk.

use std::io;

use crate::engine::device::{file_extents, Extent};
use crate::engine::provider::cow::tag_of;
use crate::engine::provider::index::{ChunkIndex, Tag, ZERO_SLOT};

use super::RowVolume;

impl RowVolume {
    /// Reads the view below `max_tag`: one block-map lookup per chunk.
    fn read_below(&self, max_tag: Tag, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        if buffer.is_empty() {
            return Ok(());
        }
        let end = offset + buffer.len() as u64;
        let first = offset / self.chunk_size;
        let last = (end - 1) / self.chunk_size;
        // (source offset or None for the image, from, to) in volume bytes.
        let mut run: Option<(Option<u64>, u64, u64)> = None;
        for chunk in first..=last {
            let chunk_start = chunk * self.chunk_size;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + self.chunk_size);
            let source = self
                .map
                .lookup_below(chunk, max_tag)
                .filter(|version| version.slot != ZERO_SLOT)
                .map(|version| u64::from(version.slot) * self.chunk_size + (from - chunk_start));
            if let Some((run_source, run_from, run_to)) = &mut run {
                let continues = match (*run_source, source) {
                    (None, None) => true,
                    (Some(start), Some(next)) => start + (*run_to - *run_from) == next,
                    _ => false,
                };
                if continues {
                    *run_to = to;
                    continue;
                }
                self.read_run(*run_source, *run_from, *run_to, offset, buffer)?;
            }
            run = Some((source, from, to));
        }
        if let Some((source, from, to)) = run {
            self.read_run(source, from, to, offset, buffer)?;
        }
        Ok(())
    }

    fn read_run(
        &self,
        source: Option<u64>,
        from: u64,
        to: u64,
        offset: u64,
        buffer: &mut [u8],
    ) -> io::Result<()> {
        let target = &mut buffer[(from - offset) as usize..(to - offset) as usize];
        match source {
            None => self.live.read_exact_or_zero(from, target),
            Some(start) => self.data.read_exact_or_zero(start, target),
        }
    }

    /// The allocation of the view below `max_tag`: redirected chunks are data, the rest is
    /// what the image holds there (its holes stay holes).
    fn extents_below(&self, max_tag: Tag, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
        let end = offset.saturating_add(length).min(self.size);
        let redirected = |at: u64| {
            self.map
                .lookup_below(at / self.chunk_size, max_tag)
                .is_some()
        };
        let mut extents = Vec::new();
        let mut position = offset;
        while position < end {
            let kind = redirected(position);
            let mut run_end = ((position / self.chunk_size + 1) * self.chunk_size).min(end);
            while run_end < end && redirected(run_end) == kind {
                run_end = ((run_end / self.chunk_size + 1) * self.chunk_size).min(end);
            }
            if kind {
                extents.push(Extent::data(position, run_end - position));
            } else {
                extents.extend(file_extents(
                    position,
                    run_end - position,
                    |at| self.live.next_data(at),
                    |at| self.live.next_hole(at),
                )?);
            }
            position = run_end;
        }
        Ok(extents)
    }

    pub fn allocation_live(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
        self.extents_below(Tag::MAX, offset, length)
    }

    pub fn allocation_shadow(
        &self,
        sequence: u64,
        offset: u64,
        length: u64,
    ) -> io::Result<Vec<Extent>> {
        self.extents_below(tag_of(sequence), offset, length)
    }

    /// Reads the live volume: each chunk's newest version, else the image.
    pub fn read_live(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.read_below(Tag::MAX, offset, buffer)
    }

    /// Reads shadow `sequence`: the newest version tagged < `sequence`, else the image.
    pub fn read_shadow(&self, sequence: u64, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.read_below(tag_of(sequence), offset, buffer)
    }

    /// Chunks written since shadow `sequence` was made (where it and the live volume may
    /// differ).
    pub fn chunks_changed_since(&self, sequence: u64) -> Vec<ChunkIndex> {
        self.map.chunks_changed_since(tag_of(sequence))
    }
}
