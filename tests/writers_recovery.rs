//! Auto-recovery: during PostSnapshot writers get a read-write view of each new shadow (its own
//! overlay, never the live volume); afterwards the shadow is sealed and shows the repair.

mod support;

use std::fs;
use std::path::Path;

use diskshadow::engine::model::{DriveTarget, RequesterId};
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::service::local::LocalService;
use diskshadow::service::{CreateRequest, ShadowService, SilentObserver};

fn python() -> bool {
    let present = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    let fuse = Path::new("/dev/fuse").exists();
    if !present || !fuse {
        support::skip("auto-recovery needs python3 (the test writer) and /dev/fuse (the view)");
    }
    present && fuse
}

fn setup(name: &str) -> (std::path::PathBuf, LocalService) {
    let work = support::scratch(name);
    fs::write(work.join("data.img"), vec![0x11u8; 1 << 20]).expect("image");
    let writers = work.join("store/writers");
    fs::create_dir_all(&writers).expect("writers");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/writers/recovering_writer.py");
    fs::write(
        writers.join("db.toml"),
        format!(
            "name = \"Database Writer\"\nid = \"{{5b5b5b5b-1111-4222-8333-444444444444}}\"\ncommand = [\"python3\", {:?}, \"D:\", {:?}]\n",
            script.display().to_string(),
            work.join("record.jsonl").display().to_string()
        ),
    )
    .expect("registration");
    let engine = support::open_engine(&work.join("store"));
    let mut service = LocalService::with_core(support::service_core(engine), RequesterId(1));
    service
        .map_drive('D', DriveTarget::Volume(work.join("data.img")))
        .expect("map");
    (work, service)
}

fn create(service: &mut LocalService, extra: u32) -> diskshadow::engine::model::ShadowInfo {
    let volume = service
        .resolve_volume("D:", Path::new("/"))
        .expect("volume");
    let request = CreateRequest::one_volume(volume, Context::Persistent, Attributes(extra));
    let outcome = service
        .create(&request, &mut SilentObserver)
        .expect("create");
    outcome.set.shadows.into_iter().next().expect("one shadow")
}

fn post_snapshot(work: &Path) -> serde_json::Value {
    fs::read_to_string(work.join("record.jsonl"))
        .expect("record")
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .rfind(|request| request["event"] == "post_snapshot")
        .expect("a post_snapshot event")
}

#[test]
fn writers_repair_the_shadow_never_the_live_volume_and_the_repair_is_sealed_in() {
    if !python() {
        return;
    }
    let (work, mut service) = setup("recovery-on");
    let shadow = create(&mut service, 0);
    let event = post_snapshot(&work);
    assert_eq!(event["autorecover"], true);
    let path = event["shadows"][0]["path"]
        .as_str()
        .expect("a read-write view was given")
        .to_string();
    assert!(
        !Path::new(&path).exists(),
        "the view is gone once the shadow is sealed"
    );

    let id = shadow.id.to_string();
    let start = service
        .read(&id, 0, 16, Path::new("/"))
        .expect("read shadow");
    assert_eq!(
        &start[..9],
        b"RECOVERED",
        "the shadow shows the writer's repair"
    );
    assert_eq!(&start[9..], &[0x11u8; 7]);
    let live = service
        .read("D:", 0, 16, Path::new("/"))
        .expect("read live");
    assert_eq!(live, vec![0x11u8; 16], "the live volume is untouched");

    // The repair is part of the shadow: revert brings it to the volume.
    service
        .write("D:", 0, &[0x22u8; 4096], Path::new("/"))
        .expect("write live");
    service
        .revert(shadow.id, false, &mut SilentObserver)
        .expect("revert");
    let reverted = service
        .read("D:", 0, 16, Path::new("/"))
        .expect("read live");
    assert_eq!(&reverted[..9], b"RECOVERED");
    assert_eq!(&reverted[9..], &[0x11u8; 7]);

    // Deleting the shadow removes its overlay.
    let overlay = work.join(format!("store/recovery/{id}.overlay"));
    assert!(overlay.exists());
    service
        .delete_shadows(&diskshadow::engine::model::DeleteSelector::Id(shadow.id))
        .expect("delete");
    assert!(!overlay.exists(), "no overlay outlives its shadow");
}

#[test]
fn noautorecover_gives_writers_no_view_and_leaves_the_shadow_as_taken() {
    if !python() {
        return;
    }
    let (work, mut service) = setup("recovery-off");
    let shadow = create(&mut service, Attributes::NO_AUTORECOVERY);
    let event = post_snapshot(&work);
    assert_eq!(event["autorecover"], false);
    assert!(event["shadows"][0]["path"].is_null());
    let start = service
        .read(&shadow.id.to_string(), 0, 16, Path::new("/"))
        .expect("read shadow");
    assert_eq!(start, vec![0x11u8; 16]);
}
