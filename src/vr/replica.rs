//! One VR replica: normal operation, view change, state transfer, recovery
//! and checkpoints (VRR sections 4 and 5), as a pure state machine.
//!
//! Inputs: [`Replica::start`] (once, sends the first Recovery),
//! [`Replica::on_request`], [`Replica::on_message`], [`Replica::on_tick`],
//! [`Replica::on_kernel_disarmed`] and [`Replica::on_kernel_prepares`].
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
//! Kernel handover (contract in `super`): while armed, an input that would
//! change view, status or log position is kept in `deferred` and answered
//! with `Action::KernelDisarm`. Until `on_kernel_disarmed` arrives, further
//! messages and requests are dropped (the network may lose them anyway) and
//! ticks are ignored; the runtime disarms promptly.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::client_table::{checkpoint_digest, decode_checkpoint, CheckpointStream, ClientEntry, ClientTable};
use super::{Action, Config, KernelArm, Status};
use crate::app::{fnv1a, App, FNV_OFFSET};
use crate::wire::{
    self, Commit, DoViewChange, GetState, LogEntry, Message, NewState, NewStateKind, Prepare, PrepareOk,
    Recovery, RecoveryResponse, Reply, Request, SnapshotChunk, SnapshotRequest, StartView, StartViewChange,
    StateBlob,
};

#[cfg(feature = "sim-bugs")]
use super::Bug;

/// An input kept while the kernel is being disarmed.
#[derive(Debug)]
enum Deferred {
    Message {
        from: u8,
        message: Message,
    },
    Tick,
    /// Kernel-acked entries reached Prepares we hold in prepare_buffer:
    /// take the log position back from the kernel to append them.
    Buffered,
}

/// Views, ops and commits a replica accepts from the network are below
/// this (2^62): a cluster needs centuries to get there, and everything the
/// core computes from them (`view + 1`, `op + window`) stays far from
/// overflow. A message carrying a larger one is dropped whole (the kernel
/// programs apply the same bound).
pub const NETWORK_NUMBER_MAX: u64 = 1 << 62;

/// RecoveryResponse status: the sender booted counting the asker's very
/// incarnation in (ELECTRODE_STATUS_BOOTED_WITH_YOU).
const BOOTED_WITH_YOU: u8 = wire::consts::STATUS_BOOTED_WITH_YOU as u8;

/// Chunks one SnapshotRequest asks for (ELECTRODE_SNAPSHOT_WINDOW).
const SNAPSHOT_WINDOW: u64 = wire::consts::SNAPSHOT_WINDOW as u64;
const CHUNK: u64 = wire::SNAPSHOT_CHUNK_LEN as u64;
/// Resends of a SnapshotRequest without progress before giving up on its
/// source (the next GetState may find another).
const SNAPSHOT_STALLS_MAX: u64 = 8;
/// Most log bytes one NewState carries: a page of four chunks. Each page
/// arrives whole or is asked for again, so a lagging follower's progress
/// survives loss: at 10% loss a page of 4 chunks arrives 66% of the time,
/// while a whole log suffix of hundreds of chunks practically never did
/// (followers that fell behind stayed behind). The asker takes the next
/// page at once (on_new_state), one round trip a page.
const NEW_STATE_PAGE_BYTES: usize = 4 * wire::CHUNK_LEN;

/// A snapshot we froze for a replica behind our log, encoded a window at
/// a time as it is pulled. While it is kept, the log is not trimmed above
/// it, so that the puller finds the ops that follow it in our log once it
/// has installed it.
struct SnapshotOut {
    op: u64,
    stream: CheckpointStream,
    idle_ticks: u64,
}

/// A snapshot being pulled, window by window, from the replica that
/// offered it. Chunks land in place; it is installed only complete and
/// with the digest the chunks announced.
struct SnapshotIn {
    from: u8,
    op: u64,
    /// 0 until the first chunk tells.
    total_len: u64,
    /// 0 until a chunk announces it (the source knows it once it has
    /// encoded the whole snapshot).
    digest: u64,
    bytes: Vec<u8>,
    have: Vec<bool>,
    have_count: u64,
    /// First chunk index not received.
    next_missing: u64,
    /// Chunk index up to which windows were requested.
    requested_until: u64,
    stall_ticks: u64,
    stalls: u64,
}

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
    config: Config,
    app: Box<dyn App>,
    nonce: u64,
    started: bool,

    status: Status,
    view: u64,
    last_normal_view: u64,
    /// Log head: the highest op in the log.
    op: u64,
    /// Highest executed op; every op <= commit is committed.
    commit: u64,
    /// Entries checkpoint_op+1 ..= op.
    log: VecDeque<LogEntry>,
    /// Where the log starts: every checkpoint_interval_ops committed ops the
    /// log is trimmed up to commit. No snapshot is stored: the app state is
    /// encoded (at commit) only when a state transfer needs it, so the
    /// cost of normal operation does not grow with the state.
    checkpoint_op: u64,
    client_table: ClientTable,

    // Leader.
    request_queue: VecDeque<Request>,
    /// client_id -> request number queued or prepared and not yet executed.
    pending: HashMap<u64, u64>,
    /// Highest op each replica acknowledged in this view.
    acked: Vec<u64>,
    /// Per follower, the ack after which we last re-sent a Prepare on a
    /// gap-flagged ack (one fast retransmission per gap).
    fast_retransmitted: Vec<Option<u64>>,
    /// Per follower, ticks since its ack last advanced while it lacked ops
    /// we hold: its own retransmission clock. (A clock shared by all
    /// followers restarts whenever commit moves, and at saturation commit
    /// moves on the other followers' acks: a follower behind a lost
    /// Prepare then waited for state transfer, 30 ms, while the leader
    /// depended on the rest alone.)
    follower_stall_ticks: Vec<u64>,
    /// Ticks since the leader last sent to all followers.
    idle_ticks: u64,
    /// Ticks since the uncommitted prepares were (re)sent or commit moved.
    retransmit_ticks: u64,
    /// Smoothed ticks from sending a Prepare to its commit, times 8 (an
    /// EWMA as TCP's srtt): the retransmission timeout follows it.
    commit_ticks_x8: u64,

    // Follower.
    leader_silent_ticks: u64,
    /// Prepares ahead of op+1, waiting for the gap to fill.
    prepare_buffer: BTreeMap<u64, Prepare>,
    /// Highest commit number heard in this view (may exceed op).
    commit_seen: u64,
    /// Ticks since the last GetState; None when no transfer is wanted.
    state_transfer_ticks: Option<u64>,
    state_transfer_attempts: u64,
    /// Whether the outstanding GetState asks for the next page of a log
    /// suffix (on_new_state): its answer is one short NewState, so it is
    /// re-sent after page_timeout_ticks, not resend_interval_ticks.
    paging: bool,
    /// Smoothed ticks from a GetState to its page, times 8 (as commit_ticks_x8).
    page_ticks_x8: u64,
    /// Entered this view by state transfer and our log does not yet reach
    /// the view's StartView prefix: it may miss ops committed before the
    /// view began. Until caught up we neither ack, nor answer GetState, nor
    /// claim last_normal_view == view (a view change would otherwise prefer
    /// our short log and lose committed ops). See `catch_up_target`.
    catching_up: bool,
    /// While catching up: our log up to this op is this view's log (pages
    /// installed, or committed); above it, until it is replaced page by
    /// page, we keep the suffix we held before (from an older view), so
    /// that what we claim in a view change never shrinks: a page must not
    /// drop ops we acked in our last normal view (see `install_page`).
    catch_up_verified: u64,
    /// While catching up: the op our log must reach before we are a member
    /// of the view (the StartView's op, the leader's op at recovery, or
    /// else the head of the first page a caught-up member sent us in this
    /// view: its log held the StartView prefix then). None until known.
    catch_up_target: Option<u64>,
    /// Recovered (memory lost) and not yet given the state: like VR's
    /// recovering replica, we take no part in view changes until a state
    /// transfer completes, since committed ops we held may be gone.
    amnesic: bool,
    /// New leader waiting for committed entries it lacks (view change
    /// repair: a GetState in view-change status).
    repair_pending: bool,
    snapshot_out: Option<SnapshotOut>,
    snapshot_in: Option<SnapshotIn>,

    // View change.
    start_view_change_from: Vec<bool>,
    do_view_change_from: Vec<Option<DoViewChange>>,
    do_view_change_sent: bool,
    view_change_ticks: u64,
    /// This attempt's view-change timeout: grows with each attempt that
    /// fails in a row and has a random part, so competing attempts settle
    /// (as Raft's randomized election timeout).
    view_change_timeout_ticks: u64,
    /// View changes started since we were last normal.
    view_change_attempts: u32,
    /// This view's leader-silence timeout (the configured one plus jitter,
    /// so followers do not all time out on the same tick).
    leader_timeout_ticks: u64,
    resend_ticks: u64,
    /// Seeded by the nonce: the core stays deterministic for a given input.
    rng: u64,

    // Recovery.
    recovery_responses: Vec<Option<RecoveryResponse>>,
    recovering_peers: Vec<bool>,
    /// Ticks spent recovering (the boot rule waits for view 0's leader).
    recovering_ticks: u64,
    /// The nonce of each peer's latest Recovery.
    peer_nonces: Vec<Option<u64>>,
    /// The incarnations (nonces) we counted as booting when we booted.
    booted_with: Vec<Option<u64>>,
    /// Per peer, the most state it told us it holds (answers with view > 0
    /// or op > 0), for this incarnation: any of it forbids booting.
    peer_state: Vec<Option<PeerState>>,
    /// Recovering and blocked (see try_recover): the most advanced holder.
    recovery_blocked: Option<PeerState>,

    // Kernel fast path.
    kernel_armed: Option<KernelArm>,
    kernel_disarming: bool,
    /// Leader: queue requests without preparing until `release_prepares`
    /// (the runtime holds while it reads a burst of datagrams, so that the
    /// burst goes out as one batch).
    holding_prepares: bool,
    deferred: Option<Deferred>,

    /// (op, batch digest) of recently executed ops, for checkers.
    recent_commits: VecDeque<(u64, u64)>,
    /// Why the last change of view or status happened, and the replica
    /// whose message caused it (None: our own timeout).
    transition: (&'static str, Option<u8>),
    /// Lifetime counters.
    pub stats: ReplicaStats,
}

/// What a peer told a recovering replica about the state it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerState {
    pub replica: u8,
    pub view: u64,
    pub op: u64,
    pub commit: u64,
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
    /// chosen log's head (see start_view_as_leader): 0 in a correct cluster.
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
        let client_table = ClientTable::default();
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
            request_queue: VecDeque::new(),
            pending: HashMap::new(),
            acked: vec![0; n],
            fast_retransmitted: vec![None; n],
            follower_stall_ticks: vec![0; n],
            idle_ticks: 0,
            retransmit_ticks: 0,
            commit_ticks_x8: 0,
            leader_silent_ticks: 0,
            prepare_buffer: BTreeMap::new(),
            commit_seen: 0,
            state_transfer_ticks: None,
            state_transfer_attempts: 0,
            paging: false,
            page_ticks_x8: 0,
            catching_up: false,
            catch_up_verified: 0,
            catch_up_target: None,
            amnesic: false,
            repair_pending: false,
            snapshot_out: None,
            snapshot_in: None,
            start_view_change_from: vec![false; n],
            do_view_change_from: vec![None; n],
            do_view_change_sent: false,
            view_change_ticks: 0,
            view_change_timeout_ticks: config.view_change_timeout_ticks,
            view_change_attempts: 0,
            leader_timeout_ticks: config.view_change_timeout_ticks,
            resend_ticks: 0,
            rng: nonce ^ 0x9e37_79b9_7f4a_7c15,
            recovery_responses: vec![None; n],
            recovering_peers: vec![false; n],
            recovering_ticks: 0,
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

    // -----------------------------------------------------------------
    // Accessors
    // -----------------------------------------------------------------

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
        self.amnesic || self.status == Status::Recovering
    }
    /// Normal but still fetching state (after recovery or on joining a view
    /// that formed without us): not yet a full member.
    pub fn catching_up(&self) -> bool {
        self.catching_up || self.amnesic
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

    /// Most uncommitted ops a log may hold: the leader prepares only while
    /// fewer than pipeline_max are uncommitted, and each Prepare carries a
    /// commit at most pipeline_max behind it; twice that leaves room for
    /// commits a follower has not heard yet.
    fn uncommitted_max(&self) -> u64 {
        2 * self.config.pipeline_max as u64
    }

    /// Most entries the log holds (checkpoints trim it).
    fn log_entries_max(&self) -> u64 {
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

    fn leader_of(&self, view: u64) -> u8 {
        (view % u64::from(self.config.replica_count)) as u8
    }

    fn entry(&self, op: u64) -> Option<&LogEntry> {
        if op <= self.checkpoint_op || op > self.op {
            return None;
        }
        self.log.get((op - self.checkpoint_op - 1) as usize)
    }

    fn f(&self) -> usize {
        self.config.f()
    }

    /// xorshift64*: deterministic per nonce, no global randomness.
    fn random_below(&mut self, n: u64) -> u64 {
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

    /// A fresh leader-silence timeout: the configured one plus up to a
    /// quarter of it at random.
    fn reset_leader_timeout(&mut self) {
        let base = self.config.view_change_timeout_ticks;
        self.leader_timeout_ticks = base + self.random_below(base / 4 + 1);
    }

    /// The next view-change attempt's timeout: doubles with each attempt in
    /// a row (up to 8x) plus up to half the base at random, so that two
    /// replicas escalating in lockstep drift apart and one attempt finishes.
    fn next_view_change_timeout(&mut self) {
        let base = self.config.view_change_timeout_ticks;
        let attempts = self.view_change_attempts.min(3);
        self.view_change_attempts = self.view_change_attempts.saturating_add(1);
        self.view_change_timeout_ticks = (base << attempts) + self.random_below(base / 2 + 1);
    }

    // -----------------------------------------------------------------
    // Inputs
    // -----------------------------------------------------------------

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
            if self.status == Status::Normal && !self.catching_up {
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

    /// Appends the held Prepares that now continue the log (until one is
    /// refused) and forgets those the log has passed.
    fn append_held(&mut self) {
        while let Some(next) = self.prepare_buffer.remove(&(self.op + 1)) {
            if !self.accept_prepare(next) {
                break;
            }
        }
        self.prepare_buffer.retain(|op, _| *op > self.op);
    }

    /// Appends the held Prepares that now continue the log, and acks.
    fn accept_buffered(&mut self, out: &mut Vec<Action>) {
        let before = self.op;
        self.append_held();
        if self.op > before {
            // Still holding Prepares past another gap: ask for it too (as
            // on_prepare does). Without the flag the leader re-sent the
            // second missing op only when its re-send clock ran out.
            let gap = !self.prepare_buffer.is_empty();
            self.send_ack(gap, out);
        }
        self.execute_through(self.commit_seen, false, out);
    }

    fn append_kernel_prepares(&mut self, arm: KernelArm, acked: Vec<Prepare>) {
        if !acked.is_empty() {
            // The kernel took these Prepares from the leader of our view on
            // our behalf: we heard from the leader.
            self.leader_silent_ticks = 0;
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

    fn disarm(&mut self, deferred: Deferred, out: &mut Vec<Action>) {
        assert!(self.kernel_armed.is_some());
        assert!(self.deferred.is_none());
        out.push(Action::KernelDisarm);
        self.kernel_disarming = true;
        self.deferred = Some(deferred);
    }

    /// Whether handling `message` (as an armed normal follower) could change
    /// view, status or log position.
    fn message_needs_disarm(&self, message: &Message) -> bool {
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
    fn tick_needs_disarm(&self) -> bool {
        self.leader_silent_ticks + 1 >= self.leader_timeout_ticks
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
    fn finish(&mut self, start: usize, out: &mut Vec<Action>) {
        if self.config.kernel_fast_reply
            && self.kernel_armed.is_none()
            && self.status == Status::Normal
            && !self.is_leader()
            && !self.catching_up
            && self.prepare_buffer.is_empty()
        {
            let arm = KernelArm { view: self.view, leader: self.leader_of(self.view), next_op: self.op + 1 };
            self.kernel_armed = Some(arm);
            out.push(Action::KernelArm(arm));
        }
        assert!(out.len() - start <= self.actions_max(), "too many actions in one call");
        self.invariants();
    }

    fn dispatch(&mut self, from: u8, message: Message, out: &mut Vec<Action>) {
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

    // -----------------------------------------------------------------
    // State changes (the only places that change view, status and log)
    // -----------------------------------------------------------------

    fn set_status(&mut self, to: Status) {
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
    }

    fn set_view(&mut self, view: u64) {
        assert!(view >= self.view, "view went back");
        assert!(self.kernel_armed.is_none());
        if view != self.view {
            self.view = view;
            self.view_reset();
        }
    }

    /// Per-view state starts over.
    fn view_reset(&mut self) {
        self.acked.iter_mut().for_each(|a| *a = 0);
        self.fast_retransmitted.iter_mut().for_each(|a| *a = None);
        self.follower_stall_ticks.iter_mut().for_each(|t| *t = 0);
        self.start_view_change_from.iter_mut().for_each(|v| *v = false);
        self.do_view_change_from.iter_mut().for_each(|d| *d = None);
        self.do_view_change_sent = false;
        self.prepare_buffer.clear();
        self.request_queue.clear();
        self.pending.clear();
        self.commit_seen = self.commit;
        self.state_transfer_ticks = None;
        self.paging = false;
        self.catching_up = false;
        self.repair_pending = false;
        self.idle_ticks = 0;
        self.retransmit_ticks = 0;
        self.leader_silent_ticks = 0;
        self.view_change_ticks = 0;
        self.resend_ticks = 0;
        self.reset_leader_timeout();
    }

    /// Appends op+1, from a Prepare or as the leader.
    fn append(&mut self, entry: LogEntry) {
        assert!(self.kernel_armed.is_none(), "core appended while the kernel acks");
        self.push_entry(entry);
    }

    fn push_entry(&mut self, entry: LogEntry) {
        assert_eq!(entry.op, self.op + 1);
        assert!(entry.op > self.commit);
        assert!(!entry.batch.is_empty());
        self.log.push_back(entry);
        self.op += 1;
    }

    /// Drops uncommitted entries above `op`.
    fn truncate_log(&mut self, op: u64) {
        assert!(self.kernel_armed.is_none());
        assert!(op >= self.commit, "truncating committed entries");
        if op < self.op {
            self.log.truncate((op - self.checkpoint_op) as usize);
            self.op = op;
            self.prepare_buffer.clear();
        }
    }

    /// Executes committed ops up to `target` (at most op), in order,
    /// updating the client table; the leader replies to clients.
    fn execute_through(&mut self, target: u64, reply: bool, out: &mut Vec<Action>) {
        // Catching up, only the pages installed are this view's log.
        let head = if self.catching_up { self.catch_up_verified } else { self.op };
        let target = target.min(head);
        while self.commit < target {
            let op = self.commit + 1;
            let index = (op - self.checkpoint_op - 1) as usize;
            let entry = &self.log[index];
            let digest = batch_digest(&entry.batch);
            for request in &entry.batch {
                let known = self.client_table.get(request.client_id);
                if known.is_none() && request.request_number > 1 && self.sessions_may_be_evicted() {
                    // Evicted between the leader's check and this op (a
                    // duplicate logged across a view change, or fresh ids
                    // earlier in the pipeline): it may have executed before,
                    // so it never executes here. Deterministic: the table is
                    // the same on every replica at this op.
                    if self.pending.get(&request.client_id).is_some_and(|n| *n <= request.request_number) {
                        self.pending.remove(&request.client_id);
                    }
                    self.stats.sessions_evicted_replies += 1;
                    if reply {
                        out.push(self.session_evicted_reply(request));
                    }
                    continue;
                }
                let cached = match known {
                    Some(e) if e.request_number > request.request_number => continue,
                    // A duplicate that got into the log twice (a client
                    // retransmitted across a view change): not executed
                    // again, answered from the table.
                    Some(e) if e.request_number == request.request_number => Some(e.result.clone()),
                    Some(_) | None => None,
                };
                let result = match cached {
                    Some(result) => result,
                    None => {
                        let result = self.app.execute(&request.op);
                        let entry = ClientEntry {
                            request_number: request.request_number,
                            op,
                            result: result.clone(),
                        };
                        self.client_table.insert(request.client_id, entry, self.config.client_table_max);
                        result
                    }
                };
                if self.pending.get(&request.client_id).is_some_and(|n| *n <= request.request_number) {
                    self.pending.remove(&request.client_id);
                }
                if reply {
                    out.push(self.reply_to(request, result));
                }
            }
            self.commit = op;
            self.recent_commits.push_back((op, digest));
            while self.recent_commits.len() > self.recent_commits_max() {
                self.recent_commits.pop_front();
            }
            if op % self.config.checkpoint_interval_ops == 0 {
                self.trim_log();
            }
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
    fn trim_log(&mut self) {
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
    fn state_suffix(&self) -> StateBlob {
        let from = self.checkpoint_op.max(self.commit.saturating_sub(self.view_change_window()));
        StateBlob {
            checkpoint_op: from,
            snapshot: Vec::new(),
            entries: self.log.iter().skip((from - self.checkpoint_op) as usize).cloned().collect(),
        }
    }

    /// Committed entries a DoViewChange or StartView carries below commit.
    fn view_change_window(&self) -> u64 {
        self.uncommitted_max()
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

    /// Whether a blob from the network is well formed for log head `op`.
    fn state_valid(&self, state: &StateBlob, op: u64, commit: u64) -> bool {
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
    fn install(&mut self, state: &StateBlob, op: u64, commit: u64) -> bool {
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
            self.checkpoint_op = state.checkpoint_op;
            self.commit = state.checkpoint_op;
            self.log = state.entries.iter().cloned().collect();
            self.op = op;
            self.recent_commits.clear();
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

    // -----------------------------------------------------------------
    // Normal operation
    // -----------------------------------------------------------------

    fn handle_request(&mut self, request: Request, out: &mut Vec<Action>) {
        if !self.is_leader() || request.op.len() > wire::MAX_OP_LEN {
            self.stats.dropped_inputs += 1;
            return;
        }
        if request.request_number == 0 || request.request_number == u64::MAX {
            // Clients number requests from 1 and never get near u64::MAX: a
            // forged u64::MAX would make every later request of that client
            // look older than what it already got.
            self.stats.dropped_inputs += 1;
            return;
        }
        if let Some(entry) = self.client_table.get(request.client_id) {
            if request.request_number < entry.request_number {
                return; // Older than what the client already got.
            }
            if request.request_number == entry.request_number {
                // The reply was lost: send it again.
                let reply = self.reply_to(&request, entry.result.clone());
                out.push(reply);
                return;
            }
        }
        if self.pending.get(&request.client_id).is_some_and(|n| *n >= request.request_number) {
            return; // In progress (or older): its reply will come.
        }
        if request.request_number > 1
            && self.client_table.get(request.client_id).is_none()
            && self.sessions_may_be_evicted()
        {
            // A client has one request outstanding and numbers them from 1,
            // so request n > 1 follows n - 1, which committed (the client
            // got its reply) and so is in our log. If it is not in the
            // uncommitted suffix (a new leader executes that only once it
            // commits), we executed it and the table no longer holds it: the
            // session was evicted (or never existed). This may be a
            // retransmission of a request that executed before the eviction:
            // never prepare it, tell the client.
            if self.uncommitted_holds_client(request.client_id) {
                self.stats.dropped_inputs += 1;
                return; // Its session is not executed yet here: retry later.
            }
            self.stats.sessions_evicted_replies += 1;
            out.push(self.session_evicted_reply(&request));
            return;
        }
        if self.request_queue.len() >= self.config.request_queue_max {
            self.stats.dropped_inputs += 1;
            return; // Overloaded: the client retries.
        }
        self.pending.insert(request.client_id, request.request_number);
        self.request_queue.push_back(request);
        // A hold batches only behind ops in flight: with nothing in flight
        // the followers are idle, and waiting would only add latency.
        if !self.holding_prepares || self.op == self.commit {
            self.send_prepares(out);
        }
    }

    /// From now on, requests queue while ops are in flight: the caller is
    /// about to hand over a burst of inputs and wants them prepared
    /// together. Must be followed by [`Replica::release_prepares`].
    pub fn hold_prepares(&mut self) {
        self.holding_prepares = true;
    }

    /// Ends a hold: packs the queued requests into Prepares (batches, as
    /// far as the pipeline allows).
    pub fn release_prepares(&mut self, out: &mut Vec<Action>) {
        let start = out.len();
        self.holding_prepares = false;
        if self.is_leader() && self.status == Status::Normal && !self.kernel_disarming {
            self.send_prepares(out);
        }
        self.finish(start, out);
    }

    /// Whether a prepared, not yet executed op holds a request of the client
    /// (at most pipeline_max entries of at most batch_max requests).
    fn uncommitted_holds_client(&self, client_id: u64) -> bool {
        let executed = self.commit.saturating_sub(self.checkpoint_op) as usize;
        self.log.iter().skip(executed).any(|entry| entry.batch.iter().any(|r| r.client_id == client_id))
    }

    /// Whether the client table can have evicted anyone: entries leave it
    /// only by eviction and only when it is full, so a table that is not
    /// full never evicted, and an unknown client there is a new one (or
    /// one whose first request our state does not show yet), never an
    /// evicted session. The same on every replica at the same op.
    fn sessions_may_be_evicted(&self) -> bool {
        self.client_table.len() >= self.config.client_table_max
    }

    /// The "session evicted" reply to `request`: not executed now.
    fn session_evicted_reply(&self, request: &Request) -> Action {
        Action::Reply {
            client_id: request.client_id,
            reply: Reply {
                view: self.view,
                client_id: request.client_id,
                request_number: request.request_number,
                result: Vec::new(),
                session_evicted: true,
            },
        }
    }

    /// The reply to `request` carrying `result`, in our view.
    fn reply_to(&self, request: &Request, result: Vec<u8>) -> Action {
        Action::Reply {
            client_id: request.client_id,
            reply: Reply {
                view: self.view,
                client_id: request.client_id,
                request_number: request.request_number,
                result,
                session_evicted: false,
            },
        }
    }

    /// Leader: packs queued requests into Prepares while the pipeline has room.
    fn send_prepares(&mut self, out: &mut Vec<Action>) {
        assert!(self.is_leader());
        while !self.request_queue.is_empty() && self.op - self.commit < self.config.pipeline_max as u64 {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(next) = self.request_queue.front() {
                if batch.len() >= self.config.batch_max
                    || bytes + next.encoded_len() > wire::MAX_PREPARE_BATCH_LEN
                {
                    break;
                }
                bytes += next.encoded_len();
                batch.extend(self.request_queue.pop_front());
            }
            assert!(!batch.is_empty(), "one request always fits a Prepare");
            self.stats.requests_batched += batch.len() as u64;
            let op = self.op + 1;
            self.append(LogEntry { op, view: self.view, batch: batch.clone() });
            self.send_prepare(None, Prepare { view: self.view, op, commit: self.commit, batch }, out);
            if self.op - self.commit == 1 {
                // First uncommitted op: its retransmission clock starts now.
                self.retransmit_ticks = 0;
            }
        }
        // A cluster of one commits alone.
        self.commit_quorum(out);
    }

    /// To one follower (retransmission) or all.
    fn send_prepare(&mut self, to: Option<u8>, prepare: Prepare, out: &mut Vec<Action>) {
        self.stats.prepares_sent += 1;
        match to {
            Some(to) => out.push(Action::Send { to, message: Message::Prepare(prepare) }),
            None => {
                self.idle_ticks = 0;
                out.push(Action::SendAll { message: Message::Prepare(prepare) });
            }
        }
    }

    /// What a Prepare and a Commit from the leader have in common: drop
    /// stale or foreign ones, catch up by state transfer on a newer view,
    /// note that the leader is alive and its commit. True when the message
    /// is for our view and we are a follower not waiting for NewState (see
    /// catching_up: our suffix may be from an older view until then).
    fn hear_from_leader(&mut self, from: u8, view: u64, commit: u64, out: &mut Vec<Action>) -> bool {
        if self.status == Status::Recovering || view < self.view || from != self.leader_of(view) {
            return false;
        }
        if view > self.view || self.status == Status::ViewChange {
            // The view formed without us: catch up by state transfer (to
            // the head of the first page, as we missed the StartView).
            self.start_state_transfer(view, None, out);
            self.commit_seen = self.commit_seen.max(commit);
            return false;
        }
        if self.is_leader() {
            return false;
        }
        self.leader_silent_ticks = 0;
        self.commit_seen = self.commit_seen.max(commit);
        !self.catching_up
    }

    fn on_prepare(&mut self, from: u8, m: Prepare, out: &mut Vec<Action>) {
        if !self.hear_from_leader(from, m.view, m.commit, out) {
            return;
        }
        if m.op <= self.op {
            // Duplicate or retransmission: our ack may have been lost.
            // (Flagged if we still hold Prepares past a gap: an unflagged
            // ack never asks the leader for anything.)
            let gap = !self.prepare_buffer.is_empty();
            self.send_ack(gap, out);
        } else if m.op == self.op + 1 {
            if self.accept_prepare(m) {
                self.append_held();
                // Still holding Prepares past another gap: ask for it too.
                let gap = !self.prepare_buffer.is_empty();
                self.send_ack(gap, out);
            }
        } else if m.op - self.op <= self.config.pipeline_max as u64 {
            // A gap: keep it until the missing ones are retransmitted.
            let first_past_gap = self.prepare_buffer.is_empty();
            if self.prepare_buffer.len() < self.config.pipeline_max || self.prepare_buffer.contains_key(&m.op)
            {
                self.prepare_buffer.insert(m.op, m);
            }
            if first_past_gap {
                // Tell the leader at once (an ack of what we hold, flagged
                // as a gap): it re-sends the missing op without waiting for
                // its retransmission timeout, so a lost Prepare costs a
                // round trip, not prepare_retransmit_ticks.
                self.send_ack(true, out);
            }
        }
        self.execute_through(self.commit_seen, false, out);
        self.want_state_if_behind(out);
    }

    /// Appends a Prepare at op+1 if it is well formed and within bounds.
    fn accept_prepare(&mut self, m: Prepare) -> bool {
        let valid = m.op == self.op + 1
            && !m.batch.is_empty()
            && m.batch.len() <= wire::MAX_BATCH_LEN
            && m.batch.iter().map(Request::encoded_len).sum::<usize>() <= wire::MAX_PREPARE_BATCH_LEN
            && m.batch.iter().all(|r| r.op.len() <= wire::MAX_OP_LEN);
        let commit_after = self.commit.max(self.commit_seen.min(m.op));
        if !valid || m.op - commit_after > self.uncommitted_max() {
            return false;
        }
        self.append(LogEntry { op: m.op, view: m.view, batch: m.batch });
        true
    }

    fn send_prepare_ok(&mut self, out: &mut Vec<Action>) {
        self.send_ack(false, out);
    }

    /// Acks our log head; `gap`: we hold Prepares past op + 1 and ask for it.
    fn send_ack(&mut self, gap: bool, out: &mut Vec<Action>) {
        let to = self.leader_of(self.view);
        let message =
            Message::PrepareOk(PrepareOk { view: self.view, op: self.op, replica: self.config.index, gap });
        out.push(Action::Send { to, message });
    }

    fn on_prepare_ok(&mut self, from: u8, m: PrepareOk, out: &mut Vec<Action>) {
        if !self.is_leader() || m.view != self.view || m.replica != from {
            return;
        }
        // An ack for op n acknowledges every op <= n (logs are prefixes of ours).
        let op = m.op.min(self.op);
        let acked = &mut self.acked[from as usize];
        if op > *acked {
            self.follower_stall_ticks[from as usize] = 0;
        }
        *acked = (*acked).max(op);
        // Only a flagged ack asks. A repeated unflagged ack is not a sign
        // of a gap here (followers flag every ack while they hold Prepares
        // past one): it answers our own re-send of an op the follower got
        // meanwhile, and taking it for a gap re-sent the next op, whose
        // answer repeated again, one Prepare per ack for as long as a
        // pruned follower trailed the quorum.
        let asked = m.gap && op < self.op;
        if asked && self.fast_retransmitted[from as usize] != Some(op) {
            // The follower holds Prepares past a gap at op + 1: re-send it
            // now (once per gap until its retransmission clock runs out),
            // as TCP's fast retransmit.
            self.fast_retransmitted[from as usize] = Some(op);
            if let Some(entry) = self.entry(op + 1) {
                let prepare =
                    Prepare { view: self.view, op: op + 1, commit: self.commit, batch: entry.batch.clone() };
                self.send_prepare(Some(from), prepare, out);
            }
        }
        self.commit_quorum(out);
    }

    /// Leader: re-send uncommitted Prepares after twice the smoothed commit
    /// time plus two ticks, at most prepare_retransmit_ticks: a few ms on a
    /// quiet cluster, where the fixed timeout is a worst case.
    fn prepare_timeout_ticks(&self) -> u64 {
        (2 * self.commit_ticks_x8 / 8 + 2).min(self.config.prepare_retransmit_ticks)
    }

    /// Leader: commits the highest op that f followers (f+1 with us) hold.
    fn commit_quorum(&mut self, out: &mut Vec<Action>) {
        if !self.is_leader() {
            return;
        }
        #[allow(unused_mut)]
        let mut acks_needed = self.f();
        #[cfg(feature = "sim-bugs")]
        if self.config.bug == Some(Bug::CommitOneAckShort) {
            acks_needed = acks_needed.saturating_sub(1);
        }
        let mut followers: Vec<u64> = (0..self.config.replica_count)
            .filter(|r| *r != self.config.index)
            .map(|r| self.acked[r as usize])
            .collect();
        followers.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_op = if acks_needed == 0 { self.op } else { followers[acks_needed - 1] };
        if quorum_op > self.commit {
            // retransmit_ticks counts from the oldest uncommitted send.
            self.commit_ticks_x8 = self.commit_ticks_x8 - self.commit_ticks_x8 / 8 + self.retransmit_ticks;
            self.execute_through(quorum_op, true, out);
            self.retransmit_ticks = 0;
            self.send_prepares(out);
        }
    }

    fn send_commit(&mut self, out: &mut Vec<Action>) {
        self.idle_ticks = 0;
        out.push(Action::SendAll {
            message: Message::Commit(Commit { view: self.view, commit: self.commit }),
        });
    }

    fn on_commit(&mut self, from: u8, m: Commit, out: &mut Vec<Action>) {
        if !self.hear_from_leader(from, m.view, m.commit, out) {
            return;
        }
        self.execute_through(self.commit_seen, false, out);
        self.want_state_if_behind(out);
    }

    // -----------------------------------------------------------------
    // Timeouts
    // -----------------------------------------------------------------

    fn tick(&mut self, out: &mut Vec<Action>) {
        if self.status != Status::Recovering {
            self.snapshot_tick(out);
        }
        match self.status {
            Status::Normal if self.is_leader() => {
                self.idle_ticks += 1;
                self.retransmit_ticks += 1;
                let timeout = self.prepare_timeout_ticks();
                if self.op > self.commit && self.retransmit_ticks >= timeout {
                    // (The commit-time EWMA samples at most one timeout.)
                    self.retransmit_ticks = 0;
                }
                self.on_follower_ticks(timeout, out);
                if self.idle_ticks >= self.config.heartbeat_interval_ticks {
                    self.send_commit(out);
                }
            }
            Status::Normal => {
                self.leader_silent_ticks += 1;
                // Without our state we cannot help a view change: we only
                // follow the views the others start (see send_do_view_change).
                if self.leader_silent_ticks >= self.leader_timeout_ticks && !self.amnesic {
                    let leader = Some(self.leader_of(self.view));
                    self.start_view_change(self.view + 1, "timeout: nothing from the leader", leader, out);
                    return;
                }
                if !self.catching_up && self.commit_seen <= self.op {
                    // Retransmitted Prepares filled the gap first.
                    self.state_transfer_ticks = None;
                    self.paging = false;
                }
                let timeout = self.state_transfer_timeout_ticks();
                if let Some(ticks) = self.state_transfer_ticks.as_mut().filter(|_| self.snapshot_in.is_none())
                {
                    // (Paused while a snapshot is being pulled.)
                    *ticks += 1;
                    if *ticks >= timeout {
                        self.send_get_state(out);
                    }
                }
            }
            Status::ViewChange => {
                self.view_change_ticks += 1;
                self.resend_ticks += 1;
                if self.view_change_ticks >= self.view_change_timeout_ticks && !self.amnesic {
                    // The new view did not form (its leader may be down).
                    let leader = Some(self.leader_of(self.view));
                    self.start_view_change(
                        self.view + 1,
                        "timeout: the view change did not complete",
                        leader,
                        out,
                    );
                } else if self.view_change_ticks >= self.view_change_timeout_ticks {
                    // Amnesic, so we may not start a higher view; but we
                    // followed one whose starter may have crashed and
                    // recovered into an older view, leaving us alone in it
                    // (the others never heard of it). Announce the view
                    // change we are in: the others join it (and escalate
                    // past it if it cannot form), or, already past it, lead
                    // us into theirs. Without this we waited forever.
                    self.view_change_ticks = 0;
                    let message = Message::StartViewChange(StartViewChange {
                        view: self.view,
                        replica: self.config.index,
                    });
                    out.push(Action::SendAll { message });
                } else if self.resend_ticks >= self.config.resend_interval_ticks {
                    self.resend_ticks = 0;
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
            }
            Status::Recovering => {
                self.recovering_ticks += 1;
                self.resend_ticks += 1;
                if self.resend_ticks >= self.config.resend_interval_ticks {
                    self.send_recovery(out);
                }
            }
        }
    }

    /// Leader, every tick: a follower whose ack has not moved for `timeout`
    /// ticks while it lacks ops we hold gets them again (and may have a
    /// fast retransmission again).
    fn on_follower_ticks(&mut self, timeout: u64, out: &mut Vec<Action>) {
        for replica in 0..self.config.replica_count {
            if replica == self.config.index {
                continue;
            }
            let r = replica as usize;
            if self.acked[r] >= self.op {
                self.follower_stall_ticks[r] = 0;
                continue;
            }
            self.follower_stall_ticks[r] += 1;
            if self.follower_stall_ticks[r] < timeout {
                continue;
            }
            self.follower_stall_ticks[r] = 0;
            self.fast_retransmitted[r] = None;
            // The first op it lacks only: a follower behind a lost Prepare
            // holds the ones after it and acks them all once the gap fills
            // (the next gap, if any, gets the next timeout or a fast
            // retransmit on its repeated ack), and a follower that is only
            // slow (descheduled) costs one datagram, not a window. One too
            // far behind commit catches up by state transfer.
            let acked = self.acked[r];
            let near = self.commit - acked.min(self.commit) <= self.config.pipeline_max as u64;
            let op = if near { acked + 1 } else { self.commit + 1 };
            let Some(entry) = self.entry(op).filter(|_| op <= self.op) else { continue };
            let prepare = Prepare { view: self.view, op, commit: self.commit, batch: entry.batch.clone() };
            self.send_prepare(Some(replica), prepare, out);
        }
    }

    // -----------------------------------------------------------------
    // View change (VRR 4.2)
    // -----------------------------------------------------------------

    fn start_view_change(&mut self, view: u64, why: &'static str, from: Option<u8>, out: &mut Vec<Action>) {
        assert!(view > self.view);
        self.transition = (why, from);
        if self.status == Status::Normal && !self.catching_up {
            self.last_normal_view = self.view;
        }
        self.set_view(view);
        self.set_status(Status::ViewChange);
        self.next_view_change_timeout();
        self.stats.view_changes_started += 1;
        self.start_view_change_from[self.config.index as usize] = !self.amnesic;
        self.send_start_view_change(out);
        self.check_start_view_change_quorum(out);
    }

    fn send_start_view_change(&mut self, out: &mut Vec<Action>) {
        if self.amnesic {
            return; // See send_do_view_change.
        }
        let message =
            Message::StartViewChange(StartViewChange { view: self.view, replica: self.config.index });
        out.push(Action::SendAll { message });
    }

    fn on_start_view_change(&mut self, from: u8, m: StartViewChange, out: &mut Vec<Action>) {
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

    fn send_do_view_change(&mut self, out: &mut Vec<Action>) {
        if self.amnesic {
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

    fn on_do_view_change(&mut self, from: u8, m: DoViewChange, out: &mut Vec<Action>) {
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
    fn try_start_view(&mut self, out: &mut Vec<Action>) {
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
        self.amnesic = false;
        self.set_status(Status::Normal);
        self.last_normal_view = self.view;
        self.stats.views_started += 1;
        self.acked.iter_mut().for_each(|a| *a = 0);
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
        self.idle_ticks = 0;
        self.retransmit_ticks = 0;
        self.commit_quorum(out);
    }

    fn on_start_view(&mut self, from: u8, m: StartView, out: &mut Vec<Action>) {
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
        if self.commit < m.state.checkpoint_op || self.amnesic {
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
        self.leader_silent_ticks = 0;
        if self.op > self.commit {
            // Uncommitted ops need our ack in the new view.
            self.send_prepare_ok(out);
        }
    }

    // -----------------------------------------------------------------
    // State transfer (VRR 5.2)
    // -----------------------------------------------------------------

    /// Moves to `view` (normal status, catching up) and asks for the state
    /// after our commit; the NewState replaces every op above commit, since
    /// uncommitted ops of an older view may be wrong.
    fn start_state_transfer(&mut self, view: u64, target: Option<u64>, out: &mut Vec<Action>) {
        assert!(view >= self.view);
        self.transition = ("joined a view that formed without us: catching up", Some(self.leader_of(view)));
        // VRR truncates to commit here. We keep the old suffix (and the old
        // last_normal_view) until NewState replaces everything above commit:
        // dropping ops we acked while still claiming the old view would let
        // a later view change lose them (sim seed 3473).
        let caught_up_normal = self.status == Status::Normal && !self.catching_up;
        let last_normal_view = if caught_up_normal { self.view } else { self.last_normal_view };
        self.set_view(view);
        self.set_status(Status::Normal);
        // Our log may lack ops committed before `view`: keep the older
        // last_normal_view until NewState catches us up.
        self.last_normal_view = last_normal_view;
        self.catching_up = true;
        // Committed ops are the same in every view.
        self.catch_up_verified = self.commit;
        self.catch_up_target = target;
        self.leader_silent_ticks = 0;
        self.state_transfer_attempts = 0;
        self.send_get_state(out);
    }

    /// A follower that heard of commits beyond its log (the leader will not
    /// retransmit committed ops) asks for state, at most once per resend
    /// interval.
    fn want_state_if_behind(&mut self, out: &mut Vec<Action>) {
        if self.commit_seen > self.op && self.state_transfer_ticks.is_none() {
            self.state_transfer_attempts = 0;
            let small_gap = !self.catching_up
                && !self.prepare_buffer.is_empty()
                && self.commit_seen - self.op <= self.config.pipeline_max as u64;
            if small_gap {
                // We hold Prepares past a gap and asked the leader for the
                // missing one (gap ack): its re-send is one datagram, while
                // a NewState of the same ops is several chunks that must all
                // arrive (at 10% loss most attempts failed and waited out a
                // resend interval). State transfer only if the gap is still
                // open after resend_interval_ticks.
                self.state_transfer_ticks = Some(0);
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
    fn state_transfer_timeout_ticks(&self) -> u64 {
        if self.paging {
            (2 * self.page_ticks_x8 / 8 + 2).min(self.config.resend_interval_ticks)
        } else {
            self.config.resend_interval_ticks
        }
    }

    fn send_get_state_to(&mut self, to: u8, out: &mut Vec<Action>) {
        self.stats.state_transfers += 1;
        self.state_transfer_ticks = Some(0);
        // Catching up, our suffix above the pages installed may be from an
        // older view: ask for what follows them.
        let op = if self.catching_up { self.catch_up_verified } else { self.op };
        let message = Message::GetState(GetState { view: self.view, op, replica: self.config.index });
        out.push(Action::Send { to, message });
    }

    fn send_get_state(&mut self, out: &mut Vec<Action>) {
        // A replica that missed a few ops asks the leader first, which
        // surely has them; one catching up (likely to need a snapshot, whose
        // encoding takes a while) asks a follower first, so the leader's
        // heartbeats never wait for it. Retries rotate through the others.
        let n = u64::from(self.config.replica_count);
        let first = if self.catching_up { self.view + 1 } else { self.view };
        let mut to = ((first + self.state_transfer_attempts) % n) as u8;
        if to == self.config.index {
            to = ((u64::from(to) + 1) % n) as u8;
        }
        self.state_transfer_attempts += 1;
        self.send_get_state_to(to, out);
    }

    fn on_get_state(&mut self, from: u8, m: GetState, out: &mut Vec<Action>) {
        if self.status == Status::ViewChange && m.view == self.view && from == self.leader_of(m.view) {
            self.answer_repair(from, m, out);
            return;
        }
        if self.status != Status::Normal || m.view != self.view || m.replica != from || m.op > self.op {
            return;
        }
        if self.catching_up {
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

    fn on_new_state(&mut self, from: u8, m: NewState, out: &mut Vec<Action>) {
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
        if self.state_transfer_ticks.is_none() || m.kind == NewStateKind::Repair || m.head < m.op {
            return; // Not asked for, not for us, or malformed.
        }
        if m.kind == NewStateKind::SnapshotOffer {
            if self.snapshot_offer(&m) {
                self.start_snapshot_pull(from, m.op, out);
            }
            return;
        }
        let page_ticks = self.state_transfer_ticks.unwrap_or(0);
        if self.catching_up {
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
        self.paging = false;
        self.state_transfer_ticks = None;
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
        self.paging = false;
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
                self.paging = true;
            }
            return;
        }
        // Our log is this view's log up to the target: drop the older
        // suffix above it, and claim the view.
        self.truncate_log(m.op);
        self.catching_up = false;
        self.catch_up_target = None;
        self.amnesic = false;
        self.last_normal_view = self.view;
        self.state_transfer_ticks = None;
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
            self.paging = true;
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

    // -----------------------------------------------------------------
    // Snapshot streaming (state transfer beyond the log)
    // -----------------------------------------------------------------

    /// A NewState that carries no state but offers snapshot `op` (our log
    /// cannot reach it otherwise).
    fn snapshot_offer(&self, m: &NewState) -> bool {
        m.kind == NewStateKind::SnapshotOffer
            && m.state.snapshot.is_empty()
            && m.state.entries.is_empty()
            && m.state.checkpoint_op == m.op
            && m.commit == m.op
            && m.op > self.commit
    }

    /// Answers a replica behind our log: freezes our state at commit (or
    /// reuses the snapshot being pulled) and offers it; the asker pulls it,
    /// and each window it asks for is encoded then, so that serving a GiB
    /// costs this replica's loop a window at a time, never the whole state
    /// at once.
    fn offer_snapshot(&mut self, to: u8, out: &mut Vec<Action>) {
        // Reuse the snapshot being pulled while our log still follows it.
        if self.snapshot_out.as_ref().is_some_and(|s| s.op < self.checkpoint_op) {
            self.snapshot_out = None;
        }
        if self.snapshot_out.is_none() {
            let Some(stream) = CheckpointStream::new(self.app.as_ref(), &self.client_table) else {
                return; // No memory for it: another replica may answer.
            };
            self.snapshot_out = Some(SnapshotOut { op: self.commit, stream, idle_ticks: 0 });
        }
        let op = self.snapshot_out.as_ref().map_or(self.commit, |s| s.op);
        let state = StateBlob { checkpoint_op: op, snapshot: Vec::new(), entries: Vec::new() };
        let message = NewState {
            view: self.view,
            op,
            commit: op,
            head: self.op,
            kind: NewStateKind::SnapshotOffer,
            state,
        };
        out.push(Action::Send { to, message: Message::NewState(message) });
    }

    fn start_snapshot_pull(&mut self, from: u8, op: u64, out: &mut Vec<Action>) {
        if self.snapshot_in.as_ref().is_some_and(|s| s.from == from && s.op == op) {
            return; // Already pulling it.
        }
        self.snapshot_in = Some(SnapshotIn {
            from,
            op,
            total_len: 0,
            digest: 0,
            bytes: Vec::new(),
            have: Vec::new(),
            have_count: 0,
            next_missing: 0,
            requested_until: SNAPSHOT_WINDOW,
            stall_ticks: 0,
            stalls: 0,
        });
        self.request_snapshot(0, out);
    }

    fn request_snapshot(&mut self, chunk: u64, out: &mut Vec<Action>) {
        let Some(pull) = self.snapshot_in.as_ref() else { return };
        let message = SnapshotRequest {
            view: self.view,
            snapshot_op: pull.op,
            offset: chunk * CHUNK,
            replica: self.config.index,
        };
        out.push(Action::Send { to: pull.from, message: Message::SnapshotRequest(message) });
    }

    /// Sends one window of the snapshot we offered, from the asked offset.
    fn on_snapshot_request(&mut self, from: u8, m: SnapshotRequest, out: &mut Vec<Action>) {
        let Some(snapshot) = self.snapshot_out.as_mut() else { return };
        if m.replica != from || m.snapshot_op != snapshot.op || m.offset % CHUNK != 0 {
            return;
        }
        snapshot.idle_ticks = 0;
        let total = snapshot.stream.len();
        snapshot.stream.encode_until(m.offset.saturating_add(SNAPSHOT_WINDOW * CHUNK));
        // 0 until the whole snapshot is encoded: the chunks sent after that,
        // the last one among them, tell the puller what to verify.
        let digest = snapshot.stream.digest().unwrap_or(0);
        let mut offset = m.offset;
        for _ in 0..SNAPSHOT_WINDOW {
            if offset >= total {
                break;
            }
            let end = (offset + CHUNK).min(total);
            let message = SnapshotChunk {
                view: self.view,
                snapshot_op: snapshot.op,
                total_len: total,
                digest,
                offset,
                replica: self.config.index,
                data: snapshot.stream.encoded()[offset as usize..end as usize].to_vec(),
            };
            out.push(Action::Send { to: from, message: Message::SnapshotChunk(message) });
            offset = end;
        }
    }

    fn on_snapshot_chunk(&mut self, from: u8, m: SnapshotChunk, out: &mut Vec<Action>) {
        self.stats.snapshot_chunks_received += 1;
        let Some(pull) = self.snapshot_in.as_mut() else { return };
        if from != pull.from || m.replica != from || m.snapshot_op != pull.op {
            return;
        }
        if pull.total_len == 0 {
            // The first chunk sizes the transfer: no limit but memory.
            let chunks = m.total_len.div_ceil(CHUNK);
            let Ok(len) = usize::try_from(m.total_len) else { return };
            if len == 0 {
                return;
            }
            if pull.bytes.try_reserve_exact(len).is_err()
                || pull.have.try_reserve_exact(chunks as usize).is_err()
            {
                self.snapshot_in = None;
                return;
            }
            pull.bytes.resize(len, 0);
            pull.have.resize(chunks as usize, false);
            pull.total_len = m.total_len;
        } else if m.total_len != pull.total_len {
            return;
        }
        // The source announces the digest once it has encoded the whole
        // snapshot (0 before): the last chunk always carries it.
        if m.digest != 0 {
            if pull.digest == 0 {
                pull.digest = m.digest;
            } else if m.digest != pull.digest {
                return;
            }
        }
        // (wire::decode checks these too; the core trusts no caller.)
        let expected = pull.total_len.checked_sub(m.offset).map(|rest| rest.min(CHUNK));
        if m.offset % CHUNK != 0 || expected != Some(m.data.len() as u64) || m.data.is_empty() {
            return;
        }
        let index = m.offset / CHUNK;
        if pull.have[index as usize] {
            return;
        }
        pull.bytes[m.offset as usize..m.offset as usize + m.data.len()].copy_from_slice(&m.data);
        pull.have[index as usize] = true;
        pull.have_count += 1;
        pull.stall_ticks = 0;
        pull.stalls = 0;
        let chunks = pull.have.len() as u64;
        while pull.next_missing < chunks && pull.have[pull.next_missing as usize] {
            pull.next_missing += 1;
        }
        if pull.have_count == chunks {
            self.finish_snapshot(out);
            return;
        }
        // Keep about a window and a half in flight: ask for the next window
        // once half of the last one arrived.
        if pull.next_missing + SNAPSHOT_WINDOW / 2 >= pull.requested_until && pull.requested_until < chunks {
            let next = pull.requested_until;
            pull.requested_until += SNAPSHOT_WINDOW;
            self.request_snapshot(next, out);
        }
    }

    /// Every tick: resend a stalled window from the first missing chunk;
    /// forget an offered snapshot nobody pulls any more.
    fn snapshot_tick(&mut self, out: &mut Vec<Action>) {
        if let Some(snapshot) = self.snapshot_out.as_mut() {
            snapshot.idle_ticks += 1;
            if snapshot.idle_ticks >= 50 * self.config.resend_interval_ticks {
                self.snapshot_out = None;
            }
        }
        let Some(pull) = self.snapshot_in.as_mut() else { return };
        pull.stall_ticks += 1;
        if pull.stall_ticks < self.config.resend_interval_ticks {
            return;
        }
        pull.stall_ticks = 0;
        pull.stalls += 1;
        if pull.stalls > SNAPSHOT_STALLS_MAX {
            // The source is gone or forgot the snapshot: the next GetState
            // finds another.
            self.snapshot_in = None;
            return;
        }
        let next = pull.next_missing;
        pull.requested_until = pull.requested_until.max(next + SNAPSHOT_WINDOW);
        self.request_snapshot(next, out);
    }

    /// The whole snapshot arrived: verify and install it, then fetch what
    /// follows it from its source (whose log is pinned above it).
    fn finish_snapshot(&mut self, out: &mut Vec<Action>) {
        let Some(pull) = self.snapshot_in.take() else { return };
        if pull.digest == 0 || checkpoint_digest(&pull.bytes) != pull.digest || pull.op <= self.commit {
            return; // Corrupt or stale: the next GetState starts over.
        }
        // Our log above the snapshot stays (it may hold ops we acked in an
        // older view, which a view change could need): after the install we
        // claim exactly what we claimed before above it, and committed state
        // below it.
        let above: Vec<LogEntry> = if self.op > pull.op {
            self.log
                .iter()
                .skip((pull.op.max(self.checkpoint_op) - self.checkpoint_op) as usize)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let blob = StateBlob { checkpoint_op: pull.op, snapshot: pull.bytes, entries: Vec::new() };
        if !self.install(&blob, pull.op, pull.op) {
            return;
        }
        for entry in above {
            self.push_entry(entry);
        }
        self.stats.snapshots_installed += 1;
        if self.catching_up {
            // Committed state: the same in every view.
            self.catch_up_verified = self.catch_up_verified.max(pull.op);
        }
        self.commit_seen = self.commit_seen.max(pull.op);
        if self.repair_pending {
            self.repair_pending = false;
            self.try_start_view(out);
        } else if self.status == Status::Normal && !self.is_leader() {
            // What follows the snapshot, from its source's pinned log.
            self.state_transfer_attempts = 0;
            self.send_get_state_to(pull.from, out);
        }
    }

    // -----------------------------------------------------------------
    // Recovery (VRR 4.3)
    // -----------------------------------------------------------------

    fn send_recovery(&mut self, out: &mut Vec<Action>) {
        self.resend_ticks = 0;
        let message = Message::Recovery(Recovery { nonce: self.nonce, replica: self.config.index });
        out.push(Action::SendAll { message });
    }

    fn on_recovery(&mut self, from: u8, m: Recovery, out: &mut Vec<Action>) {
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

    fn on_recovery_response(&mut self, from: u8, m: RecoveryResponse, out: &mut Vec<Action>) {
        if self.status != Status::Recovering || m.nonce != self.nonce || m.replica != from {
            return;
        }
        let replica = from as usize;
        if m.status == BOOTED_WITH_YOU {
            // Our incarnation was counted in a boot: join it (see electrode.h).
            self.peer_nonces[replica] = Some(m.op);
            self.recovering_peers[replica] = true;
            self.boot("booted: a peer booted counting this incarnation in (first start)");
            return;
        }
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
            return;
        }
        self.try_recover(out);
    }

    /// The most advanced peer that told us it holds state (view > 0 or a
    /// non-empty log), if any: booting an empty cluster beside it would
    /// serve a second history.
    fn state_holder(&self) -> Option<PeerState> {
        self.peer_state.iter().flatten().copied().max_by_key(|p| (p.view, p.op, p.replica))
    }

    /// Recovers (f+1 normal answers including the leader's), boots (every
    /// other replica answered that it is without memory), or waits.
    ///
    /// Booting needs every peer's word: a replica without memory cannot
    /// tell a first start from a restart, and a peer that did not answer
    /// (down, or cut off) may hold the cluster's history; booting beside it
    /// would serve a second one. With f others without memory and a peer
    /// holding state, more than f replicas lost their memory and no
    /// protocol can tell which ops were acknowledged: the replica waits
    /// (blocked beats wrong) until the operator decides
    /// (`Config::accept_data_loss`).
    fn try_recover(&mut self, out: &mut Vec<Action>) {
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
            if self.config.accept_data_loss && self.recovering_ticks >= self.config.boot_wait_ticks {
                self.accept_data_loss(holder, out);
            }
            return;
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
        let accepted = self.config.accept_data_loss
            && recovering >= self.f()
            && self.recovering_ticks >= self.config.boot_wait_ticks;
        if holder.is_none() && (recovering >= boot_quorum || accepted) {
            self.boot(
                "booted: no replica holds state (a first start; in-memory data does not survive a restart \
                 of every replica)",
            );
            return;
        }
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
            self.leader_silent_ticks = 0;
            return;
        }
        // Join the view without state (ours is gone) and fetch it: until it
        // is installed we neither ack nor take part in view changes.
        self.amnesic = true;
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
    fn boot(&mut self, why: &'static str) {
        assert_eq!(self.op, 0);
        for (peer, booting) in self.recovering_peers.iter().enumerate() {
            self.booted_with[peer] = if *booting { self.peer_nonces[peer] } else { None };
        }
        self.set_status(Status::Normal);
        self.view_reset();
        self.last_normal_view = 0;
        self.transition = (why, None);
    }

    // -----------------------------------------------------------------
    // Invariants
    // -----------------------------------------------------------------

    fn invariants(&self) {
        assert!(self.commit <= self.op, "commit beyond the log");
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
        if self.catching_up {
            assert!(self.status == Status::Normal && !self.is_leader());
            assert!(self.state_transfer_ticks.is_some(), "catching up without asking");
            assert!(self.commit <= self.catch_up_verified, "executed past the pages installed");
            assert!(self.catch_up_verified <= self.op);
        }
        if self.amnesic {
            assert!(self.status != Status::Normal || self.catching_up, "amnesic but claims its state");
        }
        if self.repair_pending {
            assert!(self.status == Status::ViewChange && self.leader_of(self.view) == self.config.index);
        }
    }
}
