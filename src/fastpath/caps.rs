//! The capabilities a replica with fast paths needs, checked before libbpf
//! is asked to load anything: without one of them the kernel answers EPERM
//! or EACCES after libbpf has printed a verifier log, which names no
//! capability. Found by experiment (README, "Running on three machines";
//! `tests/deploy.rs` runs a replica with exactly this set):
//!
//! - CAP_BPF: create maps, load programs (`unprivileged_bpf_disabled`).
//! - CAP_PERFMON: the verifier rejects the programs' pointer comparisons
//!   ("R2 pointer comparison prohibited") for a loader without it.
//! - CAP_NET_ADMIN: load the tc (sched_cls) program, attach XDP and tc,
//!   create clsact; also lets SO_RCVBUFFORCE pass net.core.rmem_max.
//!
//! CAP_SYS_ADMIN implies CAP_BPF and CAP_PERFMON (kernel >= 5.8). Not
//! needed: CAP_SYS_RESOURCE (maps are charged to the memory cgroup since
//! 5.11, RLIMIT_MEMLOCK is not used) and CAP_SYS_NICE (the replica pins only
//! itself, which needs no capability).

use anyhow::{Context, Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities the fast paths need, as `(name, bit)`.
pub const NEEDED: [(&str, u32); 3] =
    [("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON), ("CAP_NET_ADMIN", CAP_NET_ADMIN)];

/// The effective capability set of this thread (`CapEff` of
/// /proc/thread-self/status).
pub fn effective() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/thread-self/status").context("reading /proc/thread-self/status")?;
    parse_cap_eff(&status).context("no CapEff line in /proc/thread-self/status")
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// The needed capabilities missing from `effective`.
pub fn missing(effective: u64) -> Vec<&'static str> {
    let has = |bit: u32| effective & (1 << bit) != 0;
    // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (kernel >= 5.8).
    let granted = |bit: u32| has(bit) || (bit != CAP_NET_ADMIN && has(CAP_SYS_ADMIN));
    NEEDED.iter().filter(|(_, bit)| !granted(*bit)).map(|(name, _)| *name).collect()
}

/// Fails with one line naming every missing capability.
pub fn ensure_fast_path_capabilities() -> Result<()> {
    let missing = missing(effective()?);
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the eBPF fast paths need capabilities {} and this process lacks {} (run as root, or give them \
         as in packaging/electrode-replica@.service: AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN)",
        NEEDED.map(|(name, _)| name).join(", "),
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        let all = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        assert!(missing(all).is_empty());
        assert!(missing(u64::MAX >> 23).is_empty(), "root's full set (41 bits)");
        assert_eq!(missing(all & !(1 << CAP_PERFMON)), vec!["CAP_PERFMON"]);
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]);
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, not CAP_NET_ADMIN.
        assert_eq!(missing(1 << CAP_SYS_ADMIN), vec!["CAP_NET_ADMIN"]);
    }

    #[test]
    fn parses_the_status_line() {
        let status = "Name:\telectrode\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n";
        assert_eq!(parse_cap_eff(status), Some(0xc0_0000_1000));
        assert_eq!(missing(0xc0_0000_1000), Vec::<&str>::new());
        assert_eq!(parse_cap_eff("CapInh:\t0\n"), None);
        assert!(effective().is_ok());
    }
}
