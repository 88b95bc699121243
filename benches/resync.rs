//! The array provider's create and LUN resync against a plain copy, in one run.
//!
//! `cargo bench --bench resync` uses a 64 GiB sparse LUN holding 8 GiB of data, one sample of
//! each figure; `cargo bench --bench resync -- --quick` (or `DISKSHADOW_BENCH_QUICK=1`) a 4 GiB
//! LUN with 512 MiB, best of three. The LUN lives in an array attached to the store, so a
//! shadow of it goes to the array provider (VSS's choice for a volume an array holds), twice:
//!
//! - on a plain directory (the benchmark's file system): the shadow LUN is a full copy made
//!   after thaw, compared with `cp --sparse=always --reflink=never` + `fdatasync`;
//! - as root with `mkfs.xfs`, on a loop-mounted XFS with `reflink=1`: the shadow LUN is a
//!   reflink clone, compared with `cp --reflink=always` + `fdatasync`.
//!
//! Then, on each, 1% of the data is overwritten (the damage) and the shadow is resynchronized
//! onto the original, and onto a new, empty LUN (every data chunk copied, holes stay holes),
//! both against the plain `cp` of the whole LUN on the same file system. Every timed phase ends
//! with the data durable.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use diskshadow::engine::array::provider::ARRAY_PROVIDER_ID;
use diskshadow::engine::core::DEFAULT_CHUNK_SIZE;
use diskshadow::engine::model::DeleteSelector;
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::Engine;
use std::fs::File;

use support::{best, image, options, settle, spec, Result, XfsReflink, GIB, MIB};

/// `cp` of the whole image with `mode` (`--reflink=always` or `--reflink=never`), then the
/// copy made durable; the copy is removed afterwards.
fn copy(from: &Path, to: &Path, mode: &str) -> Result<Duration> {
    let _ = std::fs::remove_file(to);
    settle();
    let started = Instant::now();
    // cp refuses --sparse=always with --reflink=always (a clone keeps the holes anyway).
    let sparse = if mode == "--reflink=always" {
        "--sparse=auto"
    } else {
        "--sparse=always"
    };
    let status = Command::new("cp")
        .args([sparse, mode])
        .arg(from)
        .arg(to)
        .status()?;
    if !status.success() {
        return Err(format!("cp {mode} failed: {status}").into());
    }
    File::open(to)?.sync_data()?;
    let elapsed = started.elapsed();
    std::fs::remove_file(to)?;
    Ok(elapsed)
}

struct Sizes {
    lun: u64,
    data: u64,
    rounds: u64,
}

/// One array's figures.
struct Figures {
    name: &'static str,
    create_commit: Duration,
    create_total: Duration,
    create_baseline: Duration,
    create_baseline_name: &'static str,
    onto_original: Duration,
    copied_original: u64,
    onto_new: Duration,
    copied_new: u64,
    plain_copy: Duration,
}

/// The whole run on an array made in `dir` (removed afterwards); `reflink` says whether the
/// array's file system shares blocks.
fn bench_array(dir: &Path, name: &'static str, reflink: bool, sizes: &Sizes) -> Result<Figures> {
    let array = dir.join("array");
    let luns = array.join("luns");
    std::fs::create_dir_all(&luns)?;
    let lun = luns.join("lun.img");
    let spare = luns.join("spare.img");
    let scratch = array.join("copy.img");
    image(&lun, sizes.lun, sizes.data, 0x5a)?;
    image(&spare, sizes.lun, 0, 0)?;

    let engine = Engine::open(&dir.join("store"), options())?;
    engine.attach_array(&array, Some("bench"))?;
    let volume = engine.register_volume(&lun, None)?.id;
    let destination = engine.register_volume(&spare, None)?.id;

    // Create: the commit (the reflink clone, or the point in time of a full copy), then the
    // full copy after thaw.
    let (mut commits, mut totals, mut shadow) = (Vec::new(), Vec::new(), None);
    for _ in 0..sizes.rounds {
        if shadow.is_some() {
            engine.delete_shadows(&DeleteSelector::All)?;
        }
        settle();
        let started = Instant::now();
        let created = engine.create_shadow_set(&spec(volume))?;
        commits.push(started.elapsed());
        engine.complete_full_copies(Some(created.set_id), &NoProgress)?;
        totals.push(started.elapsed());
        let info = &created.shadows[0];
        if info.provider_id.0 != ARRAY_PROVIDER_ID {
            return Err(format!(
                "the shadow went to provider {:?}, not the array's",
                info.provider_id
            )
            .into());
        }
        shadow = Some(info.id);
    }
    let shadow = shadow.ok_or("no rounds")?;
    let (create_baseline_name, create_mode) = if reflink {
        ("cp --reflink=always", "--reflink=always")
    } else {
        ("cp --reflink=never", "--reflink=never")
    };
    let create_baselines = (0..sizes.rounds)
        .map(|_| copy(&lun, &scratch, create_mode))
        .collect::<Result<Vec<_>>>()?;

    let device = engine.open_volume(volume)?;
    let damage = sizes.data / 100;
    let damage_block = vec![0xA5u8; MIB as usize];
    let (mut onto_original, mut onto_new, mut copies) = (Vec::new(), Vec::new(), Vec::new());
    let (mut copied_original, mut copied_new) = (0, 0);
    for round in 0..sizes.rounds {
        // The damage: 1% of the data, spread over the LUN in 1 MiB pieces.
        let pieces = (damage / MIB).max(1);
        let stride = sizes.data / pieces;
        for piece in 0..pieces {
            device.write_at(piece * stride + round * 4096, &damage_block)?;
        }
        device.flush()?;
        settle();
        let started = Instant::now();
        let outcome = engine.resync(shadow, None, &NoProgress)?;
        onto_original.push(started.elapsed());
        copied_original = outcome.bytes_copied;

        settle();
        let started = Instant::now();
        let outcome = engine.resync(shadow, Some(destination), &NoProgress)?;
        onto_new.push(started.elapsed());
        copied_new = outcome.bytes_copied;
        // The next round starts from an empty destination again.
        let spare_device = engine.open_volume(destination)?;
        spare_device.write_zeroes(0, sizes.lun, true)?;
        spare_device.flush()?;

        copies.push(copy(&lun, &scratch, "--reflink=never")?);
    }
    drop(device);
    engine.delete_shadows(&DeleteSelector::All)?;
    drop(engine);
    std::fs::remove_dir_all(dir)?;
    Ok(Figures {
        name,
        create_commit: best(&commits),
        create_total: best(&totals),
        create_baseline: best(&create_baselines),
        create_baseline_name,
        onto_original: best(&onto_original),
        copied_original,
        onto_new: best(&onto_new),
        copied_new,
        plain_copy: best(&copies),
    })
}

fn row(workload: &str, ours: Duration, baseline_name: &str, baseline: Duration) {
    println!(
        "{:<66} {:>9.3}s {:<20} {:>9.3}s {:>8.3}",
        workload,
        ours.as_secs_f64(),
        baseline_name,
        baseline.as_secs_f64(),
        ours.as_secs_f64() / baseline.as_secs_f64()
    );
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|argument| argument == "--quick")
        || std::env::var_os("DISKSHADOW_BENCH_QUICK").is_some();
    let sizes = if quick {
        Sizes {
            lun: 4 * GIB,
            data: 512 * MIB,
            rounds: 3,
        }
    } else {
        Sizes {
            lun: 64 * GIB,
            data: 8 * GIB,
            rounds: 1,
        }
    };
    let work = tempfile::Builder::new()
        .prefix("diskshadow-bench-resync")
        .tempdir_in(std::env::temp_dir())?;
    let mut figures = vec![bench_array(
        &work.path().join("plain"),
        "plain directory (full copy)",
        false,
        &sizes,
    )?];
    // The XFS holds the LUN, the new LUN and the copy (the clone shares the LUN's blocks).
    match XfsReflink::mount(work.path(), 3 * sizes.data + 2 * GIB) {
        Ok(xfs) => {
            let result = bench_array(
                &xfs.mount.join("bench"),
                "XFS with reflink (clone)",
                true,
                &sizes,
            );
            drop(xfs);
            std::fs::remove_file(work.path().join("xfs.img"))?;
            figures.push(result?);
        }
        Err(reason) => eprintln!("skipped: the array on XFS with reflink: {reason}"),
    }

    println!(
        "diskshadow array and resync benchmark ({} mode: {} GiB LUN, {} MiB of data, chunk size {} KiB, {})",
        if quick { "quick" } else { "full" },
        sizes.lun / GIB,
        sizes.data / MIB,
        DEFAULT_CHUNK_SIZE / 1024,
        if sizes.rounds == 1 { "one sample".to_string() } else { format!("best of {}", sizes.rounds) }
    );
    println!(
        "{:<66} {:>10} {:<20} {:>10} {:>8}",
        "workload", "diskshadow", "baseline", "", "ratio"
    );
    for figure in &figures {
        println!("{}", figure.name);
        row(
            "  create through the array provider: commit",
            figure.create_commit,
            figure.create_baseline_name,
            figure.create_baseline,
        );
        row(
            "  create through the array provider: with the copy",
            figure.create_total,
            figure.create_baseline_name,
            figure.create_baseline,
        );
        row(
            &format!(
                "  resync onto the original after 1% damage ({} MiB; {} MiB copied)",
                sizes.data / 100 / MIB,
                figure.copied_original / MIB
            ),
            figure.onto_original,
            "cp --reflink=never",
            figure.plain_copy,
        );
        row(
            &format!(
                "  resync onto a new LUN ({} MiB copied)",
                figure.copied_new / MIB
            ),
            figure.onto_new,
            "cp --reflink=never",
            figure.plain_copy,
        );
    }
    Ok(())
}
