//! Shadow storage: each volume's diff-area limit (shadows deleted oldest first until the diff
//! area fits) and use, as `vssadmin list|resize shadowstorage` show and set them.

use super::*;

impl Engine {
    /// Sets (or clears) the maximum diff-area size of a volume; shadows are deleted oldest
    /// first until the diff area fits. Returns the deleted shadows.
    pub fn set_max_diff_area(
        &self,
        volume: VolumeId,
        max_bytes: Option<u64>,
    ) -> Result<Vec<ShadowInfo>, StorageError> {
        let handle = self
            .handle(volume)
            .ok_or(StorageError::VolumeNotFound { volume })?;
        let mut guard = write_lock(&handle.state);
        lock_mutex(&self.shared.catalog)
            .commit(vec![CatalogChange::SetMaxDiffArea { volume, max_bytes }])?;
        if let VolumeSlot::Ready(cow) = &mut *guard {
            cow.set_max_diff_bytes(max_bytes);
        }
        let mut deleted = Vec::new();
        if let (VolumeSlot::Ready(cow), Some(max_bytes)) = (&mut *guard, max_bytes) {
            let used_bytes = cow.used_bytes();
            let mut outcome = Ok(());
            while cow.used_bytes() > max_bytes {
                match self.delete_oldest_locked(&mut **cow, None) {
                    Ok(Some(info)) => deleted.push(info),
                    Ok(None) => break,
                    Err(WriteFailure::Catalog(error)) => {
                        outcome = Err(StorageError::Catalog(error));
                        break;
                    }
                    Err(other) => {
                        outcome = Err(StorageError::Io {
                            volume,
                            source: other.into(),
                        });
                        break;
                    }
                }
            }
            self.record_deletions(
                volume,
                &deleted,
                DeletionReason::LimitLowered {
                    used_bytes,
                    max_bytes,
                },
            );
            outcome?;
        }
        Ok(deleted)
    }

    /// Diff-area use of every volume that has shadows or a maximum size.
    pub fn storage(&self) -> Vec<StorageInfo> {
        let mut usage = BTreeMap::new();
        for handle in self.handles() {
            if let VolumeSlot::Ready(cow) = &*read_lock(&handle.state) {
                usage.insert(
                    handle.id,
                    (
                        cow.used_bytes(),
                        cow.allocated_bytes(),
                        cow.shadows().len(),
                        cow.size(),
                    ),
                );
            }
        }
        let deletions = self.shared.deletions.events();
        let catalog = lock_mutex(&self.shared.catalog);
        let state = catalog.state();
        state
            .volumes
            .values()
            .filter_map(|record| {
                let (used_bytes, allocated_bytes, shadow_count, size) =
                    usage.get(&record.id).copied()?;
                let recent_deletions: Vec<DiffAreaDeletion> = deletions
                    .iter()
                    .filter(|event| event.volume == record.id)
                    .cloned()
                    .collect();
                if shadow_count == 0
                    && record.max_diff_area_bytes.is_none()
                    && used_bytes == 0
                    && recent_deletions.is_empty()
                {
                    return None;
                }
                Some(StorageInfo {
                    volume: volume_info(state, record, Some(size)),
                    used_bytes,
                    allocated_bytes,
                    max_bytes: record.max_diff_area_bytes,
                    recent_deletions,
                })
            })
            .collect()
    }

    /// Bytes of block-map memory per preserved chunk, over all volumes (`None` when nothing is
    /// preserved).
    pub fn index_bytes_per_preserved_chunk(&self) -> Option<f64> {
        let (mut bytes, mut chunks) = (0usize, 0usize);
        for handle in self.handles() {
            if let VolumeSlot::Ready(cow) = &*read_lock(&handle.state) {
                bytes += cow.index_memory_bytes();
                chunks += cow.versions();
            }
        }
        (chunks > 0).then(|| bytes as f64 / chunks as f64)
    }
}
