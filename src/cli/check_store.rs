//! `diskshadow check-store`: the read-only consistency check of a store.

use std::path::Path;

use crate::connect;
use crate::session::exit_status;

use super::fail;

/// `diskshadow check-store`: read-only (see `connect::check_store`).
pub fn check_store(store: &Path, json: bool) -> i32 {
    let check = match connect::check_store(store) {
        Ok(check) => check,
        Err(error) => return fail(&error),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&check).unwrap_or_default()
        );
    } else {
        println!(
            "Checked {} volumes, {} shadow copies, {} preserved chunks.",
            check.volumes_checked, check.shadows_checked, check.preserved_chunks
        );
        println!("Leaked diff-area space: {} bytes.", check.leaked_bytes);
        for problem in &check.problems {
            println!("Problem: {problem}");
        }
        for suspect in &check.suspect_shadows {
            println!("Suspect shadow copy {}: {}", suspect.shadow, suspect.reason);
        }
        for orphan in &check.orphaned_diff_areas {
            println!(
                "Orphaned diff area: {} (no registered volume)",
                orphan.display()
            );
        }
        let verdict = if check.clean {
            "The store is consistent."
        } else {
            "The store has problems."
        };
        println!("{verdict}");
    }
    if check.clean {
        exit_status::SUCCESS
    } else {
        exit_status::COMMAND_FAILED
    }
}
