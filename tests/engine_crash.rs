//! Crash tests: a scenario (create, write, delete, revert, restart) runs on a disk that loses
//! power at sync point k, for every k. After each crash the store is reopened on the real disk
//! and every persistent shadow must read exactly its point-in-time content, the catalog must
//! hold the state before or after each operation, and `check` must be clean.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use diskshadow::engine::clock::{SeededIds, SteppingClock};
use diskshadow::engine::core::EngineOptions;
use diskshadow::engine::ids::{ProviderId, ShadowId, VolumeId};
use diskshadow::engine::model::{CreateSpec, CreateVolume, DeleteSelector, RequesterId};
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::provider::{FULL_COPY_PROVIDER_ID, ROW_PROVIDER_ID};
use diskshadow::engine::store::{CrashMode, DurableBackend, FaultBackend, RealBackend};
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;

const CHUNK: u32 = 4096;
const VOLUME_BYTES: usize = 16 * CHUNK as usize;

fn options(backend: Arc<dyn DurableBackend>, seed: u64) -> EngineOptions {
    let mut options = EngineOptions::new(
        Arc::new(SteppingClock::default()),
        Arc::new(SeededIds::new(seed)),
        "HOST",
        CHUNK,
        backend,
    );
    // A small write-back buffer, so group commits happen in the middle of the scenario.
    options.write_back_bytes = 3 * CHUNK as usize;
    options
}

fn pattern(seed: u8, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| seed.wrapping_mul(31).wrapping_add((index / 97) as u8))
        .collect()
}

/// What the scenario did before the crash, as the test saw it.
#[derive(Default)]
struct Observed {
    /// Persistent shadows whose create returned Ok, with their content.
    created: BTreeMap<ShadowId, Vec<u8>>,
    /// Content a shadow would have if a create that failed was committed anyway.
    maybe_created: Vec<Vec<u8>>,
    /// Shadows whose delete returned Ok.
    deleted: Vec<ShadowId>,
    /// Shadows whose delete was attempted (and may have happened).
    maybe_deleted: Vec<ShadowId>,
    /// The live content when it was last made durable (a flush: persistent creates, reverts,
    /// `flush`), and the chunks written since then, which may hold any content written to
    /// them since. Every other chunk must read back exactly after a crash.
    durable: Vec<u8>,
    touched: std::collections::BTreeSet<usize>,
}

impl Observed {
    fn touch(&mut self, offset: usize, length: usize) {
        let chunk = CHUNK as usize;
        self.touched
            .extend(offset / chunk..(offset + length).div_ceil(chunk));
    }

    fn made_durable(&mut self, model: &[u8]) {
        self.durable = model.to_vec();
        self.touched.clear();
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: PathBuf,
    image: PathBuf,
    volume: VolumeId,
}

/// A store with one registered volume holding some data (made on the real disk), registered
/// for `provider` (`None`: the system provider).
fn setup(provider: Option<ProviderId>) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let image = dir.path().join("volume.img");
    std::fs::File::create(&image)
        .and_then(|file| file.set_len(VOLUME_BYTES as u64))
        .expect("image");
    let engine = Engine::open(&store, options(Arc::new(RealBackend), 1)).expect("open");
    let volume = engine
        .register_volume_with_provider(&image, None, provider)
        .expect("register")
        .id;
    let device = engine.open_volume(volume).expect("device");
    device
        .write_at(0, &pattern(1, 6 * CHUNK as usize))
        .expect("initial data");
    device.flush().expect("flush");
    drop(device);
    drop(engine);
    Setup {
        _dir: dir,
        store,
        image,
        volume,
    }
}

fn spec(volume: VolumeId, context: Context) -> CreateSpec {
    CreateSpec {
        volumes: vec![CreateVolume {
            volume,
            provider: None,
        }],
        context,
        extra_attributes: Attributes::default(),
        requester: RequesterId(1),
        set_id: None,
    }
}

/// Runs the scenario until it ends or the backend loses power. `model` is the live content.
fn scenario(setup: &Setup, backend: &FaultBackend, observed: &mut Observed) -> Result<(), String> {
    let mut model = std::fs::read(&setup.image).map_err(|error| error.to_string())?;
    observed.made_durable(&model);
    let fail = |error: &dyn std::fmt::Display| error.to_string();
    let mut engine = Some(
        Engine::open(&setup.store, options(Arc::new(backend.clone()), 2)).map_err(|e| fail(&e))?,
    );
    let create = |engine: &Engine,
                  context: Context,
                  model: &[u8],
                  observed: &mut Observed|
     -> Result<ShadowId, String> {
        match engine.create_shadow_set(&spec(setup.volume, context)) {
            Ok(set) => {
                if context.is_persistent() {
                    observed.created.insert(set.shadows[0].id, model.to_vec());
                    // A persistent shadow's point in time is flushed first.
                    observed.made_durable(model);
                }
                Ok(set.shadows[0].id)
            }
            Err(error) => {
                if context.is_persistent() {
                    observed.maybe_created.push(model.to_vec());
                }
                Err(error.to_string())
            }
        }
    };
    let write = |engine: &Engine,
                 model: &mut Vec<u8>,
                 observed: &mut Observed,
                 offset: usize,
                 data: &[u8]|
     -> Result<(), String> {
        let device = engine
            .open_volume(setup.volume)
            .map_err(|e| e.to_string())?;
        observed.touch(offset, data.len());
        model[offset..offset + data.len()].copy_from_slice(data);
        device
            .write_at(offset as u64, data)
            .map_err(|e| e.to_string())
    };
    let delete =
        |engine: &Engine, shadow: ShadowId, observed: &mut Observed| -> Result<(), String> {
            observed.maybe_deleted.push(shadow);
            engine
                .delete_shadows(&DeleteSelector::Id(shadow))
                .map_err(|e| e.to_string())?;
            observed.deleted.push(shadow);
            Ok(())
        };

    let first = create(
        engine.as_ref().ok_or("no engine")?,
        Context::Persistent,
        &model,
        observed,
    )?;
    let current = engine.as_ref().ok_or("no engine")?;
    write(
        current,
        &mut model,
        observed,
        1000,
        &pattern(2, 3 * CHUNK as usize),
    )?;
    write(
        current,
        &mut model,
        observed,
        10 * CHUNK as usize,
        &pattern(3, 2 * CHUNK as usize),
    )?;
    let second = create(current, Context::PersistentNoWriters, &model, observed)?;
    // A full copy (plex provider; no reflink on this backend): the commit takes a point in
    // time, the volume is written, then the copy is made from the point in time, synced,
    // recorded complete and the point in time released.
    let mut plex = spec(setup.volume, Context::Persistent);
    plex.volumes[0].provider = Some(ProviderId(FULL_COPY_PROVIDER_ID));
    plex.extra_attributes = Attributes(Attributes::PLEX);
    observed.maybe_created.push(model.clone());
    let full_copy = current
        .create_shadow_set(&plex)
        .map_err(|e| e.to_string())?
        .shadows[0]
        .id;
    observed.created.insert(full_copy, model.clone());
    observed.made_durable(&model);
    write(
        current,
        &mut model,
        observed,
        4 * CHUNK as usize,
        &pattern(8, 3 * CHUNK as usize),
    )?;
    current
        .complete_full_copy(full_copy, &NoProgress)
        .map_err(|e| e.to_string())?;
    create(current, Context::Volatile, &model, observed)?;
    write(
        current,
        &mut model,
        observed,
        0,
        &pattern(4, 5 * CHUNK as usize),
    )?;
    write(
        current,
        &mut model,
        observed,
        12 * CHUNK as usize + 17,
        &pattern(5, 100),
    )?;
    // A restart: open-time recovery (volatile shadows dropped, diff areas reclaimed) runs on
    // the failing disk too.
    drop(engine.take());
    engine = Some(
        Engine::open(&setup.store, options(Arc::new(backend.clone()), 3)).map_err(|e| fail(&e))?,
    );
    let current = engine.as_ref().ok_or("no engine")?;
    let third = create(current, Context::ClientAccessible, &model, observed)?;
    write(
        current,
        &mut model,
        observed,
        2 * CHUNK as usize,
        &pattern(6, 6 * CHUNK as usize),
    )?;
    delete(current, first, observed)?;
    observed.touch(0, VOLUME_BYTES);
    current
        .revert(second, &NoProgress)
        .map_err(|e| e.to_string())?;
    if let Some(content) = observed.created.get(&second) {
        model = content.clone();
    }
    observed.made_durable(&model);
    write(
        current,
        &mut model,
        observed,
        7 * CHUNK as usize,
        &pattern(7, CHUNK as usize),
    )?;
    delete(current, third, observed)?;
    delete(current, full_copy, observed)?;
    current.flush().map_err(|e| e.to_string())?;
    observed.made_durable(&model);
    let device = current
        .open_volume(setup.volume)
        .map_err(|e| e.to_string())?;
    let mut live = vec![0u8; VOLUME_BYTES];
    device.read_at(0, &mut live).map_err(|e| e.to_string())?;
    assert_eq!(
        live, model,
        "the live volume matches the model when nothing crashed"
    );
    Ok(())
}

fn verify_after_crash(setup: &Setup, observed: &Observed, crash_point: u64, mode: &CrashMode) {
    let engine =
        Engine::open(&setup.store, options(Arc::new(RealBackend), 4)).unwrap_or_else(|error| {
            panic!("reopen after crash at sync point {crash_point} ({mode:?}): {error}")
        });
    let context = format!("crash at sync point {crash_point} ({mode:?})");
    verify_shadows(&engine, observed, &context);
    // A full copy the crash cut off is served from its point in time (above); made again
    // from it now, it holds the same content.
    let pending = engine.pending_full_copies();
    let completed = engine
        .complete_full_copies(None, &NoProgress)
        .unwrap_or_else(|error| panic!("{context}: restarting the full copies: {error}"));
    assert_eq!(
        completed, pending,
        "{context}: every pending copy completed"
    );
    assert!(engine.pending_full_copies().is_empty());
    verify_shadows(&engine, observed, &context);
    verify_live_and_check(&engine, setup, observed, &context);
}

/// Every shadow reads its point-in-time content; no deleted one came back, no created one
/// vanished.
fn verify_shadows(engine: &Engine, observed: &Observed, context: &str) {
    let shadows = engine.shadows();
    for shadow in &shadows {
        assert!(
            shadow.context.is_persistent(),
            "{context}: volatile shadow {} survived",
            shadow.id
        );
        let device = engine
            .open_shadow(shadow.id)
            .unwrap_or_else(|error| panic!("{context}: {error}"));
        let mut content = vec![0u8; VOLUME_BYTES];
        device.read_at(0, &mut content).expect("read shadow");
        match observed.created.get(&shadow.id) {
            Some(expected) => assert!(
                content == *expected,
                "{context}: shadow {} ({:?}, {}) lost its point-in-time content (first difference at \
                 byte {:?})",
                shadow.id,
                shadow.health,
                shadow.attributes.diskshadow_words(),
                content
                    .iter()
                    .zip(expected)
                    .position(|(read, wanted)| read != wanted)
            ),
            None => assert!(
                observed.maybe_created.contains(&content),
                "{context}: unknown shadow {} with content matching no interrupted create",
                shadow.id
            ),
        }
        assert!(
            !observed.deleted.contains(&shadow.id),
            "{context}: deleted shadow {} came back",
            shadow.id
        );
    }
    for id in observed.created.keys() {
        if !observed.maybe_deleted.contains(id) {
            assert!(
                shadows.iter().any(|shadow| shadow.id == *id),
                "{context}: committed shadow {id} vanished"
            );
        }
    }
}

/// The live volume: every chunk not written since the last flush reads back exactly; `check`
/// is clean.
fn verify_live_and_check(engine: &Engine, setup: &Setup, observed: &Observed, context: &str) {
    let device = engine
        .open_volume(setup.volume)
        .unwrap_or_else(|error| panic!("{context}: {error}"));
    let mut live = vec![0u8; VOLUME_BYTES];
    device.read_at(0, &mut live).expect("read the live volume");
    let chunk = CHUNK as usize;
    for index in 0..VOLUME_BYTES / chunk {
        if observed.touched.contains(&index) {
            continue;
        }
        let range = index * chunk..(index + 1) * chunk;
        assert!(
            live[range.clone()] == observed.durable[range],
            "{context}: live chunk {index} lost its flushed content"
        );
    }
    drop(device);
    let report = engine.check();
    assert!(
        report.is_clean(),
        "{context}: check after reopen:\n{report}"
    );
}

fn run_every_crash_point(mode: CrashMode, provider: Option<ProviderId>) {
    // Count the sync points of a run without a crash. Every run starts from a new store made
    // the same way (seeded IDs), so sync point k is the same point in every run.
    let counting = FaultBackend::new(None, mode.clone());
    let clean = setup(provider);
    let mut observed = Observed::default();
    scenario(&clean, &counting, &mut observed).expect("the scenario runs without a crash");
    let total = counting.sync_points();
    assert!(total > 20, "the scenario has {total} sync points");
    for crash_point in 0..total {
        let run = setup(provider);
        let mode = match &mode {
            CrashMode::KeepUnsyncedOutside(_) => CrashMode::KeepUnsyncedOutside(run.store.clone()),
            other => other.clone(),
        };
        let backend = FaultBackend::new(Some(crash_point), mode.clone());
        let mut observed = Observed::default();
        // The last sync points may fall in the engine's drop (its final flush), after the
        // scenario itself succeeded.
        let _ = scenario(&run, &backend, &mut observed);
        assert!(
            backend.has_crashed(),
            "sync point {crash_point} of {total} was reached"
        );
        verify_after_crash(&run, &observed, crash_point, &mode);
    }
    eprintln!("{mode:?}: verified {total} crash points");
}

#[test]
fn every_sync_point_losing_unsynced_writes_keeps_shadows_intact() {
    run_every_crash_point(CrashMode::DropUnsynced, None);
}

#[test]
fn every_sync_point_with_live_writes_reaching_the_disk_early_keeps_shadows_intact() {
    // The adversarial case for the ordering rule: live writes not yet synced survive while
    // the store's unsynced writes are lost.
    run_every_crash_point(
        CrashMode::KeepUnsyncedOutside(PathBuf::from("/placeholder")),
        None,
    );
}

/// The same scenario on a redirect-on-write volume: its shadows stay in the image, writes are
/// redirected, deleting the oldest folds back (and the restart folds what the vanished
/// volatile shadow left).
#[test]
fn providers_redirect_on_write_every_sync_point_losing_unsynced_writes() {
    run_every_crash_point(CrashMode::DropUnsynced, Some(ProviderId(ROW_PROVIDER_ID)));
}

#[test]
fn providers_redirect_on_write_every_sync_point_with_image_writes_reaching_the_disk_early() {
    run_every_crash_point(
        CrashMode::KeepUnsyncedOutside(PathBuf::from("/placeholder")),
        Some(ProviderId(ROW_PROVIDER_ID)),
    );
}
