//! The log: entries checkpoint_op+1 ..= op, appended, truncated above
//! commit, trimmed at checkpoints, and what travels of it in a view change
//! (`state_suffix`); `install` makes another replica's log ours.

use super::client_table::decode_checkpoint;
use super::replica::{batch_digest, Replica};
use crate::app::App;
use crate::wire::{self, LogEntry, StateBlob};

impl Replica {
    /// Most uncommitted ops a log may hold: the leader prepares only while
    /// fewer than pipeline_max are uncommitted, and each Prepare carries a
    /// commit at most pipeline_max behind it; twice that leaves room for
    /// commits a follower has not heard yet.
    pub(super) fn uncommitted_max(&self) -> u64 {
        2 * self.config.pipeline_max as u64
    }

    /// Most entries the log holds (checkpoints trim it).
    pub(super) fn log_entries_max(&self) -> u64 {
        self.config.checkpoint_interval_ops
            + self.view_change_window()
            + self.snapshot_pin_max()
            + self.uncommitted_max()
            + self.config.pipeline_max as u64
    }

    /// Most committed ops the log keeps above a snapshot being pulled (at
    /// the default interval 262,144 ops: a GiB snapshot pulled under full
    /// load); a puller slower than that gets the rest as a newer snapshot.
    fn snapshot_pin_max(&self) -> u64 {
        256 * self.config.checkpoint_interval_ops
    }

    /// Committed entries a DoViewChange or StartView carries below commit.
    fn view_change_window(&self) -> u64 {
        self.uncommitted_max()
    }

    pub(super) fn entry(&self, op: u64) -> Option<&LogEntry> {
        if op <= self.checkpoint_op || op > self.op {
            return None;
        }
        self.log.get((op - self.checkpoint_op - 1) as usize)
    }

    /// Appends op+1, from a Prepare or as the leader.
    pub(super) fn append(&mut self, entry: LogEntry) {
        assert!(self.kernel_armed.is_none(), "core appended while the kernel acks");
        self.push_entry(entry);
    }

    pub(super) fn push_entry(&mut self, entry: LogEntry) {
        assert_eq!(entry.op, self.op + 1);
        assert!(entry.op > self.commit);
        assert!(!entry.batch.is_empty());
        let op = entry.op;
        self.log.push_back(entry);
        self.op += 1;
        self.log_changed(op);
    }

    /// Drops uncommitted entries above `op`.
    pub(super) fn truncate_log(&mut self, op: u64) {
        assert!(self.kernel_armed.is_none());
        assert!(op >= self.commit, "truncating committed entries");
        if op < self.op {
            self.log.truncate((op - self.checkpoint_op) as usize);
            self.op = op;
            self.prepare_buffer.clear();
            self.log_changed(op + 1);
        }
    }

    /// Drops the committed entries from the log but the last
    /// view_change_window() of them (a replica further behind gets a
    /// snapshot instead). Those few stay so that a replica whose commit lags
    /// ours by a little (a new leader repairing its log during a view
    /// change, a follower that missed a commit) gets them from the log: with
    /// the log trimmed right up to commit, a view change that began just
    /// after a checkpoint (64 MiB of state, commit 114,688 = 112 x 1024)
    /// made the new leader, one commit behind, pull the whole snapshot
    /// within the view-change timeout, and that view failed.
    pub(super) fn trim_log(&mut self) {
        assert!(self.commit > self.checkpoint_op);
        let keep_from = self.commit.saturating_sub(self.view_change_window());
        // The log stays above a snapshot being pulled, up to the pin bound;
        // beyond it the log is trimmed but the snapshot is still served
        // (the puller will need a newer one for what follows it).
        let upto = match &self.snapshot_out {
            Some(s) if self.commit - s.op < self.snapshot_pin_max() => s.op.min(keep_from),
            _ => keep_from,
        };
        if upto > self.checkpoint_op {
            self.log.drain(..(upto - self.checkpoint_op) as usize);
            self.checkpoint_op = upto;
        }
        self.stats.checkpoints += 1;
    }

    /// What a view change carries: no snapshot, only the log from a little
    /// below commit (at most view_change_window() committed entries, so
    /// that a new leader whose commit lags ours still finds the committed
    /// ops it lacks) to the head. Its size is bounded by the pipeline,
    /// whatever the size of the state.
    pub(super) fn state_suffix(&self) -> StateBlob {
        let from = self.checkpoint_op.max(self.commit.saturating_sub(self.view_change_window()));
        StateBlob {
            checkpoint_op: from,
            snapshot: Vec::new(),
            entries: self.log.iter().skip((from - self.checkpoint_op) as usize).cloned().collect(),
        }
    }

    /// Whether a blob from the network is well formed for log head `op`.
    pub(super) fn state_valid(&self, state: &StateBlob, op: u64, commit: u64) -> bool {
        if commit > op || op < state.checkpoint_op {
            return false;
        }
        if op - state.checkpoint_op != state.entries.len() as u64 {
            return false;
        }
        if !state.snapshot.is_empty() && state.checkpoint_op > commit {
            // A snapshot is always of committed state.
            return false;
        }
        state.entries.iter().enumerate().all(|(i, e)| {
            e.op == state.checkpoint_op + 1 + i as u64
                && !e.batch.is_empty()
                && e.batch.len() <= wire::MAX_BATCH_LEN
                && e.batch_len() <= wire::MAX_PREPARE_BATCH_LEN
                && e.batch.iter().all(|r| r.op.len() <= wire::MAX_OP_LEN)
        })
    }

    /// Makes our log (op, state) with commit at least `commit`, keeping
    /// every committed entry. Returns false, changing nothing, if that is
    /// impossible: malformed state, a log that would drop or contradict our
    /// committed ops, or a snapshot that does not restore.
    pub(super) fn install(&mut self, state: &StateBlob, op: u64, commit: u64) -> bool {
        assert!(self.kernel_armed.is_none());
        if !self.state_valid(state, op, commit) || op < self.commit {
            return false;
        }
        let target = commit.max(self.commit);
        if op - target > self.uncommitted_max() {
            return false;
        }
        let restore = !state.snapshot.is_empty() && state.checkpoint_op > self.commit;
        if restore {
            let Ok((app_bytes, table)) = decode_checkpoint(&state.snapshot, self.config.client_table_max)
            else {
                return false;
            };
            if self.app.restore(app_bytes).is_err() {
                return false;
            }
            self.client_table = table;
            // Our entries above our commit may differ from the new ones.
            let replaced_from = self.commit + 1;
            self.checkpoint_op = state.checkpoint_op;
            self.commit = state.checkpoint_op;
            self.log = state.entries.iter().cloned().collect();
            self.op = op;
            self.recent_commits.clear();
            self.log_changed(replaced_from);
        } else {
            // Our log must reach where the blob's entries start.
            if state.checkpoint_op > self.op {
                return false;
            }
            let keep =
                if state.snapshot.is_empty() { state.checkpoint_op.max(self.commit) } else { self.commit };
            // Committed entries we hold must agree with the blob's.
            let from = state.checkpoint_op.max(self.checkpoint_op) + 1;
            for o in from..=self.commit.min(op) {
                let ours = self.entry(o).map(|e| batch_digest(&e.batch));
                let theirs = batch_digest(&state.entries[(o - state.checkpoint_op - 1) as usize].batch);
                if ours != Some(theirs) {
                    return false;
                }
            }
            if keep > op {
                return false;
            }
            self.truncate_log(keep);
            let skip = (keep - state.checkpoint_op) as usize;
            for entry in state.entries.iter().skip(skip) {
                self.push_entry(entry.clone());
            }
        }
        self.prepare_buffer.clear();
        self.commit_seen = self.commit_seen.max(target);
        self.execute_through(target, false, &mut Vec::new());
        true
    }
}
