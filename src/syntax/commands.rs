//! The registry of DiskShadow commands: syntax, summary, help and examples, one entry per name
//! that [`crate::syntax::ast::Command::name`] returns. `help` output, `/?` and the help
//! DiskShadow prints after a malformed command all come from here.
//!
//! Wording follows Microsoft's DiskShadow documentation; the layout follows the help DiskShadow
//! prints (`END { BACKUP | RESTORE }`, a blank line, then one parameter per line indented by
//! eight spaces with descriptions starting at column 33).

/// One command's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// The registry name: `"set"`, `"delete shadows"`, `"end"`…
    pub name: &'static str,
    /// The syntax line(s), upper case as DiskShadow prints them.
    pub syntax: &'static str,
    /// One line, for the command list.
    pub summary: &'static str,
    /// The parameter descriptions printed under the syntax (may be empty).
    pub help: &'static str,
    pub examples: &'static [&'static str],
}

impl CommandSpec {
    /// The help block as DiskShadow prints it: the syntax, a blank line, the parameters.
    pub fn help_text(&self) -> String {
        if self.help.is_empty() {
            format!("{}\n\n        {}\n", self.syntax, self.summary)
        } else {
            format!("{}\n\n{}\n", self.syntax, self.help)
        }
    }
}

/// The registry entry called `name` (ASCII case-insensitive).
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|spec| spec.name.eq_ignore_ascii_case(name))
}

/// The entry a help topic names, from its first word: `["end", "backup"]` and `["end"]` give
/// `end`, `["delete"]` gives `delete shadows`, `["/?"]` gives `help`.
pub fn find_topic<S: AsRef<str>>(words: &[S]) -> Option<&'static CommandSpec> {
    let first = words.first()?.as_ref();
    if first == "/?" {
        return find("help");
    }
    let shape = super::shape::find_command(first)?;
    find(shape.name)
}

/// Every command, in the order of DiskShadow's command list, then the extensions.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "set",
        syntax: "SET
SET CONTEXT {CLIENTACCESSIBLE | PERSISTENT [NOWRITERS] | VOLATILE [NOWRITERS]}
SET OPTION {[DIFFERENTIAL | PLEX] [TRANSPORTABLE] [[ROLLBACKRECOVER] [TXFRECOVER] | [NOAUTORECOVER]]}
SET VERBOSE {ON | OFF}
SET METADATA [<drive>:][<path>]<metadata.cab>
SET STEP {ON [HOLD] | OFF}
SET TRACE {ON | OFF}",
        summary: "Sets the context, options, verbose mode, and metadata file for creating shadow copies.",
        help: "        (no parameter)          Lists all current settings.
        CONTEXT                 Sets the context of the shadow copies to create:
          CLIENTACCESSIBLE      Usable by client versions of Windows; persistent by default.
          PERSISTENT            The shadow copy persists across program exit, reset, or restart.
          VOLATILE              The shadow copy is deleted on exit or reset (the default).
          NOWRITERS             Excludes all writers.
        OPTION                  Sets the options of the shadow copies to create:
          DIFFERENTIAL          A point-in-time snapshot (copy-on-write).
          PLEX                  A point-in-time clone copy; cannot be used with DIFFERENTIAL.
          TRANSPORTABLE         The shadow copy is not imported yet; the metadata .cab file is
                                used later to import it on the same or another computer.
          ROLLBACKRECOVER       Signals writers to use autorecover during PostSnapshot.
          TXFRECOVER            Requests VSS to make the shadow copy transactionally
                                consistent during creation.
          NOAUTORECOVER         Stops writers and the file system from performing any recovery
                                changes; cannot be used with TXFRECOVER or ROLLBACKRECOVER.
        VERBOSE                 ON prints details of writer inclusion or exclusion and of
                                metadata compression and extraction.
        METADATA                Name and location of the metadata .cab file used to transfer
                                shadow copies from one computer to another.
        STEP                    (diskshadow extension) ON pauses before each writer event; while
                                writers are frozen the prompt says how long their freeze
                                deadline has left, and the set is aborted at the deadline
                                unless HOLD keeps them frozen past it.
        TRACE                   (diskshadow extension) ON prints each event sent to a writer,
                                each writer's reply and the lines writers log, for writer
                                developers.",
        examples: &[
            "set context persistent nowriters",
            "set option differential transportable",
            "set verbose on",
            "set metadata c:\\diskshadowdata\\example.cab",
        ],
    },
    CommandSpec {
        name: "simulate restore",
        syntax: "SIMULATE RESTORE",
        summary: "Tests writer involvement in restore sessions on the computer without issuing PreRestore or PostRestore events to writers.",
        help: "",
        examples: &["simulate restore"],
    },
    CommandSpec {
        name: "load metadata",
        syntax: "LOAD METADATA [<drive>:][<path>]<metadata.cab>",
        summary: "Loads a metadata .cab file prior to importing a transportable shadow copy or loads the writer metadata in the case of a restore.",
        help: "        <metadata.cab>          The metadata file to load. Aliases saved in it are loaded too.",
        examples: &["load metadata metafile.cab"],
    },
    CommandSpec {
        name: "writer",
        syntax: "WRITER VERIFY {<writer> | <component>}
WRITER EXCLUDE {<writer> | <component>}",
        summary: "Verifies that a writer or component is included or excludes a writer or component from the backup or restore procedure.",
        help: "        VERIFY                  The backup or restore fails if the writer or component is not
                                included.
        EXCLUDE                 Excludes the writer or component from the backup or restore.
        <writer>                A writer ID ({GUID}) or name (System Writer).
        <component>             \"<writer name>:\\<logical path>\\<component>\".",
        examples: &[
            "writer verify {4dc3bdd4-ab48-4d07-adb0-3bee2926fd7f}",
            "writer exclude System Writer",
            "writer exclude \"System Writer:\\System Files\"",
        ],
    },
    CommandSpec {
        name: "add",
        syntax: "ADD
ADD VOLUME <volume> [ALIAS <alias name>] [PROVIDER <provider ID>]
ADD ALIAS <alias name> <alias value>
ADD SHADOW <shadow ID> [<target volume>]",
        summary: "Adds volumes to the set of volumes that are to be shadow copied, or adds aliases to the alias environment.",
        help: "        (no parameter)          Lists the volumes in the Shadow Copy Set and the aliases.
        VOLUME                  Adds a volume to the Shadow Copy Set; ALIAS names its shadow copy,
                                PROVIDER (a provider ID) chooses the provider.
        ALIAS                   Adds an alias to the alias environment at once.
        SHADOW                  Pairs a shadow copy with the volume RESYNC writes it to; without
                                a target, the original volume.",
        examples: &[
            "add volume c: alias systemvolumeshadow",
            "add volume p: provider {b5946137-7b9f-4925-af80-51abd60b20d5}",
            "add alias System1 %VSS_SHADOW_1%",
            "add shadow %TESTSHADOW% %DISKSH_PARAM_2%",
        ],
    },
    CommandSpec {
        name: "create",
        syntax: "CREATE",
        summary: "Starts the shadow copy creation process, using the current context and option settings.",
        help: "",
        examples: &["create"],
    },
    CommandSpec {
        name: "exec",
        syntax: "EXEC <file> [<argument> ...]",
        summary: "Executes a file on the local computer.",
        help: "        <file>                  The script or program to run. If it fails, an error is
                                returned and DiskShadow quits.",
        examples: &["exec c:\\diskshadowdata\\backupscript.cmd"],
    },
    CommandSpec {
        name: "begin",
        syntax: "BEGIN { BACKUP | RESTORE }",
        summary: "Starts a full backup session or a restore session.",
        help: "        BACKUP                  Starts a full backup operation.
        RESTORE                 Starts a restore operation.",
        examples: &["begin backup", "begin restore"],
    },
    CommandSpec {
        name: "end",
        syntax: "END { BACKUP | RESTORE }",
        summary: "Ends a full backup session or a restore session.",
        help: "        BACKUP                  Ends a full backup operation.
        RESTORE                 Ends a restore operation.",
        examples: &["end backup", "end restore"],
    },
    CommandSpec {
        name: "reset",
        syntax: "RESET",
        summary: "Resets DiskShadow to the default state.",
        help: "",
        examples: &["reset"],
    },
    CommandSpec {
        name: "list",
        syntax: "LIST WRITERS [METADATA | DETAILED | STATUS] [--json]
LIST SHADOWS {ALL | SET <set ID> | ID <shadow ID>} [--json]
LIST PROVIDERS [--json]",
        summary: "Lists writers, shadow copies, or currently registered shadow copy providers that are on the system.",
        help: "        WRITERS                 Lists writers: METADATA (the default) their identity, status
                                and components; DETAILED also every file; STATUS only their
                                identity and status.
        SHADOWS                 Lists shadow copies: ALL, the SET of the given ID, or the one
                                shadow copy of the given ID.
        PROVIDERS               Lists the registered shadow copy providers.
        --json                  (diskshadow extension) Lists the same selection as JSON, for
                                machine readers; the writers as their status.",
        examples: &["list writers status", "list shadows all", "list shadows set %VSS_SHADOW_SET%", "list providers", "list shadows all --json"],
    },
    CommandSpec {
        name: "delete shadows",
        syntax: "DELETE SHADOWS {ALL | VOLUME <volume> | OLDEST <volume> | SET <set ID> | ID <shadow ID> | EXPOSED {<drive> | <mount point>}}",
        summary: "Deletes shadow copies.",
        help: "        ALL                     Deletes all shadow copies.
        VOLUME                  Deletes all shadow copies of the given volume.
        OLDEST                  Deletes the oldest shadow copy of the given volume.
        SET                     Deletes the shadow copies in the Shadow Copy Set of the given ID.
        ID                      Deletes the shadow copy of the given ID.
        EXPOSED                 Deletes the shadow copy exposed at the given drive letter or
                                mount point.",
        examples: &["delete shadows all", "delete shadows volume c:", "delete shadows exposed p:"],
    },
    CommandSpec {
        name: "import",
        syntax: "IMPORT",
        summary: "Imports a transportable shadow copy from a loaded metadata file into the system.",
        help: "",
        examples: &["import"],
    },
    CommandSpec {
        name: "mask",
        syntax: "MASK <shadow set ID>",
        summary: "Removes hardware shadow copies that were imported by using the import command.",
        help: "        <shadow set ID>         The set whose shadow copies are removed; an alias may be used.",
        examples: &["mask %Import_1%"],
    },
    CommandSpec {
        name: "expose",
        syntax: "EXPOSE <shadow ID> {<drive:> | <share> | <mount point>}",
        summary: "Exposes a persistent shadow copy as a drive letter, share, or mount point.",
        help: "        <shadow ID>             The shadow copy to expose; an alias may be used.
        <drive:>                A drive letter, such as P:.
        <share>                 A share name.
        <mount point>           A directory, such as C:\\shadowcopy\\.",
        examples: &["expose %vss_shadow_1% x:", "expose %0xdf% e:"],
    },
    CommandSpec {
        name: "unexpose",
        syntax: "UNEXPOSE {<shadow ID> | <drive:> | <share> | <mount point>}",
        summary: "Unexposes a shadow copy that was exposed by using the expose command.",
        help: "        <shadow ID>             The exposed shadow copy; an alias may be used.
        <drive:>                The drive letter it is exposed as, such as P:.
        <share>                 The share it is exposed as.
        <mount point>           The directory it is exposed at.",
        examples: &["unexpose p:"],
    },
    CommandSpec {
        name: "break",
        syntax: "BREAK [WRITABLE] <set ID>",
        summary: "Disassociates a shadow copy volume from VSS.",
        help: "        WRITABLE                Makes the volume read/write; it is read-only otherwise.
        <set ID>                The imported shadow copy set; an alias may be used.",
        examples: &["break writable %Alias1%"],
    },
    CommandSpec {
        name: "revert",
        syntax: "REVERT <shadow ID>",
        summary: "Reverts a volume back to a specified shadow copy.",
        help: "        <shadow ID>             The shadow copy to revert its volume to; an alias may be used.",
        examples: &["revert {ff47165a-1946-4a0c-b7f4-80f46a309278}"],
    },
    CommandSpec {
        name: "resync",
        syntax: "RESYNC [NOVOLCHECK] [REVERT_ORIGINALSIG]",
        summary: "Resynchronizes the volumes paired by ADD SHADOW with their transportable shadow copies.",
        help: "        NOVOLCHECK              Does not perform volume safety checks.
        REVERT_ORIGINALSIG      Gives each target the signature of the original volume.",
        examples: &["resync", "resync novolcheck revert_originalsig"],
    },
    CommandSpec {
        name: "exit",
        syntax: "EXIT",
        summary: "Exits the command interpreter or script.",
        help: "",
        examples: &["exit"],
    },
    CommandSpec {
        name: "help",
        syntax: "HELP [<command>]
<command> /?",
        summary: "Displays the list of commands, or the help of one command.",
        help: "        <command>               The command to describe, such as LIST or DELETE SHADOWS.",
        examples: &["help", "help list", "end /?"],
    },
    CommandSpec {
        name: "map",
        syntax: "MAP
MAP <drive:> <image file or directory>",
        summary: "(diskshadow extension) Lists the drive letters, or maps a drive letter to a volume image file or a directory.",
        help: "        (no parameter)          Lists the drive letter map.
        <drive:>                The drive letter, such as C:.
        <image file or directory>
                                The volume image file, or a directory (a mount point).",
        examples: &["map", "map c: /srv/images/system.img"],
    },
    CommandSpec {
        name: "unmap",
        syntax: "UNMAP <drive:>",
        summary: "(diskshadow extension) Removes a drive letter from the drive letter map.",
        help: "        <drive:>                The drive letter to remove, such as C:.",
        examples: &["unmap c:"],
    },
    CommandSpec {
        name: "attach",
        syntax: "ATTACH <volume> {<directory> | <drive:> | <share> | nbd://<host>:<port>/<export> | nbd+unix:///<export>?socket=<path>}",
        summary: "(diskshadow extension) Serves a live volume read-write as a FUSE file or an NBD export, so every write passes the provider.",
        help: "        <volume>                The volume: a drive letter, an image file or a volume GUID.
        <directory>             A FUSE mount there holds one file, named as the image file, that
                                is the volume; loop-mount it to use its file system.
        <drive:>                The directory the drive map gives the letter.
        <share>                 \\\\host\\name: an NBD export on a socket in the store.
        nbd://...               An NBD export on a loopback port or a Unix socket.",
        examples: &["attach c: /mnt/live", "attach c: nbd://127.0.0.1:10809/c"],
    },
    CommandSpec {
        name: "detach",
        syntax: "DETACH {<volume> | <target>}",
        summary: "(diskshadow extension) Stops serving a volume attached by using the attach command.",
        help: "        <volume>                The attached volume.
        <target>                The directory, drive, share or NBD URL it is served at.",
        examples: &["detach c:"],
    },
];

/// One form of a command as DiskShadow's usage block shows it when that form is given wrong
/// or unknown arguments (reference §4.10): a blank line, the syntax, a blank line, the options
/// indented 8 spaces with descriptions from column 33, and an example where there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageForm {
    /// The registry name of the command.
    pub command: &'static str,
    /// The word after the command name that selects this form (`context` for `set context`).
    pub keyword: &'static str,
    pub syntax: &'static str,
    pub options: &'static [(&'static str, &'static str)],
    pub example: Option<&'static str>,
}

impl UsageForm {
    /// The block's lines, starting with the blank line.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![String::new(), self.syntax.to_string()];
        if !self.options.is_empty() {
            lines.push(String::new());
            for (name, description) in self.options {
                lines.push(format!("        {name:<24}{description}"));
            }
        }
        if let Some(example) = self.example {
            lines.push(String::new());
            lines.push(format!("        Example: {example}"));
        }
        lines
    }
}

/// The forms of commands that have several; a command not listed here has one form, made from
/// its registry entry ([`usage_block`]). The three blocks of §4.10 are verbatim.
pub static USAGE_FORMS: &[UsageForm] = &[
    UsageForm {
        command: "set",
        keyword: "context",
        syntax: "SET CONTEXT { CLIENTACCESSIBLE | PERSISTENT [ NOWRITERS ] | VOLATILE [ NOWRITERS ] }",
        options: &[
            ("CLIENTACCESSIBLE", "Specify to create shadow copies usable by client versions of Windows."),
            ("PERSISTENT", "Specify that shadow copy is persist across program exit, reset or reboot."),
            ("PERSISTENT NOWRITERS", "Specify that shadow copy is persistent and all writers are excluded."),
            ("VOLATILE", "Specify that shadow copy will be deleted on exit or reset."),
            ("VOLATILE NOWRITERS", "Specify that shadow copy is volatile and all writers are excluded."),
        ],
        example: Some("SET CONTEXT CLIENTACCESSIBLE"),
    },
    UsageForm {
        command: "set",
        keyword: "option",
        syntax: "SET OPTION { [ DIFFERENTIAL | PLEX ] [ TRANSPORTABLE ] [ [ ROLLBACKRECOVER ] [ TXFRECOVER ] | [ NOAUTORECOVER ] ] }",
        options: &[
            ("DIFFERENTIAL", "Specify a point-in-time snapshot (copy-on-write)."),
            ("PLEX", "Specify a point-in-time clone copy."),
            ("TRANSPORTABLE", "Specify that shadow copy is not to be imported yet."),
            ("ROLLBACKRECOVER", "Specify that writers use autorecover during PostSnapshot."),
            ("TXFRECOVER", "Specify that shadow copy is made transactionally consistent."),
            ("NOAUTORECOVER", "Specify that writers and the file system perform no recovery."),
        ],
        example: Some("SET OPTION DIFFERENTIAL TRANSPORTABLE"),
    },
    UsageForm {
        command: "set",
        keyword: "verbose",
        syntax: "SET VERBOSE { ON | OFF }",
        options: &[
            ("ON", "Turn on verbose mode. This provides information about writer inclusion/exclusion."),
            ("OFF", "Turn off verbose mode."),
        ],
        example: Some("SET VERBOSE ON"),
    },
    UsageForm {
        command: "set",
        keyword: "metadata",
        syntax: "SET METADATA [<drive>:][<path>]<metadata.cab>",
        options: &[("<metadata.cab>", "Specify the metadata .cab file to create.")],
        example: Some("SET METADATA C:\\DISKSHADOWDATA\\EXAMPLE.CAB"),
    },
    UsageForm {
        command: "set",
        keyword: "step",
        syntax: "SET STEP { ON [ HOLD ] | OFF }",
        options: &[
            ("ON", "(diskshadow extension) Pause before each writer event."),
            (
                "HOLD",
                "Keep frozen writers frozen past their freeze deadline.",
            ),
            ("OFF", "Do not pause."),
        ],
        example: Some("SET STEP ON"),
    },
    UsageForm {
        command: "set",
        keyword: "trace",
        syntax: "SET TRACE { ON | OFF }",
        options: &[
            (
                "ON",
                "(diskshadow extension) Print each writer event, reply and writer log line.",
            ),
            ("OFF", "Do not print them."),
        ],
        example: Some("SET TRACE ON"),
    },
    UsageForm {
        command: "list",
        keyword: "writers",
        syntax: "LIST WRITERS [ METADATA | DETAILED | STATUS ]",
        options: &[
            ("METADATA", "List writer identity, status and components (the default)."),
            ("DETAILED", "List writer metadata including every file."),
            ("STATUS", "List writer identity and status only."),
        ],
        example: Some("LIST WRITERS STATUS"),
    },
    UsageForm {
        command: "list",
        keyword: "shadows",
        syntax: "LIST SHADOWS { ALL | SET <set ID> | ID <shadow ID> }",
        options: &[
            ("ALL", "List all shadow copies on the system."),
            ("SET <set ID>", "List the shadow copies of the given shadow copy set."),
            ("ID <shadow ID>", "List the shadow copy of the given ID."),
        ],
        example: Some("LIST SHADOWS ALL"),
    },
    UsageForm {
        command: "list",
        keyword: "providers",
        syntax: "LIST PROVIDERS",
        options: &[],
        example: Some("LIST PROVIDERS"),
    },
    UsageForm {
        command: "add",
        keyword: "volume",
        syntax: "ADD VOLUME <volume> [ ALIAS <alias name> ] [ PROVIDER <provider ID> ]",
        options: &[
            ("<volume>", "Specify the volume to add to the shadow copy set."),
            ("ALIAS <alias name>", "Specify the alias of the shadow copy to create."),
            ("PROVIDER <provider ID>", "Specify the provider to use."),
        ],
        example: Some("ADD VOLUME C: ALIAS SYSTEMVOLUMESHADOW"),
    },
    UsageForm {
        command: "add",
        keyword: "alias",
        syntax: "ADD ALIAS <alias name> <alias value>",
        options: &[
            ("<alias name>", "Specify the name of the alias."),
            ("<alias value>", "Specify the value of the alias."),
        ],
        example: Some("ADD ALIAS SYSTEM1 %VSS_SHADOW_1%"),
    },
    UsageForm {
        command: "add",
        keyword: "shadow",
        syntax: "ADD SHADOW <shadow ID> [ <target volume> ]",
        options: &[
            ("<shadow ID>", "Specify the shadow copy for RESYNC."),
            ("<target volume>", "Specify the volume to resynchronize; the original by default."),
        ],
        example: Some("ADD SHADOW %TESTSHADOW% %DISKSH_PARAM_2%"),
    },
    UsageForm {
        command: "writer",
        keyword: "verify",
        syntax: "WRITER VERIFY { <writer> | <component> }",
        options: &[
            ("<writer>", "Specify a writer ID or name; the backup fails without it."),
            ("<component>", "Specify a component; the backup fails without it."),
        ],
        example: Some("WRITER VERIFY {4DC3BDD4-AB48-4D07-ADB0-3BEE2926FD7F}"),
    },
    UsageForm {
        command: "writer",
        keyword: "exclude",
        syntax: "WRITER EXCLUDE { <writer> | <component> }",
        options: &[
            ("<writer>", "Specify a writer ID or name to exclude."),
            ("<component>", "Specify a component to exclude."),
        ],
        example: Some("WRITER EXCLUDE \"SYSTEM WRITER:\\SYSTEM FILES\""),
    },
];

/// The usage block DiskShadow prints for a malformed `line` of the command `spec`: the one
/// form the line's keyword selects, else every form of the command; a command with one form
/// shows its syntax and parameters. Lines start with the blank line.
pub fn usage_block(spec: &CommandSpec, line: &str) -> Vec<String> {
    let forms: Vec<&UsageForm> = USAGE_FORMS
        .iter()
        .filter(|form| form.command == spec.name)
        .collect();
    if forms.is_empty() {
        let mut lines = vec![String::new()];
        lines.extend(spec.syntax.lines().map(str::to_string));
        if !spec.help.is_empty() {
            lines.push(String::new());
            lines.extend(spec.help.lines().map(str::to_string));
        }
        return lines;
    }
    let name_words = spec.name.split_whitespace().count();
    let keyword = line.split_whitespace().nth(name_words);
    let chosen: Vec<&UsageForm> = match keyword {
        Some(word) => forms
            .iter()
            .copied()
            .filter(|form| form.keyword.eq_ignore_ascii_case(word))
            .collect(),
        None => Vec::new(),
    };
    let shown = if chosen.is_empty() { forms } else { chosen };
    shown.iter().flat_map(|form| form.lines()).collect()
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn set_verbose_shows_only_its_form_in_windows_layout() {
        let spec = find("set").expect("set");
        assert_eq!(
            usage_block(spec, "set verbose o"),
            [
                "",
                "SET VERBOSE { ON | OFF }",
                "",
                "        ON                      Turn on verbose mode. This provides information about writer inclusion/exclusion.",
                "        OFF                     Turn off verbose mode.",
                "",
                "        Example: SET VERBOSE ON",
            ]
        );
    }

    #[test]
    fn end_shows_its_one_form() {
        let spec = find("end").expect("end");
        assert_eq!(
            usage_block(spec, "END backu"),
            [
                "",
                "END { BACKUP | RESTORE }",
                "",
                "        BACKUP                  Ends a full backup operation.",
                "        RESTORE                 Ends a restore operation.",
            ]
        );
    }

    #[test]
    fn every_form_names_a_command_and_an_unknown_keyword_shows_them_all() {
        for form in USAGE_FORMS {
            assert!(find(form.command).is_some(), "{}", form.command);
        }
        let spec = find("set").expect("set");
        let block = usage_block(spec, "set nonsense");
        assert_eq!(
            block.iter().filter(|line| line.starts_with("SET ")).count(),
            6
        );
    }
}
