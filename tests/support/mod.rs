//! Shared by the integration tests: a deterministic in-process session over a fresh store.
#![allow(dead_code)]

pub mod cabs;
pub mod ceph;
pub mod inbox;
pub mod nbd;
pub mod process;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::FixedOffset;
use diskshadow::engine::clock::{SeededIds, SteppingClock};
use diskshadow::engine::core::EngineOptions;
use diskshadow::engine::model::RequesterId;
use diskshadow::engine::writer::host::HostOptions;
use diskshadow::engine::Engine;
use diskshadow::service::local::{LocalService, ServiceCore};
use diskshadow::service::ShadowService;
use diskshadow::session::console::TranscriptConsole;
use diskshadow::session::render::TimeZoneChoice;
use diskshadow::session::{Mode, Session, SessionConfig};

/// What transcripts show for the test root: [`stable_paths`] puts it in place of the root.
pub const SHOWN_TEST_ROOT: &str = "/tmp/diskshadow-tests";

/// The directory under which every test of this checkout makes its scratch directories:
/// `/tmp/ds-tests-` and seven hex digits of a hash of the checkout's path, so two checkouts
/// testing at once do not collide. It is exactly as long as [`SHOWN_TEST_ROOT`], so that
/// putting one in place of the other keeps every column of a transcript where it was.
pub fn test_root() -> PathBuf {
    // FNV-1a: stable across Rust versions and runs, unlike the std hasher.
    let hash = env!("CARGO_MANIFEST_DIR")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let root = format!("/tmp/ds-tests-{:07x}", hash & 0x0fff_ffff);
    debug_assert_eq!(root.len(), SHOWN_TEST_ROOT.len());
    PathBuf::from(root)
}

/// `text` with this checkout's test root shown as [`SHOWN_TEST_ROOT`], for snapshots.
pub fn stable_paths(text: &str) -> String {
    text.replace(&*test_root().to_string_lossy(), SHOWN_TEST_ROOT)
}

/// A scratch directory at a fixed path per test (under [`test_root`]), so that paths in
/// transcripts are stable once [`stable_paths`] shows the root.
pub fn scratch(name: &str) -> PathBuf {
    let directory = test_root().join(name);
    let _ = fs::remove_dir_all(&directory);
    fs::create_dir_all(&directory).expect("scratch directory");
    directory
}

/// The engine as transcripts see it: seeded IDs, a stepping clock, a fixed machine name.
pub fn open_engine(store: &Path) -> Arc<Engine> {
    let mut options = EngineOptions::system();
    options.machine_name = "TESTHOST".to_string();
    options.clock = Arc::new(SteppingClock::default());
    options.ids = Arc::new(SeededIds::new(1));
    Arc::new(Engine::open(store, options).expect("engine opens"))
}

/// The service core as transcripts see it: seeded set IDs, short writer timeouts.
pub fn service_core(engine: Arc<Engine>) -> Arc<ServiceCore> {
    let options = HostOptions {
        event_timeout: std::time::Duration::from_secs(5),
        shutdown_grace: std::time::Duration::from_millis(500),
        ids: Arc::new(SeededIds::new(3)),
        ..HostOptions::default()
    };
    ServiceCore::with_ids(engine, Arc::new(SeededIds::new(2)), options)
}

pub fn parse_size(text: &str) -> u64 {
    let text = text.trim();
    let (number, multiplier) = match text.chars().last() {
        Some('K') => (&text[..text.len() - 1], 1u64 << 10),
        Some('M') => (&text[..text.len() - 1], 1 << 20),
        Some('G') => (&text[..text.len() - 1], 1 << 30),
        Some('T') => (&text[..text.len() - 1], 1 << 40),
        _ => (text, 1),
    };
    number.parse::<u64>().expect("size") * multiplier
}

/// What `#!` directive lines set up before a transcript runs.
#[derive(Debug, Default)]
pub struct Setup {
    pub mode: Option<Mode>,
    pub parameters: Vec<String>,
    pub maps: Vec<(String, String)>,
    pub environment: Vec<(String, String)>,
    /// Answers to step-mode questions, in order.
    pub answers: Vec<String>,
    /// Arrays the store attaches to before the transcript runs: `(directory, name)`.
    pub arrays: Vec<(String, Option<String>)>,
}

/// Applies the directives of `source` inside `work`:
/// `#! image NAME SIZE`, `#! fill NAME OFFSET LENGTH BYTE`, `#! dir NAME [OCTAL MODE]`,
/// `#! script NAME: COMMAND` (an executable sh script), `#! map X: NAME`, `#! param VALUE`,
/// `#! array DIR [NAME]` (the store attaches to the storage array at DIR),
/// `#! env NAME=VALUE`, `#! mode script|transcript|interactive` (interactive: the harness shows
/// each line after the prompt, as the terminal does).
pub fn apply_directives(source: &str, work: &Path) -> Setup {
    let mut setup = Setup::default();
    for line in source.lines() {
        let Some(directive) = line.trim().strip_prefix("#!") else {
            continue;
        };
        let words: Vec<&str> = directive.split_whitespace().collect();
        match words.as_slice() {
            ["image", name, size] => {
                let file = fs::File::create(work.join(name)).expect("image");
                file.set_len(parse_size(size)).expect("image size");
            }
            ["fill", name, offset, length, byte] => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .open(work.join(name))
                    .expect("image to fill");
                let byte = u8::from_str_radix(byte.trim_start_matches("0x"), 16).expect("hex byte");
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(parse_size(offset)))
                    .expect("seek");
                file.write_all(&vec![byte; parse_size(length) as usize])
                    .expect("fill");
            }
            ["dir", name] => fs::create_dir_all(work.join(name)).expect("dir"),
            ["dir", name, mode] => {
                use std::os::unix::fs::PermissionsExt;
                let directory = work.join(name);
                fs::create_dir_all(&directory).expect("dir");
                let mode = u32::from_str_radix(mode, 8).expect("octal mode");
                fs::set_permissions(&directory, fs::Permissions::from_mode(mode)).expect("chmod");
            }
            ["map", letter, name] => setup.maps.push((letter.to_string(), name.to_string())),
            ["array", dir] => setup.arrays.push((dir.to_string(), None)),
            ["array", dir, name] => setup.arrays.push((dir.to_string(), Some(name.to_string()))),
            ["param", value] => setup.parameters.push(value.to_string()),
            ["env", assignment] => {
                let (name, value) = assignment.split_once('=').expect("NAME=VALUE");
                setup
                    .environment
                    .push((name.to_string(), value.to_string()));
            }
            ["write", ..] | ["read", ..] | ["events", ..] => {}
            ["answer", rest @ ..] => setup.answers.push(rest.join(" ")),
            ["writer", file, name, id, arguments @ ..] => {
                // A registration for the shipped test writer; `_` in NAME stands for a space,
                // `$WORK` in arguments for the scratch directory.
                let name = name.replace('_', " ");
                let directory = work.join("store/writers");
                fs::create_dir_all(&directory).expect("writers directory");
                let mut command = vec![
                    env!("CARGO_BIN_EXE_diskshadow-test-writer").to_string(),
                    "--name".to_string(),
                    name.clone(),
                    "--id".to_string(),
                    id.to_string(),
                ];
                command.extend(
                    arguments
                        .iter()
                        .map(|argument| argument.replace("$WORK", &work.display().to_string())),
                );
                let registration = format!(
                    "name = {:?}\nid = {:?}\ncommand = [{}]\nfreeze_timeout = \"5s\"\n",
                    name,
                    id,
                    command
                        .iter()
                        .map(|part| format!("{part:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                fs::write(directory.join(file), registration).expect("registration");
            }
            ["mode", "script"] => setup.mode = Some(Mode::Script),
            ["mode", "transcript"] => setup.mode = Some(Mode::Transcript),
            ["mode", "interactive"] => setup.mode = Some(Mode::Interactive),
            [name, ..] if name.ends_with(':') && directive.contains(':') => {}
            ["script", ..] => {
                let rest = directive.trim_start().trim_start_matches("script").trim();
                let (name, command) = rest.split_once(':').expect("script NAME: COMMAND");
                let path = work.join(name.trim());
                fs::write(&path, format!("#!/bin/sh\n{}\n", command.trim())).expect("script");
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
            other => panic!("unknown directive {other:?}"),
        }
    }
    setup
}

/// Runs a `.dsh` file in-process and returns its transcript.
pub fn transcript(path: &Path, default_mode: Mode, scratch_name: &str) -> String {
    let source = fs::read_to_string(path).expect("transcript source");
    let work = scratch(scratch_name);
    let setup = apply_directives(&source, &work);
    let engine = open_engine(&work.join("store"));
    let mut service = LocalService::with_core(service_core(engine), RequesterId(1));
    for (dir, name) in &setup.arrays {
        service
            .attach_array(&work.join(dir), name.as_deref())
            .expect("array attach");
    }
    for (letter, name) in &setup.maps {
        let letter = letter.chars().next().expect("letter").to_ascii_uppercase();
        let target = work.join(name);
        let target = if target.is_dir() {
            diskshadow::engine::model::DriveTarget::Directory(target)
        } else {
            diskshadow::engine::model::DriveTarget::Volume(target)
        };
        service.map_drive(letter, target).expect("drive map");
    }
    let mut environment = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        ),
        ("WORK".to_string(), work.display().to_string()),
    ];
    environment.extend(setup.environment.clone());
    let mode = setup.mode.unwrap_or(default_mode);
    let config = SessionConfig {
        mode,
        base_dir: work.clone(),
        environment,
        parameters: setup.parameters.clone(),
        time_zone: TimeZoneChoice::Fixed(FixedOffset::east_opt(0).expect("UTC")),
        width: 100,
        show_latencies: false,
    };
    let mut console = TranscriptConsole {
        answers: setup.answers.iter().cloned().collect(),
        ..TranscriptConsole::default()
    };
    let status = {
        let mut session = Session::new(Box::new(service), &mut console, config);
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_default();
        match mode {
            Mode::Script => session.run_script(&name, &source),
            _ => {
                let mut status = 0;
                for line in source.lines() {
                    if let Some(directive) = line.trim_start().strip_prefix("#!") {
                        in_place_directive(&mut session, directive, &mut status, &work);
                        continue;
                    }
                    if mode == Mode::Interactive {
                        session.print(&format!("DISKSHADOW> {line}"));
                    }
                    match session.execute_line(line) {
                        diskshadow::session::LineOutcome::Exit => break,
                        diskshadow::session::LineOutcome::Failed => status = 1,
                        diskshadow::session::LineOutcome::Continue => {}
                    }
                }
                session.finish();
                status
            }
        }
    };
    stable_paths(&format!("{}[exit status: {status}]\n", console.text))
}

/// `#! write VOLUME OFFSET LENGTH BYTE` and `#! read TARGET OFFSET LENGTH`, run where they
/// stand, through the service (so writes pass the provider). Their results are part of the
/// transcript.
fn in_place_directive(session: &mut Session<'_>, directive: &str, status: &mut i32, work: &Path) {
    let words: Vec<&str> = directive.split_whitespace().collect();
    let expand = |session: &Session<'_>, word: &str| -> String {
        session
            .variables()
            .expand(word)
            .map(|(text, _)| text)
            .unwrap_or_else(|_| word.to_string())
    };
    let base = work.to_path_buf();
    match words.as_slice() {
        ["write", target, offset, length, byte] => {
            let target = expand(session, target);
            let byte = u8::from_str_radix(byte, 16).expect("hex byte");
            let data = vec![byte; parse_size(length) as usize];
            let result = session
                .service()
                .write(&target, parse_size(offset), &data, &base);
            let line = match result {
                Ok(()) => format!("#! wrote {length} of 0x{byte:02x} at {offset} of {target}"),
                Err(error) => {
                    *status = 1;
                    format!("#! write failed: {error}")
                }
            };
            session_out(session, &line);
        }
        ["read", target, offset, length] => {
            let target_text = expand(session, target);
            let result =
                session
                    .service()
                    .read(&target_text, parse_size(offset), parse_size(length), &base);
            let line = match result {
                Ok(data) => format!("#! read {target} at {offset}: {}", describe(&data)),
                Err(error) => {
                    *status = 1;
                    format!("#! read {target} failed: {error}")
                }
            };
            session_out(session, &line);
        }
        ["events", file] => {
            // The events a test writer recorded, in order, one line.
            let recorded = fs::read_to_string(work.join(file)).unwrap_or_default();
            let events: Vec<String> = recorded
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter_map(|request| {
                    request
                        .get("event")
                        .and_then(|event| event.as_str())
                        .map(str::to_string)
                })
                .collect();
            session_out(session, &format!("#! {file}: {}", events.join(", ")));
        }
        _ => {}
    }
}

fn session_out(session: &mut Session<'_>, line: &str) {
    session.print(line);
}

/// `4096 bytes, all 0xaa` or `4096 bytes: 0xaa x1024, 0x00 x3072` (runs, at most four).
pub fn describe(data: &[u8]) -> String {
    let mut runs: Vec<(u8, usize)> = Vec::new();
    for &byte in data {
        match runs.last_mut() {
            Some((last, count)) if *last == byte => *count += 1,
            _ => runs.push((byte, 1)),
        }
    }
    match runs.as_slice() {
        [] => "0 bytes".to_string(),
        [(byte, _)] => format!("{} bytes, all 0x{byte:02x}", data.len()),
        runs if runs.len() <= 4 => format!(
            "{} bytes: {}",
            data.len(),
            runs.iter()
                .map(|(byte, count)| format!("0x{byte:02x} x{count}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ if data.len() <= 16 => format!(
            "{} bytes: {}",
            data.len(),
            data.iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        _ => format!(
            "{} bytes in {} runs, crc32 {:08x}",
            data.len(),
            runs.len(),
            crc32fast::hash(data)
        ),
    }
}

/// Says that a test cannot run here because a system tool or facility is missing. Where CI
/// promises every tool (`DISKSHADOW_REQUIRE_TOOLS=1`, set by `.ci/run`), a missing tool is a
/// failure, not a silent pass.
pub fn skip(reason: impl std::fmt::Display) {
    if std::env::var_os("DISKSHADOW_REQUIRE_TOOLS").is_some_and(|value| value == "1") {
        panic!("required tool missing (DISKSHADOW_REQUIRE_TOOLS=1): {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// Whether the system tool `name` is on `PATH`; when it is not, says so (see [`skip`]) with
/// the package that brings it.
pub fn tool(name: &str, package: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    if !found {
        skip(format!(
            "{name} is not installed (apt-get install {package})"
        ));
    }
    found
}
