//! The interactive shell: the `DISKSHADOW> ` prompt, persistent history in the store, tab
//! completion of commands, keywords, aliases, shadow IDs and paths; Ctrl-C cancels the line,
//! Ctrl-D or `exit` leaves.

use std::cell::RefCell;
use std::path::Path;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};

use crate::session::{LineOutcome, Session};
use crate::syntax;

pub const PROMPT: &str = "DISKSHADOW> ";

/// What completion offers besides keywords and paths; refreshed after every command.
#[derive(Debug, Default, Clone)]
pub struct CompletionData {
    pub aliases: Vec<String>,
    /// Shadow copy IDs, `{…}`.
    pub shadow_ids: Vec<String>,
    /// Shadow copy set IDs, `{…}`.
    pub set_ids: Vec<String>,
    /// Drive letters mapped to volumes (`C:`), then volume names (`\\?\Volume{…}\`).
    pub volumes: Vec<String>,
    /// Writer names, for `writer verify|exclude`.
    pub writers: Vec<String>,
}

pub struct ShellHelper {
    data: RefCell<CompletionData>,
    paths: FilenameCompleter,
}

impl ShellHelper {
    pub fn new() -> Self {
        Self {
            data: RefCell::new(CompletionData::default()),
            paths: FilenameCompleter::new(),
        }
    }

    pub fn refresh(&self, data: CompletionData) {
        *self.data.borrow_mut() = data;
    }

    /// Keeps the writer names already known when a refresh did not ask for them.
    fn writers(&self) -> Vec<String> {
        self.data.borrow().writers.clone()
    }
}

impl Default for ShellHelper {
    fn default() -> Self {
        Self::new()
    }
}

/// How the user writes keywords, for completions to follow: `SET CON` gives `SET CONTEXT`,
/// `Set Con` gives `Set Context`, anything else lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeywordCase {
    Lower,
    Upper,
    Capitalized,
}

impl KeywordCase {
    /// The case of `word`, or `None` when it has no letter to tell.
    fn of(word: &str) -> Option<Self> {
        let letters: Vec<char> = word.chars().filter(char::is_ascii_alphabetic).collect();
        let (first, rest) = letters.split_first()?;
        Some(if letters.iter().all(char::is_ascii_uppercase) {
            Self::Upper
        } else if first.is_ascii_uppercase() && rest.iter().all(char::is_ascii_lowercase) {
            Self::Capitalized
        } else {
            Self::Lower
        })
    }

    fn apply(self, keyword: &str) -> String {
        match self {
            Self::Lower => keyword.to_ascii_lowercase(),
            Self::Upper => keyword.to_ascii_uppercase(),
            Self::Capitalized => {
                let mut characters = keyword.chars();
                match characters.next() {
                    Some(first) => {
                        format!(
                            "{}{}",
                            first.to_ascii_uppercase(),
                            characters.as_str().to_ascii_lowercase()
                        )
                    }
                    None => String::new(),
                }
            }
        }
    }
}

/// Where the word being completed starts: after the last blank, or at an unclosed `"` (writer
/// names have spaces).
fn word_start(before: &str) -> usize {
    if before.matches('"').count() % 2 == 1 {
        return before.rfind('"').unwrap_or(0);
    }
    before
        .rfind([' ', '\t'])
        .map(|index| index + 1)
        .unwrap_or(0)
}

/// The candidates for the word ending at `pos`, and where that word starts. Keywords follow
/// the case the user types in; arguments complete from what the store has: shadow and set
/// IDs, drive letters and volumes, writer names, `%aliases%`. A single candidate ends with a
/// space, ready for the next word.
pub fn complete_line(line: &str, pos: usize, data: &CompletionData) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = word_start(before);
    let word = &before[start..];
    let lower = word.to_ascii_lowercase();
    let mut candidates: Vec<String> = Vec::new();
    let id_matches = |ids: &[String]| -> Vec<String> {
        let wanted = lower.trim_start_matches('{');
        ids.iter()
            .filter(|id| id.trim_start_matches('{').starts_with(wanted))
            .cloned()
            .collect()
    };
    if word.starts_with('%') {
        let partial = lower.trim_start_matches('%');
        candidates.extend(
            data.aliases
                .iter()
                .filter(|alias| alias.to_ascii_lowercase().starts_with(partial))
                .map(|alias| format!("%{alias}%")),
        );
    } else {
        let typed_case = KeywordCase::of(word).or_else(|| {
            before[..start]
                .split_whitespace()
                .last()
                .and_then(KeywordCase::of)
        });
        let case = typed_case.unwrap_or(KeywordCase::Lower);
        candidates.extend(
            syntax::completions(before)
                .into_iter()
                .map(|keyword| case.apply(&keyword)),
        );
        match syntax::expected_argument(&before[..start]) {
            Some("<shadow ID>" | "<shadow ID, drive, share or mount point>") => {
                candidates.extend(id_matches(&data.shadow_ids));
            }
            Some("<set ID>") => candidates.extend(id_matches(&data.set_ids)),
            Some("<volume>") => candidates.extend(
                data.volumes
                    .iter()
                    .filter(|volume| volume.to_ascii_lowercase().starts_with(&lower))
                    .map(|volume| match volume.len() {
                        // A drive letter follows the case typed, as keywords do.
                        2 if case != KeywordCase::Upper => volume.to_ascii_lowercase(),
                        _ => volume.clone(),
                    }),
            ),
            Some("<writer or component>") => {
                let wanted = lower.trim_start_matches('"');
                candidates.extend(
                    data.writers
                        .iter()
                        .filter(|name| name.to_ascii_lowercase().starts_with(wanted))
                        .map(|name| {
                            if name.contains(char::is_whitespace) {
                                format!("\"{name}\"")
                            } else {
                                name.clone()
                            }
                        }),
                );
            }
            _ if word.starts_with('{') => {
                candidates.extend(id_matches(&data.shadow_ids));
                candidates.extend(id_matches(&data.set_ids));
            }
            _ => {}
        }
    }
    candidates.sort();
    candidates.dedup();
    if let [only] = candidates.as_mut_slice() {
        only.push(' ');
    }
    (start, candidates)
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        context: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = complete_line(line, pos, &self.data.borrow());
        if words.is_empty() && word_start(&line[..pos]) > 0 {
            let (start, mut pairs) = self.paths.complete(line, pos, context)?;
            // A unique file (not a directory, which continues with `/`) ends the word.
            if let [only] = pairs.as_mut_slice() {
                if !only.replacement.ends_with('/') {
                    only.replacement.push(' ');
                }
            }
            return Ok((start, pairs));
        }
        let pairs = words
            .into_iter()
            .map(|word| Pair {
                display: word.trim_end().to_string(),
                replacement: word,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// What completion needs from the session and its service. Writer names are asked for only
/// when `with_writers` (asking may start the writers to identify them); errors leave a list
/// empty, since completion must never fail a prompt.
fn completion_data(session: &mut Session<'_>, with_writers: bool) -> CompletionData {
    let aliases = session
        .variables()
        .aliases()
        .map(|(name, _)| name.to_string())
        .collect();
    let mut shadow_ids: Vec<String> = Vec::new();
    let mut set_ids: Vec<String> = Vec::new();
    for shadow in session.service().shadows().unwrap_or_default() {
        shadow_ids.push(shadow.id.to_string());
        set_ids.push(shadow.set_id.to_string());
    }
    set_ids.sort();
    set_ids.dedup();
    let mut volumes: Vec<String> = session
        .service()
        .drive_map()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, target)| matches!(target, crate::service::model::DriveTarget::Volume(_)))
        .map(|(letter, _)| format!("{letter}:"))
        .collect();
    volumes.extend(
        session
            .service()
            .volumes()
            .unwrap_or_default()
            .iter()
            .map(|volume| volume.device_name()),
    );
    let writers = if with_writers {
        session
            .service()
            .writer_statuses()
            .unwrap_or_default()
            .into_iter()
            .map(|status| status.name)
            .collect()
    } else {
        Vec::new()
    };
    CompletionData {
        aliases,
        shadow_ids,
        set_ids,
        volumes,
        writers,
    }
}

/// Runs the REPL until `exit` or end of input. History lives in `history_file`.
pub fn run(session: &mut Session<'_>, history_file: &Path) -> Result<(), ReadlineError> {
    let config = Config::builder()
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .max_history_size(2000)?
        .build();
    let mut editor: Editor<ShellHelper, DefaultHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ShellHelper::new()));
    // A missing history file is the normal first run.
    let _ = editor.load_history(history_file);
    if let Some(helper) = editor.helper() {
        helper.refresh(completion_data(session, true));
    }
    loop {
        super::interrupt::take();
        match editor.readline(PROMPT) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                session.typed(&line);
                let outcome = session.execute_line(&line);
                // Ctrl-C during the command: it stopped where that was safe, or ran to its
                // end; either way the shell stays, back at its prompt.
                if outcome == LineOutcome::Exit {
                    break;
                }
                if let Some(helper) = editor.helper() {
                    // Writers are asked for again only after a command about writers.
                    let about_writers = line.to_ascii_lowercase().contains("writer");
                    let mut data = completion_data(session, about_writers);
                    if !about_writers {
                        data.writers = helper.writers();
                    }
                    helper.refresh(data);
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => {
                session.finish();
                let _ = editor.save_history(history_file);
                return Err(error);
            }
        }
    }
    session.finish();
    if let Some(parent) = history_file.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = editor.save_history(history_file);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHADOW: &str = "{0a0a0a0a-0000-0000-0000-000000000000}";
    const OTHER_SHADOW: &str = "{0b0b0b0b-0000-0000-0000-000000000000}";
    const SET: &str = "{5e5e5e5e-0000-0000-0000-000000000000}";

    fn data() -> CompletionData {
        CompletionData {
            aliases: vec!["data1".into(), "VSS_SHADOW_SET".into()],
            shadow_ids: vec![SHADOW.into(), OTHER_SHADOW.into()],
            set_ids: vec![SET.into()],
            volumes: vec![
                "C:".into(),
                "D:".into(),
                "\\\\?\\Volume{9bc2036f-7fd0-45cf-8de0-3f96324142bf}\\".into(),
            ],
            writers: vec!["Journal Writer".into(), "Log Writer".into()],
        }
    }

    fn complete(line: &str) -> Vec<String> {
        complete_line(line, line.len(), &data()).1
    }

    #[test]
    fn aliases_and_shadow_ids_complete_from_their_prefixes() {
        let (start, words) = complete_line("expose %da", 10, &data());
        assert_eq!((start, words), (7, vec!["%data1% ".to_string()]));
        assert_eq!(complete("revert {0a"), [format!("{SHADOW} ")]);
    }

    #[test]
    fn a_unique_completion_ends_with_a_space_and_several_do_not() {
        assert_eq!(complete("cre"), ["create "]);
        assert_eq!(complete("list "), ["providers", "shadows", "writers"]);
        assert_eq!(complete("set context p"), ["persistent "]);
    }

    #[test]
    fn keywords_follow_the_case_typed() {
        assert_eq!(complete("SET CON"), ["CONTEXT "]);
        assert_eq!(complete("Set Con"), ["Context "]);
        assert_eq!(complete("set con"), ["context "]);
        assert_eq!(
            complete("SET CONTEXT "),
            ["CLIENTACCESSIBLE", "PERSISTENT", "VOLATILE"]
        );
        assert_eq!(complete("LIST SH"), ["SHADOWS "]);
    }

    #[test]
    fn shadow_and_set_arguments_complete_ids_not_paths() {
        assert_eq!(complete("list shadows id "), [SHADOW, OTHER_SHADOW]);
        assert_eq!(complete("list shadows set "), [format!("{SET} ")]);
        assert_eq!(complete("expose {0b"), [format!("{OTHER_SHADOW} ")]);
        assert_eq!(complete("expose "), [SHADOW, OTHER_SHADOW]);
        assert_eq!(complete("unexpose "), [SHADOW, OTHER_SHADOW]);
        assert_eq!(complete("delete shadows id 0a"), [format!("{SHADOW} ")]);
        assert_eq!(complete("delete shadows set "), [format!("{SET} ")]);
        // An expose target is no ID.
        assert!(complete(&format!("expose {SHADOW} ")).is_empty());
    }

    #[test]
    fn volume_arguments_complete_drive_letters_and_volumes() {
        let volume = "\\\\?\\Volume{9bc2036f-7fd0-45cf-8de0-3f96324142bf}\\";
        assert_eq!(
            complete("add volume "),
            [
                "\\\\?\\Volume{9bc2036f-7fd0-45cf-8de0-3f96324142bf}\\",
                "c:",
                "d:"
            ]
        );
        assert_eq!(complete("add volume c"), ["c: "]);
        assert_eq!(complete("ADD VOLUME "), ["C:", "D:", volume]);
        assert_eq!(complete("delete shadows volume D"), ["D: "]);
        assert_eq!(complete("add volume \\\\?"), [format!("{volume} ")]);
        // A path is left to the file name completer.
        assert!(complete("add volume ./da").is_empty());
    }

    #[test]
    fn writer_arguments_complete_writer_names_quoted() {
        assert_eq!(
            complete("writer exclude "),
            ["\"Journal Writer\"", "\"Log Writer\""]
        );
        assert_eq!(complete("writer verify \"jou"), ["\"Journal Writer\" "]);
        let (start, _) = complete_line("writer verify \"Log W", 20, &data());
        assert_eq!(start, 14);
    }
}
