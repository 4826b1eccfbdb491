//! fast_quorum_prune's adapter (leader): armed while this replica leads a
//! view in normal status, its window moved with the commit; each PrepareOK
//! the kernel passes is completed with the acks it dropped for the same op
//! (from its map), and every tick the map's per-follower acks are fed
//! again.

use anyhow::Result;

use super::{Inputs, KernelInput, KernelPath, KernelPathCounts};
use crate::config::Config;
use crate::fastpath::quorum::WINDOW_OPS;
use crate::fastpath::Loaded;
use crate::vr::{Replica, Status};
use crate::wire::{Message, PrepareOk};

pub struct QuorumPrune<'a> {
    loaded: &'a Loaded,
    index: u8,
    replica_count: usize,
    /// Follower acks that make a quorum.
    f: u32,
    /// View the leader path is armed for, and the window base written.
    armed: Option<(u64, u64)>,
    /// Highest op fed to the core per follower from the kernel's acks.
    acks_fed: Vec<u64>,
    arms: u64,
    disarms: u64,
    acks_from_map: u64,
}

impl<'a> QuorumPrune<'a> {
    pub fn new(loaded: &'a Loaded, config: &Config, index: u8) -> QuorumPrune<'a> {
        QuorumPrune {
            loaded,
            index,
            replica_count: config.replica_count(),
            f: config.f as u32,
            armed: None,
            acks_fed: vec![0; config.replica_count()],
            arms: 0,
            disarms: 0,
            acks_from_map: 0,
        }
    }

    /// The acks in `bitmap` for (view, op), but from `skip` and ourselves.
    fn acks_in(&mut self, bitmap: u32, view: u64, op: u64, skip: u8, input: &mut Inputs) {
        for replica in 0..self.replica_count as u8 {
            if replica != skip && replica != self.index && bitmap & (1 << replica) != 0 {
                input.push(KernelInput::PrepareOk(PrepareOk { view, op, replica, gap: false }));
                self.acks_from_map += 1;
            }
        }
    }
}

impl KernelPath for QuorumPrune<'_> {
    /// A PrepareOK passed the kernel: add the acks it dropped for the same
    /// op, from its map.
    fn on_message_passed(&mut self, message: &Message, from: u8, input: &mut Inputs) -> Result<()> {
        let Message::PrepareOk(ack) = message else { return Ok(()) };
        let Some((armed_view, _)) = self.armed else { return Ok(()) };
        if armed_view != ack.view || self.f <= 1 {
            // With f = 1 the passed ack is the whole quorum.
            return Ok(());
        }
        if let Some(bitmap) = self.loaded.quorum_acks(ack.op)? {
            self.acks_in(bitmap, ack.view, ack.op, from, input);
        }
        Ok(())
    }

    fn after_input(&mut self, core: &Replica) -> Result<()> {
        let leading = core.is_leader() && core.status() == Status::Normal;
        match (leading, self.armed) {
            (true, Some((view, base))) if view == core.view() => {
                // Move the window lazily: a map write costs a syscall, and
                // a lagging base only lets acks of far ops pass.
                let wanted = core.commit() + 1;
                if wanted >= base + WINDOW_OPS / 4 {
                    self.loaded.advance_window(wanted)?;
                    self.armed = Some((view, wanted));
                }
            }
            (true, _) => {
                let base = core.commit() + 1;
                self.loaded.arm_leader(
                    core.view(),
                    base,
                    self.f,
                    self.replica_count as u32,
                    self.index.into(),
                )?;
                self.armed = Some((core.view(), base));
                self.acks_fed.iter_mut().for_each(|a| *a = 0);
                self.arms += 1;
            }
            (false, Some(_)) => {
                self.loaded.disarm_leader()?;
                self.armed = None;
                self.disarms += 1;
            }
            (false, None) => {}
        }
        Ok(())
    }

    /// A passed ack may have been lost after XDP (full socket buffer): the
    /// map still has it, and the core gets it here. So does a lagging
    /// follower's position (its acks of committed ops drop in XDP): the
    /// core's per-follower retransmission clock needs it each tick, or it
    /// re-sends to a follower that is only pruned, not behind.
    fn on_tick(&mut self, _tick: u64, input: &mut Inputs) -> Result<()> {
        let Some((view, _)) = self.armed else { return Ok(()) };
        let state = self.loaded.leader_state()?;
        if !state.armed || state.view != view {
            return Ok(());
        }
        for replica in 0..self.replica_count {
            let op = state.acked_op[replica];
            if replica != self.index as usize && op > self.acks_fed[replica] {
                self.acks_fed[replica] = op;
                self.acks_from_map += 1;
                input.push(KernelInput::PrepareOk(PrepareOk {
                    view,
                    op,
                    replica: replica as u8,
                    gap: false,
                }));
            }
        }
        Ok(())
    }

    fn add_counts(&self, counts: &mut KernelPathCounts) {
        counts.arms += self.arms;
        counts.disarms += self.disarms;
        counts.acks_from_map += self.acks_from_map;
    }
}
