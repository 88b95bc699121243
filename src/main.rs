//! `diskshadow`: the DiskShadow shell (interactive or `-s SCRIPT`), `--check`, and the
//! `volume`, `drive` and `check-store` commands of `docs/cli.md`. Thin: the work is in the
//! library.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use diskshadow::cli::{
    array::array,
    base_dir,
    check_store::check_store,
    drive::drive,
    fail,
    list::list,
    normalize_arguments,
    service::service,
    volume::volume,
    writer::{add_writer, check_writer, list_writer_files},
    Cli, Subcommands, WriterCommand,
};
use diskshadow::service::{ServiceError, ShadowService};
use diskshadow::session::console::Console;
use diskshadow::session::render::TimeZoneChoice;
use diskshadow::session::{exit_status, render_syntax_error, Mode, Session, SessionConfig};
use diskshadow::ui::{self, terminal::TerminalConsole};
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
