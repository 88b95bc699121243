//! `add volume`, `add alias`, `add shadow` (a resync pair) and `add` alone (the set so far).

use super::super::state::{PendingVolume, ResyncPair};
use super::super::{CommandError, Session};
use crate::service::ids::{parse_guid, ProviderId};
use crate::service::vss::{limits, VssCode};
use crate::syntax::ast::{AddCommand, Word};

pub(super) fn add(session: &mut Session<'_>, add: &AddCommand) -> Result<(), CommandError> {
    match add {
        AddCommand::Show => {
            let mut lines = Vec::new();
            for pending in &session.state.volumes {
                let alias = pending
                    .alias
                    .as_deref()
                    .map(|alias| format!(" alias {alias}"))
                    .unwrap_or_default();
                lines.push(format!(
                    "Volume {}{alias}    GUID {}",
                    pending.spec,
                    pending.volume.device_name()
                ));
            }
            let count = session.state.volumes.len();
            lines.push(format!(
                "{count} volume{} in Shadow Copy Set.",
                if count == 1 { "" } else { "s" }
            ));
            let aliases: Vec<String> = session
                .variables
                .aliases()
                .map(|(name, value)| format!("Alias {name} = {value}"))
                .collect();
            if aliases.is_empty() {
                lines.push("No Diskshadow aliases in the environment.".to_string());
            } else {
                lines.push(format!(
                    "{} Diskshadow alias{} in the environment:",
                    aliases.len(),
                    if aliases.len() == 1 { "" } else { "es" }
                ));
                lines.extend(aliases.into_iter().map(|line| format!("\t{line}")));
            }
            session.out_lines(lines);
        }
        AddCommand::Volume {
            volume,
            alias,
            provider,
        } => {
            if session.state.volumes.len() >= limits::MAX_VOLUMES_PER_SET {
                return Err(CommandError::new(format!(
                    "the shadow copy set already holds {} volumes, the most a set can hold",
                    limits::MAX_VOLUMES_PER_SET
                ))
                .with_code(VssCode::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED)
                .with_help(
                    "create this set, then `reset` and add the remaining volumes to another",
                ));
            }
            let provider = match provider {
                None => None,
                Some(word) => Some(ProviderId(parse_guid(&word.text).ok_or_else(|| {
                    CommandError::usage("add", format!("`{}` is not a provider ID", word.text))
                        .with_help("`list providers` shows the registered provider IDs")
                })?)),
            };
            let base_dir = session.config.base_dir.clone();
            let info = match session.service.resolve_volume(&volume.text, &base_dir) {
                Ok(info) => info,
                // A requester the store refuses fails here, in DiskShadow's words: `add
                // volume` is where it first needs VSS (`InitializeForBackup`).
                Err(error) if error.code == Some(VssCode::E_ACCESSDENIED) => {
                    session.out("");
                    session.out("COM call \"(*vssObject)->InitializeForBackup\" failed.");
                    return Err(error.into());
                }
                Err(error) => return Err(error.into()),
            };
            // Writes that bypass diskshadow make shadows suspect: say so before any is taken.
            let users = session.service.outside_users(&info).unwrap_or_default();
            if !users.is_empty() {
                session.console.err(&format!(
                    "Warning: the volume {} is written outside diskshadow by {}; such writes make its shadow copies suspect. Write through `attach` instead.",
                    info.display_name(),
                    users.join(", ")
                ));
            }
            if session
                .state
                .volumes
                .iter()
                .any(|pending| pending.volume.id == info.id)
            {
                return Err(CommandError::new(format!(
                    "the volume {} is already in the shadow copy set",
                    info.display_name()
                ))
                .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
                .with_help("`add` lists the set; `reset` empties it"));
            }
            if let Some(alias) = alias {
                if session.state.volumes.iter().any(|pending| {
                    pending
                        .alias
                        .as_deref()
                        .is_some_and(|name| name.eq_ignore_ascii_case(&alias.text))
                }) {
                    return Err(CommandError::usage(
                        "add",
                        format!("the alias {} is already used in this set", alias.text),
                    ));
                }
            }
            session.state.volumes.push(PendingVolume {
                spec: volume.text.clone(),
                volume: info,
                alias: alias.as_ref().map(|word| word.text.clone()),
                provider,
            });
        }
        AddCommand::Alias { name, value } => {
            session.variables.set_alias(&name.text, &value.text);
        }
        AddCommand::Shadow { shadow, target } => add_shadow(session, shadow, target.as_ref())?,
    }
    Ok(())
}

/// `add shadow <shadow> [<target volume>]`: pairs a shadow copy with the volume `resync`
/// copies it onto (VSS `AddSnapshotToRecoverySet`); checked now, so a mistake shows here.
fn add_shadow(
    session: &mut Session<'_>,
    shadow: &Word,
    target: Option<&Word>,
) -> Result<(), CommandError> {
    let id = session.shadow_argument(shadow, "add")?;
    let info = session
        .service
        .shadows()?
        .into_iter()
        .find(|info| info.id == id)
        .ok_or_else(|| {
            CommandError::new(format!("shadow copy {id} was not found"))
                .with_code(VssCode::VSS_E_OBJECT_NOT_FOUND)
                .with_help("`list shadows all` shows the shadow copies")
        })?;
    // VSS resynchronizes transportable hardware shadow copies; diskshadow copies back any
    // persistent shadow copy it can read, which is what the engine needs.
    if !info.context.is_persistent() {
        return Err(CommandError::new(format!(
            "shadow copy {id} was made in the {} context; only persistent shadow copies can be resynchronized",
            info.context.name()
        ))
        .with_code(VssCode::VSS_E_UNSUPPORTED_CONTEXT)
        .with_help("create the shadow copy after `set context persistent`"));
    }
    let target = match target {
        Some(word) => {
            let base_dir = session.config.base_dir.clone();
            Some(session.service.resolve_volume(&word.text, &base_dir)?)
        }
        None => None,
    };
    let pair = ResyncPair {
        shadow: id,
        original: info.volume,
        target,
    };
    if let Some(other) = session
        .state
        .resync_set
        .iter()
        .find(|other| other.destination().id == pair.destination().id)
    {
        return Err(CommandError::new(format!(
            "the volume {} is already the target of shadow copy {}",
            pair.destination().display_name(),
            other.shadow
        ))
        .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
        .with_help("give each shadow copy its own target volume"));
    }
    let whose = if pair.target.is_some() {
        "the volume"
    } else {
        "its original volume"
    };
    session.out(format!(
        "Shadow copy {id} will be resynchronized onto {whose} {}.",
        pair.destination().display_name()
    ));
    session.state.resync_set.push(pair);
    Ok(())
}
