//! The journal example (`examples/journal`): its record format and append hold in process,
//! and, when the example is built, its writer driven through a backup while the journal app
//! appends.

mod support;

#[allow(dead_code)]
#[path = "../examples/journal/journal.rs"]
mod journal;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diskshadow::engine::coordinator::{
    Coordinator, CreationRequest, SilentObserver, WriterSelection,
};
use diskshadow::engine::ids::{ShadowSetId, VolumeId, WriterId};
use diskshadow::engine::vss::{BackupType, Context};
use diskshadow::engine::writer::{HostOptions, Registration, RegistrationSet, WriterHost};
use uuid::Uuid;

#[test]
fn verify_accepts_whole_consecutive_records_and_rejects_the_rest() {
    let mut bytes = Vec::new();
    for sequence in 0..3 {
        bytes.extend_from_slice(&journal::encode_record(sequence, 0, b"entry"));
    }
    assert_eq!(journal::verify_bytes(&bytes), Ok(3));
    assert!(
        journal::verify_bytes(&bytes[..bytes.len() - 1]).is_err(),
        "torn record"
    );
    let mut corrupt = bytes.clone();
    corrupt[70] ^= 1;
    assert_eq!(
        journal::verify_bytes(&corrupt)
            .expect_err("checksum")
            .offset,
        64
    );
    let mut reordered = bytes[64..128].to_vec();
    reordered.extend_from_slice(&bytes[..64]);
    assert!(journal::verify_bytes(&reordered).is_err(), "sequence");
}

#[test]
fn a_hold_stops_appends_until_it_is_released() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("app.jnl");
    let mut appender = journal::Journal::open(&path).expect("open");
    for _ in 0..3 {
        appender.append(b"before").expect("append");
    }
    let hold = journal::AppendHold::acquire(&path, Duration::from_secs(1)).expect("hold");
    let blocked = std::thread::spawn(move || appender.append(b"during").expect("append"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(journal::verify_file(&path), Ok(3), "no append while held");
    drop(hold);
    assert_eq!(blocked.join().expect("join"), 3);
    assert_eq!(journal::verify_file(&path), Ok(4));
}

fn example_binary() -> Option<PathBuf> {
    let binary = Path::new(env!("CARGO_BIN_EXE_diskshadow-test-writer"))
        .parent()?
        .join("examples")
        .join("journal");
    binary.exists().then_some(binary)
}

/// Stops the journal app however the test ends.
struct RunningApp(std::process::Child);

impl Drop for RunningApp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn records(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|metadata| metadata.len() / journal::RECORD_SIZE as u64)
        .unwrap_or(0)
}

#[test]
fn the_journal_writer_holds_appends_while_the_shadow_is_committed() {
    let Some(binary) = example_binary() else {
        support::skip("the journal example is not built (cargo test builds it; `cargo build --example journal`)");
        return;
    };
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("app.jnl");
    let app = Command::new(&binary)
        .args(["run", &path.display().to_string(), "100000", "1"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start the journal app");
    let app = RunningApp(app);
    let started = Instant::now();
    while records(&path) < 20 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(records(&path) >= 20, "the app appends");

    let mut registration = Registration::new(
        "Journal Writer",
        WriterId(Uuid::from_u128(0x6f1b9d7e)),
        vec![
            binary.display().to_string(),
            "writer".to_string(),
            path.display().to_string(),
            "/images/data.img".to_string(),
        ],
    );
    registration.freeze_timeout = Duration::from_secs(5);
    let host = WriterHost::new(
        RegistrationSet {
            registrations: vec![registration],
            problems: Vec::new(),
        },
        HostOptions {
            event_timeout: Duration::from_secs(5),
            ..HostOptions::default()
        },
    );
    let volume = VolumeId(Uuid::from_u128(0xDA7A));
    let coordinator = Coordinator::new(&host, &SilentObserver);
    let gathered = coordinator.gather_metadata();
    let plan = coordinator
        .select(&gathered, &WriterSelection::default(), &[volume], &|name| {
            (name == "/images/data.img").then_some(volume)
        })
        .expect("plan");
    assert_eq!(plan.writers.len(), 1);
    let request = CreationRequest {
        snapshot_set_id: ShadowSetId(Uuid::from_u128(1)),
        context: Context::Volatile,
        backup_type: BackupType::Full,
        volumes: vec!["/images/data.img".to_string()],
        flush_mount_points: Vec::new(),
        autorecover: false,
    };
    let outcome = coordinator.create_shadow_set(
        &request,
        &plan,
        &mut || -> Result<(Vec<u8>, u64), String> {
            // The "provider": copy the journal while it is frozen, and check it stays still.
            let copy = std::fs::read(&path).map_err(|error| error.to_string())?;
            std::thread::sleep(Duration::from_millis(100));
            Ok((copy, records(&path)))
        },
        &mut |_| Vec::new(),
    );
    let outcome = outcome.expect("created");
    let (copy, records_after_hold) = &outcome.committed;
    let copied_records = journal::verify_bytes(copy).expect("the shadow holds only whole records");
    assert_eq!(
        copied_records, *records_after_hold,
        "no append happened while the writer held the journal"
    );
    let resumed_from = records(&path);
    let waited = Instant::now();
    while records(&path) <= resumed_from && waited.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(records(&path) > resumed_from, "appends resume after thaw");
    coordinator
        .backup_complete(&outcome.session, true)
        .expect("complete");
    coordinator
        .backup_shutdown(&outcome.session)
        .expect("shutdown");
    let exits = host.shutdown();
    assert_eq!(
        exits,
        [("Journal Writer".to_string(), true)],
        "the writer exits at end of input"
    );
    drop(app);
    assert!(journal::verify_file(&path).is_ok());
}
