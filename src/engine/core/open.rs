//! Opening a store: its lock, the catalog, volatile shadows an earlier process left, the diff
//! areas recovered (a damaged one makes only its volume unavailable), change detection of each
//! image against what the catalog recorded, and an interrupted revert or resync finished.

use super::*;

/// Why the image's state at open (`current`) cannot be diskshadow's own doing, given the
/// fingerprint the catalog recorded and whether diskshadow was in the middle of writing.
///
/// With `writing` clear the image must be exactly as recorded. With `writing` set the service
/// stopped between its own writes and the next recorded fingerprint, so the time differs, but
/// diskshadow writes in place and marks the time after every write (`WRITE_MARK_NS`): its own
/// writes leave the same size and inode and a marked time. Anything else (a kernel time, from
/// a write after diskshadow's last one, typically while the service was down) cannot be proven
/// to be ours, so the shadows are suspect. A crash between one of diskshadow's writes and its
/// mark lands here too: conservative, never silently wrong.
fn unexplained_change(
    recorded: &FileFingerprint,
    current: &FileFingerprint,
    writing: bool,
    write_stamp_ns: Option<i128>,
) -> Option<String> {
    if recorded == current {
        return None;
    }
    if !writing {
        return Some(recorded.describe_change(current));
    }
    // Marked: diskshadow's own last write. Unmarked but within the durable write stamp: a
    // write of diskshadow's cut off by the crash before it could mark the time.
    let within_stamp = write_stamp_ns.is_some_and(|until| current.modified_ns <= until);
    if recorded.size == current.size
        && recorded.inode == current.inode
        && (current.is_write_marked() || within_stamp)
    {
        return None;
    }
    Some(format!(
        "the service stopped while writing and the image then changed ({}); diskshadow \
         cannot prove the change was its own",
        recorded
            .describe_change(current)
            .trim_start_matches("the image was changed outside diskshadow: ")
    ))
}

impl Engine {
    /// Opens (creating if needed) the store at `store_dir`, takes its lock, drops volatile
    /// shadows left by an earlier process, recovers the diff areas and finishes an interrupted
    /// revert.
    ///
    /// A damaged catalog is refused ([`OpenError::Catalog`], naming the file). A damaged diff
    /// area makes its volume unavailable (its shadows are reported as not served, with the
    /// reason naming the file); nothing of it is touched.
    pub fn open(store_dir: &Path, options: EngineOptions) -> Result<Engine, OpenError> {
        Self::open_with(store_dir, options, false)
    }

    /// Opens the store without changing anything on disk, for `check-store`: no recovery is
    /// written (torn appends are ignored, not cut), and every change is refused.
    pub fn open_read_only(store_dir: &Path, options: EngineOptions) -> Result<Engine, OpenError> {
        Self::open_with(store_dir, options, true)
    }

    fn open_with(
        store_dir: &Path,
        options: EngineOptions,
        read_only: bool,
    ) -> Result<Engine, OpenError> {
        let layout = StoreLayout::new(store_dir);
        // `rbd:POOL/IMAGE` volumes open through librbd; every other file through the backend
        // given.
        let rbd_pools = crate::engine::rbd::file::AttachedPools::default();
        let backend: Arc<dyn DurableBackend> = Arc::new(crate::engine::rbd::file::RbdRouting::new(
            options.backend.clone(),
            rbd_pools.clone(),
        ));
        if read_only {
            if !layout.root.is_dir() {
                return Err(OpenError::Io {
                    action: "open the store",
                    path: layout.root.clone(),
                    source: io::Error::new(io::ErrorKind::NotFound, "no such directory"),
                });
            }
        } else {
            for dir in [layout.root.clone(), layout.diff_root()] {
                backend
                    .create_dir_all(&dir)
                    .map_err(|source| OpenError::Io {
                        action: "create the store directory",
                        path: dir.clone(),
                        source,
                    })?;
            }
        }
        // A read-only open of a store without a lock file has nothing to lock (and creates
        // nothing).
        let lock = if read_only && !layout.lock_file().exists() {
            None
        } else {
            Some(
                StoreLock::acquire(&layout.lock_file()).map_err(|failure| match failure {
                    LockFailure::HeldElsewhere => OpenError::Locked {
                        path: layout.root.clone(),
                    },
                    LockFailure::Io(source) => OpenError::Io {
                        action: "lock",
                        path: layout.lock_file(),
                        source,
                    },
                })?,
            )
        };
        let mut catalog = if read_only {
            Catalog::open_read_only(backend.clone(), &layout.catalog_dir())?
        } else {
            Catalog::open(backend.clone(), &layout.catalog_dir())?
        };
        rbd_pools.set(catalog.state().arrays.values());

        // Volatile shadows vanish with the process that made them, and so do shadows whose
        // creation a crash interrupted (their writers never finished thaw and post-snapshot).
        if !read_only {
            let volatile: Vec<CatalogChange> = catalog
                .state()
                .shadows
                .values()
                .filter(|record| !record.context.is_persistent() || record.in_creation)
                .map(|record| CatalogChange::DeleteShadow(record.id))
                .collect();
            catalog.commit(volatile)?;
        }

        // A diff area of a volume the catalog does not know, holding preserved chunks, means
        // the catalog lost its registration (and with it the shadows): refuse rather than
        // serve a store that silently lost them. An empty one is a registration interrupted
        // by a crash.
        for (volume, diff_dir) in diff_areas(&layout) {
            if catalog
                .state()
                .volumes
                .keys()
                .any(|known| known.0.hyphenated().to_string() == volume)
            {
                continue;
            }
            // Read-only, `check` reports it instead.
            if !read_only && diff_area_holds_data(&diff_dir) {
                return Err(OpenError::OrphanedDiffArea {
                    volume,
                    diff_dir,
                    catalog_dir: layout.catalog_dir(),
                });
            }
        }

        let mut volumes = BTreeMap::new();
        let mut state_changes = Vec::new();
        let mut sequence_floor = catalog.state().next_sequence;
        let records: Vec<VolumeRecord> = catalog.state().volumes.values().cloned().collect();
        for record in records {
            let diff_dir = layout.diff_dir(record.id);
            let of_volume = catalog.state().shadows_of(record.id);
            let has_row_shadows = of_volume
                .iter()
                .any(|shadow| data_path_of(shadow) == Some(DataPathKind::RedirectOnWrite));
            let kind = DataPathKind::at_open(&diff_dir, has_row_shadows);
            let shadows: BTreeSet<u64> = of_volume
                .iter()
                .filter(|shadow| in_data_path(shadow, kind))
                .map(|shadow| shadow.sequence)
                .collect();
            let orphans = orphan_files(&diff_dir, catalog.state());
            if !read_only {
                for orphan in &orphans {
                    backend
                        .remove_file(orphan)
                        .map_err(|source| OpenError::DiffArea {
                            volume: record.id,
                            source,
                        })?;
                }
                if !orphans.is_empty() {
                    backend
                        .sync_dir(&diff_dir)
                        .map_err(|source| OpenError::DiffArea {
                            volume: record.id,
                            source,
                        })?;
                }
            }
            let slot = if !record.path.is_file()
                && !crate::engine::rbd::file::is_volume_path(&record.path)
            {
                VolumeSlot::Unavailable(format!(
                    "the image file {} is missing",
                    record.path.display()
                ))
            } else {
                let opened = kind.open(
                    backend.clone(),
                    record.id,
                    &record.path,
                    &diff_dir,
                    record.chunk_size,
                    shadows,
                    options.write_back_bytes,
                    &cow::OpenOptions {
                        read_only,
                        recorded_index_bytes: record.index_log_bytes,
                        sequence_limit: Some(catalog.state().next_sequence),
                        recorded_clean: !record.writing,
                    },
                );
                match opened {
                    Err(DiffAreaError::Corrupt { path, detail }) => {
                        VolumeSlot::Unavailable(format!(
                        "its diff area is damaged: {}: {detail}; the volume and its shadow copies \
                         are not served and nothing of the diff area was changed (run \
                         `diskshadow check-store`, restore the store from a backup)",
                        path.display()
                    ))
                    }
                    Err(DiffAreaError::Io(source)) => {
                        return Err(OpenError::DiffArea {
                            volume: record.id,
                            source,
                        })
                    }
                    Ok(mut cow) => {
                        if cow.index_rewrite_wanted() {
                            // The log shrinks: the catalog forgets its recorded length first.
                            catalog.commit(vec![CatalogChange::RecordIndexLog {
                                volume: record.id,
                                bytes: None,
                            }])?;
                            cow.rewrite_index_log()
                                .map_err(|source| OpenError::DiffArea {
                                    volume: record.id,
                                    source,
                                })?;
                        }
                        Self::recover_volume_state(
                            &record,
                            &mut *cow,
                            catalog.state(),
                            &mut state_changes,
                        );
                        sequence_floor =
                            sequence_floor.max(cow.max_tag().map_or(0, |tag| u64::from(tag) + 1));
                        VolumeSlot::Ready(cow)
                    }
                }
            };
            volumes.insert(
                record.id,
                Arc::new(VolumeHandle {
                    id: record.id,
                    state: RwLock::new(slot),
                    resync: Mutex::new(None),
                }),
            );
        }
        if !read_only {
            catalog.commit(state_changes)?;
        }
        // Provider recovery that writes the image (folding redirected chunks no shadow needs
        // apart), after change detection and with the image marked as being written.
        for (id, handle) in volumes.iter().filter(|_| !read_only) {
            if let VolumeSlot::Ready(cow) = &mut *write_lock(&handle.state) {
                if !cow.needs_recovery() {
                    continue;
                }
                let state_change = |cow: &dyn VolumeProvider, writing| {
                    vec![CatalogChange::SetVolumeState {
                        volume: *id,
                        fingerprint: Some(cow.fingerprint()),
                        writing,
                        size: cow.size(),
                    }]
                };
                catalog.commit(state_change(&**cow, true))?;
                cow.recover().map_err(|source| OpenError::DiffArea {
                    volume: *id,
                    source,
                })?;
                catalog.commit(state_change(&**cow, false))?;
            }
        }
        let reverts = if read_only {
            Vec::new()
        } else {
            catalog.state().reverts_in_progress.clone()
        };

        let engine = Engine {
            shared: Arc::new(Shared {
                layout,
                clock: options.clock,
                ids: options.ids,
                machine_name: options.machine_name,
                default_chunk_size: options.default_chunk_size,
                backend,
                rbd_pools,
                write_back_bytes: options.write_back_bytes,
                catalog: Mutex::new(catalog),
                volumes: RwLock::new(volumes),
                sequence_floor,
                deletions: DeletionLog::open(store_dir),
                read_only,
                folds: Arc::new(Folds::new(
                    options.background_folds && !read_only,
                    options.fold_step_chunks,
                )),
                copies_running: Mutex::default(),
                _lock: lock,
            }),
        };
        for revert in reverts {
            let exists = lock_mutex(&engine.shared.catalog)
                .state()
                .shadows
                .contains_key(&revert.shadow);
            if exists {
                engine
                    .revert(revert.shadow, &NoProgress)
                    .map_err(|error| OpenError::Revert(Box::new(error)))?;
            } else {
                lock_mutex(&engine.shared.catalog).commit(vec![CatalogChange::RevertFinished {
                    volume: revert.volume,
                }])?;
            }
        }
        if !read_only {
            engine
                .resume_resyncs()
                .map_err(|(path, source)| OpenError::Io {
                    action: "finish the interrupted resync recorded in",
                    path,
                    source,
                })?;
        }
        Ok(engine)
    }

    /// Open-time change detection of one volume: marks its shadows suspect when the image
    /// changed outside diskshadow, and queues the recording of its current state.
    fn recover_volume_state(
        record: &VolumeRecord,
        cow: &mut dyn VolumeProvider,
        state: &CatalogState,
        state_changes: &mut Vec<CatalogChange>,
    ) {
        cow.set_max_diff_bytes(record.max_diff_area_bytes);
        if let Some(recorded) = record.fingerprint {
            if let Some(reason) = unexplained_change(
                &recorded,
                &cow.fingerprint(),
                record.writing,
                cow.write_stamp_until(),
            ) {
                state_changes.push(CatalogChange::MarkSuspect {
                    volume: record.id,
                    reason,
                });
                cow.set_suspect_through(cow.newest_shadow().unwrap_or(0));
            }
        }
        if record.fingerprint != Some(cow.fingerprint())
            || record.writing
            || record.size != cow.size()
        {
            state_changes.push(CatalogChange::SetVolumeState {
                volume: record.id,
                fingerprint: Some(cow.fingerprint()),
                writing: false,
                size: cow.size(),
            });
        }
        let durable_index_bytes = cow.durable_index_bytes();
        if durable_index_bytes.is_some() && record.index_log_bytes != durable_index_bytes {
            state_changes.push(CatalogChange::RecordIndexLog {
                volume: record.id,
                bytes: durable_index_bytes,
            });
        }
        let suspect_through = state
            .shadows_of(record.id)
            .iter()
            .filter(|shadow| shadow.suspect.is_some())
            .map(|shadow| shadow.sequence)
            .max()
            .unwrap_or(0);
        cow.set_suspect_through(cow.suspect_through().max(suspect_through));
    }
}
