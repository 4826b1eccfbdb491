//! State transfer (VRR 5.2): a replica behind its view fetches the log
//! page by page (GetState / NewState).

use super::replica::Replica;
use super::{Action, Status};
use crate::wire::{self, GetState, LogEntry, Message, NewState, NewStateKind, StateBlob};

#[cfg(feature = "sim-bugs")]
use super::Bug;

/// Most log bytes one NewState carries: a page of four chunks. Each page
/// arrives whole or is asked for again, so a lagging follower's progress
/// survives loss: at 10% loss a page of 4 chunks arrives 66% of the time,
/// while a whole log suffix of hundreds of chunks practically never did
/// (followers that fell behind stayed behind). The asker takes the next
/// page at once (on_new_state), one round trip a page.
const NEW_STATE_PAGE_BYTES: usize = 4 * wire::CHUNK_LEN;

impl Replica {
    /// Moves to `view` (normal status, catching up) and asks for the state
    /// after our commit; the NewState replaces every op above commit, since
    /// uncommitted ops of an older view may be wrong.
    pub(super) fn start_state_transfer(&mut self, view: u64, target: Option<u64>, out: &mut Vec<Action>) {
        assert!(view >= self.view);
        self.transition = ("joined a view that formed without us: catching up", Some(self.leader_of(view)));
        // VRR truncates to commit here. We keep the old suffix (and the old
        // last_normal_view) until NewState replaces everything above commit:
        // dropping ops we acked while still claiming the old view would let
        // a later view change lose them (sim seed 3473).
        let caught_up_normal = self.status == Status::Normal && !self.joining_view;
        let last_normal_view = if caught_up_normal { self.view } else { self.last_normal_view };
        self.set_view(view);
        self.set_status(Status::Normal);
        // Our log may lack ops committed before `view`: keep the older
        // last_normal_view until NewState catches us up.
        self.last_normal_view = last_normal_view;
        self.joining_view = true;
        // Committed ops are the same in every view.
        self.catch_up_verified = self.commit;
        self.catch_up_target = target;
        self.state_transfer_attempts = 0;
        self.send_get_state(out);
    }

    /// A follower that heard of commits beyond its log (the leader will not
    /// retransmit committed ops) asks for state, at most once per resend
    /// interval.
    pub(super) fn want_state_if_behind(&mut self, out: &mut Vec<Action>) {
        if self.commit_seen > self.op && !self.state_transfer_timeout.ticking() {
            self.state_transfer_attempts = 0;
            let small_gap = !self.joining_view
                && !self.prepare_buffer.is_empty()
                && self.commit_seen - self.op <= self.config.pipeline_max as u64;
            if small_gap {
                // We hold Prepares past a gap and asked the leader for the
                // missing one (gap ack): its re-send is one datagram, while
                // a NewState of the same ops is several chunks that must all
                // arrive (at 10% loss most attempts failed and waited out a
                // resend interval). State transfer only if the gap is still
                // open after resend_interval_ticks.
                self.state_transfer_timeout.start();
            } else {
                self.send_get_state(out);
            }
        }
    }

    /// Ticks before an unanswered GetState is sent again. A page is one
    /// short NewState: twice its smoothed round trip plus two ticks (a few
    /// ms), so a lost page costs little; at 10% loss a page is lost a third
    /// of the time, and waiting resend_interval_ticks for each let a lagging
    /// follower fall further behind than pages could bring it (measured:
    /// 2,800 ops/s of catch-up against 4,000 ops/s of new ops). Other
    /// answers (a snapshot offer) may take longer to prepare.
    pub(super) fn state_transfer_timeout_ticks(&self) -> u64 {
        if self.paging {
            (2 * self.page_ticks_x8 / 8 + 2).min(self.config.resend_interval_ticks)
        } else {
            self.config.resend_interval_ticks
        }
    }

    /// Whether the outstanding GetState asks for a page: its timeout follows.
    pub(super) fn set_paging(&mut self, paging: bool) {
        self.paging = paging;
        self.state_transfer_timeout.after = self.state_transfer_timeout_ticks();
    }

    /// No state transfer is wanted any more.
    pub(super) fn stop_state_transfer(&mut self) {
        self.state_transfer_timeout.stop();
        self.set_paging(false);
    }

    /// The GetState went unanswered (or its answer was lost): ask again,
    /// the next replica in turn.
    pub(super) fn on_state_transfer_timeout(&mut self, out: &mut Vec<Action>) {
        self.send_get_state(out);
    }

    pub(super) fn send_get_state_to(&mut self, to: u8, out: &mut Vec<Action>) {
        self.stats.state_transfers += 1;
        self.state_transfer_timeout.start();
        // Catching up, our suffix above the pages installed may be from an
        // older view: ask for what follows them.
        let op = if self.joining_view { self.catch_up_verified } else { self.op };
        let message = Message::GetState(GetState { view: self.view, op, replica: self.config.index });
        out.push(Action::Send { to, message });
    }

    pub(super) fn send_get_state(&mut self, out: &mut Vec<Action>) {
        // A replica that missed a few ops asks the leader first, which
        // surely has them; one catching up (likely to need a snapshot, whose
        // encoding takes a while) asks a follower first, so the leader's
        // heartbeats never wait for it. Retries rotate through the others.
        let n = u64::from(self.config.replica_count);
        let first = if self.joining_view { self.view + 1 } else { self.view };
        let mut to = ((first + self.state_transfer_attempts) % n) as u8;
        if to == self.config.index {
            to = ((u64::from(to) + 1) % n) as u8;
        }
        self.state_transfer_attempts += 1;
        self.send_get_state_to(to, out);
    }

    pub(super) fn on_get_state(&mut self, from: u8, m: GetState, out: &mut Vec<Action>) {
        if self.status == Status::ViewChange && m.view == self.view && from == self.leader_of(m.view) {
            self.answer_repair(from, m, out);
            return;
        }
        if self.status != Status::Normal || m.view != self.view || m.replica != from || m.op > self.op {
            return;
        }
        if self.joining_view {
            return; // Our log may lack what the asker needs.
        }
        if m.op < self.checkpoint_op {
            self.offer_snapshot(from, out);
            return;
        }
        let state = self.state_after(m.op);
        let op = m.op + state.entries.len() as u64;
        let message = NewState {
            view: self.view,
            op,
            commit: self.commit.min(op),
            head: self.op,
            kind: NewStateKind::Page,
            state,
        };
        out.push(Action::Send { to: from, message: Message::NewState(message) });
    }

    /// The log entries after op `after`, at most NEW_STATE_PAGE_BYTES of
    /// them (at least one): a page of our log.
    fn state_after(&self, after: u64) -> StateBlob {
        assert!(after >= self.checkpoint_op && after <= self.op);
        let skip = (after - self.checkpoint_op) as usize;
        let mut bytes = 0;
        let entries = self
            .log
            .iter()
            .skip(skip)
            .take_while(|entry| {
                let first = bytes == 0;
                bytes += wire::LOG_ENTRY_HDR_LEN + entry.batch_len();
                first || bytes <= NEW_STATE_PAGE_BYTES
            })
            .cloned()
            .collect();
        StateBlob { checkpoint_op: after, snapshot: Vec::new(), entries }
    }

    /// The new leader of our view-change view lacks committed ops: send
    /// what we committed after its commit, never our uncommitted suffix
    /// (the view change has yet to choose the log).
    fn answer_repair(&mut self, to: u8, m: GetState, out: &mut Vec<Action>) {
        if m.replica != to || m.op >= self.commit {
            return;
        }
        if m.op < self.checkpoint_op {
            self.offer_snapshot(to, out);
            return;
        }
        let entries = self.log.iter().skip((m.op - self.checkpoint_op) as usize);
        let entries = entries.take((self.commit - m.op) as usize).cloned().collect();
        let state = StateBlob { checkpoint_op: m.op, snapshot: Vec::new(), entries };
        let message = NewState {
            view: self.view,
            op: self.commit,
            commit: self.commit,
            head: self.op,
            kind: NewStateKind::Repair,
            state,
        };
        out.push(Action::Send { to, message: Message::NewState(message) });
    }

    pub(super) fn on_new_state(&mut self, from: u8, m: NewState, out: &mut Vec<Action>) {
        if self.status == Status::ViewChange && m.view == self.view && self.repair_pending {
            // View change repair: committed ops we lacked as new leader.
            if self.snapshot_offer(&m) {
                self.start_snapshot_pull(from, m.op, out);
            } else if m.kind == NewStateKind::Repair
                && m.commit == m.op
                && m.op > self.commit
                && self.install(&m.state, m.op, m.commit)
            {
                self.repair_pending = false;
                self.try_start_view(out);
            }
            return;
        }
        if self.status != Status::Normal || m.view != self.view || self.is_leader() {
            return;
        }
        if !self.state_transfer_timeout.ticking() || m.kind == NewStateKind::Repair || m.head < m.op {
            return; // Not asked for, not for us, or malformed.
        }
        if m.kind == NewStateKind::SnapshotOffer {
            if self.snapshot_offer(&m) {
                self.start_snapshot_pull(from, m.op, out);
            }
            return;
        }
        let page_ticks = self.state_transfer_timeout.ticks();
        if self.joining_view {
            self.on_catch_up_page(from, m, page_ticks, out);
            return;
        }
        if m.op <= self.op {
            return; // Nothing new.
        }
        // Prepares held past a gap are of this view's log too: those past
        // the page continue it (install would drop them).
        let held = std::mem::take(&mut self.prepare_buffer);
        if !self.install(&m.state, m.op, m.commit) {
            self.prepare_buffer = held;
            return;
        }
        self.prepare_buffer = held;
        self.prepare_buffer.retain(|op, _| *op > self.op);
        self.page_ticks_x8 = self.page_ticks_x8 - self.page_ticks_x8 / 8 + page_ticks;
        self.stop_state_transfer();
        self.commit_seen = self.commit_seen.max(m.commit);
        self.append_held();
        self.after_page(from, out);
    }

    /// A page of this view's log while catching up. We become a member of
    /// the view only once our log reaches the catch-up target: a replica
    /// that claimed the view after its first page (op k) would win a later
    /// view change with (view, k) over a log holding the StartView's ops
    /// above k, and those ops, acknowledged, would be lost.
    fn on_catch_up_page(&mut self, from: u8, m: NewState, page_ticks: u64, out: &mut Vec<Action>) {
        let verified = self.catch_up_verified;
        if m.op < verified || m.state.checkpoint_op > verified {
            return; // An answer to an older ask, or not following what we hold.
        }
        if !self.install_page(&m.state, m.op, m.commit) {
            return;
        }
        self.page_ticks_x8 = self.page_ticks_x8 - self.page_ticks_x8 / 8 + page_ticks;
        self.set_paging(false);
        self.catch_up_verified = m.op;
        self.commit_seen = self.commit_seen.max(m.commit);
        // The answerer is a caught-up member (it does not answer while
        // catching up): its log held the StartView prefix when it answered.
        #[allow(unused_mut)]
        let mut target = *self.catch_up_target.get_or_insert(m.head);
        #[cfg(feature = "sim-bugs")]
        if self.config.bug == Some(Bug::CatchUpEndsAfterOnePage) {
            target = m.op;
        }
        if m.op < target {
            // The next page from the answerer while it has more, else from
            // the leader, whose log holds every op of the view. (The leader
            // itself with nothing more: its log cannot be shorter than a
            // target of this view unless a datagram lied; the state
            // transfer timer asks again, no ping-pong of empty pages.)
            let leader = self.leader_of(self.view);
            if m.op < m.head || from != leader {
                let to = if m.op < m.head { from } else { leader };
                self.send_get_state_to(to, out);
                self.set_paging(true);
            }
            return;
        }
        // Our log is this view's log up to the target: drop the older
        // suffix above it, and claim the view.
        self.truncate_log(m.op);
        self.joining_view = false;
        self.catch_up_target = None;
        self.recovered_without_state = false;
        self.last_normal_view = self.view;
        self.stop_state_transfer();
        self.transition = ("caught up: a member of the view", Some(from));
        self.after_page(from, out);
    }

    /// After a page as a member of the view: execute, ack, and ask for the
    /// next page at once while commits are beyond our log.
    fn after_page(&mut self, from: u8, out: &mut Vec<Action>) {
        self.execute_through(self.commit_seen, false, out);
        let gap = !self.prepare_buffer.is_empty();
        self.send_ack(gap, out);
        if self.commit_seen > self.op {
            // One page of several (NEW_STATE_PAGE_BYTES): the next one at
            // once, from the same answerer, which has it.
            self.send_get_state_to(from, out);
            self.set_paging(true);
        }
    }

    /// Installs a page of this view's log while catching up, keeping our
    /// older suffix above the page: until the log reaches the target we
    /// claim our old last_normal_view in view changes, and that claim must
    /// still hold every op it held (committed ops are the same in both
    /// logs; an op the page replaces was either committed, and so the
    /// same, or not committed in our old view).
    fn install_page(&mut self, state: &StateBlob, op: u64, commit: u64) -> bool {
        let above: Vec<LogEntry> = if self.op > op {
            self.log.iter().skip((op - self.checkpoint_op) as usize).cloned().collect()
        } else {
            Vec::new()
        };
        if !self.install(state, op, commit) {
            return false;
        }
        for entry in above {
            self.push_entry(entry);
        }
        true
    }
}
