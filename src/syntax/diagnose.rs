//! Explains a line the grammar rejected: splits it into words with the grammar's own `word_list`
//! rule, walks the command table (`shape.rs`) and names the first word that does not fit.

use pest::Parser;

use super::ast::Span;
use super::commands;
use super::error::{SyntaxError, SyntaxErrorKind};
use super::grammar::{DiskShadowGrammar, Rule};
use super::lower::word_of;
use super::shape::{self, CommandShape, Cursor, Mismatch};
use super::suggest::suggest;

/// One word of a line.
#[derive(Debug, Clone)]
pub(crate) struct Token<'s> {
    /// As written, quotes included: only unquoted text can be a keyword.
    pub raw: &'s str,
    /// Quotes removed.
    pub text: String,
    /// Absolute span in the source.
    pub span: Span,
}

/// Why a line cannot be lexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LexError {
    /// A `"` at this absolute offset is never closed.
    UnterminatedQuote(usize),
    /// The line holds a line break.
    LineBreak(usize),
}

/// Splits `line` (which starts at absolute offset `offset`) into words, dropping a trailing
/// comment. A comment line yields no words.
pub(crate) fn tokenize(line: &str, offset: usize) -> Result<Vec<Token<'_>>, LexError> {
    if line.trim_start().starts_with('#') {
        return Ok(Vec::new());
    }
    if let Some(position) = line.find('\n') {
        return Err(LexError::LineBreak(offset + position));
    }
    let pairs = match DiskShadowGrammar::parse(Rule::word_list, line) {
        Ok(pairs) => pairs,
        Err(_) => return Err(LexError::UnterminatedQuote(offset + unclosed_quote(line))),
    };
    let mut tokens = Vec::new();
    for pair in pairs.flatten().filter(|pair| pair.as_rule() == Rule::word) {
        let raw = pair.as_str();
        let word = word_of(pair);
        tokens.push(Token {
            raw,
            text: word.text,
            span: Span::new(offset + word.span.start, offset + word.span.end),
        });
    }
    Ok(tokens)
}

/// The offset of the first `"` that is never closed. Only called on lines `word_list` rejects,
/// whose only possible fault is such a quote.
fn unclosed_quote(line: &str) -> usize {
    let mut open: Option<usize> = None;
    let mut at_word_start = true;
    for (index, character) in line.char_indices() {
        match open {
            Some(_) if character == '"' => open = None,
            Some(_) => {}
            None if character == '"' => open = Some(index),
            None if at_word_start && character == '#' => break,
            None => {}
        }
        at_word_start = open.is_none() && character.is_whitespace();
    }
    open.unwrap_or(0)
}

/// What is wrong with a list of words, in terms of the command table.
#[derive(Debug, Clone)]
pub(crate) enum Problem {
    /// The first word is no command.
    UnknownCommand,
    /// Word `index` (or the end of the line when `index` is the word count) does not fit.
    At {
        shape: &'static CommandShape,
        index: usize,
        mismatch: Mismatch,
        /// The word before `index` was read as an argument.
        after_argument: bool,
    },
}

/// The shape of `/?` alone: no word may follow.
static HELP_SWITCH_SHAPE: CommandShape = CommandShape {
    word: "/?",
    name: "help",
    node: shape::Node::End,
};

/// Checks the words of a line against the command table, with the grammar's semantics.
pub(crate) fn check_words(raw: &[&str]) -> Result<(), Problem> {
    let Some(first) = raw.first() else {
        return Ok(());
    };
    let command = if *first == shape::HELP_SWITCH {
        &HELP_SWITCH_SHAPE
    } else {
        shape::find_command(first).ok_or(Problem::UnknownCommand)?
    };
    if is_help_request(raw) {
        return Ok(());
    }
    let mut cursor = Cursor::new(command);
    let mut after_argument = false;
    for (index, word) in raw.iter().enumerate().skip(1) {
        let as_argument = cursor.expects_argument();
        cursor.advance(word).map_err(|mismatch| Problem::At {
            shape: command,
            index,
            mismatch,
            after_argument,
        })?;
        after_argument = as_argument;
    }
    cursor.finish().map_err(|mismatch| Problem::At {
        shape: command,
        index: raw.len(),
        mismatch,
        after_argument,
    })
}

/// `<command> [words…] /?`, as the grammar's `help_request`: the first word is a command, `/?`
/// is the last word and only there, and `exec <file> … /?` is an `exec` instead.
fn is_help_request(raw: &[&str]) -> bool {
    let count = raw.len();
    count >= 2
        && shape::find_command(raw[0]).is_some()
        && raw[count - 1] == shape::HELP_SWITCH
        && !raw[1..count - 1].contains(&shape::HELP_SWITCH)
        && !(raw[0].eq_ignore_ascii_case("exec") && count >= 3)
}

/// The diagnostic for an invalid line. `line` is the line's text (no line ending) starting at
/// absolute offset `offset` in `source`.
pub(crate) fn diagnose_line(source: &str, line: &str, offset: usize) -> SyntaxError {
    let tokens = match tokenize(line, offset) {
        Ok(tokens) => tokens,
        Err(LexError::UnterminatedQuote(position)) => {
            let end = offset + line.trim_end().len();
            return SyntaxError::new(
                SyntaxErrorKind::UnterminatedQuote,
                source,
                Span::new(position, end.max(position + 1)),
                "this quoted argument is never closed",
                "the quote opened here runs to the end of the line",
                "add a closing `\"` where the argument ends",
            )
            .with_command_name(command_name_of(line));
        }
        Err(LexError::LineBreak(position)) => {
            return SyntaxError::new(
                SyntaxErrorKind::MultipleLines,
                source,
                Span::new(position, position + 1),
                "a single command line cannot hold a line break",
                "line break",
                "give one line at a time",
            );
        }
    };
    let raw: Vec<&str> = tokens.iter().map(|token| token.raw).collect();
    match check_words(&raw) {
        Ok(()) => {
            let span = match (tokens.first(), tokens.last()) {
                (Some(first), Some(last)) => Span::new(first.span.start, last.span.end),
                _ => Span::new(offset, offset + line.len()),
            };
            SyntaxError::new(
                SyntaxErrorKind::InvalidSyntax,
                source,
                span,
                "this line could not be parsed",
                "not understood",
                "this is a bug in diskshadow's parser; please report the line",
            )
            .with_command_name(command_name_of(line))
        }
        Err(Problem::UnknownCommand) => unknown_command(source, &tokens[0]),
        Err(Problem::At {
            shape,
            index,
            mismatch,
            after_argument,
        }) => explain(source, &tokens, shape, index, mismatch, after_argument),
    }
}

fn command_name_of(line: &str) -> Option<&'static str> {
    let first = line.split_whitespace().next()?;
    shape::find_command(first).map(|shape| shape.name)
}

fn unknown_command(source: &str, token: &Token<'_>) -> SyntaxError {
    let words: Vec<&'static str> = shape::COMMAND_SHAPES
        .iter()
        .map(|shape| shape.word)
        .collect();
    let suggestion = suggest(token.raw, &words);
    let help = match suggestion {
        Some(word) => format!("did you mean `{word}`?"),
        None => "type `help` to list every command".to_string(),
    };
    SyntaxError::new(
        SyntaxErrorKind::UnknownCommand,
        source,
        token.span,
        format!("unknown command `{}`", token.text),
        "not a DiskShadow command",
        help,
    )
    .with_suggestion(suggestion)
}

fn explain(
    source: &str,
    tokens: &[Token<'_>],
    command: &'static CommandShape,
    index: usize,
    mismatch: Mismatch,
    after_argument: bool,
) -> SyntaxError {
    let typed: Vec<&str> = tokens[..index.min(tokens.len())]
        .iter()
        .map(|token| token.raw)
        .collect();
    let usage = usage_for(command.name, &typed);
    let previous = tokens[..index]
        .last()
        .map_or(String::new(), |token| token.raw.to_lowercase());
    let end_of_line = tokens.last().map_or(0, |token| token.span.end);
    let error = match mismatch {
        Mismatch::UnknownKeyword { expected, may_end } => {
            let token = &tokens[index];
            let suggestion = suggest(token.raw, &expected);
            if suggestion.is_none() && may_end {
                unexpected(source, tokens, index, after_argument, usage)
            } else {
                let help = match suggestion {
                    Some(keyword) => format!("did you mean `{keyword}`?"),
                    None => format!("use {}", one_of(&expected)),
                };
                SyntaxError::new(
                    SyntaxErrorKind::UnknownKeyword,
                    source,
                    token.span,
                    format!(
                        "`{}` is not a keyword that can follow `{previous}`",
                        token.text
                    ),
                    format!("expected {}", one_of(&expected)),
                    help,
                )
                .with_suggestion(suggestion)
            }
        }
        Mismatch::Unexpected => unexpected(source, tokens, index, after_argument, usage),
        Mismatch::MissingKeyword { expected } => SyntaxError::new(
            SyntaxErrorKind::MissingArgument,
            source,
            Span::new(end_of_line, end_of_line),
            format!("`{previous}` must be followed by {}", one_of(&expected)),
            format!("expected {} here", one_of(&expected)),
            usage,
        ),
        Mismatch::MissingArgument { name } => SyntaxError::new(
            SyntaxErrorKind::MissingArgument,
            source,
            Span::new(end_of_line, end_of_line),
            format!("`{}` is missing its {name} argument", command.name),
            format!("{name} expected here"),
            usage,
        ),
    };
    error.with_command_name(Some(command.name))
}

fn unexpected(
    source: &str,
    tokens: &[Token<'_>],
    index: usize,
    after_argument: bool,
    usage: String,
) -> SyntaxError {
    let span = Span::new(tokens[index].span.start, tokens[tokens.len() - 1].span.end);
    let extra = &source[span.start..span.end];
    let help = if after_argument {
        "put an argument that contains spaces in double quotes, e.g. \"C:\\My Files\\meta.cab\""
            .to_string()
    } else {
        usage
    };
    SyntaxError::new(
        SyntaxErrorKind::UnexpectedArgument,
        source,
        span,
        format!("unexpected `{extra}` at the end of the command"),
        "not expected here",
        help,
    )
}

/// `usage: <the syntax line that best matches what was typed>`; when several lines match
/// equally (`list` alone), a pointer to the command's help, which shows every form.
fn usage_for(name: &str, typed: &[&str]) -> String {
    let Some(spec) = commands::find(name) else {
        return "type `help` to list every command".to_string();
    };
    let typed_lower: Vec<String> = typed.iter().map(|word| word.to_lowercase()).collect();
    let matching = |line: &str| {
        line.to_lowercase()
            .split_whitespace()
            .zip(&typed_lower)
            .take_while(|(syntax_word, typed_word)| syntax_word == typed_word)
            .count()
    };
    let best = spec.syntax.lines().map(matching).max().unwrap_or(0);
    let candidates: Vec<&str> = spec
        .syntax
        .lines()
        .filter(|line| matching(line) == best)
        .collect();
    match candidates.as_slice() {
        [only] => format!("usage: {}", only.trim()),
        _ => format!("`help {name}` shows every form of `{name}`"),
    }
}

/// "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
fn one_of(keywords: &[&str]) -> String {
    let quoted: Vec<String> = keywords
        .iter()
        .map(|keyword| format!("`{keyword}`"))
        .collect();
    match quoted.as_slice() {
        [] => "nothing more".to_string(),
        [only] => only.clone(),
        [first, second] => format!("{first} or {second}"),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

/// Whether `text` holds a `%NAME%` reference, expanded only when the line runs.
pub(crate) fn contains_reference(text: &str) -> bool {
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        match after.find('%') {
            Some(0) => rest = after,
            Some(_) => return true,
            None => return false,
        }
    }
    false
}
