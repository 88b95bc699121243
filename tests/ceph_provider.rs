//! The Ceph RBD provider against a real one-node cluster (`support::ceph`). The library
//! side: a set of two images is ONE group snapshot and each shadow reads back byte-exact while
//! the live images change; the group rule; a set of one image is an image snapshot; delete,
//! break (clone + flatten, or a copy of a group snapshot), what `import` finds; the faults (a
//! snapshot removed behind diskshadow's back, a snapshot no shadow owns, a cluster that is
//! down, an image without `layering`). Then the whole story through the service: two stores
//! attached to the pool, a set made with a writer, import, NBD, revert, resync, break writable,
//! delete; a missing snapshot is not served; a service killed while the set thaws leaves its
//! group snapshot reported by `check-store`.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod support;

use diskshadow::engine::array::RbdPool;
use diskshadow::engine::cabinet::ManifestShadow;
use diskshadow::engine::ids::{ProviderId, ShadowId, ShadowSetId};
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::rbd::features;
use diskshadow::engine::rbd::provider::{
    break_off, group_snapshot_name, image_snapshot_name, leaked_snapshots, locate, open_snapshot,
    remove_snapshot, snapshot_set, transported, unsnapshot_set, volume_path, Member, Pools,
    RBD_PROVIDER_ID,
};
use std::fs;
use std::path::Path;
use std::process::Command as Process;
use support::ceph::{self, TestCluster};
use support::process::{diskshadow, run_failing_script, run_script, shadow_ids};

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

// ---- the whole story through the service ----------------------------------------------

/// Stops the services of the test's stores when dropped, so none keeps a cluster connection.
struct Services(Vec<PathBuf>);

impl Drop for Services {
    fn drop(&mut self) {
        for store in &self.0 {
            let _ = diskshadow(store).args(["service", "stop"]).output();
        }
    }
}

/// `rbd -c CONF ARGS…`: its stdout; panics when it fails.
fn rbd_tool(cluster: &TestCluster, args: &[&str]) -> String {
    let output = Process::new("rbd")
        .arg("-c")
        .arg(&cluster.conf)
        .args(args)
        .output()
        .expect("rbd runs");
    assert!(
        output.status.success(),
        "rbd {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// An image of the cluster's pool holding `data` (written through the `rbd` tool).
fn cli_image_with(cluster: &TestCluster, work: &Path, name: &str, data: &[u8]) -> String {
    let file = work.join(format!("{name}.src"));
    fs::write(&file, data).expect("source");
    let _ = Process::new("rbd")
        .arg("-c")
        .arg(&cluster.conf)
        .args(["rm", &format!("{}/{name}", cluster.pool)])
        .output();
    rbd_tool(
        cluster,
        &[
            "import",
            "--no-progress",
            &file.display().to_string(),
            &format!("{}/{name}", cluster.pool),
        ],
    );
    format!("rbd:{}/{name}", cluster.pool)
}

/// The image as it is now in the cluster (`rbd export`).
fn exported(cluster: &TestCluster, work: &Path, spec: &str) -> Vec<u8> {
    let file = work.join("export.img");
    let _ = fs::remove_file(&file);
    rbd_tool(
        cluster,
        &["export", "--no-progress", spec, &file.display().to_string()],
    );
    fs::read(&file).expect("export")
}

fn attach(store: &Path, cluster: &TestCluster) {
    diskshadow(store)
        .args([
            "array",
            "attach",
            &format!("rbd:{}", cluster.pool),
            "--conf",
        ])
        .arg(&cluster.conf)
        .assert()
        .success();
}

/// A store attached to the test cluster's pool, or `None` (skipped) where Ceph is missing.
fn setup(name: &str) -> Option<(&'static TestCluster, PathBuf)> {
    let cluster = ceph::cluster()?;
    let work = support::scratch(name);
    Some((cluster, work))
}

fn cli_volume_read(store: &Path, volume: &str) -> Vec<u8> {
    let output = diskshadow(store)
        .args(["volume", "read", volume])
        .output()
        .expect("volume read");
    assert!(
        output.status.success(),
        "volume read {volume}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn volume_write(store: &Path, volume: &str, offset: u64, data: Vec<u8>) {
    diskshadow(store)
        .args(["volume", "write", volume, "--offset", &offset.to_string()])
        .write_stdin(data)
        .assert()
        .success();
}

/// The set's ID from a `create` listing.
fn set_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("- Shadow copy set: "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a shadow copy set line")
        .trim_matches(['{', '}'])
        .to_string()
}

/// The writer the set is made with: the test writer, recording the events it is sent.
fn register_writer(store: &Path, work: &Path, volume: &str) -> PathBuf {
    fs::create_dir_all(store.join("writers")).expect("writers dir");
    let record = work.join("writer.events");
    fs::write(
        store.join("writers/rbd.toml"),
        format!(
            "name = \"RBD Test Writer\"\nid = \"{{7a7a7a7a-1111-4222-8333-444444444444}}\"\ncommand = [\"{}\", \"--component\", \"db={}\", \"--record\", \"{}\"]\n",
            env!("CARGO_BIN_EXE_diskshadow-test-writer"),
            volume,
            record.display()
        ),
    )
    .expect("writer registration");
    record
}

#[test]
fn ceph_two_images_one_group_snapshot_imported_revert_resync_break_delete() {
    let Some((cluster, work)) = setup("ceph-provider-story") else {
        return;
    };
    if !support::tool("qemu-img", "qemu-utils") {
        return;
    }
    let host_a = work.join("hostA");
    let host_b = work.join("hostB");
    let _services = Services(vec![host_a.clone(), host_b.clone()]);
    let size = 8 << 20;
    let before_db = pattern(size, 1);
    let before_log = pattern(size, 2);
    let db = cli_image_with(cluster, &work, "story-db", &before_db);
    let log = cli_image_with(cluster, &work, "story-log", &before_log);
    attach(&host_a, cluster);
    attach(&host_b, cluster);
    let events = register_writer(&host_a, &work, &db);

    // The provider is listed, and is VSS's automatic choice for RBD volumes.
    let providers = run_script(&host_a, &work, "providers.dsh", "list providers\n");
    assert!(
        providers.contains("diskshadow Ceph RBD provider")
            && providers.contains("{6e1b7c24-d83f-4a59-b1e6-2f9a0c4d8b73}"),
        "{providers}"
    );

    // A persistent, transportable set of both images, with the writer.
    run_script(
        &host_a,
        &work,
        "create.dsh",
        &format!(
            "set context persistent\nset option transportable\nset metadata story.cab\n\
             begin backup\nadd volume {db} alias DB\nadd volume {log} alias LOG\ncreate\n\
             end backup\n"
        ),
    );
    let recorded = fs::read_to_string(&events).expect("the writer took part");
    assert!(
        recorded.contains("\"freeze\"") && recorded.contains("\"thaw\""),
        "{recorded}"
    );
    // One group snapshot in the cluster, of a group holding both images.
    let groups = rbd_tool(cluster, &["group", "ls", &cluster.pool]);
    // (Other tests of this binary share the pool: the story's group is the one holding its
    // images.)
    let group = groups
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("diskshadow."))
        .find(|group| {
            rbd_tool(
                cluster,
                &["group", "image", "ls", &format!("{}/{group}", cluster.pool)],
            )
            .contains("story-db")
        })
        .expect("the provider's group")
        .to_string();
    let group_spec = format!("{}/{group}", cluster.pool);
    let snaps = rbd_tool(cluster, &["group", "snap", "ls", &group_spec]);
    assert_eq!(
        snaps.matches("diskshadow.").count(),
        1,
        "one group snapshot:\n{snaps}"
    );
    let members = rbd_tool(cluster, &["group", "image", "ls", &group_spec]);
    assert!(
        members.contains("story-db") && members.contains("story-log"),
        "{members}"
    );

    // The live images keep changing after the point in time.
    volume_write(&host_a, &db, 0, vec![0xeeu8; 1 << 20]);
    volume_write(&host_a, &log, 4096, vec![0xddu8; 8192]);

    // Host B, attached to the same pool, imports the transported set and serves both shadows
    // over NBD: each reads as it was.
    let output = run_script(
        &host_b,
        &work,
        "import.dsh",
        "load metadata story.cab\nimport\nexpose %DB% \\\\localhost\\db\n\
         list shadows all\n",
    );
    for word in ["Hardware_Assisted", "Transportable", "Imported"] {
        assert!(output.contains(word), "{word} missing:\n{output}");
    }
    let set = set_id(&output);
    let group_snapshot = format!("diskshadow.{set}.t");
    assert!(snaps.contains(&group_snapshot), "{snaps}");
    assert!(
        output.contains(&format!("(group {group_spec}@{group_snapshot})")),
        "list shadows names the group snapshot:\n{output}"
    );
    // Import lists the set, then `list shadows all` lists it again: each ID once.
    let ids = shadow_ids(&output);
    let ids: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(position, id)| !ids[..*position].contains(id))
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(ids.len(), 2, "{output}");
    let read_share = |share: &str| {
        let socket = host_b.join(format!("shares/{share}.sock"));
        let copy = work.join(format!("{share}.copy"));
        let status = Process::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(format!("nbd+unix:///{share}?socket={}", socket.display()))
            .arg(&copy)
            .status()
            .expect("qemu-img");
        assert!(status.success());
        fs::read(&copy).expect("copy")
    };
    assert!(
        read_share("db") == before_db,
        "host B reads the db image as it was"
    );
    run_script(
        &host_b,
        &work,
        "expose-log.dsh",
        "load metadata story.cab\nunexpose \\\\localhost\\db\n\
         expose %LOG% \\\\localhost\\log\n",
    );
    assert!(
        read_share("log") == before_log,
        "host B reads the log image as it was"
    );
    run_script(
        &host_b,
        &work,
        "unexpose.dsh",
        "load metadata story.cab\nunexpose \\\\localhost\\log\n",
    );

    // Revert on B: the db image is the point in time again.
    run_script(
        &host_b,
        &work,
        "revert.dsh",
        "load metadata story.cab\nrevert %DB%\n",
    );
    assert!(exported(cluster, &work, &format!("{}/story-db", cluster.pool)) == before_db);

    // Resync on B: the log shadow copied onto a new image.
    let fresh = cli_image_with(cluster, &work, "story-fresh", &vec![0u8; size]);
    let output = run_script(
        &host_b,
        &work,
        "resync.dsh",
        &format!("load metadata story.cab\nadd shadow %LOG% {fresh}\nresync novolcheck\n"),
    );
    assert!(output.contains("was resynchronized onto"), "{output}");
    assert!(exported(cluster, &work, &format!("{}/story-fresh", cluster.pool)) == before_log);

    // Break writable on B: each shadow becomes an ordinary, writable RBD volume, and the
    // group snapshot leaves the cluster with the set.
    let output = run_script(
        &host_b,
        &work,
        "break.dsh",
        "load metadata story.cab\nbreak writable %VSS_SHADOW_SET%\nlist shadows all\n",
    );
    assert!(output.contains("(read-write)"), "{output}");
    assert!(
        output.contains("Number of shadow copies listed: 0"),
        "{output}"
    );
    let broken = format!(
        "rbd:{}/story-db.shadow-{}",
        cluster.pool,
        ids[0].trim_matches(['{', '}'])
    );
    assert!(cli_volume_read(&host_b, &broken) == before_db);
    volume_write(&host_b, &broken, 0, vec![0x5au8; 4096]);
    let mut expected = before_db.clone();
    expected[..4096].fill(0x5a);
    assert!(cli_volume_read(&host_b, &broken) == expected);
    let snaps = rbd_tool(cluster, &["group", "snap", "ls", &group_spec]);
    assert!(!snaps.contains(&group_snapshot), "{snaps}");

    // A second set of the same images on A reuses their group; delete removes its snapshot.
    let output = run_script(
        &host_a,
        &work,
        "second.dsh",
        &format!("set context persistent nowriters\nadd volume {db}\nadd volume {log}\ncreate\n"),
    );
    let second = set_id(&output);
    let snaps = rbd_tool(cluster, &["group", "snap", "ls", &group_spec]);
    assert!(snaps.contains(&format!("diskshadow.{second}")), "{snaps}");
    run_script(&host_a, &work, "delete.dsh", "delete shadows all\n");
    let snaps = rbd_tool(cluster, &["group", "snap", "ls", &group_spec]);
    assert!(!snaps.contains("diskshadow."), "{snaps}");
}

#[test]
fn ceph_a_set_of_one_image_is_an_image_snapshot() {
    let Some((cluster, work)) = setup("ceph-provider-single") else {
        return;
    };
    let store = work.join("store");
    let _services = Services(vec![store.clone()]);
    let before = pattern(4 << 20, 3);
    let volume = cli_image_with(cluster, &work, "single", &before);
    attach(&store, cluster);
    let output = run_script(
        &store,
        &work,
        "create.dsh",
        &format!(
            "set context persistent nowriters\nadd volume {volume}\ncreate\nlist shadows all\n"
        ),
    );
    let shadow = shadow_ids(&output)[0].trim_matches(['{', '}']).to_string();
    let snaps = rbd_tool(
        cluster,
        &["snap", "ls", &format!("{}/single", cluster.pool)],
    );
    assert!(snaps.contains(&format!("diskshadow.{shadow}")), "{snaps}");
    assert!(
        output.contains(&format!(
            "- RBD snapshot: {}/single@diskshadow.{shadow}",
            cluster.pool
        )),
        "{output}"
    );
    volume_write(&store, &volume, 0, vec![1u8; 65536]);
    let read = diskshadow(&store)
        .args(["volume", "read", &format!("{{{shadow}}}")])
        .output()
        .expect("read shadow");
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(read.stdout == before, "the shadow reads as it was");
    run_script(&store, &work, "delete.dsh", "delete shadows all\n");
    let snaps = rbd_tool(
        cluster,
        &["snap", "ls", &format!("{}/single", cluster.pool)],
    );
    assert!(!snaps.contains("diskshadow."), "{snaps}");
}

#[test]
fn ceph_a_snapshot_removed_behind_diskshadows_back_is_missing_and_not_served() {
    let Some((cluster, work)) = setup("ceph-provider-removed") else {
        return;
    };
    let store = work.join("store");
    let _services = Services(vec![store.clone()]);
    let volume = cli_image_with(cluster, &work, "removed", &pattern(1 << 20, 4));
    attach(&store, cluster);
    let output = run_script(
        &store,
        &work,
        "create.dsh",
        &format!("set context persistent nowriters\nadd volume {volume}\ncreate\n"),
    );
    let shadow = shadow_ids(&output)[0].clone();
    let name = format!("diskshadow.{}", shadow.trim_matches(['{', '}']));
    rbd_tool(
        cluster,
        &[
            "snap",
            "rm",
            "--no-progress",
            &format!("{}/removed@{name}", cluster.pool),
        ],
    );

    let listed = run_script(&store, &work, "list.dsh", "list shadows all\n");
    assert!(
        listed.contains("is suspect and is not served")
            && listed.contains("RBD snapshot is missing"),
        "{listed}"
    );
    let refused = run_failing_script(
        &store,
        &work,
        "expose.dsh",
        &format!("expose {shadow} \\\\localhost\\gone\n"),
    );
    assert!(refused.contains("missing"), "{refused}");
    let read = diskshadow(&store)
        .args(["volume", "read", &shadow])
        .output()
        .expect("read");
    assert!(!read.status.success());
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("missing"),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let check = diskshadow(&store)
        .arg("check-store")
        .output()
        .expect("check-store");
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("RBD snapshot is missing"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Deleting the shadow copy still works: there is nothing left to remove.
    run_script(&store, &work, "delete.dsh", "delete shadows all\n");
}

#[test]
fn ceph_a_service_killed_while_the_set_thaws_leaves_its_group_snapshot_reported() {
    let Some((cluster, work)) = setup("ceph-provider-killed") else {
        return;
    };
    let store = work.join("store");
    let _services = Services(vec![store.clone()]);
    let first = cli_image_with(cluster, &work, "killed-a", &pattern(1 << 20, 5));
    let second = cli_image_with(cluster, &work, "killed-b", &pattern(1 << 20, 6));
    attach(&store, cluster);
    fs::create_dir_all(store.join("writers")).expect("writers dir");
    let record = work.join("slow.events");
    fs::write(
        store.join("writers/slow.toml"),
        format!(
            "name = \"Slow Thaw Writer\"\nid = \"{{55555555-aaaa-4bbb-8ccc-777777777777}}\"\ncommand = [\"{}\", \"--component\", \"db={}\", \"--record\", \"{}\", \"--on\", \"thaw=delay:3000\"]\n",
            env!("CARGO_BIN_EXE_diskshadow-test-writer"),
            first,
            record.display()
        ),
    )
    .expect("registration");
    let script = work.join("create.dsh");
    fs::write(
        &script,
        format!("set context persistent\nadd volume {first}\nadd volume {second}\ncreate\n"),
    )
    .expect("script");
    let mut client = Process::new(env!("CARGO_BIN_EXE_diskshadow"))
        .arg("--store")
        .arg(&store)
        .arg("-s")
        .arg(&script)
        .current_dir(&work)
        .env_remove("DISKSHADOW_STORE")
        .env("DISKSHADOW_IDLE_TIMEOUT", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("client");
    support::process::wait_for(30, "the writer was sent thaw", || {
        fs::read_to_string(&record).is_ok_and(|events| events.contains("\"thaw\""))
    });
    // The group snapshot is made and the set committed, its writers thawing: kill the service.
    let pid: i32 = fs::read_to_string(store.join("service.lock"))
        .expect("lock")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: kill(2) with a pid read from our own store's lock file.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = client.wait();
    std::thread::sleep(std::time::Duration::from_millis(300));

    // The interrupted set is gone from the store, its group snapshot is still in the cluster,
    // and `check` reports it (never removes it: the pool is shared).
    let listed = run_script(&store, &work, "list.dsh", "list shadows all\n");
    assert!(shadow_ids(&listed).is_empty(), "{listed}");
    let check = diskshadow(&store)
        .arg("check-store")
        .output()
        .expect("check-store");
    let report = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        report.contains("belongs to no shadow copy set of this store"),
        "{report}"
    );
}

// ---- FUSE through librbd ------------------------------------------------------------------

/// `sh -c COMMAND`, asserting that it succeeds.
fn shell(command: &str) {
    let output = Process::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "{command}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Unmounts the test's mount points (lazily, so a failed test leaves nothing behind), then
/// stops the store's service (which ends its FUSE attachments and exposures).
struct Mounts(Vec<PathBuf>, PathBuf);

impl Drop for Mounts {
    fn drop(&mut self) {
        for mount in &self.0 {
            let _ = Process::new("umount").arg("-l").arg(mount).output();
        }
        let _ = diskshadow(&self.1).args(["service", "stop"]).output();
    }
}

/// Attaches `volume` as a FUSE file in `directory`, loop-mounts it on `mnt`, writes
/// `report.txt` with `text`, unmounts and detaches: the live volume changes through librbd.
fn write_through_fuse(store: &Path, volume: &str, directory: &Path, mnt: &Path, text: &str) {
    diskshadow(store)
        .args(["volume", "attach", volume])
        .arg(directory)
        .assert()
        .success();
    let file = directory.join(image_name(Path::new(volume)));
    shell(&format!(
        "mount -o loop {} {}",
        file.display(),
        mnt.display()
    ));
    fs::write(mnt.join("report.txt"), text).expect("write through the loop mount");
    shell(&format!("sync && umount {}", mnt.display()));
    diskshadow(store)
        .args(["volume", "detach", volume])
        .assert()
        .success();
}

#[test]
fn ceph_an_rbd_volume_attached_and_exposed_through_fuse_holds_an_ext4_file_system() {
    let Some((cluster, work)) = setup("ceph-provider-fuse") else {
        return;
    };
    if !support::tool("fusermount3", "fuse3")
        || !support::tool("mkfs.ext4", "e2fsprogs")
        || !Path::new("/dev/fuse").exists()
    {
        return;
    }
    let store = work.join("store");
    let live = work.join("live");
    let mnt = work.join("mnt");
    let shadow_view = work.join("shadow");
    for directory in [&live, &mnt, &shadow_view] {
        fs::create_dir_all(directory).expect("directory");
    }
    let _mounts = Mounts(
        vec![mnt.clone(), live.clone(), shadow_view.clone()],
        store.clone(),
    );
    let spec = format!("{}/fuse", cluster.pool);
    let _ = Process::new("rbd")
        .arg("-c")
        .arg(&cluster.conf)
        .args(["rm", &spec])
        .output();
    rbd_tool(cluster, &["create", "--size", "32M", &spec]);
    let volume = format!("rbd:{spec}");
    attach(&store, cluster);

    // (a) The live volume as a FUSE file: mkfs.ext4 on it, a file written through a loop
    // mount, a clean e2fsck; what the file showed is what the cluster has after detach.
    diskshadow(&store)
        .args(["volume", "attach", &volume])
        .arg(&live)
        .assert()
        .success();
    let file = live.join("fuse");
    assert_eq!(fs::metadata(&file).expect("the FUSE file").len(), 32 << 20);
    shell(&format!("mkfs.ext4 -F -q {}", file.display()));
    shell(&format!(
        "mount -o loop {} {}",
        file.display(),
        mnt.display()
    ));
    fs::write(mnt.join("report.txt"), "version 1\n".repeat(1000)).expect("write");
    shell(&format!("sync && umount {}", mnt.display()));
    shell(&format!("e2fsck -fn {}", file.display()));
    let shown = fs::read(&file).expect("read the FUSE file");
    diskshadow(&store)
        .args(["volume", "detach", &volume])
        .assert()
        .success();
    assert!(
        exported(cluster, &work, &spec) == shown,
        "rbd export differs from what the FUSE file showed"
    );

    // (b) A shadow of it exposed as a FUSE view of its ext4 file system keeps the file as it
    // was while the live volume changes.
    run_script(
        &store,
        &work,
        "expose.dsh",
        &format!(
            "set context persistent nowriters\nadd volume {volume} alias a\ncreate\nexpose %a% {}\n",
            shadow_view.display()
        ),
    );
    write_through_fuse(&store, &volume, &live, &mnt, "version 2\n");
    assert_eq!(
        fs::read_to_string(shadow_view.join("report.txt")).expect("the shadow's file"),
        "version 1\n".repeat(1000)
    );
    let now = exported(cluster, &work, &spec);
    let copy = work.join("now.img");
    fs::write(&copy, now).expect("copy");
    let live_text = Process::new("debugfs")
        .args(["-R", "cat /report.txt"])
        .arg(&copy)
        .output()
        .expect("debugfs");
    assert_eq!(String::from_utf8_lossy(&live_text.stdout), "version 2\n");
    let listing = run_script(
        &store,
        &work,
        "unexpose.dsh",
        &format!("unexpose {}\nlist shadows all\n", shadow_view.display()),
    );
    assert!(listing.contains("Not exposed"), "{listing}");
    run_script(&store, &work, "delete.dsh", "delete shadows all\n");
}
