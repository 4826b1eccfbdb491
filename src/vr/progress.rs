//! Follower progress, as the leader sees it: who acked what, the commit
//! quorum, and re-sending Prepares to a follower that lacks them.

use super::replica::Replica;
use super::Action;
use crate::wire::{Prepare, PrepareOk};

#[cfg(feature = "sim-bugs")]
use super::Bug;

impl Replica {
    pub(super) fn on_prepare_ok(&mut self, from: u8, m: PrepareOk, out: &mut Vec<Action>) {
        if !self.is_leader() || m.view != self.view || m.replica != from {
            return;
        }
        // An ack for op n acknowledges every op <= n (logs are prefixes of ours).
        let op = m.op.min(self.op);
        let acked = &mut self.acked[from as usize];
        if op > *acked {
            self.follower_stall_ticks[from as usize] = 0;
        }
        *acked = (*acked).max(op);
        // Only a flagged ack asks. A repeated unflagged ack is not a sign
        // of a gap here (followers flag every ack while they hold Prepares
        // past one): it answers our own re-send of an op the follower got
        // meanwhile, and taking it for a gap re-sent the next op, whose
        // answer repeated again, one Prepare per ack for as long as a
        // pruned follower trailed the quorum.
        let asked = m.gap && op < self.op;
        if asked && self.fast_retransmitted[from as usize] != Some(op) {
            // The follower holds Prepares past a gap at op + 1: re-send it
            // now (once per gap until its retransmission clock runs out),
            // as TCP's fast retransmit.
            self.fast_retransmitted[from as usize] = Some(op);
            if let Some(entry) = self.entry(op + 1) {
                let prepare =
                    Prepare { view: self.view, op: op + 1, commit: self.commit, batch: entry.batch.clone() };
                self.send_prepare(Some(from), prepare, out);
            }
        }
        self.commit_quorum(out);
    }

    /// Leader: commits the highest op that f followers (f+1 with us) hold.
    pub(super) fn commit_quorum(&mut self, out: &mut Vec<Action>) {
        if !self.is_leader() {
            return;
        }
        #[allow(unused_mut)]
        let mut acks_needed = self.f();
        #[cfg(feature = "sim-bugs")]
        if self.config.bug == Some(Bug::CommitOneAckShort) {
            acks_needed = acks_needed.saturating_sub(1);
        }
        let mut followers: Vec<u64> = (0..self.config.replica_count)
            .filter(|r| *r != self.config.index)
            .map(|r| self.acked[r as usize])
            .collect();
        followers.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_op = if acks_needed == 0 { self.op } else { followers[acks_needed - 1] };
        if quorum_op > self.commit {
            // retransmit_ticks counts from the oldest uncommitted send.
            self.commit_ticks_x8 = self.commit_ticks_x8 - self.commit_ticks_x8 / 8 + self.retransmit_ticks;
            self.execute_through(quorum_op, true, out);
            self.retransmit_ticks = 0;
            self.send_prepares(out);
        }
    }

    /// Leader: re-send uncommitted Prepares after twice the smoothed commit
    /// time plus two ticks, at most prepare_retransmit_ticks: a few ms on a
    /// quiet cluster, where the fixed timeout is a worst case.
    pub(super) fn prepare_timeout_ticks(&self) -> u64 {
        (2 * self.commit_ticks_x8 / 8 + 2).min(self.config.prepare_retransmit_ticks)
    }

    /// Leader, every tick: a follower whose ack has not moved for `timeout`
    /// ticks while it lacks ops we hold gets them again (and may have a
    /// fast retransmission again).
    pub(super) fn on_follower_ticks(&mut self, timeout: u64, out: &mut Vec<Action>) {
        for replica in 0..self.config.replica_count {
            if replica == self.config.index {
                continue;
            }
            let r = replica as usize;
            if self.acked[r] >= self.op {
                self.follower_stall_ticks[r] = 0;
                continue;
            }
            self.follower_stall_ticks[r] += 1;
            if self.follower_stall_ticks[r] < timeout {
                continue;
            }
            self.follower_stall_ticks[r] = 0;
            self.fast_retransmitted[r] = None;
            // The first op it lacks only: a follower behind a lost Prepare
            // holds the ones after it and acks them all once the gap fills
            // (the next gap, if any, gets the next timeout or a fast
            // retransmit on its repeated ack), and a follower that is only
            // slow (descheduled) costs one datagram, not a window. One too
            // far behind commit catches up by state transfer.
            let acked = self.acked[r];
            let near = self.commit - acked.min(self.commit) <= self.config.pipeline_max as u64;
            let op = if near { acked + 1 } else { self.commit + 1 };
            let Some(entry) = self.entry(op).filter(|_| op <= self.op) else { continue };
            let prepare = Prepare { view: self.view, op, commit: self.commit, batch: entry.batch.clone() };
            self.send_prepare(Some(replica), prepare, out);
        }
    }
}
