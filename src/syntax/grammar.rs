//! The pest parser generated from `grammar/diskshadow.pest`.

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/diskshadow.pest"]
pub(crate) struct DiskShadowGrammar;
