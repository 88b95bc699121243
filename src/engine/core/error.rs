//! The engine's errors: one enum per operation, each with its VSS code, and the failure
//! inside the shared write path that the operations translate into theirs.

use std::io;
use std::path::PathBuf;

use crate::engine::catalog::CatalogError;
use crate::engine::ids::{ProviderId, ShadowId, ShadowSetId, VolumeId};
use crate::engine::vss::{limits, VssCode};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the store {} is in use by another diskshadow process",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot open the diff area of volume {volume}: {source}")]
    DiffArea { volume: VolumeId, source: io::Error },
    #[error("cannot finish the revert interrupted by the last crash: {0}")]
    Revert(Box<RevertError>),
    #[error(
        "{} holds preserved chunks of volume {volume}, which the catalog ({}/base.json and \
         journal.log) does not know: \
         the catalog lost transactions or was replaced",
        diff_dir.display(),
        catalog_dir.display()
    )]
    OrphanedDiffArea {
        volume: String,
        diff_dir: PathBuf,
        catalog_dir: PathBuf,
    },
}

impl OpenError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            OpenError::Locked { .. } => VssCode::VSS_E_BAD_STATE,
            OpenError::Revert(error) => error.vss_code(),
            _ => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no volume '{spec}' is registered")]
    NotFound { spec: String },
    #[error("drive {letter}: is not mapped")]
    DriveNotMapped { letter: char },
    #[error("drive {letter}: is mapped to the directory {}, not to a volume image", path.display())]
    DriveIsDirectory { letter: char, path: PathBuf },
    #[error("'{spec}' is not a volume: {why}")]
    NotAVolume { spec: String, why: String },
    #[error("the image file {} does not exist (relative paths start at {})", path.display(), base.display())]
    Missing { path: PathBuf, base: PathBuf },
    #[error("{} is {kind}, not a regular file; a volume is an image file", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error("{} is {size} bytes, larger than the 64 TiB VSS allows for a volume", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("chunk size {chunk_size} is invalid")]
    InvalidChunkSize { chunk_size: u32 },
    #[error("volume {volume} ({}) cannot be used: {reason}", path.display())]
    Unavailable {
        volume: VolumeId,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("provider {provider} is not registered")]
    UnknownProvider { provider: ProviderId },
    #[error("{spec} cannot be used as a volume: {source}")]
    Rbd {
        spec: String,
        source: crate::engine::rbd::file::OpenError,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl VolumeError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            VolumeError::Rbd { source, .. } => source.vss_code(),
            VolumeError::NotFound { .. }
            | VolumeError::DriveNotMapped { .. }
            | VolumeError::Missing { .. }
            | VolumeError::Unavailable { .. }
            | VolumeError::UnknownProvider { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            VolumeError::DriveIsDirectory { .. }
            | VolumeError::NotAVolume { .. }
            | VolumeError::NotRegularFile { .. }
            | VolumeError::TooLarge { .. }
            | VolumeError::InvalidChunkSize { .. } => VssCode::VSS_E_VOLUME_NOT_SUPPORTED,
            VolumeError::Io { .. } | VolumeError::Catalog(_) => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriveMapError {
    #[error("'{letter}' is not a drive letter")]
    InvalidLetter { letter: char },
    #[error("drive {letter}: is not mapped; nothing to unmap")]
    NotMapped { letter: char },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl DriveMapError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            DriveMapError::InvalidLetter { .. } | DriveMapError::NotMapped { .. } => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            DriveMapError::Catalog(_) => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("the shadow copy set has no volumes")]
    NoVolumes,
    #[error(
        "a shadow copy set holds at most {} volumes, this one has {count}",
        limits::MAX_VOLUMES_PER_SET
    )]
    TooManyVolumes { count: usize },
    #[error("volume {volume} is in the set twice")]
    DuplicateVolume { volume: VolumeId },
    #[error("volume {volume} is not registered")]
    UnknownVolume { volume: VolumeId },
    #[error("volume {volume} cannot be shadowed: {reason}")]
    VolumeUnavailable { volume: VolumeId, reason: String },
    #[error("provider {provider} is not registered")]
    UnknownProvider { provider: ProviderId },
    #[error("the provider {provider} cannot make {what} shadow copies of volume {volume}")]
    UnsupportedByProvider {
        volume: VolumeId,
        provider: ProviderId,
        what: String,
    },
    #[error(
        "volume {volume} has {existing} shadow copies, so it cannot get {wanted} ones: a volume \
         keeps one differential provider at a time"
    )]
    ProviderConflict {
        volume: VolumeId,
        wanted: &'static str,
        existing: &'static str,
    },
    #[error("the attributes DIFFERENTIAL and PLEX exclude each other")]
    ConflictingAttributes,
    #[error("volume {volume} already has {limit} shadow copies, the most VSS allows")]
    TooManyShadows { volume: VolumeId, limit: usize },
    #[error(
        "volume {volume} already has {limit} client-accessible shadow copies, the most VSS allows"
    )]
    TooManyClientAccessible { volume: VolumeId, limit: usize },
    #[error("a shadow copy set {set_id} already exists")]
    SetIdInUse { set_id: ShadowSetId },
    #[error("the store has used up its shadow sequence numbers")]
    SequencesExhausted,
    #[error("cannot prepare volume {volume} for the shadow copy: {source}")]
    Io { volume: VolumeId, source: io::Error },
    #[error(
        "volume {volume} is being resynchronized from shadow copy {source_shadow}; part of it \
         is still read from that shadow, so it cannot be shadowed until the resync has finished"
    )]
    ResyncInProgress {
        volume: VolumeId,
        source_shadow: ShadowId,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl CreateError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            CreateError::NoVolumes | CreateError::DuplicateVolume { .. } => {
                VssCode::VSS_E_BAD_STATE
            }
            CreateError::TooManyVolumes { .. } => VssCode::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED,
            CreateError::UnknownVolume { .. } | CreateError::UnknownProvider { .. } => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            CreateError::VolumeUnavailable { .. } => VssCode::VSS_E_VOLUME_NOT_SUPPORTED,
            CreateError::UnsupportedByProvider { .. } | CreateError::ProviderConflict { .. } => {
                VssCode::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER
            }
            CreateError::ConflictingAttributes => VssCode::VSS_E_UNSUPPORTED_CONTEXT,
            CreateError::TooManyShadows { .. } | CreateError::TooManyClientAccessible { .. } => {
                VssCode::VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED
            }
            CreateError::SetIdInUse { .. } => VssCode::VSS_E_OBJECT_ALREADY_EXISTS,
            CreateError::ResyncInProgress { .. } => VssCode::VSS_E_RESYNC_IN_PROGRESS,
            CreateError::SequencesExhausted | CreateError::Io { .. } | CreateError::Catalog(_) => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("{what} was not found")]
    NotFound { what: String },
    #[error("cannot free the diff area of volume {volume}: {source}")]
    Io { volume: VolumeId, source: io::Error },
    #[error("shadow copy {shadow} is being resynchronized onto volume {volume}")]
    ResyncSource { shadow: ShadowId, volume: VolumeId },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl DeleteError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            DeleteError::NotFound { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            DeleteError::ResyncSource { .. } => VssCode::VSS_E_RESYNC_IN_PROGRESS,
            DeleteError::Io { .. } | DeleteError::Catalog(_) => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(
        "cannot fold the redirected chunks of volume {volume} back into its image: {source}; \
         the chunks stay where they are and are read from there"
    )]
    Io { volume: VolumeId, source: io::Error },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl FoldError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            FoldError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                VssCode::VSS_E_INSUFFICIENT_STORAGE
            }
            FoldError::Io { .. } | FoldError::Catalog(_) => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error("shadow copy {shadow} was not found")]
    NotFound { shadow: ShadowId },
    #[error(
        "shadow copy {shadow} was made in the {context} context; only persistent shadow copies \
         can be reverted to"
    )]
    UnsupportedContext {
        shadow: ShadowId,
        context: &'static str,
    },
    #[error("shadow copy {shadow} is suspect ({reason}); it cannot be reverted to")]
    Suspect { shadow: ShadowId, reason: String },
    #[error("volume {volume} cannot be written: {reason}")]
    VolumeUnavailable { volume: VolumeId, reason: String },
    #[error(
        "the diff area of volume {volume} is too small to revert while keeping shadow copy \
         {shadow}"
    )]
    InsufficientStorage { volume: VolumeId, shadow: ShadowId },
    #[error("revert of volume {volume} failed: {source}; the revert resumes when the store is opened again")]
    Io { volume: VolumeId, source: io::Error },
    #[error("volume {volume} is being resynchronized from shadow copy {source_shadow}")]
    ResyncInProgress {
        volume: VolumeId,
        source_shadow: ShadowId,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl RevertError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            RevertError::NotFound { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            RevertError::UnsupportedContext { .. } => VssCode::VSS_E_UNSUPPORTED_CONTEXT,
            RevertError::Suspect { .. } | RevertError::VolumeUnavailable { .. } => {
                VssCode::VSS_E_VOLUME_NOT_SUPPORTED
            }
            RevertError::InsufficientStorage { .. } => VssCode::VSS_E_INSUFFICIENT_STORAGE,
            RevertError::ResyncInProgress { .. } => VssCode::VSS_E_RESYNC_IN_PROGRESS,
            RevertError::Io { .. } | RevertError::Catalog(_) => {
                VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("volume {volume} is not registered")]
    VolumeNotFound { volume: VolumeId },
    #[error("shadow copy {shadow} was not found")]
    ShadowNotFound { shadow: ShadowId },
    #[error("shadow copy {shadow} is suspect and is not served: {reason}")]
    Suspect { shadow: ShadowId, reason: String },
    #[error("volume {volume} cannot be opened: {reason}")]
    Unavailable { volume: VolumeId, reason: String },
    #[error("cannot check volume {volume}: {source}")]
    Io { volume: VolumeId, source: io::Error },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl DeviceError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            DeviceError::VolumeNotFound { .. } | DeviceError::ShadowNotFound { .. } => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            DeviceError::Suspect { .. } | DeviceError::Unavailable { .. } => {
                VssCode::VSS_E_VOLUME_NOT_SUPPORTED
            }
            DeviceError::Io { .. } | DeviceError::Catalog(_) => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    #[error("shadow copy {shadow} was not found")]
    NotFound { shadow: ShadowId },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl ExposureError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            ExposureError::NotFound { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            ExposureError::Catalog(_) => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("volume {volume} is not registered")]
    VolumeNotFound { volume: VolumeId },
    #[error("cannot shrink the diff area of volume {volume}: {source}")]
    Io { volume: VolumeId, source: io::Error },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl StorageError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            StorageError::VolumeNotFound { .. } => VssCode::VSS_E_OBJECT_NOT_FOUND,
            StorageError::Io { .. } | StorageError::Catalog(_) => VssCode::VSS_E_UNEXPECTED,
        }
    }
}

impl CreateError {
    /// A failure of the shared write path while a set was created on `volume`.
    pub(super) fn from_write(volume: VolumeId, failure: WriteFailure) -> CreateError {
        match failure {
            WriteFailure::Catalog(error) => CreateError::Catalog(error),
            other => CreateError::Io {
                volume,
                source: other.into(),
            },
        }
    }
}

/// What went wrong inside the shared write path.
#[derive(Debug)]
pub(super) enum WriteFailure {
    Io(io::Error),
    Catalog(CatalogError),
    /// Making room would delete the shadow a revert is restoring.
    WouldDeleteProtected,
}

impl From<WriteFailure> for io::Error {
    fn from(failure: WriteFailure) -> io::Error {
        match failure {
            WriteFailure::Io(error) => error,
            WriteFailure::Catalog(error) => io::Error::other(error.to_string()),
            WriteFailure::WouldDeleteProtected => io::Error::other("the diff area is too small"),
        }
    }
}
