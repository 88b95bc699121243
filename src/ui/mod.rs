//! The terminal: the console that prints (and copies to the `-l` log), progress bars on a tty,
//! the REPL with history and completion, and the banner.

pub mod repl;
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

/// This machine's name, as VSS shows the originating machine.
pub fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
