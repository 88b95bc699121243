//! Taking a resync up at open: every state file a crash (or a stop) left is read back, its
//! resync made active again so that the destination reads right at once, and finished.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::engine::core::{data_path_of, lock_mutex, read_lock, Engine, VolumeSlot};
use crate::engine::progress::NoProgress;

use super::{ActiveResync, ChunkMap, ResyncSource, StateHeader, HEADER_BYTES, RESYNC_DIR};

impl Engine {
    /// At open: every resync a crash interrupted is taken up again (its destination reads
    /// right at once) and finished. One that cannot finish makes its destination
    /// unavailable, saying why.
    pub(in crate::engine::core) fn resume_resyncs(&self) -> Result<(), (PathBuf, io::Error)> {
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
