//! The Ceph RBD provider against the store's copy-on-write and against the `rbd` tool, in one
//! run on a one-node cluster the benchmark starts (the test harness's, `tests/support/ceph.rs`).
//!
//! `cargo bench --bench ceph` uses 512 MiB images; `cargo bench --bench ceph -- --quick` (or
//! `DISKSHADOW_BENCH_QUICK=1`) 64 MiB ones. Two figures:
//!
//! - create of a set of two volumes: the provider's group snapshot of two RBD images (what
//!   `create` does while writes are held) against the system provider's copy-on-write set of
//!   two image files of the same size (the engine's whole create), median of five;
//! - reading a shadow over NBD: the provider's snapshot of one image served by the engine's
//!   NBD server and copied by `nbdcopy` to `null:`, against `rbd export` of the same snapshot
//!   to a pipe, best of three.

#[allow(dead_code)]
#[path = "../tests/support/ceph.rs"]
mod ceph;
mod support;

use std::collections::BTreeMap;
use std::io;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskshadow::engine::array::RbdPool;
use diskshadow::engine::device::BlockDevice;
use diskshadow::engine::expose::nbd::{serve_nbd, NbdListener};
use diskshadow::engine::ids::{ShadowId, ShadowSetId};
use diskshadow::engine::model::{CreateVolume, DeleteSelector};
use diskshadow::engine::rbd::features;
use diskshadow::engine::rbd::provider::{
    locate, open_snapshot, remove_snapshot, snapshot_set, volume_path, Member, Pools,
};
use diskshadow::engine::store::DurableFile;
use diskshadow::engine::Engine;

use support::{best, image, median, millis, options, rate, Result, MIB};

/// What `tests/support/ceph.rs` asks of its parent module.
fn tool(name: &str, package: &str) -> bool {
    let found = support::have(name);
    if !found {
        skip(format!(
            "{name} is not installed (apt-get install {package})"
        ));
    }
    found
}

fn skip(reason: impl std::fmt::Display) {
    eprintln!("skipped: {reason}");
}

/// A shadow's snapshot as a read-only block device, for the NBD server.
struct SnapshotDevice(Arc<dyn DurableFile>, u64);

impl BlockDevice for SnapshotDevice {
    fn size(&self) -> u64 {
        self.1
    }
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_or_zero(offset, buffer)
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn is_read_only(&self) -> bool {
        true
    }
}

fn write_image(cluster: &ceph::TestCluster, name: &str, size: u64, seed: u8) -> Result<()> {
    let pool = cluster.connect().pool(&cluster.pool)?;
    let image = pool.open(name)?;
    let block: Vec<u8> = (0..MIB as usize)
        .map(|index| (index as u8).wrapping_mul(seed))
        .collect();
    let mut offset = 0;
    while offset < size {
        image.write_at(&block, offset)?;
        offset += MIB;
    }
    image.flush()?;
    Ok(())
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|argument| argument == "--quick")
        || std::env::var_os("DISKSHADOW_BENCH_QUICK").is_some_and(|value| value == "1");
    let size = if quick { 64 * MIB } else { 512 * MIB };
    let Some(cluster) = ceph::cluster() else {
        return Ok(());
    };
    if !support::have("nbdcopy") {
        skip("nbdcopy is not installed (apt-get install libnbd-bin)");
        return Ok(());
    }
    let work = std::env::temp_dir().join(format!("diskshadow-bench-ceph-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let pools_map = BTreeMap::from([(
        cluster.pool.clone(),
        RbdPool {
            pool: cluster.pool.clone(),
            conf: cluster.conf.clone(),
            client_id: None,
        },
    )]);
    let pools = Pools(&pools_map);

    // Create of a set of two: the group snapshot of two RBD images.
    let first = cluster.image("bench-a", size, features::DEFAULT);
    let second = cluster.image("bench-b", size, features::DEFAULT);
    write_image(cluster, &first, size, 3)?;
    write_image(cluster, &second, size, 5)?;
    let paths = [
        volume_path(&cluster.pool, &first),
        volume_path(&cluster.pool, &second),
    ];
    let mut rbd_creates = Vec::new();
    for _ in 0..5 {
        let set = ShadowSetId(uuid::Uuid::new_v4());
        let shadows = [
            ShadowId(uuid::Uuid::new_v4()),
            ShadowId(uuid::Uuid::new_v4()),
        ];
        let members: Vec<Member<'_>> = paths
            .iter()
            .zip(shadows)
            .map(|(path, shadow)| Member {
                path,
                shadow,
                set,
                transportable: false,
            })
            .collect();
        let started = Instant::now();
        snapshot_set(&pools, &members)?;
        rbd_creates.push(started.elapsed());
        let (pool, snapshot) = locate(&pools, &paths[0], shadows[0], set)?;
        remove_snapshot(&pool, &snapshot, true)?;
    }

    // The same with the store's copy-on-write: two image files, one set.
    let store = work.join("store");
    let engine = Engine::open(&store, options())?;
    let mut volumes = Vec::new();
    for (name, seed) in [("a.img", 3u8), ("b.img", 5u8)] {
        let path = work.join(name);
        image(&path, size, size, seed)?;
        volumes.push(engine.register_volume(&path, None)?.id);
    }
    let mut spec = support::spec(volumes[0]);
    spec.volumes.push(CreateVolume {
        volume: volumes[1],
        provider: None,
    });
    let mut cow_creates = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        engine.create_shadow_set(&spec)?;
        cow_creates.push(started.elapsed());
        engine.delete_shadows(&DeleteSelector::All)?;
    }

    // Reading a shadow: an image snapshot of the first image, served over NBD, against
    // `rbd export` of the same snapshot.
    let set = ShadowSetId(uuid::Uuid::new_v4());
    let shadow = ShadowId(uuid::Uuid::new_v4());
    snapshot_set(
        &pools,
        &[Member {
            path: &paths[0],
            shadow,
            set,
            transportable: false,
        }],
    )?;
    let (pool, snapshot) = locate(&pools, &paths[0], shadow, set)?;
    let device = Arc::new(SnapshotDevice(open_snapshot(&pool, &snapshot)?, size));
    let socket = work.join("shadow.sock");
    let export = serve_nbd(device, "shadow", NbdListener::Unix(socket.clone()), true)?;
    let mut nbd_reads = Vec::new();
    let mut export_reads = Vec::new();
    let spec_name = format!("{}/{}@{}", cluster.pool, first, snapshot.snap_name);
    for _ in 0..3 {
        nbd_reads.push(timed(
            Command::new("nbdcopy").arg(export.url()).arg("null:"),
        )?);
        export_reads.push(timed(Command::new("sh").arg("-c").arg(format!(
            "rbd -c {} export --no-progress {spec_name} - > /dev/null",
            cluster.conf.display()
        )))?);
    }
    export.stop();
    remove_snapshot(&pool, &snapshot, true)?;
    let _ = std::fs::remove_dir_all(&work);

    let rbd_create = median(rbd_creates);
    let cow_create = median(cow_creates);
    let nbd = best(&nbd_reads);
    let rbd_export = best(&export_reads);
    println!(
        "Ceph RBD provider ({} per image, {} run)",
        size_name(size),
        if quick { "quick" } else { "full" }
    );
    println!(
        "| figure | RBD provider | baseline | ratio |\n|---|---|---|---|\n\
         | create, set of 2 volumes (baseline: copy-on-write of 2 image files) | {} | {} | {:.2} |\n\
         | read a shadow: NBD + nbdcopy (baseline: rbd export of the snapshot) | {} | {} | {:.2} |",
        millis(rbd_create),
        millis(cow_create),
        rbd_create.as_secs_f64() / cow_create.as_secs_f64().max(1e-9),
        rate(size, nbd),
        rate(size, rbd_export),
        rbd_export.as_secs_f64() / nbd.as_secs_f64().max(1e-9),
    );
    Ok(())
}

fn size_name(size: u64) -> String {
    format!("{} MiB", size / MIB)
}

fn timed(command: &mut Command) -> Result<Duration> {
    let started = Instant::now();
    let status = command.stdout(Stdio::null()).status()?;
    if !status.success() {
        return Err(format!("{command:?} failed: {status}").into());
    }
    Ok(started.elapsed())
}
