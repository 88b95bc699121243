//! The VSS vocabulary: error codes, contexts, shadow attributes, backup types and writer
//! states, with the numeric values and spellings of the Windows headers and tools
//! (`shared/reference/diskshadow.md` §3).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! vss_codes {
    ($($name:ident = $value:literal),* $(,)?) => {
        /// A VSS HRESULT that an operation can fail with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[allow(non_camel_case_types)]
        pub enum VssCode { $($name),* }

        impl VssCode {
            /// The Windows name, e.g. `VSS_E_OBJECT_NOT_FOUND`.
            pub fn name(self) -> &'static str {
                match self { $(VssCode::$name => stringify!($name)),* }
            }
            /// The HRESULT value.
            pub fn hresult(self) -> u32 {
                match self { $(VssCode::$name => $value),* }
            }
        }
    };
}

vss_codes! {
    VSS_S_ASYNC_CANCELLED = 0x0004_230B,
    VSS_E_BAD_STATE = 0x8004_2301,
    VSS_E_UNEXPECTED = 0x8004_2302,
    VSS_E_PROVIDER_VETO = 0x8004_2306,
    VSS_E_OBJECT_NOT_FOUND = 0x8004_2308,
    VSS_E_VOLUME_NOT_SUPPORTED = 0x8004_230C,
    VSS_E_OBJECT_ALREADY_EXISTS = 0x8004_230D,
    VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER = 0x8004_230E,
    VSS_E_UNEXPECTED_PROVIDER_ERROR = 0x8004_230F,
    VSS_E_CORRUPT_XML_DOCUMENT = 0x8004_2310,
    VSS_E_INVALID_XML_DOCUMENT = 0x8004_2311,
    VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED = 0x8004_2312,
    VSS_E_FLUSH_WRITES_TIMEOUT = 0x8004_2313,
    VSS_E_HOLD_WRITES_TIMEOUT = 0x8004_2314,
    VSS_E_UNEXPECTED_WRITER_ERROR = 0x8004_2315,
    VSS_E_SNAPSHOT_SET_IN_PROGRESS = 0x8004_2316,
    VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED = 0x8004_2317,
    VSS_E_WRITER_INFRASTRUCTURE = 0x8004_2318,
    VSS_E_WRITER_NOT_RESPONDING = 0x8004_2319,
    VSS_E_UNSUPPORTED_CONTEXT = 0x8004_231B,
    VSS_E_VOLUME_IN_USE = 0x8004_231D,
    VSS_E_INSUFFICIENT_STORAGE = 0x8004_231F,
    VSS_E_NO_SNAPSHOTS_IMPORTED = 0x8004_2320,
    VSS_E_REVERT_IN_PROGRESS = 0x8004_2325,
    VSS_E_NOT_SUPPORTED = 0x8004_232F,
    VSS_E_WRITERERROR_PARTIAL_FAILURE = 0x8004_2336,
    VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT = 0x8004_23F0,
    VSS_E_WRITERERROR_OUTOFRESOURCES = 0x8004_23F1,
    VSS_E_WRITERERROR_TIMEOUT = 0x8004_23F2,
    VSS_E_WRITERERROR_RETRYABLE = 0x8004_23F3,
    VSS_E_WRITERERROR_NONRETRYABLE = 0x8004_23F4,
    VSS_E_WRITERERROR_RECOVERY_FAILED = 0x8004_23F5,
    VSS_E_LEGACY_PROVIDER = 0x8004_23F7,
    VSS_E_AUTORECOVERY_FAILED = 0x8004_23FB,
    VSS_E_RESYNC_IN_PROGRESS = 0x8004_23FF,
    // The Win32 HRESULT VSS returns to a caller its access control does not allow.
    E_ACCESSDENIED = 0x8007_0005,
}

impl fmt::Display for VssCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} (0x{:08X})", self.name(), self.hresult())
    }
}

/// VSS limits (reference §3.14).
pub mod limits {
    /// Volumes in one shadow copy set.
    pub const MAX_VOLUMES_PER_SET: usize = 64;
    /// Shadow copies of one volume.
    pub const MAX_SHADOWS_PER_VOLUME: usize = 512;
    /// Client-accessible shadow copies of one volume, by default (MaxShadowCopies).
    pub const DEFAULT_MAX_CLIENT_ACCESSIBLE: usize = 64;
    /// The largest volume, 64 TiB.
    pub const MAX_VOLUME_BYTES: u64 = 64 << 40;
}

/// `VSS_VOLUME_SNAPSHOT_ATTRIBUTES` bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attributes(pub u32);

impl Attributes {
    pub const PERSISTENT: u32 = 0x1;
    pub const NO_AUTORECOVERY: u32 = 0x2;
    pub const CLIENT_ACCESSIBLE: u32 = 0x4;
    pub const NO_AUTO_RELEASE: u32 = 0x8;
    pub const NO_WRITERS: u32 = 0x10;
    pub const TRANSPORTABLE: u32 = 0x20;
    pub const NOT_SURFACED: u32 = 0x40;
    pub const NOT_TRANSACTED: u32 = 0x80;
    pub const HARDWARE_ASSISTED: u32 = 0x1_0000;
    pub const DIFFERENTIAL: u32 = 0x2_0000;
    pub const PLEX: u32 = 0x4_0000;
    pub const IMPORTED: u32 = 0x8_0000;
    pub const EXPOSED_LOCALLY: u32 = 0x10_0000;
    pub const EXPOSED_REMOTELY: u32 = 0x20_0000;
    pub const AUTORECOVER: u32 = 0x40_0000;
    pub const ROLLBACK_RECOVERY: u32 = 0x80_0000;
    pub const TXF_RECOVERY: u32 = 0x200_0000;

    /// Names in the order DiskShadow prints them (`- Attributes:  No_Auto_Release Persistent
    /// No_Writers Differential`).
    const DISKSHADOW_WORDS: [(u32, &'static str); 14] = [
        (Self::NO_AUTO_RELEASE, "No_Auto_Release"),
        (Self::PERSISTENT, "Persistent"),
        (Self::CLIENT_ACCESSIBLE, "Client_Accessible"),
        (Self::NO_AUTORECOVERY, "No_Auto_Recovery"),
        (Self::NO_WRITERS, "No_Writers"),
        (Self::TRANSPORTABLE, "Transportable"),
        (Self::HARDWARE_ASSISTED, "Hardware_Assisted"),
        (Self::DIFFERENTIAL, "Differential"),
        (Self::PLEX, "Plex"),
        (Self::IMPORTED, "Imported"),
        (Self::EXPOSED_LOCALLY, "Exposed_Locally"),
        (Self::EXPOSED_REMOTELY, "Exposed_Remotely"),
        (Self::ROLLBACK_RECOVERY, "Rollback_Recovery"),
        (Self::TXF_RECOVERY, "Txf_Recovery"),
    ];

    /// vssadmin's spelling (`Attributes: Persistent, Client-accessible, No auto release, ...`).
    const VSSADMIN_WORDS: [(u32, &'static str); 13] = [
        (Self::PERSISTENT, "Persistent"),
        (Self::CLIENT_ACCESSIBLE, "Client-accessible"),
        (Self::NO_AUTO_RELEASE, "No auto release"),
        (Self::NO_WRITERS, "No writers"),
        (Self::NO_AUTORECOVERY, "No auto recovery"),
        (Self::TRANSPORTABLE, "Transportable"),
        (Self::HARDWARE_ASSISTED, "Hardware assisted"),
        (Self::DIFFERENTIAL, "Differential"),
        (Self::PLEX, "Plex"),
        (Self::IMPORTED, "Imported"),
        (Self::EXPOSED_LOCALLY, "Exposed locally"),
        (Self::EXPOSED_REMOTELY, "Exposed remotely"),
        (Self::AUTORECOVER, "Auto recovered"),
    ];

    pub fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    pub fn with(self, bits: u32) -> Self {
        Self(self.0 | bits)
    }

    pub fn without(self, bits: u32) -> Self {
        Self(self.0 & !bits)
    }

    /// `No_Auto_Release Persistent No_Writers Differential`.
    pub fn diskshadow_words(self) -> String {
        Self::words(self, &Self::DISKSHADOW_WORDS, " ")
    }

    /// `Persistent, No auto release, No writers, Differential`.
    pub fn vssadmin_words(self) -> String {
        Self::words(self, &Self::VSSADMIN_WORDS, ", ")
    }

    fn words(self, table: &[(u32, &str)], separator: &str) -> String {
        table
            .iter()
            .filter(|(bit, _)| self.contains(*bit))
            .map(|(_, word)| *word)
            .collect::<Vec<_>>()
            .join(separator)
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "Attributes(0x{:08X} {})",
            self.0,
            self.diskshadow_words()
        )
    }
}

/// The context a shadow copy set is created in: `set context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Context {
    /// `volatile`: VSS_CTX_BACKUP (with writers), released when the requester ends.
    #[default]
    Volatile,
    /// `volatile nowriters`: VSS_CTX_FILE_SHARE_BACKUP.
    VolatileNoWriters,
    /// `persistent`: VSS_CTX_APP_ROLLBACK.
    Persistent,
    /// `persistent nowriters`: VSS_CTX_NAS_ROLLBACK.
    PersistentNoWriters,
    /// `clientaccessible`: VSS_CTX_CLIENT_ACCESSIBLE (persistent, no writers, system provider).
    ClientAccessible,
}

impl Context {
    /// The `VSS_SNAPSHOT_CONTEXT` value.
    pub fn value(self) -> u32 {
        match self {
            Context::Volatile => 0x00,
            Context::VolatileNoWriters => 0x10,
            Context::Persistent => 0x09,
            Context::PersistentNoWriters => 0x19,
            Context::ClientAccessible => 0x1D,
        }
    }

    /// The attributes every shadow created in this context carries (a context is an OR of
    /// attribute bits).
    pub fn attributes(self) -> Attributes {
        Attributes(self.value())
    }

    pub fn is_persistent(self) -> bool {
        self.attributes().contains(Attributes::PERSISTENT)
    }

    pub fn has_writers(self) -> bool {
        !self.attributes().contains(Attributes::NO_WRITERS)
    }

    /// How `set` and vssadmin name it.
    pub fn name(self) -> &'static str {
        match self {
            Context::Volatile => "Backup",
            Context::VolatileNoWriters => "FileShareBackup",
            Context::Persistent => "ApplicationRollback",
            Context::PersistentNoWriters => "DataVolumeRollback",
            Context::ClientAccessible => "ClientAccessible",
        }
    }

    /// How `set context` spells it.
    pub fn diskshadow_words(self) -> &'static str {
        match self {
            Context::Volatile => "volatile",
            Context::VolatileNoWriters => "volatile nowriters",
            Context::Persistent => "persistent",
            Context::PersistentNoWriters => "persistent nowriters",
            Context::ClientAccessible => "clientaccessible",
        }
    }
}

/// `VSS_BACKUP_TYPE`, as far as DiskShadow uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupType {
    Full,
    Incremental,
    Differential,
    Log,
    /// DiskShadow's default; `begin backup` switches to `Full`.
    #[default]
    Copy,
}

impl BackupType {
    pub fn value(self) -> u32 {
        match self {
            BackupType::Full => 1,
            BackupType::Incremental => 2,
            BackupType::Differential => 3,
            BackupType::Log => 4,
            BackupType::Copy => 5,
        }
    }

    pub fn protocol_name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Incremental => "incremental",
            BackupType::Differential => "differential",
            BackupType::Log => "log",
            BackupType::Copy => "copy",
        }
    }
}

/// `VSS_WRITER_STATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum WriterState {
    VSS_WS_UNKNOWN = 0,
    VSS_WS_STABLE = 1,
    VSS_WS_WAITING_FOR_FREEZE = 2,
    VSS_WS_WAITING_FOR_THAW = 3,
    VSS_WS_WAITING_FOR_POST_SNAPSHOT = 4,
    VSS_WS_WAITING_FOR_BACKUP_COMPLETE = 5,
    VSS_WS_FAILED_AT_IDENTIFY = 6,
    VSS_WS_FAILED_AT_PREPARE_BACKUP = 7,
    VSS_WS_FAILED_AT_PREPARE_SNAPSHOT = 8,
    VSS_WS_FAILED_AT_FREEZE = 9,
    VSS_WS_FAILED_AT_THAW = 10,
    VSS_WS_FAILED_AT_POST_SNAPSHOT = 11,
    VSS_WS_FAILED_AT_BACKUP_COMPLETE = 12,
    VSS_WS_FAILED_AT_PRE_RESTORE = 13,
    VSS_WS_FAILED_AT_POST_RESTORE = 14,
    VSS_WS_FAILED_AT_BACKUPSHUTDOWN = 15,
}

impl WriterState {
    pub fn value(self) -> u32 {
        self as u32
    }

    pub fn is_failed(self) -> bool {
        self.value() >= 6
    }
}

/// The well-known system provider, as Windows registers it.
pub mod providers {
    use uuid::Uuid;

    /// `{b5946137-7b9f-4925-af80-51abd60b20d5}`: copy-on-write, the default.
    pub const SYSTEM_PROVIDER_ID: Uuid = Uuid::from_u128(0xb5946137_7b9f_4925_af80_51abd60b20d5);
    pub const SYSTEM_PROVIDER_NAME: &str = "Microsoft Software Shadow Copy provider 1.0";
    pub const SYSTEM_PROVIDER_CLSID: Uuid = Uuid::from_u128(0x65ee1dba_8ff4_4a58_ac1c_3470ee2f376a);
    pub const SYSTEM_PROVIDER_VERSION: &str = "1.0.0.7";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_nowriters_exposed_has_the_observed_attribute_value() {
        let attributes = Context::PersistentNoWriters
            .attributes()
            .with(Attributes::DIFFERENTIAL)
            .with(Attributes::EXPOSED_LOCALLY);
        assert_eq!(attributes.0, 0x0012_0019);
        assert_eq!(
            Context::PersistentNoWriters
                .attributes()
                .with(Attributes::DIFFERENTIAL)
                .diskshadow_words(),
            "No_Auto_Release Persistent No_Writers Differential"
        );
    }

    #[test]
    fn codes_carry_their_hresults() {
        assert_eq!(VssCode::VSS_E_OBJECT_NOT_FOUND.hresult(), 0x8004_2308);
        assert_eq!(
            VssCode::VSS_E_SNAPSHOT_SET_IN_PROGRESS.to_string(),
            "VSS_E_SNAPSHOT_SET_IN_PROGRESS (0x80042316)"
        );
    }
}
