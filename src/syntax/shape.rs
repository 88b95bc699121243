//! The shape of every command as data: which keywords and arguments may follow which.
//!
//! The pest grammar decides whether a line is valid; this table explains *why* a line the grammar
//! rejected is wrong (diagnosis), and lists what may come next (completion). It follows PEG
//! semantics (greedy, no backtracking) so that, word for word, it accepts exactly the lines the
//! grammar's `statement` accepts. `tests::shape_agrees_with_grammar` checks that on random lines.

/// One keyword alternative and what follows it.
#[derive(Debug)]
pub(crate) struct Branch {
    pub keyword: &'static str,
    /// Accepted, but never completed or suggested (`set context transportable`).
    pub hidden: bool,
    pub next: Node,
}

const fn branch(keyword: &'static str, next: Node) -> Branch {
    Branch {
        keyword,
        hidden: false,
        next,
    }
}

#[derive(Debug)]
pub(crate) enum Node {
    /// The command is complete; no word may follow.
    End,
    /// One of `branches`. When `optional`, the line may also end here.
    Keywords {
        optional: bool,
        branches: &'static [Branch],
    },
    /// Exactly one argument word.
    Argument {
        name: &'static str,
        next: &'static Node,
    },
    /// The line may end here; otherwise one argument word, then `next`.
    OptionalArgument {
        name: &'static str,
        next: &'static Node,
    },
    /// Every remaining word is an argument; at least `min` of them.
    Rest { name: &'static str, min: usize },
    /// Flags in any order up to the end of the line, at least `min` of them. Repeats are
    /// accepted here and rejected while lowering, with the exact span of the repeat.
    Flags {
        flags: &'static [&'static str],
        min: usize,
    },
    /// `keyword`, if present, then `next`.
    OptionalKeyword {
        keyword: &'static str,
        next: &'static Node,
    },
    /// `keyword <argument>` clauses in any order up to the end of the line.
    Clauses {
        clauses: &'static [(&'static str, &'static str)],
    },
}

/// A command: its first word, its registry name ([`crate::syntax::commands::CommandSpec`]) and
/// the shape of what follows the first word.
#[derive(Debug)]
pub(crate) struct CommandShape {
    pub word: &'static str,
    pub name: &'static str,
    pub node: Node,
}

const ON_OFF: &[Branch] = &[branch("on", Node::End), branch("off", Node::End)];
const STEP_ON_OFF: &[Branch] = &[
    branch(
        "on",
        Node::Keywords {
            optional: true,
            branches: &[branch("hold", Node::End)],
        },
    ),
    branch("off", Node::End),
];
/// `--json` may end a `list` command (diskshadow's own switch).
const JSON_SWITCH: Node = Node::Keywords {
    optional: true,
    branches: &[branch("--json", Node::End)],
};
const BACKUP_RESTORE: &[Branch] = &[branch("backup", Node::End), branch("restore", Node::End)];

pub(crate) static COMMAND_SHAPES: &[CommandShape] = &[
    CommandShape {
        word: "set",
        name: "set",
        node: Node::Keywords {
            optional: true,
            branches: &[
                branch(
                    "context",
                    Node::Keywords {
                        optional: false,
                        branches: &[
                            branch("clientaccessible", Node::End),
                            branch(
                                "persistent",
                                Node::Flags {
                                    flags: &["nowriters"],
                                    min: 0,
                                },
                            ),
                            branch(
                                "volatile",
                                Node::Flags {
                                    flags: &["nowriters"],
                                    min: 0,
                                },
                            ),
                            Branch {
                                keyword: "transportable",
                                hidden: true,
                                next: Node::End,
                            },
                        ],
                    },
                ),
                branch(
                    "option",
                    Node::Flags {
                        flags: &[
                            "differential",
                            "plex",
                            "transportable",
                            "rollbackrecover",
                            "txfrecover",
                            "noautorecover",
                        ],
                        min: 1,
                    },
                ),
                branch(
                    "verbose",
                    Node::Keywords {
                        optional: false,
                        branches: ON_OFF,
                    },
                ),
                branch(
                    "metadata",
                    Node::Argument {
                        name: "<metadata.cab>",
                        next: &Node::End,
                    },
                ),
                branch(
                    "step",
                    Node::Keywords {
                        optional: false,
                        branches: STEP_ON_OFF,
                    },
                ),
                branch(
                    "trace",
                    Node::Keywords {
                        optional: false,
                        branches: ON_OFF,
                    },
                ),
            ],
        },
    },
    CommandShape {
        word: "simulate",
        name: "simulate restore",
        node: Node::Keywords {
            optional: false,
            branches: &[branch("restore", Node::End)],
        },
    },
    CommandShape {
        word: "load",
        name: "load metadata",
        node: Node::Keywords {
            optional: false,
            branches: &[branch(
                "metadata",
                Node::Argument {
                    name: "<metadata.cab>",
                    next: &Node::End,
                },
            )],
        },
    },
    CommandShape {
        word: "writer",
        name: "writer",
        node: Node::Keywords {
            optional: false,
            branches: &[
                branch(
                    "verify",
                    Node::Rest {
                        name: "<writer or component>",
                        min: 1,
                    },
                ),
                branch(
                    "exclude",
                    Node::Rest {
                        name: "<writer or component>",
                        min: 1,
                    },
                ),
            ],
        },
    },
    CommandShape {
        word: "add",
        name: "add",
        node: Node::Keywords {
            optional: true,
            branches: &[
                branch(
                    "volume",
                    Node::Argument {
                        name: "<volume>",
                        next: &Node::Clauses {
                            clauses: &[("alias", "<alias name>"), ("provider", "<provider ID>")],
                        },
                    },
                ),
                branch(
                    "alias",
                    Node::Argument {
                        name: "<alias name>",
                        next: &Node::Argument {
                            name: "<alias value>",
                            next: &Node::End,
                        },
                    },
                ),
                branch(
                    "shadow",
                    Node::Argument {
                        name: "<shadow ID>",
                        next: &Node::OptionalArgument {
                            name: "<target volume>",
                            next: &Node::End,
                        },
                    },
                ),
            ],
        },
    },
    CommandShape {
        word: "create",
        name: "create",
        node: Node::End,
    },
    CommandShape {
        word: "exec",
        name: "exec",
        node: Node::Argument {
            name: "<file>",
            next: &Node::Rest {
                name: "<argument>",
                min: 0,
            },
        },
    },
    CommandShape {
        word: "begin",
        name: "begin",
        node: Node::Keywords {
            optional: false,
            branches: BACKUP_RESTORE,
        },
    },
    CommandShape {
        word: "end",
        name: "end",
        node: Node::Keywords {
            optional: false,
            branches: BACKUP_RESTORE,
        },
    },
    CommandShape {
        word: "reset",
        name: "reset",
        node: Node::End,
    },
    CommandShape {
        word: "list",
        name: "list",
        node: Node::Keywords {
            optional: false,
            branches: &[
                branch(
                    "writers",
                    Node::Keywords {
                        optional: true,
                        branches: &[
                            branch("metadata", JSON_SWITCH),
                            branch("detailed", JSON_SWITCH),
                            branch("status", JSON_SWITCH),
                            branch("--json", Node::End),
                        ],
                    },
                ),
                branch(
                    "shadows",
                    Node::Keywords {
                        optional: false,
                        branches: &[
                            branch("all", JSON_SWITCH),
                            branch(
                                "set",
                                Node::Argument {
                                    name: "<set ID>",
                                    next: &JSON_SWITCH,
                                },
                            ),
                            branch(
                                "id",
                                Node::Argument {
                                    name: "<shadow ID>",
                                    next: &JSON_SWITCH,
                                },
                            ),
                        ],
                    },
                ),
                branch("providers", JSON_SWITCH),
            ],
        },
    },
    CommandShape {
        word: "delete",
        name: "delete shadows",
        node: Node::Keywords {
            optional: false,
            branches: &[branch(
                "shadows",
                Node::Keywords {
                    optional: false,
                    branches: &[
                        branch("all", Node::End),
                        branch(
                            "volume",
                            Node::Argument {
                                name: "<volume>",
                                next: &Node::End,
                            },
                        ),
                        branch(
                            "oldest",
                            Node::Argument {
                                name: "<volume>",
                                next: &Node::End,
                            },
                        ),
                        branch(
                            "set",
                            Node::Argument {
                                name: "<set ID>",
                                next: &Node::End,
                            },
                        ),
                        branch(
                            "id",
                            Node::Argument {
                                name: "<shadow ID>",
                                next: &Node::End,
                            },
                        ),
                        branch(
                            "exposed",
                            Node::Argument {
                                name: "<drive or mount point>",
                                next: &Node::End,
                            },
                        ),
                    ],
                },
            )],
        },
    },
    CommandShape {
        word: "import",
        name: "import",
        node: Node::End,
    },
    CommandShape {
        word: "mask",
        name: "mask",
        node: Node::Argument {
            name: "<set ID>",
            next: &Node::End,
        },
    },
    CommandShape {
        word: "expose",
        name: "expose",
        node: Node::Argument {
            name: "<shadow ID>",
            next: &Node::Argument {
                name: "<drive, share or mount point>",
                next: &Node::End,
            },
        },
    },
    CommandShape {
        word: "unexpose",
        name: "unexpose",
        node: Node::Argument {
            name: "<shadow ID, drive, share or mount point>",
            next: &Node::End,
        },
    },
    CommandShape {
        word: "break",
        name: "break",
        node: Node::OptionalKeyword {
            keyword: "writable",
            next: &Node::Argument {
                name: "<set ID>",
                next: &Node::End,
            },
        },
    },
    CommandShape {
        word: "revert",
        name: "revert",
        node: Node::Argument {
            name: "<shadow ID>",
            next: &Node::End,
        },
    },
    CommandShape {
        word: "resync",
        name: "resync",
        node: Node::Flags {
            flags: &["novolcheck", "revert_originalsig"],
            min: 0,
        },
    },
    CommandShape {
        word: "exit",
        name: "exit",
        node: Node::End,
    },
    CommandShape {
        word: "help",
        name: "help",
        node: Node::Rest {
            name: "<command>",
            min: 0,
        },
    },
    CommandShape {
        word: "map",
        name: "map",
        node: Node::OptionalArgument {
            name: "<drive:>",
            next: &Node::Argument {
                name: "<image file or directory>",
                next: &Node::End,
            },
        },
    },
    CommandShape {
        word: "unmap",
        name: "unmap",
        node: Node::Argument {
            name: "<drive:>",
            next: &Node::End,
        },
    },
    CommandShape {
        word: "attach",
        name: "attach",
        node: Node::Argument {
            name: "<volume>",
            next: &Node::Argument {
                name: "<file path or nbd:// URL>",
                next: &Node::End,
            },
        },
    },
    CommandShape {
        word: "detach",
        name: "detach",
        node: Node::Argument {
            name: "<volume or target>",
            next: &Node::End,
        },
    },
];

/// `/?` on its own line asks for the list of commands.
pub(crate) const HELP_SWITCH: &str = "/?";

/// The command whose first word is `word` (ASCII case-insensitive, as the grammar matches).
pub(crate) fn find_command(word: &str) -> Option<&'static CommandShape> {
    COMMAND_SHAPES
        .iter()
        .find(|shape| shape.word.eq_ignore_ascii_case(word))
}

/// What went wrong at one point of a walk through a shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// A word that is not one of the expected keywords. `may_end` says the line could have
    /// ended instead, so the word may just be one too many.
    UnknownKeyword {
        expected: Vec<&'static str>,
        may_end: bool,
    },
    /// A word after the command was already complete.
    Unexpected,
    /// The line ended where one of these keywords was required.
    MissingKeyword { expected: Vec<&'static str> },
    /// The line ended where an argument was required.
    MissingArgument { name: &'static str },
}

/// A position inside a command's shape, after some of its words.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    node: &'static Node,
    /// Flags or clause keywords already seen at this node.
    used: Vec<&'static str>,
    /// Words consumed by a `Rest` node.
    rest_count: usize,
    /// A clause keyword waiting for its argument.
    pending_clause: Option<&'static str>,
}

fn visible(branches: &'static [Branch]) -> Vec<&'static str> {
    branches
        .iter()
        .filter(|branch| !branch.hidden)
        .map(|branch| branch.keyword)
        .collect()
}

impl Cursor {
    pub(crate) fn new(shape: &'static CommandShape) -> Self {
        Self::at(&shape.node)
    }

    fn at(node: &'static Node) -> Self {
        Self {
            node,
            used: Vec::new(),
            rest_count: 0,
            pending_clause: None,
        }
    }

    /// Consumes one word. `raw` is the word as written: quoted text never matches a keyword,
    /// exactly as in the grammar.
    pub(crate) fn advance(&mut self, raw: &str) -> Result<(), Mismatch> {
        match self.node {
            Node::End => Err(Mismatch::Unexpected),
            Node::Keywords { optional, branches } => {
                match branches
                    .iter()
                    .find(|branch| branch.keyword.eq_ignore_ascii_case(raw))
                {
                    Some(branch) => {
                        *self = Self::at(&branch.next);
                        Ok(())
                    }
                    None => Err(Mismatch::UnknownKeyword {
                        expected: visible(branches),
                        may_end: *optional,
                    }),
                }
            }
            Node::Argument { next, .. } | Node::OptionalArgument { next, .. } => {
                *self = Self::at(next);
                Ok(())
            }
            Node::Rest { .. } => {
                self.rest_count += 1;
                Ok(())
            }
            Node::Flags { flags, min } => {
                match flags.iter().find(|flag| flag.eq_ignore_ascii_case(raw)) {
                    Some(flag) => {
                        self.used.push(flag);
                        Ok(())
                    }
                    None => Err(Mismatch::UnknownKeyword {
                        expected: flags
                            .iter()
                            .copied()
                            .filter(|f| !self.used.contains(f))
                            .collect(),
                        may_end: self.used.len() >= *min,
                    }),
                }
            }
            Node::OptionalKeyword { keyword, next } => {
                *self = Self::at(next);
                if keyword.eq_ignore_ascii_case(raw) {
                    Ok(())
                } else {
                    self.advance(raw)
                }
            }
            Node::Clauses { clauses } => {
                if self.pending_clause.take().is_some() {
                    return Ok(());
                }
                match clauses
                    .iter()
                    .find(|(keyword, _)| keyword.eq_ignore_ascii_case(raw))
                {
                    Some((keyword, _)) => {
                        self.used.push(keyword);
                        self.pending_clause = Some(keyword);
                        Ok(())
                    }
                    None => Err(Mismatch::UnknownKeyword {
                        expected: clauses.iter().map(|(keyword, _)| *keyword).collect(),
                        may_end: true,
                    }),
                }
            }
        }
    }

    /// Checks that the command may end here.
    pub(crate) fn finish(&self) -> Result<(), Mismatch> {
        match self.node {
            Node::End | Node::OptionalArgument { .. } => Ok(()),
            Node::Keywords { optional: true, .. } => Ok(()),
            Node::Keywords {
                optional: false,
                branches,
            } => Err(Mismatch::MissingKeyword {
                expected: visible(branches),
            }),
            Node::Argument { name, .. } => Err(Mismatch::MissingArgument { name }),
            Node::Rest { name, min } => {
                if self.rest_count >= *min {
                    Ok(())
                } else {
                    Err(Mismatch::MissingArgument { name })
                }
            }
            Node::Flags { flags, min } => {
                if self.used.len() >= *min {
                    Ok(())
                } else {
                    Err(Mismatch::MissingKeyword {
                        expected: flags.to_vec(),
                    })
                }
            }
            Node::OptionalKeyword { next, .. } => Self::at(next).finish(),
            Node::Clauses { clauses } => match self.pending_clause {
                Some(keyword) => {
                    let name = clauses
                        .iter()
                        .find(|(clause, _)| *clause == keyword)
                        .map_or("<argument>", |(_, name)| *name);
                    Err(Mismatch::MissingArgument { name })
                }
                None => Ok(()),
            },
        }
    }

    /// The keywords that may come next (never arguments: those are free text).
    pub(crate) fn next_keywords(&self) -> Vec<&'static str> {
        match self.node {
            Node::End
            | Node::Argument { .. }
            | Node::OptionalArgument { .. }
            | Node::Rest { .. } => Vec::new(),
            Node::Keywords { branches, .. } => visible(branches),
            Node::Flags { flags, .. } => flags
                .iter()
                .copied()
                .filter(|flag| !self.used.contains(flag))
                .collect(),
            Node::OptionalKeyword { keyword, .. } => vec![*keyword],
            Node::Clauses { clauses } => {
                if self.pending_clause.is_some() {
                    Vec::new()
                } else {
                    clauses
                        .iter()
                        .map(|(keyword, _)| *keyword)
                        .filter(|keyword| !self.used.contains(keyword))
                        .collect()
                }
            }
        }
    }

    /// The name of the argument that may come next (`<volume>`), if an argument may.
    pub(crate) fn next_argument(&self) -> Option<&'static str> {
        match self.node {
            Node::Argument { name, .. }
            | Node::OptionalArgument { name, .. }
            | Node::Rest { name, .. } => Some(name),
            Node::OptionalKeyword { next, .. } => Self::at(next).next_argument(),
            Node::Clauses { clauses } => self
                .pending_clause
                .and_then(|keyword| clauses.iter().find(|(clause, _)| *clause == keyword))
                .map(|(_, name)| *name),
            _ => None,
        }
    }

    /// Whether the cursor sits on an argument position (the last consumed word was then
    /// consumed as an argument).
    pub(crate) fn expects_argument(&self) -> bool {
        match self.node {
            Node::Argument { .. } | Node::OptionalArgument { .. } | Node::Rest { .. } => true,
            Node::OptionalKeyword { .. } => true,
            Node::Clauses { .. } => self.pending_clause.is_some(),
            _ => false,
        }
    }
}
