//! LUN resync through the engine: a shadow copied back onto its damaged original or onto a
//! new destination, with readers and writers using the destination meanwhile, crashes at
//! every sync point, and the refusals that keep the destination and the shadow whole.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use diskshadow::engine::clock::{SeededIds, SteppingClock};
use diskshadow::engine::core::{CreateError, DeleteError, EngineOptions, RevertError};
use diskshadow::engine::device::BlockDevice;
use diskshadow::engine::ids::{ProviderId, ShadowId, VolumeId};
use diskshadow::engine::model::{CreateSpec, CreateVolume, DeleteSelector, RequesterId};
use diskshadow::engine::progress::{NoProgress, Progress};
use diskshadow::engine::provider::FULL_COPY_PROVIDER_ID;
use diskshadow::engine::resync::ResyncError;
use diskshadow::engine::store::{CrashMode, DurableBackend, FaultBackend, RealBackend};
use diskshadow::engine::vss::{Attributes, Context, VssCode};
use diskshadow::engine::Engine;

const CHUNK: u32 = 4096;
const CHUNKS: usize = 32;
const VOLUME_BYTES: usize = CHUNKS * CHUNK as usize;

/// Every open gets its own ID seed: seeded IDs restart with each engine, and a volume
/// registered after a reopen must not get the ID of one registered before.
fn options(backend: Arc<dyn DurableBackend>) -> EngineOptions {
    static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(3);
    let seed = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut options = EngineOptions::new(
        Arc::new(SteppingClock::default()),
        Arc::new(SeededIds::new(seed)),
        "HOST",
        CHUNK,
        backend,
    );
    options.write_back_bytes = 3 * CHUNK as usize;
    options
}

fn pattern(seed: u8, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| seed.wrapping_mul(37).wrapping_add((index / 61) as u8) | 1)
        .collect()
}

fn image(dir: &Path, name: &str, size: usize) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|file| file.set_len(size as u64))
        .expect("image");
    path
}

fn persistent(volume: VolumeId, provider: Option<ProviderId>) -> CreateSpec {
    CreateSpec {
        volumes: vec![CreateVolume { volume, provider }],
        context: Context::Persistent,
        extra_attributes: if provider.is_some() {
            Attributes(Attributes::PLEX)
        } else {
            Attributes::default()
        },
        requester: RequesterId(1),
        set_id: None,
    }
}

/// Compares two contents by chunk, naming the first chunk that differs (never dumping bytes).
#[track_caller]
fn assert_same(got: &[u8], expected: &[u8], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths differ");
    let chunk = CHUNK as usize;
    if let Some(index) = (0..got.len().div_ceil(chunk))
        .find(|index| got[index * chunk..][..chunk] != expected[index * chunk..][..chunk])
    {
        panic!(
            "{what}: chunk {index} differs (got {:?}…, expected {:?}…)",
            &got[index * chunk..][..8],
            &expected[index * chunk..][..8]
        );
    }
}

fn read_all(device: &dyn BlockDevice) -> Vec<u8> {
    let mut buffer = vec![0u8; device.size() as usize];
    device.read_at(0, &mut buffer).expect("read");
    buffer
}

/// A store with one volume holding data in chunks 0..20 (chunks 20.. are holes), a
/// persistent shadow of it, then damage: chunks rewritten, one zeroed, one written in a hole.
struct Damaged {
    dir: tempfile::TempDir,
    store: PathBuf,
    volume: VolumeId,
    shadow: ShadowId,
    /// What the shadow holds.
    content: Vec<u8>,
}

fn damaged(provider: Option<ProviderId>) -> Damaged {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let path = image(dir.path(), "lun.img", VOLUME_BYTES);
    let engine = Engine::open(&store, options(Arc::new(RealBackend))).expect("open");
    let volume = engine.register_volume(&path, None).expect("register").id;
    let device = engine.open_volume(volume).expect("device");
    device
        .write_at(0, &pattern(1, 20 * CHUNK as usize))
        .expect("data");
    device.flush().expect("flush");
    let content = read_all(&*device);
    let shadow = engine
        .create_shadow_set(&persistent(volume, provider))
        .expect("create")
        .shadows[0]
        .id;
    damage(&*device);
    drop(device);
    drop(engine);
    Damaged {
        dir,
        store,
        volume,
        shadow,
        content,
    }
}

fn damage(device: &dyn BlockDevice) {
    let chunk = CHUNK as u64;
    device
        .write_at(3 * chunk + 100, &pattern(9, 5 * CHUNK as usize))
        .expect("damage");
    device
        .write_zeroes(12 * chunk, chunk, true)
        .expect("zero a chunk");
    device
        .write_at(25 * chunk, &pattern(8, CHUNK as usize))
        .expect("write into a hole");
    device.flush().expect("flush damage");
}

#[test]
fn resync_onto_a_damaged_original_is_byte_exact_and_keeps_every_shadow() {
    for provider in [None, Some(ProviderId(FULL_COPY_PROVIDER_ID))] {
        let setup = damaged(provider);
        let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
        // A shadow of the damaged state: the resync writes through the write path, so it
        // keeps reading the damage.
        let damaged_shadow = engine
            .create_shadow_set(&persistent(setup.volume, None))
            .expect("create after damage")
            .shadows[0]
            .id;
        let damaged_content = read_all(&*engine.open_volume(setup.volume).expect("volume"));
        assert_ne!(damaged_content, setup.content);

        let outcome = engine
            .resync(setup.shadow, None, &NoProgress)
            .expect("resync");
        assert_eq!(outcome.destination, setup.volume);
        assert_eq!(outcome.bytes, VOLUME_BYTES as u64);
        assert_eq!(outcome.chunks_written_during, 0);
        if provider.is_none() {
            // Only what changed since the shadow is copied: chunks 3..=8 and 12 hold data
            // again, chunk 25 becomes a hole again.
            assert_eq!(outcome.bytes_copied, 7 * u64::from(CHUNK));
            assert_eq!(outcome.bytes_punched, u64::from(CHUNK));
        }
        let volume = engine.open_volume(setup.volume).expect("volume");
        assert_same(
            &read_all(&*volume),
            &setup.content,
            &format!("provider {provider:?}"),
        );
        let shadow = engine.open_shadow(setup.shadow).expect("shadow");
        assert_same(
            &read_all(&*shadow),
            &setup.content,
            "the shadow is unchanged",
        );
        let later = engine.open_shadow(damaged_shadow).expect("damaged shadow");
        assert_same(
            &read_all(&*later),
            &damaged_content,
            "the volume's own shadow",
        );
        assert!(engine.resyncs_in_progress().is_empty());
        let report = engine.check();
        assert!(report.problems.is_empty(), "{report}");
        drop(setup.dir);
    }
}

#[test]
fn the_same_resync_runs_again() {
    let setup = damaged(None);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
    engine
        .resync(setup.shadow, None, &NoProgress)
        .expect("first resync");
    let volume = engine.open_volume(setup.volume).expect("volume");
    damage(&*volume);
    assert_ne!(read_all(&*volume), setup.content);
    engine
        .resync(setup.shadow, None, &NoProgress)
        .expect("second resync");
    assert_same(
        &read_all(&*volume),
        &setup.content,
        "after the second resync",
    );
    assert_same(
        &read_all(&*engine.open_shadow(setup.shadow).expect("shadow")),
        &setup.content,
        "the shadow",
    );
}

#[test]
fn resync_onto_a_new_destination_copies_data_and_keeps_holes() {
    let setup = damaged(None);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
    // Larger than the shadow: the bytes past it are left as they are.
    let path = image(
        setup.dir.path(),
        "new.img",
        VOLUME_BYTES + 2 * CHUNK as usize,
    );
    let destination = engine.register_volume(&path, None).expect("register").id;
    let device = engine.open_volume(destination).expect("destination");
    device
        .write_at(VOLUME_BYTES as u64, &pattern(5, CHUNK as usize))
        .expect("tail");
    device.flush().expect("flush");

    let outcome = engine
        .resync(setup.shadow, Some(destination), &NoProgress)
        .expect("resync");
    assert_eq!(outcome.destination, destination);
    assert_eq!(outcome.bytes_copied, 20 * u64::from(CHUNK), "{outcome:?}");
    assert_eq!(outcome.bytes_punched, 0, "its holes were holes already");
    let all = read_all(&*device);
    assert_same(&all[..VOLUME_BYTES], &setup.content, "the new destination");
    assert!(
        all[VOLUME_BYTES..VOLUME_BYTES + CHUNK as usize] == pattern(5, CHUNK as usize)[..],
        "the bytes past the shadow's size are kept"
    );
    // The original is untouched, and the shadow's holes stayed holes on the destination.
    let original = engine.open_volume(setup.volume).expect("original");
    assert_ne!(read_all(&*original), setup.content);
    let allocated = std::fs::metadata(&path).expect("metadata");
    let allocated_bytes = std::os::unix::fs::MetadataExt::blocks(&allocated) * 512;
    assert!(
        allocated_bytes <= 22 * u64::from(CHUNK),
        "{allocated_bytes} bytes allocated for 21 chunks of data"
    );
}

#[test]
fn a_destination_smaller_than_the_shadow_is_refused() {
    let setup = damaged(None);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
    let path = image(setup.dir.path(), "small.img", VOLUME_BYTES / 2);
    let destination = engine.register_volume(&path, None).expect("register").id;
    let error = engine
        .resync(setup.shadow, Some(destination), &NoProgress)
        .expect_err("too small");
    assert!(matches!(error, ResyncError::TooSmall { .. }), "{error}");
    assert_eq!(error.vss_code(), VssCode::VSS_E_VOLUME_NOT_SUPPORTED);
    let missing = engine
        .resync(ShadowId(uuid::Uuid::from_u128(7)), None, &NoProgress)
        .expect_err("no such shadow");
    assert_eq!(missing.vss_code(), VssCode::VSS_E_OBJECT_NOT_FOUND);
}

/// What a test does at each progress report of a resync: the copy loop holds no lock then,
/// so reads and writes of the destination run exactly between two chunk copies.
struct During<F: Fn(u64) + Send + Sync> {
    done: Mutex<u64>,
    step: F,
}

impl<F: Fn(u64) + Send + Sync> Progress for During<F> {
    fn begin(&self, _what: &str, _total: u64) {}
    fn advance(&self, units: u64) {
        let done = {
            let mut done = self.done.lock().expect("progress");
            *done += units;
            *done
        };
        (self.step)(done);
    }
    fn finish(&self) {}
}

/// Runs a resync of the damaged shadow onto `destination` (the original when `None`) while
/// a reader checks every chunk after each copied chunk and writes land ahead of the copy
/// (whole chunks, parts of chunks, a zeroed range). Returns the expected content.
fn resync_with_traffic(engine: &Engine, setup: &Damaged, destination: Option<VolumeId>) {
    let target = destination.unwrap_or(setup.volume);
    let device = engine.open_volume(target).expect("destination");
    let chunk = CHUNK as usize;
    // Per chunk: the bytes written during the resync, once a write landed.
    let written: Mutex<Vec<Option<Vec<u8>>>> = Mutex::new(vec![None; CHUNKS]);
    // (offset, after how many chunks of progress, data; empty: two chunks of zeroes punched).
    // Early enough that the damaged chunks 3..=8 of the original are still pending.
    let writes: Vec<(u64, usize, Vec<u8>)> = vec![
        (2 * 4096, 1, pattern(21, chunk)),       // a whole chunk
        (4 * 4096, 1, pattern(22, 100)),         // part of a pending chunk
        (5 * 4096 + 7, 2, Vec::new()),           // zeroes across two chunks
        (17 * 4096 + 4000, 3, pattern(23, 300)), // across two chunks
        (26 * 4096, 4, pattern(24, 2 * chunk)),  // into holes
    ];
    let model_write = |offset: u64, data: &[u8], current: &[u8]| {
        let mut written = written.lock().expect("written");
        let start = offset as usize;
        let end = start + data.len();
        for index in start / chunk..end.div_ceil(chunk) {
            let mut bytes = written[index]
                .clone()
                .unwrap_or_else(|| current[index * chunk..(index + 1) * chunk].to_vec());
            let from = start.max(index * chunk);
            let to = end.min((index + 1) * chunk);
            bytes[from - index * chunk..to - index * chunk]
                .copy_from_slice(&data[from - start..to - start]);
            written[index] = Some(bytes);
        }
    };
    let progress = During {
        done: Mutex::new(0),
        step: |done: u64| {
            let copied_chunks = (done / u64::from(CHUNK)) as usize;
            for (offset, after, data) in &writes {
                if *after == copied_chunks {
                    // Logical content before the write: what a reader sees now.
                    let current = read_all(&*device);
                    if data.is_empty() {
                        device
                            .write_zeroes(*offset, 2 * u64::from(CHUNK), true)
                            .expect("zeroes during resync");
                        model_write(*offset, &vec![0u8; 2 * chunk], &current);
                    } else {
                        device.write_at(*offset, data).expect("write during resync");
                        model_write(*offset, data, &current);
                    }
                }
            }
            // Every chunk reads either the shadow's bytes or what was written during it,
            // never the damage.
            let now = read_all(&*device);
            let written = written.lock().expect("written");
            for index in 0..CHUNKS {
                let got = &now[index * chunk..(index + 1) * chunk];
                let expected = written[index]
                    .as_deref()
                    .unwrap_or(&setup.content[index * chunk..(index + 1) * chunk]);
                assert!(
                    got == expected,
                    "chunk {index} after {copied_chunks} chunks: got {:?}…, expected {:?}…",
                    &got[..8],
                    &expected[..8]
                );
            }
        },
    };
    let outcome = engine
        .resync(setup.shadow, destination, &progress)
        .expect("resync");
    let written = written.into_inner().expect("written");
    let kept = written.iter().filter(|bytes| bytes.is_some()).count() as u64;
    assert!(outcome.chunks_written_during >= 1);
    assert!(outcome.chunks_written_during <= kept);
    let after = read_all(&*device);
    for index in 0..CHUNKS {
        let expected = written[index]
            .as_deref()
            .unwrap_or(&setup.content[index * chunk..(index + 1) * chunk]);
        assert!(
            &after[index * chunk..(index + 1) * chunk] == expected,
            "chunk {index} after the resync: a write during it is never overwritten"
        );
    }
    assert_same(
        &read_all(&*engine.open_shadow(setup.shadow).expect("shadow")),
        &setup.content,
        "the shadow",
    );
}

#[test]
fn readers_during_a_resync_onto_the_original_see_only_shadow_or_new_bytes() {
    let setup = damaged(None);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
    // Chunks the damage left alone are marked done at the start: the reader must still
    // see the shadow's bytes in the damaged ones.
    resync_with_traffic(&engine, &setup, None);
}

#[test]
fn readers_during_a_resync_onto_a_new_destination_see_only_shadow_or_new_bytes() {
    let setup = damaged(None);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
    let path = image(setup.dir.path(), "new.img", VOLUME_BYTES);
    let destination = engine.register_volume(&path, None).expect("register").id;
    // Old bytes on the destination that must never show.
    let device = engine.open_volume(destination).expect("destination");
    device
        .write_at(0, &pattern(77, VOLUME_BYTES))
        .expect("old data");
    device.flush().expect("flush");
    resync_with_traffic(&engine, &setup, Some(destination));
}

#[test]
fn a_resync_in_progress_refuses_revert_create_delete_and_a_second_resync() {
    let setup = damaged(None);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
    let checked = Mutex::new(false);
    let progress = During {
        done: Mutex::new(0),
        step: |_done: u64| {
            let mut checked = checked.lock().expect("checked");
            if *checked {
                return;
            }
            *checked = true;
            assert_eq!(
                engine.resyncs_in_progress(),
                vec![(setup.shadow, setup.volume)]
            );
            let second = engine
                .resync(setup.shadow, None, &NoProgress)
                .expect_err("second resync");
            assert_eq!(second.vss_code(), VssCode::VSS_E_RESYNC_IN_PROGRESS);
            let revert = engine
                .revert(setup.shadow, &NoProgress)
                .expect_err("revert during resync");
            assert!(matches!(revert, RevertError::ResyncInProgress { .. }));
            let create = engine
                .create_shadow_set(&persistent(setup.volume, None))
                .expect_err("create during resync");
            assert!(matches!(create, CreateError::ResyncInProgress { .. }));
            let delete = engine
                .delete_shadows(&DeleteSelector::Id(setup.shadow))
                .expect_err("delete of the source during resync");
            assert!(matches!(delete, DeleteError::ResyncSource { .. }));
            assert_eq!(delete.vss_code(), VssCode::VSS_E_RESYNC_IN_PROGRESS);
        },
    };
    engine
        .resync(setup.shadow, None, &progress)
        .expect("resync");
    assert!(*checked.lock().expect("checked"));
    assert_same(
        &read_all(&*engine.open_volume(setup.volume).expect("volume")),
        &setup.content,
        "after the resync",
    );
    engine
        .delete_shadows(&DeleteSelector::Id(setup.shadow))
        .expect("delete after the resync");
}

/// A crash at every sync point of a resync (onto the original and onto a new destination,
/// with the live volume's unsynced writes lost or kept): reopening the store finishes the
/// resync, and the destination then holds exactly the shadow.
#[test]
fn a_crash_at_any_sync_point_of_a_resync_resumes_to_byte_exact() {
    for onto_new in [false, true] {
        for keep_outside in [false, true] {
            let mut point = 0u64;
            loop {
                let setup = damaged(None);
                let destination = onto_new.then(|| {
                    let path = image(setup.dir.path(), "new.img", VOLUME_BYTES);
                    let engine =
                        Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
                    let id = engine.register_volume(&path, None).expect("register").id;
                    let device = engine.open_volume(id).expect("destination");
                    device
                        .write_at(0, &pattern(66, VOLUME_BYTES))
                        .expect("old data");
                    device.flush().expect("flush");
                    id
                });
                let mode = if keep_outside {
                    CrashMode::KeepUnsyncedOutside(setup.store.clone())
                } else {
                    CrashMode::DropUnsynced
                };
                let counting = FaultBackend::new(None, mode.clone());
                let engine =
                    Engine::open(&setup.store, options(Arc::new(counting.clone()))).expect("open");
                let opened_at = counting.sync_points();
                drop(engine);
                let backend = FaultBackend::new(Some(opened_at + point), mode);
                let engine =
                    Engine::open(&setup.store, options(Arc::new(backend.clone()))).expect("open");
                let target = destination.unwrap_or(setup.volume);
                let image_path =
                    setup
                        .dir
                        .path()
                        .join(if onto_new { "new.img" } else { "lun.img" });
                let before = std::fs::read(&image_path).expect("destination before");
                let outcome = engine.resync(setup.shadow, destination, &NoProgress);
                drop(engine);
                let crashed = backend.has_crashed();
                // A crash after the resync returned (in the engine's last flush) leaves it done.
                let outcome_ok = outcome.is_ok();
                if !crashed {
                    outcome.expect("resync without a crash");
                }
                // The resync began once its state file is in place; before, nothing of the
                // destination was written.
                let began = setup
                    .store
                    .join("resync")
                    .join(format!("{}.resync", target.0.hyphenated()))
                    .exists();
                if began {
                    // check-store (read-only) reports it and changes nothing.
                    let read_only =
                        Engine::open_read_only(&setup.store, options(Arc::new(RealBackend)))
                            .expect("read-only open");
                    let report = read_only.check();
                    assert!(
                        report
                            .problems
                            .iter()
                            .any(|problem| problem.contains("a resync is unfinished")),
                        "{report}"
                    );
                }
                let engine = Engine::open(&setup.store, options(Arc::new(RealBackend)))
                    .expect("reopen after the crash");
                assert!(engine.resyncs_in_progress().is_empty());
                let live = read_all(&*engine.open_volume(target).expect("destination"));
                if began || !crashed || outcome_ok {
                    assert_same(
                        &live,
                        &setup.content,
                        &format!("crash at sync point {point}"),
                    );
                } else {
                    assert_same(
                        &live,
                        &before,
                        &format!("crash at sync point {point}, before the resync"),
                    );
                    engine
                        .resync(setup.shadow, destination, &NoProgress)
                        .expect("resync after a crash before it began");
                    let live = read_all(&*engine.open_volume(target).expect("destination"));
                    assert_same(&live, &setup.content, "resync after the crash");
                }
                assert_same(
                    &read_all(&*engine.open_shadow(setup.shadow).expect("shadow")),
                    &setup.content,
                    "the shadow",
                );
                let report = engine.check();
                assert!(report.problems.is_empty(), "point {point}: {report}");
                if !crashed {
                    assert!(point > 3, "the resync has several sync points ({point})");
                    break;
                }
                point += 1;
            }
        }
    }
}

/// Progress that asks the work to stop once `after` bytes are done (Ctrl-C in the shell).
struct StopAfter {
    done: Mutex<u64>,
    after: u64,
}

impl StopAfter {
    fn new(after: u64) -> Self {
        Self {
            done: Mutex::new(0),
            after,
        }
    }
}

impl Progress for StopAfter {
    fn begin(&self, _what: &str, _total: u64) {}
    fn advance(&self, units: u64) {
        *self.done.lock().expect("progress") += units;
    }
    fn finish(&self) {}
    fn cancelled(&self) -> bool {
        *self.done.lock().expect("progress") >= self.after
    }
}

/// A resync onto a new destination stopped after 5 of its 32 chunks, and a write to a chunk
/// it had not reached yet: the stop says where it stopped; the destination already reads as
/// the shadow (with the write); the resync stays in the way of what would conflict with it;
/// and running it again copies only what was left, keeping the write.
fn stopped_resync(engine: &Engine, setup: &Damaged) -> (VolumeId, Vec<u8>) {
    let path = image(setup.dir.path(), "new.img", VOLUME_BYTES);
    let destination = engine.register_volume(&path, None).expect("register").id;
    let error = engine
        .resync(
            setup.shadow,
            Some(destination),
            &StopAfter::new(5 * u64::from(CHUNK)),
        )
        .expect_err("stopped");
    assert_eq!(error.vss_code(), VssCode::VSS_S_ASYNC_CANCELLED);
    let ResyncError::Stopped { done, bytes, .. } = error else {
        panic!("not a stop: {error}");
    };
    assert_eq!(bytes, VOLUME_BYTES as u64);
    assert_eq!(done, 5 * u64::from(CHUNK), "stopped between chunks 4 and 5");
    let message = error_text(setup.shadow, destination, done);
    assert!(
        message.contains("the service finishes it when it next starts"),
        "{message}"
    );
    assert_eq!(
        engine.resyncs_in_progress(),
        vec![(setup.shadow, destination)]
    );
    let device = engine.open_volume(destination).expect("destination");
    assert_same(
        &read_all(&*device),
        &setup.content,
        "a stopped resync reads as the shadow",
    );
    let mut expected = setup.content.clone();
    let written = pattern(7, 100);
    let at = 10 * CHUNK as usize + 50;
    device
        .write_at(at as u64, &written)
        .expect("write while stopped");
    device.flush().expect("flush");
    expected[at..at + written.len()].copy_from_slice(&written);
    let delete = engine
        .delete_shadows(&DeleteSelector::Id(setup.shadow))
        .expect_err("the source of a stopped resync stays");
    assert!(
        matches!(delete, DeleteError::ResyncSource { .. }),
        "{delete}"
    );
    (destination, expected)
}

fn error_text(shadow: ShadowId, volume: VolumeId, done: u64) -> String {
    ResyncError::Stopped {
        volume,
        shadow,
        done,
        bytes: VOLUME_BYTES as u64,
    }
    .to_string()
}

#[test]
fn a_stopped_resync_reads_as_the_shadow_and_running_it_again_finishes_it() {
    let setup = damaged(None);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
    let (destination, expected) = stopped_resync(&engine, &setup);
    let outcome = engine
        .resync(setup.shadow, Some(destination), &NoProgress)
        .expect("taken up where it stopped");
    // Chunks 0..5 were copied before the stop and chunk 10 was written meanwhile: of the
    // 20 data chunks, 14 are left to copy.
    assert_eq!(outcome.bytes_copied, 14 * u64::from(CHUNK), "{outcome:?}");
    assert_eq!(outcome.chunks_written_during, 1);
    assert!(engine.resyncs_in_progress().is_empty());
    let device = engine.open_volume(destination).expect("destination");
    assert_same(&read_all(&*device), &expected, "after the second run");
    drop(device);
    let report = engine.check();
    assert!(report.problems.is_empty(), "{report}");
    engine
        .delete_shadows(&DeleteSelector::Id(setup.shadow))
        .expect("delete once the resync ended");
}

#[test]
fn a_stopped_resync_finishes_when_the_store_is_opened_again() {
    let setup = damaged(None);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
    let (destination, expected) = stopped_resync(&engine, &setup);
    drop(engine);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("reopen");
    assert!(engine.resyncs_in_progress().is_empty(), "finished at open");
    let device = engine.open_volume(destination).expect("destination");
    assert_same(&read_all(&*device), &expected, "after the reopen");
    drop(device);
    let report = engine.check();
    assert!(report.problems.is_empty(), "{report}");
}

/// A stopped resync is taken up only by a resync of the same shadow; another shadow's resync
/// onto the same volume is refused while it is there.
#[test]
fn a_stopped_resync_refuses_another_shadows_resync_onto_its_destination() {
    let setup = damaged(None);
    let engine = Engine::open(&setup.store, options(Arc::new(RealBackend))).expect("open");
    let (destination, _) = stopped_resync(&engine, &setup);
    let other = engine
        .create_shadow_set(&persistent(setup.volume, None))
        .expect("another shadow")
        .shadows[0]
        .id;
    let refused = engine
        .resync(other, Some(destination), &NoProgress)
        .expect_err("the stopped resync is in the way");
    assert_eq!(refused.vss_code(), VssCode::VSS_E_RESYNC_IN_PROGRESS);
    engine
        .resync(setup.shadow, Some(destination), &NoProgress)
        .expect("finish");
}
