//! The DiskShadow language: pest grammar (`grammar/diskshadow.pest`) lowered to a typed AST
//! with spans, and miette diagnostics. Pure: no I/O.

pub mod ast;
