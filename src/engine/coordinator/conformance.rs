//! A conformance check for one registered writer: it is driven through a full backup, an
//! abort after freeze, a freeze that outlives its deadline, a restore and end of input, and
//! every breach of `docs/writer-protocol.md` is reported.

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use super::{
    Coordinator, CreationFailure, CreationRequest, EngineObserver, PostSnapshotShadow,
    WriterSelection,
};
use crate::engine::ids::{ShadowId, ShadowSetId, VolumeId};
use crate::engine::vss::{BackupType, Context};
use crate::engine::writer::host::{EventFailure, HostOptions, WriterHost, WriterStatus};
use crate::engine::writer::protocol::WriterEvent;
use crate::engine::writer::registration::{Registration, RegistrationSet};

/// How long the check gives the writer.
#[derive(Debug, Clone)]
pub struct ConformanceOptions {
    /// The limit for every event but freeze.
    pub event_timeout: Duration,
    /// The freeze deadline used in the freeze-timeout scenario (short, to keep checks fast).
    pub short_freeze_deadline: Duration,
    /// How long to listen for answers that come after their deadline.
    pub late_answer_grace: Duration,
    /// How long the writer has to exit after its input closes.
    pub shutdown_grace: Duration,
}

impl Default for ConformanceOptions {
    fn default() -> Self {
        Self {
            event_timeout: Duration::from_secs(10),
            short_freeze_deadline: Duration::from_secs(1),
            late_answer_grace: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// What kind of breach a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// A line that is not JSON, or JSON that is neither an answer nor a log.
    BadJson,
    /// An answer with an id that no waiting request had (wrong, duplicate or missing id).
    UnexpectedId,
    UnknownErrorCode,
    NoAnswer,
    LateAnswer,
    MetadataSchema,
    /// The process ended while an event was waiting.
    ProcessExited,
    StartFailed,
    /// The writer refused an event of a backup that a conforming writer accepts.
    Vetoed,
    /// The writer did not exit after its input closed.
    IgnoredEndOfInput,
}

/// One breach, with the scenario and event it happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub scenario: &'static str,
    pub kind: FindingKind,
    pub event: Option<WriterEvent>,
    pub description: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.event {
            Some(event) => write!(
                formatter,
                "[{}] {event}: {:?}: {}",
                self.scenario, self.kind, self.description
            ),
            None => write!(
                formatter,
                "[{}] {:?}: {}",
                self.scenario, self.kind, self.description
            ),
        }
    }
}

/// The outcome of a conformance check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceReport {
    pub writer: String,
    /// Each scenario run, in order.
    pub scenarios: Vec<&'static str>,
    /// Every event sent, per scenario, with whether the writer answered `ok`.
    pub events: Vec<(&'static str, WriterEvent, bool)>,
    pub findings: Vec<Finding>,
}

impl ConformanceReport {
    pub fn is_conformant(&self) -> bool {
        self.findings.is_empty()
    }
}

struct CheckObserver {
    scenario: RefCell<&'static str>,
    events: RefCell<Vec<(&'static str, WriterEvent, bool)>>,
    findings: RefCell<Vec<Finding>>,
    /// Vetoes expected in the current scenario (none: every event should succeed).
    tolerate_veto: RefCell<Vec<WriterEvent>>,
}

impl CheckObserver {
    fn add(&self, kind: FindingKind, event: Option<WriterEvent>, description: String) {
        let scenario = *self.scenario.borrow();
        self.findings.borrow_mut().push(Finding {
            scenario,
            kind,
            event,
            description,
        });
    }
}

impl EngineObserver for CheckObserver {
    fn reply_received(
        &self,
        _writer: &WriterStatus,
        event: WriterEvent,
        _latency: Duration,
        outcome: &Result<(), EventFailure>,
    ) {
        let scenario = *self.scenario.borrow();
        self.events
            .borrow_mut()
            .push((scenario, event, outcome.is_ok()));
        let Err(failure) = outcome else { return };
        let description = failure.to_string();
        let kind = match failure {
            EventFailure::Vetoed { .. } if self.tolerate_veto.borrow().contains(&event) => return,
            EventFailure::Vetoed { .. } => FindingKind::Vetoed,
            EventFailure::UnknownErrorCode { .. } => FindingKind::UnknownErrorCode,
            EventFailure::NotResponding { .. } => FindingKind::NoAnswer,
            EventFailure::Exited { .. } | EventFailure::NotRunning => FindingKind::ProcessExited,
            EventFailure::InvalidLine { .. } => FindingKind::BadJson,
            EventFailure::InvalidAnswer(_) => FindingKind::MetadataSchema,
            EventFailure::StartFailed(_) => FindingKind::StartFailed,
            EventFailure::ProtocolViolation(_) => FindingKind::UnexpectedId,
        };
        self.add(kind, Some(event), description);
    }

    fn protocol_violation(&self, _writer: &str, description: &str) {
        let kind = if description.contains("after its deadline") {
            FindingKind::LateAnswer
        } else if description.contains("id") {
            FindingKind::UnexpectedId
        } else {
            FindingKind::BadJson
        };
        self.add(kind, None, description.to_string());
    }
}

/// Every volume a writer names is taken to be in the set, so that all its components are
/// selected.
const CHECK_VOLUME: VolumeId = VolumeId(uuid::Uuid::from_u128(
    0xC4EC_0000_0000_4000_8000_0000_0000_0001,
));

fn resolve_any(_: &str) -> Option<VolumeId> {
    Some(CHECK_VOLUME)
}

/// Drives one registered writer through the scenarios and reports every protocol breach.
pub fn check_writer(
    registration: &Registration,
    options: &ConformanceOptions,
) -> ConformanceReport {
    let observer = CheckObserver {
        scenario: RefCell::new("identify"),
        events: RefCell::new(Vec::new()),
        findings: RefCell::new(Vec::new()),
        tolerate_veto: RefCell::new(Vec::new()),
    };
    let host_options = HostOptions {
        event_timeout: options.event_timeout,
        shutdown_grace: options.shutdown_grace,
        late_answer_grace: options.late_answer_grace,
        ..HostOptions::default()
    };
    let host = WriterHost::new(
        RegistrationSet {
            registrations: vec![registration.clone()],
            problems: Vec::new(),
        },
        host_options.clone(),
    );
    let mut scenarios = Vec::new();
    let coordinator = Coordinator::new(&host, &observer);

    let mut run_backup = |scenario: &'static str,
                          host: &WriterHost,
                          commit_delay: Duration,
                          commit_fails: bool|
     -> Option<Result<super::BackupSession, CreationFailure>> {
        *observer.scenario.borrow_mut() = scenario;
        scenarios.push(scenario);
        let coordinator = Coordinator::new(host, &observer);
        let gathered = coordinator.gather_metadata();
        if gathered.writers.is_empty() {
            return None;
        }
        let plan = match coordinator.select(
            &gathered,
            &WriterSelection::default(),
            &[CHECK_VOLUME],
            &resolve_any,
        ) {
            Ok(plan) => plan,
            Err(error) => {
                observer.add(FindingKind::MetadataSchema, None, error.to_string());
                return None;
            }
        };
        let volumes: Vec<String> = gathered.writers[0]
            .metadata
            .components
            .iter()
            .flat_map(|component| component.files.iter().map(|file| file.volume.clone()))
            .collect();
        let request = CreationRequest {
            snapshot_set_id: ShadowSetId(uuid::Uuid::from_u128(0x5E7_C4EC)),
            context: Context::Volatile,
            backup_type: BackupType::Full,
            volumes: volumes.clone(),
            flush_mount_points: Vec::new(),
            autorecover: false,
        };
        let outcome = coordinator.create_shadow_set(
            &request,
            &plan,
            &mut || -> Result<(), String> {
                std::thread::sleep(commit_delay);
                if commit_fails {
                    Err("the conformance check fails the commit on purpose".to_string())
                } else {
                    Ok(())
                }
            },
            &mut |_| {
                volumes
                    .iter()
                    .map(|volume| PostSnapshotShadow {
                        volume: volume.clone(),
                        volume_id: None,
                        shadow_id: ShadowId(uuid::Uuid::from_u128(0x5AD0_C4EC)),
                        path: None,
                    })
                    .collect()
            },
        );
        Some(
            outcome
                .map(|outcome| outcome.session)
                .map_err(|error| *error.failure),
        )
    };

    // 1. A full backup, ending with BackupComplete and BackupShutdown.
    if let Some(Ok(session)) = run_backup("full backup", &host, Duration::ZERO, false) {
        let _ = coordinator.backup_complete(&session, true);
        let _ = coordinator.backup_shutdown(&session);
    }
    // 2. The provider fails after the freeze: the writer gets abort.
    let _ = run_backup("abort after freeze", &host, Duration::ZERO, true);
    // 3. The freeze outlives a short deadline: the writer gets abort (it may also have thawed
    //    on its own; a `timeout` answer to a later event is allowed).
    {
        let mut short = registration.clone();
        short.freeze_timeout = options.short_freeze_deadline;
        let short_host = WriterHost::new(
            RegistrationSet {
                registrations: vec![short],
                problems: Vec::new(),
            },
            host_options,
        );
        *observer.tolerate_veto.borrow_mut() = vec![WriterEvent::Thaw, WriterEvent::Abort];
        let outcome = run_backup(
            "freeze timeout",
            &short_host,
            options.short_freeze_deadline + Duration::from_millis(200),
            false,
        );
        if let Some(Ok(_)) = outcome {
            observer.add(
                FindingKind::Vetoed,
                None,
                "the freeze outlived its deadline but the set was not aborted".to_string(),
            );
        }
        observer.tolerate_veto.borrow_mut().clear();
        for (name, exited) in short_host.shutdown() {
            if !exited {
                observer.add(
                    FindingKind::IgnoredEndOfInput,
                    None,
                    format!("{name} did not exit after end of input"),
                );
            }
        }
    }
    // 4. A restore of every component, if the writer asks for restore events.
    *observer.scenario.borrow_mut() = "restore";
    scenarios.push("restore");
    let gathered = coordinator.gather_metadata();
    if let Some(writer) = gathered.writers.first() {
        let restore = [super::RestoreWriter {
            writer_id: writer.writer_id,
            name: writer.name.clone(),
            metadata: writer.metadata.clone(),
            components: writer
                .metadata
                .components
                .iter()
                .map(|component| component.full_path())
                .collect(),
        }];
        if coordinator.pre_restore(&restore).is_ok() {
            let _ = coordinator.post_restore(&restore);
        }
    }
    // 5. End of input: the writer must exit.
    *observer.scenario.borrow_mut() = "end of input";
    scenarios.push("end of input");
    for (name, exited) in host.shutdown() {
        if !exited {
            observer.add(
                FindingKind::IgnoredEndOfInput,
                None,
                format!("{name} did not exit after end of input"),
            );
        }
    }
    ConformanceReport {
        writer: registration.name.clone(),
        scenarios,
        events: observer.events.into_inner(),
        findings: observer.findings.into_inner(),
    }
}
