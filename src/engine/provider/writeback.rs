//! Starting write-back early, off the writer's thread: a stream of writes that ends in a sync
//! gets its pages on their way to the disk while it runs, instead of all at the sync.

use std::sync::Arc;

use crate::engine::store::DurableFile;

/// Bytes written to a file before its write-back is started.
pub(super) const WRITEBACK_PIECE_BYTES: u64 = 4 << 20;

/// Starts a file's write-back (`DurableFile::start_writeback`, a hint that is no sync point)
/// on a helper thread every [`WRITEBACK_PIECE_BYTES`] written, so a stream of writes does not
/// wait for the kernel to queue it. A start asked for while one is pending is dropped: the
/// pending one covers it. The thread ends when the owner is dropped.
#[derive(Default)]
pub(super) struct WriteBackStarter {
    sender: Option<std::sync::mpsc::SyncSender<Arc<dyn DurableFile>>>,
    /// Bytes written since the write-back was last started.
    unstarted_bytes: u64,
}

impl WriteBackStarter {
    /// Notes `bytes` written to `file`; starts its write-back when a piece is complete.
    pub(super) fn wrote(&mut self, file: &Arc<dyn DurableFile>, bytes: u64) {
        self.unstarted_bytes += bytes;
        if self.unstarted_bytes >= WRITEBACK_PIECE_BYTES {
            self.unstarted_bytes = 0;
            self.start(file);
        }
    }

    fn start(&mut self, file: &Arc<dyn DurableFile>) {
        if self.sender.is_none() {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<Arc<dyn DurableFile>>(1);
            let spawned = std::thread::Builder::new()
                .name("diskshadow-writeback".to_string())
                .spawn(move || {
                    while let Ok(file) = receiver.recv() {
                        // Only a hint: its failure loses nothing (the next sync writes all).
                        let _ = file.start_writeback();
                    }
                });
            if spawned.is_err() {
                // No thread: start it here, as before.
                let _ = file.start_writeback();
                return;
            }
            self.sender = Some(sender);
        }
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(Arc::clone(file));
        }
    }
}
