//! What the engine benchmarks share: test images, raw-file baselines, timing and figures.
//! Every timed write phase ends with the data durable (a flush / `fdatasync`), on both sides.

// Each benchmark uses a part of this module.
#![allow(dead_code)]

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskshadow::engine::clock::{RandomIds, SystemClock};
use diskshadow::engine::core::{EngineOptions, DEFAULT_CHUNK_SIZE};
use diskshadow::engine::device::BlockDevice;
use diskshadow::engine::ids::{ShadowId, VolumeId};
use diskshadow::engine::model::{CreateSpec, CreateVolume, RequesterId};
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;

pub type Result<T> = std::result::Result<T, Box<dyn Error>>;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;
/// The size of one sequential write.
pub const WRITE: u64 = 64 * KIB;
/// The size of one sequential read.
pub const READ: u64 = MIB;

pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

pub fn rate(bytes: u64, duration: Duration) -> String {
    format!(
        "{:.0} MiB/s",
        bytes as f64 / MIB as f64 / seconds(duration).max(1e-9)
    )
}

pub fn millis(duration: Duration) -> String {
    format!("{:.2} ms", seconds(duration) * 1000.0)
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The fastest sample: other work on the machine only ever makes a run slower.
pub fn best(samples: &[Duration]) -> Duration {
    samples.iter().copied().min().unwrap_or_default()
}

pub fn options() -> EngineOptions {
    EngineOptions::new(
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        "bench",
        DEFAULT_CHUNK_SIZE,
        Arc::new(RealBackend),
    )
}

/// A persistent shadow of one volume, without writers.
pub fn spec(volume: VolumeId) -> CreateSpec {
    CreateSpec {
        volumes: vec![CreateVolume {
            volume,
            provider: None,
        }],
        context: Context::PersistentNoWriters,
        extra_attributes: Attributes::default(),
        requester: RequesterId(1),
        set_id: None,
    }
}

pub fn create(engine: &Engine, volume: VolumeId) -> Result<ShadowId> {
    Ok(engine.create_shadow_set(&spec(volume))?.shadows[0].id)
}

/// A sparse file of `size` with its first `data` bytes written and synced.
pub fn image(path: &Path, size: u64, data: u64, seed: u8) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(size)?;
    let block = vec![seed; MIB as usize];
    let mut offset = 0;
    while offset < data {
        let length = (data - offset).min(MIB);
        file.write_all_at(&block[..length as usize], offset)?;
        offset += length;
    }
    file.sync_all()?;
    Ok(())
}

/// Writes every dirty page of the machine back, so that each timed run starts from the same
/// state instead of paying for write-back left by the previous one.
/// The parts of a benchmark named on its command line (arguments after `--` that are not
/// options); `runs(part)` is true for every part when none is named.
pub struct NamedParts(Vec<String>);

impl NamedParts {
    pub fn from_args() -> NamedParts {
        NamedParts(
            std::env::args()
                .skip(1)
                .filter(|argument| !argument.starts_with('-'))
                .collect(),
        )
    }

    pub fn runs(&self, part: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|name| name == part)
    }
}

pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Raw file I/O: `region` bytes written sequentially in 64 KiB writes, then `fdatasync`.
pub fn raw_sequential(path: &Path, region: u64, seed: u8) -> Result<Duration> {
    settle();
    let file = OpenOptions::new().write(true).open(path)?;
    let block = vec![seed; WRITE as usize];
    let start = Instant::now();
    let mut offset = 0;
    while offset < region {
        file.write_all_at(&block, offset)?;
        offset += WRITE;
    }
    file.sync_data()?;
    Ok(start.elapsed())
}

/// The same through a diskshadow device, ending with its flush.
pub fn engine_sequential(device: &dyn BlockDevice, region: u64, seed: u8) -> Result<Duration> {
    settle();
    let block = vec![seed; WRITE as usize];
    let start = Instant::now();
    let mut offset = 0;
    while offset < region {
        device.write_at(offset, &block)?;
        offset += WRITE;
    }
    device.flush()?;
    Ok(start.elapsed())
}

/// Reads `region` bytes sequentially in 1 MiB reads with `read`.
pub fn timed_read(
    region: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<Duration> {
    let mut buffer = vec![0u8; READ as usize];
    let start = Instant::now();
    let mut offset = 0;
    while offset < region {
        let length = (region - offset).min(READ) as usize;
        read(offset, &mut buffer[..length])?;
        offset += length as u64;
    }
    Ok(start.elapsed())
}

/// Raw file I/O: `source`'s first `size` bytes copied to a new file `target` in 1 MiB
/// pieces, then `fdatasync` (what a full copy costs without diskshadow).
pub fn raw_copy(source: &Path, target: &Path, size: u64) -> Result<Duration> {
    settle();
    let input = File::open(source)?;
    let output = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(target)?;
    let mut buffer = vec![0u8; READ as usize];
    let start = Instant::now();
    let mut offset = 0;
    while offset < size {
        let length = (size - offset).min(READ) as usize;
        input.read_exact_at(&mut buffer[..length], offset)?;
        output.write_all_at(&buffer[..length], offset)?;
        offset += length as u64;
    }
    output.sync_data()?;
    let elapsed = start.elapsed();
    drop(output);
    std::fs::remove_file(target)?;
    Ok(elapsed)
}

pub fn run(program: &str, arguments: &[&str]) -> Result<Duration> {
    let start = Instant::now();
    let output = Command::new(program).args(arguments).output()?;
    if !output.status.success() {
        return Err(format!(
            "{program} {arguments:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(start.elapsed())
}

pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Whether files in `dir` can share blocks (FICLONE works).
pub fn has_reflink(dir: &Path) -> bool {
    let (source, target) = (dir.join("reflink-probe"), dir.join("reflink-probe-clone"));
    let works = std::fs::write(&source, [1u8; 4096]).is_ok()
        && run(
            "cp",
            &[
                "--reflink=always",
                &source.to_string_lossy(),
                &target.to_string_lossy(),
            ],
        )
        .is_ok();
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&target);
    works
}

/// An XFS file system with reflink, in a sparse image file loop-mounted at `mount`;
/// unmounted (and its loop device released) when dropped.
pub struct XfsReflink {
    pub mount: PathBuf,
}

impl XfsReflink {
    pub fn mount(dir: &Path, size: u64) -> Result<XfsReflink> {
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root (mounting needs it)".into());
        }
        // mkfs.xfs knows -V, not --version.
        if run("mkfs.xfs", &["-V"]).is_err() {
            return Err("mkfs.xfs is missing (apt-get install xfsprogs)".into());
        }
        let file = dir.join("xfs.img");
        File::create(&file)?.set_len(size)?;
        let file_text = file.to_string_lossy().into_owned();
        run("mkfs.xfs", &["-q", "-m", "reflink=1", &file_text])?;
        let mount = dir.join("xfs");
        std::fs::create_dir_all(&mount)?;
        run(
            "mount",
            &["-o", "loop", &file_text, &mount.to_string_lossy()],
        )?;
        Ok(XfsReflink { mount })
    }
}

impl Drop for XfsReflink {
    fn drop(&mut self) {
        if run("umount", &[&self.mount.to_string_lossy()]).is_err() {
            eprintln!("warning: could not unmount {}", self.mount.display());
        }
    }
}
