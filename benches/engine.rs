//! Engine benchmarks: ratios against baselines measured in the same run.
//!
//! `cargo bench --bench engine` runs the full sizes (1 TiB sparse volume with 8 GiB of data,
//! 1 GiB first-write passes, a 4 GiB revert); `cargo bench --bench engine -- --quick` (or
//! `DISKSHADOW_BENCH_QUICK=1`) scales the data down. Every timed write phase ends with the
//! data durable (a flush / `fdatasync`), on both sides, so the comparison is of durable
//! throughput. The qcow2 comparison runs when `qemu-img` and `qemu-io` are installed.

mod support;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diskshadow::engine::core::DEFAULT_CHUNK_SIZE;
use diskshadow::engine::ids::ProviderId;
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::Engine;

use support::{
    best, create, engine_sequential, have, image, median, millis, options, rate, raw_sequential,
    run, seconds, settle, Result, GIB, KIB, MIB, TIB, WRITE,
};

struct Sizes {
    big_volume_data: u64,
    first_write_region: u64,
    random_writes: u64,
    shadow_count_region: u64,
    revert_volume: u64,
}

struct Row {
    what: String,
    ours: String,
    baseline: String,
    ratio: f64,
    target: String,
}

/// Offsets of 4 KiB writes, each in a different 64 KiB chunk, in a shuffled order.
fn random_offsets(region: u64, count: u64) -> Vec<u64> {
    let chunks = region / WRITE;
    let step = (chunks / count).max(1);
    let mut offsets: Vec<u64> = (0..count)
        .map(|index| (index * step % chunks) * WRITE + 4 * KIB)
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for index in (1..offsets.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        offsets.swap(index, (state % (index as u64 + 1)) as usize);
    }
    offsets
}

fn time_random(
    offsets: &[u64],
    mut write: impl FnMut(u64, &[u8]) -> Result<()>,
    finish: impl FnOnce() -> Result<()>,
) -> Result<Duration> {
    let block = vec![0x5au8; 4 * KIB as usize];
    settle();
    let start = Instant::now();
    for offset in offsets {
        write(*offset, &block)?;
    }
    finish()?;
    Ok(start.elapsed())
}

fn bench_create(dir: &Path, sizes: &Sizes, rows: &mut Vec<Row>) -> Result<()> {
    let engine = Engine::open(&dir.join("store-create"), options())?;
    let big = dir.join("big.img");
    let small = dir.join("small.img");
    image(&big, TIB, sizes.big_volume_data, 1)?;
    image(&small, GIB, GIB.min(sizes.big_volume_data), 1)?;
    let big_volume = engine.register_volume(&big, None)?.id;
    let small_volume = engine.register_volume(&small, None)?.id;
    let mut big_samples = Vec::new();
    let mut small_samples = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        create(&engine, small_volume)?;
        small_samples.push(start.elapsed());
        let start = Instant::now();
        create(&engine, big_volume)?;
        big_samples.push(start.elapsed());
    }
    let (big_time, small_time) = (median(big_samples), median(small_samples));
    rows.push(Row {
        what: format!(
            "create, 1 TiB sparse volume with {} GiB data vs 1 GiB volume",
            sizes.big_volume_data as f64 / GIB as f64
        ),
        ours: millis(big_time),
        baseline: millis(small_time),
        ratio: seconds(big_time) / seconds(small_time),
        target: "<= 1.2 and < 20 ms".into(),
    });
    // Create with up to 512 shadows already there (G1): the median of the last seven.
    for _ in 7..505 {
        create(&engine, big_volume)?;
    }
    let mut late_samples = Vec::new();
    for _ in 505..512 {
        let start = Instant::now();
        create(&engine, big_volume)?;
        late_samples.push(start.elapsed());
    }
    let with_512 = median(late_samples);
    rows.push(Row {
        what: "create, shadows 506-512 of the 1 TiB volume vs the first of 1 GiB".into(),
        ours: millis(with_512),
        baseline: millis(small_time),
        ratio: seconds(with_512) / seconds(small_time),
        target: "< 50 ms (G1)".into(),
    });
    Ok(())
}

/// Repetitions of each throughput measurement; the best is kept, because other work on the
/// machine only ever makes a run slower.
const REPETITIONS: usize = 3;

/// The provider the write benchmarks register their volume for:
/// `DISKSHADOW_BENCH_PROVIDER=row` (or `cow`, the default).
fn bench_provider() -> Result<Option<ProviderId>> {
    match std::env::var("DISKSHADOW_BENCH_PROVIDER") {
        Err(_) => Ok(None),
        Ok(name) => diskshadow::engine::core::provider_by_name(&name)
            .map(|provider| Some(provider.id()))
            .ok_or_else(|| format!("DISKSHADOW_BENCH_PROVIDER={name}: use cow or row").into()),
    }
}

fn bench_writes(dir: &Path, sizes: &Sizes, rows: &mut Vec<Row>) -> Result<()> {
    let region = sizes.first_write_region;
    let raw = dir.join("raw.img");
    let volume_path = dir.join("volume.img");
    image(&raw, region, region, 1)?;
    image(&volume_path, region, region, 1)?;
    let engine = Engine::open(&dir.join("store-write"), options())?;
    let volume = engine
        .register_volume_with_provider(&volume_path, None, bench_provider()?)?
        .id;
    let device = engine.open_volume(volume)?;

    let (mut raw_samples, mut ours_samples) = (Vec::new(), Vec::new());
    let mut first_shadow = None;
    for repetition in 0..REPETITIONS {
        let shadow = create(&engine, volume)?;
        first_shadow.get_or_insert(shadow);
        let seed = 2 + repetition as u8;
        raw_samples.push(raw_sequential(&raw, region, seed)?);
        ours_samples.push(engine_sequential(&*device, region, seed)?);
    }
    let (raw_time, ours_time) = (best(&raw_samples), best(&ours_samples));
    rows.push(Row {
        what: format!(
            "first write after a shadow, 64 KiB sequential, {} MiB",
            region / MIB
        ),
        ours: rate(region, ours_time),
        baseline: rate(region, raw_time),
        ratio: seconds(raw_time) / seconds(ours_time),
        target: ">= 0.40".into(),
    });

    let (mut raw_samples, mut ours_samples) = (Vec::new(), Vec::new());
    for repetition in 0..REPETITIONS {
        let seed = 10 + repetition as u8;
        raw_samples.push(raw_sequential(&raw, region, seed)?);
        ours_samples.push(engine_sequential(&*device, region, seed)?);
    }
    let (raw_time, ours_time) = (best(&raw_samples), best(&ours_samples));
    rows.push(Row {
        what: "rewrite of preserved chunks, 64 KiB sequential".into(),
        ours: rate(region, ours_time),
        baseline: rate(region, raw_time),
        ratio: seconds(raw_time) / seconds(ours_time),
        target: ">= 0.90".into(),
    });

    // Shadow read: the first shadow's chunks are all in the diff area now.
    let shadow_device = engine.open_shadow(first_shadow.ok_or("no shadow")?)?;
    let mut buffer = vec![0u8; MIB as usize];
    let raw_file = File::open(&raw)?;
    let (mut raw_samples, mut ours_samples) = (Vec::new(), Vec::new());
    for _ in 0..REPETITIONS {
        let start = Instant::now();
        let mut offset = 0;
        while offset < region {
            raw_file.read_exact_at(&mut buffer, offset)?;
            offset += MIB;
        }
        raw_samples.push(start.elapsed());
        let start = Instant::now();
        let mut offset = 0;
        while offset < region {
            shadow_device.read_at(offset, &mut buffer)?;
            offset += MIB;
        }
        ours_samples.push(start.elapsed());
    }
    let (raw_read, ours_read) = (best(&raw_samples), best(&ours_samples));
    rows.push(Row {
        what: "full shadow read, 1 MiB reads".into(),
        ours: rate(region, ours_read),
        baseline: rate(region, raw_read),
        ratio: seconds(raw_read) / seconds(ours_read),
        target: ">= 0.80".into(),
    });

    // 4 KiB random first writes, each in its own chunk, after a new shadow.
    let offsets = random_offsets(region, sizes.random_writes);
    let raw_file = OpenOptions::new().write(true).open(&raw)?;
    let (mut raw_samples, mut ours_samples) = (Vec::new(), Vec::new());
    for _ in 0..REPETITIONS {
        create(&engine, volume)?;
        raw_samples.push(time_random(
            &offsets,
            |offset, data| Ok(raw_file.write_all_at(data, offset)?),
            || Ok(raw_file.sync_data()?),
        )?);
        ours_samples.push(time_random(
            &offsets,
            |offset, data| Ok(device.write_at(offset, data)?),
            || Ok(device.flush()?),
        )?);
    }
    let (raw_time, ours_time) = (best(&raw_samples), best(&ours_samples));
    rows.push(Row {
        what: format!(
            "first write after a shadow, 4 KiB random, {} writes",
            offsets.len()
        ),
        ours: format!("{:.0} IOPS", offsets.len() as f64 / seconds(ours_time)),
        baseline: format!("{:.0} IOPS", offsets.len() as f64 / seconds(raw_time)),
        ratio: seconds(raw_time) / seconds(ours_time),
        target: "(reported)".into(),
    });
    Ok(())
}

/// First-write throughput of a volume that has `shadows` shadows (each older one owning some
/// preserved chunks, so the block map holds many tags). The repetitions run with the last
/// `REPETITIONS` shadows being created, so the count is reached at the last one.
fn first_write_with_shadows(dir: &Path, region: u64, shadows: usize) -> Result<Duration> {
    let path = dir.join(format!("count-{shadows}.img"));
    image(&path, region * 2, region * 2, 1)?;
    let engine = Engine::open(&dir.join(format!("store-count-{shadows}")), options())?;
    let volume = engine.register_volume(&path, None)?.id;
    let device = engine.open_volume(volume)?;
    let chunks = region / WRITE;
    let block = vec![7u8; WRITE as usize];
    for index in 0..shadows.saturating_sub(REPETITIONS) as u64 {
        create(&engine, volume)?;
        // Scatter some first writes over the measured region too.
        device.write_at((index * 7919 % chunks) * WRITE, &block)?;
        device.write_at(region + (index % chunks) * WRITE, &block)?;
    }
    device.flush()?;
    let mut samples = Vec::new();
    for repetition in 0..REPETITIONS {
        create(&engine, volume)?;
        samples.push(engine_sequential(&*device, region, 9 + repetition as u8)?);
    }
    Ok(best(&samples))
}

fn bench_shadow_count(dir: &Path, sizes: &Sizes, rows: &mut Vec<Row>) -> Result<()> {
    let region = sizes.shadow_count_region;
    let mut results = Vec::new();
    for count in [64usize, 512] {
        results.push((count, first_write_with_shadows(dir, region, count)?));
    }
    // The baseline runs last: the first run of the group pays for write-back left over from
    // earlier groups, which would flatter the many-shadow runs.
    let one = first_write_with_shadows(dir, region, REPETITIONS)?;
    for (count, many) in results {
        rows.push(Row {
            what: format!(
                "first-write throughput with {count} shadows vs {REPETITIONS}, {} MiB",
                region / MIB
            ),
            ours: rate(region, many),
            baseline: rate(region, one),
            ratio: seconds(one) / seconds(many),
            target: ">= 0.90".into(),
        });
    }
    Ok(())
}

fn bench_revert(dir: &Path, sizes: &Sizes, rows: &mut Vec<Row>) -> Result<Duration> {
    let size = sizes.revert_volume;
    let path = dir.join("revert.img");
    image(&path, size, size, 1)?;
    let engine = Engine::open(&dir.join("store-revert"), options())?;
    let volume = engine.register_volume(&path, None)?.id;
    let device = engine.open_volume(volume)?;
    let shadow = create(&engine, volume)?;
    let block = vec![4u8; WRITE as usize];
    let chunks = size / WRITE;
    for index in 0..chunks / 100 {
        device.write_at((index * 100 + 37) % chunks * WRITE, &block)?;
    }
    device.flush()?;
    let start = Instant::now();
    engine.revert(shadow, &NoProgress)?;
    let revert_time = start.elapsed();

    let copy_target = dir.join("copy.img");
    let source = File::open(&path)?;
    let target = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&copy_target)?;
    let mut buffer = vec![0u8; MIB as usize];
    let start = Instant::now();
    let mut offset = 0;
    while offset < size {
        source.read_exact_at(&mut buffer, offset)?;
        target.write_all_at(&buffer, offset)?;
        offset += MIB;
    }
    target.sync_data()?;
    let copy_time = start.elapsed();
    std::fs::remove_file(&copy_target)?;
    rows.push(Row {
        what: format!(
            "revert after changing 1% of {} MiB vs copying the volume",
            size / MIB
        ),
        ours: millis(revert_time),
        baseline: millis(copy_time),
        ratio: seconds(revert_time) / seconds(copy_time),
        target: "< 0.05".into(),
    });
    Ok(revert_time)
}

fn bench_qemu(dir: &Path, sizes: &Sizes, rows: &mut Vec<Row>) -> Result<()> {
    if !have("qemu-img") || !have("qemu-io") {
        eprintln!(
            "skipped: qcow2 comparison needs qemu-img and qemu-io (apt-get install qemu-utils)"
        );
        return Ok(());
    }
    let size = sizes.revert_volume;
    let image_path = dir.join("bench.qcow2");
    let image = image_path.to_string_lossy().into_owned();
    let size_text = size.to_string();
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", &image, &size_text],
    )?;
    // qemu-io refuses requests of 2 GiB or more: fill in 512 MiB pieces.
    let mut fill: Vec<String> = Vec::new();
    let mut offset = 0;
    while offset < size {
        let piece = (size - offset).min(512 * MIB);
        fill.push("-c".into());
        fill.push(format!("write -q -P 1 {offset} {piece}"));
        offset += piece;
    }
    let mut arguments: Vec<&str> = vec!["-f", "qcow2"];
    arguments.extend(fill.iter().map(String::as_str));
    arguments.push(&image);
    run("qemu-io", &arguments)?;
    // Our create on a volume of the same size and data, for the same row.
    let ours_path = dir.join("qemu-peer.img");
    self::image(&ours_path, size, size, 1)?;
    let engine = Engine::open(&dir.join("store-qemu"), options())?;
    let volume = engine.register_volume(&ours_path, None)?.id;
    let start = Instant::now();
    let shadow = create(&engine, volume)?;
    let ours_create = start.elapsed();
    let qemu_create = run("qemu-img", &["snapshot", "-c", "s1", &image])?;
    rows.push(Row {
        what: format!(
            "create vs qemu-img snapshot -c, {} MiB full image",
            size / MIB
        ),
        ours: millis(ours_create),
        baseline: millis(qemu_create),
        ratio: seconds(ours_create) / seconds(qemu_create),
        target: "(lower is better)".into(),
    });

    let startup = run("qemu-io", &["-f", "qcow2", "-c", "read -q 0 512", &image])?;
    let region = sizes.first_write_region.min(size);
    let qemu_write = run(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            &format!("write -q -P 2 0 {region}"),
            "-c",
            "flush",
            &image,
        ],
    )?
    .saturating_sub(startup);
    let device = engine.open_volume(volume)?;
    let ours_write = engine_sequential(&*device, region, 2)?;
    rows.push(Row {
        what: format!(
            "first write after a shadow vs qcow2 after snapshot -c, {} MiB",
            region / MIB
        ),
        ours: rate(region, ours_write),
        baseline: rate(region, qemu_write),
        ratio: seconds(qemu_write) / seconds(ours_write),
        target: "(higher is better)".into(),
    });

    // Revert: change 1% after the snapshot, then snapshot -a.
    let chunks = size / WRITE;
    let mut commands = Vec::new();
    for index in 0..chunks / 100 {
        commands.push("-c".to_string());
        commands.push(format!(
            "write -q -P 4 {} 65536",
            (index * 100 + 37) % chunks * WRITE
        ));
    }
    run("qemu-img", &["snapshot", "-c", "s2", &image])?;
    let mut arguments: Vec<&str> = vec!["-f", "qcow2"];
    arguments.extend(commands.iter().map(String::as_str));
    arguments.push(&image);
    run("qemu-io", &arguments)?;
    let qemu_revert = run("qemu-img", &["snapshot", "-a", "s2", &image])?;
    let second = create(&engine, volume)?;
    let block = vec![4u8; WRITE as usize];
    for index in 0..chunks / 100 {
        device.write_at((index * 100 + 37) % chunks * WRITE, &block)?;
    }
    device.flush()?;
    let start = Instant::now();
    engine.revert(second, &NoProgress)?;
    let ours_revert = start.elapsed();
    let _ = shadow;
    rows.push(Row {
        what: "revert after changing 1% vs qemu-img snapshot -a".into(),
        ours: millis(ours_revert),
        baseline: millis(qemu_revert),
        ratio: seconds(ours_revert) / seconds(qemu_revert),
        target: "(lower is better)".into(),
    });
    Ok(())
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|argument| argument == "--quick")
        || std::env::var_os("DISKSHADOW_BENCH_QUICK").is_some();
    let sizes = if quick {
        Sizes {
            big_volume_data: 256 * MIB,
            first_write_region: 256 * MIB,
            random_writes: 2048,
            shadow_count_region: 64 * MIB,
            revert_volume: 256 * MIB,
        }
    } else {
        Sizes {
            big_volume_data: 8 * GIB,
            first_write_region: GIB,
            random_writes: 8192,
            shadow_count_region: 256 * MIB,
            revert_volume: 4 * GIB,
        }
    };
    let work = tempfile::Builder::new()
        .prefix("diskshadow-bench")
        .tempdir_in(std::env::temp_dir())?;
    let dir: PathBuf = work.path().to_path_buf();
    let mut rows = Vec::new();
    // `DISKSHADOW_BENCH_ONLY=writes` (create, writes, count, revert, qemu) runs one group,
    // e.g. under a profiler.
    let only = std::env::var("DISKSHADOW_BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|only| only == name);
    if wanted("create") {
        bench_create(&dir, &sizes, &mut rows)?;
    }
    if wanted("writes") {
        bench_writes(&dir, &sizes, &mut rows)?;
    }
    if wanted("count") {
        bench_shadow_count(&dir, &sizes, &mut rows)?;
    }
    if wanted("revert") {
        bench_revert(&dir, &sizes, &mut rows)?;
    }
    if wanted("qemu") {
        if let Err(error) = bench_qemu(&dir, &sizes, &mut rows) {
            eprintln!("skipped: the qcow2 comparison failed: {error}");
        }
    }

    println!(
        "diskshadow engine benchmark ({} mode, chunk size {} KiB)",
        if quick { "quick" } else { "full" },
        DEFAULT_CHUNK_SIZE / 1024
    );
    println!(
        "{:<72} {:>14} {:>14} {:>8}  target",
        "workload", "engine", "baseline", "ratio"
    );
    for row in rows {
        println!(
            "{:<72} {:>14} {:>14} {:>8.3}  {}",
            row.what, row.ours, row.baseline, row.ratio, row.target
        );
    }
    Ok(())
}
