//! Data-path benchmarks through the paths users take, against qemu-nbd in the same run.
//!
//! `cargo bench --bench datapath` writes 512 MiB passes and converts a 16 GiB sparse share
//! with 1 GiB of data; `cargo bench --bench datapath -- --quick` (or
//! `DISKSHADOW_BENCH_QUICK=1`) scales that to 64 MiB and 1 GiB with 64 MiB of data, as CI's
//! smoke test does; parts named after `--` (`nbd`, `convert`, `fuse`, `cli`) run alone.
//! Clients are the real tools: `nbdcopy --flush` for NBD (diskshadow's attach, with the
//! copy-on-write and the redirect-on-write provider, and share against `qemu-nbd` on a raw
//! image and on a qcow2 image after `qemu-img snapshot -c`), `dd conv=fdatasync` for the FUSE
//! attachment (against `dd` to a raw file), `qemu-img convert` for the sparse share, and the
//! `diskshadow volume read|write` commands against `dd`/`cat`. Every write pass ends durable
//! on both sides; read phases start with the files involved dropped from the page cache on
//! both sides. A missing tool skips its rows and says so.

mod support;

use std::error::Error;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskshadow::engine::clock::{RandomIds, SystemClock};
use diskshadow::engine::core::{EngineOptions, DEFAULT_CHUNK_SIZE};
use diskshadow::engine::device::BlockDevice;
use diskshadow::engine::expose::{mount, serve_nbd, MountOptions, NbdListener};
use diskshadow::engine::ids::{ProviderId, ShadowId, VolumeId};
use diskshadow::engine::model::{CreateSpec, CreateVolume, RequesterId};
use diskshadow::engine::provider::ROW_PROVIDER_ID;
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;

use support::{best, run, NamedParts};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const MIB: u64 = 1024 * 1024;
/// Rounds of each timed write phase; the best is kept.
const ROUNDS: usize = 3;
const GIB: u64 = 1024 * MIB;

struct Sizes {
    pass: u64,
    sparse_volume: u64,
    sparse_data: u64,
}

struct Row {
    what: String,
    ours: String,
    baseline: String,
    ratio: f64,
    target: String,
}

fn rate(bytes: u64, duration: Duration) -> f64 {
    bytes as f64 / MIB as f64 / duration.as_secs_f64().max(1e-9)
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn settle() {
    // Dirty pages of one phase must not be written back during the next one.
    let _ = Command::new("sync").status();
}

/// Drops the cached pages of `paths` (files, or every file under a directory) after writing
/// them back, so that a read phase starts cold on both sides alike: the engine drops the
/// diff area's synced copies itself, and a raw baseline read from the page cache would not be
/// a fair comparison. Per file (`POSIX_FADV_DONTNEED`), not the whole machine's cache.
fn cold(paths: &[&Path]) {
    use std::os::fd::AsRawFd;
    settle();
    let mut pending: Vec<PathBuf> = paths.iter().map(|path| path.to_path_buf()).collect();
    let mut files: Vec<PathBuf> = Vec::new();
    while let Some(path) = pending.pop() {
        match std::fs::read_dir(&path) {
            Ok(entries) => pending.extend(entries.flatten().map(|entry| entry.path())),
            Err(_) => files.push(path),
        }
    }
    for path in files {
        if let Ok(file) = File::open(&path) {
            // SAFETY: posix_fadvise on an open descriptor only advises the page cache.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

fn options() -> EngineOptions {
    EngineOptions::new(
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        "BENCH",
        DEFAULT_CHUNK_SIZE,
        Arc::new(RealBackend),
    )
}

fn shadow_of(engine: &Engine, volume: VolumeId) -> Result<ShadowId> {
    let created = engine.create_shadow_set(&CreateSpec {
        volumes: vec![CreateVolume {
            volume,
            provider: None,
        }],
        context: Context::Persistent,
        extra_attributes: Attributes::default(),
        requester: RequesterId(1),
        set_id: None,
    })?;
    Ok(created.shadows[0].id)
}

/// A file of `size` bytes whose first `data` bytes are pseudo-random (incompressible, never
/// zero blocks) and whose rest is a hole.
fn image(path: &Path, size: u64, data: u64, seed: u8) -> Result<()> {
    let file = File::create(path)?;
    file.set_len(size)?;
    let mut block = vec![0u8; MIB as usize];
    let mut state = u64::from(seed) | 1;
    let mut written = 0;
    while written < data {
        for byte in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let piece = (data - written).min(MIB) as usize;
        file.write_all_at(&block[..piece], written)?;
        written += piece as u64;
    }
    file.sync_all()?;
    Ok(())
}

/// `qemu-nbd` serving `image` on a Unix socket until dropped.
struct QemuNbd {
    child: Child,
    url: String,
}

impl QemuNbd {
    fn start(image: &Path, format: &str, socket: &Path, read_only: bool) -> Result<QemuNbd> {
        let _ = std::fs::remove_file(socket);
        let mut command = Command::new("qemu-nbd");
        command.args(["-f", format, "-k"]).arg(socket).args([
            "--persistent",
            "--cache=writeback",
            "--shared=4",
        ]);
        if read_only {
            command.arg("-r");
        }
        let child = command
            .arg(image)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err("qemu-nbd did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(QemuNbd {
            child,
            url: format!("nbd+unix:///?socket={}", socket.display()),
        })
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        // SIGTERM first, so qemu-nbd closes the image cleanly (a qcow2 image is snapshotted
        // again after it); SIGKILL if it has not exited after five seconds.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is passed.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nbdcopy_write(input: &Path, url: &str) -> Result<Duration> {
    let input = input.to_string_lossy().to_string();
    run("nbdcopy", &["--flush", &input, url])
}

fn nbdcopy_read(url: &str) -> Result<Duration> {
    run("nbdcopy", &[url, "null:"])
}

fn push(rows: &mut Vec<Row>, what: &str, ours: f64, baseline: f64, unit: &str, target: &str) {
    // Rates: higher is better; times ("s"): lower is better. Either way ours over baseline.
    let ratio = ours / baseline.max(1e-9);
    let show = |value: f64| {
        if unit == "s" {
            format!("{value:.3} s")
        } else {
            format!("{value:.0} MiB/s")
        }
    };
    rows.push(Row {
        what: what.to_string(),
        ours: show(ours),
        baseline: show(baseline),
        ratio,
        target: target.to_string(),
    });
}

/// NBD attach first write and rewrite, shadow share read, against qemu-nbd.
fn bench_nbd(dir: &Path, sizes: &Sizes, rows: &mut Vec<Row>) -> Result<()> {
    if !have("nbdcopy") || !have("qemu-nbd") || !have("qemu-img") {
        println!("skipped: the NBD rows need nbdcopy (libnbd-bin) and qemu-nbd (qemu-utils)");
        return Ok(());
    }
    let input = dir.join("input.bin");
    image(&input, sizes.pass, sizes.pass, 9)?;

    // qemu-nbd on a raw image.
    let raw = dir.join("qemu-raw.img");
    image(&raw, sizes.pass, sizes.pass, 3)?;
    // Write phases: `ROUNDS` rounds of each side, the best of each (other work on the machine
    // only ever slows a run down); a new snapshot or shadow before each round's first write.
    let raw_write = {
        let server = QemuNbd::start(&raw, "raw", &dir.join("qemu-raw.sock"), false)?;
        let mut writes = Vec::new();
        for _ in 0..ROUNDS {
            settle();
            writes.push(nbdcopy_write(&input, &server.url)?);
        }
        best(&writes)
    };
    cold(&[&raw]);
    let raw_read = {
        let server = QemuNbd::start(&raw, "raw", &dir.join("qemu-raw-ro.sock"), true)?;
        nbdcopy_read(&server.url)?
    };

    // qemu-nbd on a qcow2 image after an internal snapshot.
    let qcow2 = dir.join("qemu.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            &raw.to_string_lossy(),
            &qcow2.to_string_lossy(),
        ],
    )?;
    let (mut qcow2_firsts, mut qcow2_rewrites) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        run(
            "qemu-img",
            &[
                "snapshot",
                "-c",
                &format!("before-{round}"),
                &qcow2.to_string_lossy(),
            ],
        )?;
        let server = QemuNbd::start(&qcow2, "qcow2", &dir.join("qemu-qcow2.sock"), false)?;
        settle();
        qcow2_firsts.push(nbdcopy_write(&input, &server.url)?);
        settle();
        qcow2_rewrites.push(nbdcopy_write(&input, &server.url)?);
    }
    let (qcow2_first, qcow2_rewrite) = (best(&qcow2_firsts), best(&qcow2_rewrites));

    // diskshadow: the same image content, a shadow, then an NBD attachment; with the default
    // provider (copy-on-write), then with redirect-on-write (the design of qcow2's internal
    // snapshots: new data goes to new space, the snapshot keeps the old).
    let cow = attach_rounds(dir, "cow", None, sizes, &input)?;
    let row = attach_rounds(dir, "row", Some(ROW_PROVIDER_ID), sizes, &input)?;
    let (engine, shadow) = (&cow.engine, cow.first_shadow);
    cold(&[&cow.live, &cow.store]);
    let share = serve_nbd(
        engine.open_shadow(shadow)?,
        "share",
        NbdListener::Unix(dir.join("share.sock")),
        true,
    )?;
    let ours_read = nbdcopy_read(&share.url())?;
    drop(share);

    let bytes = sizes.pass;
    for (attached, provider) in [(&cow, "copy-on-write"), (&row, "redirect-on-write")] {
        push(
            rows,
            &format!(
                "NBD attach ({provider}), first write after a shadow, vs qemu-nbd qcow2 after snapshot -c"
            ),
            rate(bytes, attached.first),
            rate(bytes, qcow2_first),
            "MiB/s",
            ">= 2",
        );
        push(
            rows,
            &format!("NBD attach ({provider}), first write after a shadow, vs qemu-nbd raw"),
            rate(bytes, attached.first),
            rate(bytes, raw_write),
            "MiB/s",
            ">= 0.5",
        );
        push(
            rows,
            &format!("NBD attach ({provider}), rewrite, vs qemu-nbd raw"),
            rate(bytes, attached.rewrite),
            rate(bytes, raw_write),
            "MiB/s",
            ">= 0.9",
        );
    }
    push(
        rows,
        "qemu-nbd qcow2 rewrite after snapshot -c, vs qemu-nbd raw (reference)",
        rate(bytes, qcow2_rewrite),
        rate(bytes, raw_write),
        "MiB/s",
        "reported",
    );
    push(
        rows,
        "NBD share read (nbdcopy), vs qemu-nbd raw",
        rate(bytes, ours_read),
        rate(bytes, raw_read),
        "MiB/s",
        ">= 0.9",
    );
    Ok(())
}

/// A volume attached over NBD and written through it after new shadows.
struct Attached {
    engine: Engine,
    live: PathBuf,
    store: PathBuf,
    /// The best of `ROUNDS` first writes after a new shadow, and of the rewrites after them.
    first: Duration,
    rewrite: Duration,
    /// The first round's shadow: every chunk of it differs from the live volume.
    first_shadow: ShadowId,
}

/// `ROUNDS` rounds of a new shadow, an `nbdcopy` first write and a rewrite into an NBD
/// attachment of a volume registered with `provider` (`None`: the default).
fn attach_rounds(
    dir: &Path,
    name: &str,
    provider: Option<uuid::Uuid>,
    sizes: &Sizes,
    input: &Path,
) -> Result<Attached> {
    let live = dir.join(format!("live-{name}.img"));
    image(&live, sizes.pass, sizes.pass, 3)?;
    let store = dir.join(format!("store-{name}"));
    let engine = Engine::open(&store, options())?;
    let volume = engine.register_volume_with_provider(&live, None, provider.map(ProviderId))?;
    let export = serve_nbd(
        engine.open_volume(volume.id)?,
        "live",
        NbdListener::Unix(dir.join(format!("attach-{name}.sock"))),
        false,
    )?;
    let (mut firsts, mut rewrites, mut shadows) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        shadows.push(shadow_of(&engine, volume.id)?);
        settle();
        firsts.push(nbdcopy_write(input, &export.url())?);
        settle();
        rewrites.push(nbdcopy_write(input, &export.url())?);
    }
    drop(export);
    Ok(Attached {
        engine,
        live,
        store,
        first: best(&firsts),
        rewrite: best(&rewrites),
        first_shadow: shadows[0],
    })
}

/// `qemu-img convert` of a sparse share against converting the raw sparse image.
fn bench_convert(dir: &Path, sizes: &Sizes, rows: &mut Vec<Row>) -> Result<()> {
    if !have("qemu-img") {
        println!("skipped: the convert row needs qemu-img (qemu-utils)");
        return Ok(());
    }
    let sparse = dir.join("sparse.img");
    image(&sparse, sizes.sparse_volume, sizes.sparse_data, 5)?;
    let engine = Engine::open(&dir.join("sparse-store"), options())?;
    let volume = engine.register_volume(&sparse, None)?;
    let shadow = shadow_of(&engine, volume.id)?;
    let share = serve_nbd(
        engine.open_shadow(shadow)?,
        "sparse",
        NbdListener::Unix(dir.join("sparse.sock")),
        true,
    )?;
    let raw_copy = dir.join("raw-copy.img");
    let share_copy = dir.join("share-copy.img");
    settle();
    let raw = run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &sparse.to_string_lossy(),
            &raw_copy.to_string_lossy(),
        ],
    )?;
    let ours = run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &share.url(),
            &share_copy.to_string_lossy(),
        ],
    )?;
    let allocated = |path: &Path| -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(path)?.blocks() * 512)
    };
    let copy_allocated = allocated(&share_copy)?;
    println!(
        "qemu-img convert of the share allocated {} MiB for {} MiB of data",
        copy_allocated / MIB,
        sizes.sparse_data / MIB
    );
    if copy_allocated > sizes.sparse_data + sizes.sparse_data / 8 {
        return Err("the converted share is not sparse".into());
    }
    push(
        rows,
        &format!(
            "qemu-img convert, {} GiB sparse share with {} MiB data, vs the raw image",
            sizes.sparse_volume / GIB,
            sizes.sparse_data / MIB
        ),
        ours.as_secs_f64(),
        raw.as_secs_f64(),
        "s",
        "<= 2 (time)",
    );
    Ok(())
}

/// FUSE attachment with `dd conv=fdatasync` against `dd` to a raw file.
fn bench_fuse(dir: &Path, sizes: &Sizes, rows: &mut Vec<Row>) -> Result<()> {
    if File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_err()
        || !have("fusermount3")
    {
        println!("skipped: the FUSE rows need /dev/fuse and fusermount3 (fuse3)");
        return Ok(());
    }
    let input = dir.join("input.bin");
    if !input.exists() {
        image(&input, sizes.pass, sizes.pass, 9)?;
    }
    let count = (sizes.pass / MIB).to_string();
    let dd = |target: &Path| -> Result<Duration> {
        run(
            "dd",
            &[
                &format!("if={}", input.display()),
                &format!("of={}", target.display()),
                "bs=1M",
                &format!("count={count}"),
                "conv=fdatasync,notrunc",
                "status=none",
            ],
        )
    };
    let raw = dir.join("dd-raw.img");
    image(&raw, sizes.pass, sizes.pass, 3)?;
    let live = dir.join("fuse-live.img");
    image(&live, sizes.pass, sizes.pass, 3)?;
    let engine = Engine::open(&dir.join("fuse-store"), options())?;
    let volume = engine.register_volume(&live, None)?;
    let mountpoint = dir.join("fuse-attach");
    std::fs::create_dir_all(&mountpoint)?;
    let device: Arc<dyn BlockDevice> = engine.open_volume(volume.id)?;
    let view = mount(
        device,
        &mountpoint,
        MountOptions::image_file("live", "disk.img", false),
    )?;
    // `ROUNDS` rounds (a new shadow each), the raw baseline in each; the best of each (other
    // work on the machine only ever slows a run down).
    let (mut raw_writes, mut firsts, mut rewrites) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        settle();
        raw_writes.push(dd(&raw)?);
        shadow_of(&engine, volume.id)?;
        settle();
        firsts.push(dd(&mountpoint.join("disk.img"))?);
        settle();
        rewrites.push(dd(&mountpoint.join("disk.img"))?);
    }
    let (raw_write, first, rewrite) = (best(&raw_writes), best(&firsts), best(&rewrites));
    view.unmount()?;
    push(
        rows,
        "FUSE attach, first write after a shadow (dd), vs dd to a raw file",
        rate(sizes.pass, first),
        rate(sizes.pass, raw_write),
        "MiB/s",
        ">= 0.35",
    );
    push(
        rows,
        "FUSE attach, rewrite (dd), vs dd to a raw file",
        rate(sizes.pass, rewrite),
        rate(sizes.pass, raw_write),
        "MiB/s",
        ">= 0.8",
    );
    Ok(())
}

/// `diskshadow volume write|read` through the service against `dd`/`cat` of the same bytes.
fn bench_cli(dir: &Path, sizes: &Sizes, rows: &mut Vec<Row>) -> Result<()> {
    // Cargo builds the binary with the bench's own profile (release under `cargo bench`).
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_diskshadow"));
    println!("the volume rows run {}", binary.display());
    let store = dir.join("cli-store");
    let input = dir.join("input.bin");
    if !input.exists() {
        image(&input, sizes.pass, sizes.pass, 9)?;
    }
    let volume = dir.join("cli.img");
    image(&volume, sizes.pass, 0, 0)?;
    let diskshadow = |arguments: &[&str]| -> Result<Duration> {
        let mut all = vec!["--store", store.to_str().ok_or("store path")?];
        all.extend_from_slice(arguments);
        run(binary.to_str().ok_or("binary path")?, &all)
    };
    let volume_arg = volume.to_string_lossy().to_string();
    let input_arg = input.to_string_lossy().to_string();
    // Start the service first so its start-up is not timed.
    diskshadow(&["volume", "info", &volume_arg])?;
    let dd_target = dir.join("cli-dd.img");
    image(&dd_target, sizes.pass, 0, 0)?;
    let output = dir.join("cli-read.bin");
    let output_arg = output.to_string_lossy().to_string();
    // `ROUNDS` rounds, each side in turn; the best of each (other work on the machine only ever
    // slows a run down). The first round allocates both images' blocks, the others overwrite
    // them: the same work on both sides in every round.
    let (mut ours_writes, mut dd_writes, mut ours_reads, mut cat_reads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        settle();
        ours_writes.push(diskshadow(&[
            "volume",
            "write",
            &volume_arg,
            "--offset",
            "0",
            "--input",
            &input_arg,
        ])?);
        settle();
        dd_writes.push(run(
            "dd",
            &[
                &format!("if={input_arg}"),
                &format!("of={}", dd_target.display()),
                "bs=4M",
                "conv=fdatasync,notrunc",
                "status=none",
            ],
        )?);
        ours_reads.push(diskshadow(&[
            "volume",
            "read",
            &volume_arg,
            "--output",
            &output_arg,
        ])?);
        cat_reads.push(run(
            "sh",
            &[
                "-c",
                &format!("cat {volume_arg} > {}.cat", output.display()),
            ],
        )?);
    }
    let (ours_write, dd_write) = (best(&ours_writes), best(&dd_writes));
    let (ours_read, cat_read) = (best(&ours_reads), best(&cat_reads));
    let _ = diskshadow(&["service", "stop"]);
    push(
        rows,
        "`diskshadow volume write --input` (the service reads the file), vs dd conv=fdatasync",
        rate(sizes.pass, ours_write),
        rate(sizes.pass, dd_write),
        "MiB/s",
        ">= 0.8",
    );
    push(
        rows,
        "`diskshadow volume read --output` (the service writes the file), vs cat",
        rate(sizes.pass, ours_read),
        rate(sizes.pass, cat_read),
        "MiB/s",
        ">= 0.8",
    );
    Ok(())
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|argument| argument == "--quick")
        || std::env::var_os("DISKSHADOW_BENCH_QUICK").is_some_and(|value| value == "1");
    let sizes = if quick {
        Sizes {
            pass: 64 * MIB,
            sparse_volume: GIB,
            sparse_data: 64 * MIB,
        }
    } else {
        Sizes {
            pass: 512 * MIB,
            sparse_volume: 16 * GIB,
            sparse_data: GIB,
        }
    };
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    // Parts named on the command line (`nbd`, `convert`, `fuse`, `cli`) run alone; none: all.
    let parts = NamedParts::from_args();
    if parts.runs("nbd") {
        bench_nbd(dir.path(), &sizes, &mut rows)?;
    }
    if parts.runs("convert") {
        bench_convert(dir.path(), &sizes, &mut rows)?;
    }
    if parts.runs("fuse") {
        bench_fuse(dir.path(), &sizes, &mut rows)?;
    }
    if parts.runs("cli") {
        bench_cli(dir.path(), &sizes, &mut rows)?;
    }
    println!(
        "\n{} run ({} MiB passes):\n",
        if quick { "quick" } else { "full" },
        sizes.pass / MIB
    );
    println!("| path | diskshadow | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {:.2} | {} |",
            row.what, row.ours, row.baseline, row.ratio, row.target
        );
    }
    Ok(())
}
