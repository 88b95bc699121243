//! `vssadmin` with the Windows syntax (reference §2) over the same store: `list shadows
//! /for=C:`, `create shadow /for=C:`, `delete shadows /for=C: /oldest`, `resize shadowstorage
//! /for=C: /on=C: /maxsize=20%`, …
//!
//! The command line is read in `parse.rs` (switches, MaxSizeSpec), each command asks the
//! service in `commands.rs`, and the Windows tool's words and layouts are in `render.rs`. The
//! exit statuses are diskshadow's ([`crate::session::exit_status`]): one table for both tools.

mod commands;
mod parse;
mod render;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::service::{ServiceError, ShadowService};
use crate::session::exit_status;
use crate::session::render::TimeZoneChoice;
use commands::*;
pub use parse::parse_max_size;
use parse::Switches;
pub use render::human_size;

pub const BANNER: [&str; 2] = [
    "vssadmin 1.1 - Volume Shadow Copy Service administrative command-line tool",
    "(diskshadow for Linux; the same store as the diskshadow shell)",
];

/// The commands, in the Windows server tool's order and wording.
pub const COMMANDS: [(&str, &str); 12] = [
    (
        "Add ShadowStorage",
        "Add a new volume shadow copy storage association",
    ),
    ("Create Shadow", "Create a new volume shadow copy"),
    ("Delete Shadows", "Delete volume shadow copies"),
    (
        "Delete ShadowStorage",
        "Delete volume shadow copy storage associations",
    ),
    (
        "List Providers",
        "List registered volume shadow copy providers",
    ),
    ("List Shadows", "List existing volume shadow copies"),
    (
        "List ShadowStorage",
        "List volume shadow copy storage associations",
    ),
    ("List Volumes", "List volumes eligible for shadow copies"),
    ("List Writers", "List subscribed volume shadow copy writers"),
    (
        "Resize ShadowStorage",
        "Resize a volume shadow copy storage association",
    ),
    ("Revert Shadow", "Revert a volume to a shadow copy"),
    (
        "Query Reverts",
        "Query the progress of in-progress revert operations.",
    ),
];

/// Each command's syntax, as `vssadmin <command> /?` shows it.
pub const SYNTAX: [(&str, &str); 12] = [
    (
        "add shadowstorage",
        "Add ShadowStorage /For=ForVolumeSpec /On=OnVolumeSpec [/MaxSize=MaxSizeSpec]",
    ),
    (
        "create shadow",
        "Create Shadow /For=ForVolumeSpec [/AutoRetry=MaxRetryMinutes]",
    ),
    (
        "delete shadows",
        "Delete Shadows /For=ForVolumeSpec [/Oldest | /All | /Shadow=ShadowId] [/Quiet]",
    ),
    (
        "delete shadowstorage",
        "Delete ShadowStorage /For=ForVolumeSpec [/On=OnVolumeSpec] [/Quiet]",
    ),
    ("list providers", "List Providers"),
    (
        "list shadows",
        "List Shadows [/For=ForVolumeSpec] [/Shadow=ShadowId|/Set=ShadowSetId]",
    ),
    (
        "list shadowstorage",
        "List ShadowStorage [/For=ForVolumeSpec|/On=OnVolumeSpec]",
    ),
    ("list volumes", "List Volumes"),
    ("list writers", "List Writers"),
    (
        "resize shadowstorage",
        "Resize ShadowStorage /For=ForVolumeSpec /On=OnVolumeSpec [/MaxSize=MaxSizeSpec]",
    ),
    (
        "revert shadow",
        "Revert Shadow /Shadow=ShadowId [/ForceDismount] [/Quiet]",
    ),
    ("query reverts", "Query Reverts [/For=ForVolumeSpec]"),
];

/// What a run printed and its exit status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub status: i32,
}

impl Outcome {
    pub(super) fn out(&mut self, line: impl Into<String>) {
        self.stdout.push(line.into());
    }

    pub(super) fn fail(mut self, status: i32, message: impl Into<String>) -> Self {
        self.stderr.push(message.into());
        self.status = status;
        self
    }
}

/// Runs one vssadmin command line (without the program name).
pub fn run(
    service: &mut dyn ShadowService,
    arguments: &[String],
    base_dir: &Path,
    zone: TimeZoneChoice,
    confirm: &mut dyn BufRead,
) -> Outcome {
    let mut outcome = Outcome::default();
    // `list … --json` (diskshadow's own switch): the listing as JSON, for machine readers,
    // with no banner.
    if arguments.len() >= 2
        && arguments[0].eq_ignore_ascii_case("list")
        && arguments[2..].iter().any(|word| word == "--json")
    {
        return list_json(service, arguments, base_dir, outcome);
    }
    for line in BANNER {
        outcome.out(line);
    }
    outcome.out("");
    if arguments.len() < 2 {
        return usage(
            outcome,
            arguments.is_empty() || arguments.iter().any(|word| word == "/?"),
        );
    }
    let verb = format!(
        "{} {}",
        arguments[0].to_ascii_lowercase(),
        arguments[1].to_ascii_lowercase()
    );
    if arguments[2..].iter().any(|word| word == "/?") {
        if let Some((_, syntax)) = SYNTAX.iter().find(|(name, _)| *name == verb) {
            outcome.out(format!("vssadmin {syntax}"));
            return outcome;
        }
    }
    let switches = match Switches::parse(&arguments[2..]) {
        Ok(switches) => switches,
        Err(message) => return outcome.fail(exit_status::USAGE, message),
    };
    let result = match verb.as_str() {
        "list shadows" => list_shadows(service, &switches, base_dir, zone, &mut outcome),
        "list providers" => list_providers(service, &switches, &mut outcome),
        "list volumes" => list_volumes(service, &switches, &mut outcome),
        "list shadowstorage" => list_storage(service, &switches, base_dir, &mut outcome),
        "create shadow" => create_shadow(service, &switches, base_dir, &mut outcome),
        "delete shadows" => delete_shadows(service, &switches, base_dir, confirm, &mut outcome),
        "add shadowstorage" | "resize shadowstorage" => {
            resize_storage(service, &switches, base_dir, &verb, &mut outcome)
        }
        "delete shadowstorage" => delete_storage(service, &switches, base_dir, &mut outcome),
        "revert shadow" => revert_shadow(service, &switches, &mut outcome),
        "query reverts" => switches
            .check_allowed(&["for"])
            .map_err(Failure::Usage)
            .map(|()| {
                // Reverts run to completion inside the request that started them, so none is ever
                // left in progress for another requester to see.
                outcome.out("No reverts are in progress.");
            }),
        "list writers" => list_writers(service, &switches, &mut outcome),
        _ => {
            return usage(
                outcome.fail(exit_status::USAGE, "Error: Invalid command."),
                true,
            )
        }
    };
    match result {
        Ok(()) => outcome,
        Err(failure) => failed(outcome, failure),
    }
}

/// A failed command's outcome: a usage error exits with `USAGE`, a service error with
/// `COMMAND_FAILED`, its code and help.
pub(super) fn failed(outcome: Outcome, failure: Failure) -> Outcome {
    match failure {
        Failure::Usage(message) => outcome.fail(exit_status::USAGE, message),
        Failure::Service(error) => {
            let mut message = format!("Error: {}", error.message);
            if let Some(code) = error.code {
                message.push_str(&format!(" [{code}]"));
            }
            let mut outcome = outcome.fail(exit_status::COMMAND_FAILED, message);
            if let Some(help) = error.help {
                outcome.stderr.push(format!("Help: {help}"));
            }
            outcome
        }
    }
}

pub(super) enum Failure {
    Usage(String),
    Service(ServiceError),
}

impl From<ServiceError> for Failure {
    fn from(error: ServiceError) -> Self {
        Failure::Service(error)
    }
}

fn usage(mut outcome: Outcome, list: bool) -> Outcome {
    if list {
        outcome.out("---- Commands Supported ----");
        outcome.out("");
        for (name, summary) in COMMANDS {
            outcome.out(format!("{name:<22}- {summary}"));
        }
    }
    if outcome.status == exit_status::SUCCESS && !list {
        outcome.status = exit_status::USAGE;
    }
    outcome
}

/// The store the binaries use: `--store`, then `DISKSHADOW_STORE`, then the per-user default.
pub fn default_store(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("DISKSHADOW_STORE").map(PathBuf::from))
        .unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| std::env::temp_dir().join("diskshadow-data"))
                .join("diskshadow")
        })
}
