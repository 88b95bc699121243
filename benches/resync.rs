//! LUN resync against a plain copy, in one run.
//!
//! `cargo bench --bench resync` uses a 64 GiB sparse LUN holding 8 GiB of data;
//! `cargo bench --bench resync -- --quick` (or `DISKSHADOW_BENCH_QUICK=1`) a 4 GiB LUN with
//! 512 MiB. A persistent copy-on-write shadow of the LUN is made, then:
//!
//! - 1% of the data is overwritten (the damage) and the shadow is resynchronized onto the
//!   original: only what changed is copied back;
//! - the shadow is resynchronized onto a new, empty LUN: every data chunk is copied, holes
//!   stay holes.
//!
//! The baseline is what an administrator would otherwise run: `cp --sparse=always
//! --reflink=never` of the whole LUN image, then `fdatasync` of the copy. Both sides end with
//! the data durable. Best of three for each.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskshadow::engine::clock::{RandomIds, SystemClock};
use diskshadow::engine::core::{EngineOptions, DEFAULT_CHUNK_SIZE};
use diskshadow::engine::model::{CreateSpec, CreateVolume, RequesterId};
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn options() -> EngineOptions {
    EngineOptions::new(
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        "bench",
        DEFAULT_CHUNK_SIZE,
        Arc::new(RealBackend),
    )
}

/// A sparse file of `size` whose first `data` bytes hold data, synced.
fn image(path: &Path, size: u64, data: u64) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(size)?;
    let mut block = vec![0u8; MIB as usize];
    let mut offset = 0;
    while offset < data {
        for (index, byte) in block.iter_mut().enumerate() {
            *byte = ((offset / MIB) as u8).wrapping_add((index / 4096) as u8) | 1;
        }
        let length = (data - offset).min(MIB);
        file.write_all_at(&block[..length as usize], offset)?;
        offset += length;
    }
    file.sync_all()?;
    Ok(())
}

fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// The plain copy: `cp` of the whole image, then the copy made durable.
fn plain_copy(from: &Path, to: &Path) -> Result<Duration> {
    let _ = std::fs::remove_file(to);
    settle();
    let started = Instant::now();
    let status = Command::new("cp")
        .args(["--sparse=always", "--reflink=never"])
        .arg(from)
        .arg(to)
        .status()?;
    if !status.success() {
        return Err(format!("cp failed: {status}").into());
    }
    File::open(to)?.sync_data()?;
    Ok(started.elapsed())
}

fn best(samples: &[Duration]) -> Duration {
    samples.iter().copied().min().unwrap_or_default()
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|argument| argument == "--quick")
        || std::env::var_os("DISKSHADOW_BENCH_QUICK").is_some();
    let (lun_bytes, data_bytes) = if quick {
        (4 * GIB, 512 * MIB)
    } else {
        (64 * GIB, 8 * GIB)
    };
    let work = tempfile::Builder::new()
        .prefix("diskshadow-bench-resync")
        .tempdir_in(std::env::temp_dir())?;
    let dir = work.path();
    let lun = dir.join("lun.img");
    let spare = dir.join("spare.img");
    let copy = dir.join("copy.img");
    image(&lun, lun_bytes, data_bytes)?;
    image(&spare, lun_bytes, 0)?;

    let engine = Engine::open(&dir.join("store"), options())?;
    let volume = engine.register_volume(&lun, None)?.id;
    let destination = engine.register_volume(&spare, None)?.id;
    let shadow = engine
        .create_shadow_set(&CreateSpec {
            volumes: vec![CreateVolume {
                volume,
                provider: None,
            }],
            context: Context::PersistentNoWriters,
            extra_attributes: Attributes::default(),
            requester: RequesterId(1),
            set_id: None,
        })?
        .shadows[0]
        .id;
    let device = engine.open_volume(volume)?;
    let damage = data_bytes / 100;
    let damage_block = vec![0xA5u8; MIB as usize];

    let (mut onto_original, mut onto_new, mut copies) = (Vec::new(), Vec::new(), Vec::new());
    let mut copied_new = 0;
    for round in 0..3u64 {
        // The damage: 1% of the data, spread over the LUN in 1 MiB pieces.
        let pieces = (damage / MIB).max(1);
        let stride = data_bytes / pieces;
        for piece in 0..pieces {
            device.write_at(piece * stride + round * 4096, &damage_block)?;
        }
        device.flush()?;
        settle();
        let started = Instant::now();
        engine.resync(shadow, None, &NoProgress)?;
        onto_original.push(started.elapsed());

        settle();
        let started = Instant::now();
        let outcome = engine.resync(shadow, Some(destination), &NoProgress)?;
        onto_new.push(started.elapsed());
        copied_new = outcome.bytes_copied;
        // The next round starts from an empty destination again.
        let spare_device = engine.open_volume(destination)?;
        spare_device.write_zeroes(0, lun_bytes, true)?;
        spare_device.flush()?;

        copies.push(plain_copy(&lun, &copy)?);
    }
    let (original, new, copy_time) = (best(&onto_original), best(&onto_new), best(&copies));
    println!(
        "diskshadow resync benchmark ({} mode: {} GiB LUN, {} MiB of data, chunk size {} KiB)",
        if quick { "quick" } else { "full" },
        lun_bytes / GIB,
        data_bytes / MIB,
        DEFAULT_CHUNK_SIZE / 1024
    );
    println!(
        "{:<64} {:>10} {:>10} {:>8}",
        "workload", "resync", "cp", "ratio"
    );
    println!(
        "{:<64} {:>9.3}s {:>9.3}s {:>8.3}",
        format!(
            "resync onto the original after 1% damage ({} MiB)",
            damage / MIB
        ),
        original.as_secs_f64(),
        copy_time.as_secs_f64(),
        original.as_secs_f64() / copy_time.as_secs_f64()
    );
    println!(
        "{:<64} {:>9.3}s {:>9.3}s {:>8.3}",
        format!("resync onto a new LUN ({} MiB copied)", copied_new / MIB),
        new.as_secs_f64(),
        copy_time.as_secs_f64(),
        new.as_secs_f64() / copy_time.as_secs_f64()
    );
    Ok(())
}
