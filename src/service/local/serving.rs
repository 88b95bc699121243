//! Exposures and attachments: shadows served read-only and live volumes served read-write
//! at a directory, drive letter, share or NBD URL.

use std::path::Path;

use std::path::PathBuf;

use crate::engine::ids::{parse_guid, ShadowId};
use crate::engine::model::{Exposure, ShadowInfo, VolumeInfo};
use crate::engine::vss::VssCode;
use crate::service::error::ServiceError;
use crate::service::exposure::{open_exposure, parse_target};

use super::{coordinator_error, LocalService};

impl LocalService {
    pub(super) fn expose_shadow(
        &mut self,
        shadow_id: ShadowId,
        target: &str,
        base_dir: &Path,
    ) -> Result<Exposure, ServiceError> {
        let Some(shadow) = self.core.engine.shadow(shadow_id) else {
            return Err(
                ServiceError::not_found(format!("shadow copy {shadow_id} was not found"))
                    .with_help("`list shadows all` shows the shadow copies"),
            );
        };
        if !shadow.context.is_persistent()
            || shadow.context == crate::engine::vss::Context::ClientAccessible
        {
            return Err(ServiceError::invalid(format!(
                "shadow copy {shadow_id} was made in the {} context; only persistent shadow copies can be exposed",
                shadow.context.name()
            ))
            .with_code(VssCode::VSS_E_UNSUPPORTED_CONTEXT)
            .with_help("create it after `set context persistent` (or `persistent nowriters`)"));
        }
        let store = self.core.engine.store_dir().to_path_buf();
        let parsed = parse_target(
            target,
            shadow_id,
            base_dir,
            &store,
            &self.core.engine.drive_map(),
        )?;
        let mut exposures = self.core.exposures.lock();
        if exposures.contains(shadow_id) {
            return Err(ServiceError::invalid(format!(
                "shadow copy {shadow_id} is already exposed"
            ))
            .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
            .with_help("`unexpose` it first; `list shadows all` shows where"));
        }
        let device = self.core.shadow_device(shadow_id)?;
        let options = crate::engine::expose::MountOptions::read_only_files(&shadow_id.to_string());
        let (exposure, handle) = open_exposure(
            device,
            parsed,
            true,
            options,
            None,
            "the shadow copy cannot be exposed at",
        )?;
        if let Err(error) = self
            .core
            .coordinator
            .record_exposure(shadow_id, exposure.clone())
        {
            handle.close();
            return Err(coordinator_error(error));
        }
        exposures.insert(shadow_id, exposure.clone(), handle);
        Ok(exposure)
    }

    pub(super) fn take_down_exposure(
        &mut self,
        target: &str,
        base_dir: &Path,
    ) -> Result<ShadowInfo, ServiceError> {
        let shadow_id = match parse_guid(target) {
            Some(uuid) => ShadowId(uuid),
            None => {
                let text = target.trim();
                let resolved = if Path::new(text).is_absolute() {
                    PathBuf::from(text)
                } else {
                    base_dir.join(text)
                };
                let name = match crate::drive_letter::parse(text) {
                    Some(letter) => format!("{letter}:"),
                    None => text.to_string(),
                };
                let found = self.core.exposures.lock().find(&name, &resolved);
                found.ok_or_else(|| {
                    ServiceError::not_found(format!("nothing is exposed at {text}"))
                        .with_help("`list shadows all` shows where shadow copies are exposed")
                })?
            }
        };
        match self
            .core
            .coordinator
            .unexpose(shadow_id)
            .map_err(coordinator_error)?
        {
            Some(_) => self.core.engine.shadow(shadow_id).ok_or_else(|| {
                ServiceError::not_found(format!("shadow copy {shadow_id} was not found"))
            }),
            None => Err(
                ServiceError::not_found(format!("shadow copy {shadow_id} is not exposed"))
                    .with_help("`list shadows all` shows where shadow copies are exposed"),
            ),
        }
    }

    pub(super) fn attach_volume(
        &mut self,
        volume: &str,
        target: &str,
        base_dir: &Path,
    ) -> Result<Exposure, ServiceError> {
        let info = from_engine!(self.core.engine.resolve_volume(volume, base_dir))?;
        let key = info.id;
        let store = self.core.engine.store_dir().to_path_buf();
        let parsed = parse_target(
            target,
            ShadowId(info.id.0),
            base_dir,
            &store,
            &self.core.engine.drive_map(),
        )?;
        let mut attachments = self
            .core
            .attachments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if attachments.contains(key) {
            return Err(ServiceError::invalid(format!(
                "the volume {} is already attached",
                info.display_name()
            ))
            .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
            .with_help("`detach` it first"));
        }
        let device = from_engine!(self.core.engine.open_volume(info.id))?;
        let file_name = info
            .path
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_else(|| "volume.img".to_string());
        let options = crate::engine::expose::MountOptions::image_file(
            &info.id.to_string(),
            &file_name,
            false,
        );
        let (attachment, handle) = open_exposure(
            device,
            parsed,
            false,
            options,
            Some(&file_name),
            "the volume cannot be attached at",
        )?;
        attachments.insert(key, attachment.clone(), handle);
        Ok(attachment)
    }

    pub(super) fn detach_target(
        &mut self,
        target: &str,
        base_dir: &Path,
    ) -> Result<VolumeInfo, ServiceError> {
        let text = target.trim();
        let resolved = if Path::new(text).is_absolute() {
            PathBuf::from(text)
        } else {
            base_dir.join(text)
        };
        let by_volume = self
            .core
            .engine
            .resolve_volume(text, base_dir)
            .ok()
            .map(|volume| volume.id);
        let mut attachments = self
            .core
            .attachments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = by_volume
            .filter(|key| attachments.contains(*key))
            .or_else(|| attachments.find(text, &resolved))
            .ok_or_else(|| {
                ServiceError::not_found(format!("nothing is attached as {text}"))
                    .with_help("`diskshadow volume attachments` lists the attached volumes")
            })?;
        if let Some((_, handle)) = attachments.remove(key) {
            handle.close();
        }
        self.core
            .engine
            .volumes()
            .into_iter()
            .find(|volume| volume.id == key)
            .ok_or_else(|| ServiceError::not_found("the attached volume is no longer registered"))
    }

    pub(super) fn live_attachments(&mut self) -> Result<Vec<(VolumeInfo, Exposure)>, ServiceError> {
        let volumes = self.core.engine.volumes();
        let attachments = self
            .core
            .attachments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(attachments
            .iter()
            .filter_map(|(key, exposure)| {
                volumes
                    .iter()
                    .find(|volume| volume.id == *key)
                    .map(|volume| (volume.clone(), exposure.clone()))
            })
            .collect())
    }
}
