//! The replica's log lines about the core's state: view and status
//! changes, catching up, a blocked recovery, the first commit of a view.
//! The runtime shows them once per round of its loop, after the inputs and
//! ticks of that round.

use std::time::Duration;

use super::os;
use crate::vr::{self, Replica};

/// What was last logged of the core's state.
pub struct Transitions {
    index: u8,
    /// How long a recovery waits before `--accept-data-loss` acts.
    boot_wait: Duration,
    status: (u64, vr::Status),
    /// Commit when the view last changed; u64::MAX once a commit in the
    /// view has been reported.
    commit_in_view: u64,
    catching_up: bool,
    /// The holder a blocked recovery waits for, as last logged: the status
    /// stays (view 0, recovering) while blocked, so the status line never
    /// says why.
    blocked_by: Option<u8>,
}

impl Transitions {
    pub fn new(core: &Replica, boot_wait: Duration) -> Transitions {
        Transitions {
            index: core.index(),
            boot_wait,
            status: (core.view(), core.status()),
            commit_in_view: u64::MAX,
            catching_up: false,
            blocked_by: None,
        }
    }

    /// Logs what changed since the last call.
    pub fn log(&mut self, core: &Replica) {
        let index = self.index;
        let status = (core.view(), core.status());
        if status != self.status {
            let (why, from) = core.last_transition();
            let from = from.map(|r| format!(" (replica {r})")).unwrap_or_default();
            log::info!(
                "electrode replica {index}: [{}] view {} {} (op {}, commit {}): {why}{from}",
                clock_ms(),
                status.0,
                status.1.name(),
                core.op(),
                core.commit()
            );
            self.status = status;
            self.commit_in_view = core.commit();
        }
        if core.catching_up() != self.catching_up {
            self.catching_up = core.catching_up();
            log::info!(
                "electrode replica {index}: [{}] view {} {} (op {}, commit {})",
                clock_ms(),
                status.0,
                if self.catching_up { "catching up: fetching the state" } else { "caught up" },
                core.op(),
                core.commit()
            );
        }
        let blocked = core.recovery_blocked();
        if blocked.map(|h| h.replica) != self.blocked_by {
            self.blocked_by = blocked.map(|h| h.replica);
            if let Some(holder) = blocked {
                self.log_blocked(core, holder);
            }
        }
        if status.1 == vr::Status::Normal
            && self.commit_in_view != u64::MAX
            && core.commit() > self.commit_in_view
        {
            // The first op committed in this view: the view change (or
            // recovery) is over for clients (bench/liveness.sh).
            log::info!(
                "electrode replica {index}: [{}] view {} first commit (op {})",
                clock_ms(),
                status.0,
                core.commit()
            );
            self.commit_in_view = u64::MAX;
        }
    }

    /// One line for an operator: the cluster waits for them, and this says
    /// why and what their choices are.
    fn log_blocked(&self, core: &Replica, holder: vr::PeerState) {
        let next = if core.config().accept_data_loss {
            format!(
                "--accept-data-loss is set: after {:?} of recovering this replica joins a view change with an \
                 empty log and the cluster continues from the survivors' history",
                self.boot_wait
            )
        } else {
            "restart as few replicas as needed for a quorum with --accept-data-loss to continue from the \
             survivors' history"
                .to_string()
        };
        log::warn!(
            "electrode replica {}: [{}] recovering: waiting: more than f replicas lost their memory; replica {} \
             holds view {} op {} commit {}; not booting an empty cluster beside it ({next})",
            self.index,
            clock_ms(),
            holder.replica,
            holder.view,
            holder.op,
            holder.commit
        );
    }
}

/// CLOCK_MONOTONIC in milliseconds, as log lines show it: the same clock in
/// every process of the machine, so lines of different replicas compare.
fn clock_ms() -> String {
    let nanos = os::monotonic_nanos();
    format!("{}.{:03}", nanos / 1_000_000, (nanos / 1_000) % 1_000)
}
