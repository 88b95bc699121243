//! Syntax diagnostics: one [`SyntaxError`] per problem, each with a stable code, a label on the
//! exact offending text and one line of help that gives a way out.

use std::fmt;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

use super::ast::Span;

/// What kind of problem a [`SyntaxError`] reports. Each kind has a stable code
/// ([`SyntaxErrorKind::code`]) that scripts, tests and documentation may rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyntaxErrorKind {
    /// `dsh::parse::unknown_command`: the first word of the line is not a command.
    UnknownCommand,
    /// `dsh::parse::unknown_keyword`: a word where one of a fixed set of keywords must be.
    UnknownKeyword,
    /// `dsh::parse::missing_argument`: the line ends before a required keyword or argument.
    MissingArgument,
    /// `dsh::parse::unexpected_argument`: a word after the command is already complete.
    UnexpectedArgument,
    /// `dsh::parse::conflicting_options`: two `set option` flags that exclude each other.
    ConflictingOptions,
    /// `dsh::parse::duplicate_keyword`: the same flag or clause given twice.
    DuplicateKeyword,
    /// `dsh::parse::unterminated_quote`: a `"` with no closing `"` on the same line.
    UnterminatedQuote,
    /// `dsh::parse::unknown_help_topic`: `help <word>` where the word names no command.
    UnknownHelpTopic,
    /// `dsh::parse::invalid_drive_letter`: `map`/`unmap` given something other than `X:`.
    InvalidDriveLetter,
    /// `dsh::parse::multiple_lines`: [`crate::syntax::parse_line`] was given a line break.
    MultipleLines,
    /// `dsh::parse::invalid_syntax`: the grammar rejected a line for a reason the command table
    /// cannot name. Seeing it is a bug: the grammar and `shape.rs` disagree.
    InvalidSyntax,
    /// Warning `dsh::parse::set_context_transportable`: `set context transportable`, written by
    /// Microsoft's `import` sample, accepted as `set option transportable`.
    SetContextTransportable,
    /// Warning `dsh::parse::unexpanded_reference`: a `%NAME%` reference stands where a keyword
    /// or a command must be; the line can only be checked once the reference is expanded.
    UnexpandedReference,
}

impl SyntaxErrorKind {
    /// The stable diagnostic code.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownCommand => "dsh::parse::unknown_command",
            Self::UnknownKeyword => "dsh::parse::unknown_keyword",
            Self::MissingArgument => "dsh::parse::missing_argument",
            Self::UnexpectedArgument => "dsh::parse::unexpected_argument",
            Self::ConflictingOptions => "dsh::parse::conflicting_options",
            Self::DuplicateKeyword => "dsh::parse::duplicate_keyword",
            Self::UnterminatedQuote => "dsh::parse::unterminated_quote",
            Self::UnknownHelpTopic => "dsh::parse::unknown_help_topic",
            Self::InvalidDriveLetter => "dsh::parse::invalid_drive_letter",
            Self::MultipleLines => "dsh::parse::multiple_lines",
            Self::InvalidSyntax => "dsh::parse::invalid_syntax",
            Self::SetContextTransportable => "dsh::parse::set_context_transportable",
            Self::UnexpandedReference => "dsh::parse::unexpanded_reference",
        }
    }

    /// Whether the diagnostic is a warning (the line still yields a command or is merely
    /// unchecked) rather than an error.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Self::SetContextTransportable | Self::UnexpandedReference
        )
    }
}

/// One syntax problem in a script or a line.
///
/// Spans are byte offsets into the text that was parsed (the whole script for
/// [`crate::syntax::parse_script`], the line for [`crate::syntax::parse_line`]); `line` and
/// `column` are 1-based, the column counted in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    // Boxed so that `Result<_, SyntaxError>` stays small on the success path.
    details: Box<ErrorDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorDetails {
    kind: SyntaxErrorKind,
    message: String,
    span: Span,
    label: String,
    related: Option<(Span, String)>,
    help: String,
    suggestion: Option<&'static str>,
    command_name: Option<&'static str>,
    line: usize,
    column: usize,
}

impl SyntaxError {
    /// Builds an error whose span is relative to `source`; computes line and column from it.
    pub(crate) fn new(
        kind: SyntaxErrorKind,
        source: &str,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        let (line, column) = line_and_column(source, span.start);
        let details = ErrorDetails {
            kind,
            message: message.into(),
            span,
            label: label.into(),
            related: None,
            help: help.into(),
            suggestion: None,
            command_name: None,
            line,
            column,
        };
        Self {
            details: Box::new(details),
        }
    }

    pub(crate) fn with_related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.details.related = Some((span, label.into()));
        self
    }

    pub(crate) fn with_suggestion(mut self, suggestion: Option<&'static str>) -> Self {
        self.details.suggestion = suggestion;
        self
    }

    pub(crate) fn with_command_name(mut self, name: Option<&'static str>) -> Self {
        self.details.command_name = name;
        self
    }

    /// Turns an error on `word`, which holds a `%NAME%` reference, into an
    /// `unexpanded_reference` warning: the word may be valid once expanded, when the line runs.
    pub(crate) fn into_unexpanded_reference(mut self, word: &str) -> Self {
        let details = &mut self.details;
        details.message = format!(
            "`{word}` is not a {}; it is checked again once expanded",
            details.expected_noun()
        );
        details.label = "expanded when the line runs".to_string();
        details.help =
            "if the line fails when it runs, check what the reference expands to".to_string();
        details.suggestion = None;
        details.related = None;
        details.kind = SyntaxErrorKind::UnexpandedReference;
        self
    }

    pub fn kind(&self) -> SyntaxErrorKind {
        self.details.kind
    }

    /// The stable code, e.g. `dsh::parse::unknown_command`.
    pub fn code_str(&self) -> &'static str {
        self.details.kind.code()
    }

    /// The offending text (empty, just after the last word, when something is missing).
    pub fn span(&self) -> Span {
        self.details.span
    }

    /// 1-based line of the span's start.
    pub fn line(&self) -> usize {
        self.details.line
    }

    /// 1-based column of the span's start, in characters.
    pub fn column(&self) -> usize {
        self.details.column
    }

    /// The one-line message, without code or help.
    pub fn message(&self) -> &str {
        &self.details.message
    }

    /// The one line of help.
    pub fn help_text(&self) -> &str {
        &self.details.help
    }

    /// The keyword or command suggested by "did you mean", if any.
    pub fn suggestion(&self) -> Option<&'static str> {
        self.details.suggestion
    }

    /// The registry name ([`crate::syntax::commands::find`]) of the command whose first word was
    /// recognised when its parameters are wrong or missing. DiskShadow prints that command's help
    /// in that case.
    pub fn command_name(&self) -> Option<&'static str> {
        self.details.command_name
    }

    /// A report that renders with the source snippet.
    pub fn with_source(self, name: &str, source: &str) -> miette::Report {
        miette::Report::new(self).with_source_code(NamedSource::new(name, source.to_string()))
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.details.message)
    }
}

impl std::error::Error for SyntaxError {}

fn source_span(span: Span) -> SourceSpan {
    SourceSpan::new(span.start.into(), span.len())
}

impl Diagnostic for SyntaxError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.details.kind.code()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(if self.details.kind.is_warning() {
            miette::Severity::Warning
        } else {
            miette::Severity::Error
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.details.help))
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let primary = LabeledSpan::new_primary_with_span(
            Some(self.details.label.clone()),
            source_span(self.details.span),
        );
        let related = self.details.related.iter().map(|(span, label)| {
            LabeledSpan::new_with_span(Some(label.clone()), source_span(*span))
        });
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

impl ErrorDetails {
    /// What the word that failed should have been, for the unexpanded-reference message.
    fn expected_noun(&self) -> &'static str {
        match self.kind {
            SyntaxErrorKind::UnknownCommand => "command",
            SyntaxErrorKind::InvalidDriveLetter => "drive letter",
            SyntaxErrorKind::UnknownHelpTopic => "command to give help on",
            _ => "keyword that fits here",
        }
    }
}

/// 1-based line and character column of byte `offset` in `source`. An offset inside a character
/// or past the end counts from the nearest boundary below it, so this never panics.
pub(crate) fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
