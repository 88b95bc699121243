//! `vssadmin` with the Windows syntax (reference §2) over the same store: `list shadows
//! /for=C:`, `create shadow /for=C:`, `delete shadows /for=C: /oldest`, `resize shadowstorage
//! /for=C: /on=C: /maxsize=20%`, …

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::engine::ids::{parse_guid, ShadowId, ShadowSetId};
use crate::engine::model::{CreateVolume, ShadowInfo, StorageInfo, VolumeInfo};
use crate::engine::vss::{providers, Attributes, Context, VssCode, WriterState};
use crate::service::{CreateRequest, ServiceError, ServiceObserver, ShadowService, SilentObserver};
use crate::session::render::TimeZoneChoice;

pub const BANNER: [&str; 2] = [
    "vssadmin 1.1 - Volume Shadow Copy Service administrative command-line tool",
    "(diskshadow for Linux; the same store as the diskshadow shell)",
];

/// The commands, in the Windows server tool's order and wording.
pub const COMMANDS: [(&str, &str); 12] = [
    (
        "Add ShadowStorage",
        "Add a new volume shadow copy storage association",
    ),
    ("Create Shadow", "Create a new volume shadow copy"),
    ("Delete Shadows", "Delete volume shadow copies"),
    (
        "Delete ShadowStorage",
        "Delete volume shadow copy storage associations",
    ),
    (
        "List Providers",
        "List registered volume shadow copy providers",
    ),
    ("List Shadows", "List existing volume shadow copies"),
    (
        "List ShadowStorage",
        "List volume shadow copy storage associations",
    ),
    ("List Volumes", "List volumes eligible for shadow copies"),
    ("List Writers", "List subscribed volume shadow copy writers"),
    (
        "Resize ShadowStorage",
        "Resize a volume shadow copy storage association",
    ),
    ("Revert Shadow", "Revert a volume to a shadow copy"),
    (
        "Query Reverts",
        "Query the progress of in-progress revert operations.",
    ),
];

/// Each command's syntax, as `vssadmin <command> /?` shows it.
pub const SYNTAX: [(&str, &str); 12] = [
    (
        "add shadowstorage",
        "Add ShadowStorage /For=ForVolumeSpec /On=OnVolumeSpec [/MaxSize=MaxSizeSpec]",
    ),
    (
        "create shadow",
        "Create Shadow /For=ForVolumeSpec [/AutoRetry=MaxRetryMinutes]",
    ),
    (
        "delete shadows",
        "Delete Shadows /For=ForVolumeSpec [/Oldest | /All | /Shadow=ShadowId] [/Quiet]",
    ),
    (
        "delete shadowstorage",
        "Delete ShadowStorage /For=ForVolumeSpec [/On=OnVolumeSpec] [/Quiet]",
    ),
    ("list providers", "List Providers"),
    (
        "list shadows",
        "List Shadows [/For=ForVolumeSpec] [/Shadow=ShadowId|/Set=ShadowSetId]",
    ),
    (
        "list shadowstorage",
        "List ShadowStorage [/For=ForVolumeSpec|/On=OnVolumeSpec]",
    ),
    ("list volumes", "List Volumes"),
    ("list writers", "List Writers"),
    (
        "resize shadowstorage",
        "Resize ShadowStorage /For=ForVolumeSpec /On=OnVolumeSpec [/MaxSize=MaxSizeSpec]",
    ),
    (
        "revert shadow",
        "Revert Shadow /Shadow=ShadowId [/ForceDismount] [/Quiet]",
    ),
    ("query reverts", "Query Reverts [/For=ForVolumeSpec]"),
];

/// What a run printed and its exit status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub status: i32,
}

impl Outcome {
    fn out(&mut self, line: impl Into<String>) {
        self.stdout.push(line.into());
    }

    fn fail(mut self, status: i32, message: impl Into<String>) -> Self {
        self.stderr.push(message.into());
        self.status = status;
        self
    }
}

/// Shows the service's lines (what a revert detached, say) and nothing of verbose mode or
/// progress.
struct LineObserver<'a> {
    outcome: &'a mut Outcome,
}

impl ServiceObserver for LineObserver<'_> {
    fn verbose_line(&mut self, _line: &str) {}
    fn line(&mut self, line: &str) {
        self.outcome.out(line);
    }
    fn progress_begin(&mut self, _what: &str, _total: u64) {}
    fn progress_advance(&mut self, _units: u64) {}
    fn progress_end(&mut self) {}
}

/// `/Name=value` and `/Name` switches, names case-insensitive.
#[derive(Debug, Default)]
struct Switches(Vec<(String, Option<String>)>);

impl Switches {
    fn parse(words: &[String]) -> Result<Self, String> {
        let mut switches = Vec::new();
        for word in words {
            let Some(body) = word.strip_prefix('/').or_else(|| word.strip_prefix('-')) else {
                return Err(format!("Error: Invalid option value: '{word}'"));
            };
            match body.split_once('=') {
                Some((name, value)) => {
                    switches.push((name.to_ascii_lowercase(), Some(value.to_string())))
                }
                None => switches.push((body.to_ascii_lowercase(), None)),
            }
        }
        Ok(Self(switches))
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
    }

    /// A switch that must be given: `/For=…` is named `For` in the error.
    fn required(&self, name: &str, shown: &str) -> Result<&str, Failure> {
        self.value(name)
            .ok_or_else(|| Failure::Usage(format!("Error: Missing /{shown} option.")))
    }

    /// A switch holding a GUID, if given.
    fn guid(&self, name: &str) -> Result<Option<uuid::Uuid>, Failure> {
        match self.value(name) {
            None => Ok(None),
            Some(text) => parse_guid(text)
                .map(Some)
                .ok_or_else(|| Failure::Usage(format!("Error: Invalid option value: '{text}'"))),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|(key, _)| key == name)
    }

    fn check_allowed(&self, allowed: &[&str]) -> Result<(), String> {
        for (name, _) in &self.0 {
            if !allowed.contains(&name.as_str()) {
                return Err(format!("Error: Invalid option: '/{name}'"));
            }
        }
        Ok(())
    }
}

/// Parses a MaxSizeSpec: `UNBOUNDED`, `N%` of the volume, or bytes with an optional suffix
/// (KB…EB or B, K…E). Byte sizes must be 320 MB or more, as the Windows binary requires.
pub fn parse_max_size(spec: &str, volume_size: u64) -> Result<Option<u64>, String> {
    let text = spec.trim();
    if text.eq_ignore_ascii_case("unbounded") {
        return Ok(None);
    }
    if let Some(percent) = text.strip_suffix('%') {
        let value: f64 = percent
            .trim()
            .parse()
            .map_err(|_| format!("Error: Invalid option value: '{spec}'"))?;
        if !(0.0..=100.0).contains(&value) || value == 0.0 {
            return Err(format!(
                "Error: Invalid option value: '{spec}' (a percentage from 1 to 100)"
            ));
        }
        return Ok(Some(((volume_size as f64) * value / 100.0) as u64));
    }
    let upper = text.to_ascii_uppercase();
    let digits_end = upper
        .find(|character: char| !character.is_ascii_digit() && character != '.')
        .unwrap_or(upper.len());
    let (number, suffix) = upper.split_at(digits_end);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("Error: Invalid option value: '{spec}'"))?;
    let multiplier: u64 = match suffix.trim() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        "T" | "TB" => 1 << 40,
        "P" | "PB" => 1 << 50,
        "E" | "EB" => 1 << 60,
        _ => return Err(format!("Error: Invalid option value: '{spec}'")),
    };
    let bytes = (number * multiplier as f64) as u64;
    if bytes < 320 << 20 {
        return Err(format!(
            "Error: Invalid option value: '{spec}'. MaxSizeSpec must be 320MB or greater, UNBOUNDED, or a percentage"
        ));
    }
    Ok(Some(bytes))
}

/// `20.2 GB`, as vssadmin shows sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn volume_label(volume: &VolumeInfo) -> String {
    match volume.drive_letter {
        Some(letter) => format!("({letter}:){}", volume.device_name()),
        None => format!("({}){}", volume.path.display(), volume.device_name()),
    }
}

fn context_type(context: Context) -> &'static str {
    match context {
        Context::ClientAccessible => "ClientAccessible",
        Context::Persistent => "ApplicationRollback",
        Context::PersistentNoWriters => "DataVolumeRollback",
        Context::Volatile => "Backup",
        Context::VolatileNoWriters => "FileShareBackup",
    }
}

/// Runs one vssadmin command line (without the program name).
pub fn run(
    service: &mut dyn ShadowService,
    arguments: &[String],
    base_dir: &Path,
    zone: TimeZoneChoice,
    confirm: &mut dyn BufRead,
) -> Outcome {
    let mut outcome = Outcome::default();
    // `list … --json` (diskshadow's own switch): the listing as JSON, for machine readers,
    // with no banner.
    if arguments.len() >= 2
        && arguments[0].eq_ignore_ascii_case("list")
        && arguments[2..].iter().any(|word| word == "--json")
    {
        return list_json(service, arguments, base_dir, outcome);
    }
    for line in BANNER {
        outcome.out(line);
    }
    outcome.out("");
    if arguments.len() < 2 {
        return usage(
            outcome,
            arguments.is_empty() || arguments.iter().any(|word| word == "/?"),
        );
    }
    let verb = format!(
        "{} {}",
        arguments[0].to_ascii_lowercase(),
        arguments[1].to_ascii_lowercase()
    );
    if arguments[2..].iter().any(|word| word == "/?") {
        if let Some((_, syntax)) = SYNTAX.iter().find(|(name, _)| *name == verb) {
            outcome.out(format!("vssadmin {syntax}"));
            return outcome;
        }
    }
    let switches = match Switches::parse(&arguments[2..]) {
        Ok(switches) => switches,
        Err(message) => return outcome.fail(2, message),
    };
    let result = match verb.as_str() {
        "list shadows" => list_shadows(service, &switches, base_dir, zone, &mut outcome),
        "list providers" => list_providers(service, &switches, &mut outcome),
        "list volumes" => list_volumes(service, &switches, &mut outcome),
        "list shadowstorage" => list_storage(service, &switches, base_dir, &mut outcome),
        "create shadow" => create_shadow(service, &switches, base_dir, &mut outcome),
        "delete shadows" => delete_shadows(service, &switches, base_dir, confirm, &mut outcome),
        "add shadowstorage" | "resize shadowstorage" => {
            resize_storage(service, &switches, base_dir, &verb, &mut outcome)
        }
        "delete shadowstorage" => delete_storage(service, &switches, base_dir, &mut outcome),
        "revert shadow" => revert_shadow(service, &switches, &mut outcome),
        "query reverts" => switches
            .check_allowed(&["for"])
            .map_err(Failure::Usage)
            .map(|()| {
                // Reverts run to completion inside the request that started them, so none is ever
                // left in progress for another requester to see.
                outcome.out("No reverts are in progress.");
            }),
        "list writers" => list_writers(service, &switches, &mut outcome),
        _ => return usage(outcome.fail(2, "Error: Invalid command."), true),
    };
    match result {
        Ok(()) => outcome,
        Err(failure) => failed(outcome, failure),
    }
}

/// A failed command's outcome: a usage error exits 2, a service error 1 with its code and help.
fn failed(outcome: Outcome, failure: Failure) -> Outcome {
    match failure {
        Failure::Usage(message) => outcome.fail(2, message),
        Failure::Service(error) => {
            let mut message = format!("Error: {}", error.message);
            if let Some(code) = error.code {
                message.push_str(&format!(" [{code}]"));
            }
            let mut outcome = outcome.fail(1, message);
            if let Some(help) = error.help {
                outcome.stderr.push(format!("Help: {help}"));
            }
            outcome
        }
    }
}

enum Failure {
    Usage(String),
    Service(ServiceError),
}

impl From<ServiceError> for Failure {
    fn from(error: ServiceError) -> Self {
        Failure::Service(error)
    }
}

fn usage(mut outcome: Outcome, list: bool) -> Outcome {
    if list {
        outcome.out("---- Commands Supported ----");
        outcome.out("");
        for (name, summary) in COMMANDS {
            outcome.out(format!("{name:<22}- {summary}"));
        }
    }
    if outcome.status == 0 && !list {
        outcome.status = 2;
    }
    outcome
}

fn resolve(
    service: &mut dyn ShadowService,
    spec: &str,
    base_dir: &Path,
) -> Result<VolumeInfo, Failure> {
    Ok(service.resolve_volume(spec, base_dir)?)
}

/// `vssadmin list shadows|providers|volumes|shadowstorage|writers … --json`: what the listing
/// shows, with the same switches, as one JSON array.
fn list_json(
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
        Err(message) => return outcome.fail(2, message),
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
            1,
            format!("Error: the listing cannot be written as JSON: {error}"),
        ),
        Err(failure) => failed(outcome, failure),
    }
}

/// The shadows `list shadows` shows: all, or those `/For=`, `/Shadow=` and `/Set=` select.
fn filtered_shadows(
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

fn list_shadows(
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

fn list_providers(
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

/// vssadmin's words for a writer state: `[1] Stable`, `[5] Waiting for completion`, `[9] Failed`.
fn writer_state_text(state: WriterState) -> String {
    let words = match state {
        WriterState::VSS_WS_STABLE => "Stable",
        WriterState::VSS_WS_WAITING_FOR_FREEZE => "Waiting for freeze",
        WriterState::VSS_WS_WAITING_FOR_THAW => "Waiting for thaw",
        WriterState::VSS_WS_WAITING_FOR_POST_SNAPSHOT => "Waiting for post snapshot",
        WriterState::VSS_WS_WAITING_FOR_BACKUP_COMPLETE => "Waiting for completion",
        WriterState::VSS_WS_UNKNOWN => "Unknown",
        _ => "Failed",
    };
    format!("[{}] {words}", state.value())
}

/// vssadmin's words for a writer's last error.
fn writer_error_text(failure: Option<VssCode>) -> &'static str {
    match failure {
        None => "No error",
        Some(VssCode::VSS_E_WRITERERROR_RETRYABLE) => "Retryable error",
        Some(VssCode::VSS_E_WRITERERROR_NONRETRYABLE) => "Non-retryable error",
        Some(VssCode::VSS_E_WRITERERROR_TIMEOUT) | Some(VssCode::VSS_E_WRITER_NOT_RESPONDING) => {
            "Timed out"
        }
        Some(VssCode::VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT) => "Inconsistent shadow copy",
        Some(VssCode::VSS_E_WRITERERROR_OUTOFRESOURCES) => "Out of resources",
        Some(_) => "Unexpected error",
    }
}

fn list_writers(
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

fn list_volumes(
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
fn filtered_storage(
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

fn list_storage(
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

fn create_shadow(
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
                    == Some(crate::engine::vss::VssCode::VSS_E_SNAPSHOT_SET_IN_PROGRESS)
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

fn delete_shadows(
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
            .delete_shadows(&crate::engine::model::DeleteSelector::Id(shadow.id))?
            .len();
    }
    outcome.out(format!(
        "Successfully deleted the {deleted} specified shadow copies."
    ));
    Ok(())
}

fn resize_storage(
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

fn delete_storage(
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

fn revert_shadow(
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

/// The store the binaries use: `--store`, then `DISKSHADOW_STORE`, then the per-user default.
pub fn default_store(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("DISKSHADOW_STORE").map(PathBuf::from))
        .unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| std::env::temp_dir().join("diskshadow-data"))
                .join("diskshadow")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_size_specs_follow_the_windows_binary() {
        assert_eq!(parse_max_size("UNBOUNDED", 1000), Ok(None));
        assert_eq!(parse_max_size("20%", 1000), Ok(Some(200)));
        assert_eq!(parse_max_size("2GB", 0), Ok(Some(2 << 30)));
        assert_eq!(parse_max_size("320M", 0), Ok(Some(320 << 20)));
        assert!(parse_max_size("100MB", 0).is_err());
        assert!(parse_max_size("12XB", 0).is_err());
        assert!(parse_max_size("0%", 100).is_err());
    }

    #[test]
    fn sizes_are_shown_with_one_decimal() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(20 * (1 << 30) + (1 << 29)), "20.5 GB");
    }
}
