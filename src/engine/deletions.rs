//! The record of shadow copies the engine deleted by itself to keep a diff area inside its
//! limit, as VSS does (oldest first, the newest too when nothing else fits). Nothing may remove
//! a shadow without saying so: each deletion is kept here, in the store, so `list shadows` and
//! `vssadmin list shadowstorage` can say what went and why, and is handed to the service's
//! notice sink so it reaches the service log as it happens.
//!
//! The file `diff-area-deletions.json` holds the newest [`KEPT_DELETIONS`] events as a JSON
//! array, replaced atomically (write beside, sync, rename). It is informational: a lost or
//! damaged file loses the history, never a shadow, so it is read leniently.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{ShadowId, VolumeId};

/// How many deletion events the store keeps.
pub const KEPT_DELETIONS: usize = 32;

/// Why shadows were deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeletionReason {
    /// A write needed `needed_bytes` more diff area than the limit left.
    WriteNeededRoom {
        needed_bytes: u64,
        used_bytes: u64,
        max_bytes: u64,
    },
    /// The limit was lowered below what the diff area held.
    LimitLowered { used_bytes: u64, max_bytes: u64 },
}

/// One event: the shadows of one volume deleted together, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffAreaDeletion {
    /// Increasing across the store's history.
    pub sequence: u64,
    pub at: DateTime<Utc>,
    pub volume: VolumeId,
    /// The volume's image file, as registered.
    pub volume_path: PathBuf,
    pub shadows: Vec<ShadowId>,
    pub reason: DeletionReason,
}

impl DiffAreaDeletion {
    /// One sentence for logs and warnings.
    pub fn describe(&self) -> String {
        let count = self.shadows.len();
        let noun = if count == 1 {
            "shadow copy was"
        } else {
            "shadow copies were"
        };
        let ids: Vec<String> = self.shadows.iter().map(ToString::to_string).collect();
        let why = match &self.reason {
            DeletionReason::WriteNeededRoom {
                needed_bytes,
                used_bytes,
                max_bytes,
            } => format!(
                "a write needed {needed_bytes} bytes of diff area with {used_bytes} of {max_bytes} in use"
            ),
            DeletionReason::LimitLowered {
                used_bytes,
                max_bytes,
            } => format!("the limit was lowered to {max_bytes} bytes with {used_bytes} in use"),
        };
        format!(
            "{count} {noun} deleted on {} to make room in the diff area of {} ({why}): {}",
            self.at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.volume_path.display(),
            ids.join(", ")
        )
    }
}

/// Told of each deletion as it happens (the service writes it to its log).
pub trait DeletionSink: Send + Sync {
    fn deleted(&self, event: &DiffAreaDeletion);
}

/// The kept events and where they are saved.
pub struct DeletionLog {
    path: PathBuf,
    events: Mutex<VecDeque<DiffAreaDeletion>>,
    sink: RwLock<Option<Arc<dyn DeletionSink>>>,
}

impl DeletionLog {
    /// Loads the kept events of the store at `root`; a missing or unreadable file is an empty
    /// history.
    pub fn open(root: &Path) -> Self {
        let path = root.join("diff-area-deletions.json");
        let events: VecDeque<DiffAreaDeletion> = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            path,
            events: Mutex::new(events),
            sink: RwLock::new(None),
        }
    }

    pub fn set_sink(&self, sink: Arc<dyn DeletionSink>) {
        *self
            .sink
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sink);
    }

    /// Records one event (its sequence is assigned here), saves the history, tells the sink.
    /// Saving is best effort: the deletion already happened and is committed in the catalog;
    /// a failure to save its history must not fail the write that caused it.
    pub fn record(
        &self,
        at: DateTime<Utc>,
        volume: VolumeId,
        volume_path: PathBuf,
        shadows: Vec<ShadowId>,
        reason: DeletionReason,
    ) -> DiffAreaDeletion {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sequence = events.back().map_or(1, |last| last.sequence + 1);
        let event = DiffAreaDeletion {
            sequence,
            at,
            volume,
            volume_path,
            shadows,
            reason,
        };
        events.push_back(event.clone());
        while events.len() > KEPT_DELETIONS {
            events.pop_front();
        }
        let _ = self.save(&events);
        drop(events);
        if let Some(sink) = self
            .sink
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            sink.deleted(&event);
        }
        event
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> Vec<DiffAreaDeletion> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn save(&self, events: &VecDeque<DiffAreaDeletion>) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(events).map_err(std::io::Error::other)?;
        let partial = self.path.with_extension("json.partial");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&partial, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_reopening_and_only_the_newest_are_kept() {
        let directory = tempfile::tempdir().expect("tempdir");
        let log = DeletionLog::open(directory.path());
        for index in 0..(KEPT_DELETIONS as u64 + 3) {
            log.record(
                DateTime::from_timestamp(1_700_000_000 + index as i64, 0).expect("time"),
                VolumeId(uuid::Uuid::from_u128(7)),
                PathBuf::from("/srv/data.img"),
                vec![ShadowId(uuid::Uuid::from_u128(u128::from(index)))],
                DeletionReason::LimitLowered {
                    used_bytes: 10,
                    max_bytes: 5,
                },
            );
        }
        let reopened = DeletionLog::open(directory.path());
        let events = reopened.events();
        assert_eq!(events.len(), KEPT_DELETIONS);
        assert_eq!(events[0].sequence, 4);
        assert_eq!(
            events.last().expect("newest").sequence,
            KEPT_DELETIONS as u64 + 3
        );
        assert!(events[0]
            .describe()
            .starts_with("1 shadow copy was deleted on 2023-11-14"));
    }

    #[test]
    fn a_damaged_history_is_an_empty_one() {
        let directory = tempfile::tempdir().expect("tempdir");
        fs::write(
            directory.path().join("diff-area-deletions.json"),
            b"{not json",
        )
        .expect("write");
        assert!(DeletionLog::open(directory.path()).events().is_empty());
    }
}
