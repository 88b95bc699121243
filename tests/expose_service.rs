//! Exposure through the real service process: a share outlives the script that made it, NBD
//! clients read the shadow as it was, and a killed service leaves nothing stale behind.

use std::fs;
use std::path::Path;
use std::process::Command as Process;

mod support;

use support::process::{diskshadow, run_script, shadow_ids};

fn tool(name: &str) -> bool {
    let found = Process::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    if !found {
        support::skip(format!(
            "{name} is not installed (apt-get install qemu-utils libnbd-bin)"
        ));
    }
    found
}

#[test]
fn a_share_outlives_its_script_and_nbd_clients_read_the_shadow_as_it_was() {
    if !tool("qemu-img") {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let volume = work.path().join("data.img");
    let before: Vec<u8> = (0..4u32 << 20).map(|index| (index % 251) as u8).collect();
    fs::write(&volume, &before).expect("image");
    run_script(
        &store,
        work.path(),
        "expose.dsh",
        "set context persistent nowriters\nadd volume data.img alias snap\ncreate\nexpose %snap% \\\\localhost\\data\n",
    );
    // The volume changes after the shadow was taken.
    diskshadow(&store)
        .args(["volume", "write", "data.img", "--offset", "0"])
        .current_dir(work.path())
        .write_stdin(vec![0xffu8; 1 << 20])
        .assert()
        .success();

    let listing = diskshadow(&store)
        .write_stdin("list shadows all\n")
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        listing.contains("Exposed remotely as \\\\localhost\\data"),
        "{listing}"
    );
    let socket = store.join("shares/data.sock");
    assert!(
        socket.exists(),
        "the share's socket exists after the script ended"
    );
    let url = format!("nbd+unix:///data?socket={}", socket.display());

    let copy = work.path().join("copy.img");
    let status = Process::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &url])
        .arg(&copy)
        .status()
        .expect("qemu-img");
    assert!(status.success());
    assert!(
        fs::read(&copy).expect("copy") == before,
        "qemu-img's copy equals the volume at shadow time"
    );
    if tool("nbdcopy") {
        let copy = work.path().join("nbdcopy.img");
        let status = Process::new("nbdcopy")
            .arg(&url)
            .arg(&copy)
            .status()
            .expect("nbdcopy");
        assert!(status.success());
        assert!(
            fs::read(&copy).expect("copy") == before,
            "nbdcopy's copy equals the volume at shadow time"
        );
    }
    // Writes to a read-only share are refused.
    if tool("qemu-io") {
        let output = Process::new("qemu-io")
            .args(["-f", "raw", "-c", "write 0 4k", &url])
            .output()
            .expect("qemu-io");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.status.success()
                || text.contains("ermission")
                || text.contains("read-only")
                || text.contains("failed"),
            "{text}"
        );
    }

    // Deleting an exposed shadow takes the share down first.
    run_script(
        &store,
        work.path(),
        "delete.dsh",
        "delete shadows exposed \\\\localhost\\data\n",
    );
    assert!(
        !socket.exists(),
        "no share is left serving a deleted shadow"
    );
}

#[test]
fn unexpose_and_a_killed_service_leave_nothing_stale() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    fs::File::create(work.path().join("data.img"))
        .and_then(|file| file.set_len(1 << 20))
        .expect("image");
    run_script(
        &store,
        work.path(),
        "expose.dsh",
        "set context persistent nowriters\nadd volume data.img alias snap\ncreate\nexpose %snap% \\\\localhost\\one\n",
    );
    let socket = store.join("shares/one.sock");
    assert!(socket.exists());
    let stdout = run_script(
        &store,
        work.path(),
        "unexpose.dsh",
        "unexpose \\\\localhost\\one\nlist shadows all\n",
    );
    assert!(stdout.contains("Not exposed"), "{stdout}");
    assert!(!socket.exists());

    run_script(
        &store,
        work.path(),
        "again.dsh",
        "expose %VSS_SHADOW_1% \\\\localhost\\two\n"
            .replace("%VSS_SHADOW_1%", &first_shadow(&store))
            .as_str(),
    );
    let socket = store.join("shares/two.sock");
    assert!(socket.exists());
    // Kill the service outright: no chance to clean up.
    let pid: i32 = fs::read_to_string(store.join("service.lock"))
        .expect("lock")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: kill with a pid read from our own lock file and SIGKILL has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The next requester starts a new service, which clears the stale exposure.
    let listing = diskshadow(&store)
        .write_stdin("list shadows all\n")
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(listing.contains("Not exposed"), "{listing}");
    assert!(!socket.exists(), "the stale socket was removed");
}

fn first_shadow(store: &Path) -> String {
    let listing = diskshadow(store)
        .write_stdin(
            "list shadows all
",
        )
        .output()
        .expect("list");
    shadow_ids(&String::from_utf8_lossy(&listing.stdout))
        .into_iter()
        .next()
        .expect("a shadow is listed")
}
