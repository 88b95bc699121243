//! Transcript tests: every `.dsh` under `tests/transcripts/<area>/` (each line echoed as
//! `DISKSHADOW> line`, failures do not stop) and every shipped example in `scripts/` (script
//! mode, as users run them) runs in-process with a stepping clock, seeded GUIDs and a fixed
//! width; its transcript is an insta snapshot under `snapshots/`.

mod support;

use std::path::{Path, PathBuf};

use diskshadow::session::Mode;

fn dsh_files(directory: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("{} cannot be read: {error}", directory.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "dsh"))
        .collect();
    files.sort();
    files
}

fn check_area(area: &str, directory: &Path, mode: Mode) {
    let files = dsh_files(directory);
    assert!(
        !files.is_empty(),
        "no .dsh files in {}: the glob matched nothing",
        directory.display()
    );
    for file in files {
        let stem = file
            .file_stem()
            .map(|stem| stem.to_string_lossy().to_string())
            .unwrap_or_default();
        let transcript = support::transcript(&file, mode, &format!("{area}-{stem}"));
        insta::with_settings!({
            snapshot_path => "../snapshots/transcripts",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("{area}__{stem}"), transcript);
        });
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shell_transcripts() {
    check_area(
        "shell",
        &root().join("tests/transcripts/shell"),
        Mode::Transcript,
    );
}

#[test]
fn engine_transcripts() {
    check_area(
        "engine",
        &root().join("tests/transcripts/engine"),
        Mode::Transcript,
    );
}

#[test]
fn writer_transcripts() {
    check_area(
        "writers",
        &root().join("tests/transcripts/writers"),
        Mode::Transcript,
    );
}

#[test]
fn shipped_scripts_run_as_users_run_them() {
    check_area("scripts", &root().join("scripts"), Mode::Script);
}
