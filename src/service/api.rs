//! The service API's own types: what requests carry and return, and the observer a request
//! reports to. The requests themselves are the table in [`super::protocol`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ServiceError;
use crate::engine::cabinet::{read_metadata_cab, MetadataCabinet};
use crate::engine::ids::{ProviderId, ShadowId};
use crate::engine::model::{CreatedSet, VolumeInfo};
use crate::engine::vss::{Attributes, BackupType, Context};

/// One volume of the shadow copy set being built by `add volume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetVolume {
    pub volume: VolumeInfo,
    pub provider: Option<ProviderId>,
}

/// Writer components chosen by `writer verify` / `writer exclude`: the coordinator's own type.
pub use crate::engine::coordinator::WriterSelection;

/// Everything `create` needs from the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub volumes: Vec<SetVolume>,
    pub context: Context,
    /// DIFFERENTIAL or PLEX, TRANSPORTABLE, ROLLBACK_RECOVERY, TXF_RECOVERY, NO_AUTORECOVERY.
    pub extra_attributes: Attributes,
    pub backup_type: BackupType,
    pub writers: WriterSelection,
    /// Shadow aliases (`add volume … alias x`) by position in `volumes`, for the metadata file.
    pub aliases: Vec<Option<String>>,
    /// Where `set metadata` asked the .cab to be written, if anywhere.
    pub metadata_path: Option<PathBuf>,
    /// Step-through mode: ask the requester before each writer event.
    pub step: bool,
    /// When writers take part and `metadata_path` is `None`, DiskShadow saves the metadata in
    /// the working directory as `<yyyy-MM-dd>_<hh-mm-ss>_<COMPUTERNAME>.cab`: this directory,
    /// and the requester's UTC offset in seconds for the name's local time.
    pub default_metadata: Option<(PathBuf, i32)>,
}

impl CreateRequest {
    /// A set of one volume on its default provider, with no alias, writer selection, metadata
    /// file or step mode: what `vssadmin create shadow` asks for.
    pub fn one_volume(volume: VolumeInfo, context: Context, extra_attributes: Attributes) -> Self {
        Self {
            volumes: vec![SetVolume {
                volume,
                provider: None,
            }],
            context,
            extra_attributes,
            backup_type: BackupType::Copy,
            writers: WriterSelection::default(),
            aliases: vec![None],
            metadata_path: None,
            step: false,
            default_metadata: None,
        }
    }
}

/// The writers as the service's writer host knows them, for `list writers` (which the session
/// renders in DiskShadow's layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterReport {
    /// Problems with the writer registrations, shown as warnings before the listing.
    pub problems: Vec<String>,
    pub writers: Vec<ReportedWriter>,
}

/// One writer of a [`WriterReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedWriter {
    pub status: WriterStatusView,
    /// Why it did not identify itself, when it did not (its code is `status.failure`).
    pub failure_message: Option<String>,
    /// What it said of itself in `identify`; `None` when it did not identify itself or the
    /// report was asked without metadata.
    pub metadata: Option<crate::engine::writer::metadata::WriterMetadata>,
    /// The display name (`\\?\Volume{…}\ [C:\]`) of each volume its metadata names that
    /// the store knows, by the name the writer gives it.
    pub volume_names: std::collections::BTreeMap<String, String>,
}

/// One writer's state, for `list writers status`, the step prompt and `vssadmin list writers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterStatusView {
    pub name: String,
    pub writer_id: crate::engine::ids::WriterId,
    pub instance_id: Option<crate::engine::ids::WriterInstanceId>,
    pub state: crate::engine::vss::WriterState,
    /// `None`: no error.
    pub failure: Option<crate::engine::vss::VssCode>,
}

/// What `load metadata` found in a metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedMetadata {
    pub set_id: crate::engine::ids::ShadowSetId,
    /// `(name, value)`: the aliases saved with the set.
    pub aliases: Vec<(String, String)>,
    /// The members read, in order (`Extracted file … from .cab file …` in verbose mode).
    pub files: Vec<String>,
    /// Names of the writers that took part in the backup.
    pub writers: Vec<String>,
}

/// What `create` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOutcome {
    pub set: CreatedSet,
    /// Files inserted into the metadata .cab, in order (`Inserted file … into .cab file …`).
    pub metadata_files: Vec<String>,
    /// The metadata .cab written, if any (`set metadata`, or DiskShadow's default name).
    pub metadata_path: Option<PathBuf>,
    /// Why the metadata .cab could not be written; the set was created all the same.
    #[serde(default)]
    pub metadata_error: Option<String>,
    /// The requester stopped the full copies made after thaw (Ctrl-C): the state that left
    /// (the set is kept, its copies made again when the service next starts).
    #[serde(default)]
    pub copy_stopped: Option<String>,
}

/// Names one running request that can be stopped ([`ShadowService::cancel`]). The service
/// makes it up at random and tells it only to the requester that made the request
/// ([`super::ServiceObserver::cancellable`]), so only that requester can stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OperationId(pub uuid::Uuid);

impl std::fmt::Display for OperationId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0.hyphenated())
    }
}

/// What `check-store` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCheck {
    pub clean: bool,
    pub volumes_checked: usize,
    pub shadows_checked: usize,
    pub preserved_chunks: usize,
    /// Diff-area bytes no shadow needs.
    pub leaked_bytes: u64,
    /// Each problem names the file (or the catalog entry) it is about.
    pub problems: Vec<String>,
    /// Shadows that are not served, and why.
    #[serde(default)]
    pub suspect_shadows: Vec<SuspectShadow>,
    /// `diff/<volume>` directories of no registered volume.
    #[serde(default)]
    pub orphaned_diff_areas: Vec<PathBuf>,
}

/// A shadow copy `check-store` found not served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspectShadow {
    pub shadow: ShadowId,
    pub reason: String,
}

/// The trait is generated from the protocol table, with the request enum and the client.
pub use super::protocol::ShadowService;

/// Reads and parses a metadata .cab for `load metadata`, in the requester's process (VSS's
/// requester owns the document too). The parser is bounded and catches its readers' panics,
/// so a bad file is one error naming the file and member.
pub fn read_metadata_file(path: &Path) -> Result<MetadataCabinet, ServiceError> {
    read_metadata_cab(path).map_err(|error| {
        super::way_out::engine_error(
            error.vss_code(),
            format!("{} is not a usable metadata file: {error}", path.display()),
        )
        .with_help("give a .cab written by `set metadata` and `create`")
    })
}
