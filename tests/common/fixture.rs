//! The BPF_PROG_TEST_RUN fixture: the eBPF object loaded for one port and
//! cluster, and runs of a frame through it.

use std::net::SocketAddrV4;

use electrode::fastpath::{Counters, LoadOptions, Loaded};

/// The port and cluster id every fixture loads the object for.
pub const PORT: u16 = 7447;
pub const CLUSTER_ID: u32 = 0x00c0_ffee;

/// The object for PORT and CLUSTER_ID in a cluster of `replica_count`,
/// with no replica address table (nothing can arm).
pub fn load(replica_count: u32) -> Loaded {
    Loaded::load(LoadOptions { port: PORT, cluster_id: CLUSTER_ID, replica_count })
        .expect("load electrode eBPF object")
}

/// Loaded with the replica address table written (member i at
/// `members[i]`), as the runtime does before it arms anything.
pub fn load_with_members(members: &[SocketAddrV4]) -> Loaded {
    let loaded = load(members.len() as u32);
    loaded.set_members(members).expect("write replica_addrs");
    loaded
}

/// Runs `frame` through electrode_xdp: the verdict, the output frame and
/// how far the counters moved.
pub fn xdp_run(loaded: &Loaded, frame: &[u8]) -> (u32, Vec<u8>, Counters) {
    let before = loaded.counters().expect("read counters");
    let (verdict, out) = loaded.test_run_xdp(frame).expect("BPF_PROG_TEST_RUN");
    (verdict, out, loaded.counters().expect("read counters").since(&before))
}

/// Runs `frame`: it must get `verdict` and leave unchanged, the counters
/// moving by exactly `expected`.
#[track_caller]
pub fn expect_unchanged(loaded: &Loaded, what: &str, frame: &[u8], verdict: u32, expected: Counters) {
    let (got, out, delta) = xdp_run(loaded, frame);
    assert_eq!(got, verdict, "{what}: verdict");
    assert_eq!(out, frame, "{what}: the frame must not be modified");
    assert_eq!(delta, expected, "{what}: counter deltas");
}
