//! Store corruption: every kind of store file is flipped, truncated and deleted (a mutation
//! loop, bounded in time, offsets from a seeded generator), and for each mutation:
//!
//! - neither a read-only open (`check-store`) nor a writable open panics;
//! - every shadow copy that is served returns exactly the bytes it had before the mutation;
//! - every refusal (of the open, or of a shadow) names the damaged file;
//! - no shadow copy vanishes silently (it is served, or refused with the reason);
//! - the read-only open and `check` change no byte and no modification time of the store.

mod support;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use diskshadow::engine::clock::{SeededIds, SteppingClock};
use diskshadow::engine::core::EngineOptions;
use diskshadow::engine::ids::ShadowId;
use diskshadow::engine::model::{
    CreateSpec, CreateVolume, DeleteSelector, DriveTarget, RequesterId,
};
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;
use support::scratch;

const CHUNK: u32 = 4096;
/// The whole loop must stay well inside this.
const TIME_BUDGET: Duration = Duration::from_secs(20);

fn options() -> EngineOptions {
    EngineOptions::new(
        Arc::new(SteppingClock::default()),
        Arc::new(SeededIds::new(5)),
        "HOST",
        CHUNK,
        Arc::new(RealBackend),
    )
}

/// A small deterministic generator (SplitMix64), so every run mutates the same offsets.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next() % bound
        }
    }
}

fn pattern(seed: u8, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| seed.wrapping_mul(31).wrapping_add((index / 7) as u8) | 1)
        .collect()
}

fn spec(volume: diskshadow::engine::ids::VolumeId) -> CreateSpec {
    CreateSpec {
        volumes: vec![CreateVolume {
            volume,
            provider: None,
        }],
        context: Context::Persistent,
        extra_attributes: Attributes::default(),
        requester: RequesterId(7),
        set_id: None,
    }
}

fn read_shadow(engine: &Engine, shadow: ShadowId) -> Result<Vec<u8>, String> {
    let device = engine
        .open_shadow(shadow)
        .map_err(|error| error.to_string())?;
    let mut buffer = vec![0u8; device.size() as usize];
    device
        .read_at(0, &mut buffer)
        .map_err(|error| error.to_string())?;
    Ok(buffer)
}

/// Builds the store: two volumes, persistent shadows with preserved chunks (random and
/// sequential first writes, a zero chunk, a delete that frees versions), a catalog compacted
/// into `base.json` with a journal on top. Returns each shadow's expected content.
fn build_store(store: &Path, images: &Path) -> BTreeMap<ShadowId, Vec<u8>> {
    std::fs::create_dir_all(images).expect("images dir");
    let engine = Engine::open(store, options()).expect("open");
    let mut volumes = Vec::new();
    for (index, size) in [(0u8, 256u64 << 10), (1u8, 128u64 << 10)] {
        let path = images.join(format!("volume{index}.img"));
        let mut content = pattern(index + 1, size as usize);
        // A hole in the middle: preserved as a zero marker.
        let hole = (size / 2) as usize;
        content[hole..hole + CHUNK as usize].fill(0);
        std::fs::write(&path, &content).expect("write image");
        let info = engine
            .register_volume(&path, Some(CHUNK))
            .expect("register");
        volumes.push(info.id);
    }
    let mut shadows = Vec::new();
    let write = |volume, offset: u64, data: &[u8]| {
        let device = engine.open_volume(volume).expect("open volume");
        device.write_at(offset, data).expect("write");
        device.flush().expect("flush");
    };
    for &volume in &volumes {
        shadows.push(
            engine
                .create_shadow_set(&spec(volume))
                .expect("create")
                .shadows[0]
                .id,
        );
    }
    write(volumes[0], 0, &pattern(9, 3 * CHUNK as usize));
    write(volumes[0], 128 << 10, &pattern(10, CHUNK as usize)); // the hole
    write(volumes[1], 5 * u64::from(CHUNK) + 100, &pattern(11, 300));
    // Enough transactions to fold the journal into base.json once (long paths make big
    // records, so that takes few syncs).
    let long_directory = (0..8).fold(images.to_path_buf(), |path, level| {
        path.join(format!("{level}{}", "d".repeat(200)))
    });
    std::fs::create_dir_all(&long_directory).expect("long directory");
    let letter_target = DriveTarget::Directory(long_directory);
    let base = store.join("catalog").join("base.json");
    let mut transactions = 0;
    while !base.exists() {
        engine.map_drive('Q', letter_target.clone()).expect("map");
        engine.unmap_drive('Q').expect("unmap");
        transactions += 1;
        assert!(transactions < 20_000, "the catalog was never compacted");
    }
    for &volume in &volumes {
        shadows.push(
            engine
                .create_shadow_set(&spec(volume))
                .expect("create")
                .shadows[0]
                .id,
        );
    }
    // A sequential run: windows preserved ahead of the writer.
    write(volumes[0], 16 << 10, &pattern(12, 96 << 10));
    write(volumes[1], 0, &pattern(13, 2 * CHUNK as usize));
    let doomed = engine
        .create_shadow_set(&spec(volumes[1]))
        .expect("create")
        .shadows[0]
        .id;
    write(volumes[1], 64 << 10, &pattern(14, 3 * CHUNK as usize));
    engine
        .delete_shadows(&DeleteSelector::Id(doomed))
        .expect("delete");
    write(volumes[0], 200 << 10, &pattern(15, 5 * CHUNK as usize));
    write(volumes[1], 100 << 10, &pattern(16, CHUNK as usize));
    let expected: BTreeMap<ShadowId, Vec<u8>> = shadows
        .iter()
        .map(|&shadow| (shadow, read_shadow(&engine, shadow).expect("read shadow")))
        .collect();
    assert!(engine.check().is_clean(), "{}", engine.check());
    drop(engine);
    expected
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn store_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

/// Every file's bytes and modification time.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    store_files(root)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read");
            let modified = std::fs::metadata(&path)
                .and_then(|metadata| metadata.modified())
                .expect("mtime");
            (path, (bytes, modified))
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { offset: u64, bit: u8 },
    Truncate { length: u64 },
    Delete,
}

fn mutations_of(length: u64, random: &mut Seeded) -> Vec<Mutation> {
    let mut mutations = Vec::new();
    if length > 0 {
        let mut offsets = vec![0, length / 2, length - 1];
        for _ in 0..6 {
            offsets.push(random.below(length));
        }
        for offset in offsets {
            mutations.push(Mutation::FlipBit {
                offset,
                bit: random.below(8) as u8,
            });
        }
        let mut lengths = vec![0, length / 2, length - 1];
        if length > 32 {
            lengths.push(length - 32);
        }
        for _ in 0..2 {
            lengths.push(random.below(length));
        }
        for truncated in lengths {
            mutations.push(Mutation::Truncate { length: truncated });
        }
    }
    mutations.push(Mutation::Delete);
    mutations
}

fn apply(path: &Path, mutation: &Mutation) {
    match mutation {
        Mutation::FlipBit { offset, bit } => {
            let mut bytes = std::fs::read(path).expect("read");
            bytes[*offset as usize] ^= 1 << bit;
            std::fs::write(path, bytes).expect("write");
        }
        Mutation::Truncate { length } => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open");
            file.set_len(*length).expect("truncate");
        }
        Mutation::Delete => std::fs::remove_file(path).expect("delete"),
    }
}

/// What one open of a mutated store did.
#[derive(Default)]
struct Outcome {
    wrong_bytes: Vec<ShadowId>,
    vanished: Vec<ShadowId>,
    /// Errors that do not name the damaged file.
    unnamed_errors: Vec<String>,
    served: usize,
    refused: usize,
}

fn judge(
    engine: &Engine,
    expected: &BTreeMap<ShadowId, Vec<u8>>,
    file_name: &str,
    outcome: &mut Outcome,
) {
    // A shadow the catalog lost is acceptable only when the loss is reported: `check` then
    // names the damaged file (a volume not served because its diff area outlives the catalog).
    let loss_reported = engine
        .check()
        .problems
        .iter()
        .any(|problem| problem.contains(file_name));
    for (&shadow, want) in expected {
        if engine.shadow(shadow).is_none() {
            if !loss_reported {
                outcome.vanished.push(shadow);
            }
            continue;
        }
        match read_shadow(engine, shadow) {
            Ok(bytes) if &bytes == want => outcome.served += 1,
            Ok(_) => outcome.wrong_bytes.push(shadow),
            Err(message) => {
                outcome.refused += 1;
                if !message.contains(file_name) {
                    outcome.unnamed_errors.push(message);
                }
            }
        }
    }
}

#[test]
fn store_corruption_every_flip_truncation_and_deletion_is_refused_or_harmless() {
    let root = scratch("store_corruption_mutation_loop");
    let pristine = root.join("pristine");
    let images = root.join("images");
    let expected = build_store(&pristine, &images);
    assert_eq!(expected.len(), 4);
    let files = store_files(&pristine);
    for name in [
        "base.json",
        "journal.log",
        "index.log",
        "chunks.dat",
        "store.lock",
    ] {
        assert!(
            files
                .iter()
                .any(|path| path.file_name().is_some_and(|file| file == name)),
            "the store has no {name}: {files:?}"
        );
    }

    let started = Instant::now();
    let mut random = Seeded(0x5EED_0004);
    let mut failures = Vec::new();
    let mut mutations_run = 0;
    let mut refusals = 0;
    let work = root.join("work");
    for file in &files {
        let relative = file
            .strip_prefix(&pristine)
            .expect("relative")
            .to_path_buf();
        let length = std::fs::metadata(file).expect("meta").len();
        let file_name = relative
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        for mutation in mutations_of(length, &mut random) {
            assert!(
                started.elapsed() < TIME_BUDGET,
                "the mutation loop overran its time budget after {mutations_run} mutations"
            );
            mutations_run += 1;
            let label = format!("{} {mutation:?}", relative.display());
            let _ = std::fs::remove_dir_all(&work);
            copy_tree(&pristine, &work);
            apply(&work.join(&relative), &mutation);

            // check-store's read-only open: no panic, no change on disk, never a wrong byte.
            let before = snapshot(&work);
            let read_only = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let mut outcome = Outcome::default();
                let result = match Engine::open_read_only(&work, options()) {
                    Ok(engine) => {
                        let report = engine.check();
                        judge(&engine, &expected, &file_name, &mut outcome);
                        Ok(report)
                    }
                    Err(error) => Err(error.to_string()),
                };
                (result, outcome)
            }));
            let Ok((checked, read_only_outcome)) = read_only else {
                failures.push(format!("{label}: the read-only open or check panicked"));
                continue;
            };
            if snapshot(&work) != before {
                failures.push(format!(
                    "{label}: the read-only open or check changed the store"
                ));
            }
            match &checked {
                Err(message) if !message.contains(&file_name) => failures.push(format!(
                    "{label}: the read-only open failed without naming {file_name}: {message}"
                )),
                Ok(report)
                    if read_only_outcome.refused > 0
                        && report.is_clean()
                        && report.suspect_shadows.is_empty() =>
                {
                    failures.push(format!(
                        "{label}: shadows are refused, but check reports nothing:\n{report}"
                    ))
                }
                _ => {}
            }

            // The service's writable open.
            let writable = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let mut outcome = Outcome::default();
                match Engine::open(&work, options()) {
                    Ok(engine) => {
                        judge(&engine, &expected, &file_name, &mut outcome);
                        drop(engine);
                        // A second open sees what the first left: still never a wrong byte.
                        if let Ok(engine) = Engine::open(&work, options()) {
                            judge(&engine, &expected, &file_name, &mut outcome);
                        }
                    }
                    Err(error) => {
                        outcome.refused += 1;
                        let message = error.to_string();
                        if !message.contains(&file_name) {
                            outcome.unnamed_errors.push(message);
                        }
                    }
                }
                outcome
            }));
            let Ok(outcome) = writable else {
                failures.push(format!("{label}: the open panicked"));
                continue;
            };
            for (kind, outcome) in [("read-only", &read_only_outcome), ("writable", &outcome)] {
                if !outcome.wrong_bytes.is_empty() {
                    failures.push(format!(
                        "{label}: {kind} open served wrong bytes for {:?}",
                        outcome.wrong_bytes
                    ));
                }
                if !outcome.vanished.is_empty() {
                    failures.push(format!(
                        "{label}: {kind} open silently lost {:?}",
                        outcome.vanished
                    ));
                }
                for message in &outcome.unnamed_errors {
                    failures.push(format!(
                        "{label}: {kind} open refused without naming {file_name}: {message}"
                    ));
                }
            }
            if outcome.refused > 0 {
                refusals += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {mutations_run} mutations went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(mutations_run >= 60, "only {mutations_run} mutations ran");
    assert!(
        refusals >= mutations_run / 3,
        "only {refusals} of {mutations_run} mutations were noticed: the loop tests too little"
    );
}

/// The diff directory of the volume whose image is `volume0.img`.
fn first_diff_dir(store: &Path, images: &Path) -> PathBuf {
    let engine = Engine::open_read_only(store, options()).expect("open read-only");
    let volume = engine
        .volumes()
        .into_iter()
        .find(|volume| volume.path == images.join("volume0.img"))
        .expect("volume0 registered");
    store
        .join("diff")
        .join(volume.id.0.hyphenated().to_string())
}

/// The case: one flipped bit in index record 10 used to cut `index.log` to 320 bytes
/// and `chunks.dat` to what those records referenced, and the shadows then served wrong bytes.
#[test]
fn store_corruption_a_flipped_bit_in_index_record_10_is_refused_and_nothing_is_cut() {
    let root = scratch("store_corruption_index_record_10");
    let store = root.join("store");
    let images = root.join("images");
    let expected = build_store(&store, &images);
    let diff_dir = first_diff_dir(&store, &images);
    let index = diff_dir.join("index.log");
    let chunks = diff_dir.join("chunks.dat");
    let index_length = std::fs::metadata(&index).expect("index").len();
    let chunks_length = std::fs::metadata(&chunks).expect("chunks").len();
    assert!(index_length > 11 * 32, "record 10 has records after it");
    apply(
        &index,
        &Mutation::FlipBit {
            offset: 10 * 32 + 9,
            bit: 2,
        },
    );

    let engine = Engine::open(&store, options()).expect("the store still opens");
    let mut refused = 0;
    for (&shadow, want) in &expected {
        match read_shadow(&engine, shadow) {
            Ok(bytes) => assert!(&bytes == want, "shadow {shadow} served wrong bytes"),
            Err(message) => {
                assert!(
                    message.contains(&index.display().to_string()) && message.contains("record 10"),
                    "the refusal names the file and the record: {message}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 2, "both shadows of the damaged volume are refused");
    let report = engine.check();
    assert!(!report.is_clean());
    assert_eq!(report.suspect_shadows.len(), 2, "{report}");
    drop(engine);
    assert_eq!(
        std::fs::metadata(&index).expect("index").len(),
        index_length
    );
    assert_eq!(
        std::fs::metadata(&chunks).expect("chunks").len(),
        chunks_length
    );
}

/// `check-store` on a damaged store (no service running): it says what is wrong, naming the
/// file, lists the suspect shadows, fails, and changes no byte or modification time.
#[test]
fn store_corruption_check_store_reports_damage_and_changes_nothing() {
    let root = scratch("store_corruption_check_store");
    let store = root.join("store");
    let images = root.join("images");
    build_store(&store, &images);
    let diff_dir = first_diff_dir(&store, &images);
    let chunks = diff_dir.join("chunks.dat");
    // A flip inside a used slot of chunks.dat.
    apply(&chunks, &Mutation::FlipBit { offset: 5, bit: 0 });
    let before = snapshot(&store);
    let output = assert_cmd::Command::cargo_bin("diskshadow")
        .expect("binary")
        .arg("--store")
        .arg(&store)
        .arg("check-store")
        .env_remove("DISKSHADOW_STORE")
        .env_remove("DISKSHADOW_IN_PROCESS")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("Problem: volume")
            && stdout.contains(&chunks.display().to_string())
            && stdout.contains("slot 0"),
        "{stdout}"
    );
    assert!(stdout.contains("The store has problems."), "{stdout}");
    assert_eq!(snapshot(&store), before, "check-store changed the store");
    assert!(
        !store.join("service.sock").exists() && !store.join("service.log").exists(),
        "check-store started no service"
    );

    // A journal record damaged in the middle: the catalog is refused, naming the journal.
    let journal = store.join("catalog").join("journal.log");
    apply(&journal, &Mutation::FlipBit { offset: 30, bit: 4 });
    let before = snapshot(&store);
    let output = assert_cmd::Command::cargo_bin("diskshadow")
        .expect("binary")
        .arg("--store")
        .arg(&store)
        .arg("check-store")
        .env_remove("DISKSHADOW_STORE")
        .env("DISKSHADOW_IN_PROCESS", "1")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success());
    assert!(
        stderr.contains(&journal.display().to_string()) && stderr.contains("valid record follows"),
        "{stderr}"
    );
    assert_eq!(snapshot(&store), before, "check-store changed the store");
}
