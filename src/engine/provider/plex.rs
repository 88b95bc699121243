//! The full-copy (plex) provider: each shadow is a complete copy of the image. Where the file
//! system shares blocks the commit makes it whole as a reflink clone (`FICLONE`, O(extents)).
//! Elsewhere the commit only takes an O(1) point in time in the volume's data path (the
//! shadow's own sequence, kept while the catalog says `copy_pending`), and after thaw
//! [`copy_point_in_time`] streams the copy from that point in time while the volume stays
//! writable. A complete copy is independent of later changes to the volume, so it is never
//! made suspect by them, and it needs nothing from the block map.

use std::io;
use std::path::{Path, PathBuf};

use crate::engine::device::BlockDevice;
use crate::engine::ids::ShadowId;
use crate::engine::progress::{Progress, Stopped};
use crate::engine::store::{DurableBackend, DurableFile};

const COPY_PIECE_BYTES: u64 = 4 << 20;

/// Where a full-copy shadow of a volume lives: `diff/<volume>/plex-<shadow>.img`.
pub fn copy_path(diff_dir: &Path, shadow: ShadowId) -> PathBuf {
    diff_dir.join(format!("plex-{}.img", shadow.0.hyphenated()))
}

/// The shadow a file in a diff directory holds, if it is a full copy.
pub fn shadow_of_copy(file_name: &str) -> Option<ShadowId> {
    let inner = file_name.strip_prefix("plex-")?.strip_suffix(".img")?;
    inner.parse().ok()
}

/// Clones `size` bytes of `live` to `target_path` with a reflink (`FICLONE`), durably (file
/// and name synced) before it returns: the catalog commit that makes it a shadow comes after.
/// Returns `false`, leaving no file, where the file system cannot share blocks: the copy is
/// then made after the commit by [`copy_point_in_time`].
pub fn clone_image(
    backend: &dyn DurableBackend,
    live: &dyn DurableFile,
    size: u64,
    target_path: &Path,
) -> io::Result<bool> {
    let target = backend.open_file(target_path, true)?;
    target.set_len(0)?;
    let cloned = match live.clone_to(&*target) {
        Ok(cloned) => cloned,
        Err(error) => {
            drop(target);
            let _ = backend.remove_file(target_path);
            return Err(error);
        }
    };
    if !cloned {
        drop(target);
        backend.remove_file(target_path)?;
        return Ok(false);
    }
    target.set_len(size)?;
    target.sync_data()?;
    sync_parent(backend, target_path)?;
    Ok(true)
}

/// The deferred copy: writes every byte of `source` (a point in time, read through the
/// device that serves it) to `target_path`, replacing what the file held, and makes file and
/// name durable before it returns. Holes and known-zero ranges of the source stay holes;
/// progress is reported in bytes of the source. Each read of `source` is independent, so the
/// volume behind it stays writable while the copy runs (a copy-on-write point in time keeps
/// the old bytes of every chunk written meanwhile).
///
/// This is the reusable piece of a full copy or clone made after the commit: the caller
/// keeps the point in time until the copy returns `Ok` and the result is recorded, then
/// releases it. On error the target file is truncated to nothing (its space is given back)
/// and the point in time is untouched, so the copy can be made again from the start. When
/// `progress` says the requester wants it stopped, it stops between two 4 MiB pieces the same
/// way, with a [`Stopped`] error.
pub fn copy_point_in_time(
    backend: &dyn DurableBackend,
    source: &dyn BlockDevice,
    target_path: &Path,
    progress: &dyn Progress,
) -> io::Result<u64> {
    let target = backend.open_file(target_path, true)?;
    let size = source.size();
    progress.begin("full copy", size);
    let copied = copy_data_extents(source, &*target, size, progress).and_then(|copied| {
        target.sync_data()?;
        sync_parent(backend, target_path)?;
        Ok(copied)
    });
    progress.finish();
    if copied.is_err() {
        let _ = target.set_len(0);
    }
    copied
}

/// Copies the data extents of `source` into `target` (made `size` bytes long and sparse
/// first). Returns the bytes of data copied.
fn copy_data_extents(
    source: &dyn BlockDevice,
    target: &dyn DurableFile,
    size: u64,
    progress: &dyn Progress,
) -> io::Result<u64> {
    target.set_len(0)?;
    target.set_len(size)?;
    let mut buffer = Vec::new();
    let mut copied = 0u64;
    let mut offset = 0u64;
    while offset < size {
        // Between pieces nothing is half-written that matters: the caller gives the partial
        // copy's space back and keeps the point in time, as after any failure.
        if progress.cancelled() {
            return Err(Stopped::error());
        }
        let piece = (size - offset).min(COPY_PIECE_BYTES);
        let mut at = offset;
        while at < offset + piece {
            let before = at;
            for extent in source.allocation(at, offset + piece - at)? {
                let start = extent.offset.max(at);
                let end = (extent.offset + extent.length).min(offset + piece);
                if end <= start {
                    continue;
                }
                if !extent.hole && !extent.zero {
                    let length = (end - start) as usize;
                    buffer.resize(length, 0);
                    source.read_at(start, &mut buffer)?;
                    target.write_at(start, &buffer)?;
                    copied += length as u64;
                }
                at = end;
            }
            if at == before {
                return Err(io::Error::other(format!(
                    "the source reported no allocation at byte {at}"
                )));
            }
        }
        progress.advance(piece);
        offset += piece;
    }
    Ok(copied)
}

fn sync_parent(backend: &dyn DurableBackend, path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => backend.sync_dir(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_file_names_round_trip() {
        let shadow = ShadowId(uuid::Uuid::from_u128(42));
        let path = copy_path(Path::new("/store/diff/v"), shadow);
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("name");
        assert_eq!(shadow_of_copy(name), Some(shadow));
        assert_eq!(shadow_of_copy("chunks.dat"), None);
    }
}
