//! electrode: Viewstamped Replication whose hot paths can run as eBPF
//! programs in the kernel (Electrode, NSDI 2023), in Rust.
//!
//! Layers, from the bottom:
//! - [`wire`]: the datagram format of `bpf/electrode.h`, decoded defensively;
//! - [`config`]: the cluster description (`f` and 2f+1 replica addresses);
//! - [`app`]: the replicated state machine (KV store, null app);
//! - [`vr`]: the pure VR protocol core; [`history`] and [`check`]: client
//!   histories and their linearizability checker;
//! - [`fastpath`]: the only module that talks to libbpf-rs.

pub mod app;
pub mod check;
pub mod client;
pub mod config;
pub mod fastpath;
pub mod history;
pub mod stats;
pub mod status;
pub mod storage;
pub mod transport;
pub mod vr;
pub mod wire;

/// The fast paths compiled into this binary (cargo features), or "none".
pub fn compiled_fast_paths() -> String {
    let mut names = Vec::new();
    if cfg!(feature = "tc_broadcast") {
        names.push("tc_broadcast");
    }
    if cfg!(feature = "fast_quorum_prune") {
        names.push("fast_quorum_prune");
    }
    if cfg!(feature = "fast_reply") {
        names.push("fast_reply");
    }
    if cfg!(feature = "fast_intake") {
        names.push("fast_intake");
    }
    if names.is_empty() {
        "none (userspace baseline)".to_string()
    } else {
        names.join(",")
    }
}
