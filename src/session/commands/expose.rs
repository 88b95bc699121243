//! `expose` (a drive letter, directory or NBD share) and `unexpose`.

use super::super::{CommandError, Session};
use crate::drive_letter::split_path as split_drive_path;
use crate::service::ids::{parse_guid, ShadowId};
use crate::service::model::ExposureKind;
use crate::syntax::ast::Word;

pub(super) fn expose(
    session: &mut Session<'_>,
    shadow: &Word,
    target: &Word,
) -> Result<(), CommandError> {
    let id = session.shadow_argument(shadow, "expose")?;
    let base_dir = session.config.base_dir.clone();
    let resolved = exposure_target(session, &target.text)?;
    let exposure = session.service.expose(id, &resolved, &base_dir)?;
    let shown = match exposure.kind {
        // The letter keeps the case it was typed in: `expose %x% z:` says `z:\`.
        ExposureKind::Drive => {
            let name = exposure.name.trim_end_matches('\\');
            let typed = target.text.trim_end_matches(['\\', '/']);
            let letter = if typed.eq_ignore_ascii_case(name) {
                typed
            } else {
                name
            };
            format!("{letter}\\")
        }
        _ => exposure.name.clone(),
    };
    session.out(format!(
        "The shadow copy was successfully exposed as {shown}."
    ));
    // A share is an NBD export here: say where a client connects (diskshadow's own line).
    if exposure.kind == ExposureKind::Share {
        session.out(format!(
            "The share is served over NBD at {}",
            exposure.location
        ));
    }
    if let Some(warning) = exposure.access_warning("the shadow copy", "read") {
        session.out(warning);
    }
    Ok(())
}

/// An exposure target as the service takes it: a Windows directory path (`C:\shadowcopy\`,
/// `sub\dir`, doubled backslashes too) resolves as `exec` and `set metadata` resolve theirs; a
/// bare letter (`p:`), a share (`\\host\name`) and anything else go as given.
fn exposure_target(session: &mut Session<'_>, text: &str) -> Result<String, CommandError> {
    let drive_path =
        split_drive_path(text).is_some_and(|(_, path)| !path.trim_matches(['\\', '/']).is_empty());
    let relative_windows_path =
        text.contains('\\') && !text.starts_with("\\\\") && !text.contains(':');
    if drive_path || relative_windows_path {
        Ok(session.resolve_file_path(text)?.display().to_string())
    } else {
        Ok(text.to_string())
    }
}

pub(super) fn unexpose(session: &mut Session<'_>, target: &Word) -> Result<(), CommandError> {
    let base_dir = session.config.base_dir.clone();
    let text = match parse_guid(&target.text)
        .or_else(|| session.variables.alias(&target.text).and_then(parse_guid))
    {
        Some(uuid) => ShadowId(uuid).to_string(),
        None => exposure_target(session, &target.text)?,
    };
    let shadow = session.service.unexpose(&text, &base_dir)?;
    session.out(format!(
        "The shadow copy {} is no longer exposed.",
        shadow.id
    ));
    Ok(())
}
