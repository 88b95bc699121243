//! `list writers [status|metadata|detailed]` and the step prompt's writer block, in
//! DiskShadow's layout (reference §4.5, §4.6), from the writers the service reports.

use crate::service::ids::{WriterId, WriterInstanceId};
use crate::service::vss::VssCode;
use crate::service::writer_metadata::{Component, WriterMetadata};
use crate::service::{ReportedWriter, WriterReport, WriterStatusView};

/// How much `list writers` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterListing {
    Metadata,
    Detailed,
    Status,
}

/// The lines of `list writers …`: the registrations' problems as warnings, then the listing.
pub fn listing_lines(report: &WriterReport, listing: WriterListing) -> Vec<String> {
    let mut lines: Vec<String> = report
        .problems
        .iter()
        .map(|problem| format!("Warning: {problem}"))
        .collect();
    if listing == WriterListing::Status {
        let statuses: Vec<WriterStatusView> = report
            .writers
            .iter()
            .map(|writer| writer.status.clone())
            .collect();
        lines.extend(status_lines(&statuses));
        return lines;
    }
    lines.push("Listing writer metadata ...".to_string());
    let mut listed = 0;
    for writer in &report.writers {
        let status = &writer.status;
        let (Some(instance_id), Some(metadata)) = (status.instance_id, &writer.metadata) else {
            lines.push(format!(
                "* WRITER \"{}\" did not identify itself: {} [{}]",
                status.name,
                writer
                    .failure_message
                    .clone()
                    .unwrap_or_else(|| "no answer".to_string()),
                failure_code_text(status.failure)
            ));
            continue;
        };
        listed += 1;
        let display = |name: &str| volume_name(writer, name);
        lines.extend(metadata_lines(
            &status.name,
            status.writer_id,
            instance_id,
            metadata,
            &display,
        ));
        if listing == WriterListing::Detailed {
            for component in &metadata.components {
                lines.push(format!(
                    "    - Files of component \"{}\":",
                    component.full_path()
                ));
                for file in &component.files {
                    let recursive = if file.recursive { " (recursive)" } else { "" };
                    lines.push(format!(
                        "       - Volume {}, Path = {}, Filespec = {}{recursive}",
                        display(&file.volume),
                        file.path,
                        file.filespec
                    ));
                }
            }
        }
        lines.push(String::new());
    }
    lines.push(format!(
        "{listed} writer{} listed.",
        if listed == 1 { "" } else { "s" }
    ));
    lines
}

/// A volume as the writer names it, in DiskShadow's display form when the service knew it.
fn volume_name(writer: &ReportedWriter, name: &str) -> String {
    writer
        .volume_names
        .get(name)
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// `0x00000000 (S_OK)` or `0x800423F3 (VSS_E_WRITERERROR_RETRYABLE)`, as DiskShadow prints
/// the writer failure code.
pub fn failure_code_text(failure: Option<VssCode>) -> String {
    match failure {
        None => "0x00000000 (S_OK)".to_string(),
        Some(code) => format!("0x{:08X} ({})", code.hresult(), code.name()),
    }
}

/// `Listing writer status ...`, one block per writer, then `N writers listed.`.
pub fn status_lines(statuses: &[WriterStatusView]) -> Vec<String> {
    let mut lines = vec!["Listing writer status ...".to_string()];
    for status in statuses {
        lines.push(format!("* WRITER {}", status.name));
        lines.push(format!(
            "        - Status: {} ({:?})",
            status.state.value(),
            status.state
        ));
        lines.push(format!(
            "        - Writer Failure code: {}",
            failure_code_text(status.failure)
        ));
        lines.push(format!("        - Writer ID: {}", status.writer_id));
        match status.instance_id {
            Some(instance_id) => lines.push(format!("        - Instance ID: {instance_id}")),
            None => lines.push("        - Instance ID: (not identified yet)".to_string()),
        }
    }
    lines.push(writers_listed(statuses.len()));
    lines
}

fn writers_listed(count: usize) -> String {
    if count == 1 {
        "1 writer listed.".to_string()
    } else {
        format!("{count} writers listed.")
    }
}

fn true_false(value: bool) -> &'static str {
    if value {
        "TRUE"
    } else {
        "FALSE"
    }
}

/// A component is top level unless its logical path is the full path of another component
/// of the same writer.
fn is_top_level(component: &Component, metadata: &WriterMetadata) -> bool {
    let logical_path = format!("\\{}", component.logical_path.trim_matches('\\'));
    component.logical_path.trim_matches('\\').is_empty()
        || !metadata
            .components
            .iter()
            .any(|other| other.full_path().eq_ignore_ascii_case(&logical_path))
}

/// One writer's `list writers metadata` block. `volume_display` turns a volume as the writer
/// names it into DiskShadow's display form (`\\?\Volume{…}\ [C:\]`).
fn metadata_lines(
    name: &str,
    writer_id: WriterId,
    instance_id: WriterInstanceId,
    metadata: &WriterMetadata,
    volume_display: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let restore = &metadata.restore_method;
    let mut lines = vec![
        format!("* WRITER \"{name}\""),
        format!("    - Writer ID   = {writer_id}"),
        format!("    - Writer Instance ID = {instance_id}"),
        format!(
            "    - Supports restore events = {}",
            true_false(restore.writer_restore.wants_restore_events())
        ),
        format!(
            "    - Writer restore conditions = {}",
            restore.writer_restore.vss_name()
        ),
        format!("    - Restore method = {}", restore.method.vss_name()),
        format!(
            "    - Requires reboot after restore = {}",
            true_false(restore.reboot_required)
        ),
    ];
    if !metadata.excludes.is_empty() {
        lines.push(String::new());
        lines.push("    - Excluded files:".to_string());
        for exclude in &metadata.excludes {
            lines.push(format!(
                "       - Exclude: Path = {}, Filespec = {}",
                exclude.path, exclude.filespec
            ));
        }
    }
    for component in &metadata.components {
        let full_path = component.full_path();
        lines.push(String::new());
        lines.push(format!("    - Component \"{name}:{full_path}\""));
        lines.push(format!("       - Name: '{}'", component.name));
        lines.push(format!(
            "       - Logical Path: '{}'",
            component.logical_path
        ));
        lines.push(format!("       - Full Path: '{full_path}'"));
        lines.push(format!("       - Caption: '{}'", component.caption));
        lines.push(format!(
            "       - Type: {} [{}]",
            component.component_type.vss_name(),
            component.component_type.value()
        ));
        lines.push(format!(
            "       - Is Selectable: '{}'",
            true_false(component.selectable)
        ));
        lines.push(format!(
            "       - Is top level: '{}'",
            true_false(is_top_level(component, metadata))
        ));
        lines.push(format!(
            "       - Notify on backup complete: '{}'",
            true_false(component.notify_on_backup_complete)
        ));
        lines.push("       - Components:".to_string());
        for file in &component.files {
            lines.push(format!(
                "       - File List: Path = {}, Filespec = {}",
                file.path, file.filespec
            ));
        }
        lines.push("       - Affected paths by this component:".to_string());
        let mut paths: Vec<&str> = Vec::new();
        for file in &component.files {
            if !paths.contains(&file.path.as_str()) {
                paths.push(&file.path);
            }
        }
        for path in paths {
            lines.push(format!("         - {path}"));
        }
        lines.push("       - Affected volumes by this component:".to_string());
        let mut volumes: Vec<&str> = Vec::new();
        for file in &component.files {
            if !volumes.contains(&file.volume.as_str()) {
                volumes.push(&file.volume);
            }
        }
        for volume in volumes {
            lines.push(format!("         - {}", volume_display(volume)));
        }
        lines.push("       - Component Dependencies:".to_string());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::vss::WriterState;
    use crate::service::writer_metadata::{
        ComponentType, DataSource, FileSpec, RestoreMethod, RestoreMethodKind, Usage, WriterRestore,
    };
    use uuid::Uuid;

    #[test]
    fn status_lines_follow_list_writers_status() {
        let status = WriterStatusView {
            name: "System Writer".to_string(),
            writer_id: WriterId(Uuid::from_u128(0xe8132975_6f93_4464_a53e_1050253ae220)),
            instance_id: Some(WriterInstanceId(Uuid::from_u128(
                0x7e631031_c695_4229_9da1_a7de057e64cb,
            ))),
            state: WriterState::VSS_WS_FAILED_AT_FREEZE,
            failure: Some(VssCode::VSS_E_WRITER_NOT_RESPONDING),
        };
        assert_eq!(
            status_lines(&[status]),
            [
                "Listing writer status ...",
                "* WRITER System Writer",
                "        - Status: 9 (VSS_WS_FAILED_AT_FREEZE)",
                "        - Writer Failure code: 0x80042319 (VSS_E_WRITER_NOT_RESPONDING)",
                "        - Writer ID: {e8132975-6f93-4464-a53e-1050253ae220}",
                "        - Instance ID: {7e631031-c695-4229-9da1-a7de057e64cb}",
                "1 writer listed.",
            ]
        );
    }

    #[test]
    fn metadata_lines_follow_list_writers_metadata() {
        let metadata = WriterMetadata {
            instance_id: None,
            usage: Usage::SystemService,
            source: DataSource::Other,
            restore_method: RestoreMethod {
                method: RestoreMethodKind::Custom,
                writer_restore: WriterRestore::Never,
                reboot_required: false,
            },
            components: vec![Component {
                name: "da45368c".to_string(),
                logical_path: "SYSVOL".to_string(),
                component_type: ComponentType::Filegroup,
                caption: String::new(),
                selectable: true,
                selectable_for_restore: false,
                notify_on_backup_complete: true,
                files: vec![FileSpec {
                    volume: "D:".to_string(),
                    path: "d:\\windows\\sysvol".to_string(),
                    filespec: "*".to_string(),
                    recursive: true,
                }],
            }],
            excludes: vec![FileSpec {
                volume: "D:".to_string(),
                path: "d:\\windows\\ntfrs\\jet".to_string(),
                filespec: "*".to_string(),
                recursive: true,
            }],
        };
        let lines = metadata_lines(
            "FRS Writer",
            WriterId(Uuid::from_u128(1)),
            WriterInstanceId(Uuid::from_u128(2)),
            &metadata,
            &|volume| format!("\\\\?\\Volume{{x}}\\ [{volume}\\]"),
        );
        assert_eq!(lines[0], "* WRITER \"FRS Writer\"");
        assert_eq!(lines[3], "    - Supports restore events = FALSE");
        assert_eq!(lines[5], "    - Restore method = VSS_RME_CUSTOM");
        assert!(lines.contains(
            &"       - Exclude: Path = d:\\windows\\ntfrs\\jet, Filespec = *".to_string()
        ));
        assert!(lines.contains(&"    - Component \"FRS Writer:\\SYSVOL\\da45368c\"".to_string()));
        assert!(lines.contains(&"       - Type: VSS_CT_FILEGROUP [2]".to_string()));
        assert!(lines.contains(&"       - Is top level: 'TRUE'".to_string()));
        assert!(lines.contains(&"         - \\\\?\\Volume{x}\\ [D:\\]".to_string()));
        assert_eq!(
            lines.last().map(String::as_str),
            Some("       - Component Dependencies:")
        );
    }
}
