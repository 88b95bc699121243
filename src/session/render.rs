//! DiskShadow's wording and layout for what the shell prints (reference §4): shadow copy
//! blocks, deletion lines, providers, the shadow copy set being built.

use chrono::{DateTime, FixedOffset, Local, Utc};

use crate::service::model::{ExposureKind, ProviderInfo, ShadowHealth, ShadowInfo};

/// How times are shown: the machine's local time zone, or a fixed offset (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeZoneChoice {
    Local,
    Fixed(FixedOffset),
}

impl TimeZoneChoice {
    /// The offset from UTC in seconds, now.
    pub fn offset_seconds(self) -> i32 {
        match self {
            TimeZoneChoice::Local => Local::now().offset().local_minus_utc(),
            TimeZoneChoice::Fixed(offset) => offset.local_minus_utc(),
        }
    }

    /// `9/19/2025 11:12:19 AM`, as DiskShadow prints times.
    pub fn format(self, instant: DateTime<Utc>) -> String {
        const PATTERN: &str = "%-m/%-d/%Y %-I:%M:%S %p";
        match self {
            TimeZoneChoice::Local => instant.with_timezone(&Local).format(PATTERN).to_string(),
            TimeZoneChoice::Fixed(offset) => {
                instant.with_timezone(&offset).format(PATTERN).to_string()
            }
        }
    }
}

/// Finds the alias names that point at a value, for the `%alias%` column.
pub trait AliasLookup {
    fn alias_for(&self, value: &str) -> Option<String>;
}

/// The block `list shadows` and `create` print for one shadow copy.
pub fn shadow_block(
    shadow: &ShadowInfo,
    aliases: &dyn AliasLookup,
    zone: TimeZoneChoice,
) -> Vec<String> {
    let id = shadow.id.to_string();
    let set = shadow.set_id.to_string();
    // Windows separates the shadow ID from its alias by two TABs and the set ID by one.
    let alias_column = |value: &str, separator: &str| {
        aliases
            .alias_for(value)
            .map(|alias| format!("{separator}%{alias}%"))
            .unwrap_or_default()
    };
    let exposure = match &shadow.exposure {
        None => "Not exposed".to_string(),
        Some(exposure) => match exposure.kind {
            ExposureKind::Share => format!("Exposed remotely as {}", exposure.name),
            ExposureKind::Directory | ExposureKind::Drive => {
                format!("Exposed locally as {}", exposure.name)
            }
        },
    };
    let mut lines = vec![
        format!("\t* Shadow copy ID = {id}{}", alias_column(&id, "\t\t")),
        format!("\t\t- Shadow copy set: {set}{}", alias_column(&set, "\t")),
        format!(
            "\t\t- Original count of shadow copies = {}",
            shadow.original_count
        ),
        format!(
            "\t\t- Original volume name: {}",
            shadow.volume.display_name()
        ),
        format!("\t\t- Creation time: {}", zone.format(shadow.created_at)),
        format!("\t\t- Shadow copy device name: {}", shadow.device_name),
        format!("\t\t- Originating machine: {}", shadow.originating_machine),
        format!("\t\t- Service machine: {}", shadow.service_machine),
        format!("\t\t- {exposure}"),
        format!("\t\t- Provider ID: {}", shadow.provider_id),
        format!(
            "\t\t- Attributes:  {}",
            shadow.attributes.diskshadow_words()
        ),
    ];
    if let Some(location) = &shadow.location {
        lines.push(format!("\t\t- {location}"));
    }
    if let Some(exposure) = shadow
        .exposure
        .as_ref()
        .filter(|exposure| exposure.is_unauthenticated_tcp())
    {
        lines.push(format!(
            "\t\t- Warning: {} has no authentication; any user of this machine can connect and read this shadow copy",
            exposure.location
        ));
    }
    match &shadow.health {
        ShadowHealth::Suspect { reason } => lines.push(format!(
            "\t\t- Warning: this shadow copy is suspect and is not served: {reason}"
        )),
        ShadowHealth::CopyPending => lines.push(
            "\t\t- Full copy: not complete yet; served from its point in time until the copy \
             ends (delete it to give up the copy)"
                .to_string(),
        ),
        ShadowHealth::Good => {}
    }
    lines
}

/// A header line, a blank line, every block, and the count.
pub fn shadow_listing(
    header: &str,
    shadows: &[ShadowInfo],
    aliases: &dyn AliasLookup,
    zone: TimeZoneChoice,
) -> Vec<String> {
    let mut lines = vec![header.to_string(), String::new()];
    for shadow in shadows {
        lines.extend(shadow_block(shadow, aliases, zone));
    }
    if !shadows.is_empty() {
        lines.push(String::new());
    }
    lines.push(format!("Number of shadow copies listed: {}", shadows.len()));
    lines
}

/// `Deleting shadow copy {…} on volume \\?\Volume{…}\ from provider {…} [Attributes: 0x…]...`
pub fn deletion_line(shadow: &ShadowInfo) -> String {
    format!(
        "Deleting shadow copy {} on volume {} from provider {} [Attributes: 0x{:08x}]...",
        shadow.id,
        shadow.volume.device_name(),
        shadow.provider_id,
        shadow.attributes.0
    )
}

/// Every deletion line, a blank line and the count.
pub fn deletion_listing(deleted: &[ShadowInfo]) -> Vec<String> {
    let mut lines: Vec<String> = deleted.iter().map(deletion_line).collect();
    lines.push(String::new());
    lines.push(format!(
        "Number of shadow copies deleted: {}",
        deleted.len()
    ));
    lines
}

/// `delete shadows id {…}`: `Deleting shadow copy {…}...`, a blank line and the count.
pub fn deletion_by_id(deleted: &[ShadowInfo]) -> Vec<String> {
    let mut lines: Vec<String> = deleted
        .iter()
        .map(|shadow| format!("Deleting shadow copy {}...", shadow.id))
        .collect();
    lines.push(String::new());
    lines.push(match deleted.len() {
        1 => "1 shadow copy deleted.".to_string(),
        count => format!("{count} shadow copies deleted."),
    });
    lines
}

/// `list providers`.
pub fn provider_listing(providers: &[ProviderInfo]) -> Vec<String> {
    let mut lines = Vec::new();
    for provider in providers {
        lines.push(format!("* ProviderID: {}", provider.id));
        lines.push(format!(
            "\tType: [{}] {}",
            provider.kind.value(),
            provider.kind.vss_name()
        ));
        lines.push(format!("\tName: {}", provider.name));
        lines.push(format!("\tVersion: {}", provider.version));
        lines.push(format!("\tCLSID: {}", provider.clsid));
    }
    let noun = if providers.len() == 1 {
        "provider"
    } else {
        "providers"
    };
    lines.push(format!("{} {noun} registered.", providers.len()));
    lines
}
