//! The membership rule's address table (`replica_addrs`, "Membership" in
//! `bpf/electrode.h`): replica index -> configured IPv4 address and UDP
//! port. Every kernel program that believes a sender id checks the
//! datagram's source against it, as user space does.
//!
//! Written once, after load and before any fast path is armed; every arm
//! refuses to run before it (see [`Loaded::ensure_members`]).

use std::mem::{offset_of, size_of};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;

use anyhow::{ensure, Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::load::Loaded;
use super::types::electrode_replica_addr;
use crate::wire::MAX_REPLICA_COUNT;

const ENTRY_LEN: usize = size_of::<electrode_replica_addr>();

/// One `replica_addrs` value: network-order address and port, configured
/// flag (`None` writes an entry that matches nothing).
fn entry_bytes(addr: Option<SocketAddrV4>) -> [u8; ENTRY_LEN] {
    type A = electrode_replica_addr;
    let mut value = [0u8; ENTRY_LEN];
    if let Some(addr) = addr {
        value[offset_of!(A, ip)..][..4].copy_from_slice(&addr.ip().octets());
        value[offset_of!(A, port)..][..2].copy_from_slice(&addr.port().to_be_bytes());
        value[offset_of!(A, configured)] = 1;
    }
    value
}

impl Loaded {
    /// Writes the configured address of every replica (index = position in
    /// `members`, exactly `replica_count` of them) into `replica_addrs`.
    /// Once per loaded object, before any arm: the config never changes
    /// while a replica runs, so the kernel's copy has no handover.
    pub fn set_members(&self, members: &[SocketAddrV4]) -> Result<()> {
        let replica_count = self.options().replica_count as usize;
        ensure!(
            members.len() == replica_count,
            "set replica_addrs: {} addresses for {replica_count} replicas",
            members.len()
        );
        for (index, addr) in members.iter().enumerate() {
            ensure!(
                addr.port() != 0 && !addr.ip().is_unspecified(),
                "set replica_addrs: replica {index} has no usable address ({addr})"
            );
            ensure!(
                !members[..index].contains(addr),
                "set replica_addrs: replica {index} shares its address {addr} with another replica"
            );
        }
        ensure!(
            !self.members_set().swap(true, Ordering::AcqRel),
            "set replica_addrs: already written (once per loaded object)"
        );
        let map = &self.skel().maps.replica_addrs;
        for index in 0..MAX_REPLICA_COUNT {
            let key = (index as u32).to_ne_bytes();
            map.update(&key, &entry_bytes(members.get(index).copied()), MapFlags::ANY)
                .with_context(|| format!("write map replica_addrs[{index}]"))?;
        }
        Ok(())
    }

    /// The table as the kernel holds it: `None` for an entry that matches
    /// nothing.
    pub fn members(&self) -> Result<Vec<Option<SocketAddrV4>>> {
        type A = electrode_replica_addr;
        let map = &self.skel().maps.replica_addrs;
        let mut out = Vec::with_capacity(MAX_REPLICA_COUNT);
        for index in 0..MAX_REPLICA_COUNT {
            let key = (index as u32).to_ne_bytes();
            let value = map
                .lookup(&key, MapFlags::ANY)
                .with_context(|| format!("read map replica_addrs[{index}]"))?
                .with_context(|| format!("read map replica_addrs[{index}]: no such entry"))?;
            ensure!(value.len() == ENTRY_LEN, "map replica_addrs: value of {} bytes", value.len());
            if value[offset_of!(A, configured)] == 0 {
                out.push(None);
                continue;
            }
            let mut ip = [0u8; 4];
            ip.copy_from_slice(&value[offset_of!(A, ip)..][..4]);
            let port = u16::from_be_bytes([value[offset_of!(A, port)], value[offset_of!(A, port) + 1]]);
            out.push(Some(SocketAddrV4::new(Ipv4Addr::from(ip), port)));
        }
        Ok(out)
    }

    /// Refuses `what` (an arm) until [`Loaded::set_members`] ran: a fast
    /// path armed without the table would trust no sender at all.
    #[cfg_attr(
        not(any(feature = "fast_reply", feature = "fast_quorum_prune", feature = "tc_broadcast")),
        allow(dead_code)
    )]
    pub(crate) fn ensure_members(&self, what: &str) -> Result<()> {
        ensure!(
            self.members_set().load(Ordering::Acquire),
            "{what}: the replica address table (replica_addrs) is not written yet; call set_members first"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_network_order_and_flagged() {
        let value = entry_bytes(Some(SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 7447)));
        assert_eq!(&value[..4], &[10, 1, 2, 3]);
        assert_eq!(&value[4..6], &7447u16.to_be_bytes());
        assert_eq!(value[6], 1);
        assert_eq!(entry_bytes(None), [0; ENTRY_LEN]);
    }
}
