//! diskshadow: the Volume Shadow Copy Service model and its DiskShadow shell, for image-file
//! volumes on Linux.
//!
//! Dependencies point one way (see README.md, "Architecture"):
//! `ui` -> `session` -> (`syntax`, `service`) -> `engine`. The engine never prints, never reads
//! the terminal or the environment, and never decides exit codes.

// No `unwrap()` outside tests (STYLE.md): a failure is an error with a reason, never a panic.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod connect;
pub mod drive_letter;
pub mod engine;
pub mod service;
pub mod session;
pub mod syntax;
pub mod ui;
pub mod vssadmin;
