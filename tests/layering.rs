//! The house's layering, checked: dependencies point one way (README, "Architecture"):
//! `ui` -> `session` -> (`syntax`, `service`) -> `engine`; requesters (`session`, `ui`,
//! `vssadmin`) never name `engine` directly. A `crate::ROOM` path in a file of a
//! room that may not reach ROOM fails this test, naming the file and line.

use std::fs;
use std::path::{Path, PathBuf};

/// Each room and the rooms it must never reach.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "syntax",
        &[
            "engine", "service", "session", "ui", "cli", "connect", "vssadmin",
        ],
    ),
    (
        "engine",
        &[
            "service", "session", "ui", "syntax", "cli", "connect", "vssadmin",
        ],
    ),
    ("service", &["session", "ui", "syntax", "cli", "vssadmin"]),
    // Requesters reach the engine only through the service API (its vocabulary included:
    // `crate::service::{ids, model, vss}`), so the same code runs in-process and remote.
    ("session", &["engine", "ui", "cli", "vssadmin"]),
    ("ui", &["engine", "cli", "vssadmin"]),
    ("vssadmin", &["engine", "ui", "cli", "syntax"]),
    // The one drive-letter parser is a leaf every room may use.
    (
        "drive_letter",
        &[
            "engine", "service", "session", "ui", "syntax", "cli", "connect", "vssadmin",
        ],
    ),
];

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(directory).expect("source directory");
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// The code of a line, without a `//` comment (doc comments name other rooms in prose).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(position) => &line[..position],
        None => line,
    }
}

/// `crate::ROOM` paths on a line, also inside `use crate::{a, b}` groups.
fn rooms_named(code: &str) -> Vec<String> {
    let mut rooms = Vec::new();
    let mut rest = code;
    while let Some(position) = rest.find("crate::") {
        rest = &rest[position + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    rooms.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            rooms.push(name);
        }
    }
    rooms
}

#[test]
fn no_import_runs_back_up() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut files_checked = 0;
    for (room, forbidden) in FORBIDDEN {
        let mut files = Vec::new();
        let directory = source.join(room);
        if directory.is_dir() {
            rust_files(&directory, &mut files);
        }
        let single = source.join(format!("{room}.rs"));
        if single.is_file() {
            files.push(single);
        }
        assert!(!files.is_empty(), "the room src/{room} has no Rust file");
        for file in files {
            files_checked += 1;
            let text = fs::read_to_string(&file).expect("source file");
            for (number, line) in text.lines().enumerate() {
                for named in rooms_named(code_of(line)) {
                    if forbidden.contains(&named.as_str()) {
                        violations.push(format!(
                            "{}:{}: the {room} room reaches crate::{named}",
                            file.strip_prefix(&source).unwrap_or(&file).display(),
                            number + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        files_checked > 50,
        "only {files_checked} files were checked"
    );
    assert!(
        violations.is_empty(),
        "imports that run back up:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_plain_paths() {
    assert_eq!(rooms_named("use crate::engine::ids::ShadowId;"), ["engine"]);
    assert_eq!(
        rooms_named("use crate::{service::Api, ui};"),
        ["service", "ui"]
    );
    assert_eq!(
        rooms_named(code_of("x(); // see crate::ui")),
        Vec::<String>::new()
    );
}
