//! tc_broadcast, user-space side: the follower table the TC egress program
//! `electrode_tc` fans a marked datagram out to, the arm switch, which
//! followers' MACs the kernel has learned, and attaching the program to the
//! clsact egress hook with a guard.
//!
//! Ownership (table in `bpf/electrode.h`): user space writes
//! `broadcast_config` and `broadcast_targets` (addresses from the config,
//! only while disarmed); the kernel (`electrode_xdp`) writes
//! `broadcast_macs` from the source MAC of valid datagrams whose source
//! address matches a target, and user space only reads it, except that it
//! zeroes an entry whose address it changes and fills an entry that is not
//! yet known from the kernel's neighbour table
//! ([`Loaded::learn_broadcast_macs_from_neighbours`]), so the first
//! broadcast already reaches followers that have not sent anything yet.
//! A follower whose MAC is not yet known gets no copy from the kernel: the
//! runtime unicasts to it ([`Loaded::broadcast_coverage`] says which).

use std::mem::{offset_of, size_of};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::{MapCore, MapFlags, Program, ProgramInput, TcHook, TcHookBuilder, TC_EGRESS, TC_INGRESS};

use super::load::Loaded;
use super::types::{electrode_broadcast_config, electrode_broadcast_mac, electrode_broadcast_target};
use crate::wire::MAX_REPLICA_COUNT;

// Defined with the queries that find attached programs, which every build
// has: `electrode stats` looks for the filter there in any build.
pub use super::attached::{TC_HANDLE, TC_PRIORITY};

/// Verdicts of a tc program (`uapi/linux/pkt_cls.h`), as returned by
/// [`Loaded::test_run_tc`].
pub mod tc_action {
    pub const OK: u32 = 0;
    pub const SHOT: u32 = 2;
}

impl Loaded {
    /// Sets the followers the kernel copies a marked datagram to: every
    /// replica in `targets` (index and address from the config). Leaves
    /// the fast path disarmed (handover rule: targets change only while
    /// disarmed); call [`Loaded::arm_broadcast`] on the leader afterwards.
    /// A target whose address changed forgets its learned MAC.
    pub fn set_broadcast_targets(
        &self,
        self_index: u8,
        self_port: u16,
        targets: &[(u8, SocketAddrV4)],
    ) -> Result<()> {
        let replica_count = self.options().replica_count;
        ensure!(
            u32::from(self_index) < replica_count,
            "broadcast: self index {self_index} >= {replica_count}"
        );
        ensure!(self_port != 0, "broadcast: self port 0");
        let mut wanted: [Option<SocketAddrV4>; MAX_REPLICA_COUNT] = [None; MAX_REPLICA_COUNT];
        for &(index, addr) in targets {
            ensure!(
                u32::from(index) < replica_count,
                "broadcast: target index {index} >= replica count {replica_count}"
            );
            ensure!(index != self_index, "broadcast: replica {index} cannot be its own target");
            ensure!(addr.port() != 0, "broadcast: target {index} has port 0");
            let slot = &mut wanted[usize::from(index)];
            ensure!(slot.is_none(), "broadcast: target {index} given twice");
            *slot = Some(addr);
        }

        self.write_broadcast_config(self_index, self_port, false)?;
        let maps = &self.skel().maps;
        for (index, addr) in wanted.iter().enumerate() {
            let key = (index as u32).to_ne_bytes();
            let new = target_bytes(*addr);
            let old = maps
                .broadcast_targets
                .lookup(&key, MapFlags::ANY)
                .with_context(|| format!("read map broadcast_targets[{index}]"))?
                .unwrap_or_default();
            maps.broadcast_targets
                .update(&key, &new, MapFlags::ANY)
                .with_context(|| format!("write map broadcast_targets[{index}]"))?;
            if old.len() != new.len() || addr_part(&old) != addr_part(&new) {
                let empty = [0u8; size_of::<electrode_broadcast_mac>()];
                maps.broadcast_macs
                    .update(&key, &empty, MapFlags::ANY)
                    .with_context(|| format!("clear map broadcast_macs[{index}]"))?;
            }
        }
        Ok(())
    }

    /// Arms (this replica leads) or disarms the fan-out. A disarmed program
    /// passes marked datagrams untouched.
    pub fn arm_broadcast(&self, armed: bool) -> Result<()> {
        if armed {
            self.ensure_members("arm broadcast")?;
        }
        let config = self.read_broadcast_config()?;
        let port_at = offset_of!(electrode_broadcast_config, self_port);
        let self_port = u16::from_be_bytes([config[port_at], config[port_at + 1]]);
        ensure!(!armed || self_port != 0, "broadcast: arm before set_broadcast_targets");
        let self_index = config[offset_of!(electrode_broadcast_config, self_index)];
        self.write_broadcast_config(self_index, self_port, armed)
    }

    /// Whether the program is armed.
    pub fn broadcast_armed(&self) -> Result<bool> {
        Ok(self.read_broadcast_config()?[offset_of!(electrode_broadcast_config, armed)] != 0)
    }

    /// The MAC the kernel learned for each replica index (0..replica
    /// count), `None` until it has seen a valid datagram from that replica's
    /// configured address.
    pub fn broadcast_macs(&self) -> Result<Vec<Option<[u8; 6]>>> {
        let map = &self.skel().maps.broadcast_macs;
        let mut macs = Vec::new();
        for index in 0..self.options().replica_count {
            let value = map
                .lookup(&index.to_ne_bytes(), MapFlags::ANY)
                .with_context(|| format!("read map broadcast_macs[{index}]"))?
                .with_context(|| format!("read map broadcast_macs[{index}]: no such slot"))?;
            ensure!(value.len() == size_of::<electrode_broadcast_mac>(), "broadcast_macs value size");
            let known = value[offset_of!(electrode_broadcast_mac, known)] != 0;
            let at = offset_of!(electrode_broadcast_mac, mac);
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&value[at..at + 6]);
            macs.push(known.then_some(mac));
        }
        Ok(macs)
    }

    /// Fills the MAC of every target the kernel has not learned yet from
    /// the neighbour table (ARP cache) entry of its address on the
    /// interface `electrode_tc` is attached to; returns the replica indexes
    /// filled. A MAC `electrode_xdp` learned from a datagram is never
    /// overwritten (it is the fresher word); a neighbour entry that is
    /// wrong is corrected by the follower's next datagram. Only on-link
    /// followers have an entry under their own address: one behind a
    /// router is learned from its datagrams (which carry the router's MAC).
    ///
    /// Races with `electrode_xdp`: both write whole 8-byte values of a slot
    /// that was unknown; whichever lands last is a MAC of that follower.
    pub fn learn_broadcast_macs_from_neighbours(&self) -> Result<Vec<u8>> {
        let ifindex = self.tc_ifindex().load(std::sync::atomic::Ordering::Relaxed);
        if ifindex == 0 {
            return Ok(Vec::new());
        }
        let macs = self.broadcast_macs()?;
        let maps = &self.skel().maps;
        let mut unknown = Vec::new();
        for (index, mac) in macs.iter().enumerate() {
            if mac.is_some() {
                continue;
            }
            let key = (index as u32).to_ne_bytes();
            let value = maps
                .broadcast_targets
                .lookup(&key, MapFlags::ANY)
                .with_context(|| format!("read map broadcast_targets[{index}]"))?
                .unwrap_or_default();
            if value.get(offset_of!(electrode_broadcast_target, in_use)).copied().unwrap_or(0) != 0 {
                if let Some(addr) = addr_part(&value) {
                    unknown.push((index, *addr.ip()));
                }
            }
        }
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let neighbours = super::neighbours::ipv4_neighbours().context("reading the neighbour table")?;
        let mut filled = Vec::new();
        for (index, ip) in unknown {
            let Some(found) = neighbours.iter().find(|n| n.ifindex == ifindex && n.ip == ip) else {
                continue;
            };
            let mut value = [0u8; size_of::<electrode_broadcast_mac>()];
            let at = offset_of!(electrode_broadcast_mac, mac);
            value[at..at + 6].copy_from_slice(&found.mac);
            value[offset_of!(electrode_broadcast_mac, known)] = 1;
            maps.broadcast_macs
                .update(&(index as u32).to_ne_bytes(), &value, MapFlags::ANY)
                .with_context(|| format!("write map broadcast_macs[{index}]"))?;
            filled.push(index as u8);
        }
        Ok(filled)
    }

    /// Per replica index: true when the kernel copies marked datagrams to
    /// it (a target with a known MAC). The runtime unicasts to followers
    /// that are false here.
    pub fn broadcast_coverage(&self) -> Result<Vec<bool>> {
        let map = &self.skel().maps.broadcast_targets;
        let macs = self.broadcast_macs()?;
        let mut coverage = Vec::with_capacity(macs.len());
        for (index, mac) in macs.iter().enumerate() {
            let value = map
                .lookup(&(index as u32).to_ne_bytes(), MapFlags::ANY)
                .with_context(|| format!("read map broadcast_targets[{index}]"))?
                .unwrap_or_default();
            let in_use = value.get(offset_of!(electrode_broadcast_target, in_use)).copied().unwrap_or(0);
            coverage.push(in_use != 0 && mac.is_some());
        }
        Ok(coverage)
    }

    /// Runs `electrode_tc` once on `frame` with BPF_PROG_TEST_RUN and
    /// returns its verdict (TC_ACT_*) and the frame as the program left it.
    /// Clones go to the `lo` of the calling thread's netns, which must be
    /// up (docs/PLATFORM.md gotcha 3): run it in a throwaway namespace.
    pub fn test_run_tc(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.test_run_tc_gso(frame, 0)
    }

    /// [`Loaded::test_run_tc`] on an skb with `gso_size` set (0: not GSO):
    /// the one skb field besides the bytes that decides what
    /// `electrode_tc` does (a GSO skb is never rewritten). BPF_PROG_TEST_RUN
    /// takes it from a `struct __sk_buff` context, which is passed only
    /// when it is not 0 and holds nothing else (the kernel refuses fields
    /// it does not accept there).
    pub fn test_run_tc_gso(&self, frame: &[u8], gso_size: u32) -> Result<(u32, Vec<u8>)> {
        // uapi linux/bpf.h: struct __sk_buff is 192 bytes and gso_size sits
        // at byte 176 (both fixed: the struct only grows at its end).
        const SK_BUFF_LEN: usize = 192;
        const GSO_SIZE_AT: usize = 176;
        let mut context = [0u8; SK_BUFF_LEN];
        context[GSO_SIZE_AT..GSO_SIZE_AT + 4].copy_from_slice(&gso_size.to_ne_bytes());
        let mut data_out = vec![0u8; frame.len() + 4096];
        let input = ProgramInput {
            context_in: (gso_size != 0).then_some(&mut context[..]),
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            ..ProgramInput::default()
        };
        let output = self.skel().progs.electrode_tc.test_run(input).with_context(|| {
            format!("BPF_PROG_TEST_RUN of prog electrode_tc on a {}-byte frame", frame.len())
        })?;
        let Some(data) = output.data else {
            bail!("BPF_PROG_TEST_RUN of prog electrode_tc returned no output data");
        };
        Ok((output.return_value, data.to_vec()))
    }

    /// Attaches `electrode_tc` to the clsact egress hook of `ifindex` (in
    /// the calling thread's netns), creating clsact if it is absent. A filter
    /// at our handle/priority left by an earlier run that was killed is
    /// replaced. The guard removes the filter, and clsact if this call
    /// created it, when dropped.
    pub fn attach_tc(&self, ifindex: u32) -> Result<TcGuard<'_>> {
        let prog = &self.skel().progs.electrode_tc;
        let prog_id = Program::id_from_fd(prog.as_fd()).context("id of prog electrode_tc")?;
        let ifindex_c =
            i32::try_from(ifindex).with_context(|| format!("ifindex {ifindex} does not fit a C int"))?;
        let created_qdisc = create_clsact(ifindex_c)?;
        let mut hook = TcHookBuilder::new(prog.as_fd())
            .ifindex(ifindex_c)
            .replace(true)
            .handle(TC_HANDLE)
            .priority(TC_PRIORITY)
            .hook(TC_EGRESS);
        // Most starts find no filter: libbpf would print the kernel's "no
        // such filter" on stderr, so the expected absence is queried with
        // libbpf muted.
        let stale = super::attached::libbpf_muted(|| hook.query().ok());
        if let Err(error) = hook.attach() {
            if created_qdisc {
                let _ = clsact(ifindex_c, prog).destroy();
            }
            bail!("attach tc prog electrode_tc to clsact egress of ifindex {ifindex}: {error}");
        }
        self.tc_ifindex().store(ifindex, std::sync::atomic::Ordering::Relaxed);
        if let Some(stale) = stale {
            eprintln!(
                "electrode: replaced a stale tc egress filter (prog id {stale}, handle {TC_HANDLE:#x}, \
                 priority {TC_PRIORITY}) on ifindex {ifindex}, left by an earlier run"
            );
        }
        Ok(TcGuard { hook, ifindex, prog_id, created_qdisc, attached: true, loaded: self })
    }

    fn read_broadcast_config(&self) -> Result<Vec<u8>> {
        let value = self
            .skel()
            .maps
            .broadcast_config
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .context("read map broadcast_config[0]")?
            .context("read map broadcast_config[0]: no such slot")?;
        ensure!(value.len() == size_of::<electrode_broadcast_config>(), "broadcast_config value size");
        Ok(value)
    }

    fn write_broadcast_config(&self, self_index: u8, self_port: u16, armed: bool) -> Result<()> {
        let mut value = [0u8; size_of::<electrode_broadcast_config>()];
        let port_at = offset_of!(electrode_broadcast_config, self_port);
        value[port_at..port_at + 2].copy_from_slice(&self_port.to_be_bytes());
        value[offset_of!(electrode_broadcast_config, self_index)] = self_index;
        value[offset_of!(electrode_broadcast_config, replica_count)] =
            u8::try_from(self.options().replica_count).context("replica count fits a byte")?;
        value[offset_of!(electrode_broadcast_config, armed)] = u8::from(armed);
        self.skel()
            .maps
            .broadcast_config
            .update(&0u32.to_ne_bytes(), &value, MapFlags::ANY)
            .context("write map broadcast_config[0]")
    }
}

/// The map value of one target (zero: not in use).
fn target_bytes(addr: Option<SocketAddrV4>) -> [u8; size_of::<electrode_broadcast_target>()] {
    let mut value = [0u8; size_of::<electrode_broadcast_target>()];
    if let Some(addr) = addr {
        let ip_at = offset_of!(electrode_broadcast_target, ip);
        value[ip_at..ip_at + 4].copy_from_slice(&addr.ip().octets());
        let port_at = offset_of!(electrode_broadcast_target, port);
        value[port_at..port_at + 2].copy_from_slice(&addr.port().to_be_bytes());
        value[offset_of!(electrode_broadcast_target, in_use)] = 1;
    }
    value
}

/// The address bytes (ip and port) of a target value.
fn addr_part(value: &[u8]) -> Option<SocketAddrV4> {
    let ip_at = offset_of!(electrode_broadcast_target, ip);
    let port_at = offset_of!(electrode_broadcast_target, port);
    let ip: [u8; 4] = value.get(ip_at..ip_at + 4)?.try_into().ok()?;
    let port: [u8; 2] = value.get(port_at..port_at + 2)?.try_into().ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip), u16::from_be_bytes(port)))
}

/// Creates the clsact qdisc on `ifindex`; true if it was not there before.
/// (libbpf-rs's `TcHook::create` hides EEXIST, and the guard must know
/// whether the qdisc is ours to remove.)
fn create_clsact(ifindex: i32) -> Result<bool> {
    let mut hook = libbpf_sys::bpf_tc_hook {
        sz: size_of::<libbpf_sys::bpf_tc_hook>() as libbpf_sys::size_t,
        ifindex,
        attach_point: libbpf_sys::BPF_TC_EGRESS,
        ..Default::default()
    };
    // An existing clsact (a restart after kill -9, somebody else's qdisc)
    // is an expected answer (EEXIST): libbpf would print the kernel's
    // "Exclusivity flag on, cannot modify" on stderr, so it is muted.
    // SAFETY: `hook` is a valid, fully initialised bpf_tc_hook whose `sz`
    // is its own size; libbpf only reads it during the call.
    let rc = super::attached::libbpf_muted(|| unsafe { libbpf_sys::bpf_tc_hook_create(&mut hook) });
    match rc {
        0 => Ok(true),
        rc if rc == -libc::EEXIST => Ok(false),
        rc => Err(std::io::Error::from_raw_os_error(-rc))
            .with_context(|| format!("create clsact qdisc on ifindex {ifindex}")),
    }
}

/// A hook naming the whole clsact qdisc of `ifindex`: destroying it removes
/// the qdisc with all its filters (docs/PLATFORM.md gotcha 7).
fn clsact(ifindex: i32, prog: &Program<'_>) -> TcHook {
    let mut hook = TcHook::new(prog.as_fd());
    hook.ifindex(ifindex).attach_point(TC_INGRESS | TC_EGRESS);
    hook
}

/// `electrode_tc` attached to a clsact egress hook; dropping it detaches
/// the filter (only if it is still ours) and removes clsact if
/// [`Loaded::attach_tc`] created it. A qdisc that existed before stays,
/// including one a kill -9'd earlier run created: it may hold other
/// filters now, and an empty clsact is harmless.
#[must_use = "dropping the guard detaches the program at once"]
pub struct TcGuard<'obj> {
    hook: TcHook,
    ifindex: u32,
    prog_id: u32,
    created_qdisc: bool,
    attached: bool,
    loaded: &'obj Loaded,
}

impl TcGuard<'_> {
    /// Interface the program is attached to (in the attaching netns).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether attaching created the clsact qdisc (so the guard removes it).
    pub fn created_qdisc(&self) -> bool {
        self.created_qdisc
    }

    /// Detaches now, reporting failure (`Drop` can only print it).
    pub fn detach(mut self) -> Result<()> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<()> {
        if !std::mem::replace(&mut self.attached, false) {
            return Ok(());
        }
        let ifindex = self.ifindex;
        let _ = self.loaded.tc_ifindex().compare_exchange(
            ifindex,
            0,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
        // Somebody may have replaced our filter (another electrode run on
        // the same interface); theirs is not ours to remove.
        let mut result = match self.hook.query() {
            Ok(id) if id == self.prog_id => self
                .hook
                .detach()
                .with_context(|| format!("detach tc prog electrode_tc from ifindex {ifindex}")),
            _ => Ok(()),
        };
        if self.created_qdisc {
            let mut qdisc = self.hook;
            qdisc.attach_point(TC_INGRESS | TC_EGRESS);
            if let Err(error) = qdisc.destroy() {
                let error = anyhow::Error::new(error)
                    .context(format!("remove clsact qdisc electrode created on ifindex {ifindex}"));
                result = result.and(Err(error));
            }
        }
        result
    }
}

impl Drop for TcGuard<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.detach_inner() {
            eprintln!("electrode: {error:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_values_have_the_header_sizes() {
        // bpf/electrode.h asserts 8 bytes each; the MAC value must stay one
        // 64-bit word (the kernel reads and writes it in one access).
        assert_eq!(size_of::<electrode_broadcast_config>(), 8);
        assert_eq!(size_of::<electrode_broadcast_target>(), 8);
        assert_eq!(size_of::<electrode_broadcast_mac>(), 8);
    }

    #[test]
    fn target_value_round_trips_its_address_in_network_order() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 201, 3, 12), 7449);
        let value = target_bytes(Some(addr));
        assert_eq!(addr_part(&value), Some(addr));
        assert_eq!(&value[offset_of!(electrode_broadcast_target, ip)..][..4], &[10, 201, 3, 12]);
        assert_eq!(&value[offset_of!(electrode_broadcast_target, port)..][..2], &7449u16.to_be_bytes());
        assert_eq!(value[offset_of!(electrode_broadcast_target, in_use)], 1);
        assert_eq!(target_bytes(None), [0; 8]);
    }
}
