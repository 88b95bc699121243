//! One function per vssadmin command: each checks its switches, asks the service and writes
//! the Windows tool's lines into the [`Outcome`].

use std::io::BufRead;
use std::path::Path;

use super::parse::{parse_max_size, Switches};
use super::render::{
    context_type, human_size, volume_label, writer_error_text, writer_state_text, LineObserver,
};
use super::{failed, Failure, Outcome};
use crate::service::ids::{ShadowId, ShadowSetId};
use crate::service::model::{CreateVolume, ShadowInfo, StorageInfo, VolumeInfo};
use crate::service::vss::{providers, Attributes, Context};
use crate::service::{CreateRequest, ServiceError, ShadowService, SilentObserver};
use crate::session::exit_status;
use crate::session::render::TimeZoneChoice;

pub(super) fn resolve(
    service: &mut dyn ShadowService,
    spec: &str,
    base_dir: &Path,
) -> Result<VolumeInfo, Failure> {
    Ok(service.resolve_volume(spec, base_dir)?)
}

/// `vssadmin list shadows|providers|volumes|shadowstorage|writers … --json`: what the listing
/// shows, with the same switches, as one JSON array.
pub(super) fn list_json(
    service: &mut dyn ShadowService,
    arguments: &[String],
    base_dir: &Path,
    mut outcome: Outcome,
) -> Outcome {
    let verb = format!(
        "{} {}",
        arguments[0].to_ascii_lowercase(),
        arguments[1].to_ascii_lowercase()
    );
    let rest: Vec<String> = arguments[2..]
        .iter()
        .filter(|word| *word != "--json")
        .cloned()
        .collect();
    let switches = match Switches::parse(&rest) {
        Ok(switches) => switches,
        Err(message) => return outcome.fail(exit_status::USAGE, message),
    };
    let no_switches = |switches: &Switches| switches.check_allowed(&[]).map_err(Failure::Usage);
    let value: Result<serde_json::Value, Failure> = (|| {
        let to_value = |value: serde_json::Result<serde_json::Value>| {
            value.map_err(|error| {
                Failure::Service(ServiceError::io(format!(
                    "the listing cannot be written as JSON: {error}"
                )))
            })
        };
        match verb.as_str() {
            "list shadows" => to_value(serde_json::to_value(filtered_shadows(
                service, &switches, base_dir,
            )?)),
            "list providers" => {
                no_switches(&switches)?;
                to_value(serde_json::to_value(service.providers()?))
            }
            "list volumes" => {
                no_switches(&switches)?;
                to_value(serde_json::to_value(service.volumes()?))
            }
            "list shadowstorage" => to_value(serde_json::to_value(filtered_storage(
                service, &switches, base_dir,
            )?)),
            "list writers" => {
                no_switches(&switches)?;
                to_value(serde_json::to_value(service.writer_statuses()?))
            }
            _ => Err(Failure::Usage(format!(
                "Error: --json is taken by the list commands only, not by `{verb}`."
            ))),
        }
    })();
    match value.map(|value| serde_json::to_string_pretty(&value)) {
        Ok(Ok(text)) => {
            outcome.stdout.extend(text.lines().map(str::to_string));
            outcome
        }
        Ok(Err(error)) => outcome.fail(
            exit_status::COMMAND_FAILED,
            format!("Error: the listing cannot be written as JSON: {error}"),
        ),
        Err(failure) => failed(outcome, failure),
    }
}

/// The shadows `list shadows` shows: all, or those `/For=`, `/Shadow=` and `/Set=` select.
pub(super) fn filtered_shadows(
    service: &mut dyn ShadowService,
    switches: &Switches,
    base_dir: &Path,
) -> Result<Vec<ShadowInfo>, Failure> {
    switches
        .check_allowed(&["for", "shadow", "set"])
        .map_err(Failure::Usage)?;
    let mut shadows = service.shadows()?;
    if let Some(spec) = switches.value("for") {
        let volume = resolve(service, spec, base_dir)?;
        shadows.retain(|shadow| shadow.volume.id == volume.id);
    }
    if let Some(id) = switches.guid("shadow")?.map(ShadowId) {
        shadows.retain(|shadow| shadow.id == id);
    }
    if let Some(id) = switches.guid("set")?.map(ShadowSetId) {
        shadows.retain(|shadow| shadow.set_id == id);
    }
    Ok(shadows)
}

pub(super) fn list_shadows(
    service: &mut dyn ShadowService,
    switches: &Switches,
    base_dir: &Path,
    zone: TimeZoneChoice,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    let shadows = filtered_shadows(service, switches, base_dir)?;
    if shadows.is_empty() {
        outcome.out("No items found that satisfy the query.");
        return Ok(());
    }
    let mut sets: Vec<ShadowSetId> = Vec::new();
    for shadow in &shadows {
        if !sets.contains(&shadow.set_id) {
            sets.push(shadow.set_id);
        }
    }
    for set in sets {
        let members: Vec<&ShadowInfo> = shadows
            .iter()
            .filter(|shadow| shadow.set_id == set)
            .collect();
        let Some(first) = members.first() else {
            continue;
        };
        outcome.out(format!("Contents of shadow copy set ID: {set}"));
        outcome.out(format!(
            "   Contained {} shadow copies at creation time: {}",
            first.original_count,
            zone.format(first.created_at)
        ));
        for shadow in members {
            outcome.out(format!("      Shadow Copy ID: {}", shadow.id));
            outcome.out(format!(
                "         Original Volume: {}",
                volume_label(&shadow.volume)
            ));
            outcome.out(format!(
                "         Shadow Copy Volume: {}",
                shadow.device_name
            ));
            outcome.out(format!(
                "         Originating Machine: {}",
                shadow.originating_machine
            ));
            outcome.out(format!(
                "         Service Machine: {}",
                shadow.service_machine
            ));
            let provider = if shadow.provider_id.0 == providers::SYSTEM_PROVIDER_ID {
                providers::SYSTEM_PROVIDER_NAME.to_string()
            } else {
                shadow.provider_id.to_string()
            };
            outcome.out(format!("         Provider: '{provider}'"));
            outcome.out(format!("         Type: {}", context_type(shadow.context)));
            outcome.out(format!(
                "         Attributes: {}",
                shadow.attributes.vssadmin_words()
            ));
        }
        outcome.out("");
    }
    Ok(())
}

pub(super) fn list_providers(
    service: &mut dyn ShadowService,
    switches: &Switches,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    switches.check_allowed(&[]).map_err(Failure::Usage)?;
    for provider in service.providers()? {
        outcome.out(format!("Provider name: '{}'", provider.name));
        let kind = match provider.kind.value() {
            1 => "System",
            2 => "Software",
            _ => "Hardware",
        };
        outcome.out(format!("   Provider type: {kind}"));
        outcome.out(format!("   Provider Id: {}", provider.id));
        outcome.out(format!("   Version: {}", provider.version));
        outcome.out("");
    }
    Ok(())
}

pub(super) fn list_writers(
    service: &mut dyn ShadowService,
    switches: &Switches,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    switches.check_allowed(&[]).map_err(Failure::Usage)?;
    outcome.out("Waiting for responses. These may be delayed if a shadow copy is being prepared.");
    outcome.out("");
    let statuses = service.writer_statuses()?;
    if statuses.is_empty() {
        outcome.out("No items found that satisfy the query.");
    }
    for status in statuses {
        outcome.out(format!("Writer name: '{}'", status.name));
        outcome.out(format!("   Writer Id: {}", status.writer_id));
        match status.instance_id {
            Some(instance) => outcome.out(format!("   Writer Instance Id: {instance}")),
            None => outcome.out("   Writer Instance Id: (not identified)"),
        }
        outcome.out(format!("   State: {}", writer_state_text(status.state)));
        outcome.out(format!(
            "   Last error: {}",
            writer_error_text(status.failure)
        ));
        outcome.out("");
    }
    Ok(())
}

pub(super) fn list_volumes(
    service: &mut dyn ShadowService,
    switches: &Switches,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    switches.check_allowed(&[]).map_err(Failure::Usage)?;
    let volumes = service.volumes()?;
    if volumes.is_empty() {
        outcome.out("No items found that satisfy the query.");
    }
    for volume in volumes {
        match volume.drive_letter {
            Some(letter) => outcome.out(format!(
                "Volume path: {letter}:\\ ({})",
                volume.path.display()
            )),
            None => outcome.out(format!("Volume path: {}", volume.path.display())),
        }
        outcome.out(format!("    Volume name: {}", volume.device_name()));
    }
    Ok(())
}

/// The associations `list shadowstorage` shows: all, or the one `/For=` or `/On=` names.
pub(super) fn filtered_storage(
    service: &mut dyn ShadowService,
    switches: &Switches,
    base_dir: &Path,
) -> Result<Vec<StorageInfo>, Failure> {
    switches
        .check_allowed(&["for", "on"])
        .map_err(Failure::Usage)?;
    let filter = match switches.value("for").or_else(|| switches.value("on")) {
        Some(spec) => Some(resolve(service, spec, base_dir)?.id),
        None => None,
    };
    Ok(service
        .storage()?
        .into_iter()
        .filter(|entry| filter.is_none_or(|id| entry.volume.id == id))
        .collect())
}

pub(super) fn list_storage(
    service: &mut dyn ShadowService,
    switches: &Switches,
    base_dir: &Path,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    let storage = filtered_storage(service, switches, base_dir)?;
    if storage.is_empty() {
        outcome.out("No items found that satisfy the query.");
    }
    for entry in storage {
        let size = entry.volume.size.max(1);
        let percent = |bytes: u64| (bytes as f64 * 100.0 / size as f64).round() as u64;
        outcome.out("Shadow Copy Storage association");
        outcome.out(format!("   For volume: {}", volume_label(&entry.volume)));
        outcome.out(format!(
            "   Shadow Copy Storage volume: {}",
            volume_label(&entry.volume)
        ));
        outcome.out(format!(
            "   Used Shadow Copy Storage space: {} ({}%)",
            human_size(entry.used_bytes),
            percent(entry.used_bytes)
        ));
        outcome.out(format!(
            "   Allocated Shadow Copy Storage space: {} ({}%)",
            human_size(entry.allocated_bytes),
            percent(entry.allocated_bytes)
        ));
        match entry.max_bytes {
            Some(max) => outcome.out(format!(
                "   Maximum Shadow Copy Storage space: {} ({}%)",
                human_size(max),
                percent(max)
            )),
            None => outcome.out("   Maximum Shadow Copy Storage space: UNBOUNDED (100%)"),
        }
        for event in entry.recent_deletions.iter().rev().take(5) {
            outcome.out(format!("   {}", event.describe()));
        }
        outcome.out("");
    }
    Ok(())
}

pub(super) fn create_shadow(
    service: &mut dyn ShadowService,
    switches: &Switches,
    base_dir: &Path,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    switches
        .check_allowed(&["for", "autoretry"])
        .map_err(Failure::Usage)?;
    let spec = switches.required("for", "For")?;
    let volume = resolve(service, spec, base_dir)?;
    let retry_minutes: u64 = match switches.value("autoretry") {
        Some(text) => text
            .parse()
            .map_err(|_| Failure::Usage(format!("Error: Invalid option value: '{text}'")))?,
        None => 0,
    };
    let request = CreateRequest::one_volume(
        volume.clone(),
        Context::ClientAccessible,
        Attributes(Attributes::DIFFERENTIAL),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(retry_minutes * 60);
    let created = loop {
        match service.create(&request, &mut SilentObserver) {
            Ok(created) => break created,
            Err(error)
                if error.code
                    == Some(crate::service::vss::VssCode::VSS_E_SNAPSHOT_SET_IN_PROGRESS)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(error) => return Err(error.into()),
        }
    };
    let _ = CreateVolume {
        volume: volume.id,
        provider: None,
    };
    let shown = match volume.drive_letter {
        Some(letter) => format!("{letter}:\\"),
        None => volume.path.display().to_string(),
    };
    outcome.out(format!("Successfully created shadow copy for '{shown}'"));
    for shadow in &created.set.shadows {
        outcome.out(format!("    Shadow Copy ID: {}", shadow.id));
        outcome.out(format!(
            "    Shadow Copy Volume Name: {}",
            shadow.device_name
        ));
    }
    Ok(())
}

pub(super) fn delete_shadows(
    service: &mut dyn ShadowService,
    switches: &Switches,
    base_dir: &Path,
    confirm: &mut dyn BufRead,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    switches
        .check_allowed(&["for", "oldest", "all", "shadow", "quiet"])
        .map_err(Failure::Usage)?;
    let mut shadows: Vec<ShadowInfo> = service.shadows()?;
    let for_volume = match switches.value("for") {
        Some(spec) => Some(resolve(service, spec, base_dir)?),
        None => None,
    };
    if let Some(volume) = &for_volume {
        shadows.retain(|shadow| shadow.volume.id == volume.id);
    }
    let not_client_accessible = shadows
        .iter()
        .filter(|shadow| shadow.context != Context::ClientAccessible)
        .count();
    let chosen: Vec<ShadowInfo> = if let Some(id) = switches.guid("shadow")?.map(ShadowId) {
        shadows
            .into_iter()
            .filter(|shadow| shadow.id == id)
            .collect()
    } else if switches.flag("oldest") {
        if for_volume.is_none() {
            return Err(Failure::Usage("Error: /Oldest requires /For.".to_string()));
        }
        shadows
            .into_iter()
            .filter(|shadow| shadow.context == Context::ClientAccessible)
            .min_by_key(|shadow| shadow.sequence)
            .into_iter()
            .collect()
    } else if switches.flag("all") || for_volume.is_some() {
        shadows
    } else {
        return Err(Failure::Usage(
            "Error: Specify /For, /All or /Shadow.".to_string(),
        ));
    };
    // vssadmin deletes only client-accessible shadow copies (the Windows documentation).
    let (deletable, skipped): (Vec<ShadowInfo>, Vec<ShadowInfo>) = chosen
        .into_iter()
        .partition(|shadow| shadow.context == Context::ClientAccessible);
    for shadow in &skipped {
        outcome.out(format!(
            "Skipping shadow copy {}: vssadmin deletes only client-accessible shadow copies (use diskshadow `delete shadows id`).",
            shadow.id
        ));
    }
    if deletable.is_empty() {
        outcome.out("No items found that satisfy the query.");
        if switches.flag("oldest") && not_client_accessible > 0 {
            outcome.out(format!(
                "The volume has {not_client_accessible} shadow copies that DiskShadow made (persistent or volatile contexts); vssadmin deletes only client-accessible ones (vssadmin create shadow). Delete those with diskshadow `delete shadows oldest <volume>`."
            ));
        }
        return Ok(());
    }
    if !switches.flag("quiet") {
        outcome.out(format!(
            "Do you really want to delete {} shadow copies (Y/N): [N]? ",
            deletable.len()
        ));
        let mut answer = String::new();
        let _ = confirm.read_line(&mut answer);
        if !answer.trim().eq_ignore_ascii_case("y") {
            outcome.out("No shadow copies were deleted.");
            return Ok(());
        }
    }
    let mut deleted = 0;
    for shadow in &deletable {
        deleted += service
            .delete_shadows(&crate::service::model::DeleteSelector::Id(shadow.id))?
            .len();
    }
    outcome.out(format!(
        "Successfully deleted the {deleted} specified shadow copies."
    ));
    Ok(())
}

pub(super) fn resize_storage(
    service: &mut dyn ShadowService,
    switches: &Switches,
    base_dir: &Path,
    verb: &str,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    switches
        .check_allowed(&["for", "on", "maxsize"])
        .map_err(Failure::Usage)?;
    let for_spec = switches.required("for", "For")?;
    let on_spec = switches.required("on", "On")?;
    let volume = resolve(service, for_spec, base_dir)?;
    let on = resolve(service, on_spec, base_dir)?;
    if on.id != volume.id {
        return Err(Failure::Service(
            ServiceError::not_supported(
                "diskshadow keeps each volume's diff area in the store, associated with the volume itself",
            )
            .with_help(format!("use /On={for_spec}, the same volume as /For")),
        ));
    }
    let max = match switches.value("maxsize") {
        Some(spec) => parse_max_size(spec, volume.size).map_err(Failure::Usage)?,
        None => None,
    };
    let deleted = service.set_max_diff_area(&volume, max)?;
    for shadow in &deleted {
        outcome.out(format!(
            "Deleted shadow copy {} to fit the new maximum size.",
            shadow.id
        ));
    }
    let noun = if verb.starts_with("add") {
        "added"
    } else {
        "resized"
    };
    outcome.out(format!(
        "Successfully {noun} the shadow copy storage association"
    ));
    Ok(())
}

pub(super) fn delete_storage(
    service: &mut dyn ShadowService,
    switches: &Switches,
    base_dir: &Path,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    switches
        .check_allowed(&["for", "on", "quiet"])
        .map_err(Failure::Usage)?;
    let for_spec = switches.required("for", "For")?;
    let volume = resolve(service, for_spec, base_dir)?;
    service.set_max_diff_area(&volume, None)?;
    outcome.out("Successfully deleted the shadow copy storage association(s)");
    Ok(())
}

pub(super) fn revert_shadow(
    service: &mut dyn ShadowService,
    switches: &Switches,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    switches
        .check_allowed(&["shadow", "forcedismount", "quiet"])
        .map_err(Failure::Usage)?;
    switches.required("shadow", "Shadow")?;
    let id = switches
        .guid("shadow")?
        .map(ShadowId)
        .ok_or_else(|| Failure::Usage("Error: Missing /Shadow option.".to_string()))?;
    let force_dismount = switches.flag("forcedismount");
    let quiet = switches.flag("quiet");
    let mut lines = Outcome::default();
    service.revert(
        id,
        force_dismount,
        &mut LineObserver {
            outcome: &mut lines,
        },
    )?;
    if quiet {
        return Ok(());
    }
    outcome.stdout.extend(lines.stdout);
    outcome.out(format!("The volume has been reverted to shadow copy {id}."));
    Ok(())
}
