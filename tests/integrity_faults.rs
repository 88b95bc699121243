//! Wrong bytes must never be served silently: an image changed behind diskshadow's back makes
//! its shadows suspect whichever way diskshadow next touches it (a write through an
//! attachment, a read of an exposed shadow, a restart after a crash), and a write that fails
//! (ENOSPC, EFBIG) leaves nothing behind.

use std::fs;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;

use diskshadow::engine::clock::{SeededIds, SteppingClock};
use diskshadow::engine::core::EngineOptions;
use diskshadow::engine::ids::VolumeId;
use diskshadow::engine::model::{CreateSpec, CreateVolume, RequesterId, ShadowHealth};
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;

mod support;

use support::process::{diskshadow, run_script, shadow_ids, wait_for};

const CHUNK: u32 = 64 * 1024;
const VOLUME_BYTES: usize = 16 * CHUNK as usize;

fn options() -> EngineOptions {
    EngineOptions::new(
        Arc::new(SteppingClock::default()),
        Arc::new(SeededIds::new(1)),
        "HOST",
        CHUNK,
        Arc::new(RealBackend),
    )
}

fn spec(volume: VolumeId) -> CreateSpec {
    CreateSpec {
        volumes: vec![CreateVolume {
            volume,
            provider: None,
        }],
        context: Context::PersistentNoWriters,
        extra_attributes: Attributes::default(),
        requester: RequesterId(7),
        set_id: None,
    }
}

fn pattern(seed: u8, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` at `offset` of `path` as another program would (no diskshadow involved).
fn write_behind_our_back(path: &Path, offset: u64, data: &[u8]) {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image behind diskshadow's back");
    file.write_all_at(data, offset).expect("outside write");
}

fn is_suspect(engine: &Engine, shadow: diskshadow::engine::ids::ShadowId) -> Option<String> {
    match engine.shadow(shadow).expect("shadow listed").health {
        ShadowHealth::Suspect { reason } => Some(reason),
        _ => None,
    }
}

fn sh(command: &str) -> std::process::Output {
    Process::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .expect("sh")
}

fn service_pid(store: &Path) -> i32 {
    fs::read_to_string(store.join("service.lock"))
        .expect("service lock")
        .trim()
        .parse()
        .expect("pid")
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Stops the service of a store and unmounts what a test mounted, even when it fails.
struct Cleanup {
    mounts: Vec<PathBuf>,
    store: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Process::new(assert_cmd::cargo::cargo_bin("diskshadow"))
            .arg("--store")
            .arg(&self.store)
            .args(["service", "stop"])
            .output();
        for mount in &self.mounts {
            let _ = sh(&format!("umount -l {} 2>/dev/null", mount.display()));
        }
    }
}

// ---- 1. writes check the image before they make a new baseline ----------------------------

#[test]
fn faults_a_write_after_an_outside_change_makes_the_shadows_suspect_instead_of_adopting_it() {
    let dir = support::scratch("faults_write_after_outside_change");
    let path = dir.join("a.img");
    fs::write(&path, pattern(1, VOLUME_BYTES)).expect("image");
    let engine = Engine::open(&dir.join("store"), options()).expect("open");
    let volume = engine.register_volume(&path, Some(CHUNK)).expect("volume");
    let shadow = engine
        .create_shadow_set(&spec(volume.id))
        .expect("create")
        .shadows[0]
        .id;
    let device = engine.open_volume(volume.id).expect("attach");
    device.write_at(0, &[0xAA; 4096]).expect("first write");

    // Chunk 9 was never preserved: the shadow reads it from the live image.
    write_behind_our_back(&path, 9 * u64::from(CHUNK), &[0x55; 4096]);
    device
        .write_at(2 * u64::from(CHUNK), &[0xBB; 4096])
        .expect("the write goes ahead");
    device.flush().expect("flush");

    let reason = is_suspect(&engine, shadow).expect("the shadow is suspect after the write");
    assert!(reason.contains("outside diskshadow"), "{reason}");
    assert!(engine.open_shadow(shadow).is_err());
    drop(device);
    drop(engine);
    // Durably: a restart still says so.
    let engine = Engine::open(&dir.join("store"), options()).expect("reopen");
    assert!(is_suspect(&engine, shadow).is_some());
}

#[test]
fn faults_diskshadow_own_writes_keep_the_shadows_good_across_restarts() {
    let dir = support::scratch("faults_own_writes_keep_shadows_good");
    let path = dir.join("a.img");
    let original = pattern(2, VOLUME_BYTES);
    fs::write(&path, &original).expect("image");
    let engine = Engine::open(&dir.join("store"), options()).expect("open");
    let volume = engine.register_volume(&path, Some(CHUNK)).expect("volume");
    let shadow = engine
        .create_shadow_set(&spec(volume.id))
        .expect("create")
        .shadows[0]
        .id;
    let device = engine.open_volume(volume.id).expect("attach");
    for round in 0..20u64 {
        device
            .write_at((round % 16) * u64::from(CHUNK) + 100, &[round as u8; 5000])
            .expect("write");
        if round % 7 == 0 {
            device.flush().expect("flush");
        }
    }
    drop(device);
    assert_eq!(is_suspect(&engine, shadow), None);
    drop(engine);
    let engine = Engine::open(&dir.join("store"), options()).expect("reopen");
    assert_eq!(is_suspect(&engine, shadow), None);
    let device = engine.open_shadow(shadow).expect("shadow");
    let mut content = vec![0u8; VOLUME_BYTES];
    device.read_at(0, &mut content).expect("read");
    assert!(
        content == original,
        "the shadow kept its point-in-time content"
    );
}

// ---- 2. shadow reads notice an outside change -----------------------------------------------

#[test]
fn faults_a_shadow_read_after_an_outside_change_fails_and_makes_the_shadow_suspect() {
    let dir = support::scratch("faults_shadow_read_after_outside_change");
    let path = dir.join("a.img");
    let original = pattern(3, VOLUME_BYTES);
    fs::write(&path, &original).expect("image");
    let engine = Engine::open(&dir.join("store"), options()).expect("open");
    let volume = engine.register_volume(&path, Some(CHUNK)).expect("volume");
    let shadow = engine
        .create_shadow_set(&spec(volume.id))
        .expect("create")
        .shadows[0]
        .id;
    let device = engine.open_shadow(shadow).expect("expose");
    let mut content = vec![0u8; VOLUME_BYTES];
    device.read_at(0, &mut content).expect("read before");
    assert!(content == original);

    write_behind_our_back(&path, 3 * u64::from(CHUNK), &[0x77; 4096]);
    let mut piece = vec![0u8; 4096];
    let error = device
        .read_at(3 * u64::from(CHUNK), &mut piece)
        .expect_err("a read never returns the changed bytes");
    assert!(error.to_string().contains("suspect"), "{error}");
    assert!(piece != vec![0x77; 4096]);
    // Suspect in the catalog without any listing, and every later read fails too.
    drop(device);
    let reason = is_suspect(&engine, shadow).expect("suspect");
    assert!(reason.contains("outside diskshadow"), "{reason}");
}

fn tool(name: &str) -> bool {
    let found = sh(&format!("command -v {name}")).status.success();
    if !found {
        support::skip(format!(
            "{name} is not installed (apt-get install qemu-utils)"
        ));
    }
    found
}

#[test]
fn faults_an_nbd_exposure_refuses_outside_changed_bytes_on_a_new_connection() {
    if !tool("qemu-img") {
        return;
    }
    let work = support::scratch("faults_nbd_exposure_outside_change");
    let store = work.join("store");
    let _cleanup = Cleanup {
        mounts: Vec::new(),
        store: store.clone(),
    };
    let image = work.join("data.img");
    let original = pattern(4, 1 << 20);
    fs::write(&image, &original).expect("image");
    run_script(
        &store,
        &work,
        "expose.dsh",
        "set context persistent nowriters\nadd volume data.img alias snap\ncreate\nexpose %snap% \\\\localhost\\faults\n",
    );
    let socket = store.join("shares/faults.sock");
    let url = format!("nbd+unix:///faults?socket={}", socket.display());
    let copy = work.join("copy.img");
    let convert = |copy: &Path| {
        let _ = fs::remove_file(copy);
        Process::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw", &url])
            .arg(copy)
            .output()
            .expect("qemu-img")
    };
    assert!(convert(&copy).status.success());
    assert!(fs::read(&copy).expect("copy") == original);

    // Never preserved (nothing was written through diskshadow): read from the live image.
    write_behind_our_back(&image, 300_000, &[0xEE; 8192]);
    let output = convert(&copy);
    assert!(
        !output.status.success(),
        "a new connection must not read the changed bytes"
    );
    let listing = diskshadow(&store)
        .write_stdin("list shadows all\n")
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(listing.contains("outside diskshadow"), "{listing}");
}

// ---- 3. a crash does not excuse an outside change ---------------------------------------------

fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists() && sh("command -v fusermount3").status.success();
    if !ok {
        support::skip("/dev/fuse or fusermount3 is not available");
    }
    ok
}

/// Attaches `data.img` over FUSE, writes through it without a flush, kills the service with
/// SIGKILL, then runs `between` (with the service down) and reads the shadow back.
fn crash_during_attached_writes(
    name: &str,
    between: impl FnOnce(&Path),
) -> Option<(Vec<u8>, std::process::Output, PathBuf)> {
    if !fuse_available() {
        return None;
    }
    let work = support::scratch(name);
    let store = work.join("store");
    let attach = work.join("attach");
    fs::create_dir_all(&attach).expect("dir");
    let _cleanup = Cleanup {
        mounts: vec![attach.clone()],
        store: store.clone(),
    };
    let image = work.join("data.img");
    let original = pattern(5, 1 << 20);
    fs::write(&image, &original).expect("image");
    let created = run_script(
        &store,
        &work,
        "create.dsh",
        "set context persistent nowriters\nadd volume data.img\ncreate\n",
    );
    let shadow = shadow_ids(&created).into_iter().next().expect("a shadow");
    diskshadow(&store)
        .args(["volume", "attach", "data.img", "attach"])
        .current_dir(&work)
        .assert()
        .success();
    let attached = fs::OpenOptions::new()
        .write(true)
        .open(attach.join("data.img"))
        .expect("open the attached file");
    attached
        .write_all_at(&[0xAB; 4096], 8192)
        .expect("write through the attachment");
    drop(attached);
    let pid = service_pid(&store);
    // SAFETY: SIGKILL to the pid of our own test service.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for(10, "the service exits", || !process_alive(pid));
    let _ = sh(&format!("umount -l {} 2>/dev/null", attach.display()));
    between(&image);
    let output = diskshadow(&store)
        .args(["volume", "read", &shadow, "--output"])
        .arg(work.join("shadow.img"))
        .current_dir(&work)
        .output()
        .expect("read");
    Some((original, output, work))
}

#[test]
fn faults_an_image_changed_while_the_service_was_down_mid_write_makes_the_shadow_suspect() {
    let Some((_, output, _)) =
        crash_during_attached_writes("faults_crash_then_outside_change", |image| {
            write_behind_our_back(image, 600_000, &[0x99; 4096]);
        })
    else {
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "the shadow must not be served: {stderr}"
    );
    assert!(stderr.contains("cannot prove"), "{stderr}");
}

#[test]
fn faults_a_crash_mid_write_alone_keeps_the_shadow_good() {
    let Some((original, output, work)) =
        crash_during_attached_writes("faults_crash_without_outside_change", |_| {})
    else {
        return;
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read = fs::read(work.join("shadow.img")).expect("shadow copy");
    assert!(read == original, "the shadow is exact after the crash");
}

// ---- 5. a failed write leaves nothing behind ---------------------------------------------------

/// A 16 MiB ext4 file system loop-mounted at `mount`, unmounted on drop.
struct SmallFileSystem {
    mount: PathBuf,
}

impl SmallFileSystem {
    fn new(dir: &Path) -> Option<SmallFileSystem> {
        let root = sh("test \"$(id -u)\" = 0").status.success();
        if !root || !Path::new("/dev/loop-control").exists() {
            support::skip("root and loop devices are needed to mount a small file system");
            return None;
        }
        let image = dir.join("small.ext4");
        let mount = dir.join("small");
        let _ = sh(&format!("umount -l {} 2>/dev/null", mount.display()));
        fs::create_dir_all(&mount).expect("mount dir");
        let made = sh(&format!(
            "truncate -s 16M {image} && mkfs.ext4 -q -F -m 0 {image} && mount -o loop {image} {mount}",
            image = image.display(),
            mount = mount.display()
        ));
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        Some(SmallFileSystem { mount })
    }

    /// Fills the file system to the last block.
    fn fill(&self) -> PathBuf {
        let filler = self.mount.join("filler");
        let _ = sh(&format!(
            "dd if=/dev/zero of={} bs=4k 2>/dev/null; sync",
            filler.display()
        ));
        filler
    }
}

impl Drop for SmallFileSystem {
    fn drop(&mut self) {
        let _ = sh(&format!("umount -l {}", self.mount.display()));
    }
}

#[test]
fn faults_a_write_failing_for_lack_of_diff_area_space_leaves_nothing_buffered() {
    let dir = support::scratch("faults_enospc_leaves_nothing");
    let Some(small) = SmallFileSystem::new(&dir) else {
        return;
    };
    // A sparse volume whose chunk 3 holds data: preserving chunk 2 (a hole) needs no diff-area
    // space, preserving chunk 3 does.
    let path = dir.join("a.img");
    let file = fs::File::create(&path).expect("image");
    file.set_len(VOLUME_BYTES as u64).expect("size");
    file.write_all_at(&pattern(6, CHUNK as usize), 3 * u64::from(CHUNK))
        .expect("data");
    drop(file);
    let original = fs::read(&path).expect("original");
    let store = small.mount.join("store");
    let engine = Engine::open(&store, options()).expect("open");
    let volume = engine.register_volume(&path, Some(CHUNK)).expect("volume");
    let shadow = engine
        .create_shadow_set(&spec(volume.id))
        .expect("create")
        .shadows[0]
        .id;
    let filler = small.fill();

    let device = engine.open_volume(volume.id).expect("attach");
    let start = 2 * u64::from(CHUNK) + 1000;
    let error = device
        .write_at(start, &vec![0xCD; 2 * CHUNK as usize])
        .expect_err("the diff area is full");
    assert!(
        error.raw_os_error() == Some(libc::ENOSPC) || error.to_string().contains("space"),
        "{error}"
    );
    // Nothing of the failed write is visible through the volume...
    let mut live = vec![0u8; VOLUME_BYTES];
    device.read_at(0, &mut live).expect("read live");
    assert!(live == original, "the failed write is not visible");
    // ...nor lands later, once there is room again.
    fs::remove_file(&filler).expect("free space");
    device.flush().expect("flush");
    assert!(
        fs::read(&path).expect("image") == original,
        "nothing landed"
    );
    let shadow_device = engine.open_shadow(shadow).expect("shadow");
    let mut content = vec![0u8; VOLUME_BYTES];
    shadow_device.read_at(0, &mut content).expect("read shadow");
    assert!(content == original, "the shadow is exact");
    // A later write to the same chunks works and keeps the shadow exact.
    device
        .write_at(start, &vec![0xEF; 2 * CHUNK as usize])
        .expect("write with room");
    device.flush().expect("flush");
    shadow_device.read_at(0, &mut content).expect("read shadow");
    assert!(content == original, "the shadow is still exact");
    drop((device, shadow_device));
    let report = engine.check();
    assert!(report.is_clean(), "{report}");
    drop(engine);
    drop(small);
}

#[test]
fn faults_a_file_size_limit_fails_the_write_instead_of_killing_the_service() {
    let work = support::scratch("faults_file_size_limit");
    let store = work.join("store");
    let _cleanup = Cleanup {
        mounts: Vec::new(),
        store: store.clone(),
    };
    fs::File::create(work.join("data.img"))
        .and_then(|file| file.set_len(4 << 20))
        .expect("image");
    let mut process: Process = Process::new(assert_cmd::cargo::cargo_bin("diskshadow"));
    // The same command with a 2 MiB file-size limit, inherited by the service it starts.
    process
        .arg("--store")
        .arg(&store)
        .env_remove("DISKSHADOW_STORE")
        .env("DISKSHADOW_IDLE_TIMEOUT", "5")
        .args(["volume", "write", "data.img", "--offset", "3145728"])
        .current_dir(&work)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit in the child between fork and exec touches no shared state.
    unsafe {
        process.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 20,
                rlim_max: 2 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = process.spawn().expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&[0x11u8; 65536]).expect("stdin");
    }
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "the write cannot succeed");
    assert!(
        stderr.contains("too large") || stderr.contains("File too large"),
        "the write fails with EFBIG: {stderr}"
    );
    assert!(
        !stderr.contains("service") || !stderr.contains("died"),
        "the service must not die: {stderr}"
    );
    let pid = service_pid(&store);
    assert!(process_alive(pid), "the service is still running");
    let image = fs::read(work.join("data.img")).expect("image");
    assert!(image.iter().all(|byte| *byte == 0), "nothing was written");
}
