//! `help` and `help <command>`, from the command table.

use super::super::{CommandError, Session};
use crate::syntax::ast::Word;
use crate::syntax::commands;

pub(super) fn help(session: &mut Session<'_>, topic: &[Word]) -> Result<(), CommandError> {
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
        return Ok(());
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
    Ok(())
}
