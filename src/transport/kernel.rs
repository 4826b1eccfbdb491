//! The runtime's side of the eBPF fast paths: loads and attaches the
//! programs at start-up and keeps the kernel's maps in step with the VR
//! core, following the handover rules of `bpf/electrode.h`.
//!
//! - fast_reply (followers): `Action::KernelArm`/`KernelDisarm` of the core
//!   become map writes; the ring buffer of kernel-acked Prepares is drained
//!   before every input the core sees and on every loop turn (at least once
//!   per tick), never by a wake-up per Prepare.
//! - fast_quorum_prune (leader): armed while this replica leads a view in
//!   normal status; each PrepareOK the kernel passes is completed with the
//!   acks it dropped (read from the map), so the core counts the quorum
//!   itself; every few ticks the map's per-follower acks are fed again,
//!   which recovers a passed ack that was lost on the way to the socket.
//! - fast_intake (leader): armed while this replica leads a view in normal
//!   status; the requests the kernel takes off the wire are drained at
//!   every wake-up and before every other input, and fed to the same code
//!   as socket datagrams; disarmed (and drained completely) after any
//!   input that changed the view or status.
//! - tc_broadcast (leader): armed while leading; a message for all
//!   followers is sent once, marked, to one follower whose MAC the kernel
//!   learned, and unicast to the followers it has not learned yet.

use std::net::SocketAddrV4;

use anyhow::Context;

use crate::config::Config;
use crate::fastpath::{LoadOptions, Loaded, XdpAttachment};
use crate::vr::{Action, Replica, Status};

/// Ticks between two re-reads of kernel state that may have changed on its
/// own (quorum acks, learned MACs).
pub const KERNEL_POLL_TICKS: u64 = 5;

/// Ticks between two looks at the neighbour table while a follower's MAC
/// is unknown (one netlink dump: cheap, but not every 5 ms).
#[cfg(feature = "tc_broadcast")]
pub const NEIGHBOUR_POLL_TICKS: u64 = 1000;

/// Fills unknown follower MACs from the neighbour table; a failure is
/// printed, never fatal (datagrams still teach the kernel).
#[cfg(feature = "tc_broadcast")]
fn learn_macs_from_neighbours(loaded: &Loaded, index: u8) {
    match loaded.learn_broadcast_macs_from_neighbours() {
        Ok(filled) if filled.is_empty() => {}
        Ok(filled) => eprintln!(
            "electrode replica {index}: tc_broadcast: MACs of replicas {filled:?} from the neighbour table"
        ),
        Err(error) => {
            eprintln!("electrode replica {index}: tc_broadcast: neighbour table not read: {error:#}")
        }
    }
}

/// Finds the interface that holds `address` in this network namespace.
pub fn interface_of(address: SocketAddrV4) -> anyhow::Result<String> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing interfaces")?;
    for ifaddr in addrs {
        let matches = ifaddr
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .is_some_and(|sin| sin.ip() == *address.ip());
        if matches {
            return Ok(ifaddr.interface_name);
        }
    }
    anyhow::bail!("no interface holds {} (use --iface)", address.ip())
}

/// Loads the eBPF object for this replica and writes the replica address
/// table (the membership rule of `bpf/electrode.h`) before anything can be
/// armed.
pub fn load(config: &Config, index: usize) -> anyhow::Result<Loaded> {
    crate::fastpath::caps::ensure_fast_path_capabilities()?;
    let loaded = Loaded::load(LoadOptions {
        port: config.replicas[index].port(),
        cluster_id: config.cluster_id,
        replica_count: config.replica_count() as u32,
    })
    .context("loading the eBPF fast paths (root and a kernel with BTF are needed)")?;
    loaded.set_members(&config.replicas).context("writing the replica address table")?;
    Ok(loaded)
}

/// Attached programs; dropping this detaches them.
pub struct Attached<'a> {
    pub iface: String,
    pub xdp: XdpAttachment<'a>,
    #[cfg(feature = "tc_broadcast")]
    pub tc: crate::fastpath::TcGuard<'a>,
}

/// Attaches XDP (native, else generic) and, with tc_broadcast, the TC
/// egress program, to `iface`.
pub fn attach<'a>(loaded: &'a Loaded, iface: &str) -> anyhow::Result<Attached<'a>> {
    let xdp = loaded.attach_xdp_iface(iface)?;
    #[cfg(feature = "tc_broadcast")]
    let tc = loaded.attach_tc(xdp.ifindex()).with_context(|| format!("attaching TC egress to {iface}"))?;
    Ok(Attached {
        iface: iface.to_string(),
        xdp,
        #[cfg(feature = "tc_broadcast")]
        tc,
    })
}

/// Kernel state the runtime keeps in step with the core. (Without any
/// fast path compiled in, the runtime never builds one.)
#[cfg_attr(
    not(any(
        feature = "fast_reply",
        feature = "fast_quorum_prune",
        feature = "tc_broadcast",
        feature = "fast_intake"
    )),
    allow(dead_code)
)]
pub struct Kernel<'a> {
    loaded: &'a Loaded,
    index: u8,
    peers: Vec<SocketAddrV4>,
    /// Follower acks that make a quorum (quorum pruning).
    #[cfg(feature = "fast_quorum_prune")]
    f: u32,
    ticks: u64,
    #[cfg(feature = "fast_reply")]
    follower: crate::fastpath::FollowerPath<'a>,
    /// View the leader path is armed for, and the window base written.
    #[cfg(feature = "fast_quorum_prune")]
    quorum_armed: Option<(u64, u64)>,
    /// Highest op fed to the core per follower from the kernel's acks.
    #[cfg(feature = "fast_quorum_prune")]
    acks_fed: Vec<u64>,
    #[cfg(feature = "fast_intake")]
    intake: crate::fastpath::IntakePath<'a>,
    /// View the intake is armed for.
    #[cfg(feature = "fast_intake")]
    intake_armed: Option<u64>,
    /// Requests drained by a disarm, not fed to the core yet.
    #[cfg(feature = "fast_intake")]
    intake_backlog: Vec<crate::fastpath::IntakeRecord>,
    #[cfg(feature = "tc_broadcast")]
    broadcast_view: Option<u64>,
    /// Followers whose MAC the kernel knows (they get the marked copy).
    #[cfg(feature = "tc_broadcast")]
    coverage: Vec<bool>,
    pub counters: KernelCounters,
}

/// What the runtime did with the kernel (printed at exit).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelCounters {
    pub prepares_drained: u64,
    pub arms: u64,
    pub disarms: u64,
    pub acks_from_map: u64,
    pub broadcasts: u64,
    pub broadcast_unicasts: u64,
    /// Requests the kernel took off the wire, handed to the runtime.
    pub requests_from_intake: u64,
    /// Of those, records tagged with another view than the armed one (none
    /// can exist: bpf/electrode.h, fast_intake; counted to show it).
    pub intake_other_view: u64,
}

impl<'a> Kernel<'a> {
    pub fn new(loaded: &'a Loaded, config: &Config, index: usize) -> anyhow::Result<Kernel<'a>> {
        let index = index as u8;
        #[cfg(feature = "tc_broadcast")]
        {
            let targets: Vec<(u8, SocketAddrV4)> = config
                .replicas
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index as usize)
                .map(|(i, a)| (i as u8, *a))
                .collect();
            loaded.set_broadcast_targets(index, config.replicas[index as usize].port(), &targets)?;
            learn_macs_from_neighbours(loaded, index);
        }
        Ok(Kernel {
            loaded,
            index,
            peers: config.replicas.clone(),
            #[cfg(feature = "fast_quorum_prune")]
            f: config.f as u32,
            ticks: 0,
            #[cfg(feature = "fast_reply")]
            follower: loaded.follower_path()?,
            #[cfg(feature = "fast_quorum_prune")]
            quorum_armed: None,
            #[cfg(feature = "fast_quorum_prune")]
            acks_fed: vec![0; config.replica_count()],
            #[cfg(feature = "fast_intake")]
            intake: loaded.intake_path()?,
            #[cfg(feature = "fast_intake")]
            intake_armed: None,
            #[cfg(feature = "fast_intake")]
            intake_backlog: Vec::new(),
            #[cfg(feature = "tc_broadcast")]
            broadcast_view: None,
            #[cfg(feature = "tc_broadcast")]
            coverage: vec![false; config.replica_count()],
            counters: KernelCounters::default(),
        })
    }

    /// Whether the core should run with kernel_fast_reply.
    pub fn fast_reply(&self) -> bool {
        cfg!(feature = "fast_reply")
    }

    /// The intake ring's fd, to wait on next to the socket (None: no
    /// intake compiled in).
    pub fn intake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        #[cfg(feature = "fast_intake")]
        return Some(self.intake.ring_fd());
        #[cfg(not(feature = "fast_intake"))]
        None
    }

    /// About to sleep: false when the intake holds a request (reserved or
    /// submitted) to drain first; the kernel passes requests to the socket
    /// while we sleep (bpf/electrode.h, fast_intake "Wake-ups").
    pub fn intake_may_sleep(&self) -> bool {
        #[cfg(feature = "fast_intake")]
        return self.intake.may_sleep();
        #[cfg(not(feature = "fast_intake"))]
        true
    }

    /// Whether the intake ring holds a request not drained yet.
    pub fn intake_pending(&self) -> bool {
        #[cfg(feature = "fast_intake")]
        return self.intake.pending();
        #[cfg(not(feature = "fast_intake"))]
        false
    }

    /// Awake again: the kernel puts requests in the ring from now on.
    pub fn intake_wake(&self) {
        #[cfg(feature = "fast_intake")]
        self.intake.wake();
    }

    /// Requests the kernel took off the wire since the last call, in the
    /// order it took them (those a disarm drained first). The runtime feeds
    /// each to the same code as a socket datagram from `record.from`.
    #[cfg(feature = "fast_intake")]
    pub fn take_requests(&mut self) -> anyhow::Result<Vec<crate::fastpath::IntakeRecord>> {
        let mut records = std::mem::take(&mut self.intake_backlog);
        if let Some(view) = self.intake_armed {
            let drained = self.intake.drain().context("draining the request intake")?;
            self.counters.intake_other_view += drained.iter().filter(|r| r.view != view).count() as u64;
            records.extend(drained);
        }
        self.counters.requests_from_intake += records.len() as u64;
        Ok(records)
    }

    /// Before the core sees any input: hand it what the kernel acked, so
    /// it never mistakes a logged op for a gap.
    pub fn before_input(&mut self, core: &mut Replica, out: &mut Vec<Action>) -> anyhow::Result<()> {
        #[cfg(feature = "fast_reply")]
        if core.kernel_armed().is_some() {
            let prepares = self.follower.drain_prepares(usize::MAX).context("draining acked Prepares")?;
            if !prepares.is_empty() {
                self.counters.prepares_drained += prepares.len() as u64;
                core.on_kernel_prepares(prepares, out);
            }
            self.give_up_on_fault()?;
        }
        let _ = (core, out);
        Ok(())
    }

    /// Executes a kernel action of the core.
    pub fn execute(
        &mut self,
        action: &Action,
        core: &mut Replica,
        out: &mut Vec<Action>,
    ) -> anyhow::Result<()> {
        match action {
            #[cfg(feature = "fast_reply")]
            Action::KernelArm(arm) => {
                self.counters.arms += 1;
                let leader = self.peers[arm.leader as usize];
                self.follower.arm_follower(arm.view, arm.next_op, leader, arm.leader, self.index)
            }
            #[cfg(feature = "fast_reply")]
            Action::KernelDisarm => {
                self.counters.disarms += 1;
                self.follower.disarm_follower()?;
                let prepares = self.follower.drain_prepares(usize::MAX).context("draining acked Prepares")?;
                self.counters.prepares_drained += prepares.len() as u64;
                core.on_kernel_disarmed(prepares, out);
                self.give_up_on_fault()
            }
            other => {
                let _ = (other, core, out);
                Ok(())
            }
        }
    }

    /// The kernel acked a Prepare this replica cannot log (the core got
    /// only the valid prefix before it): its log no longer holds what it
    /// vouched for, so it must not go on as a member. It stops with an
    /// error; restarted, it boots into recovery and takes the log from the
    /// cluster (the argument is in bpf/electrode.h, fast_reply).
    #[cfg(feature = "fast_reply")]
    fn give_up_on_fault(&self) -> anyhow::Result<()> {
        match self.follower.fault() {
            None => Ok(()),
            Some(fault) => anyhow::bail!(
                "fast_reply: the kernel acked a Prepare this replica cannot log ({fault}); \
                 giving up its log: restart the replica and it recovers the log from the cluster"
            ),
        }
    }

    /// After each input: leader-side paths follow the core's role, view
    /// and commit.
    pub fn after_input(&mut self, core: &Replica) -> anyhow::Result<()> {
        let leading = core.is_leader() && core.status() == Status::Normal;
        #[cfg(feature = "fast_quorum_prune")]
        {
            match (leading, self.quorum_armed) {
                (true, Some((view, base))) if view == core.view() => {
                    // Move the window lazily: a map write costs a syscall,
                    // and a lagging base only lets acks of far ops pass.
                    let wanted = core.commit() + 1;
                    if wanted >= base + crate::fastpath::quorum::WINDOW_OPS / 4 {
                        self.loaded.advance_window(wanted)?;
                        self.quorum_armed = Some((view, wanted));
                    }
                }
                (true, _) => {
                    let base = core.commit() + 1;
                    self.loaded.arm_leader(
                        core.view(),
                        base,
                        self.f,
                        self.peers.len() as u32,
                        self.index.into(),
                    )?;
                    self.quorum_armed = Some((core.view(), base));
                    self.acks_fed.iter_mut().for_each(|a| *a = 0);
                    self.counters.arms += 1;
                }
                (false, Some(_)) => {
                    self.loaded.disarm_leader()?;
                    self.quorum_armed = None;
                    self.counters.disarms += 1;
                }
                (false, None) => {}
            }
        }
        #[cfg(feature = "fast_intake")]
        {
            let wanted = leading.then(|| core.view());
            if wanted != self.intake_armed {
                if self.intake_armed.is_some() {
                    // Disarm, drain completely: nothing the kernel took
                    // stays behind; the runtime feeds it next.
                    let drained = self.intake.disarm().context("disarming the request intake")?;
                    self.intake_backlog.extend(drained);
                    self.intake_armed = None;
                    self.counters.disarms += 1;
                }
                if let Some(view) = wanted {
                    self.intake.arm(view, *self.peers[self.index as usize].ip())?;
                    self.intake_armed = Some(view);
                    self.counters.arms += 1;
                }
            }
        }
        #[cfg(feature = "tc_broadcast")]
        {
            let wanted = leading.then(|| core.view());
            if wanted != self.broadcast_view {
                self.loaded.arm_broadcast(wanted.is_some())?;
                self.broadcast_view = wanted;
                if wanted.is_some() {
                    self.coverage = self.loaded.broadcast_coverage()?;
                }
            }
        }
        let _ = leading;
        Ok(())
    }

    /// A PrepareOK passed the kernel (leader, quorum pruning armed): add the
    /// acks the kernel dropped for the same op, from its map.
    #[cfg(feature = "fast_quorum_prune")]
    pub fn completing_acks(
        &mut self,
        view: u64,
        op: u64,
        from: u8,
    ) -> anyhow::Result<Vec<crate::wire::PrepareOk>> {
        let Some((armed_view, _)) = self.quorum_armed else { return Ok(Vec::new()) };
        if armed_view != view || self.f <= 1 {
            // With f = 1 the passed ack is the whole quorum.
            return Ok(Vec::new());
        }
        let Some(bitmap) = self.loaded.quorum_acks(op)? else { return Ok(Vec::new()) };
        Ok(self.acks_in(bitmap, view, op, from))
    }

    #[cfg(feature = "fast_quorum_prune")]
    fn acks_in(&mut self, bitmap: u32, view: u64, op: u64, skip: u8) -> Vec<crate::wire::PrepareOk> {
        let mut acks = Vec::new();
        for replica in 0..self.peers.len() as u8 {
            if replica != skip && replica != self.index && bitmap & (1 << replica) != 0 {
                acks.push(crate::wire::PrepareOk { view, op, replica, gap: false });
            }
        }
        self.counters.acks_from_map += acks.len() as u64;
        acks
    }

    /// Every tick: the followers' acks the kernel recorded (quorum
    /// pruning); every KERNEL_POLL_TICKS ticks: other state the kernel
    /// changes on its own. Returns acks to feed to the core.
    pub fn on_tick(&mut self, core: &Replica) -> anyhow::Result<Vec<(u8, crate::wire::PrepareOk)>> {
        self.ticks += 1;
        #[cfg_attr(not(feature = "fast_quorum_prune"), allow(unused_mut))]
        let mut acks = Vec::new();
        #[cfg(feature = "fast_quorum_prune")]
        if let Some((view, _)) = self.quorum_armed {
            // A passed ack may have been lost after XDP (full socket
            // buffer): the map still has it, and the core gets it here.
            // So does a lagging follower's position (its acks of committed
            // ops drop in XDP): the core's per-follower retransmission
            // clock needs it each tick, or it re-sends to a follower that
            // is only pruned, not behind.
            let state = self.loaded.leader_state()?;
            if state.armed && state.view == view {
                for replica in 0..self.peers.len() {
                    let op = state.acked_op[replica];
                    if replica != self.index as usize && op > self.acks_fed[replica] {
                        self.acks_fed[replica] = op;
                        self.counters.acks_from_map += 1;
                        acks.push((
                            replica as u8,
                            crate::wire::PrepareOk { view, op, replica: replica as u8, gap: false },
                        ));
                    }
                }
            }
        }
        if self.ticks % KERNEL_POLL_TICKS != 0 {
            return Ok(acks);
        }
        #[cfg(feature = "tc_broadcast")]
        if self.ticks % NEIGHBOUR_POLL_TICKS == 0 && self.coverage.iter().filter(|c| !**c).count() > 1 {
            // A follower still unknown (the entry for self is always
            // false): its ARP entry may have appeared since.
            learn_macs_from_neighbours(self.loaded, self.index);
        }
        #[cfg(feature = "tc_broadcast")]
        if self.broadcast_view.is_some() {
            self.coverage = self.loaded.broadcast_coverage()?;
        }
        let _ = core;
        Ok(acks)
    }

    /// For a message to all followers: Some((one covered follower, the
    /// followers to unicast)) when the TC fan-out can take it.
    #[cfg(feature = "tc_broadcast")]
    pub fn broadcast_plan(&mut self) -> Option<(usize, Vec<usize>)> {
        self.broadcast_view?;
        let covered: Vec<usize> =
            (0..self.peers.len()).filter(|i| *i != self.index as usize && self.coverage[*i]).collect();
        let first = *covered.first()?;
        let uncovered: Vec<usize> =
            (0..self.peers.len()).filter(|i| *i != self.index as usize && !self.coverage[*i]).collect();
        self.counters.broadcasts += 1;
        self.counters.broadcast_unicasts += uncovered.len() as u64;
        Some((first, uncovered))
    }

    /// Kernel counters, for the exit summary.
    pub fn kernel_counters(&self) -> anyhow::Result<crate::fastpath::Counters> {
        self.loaded.counters()
    }
}
