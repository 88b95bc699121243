//! The coordinator: drives writers and the provider commit through the VSS creation sequence
//! (reference §3.2): Identify -> selection -> PrepareForBackup -> PrepareForSnapshot -> Freeze ->
//! flush-and-hold -> provider commit -> release -> Thaw -> PostSnapshot, then later
//! BackupComplete and BackupShutdown; and the restore events.
//!
//! **Invariants:**
//! - Every writer that was sent `freeze` for a set gets exactly one `thaw` or `abort` for it
//!   (a writer whose process ended has had end of input, which it treats as abort).
//! - A failure after PrepareForBackup and before Thaw sends `abort` to every participating
//!   writer; a failure after Thaw sends none (as VSS: PostSnapshot failures do not abort).
//!   Either way the backup ends with `backup_shutdown`.
//! - If the provider committed and the creation then fails, the committed value is handed back
//!   in [`CreationError::committed`] and the caller must delete it: no shadow of the set may
//!   remain.
//! - `nowriters` contexts send no writer event at all.

mod cabinet;
pub mod conformance;
mod creation;
pub mod flush;
pub mod selection;
pub mod shadow_copy;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::engine::ids::{ShadowId, ShadowSetId, VolumeId, WriterId};
use crate::engine::vss::{BackupType, Context, VssCode};
pub use crate::engine::writer::host::{EngineObserver, SilentObserver, StepDecision};
use crate::engine::writer::host::{EventFailure, EventRequest, WriterHost, WriterStatus};
use crate::engine::writer::metadata::WriterMetadata;
use crate::engine::writer::protocol::WriterEvent;

use creation::CreationRun;

pub use flush::{FlushAndHoldError, HeldFileSystems};
pub use selection::{
    plan_selection, ExcludedWriter, ExclusionReason, IdentifiedWriter, SelectedComponent,
    SelectedWriter, SelectionError, SelectionPlan, UnavailableWriter, WriterSelection,
};

/// The longest a provider commit may hold writes (VSS: 10 s).
pub const COMMIT_LIMIT: Duration = Duration::from_secs(10);
/// The longest freeze VSS allows (60 s).
pub const FREEZE_LIMIT: Duration = Duration::from_secs(60);

/// The writers' metadata, gathered by `identify`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatheredMetadata {
    pub writers: Vec<IdentifiedWriter>,
    pub unavailable: Vec<UnavailableWriter>,
}

/// One shadow as writers are told of it in `post_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostSnapshotShadow {
    /// The volume as writers name it (the same text as in `prepare_snapshot`).
    pub volume: String,
    /// The volume's GUID when known: writers that find their volume by its attachment (a FUSE
    /// mount named by the GUID) match on it, since they cannot know the image path.
    pub volume_id: Option<crate::engine::ids::VolumeId>,
    pub shadow_id: ShadowId,
    /// A read-write view of the shadow during auto-recovery, else `None`.
    pub path: Option<PathBuf>,
}

/// What `create` asks of the coordinator once the set is fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreationRequest {
    pub snapshot_set_id: ShadowSetId,
    pub context: Context,
    pub backup_type: BackupType,
    /// The set's volumes as writers name them (sent in `prepare_snapshot`).
    pub volumes: Vec<String>,
    /// Mounted file systems to flush and hold around the commit (FIFREEZE); possibly none.
    pub flush_mount_points: Vec<PathBuf>,
    /// Whether writers are asked to repair the shadow during `post_snapshot`.
    pub autorecover: bool,
}

/// The writers of one backup, kept by the caller between `create` and `end backup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSession {
    pub snapshot_set_id: ShadowSetId,
    pub backup_type: BackupType,
    pub writers: Vec<SelectedWriter>,
}

/// A created set, with the writers that took part.
#[derive(Debug)]
pub struct CreationOutcome<T> {
    pub committed: T,
    pub session: BackupSession,
    /// How long writes were held by the provider commit.
    pub commit_duration: Duration,
}

/// Why the creation of a set failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CreationFailure {
    #[error("the requester aborted the shadow copy creation before {event}")]
    StepAborted { event: WriterEvent },
    #[error("writer \"{writer}\" failed at {event}: {failure}")]
    WriterFailed {
        writer: String,
        writer_id: WriterId,
        event: WriterEvent,
        failure: EventFailure,
    },
    #[error(transparent)]
    FlushAndHold(#[from] std::sync::Arc<FlushAndHoldError>),
    #[error("the provider failed to commit the shadow copies: {message}")]
    CommitFailed { message: String },
    #[error("the provider commit held writes for {} ms, longer than the {} ms allowed", elapsed.as_millis(), limit.as_millis())]
    CommitTooSlow { elapsed: Duration, limit: Duration },
    #[error("the writers were frozen for {} ms, longer than their {} ms freeze deadline; the shadow copy set is aborted", elapsed.as_millis(), deadline.as_millis())]
    FreezeDeadlineExceeded {
        elapsed: Duration,
        deadline: Duration,
    },
}

impl CreationFailure {
    pub fn vss_code(&self) -> VssCode {
        match self {
            CreationFailure::StepAborted { .. } => VssCode::VSS_E_UNEXPECTED,
            CreationFailure::WriterFailed { failure, .. } => failure.vss_code(),
            CreationFailure::FlushAndHold(_) => VssCode::VSS_E_FLUSH_WRITES_TIMEOUT,
            CreationFailure::CommitFailed { .. } => VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR,
            CreationFailure::CommitTooSlow { .. } => VssCode::VSS_E_HOLD_WRITES_TIMEOUT,
            CreationFailure::FreezeDeadlineExceeded { .. } => VssCode::VSS_E_WRITERERROR_TIMEOUT,
        }
    }
}

/// A failed creation. When `committed` is `Some`, the provider did commit: the caller must
/// delete those shadows so that no shadow of the set remains.
pub struct CreationError<T> {
    /// Boxed so that `Result<_, CreationError<T>>` stays small on the success path.
    pub failure: Box<CreationFailure>,
    pub committed: Option<T>,
    /// Every writer's status after the failure (for `list writers status`).
    pub writer_statuses: Vec<WriterStatus>,
}

impl<T> CreationError<T> {
    pub fn vss_code(&self) -> VssCode {
        self.failure.vss_code()
    }

    /// Whether the provider committed, so the caller must delete the set.
    pub fn commit_happened(&self) -> bool {
        self.committed.is_some()
    }
}

impl<T> fmt::Debug for CreationError<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CreationError")
            .field("failure", &self.failure)
            .field("commit_happened", &self.committed.is_some())
            .finish()
    }
}

impl<T> fmt::Display for CreationError<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} [{}]", self.failure, self.failure.vss_code())
    }
}

impl<T> std::error::Error for CreationError<T> {}

/// A writer's failure at a later event (BackupComplete, BackupShutdown, restore).
#[derive(Debug, Clone, thiserror::Error)]
#[error("writer \"{writer}\" failed at {event}: {failure}")]
pub struct WriterEventError {
    pub writer: String,
    pub writer_id: WriterId,
    pub event: WriterEvent,
    pub failure: EventFailure,
}

impl WriterEventError {
    pub fn vss_code(&self) -> VssCode {
        self.failure.vss_code()
    }
}

/// One writer's part in a restore, as loaded from a metadata file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreWriter {
    pub writer_id: WriterId,
    pub name: String,
    /// The writer's metadata as saved at backup time.
    pub metadata: WriterMetadata,
    /// The full paths (`\logical\name`) of the components being restored.
    pub components: Vec<String>,
}

/// What a restore would involve, per writer (`simulate restore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreInvolvement {
    pub writer_id: WriterId,
    pub name: String,
    /// Whether the writer is registered on this host.
    pub registered: bool,
    /// Whether it asks for PreRestore/PostRestore (`writer_restore` is not `never`).
    pub gets_restore_events: bool,
    pub components: Vec<String>,
}

/// Why a restore cannot go on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RestoreError {
    #[error("writer \"{name}\" {writer_id} of the metadata is not registered on this host")]
    WriterNotRegistered { name: String, writer_id: WriterId },
    #[error("component \"{component}\" is not in the metadata of writer \"{writer}\"")]
    UnknownComponent { writer: String, component: String },
    #[error(transparent)]
    WriterFailed(#[from] WriterEventError),
}

impl RestoreError {
    pub fn vss_code(&self) -> VssCode {
        match self {
            RestoreError::WriterNotRegistered { .. } | RestoreError::UnknownComponent { .. } => {
                VssCode::VSS_E_OBJECT_NOT_FOUND
            }
            RestoreError::WriterFailed(error) => error.vss_code(),
        }
    }
}

/// Drives one requester's writer events through a [`WriterHost`].
pub struct Coordinator<'a> {
    host: &'a WriterHost,
    observer: &'a dyn EngineObserver,
    commit_limit: Duration,
}

impl<'a> Coordinator<'a> {
    pub fn new(host: &'a WriterHost, observer: &'a dyn EngineObserver) -> Self {
        Self {
            host,
            observer,
            commit_limit: COMMIT_LIMIT,
        }
    }

    /// Replaces the 10-second bound on the provider commit (tests shorten it).
    pub fn with_commit_limit(mut self, commit_limit: Duration) -> Self {
        self.commit_limit = commit_limit;
        self
    }

    fn participants(&self, writers: &[SelectedWriter]) -> Vec<WriterStatus> {
        writers
            .iter()
            .filter_map(|writer| self.host.status(writer.index))
            .collect()
    }

    /// GatherWriterMetadata: sends `identify` to every registered writer.
    pub fn gather_metadata(&self) -> GatheredMetadata {
        let mut gathered = GatheredMetadata::default();
        for reply in self.host.identify_all(self.observer) {
            let Some(status) = self.host.status(reply.writer) else {
                continue;
            };
            let metadata = self.host.metadata(reply.writer);
            match (&reply.outcome, metadata, status.instance_id) {
                (Ok(_), Some(metadata), Some(instance_id)) => {
                    gathered.writers.push(IdentifiedWriter {
                        index: reply.writer,
                        name: status.name,
                        writer_id: status.writer_id,
                        instance_id,
                        metadata,
                    })
                }
                (outcome, _, _) => {
                    let (code, reason) = match outcome {
                        Err(failure) => (failure.vss_code(), failure.to_string()),
                        Ok(_) => (
                            VssCode::VSS_E_UNEXPECTED_WRITER_ERROR,
                            "no metadata was kept".to_string(),
                        ),
                    };
                    gathered.unavailable.push(UnavailableWriter {
                        name: status.name,
                        writer_id: status.writer_id,
                        code,
                        reason,
                    });
                }
            }
        }
        gathered
    }

    /// Chooses the writers and components of the backup and reports DiskShadow's verbose
    /// lines through the observer.
    pub fn select(
        &self,
        gathered: &GatheredMetadata,
        selection: &WriterSelection,
        volumes_in_set: &[VolumeId],
        resolve_volume: &dyn Fn(&str) -> Option<VolumeId>,
    ) -> Result<SelectionPlan, SelectionError> {
        let plan = plan_selection(
            &gathered.writers,
            &gathered.unavailable,
            selection,
            volumes_in_set,
            resolve_volume,
        )?;
        for line in &plan.verbose_lines {
            self.observer.verbose(line);
        }
        Ok(plan)
    }

    /// DoSnapshotSet with its writer events around the caller's provider commit.
    ///
    /// `commit` runs inside the freeze with file systems held; `post_snapshot_shadows` gives
    /// the shadows writers are told of in `post_snapshot` (with read-write view paths during
    /// auto-recovery). In `nowriters` contexts only the flush-and-hold and the commit happen.
    pub fn create_shadow_set<T, E: fmt::Display>(
        &self,
        request: &CreationRequest,
        plan: &SelectionPlan,
        commit: &mut dyn FnMut() -> Result<T, E>,
        post_snapshot_shadows: &mut dyn FnMut(&T) -> Vec<PostSnapshotShadow>,
    ) -> Result<CreationOutcome<T>, CreationError<T>> {
        let writers: Vec<SelectedWriter> = if request.context.has_writers() {
            plan.writers.clone()
        } else {
            Vec::new()
        };
        let session = BackupSession {
            snapshot_set_id: request.snapshot_set_id,
            backup_type: request.backup_type,
            writers: writers.clone(),
        };
        let mut run = CreationRun {
            coordinator: self,
            request,
            session: &session,
            prepared: false,
            thawed: false,
            frozen_until: None,
        };
        match run.execute(commit, post_snapshot_shadows) {
            Ok((committed, commit_duration)) => Ok(CreationOutcome {
                committed,
                session,
                commit_duration,
            }),
            Err((failure, committed)) => {
                run.finish_failed(&failure);
                Err(CreationError {
                    failure: Box::new(failure),
                    committed,
                    writer_statuses: self.host.statuses(),
                })
            }
        }
    }

    /// BackupComplete: tells the writers whether the backup succeeded (`end backup`).
    pub fn backup_complete(
        &self,
        session: &BackupSession,
        succeeded: bool,
    ) -> Result<(), Vec<WriterEventError>> {
        let mut fields = Map::new();
        fields.insert(
            "snapshot_set_id".into(),
            Value::from(session.snapshot_set_id.to_string()),
        );
        fields.insert("succeeded".into(), Value::from(succeeded));
        self.broadcast(
            WriterEvent::BackupComplete,
            &session.writers,
            &fields,
            self.host.options().event_timeout,
        )
    }

    /// BackupShutdown: the requester is done with the backup.
    pub fn backup_shutdown(&self, session: &BackupSession) -> Result<(), Vec<WriterEventError>> {
        let running: Vec<SelectedWriter> = self.running_writers(&session.writers);
        self.broadcast(
            WriterEvent::BackupShutdown,
            &running,
            &Map::new(),
            self.host.options().event_timeout,
        )
    }

    /// AbortBackup: sends `abort` to the session's writers that are still running.
    pub fn abort(
        &self,
        session: &BackupSession,
        reason: &str,
    ) -> Result<(), Vec<WriterEventError>> {
        let requests = self.abort_requests(&session.writers, session.snapshot_set_id, reason);
        let replies = self.host.abort(&requests, self.observer);
        self.collect_errors(WriterEvent::Abort, replies)
    }

    fn running_writers(&self, writers: &[SelectedWriter]) -> Vec<SelectedWriter> {
        writers
            .iter()
            .filter(|writer| {
                self.host
                    .status(writer.index)
                    .is_some_and(|status| status.running)
            })
            .cloned()
            .collect()
    }

    fn abort_requests(
        &self,
        writers: &[SelectedWriter],
        set: ShadowSetId,
        reason: &str,
    ) -> Vec<EventRequest> {
        writers
            .iter()
            .map(|writer| {
                let mut fields = Map::new();
                fields.insert("snapshot_set_id".into(), Value::from(set.to_string()));
                fields.insert("reason".into(), Value::from(reason));
                EventRequest {
                    writer: writer.index,
                    fields,
                    timeout: self.host.options().event_timeout,
                }
            })
            .collect()
    }

    fn broadcast(
        &self,
        event: WriterEvent,
        writers: &[SelectedWriter],
        fields: &Map<String, Value>,
        timeout: Duration,
    ) -> Result<(), Vec<WriterEventError>> {
        if writers.is_empty() {
            return Ok(());
        }
        let requests: Vec<EventRequest> = writers
            .iter()
            .map(|writer| EventRequest {
                writer: writer.index,
                fields: fields.clone(),
                timeout,
            })
            .collect();
        let replies = self.host.send(event, &requests, self.observer);
        self.collect_errors(event, replies)
    }

    fn collect_errors(
        &self,
        event: WriterEvent,
        replies: Vec<crate::engine::writer::host::EventReply>,
    ) -> Result<(), Vec<WriterEventError>> {
        let errors: Vec<WriterEventError> = replies
            .into_iter()
            .filter_map(|reply| {
                let failure = reply.outcome.err()?;
                let status = self.host.status(reply.writer)?;
                Some(WriterEventError {
                    writer: status.name,
                    writer_id: status.writer_id,
                    event,
                    failure,
                })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// `simulate restore`: checks which writers a restore would involve, sending no event.
    pub fn simulate_restore(
        &self,
        writers: &[RestoreWriter],
    ) -> Result<Vec<RestoreInvolvement>, RestoreError> {
        let mut involvement = Vec::new();
        for writer in writers {
            for component in &writer.components {
                let known = writer
                    .metadata
                    .components
                    .iter()
                    .any(|candidate| candidate.full_path().eq_ignore_ascii_case(component));
                if !known {
                    return Err(RestoreError::UnknownComponent {
                        writer: writer.name.clone(),
                        component: component.clone(),
                    });
                }
            }
            let registered = self.host.find_by_id(writer.writer_id).is_some();
            let gets_restore_events = writer
                .metadata
                .restore_method
                .writer_restore
                .wants_restore_events();
            if gets_restore_events && !registered {
                return Err(RestoreError::WriterNotRegistered {
                    name: writer.name.clone(),
                    writer_id: writer.writer_id,
                });
            }
            involvement.push(RestoreInvolvement {
                writer_id: writer.writer_id,
                name: writer.name.clone(),
                registered,
                gets_restore_events,
                components: writer.components.clone(),
            });
        }
        Ok(involvement)
    }

    /// PreRestore: identifies and notifies each writer that asks for restore events.
    pub fn pre_restore(&self, writers: &[RestoreWriter]) -> Result<(), RestoreError> {
        self.restore_event(WriterEvent::PreRestore, writers)
    }

    /// PostRestore: tells the writers the files are back.
    pub fn post_restore(&self, writers: &[RestoreWriter]) -> Result<(), RestoreError> {
        self.restore_event(WriterEvent::PostRestore, writers)
    }

    fn restore_event(
        &self,
        event: WriterEvent,
        writers: &[RestoreWriter],
    ) -> Result<(), RestoreError> {
        let involvement = self.simulate_restore(writers)?;
        let timeout = self.host.options().event_timeout;
        let mut requests = Vec::new();
        for (writer, involved) in writers.iter().zip(&involvement) {
            if !involved.gets_restore_events {
                continue;
            }
            let Some(index) = self.host.find_by_id(writer.writer_id) else {
                continue;
            };
            let mut fields = Map::new();
            fields.insert("components".into(), Value::from(writer.components.clone()));
            requests.push(EventRequest {
                writer: index,
                fields,
                timeout,
            });
        }
        if requests.is_empty() {
            return Ok(());
        }
        if event == WriterEvent::PreRestore {
            let identify: Vec<EventRequest> = requests
                .iter()
                .map(|request| EventRequest {
                    writer: request.writer,
                    fields: Map::new(),
                    timeout,
                })
                .collect();
            self.first_error(
                WriterEvent::Identify,
                self.host.identify(&identify, self.observer),
            )?;
        }
        self.first_error(event, self.host.send(event, &requests, self.observer))
    }

    fn first_error(
        &self,
        event: WriterEvent,
        replies: Vec<crate::engine::writer::host::EventReply>,
    ) -> Result<(), RestoreError> {
        match self.collect_errors(event, replies) {
            Ok(()) => Ok(()),
            Err(mut errors) => Err(RestoreError::WriterFailed(errors.remove(0))),
        }
    }
}
