//! `diskshadow writer add|list|check`: the registrations of the in-box writers, written and
//! read here, and the conformance check (no service needed).

use std::path::Path;

use crate::engine::ids::parse_guid;
use crate::session::exit_status;

use super::{base_dir, WriterAddCommand};

/// The class IDs of the in-box writers: stable across versions, as VSS writer IDs are.
const SQLITE_WRITER_ID: &str = "{7d1c5a9e-51e7-4c0a-9d3b-000000000001}";
const POSTGRESQL_WRITER_ID: &str = "{7d1c5a9e-51e7-4c0a-9d3b-000000000002}";
const MYSQL_WRITER_ID: &str = "{7d1c5a9e-51e7-4c0a-9d3b-000000000003}";
const FILESYSTEM_WRITER_ID: &str = "{7d1c5a9e-51e7-4c0a-9d3b-000000000004}";

/// An absolute path for a registration: the service runs elsewhere.
fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| base_dir().join(path))
        .display()
        .to_string()
}

/// `diskshadow writer add KIND ...`: writes the registration of an in-box writer.
pub fn add_writer(store: &Path, command: WriterAddCommand) -> i32 {
    use crate::engine::ids::WriterId;
    use crate::engine::writer::registration::{add_registration, Registration};
    // The writer program is installed beside this one; else it is looked up in PATH.
    let program = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .map(|directory| directory.join("diskshadow-writer"))
        })
        .filter(|path| path.is_file())
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "diskshadow-writer".to_string());
    let (file_stem, name, id, mut arguments) = match command {
        WriterAddCommand::Sqlite { databases } => {
            let missing: Vec<String> = databases
                .iter()
                .filter(|database| !database.is_file())
                .map(|database| database.display().to_string())
                .collect();
            if !missing.is_empty() {
                eprintln!("error: no database file {}", missing.join(", "));
                eprintln!("  help: give existing SQLite database files with --db");
                return exit_status::COMMAND_FAILED;
            }
            let mut arguments = vec!["sqlite".to_string()];
            for database in &databases {
                arguments.push("--db".to_string());
                arguments.push(absolute(database));
            }
            ("sqlite", "SQLite Writer", SQLITE_WRITER_ID, arguments)
        }
        WriterAddCommand::Postgresql {
            pgdata,
            socket_dir,
            port,
        } => {
            if !pgdata.join("PG_VERSION").is_file() {
                eprintln!(
                    "error: {} is not a PostgreSQL data directory (it has no PG_VERSION)",
                    pgdata.display()
                );
                eprintln!("  help: give the cluster's data directory (SHOW data_directory)");
                return exit_status::COMMAND_FAILED;
            }
            let mut arguments = vec![
                "postgresql".to_string(),
                "--pgdata".to_string(),
                absolute(&pgdata),
                "--socket-dir".to_string(),
                absolute(&socket_dir),
            ];
            if let Some(port) = port {
                arguments.push("--port".to_string());
                arguments.push(port.to_string());
            }
            (
                "postgresql",
                "PostgreSQL Writer",
                POSTGRESQL_WRITER_ID,
                arguments,
            )
        }
        WriterAddCommand::Mysql { socket, user } => {
            let mut arguments = vec![
                "mysql".to_string(),
                "--socket".to_string(),
                absolute(&socket),
            ];
            if let Some(user) = user {
                arguments.push("--user".to_string());
                arguments.push(user);
            }
            ("mysql", "MySQL Writer", MYSQL_WRITER_ID, arguments)
        }
        WriterAddCommand::Filesystem { devices } => {
            // The store lets the writer find NBD devices connected to attached volumes.
            let mut arguments = vec![
                "filesystem".to_string(),
                "--store".to_string(),
                absolute(store),
            ];
            for device in devices {
                if !device.contains('=') {
                    eprintln!("error: --device {device}: expected DEVICE=VOLUME");
                    eprintln!("  help: for example --device /dev/nbd0=data.img");
                    return exit_status::USAGE;
                }
                arguments.push("--device".to_string());
                arguments.push(device);
            }
            (
                "filesystem",
                "File System Writer",
                FILESYSTEM_WRITER_ID,
                arguments,
            )
        }
    };
    let Some(uuid) = parse_guid(id) else {
        eprintln!("error: the writer ID {id} is not a GUID");
        return exit_status::COMMAND_FAILED;
    };
    let mut command = vec![program];
    command.append(&mut arguments);
    let registration = Registration::new(name, WriterId(uuid), command);
    match add_registration(&store.join("writers"), file_stem, &registration) {
        Ok(path) => {
            println!("Registered the {name} in {}.", path.display());
            exit_status::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!("  help: `diskshadow writer remove \"{name}\"` first to register it anew");
            exit_status::COMMAND_FAILED
        }
    }
}

/// `diskshadow writer list`: the registration files, read here (no service needed).
pub fn list_writer_files(store: &Path) -> i32 {
    use crate::engine::writer::registration::load_registrations;
    let set = load_registrations(&store.join("writers"));
    for registration in &set.registrations {
        println!("{}  {}", registration.writer_id, registration.name);
        if let Some(source) = &registration.source {
            println!("    file: {}", source.display());
        }
        println!("    command: {}", registration.command.join(" "));
    }
    for problem in &set.problems {
        println!("Invalid: {problem}");
    }
    println!(
        "{} writer registration{}.",
        set.registrations.len(),
        if set.registrations.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    exit_status::SUCCESS
}

/// `diskshadow writer check`: the conformance check, run here (it starts its own copy of the
/// writer and needs nothing of the service).
pub fn check_writer(store: &Path, writer: &str) -> i32 {
    use crate::engine::coordinator::conformance::{check_writer, ConformanceOptions};
    use crate::engine::writer::registration::{load_registrations, Registration};
    let path = Path::new(writer);
    let registration = if path.is_file() {
        match Registration::from_file(path) {
            Ok(registration) => registration,
            Err(error) => {
                eprintln!(
                    "error: {} is not a valid writer registration: {error}",
                    path.display()
                );
                return exit_status::COMMAND_FAILED;
            }
        }
    } else {
        let set = load_registrations(&store.join("writers"));
        match set.registrations.into_iter().find(|registration| {
            registration.name.eq_ignore_ascii_case(writer)
                || registration
                    .writer_id
                    .to_string()
                    .eq_ignore_ascii_case(writer)
        }) {
            Some(registration) => registration,
            None => {
                eprintln!(
                    "error: no writer named {writer} is registered in {}",
                    store.join("writers").display()
                );
                eprintln!("  help: give the registration file's path, or register it in the store's writers/ directory");
                return exit_status::COMMAND_FAILED;
            }
        }
    };
    println!(
        "Checking writer \"{}\" {} against the writer protocol ...",
        registration.name, registration.writer_id
    );
    let report = check_writer(&registration, &ConformanceOptions::default());
    for scenario in &report.scenarios {
        let events: Vec<String> = report
            .events
            .iter()
            .filter(|(name, _, _)| name == scenario)
            .map(|(_, event, ok)| format!("{event}{}", if *ok { "" } else { " (vetoed)" }))
            .collect();
        println!("  {scenario}: {}", events.join(", "));
    }
    for finding in &report.findings {
        println!("  violation: {finding}");
    }
    if report.is_conformant() {
        println!("The writer follows the protocol.");
        exit_status::SUCCESS
    } else {
        println!(
            "{} protocol violation{} found.",
            report.findings.len(),
            if report.findings.len() == 1 { "" } else { "s" }
        );
        exit_status::COMMAND_FAILED
    }
}
