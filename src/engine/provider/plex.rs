//! The full-copy (plex) provider: each shadow is a complete copy of the image, made at the
//! commit as a reflink clone (`FICLONE`) where the file system shares blocks, else streamed
//! with progress. Such a shadow is independent of later changes to the volume, so it is never
//! made suspect by them, and it needs nothing from the copy-on-write block map.

use std::io;
use std::path::{Path, PathBuf};

use crate::engine::ids::ShadowId;
use crate::engine::progress::Progress;
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

/// Copies `size` bytes of `live` to `target_path`, durably (file and name synced) before it
/// returns: the catalog commit that makes it a shadow comes after. Returns whether it was a
/// reflink clone.
pub fn make_copy(
    backend: &dyn DurableBackend,
    live: &dyn DurableFile,
    size: u64,
    target_path: &Path,
    progress: &dyn Progress,
) -> io::Result<bool> {
    let target = backend.open_file(target_path, true)?;
    target.set_len(0)?;
    let cloned = live.clone_to(&*target)?;
    if cloned {
        target.set_len(size)?;
    } else {
        progress.begin("full copy", size);
        let mut done = 0u64;
        while done < size {
            let piece = (size - done).min(COPY_PIECE_BYTES);
            live.copy_to(done, &*target, done, piece)?;
            done += piece;
            progress.advance(piece);
        }
        target.set_len(size)?;
        progress.finish();
    }
    target.sync_data()?;
    if let Some(dir) = target_path.parent() {
        backend.sync_dir(dir)?;
    }
    Ok(cloned)
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
