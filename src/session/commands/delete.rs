//! `delete shadows all|set|id|volume|oldest|exposed`.

use super::super::render;
use super::super::{CommandError, Session};
use crate::service::ids::{parse_guid, ShadowId};
use crate::service::model::{DeleteSelector, ExposureKind, ShadowInfo};
use crate::service::vss::VssCode;
use crate::syntax::ast::DeleteShadows;

pub(super) fn delete_shadows(
    session: &mut Session<'_>,
    target: &DeleteShadows,
) -> Result<(), CommandError> {
    let base_dir = session.config.base_dir.clone();
    let selector = match target {
        DeleteShadows::All => DeleteSelector::All,
        DeleteShadows::Set(word) => {
            DeleteSelector::Set(session.set_argument(word, "delete shadows")?)
        }
        DeleteShadows::Id(word) => {
            DeleteSelector::Id(session.shadow_argument(word, "delete shadows")?)
        }
        DeleteShadows::Volume(word) | DeleteShadows::Oldest(word) => {
            // DiskShadow tolerates an alias name here (observed: `delete shadows volume df`).
            if let Some(uuid) = session.variables.alias(&word.text).and_then(parse_guid) {
                DeleteSelector::Id(ShadowId(uuid))
            } else {
                let volume = session.service.resolve_volume(&word.text, &base_dir)?;
                if matches!(target, DeleteShadows::Oldest(_)) {
                    DeleteSelector::Oldest(volume.id)
                } else {
                    DeleteSelector::Volume(volume.id)
                }
            }
        }
        DeleteShadows::Exposed(word) => {
            let shadows = session.service.shadows()?;
            let shadow = find_exposed(&shadows, &word.text, &session.resolve_path(&word.text))
                .ok_or_else(|| {
                    CommandError::new(format!("no shadow copy is exposed at {}", word.text))
                        .with_code(VssCode::VSS_E_OBJECT_NOT_FOUND)
                        .with_help("`list shadows all` shows where shadow copies are exposed")
                })?;
            DeleteSelector::Id(shadow.id)
        }
    };
    if let DeleteShadows::Id(_) = target {
        let deleted = session.service.delete_shadows(&selector)?;
        session.out_lines(render::deletion_by_id(&deleted));
        return Ok(());
    }
    // The service unexposes a shadow before deleting it, so the attributes it returns lack the
    // exposed bit; Windows shows the attributes the shadow had (0x00120019 when exposed).
    let before = session.service.shadows()?;
    let mut deleted = session.service.delete_shadows(&selector)?;
    for shadow in &mut deleted {
        if let Some(earlier) = before.iter().find(|earlier| earlier.id == shadow.id) {
            shadow.attributes = earlier.attributes;
        }
    }
    session.out_lines(render::deletion_listing(&deleted));
    Ok(())
}

/// The shadow exposed at a drive letter, directory or share, by the name the user gave.
fn find_exposed<'s>(
    shadows: &'s [ShadowInfo],
    name: &str,
    resolved: &std::path::Path,
) -> Option<&'s ShadowInfo> {
    let wanted = name.trim_end_matches(['\\', '/']);
    shadows.iter().find(|shadow| {
        shadow.exposure.as_ref().is_some_and(|exposure| {
            exposure
                .name
                .trim_end_matches(['\\', '/'])
                .eq_ignore_ascii_case(wanted)
                || (exposure.kind != ExposureKind::Share
                    && std::path::Path::new(&exposure.location) == resolved)
        })
    })
}
