//! Injected time and identity, so that tests and transcripts are deterministic.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use uuid::Uuid;

/// The engine's source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock for tests: starts at a fixed instant and advances one second each time it is read.
#[derive(Debug)]
pub struct SteppingClock {
    next_second: AtomicI64,
}

impl SteppingClock {
    pub fn starting_at(unix_seconds: i64) -> Self {
        Self { next_second: AtomicI64::new(unix_seconds) }
    }
}

impl Default for SteppingClock {
    /// 2025-09-19 11:12:19 UTC, the instant of the reference transcript.
    fn default() -> Self {
        Self::starting_at(1_758_280_339)
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> DateTime<Utc> {
        let second = self.next_second.fetch_add(1, Ordering::SeqCst);
        Utc.timestamp_opt(second, 0).single().unwrap_or_default()
    }
}

/// The engine's source of new GUIDs.
pub trait IdSource: Send + Sync {
    fn new_uuid(&self) -> Uuid;
}

/// Random version-4 GUIDs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn new_uuid(&self) -> Uuid {
        Uuid::new_v4()
    }
}

/// Version-4-shaped GUIDs from a seeded generator: the same seed gives the same sequence.
#[derive(Debug)]
pub struct SeededIds {
    generator: Mutex<SmallRng>,
}

impl SeededIds {
    pub fn new(seed: u64) -> Self {
        Self { generator: Mutex::new(SmallRng::seed_from_u64(seed)) }
    }
}

impl IdSource for SeededIds {
    fn new_uuid(&self) -> Uuid {
        let mut bytes = [0u8; 16];
        match self.generator.lock() {
            Ok(mut generator) => generator.fill_bytes(&mut bytes),
            Err(poisoned) => poisoned.into_inner().fill_bytes(&mut bytes),
        }
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_repeat_for_the_same_seed_and_differ_between_calls() {
        let first = SeededIds::new(7);
        let second = SeededIds::new(7);
        let a = first.new_uuid();
        assert_eq!(a, second.new_uuid());
        assert_ne!(a, first.new_uuid());
    }

    #[test]
    fn stepping_clock_advances_one_second_per_read() {
        let clock = SteppingClock::starting_at(100);
        assert_eq!(clock.now().timestamp(), 100);
        assert_eq!(clock.now().timestamp(), 101);
    }
}
