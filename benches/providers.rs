//! The providers side by side: copy-on-write (the system provider), redirect-on-write and full
//! copy (plex), each against raw file I/O measured in the same run on the same file system.
//!
//! `cargo bench --bench providers` uses a 1 GiB volume; `cargo bench --bench providers --
//! --quick` (or `DISKSHADOW_BENCH_QUICK=1`) a 128 MiB one and finishes in under a minute.
//! Providers named after `--` (`cow`, `row`, `plex`) run alone: `cargo bench --bench providers
//! -- cow`.
//! Every timed write ends durable (a flush / `fdatasync`) on both sides; reads come from the
//! page cache on both sides (nothing is dropped: the machine is shared). The full copy runs on
//! the benchmark's file system (a streamed copy unless it has reflink) and, when run as root
//! with `mkfs.xfs`, again on a loop-mounted XFS with `reflink=1`.
//!
//! First writes are also shown against raw writes into a new file, where the file system
//! allocates every block as a fresh diff area's writes make it; the rolling-shadows row
//! measures the steady state of a schedule, where each new shadow is followed by the
//! deletion of the one before it and first writes reuse its diff-area space.
//!
//! Ratios: for throughput, raw time / diskshadow time (1.0 = as fast as raw I/O, higher is
//! better); for create, delete and revert, diskshadow time / raw time (lower is better).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diskshadow::engine::device::BlockDevice;
use diskshadow::engine::ids::{ProviderId, ShadowId, VolumeId};
use diskshadow::engine::model::DeleteSelector;
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::provider::{FULL_COPY_PROVIDER_ID, ROW_PROVIDER_ID};
use diskshadow::engine::vss::providers::SYSTEM_PROVIDER_ID;
use diskshadow::engine::vss::Attributes;
use diskshadow::engine::Engine;
use std::fs::File;
use std::os::unix::fs::FileExt;

use support::{
    best, engine_sequential, has_reflink, image, median, millis, options, rate, raw_copy,
    raw_sequential, seconds, spec, timed_read, NamedParts, Result, XfsReflink, MIB,
};

/// Repetitions of each measurement: the best is kept for throughput (other work on the
/// machine only slows a run down), the median for single operations.
const REPETITIONS: usize = 3;

struct Figure {
    provider: String,
    operation: String,
    ours: String,
    raw: String,
    ratio: f64,
    target: &'static str,
}

struct Bench {
    region: u64,
    figures: Vec<Figure>,
}

impl Bench {
    /// A throughput figure: `region` bytes in `ours` against `raw`.
    fn throughput(
        &mut self,
        provider: &str,
        operation: &str,
        ours: Duration,
        raw: Duration,
        target: &'static str,
    ) {
        self.figures.push(Figure {
            provider: provider.to_string(),
            operation: operation.to_string(),
            ours: rate(self.region, ours),
            raw: rate(self.region, raw),
            ratio: seconds(raw) / seconds(ours).max(1e-9),
            target,
        });
    }

    /// The create figure: the median create against copying the volume.
    fn create(&mut self, provider: &str, creates: Vec<Duration>, raw: &Raw, target: &'static str) {
        let create = median(creates);
        self.time(
            provider,
            "create (vs copying the volume)",
            millis(create),
            create,
            raw.copy,
            target,
        );
    }

    /// A time figure: one operation against the raw I/O it replaces.
    fn time(
        &mut self,
        provider: &str,
        operation: &str,
        ours: String,
        ours_time: Duration,
        raw: Duration,
        target: &'static str,
    ) {
        self.figures.push(Figure {
            provider: provider.to_string(),
            operation: operation.to_string(),
            ours,
            raw: millis(raw),
            ratio: seconds(ours_time) / seconds(raw).max(1e-9),
            target,
        });
    }
}

/// The raw-file baselines of one file system, measured once per run.
struct Raw {
    file: PathBuf,
    write: Duration,
    /// The same writes into a new file: the file system allocates every block (what a
    /// write into a fresh diff area also pays).
    allocating_write: Duration,
    read: Duration,
    copy: Duration,
}

impl Raw {
    fn measure(dir: &Path, region: u64) -> Result<Raw> {
        let file = dir.join("raw.img");
        image(&file, region, region, 1)?;
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        let mut copies = Vec::new();
        let mut allocating_writes = Vec::new();
        let reader = File::open(&file)?;
        let fresh = dir.join("raw-new.img");
        for repetition in 0..REPETITIONS {
            writes.push(raw_sequential(&file, region, 2 + repetition as u8)?);
            let _ = std::fs::remove_file(&fresh);
            File::create(&fresh)?.sync_all()?;
            allocating_writes.push(raw_sequential(&fresh, region, 5 + repetition as u8)?);
            reads.push(timed_read(region, |offset, buffer| {
                reader.read_exact_at(buffer, offset)
            })?);
            copies.push(raw_copy(&file, &dir.join("raw-copy.img"), region)?);
        }
        std::fs::remove_file(&fresh)?;
        Ok(Raw {
            file,
            write: best(&writes),
            allocating_write: best(&allocating_writes),
            read: best(&reads),
            copy: median(copies),
        })
    }
}

fn read_device(device: &dyn BlockDevice, region: u64) -> Result<Duration> {
    timed_read(region, |offset, buffer| device.read_at(offset, buffer))
}

/// Copy-on-write or redirect-on-write: create, first write, rewrite, live read, shadow read,
/// delete of the oldest shadow, revert.
fn bench_differential(
    bench: &mut Bench,
    dir: &Path,
    name: &str,
    provider: uuid::Uuid,
    raw: &Raw,
) -> Result<()> {
    let region = bench.region;
    let path = dir.join(format!("{name}.img"));
    image(&path, region, region, 1)?;
    let engine = Engine::open(&dir.join(format!("store-{name}")), options())?;
    let volume = engine
        .register_volume_with_provider(&path, None, Some(ProviderId(provider)))?
        .id;
    let device = engine.open_volume(volume)?;

    // Each repetition: a new shadow, then a first write of the whole region after it, raw
    // and ours back to back.
    let (mut creates, mut raw_writes, mut first_writes) = (Vec::new(), Vec::new(), Vec::new());
    let mut shadows: Vec<ShadowId> = Vec::new();
    for repetition in 0..REPETITIONS {
        let start = Instant::now();
        shadows.push(engine.create_shadow_set(&spec(volume))?.shadows[0].id);
        creates.push(start.elapsed());
        let seed = 10 + repetition as u8;
        raw_writes.push(raw_sequential(&raw.file, region, seed)?);
        first_writes.push(engine_sequential(&*device, region, seed)?);
    }
    bench.create(name, creates, raw, "O(1): < 0.05");
    let first_target = if name == "row" { ">= 0.90" } else { ">= 0.45" };
    bench.throughput(
        name,
        "first write, 64 KiB sequential",
        best(&first_writes),
        best(&raw_writes),
        first_target,
    );
    bench.throughput(
        name,
        "first write, vs raw writes to a new file",
        best(&first_writes),
        raw.allocating_write,
        "(reported)",
    );

    let (mut raw_writes, mut rewrites) = (Vec::new(), Vec::new());
    for repetition in 0..REPETITIONS {
        let seed = 20 + repetition as u8;
        raw_writes.push(raw_sequential(&raw.file, region, seed)?);
        rewrites.push(engine_sequential(&*device, region, seed)?);
    }
    bench.throughput(
        name,
        "rewrite, 64 KiB sequential",
        best(&rewrites),
        best(&raw_writes),
        ">= 0.90",
    );

    let live_reads = (0..REPETITIONS)
        .map(|_| read_device(&*device, region))
        .collect::<Result<Vec<_>>>()?;
    bench.throughput(
        name,
        "live read, 1 MiB sequential",
        best(&live_reads),
        raw.read,
        "(reported)",
    );
    // The oldest shadow: every chunk of it differs from the live volume now.
    let shadow = engine.open_shadow(shadows[0])?;
    let shadow_reads = (0..REPETITIONS)
        .map(|_| read_device(&*shadow, region))
        .collect::<Result<Vec<_>>>()?;
    drop(shadow);
    bench.throughput(
        name,
        "shadow read, 1 MiB sequential",
        best(&shadow_reads),
        raw.read,
        "(reported)",
    );

    // Deleting the oldest shadow: redirect-on-write folds a whole region back into the image
    // (in the background; the figure waits for it), copy-on-write frees its chunks.
    let start = Instant::now();
    engine.delete_shadows(&DeleteSelector::Id(shadows[0]))?;
    let returned = start.elapsed();
    engine.wait_for_folds(&NoProgress)?;
    let delete = start.elapsed();
    bench.time(
        name,
        "delete oldest (vs writing the volume)",
        format!("{} ({} to return)", millis(delete), millis(returned)),
        delete,
        raw.write,
        "O(changed)",
    );

    // Revert to the newest shadow: the rewrites changed every chunk since it.
    let newest = *shadows.last().ok_or("no shadow")?;
    let start = Instant::now();
    engine.revert(newest, &NoProgress)?;
    let revert = start.elapsed();
    bench.time(
        name,
        "revert, every chunk changed (vs copying)",
        millis(revert),
        revert,
        raw.copy,
        "O(changed)",
    );

    // Rolling shadows, the steady state of a schedule: each new shadow is followed by the
    // deletion of the one before it, whose diff-area space the next first writes reuse.
    engine.delete_shadows(&DeleteSelector::All)?;
    engine.wait_for_folds(&NoProgress)?;
    let mut previous = engine.create_shadow_set(&spec(volume))?.shadows[0].id;
    engine_sequential(&*device, region, 30)?;
    let (mut raw_writes, mut reused_writes) = (Vec::new(), Vec::new());
    for repetition in 0..REPETITIONS {
        let next = engine.create_shadow_set(&spec(volume))?.shadows[0].id;
        engine.delete_shadows(&DeleteSelector::Id(previous))?;
        engine.wait_for_folds(&NoProgress)?;
        previous = next;
        let seed = 31 + repetition as u8;
        raw_writes.push(raw_sequential(&raw.file, region, seed)?);
        reused_writes.push(engine_sequential(&*device, region, seed)?);
    }
    bench.throughput(
        name,
        "first write, rolling shadows (space reused)",
        best(&reused_writes),
        best(&raw_writes),
        first_target,
    );
    Ok(())
}

/// The full-copy (plex) provider: create (the copy) and shadow read.
fn bench_full_copy(bench: &mut Bench, dir: &Path, name: &str, raw: &Raw) -> Result<()> {
    let region = bench.region;
    let path = dir.join("plex.img");
    image(&path, region, region, 1)?;
    let engine = Engine::open(&dir.join("store-plex"), options())?;
    let volume = engine.register_volume(&path, None)?.id;
    let mut creates = Vec::new();
    let mut shadows = Vec::new();
    for _ in 0..REPETITIONS {
        let start = Instant::now();
        shadows.push(full_copy(&engine, volume)?);
        creates.push(start.elapsed());
    }
    let target = if name.contains("reflink") {
        "< 1 s"
    } else {
        "(reported)"
    };
    bench.create(name, creates, raw, target);
    let shadow = engine.open_shadow(shadows[0])?;
    let reads = (0..REPETITIONS)
        .map(|_| read_device(&*shadow, region))
        .collect::<Result<Vec<_>>>()?;
    bench.throughput(
        name,
        "shadow read, 1 MiB sequential",
        best(&reads),
        raw.read,
        "(reported)",
    );
    drop(shadow);
    engine.delete_shadows(&DeleteSelector::All)?;
    Ok(())
}

fn full_copy(engine: &Engine, volume: VolumeId) -> Result<ShadowId> {
    let mut plex = spec(volume);
    plex.volumes[0].provider = Some(ProviderId(FULL_COPY_PROVIDER_ID));
    plex.extra_attributes = Attributes(Attributes::PLEX);
    Ok(engine.create_shadow_set(&plex)?.shadows[0].id)
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|argument| argument == "--quick")
        || std::env::var_os("DISKSHADOW_BENCH_QUICK").is_some();
    let region = if quick { 128 * MIB } else { 1024 * MIB };
    let work = tempfile::Builder::new()
        .prefix("diskshadow-bench-providers")
        .tempdir_in(std::env::temp_dir())?;
    let dir = work.path();
    let started = Instant::now();
    let mut bench = Bench {
        region,
        figures: Vec::new(),
    };
    // Providers named on the command line (`cow`, `row`, `plex`) run alone; none named: all.
    let parts = NamedParts::from_args();
    let raw = Raw::measure(dir, region)?;
    if parts.runs("cow") {
        bench_differential(&mut bench, dir, "cow", SYSTEM_PROVIDER_ID, &raw)?;
    }
    if parts.runs("row") {
        bench_differential(&mut bench, dir, "row", ROW_PROVIDER_ID, &raw)?;
    }
    if parts.runs("plex") {
        bench_plex(&mut bench, dir, region, &raw)?;
    }
    print_figures(&bench, quick, region, started);
    Ok(())
}

/// The full copy on the benchmark's file system and, where it can be mounted, on XFS.
fn bench_plex(bench: &mut Bench, dir: &Path, region: u64, raw: &Raw) -> Result<()> {
    let plex_name = if has_reflink(dir) {
        "plex (reflink)"
    } else {
        "plex (streamed copy)"
    };
    bench_full_copy(bench, dir, plex_name, raw)?;
    match XfsReflink::mount(dir, 4 * region + 512 * MIB) {
        Ok(xfs) => {
            let raw = Raw::measure(&xfs.mount, region)?;
            bench_full_copy(bench, &xfs.mount, "plex (reflink, XFS)", &raw)?;
        }
        Err(reason) => eprintln!("skipped: the full copy on XFS with reflink: {reason}"),
    }
    Ok(())
}

fn print_figures(bench: &Bench, quick: bool, region: u64, started: Instant) {
    println!(
        "diskshadow providers benchmark ({} mode, {} MiB volume, {:.0} s)",
        if quick { "quick" } else { "full" },
        region / MIB,
        seconds(started.elapsed())
    );
    println!(
        "{:<22} {:<42} {:>28} {:>12} {:>8}  target",
        "provider", "operation", "diskshadow", "raw", "ratio"
    );
    for figure in &bench.figures {
        println!(
            "{:<22} {:<42} {:>28} {:>12} {:>8.3}  {}",
            figure.provider, figure.operation, figure.ours, figure.raw, figure.ratio, figure.target
        );
    }
}
