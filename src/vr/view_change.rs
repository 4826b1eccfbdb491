//! View change (VRR 4.2).

use super::progress::Progress;
use super::replica::Replica;
use super::{Action, Config, Status};
use crate::wire::{DoViewChange, GetState, LogEntry, Message, StartView, StartViewChange, StateBlob};

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

    /// New leader with f+1 DoViewChanges: adopts the log `choose_log`
    /// picks (or first fetches the committed ops it lacks), then leads.
    fn start_view_as_leader(&mut self, out: &mut Vec<Action>) {
        let chosen = match choose_log(&self.do_view_change_from, self.commit, &self.config) {
            LogChoice::Log(chosen) => chosen,
            LogChoice::Refused => {
                // A replica committed ops beyond the chosen log's head: the
                // log lacks committed ops (the catch-up invariant in `super`
                // is broken). Clamping the commit would drop them for good;
                // no view with this log (the change times out and escalates).
                self.stats.view_change_refusals += 1;
                return;
            }
            LogChoice::Repair { source } => {
                self.request_repair(source, out);
                return;
            }
            LogChoice::Nothing => return,
        };
        if chosen.from != self.config.index || chosen.commit > self.commit {
            let blob =
                StateBlob { checkpoint_op: self.commit, snapshot: Vec::new(), entries: chosen.entries };
            if !self.install(&blob, chosen.op, chosen.commit) {
                // Cannot adopt without losing committed ops (impossible in a
                // correct cluster): let the view change escalate.
                return;
            }
        }
        self.lead_view(out);
    }

    /// Our commit lags the window: fetch the committed ops we lack from
    /// `source` (the replica with the highest commit), then try again.
    fn request_repair(&mut self, source: u8, out: &mut Vec<Action>) {
        if self.repair_pending {
            return;
        }
        self.repair_pending = true;
        self.stats.view_change_repairs += 1;
        let message =
            Message::GetState(GetState { view: self.view, op: self.commit, replica: self.config.index });
        out.push(Action::Send { to: source, message });
    }

    /// We hold the chosen log, so every committed op: normal status as the
    /// leader, requests of the uncommitted ops in progress, StartView.
    fn lead_view(&mut self, out: &mut Vec<Action>) {
        self.repair_pending = false;
        self.transition = ("f+1 DoViewChanges: new leader", None);
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

/// The log a view starts with (see `choose_log`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ChosenLog {
    /// The DoViewChange whose log won.
    pub(super) from: u8,
    /// Its head: the new log's op.
    pub(super) op: u64,
    /// The largest commit among the DoViewChanges.
    pub(super) commit: u64,
    /// Ops from the new leader's commit + 1 to `op`.
    pub(super) entries: Vec<LogEntry>,
}

/// What the DoViewChanges of a view decide.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LogChoice {
    Log(ChosenLog),
    /// A DoViewChange's commit exceeds the chosen log's head.
    Refused,
    /// The new leader's commit lags the window: it needs the committed ops
    /// it lacks from `source` first.
    Repair {
        source: u8,
    },
    /// No DoViewChange, or none from another replica to repair from.
    Nothing,
}

/// The log a new leader (`config.index`, whose commit is `commit`) starts
/// its view with, from the DoViewChanges received (by sender). Pure: it
/// only reads them. The log with the largest (last_normal_view, op) wins,
/// commit is the largest commit.
///
/// Why suffixes are enough: every committed op is in the chosen log
/// (VR's argument, unchanged). The new log is our committed prefix, then
/// the chosen log from our commit on. Ops above the chosen sender's
/// blob start come from its blob. Ops at or below it are at most its
/// commit, so committed, and any DoViewChange whose blob holds them at
/// or below its sender's commit has the one committed entry. If none
/// does (our commit lags more than the window), we fetch the committed
/// entries first (repair) and try again; no snapshot ever travels here.
pub(super) fn choose_log(
    do_view_changes: &[Option<DoViewChange>],
    commit: u64,
    config: &Config,
) -> LogChoice {
    let received: Vec<&DoViewChange> = do_view_changes.iter().flatten().collect();
    #[allow(unused_mut)]
    let mut best = received.iter().max_by_key(|d| (d.last_normal_view, d.op, d.replica)).copied();
    #[cfg(feature = "sim-bugs")]
    if config.bug == Some(Bug::ViewChangeWrongLog) {
        best = received.iter().min_by_key(|d| (d.op, d.replica)).copied();
    }
    let Some(best) = best else { return LogChoice::Nothing };
    let chosen_commit = received.iter().map(|d| d.commit).max().unwrap_or(0);
    if chosen_commit > best.op {
        return LogChoice::Refused;
    }
    let mut entries = Vec::new();
    for op in commit + 1..=best.op {
        let from_blob = |d: &DoViewChange, committed_only: bool| {
            let blob = &d.state;
            (op > blob.checkpoint_op && op <= d.op && (!committed_only || op <= d.commit))
                .then(|| blob.entries[(op - blob.checkpoint_op - 1) as usize].clone())
        };
        let entry = from_blob(best, false).or_else(|| received.iter().find_map(|d| from_blob(d, true)));
        match entry {
            Some(entry) => entries.push(entry),
            None => {
                // Repair from the replica with the highest commit.
                let source = received.iter().filter(|d| d.replica != config.index).max_by_key(|d| d.commit);
                return match source {
                    Some(source) => LogChoice::Repair { source: source.replica },
                    None => LogChoice::Nothing,
                };
            }
        }
    }
    LogChoice::Log(ChosenLog { from: best.replica, op: best.op, commit: chosen_commit, entries })
}

#[cfg(test)]
mod tests {
    use super::{choose_log, LogChoice};
    use crate::vr::Config;
    use crate::wire::{DoViewChange, LogEntry, Request, StateBlob};

    fn entry(op: u64, view: u64) -> LogEntry {
        LogEntry { op, view, batch: vec![Request { client_id: 1, request_number: op, op: vec![view as u8] }] }
    }

    /// A DoViewChange whose blob holds ops from..=op, all written in `view`.
    fn dvc(replica: u8, last_normal_view: u64, from: u64, op: u64, commit: u64) -> Option<DoViewChange> {
        let entries = (from + 1..=op).map(|o| entry(o, last_normal_view)).collect();
        let state = StateBlob { checkpoint_op: from, snapshot: Vec::new(), entries };
        Some(DoViewChange { view: 5, last_normal_view, op, commit, replica, state })
    }

    #[test]
    fn the_largest_last_normal_view_then_op_wins() {
        let config = Config::new(3, 2);
        // Replica 0 has the longer log of an older view; replica 1 the newer view.
        let received = [dvc(0, 3, 0, 9, 4), dvc(1, 4, 0, 7, 5), None];
        let LogChoice::Log(chosen) = choose_log(&received, 4, &config) else { panic!("no log chosen") };
        assert_eq!((chosen.from, chosen.op, chosen.commit), (1, 7, 5));
        assert_eq!(chosen.entries, (5..=7).map(|o| entry(o, 4)).collect::<Vec<_>>());
    }

    #[test]
    fn a_commit_beyond_the_chosen_head_is_refused() {
        let config = Config::new(3, 2);
        let received = [dvc(0, 4, 0, 7, 7), dvc(1, 3, 0, 9, 9), None];
        assert_eq!(choose_log(&received, 0, &config), LogChoice::Refused);
    }

    #[test]
    fn a_leader_behind_every_blob_repairs_from_the_highest_commit() {
        let config = Config::new(3, 2);
        // Both blobs start at op 10; our commit is 3.
        let received = [dvc(0, 4, 10, 20, 15), dvc(1, 4, 10, 18, 17), dvc(2, 2, 0, 3, 3)];
        assert_eq!(choose_log(&received, 3, &config), LogChoice::Repair { source: 1 });
    }
}
