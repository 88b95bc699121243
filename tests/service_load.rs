//! Load on one store through the real service process: two requesters create and delete
//! shadow copies in a loop while a third lists, for a bounded time. The only error allowed is
//! VSS_E_SNAPSHOT_SET_IN_PROGRESS (one creation at a time, as VSS has it), and no shadow is
//! lost: at the end the store holds exactly the shadows each requester made and kept.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskshadow::engine::ids::ShadowId;
use diskshadow::engine::model::DeleteSelector;
use diskshadow::engine::vss::{Attributes, Context, VssCode};
use diskshadow::service::{CreateRequest, ShadowService, SilentObserver};

const RUN_FOR: Duration = Duration::from_secs(6);

fn create_request(service: &mut dyn ShadowService, image: &Path) -> CreateRequest {
    let volume = service
        .resolve_volume(&image.display().to_string(), Path::new("/"))
        .expect("volume");
    CreateRequest::one_volume(volume, Context::PersistentNoWriters, Attributes(0))
}

/// Creates and deletes until `stop`; returns the shadows it made and kept, and how many
/// creations were turned away because another was in progress.
fn churn(store: PathBuf, image: PathBuf, stop: Arc<AtomicBool>) -> (BTreeSet<ShadowId>, u32, u32) {
    let mut service = diskshadow::connect::connect(&store).expect("connect");
    let request = create_request(service.as_mut(), &image);
    let mut kept = BTreeSet::new();
    let (mut created, mut busy) = (0u32, 0u32);
    while !stop.load(Ordering::SeqCst) {
        match service.create(&request, &mut SilentObserver) {
            Ok(outcome) => {
                created += 1;
                let id = outcome.set.shadows[0].id;
                kept.insert(id);
                // Keep at most three of one's own; delete the oldest kept beyond that.
                if kept.len() > 3 {
                    let oldest = *kept.iter().next().expect("kept");
                    let deleted = service
                        .delete_shadows(&DeleteSelector::Id(oldest))
                        .expect("deleting a shadow of one's own");
                    assert_eq!(deleted.len(), 1);
                    kept.remove(&oldest);
                }
            }
            Err(error) if error.code == Some(VssCode::VSS_E_SNAPSHOT_SET_IN_PROGRESS) => {
                busy += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(error) => panic!("a creation failed with something other than busy: {error}"),
        }
    }
    (kept, created, busy)
}

#[test]
fn two_requesters_creating_and_deleting_and_one_listing_lose_nothing() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let work = scratch.path().to_path_buf();
    let store = work.join("store");
    let images = [work.join("one.img"), work.join("two.img")];
    for image in &images {
        std::fs::File::create(image)
            .and_then(|file| file.set_len(16 << 20))
            .expect("image");
    }
    let mut service = std::process::Command::new(env!("CARGO_BIN_EXE_diskshadow"))
        .arg("--store")
        .arg(&store)
        .args(["service", "run", "--idle-timeout", "30"])
        .spawn()
        .expect("service");
    support::process::wait_for(20, "the service listens", || {
        store.join("service.sock").exists()
    });

    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = images
        .iter()
        .map(|image| {
            let (store, image, stop) = (store.clone(), image.clone(), stop.clone());
            std::thread::spawn(move || churn(store, image, stop))
        })
        .collect();
    let lister = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut service = diskshadow::connect::connect(&store).expect("connect");
            let mut lists = 0u32;
            while !stop.load(Ordering::SeqCst) {
                service.shadows().expect("listing never fails under load");
                lists += 1;
            }
            lists
        })
    };
    let started = Instant::now();
    while started.elapsed() < RUN_FOR {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let mut expected = BTreeSet::new();
    let mut total_created = 0;
    for churner in churners {
        let (kept, created, busy) = churner.join().expect("churner");
        assert!(
            created > 0,
            "a requester never got to create ({busy} times busy)"
        );
        total_created += created;
        expected.extend(kept);
    }
    let lists = lister.join().expect("lister");
    assert!(lists > 0);

    let mut checker = diskshadow::connect::connect(&store).expect("connect");
    let actual: BTreeSet<ShadowId> = checker
        .shadows()
        .expect("list")
        .into_iter()
        .map(|shadow| shadow.id)
        .collect();
    assert_eq!(
        actual, expected,
        "every kept shadow is there, and nothing else"
    );
    let check = checker.check_store().expect("check-store");
    assert!(
        check.clean && check.problems.is_empty(),
        "{:?}",
        check.problems
    );
    drop(checker);
    eprintln!("{total_created} creations, {lists} lists in {RUN_FOR:?}");
    let _ = service.kill();
    let _ = service.wait();
}
