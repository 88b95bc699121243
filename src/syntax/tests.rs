//! Unit tests of the parser internals: the registry against the AST, the command table against
//! the grammar.

use proptest::prelude::*;

use super::ast::*;
use super::diagnose::{check_words, tokenize};
use super::grammar::{DiskShadowGrammar, Rule};
use super::shape::{Node, COMMAND_SHAPES};
use super::suggest::suggest;
use super::*;

/// One command of every variant. The exhaustive match in `variant_index` makes a new variant
/// fail to compile until it is added here.
fn one_of_each_variant() -> Vec<Command> {
    let word = |text: &str| Word::new(text, Span::default());
    let commands = vec![
        Command::Set(SetCommand::Show),
        Command::SimulateRestore,
        Command::LoadMetadata {
            path: word("x.cab"),
        },
        Command::Writer {
            action: WriterAction::Verify,
            target: word("w"),
        },
        Command::Add(AddCommand::Show),
        Command::Create,
        Command::Exec {
            program: word("a.cmd"),
            arguments: Vec::new(),
        },
        Command::BeginBackup,
        Command::EndBackup,
        Command::BeginRestore,
        Command::EndRestore,
        Command::Reset,
        Command::List {
            list: ListCommand::Providers,
            json: false,
        },
        Command::DeleteShadows(DeleteShadows::All),
        Command::Import,
        Command::Mask {
            shadow_set: word("s"),
        },
        Command::Expose {
            shadow: word("s"),
            target: word("p:"),
        },
        Command::Unexpose { target: word("p:") },
        Command::Break {
            writable: false,
            shadow_set: word("s"),
        },
        Command::Revert { shadow: word("s") },
        Command::Resync {
            no_volume_check: false,
            revert_original_signature: false,
        },
        Command::Exit,
        Command::Help { topic: Vec::new() },
        Command::Map(MapCommand::Show),
        Command::Map(MapCommand::Unmap { drive: word("c:") }),
        Command::Attach {
            volume: word("c:"),
            target: word("/x"),
        },
        Command::Detach { target: word("c:") },
    ];
    for command in &commands {
        variant_index(command);
    }
    commands
}

fn variant_index(command: &Command) -> usize {
    match command {
        Command::Set(_) => 0,
        Command::SimulateRestore => 1,
        Command::LoadMetadata { .. } => 2,
        Command::Writer { .. } => 3,
        Command::Add(_) => 4,
        Command::Create => 5,
        Command::Exec { .. } => 6,
        Command::BeginBackup => 7,
        Command::EndBackup => 8,
        Command::BeginRestore => 9,
        Command::EndRestore => 10,
        Command::Reset => 11,
        Command::List { .. } => 12,
        Command::DeleteShadows(_) => 13,
        Command::Import => 14,
        Command::Mask { .. } => 15,
        Command::Expose { .. } => 16,
        Command::Unexpose { .. } => 17,
        Command::Break { .. } => 18,
        Command::Revert { .. } => 19,
        Command::Resync { .. } => 20,
        Command::Exit => 21,
        Command::Help { .. } => 22,
        Command::Map(_) => 23,
        Command::Attach { .. } => 24,
        Command::Detach { .. } => 25,
    }
}

#[test]
fn every_command_variant_has_a_registry_entry() {
    for command in one_of_each_variant() {
        assert!(
            commands::find(command.name()).is_some(),
            "no spec for {:?}",
            command.name()
        );
    }
}

#[test]
fn registry_and_command_table_name_the_same_commands() {
    for shape in COMMAND_SHAPES {
        assert!(
            commands::find(shape.name).is_some(),
            "no spec for command word {}",
            shape.word
        );
    }
    for spec in commands::COMMANDS {
        assert!(
            COMMAND_SHAPES.iter().any(|shape| shape.name == spec.name),
            "spec {} has no command word",
            spec.name
        );
    }
}

#[test]
fn every_registry_example_parses_to_its_own_command() {
    for spec in commands::COMMANDS {
        assert!(!spec.examples.is_empty(), "{} has no example", spec.name);
        for example in spec.examples {
            let command = parse_line(example)
                .unwrap_or_else(|error| panic!("{example}: {error}"))
                .unwrap_or_else(|| panic!("{example}: no command"));
            assert_eq!(command.name(), spec.name, "{example}");
        }
    }
}

#[test]
fn help_text_starts_with_the_syntax() {
    let end = commands::find("end").map(commands::CommandSpec::help_text);
    assert_eq!(
        end.as_deref(),
        Some(
            "END { BACKUP | RESTORE }\n\n        BACKUP                  Ends a full backup operation.\n        RESTORE                 Ends a restore operation.\n"
        )
    );
}

#[test]
fn suggestions_find_near_misses_only() {
    let words: Vec<&'static str> = COMMAND_SHAPES.iter().map(|shape| shape.word).collect();
    assert_eq!(suggest("creat", &words), Some("create"));
    assert_eq!(suggest("lsit", &words), Some("list"));
    assert_eq!(suggest("EXT", &words), Some("exit"));
    assert_eq!(suggest("del", &words), Some("delete"));
    assert_eq!(suggest("frobnicate", &words), None);
    assert_eq!(suggest("backu", &["backup", "restore"]), Some("backup"));
    assert_eq!(
        suggest("tranportable", &["differential", "transportable"]),
        Some("transportable")
    );
}

fn collect_keywords(node: &'static Node, into: &mut Vec<&'static str>) {
    match node {
        Node::End | Node::Rest { .. } => {}
        Node::Keywords { branches, .. } => {
            for branch in *branches {
                into.push(branch.keyword);
                collect_keywords(&branch.next, into);
            }
        }
        Node::Argument { next, .. } | Node::OptionalArgument { next, .. } => {
            collect_keywords(next, into)
        }
        Node::Flags { flags, .. } => into.extend(flags.iter().copied()),
        Node::OptionalKeyword { keyword, next } => {
            into.push(keyword);
            collect_keywords(next, into);
        }
        Node::Clauses { clauses } => into.extend(clauses.iter().map(|(keyword, _)| *keyword)),
    }
}

fn vocabulary() -> Vec<String> {
    let mut words = Vec::new();
    for shape in COMMAND_SHAPES {
        words.push(shape.word);
        collect_keywords(&shape.node, &mut words);
    }
    let mut vocabulary: Vec<String> = words.into_iter().map(str::to_string).collect();
    vocabulary.sort();
    vocabulary.dedup();
    let extra = [
        "/?", "c:", "\"a b\"", "%X%", "x", "#c", "SET", "Volume", "a#b", "\"/?\"",
    ];
    vocabulary.extend(extra.iter().map(|word| word.to_string()));
    vocabulary
}

fn grammar_accepts(line: &str) -> bool {
    DiskShadowGrammar::parse(Rule::single_line, line)
        .map(|pairs| {
            pairs
                .flatten()
                .any(|pair| pair.as_rule() == Rule::command_line)
        })
        .unwrap_or(false)
}

fn table_accepts(line: &str) -> bool {
    let Ok(tokens) = tokenize(line, 0) else {
        return false;
    };
    if tokens.is_empty() {
        return false;
    }
    let raw: Vec<&str> = tokens.iter().map(|token| token.raw).collect();
    check_words(&raw).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// The grammar decides, the table explains: they must accept the same lines, or a valid line
    /// would be diagnosed (or an invalid one explained as valid).
    #[test]
    fn shape_agrees_with_grammar(
        first in 0usize..1000,
        rest in proptest::collection::vec(0usize..1000, 0..6),
        separators in proptest::collection::vec(prop_oneof![Just(" "), Just("\t"), Just("  ")], 6),
    ) {
        let vocabulary = vocabulary();
        let commands: Vec<&str> = COMMAND_SHAPES.iter().map(|shape| shape.word).collect();
        let mut line = commands[first % commands.len()].to_string();
        for (index, choice) in rest.iter().enumerate() {
            line.push_str(separators[index]);
            line.push_str(&vocabulary[choice % vocabulary.len()]);
        }
        prop_assert_eq!(grammar_accepts(&line), table_accepts(&line), "line: {:?}", line);
    }
}

#[test]
fn shape_agrees_with_grammar_on_known_lines() {
    for line in [
        "break writable",
        "break writable x",
        "break writable writable x",
        "add volume c: alias",
        "add volume c: alias a provider p alias b",
        "exec /? /?",
        "exec /?",
        "exec a /?",
        "set /? /?",
        "set option",
        "resync novolcheck novolcheck",
        "map c:",
        "help list shadows",
        "/?",
        "/? /?",
        "writer exclude System Writer #c",
    ] {
        assert_eq!(grammar_accepts(line), table_accepts(line), "line: {line:?}");
    }
}

#[test]
fn completion_offers_the_table_keywords() {
    assert_eq!(completions("list "), ["writers", "shadows", "providers"]);
    assert_eq!(completions("li"), ["list"]);
    assert_eq!(
        completions("set context "),
        ["clientaccessible", "persistent", "volatile"]
    );
    assert_eq!(
        completions("SET OPTION plex t"),
        ["transportable", "txfrecover"]
    );
    assert_eq!(completions("add volume c: alias x "), ["provider"]);
    assert_eq!(completions("add volume c: "), ["alias", "provider"]);
    assert_eq!(completions("help cr"), ["create"]);
    assert_eq!(completions("break "), ["writable"]);
    assert!(completions("frob ").is_empty());
    assert!(completions("create ").is_empty());
    assert!(completions("# comment").is_empty());
    assert!(completions("list #").is_empty());
    assert_eq!(completions("e"), ["exec", "end", "expose", "exit"]);
    assert_eq!(completions("set context persistent "), ["nowriters"]);
    assert_eq!(
        completions("  DELETE Shadows "),
        ["all", "volume", "oldest", "set", "id", "exposed"]
    );
    assert!(completions("end backup ").is_empty());
    assert_eq!(completions("").len(), COMMAND_SHAPES.len());
    assert_eq!(expected_argument("add volume "), Some("<volume>"));
    assert_eq!(
        expected_argument("add volume c: alias "),
        Some("<alias name>")
    );
    assert_eq!(expected_argument("list "), None);
}
