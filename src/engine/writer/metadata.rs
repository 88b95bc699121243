//! The writer metadata document (WMD) as a writer sends it in its `identify` answer
//! (`docs/writer-protocol.md`, "metadata"; reference §3.7).

use serde::{Deserialize, Serialize};

use crate::engine::ids::WriterInstanceId;

/// The `metadata` object of an `identify` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterMetadata {
    /// The writer instance (one per running writer process). A writer that leaves it out gets
    /// one from the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<WriterInstanceId>,
    pub usage: Usage,
    pub source: DataSource,
    pub restore_method: RestoreMethod,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub excludes: Vec<FileSpec>,
}

/// `VSS_USAGE_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Usage {
    BootableSystemState,
    SystemService,
    UserData,
    Other,
}

impl Usage {
    /// The WMD XML spelling (`usage="USER_DATA"`).
    pub fn xml_name(self) -> &'static str {
        match self {
            Usage::BootableSystemState => "BOOTABLE_SYSTEM_STATE",
            Usage::SystemService => "SYSTEM_SERVICE",
            Usage::UserData => "USER_DATA",
            Usage::Other => "OTHER",
        }
    }

    pub fn from_xml_name(name: &str) -> Option<Self> {
        [
            Usage::BootableSystemState,
            Usage::SystemService,
            Usage::UserData,
            Usage::Other,
        ]
        .into_iter()
        .find(|usage| usage.xml_name() == name)
    }
}

/// `VSS_SOURCE_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    TransactedDb,
    NontransactedDb,
    Other,
}

impl DataSource {
    pub fn xml_name(self) -> &'static str {
        match self {
            DataSource::TransactedDb => "TRANSACTION_DB",
            DataSource::NontransactedDb => "NONTRANSACTION_DB",
            DataSource::Other => "OTHER",
        }
    }

    pub fn from_xml_name(name: &str) -> Option<Self> {
        [
            DataSource::TransactedDb,
            DataSource::NontransactedDb,
            DataSource::Other,
        ]
        .into_iter()
        .find(|source| source.xml_name() == name)
    }
}

/// The writer-wide restore method (mandatory in a WMD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMethod {
    pub method: RestoreMethodKind,
    pub writer_restore: WriterRestore,
    #[serde(default)]
    pub reboot_required: bool,
}

/// `VSS_RESTOREMETHOD_ENUM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMethodKind {
    RestoreIfNotThere,
    RestoreIfCanReplace,
    StopRestoreStart,
    RestoreToAlternateLocation,
    RestoreAtReboot,
    RestoreAtRebootIfCannotReplace,
    Custom,
    RestoreStopStart,
}

impl RestoreMethodKind {
    const ALL: [RestoreMethodKind; 8] = [
        RestoreMethodKind::RestoreIfNotThere,
        RestoreMethodKind::RestoreIfCanReplace,
        RestoreMethodKind::StopRestoreStart,
        RestoreMethodKind::RestoreToAlternateLocation,
        RestoreMethodKind::RestoreAtReboot,
        RestoreMethodKind::RestoreAtRebootIfCannotReplace,
        RestoreMethodKind::Custom,
        RestoreMethodKind::RestoreStopStart,
    ];

    /// The `VSS_RME_*` name DiskShadow prints (`Restore method = VSS_RME_CUSTOM`).
    pub fn vss_name(self) -> &'static str {
        match self {
            RestoreMethodKind::RestoreIfNotThere => "VSS_RME_RESTORE_IF_NOT_THERE",
            RestoreMethodKind::RestoreIfCanReplace => "VSS_RME_RESTORE_IF_CAN_REPLACE",
            RestoreMethodKind::StopRestoreStart => "VSS_RME_STOP_RESTORE_START",
            RestoreMethodKind::RestoreToAlternateLocation => {
                "VSS_RME_RESTORE_TO_ALTERNATE_LOCATION"
            }
            RestoreMethodKind::RestoreAtReboot => "VSS_RME_RESTORE_AT_REBOOT",
            RestoreMethodKind::RestoreAtRebootIfCannotReplace => {
                "VSS_RME_RESTORE_AT_REBOOT_IF_CANNOT_REPLACE"
            }
            RestoreMethodKind::Custom => "VSS_RME_CUSTOM",
            RestoreMethodKind::RestoreStopStart => "VSS_RME_RESTORE_STOP_START",
        }
    }

    /// The WMD XML spelling (`method="RESTORE_IF_CAN_REPLACE"`).
    pub fn xml_name(self) -> &'static str {
        match self {
            RestoreMethodKind::RestoreIfNotThere => "RESTORE_IF_NONE_THERE",
            RestoreMethodKind::RestoreIfCanReplace => "RESTORE_IF_CAN_BE_REPLACED",
            RestoreMethodKind::StopRestoreStart => "STOP_RESTART_SERVICE",
            RestoreMethodKind::RestoreToAlternateLocation => "RESTORE_TO_ALTERNATE_LOCATION",
            RestoreMethodKind::RestoreAtReboot => "REPLACE_AT_REBOOT",
            RestoreMethodKind::RestoreAtRebootIfCannotReplace => {
                "REPLACE_AT_REBOOT_IF_CANNOT_REPLACE"
            }
            RestoreMethodKind::Custom => "CUSTOM",
            RestoreMethodKind::RestoreStopStart => "RESTORE_STOP_START",
        }
    }

    pub fn from_xml_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|method| method.xml_name() == name)
    }
}

/// `VSS_WRITERRESTORE_ENUM`: whether the writer wants restore events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterRestore {
    Never,
    IfReplaceFails,
    Always,
}

impl WriterRestore {
    /// `VSS_WRE_NEVER`, as `list writers metadata` prints it.
    pub fn vss_name(self) -> &'static str {
        match self {
            WriterRestore::Never => "VSS_WRE_NEVER",
            WriterRestore::IfReplaceFails => "VSS_WRE_IF_REPLACE_FAILS",
            WriterRestore::Always => "VSS_WRE_ALWAYS",
        }
    }

    /// The WMD XML spelling (`writerRestore="never"`).
    pub fn xml_name(self) -> &'static str {
        match self {
            WriterRestore::Never => "never",
            WriterRestore::IfReplaceFails => "ifReplaceFails",
            WriterRestore::Always => "always",
        }
    }

    pub fn from_xml_name(name: &str) -> Option<Self> {
        [
            WriterRestore::Never,
            WriterRestore::IfReplaceFails,
            WriterRestore::Always,
        ]
        .into_iter()
        .find(|restore| restore.xml_name() == name)
    }

    /// Whether the writer takes part in restores (gets `pre_restore`/`post_restore`).
    pub fn wants_restore_events(self) -> bool {
        self != WriterRestore::Never
    }
}

/// One component of a writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    #[serde(default)]
    pub logical_path: String,
    #[serde(rename = "type")]
    pub component_type: ComponentType,
    #[serde(default)]
    pub caption: String,
    #[serde(default = "default_true")]
    pub selectable: bool,
    #[serde(default)]
    pub selectable_for_restore: bool,
    #[serde(default)]
    pub notify_on_backup_complete: bool,
    #[serde(default)]
    pub files: Vec<FileSpec>,
}

fn default_true() -> bool {
    true
}

impl Component {
    /// The full path as DiskShadow prints it: `\logical\path\name`, or `\name` when the logical
    /// path is empty.
    pub fn full_path(&self) -> String {
        let logical_path = self.logical_path.trim_matches('\\');
        if logical_path.is_empty() {
            format!("\\{}", self.name)
        } else {
            format!("\\{}\\{}", logical_path, self.name)
        }
    }
}

/// `VSS_COMPONENT_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentType {
    Database,
    Filegroup,
}

impl ComponentType {
    /// `VSS_CT_FILEGROUP [2]`, as `list writers metadata` prints it.
    pub fn vss_name(self) -> &'static str {
        match self {
            ComponentType::Database => "VSS_CT_DATABASE",
            ComponentType::Filegroup => "VSS_CT_FILEGROUP",
        }
    }

    pub fn value(self) -> u32 {
        match self {
            ComponentType::Database => 1,
            ComponentType::Filegroup => 2,
        }
    }

    /// The BCD spelling (`componentType="filegroup"`).
    pub fn xml_name(self) -> &'static str {
        match self {
            ComponentType::Database => "database",
            ComponentType::Filegroup => "filegroup",
        }
    }

    pub fn from_xml_name(name: &str) -> Option<Self> {
        match name {
            "database" => Some(ComponentType::Database),
            "filegroup" => Some(ComponentType::Filegroup),
            _ => None,
        }
    }
}

/// A file set: files under `path` on `volume` matching `filespec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// The volume as the shell names it: image path, drive letter or volume GUID.
    pub volume: String,
    pub path: String,
    pub filespec: String,
    #[serde(default)]
    pub recursive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_example_parses() {
        let text = r#"{
          "instance_id": "{6f1b9d7e-3c2a-4e5f-9a8b-1c2d3e4f5a6c}",
          "usage": "user_data",
          "source": "transacted_db",
          "restore_method": {"method": "restore_if_can_replace", "writer_restore": "never", "reboot_required": false},
          "components": [
            {"name": "journal", "logical_path": "", "type": "database", "caption": "Journal",
             "selectable": true, "selectable_for_restore": false, "notify_on_backup_complete": true,
             "files": [{"volume": "/srv/vol/data.img", "path": "/journal", "filespec": "*.jnl", "recursive": false}]}
          ],
          "excludes": [{"volume": "/srv/vol/data.img", "path": "/tmp", "filespec": "*", "recursive": true}]
        }"#;
        let metadata: WriterMetadata = serde_json::from_str(text).expect("valid metadata");
        assert_eq!(metadata.components[0].full_path(), "\\journal");
        assert_eq!(
            metadata.components[0].component_type,
            ComponentType::Database
        );
        assert_eq!(metadata.excludes.len(), 1);
    }

    #[test]
    fn unknown_values_are_schema_errors_and_unknown_fields_are_tolerated() {
        let bad_usage = r#"{"usage": "sometimes", "source": "other",
            "restore_method": {"method": "custom", "writer_restore": "never"}}"#;
        assert!(serde_json::from_str::<WriterMetadata>(bad_usage).is_err());
        // A writer from a newer contract may send more; it must keep working unchanged.
        let unknown_field = r#"{"usage": "other", "source": "other", "colour": 1,
            "restore_method": {"method": "custom", "writer_restore": "never"}}"#;
        assert!(serde_json::from_str::<WriterMetadata>(unknown_field).is_ok());
    }
}
