//! `set`: the context, options, verbose, trace, step and metadata file of the next set; `set` alone lists them.

use super::super::state::SessionState;
use super::super::{CommandError, Session};
use crate::service::vss::Context;
use crate::syntax::ast::{ContextSetting, SetCommand};

pub(super) fn set(session: &mut Session<'_>, setting: &SetCommand) -> Result<(), CommandError> {
    let state = &mut session.state;
    match setting {
        SetCommand::Show => {
            let lines = settings_listing(state);
            session.out_lines(lines);
        }
        SetCommand::Context(context) => {
            state.context = match context {
                ContextSetting::ClientAccessible => Context::ClientAccessible,
                ContextSetting::Persistent { no_writers: false } => Context::Persistent,
                ContextSetting::Persistent { no_writers: true } => Context::PersistentNoWriters,
                ContextSetting::Volatile { no_writers: false } => Context::Volatile,
                ContextSetting::Volatile { no_writers: true } => Context::VolatileNoWriters,
            };
        }
        SetCommand::Option(options) => state.options = *options,
        SetCommand::Verbose(on) => state.verbose = *on,
        SetCommand::Trace(on) => state.trace = *on,
        SetCommand::Step(setting) => {
            state.step = setting.on;
            state.step_hold = setting.on && setting.hold;
        }
        SetCommand::Metadata(path) => {
            let resolved = session.resolve_file_path(&path.text)?;
            // As DiskShadow: a path that names a directory has no file name, and a file in a
            // read-only directory could never be written; both are refused here, before any
            // shadow is made. A directory that does not exist fails at `create`.
            if path.text.ends_with(['\\', '/']) || resolved.is_dir() {
                session.out("No filename was specified.");
                return Err(CommandError::new(format!(
                    "{} names a directory, not a metadata file",
                    resolved.display()
                ))
                .with_help("name a file, for example backup.cab"));
            }
            if let Some(directory) = resolved.parent().filter(|parent| parent.is_dir()) {
                if is_read_only_directory(directory) {
                    session.out(
                        "The metadata file name path specifies a directory that is read-only.",
                    );
                    return Err(CommandError::new(format!(
                        "the directory {} is read-only",
                        directory.display()
                    ))
                    .with_help("name a file in a directory you can write to"));
                }
            }
            if resolved.exists() {
                session.out("The existing file will be overwritten.");
            }
            session.state.metadata_path = Some(resolved);
        }
    }
    Ok(())
}

/// A directory no metadata file can be written in: the file system is read-only, this user
/// may not write there, or nobody may (no write bit, which Windows shows as the read-only
/// attribute; root would otherwise write through it).
fn is_read_only_directory(directory: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let no_write_bits = directory
        .metadata()
        .is_ok_and(|meta| meta.permissions().mode() & 0o222 == 0);
    let Ok(name) = std::ffi::CString::new(directory.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `name` is a valid NUL-terminated path for the duration of the call.
    let not_writable = unsafe { libc::access(name.as_ptr(), libc::W_OK) } != 0;
    no_write_bits || not_writable
}

fn settings_listing(state: &SessionState) -> Vec<String> {
    vec![
        format!(
            "Context: {} ({}, 0x{:02x})",
            state.context.diskshadow_words(),
            state.context.name(),
            state.context.value()
        ),
        format!("Options: {}", state.option_words()),
        format!("Verbose: {}", if state.verbose { "on" } else { "off" }),
        format!("Trace: {}", if state.trace { "on" } else { "off" }),
        format!(
            "Step: {}",
            match (state.step, state.step_hold) {
                (true, true) => "on (hold)",
                (true, false) => "on",
                _ => "off",
            }
        ),
        format!(
            "Metadata file: {}",
            state
                .metadata_path
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_else(|| "(none)".to_string())
        ),
        format!("Backup type: {}", state.backup_type.protocol_name()),
    ]
}
