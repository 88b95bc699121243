//! The service with several requesters at once: listing runs beside a creation, and a second
//! creation during the first gets VSS_E_SNAPSHOT_SET_IN_PROGRESS rather than waiting.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diskshadow::engine::model::{DriveTarget, RequesterId};
use diskshadow::engine::vss::{Attributes, Context, VssCode};
use diskshadow::service::local::LocalService;
use diskshadow::service::{CreateRequest, ShadowService, SilentObserver};

fn request(service: &mut LocalService, context: Context) -> CreateRequest {
    let volume = service
        .resolve_volume("D:", std::path::Path::new("/"))
        .expect("volume");
    CreateRequest::one_volume(volume, context, Attributes(0))
}

#[test]
fn one_creation_at_a_time_while_lists_run_alongside() {
    let work = support::scratch("service-concurrency");
    std::fs::File::create(work.join("data.img"))
        .and_then(|file| file.set_len(8 << 20))
        .expect("image");
    support::apply_directives(
        "#! writer slow.toml Slow_Writer {44444444-aaaa-4bbb-8ccc-555555555555} --component db=D: --on freeze=delay:1500",
        &work,
    );
    let engine = support::open_engine(&work.join("store"));
    let core = support::service_core(engine);
    let mut first = LocalService::with_core(core.clone(), RequesterId(1));
    let mut second = LocalService::with_core(core.clone(), RequesterId(2));
    let mut lister = LocalService::with_core(core, RequesterId(3));
    first
        .map_drive('D', DriveTarget::Volume(work.join("data.img")))
        .expect("map");
    let slow = request(&mut first, Context::Persistent);
    let quick = request(&mut second, Context::PersistentNoWriters);

    let first_done = Arc::new(AtomicBool::new(false));
    let done = first_done.clone();
    let creator = std::thread::spawn(move || {
        let result = first.create(&slow, &mut SilentObserver);
        done.store(true, Ordering::SeqCst);
        result
    });
    // Wait until the slow writer is frozen: the creation holds the set lock by then.
    std::thread::sleep(Duration::from_millis(500));
    let listed = lister.shadows().expect("list runs beside a creation");
    assert!(listed.is_empty());
    assert!(
        !first_done.load(Ordering::SeqCst),
        "listing waited for the creation to finish"
    );
    let refused = second
        .create(&quick, &mut SilentObserver)
        .expect_err("second creation refused");
    assert_eq!(refused.code, Some(VssCode::VSS_E_SNAPSHOT_SET_IN_PROGRESS));

    let created = creator
        .join()
        .expect("creator thread")
        .expect("first creation");
    assert_eq!(created.set.shadows.len(), 1);
    let again = second
        .create(&quick, &mut SilentObserver)
        .expect("after the first, the second goes through");
    assert_eq!(again.set.shadows.len(), 1);
    assert_eq!(lister.shadows().expect("list").len(), 2);
}

#[test]
fn an_exposure_of_a_shadow_the_engine_deleted_to_fit_its_diff_area_is_taken_down() {
    let work = support::scratch("service-dangling");
    std::fs::write(work.join("data.img"), vec![0x10u8; 4 << 20]).expect("image");
    let engine = support::open_engine(&work.join("store"));
    let core = support::service_core(engine.clone());
    let mut service = LocalService::with_core(core.clone(), RequesterId(1));
    service
        .map_drive('D', DriveTarget::Volume(work.join("data.img")))
        .expect("map");
    let create = request(&mut service, Context::PersistentNoWriters);
    let shadow = service
        .create(&create, &mut SilentObserver)
        .expect("create");
    let id = shadow.set.shadows[0].id;
    let socket = work.join("share.sock");
    service
        .expose(
            id,
            &format!("nbd+unix:///s?socket={}", socket.display()),
            &work,
        )
        .expect("expose");
    assert!(socket.exists());
    // A small diff-area limit: rewriting the whole volume makes the engine drop the shadow.
    let volume = service
        .resolve_volume("D:", std::path::Path::new("/"))
        .expect("volume");
    service
        .set_max_diff_area(&volume, Some(1 << 20))
        .expect("limit");
    service
        .write("D:", 0, &vec![0x20u8; 4 << 20], std::path::Path::new("/"))
        .expect("write succeeds");
    assert!(
        engine.shadow(id).is_none(),
        "the engine deleted the shadow to fit the limit"
    );
    assert_eq!(core.reap_dangling_exposures(), vec![id]);
    assert!(
        !socket.exists(),
        "no share is left serving a deleted shadow"
    );
    assert!(!core.has_exposures());
}

#[test]
fn a_requester_reconnects_to_a_new_service_after_its_service_died() {
    use diskshadow::service::remote::RemoteService;
    use diskshadow::service::transport::{connect_or_start, spawn_detached, ServicePaths};
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).expect("store");
    let start_store = store.clone();
    let connect = move || {
        let paths = ServicePaths::for_store(&start_store);
        let start = || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_diskshadow"));
            command.arg("--store").arg(&start_store).args([
                "service",
                "run",
                "--idle-timeout",
                "5",
            ]);
            spawn_detached(command, &paths.log_file)
        };
        connect_or_start(&start_store, &start).map_err(|error| {
            diskshadow::service::ServiceError::new(
                diskshadow::service::ServiceErrorKind::Unavailable,
                error.to_string(),
            )
        })
    };
    let first = connect().expect("service starts");
    let first_pid = first.service_pid();
    let mut service = RemoteService::with_reconnect(first, Box::new(connect));
    assert!(!service.providers().expect("providers").is_empty());

    // SAFETY: kill(2) with a pid the service reported and SIGKILL has no memory effects.
    unsafe { libc::kill(first_pid as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    let broken = service
        .shadows()
        .expect_err("the dead service cannot answer");
    assert_eq!(
        broken.kind,
        diskshadow::service::ServiceErrorKind::Unavailable
    );
    assert!(
        broken.help.as_deref().unwrap_or("").contains("new service"),
        "{broken:?}"
    );
    let listed = service
        .shadows()
        .expect("the next request reconnects to a new service");
    assert!(listed.is_empty());
}
