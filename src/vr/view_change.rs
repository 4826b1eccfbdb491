//! View change (VRR 4.2).

use super::progress::Progress;
use super::replica::Replica;
use super::{Action, Status};
use crate::wire::{DoViewChange, GetState, Message, StartView, StartViewChange, StateBlob};

#[cfg(feature = "sim-bugs")]
use super::Bug;

impl Replica {
    /// A fresh leader-silence timeout: the configured one plus up to a
    /// quarter of it at random.
    pub(super) fn draw_leader_timeout(&mut self) {
        let base = self.config.view_change_timeout_ticks;
        self.leader_timeout.after = base + self.random_below(base / 4 + 1);
    }

    /// The next view-change attempt's timeout: doubles with each attempt in
    /// a row (up to 8x) plus up to half the base at random, so that two
    /// replicas escalating in lockstep drift apart and one attempt finishes.
    fn next_view_change_timeout(&mut self) {
        let base = self.config.view_change_timeout_ticks;
        let attempts = self.view_change_attempts.min(3);
        self.view_change_attempts = self.view_change_attempts.saturating_add(1);
        self.view_change_timeout.after = (base << attempts) + self.random_below(base / 2 + 1);
    }

    /// Follower: nothing from the leader for a whole leader timeout.
    pub(super) fn on_leader_timeout(&mut self, out: &mut Vec<Action>) {
        // Without our state we cannot help a view change: we only follow
        // the views the others start (see send_do_view_change).
        if self.recovered_without_state {
            return;
        }
        let leader = Some(self.leader_of(self.view));
        self.start_view_change(self.view + 1, "timeout: nothing from the leader", leader, out);
    }

    /// The new view did not form (its leader may be down).
    pub(super) fn on_view_change_timeout(&mut self, out: &mut Vec<Action>) {
        if !self.recovered_without_state {
            let leader = Some(self.leader_of(self.view));
            self.start_view_change(self.view + 1, "timeout: the view change did not complete", leader, out);
            return;
        }
        // Without our state, so we may not start a higher view; but we
        // followed one whose starter may have crashed and recovered into
        // an older view, leaving us alone in it (the others never heard of
        // it). Announce the view change we are in: the others join it (and
        // escalate past it if it cannot form), or, already past it, lead us
        // into theirs. Without this we waited forever.
        self.view_change_timeout.reset();
        let message =
            Message::StartViewChange(StartViewChange { view: self.view, replica: self.config.index });
        out.push(Action::SendAll { message });
    }

    /// Re-sends what the view change needs from us: its messages, or the
    /// new leader's repair, may be lost.
    pub(super) fn on_view_change_resend_timeout(&mut self, out: &mut Vec<Action>) {
        self.view_change_resend_timeout.reset();
        self.send_start_view_change(out);
        if self.do_view_change_sent {
            self.send_do_view_change(out);
        }
        if self.repair_pending {
            // The repair's GetState or NewState may be lost.
            self.repair_pending = false;
            self.try_start_view(out);
        }
    }

    pub(super) fn start_view_change(
        &mut self,
        view: u64,
        why: &'static str,
        from: Option<u8>,
        out: &mut Vec<Action>,
    ) {
        assert!(view > self.view);
        self.transition = (why, from);
        if self.status == Status::Normal && !self.joining_view {
            self.last_normal_view = self.view;
        }
        self.set_view(view);
        self.set_status(Status::ViewChange);
        self.next_view_change_timeout();
        self.stats.view_changes_started += 1;
        self.start_view_change_from[self.config.index as usize] = !self.recovered_without_state;
        self.send_start_view_change(out);
        self.check_start_view_change_quorum(out);
    }

    pub(super) fn send_start_view_change(&mut self, out: &mut Vec<Action>) {
        if self.recovered_without_state {
            return; // See send_do_view_change.
        }
        let message =
            Message::StartViewChange(StartViewChange { view: self.view, replica: self.config.index });
        out.push(Action::SendAll { message });
    }

    pub(super) fn on_start_view_change(&mut self, from: u8, m: StartViewChange, out: &mut Vec<Action>) {
        if self.status == Status::Recovering || m.view < self.view || m.replica != from {
            return;
        }
        if m.view > self.view {
            self.start_view_change(m.view, "StartViewChange of a higher view", Some(from), out);
        }
        if self.status != Status::ViewChange {
            return; // The view already formed.
        }
        self.start_view_change_from[from as usize] = true;
        self.check_start_view_change_quorum(out);
    }

    /// f others agree to change view: send our log to the new leader.
    fn check_start_view_change_quorum(&mut self, out: &mut Vec<Action>) {
        let votes = self.start_view_change_from.iter().filter(|v| **v).count();
        if !self.do_view_change_sent && votes > self.f() {
            self.do_view_change_sent = true;
            self.send_do_view_change(out);
        }
    }

    pub(super) fn send_do_view_change(&mut self, out: &mut Vec<Action>) {
        if self.recovered_without_state {
            // Without our memory we must not count in a view change: a
            // committed op we held before the crash may be missing from the
            // others' logs (VR's recovering replicas take no part either).
            return;
        }
        let m = DoViewChange {
            view: self.view,
            last_normal_view: self.last_normal_view,
            op: self.op,
            commit: self.commit,
            replica: self.config.index,
            state: self.state_suffix(),
        };
        let leader = self.leader_of(self.view);
        if leader == self.config.index {
            self.record_do_view_change(m, out);
        } else {
            out.push(Action::Send { to: leader, message: Message::DoViewChange(m) });
        }
    }

    /// A DoViewChange or StartView blob: a well-formed log suffix without
    /// snapshot, starting at or below the sender's commit.
    fn suffix_valid(&self, state: &StateBlob, op: u64, commit: u64) -> bool {
        state.snapshot.is_empty() && state.checkpoint_op <= commit && self.state_valid(state, op, commit)
    }

    pub(super) fn on_do_view_change(&mut self, from: u8, m: DoViewChange, out: &mut Vec<Action>) {
        if self.status == Status::Recovering || m.view < self.view || m.replica != from {
            return;
        }
        if m.last_normal_view >= m.view || !self.suffix_valid(&m.state, m.op, m.commit) {
            return;
        }
        if m.view > self.view {
            self.start_view_change(m.view, "DoViewChange of a higher view", Some(from), out);
        }
        if self.status != Status::ViewChange || self.leader_of(self.view) != self.config.index {
            return;
        }
        self.record_do_view_change(m, out);
    }

    fn record_do_view_change(&mut self, m: DoViewChange, out: &mut Vec<Action>) {
        assert_eq!(m.view, self.view);
        assert!(self.status == Status::ViewChange);
        let replica = m.replica as usize;
        self.do_view_change_from[replica] = Some(m);
        self.try_start_view(out);
    }

    /// New leader: starts the view once f+1 DoViewChanges (ours among
    /// them) arrived and it holds the chosen log.
    pub(super) fn try_start_view(&mut self, out: &mut Vec<Action>) {
        let count = self.do_view_change_from.iter().filter(|d| d.is_some()).count();
        if count > self.f() && self.do_view_change_from[self.config.index as usize].is_some() {
            self.start_view_as_leader(out);
        }
    }

    /// New leader with f+1 DoViewChanges: the log with the largest
    /// (last_normal_view, op) wins, commit is the largest commit.
    ///
    /// Why suffixes are enough: every committed op is in the chosen log
    /// (VR's argument, unchanged). The new log is our committed prefix, then
    /// the chosen log from our commit on. Ops above the chosen sender's
    /// blob start come from its blob. Ops at or below it are at most its
    /// commit, so committed, and any DoViewChange whose blob holds them at
    /// or below its sender's commit has the one committed entry. If none
    /// does (our commit lags more than the window), we fetch the committed
    /// entries first (repair) and try again; no snapshot ever travels here.
    fn start_view_as_leader(&mut self, out: &mut Vec<Action>) {
        let received: Vec<&DoViewChange> = self.do_view_change_from.iter().flatten().collect();
        #[allow(unused_mut)]
        let mut best = received.iter().max_by_key(|d| (d.last_normal_view, d.op, d.replica)).copied();
        #[cfg(feature = "sim-bugs")]
        if self.config.bug == Some(Bug::ViewChangeWrongLog) {
            best = received.iter().min_by_key(|d| (d.op, d.replica)).copied();
        }
        let Some(best) = best else { return };
        let commit = received.iter().map(|d| d.commit).max().unwrap_or(0);
        if commit > best.op {
            // A replica committed ops beyond the chosen log's head: the log
            // lacks committed ops (the catch-up invariant in `super` is
            // broken). Clamping the commit would drop them for good; no
            // view with this log (the change times out and escalates).
            self.stats.view_change_refusals += 1;
            return;
        }
        let mut entries = Vec::new();
        let mut missing = false;
        for op in self.commit + 1..=best.op {
            let from_blob = |d: &DoViewChange, committed_only: bool| {
                let blob = &d.state;
                (op > blob.checkpoint_op && op <= d.op && (!committed_only || op <= d.commit))
                    .then(|| blob.entries[(op - blob.checkpoint_op - 1) as usize].clone())
            };
            let entry = from_blob(best, false).or_else(|| received.iter().find_map(|d| from_blob(d, true)));
            match entry {
                Some(entry) => entries.push(entry),
                None => {
                    missing = true;
                    break;
                }
            }
        }
        if missing {
            // Our commit lags the window: fetch the committed ops we lack
            // from the replica with the highest commit, then try again.
            let Some(source) =
                received.iter().filter(|d| d.replica != self.config.index).max_by_key(|d| d.commit)
            else {
                return;
            };
            let source = source.replica;
            if !self.repair_pending {
                self.repair_pending = true;
                self.stats.view_change_repairs += 1;
                let message = Message::GetState(GetState {
                    view: self.view,
                    op: self.commit,
                    replica: self.config.index,
                });
                out.push(Action::Send { to: source, message });
            }
            return;
        }
        let (best_op, best_replica) = (best.op, best.replica);
        if best_replica != self.config.index || commit > self.commit {
            let blob = StateBlob { checkpoint_op: self.commit, snapshot: Vec::new(), entries };
            if !self.install(&blob, best_op, commit) {
                // Cannot adopt without losing committed ops (impossible in a
                // correct cluster): let the view change escalate.
                return;
            }
        }
        self.repair_pending = false;
        self.transition = ("f+1 DoViewChanges: new leader", None);
        // We hold the chosen log: every committed op.
        self.recovered_without_state = false;
        self.set_status(Status::Normal);
        self.last_normal_view = self.view;
        self.stats.views_started += 1;
        self.progress.iter_mut().for_each(Progress::reset);
        // Requests prepared but not committed are in progress.
        let uncommitted = (self.commit - self.checkpoint_op) as usize;
        for entry in self.log.iter().skip(uncommitted) {
            for request in &entry.batch {
                let n = self.pending.entry(request.client_id).or_insert(0);
                *n = (*n).max(request.request_number);
            }
        }
        let message =
            StartView { view: self.view, op: self.op, commit: self.commit, state: self.state_suffix() };
        out.push(Action::SendAll { message: Message::StartView(message) });
        self.commit_quorum(out);
    }

    pub(super) fn on_start_view(&mut self, from: u8, m: StartView, out: &mut Vec<Action>) {
        if self.status == Status::Recovering || m.view < self.view || from != self.leader_of(m.view) {
            return;
        }
        if m.view == self.view && self.status == Status::Normal {
            return; // Already in it.
        }
        if m.view == self.view && self.is_leader() {
            return;
        }
        if !self.suffix_valid(&m.state, m.op, m.commit) {
            return;
        }
        if self.commit < m.state.checkpoint_op || self.recovered_without_state {
            // Our log lacks committed ops below the blob (or we lost our
            // memory): join the view and catch up by state transfer.
            self.commit_seen = self.commit_seen.max(m.commit);
            self.start_state_transfer(m.view, Some(m.op), out);
            return;
        }
        // A replica in normal status of an older view: its uncommitted ops
        // may be wrong, the StartView's log replaces them (install keeps
        // only committed entries).
        if !self.install(&m.state, m.op, m.commit) {
            return;
        }
        self.set_view(m.view);
        self.set_status(Status::Normal);
        self.transition = ("StartView from the new leader", Some(from));
        self.last_normal_view = self.view;
        if self.op > self.commit {
            // Uncommitted ops need our ack in the new view.
            self.send_prepare_ok(out);
        }
    }
}
