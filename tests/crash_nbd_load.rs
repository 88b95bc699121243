//! `kill -9` of the service while a client writes through an attached NBD export, again and
//! again: after each restart every persistent shadow reads exactly what the volume held when it
//! was created, and the live volume holds every write acknowledged before a successful flush.
//! Writes not yet flushed may or may not be there, sector by sector, but nothing else may.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use support::nbd::NbdClient;
use support::process::{diskshadow, run_script, shadow_ids, wait_for};

const VOLUME_SIZE: usize = 16 << 20;
const SECTOR: usize = 512;
const ROUNDS: usize = 20;
const MAX_SHADOWS: usize = 5;

/// What the client knows: the volume as of its last successful flush, and the writes sent since
/// (any of which may have landed, wholly or in part).
#[derive(Default)]
struct Acknowledged {
    flushed: Vec<u8>,
    pending: Vec<(usize, Vec<u8>)>,
    flushes: u64,
}

fn service_pid(store: &Path) -> Option<i32> {
    let text = fs::read_to_string(store.join("service.lock")).ok()?;
    text.trim().parse().ok()
}

/// A process is gone once /proc has no entry for it or it is a zombie nobody reaped yet.
fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
    }
}

fn attach(store: &Path, work: &Path, socket: &Path) {
    let target = format!("nbd+unix:///live?socket={}", socket.display());
    let output = diskshadow(store)
        .args(["volume", "attach", "data.img"])
        .arg(&target)
        .current_dir(work)
        .output()
        .expect("attach runs");
    assert!(
        output.status.success(),
        "attach failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read_shadow(store: &Path, work: &Path, shadow: &str) -> Vec<u8> {
    let output_file = work.join("shadow.out");
    let output = diskshadow(store)
        .args(["volume", "read", shadow, "--output"])
        .arg(&output_file)
        .current_dir(work)
        .output()
        .expect("read runs");
    assert!(
        output.status.success(),
        "reading shadow {shadow} after a crash failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::read(&output_file).expect("shadow bytes")
}

/// Each sector of `live` must be the flushed content or what one of the pending writes put there.
fn check_live(live: &[u8], known: &Acknowledged, round: usize) {
    assert_eq!(
        live.len(),
        known.flushed.len(),
        "round {round}: volume size"
    );
    for start in (0..live.len()).step_by(SECTOR) {
        let sector = &live[start..start + SECTOR];
        if sector == &known.flushed[start..start + SECTOR] {
            continue;
        }
        let explained = known.pending.iter().any(|(offset, data)| {
            start >= *offset
                && start + SECTOR <= offset + data.len()
                && sector == &data[start - offset..start - offset + SECTOR]
        });
        assert!(
            explained,
            "round {round}: sector at byte {start} holds bytes that no flushed or pending write put there"
        );
    }
}

#[test]
fn kill_9_of_the_service_under_nbd_write_load_keeps_shadows_exact_and_flushed_writes() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let work: PathBuf = scratch.path().to_path_buf();
    let store = work.join("store");
    let socket = work.join("live.sock");
    let mut rng = SmallRng::seed_from_u64(0x5eed_0009);

    let mut initial = vec![0u8; VOLUME_SIZE];
    rng.fill_bytes(&mut initial);
    fs::write(work.join("data.img"), &initial).expect("image");
    let known = Arc::new(Mutex::new(Acknowledged {
        flushed: initial,
        ..Acknowledged::default()
    }));
    let mut shadows: Vec<(String, Vec<u8>)> = Vec::new();
    let started = Instant::now();

    for round in 0..ROUNDS {
        attach(&store, &work, &socket);
        if shadows.len() < MAX_SHADOWS {
            let stdout = run_script(
                &store,
                &work,
                "create.dsh",
                "set context persistent nowriters\nadd volume data.img\ncreate\n",
            );
            let id = shadow_ids(&stdout).pop().expect("a shadow ID");
            let at_creation = known.lock().expect("model").flushed.clone();
            shadows.push((id, at_creation));
        }

        let load_known = Arc::clone(&known);
        let load_socket = socket.clone();
        let seed = rng.random::<u64>();
        let load = thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(seed);
            let Ok(mut client) = NbdClient::connect(&load_socket, "live") else {
                return;
            };
            loop {
                let writes = rng.random_range(1..=4);
                for _ in 0..writes {
                    let length = rng.random_range(1..=32) * 4096;
                    let offset = rng.random_range(0..(VOLUME_SIZE - length) / 4096) * 4096;
                    let mut data = vec![0u8; length];
                    rng.fill_bytes(&mut data);
                    // Recorded before it is sent: once sent, it may land whatever the answer.
                    load_known
                        .lock()
                        .expect("model")
                        .pending
                        .push((offset, data.clone()));
                    if client.write(offset as u64, &data).is_err() {
                        return;
                    }
                }
                if client.flush().is_err() {
                    return;
                }
                let mut known = load_known.lock().expect("model");
                let pending = std::mem::take(&mut known.pending);
                for (offset, data) in pending {
                    known.flushed[offset..offset + data.len()].copy_from_slice(&data);
                }
                known.flushes += 1;
            }
        });

        thread::sleep(Duration::from_millis(rng.random_range(30..250)));
        let pid = service_pid(&store).expect("the service records its pid");
        // SAFETY: kill(2) with a pid read from the service's own lock file.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9");
        wait_for(10, "the killed service is gone", || process_gone(pid));
        load.join().expect("load thread");

        // The next requester starts a new service, which recovers the store.
        for (id, expected) in &shadows {
            let actual = read_shadow(&store, &work, id);
            assert!(
                actual == *expected,
                "round {round}: shadow {id} differs from the volume at its creation"
            );
        }
        let live = fs::read(work.join("data.img")).expect("live image");
        let mut known = known.lock().expect("model");
        check_live(&live, &known, round);
        // From here on the volume is what it now holds: unflushed writes that landed stay.
        known.flushed = live;
        known.pending.clear();
    }

    let flushes = known.lock().expect("model").flushes;
    assert!(
        flushes > 0,
        "the load acknowledged no flush in {ROUNDS} rounds"
    );
    let _ = diskshadow(&store).args(["service", "stop"]).output();
    eprintln!(
        "{ROUNDS} kills, {} shadows, {flushes} flushes in {:.1} s",
        shadows.len(),
        started.elapsed().as_secs_f64()
    );
}
