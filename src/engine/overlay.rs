//! A durable overlay over a shadow copy: the read-write view writers get during auto-recovery
//! (PostSnapshot). Writes land in the overlay, never in the shadow's preserved chunks or the
//! live volume; once sealed, the overlay is part of what the shadow shows, read-only.
//!
//! On disk, one file per shadow: a sequence of records, each `chunk index (u64 LE)`,
//! `chunk bytes`, `CRC-32 of both (u32 LE)`. A chunk's newest complete record wins. A torn last
//! record (a crash mid-write) fails its CRC and is ignored: the chunk reads as before that
//! write, never as a mix. `flush` makes every completed write durable (fdatasync).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::device::BlockDevice;
use super::ids::ShadowId;

/// The overlay's granularity. Auto-recovery rewrites a few blocks of a file system's journal
/// or a database's pages; 4 KiB keeps each of them one small record.
pub const OVERLAY_CHUNK: u64 = 4096;
const RECORD_BYTES: u64 = 8 + OVERLAY_CHUNK + 4;

struct State {
    file: Option<File>,
    /// chunk index -> offset of its newest record's data in the file.
    index: HashMap<u64, u64>,
    end: u64,
}

/// A shadow copy with its recovery overlay.
pub struct OverlayDevice {
    base: Arc<dyn BlockDevice>,
    path: PathBuf,
    writable: bool,
    state: Mutex<State>,
}

impl OverlayDevice {
    /// Opens the overlay at `path` over `base` (the file need not exist: an overlay nobody
    /// wrote to holds nothing). `writable` is true only during auto-recovery.
    pub fn open(
        base: Arc<dyn BlockDevice>,
        path: &Path,
        writable: bool,
    ) -> io::Result<OverlayDevice> {
        let mut state = State {
            file: None,
            index: HashMap::new(),
            end: 0,
        };
        if path.exists() {
            let file = OpenOptions::new().read(true).write(writable).open(path)?;
            let length = file.metadata()?.len();
            let mut record = vec![0u8; RECORD_BYTES as usize];
            let mut offset = 0;
            while offset + RECORD_BYTES <= length {
                file.read_exact_at(&mut record, offset)?;
                let body = &record[..(8 + OVERLAY_CHUNK) as usize];
                let stored = u32::from_le_bytes(
                    record[(8 + OVERLAY_CHUNK) as usize..]
                        .try_into()
                        .unwrap_or([0; 4]),
                );
                if crc32fast::hash(body) != stored {
                    break;
                }
                let chunk = u64::from_le_bytes(record[..8].try_into().unwrap_or([0; 8]));
                state.index.insert(chunk, offset + 8);
                offset += RECORD_BYTES;
            }
            state.end = offset;
            state.file = Some(file);
        }
        Ok(OverlayDevice {
            base,
            path: path.to_path_buf(),
            writable,
            state: Mutex::new(state),
        })
    }

    /// Chunks the overlay holds.
    pub fn overlaid_chunks(&self) -> Vec<u64> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut chunks: Vec<u64> = state.index.keys().copied().collect();
        chunks.sort_unstable();
        chunks
    }

    fn read_chunk(&self, state: &State, chunk: u64, buffer: &mut [u8]) -> io::Result<()> {
        match (state.index.get(&chunk), &state.file) {
            (Some(offset), Some(file)) => file.read_exact_at(buffer, *offset),
            _ => {
                let start = chunk * OVERLAY_CHUNK;
                let length = (self.base.size().saturating_sub(start)).min(OVERLAY_CHUNK) as usize;
                buffer.fill(0);
                self.base.read_at(start, &mut buffer[..length])
            }
        }
    }
}

/// Where the store keeps auto-recovery overlays: `<store>/recovery/<shadow>.overlay`, and the
/// directory `<store>/recovery/<shadow>/` a read-write view is mounted on during PostSnapshot.
/// The shadow-copy coordinator owns it: an overlay lives exactly as long as its shadow.
#[derive(Debug, Clone)]
pub struct OverlayStore {
    directory: PathBuf,
}

/// An overlay file (or view directory) whose shadow is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakedOverlay {
    pub path: PathBuf,
    pub bytes: u64,
}

impl OverlayStore {
    /// The overlays of the store at `store_dir`.
    pub fn new(store_dir: &Path) -> Self {
        Self {
            directory: store_dir.join("recovery"),
        }
    }

    /// Where the overlay of `shadow` lives (it need not exist).
    pub fn overlay_path(&self, shadow: ShadowId) -> PathBuf {
        self.directory.join(format!("{shadow}.overlay"))
    }

    /// The directory a read-write view of `shadow` is mounted on during auto-recovery.
    pub fn view_directory(&self, shadow: ShadowId) -> PathBuf {
        self.directory.join(shadow.to_string())
    }

    /// Whether writers repaired `shadow` (its overlay exists).
    pub fn has_overlay(&self, shadow: ShadowId) -> bool {
        self.overlay_path(shadow).exists()
    }

    /// `base` (the shadow's point-in-time content) with its sealed overlay, or `base` itself
    /// when writers changed nothing.
    pub fn open_sealed(
        &self,
        shadow: ShadowId,
        base: Arc<dyn BlockDevice>,
    ) -> io::Result<Arc<dyn BlockDevice>> {
        let path = self.overlay_path(shadow);
        if !path.exists() {
            return Ok(base);
        }
        Ok(Arc::new(OverlayDevice::open(base, &path, false)?))
    }

    /// Removes what the store keeps for `shadow`: its overlay and its (unmounted) view
    /// directory. Missing pieces are not an error; a piece that cannot be removed is.
    pub fn remove(&self, shadow: ShadowId) -> io::Result<()> {
        match std::fs::remove_file(self.overlay_path(shadow)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        self.remove_view_directory(shadow);
        Ok(())
    }

    /// Removes the empty mount point of a view that was unmounted (best effort: a busy or
    /// non-empty directory stays, and `leaked` reports it once its shadow is gone).
    pub fn remove_view_directory(&self, shadow: ShadowId) {
        let _ = std::fs::remove_dir(self.view_directory(shadow));
    }

    /// Overlays and view directories whose shadow is not in `live` (a crash between a
    /// shadow's deletion and its overlay's, or a removal that failed).
    pub fn leaked(&self, live: &dyn Fn(ShadowId) -> bool) -> Vec<LeakedOverlay> {
        let Ok(entries) = std::fs::read_dir(&self.directory) else {
            return Vec::new();
        };
        let mut leaked: Vec<LeakedOverlay> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().to_string();
                let stem = name.strip_suffix(".overlay").unwrap_or(&name);
                let shadow = crate::engine::ids::parse_guid(stem).map(ShadowId)?;
                if live(shadow) {
                    return None;
                }
                let bytes = entry.metadata().map_or(0, |metadata| {
                    if metadata.is_file() {
                        metadata.len()
                    } else {
                        0
                    }
                });
                Some(LeakedOverlay {
                    path: entry.path(),
                    bytes,
                })
            })
            .collect();
        leaked.sort_by(|left, right| left.path.cmp(&right.path));
        leaked
    }
}

impl BlockDevice for OverlayDevice {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buffer.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if end > self.size() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the shadow copy",
            ));
        }
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.index.is_empty() {
            drop(state);
            return self.base.read_at(offset, buffer);
        }
        let mut chunk_buffer = vec![0u8; OVERLAY_CHUNK as usize];
        let mut done = 0usize;
        while done < buffer.len() {
            let position = offset + done as u64;
            let chunk = position / OVERLAY_CHUNK;
            let within = (position % OVERLAY_CHUNK) as usize;
            let take = (OVERLAY_CHUNK as usize - within).min(buffer.len() - done);
            if state.index.contains_key(&chunk) {
                self.read_chunk(&state, chunk, &mut chunk_buffer)?;
                buffer[done..done + take].copy_from_slice(&chunk_buffer[within..within + take]);
            } else {
                self.base
                    .read_at(position, &mut buffer[done..done + take])?;
            }
            done += take;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the shadow copy is sealed read-only",
            ));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if end > self.size() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the shadow copy",
            ));
        }
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.file.is_none() {
            if let Some(parent) = self.path.parent() {
                crate::engine::store::create_private_dir_all(parent)?;
            }
            state.file = Some(
                crate::engine::store::private_open_options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.path)?,
            );
        }
        let mut record = vec![0u8; RECORD_BYTES as usize];
        let mut done = 0usize;
        while done < data.len() {
            let position = offset + done as u64;
            let chunk = position / OVERLAY_CHUNK;
            let within = (position % OVERLAY_CHUNK) as usize;
            let take = (OVERLAY_CHUNK as usize - within).min(data.len() - done);
            record[..8].copy_from_slice(&chunk.to_le_bytes());
            self.read_chunk(&state, chunk, &mut record[8..(8 + OVERLAY_CHUNK) as usize])?;
            record[8 + within..8 + within + take].copy_from_slice(&data[done..done + take]);
            let crc = crc32fast::hash(&record[..(8 + OVERLAY_CHUNK) as usize]);
            record[(8 + OVERLAY_CHUNK) as usize..].copy_from_slice(&crc.to_le_bytes());
            let at = state.end;
            if let Some(file) = &state.file {
                file.write_all_at(&record, at)?;
            }
            state.index.insert(chunk, at + 8);
            state.end = at + RECORD_BYTES;
            done += take;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &state.file {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Memory(Vec<u8>);

    impl BlockDevice for Memory {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
            buffer.copy_from_slice(&self.0[offset as usize..offset as usize + buffer.len()]);
            Ok(())
        }
        fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        fn is_read_only(&self) -> bool {
            true
        }
    }

    #[test]
    fn writes_land_in_the_overlay_and_survive_reopening_sealed() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("shadow.overlay");
        let base: Arc<dyn BlockDevice> = Arc::new(Memory(vec![7u8; 20_000]));
        let overlay = OverlayDevice::open(base.clone(), &path, true).expect("open");
        overlay
            .write_at(4090, b"RECOVERED")
            .expect("write across a chunk edge");
        overlay.flush().expect("flush");
        let mut read = vec![0u8; 20];
        overlay.read_at(4085, &mut read).expect("read");
        assert_eq!(
            &read,
            b"\x07\x07\x07\x07\x07RECOVERED\x07\x07\x07\x07\x07\x07"
        );

        let sealed = OverlayDevice::open(base, &path, false).expect("reopen");
        let mut again = vec![0u8; 20];
        sealed.read_at(4085, &mut again).expect("read");
        assert_eq!(again, read);
        assert_eq!(sealed.overlaid_chunks(), vec![0, 1]);
        assert_eq!(
            sealed.write_at(0, b"x").map_err(|error| error.kind()),
            Err(io::ErrorKind::PermissionDenied)
        );
    }

    #[test]
    fn a_torn_last_record_is_ignored() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("shadow.overlay");
        let base: Arc<dyn BlockDevice> = Arc::new(Memory(vec![1u8; 8192]));
        let overlay = OverlayDevice::open(base.clone(), &path, true).expect("open");
        overlay.write_at(0, &[2u8; 10]).expect("first");
        overlay.write_at(0, &[3u8; 10]).expect("second");
        drop(overlay);
        let file = OpenOptions::new().write(true).open(&path).expect("file");
        let length = file.metadata().expect("meta").len();
        file.set_len(length - 100).expect("tear the last record");
        let reopened = OverlayDevice::open(base, &path, false).expect("reopen");
        let mut read = [0u8; 12];
        reopened.read_at(0, &mut read).expect("read");
        assert_eq!(
            read,
            [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1],
            "the torn write is not seen, the one before it is"
        );
    }

    #[test]
    fn the_overlay_store_removes_what_it_keeps_and_names_leftovers() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = OverlayStore::new(directory.path());
        let kept = ShadowId(uuid::Uuid::from_u128(1));
        let gone = ShadowId(uuid::Uuid::from_u128(2));
        std::fs::create_dir_all(store.view_directory(gone)).expect("view directory");
        std::fs::write(store.overlay_path(kept), [0u8; 10]).expect("kept overlay");
        std::fs::write(store.overlay_path(gone), [0u8; 7]).expect("leftover overlay");
        std::fs::write(directory.path().join("recovery/notes.txt"), b"x").expect("other file");

        let leaked = store.leaked(&|shadow| shadow == kept);
        assert_eq!(
            leaked,
            vec![
                LeakedOverlay {
                    path: store.view_directory(gone),
                    bytes: 0
                },
                LeakedOverlay {
                    path: store.overlay_path(gone),
                    bytes: 7
                },
            ]
        );
        store.remove(gone).expect("remove");
        assert!(store.leaked(&|shadow| shadow == kept).is_empty());
        assert!(store.has_overlay(kept));
        // Removing what is not there is not an error.
        store.remove(gone).expect("remove again");
    }
}
