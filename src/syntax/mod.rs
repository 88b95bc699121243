//! The DiskShadow language: pest grammar (`grammar/diskshadow.pest`) lowered to a typed AST
//! with spans, and miette diagnostics. Pure: no I/O.
//!
//! - [`parse_script`] parses a whole script and collects every error and warning; a line with
//!   an error yields `command: None` and parsing goes on with the next line.
//! - [`parse_line`] parses one line, already `%NAME%`-expanded, just before it runs.
//! - [`commands`] is the registry of every command's syntax and help; [`completions`] lists the
//!   keywords that may come next on a line being typed.
//!
//! **Invariant:** the grammar's `statement` rule and the command table in `shape.rs` accept the
//! same lines; the table only explains rejections and drives completion.

pub mod ast;
pub mod commands;
mod diagnose;
mod error;
mod grammar;
mod lower;
mod shape;
mod suggest;

use pest::iterators::Pair;
use pest::Parser;

use ast::{Command, Script, ScriptLine, Span};
pub use error::{SyntaxError, SyntaxErrorKind};
use grammar::{DiskShadowGrammar, Rule};

/// Why the bytes of a script are not text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScriptDecodeError(pub String);

/// A script's bytes as text: UTF-8 with or without a BOM, or UTF-16 little- or big-endian
/// with its BOM (what Notepad saves as "Unicode"). The BOM is dropped, so line and column
/// numbers count from the first character after it.
pub fn decode_script(bytes: &[u8]) -> Result<String, ScriptDecodeError> {
    let utf16 = |rest: &[u8], from: fn([u8; 2]) -> u16, name: &str| {
        if rest.len() % 2 != 0 {
            return Err(ScriptDecodeError(format!(
                "the script starts with a {name} byte order mark but has an odd number of bytes"
            )));
        }
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|pair| from([pair[0], pair[1]]))
            .collect();
        let mut text = String::with_capacity(units.len());
        let mut unit = 0;
        for decoded in char::decode_utf16(units.iter().copied()) {
            let character = decoded.map_err(|_| {
                ScriptDecodeError(format!(
                    "the script is not valid {name} text: a lone surrogate at byte {}",
                    2 + 2 * unit
                ))
            })?;
            unit += character.len_utf16();
            text.push(character);
        }
        Ok(text)
    };
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, u16::from_le_bytes, "UTF-16LE");
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, u16::from_be_bytes, "UTF-16BE");
    }
    let (offset, rest) = match bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        Some(rest) => (3, rest),
        None => (0, bytes),
    };
    std::str::from_utf8(rest).map(str::to_string).map_err(|error| {
        ScriptDecodeError(format!(
            "the script is not UTF-8 text (byte {} is not valid); save it as UTF-8 or UTF-16 with a byte order mark",
            offset + error.valid_up_to()
        ))
    })
}

/// Windows' DiskShadow reads a script as if every line ended in CR LF and drops the character
/// before the line feed; in a script with LF-only line ends that is the line's last real
/// character, so such scripts are written with a sacrificial character at each line's end.
/// This does the same (`--lf-chop`, `DISKSHADOW_LF_CHOP=1`): when the script has no CR LF at
/// all, each line ended by a line feed loses its last character. A last line with no line feed
/// has no line end to mistake and is kept whole; a script with CR LF ends is returned as it is.
///
/// ```
/// use diskshadow::syntax::chop_lf_only_lines;
/// assert_eq!(chop_lf_only_lines("set verbose on.\n\ncreate.\nexit"), "set verbose on\n\ncreate\nexit");
/// assert_eq!(chop_lf_only_lines("create\r\n"), "create\r\n");
/// ```
pub fn chop_lf_only_lines(source: &str) -> String {
    if source.contains("\r\n") {
        return source.to_string();
    }
    let mut lines: Vec<&str> = source.split('\n').collect();
    // What follows the last line feed has no line end of its own.
    let last = lines.pop().unwrap_or_default();
    let mut chopped = String::with_capacity(source.len());
    for line in lines {
        let mut characters = line.chars();
        characters.next_back();
        chopped.push_str(characters.as_str());
        chopped.push('\n');
    }
    chopped.push_str(last);
    chopped
}

/// The result of [`parse_script`]: every line, every error, every warning.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedScript {
    pub script: Script,
    /// In source order. Empty when the whole script is valid.
    pub errors: Vec<SyntaxError>,
    /// Problems that do not stop the script: accepted non-standard forms
    /// (`dsh::parse::set_context_transportable`) and lines that can only be checked once their
    /// `%NAME%` references are expanded (`dsh::parse::unexpanded_reference`).
    pub warnings: Vec<SyntaxError>,
}

impl ParsedScript {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Parses a whole script. Never panics; spans are byte offsets into `source`.
pub fn parse_script(source: &str) -> ParsedScript {
    let mut parsed = ParsedScript {
        script: Script { lines: Vec::new() },
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let script = match DiskShadowGrammar::parse(Rule::script, source) {
        Ok(mut pairs) => pairs.next(),
        Err(_) => None,
    };
    let Some(script) = script else {
        // The fallback rule `invalid_line` matches any line, so this cannot happen; should it,
        // the script is reported as unreadable rather than silently accepted.
        parsed.errors.push(SyntaxError::new(
            SyntaxErrorKind::InvalidSyntax,
            source,
            Span::new(0, 0),
            "this script could not be read",
            "not understood",
            "this is a bug in diskshadow's parser; please report the script",
        ));
        return parsed;
    };
    let lines = script
        .into_inner()
        .filter(|pair| pair.as_rule() == Rule::line);
    for (index, line) in lines.enumerate() {
        let outcome = lower_line(source, line);
        parsed.warnings.extend(outcome.warnings);
        let mut command = outcome.command;
        if let Some(error) = outcome.error {
            // A `%NAME%` reference where a command or keyword must be can only be checked after
            // expansion, when the line runs: DiskShadow expands a line before reading it.
            let word = source
                .get(error.span().start..error.span().end)
                .unwrap_or_default();
            if is_deferrable(&error) && diagnose::contains_reference(word) {
                parsed.warnings.push(error.into_unexpanded_reference(word));
            } else {
                parsed.errors.push(error);
            }
            command = None;
        }
        parsed.script.lines.push(ScriptLine {
            number: index + 1,
            text: outcome.text.to_string(),
            span: outcome.span,
            command,
        });
    }
    parsed
}

/// Parses one line that is about to run (already `%NAME%`-expanded). `Ok(None)` for a blank or
/// comment line. Spans are byte offsets into `text`. A single trailing line ending is allowed.
pub fn parse_line(text: &str) -> Result<Option<Command>, SyntaxError> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    if let Some(position) = line.find('\n') {
        return Err(SyntaxError::new(
            SyntaxErrorKind::MultipleLines,
            text,
            Span::new(position, position + 1),
            "a single command line cannot hold a line break",
            "line break",
            "give one line at a time",
        ));
    }
    let pair = DiskShadowGrammar::parse(Rule::single_line, line)
        .ok()
        .and_then(|mut pairs| pairs.next())
        .and_then(|single| {
            single
                .into_inner()
                .find(|pair| pair.as_rule() == Rule::line)
        });
    let Some(pair) = pair else {
        return Err(SyntaxError::new(
            SyntaxErrorKind::InvalidSyntax,
            text,
            Span::new(0, line.len()),
            "this line could not be read",
            "not understood",
            "this is a bug in diskshadow's parser; please report the line",
        ));
    };
    let outcome = lower_line(line, pair);
    match outcome.error {
        Some(error) => Err(error),
        None => Ok(outcome.command),
    }
}

/// Errors that a `%NAME%` reference on the offending word may explain away.
fn is_deferrable(error: &SyntaxError) -> bool {
    matches!(
        error.kind(),
        SyntaxErrorKind::UnknownCommand
            | SyntaxErrorKind::UnknownKeyword
            | SyntaxErrorKind::UnknownHelpTopic
            | SyntaxErrorKind::InvalidDriveLetter
    )
}

struct LineOutcome<'s> {
    text: &'s str,
    span: Span,
    command: Option<Command>,
    error: Option<SyntaxError>,
    warnings: Vec<SyntaxError>,
}

/// Lowers one `line` pair of `source`.
fn lower_line<'s>(source: &'s str, line: Pair<'s, Rule>) -> LineOutcome<'s> {
    let line_span = line.as_span();
    let mut outcome = LineOutcome {
        text: "",
        span: Span::new(line_span.start(), line_span.start()),
        command: None,
        error: None,
        warnings: Vec::new(),
    };
    let Some(content) = line.into_inner().next() else {
        return outcome;
    };
    match content.as_rule() {
        Rule::comment_line => {
            // The comment runs to the line feed; a CRLF's carriage return is not part of it.
            outcome.text = content.as_str().trim_end();
            let start = content.as_span().start();
            outcome.span = Span::new(start, start + outcome.text.len());
        }
        Rule::command_line => {
            let Some(statement) = content.into_inner().next() else {
                return outcome;
            };
            outcome.text = statement.as_str();
            outcome.span = Span::new(statement.as_span().start(), statement.as_span().end());
            let mut lowering = lower::Lowering::new(source);
            match lowering.statement(statement) {
                Ok(command) => outcome.command = Some(command),
                Err(error) => outcome.error = Some(error),
            }
            outcome.warnings = lowering.warnings;
        }
        _ => {
            let start = content.as_span().start();
            let raw = content.as_str();
            let trimmed_end = start + raw.trim_end().len();
            outcome.span = match diagnose::tokenize(raw, start) {
                Ok(tokens) => match (tokens.first(), tokens.last()) {
                    (Some(first), Some(last)) => Span::new(first.span.start, last.span.end),
                    _ => Span::new(start, trimmed_end),
                },
                Err(_) => Span::new(start, trimmed_end),
            };
            outcome.text = &source[outcome.span.start..outcome.span.end];
            outcome.error = Some(diagnose::diagnose_line(source, raw, start));
        }
    }
    outcome
}

/// The keywords that may come next on a line being typed, lowercase and sorted as the command
/// table lists them. `line_prefix` is the text before the cursor; when it does not end in
/// whitespace its last word is a partial word that candidates must start with
/// (case-insensitively). Arguments (paths, IDs) are never offered.
///
/// ```
/// use diskshadow::syntax::completions;
/// assert_eq!(completions("list "), ["writers", "shadows", "providers"]);
/// assert_eq!(completions("li"), ["list"]);
/// ```
pub fn completions(line_prefix: &str) -> Vec<String> {
    match completion_cursor(line_prefix) {
        Some(position) => position.keywords,
        None => Vec::new(),
    }
}

/// The name of the argument expected at the end of `line_prefix` (`"add volume "` ->
/// `<volume>`), for hints while typing. `None` when a keyword or nothing may come next.
pub fn expected_argument(line_prefix: &str) -> Option<&'static str> {
    completion_cursor(line_prefix).and_then(|position| position.argument)
}

struct CompletionPosition {
    keywords: Vec<String>,
    argument: Option<&'static str>,
}

fn completion_cursor(line_prefix: &str) -> Option<CompletionPosition> {
    let tokens = diagnose::tokenize(line_prefix, 0).ok()?;
    if line_prefix.trim_start().starts_with('#') {
        return None;
    }
    let ends_in_space = line_prefix.chars().last().is_none_or(char::is_whitespace);
    // A prefix ending in a comment offers nothing.
    if let Some(last) = tokens.last() {
        if !line_prefix[last.span.end..].trim().is_empty() {
            return None;
        }
    }
    let (complete, partial) = match tokens.split_last() {
        Some((last, rest)) if !ends_in_space => (rest, last.raw),
        _ => (tokens.as_slice(), ""),
    };
    let command_words = || {
        shape::COMMAND_SHAPES
            .iter()
            .map(|shape| shape.word)
            .collect::<Vec<_>>()
    };
    let mut argument = None;
    let candidates: Vec<&'static str> = match complete.split_first() {
        None => command_words(),
        Some((first, rest)) => {
            let command = shape::find_command(first.raw)?;
            if command.word == "help" {
                if rest.is_empty() {
                    command_words()
                } else {
                    Vec::new()
                }
            } else {
                let mut cursor = shape::Cursor::new(command);
                for token in rest {
                    cursor.advance(token.raw).ok()?;
                }
                argument = cursor.next_argument();
                cursor.next_keywords()
            }
        }
    };
    let partial = partial.to_ascii_lowercase();
    let keywords = candidates
        .into_iter()
        .filter(|candidate| candidate.starts_with(&partial))
        .map(str::to_string)
        .collect();
    Some(CompletionPosition { keywords, argument })
}

#[cfg(test)]
mod tests;
