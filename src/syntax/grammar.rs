//! The pest parser generated from `grammar/diskshadow.pest`.

// The generated `Rule` enum carries no documentation of its own; the grammar file documents it.
#![allow(missing_docs)]

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/diskshadow.pest"]
pub(crate) struct DiskShadowGrammar;
