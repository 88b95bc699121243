//! Deleting a redirect-on-write shadow, and the fold: the versions no shadow needs any more
//! copied back into the image a batch at a time (the invariants are in `row/mod.rs`).

use std::io;

use crate::engine::provider::cow::{tag_of, KIND_FREE};
use crate::engine::provider::index::{ChunkIndex, Tag};

use super::RowVolume;

impl RowVolume {
    /// Forgets shadow `sequence` and frees the versions only it read. O(versions tagged
    /// between the neighbouring shadows). Deleting the oldest shadow leaves the versions the
    /// new oldest reads to be folded back into the image ([`RowVolume::fold_batch`]): until
    /// then they are read where they are. The caller has synced (the engine drains first).
    pub fn delete_shadow(&mut self, sequence: u64) -> io::Result<u64> {
        if !self.shadows.remove(&sequence) {
            return Ok(0);
        }
        let previous = self
            .shadows
            .range(..sequence)
            .next_back()
            .copied()
            .unwrap_or(0);
        let next = self
            .shadows
            .range(sequence + 1..)
            .next()
            .copied()
            .unwrap_or(u64::MAX);
        let mut freed_count = 0;
        for tag in self.map.tags_in(tag_of(previous), sequence) {
            // A version tagged `tag` serves the shadows in (tag, next tag of its chunk]; with
            // `sequence` gone the first one left there could be `next`.
            let freed = self.map.free_where(tag, |map, chunk| {
                map.lookup(chunk, tag + 1)
                    .is_some_and(|newer| u64::from(newer.tag) < next)
            });
            for (chunk, slot) in freed {
                self.append_record(KIND_FREE, tag, chunk, slot);
                self.released_slots.push(slot);
                self.data_slots_used -= 1;
                freed_count += 1;
            }
        }
        Ok(freed_count)
    }

    /// True when versions older than the oldest shadow (all versions, without shadows) wait to
    /// be folded into the image.
    pub fn needs_fold(&self) -> bool {
        let below = self.oldest_shadow().unwrap_or(u64::MAX);
        !self.map.tags_in(0, below).is_empty()
    }

    /// Up to `limit` of the chunks waiting to be folded (those with a version tagged < the
    /// oldest shadow, any version without shadows), distinct, oldest tag first: O(`limit` +
    /// tags), so that a fold in small batches stays O(chunks changed) overall.
    fn chunks_to_fold(&self, limit: usize) -> Vec<ChunkIndex> {
        let below = self.oldest_shadow().unwrap_or(u64::MAX);
        let mut seen = std::collections::HashSet::new();
        let mut chunks = Vec::new();
        for tag in self.map.tags_in(0, below) {
            for &chunk in self.map.chunks_of_tag(tag) {
                if chunks.len() >= limit {
                    return chunks;
                }
                if seen.insert(chunk) {
                    chunks.push(chunk);
                }
            }
        }
        chunks
    }

    /// How many versions wait to be folded (at least the chunks a fold copies): what a wait
    /// for the fold shows as progress.
    pub fn versions_waiting_for_fold(&self) -> u64 {
        let below = self.oldest_shadow().unwrap_or(u64::MAX);
        self.map
            .tags_in(0, below)
            .into_iter()
            .map(|tag| self.map.chunks_of_tag(tag).len() as u64)
            .sum()
    }

    /// Folds everything waiting, batch after batch. Returns the versions freed.
    pub fn fold(&mut self) -> io::Result<u64> {
        let mut freed = 0;
        while self.needs_fold() {
            freed += self.fold_batch(usize::MAX)?;
        }
        Ok(freed)
    }

    /// One step of the fold, O(`max_chunks`) in I/O: for up to `max_chunks` of the chunks with
    /// versions no shadow needs apart (tagged < the oldest shadow, any without shadows), the
    /// newest of those versions is copied into the image, the image is synced, and then those
    /// versions are freed (their records synced before their slots are reused). Until its
    /// free record is durable a folded version is still read (the image copy is the same
    /// bytes); a crash leaves it in the log and the next fold copies it again. The caller
    /// holds the volume exclusively for the step, and lets I/O in between steps. Returns the
    /// versions freed.
    pub fn fold_batch(&mut self, max_chunks: usize) -> io::Result<u64> {
        let below = self.oldest_shadow().unwrap_or(u64::MAX);
        let tags = self.map.tags_in(0, below);
        if tags.is_empty() {
            return Ok(0);
        }
        let below_tag = if below == u64::MAX {
            Tag::MAX
        } else {
            tag_of(below)
        };
        let chunks = self.chunks_to_fold(max_chunks.max(1));
        // Copy, then one sync of the image, then the free records and one sync of the index.
        self.write_stamp.cover_write()?;
        let mut buffer = std::mem::take(&mut self.chunk_buffer);
        let mut copied = Ok(());
        for &chunk in &chunks {
            let Some(version) = self.map.lookup_below(chunk, below_tag) else {
                continue;
            };
            let length = self.chunk_length(chunk) as usize;
            buffer.resize(length, 0);
            copied = self
                .data
                .read_exact_or_zero(u64::from(version.slot) * self.chunk_size, &mut buffer)
                .and_then(|()| self.live.write_at(chunk * self.chunk_size, &buffer));
            if copied.is_err() {
                break;
            }
        }
        self.chunk_buffer = buffer;
        self.image_unsynced = true;
        let refreshed = self.refresh_fingerprint();
        copied?;
        refreshed?;
        self.live.sync_data()?;
        self.image_unsynced = false;
        let batch: std::collections::HashSet<ChunkIndex> = chunks.into_iter().collect();
        let mut freed_count = 0;
        for tag in &tags {
            // Every version of these chunks tagged < the oldest shadow is read by nobody now:
            // the newest is in the image, the others were read by no shadow.
            for (chunk, slot) in self.map.free_where(*tag, |_, chunk| batch.contains(&chunk)) {
                self.append_record(KIND_FREE, *tag, chunk, slot);
                self.released_slots.push(slot);
                self.data_slots_used -= 1;
                freed_count += 1;
            }
        }
        self.sync()?;
        if self.map.is_empty() {
            // Everything is folded and every free record durable: an empty log tells the
            // next open the volume is not redirected.
            self.index_log.set_len(0)?;
            self.index_log.sync_data()?;
            self.index_log_length = 0;
            if self.shadows.is_empty() {
                // No shadow left to redirect writes for: the space goes back.
                self.data.set_len(0)?;
                self.data.sync_data()?;
                self.free_slots.clear();
                self.released_slots.clear();
                self.slot_high_water = 0;
            }
            // With shadows left (rolling shadows: the oldest was deleted after a newer one
            // was taken), the folded slots stay allocated, free, for the next first writes:
            // writing into blocks the file already has costs about a plain overwrite, where
            // a write past the end of the file also allocates them. An open gives back what
            // lies past the last used slot.
        }
        Ok(freed_count)
    }
}
