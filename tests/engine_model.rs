//! Model-based test: random writes, creates (volatile and persistent, one or several volumes),
//! deletes (every selector), reverts and restarts over three small sparse volumes with
//! different chunk sizes, against a reference model that keeps a full copy of every shadow.
//! After every step every byte of every shadow and live volume is compared, and `check` must be
//! clean.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;

use diskshadow::engine::clock::{SeededIds, SteppingClock};
use diskshadow::engine::core::EngineOptions;
use diskshadow::engine::ids::{ProviderId, ShadowId, ShadowSetId, VolumeId};
use diskshadow::engine::model::{CreateSpec, CreateVolume, DeleteSelector, RequesterId};
use diskshadow::engine::progress::NoProgress;
use diskshadow::engine::provider::{FULL_COPY_PROVIDER_ID, ROW_PROVIDER_ID};
use diskshadow::engine::store::RealBackend;
use diskshadow::engine::vss::providers::SYSTEM_PROVIDER_ID;
use diskshadow::engine::vss::{Attributes, Context};
use diskshadow::engine::Engine;

/// (size in bytes, chunk size): sizes that are not chunk multiples test the short last chunk.
const VOLUMES: [(usize, u32); 3] = [(40_000, 4096), (70_000, 8192), (24_576, 4096)];

#[derive(Debug, Clone)]
enum Operation {
    Write {
        volume: usize,
        offset_fraction: f64,
        length: usize,
        seed: u8,
    },
    Create {
        volume_mask: u8,
        context: usize,
    },
    Delete {
        selector: usize,
        pick: usize,
    },
    Revert {
        pick: usize,
    },
    Restart,
    Flush,
    /// Makes the full copies still pending (plex shadows without reflink are served from
    /// their point in time until then).
    CompleteCopies,
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (0..3usize, 0.0..1.0f64, 1..20_000usize, any::<u8>())
            .prop_map(|(volume, offset_fraction, length, seed)| Operation::Write { volume, offset_fraction, length, seed }),
        3 => (1..8u8, 0..5usize).prop_map(|(volume_mask, context)| Operation::Create { volume_mask, context }),
        2 => (0..6usize, any::<usize>()).prop_map(|(selector, pick)| Operation::Delete { selector, pick }),
        1 => any::<usize>().prop_map(|pick| Operation::Revert { pick }),
        1 => Just(Operation::Restart),
        1 => Just(Operation::Flush),
        1 => Just(Operation::CompleteCopies),
    ]
}

const CONTEXTS: [Context; 5] = [
    Context::Volatile,
    Context::VolatileNoWriters,
    Context::Persistent,
    Context::PersistentNoWriters,
    Context::ClientAccessible,
];

struct ModelShadow {
    volume: usize,
    set_id: ShadowSetId,
    sequence: u64,
    persistent: bool,
    content: Vec<u8>,
}

struct Harness {
    _dir: tempfile::TempDir,
    store: PathBuf,
    engine: Option<Engine>,
    volumes: Vec<VolumeId>,
    live: Vec<Vec<u8>>,
    shadows: BTreeMap<ShadowId, ModelShadow>,
    restarts: u64,
    /// The provider every shadow must come from.
    provider: ProviderId,
}

fn options(seed: u64) -> EngineOptions {
    let mut options = EngineOptions::new(
        Arc::new(SteppingClock::default()),
        Arc::new(SeededIds::new(seed)),
        "HOST",
        4096,
        Arc::new(RealBackend),
    );
    options.write_back_bytes = 2 * 8192;
    options
}

impl Harness {
    /// Volumes registered with `provider` (`None`: the system provider, copy-on-write).
    fn new(provider: Option<ProviderId>) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let engine = Engine::open(&store, options(0)).expect("open");
        let mut volumes = Vec::new();
        let mut live = Vec::new();
        for (index, (size, chunk_size)) in VOLUMES.iter().enumerate() {
            let path = dir.path().join(format!("volume{index}.img"));
            std::fs::File::create(&path)
                .and_then(|file| file.set_len(*size as u64))
                .expect("image");
            volumes.push(
                engine
                    .register_volume_with_provider(&path, Some(*chunk_size), provider)
                    .expect("register")
                    .id,
            );
            live.push(vec![0u8; *size]);
        }
        Harness {
            _dir: dir,
            store,
            engine: Some(engine),
            volumes,
            live,
            shadows: BTreeMap::new(),
            restarts: 0,
            provider: provider.unwrap_or(ProviderId(SYSTEM_PROVIDER_ID)),
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    fn apply(&mut self, operation: &Operation) {
        match operation {
            Operation::Write {
                volume,
                offset_fraction,
                length,
                seed,
            } => {
                let size = self.live[*volume].len();
                let offset = ((size as f64) * offset_fraction) as usize;
                let length = (*length).min(size - offset);
                let data: Vec<u8> = (0..length)
                    .map(|index| seed.wrapping_add((index / 1000) as u8) | 1)
                    .collect();
                let device = self
                    .engine()
                    .open_volume(self.volumes[*volume])
                    .expect("open volume");
                device.write_at(offset as u64, &data).expect("write");
                self.live[*volume][offset..offset + length].copy_from_slice(&data);
            }
            Operation::Create {
                volume_mask,
                context,
            } => {
                let context = CONTEXTS[*context];
                let chosen: Vec<usize> = (0..3)
                    .filter(|index| volume_mask & (1 << index) != 0)
                    .collect();
                let spec = CreateSpec {
                    volumes: chosen
                        .iter()
                        .map(|index| CreateVolume {
                            volume: self.volumes[*index],
                            provider: None,
                        })
                        .collect(),
                    context,
                    extra_attributes: Attributes::default(),
                    requester: RequesterId(1),
                    set_id: None,
                };
                let created = self.engine().create_shadow_set(&spec).expect("create");
                for (shadow, index) in created.shadows.iter().zip(&chosen) {
                    assert_eq!(shadow.volume.id, self.volumes[*index]);
                    assert_eq!(shadow.provider_id, self.provider);
                    self.shadows.insert(
                        shadow.id,
                        ModelShadow {
                            volume: *index,
                            set_id: created.set_id,
                            sequence: shadow.sequence,
                            persistent: context.is_persistent(),
                            content: self.live[*index].clone(),
                        },
                    );
                }
            }
            Operation::Delete { selector, pick } => {
                let ids: Vec<ShadowId> = self.shadows.keys().copied().collect();
                let volume_index = pick % 3;
                let volume = self.volumes[volume_index];
                let (selector, expected): (DeleteSelector, Vec<ShadowId>) = match selector {
                    0 => (DeleteSelector::All, ids.clone()),
                    1 => (
                        DeleteSelector::Volume(volume),
                        self.ids_where(|shadow| shadow.volume == volume_index),
                    ),
                    2 => {
                        let oldest = self
                            .shadows
                            .iter()
                            .filter(|(_, shadow)| shadow.volume == volume_index)
                            .min_by_key(|(_, shadow)| shadow.sequence)
                            .map(|(id, _)| *id);
                        match oldest {
                            Some(id) => (DeleteSelector::Oldest(volume), vec![id]),
                            None => return,
                        }
                    }
                    3 if !ids.is_empty() => {
                        let set_id = self.shadows[&ids[pick % ids.len()]].set_id;
                        (
                            DeleteSelector::Set(set_id),
                            self.ids_where(|shadow| shadow.set_id == set_id),
                        )
                    }
                    4 if !ids.is_empty() => {
                        let id = ids[pick % ids.len()];
                        (DeleteSelector::Id(id), vec![id])
                    }
                    5 => (
                        DeleteSelector::OwnedBy(RequesterId(1)),
                        self.ids_where(|shadow| !shadow.persistent),
                    ),
                    _ => return,
                };
                let mut deleted: Vec<ShadowId> = self
                    .engine()
                    .delete_shadows(&selector)
                    .expect("delete")
                    .iter()
                    .map(|shadow| shadow.id)
                    .collect();
                let mut expected = expected;
                deleted.sort();
                expected.sort();
                assert_eq!(deleted, expected, "{selector:?}");
                for id in deleted {
                    self.shadows.remove(&id);
                }
            }
            Operation::Revert { pick } => {
                let persistent = self.ids_where(|shadow| shadow.persistent);
                if persistent.is_empty() {
                    return;
                }
                let id = persistent[pick % persistent.len()];
                self.engine().revert(id, &NoProgress).expect("revert");
                let shadow = &self.shadows[&id];
                self.live[shadow.volume] = shadow.content.clone();
            }
            Operation::Restart => {
                drop(self.engine.take());
                self.restarts += 1;
                self.engine =
                    Some(Engine::open(&self.store, options(self.restarts)).expect("reopen"));
                self.shadows.retain(|_, shadow| shadow.persistent);
            }
            Operation::Flush => self.engine().flush().expect("flush"),
            Operation::CompleteCopies => {
                let pending = self.engine().pending_full_copies();
                if self.provider != ProviderId(FULL_COPY_PROVIDER_ID) {
                    assert!(pending.is_empty(), "only full copies are ever pending");
                }
                let completed = self
                    .engine()
                    .complete_full_copies(None, &NoProgress)
                    .expect("complete the full copies");
                assert_eq!(completed, pending);
            }
        }
    }

    fn ids_where(&self, predicate: impl Fn(&ModelShadow) -> bool) -> Vec<ShadowId> {
        self.shadows
            .iter()
            .filter(|(_, shadow)| predicate(shadow))
            .map(|(id, _)| *id)
            .collect()
    }

    fn verify(&self, step: usize) {
        let engine = self.engine();
        for (index, volume) in self.volumes.iter().enumerate() {
            let device = engine.open_volume(*volume).expect("open volume");
            let mut content = vec![0u8; self.live[index].len()];
            device.read_at(0, &mut content).expect("read volume");
            assert!(
                content == self.live[index],
                "step {step}: live volume {index} differs from the model"
            );
        }
        let listed = engine.shadows();
        assert_eq!(
            listed.len(),
            self.shadows.len(),
            "step {step}: shadow count"
        );
        for shadow in &listed {
            let model = self
                .shadows
                .get(&shadow.id)
                .unwrap_or_else(|| panic!("step {step}: unknown shadow {}", shadow.id));
            let device = engine.open_shadow(shadow.id).expect("open shadow");
            let mut content = vec![0u8; model.content.len()];
            device.read_at(0, &mut content).expect("read shadow");
            assert!(
                content == model.content,
                "step {step}: shadow {} (volume {}) differs from its point in time",
                shadow.id,
                model.volume
            );
            // Unaligned reads agree with the aligned one.
            let mut piece = vec![0u8; 5000];
            let offset = 3001u64.min(model.content.len() as u64 - 5000);
            device.read_at(offset, &mut piece).expect("read piece");
            assert!(
                piece[..] == model.content[offset as usize..offset as usize + 5000],
                "step {step}: unaligned read"
            );
        }
        let report = engine.check();
        assert!(report.is_clean(), "step {step}: {report}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_matches_a_model_that_keeps_full_copies(operations in prop::collection::vec(operation(), 1..40)) {
        let mut harness = Harness::new(None);
        for (step, operation) in operations.iter().enumerate() {
            harness.apply(operation);
            harness.verify(step);
        }
        harness.apply(&Operation::Restart);
        harness.verify(operations.len());
    }

    /// The same operations on volumes registered for the redirect-on-write provider: every
    /// shadow is redirect-on-write, deletes of the oldest fold back into the image, and
    /// restarts fold what vanished volatile shadows left.
    #[test]
    fn providers_redirect_on_write_matches_the_model(operations in prop::collection::vec(operation(), 1..40)) {
        let mut harness = Harness::new(Some(ProviderId(ROW_PROVIDER_ID)));
        for (step, operation) in operations.iter().enumerate() {
            harness.apply(operation);
            harness.verify(step);
        }
        harness.apply(&Operation::Restart);
        harness.verify(operations.len());
    }

    /// The same operations on volumes registered for the full-copy provider: every shadow is
    /// a full copy, served from its point in time until its copy is made (reverts, deletes and
    /// restarts meet pending copies too), then from the copy.
    #[test]
    fn providers_full_copy_matches_the_model(operations in prop::collection::vec(operation(), 1..40)) {
        let mut harness = Harness::new(Some(ProviderId(FULL_COPY_PROVIDER_ID)));
        for (step, operation) in operations.iter().enumerate() {
            harness.apply(operation);
            harness.verify(step);
        }
        harness.apply(&Operation::CompleteCopies);
        harness.verify(operations.len());
        harness.apply(&Operation::Restart);
        harness.verify(operations.len() + 1);
    }
}
