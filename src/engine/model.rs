//! The engine's data model: what the catalog records and what requesters are shown.
//! These types cross the service boundary (in-process or over the socket), so they are plain
//! serializable data.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{ProviderId, ShadowId, ShadowSetId, VolumeId};
use super::vss::{Attributes, Context};

/// Identifies one requester connection (one shell, one script run). Volatile shadows belong to
/// the requester that created them and are released when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequesterId(pub u64);

/// A registered volume: an image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub id: VolumeId,
    /// The image file, absolute.
    pub path: PathBuf,
    /// Size in bytes when last seen.
    pub size: u64,
    /// Copy-on-write granularity in bytes (a power of two, 4 KiB to 1 MiB).
    pub chunk_size: u32,
    /// The drive letter mapped to this volume, upper case, if any.
    pub drive_letter: Option<char>,
}

impl VolumeInfo {
    /// `\\?\Volume{GUID}\`.
    pub fn device_name(&self) -> String {
        format!("\\\\?\\Volume{}\\", self.id)
    }

    /// `\\?\Volume{GUID}\ [C:\]` when a drive is mapped, else `\\?\Volume{GUID}\ [/path/img]`.
    pub fn display_name(&self) -> String {
        match self.drive_letter {
            Some(letter) => format!("{} [{}:\\]", self.device_name(), letter),
            None => format!("{} [{}]", self.device_name(), self.path.display()),
        }
    }
}

/// What a drive letter stands for in the store's drive map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriveTarget {
    /// A volume: `add volume C:` shadows this image file.
    Volume(PathBuf),
    /// A directory: `expose %x% Z:` mounts there.
    Directory(PathBuf),
}

/// Where a shadow copy is exposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    pub kind: ExposureKind,
    /// As the user named it: `Z:`, `/mnt/shadow`, `\\host\share`, `nbd+unix:///…`.
    pub name: String,
    /// The directory mounted, or the socket/port served.
    pub location: String,
}

impl Exposure {
    /// True for an NBD export on a TCP port: NBD has no authentication and any local user can
    /// connect to a loopback port, so such an exposure is shown with a warning.
    pub fn is_unauthenticated_tcp(&self) -> bool {
        self.kind == ExposureKind::Share && self.location.starts_with("nbd://")
    }

    /// The warning shown with a TCP export, or `None` for the others (a Unix socket is 0600,
    /// a mount is the mount's business). `what` says what is exposed ("the shadow copy",
    /// "the volume") and `access` what a client may do ("read", "read and write").
    pub fn access_warning(&self, what: &str, access: &str) -> Option<String> {
        self.is_unauthenticated_tcp().then(|| {
            format!(
                "Warning: {} has no authentication: any user of this machine can connect to it and {access} {what}. A share (\\\\host\\name) or nbd+unix:///name?socket=PATH gives a socket only its owner can open.",
                self.location
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExposureKind {
    /// Exposed locally at a directory (mount point).
    Directory,
    /// Exposed locally as a drive letter (the directory the drive map gives it).
    Drive,
    /// Exposed remotely as an NBD share.
    Share,
}

/// Whether a shadow copy can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowHealth {
    Good,
    /// The volume changed behind diskshadow's back (size, mtime or generation differ from what
    /// the catalog recorded): the shadow is not served as good.
    Suspect {
        reason: String,
    },
    /// A full copy still being made from the shadow's point in time (after the commit, while
    /// the volume stays writable). It is served through that point in time meanwhile; a
    /// crash leaves it so until the copy is restarted, or the shadow is deleted.
    CopyPending,
}

/// One shadow copy, as `list shadows` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowInfo {
    pub id: ShadowId,
    pub set_id: ShadowSetId,
    /// Shadows in the set when it was created.
    pub original_count: u32,
    pub volume: VolumeInfo,
    pub created_at: DateTime<Utc>,
    /// Increasing across the store; orders shadows of one volume by age.
    pub sequence: u64,
    /// `\\?\GLOBALROOT\Device\HarddiskVolumeShadowCopyN`.
    pub device_name: String,
    pub originating_machine: String,
    pub service_machine: String,
    pub exposure: Option<Exposure>,
    pub provider_id: ProviderId,
    pub attributes: Attributes,
    pub context: Context,
    pub health: ShadowHealth,
    /// The requester that owns a volatile shadow; `None` for persistent ones.
    pub owner: Option<RequesterId>,
    /// Where a hardware provider holds it (`RBD snapshot: pool/image@snap`), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// One volume of a set to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVolume {
    pub volume: VolumeId,
    /// `None`: the default (system) provider.
    pub provider: Option<ProviderId>,
}

/// What the provider commit needs: the set is fixed, writers (if any) are frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpec {
    pub volumes: Vec<CreateVolume>,
    pub context: Context,
    /// Attribute bits the requester ORs in: DIFFERENTIAL or PLEX, TRANSPORTABLE,
    /// ROLLBACK_RECOVERY, TXF_RECOVERY, NO_AUTORECOVERY.
    pub extra_attributes: Attributes,
    pub requester: RequesterId,
    /// Used when the set ID must be known before the commit (writers are told it at
    /// PrepareForSnapshot). `None`: the engine makes one.
    pub set_id: Option<ShadowSetId>,
}

/// The result of a successful commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedSet {
    pub set_id: ShadowSetId,
    /// In the order of `CreateSpec::volumes`.
    pub shadows: Vec<ShadowInfo>,
}

/// `delete shadows …`, after the session resolved aliases, volumes and exposures to IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteSelector {
    All,
    Volume(VolumeId),
    Oldest(VolumeId),
    Set(ShadowSetId),
    Id(ShadowId),
    /// Every volatile shadow of a requester that ended.
    OwnedBy(RequesterId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    System,
    Software,
    Hardware,
}

impl ProviderKind {
    /// `VSS_PROVIDER_TYPE` value.
    pub fn value(self) -> u32 {
        match self {
            ProviderKind::System => 1,
            ProviderKind::Software => 2,
            ProviderKind::Hardware => 3,
        }
    }

    pub fn vss_name(self) -> &'static str {
        match self {
            ProviderKind::System => "VSS_PROV_SYSTEM",
            ProviderKind::Software => "VSS_PROV_SOFTWARE",
            ProviderKind::Hardware => "VSS_PROV_HARDWARE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub id: ProviderId,
    pub name: String,
    pub kind: ProviderKind,
    pub version: String,
    pub clsid: ProviderId,
}

/// A diff-area (shadow storage) association, as `vssadmin list shadowstorage` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageInfo {
    pub volume: VolumeInfo,
    pub used_bytes: u64,
    pub allocated_bytes: u64,
    /// `None`: unbounded.
    pub max_bytes: Option<u64>,
    /// Shadows the engine deleted to fit the limit, the newest events kept by the store.
    #[serde(default)]
    pub recent_deletions: Vec<crate::engine::deletions::DiffAreaDeletion>,
}

/// An array as a store records it: the name this store gives it, its ID and directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayAttachment {
    pub id: uuid::Uuid,
    /// The array's directory; for a Ceph pool, `rbd:POOL` (no directory).
    pub path: PathBuf,
    /// Set when the array is a Ceph pool (`array attach rbd:POOL --conf FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbd: Option<RbdPool>,
}

/// A Ceph pool attached as an array: which pool of which cluster, reached as which client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbdPool {
    pub pool: String,
    /// The cluster's `ceph.conf`, absolute.
    pub conf: PathBuf,
    /// The client ID (`client.<id>`); `None`: `client.admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl RbdPool {
    /// The `path` an attachment of this pool records: `rbd:POOL`.
    pub fn array_path(&self) -> PathBuf {
        PathBuf::from(format!("rbd:{}", self.pool))
    }
}

/// Whether `path` names an RBD image volume (`rbd:POOL/IMAGE`) rather than an image file.
pub fn is_rbd_volume_path(path: &Path) -> bool {
    path.to_str().is_some_and(|text| text.starts_with("rbd:"))
}
