//! Library tests of the engine core: volumes, create, copy-on-write reads, delete, revert,
//! change detection, limits, diff-area limits and check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskshadow::engine::clock::{SeededIds, SteppingClock};
use diskshadow::engine::core::{CreateError, EngineOptions, OpenError, RevertError, VolumeError};
use diskshadow::engine::ids::ShadowId;
use diskshadow::engine::model::{
    CreateSpec, CreateVolume, DeleteSelector, DriveTarget, Exposure, ExposureKind, RequesterId,
    ShadowHealth,
};
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::{Attributes, Context, VssCode};
use diskshadow::engine::Engine;

const CHUNK: u32 = 4096;

fn options() -> EngineOptions {
    EngineOptions::new(
        Arc::new(SteppingClock::default()),
        Arc::new(SeededIds::new(1)),
        "HOST",
        CHUNK,
        Arc::new(RealBackend),
    )
}

fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("create image");
    file.set_len(size).expect("size image");
    path
}

fn spec(volumes: &[diskshadow::engine::ids::VolumeId], context: Context) -> CreateSpec {
    CreateSpec {
        volumes: volumes
            .iter()
            .map(|volume| CreateVolume {
                volume: *volume,
                provider: None,
            })
            .collect(),
        context,
        extra_attributes: Attributes::default(),
        requester: RequesterId(7),
        set_id: None,
    }
}

fn read_all(device: &dyn diskshadow::engine::device::BlockDevice) -> Vec<u8> {
    let mut buffer = vec![0u8; device.size() as usize];
    device.read_at(0, &mut buffer).expect("read");
    buffer
}

#[test]
fn a_second_open_of_the_same_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let _engine = Engine::open(&store, options()).expect("open");
    match Engine::open(&store, options()) {
        Err(error @ OpenError::Locked { .. }) => {
            assert_eq!(error.vss_code(), VssCode::VSS_E_BAD_STATE);
            assert!(error.to_string().contains("in use"));
        }
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn volumes_resolve_by_path_drive_letter_and_guid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(&dir.path().join("store"), options()).expect("open");
    image(dir.path(), "disk.img", 1 << 20);
    let by_path = engine.resolve_volume("disk.img", dir.path()).expect("path");
    assert_eq!(by_path.chunk_size, CHUNK);
    assert_eq!(
        engine
            .resolve_volume("disk.img", dir.path())
            .expect("again")
            .id,
        by_path.id
    );
    engine
        .map_drive('c', DriveTarget::Volume(dir.path().join("disk.img")))
        .expect("map");
    for spec in ["C:", "c:", "C:\\"] {
        let info = engine.resolve_volume(spec, Path::new("/")).expect("drive");
        assert_eq!(info.id, by_path.id);
        assert_eq!(info.drive_letter, Some('C'));
    }
    let guid = by_path.id.to_string();
    assert_eq!(
        engine
            .resolve_volume(&guid, Path::new("/"))
            .expect("guid")
            .id,
        by_path.id
    );
    assert_eq!(
        engine
            .resolve_volume(&by_path.device_name(), Path::new("/"))
            .expect("device")
            .id,
        by_path.id
    );
    assert_eq!(engine.drive_map().len(), 1);

    let inside = engine
        .resolve_volume("disk.img/etc/passwd", dir.path())
        .expect_err("inside");
    assert!(matches!(inside, VolumeError::NotAVolume { .. }), "{inside}");
    assert!(matches!(
        engine.resolve_volume("C:\\Windows", dir.path()),
        Err(VolumeError::NotAVolume { .. })
    ));
    assert!(matches!(
        engine.resolve_volume("D:", dir.path()),
        Err(VolumeError::DriveNotMapped { letter: 'D' })
    ));
    assert!(matches!(
        engine.resolve_volume(".", dir.path()),
        Err(VolumeError::NotRegularFile { .. })
    ));
    assert!(matches!(
        engine.resolve_volume("missing.img", dir.path()),
        Err(VolumeError::Missing { .. })
    ));
    assert!(matches!(
        engine.register_volume(&dir.path().join("disk.img"), Some(3000)),
        Err(VolumeError::InvalidChunkSize { .. })
    ));
    drop(engine);
    let engine = Engine::open(&dir.path().join("store"), options()).expect("reopen");
    assert_eq!(engine.volumes().len(), 1);
    assert_eq!(engine.drive_map().len(), 1);
    engine.unmap_drive('C').expect("unmap");
    assert!(engine.drive_map().is_empty());
}

#[test]
fn shadows_keep_their_point_in_time_and_delete_frees_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(&dir.path().join("store"), options()).expect("open");
    let volume = engine
        .resolve_volume(
            image(dir.path(), "a.img", 64 * 1024)
                .to_str()
                .expect("utf8"),
            dir.path(),
        )
        .expect("vol");
    let device = engine.open_volume(volume.id).expect("open volume");
    device.write_at(0, &[1u8; 20_000]).expect("write");
    let first = engine
        .create_shadow_set(&spec(&[volume.id], Context::PersistentNoWriters))
        .expect("create");
    let info = &first.shadows[0];
    assert_eq!(info.attributes.0, 0x0002_0019);
    assert_eq!(
        info.device_name,
        "\\\\?\\GLOBALROOT\\Device\\HarddiskVolumeShadowCopy1"
    );
    assert_eq!(info.owner, None);
    device.write_at(1000, &[2u8; 10_000]).expect("write");
    let second = engine
        .create_shadow_set(&spec(&[volume.id], Context::Volatile))
        .expect("create");
    assert_eq!(second.shadows[0].owner, Some(RequesterId(7)));
    assert!(second.shadows[0].device_name.ends_with("Copy2"));
    device.write_at(0, &[3u8; 64 * 1024]).expect("write");

    let mut expected_first = vec![0u8; 64 * 1024];
    expected_first[..20_000].fill(1);
    let mut expected_second = expected_first.clone();
    expected_second[1000..11_000].fill(2);
    assert_eq!(
        read_all(&*engine.open_shadow(info.id).expect("shadow")),
        expected_first
    );
    assert_eq!(
        read_all(&*engine.open_shadow(second.shadows[0].id).expect("shadow")),
        expected_second
    );
    assert_eq!(read_all(&*device), vec![3u8; 64 * 1024]);
    assert!(engine.check().is_clean(), "{}", engine.check());

    let used_before = engine.storage()[0].used_bytes;
    assert!(used_before > 0);
    let deleted = engine
        .delete_shadows(&DeleteSelector::Id(info.id))
        .expect("delete");
    assert_eq!(deleted.len(), 1);
    assert!(
        engine.storage()[0].used_bytes < used_before,
        "deleting frees the chunks only it needed"
    );
    assert_eq!(
        read_all(&*engine.open_shadow(second.shadows[0].id).expect("shadow")),
        expected_second
    );
    assert!(engine.check().is_clean(), "{}", engine.check());
    let deleted = engine
        .delete_shadows(&DeleteSelector::OwnedBy(RequesterId(7)))
        .expect("delete");
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        engine
            .storage()
            .first()
            .map_or(0, |storage| storage.used_bytes),
        0
    );
    assert!(
        matches!(engine.delete_shadows(&DeleteSelector::Id(ShadowId::nil())), Err(error) if error.vss_code() == VssCode::VSS_E_OBJECT_NOT_FOUND)
    );
}

#[test]
fn revert_restores_the_content_and_keeps_every_shadow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(&dir.path().join("store"), options()).expect("open");
    let volume = engine
        .register_volume(&image(dir.path(), "a.img", 32 * 1024), None)
        .expect("vol");
    let device = engine.open_volume(volume.id).expect("open volume");
    device.write_at(0, &[1u8; 8192]).expect("write");
    let base = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("create")
        .shadows[0]
        .clone();
    device.write_at(4096, &[2u8; 8192]).expect("write");
    let later = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("create")
        .shadows[0]
        .clone();
    let later_content = read_all(&*engine.open_shadow(later.id).expect("shadow"));
    device.write_at(0, &[9u8; 32 * 1024]).expect("write");
    let base_content = read_all(&*engine.open_shadow(base.id).expect("shadow"));

    engine.revert(base.id, &NoProgress).expect("revert");
    assert_eq!(read_all(&*device), base_content);
    assert_eq!(
        read_all(&*engine.open_shadow(base.id).expect("shadow")),
        base_content
    );
    assert_eq!(
        read_all(&*engine.open_shadow(later.id).expect("shadow")),
        later_content
    );
    assert!(engine.check().is_clean(), "{}", engine.check());

    let volatile = engine
        .create_shadow_set(&spec(&[volume.id], Context::Volatile))
        .expect("create")
        .shadows[0]
        .clone();
    let error = engine
        .revert(volatile.id, &NoProgress)
        .expect_err("volatile");
    assert!(matches!(error, RevertError::UnsupportedContext { .. }));
    assert_eq!(error.vss_code(), VssCode::VSS_E_UNSUPPORTED_CONTEXT);
}

#[test]
fn a_volume_changed_behind_our_back_makes_its_shadows_suspect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let path = image(dir.path(), "a.img", 16 * 1024);
    let engine = Engine::open(&store, options()).expect("open");
    let volume = engine.register_volume(&path, None).expect("vol");
    let shadow = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("create")
        .shadows[0]
        .clone();
    drop(engine);
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, vec![5u8; 16 * 1024]).expect("external write");
    let engine = Engine::open(&store, options()).expect("reopen");
    let listed = engine.shadow(shadow.id).expect("listed");
    assert!(
        matches!(listed.health, ShadowHealth::Suspect { ref reason } if reason.contains("outside diskshadow")),
        "{listed:?}"
    );
    assert!(engine.open_shadow(shadow.id).is_err());
    // New shadows made after the change are good.
    let fresh = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("create")
        .shadows[0]
        .clone();
    assert_eq!(
        engine.shadow(fresh.id).expect("fresh").health,
        ShadowHealth::Good
    );
    // A change while the engine runs is found on next use.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, vec![6u8; 16 * 1024]).expect("external write");
    assert!(engine
        .shadows()
        .iter()
        .all(|shadow| shadow.health != ShadowHealth::Good));
}

#[test]
fn limits_and_provider_capabilities_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(&dir.path().join("store"), options()).expect("open");
    let volume = engine
        .register_volume(&image(dir.path(), "a.img", 8192), None)
        .expect("vol");
    let mut plex = spec(&[volume.id], Context::Persistent);
    plex.extra_attributes = Attributes(Attributes::PLEX);
    assert_eq!(
        engine
            .create_shadow_set(&plex)
            .expect_err("plex")
            .vss_code(),
        VssCode::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER
    );
    let too_many = spec(&vec![volume.id; 65], Context::Persistent);
    assert_eq!(
        engine
            .create_shadow_set(&too_many)
            .expect_err("65")
            .vss_code(),
        VssCode::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED
    );
    for _ in 0..64 {
        engine
            .create_shadow_set(&spec(&[volume.id], Context::ClientAccessible))
            .expect("create");
    }
    let error = engine
        .create_shadow_set(&spec(&[volume.id], Context::ClientAccessible))
        .expect_err("65th");
    assert!(matches!(error, CreateError::TooManyClientAccessible { .. }));
    assert_eq!(
        error.vss_code(),
        VssCode::VSS_E_MAXIMUM_NUMBER_OF_SNAPSHOTS_REACHED
    );
    for _ in 64..512 {
        engine
            .create_shadow_set(&spec(&[volume.id], Context::Persistent))
            .expect("create");
    }
    let error = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect_err("513th");
    assert!(matches!(error, CreateError::TooManyShadows { .. }));
    assert_eq!(engine.shadows().len(), 512);
    let deleted = engine
        .delete_shadows(&DeleteSelector::All)
        .expect("delete all");
    assert_eq!(deleted.len(), 512);
    assert_eq!(
        engine.providers()[0].name,
        "Microsoft Software Shadow Copy provider 1.0"
    );
}

#[test]
fn exceeding_the_diff_area_limit_deletes_the_oldest_shadows_and_the_write_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(&dir.path().join("store"), options()).expect("open");
    let volume = engine
        .register_volume(&image(dir.path(), "a.img", 64 * 1024), None)
        .expect("vol");
    let device = engine.open_volume(volume.id).expect("open");
    device.write_at(0, &[1u8; 64 * 1024]).expect("fill");
    let oldest = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("create")
        .shadows[0]
        .clone();
    device.write_at(0, &[2u8; 4 * 4096]).expect("write");
    let newest = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("create")
        .shadows[0]
        .clone();
    assert!(engine
        .set_max_diff_area(volume.id, Some(6 * 4096))
        .expect("limit")
        .is_empty());
    device
        .write_at(8 * 4096, &[3u8; 4 * 4096])
        .expect("write that overflows");
    let remaining: Vec<ShadowId> = engine.shadows().iter().map(|shadow| shadow.id).collect();
    assert_eq!(
        remaining,
        vec![newest.id],
        "the oldest shadow was sacrificed"
    );
    assert!(!remaining.contains(&oldest.id));
    let deleted = engine
        .set_max_diff_area(volume.id, Some(0))
        .expect("shrink");
    assert_eq!(deleted.len(), 1);
    assert!(engine.check().is_clean(), "{}", engine.check());
}

#[test]
fn exposure_sets_the_exposed_attributes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(&dir.path().join("store"), options()).expect("open");
    let volume = engine
        .register_volume(&image(dir.path(), "a.img", 8192), None)
        .expect("vol");
    let shadow = engine
        .create_shadow_set(&spec(&[volume.id], Context::PersistentNoWriters))
        .expect("create")
        .shadows[0]
        .clone();
    let exposure = Exposure {
        kind: ExposureKind::Drive,
        name: "P:".into(),
        location: "/mnt/p".into(),
    };
    engine
        .set_exposure(shadow.id, Some(exposure.clone()))
        .expect("expose");
    let listed = engine.shadow(shadow.id).expect("listed");
    assert_eq!(listed.attributes.0, 0x0012_0019);
    assert_eq!(listed.exposure, Some(exposure));
    engine.set_exposure(shadow.id, None).expect("unexpose");
    assert_eq!(
        engine.shadow(shadow.id).expect("listed").attributes.0,
        0x0002_0019
    );
}

#[test]
fn never_written_chunks_are_not_copied_and_the_index_is_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(&dir.path().join("store"), options()).expect("open");
    let chunks = 20_000u64;
    let volume = engine
        .register_volume(
            &image(dir.path(), "sparse.img", chunks * u64::from(CHUNK)),
            None,
        )
        .expect("vol");
    let device = engine.open_volume(volume.id).expect("open");
    device
        .write_at(0, &vec![7u8; 10 * CHUNK as usize])
        .expect("write");
    engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("create");
    // Every other chunk, so preserved chunks are not one contiguous run.
    let block = vec![8u8; CHUNK as usize];
    for chunk in (0..chunks).step_by(2) {
        device
            .write_at(chunk * u64::from(CHUNK), &block)
            .expect("write");
    }
    device.flush().expect("flush");
    let storage = &engine.storage()[0];
    assert_eq!(
        storage.used_bytes,
        5 * u64::from(CHUNK),
        "only the 5 written chunks needed copies; holes got zero markers"
    );
    let bytes_per_chunk = engine
        .index_bytes_per_preserved_chunk()
        .expect("some preserved");
    eprintln!("block-map memory: {bytes_per_chunk:.1} bytes per preserved chunk");
    assert!(
        bytes_per_chunk < 32.0,
        "{bytes_per_chunk} bytes per preserved chunk"
    );
}

#[test]
fn shadow_reads_run_beside_writes_from_other_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::open(&dir.path().join("store"), options()).expect("open"));
    let volume = engine
        .register_volume(&image(dir.path(), "a.img", 256 * 1024), None)
        .expect("vol");
    let device = engine.open_volume(volume.id).expect("open");
    device.write_at(0, &vec![1u8; 256 * 1024]).expect("fill");
    let shadow = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("create")
        .shadows[0]
        .clone();
    let writer = {
        let device = device.clone();
        std::thread::spawn(move || {
            for round in 0..50u64 {
                let offset = (round * 7 % 60) * 4096;
                device
                    .write_at(offset, &[round as u8 + 2; 8192])
                    .expect("write");
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let shadow_device = engine.open_shadow(shadow.id).expect("shadow");
                for _ in 0..20 {
                    assert_eq!(read_all(&*shadow_device), vec![1u8; 256 * 1024]);
                }
            })
        })
        .collect();
    writer.join().expect("writer");
    for reader in readers {
        reader.join().expect("reader");
    }
    assert!(engine.check().is_clean());
}

/// The shadow, if its create left its copy pending (no reflink), else nothing.
fn engine_shadow_ids_if_pending(
    shadow: &diskshadow::engine::model::ShadowInfo,
) -> Vec<diskshadow::engine::ids::ShadowId> {
    if shadow.health == diskshadow::engine::model::ShadowHealth::CopyPending {
        vec![shadow.id]
    } else {
        Vec::new()
    }
}

#[test]
fn the_full_copy_provider_keeps_an_independent_copy() {
    use diskshadow::engine::provider::FULL_COPY_PROVIDER_ID;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let engine = Engine::open(&store, options()).expect("open");
    let path = image(dir.path(), "a.img", 64 * 1024);
    let volume = engine.register_volume(&path, None).expect("vol");
    assert_eq!(engine.providers().len(), 5);
    let device = engine.open_volume(volume.id).expect("open");
    device.write_at(0, &[1u8; 64 * 1024]).expect("fill");
    let mut plex = spec(&[volume.id], Context::Persistent);
    plex.volumes[0].provider = Some(diskshadow::engine::ids::ProviderId(FULL_COPY_PROVIDER_ID));
    plex.extra_attributes = Attributes(Attributes::PLEX);
    let copy = engine
        .create_shadow_set(&plex)
        .expect("plex create")
        .shadows[0]
        .clone();
    assert!(copy.attributes.contains(Attributes::PLEX));
    assert!(!copy.attributes.contains(Attributes::DIFFERENTIAL));
    let cow = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("cow create")
        .shadows[0]
        .clone();
    device.write_at(4096, &[2u8; 20_000]).expect("write");
    // Without reflink (this test's file system) the copy is made after the commit, from the
    // shadow's point in time: until then the shadow is served from that point in time.
    let pending = engine.open_shadow(copy.id).expect("pending copy");
    assert_eq!(read_all(&*pending), vec![1u8; 64 * 1024]);
    assert_eq!(
        engine
            .complete_full_copies(None, &NoProgress)
            .expect("copy"),
        engine_shadow_ids_if_pending(&copy)
    );
    assert!(engine.pending_full_copies().is_empty());
    assert_eq!(
        engine.shadow(copy.id).expect("listed").health,
        diskshadow::engine::model::ShadowHealth::Good
    );
    // A device opened while the copy was pending reads the copy once it is complete.
    assert_eq!(read_all(&*pending), vec![1u8; 64 * 1024]);
    assert_eq!(
        read_all(&*engine.open_shadow(copy.id).expect("copy")),
        vec![1u8; 64 * 1024]
    );
    assert_eq!(
        read_all(&*engine.open_shadow(cow.id).expect("cow")),
        vec![1u8; 64 * 1024]
    );
    engine
        .revert(copy.id, &NoProgress)
        .expect("revert to the copy");
    assert_eq!(read_all(&*device), vec![1u8; 64 * 1024]);
    assert!(engine.check().is_clean(), "{}", engine.check());

    let mut differential = plex.clone();
    differential.extra_attributes = Attributes(Attributes::DIFFERENTIAL);
    assert_eq!(
        engine
            .create_shadow_set(&differential)
            .expect_err("differential")
            .vss_code(),
        VssCode::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER
    );
    engine
        .delete_shadows(&DeleteSelector::Id(copy.id))
        .expect("delete");
    assert!(engine.check().is_clean(), "{}", engine.check());
    let leftovers = std::fs::read_dir(store.join("diff"))
        .expect("diff")
        .flatten()
        .flat_map(|volume_dir| std::fs::read_dir(volume_dir.path()).expect("dir").flatten())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("plex-"))
        .count();
    assert_eq!(leftovers, 0, "the copy was removed with its shadow");
}

#[test]
fn a_sequential_writer_gets_chunks_preserved_ahead_and_every_shadow_stays_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let size = 3 * 1024 * 1024 + 1000;
    let path = image(dir.path(), "a.img", size as u64);
    let engine = Engine::open(&store, options()).expect("open");
    let volume = engine.register_volume(&path, None).expect("vol");
    let device = engine.open_volume(volume.id).expect("open");
    // Data in the first two thirds, a hole after.
    let original: Vec<u8> = (0..size)
        .map(|index| {
            if index < 2 << 20 {
                (index / 4096) as u8 | 1
            } else {
                0
            }
        })
        .collect();
    device.write_at(0, &original[..2 << 20]).expect("fill");
    let first = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("create")
        .shadows[0]
        .clone();
    let mut live = original.clone();
    // Sequential writes across calls, 6000 bytes each (not chunk-aligned), up to the end.
    let mut offset = 0;
    while offset < size {
        let length = 6000.min(size - offset);
        let data = vec![(offset / 6000) as u8 | 0x80; length];
        device.write_at(offset as u64, &data).expect("write");
        live[offset..offset + length].copy_from_slice(&data);
        offset += length;
        if offset == 600_000 {
            // A second shadow in the middle of the run.
            engine
                .create_shadow_set(&spec(&[volume.id], Context::Persistent))
                .expect("create");
        }
    }
    let second = engine.shadows()[1].clone();
    let mut second_expected = live.clone();
    second_expected[600_000..].copy_from_slice(&original[600_000..]);
    assert!(read_all(&*engine.open_shadow(first.id).expect("first")) == original);
    assert!(read_all(&*engine.open_shadow(second.id).expect("second")) == second_expected);
    assert!(read_all(&*device) == live);
    assert!(engine.check().is_clean(), "{}", engine.check());
    drop(device);
    drop(engine);
    let engine = Engine::open(&store, options()).expect("reopen");
    assert!(read_all(&*engine.open_shadow(first.id).expect("first")) == original);
    assert!(read_all(&*engine.open_shadow(second.id).expect("second")) == second_expected);
    assert!(read_all(&*engine.open_volume(volume.id).expect("volume")) == live);
    assert!(engine.check().is_clean(), "{}", engine.check());
}

/// A volume changes differential provider only while it has no differential shadows: a
/// redirect-on-write shadow and a copy-on-write one are refused together (with the VSS code),
/// and once the redirect-on-write shadows are gone (folded back), copy-on-write works and
/// survives a restart. A full copy of a redirect-on-write volume holds the live content.
#[test]
fn providers_a_volume_switches_between_redirect_and_copy_on_write_only_when_idle() {
    use diskshadow::engine::ids::ProviderId;
    use diskshadow::engine::provider::{FULL_COPY_PROVIDER_ID, ROW_PROVIDER_ID};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let engine = Engine::open(&store, options()).expect("open");
    let path = image(dir.path(), "a.img", 64 * 1024);
    let volume = engine.register_volume(&path, None).expect("vol");
    let device = engine.open_volume(volume.id).expect("open");
    device.write_at(0, &[1u8; 64 * 1024]).expect("fill");
    let mut row = spec(&[volume.id], Context::Persistent);
    row.volumes[0].provider = Some(ProviderId(ROW_PROVIDER_ID));
    let row_shadow = engine.create_shadow_set(&row).expect("row").shadows[0].id;
    device
        .write_at(4096, &[2u8; 8192])
        .expect("redirected write");
    device.flush().expect("flush");
    assert_eq!(
        std::fs::read(&path).expect("image")[4096],
        1,
        "the image keeps the redirect-on-write shadow's bytes"
    );
    let live = read_all(&*device);
    let mut plex = spec(&[volume.id], Context::Persistent);
    plex.volumes[0].provider = Some(ProviderId(FULL_COPY_PROVIDER_ID));
    plex.extra_attributes = Attributes(Attributes::PLEX);
    let copy = engine.create_shadow_set(&plex).expect("plex").shadows[0].id;
    assert!(read_all(&*engine.open_shadow(copy).expect("copy")) == live);
    engine
        .complete_full_copies(None, &NoProgress)
        .expect("the copy after the commit");
    assert!(read_all(&*engine.open_shadow(copy).expect("copy")) == live);
    let error = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect_err("copy-on-write next to redirect-on-write");
    assert!(
        matches!(error, CreateError::ProviderConflict { .. }),
        "{error}"
    );
    assert_eq!(
        error.vss_code(),
        VssCode::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER
    );
    engine
        .delete_shadows(&DeleteSelector::Id(row_shadow))
        .expect("delete");
    // The fold runs in the background; a caller that needs the image whole waits for it.
    engine.wait_for_folds(&NoProgress).expect("fold");
    assert!(std::fs::read(&path).expect("image") == live, "folded back");
    let cow_shadow = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("copy-on-write after the fold")
        .shadows[0]
        .id;
    device.write_at(0, &[3u8; 4096]).expect("write");
    drop(device);
    drop(engine);
    let engine = Engine::open(&store, options()).expect("reopen");
    assert!(read_all(&*engine.open_shadow(cow_shadow).expect("cow")) == live);
    assert!(read_all(&*engine.open_shadow(copy).expect("copy")) == live);
    assert!(engine.check().is_clean(), "{}", engine.check());
}

/// A redirect-on-write diff area at its limit: a write that needs room deletes the oldest
/// shadow (folding its chunks back into the image, which frees their slots), the newer shadow
/// stays exact, and the live volume has every write.
#[test]
fn providers_redirect_on_write_makes_room_by_folding_the_oldest_shadow() {
    use diskshadow::engine::ids::ProviderId;
    use diskshadow::engine::provider::ROW_PROVIDER_ID;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let engine = Engine::open(&store, options()).expect("open");
    let path = image(dir.path(), "a.img", 16 * 4096);
    let volume = engine
        .register_volume_with_provider(&path, None, Some(ProviderId(ROW_PROVIDER_ID)))
        .expect("vol");
    engine
        .set_max_diff_area(volume.id, Some(4 * 4096))
        .expect("limit");
    let device = engine.open_volume(volume.id).expect("open");
    device.write_at(0, &[1u8; 16 * 4096]).expect("fill");
    let oldest = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("oldest")
        .shadows[0]
        .id;
    device
        .write_at(0, &[2u8; 3 * 4096])
        .expect("three redirected chunks");
    let newer_content = read_all(&*device);
    let newer = engine
        .create_shadow_set(&spec(&[volume.id], Context::Persistent))
        .expect("newer")
        .shadows[0]
        .id;
    // Two new versions do not fit beside the three: the oldest shadow goes.
    device
        .write_at(8 * 4096, &[3u8; 2 * 4096])
        .expect("write that needs room");
    let remaining: Vec<_> = engine.shadows().iter().map(|shadow| shadow.id).collect();
    assert_eq!(remaining, vec![newer], "{oldest} should have been deleted");
    assert!(read_all(&*engine.open_shadow(newer).expect("newer")) == newer_content);
    let mut live = newer_content.clone();
    live[8 * 4096..10 * 4096].fill(3);
    assert!(read_all(&*device) == live);
    assert!(
        std::fs::read(&path).expect("image") == newer_content,
        "the fold put the newer shadow's content in the image"
    );
    let storage = engine.storage();
    assert_eq!(storage[0].used_bytes, 2 * 4096);
    assert!(engine.check().is_clean(), "{}", engine.check());
}

/// Records what a wait for the fold reports.
#[derive(Default)]
struct RecordedProgress {
    events: std::sync::Mutex<Vec<(String, u64)>>,
}

impl diskshadow::engine::progress::Progress for RecordedProgress {
    fn begin(&self, what: &str, total: u64) {
        self.events
            .lock()
            .expect("events")
            .push((what.to_string(), total));
    }
    fn advance(&self, units: u64) {
        self.events
            .lock()
            .expect("events")
            .push(("advance".to_string(), units));
    }
    fn finish(&self) {
        self.events
            .lock()
            .expect("events")
            .push(("finish".to_string(), 0));
    }
}

/// A redirect-on-write volume with `chunks` chunks redirected under a shadow `oldest`, then a
/// newer shadow: returns (engine, volume, image path, oldest, newer, newer's content).
fn row_volume_with_two_shadows(
    dir: &Path,
    options: EngineOptions,
    chunks: usize,
) -> (
    Engine,
    diskshadow::engine::ids::VolumeId,
    PathBuf,
    ShadowId,
    ShadowId,
    Vec<u8>,
) {
    use diskshadow::engine::ids::ProviderId;
    use diskshadow::engine::provider::ROW_PROVIDER_ID;
    let engine = Engine::open(&dir.join("store"), options).expect("open");
    let path = image(dir, "a.img", (chunks as u64 + 8) * u64::from(CHUNK));
    let volume = engine
        .register_volume_with_provider(&path, None, Some(ProviderId(ROW_PROVIDER_ID)))
        .expect("vol")
        .id;
    let device = engine.open_volume(volume).expect("open");
    device
        .write_at(0, &vec![1u8; (chunks + 8) * CHUNK as usize])
        .expect("fill");
    let oldest = engine
        .create_shadow_set(&spec(&[volume], Context::Persistent))
        .expect("oldest")
        .shadows[0]
        .id;
    device
        .write_at(0, &vec![2u8; chunks * CHUNK as usize])
        .expect("redirected");
    let newer_content = read_all(&*device);
    let newer = engine
        .create_shadow_set(&spec(&[volume], Context::Persistent))
        .expect("newer")
        .shadows[0]
        .id;
    device.write_at(0, &[3u8; 100]).expect("after the newer");
    (engine, volume, path, oldest, newer, newer_content)
}

/// Deleting the oldest redirect-on-write shadow does not fold inside the delete: the chunks
/// wait (read where they are) until a caller waits for the fold, which folds them a step at a
/// time with progress; afterwards the image holds the newer shadow and the diff area only
/// what the newer shadow and the live volume need.
#[test]
fn providers_redirect_on_write_delete_oldest_leaves_the_fold_to_a_step_by_step_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = options();
    options.background_folds = false;
    options.fold_step_chunks = 4;
    let (engine, volume, path, oldest, newer, newer_content) =
        row_volume_with_two_shadows(dir.path(), options, 10);
    let device = engine.open_volume(volume).expect("device");
    let live = read_all(&*device);
    engine
        .delete_shadows(&DeleteSelector::Id(oldest))
        .expect("delete");
    assert!(
        std::fs::read(&path).expect("image")[..10 * CHUNK as usize]
            .iter()
            .all(|byte| *byte == 1),
        "the delete itself wrote the image"
    );
    assert!(read_all(&*engine.open_shadow(newer).expect("newer")) == newer_content);
    assert!(read_all(&*device) == live);
    let progress = RecordedProgress::default();
    engine.wait_for_folds(&progress).expect("fold");
    let events = progress.events.lock().expect("events").clone();
    assert_eq!(
        events.first(),
        Some(&("fold".to_string(), 10)),
        "{events:?}"
    );
    let advances: Vec<u64> = events
        .iter()
        .filter(|(what, _)| what == "advance")
        .map(|(_, units)| *units)
        .collect();
    assert_eq!(
        advances,
        vec![4, 4, 2],
        "one report per step of four chunks"
    );
    assert_eq!(events.last(), Some(&("finish".to_string(), 0)));
    assert!(std::fs::read(&path).expect("image") == newer_content);
    assert!(read_all(&*engine.open_shadow(newer).expect("newer")) == newer_content);
    assert!(read_all(&*device) == live);
    assert_eq!(engine.storage()[0].used_bytes, u64::from(CHUNK));
    assert!(engine.check().is_clean(), "{}", engine.check());
}

/// The background fold: after the delete returns, writes and reads of the live volume and of
/// the remaining shadow go on while the worker folds one chunk per step; every read is exact
/// throughout, and the fold ends on its own (nobody waits for it).
#[test]
fn providers_redirect_on_write_folds_in_the_background_while_io_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = options();
    options.fold_step_chunks = 1;
    let chunks = 64;
    let (engine, volume, path, oldest, newer, newer_content) =
        row_volume_with_two_shadows(dir.path(), options, chunks);
    let device = engine.open_volume(volume).expect("device");
    let shadow = engine.open_shadow(newer).expect("newer");
    let mut live = read_all(&*device);
    engine
        .delete_shadows(&DeleteSelector::Id(oldest))
        .expect("delete");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut round = 0usize;
    loop {
        // A write to a chunk that may still wait for the fold, or be folded already.
        let at = (round * 7919 % (chunks * CHUNK as usize)) as u64;
        let data = vec![(round % 200) as u8 + 10; 1000];
        device.write_at(at, &data).expect("write during the fold");
        live[at as usize..at as usize + data.len()].copy_from_slice(&data);
        assert!(read_all(&*device) == live, "live volume, round {round}");
        assert!(read_all(&*shadow) == newer_content, "shadow, round {round}");
        round += 1;
        // Folded: the diff area holds only the newer shadow's and the live volume's versions.
        let used = engine.storage()[0].used_bytes;
        if used <= (chunks as u64) * u64::from(CHUNK) && engine.check().is_clean() {
            let image = std::fs::read(&path).expect("image");
            if image[..chunks * CHUNK as usize] == newer_content[..chunks * CHUNK as usize] {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the background fold did not end (used {used} bytes)"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    device.flush().expect("flush");
    drop(shadow);
    drop(device);
    drop(engine);
    let engine = Engine::open(&dir.path().join("store"), self::options()).expect("reopen");
    assert!(read_all(&*engine.open_shadow(newer).expect("newer")) == newer_content);
    assert!(read_all(&*engine.open_volume(volume).expect("live")) == live);
    assert!(engine.check().is_clean(), "{}", engine.check());
}

/// Deleting the last redirect-on-write shadow and closing the engine at once: the close
/// finishes the fold, so that the image file is the volume for any other tool.
#[test]
fn providers_redirect_on_write_close_finishes_the_fold_into_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, volume, path, _, _, _) = row_volume_with_two_shadows(dir.path(), options(), 32);
    let live = read_all(&*engine.open_volume(volume).expect("device"));
    engine
        .delete_shadows(&DeleteSelector::All)
        .expect("delete all");
    drop(engine);
    assert!(std::fs::read(&path).expect("image") == live);
}
