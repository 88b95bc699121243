//! Revert: making a volume's content a shadow's, every changed chunk written back through the
//! write path (so the other shadows and the shadow itself stay intact), recorded in the catalog
//! so that an interrupted revert is finished at the next open.

use super::*;

impl Engine {
    /// Makes the volume's content the shadow's. O(chunks changed since the shadow); every chunk
    /// is written through the normal write path, so all other shadows stay intact and the
    /// shadow itself survives.
    pub fn revert(&self, shadow: ShadowId, progress: &dyn Progress) -> Result<(), RevertError> {
        let record = lock_mutex(&self.shared.catalog)
            .state()
            .shadows
            .get(&shadow)
            .cloned()
            .ok_or(RevertError::NotFound { shadow })?;
        if !record.context.is_persistent() {
            return Err(RevertError::UnsupportedContext {
                shadow,
                context: record.context.name(),
            });
        }
        let volume = record.volume;
        let handle = self.handle(volume).ok_or(RevertError::VolumeUnavailable {
            volume,
            reason: "it is not registered".to_string(),
        })?;
        let mut guard = write_lock(&handle.state);
        let cow = match &mut *guard {
            VolumeSlot::Ready(cow) => cow,
            VolumeSlot::Unavailable(reason) => {
                return Err(RevertError::VolumeUnavailable {
                    volume,
                    reason: reason.clone(),
                })
            }
        };
        // A revert's writes would not be known to the resync, which would then overwrite them.
        if let Some(running) = lock_mutex(&handle.resync).as_ref() {
            return Err(RevertError::ResyncInProgress {
                volume,
                source_shadow: running.shadow,
            });
        }
        let io_failure = |failure: WriteFailure| match failure {
            WriteFailure::Io(source) => RevertError::Io { volume, source },
            WriteFailure::Catalog(error) => RevertError::Catalog(error),
            WriteFailure::WouldDeleteProtected => {
                RevertError::InsufficientStorage { volume, shadow }
            }
        };
        self.verify_unchanged(&mut **cow).map_err(io_failure)?;
        if let Some(reason) = lock_mutex(&self.shared.catalog)
            .state()
            .shadows
            .get(&shadow)
            .and_then(|record| record.suspect.clone())
        {
            return Err(RevertError::Suspect { shadow, reason });
        }
        cow.drain()
            .map_err(|source| RevertError::Io { volume, source })?;
        lock_mutex(&self.shared.catalog).commit(vec![CatalogChange::RevertStarted(
            RevertRecord { volume, shadow },
        )])?;

        // A data-path shadow differs from the volume exactly in the chunks written since it
        // was made; an independent one (a full copy) is compared chunk by chunk and only
        // differences are written.
        let size = record.volume_size.min(cow.size());
        let context = self.provider_context(lock_mutex(&self.shared.catalog).state());
        let copy = match provider_of(&record) {
            Some(provider) if !record.copy_pending => provider
                .open_shadow(&context, &record)
                .map_err(|source| RevertError::Io { volume, source })?,
            _ => None,
        };
        let chunks: Vec<u64> = match &copy {
            None => cow.chunks_changed_since(record.sequence),
            Some(_) => (0..size.div_ceil(cow.chunk_size())).collect(),
        };
        let protected = copy.is_none().then_some(record.sequence);
        progress.begin("revert", chunks.len() as u64);
        let mut content = vec![0u8; cow.chunk_size() as usize];
        let mut current = vec![0u8; cow.chunk_size() as usize];
        for chunk in chunks {
            let start = chunk * cow.chunk_size();
            if start >= size {
                progress.advance(1);
                continue;
            }
            let length = (size - start).min(cow.chunk_size()) as usize;
            let buffer = &mut content[..length];
            match &copy {
                None => cow.read_shadow(record.sequence, start, buffer),
                Some(copy) => copy.read_exact_or_zero(start, buffer),
            }
            .map_err(|source| RevertError::Io { volume, source })?;
            if copy.is_some() {
                cow.read_live(start, &mut current[..length])
                    .map_err(|source| RevertError::Io { volume, source })?;
                if current[..length] == *buffer {
                    progress.advance(1);
                    continue;
                }
            }
            let bytes = buffer.to_vec();
            self.write_locked(&mut **cow, start, &bytes, protected)
                .map_err(io_failure)?;
            progress.advance(1);
        }
        self.flush_locked(&mut **cow).map_err(io_failure)?;
        lock_mutex(&self.shared.catalog).commit(vec![CatalogChange::RevertFinished { volume }])?;
        progress.finish();
        Ok(())
    }
}
