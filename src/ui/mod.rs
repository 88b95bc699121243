//! The terminal: the console that prints (and copies to the `-l` log), progress bars on a tty,
//! the REPL with history and completion, the banner, and diskshadow's own plain tables.

pub mod interrupt;
pub mod repl;
pub mod table;
pub mod terminal;

use chrono::Local;

/// DiskShadow's banner layout: name and version, a second line, the computer and local time,
/// then a blank line.
pub fn banner(machine_name: &str) -> Vec<String> {
    vec![
        format!("diskshadow version {}", env!("CARGO_PKG_VERSION")),
        "DiskShadow for Linux: shadow copies of image-file volumes".to_string(),
        format!(
            "On computer:  {machine_name},  {}",
            Local::now().format("%-m/%-d/%Y %-I:%M:%S %p")
        ),
        String::new(),
    ]
}

/// A byte progress bar on standard error when it is a terminal, else nothing.
pub fn progress_bar(what: &str, total: Option<u64>) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(total) => indicatif::ProgressBar::new(total),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
    } else {
        "{msg} {bytes} ({bytes_per_sec})"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    Some(bar)
}

/// This machine's name, as VSS shows the originating machine: the engine's one host-name
/// function, under the name the binaries call it by.
pub use crate::service::host_name as machine_name;
