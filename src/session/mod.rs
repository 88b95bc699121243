//! The interpreter: requester state, the command handlers (`commands/`) and the script runner. The REPL and
//! script mode both feed lines to [`Session::execute_line`], so what a user sees interactively
//! is what the transcript tests check.

mod commands;
pub mod console;
pub mod expand;
mod observer;
pub mod reference;
pub mod render;
pub mod state;
mod step_prompt;
pub mod writer_listing;

use std::path::{Path, PathBuf};

use miette::{GraphicalReportHandler, GraphicalTheme, NamedSource};

use crate::service::vss::VssCode;
use crate::service::{ServiceError, ServiceErrorKind, ShadowService};
use crate::syntax::{self, SyntaxError};
use console::Console;
use expand::{ExpandError, Variables};
use render::TimeZoneChoice;
use state::{Phase, SessionState};

/// How lines reach the session, which decides the echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The REPL: the prompt is the echo, nothing more is printed.
    Interactive,
    /// `-s SCRIPT`: each command is echoed as `-> command`, the first failure stops the script.
    Script,
    /// Transcript tests: each line is echoed as `DISKSHADOW> line` and a failure does not stop.
    Transcript,
}

/// Fixed facts of a session, injected so tests are deterministic.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub mode: Mode,
    /// The requester's working directory: relative paths are resolved against it.
    pub base_dir: PathBuf,
    /// The process environment, for `%NAME%` and for programs run by `exec`.
    pub environment: Vec<(String, String)>,
    /// `%DISKSH_PARAM_n%`.
    pub parameters: Vec<String>,
    pub time_zone: TimeZoneChoice,
    /// Width for rendering diagnostics.
    pub width: usize,
    /// Show writers' reply latencies in verbose mode (transcripts turn them off: they are
    /// measured, not injected).
    pub show_latencies: bool,
}

/// What happened to one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    /// Ran (or was blank); go on.
    Continue,
    /// `exit` was given.
    Exit,
    /// The line failed; in script mode the script stops.
    Failed,
}

/// Exit statuses (docs/cli.md): the one table that maps outcomes to codes, for `diskshadow` and
/// `vssadmin` alike.
pub mod exit_status {
    /// Every command succeeded.
    pub const SUCCESS: i32 = 0;
    /// A command failed (a script stopped there).
    pub const COMMAND_FAILED: i32 = 1;
    /// The command line or the script's syntax is wrong; nothing was run.
    pub const USAGE: i32 = 2;
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub message: String,
    pub code: Option<VssCode>,
    pub help: Option<String>,
    /// Print this command's help, as DiskShadow does for wrong or missing parameters.
    pub command_help: Option<&'static str>,
    /// The command already said why it failed in DiskShadow's words; print nothing more.
    pub already_shown: bool,
}

impl CommandError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
            help: None,
            command_help: None,
            already_shown: false,
        }
    }

    /// A failure the command has already described (`The command script failed.`).
    pub fn already_shown() -> Self {
        let mut error = Self::new("");
        error.already_shown = true;
        error
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_code(mut self, code: VssCode) -> Self {
        self.code = Some(code);
        self
    }

    pub fn usage(command: &'static str, message: impl Into<String>) -> Self {
        let mut error = Self::new(message);
        error.command_help = Some(command);
        error
    }

    pub fn bad_state(message: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(message)
            .with_code(VssCode::VSS_E_BAD_STATE)
            .with_help(help)
    }
}

impl From<ServiceError> for CommandError {
    fn from(error: ServiceError) -> Self {
        let help = error.help.clone().or_else(|| match error.kind {
            ServiceErrorKind::Unavailable => Some(
                "check `diskshadow service status` and the service log in the store".to_string(),
            ),
            _ => None,
        });
        Self {
            message: error.message,
            code: error.code,
            help,
            command_help: None,
            already_shown: false,
        }
    }
}

/// One requester: its state, its service connection and where its output goes.
pub struct Session<'a> {
    pub(crate) service: Box<dyn ShadowService + 'a>,
    pub(crate) console: &'a mut dyn Console,
    pub(crate) state: SessionState,
    pub(crate) variables: Variables,
    pub(crate) config: SessionConfig,
    /// Line number in the running script, for error positions.
    current_line: Option<(String, usize)>,
}

impl<'a> Session<'a> {
    pub fn new(
        service: Box<dyn ShadowService + 'a>,
        console: &'a mut dyn Console,
        config: SessionConfig,
    ) -> Self {
        let variables = Variables::new(&config.environment, &config.parameters);
        Self {
            service,
            console,
            state: SessionState::default(),
            variables,
            config,
            current_line: None,
        }
    }

    pub fn variables(&self) -> &Variables {
        &self.variables
    }

    /// The service, for completion and other read-only look-ups by the REPL.
    pub fn service(&mut self) -> &mut dyn ShadowService {
        self.service.as_mut()
    }

    /// Notes a line typed at the interactive prompt (the `-l` log keeps it).
    pub fn typed(&mut self, line: &str) {
        self.console.typed(line);
    }

    /// Prints a line through the session's console (for hosts of the session, such as tests).
    pub fn print(&mut self, line: &str) {
        self.console.out(line);
    }

    pub(crate) fn out(&mut self, line: impl AsRef<str>) {
        self.console.out(line.as_ref());
    }

    pub(crate) fn out_lines(&mut self, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            self.console.out(&line);
        }
    }

    /// Runs one line: expands `%NAME%`, parses, runs, and reports any failure. In the shell a
    /// blank line follows each command's output before the next prompt, as in DiskShadow.
    pub fn execute_line(&mut self, raw_line: &str) -> LineOutcome {
        let outcome = self.run_line(raw_line);
        // Whatever the command's requests said about stopping ended with them.
        self.console.set_stoppable(false);
        let trimmed = raw_line.trim();
        if self.config.mode == Mode::Interactive
            && outcome != LineOutcome::Exit
            && !trimmed.is_empty()
            && !trimmed.starts_with('#')
        {
            self.console.out("");
        }
        outcome
    }

    fn run_line(&mut self, raw_line: &str) -> LineOutcome {
        let line = raw_line.trim_end_matches(['\r', '\n']);
        let trimmed = line.trim();
        let is_comment = trimmed.is_empty() || trimmed.starts_with('#');
        match self.config.mode {
            Mode::Transcript => self.console.out(&format!("DISKSHADOW> {line}")),
            // DiskShadow echoes every script line, comments included; a blank line is a bare
            // prompt.
            Mode::Script if trimmed.is_empty() => self.console.out("->"),
            Mode::Script => self.console.out(&format!("-> {trimmed}")),
            _ => {}
        }
        if is_comment {
            return LineOutcome::Continue;
        }
        let (command_part, comment) = expand::split_trailing_comment(line);
        let (expanded, expansions) = match self.variables.expand(command_part) {
            Ok((text, expansions)) => (format!("{text}{comment}"), expansions),
            Err(error) => {
                self.report_expand_error(&error);
                return LineOutcome::Failed;
            }
        };
        for expansion in &expansions {
            if expansion.is_alias {
                self.console
                    .out(&format!("-> %{}% = {}", expansion.name, expansion.value));
            }
        }
        let command = match syntax::parse_line(&expanded) {
            Ok(Some(command)) => command,
            Ok(None) => return LineOutcome::Continue,
            Err(error) => {
                self.report_syntax_error(&error, &expanded);
                return LineOutcome::Failed;
            }
        };
        match commands::dispatch(self, &command) {
            Ok(outcome) => outcome,
            Err(error) => {
                self.report_command_error(&expanded, &error);
                LineOutcome::Failed
            }
        }
    }

    /// Runs a whole script (`-s FILE`, stdin): checks its syntax first (nothing runs if any line
    /// is wrong), then runs line by line, stopping at the first failure. Returns the exit status.
    pub fn run_script(&mut self, name: &str, source: &str) -> i32 {
        let parsed = syntax::parse_script(source);
        for warning in &parsed.warnings {
            let position = format!("{name}:{}:{}", warning.line(), warning.column());
            self.console.err(&compact_diagnostic(warning, &position));
        }
        if !parsed.errors.is_empty() {
            for error in &parsed.errors {
                let line = source.lines().nth(error.line().saturating_sub(1));
                self.print_usage_block(error.command_name(), line.unwrap_or_default());
                let position = format!("{name}:{}:{}", error.line(), error.column());
                self.console.err(&compact_diagnostic(error, &position));
            }
            let count = parsed.errors.len();
            self.console.err(&format!(
                "{count} syntax error{} in {name}; nothing was run.",
                if count == 1 { "" } else { "s" }
            ));
            return exit_status::USAGE;
        }
        // Splitting at '\n' (not `lines()`) keeps what follows the last newline: empty when the
        // script ends with a newline, which DiskShadow shows as the final bare `->` (its prompt
        // at the end of input); a script whose last line has no newline ends without it.
        for (index, line) in source.split('\n').enumerate() {
            self.current_line = Some((name.to_string(), index + 1));
            let outcome = self.execute_line(line);
            if self.console.interrupted() {
                self.current_line = None;
                self.console
                    .out("The script was interrupted (Ctrl-C) after this command.");
                if !self.finish() {
                    self.console.out("DiskShadow is exiting.");
                }
                return exit_status::COMMAND_FAILED;
            }
            match outcome {
                LineOutcome::Continue => {}
                LineOutcome::Exit => {
                    self.current_line = None;
                    self.finish();
                    return exit_status::SUCCESS;
                }
                LineOutcome::Failed => {
                    self.current_line = None;
                    if !self.finish() {
                        self.console.out("DiskShadow is exiting.");
                    }
                    return exit_status::COMMAND_FAILED;
                }
            }
        }
        self.current_line = None;
        self.finish();
        exit_status::SUCCESS
    }

    /// Ends the session as `exit` or the end of input does: DiskShadow's exit notes, then the
    /// release of this requester's volatile shadows.
    /// Returns whether it said `DiskShadow is exiting.` (it does after an exit note, as
    /// DiskShadow does).
    pub fn finish(&mut self) -> bool {
        let mut said_exiting = false;
        if self.state.phase == Phase::BackupBegun {
            self.console
                .out("Note: END BACKUP was not commanded, writers not notified BackupComplete.");
            self.console.out("DiskShadow is exiting.");
            said_exiting = true;
        }
        if let Err(error) = self.service.release_requester() {
            self.console.err(&format!(
                "error: the volatile shadow copies of this session could not be released: {error}"
            ));
        }
        said_exiting
    }

    fn position_prefix(&self) -> String {
        match &self.current_line {
            Some((name, line)) => format!("{name}:{line}: "),
            None => String::new(),
        }
    }

    fn report_expand_error(&mut self, error: &ExpandError) {
        let help = match error {
            ExpandError::Undefined { .. } => {
                "aliases are set by `add alias`, by `add volume … alias` once `create` ran, and by `load metadata`; `add` lists them"
            }
            ExpandError::Unclosed { .. } => "close the name with '%', or write '%%' for a literal '%'",
            ExpandError::TooLong { .. } => {
                "an alias that grows from itself (`add alias a %a%%a%`) doubles on every line; give it its value directly"
            }
        };
        let text = format!(
            "{}error[dsh::expand]: {error}\n  help: {help}",
            self.position_prefix()
        );
        self.console.err(&text);
    }

    /// As DiskShadow: the usage block of the command form that is wrong, then diskshadow's own
    /// diagnostic in at most two lines (code and position, then the way out).
    fn report_syntax_error(&mut self, error: &SyntaxError, line: &str) {
        let name = match &self.current_line {
            Some((script, number)) => format!("{script}:{number}"),
            None => "line:1".to_string(),
        };
        self.print_usage_block(error.command_name(), line);
        // `parse_line` counts from the line, so only the column is the error's own.
        let position = format!("{name}:{}", error.column());
        self.console.err(&compact_diagnostic(error, &position));
    }

    /// The usage block of the form of `command` (a registry name) that `line` gives.
    fn print_usage_block(&mut self, command: Option<&str>, line: &str) {
        if let Some(spec) = command.and_then(syntax::commands::find) {
            for usage_line in syntax::commands::usage_block(spec, line) {
                self.console.out(&usage_line);
            }
        }
    }

    fn report_command_error(&mut self, line: &str, error: &CommandError) {
        if error.already_shown {
            return;
        }
        self.print_usage_block(error.command_help, line);
        let mut text = format!("{}error: {}", self.position_prefix(), error.message);
        if let Some(code) = error.code {
            text.push_str(&format!(" [{code}]"));
        }
        if let Some(help) = &error.help {
            text.push_str(&format!("\n  help: {help}"));
        }
        self.console.err(&text);
    }

    /// A command's help block as DiskShadow prints it: the syntax line, a blank line, then the
    /// parameters.
    pub(crate) fn print_command_help(&mut self, spec: &syntax::commands::CommandSpec) {
        self.console.out(spec.syntax);
        self.console.out("");
        for line in spec.help.lines() {
            self.console.out(line);
        }
    }

    /// Renders a diagnostic with its source snippet: plain text unless on a terminal.
    pub fn render_diagnostic(&self, error: &SyntaxError, name: &str, source: &str) -> String {
        render_syntax_error(
            error,
            name,
            source,
            self.console.is_terminal(),
            self.config.width,
        )
    }

    /// A file named in a script, which may be a Windows path: `z:\dir\file` with Z: mapped to
    /// a directory is that directory's `dir/file`; on any other letter it is `dir/file` in the
    /// working directory; a relative `dir\file` is `dir/file`.
    pub(crate) fn resolve_file_path(&mut self, text: &str) -> Result<PathBuf, CommandError> {
        if let Some((letter, path)) = crate::drive_letter::split_path(text) {
            // Doubled backslashes (`c:\\programdata\\test.cab`) mean single ones: empty
            // components go, and the rest stays relative to the letter's directory.
            let rest = path
                .split(['\\', '/'])
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join("/");
            let map = self.service.drive_map()?;
            return Ok(match map.iter().find(|(mapped, _)| *mapped == letter) {
                Some((_, crate::service::model::DriveTarget::Directory(directory))) => {
                    directory.join(rest)
                }
                // A letter that names a volume (or nothing) has no directory of files here: the
                // working directory stands in for its root, so `exec c:\scripts\copy.cmd` runs
                // `./scripts/copy.cmd`.
                _ => self.config.base_dir.join(rest),
            });
        }
        if text.contains('\\') && !text.contains('/') {
            let relative = text
                .split('\\')
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join("/");
            return Ok(self.resolve_path(&relative));
        }
        Ok(self.resolve_path(text))
    }

    pub(crate) fn resolve_path(&self, path: &str) -> PathBuf {
        let candidate = Path::new(path);
        if candidate.is_absolute() {
            candidate.to_path_buf()
        } else {
            self.config.base_dir.join(candidate)
        }
    }
}

/// A diagnostic in at most two lines, after DiskShadow's usage block:
/// `NAME:LINE:COLUMN: error[dsh::parse::…]: message` (`position` is `NAME:LINE:COLUMN`) and
/// `  help: …` (left out when the help only repeats the usage the block shows).
pub fn compact_diagnostic(error: &SyntaxError, position: &str) -> String {
    let severity = if error.kind().is_warning() {
        "warning"
    } else {
        "error"
    };
    let mut text = format!(
        "{position}: {severity}[{}]: {}",
        error.code_str(),
        error.message()
    );
    let help = error.help_text();
    if !help.is_empty() && !help.starts_with("usage:") {
        text.push_str(&format!("\n  help: {help}"));
    }
    text
}

/// Renders a syntax error with its source snippet, the way `--check` shows it.
pub fn render_syntax_error(
    error: &SyntaxError,
    name: &str,
    source: &str,
    terminal: bool,
    width: usize,
) -> String {
    let theme = if terminal {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(width);
    let report = miette::Report::new(error.clone())
        .with_source_code(NamedSource::new(name, source.to_string()));
    let mut text = String::new();
    if handler.render_report(&mut text, report.as_ref()).is_err() {
        text = format!("{name}:{}:{}: {error}", error.line(), error.column());
    }
    text.trim_end().to_string()
}
