//! Reading a metadata cabinet back (`load metadata`): the cabinet and each member bounded
//! in size, the documents parsed into [`MetadataCabinet`].

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::engine::ids::{
    parse_guid, ProviderId, ShadowId, ShadowSetId, WriterId, WriterInstanceId,
};
use crate::engine::vss::BackupType;
use crate::engine::writer::metadata::{
    Component, ComponentType, DataSource, FileSpec, RestoreMethod, RestoreMethodKind, Usage,
    WriterMetadata, WriterRestore,
};

use super::xml::{self, Element};
use super::{
    decode_writer_name, guard, BackupComponent, BackupComponents, BackupComponentsWriter,
    ManifestShadow, MetadataCabinet, MetadataReadError, WriterDocument, MANIFEST_FILE,
};

/// The largest metadata cabinet `load metadata` reads. DiskShadow's own are a few KiB.
pub const MAX_CABINET_BYTES: u64 = 16 << 20;
/// The largest one member (a document or the log) may be once extracted.
pub const MAX_MEMBER_BYTES: u64 = 4 << 20;
/// The most all members read from one cabinet may come to once extracted.
pub const MAX_EXTRACTED_BYTES: u64 = 16 << 20;

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

/// Reads a metadata cabinet back (`load metadata`). The file may come from anywhere, so the
/// cabinet, each member and their total are bounded in size, documents in depth and element
/// count ([`xml::MAX_DEPTH`], [`xml::MAX_ELEMENTS`]), and a panic of the cab or XML reader is
/// an error naming the member.
pub fn read_metadata_cab(path: &Path) -> Result<MetadataCabinet, MetadataReadError> {
    let path_text = path.display().to_string();
    let file = File::open(path).map_err(|source| MetadataReadError::Io {
        path: path_text.clone(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| MetadataReadError::Io {
            path: path_text.clone(),
            source,
        })?
        .len();
    if size > MAX_CABINET_BYTES {
        return Err(MetadataReadError::NotACabinet {
            path: path_text,
            reason: format!(
                "it is {size} bytes, more than the {} MiB a metadata file may have",
                mib(MAX_CABINET_BYTES)
            ),
        });
    }
    let mut cabinet = guard::catch_panic(|| cab::Cabinet::new(file))
        .unwrap_or_else(|panic| {
            Err(std::io::Error::other(format!(
                "the cab reader failed on its header: {panic}"
            )))
        })
        .map_err(|error| MetadataReadError::NotACabinet {
            path: path_text.clone(),
            reason: error.to_string(),
        })?;
    let mut extracted = 0u64;
    let mut read_member = |name: &str| -> Result<Vec<u8>, MetadataReadError> {
        let corrupt = |reason: String| MetadataReadError::Corrupt {
            path: path_text.clone(),
            member: name.to_string(),
            reason,
        };
        let Some(entry) = cabinet.get_file_entry(name) else {
            return Err(MetadataReadError::MissingMember {
                path: path_text.clone(),
                member: name.to_string(),
            });
        };
        let declared = u64::from(entry.uncompressed_size());
        if declared > MAX_MEMBER_BYTES {
            return Err(corrupt(format!(
                "it is {declared} bytes, more than the {} MiB a member may have",
                mib(MAX_MEMBER_BYTES)
            )));
        }
        if extracted + declared > MAX_EXTRACTED_BYTES {
            return Err(corrupt(format!(
                "the members come to more than the {} MiB a metadata file may hold",
                mib(MAX_EXTRACTED_BYTES)
            )));
        }
        let mut data = Vec::new();
        guard::catch_panic(|| {
            cabinet
                .read_file(name)
                .and_then(|reader| reader.take(declared + 1).read_to_end(&mut data))
        })
        .map_err(|panic| corrupt(format!("the cab reader failed on its entry: {panic}")))?
        .map_err(|error| corrupt(error.to_string()))?;
        if data.len() as u64 > declared {
            return Err(corrupt(format!(
                "it holds more than the {declared} bytes its entry declares"
            )));
        }
        extracted += data.len() as u64;
        Ok(data)
    };
    let corrupt = |member: &str, reason: String| MetadataReadError::Corrupt {
        path: path_text.clone(),
        member: member.to_string(),
        reason,
    };
    let invalid = |member: &str, reason: String| MetadataReadError::Invalid {
        path: path_text.clone(),
        member: member.to_string(),
        reason,
    };

    let manifest_bytes = read_member(MANIFEST_FILE)?;
    let manifest_text =
        decode_utf16le(&manifest_bytes).map_err(|reason| corrupt(MANIFEST_FILE, reason))?;
    let manifest = xml::parse(&manifest_text).map_err(|error| corrupt(MANIFEST_FILE, error.0))?;
    let parsed = parse_manifest(&manifest).map_err(|reason| invalid(MANIFEST_FILE, reason))?;

    let backup_components = match &parsed.backup_components_file {
        None => None,
        Some(member) => {
            let bytes = read_member(member)?;
            let text =
                String::from_utf8(bytes).map_err(|error| corrupt(member, error.to_string()))?;
            let root = xml::parse(&text).map_err(|error| corrupt(member, error.0))?;
            Some(
                parse_backup_components(&root, parsed.snapshot_set_id)
                    .map_err(|reason| invalid(member, reason))?,
            )
        }
    };
    let mut writers = Vec::new();
    for (name, member) in &parsed.writer_files {
        let bytes = read_member(member)?;
        let text = String::from_utf8(bytes).map_err(|error| corrupt(member, error.to_string()))?;
        let root = xml::parse(&text).map_err(|error| corrupt(member, error.0))?;
        let document = parse_writer_metadata(&root).map_err(|reason| invalid(member, reason))?;
        if !document.name.eq(name) {
            return Err(invalid(
                member,
                format!(
                    "it describes writer \"{}\" but the manifest names \"{name}\"",
                    document.name
                ),
            ));
        }
        writers.push(document);
    }
    let log_bytes = read_member(&parsed.log_name)?;
    Ok(MetadataCabinet {
        snapshot_set_id: parsed.snapshot_set_id,
        machine_name: parsed.machine_name,
        shadows: parsed.shadows,
        aliases: parsed.aliases,
        backup_components,
        writers,
        log_name: parsed.log_name,
        log: String::from_utf8_lossy(&log_bytes).into_owned(),
    })
}

fn decode_utf16le(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() % 2 != 0 {
        return Err("the UTF-16LE text has an odd number of bytes".to_string());
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    let text = String::from_utf16(&units).map_err(|error| format!("not UTF-16LE text: {error}"))?;
    // A BOM is not written, but a manifest edited by hand may carry one.
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

struct ParsedManifest {
    snapshot_set_id: ShadowSetId,
    machine_name: String,
    shadows: Vec<ManifestShadow>,
    aliases: Vec<(String, String)>,
    backup_components_file: Option<String>,
    writer_files: Vec<(String, String)>,
    log_name: String,
}

fn required<'e>(element: &'e Element, attribute: &str) -> Result<&'e str, String> {
    element
        .attribute(attribute)
        .ok_or_else(|| format!("<{}> has no {attribute}", element.name))
}

fn guid(element: &Element, attribute: &str) -> Result<uuid::Uuid, String> {
    let text = required(element, attribute)?;
    parse_guid(text).ok_or_else(|| format!("<{}> {attribute} '{text}' is not a GUID", element.name))
}

/// A member name the manifest points to: a plain file name (a Windows manifest gives a full
/// temp path; only its last part is the member).
fn member_name(reference: &str) -> String {
    reference
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or(reference)
        .to_string()
}

fn parse_manifest(root: &Element) -> Result<ParsedManifest, String> {
    if root.name != "Manifest" {
        return Err(format!(
            "the root element is <{}>, not <Manifest>",
            root.name
        ));
    }
    let set = root
        .child("ShadowCopySet")
        .ok_or("there is no <ShadowCopySet>")?;
    let snapshot_set_id = ShadowSetId(guid(set, "GUID")?);
    let machine_name = set.attribute("MachineName").unwrap_or_default().to_string();
    let mut shadows = Vec::new();
    for shadow in set.children_named("ShadowCopy") {
        shadows.push(ManifestShadow {
            shadow_id: ShadowId(guid(shadow, "GUID")?),
            alias: shadow.attribute("Alias").map(str::to_string),
            original_volume: required(shadow, "OriginalVolume")?.to_string(),
            provider_id: ProviderId(guid(shadow, "Provider")?),
        });
    }
    let backup_components_file = match root.child("BackupComponents") {
        Some(element) => Some(member_name(required(element, "File")?)),
        None => None,
    };
    let mut aliases = Vec::new();
    if let Some(list) = root.child("Aliases") {
        for alias in list.children_named("Alias") {
            aliases.push((
                required(alias, "Name")?.to_string(),
                required(alias, "Value")?.to_string(),
            ));
        }
    }
    let mut writer_files = Vec::new();
    if let Some(list) = root.child("Writers") {
        for writer in list.children_named("Writer") {
            writer_files.push((
                decode_writer_name(required(writer, "Name")?),
                member_name(required(writer, "MetadataFile")?),
            ));
        }
        if let Some(count) = list.attribute("Count") {
            if count.parse::<usize>().ok() != Some(writer_files.len()) {
                return Err(format!(
                    "<Writers Count = '{count}'> lists {} writers",
                    writer_files.len()
                ));
            }
        }
    }
    let log_name = member_name(required(
        root.child("Logfile").ok_or("there is no <Logfile>")?,
        "Name",
    )?);
    Ok(ParsedManifest {
        snapshot_set_id,
        machine_name,
        shadows,
        aliases,
        backup_components_file,
        writer_files,
        log_name,
    })
}

fn parse_backup_type(text: &str) -> Result<BackupType, String> {
    [
        BackupType::Full,
        BackupType::Incremental,
        BackupType::Differential,
        BackupType::Log,
        BackupType::Copy,
    ]
    .into_iter()
    .find(|backup_type| backup_type.protocol_name().eq_ignore_ascii_case(text))
    .ok_or_else(|| format!("backupType '{text}' is not known"))
}

fn parse_backup_components(
    root: &Element,
    set_id: ShadowSetId,
) -> Result<BackupComponents, String> {
    if root.name != "BACKUP_COMPONENTS" {
        return Err(format!(
            "the root element is <{}>, not <BACKUP_COMPONENTS>",
            root.name
        ));
    }
    let document_set = ShadowSetId(guid(root, "snapshotSetId")?);
    if document_set != set_id {
        return Err(format!(
            "its snapshotSetId {document_set} is not the manifest's {set_id}"
        ));
    }
    let backup_type = parse_backup_type(required(root, "backupType")?)?;
    let mut writers = Vec::new();
    for writer in root.children_named("WRITER_COMPONENTS") {
        let mut components = Vec::new();
        for component in writer.children_named("COMPONENT") {
            let type_text = required(component, "componentType")?;
            components.push(BackupComponent {
                logical_path: component
                    .attribute("logicalPath")
                    .unwrap_or_default()
                    .to_string(),
                name: required(component, "componentName")?.to_string(),
                component_type: ComponentType::from_xml_name(type_text)
                    .ok_or_else(|| format!("componentType '{type_text}' is not known"))?,
            });
        }
        writers.push(BackupComponentsWriter {
            writer_id: WriterId(guid(writer, "writerId")?),
            instance_id: WriterInstanceId(guid(writer, "instanceId")?),
            components,
        });
    }
    Ok(BackupComponents {
        backup_type,
        writers,
    })
}

fn yes(element: &Element, attribute: &str) -> bool {
    element.attribute(attribute) == Some("yes")
}

fn parse_file_spec(element: &Element) -> Result<FileSpec, String> {
    Ok(FileSpec {
        volume: element.attribute("volume").unwrap_or_default().to_string(),
        path: required(element, "path")?.to_string(),
        filespec: required(element, "filespec")?.to_string(),
        recursive: yes(element, "recursive"),
    })
}

fn parse_writer_metadata(root: &Element) -> Result<WriterDocument, String> {
    if root.name != "WRITER_METADATA" {
        return Err(format!(
            "the root element is <{}>, not <WRITER_METADATA>",
            root.name
        ));
    }
    let identification = root
        .child("IDENTIFICATION")
        .ok_or("there is no <IDENTIFICATION>")?;
    let usage_text = required(identification, "usage")?;
    let source_text = required(identification, "dataSource")?;
    let restore = root
        .child("RESTORE_METHOD")
        .ok_or("there is no <RESTORE_METHOD>")?;
    let method_text = required(restore, "method")?;
    let writer_restore_text = required(restore, "writerRestore")?;
    let mut components = Vec::new();
    let mut excludes = Vec::new();
    if let Some(locations) = root.child("BACKUP_LOCATIONS") {
        for element in &locations.children {
            let (component_type, file_element) = match element.name.as_str() {
                "FILE_GROUP" => (ComponentType::Filegroup, "FILE_LIST"),
                "DATABASE" => (ComponentType::Database, "DATABASE_FILES"),
                "EXCLUDE_FILES_FROM_SNAPSHOT" => {
                    excludes.push(parse_file_spec(element)?);
                    continue;
                }
                _ => continue,
            };
            let files = element
                .children_named(file_element)
                .map(parse_file_spec)
                .collect::<Result<Vec<_>, _>>()?;
            components.push(Component {
                name: required(element, "componentName")?.to_string(),
                logical_path: element
                    .attribute("logicalPath")
                    .unwrap_or_default()
                    .to_string(),
                component_type,
                caption: element.attribute("caption").unwrap_or_default().to_string(),
                selectable: yes(element, "selectable"),
                selectable_for_restore: yes(element, "selectableForRestore"),
                notify_on_backup_complete: yes(element, "notifyOnBackupComplete"),
                files,
            });
        }
    }
    let instance_id = WriterInstanceId(guid(identification, "instanceId")?);
    Ok(WriterDocument {
        name: required(identification, "friendlyName")?.to_string(),
        writer_id: WriterId(guid(identification, "writerId")?),
        instance_id,
        metadata: WriterMetadata {
            instance_id: Some(instance_id),
            usage: Usage::from_xml_name(usage_text)
                .ok_or_else(|| format!("usage '{usage_text}' is not known"))?,
            source: DataSource::from_xml_name(source_text)
                .ok_or_else(|| format!("dataSource '{source_text}' is not known"))?,
            restore_method: RestoreMethod {
                method: RestoreMethodKind::from_xml_name(method_text)
                    .ok_or_else(|| format!("restore method '{method_text}' is not known"))?,
                writer_restore: WriterRestore::from_xml_name(writer_restore_text)
                    .ok_or_else(|| format!("writerRestore '{writer_restore_text}' is not known"))?,
                reboot_required: yes(restore, "rebootRequired"),
            },
            components,
            excludes,
        },
    })
}
