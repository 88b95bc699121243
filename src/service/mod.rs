//! (being built)

pub mod transport;
