//! How the copy-on-write chunk size trades first-write speed against diff-area space: the
//! measurements behind the 64 KiB default. Each figure is a ratio against raw I/O on a plain
//! file measured in the same run; every timed write phase ends durable (fdatasync / flush) and
//! both read phases start with nothing cached.
//!
//! `cargo bench --bench chunk_size` (256 MiB volumes) or `-- --quick` (64 MiB).

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskshadow::engine::clock::{RandomIds, SystemClock};
use diskshadow::engine::core::EngineOptions;
use diskshadow::engine::model::{CreateSpec, CreateVolume, RequesterId};
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Fills `path` with `size` bytes of non-zero data, so preservation copies real chunks.
fn filled_image(path: &Path, size: u64) -> Result<()> {
    let file = File::create(path)?;
    let block: Vec<u8> = (0..MIB).map(|index| (index % 251) as u8 + 1).collect();
    for offset in (0..size).step_by(MIB as usize) {
        file.write_all_at(&block, offset)?;
    }
    file.sync_all()?;
    Ok(())
}

/// `count` 4 KiB write offsets spread over `size`, in a shuffled order, each in its own 64 KiB.
fn random_offsets(size: u64, count: u64) -> Vec<u64> {
    let slots = size / (64 * KIB);
    (0..count)
        .map(|index| (index * 7919 % slots) * 64 * KIB + 4 * KIB)
        .collect()
}

/// Writes every dirty page back, so each timed phase starts from the same state.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Starts a read phase with nothing cached, on both sides alike: the engine drops the diff
/// area's synced pages itself, so a raw baseline read from the page cache would not be a fair
/// comparison. Needs root; without it the reads are as warm as they happen to be.
fn cold() {
    settle();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
}

struct Figures {
    sequential: Duration,
    random: Duration,
    read: Duration,
    diff_bytes_after_random: u64,
}

fn raw(path: &Path, size: u64, random: &[u64]) -> Result<Figures> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let block = vec![0x5au8; (64 * KIB) as usize];
    settle();
    let start = Instant::now();
    for offset in (0..size / 2).step_by(block.len()) {
        file.write_all_at(&block, offset)?;
    }
    file.sync_data()?;
    let sequential = start.elapsed();
    let small = vec![0xa5u8; (4 * KIB) as usize];
    settle();
    let start = Instant::now();
    for offset in random {
        file.write_all_at(&small, *offset)?;
    }
    file.sync_data()?;
    let random = start.elapsed();
    let mut buffer = vec![0u8; MIB as usize];
    cold();
    let start = Instant::now();
    for offset in (0..size).step_by(MIB as usize) {
        file.read_exact_at(&mut buffer, offset)?;
    }
    let read = start.elapsed();
    Ok(Figures {
        sequential,
        random,
        read,
        diff_bytes_after_random: 0,
    })
}

fn engine(
    store: &Path,
    path: &Path,
    size: u64,
    chunk_size: u32,
    random: &[u64],
) -> Result<Figures> {
    let options = EngineOptions::new(
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        "bench",
        chunk_size,
        Arc::new(RealBackend),
    );
    let engine = Engine::open(store, options)?;
    let volume = engine.register_volume(path, Some(chunk_size))?;
    let spec = CreateSpec {
        volumes: vec![CreateVolume {
            volume: volume.id,
            provider: None,
        }],
        context: Context::PersistentNoWriters,
        extra_attributes: Attributes::default(),
        requester: RequesterId(1),
        set_id: None,
    };
    let device = engine.open_volume(volume.id)?;
    let first = engine.create_shadow_set(&spec)?.shadows[0].id;
    let block = vec![0x5au8; (64 * KIB) as usize];
    settle();
    let start = Instant::now();
    for offset in (0..size / 2).step_by(block.len()) {
        device.write_at(offset, &block)?;
    }
    device.flush()?;
    let sequential = start.elapsed();
    engine.create_shadow_set(&spec)?;
    let used_before = engine
        .storage()
        .iter()
        .map(|entry| entry.used_bytes)
        .sum::<u64>();
    let small = vec![0xa5u8; (4 * KIB) as usize];
    settle();
    let start = Instant::now();
    for offset in random {
        device.write_at(*offset, &small)?;
    }
    device.flush()?;
    let random_time = start.elapsed();
    let used_after = engine
        .storage()
        .iter()
        .map(|entry| entry.used_bytes)
        .sum::<u64>();
    let shadow = engine.open_shadow(first)?;
    let mut buffer = vec![0u8; MIB as usize];
    cold();
    let start = Instant::now();
    for offset in (0..size).step_by(MIB as usize) {
        shadow.read_at(offset, &mut buffer)?;
    }
    let read = start.elapsed();
    Ok(Figures {
        sequential,
        random: random_time,
        read,
        diff_bytes_after_random: used_after.saturating_sub(used_before),
    })
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|argument| argument == "--quick");
    let size = if quick { 64 * MIB } else { 256 * MIB };
    let random = random_offsets(size, 1024);
    let work = tempfile::tempdir()?;
    println!(
        "diskshadow chunk-size benchmark ({} MiB volume, {} random 4 KiB writes)",
        size / MIB,
        random.len()
    );
    println!(
        "{:>8}  {:>22}  {:>20}  {:>20}  {:>24}",
        "chunk",
        "64 KiB first writes",
        "4 KiB first writes",
        "shadow read",
        "diff area per 4 KiB write"
    );
    for chunk_size in [4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB] {
        let raw_path = work.path().join(format!("raw-{chunk_size}.img"));
        filled_image(&raw_path, size)?;
        let baseline = raw(&raw_path, size, &random)?;
        std::fs::remove_file(&raw_path)?;
        let path = work.path().join(format!("volume-{chunk_size}.img"));
        filled_image(&path, size)?;
        let figures = engine(
            &work.path().join(format!("store-{chunk_size}")),
            &path,
            size,
            chunk_size as u32,
            &random,
        )?;
        std::fs::remove_file(&path)?;
        println!(
            "{:>6} K  {:>22}  {:>20}  {:>20}  {:>24}",
            chunk_size / KIB,
            format!(
                "{:.2} of raw",
                baseline.sequential.as_secs_f64() / figures.sequential.as_secs_f64()
            ),
            format!(
                "{:.2} of raw",
                baseline.random.as_secs_f64() / figures.random.as_secs_f64()
            ),
            format!(
                "{:.2} of raw",
                baseline.read.as_secs_f64() / figures.read.as_secs_f64()
            ),
            format!(
                "{} KiB",
                figures.diff_bytes_after_random / random.len() as u64 / KIB
            ),
        );
    }
    Ok(())
}
