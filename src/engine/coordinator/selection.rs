//! Which writers and components take part in a backup: `writer verify`, `writer exclude`, and
//! the exclusions that follow from the volumes in the shadow copy set (reference §1.4, §4.2).
//!
//! This is pure: it takes identified writers and returns the plan with DiskShadow's verbose
//! lines, so that the rules can be tested without processes.

use crate::engine::ids::{parse_guid, VolumeId, WriterId, WriterInstanceId};
use crate::engine::vss::VssCode;
use crate::engine::writer::metadata::{Component, ComponentType, WriterMetadata};
use crate::engine::writer::WriterIndex;

/// `writer verify` and `writer exclude` entries, as the user typed them: a writer name, a
/// writer ID `{GUID}`, or a component `Writer Name:\logical\path\component`. The service
/// API carries it as it is (`CreateRequest::writers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriterSelection {
    pub verify: Vec<String>,
    pub exclude: Vec<String>,
}

/// A writer that answered `identify`, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifiedWriter {
    pub index: WriterIndex,
    pub name: String,
    pub writer_id: WriterId,
    pub instance_id: WriterInstanceId,
    pub metadata: WriterMetadata,
}

/// A writer whose `identify` failed: it cannot take part, and verifying it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableWriter {
    pub name: String,
    pub writer_id: WriterId,
    pub code: VssCode,
    pub reason: String,
}

/// One component included in the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedComponent {
    pub name: String,
    pub logical_path: String,
    /// `\logical\path\name`.
    pub full_path: String,
    pub component_type: ComponentType,
}

/// One writer taking part in the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedWriter {
    pub index: WriterIndex,
    pub name: String,
    pub writer_id: WriterId,
    pub instance_id: WriterInstanceId,
    pub components: Vec<SelectedComponent>,
}

/// Why a writer is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExclusionReason {
    ExcludedByRequester,
    AllComponentsExcluded,
    NonSelectableComponentExcluded { full_path: String },
    IdentifyFailed { code: VssCode },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcludedWriter {
    pub name: String,
    pub writer_id: WriterId,
    pub reason: ExclusionReason,
}

/// The writers and components of one backup, with the verbose lines DiskShadow prints for
/// them (exclusions first, then inclusions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectionPlan {
    pub writers: Vec<SelectedWriter>,
    pub excluded: Vec<ExcludedWriter>,
    pub verbose_lines: Vec<String>,
}

impl SelectionPlan {
    /// No writers: what `nowriters` contexts use.
    pub fn without_writers() -> Self {
        Self::default()
    }
}

/// A `writer verify` or `writer exclude` entry that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error(
        "writer verify \"{entry}\" failed: no writer or component by that name or ID is registered"
    )]
    VerifiedNotFound { entry: String },
    #[error("writer verify \"{entry}\" failed: the writer \"{writer}\" is excluded from the backup ({reason})")]
    VerifiedExcluded {
        entry: String,
        writer: String,
        reason: String,
    },
    #[error(
        "writer verify \"{entry}\" failed: the writer \"{writer}\" is not available: {reason}"
    )]
    VerifiedUnavailable {
        entry: String,
        writer: String,
        code: VssCode,
        reason: String,
    },
    #[error("writer exclude \"{entry}\": no writer or component by that name or ID is registered")]
    ExcludedNotFound { entry: String },
    /// Writers are registered and were asked for, but every one failed `identify`: a set made
    /// now would have no writer in it although the context asks for writers.
    #[error("no writer can take part in the backup: every registered writer failed to identify ({failures})")]
    EveryWriterFailedIdentify { failures: String, code: VssCode },
}

impl SelectionError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            SelectionError::VerifiedNotFound { .. } | SelectionError::ExcludedNotFound { .. } => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            SelectionError::VerifiedExcluded { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            SelectionError::VerifiedUnavailable { code, .. }
            | SelectionError::EveryWriterFailedIdentify { code, .. } => *code,
        }
    }
}

/// What a `writer verify`/`writer exclude` entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Writer(String),
    WriterId(WriterId),
    Component { writer: String, full_path: String },
}

fn parse_target(entry: &str) -> Target {
    let text = entry.trim().trim_matches('"').trim();
    if let Some(guid) = parse_guid(text) {
        return Target::WriterId(WriterId(guid));
    }
    match text.split_once(":\\") {
        Some((writer, path)) => Target::Component {
            writer: writer.trim().to_string(),
            full_path: format!("\\{}", path.trim_matches('\\')),
        },
        None => Target::Writer(text.to_string()),
    }
}

fn names_match(left: &str, right: &str) -> bool {
    left.trim().eq_ignore_ascii_case(right.trim())
}

impl Target {
    fn names_writer(&self, name: &str, writer_id: WriterId) -> bool {
        match self {
            Target::Writer(target) => names_match(target, name),
            Target::WriterId(target) => *target == writer_id,
            Target::Component { writer, .. } => names_match(writer, name),
        }
    }

    /// Whether this target names the component (or a component above it in the logical path,
    /// which takes its subcomponents with it, as in VSS).
    fn names_component(&self, writer_name: &str, component: &Component) -> bool {
        match self {
            Target::Component { writer, full_path } => {
                let component_path = component.full_path();
                names_match(writer, writer_name)
                    && (names_match(full_path, &component_path)
                        || component_path
                            .to_ascii_lowercase()
                            .starts_with(&format!("{}\\", full_path.to_ascii_lowercase())))
            }
            _ => false,
        }
    }
}

/// Decides which writers and components take part.
///
/// A component is excluded when the requester excludes it or when one of its files lies on a
/// volume that is not in the set; a writer is excluded when the requester excludes it, when
/// all its components are excluded, or when a non-selectable component is excluded. A writer
/// with no components at all takes part (it still has data to make consistent).
pub fn plan_selection(
    writers: &[IdentifiedWriter],
    unavailable: &[UnavailableWriter],
    selection: &WriterSelection,
    volumes_in_set: &[VolumeId],
    resolve_volume: &dyn Fn(&str) -> Option<VolumeId>,
) -> Result<SelectionPlan, SelectionError> {
    let exclusions: Vec<(String, Target)> = selection
        .exclude
        .iter()
        .map(|entry| (entry.clone(), parse_target(entry)))
        .collect();
    for (entry, target) in &exclusions {
        let known = writers.iter().any(|writer| match target {
            Target::Component { .. } => writer
                .metadata
                .components
                .iter()
                .any(|component| target.names_component(&writer.name, component)),
            _ => target.names_writer(&writer.name, writer.writer_id),
        }) || unavailable
            .iter()
            .any(|writer| target.names_writer(&writer.name, writer.writer_id));
        if !known {
            return Err(SelectionError::ExcludedNotFound {
                entry: entry.clone(),
            });
        }
    }

    // The requester asked for writers (a writers context) and some are registered, but none
    // identified: fail rather than make a set that silently has no writer. Writers the
    // requester excluded do not count.
    if writers.is_empty() {
        let failed: Vec<&UnavailableWriter> = unavailable
            .iter()
            .filter(|writer| {
                !exclusions.iter().any(|(_, target)| {
                    !matches!(target, Target::Component { .. })
                        && target.names_writer(&writer.name, writer.writer_id)
                })
            })
            .collect();
        if let Some(first) = failed.first() {
            let failures = failed
                .iter()
                .map(|writer| format!("\"{}\": {}", writer.name, writer.reason))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(SelectionError::EveryWriterFailedIdentify {
                failures,
                code: first.code,
            });
        }
    }

    let mut plan = SelectionPlan::default();
    let mut inclusion_lines = Vec::new();
    for writer in writers {
        let writer_excluded = exclusions.iter().any(|(_, target)| {
            !matches!(target, Target::Component { .. })
                && target.names_writer(&writer.name, writer.writer_id)
        });
        if writer_excluded {
            plan.excluded.push(ExcludedWriter {
                name: writer.name.clone(),
                writer_id: writer.writer_id,
                reason: ExclusionReason::ExcludedByRequester,
            });
            continue;
        }
        let mut included = Vec::new();
        let mut non_selectable_excluded = None;
        for component in &writer.metadata.components {
            let full_path = component.full_path();
            let excluded_by_requester = exclusions
                .iter()
                .any(|(_, target)| target.names_component(&writer.name, component));
            let missing_volume = component
                .files
                .iter()
                .map(|file| file.volume.as_str())
                .find(|volume| {
                    resolve_volume(volume).is_none_or(|id| !volumes_in_set.contains(&id))
                });
            if let Some(volume) = missing_volume {
                plan.verbose_lines.push(format!(
                    "Component \"{full_path}\" from writer \"{}\" is excluded from backup,",
                    writer.name
                ));
                plan.verbose_lines.push(format!(
                    "because it requires volume {volume} which is not in the shadow copy set."
                ));
            }
            if excluded_by_requester || missing_volume.is_some() {
                if !component.selectable && non_selectable_excluded.is_none() {
                    non_selectable_excluded = Some(full_path);
                }
                continue;
            }
            included.push(SelectedComponent {
                name: component.name.clone(),
                logical_path: component.logical_path.clone(),
                full_path,
                component_type: component.component_type,
            });
        }
        if let Some(full_path) = non_selectable_excluded {
            plan.verbose_lines.push(format!(
                "The writer \"{}\" is now entirely excluded from the backup because the top-level",
                writer.name
            ));
            plan.verbose_lines.push(format!(
                "non selectable component \"{full_path}\" is excluded."
            ));
            plan.excluded.push(ExcludedWriter {
                name: writer.name.clone(),
                writer_id: writer.writer_id,
                reason: ExclusionReason::NonSelectableComponentExcluded { full_path },
            });
            continue;
        }
        if included.is_empty() && !writer.metadata.components.is_empty() {
            plan.verbose_lines.push(format!(
                "Excluding writer \"{}\", because all of its components have been excluded.",
                writer.name
            ));
            plan.excluded.push(ExcludedWriter {
                name: writer.name.clone(),
                writer_id: writer.writer_id,
                reason: ExclusionReason::AllComponentsExcluded,
            });
            continue;
        }
        inclusion_lines.push(String::new());
        inclusion_lines.push(format!("* Including writer \"{}\":", writer.name));
        for component in &included {
            inclusion_lines.push(format!("\t+ Adding component: {}", component.full_path));
        }
        plan.writers.push(SelectedWriter {
            index: writer.index,
            name: writer.name.clone(),
            writer_id: writer.writer_id,
            instance_id: writer.instance_id,
            components: included,
        });
    }
    for writer in unavailable {
        plan.excluded.push(ExcludedWriter {
            name: writer.name.clone(),
            writer_id: writer.writer_id,
            reason: ExclusionReason::IdentifyFailed { code: writer.code },
        });
    }
    plan.verbose_lines.extend(inclusion_lines);

    for entry in &selection.verify {
        verify(entry, &plan, writers, unavailable)?;
    }
    Ok(plan)
}

fn reason_text(reason: &ExclusionReason) -> String {
    match reason {
        ExclusionReason::ExcludedByRequester => "excluded by writer exclude".to_string(),
        ExclusionReason::AllComponentsExcluded => {
            "all of its components have been excluded".to_string()
        }
        ExclusionReason::NonSelectableComponentExcluded { full_path } => {
            format!("the non selectable component \"{full_path}\" is excluded")
        }
        ExclusionReason::IdentifyFailed { code } => format!("it failed to identify: {code}"),
    }
}

fn verify(
    entry: &str,
    plan: &SelectionPlan,
    writers: &[IdentifiedWriter],
    unavailable: &[UnavailableWriter],
) -> Result<(), SelectionError> {
    let target = parse_target(entry);
    if let Some(writer) = unavailable
        .iter()
        .find(|writer| target.names_writer(&writer.name, writer.writer_id))
    {
        return Err(SelectionError::VerifiedUnavailable {
            entry: entry.to_string(),
            writer: writer.name.clone(),
            code: writer.code,
            reason: writer.reason.clone(),
        });
    }
    let Some(identified) = writers
        .iter()
        .find(|writer| target.names_writer(&writer.name, writer.writer_id))
    else {
        return Err(SelectionError::VerifiedNotFound {
            entry: entry.to_string(),
        });
    };
    if let Some(excluded) = plan
        .excluded
        .iter()
        .find(|excluded| excluded.writer_id == identified.writer_id)
    {
        return Err(SelectionError::VerifiedExcluded {
            entry: entry.to_string(),
            writer: identified.name.clone(),
            reason: reason_text(&excluded.reason),
        });
    }
    if let Target::Component { .. } = target {
        let exists = identified
            .metadata
            .components
            .iter()
            .any(|component| target.names_component(&identified.name, component));
        if !exists {
            return Err(SelectionError::VerifiedNotFound {
                entry: entry.to_string(),
            });
        }
        let selected = plan
            .writers
            .iter()
            .filter(|writer| writer.writer_id == identified.writer_id)
            .flat_map(|writer| writer.components.iter())
            .any(|component| {
                identified.metadata.components.iter().any(|candidate| {
                    candidate.full_path() == component.full_path
                        && target.names_component(&identified.name, candidate)
                })
            });
        if !selected {
            return Err(SelectionError::VerifiedExcluded {
                entry: entry.to_string(),
                writer: identified.name.clone(),
                reason: "the component is excluded from the backup".to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::writer::metadata::{
        DataSource, FileSpec, RestoreMethod, RestoreMethodKind, Usage, WriterRestore,
    };
    use uuid::Uuid;

    fn component(name: &str, logical_path: &str, volume: &str, selectable: bool) -> Component {
        Component {
            name: name.to_string(),
            logical_path: logical_path.to_string(),
            component_type: ComponentType::Filegroup,
            caption: String::new(),
            selectable,
            selectable_for_restore: false,
            notify_on_backup_complete: false,
            files: vec![FileSpec {
                volume: volume.to_string(),
                path: "/".to_string(),
                filespec: "*".to_string(),
                recursive: true,
            }],
        }
    }

    fn writer(index: usize, name: &str, components: Vec<Component>) -> IdentifiedWriter {
        IdentifiedWriter {
            index: WriterIndex(index),
            name: name.to_string(),
            writer_id: WriterId(Uuid::from_u128(index as u128 + 1)),
            instance_id: WriterInstanceId(Uuid::from_u128(index as u128 + 100)),
            metadata: WriterMetadata {
                instance_id: None,
                usage: Usage::UserData,
                source: DataSource::Other,
                restore_method: RestoreMethod {
                    method: RestoreMethodKind::RestoreIfCanReplace,
                    writer_restore: WriterRestore::Never,
                    reboot_required: false,
                },
                components,
                excludes: Vec::new(),
            },
        }
    }

    const IN_SET: VolumeId = VolumeId(Uuid::from_u128(0xA));

    fn resolve(name: &str) -> Option<VolumeId> {
        match name {
            "C:" => Some(IN_SET),
            "D:" => Some(VolumeId(Uuid::from_u128(0xB))),
            _ => None,
        }
    }

    fn writers() -> Vec<IdentifiedWriter> {
        vec![
            writer(
                0,
                "Task Scheduler Writer",
                vec![component("TasksStore", "", "C:", true)],
            ),
            writer(
                1,
                "Shadow Copy Optimization Writer",
                vec![component("Optimization", "", "D:", true)],
            ),
            writer(
                2,
                "ASR Writer",
                vec![
                    component("BCD", "BCD", "", false),
                    component("Disks", "", "C:", true),
                ],
            ),
            writer(
                3,
                "System Writer",
                vec![
                    component("System Files", "", "C:", true),
                    component("Win32 Services Files", "", "C:", true),
                ],
            ),
        ]
    }

    #[test]
    fn volumes_outside_the_set_exclude_components_and_writers_with_diskshadow_lines() {
        let plan = plan_selection(
            &writers(),
            &[],
            &WriterSelection::default(),
            &[IN_SET],
            &resolve,
        )
        .expect("plan");
        let names: Vec<&str> = plan
            .writers
            .iter()
            .map(|writer| writer.name.as_str())
            .collect();
        assert_eq!(names, ["Task Scheduler Writer", "System Writer"]);
        assert_eq!(
            plan.verbose_lines,
            [
                "Component \"\\Optimization\" from writer \"Shadow Copy Optimization Writer\" is excluded from backup,",
                "because it requires volume D: which is not in the shadow copy set.",
                "Excluding writer \"Shadow Copy Optimization Writer\", because all of its components have been excluded.",
                "Component \"\\BCD\\BCD\" from writer \"ASR Writer\" is excluded from backup,",
                "because it requires volume  which is not in the shadow copy set.",
                "The writer \"ASR Writer\" is now entirely excluded from the backup because the top-level",
                "non selectable component \"\\BCD\\BCD\" is excluded.",
                "",
                "* Including writer \"Task Scheduler Writer\":",
                "\t+ Adding component: \\TasksStore",
                "",
                "* Including writer \"System Writer\":",
                "\t+ Adding component: \\System Files",
                "\t+ Adding component: \\Win32 Services Files",
            ]
        );
    }

    #[test]
    fn exclusion_by_name_id_and_component_and_the_cascade() {
        let selection = WriterSelection {
            verify: Vec::new(),
            exclude: vec![
                "task scheduler writer".to_string(),
                "\"System Writer:\\System Files\"".to_string(),
                "System Writer:\\Win32 Services Files".to_string(),
            ],
        };
        let plan = plan_selection(&writers(), &[], &selection, &[IN_SET], &resolve).expect("plan");
        assert!(plan.writers.is_empty());
        assert!(plan
            .verbose_lines
            .contains(&"Excluding writer \"System Writer\", because all of its components have been excluded.".to_string()));
        let by_id = WriterSelection {
            verify: Vec::new(),
            exclude: vec![format!("{}", WriterId(Uuid::from_u128(4)))],
        };
        let plan = plan_selection(&writers(), &[], &by_id, &[IN_SET], &resolve).expect("plan");
        assert_eq!(plan.writers.len(), 1);
    }

    #[test]
    fn writers_every_writer_failing_identify_fails_the_selection_unless_excluded() {
        let unavailable = [
            UnavailableWriter {
                name: "Broken Writer".to_string(),
                writer_id: WriterId(Uuid::from_u128(99)),
                code: VssCode::VSS_E_WRITERERROR_RETRYABLE,
                reason: "the writer vetoed".to_string(),
            },
            UnavailableWriter {
                name: "Hung Writer".to_string(),
                writer_id: WriterId(Uuid::from_u128(98)),
                code: VssCode::VSS_E_WRITER_NOT_RESPONDING,
                reason: "not responding".to_string(),
            },
        ];
        let error = plan_selection(
            &[],
            &unavailable,
            &WriterSelection::default(),
            &[IN_SET],
            &resolve,
        )
        .expect_err("no writer identified");
        assert_eq!(error.vss_code(), VssCode::VSS_E_WRITERERROR_RETRYABLE);
        let text = error.to_string();
        assert!(
            text.contains("every registered writer failed to identify"),
            "{text}"
        );
        assert!(
            text.contains("\"Broken Writer\": the writer vetoed"),
            "{text}"
        );
        assert!(text.contains("\"Hung Writer\": not responding"), "{text}");
        // The requester excluding one leaves the other to fail the selection, with its code.
        let one_excluded = WriterSelection {
            verify: Vec::new(),
            exclude: vec!["Broken Writer".to_string()],
        };
        let error = plan_selection(&[], &unavailable, &one_excluded, &[IN_SET], &resolve)
            .expect_err("the hung writer still counts");
        assert_eq!(error.vss_code(), VssCode::VSS_E_WRITER_NOT_RESPONDING);
        // Excluding every failed writer is a deliberate backup without them.
        let all_excluded = WriterSelection {
            verify: Vec::new(),
            exclude: vec!["Broken Writer".to_string(), "Hung Writer".to_string()],
        };
        let plan = plan_selection(&[], &unavailable, &all_excluded, &[IN_SET], &resolve)
            .expect("every failed writer is excluded");
        assert!(plan.writers.is_empty());
        // One writer identifying is enough to go on.
        let plan = plan_selection(
            &writers(),
            &unavailable,
            &WriterSelection::default(),
            &[IN_SET],
            &resolve,
        )
        .expect("plan");
        assert!(!plan.writers.is_empty());
        // No writer registered at all is not a failure here (the set is labelled No_Writers).
        assert!(plan_selection(&[], &[], &WriterSelection::default(), &[IN_SET], &resolve).is_ok());
    }

    #[test]
    fn verify_fails_for_excluded_absent_or_unavailable_writers_and_components() {
        let verify = |entry: &str| WriterSelection {
            verify: vec![entry.to_string()],
            exclude: Vec::new(),
        };
        let unavailable = [UnavailableWriter {
            name: "Broken Writer".to_string(),
            writer_id: WriterId(Uuid::from_u128(99)),
            code: VssCode::VSS_E_WRITER_NOT_RESPONDING,
            reason: "hung".to_string(),
        }];
        let run = |entry: &str| {
            plan_selection(
                &writers(),
                &unavailable,
                &verify(entry),
                &[IN_SET],
                &resolve,
            )
        };
        assert!(run("System Writer").is_ok());
        assert!(run("System Writer:\\System Files").is_ok());
        assert!(matches!(
            run("ASR Writer"),
            Err(SelectionError::VerifiedExcluded { .. })
        ));
        assert!(matches!(
            run("No Such Writer"),
            Err(SelectionError::VerifiedNotFound { .. })
        ));
        assert!(matches!(
            run("System Writer:\\Nothing"),
            Err(SelectionError::VerifiedNotFound { .. })
        ));
        let error = run("Broken Writer").expect_err("unavailable");
        assert_eq!(error.vss_code(), VssCode::VSS_E_WRITER_NOT_RESPONDING);
        let excluded_component = WriterSelection {
            verify: vec!["System Writer:\\System Files".to_string()],
            exclude: vec!["System Writer:\\System Files".to_string()],
        };
        assert!(matches!(
            plan_selection(&writers(), &[], &excluded_component, &[IN_SET], &resolve),
            Err(SelectionError::VerifiedExcluded { .. })
        ));
        let unknown_exclusion = WriterSelection {
            verify: Vec::new(),
            exclude: vec!["Nobody".to_string()],
        };
        assert!(matches!(
            plan_selection(&writers(), &[], &unknown_exclusion, &[IN_SET], &resolve),
            Err(SelectionError::ExcludedNotFound { .. })
        ));
    }
}
