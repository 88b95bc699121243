//! The backup and restore phases (`begin`/`end backup`, `begin`/`end restore`), `load metadata`, `simulate restore` and `writer verify|exclude`.

use super::super::observer::console_observer;
use super::super::state::Phase;
use super::super::{CommandError, Session};
use crate::service::vss::{BackupType, VssCode};
use crate::syntax::ast::{Word, WriterAction};

pub(super) fn begin_backup(session: &mut Session<'_>) -> Result<(), CommandError> {
    match session.state.phase {
        Phase::BackupBegun => Err(CommandError::bad_state(
            "a backup is already in progress",
            "`end backup` ends it",
        )),
        Phase::RestoreBegun => Err(CommandError::bad_state(
            "a restore is in progress",
            "`end restore` ends it first",
        )),
        Phase::Idle => {
            session.state.phase = Phase::BackupBegun;
            session.state.backup_type = BackupType::Full;
            Ok(())
        }
    }
}

pub(super) fn end_backup(session: &mut Session<'_>) -> Result<(), CommandError> {
    // Microsoft's import sample ends the backup of a set made without `begin backup`: the
    // requester's backup of the set it just created (a copy backup) completes.
    let created_here =
        session.state.phase == Phase::Idle && session.state.last_created_set.is_some();
    if session.state.phase != Phase::BackupBegun && !created_here {
        return Err(CommandError::bad_state(
            "END BACKUP without BEGIN BACKUP",
            "`begin backup` before `create` starts a full backup; `end backup` ends it",
        ));
    }
    session.state.phase = Phase::Idle;
    session.state.backup_type = BackupType::Copy;
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    session.service.end_backup(&mut observer)?;
    Ok(())
}

pub(super) fn begin_restore(session: &mut Session<'_>) -> Result<(), CommandError> {
    if session.state.loaded_metadata.is_none() {
        return Err(CommandError::bad_state(
            "no metadata is loaded",
            "`load metadata <file.cab>` loads the writers and components to restore",
        ));
    }
    if session.state.phase != Phase::Idle {
        return Err(CommandError::bad_state(
            "a backup or restore is already in progress",
            "end it first",
        ));
    }
    let verify = session.state.writer_verify.clone();
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    session.service.begin_restore(&verify, &mut observer)?;
    session.state.phase = Phase::RestoreBegun;
    Ok(())
}

pub(super) fn end_restore(session: &mut Session<'_>) -> Result<(), CommandError> {
    if session.state.phase != Phase::RestoreBegun {
        return Err(CommandError::bad_state(
            "END RESTORE without BEGIN RESTORE",
            "`begin restore` starts a restore",
        ));
    }
    session.state.phase = Phase::Idle;
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    session.service.end_restore(&mut observer)?;
    Ok(())
}

pub(super) fn simulate_restore(session: &mut Session<'_>) -> Result<(), CommandError> {
    if session.state.loaded_metadata.is_none() {
        return Err(CommandError::bad_state(
            "no metadata is loaded",
            "`load metadata <file.cab>` first; simulate restore checks the writers it names",
        ));
    }
    let verify = session.state.writer_verify.clone();
    let lines = session.service.simulate_restore(&verify)?;
    session.out_lines(lines);
    Ok(())
}

pub(super) fn load_metadata(session: &mut Session<'_>, path: &Word) -> Result<(), CommandError> {
    let resolved = session.resolve_file_path(&path.text)?;
    if !resolved.is_file() {
        return Err(CommandError::new(format!(
            "the metadata file {} does not exist",
            resolved.display()
        ))
        .with_code(VssCode::VSS_E_OBJECT_NOT_FOUND)
        .with_help("`set metadata <file.cab>` before `create` writes one"));
    }
    let cabinet = crate::service::read_metadata_file(&resolved)?;
    let loaded = session.service.load_metadata(cabinet)?;
    if session.state.verbose {
        let cab_name = resolved
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_default();
        let lines: Vec<String> = loaded
            .files
            .iter()
            .map(|file| format!("Extracted file {file} from .cab file {cab_name}"))
            .collect();
        session.out_lines(lines);
    }
    for (name, value) in &loaded.aliases {
        session.variables.set_alias(name, value);
        match super::super::expand::exportable_alias(name, value, &session.config.environment) {
            Ok(()) => session.out(format!(
                "Alias {name} for value {value} set as environment variable."
            )),
            Err(reason) => session.out(format!(
                "Alias {name} for value {value} set; not as an environment variable: {reason}."
            )),
        }
    }
    session.state.loaded_metadata = Some(resolved);
    Ok(())
}

pub(super) fn writer(
    session: &mut Session<'_>,
    action: WriterAction,
    target: &Word,
) -> Result<(), CommandError> {
    let list = match action {
        WriterAction::Verify => &mut session.state.writer_verify,
        WriterAction::Exclude => &mut session.state.writer_exclude,
    };
    if !list
        .iter()
        .any(|existing| existing.eq_ignore_ascii_case(&target.text))
    {
        list.push(target.text.clone());
    }
    Ok(())
}
