//! The DiskShadow language from the outside: every command in every documented form, lexical
//! rules, a corpus of real scripts, every diagnostic code with its position, rendered
//! diagnostics and help texts as snapshots, and a property test that parsing never panics.

use diskshadow::syntax::ast::{Command, Span};
use diskshadow::syntax::commands::{self, COMMANDS};
use diskshadow::syntax::{parse_line, parse_script, SyntaxError, SyntaxErrorKind};
use proptest::prelude::*;

/// The command of `line` as compact JSON without spans, so expectations read like the AST.
fn ast(line: &str) -> String {
    let command = match parse_line(line) {
        Ok(Some(command)) => command,
        Ok(None) => panic!("{line:?}: no command"),
        Err(error) => panic!("{line:?}: {} ({})", error, error.code_str()),
    };
    let json = serde_json::to_string(&command).expect("commands serialize");
    strip_spans(&json)
}

/// Removes every `,"span":{"start":N,"end":N}` (a word's span follows its text).
fn strip_spans(json: &str) -> String {
    let mut rest = json;
    let mut stripped = String::new();
    while let Some(position) = rest.find(",\"span\":{") {
        stripped.push_str(&rest[..position]);
        let after = &rest[position..];
        let close = after.find('}').expect("a span object closes");
        rest = &after[close + 1..];
    }
    stripped.push_str(rest);
    stripped
}

fn error_of(line: &str) -> SyntaxError {
    match parse_line(line) {
        Err(error) => error,
        Ok(command) => panic!("{line:?} parsed as {command:?}"),
    }
}

#[test]
fn set_in_every_form() {
    assert_eq!(ast("set"), r#"{"Set":"Show"}"#);
    assert_eq!(
        ast("set context clientaccessible"),
        r#"{"Set":{"Context":"ClientAccessible"}}"#
    );
    assert_eq!(
        ast("set context persistent"),
        r#"{"Set":{"Context":{"Persistent":{"no_writers":false}}}}"#
    );
    assert_eq!(
        ast("set context persistent nowriters"),
        r#"{"Set":{"Context":{"Persistent":{"no_writers":true}}}}"#
    );
    assert_eq!(
        ast("set context volatile"),
        r#"{"Set":{"Context":{"Volatile":{"no_writers":false}}}}"#
    );
    assert_eq!(
        ast("set context volatile nowriters"),
        r#"{"Set":{"Context":{"Volatile":{"no_writers":true}}}}"#
    );
    assert_eq!(
        ast("set option differential transportable rollbackrecover txfrecover"),
        r#"{"Set":{"Option":{"copy_method":"Differential","transportable":true,"rollback_recover":true,"txf_recover":true,"no_auto_recover":false}}}"#
    );
    assert_eq!(
        ast("set option plex noautorecover"),
        r#"{"Set":{"Option":{"copy_method":"Plex","transportable":false,"rollback_recover":false,"txf_recover":false,"no_auto_recover":true}}}"#
    );
    assert_eq!(ast("set verbose on"), r#"{"Set":{"Verbose":true}}"#);
    assert_eq!(ast("set verbose off"), r#"{"Set":{"Verbose":false}}"#);
    assert_eq!(
        ast(r"set metadata c:\diskshadowdata\example.cab"),
        r#"{"Set":{"Metadata":{"text":"c:\\diskshadowdata\\example.cab"}}}"#
    );
    assert_eq!(
        ast("set step on"),
        r#"{"Set":{"Step":{"on":true,"hold":false}}}"#
    );
    assert_eq!(
        ast("SET STEP ON HOLD"),
        r#"{"Set":{"Step":{"on":true,"hold":true}}}"#
    );
    assert_eq!(
        ast("set step off"),
        r#"{"Set":{"Step":{"on":false,"hold":false}}}"#
    );
}

#[test]
fn set_context_transportable_is_an_option_with_a_warning() {
    let parsed = parse_script("SET CONTEXT PERSISTENT\nSET CONTEXT TRANSPORTABLE\n");
    assert!(parsed.errors.is_empty());
    assert_eq!(parsed.warnings.len(), 1);
    let warning = &parsed.warnings[0];
    assert_eq!(warning.code_str(), "dsh::parse::set_context_transportable");
    assert_eq!((warning.line(), warning.column()), (2, 13));
    assert_eq!(warning.kind(), SyntaxErrorKind::SetContextTransportable);
    assert_eq!(
        ast("SET CONTEXT TRANSPORTABLE"),
        r#"{"Set":{"Option":{"copy_method":null,"transportable":true,"rollback_recover":false,"txf_recover":false,"no_auto_recover":false}}}"#
    );
}

#[test]
fn session_commands() {
    assert_eq!(ast("simulate restore"), r#""SimulateRestore""#);
    assert_eq!(
        ast("load metadata metafile.cab"),
        r#"{"LoadMetadata":{"path":{"text":"metafile.cab"}}}"#
    );
    assert_eq!(ast("create"), r#""Create""#);
    assert_eq!(ast("begin backup"), r#""BeginBackup""#);
    assert_eq!(ast("begin restore"), r#""BeginRestore""#);
    assert_eq!(ast("end backup"), r#""EndBackup""#);
    assert_eq!(ast("end restore"), r#""EndRestore""#);
    assert_eq!(ast("reset"), r#""Reset""#);
    assert_eq!(ast("import"), r#""Import""#);
    assert_eq!(ast("exit"), r#""Exit""#);
}

#[test]
fn writer_targets_run_to_the_end_of_the_line() {
    assert_eq!(
        ast("writer exclude System Writer"),
        r#"{"Writer":{"action":"Exclude","target":{"text":"System Writer"}}}"#
    );
    assert_eq!(
        ast("writer exclude\tSystem   Writer  # not this"),
        r#"{"Writer":{"action":"Exclude","target":{"text":"System Writer"}}}"#
    );
    assert_eq!(
        ast(r#"writer exclude "System Writer:\System Files""#),
        r#"{"Writer":{"action":"Exclude","target":{"text":"System Writer:\\System Files"}}}"#
    );
    assert_eq!(
        ast("writer verify {4dc3bdd4-ab48-4d07-adb0-3bee2926fd7f}"),
        r#"{"Writer":{"action":"Verify","target":{"text":"{4dc3bdd4-ab48-4d07-adb0-3bee2926fd7f}"}}}"#
    );
    let Ok(Some(Command::Writer { target, .. })) = parse_line("writer exclude System  Writer")
    else {
        panic!("writer did not parse");
    };
    assert_eq!(target.span, Span::new(15, 29));
}

#[test]
fn add_in_every_form() {
    assert_eq!(ast("add"), r#"{"Add":"Show"}"#);
    assert_eq!(
        ast("add volume c:"),
        r#"{"Add":{"Volume":{"volume":{"text":"c:"},"alias":null,"provider":null}}}"#
    );
    let both = r#"{"Add":{"Volume":{"volume":{"text":"c:"},"alias":{"text":"sys"},"provider":{"text":"{b5946137-7b9f-4925-af80-51abd60b20d5}"}}}}"#;
    assert_eq!(
        ast("add volume c: alias sys provider {b5946137-7b9f-4925-af80-51abd60b20d5}"),
        both
    );
    assert_eq!(
        ast("add volume c: provider {b5946137-7b9f-4925-af80-51abd60b20d5} alias sys"),
        both
    );
    assert_eq!(
        ast(r"add volume \\smbsofs\vm\vm1"),
        r#"{"Add":{"Volume":{"volume":{"text":"\\\\smbsofs\\vm\\vm1"},"alias":null,"provider":null}}}"#
    );
    assert_eq!(
        ast("add alias System1 %VSS_SHADOW_1%"),
        r#"{"Add":{"Alias":{"name":{"text":"System1"},"value":{"text":"%VSS_SHADOW_1%"}}}}"#
    );
    assert_eq!(
        ast("add shadow %TESTSHADOW%"),
        r#"{"Add":{"Shadow":{"shadow":{"text":"%TESTSHADOW%"},"target":null}}}"#
    );
    assert_eq!(
        ast("add shadow %TESTSHADOW% %DISKSH_PARAM_2%"),
        r#"{"Add":{"Shadow":{"shadow":{"text":"%TESTSHADOW%"},"target":{"text":"%DISKSH_PARAM_2%"}}}}"#
    );
}

#[test]
fn exec_passes_every_argument() {
    assert_eq!(
        ast(r"exec c:\diskshadowdata\backupscript.cmd"),
        r#"{"Exec":{"program":{"text":"c:\\diskshadowdata\\backupscript.cmd"},"arguments":[]}}"#
    );
    assert_eq!(
        ast(r#"exec "C:\My Scripts\copy.cmd" /E "a b" /?"#),
        r#"{"Exec":{"program":{"text":"C:\\My Scripts\\copy.cmd"},"arguments":[{"text":"/E"},{"text":"a b"},{"text":"/?"}]}}"#
    );
}

#[test]
fn list_in_every_form() {
    // (line, the listed subject, whether diskshadow's own `--json` was given)
    let cases = [
        ("list writers", r#"{"Writers":"Metadata"}"#, false),
        ("list writers metadata", r#"{"Writers":"Metadata"}"#, false),
        ("list writers detailed", r#"{"Writers":"Detailed"}"#, false),
        ("list writers status", r#"{"Writers":"Status"}"#, false),
        ("list shadows all", r#"{"Shadows":"All"}"#, false),
        (
            "list shadows set %VSS_SHADOW_SET%",
            r#"{"Shadows":{"Set":{"text":"%VSS_SHADOW_SET%"}}}"#,
            false,
        ),
        (
            "list shadows id {ff47165a-1946-4a0c-b7f4-80f46a309278}",
            r#"{"Shadows":{"Id":{"text":"{ff47165a-1946-4a0c-b7f4-80f46a309278}"}}}"#,
            false,
        ),
        ("list providers", r#""Providers""#, false),
        ("list writers --json", r#"{"Writers":"Metadata"}"#, true),
        (
            "LIST WRITERS STATUS --JSON",
            r#"{"Writers":"Status"}"#,
            true,
        ),
        ("list shadows all --json", r#"{"Shadows":"All"}"#, true),
        (
            "list shadows set %VSS_SHADOW_SET% --json",
            r#"{"Shadows":{"Set":{"text":"%VSS_SHADOW_SET%"}}}"#,
            true,
        ),
        ("list providers --json", r#""Providers""#, true),
    ];
    for (line, subject, json) in cases {
        assert_eq!(
            ast(line),
            format!(r#"{{"List":{{"list":{subject},"json":{json}}}}}"#),
            "{line}"
        );
    }
}

#[test]
fn delete_shadows_in_every_form() {
    assert_eq!(ast("delete shadows all"), r#"{"DeleteShadows":"All"}"#);
    assert_eq!(
        ast("delete shadows volume c:"),
        r#"{"DeleteShadows":{"Volume":{"text":"c:"}}}"#
    );
    assert_eq!(
        ast("delete shadows oldest c:"),
        r#"{"DeleteShadows":{"Oldest":{"text":"c:"}}}"#
    );
    assert_eq!(
        ast("delete shadows set %s%"),
        r#"{"DeleteShadows":{"Set":{"text":"%s%"}}}"#
    );
    assert_eq!(
        ast("delete shadows id %x%"),
        r#"{"DeleteShadows":{"Id":{"text":"%x%"}}}"#
    );
    assert_eq!(
        ast("delete shadows exposed p:"),
        r#"{"DeleteShadows":{"Exposed":{"text":"p:"}}}"#
    );
    assert_eq!(
        ast(r"Delete Shadows Exposed C:\mountPoint"),
        r#"{"DeleteShadows":{"Exposed":{"text":"C:\\mountPoint"}}}"#
    );
}

#[test]
fn shadow_management_commands() {
    assert_eq!(
        ast("mask %Import_1%"),
        r#"{"Mask":{"shadow_set":{"text":"%Import_1%"}}}"#
    );
    assert_eq!(
        ast("expose %vss_shadow_1% x:"),
        r#"{"Expose":{"shadow":{"text":"%vss_shadow_1%"},"target":{"text":"x:"}}}"#
    );
    assert_eq!(
        ast(r"expose %s% C:\shadowcopy\"),
        r#"{"Expose":{"shadow":{"text":"%s%"},"target":{"text":"C:\\shadowcopy\\"}}}"#
    );
    assert_eq!(
        ast(r"unexpose \\MachineName"),
        r#"{"Unexpose":{"target":{"text":"\\\\MachineName"}}}"#
    );
    assert_eq!(
        ast("break %a%"),
        r#"{"Break":{"writable":false,"shadow_set":{"text":"%a%"}}}"#
    );
    assert_eq!(
        ast("break writable %Alias1%"),
        r#"{"Break":{"writable":true,"shadow_set":{"text":"%Alias1%"}}}"#
    );
    assert_eq!(ast("revert %s%"), r#"{"Revert":{"shadow":{"text":"%s%"}}}"#);
    assert_eq!(
        ast("resync"),
        r#"{"Resync":{"no_volume_check":false,"revert_original_signature":false}}"#
    );
    assert_eq!(
        ast("resync revert_originalsig"),
        r#"{"Resync":{"no_volume_check":false,"revert_original_signature":true}}"#
    );
    assert_eq!(
        ast("RESYNC REVERT_ORIGINALSIG NOVOLCHECK"),
        r#"{"Resync":{"no_volume_check":true,"revert_original_signature":true}}"#
    );
}

#[test]
fn help_forms() {
    assert_eq!(ast("help"), r#"{"Help":{"topic":[]}}"#);
    assert_eq!(ast("/?"), r#"{"Help":{"topic":[]}}"#);
    assert_eq!(
        ast("help delete shadows"),
        r#"{"Help":{"topic":[{"text":"delete"},{"text":"shadows"}]}}"#
    );
    assert_eq!(ast("end /?"), r#"{"Help":{"topic":[{"text":"end"}]}}"#);
    assert_eq!(
        ast("set context /?"),
        r#"{"Help":{"topic":[{"text":"set"},{"text":"context"}]}}"#
    );
    assert_eq!(ast("exec /?"), r#"{"Help":{"topic":[{"text":"exec"}]}}"#);
    assert_eq!(
        commands::find_topic(&["end", "backup"]).map(|spec| spec.name),
        Some("end")
    );
    assert_eq!(
        commands::find_topic(&["DELETE"]).map(|spec| spec.name),
        Some("delete shadows")
    );
    assert_eq!(
        commands::find_topic(&["/?"]).map(|spec| spec.name),
        Some("help")
    );
    assert_eq!(commands::find_topic(&["nothing"]), None);
}

#[test]
fn extensions() {
    assert_eq!(ast("map"), r#"{"Map":"Show"}"#);
    assert_eq!(
        ast("map c: /srv/images/c.img"),
        r#"{"Map":{"Map":{"drive":{"text":"c:"},"target":{"text":"/srv/images/c.img"}}}}"#
    );
    assert_eq!(
        ast("unmap C:"),
        r#"{"Map":{"Unmap":{"drive":{"text":"C:"}}}}"#
    );
    assert_eq!(
        ast("attach c: nbd://127.0.0.1:10809/c"),
        r#"{"Attach":{"volume":{"text":"c:"},"target":{"text":"nbd://127.0.0.1:10809/c"}}}"#
    );
    assert_eq!(ast("detach c:"), r#"{"Detach":{"target":{"text":"c:"}}}"#);
    assert_eq!(
        parse_line("unmap c:")
            .ok()
            .flatten()
            .map(|command| command.name()),
        Some("unmap")
    );
    // The language takes the drive letters the engine and the commands take: one parser.
    for drive in ["c:", "C:\\", "d:/"] {
        assert!(parse_line(&format!("unmap {drive}")).is_ok(), "{drive}");
    }
    for drive in ["cc", "1:", "c:\\dir", "c:/dir"] {
        assert_eq!(
            error_of(&format!("unmap {drive}")).kind(),
            SyntaxErrorKind::InvalidDriveLetter,
            "{drive}"
        );
    }
}

#[test]
fn lexical_rules() {
    assert_eq!(ast("CrEaTe"), r#""Create""#);
    assert_eq!(ast("  \tEND\t\tbackup  "), r#""EndBackup""#);
    assert_eq!(ast("end backup\r\n"), r#""EndBackup""#);
    assert_eq!(ast("end backup # done"), r#""EndBackup""#);
    assert_eq!(ast("end backup\t#done"), r#""EndBackup""#);
    assert_eq!(
        ast(r"set metadata c:\a#b.cab"),
        r#"{"Set":{"Metadata":{"text":"c:\\a#b.cab"}}}"#
    );
    assert_eq!(
        ast(r#"set metadata "C:\My Files\meta data.cab""#),
        r#"{"Set":{"Metadata":{"text":"C:\\My Files\\meta data.cab"}}}"#
    );
    assert_eq!(
        ast(r#"set metadata "C:\My Files"\meta.cab"#),
        r#"{"Set":{"Metadata":{"text":"C:\\My Files\\meta.cab"}}}"#
    );
    assert_eq!(
        ast(r##"set metadata "#x""##),
        r##"{"Set":{"Metadata":{"text":"#x"}}}"##
    );
    assert_eq!(
        ast(r"add volume \\?\Volume{6cd5140b-0000-0000-0000-602200000000}\"),
        r#"{"Add":{"Volume":{"volume":{"text":"\\\\?\\Volume{6cd5140b-0000-0000-0000-602200000000}\\"},"alias":null,"provider":null}}}"#
    );
    assert_eq!(parse_line("").ok(), Some(None));
    assert_eq!(parse_line("   \t ").ok(), Some(None));
    assert_eq!(parse_line("# comment").ok(), Some(None));
    assert_eq!(parse_line("\t  #comment").ok(), Some(None));
    // A quoted keyword is an argument, never a keyword.
    assert_eq!(
        error_of(r#""create""#).code_str(),
        "dsh::parse::unknown_command"
    );
}

#[test]
fn script_lines_keep_numbers_text_and_spans() {
    let source = "# head\r\n\r\n  set context persistent   # keep\r\ncreate\r\nfrob\r\n";
    let parsed = parse_script(source);
    let lines = &parsed.script.lines;
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0].text, "# head");
    assert!(lines[0].command.is_none());
    assert_eq!(lines[1].text, "");
    assert_eq!(lines[2].number, 3);
    assert_eq!(lines[2].text, "set context persistent");
    assert_eq!(
        &source[lines[2].span.start..lines[2].span.end],
        "set context persistent"
    );
    assert_eq!(lines[3].text, "create");
    assert!(lines[3].command.is_some());
    assert_eq!(lines[4].text, "frob");
    assert!(lines[4].command.is_none());
    assert_eq!(lines[5].text, "");
    assert_eq!(parsed.errors.len(), 1);
    assert_eq!((parsed.errors[0].line(), parsed.errors[0].column()), (5, 1));
}

#[test]
fn every_error_in_a_script_is_collected() {
    let parsed =
        parse_script("creat\nend backu\nexpose %x%\ncreate\nset option plex differential\n");
    let found: Vec<(&str, usize, usize)> = parsed
        .errors
        .iter()
        .map(|error| (error.code_str(), error.line(), error.column()))
        .collect();
    assert_eq!(
        found,
        [
            ("dsh::parse::unknown_command", 1, 1),
            ("dsh::parse::unknown_keyword", 2, 5),
            ("dsh::parse::missing_argument", 3, 11),
            ("dsh::parse::conflicting_options", 5, 17),
        ]
    );
    let commands: Vec<bool> = parsed
        .script
        .lines
        .iter()
        .map(|line| line.command.is_some())
        .collect();
    assert_eq!(commands, [false, false, false, true, false, false]);
}

/// (line, code, line number, column, command name, suggestion)
type Expectation = (
    &'static str,
    &'static str,
    usize,
    usize,
    Option<&'static str>,
    Option<&'static str>,
);

#[test]
fn each_diagnostic_code_at_its_position() {
    #[rustfmt::skip]
    let cases: &[Expectation] = &[
        ("creat", "dsh::parse::unknown_command", 1, 1, None, Some("create")),
        ("  lsit writers", "dsh::parse::unknown_command", 1, 3, None, Some("list")),
        ("frobnicate", "dsh::parse::unknown_command", 1, 1, None, None),
        ("end backu", "dsh::parse::unknown_keyword", 1, 5, Some("end"), Some("backup")),
        ("set option differential tranportable", "dsh::parse::unknown_keyword", 1, 25, Some("set"), Some("transportable")),
        ("set verbose maybe", "dsh::parse::unknown_keyword", 1, 13, Some("set"), None),
        ("list shadows {ff47165a-1946-4a0c-b7f4-80f46a309278}", "dsh::parse::unknown_keyword", 1, 14, Some("list"), None),
        ("add volume c: alais x", "dsh::parse::unknown_keyword", 1, 15, Some("add"), Some("alias")),
        ("end", "dsh::parse::missing_argument", 1, 4, Some("end"), None),
        ("set verbose", "dsh::parse::missing_argument", 1, 12, Some("set"), None),
        ("set option", "dsh::parse::missing_argument", 1, 11, Some("set"), None),
        ("expose %x%", "dsh::parse::missing_argument", 1, 11, Some("expose"), None),
        ("add volume c: alias", "dsh::parse::missing_argument", 1, 20, Some("add"), None),
        ("break writable", "dsh::parse::missing_argument", 1, 15, Some("break"), None),
        ("delete shadows", "dsh::parse::missing_argument", 1, 15, Some("delete shadows"), None),
        ("writer exclude", "dsh::parse::missing_argument", 1, 15, Some("writer"), None),
        ("create now", "dsh::parse::unexpected_argument", 1, 8, Some("create"), None),
        (r"set metadata C:\My Files\x.cab", "dsh::parse::unexpected_argument", 1, 20, Some("set"), None),
        ("list writers status please", "dsh::parse::unexpected_argument", 1, 21, Some("list"), None),
        ("set context clientaccessible nowriters", "dsh::parse::unexpected_argument", 1, 30, Some("set"), None),
        ("set option differential plex", "dsh::parse::conflicting_options", 1, 25, Some("set"), None),
        ("set option rollbackrecover noautorecover", "dsh::parse::conflicting_options", 1, 28, Some("set"), None),
        ("set option noautorecover txfrecover", "dsh::parse::conflicting_options", 1, 26, Some("set"), None),
        ("set option transportable TRANSPORTABLE", "dsh::parse::duplicate_keyword", 1, 26, Some("set"), None),
        ("resync novolcheck novolcheck", "dsh::parse::duplicate_keyword", 1, 19, Some("resync"), None),
        ("add volume c: alias a alias b", "dsh::parse::duplicate_keyword", 1, 23, Some("add"), None),
        (r#"set metadata "C:\My Files\x.cab"#, "dsh::parse::unterminated_quote", 1, 14, Some("set"), None),
        ("help frob", "dsh::parse::unknown_help_topic", 1, 6, Some("help"), None),
        ("help lst", "dsh::parse::unknown_help_topic", 1, 6, Some("help"), Some("list")),
        ("map cc /x.img", "dsh::parse::invalid_drive_letter", 1, 5, Some("map"), None),
        ("unmap 1:", "dsh::parse::invalid_drive_letter", 1, 7, Some("unmap"), None),
        ("create\nexit", "dsh::parse::multiple_lines", 1, 7, None, None),
    ];
    for (line, code, line_number, column, command_name, suggestion) in cases {
        let error = error_of(line);
        assert_eq!(error.code_str(), *code, "{line:?}: {error}");
        assert_eq!(
            (error.line(), error.column()),
            (*line_number, *column),
            "{line:?}: {error}"
        );
        assert_eq!(error.command_name(), *command_name, "{line:?}");
        assert_eq!(error.suggestion(), *suggestion, "{line:?}");
        assert!(!error.help_text().is_empty(), "{line:?} has no help");
        assert!(error.span().end <= line.len(), "{line:?}");
    }
}

#[test]
fn columns_count_characters_not_bytes() {
    let parsed = parse_script("set metadata \"é\"\néé creat\n");
    assert_eq!(parsed.errors.len(), 1);
    assert_eq!((parsed.errors[0].line(), parsed.errors[0].column()), (2, 1));
    let error = error_of("expose é");
    assert_eq!(error.column(), 9);
}

#[test]
fn references_in_keyword_positions_are_checked_after_expansion() {
    let parsed = parse_script("set context %CTX%\n%CMD% backup\nmap %D% /x.img\ncreate\n");
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let codes: Vec<(&str, usize)> = parsed
        .warnings
        .iter()
        .map(|warning| (warning.code_str(), warning.line()))
        .collect();
    assert_eq!(
        codes,
        [
            ("dsh::parse::unexpanded_reference", 1),
            ("dsh::parse::unexpanded_reference", 2),
            ("dsh::parse::unexpanded_reference", 3),
        ]
    );
    assert!(parsed.script.lines[0].command.is_none());
    // Once expanded, the session parses the line again; a reference left over is an error.
    assert_eq!(
        error_of("set context %CTX%").code_str(),
        "dsh::parse::unknown_keyword"
    );
}

#[test]
fn corpus_of_real_scripts_parses_without_errors() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scripts");
    let mut scripts: Vec<_> = std::fs::read_dir(&folder)
        .expect("the fixture folder exists")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "dsh"))
        .collect();
    scripts.sort();
    assert!(
        scripts.len() >= 10,
        "the corpus glob matched only {} scripts",
        scripts.len()
    );
    let mut saw_crlf = false;
    for path in &scripts {
        let source = std::fs::read_to_string(path).expect("fixtures are UTF-8");
        saw_crlf |= source.contains("\r\n");
        let parsed = parse_script(&source);
        assert!(
            parsed.errors.is_empty(),
            "{}: {:#?}",
            path.display(),
            parsed.errors
        );
        let commands = parsed
            .script
            .lines
            .iter()
            .filter(|line| line.command.is_some())
            .count();
        assert!(commands > 0, "{} has no command", path.display());
        for line in &parsed.script.lines {
            assert!(
                !line.text.ends_with('\r'),
                "{}: {:?}",
                path.display(),
                line.text
            );
            if let Some(command) = &line.command {
                assert!(
                    !line.text.contains(" #"),
                    "{}: {:?}",
                    path.display(),
                    line.text
                );
                // The session parses the (expanded) text again just before running it.
                let again = parse_line(&line.text).ok().flatten();
                assert_eq!(
                    again.map(|again| again.name()),
                    Some(command.name()),
                    "{:?}",
                    line.text
                );
            }
        }
    }
    assert!(saw_crlf, "the corpus must hold a CRLF script");
}

#[test]
fn import_sample_warns_about_its_context_line() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scripts/import_sample.dsh");
    let parsed = parse_script(&std::fs::read_to_string(path).expect("fixture"));
    let codes: Vec<&str> = parsed.warnings.iter().map(SyntaxError::code_str).collect();
    assert_eq!(codes, ["dsh::parse::set_context_transportable"]);
}

fn render(error: SyntaxError, source: &str) -> String {
    let report = error.with_source("script.dsh", source);
    let mut rendered = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut rendered, report.as_ref())
        .expect("rendering into a string cannot fail");
    rendered
}

#[test]
fn rendered_diagnostics() {
    let cases = [
        ("unknown_command", "set context persistent\ncreat\n"),
        ("unknown_keyword", "begin backup\nend backu\n"),
        ("missing_argument", "expose %cdrive%\n"),
        (
            "unexpected_argument",
            "set metadata C:\\My Files\\meta.cab\n",
        ),
        (
            "conflicting_options",
            "set option differential transportable plex\n",
        ),
        ("duplicate_keyword", "resync novolcheck NOVOLCHECK\n"),
        (
            "unterminated_quote",
            "load metadata \"C:\\backups\\vm1.cab\n",
        ),
        ("unknown_help_topic", "help lsit\n"),
        ("invalid_drive_letter", "map cdrive /srv/c.img\n"),
        ("set_context_transportable", "SET CONTEXT TRANSPORTABLE\n"),
        ("unexpanded_reference", "set context %MODE%\n"),
    ];
    for (name, source) in cases {
        let parsed = parse_script(source);
        let diagnostic = parsed
            .errors
            .into_iter()
            .chain(parsed.warnings)
            .next()
            .unwrap_or_else(|| panic!("{name}: no diagnostic"));
        assert!(
            diagnostic.code_str().ends_with(name),
            "{name}: {}",
            diagnostic.code_str()
        );
        let rendered = render(diagnostic, source);
        insta::with_settings!({snapshot_path => "../snapshots/syntax", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("diagnostic_{name}"), rendered);
        });
    }
}

#[test]
fn help_texts_of_every_command() {
    let mut all = String::new();
    for spec in COMMANDS {
        all.push_str(&format!("==== {} — {}\n", spec.name, spec.summary));
        all.push_str(&spec.help_text());
        all.push('\n');
    }
    insta::with_settings!({snapshot_path => "../snapshots/syntax", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("help_texts", all);
    });
}

fn check_span(source: &str, span: Span, what: &str) {
    assert!(
        span.start <= span.end && span.end <= source.len(),
        "{what}: {span:?} outside {source:?}"
    );
    assert!(
        source.is_char_boundary(span.start) && source.is_char_boundary(span.end),
        "{what}: {span:?}"
    );
}

fn script_text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("set".to_string()),
        Just("context".to_string()),
        Just("option".to_string()),
        Just("add volume".to_string()),
        Just("list shadows".to_string()),
        Just("end".to_string()),
        Just("/?".to_string()),
        Just("\"".to_string()),
        Just("#".to_string()),
        Just("%x%".to_string()),
        Just("\r\n".to_string()),
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("é".to_string()),
        any::<String>(),
    ];
    proptest::collection::vec(pieces, 0..24).prop_map(|pieces| pieces.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn parsing_never_panics_and_spans_stay_in_the_source(source in script_text()) {
        let parsed = parse_script(&source);
        for diagnostic in parsed.errors.iter().chain(&parsed.warnings) {
            check_span(&source, diagnostic.span(), diagnostic.code_str());
            prop_assert!(diagnostic.line() >= 1 && diagnostic.column() >= 1);
        }
        let line_count = source.split('\n').count();
        prop_assert_eq!(parsed.script.lines.len(), line_count);
        for line in &parsed.script.lines {
            check_span(&source, line.span, "line");
            prop_assert_eq!(&source[line.span.start..line.span.end], line.text.as_str());
        }
        for line in source.split('\n') {
            if let Err(error) = parse_line(line) {
                check_span(line, error.span(), error.code_str());
            }
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(source in any::<String>()) {
        let parsed = parse_script(&source);
        for diagnostic in parsed.errors.iter().chain(&parsed.warnings) {
            check_span(&source, diagnostic.span(), diagnostic.code_str());
        }
        let _ = parse_line(&source);
        let _ = diskshadow::syntax::completions(&source);
    }
}
