//! The README's "Entry points" and "Core types" name files, types and functions a newcomer
//! follows; this test fails when one of them no longer exists.

use std::collections::HashSet;
use std::path::Path;

const README: &str = include_str!("../README.md");

fn section(title: &str) -> &'static str {
    let start = README
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has a `## {title}` section"));
    let rest = &README[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |end| end + 3);
    &rest[..end]
}

/// Every `.rs` file under `src`, concatenated.
fn sources() -> String {
    fn walk(directory: &Path, out: &mut String) {
        for entry in std::fs::read_dir(directory).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                out.push_str(&std::fs::read_to_string(&path).expect("read source"));
                out.push('\n');
            }
        }
    }
    let mut out = String::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '_')
        && !text.starts_with(|character: char| character.is_ascii_digit())
}

/// The names the sources define, gathered in one pass.
struct Defined {
    /// After `struct`, `enum`, `trait`, `type`, `mod`, or alone on a line (GUID newtypes are
    /// made by `guid_type!(/// doc\n    VolumeId\n);`).
    types: HashSet<String>,
    /// After `fn` or `static`, and enum variants (a line starting `Name {`, `Name(`, `Name,`).
    members: HashSet<String>,
    /// Every word.
    words: HashSet<String>,
}

fn defined(sources: &str) -> Defined {
    let mut found = Defined {
        types: HashSet::new(),
        members: HashSet::new(),
        words: HashSet::new(),
    };
    for line in sources.lines() {
        let words: Vec<&str> = line
            .split(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
            .filter(|word| !word.is_empty())
            .collect();
        for pair in words.windows(2) {
            match pair[0] {
                "struct" | "enum" | "trait" | "type" | "mod" => {
                    found.types.insert(pair[1].to_string());
                }
                "fn" | "static" => {
                    found.members.insert(pair[1].to_string());
                }
                _ => {}
            }
        }
        let trimmed = line.trim();
        if is_identifier(trimmed) {
            found.types.insert(trimmed.to_string());
        }
        if let Some(first) = words.first() {
            let after = trimmed.strip_prefix(first).unwrap_or("");
            if trimmed.starts_with(first)
                && (after.starts_with(" {") || after.starts_with('(') || after.starts_with(','))
            {
                found.members.insert(first.to_string());
            }
        }
        found
            .words
            .extend(words.iter().map(|word| word.to_string()));
    }
    found
}

/// What is wrong with one backticked name, if anything.
fn check(defined: &Defined, root: &Path, item: &str) -> Option<String> {
    if item.starts_with("src/") || item.starts_with("tests/") || item.starts_with("docs/") {
        return (!root.join(item).exists()).then(|| format!("no file {item}"));
    }
    if let Some((owner, member)) = item.split_once("::") {
        if !(is_identifier(owner) && is_identifier(member)) {
            return None;
        }
        if !defined.types.contains(owner) {
            return Some(format!("no type or module {owner} (in `{item}`)"));
        }
        return (!defined.members.contains(member)).then(|| format!("no {member} (in `{item}`)"));
    }
    if !is_identifier(item) {
        return None;
    }
    if item.starts_with(|character: char| character.is_ascii_uppercase())
        && item.chars().any(|character| character.is_ascii_lowercase())
    {
        return (!defined.types.contains(item)).then(|| format!("no type {item}"));
    }
    (!defined.words.contains(item)).then(|| format!("`{item}` appears nowhere in src"))
}

#[test]
fn every_name_in_entry_points_and_core_types_exists() {
    let defined = defined(&sources());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let mut checked = 0;
    for title in ["Entry points", "Core types"] {
        for (index, item) in section(title).split('`').enumerate() {
            if index % 2 == 0 {
                continue;
            }
            checked += 1;
            if let Some(problem) = check(&defined, root, item) {
                problems.push(format!("README `## {title}`: {problem}"));
            }
        }
    }
    assert!(checked >= 40, "only {checked} names found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_missing_name_is_caught() {
    let defined = defined(&sources());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(check(&defined, root, "NoSuchTypeAnywhere").is_some());
    assert!(check(&defined, root, "Engine::no_such_function").is_some());
    assert!(check(&defined, root, "src/no/such/file.rs").is_some());
    assert!(check(&defined, root, "Engine::open_volume").is_none());
    assert!(check(&defined, root, "VolumeId").is_none());
}
