//! One run of the creation sequence (`Coordinator::create_shadow_set`): each writer event
//! in order, the freeze deadline, and on a failure the release each writer needs (abort
//! before thaw, then backup shutdown).

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::engine::writer::host::{EventRequest, WriterIndex};
use crate::engine::writer::protocol::WriterEvent;

use super::{
    BackupSession, Coordinator, CreationFailure, CreationRequest, HeldFileSystems,
    PostSnapshotShadow, SelectedWriter, StepDecision, FREEZE_LIMIT,
};

/// The state of one `create_shadow_set` call, so that failure handling knows which writers
/// need which release.
pub(super) struct CreationRun<'c, 'a> {
    pub(super) coordinator: &'c Coordinator<'a>,
    pub(super) request: &'c CreationRequest,
    pub(super) session: &'c BackupSession,
    /// `prepare_backup` was sent: from here on a failure aborts the backup.
    pub(super) prepared: bool,
    /// `thaw` was sent: the freeze is released; no `abort` follows.
    pub(super) thawed: bool,
    /// While writers are frozen: when their freeze deadline passes.
    pub(super) frozen_until: Option<Instant>,
}

type RunFailure<T> = (CreationFailure, Option<T>);

impl CreationRun<'_, '_> {
    fn set_id_text(&self) -> String {
        self.session.snapshot_set_id.to_string()
    }

    fn step(&mut self, event: WriterEvent) -> Result<(), CreationFailure> {
        let statuses = self.coordinator.participants(&self.session.writers);
        let freeze_left = self
            .frozen_until
            .filter(|_| !self.thawed)
            .map(|until| until.saturating_duration_since(Instant::now()));
        match self
            .coordinator
            .observer
            .before_event(event, &statuses, freeze_left)
        {
            StepDecision::Continue => Ok(()),
            StepDecision::Abort => Err(CreationFailure::StepAborted { event }),
        }
    }

    /// Sends one event to every participating writer; the first failure (in writer order)
    /// fails the step.
    fn send(
        &mut self,
        event: WriterEvent,
        fields_for: &dyn Fn(&SelectedWriter) -> Map<String, Value>,
        timeout_for: &dyn Fn(&SelectedWriter) -> Duration,
    ) -> Result<(), CreationFailure> {
        if self.session.writers.is_empty() {
            return Ok(());
        }
        self.step(event)?;
        let requests: Vec<EventRequest> = self
            .session
            .writers
            .iter()
            .map(|writer| EventRequest {
                writer: writer.index,
                fields: fields_for(writer),
                timeout: timeout_for(writer),
            })
            .collect();
        if event == WriterEvent::PrepareBackup {
            self.prepared = true;
        }
        if event == WriterEvent::Thaw {
            self.thawed = true;
        }
        let replies = self
            .coordinator
            .host
            .send(event, &requests, self.coordinator.observer);
        let first_failure = self.session.writers.iter().find_map(|writer| {
            let reply = replies.iter().find(|reply| reply.writer == writer.index)?;
            let failure = reply.outcome.as_ref().err()?.clone();
            Some(CreationFailure::WriterFailed {
                writer: writer.name.clone(),
                writer_id: writer.writer_id,
                event,
                failure,
            })
        });
        match first_failure {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    fn freeze_deadline(&self, writer: &SelectedWriter) -> Duration {
        self.coordinator
            .host
            .registration(writer.index)
            .map(|registration| registration.freeze_timeout)
            .unwrap_or(FREEZE_LIMIT)
            .min(FREEZE_LIMIT)
    }

    pub(super) fn execute<T, E: fmt::Display>(
        &mut self,
        commit: &mut dyn FnMut() -> Result<T, E>,
        post_snapshot_shadows: &mut dyn FnMut(&T) -> Vec<PostSnapshotShadow>,
    ) -> Result<(T, Duration), RunFailure<T>> {
        let set_id = self.set_id_text();
        let backup_type = self.request.backup_type.protocol_name();
        let event_timeout = self.coordinator.host.options().event_timeout;
        let normal_timeout = |_: &SelectedWriter| event_timeout;

        let before_commit = |run: &mut Self| -> Result<(Duration, Instant), CreationFailure> {
            run.send(
                WriterEvent::PrepareBackup,
                &|writer| {
                    let mut fields = Map::new();
                    fields.insert("backup_type".into(), Value::from(backup_type));
                    let components: Vec<String> = writer
                        .components
                        .iter()
                        .map(|component| component.full_path.clone())
                        .collect();
                    fields.insert("components".into(), Value::from(components));
                    fields
                },
                &normal_timeout,
            )?;
            run.send(
                WriterEvent::PrepareSnapshot,
                &|_| {
                    let mut fields = Map::new();
                    fields.insert("snapshot_set_id".into(), Value::from(set_id.clone()));
                    fields.insert("volumes".into(), Value::from(run.request.volumes.clone()));
                    fields
                },
                &normal_timeout,
            )?;
            let freeze_window = run
                .session
                .writers
                .iter()
                .map(|writer| run.freeze_deadline(writer))
                .min()
                .unwrap_or(FREEZE_LIMIT);
            let deadlines: Vec<(WriterIndex, Duration)> = run
                .session
                .writers
                .iter()
                .map(|writer| (writer.index, run.freeze_deadline(writer)))
                .collect();
            // The freeze window starts when the first writer is asked to freeze.
            let freeze_started = Instant::now();
            run.send(
                WriterEvent::Freeze,
                &|writer| {
                    let deadline = deadlines
                        .iter()
                        .find(|(index, _)| *index == writer.index)
                        .map(|(_, deadline)| *deadline)
                        .unwrap_or(FREEZE_LIMIT);
                    let mut fields = Map::new();
                    fields.insert("snapshot_set_id".into(), Value::from(set_id.clone()));
                    fields.insert(
                        "deadline_ms".into(),
                        Value::from(deadline.as_millis() as u64),
                    );
                    fields
                },
                &|writer| {
                    deadlines
                        .iter()
                        .find(|(index, _)| *index == writer.index)
                        .map(|(_, deadline)| *deadline)
                        .unwrap_or(FREEZE_LIMIT)
                },
            )?;
            Ok((freeze_window, freeze_started))
        };
        let (freeze_window, freeze_started) =
            before_commit(self).map_err(|failure| (failure, None))?;
        if !self.session.writers.is_empty() {
            self.frozen_until = Some(freeze_started + freeze_window);
        }

        let held = HeldFileSystems::freeze(&self.request.flush_mount_points).map_err(|error| {
            (
                CreationFailure::FlushAndHold(std::sync::Arc::new(error)),
                None,
            )
        })?;
        let commit_started = Instant::now();
        let committed = commit();
        let commit_duration = commit_started.elapsed();
        held.release();
        let committed = committed.map_err(|error| {
            (
                CreationFailure::CommitFailed {
                    message: error.to_string(),
                },
                None,
            )
        })?;

        let commit_limit = self.coordinator.commit_limit;
        if commit_duration > commit_limit {
            return Err((
                CreationFailure::CommitTooSlow {
                    elapsed: commit_duration,
                    limit: commit_limit,
                },
                Some(committed),
            ));
        }
        let frozen_for = freeze_started.elapsed();
        if !self.session.writers.is_empty() && frozen_for > freeze_window {
            return Err((
                CreationFailure::FreezeDeadlineExceeded {
                    elapsed: frozen_for,
                    deadline: freeze_window,
                },
                Some(committed),
            ));
        }

        let thaw = self.send(
            WriterEvent::Thaw,
            &|_| {
                let mut fields = Map::new();
                fields.insert("snapshot_set_id".into(), Value::from(set_id.clone()));
                fields
            },
            &normal_timeout,
        );
        if let Err(failure) = thaw {
            return Err((failure, Some(committed)));
        }
        let shadows = if self.session.writers.is_empty() {
            Vec::new()
        } else {
            post_snapshot_shadows(&committed)
        };
        let autorecover = self.request.autorecover;
        let shadow_values: Vec<Value> = shadows
            .iter()
            .map(|shadow| {
                serde_json::json!({
                    "volume": shadow.volume,
                    "volume_id": shadow.volume_id.map(|id| id.to_string()),
                    "shadow_id": shadow.shadow_id.to_string(),
                    // A read-write view is only offered during auto-recovery.
                    "path": shadow
                        .path
                        .as_ref()
                        .filter(|_| autorecover)
                        .map(|path| path.display().to_string()),
                })
            })
            .collect();
        let post = self.send(
            WriterEvent::PostSnapshot,
            &|_| {
                let mut fields = Map::new();
                fields.insert("snapshot_set_id".into(), Value::from(set_id.clone()));
                fields.insert("autorecover".into(), Value::from(autorecover));
                fields.insert("shadows".into(), Value::from(shadow_values.clone()));
                fields
            },
            &normal_timeout,
        );
        if let Err(failure) = post {
            return Err((failure, Some(committed)));
        }
        Ok((committed, commit_duration))
    }

    /// Ends a failed creation: `abort` to every participating writer if the freeze was not
    /// released by `thaw`, then `backup_shutdown`.
    pub(super) fn finish_failed(&mut self, failure: &CreationFailure) {
        if !self.prepared {
            return;
        }
        let coordinator = self.coordinator;
        if !self.thawed {
            let reason = match failure {
                CreationFailure::StepAborted { .. } => "requester",
                CreationFailure::WriterFailed { .. } => "writer_failure",
                CreationFailure::FlushAndHold(_) | CreationFailure::CommitFailed { .. } => {
                    "provider_failure"
                }
                CreationFailure::CommitTooSlow { .. }
                | CreationFailure::FreezeDeadlineExceeded { .. } => "timeout",
            };
            let _ = coordinator.abort(self.session, reason);
        }
        let _ = coordinator.backup_shutdown(self.session);
    }
}
