//! What a user can do about an engine failure: the way out shown under its message (`help:`
//! in the shell, `Help:` in vssadmin).
//!
//! The engine's errors say what went wrong, with their VSS code, and nothing about the
//! requesters' commands and options; the advice, in the words of the shell and the CLI, lives
//! here, one `match` per engine error type. An error that wraps another takes the inner one's
//! way out; the shadow-copy coordinator's errors are mapped here too ([`coordinator_error`]).

use std::fmt::Display;

use crate::engine::array::{ArrayAttachError, ArrayError, ImportError, ImportedSetError};
use crate::engine::catalog::CatalogError;
use crate::engine::coordinator::shadow_copy::ShadowCopyError;
use crate::engine::coordinator::{CreationFailure, SelectionError};
use crate::engine::core::{
    CreateError, DeleteError, DeviceError, DriveMapError, ExposureError, FoldError, FullCopyError,
    OpenError, RevertError, StorageError, VolumeError,
};
use crate::engine::expose::{MountError, NbdError};
use crate::engine::rbd::file::OpenError as RbdOpenError;
use crate::engine::rbd::RbdError;
use crate::engine::resync::ResyncError;
use crate::engine::vss::VssCode;

use super::error::{ServiceError, ServiceErrorKind};

/// An engine failure as the service hands it on: its message, VSS code and way out.
pub trait EngineFailure: Display {
    fn code(&self) -> VssCode;
    /// The way out, in one sentence, or `None` when the message says all there is to say.
    fn way_out(&self) -> Option<String>;
}

/// The service error for an engine failure: its kind follows from its VSS code.
pub fn engine_failure(error: &dyn EngineFailure) -> ServiceError {
    engine_error(error.code(), error.to_string()).with_way_out(error.way_out())
}

/// The service error for a message and VSS code from the engine (without a way out).
pub fn engine_error(code: VssCode, message: String) -> ServiceError {
    let kind = match code {
        VssCode::VSS_E_OBJECT_NOT_FOUND => ServiceErrorKind::NotFound,
        VssCode::VSS_E_NOT_SUPPORTED | VssCode::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER => {
            ServiceErrorKind::NotSupported
        }
        VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR | VssCode::VSS_E_INSUFFICIENT_STORAGE => {
            ServiceErrorKind::Io
        }
        _ => ServiceErrorKind::Invalid,
    };
    ServiceError::new(kind, message).with_code(code)
}

/// The one place a shadow-copy protocol error becomes a service error: its kind, VSS code
/// and the way out the requester is shown.
pub fn coordinator_error(error: ShadowCopyError) -> ServiceError {
    let message = error.to_string();
    let code = error.vss_code();
    // The engine failure inside, if any, knows the more precise way out.
    let way_out = match &error {
        ShadowCopyError::Creation {
            provider: Some(inner),
            ..
        } => inner.way_out(),
        ShadowCopyError::NotKept { source } => source.way_out(),
        ShadowCopyError::Delete(inner) => inner.way_out(),
        ShadowCopyError::Revert(inner) => inner.way_out(),
        ShadowCopyError::Device(inner) => inner.way_out(),
        ShadowCopyError::Exposure(inner) => inner.way_out(),
        ShadowCopyError::Storage(inner) => inner.way_out(),
        ShadowCopyError::FullCopy { source } => source.way_out(),
        _ => None,
    };
    let failure = match &error {
        ShadowCopyError::SetInProgress => ServiceError::invalid(message).with_code(code).with_help(
            "try again when it has finished (vssadmin create shadow /AutoRetry=N waits)",
        ),
        ShadowCopyError::Selection(selection) => {
            let help = match selection {
                SelectionError::EveryWriterFailedIdentify { .. } => {
                    "`list writers status` shows why each writer failed; `writer exclude` them, or `set context … nowriters`, to create the set without writers"
                }
                _ => "`list writers` shows the writers and their components",
            };
            ServiceError::new(ServiceErrorKind::Writer, message)
                .with_code(code)
                .with_help(help)
        }
        ShadowCopyError::NotKept { .. } => ServiceError::new(ServiceErrorKind::Io, message)
            .with_code(code)
            .with_help("check the store's disk; no shadow copy of the set was kept"),
        ShadowCopyError::Creation { failure, .. } => {
            let (kind, help) = match &**failure {
                CreationFailure::CommitFailed { .. } => (
                    ServiceErrorKind::Invalid,
                    "the provider refused the set: `list providers` shows the providers (plex needs the full-copy provider, `add volume … provider {…}`)",
                ),
                CreationFailure::StepAborted { .. } => (
                    ServiceErrorKind::Writer,
                    "you aborted in step mode; every writer was told, and no shadow copy of the set was kept",
                ),
                CreationFailure::FlushAndHold(_) | CreationFailure::CommitTooSlow { .. } => (
                    ServiceErrorKind::Io,
                    "a file system could not be held, or the commit was too slow; try again when the volumes are less busy",
                ),
                CreationFailure::WriterFailed { .. }
                | CreationFailure::FreezeDeadlineExceeded { .. } => (
                    ServiceErrorKind::Writer,
                    "`list writers status` shows which writer failed; no shadow copy of the set was kept",
                ),
            };
            ServiceError::new(kind, message)
                .with_code(code)
                .with_help(help)
        }
        ShadowCopyError::Restore(_) => {
            ServiceError::new(ServiceErrorKind::Writer, message).with_code(code)
        }
        ShadowCopyError::Writers(_) => ServiceError::new(ServiceErrorKind::Writer, message)
            .with_code(code)
            .with_help("`list writers status` shows each writer's state and failure"),
        ShadowCopyError::Overlay { .. }
        | ShadowCopyError::OverlayRemoval { .. }
        | ShadowCopyError::RevertRecovered { .. } => ServiceError::io(message),
        ShadowCopyError::ShadowNotFound { .. } => ServiceError::not_found(message),
        ShadowCopyError::Metadata { .. }
        | ShadowCopyError::Delete(_)
        | ShadowCopyError::Revert(_)
        | ShadowCopyError::Device(_)
        | ShadowCopyError::Exposure(_)
        | ShadowCopyError::Storage(_)
        | ShadowCopyError::FullCopy { .. } => engine_error(code, message),
    };
    failure.with_way_out(way_out)
}

/// Implements [`EngineFailure`] for an engine error type: its code is its own `vss_code`, its
/// way out the `match` given.
macro_rules! ways_out {
    ($($error:ty => |$this:ident| $way_out:expr;)*) => {
        $(
            impl EngineFailure for $error {
                fn code(&self) -> VssCode {
                    <$error>::vss_code(self)
                }
                fn way_out(&self) -> Option<String> {
                    let $this = self;
                    $way_out
                }
            }
        )*
    };
}

fn say(text: &str) -> Option<String> {
    Some(text.to_string())
}

const LIST_SHADOWS: &str = "list shadows to see the existing ones";
const CHECK_STORE: &str = "run `diskshadow check-store` to see what the store holds";

impl EngineFailure for CatalogError {
    fn code(&self) -> VssCode {
        VssCode::VSS_E_UNEXPECTED
    }
    fn way_out(&self) -> Option<String> {
        match self {
            CatalogError::Corrupt { .. } => say(
                "run `diskshadow check-store` for details, restore the store from a backup, or \
                 move the store aside to start an empty one",
            ),
            CatalogError::Io { .. } | CatalogError::ReadOnly => None,
        }
    }
}

ways_out! {
    OpenError => |error| match error {
        OpenError::Locked { .. } => say(
            "stop that process (or let its service exit) and try again, or choose another \
             store with --store",
        ),
        OpenError::Io { .. } => say("check that the store directory is writable"),
        OpenError::Catalog(inner) => inner.way_out(),
        OpenError::DiffArea { .. } => say("run `diskshadow check-store` after fixing the disk"),
        OpenError::Revert(inner) => inner.way_out(),
        OpenError::OrphanedDiffArea { .. } => say(
            "restore the store from a backup (run `diskshadow check-store` to see what it \
             holds), or move that directory aside if it is not needed",
        ),
    };
    VolumeError => |error| match error {
        VolumeError::NotFound { .. } => {
            say("name its image file to register it, or list volumes to see the known ones")
        }
        VolumeError::DriveNotMapped { .. } => {
            say("map it to an image file in the store's drive map first")
        }
        VolumeError::DriveIsDirectory { .. } => say("map it to an image file"),
        VolumeError::NotAVolume { .. } => {
            say("name the whole volume (an image file, a drive letter or a volume GUID)")
        }
        VolumeError::Missing { .. } => say("check the path"),
        VolumeError::InvalidChunkSize { .. } => {
            say("use a power of two from 4096 (4 KiB) to 1048576 (1 MiB)")
        }
        VolumeError::UnknownProvider { .. } => {
            say("list providers to see the available ones (cow, row, plex)")
        }
        VolumeError::Catalog(inner) => inner.way_out(),
        VolumeError::NotRegularFile { .. }
        | VolumeError::TooLarge { .. }
        | VolumeError::Unavailable { .. }
        | VolumeError::Io { .. }
 => None,
        VolumeError::Rbd { source, .. } => source.way_out(),
    };
    DriveMapError => |error| match error {
        DriveMapError::InvalidLetter { .. } => say("use A to Z"),
        DriveMapError::NotMapped { .. } => None,
        DriveMapError::Catalog(inner) => inner.way_out(),
    };
    CreateError => |error| match error {
        CreateError::NoVolumes => say("add a volume first"),
        CreateError::TooManyVolumes { .. } => say("split it into several sets"),
        CreateError::DuplicateVolume { .. } => say("add each volume once"),
        CreateError::UnknownVolume { .. } => say("register its image file first"),
        CreateError::UnknownProvider { .. } => say("list providers to see the available ones"),
        CreateError::UnsupportedByProvider { .. } => say(
            "choose a provider that can (`list providers`; plex needs the full-copy provider: \
             `add volume … provider {…}`), or drop the attribute",
        ),
        CreateError::ProviderConflict { existing, .. } => Some(format!(
            "delete its {existing} shadow copies first, or use the same provider"
        )),
        CreateError::ConflictingAttributes => say("ask for one of them"),
        CreateError::TooManyShadows { .. } | CreateError::TooManyClientAccessible { .. } => {
            say("delete old ones (delete shadows oldest) and try again")
        }
        CreateError::SetIdInUse { .. } => say("use a new set ID"),
        CreateError::SequencesExhausted => say("move to a new store"),
        CreateError::Catalog(inner) => inner.way_out(),
        CreateError::VolumeUnavailable { .. }
        | CreateError::Io { .. }
        | CreateError::ResyncInProgress { .. } => None,
    };
    DeleteError => |error| match error {
        DeleteError::NotFound { .. } => say(LIST_SHADOWS),
        DeleteError::Io { .. } => say(CHECK_STORE),
        DeleteError::ResyncSource { .. } => say("delete it when the resync has finished"),
        DeleteError::Catalog(inner) => inner.way_out(),
    };
    FoldError => |error| match error {
        FoldError::Io { .. } => say("free space on the image's disk and run the command again"),
        FoldError::Catalog(inner) => inner.way_out(),
    };
    RevertError => |error| match error {
        RevertError::NotFound { .. } => say(LIST_SHADOWS),
        RevertError::UnsupportedContext { .. } => say("set context persistent before create"),
        RevertError::Suspect { .. } => say("delete it"),
        RevertError::InsufficientStorage { .. } => {
            say("raise its maximum size (resize shadowstorage) and try again")
        }
        RevertError::ResyncInProgress { .. } => say("revert it when the resync has finished"),
        RevertError::Catalog(inner) => inner.way_out(),
        RevertError::VolumeUnavailable { .. } | RevertError::Io { .. } => None,
    };
    DeviceError => |error| match error {
        DeviceError::ShadowNotFound { .. } => say(LIST_SHADOWS),
        DeviceError::Suspect { .. } => say("delete it and create a new one"),
        DeviceError::Catalog(inner) => inner.way_out(),
        DeviceError::VolumeNotFound { .. }
        | DeviceError::Unavailable { .. }
        | DeviceError::Io { .. } => None,
    };
    ExposureError => |error| match error {
        ExposureError::NotFound { .. } => say(LIST_SHADOWS),
        ExposureError::Catalog(inner) => inner.way_out(),
    };
    StorageError => |error| match error {
        StorageError::Catalog(inner) => inner.way_out(),
        StorageError::VolumeNotFound { .. } | StorageError::Io { .. } => None,
    };
    FullCopyError => |error| match error {
        FullCopyError::NotFound { .. } => say(LIST_SHADOWS),
        _ => None,
    };
    ArrayError => |_error| None;
    ArrayAttachError => |error| match error {
        ArrayAttachError::Array(inner) => inner.way_out(),
        ArrayAttachError::InvalidName { .. } => say("use letters, digits, `-`, `_` and `.`"),
        ArrayAttachError::NameInUse { .. } => say("choose another name with --name"),
        ArrayAttachError::NotAttached { .. } => say("`diskshadow array list` shows its arrays"),
        ArrayAttachError::InUse { .. } => say("delete, mask or break them before detaching"),
        ArrayAttachError::Catalog(inner) => inner.way_out(),
        ArrayAttachError::Rbd(inner) => inner.way_out(),
        ArrayAttachError::AlreadyAttached { .. }
        | ArrayAttachError::RbdConfMissing { .. }
        | ArrayAttachError::InvalidPool { .. } => None,
    };
    ImportError => |error| match error {
        ImportError::NothingLoaded => say("`load metadata <file.cab>` first"),
        ImportError::NotTransportable { .. } => say("create it with `set option transportable`"),
        ImportError::NotInAttachedArray { .. } => {
            say("`diskshadow array attach DIR` the array that holds it")
        }
        _ => None,
    };
    ImportedSetError => |error| match error {
        ImportedSetError::SetNotFound { .. } => say(LIST_SHADOWS),
        ImportedSetError::Exposed { .. } => say("unexpose it first"),
        _ => None,
    };
    RbdError => |error| match error {
        RbdError::NotInstalled { package, .. } => Some(format!("apt-get install {package}")),
        _ => None,
    };
    RbdOpenError => |error| match error {
        RbdOpenError::NotAttached { pool } => Some(format!(
            "attach it first: diskshadow array attach rbd:{pool} --conf FILE"
        )),
        RbdOpenError::Rbd(inner) => inner.way_out(),
    };
    MountError => |error| match error {
        MountError::MountPointMissing { path } => {
            Some(format!("create the directory first (mkdir -p {})", path.display()))
        }
        MountError::MountPointNotADirectory { .. } | MountError::MountPointNotEmpty { .. } => {
            say("choose an empty directory")
        }
        MountError::MountPointInUse { path } => Some(format!(
            "unexpose what is mounted there (or run `fusermount3 -uz {}` if it is a leftover) \
             or choose another directory",
            path.display()
        )),
        MountError::DevFuseUnavailable { .. } => say(
            "load the module (`modprobe fuse`), or give the container the device \
             (`--device /dev/fuse`)",
        ),
        MountError::FusermountMissing => say("install it (Debian/Ubuntu: `apt-get install fuse3`)"),
        MountError::InvalidFileName { .. } => say("use a plain name such as volume.img"),
        MountError::DeviceIsReadOnly => say("mount it read-only"),
        MountError::Unmount { path, .. } => {
            Some(format!("run `fusermount3 -uz {}`", path.display()))
        }
        MountError::UnreadableFilesystem { .. } | MountError::Mount { .. } => None,
    };
    NbdError => |error| match error {
        NbdError::InvalidExportName => say("give a short name such as the shadow ID"),
        NbdError::DeviceIsReadOnly => say("export it read-only"),
        NbdError::SocketInUse { .. } => {
            say("choose another socket path or stop that export first")
        }
        NbdError::PathIsNotASocket { .. } => say("choose another path or remove that file"),
        NbdError::NotLoopback { .. } | NbdError::Listen { .. } | NbdError::Thread(_) => None,
    };
    ResyncError => |error| match error {
        ResyncError::NotFound { .. } => say(LIST_SHADOWS),
        ResyncError::UnsupportedContext { .. } => say("set context persistent before create"),
        ResyncError::Suspect { .. } => say("delete it"),
        ResyncError::DestinationNotFound { .. } => say("name its image file to register it"),
        ResyncError::TooSmall { .. } => say("resynchronize onto a volume at least as large"),
        ResyncError::InProgress { .. } => say("wait for that resync to finish"),
        ResyncError::InsufficientStorage { .. } => {
            say("raise its maximum size (resize shadowstorage) and try again")
        }
        ResyncError::Stopped { .. } => say(
            "`resync` again takes the copy up where it stopped; until it ends, the volume \
             cannot be reverted, shadowed or resynchronized from another shadow copy",
        ),
        ResyncError::Catalog(inner) => inner.way_out(),
        ResyncError::VolumeUnavailable { .. } | ResyncError::Io { .. } => None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ids::{ShadowId, VolumeId};

    #[test]
    fn an_engine_failure_carries_its_way_out_as_help_not_in_its_message() {
        let error = RevertError::UnsupportedContext {
            shadow: ShadowId::nil(),
            context: "FileShareBackup",
        };
        let service = engine_failure(&error);
        assert!(
            !service.message.contains("set context"),
            "{}",
            service.message
        );
        assert_eq!(
            service.help.as_deref(),
            Some("set context persistent before create")
        );
        assert_eq!(service.code, Some(VssCode::VSS_E_UNSUPPORTED_CONTEXT));
    }

    #[test]
    fn a_wrapping_failure_takes_its_inner_way_out() {
        let error = OpenError::Revert(Box::new(RevertError::InsufficientStorage {
            volume: VolumeId::nil(),
            shadow: ShadowId::nil(),
        }));
        assert_eq!(
            engine_failure(&error).help.as_deref(),
            Some("raise its maximum size (resize shadowstorage) and try again")
        );
    }
}
