//! Writing a metadata cabinet (`set metadata`): the manifest, the backup components
//! document and the writer metadata documents in DiskShadow's style, then the cabinet.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use quick_xml::events::{BytesDecl, Event};
use quick_xml::Writer;

use crate::engine::ids::ShadowSetId;
use crate::engine::writer::metadata::{ComponentType, FileSpec};

use super::{
    encode_writer_name, is_log_name, utf16le, writer_document_name, BackupComponents,
    MetadataCabinet, MetadataWriteError, WriterDocument, BACKUP_COMPONENTS_FILE, MANIFEST_FILE,
};

/// Writes the cabinet and returns the member names in insertion order, for
/// `Inserted file X into .cab file Y`.
pub fn write_metadata_cab(
    path: &Path,
    cabinet: &MetadataCabinet,
) -> Result<Vec<String>, MetadataWriteError> {
    if !is_log_name(&cabinet.log_name) {
        return Err(MetadataWriteError::BadLogName(cabinet.log_name.clone()));
    }
    let mut members: Vec<(String, Vec<u8>)> =
        vec![(MANIFEST_FILE.to_string(), utf16le(&manifest_text(cabinet)))];
    if let Some(backup_components) = &cabinet.backup_components {
        members.push((
            BACKUP_COMPONENTS_FILE.to_string(),
            backup_components_xml(cabinet.snapshot_set_id, backup_components).into_bytes(),
        ));
    }
    for (index, writer) in cabinet.writers.iter().enumerate() {
        members.push((
            writer_document_name(index),
            writer_metadata_xml(writer).into_bytes(),
        ));
    }
    members.push((cabinet.log_name.clone(), cabinet.log.clone().into_bytes()));

    let io_error = |source| MetadataWriteError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut builder = cab::CabinetBuilder::new();
    {
        let folder = builder.add_folder(cab::CompressionType::MsZip);
        for (name, _) in &members {
            folder.add_file(name.clone());
        }
    }
    let file = File::create(path).map_err(io_error)?;
    let mut writer = builder.build(file).map_err(io_error)?;
    let mut index = 0;
    while let Some(mut member) = writer.next_file().map_err(io_error)? {
        let data = members
            .get(index)
            .map(|(_, data)| data.as_slice())
            .unwrap_or_default();
        member.write_all(data).map_err(io_error)?;
        index += 1;
    }
    let file = writer.finish().map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    Ok(members.into_iter().map(|(name, _)| name).collect())
}

/// Escapes a value for a single-quoted attribute.
fn escape_attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// The manifest in DiskShadow's exact style (reference §3.9).
pub fn manifest_text(cabinet: &MetadataCabinet) -> String {
    let attribute = |name: &str, value: &str| format!("{name} = '{}' ", escape_attribute(value));
    let mut text = String::from("<Manifest >");
    text.push_str(&format!(
        "<ShadowCopySet {}{}>",
        attribute("GUID", &cabinet.snapshot_set_id.to_string()),
        attribute("MachineName", &cabinet.machine_name)
    ));
    for shadow in &cabinet.shadows {
        text.push_str("<ShadowCopy ");
        text.push_str(&attribute("GUID", &shadow.shadow_id.to_string()));
        if let Some(alias) = &shadow.alias {
            text.push_str(&attribute("Alias", alias));
        }
        text.push_str(&attribute("OriginalVolume", &shadow.original_volume));
        text.push_str(&attribute("Provider", &shadow.provider_id.to_string()));
        text.push_str("></ShadowCopy>");
    }
    text.push_str("</ShadowCopySet>");
    if cabinet.backup_components.is_some() {
        text.push_str(&format!(
            "<BackupComponents {}></BackupComponents>",
            attribute("File", BACKUP_COMPONENTS_FILE)
        ));
    }
    text.push_str("<Aliases >");
    for (name, value) in &cabinet.aliases {
        text.push_str(&format!(
            "<Alias {}{}></Alias>",
            attribute("Name", name),
            attribute("Value", value)
        ));
    }
    text.push_str("</Aliases>");
    text.push_str(&format!(
        "<Writers {}>",
        attribute("Count", &cabinet.writers.len().to_string())
    ));
    for (index, writer) in cabinet.writers.iter().enumerate() {
        text.push_str(&format!(
            "<Writer {}{}></Writer>",
            attribute("Name", &encode_writer_name(&writer.name)),
            attribute("MetadataFile", &writer_document_name(index))
        ));
    }
    text.push_str("</Writers>");
    text.push_str(&format!(
        "<Logfile {}></Logfile>",
        attribute("Name", &cabinet.log_name)
    ));
    text.push_str("</Manifest>");
    text
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// A GUID as the VSS XML documents write it: lower case, no braces.
fn bare_guid(uuid: &uuid::Uuid) -> String {
    uuid.hyphenated().to_string()
}

/// All file sets back up with every backup type (`VSS_FSBT_ALL_BACKUP_REQUIRED |
/// VSS_FSBT_ALL_SNAPSHOT_REQUIRED`), as in the reference documents.
const FILESPEC_BACKUP_TYPE_ALL: &str = "3855";

fn xml_writer() -> Writer<Vec<u8>> {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 1);
    // Writing into a Vec cannot fail.
    let _ = writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
    writer
}

fn finish_xml(writer: Writer<Vec<u8>>) -> String {
    String::from_utf8_lossy(&writer.into_inner()).into_owned()
}

/// The writer metadata document (reference §3.7).
pub fn writer_metadata_xml(document: &WriterDocument) -> String {
    let metadata = &document.metadata;
    let mut writer = xml_writer();
    let writer_id = bare_guid(&document.writer_id.0);
    let instance_id = bare_guid(&document.instance_id.0);
    let file_attributes = |file: &FileSpec| {
        vec![
            ("volume", file.volume.clone()),
            ("path", file.path.clone()),
            ("filespec", file.filespec.clone()),
            ("recursive", yes_no(file.recursive).to_string()),
        ]
    };
    let result = writer
        .create_element("WRITER_METADATA")
        .with_attributes([
            ("xmlns", "x-schema:#VssWriterMetadataInfo"),
            ("version", "1.2"),
        ])
        .write_inner_content(|inner| {
            inner
                .create_element("IDENTIFICATION")
                .with_attributes([
                    ("writerId", writer_id.as_str()),
                    ("instanceId", instance_id.as_str()),
                    ("friendlyName", document.name.as_str()),
                    ("usage", metadata.usage.xml_name()),
                    ("dataSource", metadata.source.xml_name()),
                    ("majorVersion", "0"),
                    ("minorVersion", "0"),
                ])
                .write_empty()?;
            inner
                .create_element("RESTORE_METHOD")
                .with_attributes([
                    ("method", metadata.restore_method.method.xml_name()),
                    (
                        "writerRestore",
                        metadata.restore_method.writer_restore.xml_name(),
                    ),
                    (
                        "rebootRequired",
                        yes_no(metadata.restore_method.reboot_required),
                    ),
                ])
                .write_empty()?;
            inner
                .create_element("BACKUP_LOCATIONS")
                .write_inner_content(|locations| {
                    for component in &metadata.components {
                        let (element, file_element) = match component.component_type {
                            ComponentType::Database => ("DATABASE", "DATABASE_FILES"),
                            ComponentType::Filegroup => ("FILE_GROUP", "FILE_LIST"),
                        };
                        let mut attributes: Vec<(&str, &str)> = Vec::new();
                        if !component.logical_path.is_empty() {
                            attributes.push(("logicalPath", component.logical_path.as_str()));
                        }
                        attributes.extend([
                            ("componentName", component.name.as_str()),
                            ("caption", component.caption.as_str()),
                            ("restoreMetadata", "no"),
                            (
                                "notifyOnBackupComplete",
                                yes_no(component.notify_on_backup_complete),
                            ),
                            ("selectable", yes_no(component.selectable)),
                            (
                                "selectableForRestore",
                                yes_no(component.selectable_for_restore),
                            ),
                            ("componentFlags", "0"),
                        ]);
                        locations
                            .create_element(element)
                            .with_attributes(attributes)
                            .write_inner_content(|files| {
                                for file in &component.files {
                                    let mut attributes = file_attributes(file);
                                    attributes.push((
                                        "filespecBackupType",
                                        FILESPEC_BACKUP_TYPE_ALL.to_string(),
                                    ));
                                    files
                                        .create_element(file_element)
                                        .with_attributes(
                                            attributes
                                                .iter()
                                                .map(|(key, value)| (*key, value.as_str())),
                                        )
                                        .write_empty()?;
                                }
                                Ok(())
                            })?;
                    }
                    for exclude in &metadata.excludes {
                        let attributes = file_attributes(exclude);
                        locations
                            .create_element("EXCLUDE_FILES_FROM_SNAPSHOT")
                            .with_attributes(
                                attributes.iter().map(|(key, value)| (*key, value.as_str())),
                            )
                            .write_empty()?;
                    }
                    Ok(())
                })?;
            Ok(())
        });
    debug_assert!(result.is_ok(), "writing XML into memory cannot fail");
    finish_xml(writer)
}

/// The backup components document (reference §3.8).
pub fn backup_components_xml(snapshot_set_id: ShadowSetId, document: &BackupComponents) -> String {
    let mut writer = xml_writer();
    let set_id = bare_guid(&snapshot_set_id.0);
    let result = writer
        .create_element("BACKUP_COMPONENTS")
        .with_attributes([
            ("xmlns", "x-schema:#VssComponentMetadata"),
            ("version", "1.2"),
            ("bootableSystemStateBackup", "no"),
            ("selectComponents", "yes"),
            ("backupType", document.backup_type.protocol_name()),
            ("partialFileSupport", "no"),
            ("snapshotSetId", set_id.as_str()),
        ])
        .write_inner_content(|inner| {
            for writer_components in &document.writers {
                let instance_id = bare_guid(&writer_components.instance_id.0);
                let writer_id = bare_guid(&writer_components.writer_id.0);
                inner
                    .create_element("WRITER_COMPONENTS")
                    .with_attributes([
                        ("instanceId", instance_id.as_str()),
                        ("writerId", writer_id.as_str()),
                        ("backupSchema", "0"),
                    ])
                    .write_inner_content(|components| {
                        for component in &writer_components.components {
                            let mut attributes: Vec<(&str, &str)> = Vec::new();
                            if !component.logical_path.is_empty() {
                                attributes.push(("logicalPath", component.logical_path.as_str()));
                            }
                            attributes.push(("componentName", component.name.as_str()));
                            attributes.push(("componentType", component.component_type.xml_name()));
                            components
                                .create_element("COMPONENT")
                                .with_attributes(attributes)
                                .write_empty()?;
                        }
                        Ok(())
                    })?;
            }
            Ok(())
        });
    debug_assert!(result.is_ok(), "writing XML into memory cannot fail");
    finish_xml(writer)
}
