//! `exec`: runs a script or program with the aliases in its environment, its output passed through as it comes.

use std::process::Command as Process;

use super::super::{CommandError, Session};
use crate::syntax::ast::Word;

pub(super) fn exec(
    session: &mut Session<'_>,
    program: &Word,
    arguments: &[Word],
) -> Result<(), CommandError> {
    let mut path = session.resolve_file_path(&program.text)?;
    // A bare name (`sh`, `cmd.exe`) that is no file here is looked up on PATH.
    if !path.is_file() && !program.text.contains(['/', '\\']) {
        if let Some(found) = find_on_path(&program.text, &session.config.environment) {
            path = found;
        }
    }
    if !path.is_file() {
        return Err(CommandError::new(format!(
            "{} does not exist or is not a file",
            path.display()
        ))
        .with_help(
            "give the path of a script or program; relative paths start at the working directory",
        ));
    }
    let runs_directly = is_executable(&path);
    let mut process = if runs_directly {
        Process::new(&path)
    } else {
        let mut shell = Process::new("sh");
        shell.arg(&path);
        shell
    };
    process.args(arguments.iter().map(|word| word.text.as_str()));
    process.current_dir(&session.config.base_dir);
    process.env_clear();
    process.envs(
        session
            .config
            .environment
            .iter()
            .map(|(name, value)| (name, value)),
    );
    let mut skipped = Vec::new();
    for (name, value) in session.variables.aliases() {
        match super::super::expand::exportable_alias(name, value, &session.config.environment) {
            Ok(()) => {
                process.env(name, value);
            }
            Err(reason) => skipped.push(format!(
                "warning: the alias {name} is not passed to {} as an environment variable: {reason}",
                path.display()
            )),
        }
    }
    for line in skipped {
        session.console.err(&line);
    }
    let started = |error: std::io::Error| {
        CommandError::new(format!("{} could not be started: {error}", path.display()))
            .with_help("make the file executable (chmod +x) or give a shell script")
    };
    // One pipe for the child's stdout and stderr: its output passes through as it comes, in
    // the order it wrote it, as DiskShadow's does.
    let (reader, writer) = output_pipe().map_err(started)?;
    process.stdout(writer.try_clone().map_err(started)?);
    process.stderr(writer);
    let mut child = process.spawn().map_err(started)?;
    // The parent's copies of the pipe's write end must close, or the read never ends.
    drop(process);
    let mut lines = std::io::BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match std::io::BufRead::read_until(&mut lines, b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                session.console.out(text.trim_end_matches(['\n', '\r']));
            }
        }
    }
    let status = child.wait().map_err(started)?;
    if !status.success() {
        let first = match status.code() {
            Some(code) => format!("The command script returned failure exit code {code}."),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let signal = status.signal().unwrap_or_default();
                format!("The command script was ended by signal {signal}.")
            }
        };
        session.console.out(&first);
        session.console.out("The command script failed.");
        return Err(CommandError::already_shown());
    }
    Ok(())
}

/// A pipe as (read end, write end).
fn output_pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `pipe2` fills both descriptors on success; each is owned by one File below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptors are new, open and owned by nothing else.
    let files = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    Ok(files)
}

/// `name` in the first directory of the environment's PATH that holds it as a file.
fn find_on_path(name: &str, environment: &[(String, String)]) -> Option<std::path::PathBuf> {
    let path = environment
        .iter()
        .find(|(variable, _)| variable == "PATH")
        .map(|(_, value)| value.as_str())?;
    std::env::split_paths(path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(unix)]
fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
