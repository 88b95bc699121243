//! FUSE mounts against real images: ext4 built with `mkfs.ext4 -d`, read back through the file
//! view and compared with the directory it was built from; the image-file view, read-write,
//! carrying a loop-mounted ext4; errors; and cleanup of a mount left behind by a dead process.

mod support;

use diskshadow::service::way_out::EngineFailure;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use diskshadow::engine::device::BlockDevice;
use diskshadow::engine::expose::{
    cleanup_stale, detect_filesystem, mount, FileDevice, FilesystemKind, MountError, MountOptions,
    MountedView,
};
use rand::{Rng, SeedableRng};

fn fuse_available() -> bool {
    if File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_err()
    {
        support::skip("/dev/fuse cannot be opened");
        return false;
    }
    if Command::new("fusermount3").arg("-V").output().is_err() {
        support::skip("fusermount3 is not installed (Debian package fuse3)");
        return false;
    }
    true
}

fn tool_available(name: &str, probe: &str) -> bool {
    Command::new(name).arg(probe).output().is_ok()
}

fn is_mounted(path: &Path) -> bool {
    let wanted = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.to_str().unwrap()))
}

fn set_mtime(path: &Path, seconds: u64) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::new(seconds, 123_456_789))
        .unwrap();
}

/// The tree every ext4 test uses: nested directories, a symlink, an empty file, a multi-MiB
/// file, a sparse file and specific modes and times.
fn populate(root: &Path) {
    let mut generator = rand::rngs::SmallRng::seed_from_u64(42);
    fs::create_dir_all(root.join("docs/deeper/deepest")).unwrap();
    fs::write(root.join("docs/readme.txt"), b"hello from a shadow copy\n").unwrap();
    fs::write(root.join("docs/deeper/deepest/leaf.txt"), b"leaf").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    let mut big = vec![0u8; 5 * 1024 * 1024 + 333];
    generator.fill(&mut big[..]);
    fs::write(root.join("big.bin"), &big).unwrap();
    let mut sparse = File::create(root.join("sparse.bin")).unwrap();
    sparse.seek(SeekFrom::Start(6 * 1024 * 1024)).unwrap();
    sparse.write_all(b"data after a hole").unwrap();
    sparse.set_len(8 * 1024 * 1024).unwrap();
    drop(sparse);
    std::os::unix::fs::symlink("docs/readme.txt", root.join("link-to-readme")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(root.join("secret"), b"private").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("docs/deeper"), fs::Permissions::from_mode(0o711)).unwrap();
    // Enough entries that the kernel lists the directory in several readdir calls.
    fs::create_dir(root.join("many")).unwrap();
    for index in 0..1200 {
        fs::write(
            root.join(format!("many/entry-with-a-longish-name-{index:05}")),
            index.to_string(),
        )
        .unwrap();
    }
    set_mtime(&root.join("docs/readme.txt"), 1_500_000_000);
    set_mtime(&root.join("big.bin"), 1_600_000_000);
    set_mtime(&root.join("empty"), 1_234_567_890);
}

fn build_ext4(directory: &Path) -> Option<(PathBuf, PathBuf)> {
    build_with_mkfs(directory, "ext4", "32M", populate)
}

/// Builds `<kind>.img` of `size` with `mkfs.ext4 -t kind -d` from the directory `source`,
/// which `fill` fills first; `(source, image)`.
fn build_with_mkfs(
    directory: &Path,
    kind: &str,
    size: &str,
    fill: fn(&Path),
) -> Option<(PathBuf, PathBuf)> {
    if !tool_available("mkfs.ext4", "-V") {
        support::skip("mkfs.ext4 is not installed (Debian package e2fsprogs)");
        return None;
    }
    let source = directory.join("source");
    fs::create_dir(&source).unwrap();
    fill(&source);
    let image = directory.join(format!("{kind}.img"));
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-t", kind, "-E", "root_owner=0:0", "-d"])
        .arg(&source)
        .arg(&image)
        .arg(size)
        .status()
        .unwrap();
    assert!(status.success());
    Some((source, image))
}

/// Compares two trees entry by entry: type, size, mode, mtime, symlink target and content.
fn compare_trees(expected: &Path, actual: &Path) -> usize {
    let mut compared = 0;
    let mut names: Vec<_> = fs::read_dir(expected)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    let mut actual_names: Vec<_> = fs::read_dir(actual)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    actual_names.sort();
    actual_names.retain(|name| name != "lost+found");
    assert_eq!(
        names,
        actual_names,
        "directory {} lists the same names",
        actual.display()
    );
    for name in names {
        let expected_path = expected.join(&name);
        let actual_path = actual.join(&name);
        let want = fs::symlink_metadata(&expected_path).unwrap();
        let got = fs::symlink_metadata(&actual_path).unwrap();
        assert_eq!(
            want.file_type(),
            got.file_type(),
            "{}",
            actual_path.display()
        );
        assert_eq!(
            want.mode() & 0o7777,
            got.mode() & 0o7777,
            "mode of {}",
            actual_path.display()
        );
        if !want.is_dir() {
            assert_eq!(want.len(), got.len(), "size of {}", actual_path.display());
            assert_eq!(
                want.mtime(),
                got.mtime(),
                "mtime of {}",
                actual_path.display()
            );
            // mkfs.ext4 -d stores whole seconds only, so nanoseconds cannot be compared here.
        }
        if want.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&expected_path).unwrap(),
                fs::read_link(&actual_path).unwrap()
            );
        } else if want.is_dir() {
            compared += compare_trees(&expected_path, &actual_path);
        } else {
            assert!(
                fs::read(&expected_path).unwrap() == fs::read(&actual_path).unwrap(),
                "content of {}",
                actual_path.display()
            );
        }
        compared += 1;
    }
    compared
}

/// A file that holds one block of data (17 bytes written) at `data_start` and holes around it:
/// `SEEK_DATA`/`SEEK_HOLE` find that block, and `st_blocks` counts it alone.
fn assert_one_block_of_data_at(path: &Path, data_start: i64) {
    let file = File::open(path).unwrap();
    let seek = |offset: i64, whence: i32| {
        // SAFETY: lseek on an open descriptor; no memory is touched.
        unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&file), offset, whence) }
    };
    assert_eq!(seek(0, libc::SEEK_HOLE), 0);
    assert_eq!(seek(0, libc::SEEK_DATA), data_start);
    let data_end = seek(data_start, libc::SEEK_HOLE);
    assert!(
        (data_start + 17..=data_start + 4096).contains(&data_end),
        "data ends at {data_end}"
    );
    assert_eq!(
        file.metadata().unwrap().blocks() * 512,
        (data_end - data_start) as u64
    );
}

#[test]
fn ext4_files_are_shown_read_only_with_modes_times_and_links() {
    if !fuse_available() {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let Some((source, image)) = build_ext4(directory.path()) else {
        return;
    };
    let device = Arc::new(FileDevice::open(&image, true).unwrap());
    assert_eq!(detect_filesystem(device.as_ref()), FilesystemKind::Ext4);
    let mountpoint = directory.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let mounted = mount(
        device,
        &mountpoint,
        MountOptions::read_only_files("{shadow-1}"),
    )
    .unwrap();
    assert_eq!(mounted.view(), &MountedView::Ext4Files);
    assert!(is_mounted(&mountpoint));

    let compared = compare_trees(&source, &mountpoint);
    assert!(compared >= 1212, "compared {compared} entries");

    // Large files read in pieces at any offset; holes read as zeros.
    let big = File::open(mountpoint.join("big.bin")).unwrap();
    let mut piece = vec![0u8; 10_000];
    big.read_exact_at(&mut piece, 4 * 1024 * 1024 + 7).unwrap();
    let expected_big = fs::read(source.join("big.bin")).unwrap();
    assert_eq!(
        piece,
        expected_big[4 * 1024 * 1024 + 7..4 * 1024 * 1024 + 10_007]
    );
    let mut hole = vec![1u8; 65536];
    File::open(mountpoint.join("sparse.bin"))
        .unwrap()
        .read_exact_at(&mut hole, 1024 * 1024)
        .unwrap();
    assert!(hole.iter().all(|byte| *byte == 0));
    // mkfs.ext4 -d kept the hole: SEEK_DATA skips it and st_blocks counts the one data block.
    assert_one_block_of_data_at(&mountpoint.join("sparse.bin"), 6 * 1024 * 1024);

    // cp copies a file out unchanged.
    let copied = directory.path().join("copied.bin");
    assert!(Command::new("cp")
        .arg(mountpoint.join("big.bin"))
        .arg(&copied)
        .status()
        .unwrap()
        .success());
    assert!(fs::read(&copied).unwrap() == expected_big);

    // Every kind of write is refused with EROFS.
    let erofs = Some(libc::EROFS);
    assert_eq!(
        fs::write(mountpoint.join("new-file"), b"x")
            .unwrap_err()
            .raw_os_error(),
        erofs
    );
    assert_eq!(
        File::options()
            .write(true)
            .open(mountpoint.join("docs/readme.txt"))
            .unwrap_err()
            .raw_os_error(),
        erofs
    );
    assert_eq!(
        fs::create_dir(mountpoint.join("new-dir"))
            .unwrap_err()
            .raw_os_error(),
        erofs
    );
    assert_eq!(
        fs::remove_file(mountpoint.join("empty"))
            .unwrap_err()
            .raw_os_error(),
        erofs
    );

    mounted.unmount().unwrap();
    assert!(!is_mounted(&mountpoint));
    assert!(fs::read_dir(&mountpoint).unwrap().next().is_none());
}

/// ext3 maps blocks without extents, through direct and indirect block pointers: a sparse
/// file shows its holes (a zero pointer, here one for a whole indirect block) and its bytes.
#[test]
fn ext3_block_mapped_sparse_files_show_their_holes() {
    if !fuse_available() {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let Some((source, image)) = build_with_mkfs(directory.path(), "ext3", "16M", |source| {
        let mut sparse = File::create(source.join("sparse.bin")).unwrap();
        sparse.seek(SeekFrom::Start(3 * 1024 * 1024)).unwrap();
        sparse.write_all(b"data after a hole").unwrap();
        sparse.set_len(4 * 1024 * 1024).unwrap();
    }) else {
        return;
    };
    let device = Arc::new(FileDevice::open(&image, true).unwrap());
    let mountpoint = directory.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let mounted = mount(device, &mountpoint, MountOptions::read_only_files("ext3")).unwrap();
    let shown = mountpoint.join("sparse.bin");
    assert!(fs::read(&shown).unwrap() == fs::read(source.join("sparse.bin")).unwrap());
    assert_one_block_of_data_at(&shown, 3 * 1024 * 1024);
    mounted.unmount().unwrap();
}

#[test]
fn unknown_content_falls_back_to_one_image_file() {
    if !fuse_available() {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("raw.img");
    let mut bytes = vec![0u8; 1024 * 1024];
    rand::rngs::SmallRng::seed_from_u64(9).fill(&mut bytes[..]);
    fs::write(&image, &bytes).unwrap();
    let device = Arc::new(FileDevice::open(&image, true).unwrap());
    assert_eq!(detect_filesystem(device.as_ref()), FilesystemKind::Unknown);
    let mountpoint = directory.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let mounted = mount(device, &mountpoint, MountOptions::read_only_files("raw")).unwrap();
    assert_eq!(
        mounted.view(),
        &MountedView::ImageFile {
            file_name: "volume.img".to_string()
        }
    );
    let names: Vec<_> = fs::read_dir(&mountpoint)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("volume.img")]);
    assert!(fs::read(mountpoint.join("volume.img")).unwrap() == bytes);
    assert_eq!(
        File::options()
            .write(true)
            .open(mountpoint.join("volume.img"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    drop(mounted);
    assert!(!is_mounted(&mountpoint));
}

#[test]
fn read_write_image_file_carries_a_loop_mounted_ext4() {
    if !fuse_available() {
        return;
    }
    if !tool_available("mkfs.ext4", "-V") || !tool_available("debugfs", "-V") {
        support::skip("mkfs.ext4/debugfs are not installed (Debian package e2fsprogs)");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("live.img");
    assert!(Command::new("mkfs.ext4")
        .args(["-q"])
        .arg(&image)
        .arg("24M")
        .status()
        .unwrap()
        .success());
    let device = Arc::new(FileDevice::open(&image, false).unwrap());
    let mountpoint = directory.path().join("attached");
    fs::create_dir(&mountpoint).unwrap();
    let mounted = mount(
        device.clone(),
        &mountpoint,
        MountOptions::image_file("live", "disk.img", false),
    )
    .unwrap();
    let attached = mountpoint.join("disk.img");
    assert_eq!(fs::metadata(&attached).unwrap().len(), 24 * 1024 * 1024);

    // A write through the file reaches the device; fsync reaches its flush.
    let file = File::options()
        .read(true)
        .write(true)
        .open(&attached)
        .unwrap();
    let writes_before = device.write_count();
    file.write_all_at(b"diskshadow was here", 20 * 1024 * 1024)
        .unwrap();
    assert!(device.write_count() > writes_before);
    let mut check = [0u8; 19];
    device.read_at(20 * 1024 * 1024, &mut check).unwrap();
    assert_eq!(&check, b"diskshadow was here");
    let flushes_before = device.flush_count();
    file.sync_all().unwrap();
    assert!(device.flush_count() > flushes_before);
    // The disk cannot grow.
    assert_eq!(
        file.write_all_at(b"x", 24 * 1024 * 1024)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOSPC)
    );
    drop(file);

    // An ext4 filesystem works on top of the FUSE file (needs root and loop devices).
    let loop_target = directory.path().join("loop");
    fs::create_dir(&loop_target).unwrap();
    let loop_mount = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&attached)
        .arg(&loop_target)
        .output()
        .unwrap();
    if loop_mount.status.success() {
        fs::write(
            loop_target.join("hello.txt"),
            b"written through loop, FUSE and the device\n",
        )
        .unwrap();
        fs::create_dir(loop_target.join("subdir")).unwrap();
        let unmounted = Command::new("umount").arg(&loop_target).status().unwrap();
        assert!(unmounted.success());
        mounted.unmount().unwrap();
        let shown = Command::new("debugfs")
            .args(["-R", "cat /hello.txt"])
            .arg(&image)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&shown.stdout),
            "written through loop, FUSE and the device\n"
        );
        let fsck = Command::new("e2fsck")
            .args(["-f", "-n"])
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    } else {
        mounted.unmount().unwrap();
        support::skip(format!(
            "mount -o loop failed: {}",
            String::from_utf8_lossy(&loop_mount.stderr)
        ));
    }
    assert!(!is_mounted(&mountpoint));
}

#[test]
fn mount_errors_name_the_problem() {
    if !fuse_available() {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("raw.img");
    fs::write(&image, vec![0u8; 65536]).unwrap();
    let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&image, true).unwrap());

    let missing = directory.path().join("missing");
    let error = mount(device.clone(), &missing, MountOptions::read_only_files("x")).unwrap_err();
    assert!(matches!(error, MountError::MountPointMissing { .. }));
    // The engine names the problem; the way out is the service's, shown as help.
    assert!(!error.to_string().contains("mkdir"), "{error}");
    assert!(error.way_out().unwrap_or_default().contains("mkdir -p"));

    let error = mount(device.clone(), &image, MountOptions::read_only_files("x")).unwrap_err();
    assert!(matches!(error, MountError::MountPointNotADirectory { .. }));

    // A mount over a directory that holds something would hide it: refused, and it stays.
    let occupied = directory.path().join("occupied");
    fs::create_dir(&occupied).unwrap();
    fs::write(occupied.join("keep.txt"), b"mine").unwrap();
    let error = mount(
        device.clone(),
        &occupied,
        MountOptions::read_only_files("x"),
    )
    .unwrap_err();
    assert!(
        matches!(error, MountError::MountPointNotEmpty { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("keep.txt"), "{error}");
    assert!(!is_mounted(&occupied));
    assert_eq!(fs::read(occupied.join("keep.txt")).unwrap(), b"mine");

    let mountpoint = directory.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let error = mount(
        device.clone(),
        &mountpoint,
        MountOptions::image_file("x", "disk.img", false),
    )
    .unwrap_err();
    assert!(matches!(error, MountError::DeviceIsReadOnly));
    let error = mount(
        device.clone(),
        &mountpoint,
        MountOptions::image_file("x", "../escape", true),
    )
    .unwrap_err();
    assert!(matches!(error, MountError::InvalidFileName { .. }));

    let first = mount(
        device.clone(),
        &mountpoint,
        MountOptions::read_only_files("x"),
    )
    .unwrap();
    let error = mount(
        device.clone(),
        &mountpoint,
        MountOptions::read_only_files("y"),
    )
    .unwrap_err();
    assert!(
        matches!(error, MountError::MountPointInUse { .. }),
        "{error}"
    );
    assert!(error
        .way_out()
        .unwrap_or_default()
        .contains("fusermount3 -uz"));
    drop(first);
    assert!(!is_mounted(&mountpoint));
}

/// Set in the child process of `a_mount_left_by_a_dead_process_is_cleaned_up`.
const LEAVE_MOUNT_VARIABLE: &str = "DISKSHADOW_TEST_LEAVE_MOUNT_AT";

/// In the child process: mounts, forgets the handle and exits, as a crashed service would.
/// In a normal test run it only checks that it is not in child mode.
#[test]
fn child_process_leaves_a_mount_behind() {
    let Some(mountpoint) = std::env::var_os(LEAVE_MOUNT_VARIABLE) else {
        return;
    };
    let image = PathBuf::from(&mountpoint).with_extension("img");
    fs::write(&image, vec![0u8; 65536]).unwrap();
    let device = Arc::new(FileDevice::open(&image, true).unwrap());
    let mounted = mount(
        device,
        Path::new(&mountpoint),
        MountOptions::read_only_files("crashed"),
    )
    .unwrap();
    std::mem::forget(mounted);
    std::process::exit(0);
}

#[test]
fn a_mount_left_by_a_dead_process_is_cleaned_up() {
    if !fuse_available() {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let mountpoint = directory.path().join("left");
    fs::create_dir(&mountpoint).unwrap();
    /// Detaches the dead mount even when an assertion below fails.
    struct DetachOnDrop(PathBuf);
    impl Drop for DetachOnDrop {
        fn drop(&mut self) {
            cleanup_stale(std::slice::from_ref(&self.0), &[]);
        }
    }
    let _guard = DetachOnDrop(mountpoint.clone());
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_leaves_a_mount_behind",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LEAVE_MOUNT_VARIABLE, &mountpoint)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(is_mounted(&mountpoint), "the child left its mount behind");
    // The server is gone: the mount answers "Transport endpoint is not connected".
    assert_eq!(
        fs::read_dir(&mountpoint)
            .err()
            .and_then(|error| error.raw_os_error()),
        Some(libc::ENOTCONN)
    );

    let stale_socket = directory.path().join("service.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale_socket).unwrap());
    let report = cleanup_stale(
        std::slice::from_ref(&mountpoint),
        std::slice::from_ref(&stale_socket),
    );
    assert_eq!(report.unmounted, vec![mountpoint.clone()]);
    assert_eq!(report.removed_sockets, vec![stale_socket.clone()]);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(!is_mounted(&mountpoint));
    assert!(!stale_socket.exists());
    // The directory is usable again.
    assert!(fs::read_dir(&mountpoint).unwrap().next().is_none());
}

/// Builds an NTFS image with mkntfs and fills it through an ntfs-3g mount.
fn build_ntfs(directory: &Path) -> Option<(PathBuf, PathBuf)> {
    if !tool_available("mkntfs", "--version") || !tool_available("ntfs-3g", "--version") {
        support::skip("mkntfs/ntfs-3g are not installed (Debian package ntfs-3g)");
        return None;
    }
    let source = directory.join("ntfs-source");
    fs::create_dir_all(source.join("Docs/Sub")).unwrap();
    fs::write(source.join("Docs/readme.txt"), b"hello from NTFS\n").unwrap();
    fs::write(source.join("Docs/Sub/leaf.txt"), b"leaf").unwrap();
    fs::write(source.join("empty.dat"), b"").unwrap();
    let mut big = vec![0u8; 3 * 1024 * 1024 + 4321];
    rand::rngs::SmallRng::seed_from_u64(11).fill(&mut big[..]);
    fs::write(source.join("big.bin"), &big).unwrap();
    fs::write(
        source.join("A Long File Name With Spaces.txt"),
        b"long name",
    )
    .unwrap();
    set_mtime(&source.join("big.bin"), 1_600_000_000);

    let image = directory.join("ntfs.img");
    File::create(&image)
        .unwrap()
        .set_len(24 * 1024 * 1024)
        .unwrap();
    let made = Command::new("mkntfs")
        .args(["-F", "-f", "-q"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let filler = directory.join("ntfs-fill");
    fs::create_dir(&filler).unwrap();
    let mounted = Command::new("ntfs-3g")
        .arg(&image)
        .arg(&filler)
        .output()
        .unwrap();
    if !mounted.status.success() {
        support::skip(format!(
            "ntfs-3g cannot mount here: {}",
            String::from_utf8_lossy(&mounted.stderr)
        ));
        return None;
    }
    let copied = Command::new("cp")
        .args(["-a", "--no-preserve=ownership,mode"])
        .arg(format!("{}/.", source.display()))
        .arg(&filler)
        .status()
        .unwrap();
    // A sparse file, written through ntfs-3g with a hole before its data (sparse data runs),
    // and its bytes in the source for comparison.
    for root in [&filler, &source] {
        let mut sparse = File::create(root.join("Docs/Sub/sparse.bin")).unwrap();
        sparse.seek(SeekFrom::Start(6 * 1024 * 1024)).unwrap();
        sparse.write_all(&[0x5a; 64 * 1024]).unwrap();
        sparse.set_len(8 * 1024 * 1024).unwrap();
    }
    let unmounted = Command::new("fusermount3")
        .arg("-u")
        .arg(&filler)
        .status()
        .unwrap();
    assert!(copied.success() && unmounted.success());
    Some((source, image))
}

#[test]
fn ntfs_files_are_shown_read_only() {
    if !fuse_available() {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let Some((source, image)) = build_ntfs(directory.path()) else {
        return;
    };
    let device = Arc::new(FileDevice::open(&image, true).unwrap());
    assert_eq!(detect_filesystem(device.as_ref()), FilesystemKind::Ntfs);
    let mountpoint = directory.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let mounted = mount(
        device,
        &mountpoint,
        MountOptions::read_only_files("ntfs-shadow"),
    )
    .unwrap();
    assert_eq!(mounted.view(), &MountedView::NtfsFiles);

    let mut root_names: Vec<String> = fs::read_dir(&mountpoint)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    root_names.sort();
    // System files ($MFT, $Bitmap, ...) are hidden; only what was copied in is shown.
    assert_eq!(
        root_names,
        vec![
            "A Long File Name With Spaces.txt",
            "Docs",
            "big.bin",
            "empty.dat"
        ]
    );
    for relative in [
        "Docs/readme.txt",
        "Docs/Sub/leaf.txt",
        "Docs/Sub/sparse.bin",
        "empty.dat",
        "big.bin",
        "A Long File Name With Spaces.txt",
    ] {
        let expected = fs::read(source.join(relative)).unwrap();
        let shown = mountpoint.join(relative);
        assert_eq!(
            fs::metadata(&shown).unwrap().len(),
            expected.len() as u64,
            "size of {relative}"
        );
        assert!(
            fs::read(&shown).unwrap() == expected,
            "content of {relative}"
        );
    }
    assert!(fs::metadata(mountpoint.join("Docs/Sub")).unwrap().is_dir());
    // The sparse file's holes: st_blocks counts its data only, SEEK_DATA/SEEK_HOLE find them.
    let sparse = File::open(mountpoint.join("Docs/Sub/sparse.bin")).unwrap();
    let allocated = sparse.metadata().unwrap().blocks() * 512;
    assert!(
        (64 * 1024..1024 * 1024).contains(&allocated),
        "{allocated} bytes allocated for 64 KiB of data in 8 MiB"
    );
    let seek = |offset: i64, whence: i32| {
        // SAFETY: lseek on an open descriptor; no memory is touched.
        unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&sparse), offset, whence) }
    };
    assert_eq!(seek(0, libc::SEEK_HOLE), 0);
    let data = seek(0, libc::SEEK_DATA);
    assert!(
        (4 * 1024 * 1024..=6 * 1024 * 1024).contains(&data),
        "data found at {data}"
    );
    assert!(seek(6 * 1024 * 1024 + 64 * 1024, libc::SEEK_HOLE) <= 8 * 1024 * 1024);
    // A file without holes is all data.
    let big = File::open(mountpoint.join("big.bin")).unwrap();
    // SAFETY: as above.
    let big_hole =
        unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&big), 0, libc::SEEK_HOLE) };
    assert_eq!(
        big_hole,
        fs::metadata(mountpoint.join("big.bin")).unwrap().len() as i64
    );
    assert_eq!(
        fs::metadata(mountpoint.join("big.bin")).unwrap().mtime(),
        1_600_000_000
    );
    assert_eq!(
        fs::metadata(mountpoint.join("big.bin")).unwrap().mode() & 0o7777,
        0o444
    );
    let mut piece = vec![0u8; 5000];
    File::open(mountpoint.join("big.bin"))
        .unwrap()
        .read_exact_at(&mut piece, 2 * 1024 * 1024 + 3)
        .unwrap();
    assert_eq!(
        piece,
        fs::read(source.join("big.bin")).unwrap()[2 * 1024 * 1024 + 3..2 * 1024 * 1024 + 5003]
    );
    assert_eq!(
        fs::write(mountpoint.join("new"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    mounted.unmount().unwrap();
    assert!(!is_mounted(&mountpoint));
}
