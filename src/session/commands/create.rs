//! `create`: the requester state becomes a `CreateRequest`; the set it makes gets its aliases and listing.

use super::super::observer::console_observer;
use super::super::render;
use super::super::{CommandError, Session};
use super::SessionAliases;
use crate::service::vss::VssCode;
use crate::service::{CreateRequest, SetVolume, WriterSelection};

pub(super) fn create(session: &mut Session<'_>) -> Result<(), CommandError> {
    if session.state.volumes.is_empty() {
        return Err(CommandError::bad_state(
            "the shadow copy set is empty",
            "add at least one volume with `add volume <volume>` before `create`",
        ));
    }
    let state = &session.state;
    let request = CreateRequest {
        volumes: state
            .volumes
            .iter()
            .map(|pending| SetVolume {
                volume: pending.volume.clone(),
                provider: pending.provider,
            })
            .collect(),
        context: state.context,
        extra_attributes: state.extra_attributes(),
        backup_type: state.backup_type,
        writers: WriterSelection {
            verify: state.writer_verify.clone(),
            exclude: state.writer_exclude.clone(),
        },
        aliases: state
            .volumes
            .iter()
            .map(|pending| pending.alias.clone())
            .collect(),
        metadata_path: state.metadata_path.clone(),
        step: state.step,
        default_metadata: Some((
            session.config.base_dir.clone(),
            session.config.time_zone.offset_seconds(),
        )),
    };
    let pending = session.state.volumes.clone();
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    let outcome = session.service.create(&request, &mut observer)?;
    let mut lines = Vec::new();
    // In verbose mode a blank line ends the writer section (empty or not) before the aliases.
    if session.state.verbose {
        lines.push(String::new());
    }
    for (index, shadow) in outcome.set.shadows.iter().enumerate() {
        let default_name = format!("VSS_SHADOW_{}", index + 1);
        session
            .variables
            .set_alias(&default_name, &shadow.id.to_string());
        let alias = pending
            .get(index)
            .and_then(|volume| volume.alias.clone())
            .unwrap_or(default_name);
        session.variables.set_alias(&alias, &shadow.id.to_string());
        lines.push(format!(
            "Alias {alias} for shadow ID {} set as environment variable.",
            shadow.id
        ));
    }
    session
        .variables
        .set_alias("VSS_SHADOW_SET", &outcome.set.set_id.to_string());
    lines.push(format!(
        "Alias VSS_SHADOW_SET for shadow set ID {} set as environment variable.",
        outcome.set.set_id
    ));
    if let Some(reason) = &outcome.metadata_error {
        // DiskShadow keeps the set, says the file is missing in its two lines, and stops.
        lines.push(
            "Could not create .cab metadata file. If the metadata file name was specified using"
                .to_string(),
        );
        lines.push("SET METADATA, the file or directory path name may not be valid.".to_string());
        session.out_lines(lines);
        session.state.volumes.clear();
        session.state.last_created_set = Some(outcome.set.set_id);
        return Err(CommandError::new(format!(
            "the shadow copy set {} was created without its metadata file: {reason}",
            outcome.set.set_id
        ))
        .with_help("`set metadata` a path in a writable directory for the next set; `list shadows set %VSS_SHADOW_SET%` shows this one"));
    }
    if session.state.verbose {
        if let Some(path) = &outcome.metadata_path {
            let cab_name = path
                .file_name()
                .map(|name| name.to_string_lossy().to_string())
                .unwrap_or_default();
            for file in &outcome.metadata_files {
                lines.push(format!("Inserted file {file} into .cab file {cab_name}"));
            }
        }
    }
    lines.push(String::new());
    let header = format!(
        "Querying all shadow copies with the shadow copy set ID {}",
        outcome.set.set_id
    );
    let listing = render::shadow_listing(
        &header,
        &outcome.set.shadows,
        &SessionAliases(&session.variables),
        session.config.time_zone,
    );
    lines.extend(listing);
    session.out_lines(lines);
    session.state.volumes.clear();
    session.state.last_created_set = Some(outcome.set.set_id);
    if let Some(state) = &outcome.copy_stopped {
        return Err(CommandError::new(state.clone())
            .with_code(VssCode::VSS_S_ASYNC_CANCELLED)
            .with_help("`list shadows set %VSS_SHADOW_SET%` shows the set; its shadow copies can be used, exposed or deleted meanwhile"));
    }
    Ok(())
}
