//! The writer conformance check against writers that follow the protocol and writers that
//! break it in each way the check must catch.

mod support;

use std::path::Path;
use std::time::Duration;

use diskshadow::engine::coordinator::conformance::{check_writer, ConformanceOptions, FindingKind};
use diskshadow::engine::ids::WriterId;
use diskshadow::engine::writer::Registration;
use uuid::Uuid;

const TEST_WRITER: &str = env!("CARGO_BIN_EXE_diskshadow-test-writer");

/// Generous enough that a writer on a loaded machine answers in time; the freeze-timeout
/// scenario lasts a little longer than `short_freeze_deadline`.
fn options() -> ConformanceOptions {
    ConformanceOptions {
        event_timeout: Duration::from_secs(3),
        short_freeze_deadline: Duration::from_secs(1),
        late_answer_grace: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(1),
    }
}

fn test_writer(directory: &Path, name: &str, events: &str) -> Registration {
    let config = directory.join(format!("{}.toml", name.replace(' ', "_")));
    std::fs::write(
        &config,
        format!("[[components]]\nname = \"data\"\nvolumes = [\"/images/data.img\"]\n{events}\n"),
    )
    .expect("write config");
    Registration::new(
        name,
        WriterId(Uuid::from_u128(0x77)),
        vec![
            TEST_WRITER.to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ],
    )
}

fn kinds(registration: &Registration) -> Vec<FindingKind> {
    kinds_with(registration, &options())
}

fn kinds_with(registration: &Registration, options: &ConformanceOptions) -> Vec<FindingKind> {
    let report = check_writer(registration, options);
    for finding in &report.findings {
        eprintln!("{finding}");
    }
    report.findings.iter().map(|finding| finding.kind).collect()
}

#[test]
fn a_conforming_writer_passes_every_scenario() {
    let directory = tempfile::tempdir().expect("tempdir");
    let report = check_writer(
        &test_writer(directory.path(), "Good Writer", ""),
        &options(),
    );
    assert!(report.is_conformant(), "{:#?}", report.findings);
    assert_eq!(
        report.scenarios,
        [
            "full backup",
            "abort after freeze",
            "freeze timeout",
            "restore",
            "end of input"
        ]
    );
    let events: Vec<String> = report
        .events
        .iter()
        .filter(|(scenario, _, _)| *scenario == "abort after freeze")
        .map(|(_, event, _)| event.to_string())
        .collect();
    assert_eq!(
        events,
        [
            "identify",
            "prepare_backup",
            "prepare_snapshot",
            "freeze",
            "abort",
            "backup_shutdown"
        ]
    );
}

#[test]
fn bad_json_unknown_codes_and_schema_errors_are_reported() {
    let directory = tempfile::tempdir().expect("tempdir");
    let garbage = kinds(&test_writer(
        directory.path(),
        "Garbage Writer",
        "[events.prepare_snapshot]\naction = \"garbage\"\n",
    ));
    assert!(garbage.contains(&FindingKind::BadJson), "{garbage:?}");
    let unknown = kinds(&test_writer(
        directory.path(),
        "Unknown Code Writer",
        "[events.backup_complete]\naction = \"fail\"\nerror = \"meh\"\n",
    ));
    assert!(
        unknown.contains(&FindingKind::UnknownErrorCode),
        "{unknown:?}"
    );
    let schema = directory.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"metadata": {"usage": "sometimes", "source": "other"}}"#,
    )
    .expect("write");
    let registration = Registration::new(
        "Schema Writer",
        WriterId(Uuid::from_u128(0x78)),
        vec![
            TEST_WRITER.to_string(),
            "--config".to_string(),
            schema.display().to_string(),
        ],
    );
    let schema_kinds = kinds(&registration);
    assert!(
        schema_kinds.contains(&FindingKind::MetadataSchema),
        "{schema_kinds:?}"
    );
}

#[test]
fn wrong_duplicate_and_late_answers_are_reported() {
    let directory = tempfile::tempdir().expect("tempdir");
    let wrong = kinds(&test_writer(
        directory.path(),
        "Wrong Id Writer",
        "[events.thaw]\naction = \"wrong_id\"\n",
    ));
    assert!(wrong.contains(&FindingKind::UnexpectedId), "{wrong:?}");
    // An answer to a request that was never sent fails the event at once: the check does not
    // wait for the right answer until the event times out.
    assert!(!wrong.contains(&FindingKind::NoAnswer), "{wrong:?}");
    let duplicate = check_writer(
        &test_writer(
            directory.path(),
            "Duplicate Writer",
            "[events.prepare_backup]\naction = \"duplicate\"\n",
        ),
        &options(),
    );
    assert!(
        duplicate
            .findings
            .iter()
            .any(|finding| finding.kind == FindingKind::UnexpectedId
                && finding
                    .description
                    .contains("answered twice to prepare_backup")),
        "{:#?}",
        duplicate.findings
    );
    let impatient = ConformanceOptions {
        event_timeout: Duration::from_millis(500),
        ..options()
    };
    let late = kinds_with(
        &test_writer(
            directory.path(),
            "Late Writer",
            "[events.post_restore]\ndelay_ms = 1000\n",
        ),
        &impatient,
    );
    assert!(late.contains(&FindingKind::LateAnswer), "{late:?}");
}

#[test]
fn the_python_writer_from_the_protocol_document_conforms() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip("python3 is not installed");
        return;
    }
    let directory = tempfile::tempdir().expect("tempdir");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/writers/python_writer.py");
    let registration = Registration::new(
        "Ledger Writer",
        WriterId(Uuid::from_u128(0x79)),
        vec![
            "python3".to_string(),
            script.display().to_string(),
            "/images/data.img".to_string(),
            directory.path().join("record").display().to_string(),
        ],
    );
    let report = check_writer(&registration, &options());
    assert!(report.is_conformant(), "{:#?}", report.findings);
}
