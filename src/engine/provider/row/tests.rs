//! The redirect-on-write volume against a real file system.

use super::*;
use crate::engine::store::RealBackend;

const CHUNK: u32 = 4096;

fn open(dir: &Path, shadows: &[u64]) -> RowVolume {
    RowVolume::open(
        Arc::new(RealBackend),
        VolumeId(uuid::Uuid::from_u128(7)),
        &dir.join("live.img"),
        &dir.join("diff"),
        CHUNK,
        shadows.iter().copied().collect(),
        1 << 20,
        &OpenOptions::default(),
    )
    .expect("open")
}

fn read(volume: &RowVolume, shadow: Option<u64>) -> Vec<u8> {
    let mut buffer = vec![0u8; volume.size as usize];
    match shadow {
        None => volume.read_live(0, &mut buffer),
        Some(sequence) => volume.read_shadow(sequence, 0, &mut buffer),
    }
    .expect("read");
    buffer
}

/// The image holds `expected` and the diff area checks clean.
fn assert_folded(volume: &RowVolume, dir: &Path, expected: &[u8]) {
    assert!(
        std::fs::read(dir.join("live.img")).expect("image") == expected,
        "the image does not hold the folded content"
    );
    assert_eq!(volume.check().expect("check"), Vec::new());
}

/// A data file whose writes fail (a full disk).
struct FullDisk(Arc<dyn DurableFile>);

impl DurableFile for FullDisk {
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        self.0.read_at(offset, buffer)
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        self.0.size()
    }
    fn set_len(&self, length: u64) -> io::Result<()> {
        self.0.set_len(length)
    }
    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        self.0.next_data(offset)
    }
    fn fingerprint(&self) -> io::Result<FileFingerprint> {
        self.0.fingerprint()
    }
}

#[test]
fn a_failed_redirected_write_leaves_no_version_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("live.img"), vec![1u8; 4 * CHUNK as usize]).expect("img");
    let mut volume = open(dir.path(), &[]);
    volume.add_shadow(1);
    let working = volume.data.clone();
    volume.data = Arc::new(FullDisk(working.clone()));
    for (offset, length) in [(0, 2 * CHUNK as usize), (100, 10)] {
        let error = volume
            .write(offset, &vec![2u8; length])
            .expect_err("full disk");
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    }
    assert!(read(&volume, None).iter().all(|byte| *byte == 1));
    assert_eq!(volume.versions(), 0);
    assert_eq!(volume.used_bytes(), 0);
    volume.data = working;
    volume.write(0, &[3u8; CHUNK as usize]).expect("room again");
    assert_eq!(volume.used_bytes(), u64::from(CHUNK));
    assert_eq!(volume.check().expect("check"), Vec::new());
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("metadata").blocks() * 512
}

#[test]
fn a_punch_frees_what_no_shadow_needs_and_shadows_keep_their_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chunk = u64::from(CHUNK);
    let image = dir.path().join("live.img");
    std::fs::write(&image, vec![1u8; 16 * CHUNK as usize]).expect("img");
    let mut volume = open(dir.path(), &[]);
    // No shadow: the whole chunks become holes in the image, the partial ends zeros.
    let before = allocated(&image);
    volume.punch_hole(100, 3 * chunk).expect("punch");
    volume.sync().expect("sync");
    let mut expected = vec![1u8; 16 * CHUNK as usize];
    expected[100..(3 * chunk + 100) as usize].fill(0);
    assert!(read(&volume, None) == expected);
    assert!(
        allocated(&image) <= before - 2 * chunk,
        "the image freed two chunks"
    );
    assert_eq!(volume.versions(), 0);

    // A shadow: chunks it reads get versions that are holes; a version no shadow reads
    // is punched in place. The diff area's data file allocates nothing for either.
    volume.add_shadow(1);
    let shadow_view = expected.clone();
    volume
        .write(8 * chunk, &vec![7u8; CHUNK as usize])
        .expect("write");
    volume.sync().expect("sync");
    let data_file = dir.path().join("diff").join("row-chunks.dat");
    assert!(allocated(&data_file) >= chunk);
    volume
        .punch_hole(4 * chunk, 2 * chunk)
        .expect("punch read chunks");
    volume
        .punch_hole(8 * chunk, chunk)
        .expect("punch own version");
    volume.sync().expect("sync");
    expected[(4 * chunk) as usize..(6 * chunk) as usize].fill(0);
    expected[(8 * chunk) as usize..(9 * chunk) as usize].fill(0);
    assert!(
        read(&volume, None) == expected,
        "the live volume reads zeros"
    );
    assert!(
        read(&volume, Some(1)) == shadow_view,
        "the shadow kept its bytes"
    );
    assert_eq!(volume.versions(), 3);
    assert_eq!(allocated(&data_file), 0, "no version holds storage");
    assert_eq!(volume.check().expect("check"), Vec::new());
    drop(volume);
    let volume = open(dir.path(), &[1]);
    assert!(read(&volume, None) == expected, "the versions are durable");
    assert!(read(&volume, Some(1)) == shadow_view);
}

#[test]
fn holes_stay_holes_in_the_allocation_of_the_live_volume_and_the_shadow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = std::fs::File::create(dir.path().join("live.img")).expect("img");
    file.set_len(64 * u64::from(CHUNK)).expect("sparse");
    let mut volume = open(dir.path(), &[]);
    volume.add_shadow(1);
    volume.write(0, &[5u8; CHUNK as usize]).expect("write");
    let size = volume.size;
    let live = volume.allocation_live(0, size).expect("live");
    assert_eq!(
        live.first()
            .map(|extent| (extent.offset, extent.length, extent.hole)),
        Some((0, u64::from(CHUNK), false))
    );
    assert!(live[1..].iter().all(|extent| extent.hole), "{live:?}");
    assert_eq!(
        live.last().map(|extent| extent.offset + extent.length),
        Some(size)
    );
    let shadow = volume.allocation_shadow(1, 0, size).expect("shadow");
    assert!(shadow.iter().all(|extent| extent.hole), "{shadow:?}");
}

#[test]
fn the_image_keeps_the_shadow_and_deleting_the_oldest_folds_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("live.img"), vec![1u8; 4 * CHUNK as usize]).expect("img");
    let mut volume = open(dir.path(), &[]);
    volume.add_shadow(1);
    volume.write(100, &[2u8; 5000]).expect("write");
    volume.add_shadow(2);
    volume.write(0, &[3u8; CHUNK as usize]).expect("write");
    volume.flush().expect("flush");
    let image = std::fs::read(dir.path().join("live.img")).expect("read image");
    assert!(image.iter().all(|byte| *byte == 1), "the image was written");
    let shadow_two = read(&volume, Some(2));
    assert!(read(&volume, Some(1)).iter().all(|byte| *byte == 1));
    assert_eq!(&shadow_two[100..5100], &[2u8; 5000][..]);
    let live = read(&volume, None);
    assert_eq!(&live[..CHUNK as usize], &[3u8; CHUNK as usize][..]);
    assert_eq!(
        &live[CHUNK as usize..5100],
        &shadow_two[CHUNK as usize..5100]
    );
    drop(volume);

    let mut volume = open(dir.path(), &[1, 2]);
    assert_eq!(read(&volume, None), live);
    volume.delete_shadow(1).expect("delete oldest");
    // The fold waits: the versions shadow 2 reads are still read where they are.
    assert!(volume.needs_fold());
    assert_eq!(read(&volume, Some(2)), shadow_two);
    assert_eq!(read(&volume, None), live);
    volume.fold().expect("fold");
    assert!(!volume.needs_fold());
    assert_eq!(read(&volume, Some(2)), shadow_two);
    assert_eq!(read(&volume, None), live);
    assert_eq!(
        std::fs::read(dir.path().join("live.img")).expect("image"),
        shadow_two
    );
    volume.delete_shadow(2).expect("delete last");
    volume.fold().expect("fold");
    assert!(volume.is_empty());
    assert!(
        !has_versions(&dir.path().join("diff")),
        "the log was not emptied"
    );
    assert_eq!(volume.used_bytes(), 0);
    assert_folded(&volume, dir.path(), &live);
}

/// Rolling shadows: after the oldest is deleted and folded while a newer one remains, the
/// diff area keeps its blocks, and the next first writes reuse them in order (the file
/// does not grow); every view stays exact, and the last shadow's deletion gives the space
/// back.
#[test]
fn rolling_shadows_reuse_the_folded_space_in_order_and_the_last_deletion_frees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chunks = 16usize;
    let size = chunks * CHUNK as usize;
    std::fs::write(dir.path().join("live.img"), vec![1u8; size]).expect("img");
    let data_file = data_path(&dir.path().join("diff"));
    let data_length = || std::fs::metadata(&data_file).expect("data file").len();
    let mut volume = open(dir.path(), &[]);
    volume.add_shadow(1);
    volume.write(0, &vec![2u8; size]).expect("write");
    volume.flush().expect("flush");
    assert_eq!(data_length(), size as u64);
    volume.add_shadow(2);
    volume.delete_shadow(1).expect("delete oldest");
    volume.fold().expect("fold");
    assert!(!has_versions(&dir.path().join("diff")));
    assert_eq!(
        data_length(),
        size as u64,
        "the folded space was given back"
    );
    assert_eq!(volume.used_bytes(), 0);
    assert_eq!(volume.allocated_bytes(), size as u64);
    assert_folded(&volume, dir.path(), &vec![2u8; size]);

    volume.write(0, &vec![3u8; size]).expect("write");
    volume.flush().expect("flush");
    assert_eq!(
        data_length(),
        size as u64,
        "the writes did not reuse the space"
    );
    // In order: chunk i went to slot i, so the stream was one run.
    for chunk in 0..chunks as u64 {
        let version = volume.map.lookup_below(chunk, Tag::MAX).expect("version");
        assert_eq!(u64::from(version.slot), chunk);
    }
    assert!(read(&volume, Some(2)).iter().all(|byte| *byte == 2));
    assert!(read(&volume, None).iter().all(|byte| *byte == 3));
    assert_eq!(volume.check().expect("check"), Vec::new());
    drop(volume);

    let mut volume = open(dir.path(), &[2]);
    assert!(read(&volume, Some(2)).iter().all(|byte| *byte == 2));
    assert!(read(&volume, None).iter().all(|byte| *byte == 3));
    volume.delete_shadow(2).expect("delete last");
    volume.fold().expect("fold");
    assert_eq!(data_length(), 0, "the last deletion kept the space");
    assert_folded(&volume, dir.path(), &vec![3u8; size]);
}

/// A fold one chunk at a time, with writes and shadow reads between the steps (as the
/// engine's background fold lets I/O in): every view stays exact, a write to a chunk
/// waiting for the fold is kept, and the image ends as the live volume.
#[test]
fn a_fold_in_steps_keeps_every_view_exact_between_the_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("live.img"), vec![1u8; 8 * CHUNK as usize]).expect("img");
    let mut volume = open(dir.path(), &[]);
    volume.add_shadow(1);
    volume.write(0, &[2u8; 6 * CHUNK as usize]).expect("write");
    volume.add_shadow(2);
    volume.write(u64::from(CHUNK), &[3u8; 100]).expect("write");
    let shadow_two = read(&volume, Some(2));
    volume.delete_shadow(1).expect("delete oldest");
    let mut live = read(&volume, None);
    let mut steps = 0;
    while volume.needs_fold() {
        assert!(volume.versions_waiting_for_fold() > 0);
        volume.fold_batch(1).expect("one step");
        steps += 1;
        assert_eq!(read(&volume, Some(2)), shadow_two, "after step {steps}");
        assert_eq!(read(&volume, None), live, "after step {steps}");
        let at = (steps as u64 % 6) * u64::from(CHUNK) + 10;
        volume
            .write(at, &[steps as u8 + 10; 50])
            .expect("write between steps");
        live[at as usize..at as usize + 50].fill(steps as u8 + 10);
        assert_eq!(read(&volume, None), live);
    }
    assert_eq!(steps, 6, "one chunk per step");
    assert_eq!(
        std::fs::read(dir.path().join("live.img")).expect("image"),
        shadow_two
    );
    volume.delete_shadow(2).expect("delete last");
    let waiting = volume.versions_waiting_for_fold();
    assert!(waiting > 0);
    while volume.needs_fold() {
        volume.fold_batch(2).expect("step");
        volume
            .write(0, &[9u8; 10])
            .expect("write in place while folding");
        live[..10].fill(9);
        assert_eq!(read(&volume, None), live);
    }
    volume.flush().expect("flush");
    assert!(volume.is_empty());
    assert_folded(&volume, dir.path(), &live);
}

/// A full disk under the image during a fold step: the step fails with the error, every
/// version stays (nothing is freed before the image is synced), every view reads exactly
/// as before, and the fold completes once there is room.
#[test]
fn a_fold_that_cannot_write_the_image_keeps_every_version_and_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("live.img"), vec![1u8; 4 * CHUNK as usize]).expect("img");
    let mut volume = open(dir.path(), &[]);
    volume.add_shadow(1);
    volume.write(0, &[2u8; 3 * CHUNK as usize]).expect("write");
    volume.add_shadow(2);
    volume.write(0, &[3u8; 10]).expect("write");
    volume.flush().expect("flush");
    let (shadow_two, live) = (read(&volume, Some(2)), read(&volume, None));
    volume.delete_shadow(1).expect("delete oldest");
    let used = volume.used_bytes();
    let working = volume.live.clone();
    volume.live = Arc::new(FullDisk(working.clone()));
    let error = volume.fold_batch(8).expect_err("full disk");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    assert!(volume.needs_fold());
    assert_eq!(volume.used_bytes(), used, "a version was freed");
    assert_eq!(read(&volume, Some(2)), shadow_two);
    assert_eq!(read(&volume, None), live);
    volume.live = working;
    volume.fold().expect("fold with room");
    assert!(!volume.needs_fold());
    assert_eq!(read(&volume, Some(2)), shadow_two);
    assert_eq!(read(&volume, None), live);
    assert_folded(&volume, dir.path(), &shadow_two);
}
