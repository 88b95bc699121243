//! `%NAME%` expansion: aliases, then `DISKSH_PARAM_n`, then environment variables, all
//! case-insensitive as on Windows. It runs on a line's text just before the line runs, so
//! aliases set by earlier lines are seen.

use std::collections::BTreeMap;

/// One expansion made, for the `-> %x% = {…}` echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// The name as written between the percent signs.
    pub name: String,
    pub value: String,
    /// True when the name was an alias (DiskShadow echoes alias expansions).
    pub is_alias: bool,
}

/// A `%NAME%` that nothing defines, or a lone `%`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("%{name}% is not an alias, a script parameter or an environment variable")]
    Undefined { name: String, column: usize },
    #[error("a '%' at column {column} has no closing '%'")]
    Unclosed { column: usize },
    #[error("%{name}% at column {column} makes the line longer than {limit} bytes")]
    TooLong {
        name: String,
        column: usize,
        limit: usize,
    },
}

/// The longest a line may become by `%NAME%` expansion. Values are not expanded again, but
/// an alias defined from itself (`add alias a %a%%a%`) doubles with every line; the bound
/// stops that at 64 KiB instead of gigabytes.
pub const MAX_EXPANDED_LINE_BYTES: usize = 64 * 1024;

/// Splits a line into its command part and a trailing comment (white space then `#`, outside
/// double quotes), so that `%NAME%` in a comment is never expanded.
pub fn split_trailing_comment(line: &str) -> (&str, &str) {
    let mut in_quotes = false;
    let mut previous_is_space = false;
    for (index, character) in line.char_indices() {
        match character {
            '"' => in_quotes = !in_quotes,
            '#' if previous_is_space && !in_quotes => return line.split_at(index),
            _ => {}
        }
        previous_is_space = character == ' ' || character == '\t';
    }
    (line, "")
}

/// Names visible to `%…%`, case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    /// Lower-cased name -> (name as defined, value).
    aliases: BTreeMap<String, (String, String)>,
    /// Lower-cased name -> value: script parameters and the environment.
    others: BTreeMap<String, String>,
}

impl Variables {
    pub fn new(environment: &[(String, String)], parameters: &[String]) -> Self {
        let mut others = BTreeMap::new();
        for (name, value) in environment {
            others.insert(name.to_ascii_lowercase(), value.clone());
        }
        for (index, value) in parameters.iter().enumerate() {
            others.insert(format!("disksh_param_{}", index + 1), value.clone());
        }
        Self {
            aliases: BTreeMap::new(),
            others,
        }
    }

    pub fn set_alias(&mut self, name: &str, value: &str) {
        self.aliases.insert(
            name.to_ascii_lowercase(),
            (name.to_string(), value.to_string()),
        );
    }

    pub fn alias(&self, name: &str) -> Option<&str> {
        self.aliases
            .get(&name.to_ascii_lowercase())
            .map(|(_, value)| value.as_str())
    }

    /// Aliases in name order, as defined.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.aliases
            .values()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn clear_aliases(&mut self) {
        self.aliases.clear();
    }

    fn lookup(&self, name: &str) -> Option<(String, bool)> {
        let key = name.to_ascii_lowercase();
        if let Some((_, value)) = self.aliases.get(&key) {
            return Some((value.clone(), true));
        }
        self.others.get(&key).map(|value| (value.clone(), false))
    }

    /// Expands every `%NAME%` in `line`. `%%` stands for a literal `%`. Comment lines are not
    /// expanded by callers.
    pub fn expand(&self, line: &str) -> Result<(String, Vec<Expansion>), ExpandError> {
        let mut output = String::with_capacity(line.len());
        let mut expansions = Vec::new();
        let mut rest = line;
        let mut consumed_chars = 0usize;
        while let Some(start) = rest.find('%') {
            output.push_str(&rest[..start]);
            let column = consumed_chars + rest[..start].chars().count() + 1;
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                return Err(ExpandError::Unclosed { column });
            };
            let name = &after[..end];
            if name.is_empty() {
                output.push('%');
            } else if name.chars().any(char::is_whitespace) {
                return Err(ExpandError::Unclosed { column });
            } else {
                let Some((value, is_alias)) = self.lookup(name) else {
                    return Err(ExpandError::Undefined {
                        name: name.to_string(),
                        column,
                    });
                };
                if output.len() + value.len() > MAX_EXPANDED_LINE_BYTES {
                    return Err(ExpandError::TooLong {
                        name: name.to_string(),
                        column,
                        limit: MAX_EXPANDED_LINE_BYTES,
                    });
                }
                output.push_str(&value);
                expansions.push(Expansion {
                    name: name.to_string(),
                    value,
                    is_alias,
                });
            }
            let taken = start + 1 + end + 1;
            consumed_chars += rest[..taken].chars().count();
            rest = &rest[taken..];
        }
        output.push_str(rest);
        Ok((output, expansions))
    }
}

/// Environment variables no alias may set for an `exec` child: each changes what a shell,
/// the dynamic loader or an interpreter runs, so an alias from a foreign metadata file could
/// take over the program. Names ending in `*` are prefixes. Compared case-insensitively.
const SENSITIVE_VARIABLES: &[&str] = &[
    "PATH",
    "LD_*",
    "DYLD_*",
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "CDPATH",
    "GLOBIGNORE",
    "PROMPT_COMMAND",
    "PS1",
    "PS2",
    "PS4",
    "SHELL",
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "PYTHON*",
    "PERL5*",
    "PERLLIB",
    "PERL_*",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "MALLOC_*",
    "GLIBC_TUNABLES",
    "GIT_*",
    "SSH_*",
    "SUDO_*",
    "XDG_*",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TERM",
    "TZ",
    "DISKSHADOW_*",
];

/// Whether the alias `name` = `value` may become an environment variable of an `exec` child,
/// and if not, why. Only names of DiskShadow's alias syntax (letters, digits, `_`) pass, never
/// a sensitive variable, and never one the environment already has: an alias adds a variable,
/// it does not change the child's environment.
pub fn exportable_alias(
    name: &str,
    value: &str,
    environment: &[(String, String)],
) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '_')
    {
        return Err("its name is not letters, digits and _".to_string());
    }
    let upper = name.to_ascii_uppercase();
    let sensitive = SENSITIVE_VARIABLES
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => upper.starts_with(prefix),
            None => upper == *pattern,
        });
    if sensitive {
        return Err(format!(
            "{name} is a variable that changes what programs run"
        ));
    }
    if environment
        .iter()
        .any(|(existing, _)| existing.eq_ignore_ascii_case(name))
    {
        return Err(format!("the environment already has {name}"));
    }
    if value.contains('\0') {
        return Err("its value holds a NUL character".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables() -> Variables {
        let mut variables = Variables::new(
            &[("HOME".to_string(), "/root".to_string())],
            &["first".to_string(), "second".to_string()],
        );
        variables.set_alias("Sys1", "{11111111-1111-1111-1111-111111111111}");
        variables
    }

    #[test]
    fn aliases_parameters_and_environment_expand_case_insensitively() {
        let (text, expansions) = variables()
            .expand("expose %SYS1% %disksh_param_2% %home%")
            .expect("expands");
        assert_eq!(
            text,
            "expose {11111111-1111-1111-1111-111111111111} second /root"
        );
        assert_eq!(expansions.len(), 3);
        assert!(expansions[0].is_alias);
        assert!(!expansions[1].is_alias);
    }

    #[test]
    fn only_plain_new_names_become_environment_variables() {
        let environment = [("Existing".to_string(), "1".to_string())];
        assert_eq!(
            exportable_alias("VSS_SHADOW_1", "{x}", &environment),
            Ok(())
        );
        assert_eq!(exportable_alias("sys1", "{x}", &environment), Ok(()));
        for name in [
            "PATH",
            "path",
            "LD_PRELOAD",
            "BASH_ENV",
            "ENV",
            "IFS",
            "SHELL",
            "HOME",
            "PS4",
            "PYTHONSTARTUP",
            "PERL5OPT",
            "existing",
            "a-b",
            "a b",
            "",
            "x=y",
        ] {
            assert!(
                exportable_alias(name, "v", &environment).is_err(),
                "{name} was exported"
            );
        }
        assert!(exportable_alias("fine", "a\0b", &environment).is_err());
    }

    #[test]
    fn trailing_comments_are_split_off_outside_quotes_only() {
        assert_eq!(
            split_trailing_comment("create # for %nope%"),
            ("create ", "# for %nope%")
        );
        assert_eq!(
            split_trailing_comment("set metadata c:\\a#b.cab"),
            ("set metadata c:\\a#b.cab", "")
        );
        assert_eq!(
            split_trailing_comment("exec \"a #b.sh\" #x"),
            ("exec \"a #b.sh\" ", "#x")
        );
    }

    #[test]
    fn undefined_and_unclosed_names_are_errors_with_columns() {
        assert_eq!(
            variables().expand("expose %nope% x:"),
            Err(ExpandError::Undefined {
                name: "nope".into(),
                column: 8
            })
        );
        assert_eq!(
            variables().expand("a %b"),
            Err(ExpandError::Unclosed { column: 3 })
        );
        assert_eq!(
            variables().expand("100%% done").map(|(text, _)| text),
            Ok("100% done".into())
        );
    }

    #[test]
    fn expansion_past_the_line_bound_is_an_error_with_its_column() {
        let mut variables = variables();
        variables.set_alias("a", &"x".repeat(MAX_EXPANDED_LINE_BYTES / 2));
        assert!(variables.expand("%a%%a%").is_ok());
        assert_eq!(
            variables.expand("add alias a %a%%a%%a%"),
            Err(ExpandError::TooLong {
                name: "a".into(),
                column: 16,
                limit: MAX_EXPANDED_LINE_BYTES
            })
        );
    }
}
