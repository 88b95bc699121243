//! The requests a requester can make, as one trait.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ServiceError;
use crate::engine::cabinet::{read_metadata_cab, MetadataCabinet};
use crate::engine::ids::{ProviderId, ShadowId, ShadowSetId};
use crate::engine::model::{
    CreatedSet, DeleteSelector, DriveTarget, Exposure, ProviderInfo, ShadowInfo, StorageInfo,
    VolumeInfo,
};
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

/// Which `list writers` listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterListing {
    Metadata,
    Detailed,
    Status,
}

/// One writer's state, for `vssadmin list writers`.
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
/// ([`ServiceObserver::cancellable`]), so only that requester can stop it.
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

/// What the service reports while it works on a request: verbose lines (writer inclusion and
/// exclusion), the writer trace (events, replies, writer log lines) and progress. The shell
/// renders them; the service never prints.
pub trait ServiceObserver: Send {
    /// A line for verbose mode: what DiskShadow's verbose mode prints (writer inclusion and
    /// exclusion).
    fn verbose_line(&mut self, line: &str);
    /// A line of the writer trace (`set trace on`): each event sent, each writer log line.
    fn trace_line(&mut self, _line: &str) {}
    /// A line shown whatever the verbose setting.
    fn line(&mut self, line: &str);
    /// A writer answered an event (the trace shows it with its latency).
    fn writer_reply(
        &mut self,
        writer: &str,
        event: &str,
        latency: std::time::Duration,
        outcome: Result<(), String>,
    ) {
        let shown = match outcome {
            Ok(()) => "ok".to_string(),
            Err(error) => format!("failed: {error}"),
        };
        self.trace_line(&format!(
            "Writer \"{writer}\" answered {event} in {} ms: {shown}",
            latency.as_millis()
        ));
    }
    /// Step-through mode: the coordinator is about to send `event`; `writers` are the
    /// `list writers status` lines. Returns false to abort the creation.
    /// `freeze_left`: while writers are frozen, what remains of their freeze deadline.
    fn step(
        &mut self,
        _event: &str,
        _writers: &[String],
        _freeze_left: Option<std::time::Duration>,
    ) -> bool {
        true
    }
    /// The running request can be stopped where that is safe (resync, the full copies after
    /// thaw), under this name: a requester that wants it stopped while its connection waits
    /// for the answer asks [`ShadowService::cancel`] on another connection.
    fn cancellable(&mut self, _operation: OperationId) {}
    /// Whether the requester wants the running request stopped (Ctrl-C). Asked at the
    /// request's safe points when the service runs in the requester's process; over the
    /// socket the requester sends [`ShadowService::cancel`] instead.
    fn stop_requested(&mut self) -> bool {
        false
    }
    /// Long work started / advanced / ended.
    fn progress_begin(&mut self, what: &str, total: u64);
    fn progress_advance(&mut self, units: u64);
    fn progress_end(&mut self);
}

/// An observer that keeps nothing.
#[derive(Debug, Default)]
pub struct SilentObserver;

impl ServiceObserver for SilentObserver {
    fn verbose_line(&mut self, _line: &str) {}
    fn line(&mut self, _line: &str) {}
    fn progress_begin(&mut self, _what: &str, _total: u64) {}
    fn progress_advance(&mut self, _units: u64) {}
    fn progress_end(&mut self) {}
}

/// The service, as requesters see it. `base_dir` arguments are the requester's working
/// directory, against which relative paths are resolved.
pub trait ShadowService {
    /// Resolves an image path, drive letter or volume GUID to a volume, registering an image
    /// file the first time it is named.
    fn resolve_volume(&mut self, spec: &str, base_dir: &Path) -> Result<VolumeInfo, ServiceError>;
    fn volumes(&mut self) -> Result<Vec<VolumeInfo>, ServiceError>;
    /// Registers an image file with a chosen copy-on-write chunk size (a power of two, 4 KiB to
    /// 1 MiB; `None`: the default) and the provider its shadows get unless a create names
    /// one (`None`: the system provider). Both are fixed at registration.
    fn register_volume(
        &mut self,
        path: &str,
        chunk_size: Option<u32>,
        provider: Option<ProviderId>,
        base_dir: &Path,
    ) -> Result<VolumeInfo, ServiceError>;

    fn drive_map(&mut self) -> Result<Vec<(char, DriveTarget)>, ServiceError>;
    fn map_drive(&mut self, letter: char, target: DriveTarget) -> Result<(), ServiceError>;
    fn unmap_drive(&mut self, letter: char) -> Result<(), ServiceError>;

    /// Runs the whole creation sequence (writers, when the context has them) and commits.
    fn create(
        &mut self,
        request: &CreateRequest,
        observer: &mut dyn ServiceObserver,
    ) -> Result<CreateOutcome, ServiceError>;
    fn shadows(&mut self) -> Result<Vec<ShadowInfo>, ServiceError>;
    fn delete_shadows(
        &mut self,
        selector: &DeleteSelector,
    ) -> Result<Vec<ShadowInfo>, ServiceError>;
    /// Reverts the shadow's volume to it. A volume in use (attached, or with a file system
    /// mounted from it) is refused with `VSS_E_VOLUME_IN_USE`; `force_dismount` detaches
    /// diskshadow's own attachment first (and says so), but never unmounts a file system.
    fn revert(
        &mut self,
        shadow: ShadowId,
        force_dismount: bool,
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError>;
    /// LUN resync: copies the shadow onto `destination` (its original volume when `None`).
    /// The destination stays usable while it runs; without `no_volume_check`, a destination
    /// that is mounted, attached or open elsewhere is refused with `VSS_E_VOLUME_IN_USE`.
    fn resync(
        &mut self,
        shadow: ShadowId,
        destination: Option<crate::engine::ids::VolumeId>,
        no_volume_check: bool,
        observer: &mut dyn ServiceObserver,
    ) -> Result<crate::engine::resync::ResyncOutcome, ServiceError>;
    fn providers(&mut self) -> Result<Vec<ProviderInfo>, ServiceError>;
    /// Asks a running request (named to its requester by [`ServiceObserver::cancellable`]) to
    /// stop at its next safe point. Returns at once; the request itself answers with the
    /// state it left. A request that already ended is `VSS_E_OBJECT_NOT_FOUND`.
    fn cancel(&mut self, operation: OperationId) -> Result<(), ServiceError>;

    fn storage(&mut self) -> Result<Vec<StorageInfo>, ServiceError>;
    /// Sets (or with `None` removes) the diff-area limit; returns shadows deleted to fit.
    fn set_max_diff_area(
        &mut self,
        volume: &VolumeInfo,
        max_bytes: Option<u64>,
    ) -> Result<Vec<ShadowInfo>, ServiceError>;

    /// Exposes a persistent shadow at a directory, drive letter or share.
    fn expose(
        &mut self,
        shadow: ShadowId,
        target: &str,
        base_dir: &Path,
    ) -> Result<Exposure, ServiceError>;
    /// Removes an exposure named by shadow ID, drive, directory or share; returns the shadow.
    fn unexpose(&mut self, target: &str, base_dir: &Path) -> Result<ShadowInfo, ServiceError>;

    /// Serves a live volume read-write at a target (a share or NBD URL, or a directory or
    /// drive for a FUSE file); every write passes the provider.
    fn attach(
        &mut self,
        volume: &str,
        target: &str,
        base_dir: &Path,
    ) -> Result<Exposure, ServiceError>;
    /// Ends an attachment named by its volume or target; returns the volume.
    fn detach(&mut self, target: &str, base_dir: &Path) -> Result<VolumeInfo, ServiceError>;
    /// The live attachments: volume and where it is served.
    fn attachments(&mut self) -> Result<Vec<(VolumeInfo, Exposure)>, ServiceError>;
    /// Who writes to a volume's image outside diskshadow (loop devices backed by it, other
    /// processes holding it open for writing): each such write makes its shadows suspect.
    fn outside_users(&mut self, volume: &VolumeInfo) -> Result<Vec<String>, ServiceError>;

    /// Reads `length` bytes of a volume or shadow at `offset`.
    fn read(
        &mut self,
        target: &str,
        offset: u64,
        length: u64,
        base_dir: &Path,
    ) -> Result<Vec<u8>, ServiceError>;
    /// Writes through the provider, so every shadow keeps its content.
    fn write(
        &mut self,
        volume: &str,
        offset: u64,
        data: &[u8],
        base_dir: &Path,
    ) -> Result<(), ServiceError>;

    /// Reads `length` bytes of a volume or shadow at `offset` (clamped to its end) straight
    /// into `output`, the requester's regular file or pipe; returns the bytes delivered. With
    /// `sparse`, a file output ending where the bytes go gets holes where the device has
    /// holes or blocks of zeros. The bytes never cross the socket (the descriptor does).
    #[allow(clippy::too_many_arguments)] // `read`'s arguments and the descriptor's.
    fn read_into(
        &mut self,
        target: &str,
        offset: u64,
        length: u64,
        output: BorrowedFd<'_>,
        sparse: bool,
        base_dir: &Path,
        observer: &mut dyn ServiceObserver,
    ) -> Result<u64, ServiceError>;
    /// Writes all of `input` (the requester's regular file, from its position, or pipe)
    /// through the provider at `offset`, then makes it durable; returns the bytes written.
    fn write_from(
        &mut self,
        volume: &str,
        offset: u64,
        input: BorrowedFd<'_>,
        base_dir: &Path,
        observer: &mut dyn ServiceObserver,
    ) -> Result<u64, ServiceError>;

    /// Checks the store's catalog and diff areas without changing anything.
    fn check_store(&mut self) -> Result<StoreCheck, ServiceError>;

    /// `list writers [metadata | detailed | status]`, in DiskShadow's layout.
    fn list_writers(&mut self, listing: WriterListing) -> Result<Vec<String>, ServiceError>;
    /// Every registered writer's state (identifying writers never identified).
    fn writer_statuses(&mut self) -> Result<Vec<WriterStatusView>, ServiceError>;
    /// `end backup`: BackupComplete, then BackupShutdown, to the writers of the last set.
    fn end_backup(&mut self, observer: &mut dyn ServiceObserver) -> Result<(), ServiceError>;
    /// `load metadata`: keeps a metadata .cab for `import` or a restore. The requester reads
    /// and parses the file ([`read_metadata_file`]), so a hostile file can only fail the
    /// requester that loads it, never the service and the other requesters' state.
    fn load_metadata(&mut self, cabinet: MetadataCabinet) -> Result<LoadedMetadata, ServiceError>;
    /// `simulate restore`: which writers a restore involves, sending no event. `verify` are
    /// the `writer verify` entries, each of which must be present.
    fn simulate_restore(&mut self, verify: &[String]) -> Result<Vec<String>, ServiceError>;
    /// `begin restore` (PreRestore) and `end restore` (PostRestore).
    fn begin_restore(
        &mut self,
        verify: &[String],
        observer: &mut dyn ServiceObserver,
    ) -> Result<(), ServiceError>;
    fn end_restore(&mut self, observer: &mut dyn ServiceObserver) -> Result<(), ServiceError>;

    /// Releases everything this requester owns (its volatile shadows). Called by `reset`,
    /// `exit` and when the requester ends.
    fn release_requester(&mut self) -> Result<Vec<ShadowInfo>, ServiceError>;

    /// `array attach DIR [--name NAME]`: attaches this store (host) to a storage array (an
    /// absolute directory), making the directory an array if it is not one yet.
    fn attach_array(
        &mut self,
        dir: &Path,
        name: Option<&str>,
    ) -> Result<crate::engine::array::ArrayInfo, ServiceError>;
    /// `array attach rbd:POOL --conf FILE [--id CLIENT] [--name NAME]`: attaches this store
    /// to a Ceph pool (`conf` absolute), which must be reachable and exist.
    fn attach_rbd_pool(
        &mut self,
        pool: &str,
        conf: &Path,
        client_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<crate::engine::array::ArrayInfo, ServiceError>;
    /// `array detach NAME`.
    fn detach_array(&mut self, name: &str) -> Result<(), ServiceError>;
    /// `array list`.
    fn arrays(&mut self) -> Result<Vec<crate::engine::array::ArrayInfo>, ServiceError>;
    /// `import`: surfaces the transportable shadows of the loaded metadata from the arrays
    /// this store is attached to.
    fn import(&mut self) -> Result<Vec<ShadowInfo>, ServiceError>;
    /// `mask <setid>`: removes an imported set's shadows from this store.
    fn mask(&mut self, set_id: ShadowSetId) -> Result<Vec<ShadowInfo>, ServiceError>;
    /// `break [writable] <setid>`: an imported set's shadow LUNs become volumes of this store.
    fn break_set(
        &mut self,
        set_id: ShadowSetId,
        writable: bool,
    ) -> Result<Vec<VolumeInfo>, ServiceError>;
}

/// Reads and parses a metadata .cab for `load metadata`, in the requester's process (VSS's
/// requester owns the document too). The parser is bounded and catches its readers' panics,
/// so a bad file is one error naming the file and member.
pub fn read_metadata_file(path: &Path) -> Result<MetadataCabinet, ServiceError> {
    read_metadata_cab(path).map_err(|error| {
        super::local::engine_error(
            error.vss_code(),
            format!("{} is not a usable metadata file: {error}", path.display()),
        )
        .with_help("give a .cab written by `set metadata` and `create`")
    })
}
