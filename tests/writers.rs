//! Writers driven through the coordinator, with real writer processes: the configurable test
//! writer (`diskshadow-test-writer`) and a Python writer written from the protocol document.

mod support;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use diskshadow::engine::clock::SeededIds;
use diskshadow::engine::coordinator::{
    BackupSession, Coordinator, CreationFailure, CreationRequest, EngineObserver,
    PostSnapshotShadow, RestoreWriter, SelectionError, SelectionPlan, StepDecision,
    WriterSelection,
};
use diskshadow::engine::ids::{ShadowId, ShadowSetId, VolumeId, WriterId};
use diskshadow::engine::vss::{BackupType, Context, VssCode, WriterState};
use diskshadow::engine::writer::{
    load_registrations, EventFailure, HostOptions, Registration, RegistrationSet, WriterEvent,
    WriterHost, WriterStatus,
};
use serde_json::Value;
use uuid::Uuid;

const TEST_WRITER: &str = env!("CARGO_BIN_EXE_diskshadow-test-writer");
const VOLUME_IN_SET: VolumeId = VolumeId(Uuid::from_u128(0xA11CE));

fn resolve(name: &str) -> Option<VolumeId> {
    match name {
        "/images/data.img" => Some(VOLUME_IN_SET),
        "/images/other.img" => Some(VolumeId(Uuid::from_u128(0xB0B))),
        _ => None,
    }
}

struct TestWriter {
    name: String,
    record: PathBuf,
}

impl TestWriter {
    fn events(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|request| request["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("recorded JSON"))
            .collect()
    }

    fn request(&self, event: &str) -> Value {
        self.requests()
            .into_iter()
            .find(|request| request["event"] == event)
            .expect("event was received")
    }
}

struct Fixture {
    directory: tempfile::TempDir,
    registrations: Vec<Registration>,
    writers: Vec<TestWriter>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            directory: tempfile::tempdir().expect("tempdir"),
            registrations: Vec::new(),
            writers: Vec::new(),
        }
    }

    /// Adds a test writer; `events` is the TOML of its `[events.*]` tables.
    fn writer(&mut self, name: &str, freeze_timeout: Duration, events: &str) -> &mut Self {
        let index = self.writers.len();
        let config = self.directory.path().join(format!("writer{index}.toml"));
        let record = self.directory.path().join(format!("writer{index}.record"));
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\n[[components]]\nname = \"data\"\nvolumes = [\"/images/data.img\"]\n{events}\n"
            ),
        )
        .expect("write config");
        let mut registration = Registration::new(
            name,
            WriterId(Uuid::from_u128(0x1000 + index as u128)),
            vec![
                TEST_WRITER.to_string(),
                "--config".to_string(),
                config.display().to_string(),
                "--record".to_string(),
                record.display().to_string(),
            ],
        );
        registration.freeze_timeout = freeze_timeout;
        self.registrations.push(registration);
        self.writers.push(TestWriter {
            name: name.to_string(),
            record,
        });
        self
    }

    fn host(&self) -> WriterHost {
        WriterHost::new(
            RegistrationSet {
                registrations: self.registrations.clone(),
                problems: Vec::new(),
            },
            HostOptions {
                event_timeout: Duration::from_secs(3),
                shutdown_grace: Duration::from_millis(500),
                ids: Arc::new(SeededIds::new(1)),
                ..HostOptions::default()
            },
        )
    }
}

type RecordedReply = (String, WriterEvent, Result<(), EventFailure>);

/// Records everything the coordinator reports.
#[derive(Default)]
struct Recorder {
    sent: RefCell<Vec<(String, WriterEvent)>>,
    replies: RefCell<Vec<RecordedReply>>,
    logs: RefCell<Vec<(String, String)>>,
    verbose: RefCell<Vec<String>>,
    abort_before: Option<WriterEvent>,
}

impl EngineObserver for Recorder {
    fn event_sent(&self, writer: &WriterStatus, event: WriterEvent) {
        self.sent.borrow_mut().push((writer.name.clone(), event));
    }

    fn reply_received(
        &self,
        writer: &WriterStatus,
        event: WriterEvent,
        _latency: Duration,
        outcome: &Result<(), EventFailure>,
    ) {
        self.replies
            .borrow_mut()
            .push((writer.name.clone(), event, outcome.clone()));
    }

    fn writer_log(&self, writer: &str, line: &str) {
        self.logs
            .borrow_mut()
            .push((writer.to_string(), line.to_string()));
    }

    fn verbose(&self, line: &str) {
        self.verbose.borrow_mut().push(line.to_string());
    }

    fn before_event(
        &self,
        event: WriterEvent,
        _writers: &[WriterStatus],
        _freeze_left: Option<std::time::Duration>,
    ) -> StepDecision {
        if self.abort_before == Some(event) {
            StepDecision::Abort
        } else {
            StepDecision::Continue
        }
    }
}

fn request(context: Context) -> CreationRequest {
    CreationRequest {
        snapshot_set_id: ShadowSetId(Uuid::from_u128(0x5E7)),
        context,
        backup_type: BackupType::Full,
        volumes: vec!["/images/data.img".to_string()],
        flush_mount_points: Vec::new(),
        autorecover: false,
    }
}

struct Run {
    result: Result<BackupSession, (CreationFailure, bool)>,
    commits: u32,
}

/// Gathers, selects and creates; `commit_delay` is how long the fake provider commit takes.
fn create(host: &WriterHost, observer: &Recorder, context: Context, commit_delay: Duration) -> Run {
    let coordinator = Coordinator::new(host, observer);
    let gathered = coordinator.gather_metadata();
    let plan = coordinator
        .select(
            &gathered,
            &WriterSelection::default(),
            &[VOLUME_IN_SET],
            &resolve,
        )
        .expect("plan");
    let mut commits = 0;
    let result = coordinator.create_shadow_set(
        &request(context),
        &plan,
        &mut || -> Result<ShadowId, String> {
            commits += 1;
            std::thread::sleep(commit_delay);
            Ok(ShadowId(Uuid::from_u128(0x5AD0)))
        },
        &mut |shadow: &ShadowId| {
            vec![PostSnapshotShadow {
                volume: "/images/data.img".to_string(),
                volume_id: None,
                shadow_id: *shadow,
                path: None,
            }]
        },
    );
    Run {
        result: result
            .map(|outcome| outcome.session)
            .map_err(|error| ((*error.failure).clone(), error.commit_happened())),
        commits,
    }
}

fn events(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn a_full_backup_sends_every_event_once_in_order() {
    let mut fixture = Fixture::new();
    fixture.writer("Journal Writer", Duration::from_secs(1), "");
    let host = fixture.host();
    let observer = Recorder::default();
    let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
    let session = run.result.expect("created");
    assert_eq!(run.commits, 1);
    let coordinator = Coordinator::new(&host, &observer);
    coordinator
        .backup_complete(&session, true)
        .expect("backup complete");
    coordinator
        .backup_shutdown(&session)
        .expect("backup shutdown");

    let writer = &fixture.writers[0];
    assert_eq!(
        writer.events(),
        events(&[
            "identify",
            "prepare_backup",
            "prepare_snapshot",
            "freeze",
            "thaw",
            "post_snapshot",
            "backup_complete",
            "backup_shutdown"
        ])
    );
    let prepare = writer.request("prepare_backup");
    assert_eq!(prepare["backup_type"], "full");
    assert_eq!(prepare["components"], serde_json::json!(["\\data"]));
    assert_eq!(
        writer.request("prepare_snapshot")["volumes"],
        serde_json::json!(["/images/data.img"])
    );
    let freeze = writer.request("freeze");
    assert_eq!(freeze["deadline_ms"], 1000);
    assert_eq!(
        freeze["snapshot_set_id"],
        "{00000000-0000-0000-0000-0000000005e7}"
    );
    let post = writer.request("post_snapshot");
    assert_eq!(post["autorecover"], false);
    assert_eq!(
        post["shadows"][0]["shadow_id"],
        "{00000000-0000-0000-0000-000000005ad0}"
    );
    assert_eq!(post["shadows"][0]["path"], Value::Null);
    assert_eq!(writer.request("backup_complete")["succeeded"], true);

    let ids: Vec<u64> = writer
        .requests()
        .iter()
        .map(|request| request["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(
        ids,
        (1..=8).collect::<Vec<u64>>(),
        "request ids increase by one"
    );
    let status = &host.statuses()[0];
    assert_eq!(status.state, WriterState::VSS_WS_STABLE);
    assert_eq!(status.failure, None, "no failure code");
    assert_eq!(
        *observer.verbose.borrow(),
        events(&[
            "",
            "* Including writer \"Journal Writer\":",
            "\t+ Adding component: \\data"
        ])
    );
    assert_eq!(observer.sent.borrow().len(), 8);
    assert!(observer
        .replies
        .borrow()
        .iter()
        .all(|(_, _, outcome)| outcome.is_ok()));
}

/// The events each writer should have received when the creation fails at `event`.
fn expected_after_failure(event: &str) -> Vec<String> {
    let order = [
        "identify",
        "prepare_backup",
        "prepare_snapshot",
        "freeze",
        "thaw",
        "post_snapshot",
    ];
    let position = order
        .iter()
        .position(|candidate| *candidate == event)
        .expect("known event");
    let mut expected = events(&order[..=position]);
    if position < 4 {
        expected.push("abort".to_string());
    }
    expected.push("backup_shutdown".to_string());
    expected
}

#[test]
fn a_failure_at_each_event_ends_with_every_writer_thawed_or_aborted_and_the_right_codes() {
    let cases = [
        (
            "prepare_backup",
            "retryable",
            VssCode::VSS_E_WRITERERROR_RETRYABLE,
            WriterState::VSS_WS_FAILED_AT_PREPARE_BACKUP,
        ),
        (
            "prepare_snapshot",
            "out_of_resources",
            VssCode::VSS_E_WRITERERROR_OUTOFRESOURCES,
            WriterState::VSS_WS_FAILED_AT_PREPARE_SNAPSHOT,
        ),
        (
            "freeze",
            "nonretryable",
            VssCode::VSS_E_WRITERERROR_NONRETRYABLE,
            WriterState::VSS_WS_FAILED_AT_FREEZE,
        ),
        (
            "thaw",
            "inconsistent_snapshot",
            VssCode::VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT,
            WriterState::VSS_WS_FAILED_AT_THAW,
        ),
        (
            "post_snapshot",
            "recovery_failed",
            VssCode::VSS_E_WRITERERROR_RECOVERY_FAILED,
            WriterState::VSS_WS_FAILED_AT_POST_SNAPSHOT,
        ),
    ];
    for (event, code, vss_code, state) in cases {
        let mut fixture = Fixture::new();
        fixture.writer("Healthy Writer", Duration::from_secs(5), "");
        fixture.writer(
            "Failing Writer",
            Duration::from_secs(5),
            &format!("[events.{event}]\naction = \"fail\"\nerror = \"{code}\"\nmessage = \"no\"\n"),
        );
        let host = fixture.host();
        let observer = Recorder::default();
        let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
        let (failure, commit_happened) = run.result.expect_err("the creation fails");
        assert_eq!(failure.vss_code(), vss_code, "{event}");
        assert!(
            matches!(&failure, CreationFailure::WriterFailed { writer, .. } if writer == "Failing Writer")
        );
        let committed_expected = matches!(event, "thaw" | "post_snapshot");
        assert_eq!(
            commit_happened, committed_expected,
            "{event}: the caller must delete what was committed"
        );
        assert_eq!(run.commits, u32::from(committed_expected), "{event}");
        for writer in &fixture.writers {
            assert_eq!(
                writer.events(),
                expected_after_failure(event),
                "{event}: {}",
                writer.name
            );
        }
        let statuses = host.statuses();
        assert_eq!(statuses[1].state, state, "{event}");
        assert_eq!(statuses[1].failure, Some(vss_code));
        assert!(!statuses[0].state.is_failed());
    }
}

#[test]
fn a_hung_writer_times_out_and_is_restarted_on_next_need() {
    let mut fixture = Fixture::new();
    fixture.writer("Healthy Writer", Duration::from_secs(5), "");
    fixture.writer(
        "Hanging Writer",
        Duration::from_secs(1),
        "[events.freeze]\naction = \"hang\"\n",
    );
    let host = fixture.host();
    let observer = Recorder::default();
    let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
    let (failure, commit_happened) = run.result.expect_err("times out");
    assert!(matches!(
        failure,
        CreationFailure::WriterFailed {
            failure: EventFailure::NotResponding { .. },
            ..
        }
    ));
    assert_eq!(failure.vss_code(), VssCode::VSS_E_WRITER_NOT_RESPONDING);
    assert!(!commit_happened);
    assert_eq!(run.commits, 0);
    assert_eq!(
        fixture.writers[0].events(),
        events(&[
            "identify",
            "prepare_backup",
            "prepare_snapshot",
            "freeze",
            "abort",
            "backup_shutdown"
        ])
    );
    assert_eq!(
        fixture.writers[1].events(),
        events(&["identify", "prepare_backup", "prepare_snapshot", "freeze"])
    );
    let hung = &host.statuses()[1];
    assert_eq!(hung.state, WriterState::VSS_WS_FAILED_AT_FREEZE);
    assert!(!hung.running, "a hung writer is stopped");

    // The next backup starts it again and identifies it.
    let coordinator = Coordinator::new(&host, &observer);
    let gathered = coordinator.gather_metadata();
    assert_eq!(gathered.writers.len(), 2);
    assert_eq!(
        fixture.writers[1].events().last().map(String::as_str),
        Some("identify")
    );
    assert_eq!(host.statuses()[1].state, WriterState::VSS_WS_STABLE);
}

#[test]
fn a_writer_that_crashes_mid_freeze_fails_the_set_and_the_others_are_aborted() {
    let mut fixture = Fixture::new();
    fixture.writer(
        "Crashing Writer",
        Duration::from_secs(5),
        "[events.freeze]\naction = \"crash\"\n",
    );
    fixture.writer("Healthy Writer", Duration::from_secs(5), "");
    let host = fixture.host();
    let observer = Recorder::default();
    let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
    let (failure, commit_happened) = run.result.expect_err("crash");
    assert!(
        matches!(
            failure,
            CreationFailure::WriterFailed {
                failure: EventFailure::Exited { .. },
                ..
            }
        ),
        "{failure}"
    );
    assert_eq!(failure.vss_code(), VssCode::VSS_E_WRITER_NOT_RESPONDING);
    assert!(!commit_happened);
    assert_eq!(
        fixture.writers[0].events(),
        events(&["identify", "prepare_backup", "prepare_snapshot", "freeze"])
    );
    assert_eq!(
        fixture.writers[1].events(),
        events(&[
            "identify",
            "prepare_backup",
            "prepare_snapshot",
            "freeze",
            "abort",
            "backup_shutdown"
        ])
    );
    assert_eq!(
        host.statuses()[0].state,
        WriterState::VSS_WS_FAILED_AT_FREEZE
    );
}

#[test]
fn a_commit_that_overruns_the_freeze_deadline_aborts_the_set_and_hands_the_commit_back() {
    let mut fixture = Fixture::new();
    fixture.writer("Quick Writer", Duration::from_secs(1), "");
    let host = fixture.host();
    let observer = Recorder::default();
    let run = create(
        &host,
        &observer,
        Context::Persistent,
        Duration::from_millis(1300),
    );
    let (failure, commit_happened) = run.result.expect_err("overrun");
    assert!(
        matches!(failure, CreationFailure::FreezeDeadlineExceeded { .. }),
        "{failure}"
    );
    assert_eq!(failure.vss_code(), VssCode::VSS_E_WRITERERROR_TIMEOUT);
    assert!(
        commit_happened,
        "the caller must delete the committed shadows"
    );
    assert_eq!(
        fixture.writers[0].events(),
        events(&[
            "identify",
            "prepare_backup",
            "prepare_snapshot",
            "freeze",
            "abort",
            "backup_shutdown"
        ])
    );
    let abort = fixture.writers[0].request("abort");
    assert_eq!(abort["reason"], "timeout");
}

#[test]
fn a_garbage_line_fails_the_current_event_and_logs_reach_the_observer() {
    let mut fixture = Fixture::new();
    fixture.writer(
        "Noisy Writer",
        Duration::from_secs(5),
        "[events.prepare_backup]\nlogs = [\"readying\"]\nstderr = [\"on stderr\"]\n[events.prepare_snapshot]\naction = \"garbage\"\n",
    );
    let host = fixture.host();
    let observer = Recorder::default();
    let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
    let (failure, _) = run.result.expect_err("garbage");
    assert!(matches!(
        failure,
        CreationFailure::WriterFailed {
            failure: EventFailure::InvalidLine { .. },
            ..
        }
    ));
    assert_eq!(failure.vss_code(), VssCode::VSS_E_UNEXPECTED_WRITER_ERROR);
    assert_eq!(
        fixture.writers[0].events(),
        events(&[
            "identify",
            "prepare_backup",
            "prepare_snapshot",
            "abort",
            "backup_shutdown"
        ])
    );
    let logs = observer.logs.borrow();
    assert!(
        logs.contains(&("Noisy Writer".to_string(), "readying".to_string())),
        "{logs:?}"
    );
    assert!(
        logs.contains(&("Noisy Writer".to_string(), "on stderr".to_string())),
        "{logs:?}"
    );
}

#[test]
fn an_unknown_error_code_is_an_unexpected_writer_error() {
    let mut fixture = Fixture::new();
    fixture.writer(
        "Odd Writer",
        Duration::from_secs(5),
        "[events.freeze]\naction = \"fail\"\nerror = \"sulking\"\n",
    );
    let host = fixture.host();
    let run = create(
        &host,
        &Recorder::default(),
        Context::Volatile,
        Duration::ZERO,
    );
    let (failure, _) = run.result.expect_err("unknown code");
    assert!(matches!(
        failure,
        CreationFailure::WriterFailed {
            failure: EventFailure::UnknownErrorCode { .. },
            ..
        }
    ));
    assert_eq!(failure.vss_code(), VssCode::VSS_E_UNEXPECTED_WRITER_ERROR);
}

#[test]
fn the_step_hook_can_abort_before_any_event() {
    let mut fixture = Fixture::new();
    fixture.writer("Stepped Writer", Duration::from_secs(5), "");
    let host = fixture.host();
    let observer = Recorder {
        abort_before: Some(WriterEvent::Freeze),
        ..Recorder::default()
    };
    let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
    let (failure, commit_happened) = run.result.expect_err("aborted");
    assert!(matches!(
        failure,
        CreationFailure::StepAborted {
            event: WriterEvent::Freeze
        }
    ));
    assert!(!commit_happened);
    assert_eq!(run.commits, 0);
    assert_eq!(
        fixture.writers[0].events(),
        events(&[
            "identify",
            "prepare_backup",
            "prepare_snapshot",
            "abort",
            "backup_shutdown"
        ])
    );
}

#[test]
fn nowriters_contexts_send_no_writer_events() {
    let mut fixture = Fixture::new();
    fixture.writer("Ignored Writer", Duration::from_secs(5), "");
    let host = fixture.host();
    let observer = Recorder::default();
    let run = create(
        &host,
        &observer,
        Context::PersistentNoWriters,
        Duration::ZERO,
    );
    let session = run.result.expect("created");
    assert!(session.writers.is_empty());
    assert_eq!(run.commits, 1);
    assert_eq!(fixture.writers[0].events(), events(&["identify"]));
}

#[test]
fn a_component_on_a_volume_outside_the_set_excludes_its_writer_and_verify_fails() {
    let mut fixture = Fixture::new();
    fixture.writer("Included Writer", Duration::from_secs(5), "");
    let directory = fixture.directory.path().to_path_buf();
    let config = directory.join("elsewhere.toml");
    std::fs::write(
        &config,
        "[[components]]\nname = \"elsewhere\"\nvolumes = [\"/images/other.img\"]\n",
    )
    .expect("write");
    fixture.registrations.push(Registration::new(
        "Elsewhere Writer",
        WriterId(Uuid::from_u128(0x2000)),
        vec![
            TEST_WRITER.to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ],
    ));
    let host = fixture.host();
    let observer = Recorder::default();
    let coordinator = Coordinator::new(&host, &observer);
    let gathered = coordinator.gather_metadata();
    let plan = coordinator
        .select(
            &gathered,
            &WriterSelection::default(),
            &[VOLUME_IN_SET],
            &resolve,
        )
        .expect("plan");
    assert_eq!(plan.writers.len(), 1);
    assert_eq!(
        observer.verbose.borrow()[..3],
        [
            "Component \"\\elsewhere\" from writer \"Elsewhere Writer\" is excluded from backup,".to_string(),
            "because it requires volume /images/other.img which is not in the shadow copy set.".to_string(),
            "Excluding writer \"Elsewhere Writer\", because all of its components have been excluded.".to_string(),
        ]
    );
    let verify = WriterSelection {
        verify: vec!["Elsewhere Writer".to_string()],
        exclude: Vec::new(),
    };
    let error = coordinator
        .select(&gathered, &verify, &[VOLUME_IN_SET], &resolve)
        .expect_err("verify fails");
    assert!(
        matches!(error, SelectionError::VerifiedExcluded { .. }),
        "{error}"
    );
    let by_id = WriterSelection {
        verify: vec![format!("{}", WriterId(Uuid::from_u128(0x1000)))],
        exclude: Vec::new(),
    };
    assert!(coordinator
        .select(&gathered, &by_id, &[VOLUME_IN_SET], &resolve)
        .is_ok());
}

#[test]
fn restore_events_go_to_writers_that_ask_for_them_and_simulation_sends_none() {
    let mut fixture = Fixture::new();
    fixture.writer("Restoring Writer", Duration::from_secs(5), "");
    let host = fixture.host();
    let observer = Recorder::default();
    let coordinator = Coordinator::new(&host, &observer);
    let gathered = coordinator.gather_metadata();
    let writer = &gathered.writers[0];
    let restore = [RestoreWriter {
        writer_id: writer.writer_id,
        name: writer.name.clone(),
        metadata: writer.metadata.clone(),
        components: vec!["\\data".to_string()],
    }];
    let involvement = coordinator.simulate_restore(&restore).expect("simulated");
    assert!(involvement[0].gets_restore_events && involvement[0].registered);
    assert_eq!(
        fixture.writers[0].events(),
        events(&["identify"]),
        "simulate restore sends nothing"
    );
    coordinator.pre_restore(&restore).expect("pre restore");
    coordinator.post_restore(&restore).expect("post restore");
    assert_eq!(
        fixture.writers[0].events(),
        events(&["identify", "identify", "pre_restore", "post_restore"])
    );
    assert_eq!(
        fixture.writers[0].request("pre_restore")["components"],
        serde_json::json!(["\\data"])
    );

    let unknown = [RestoreWriter {
        components: vec!["\\nothing".to_string()],
        ..restore[0].clone()
    }];
    assert_eq!(
        coordinator
            .simulate_restore(&unknown)
            .expect_err("unknown")
            .vss_code(),
        VssCode::VSS_E_OBJECT_NOT_FOUND
    );
    let unregistered = [RestoreWriter {
        writer_id: WriterId(Uuid::from_u128(0xDEAD)),
        ..restore[0].clone()
    }];
    assert_eq!(
        coordinator
            .pre_restore(&unregistered)
            .expect_err("unregistered")
            .vss_code(),
        VssCode::VSS_E_OBJECT_NOT_FOUND
    );
}

fn python3() -> Option<PathBuf> {
    let output = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .ok()?;
    output.status.success().then(|| PathBuf::from("python3"))
}

#[test]
fn a_python_writer_written_from_the_protocol_document_goes_through_a_full_backup() {
    let Some(python) = python3() else {
        support::skip("python3 is not installed");
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let record = directory.path().join("python.record");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/writers/python_writer.py");
    let registration_file = directory.path().join("ledger.toml");
    std::fs::write(
        &registration_file,
        format!(
            "name = \"Ledger Writer\"\nid = \"{{6f1b9d7e-3c2a-4e5f-9a8b-1c2d3e4f5a6b}}\"\ncommand = [{:?}, {:?}, \"/images/data.img\", {:?}]\nfreeze_timeout = \"20s\"\n",
            python.display().to_string(),
            script.display().to_string(),
            record.display().to_string()
        ),
    )
    .expect("write registration");
    let registrations = load_registrations(directory.path());
    assert!(
        registrations.problems.is_empty(),
        "{:?}",
        registrations.problems
    );
    let host = WriterHost::new(
        registrations,
        HostOptions {
            event_timeout: Duration::from_secs(10),
            ..HostOptions::default()
        },
    );
    let observer = Recorder::default();
    let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
    let session = run.result.expect("created with the Python writer");
    assert_eq!(
        session.writers[0].components[0].full_path,
        "\\books\\ledger"
    );
    let coordinator = Coordinator::new(&host, &observer);
    coordinator
        .backup_complete(&session, true)
        .expect("complete");
    coordinator.backup_shutdown(&session).expect("shutdown");
    assert_eq!(
        session.writers[0].instance_id.to_string(),
        "{0b3c5d7e-1111-4222-8333-944455556666}"
    );
    assert!(observer
        .logs
        .borrow()
        .iter()
        .any(|(_, line)| line == "holding ledger appends for 20000 ms"));
    drop(host);
    let recorded: Vec<Value> = std::fs::read_to_string(&record)
        .expect("record")
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    let names: Vec<&str> = recorded
        .iter()
        .map(|request| request["event"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "identify",
            "prepare_backup",
            "prepare_snapshot",
            "freeze",
            "thaw",
            "post_snapshot",
            "backup_complete",
            "backup_shutdown",
            "eof"
        ],
        "dropping the host closes the writer's input"
    );
}

#[test]
fn an_empty_plan_creates_without_writers() {
    let fixture = Fixture::new();
    let host = fixture.host();
    let observer = Recorder::default();
    let coordinator = Coordinator::new(&host, &observer);
    let outcome = coordinator
        .create_shadow_set(
            &request(Context::Volatile),
            &SelectionPlan::without_writers(),
            &mut || -> Result<u8, String> { Ok(7) },
            &mut |_| Vec::new(),
        )
        .expect("created");
    assert_eq!(outcome.committed, 7);
    let failed = coordinator
        .create_shadow_set(
            &request(Context::Volatile),
            &SelectionPlan::without_writers(),
            &mut || -> Result<u8, String> { Err("disk full".to_string()) },
            &mut |_| Vec::new(),
        )
        .expect_err("commit fails");
    assert_eq!(failed.vss_code(), VssCode::VSS_E_UNEXPECTED_PROVIDER_ERROR);
    assert!(!failed.commit_happened());
}

#[test]
fn a_commit_longer_than_the_commit_limit_is_handed_back_for_deletion() {
    let fixture = Fixture::new();
    let host = fixture.host();
    let observer = Recorder::default();
    let coordinator =
        Coordinator::new(&host, &observer).with_commit_limit(Duration::from_millis(50));
    let error = coordinator
        .create_shadow_set(
            &request(Context::PersistentNoWriters),
            &SelectionPlan::without_writers(),
            &mut || -> Result<u8, String> {
                std::thread::sleep(Duration::from_millis(120));
                Ok(9)
            },
            &mut |_| Vec::new(),
        )
        .expect_err("too slow");
    assert!(matches!(
        *error.failure,
        CreationFailure::CommitTooSlow { .. }
    ));
    assert_eq!(error.vss_code(), VssCode::VSS_E_HOLD_WRITES_TIMEOUT);
    assert_eq!(
        error.committed,
        Some(9),
        "the committed set comes back so the caller deletes it"
    );
}

#[test]
fn post_snapshot_gives_read_write_paths_only_during_auto_recovery() {
    for autorecover in [false, true] {
        let mut fixture = Fixture::new();
        fixture.writer("Recovering Writer", Duration::from_secs(5), "");
        let host = fixture.host();
        let observer = Recorder::default();
        let coordinator = Coordinator::new(&host, &observer);
        let gathered = coordinator.gather_metadata();
        let plan = coordinator
            .select(
                &gathered,
                &WriterSelection::default(),
                &[VOLUME_IN_SET],
                &resolve,
            )
            .expect("plan");
        let creation = CreationRequest {
            autorecover,
            ..request(Context::Persistent)
        };
        coordinator
            .create_shadow_set(
                &creation,
                &plan,
                &mut || -> Result<ShadowId, String> { Ok(ShadowId(Uuid::from_u128(1))) },
                &mut |shadow: &ShadowId| {
                    vec![PostSnapshotShadow {
                        volume: "/images/data.img".to_string(),
                        volume_id: None,
                        shadow_id: *shadow,
                        path: Some(PathBuf::from("/run/diskshadow/rw/1")),
                    }]
                },
            )
            .expect("created");
        let post = fixture.writers[0].request("post_snapshot");
        assert_eq!(post["autorecover"], autorecover);
        let expected = if autorecover {
            Value::from("/run/diskshadow/rw/1")
        } else {
            Value::Null
        };
        assert_eq!(post["shadows"][0]["path"], expected);
    }
}

#[test]
fn the_host_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<WriterHost>();
}

#[test]
fn a_writer_that_cannot_start_is_unavailable_and_the_others_still_work() {
    let mut fixture = Fixture::new();
    fixture.registrations.push(Registration::new(
        "Missing Writer",
        WriterId(Uuid::from_u128(0x3000)),
        vec!["/nonexistent/diskshadow-writer".to_string()],
    ));
    fixture.writer("Present Writer", Duration::from_secs(5), "");
    let host = fixture.host();
    let observer = Recorder::default();
    let coordinator = Coordinator::new(&host, &observer);
    let gathered = coordinator.gather_metadata();
    assert_eq!(gathered.writers.len(), 1);
    assert_eq!(gathered.unavailable.len(), 1);
    assert_eq!(
        gathered.unavailable[0].code,
        VssCode::VSS_E_WRITER_INFRASTRUCTURE
    );
    assert_eq!(
        host.statuses()[0].state,
        WriterState::VSS_WS_FAILED_AT_IDENTIFY
    );
    let verify = WriterSelection {
        verify: vec!["Missing Writer".to_string()],
        exclude: Vec::new(),
    };
    let error = coordinator
        .select(&gathered, &verify, &[VOLUME_IN_SET], &resolve)
        .expect_err("unavailable");
    assert_eq!(error.vss_code(), VssCode::VSS_E_WRITER_INFRASTRUCTURE);

    // The instance ID given to a writer that names none stays the same for its process.
    let first = gathered.writers[0].instance_id;
    let again = coordinator.gather_metadata();
    assert_eq!(again.writers[0].instance_id, first);
}

#[test]
fn the_test_writer_can_be_configured_by_flags_alone() {
    let directory = tempfile::tempdir().expect("tempdir");
    let record = directory.path().join("flags.record");
    let registration = Registration::new(
        "Flag Writer",
        WriterId(Uuid::from_u128(0x4000)),
        [
            TEST_WRITER,
            "--component",
            "data=/images/data.img",
            "--on",
            "prepare_backup=log:getting ready",
            "--on",
            "freeze=fail:timeout",
            "--record",
        ]
        .iter()
        .map(|argument| argument.to_string())
        .chain([record.display().to_string()])
        .collect(),
    );
    let host = WriterHost::new(
        RegistrationSet {
            registrations: vec![registration],
            problems: Vec::new(),
        },
        HostOptions {
            event_timeout: Duration::from_secs(3),
            ..HostOptions::default()
        },
    );
    let observer = Recorder::default();
    let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
    let (failure, _) = run.result.expect_err("freeze fails");
    assert_eq!(failure.vss_code(), VssCode::VSS_E_WRITERERROR_TIMEOUT);
    assert!(observer
        .logs
        .borrow()
        .iter()
        .any(|(_, line)| line == "getting ready"));
    let writer = TestWriter {
        name: "Flag Writer".to_string(),
        record,
    };
    assert_eq!(
        writer.events(),
        events(&[
            "identify",
            "prepare_backup",
            "prepare_snapshot",
            "freeze",
            "abort",
            "backup_shutdown"
        ])
    );
}

/// How often the writer received `thaw` or `abort` after its `freeze`.
fn releases_after_freeze(writer: &TestWriter) -> usize {
    let events = writer.events();
    let Some(freeze) = events.iter().position(|event| event == "freeze") else {
        return 0;
    };
    events[freeze..]
        .iter()
        .filter(|event| *event == "thaw" || *event == "abort")
        .count()
}

#[test]
fn writers_a_hung_first_writer_does_not_hide_the_healthy_writers_answer() {
    for hung_event in ["freeze", "prepare_backup"] {
        let mut fixture = Fixture::new();
        // Registration order matters: the hung writer is read first.
        fixture.writer(
            "Hanging Writer",
            Duration::from_secs(1),
            &format!("[events.{hung_event}]\naction = \"hang\"\n"),
        );
        fixture.writer("Healthy Writer", Duration::from_secs(5), "");
        let host = fixture.host();
        let observer = Recorder::default();
        let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
        let (failure, commit_happened) = run.result.expect_err("the hung writer fails the set");
        match &failure {
            CreationFailure::WriterFailed {
                writer,
                failure: EventFailure::NotResponding { waited },
                ..
            } => {
                assert_eq!(writer, "Hanging Writer", "{hung_event}");
                // It is reported with the time it was really waited for, not "0 ms".
                assert!(
                    *waited >= Duration::from_millis(900),
                    "{hung_event}: waited {waited:?}"
                );
            }
            other => panic!("{hung_event}: {other}"),
        }
        assert!(!commit_happened);
        let event = WriterEvent::from_protocol_name(hung_event).expect("event");
        let healthy_reply = observer
            .replies
            .borrow()
            .iter()
            .find(|(name, replied, _)| name == "Healthy Writer" && *replied == event)
            .map(|(_, _, outcome)| outcome.clone())
            .expect("the healthy writer's answer was recorded");
        assert_eq!(healthy_reply, Ok(()), "{hung_event}");
        let statuses = host.statuses();
        assert!(
            !statuses[1].state.is_failed(),
            "{hung_event}: {:?}",
            statuses[1]
        );
        assert!(
            statuses[1].running,
            "{hung_event}: the healthy writer is not stopped"
        );
        let healthy_events = fixture.writers[1].events();
        assert_eq!(
            healthy_events
                .iter()
                .filter(|name| *name == "abort")
                .count(),
            1,
            "{hung_event}: {healthy_events:?}"
        );
        assert_eq!(
            healthy_events.last().map(String::as_str),
            Some("backup_shutdown")
        );
        if hung_event == "freeze" {
            assert_eq!(releases_after_freeze(&fixture.writers[1]), 1);
        }
        assert!(
            !statuses[0].running,
            "{hung_event}: the hung writer is stopped"
        );
    }
}

#[test]
fn writers_a_writer_that_answers_twice_fails_the_set_and_is_stopped() {
    let mut fixture = Fixture::new();
    fixture.writer(
        "Repeating Writer",
        Duration::from_secs(5),
        "[events.freeze]\naction = \"duplicate\"\n",
    );
    fixture.writer("Healthy Writer", Duration::from_secs(5), "");
    let host = fixture.host();
    let observer = Recorder::default();
    // The commit takes a while, so the repeated answer has arrived by the time of thaw at the
    // latest.
    let run = create(
        &host,
        &observer,
        Context::Volatile,
        Duration::from_millis(200),
    );
    let (failure, _commit_happened) = run.result.expect_err("the violation fails the set");
    match &failure {
        CreationFailure::WriterFailed {
            writer,
            failure: EventFailure::ProtocolViolation(violation),
            ..
        } => {
            assert_eq!(writer, "Repeating Writer");
            assert!(
                violation.contains("answered twice to freeze"),
                "{violation}"
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(failure.vss_code(), VssCode::VSS_E_UNEXPECTED_WRITER_ERROR);
    let statuses = host.statuses();
    assert!(statuses[0].state.is_failed(), "{:?}", statuses[0]);
    assert!(
        statuses[0]
            .failure_message
            .as_deref()
            .is_some_and(|message| message.contains("answered twice to freeze")),
        "{:?}",
        statuses[0]
    );
    assert!(
        !statuses[0].running,
        "a writer that broke the protocol is stopped"
    );
    assert!(!statuses[1].state.is_failed(), "{:?}", statuses[1]);
    // Every frozen writer is released exactly once (the stopped one by end of input).
    assert_eq!(releases_after_freeze(&fixture.writers[1]), 1);
    assert!(releases_after_freeze(&fixture.writers[0]) <= 1);
}

#[test]
fn writers_an_answer_to_a_request_never_sent_fails_the_event() {
    let mut fixture = Fixture::new();
    fixture.writer(
        "Wrong Id Writer",
        Duration::from_secs(5),
        "[events.prepare_backup]\naction = \"wrong_id\"\n",
    );
    let host = fixture.host();
    let observer = Recorder::default();
    let started = std::time::Instant::now();
    let run = create(&host, &observer, Context::Volatile, Duration::ZERO);
    let (failure, commit_happened) = run.result.expect_err("the violation fails the set");
    assert!(
        matches!(&failure, CreationFailure::WriterFailed { failure: EventFailure::ProtocolViolation(violation), .. } if violation.contains("never sent")),
        "{failure}"
    );
    assert!(!commit_happened);
    // It fails at once, not after the event timeout.
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        host.statuses()[0].state,
        WriterState::VSS_WS_FAILED_AT_PREPARE_BACKUP
    );
}
