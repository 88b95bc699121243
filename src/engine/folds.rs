//! The background fold: redirect-on-write volumes whose oldest shadow was deleted have
//! redirected chunks that no shadow needs apart any more; a worker thread folds them back into
//! the image a small step at a time, taking the volume's lock for each step only, so live I/O
//! and shadow reads go on in between (the protocol is in `store/FORMAT.md`, "The fold").
//!
//! The worker holds the engine weakly (and this queue strongly). It takes `gate` for each step and upgrades its weak
//! reference only under it; the engine's last handle takes `gate` before it decides it is the
//! last, so it never mistakes the worker's short-lived reference for another handle, and it
//! stops the worker before its final flush.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use crate::engine::ids::VolumeId;

/// Chunks folded per step by default: 256 chunks of 64 KiB are 16 MiB, a few milliseconds
/// of I/O during which the volume waits.
pub const DEFAULT_FOLD_STEP_CHUNKS: usize = 256;

/// What one step of the worker did.
pub enum StepOutcome {
    /// The volume has more to fold.
    More,
    /// The volume's fold is done (or the volume is gone).
    Done,
    /// The step failed; the volume waits for the next explicit wait (which reports the error)
    /// or the next open of the store.
    Failed,
}

#[derive(Default)]
struct Queue {
    pending: BTreeSet<VolumeId>,
    stopped: bool,
}

pub struct Folds {
    /// False: no worker; folds run when a caller waits for them (deterministic tests).
    background: bool,
    pub step_chunks: usize,
    queue: Mutex<Queue>,
    wake: Condvar,
    gate: Mutex<()>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Folds {
    pub fn new(background: bool, step_chunks: usize) -> Folds {
        Folds {
            background,
            step_chunks: step_chunks.max(1),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            gate: Mutex::new(()),
            worker: Mutex::new(None),
        }
    }

    /// Held while a handle decides whether it is the engine's last (see the module comment).
    pub fn gate(&self) -> MutexGuard<'_, ()> {
        lock(&self.gate)
    }

    /// Queues `volume` for the worker, starting it on first use. Returns false when no worker
    /// runs (background folds are off, or the thread could not start): the fold then waits
    /// for the next explicit wait or the engine's close.
    pub fn request<S: Send + Sync + 'static>(
        self: &Arc<Self>,
        volume: VolumeId,
        owner: &Arc<S>,
        step: fn(&S, VolumeId) -> StepOutcome,
    ) -> bool {
        if !self.background {
            return false;
        }
        {
            let mut queue = lock(&self.queue);
            if queue.stopped {
                return false;
            }
            queue.pending.insert(volume);
        }
        self.wake.notify_one();
        let mut worker = lock(&self.worker);
        if worker.is_some() {
            return true;
        }
        let (folds, weak) = (self.clone(), Arc::downgrade(owner));
        let spawned = std::thread::Builder::new()
            .name("diskshadow-fold".to_string())
            .spawn(move || run(&folds, &weak, step));
        match spawned {
            Ok(handle) => {
                *worker = Some(handle);
                true
            }
            Err(_) => {
                lock(&self.queue).pending.clear();
                false
            }
        }
    }

    /// Stops the worker; the caller holds `gate` (it is the engine's last handle), so the
    /// worker holds no reference: it sees `stopped` at its next step and ends.
    pub fn stop_locked(&self) {
        lock(&self.queue).stopped = true;
        self.wake.notify_all();
    }

    /// Waits for a stopped worker to end (without holding `gate`).
    pub fn join(&self) {
        let handle = lock(&self.worker).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// The worker: one step for the first queued volume at a time, the volume taken off the queue
/// first and put back while it has more (so a request made during a step is never lost). It
/// holds the engine strongly only inside `gate`.
fn run<S>(folds: &Folds, weak: &Weak<S>, step: fn(&S, VolumeId) -> StepOutcome) {
    loop {
        let volume = {
            let mut queue = lock(&folds.queue);
            loop {
                if queue.stopped {
                    return;
                }
                if let Some(volume) = queue.pending.pop_first() {
                    break volume;
                }
                queue = match folds.wake.wait(queue) {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
            }
        };
        let gate = folds.gate();
        if lock(&folds.queue).stopped {
            return;
        }
        let Some(owner) = weak.upgrade() else {
            return;
        };
        let outcome = step(&owner, volume);
        drop(owner);
        if matches!(outcome, StepOutcome::More) {
            lock(&folds.queue).pending.insert(volume);
        }
        drop(gate);
        std::thread::yield_now();
    }
}
