//! Arrays: hardware shadow copies and their transport. Attaching and detaching an array,
//! the provider context a hardware provider works in, importing a transportable set, masking
//! it, and breaking a set into writable (or read-only) volumes.

use super::*;

impl Engine {
    // ---- arrays: hardware shadow copies, transport, import, mask, break ------------------

    pub(super) fn provider_context(&self, state: &CatalogState) -> ProviderContext<'_> {
        ProviderContext {
            backend: &*self.shared.backend,
            layout: &self.shared.layout,
            volume_paths: state
                .volumes
                .values()
                .map(|record| (record.id, record.path.clone()))
                .collect(),
            shadow_sets: state
                .shadows
                .values()
                .map(|record| (record.id, record.set_id))
                .collect(),
            rbd_pools: state
                .arrays
                .values()
                .filter_map(|attachment| attachment.rbd.clone())
                .map(|pool| (pool.pool.clone(), pool))
                .collect(),
        }
    }

    /// This store as a host of an array.
    fn array_host(&self) -> ArrayHost {
        ArrayHost {
            machine: self.shared.machine_name.clone(),
            store: self.shared.layout.root.clone(),
        }
    }

    /// The attached array holding `path`: its name in this store and its directory.
    fn attached_array_of(state: &CatalogState, path: &Path) -> Option<(String, PathBuf)> {
        if state.arrays.is_empty() {
            return None;
        }
        // An RBD volume `rbd:POOL/IMAGE` is in the pool attached as `rbd:POOL`.
        let root = array::array_root_of(path).or_else(|| {
            path.to_str()?
                .starts_with("rbd:")
                .then(|| path.parent().map(Path::to_path_buf))?
        })?;
        state
            .arrays
            .iter()
            .find(|(_, attachment)| attachment.path == root)
            .map(|(name, attachment)| (name.clone(), attachment.path.clone()))
    }

    /// Whether `provider` can shadow the volume here: a hardware provider only the LUNs of an
    /// array attached to this store.
    pub(super) fn provider_supports(&self, provider: &dyn Provider, record: &VolumeRecord) -> bool {
        provider.supports(record)
            && (provider.info().kind != ProviderKind::Hardware
                || Self::attached_array_of(lock_mutex(&self.shared.catalog).state(), &record.path)
                    .is_some())
    }

    /// The hardware provider VSS chooses for a volume named without a provider.
    pub(super) fn hardware_provider_for(&self, record: &VolumeRecord) -> Option<ProviderId> {
        if lock_mutex(&self.shared.catalog).state().arrays.is_empty() {
            return None;
        }
        providers()
            .into_iter()
            .find(|provider| {
                provider.info().kind == ProviderKind::Hardware
                    && self.provider_supports(*provider, record)
            })
            .map(|provider| provider.id())
    }

    /// Attaches this store to the array at `dir` (making the directory an array if it is not
    /// one yet) under `name` (default: the array's own name).
    pub fn attach_array(
        &self,
        dir: &Path,
        name: Option<&str>,
    ) -> Result<ArrayInfo, ArrayAttachError> {
        let root = dir
            .canonicalize()
            .ok()
            .filter(|root| root.is_dir())
            .ok_or_else(|| ArrayError::NotADirectory {
                path: dir.to_path_buf(),
            })?;
        let existing = array::read(&root).ok();
        let name = match (name, &existing) {
            (Some(name), _) => name.to_string(),
            (None, Some(catalog)) => catalog.name.clone(),
            (None, None) => root
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| "array".to_string()),
        };
        if !array::valid_name(&name) {
            return Err(ArrayAttachError::InvalidName { name });
        }
        {
            let catalog = lock_mutex(&self.shared.catalog);
            let state = catalog.state();
            if let Some((known, _)) = state.arrays.iter().find(|(_, known)| known.path == root) {
                return Err(ArrayAttachError::AlreadyAttached {
                    name: known.clone(),
                    path: root,
                });
            }
            if let Some(known) = state.arrays.get(&name) {
                return Err(ArrayAttachError::NameInUse {
                    name,
                    path: known.path.clone(),
                });
            }
        }
        let catalog =
            array::attach_host(&root, &name, self.shared.ids.new_uuid(), self.array_host())?;
        let attachment = ArrayAttachment {
            id: catalog.id,
            path: root.clone(),
            rbd: None,
        };
        let committed = lock_mutex(&self.shared.catalog).commit(vec![CatalogChange::AttachArray {
            name: name.clone(),
            attachment,
        }]);
        if let Err(error) = committed {
            let _ = array::detach_host(&root, &self.array_host());
            return Err(error.into());
        }
        Ok(array::array_info(&name, &root, Ok(catalog)))
    }

    /// Detaches this store from an array. Refused while this store has shadows on its LUNs.
    pub fn detach_array(&self, name: &str) -> Result<(), ArrayAttachError> {
        let mut catalog = lock_mutex(&self.shared.catalog);
        let state = catalog.state();
        let attachment =
            state
                .arrays
                .get(name)
                .cloned()
                .ok_or_else(|| ArrayAttachError::NotAttached {
                    name: name.to_string(),
                })?;
        let count = state
            .shadows
            .values()
            .filter(|record| {
                state
                    .volumes
                    .get(&record.volume)
                    .is_some_and(|volume| match &attachment.rbd {
                        Some(pool) => rbd::volume_in_pool(&volume.path, &pool.pool),
                        None => {
                            array::array_root_of(&volume.path).as_deref() == Some(&*attachment.path)
                        }
                    })
                    && provider_of(record)
                        .is_some_and(|provider| provider.info().kind == ProviderKind::Hardware)
            })
            .count();
        if count > 0 {
            return Err(ArrayAttachError::InUse {
                name: name.to_string(),
                count,
            });
        }
        catalog.commit(vec![CatalogChange::DetachArray {
            name: name.to_string(),
        }])?;
        self.shared.rbd_pools.set(catalog.state().arrays.values());
        drop(catalog);
        // The array may be gone (shared storage unmounted): this store is detached anyway.
        let _ = array::detach_host(&attachment.path, &self.array_host());
        Ok(())
    }

    /// The arrays this store is attached to, each with what its catalog says now.
    pub fn arrays(&self) -> Vec<ArrayInfo> {
        let attached = lock_mutex(&self.shared.catalog).state().arrays.clone();
        attached
            .iter()
            .map(|(name, attachment)| match &attachment.rbd {
                Some(pool) => self.rbd_array_info(name, attachment.id, pool),
                None => array::array_info(name, &attachment.path, array::read(&attachment.path)),
            })
            .collect()
    }

    /// An array shadow's LUNs: the original LUN and the shadow LUN (the clone), both as this
    /// host reaches them (`None`: not an array shadow of this store).
    pub fn shadow_lun(&self, shadow: ShadowId) -> Option<ShadowLun> {
        let catalog = lock_mutex(&self.shared.catalog);
        let state = catalog.state();
        let record = state.shadows.get(&shadow)?;
        let volume = state.volumes.get(&record.volume)?;
        let (array_name, root) = Self::attached_array_of(state, &volume.path)?;
        let entry = array::read(&root).ok()?.shadows.get(&shadow).cloned()?;
        Some(ShadowLun {
            array_name,
            original: array::inside(&root, &entry.lun).ok()?,
            clone: array::inside(&root, &entry.clone).ok()?,
            volume: record.volume,
            size: entry.size,
        })
    }

    /// `import`: surfaces the transportable shadows of a metadata cabinet on this store, from
    /// the arrays it is attached to. Each LUN is registered as a volume of this store if it is
    /// not one yet; the shadows get the `Imported` attribute. All or nothing.
    pub fn import_shadows(
        &self,
        cabinet: &MetadataCabinet,
    ) -> Result<Vec<ShadowInfo>, ImportError> {
        let attached = lock_mutex(&self.shared.catalog).state().arrays.clone();
        // Each shadow with its LUN (the volume it is a shadow of), size and array (`None`: a
        // provider that finds its shadows itself, such as the Ceph RBD provider).
        let mut found: Vec<(ShadowId, PathBuf, u64, Option<PathBuf>)> = Vec::new();
        for shadow in &cabinet.shadows {
            if !provider_by_id(Some(shadow.provider_id))
                .is_some_and(|provider| provider.transportable())
            {
                return Err(ImportError::NotHardware {
                    shadow: shadow.shadow_id,
                    provider: shadow.provider_id,
                });
            }
            if lock_mutex(&self.shared.catalog)
                .state()
                .shadows
                .contains_key(&shadow.shadow_id)
            {
                return Err(ImportError::AlreadyImported {
                    shadow: shadow.shadow_id,
                });
            }
            if let Some(provider) = provider_by_id(Some(shadow.provider_id))
                .filter(|provider| provider.finds_own_shadows())
            {
                let context = self.provider_context(lock_mutex(&self.shared.catalog).state());
                let (volume, size) = provider
                    .find_transported(&context, shadow, cabinet.snapshot_set_id)
                    .map_err(|reason| ImportError::NotFound {
                        shadow: shadow.shadow_id,
                        reason,
                    })?;
                found.push((shadow.shadow_id, volume, size, None));
                continue;
            }
            let mut holder = None;
            for attachment in attached
                .values()
                .filter(|attachment| attachment.rbd.is_none())
            {
                let catalog = array::read(&attachment.path)?;
                if let Some(entry) = catalog.shadows.get(&shadow.shadow_id) {
                    holder = Some((attachment.path.clone(), entry.clone()));
                    break;
                }
            }
            let (root, entry) = holder.ok_or_else(|| ImportError::NotInAttachedArray {
                shadow: shadow.shadow_id,
                attached: if attached.is_empty() {
                    "none".to_string()
                } else {
                    attached.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })?;
            if !entry.transportable {
                return Err(ImportError::NotTransportable {
                    shadow: shadow.shadow_id,
                });
            }
            let clone = array::inside(&root, &entry.clone)?;
            if !clone.is_file() {
                return Err(ImportError::CloneMissing {
                    shadow: shadow.shadow_id,
                    path: clone,
                });
            }
            let lun = array::inside(&root, &entry.lun)?;
            found.push((shadow.shadow_id, lun, entry.size, Some(root)));
        }
        // The LUNs become volumes of this store (an existing registration is kept).
        let mut volumes = Vec::with_capacity(found.len());
        for (_, lun, _, _) in &found {
            let volume = self
                .register_volume(lun, None)
                .map_err(|error| ImportError::Lun {
                    path: lun.clone(),
                    reason: error.to_string(),
                })?;
            volumes.push(volume.id);
        }
        let context = if cabinet.backup_components.is_some() {
            Context::Persistent
        } else {
            Context::PersistentNoWriters
        };
        let mut catalog = lock_mutex(&self.shared.catalog);
        // Checked again under the catalog lock: two imports of one set may race.
        if let Some((shadow, _, _, _)) = found
            .iter()
            .find(|(shadow, _, _, _)| catalog.state().shadows.contains_key(shadow))
        {
            return Err(ImportError::AlreadyImported { shadow: *shadow });
        }
        let first_sequence = catalog
            .state()
            .next_sequence
            .max(self.shared.sequence_floor);
        let first_device = catalog.state().next_device_number;
        let now = self.shared.clock.now();
        let records: Vec<ShadowRecord> = found
            .iter()
            .zip(&volumes)
            .enumerate()
            .map(|(position, ((shadow, _, size, _), volume))| {
                let provider_attributes = cabinet
                    .shadows
                    .iter()
                    .find(|manifest| manifest.shadow_id == *shadow)
                    .and_then(|manifest| provider_by_id(Some(manifest.provider_id)))
                    .map_or(0, |provider| provider.attributes().0);
                ShadowRecord {
                    id: *shadow,
                    set_id: cabinet.snapshot_set_id,
                    original_count: cabinet.shadows.len() as u32,
                    volume: *volume,
                    volume_size: *size,
                    created_at: now,
                    sequence: first_sequence + position as u64,
                    device_number: first_device + position as u64,
                    originating_machine: cabinet.machine_name.clone(),
                    service_machine: self.shared.machine_name.clone(),
                    exposure: None,
                    provider_id: cabinet
                        .shadows
                        .iter()
                        .find(|manifest| manifest.shadow_id == *shadow)
                        .map_or_else(ProviderId::nil, |manifest| manifest.provider_id),
                    attributes: context
                        .attributes()
                        .with(Attributes::TRANSPORTABLE | Attributes::IMPORTED)
                        .with(provider_attributes),
                    context,
                    owner: None,
                    suspect: None,
                    in_creation: false,
                    copy_pending: false,
                }
            })
            .collect();
        catalog.commit(
            records
                .iter()
                .cloned()
                .map(CatalogChange::AddShadow)
                .collect(),
        )?;
        let infos: Vec<ShadowInfo> = records
            .iter()
            .map(|record| shadow_info(catalog.state(), record, None))
            .collect();
        drop(catalog);
        // The arrays learn who imported what; if one cannot be told, the import is undone.
        let host = self.array_host();
        for (shadow, _, _, root) in &found {
            let Some(root) = root else {
                continue;
            };
            let told = array::update(root, |array_catalog| {
                if let Some(entry) = array_catalog.shadows.get_mut(shadow) {
                    if !entry.imported_by.contains(&host) {
                        entry.imported_by.push(host.clone());
                    }
                }
                Ok::<(), ArrayError>(())
            });
            if let Err(error) = told {
                let _ = lock_mutex(&self.shared.catalog).commit(
                    records
                        .iter()
                        .map(|record| CatalogChange::DeleteShadow(record.id))
                        .collect(),
                );
                return Err(error.into());
            }
        }
        Ok(infos)
    }

    /// The shadows of a set, for `mask` / `break`: each must be imported and not exposed.
    fn imported_set(
        &self,
        state: &CatalogState,
        set_id: ShadowSetId,
        command: &'static str,
    ) -> Result<Vec<(ShadowRecord, Option<PathBuf>)>, ImportedSetError> {
        let records: Vec<ShadowRecord> = state
            .shadows
            .values()
            .filter(|record| record.set_id == set_id)
            .cloned()
            .collect();
        if records.is_empty() {
            return Err(ImportedSetError::SetNotFound { set_id });
        }
        records
            .into_iter()
            .map(|record| {
                if !record.attributes.contains(Attributes::IMPORTED) {
                    return Err(ImportedSetError::NotImported {
                        shadow: record.id,
                        command,
                    });
                }
                if record.exposure.is_some() {
                    return Err(ImportedSetError::Exposed { shadow: record.id });
                }
                // A provider that finds its shadows itself (in a Ceph cluster, not an array
                // directory).
                if provider_of(&record).is_some_and(|provider| provider.finds_own_shadows()) {
                    return Ok((record, None));
                }
                let root = state
                    .volumes
                    .get(&record.volume)
                    .and_then(|volume| Self::attached_array_of(state, &volume.path))
                    .map(|(_, root)| root)
                    .ok_or(ImportedSetError::NoArray { shadow: record.id })?;
                Ok((record, Some(root)))
            })
            .collect()
    }

    /// `mask`: removes an imported set's shadows from this store; their shadow LUNs stay in
    /// the array (another host may have them imported).
    pub fn mask_set(&self, set_id: ShadowSetId) -> Result<Vec<ShadowInfo>, ImportedSetError> {
        let mut catalog = lock_mutex(&self.shared.catalog);
        let members = self.imported_set(catalog.state(), set_id, "mask")?;
        let infos: Vec<ShadowInfo> = members
            .iter()
            .map(|(record, _)| shadow_info(catalog.state(), record, None))
            .collect();
        catalog.commit(
            members
                .iter()
                .map(|(record, _)| CatalogChange::DeleteShadow(record.id))
                .collect(),
        )?;
        drop(catalog);
        let host = self.array_host();
        for (record, root) in &members {
            let Some(root) = root else {
                continue;
            };
            array::update(root, |array_catalog| {
                if let Some(entry) = array_catalog.shadows.get_mut(&record.id) {
                    entry.imported_by.retain(|known| *known != host);
                }
                Ok::<(), ArrayError>(())
            })?;
        }
        Ok(infos)
    }

    /// A transportable set just made here is not surfaced on this host: its shadows leave
    /// this store's catalog, their shadow LUNs stay in the array for `import`.
    pub fn unsurface_transportable_set(&self, set_id: ShadowSetId) -> Result<(), CatalogError> {
        let mut catalog = lock_mutex(&self.shared.catalog);
        let changes: Vec<CatalogChange> = catalog
            .state()
            .shadows
            .values()
            .filter(|record| {
                record.set_id == set_id
                    && record.attributes.contains(Attributes::TRANSPORTABLE)
                    && provider_of(record).is_some_and(|provider| provider.transportable())
            })
            .map(|record| CatalogChange::DeleteShadow(record.id))
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        catalog.commit(changes)
    }

    /// `break [writable]`: an imported set's shadow LUNs leave VSS management and become
    /// ordinary LUNs of their array, registered as volumes of this store under new volume IDs
    /// (read-only unless `writable`).
    pub fn break_set(
        &self,
        set_id: ShadowSetId,
        writable: bool,
        progress: &dyn Progress,
    ) -> Result<Vec<VolumeInfo>, ImportedSetError> {
        let members = {
            let catalog = lock_mutex(&self.shared.catalog);
            self.imported_set(catalog.state(), set_id, "break")?
        };
        let mut volumes = Vec::with_capacity(members.len());
        for (record, root) in &members {
            let Some(root) = root else {
                volumes.push(self.break_own_shadow(record, writable, progress)?);
                continue;
            };
            let clone = array::clone_path(root, record.id);
            let lun = array::broken_lun_path(root, record.id);
            // The shadow LUN is renamed to an ordinary LUN (durably), then the array and this
            // store forget the shadow. A crash in between leaves a shadow whose LUN is gone,
            // which `check` reports; never a LUN two owners write.
            let backend = &self.shared.backend;
            let moved = backend
                .create_dir_all(lun.parent().unwrap_or(root))
                .and_then(|()| backend.rename(&clone, &lun))
                .and_then(|()| backend.sync_dir(lun.parent().unwrap_or(root)))
                .and_then(|()| backend.sync_dir(clone.parent().unwrap_or(root)));
            moved.map_err(|source| ImportedSetError::Io {
                path: clone.clone(),
                source,
            })?;
            array::update(root, |array_catalog| {
                array_catalog.shadows.remove(&record.id);
                Ok::<(), ArrayError>(())
            })?;
            lock_mutex(&self.shared.catalog)
                .commit(vec![CatalogChange::DeleteShadow(record.id)])?;
            volumes.push(self.register_broken_lun(&lun, writable)?);
        }
        Ok(volumes)
    }

    /// A shadow LUN broken off becomes a volume of this store, read-only unless `writable`.
    fn register_broken_lun(
        &self,
        lun: &Path,
        writable: bool,
    ) -> Result<VolumeInfo, ImportedSetError> {
        let volume = self
            .register_volume(lun, None)
            .map_err(|error| ImportedSetError::Volume {
                path: lun.to_path_buf(),
                reason: error.to_string(),
            })?;
        if !writable {
            let mut catalog = lock_mutex(&self.shared.catalog);
            if let Some(mut volume_record) = catalog.state().volumes.get(&volume.id).cloned() {
                volume_record.read_only = true;
                catalog.commit(vec![CatalogChange::RegisterVolume(volume_record)])?;
            }
        }
        Ok(volume)
    }

    /// `break` of a shadow whose provider breaks it off itself (the Ceph RBD provider: a new
    /// image holding the snapshot): the shadow leaves this store, its provider removes it,
    /// and the new volume is registered.
    fn break_own_shadow(
        &self,
        record: &ShadowRecord,
        writable: bool,
        progress: &dyn Progress,
    ) -> Result<VolumeInfo, ImportedSetError> {
        let context = self.provider_context(lock_mutex(&self.shared.catalog).state());
        let provider =
            provider_of(record).ok_or(ImportedSetError::NoArray { shadow: record.id })?;
        let image = provider
            .break_off(&context, record, progress)
            .map_err(|source| ImportedSetError::Volume {
                path: context.volume_path(record.volume).unwrap_or_default(),
                reason: source.to_string(),
            })?;
        // The new image exists before the shadow is forgotten: a crash in between leaves a
        // shadow and an extra image, never a lost point in time.
        lock_mutex(&self.shared.catalog).commit(vec![CatalogChange::DeleteShadow(record.id)])?;
        let context = self.provider_context(lock_mutex(&self.shared.catalog).state());
        provider
            .remove_shadow(&context, record)
            .map_err(|source| ImportedSetError::Io {
                path: image.clone(),
                source,
            })?;
        self.register_broken_lun(&image, writable)
    }
}
