//! The README's language reference, written from [`crate::syntax::commands::COMMANDS`] (each
//! command's syntax, help and examples), so the README cannot drift from `help`.

use crate::syntax::commands;

/// The language reference in the README, generated from the command table so it cannot drift
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
