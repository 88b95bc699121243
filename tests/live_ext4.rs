//! Live volumes and file views through the real service process, on real ext4 file systems:
//! an attached volume is loop-mounted from its FUSE file and written by ordinary tools while
//! shadows are taken; exposed shadows show their files as they were.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command as Process;

mod support;

use support::process::{diskshadow, run_script, shadow_ids};

fn sh(command: &str) -> std::process::Output {
    Process::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .expect("sh")
}

/// Root, /dev/fuse, loop devices, fusermount3 and mkfs.ext4: what these tests need.
fn can_run() -> bool {
    let checks = [
        ("root", sh("test \"$(id -u)\" = 0").status.success()),
        ("/dev/fuse", Path::new("/dev/fuse").exists()),
        ("loop devices", Path::new("/dev/loop-control").exists()),
        ("fusermount3", sh("command -v fusermount3").status.success()),
        ("mkfs.ext4", sh("command -v mkfs.ext4").status.success()),
        ("e2fsck", sh("command -v e2fsck").status.success()),
    ];
    for (what, present) in checks {
        if !present {
            support::skip(format!(
                "{what} is not available (CI installs fuse3 and e2fsprogs and runs as root)"
            ));
            return false;
        }
    }
    true
}

/// Unmounts and detaches whatever a test mounted, even when it fails.
struct Cleanup(Vec<PathBuf>, PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for mount in &self.0 {
            let _ = sh(&format!("umount -l {} 2>/dev/null", mount.display()));
        }
        let _ = Process::new(assert_cmd::cargo::cargo_bin("diskshadow"))
            .arg("--store")
            .arg(&self.1)
            .args(["service", "stop"])
            .output();
    }
}

/// A file name and the bytes synced to it before a shadow was taken.
type SyncedFile = (String, Vec<u8>);

fn make_ext4(image: &Path, content: &Path) {
    let output = Process::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(content)
        .arg(image)
        .arg("32M")
        .output()
        .expect("mkfs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_file_copied_from_an_exposed_shadow_is_the_file_as_it_was() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let content = work.path().join("content");
    fs::create_dir_all(content.join("docs")).expect("content");
    fs::write(content.join("docs/report.txt"), "version 1\n".repeat(1000)).expect("file");
    fs::write(
        content.join("big.bin"),
        (0..3u32 << 20)
            .map(|index| (index * 7 % 253) as u8)
            .collect::<Vec<u8>>(),
    )
    .expect("file");
    let image = work.path().join("data.img");
    make_ext4(&image, &content);
    for directory in ["shadow", "live", "mnt"] {
        fs::create_dir_all(work.path().join(directory)).expect("dir");
    }
    let _cleanup = Cleanup(
        vec![
            work.path().join("mnt"),
            work.path().join("shadow"),
            work.path().join("live"),
        ],
        store.clone(),
    );

    run_script(
        &store,
        work.path(),
        "expose.dsh",
        "set context persistent nowriters\nadd volume data.img alias a\ncreate\nexpose %a% shadow\n",
    );
    // Change the live volume through diskshadow: attach it, loop-mount its file, edit a file.
    diskshadow(&store)
        .args(["volume", "attach", "data.img", "live"])
        .current_dir(work.path())
        .assert()
        .success();
    let mounted = sh(&format!(
        "mount -o loop {} {}",
        work.path().join("live/data.img").display(),
        work.path().join("mnt").display()
    ));
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    fs::write(work.path().join("mnt/docs/report.txt"), "version 2\n").expect("edit");
    assert!(sh(&format!(
        "sync && umount {}",
        work.path().join("mnt").display()
    ))
    .status
    .success());
    diskshadow(&store)
        .args(["volume", "detach", "data.img"])
        .current_dir(work.path())
        .assert()
        .success();

    let copied = work.path().join("copied.txt");
    assert!(sh(&format!(
        "cp {} {}",
        work.path().join("shadow/docs/report.txt").display(),
        copied.display()
    ))
    .status
    .success());
    assert_eq!(
        fs::read_to_string(&copied).expect("copy"),
        "version 1\n".repeat(1000)
    );
    assert_eq!(
        fs::read(work.path().join("shadow/big.bin")).expect("big"),
        fs::read(content.join("big.bin")).expect("original")
    );
    // And the live volume did change.
    let live = sh(&format!(
        "debugfs -R 'cat /docs/report.txt' {} 2>/dev/null",
        image.display()
    ));
    assert_eq!(String::from_utf8_lossy(&live.stdout), "version 2\n");
    let listing = run_script(
        &store,
        work.path(),
        "unexpose.dsh",
        "unexpose shadow\nlist shadows all\n",
    );
    assert!(listing.contains("Not exposed"), "{listing}");
}

#[test]
fn shadows_of_a_live_mounted_ext4_check_clean_and_keep_every_synced_file() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let content = work.path().join("content");
    fs::create_dir_all(&content).expect("content");
    let image = work.path().join("live.img");
    make_ext4(&image, &content);
    fs::create_dir_all(work.path().join("attach")).expect("dir");
    fs::create_dir_all(work.path().join("mnt")).expect("dir");
    let mnt = work.path().join("mnt");
    let _cleanup = Cleanup(vec![mnt.clone(), work.path().join("attach")], store.clone());
    diskshadow(&store)
        .args(["volume", "attach", "live.img", "attach"])
        .current_dir(work.path())
        .assert()
        .success();
    let mounted = sh(&format!(
        "mount -o loop {} {}",
        work.path().join("attach/live.img").display(),
        mnt.display()
    ));
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );

    // Ordinary tools keep writing while shadows are taken.
    let writer = Process::new("sh")
        .arg("-c")
        .arg(format!("i=0; while [ $i -lt 400 ]; do dd if=/dev/urandom of={}/busy.$((i % 7)) bs=64k count=2 2>/dev/null; i=$((i+1)); done", mnt.display()))
        .spawn()
        .expect("background writer");
    let mut expectations: Vec<(String, Vec<SyncedFile>)> = Vec::new();
    for round in 0..3 {
        let name = format!("synced-{round}.txt");
        let body = format!("round {round}\n").repeat(2000).into_bytes();
        fs::write(mnt.join(&name), &body).expect("write");
        assert!(sh(&format!("sync -f {}", mnt.join(&name).display()))
            .status
            .success());
        let stdout = run_script(
            &store,
            work.path(),
            &format!("take-{round}.dsh"),
            "set context persistent nowriters\nadd volume live.img\ncreate\n",
        );
        let id = shadow_ids(&stdout).pop().expect("a shadow");
        let synced: Vec<(String, Vec<u8>)> = (0..=round)
            .map(|earlier| {
                (
                    format!("synced-{earlier}.txt"),
                    format!("round {earlier}\n").repeat(2000).into_bytes(),
                )
            })
            .collect();
        expectations.push((id, synced));
    }
    let mut writer = writer;
    let _ = writer.wait();
    assert!(sh(&format!("umount {}", mnt.display())).status.success());
    diskshadow(&store)
        .args(["volume", "detach", "live.img"])
        .current_dir(work.path())
        .assert()
        .success();

    for (id, synced) in expectations {
        let copy = work.path().join(format!("copy-{}.img", &id[1..9]));
        diskshadow(&store)
            .args(["volume", "read", &id, "--output"])
            .arg(&copy)
            .assert()
            .success();
        // The shadow is crash-consistent: replaying the journal makes it clean.
        let replay = Process::new("e2fsck")
            .args(["-fy"])
            .arg(&copy)
            .output()
            .expect("e2fsck");
        assert!(
            replay.status.code().unwrap_or(8) < 4,
            "e2fsck -fy of {id}: {}",
            String::from_utf8_lossy(&replay.stdout)
        );
        let check = Process::new("e2fsck")
            .args(["-fn"])
            .arg(&copy)
            .output()
            .expect("e2fsck");
        assert!(
            check.status.success(),
            "e2fsck -fn of {id} is not clean: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        for (name, body) in synced {
            let read = sh(&format!(
                "debugfs -R 'cat /{name}' {} 2>/dev/null",
                copy.display()
            ));
            assert!(
                read.stdout == body,
                "{name} in shadow {id} is not as it was synced"
            );
        }
    }
}

/// A revert rewrites blocks under whoever uses the volume: with a file system mounted from the
/// attached volume it is refused, naming the mount; once unmounted, the attachment itself still
/// refuses it unless vssadmin's `/ForceDismount` detaches it (and says so). The file system is
/// clean afterwards and holds the shadow's content.
#[test]
fn revert_of_a_volume_in_use_is_refused_and_force_dismount_detaches_first() {
    if !can_run() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let content = work.path().join("content");
    fs::create_dir_all(&content).expect("content");
    fs::write(content.join("state.txt"), "before\n").expect("file");
    let image = work.path().join("data.img");
    make_ext4(&image, &content);
    for directory in ["live", "mnt"] {
        fs::create_dir_all(work.path().join(directory)).expect("dir");
    }
    let _cleanup = Cleanup(vec![work.path().join("mnt")], store.clone());

    diskshadow(&store)
        .args(["volume", "attach", "data.img", "live"])
        .current_dir(work.path())
        .assert()
        .success();
    let stdout = run_script(
        &store,
        work.path(),
        "create.dsh",
        "set context persistent nowriters\nadd volume data.img\ncreate\n",
    );
    let shadow = shadow_ids(&stdout).pop().expect("shadow");
    let mnt = work.path().join("mnt");
    let mounted = sh(&format!(
        "mount -o loop {} {}",
        work.path().join("live/data.img").display(),
        mnt.display()
    ));
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    fs::write(mnt.join("state.txt"), "after\n").expect("edit");
    assert!(sh("sync").status.success());

    let revert = |extra: &str| {
        Process::new(assert_cmd::cargo::cargo_bin("vssadmin"))
            .arg("--store")
            .arg(&store)
            .args(["revert", "shadow", &format!("/shadow={shadow}")])
            .args(extra.split_whitespace())
            .env("DISKSHADOW_IDLE_TIMEOUT", "5")
            .current_dir(work.path())
            .output()
            .expect("vssadmin")
    };
    let text = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    // Mounted: refused even with force, naming the mount point.
    for extra in ["", "/ForceDismount"] {
        let refused = revert(extra);
        assert!(!refused.status.success(), "{}", text(&refused));
        assert!(
            text(&refused).contains("in use")
                && text(&refused).contains(&mnt.display().to_string()),
            "{}",
            text(&refused)
        );
    }
    assert_eq!(
        fs::read_to_string(mnt.join("state.txt")).unwrap(),
        "after\n"
    );
    assert!(sh(&format!("umount {}", mnt.display())).status.success());

    // Attached: refused without force.
    let refused = revert("");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("is attached at") && text(&refused).contains("/ForceDismount"),
        "{}",
        text(&refused)
    );

    // Forced: detached first, said so, then reverted.
    let forced = revert("/ForceDismount");
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(
        text(&forced).contains("was detached from"),
        "{}",
        text(&forced)
    );
    let attachments = diskshadow(&store)
        .args(["volume", "attachments"])
        .current_dir(work.path())
        .output()
        .expect("attachments");
    assert!(
        !String::from_utf8_lossy(&attachments.stdout).contains("data.img"),
        "{}",
        String::from_utf8_lossy(&attachments.stdout)
    );
    let fsck = Process::new("e2fsck")
        .args(["-fn"])
        .arg(&image)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let dump = Process::new("debugfs")
        .args(["-R", "cat /state.txt"])
        .arg(&image)
        .output()
        .expect("debugfs");
    assert_eq!(String::from_utf8_lossy(&dump.stdout), "before\n");
}

/// One stretch of a file: `(start, end, is_data)`.
type Segment = (u64, u64, bool);

/// The data and hole segments of a file as `SEEK_DATA`/`SEEK_HOLE` find them, in order,
/// covering the file.
fn segments(path: &Path) -> Vec<Segment> {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(path).expect("open");
    let size = file.metadata().expect("metadata").len() as i64;
    let seek = |offset: i64, whence: i32| {
        // SAFETY: lseek on an open descriptor; no memory is touched.
        unsafe { libc::lseek(file.as_raw_fd(), offset, whence) }
    };
    let mut found = Vec::new();
    let mut position = 0i64;
    while position < size {
        let data = seek(position, libc::SEEK_DATA);
        let data = if data < 0 { size } else { data };
        if data > position {
            found.push((position as u64, data as u64, false));
        }
        if data >= size {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE);
        assert!(hole > data, "SEEK_HOLE from {data} in {}", path.display());
        found.push((data as u64, hole as u64, true));
        position = hole;
    }
    found
}

const MIB: u64 = 1024 * 1024;

/// A new, empty ext4 image in a new directory `work`, loop-mounted to be filled by the kernel:
/// the paths of the store, the image, its mount point and a directory to expose a shadow at,
/// and the guard that unmounts both (`None` where the tests cannot run).
fn loop_mounted_ext4() -> Option<(tempfile::TempDir, [PathBuf; 4], Cleanup)> {
    if !can_run() {
        return None;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let content = work.path().join("content");
    fs::create_dir_all(&content).expect("content");
    let image = work.path().join("data.img");
    make_ext4(&image, &content);
    let fill = work.path().join("fill");
    let shadow = work.path().join("shadow");
    fs::create_dir_all(&fill).expect("dir");
    fs::create_dir_all(&shadow).expect("dir");
    let cleanup = Cleanup(vec![fill.clone(), shadow.clone()], store.clone());
    let mounted = sh(&format!(
        "mount -o loop {} {}",
        image.display(),
        fill.display()
    ));
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    Some((work, [store, image, fill, shadow], cleanup))
}

/// Sparse files inside an exposed ext4 shadow keep their holes: `SEEK_DATA`/`SEEK_HOLE` find
/// the same data as the kernel's ext4 did, `st_blocks` counts written blocks only, `qemu-img
/// map` and `cp` see the holes, and every byte reads back as written: also in a file whose
/// preallocated (unwritten) extents surround its data and in one whose extent tree has a
/// second level.
#[test]
fn sparse_files_in_an_exposed_ext4_shadow_keep_their_holes() {
    let Some((work, [store, image, fill, shadow], _cleanup)) = loop_mounted_ext4() else {
        return;
    };

    let pattern = |seed: u64, length: u64| -> Vec<u8> {
        (0..length)
            .map(|index| ((index * 31 + seed * 7) % 251) as u8)
            .collect()
    };
    // Stale bytes in free blocks, which the preallocated file below may be given.
    fs::write(fill.join("stale"), vec![0xAA; 8 * MIB as usize]).expect("stale");
    assert!(sh(&format!("sync && rm {0}/stale && sync", fill.display()))
        .status
        .success());
    // 64 MiB with two written ranges.
    let sparse = fs::File::create(fill.join("sparse.bin")).expect("sparse");
    sparse.set_len(64 * MIB).expect("truncate");
    sparse
        .write_all_at(&pattern(1, MIB), 8 * MIB)
        .expect("write");
    sparse
        .write_all_at(&pattern(2, 12 * 1024), 40 * MIB)
        .expect("write");
    drop(sparse);
    // 4 MiB allocated but unwritten, with 64 KiB written at 1 MiB.
    assert!(sh(&format!(
        "fallocate -l 4M {0}/prealloc.bin && dd if=/dev/zero bs=64k count=1 2>/dev/null | tr '\\0' 'Z' | dd of={0}/prealloc.bin bs=64k seek=16 conv=notrunc 2>/dev/null",
        fill.display()
    ))
    .status
    .success());
    // Twelve separate 4 KiB pieces: more extents than an inode holds, so a two-level tree.
    let pieces = fs::File::create(fill.join("pieces.bin")).expect("pieces");
    for piece in 0..12u64 {
        pieces
            .write_all_at(&pattern(10 + piece, 4096), piece * 256 * 1024)
            .expect("piece");
    }
    pieces.set_len(3 * MIB).expect("truncate");
    drop(pieces);
    fs::write(fill.join("full.bin"), pattern(3, 2 * MIB)).expect("full");
    // A directory the kernel indexes (an htree): its entries are found in its leaf blocks.
    fs::create_dir(fill.join("many")).expect("dir");
    for index in 0..600 {
        fs::write(
            fill.join(format!("many/entry-with-a-longish-name-{index:05}")),
            index.to_string(),
        )
        .expect("entry");
    }
    let inside = fs::File::create(fill.join("many/sparse-inside.bin")).expect("inside");
    inside.set_len(16 * MIB).expect("truncate");
    inside
        .write_all_at(&pattern(4, 4096), 12 * MIB)
        .expect("write");
    drop(inside);
    assert!(sh("sync").status.success());

    let names = [
        "sparse.bin",
        "prealloc.bin",
        "pieces.bin",
        "full.bin",
        "many/sparse-inside.bin",
    ];
    // What the kernel's ext4 says: data segments (asked first: reading an unwritten range puts
    // zero pages in the page cache, which the kernel then reports as data), then bytes.
    let expected: Vec<(Vec<u8>, Vec<Segment>)> = names
        .iter()
        .map(|name| {
            let kernel_segments = segments(&fill.join(name));
            (fs::read(fill.join(name)).expect("read"), kernel_segments)
        })
        .collect();
    assert!(sh(&format!("umount {}", fill.display())).status.success());
    let levels = sh(&format!(
        "debugfs -R 'ex /pieces.bin' {} 2>/dev/null",
        image.display()
    ));
    assert!(
        String::from_utf8_lossy(&levels.stdout).contains(" 1/ 1 "),
        "pieces.bin has a second tree level: {}",
        String::from_utf8_lossy(&levels.stdout)
    );
    let many = sh(&format!(
        "debugfs -R 'stat /many' {} 2>/dev/null",
        image.display()
    ));
    assert!(
        String::from_utf8_lossy(&many.stdout).contains("Flags: 0x81000"),
        "many/ is an indexed directory: {}",
        String::from_utf8_lossy(&many.stdout)
    );
    assert_eq!(
        expected[0].1,
        vec![
            (0, 8 * MIB, false),
            (8 * MIB, 9 * MIB, true),
            (9 * MIB, 40 * MIB, false),
            (40 * MIB, 40 * MIB + 12 * 1024, true),
            (40 * MIB + 12 * 1024, 64 * MIB, false),
        ],
        "the kernel's view of sparse.bin"
    );

    run_script(
        &store,
        work.path(),
        "expose.dsh",
        "set context persistent nowriters\nadd volume data.img alias a\ncreate\nexpose %a% shadow\n",
    );
    for (name, (bytes, kernel_segments)) in names.iter().zip(&expected) {
        let shown = shadow.join(name);
        assert!(fs::read(&shown).expect("read") == *bytes, "bytes of {name}");
        assert_eq!(&segments(&shown), kernel_segments, "segments of {name}");
        let data: u64 = kernel_segments
            .iter()
            .filter(|(_, _, is_data)| *is_data)
            .map(|(start, end, _)| end - start)
            .sum();
        assert_eq!(
            fs::metadata(&shown).expect("metadata").blocks() * 512,
            data.div_ceil(4096) * 4096,
            "st_blocks of {name}"
        );
    }
    // The unwritten extents read as zeros around the written 64 KiB, never as stale bytes.
    let prealloc = &expected[1].0;
    assert!(prealloc[..MIB as usize].iter().all(|byte| *byte == 0));
    assert!(prealloc[MIB as usize..MIB as usize + 65536]
        .iter()
        .all(|byte| *byte == b'Z'));
    assert_eq!(
        expected[1].1,
        vec![
            (0, MIB, false),
            (MIB, MIB + 65536, true),
            (MIB + 65536, 4 * MIB, false)
        ]
    );
    let mut piece = vec![0u8; 4096];
    fs::File::open(shadow.join("pieces.bin"))
        .expect("open")
        .read_exact_at(&mut piece, 11 * 256 * 1024)
        .expect("read");
    assert_eq!(piece, pattern(21, 4096));
    assert_eq!(
        segments(&shadow.join("many/sparse-inside.bin")),
        vec![
            (0, 12 * MIB, false),
            (12 * MIB, 12 * MIB + 4096, true),
            (12 * MIB + 4096, 16 * MIB, false)
        ]
    );

    // qemu-img maps the file through SEEK_DATA/SEEK_HOLE: the same two data ranges.
    let map = Process::new("qemu-img")
        .args(["map", "--output=json", "-f", "raw"])
        .arg(shadow.join("sparse.bin"))
        .output();
    match map {
        Ok(map) if map.status.success() => {
            let ranges: Vec<serde_json::Value> =
                serde_json::from_slice(&map.stdout).expect("qemu-img map JSON");
            let data: Vec<(u64, u64)> = ranges
                .iter()
                .filter(|range| range["data"] == serde_json::Value::Bool(true))
                .map(|range| {
                    let start = range["start"].as_u64().expect("start");
                    (start, start + range["length"].as_u64().expect("length"))
                })
                .collect();
            assert_eq!(
                data,
                vec![(8 * MIB, 9 * MIB), (40 * MIB, 40 * MIB + 12 * 1024)]
            );
        }
        Ok(map) => panic!(
            "qemu-img map failed: {}",
            String::from_utf8_lossy(&map.stderr)
        ),
        Err(_) => support::skip("qemu-img is not installed (Debian package qemu-utils)"),
    }
    // cp finds the holes itself and leaves them out of the copy.
    let copy = work.path().join("copy.bin");
    assert!(Process::new("cp")
        .arg("--sparse=auto")
        .arg(shadow.join("sparse.bin"))
        .arg(&copy)
        .status()
        .expect("cp")
        .success());
    assert!(fs::read(&copy).expect("copy") == expected[0].0);
    let copied_blocks = fs::metadata(&copy).expect("metadata").blocks() * 512;
    assert!(
        copied_blocks < 4 * MIB,
        "the copy of 64 MiB with 1 MiB of data allocates {copied_blocks} bytes"
    );

    run_script(&store, work.path(), "unexpose.dsh", "unexpose shadow\n");
}

/// A crash-consistent copy of a mounted ext4 keeps metadata in its journal that is not yet in
/// place (here the new file's inode and directory entry). The view replays the journal in
/// memory: the file is found, with its holes and its bytes as written.
#[test]
fn a_sparse_file_in_a_shadow_with_a_journal_to_replay_keeps_its_holes() {
    let Some((work, [store, image, fill, shadow], _cleanup)) = loop_mounted_ext4() else {
        return;
    };
    let sparse = fs::File::create(fill.join("sparse.bin")).expect("sparse");
    sparse.set_len(32 * MIB).expect("truncate");
    let data: Vec<u8> = (0..MIB).map(|index| (index % 253) as u8).collect();
    sparse.write_all_at(&data, 8 * MIB).expect("write");
    // fsync commits the file's metadata to the journal only; its home blocks are written
    // later. Copied now, while mounted, the image has the file in its journal alone.
    sparse.sync_all().expect("fsync");
    drop(sparse);
    let copied = sh(&format!(
        "cp --sparse=always {} {}/copy.img",
        image.display(),
        work.path().display()
    ));
    assert!(copied.status.success());
    let kernel_segments = segments(&fill.join("sparse.bin"));
    let expected = fs::read(fill.join("sparse.bin")).expect("read");
    assert!(sh(&format!("umount {}", fill.display())).status.success());
    assert_eq!(
        kernel_segments,
        vec![
            (0, 8 * MIB, false),
            (8 * MIB, 9 * MIB, true),
            (9 * MIB, 32 * MIB, false)
        ]
    );
    let header = sh(&format!(
        "dumpe2fs -h {}/copy.img 2>/dev/null",
        work.path().display()
    ));
    let header = String::from_utf8_lossy(&header.stdout);
    assert!(
        header.contains("needs_recovery") && !header.contains("Journal start:            0\n"),
        "the copy has a journal to replay: {header}"
    );
    let in_place = sh(&format!(
        "debugfs -R 'stat /sparse.bin' {}/copy.img 2>&1",
        work.path().display()
    ));
    assert!(
        String::from_utf8_lossy(&in_place.stdout).contains("not found"),
        "without the journal the copy has no sparse.bin: {}",
        String::from_utf8_lossy(&in_place.stdout)
    );

    run_script(
        &store,
        work.path(),
        "expose.dsh",
        "set context persistent nowriters\nadd volume copy.img alias a\ncreate\nexpose %a% shadow\n",
    );
    let shown = shadow.join("sparse.bin");
    assert!(fs::read(&shown).expect("read") == expected);
    assert_eq!(segments(&shown), kernel_segments);
    assert_eq!(fs::metadata(&shown).expect("metadata").blocks() * 512, MIB);
    run_script(&store, work.path(), "unexpose.dsh", "unexpose shadow\n");
}
