//! Everything that touches libbpf-rs: the generated skeleton, loading and
//! attaching the programs, reading their counters.
//!
//! - [`load`]: open the skeleton, set its read-only config, load it into the
//!   kernel; [`Loaded`] owns the whole object, and runs the XDP program on a
//!   crafted frame with BPF_PROG_TEST_RUN.
//! - [`attach`]: put the XDP classifier on an interface; the guard detaches
//!   it when dropped.
//! - [`counters`]: the per-CPU `counters` map, summed over CPUs.
//! - [`members`]: the replica address table of the membership rule.
//! - [`attached`]: find the electrode programs attached to an interface
//!   (by another process, nothing pinned) and read their counters.
//! - `follower` (feature `fast_reply`): arm/disarm the follower fast path
//!   and drain the Prepares it acked from its ring buffer.
//! - `quorum` (feature `fast_quorum_prune`): arm, move and disarm the
//!   leader's PrepareOK pruning, and read the quorum state it keeps.
//! - `intake` (feature `fast_intake`): arm/disarm the leader's request
//!   intake and drain the client Requests it took off the wire.
//! - `broadcast` (feature `tc_broadcast`): the TC egress fan-out's follower
//!   table, MAC coverage (learned by XDP and from the neighbour table) and
//!   clsact attach guard.
//! - [`neighbours`]: the kernel's IPv4 neighbour table over rtnetlink.
//! - [`caps`]: the capabilities the fast paths need, checked before load.

#[allow(clippy::all, clippy::pedantic, missing_docs, non_camel_case_types, dead_code)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/electrode.skel.rs"));
}

pub mod attach;
pub mod attached;
#[cfg(feature = "tc_broadcast")]
pub mod broadcast;
pub mod caps;
pub mod counters;
#[cfg(feature = "fast_reply")]
pub mod follower;
#[cfg(feature = "fast_intake")]
pub mod intake;
pub mod load;
pub mod members;
pub mod neighbours;
#[cfg(feature = "fast_quorum_prune")]
pub mod quorum;

pub use attach::{XdpAttachment, XdpMode};
pub use attached::{AttachedProgram, Hook, InterfacePrograms};
#[cfg(feature = "tc_broadcast")]
pub use broadcast::{tc_action, TcGuard};
pub use counters::{Counters, IntakeCounters, QuorumPruneCounters};
#[cfg(feature = "fast_reply")]
pub use follower::{FollowerPath, FollowerState};
#[cfg(feature = "fast_intake")]
pub use intake::{IntakeConfig, IntakePath, IntakeRecord};
pub use load::{LoadOptions, Loaded};
pub use skel::types;

/// XDP verdicts (`enum xdp_action`), as returned by
/// [`Loaded::test_run_xdp`].
pub mod xdp_action {
    pub const ABORTED: u32 = libbpf_sys::XDP_ABORTED;
    pub const DROP: u32 = libbpf_sys::XDP_DROP;
    pub const PASS: u32 = libbpf_sys::XDP_PASS;
    pub const TX: u32 = libbpf_sys::XDP_TX;
    pub const REDIRECT: u32 = libbpf_sys::XDP_REDIRECT;
}
pub use skel::*;
