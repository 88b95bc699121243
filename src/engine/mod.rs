//! The engine: store, catalog, volumes, providers, coordinator, writers, exposure, the metadata cabinet.
//!
//! **Architecture Invariant:** nothing in this module prints, reads the terminal or the process
//! environment, or decides an exit code. It returns data, reports progress through
//! [`progress::Progress`], and takes its clock and ID generator as injected values
//! ([`clock::Clock`], [`clock::IdSource`]) so that tests are deterministic. The lints below hold
//! the first part of it.

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::dbg_macro)]

pub mod array;
pub mod cabinet;
pub mod catalog;
pub mod clock;
pub mod coordinator;
pub mod core;
pub mod deletions;
pub mod device;
pub mod expose;
pub mod folds;
pub mod ids;
pub mod model;
pub mod overlay;
pub mod progress;
pub mod provider;
pub mod rbd;
pub mod store;
pub mod vss;
pub mod writer;

pub use self::core::resync;
pub use self::core::Engine;
