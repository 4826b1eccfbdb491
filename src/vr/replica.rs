//! One VR replica: normal operation, view change, state transfer, recovery
//! and checkpoints (VRR sections 4 and 5), as a pure state machine.
//!
//! This file holds the `Replica` struct, its inputs and outputs, the only
//! places that change status and view, `tick` and `invariants`; the
//! protocol's parts are `impl Replica` blocks in the sibling files (see the
//! map in `super`).
//!
//! Inputs: [`Replica::start`] (once, sends the first Recovery),
//! [`Replica::on_request`], [`Replica::on_message`], [`Replica::on_tick`],
//! [`Replica::on_kernel_disarmed`], [`Replica::on_kernel_prepares`] and
//! (durable mode) [`Replica::on_persisted`].
//! Outputs: [`Action`]s appended to `out`, at most
//! [`Replica::actions_max`] per call.
//!
//! Status edges (asserted in `set_status`):
//! - Recovering -> Normal: recovered, or the cluster boots;
//! - Normal -> ViewChange: timeout, or a StartViewChange/DoViewChange of a
//!   higher view;
//! - ViewChange -> ViewChange: escalation to a higher view;
//! - ViewChange -> Normal: StartView, becoming the new leader, or state
//!   transfer after learning the view formed without us;
//! - Normal -> Normal: state transfer into a higher view.
//!
//! Committed log entries never change: the only log mutators (`append`,
//! `truncate_log`, `install`) assert that they leave ops <= commit alone.
//!
//! Kernel handover (contract in `super`, code in `kernel.rs`): while armed,
//! an input that would change view, status or log position is kept in
//! `deferred` and answered with `Action::KernelDisarm`. Until
//! `on_kernel_disarmed` arrives, further messages and requests are dropped
//! (the network may lose them anyway) and ticks are ignored; the runtime
//! disarms promptly.
//!
//! Timers: every timer is a `Timeout` field that runs only in the status
//! and role it belongs to (`start_timeouts`, called by `set_status`);
//! `tick` counts them all and calls the `on_<name>_timeout` handler of each
//! that fired.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::client_table::ClientTable;
use super::kernel::Deferred;
use super::progress::{prepare_timeout_ticks, Progress};
use super::recovery::{PeerState, BOOTED_WITH_YOU};
use super::snapshot::{SnapshotIn, SnapshotOut, SNAPSHOT_WINDOW};
use super::timeout::Timeout;
use super::{Action, Config, KernelArm, Status};
use crate::app::{fnv1a, App, FNV_OFFSET};
use crate::wire::{self, DoViewChange, LogEntry, Message, Prepare, RecoveryResponse, Request, StateBlob};

/// Views, ops and commits a replica accepts from the network are below
/// this (2^62): a cluster needs centuries to get there, and everything the
/// core computes from them (`view + 1`, `op + window`) stays far from
/// overflow. A message carrying a larger one is dropped whole (the kernel
/// programs apply the same bound).
pub const NETWORK_NUMBER_MAX: u64 = 1 << 62;

/// Whether every view, op and commit of `message` (and of its log entries)
/// is below NETWORK_NUMBER_MAX.
fn numbers_in_bounds(message: &Message) -> bool {
    let small = |n: u64| n < NETWORK_NUMBER_MAX;
    let blob_ok = |blob: &StateBlob| {
        small(blob.checkpoint_op) && blob.entries.iter().all(|e| small(e.op) && small(e.view))
    };
    small(message.view())
        && match message {
            Message::Prepare(m) => small(m.op) && small(m.commit),
            Message::PrepareOk(m) => small(m.op),
            Message::Commit(m) => small(m.commit),
            Message::DoViewChange(m) => {
                small(m.last_normal_view) && small(m.op) && small(m.commit) && blob_ok(&m.state)
            }
            Message::StartView(m) => small(m.op) && small(m.commit) && blob_ok(&m.state),
            Message::GetState(m) => small(m.op),
            Message::NewState(m) => small(m.op) && small(m.commit) && blob_ok(&m.state),
            // A booting peer's answer carries its nonce in `op`.
            Message::RecoveryResponse(m) => {
                (m.status == Status::Recovering.wire() || m.status == BOOTED_WITH_YOU || small(m.op))
                    && small(m.commit)
                    && blob_ok(&m.state)
            }
            Message::SnapshotRequest(m) => small(m.snapshot_op),
            Message::SnapshotChunk(m) => small(m.snapshot_op),
            Message::StartViewChange(_)
            | Message::Recovery(_)
            | Message::Request(_)
            | Message::Reply(_)
            | Message::StatusRequest(_)
            | Message::StatusReply(_) => true,
        }
}

/// Digest of a batch: what "the same entry" means to the checkers.
pub fn batch_digest(batch: &[Request]) -> u64 {
    let mut hash = FNV_OFFSET;
    for request in batch {
        hash = fnv1a(hash, &request.client_id.to_be_bytes());
        hash = fnv1a(hash, &request.request_number.to_be_bytes());
        hash = fnv1a(hash, &(request.op.len() as u32).to_be_bytes());
        hash = fnv1a(hash, &request.op);
    }
    hash
}

pub struct Replica {
    pub(super) config: Config,
    pub(super) app: Box<dyn App>,
    pub(super) nonce: u64,
    pub(super) started: bool,

    pub(super) status: Status,
    pub(super) view: u64,
    pub(super) last_normal_view: u64,
    /// Log head: the highest op in the log.
    pub(super) op: u64,
    /// Highest executed op; every op <= commit is committed.
    pub(super) commit: u64,
    /// Entries checkpoint_op+1 ..= op.
    pub(super) log: VecDeque<LogEntry>,
    /// Where the log starts: every checkpoint_interval_ops committed ops the
    /// log is trimmed up to commit. No snapshot is stored: the app state is
    /// encoded (at commit) only when a state transfer needs it, so the
    /// cost of normal operation does not grow with the state.
    pub(super) checkpoint_op: u64,
    pub(super) client_table: ClientTable,

    // Durability (see `persist.rs`).
    /// Highest op whose entry, and every entry below it, is on our disk as
    /// the log holds it now (memory mode: always `op`). Acks and the
    /// leader's own vote never go beyond it.
    pub(super) persisted_op: u64,
    /// Durable mode: the lowest op the log changed at since the last
    /// `take_persist` (None: nothing to write).
    pub(super) persist_from: Option<u64>,
    /// Durable mode: the writes handed out by `take_persist` and not yet
    /// reported by `on_persisted`, in order: (lowest op replaced, to_op).
    pub(super) persists_outstanding: VecDeque<(u64, u64)>,
    /// Highest op we promised is on our disk (an ack sent, or our own vote
    /// counted for a commit), lowered with the log when it is replaced:
    /// durable mode asserts it never exceeds `persisted_op`.
    pub(super) promised_op: u64,

    // Leader.
    pub(super) request_queue: VecDeque<Request>,
    /// client_id -> request number queued or prepared and not yet executed.
    pub(super) pending: HashMap<u64, u64>,
    /// Per replica (by index), what it acknowledged in this view.
    pub(super) progress: Vec<Progress>,
    /// Leader: sends a Commit when it sent nothing to all followers for
    /// heartbeat_interval_ticks.
    pub(super) heartbeat_timeout: Timeout,
    /// Leader: runs from the send of the oldest uncommitted Prepare (or the
    /// last commit); its ticks at a commit are the commit-time sample.
    pub(super) prepare_timeout: Timeout,
    /// Smoothed ticks from sending a Prepare to its commit, times 8 (an
    /// EWMA as TCP's srtt): the retransmission timeout follows it.
    pub(super) commit_ticks_x8: u64,

    // Follower.
    /// Follower: nothing from the leader for this long starts a view
    /// change. Its `after` is this view's leader-silence timeout (the
    /// configured one plus jitter, so followers do not all time out on the
    /// same tick).
    pub(super) leader_timeout: Timeout,
    /// Prepares ahead of op+1, waiting for the gap to fill.
    pub(super) prepare_buffer: BTreeMap<u64, Prepare>,
    /// Highest commit number heard in this view (may exceed op).
    pub(super) commit_seen: u64,
    /// Runs from the last GetState while a transfer is wanted (stopped
    /// otherwise): it asks again when it fires.
    pub(super) state_transfer_timeout: Timeout,
    pub(super) state_transfer_attempts: u64,
    /// Whether the outstanding GetState asks for the next page of a log
    /// suffix (on_new_state): its answer is one short NewState, so it is
    /// re-sent after a page timeout (state_transfer_timeout_ticks), not
    /// resend_interval_ticks.
    pub(super) paging: bool,
    /// Smoothed ticks from a GetState to its page, times 8 (as commit_ticks_x8).
    pub(super) page_ticks_x8: u64,
    /// Entered this view by state transfer and our log does not yet reach
    /// the view's StartView prefix: it may miss ops committed before the
    /// view began. Until caught up we neither ack, nor answer GetState, nor
    /// claim last_normal_view == view (a view change would otherwise prefer
    /// our short log and lose committed ops). See `catch_up_target`.
    /// (Public `catching_up()` is this or `recovered_without_state`.)
    pub(super) joining_view: bool,
    /// While catching up: our log up to this op is this view's log (pages
    /// installed, or committed); above it, until it is replaced page by
    /// page, we keep the suffix we held before (from an older view), so
    /// that what we claim in a view change never shrinks: a page must not
    /// drop ops we acked in our last normal view (see `install_page`).
    pub(super) catch_up_verified: u64,
    /// While catching up: the op our log must reach before we are a member
    /// of the view (the StartView's op, the leader's op at recovery, or
    /// else the head of the first page a caught-up member sent us in this
    /// view: its log held the StartView prefix then). None until known.
    pub(super) catch_up_target: Option<u64>,
    /// Recovered (memory lost) and not yet given the state: like VR's
    /// recovering replica, we take no part in view changes until a state
    /// transfer completes, since committed ops we held may be gone.
    /// (Public `amnesic()` is this or status Recovering.)
    pub(super) recovered_without_state: bool,
    /// New leader waiting for committed entries it lacks (view change
    /// repair: a GetState in view-change status).
    pub(super) repair_pending: bool,
    pub(super) snapshot_out: Option<SnapshotOut>,
    pub(super) snapshot_in: Option<SnapshotIn>,

    // View change.
    pub(super) start_view_change_from: Vec<bool>,
    pub(super) do_view_change_from: Vec<Option<DoViewChange>>,
    pub(super) do_view_change_sent: bool,
    /// This attempt's view-change timeout: `after` grows with each attempt
    /// that fails in a row and has a random part, so competing attempts
    /// settle (as Raft's randomized election timeout).
    pub(super) view_change_timeout: Timeout,
    /// Re-sends StartViewChange/DoViewChange (and a lost repair).
    pub(super) view_change_resend_timeout: Timeout,
    /// View changes started since we were last normal.
    pub(super) view_change_attempts: u32,
    /// Seeded by the nonce: the core stays deterministic for a given input.
    pub(super) rng: u64,

    // Recovery.
    pub(super) recovery_responses: Vec<Option<RecoveryResponse>>,
    pub(super) recovering_peers: Vec<bool>,
    /// Re-sends Recovery.
    pub(super) recovery_resend_timeout: Timeout,
    /// Runs while recovering: with `accept_data_loss`, the boot rule acts
    /// once it fired (boot_wait_ticks).
    pub(super) boot_wait_timeout: Timeout,
    /// The nonce of each peer's latest Recovery.
    pub(super) peer_nonces: Vec<Option<u64>>,
    /// The incarnations (nonces) we counted as booting when we booted.
    pub(super) booted_with: Vec<Option<u64>>,
    /// Per peer, the most state it told us it holds (answers with view > 0
    /// or op > 0), for this incarnation: any of it forbids booting.
    pub(super) peer_state: Vec<Option<PeerState>>,
    /// Recovering and blocked (see try_boot): the most advanced holder.
    pub(super) recovery_blocked: Option<PeerState>,

    // Kernel fast path.
    pub(super) kernel_armed: Option<KernelArm>,
    pub(super) kernel_disarming: bool,
    /// Leader: queue requests without preparing until `release_prepares`
    /// (the runtime holds while it reads a burst of datagrams, so that the
    /// burst goes out as one batch).
    pub(super) holding_prepares: bool,
    pub(super) deferred: Option<Deferred>,

    /// (op, batch digest) of recently executed ops, for checkers.
    pub(super) recent_commits: VecDeque<(u64, u64)>,
    /// Why the last change of view or status happened, and the replica
    /// whose message caused it (None: our own timeout).
    pub(super) transition: (&'static str, Option<u8>),
    /// Lifetime counters.
    pub stats: ReplicaStats,
}

/// Counters for the runtime's status output and the simulator's totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    pub view_changes_started: u64,
    pub views_started: u64,
    pub state_transfers: u64,
    /// View changes whose new leader fetched committed ops it lacked.
    pub view_change_repairs: u64,
    /// View changes refused because a DoViewChange's commit exceeded the
    /// chosen log's head (see choose_log): 0 in a correct cluster.
    pub view_change_refusals: u64,
    /// Snapshots pulled completely, verified and installed.
    pub snapshots_installed: u64,
    /// Snapshot chunks received (duplicates included).
    pub snapshot_chunks_received: u64,
    pub recoveries: u64,
    pub checkpoints: u64,
    pub prepares_sent: u64,
    pub requests_batched: u64,
    pub dropped_inputs: u64,
    /// Requests answered "session evicted" instead of being executed.
    pub sessions_evicted_replies: u64,
}

impl Replica {
    /// A replica without memory, in status Recovering. `nonce` must be fresh
    /// on every construction (it tells our Recovery round from earlier ones).
    /// Nothing is sent until [`Replica::start`].
    pub fn new(config: Config, app: Box<dyn App>, nonce: u64) -> Replica {
        let n = config.replica_count as usize;
        assert!(n >= 1 && n % 2 == 1, "replica_count must be odd");
        assert!(n <= wire::MAX_REPLICA_COUNT);
        assert!(config.index < config.replica_count);
        assert!(config.pipeline_max >= 1 && config.pipeline_max <= wire::consts::PIPELINE_MAX as usize);
        assert!(config.batch_max >= 1 && config.batch_max <= wire::MAX_BATCH_LEN);
        assert!(config.checkpoint_interval_ops >= 1);
        assert!(config.heartbeat_interval_ticks >= 1);
        assert!(config.view_change_timeout_ticks > config.heartbeat_interval_ticks);
        assert!(config.prepare_retransmit_ticks >= 1 && config.resend_interval_ticks >= 1);
        assert!(config.request_queue_max >= 1 && config.client_table_max >= 1);
        // The kernel acks "received", not "on disk", until it acks with a
        // durable watermark (docs/DURABILITY.md).
        assert!(!(config.durable && config.kernel_fast_reply), "fast_reply is not durable yet");
        let client_table = ClientTable::default();
        let commit_ticks_x8 = 0;
        let prepare_timeout_ticks = prepare_timeout_ticks(commit_ticks_x8, &config);
        Replica {
            app,
            nonce,
            started: false,
            status: Status::Recovering,
            view: 0,
            last_normal_view: 0,
            op: 0,
            commit: 0,
            log: VecDeque::new(),
            checkpoint_op: 0,
            client_table,
            persisted_op: 0,
            persist_from: None,
            persists_outstanding: VecDeque::new(),
            promised_op: 0,
            request_queue: VecDeque::new(),
            pending: HashMap::new(),
            progress: vec![Progress::new(prepare_timeout_ticks); n],
            heartbeat_timeout: Timeout::new(config.heartbeat_interval_ticks),
            prepare_timeout: Timeout::new(prepare_timeout_ticks),
            commit_ticks_x8,
            leader_timeout: Timeout::new(config.view_change_timeout_ticks),
            prepare_buffer: BTreeMap::new(),
            commit_seen: 0,
            state_transfer_timeout: Timeout::new(config.resend_interval_ticks),
            state_transfer_attempts: 0,
            paging: false,
            page_ticks_x8: 0,
            joining_view: false,
            catch_up_verified: 0,
            catch_up_target: None,
            recovered_without_state: false,
            repair_pending: false,
            snapshot_out: None,
            snapshot_in: None,
            start_view_change_from: vec![false; n],
            do_view_change_from: vec![None; n],
            do_view_change_sent: false,
            view_change_timeout: Timeout::new(config.view_change_timeout_ticks),
            view_change_resend_timeout: Timeout::new(config.resend_interval_ticks),
            view_change_attempts: 0,
            rng: nonce ^ 0x9e37_79b9_7f4a_7c15,
            recovery_responses: vec![None; n],
            recovering_peers: vec![false; n],
            recovery_resend_timeout: Timeout::started(config.resend_interval_ticks),
            boot_wait_timeout: Timeout::started(config.boot_wait_ticks),
            peer_nonces: vec![None; n],
            booted_with: vec![None; n],
            peer_state: vec![None; n],
            recovery_blocked: None,
            kernel_armed: None,
            kernel_disarming: false,
            holding_prepares: false,
            deferred: None,
            recent_commits: VecDeque::new(),
            transition: ("started, recovering", None),
            stats: ReplicaStats::default(),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn index(&self) -> u8 {
        self.config.index
    }

    pub fn view(&self) -> u64 {
        self.view
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn op(&self) -> u64 {
        self.op
    }

    pub fn commit(&self) -> u64 {
        self.commit
    }

    pub fn last_normal_view(&self) -> u64 {
        self.last_normal_view
    }

    pub fn checkpoint_op(&self) -> u64 {
        self.checkpoint_op
    }

    /// Highest op on our disk as the log holds it (memory mode: `op`).
    pub fn persisted_op(&self) -> u64 {
        self.persisted_op
    }

    /// Normal status and leader of the current view.
    pub fn is_leader(&self) -> bool {
        self.status == Status::Normal && self.leader_of(self.view) == self.config.index
    }

    /// Digest of the application state at `commit`.
    pub fn digest(&self) -> u64 {
        self.app.digest()
    }

    /// The committed entry at `op`, while it is still in the log.
    pub fn committed_entry(&self, op: u64) -> Option<&LogEntry> {
        if op > self.commit {
            return None;
        }
        self.entry(op)
    }

    /// The log entry at `op`, committed or not, while it is in the log.
    pub fn log_entry(&self, op: u64) -> Option<&LogEntry> {
        self.entry(op)
    }

    /// (op, batch digest) of the most recently executed ops, oldest first;
    /// holds at least the last [`Replica::recent_commits_max`] ops.
    pub fn recent_commits(&self) -> impl Iterator<Item = &(u64, u64)> {
        self.recent_commits.iter()
    }

    pub fn recent_commits_max(&self) -> usize {
        self.config.checkpoint_interval_ops as usize + self.uncommitted_max() as usize
    }

    /// Recovered after losing its memory and still waiting for the state:
    /// by VR's failure count it is still down (it cannot help a view
    /// change keep committed ops).
    pub fn amnesic(&self) -> bool {
        self.recovered_without_state || self.status == Status::Recovering
    }

    /// Normal but still fetching state (after recovery or on joining a view
    /// that formed without us): not yet a full member.
    pub fn catching_up(&self) -> bool {
        self.joining_view || self.recovered_without_state
    }

    /// Recovering and blocked: more than f replicas lost their memory while
    /// this peer (the most advanced that answered) holds state. The
    /// cluster waits rather than boot a second history; see
    /// `Config::accept_data_loss`.
    pub fn recovery_blocked(&self) -> Option<PeerState> {
        self.recovery_blocked.filter(|_| self.status == Status::Recovering)
    }

    /// Why the last change of view or status happened, and from whom.
    pub fn last_transition(&self) -> (&'static str, Option<u8>) {
        self.transition
    }

    pub fn kernel_armed(&self) -> Option<KernelArm> {
        self.kernel_armed
    }

    pub fn request_queue_len(&self) -> usize {
        self.request_queue.len()
    }

    /// Clients in the client table (for metrics).
    pub fn client_table_len(&self) -> usize {
        self.client_table.len()
    }

    /// Most actions one call appends: replies for a full pipeline of full
    /// batches, plus a retransmission of the pipeline to every replica, plus
    /// a few protocol messages per replica.
    pub fn actions_max(&self) -> usize {
        let n = self.config.replica_count as usize;
        let pipeline = self.uncommitted_max() as usize;
        pipeline * self.config.batch_max + (pipeline + 8) * n + pipeline + SNAPSHOT_WINDOW as usize
    }

    pub(super) fn leader_of(&self, view: u64) -> u8 {
        (view % u64::from(self.config.replica_count)) as u8
    }

    pub(super) fn f(&self) -> usize {
        self.config.f()
    }

    /// xorshift64*: deterministic per nonce, no global randomness.
    pub(super) fn random_below(&mut self, n: u64) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        if n == 0 {
            0
        } else {
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// Sends the first Recovery (contract: a replica without memory starts
    /// recovering). Call once, before any other input.
    pub fn start(&mut self, out: &mut Vec<Action>) {
        assert!(!self.started);
        let start = out.len();
        self.started = true;
        if self.config.replica_count == 1 {
            // No peer can answer: a single replica always boots.
            self.boot("booted: a cluster of one (in-memory data does not survive a restart)");
        } else {
            self.send_recovery(out);
        }
        self.finish(start, out);
    }

    /// A client request arrived.
    pub fn on_request(&mut self, request: Request, out: &mut Vec<Action>) {
        assert!(self.started);
        let start = out.len();
        if self.kernel_disarming {
            self.stats.dropped_inputs += 1;
        } else {
            self.handle_request(request, out);
        }
        self.finish(start, out);
    }

    /// A message from replica `from`.
    pub fn on_message(&mut self, from: u8, message: Message, out: &mut Vec<Action>) {
        assert!(self.started);
        let start = out.len();
        if from >= self.config.replica_count
            || from == self.config.index
            || self.kernel_disarming
            || !numbers_in_bounds(&message)
        {
            self.stats.dropped_inputs += 1;
        } else if self.kernel_armed.is_some() && self.message_needs_disarm(&message) {
            self.disarm(Deferred::Message { from, message }, out);
        } else {
            self.dispatch(from, message, out);
        }
        self.finish(start, out);
    }

    /// One tick passed.
    pub fn on_tick(&mut self, out: &mut Vec<Action>) {
        assert!(self.started);
        let start = out.len();
        if self.kernel_disarming {
            // Ticks are not counted while the kernel drains: a short pause.
        } else if self.kernel_armed.is_some() && self.tick_needs_disarm() {
            self.disarm(Deferred::Tick, out);
        } else {
            self.tick(out);
        }
        self.finish(start, out);
    }

    /// End of every input: arm the kernel when allowed, bound the output,
    /// check invariants.
    ///
    /// Not while Prepares wait past a gap: the kernel would ack the missing
    /// op alone when the leader re-sends it (it does not know what we hold),
    /// and the leader, seeing that ack repeated, would re-send the next op
    /// we also hold, one round trip per op, while we slept (the ring wakes
    /// nobody). Until the gap fills, every Prepare comes to us, as without
    /// the fast path, and the gap costs one disarm and one arm. (Re-arming
    /// at once instead cost a disarm per Prepare while the gap was open: at
    /// 10% loss the fast path kept half the throughput user space did.)
    pub(super) fn finish(&mut self, start: usize, out: &mut Vec<Action>) {
        if self.config.kernel_fast_reply
            && self.kernel_armed.is_none()
            && self.status == Status::Normal
            && !self.is_leader()
            && !self.joining_view
            && self.prepare_buffer.is_empty()
        {
            let arm = KernelArm { view: self.view, leader: self.leader_of(self.view), next_op: self.op + 1 };
            self.kernel_armed = Some(arm);
            out.push(Action::KernelArm(arm));
        }
        assert!(out.len() - start <= self.actions_max(), "too many actions in one call");
        self.invariants();
    }

    pub(super) fn dispatch(&mut self, from: u8, message: Message, out: &mut Vec<Action>) {
        match message {
            Message::Prepare(m) => self.on_prepare(from, m, out),
            Message::PrepareOk(m) => self.on_prepare_ok(from, m, out),
            Message::Commit(m) => self.on_commit(from, m, out),
            Message::StartViewChange(m) => self.on_start_view_change(from, m, out),
            Message::DoViewChange(m) => self.on_do_view_change(from, m, out),
            Message::StartView(m) => self.on_start_view(from, m, out),
            Message::GetState(m) => self.on_get_state(from, m, out),
            Message::NewState(m) => self.on_new_state(from, m, out),
            Message::Recovery(m) => self.on_recovery(from, m, out),
            Message::RecoveryResponse(m) => self.on_recovery_response(from, m, out),
            Message::SnapshotRequest(m) => self.on_snapshot_request(from, m, out),
            Message::SnapshotChunk(m) => self.on_snapshot_chunk(from, m, out),
            // Clients reach the core through on_request; replicas never
            // forward requests.
            Message::Request(_) => self.stats.dropped_inputs += 1,
            // Replies go to clients, never to replicas.
            Message::Reply(_) => self.stats.dropped_inputs += 1,
            // Status requests are answered by the runtime.
            Message::StatusRequest(_) => self.stats.dropped_inputs += 1,
            Message::StatusReply(_) => self.stats.dropped_inputs += 1,
        }
    }

    pub(super) fn set_status(&mut self, to: Status) {
        let allowed = matches!(
            (self.status, to),
            (Status::Recovering, Status::Normal)
                | (Status::Recovering, Status::ViewChange)
                | (Status::Normal, Status::ViewChange)
                | (Status::ViewChange, Status::ViewChange)
                | (Status::ViewChange, Status::Normal)
                | (Status::Normal, Status::Normal)
        );
        assert!(allowed, "status {} -> {} is not a VR edge", self.status.name(), to.name());
        assert!(self.kernel_armed.is_none());
        if to == Status::Normal {
            self.view_change_attempts = 0;
        }
        self.status = to;
        self.start_timeouts();
    }

    /// Starts the timeouts of the status and role we are in, from zero, and
    /// stops the others: each runs only where its handler applies. (Called
    /// on every change of status, which follows every change of view, so
    /// a new view's timeouts start from zero too. The state-transfer
    /// timeout runs while a transfer is wanted, the snapshot ones with
    /// their snapshot.)
    fn start_timeouts(&mut self) {
        let leader = self.is_leader();
        let follower = self.status == Status::Normal && !leader;
        let view_change = self.status == Status::ViewChange;
        let recovering = self.status == Status::Recovering;
        let progress = self.progress.iter_mut().map(|p| (&mut p.timeout, leader));
        let timeouts = [
            (&mut self.heartbeat_timeout, leader),
            (&mut self.prepare_timeout, leader),
            (&mut self.leader_timeout, follower),
            (&mut self.view_change_timeout, view_change),
            (&mut self.view_change_resend_timeout, view_change),
            (&mut self.recovery_resend_timeout, recovering),
            (&mut self.boot_wait_timeout, recovering),
        ];
        for (timeout, runs) in timeouts.into_iter().chain(progress) {
            if runs {
                timeout.start();
            } else {
                timeout.stop();
            }
        }
    }

    pub(super) fn set_view(&mut self, view: u64) {
        assert!(view >= self.view, "view went back");
        assert!(self.kernel_armed.is_none());
        if view != self.view {
            self.view = view;
            self.view_reset();
        }
    }

    /// Per-view state starts over.
    pub(super) fn view_reset(&mut self) {
        // (Timeouts start over with the status that follows: set_status.)
        self.progress.iter_mut().for_each(Progress::reset);
        self.start_view_change_from.iter_mut().for_each(|v| *v = false);
        self.do_view_change_from.iter_mut().for_each(|d| *d = None);
        self.do_view_change_sent = false;
        self.prepare_buffer.clear();
        self.request_queue.clear();
        self.pending.clear();
        self.commit_seen = self.commit;
        self.stop_state_transfer();
        self.joining_view = false;
        self.repair_pending = false;
        self.draw_leader_timeout();
    }

    /// One tick passed: every running timeout counts it, then the handler
    /// of each that fired runs, in the order below. A timeout runs only in
    /// the status and role it belongs to (`start_timeouts`), so no handler
    /// runs outside them.
    pub(super) fn tick(&mut self, out: &mut Vec<Action>) {
        // Snapshot streaming first: a pull given up now lets the state
        // transfer timeout (paused while a pull runs) count this tick.
        if let Some(snapshot) = self.snapshot_out.as_mut() {
            snapshot.timeout.tick();
        }
        if let Some(pull) = self.snapshot_in.as_mut() {
            pull.timeout.tick();
        }
        if self.snapshot_out.as_ref().is_some_and(|s| s.timeout.fired()) {
            self.on_snapshot_out_timeout();
        }
        if self.snapshot_in.as_ref().is_some_and(|s| s.timeout.fired()) {
            self.on_snapshot_in_timeout(out);
        }

        self.heartbeat_timeout.tick();
        self.prepare_timeout.tick();
        self.progress.iter_mut().for_each(|p| p.timeout.tick());
        self.leader_timeout.tick();
        if self.snapshot_in.is_none() {
            // (Paused while a snapshot is being pulled.)
            self.state_transfer_timeout.tick();
        }
        self.view_change_timeout.tick();
        self.view_change_resend_timeout.tick();
        self.recovery_resend_timeout.tick();
        self.boot_wait_timeout.tick();

        // Leader.
        if self.prepare_timeout.fired() {
            self.on_prepare_timeout();
        }
        self.on_progress_timeouts(out);
        if self.heartbeat_timeout.fired() {
            self.on_heartbeat_timeout(out);
        }
        // Follower.
        if self.leader_timeout.fired() {
            self.on_leader_timeout(out);
        }
        if self.state_transfer_timeout.ticking() && !self.joining_view && self.commit_seen <= self.op {
            // Retransmitted Prepares filled the gap first.
            self.stop_state_transfer();
        }
        if self.state_transfer_timeout.fired() {
            self.on_state_transfer_timeout(out);
        }
        // View change: one of its timeouts a tick.
        if self.view_change_timeout.fired() {
            self.on_view_change_timeout(out);
        } else if self.view_change_resend_timeout.fired() {
            self.on_view_change_resend_timeout(out);
        }
        // Recovering.
        if self.recovery_resend_timeout.fired() {
            self.on_recovery_resend_timeout(out);
        }
    }

    fn invariants(&self) {
        assert!(self.commit <= self.op, "commit beyond the log");
        assert!(self.persisted_op <= self.op, "persisted beyond the log");
        if self.config.durable {
            assert!(self.promised_op <= self.persisted_op, "acked or voted for an op not on disk");
        } else {
            assert_eq!(self.persisted_op, self.op, "memory mode: the log is what is durable");
            assert!(self.persist_from.is_none() && self.persists_outstanding.is_empty());
        }
        assert!(self.checkpoint_op <= self.commit, "checkpoint not committed");
        assert_eq!(self.log.len() as u64, self.op - self.checkpoint_op, "log length");
        assert!(self.log.len() as u64 <= self.log_entries_max(), "log over its bound");
        assert!(self.last_normal_view <= self.view);
        if let (Some(first), Some(last)) = (self.log.front(), self.log.back()) {
            assert_eq!(first.op, self.checkpoint_op + 1);
            assert_eq!(last.op, self.op);
        }
        assert!(self.request_queue.len() <= self.config.request_queue_max);
        let pending_max =
            self.config.request_queue_max + self.uncommitted_max() as usize * wire::MAX_BATCH_LEN;
        assert!(self.pending.len() <= pending_max);
        assert!(self.client_table.len() <= self.config.client_table_max);
        assert!(self.prepare_buffer.len() <= self.config.pipeline_max);
        assert!(self.recent_commits.len() <= self.recent_commits_max());
        if self.is_leader() {
            assert!(self.op - self.commit <= self.uncommitted_max(), "pipeline over its bound");
        } else {
            assert!(self.request_queue.is_empty(), "a follower queues no requests");
        }
        if self.status != Status::Normal || self.is_leader() {
            assert!(
                self.kernel_armed.is_none() || self.kernel_disarming,
                "kernel armed off a normal follower"
            );
        }
        assert_eq!(self.kernel_disarming, self.deferred.is_some());
        if self.status == Status::Recovering {
            assert_eq!(self.op, 0);
        }
        if self.joining_view {
            assert!(self.status == Status::Normal && !self.is_leader());
            assert!(self.state_transfer_timeout.ticking(), "catching up without asking");
            assert!(self.commit <= self.catch_up_verified, "executed past the pages installed");
            assert!(self.catch_up_verified <= self.op);
        }
        if self.recovered_without_state {
            assert!(
                self.status != Status::Normal || self.joining_view,
                "recovered without state but claims it"
            );
        }
        if self.repair_pending {
            assert!(self.status == Status::ViewChange && self.leader_of(self.view) == self.config.index);
        }
        if self.paging {
            assert!(self.state_transfer_timeout.ticking(), "paging without asking");
        }
        // Each timeout runs in its status and role only (start_timeouts).
        let leader = self.is_leader();
        assert_eq!(self.heartbeat_timeout.ticking(), leader);
        assert_eq!(self.prepare_timeout.ticking(), leader);
        assert!(self.progress.iter().all(|p| p.timeout.ticking() == leader));
        assert_eq!(self.leader_timeout.ticking(), self.status == Status::Normal && !leader);
        assert_eq!(self.view_change_timeout.ticking(), self.status == Status::ViewChange);
        assert_eq!(self.view_change_resend_timeout.ticking(), self.status == Status::ViewChange);
        assert_eq!(self.recovery_resend_timeout.ticking(), self.status == Status::Recovering);
        if self.state_transfer_timeout.ticking() {
            assert!(self.status == Status::Normal && !leader, "state transfer off a normal follower");
        }
    }
}
