//! LUN resync through the service: the volume safety checks `novolcheck` skips (a loop
//! device on the destination's image, another process holding it open), and the resync
//! then going ahead with `novolcheck`.

mod support;

use std::path::Path;
use std::process::Command;

use diskshadow::engine::ids::{ShadowId, VolumeId};
use diskshadow::engine::model::{CreateSpec, CreateVolume, RequesterId};
use diskshadow::engine::vss::{Attributes, Context, VssCode};
use diskshadow::service::local::LocalService;
use diskshadow::service::{ShadowService, SilentObserver};

const SIZE: usize = 1 << 20;

struct Setup {
    service: LocalService,
    image: std::path::PathBuf,
    volume: VolumeId,
    shadow: ShadowId,
    content: Vec<u8>,
}

fn setup(name: &str) -> Setup {
    let work = support::scratch(name);
    let image = work.join("lun.img");
    std::fs::write(&image, vec![0x5Au8; SIZE]).expect("image");
    let engine = support::open_engine(&work.join("store"));
    let volume = engine.register_volume(&image, None).expect("register").id;
    let shadow = engine
        .create_shadow_set(&CreateSpec {
            volumes: vec![CreateVolume {
                volume,
                provider: None,
            }],
            context: Context::Persistent,
            extra_attributes: Attributes::default(),
            requester: RequesterId(1),
            set_id: None,
        })
        .expect("create")
        .shadows[0]
        .id;
    let device = engine.open_volume(volume).expect("volume");
    device.write_at(4096, &[0xEEu8; 8192]).expect("damage");
    device.flush().expect("flush");
    let core = support::service_core(engine);
    Setup {
        service: LocalService::with_core(core, RequesterId(1)),
        image,
        volume,
        shadow,
        content: vec![0x5Au8; SIZE],
    }
}

fn live(setup: &mut Setup) -> Vec<u8> {
    setup
        .service
        .read(
            &setup.image.display().to_string(),
            0,
            SIZE as u64,
            Path::new("/"),
        )
        .expect("read")
}

/// Detaches the loop device when the test ends, also on failure.
struct LoopDevice(String);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn a_loop_device_on_the_destination_refuses_the_resync_unless_novolcheck() {
    let mut setup = setup("service-resync-loop");
    let output = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&setup.image)
        .output();
    let device = match output {
        Ok(output) if output.status.success() => {
            LoopDevice(String::from_utf8_lossy(&output.stdout).trim().to_string())
        }
        _ => {
            support::skip("losetup cannot attach a loop device here (root and util-linux)");
            return;
        }
    };
    let error = setup
        .service
        .resync(setup.shadow, None, false, &mut SilentObserver)
        .expect_err("a loop device uses the volume");
    assert_eq!(error.code, Some(VssCode::VSS_E_VOLUME_IN_USE), "{error}");
    assert!(error.to_string().contains(&device.0), "{error}");
    assert_ne!(live(&mut setup), setup.content, "nothing was written");

    let outcome = setup
        .service
        .resync(setup.shadow, None, true, &mut SilentObserver)
        .expect("novolcheck skips the check");
    assert_eq!(outcome.destination, setup.volume);
    assert_eq!(
        outcome.bytes_copied,
        64 << 10,
        "one 64 KiB chunk was damaged"
    );
    drop(device);
    assert_eq!(live(&mut setup), setup.content);
}

/// Ends the holding process when the test ends, also on failure.
struct Holder(String);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.0).status();
    }
}

#[test]
fn a_process_holding_the_destination_open_refuses_the_resync_unless_novolcheck() {
    let mut setup = setup("service-resync-holder");
    // Not a child of this process (the check leaves the service's own children out): a
    // shell starts the holder in the background and says its process ID.
    let output = Command::new("sh")
        .arg("-c")
        .arg("sh -c 'exec 3<>\"$0\"; exec sleep 30' \"$0\" </dev/null >/dev/null 2>&1 & echo $!")
        .arg(&setup.image)
        .output()
        .expect("holder");
    let holder = Holder(String::from_utf8_lossy(&output.stdout).trim().to_string());
    // Opened: the holder has made itself `sleep` after opening the image as fd 3.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{}/comm", holder.0))
        .map(|name| name.trim() != "sleep")
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never opened the image"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let refused = setup
        .service
        .resync(setup.shadow, None, false, &mut SilentObserver);
    let resynced = setup
        .service
        .resync(setup.shadow, None, true, &mut SilentObserver);
    let pid = holder.0.clone();
    drop(holder);
    let error = refused.expect_err("another process has the image open");
    assert_eq!(error.code, Some(VssCode::VSS_E_VOLUME_IN_USE), "{error}");
    assert!(
        error.to_string().contains(&format!("process {pid}")),
        "{error}"
    );
    resynced.expect("novolcheck skips the check");
    assert_eq!(live(&mut setup), setup.content);
}

#[test]
fn an_unknown_shadow_is_not_found() {
    let mut setup = setup("service-resync-unknown");
    let error = setup
        .service
        .resync(
            ShadowId(uuid::Uuid::from_u128(99)),
            None,
            false,
            &mut SilentObserver,
        )
        .expect_err("no such shadow");
    assert_eq!(error.code, Some(VssCode::VSS_E_OBJECT_NOT_FOUND), "{error}");
}

/// Ctrl-C while a requester waits for a resync over the service's socket: the requester sends
/// `cancel` (naming the operation the service offered) on a second connection; the resync
/// stops between chunks and answers on the first connection with the state it left; the
/// destination reads as the shadow meanwhile, the shadow is still listed, and resync again
/// finishes the copy.
#[test]
fn ctrl_c_over_the_socket_stops_a_resync_which_resync_again_finishes() {
    use diskshadow::service::remote::{EngineHandler, RemoteService};
    use diskshadow::service::transport::{serve, Client, ServerOptions};
    use diskshadow::service::{OperationId, ServiceObserver};
    use std::sync::Arc;

    /// Presses Ctrl-C at the first progress report.
    #[derive(Default)]
    struct CtrlC {
        offered: Option<OperationId>,
        progressed: u64,
        lines: Vec<String>,
    }
    impl ServiceObserver for CtrlC {
        fn verbose_line(&mut self, _line: &str) {}
        fn line(&mut self, line: &str) {
            self.lines.push(line.to_string());
        }
        fn progress_begin(&mut self, _what: &str, _total: u64) {}
        fn progress_advance(&mut self, units: u64) {
            self.progressed += units;
        }
        fn progress_end(&mut self) {}
        fn cancellable(&mut self, operation: OperationId) {
            self.offered = Some(operation);
        }
        fn stop_requested(&mut self) -> bool {
            self.progressed > 0
        }
    }

    const BIG: u64 = 64 << 20;
    let work = support::scratch("service-resync-ctrl-c");
    let image = work.join("lun.img");
    let content: Vec<u8> = (0..BIG as usize)
        .map(|index| (index / 4093) as u8 | 1)
        .collect();
    std::fs::write(&image, &content).expect("image");
    let target = work.join("target.img");
    std::fs::File::create(&target)
        .and_then(|file| file.set_len(BIG))
        .expect("target");
    let engine = support::open_engine(&work.join("store"));
    let volume = engine.register_volume(&image, None).expect("register").id;
    let destination = engine.register_volume(&target, None).expect("target").id;
    let shadow = engine
        .create_shadow_set(&CreateSpec {
            volumes: vec![CreateVolume {
                volume,
                provider: None,
            }],
            context: Context::Persistent,
            extra_attributes: Attributes::default(),
            requester: RequesterId(1),
            set_id: None,
        })
        .expect("create")
        .shadows[0]
        .id;
    let server = serve(
        &work.join("s.sock"),
        Arc::new(EngineHandler::new(engine)),
        ServerOptions {
            idle_timeout: None,
            ..ServerOptions::default()
        },
    )
    .expect("serve");
    let mut service = RemoteService::new(Client::connect(server.socket_path()).expect("connect"));
    let mut observer = CtrlC::default();
    let error = service
        .resync(shadow, Some(destination), true, &mut observer)
        .expect_err("stopped by Ctrl-C");
    assert!(
        observer.offered.is_some(),
        "the resync was offered as cancellable"
    );
    assert!(observer.lines.is_empty(), "{:?}", observer.lines);
    assert_eq!(error.code, Some(VssCode::VSS_S_ASYNC_CANCELLED), "{error}");
    assert!(
        error
            .help
            .as_deref()
            .unwrap_or_default()
            .contains("`resync` again"),
        "{error:?}"
    );
    assert!(observer.progressed < BIG, "it stopped before the end");
    let listed = service.shadows().expect("list");
    assert!(listed.iter().any(|info| info.id == shadow));
    let target_name = target.display().to_string();
    let read = service
        .read(&target_name, 0, BIG, Path::new("/"))
        .expect("read the destination");
    assert!(
        read == content,
        "a stopped resync's destination reads as the shadow"
    );
    // The operation ended with its request: a late cancel finds nothing.
    let late = service
        .cancel(observer.offered.expect("offered"))
        .expect_err("ended");
    assert_eq!(late.code, Some(VssCode::VSS_E_OBJECT_NOT_FOUND));
    let outcome = service
        .resync(shadow, Some(destination), true, &mut SilentObserver)
        .expect("resync again finishes");
    assert!(
        outcome.bytes_copied < BIG,
        "only what was left: {outcome:?}"
    );
    let read = service
        .read(&target_name, 0, BIG, Path::new("/"))
        .expect("read the destination");
    assert!(read == content, "the finished resync");
    drop(service);
    drop(server);
    assert!(std::fs::read(&target).expect("target image") == content);
}
