//! The Viewstamped Replication core (Liskov & Cowling, "Viewstamped
//! Replication Revisited", 2012). Pure: no sockets, threads, clocks, libbpf
//! or unseeded randomness. Inputs are method calls (`on_message`,
//! `on_request`, `on_tick`, `on_kernel_disarmed`); outputs are [`Action`]s
//! appended to a caller-provided, bounded list. Time is ticks.
//!
//! The runtime (src/transport) and the deterministic simulator (tests/sim.rs)
//! drive it the same way.
//!
//! API CONTRACT (shared with the runtime; change only together):
//! - `Replica::new(config, app, nonce)` starts in status Recovering: a replica
//!   without memory cannot tell first boot from restart. It sends Recovery
//!   with `nonce` (a fresh random value from the runtime/sim) and
//!   - recovers from the RecoveryResponses of f+1 replicas including the
//!     leader of the highest view among them (VRR section 4.3), or
//!   - if every other replica answers ITS nonce saying that it is
//!     Recovering too (`status == ELECTRODE_STATUS_RECOVERING` in the
//!     response) and none said it holds state, the cluster is booting (a
//!     first start, or a restart of every replica: in-memory state is gone
//!     either way); it enters view 0, normal status, empty log. Replica 0
//!     is among them, so it leads whatever the start order. A replica that
//!     booted answers the very incarnation (nonce) it booted with
//!     `ELECTRODE_STATUS_BOOTED_WITH_YOU`, and that incarnation boots on
//!     that one answer (it never left recovery, so it never acknowledged
//!     anything: it joins as an empty follower); a restarted incarnation
//!     gets the normal answer.
//!   - if f others answer that they are Recovering while a peer holds state
//!     (view > 0 or op > 0), more than f replicas lost their memory: it
//!     waits (`recovery_blocked`) rather than boot a second history. Only
//!     `Config::accept_data_loss` moves it on, after `boot_wait_ticks`: it
//!     joins a view change with an empty log beside the holder, or, with no
//!     holder heard, boots with f others without memory.
//! - `on_request(request, out)`: a client request arrived (runtime keeps the
//!   client address by client_id for `Action::Reply`).
//! - `on_message(from, message, out)`: `from` is the sender replica id,
//!   already checked by the transport against the sender's address.
//! - `on_tick(out)`: one tick passed.
//! - Kernel handover (fast_reply): when `config.kernel_fast_reply` is true,
//!   the core emits `Action::KernelArm` whenever it is normal follower and
//!   the kernel may ack Prepares of (view, next op) on its behalf. Before any
//!   change of view, status or log position, the core emits
//!   `Action::KernelDisarm`, keeps the triggering input, and returns; the
//!   runtime disarms the kernel, drains the ring buffer, and calls
//!   `on_kernel_disarmed(acked_prepares, out)`, which appends those entries
//!   (they were acked, so they must be in the log) and then re-processes the
//!   deferred input. When false, these actions never appear.
//! - Durability (`config.durable`, code in `persist.rs`): after an input,
//!   `take_persist()` returns what the log on disk must become
//!   ([`Persist`]: entries from_op..=to_op replace everything on disk
//!   above from_op - 1), or None; the runtime writes, syncs (one sync for
//!   a burst) and reports each write it took, in order, with
//!   `on_persisted(to_op, out)`. In memory mode (`durable` false) there is
//!   never anything to take, no call is needed, and everything in the log
//!   counts as persisted at once.

//!
//! THE VIEW-CHANGE ARGUMENT AND THE INVARIANT IT RESTS ON.
//! A new leader takes the log with the largest (last_normal_view, op) among
//! f+1 DoViewChanges and the largest commit among them. Every committed op
//! is in that log because:
//! - (membership) a replica claims `last_normal_view == v` only while its
//!   log holds the log view v started with (its StartView prefix): the new
//!   leader of v holds it by choice, a follower by installing the
//!   StartView, and a replica that joined v by state transfer only once its
//!   log reaches the catch-up target (the StartView's op, the leader's op
//!   at recovery, or the head of the first page a member sent it: that
//!   member held the prefix then). Until then it keeps its older
//!   last_normal_view, acks nothing, answers no GetState, and its pages
//!   replace its log from the point verified so far, keeping its older
//!   suffix above it, so its claim never shrinks;
//! - (quorum) an op committed in view v was acked by f+1 members of v; an
//!   op committed before v is in v's StartView prefix (by induction);
//! - so any f+1 DoViewChanges include a claim (v' >= v, op' >= the op)
//!   whose log holds it, and the largest claim's log holds every op any
//!   claim of a lower view held as committed.
//!
//! Consequence checked in code: no DoViewChange's commit exceeds the chosen
//! log's head; `start_view_as_leader` refuses the view otherwise (counted
//! in `view_change_refusals`) rather than clamp the commit and drop
//! acknowledged ops. The simulator checks the membership invariant after
//! every step (tests/sim.rs, checker (f)), and its mutation
//! `CatchUpEndsAfterOnePage` (the rule before issue 20: a member after one
//! page) is found by the sweep.
//!
//! DURABLE MODE: WHAT AN ACK MEANS. With `Config::durable`, the core
//! keeps `persisted_op`, the highest op whose entry and every entry below
//! it are on this replica's disk as its log holds them now. The rule:
//! - a follower's PrepareOK names at most `persisted_op` (ack n: ops <= n
//!   are on my disk); `on_persisted` sends the ack a sync earns;
//! - the leader counts its own vote only up to its `persisted_op`: it
//!   commits op n when f followers acked n and n <= its `persisted_op`;
//! - a change of the log at op k (a view change's or state transfer's
//!   replacement of an uncommitted suffix, a truncation, a snapshot
//!   install) lowers `persisted_op` to k - 1 at once: the entries on disk
//!   from k on are the replaced ones until the new ones are written, and
//!   a write reported later counts only below any change not yet written.
//!
//! Why an op committed under this rule is on f+1 disks: it was committed
//! by the leader of its view v with f acks of v for ops >= n plus its own
//! vote, each given only while the giver's disk held the giver's log up to
//! n; within v every member's log up to n is the same (logs in a view are
//! prefixes of the leader's), so f+1 disks held op n as committed. A disk
//! changes an entry only when its replica's log changes it, and the log
//! never changes a committed entry (the view-change argument above), so
//! those copies stay. Memory mode keeps today's meaning (ack = in memory).
//!
//! The first step stops at the log: the view, last_normal_view and commit
//! are not written yet, because no replica restarts from its disk yet
//! (every restart is without memory and recovers from its peers, so a
//! view or a DoViewChange is never read back); the superblock write
//! before StartViewChange/DoViewChange/PrepareOK in a new view belongs to
//! the step that brings restarts from disk. So does writing the checkpoint
//! a snapshot install or a trimmed state transfer leaves below a
//! `Persist`'s from_op.
//!
//! Amnesic replicas (recovered, state not yet installed) take no part in
//! view changes; more than f of them at once block the cluster (see the
//! boot rule above) instead of serving another history.
//!
//! WHERE THINGS ARE. One `Replica` struct, its `impl` split by concern:
//! - `replica.rs`: the struct and its fields, `new`, accessors, the inputs
//!   (`start`, `on_request`, `on_message`, `on_tick`), `finish` (arms the
//!   kernel, bounds the output, checks invariants) and `dispatch`, `set_status`/`set_view`/`view_reset` (the only
//!   places that change status and view, and start the timers), `tick`
//!   (counts every timer, calls the handlers of those that fired) and
//!   `invariants`;
//! - `kernel.rs`: the kernel handover (`on_kernel_disarmed`,
//!   `on_kernel_prepares`, which inputs need a disarm first);
//! - `log.rs`: the log (append, truncate, trim at checkpoints, entry
//!   lookup, its bounds), the suffix a view change carries, `install`;
//! - `normal.rs`: normal operation: client requests and replies, Prepares
//!   and acks, Commits and heartbeats, `execute_through`;
//! - `persist.rs`: durable mode: what to write (`take_persist`), what is
//!   on disk (`on_persisted`), acks and the own vote bounded by it;
//! - `progress.rs`: the leader's view of its followers (`Progress`: acks,
//!   fast retransmission, per-follower retransmission timeout), the commit
//!   quorum and the commit-time estimate;
//! - `view_change.rs`: StartViewChange/DoViewChange/StartView, the view
//!   change timeouts, the pure `choose_log` and the new leader's repair;
//! - `transfer.rs`: state transfer by pages (GetState/NewState), joining a
//!   view that formed without us, repair answers;
//! - `snapshot.rs`: snapshot streaming beyond the log (offer, windowed
//!   pull, chunks, install);
//! - `recovery.rs`: Recovery/RecoveryResponse, the boot rule (`try_boot`)
//!   and the recovery rule (`try_recover`);
//! - `timeout.rs`: `Timeout`, a timer counted in ticks;
//! - `client_table.rs`: at-most-once replies and the checkpoint encoding.

pub mod client_table;
mod kernel;
mod log;
mod normal;
mod persist;
mod progress;
mod recovery;
pub mod replica;
mod snapshot;
mod timeout;
mod transfer;
mod view_change;

pub use recovery::PeerState;
pub use replica::{batch_digest, Replica, ReplicaStats};

/// Test-only fault injection (feature `sim-bugs`, enabled for `cargo test`
/// through the self dev-dependency): each variant breaks one VR rule so the
/// simulator can show that it notices. Never compiled into binaries.
#[cfg(feature = "sim-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The leader commits with one PrepareOk fewer than f.
    CommitOneAckShort,
    /// The new leader adopts the shortest log instead of the largest
    /// (last_normal_view, op).
    ViewChangeWrongLog,
    /// A replica catching up in a view claims it after its first page
    /// (the rule before issue 20), whatever the view's StartView held.
    CatchUpEndsAfterOnePage,
    /// A recovering replica boots an empty view 0 once f peers answer
    /// that they are without memory, whatever another peer holds (the rule
    /// before issue 20).
    BootBesideStateHolder,
    /// Durable mode: a follower acks its log head whether or not it is on
    /// its disk yet.
    AckBeforePersist,
    /// Durable mode: the leader counts its own vote for its whole log,
    /// on its disk or not.
    VoteBeforePersist,
}

use crate::wire::{Message, Reply};

/// Replica status (VRR: normal, view-change, recovering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Normal,
    ViewChange,
    Recovering,
}

impl Status {
    /// The ELECTRODE_STATUS_* value on the wire.
    pub fn wire(self) -> u8 {
        use crate::wire::consts::{STATUS_NORMAL, STATUS_RECOVERING, STATUS_VIEW_CHANGE};
        match self {
            Status::Normal => STATUS_NORMAL as u8,
            Status::ViewChange => STATUS_VIEW_CHANGE as u8,
            Status::Recovering => STATUS_RECOVERING as u8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Normal => "normal",
            Status::ViewChange => "view-change",
            Status::Recovering => "recovering",
        }
    }
}

/// Static parameters of one replica. Timeouts are in ticks (the runtime
/// decides how long a tick is; the default runtime tick is 1 ms).
#[derive(Clone, Debug)]
pub struct Config {
    /// 2f+1.
    pub replica_count: u8,
    /// This replica's index in the configuration.
    pub index: u8,
    /// Most ops prepared but not committed (<= ELECTRODE_PIPELINE_MAX).
    pub pipeline_max: usize,
    /// Most requests per Prepare (<= ELECTRODE_MAX_BATCH).
    pub batch_max: usize,
    /// A checkpoint (snapshot) is taken every this many committed ops and
    /// the log before it is trimmed.
    pub checkpoint_interval_ops: u64,
    /// Leader sends a Commit when it sent nothing for this long.
    pub heartbeat_interval_ticks: u64,
    /// Follower starts a view change after hearing nothing from the leader
    /// for this long. Must be several heartbeats.
    pub view_change_timeout_ticks: u64,
    /// Leader re-sends a Prepare that lacks a quorum after this long.
    pub prepare_retransmit_ticks: u64,
    /// Re-send interval of StartViewChange/DoViewChange, Recovery, GetState.
    pub resend_interval_ticks: u64,
    /// With `accept_data_loss`: how long a replica recovers before it acts
    /// on it (joins a view change beside a holder, or boots with f others
    /// when no holder answered), so that peers up within this time are heard.
    pub boot_wait_ticks: u64,
    /// Most client requests queued at the leader waiting for a Prepare.
    pub request_queue_max: usize,
    /// Most entries in the client table (at-most-once replies).
    pub client_table_max: usize,
    /// Whether a kernel fast path acks Prepares (see module docs).
    pub kernel_fast_reply: bool,
    /// The operator's decision (`--accept-data-loss`) for a recovery that
    /// is blocked because more than f replicas lost their memory while a
    /// peer holds state: after `boot_wait_ticks` of recovering, join a
    /// view change with an empty log instead of waiting. Acknowledged ops
    /// held only by the replicas that lost memory are lost. Never set by
    /// default.
    pub accept_data_loss: bool,
    /// Durable mode (`--durability disk`, see docs/DURABILITY.md): a
    /// PrepareOK for op n and the leader's own vote mean "ops <= n are on
    /// this replica's disk". The core asks for its log to be made durable
    /// ([`Replica::take_persist`]) and learns what is
    /// ([`Replica::on_persisted`]). False (memory mode, today's behaviour):
    /// every op counts as durable as soon as it is in the log, and
    /// `take_persist` never has anything.
    pub durable: bool,
    /// Test-only fault injection; None unless a simulator test sets it.
    #[cfg(feature = "sim-bugs")]
    #[doc(hidden)]
    pub bug: Option<Bug>,
}

impl Config {
    pub fn new(replica_count: u8, index: u8) -> Config {
        Config {
            replica_count,
            index,
            pipeline_max: crate::wire::consts::PIPELINE_MAX as usize,
            batch_max: crate::wire::MAX_BATCH_LEN,
            checkpoint_interval_ops: 1024,
            heartbeat_interval_ticks: 20,
            view_change_timeout_ticks: 200,
            prepare_retransmit_ticks: 10,
            resend_interval_ticks: 30,
            boot_wait_ticks: 1000,
            request_queue_max: 4096,
            client_table_max: 1 << 16,
            kernel_fast_reply: false,
            accept_data_loss: false,
            durable: false,
            #[cfg(feature = "sim-bugs")]
            bug: None,
        }
    }

    /// f, the number of failures tolerated.
    pub fn f(&self) -> usize {
        (self.replica_count as usize - 1) / 2
    }
}

/// What the kernel fast path needs to ack Prepares on a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelArm {
    pub view: u64,
    pub leader: u8,
    /// The op the kernel may ack next (log head + 1).
    pub next_op: u64,
}

/// What the log on disk must become (durable mode; see
/// [`Replica::take_persist`]): entries `from_op..=to_op` (read them with
/// [`Replica::log_entry`]) are written, and every entry on disk above
/// `from_op - 1` is replaced by them (so an empty range, `from_op ==
/// to_op + 1`, truncates). This covers both appends and a view change's
/// or state transfer's replacement of an uncommitted suffix.
/// `from_op` is at least `checkpoint_op + 1`: entries the change covers
/// below it were committed and trimmed into the checkpoint in the same
/// input (a state transfer's pages, a snapshot install); writing the
/// checkpoint is the wiring's part (see the durability note above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persist {
    pub from_op: u64,
    pub to_op: u64,
}

/// An output of the core, executed by the runtime in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send to one replica.
    Send { to: u8, message: Message },
    /// Send to every other replica (tc_broadcast can do this with one send).
    SendAll { message: Message },
    /// Send to the client `client_id` (the runtime knows its address).
    Reply { client_id: u64, reply: Reply },
    /// Let the kernel ack Prepares (only with kernel_fast_reply).
    KernelArm(KernelArm),
    /// Stop the kernel acking, drain, call on_kernel_disarmed.
    KernelDisarm,
}
