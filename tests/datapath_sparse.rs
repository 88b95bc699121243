//! The data path keeps holes: shadows and live volumes report their allocation from the
//! provider's map, NBD offers it as `base:allocation` (checked with nbdinfo, qemu-img and a raw
//! socket), and malformed requests get errors or a closed connection, never a stuck export.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use diskshadow::engine::clock::{SeededIds, SteppingClock};
use diskshadow::engine::core::EngineOptions;
use diskshadow::engine::device::{BlockDevice, Extent};
use diskshadow::engine::expose::{serve_nbd, NbdListener};
use diskshadow::engine::model::{CreateSpec, CreateVolume, RequesterId};
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;

const CHUNK: u32 = 64 * 1024;
const MIB: u64 = 1024 * 1024;
const VOLUME_BYTES: u64 = 64 * MIB;

fn options() -> EngineOptions {
    EngineOptions::new(
        Arc::new(SteppingClock::default()),
        Arc::new(SeededIds::new(1)),
        "HOST",
        CHUNK,
        Arc::new(RealBackend),
    )
}

fn tool_available(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

fn pattern(length: u64, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// A sparse 64 MiB volume with data at [1 MiB, 2 MiB), a shadow of it, then writes to the live
/// volume at [1 MiB, 1 MiB + 4 KiB) (preserves data) and [8 MiB, 8 MiB + 64 KiB) (preserves a
/// never-written chunk), flushed.
struct SparseFixture {
    _directory: PathBuf,
    _engine: Engine,
    shadow: Arc<dyn BlockDevice>,
    live: Arc<dyn BlockDevice>,
    shadow_bytes: Vec<u8>,
}

fn sparse_fixture(name: &str) -> SparseFixture {
    let directory = support::scratch(name);
    let image = directory.join("sparse.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(VOLUME_BYTES)
        .unwrap();
    let engine = Engine::open(&directory.join("store"), options()).unwrap();
    let volume = engine.register_volume(&image, None).unwrap();
    let live = engine.open_volume(volume.id).unwrap();
    live.write_at(MIB, &pattern(MIB, 7)).unwrap();
    live.flush().unwrap();
    let created = engine
        .create_shadow_set(&CreateSpec {
            volumes: vec![CreateVolume {
                volume: volume.id,
                provider: None,
            }],
            context: Context::Persistent,
            extra_attributes: Attributes::default(),
            requester: RequesterId(7),
            set_id: None,
        })
        .unwrap();
    live.write_at(MIB, &[0xEE; 4096]).unwrap();
    live.write_at(8 * MIB, &[0xDD; 64 * 1024]).unwrap();
    live.flush().unwrap();
    let shadow = engine.open_shadow(created.shadows[0].id).unwrap();
    let mut shadow_bytes = vec![0u8; VOLUME_BYTES as usize];
    shadow_bytes[MIB as usize..2 * MIB as usize].copy_from_slice(&pattern(MIB, 7));
    SparseFixture {
        _directory: directory,
        _engine: engine,
        shadow,
        live,
        shadow_bytes,
    }
}

/// Every extent of the device, asking again where a partial answer ends.
fn whole_map(device: &dyn BlockDevice) -> Vec<Extent> {
    let mut extents: Vec<Extent> = Vec::new();
    let mut position = 0;
    while position < device.size() {
        let answer = device
            .allocation(position, device.size() - position)
            .unwrap();
        assert!(!answer.is_empty());
        assert_eq!(answer[0].offset, position, "answers start where asked");
        for extent in answer {
            match extents.last_mut() {
                Some(last) if last.hole == extent.hole && last.end() == extent.offset => {
                    last.length += extent.length;
                }
                _ => extents.push(extent),
            }
        }
        position = extents.last().unwrap().end();
    }
    extents
}

#[test]
fn datapath_shadow_and_live_allocation_follow_the_provider_map() {
    let fixture = sparse_fixture("datapath_allocation_map");
    assert_eq!(
        whole_map(fixture.shadow.as_ref()),
        vec![
            Extent::hole(0, MIB),
            Extent::data(MIB, MIB),
            // The chunk at 8 MiB was preserved as never written: still a hole in the shadow.
            Extent::hole(2 * MIB, VOLUME_BYTES - 2 * MIB),
        ]
    );
    assert_eq!(
        whole_map(fixture.live.as_ref()),
        vec![
            Extent::hole(0, MIB),
            Extent::data(MIB, MIB),
            Extent::hole(2 * MIB, 6 * MIB),
            Extent::data(8 * MIB, 64 * 1024),
            Extent::hole(8 * MIB + 64 * 1024, VOLUME_BYTES - 8 * MIB - 64 * 1024),
        ]
    );
    // A write still in the write-back buffer is data at once.
    fixture.live.write_at(32 * MIB, &[1u8; 4096]).unwrap();
    let around = fixture.live.allocation(32 * MIB - 4096, 3 * 4096).unwrap();
    assert!(around
        .iter()
        .any(|extent| !extent.hole && extent.offset <= 32 * MIB && extent.end() > 32 * MIB));
    // The shadow does not change.
    assert_eq!(whole_map(fixture.shadow.as_ref()).len(), 3);
}

fn serve_shadow(fixture: &SparseFixture, socket: &Path) -> diskshadow::engine::expose::NbdExport {
    serve_nbd(
        Arc::clone(&fixture.shadow),
        "shadow",
        NbdListener::Unix(socket.to_path_buf()),
        true,
    )
    .unwrap()
}

#[test]
fn datapath_nbdinfo_map_and_qemu_img_see_the_holes_of_a_share() {
    if !tool_available("nbdinfo") || !tool_available("qemu-img") {
        support::skip("nbdinfo or qemu-img is not installed (libnbd-bin, qemu-utils)");
        return;
    }
    let fixture = sparse_fixture("datapath_nbdinfo_map");
    let socket = fixture._directory.join("share.sock");
    let export = serve_shadow(&fixture, &socket);

    let output = Command::new("nbdinfo")
        .args(["--map", &export.url()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let map: Vec<(u64, u64, u32)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (
                fields[0].parse().unwrap(),
                fields[1].parse().unwrap(),
                fields[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        map,
        vec![
            (0, MIB, 3),
            (MIB, MIB, 0),
            (2 * MIB, VOLUME_BYTES - 2 * MIB, 3)
        ],
        "nbdinfo --map: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    let output = Command::new("qemu-img")
        .args(["map", "--output=json", "-f", "raw", &export.url()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let data: Vec<(u64, u64)> = entries
        .iter()
        .filter(|entry| entry["data"] == serde_json::Value::Bool(true))
        .map(|entry| {
            (
                entry["start"].as_u64().unwrap(),
                entry["length"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(data, vec![(MIB, MIB)], "qemu-img map: {entries:?}");

    // qemu-img convert keeps the copy sparse and exact.
    let copy = fixture._directory.join("copy.img");
    let output = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &export.url()])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(std::fs::read(&copy).unwrap() == fixture.shadow_bytes);
    let allocated = std::fs::metadata(&copy).unwrap().blocks() * 512;
    assert!(
        allocated <= 2 * MIB,
        "the copy of a share with 1 MiB of data allocates {allocated} bytes"
    );
}

// ---- a raw protocol client ------------------------------------------------------------------

const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

fn send_option(stream: &mut UnixStream, option: u32, data: &[u8]) {
    let mut request = Vec::new();
    request.extend_from_slice(b"IHAVEOPT");
    request.extend_from_slice(&option.to_be_bytes());
    request.extend_from_slice(&(data.len() as u32).to_be_bytes());
    request.extend_from_slice(data);
    stream.write_all(&request).unwrap();
}

/// Every option reply (type, data) up to the first that is not SERVER, INFO or META_CONTEXT.
fn option_replies(stream: &mut UnixStream, option: u32) -> Vec<(u32, Vec<u8>)> {
    let mut replies = Vec::new();
    loop {
        let mut header = [0u8; 20];
        stream.read_exact(&mut header).unwrap();
        assert_eq!(
            u64::from_be_bytes(header[0..8].try_into().unwrap()),
            OPTION_REPLY_MAGIC
        );
        assert_eq!(
            u32::from_be_bytes(header[8..12].try_into().unwrap()),
            option
        );
        let reply_type = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let length = u32::from_be_bytes(header[16..20].try_into().unwrap());
        let mut payload = vec![0u8; length as usize];
        stream.read_exact(&mut payload).unwrap();
        replies.push((reply_type, payload));
        if !(2..=4).contains(&reply_type) {
            return replies;
        }
    }
}

fn meta_context_payload(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(name.len() as u32).to_be_bytes());
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for query in queries {
        payload.extend_from_slice(&(query.len() as u32).to_be_bytes());
        payload.extend_from_slice(query.as_bytes());
    }
    payload
}

fn connect(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 18];
    stream.read_exact(&mut greeting).unwrap();
    stream.write_all(&3u32.to_be_bytes()).unwrap();
    stream
}

/// Negotiates structured replies (when asked), selects base:allocation (when asked) and GOes.
fn structured_session(socket: &Path, structured: bool, allocation: bool) -> UnixStream {
    let mut stream = connect(socket);
    if structured {
        send_option(&mut stream, 8, &[]);
        assert_eq!(option_replies(&mut stream, 8), vec![(1, Vec::new())]);
    }
    if allocation {
        send_option(
            &mut stream,
            10,
            &meta_context_payload("shadow", &["base:allocation", "qemu:dirty-bitmap:x"]),
        );
        let replies = option_replies(&mut stream, 10);
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert_eq!(replies[0].0, 4, "NBD_REP_META_CONTEXT");
        assert_eq!(&replies[0].1[4..], b"base:allocation");
        assert_eq!(replies[1].0, 1);
    }
    let mut go = Vec::new();
    go.extend_from_slice(&6u32.to_be_bytes());
    go.extend_from_slice(b"shadow");
    go.extend_from_slice(&0u16.to_be_bytes());
    send_option(&mut stream, 7, &go);
    assert_eq!(option_replies(&mut stream, 7).last().unwrap().0, 1);
    stream
}

fn send_request(
    stream: &mut UnixStream,
    flags: u16,
    command: u16,
    cookie: u64,
    offset: u64,
    length: u32,
) {
    let mut request = Vec::with_capacity(28);
    request.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    request.extend_from_slice(&flags.to_be_bytes());
    request.extend_from_slice(&command.to_be_bytes());
    request.extend_from_slice(&cookie.to_be_bytes());
    request.extend_from_slice(&offset.to_be_bytes());
    request.extend_from_slice(&length.to_be_bytes());
    stream.write_all(&request).unwrap();
}

/// One structured chunk: (flags, type, cookie, payload).
fn read_chunk(stream: &mut UnixStream) -> (u16, u16, u64, Vec<u8>) {
    let mut header = [0u8; 20];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(
        u32::from_be_bytes(header[0..4].try_into().unwrap()),
        STRUCTURED_REPLY_MAGIC
    );
    let flags = u16::from_be_bytes([header[4], header[5]]);
    let kind = u16::from_be_bytes([header[6], header[7]]);
    let cookie = u64::from_be_bytes(header[8..16].try_into().unwrap());
    let length = u32::from_be_bytes(header[16..20].try_into().unwrap());
    let mut payload = vec![0u8; length as usize];
    stream.read_exact(&mut payload).unwrap();
    (flags, kind, cookie, payload)
}

fn descriptors(payload: &[u8]) -> (u32, Vec<(u32, u32)>) {
    let context = u32::from_be_bytes(payload[0..4].try_into().unwrap());
    let pairs = payload[4..]
        .chunks_exact(8)
        .map(|pair| {
            (
                u32::from_be_bytes(pair[0..4].try_into().unwrap()),
                u32::from_be_bytes(pair[4..8].try_into().unwrap()),
            )
        })
        .collect();
    (context, pairs)
}

#[test]
fn datapath_raw_protocol_structured_reads_and_block_status() {
    let fixture = sparse_fixture("datapath_raw_block_status");
    let socket = fixture._directory.join("share.sock");
    let _export = serve_shadow(&fixture, &socket);

    // LIST_META_CONTEXT works before structured replies; SET refuses without them.
    let mut stream = connect(&socket);
    send_option(&mut stream, 9, &meta_context_payload("shadow", &[]));
    let replies = option_replies(&mut stream, 9);
    assert_eq!(replies[0].0, 4);
    assert_eq!(&replies[0].1[4..], b"base:allocation");
    send_option(
        &mut stream,
        10,
        &meta_context_payload("shadow", &["base:allocation"]),
    );
    assert_eq!(option_replies(&mut stream, 10)[0].0, (1 << 31) | 3);
    send_option(&mut stream, 10, &[0, 0, 0, 9]);
    assert_eq!(
        option_replies(&mut stream, 10)[0].0,
        (1 << 31) | 3,
        "malformed"
    );
    drop(stream);

    let mut stream = structured_session(&socket, true, true);
    // Block status over [512 KiB, 2.5 MiB): hole, data, hole; with REQ_ONE only the first.
    send_request(&mut stream, 0, 7, 11, MIB / 2, (2 * MIB) as u32);
    let (flags, kind, cookie, payload) = read_chunk(&mut stream);
    assert_eq!((flags & 1, kind, cookie), (1, 5, 11));
    assert_eq!(
        descriptors(&payload),
        (
            1,
            vec![
                ((MIB / 2) as u32, 3),
                (MIB as u32, 0),
                ((MIB / 2) as u32, 3)
            ]
        )
    );
    send_request(&mut stream, 1 << 3, 7, 12, MIB / 2, (2 * MIB) as u32);
    let (_, _, _, payload) = read_chunk(&mut stream);
    assert_eq!(descriptors(&payload).1, vec![((MIB / 2) as u32, 3)]);
    // A read answers with one OFFSET_DATA chunk holding the shadow's bytes.
    send_request(&mut stream, 0, 0, 13, MIB, 4096);
    let (flags, kind, cookie, payload) = read_chunk(&mut stream);
    assert_eq!((flags & 1, kind, cookie), (1, 1, 13));
    assert_eq!(u64::from_be_bytes(payload[0..8].try_into().unwrap()), MIB);
    assert_eq!(
        &payload[8..],
        &fixture.shadow_bytes[MIB as usize..MIB as usize + 4096]
    );
    // Out of range: an error chunk (EINVAL), and the connection goes on.
    send_request(&mut stream, 0, 7, 14, VOLUME_BYTES, 1);
    let (_, kind, cookie, payload) = read_chunk(&mut stream);
    assert_eq!((kind, cookie), ((1 << 15) | 1, 14));
    assert_eq!(u32::from_be_bytes(payload[0..4].try_into().unwrap()), 22);
    send_request(&mut stream, 0, 0, 15, VOLUME_BYTES - 1, 2);
    let (_, kind, _, _) = read_chunk(&mut stream);
    assert_eq!(kind, (1 << 15) | 1);
    drop(stream);

    // Without a meta context, block status is EINVAL (simple reply without structured ones).
    let mut stream = structured_session(&socket, false, false);
    send_request(&mut stream, 0, 7, 16, 0, 4096);
    let mut reply = [0u8; 16];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(
        u32::from_be_bytes(reply[0..4].try_into().unwrap()),
        SIMPLE_REPLY_MAGIC
    );
    assert_eq!(u32::from_be_bytes(reply[4..8].try_into().unwrap()), 22);
}

/// A bounded fuzz: random and truncated requests from many short connections. Every
/// connection gets replies or is closed; afterwards the export still serves a good client.
#[test]
fn datapath_raw_protocol_fuzz_never_sticks_the_export() {
    use rand::{Rng, SeedableRng};
    let fixture = sparse_fixture("datapath_raw_fuzz");
    let socket = fixture._directory.join("share.sock");
    let export = serve_shadow(&fixture, &socket);
    let mut generator = rand::rngs::SmallRng::seed_from_u64(12);
    for round in 0..60 {
        let mut stream = structured_session(&socket, round % 2 == 0, round % 4 == 0);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut dropped_mid_request = false;
        for _ in 0..generator.random_range(1..8) {
            let command: u16 = generator.random_range(0..12);
            let flags: u16 = generator.random();
            let offset: u64 = match generator.random_range(0..3) {
                0 => generator.random_range(0..VOLUME_BYTES),
                1 => VOLUME_BYTES - generator.random_range(0..4096),
                _ => generator.random(),
            };
            let length: u32 = match generator.random_range(0..3) {
                0 => generator.random_range(0..65536),
                1 => generator.random_range(0..64 * 1024 * 1024),
                _ => generator.random(),
            };
            // Writes (1) carry a payload we never send in full: the client drops mid-request.
            if command == 1 || command == 2 {
                send_request(&mut stream, flags, command, 1, offset, length);
                let _ = stream.write_all(&[0u8; 100]);
                dropped_mid_request = true;
                break;
            }
            send_request(&mut stream, flags, command, 1, offset, length);
            // Read whatever comes back until the reply is complete or the server closes.
            let mut magic = [0u8; 4];
            if stream.read_exact(&mut magic).is_err() {
                break;
            }
            let magic = u32::from_be_bytes(magic);
            if magic == SIMPLE_REPLY_MAGIC {
                let mut rest = [0u8; 12];
                stream.read_exact(&mut rest).unwrap();
                let error = u32::from_be_bytes(rest[0..4].try_into().unwrap());
                if error == 0 && command == 0 {
                    let mut data = vec![0u8; length as usize];
                    stream.read_exact(&mut data).unwrap();
                }
            } else {
                assert_eq!(magic, STRUCTURED_REPLY_MAGIC);
                let mut rest = [0u8; 16];
                stream.read_exact(&mut rest).unwrap();
                let chunk_length = u32::from_be_bytes(rest[12..16].try_into().unwrap());
                let mut data = vec![0u8; chunk_length as usize];
                stream.read_exact(&mut data).unwrap();
                assert_ne!(
                    u16::from_be_bytes([rest[0], rest[1]]) & 1,
                    0,
                    "one chunk, done"
                );
            }
        }
        // Garbage instead of a request: the server closes the connection.
        if round % 5 == 0 && !dropped_mid_request {
            let _ = stream.write_all(&[0xAB; 28]);
            let mut rest = Vec::new();
            let closed = stream.read_to_end(&mut rest);
            assert!(
                closed.is_ok(),
                "the server closes a connection sending garbage"
            );
        }
    }
    // The export still serves, and nothing is left connected.
    let mut stream = structured_session(&socket, true, true);
    send_request(&mut stream, 0, 0, 99, MIB, 16);
    let (_, kind, _, payload) = read_chunk(&mut stream);
    assert_eq!(kind, 1);
    assert_eq!(
        &payload[8..],
        &fixture.shadow_bytes[MIB as usize..MIB as usize + 16]
    );
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while export.connected_clients() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(export.connected_clients(), 0);
}

// ---- FUSE image views -----------------------------------------------------------------------

fn fuse_available() -> bool {
    if std::fs::File::options()
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

fn seek(file: &std::fs::File, offset: u64, whence: i32) -> Result<u64, i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on an open descriptor; no memory is touched.
    let result = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if result < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(result as u64)
    }
}

#[test]
fn datapath_fuse_image_views_report_holes_to_lseek_stat_and_cp() {
    use diskshadow::engine::expose::{mount, MountOptions};
    if !fuse_available() {
        return;
    }
    let fixture = sparse_fixture("datapath_fuse_seek_hole");
    let shadow_mount = fixture._directory.join("shadow-view");
    let live_mount = fixture._directory.join("live-view");
    std::fs::create_dir(&shadow_mount).unwrap();
    std::fs::create_dir(&live_mount).unwrap();
    let shadow_view = mount(
        Arc::clone(&fixture.shadow),
        &shadow_mount,
        MountOptions::image_file("shadow", "disk.img", true),
    )
    .unwrap();
    let live_view = mount(
        Arc::clone(&fixture.live),
        &live_mount,
        MountOptions::image_file("live", "disk.img", false),
    )
    .unwrap();

    let shadow_file = std::fs::File::open(shadow_mount.join("disk.img")).unwrap();
    assert_eq!(seek(&shadow_file, 0, libc::SEEK_DATA), Ok(MIB));
    assert_eq!(seek(&shadow_file, MIB + 5, libc::SEEK_DATA), Ok(MIB + 5));
    assert_eq!(seek(&shadow_file, MIB, libc::SEEK_HOLE), Ok(2 * MIB));
    assert_eq!(seek(&shadow_file, 0, libc::SEEK_HOLE), Ok(0));
    assert_eq!(
        seek(&shadow_file, 2 * MIB, libc::SEEK_DATA),
        Err(libc::ENXIO),
        "no data after the shadow's only data extent"
    );
    assert_eq!(
        seek(&shadow_file, VOLUME_BYTES, libc::SEEK_HOLE),
        Err(libc::ENXIO)
    );
    assert_eq!(shadow_file.metadata().unwrap().blocks() * 512, MIB);

    let live_file = std::fs::File::open(live_mount.join("disk.img")).unwrap();
    assert_eq!(seek(&live_file, 2 * MIB, libc::SEEK_DATA), Ok(8 * MIB));
    assert_eq!(
        seek(&live_file, 8 * MIB, libc::SEEK_HOLE),
        Ok(8 * MIB + 64 * 1024)
    );
    assert_eq!(
        live_file.metadata().unwrap().blocks() * 512,
        MIB + 64 * 1024
    );

    // cp --sparse=always of the shadow view makes a sparse, exact copy.
    let copy = fixture._directory.join("copy.img");
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(shadow_mount.join("disk.img"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(std::fs::read(&copy).unwrap() == fixture.shadow_bytes);
    assert!(std::fs::metadata(&copy).unwrap().blocks() * 512 <= 2 * MIB);

    drop(shadow_file);
    drop(live_file);
    shadow_view.unmount().unwrap();
    live_view.unmount().unwrap();
}

// ---- TRIM, WRITE_ZEROES and punch-hole on attachments ------------------------------------

fn image_allocated_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn datapath_trim_and_punch_hole_free_live_chunks_while_shadows_keep_their_bytes() {
    use diskshadow::engine::expose::{mount, MountOptions};
    if !tool_available("qemu-io") {
        support::skip("qemu-io is not installed (Debian package qemu-utils)");
        return;
    }
    let fixture = sparse_fixture("datapath_trim_punch");
    let image = fixture._directory.join("sparse.img");
    let before = image_allocated_bytes(&image);
    let socket = fixture._directory.join("attach.sock");
    let export = serve_nbd(
        Arc::clone(&fixture.live),
        "live",
        NbdListener::Unix(socket.clone()),
        false,
    )
    .unwrap();
    // A trim of [1 MiB, 2 MiB) (whole chunks, which the shadow needs), a write of zeros that
    // may punch (`-u`) over the chunk at 8 MiB, and a trim of a partial chunk.
    let output = Command::new("qemu-io")
        .args(["-f", "raw"])
        .args(["-c", "discard 1M 1M"])
        .args(["-c", "write -z -u 8M 64k"])
        .args(["-c", "discard 20000000 1000"])
        .args(["-c", "flush"])
        .arg(export.url())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("failed"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    drop(export);

    let mut live = vec![0u8; VOLUME_BYTES as usize];
    fixture.live.read_at(0, &mut live).unwrap();
    assert!(
        live.iter().all(|byte| *byte == 0),
        "the live volume is all zeros now"
    );
    assert_eq!(
        whole_map(fixture.live.as_ref()),
        vec![Extent::hole(0, VOLUME_BYTES)],
        "the trimmed chunks are holes in the live image"
    );
    let after = image_allocated_bytes(&image);
    assert!(
        after < before && after <= 64 * 1024,
        "the live image freed its blocks: {before} -> {after} bytes"
    );
    // The shadow still reads what it had: the preserved copies were made before the holes.
    let mut shadow = vec![0u8; VOLUME_BYTES as usize];
    fixture.shadow.read_at(0, &mut shadow).unwrap();
    assert!(shadow == fixture.shadow_bytes, "the shadow kept its bytes");
    assert_eq!(whole_map(fixture.shadow.as_ref()).len(), 3);

    // FUSE: punch-hole on the attached image file frees a rewritten chunk; zero-range writes.
    if !fuse_available() {
        return;
    }
    fixture.live.write_at(4 * MIB, &[9u8; 128 * 1024]).unwrap();
    fixture.live.flush().unwrap();
    let live_mount = fixture._directory.join("live-view");
    std::fs::create_dir(&live_mount).unwrap();
    let view = mount(
        Arc::clone(&fixture.live),
        &live_mount,
        MountOptions::image_file("live", "disk.img", false),
    )
    .unwrap();
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(live_mount.join("disk.img"))
        .unwrap();
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate on an open descriptor; no memory is touched.
        let punched = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (4 * MIB) as libc::off_t,
                (64 * 1024) as libc::off_t,
            )
        };
        assert_eq!(punched, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: as above.
        let zeroed = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                (4 * MIB + 64 * 1024) as libc::off_t,
                4096,
            )
        };
        assert_eq!(zeroed, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: as above; plain preallocation of a disk is refused.
        let allocate = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, 4096) };
        assert_eq!(allocate, -1);
    }
    let mut piece = vec![1u8; 128 * 1024];
    fixture.live.read_at(4 * MIB, &mut piece).unwrap();
    assert!(piece[..64 * 1024 + 4096].iter().all(|byte| *byte == 0));
    assert!(piece[64 * 1024 + 4096..].iter().all(|byte| *byte == 9));
    assert_eq!(seek(&file, 4 * MIB, libc::SEEK_HOLE), Ok(4 * MIB));
    assert_eq!(
        seek(&file, 4 * MIB, libc::SEEK_DATA),
        Ok(4 * MIB + 64 * 1024)
    );
    drop(file);
    view.unmount().unwrap();
    fixture.shadow.read_at(0, &mut shadow).unwrap();
    assert!(shadow == fixture.shadow_bytes, "the shadow kept its bytes");
}

/// The file named `name` somewhere under `directory`.
fn find_file(directory: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(directory).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|file| file == name) {
            return Some(path);
        }
    }
    None
}

#[test]
fn datapath_trims_of_a_redirect_on_write_volume_free_its_diff_area() {
    use diskshadow::engine::ids::ProviderId;
    use diskshadow::engine::provider::ROW_PROVIDER_ID;
    if !tool_available("qemu-io") {
        support::skip("qemu-io is not installed (Debian package qemu-utils)");
        return;
    }
    let directory = support::scratch("datapath_row_trim");
    let image = directory.join("row.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(VOLUME_BYTES)
        .unwrap();
    let engine = Engine::open(&directory.join("store"), options()).unwrap();
    let volume = engine
        .register_volume_with_provider(&image, None, Some(ProviderId(ROW_PROVIDER_ID)))
        .unwrap();
    let live = engine.open_volume(volume.id).unwrap();
    live.write_at(0, &pattern(4 * MIB, 3)).unwrap();
    live.flush().unwrap();
    let created = engine
        .create_shadow_set(&CreateSpec {
            volumes: vec![CreateVolume {
                volume: volume.id,
                provider: None,
            }],
            context: Context::Persistent,
            extra_attributes: Attributes::default(),
            requester: RequesterId(7),
            set_id: None,
        })
        .unwrap();
    // Redirected versions of [0, 4 MiB): they take diff-area storage.
    live.write_at(0, &pattern(4 * MIB, 5)).unwrap();
    live.flush().unwrap();
    let data_file = find_file(&directory.join("store"), "row-chunks.dat").expect("diff area");
    let before = image_allocated_bytes(&data_file);
    assert!(before >= 4 * MIB, "{before} bytes before the trims");

    let socket = directory.join("row.sock");
    let export = serve_nbd(
        Arc::clone(&live),
        "live",
        NbdListener::Unix(socket.clone()),
        false,
    )
    .unwrap();
    // The redirected versions (no shadow reads them) and chunks the shadow reads from the
    // image (holes there), whole chunks both.
    let output = Command::new("qemu-io")
        .args(["-f", "raw"])
        .args(["-c", "discard 0 4M"])
        .args(["-c", "discard 8M 4M"])
        .args(["-c", "flush"])
        .arg(export.url())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("failed"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    drop(export);
    let after = image_allocated_bytes(&data_file);
    assert!(
        after <= 64 * 1024,
        "the diff area gave its storage back: {before} -> {after} bytes"
    );
    let mut bytes = vec![1u8; VOLUME_BYTES as usize];
    live.read_at(0, &mut bytes).unwrap();
    assert!(
        bytes.iter().all(|byte| *byte == 0),
        "the live volume reads zeros"
    );
    let shadow = engine.open_shadow(created.shadows[0].id).unwrap();
    shadow.read_at(0, &mut bytes).unwrap();
    let mut expected = vec![0u8; VOLUME_BYTES as usize];
    expected[..(4 * MIB) as usize].copy_from_slice(&pattern(4 * MIB, 3));
    assert!(bytes == expected, "the shadow kept its bytes");
}

#[test]
fn datapath_punch_over_a_buffered_first_write_zeroes_it_and_survives_the_drain() {
    let fixture = sparse_fixture("datapath_punch_buffered");
    // A first write after the shadow is buffered until its preserved copy is durable.
    let base = 40 * MIB;
    fixture.live.write_at(base, &[5u8; 64 * 1024]).unwrap();
    fixture
        .live
        .write_at(base + 64 * 1024, &[6u8; 64 * 1024])
        .unwrap();
    // Zero the middle: half of each chunk.
    fixture
        .live
        .write_zeroes(base + 32 * 1024, 64 * 1024, true)
        .unwrap();
    let check = |when: &str| {
        let mut bytes = vec![1u8; 128 * 1024];
        fixture.live.read_at(base, &mut bytes).unwrap();
        assert!(bytes[..32 * 1024].iter().all(|b| *b == 5), "{when}");
        assert!(
            bytes[32 * 1024..96 * 1024].iter().all(|b| *b == 0),
            "{when}"
        );
        assert!(bytes[96 * 1024..].iter().all(|b| *b == 6), "{when}");
    };
    check("before the flush");
    fixture.live.flush().unwrap();
    check("after the flush");
    // Zeroing a whole buffered chunk drops it.
    fixture.live.write_at(48 * MIB, &[7u8; 64 * 1024]).unwrap();
    fixture
        .live
        .write_zeroes(48 * MIB, 64 * 1024, true)
        .unwrap();
    fixture.live.flush().unwrap();
    let mut bytes = vec![1u8; 64 * 1024];
    fixture.live.read_at(48 * MIB, &mut bytes).unwrap();
    assert!(bytes.iter().all(|b| *b == 0));
    let mut shadow = vec![0u8; VOLUME_BYTES as usize];
    fixture.shadow.read_at(0, &mut shadow).unwrap();
    assert!(shadow == fixture.shadow_bytes, "the shadow kept its bytes");
    // Out of range is refused.
    assert!(fixture
        .live
        .write_zeroes(VOLUME_BYTES - 10, 20, true)
        .is_err());
}

// ---- volume read|write through the service ---------------------------------------------------

#[test]
fn datapath_volume_read_and_write_carry_raw_bytes_and_keep_files_sparse() {
    let work = support::scratch("datapath_volume_read_write");
    let store = work.join("store");
    let volume = work.join("data.img");
    std::fs::File::create(&volume)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    // Every byte value, newlines and quotes included, over more than one 4 MiB request.
    let input: Vec<u8> = (0..(5 * MIB + 123))
        .map(|index| (index % 251) as u8)
        .collect();
    let input_path = work.join("input.bin");
    std::fs::write(&input_path, &input).unwrap();
    support::process::diskshadow(&store)
        .args(["volume", "write"])
        .arg(&volume)
        .args(["--offset", "1048576", "--input"])
        .arg(&input_path)
        .assert()
        .success();
    let output = support::process::diskshadow(&store)
        .args(["volume", "read"])
        .arg(&volume)
        .args(["--offset", "1048576", "--length"])
        .arg(input.len().to_string())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        output.stdout == input,
        "standard output carries the bytes exactly"
    );

    // Into a file, the never-written megabytes stay holes.
    let copy = work.join("copy.img");
    support::process::diskshadow(&store)
        .args(["volume", "read"])
        .arg(&volume)
        .arg("--output")
        .arg(&copy)
        .assert()
        .success();
    let bytes = std::fs::read(&copy).unwrap();
    assert_eq!(bytes.len() as u64, 16 * MIB);
    assert!(bytes[MIB as usize..MIB as usize + input.len()] == input[..]);
    assert!(bytes[..MIB as usize].iter().all(|byte| *byte == 0));
    let allocated = std::fs::metadata(&copy).unwrap().blocks() * 512;
    assert!(
        allocated <= 6 * MIB + 128 * 1024,
        "the output allocates {allocated} bytes for 5 MiB of data in 16 MiB"
    );
    support::process::diskshadow(&store)
        .args(["service", "stop"])
        .assert()
        .success();
}

/// `diskshadow --store STORE` as a plain command, for redirecting its standard streams.
fn diskshadow_std(store: &Path) -> Command {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("diskshadow"));
    command
        .arg("--store")
        .arg(store)
        .env_remove("DISKSHADOW_STORE")
        .env("DISKSHADOW_IDLE_TIMEOUT", "5");
    command
}

#[test]
fn datapath_volume_read_and_write_pass_files_and_pipes_to_the_service() {
    use std::process::Stdio;
    let work = support::scratch("datapath_volume_descriptors");
    let store = work.join("store");
    let volume = work.join("data.img");
    std::fs::File::create(&volume)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let first = pattern(5 * MIB + 123, 7);
    let second = pattern(MIB, 11);
    let input_path = work.join("input.bin");
    std::fs::write(&input_path, &first).unwrap();
    let run = |command: &mut Command| {
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        output
    };
    // Standard input from a regular file, and from a pipe.
    run(diskshadow_std(&store)
        .args(["volume", "write"])
        .arg(&volume)
        .args(["--offset", "1M"])
        .stdin(std::fs::File::open(&input_path).unwrap()));
    let mut piped = diskshadow_std(&store)
        .args(["volume", "write"])
        .arg(&volume)
        .args(["--offset", "10M"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    piped.stdin.take().unwrap().write_all(&second).unwrap();
    let piped = piped.wait_with_output().unwrap();
    assert!(piped.status.success(), "{piped:?}");
    let mut expected = vec![0u8; (16 * MIB) as usize];
    expected[MIB as usize..MIB as usize + first.len()].copy_from_slice(&first);
    expected[(10 * MIB) as usize..(11 * MIB) as usize].copy_from_slice(&second);
    assert!(
        std::fs::read(&volume).unwrap() == expected,
        "the volume holds both writes"
    );

    // --output: a file with holes where the volume has none of its data.
    let copy = work.join("copy.img");
    run(diskshadow_std(&store)
        .args(["volume", "read"])
        .arg(&volume)
        .arg("--output")
        .arg(&copy));
    assert!(std::fs::read(&copy).unwrap() == expected);
    let file = std::fs::File::open(&copy).unwrap();
    assert_eq!(
        seek(&file, 0, libc::SEEK_HOLE),
        Ok(0),
        "the file starts with a hole"
    );
    assert_eq!(seek(&file, 0, libc::SEEK_DATA), Ok(MIB));
    assert_eq!(seek(&file, 7 * MIB, libc::SEEK_DATA), Ok(10 * MIB));
    let allocated = image_allocated_bytes(&copy);
    assert!(
        allocated <= 7 * MIB,
        "{allocated} bytes allocated for 6 MiB of data in 16 MiB"
    );
    // --no-sparse writes every byte.
    let dense = work.join("dense.img");
    run(diskshadow_std(&store)
        .args(["volume", "read", "--no-sparse"])
        .arg(&volume)
        .arg("--output")
        .arg(&dense));
    assert!(std::fs::read(&dense).unwrap() == expected);
    assert!(image_allocated_bytes(&dense) >= 16 * MIB);

    // Standard output redirected to a file after a header: the bytes follow the header.
    let redirected = work.join("redirected.img");
    {
        let mut header = std::fs::File::create(&redirected).unwrap();
        header.write_all(b"header").unwrap();
        run(diskshadow_std(&store)
            .args(["volume", "read"])
            .arg(&volume)
            .args(["--offset", "1M", "--length", "2M"])
            .stdout(header.try_clone().unwrap()));
        header.write_all(b"trailer").unwrap();
    }
    let mut wanted = b"header".to_vec();
    wanted.extend_from_slice(&expected[MIB as usize..(3 * MIB) as usize]);
    wanted.extend_from_slice(b"trailer");
    assert!(std::fs::read(&redirected).unwrap() == wanted);

    // A pipe (the service writes it) and a socket (bytes over the service socket).
    let output = run(diskshadow_std(&store)
        .args(["volume", "read"])
        .arg(&volume)
        .args(["--offset", "9M", "--length", "3M"]));
    assert!(output.stdout == expected[(9 * MIB) as usize..(12 * MIB) as usize]);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        let mut ours = ours;
        let mut bytes = Vec::new();
        ours.read_to_end(&mut bytes).unwrap();
        bytes
    });
    run(diskshadow_std(&store)
        .args(["volume", "read"])
        .arg(&volume)
        .args(["--offset", "9M", "--length", "3M"])
        .stdout(std::os::fd::OwnedFd::from(theirs)));
    assert!(reader.join().unwrap() == expected[(9 * MIB) as usize..(12 * MIB) as usize]);

    // Standard input from a socket: the bytes go over the service socket.
    let (ours, theirs) = UnixStream::pair().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut ours = ours;
        ours.write_all(&pattern(MIB, 13)).unwrap();
    });
    run(diskshadow_std(&store)
        .args(["volume", "write"])
        .arg(&volume)
        .args(["--offset", "10M"])
        .stdin(std::os::fd::OwnedFd::from(theirs)));
    feeder.join().unwrap();
    expected[(10 * MIB) as usize..(11 * MIB) as usize].copy_from_slice(&pattern(MIB, 13));
    assert!(std::fs::read(&volume).unwrap() == expected);

    // Descriptors the service cannot use the needed way: clear errors, nothing changed.
    let read_only = diskshadow_std(&store)
        .args(["volume", "read"])
        .arg(&volume)
        .stdout(std::fs::File::open(&copy).unwrap())
        .output()
        .unwrap();
    assert!(!read_only.status.success());
    let stderr = String::from_utf8_lossy(&read_only.stderr);
    assert!(
        stderr.contains("the output is open for reading only"),
        "{stderr}"
    );
    let write_only = diskshadow_std(&store)
        .args(["volume", "write"])
        .arg(&volume)
        .args(["--offset", "0"])
        .stdin(
            std::fs::File::options()
                .append(true)
                .open(&input_path)
                .unwrap(),
        )
        .output()
        .unwrap();
    assert!(!write_only.status.success());
    let stderr = String::from_utf8_lossy(&write_only.stderr);
    assert!(
        stderr.contains("the input is open for writing only"),
        "{stderr}"
    );
    // A file longer than the room left is refused before a byte is written.
    let past_end = diskshadow_std(&store)
        .args(["volume", "write"])
        .arg(&volume)
        .args(["--offset", "12M", "--input"])
        .arg(&input_path)
        .output()
        .unwrap();
    assert!(!past_end.status.success());
    let stderr = String::from_utf8_lossy(&past_end.stderr);
    assert!(stderr.contains("past the end of the volume"), "{stderr}");
    assert!(
        std::fs::read(&volume).unwrap() == expected,
        "nothing was written"
    );
    support::process::diskshadow(&store)
        .args(["service", "stop"])
        .assert()
        .success();
}

#[test]
fn datapath_a_descriptor_request_without_its_descriptor_is_refused_clearly() {
    use std::io::BufRead;
    let work = support::scratch("datapath_missing_descriptor");
    let store = work.join("store");
    let volume = work.join("data.img");
    std::fs::File::create(&volume)
        .unwrap()
        .set_len(MIB)
        .unwrap();
    // Starts the service.
    support::process::diskshadow(&store)
        .args(["volume", "info"])
        .arg(&volume)
        .assert()
        .success();
    let socket =
        diskshadow::service::transport::ServicePaths::for_store(&store).socket_for_requesters();
    let mut stream = UnixStream::connect(socket).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("hello"), "{line}");
    // A descriptor frame with no descriptor attached, then a request that needs one.
    let request = serde_json::json!({"request": {"read_into": {
        "target": volume, "offset": 0, "length": 16, "sparse": true, "base_dir": "/"}}});
    writeln!(stream, "{{\"descriptor\": {{}}}}").unwrap();
    writeln!(stream, "{request}").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("none came with it"), "{line}");
    // The connection still serves the next request.
    let request = serde_json::json!({"request": {"write_from": {
        "volume": volume, "offset": 0, "base_dir": "/"}}});
    writeln!(stream, "{request}").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("none came with it"), "{line}");
    drop(stream);
    support::process::diskshadow(&store)
        .args(["service", "stop"])
        .assert()
        .success();
}

// ---- parallel requests on one connection ------------------------------------------------------

/// A device whose reads wait (up to 5 s) until another read is in flight too, and which
/// remembers the most reads it saw at once.
struct RendezvousDevice {
    state: std::sync::Mutex<(usize, usize)>,
    arrived: std::sync::Condvar,
}

impl BlockDevice for RendezvousDevice {
    fn size(&self) -> u64 {
        MIB
    }
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        state.1 = state.1.max(state.0);
        self.arrived.notify_all();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state.1 < 2 && std::time::Instant::now() < deadline {
            state = self
                .arrived
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        state.0 -= 1;
        buffer.fill(offset as u8);
        Ok(())
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn is_read_only(&self) -> bool {
        true
    }
}

#[test]
fn datapath_requests_on_one_connection_run_in_parallel_and_replies_match_cookies() {
    let directory = support::scratch("datapath_parallel_requests");
    let socket = directory.join("parallel.sock");
    let device = Arc::new(RendezvousDevice {
        state: std::sync::Mutex::new((0, 0)),
        arrived: std::sync::Condvar::new(),
    });
    let _export = serve_nbd(
        device.clone(),
        "shadow",
        NbdListener::Unix(socket.clone()),
        true,
    )
    .unwrap();
    let mut stream = structured_session(&socket, true, false);
    let started = std::time::Instant::now();
    // Eight reads sent at once, without waiting for replies.
    for cookie in 0..8u64 {
        send_request(&mut stream, 0, 0, 100 + cookie, cookie * 4096, 4096);
    }
    let mut cookies = Vec::new();
    for _ in 0..8 {
        let (flags, kind, cookie, payload) = read_chunk(&mut stream);
        assert_eq!((flags & 1, kind), (1, 1));
        let offset = u64::from_be_bytes(payload[0..8].try_into().unwrap());
        assert_eq!(
            offset,
            (cookie - 100) * 4096,
            "each reply belongs to its cookie"
        );
        assert!(payload[8..].iter().all(|byte| *byte == offset as u8));
        cookies.push(cookie);
    }
    cookies.sort_unstable();
    assert_eq!(cookies, (100..108).collect::<Vec<u64>>());
    assert!(
        device.state.lock().unwrap().1 >= 2,
        "two reads of one connection were in the device at once"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}
