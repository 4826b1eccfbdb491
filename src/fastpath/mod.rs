//! Everything that touches libbpf-rs: the generated skeleton, loading and
//! attaching the programs, reading their counters.

#[allow(clippy::all, clippy::pedantic, missing_docs, non_camel_case_types, dead_code)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/electrode.skel.rs"));
}

pub use skel::types;
pub use skel::*;
