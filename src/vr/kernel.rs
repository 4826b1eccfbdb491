//! Kernel handover (fast_reply; contract in `super`): while armed, an
//! input that would change view, status or log position is kept in
//! `deferred` and answered with `Action::KernelDisarm`; the runtime
//! disarms, drains, and calls `on_kernel_disarmed`, which appends what the
//! kernel acked and then handles the kept input. (`finish` arms.)

use super::replica::Replica;
use super::{Action, KernelArm, Status};
use crate::wire::{LogEntry, Message, Prepare};

/// An input kept while the kernel is being disarmed.
#[derive(Debug)]
pub(super) enum Deferred {
    Message {
        from: u8,
        message: Message,
    },
    Tick,
    /// Kernel-acked entries reached Prepares we hold in prepare_buffer:
    /// take the log position back from the kernel to append them.
    Buffered,
}

impl Replica {
    /// The kernel stopped acking; `acked` are the Prepares it acked since the
    /// last delivery, in op order. They are appended (they were acked, so
    /// they must be in the log), then the deferred input is processed.
    pub fn on_kernel_disarmed(&mut self, acked: Vec<Prepare>, out: &mut Vec<Action>) {
        assert!(self.kernel_disarming, "on_kernel_disarmed without KernelDisarm");
        let start = out.len();
        let arm = self.kernel_armed.take();
        self.kernel_disarming = false;
        if let Some(arm) = arm {
            self.append_kernel_prepares(arm, acked);
            // Held Prepares may continue the log now.
            if self.status == Status::Normal && !self.joining_view {
                self.accept_buffered(out);
            }
        }
        match self.deferred.take() {
            Some(Deferred::Message { from, message }) => self.dispatch(from, message, out),
            Some(Deferred::Tick) => self.tick(out),
            Some(Deferred::Buffered) | None => {}
        }
        self.finish(start, out);
    }

    /// Prepares the armed kernel acked, delivered while it stays armed (the
    /// runtime drains the ring buffer now and then). Appends them and learns
    /// their commit numbers; the kernel keeps acking from its own next op.
    pub fn on_kernel_prepares(&mut self, acked: Vec<Prepare>, out: &mut Vec<Action>) {
        let start = out.len();
        if let Some(arm) = self.kernel_armed {
            self.append_kernel_prepares(arm, acked);
            if !self.kernel_disarming && self.prepare_buffer.contains_key(&(self.op + 1)) {
                // The kernel filled the gap in front of Prepares it passed
                // to us earlier; it expects the op we already hold, so take
                // the log position back, append them, and re-arm past them.
                self.disarm(Deferred::Buffered, out);
            }
        } else {
            assert!(acked.is_empty(), "kernel prepares while not armed");
        }
        self.finish(start, out);
    }

    fn append_kernel_prepares(&mut self, arm: KernelArm, acked: Vec<Prepare>) {
        if !acked.is_empty() {
            // The kernel took these Prepares from the leader of our view on
            // our behalf: we heard from the leader.
            self.leader_timeout.reset();
        }
        for prepare in acked {
            assert_eq!(prepare.view, arm.view, "kernel acked another view");
            assert_eq!(prepare.view, self.view);
            if prepare.op <= self.op {
                continue;
            }
            assert_eq!(prepare.op, self.op + 1, "kernel acked out of order");
            self.commit_seen = self.commit_seen.max(prepare.commit);
            self.push_entry(LogEntry { op: prepare.op, view: prepare.view, batch: prepare.batch });
        }
        self.execute_through(self.commit_seen, false, &mut Vec::new());
    }

    pub(super) fn disarm(&mut self, deferred: Deferred, out: &mut Vec<Action>) {
        assert!(self.kernel_armed.is_some());
        assert!(self.deferred.is_none());
        out.push(Action::KernelDisarm);
        self.kernel_disarming = true;
        self.deferred = Some(deferred);
    }

    /// Whether handling `message` (as an armed normal follower) could change
    /// view, status or log position.
    pub(super) fn message_needs_disarm(&self, message: &Message) -> bool {
        match message {
            // One past a gap too: the kernel stays disarmed until the gap
            // fills (finish), see there.
            Message::Prepare(m) => m.view > self.view || (m.view == self.view && m.op > self.op),
            Message::Commit(m) => m.view > self.view,
            Message::StartViewChange(m) => m.view > self.view,
            Message::DoViewChange(m) => m.view > self.view,
            Message::StartView(m) => m.view > self.view,
            Message::NewState(m) => m.view == self.view,
            // The last chunk installs the snapshot.
            Message::SnapshotChunk(_) => self.snapshot_in.is_some(),
            Message::SnapshotRequest(_) => false,
            Message::Request(_)
            | Message::Reply(_)
            | Message::PrepareOk(_)
            | Message::GetState(_)
            | Message::Recovery(_)
            | Message::RecoveryResponse(_)
            | Message::StatusRequest(_)
            | Message::StatusReply(_) => false,
        }
    }

    /// Whether the next tick could start a view change (armed => normal follower).
    pub(super) fn tick_needs_disarm(&self) -> bool {
        self.leader_timeout.fires_on_next_tick()
    }
}
