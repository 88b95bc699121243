//! Lowers the pest pairs of a valid `statement` into the typed AST in one pass, and applies the
//! checks the grammar cannot express: conflicting and repeated flags, help topics, drive letters.
//! Nothing outside this file and `mod.rs` looks at pest pairs.

use pest::iterators::Pair;

use super::ast::{
    AddCommand, Command, ContextSetting, CopyMethod, DeleteShadows, ListCommand, MapCommand,
    OptionSetting, SetCommand, ShadowSelector, Span, StepSetting, Word, WriterAction,
    WriterListDetail,
};
use super::error::{SyntaxError, SyntaxErrorKind};
use super::grammar::Rule;
use super::shape;
use super::suggest::suggest;

/// Lowering of one statement. `source` is the text the pair positions refer to.
pub(crate) struct Lowering<'s> {
    pub source: &'s str,
    pub warnings: Vec<SyntaxError>,
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let span = pair.as_span();
    Span::new(span.start(), span.end())
}

/// The word as written, quotes removed: `"C:\My Files"\x.cab` -> `C:\My Files\x.cab`.
pub(crate) fn word_of(pair: Pair<'_, Rule>) -> Word {
    let span = span_of(&pair);
    let mut text = String::new();
    for segment in pair.into_inner() {
        match segment.as_rule() {
            Rule::quoted => {
                for inner in segment.into_inner() {
                    text.push_str(inner.as_str());
                }
            }
            _ => text.push_str(segment.as_str()),
        }
    }
    Word::new(text, span)
}

/// Several words read as one argument (`writer exclude System Writer`): the texts joined by one
/// space, the span from the first word to the last.
fn joined(words: Vec<Word>) -> Option<Word> {
    let first = words.first()?;
    let last = words.last()?;
    let span = Span::new(first.span.start, last.span.end);
    let text = words.iter().map(Word::as_str).collect::<Vec<_>>().join(" ");
    Some(Word::new(text, span))
}

impl<'s> Lowering<'s> {
    pub fn new(source: &'s str) -> Self {
        Self {
            source,
            warnings: Vec::new(),
        }
    }

    fn error(
        &self,
        kind: SyntaxErrorKind,
        span: Span,
        message: String,
        label: impl Into<String>,
        help: impl Into<String>,
    ) -> SyntaxError {
        SyntaxError::new(kind, self.source, span, message, label, help)
    }

    /// Lowers one `statement` pair (any of the command rules, `help_request` or `help_switch`).
    pub fn statement(&mut self, pair: Pair<'_, Rule>) -> Result<Command, SyntaxError> {
        let rule = pair.as_rule();
        let whole = span_of(&pair);
        let mut inner = pair.into_inner();
        let command = match rule {
            Rule::help_switch => Command::Help { topic: Vec::new() },
            Rule::help_request => Command::Help {
                topic: inner
                    .filter(|pair| pair.as_rule() == Rule::word)
                    .map(word_of)
                    .collect(),
            },
            Rule::set_command => Command::Set(match inner.next() {
                None => SetCommand::Show,
                Some(sub) => self.set(sub)?,
            }),
            Rule::simulate_restore => Command::SimulateRestore,
            Rule::load_metadata => Command::LoadMetadata {
                path: self.single_word(inner, whole)?,
            },
            Rule::writer_command => {
                let action = match inner.next().map(|pair| pair.as_rule()) {
                    Some(Rule::writer_exclude) => WriterAction::Exclude,
                    _ => WriterAction::Verify,
                };
                let target = joined(inner.map(word_of).collect())
                    .ok_or_else(|| self.internal(whole, "writer target"))?;
                Command::Writer { action, target }
            }
            Rule::add_command => Command::Add(match inner.next() {
                None => AddCommand::Show,
                Some(sub) => self.add(sub)?,
            }),
            Rule::create_command => Command::Create,
            Rule::exec_command => {
                let mut all = inner.map(word_of);
                let program = all
                    .next()
                    .ok_or_else(|| self.internal(whole, "exec program"))?;
                Command::Exec {
                    program,
                    arguments: all.collect(),
                }
            }
            Rule::begin_command => match inner.next().map(|pair| pair.as_rule()) {
                Some(Rule::session_restore) => Command::BeginRestore,
                _ => Command::BeginBackup,
            },
            Rule::end_command => match inner.next().map(|pair| pair.as_rule()) {
                Some(Rule::session_restore) => Command::EndRestore,
                _ => Command::EndBackup,
            },
            Rule::reset_command => Command::Reset,
            Rule::list_command => {
                let sub = inner
                    .next()
                    .ok_or_else(|| self.internal(whole, "list subject"))?;
                let list = self.list(sub)?;
                let json = inner
                    .next()
                    .is_some_and(|pair| pair.as_rule() == Rule::json_switch);
                Command::List { list, json }
            }
            Rule::delete_shadows => {
                let selector = inner
                    .next()
                    .ok_or_else(|| self.internal(whole, "selector"))?;
                Command::DeleteShadows(self.delete(selector)?)
            }
            Rule::import_command => Command::Import,
            Rule::mask_command => Command::Mask {
                shadow_set: self.single_word(inner, whole)?,
            },
            Rule::expose_command => {
                let mut all = inner.map(word_of);
                match (all.next(), all.next()) {
                    (Some(shadow), Some(target)) => Command::Expose { shadow, target },
                    _ => return Err(self.internal(whole, "expose arguments")),
                }
            }
            Rule::unexpose_command => Command::Unexpose {
                target: self.single_word(inner, whole)?,
            },
            Rule::break_command => {
                let mut writable = false;
                let mut shadow_set = None;
                for part in inner {
                    match part.as_rule() {
                        Rule::writable => writable = true,
                        _ => shadow_set = Some(word_of(part)),
                    }
                }
                let shadow_set = shadow_set.ok_or_else(|| self.internal(whole, "break set"))?;
                Command::Break {
                    writable,
                    shadow_set,
                }
            }
            Rule::revert_command => Command::Revert {
                shadow: self.single_word(inner, whole)?,
            },
            Rule::resync_command => {
                let mut seen = Seen::default();
                let (mut no_volume_check, mut revert_original_signature) = (false, false);
                for flag in inner {
                    let keyword = self.keyword_seen("resync", &mut seen, &flag)?;
                    match keyword.as_str() {
                        "novolcheck" => no_volume_check = true,
                        _ => revert_original_signature = true,
                    }
                }
                Command::Resync {
                    no_volume_check,
                    revert_original_signature,
                }
            }
            Rule::exit_command => Command::Exit,
            Rule::help_command => {
                let topic: Vec<Word> = inner.map(word_of).collect();
                if let Some(first) = topic.first() {
                    self.check_help_topic(first)?;
                }
                Command::Help { topic }
            }
            Rule::map_command => {
                let mut all = inner.map(word_of);
                match (all.next(), all.next()) {
                    (Some(drive), Some(target)) => {
                        self.check_drive(&drive, "map")?;
                        Command::Map(MapCommand::Map { drive, target })
                    }
                    _ => Command::Map(MapCommand::Show),
                }
            }
            Rule::unmap_command => {
                let drive = self.single_word(inner, whole)?;
                self.check_drive(&drive, "unmap")?;
                Command::Map(MapCommand::Unmap { drive })
            }
            Rule::attach_command => {
                let mut all = inner.map(word_of);
                match (all.next(), all.next()) {
                    (Some(volume), Some(target)) => Command::Attach { volume, target },
                    _ => return Err(self.internal(whole, "attach arguments")),
                }
            }
            Rule::detach_command => Command::Detach {
                target: self.single_word(inner, whole)?,
            },
            _ => return Err(self.internal(whole, "statement")),
        };
        Ok(command)
    }

    /// An error for a pair that does not have the shape the grammar promises. It cannot happen
    /// while grammar and lowering agree; it is reported rather than panicking.
    fn internal(&self, span: Span, what: &str) -> SyntaxError {
        self.error(
            SyntaxErrorKind::InvalidSyntax,
            span,
            format!("the parser could not read the {what} of this line"),
            "not understood",
            "this is a bug in diskshadow's parser; please report the line",
        )
    }

    fn single_word(
        &self,
        mut inner: pest::iterators::Pairs<'_, Rule>,
        whole: Span,
    ) -> Result<Word, SyntaxError> {
        inner
            .find(|pair| pair.as_rule() == Rule::word)
            .map(word_of)
            .ok_or_else(|| self.internal(whole, "argument"))
    }

    fn set(&mut self, sub: Pair<'_, Rule>) -> Result<SetCommand, SyntaxError> {
        let whole = span_of(&sub);
        let rule = sub.as_rule();
        let mut inner = sub.into_inner();
        Ok(match rule {
            Rule::set_context => {
                let value = inner
                    .next()
                    .ok_or_else(|| self.internal(whole, "context"))?;
                let no_writers = value.clone().into_inner().next().is_some();
                match value.as_rule() {
                    Rule::context_clientaccessible => {
                        SetCommand::Context(ContextSetting::ClientAccessible)
                    }
                    Rule::context_persistent => {
                        SetCommand::Context(ContextSetting::Persistent { no_writers })
                    }
                    Rule::context_volatile => {
                        SetCommand::Context(ContextSetting::Volatile { no_writers })
                    }
                    _ => {
                        self.warnings.push(
                            self.error(
                                SyntaxErrorKind::SetContextTransportable,
                                span_of(&value),
                                "`transportable` is an option, not a context; read as `set option transportable`"
                                    .to_string(),
                                "not a context",
                                "write `set option transportable` (Microsoft's import sample has this mistake)",
                            )
                            .with_command_name(Some("set")),
                        );
                        SetCommand::Option(OptionSetting {
                            transportable: true,
                            ..OptionSetting::default()
                        })
                    }
                }
            }
            Rule::set_option => SetCommand::Option(self.options(inner)?),
            Rule::set_verbose => SetCommand::Verbose(on_off(inner.next())),
            Rule::set_trace => SetCommand::Trace(on_off(inner.next())),
            Rule::set_step => {
                let on = on_off(inner.next());
                let hold = inner
                    .next()
                    .is_some_and(|pair| pair.as_rule() == Rule::step_hold);
                SetCommand::Step(StepSetting { on, hold })
            }
            Rule::set_metadata => SetCommand::Metadata(self.single_word(inner, whole)?),
            _ => return Err(self.internal(whole, "set subcommand")),
        })
    }

    /// `set option` flags: each at most once; `differential` excludes `plex`, `noautorecover`
    /// excludes `rollbackrecover` and `txfrecover`. The error points at the later word.
    fn options(
        &self,
        flags: pest::iterators::Pairs<'_, Rule>,
    ) -> Result<OptionSetting, SyntaxError> {
        const CONFLICTS: &[(&str, &str)] = &[
            ("differential", "plex"),
            ("noautorecover", "rollbackrecover"),
            ("noautorecover", "txfrecover"),
        ];
        let mut seen = Seen::default();
        let mut setting = OptionSetting::default();
        for flag in flags {
            let keyword = self.keyword_seen("set", &mut seen, &flag)?;
            let span = span_of(&flag);
            for (first, second) in CONFLICTS {
                let other = if keyword == *first {
                    second
                } else if keyword == *second {
                    first
                } else {
                    continue;
                };
                if let Some(earlier) = seen.span_of(other) {
                    return Err(self
                        .error(
                            SyntaxErrorKind::ConflictingOptions,
                            span,
                            format!("`{keyword}` cannot be combined with `{other}`"),
                            format!("conflicts with `{other}`"),
                            format!("keep only one of `{other}` and `{keyword}`"),
                        )
                        .with_related(earlier, format!("`{other}` given here"))
                        .with_command_name(Some("set")));
                }
            }
            match keyword.as_str() {
                "differential" => setting.copy_method = Some(CopyMethod::Differential),
                "plex" => setting.copy_method = Some(CopyMethod::Plex),
                "transportable" => setting.transportable = true,
                "rollbackrecover" => setting.rollback_recover = true,
                "txfrecover" => setting.txf_recover = true,
                _ => setting.no_auto_recover = true,
            }
        }
        Ok(setting)
    }

    /// Records a flag or clause keyword; a repeat is an error pointing at the repeat.
    fn keyword_seen(
        &self,
        command: &'static str,
        seen: &mut Seen,
        pair: &Pair<'_, Rule>,
    ) -> Result<String, SyntaxError> {
        let keyword_text = pair.as_str().split_whitespace().next().unwrap_or_default();
        let keyword = keyword_text.to_ascii_lowercase();
        let span = Span::new(
            pair.as_span().start(),
            pair.as_span().start() + keyword_text.len(),
        );
        if let Some(earlier) = seen.span_of(&keyword) {
            return Err(self
                .error(
                    SyntaxErrorKind::DuplicateKeyword,
                    span,
                    format!("`{keyword}` is given twice"),
                    "repeated here",
                    format!("remove the second `{keyword}`"),
                )
                .with_related(earlier, "first given here")
                .with_command_name(Some(command)));
        }
        seen.0.push((keyword.clone(), span));
        Ok(keyword)
    }

    fn add(&mut self, sub: Pair<'_, Rule>) -> Result<AddCommand, SyntaxError> {
        let whole = span_of(&sub);
        let rule = sub.as_rule();
        let mut inner = sub.into_inner();
        Ok(match rule {
            Rule::add_volume => {
                let volume = inner
                    .next()
                    .map(word_of)
                    .ok_or_else(|| self.internal(whole, "volume"))?;
                let mut seen = Seen::default();
                let (mut alias, mut provider) = (None, None);
                for clause in inner {
                    self.keyword_seen("add", &mut seen, &clause)?;
                    let is_alias = clause.as_rule() == Rule::volume_alias;
                    let value = clause.into_inner().next().map(word_of);
                    if is_alias {
                        alias = value;
                    } else {
                        provider = value;
                    }
                }
                AddCommand::Volume {
                    volume,
                    alias,
                    provider,
                }
            }
            Rule::add_alias => {
                let mut all = inner.map(word_of);
                match (all.next(), all.next()) {
                    (Some(name), Some(value)) => AddCommand::Alias { name, value },
                    _ => return Err(self.internal(whole, "alias")),
                }
            }
            Rule::add_shadow => {
                let mut all = inner.map(word_of);
                let shadow = all.next().ok_or_else(|| self.internal(whole, "shadow"))?;
                AddCommand::Shadow {
                    shadow,
                    target: all.next(),
                }
            }
            _ => return Err(self.internal(whole, "add subcommand")),
        })
    }

    fn list(&self, sub: Pair<'_, Rule>) -> Result<ListCommand, SyntaxError> {
        let whole = span_of(&sub);
        let rule = sub.as_rule();
        let mut inner = sub.into_inner();
        Ok(match rule {
            Rule::list_writers => {
                ListCommand::Writers(match inner.next().map(|pair| pair.as_rule()) {
                    Some(Rule::writers_detailed) => WriterListDetail::Detailed,
                    Some(Rule::writers_status) => WriterListDetail::Status,
                    _ => WriterListDetail::Metadata,
                })
            }
            Rule::list_providers => ListCommand::Providers,
            Rule::list_shadows => {
                let selector = inner
                    .next()
                    .ok_or_else(|| self.internal(whole, "selector"))?;
                let selector_rule = selector.as_rule();
                let argument = selector.into_inner().next().map(word_of);
                match (selector_rule, argument) {
                    (Rule::select_all, _) => ListCommand::Shadows(ShadowSelector::All),
                    (Rule::select_set, Some(id)) => ListCommand::Shadows(ShadowSelector::Set(id)),
                    (Rule::select_id, Some(id)) => ListCommand::Shadows(ShadowSelector::Id(id)),
                    _ => return Err(self.internal(whole, "selector")),
                }
            }
            _ => return Err(self.internal(whole, "list subject")),
        })
    }

    fn delete(&self, selector: Pair<'_, Rule>) -> Result<DeleteShadows, SyntaxError> {
        let whole = span_of(&selector);
        let rule = selector.as_rule();
        let argument = selector.into_inner().next().map(word_of);
        Ok(match (rule, argument) {
            (Rule::select_all, _) => DeleteShadows::All,
            (Rule::select_volume, Some(word)) => DeleteShadows::Volume(word),
            (Rule::select_oldest, Some(word)) => DeleteShadows::Oldest(word),
            (Rule::select_set, Some(word)) => DeleteShadows::Set(word),
            (Rule::select_id, Some(word)) => DeleteShadows::Id(word),
            (Rule::select_exposed, Some(word)) => DeleteShadows::Exposed(word),
            _ => return Err(self.internal(whole, "selector")),
        })
    }

    fn check_help_topic(&self, first: &Word) -> Result<(), SyntaxError> {
        if shape::find_command(&first.text).is_some() || first.text == shape::HELP_SWITCH {
            return Ok(());
        }
        let words: Vec<&'static str> = shape::COMMAND_SHAPES
            .iter()
            .map(|shape| shape.word)
            .collect();
        let suggestion = suggest(&first.text, &words);
        let help = match suggestion {
            Some(word) => format!("did you mean `help {word}`?"),
            None => "type `help` alone to list every command".to_string(),
        };
        let error = self
            .error(
                SyntaxErrorKind::UnknownHelpTopic,
                first.span,
                format!("there is no command `{}` to give help on", first.text),
                "not a command",
                help,
            )
            .with_suggestion(suggestion)
            .with_command_name(Some("help"));
        Err(error)
    }

    /// A drive letter as [`crate::drive_letter::parse`] reads it; `%NAME%` references are
    /// checked once expanded.
    fn check_drive(&self, drive: &Word, command: &'static str) -> Result<(), SyntaxError> {
        if crate::drive_letter::parse(&drive.text).is_some() {
            return Ok(());
        }
        let error = self
            .error(
                SyntaxErrorKind::InvalidDriveLetter,
                drive.span,
                format!("`{}` is not a drive letter", drive.text),
                "expected a letter and a colon",
                format!("write a drive letter and a colon, e.g. `{command} p:`"),
            )
            .with_command_name(Some(command));
        Err(error)
    }
}

fn on_off(pair: Option<Pair<'_, Rule>>) -> bool {
    matches!(pair.map(|pair| pair.as_rule()), Some(Rule::switch_on))
}

/// Keywords seen so far at one point of a line, with where each was first written.
#[derive(Default)]
struct Seen(Vec<(String, Span)>);

impl Seen {
    fn span_of(&self, keyword: &str) -> Option<Span> {
        self.0
            .iter()
            .find(|(seen, _)| seen == keyword)
            .map(|(_, span)| *span)
    }
}
