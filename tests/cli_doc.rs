//! docs/cli.md is the command line's contract: this test keeps it true to the clap parser in
//! `diskshadow::cli`, without running anything.
//!
//! - every `diskshadow …` usage line of its code blocks names subcommands the parser has and
//!   flags those subcommands accept, unless the "Not built yet" list names it;
//! - what the "Built" list names is in the parser, and what "Not built yet" names is not;
//! - every subcommand of the parser is documented.

use std::collections::BTreeSet;

use clap::CommandFactory;
use diskshadow::cli::Cli;

const DOC: &str = include_str!("../docs/cli.md");

/// A command form: its subcommand words and the flags it uses.
#[derive(Debug, Clone)]
struct Form {
    words: Vec<String>,
    flags: Vec<String>,
}

impl Form {
    fn path(&self) -> String {
        self.words.join(" ")
    }
}

fn is_command_word(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|character| character.is_ascii_lowercase() || character == '-')
        && !token.starts_with('-')
}

/// Every flag (`--name`, `-x`) in `tokens`, without the brackets around optional ones.
fn flags_in(tokens: &[&str]) -> Vec<String> {
    tokens
        .iter()
        .map(|token| token.trim_matches(|character| character == '[' || character == ']'))
        .filter(|token| token.starts_with('-') && token.len() > 1)
        .map(str::to_string)
        .collect()
}

/// The subcommand words that start `tokens`; a last word written `a|b|c` gives one word list
/// per alternative.
fn leading_words(tokens: &[&str]) -> Vec<Vec<String>> {
    let mut words = Vec::new();
    for token in tokens {
        if token.contains('|') {
            let alternatives: Vec<&str> = token.split('|').collect();
            if alternatives.iter().all(|word| is_command_word(word)) {
                return alternatives
                    .iter()
                    .map(|alternative| {
                        let mut form = words.clone();
                        form.push(alternative.to_string());
                        form
                    })
                    .collect();
            }
            break;
        }
        if !is_command_word(token) {
            break;
        }
        words.push(token.to_string());
    }
    vec![words]
}

/// The command forms of one usage line (`diskshadow volume attach VOLUME TARGET | detach
/// TARGET | attachments`), with its description (after two spaces or more) cut off.
fn forms_of_usage(line: &str) -> Vec<Form> {
    let usage = line
        .strip_prefix("diskshadow")
        .unwrap_or(line)
        .split("  ")
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let mut forms = Vec::new();
    let mut first_words: Vec<String> = Vec::new();
    for (index, part) in usage.split(" | ").enumerate() {
        let tokens: Vec<&str> = part.split_whitespace().collect();
        let flags = flags_in(&tokens);
        for words in leading_words(&tokens) {
            let words = if index == 0 {
                first_words = words.clone();
                words
            } else {
                // `| detach TARGET` replaces the last subcommand word of the first form (or
                // the one before it, when that is where the alternative is a sibling).
                let sibling_depth = sibling_depth(&first_words, &words);
                let mut full: Vec<String> = first_words[..sibling_depth].to_vec();
                full.extend(words);
                full
            };
            forms.push(Form {
                words,
                flags: flags.clone(),
            });
        }
    }
    forms
}

/// How many of `first`'s words an alternative `words` keeps: the deepest prefix of `first`
/// under which the parser knows `words[0]`, else all but the last word.
fn sibling_depth(first: &[String], words: &[String]) -> usize {
    let root = Cli::command();
    for depth in (0..first.len()).rev() {
        if let Some(command) = find_command(&root, &first[..depth]) {
            if words
                .first()
                .is_some_and(|word| command.find_subcommand(word).is_some())
            {
                return depth;
            }
        }
    }
    first.len().saturating_sub(1)
}

fn find_command<'a>(root: &'a clap::Command, words: &[String]) -> Option<&'a clap::Command> {
    let mut command = root;
    for word in words {
        command = match command.find_subcommand(word) {
            Some(sub) => sub,
            // `list shadows`: a value of a positional argument, not a subcommand.
            None if command.get_positionals().any(|argument| {
                argument
                    .get_possible_values()
                    .iter()
                    .any(|value| value.matches(word, false))
            }) =>
            {
                command
            }
            None => return None,
        };
    }
    Some(command)
}

/// Whether `command` (or the root, for global arguments) accepts `flag`.
fn accepts_flag(root: &clap::Command, command: &clap::Command, flag: &str) -> bool {
    let matches = |argument: &clap::Arg| match flag.strip_prefix("--") {
        Some(long) => argument.get_long() == Some(long),
        None => flag
            .strip_prefix('-')
            .and_then(|short| short.chars().next())
            .is_some_and(|short| argument.get_short() == Some(short)),
    };
    command.get_arguments().any(matches)
        || root
            .get_arguments()
            .any(|argument| argument.is_global_set() && matches(argument))
        || matches!(flag, "--help" | "-h" | "--version" | "-V")
}

/// The usage lines of the code blocks of the `## diskshadow` section.
fn usage_lines() -> Vec<&'static str> {
    let section = DOC
        .split("\n## ")
        .find(|section| section.starts_with("diskshadow"))
        .expect("docs/cli.md has a `## diskshadow` section");
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if in_block && line.starts_with("diskshadow") {
            lines.push(line);
        }
    }
    lines
}

/// The backticked items of the bullet that starts with `label` in "What this checkout builds",
/// each `a b|c` expanded into `a b` and `a c`.
fn listed(label: &str) -> Vec<Form> {
    let bullet_start = DOC
        .find(&format!("- {label}"))
        .unwrap_or_else(|| panic!("docs/cli.md has a `- {label}` bullet"));
    let rest = &DOC[bullet_start + 2..];
    let bullet = &rest[..rest.find("\n- ").unwrap_or(rest.len())];
    let bullet = &bullet[..bullet.find("\n\n").unwrap_or(bullet.len())];
    let mut forms = Vec::new();
    for (index, item) in bullet.split('`').enumerate() {
        if index % 2 == 0 || item.starts_with('-') || item.starts_with('/') || item.contains(':') {
            continue;
        }
        let tokens: Vec<&str> = item.split_whitespace().collect();
        let flags = flags_in(&tokens);
        for words in leading_words(&tokens) {
            forms.push(Form {
                words,
                flags: flags.clone(),
            });
        }
    }
    forms
}

/// Whether the parser has the form's subcommands and accepts all its flags.
fn parser_has(form: &Form) -> Result<(), String> {
    let root = Cli::command();
    let command = find_command(&root, &form.words)
        .ok_or_else(|| format!("`diskshadow {}` is not a subcommand", form.path()))?;
    match form
        .flags
        .iter()
        .find(|flag| !accepts_flag(&root, command, flag))
    {
        Some(flag) => Err(format!("`diskshadow {}` has no {flag}", form.path())),
        None => Ok(()),
    }
}

fn not_built() -> Vec<Form> {
    listed("Not built yet:")
}

/// Whether the "Not built yet" list covers `form` (its subcommand, or the flag it lacks).
fn excused(form: &Form, not_built: &[Form]) -> bool {
    not_built.iter().any(|item| {
        item.words == form.words
            && (item.flags.is_empty() || item.flags.iter().all(|flag| form.flags.contains(flag)))
    })
}

#[test]
fn every_documented_usage_line_is_understood_by_the_parser() {
    let lines = usage_lines();
    assert!(lines.len() >= 5, "too few usage lines found: {lines:?}");
    let not_built = not_built();
    let mut problems = Vec::new();
    let mut checked = 0;
    for line in &lines {
        let forms = forms_of_usage(line);
        assert!(!forms.is_empty(), "no command form in {line:?}");
        for form in forms {
            checked += 1;
            if let Err(problem) = parser_has(&form) {
                if !excused(&form, &not_built) {
                    problems.push(format!("{problem} (docs/cli.md: {line:?})"));
                }
            }
        }
    }
    assert!(checked >= 15, "only {checked} command forms found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_built_and_not_built_lists_match_the_parser() {
    let built = listed("Built:");
    assert!(built.len() >= 10, "too few built items: {built:?}");
    let mut problems = Vec::new();
    for item in built.iter().filter(|item| item.words != ["vssadmin"]) {
        if let Err(problem) = parser_has(item) {
            problems.push(format!("listed as built, but {problem}"));
        }
    }
    let not_built = not_built();
    // An empty list says so in words ("Not built yet: nothing"), so that a list the parser
    // here fails to read is not mistaken for an empty one. Items that are not subcommands
    // (`rbd:POOL/IMAGE` volume names) are not forms and are not checked here.
    let says_nothing = DOC.contains("- Not built yet: nothing");
    let names_other_items = DOC
        .split("- Not built yet:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .is_some_and(|bullet| bullet.contains('`'));
    assert!(
        !not_built.is_empty() || says_nothing || names_other_items,
        "the Not built yet list is empty"
    );
    for item in &not_built {
        if parser_has(item).is_ok() {
            problems.push(format!(
                "listed as not built, but the parser accepts `diskshadow {}{}`",
                item.path(),
                item.flags
                    .iter()
                    .map(|flag| format!(" {flag}"))
                    .collect::<String>()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_subcommand_of_the_parser_is_documented() {
    let mut documented: BTreeSet<String> = BTreeSet::new();
    for line in usage_lines() {
        documented.extend(forms_of_usage(line).iter().map(Form::path));
    }
    documented.extend(listed("Built:").iter().map(Form::path));
    let mut missing = Vec::new();
    fn walk(command: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut paths = Vec::new();
    walk(&Cli::command(), &[], &mut paths);
    assert!(paths.len() >= 10, "the parser has too few subcommands");
    for path in paths {
        let joined = path.join(" ");
        // A parent is documented when one of its subcommands is.
        let covered = documented
            .iter()
            .any(|form| form == &joined || form.starts_with(&format!("{joined} ")));
        if !covered {
            missing.push(joined);
        }
    }
    assert!(
        missing.is_empty(),
        "subcommands docs/cli.md does not document: {missing:?}"
    );
}

#[test]
fn usage_lines_are_split_into_their_forms() {
    let forms = forms_of_usage(
        "diskshadow writer add sqlite|mysql [OPTIONS] | list | remove NAME    what it does",
    );
    let paths: Vec<String> = forms.iter().map(Form::path).collect();
    assert_eq!(
        paths,
        [
            "writer add sqlite",
            "writer add mysql",
            "writer list",
            "writer remove"
        ]
    );
    let forms = forms_of_usage("diskshadow volume read TARGET [--offset BYTES] [--output FILE]");
    assert_eq!(forms[0].flags, ["--offset", "--output"]);
    // A made-up flag is refused, so the checks above can fail.
    let made_up = Form {
        words: vec!["volume".into(), "read".into()],
        flags: vec!["--no-such-flag".into()],
    };
    assert!(parser_has(&made_up).is_err());
    assert!(parser_has(&Form {
        words: vec!["no-such-command".into()],
        flags: vec![]
    })
    .is_err());
}
