//! A set whose writers still thaw and post-snapshot after the commit is kept only once they are
//! done: an interrupted creation leaves no shadow, and no diff-area space, behind.

mod support;

use std::path::Path;
use std::sync::Arc;

use diskshadow::engine::clock::{SeededIds, SteppingClock};
use diskshadow::engine::core::EngineOptions;
use diskshadow::engine::model::{CreateSpec, CreateVolume, RequesterId};
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;

const CHUNK: u32 = 4096;

fn options() -> EngineOptions {
    EngineOptions::new(
        Arc::new(SteppingClock::default()),
        Arc::new(SeededIds::new(7)),
        "HOST",
        CHUNK,
        Arc::new(RealBackend),
    )
}

fn image(path: &Path) {
    std::fs::File::create(path)
        .and_then(|file| file.set_len(1 << 20))
        .expect("image");
}

fn spec(volume: diskshadow::engine::ids::VolumeId) -> CreateSpec {
    CreateSpec {
        volumes: vec![CreateVolume {
            volume,
            provider: None,
        }],
        context: Context::Persistent,
        extra_attributes: Attributes::default(),
        requester: RequesterId(1),
        set_id: None,
    }
}

/// Commits a persistent set in creation, writes over the volume so the diff area holds
/// preserved chunks, and drops the engine without finishing the creation (as a crash would
/// leave the store), then reopens it. Returns the shadows and diff-area bytes left.
fn interrupted(work: &Path, finish: bool) -> (usize, u64) {
    let store = work.join("store");
    let image_path = work.join("data.img");
    image(&image_path);
    {
        let engine = Engine::open(&store, options()).expect("open");
        let volume = engine
            .register_volume(&image_path, None)
            .expect("register")
            .id;
        let device = engine.open_volume(volume).expect("device");
        device
            .write_at(0, &vec![0x11; 8 * CHUNK as usize])
            .expect("data");
        device.flush().expect("flush");
        drop(device);
        let set = engine
            .create_shadow_set_in_creation(&spec(volume), &NoProgress)
            .expect("commit");
        let device = engine.open_volume(volume).expect("device");
        device
            .write_at(0, &vec![0xAB; 8 * CHUNK as usize])
            .expect("write");
        device.flush().expect("flush");
        drop(device);
        let used: u64 = engine
            .storage()
            .iter()
            .map(|storage| storage.used_bytes)
            .sum();
        assert!(used > 0, "the write preserved chunks for the shadow");
        if finish {
            engine.finish_creation(set.set_id).expect("finish");
        }
    }
    let engine = Engine::open(&store, options()).expect("reopen");
    let used: u64 = engine
        .storage()
        .iter()
        .map(|storage| storage.used_bytes)
        .sum();
    (engine.shadows().len(), used)
}

#[test]
fn writers_a_set_still_in_creation_at_open_is_deleted_and_its_diff_area_released() {
    let work = support::scratch("writers-creation-interrupted");
    let (shadows, used) = interrupted(&work, false);
    assert_eq!(shadows, 0, "no shadow of an unfinished set remains");
    assert_eq!(used, 0, "its diff-area space is released");
}

#[test]
fn writers_a_finished_set_survives_a_reopen() {
    let work = support::scratch("writers-creation-finished");
    let (shadows, used) = interrupted(&work, true);
    assert_eq!(shadows, 1);
    assert!(used > 0);
}

/// The shadow IDs the service lists.
fn listed_shadows(store: &Path) -> Vec<String> {
    let listing = support::process::diskshadow(store)
        .write_stdin("list shadows all\n")
        .output()
        .expect("list");
    support::process::shadow_ids(&String::from_utf8_lossy(&listing.stdout))
}

#[test]
fn writers_a_service_killed_during_thaw_leaves_no_shadow_of_the_set() {
    let work = support::scratch("writers-creation-kill-during-thaw");
    let store = work.join("store");
    std::fs::create_dir_all(store.join("writers")).expect("writers dir");
    image(&work.join("data.img"));
    let record = work.join("slow.events");
    // The writer takes 3 s over thaw, then finds its input closed and exits.
    std::fs::write(
        store.join("writers/slow.toml"),
        format!(
            "name = \"Slow Thaw Writer\"\nid = \"{{55555555-aaaa-4bbb-8ccc-666666666666}}\"\ncommand = [\"{}\", \"--component\", \"db={}\", \"--record\", \"{}\", \"--on\", \"thaw=delay:3000\"]\n",
            env!("CARGO_BIN_EXE_diskshadow-test-writer"),
            work.join("data.img").display(),
            record.display()
        ),
    )
    .expect("registration");
    let script = work.join("create.dsh");
    std::fs::write(
        &script,
        format!(
            "set context persistent\nadd volume {}\ncreate\n",
            work.join("data.img").display()
        ),
    )
    .expect("script");
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_diskshadow"))
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
    support::process::wait_for(20, "the writer was sent thaw", || {
        std::fs::read_to_string(&record).is_ok_and(|events| events.contains("\"thaw\""))
    });
    // The set is committed and the writer is thawing: kill the service outright.
    let pid: i32 = std::fs::read_to_string(store.join("service.lock"))
        .expect("lock")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: kill(2) with a pid read from our own store's lock file; SIGKILL has no memory
    // effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = client.wait();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        listed_shadows(&store).is_empty(),
        "a shadow of the interrupted set remains"
    );
}
