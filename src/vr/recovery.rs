//! Recovery (VRR 4.3) and the boot rule.

use super::replica::Replica;
use super::{Action, Status};
use crate::wire::{self, Message, Recovery, RecoveryResponse, StateBlob};

#[cfg(feature = "sim-bugs")]
use super::Bug;

/// RecoveryResponse status: the sender booted counting the asker's very
/// incarnation in (ELECTRODE_STATUS_BOOTED_WITH_YOU).
pub(super) const BOOTED_WITH_YOU: u8 = wire::consts::STATUS_BOOTED_WITH_YOU as u8;

/// What a peer told a recovering replica about the state it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerState {
    pub replica: u8,
    pub view: u64,
    pub op: u64,
    pub commit: u64,
}

impl Replica {
    /// No answer yet lets us recover or boot: ask again.
    pub(super) fn on_recovery_resend_timeout(&mut self, out: &mut Vec<Action>) {
        self.send_recovery(out);
    }

    pub(super) fn send_recovery(&mut self, out: &mut Vec<Action>) {
        self.recovery_resend_timeout.reset();
        let message = Message::Recovery(Recovery { nonce: self.nonce, replica: self.config.index });
        out.push(Action::SendAll { message });
    }

    pub(super) fn on_recovery(&mut self, from: u8, m: Recovery, out: &mut Vec<Action>) {
        if m.replica != from {
            return;
        }
        let new_incarnation = self.peer_nonces[from as usize] != Some(m.nonce);
        self.peer_nonces[from as usize] = Some(m.nonce);
        // We booted counting this very incarnation of the asker as booting:
        // answer as booting, so that it boots too (it may have heard only
        // our later answers). Whatever happened since (ops prepared, view
        // changes while we waited for it), that incarnation never left
        // recovery, so it never acknowledged anything: it joins view 0 as
        // an empty follower, as if it had booted with us and heard nothing
        // yet, and catches up from the leader. Any other incarnation (a
        // restart) gets the normal answer and recovers.
        let booted_together =
            self.status != Status::Recovering && self.booted_with[from as usize] == Some(m.nonce);
        let (status, state, op, commit) = match self.status {
            _ if booted_together => (BOOTED_WITH_YOU, StateBlob::default(), self.nonce, 0),
            // No state travels here: the recovered replica fetches it by
            // state transfer once it knows the view. Every answer but a
            // booting one says how much we hold, so that a replica without
            // memory never boots an empty cluster beside us.
            Status::Normal => (Status::Normal.wire(), StateBlob::default(), self.op, self.commit),
            // Counts for no recovery (the view is not formed), but tells
            // the asker that we hold state.
            Status::ViewChange => (Status::ViewChange.wire(), StateBlob::default(), self.op, self.commit),
            // A booting answer carries our nonce in `op` (see electrode.h).
            Status::Recovering => (Status::Recovering.wire(), StateBlob::default(), self.nonce, 0),
        };
        if self.status == Status::Recovering && new_incarnation {
            // Once per incarnation of the peer (two replicas waiting to
            // recover would otherwise answer each other's asks forever, and
            // duplicated datagrams would multiply the exchange; our
            // periodic Recovery reaches it anyway).
            // Two replicas booting: ask the peer first, then answer it, so
            // that our Recovery reaches it while it is still recovering
            // (before our answer may let it boot) and it answers ours too.
            // Otherwise a replica up early (say view 0's leader, slower to
            // load its eBPF programs) lets the others boot without it and
            // then cannot recover until a view change.
            let ask = Recovery { nonce: self.nonce, replica: self.config.index };
            out.push(Action::Send { to: from, message: Message::Recovery(ask) });
        }
        let message = RecoveryResponse {
            view: self.view,
            nonce: m.nonce,
            op,
            commit,
            replica: self.config.index,
            status,
            state,
        };
        out.push(Action::Send { to: from, message: Message::RecoveryResponse(message) });
    }

    pub(super) fn on_recovery_response(&mut self, from: u8, m: RecoveryResponse, out: &mut Vec<Action>) {
        if self.status != Status::Recovering || m.nonce != self.nonce || m.replica != from {
            return;
        }
        if m.status == BOOTED_WITH_YOU {
            // Our incarnation was counted in a boot: join it (see electrode.h).
            self.peer_nonces[from as usize] = Some(m.op);
            self.recovering_peers[from as usize] = true;
            self.boot("booted: a peer booted counting this incarnation in (first start)");
            return;
        }
        if !self.record_recovery_response(from, m) {
            return;
        }
        // The boot rule decides first; the recovery rule only if it did not.
        if !self.try_boot(out) {
            self.try_recover(out);
        }
    }

    /// Notes what a peer answered our Recovery: whether it holds state,
    /// and whether it is recovering or normal (a normal answer counts for
    /// recovery). False for a status we do not know.
    fn record_recovery_response(&mut self, from: u8, m: RecoveryResponse) -> bool {
        let replica = from as usize;
        if m.status != Status::Recovering.wire() && (m.view > 0 || m.op > 0) {
            // The peer holds state. Remembered for this incarnation (a later
            // "recovering" answer may be an older one, reordered).
            let known = self.peer_state[replica];
            if known.is_none_or(|k| (k.view, k.op) <= (m.view, m.op)) {
                self.peer_state[replica] =
                    Some(PeerState { replica: from, view: m.view, op: m.op, commit: m.commit });
            }
        }
        if m.status == Status::Recovering.wire() {
            self.recovering_peers[replica] = true;
            self.peer_nonces[replica] = Some(m.op);
            self.recovery_responses[replica] = None;
        } else if m.status == Status::Normal.wire() {
            self.recovering_peers[replica] = false;
            let newer = self.recovery_responses[replica].as_ref().is_none_or(|r| r.view <= m.view);
            if newer {
                self.recovery_responses[replica] = Some(m);
            }
        } else if m.status == Status::ViewChange.wire() {
            self.recovering_peers[replica] = false;
        } else {
            return false;
        }
        true
    }

    /// The most advanced peer that told us it holds state (view > 0 or a
    /// non-empty log), if any: booting an empty cluster beside it would
    /// serve a second history.
    fn state_holder(&self) -> Option<PeerState> {
        self.peer_state.iter().flatten().copied().max_by_key(|p| (p.view, p.op, p.replica))
    }

    /// The boot rule: boots when every other replica answered that it is
    /// without memory and none holds state; with f others without memory
    /// beside a holder, waits (blocked), or with `accept_data_loss` after
    /// boot_wait_ticks joins a view change with an empty log. Returns
    /// whether it decided (booted or blocked); if not, the recovery rule
    /// applies.
    ///
    /// Booting needs every peer's word: a replica without memory cannot
    /// tell a first start from a restart, and a peer that did not answer
    /// (down, or cut off) may hold the cluster's history; booting beside it
    /// would serve a second one. With f others without memory and a peer
    /// holding state, more than f replicas lost their memory and no
    /// protocol can tell which ops were acknowledged: the replica waits
    /// (blocked beats wrong) until the operator decides
    /// (`Config::accept_data_loss`).
    fn try_boot(&mut self, out: &mut Vec<Action>) -> bool {
        let recovering = self.recovering_peers.iter().filter(|r| **r).count();
        #[allow(unused_mut)]
        let mut holder = self.state_holder();
        #[cfg(feature = "sim-bugs")]
        if self.config.bug == Some(Bug::BootBesideStateHolder) {
            holder = None;
        }
        if let Some(holder) = holder.filter(|_| recovering >= self.f()) {
            if self.recovery_blocked.is_none() {
                self.transition = (
                    "recovering: waiting: more than f replicas lost their memory and a peer holds \
                     state; not booting an empty cluster beside it (see --accept-data-loss)",
                    Some(holder.replica),
                );
            }
            self.recovery_blocked = Some(holder);
            if self.config.accept_data_loss && self.boot_wait_timeout.fired() {
                self.accept_data_loss(holder, out);
            }
            return true;
        }
        let others = usize::from(self.config.replica_count) - 1;
        #[allow(unused_mut)]
        let mut boot_quorum = others;
        #[cfg(feature = "sim-bugs")]
        if self.config.bug == Some(Bug::BootBesideStateHolder) {
            // Today's rule before the fix: f others without memory.
            boot_quorum = self.f();
        }
        // The operator accepted the risk: f others without memory and no
        // holder heard of within boot_wait_ticks (a replica is down at the
        // first start) is enough.
        let accepted =
            self.config.accept_data_loss && recovering >= self.f() && self.boot_wait_timeout.fired();
        if holder.is_none() && (recovering >= boot_quorum || accepted) {
            self.boot(
                "booted: no replica holds state (a first start; in-memory data does not survive a restart \
                 of every replica)",
            );
            return true;
        }
        false
    }

    /// The recovery rule (VRR 4.3): recovers from f+1 normal answers
    /// including the one of the leader of the highest view among them.
    fn try_recover(&mut self, out: &mut Vec<Action>) {
        let normal = self.recovery_responses.iter().flatten().count();
        if normal < self.f() + 1 {
            return;
        }
        self.recovery_blocked = None;
        let Some(view) = self.recovery_responses.iter().flatten().map(|r| r.view).max() else { return };
        let leader = self.leader_of(view) as usize;
        let primary = match self.recovery_responses[leader].clone() {
            Some(primary) => primary,
            // View 0's leader answered that it booted together with us and
            // nothing happened since: an empty log in view 0.
            None if view == 0 && self.recovering_peers[leader] => RecoveryResponse {
                view: 0,
                nonce: self.nonce,
                op: 0,
                commit: 0,
                replica: leader as u8,
                status: Status::Normal.wire(),
                state: StateBlob::default(),
            },
            None => return,
        };
        if primary.view != view || primary.commit > primary.op {
            return;
        }
        self.stats.recoveries += 1;
        if primary.op == 0 {
            // Nothing prepared yet: an empty log is the whole state.
            self.set_view(view);
            self.set_status(Status::Normal);
            self.transition = ("recovered: the leader's log is empty", Some(leader as u8));
            self.last_normal_view = view;
            return;
        }
        // Join the view without state (ours is gone) and fetch it: until it
        // is installed we neither ack nor take part in view changes.
        self.recovered_without_state = true;
        self.commit_seen = primary.commit;
        // Only a state reaching the leader's op replaces what we lost: our
        // former self may have acked up to it.
        self.start_state_transfer(view, Some(primary.op), out);
        self.transition = ("recovered: in the view, fetching the state", Some(leader as u8));
    }

    /// The operator accepted losing what only the replicas without memory
    /// held: instead of waiting for state we never get back, we take part
    /// in a view change with an empty log (last normal view 0, op 0), as a
    /// replica that never acknowledged anything. The holders' logs win that
    /// view change (their last normal view or op is higher), so the cluster
    /// continues from the most advanced survivor's history.
    fn accept_data_loss(&mut self, holder: PeerState, out: &mut Vec<Action>) {
        let view = self.peer_state.iter().flatten().map(|p| p.view).max().unwrap_or(0);
        self.recovery_blocked = None;
        self.stats.recoveries += 1;
        self.start_view_change(
            view + 1,
            "recovering: accepted data loss: joining a view change with an empty log",
            Some(holder.replica),
            out,
        );
    }

    /// View 0, normal status, empty log.
    pub(super) fn boot(&mut self, why: &'static str) {
        assert_eq!(self.op, 0);
        for (peer, booting) in self.recovering_peers.iter().enumerate() {
            self.booted_with[peer] = if *booting { self.peer_nonces[peer] } else { None };
        }
        self.set_status(Status::Normal);
        self.view_reset();
        self.last_normal_view = 0;
        self.transition = (why, None);
    }
}
