//! Creating shadow sets: the provider commit (one shadow per volume, all at one point in time,
//! one catalog transaction), sets kept in creation until their writers finish, and moving an
//! idle volume to the data path its next shadow needs.

use super::*;

/// A provider of a set being created, with its `(volume, shadow)` members.
type ProviderMembers = (&'static dyn Provider, Vec<(VolumeId, ShadowId)>);

fn data_path_name(kind: DataPathKind) -> &'static str {
    match kind {
        DataPathKind::CopyOnWrite => "copy-on-write",
        DataPathKind::RedirectOnWrite => "redirect-on-write",
    }
}

impl Engine {
    /// The provider commit: one shadow per volume, all at one point in time. O(1) in volume
    /// size, data written and number of existing shadows: one catalog transaction. A full
    /// copy that could not be cloned is left pending ([`ShadowHealth::CopyPending`], served
    /// from its point in time) until [`Engine::complete_full_copies`] makes it after thaw.
    pub fn create_shadow_set(&self, spec: &CreateSpec) -> Result<CreatedSet, CreateError> {
        self.create_shadow_set_with_progress(spec, &NoProgress)
    }

    /// As [`Engine::create_shadow_set`], reporting the progress of full copies (the
    /// copy-on-write commit has nothing long to report).
    pub fn create_shadow_set_with_progress(
        &self,
        spec: &CreateSpec,
        progress: &dyn Progress,
    ) -> Result<CreatedSet, CreateError> {
        self.commit_shadow_set(spec, progress, false)
    }

    /// As [`Engine::create_shadow_set_with_progress`], for a set whose writers still have
    /// their part to play after the commit (thaw, post-snapshot): the shadows are committed
    /// durably but marked in creation, in the same transaction, until
    /// [`Engine::finish_creation`]. If the process dies first, the next open deletes them, so
    /// a crash never leaves a shadow of a set that did not complete.
    pub fn create_shadow_set_in_creation(
        &self,
        spec: &CreateSpec,
        progress: &dyn Progress,
    ) -> Result<CreatedSet, CreateError> {
        self.commit_shadow_set(spec, progress, true)
    }

    /// Keeps a set made by [`Engine::create_shadow_set_in_creation`]: its creation completed.
    pub fn finish_creation(&self, set_id: ShadowSetId) -> Result<(), CreateError> {
        let mut catalog = lock_mutex(&self.shared.catalog);
        let pending = catalog
            .state()
            .shadows
            .values()
            .any(|record| record.set_id == set_id && record.in_creation);
        if pending {
            catalog.commit(vec![CatalogChange::FinishCreation { set_id }])?;
        }
        Ok(())
    }

    fn commit_shadow_set(
        &self,
        spec: &CreateSpec,
        progress: &dyn Progress,
        in_creation: bool,
    ) -> Result<CreatedSet, CreateError> {
        if spec.volumes.is_empty() {
            return Err(CreateError::NoVolumes);
        }
        if spec.volumes.len() > limits::MAX_VOLUMES_PER_SET {
            return Err(CreateError::TooManyVolumes {
                count: spec.volumes.len(),
            });
        }
        let extra = spec.extra_attributes;
        if extra.contains(Attributes::DIFFERENTIAL) && extra.contains(Attributes::PLEX) {
            return Err(CreateError::ConflictingAttributes);
        }
        let mut providers = Vec::with_capacity(spec.volumes.len());
        let mut seen = BTreeSet::new();
        for entry in &spec.volumes {
            if !seen.insert(entry.volume) {
                return Err(CreateError::DuplicateVolume {
                    volume: entry.volume,
                });
            }
            // An explicit provider, else the one chosen for the volume at registration.
            let record = lock_mutex(&self.shared.catalog)
                .state()
                .volumes
                .get(&entry.volume)
                .cloned()
                .ok_or(CreateError::UnknownVolume {
                    volume: entry.volume,
                })?;
            // VSS's choice: an explicit provider, else a hardware provider that supports the
            // volume, else the one chosen at registration, else the system provider.
            let wanted = entry
                .provider
                .or_else(|| self.hardware_provider_for(&record))
                .or(record.provider);
            let provider = provider_by_id(wanted).ok_or(CreateError::UnknownProvider {
                provider: wanted.unwrap_or_else(ProviderId::nil),
            })?;
            if !self.provider_supports(provider, &record) {
                return Err(CreateError::UnsupportedByProvider {
                    volume: entry.volume,
                    provider: provider.id(),
                    what: "any".to_string(),
                });
            }
            let unsupported = extra.0 & provider.unsupported_attributes();
            if unsupported != 0 {
                return Err(CreateError::UnsupportedByProvider {
                    volume: entry.volume,
                    provider: provider.id(),
                    what: Attributes(unsupported).diskshadow_words(),
                });
            }
            providers.push(provider);
        }

        // A volume that changes data path must be idle: a fold a delete left is finished
        // first, before the commit's locks (it writes the image, with progress).
        for (entry, provider) in spec.volumes.iter().zip(&providers) {
            self.fold_before_switch(entry.volume, provider.data_path(), progress)?;
        }
        // Lock every volume of the set (ascending IDs), so no write slips between the shadows.
        let mut handles: Vec<Arc<VolumeHandle>> = Vec::new();
        for volume in &seen {
            handles.push(
                self.handle(*volume)
                    .ok_or(CreateError::UnknownVolume { volume: *volume })?,
            );
        }
        let mut guards: BTreeMap<VolumeId, RwLockWriteGuard<'_, VolumeSlot>> = BTreeMap::new();
        for handle in &handles {
            guards.insert(handle.id, write_lock(&handle.state));
        }
        let data_paths: BTreeMap<VolumeId, DataPathKind> = spec
            .volumes
            .iter()
            .zip(&providers)
            .filter_map(|(entry, provider)| Some((entry.volume, provider.data_path()?)))
            .collect();
        for handle in &handles {
            if let Some(running) = lock_mutex(&handle.resync).as_ref() {
                return Err(CreateError::ResyncInProgress {
                    volume: handle.id,
                    source_shadow: running.shadow,
                });
            }
        }
        for (volume, guard) in guards.iter_mut() {
            let cow = match &mut **guard {
                VolumeSlot::Ready(cow) => cow,
                VolumeSlot::Unavailable(reason) => {
                    return Err(CreateError::VolumeUnavailable {
                        volume: *volume,
                        reason: reason.clone(),
                    })
                }
            };
            // A volume keeps one differential data path at a time: it changes only while
            // the volume has no shadows there and keeps nothing.
            if let Some(wanted) = data_paths.get(volume).copied() {
                if cow.kind() != wanted {
                    if !cow.is_idle() {
                        return Err(CreateError::ProviderConflict {
                            volume: *volume,
                            wanted: data_path_name(wanted),
                            existing: data_path_name(cow.kind()),
                        });
                    }
                    self.switch_data_path(cow, wanted)?;
                }
            }
            self.verify_unchanged(&mut **cow)
                .map_err(|failure| CreateError::from_write(*volume, failure))?;
            // The point in time must be durable before a persistent shadow claims it (VSS
            // flushes the volume before the commit). Syncing clean data costs next to nothing.
            if spec.context.is_persistent() {
                self.flush_locked(&mut **cow)
                    .map_err(|failure| CreateError::from_write(*volume, failure))?;
            } else {
                self.drain_checked(&mut **cow)
                    .map_err(|failure| CreateError::from_write(*volume, failure))?;
            }
            let existing = lock_mutex(&self.shared.catalog)
                .state()
                .shadows
                .values()
                .filter(|record| record.volume == *volume)
                .count();
            if existing >= limits::MAX_SHADOWS_PER_VOLUME {
                return Err(CreateError::TooManyShadows {
                    volume: *volume,
                    limit: limits::MAX_SHADOWS_PER_VOLUME,
                });
            }
        }

        let set_id = spec
            .set_id
            .unwrap_or_else(|| ShadowSetId(self.shared.ids.new_uuid()));
        {
            let catalog = lock_mutex(&self.shared.catalog);
            if spec.context == Context::ClientAccessible {
                for volume in &seen {
                    let count = catalog
                        .state()
                        .shadows
                        .values()
                        .filter(|shadow| {
                            shadow.volume == *volume
                                && shadow.attributes.contains(Attributes::CLIENT_ACCESSIBLE)
                        })
                        .count();
                    if count >= limits::DEFAULT_MAX_CLIENT_ACCESSIBLE {
                        return Err(CreateError::TooManyClientAccessible {
                            volume: *volume,
                            limit: limits::DEFAULT_MAX_CLIENT_ACCESSIBLE,
                        });
                    }
                }
            }
            if catalog
                .state()
                .shadows
                .values()
                .any(|shadow| shadow.set_id == set_id)
            {
                return Err(CreateError::SetIdInUse { set_id });
            }
        }

        // Providers prepare their shadows (full copies are made and synced) before the commit,
        // outside the catalog lock; the volumes stay locked, so everything holds the same
        // point in time.
        let shadow_ids: Vec<ShadowId> = spec
            .volumes
            .iter()
            .map(|_| ShadowId(self.shared.ids.new_uuid()))
            .collect();
        let context = self.provider_context(lock_mutex(&self.shared.catalog).state());
        // Each provider of the set with its members, in first-use order.
        let mut by_provider: Vec<ProviderMembers> = Vec::new();
        for ((entry, provider), shadow) in spec.volumes.iter().zip(&providers).zip(&shadow_ids) {
            match by_provider
                .iter_mut()
                .find(|(known, _)| known.id() == provider.id())
            {
                Some((_, members)) => members.push((entry.volume, *shadow)),
                None => by_provider.push((*provider, vec![(entry.volume, *shadow)])),
            }
        }
        let image_paths: BTreeMap<VolumeId, PathBuf> = context.volume_paths.clone();
        let members_of = |members: &[(VolumeId, ShadowId)]| -> Vec<SetMember<'_>> {
            members
                .iter()
                .filter_map(
                    |(volume, shadow)| match guards.get(volume).map(|guard| &**guard) {
                        Some(VolumeSlot::Ready(cow)) => Some(SetMember {
                            volume: &**cow,
                            shadow: *shadow,
                            set_id,
                            image_path: image_paths.get(volume)?,
                            attributes: spec.context.attributes().with(extra.0),
                        }),
                        _ => None,
                    },
                )
                .collect()
        };
        let abort = |prepared: usize| {
            for (provider, members) in &by_provider[..prepared] {
                provider.abort_set(&context, &members_of(members));
            }
        };
        // Shadows whose copy is made after thaw: they get a point in time in the data path.
        let mut deferred = BTreeSet::new();
        for (position, (provider, members)) in by_provider.iter().enumerate() {
            match provider.prepare_set(&context, &members_of(members), progress) {
                Ok(copies) => deferred.extend(copies),
                Err(source) => {
                    abort(position);
                    return Err(CreateError::Io {
                        volume: members
                            .first()
                            .map_or_else(|| VolumeId(uuid::Uuid::nil()), |member| member.0),
                        source,
                    });
                }
            }
        }

        let mut catalog = lock_mutex(&self.shared.catalog);
        let first_sequence = catalog
            .state()
            .next_sequence
            .max(self.shared.sequence_floor);
        if first_sequence + spec.volumes.len() as u64 > MAX_SEQUENCE {
            drop(catalog);
            abort(by_provider.len());
            return Err(CreateError::SequencesExhausted);
        }
        let first_device = catalog.state().next_device_number;
        let now = self.shared.clock.now();
        let owner = if spec.context.is_persistent() {
            None
        } else {
            Some(spec.requester)
        };
        let mut records = Vec::with_capacity(spec.volumes.len());
        for (position, ((entry, provider), shadow)) in spec
            .volumes
            .iter()
            .zip(&providers)
            .zip(&shadow_ids)
            .enumerate()
        {
            let volume_size = match guards.get(&entry.volume).map(|guard| &**guard) {
                Some(VolumeSlot::Ready(cow)) => cow.size(),
                _ => 0,
            };
            records.push(ShadowRecord {
                id: *shadow,
                set_id,
                original_count: spec.volumes.len() as u32,
                volume: entry.volume,
                volume_size,
                created_at: now,
                sequence: first_sequence + position as u64,
                device_number: first_device + position as u64,
                originating_machine: self.shared.machine_name.clone(),
                service_machine: self.shared.machine_name.clone(),
                exposure: None,
                provider_id: provider.id(),
                attributes: spec
                    .context
                    .attributes()
                    .with(extra.0)
                    .with(provider.attributes().0),
                context: spec.context,
                owner,
                suspect: None,
                in_creation,
                copy_pending: deferred.contains(shadow),
            });
        }
        if let Err(error) = catalog.commit(
            records
                .iter()
                .cloned()
                .map(CatalogChange::AddShadow)
                .collect(),
        ) {
            drop(catalog);
            abort(by_provider.len());
            return Err(error.into());
        }
        for (provider, members) in &by_provider {
            provider.commit_set(&context, &members_of(members));
        }
        for record in &records {
            if data_path_of(record).is_none() && !record.copy_pending {
                continue;
            }
            if let Some(VolumeSlot::Ready(cow)) =
                guards.get_mut(&record.volume).map(|guard| &mut **guard)
            {
                cow.add_shadow(record.sequence);
            }
        }
        let state = catalog.state();
        Ok(CreatedSet {
            set_id,
            shadows: records
                .iter()
                .map(|record| shadow_info(state, record, None))
                .collect(),
        })
    }

    /// Reopens an idle volume (no shadows in its data path, nothing kept) in another data
    /// path, after flushing it.
    fn switch_data_path(
        &self,
        cow: &mut Box<dyn VolumeProvider>,
        kind: DataPathKind,
    ) -> Result<(), CreateError> {
        let volume = cow.volume();
        let record = lock_mutex(&self.shared.catalog)
            .state()
            .volumes
            .get(&volume)
            .cloned()
            .ok_or(CreateError::UnknownVolume { volume })?;
        self.flush_locked(&mut **cow)
            .map_err(|failure| CreateError::from_write(volume, failure))?;
        let mut switched = kind
            .open(
                self.shared.backend.clone(),
                volume,
                &record.path,
                &self.shared.layout.diff_dir(volume),
                record.chunk_size,
                BTreeSet::new(),
                self.shared.write_back_bytes,
                &cow::OpenOptions::default(),
            )
            .map_err(|error| CreateError::Io {
                volume,
                source: match error {
                    DiffAreaError::Io(error) => error,
                    other => io::Error::other(other.to_string()),
                },
            })?;
        switched.set_fingerprint(cow.fingerprint());
        switched.set_persisted_clean(cow.persisted_clean());
        switched.set_suspect_through(cow.suspect_through());
        switched.set_max_diff_bytes(record.max_diff_area_bytes);
        *cow = switched;
        Ok(())
    }

    /// Finishes the fold of a volume without shadows whose next shadow needs another data path.
    fn fold_before_switch(
        &self,
        volume: VolumeId,
        wanted: Option<DataPathKind>,
        progress: &dyn Progress,
    ) -> Result<(), CreateError> {
        let Some(handle) = self.handle(volume) else {
            return Ok(());
        };
        let switching = match &*read_lock(&handle.state) {
            VolumeSlot::Ready(cow) => {
                wanted.is_some_and(|wanted| wanted != cow.kind()) && cow.shadows().is_empty()
            }
            VolumeSlot::Unavailable(_) => false,
        };
        if !switching {
            return Ok(());
        }
        self.fold_stepwise(&handle, progress)
            .map_err(|failure| CreateError::from_write(volume, failure))
    }
}
