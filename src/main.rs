//! `diskshadow`: the DiskShadow shell (interactive or `-s SCRIPT`), `--check`, and the
//! `volume`, `drive` and `check-store` commands of `docs/cli.md`. Thin: the work is in the
//! library.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use diskshadow::cli::{
    normalize_arguments, ArrayCommand, Cli, DriveCommand, ListWhat, ServiceCommand, Subcommands,
    VolumeCommand, WriterAddCommand, WriterCommand,
};
use diskshadow::engine::ids::parse_guid;
use diskshadow::engine::model::DriveTarget;
use diskshadow::service::{ServiceError, ShadowService};
use diskshadow::session::console::Console;
use diskshadow::session::render::TimeZoneChoice;
use diskshadow::session::{exit_status, render_syntax_error, Mode, Session, SessionConfig};
use diskshadow::ui::{self, table::plain_table, terminal::TerminalConsole};
use diskshadow::{connect, syntax, vssadmin};

fn main() -> ExitCode {
    // A file-size limit (ulimit -f) must fail the write that crosses it with EFBIG, reported
    // to its requester, not kill the process (and with it the service and its exposures).
    // SAFETY: setting a signal's disposition to SIG_IGN before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // Which librbd to load (tests point it at a missing file); the service started from here
    // inherits it.
    if let Some(file) = std::env::var_os("DISKSHADOW_LIBRBD") {
        diskshadow::engine::rbd::use_library_files(
            &file.to_string_lossy(),
            diskshadow::engine::rbd::LIBRADOS,
        );
    }
    let arguments = normalize_arguments(std::env::args_os());
    let cli = match Cli::try_parse_from(arguments) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                exit_status::USAGE as u8
            } else {
                0
            });
        }
    };
    let status = run(cli);
    ExitCode::from(status as u8)
}

fn run(cli: Cli) -> i32 {
    if let Some(script) = &cli.check {
        return check(script, lf_chop(&cli));
    }
    let store = vssadmin::default_store(cli.store.clone());
    match cli.command {
        Some(Subcommands::Volume(command)) => {
            with_service(&store, |service| volume(service, command))
        }
        Some(Subcommands::Drive(command)) => {
            with_service(&store, |service| drive(service, command))
        }
        Some(Subcommands::Array(command)) => {
            with_service(&store, |service| array(service, command))
        }
        Some(Subcommands::CheckStore(arguments)) => check_store(&store, arguments.json),
        Some(Subcommands::List { what, json }) => {
            with_service(&store, |service| list(service, what, json))
        }
        Some(Subcommands::Service(command)) => service(&store, command),
        Some(Subcommands::Writer(WriterCommand::Check { writer })) => check_writer(&store, &writer),
        Some(Subcommands::Writer(WriterCommand::Add(command))) => add_writer(&store, command),
        Some(Subcommands::Writer(WriterCommand::List)) => list_writer_files(&store),
        Some(Subcommands::Writer(WriterCommand::Remove { name })) => {
            use diskshadow::engine::writer::registration::remove_registration;
            match remove_registration(&store.join("writers"), &name) {
                Ok(path) => {
                    println!("Removed the writer registration {}.", path.display());
                    exit_status::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    eprintln!("  help: `diskshadow writer list` shows the registrations");
                    exit_status::COMMAND_FAILED
                }
            }
        }
        None => shell(&cli, &store),
    }
}

/// `diskshadow check-store`: read-only (see `connect::check_store`).
fn check_store(store: &Path, json: bool) -> i32 {
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

fn service(store: &Path, command: ServiceCommand) -> i32 {
    match command {
        ServiceCommand::Run { idle_timeout } => match connect::run_service(store, idle_timeout) {
            Ok(()) => exit_status::SUCCESS,
            Err(error) => fail(&error),
        },
        ServiceCommand::Status { json: true } => match connect::service_status(store) {
            Ok(status) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
                if status.is_some() {
                    exit_status::SUCCESS
                } else {
                    exit_status::COMMAND_FAILED
                }
            }
            Err(error) => fail(&error),
        },
        ServiceCommand::Status { json: false } => match connect::service_status(store) {
            Ok(Some(status)) => {
                println!("The service for {} is running.", store.display());
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                );
                exit_status::SUCCESS
            }
            Ok(None) => {
                println!("No service is running for {}.", store.display());
                exit_status::COMMAND_FAILED
            }
            Err(error) => fail(&error),
        },
        ServiceCommand::Stop => match connect::stop_service(store) {
            Ok(true) => {
                println!("The service for {} is stopping.", store.display());
                exit_status::SUCCESS
            }
            Ok(false) => {
                println!("No service is running for {}.", store.display());
                exit_status::SUCCESS
            }
            Err(error) => fail(&error),
        },
    }
}

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
fn add_writer(store: &Path, command: WriterAddCommand) -> i32 {
    use diskshadow::engine::ids::WriterId;
    use diskshadow::engine::writer::registration::{add_registration, Registration};
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
fn list_writer_files(store: &Path) -> i32 {
    use diskshadow::engine::writer::registration::load_registrations;
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
fn check_writer(store: &Path, writer: &str) -> i32 {
    use diskshadow::engine::coordinator::conformance::{check_writer, ConformanceOptions};
    use diskshadow::engine::writer::registration::{load_registrations, Registration};
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

fn fail(error: &ServiceError) -> i32 {
    eprintln!("error: {error}");
    if let Some(help) = &error.help {
        eprintln!("  help: {help}");
    }
    exit_status::COMMAND_FAILED
}

fn with_service(
    store: &Path,
    work: impl FnOnce(&mut dyn ShadowService) -> Result<(), ServiceError>,
) -> i32 {
    let mut service = match connect::connect(store) {
        Ok(service) => service,
        Err(error) => return fail(&error),
    };
    let result = work(service.as_mut());
    let _ = service.release_requester();
    match result {
        Ok(()) => exit_status::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// Whether scripts lose the last character of each LF-ended line, as on Windows: `--lf-chop`
/// or `DISKSHADOW_LF_CHOP=1`.
fn lf_chop(cli: &Cli) -> bool {
    cli.lf_chop || std::env::var_os("DISKSHADOW_LF_CHOP").is_some_and(|value| value == "1")
}

/// A script as text: UTF-8 (a BOM allowed) or UTF-16 with a BOM; with `lf_chop`, as Windows
/// reads an LF-only script (see [`syntax::chop_lf_only_lines`]).
fn decode_script(bytes: &[u8], lf_chop: bool) -> Result<String, String> {
    let source = syntax::decode_script(bytes).map_err(|error| error.to_string())?;
    Ok(if lf_chop {
        syntax::chop_lf_only_lines(&source)
    } else {
        source
    })
}

/// A script file as text (see [`decode_script`]).
fn read_script(path: &Path, lf_chop: bool) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|error| error.to_string())?;
    decode_script(&bytes, lf_chop)
}

fn base_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
}

/// `--check`: every syntax error of a script, exit status 2 if there is any.
fn check(script: &Path, lf_chop: bool) -> i32 {
    let source = match read_script(script, lf_chop) {
        Ok(source) => source,
        Err(error) => {
            eprintln!("error: {} cannot be read: {error}", script.display());
            return exit_status::USAGE;
        }
    };
    let name = script.display().to_string();
    let parsed = syntax::parse_script(&source);
    let terminal = std::io::stderr().is_terminal();
    for diagnostic in parsed.warnings.iter().chain(parsed.errors.iter()) {
        eprintln!(
            "{}",
            render_syntax_error(diagnostic, &name, &source, terminal, 100)
        );
    }
    if parsed.errors.is_empty() {
        println!("{name}: no syntax errors.");
        exit_status::SUCCESS
    } else {
        let count = parsed.errors.len();
        eprintln!(
            "{name}: {count} syntax error{}.",
            if count == 1 { "" } else { "s" }
        );
        exit_status::USAGE
    }
}

fn shell(cli: &Cli, store: &Path) -> i32 {
    let log = match &cli.log {
        Some(path) => match File::create(path) {
            Ok(file) => Some(file),
            Err(error) => {
                eprintln!(
                    "error: the log file {} cannot be created: {error}",
                    path.display()
                );
                return exit_status::USAGE;
            }
        },
        None => None,
    };
    let script = match cli.script.split_first() {
        Some((path, parameters)) => match read_script(Path::new(path), lf_chop(cli)) {
            Ok(source) => Some((path.clone(), source, parameters.to_vec())),
            Err(error) => {
                eprintln!("error: the script {path} cannot be read: {error}");
                return exit_status::USAGE;
            }
        },
        None => None,
    };
    let stdin_script = if script.is_none() && !std::io::stdin().is_terminal() {
        let mut bytes = Vec::new();
        if let Err(error) = std::io::stdin().read_to_end(&mut bytes) {
            eprintln!("error: standard input cannot be read: {error}");
            return exit_status::USAGE;
        }
        match decode_script(&bytes, lf_chop(cli)) {
            Ok(source) => Some(source),
            Err(error) => {
                eprintln!("error: standard input cannot be read: {error}");
                return exit_status::USAGE;
            }
        }
    } else {
        None
    };
    let mut console = TerminalConsole::new(log);
    // From here on Ctrl-C never kills the shell (see ui::interrupt).
    ui::interrupt::install();
    let interactive = script.is_none() && stdin_script.is_none();
    for line in ui::banner(&ui::machine_name()) {
        console.out(&line);
    }
    // The shell leaves two blank lines after the banner, as DiskShadow does; scripts one.
    if interactive {
        console.out("");
    }
    let service = match connect::connect(store) {
        Ok(service) => service,
        // Refused by the store's access control: the shell still starts, and the first
        // command that needs the service fails, as DiskShadow fails at `add volume`.
        Err(error) if error.code == Some(diskshadow::engine::vss::VssCode::E_ACCESSDENIED) => {
            Box::new(diskshadow::service::refused::RefusedService::new(error))
                as Box<dyn ShadowService>
        }
        Err(error) => {
            let mut text = format!("error: {error}");
            if let Some(help) = &error.help {
                text.push_str(&format!("\n  help: {help}"));
            }
            console.err(&text);
            return exit_status::COMMAND_FAILED;
        }
    };
    let config = SessionConfig {
        mode: if interactive {
            Mode::Interactive
        } else {
            Mode::Script
        },
        base_dir: base_dir(),
        environment: std::env::vars().collect(),
        parameters: script
            .as_ref()
            .map(|(_, _, parameters)| parameters.clone())
            .unwrap_or_default(),
        time_zone: TimeZoneChoice::Local,
        width: 100,
        show_latencies: true,
    };
    let mut session = Session::new(service, &mut console, config);
    if let Some((path, source, _)) = script {
        return session.run_script(&path, &source);
    }
    if let Some(source) = stdin_script {
        return session.run_script("<stdin>", &source);
    }
    match ui::repl::run(&mut session, &store.join("history")) {
        Ok(()) => exit_status::SUCCESS,
        Err(error) => {
            eprintln!("error: the terminal failed: {error}");
            exit_status::COMMAND_FAILED
        }
    }
}

const IO_CHUNK: usize = 4 << 20;
/// The granularity at which `volume read` into a file skips zeros (leaves holes).
const SPARSE_BLOCK: usize = 64 << 10;

/// Writes `data` at `at` of a new file, skipping blocks that are all zeros.
fn write_sparse(file: &File, at: u64, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    for (index, block) in data.chunks(SPARSE_BLOCK).enumerate() {
        if block.iter().all(|byte| *byte == 0) {
            continue;
        }
        file.write_all_at(block, at + (index * SPARSE_BLOCK) as u64)?;
    }
    Ok(())
}

/// The sequence of the newest diff-area deletion the store remembers (0: none).
fn newest_deletion(service: &mut dyn ShadowService) -> Result<u64, ServiceError> {
    Ok(service
        .storage()?
        .iter()
        .flat_map(|entry| &entry.recent_deletions)
        .map(|event| event.sequence)
        .max()
        .unwrap_or(0))
}

fn volume(service: &mut dyn ShadowService, command: VolumeCommand) -> Result<(), ServiceError> {
    let base = base_dir();
    match command {
        VolumeCommand::Write {
            volume,
            offset,
            input,
        } => {
            let mut reader: Box<dyn Read> = match &input {
                Some(path) => Box::new(File::open(path).map_err(|error| {
                    ServiceError::io(format!("{} cannot be read: {error}", path.display()))
                })?),
                None => Box::new(std::io::stdin()),
            };
            let total = input
                .as_ref()
                .and_then(|path| std::fs::metadata(path).ok())
                .map(|meta| meta.len());
            let progress = ui::progress_bar("writing", total);
            let deletions_before = newest_deletion(service)?;
            let mut position = offset;
            let mut buffer = vec![0u8; IO_CHUNK];
            let written = (|| loop {
                let filled = read_full(&mut reader, &mut buffer)
                    .map_err(|error| ServiceError::io(format!("reading the input: {error}")))?;
                if filled == 0 {
                    return Ok(());
                }
                service.write(&volume, position, &buffer[..filled], &base)?;
                position += filled as u64;
                if let Some(bar) = &progress {
                    bar.inc(filled as u64);
                }
            })();
            if let Some(bar) = progress {
                bar.finish_and_clear();
            }
            // Shadows deleted to make room are said, whether or not the write then succeeded.
            if let Ok(storage) = service.storage() {
                for event in storage
                    .iter()
                    .flat_map(|entry| &entry.recent_deletions)
                    .filter(|event| event.sequence > deletions_before)
                {
                    eprintln!("Warning: {}", event.describe());
                }
            }
            written
        }
        VolumeCommand::Read {
            target,
            offset,
            length,
            output,
        } => {
            let size = target_size(service, &target, &base)?;
            // A file output is written beside its final name and renamed into place only when
            // every byte was read: a failed read leaves no partial file and keeps an older one.
            let partial = match &output {
                Some(path) => {
                    let directory = match path.parent() {
                        Some(parent) if !parent.as_os_str().is_empty() => parent,
                        _ => Path::new("."),
                    };
                    Some(tempfile::NamedTempFile::new_in(directory).map_err(|error| {
                        ServiceError::io(format!("{} cannot be created: {error}", path.display()))
                    })?)
                }
                None => None,
            };
            let mut stdout = std::io::stdout().lock();
            let mut written_to_file: u64 = 0;
            let mut position = offset;
            let mut remaining = length.unwrap_or(u64::MAX).min(size.saturating_sub(offset));
            // Progress only when the bytes go to a file: stdout may be the terminal itself.
            let progress = if output.is_some() {
                ui::progress_bar("reading", Some(remaining))
            } else {
                None
            };
            while remaining > 0 {
                let want = remaining.min(IO_CHUNK as u64);
                let data = service.read(&target, position, want, &base)?;
                if data.is_empty() {
                    break;
                }
                match &partial {
                    // A file stays sparse: blocks of zeros are skipped (the new file reads
                    // zeros there) and the length is set at the end.
                    Some(file) => write_sparse(file.as_file(), written_to_file, &data),
                    None => stdout.write_all(&data),
                }
                .map_err(|error| ServiceError::io(format!("writing the output: {error}")))?;
                written_to_file += data.len() as u64;
                position += data.len() as u64;
                remaining -= data.len() as u64;
                if let Some(bar) = &progress {
                    bar.inc(data.len() as u64);
                }
                if (data.len() as u64) < want {
                    break;
                }
            }
            if let Some(bar) = progress {
                bar.finish_and_clear();
            }
            match &partial {
                Some(file) => file.as_file().set_len(written_to_file),
                None => stdout.flush(),
            }
            .map_err(|error| ServiceError::io(format!("writing the output: {error}")))?;
            if let (Some(file), Some(path)) = (partial, &output) {
                file.persist(path).map_err(|error| {
                    ServiceError::io(format!(
                        "{} cannot be written: {}",
                        path.display(),
                        error.error
                    ))
                })?;
            }
            Ok(())
        }
        VolumeCommand::Attach { volume, target } => {
            let attachment = service.attach(&volume, &target, &base)?;
            println!(
                "{volume} is attached read-write as {} ({}).",
                attachment.name, attachment.location
            );
            if let Some(warning) = attachment.access_warning("the volume", "read and write") {
                println!("{warning}");
            }
            Ok(())
        }
        VolumeCommand::Detach { target } => {
            let volume = service.detach(&target, &base)?;
            println!("{} is detached.", volume.display_name());
            Ok(())
        }
        VolumeCommand::Register {
            image,
            chunk_size,
            provider,
        } => {
            let volume = service.register_volume(&image, chunk_size, provider, &base)?;
            println!(
                "{} is registered with {}-byte chunks.",
                volume.display_name(),
                volume.chunk_size
            );
            Ok(())
        }
        VolumeCommand::Attachments => {
            let attachments = service.attachments()?;
            if !attachments.is_empty() {
                let rows = attachments.iter().map(|(volume, attachment)| {
                    vec![
                        volume.display_name(),
                        attachment.name.clone(),
                        attachment.location.clone(),
                    ]
                });
                for line in plain_table(&["VOLUME", "NAME", "LOCATION"], rows) {
                    println!("{line}");
                }
            }
            println!(
                "{} volume{} attached.",
                attachments.len(),
                if attachments.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        VolumeCommand::Info { target, json } => {
            if let Some(uuid) = parse_guid(&target) {
                if let Some(shadow) = service
                    .shadows()?
                    .into_iter()
                    .find(|shadow| shadow.id.0 == uuid)
                {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&shadow).unwrap_or_default()
                        );
                    } else {
                        println!("Shadow copy {}", shadow.id);
                        println!("  Shadow copy set: {}", shadow.set_id);
                        println!("  Original volume: {}", shadow.volume.display_name());
                        println!("  Size: {} bytes", shadow.volume.size);
                        println!("  Attributes: {}", shadow.attributes.diskshadow_words());
                    }
                    return Ok(());
                }
            }
            let info = service.resolve_volume(&target, &base)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
            } else {
                let shadows = service
                    .shadows()?
                    .into_iter()
                    .filter(|shadow| shadow.volume.id == info.id)
                    .count();
                println!("Volume {}", info.display_name());
                println!("  Image file: {}", info.path.display());
                println!("  Size: {} bytes", info.size);
                println!("  Chunk size: {} bytes", info.chunk_size);
                println!("  Shadow copies: {shadows}");
            }
            Ok(())
        }
    }
}

/// The size of a volume or shadow copy, for progress and for reads "to the end".
fn target_size(
    service: &mut dyn ShadowService,
    target: &str,
    base: &Path,
) -> Result<u64, ServiceError> {
    if let Some(uuid) = parse_guid(target) {
        if let Some(shadow) = service
            .shadows()?
            .into_iter()
            .find(|shadow| shadow.id.0 == uuid)
        {
            return Ok(shadow.volume.size);
        }
    }
    Ok(service.resolve_volume(target, base)?.size)
}

fn read_full(reader: &mut dyn Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// No aliases outside a session: shadows are listed by ID alone.
struct NoAliases;

impl diskshadow::session::render::AliasLookup for NoAliases {
    fn alias_for(&self, _value: &str) -> Option<String> {
        None
    }
}

/// `diskshadow list shadows|writers|providers [--json]`.
fn list(service: &mut dyn ShadowService, what: ListWhat, json: bool) -> Result<(), ServiceError> {
    use diskshadow::session::render;
    let to_json = |value: serde_json::Result<String>| {
        value.map_err(|error| {
            ServiceError::io(format!("the listing cannot be written as JSON: {error}"))
        })
    };
    let lines = match (what, json) {
        (ListWhat::Shadows, true) => {
            vec![to_json(serde_json::to_string_pretty(&service.shadows()?))?]
        }
        (ListWhat::Shadows, false) => render::shadow_listing(
            "Querying all shadow copies on the computer ...",
            &service.shadows()?,
            &NoAliases,
            TimeZoneChoice::Local,
        ),
        (ListWhat::Writers, true) => {
            vec![to_json(serde_json::to_string_pretty(
                &service.writer_statuses()?,
            ))?]
        }
        (ListWhat::Writers, false) => {
            service.list_writers(diskshadow::service::api::WriterListing::Status)?
        }
        (ListWhat::Providers, true) => {
            vec![to_json(serde_json::to_string_pretty(
                &service.providers()?,
            ))?]
        }
        (ListWhat::Providers, false) => render::provider_listing(&service.providers()?),
    };
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

fn drive(service: &mut dyn ShadowService, command: DriveCommand) -> Result<(), ServiceError> {
    let letter_of = |text: &str| -> Result<char, ServiceError> {
        diskshadow::engine::model::parse_drive_letter(text).ok_or_else(|| {
            ServiceError::invalid(format!("`{text}` is not a drive letter"))
                .with_help("write a letter and a colon, for example C:")
        })
    };
    match command {
        DriveCommand::List { json: true } => {
            let entries: Vec<serde_json::Value> = service
                .drive_map()?
                .into_iter()
                .map(|(letter, target)| {
                    let (kind, path) = match target {
                        DriveTarget::Volume(path) => ("volume", path),
                        DriveTarget::Directory(path) => ("directory", path),
                    };
                    serde_json::json!({"letter": letter.to_string(), "kind": kind, "path": path})
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&entries).unwrap_or_default()
            );
            Ok(())
        }
        DriveCommand::List { json: false } => {
            let drives = service.drive_map()?;
            if drives.is_empty() {
                println!("No drive letters are mapped.");
                return Ok(());
            }
            let rows = drives.into_iter().map(|(letter, target)| {
                let (kind, path) = match target {
                    DriveTarget::Volume(path) => ("volume", path),
                    DriveTarget::Directory(path) => ("directory", path),
                };
                vec![
                    format!("{letter}:"),
                    kind.to_string(),
                    path.display().to_string(),
                ]
            });
            for line in plain_table(&["DRIVE", "KIND", "PATH"], rows) {
                println!("{line}");
            }
            Ok(())
        }
        DriveCommand::Map { letter, target } => {
            let letter = letter_of(&letter)?;
            // An RBD volume (`rbd:POOL/IMAGE`) is checked when the letter is used.
            if diskshadow::engine::rbd::file::is_volume_path(&target) {
                return service.map_drive(letter, DriveTarget::Volume(target));
            }
            let path = if target.is_absolute() {
                target
            } else {
                base_dir().join(target)
            };
            let target = if path.is_dir() {
                DriveTarget::Directory(path)
            } else if path.is_file() {
                DriveTarget::Volume(path)
            } else {
                return Err(
                    ServiceError::invalid(format!("{} does not exist", path.display()))
                        .with_help("map a letter to an existing image file or directory"),
                );
            };
            service.map_drive(letter, target)
        }
        DriveCommand::Unmap { letter } => service.unmap_drive(letter_of(&letter)?),
    }
}

fn array(service: &mut dyn ShadowService, command: ArrayCommand) -> Result<(), ServiceError> {
    match command {
        ArrayCommand::Attach {
            dir,
            name,
            conf,
            client_id,
        } => {
            if let Some(pool) = dir.to_str().and_then(|text| text.strip_prefix("rbd:")) {
                let Some(conf) = conf else {
                    return Err(ServiceError::invalid(
                        "a Ceph pool needs its cluster's configuration: array attach rbd:POOL --conf FILE",
                    ));
                };
                let conf = if conf.is_absolute() {
                    conf
                } else {
                    base_dir().join(conf)
                };
                let info =
                    service.attach_rbd_pool(pool, &conf, client_id.as_deref(), name.as_deref())?;
                println!(
                    "Attached to the Ceph pool {pool} as the array {} ({{{}}}); cluster {}.",
                    info.name,
                    info.id.hyphenated(),
                    conf.display()
                );
                return Ok(());
            }
            if conf.is_some() || client_id.is_some() {
                return Err(ServiceError::invalid(
                    "--conf and --id are for a Ceph pool (rbd:POOL), not an array directory",
                ));
            }
            let dir = if dir.is_absolute() {
                dir
            } else {
                base_dir().join(dir)
            };
            let info = service.attach_array(&dir, name.as_deref())?;
            let count = |number: usize, one: &str, many: &str| {
                format!("{number} {}", if number == 1 { one } else { many })
            };
            println!(
                "Attached to the array {} ({{{}}}) at {}; {}, {}.",
                info.name,
                info.id.hyphenated(),
                info.path.display(),
                count(info.hosts.len(), "host", "hosts"),
                count(info.shadow_luns, "shadow LUN", "shadow LUNs")
            );
            Ok(())
        }
        ArrayCommand::Detach { name } => {
            service.detach_array(&name)?;
            println!("Detached from the array {name}.");
            Ok(())
        }
        ArrayCommand::List { json: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&service.arrays()?).unwrap_or_default()
            );
            Ok(())
        }
        ArrayCommand::List { json: false } => {
            let arrays = service.arrays()?;
            for info in &arrays {
                println!(
                    "{}  {{{}}}  {}",
                    info.name,
                    info.id.hyphenated(),
                    info.path.display()
                );
                if let Some(rbd) = &info.rbd {
                    println!("    kind: rbd (Ceph pool {})", rbd.pool);
                    println!("    conf: {}", rbd.conf.display());
                    if let Some(client_id) = &rbd.client_id {
                        println!("    client: client.{client_id}");
                    }
                    if let Some(problem) = &info.problem {
                        println!("    unreachable: {problem}");
                    }
                    continue;
                }
                match &info.problem {
                    Some(problem) => println!("    unreadable: {problem}"),
                    None => {
                        println!("    shadow LUNs: {}", info.shadow_luns);
                        for host in &info.hosts {
                            println!("    host: {host}");
                        }
                    }
                }
            }
            println!("Number of arrays listed: {}", arrays.len());
            Ok(())
        }
    }
}
