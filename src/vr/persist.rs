//! Durability (docs/DURABILITY.md, "What an acknowledgement means"): what
//! the core asks to be written, what it learns is on disk, and the rule
//! that acks and the leader's own vote never run ahead of it. Memory mode
//! (`Config::durable` false) takes one path through here: every change of
//! the log counts as persisted at once, and nothing is asked.

use super::replica::Replica;
use super::{Action, Persist, Status};

#[cfg(feature = "sim-bugs")]
use super::Bug;

impl Replica {
    /// The log changed at `from` and above (appended, truncated or
    /// replaced). Durable mode: entries from `from` on are no longer the
    /// ones on disk until written again, so what we count as persisted,
    /// and what we promised, go down to `from - 1`.
    pub(super) fn log_changed(&mut self, from: u64) {
        if !self.config.durable {
            self.persisted_op = self.op;
            return;
        }
        self.persist_from = Some(self.persist_from.map_or(from, |f| f.min(from)));
        let kept = from - 1;
        self.persisted_op = self.persisted_op.min(kept);
        self.promised_op = self.promised_op.min(kept);
    }

    /// Durable mode: what the log on disk must become since the last call
    /// (None: nothing changed; always None in memory mode). The runtime
    /// calls it after any input (once per burst is enough: changes
    /// accumulate), writes the entries, syncs, and reports each write it
    /// took, in order, with [`Replica::on_persisted`]`(to_op)`.
    pub fn take_persist(&mut self) -> Option<Persist> {
        let from = self.persist_from.take()?;
        let persist = Persist { from_op: from.max(self.checkpoint_op + 1), to_op: self.op };
        self.persists_outstanding.push_back((from, self.op));
        Some(persist)
    }

    /// Durable mode: the oldest write handed out by `take_persist` and not
    /// yet reported, whose `to_op` is `op`, is on disk (synced). The op
    /// persisted becomes the highest op whose entry on disk is the one our
    /// log holds now: at most `op`, and below any later change still to be
    /// written. When it grows, a follower acks it (PrepareOK is
    /// cumulative: one ack for everything the sync made durable) and the
    /// leader counts its own vote up to it. Several writes synced together
    /// are reported one call each, oldest first.
    pub fn on_persisted(&mut self, op: u64, out: &mut Vec<Action>) {
        assert!(self.started);
        assert!(self.config.durable, "on_persisted in memory mode");
        let start = out.len();
        let (_, to_op) = self.persists_outstanding.pop_front().expect("on_persisted without take_persist");
        assert_eq!(to_op, op, "on_persisted out of order");
        let replaced_later = self.persists_outstanding.iter().map(|(from, _)| from - 1).min();
        let not_taken = self.persist_from.map(|from| from - 1);
        let durable = [Some(to_op), replaced_later, not_taken, Some(self.op)].into_iter().flatten().min();
        if let Some(durable) = durable.filter(|d| *d > self.persisted_op) {
            self.persisted_op = durable;
            if self.is_leader() {
                self.commit_quorum(out);
            } else if self.status == Status::Normal && !self.joining_view {
                let gap = !self.prepare_buffer.is_empty();
                self.send_ack(gap, out);
            }
        }
        self.finish(start, out);
    }

    /// The op a PrepareOK names now: our log head, but never beyond what
    /// is on our disk (memory mode: the log head).
    pub(super) fn ack_op(&mut self) -> u64 {
        #[cfg(feature = "sim-bugs")]
        if self.config.bug == Some(Bug::AckBeforePersist) {
            return self.op;
        }
        let op = self.op.min(self.persisted_op);
        if self.config.durable {
            self.promised_op = self.promised_op.max(op);
        }
        op
    }

    /// The leader's own vote for `quorum_op` (the op f followers acked):
    /// only as far as our disk holds (memory mode: unchanged, every ack is
    /// at most our log head).
    pub(super) fn own_vote(&mut self, quorum_op: u64) -> u64 {
        #[cfg(feature = "sim-bugs")]
        if self.config.bug == Some(Bug::VoteBeforePersist) {
            return quorum_op;
        }
        let op = quorum_op.min(self.persisted_op);
        if self.config.durable && op > self.commit {
            self.promised_op = self.promised_op.max(op);
        }
        op
    }
}
