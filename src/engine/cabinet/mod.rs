//! DiskShadow's metadata cabinet (`set metadata` / `load metadata`, reference §3.9): a real
//! Microsoft Cabinet holding, in this order,
//! 1. `Manifest.xml`: UTF-16LE without BOM, DiskShadow's attribute style
//!    (`Name = 'value'`, single quotes, spaces around `=`, spaces in writer names as `%s`);
//! 2. `BCDocument.xml`: the backup components document, only when writers took part;
//! 3. `WM0.xml` … `WMn.xml`: one writer metadata document per writer that took part, the
//!    excluded ones too, as DiskShadow writes them (reference §3.7);
//! 4. `DisXXXX.tmp`: the DiskShadow log.
//!
//! **Invariant:** what [`write_metadata_cab`] writes, [`read_metadata_cab`] reads back
//! unchanged. Our WMD file lists carry a `volume` attribute the Windows schema lacks, because
//! a volume here is an image file and not the first part of the path.

mod guard;
pub mod xml;

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use quick_xml::events::{BytesDecl, Event};
use quick_xml::Writer;

use crate::engine::ids::{
    parse_guid, ProviderId, ShadowId, ShadowSetId, WriterId, WriterInstanceId,
};
use crate::engine::vss::{BackupType, VssCode};
use crate::engine::writer::metadata::{
    Component, ComponentType, DataSource, FileSpec, RestoreMethod, RestoreMethodKind, Usage,
    WriterMetadata, WriterRestore,
};
use xml::Element;

pub const MANIFEST_FILE: &str = "Manifest.xml";
pub const BACKUP_COMPONENTS_FILE: &str = "BCDocument.xml";

/// One shadow of the set, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestShadow {
    pub shadow_id: ShadowId,
    pub alias: Option<String>,
    /// As DiskShadow names it: `C:\`, or the image path.
    pub original_volume: String,
    pub provider_id: ProviderId,
}

/// One writer's part in the backup components document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupComponentsWriter {
    pub writer_id: WriterId,
    pub instance_id: WriterInstanceId,
    pub components: Vec<BackupComponent>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupComponent {
    pub logical_path: String,
    pub name: String,
    pub component_type: ComponentType,
}

impl BackupComponent {
    /// `\logical\path\name`.
    pub fn full_path(&self) -> String {
        let logical_path = self.logical_path.trim_matches('\\');
        if logical_path.is_empty() {
            format!("\\{}", self.name)
        } else {
            format!("\\{}\\{}", logical_path, self.name)
        }
    }
}

/// The backup components document (BCD).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupComponents {
    pub backup_type: BackupType,
    pub writers: Vec<BackupComponentsWriter>,
}

/// One writer metadata document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriterDocument {
    pub name: String,
    pub writer_id: WriterId,
    pub instance_id: WriterInstanceId,
    pub metadata: WriterMetadata,
}

/// Everything a metadata cabinet holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetadataCabinet {
    pub snapshot_set_id: ShadowSetId,
    pub machine_name: String,
    pub shadows: Vec<ManifestShadow>,
    /// `(name, value)`, e.g. `("VSS_SHADOW_SET", "{…}")`.
    pub aliases: Vec<(String, String)>,
    /// `None` when no writer took part (`nowriters`): no `BCDocument.xml` then.
    pub backup_components: Option<BackupComponents>,
    pub writers: Vec<WriterDocument>,
    /// The log's member name, `DisXXXX.tmp`.
    pub log_name: String,
    pub log: String,
}

/// `DisXXXX.tmp` from 16 bits of the given number (DiskShadow names its log after a temp
/// file: four upper-case hex digits).
pub fn log_file_name(seed: u128) -> String {
    format!("Dis{:04X}.tmp", (seed & 0xFFFF) as u16)
}

/// Why the cabinet could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MetadataWriteError {
    #[error("cannot write the metadata file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the log file name '{0}' is not of the form DisXXXX.tmp")]
    BadLogName(String),
}

impl MetadataWriteError {
    pub fn vss_code(&self) -> VssCode {
        VssCode::VSS_E_UNEXPECTED
    }
}

/// Why a cabinet could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MetadataReadError {
    #[error("cannot read the metadata file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a cabinet (.cab) file: {reason}")]
    NotACabinet { path: String, reason: String },
    #[error("{path} is a cabinet but not a DiskShadow metadata file: it has no {member}")]
    MissingMember { path: String, member: String },
    #[error("{member} in {path} is corrupt: {reason}")]
    Corrupt {
        path: String,
        member: String,
        reason: String,
    },
    #[error("{member} in {path} is not a valid document: {reason}")]
    Invalid {
        path: String,
        member: String,
        reason: String,
    },
}

impl MetadataReadError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            MetadataReadError::Io { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            MetadataReadError::NotACabinet { .. } | MetadataReadError::Corrupt { .. } => {
                VssCode::VSS_E_CORRUPT_XML_DOCUMENT
            }
            MetadataReadError::MissingMember { .. } | MetadataReadError::Invalid { .. } => {
                VssCode::VSS_E_INVALID_XML_DOCUMENT
            }
        }
    }
}

fn writer_document_name(index: usize) -> String {
    format!("WM{index}.xml")
}

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

fn is_log_name(name: &str) -> bool {
    name.len() == 11
        && name.starts_with("Dis")
        && name.ends_with(".tmp")
        && name[3..7]
            .chars()
            .all(|character| character.is_ascii_hexdigit())
}

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Escapes a value for a single-quoted attribute.
fn escape_attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// DiskShadow writes spaces in writer names as `%s`; a literal `%` becomes `%%` so the
/// encoding can be undone.
fn encode_writer_name(name: &str) -> String {
    name.replace('%', "%%").replace(' ', "%s")
}

fn decode_writer_name(encoded: &str) -> String {
    let mut decoded = String::new();
    let mut characters = encoded.chars();
    while let Some(character) = characters.next() {
        if character != '%' {
            decoded.push(character);
            continue;
        }
        match characters.next() {
            Some('s') => decoded.push(' '),
            Some('%') => decoded.push('%'),
            Some(other) => {
                decoded.push('%');
                decoded.push(other);
            }
            None => decoded.push('%'),
        }
    }
    decoded
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

impl BackupComponents {
    /// The backup components document of a backup session (the writers and components that
    /// took part).
    pub fn from_session(session: &crate::engine::coordinator::BackupSession) -> Self {
        Self {
            backup_type: session.backup_type,
            writers: session
                .writers
                .iter()
                .map(|writer| BackupComponentsWriter {
                    writer_id: writer.writer_id,
                    instance_id: writer.instance_id,
                    components: writer
                        .components
                        .iter()
                        .map(|component| BackupComponent {
                            logical_path: component.logical_path.clone(),
                            name: component.name.clone(),
                            component_type: component.component_type,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl WriterDocument {
    /// One document per writer that took part in the backup, excluded ones too, in the
    /// order they were identified: DiskShadow writes `WM0.xml` … `WM10.xml` for 11 writers
    /// whatever the selection kept.
    pub fn for_identified(gathered: &crate::engine::coordinator::GatheredMetadata) -> Vec<Self> {
        gathered
            .writers
            .iter()
            .map(|writer| WriterDocument {
                name: writer.name.clone(),
                writer_id: writer.writer_id,
                instance_id: writer.instance_id,
                metadata: writer.metadata.clone(),
            })
            .collect()
    }
}

impl MetadataCabinet {
    /// The writers and selected components of the loaded backup, for `begin restore` /
    /// `simulate restore`. Writers without a metadata document are left out.
    pub fn restore_writers(&self) -> Vec<crate::engine::coordinator::RestoreWriter> {
        let Some(backup_components) = &self.backup_components else {
            return Vec::new();
        };
        backup_components
            .writers
            .iter()
            .filter_map(|selected| {
                let document = self
                    .writers
                    .iter()
                    .find(|document| document.writer_id == selected.writer_id)?;
                Some(crate::engine::coordinator::RestoreWriter {
                    writer_id: document.writer_id,
                    name: document.name.clone(),
                    metadata: document.metadata.clone(),
                    components: selected
                        .components
                        .iter()
                        .map(BackupComponent::full_path)
                        .collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_names_encode_spaces_as_percent_s_and_decode_back() {
        assert_eq!(
            encode_writer_name("Task Scheduler Writer"),
            "Task%sScheduler%sWriter"
        );
        for name in ["Task Scheduler Writer", "100% Writer", "a%sb"] {
            assert_eq!(decode_writer_name(&encode_writer_name(name)), name);
        }
    }

    #[test]
    fn log_names_have_four_hex_digits() {
        assert_eq!(log_file_name(0x7A07), "Dis7A07.tmp");
        assert!(is_log_name("Dis598D.tmp"));
        assert!(!is_log_name("Dis59.tmp"));
    }
}
