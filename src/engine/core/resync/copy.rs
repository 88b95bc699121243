//! A resync's run: starting it (or taking a stopped one up), the copy loop with its
//! checkpoints, a stop on request (paused, still reading through) and the end.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::engine::core::{
    data_path_of, lock_mutex, write_lock, Engine, VolumeHandle, VolumeSlot, WriteFailure,
};
use crate::engine::ids::{ShadowId, VolumeId};
use crate::engine::model::ShadowHealth;
use crate::engine::progress::Progress;
use crate::engine::provider::VolumeProvider;
use crate::engine::store::DurableFile;

use super::{
    all_zero, state_path, ActiveResync, ChunkMap, ReopeningShadow, ResyncError, ResyncOutcome,
    ResyncSource, StateHeader, CHECKPOINT_BYTES, RESYNC_DIR,
};

impl Engine {
    /// Copies shadow copy `shadow` onto `destination` (its original volume when `None`):
    /// LUN resync. The destination is usable while it runs (see the module's comment);
    /// `progress` counts bytes and is called with no lock held. A crash resumes it when the
    /// store is opened again. When `progress` says the requester wants it stopped
    /// ([`Progress::cancelled`]), it stops between two chunks with [`ResyncError::Stopped`]:
    /// the destination reads as the shadow, and a resync of the same pair (or the next open)
    /// finishes the copy from where it stopped.
    pub fn resync(
        &self,
        shadow: ShadowId,
        destination: Option<VolumeId>,
        progress: &dyn Progress,
    ) -> Result<ResyncOutcome, ResyncError> {
        let (handle, active) = self.start_resync(shadow, destination)?;
        let outcome = self.run_resync(&handle, &active, progress);
        // Stopped on request between chunks, with the copy durable so far: the destination
        // reads right through the resync, which stays active (paused) for the next resync of
        // the same pair, or the next open, to finish. Any other failure stops it for good.
        if let Some(error) = outcome
            .as_ref()
            .err()
            .filter(|error| !matches!(error, ResyncError::Stopped { .. }))
        {
            self.stop_resync(
                &handle,
                format!(
                    "its resync from shadow copy {shadow} stopped ({error}); part of it holds the \
                     shadow's bytes and part its own, so it is not served until the store is \
                     opened again, which resumes the resync"
                ),
            );
        }
        outcome
    }

    /// A resync that cannot go on: its destination is made unavailable with `reason` (never
    /// served half-copied) and the resync is forgotten in memory; its state file stays for
    /// the next open. This also lets go of the shadow device the resync held, which holds
    /// the engine.
    pub(super) fn stop_resync(&self, handle: &Arc<VolumeHandle>, reason: String) {
        let mut guard = write_lock(&handle.state);
        *guard = VolumeSlot::Unavailable(reason);
        *lock_mutex(&handle.resync) = None;
    }

    /// The resyncs in progress: `(shadow, destination)`.
    pub fn resyncs_in_progress(&self) -> Vec<(ShadowId, VolumeId)> {
        self.handles()
            .iter()
            .filter_map(|handle| {
                let active = lock_mutex(&handle.resync).clone()?;
                Some((active.shadow, active.destination))
            })
            .collect()
    }

    /// For `check`: resync state files no running resync owns (`check-store` opens the store
    /// read-only, so an interrupted resync is still there to report).
    pub(in crate::engine::core) fn unfinished_resyncs(&self) -> Vec<String> {
        let running: Vec<PathBuf> = self
            .handles()
            .iter()
            .filter_map(|handle| Some(lock_mutex(&handle.resync).clone()?.state_path.clone()))
            .collect();
        let Ok(entries) = std::fs::read_dir(self.shared.layout.root.join(RESYNC_DIR)) else {
            return Vec::new();
        };
        let mut problems: Vec<String> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "resync")
            })
            .filter(|path| !running.contains(path))
            .map(|path| {
                format!(
                    "a resync is unfinished ({}); opening the store read-write finishes it",
                    path.display()
                )
            })
            .collect();
        problems.sort();
        problems
    }

    fn start_resync(
        &self,
        shadow: ShadowId,
        destination: Option<VolumeId>,
    ) -> Result<(Arc<VolumeHandle>, Arc<ActiveResync>), ResyncError> {
        let record = lock_mutex(&self.shared.catalog)
            .state()
            .shadows
            .get(&shadow)
            .cloned()
            .ok_or(ResyncError::NotFound { shadow })?;
        if !record.context.is_persistent() {
            return Err(ResyncError::UnsupportedContext {
                shadow,
                context: record.context.name(),
            });
        }
        if let Some(ShadowHealth::Suspect { reason }) = self.shadow(shadow).map(|info| info.health)
        {
            return Err(ResyncError::Suspect { shadow, reason });
        }
        let destination = destination.unwrap_or(record.volume);
        if self.shared.read_only {
            return Err(ResyncError::VolumeUnavailable {
                volume: destination,
                reason: "the store is open read-only (check-store changes nothing)".to_string(),
            });
        }
        let destination_read_only = lock_mutex(&self.shared.catalog)
            .state()
            .volumes
            .get(&destination)
            .is_some_and(|volume| volume.read_only);
        if destination_read_only {
            // A LUN broken off read-only (`break` without `writable`): the resync writes
            // through the engine's own write path, which does not pass the device's check.
            return Err(ResyncError::VolumeUnavailable {
                volume: destination,
                reason: "the volume is read-only (a shadow copy LUN broken off without \
                         `writable`)"
                    .to_string(),
            });
        }
        let handle = self
            .handle(destination)
            .ok_or(ResyncError::DestinationNotFound {
                volume: destination,
            })?;
        let in_data_path = record.volume == destination && data_path_of(&record).is_some();
        let source = if in_data_path {
            ResyncSource::DataPath {
                sequence: record.sequence,
            }
        } else {
            ResyncSource::Device(self.open_shadow(shadow).map_err(|error| {
                ResyncError::VolumeUnavailable {
                    volume: record.volume,
                    reason: error.to_string(),
                }
            })?)
        };
        let mut guard = write_lock(&handle.state);
        let cow = ready(&mut guard, destination)?;
        if let Some(running) = lock_mutex(&handle.resync).as_ref() {
            // A resync of the same pair that a requester stopped is taken up where it
            // stopped; a running one, or one from another shadow, is in the way.
            let ours = running.shadow == shadow
                && running
                    .copying
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
            if ours {
                let running = running.clone();
                // The copy loop reads through a device held open again.
                *lock_mutex(&running.source) = source;
                drop(guard);
                return Ok((handle.clone(), running));
            }
            return Err(ResyncError::InProgress {
                volume: destination,
                shadow: running.shadow,
            });
        }
        let io_error = |source| ResyncError::Io {
            volume: destination,
            source,
        };
        self.drain_checked(&mut **cow)
            .map_err(|failure| write_failure(failure, destination, shadow))?;
        if cow.size() < record.volume_size {
            return Err(ResyncError::TooSmall {
                volume: destination,
                shadow,
                size: cow.size(),
                needed: record.volume_size,
            });
        }
        let chunk_size = cow.chunk_size();
        let size = record.volume_size;
        let chunk_count = size.div_ceil(chunk_size);
        let mut map = ChunkMap::new(chunk_count);
        if in_data_path {
            // A shadow in the volume's own data path differs from it only where the volume
            // was written since: every other chunk already holds the shadow's bytes.
            let changed: std::collections::BTreeSet<u64> = cow
                .chunks_changed_since(record.sequence)
                .into_iter()
                .collect();
            for chunk in (0..chunk_count).filter(|chunk| !changed.contains(chunk)) {
                ChunkMap::set(&mut map.copied, &mut map.dirty, chunk);
            }
        }
        let header = StateHeader {
            shadow,
            destination,
            size,
            chunk_size: chunk_size as u32,
            chunk_count,
        };
        let path = state_path(&self.shared.layout.root, destination);
        let state_file = self
            .write_state_file(&path, &header, &map)
            .map_err(io_error)?;
        map.dirty = None;
        let active = Arc::new(ActiveResync {
            shadow,
            destination,
            chunk_size,
            size,
            chunk_count,
            source: Mutex::new(source),
            map: Mutex::new(map),
            state_file,
            state_path: path,
            copying: std::sync::atomic::AtomicBool::new(true),
        });
        *lock_mutex(&handle.resync) = Some(active.clone());
        drop(guard);
        Ok((handle, active))
    }

    /// Writes a new state file atomically: a temporary file, synced, renamed, the directory
    /// synced.
    fn write_state_file(
        &self,
        path: &Path,
        header: &StateHeader,
        map: &ChunkMap,
    ) -> io::Result<Arc<dyn DurableFile>> {
        let backend = &self.shared.backend;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.shared.layout.root.clone());
        backend.create_dir_all(&dir)?;
        let temporary = path.with_extension("resync.new");
        let file = backend.open_file(&temporary, true)?;
        file.set_len(0)?;
        let mut bytes = header.encode();
        bytes.extend_from_slice(&map.copied);
        bytes.extend_from_slice(&map.written);
        file.write_at(0, &bytes)?;
        file.sync_data()?;
        backend.rename(&temporary, path)?;
        backend.sync_dir(&dir)?;
        drop(file);
        backend.open_file(path, false)
    }

    /// The copy loop: every pending chunk, in order, from the shadow onto the destination.
    pub(super) fn run_resync(
        &self,
        handle: &Arc<VolumeHandle>,
        active: &Arc<ActiveResync>,
        progress: &dyn Progress,
    ) -> Result<ResyncOutcome, ResyncError> {
        let destination = active.destination;
        let shadow = active.shadow;
        let io_error = |source| ResyncError::Io {
            volume: destination,
            source,
        };
        let protected = match active.source() {
            ResyncSource::DataPath { sequence } => Some(sequence),
            ResyncSource::Device(_) => None,
        };
        let checkpoint_chunks = (CHECKPOINT_BYTES.min(active.size / 16) / active.chunk_size).max(1);
        let (mut bytes_copied, mut bytes_punched) = (0u64, 0u64);
        let mut since_checkpoint = 0u64;
        let mut buffer = vec![0u8; active.chunk_size as usize];
        let mut current = vec![0u8; active.chunk_size as usize];
        progress.begin("resync", active.size);
        // Progress in steps of at least a chunk and about 1/1024 of the LUN, so a service
        // sends a bounded number of reports; always with no lock held.
        let report_every = (active.size / 1024).max(active.chunk_size);
        let unreported = std::cell::Cell::new(0u64);
        let report = |bytes: u64| {
            unreported.set(unreported.get() + bytes);
            if unreported.get() >= report_every {
                progress.advance(unreported.get());
                unreported.set(0);
            }
        };
        for chunk in 0..active.chunk_count {
            // Between chunks, with no lock held, is where a requested stop is safe: every
            // chunk is either copied (durable at the checkpoint below) or still read through
            // from the shadow.
            if progress.cancelled() {
                return Err(self.pause_resync(handle, active));
            }
            let (start, length) = active.chunk_range(chunk);
            if !active.is_pending(chunk) {
                report(length as u64);
                continue;
            }
            // A device source is read before the destination is locked (its own volume's
            // lock may be needed); the shadow never changes, so the bytes stay right.
            let mut hole = false;
            if !active.reads_through_destination() {
                hole = active
                    .source_is_hole(None, start, length as u64)
                    .map_err(io_error)?;
                if !hole {
                    active
                        .read_source(None, start, &mut buffer[..length])
                        .map_err(io_error)?;
                }
            }
            {
                let mut guard = write_lock(&handle.state);
                let cow = ready(&mut guard, destination)?;
                // Written since it was looked at: the write wins.
                if active.is_pending(chunk) {
                    if active.reads_through_destination() {
                        hole = active
                            .source_is_hole(Some(&**cow), start, length as u64)
                            .map_err(io_error)?;
                        if !hole {
                            active
                                .read_source(Some(&**cow), start, &mut buffer[..length])
                                .map_err(io_error)?;
                        }
                    }
                    if hole {
                        let live = cow
                            .allocation_live(start, length as u64)
                            .map_err(io_error)?;
                        if !all_zero(&live, start + length as u64) {
                            self.punch_locked(&mut **cow, start, length as u64)
                                .map_err(|failure| write_failure(failure, destination, shadow))?;
                            bytes_punched += length as u64;
                        }
                    } else {
                        // Onto the shadow's own volume a chunk written since the shadow may
                        // hold its bytes again (a resync run before): compare first, as
                        // rewriting it would cost a write and a preserved copy.
                        let same = active.reads_through_destination() && {
                            cow.read_live(start, &mut current[..length])
                                .map_err(io_error)?;
                            current[..length] == buffer[..length]
                        };
                        if !same {
                            self.write_locked(&mut **cow, start, &buffer[..length], protected)
                                .map_err(|failure| write_failure(failure, destination, shadow))?;
                            bytes_copied += length as u64;
                        }
                    }
                    active.mark_copied(chunk);
                    since_checkpoint += 1;
                    if since_checkpoint >= checkpoint_chunks {
                        // Data first, then the marks that describe it.
                        self.flush_locked(&mut **cow)
                            .map_err(|failure| write_failure(failure, destination, shadow))?;
                        active.persist().map_err(io_error)?;
                        since_checkpoint = 0;
                    }
                }
            }
            report(length as u64);
        }
        if unreported.get() > 0 {
            progress.advance(unreported.get());
        }
        let outcome = self.finish_resync(handle, active, bytes_copied, bytes_punched);
        progress.finish();
        outcome
    }

    /// A requested stop between two chunks: the destination's data is flushed, then the marks
    /// that describe it persisted (the module's invariant), and the resync stays active but
    /// no longer copying, so its destination keeps reading through to the shadow. A failure
    /// here is the failure it is, and the destination goes unavailable as for any failure.
    fn pause_resync(&self, handle: &Arc<VolumeHandle>, active: &Arc<ActiveResync>) -> ResyncError {
        let destination = active.destination;
        let shadow = active.shadow;
        let flushed = {
            let mut guard = write_lock(&handle.state);
            match ready(&mut guard, destination) {
                Ok(cow) => self
                    .flush_locked(&mut **cow)
                    .map_err(|failure| write_failure(failure, destination, shadow)),
                Err(error) => Err(error),
            }
        };
        if let Err(error) = flushed.and_then(|()| {
            active.persist().map_err(|source| ResyncError::Io {
                volume: destination,
                source,
            })
        }) {
            return error;
        }
        {
            let mut source = lock_mutex(&active.source);
            if let ResyncSource::Device(device) = &*source {
                *source = ResyncSource::Device(Arc::new(ReopeningShadow {
                    shared: Arc::downgrade(&self.shared),
                    shadow,
                    size: device.size(),
                }));
            }
        }
        active.copying.store(false, Ordering::SeqCst);
        let (copied, written) = active.counts();
        let done = ((copied + written) * active.chunk_size).min(active.size);
        ResyncError::Stopped {
            volume: destination,
            shadow,
            done,
            bytes: active.size,
        }
    }

    /// Makes the destination durable, then forgets the resync (state file removed, durably).
    fn finish_resync(
        &self,
        handle: &Arc<VolumeHandle>,
        active: &Arc<ActiveResync>,
        bytes_copied: u64,
        bytes_punched: u64,
    ) -> Result<ResyncOutcome, ResyncError> {
        let destination = active.destination;
        let io_error = |source| ResyncError::Io {
            volume: destination,
            source,
        };
        let mut guard = write_lock(&handle.state);
        if let VolumeSlot::Ready(cow) = &mut *guard {
            self.flush_locked(&mut **cow)
                .map_err(|failure| write_failure(failure, destination, active.shadow))?;
        }
        active.persist().map_err(io_error)?;
        self.shared
            .backend
            .remove_file(&active.state_path)
            .map_err(io_error)?;
        if let Some(dir) = active.state_path.parent() {
            self.shared.backend.sync_dir(dir).map_err(io_error)?;
        }
        *lock_mutex(&handle.resync) = None;
        let (_, written) = active.counts();
        Ok(ResyncOutcome {
            shadow: active.shadow,
            destination,
            bytes: active.size,
            bytes_copied,
            bytes_punched,
            chunks_written_during: written,
        })
    }
}

/// The destination's provider, or why the destination cannot be written.
fn ready(
    slot: &mut VolumeSlot,
    destination: VolumeId,
) -> Result<&mut Box<dyn VolumeProvider>, ResyncError> {
    match slot {
        VolumeSlot::Ready(cow) => Ok(cow),
        VolumeSlot::Unavailable(reason) => Err(ResyncError::VolumeUnavailable {
            volume: destination,
            reason: reason.clone(),
        }),
    }
}

fn write_failure(failure: WriteFailure, volume: VolumeId, shadow: ShadowId) -> ResyncError {
    match failure {
        WriteFailure::Io(source) => ResyncError::Io { volume, source },
        WriteFailure::Catalog(error) => ResyncError::Catalog(error),
        WriteFailure::WouldDeleteProtected => ResyncError::InsufficientStorage { volume, shadow },
    }
}
