//! Volumes: resolving what a user typed (an image path, a drive letter, a volume GUID) to a
//! volume, registering an image (with its chunk size and provider), listing the volumes, and
//! the drive map.

use super::*;
use crate::drive_letter::parse as parse_drive_letter;

fn check_chunk_size(chunk_size: u32) -> bool {
    chunk_size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
}

impl Engine {
    // ---- volumes ------------------------------------------------------------------------

    /// Resolves what a user typed to a volume: an image path (relative to `base_dir`,
    /// registered on first use), a drive letter through the drive map, `\\?\Volume{GUID}\` or
    /// `{GUID}`.
    pub fn resolve_volume(&self, spec: &str, base_dir: &Path) -> Result<VolumeInfo, VolumeError> {
        let text = spec.trim();
        if let Some(letter) = parse_drive_letter(text) {
            let target = lock_mutex(&self.shared.catalog)
                .state()
                .drives
                .get(&letter)
                .cloned();
            return match target {
                None => Err(VolumeError::DriveNotMapped { letter }),
                Some(DriveTarget::Directory(path)) => {
                    Err(VolumeError::DriveIsDirectory { letter, path })
                }
                Some(DriveTarget::Volume(path)) => self.register_volume(&path, None),
            };
        }
        if crate::engine::rbd::file::is_volume_path(Path::new(text)) {
            return self.register_volume(Path::new(text), None);
        }
        // `C:` and more (not the drive's root, handled above): a path inside the drive.
        if let Some(letter) = text.get(..2).and_then(parse_drive_letter) {
            if text.len() > 3 {
                return Err(VolumeError::NotAVolume {
                    spec: spec.to_string(),
                    why: format!("it names a path inside drive {letter}:"),
                });
            }
        }
        let guid_text = text
            .strip_prefix("\\\\?\\Volume")
            .map(|rest| rest.trim_end_matches('\\'))
            .or_else(|| text.starts_with('{').then_some(text));
        if let Some(guid_text) = guid_text {
            let volume =
                parse_guid(guid_text)
                    .map(VolumeId)
                    .ok_or_else(|| VolumeError::NotFound {
                        spec: spec.to_string(),
                    })?;
            let catalog = lock_mutex(&self.shared.catalog);
            let state = catalog.state();
            return state
                .volumes
                .get(&volume)
                .map(|record| volume_info(state, record, None))
                .ok_or_else(|| VolumeError::NotFound {
                    spec: spec.to_string(),
                });
        }
        let path = if Path::new(text).is_absolute() {
            PathBuf::from(text)
        } else {
            base_dir.join(text)
        };
        if !path.exists() {
            if let Some(image) = path.ancestors().skip(1).find(|ancestor| ancestor.is_file()) {
                return Err(VolumeError::NotAVolume {
                    spec: spec.to_string(),
                    why: format!("it names a path inside the image file {}", image.display()),
                });
            }
            return Err(VolumeError::Missing {
                path,
                base: base_dir.to_path_buf(),
            });
        }
        self.register_volume(&path, None)
    }

    /// Registers an image file as a volume (or returns the existing registration).
    pub fn register_volume(
        &self,
        path: &Path,
        chunk_size: Option<u32>,
    ) -> Result<VolumeInfo, VolumeError> {
        self.register_volume_with_provider(path, chunk_size, None)
    }

    /// Registers an image file as a volume whose shadows are made by `provider` unless a
    /// create names another (`volume register --provider`); `None`: the system provider. An
    /// existing registration is returned as it is.
    pub fn register_volume_with_provider(
        &self,
        path: &Path,
        chunk_size: Option<u32>,
        provider: Option<ProviderId>,
    ) -> Result<VolumeInfo, VolumeError> {
        let chosen = provider_by_id(provider).ok_or_else(|| VolumeError::UnknownProvider {
            provider: provider.unwrap_or_else(ProviderId::nil),
        })?;
        let path = if crate::engine::rbd::file::is_volume_path(path) {
            self.check_rbd_volume(path)?
        } else {
            let metadata = std::fs::metadata(path).map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    VolumeError::Missing {
                        path: path.to_path_buf(),
                        base: PathBuf::from("."),
                    }
                } else {
                    VolumeError::Io {
                        action: "inspect",
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
            if metadata.is_dir() {
                return Err(VolumeError::NotRegularFile {
                    path: path.to_path_buf(),
                    kind: "a directory",
                });
            }
            if !metadata.is_file() {
                return Err(VolumeError::NotRegularFile {
                    path: path.to_path_buf(),
                    kind: "a device or special file",
                });
            }
            if metadata.len() > limits::MAX_VOLUME_BYTES {
                return Err(VolumeError::TooLarge {
                    path: path.to_path_buf(),
                    size: metadata.len(),
                });
            }
            path.canonicalize().map_err(|source| VolumeError::Io {
                action: "resolve",
                path: path.to_path_buf(),
                source,
            })?
        };

        let chunk_size = chunk_size.unwrap_or(self.shared.default_chunk_size);
        if !check_chunk_size(chunk_size) {
            return Err(VolumeError::InvalidChunkSize { chunk_size });
        }
        let mut volumes = write_lock(&self.shared.volumes);
        {
            let catalog = lock_mutex(&self.shared.catalog);
            let state = catalog.state();
            if let Some(record) = state.volumes.values().find(|record| record.path == path) {
                return Ok(volume_info(state, record, None));
            }
        }
        if self.shared.read_only {
            return Err(VolumeError::Io {
                action: "register",
                path,
                source: io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the store is open read-only (check-store changes nothing)",
                ),
            });
        }
        let volume = VolumeId(self.shared.ids.new_uuid());
        let diff_dir = self.shared.layout.diff_dir(volume);
        let cow = chosen
            .data_path()
            .unwrap_or(DataPathKind::CopyOnWrite)
            .open(
                self.shared.backend.clone(),
                volume,
                &path,
                &diff_dir,
                chunk_size,
                BTreeSet::new(),
                self.shared.write_back_bytes,
                &cow::OpenOptions::default(),
            )
            .map_err(|error| match error {
                DiffAreaError::Io(error) => error,
                other => io::Error::other(other.to_string()),
            })
            .map_err(|source| VolumeError::Io {
                action: "set up the diff area for",
                path: path.clone(),
                source,
            })?;
        let diff_root = self.shared.layout.diff_root();
        self.shared
            .backend
            .sync_dir(&diff_root)
            .map_err(|source| VolumeError::Io {
                action: "sync",
                path: diff_root.clone(),
                source,
            })?;
        let record = VolumeRecord {
            id: volume,
            path,
            size: cow.size(),
            chunk_size,
            max_diff_area_bytes: None,
            fingerprint: Some(cow.fingerprint()),
            writing: false,
            provider: provider.filter(|id| id.0 != vss::providers::SYSTEM_PROVIDER_ID),
            index_log_bytes: cow.durable_index_bytes(),
            read_only: false,
        };
        let mut catalog = lock_mutex(&self.shared.catalog);
        catalog.commit(vec![CatalogChange::RegisterVolume(record.clone())])?;
        volumes.insert(
            volume,
            Arc::new(VolumeHandle {
                id: volume,
                state: RwLock::new(VolumeSlot::Ready(cow)),
                resync: Mutex::new(None),
            }),
        );
        Ok(volume_info(catalog.state(), &record, None))
    }

    /// The provider chosen for a volume at registration (the system provider unless another
    /// was named); `None` for an unknown volume.
    pub fn volume_provider(&self, volume: VolumeId) -> Option<ProviderId> {
        lock_mutex(&self.shared.catalog)
            .state()
            .volumes
            .get(&volume)
            .map(|record| {
                record
                    .provider
                    .unwrap_or(ProviderId(vss::providers::SYSTEM_PROVIDER_ID))
            })
    }

    /// Registered volumes, in GUID order.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let sizes: BTreeMap<VolumeId, u64> = self
            .handles()
            .iter()
            .filter_map(|handle| match &*read_lock(&handle.state) {
                VolumeSlot::Ready(cow) => Some((handle.id, cow.size())),
                VolumeSlot::Unavailable(_) => None,
            })
            .collect();
        let catalog = lock_mutex(&self.shared.catalog);
        let state = catalog.state();
        state
            .volumes
            .values()
            .map(|record| volume_info(state, record, sizes.get(&record.id).copied()))
            .collect()
    }

    /// Maps a drive letter in the store's drive map (what `C:` means in scripts).
    pub fn map_drive(&self, letter: char, target: DriveTarget) -> Result<(), DriveMapError> {
        if !letter.is_ascii_alphabetic() {
            return Err(DriveMapError::InvalidLetter { letter });
        }
        let target = match target {
            DriveTarget::Volume(path) => DriveTarget::Volume(path.canonicalize().unwrap_or(path)),
            DriveTarget::Directory(path) => {
                DriveTarget::Directory(path.canonicalize().unwrap_or(path))
            }
        };
        lock_mutex(&self.shared.catalog).commit(vec![CatalogChange::MapDrive {
            letter: letter.to_ascii_uppercase(),
            target,
        }])?;
        Ok(())
    }

    pub fn unmap_drive(&self, letter: char) -> Result<(), DriveMapError> {
        let letter = letter.to_ascii_uppercase();
        let mut catalog = lock_mutex(&self.shared.catalog);
        if !catalog.state().drives.contains_key(&letter) {
            return Err(DriveMapError::NotMapped { letter });
        }
        catalog.commit(vec![CatalogChange::UnmapDrive { letter }])?;
        Ok(())
    }

    pub fn drive_map(&self) -> Vec<(char, DriveTarget)> {
        lock_mutex(&self.shared.catalog)
            .state()
            .drives
            .iter()
            .map(|(letter, target)| (*letter, target.clone()))
            .collect()
    }
}
