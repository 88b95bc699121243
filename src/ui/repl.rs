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
    pub shadow_ids: Vec<String>,
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
}

impl Default for ShellHelper {
    fn default() -> Self {
        Self::new()
    }
}

/// The candidates for the word ending at `pos`, and where that word starts.
pub fn complete_line(line: &str, pos: usize, data: &CompletionData) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before
        .rfind([' ', '\t'])
        .map(|index| index + 1)
        .unwrap_or(0);
    let word = &before[start..];
    let lower = word.to_ascii_lowercase();
    let mut candidates: Vec<String> = Vec::new();
    if word.starts_with('%') {
        let partial = lower.trim_start_matches('%');
        candidates.extend(
            data.aliases
                .iter()
                .filter(|alias| alias.to_ascii_lowercase().starts_with(partial))
                .map(|alias| format!("%{alias}%")),
        );
    } else if word.starts_with('{') {
        candidates.extend(
            data.shadow_ids
                .iter()
                .filter(|id| id.starts_with(&lower))
                .cloned(),
        );
    } else {
        candidates.extend(syntax::completions(before));
    }
    candidates.sort();
    candidates.dedup();
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
        if words.is_empty() {
            let word_start = line[..pos]
                .rfind([' ', '\t'])
                .map(|index| index + 1)
                .unwrap_or(0);
            if word_start > 0 {
                return self.paths.complete(line, pos, context);
            }
        }
        let pairs = words
            .into_iter()
            .map(|word| Pair {
                display: word.clone(),
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

fn completion_data(session: &mut Session<'_>) -> CompletionData {
    let aliases = session
        .variables()
        .aliases()
        .map(|(name, _)| name.to_string())
        .collect();
    let shadow_ids = session
        .service()
        .shadows()
        .map(|shadows| {
            let mut ids: Vec<String> = Vec::new();
            for shadow in shadows {
                ids.push(shadow.id.to_string());
                ids.push(shadow.set_id.to_string());
            }
            ids
        })
        .unwrap_or_default();
    CompletionData {
        aliases,
        shadow_ids,
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
        helper.refresh(completion_data(session));
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
                    helper.refresh(completion_data(session));
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

    #[test]
    fn aliases_and_shadow_ids_complete_from_their_prefixes() {
        let data = CompletionData {
            aliases: vec!["data1".into(), "VSS_SHADOW_SET".into()],
            shadow_ids: vec!["{0a0a0a0a-0000-0000-0000-000000000000}".into()],
        };
        let (start, words) = complete_line("expose %da", 10, &data);
        assert_eq!((start, words), (7, vec!["%data1%".to_string()]));
        let (_, words) = complete_line("revert {0a", 10, &data);
        assert_eq!(
            words,
            vec!["{0a0a0a0a-0000-0000-0000-000000000000}".to_string()]
        );
    }
}
