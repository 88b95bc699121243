//! One entry per command: its name (the key of its syntax, help and examples in
//! [`crate::syntax::commands::COMMANDS`]) and its handler. `help` output comes from the same
//! table, and a test keeps the two in step.

use std::process::Command as Process;

use super::render::{self, AliasLookup};
use super::state::{PendingVolume, Phase, ResyncPair, SessionState};
use super::{CommandError, LineOutcome, Session};
use crate::engine::ids::{parse_guid, ProviderId, ShadowId, ShadowSetId};
use crate::engine::model::{DeleteSelector, DriveTarget, ExposureKind, ShadowInfo};
use crate::engine::vss::{limits, BackupType, Context, VssCode};
use crate::service::{CreateRequest, ServiceObserver, SetVolume, WriterListing, WriterSelection};
use crate::syntax::ast::{
    AddCommand, Command, ContextSetting, DeleteShadows, ListCommand, MapCommand, SetCommand,
    ShadowSelector, Word, WriterAction, WriterListDetail,
};
use crate::syntax::commands;

type Handler = fn(&mut Session<'_>, &Command) -> Result<LineOutcome, CommandError>;

/// The registry: command name -> handler.
pub static HANDLERS: &[(&str, Handler)] = &[
    ("set", set),
    ("simulate restore", simulate_restore),
    ("load metadata", load_metadata),
    ("writer", writer),
    ("add", add),
    ("create", create),
    ("exec", exec),
    ("begin", begin),
    ("end", end),
    ("reset", reset),
    ("list", list),
    ("delete shadows", delete_shadows),
    ("import", import),
    ("mask", mask),
    ("expose", expose),
    ("unexpose", unexpose),
    ("break", break_set),
    ("revert", revert),
    ("resync", resync),
    ("exit", exit),
    ("help", help),
    ("map", map),
    ("unmap", map),
    ("attach", attach),
    ("detach", detach),
];

pub(super) fn dispatch(
    session: &mut Session<'_>,
    command: &Command,
) -> Result<LineOutcome, CommandError> {
    let name = command.name();
    match HANDLERS.iter().find(|(entry, _)| *entry == name) {
        Some((_, handler)) => handler(session, command),
        None => Err(
            CommandError::new(format!("the command `{name}` has no handler"))
                .with_code(VssCode::VSS_E_UNEXPECTED),
        ),
    }
}

const DONE: Result<LineOutcome, CommandError> = Ok(LineOutcome::Continue);

fn mismatch(command: &Command) -> CommandError {
    CommandError::new(format!(
        "internal: `{}` reached the wrong handler",
        command.name()
    ))
    .with_code(VssCode::VSS_E_UNEXPECTED)
}

/// Alias look-up for the `%alias%` column of shadow blocks: a user alias wins over the
/// default `VSS_SHADOW_n`.
struct SessionAliases<'s>(&'s super::expand::Variables);

impl AliasLookup for SessionAliases<'_> {
    fn alias_for(&self, value: &str) -> Option<String> {
        let mut found: Option<&str> = None;
        for (name, alias_value) in self.0.aliases() {
            if alias_value.eq_ignore_ascii_case(value) {
                let is_default = name.to_ascii_uppercase().starts_with("VSS_SHADOW_")
                    && !name.eq_ignore_ascii_case("VSS_SHADOW_SET");
                match found {
                    Some(_) if is_default => {}
                    _ => found = Some(name),
                }
            }
        }
        found.map(str::to_string)
    }
}

/// Renders service reports through the session's console: verbose lines (what DiskShadow's
/// verbose mode prints) only when verbose, the writer trace only with `set trace on`.
struct ConsoleObserver<'c> {
    console: &'c mut dyn super::console::Console,
    verbose: bool,
    trace: bool,
    show_latencies: bool,
    step_hold: bool,
}

/// The observer for a command's service call. It takes the session's parts, not the session, so
/// the service can be borrowed beside it.
fn console_observer<'c>(
    console: &'c mut dyn super::console::Console,
    state: &SessionState,
    config: &super::SessionConfig,
) -> ConsoleObserver<'c> {
    ConsoleObserver {
        console,
        verbose: state.verbose,
        trace: state.trace,
        show_latencies: config.show_latencies,
        step_hold: state.step_hold,
    }
}

impl ServiceObserver for ConsoleObserver<'_> {
    fn verbose_line(&mut self, line: &str) {
        if self.verbose {
            self.console.out(line);
        }
    }
    fn trace_line(&mut self, line: &str) {
        if self.trace {
            self.console.out(line);
        }
    }
    fn line(&mut self, line: &str) {
        self.console.out(line);
    }
    fn progress_begin(&mut self, what: &str, total: u64) {
        self.console.progress_begin(what, total);
    }
    fn progress_advance(&mut self, units: u64) {
        self.console.progress_advance(units);
    }
    fn progress_end(&mut self) {
        self.console.progress_end();
    }
    fn cancellable(&mut self, _operation: crate::service::OperationId) {
        self.console.set_stoppable(true);
    }
    fn stop_requested(&mut self) -> bool {
        self.console.stop_requested()
    }
    fn writer_reply(
        &mut self,
        writer: &str,
        event: &str,
        latency: std::time::Duration,
        outcome: Result<(), String>,
    ) {
        if !self.trace {
            return;
        }
        let shown = match outcome {
            Ok(()) => "ok".to_string(),
            Err(error) => format!("failed: {error}"),
        };
        let timing = if self.show_latencies {
            format!(" in {} ms", latency.as_millis())
        } else {
            String::new()
        };
        self.console.out(&format!(
            "Writer \"{writer}\" answered {event}{timing}: {shown}"
        ));
    }
    fn step(
        &mut self,
        event: &str,
        writers: &[String],
        freeze_left: Option<std::time::Duration>,
    ) -> bool {
        self.console
            .out(&format!("Step: the next writer event is {event}."));
        // Frozen writers wait on this prompt: say how long they may, and abort at their freeze
        // deadline unless `set step on hold` asked to keep them frozen past it.
        let deadline = freeze_left.map(|left| std::time::Instant::now() + left);
        if let Some(left) = freeze_left {
            let then = if self.step_hold {
                "they stay frozen past it (set step on hold)"
            } else {
                "the set is aborted then unless you answer (set step on hold keeps them frozen)"
            };
            self.console.out(&format!(
                "Warning: the writers are frozen; their freeze deadline passes in {} s, and {then}.",
                left.as_secs_f64().ceil() as u64
            ));
        }
        let mut warned_past_deadline = false;
        loop {
            let prompt = "Continue, show writer status, or abort? [c/s/a] ";
            let answer = match deadline {
                Some(deadline) if !warned_past_deadline => {
                    match self.console.ask_until(prompt, deadline) {
                        Ok(answer) => answer,
                        Err(super::console::AskTimedOut) if self.step_hold => {
                            warned_past_deadline = true;
                            self.console.out(
                                "Warning: the freeze deadline has passed; the writers are held frozen (set step on hold).",
                            );
                            continue;
                        }
                        Err(super::console::AskTimedOut) => {
                            self.console.out(
                                "The freeze deadline passed with the writers frozen: aborting the shadow copy set.",
                            );
                            return false;
                        }
                    }
                }
                _ => self.console.ask(prompt),
            };
            match answer
                .as_deref()
                .map(|text| text.trim().to_ascii_lowercase())
            {
                Some(text) if text.is_empty() || text == "c" || text == "continue" => return true,
                Some(text) if text == "s" || text == "status" => {
                    for line in writers {
                        self.console.out(line);
                    }
                }
                Some(text) if text == "a" || text == "abort" => return false,
                Some(other) => self.console.out(&format!(
                    "`{other}` is not an answer: c continues, s shows the writers, a aborts."
                )),
                // No one to answer: abort rather than leave writers waiting.
                None => return false,
            }
        }
    }
}

impl Session<'_> {
    /// A shadow named by `{GUID}` (after expansion) or, as DiskShadow tolerates, by an alias
    /// name written without percent signs.
    fn shadow_argument(
        &self,
        word: &Word,
        command: &'static str,
    ) -> Result<ShadowId, CommandError> {
        if let Some(uuid) = parse_guid(&word.text) {
            return Ok(ShadowId(uuid));
        }
        if let Some(uuid) = self.variables.alias(&word.text).and_then(parse_guid) {
            return Ok(ShadowId(uuid));
        }
        Err(CommandError::usage(
            command,
            format!("`{}` is neither a shadow copy ID nor an alias", word.text),
        )
        .with_help("give the ID as {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx} or an alias as %name%; `list shadows all` shows the IDs"))
    }

    fn set_argument(
        &self,
        word: &Word,
        command: &'static str,
    ) -> Result<ShadowSetId, CommandError> {
        self.shadow_argument(word, command)
            .map(|id| ShadowSetId(id.0))
    }
}

fn set(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Set(setting) = command else {
        return Err(mismatch(command));
    };
    let state = &mut session.state;
    match setting {
        SetCommand::Show => {
            let lines = settings_listing(state);
            session.out_lines(lines);
        }
        SetCommand::Context(context) => {
            state.context = match context {
                ContextSetting::ClientAccessible => Context::ClientAccessible,
                ContextSetting::Persistent { no_writers: false } => Context::Persistent,
                ContextSetting::Persistent { no_writers: true } => Context::PersistentNoWriters,
                ContextSetting::Volatile { no_writers: false } => Context::Volatile,
                ContextSetting::Volatile { no_writers: true } => Context::VolatileNoWriters,
            };
        }
        SetCommand::Option(options) => state.options = *options,
        SetCommand::Verbose(on) => state.verbose = *on,
        SetCommand::Trace(on) => state.trace = *on,
        SetCommand::Step(setting) => {
            state.step = setting.on;
            state.step_hold = setting.on && setting.hold;
        }
        SetCommand::Metadata(path) => {
            let resolved = session.resolve_file_path(&path.text)?;
            // As DiskShadow: a path that names a directory has no file name, and a file in a
            // read-only directory could never be written; both are refused here, before any
            // shadow is made. A directory that does not exist fails at `create`.
            if path.text.ends_with(['\\', '/']) || resolved.is_dir() {
                session.out("No filename was specified.");
                return Err(CommandError::new(format!(
                    "{} names a directory, not a metadata file",
                    resolved.display()
                ))
                .with_help("name a file, for example backup.cab"));
            }
            if let Some(directory) = resolved.parent().filter(|parent| parent.is_dir()) {
                if is_read_only_directory(directory) {
                    session.out(
                        "The metadata file name path specifies a directory that is read-only.",
                    );
                    return Err(CommandError::new(format!(
                        "the directory {} is read-only",
                        directory.display()
                    ))
                    .with_help("name a file in a directory you can write to"));
                }
            }
            if resolved.exists() {
                session.out("The existing file will be overwritten.");
            }
            session.state.metadata_path = Some(resolved);
        }
    }
    DONE
}

/// A directory no metadata file can be written in: the file system is read-only, this user
/// may not write there, or nobody may (no write bit, which Windows shows as the read-only
/// attribute; root would otherwise write through it).
fn is_read_only_directory(directory: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let no_write_bits = directory
        .metadata()
        .is_ok_and(|meta| meta.permissions().mode() & 0o222 == 0);
    let Ok(name) = std::ffi::CString::new(directory.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `name` is a valid NUL-terminated path for the duration of the call.
    let not_writable = unsafe { libc::access(name.as_ptr(), libc::W_OK) } != 0;
    no_write_bits || not_writable
}

fn settings_listing(state: &SessionState) -> Vec<String> {
    vec![
        format!(
            "Context: {} ({}, 0x{:02x})",
            state.context.diskshadow_words(),
            state.context.name(),
            state.context.value()
        ),
        format!("Options: {}", state.option_words()),
        format!("Verbose: {}", if state.verbose { "on" } else { "off" }),
        format!("Trace: {}", if state.trace { "on" } else { "off" }),
        format!(
            "Step: {}",
            match (state.step, state.step_hold) {
                (true, true) => "on (hold)",
                (true, false) => "on",
                _ => "off",
            }
        ),
        format!(
            "Metadata file: {}",
            state
                .metadata_path
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_else(|| "(none)".to_string())
        ),
        format!("Backup type: {}", state.backup_type.protocol_name()),
    ]
}

fn add(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Add(add) = command else {
        return Err(mismatch(command));
    };
    match add {
        AddCommand::Show => {
            let mut lines = Vec::new();
            for pending in &session.state.volumes {
                let alias = pending
                    .alias
                    .as_deref()
                    .map(|alias| format!(" alias {alias}"))
                    .unwrap_or_default();
                lines.push(format!(
                    "Volume {}{alias}    GUID {}",
                    pending.spec,
                    pending.volume.device_name()
                ));
            }
            let count = session.state.volumes.len();
            lines.push(format!(
                "{count} volume{} in Shadow Copy Set.",
                if count == 1 { "" } else { "s" }
            ));
            let aliases: Vec<String> = session
                .variables
                .aliases()
                .map(|(name, value)| format!("Alias {name} = {value}"))
                .collect();
            if aliases.is_empty() {
                lines.push("No Diskshadow aliases in the environment.".to_string());
            } else {
                lines.push(format!(
                    "{} Diskshadow alias{} in the environment:",
                    aliases.len(),
                    if aliases.len() == 1 { "" } else { "es" }
                ));
                lines.extend(aliases.into_iter().map(|line| format!("\t{line}")));
            }
            session.out_lines(lines);
        }
        AddCommand::Volume {
            volume,
            alias,
            provider,
        } => {
            if session.state.volumes.len() >= limits::MAX_VOLUMES_PER_SET {
                return Err(CommandError::new(format!(
                    "the shadow copy set already holds {} volumes, the most a set can hold",
                    limits::MAX_VOLUMES_PER_SET
                ))
                .with_code(VssCode::VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED)
                .with_help(
                    "create this set, then `reset` and add the remaining volumes to another",
                ));
            }
            let provider = match provider {
                None => None,
                Some(word) => Some(ProviderId(parse_guid(&word.text).ok_or_else(|| {
                    CommandError::usage("add", format!("`{}` is not a provider ID", word.text))
                        .with_help("`list providers` shows the registered provider IDs")
                })?)),
            };
            let base_dir = session.config.base_dir.clone();
            let info = match session.service.resolve_volume(&volume.text, &base_dir) {
                Ok(info) => info,
                // A requester the store refuses fails here, in DiskShadow's words: `add
                // volume` is where it first needs VSS (`InitializeForBackup`).
                Err(error) if error.code == Some(VssCode::E_ACCESSDENIED) => {
                    session.out("");
                    session.out("COM call \"(*vssObject)->InitializeForBackup\" failed.");
                    return Err(error.into());
                }
                Err(error) => return Err(error.into()),
            };
            // Writes that bypass diskshadow make shadows suspect: say so before any is taken.
            let users = session.service.outside_users(&info).unwrap_or_default();
            if !users.is_empty() {
                session.console.err(&format!(
                    "Warning: the volume {} is written outside diskshadow by {}; such writes make its shadow copies suspect. Write through `attach` instead.",
                    info.display_name(),
                    users.join(", ")
                ));
            }
            if session
                .state
                .volumes
                .iter()
                .any(|pending| pending.volume.id == info.id)
            {
                return Err(CommandError::new(format!(
                    "the volume {} is already in the shadow copy set",
                    info.display_name()
                ))
                .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
                .with_help("`add` lists the set; `reset` empties it"));
            }
            if let Some(alias) = alias {
                if session.state.volumes.iter().any(|pending| {
                    pending
                        .alias
                        .as_deref()
                        .is_some_and(|name| name.eq_ignore_ascii_case(&alias.text))
                }) {
                    return Err(CommandError::usage(
                        "add",
                        format!("the alias {} is already used in this set", alias.text),
                    ));
                }
            }
            session.state.volumes.push(PendingVolume {
                spec: volume.text.clone(),
                volume: info,
                alias: alias.as_ref().map(|word| word.text.clone()),
                provider,
            });
        }
        AddCommand::Alias { name, value } => {
            session.variables.set_alias(&name.text, &value.text);
        }
        AddCommand::Shadow { shadow, target } => add_shadow(session, shadow, target.as_ref())?,
    }
    DONE
}

fn create(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    if !matches!(command, Command::Create) {
        return Err(mismatch(command));
    }
    if session.state.volumes.is_empty() {
        return Err(CommandError::bad_state(
            "the shadow copy set is empty",
            "add at least one volume with `add volume <volume>` before `create`",
        ));
    }
    let state = &session.state;
    let request = CreateRequest {
        volumes: state
            .volumes
            .iter()
            .map(|pending| SetVolume {
                volume: pending.volume.clone(),
                provider: pending.provider,
            })
            .collect(),
        context: state.context,
        extra_attributes: state.extra_attributes(),
        backup_type: state.backup_type,
        writers: WriterSelection {
            verify: state.writer_verify.clone(),
            exclude: state.writer_exclude.clone(),
        },
        aliases: state
            .volumes
            .iter()
            .map(|pending| pending.alias.clone())
            .collect(),
        metadata_path: state.metadata_path.clone(),
        step: state.step,
        default_metadata: Some((
            session.config.base_dir.clone(),
            session.config.time_zone.offset_seconds(),
        )),
    };
    let pending = session.state.volumes.clone();
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    let outcome = session.service.create(&request, &mut observer)?;
    let mut lines = Vec::new();
    // In verbose mode a blank line ends the writer section (empty or not) before the aliases.
    if session.state.verbose {
        lines.push(String::new());
    }
    for (index, shadow) in outcome.set.shadows.iter().enumerate() {
        let default_name = format!("VSS_SHADOW_{}", index + 1);
        session
            .variables
            .set_alias(&default_name, &shadow.id.to_string());
        let alias = pending
            .get(index)
            .and_then(|volume| volume.alias.clone())
            .unwrap_or(default_name);
        session.variables.set_alias(&alias, &shadow.id.to_string());
        lines.push(format!(
            "Alias {alias} for shadow ID {} set as environment variable.",
            shadow.id
        ));
    }
    session
        .variables
        .set_alias("VSS_SHADOW_SET", &outcome.set.set_id.to_string());
    lines.push(format!(
        "Alias VSS_SHADOW_SET for shadow set ID {} set as environment variable.",
        outcome.set.set_id
    ));
    if let Some(reason) = &outcome.metadata_error {
        // DiskShadow keeps the set, says the file is missing in its two lines, and stops.
        lines.push(
            "Could not create .cab metadata file. If the metadata file name was specified using"
                .to_string(),
        );
        lines.push("SET METADATA, the file or directory path name may not be valid.".to_string());
        session.out_lines(lines);
        session.state.volumes.clear();
        session.state.last_created_set = Some(outcome.set.set_id);
        return Err(CommandError::new(format!(
            "the shadow copy set {} was created without its metadata file: {reason}",
            outcome.set.set_id
        ))
        .with_help("`set metadata` a path in a writable directory for the next set; `list shadows set %VSS_SHADOW_SET%` shows this one"));
    }
    if session.state.verbose {
        if let Some(path) = &outcome.metadata_path {
            let cab_name = path
                .file_name()
                .map(|name| name.to_string_lossy().to_string())
                .unwrap_or_default();
            for file in &outcome.metadata_files {
                lines.push(format!("Inserted file {file} into .cab file {cab_name}"));
            }
        }
    }
    lines.push(String::new());
    let header = format!(
        "Querying all shadow copies with the shadow copy set ID {}",
        outcome.set.set_id
    );
    let listing = render::shadow_listing(
        &header,
        &outcome.set.shadows,
        &SessionAliases(&session.variables),
        session.config.time_zone,
    );
    lines.extend(listing);
    session.out_lines(lines);
    session.state.volumes.clear();
    session.state.last_created_set = Some(outcome.set.set_id);
    if let Some(state) = &outcome.copy_stopped {
        return Err(CommandError::new(state.clone())
            .with_code(VssCode::VSS_S_ASYNC_CANCELLED)
            .with_help("`list shadows set %VSS_SHADOW_SET%` shows the set; its shadow copies can be used, exposed or deleted meanwhile"));
    }
    DONE
}

fn exec(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Exec { program, arguments } = command else {
        return Err(mismatch(command));
    };
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
        match super::expand::exportable_alias(name, value, &session.config.environment) {
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
    DONE
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

fn begin(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    match command {
        Command::BeginBackup => begin_backup(session, command),
        Command::BeginRestore => begin_restore(session, command),
        _ => Err(mismatch(command)),
    }
}

fn end(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    match command {
        Command::EndBackup => end_backup(session, command),
        Command::EndRestore => end_restore(session, command),
        _ => Err(mismatch(command)),
    }
}

fn begin_backup(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    if !matches!(command, Command::BeginBackup) {
        return Err(mismatch(command));
    }
    match session.state.phase {
        Phase::BackupBegun => Err(CommandError::bad_state(
            "a backup is already in progress",
            "`end backup` ends it",
        )),
        Phase::RestoreBegun => Err(CommandError::bad_state(
            "a restore is in progress",
            "`end restore` ends it first",
        )),
        Phase::Idle => {
            session.state.phase = Phase::BackupBegun;
            session.state.backup_type = BackupType::Full;
            DONE
        }
    }
}

fn end_backup(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    if !matches!(command, Command::EndBackup) {
        return Err(mismatch(command));
    }
    // Microsoft's import sample ends the backup of a set made without `begin backup`: the
    // requester's backup of the set it just created (a copy backup) completes.
    let created_here =
        session.state.phase == Phase::Idle && session.state.last_created_set.is_some();
    if session.state.phase != Phase::BackupBegun && !created_here {
        return Err(CommandError::bad_state(
            "END BACKUP without BEGIN BACKUP",
            "`begin backup` before `create` starts a full backup; `end backup` ends it",
        ));
    }
    session.state.phase = Phase::Idle;
    session.state.backup_type = BackupType::Copy;
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    session.service.end_backup(&mut observer)?;
    DONE
}

fn begin_restore(
    session: &mut Session<'_>,
    command: &Command,
) -> Result<LineOutcome, CommandError> {
    if !matches!(command, Command::BeginRestore) {
        return Err(mismatch(command));
    }
    if session.state.loaded_metadata.is_none() {
        return Err(CommandError::bad_state(
            "no metadata is loaded",
            "`load metadata <file.cab>` loads the writers and components to restore",
        ));
    }
    if session.state.phase != Phase::Idle {
        return Err(CommandError::bad_state(
            "a backup or restore is already in progress",
            "end it first",
        ));
    }
    let verify = session.state.writer_verify.clone();
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    session.service.begin_restore(&verify, &mut observer)?;
    session.state.phase = Phase::RestoreBegun;
    DONE
}

fn end_restore(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    if !matches!(command, Command::EndRestore) {
        return Err(mismatch(command));
    }
    if session.state.phase != Phase::RestoreBegun {
        return Err(CommandError::bad_state(
            "END RESTORE without BEGIN RESTORE",
            "`begin restore` starts a restore",
        ));
    }
    session.state.phase = Phase::Idle;
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    session.service.end_restore(&mut observer)?;
    DONE
}

fn simulate_restore(
    session: &mut Session<'_>,
    command: &Command,
) -> Result<LineOutcome, CommandError> {
    if !matches!(command, Command::SimulateRestore) {
        return Err(mismatch(command));
    }
    if session.state.loaded_metadata.is_none() {
        return Err(CommandError::bad_state(
            "no metadata is loaded",
            "`load metadata <file.cab>` first; simulate restore checks the writers it names",
        ));
    }
    let verify = session.state.writer_verify.clone();
    let lines = session.service.simulate_restore(&verify)?;
    session.out_lines(lines);
    DONE
}

fn load_metadata(
    session: &mut Session<'_>,
    command: &Command,
) -> Result<LineOutcome, CommandError> {
    let Command::LoadMetadata { path } = command else {
        return Err(mismatch(command));
    };
    let resolved = session.resolve_file_path(&path.text)?;
    if !resolved.is_file() {
        return Err(CommandError::new(format!(
            "the metadata file {} does not exist",
            resolved.display()
        ))
        .with_code(VssCode::VSS_E_OBJECT_NOT_FOUND)
        .with_help("`set metadata <file.cab>` before `create` writes one"));
    }
    let cabinet = crate::service::read_metadata_file(&resolved)?;
    let loaded = session.service.load_metadata(cabinet)?;
    if session.state.verbose {
        let cab_name = resolved
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_default();
        let lines: Vec<String> = loaded
            .files
            .iter()
            .map(|file| format!("Extracted file {file} from .cab file {cab_name}"))
            .collect();
        session.out_lines(lines);
    }
    for (name, value) in &loaded.aliases {
        session.variables.set_alias(name, value);
        match super::expand::exportable_alias(name, value, &session.config.environment) {
            Ok(()) => session.out(format!(
                "Alias {name} for value {value} set as environment variable."
            )),
            Err(reason) => session.out(format!(
                "Alias {name} for value {value} set; not as an environment variable: {reason}."
            )),
        }
    }
    session.state.loaded_metadata = Some(resolved);
    DONE
}

fn writer(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Writer { action, target } = command else {
        return Err(mismatch(command));
    };
    let list = match action {
        WriterAction::Verify => &mut session.state.writer_verify,
        WriterAction::Exclude => &mut session.state.writer_exclude,
    };
    if !list
        .iter()
        .any(|existing| existing.eq_ignore_ascii_case(&target.text))
    {
        list.push(target.text.clone());
    }
    DONE
}

fn reset(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    if !matches!(command, Command::Reset) {
        return Err(mismatch(command));
    }
    let released = session.service.release_requester()?;
    session.state = SessionState::default();
    session.variables.clear_aliases();
    if !released.is_empty() {
        session.out(format!(
            "Released {} volatile shadow cop{}.",
            released.len(),
            if released.len() == 1 { "y" } else { "ies" }
        ));
    }
    DONE
}

fn list(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::List { list, json } = command else {
        return Err(mismatch(command));
    };
    if *json {
        return list_json(session, list);
    }
    match list {
        ListCommand::Providers => {
            let providers = session.service.providers()?;
            session.out_lines(render::provider_listing(&providers));
        }
        ListCommand::Shadows(selector) => {
            let all = session.service.shadows()?;
            let (header, shadows): (String, Vec<ShadowInfo>) = match selector {
                ShadowSelector::All => (
                    "Querying all shadow copies on the computer ...".to_string(),
                    all,
                ),
                ShadowSelector::Set(word) => {
                    let set = session.set_argument(word, "list")?;
                    (
                        format!("Querying all shadow copies with the shadow copy set ID {set}"),
                        all.into_iter()
                            .filter(|shadow| shadow.set_id == set)
                            .collect(),
                    )
                }
                ShadowSelector::Id(word) => {
                    let id = session.shadow_argument(word, "list")?;
                    (
                        format!("Querying shadow copy with ID {id}"),
                        all.into_iter().filter(|shadow| shadow.id == id).collect(),
                    )
                }
            };
            let mut lines = render::shadow_listing(
                &header,
                &shadows,
                &SessionAliases(&session.variables),
                session.config.time_zone,
            );
            if matches!(selector, ShadowSelector::All) {
                // Nothing may remove a shadow without saying so: the newest deletion to fit
                // each volume's diff-area limit is told after the listing.
                for storage in session.service.storage()? {
                    if let Some(event) = storage.recent_deletions.last() {
                        lines.push(format!("Note: {}", event.describe()));
                    }
                }
            }
            session.out_lines(lines);
        }
        ListCommand::Writers(detail) => {
            let listing = match detail {
                WriterListDetail::Metadata => WriterListing::Metadata,
                WriterListDetail::Detailed => WriterListing::Detailed,
                WriterListDetail::Status => WriterListing::Status,
            };
            let lines = session.service.list_writers(listing)?;
            session.out_lines(lines);
        }
    }
    DONE
}

/// `list … --json`: the same selection as JSON (the writers as their status), as
/// `diskshadow list … --json` prints it.
fn list_json(session: &mut Session<'_>, list: &ListCommand) -> Result<LineOutcome, CommandError> {
    let value = match list {
        ListCommand::Providers => serde_json::to_value(session.service.providers()?),
        ListCommand::Writers(_) => serde_json::to_value(session.service.writer_statuses()?),
        ListCommand::Shadows(selector) => {
            let mut shadows = session.service.shadows()?;
            match selector {
                ShadowSelector::All => {}
                ShadowSelector::Set(word) => {
                    let set = session.set_argument(word, "list")?;
                    shadows.retain(|shadow| shadow.set_id == set);
                }
                ShadowSelector::Id(word) => {
                    let id = session.shadow_argument(word, "list")?;
                    shadows.retain(|shadow| shadow.id == id);
                }
            }
            serde_json::to_value(shadows)
        }
    };
    let text = value
        .and_then(|value| serde_json::to_string_pretty(&value))
        .map_err(|error| {
            CommandError::new(format!("the listing cannot be written as JSON: {error}"))
                .with_code(VssCode::VSS_E_UNEXPECTED)
        })?;
    session.out_lines(text.lines().map(str::to_string));
    DONE
}

fn delete_shadows(
    session: &mut Session<'_>,
    command: &Command,
) -> Result<LineOutcome, CommandError> {
    let Command::DeleteShadows(target) = command else {
        return Err(mismatch(command));
    };
    let base_dir = session.config.base_dir.clone();
    let selector = match target {
        DeleteShadows::All => DeleteSelector::All,
        DeleteShadows::Set(word) => {
            DeleteSelector::Set(session.set_argument(word, "delete shadows")?)
        }
        DeleteShadows::Id(word) => {
            DeleteSelector::Id(session.shadow_argument(word, "delete shadows")?)
        }
        DeleteShadows::Volume(word) | DeleteShadows::Oldest(word) => {
            // DiskShadow tolerates an alias name here (observed: `delete shadows volume df`).
            if let Some(uuid) = session.variables.alias(&word.text).and_then(parse_guid) {
                DeleteSelector::Id(ShadowId(uuid))
            } else {
                let volume = session.service.resolve_volume(&word.text, &base_dir)?;
                if matches!(target, DeleteShadows::Oldest(_)) {
                    DeleteSelector::Oldest(volume.id)
                } else {
                    DeleteSelector::Volume(volume.id)
                }
            }
        }
        DeleteShadows::Exposed(word) => {
            let shadows = session.service.shadows()?;
            let shadow = find_exposed(&shadows, &word.text, &session.resolve_path(&word.text))
                .ok_or_else(|| {
                    CommandError::new(format!("no shadow copy is exposed at {}", word.text))
                        .with_code(VssCode::VSS_E_OBJECT_NOT_FOUND)
                        .with_help("`list shadows all` shows where shadow copies are exposed")
                })?;
            DeleteSelector::Id(shadow.id)
        }
    };
    if let DeleteShadows::Id(_) = target {
        let deleted = session.service.delete_shadows(&selector)?;
        session.out_lines(render::deletion_by_id(&deleted));
        return DONE;
    }
    // The service unexposes a shadow before deleting it, so the attributes it returns lack the
    // exposed bit; Windows shows the attributes the shadow had (0x00120019 when exposed).
    let before = session.service.shadows()?;
    let mut deleted = session.service.delete_shadows(&selector)?;
    for shadow in &mut deleted {
        if let Some(earlier) = before.iter().find(|earlier| earlier.id == shadow.id) {
            shadow.attributes = earlier.attributes;
        }
    }
    session.out_lines(render::deletion_listing(&deleted));
    DONE
}

/// The shadow exposed at a drive letter, directory or share, by the name the user gave.
fn find_exposed<'s>(
    shadows: &'s [ShadowInfo],
    name: &str,
    resolved: &std::path::Path,
) -> Option<&'s ShadowInfo> {
    let wanted = name.trim_end_matches(['\\', '/']);
    shadows.iter().find(|shadow| {
        shadow.exposure.as_ref().is_some_and(|exposure| {
            exposure
                .name
                .trim_end_matches(['\\', '/'])
                .eq_ignore_ascii_case(wanted)
                || (exposure.kind != ExposureKind::Share
                    && std::path::Path::new(&exposure.location) == resolved)
        })
    })
}

fn expose(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Expose { shadow, target } = command else {
        return Err(mismatch(command));
    };
    let id = session.shadow_argument(shadow, "expose")?;
    let base_dir = session.config.base_dir.clone();
    let resolved = exposure_target(session, &target.text)?;
    let exposure = session.service.expose(id, &resolved, &base_dir)?;
    let shown = match exposure.kind {
        // The letter keeps the case it was typed in: `expose %x% z:` says `z:\`.
        ExposureKind::Drive => {
            let name = exposure.name.trim_end_matches('\\');
            let typed = target.text.trim_end_matches(['\\', '/']);
            let letter = if typed.eq_ignore_ascii_case(name) {
                typed
            } else {
                name
            };
            format!("{letter}\\")
        }
        _ => exposure.name.clone(),
    };
    session.out(format!(
        "The shadow copy was successfully exposed as {shown}."
    ));
    // A share is an NBD export here: say where a client connects (diskshadow's own line).
    if exposure.kind == ExposureKind::Share {
        session.out(format!(
            "The share is served over NBD at {}",
            exposure.location
        ));
    }
    if let Some(warning) = exposure.access_warning("the shadow copy", "read") {
        session.out(warning);
    }
    DONE
}

/// An exposure target as the service takes it: a Windows directory path (`C:\shadowcopy\`,
/// `sub\dir`, doubled backslashes too) resolves as `exec` and `set metadata` resolve theirs; a
/// bare letter (`p:`), a share (`\\host\name`) and anything else go as given.
fn exposure_target(session: &mut Session<'_>, text: &str) -> Result<String, CommandError> {
    let bytes = text.as_bytes();
    let drive_path = bytes.len() > 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes[2] == b'\\' || bytes[2] == b'/')
        && !text[3..].trim_matches(['\\', '/']).is_empty();
    let relative_windows_path =
        text.contains('\\') && !text.starts_with("\\\\") && !text.contains(':');
    if drive_path || relative_windows_path {
        Ok(session.resolve_file_path(text)?.display().to_string())
    } else {
        Ok(text.to_string())
    }
}

fn unexpose(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Unexpose { target } = command else {
        return Err(mismatch(command));
    };
    let base_dir = session.config.base_dir.clone();
    let text = match parse_guid(&target.text)
        .or_else(|| session.variables.alias(&target.text).and_then(parse_guid))
    {
        Some(uuid) => ShadowId(uuid).to_string(),
        None => exposure_target(session, &target.text)?,
    };
    let shadow = session.service.unexpose(&text, &base_dir)?;
    session.out(format!(
        "The shadow copy {} is no longer exposed.",
        shadow.id
    ));
    DONE
}

fn revert(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Revert { shadow } = command else {
        return Err(mismatch(command));
    };
    let id = session.shadow_argument(shadow, "revert")?;
    let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
    session.service.revert(id, false, &mut observer)?;
    session.out(format!("The volume was reverted to the shadow copy {id}."));
    DONE
}

fn import(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    if !matches!(command, Command::Import) {
        return Err(mismatch(command));
    }
    let imported = session.service.import()?;
    let Some(set_id) = imported.first().map(|shadow| shadow.set_id) else {
        return DONE;
    };
    session.out(format!(
        "The shadow copy set {set_id} was imported: {} shadow copies.",
        imported.len()
    ));
    session.out(String::new());
    let lines = render::shadow_listing(
        &format!("Querying all shadow copies with the shadow copy set ID {set_id}"),
        &imported,
        &SessionAliases(&session.variables),
        session.config.time_zone,
    );
    session.out_lines(lines);
    DONE
}

fn mask(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Mask { shadow_set } = command else {
        return Err(mismatch(command));
    };
    let set_id = session.set_argument(shadow_set, "mask")?;
    let masked = session.service.mask(set_id)?;
    for shadow in &masked {
        session.out(format!(
            "The shadow copy {} was removed from this host.",
            shadow.id
        ));
    }
    session.out(format!("Number of shadow copies masked: {}", masked.len()));
    DONE
}

fn break_set(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Break {
        writable,
        shadow_set,
    } = command
    else {
        return Err(mismatch(command));
    };
    let set_id = session.set_argument(shadow_set, "break")?;
    let volumes = session.service.break_set(set_id, *writable)?;
    let access = if *writable { "read-write" } else { "read-only" };
    for volume in &volumes {
        session.out(format!(
            "The shadow copy LUN is now the volume {} ({access}).",
            volume.display_name()
        ));
    }
    session.out(format!("Number of shadow copies broken: {}", volumes.len()));
    DONE
}

/// `add shadow <shadow> [<target volume>]`: pairs a shadow copy with the volume `resync`
/// copies it onto (VSS `AddSnapshotToRecoverySet`); checked now, so a mistake shows here.
fn add_shadow(
    session: &mut Session<'_>,
    shadow: &Word,
    target: Option<&Word>,
) -> Result<(), CommandError> {
    let id = session.shadow_argument(shadow, "add")?;
    let info = session
        .service
        .shadows()?
        .into_iter()
        .find(|info| info.id == id)
        .ok_or_else(|| {
            CommandError::new(format!("shadow copy {id} was not found"))
                .with_code(VssCode::VSS_E_OBJECT_NOT_FOUND)
                .with_help("`list shadows all` shows the shadow copies")
        })?;
    // VSS resynchronizes transportable hardware shadow copies; diskshadow copies back any
    // persistent shadow copy it can read, which is what the engine needs.
    if !info.context.is_persistent() {
        return Err(CommandError::new(format!(
            "shadow copy {id} was made in the {} context; only persistent shadow copies can be resynchronized",
            info.context.name()
        ))
        .with_code(VssCode::VSS_E_UNSUPPORTED_CONTEXT)
        .with_help("create the shadow copy after `set context persistent`"));
    }
    let target = match target {
        Some(word) => {
            let base_dir = session.config.base_dir.clone();
            Some(session.service.resolve_volume(&word.text, &base_dir)?)
        }
        None => None,
    };
    let pair = ResyncPair {
        shadow: id,
        original: info.volume,
        target,
    };
    if let Some(other) = session
        .state
        .resync_set
        .iter()
        .find(|other| other.destination().id == pair.destination().id)
    {
        return Err(CommandError::new(format!(
            "the volume {} is already the target of shadow copy {}",
            pair.destination().display_name(),
            other.shadow
        ))
        .with_code(VssCode::VSS_E_OBJECT_ALREADY_EXISTS)
        .with_help("give each shadow copy its own target volume"));
    }
    let whose = if pair.target.is_some() {
        "the volume"
    } else {
        "its original volume"
    };
    session.out(format!(
        "Shadow copy {id} will be resynchronized onto {whose} {}.",
        pair.destination().display_name()
    ));
    session.state.resync_set.push(pair);
    Ok(())
}

/// `resync [novolcheck] [revert_originalsig]`: LUN resync of every `add shadow` pair, in
/// order. The pairs stay, so the same resync can be run again.
fn resync(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Resync {
        no_volume_check,
        revert_original_signature,
    } = command
    else {
        return Err(mismatch(command));
    };
    if session.state.resync_set.is_empty() {
        return Err(CommandError::bad_state(
            "no shadow copy was added for resync",
            "pair a shadow copy with its target first: `add shadow <shadow ID> [<target volume>]`",
        ));
    }
    let pairs = session.state.resync_set.clone();
    for pair in &pairs {
        let mut observer = console_observer(&mut *session.console, &session.state, &session.config);
        let outcome = session.service.resync(
            pair.shadow,
            pair.target.as_ref().map(|volume| volume.id),
            *no_volume_check,
            &mut observer,
        )?;
        session.out(format!(
            "The shadow copy {} was resynchronized onto the volume {}: {} bytes copied, {} bytes left as holes, {} chunks written during the resync kept.",
            pair.shadow,
            pair.destination().display_name(),
            outcome.bytes_copied,
            outcome.bytes_punched,
            outcome.chunks_written_during
        ));
    }
    if *revert_original_signature {
        session.out(
            "REVERT_ORIGINALSIG: image-file volumes carry no disk signature; each target keeps its own volume ID.",
        );
    }
    DONE
}

fn exit(_session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    if !matches!(command, Command::Exit) {
        return Err(mismatch(command));
    }
    Ok(LineOutcome::Exit)
}

fn help(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Help { topic } = command else {
        return Err(mismatch(command));
    };
    if topic.is_empty() {
        let mut lines = Vec::new();
        for spec in commands::COMMANDS {
            lines.push(format!(
                "{:<20}- {}",
                spec.name.to_ascii_uppercase(),
                spec.summary
            ));
        }
        lines.push(String::new());
        lines.push("For more information on a command, type: HELP <command>".to_string());
        session.out_lines(lines);
        return DONE;
    }
    let wanted = topic
        .iter()
        .map(|word| word.text.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    let spec = commands::find(&wanted)
        .or_else(|| {
            topic
                .first()
                .and_then(|word| commands::find(&word.text.to_ascii_lowercase()))
        })
        .ok_or_else(|| {
            CommandError::new(format!("there is no command `{wanted}`"))
                .with_help("`help` lists every command")
        })?;
    session.print_command_help(spec);
    if !spec.examples.is_empty() {
        session.out("");
        session.out("Examples:");
        let examples: Vec<String> = spec
            .examples
            .iter()
            .map(|example| format!("        {example}"))
            .collect();
        session.out_lines(examples);
    }
    DONE
}

fn drive_letter(word: &Word, command: &'static str) -> Result<char, CommandError> {
    crate::engine::model::parse_drive_letter(&word.text).ok_or_else(|| {
        CommandError::usage(command, format!("`{}` is not a drive letter", word.text))
            .with_help("write a letter and a colon, for example `c:`")
    })
}

fn map(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Map(map) = command else {
        return Err(mismatch(command));
    };
    match map {
        MapCommand::Show => {
            let drives = session.service.drive_map()?;
            let mut lines = Vec::new();
            for (letter, target) in &drives {
                lines.push(match target {
                    DriveTarget::Volume(path) => {
                        format!("{letter}:\\  volume     {}", path.display())
                    }
                    DriveTarget::Directory(path) => {
                        format!("{letter}:\\  directory  {}", path.display())
                    }
                });
            }
            lines.push(format!(
                "{} drive letter{} mapped.",
                drives.len(),
                if drives.len() == 1 { "" } else { "s" }
            ));
            session.out_lines(lines);
        }
        MapCommand::Map { drive, target } => {
            let letter = drive_letter(drive, "map")?;
            let path = session.resolve_path(&target.text);
            let target = if path.is_dir() {
                DriveTarget::Directory(path)
            } else if path.is_file() {
                DriveTarget::Volume(path)
            } else {
                return Err(CommandError::new(format!("{} does not exist", path.display()))
                    .with_help("map a letter to an existing image file (a volume) or directory (an exposure target)"));
            };
            session.service.map_drive(letter, target)?;
        }
        MapCommand::Unmap { drive } => {
            let letter = drive_letter(drive, "map")?;
            session.service.unmap_drive(letter)?;
        }
    }
    DONE
}

fn attach(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Attach { volume, target } = command else {
        return Err(mismatch(command));
    };
    let base_dir = session.config.base_dir.clone();
    let attachment = session
        .service
        .attach(&volume.text, &target.text, &base_dir)?;
    session.out(format!(
        "The volume {} was attached read-write as {} ({}).",
        volume.text, attachment.name, attachment.location
    ));
    if let Some(warning) = attachment.access_warning("the volume", "read and write") {
        session.out(warning);
    }
    DONE
}

fn detach(session: &mut Session<'_>, command: &Command) -> Result<LineOutcome, CommandError> {
    let Command::Detach { target } = command else {
        return Err(mismatch(command));
    };
    let base_dir = session.config.base_dir.clone();
    let volume = session.service.detach(&target.text, &base_dir)?;
    session.out(format!(
        "The volume {} was detached.",
        volume.display_name()
    ));
    DONE
}

/// The language reference in the README, generated from the registry so it cannot drift
/// (a test compares it with README.md).
pub fn markdown_reference() -> String {
    let mut text = String::from(
        "## The language\n\nOne command per line; keywords are case-insensitive; `#` starts a comment \
         line or, after white space, a trailing comment; `%NAME%` expands aliases, environment \
         variables and `%DISKSH_PARAM_n%`. Commands marked *extension* are diskshadow's own.\n\n\
         | command | what it does |\n|---|---|\n",
    );
    for spec in commands::COMMANDS {
        text.push_str(&format!(
            "| `{}` | {} |\n",
            spec.name,
            spec.summary.replace('|', "\\|")
        ));
    }
    for spec in commands::COMMANDS {
        text.push_str(&format!(
            "\n### {}\n\n```text\n{}\n\n{}\n```\n",
            spec.name, spec.syntax, spec.help
        ));
        if !spec.examples.is_empty() {
            text.push_str("\nExamples:\n\n```text\n");
            for example in spec.examples {
                text.push_str(example);
                text.push('\n');
            }
            text.push_str("```\n");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_in_the_language_has_exactly_one_handler_and_help() {
        for spec in commands::COMMANDS {
            let handlers = HANDLERS
                .iter()
                .filter(|(name, _)| *name == spec.name)
                .count();
            assert_eq!(handlers, 1, "`{}` has {handlers} handlers", spec.name);
        }
        for (name, _) in HANDLERS {
            assert!(
                commands::find(name).is_some(),
                "`{name}` has a handler but no syntax or help"
            );
        }
    }
}
