//! Deleting shadow copies: the selected shadows in one catalog transaction, each freed from
//! its volume's data path (or by its provider), and the folds the deletes leave (redirected
//! chunks folded back into the image, by the background worker or in the caller's thread).

use super::*;

impl Engine {
    /// Deletes the selected shadows in one catalog transaction and frees the diff-area chunks
    /// only they needed. Returns what was deleted, oldest first.
    pub fn delete_shadows(
        &self,
        selector: &DeleteSelector,
    ) -> Result<Vec<ShadowInfo>, DeleteError> {
        let targets: Vec<(ShadowId, VolumeId)> = {
            let catalog = lock_mutex(&self.shared.catalog);
            let state = catalog.state();
            let all = state.shadows.values();
            let selected: Vec<&ShadowRecord> = match selector {
                DeleteSelector::All => all.collect(),
                DeleteSelector::Volume(volume) => {
                    if !state.volumes.contains_key(volume) {
                        return Err(DeleteError::NotFound {
                            what: format!("volume {volume}"),
                        });
                    }
                    all.filter(|record| record.volume == *volume).collect()
                }
                DeleteSelector::Oldest(volume) => {
                    let oldest = state.shadows_of(*volume).first().copied();
                    vec![oldest.ok_or_else(|| DeleteError::NotFound {
                        what: format!("a shadow copy of volume {volume}"),
                    })?]
                }
                DeleteSelector::Set(set_id) => {
                    let members: Vec<&ShadowRecord> =
                        all.filter(|record| record.set_id == *set_id).collect();
                    if members.is_empty() {
                        return Err(DeleteError::NotFound {
                            what: format!("shadow copy set {set_id}"),
                        });
                    }
                    members
                }
                DeleteSelector::Id(id) => {
                    vec![state.shadows.get(id).ok_or_else(|| DeleteError::NotFound {
                        what: format!("shadow copy {id}"),
                    })?]
                }
                DeleteSelector::OwnedBy(requester) => all
                    .filter(|record| record.owner == Some(*requester))
                    .collect(),
            };
            selected
                .iter()
                .map(|record| (record.id, record.volume))
                .collect()
        };
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let resyncs = self.resyncs_in_progress();
        if let Some((shadow, volume)) = resyncs
            .iter()
            .find(|(source, _)| targets.iter().any(|(id, _)| id == source))
        {
            return Err(DeleteError::ResyncSource {
                shadow: *shadow,
                volume: *volume,
            });
        }
        let volumes: BTreeSet<VolumeId> = targets.iter().map(|(_, volume)| *volume).collect();
        let handles: Vec<Arc<VolumeHandle>> = volumes
            .iter()
            .filter_map(|volume| self.handle(*volume))
            .collect();
        let mut guards: Vec<RwLockWriteGuard<'_, VolumeSlot>> = handles
            .iter()
            .map(|handle| write_lock(&handle.state))
            .collect();
        let mut cows: BTreeMap<VolumeId, &mut dyn VolumeProvider> = BTreeMap::new();
        for guard in guards.iter_mut() {
            if let VolumeSlot::Ready(cow) = &mut **guard {
                let volume = cow.volume();
                self.drain_checked(&mut **cow)
                    .map_err(|failure| match failure {
                        WriteFailure::Catalog(error) => DeleteError::Catalog(error),
                        other => DeleteError::Io {
                            volume,
                            source: other.into(),
                        },
                    })?;
                cows.insert(cow.volume(), &mut **cow);
            }
        }
        let mut catalog = lock_mutex(&self.shared.catalog);
        let mut deleted: Vec<ShadowInfo> = targets
            .iter()
            .filter_map(|(id, _)| catalog.state().shadows.get(id))
            .map(|record| shadow_info(catalog.state(), record, None))
            .collect();
        deleted.sort_by_key(|shadow| shadow.sequence);
        let records: Vec<ShadowRecord> = deleted
            .iter()
            .filter_map(|shadow| catalog.state().shadows.get(&shadow.id).cloned())
            .collect();
        catalog.commit(
            deleted
                .iter()
                .map(|shadow| CatalogChange::DeleteShadow(shadow.id))
                .collect(),
        )?;
        drop(catalog);
        let mut to_fold = BTreeSet::new();
        for shadow in &deleted {
            if let Some(cow) = cows.get_mut(&shadow.volume.id) {
                self.delete_in_data_path(&mut **cow, shadow.sequence)
                    .map_err(|failure| match failure {
                        WriteFailure::Catalog(error) => DeleteError::Catalog(error),
                        other => DeleteError::Io {
                            volume: shadow.volume.id,
                            source: other.into(),
                        },
                    })?;
                if cow.versions_waiting_for_fold() > 0 {
                    to_fold.insert(shadow.volume.id);
                }
            }
        }
        drop(cows);
        drop(guards);
        self.request_folds(&to_fold);
        // Independent shadows (full copies) go after the commit: a crash in between leaves an
        // orphan that the next open removes.
        let context = self.provider_context(lock_mutex(&self.shared.catalog).state());
        let mut synced_dirs = BTreeSet::new();
        for record in &records {
            let Some(provider) = provider_of(record) else {
                continue;
            };
            let io_error = |source| DeleteError::Io {
                volume: record.volume,
                source,
            };
            if let Some(dir) = provider.remove_shadow(&context, record).map_err(io_error)? {
                if synced_dirs.insert(dir.clone()) {
                    self.shared.backend.sync_dir(&dir).map_err(io_error)?;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes a shadow from its volume's data path. What the delete leaves to fold back into
    /// the image (the oldest redirect-on-write shadow) is folded later: by the background
    /// worker after [`Engine::delete_shadows`], or by the caller.
    pub(super) fn delete_in_data_path(
        &self,
        cow: &mut dyn VolumeProvider,
        sequence: u64,
    ) -> Result<u64, WriteFailure> {
        cow.delete_shadow(sequence).map_err(WriteFailure::Io)
    }

    /// Folds everything a locked volume has waiting (a write that needs the room now).
    pub(super) fn fold_all_locked(&self, cow: &mut dyn VolumeProvider) -> Result<(), WriteFailure> {
        while cow.versions_waiting_for_fold() > 0 {
            self.shared
                .fold_step_locked(cow, self.shared.folds.step_chunks)?;
        }
        Ok(())
    }

    /// Folds what one volume has waiting, taking its lock for one step at a time (I/O goes on
    /// in between), and reports each step.
    pub(super) fn fold_stepwise(
        &self,
        handle: &VolumeHandle,
        progress: &dyn Progress,
    ) -> Result<(), WriteFailure> {
        let waiting = match &*read_lock(&handle.state) {
            VolumeSlot::Ready(cow) => cow.versions_waiting_for_fold(),
            VolumeSlot::Unavailable(_) => 0,
        };
        if waiting == 0 {
            return Ok(());
        }
        progress.begin("fold", waiting);
        let outcome = loop {
            let mut guard = write_lock(&handle.state);
            let VolumeSlot::Ready(cow) = &mut *guard else {
                break Ok(());
            };
            let before = cow.versions_waiting_for_fold();
            if before == 0 {
                break Ok(());
            }
            let stepped = self
                .shared
                .fold_step_locked(&mut **cow, self.shared.folds.step_chunks);
            progress.advance(before.saturating_sub(cow.versions_waiting_for_fold()));
            if stepped.is_err() {
                break stepped;
            }
        };
        progress.finish();
        outcome
    }

    /// Hands the folds the deletes left to the background worker (without one, they wait for
    /// [`Engine::wait_for_folds`] or the engine's close).
    fn request_folds(&self, volumes: &BTreeSet<VolumeId>) {
        for volume in volumes {
            self.shared
                .folds
                .request(*volume, &self.shared, Shared::background_fold_step);
        }
    }

    /// Waits until every redirect-on-write chunk that deletes left behind is folded back into
    /// its image (the images then hold the volumes' content where no shadow redirects it),
    /// folding in this thread a step at a time, beside the background worker, and reporting
    /// progress. Also retries folds that failed in the background, and reports their error.
    pub fn wait_for_folds(&self, progress: &dyn Progress) -> Result<(), FoldError> {
        if self.shared.read_only {
            return Ok(());
        }
        for handle in self.handles() {
            self.fold_stepwise(&handle, progress)
                .map_err(|failure| match failure {
                    WriteFailure::Catalog(error) => FoldError::Catalog(error),
                    other => FoldError::Io {
                        volume: handle.id,
                        source: other.into(),
                    },
                })?;
        }
        Ok(())
    }
}
