//! The copy-on-write volume against a real file system and an injected crash.

use super::*;
use crate::engine::store::{CrashMode, FaultBackend, RealBackend};

const CHUNK: u32 = 4096;
/// Enough chunks for several windows ahead (2, 4, 8, ... chunks).
const CHUNKS: u64 = 200;
/// Chunks from here on are a hole in the image.
const DATA_CHUNKS: u64 = 150;

fn original() -> Vec<u8> {
    (0..CHUNKS * u64::from(CHUNK))
        .map(|index| {
            let chunk = index / u64::from(CHUNK);
            if chunk < DATA_CHUNKS {
                (chunk as u8) | 1
            } else {
                0
            }
        })
        .collect()
}

fn make_image(dir: &Path) -> PathBuf {
    let path = dir.join("live.img");
    let content = original();
    let data_bytes = (DATA_CHUNKS * u64::from(CHUNK)) as usize;
    std::fs::write(&path, &content[..data_bytes]).expect("write image");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open image");
    file.set_len(content.len() as u64).expect("extend image");
    file.sync_all().expect("sync image");
    create_diff_area(dir);
    path
}

fn open(backend: Arc<dyn DurableBackend>, dir: &Path) -> io::Result<CowVolume> {
    CowVolume::open(
        backend,
        VolumeId(uuid::Uuid::from_u128(1)),
        &dir.join("live.img"),
        &dir.join("diff"),
        CHUNK,
        BTreeSet::from([1]),
        3 * CHUNK as usize,
        &OpenOptions::default(),
    )
    .map(|(volume, _)| volume)
    .map_err(|error| match error {
        DiffAreaError::Io(error) => error,
        other => io::Error::other(other.to_string()),
    })
}

/// Creates the (empty) diff area the way registering a volume does, before any shadow.
fn create_diff_area(dir: &Path) {
    CowVolume::open(
        Arc::new(RealBackend),
        VolumeId(uuid::Uuid::from_u128(1)),
        &dir.join("live.img"),
        &dir.join("diff"),
        CHUNK,
        BTreeSet::new(),
        3 * CHUNK as usize,
        &OpenOptions::default(),
    )
    .expect("create the diff area");
}

fn read_shadow_all(volume: &CowVolume) -> Vec<u8> {
    let mut buffer = vec![0u8; volume.size as usize];
    volume.read_shadow(1, 0, &mut buffer).expect("read shadow");
    buffer
}

/// Chunk-aligned sequential writes over the whole volume, then a flush. Returns whether a
/// window was being copied ahead at some point.
fn sequential_run(volume: &mut CowVolume, expected_shadow: Option<&[u8]>) -> io::Result<bool> {
    let mut copied_ahead = false;
    for chunk in 0..CHUNKS {
        volume.write(chunk * u64::from(CHUNK), &[0xEE; CHUNK as usize])?;
        copied_ahead |= volume.ahead_copy.is_some();
        if let Some(expected) = expected_shadow {
            assert!(
                read_shadow_all(volume) == expected,
                "the shadow changed after the write of chunk {chunk}"
            );
        }
    }
    volume.flush()?;
    Ok(copied_ahead)
}

#[test]
fn a_window_copied_ahead_keeps_the_shadow_exact_while_in_flight_and_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_image(dir.path());
    let expected = original();
    let mut volume = open(Arc::new(RealBackend), dir.path()).expect("open");
    let copied_ahead = sequential_run(&mut volume, Some(&expected)).expect("run");
    assert!(copied_ahead, "the run never copied a window ahead");
    let mut live = vec![0u8; volume.size as usize];
    volume.read_live(0, &mut live).expect("read live");
    assert!(live.iter().all(|byte| *byte == 0xEE));
    assert_eq!(volume.check().expect("check"), Vec::new());
    // Holes are preserved as zero markers: only the data chunks take space.
    assert_eq!(volume.used_bytes(), DATA_CHUNKS * u64::from(CHUNK));
    drop(volume);
    let volume = open(Arc::new(RealBackend), dir.path()).expect("reopen");
    assert!(read_shadow_all(&volume) == expected);
    assert_eq!(volume.check().expect("check"), Vec::new());
}

#[test]
fn a_damaged_slot_is_a_read_error_naming_chunks_dat_never_its_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_image(dir.path());
    let mut volume = open(Arc::new(RealBackend), dir.path()).expect("open");
    // Random first writes (preserve) and a sequential run (copies made ahead by a helper).
    volume
        .write(7 * u64::from(CHUNK) + 5, &[0xAB; 10])
        .expect("write");
    sequential_run(&mut volume, None).expect("run");
    drop(volume);
    let volume = open(Arc::new(RealBackend), dir.path()).expect("reopen");
    assert!(
        read_shadow_all(&volume) == original(),
        "every slot checks out"
    );
    drop(volume);
    let data_path = dir.path().join("diff").join("chunks.dat");
    let mut bytes = std::fs::read(&data_path).expect("read");
    bytes[3 * CHUNK as usize + 17] ^= 0x10;
    std::fs::write(&data_path, &bytes).expect("write");
    let volume = open(Arc::new(RealBackend), dir.path()).expect("reopen");
    let chunk = (0..CHUNKS)
        .find(|chunk| {
            volume
                .map
                .lookup(*chunk, 1)
                .is_some_and(|version| version.slot == 3)
        })
        .expect("a chunk in slot 3");
    // A one-byte read of the damaged slot is checked against the whole slot.
    let mut byte = [0u8; 1];
    let error = volume
        .read_shadow(1, chunk * u64::from(CHUNK) + 1, &mut byte)
        .expect_err("the damaged slot is not served");
    let message = error.to_string();
    assert!(
        message.contains(&data_path.display().to_string()) && message.contains("slot 3"),
        "{message}"
    );
    let mut buffer = vec![0u8; volume.size as usize];
    assert!(volume.read_shadow(1, 0, &mut buffer).is_err());
    // Other slots are still served.
    let other = if chunk == 0 { 1 } else { 0 };
    let mut piece = vec![0u8; CHUNK as usize];
    volume
        .read_shadow(1, other * u64::from(CHUNK), &mut piece)
        .expect("an undamaged slot");
    let start = (other * u64::from(CHUNK)) as usize;
    assert!(piece == original()[start..start + CHUNK as usize]);
    let problems = volume.check().expect("check");
    assert!(
        problems
            .iter()
            .any(|problem| problem.description.contains("slot 3")),
        "{problems:?}"
    );
}

#[test]
fn a_crash_at_any_sync_point_of_a_sequential_run_keeps_the_shadow_exact() {
    let counting_dir = tempfile::tempdir().expect("tempdir");
    make_image(counting_dir.path());
    let counting = FaultBackend::new(None, CrashMode::DropUnsynced);
    let mut volume = open(Arc::new(counting.clone()), counting_dir.path()).expect("open");
    sequential_run(&mut volume, None).expect("run");
    drop(volume);
    let total = counting.sync_points();
    assert!(total > 10, "the run has {total} sync points");
    let expected = original();
    for crash_point in 0..total {
        let dir = tempfile::tempdir().expect("tempdir");
        make_image(dir.path());
        // The adversarial case: live writes reach the disk unsynced, the diff area's do not.
        let backend = FaultBackend::new(
            Some(crash_point),
            CrashMode::KeepUnsyncedOutside(dir.path().join("diff")),
        );
        if let Ok(mut volume) = open(Arc::new(backend.clone()), dir.path()) {
            let _ = sequential_run(&mut volume, None);
        }
        assert!(
            backend.has_crashed(),
            "sync point {crash_point} was reached"
        );
        let volume = open(Arc::new(RealBackend), dir.path()).expect("reopen");
        assert!(
            read_shadow_all(&volume) == expected,
            "the shadow changed after a crash at sync point {crash_point} of {total}"
        );
        assert_eq!(volume.check().expect("check"), Vec::new());
    }
}

/// Rolling shadows: the slots the oldest shadow's deletion frees are reused lowest first, so
/// the next sequential first writes fill them in order (one copy per run) before the data file
/// grows; both shadows stay exact.
#[test]
fn rolling_shadows_reuse_the_freed_slots_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_image(dir.path());
    let mut volume = open(Arc::new(RealBackend), dir.path()).expect("open");
    sequential_run(&mut volume, None).expect("first run");
    let data_length = volume.data.size().expect("size");
    let high_water = volume.slot_high_water;
    volume.add_shadow(2);
    assert!(volume.delete_shadow(1).expect("delete oldest") > 0);
    volume.flush().expect("flush");
    let shadow_two = {
        let mut buffer = vec![0u8; volume.size as usize];
        volume
            .read_shadow(2, 0, &mut buffer)
            .expect("read shadow 2");
        buffer
    };
    assert!(shadow_two.iter().all(|byte| *byte == 0xEE));
    for chunk in 0..CHUNKS {
        volume
            .write(chunk * u64::from(CHUNK), &[0x5A; CHUNK as usize])
            .expect("write");
    }
    volume.flush().expect("flush");
    // Shadow 1 kept the holes as zero markers: only its data chunks freed slots, and the
    // chunks that were holes then take new ones.
    assert_eq!(high_water, DATA_CHUNKS, "the first run's slots");
    assert_eq!(
        volume.slot_high_water, CHUNKS,
        "freed slots were left unused"
    );
    assert_eq!(
        volume.data.size().expect("size"),
        data_length + (CHUNKS - DATA_CHUNKS) * u64::from(CHUNK)
    );
    let slots: Vec<u64> = (0..CHUNKS)
        .map(|chunk| {
            u64::from(
                volume
                    .map
                    .lookup_below(chunk, Tag::MAX)
                    .expect("version")
                    .slot,
            )
        })
        .collect();
    assert!(
        slots.windows(2).all(|pair| pair[0] < pair[1]),
        "the freed slots were not reused in order: {slots:?}"
    );
    let mut buffer = vec![0u8; volume.size as usize];
    volume
        .read_shadow(2, 0, &mut buffer)
        .expect("read shadow 2");
    assert!(buffer == shadow_two, "shadow 2 changed");
    volume.read_live(0, &mut buffer).expect("read live");
    assert!(buffer.iter().all(|byte| *byte == 0x5A));
    assert_eq!(volume.check().expect("check"), Vec::new());
}
