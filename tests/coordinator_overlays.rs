//! The shadow-copy coordinator owns auto-recovery overlays and exposures across every way a
//! shadow goes: an explicit delete, a deletion by the engine inside a write (diff-area limit),
//! the release of a requester's volatile shadows, and a revert whose writes delete a shadow.
//! No overlay of a deleted shadow remains, and no exposure serves one.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskshadow::engine::model::{DeleteSelector, DriveTarget, RequesterId, ShadowInfo};
use diskshadow::engine::vss::{Attributes, BackupType, Context};
use diskshadow::service::local::{LocalService, ServiceCore};
use diskshadow::service::{
    CreateRequest, SetVolume, ShadowService, SilentObserver, WriterSelection,
};

const IMAGE_BYTES: usize = 1 << 20;

fn writers_available() -> bool {
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

/// A store with the recovering test writer registered, and a requester.
fn setup(name: &str) -> (PathBuf, Arc<ServiceCore>, LocalService) {
    let work = support::scratch(name);
    fs::write(work.join("data.img"), vec![0x11u8; IMAGE_BYTES]).expect("image");
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
    let core = support::service_core(engine);
    let mut service = LocalService::with_core(core.clone(), RequesterId(1));
    service
        .map_drive('D', DriveTarget::Volume(work.join("data.img")))
        .expect("map");
    (work, core, service)
}

fn create(service: &mut LocalService, context: Context) -> ShadowInfo {
    let volume = service
        .resolve_volume("D:", Path::new("/"))
        .expect("volume");
    let request = CreateRequest {
        volumes: vec![SetVolume {
            volume,
            provider: None,
        }],
        context,
        extra_attributes: Attributes(0),
        backup_type: BackupType::Copy,
        writers: WriterSelection::default(),
        aliases: vec![None],
        metadata_path: None,
        step: false,
        default_metadata: None,
    };
    let outcome = service
        .create(&request, &mut SilentObserver)
        .expect("create");
    outcome.set.shadows.into_iter().next().expect("one shadow")
}

/// The overlay files the store keeps, by file name.
fn overlays(work: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(work.join("store/recovery")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".overlay"))
        .collect();
    names.sort();
    names
}

fn overlay_name(shadow: &ShadowInfo) -> String {
    format!("{}.overlay", shadow.id)
}

/// The writer repaired the shadow: it has an overlay, and reads show the repair.
fn assert_repaired(work: &Path, service: &mut LocalService, shadow: &ShadowInfo) {
    assert!(
        overlays(work).contains(&overlay_name(shadow)),
        "the writer's repair made an overlay"
    );
    let start = service
        .read(&shadow.id.to_string(), 0, 9, Path::new("/"))
        .expect("read shadow");
    assert_eq!(&start, b"RECOVERED");
}

fn assert_store_clean(service: &mut LocalService) {
    let check = service.check_store().expect("check");
    assert!(check.clean, "the store is clean: {:?}", check.problems);
}

#[test]
fn coordinator_an_explicit_delete_removes_the_overlay() {
    if !writers_available() {
        return;
    }
    let (work, _core, mut service) = setup("coordinator-overlay-delete");
    let shadow = create(&mut service, Context::Persistent);
    assert_repaired(&work, &mut service, &shadow);
    service
        .delete_shadows(&DeleteSelector::Set(shadow.set_id))
        .expect("delete");
    assert_eq!(overlays(&work), Vec::<String>::new());
    assert!(
        !work.join(format!("store/recovery/{}", shadow.id)).exists(),
        "the view's mount point goes with its shadow"
    );
    assert_store_clean(&mut service);
}

#[test]
fn coordinator_a_diff_area_deletion_inside_a_write_removes_the_overlay() {
    if !writers_available() {
        return;
    }
    let (work, core, mut service) = setup("coordinator-overlay-diff-area");
    let shadow = create(&mut service, Context::Persistent);
    assert_repaired(&work, &mut service, &shadow);
    let volume = service
        .resolve_volume("D:", Path::new("/"))
        .expect("volume");
    service
        .set_max_diff_area(&volume, Some(64 << 10))
        .expect("limit");
    // Rewriting the whole volume needs more diff area than the limit: the engine deletes the
    // shadow inside the write, without the service taking part.
    service
        .write("D:", 0, &vec![0x22u8; IMAGE_BYTES], Path::new("/"))
        .expect("the write succeeds");
    assert!(
        core.engine.shadow(shadow.id).is_none(),
        "the engine deleted the shadow to fit its diff area"
    );
    assert_eq!(overlays(&work), Vec::<String>::new());
    assert_store_clean(&mut service);
}

#[test]
fn coordinator_releasing_a_requester_removes_the_overlays_of_its_volatile_shadows() {
    if !writers_available() {
        return;
    }
    let (work, core, mut service) = setup("coordinator-overlay-release");
    let shadow = create(&mut service, Context::Volatile);
    assert_repaired(&work, &mut service, &shadow);
    let released = service.release_requester().expect("release");
    assert_eq!(
        released.iter().map(|info| info.id).collect::<Vec<_>>(),
        vec![shadow.id]
    );
    assert!(core.engine.shadow(shadow.id).is_none());
    assert_eq!(overlays(&work), Vec::<String>::new());
    let mut other = LocalService::with_core(core, RequesterId(2));
    assert_store_clean(&mut other);
}

/// As DiskShadow, a metadata file that cannot be written does not undo the set: the shadow
/// stays with its overlay, and the outcome says why the file is missing.
#[test]
fn coordinator_a_set_whose_metadata_file_cannot_be_written_is_kept_with_its_overlay() {
    if !writers_available() {
        return;
    }
    let (work, core, mut service) = setup("coordinator-overlay-metadata");
    let volume = service
        .resolve_volume("D:", Path::new("/"))
        .expect("volume");
    let request = CreateRequest {
        volumes: vec![SetVolume {
            volume,
            provider: None,
        }],
        context: Context::Persistent,
        extra_attributes: Attributes(0),
        backup_type: BackupType::Copy,
        writers: WriterSelection::default(),
        aliases: vec![None],
        // The writers repair the shadow during PostSnapshot; the metadata file comes after.
        metadata_path: Some(work.join("no-such-directory/backup.cab")),
        step: false,
        default_metadata: None,
    };
    let outcome = service
        .create(&request, &mut SilentObserver)
        .expect("the set is created all the same");
    let reason = outcome
        .metadata_error
        .as_deref()
        .expect("the outcome says why the metadata file is missing");
    assert!(
        reason.contains("no-such-directory/backup.cab"),
        "the reason names the metadata file: {reason}"
    );
    assert!(outcome.metadata_files.is_empty());
    let shadow = outcome.set.shadows[0].id;
    assert!(core.engine.shadow(shadow).is_some(), "the shadow is kept");
    assert!(
        !overlays(&work).is_empty(),
        "its repaired overlay lives as long as it does"
    );
    service
        .delete_shadows(&DeleteSelector::Set(outcome.set.set_id))
        .expect("delete");
    assert_eq!(overlays(&work), Vec::<String>::new());
    assert_store_clean(&mut service);
}

#[test]
fn coordinator_check_store_reports_an_overlay_without_a_shadow_as_leaked() {
    let work = support::scratch("coordinator-overlay-leak");
    fs::write(work.join("data.img"), vec![0x11u8; IMAGE_BYTES]).expect("image");
    let engine = support::open_engine(&work.join("store"));
    let core = support::service_core(engine.clone());
    let mut service = LocalService::with_core(core, RequesterId(1));
    assert_store_clean(&mut service);
    // As a crash between a shadow's deletion and its overlay's would leave it.
    let stray = work.join("store/recovery/{0b0b0b0b-1111-4222-8333-444444444444}.overlay");
    fs::create_dir_all(stray.parent().expect("parent")).expect("recovery directory");
    fs::write(&stray, vec![0u8; 4108]).expect("stray overlay");
    let check = service.check_store().expect("check");
    assert!(!check.clean);
    assert_eq!(check.leaked_bytes, 4108);
    assert!(
        check
            .problems
            .iter()
            .any(|problem| problem.contains(&stray.display().to_string())
                && problem.contains("leaked")),
        "the leak is named: {:?}",
        check.problems
    );
    assert!(stray.exists(), "check-store changes nothing");
    // A service taking the store over reclaims it.
    drop(service);
    let _service = diskshadow::service::remote::EngineHandler::new(engine);
    assert!(
        !stray.exists(),
        "a leaked overlay is reclaimed when a service starts"
    );
}

#[test]
fn coordinator_a_shadow_deleted_by_a_revert_loses_its_exposure_when_the_revert_returns() {
    let work = support::scratch("coordinator-revert-exposure");
    let mib = 1usize << 20;
    fs::write(work.join("data.img"), vec![0x10u8; 4 * mib]).expect("image");
    let engine = support::open_engine(&work.join("store"));
    let core = support::service_core(engine.clone());
    let mut service = LocalService::with_core(core.clone(), RequesterId(1));
    service
        .map_drive('D', DriveTarget::Volume(work.join("data.img")))
        .expect("map");
    let root = Path::new("/");
    let oldest = create(&mut service, Context::PersistentNoWriters);
    service
        .write("D:", 0, &vec![0x20u8; mib], root)
        .expect("write the first MiB");
    let target = create(&mut service, Context::PersistentNoWriters);
    service
        .write("D:", 2 * mib as u64, &vec![0x30u8; mib], root)
        .expect("write the third MiB");
    let newest = create(&mut service, Context::PersistentNoWriters);
    let socket = work.join("oldest.sock");
    service
        .expose(
            oldest.id,
            &format!("nbd+unix:///s?socket={}", socket.display()),
            &work,
        )
        .expect("expose the oldest shadow");
    assert!(socket.exists());
    // Room for what the shadows hold now (the first MiB for the oldest, the third for the
    // target), not for what reverting to the target adds: the newest shadow must keep the
    // third MiB as it saw it, so the oldest shadow is deleted to make room.
    let volume = service.resolve_volume("D:", root).expect("volume");
    service
        .set_max_diff_area(&volume, Some(2 * mib as u64 + (256 << 10)))
        .expect("limit");
    assert!(core.engine.shadow(oldest.id).is_some());
    service
        .revert(target.id, false, &mut SilentObserver)
        .expect("revert");
    assert!(
        core.engine.shadow(oldest.id).is_none(),
        "the revert's writes deleted the oldest shadow to fit the limit"
    );
    assert!(
        !socket.exists() && !core.has_exposures(),
        "no share is left serving the deleted shadow once the revert returned"
    );
    let live = service
        .read("D:", 0, 4 * mib as u64, root)
        .expect("read live");
    assert!(live[..mib].iter().all(|byte| *byte == 0x20));
    assert!(
        live[mib..].iter().all(|byte| *byte == 0x10),
        "the volume is the target's"
    );
    let kept = service
        .read(&newest.id.to_string(), 2 * mib as u64, mib as u64, root)
        .expect("read the newest shadow");
    assert!(
        kept.iter().all(|byte| *byte == 0x30),
        "the newest shadow is intact"
    );
}
