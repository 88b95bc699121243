//! The Ceph RBD provider's cluster side against a real one-node cluster (`support::ceph`):
//! a set of two images is ONE group snapshot and each shadow reads back byte-exact while the
//! live images change; the group rule; a set of one image is an image snapshot; delete, break
//! (clone + flatten, or a copy of a group snapshot), what `import` finds; and the faults: a
//! snapshot removed behind diskshadow's back, a snapshot no shadow owns (a create cut off), a
//! cluster that is down, an image without `layering`.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod support;

use diskshadow::engine::array::RbdPool;
use diskshadow::engine::ids::{ProviderId, ShadowId, ShadowSetId};
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::rbd::features;
use diskshadow::engine::rbd::provider::{
    break_off, group_snapshot_name, image_snapshot_name, leaked_snapshots, locate, open_snapshot,
    remove_snapshot, snapshot_set, transported, unsnapshot_set, volume_path, Member, Pools,
    RBD_PROVIDER_ID,
};
use diskshadow::engine::transport::ManifestShadow;
use support::ceph::{self, TestCluster};

const SIZE: u64 = 4 << 20;

fn pattern(length: usize, seed: u32) -> Vec<u8> {
    (0..length as u32)
        .map(|index| (index.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

fn access(cluster: &TestCluster) -> BTreeMap<String, RbdPool> {
    BTreeMap::from([(
        cluster.pool.clone(),
        RbdPool {
            pool: cluster.pool.clone(),
            conf: cluster.conf.clone(),
            client_id: None,
        },
    )])
}

/// A fresh image holding `data`, and its volume path.
fn image_with(cluster: &TestCluster, prefix: &str, data: &[u8], features: u64) -> PathBuf {
    let name = cluster.image(prefix, data.len() as u64, features);
    let pool = cluster.connect().pool(&cluster.pool).expect("pool");
    let image = pool.open(&name).expect("open");
    image.write_at(data, 0).expect("write");
    image.flush().expect("flush");
    volume_path(&cluster.pool, &name)
}

fn image_name(path: &std::path::Path) -> String {
    path.to_string_lossy()
        .rsplit('/')
        .next()
        .expect("image name")
        .to_string()
}

fn read_all(file: &dyn diskshadow::engine::store::DurableFile, size: u64) -> Vec<u8> {
    let mut buffer = vec![0u8; size as usize];
    let mut done = 0;
    while done < buffer.len() {
        let read = file
            .read_at(done as u64, &mut buffer[done..])
            .expect("read");
        assert!(read > 0, "short read at {done}");
        done += read;
    }
    buffer
}

fn live_write(cluster: &TestCluster, path: &std::path::Path, offset: u64, data: &[u8]) {
    let pool = cluster.connect().pool(&cluster.pool).expect("pool");
    let image = pool.open(&image_name(path)).expect("open");
    image.write_at(data, offset).expect("write");
    image.flush().expect("flush");
}

fn live_read(cluster: &TestCluster, path: &std::path::Path) -> Vec<u8> {
    let pool = cluster.connect().pool(&cluster.pool).expect("pool");
    let image = pool.open_read_only(&image_name(path)).expect("open");
    let size = image.size().expect("size");
    let mut buffer = vec![0u8; size as usize];
    let mut done = 0;
    while done < buffer.len() {
        let read = image
            .read_at(&mut buffer[done..], done as u64)
            .expect("read");
        assert!(read > 0);
        done += read;
    }
    buffer
}

fn ids() -> (ShadowId, ShadowId, ShadowSetId) {
    (
        ShadowId(uuid::Uuid::new_v4()),
        ShadowId(uuid::Uuid::new_v4()),
        ShadowSetId(uuid::Uuid::new_v4()),
    )
}

fn group_snaps(cluster: &TestCluster, group: &str) -> String {
    String::from_utf8_lossy(&cluster.rbd(&[
        "group",
        "snap",
        "ls",
        &format!("{}/{group}", cluster.pool),
    ]))
    .to_string()
}

#[test]
fn ceph_provider_a_set_of_two_images_is_one_group_snapshot_read_back_while_they_change() {
    let Some(cluster) = ceph::cluster() else {
        return;
    };
    let pools_map = access(cluster);
    let pools = Pools(&pools_map);
    let before_db = pattern(SIZE as usize, 1);
    let before_log = pattern(SIZE as usize, 2);
    let db = image_with(cluster, "group-db", &before_db, features::DEFAULT);
    let log = image_with(cluster, "group-log", &before_log, features::DEFAULT);
    let (shadow_db, shadow_log, set) = ids();
    let members = [
        Member {
            path: &db,
            shadow: shadow_db,
            set,
            transportable: true,
        },
        Member {
            path: &log,
            shadow: shadow_log,
            set,
            transportable: true,
        },
    ];
    snapshot_set(&pools, &members).expect("group snapshot");

    // One group snapshot, of a group holding exactly the two images.
    let (pool, db_snapshot) = locate(&pools, &db, shadow_db, set).expect("db snapshot");
    let (group, group_snapshot) = db_snapshot.group.clone().expect("a group snapshot");
    assert_eq!(group_snapshot, group_snapshot_name(set, true));
    let listed = group_snaps(cluster, &group);
    assert_eq!(listed.matches("diskshadow.").count(), 1, "{listed}");
    let members_listed = String::from_utf8_lossy(&cluster.rbd(&[
        "group",
        "image",
        "ls",
        &format!("{}/{group}", cluster.pool),
    ]))
    .to_string();
    assert!(
        members_listed.contains(&image_name(&db)) && members_listed.contains(&image_name(&log)),
        "{members_listed}"
    );
    assert!(
        db_snapshot.to_string().contains(&format!(
            "(group {}/{group}@{group_snapshot})",
            cluster.pool
        )),
        "{db_snapshot}"
    );

    // The live images change; each shadow still reads as it was.
    live_write(cluster, &db, 0, &[0xee; 65536]);
    live_write(cluster, &log, SIZE - 4096, &[0xdd; 4096]);
    let (_, log_snapshot) = locate(&pools, &log, shadow_log, set).expect("log snapshot");
    assert_eq!(log_snapshot.group, db_snapshot.group);
    let db_file = open_snapshot(&pool, &db_snapshot).expect("open db shadow");
    let log_file = open_snapshot(&pool, &log_snapshot).expect("open log shadow");
    assert!(read_all(&*db_file, SIZE) == before_db);
    assert!(read_all(&*log_file, SIZE) == before_log);
    assert!(
        live_read(cluster, &db) != before_db,
        "the live image changed"
    );
    assert!(db_file.write_at(0, b"x").is_err(), "a shadow is read-only");

    // What `import` on another store finds from the metadata cabinet.
    let manifest = ManifestShadow {
        shadow_id: shadow_log,
        alias: None,
        original_volume: log.display().to_string(),
        provider_id: ProviderId(RBD_PROVIDER_ID),
    };
    let (volume, size) = transported(&pools, &manifest, set).expect("transported");
    assert_eq!((volume, size), (log.clone(), SIZE));

    // A second set of the same images reuses their group.
    let (second_db, second_log, second_set) = ids();
    snapshot_set(
        &pools,
        &[
            Member {
                path: &db,
                shadow: second_db,
                set: second_set,
                transportable: false,
            },
            Member {
                path: &log,
                shadow: second_log,
                set: second_set,
                transportable: false,
            },
        ],
    )
    .expect("second group snapshot");
    let listed = group_snaps(cluster, &group);
    assert_eq!(listed.matches("diskshadow.").count(), 2, "{listed}");

    // An image in that group cannot join a set with another image: the group rule.
    let other = image_with(
        cluster,
        "group-other",
        &pattern(SIZE as usize, 3),
        features::DEFAULT,
    );
    let (third_db, third_other, third_set) = ids();
    let refused = snapshot_set(
        &pools,
        &[
            Member {
                path: &db,
                shadow: third_db,
                set: third_set,
                transportable: false,
            },
            Member {
                path: &other,
                shadow: third_other,
                set: third_set,
                transportable: false,
            },
        ],
    )
    .expect_err("an image in another group is refused");
    assert!(
        refused.to_string().contains(&group) && refused.to_string().contains("one group only"),
        "{refused}"
    );

    // Delete: the group snapshot goes with the last shadow of its set.
    remove_snapshot(&pool, &db_snapshot, false).expect("not the last");
    assert!(group_snaps(cluster, &group).contains(&group_snapshot));
    remove_snapshot(&pool, &log_snapshot, true).expect("the last");
    let listed = group_snaps(cluster, &group);
    assert!(!listed.contains(&group_snapshot), "{listed}");
    let gone = locate(&pools, &db, shadow_db, set).expect_err("deleted");
    assert_eq!(gone.kind(), io::ErrorKind::NotFound);
}

#[test]
fn ceph_provider_a_set_of_one_image_is_an_image_snapshot_and_abort_removes_it() {
    let Some(cluster) = ceph::cluster() else {
        return;
    };
    let pools_map = access(cluster);
    let pools = Pools(&pools_map);
    let before = pattern(SIZE as usize, 4);
    let volume = image_with(cluster, "single", &before, features::DEFAULT);
    let (shadow, _, set) = ids();
    let member = [Member {
        path: &volume,
        shadow,
        set,
        transportable: false,
    }];
    snapshot_set(&pools, &member).expect("image snapshot");
    let (pool, snapshot) = locate(&pools, &volume, shadow, set).expect("found");
    assert_eq!(snapshot.group, None);
    assert_eq!(snapshot.snap_name, image_snapshot_name(shadow, false));
    assert_eq!(
        snapshot.to_string(),
        format!(
            "{}/{}@{}",
            cluster.pool,
            image_name(&volume),
            snapshot.snap_name
        )
    );
    live_write(cluster, &volume, 8192, &[1u8; 8192]);
    assert!(read_all(&*open_snapshot(&pool, &snapshot).expect("open"), SIZE) == before);
    // The set failed after its preparation: the abort removes the snapshot.
    unsnapshot_set(&pools, &member).expect("abort");
    let snaps = String::from_utf8_lossy(&cluster.rbd(&[
        "snap",
        "ls",
        &format!("{}/{}", cluster.pool, image_name(&volume)),
    ]))
    .to_string();
    assert!(!snaps.contains("diskshadow."), "{snaps}");
}

#[test]
fn ceph_provider_break_clones_and_flattens_an_image_snapshot_and_copies_a_group_one() {
    let Some(cluster) = ceph::cluster() else {
        return;
    };
    let pools_map = access(cluster);
    let pools = Pools(&pools_map);
    let before = pattern(SIZE as usize, 5);
    let volume = image_with(cluster, "break-one", &before, features::DEFAULT);
    let (shadow, _, set) = ids();
    snapshot_set(
        &pools,
        &[Member {
            path: &volume,
            shadow,
            set,
            transportable: true,
        }],
    )
    .expect("snapshot");
    live_write(cluster, &volume, 0, &[7u8; 4096]);
    let (pool, snapshot) = locate(&pools, &volume, shadow, set).expect("found");
    let broken = break_off(&pool, &snapshot, shadow, &NoProgress).expect("clone + flatten");
    assert!(live_read(cluster, &broken) == before);
    let info = String::from_utf8_lossy(
        &cluster.rbd(&["info", &format!("{}/{}", cluster.pool, image_name(&broken))]),
    )
    .to_string();
    assert!(!info.contains("parent:"), "flattened: {info}");
    // The snapshot is no longer protected: it can be removed with the shadow.
    remove_snapshot(&pool, &snapshot, true).expect("remove after break");

    // A group snapshot's member is copied (extents only) into a new image.
    let first = image_with(
        cluster,
        "break-a",
        &pattern(SIZE as usize, 6),
        features::DEFAULT,
    );
    let second_data = {
        let mut data = vec![0u8; SIZE as usize];
        data[SIZE as usize / 2..].copy_from_slice(&pattern(SIZE as usize / 2, 7));
        data
    };
    let second = image_with(cluster, "break-b", &second_data, features::DEFAULT);
    let (shadow_a, shadow_b, group_set) = ids();
    snapshot_set(
        &pools,
        &[
            Member {
                path: &first,
                shadow: shadow_a,
                set: group_set,
                transportable: true,
            },
            Member {
                path: &second,
                shadow: shadow_b,
                set: group_set,
                transportable: true,
            },
        ],
    )
    .expect("group snapshot");
    live_write(cluster, &second, SIZE - 65536, &[9u8; 65536]);
    let (pool, snapshot) = locate(&pools, &second, shadow_b, group_set).expect("found");
    let broken = break_off(&pool, &snapshot, shadow_b, &NoProgress).expect("copy");
    assert!(live_read(cluster, &broken) == second_data);
}

#[test]
fn ceph_provider_break_of_an_image_without_layering_says_so() {
    let Some(cluster) = ceph::cluster() else {
        return;
    };
    let pools_map = access(cluster);
    let pools = Pools(&pools_map);
    let volume = image_with(
        cluster,
        "flat",
        &pattern(SIZE as usize, 8),
        features::EXCLUSIVE_LOCK,
    );
    let (shadow, _, set) = ids();
    snapshot_set(
        &pools,
        &[Member {
            path: &volume,
            shadow,
            set,
            transportable: true,
        }],
    )
    .expect("snapshot");
    let (pool, snapshot) = locate(&pools, &volume, shadow, set).expect("found");
    let error = break_off(&pool, &snapshot, shadow, &NoProgress).expect_err("no layering");
    assert_eq!(error.kind(), io::ErrorKind::Unsupported);
    assert!(error.to_string().contains("layering"), "{error}");
    let images = String::from_utf8_lossy(&cluster.rbd(&["ls", &cluster.pool])).to_string();
    assert!(
        !images.contains(&format!("{}.shadow-", image_name(&volume))),
        "no half-made image is left: {images}"
    );
}

#[test]
fn ceph_provider_a_snapshot_removed_behind_its_back_is_missing() {
    let Some(cluster) = ceph::cluster() else {
        return;
    };
    let pools_map = access(cluster);
    let pools = Pools(&pools_map);
    let volume = image_with(
        cluster,
        "removed",
        &pattern(SIZE as usize, 9),
        features::DEFAULT,
    );
    let (shadow, _, set) = ids();
    snapshot_set(
        &pools,
        &[Member {
            path: &volume,
            shadow,
            set,
            transportable: true,
        }],
    )
    .expect("snapshot");
    cluster.rbd(&[
        "snap",
        "rm",
        "--no-progress",
        &format!(
            "{}/{}@{}",
            cluster.pool,
            image_name(&volume),
            image_snapshot_name(shadow, true)
        ),
    ]);
    let error = locate(&pools, &volume, shadow, set).expect_err("missing");
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    assert!(
        error.to_string().contains("RBD snapshot is missing"),
        "{error}"
    );
    let manifest = ManifestShadow {
        shadow_id: shadow,
        alias: None,
        original_volume: volume.display().to_string(),
        provider_id: ProviderId(RBD_PROVIDER_ID),
    };
    let refused = transported(&pools, &manifest, set).expect_err("nothing to import");
    assert!(refused.contains("missing"), "{refused}");
}

#[test]
fn ceph_provider_a_snapshot_no_shadow_owns_is_reported_and_kept() {
    let Some(cluster) = ceph::cluster() else {
        return;
    };
    let pools_map = access(cluster);
    let pools = Pools(&pools_map);
    let first = image_with(
        cluster,
        "leak-a",
        &pattern(SIZE as usize, 10),
        features::DEFAULT,
    );
    let second = image_with(
        cluster,
        "leak-b",
        &pattern(SIZE as usize, 11),
        features::DEFAULT,
    );
    let (shadow_a, shadow_b, set) = ids();
    // A create cut off after its group snapshot, before the store's commit.
    snapshot_set(
        &pools,
        &[
            Member {
                path: &first,
                shadow: shadow_a,
                set,
                transportable: false,
            },
            Member {
                path: &second,
                shadow: shadow_b,
                set,
                transportable: false,
            },
        ],
    )
    .expect("group snapshot");
    let volumes = [first.clone(), second.clone()];
    let problems = leaked_snapshots(
        &pools,
        &mut volumes.iter().map(PathBuf::as_path),
        &|_| false,
        &|_| false,
    );
    assert_eq!(
        problems.len(),
        1,
        "one report per group snapshot: {problems:?}"
    );
    assert!(
        problems[0].contains(&group_snapshot_name(set, false))
            && problems[0].contains("belongs to no shadow copy set"),
        "{problems:?}"
    );
    // Owned by the store: nothing to report.
    let owned = leaked_snapshots(
        &pools,
        &mut volumes.iter().map(PathBuf::as_path),
        &|_| false,
        &|known| known == set,
    );
    assert!(owned.is_empty(), "{owned:?}");
    // Reported, never removed.
    assert!(locate(&pools, &first, shadow_a, set).is_ok());
}

#[test]
fn ceph_provider_a_cluster_that_is_down_fails_within_seconds() {
    let Some(cluster) = ceph::cluster() else {
        return;
    };
    let work = support::scratch("ceph-provider-down");
    let pools_map = BTreeMap::from([(
        cluster.pool.clone(),
        RbdPool {
            pool: cluster.pool.clone(),
            conf: cluster.down_conf(&work),
            client_id: None,
        },
    )]);
    let pools = Pools(&pools_map);
    let volume = volume_path(&cluster.pool, "anything");
    let (shadow, _, set) = ids();
    let started = Instant::now();
    let error = snapshot_set(
        &pools,
        &[Member {
            path: &volume,
            shadow,
            set,
            transportable: false,
        }],
    )
    .expect_err("the cluster is down");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        error.to_string().contains("cannot reach the Ceph cluster"),
        "{error}"
    );
    // A pool the store is not attached to.
    let error = Pools(&BTreeMap::new())
        .pool(&cluster.pool)
        .expect_err("not attached");
    assert!(error.to_string().contains("not attached"), "{error}");
}
