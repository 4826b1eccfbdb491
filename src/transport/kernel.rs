//! The runtime's side of the eBPF fast paths: loads and attaches the
//! programs at start-up and keeps the kernel's maps in step with the VR
//! core, following the handover rules of `bpf/electrode.h`.
//!
//! Each fast path is one adapter (a [`KernelPath`]) in its own file under
//! `kernel/`; [`Kernel::new`] registers those compiled in, and the runtime
//! calls every adapter at the same points of its loop and knows none of
//! them by name:
//!
//! - `before_input`: before the core sees any input, hand it what the
//!   kernel did on its behalf (acked Prepares) and take what it took off
//!   the wire (requests), which the runtime feeds first;
//! - `on_action`: a kernel action of the core (arm, disarm);
//! - `on_message_passed`: a message the kernel passed: what it kept for
//!   it (the acks it dropped), fed to the core right after it;
//! - `after_input`: after each input, follow the core's role, view and
//!   commit (arm, move, disarm);
//! - `on_tick`: every tick, what the kernel recorded on its own;
//! - the sleep hooks (`wait_fd`, `may_sleep`, `has_input`, `on_wake`) for a
//!   ring the kernel fills without waking anybody; `broadcast_plan` for a
//!   message to all followers.
//!
//! The paths:
//! - fast_reply (`follower.rs`, followers): the core's `KernelArm` /
//!   `KernelDisarm` become map writes (the core defers its input until the
//!   disarm is answered, so only its action can drive that handover); the
//!   ring of kernel-acked Prepares is drained before every input.
//! - fast_quorum_prune (`quorum.rs`, leader): armed while this replica
//!   leads a view in normal status; each PrepareOK the kernel passes is
//!   completed with the acks it dropped (read from the map), so the core
//!   counts the quorum itself; every tick the map's per-follower acks are
//!   fed again, which recovers a passed ack lost on the way to the socket.
//! - fast_intake (`intake.rs`, leader): armed while this replica leads a
//!   view in normal status; the requests the kernel takes off the wire
//!   are drained before every other input and fed to the same code as
//!   socket datagrams; disarmed (and drained completely) after any input
//!   that changed the view or status.
//! - tc_broadcast (`broadcast.rs`, leader): armed while leading; a message
//!   for all followers is sent once, marked, to one follower whose MAC the
//!   kernel learned, and unicast to the followers it has not learned yet.
//!
//! The adapters live here, not in `src/fastpath`: they are the runtime's
//! policy (when to arm, what the core is handed) and use the VR core,
//! while `src/fastpath` stays the libbpf-rs layer that knows no core.

#[cfg(feature = "tc_broadcast")]
mod broadcast;
#[cfg(feature = "fast_reply")]
mod follower;
#[cfg(feature = "fast_intake")]
mod intake;
#[cfg(feature = "fast_quorum_prune")]
mod quorum;

use std::fmt;
use std::net::SocketAddrV4;
use std::os::fd::BorrowedFd;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::fastpath::{LoadOptions, Loaded, XdpAttachment};
use crate::vr::{Action, Replica};
use crate::wire::{Message, PrepareOk};

/// Finds the interface that holds `address` in this network namespace.
pub fn interface_of(address: SocketAddrV4) -> Result<String> {
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
pub fn load(config: &Config, index: usize) -> Result<Loaded> {
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
pub fn attach<'a>(loaded: &'a Loaded, iface: &str) -> Result<Attached<'a>> {
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

/// Input the kernel took on the core's behalf; the runtime feeds it to the
/// core like any other.
#[derive(Clone, Debug)]
pub enum KernelInput {
    /// A datagram the kernel took off the wire, with its source: it goes
    /// through the same checks as a socket datagram.
    Datagram { datagram: Vec<u8>, from: SocketAddrV4 },
    /// A follower's PrepareOK the kernel counted (from `ack.replica`).
    PrepareOk(PrepareOk),
}

/// How a message to all followers goes out when the kernel fans it out:
/// once, marked, to `marked_to`, and unicast to `unicast`.
#[derive(Clone, Debug)]
pub struct BroadcastPlan {
    pub marked_to: usize,
    pub unicast: Vec<usize>,
}

/// What a path adds for the core to take next (fed after the input at hand).
pub type Inputs = Vec<KernelInput>;
/// The core's output, which a path's handover may add to.
pub type Actions = Vec<Action>;

/// One fast path's handover between the core and the kernel. The runtime
/// calls every registered path at each of these points; a path implements
/// those it needs (see the module comment).
pub trait KernelPath {
    /// Before the core sees any input: hand it what the kernel did on its
    /// behalf, and add to `input` what the kernel took for it.
    fn before_input(&mut self, _core: &mut Replica, _out: &mut Actions, _input: &mut Inputs) -> Result<()> {
        Ok(())
    }

    /// A kernel action of the core (`KernelArm`, `KernelDisarm`).
    fn on_action(&mut self, _action: &Action, _core: &mut Replica, _out: &mut Actions) -> Result<()> {
        Ok(())
    }

    /// The kernel passed `message` from replica `from`: add to `input`
    /// what it kept for it (fed to the core right after the message).
    fn on_message_passed(&mut self, _message: &Message, _from: u8, _input: &mut Inputs) -> Result<()> {
        Ok(())
    }

    /// After each input: follow the core's role, view and commit.
    fn after_input(&mut self, _core: &Replica) -> Result<()> {
        Ok(())
    }

    /// Tick number `tick` (from 1): add to `input` what the kernel
    /// recorded on its own.
    fn on_tick(&mut self, _tick: u64, _input: &mut Inputs) -> Result<()> {
        Ok(())
    }

    /// A ring the kernel fills without waking anybody, to wait on beside
    /// the socket.
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// About to sleep: false while the kernel holds input to take first.
    fn may_sleep(&self) -> bool {
        true
    }

    /// Whether the kernel holds input not taken yet.
    fn has_input(&self) -> bool {
        false
    }

    /// Awake again (after a wait, whatever ended it).
    fn on_wake(&self) {}

    /// A message for all followers: how the kernel can fan it out.
    fn broadcast_plan(&mut self) -> Option<BroadcastPlan> {
        None
    }

    /// Adds what this path did to `counts`.
    fn add_counts(&self, counts: &mut KernelPathCounts);
}

/// What the runtime did with the kernel, over all paths (printed at exit).
#[derive(Clone, Copy, Default)]
pub struct KernelPathCounts {
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

impl fmt::Debug for KernelPathCounts {
    /// The exit line (`kernel paths KernelCounters { .. }`) keeps the text
    /// it printed before the type was renamed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelCounters")
            .field("prepares_drained", &self.prepares_drained)
            .field("arms", &self.arms)
            .field("disarms", &self.disarms)
            .field("acks_from_map", &self.acks_from_map)
            .field("broadcasts", &self.broadcasts)
            .field("broadcast_unicasts", &self.broadcast_unicasts)
            .field("requests_from_intake", &self.requests_from_intake)
            .field("intake_other_view", &self.intake_other_view)
            .finish()
    }
}

/// The fast paths compiled in, kept in step with the core. (Without any
/// fast path compiled in, the runtime never builds one.)
pub struct Kernel<'a> {
    loaded: &'a Loaded,
    paths: Vec<Box<dyn KernelPath + 'a>>,
    ticks: u64,
}

impl<'a> Kernel<'a> {
    /// Registers the adapter of each path compiled in: a new path is a
    /// file beside this one and a line here.
    // One line per path, each behind its feature: pushes, not vec![].
    #[allow(clippy::vec_init_then_push)]
    pub fn new(loaded: &'a Loaded, config: &Config, index: usize) -> Result<Kernel<'a>> {
        let index = index as u8;
        #[cfg_attr(
            not(any(
                feature = "fast_reply",
                feature = "fast_quorum_prune",
                feature = "tc_broadcast",
                feature = "fast_intake"
            )),
            allow(unused_mut)
        )]
        let mut paths: Vec<Box<dyn KernelPath + 'a>> = Vec::new();
        #[cfg(feature = "fast_reply")]
        paths.push(Box::new(follower::FastReply::new(loaded, config, index)?));
        #[cfg(feature = "fast_quorum_prune")]
        paths.push(Box::new(quorum::QuorumPrune::new(loaded, config, index)));
        #[cfg(feature = "fast_intake")]
        paths.push(Box::new(intake::Intake::new(loaded, config, index)?));
        #[cfg(feature = "tc_broadcast")]
        paths.push(Box::new(broadcast::Broadcast::new(loaded, config, index)?));
        let _ = (config, index);
        Ok(Kernel { loaded, paths, ticks: 0 })
    }

    /// Whether the core should run with kernel_fast_reply.
    pub fn fast_reply(&self) -> bool {
        cfg!(feature = "fast_reply")
    }

    /// Each path's [`KernelPath::before_input`], in registration order.
    pub fn before_input(&mut self, core: &mut Replica, out: &mut Actions, input: &mut Inputs) -> Result<()> {
        self.paths.iter_mut().try_for_each(|path| path.before_input(core, out, input))
    }

    pub fn on_action(&mut self, action: &Action, core: &mut Replica, out: &mut Actions) -> Result<()> {
        self.paths.iter_mut().try_for_each(|path| path.on_action(action, core, out))
    }

    pub fn on_message_passed(&mut self, message: &Message, from: u8, input: &mut Inputs) -> Result<()> {
        self.paths.iter_mut().try_for_each(|path| path.on_message_passed(message, from, input))
    }

    pub fn after_input(&mut self, core: &Replica) -> Result<()> {
        self.paths.iter_mut().try_for_each(|path| path.after_input(core))
    }

    pub fn on_tick(&mut self, input: &mut Inputs) -> Result<()> {
        self.ticks += 1;
        let tick = self.ticks;
        self.paths.iter_mut().try_for_each(|path| path.on_tick(tick, input))
    }

    /// The rings to wait on beside the socket.
    pub fn wait_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.paths.iter().filter_map(|path| path.wait_fd()).collect()
    }

    pub fn may_sleep(&self) -> bool {
        self.paths.iter().all(|path| path.may_sleep())
    }

    pub fn has_input(&self) -> bool {
        self.paths.iter().any(|path| path.has_input())
    }

    pub fn on_wake(&self) {
        self.paths.iter().for_each(|path| path.on_wake());
    }

    pub fn broadcast_plan(&mut self) -> Option<BroadcastPlan> {
        self.paths.iter_mut().find_map(|path| path.broadcast_plan())
    }

    /// What the runtime did with the kernel, over all paths.
    pub fn counts(&self) -> KernelPathCounts {
        let mut counts = KernelPathCounts::default();
        self.paths.iter().for_each(|path| path.add_counts(&mut counts));
        counts
    }

    /// Kernel counters, for the exit summary.
    pub fn kernel_counters(&self) -> Result<crate::fastpath::Counters> {
        self.loaded.counters()
    }
}
