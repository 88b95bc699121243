use super::*;
use crate::engine::store::RealBackend;

fn volume(index: u128) -> VolumeRecord {
    VolumeRecord {
        id: VolumeId(uuid::Uuid::from_u128(index)),
        path: PathBuf::from(format!(
            "/images/{}/{index}.img",
            "long-directory-name".repeat(50)
        )),
        size: 1 << 20,
        chunk_size: 65536,
        max_diff_area_bytes: None,
        fingerprint: None,
        writing: false,
        provider: None,
        index_log_bytes: None,
        read_only: false,
    }
}

#[test]
fn commits_survive_reopen_and_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn DurableBackend> = Arc::new(RealBackend);
    let mut catalog = Catalog::open(backend.clone(), dir.path()).expect("open");
    for index in 0..400u128 {
        catalog
            .commit(vec![CatalogChange::RegisterVolume(volume(index))])
            .expect("commit");
    }
    assert!(
        catalog.generation > 0,
        "the journal was compacted at least once"
    );
    catalog
        .commit(vec![CatalogChange::MapDrive {
            letter: 'C',
            target: DriveTarget::Directory("/x".into()),
        }])
        .expect("commit");
    let expected = catalog.state().clone();
    drop(catalog);
    let reopened = Catalog::open(backend, dir.path()).expect("reopen");
    assert_eq!(reopened.state(), &expected);
    assert_eq!(reopened.state().volumes.len(), 400);
}

#[test]
fn a_torn_last_record_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn DurableBackend> = Arc::new(RealBackend);
    let mut catalog = Catalog::open(backend.clone(), dir.path()).expect("open");
    catalog
        .commit(vec![CatalogChange::RegisterVolume(volume(1))])
        .expect("commit");
    catalog
        .commit(vec![CatalogChange::RegisterVolume(volume(2))])
        .expect("commit");
    drop(catalog);
    let journal = Catalog::journal_path(dir.path());
    let length = std::fs::metadata(&journal).expect("meta").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .expect("open");
    file.set_len(length - 3).expect("tear");
    let reopened = Catalog::open(backend, dir.path()).expect("reopen");
    assert_eq!(reopened.state().volumes.len(), 1);
}

#[test]
fn a_damaged_record_followed_by_a_valid_one_is_refused_and_nothing_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn DurableBackend> = Arc::new(RealBackend);
    let mut catalog = Catalog::open(backend.clone(), dir.path()).expect("open");
    for index in 1..=3 {
        catalog
            .commit(vec![CatalogChange::RegisterVolume(volume(index))])
            .expect("commit");
    }
    drop(catalog);
    let journal = Catalog::journal_path(dir.path());
    let mut bytes = std::fs::read(&journal).expect("read");
    let length = bytes.len();
    bytes[RECORD_HEADER_BYTES + 10] ^= 0x04;
    std::fs::write(&journal, &bytes).expect("write");
    for read_only in [true, false] {
        match Catalog::open_with(backend.clone(), dir.path(), read_only) {
            Err(CatalogError::Corrupt { path, detail }) => {
                assert_eq!(path, journal);
                assert!(detail.contains("byte 0"), "{detail}");
                assert!(detail.contains("valid record follows"), "{detail}");
            }
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("a damaged journal was accepted"),
        }
        assert_eq!(std::fs::read(&journal).expect("read").len(), length);
    }
}

#[test]
fn a_base_whose_state_or_generation_changed_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: Arc<dyn DurableBackend> = Arc::new(RealBackend);
    let mut catalog = Catalog::open(backend.clone(), dir.path()).expect("open");
    catalog
        .commit(vec![CatalogChange::RegisterVolume(volume(1))])
        .expect("commit");
    catalog.compact().expect("compact");
    drop(catalog);
    let base = Catalog::base_path(dir.path());
    let original = std::fs::read_to_string(&base).expect("read");
    for (from, to) in [
        ("\"size\":1048576", "\"size\":1048577"),
        ("\"generation\":1", "\"generation\":3"),
    ] {
        assert!(original.contains(from), "{original}");
        std::fs::write(&base, original.replace(from, to)).expect("write");
        match Catalog::open(backend.clone(), dir.path()) {
            Err(CatalogError::Corrupt { path, detail }) => {
                assert_eq!(path, base);
                assert!(detail.contains("checksum"), "{detail}");
            }
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("a changed base was accepted ({from} -> {to})"),
        }
    }
    std::fs::write(&base, &original).expect("restore");
    assert_eq!(
        Catalog::open(backend, dir.path())
            .expect("the original opens")
            .state()
            .volumes
            .len(),
        1
    );
}

#[test]
fn a_crash_at_any_sync_point_of_commit_and_compaction_leaves_before_or_after() {
    use crate::engine::store::{CrashMode, FaultBackend};
    let mut crash_point = 0;
    loop {
        let dir = tempfile::tempdir().expect("tempdir");
        let real: Arc<dyn DurableBackend> = Arc::new(RealBackend);
        let mut catalog = Catalog::open(real.clone(), dir.path()).expect("open");
        for index in 0..3u128 {
            catalog
                .commit(vec![CatalogChange::RegisterVolume(volume(index))])
                .expect("commit");
        }
        let before = catalog.state().clone();
        drop(catalog);

        let fault = FaultBackend::new(Some(crash_point), CrashMode::DropUnsynced);
        let mut catalog = Catalog::open(Arc::new(fault.clone()), dir.path()).expect("open");
        let outcome = catalog
            .commit(vec![CatalogChange::RegisterVolume(volume(3))])
            .and_then(|()| catalog.compact())
            .and_then(|()| catalog.commit(vec![CatalogChange::UnmapDrive { letter: 'Z' }]));
        let after = {
            let mut state = before.clone();
            state.apply(&CatalogChange::RegisterVolume(volume(3)));
            state
        };
        drop(catalog);
        let reopened = Catalog::open(real, dir.path()).expect("reopen");
        assert!(
            reopened.state() == &before || reopened.state() == &after,
            "crash at sync point {crash_point}: the catalog is neither the state before nor after"
        );
        if outcome.is_ok() {
            assert!(!fault.has_crashed());
            assert_eq!(reopened.state(), &after);
            break;
        }
        crash_point += 1;
    }
    assert!(
        crash_point >= 4,
        "commit, compaction and the next commit have several sync points"
    );
}

/// The catalog's format, pinned: a state with every kind of value the catalog shares with the
/// API (drive targets, an exposure, a context, attribute bits, an owner) is written exactly so,
/// and read back equal. A change to an API or wire type that would change what the catalog
/// writes fails here, not silently in users' stores.
#[test]
fn the_catalog_format_does_not_follow_the_api_types() {
    use crate::engine::model::{DriveTarget, Exposure, ExposureKind, RequesterId};
    use chrono::TimeZone;

    let shadow = ShadowRecord {
        id: ShadowId(uuid::Uuid::from_u128(0x11)),
        set_id: ShadowSetId(uuid::Uuid::from_u128(0x22)),
        original_count: 1,
        volume: VolumeId(uuid::Uuid::from_u128(0x33)),
        volume_size: 1 << 20,
        created_at: Utc.with_ymd_and_hms(2026, 12, 8, 1, 2, 3).unwrap(),
        sequence: 7,
        device_number: 3,
        originating_machine: "host".into(),
        service_machine: "host".into(),
        exposure: Some(Exposure {
            kind: ExposureKind::Share,
            name: "\\\\host\\s".into(),
            location: "nbd+unix:///s?socket=/run/s".into(),
        }),
        provider_id: ProviderId(uuid::Uuid::from_u128(0x44)),
        attributes: Attributes(0x0002_0009),
        context: Context::PersistentNoWriters,
        owner: Some(RequesterId(5)),
        suspect: None,
        in_creation: false,
        copy_pending: true,
    };
    let mut state = CatalogState::new();
    state
        .volumes
        .insert(VolumeId(uuid::Uuid::from_u128(0x33)), {
            let mut record = volume(0x33);
            record.path = "/images/c.img".into();
            record
        });
    state
        .drives
        .insert('C', DriveTarget::Volume("/images/c.img".into()));
    state
        .drives
        .insert('Z', DriveTarget::Directory("/mnt/z".into()));
    state.shadows.insert(shadow.id, shadow.clone());

    let expected = serde_json::json!({
        "volumes": {
            "00000000-0000-0000-0000-000000000033": {
                "id": "00000000-0000-0000-0000-000000000033",
                "path": "/images/c.img",
                "size": 1048576,
                "chunk_size": 65536,
                "max_diff_area_bytes": null,
                "fingerprint": null,
                "writing": false,
                "index_log_bytes": null,
            }
        },
        "drives": {
            "C": { "volume": "/images/c.img" },
            "Z": { "directory": "/mnt/z" },
        },
        "shadows": {
            "00000000-0000-0000-0000-000000000011": {
                "id": "00000000-0000-0000-0000-000000000011",
                "set_id": "00000000-0000-0000-0000-000000000022",
                "original_count": 1,
                "volume": "00000000-0000-0000-0000-000000000033",
                "volume_size": 1048576,
                "created_at": "2026-12-08T01:02:03Z",
                "sequence": 7,
                "device_number": 3,
                "originating_machine": "host",
                "service_machine": "host",
                "exposure": {
                    "kind": "share",
                    "name": "\\\\host\\s",
                    "location": "nbd+unix:///s?socket=/run/s",
                },
                "provider_id": "00000000-0000-0000-0000-000000000044",
                "attributes": 0x0002_0009,
                "context": "persistent_no_writers",
                "owner": 5,
                "suspect": null,
                "copy_pending": true,
            }
        },
        "next_sequence": 1,
        "next_device_number": 1,
        "reverts_in_progress": [],
    });
    let written = serde_json::to_value(&state).expect("serialize");
    assert_eq!(written, expected);
    let read: CatalogState = serde_json::from_value(expected).expect("deserialize");
    assert_eq!(read, state);

    let changes = vec![
        CatalogChange::MapDrive {
            letter: 'Y',
            target: DriveTarget::Directory("/mnt/y".into()),
        },
        CatalogChange::SetExposure {
            shadow: shadow.id,
            exposure: None,
        },
    ];
    let written = serde_json::to_value(&changes).expect("serialize");
    assert_eq!(
        written,
        serde_json::json!([
            { "map_drive": { "letter": "Y", "target": { "directory": "/mnt/y" } } },
            { "set_exposure": { "shadow": "00000000-0000-0000-0000-000000000011", "exposure": null } },
        ])
    );
    let read: Vec<CatalogChange> = serde_json::from_value(written).expect("deserialize");
    assert_eq!(read, changes);
}
