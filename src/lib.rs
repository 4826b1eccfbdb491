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
pub mod config;
pub mod fastpath;
pub mod history;
pub mod vr;
pub mod wire;
