//! What a requester holds between commands (reference §0.4). `reset` returns it to default.

use std::path::PathBuf;

use crate::service::ids::{ProviderId, ShadowId, ShadowSetId};
use crate::service::model::VolumeInfo;
use crate::service::vss::{Attributes, BackupType, Context};
use crate::syntax::ast::{CopyMethod, OptionSetting};

/// A volume added to the shadow copy set being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingVolume {
    /// As the user wrote it (`c:`, `/srv/data.img`).
    pub spec: String,
    pub volume: VolumeInfo,
    pub alias: Option<String>,
    pub provider: Option<ProviderId>,
}

/// A shadow copy paired by `add shadow` with the volume `resync` copies it onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncPair {
    pub shadow: ShadowId,
    /// The volume the shadow copy was made of: the destination unless `target` names one.
    pub original: VolumeInfo,
    pub target: Option<VolumeInfo>,
}

impl ResyncPair {
    pub fn destination(&self) -> &VolumeInfo {
        self.target.as_ref().unwrap_or(&self.original)
    }
}

/// Where the backup or restore protocol stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Idle,
    /// `begin backup` was given; `end backup` has not been.
    BackupBegun,
    /// `begin restore` was given; `end restore` has not been.
    RestoreBegun,
}

#[derive(Debug, Clone, Default)]
pub struct SessionState {
    pub context: Context,
    pub options: OptionSetting,
    pub verbose: bool,
    /// Extension for writer developers: show each writer event, reply and log line.
    pub trace: bool,
    /// Extension: pause before each writer event.
    pub step: bool,
    /// Extension (`set step on hold`): a step prompt may keep writers frozen past their
    /// freeze deadline.
    pub step_hold: bool,
    pub metadata_path: Option<PathBuf>,
    pub volumes: Vec<PendingVolume>,
    pub writer_verify: Vec<String>,
    pub writer_exclude: Vec<String>,
    pub backup_type: BackupType,
    pub phase: Phase,
    /// The set made by the last `create`, for `end backup`.
    pub last_created_set: Option<ShadowSetId>,
    /// The path of the metadata file loaded by `load metadata`.
    pub loaded_metadata: Option<PathBuf>,
    /// The pairs `add shadow` made, in order, for `resync`.
    pub resync_set: Vec<ResyncPair>,
}

impl SessionState {
    /// The attribute bits `set option` asks for.
    pub fn extra_attributes(&self) -> Attributes {
        let options = self.options;
        let mut bits = 0;
        match options.copy_method {
            Some(CopyMethod::Differential) => bits |= Attributes::DIFFERENTIAL,
            Some(CopyMethod::Plex) => bits |= Attributes::PLEX,
            None => {}
        }
        if options.transportable {
            bits |= Attributes::TRANSPORTABLE;
        }
        if options.rollback_recover {
            bits |= Attributes::ROLLBACK_RECOVERY;
        }
        if options.txf_recover {
            bits |= Attributes::TXF_RECOVERY;
        }
        if options.no_auto_recover {
            bits |= Attributes::NO_AUTORECOVERY;
        }
        Attributes(bits)
    }

    /// `set option` as the user would type it, or `(none)`.
    pub fn option_words(&self) -> String {
        let options = self.options;
        let mut words = Vec::new();
        match options.copy_method {
            Some(CopyMethod::Differential) => words.push("differential"),
            Some(CopyMethod::Plex) => words.push("plex"),
            None => {}
        }
        for (on, word) in [
            (options.transportable, "transportable"),
            (options.rollback_recover, "rollbackrecover"),
            (options.txf_recover, "txfrecover"),
            (options.no_auto_recover, "noautorecover"),
        ] {
            if on {
                words.push(word);
            }
        }
        if words.is_empty() {
            "(none)".to_string()
        } else {
            words.join(" ")
        }
    }
}
