//! `vssadmin` with the Windows syntax, over the same store as `diskshadow`.

use std::process::ExitCode;

use diskshadow::session::exit_status;
use diskshadow::session::render::TimeZoneChoice;
use diskshadow::{connect, vssadmin};

fn main() -> ExitCode {
    let mut arguments: Vec<String> = std::env::args().skip(1).collect();
    let mut store = None;
    if let Some(index) = arguments.iter().position(|argument| argument == "--store") {
        if index + 1 < arguments.len() {
            store = Some(std::path::PathBuf::from(arguments.remove(index + 1)));
        }
        arguments.remove(index);
    }
    let store = vssadmin::default_store(store);
    let base_dir = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/"));
    let mut service = match connect::connect(&store) {
        Ok(service) => service,
        Err(error) => {
            eprintln!("Error: {error}");
            if let Some(help) = &error.help {
                eprintln!("  help: {help}");
            }
            return ExitCode::from(exit_status::COMMAND_FAILED as u8);
        }
    };
    let stdin = std::io::stdin();
    let mut confirm = stdin.lock();
    let outcome = vssadmin::run(
        service.as_mut(),
        &arguments,
        &base_dir,
        TimeZoneChoice::Local,
        &mut confirm,
    );
    let _ = service.release_requester();
    for line in &outcome.stdout {
        println!("{line}");
    }
    for line in &outcome.stderr {
        eprintln!("{line}");
    }
    ExitCode::from(outcome.status as u8)
}
