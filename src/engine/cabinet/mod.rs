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
mod read;
mod write;
pub mod xml;

pub use read::{read_metadata_cab, MAX_CABINET_BYTES, MAX_EXTRACTED_BYTES, MAX_MEMBER_BYTES};
pub use write::{backup_components_xml, manifest_text, write_metadata_cab, writer_metadata_xml};

use crate::engine::ids::{ProviderId, ShadowId, ShadowSetId, WriterId, WriterInstanceId};
use crate::engine::vss::{BackupType, VssCode};
use crate::engine::writer::metadata::{ComponentType, WriterMetadata};

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
