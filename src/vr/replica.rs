//! Implemented with issue 4.
pub struct Replica;
