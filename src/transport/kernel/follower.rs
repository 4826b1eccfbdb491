//! fast_reply's adapter (followers): the core's `KernelArm` /
//! `KernelDisarm` become map writes, and the Prepares the kernel acked are
//! handed to the core before every input. Driven by the core's actions: on
//! a disarm the core keeps its input until `on_kernel_disarmed` answers.

use anyhow::{Context, Result};

use super::{Actions, Inputs, KernelPath, KernelPathCounts};
use crate::config::Config;
use crate::fastpath::{FollowerPath, Loaded};
use crate::vr::{Action, Replica};

pub struct FastReply<'a> {
    follower: FollowerPath<'a>,
    peers: Vec<std::net::SocketAddrV4>,
    index: u8,
    prepares_drained: u64,
    arms: u64,
    disarms: u64,
}

impl<'a> FastReply<'a> {
    pub fn new(loaded: &'a Loaded, config: &Config, index: u8) -> Result<FastReply<'a>> {
        Ok(FastReply {
            follower: loaded.follower_path()?,
            peers: config.replicas.clone(),
            index,
            prepares_drained: 0,
            arms: 0,
            disarms: 0,
        })
    }

    /// The kernel acked a Prepare this replica cannot log (the core got
    /// only the valid prefix before it): its log no longer holds what it
    /// vouched for, so it must not go on as a member. It stops with an
    /// error; restarted, it boots into recovery and takes the log from the
    /// cluster (the argument is in bpf/electrode.h, fast_reply).
    fn give_up_on_fault(&self) -> Result<()> {
        match self.follower.fault() {
            None => Ok(()),
            Some(fault) => anyhow::bail!(
                "fast_reply: the kernel acked a Prepare this replica cannot log ({fault}); \
                 giving up its log: restart the replica and it recovers the log from the cluster"
            ),
        }
    }

    fn drain(&mut self) -> Result<Vec<crate::wire::Prepare>> {
        let prepares = self.follower.drain_prepares(usize::MAX).context("draining acked Prepares")?;
        self.prepares_drained += prepares.len() as u64;
        Ok(prepares)
    }
}

impl KernelPath for FastReply<'_> {
    /// Hands the core what the kernel acked, so it never mistakes a
    /// logged op for a gap.
    fn before_input(&mut self, core: &mut Replica, out: &mut Actions, _input: &mut Inputs) -> Result<()> {
        if core.kernel_armed().is_some() {
            let prepares = self.drain()?;
            if !prepares.is_empty() {
                core.on_kernel_prepares(prepares, out);
            }
            self.give_up_on_fault()?;
        }
        Ok(())
    }

    fn on_action(&mut self, action: &Action, core: &mut Replica, out: &mut Actions) -> Result<()> {
        match action {
            Action::KernelArm(arm) => {
                self.arms += 1;
                let leader = self.peers[arm.leader as usize];
                self.follower.arm_follower(arm.view, arm.next_op, leader, arm.leader, self.index)
            }
            Action::KernelDisarm => {
                self.disarms += 1;
                self.follower.disarm_follower()?;
                let prepares = self.drain()?;
                core.on_kernel_disarmed(prepares, out);
                self.give_up_on_fault()
            }
            _ => Ok(()),
        }
    }

    fn add_counts(&self, counts: &mut KernelPathCounts) {
        counts.prepares_drained += self.prepares_drained;
        counts.arms += self.arms;
        counts.disarms += self.disarms;
    }
}
