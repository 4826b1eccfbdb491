//! Deterministic cluster simulator in the style of TigerBeetle's VOPR: one
//! u64 seed drives the network (drops, duplicates, delays that reorder,
//! symmetric and one-way partitions), replica crashes and restarts (memory
//! lost, recovery with a fresh nonce; never more than f replicas crashed or
//! recovering at once), the kernel fast path (on some seeds) and closed-loop
//! KV clients. Replica-to-replica messages always go through the wire codec
//! (encode, decode, chunk reassembly), each datagram faulted on its own.
//!
//! Checkers: (a) no two replicas commit different batches at one op, after
//! every step; (b) at most one replica is normal leader per view, after every
//! step; (c) the clients' history is linearizable (src/check.rs), at the end;
//! (d) liveness: once faults stop (partitions healed, crashed replicas
//! restarted, no loss), every outstanding request completes within
//! LIVENESS_TICKS; (g) durable mode (`simulator_durable_sweep`, its own
//! seeds): every op a replica acked (PrepareOK sent), and every op a leader
//! committed with its own vote, was on that replica's simulated disk as its
//! log held it when it acked or committed.
//!
//! `ELECTRODE_SIM_SEED=<n>` replays one seed; `ELECTRODE_SIM_SEEDS=<n>` sets
//! how many seeds the sweep covers (default SEEDS_DEFAULT).
//! `ELECTRODE_SIM_DURABLE_SEED=<n>` / `ELECTRODE_SIM_DURABLE_SEEDS=<n>` do
//! the same for the durable sweep (default DURABLE_SEEDS_DEFAULT; its seeds
//! are DURABLE_SEED_BASE + 1.., so they draw profiles of their own and the
//! memory-mode seeds keep theirs).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use electrode::app::kv::{KvOp, KvResult, KvStore};
use electrode::app::App;
use electrode::check;
use electrode::history::Operation;
use electrode::vr::{batch_digest, Action, Config, KernelArm, Persist, Replica, Status};
use electrode::wire::{self, Decoded, Encoder, Message, Prepare, PrepareOk, Reassembler, Reply, Request};

mod common;

use common::Rng;

/// Seeds covered by plain `cargo test`.
const SEEDS_DEFAULT: u64 = 200;
/// Seeds covered by the durable sweep, and where its seeds start.
const DURABLE_SEEDS_DEFAULT: u64 = 300;
const DURABLE_SEED_BASE: u64 = 1 << 40;
/// Writes completed in durable mode (summed over seeds; printed by the
/// durable sweep: Totals stays as it is, so memory-mode totals compare).
static PERSISTS_COMPLETED: AtomicU64 = AtomicU64::new(0);
/// Ticks of the faulty phase (the heal phase follows).
const FAULT_TICKS_MIN: u64 = 600;
const FAULT_TICKS_MAX: u64 = 1500;
/// After faults stop, every outstanding request must complete within this.
const LIVENESS_TICKS: u64 = 4000;
/// After faults stop, every replica is normal in one view within this: a
/// few escalating view-change attempts (timeouts of 30-60 ticks, doubling up
/// to 8x), a recovery and a state transfer.
const VIEW_SETTLE_TICKS: u64 = 1500;
/// A client re-sends its request (to every replica) after this long.
const CLIENT_TIMEOUT_TICKS: u64 = 40;
const CLUSTER_ID: u32 = 7;
/// Keys the clients use: few, so that operations contend, but at least one
/// per two clients, so that the checker's search per key stays small.
const KEYS_MIN: u64 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Node {
    Replica(u8),
    Client(usize),
}

#[derive(Clone, Debug)]
enum Payload {
    Datagram(Vec<u8>),
    Request(Request),
    Reply(Reply),
}

struct Packet {
    at: u64,
    seq: u64,
    from: Node,
    to: Node,
    payload: Payload,
}

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Packet {}
impl PartialOrd for Packet {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Packet {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The simulated fast_reply kernel of one follower.
#[derive(Default)]
struct Kernel {
    arm: Option<KernelArm>,
    acked: Vec<Prepare>,
}

struct Client {
    id: u64,
    next_request_number: u64,
    /// (request, index in history, tick of last send)
    outstanding: Option<(Request, usize, u64)>,
    view_guess: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    seeds: u64,
    ops_committed: u64,
    requests_completed: u64,
    view_changes: u64,
    state_transfers: u64,
    recoveries: u64,
    crashes: u64,
    partitions: u64,
    dropped: u64,
    duplicated: u64,
    reordered: u64,
    delayed: u64,
    kernel_acks: u64,
    checkpoints: u64,
    batched_prepares: u64,
    settle_ticks_max: u64,
    view_change_repairs: u64,
    snapshots_installed: u64,
    snapshot_chunks: u64,
    pauses: u64,
    view_change_refusals: u64,
    beyond_f_crashes: u64,
    /// Seeds whose cluster ended blocked (after more than f crashed).
    blocked_seeds: u64,
    /// Worst ticks from the end of faults to the last request completed.
    liveness_ticks_max: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.seeds += o.seeds;
        self.ops_committed += o.ops_committed;
        self.requests_completed += o.requests_completed;
        self.view_changes += o.view_changes;
        self.state_transfers += o.state_transfers;
        self.recoveries += o.recoveries;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.delayed += o.delayed;
        self.kernel_acks += o.kernel_acks;
        self.checkpoints += o.checkpoints;
        self.batched_prepares += o.batched_prepares;
        self.settle_ticks_max = self.settle_ticks_max.max(o.settle_ticks_max);
        self.view_change_repairs += o.view_change_repairs;
        self.snapshots_installed += o.snapshots_installed;
        self.snapshot_chunks += o.snapshot_chunks;
        self.pauses += o.pauses;
        self.view_change_refusals += o.view_change_refusals;
        self.beyond_f_crashes += o.beyond_f_crashes;
        self.blocked_seeds += o.blocked_seeds;
        self.liveness_ticks_max = self.liveness_ticks_max.max(o.liveness_ticks_max);
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Options {
    /// Boot scenario: replica i starts at a random tick below this (None:
    /// the sweep draws it), and no crash or partition is injected.
    boot_within: Option<u64>,
    /// Loss scenario: every replica boots at once, this loss (parts per
    /// million of datagrams), no duplicates, crashes or partitions, and the
    /// kernel fast path on every replica or on none.
    lossy: Option<(u64, bool)>,
    /// Scripted scenario: three replicas boot at once on a quiet network
    /// (no loss, no delay, no injected fault: the test cuts links itself),
    /// batches of one, no checkpoint, four clients putting 800-byte values.
    scripted: bool,
    /// Durable mode: every replica's writes complete after a random
    /// delay (a per-seed maximum, drawn from a stream of its own), and
    /// checker (g) runs. No kernel fast path (it does not ack durably).
    durable: bool,
    #[cfg(feature = "sim-bugs")]
    bug: Option<electrode::vr::Bug>,
}

/// A write the simulated disk is doing: due tick, what, and the entries
/// (op, batch digest) read from the log when it was handed out.
struct DiskWrite {
    due: u64,
    persist: Persist,
    entries: Vec<(u64, u64)>,
}

/// One seed's fault profile (swarm testing, as TigerBeetle's VOPR): every
/// seed draws its own mix, so rare combinations (a long isolation that
/// leaves a replica many pages behind, then two view changes; several
/// replicas crashing together) get seeds of their own instead of being
/// averaged away. Drawn from its own stream of the seed, so a failing
/// seed's profile can be printed without running it.
#[derive(Clone, Copy, Debug)]
struct Profile {
    drop_ppm: u64,
    dup_ppm: u64,
    delay_max: u64,
    /// Chance per tick of crashing one replica (while at most f are down).
    crash_ppm: u64,
    /// Chance per tick of a partition while none is in force.
    partition_ppm: u64,
    /// Share of partitions that cut one way only.
    one_way_percent: u64,
    /// Share of partitions that isolate one replica from all the others.
    isolate_percent: u64,
    /// Longest partition, ticks (short: flapping; long: a replica falls
    /// many pages behind).
    partition_ticks_max: u64,
    /// Chance per tick of pausing a replica (no ticks, its input waits).
    pause_ppm: u64,
    pause_ticks_max: u64,
    /// Chance per tick, once per seed, of crashing more than f replicas
    /// at once (at least one replica holding state survives): the cluster
    /// must then block, never serve another history.
    beyond_f_ppm: u64,
    /// Bytes of each put's value (large values make pages of few entries;
    /// a cas carries two, and an op is at most ELECTRODE_MAX_OP_SIZE).
    value_len: usize,
}

impl Profile {
    /// No fault at all: the scripted tests make their own.
    fn quiet(value_len: usize) -> Profile {
        Profile {
            drop_ppm: 0,
            dup_ppm: 0,
            delay_max: 0,
            crash_ppm: 0,
            partition_ppm: 0,
            one_way_percent: 0,
            isolate_percent: 0,
            partition_ticks_max: 20,
            pause_ppm: 0,
            pause_ticks_max: 20,
            beyond_f_ppm: 0,
            value_len,
        }
    }

    fn draw(seed: u64) -> Profile {
        let mut rng = Rng::new(seed ^ 0x5a_a5_5a_a5_0f_f0_0f_f0);
        let partition_ticks_max = match rng.below(4) {
            0 => 60,
            1 | 2 => 400,
            _ => 1200,
        };
        let pause_ppm = if rng.below(3) == 0 { rng.range(500, 4_000) } else { 0 };
        Profile {
            drop_ppm: [0, rng.range(0, 20_000), rng.range(0, 60_000), rng.range(60_000, 150_000)]
                [rng.below(4) as usize],
            dup_ppm: rng.range(0, 30_000),
            delay_max: rng.range(1, 12),
            crash_ppm: [0, rng.range(500, 3_000), rng.range(3_000, 8_000)][rng.below(3) as usize],
            partition_ppm: [0, rng.range(1_000, 4_000), rng.range(4_000, 12_000)][rng.below(3) as usize],
            one_way_percent: rng.below(101),
            isolate_percent: rng.below(101),
            partition_ticks_max,
            pause_ppm,
            pause_ticks_max: rng.range(20, 300),
            beyond_f_ppm: if rng.below(8) == 0 { rng.range(1_000, 5_000) } else { 0 },
            value_len: if rng.below(4) == 0 { rng.range(200, 480) as usize } else { 0 },
        }
    }
}

struct Sim {
    rng: Rng,
    /// Clients only put (the scripted scenario's values fill an op).
    puts_only: bool,
    profile: Profile,
    /// Ticks until which each replica is paused (0: running).
    paused_until: Vec<u64>,
    /// More than f replicas crashed at once in this seed (see Profile).
    beyond_f: bool,
    tick: u64,
    n: u8,
    f: usize,
    base_config: Config,
    replicas: Vec<Option<Replica>>,
    restart_at: Vec<u64>,
    kernels: Vec<Kernel>,
    encoders: Vec<Encoder>,
    reassemblers: Vec<Reassembler>,
    network: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    last_delivered: HashMap<(Node, Node), u64>,
    blocked: Vec<Vec<bool>>,
    heal_at: u64,
    drop_ppm: u64,
    dup_ppm: u64,
    delay_max: u64,
    faulty: bool,
    /// Loss, duplicates and delays only: no crash, no partition.
    boot_only: bool,
    /// (keys, value bytes) every replica's store holds from the start.
    genesis: (u64, usize),
    key_count: u64,
    clients: Vec<Client>,
    history: Vec<Operation>,
    committed: HashMap<u64, (u64, u8)>,
    checked_op: Vec<u64>,
    leaders: HashMap<u64, u8>,
    /// Per view, the log its leader started it with: (first op held, batch
    /// digest of each op up to the StartView's op).
    start_views: HashMap<u64, (u64, Vec<u64>)>,
    /// Per replica, the view whose StartView prefix it was last found to
    /// hold (None: check again).
    start_view_checked: Vec<Option<u64>>,
    /// Per replica incarnation, the highest commit seen: it never goes back.
    commit_high: Vec<u64>,
    /// ELECTRODE_SIM_TRACE: print every change of view, status or catch-up.
    trace: bool,
    /// ELECTRODE_SIM_SKIP_PREFIX_CHECK: leave (f) out, to see what a
    /// violation of it leads to (the scripted scenario: a wedge or a lost
    /// history) instead of where it starts.
    skip_prefix_check: bool,
    traced: Vec<Option<(u64, Status, bool, &'static str)>>,
    totals: Totals,
    /// Durable mode (Options::durable).
    durable: bool,
    /// Durable mode: its own stream (write delays), so that the others
    /// draw as in memory mode.
    persist_rng: Rng,
    /// Longest delay of a write, ticks.
    persist_delay_max: u64,
    /// Per replica, its writes in progress, oldest first.
    disk_writes: Vec<VecDeque<DiskWrite>>,
    /// Per replica, its log on disk: op -> batch digest.
    disks: Vec<BTreeMap<u64, u64>>,
    /// Per replica, the view it led at its last check (checker (g)).
    led_view: Vec<Option<u64>>,
}

impl Sim {
    /// (view, status, op, commit) of every replica, None where one is down.
    fn replica_states(&self) -> Vec<Option<(u64, &'static str, u64, u64)>> {
        self.replicas
            .iter()
            .map(|r| r.as_ref().map(|r| (r.view(), r.status().name(), r.op(), r.commit())))
            .collect()
    }

    fn new(seed: u64, options: Options) -> Sim {
        let mut rng = Rng::new(seed);
        let f = match rng.below(20) {
            _ if options.scripted => 1,
            0..=9 => 1,
            10..=16 => 2,
            _ => 3,
        };
        let n = (2 * f + 1) as u8;
        let mut config = Config::new(n, 0);
        config.pipeline_max = rng.range(1, 8) as usize;
        config.batch_max = rng.range(1, 8) as usize;
        config.checkpoint_interval_ops = rng.range(8, 48);
        config.heartbeat_interval_ticks = 5;
        config.view_change_timeout_ticks = rng.range(30, 60);
        config.prepare_retransmit_ticks = rng.range(4, 10);
        config.resend_interval_ticks = rng.range(8, 15);
        config.boot_wait_ticks = rng.range(40, 150);
        config.request_queue_max = 64;
        config.client_table_max = 64;
        config.kernel_fast_reply = rng.below(4) == 0;
        if options.durable {
            config.durable = true;
            config.kernel_fast_reply = false;
        }
        if let Some((_, kernel)) = options.lossy {
            config.kernel_fast_reply = kernel;
        }
        if options.scripted {
            config.pipeline_max = 4;
            config.batch_max = 1;
            config.checkpoint_interval_ops = 1_000_000;
            config.kernel_fast_reply = false;
        }
        #[cfg(feature = "sim-bugs")]
        {
            config.bug = options.bug;
        }
        // A fifth of the seeds run many clients; an eighth start from a large
        // state (every replica boots with the same genesis keys), so that
        // snapshots span hundreds of datagrams and view changes must not
        // carry them.
        let mut client_count = if rng.below(5) == 0 { rng.range(20, 40) } else { rng.range(2, 6) };
        let mut genesis =
            if rng.below(8) == 0 { (rng.range(100, 300), rng.range(200, 900) as usize) } else { (0, 0) };
        if options.scripted {
            (client_count, genesis) = (4, (0, 0));
        }
        let clients = (0..client_count)
            .map(|c| Client { id: 1000 + c, next_request_number: 1, outstanding: None, view_guess: 0 })
            .collect();
        let profile = if options.scripted { Profile::quiet(800) } else { Profile::draw(seed) };
        let mut sim = Sim {
            puts_only: options.scripted,
            profile,
            paused_until: vec![0; n as usize],
            beyond_f: false,
            tick: 0,
            n,
            f,
            base_config: config,
            replicas: (0..n).map(|_| None).collect(),
            restart_at: vec![0; n as usize],
            kernels: (0..n).map(|_| Kernel::default()).collect(),
            encoders: (0..n).map(|i| Encoder::new(CLUSTER_ID, i)).collect(),
            reassemblers: (0..n).map(|_| Reassembler::new(1 << 24)).collect(),
            network: BinaryHeap::new(),
            seq: 0,
            last_delivered: HashMap::new(),
            blocked: vec![vec![false; n as usize]; n as usize],
            heal_at: 0,
            drop_ppm: profile.drop_ppm,
            dup_ppm: profile.dup_ppm,
            delay_max: profile.delay_max,
            faulty: true,
            boot_only: options.boot_within.is_some() || options.lossy.is_some() || options.scripted,
            genesis,
            key_count: KEYS_MIN.max(client_count / 2),
            clients,
            history: Vec::new(),
            committed: HashMap::new(),
            checked_op: vec![0; n as usize],
            leaders: HashMap::new(),
            start_views: HashMap::new(),
            start_view_checked: vec![None; n as usize],
            commit_high: vec![0; n as usize],
            trace: std::env::var_os("ELECTRODE_SIM_TRACE").is_some(),
            skip_prefix_check: std::env::var_os("ELECTRODE_SIM_SKIP_PREFIX_CHECK").is_some(),
            traced: vec![None; n as usize],
            totals: Totals { seeds: 1, ..Totals::default() },
            rng,
            durable: options.durable,
            persist_rng: Rng::new(seed ^ 0xd1_5c_d1_5c_0b_ad_f0_0d),
            persist_delay_max: 0,
            disk_writes: (0..n).map(|_| VecDeque::new()).collect(),
            disks: vec![BTreeMap::new(); n as usize],
            led_view: vec![None; n as usize],
        };
        if options.durable {
            // Fast disks (a write per tick or so) to slow ones (a sync
            // behind many Prepares).
            sim.persist_delay_max = [1, sim.persist_rng.range(2, 6), sim.persist_rng.range(6, 30)]
                [sim.persist_rng.below(3) as usize];
        }
        // A quarter of the sweep's seeds start the replicas one by one, in a
        // random order and with random delays (up to twice the boot wait).
        if let Some((drop_ppm, _)) = options.lossy {
            sim.drop_ppm = drop_ppm;
            sim.dup_ppm = 0;
        }
        let boot_within = options.boot_within.filter(|_| options.lossy.is_none()).or_else(|| {
            if options.lossy.is_some() || options.scripted {
                return None;
            }
            (sim.rng.below(4) == 0).then(|| sim.rng.range(1, 2 * sim.base_config.boot_wait_ticks))
        });
        match boot_within {
            Some(within) => {
                for i in 0..n as usize {
                    sim.restart_at[i] = sim.rng.below(within);
                }
                sim.restart_due(false);
            }
            None => {
                for i in 0..n {
                    sim.boot_replica(i);
                }
            }
        }
        sim
    }

    fn boot_replica(&mut self, i: u8) {
        let mut config = self.base_config.clone();
        config.index = i;
        let nonce = self.rng.next_u64();
        let mut store = KvStore::default();
        let (keys, value_len) = self.genesis;
        for k in 0..keys {
            let put = KvOp::Put {
                key: format!("genesis{k}").into_bytes(),
                value: vec![(k % 251) as u8; value_len],
            };
            store.execute(&put.encode());
        }
        let mut replica = Replica::new(config, Box::new(store), nonce);
        let mut out = Vec::new();
        replica.start(&mut out);
        self.replicas[i as usize] = Some(replica);
        self.kernels[i as usize] = Kernel::default();
        self.reassemblers[i as usize] = Reassembler::new(1 << 24);
        self.checked_op[i as usize] = 0;
        self.start_view_checked[i as usize] = None;
        self.commit_high[i as usize] = 0;
        // A replica restarts without memory: what its disk held is not read.
        self.disk_writes[i as usize].clear();
        self.disks[i as usize].clear();
        self.led_view[i as usize] = None;
        self.run_actions(i, out);
    }

    fn crash(&mut self, i: u8) {
        let Some(replica) = self.replicas[i as usize].take() else { return };
        self.absorb_stats(&replica);
        self.kernels[i as usize] = Kernel::default();
        // Writes in progress are lost with it.
        self.disk_writes[i as usize].clear();
        self.totals.crashes += 1;
        self.restart_at[i as usize] = self.tick + self.rng.range(20, 300);
    }

    fn absorb_stats(&mut self, replica: &Replica) {
        self.totals.view_changes += replica.stats.views_started;
        self.totals.state_transfers += replica.stats.state_transfers;
        self.totals.view_change_repairs += replica.stats.view_change_repairs;
        self.totals.view_change_refusals += replica.stats.view_change_refusals;
        self.totals.snapshots_installed += replica.stats.snapshots_installed;
        self.totals.snapshot_chunks += replica.stats.snapshot_chunks_received;
        self.totals.recoveries += replica.stats.recoveries;
        self.totals.checkpoints += replica.stats.checkpoints;
        self.totals.batched_prepares += replica.stats.requests_batched;
    }

    fn down_or_recovering(&self) -> usize {
        // VR's failure count: crashed, recovering, or recovered and still
        // without its state.
        self.replicas.iter().filter(|r| r.as_ref().is_none_or(Replica::amnesic)).count()
    }

    // ---------------------------------------------------------------
    // Network
    // ---------------------------------------------------------------

    fn send(&mut self, from: Node, to: Node, payload: Payload) {
        if let (Node::Replica(a), Node::Replica(b)) = (from, to) {
            if self.blocked[a as usize][b as usize] {
                self.totals.dropped += 1;
                return;
            }
        }
        if self.faulty && self.rng.ppm(self.drop_ppm) {
            self.totals.dropped += 1;
            return;
        }
        let copies = if self.faulty && self.rng.ppm(self.dup_ppm) {
            self.totals.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let extra = if self.faulty { self.rng.below(self.delay_max + 1) } else { self.rng.below(2) };
            if extra > 0 {
                self.totals.delayed += 1;
            }
            self.seq += 1;
            let packet =
                Packet { at: self.tick + 1 + extra, seq: self.seq, from, to, payload: payload.clone() };
            self.network.push(Reverse(packet));
        }
    }

    fn send_message(&mut self, from: u8, to: u8, message: &Message) {
        let mut datagrams = Vec::new();
        self.encoders[from as usize].encode(message, &mut datagrams).expect("our messages encode");
        for d in datagrams {
            self.send(Node::Replica(from), Node::Replica(to), Payload::Datagram(d));
        }
    }

    fn deliver_due(&mut self) {
        while self.network.peek().is_some_and(|p| p.0.at <= self.tick) {
            let Reverse(mut packet) = self.network.pop().expect("peeked");
            if let Node::Replica(i) = packet.to {
                if self.paused_until[i as usize] > self.tick {
                    // A paused replica reads its input when it resumes.
                    packet.at = self.paused_until[i as usize];
                    self.network.push(Reverse(packet));
                    continue;
                }
            }
            let last = self.last_delivered.entry((packet.from, packet.to)).or_insert(0);
            if packet.seq < *last {
                self.totals.reordered += 1;
            }
            *last = (*last).max(packet.seq);
            self.deliver(packet);
        }
    }

    fn deliver(&mut self, packet: Packet) {
        match (packet.to, packet.payload) {
            (Node::Replica(i), Payload::Datagram(bytes)) => {
                let Node::Replica(from) = packet.from else { unreachable!("datagrams are between replicas") };
                if self.replicas[i as usize].is_none() {
                    return;
                }
                let (envelope, decoded) = wire::decode(&bytes, CLUSTER_ID).expect("our datagrams decode");
                assert_eq!(envelope.sender, from);
                let message = match decoded {
                    Decoded::Message(m) => m,
                    Decoded::Chunk(chunk) => {
                        match self.reassemblers[i as usize]
                            .push(&envelope, chunk)
                            .expect("our chunks reassemble")
                        {
                            Some(m) => m,
                            None => return,
                        }
                    }
                };
                self.deliver_message(i, from, message);
            }
            (Node::Replica(i), Payload::Request(request)) => {
                let Some(replica) = self.replicas[i as usize].as_mut() else { return };
                let mut out = Vec::new();
                replica.on_request(request, &mut out);
                self.run_actions(i, out);
            }
            (Node::Client(c), Payload::Reply(reply)) => self.on_client_reply(c, reply),
            (to, payload) => unreachable!("{to:?} cannot receive {payload:?}"),
        }
    }

    /// The kernel sees Prepares first when armed.
    fn deliver_message(&mut self, i: u8, from: u8, message: Message) {
        let kernel = &mut self.kernels[i as usize];
        if let (Some(arm), Message::Prepare(prepare)) = (kernel.arm.as_mut(), &message) {
            if prepare.view == arm.view && from == arm.leader && prepare.op <= arm.next_op {
                let op = prepare.op;
                if op == arm.next_op {
                    arm.next_op += 1;
                    kernel.acked.push(prepare.clone());
                    self.totals.kernel_acks += 1;
                }
                let ack = Message::PrepareOk(PrepareOk { view: prepare.view, op, replica: i, gap: false });
                self.send_message(i, from, &ack);
                return;
            }
        }
        if matches!(message, Message::Commit(_)) {
            self.flush_kernel(i);
        }
        let Some(replica) = self.replicas[i as usize].as_mut() else { return };
        let mut out = Vec::new();
        replica.on_message(from, message, &mut out);
        self.run_actions(i, out);
    }

    fn flush_kernel(&mut self, i: u8) {
        let acked = std::mem::take(&mut self.kernels[i as usize].acked);
        if acked.is_empty() {
            return;
        }
        let replica = self.replicas[i as usize].as_mut().expect("kernel of a live replica");
        let mut out = Vec::new();
        replica.on_kernel_prepares(acked, &mut out);
        self.run_actions(i, out);
    }

    fn run_actions(&mut self, i: u8, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send { to, message } => {
                    assert_ne!(to, i);
                    if let (true, Message::PrepareOk(ack)) = (self.durable, &message) {
                        self.check_on_disk(i, ack.op, "acked");
                    }
                    self.send_message(i, to, &message);
                }
                Action::SendAll { message } => {
                    for to in 0..self.n {
                        if to != i {
                            self.send_message(i, to, &message);
                        }
                    }
                }
                Action::Reply { client_id, reply } => {
                    let c = (client_id - 1000) as usize;
                    self.send(Node::Replica(i), Node::Client(c), Payload::Reply(reply));
                }
                Action::KernelArm(arm) => {
                    let kernel = &mut self.kernels[i as usize];
                    assert!(self.base_config.kernel_fast_reply);
                    assert!(kernel.arm.is_none() && kernel.acked.is_empty());
                    kernel.arm = Some(arm);
                }
                Action::KernelDisarm => {
                    let kernel = &mut self.kernels[i as usize];
                    assert!(kernel.arm.take().is_some(), "disarm of an unarmed kernel");
                    let acked = std::mem::take(&mut kernel.acked);
                    let replica = self.replicas[i as usize].as_mut().expect("live");
                    let mut out = Vec::new();
                    replica.on_kernel_disarmed(acked, &mut out);
                    // Their effects come after what this call already emitted.
                    queue.extend(out);
                }
            }
        }
        self.take_persist(i);
        self.check_replica(i);
    }

    // ---------------------------------------------------------------
    // Durable mode: the simulated disk, checker (g)
    // ---------------------------------------------------------------

    /// Queues the write replica `i` asks for (none in memory mode), with
    /// the entries as its log holds them now; it completes after a random
    /// delay, after the writes before it.
    fn take_persist(&mut self, i: u8) {
        let Some(replica) = self.replicas[i as usize].as_mut() else { return };
        let Some(persist) = replica.take_persist() else { return };
        assert!(self.durable, "memory mode asked for a write");
        let entries = (persist.from_op..=persist.to_op)
            .map(|op| {
                let entry = replica.log_entry(op).expect("a write names entries of the log");
                (op, batch_digest(&entry.batch))
            })
            .collect();
        let writes = &mut self.disk_writes[i as usize];
        let after = writes.back().map_or(0, |w| w.due);
        let due = after.max(self.tick + self.persist_rng.range(0, self.persist_delay_max));
        writes.push_back(DiskWrite { due, persist, entries });
    }

    /// Completes the writes that are due, in order, and tells each replica
    /// (a paused replica's disk waits for it).
    fn complete_writes(&mut self) {
        for i in 0..self.n {
            while self.replicas[i as usize].is_some()
                && self.paused_until[i as usize] <= self.tick
                && self.disk_writes[i as usize].front().is_some_and(|w| w.due <= self.tick)
            {
                let write = self.disk_writes[i as usize].pop_front().expect("peeked");
                let disk = &mut self.disks[i as usize];
                disk.split_off(&write.persist.from_op);
                disk.extend(write.entries);
                PERSISTS_COMPLETED.fetch_add(1, Ordering::Relaxed);
                let replica = self.replicas[i as usize].as_mut().expect("live");
                let mut out = Vec::new();
                replica.on_persisted(write.persist.to_op, &mut out);
                self.run_actions(i, out);
            }
        }
    }

    /// (g) Ops checkpoint_op+1..=op of replica `i`'s log are on its disk
    /// as its log holds them: it `what` (acked, committed with its own
    /// vote) op.
    fn check_on_disk(&self, i: u8, op: u64, what: &str) {
        let replica = self.replicas[i as usize].as_ref().expect("live");
        let disk = &self.disks[i as usize];
        for o in replica.checkpoint_op() + 1..=op {
            let ours = replica.log_entry(o).map(|e| batch_digest(&e.batch));
            assert!(
                ours.is_some() && disk.get(&o) == ours.as_ref(),
                "(g) replica {i} {what} op {op} (view {}) but op {o} is not on its disk as its log holds it \
                 (disk holds up to {:?}, core says persisted {})",
                replica.view(),
                disk.last_key_value().map(|(k, _)| *k),
                replica.persisted_op()
            );
        }
    }

    /// (g) for the leader's own vote: a leader of view v (already at its
    /// last check) whose commit moved counted itself for the new ops.
    fn check_own_vote(&mut self, i: u8) {
        let Some(replica) = self.replicas[i as usize].as_ref() else { return };
        let led = replica.is_leader().then(|| replica.view());
        let (commit, before) = (replica.commit(), self.commit_high[i as usize]);
        if led.is_some() && led == self.led_view[i as usize] && commit > before {
            self.check_on_disk(i, commit, "committed with its own vote");
        }
        self.led_view[i as usize] = led;
    }

    // ---------------------------------------------------------------
    // Checkers (a) and (b)
    // ---------------------------------------------------------------

    fn check_replica(&mut self, i: u8) {
        if self.durable {
            self.check_own_vote(i);
        }
        let Some(replica) = self.replicas[i as usize].as_ref() else { return };
        let from = self.checked_op[i as usize];
        for &(op, digest) in replica.recent_commits().filter(|(op, _)| *op > from) {
            match self.committed.get(&op) {
                Some(&(other, by)) => assert_eq!(
                    other, digest,
                    "(a) replicas {by} and {i} committed different batches at op {op}"
                ),
                None => {
                    self.committed.insert(op, (digest, i));
                }
            }
        }
        self.checked_op[i as usize] = from.max(replica.commit());
        if replica.is_leader() {
            let leader = *self.leaders.entry(replica.view()).or_insert(i);
            assert_eq!(leader, i, "(b) two leaders in view {}", replica.view());
        }
        assert!(
            replica.commit() >= self.commit_high[i as usize],
            "(a) replica {i}'s commit went back from {} to {}",
            self.commit_high[i as usize],
            replica.commit()
        );
        self.commit_high[i as usize] = replica.commit();
        if self.trace {
            let now = (replica.view(), replica.status(), replica.catching_up(), replica.last_transition().0);
            if self.traced[i as usize] != Some(now) {
                self.traced[i as usize] = Some(now);
                println!(
                    "[{}] replica {i}: view {} {} op {} commit {} lnv {}{}: {}",
                    self.tick,
                    now.0,
                    now.1.name(),
                    replica.op(),
                    replica.commit(),
                    replica.last_normal_view(),
                    if now.2 { " catching up" } else { "" },
                    now.3
                );
            }
        }
        self.check_start_view_prefix(i);
    }

    /// (f) The invariant the view-change argument rests on (src/vr/mod.rs):
    /// a replica that is a member of view v (normal, caught up, last normal
    /// view v) holds the log view v started with. Its leader's log at the
    /// moment it became leader is recorded; every member is compared with
    /// it once per view (its entries up to that op do not change while it
    /// stays a member).
    fn check_start_view_prefix(&mut self, i: u8) {
        if self.skip_prefix_check {
            return;
        }
        let Some(replica) = self.replicas[i as usize].as_ref() else { return };
        let view = replica.view();
        let member = replica.status() == Status::Normal
            && !replica.catching_up()
            && replica.last_normal_view() == view;
        if !member {
            self.start_view_checked[i as usize] = None;
            return;
        }
        if self.start_view_checked[i as usize] == Some(view) {
            return;
        }
        if replica.is_leader() && !self.start_views.contains_key(&view) {
            let first = replica.checkpoint_op() + 1;
            let digests = (first..=replica.op())
                .map(|op| batch_digest(&replica.log_entry(op).expect("the log holds its ops").batch))
                .collect();
            self.start_views.insert(view, (first, digests));
        }
        let Some((first, digests)) = self.start_views.get(&view) else { return };
        let start_op = first + digests.len() as u64 - 1;
        assert!(
            replica.op() >= start_op,
            "(f) replica {i} is a member of view {view} with op {} but the view started with op {start_op}",
            replica.op()
        );
        for op in (*first).max(replica.checkpoint_op() + 1)..=start_op {
            let ours = replica.log_entry(op).map(|e| batch_digest(&e.batch));
            assert_eq!(
                ours,
                Some(digests[(op - first) as usize]),
                "(f) replica {i}, a member of view {view}, differs from the view's start at op {op}"
            );
        }
        self.start_view_checked[i as usize] = Some(view);
    }

    // ---------------------------------------------------------------
    // Clients
    // ---------------------------------------------------------------

    /// The value client `c` puts with request `number`: unique, padded to
    /// the profile's length.
    fn value(&self, c: usize, number: u64) -> Vec<u8> {
        let mut value = format!("c{c}.{number}").into_bytes();
        value.resize(value.len().max(self.profile.value_len), b'.');
        value
    }

    fn random_op(&mut self, c: usize) -> KvOp {
        let key = format!("k{}", self.rng.below(self.key_count)).into_bytes();
        let value = self.value(c, self.clients[c].next_request_number);
        if self.puts_only {
            return KvOp::Put { key, value };
        }
        match self.rng.below(10) {
            0..=3 => KvOp::Get { key },
            4..=6 => KvOp::Put { key, value },
            7 => KvOp::Del { key },
            _ => {
                // Expect a value some put may have written.
                let other = self.rng.below(self.clients.len() as u64);
                let number = self.rng.range(1, self.clients[other as usize].next_request_number.max(1));
                KvOp::Cas { key, expected: self.value(other as usize, number), value }
            }
        }
    }

    fn client_tick(&mut self, c: usize, issue: bool) {
        match self.clients[c].outstanding.clone() {
            None if issue && self.rng.below(4) == 0 => {
                let op = self.random_op(c);
                let client = &mut self.clients[c];
                let request = Request {
                    client_id: client.id,
                    request_number: client.next_request_number,
                    op: op.encode(),
                };
                client.next_request_number += 1;
                self.history.push(Operation {
                    client_id: request.client_id,
                    request_number: request.request_number,
                    op,
                    result: None,
                    invoke: self.tick,
                    ret: None,
                });
                let index = self.history.len() - 1;
                self.clients[c].outstanding = Some((request.clone(), index, self.tick));
                let leader = (self.clients[c].view_guess % u64::from(self.n)) as u8;
                self.send(Node::Client(c), Node::Replica(leader), Payload::Request(request));
            }
            Some((request, index, sent)) if self.tick - sent >= CLIENT_TIMEOUT_TICKS => {
                self.clients[c].outstanding = Some((request.clone(), index, self.tick));
                for r in 0..self.n {
                    self.send(Node::Client(c), Node::Replica(r), Payload::Request(request.clone()));
                }
            }
            None | Some(_) => {}
        }
    }

    fn on_client_reply(&mut self, c: usize, reply: Reply) {
        let client = &mut self.clients[c];
        let Some((request, index, _)) = client.outstanding.as_ref() else { return };
        if reply.request_number != request.request_number {
            return;
        }
        let index = *index;
        client.view_guess = client.view_guess.max(reply.view);
        client.outstanding = None;
        // The client table (1 << 16 entries) never fills here: an eviction
        // reply would be a session wrongly refused.
        assert!(!reply.session_evicted, "session evicted without an eviction: {reply:?}");
        let result = KvResult::decode(&reply.result).expect("replies decode");
        self.history[index].result = Some(result);
        self.history[index].ret = Some(self.tick);
        self.totals.requests_completed += 1;
    }

    // ---------------------------------------------------------------
    // Faults
    // ---------------------------------------------------------------

    fn inject_faults(&mut self) {
        let profile = self.profile;
        // Crash a replica while at most f are down or recovering.
        if self.rng.ppm(profile.crash_ppm) && self.down_or_recovering() < self.f {
            let i = self.rng.below(u64::from(self.n)) as u8;
            self.crash(i);
        }
        if !self.beyond_f && self.rng.ppm(profile.beyond_f_ppm) {
            self.crash_beyond_f();
        }
        if self.rng.ppm(profile.pause_ppm) {
            let i = self.rng.below(u64::from(self.n)) as usize;
            if self.paused_until[i] <= self.tick {
                self.totals.pauses += 1;
                self.paused_until[i] = self.tick + self.rng.range(10, profile.pause_ticks_max);
            }
        }
        // Partitions: a random group, or one replica, cut off, both ways
        // or one way.
        if self.heal_at == 0 && self.rng.ppm(profile.partition_ppm) {
            self.totals.partitions += 1;
            let one_way = self.rng.below(100) < profile.one_way_percent;
            let side: Vec<bool> = if self.rng.below(100) < profile.isolate_percent {
                let lonely = self.rng.below(u64::from(self.n)) as u8;
                (0..self.n).map(|r| r == lonely).collect()
            } else {
                (0..self.n).map(|_| self.rng.below(2) == 0).collect()
            };
            for a in 0..self.n as usize {
                for b in 0..self.n as usize {
                    if side[a] && !side[b] {
                        self.blocked[a][b] = true;
                        if !one_way {
                            self.blocked[b][a] = true;
                        }
                    }
                }
            }
            self.heal_at = self.tick + self.rng.range(20, profile.partition_ticks_max);
        }
        if self.heal_at != 0 && self.tick >= self.heal_at {
            self.heal();
        }
    }

    /// More than f replicas crash on one tick and restart together (up to
    /// all but one; the one left holds state): without memory, no protocol
    /// can tell which ops were acknowledged, so the cluster must block.
    fn crash_beyond_f(&mut self) {
        let holders: Vec<u8> = (0..self.n)
            .filter(|&i| self.replicas[i as usize].as_ref().is_some_and(|r| !r.amnesic()))
            .collect();
        if holders.is_empty() {
            return;
        }
        let survivor = holders[self.rng.below(holders.len() as u64) as usize];
        let mut victims: Vec<u8> = (0..self.n).filter(|&i| i != survivor).collect();
        // f+1 .. n-1 of them.
        let count = self.rng.range(self.f as u64 + 1, u64::from(self.n) - 1) as usize;
        while victims.len() > count {
            victims.remove(self.rng.below(victims.len() as u64) as usize);
        }
        let restart_at = self.tick + self.rng.range(5, 60);
        for &i in &victims {
            self.crash(i);
            self.restart_at[i as usize] = restart_at;
        }
        self.beyond_f = true;
        self.totals.beyond_f_crashes += 1;
    }

    fn heal(&mut self) {
        self.heal_at = 0;
        self.paused_until.iter_mut().for_each(|p| *p = 0);
        self.blocked.iter_mut().for_each(|row| row.iter_mut().for_each(|b| *b = false));
    }

    fn restart_due(&mut self, all: bool) {
        for i in 0..self.n {
            if self.replicas[i as usize].is_none() && (all || self.tick >= self.restart_at[i as usize]) {
                self.boot_replica(i);
            }
        }
    }

    fn step(&mut self, issue: bool) {
        self.tick += 1;
        if self.faulty && !self.boot_only {
            self.inject_faults();
        }
        self.restart_due(!self.faulty);
        self.deliver_due();
        if self.durable {
            self.complete_writes();
        }
        for i in 0..self.n {
            if self.replicas[i as usize].is_none() || self.paused_until[i as usize] > self.tick {
                continue;
            }
            self.flush_kernel(i);
            let replica = self.replicas[i as usize].as_mut().expect("live");
            let mut out = Vec::new();
            replica.on_tick(&mut out);
            self.run_actions(i, out);
        }
        for c in 0..self.clients.len() {
            self.client_tick(c, issue);
        }
    }

    fn outstanding(&self) -> usize {
        self.clients.iter().filter(|c| c.outstanding.is_some()).count()
    }
}

/// Runs one seed; Err describes a violated checker.
fn run_seed(seed: u64, options: Options) -> Result<Totals, String> {
    let mut sim = Sim::new(seed, options);
    let fault_ticks = sim.rng.range(FAULT_TICKS_MIN, FAULT_TICKS_MAX);
    for _ in 0..fault_ticks {
        sim.step(true);
    }
    // Faults stop: heal, restart, no loss; clients finish what they started.
    sim.faulty = false;
    sim.heal();
    let healed_at = sim.tick;
    if sim.beyond_f {
        return finish_beyond_f(sim, healed_at);
    }
    // (e) Once the network heals, the view settles (every replica normal
    // in one view) within VIEW_SETTLE_TICKS, state transfers included.
    let mut settled = false;
    while !settled {
        let views: Vec<_> = sim
            .replicas
            .iter()
            .map(|r| r.as_ref().map(|r| (r.status() == Status::Normal, r.view())))
            .collect();
        settled = views.iter().all(|v| *v == Some((true, views[0].map_or(0, |v| v.1))));
        if !settled && sim.tick - healed_at > VIEW_SETTLE_TICKS {
            return Err(format!(
                "(e) view not settled {VIEW_SETTLE_TICKS} ticks after the network healed: {:?}",
                sim.replica_states()
            ));
        }
        sim.step(false);
    }
    sim.totals.settle_ticks_max = sim.totals.settle_ticks_max.max(sim.tick - healed_at);
    liveness(&mut sim, healed_at)?;
    finish(sim)
}

/// (d) Once faults stop, every outstanding request completes within
/// LIVENESS_TICKS.
fn liveness(sim: &mut Sim, healed_at: u64) -> Result<(), String> {
    while sim.outstanding() > 0 {
        if sim.tick - healed_at > LIVENESS_TICKS {
            return Err(format!(
                "(d) liveness: {} requests still outstanding {LIVENESS_TICKS} ticks after faults stopped; \
                 replicas (view, status, op, commit): {:?}",
                sim.outstanding(),
                sim.replica_states()
            ));
        }
        sim.step(false);
    }
    sim.totals.liveness_ticks_max = sim.totals.liveness_ticks_max.max(sim.tick - healed_at);
    Ok(())
}

/// More than f replicas crashed at once: blocked or correct. After the
/// faults stop, either the cluster serves (every request completes) or a
/// replica says it is blocked; the safety checkers ran after every step
/// either way, so it never served another history.
fn finish_beyond_f(mut sim: Sim, healed_at: u64) -> Result<Totals, String> {
    while sim.tick - healed_at < VIEW_SETTLE_TICKS {
        sim.step(false);
    }
    let blocked = sim.replicas.iter().flatten().any(|r| r.recovery_blocked().is_some());
    if blocked {
        sim.totals.blocked_seeds += 1;
        // Let the survivors settle what they can, then check.
        for _ in 0..200 {
            sim.step(false);
        }
    } else {
        liveness(&mut sim, healed_at)?;
    }
    finish(sim)
}

/// Equal commits mean equal state; the history is linearizable; no view
/// change was refused.
fn finish(mut sim: Sim) -> Result<Totals, String> {
    // Let every replica catch up, then equal commits must mean equal state.
    for _ in 0..200 {
        sim.step(false);
    }
    let mut digests: HashMap<u64, u64> = HashMap::new();
    for replica in sim.replicas.iter().flatten() {
        let digest = *digests.entry(replica.commit()).or_insert(replica.digest());
        if digest != replica.digest() {
            return Err(format!("state digests differ at commit {}", replica.commit()));
        }
    }
    check::check(&sim.history).map_err(|v| format!("(c) {v}"))?;
    let replicas: Vec<Replica> = sim.replicas.iter_mut().filter_map(Option::take).collect();
    for replica in &replicas {
        sim.absorb_stats(replica);
    }
    if sim.totals.view_change_refusals > 0 {
        return Err(format!(
            "(f) {} view changes refused: a DoViewChange committed beyond the chosen log",
            sim.totals.view_change_refusals
        ));
    }
    sim.totals.ops_committed = sim.committed.len() as u64;
    Ok(sim.totals)
}

/// Runs a seed, turning a panic (an assertion in the core or a checker)
/// into an error.
fn run_seed_caught(seed: u64, options: Options) -> Result<Totals, String> {
    match std::panic::catch_unwind(|| run_seed(seed, options)) {
        Ok(result) => result,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panic: {text}"))
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

#[test]
fn simulator_seed_sweep() {
    let seeds: Vec<u64> = match env_u64("ELECTRODE_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_u64("ELECTRODE_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT)).collect(),
    };
    let started = std::time::Instant::now();
    let mut totals = Totals::default();
    for &seed in &seeds {
        match run_seed_caught(seed, Options::default()) {
            Ok(t) => totals.add(&t),
            Err(e) => panic!(
                "seed {seed} failed: {e}\nprofile: {:?}\nreplay: ELECTRODE_SIM_SEED={seed} \
                 ELECTRODE_SIM_TRACE=1 cargo test --release --test sim -- --nocapture",
                Profile::draw(seed)
            ),
        }
    }
    println!("sim: {} seeds in {:.1?}: {totals:?}", seeds.len(), started.elapsed());
    print_profile_spread(&seeds);
    if seeds.len() >= 20 {
        // Faults really happened, and the protocol really worked.
        assert!(totals.ops_committed > 0 && totals.requests_completed > 0);
        assert!(totals.view_changes > 0, "no view change");
        assert!(totals.state_transfers > 0, "no state transfer");
        assert!(totals.view_change_repairs > 0, "no new leader ever fetched committed ops it lacked");
        assert!(totals.snapshots_installed > 0, "no snapshot was ever streamed and installed");
        assert!(totals.snapshot_chunks > 10 * totals.snapshots_installed, "snapshots were all tiny");
        assert!(totals.recoveries > 0, "no recovery");
        assert!(totals.checkpoints > 0, "no checkpoint");
        assert!(totals.crashes > 0 && totals.partitions > 0);
        assert!(totals.dropped > 0 && totals.duplicated > 0 && totals.reordered > 0 && totals.delayed > 0);
        assert!(totals.kernel_acks > 0, "kernel fast path never acked");
        assert!(totals.batched_prepares > 0);
    }
}

/// The sweep in durable mode (on seeds of its own): every checker, plus
/// (g): no ack and no own vote runs ahead of the replica's disk.
#[test]
fn simulator_durable_sweep() {
    let seeds: Vec<u64> = match env_u64("ELECTRODE_SIM_DURABLE_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_u64("ELECTRODE_SIM_DURABLE_SEEDS").unwrap_or(DURABLE_SEEDS_DEFAULT))
            .map(|k| DURABLE_SEED_BASE + k)
            .collect(),
    };
    let started = std::time::Instant::now();
    let persists_before = PERSISTS_COMPLETED.load(Ordering::Relaxed);
    let mut totals = Totals::default();
    for &seed in &seeds {
        match run_seed_caught(seed, Options { durable: true, ..Options::default() }) {
            Ok(t) => totals.add(&t),
            Err(e) => panic!(
                "durable seed {seed} failed: {e}\nprofile: {:?}\nreplay: ELECTRODE_SIM_DURABLE_SEED={seed} \
                 ELECTRODE_SIM_TRACE=1 cargo test --release --test sim simulator_durable_sweep -- --nocapture",
                Profile::draw(seed)
            ),
        }
    }
    let persists = PERSISTS_COMPLETED.load(Ordering::Relaxed) - persists_before;
    println!("sim durable: {} seeds in {:.1?}: {totals:?}", seeds.len(), started.elapsed());
    println!("sim durable: {persists} writes completed");
    if seeds.len() >= 20 {
        assert!(totals.ops_committed > 0 && totals.requests_completed > 0);
        assert!(totals.view_changes > 0 && totals.state_transfers > 0 && totals.recoveries > 0);
        assert!(totals.crashes > 0 && totals.checkpoints > 0);
        assert_eq!(totals.kernel_acks, 0, "the kernel fast path is off in durable mode");
        assert!(persists > 0, "no write completed");
    }
}

/// How the seeds' fault profiles spread (swarm testing): the range of each
/// knob and how many seeds had each kind of fault.
fn print_profile_spread(seeds: &[u64]) {
    let profiles: Vec<Profile> = seeds.iter().map(|&s| Profile::draw(s)).collect();
    let range = |f: &dyn Fn(&Profile) -> u64| {
        let values = profiles.iter().map(f);
        (values.clone().min().unwrap_or(0), values.max().unwrap_or(0))
    };
    let count = |f: &dyn Fn(&Profile) -> bool| profiles.iter().filter(|p| f(p)).count();
    println!(
        "profiles: loss ppm {:?}, duplicates ppm {:?}, crash ppm {:?}, partition ppm {:?}, \
         partition ticks max {:?}, pause ppm {:?}, value bytes {:?}",
        range(&|p| p.drop_ppm),
        range(&|p| p.dup_ppm),
        range(&|p| p.crash_ppm),
        range(&|p| p.partition_ppm),
        range(&|p| p.partition_ticks_max),
        range(&|p| p.pause_ppm),
        range(&|p| p.value_len as u64),
    );
    println!(
        "profiles: of {} seeds, {} lossless, {} over 6% loss, {} without crashes, {} without partitions, \
         {} with isolations up to 1200 ticks, {} with pauses, {} with large values, {} may crash more \
         than f at once",
        profiles.len(),
        count(&|p| p.drop_ppm == 0),
        count(&|p| p.drop_ppm > 60_000),
        count(&|p| p.crash_ppm == 0),
        count(&|p| p.partition_ppm == 0),
        count(&|p| p.partition_ticks_max >= 1200),
        count(&|p| p.pause_ppm > 0),
        count(&|p| p.value_len > 0),
        count(&|p| p.beyond_f_ppm > 0),
    );
}

/// Boot without races: the replicas start one by one, in a random order,
/// with random delays, on a lossy network (drops, duplicates, reordering).
/// Every boot ends with all replicas normal in one view within a bound;
/// when all start within the view-change timeout, view 0 (led by replica
/// 0) is that view, whatever the order.
#[test]
fn staggered_boots_end_normal_in_one_view() {
    let seeds = env_u64("ELECTRODE_SIM_BOOT_SEEDS").unwrap_or(300);
    let (mut quick, mut slow) = (0, 0);
    for seed in 1..=seeds {
        let probe = Sim::new(seed, Options { boot_within: Some(1), ..Options::default() });
        let timeout = probe.base_config.view_change_timeout_ticks;
        let boot_wait = probe.base_config.boot_wait_ticks;
        // Half the seeds start everyone within the view-change timeout, the
        // other half spread the starts over up to five boot waits.
        let within = if seed % 2 == 0 { timeout } else { 5 * boot_wait };
        let mut sim = Sim::new(seed, Options { boot_within: Some(within), ..Options::default() });
        let last_start = *sim.restart_at.iter().max().expect("replicas");
        // After the last start: the boot wait, a few escalating view
        // changes, and the resends that loss costs.
        let bound = last_start + boot_wait + 32 * timeout;
        let settled = loop {
            if sim.tick > bound {
                break None;
            }
            sim.step(false);
            let states: Vec<_> =
                sim.replicas.iter().map(|r| r.as_ref().map(|r| (r.status(), r.view()))).collect();
            if states.iter().all(|s| matches!(s, Some((Status::Normal, _))))
                && states.iter().all(|s| s.map(|s| s.1) == states[0].map(|s| s.1))
            {
                break states[0].map(|s| s.1);
            }
        };
        let Some(view) = settled else {
            panic!(
                "seed {seed}: replicas started within {within} ticks were not all normal in one view \
                 {bound} ticks in: {:?}",
                sim.replicas
                    .iter()
                    .map(|r| r.as_ref().map(|r| (r.view(), r.status().name())))
                    .collect::<Vec<_>>()
            );
        };
        if within <= timeout {
            assert_eq!(view, 0, "seed {seed}: all started within the view-change timeout, yet view {view}");
            quick += 1;
        } else {
            slow += 1;
        }
    }
    println!("boots: {quick} within the timeout (all in view 0), {slow} spread out (all normal in one view)");
}

/// At 10% loss of every datagram, the protocol with the kernel fast path
/// (fast_reply on every follower) completes about as many requests as
/// without it on the same seeds: handing the log to the kernel and back
/// around gaps loses no Prepare and costs no extra round trips. What the
/// simulator cannot show is time spent asleep: here a tick is a fraction of
/// a round trip, on a real replica it is many; bench/liveness.sh measures
/// that part.
#[test]
fn loss_costs_the_kernel_path_no_more_than_user_space() {
    let seeds = env_u64("ELECTRODE_SIM_LOSS_SEEDS").unwrap_or(40);
    const TICKS: u64 = 3000;
    let completed = |seed: u64, kernel: bool| {
        let mut sim = Sim::new(seed, Options { lossy: Some((100_000, kernel)), ..Options::default() });
        for _ in 0..TICKS {
            sim.step(true);
        }
        sim.totals.requests_completed
    };
    let (mut user, mut kernel) = (0, 0);
    for seed in 1..=seeds {
        user += completed(seed, false);
        kernel += completed(seed, true);
    }
    println!("10% loss, {seeds} seeds of {TICKS} ticks: user space {user} requests, kernel path {kernel}");
    assert!(user > 0);
    assert!(
        kernel * 10 >= user * 9,
        "at 10% loss the kernel path completed {kernel} requests, user space {user}"
    );
}

/// Cuts replica `i` off from every other replica, both ways, or joins it
/// back (`cut == false`).
fn isolate(sim: &mut Sim, i: u8, cut: bool) {
    for j in 0..sim.n as usize {
        if j != i as usize {
            sim.blocked[i as usize][j] = cut;
            sim.blocked[j][i as usize] = cut;
        }
    }
}

/// Replica `i`, which must be up.
fn live(sim: &Sim, i: usize) -> &Replica {
    sim.replicas[i].as_ref().expect("replica up")
}

/// Steps until `done` holds, at most `ticks_max` ticks; Err names `what`.
fn step_until(
    sim: &mut Sim,
    issue: bool,
    ticks_max: u64,
    what: &str,
    done: impl Fn(&Sim) -> bool,
) -> Result<(), String> {
    let start = sim.tick;
    while !done(sim) {
        if sim.tick - start > ticks_max {
            return Err(format!("scripted: {what} did not happen within {ticks_max} ticks"));
        }
        sim.step(issue);
    }
    Ok(())
}

/// Issue 20's scenario, scripted (f = 1; A = 0, B = 1, C = 2): C is cut
/// off while A and B commit 1,200 acknowledged puts of 800 bytes (a 4 KiB
/// page holds four entries); A is cut off; B and C form view 1 and C
/// installs one page; then B is cut off (or crashes and restarts 40 ticks
/// later) and C and A must form view 2 with every acknowledged op. The
/// rule before the fix (C a member of view 1 after one page) wedged the
/// cluster or lost 1,196 ops; every checker of the sweep runs here too.
fn scripted_catch_up(bug: bool, crash_b: bool) -> Result<Totals, String> {
    let options = Options {
        scripted: true,
        #[cfg(feature = "sim-bugs")]
        bug: bug.then_some(electrode::vr::Bug::CatchUpEndsAfterOnePage),
        ..Options::default()
    };
    let _ = bug;
    let mut sim = Sim::new(1, options);
    step_until(&mut sim, true, 2_000, "20 ops on every replica", |sim| {
        (0..3).all(|i| live(sim, i).commit() >= 20 && live(sim, i).status() == Status::Normal)
    })?;
    // C stops (as under SIGSTOP: no ticks) and its datagrams are lost.
    isolate(&mut sim, 2, true);
    sim.paused_until[2] = u64::MAX;
    let c_op = live(&sim, 2).op();
    step_until(&mut sim, true, 20_000, "1,200 ops committed without C", |sim| {
        live(sim, 0).commit() >= c_op + 1_200
    })?;
    // A cut off as C comes back: B and C form view 1 on B's log.
    isolate(&mut sim, 2, false);
    sim.paused_until[2] = 0;
    isolate(&mut sim, 0, true);
    step_until(&mut sim, true, 5_000, "C in view 1 with one page installed", |sim| {
        let c = live(sim, 2);
        c.view() == 1 && c.status() == Status::Normal && c.op() > c_op
    })?;
    let (c_view_op, b_op) = (live(&sim, 2).op(), live(&sim, 1).op());
    println!(
        "scripted: C caught {} of {} ops (its op {c_view_op}, B's {b_op}), catching up: {}",
        c_view_op - c_op,
        b_op - c_op,
        live(&sim, 2).catching_up()
    );
    isolate(&mut sim, 0, false);
    if crash_b {
        sim.crash(1);
        sim.restart_at[1] = sim.tick + 40;
    } else {
        isolate(&mut sim, 1, true);
    }
    // C and A alone for a while: they must form a view holding every
    // acknowledged op, or wait; never commit another history.
    for _ in 0..3_000 {
        sim.step(true);
    }
    sim.faulty = false;
    sim.heal();
    let healed_at = sim.tick;
    step_until(&mut sim, false, VIEW_SETTLE_TICKS, "every replica normal in one view", |sim| {
        let views: Vec<_> = sim
            .replicas
            .iter()
            .map(|r| r.as_ref().map(|r| (r.status() == Status::Normal, r.view())))
            .collect();
        views.iter().all(|v| *v == Some((true, views[0].map_or(0, |v| v.1))))
    })?;
    liveness(&mut sim, healed_at)?;
    finish(sim)
}

/// The scripted scenario passes with the fix, and the rule before it
/// (mutation CatchUpEndsAfterOnePage) fails it, in both endings.
#[test]
fn scripted_catch_up_then_two_view_changes_keeps_acknowledged_ops() {
    for crash_b in [false, true] {
        let ending = if crash_b { "B crashes and restarts" } else { "B cut off" };
        match std::panic::catch_unwind(|| scripted_catch_up(false, crash_b)) {
            Ok(Ok(totals)) => println!("scripted ({ending}): passed, {} ops committed", totals.ops_committed),
            Ok(Err(e)) => panic!("scripted ({ending}): {e}"),
            Err(_) => panic!("scripted ({ending}): a checker fired (see above)"),
        }
        let old_rule = match std::panic::catch_unwind(|| scripted_catch_up(true, crash_b)) {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        };
        let old_rule =
            old_rule.unwrap_or_else(|| panic!("scripted ({ending}): the one-page rule went unnoticed"));
        println!("scripted ({ending}), one-page rule: {}", old_rule.lines().next().unwrap_or(""));
    }
}

/// Beyond f, scripted: two of three replicas crash on one tick and restart
/// together beside the third, which holds every committed op: they wait
/// (blocked, naming it) and the cluster serves nothing else; every replica
/// restarted: in memory nothing survives, and each replica says so when it
/// boots (the durable log is a separate issue).
#[test]
fn two_of_three_restarted_block_and_a_full_restart_says_it_lost_everything() {
    let mut sim = Sim::new(2, Options { scripted: true, ..Options::default() });
    step_until(&mut sim, true, 5_000, "50 ops committed everywhere", |sim| {
        (0..3).all(|i| live(sim, i).commit() >= 50)
    })
    .unwrap();
    for i in [0, 2] {
        sim.crash(i);
        sim.restart_at[i as usize] = sim.tick + 20;
    }
    for _ in 0..3_000 {
        sim.step(true);
    }
    let holder = live(&sim, 1);
    assert!(holder.commit() >= 50);
    for i in [0, 2] {
        let replica = live(&sim, i);
        assert_eq!(replica.status(), Status::Recovering, "replica {i} did not wait");
        let blocked = replica.recovery_blocked().unwrap_or_else(|| panic!("replica {i} is not blocked"));
        assert_eq!((blocked.replica, blocked.op), (1, holder.op()), "replica {i} names the wrong holder");
        assert!(replica.last_transition().0.starts_with("recovering: waiting"));
    }
    println!(
        "two of three restarted: both blocked on replica 1 (op {}, commit {})",
        holder.op(),
        holder.commit()
    );
    // Every replica restarted: a new cluster, said so.
    for i in 0..3 {
        sim.crash(i);
        sim.restart_at[i as usize] = sim.tick + 20;
    }
    sim.committed.clear();
    sim.start_views.clear();
    sim.leaders.clear();
    step_until(&mut sim, true, 5_000, "every replica normal after the full restart", |sim| {
        (0..3).all(|i| sim.replicas[i].as_ref().is_some_and(|r| r.status() == Status::Normal))
    })
    .unwrap();
    for i in 0..3 {
        let why = live(&sim, i).last_transition().0;
        assert!(why.contains("in-memory data does not survive"), "replica {i}: {why}");
    }
}

#[test]
fn rng_is_deterministic() {
    let a: Vec<u64> = (0..4).scan(Rng::new(9), |r, _| Some(r.next_u64())).collect();
    let b: Vec<u64> = (0..4).scan(Rng::new(9), |r, _| Some(r.next_u64())).collect();
    assert_eq!(a, b);
    assert_ne!(a[0], a[1]);
}

/// Mutation tests: the simulator must notice each injected bug within
/// MUTATION_SEEDS_MAX seeds.
#[cfg(feature = "sim-bugs")]
mod mutations {
    use super::*;
    use electrode::vr::Bug;

    const MUTATION_SEEDS_MAX: u64 = 200;

    fn finds(bug: Bug) {
        finds_in(bug, false);
    }

    /// `durable`: on the durable sweep's seeds, in durable mode.
    fn finds_in(bug: Bug, durable: bool) {
        for k in 1..=MUTATION_SEEDS_MAX {
            let seed = if durable { DURABLE_SEED_BASE + k } else { k };
            if let Err(e) = run_seed_caught(seed, Options { bug: Some(bug), durable, ..Options::default() }) {
                println!(
                    "{bug:?} found by seed {seed} ({:?}): {}",
                    Profile::draw(seed),
                    e.lines().next().unwrap_or("")
                );
                return;
            }
        }
        panic!("{bug:?} survived {MUTATION_SEEDS_MAX} seeds");
    }

    /// One test per planted bug: the sweep must find it.
    macro_rules! found {
        ($($(#[$doc:meta])* $name:ident: $bug:ident;)*) => {
            $(
                $(#[$doc])*
                #[test]
                fn $name() {
                    finds(Bug::$bug);
                }
            )*
        };
    }

    found! {
        commit_one_ack_short_is_found: CommitOneAckShort;
        view_change_wrong_log_is_found: ViewChangeWrongLog;
        /// Today's rule before issue 20: a replica catching up claims the
        /// view after its first page.
        catch_up_ends_after_one_page_is_found: CatchUpEndsAfterOnePage;
        /// Today's rule before issue 20: f peers without memory are enough
        /// to boot, whatever another peer holds.
        boot_beside_a_replica_with_state_is_found: BootBesideStateHolder;
    }

    /// Durable mode: a follower that acks what it has not persisted yet
    /// is found by checker (g).
    #[test]
    fn ack_before_persist_is_found() {
        finds_in(Bug::AckBeforePersist, true);
    }

    /// Durable mode: a leader that counts itself for ops not on its disk
    /// is found by checker (g).
    #[test]
    fn vote_before_persist_is_found() {
        finds_in(Bug::VoteBeforePersist, true);
    }
}

/// Replica `i` taken out of `sim` to be fed messages by hand, with what it
/// did meanwhile: an armed kernel path is disarmed first (a Commit of the
/// next view, then the drain), as the simulated kernel state is gone with
/// the cluster.
fn take_disarmed(sim: &mut Sim, i: u8) -> Option<(Replica, Vec<Action>)> {
    let mut replica = sim.replicas[i as usize].take()?;
    let mut out = Vec::new();
    if replica.kernel_armed().is_some() {
        let commit = Message::Commit(wire::Commit { view: replica.view() + 1, commit: 0 });
        replica.on_message((i + 1) % sim.n, commit, &mut out);
        replica.on_kernel_disarmed(Vec::new(), &mut out);
    }
    Some((replica, out))
}

/// Views, ops and commits near u64::MAX from a member's address: every
/// message type, each number at 2^62 - 1, 2^62, u64::MAX - 1 and u64::MAX.
/// The replica must neither panic nor wrap (debug builds check overflow),
/// and its view must stay far from a wrap through 2000 ticks of timeouts.
#[test]
fn extreme_numbers_are_refused_or_handled() {
    use electrode::vr::replica::NETWORK_NUMBER_MAX;
    use electrode::wire::{
        Commit, DoViewChange, GetState, LogEntry, NewState, NewStateKind, RecoveryResponse, SnapshotChunk,
        SnapshotRequest, StartView, StartViewChange, StateBlob,
    };
    let extremes = [NETWORK_NUMBER_MAX - 1, NETWORK_NUMBER_MAX, u64::MAX - 1, u64::MAX];
    let mut sim = Sim::new(3, Options::default());
    for _ in 0..400 {
        sim.step(true);
    }
    let mut delivered = 0;
    for i in 0..sim.n {
        let Some((mut replica, mut out)) = take_disarmed(&mut sim, i) else { continue };
        let from = (i + 1) % sim.n;
        for &x in &extremes {
            let entry = |op: u64| LogEntry {
                op,
                view: x,
                batch: vec![Request { client_id: 1, request_number: 1, op: vec![1] }],
            };
            let blob = StateBlob { checkpoint_op: x - 1, snapshot: Vec::new(), entries: vec![entry(x)] };
            let messages = vec![
                Message::Prepare(Prepare { view: x, op: x, commit: x, batch: entry(x).batch }),
                Message::Prepare(Prepare { view: replica.view(), op: x, commit: x, batch: entry(x).batch }),
                Message::PrepareOk(PrepareOk { view: x, op: x, replica: from, gap: false }),
                Message::PrepareOk(PrepareOk { view: replica.view(), op: x, replica: from, gap: false }),
                Message::Commit(Commit { view: x, commit: x }),
                Message::Commit(Commit { view: replica.view(), commit: x }),
                Message::StartViewChange(StartViewChange { view: x, replica: from }),
                Message::DoViewChange(DoViewChange {
                    view: x,
                    last_normal_view: x - 1,
                    op: x,
                    commit: x,
                    replica: from,
                    state: blob.clone(),
                }),
                Message::StartView(StartView { view: x, op: x, commit: x, state: blob.clone() }),
                Message::GetState(GetState { view: x, op: x, replica: from }),
                Message::GetState(GetState { view: replica.view(), op: x, replica: from }),
                Message::NewState(NewState {
                    view: x,
                    op: x,
                    commit: x,
                    head: x,
                    kind: NewStateKind::Page,
                    state: blob.clone(),
                }),
                Message::NewState(NewState {
                    view: replica.view(),
                    op: x,
                    commit: x,
                    head: x,
                    kind: NewStateKind::SnapshotOffer,
                    state: blob.clone(),
                }),
                Message::RecoveryResponse(RecoveryResponse {
                    view: x,
                    nonce: 1,
                    op: x,
                    commit: x,
                    replica: from,
                    status: 1,
                    state: blob.clone(),
                }),
                Message::SnapshotRequest(SnapshotRequest {
                    view: x,
                    snapshot_op: x,
                    offset: x,
                    replica: from,
                }),
                Message::SnapshotChunk(SnapshotChunk {
                    view: x,
                    snapshot_op: x,
                    total_len: x,
                    digest: x,
                    offset: 0,
                    replica: from,
                    data: vec![0; 16],
                }),
            ];
            for message in messages {
                out.clear();
                replica.on_message(from, message, &mut out);
                if out.contains(&Action::KernelDisarm) {
                    replica.on_kernel_disarmed(Vec::new(), &mut out);
                }
                delivered += 1;
            }
        }
        // Timeouts: view changes start from whatever view we are in.
        for _ in 0..2000 {
            out.clear();
            replica.on_tick(&mut out);
            if out.contains(&Action::KernelDisarm) {
                replica.on_kernel_disarmed(Vec::new(), &mut out);
            }
        }
        // Accepted numbers are below 2^62; our own timeouts add at most one
        // view per tick from there: never near a wrap.
        assert!(
            replica.view() < NETWORK_NUMBER_MAX + 2000,
            "replica {i} was pulled into view {}",
            replica.view()
        );
        assert!(replica.op() < NETWORK_NUMBER_MAX && replica.commit() < NETWORK_NUMBER_MAX);
    }
    assert!(delivered > 100);
}

/// Network input is hostile: messages with inconsistent fields, forged
/// blobs and garbage snapshots must be dropped, never panic the core (its
/// assertions guard only its own state, checked after every input).
#[test]
fn hostile_messages_never_panic() {
    use electrode::wire::{
        Commit, DoViewChange, GetState, LogEntry, NewState, NewStateKind, Recovery, RecoveryResponse,
        StartView, StartViewChange, StateBlob,
    };
    fn near(rng: &mut Rng, x: u64) -> u64 {
        match rng.below(6) {
            0 => x.saturating_sub(1),
            1 => x,
            2 => x + 1,
            3 => x + rng.below(100),
            4 => rng.next_u64(),
            _ => 0,
        }
    }
    fn blob(rng: &mut Rng, op: u64) -> StateBlob {
        let checkpoint_op = near(rng, op.saturating_sub(3));
        let snapshot = match rng.below(3) {
            0 => Vec::new(),
            1 => (0..rng.below(40)).map(|_| rng.next_u64() as u8).collect(),
            _ => vec![0x45, 0x56, 0x52, 0x31, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let mut next = checkpoint_op.wrapping_add(1);
        let entries = (0..rng.below(6))
            .map(|_| {
                let op = if rng.below(5) == 0 { rng.next_u64() } else { next };
                next = op.wrapping_add(1);
                let batch = (0..rng.below(3))
                    .map(|k| Request { client_id: rng.below(3), request_number: k, op: vec![1, 0, 1, b'k'] })
                    .collect();
                LogEntry { op, view: rng.below(4), batch }
            })
            .collect();
        StateBlob { checkpoint_op, snapshot, entries }
    }
    for seed in 1..=30 {
        let mut sim = Sim::new(seed, Options::default());
        for _ in 0..300 {
            sim.step(true);
        }
        let mut rng = Rng::new(seed ^ 0x5eed);
        for i in 0..sim.n {
            let Some((mut replica, mut out)) = take_disarmed(&mut sim, i) else { continue };
            for _ in 0..400 {
                out.clear();
                let from = (i + 1 + rng.below(u64::from(sim.n) - 1) as u8) % sim.n;
                let (v, op, commit) = (replica.view(), replica.op(), replica.commit());
                let view = near(&mut rng, v);
                let message = match rng.below(12) {
                    0 => Message::Prepare(Prepare {
                        view,
                        op: near(&mut rng, op),
                        commit: near(&mut rng, commit),
                        batch: (0..rng.below(3))
                            .map(|k| Request {
                                client_id: 5,
                                request_number: k,
                                op: vec![9; rng.below(4) as usize],
                            })
                            .collect(),
                    }),
                    1 => Message::PrepareOk(PrepareOk {
                        view,
                        op: near(&mut rng, op),
                        replica: from,
                        gap: false,
                    }),
                    2 => Message::Commit(Commit { view, commit: near(&mut rng, commit) }),
                    3 => Message::StartViewChange(StartViewChange { view, replica: from }),
                    4 => Message::DoViewChange(DoViewChange {
                        view,
                        last_normal_view: near(&mut rng, v),
                        op: near(&mut rng, op),
                        commit: near(&mut rng, commit),
                        replica: from,
                        state: blob(&mut rng, op),
                    }),
                    5 => Message::StartView(StartView {
                        view,
                        op: near(&mut rng, op),
                        commit: near(&mut rng, commit),
                        state: blob(&mut rng, op),
                    }),
                    6 => Message::GetState(GetState { view, op: near(&mut rng, op), replica: from }),
                    7 => Message::NewState(NewState {
                        view,
                        op: near(&mut rng, op),
                        commit: near(&mut rng, commit),
                        head: near(&mut rng, op),
                        kind: [NewStateKind::Page, NewStateKind::SnapshotOffer, NewStateKind::Repair]
                            [rng.below(3) as usize],
                        state: blob(&mut rng, op),
                    }),
                    8 => Message::Recovery(Recovery { nonce: rng.next_u64(), replica: from }),
                    9 => Message::SnapshotRequest(wire::SnapshotRequest {
                        view,
                        snapshot_op: near(&mut rng, commit),
                        offset: near(&mut rng, 0).wrapping_mul(wire::SNAPSHOT_CHUNK_LEN as u64),
                        replica: from,
                    }),
                    10 => {
                        // A chunk of a snapshot we may be pulling, with any
                        // length, total and digest (the wire decoder checks
                        // offsets; these reach the core as decoded).
                        let total_len = near(&mut rng, 3 * wire::SNAPSHOT_CHUNK_LEN as u64);
                        let offset = rng.below(3) * wire::SNAPSHOT_CHUNK_LEN as u64;
                        let len = total_len.saturating_sub(offset).min(wire::SNAPSHOT_CHUNK_LEN as u64);
                        Message::SnapshotChunk(wire::SnapshotChunk {
                            view,
                            snapshot_op: near(&mut rng, commit),
                            total_len,
                            digest: rng.next_u64(),
                            offset,
                            replica: from,
                            data: vec![rng.below(256) as u8; len as usize],
                        })
                    }
                    _ => Message::RecoveryResponse(RecoveryResponse {
                        view,
                        nonce: rng.next_u64(),
                        op: near(&mut rng, op),
                        commit: near(&mut rng, commit),
                        replica: from,
                        status: rng.below(5) as u8,
                        state: blob(&mut rng, op),
                    }),
                };
                let view_before = replica.view();
                replica.on_message(from, message, &mut out);
                if out.contains(&Action::KernelDisarm) {
                    replica.on_kernel_disarmed(Vec::new(), &mut out);
                }
                assert!(replica.view() >= view_before);
                out.clear();
                replica.on_tick(&mut out);
                if out.contains(&Action::KernelDisarm) {
                    replica.on_kernel_disarmed(Vec::new(), &mut out);
                }
            }
        }
    }
}
