//! The NBD server against real clients (qemu-img, qemu-io, nbdcopy, nbdinfo) and a raw
//! protocol client for what the tools cannot show (EPERM on a refused write, disconnects).

mod support;

use diskshadow::service::way_out::EngineFailure;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use diskshadow::engine::device::BlockDevice;
use diskshadow::engine::expose::{serve_nbd, FileDevice, NbdError, NbdListener};
use rand::{Rng, SeedableRng};

const IMAGE_BYTES: usize = 3 * 1024 * 1024 + 4096 * 7;

fn tool_available(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

fn make_image(path: &Path, seed: u64) -> Vec<u8> {
    let mut generator = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut bytes = vec![0u8; IMAGE_BYTES];
    generator.fill(&mut bytes[..IMAGE_BYTES / 2]);
    // The second half stays mostly zero, with one marked block, like a real sparse volume.
    bytes[IMAGE_BYTES - 4096..IMAGE_BYTES - 4000].fill(0x5A);
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn open_device(path: &Path, read_only: bool) -> Arc<FileDevice> {
    Arc::new(FileDevice::open(path, read_only).unwrap())
}

fn run(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap();
    eprintln!(
        "{:?}: {}\nstdout: {}\nstderr: {}",
        command,
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn qemu_img_copies_a_unix_socket_export_byte_for_byte() {
    if !tool_available("qemu-img") {
        support::skip("qemu-img is not installed (Debian package qemu-utils)");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("volume.img");
    let expected = make_image(&image, 1);
    let socket = directory.path().join("export.sock");
    let export = serve_nbd(
        open_device(&image, true),
        "shadow1",
        NbdListener::Unix(socket.clone()),
        true,
    )
    .unwrap();
    assert_eq!(
        export.url(),
        format!("nbd+unix:///shadow1?socket={}", socket.display())
    );
    let copy = directory.path().join("copy.img");
    let output = run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(export.url())
        .arg(&copy));
    assert!(output.status.success());
    assert_eq!(std::fs::read(&copy).unwrap(), expected);
    export.stop();
    assert!(!socket.exists(), "stop must remove the socket file");
}

#[test]
fn nbdcopy_and_nbdinfo_read_a_tcp_export_with_several_connections() {
    if !tool_available("nbdcopy") || !tool_available("nbdinfo") {
        support::skip("nbdcopy/nbdinfo are not installed (Debian package libnbd-bin)");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("volume.img");
    let expected = make_image(&image, 2);
    let address: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let export = serve_nbd(
        open_device(&image, true),
        "vol",
        NbdListener::Tcp(address),
        true,
    )
    .unwrap();
    let bound = export.tcp_address().unwrap();
    assert_ne!(bound.port(), 0);
    assert_eq!(export.url(), format!("nbd://{bound}/vol"));

    let info = run(Command::new("nbdinfo").arg("--json").arg(export.url()));
    assert!(info.status.success());
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let first = &info["exports"][0];
    assert_eq!(first["export-size"].as_u64(), Some(IMAGE_BYTES as u64));
    assert_eq!(first["is_read_only"].as_bool(), Some(true));
    assert_eq!(first["can_flush"].as_bool(), Some(true));
    assert_eq!(first["can_multi_conn"].as_bool(), Some(true));

    let list = run(Command::new("nbdinfo")
        .arg("--list")
        .arg(format!("nbd://{bound}")));
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("export=\"vol\""));

    let copy = directory.path().join("copy.img");
    // Four connections at once, each on its own server thread.
    let output = run(Command::new("nbdcopy")
        .args(["--connections=4", "--requests=8"])
        .arg(export.url())
        .arg(&copy));
    assert!(output.status.success());
    assert_eq!(std::fs::read(&copy).unwrap(), expected);
}

#[test]
fn two_clients_read_at_the_same_time() {
    if !tool_available("qemu-img") {
        support::skip("qemu-img is not installed (Debian package qemu-utils)");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("volume.img");
    let expected = make_image(&image, 3);
    let socket = directory.path().join("export.sock");
    let export = serve_nbd(
        open_device(&image, true),
        "s",
        NbdListener::Unix(socket),
        true,
    )
    .unwrap();
    // A raw client that holds its connection open while the copies run.
    let mut idle = UnixStream::connect(export.socket_path().unwrap()).unwrap();
    let mut greeting = [0u8; 18];
    idle.read_exact(&mut greeting).unwrap();
    let children: Vec<(PathBuf, std::process::Child)> = (0..2)
        .map(|index| {
            let copy = directory.path().join(format!("copy{index}.img"));
            let child = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "raw"])
                .arg(export.url())
                .arg(&copy)
                .spawn()
                .unwrap();
            (copy, child)
        })
        .collect();
    for (copy, mut child) in children {
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(&copy).unwrap(), expected);
    }
    // The copies' server threads notice their clients left a moment after the processes exit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while export.connected_clients() != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        export.connected_clients(),
        1,
        "only the idle client is still connected"
    );
    export.stop();
    // Stopping closed the idle client's connection.
    idle.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    match idle.read_to_end(&mut rest) {
        Ok(0) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the idle connection must be closed, got {other:?}"),
    }
}

#[test]
fn qemu_io_write_to_a_read_only_export_is_refused() {
    if !tool_available("qemu-io") {
        support::skip("qemu-io is not installed (Debian package qemu-utils)");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("volume.img");
    let expected = make_image(&image, 4);
    let device = open_device(&image, true);
    let socket = directory.path().join("export.sock");
    let export = serve_nbd(device.clone(), "ro", NbdListener::Unix(socket), true).unwrap();
    let output = run(Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0xcd 0 4k"])
        .arg(export.url()));
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        !output.status.success()
            || stderr.contains("read-only")
            || stderr.contains("not permitted"),
        "the write must be refused"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("wrote 4096/4096 bytes"));
    assert_eq!(device.write_count(), 0);
    assert_eq!(std::fs::read(&image).unwrap(), expected);
}

#[test]
fn qemu_io_writes_and_flushes_reach_a_read_write_device() {
    if !tool_available("qemu-io") {
        support::skip("qemu-io is not installed (Debian package qemu-utils)");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("volume.img");
    let mut expected = make_image(&image, 5);
    let device = open_device(&image, false);
    let socket = directory.path().join("export.sock");
    let export = serve_nbd(device.clone(), "rw", NbdListener::Unix(socket), false).unwrap();
    let output = run(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0xcd 8192 4k",
            "-c",
            "flush",
            "-c",
            "read -P 0xcd 8192 4k",
        ])
        .arg(export.url()));
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("wrote 4096/4096 bytes"));
    assert!(device.write_count() >= 1);
    assert!(
        device.flush_count() >= 1,
        "the client's flush must reach the device"
    );
    export.stop();
    expected[8192..8192 + 4096].fill(0xcd);
    assert_eq!(std::fs::read(&image).unwrap(), expected);
}

/// A minimal NBD client: fixed newstyle, NBD_OPT_GO on `name`, then raw requests.
struct RawClient {
    stream: UnixStream,
    size: u64,
    transmission_flags: u16,
}

impl RawClient {
    fn connect(socket: &Path, name: &str) -> Result<RawClient, u32> {
        let mut stream = UnixStream::connect(socket).unwrap();
        let mut greeting = [0u8; 18];
        stream.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[0..8], b"NBDMAGIC");
        assert_eq!(&greeting[8..16], b"IHAVEOPT");
        stream.write_all(&3u32.to_be_bytes()).unwrap();
        let mut option = Vec::new();
        option.extend_from_slice(b"IHAVEOPT");
        option.extend_from_slice(&7u32.to_be_bytes());
        option.extend_from_slice(&((4 + name.len() + 2) as u32).to_be_bytes());
        option.extend_from_slice(&(name.len() as u32).to_be_bytes());
        option.extend_from_slice(name.as_bytes());
        option.extend_from_slice(&0u16.to_be_bytes());
        stream.write_all(&option).unwrap();
        let mut size = 0;
        let mut transmission_flags = 0;
        loop {
            let mut header = [0u8; 20];
            stream.read_exact(&mut header).unwrap();
            let reply_type = u32::from_be_bytes(header[12..16].try_into().unwrap());
            let length = u32::from_be_bytes(header[16..20].try_into().unwrap());
            let mut data = vec![0u8; length as usize];
            stream.read_exact(&mut data).unwrap();
            match reply_type {
                1 => break,
                3 if data[0..2] == [0, 0] => {
                    size = u64::from_be_bytes(data[2..10].try_into().unwrap());
                    transmission_flags = u16::from_be_bytes(data[10..12].try_into().unwrap());
                }
                3 => {}
                error => return Err(error),
            }
        }
        Ok(RawClient {
            stream,
            size,
            transmission_flags,
        })
    }

    fn request(
        &mut self,
        command: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> (u32, Vec<u8>) {
        let mut request = Vec::new();
        request.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        request.extend_from_slice(&0u16.to_be_bytes());
        request.extend_from_slice(&command.to_be_bytes());
        request.extend_from_slice(&0xC00C1Eu64.to_be_bytes());
        request.extend_from_slice(&offset.to_be_bytes());
        request.extend_from_slice(&length.to_be_bytes());
        request.extend_from_slice(payload);
        self.stream.write_all(&request).unwrap();
        let mut reply = [0u8; 16];
        self.stream.read_exact(&mut reply).unwrap();
        assert_eq!(
            u32::from_be_bytes(reply[0..4].try_into().unwrap()),
            0x6744_6698
        );
        assert_eq!(
            u64::from_be_bytes(reply[8..16].try_into().unwrap()),
            0xC00C1E
        );
        let error = u32::from_be_bytes(reply[4..8].try_into().unwrap());
        let mut data = Vec::new();
        if command == 0 && error == 0 {
            data.resize(length as usize, 0);
            self.stream.read_exact(&mut data).unwrap();
        }
        (error, data)
    }
}

#[test]
fn raw_protocol_write_to_read_only_export_answers_eperm() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("volume.img");
    let expected = make_image(&image, 6);
    let device = open_device(&image, true);
    let socket = directory.path().join("export.sock");
    let _export = serve_nbd(
        device.clone(),
        "ro",
        NbdListener::Unix(socket.clone()),
        true,
    )
    .unwrap();

    assert_eq!(
        RawClient::connect(&socket, "nonexistent").err(),
        Some((1 << 31) | 6)
    );
    let mut client = RawClient::connect(&socket, "ro").unwrap();
    assert_eq!(client.size, IMAGE_BYTES as u64);
    assert_ne!(
        client.transmission_flags & 0x2,
        0,
        "READ_ONLY must be advertised"
    );
    assert_ne!(
        client.transmission_flags & 0x4,
        0,
        "SEND_FLUSH must be advertised"
    );
    let (error, _) = client.request(1, 0, 4, b"evil");
    assert_eq!(error, 1, "EPERM");
    let (error, data) = client.request(0, 100, 50, &[]);
    assert_eq!(error, 0);
    assert_eq!(data, expected[100..150]);
    let (error, _) = client.request(0, IMAGE_BYTES as u64 - 10, 20, &[]);
    assert_eq!(error, 22, "EINVAL past the end");
    let (error, _) = client.request(3, 0, 0, &[]);
    assert_eq!(error, 0);
    assert_eq!(device.flush_count(), 1, "FLUSH reaches the device");
    assert_eq!(std::fs::read(&image).unwrap(), expected);
}

#[test]
fn raw_protocol_write_zeroes_and_past_end_write_on_read_write_export() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("volume.img");
    let mut expected = make_image(&image, 7);
    let device = open_device(&image, false);
    let socket = directory.path().join("export.sock");
    let export = serve_nbd(
        device.clone(),
        "rw",
        NbdListener::Unix(socket.clone()),
        false,
    )
    .unwrap();
    // The empty name selects the default (and only) export.
    let mut client = RawClient::connect(&socket, "").unwrap();
    assert_eq!(client.transmission_flags & 0x2, 0);
    let (error, _) = client.request(6, 1000, 3000, &[]);
    assert_eq!(error, 0);
    let (error, _) = client.request(1, IMAGE_BYTES as u64 - 2, 4, b"over");
    assert_eq!(error, 28, "ENOSPC past the end");
    let (error, _) = client.request(1, 5, 4, b"abcd");
    assert_eq!(error, 0);
    drop(client);
    export.stop();
    expected[1000..4000].fill(0);
    expected[5..9].copy_from_slice(b"abcd");
    assert_eq!(std::fs::read(&image).unwrap(), expected);
}

#[test]
fn listeners_are_checked_before_serving() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("volume.img");
    make_image(&image, 8);
    let device: Arc<dyn BlockDevice> = open_device(&image, true);

    let public: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let error = serve_nbd(device.clone(), "x", NbdListener::Tcp(public), true).unwrap_err();
    assert!(matches!(error, NbdError::NotLoopback { .. }));

    let error = serve_nbd(
        device.clone(),
        "x",
        NbdListener::Tcp("127.0.0.1:0".parse().unwrap()),
        false,
    )
    .unwrap_err();
    assert!(matches!(error, NbdError::DeviceIsReadOnly));

    let plain = directory.path().join("plain");
    std::fs::write(&plain, b"not a socket").unwrap();
    let error = serve_nbd(device.clone(), "x", NbdListener::Unix(plain.clone()), true).unwrap_err();
    assert!(matches!(error, NbdError::PathIsNotASocket { .. }));
    assert!(error
        .way_out()
        .unwrap_or_default()
        .contains("choose another path"));

    let socket = directory.path().join("export.sock");
    let first = serve_nbd(device.clone(), "x", NbdListener::Unix(socket.clone()), true).unwrap();
    let error =
        serve_nbd(device.clone(), "y", NbdListener::Unix(socket.clone()), true).unwrap_err();
    assert!(matches!(error, NbdError::SocketInUse { .. }));
    drop(first);
    assert!(!socket.exists());
    // A crashed server leaves its socket file; a new export replaces it.
    let stale = directory.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let second = serve_nbd(device, "z", NbdListener::Unix(stale.clone()), true).unwrap();
    assert!(RawClient::connect(&stale, "z").is_ok());
    drop(second);
    assert!(!stale.exists());
}

/// Sends one option and returns every reply (type, data) up to the first ACK or error.
fn option_round_trip(stream: &mut UnixStream, option: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut request = Vec::new();
    request.extend_from_slice(b"IHAVEOPT");
    request.extend_from_slice(&option.to_be_bytes());
    request.extend_from_slice(&(data.len() as u32).to_be_bytes());
    request.extend_from_slice(data);
    stream.write_all(&request).unwrap();
    let mut replies = Vec::new();
    loop {
        let mut header = [0u8; 20];
        stream.read_exact(&mut header).unwrap();
        assert_eq!(
            u64::from_be_bytes(header[0..8].try_into().unwrap()),
            0x0003_e889_0455_65a9
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
        if reply_type != 2 && reply_type != 3 {
            return replies;
        }
    }
}

fn start_negotiation(socket: &Path, client_flags: u32) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut greeting = [0u8; 18];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(
        u16::from_be_bytes([greeting[16], greeting[17]]),
        0b11,
        "FIXED_NEWSTYLE | NO_ZEROES"
    );
    stream.write_all(&client_flags.to_be_bytes()).unwrap();
    stream
}

#[test]
fn raw_protocol_options_list_info_unsupported_abort_and_export_name() {
    let directory = tempfile::tempdir().unwrap();
    let image = directory.path().join("volume.img");
    let expected = make_image(&image, 9);
    let socket = directory.path().join("export.sock");
    let _export = serve_nbd(
        open_device(&image, true),
        "vol-9",
        NbdListener::Unix(socket.clone()),
        true,
    )
    .unwrap();

    let mut stream = start_negotiation(&socket, 3);
    // LIST names the one export, then ACKs.
    let replies = option_round_trip(&mut stream, 3, &[]);
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].0, 2);
    assert_eq!(&replies[0].1[4..], b"vol-9");
    assert_eq!(replies[1].0, 1);
    // A malformed STRUCTURED_REPLY (it takes no data) is ERR_INVALID, and unknown options are
    // refused with ERR_UNSUP; negotiation goes on, still with simple replies.
    assert_eq!(
        option_round_trip(&mut stream, 8, &[0]),
        vec![((1 << 31) | 3, b"STRUCTURED_REPLY takes no data".to_vec())]
    );
    assert_eq!(
        option_round_trip(&mut stream, 99, &[]).last().unwrap().0,
        (1 << 31) | 1
    );
    // INFO describes the export without starting transmission.
    let mut info_request = Vec::new();
    info_request.extend_from_slice(&5u32.to_be_bytes());
    info_request.extend_from_slice(b"vol-9");
    info_request.extend_from_slice(&1u16.to_be_bytes());
    info_request.extend_from_slice(&1u16.to_be_bytes());
    let replies = option_round_trip(&mut stream, 6, &info_request);
    let export_info = replies
        .iter()
        .find(|(kind, data)| *kind == 3 && data[0..2] == [0, 0])
        .unwrap();
    assert_eq!(
        u64::from_be_bytes(export_info.1[2..10].try_into().unwrap()),
        IMAGE_BYTES as u64
    );
    assert!(replies
        .iter()
        .any(|(kind, data)| *kind == 3 && data[0..2] == [0, 1] && &data[2..] == b"vol-9"));
    assert_eq!(replies.last().unwrap().0, 1);
    // A malformed INFO is ERR_INVALID.
    assert_eq!(
        option_round_trip(&mut stream, 6, &[0, 0]).last().unwrap().0,
        (1 << 31) | 3
    );
    // EXPORT_NAME answers with size and flags (no zeroes: the client asked) and transmission starts.
    let mut request = Vec::new();
    request.extend_from_slice(b"IHAVEOPT");
    request.extend_from_slice(&1u32.to_be_bytes());
    request.extend_from_slice(&5u32.to_be_bytes());
    request.extend_from_slice(b"vol-9");
    stream.write_all(&request).unwrap();
    let mut answer = [0u8; 10];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(
        u64::from_be_bytes(answer[0..8].try_into().unwrap()),
        IMAGE_BYTES as u64
    );
    assert_ne!(u16::from_be_bytes([answer[8], answer[9]]) & 0x2, 0);
    let mut client = RawClient {
        stream,
        size: IMAGE_BYTES as u64,
        transmission_flags: 0,
    };
    let (error, data) = client.request(0, 0, 16, &[]);
    assert_eq!((error, data.as_slice()), (0, &expected[0..16]));

    // ABORT is acknowledged and the connection closes.
    let mut stream = start_negotiation(&socket, 1);
    assert_eq!(
        option_round_trip(&mut stream, 2, &[]),
        vec![(1, Vec::new())]
    );
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);

    // EXPORT_NAME with an unknown name closes the connection (the protocol has no error reply).
    let mut stream = start_negotiation(&socket, 1);
    let mut request = Vec::new();
    request.extend_from_slice(b"IHAVEOPT");
    request.extend_from_slice(&1u32.to_be_bytes());
    request.extend_from_slice(&4u32.to_be_bytes());
    request.extend_from_slice(b"nope");
    stream.write_all(&request).unwrap();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
}
