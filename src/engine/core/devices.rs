//! Devices: a shadow copy opened as a `BlockDevice`, what NBD, FUSE and `volume read` serve,
//! reading through its volume's data path (or its own independent copy), and the checks every
//! device shares. The live volume's device (`Engine::open_volume`) is the write path's
//! (`write_path.rs`).

use super::*;

pub(super) fn unavailable(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, reason.to_string())
}

pub(super) fn check_range(offset: u64, length: usize, size: u64) -> io::Result<()> {
    match offset.checked_add(length as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("access past the end of the device ({size} bytes)"),
        )),
    }
}

struct ShadowDevice {
    engine: Engine,
    handle: Arc<VolumeHandle>,
    shadow: ShadowId,
    sequence: u64,
    size: u64,
    /// What an independent shadow (a full copy) is read from, as its provider opened it
    /// (`Provider::open_shadow`); empty for shadows in the volume's data path, and for a full
    /// copy until its copy is complete.
    independent: OnceLock<Arc<dyn crate::engine::store::DurableFile>>,
    /// The shadow was a full copy still being made when the device was opened: it is read
    /// through its point in time until the copy is complete, then from the copy.
    copy_pending: bool,
}

impl ShadowDevice {
    /// The full copy to read from, if the shadow is one and it is complete (opened once).
    fn independent_copy(&self) -> io::Result<Option<Arc<dyn crate::engine::store::DurableFile>>> {
        if let Some(copy) = self.independent.get() {
            return Ok(Some(copy.clone()));
        }
        if !self.copy_pending {
            return Ok(None);
        }
        let record = lock_mutex(&self.engine.shared.catalog)
            .state()
            .shadows
            .get(&self.shadow)
            .cloned();
        let Some(record) = record.filter(|record| !record.copy_pending) else {
            return Ok(None);
        };
        let Some(provider) = provider_of(&record) else {
            return Ok(None);
        };
        let context = self
            .engine
            .provider_context(lock_mutex(&self.engine.shared.catalog).state());
        match provider.open_shadow(&context, &record)? {
            Some(copy) => Ok(Some(self.independent.get_or_init(|| copy).clone())),
            None => Ok(None),
        }
    }

    /// A shadow deleted or made suspect since this device was opened is not served.
    fn still_served(&self, provider: &dyn VolumeProvider) -> io::Result<()> {
        if !provider.shadows().contains(&self.sequence) {
            return Err(unavailable(&format!(
                "shadow copy {} was deleted",
                self.shadow
            )));
        }
        if self.sequence <= provider.suspect_through() {
            return Err(io::Error::other(format!(
                "shadow copy {} became suspect: its volume was changed outside diskshadow",
                self.shadow
            )));
        }
        Ok(())
    }
}

impl BlockDevice for ShadowDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        check_range(offset, buffer.len(), self.size)?;
        if let Some(copy) = self.independent_copy()? {
            return copy.read_exact_or_zero(offset, buffer);
        }
        let read = self.read_through_data_path(offset, buffer);
        // The copy may have completed (and its point in time been released) since the check.
        if read.is_err() && self.copy_pending {
            if let Some(copy) = self.independent_copy()? {
                return copy.read_exact_or_zero(offset, buffer);
            }
        }
        read
    }

    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("shadow copy {} is read-only", self.shadow),
        ))
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        true
    }

    fn allocation(&self, offset: u64, length: u64) -> io::Result<Vec<Extent>> {
        let length = length.min(self.size.saturating_sub(offset));
        let extents_of = |copy: Arc<dyn crate::engine::store::DurableFile>| {
            file_extents(
                offset,
                length,
                |at| copy.next_data(at),
                |at| copy.next_hole(at),
            )
        };
        if let Some(copy) = self.independent_copy()? {
            return extents_of(copy);
        }
        let extents = match &*read_lock(&self.handle.state) {
            VolumeSlot::Ready(cow) => self
                .still_served(cow.as_ref())
                .and_then(|()| cow.allocation_shadow(self.sequence, offset, length)),
            VolumeSlot::Unavailable(reason) => Err(unavailable(reason)),
        };
        if extents.is_err() && self.copy_pending {
            if let Some(copy) = self.independent_copy()? {
                return extents_of(copy);
            }
        }
        extents
    }
}

impl ShadowDevice {
    fn read_through_data_path(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let unchanged = match &*read_lock(&self.handle.state) {
            VolumeSlot::Ready(cow) => {
                self.still_served(cow.as_ref())?;
                cow.read_shadow(self.sequence, offset, buffer)?;
                // Chunks never preserved are read from the live image, exactly where an
                // outside change would leak in. The check comes after the read: a writer's
                // kernel stamps the new time before its bytes land, so bytes changed before
                // (or while) they were read show here. The read lock keeps diskshadow's own
                // writes (which refresh the fingerprint under the write lock) out meanwhile.
                cow.image().fingerprint()? == cow.fingerprint()
            }
            VolumeSlot::Unavailable(reason) => return Err(unavailable(reason)),
        };
        if unchanged {
            return Ok(());
        }
        buffer.fill(0);
        Err(self
            .engine
            .shadow_read_saw_change(&self.handle, self.shadow))
    }
}

impl Engine {
    // ---- devices ------------------------------------------------------------------------

    /// A shadow copy, read-only. A suspect shadow is refused.
    pub fn open_shadow(&self, shadow: ShadowId) -> Result<Arc<dyn BlockDevice>, DeviceError> {
        let info = self
            .shadow(shadow)
            .ok_or(DeviceError::ShadowNotFound { shadow })?;
        if let ShadowHealth::Suspect { reason } = info.health {
            return Err(DeviceError::Suspect { shadow, reason });
        }
        let handle = self
            .handle(info.volume.id)
            .ok_or(DeviceError::VolumeNotFound {
                volume: info.volume.id,
            })?;
        let record = lock_mutex(&self.shared.catalog)
            .state()
            .shadows
            .get(&shadow)
            .cloned()
            .ok_or(DeviceError::ShadowNotFound { shadow })?;
        let context = self.provider_context(lock_mutex(&self.shared.catalog).state());
        // A full copy still being made is read through its point in time until it is done.
        let copy = match provider_of(&record) {
            Some(provider) if !record.copy_pending => provider
                .open_shadow(&context, &record)
                .map_err(|source| DeviceError::Unavailable {
                    volume: record.volume,
                    reason: source.to_string(),
                })?,
            _ => None,
        };
        Ok(Arc::new(ShadowDevice {
            engine: Engine {
                shared: self.shared.clone(),
            },
            handle,
            shadow,
            sequence: info.sequence,
            size: record.volume_size,
            independent: copy.map(OnceLock::from).unwrap_or_default(),
            copy_pending: record.copy_pending,
        }))
    }
}
