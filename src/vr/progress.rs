//! Follower progress, as the leader sees it: who acked what, the commit
//! quorum, the commit-time estimate the retransmission timeouts follow,
//! and re-sending Prepares to a follower that lacks them.

use super::replica::Replica;
use super::timeout::Timeout;
use super::{Action, Config};
use crate::wire::{Prepare, PrepareOk};

#[cfg(feature = "sim-bugs")]
use super::Bug;

/// What the leader knows of one replica in this view.
#[derive(Clone, Debug)]
pub(super) struct Progress {
    /// Highest op it acknowledged in this view.
    pub(super) acked: u64,
    /// The ack after which we last re-sent a Prepare on a gap-flagged ack
    /// (one fast retransmission per gap).
    pub(super) fast_retransmitted: Option<u64>,
    /// Runs while we lead; counts from its ack's last advance while it
    /// lacks ops we hold: its own retransmission clock. (A clock shared by
    /// all followers restarts whenever commit moves, and at saturation
    /// commit moves on the other followers' acks: a follower behind a lost
    /// Prepare then waited for state transfer, 30 ms, while the leader
    /// depended on the rest alone.)
    pub(super) timeout: Timeout,
}

impl Progress {
    pub(super) fn new(prepare_timeout_ticks: u64) -> Progress {
        Progress { acked: 0, fast_retransmitted: None, timeout: Timeout::new(prepare_timeout_ticks) }
    }

    /// A new view: nothing acked yet (the timeout starts with the status).
    pub(super) fn reset(&mut self) {
        self.acked = 0;
        self.fast_retransmitted = None;
    }
}

/// Leader: re-send uncommitted Prepares after twice the smoothed commit
/// time plus two ticks, at most prepare_retransmit_ticks: a few ms on a
/// quiet cluster, where the fixed timeout is a worst case.
pub(super) fn prepare_timeout_ticks(commit_ticks_x8: u64, config: &Config) -> u64 {
    (2 * commit_ticks_x8 / 8 + 2).min(config.prepare_retransmit_ticks)
}

impl Replica {
    pub(super) fn on_prepare_ok(&mut self, from: u8, m: PrepareOk, out: &mut Vec<Action>) {
        if !self.is_leader() || m.view != self.view || m.replica != from {
            return;
        }
        // An ack for op n acknowledges every op <= n (logs are prefixes of ours).
        let op = m.op.min(self.op);
        let progress = &mut self.progress[from as usize];
        if op > progress.acked {
            progress.timeout.reset();
        }
        progress.acked = progress.acked.max(op);
        // Only a flagged ack asks. A repeated unflagged ack is not a sign
        // of a gap here (followers flag every ack while they hold Prepares
        // past one): it answers our own re-send of an op the follower got
        // meanwhile, and taking it for a gap re-sent the next op, whose
        // answer repeated again, one Prepare per ack for as long as a
        // pruned follower trailed the quorum.
        let asked = m.gap && op < self.op;
        if asked && progress.fast_retransmitted != Some(op) {
            // The follower holds Prepares past a gap at op + 1: re-send it
            // now (once per gap until its retransmission clock runs out),
            // as TCP's fast retransmit.
            progress.fast_retransmitted = Some(op);
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
            .map(|r| self.progress[r as usize].acked)
            .collect();
        followers.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_op = if acks_needed == 0 { self.op } else { followers[acks_needed - 1] };
        // With our own vote: f+1 copies, ours on disk in durable mode.
        let quorum_op = self.own_vote(quorum_op);
        if quorum_op > self.commit {
            // The prepare timeout counts from the oldest uncommitted send.
            let sample = self.prepare_timeout.ticks();
            self.commit_ticks_x8 = self.commit_ticks_x8 - self.commit_ticks_x8 / 8 + sample;
            self.set_prepare_timeouts();
            self.execute_through(quorum_op, true, out);
            self.prepare_timeout.reset();
            self.send_prepares(out);
        }
    }

    /// The retransmission timeouts follow the commit-time estimate.
    fn set_prepare_timeouts(&mut self) {
        let after = prepare_timeout_ticks(self.commit_ticks_x8, &self.config);
        self.prepare_timeout.after = after;
        self.progress.iter_mut().for_each(|p| p.timeout.after = after);
    }

    /// Leader: uncommitted ops for a whole timeout. Nothing is re-sent here
    /// (each follower has its own timeout); the clock restarts so that the
    /// commit-time estimate samples at most one timeout.
    pub(super) fn on_prepare_timeout(&mut self) {
        if self.op > self.commit {
            self.prepare_timeout.reset();
        }
    }

    /// Leader, every tick: a follower whose ack has not moved for its
    /// timeout while it lacks ops we hold gets them again (and may have a
    /// fast retransmission again).
    pub(super) fn on_progress_timeouts(&mut self, out: &mut Vec<Action>) {
        for replica in 0..self.config.replica_count {
            let r = replica as usize;
            if replica == self.config.index || !self.progress[r].timeout.ticking() {
                continue;
            }
            if self.progress[r].acked >= self.op {
                self.progress[r].timeout.reset();
                continue;
            }
            if !self.progress[r].timeout.fired() {
                continue;
            }
            self.progress[r].timeout.reset();
            self.progress[r].fast_retransmitted = None;
            // The first op it lacks only: a follower behind a lost Prepare
            // holds the ones after it and acks them all once the gap fills
            // (the next gap, if any, gets the next timeout or a fast
            // retransmit on its repeated ack), and a follower that is only
            // slow (descheduled) costs one datagram, not a window. One too
            // far behind commit catches up by state transfer.
            let acked = self.progress[r].acked;
            let near = self.commit - acked.min(self.commit) <= self.config.pipeline_max as u64;
            let op = if near { acked + 1 } else { self.commit + 1 };
            let Some(entry) = self.entry(op).filter(|_| op <= self.op) else { continue };
            let prepare = Prepare { view: self.view, op, commit: self.commit, batch: entry.batch.clone() };
            self.send_prepare(Some(replica), prepare, out);
        }
    }
}
