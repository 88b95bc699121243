//! The write path: the live volume as a block device (`VolumeDevice`, which `Engine::open_volume`
//! returns) and the one way every change of a volume goes, also for revert and resync: change
//! detection against what diskshadow last left, the durable "writing" mark, making room under
//! the diff-area limit (deleting the oldest shadows, recorded as deletions), the provider's
//! write, and the flush that records the volume clean.

use super::devices::{check_range, unavailable};
use super::*;

struct VolumeDevice {
    engine: Engine,
    handle: Arc<VolumeHandle>,
    /// A shadow LUN broken off without `writable`.
    read_only: bool,
}

fn refuse_read_only(read_only: bool) -> io::Result<()> {
    if read_only {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the volume is read-only: it is a shadow LUN broken off without `writable`",
        ));
    }
    Ok(())
}

impl BlockDevice for VolumeDevice {
    fn size(&self) -> u64 {
        match &*read_lock(&self.handle.state) {
            VolumeSlot::Ready(cow) => cow.size(),
            VolumeSlot::Unavailable(_) => 0,
        }
    }

    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let guard = read_lock(&self.handle.state);
        let cow = match &*guard {
            VolumeSlot::Ready(cow) => cow,
            VolumeSlot::Unavailable(reason) => return Err(unavailable(reason)),
        };
        check_range(offset, buffer.len(), cow.size())?;
        cow.read_live(offset, buffer)?;
        // During a resync, chunks it has not reached read from the shadow.
        let Some(resync) = lock_mutex(&self.handle.resync).clone() else {
            return Ok(());
        };
        let pending = resync.pending_in(offset, buffer.len() as u64);
        if pending.is_empty() {
            return Ok(());
        }
        if resync.reads_through_destination() {
            return resync.overlay_pending(Some(&**cow), offset, buffer, &pending);
        }
        // Another volume's shadow is read without this volume's lock (lock order); a write
        // landing meanwhile orders after this read.
        drop(guard);
        resync.overlay_pending(None, offset, buffer, &pending)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        refuse_read_only(self.read_only)?;
        self.change(offset, data.len() as u64, &|engine, cow| {
            engine.write_locked(cow, offset, data, None)
        })
    }

    fn write_zeroes(&self, offset: u64, length: u64, may_punch: bool) -> io::Result<()> {
        refuse_read_only(self.read_only)?;
        if !may_punch {
            return write_zeroes_through(self, offset, length);
        }
        self.change(offset, length, &|engine, cow| {
            engine.punch_locked(cow, offset, length)
        })
    }

    fn flush(&self) -> io::Result<()> {
        match &mut *write_lock(&self.handle.state) {
            VolumeSlot::Ready(cow) => {
                self.engine.flush_locked(&mut **cow)?;
                // The resync's marks of written chunks follow the data they describe.
                if let Some(resync) = lock_mutex(&self.handle.resync).clone() {
                    resync.persist()?;
                }
                Ok(())
            }
            VolumeSlot::Unavailable(reason) => Err(unavailable(reason)),
        }
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn allocation(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
        match &*read_lock(&self.handle.state) {
            VolumeSlot::Ready(cow) => {
                let live = cow.allocation_live(offset, length)?;
                Ok(match lock_mutex(&self.handle.resync).clone() {
                    Some(resync) => resync.allocation(offset, length, live),
                    None => live,
                })
            }
            VolumeSlot::Unavailable(reason) => Err(unavailable(reason)),
        }
    }
}

/// A change of the live volume through the write path.
type VolumeChange<'c> = dyn Fn(&Engine, &mut dyn VolumeProvider) -> Result<(), WriteFailure> + 'c;

impl VolumeDevice {
    /// Runs `change` on `[offset, offset + length)` under the volume's write lock. During a
    /// resync, the chunks it covers only in part are first filled with the shadow's bytes
    /// (read before the lock when they come from another volume), and every pending chunk it
    /// touches is marked written, so the resync never overwrites it.
    fn change(&self, offset: u64, length: u64, change: &VolumeChange<'_>) -> io::Result<()> {
        loop {
            let prefetched = match lock_mutex(&self.handle.resync).clone() {
                Some(resync) if !resync.reads_through_destination() => {
                    resync.fills_for(None, offset, length)?
                }
                _ => BTreeMap::new(),
            };
            let mut guard = write_lock(&self.handle.state);
            let cow = match &mut *guard {
                VolumeSlot::Ready(cow) => cow,
                VolumeSlot::Unavailable(reason) => return Err(unavailable(reason)),
            };
            check_range(
                offset,
                usize::try_from(length).unwrap_or(usize::MAX),
                cow.size(),
            )?;
            let Some(resync) = lock_mutex(&self.handle.resync).clone() else {
                return Ok(change(&self.engine, &mut **cow)?);
            };
            let fills = if resync.reads_through_destination() {
                resync.fills_for(Some(&**cow), offset, length)?
            } else {
                let partial = resync.partial_pending(offset, length);
                if !partial.iter().all(|chunk| prefetched.contains_key(chunk)) {
                    // A resync started since the prefetch: fetch again, unlocked.
                    continue;
                }
                prefetched
            };
            let pending = resync.pending_in(offset, length);
            for (chunk, bytes) in &fills {
                if pending.contains(chunk) {
                    self.engine.write_locked(
                        &mut **cow,
                        resync.chunk_start(*chunk),
                        bytes,
                        None,
                    )?;
                }
            }
            change(&self.engine, &mut **cow)?;
            resync.mark_written(&pending);
            return Ok(());
        }
    }
}

impl Engine {
    /// The live volume, read-write: every write passes the provider.
    pub fn open_volume(&self, volume: VolumeId) -> Result<Arc<dyn BlockDevice>, DeviceError> {
        let handle = self
            .handle(volume)
            .ok_or(DeviceError::VolumeNotFound { volume })?;
        if self.shared.read_only {
            return Err(DeviceError::Unavailable {
                volume,
                reason: "the store is open read-only (check-store changes nothing)".to_string(),
            });
        }
        {
            let mut guard = write_lock(&handle.state);
            match &mut *guard {
                VolumeSlot::Ready(cow) => {
                    self.verify_unchanged(&mut **cow)
                        .map_err(|failure| match failure {
                            WriteFailure::Catalog(error) => DeviceError::Catalog(error),
                            other => DeviceError::Io {
                                volume,
                                source: other.into(),
                            },
                        })?
                }
                VolumeSlot::Unavailable(reason) => {
                    return Err(DeviceError::Unavailable {
                        volume,
                        reason: reason.clone(),
                    })
                }
            }
        }
        let read_only = lock_mutex(&self.shared.catalog)
            .state()
            .volumes
            .get(&volume)
            .is_some_and(|record| record.read_only);
        Ok(Arc::new(VolumeDevice {
            engine: Engine {
                shared: self.shared.clone(),
            },
            handle,
            read_only,
        }))
    }

    // ---- change detection ---------------------------------------------------------------

    /// Compares the image with what diskshadow last left; a difference makes every current
    /// shadow of the volume suspect (durably) and becomes the new baseline.
    pub(super) fn verify_unchanged(
        &self,
        cow: &mut dyn VolumeProvider,
    ) -> Result<(), WriteFailure> {
        self.shared.verify_unchanged(cow)
    }

    /// Drains the write-back buffer after checking the image: the drain's new fingerprint
    /// must not adopt a change made since the last check.
    pub(super) fn drain_checked(&self, cow: &mut dyn VolumeProvider) -> Result<(), WriteFailure> {
        self.verify_unchanged(cow)?;
        cow.drain().map_err(WriteFailure::Io)
    }

    /// Change detection on a shadow read: `fingerprint_seen` is the image's state checked
    /// after the read, under the volume's read lock. Marks the shadows suspect (as
    /// `verify_unchanged`) and returns the error the read fails with.
    pub(super) fn shadow_read_saw_change(
        &self,
        handle: &VolumeHandle,
        shadow: ShadowId,
    ) -> io::Error {
        if let VolumeSlot::Ready(cow) = &mut *write_lock(&handle.state) {
            if let Err(failure) = self.verify_unchanged(&mut **cow) {
                return failure.into();
            }
        }
        io::Error::other(format!(
            "shadow copy {shadow} became suspect: its volume was changed outside diskshadow"
        ))
    }

    /// Change detection for listings. A volume busy with diskshadow's own work (a long revert,
    /// a write) is skipped rather than waited for: listing must stay fast, and the volume is
    /// checked again at its next use.
    pub(super) fn verify_all(&self) {
        for handle in self.handles() {
            if let Ok(mut guard) = handle.state.try_write() {
                if let VolumeSlot::Ready(cow) = &mut *guard {
                    // A failure here shows up again at the next use of the volume.
                    let _ = self.verify_unchanged(&mut **cow);
                }
            }
        }
    }

    /// Records durably, once per flush cycle, that diskshadow is about to change the image.
    fn mark_writing(&self, cow: &mut dyn VolumeProvider) -> Result<(), WriteFailure> {
        self.shared.mark_writing(cow)
    }

    /// Deletes the oldest shadows of a locked volume (diff-area limit), one transaction each.
    pub(super) fn delete_oldest_locked(
        &self,
        cow: &mut dyn VolumeProvider,
        protected: Option<u64>,
    ) -> Result<Option<ShadowInfo>, WriteFailure> {
        let Some(oldest) = cow.oldest_shadow() else {
            return Ok(None);
        };
        if protected == Some(oldest) {
            return Err(WriteFailure::WouldDeleteProtected);
        }
        cow.drain().map_err(WriteFailure::Io)?;
        let mut catalog = lock_mutex(&self.shared.catalog);
        let record = catalog
            .state()
            .shadows_of(cow.volume())
            .into_iter()
            .find(|record| record.sequence == oldest)
            .cloned();
        let info = match &record {
            Some(record) => {
                let info = shadow_info(catalog.state(), record, None);
                catalog
                    .commit(vec![CatalogChange::DeleteShadow(record.id)])
                    .map_err(WriteFailure::Catalog)?;
                Some(info)
            }
            None => None,
        };
        drop(catalog);
        self.delete_in_data_path(cow, oldest)?;
        // The room is needed now: the write waits for the fold that frees it.
        self.fold_all_locked(cow)?;
        Ok(info)
    }

    /// The one write path: marks the image as being written (durably, once per flush cycle),
    /// makes room in the diff area by deleting the oldest shadows when a limit is set, then
    /// writes through the provider.
    pub(super) fn write_locked(
        &self,
        cow: &mut dyn VolumeProvider,
        offset: u64,
        data: &[u8],
        protected: Option<u64>,
    ) -> Result<(), WriteFailure> {
        self.before_change_locked(cow, offset, data.len() as u64, protected)?;
        cow.write(offset, data).map_err(WriteFailure::Io)
    }

    /// Zeros a range of the live volume, punching holes where whole chunks are zeroed; shadows
    /// keep their bytes (see [`CowVolume::punch_hole`]).
    pub(super) fn punch_locked(
        &self,
        cow: &mut dyn VolumeProvider,
        offset: u64,
        length: u64,
    ) -> Result<(), WriteFailure> {
        self.before_change_locked(cow, offset, length, None)?;
        cow.punch_hole(offset, length).map_err(WriteFailure::Io)
    }

    /// What every change of a live volume does first: make room in the diff area for what the
    /// change must preserve, and record that the image is being written when the change can
    /// reach it (a redirected write leaves the image alone).
    fn before_change_locked(
        &self,
        cow: &mut dyn VolumeProvider,
        offset: u64,
        length: u64,
        protected: Option<u64>,
    ) -> Result<(), WriteFailure> {
        // The image must be as diskshadow left it before this write can make a new baseline:
        // otherwise an outside change would be laundered into the fingerprint unnoticed. A
        // change makes the shadows suspect (durably) and the write then goes ahead: the
        // shadows are lost either way, and refusing would only fail the volume's own user
        // (a file system attached over NBD or FUSE turns a failed write into corruption).
        self.verify_unchanged(cow)?;
        let max_bytes = lock_mutex(&self.shared.catalog)
            .state()
            .volumes
            .get(&cow.volume())
            .and_then(|record| record.max_diff_area_bytes);
        if let Some(max_bytes) = max_bytes {
            let needed = cow.bytes_needed(offset, length);
            let used_bytes = cow.used_bytes();
            let mut deleted = Vec::new();
            let mut outcome = Ok(());
            loop {
                let still_needed = cow.bytes_needed(offset, length);
                if still_needed == 0 || cow.used_bytes() + still_needed <= max_bytes {
                    break;
                }
                match self.delete_oldest_locked(cow, protected) {
                    Ok(Some(info)) => deleted.push(info),
                    Ok(None) => break,
                    Err(error) => {
                        outcome = Err(error);
                        break;
                    }
                }
            }
            // Said even when a later step failed: these shadows are gone either way.
            self.record_deletions(
                cow.volume(),
                &deleted,
                DeletionReason::WriteNeededRoom {
                    needed_bytes: needed,
                    used_bytes,
                    max_bytes,
                },
            );
            outcome?;
        }
        // Last: making room may have deleted the shadows that kept the write off the image.
        if cow.write_reaches_image(offset, length) {
            self.mark_writing(cow)?;
        }
        Ok(())
    }

    /// Keeps and announces shadows deleted to fit a diff-area limit.
    pub(super) fn record_deletions(
        &self,
        volume: VolumeId,
        deleted: &[ShadowInfo],
        reason: DeletionReason,
    ) {
        let Some(first) = deleted.first() else {
            return;
        };
        self.shared.deletions.record(
            self.shared.clock.now(),
            volume,
            first.volume.path.clone(),
            deleted.iter().map(|shadow| shadow.id).collect(),
            reason,
        );
    }

    /// Shadows deleted to fit diff-area limits, oldest event first (the newest
    /// [`crate::engine::deletions::KEPT_DELETIONS`]).
    pub fn diff_area_deletions(&self) -> Vec<DiffAreaDeletion> {
        self.shared.deletions.events()
    }

    /// Where each deletion to fit a limit is told as it happens (the service's log).
    pub fn set_deletion_sink(&self, sink: Arc<dyn DeletionSink>) {
        self.shared.deletions.set_sink(sink);
    }

    pub(super) fn flush_locked(&self, cow: &mut dyn VolumeProvider) -> Result<(), WriteFailure> {
        // The fingerprint is never simply re-read here: that would adopt an outside change.
        // Drains refresh it after diskshadow's own writes; anything else is checked first.
        self.verify_unchanged(cow)?;
        cow.flush().map_err(WriteFailure::Io)?;
        if !cow.persisted_clean() {
            lock_mutex(&self.shared.catalog)
                .commit(vec![
                    CatalogChange::SetVolumeState {
                        volume: cow.volume(),
                        fingerprint: Some(cow.fingerprint()),
                        writing: false,
                        size: cow.size(),
                    },
                    // Flushed: every index record is durable.
                    CatalogChange::RecordIndexLog {
                        volume: cow.volume(),
                        bytes: cow.durable_index_bytes(),
                    },
                ])
                .map_err(WriteFailure::Catalog)?;
            cow.set_persisted_clean(true);
        }
        Ok(())
    }

    /// Makes every buffered write of every volume durable.
    pub fn flush(&self) -> io::Result<()> {
        for handle in self.handles() {
            if let VolumeSlot::Ready(cow) = &mut *write_lock(&handle.state) {
                self.flush_locked(&mut **cow)?;
            }
        }
        Ok(())
    }
}
