//! The RBD library (`engine::rbd`) against a real one-node Ceph cluster
//! (`support::ceph`): images, snapshots, group snapshots, clones, allocation, and its errors.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use diskshadow::engine::progress::Progress;
use diskshadow::engine::rbd::{features, Ceph, Cluster, RbdError, SnapNamespace, LIBRADOS};
use diskshadow::engine::vss::VssCode;
use diskshadow::service::way_out::EngineFailure;

const MIB: u64 = 1 << 20;

/// Records progress reports: `(what, total)` per begin, units advanced, finishes.
#[derive(Default)]
struct Recorder {
    begun: Mutex<Vec<(String, u64)>>,
    advanced: Mutex<u64>,
    finished: Mutex<u32>,
}

impl Progress for Recorder {
    fn begin(&self, what: &str, total: u64) {
        self.begun.lock().unwrap().push((what.to_string(), total));
    }
    fn advance(&self, units: u64) {
        *self.advanced.lock().unwrap() += units;
    }
    fn finish(&self) {
        *self.finished.lock().unwrap() += 1;
    }
}

fn pattern(seed: u8, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| seed.wrapping_add((index % 251) as u8))
        .collect()
}

fn read(image: &diskshadow::engine::rbd::Image, offset: u64, length: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; length];
    let count = image.read_at(&mut buffer, offset).expect("read");
    assert_eq!(count, length, "short read of {image:?}");
    buffer
}

/// Asserts `actual == expected`, describing the data (not listing it) when they differ.
fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    assert!(
        actual == expected,
        "{what}: read {}, expected {}",
        support::describe(actual),
        support::describe(expected)
    );
}

#[test]
fn missing_librbd_is_a_clear_error() {
    let error = Ceph::load_files("librbd-missing.so.1", LIBRADOS)
        .expect_err("a missing librbd fails to load");
    assert_eq!(
        error.to_string(),
        "librbd is not installed (librbd-missing.so.1 not found)"
    );
    assert_eq!(
        error.way_out().as_deref(),
        Some("apt-get install librbd1"),
        "the service shows how to install it"
    );
    assert_eq!(error.vss_code(), VssCode::VSS_E_NOT_SUPPORTED);
}

#[test]
fn image_write_read_snapshot_and_rollback() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let name = ceph.image("plain", 32 * MIB, features::DEFAULT);
    let cluster = ceph.connect();
    let pool = cluster.pool(&ceph.pool).expect("pool");
    assert!(pool.list_images().expect("list").contains(&name));

    let image = pool.open(&name).expect("open");
    assert_eq!(image.size().expect("size"), 32 * MIB);
    let bits = image.features().expect("features");
    assert_eq!(bits & features::LAYERING, features::LAYERING);
    assert!(features::names(bits).contains(&"layering"));

    let first = pattern(1, 3 * MIB as usize + 17);
    image.write_at(&first, 5 * MIB - 3).expect("write");
    image.flush().expect("flush");
    assert_same(&read(&image, 5 * MIB - 3, first.len()), &first, "data");
    // Reading past the end stops at the end.
    let mut tail = vec![0u8; 8192];
    assert_eq!(
        image
            .read_at(&mut tail, 32 * MIB - 4096)
            .expect("read tail"),
        4096
    );

    image.snap_create("before").expect("snap create");
    let second = pattern(99, MIB as usize);
    image.write_at(&second, 5 * MIB).expect("overwrite");
    image.write_zeroes(6 * MIB, MIB).expect("write zeroes");

    let snaps = image.snaps().expect("snaps");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].name, "before");
    assert_eq!(snaps[0].namespace, SnapNamespace::User);
    assert_eq!(snaps[0].size, 32 * MIB);
    let at_snapshot = pool
        .open_at_snap_id(&name, snaps[0].id)
        .expect("open at snap");
    assert_same(
        &read(&at_snapshot, 5 * MIB - 3, first.len()),
        &first,
        "data",
    );
    assert_same(&read(&image, 5 * MIB, second.len()), &second, "data");
    assert_same(
        &read(&image, 6 * MIB, MIB as usize),
        &vec![0u8; MIB as usize],
        "data",
    );
    // The snapshot is read-only.
    let refused = at_snapshot
        .write_at(b"x", 0)
        .expect_err("write to a snapshot fails");
    assert_eq!(refused.errno(), Some(libc::EROFS), "{refused}");
    drop(at_snapshot);

    let recorder = Recorder::default();
    image.snap_rollback("before", &recorder).expect("rollback");
    assert_same(&read(&image, 5 * MIB - 3, first.len()), &first, "data");
    assert_eq!(*recorder.finished.lock().unwrap(), 1);
    assert!(recorder.begun.lock().unwrap()[0].0.contains(&name));

    let missing = image.snap_remove("nope").expect_err("no such snapshot");
    assert!(missing.is_not_found(), "{missing}");
    assert!(
        missing.to_string().contains(&format!("rbd/{name}@nope")),
        "{missing}"
    );
    image.snap_remove("before").expect("snap remove");
    assert!(image.snaps().expect("snaps").is_empty());
    drop(image);
    pool.remove_image(&name).expect("remove");
    assert!(!pool.list_images().expect("list").contains(&name));
}

#[test]
fn group_snapshot_reads_each_image_at_its_snap_id_while_live_images_change() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let cluster = ceph.connect();
    let pool = cluster.pool(&ceph.pool).expect("pool");
    let first = ceph.image("group-a", 16 * MIB, features::DEFAULT);
    let second = ceph.image("group-b", 8 * MIB, features::LAYERING);
    let group = ceph.unique("group");
    pool.create_group(&group).expect("create group");
    assert!(pool.list_groups().expect("groups").contains(&group));
    pool.group_add_image(&group, &first).expect("add a");
    pool.group_add_image(&group, &second).expect("add b");
    let members = pool.group_images(&group).expect("members");
    let mut names: Vec<&str> = members.iter().map(|member| member.image.as_str()).collect();
    names.sort();
    assert_eq!(names, [first.as_str(), second.as_str()]);
    assert!(members
        .iter()
        .all(|member| member.attached && member.pool_id == pool.id()));

    // An image belongs to one group at most.
    let other_group = ceph.unique("group");
    pool.create_group(&other_group).expect("create other group");
    let twice = pool
        .group_add_image(&other_group, &first)
        .expect_err("second group refused");
    assert_eq!(twice.errno(), Some(libc::EEXIST), "{twice}");
    pool.remove_group(&other_group).expect("remove other group");

    let live_a = pool.open(&first).expect("open a");
    let live_b = pool.open(&second).expect("open b");
    let old_a = pattern(3, 2 * MIB as usize);
    let old_b = pattern(7, MIB as usize);
    live_a.write_at(&old_a, MIB).expect("write a");
    live_b.write_at(&old_b, 0).expect("write b");

    pool.group_snap_create(&group, "set1").expect("group snap");
    let snaps = pool.group_snaps(&group).expect("group snaps");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].name, "set1");
    assert!(snaps[0].complete);

    let snap_members = pool
        .group_snapshot_members(&group, "set1")
        .expect("members");
    assert_eq!(snap_members.len(), 2);
    let member_a = snap_members
        .iter()
        .find(|member| member.image == first)
        .expect("a");
    let member_b = snap_members
        .iter()
        .find(|member| member.image == second)
        .expect("b");
    assert_eq!((member_a.size, member_b.size), (16 * MIB, 8 * MIB));
    // The member snapshots live in the group namespace of each image.
    let in_a = live_a.snaps().expect("snaps of a");
    assert_eq!(in_a.len(), 1);
    assert_eq!(in_a[0].id, member_a.snap_id);
    match &in_a[0].namespace {
        SnapNamespace::Group {
            group: found,
            group_snapshot,
            group_pool_id,
        } => {
            assert_eq!(
                (found.as_str(), group_snapshot.as_str()),
                (group.as_str(), "set1")
            );
            assert_eq!(*group_pool_id, pool.id());
        }
        other => panic!("a group snapshot's member is in the {other:?} namespace"),
    }
    assert_eq!(
        live_a.group_snap_id(&group, "set1").expect("id"),
        Some(member_a.snap_id)
    );

    let shadow_a = pool
        .open_at_snap_id(&first, member_a.snap_id)
        .expect("a at set1");
    let shadow_b = pool
        .open_at_snap_id(&second, member_b.snap_id)
        .expect("b at set1");
    for round in 0..4u8 {
        live_a
            .write_at(&pattern(50 + round, 3 * MIB as usize), MIB / 2)
            .expect("change a");
        live_b
            .write_at(&pattern(80 + round, MIB as usize), MIB / 2)
            .expect("change b");
        assert_same(
            &read(&shadow_a, MIB, old_a.len()),
            &old_a,
            &format!("a at set1, round {round}"),
        );
        assert_same(
            &read(&shadow_b, 0, old_b.len()),
            &old_b,
            &format!("b at set1, round {round}"),
        );
    }
    assert_ne!(read(&live_a, MIB, old_a.len()), old_a);
    drop((shadow_a, shadow_b));

    let recorder = Recorder::default();
    pool.group_snap_rollback(&group, "set1", &recorder)
        .expect("group rollback");
    assert_same(&read(&live_a, MIB, old_a.len()), &old_a, "data");
    assert_same(&read(&live_b, 0, old_b.len()), &old_b, "data");

    pool.group_snap_remove(&group, "set1")
        .expect("remove group snap");
    assert!(pool.group_snaps(&group).expect("group snaps").is_empty());
    assert!(live_a.snaps().expect("snaps of a").is_empty());
    assert!(live_b.snaps().expect("snaps of b").is_empty());
    let missing = pool.group_snap_remove(&group, "set1").expect_err("gone");
    assert!(missing.is_not_found(), "{missing}");
    pool.remove_group(&group).expect("remove group");
}

#[test]
fn image_removed_from_group_keeps_its_group_snapshot() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let cluster = ceph.connect();
    let pool = cluster.pool(&ceph.pool).expect("pool");
    let first = ceph.image("leave-a", 4 * MIB, features::LAYERING);
    let second = ceph.image("leave-b", 4 * MIB, features::LAYERING);
    let group = ceph.unique("group");
    pool.create_group(&group).expect("create group");
    pool.group_add_image(&group, &first).expect("add a");
    pool.group_add_image(&group, &second).expect("add b");
    let live_b = pool.open(&second).expect("open b");
    live_b.write_at(&pattern(11, 4096), 0).expect("write b");
    pool.group_snap_create(&group, "set").expect("group snap");
    let snap_b = live_b
        .group_snap_id(&group, "set")
        .expect("id")
        .expect("b has one");

    pool.group_remove_image(&group, &second)
        .expect("remove b from the group");
    // The group snapshot stays, complete; b still holds its member snapshot, readable by ID.
    let snaps = pool.group_snaps(&group).expect("group snaps");
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].complete);
    assert_eq!(
        live_b.group_snap_id(&group, "set").expect("id"),
        Some(snap_b)
    );
    live_b.write_at(&pattern(12, 4096), 0).expect("change b");
    let shadow_b = pool
        .open_at_snap_id(&second, snap_b)
        .expect("b at its snapshot");
    assert_same(&read(&shadow_b, 0, 4096), &pattern(11, 4096), "data");
    drop(shadow_b);
    // ...but the group lists only its current members.
    let members = pool.group_snapshot_members(&group, "set").expect("members");
    assert_eq!(
        members
            .iter()
            .map(|member| member.image.as_str())
            .collect::<Vec<_>>(),
        [first.as_str()]
    );

    pool.group_snap_remove(&group, "set")
        .expect("remove group snap");
    let left_in_a = pool
        .open(&first)
        .expect("open a")
        .snaps()
        .expect("snaps of a");
    assert!(left_in_a.is_empty(), "{left_in_a:?}");
    // ...and so does b's, although b left the group: the group snapshot recorded it.
    let left_in_b = live_b.snaps().expect("snaps of b");
    assert!(left_in_b.is_empty(), "{left_in_b:?}");
    pool.remove_group(&group).expect("remove group");
}

#[test]
fn clone_and_flatten() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let cluster = ceph.connect();
    let pool = cluster.pool(&ceph.pool).expect("pool");
    let parent = ceph.image("parent", 8 * MIB, features::DEFAULT);
    let live = pool.open(&parent).expect("open parent");
    let data = pattern(21, 2 * MIB as usize);
    live.write_at(&data, 3 * MIB).expect("write parent");
    live.snap_create("base").expect("snap");
    live.snap_protect("base").expect("protect");
    assert!(live.snap_is_protected("base").expect("protected?"));

    let child = ceph.unique("child");
    pool.clone_image(&parent, "base", &child, features::DEFAULT)
        .expect("clone");
    let clone = pool.open(&child).expect("open clone");
    assert_same(&read(&clone, 3 * MIB, data.len()), &data, "data");
    // A clone's allocation includes what it reads from its parent.
    let extents = clone
        .allocation(0, 8 * MIB)
        .expect("allocation of the clone");
    assert!(
        extents
            .iter()
            .any(|extent| extent.offset <= 3 * MIB && extent.offset + extent.length >= 5 * MIB),
        "{extents:?}"
    );
    clone.write_at(b"child", 0).expect("write clone");
    live.write_at(&pattern(22, MIB as usize), 3 * MIB)
        .expect("change parent");
    assert_same(&read(&clone, 3 * MIB, data.len()), &data, "data");

    let busy = live
        .snap_unprotect("base")
        .expect_err("a snapshot with a clone stays protected");
    assert_eq!(busy.errno(), Some(libc::EBUSY), "{busy}");
    let recorder = Recorder::default();
    clone.flatten(&recorder).expect("flatten");
    assert!(
        *recorder.advanced.lock().unwrap() > 0,
        "flatten reported progress"
    );
    assert_eq!(*recorder.finished.lock().unwrap(), 1);
    live.snap_unprotect("base")
        .expect("unprotect after flatten");
    live.snap_remove("base").expect("remove snap");
    assert_same(&read(&clone, 3 * MIB, data.len()), &data, "data");
    assert_same(&read(&clone, 0, 5), b"child", "data");
    drop(clone);
    pool.remove_image(&child).expect("remove clone");
}

#[test]
fn allocation_reports_holes() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let cluster = ceph.connect();
    let pool = cluster.pool(&ceph.pool).expect("pool");
    let name = ceph.image("sparse", 64 * MIB, features::DEFAULT);
    let image = pool.open(&name).expect("open");
    assert!(image
        .allocation(0, 64 * MIB)
        .expect("allocation")
        .is_empty());
    image.write_at(&[1u8; 4096], 8192).expect("write");
    image.write_at(&[2u8; 4096], 40 * MIB).expect("write");
    let extents = image.allocation(0, 64 * MIB).expect("allocation");
    let allocated: u64 = extents.iter().map(|extent| extent.length).sum();
    assert!(!extents.is_empty() && allocated < 16 * MIB, "{extents:?}");
    let covers = |offset: u64| {
        extents
            .iter()
            .any(|extent| extent.offset <= offset && offset < extent.offset + extent.length)
    };
    assert!(covers(8192) && covers(40 * MIB), "{extents:?}");
    assert!(!covers(20 * MIB), "{extents:?}");
    // A range query sees only its range.
    assert!(image
        .allocation(16 * MIB, 16 * MIB)
        .expect("range")
        .is_empty());

    // A discard smaller than librbd's granularity may change nothing; write_zeroes zeroes.
    image.write_zeroes(8192, 4096).expect("write zeroes");
    assert_same(&read(&image, 8192, 4096), &[0u8; 4096], "zeroed");
    // A whole object discarded is a hole again.
    image.discard(40 * MIB, 4 * MIB).expect("discard");
    assert_same(&read(&image, 40 * MIB, 4096), &[0u8; 4096], "discarded");
    let after = image
        .allocation(32 * MIB, 32 * MIB)
        .expect("allocation after discard");
    assert!(after.is_empty(), "{after:?}");
}

#[test]
fn missing_pool_and_image_are_their_own_errors() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let cluster = ceph.connect();
    let error = cluster.pool("no-such-pool").expect_err("missing pool");
    assert!(matches!(&error, RbdError::PoolNotFound { pool } if pool == "no-such-pool"));
    assert_eq!(
        error.to_string(),
        "pool no-such-pool does not exist in the Ceph cluster"
    );
    assert_eq!(error.vss_code(), VssCode::VSS_E_OBJECT_NOT_FOUND);

    let pool = cluster.pool(&ceph.pool).expect("pool");
    let error = pool.open("no-such-image").expect_err("missing image");
    assert_eq!(
        error.to_string(),
        "RBD image rbd/no-such-image does not exist"
    );
    assert_eq!(error.vss_code(), VssCode::VSS_E_OBJECT_NOT_FOUND);
    let error = pool
        .open_read_only("no-such-image")
        .expect_err("missing image");
    assert!(matches!(error, RbdError::ImageNotFound { .. }));
    let error = pool
        .remove_image("no-such-image")
        .expect_err("missing image");
    assert!(matches!(error, RbdError::ImageNotFound { .. }));

    let name = ceph.image("snapless", MIB, features::LAYERING);
    let error = pool
        .open_at_snap_id(&name, 123_456)
        .expect_err("missing snapshot");
    assert!(error.is_not_found(), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("rbd/{name} at snapshot ID 123456")),
        "{error}"
    );

    let error = pool
        .create_image(&name, MIB, features::LAYERING)
        .expect_err("exists");
    assert_eq!(
        error.vss_code(),
        VssCode::VSS_E_OBJECT_ALREADY_EXISTS,
        "{error}"
    );
}

#[test]
fn a_cluster_that_is_down_fails_within_seconds() {
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let work = support::scratch("rbd_lib_down");
    let conf = ceph.down_conf(&work);
    let started = Instant::now();
    let error =
        Cluster::connect(&conf, None, Duration::from_secs(3)).expect_err("nothing listens there");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    assert!(matches!(error, RbdError::Unreachable { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("cannot reach the Ceph cluster of"),
        "{error}"
    );

    let error = Cluster::connect(&work.join("missing.conf"), None, Duration::from_secs(3))
        .expect_err("no configuration");
    assert!(matches!(error, RbdError::Config { .. }), "{error}");
}

#[test]
fn an_image_as_a_durable_file() {
    use diskshadow::engine::rbd::file::RbdFile;
    use diskshadow::engine::store::backend::DurableFile;
    let Some(ceph) = support::ceph::cluster() else {
        return;
    };
    let cluster = ceph.connect();
    let pool = cluster.pool(&ceph.pool).expect("pool");
    let name = ceph.image("file", 16 * MIB, features::DEFAULT);
    let file = RbdFile::new(pool.open(&name).expect("open")).expect("file");
    assert_eq!(file.size().expect("size"), 16 * MIB);
    assert_eq!(file.next_data(0).expect("next data"), None);
    assert_eq!(file.next_hole(0).expect("next hole"), 0);

    let data = pattern(5, 8192);
    file.write_at(4 * MIB + 512, &data).expect("write");
    file.sync_data().expect("flush");
    let mut buffer = vec![0u8; 8192];
    assert_eq!(
        file.read_at(4 * MIB + 512, &mut buffer).expect("read"),
        8192
    );
    assert_same(&buffer, &data, "read back");
    let first_data = file.next_data(0).expect("next data").expect("some data");
    assert!(first_data <= 4 * MIB + 512, "{first_data}");
    let hole = file.next_hole(4 * MIB + 512).expect("next hole");
    assert!((4 * MIB + 512 + 8192..=16 * MIB).contains(&hole), "{hole}");
    assert_eq!(file.next_data(12 * MIB).expect("tail"), None);

    file.punch_hole(4 * MIB + 512, 8192).expect("punch");
    assert_eq!(
        file.read_at(4 * MIB + 512, &mut buffer).expect("read"),
        8192
    );
    assert_same(&buffer, &[0u8; 8192], "punched");

    let before = file.fingerprint().expect("fingerprint");
    assert_eq!(before.size, 16 * MIB);
    assert_eq!(file.fingerprint().expect("again"), before);
    let refused = file.set_len(MIB).expect_err("no resize");
    assert_eq!(refused.kind(), std::io::ErrorKind::Unsupported);
    drop(file);
    // The same name created again is another image.
    pool.remove_image(&name).expect("remove");
    pool.create_image(&name, 16 * MIB, features::DEFAULT)
        .expect("create again");
    let again = RbdFile::new(pool.open(&name).expect("open")).expect("file");
    assert_ne!(
        again.fingerprint().expect("fingerprint").inode,
        before.inode
    );
}
