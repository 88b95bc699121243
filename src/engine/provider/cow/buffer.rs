//! The write-back buffer of first writes (`pending`) and the journal that undoes a failed
//! write: a chunk's new content waits there until its preserved copy is durable.

use super::*;

/// A first write held back until its chunk's preserved copy is durable: the chunk's whole new
/// content (what reads of the live volume see) and the byte range within it that was written,
/// which is all the drain has to write (the rest is still on the live image unchanged).
pub(super) struct PendingChunk {
    pub(super) content: Vec<u8>,
    pub(super) written_from: usize,
    pub(super) written_to: usize,
}

impl PendingChunk {
    /// Writes `piece` at `within` into the buffered content of `chunk`, returning how to undo
    /// it.
    pub(super) fn overwrite(
        &mut self,
        chunk: ChunkIndex,
        within: usize,
        piece: &[u8],
    ) -> BufferUndo {
        let undo = BufferUndo::Restore {
            chunk,
            written_from: self.written_from,
            written_to: self.written_to,
            within,
            old_bytes: self.content[within..within + piece.len()].to_vec(),
        };
        self.content[within..within + piece.len()].copy_from_slice(piece);
        self.written_from = self.written_from.min(within);
        self.written_to = self.written_to.max(within + piece.len());
        undo
    }
}

/// A change a write made to the write-back buffer, and how to undo it.
pub(super) enum BufferUndo {
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
pub(super) struct WriteJournal {
    pub(super) buffered: Vec<BufferUndo>,
    pub(super) preserved: Vec<ChunkIndex>,
    pub(super) direct_runs: Vec<(u64, u64)>,
}

impl CowVolume {
    /// Undoes what a failed write did to the write-back buffer, newest change first, so that
    /// a failed write leaves nothing to be read or to land later. Chunks it preserved keep
    /// their versions (the chunk's current content, which the newest shadow reads either way);
    /// while those are not yet durable, a later write to them syncs before touching the image.
    pub(super) fn roll_back(&mut self, journal: WriteJournal) {
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

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
