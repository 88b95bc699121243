//! One handler per command, reached through one exhaustive `match` on [`Command`]: a command
//! the language gains does not build until it has a handler here. Each command's syntax, help
//! and examples sit in [`crate::syntax::commands::COMMANDS`] under the name
//! [`Command::name`] gives it; `help` output comes from that table.
//!
//! The files follow the commands: `set`, `add` (volumes, aliases, resync pairs), `create`,
//! `exec`, `backup_restore` (`begin`/`end`, `load metadata`, `simulate restore`, `writer`),
//! `reset`, `list`, `delete` (`delete shadows`), `expose` (`expose`, `unexpose`),
//! `transportable` (`import`, `mask`, `break`), `recovery` (`revert`, `resync`), `drives`
//! (`map`, `unmap`, `attach`, `detach`) and `help`.

mod add;
mod backup_restore;
mod create;
mod delete;
mod drives;
mod exec;
mod expose;
mod help;
mod list;
mod recovery;
mod reset;
mod set;
mod transportable;

use super::render::AliasLookup;
use super::{CommandError, LineOutcome, Session};
use crate::service::ids::{parse_guid, ShadowId, ShadowSetId};
use crate::syntax::ast::{Command, Word};

/// Runs one parsed command.
pub(super) fn dispatch(
    session: &mut Session<'_>,
    command: &Command,
) -> Result<LineOutcome, CommandError> {
    let done = match command {
        Command::Set(setting) => set::set(session, setting),
        Command::SimulateRestore => backup_restore::simulate_restore(session),
        Command::LoadMetadata { path } => backup_restore::load_metadata(session, path),
        Command::Writer { action, target } => backup_restore::writer(session, *action, target),
        Command::Add(add) => add::add(session, add),
        Command::Create => create::create(session),
        Command::Exec { program, arguments } => exec::exec(session, program, arguments),
        Command::BeginBackup => backup_restore::begin_backup(session),
        Command::EndBackup => backup_restore::end_backup(session),
        Command::BeginRestore => backup_restore::begin_restore(session),
        Command::EndRestore => backup_restore::end_restore(session),
        Command::Reset => reset::reset(session),
        Command::List { list, json } => list::list(session, list, *json),
        Command::DeleteShadows(target) => delete::delete_shadows(session, target),
        Command::Import => transportable::import(session),
        Command::Mask { shadow_set } => transportable::mask(session, shadow_set),
        Command::Expose { shadow, target } => expose::expose(session, shadow, target),
        Command::Unexpose { target } => expose::unexpose(session, target),
        Command::Break {
            writable,
            shadow_set,
        } => transportable::break_set(session, *writable, shadow_set),
        Command::Revert { shadow } => recovery::revert(session, shadow),
        Command::Resync {
            no_volume_check,
            revert_original_signature,
        } => recovery::resync(session, *no_volume_check, *revert_original_signature),
        Command::Exit => return Ok(LineOutcome::Exit),
        Command::Help { topic } => help::help(session, topic),
        Command::Map(map) => drives::map(session, map),
        Command::Attach { volume, target } => drives::attach(session, volume, target),
        Command::Detach { target } => drives::detach(session, target),
    };
    done.map(|()| LineOutcome::Continue)
}

/// Alias look-up for the `%alias%` column of shadow blocks: a user alias wins over the
/// default `VSS_SHADOW_n`.
struct SessionAliases<'s>(&'s super::expand::Variables);

impl AliasLookup for SessionAliases<'_> {
    fn alias_for(&self, value: &str) -> Option<String> {
        let mut found: Option<&str> = None;
        for (name, alias_value) in self.0.aliases() {
            if alias_value.eq_ignore_ascii_case(value) {
                let is_default = name.to_ascii_uppercase().starts_with("VSS_SHADOW_")
                    && !name.eq_ignore_ascii_case("VSS_SHADOW_SET");
                match found {
                    Some(_) if is_default => {}
                    _ => found = Some(name),
                }
            }
        }
        found.map(str::to_string)
    }
}

impl Session<'_> {
    /// A shadow named by `{GUID}` (after expansion) or, as DiskShadow tolerates, by an alias
    /// name written without percent signs.
    fn shadow_argument(
        &self,
        word: &Word,
        command: &'static str,
    ) -> Result<ShadowId, CommandError> {
        if let Some(uuid) = parse_guid(&word.text) {
            return Ok(ShadowId(uuid));
        }
        if let Some(uuid) = self.variables.alias(&word.text).and_then(parse_guid) {
            return Ok(ShadowId(uuid));
        }
        Err(CommandError::usage(
            command,
            format!("`{}` is neither a shadow copy ID nor an alias", word.text),
        )
        .with_help("give the ID as {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx} or an alias as %name%; `list shadows all` shows the IDs"))
    }

    fn set_argument(
        &self,
        word: &Word,
        command: &'static str,
    ) -> Result<ShadowSetId, CommandError> {
        self.shadow_argument(word, command)
            .map(|id| ShadowSetId(id.0))
    }
}
