//! The typed syntax tree of the DiskShadow language. `lower.rs` builds it from pest pairs in one
//! pass; nothing else looks at pest pairs.
//!
//! Arguments stay words (text plus span): `%NAME%` expansion happens when a line runs, after
//! earlier lines have set aliases, so the session expands the raw line and parses it again
//! ([`crate::syntax::parse_line`]) before executing it.

use serde::Serialize;

/// Byte offsets into the source the node came from (a script or one line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One argument as written: quotes removed, `%NAME%` references kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Word {
    pub text: String,
    pub span: Span,
}

impl Word {
    pub fn new(text: impl Into<String>, span: Span) -> Self {
        Self {
            text: text.into(),
            span,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A parsed script: every line, in order, including blank and comment lines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Script {
    pub lines: Vec<ScriptLine>,
}

/// One line of a script.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptLine {
    /// 1-based line number.
    pub number: usize,
    /// The line as written, without its line ending, surrounding whitespace or a trailing ` #`
    /// comment. A comment line keeps its comment (`#End of script`); a blank line is empty.
    /// `parse_line(text)` of a command line gives its command again, so the session can expand
    /// `%NAME%` references in `text` and parse the result.
    pub text: String,
    /// Where `text` sits in the script.
    pub span: Span,
    /// `None` for blank and comment lines.
    pub command: Option<Command>,
}

/// Every DiskShadow command, plus diskshadow's documented extensions (`map`, `attach`,
/// `detach`, `set step`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Command {
    Set(SetCommand),
    SimulateRestore,
    LoadMetadata {
        path: Word,
    },
    Writer {
        action: WriterAction,
        target: Word,
    },
    Add(AddCommand),
    Create,
    /// `exec <file> [args…]`.
    Exec {
        program: Word,
        arguments: Vec<Word>,
    },
    BeginBackup,
    EndBackup,
    BeginRestore,
    EndRestore,
    Reset,
    List {
        list: ListCommand,
        /// `--json` (diskshadow's own): the same selection as JSON.
        json: bool,
    },
    DeleteShadows(DeleteShadows),
    Import,
    Mask {
        shadow_set: Word,
    },
    Expose {
        shadow: Word,
        target: Word,
    },
    Unexpose {
        target: Word,
    },
    Break {
        writable: bool,
        shadow_set: Word,
    },
    Revert {
        shadow: Word,
    },
    Resync {
        no_volume_check: bool,
        revert_original_signature: bool,
    },
    Exit,
    /// `help [command…]` and `/?`.
    Help {
        topic: Vec<Word>,
    },
    /// Extension: `map` (list), `map <d:> <path>` (map a drive letter to an image file or a
    /// directory), `unmap <d:>`.
    Map(MapCommand),
    /// Extension: `attach <volume> <target>`: serve a live volume read-write as a FUSE file
    /// (a path) or an NBD export (`nbd://…`, `nbd+unix://…`).
    Attach {
        volume: Word,
        target: Word,
    },
    /// Extension: `detach <volume-or-target>`.
    Detach {
        target: Word,
    },
}

/// `set step`: pause before each writer event; `hold` keeps writers frozen past their freeze
/// deadline while the prompt waits (otherwise the set is aborted at the deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StepSetting {
    pub on: bool,
    pub hold: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum SetCommand {
    /// Bare `set`: list the current settings.
    Show,
    Context(ContextSetting),
    Option(OptionSetting),
    Verbose(bool),
    Metadata(Word),
    /// Extension for writer developers: `set step on [hold] | off`.
    Step(StepSetting),
    /// Extension for writer developers: `set trace on | off` shows each writer event, reply
    /// and writer log line.
    Trace(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ContextSetting {
    ClientAccessible,
    Persistent { no_writers: bool },
    Volatile { no_writers: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CopyMethod {
    Differential,
    Plex,
}

/// `set option {[differential | plex] [transportable] [[rollbackrecover] [txfrecover] |
/// [noautorecover]]}`. Conflicting combinations are rejected while lowering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct OptionSetting {
    pub copy_method: Option<CopyMethod>,
    pub transportable: bool,
    pub rollback_recover: bool,
    pub txf_recover: bool,
    pub no_auto_recover: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WriterAction {
    Verify,
    Exclude,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum AddCommand {
    /// Bare `add`: list the volumes in the set and the aliases.
    Show,
    Volume {
        volume: Word,
        alias: Option<Word>,
        provider: Option<Word>,
    },
    Alias {
        name: Word,
        value: Word,
    },
    /// `add shadow <alias> [<target volume>]` (resync).
    Shadow {
        shadow: Word,
        target: Option<Word>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum WriterListDetail {
    #[default]
    Metadata,
    Detailed,
    Status,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ListCommand {
    Writers(WriterListDetail),
    Shadows(ShadowSelector),
    Providers,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ShadowSelector {
    All,
    Set(Word),
    Id(Word),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DeleteShadows {
    All,
    Volume(Word),
    Oldest(Word),
    Set(Word),
    Id(Word),
    Exposed(Word),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MapCommand {
    Show,
    Map { drive: Word, target: Word },
    Unmap { drive: Word },
}

impl Command {
    /// The registry name of the command (`"delete shadows"`, `"set"`, …): the key of its help.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Set(_) => "set",
            Command::SimulateRestore => "simulate restore",
            Command::LoadMetadata { .. } => "load metadata",
            Command::Writer { .. } => "writer",
            Command::Add(_) => "add",
            Command::Create => "create",
            Command::Exec { .. } => "exec",
            // DiskShadow prints one help block for `begin` and one for `end`
            // (`END { BACKUP | RESTORE }`), so the registry has one entry for each.
            Command::BeginBackup | Command::BeginRestore => "begin",
            Command::EndBackup | Command::EndRestore => "end",
            Command::Reset => "reset",
            Command::List { .. } => "list",
            Command::DeleteShadows(_) => "delete shadows",
            Command::Import => "import",
            Command::Mask { .. } => "mask",
            Command::Expose { .. } => "expose",
            Command::Unexpose { .. } => "unexpose",
            Command::Break { .. } => "break",
            Command::Revert { .. } => "revert",
            Command::Resync { .. } => "resync",
            Command::Exit => "exit",
            Command::Help { .. } => "help",
            Command::Map(MapCommand::Unmap { .. }) => "unmap",
            Command::Map(_) => "map",
            Command::Attach { .. } => "attach",
            Command::Detach { .. } => "detach",
        }
    }
}
