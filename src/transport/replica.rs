//! The replica process: one blocking thread, pinned to a CPU, that owns the
//! UDP socket and the VR core. It reads the clock (the core never does),
//! turns elapsed time into ticks, feeds datagrams to the core and executes
//! the core's actions.
//!
//! One thread on purpose: on a 2-vCPU machine every cross-thread hand-off is
//! a wake-up (~40 us across CPUs, docs/PLATFORM.md "Wake-ups"), more than a whole VR round.
//! The one other thread, with `--metrics`, answers scrapes from a copy this
//! thread makes every 100 ms without waiting (transport/metrics.rs).

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use super::client_addresses::{ClientAddresses, IDS_PER_ADDRESS_MAX};
use super::counts::DatagramCounts;
use super::kernel::{self, BroadcastPlan, Kernel, KernelInput};
use super::metrics::{self, LatencyRing};
use super::os;
use super::transitions::Transitions;
use crate::app::AppKind;
use crate::config::Config;
use crate::vr::{self, Action, Replica};
use crate::wire::{self, Decoded, Encoder, Message, MsgType, Reassembler, StatusReply, CLIENT_SENDER};

/// Length of one core tick. The core's timeouts are in ticks.
pub const TICK: Duration = Duration::from_millis(1);
/// Longest sleep of the loop (epoll): it wakes at least this often to run
/// ticks. Also the socket's read timeout, a backstop only.
const RECV_TIMEOUT: Duration = Duration::from_millis(1);
/// Most client addresses remembered for replies (one per client id; the
/// least recently used goes first, see client_addresses; at most
/// IDS_PER_ADDRESS_MAX of them per source address).
const CLIENT_ADDRESSES_MAX: usize = 1 << 16;
// One socket's quota is a small share of the bindings (client_addresses).
const _: () = assert!(CLIENT_ADDRESSES_MAX / IDS_PER_ADDRESS_MAX >= 16);
/// Bytes of partial large messages held at once (view change, state
/// transfer): a few full transfers of a checkpoint plus log.
const REASSEMBLY_BYTES_MAX: usize = 256 << 20;
/// Most datagrams read in one burst (one recvmmsg, without blocking) before
/// the leader prepares what the burst brought: bounds the delay of the
/// first request.
const BURST_MAX: usize = 64;
/// Ticks run per round of the event loop when behind (run_due_ticks): a
/// few, so the socket is read in between and a backlog of ticks after a
/// short preemption is worked off within a few rounds.
const TICKS_PER_ROUND_MAX: u32 = 4;
/// Behind by more than this (the process was stopped, or encoded a large
/// snapshot), the missed ticks are dropped instead of replayed.
const STALL_FORGOTTEN: Duration = Duration::from_millis(100);
/// Bound on actions produced by one input, checked after each call.
const ACTIONS_MAX: usize = 4096;

/// What `electrode replica` was asked to run.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    pub config: Config,
    pub index: usize,
    /// CPU to pin to; None: index % CPU count.
    pub cpu: Option<usize>,
    pub app: AppKind,
    pub checkpoint_interval_ops: u64,
    /// Print counters every this often (None: only at exit).
    pub report_interval: Option<Duration>,
    /// Interface for the eBPF programs; None: the one holding our address.
    pub iface: Option<String>,
    /// Prepare a burst of requests as one batch behind ops in flight.
    pub burst_batching: bool,
    /// Serve Prometheus metrics over HTTP on this address (GET /metrics).
    pub metrics: Option<SocketAddr>,
    /// Leader with ops in flight: poll for this long before sleeping
    /// (zero: always sleep).
    pub spin: Duration,
    /// `--accept-data-loss`: the operator's decision for a blocked
    /// recovery (vr::Config::accept_data_loss).
    pub accept_data_loss: bool,
}

/// Whether any eBPF fast path is compiled into this binary.
pub const FAST_PATHS_COMPILED: bool = cfg!(any(
    feature = "fast_reply",
    feature = "fast_quorum_prune",
    feature = "tc_broadcast",
    feature = "fast_intake"
));

/// The replica thread's state: the core, the socket and what the runtime
/// keeps beside them.
struct Runtime<'k> {
    /// The fast paths compiled in (None without any).
    kernel: Option<Kernel<'k>>,
    burst_batching: bool,
    spin: Duration,
    socket: UdpSocket,
    peers: Vec<SocketAddrV4>,
    index: u8,
    cluster_id: u32,
    encoder: Encoder,
    reassembler: Reassembler,
    core: Replica,
    clients: ClientAddresses,
    counts: DatagramCounts,
    actions: Vec<Action>,
    datagrams: Vec<Vec<u8>>,
    /// Datagrams of this round, sent together by flush_sends.
    sends: os::SendBatch,
    /// Where scrapes read from (with --metrics).
    metrics: Option<metrics::Shared>,
    /// Send times of the leader's Prepares (prepare→commit latency).
    latency: LatencyRing,
    #[cfg(feature = "test-faults")]
    faults: Option<super::faults::Faults>,
}

/// When the event loop next does each of its periodic jobs.
struct Schedule {
    tick: Instant,
    publish: Instant,
    kernel_read: Instant,
    report: Option<Instant>,
    report_interval: Option<Duration>,
}

/// Runs a replica until SIGINT/SIGTERM.
pub fn run(options: ReplicaOptions) -> anyhow::Result<()> {
    let config = &options.config;
    anyhow::ensure!(
        options.index < config.replica_count(),
        "replica index {} out of range: {} has replicas 0..{}",
        options.index,
        config.path.display(),
        config.replica_count() - 1
    );
    let cpu = options.cpu.unwrap_or(options.index % os::cpu_count());
    // The metrics thread starts before pinning, so it may run on any CPU
    // rather than compete with the replica thread for its own.
    let metrics = start_metrics(&options)?;
    os::pin_to_cpu(cpu)?;
    os::install_stop_handler()?;
    let address = config.replicas[options.index];
    let socket = os::bind_udp(address, Some(RECV_TIMEOUT))?;
    // The eBPF object and its attachments live until this function returns;
    // their Drop detaches everything on every exit path.
    let loaded = if FAST_PATHS_COMPILED { Some(kernel::load(config, options.index)?) } else { None };
    let _attached = match &loaded {
        Some(loaded) => Some(attach_kernel(loaded, &options, address)?),
        None => None,
    };
    let kernel = loaded.as_ref().map(|loaded| Kernel::new(loaded, config, options.index)).transpose()?;
    let vr_config = core_config(&options, kernel.as_ref().is_some_and(Kernel::fast_reply));
    let nonce = os::random_seed();
    let core = Replica::new(vr_config, options.app.build(), nonce);
    log_start(&options, cpu, address, boot_wait(core.config()));
    let mut runtime = Runtime::new(&options, socket, core, kernel, metrics)?;
    let result = runtime.event_loop(options.report_interval);
    runtime.log_exit();
    result
}

/// With `--metrics`: the thread that answers scrapes, and what it reads.
fn start_metrics(options: &ReplicaOptions) -> anyhow::Result<Option<metrics::Shared>> {
    let Some(address) = options.metrics else { return Ok(None) };
    let shared = metrics::Shared::default();
    let bound = metrics::serve(address, shared.clone())?;
    log::info!("electrode replica {}: metrics on http://{bound}/metrics", options.index);
    Ok(Some(shared))
}

/// Attaches the loaded programs to `--iface`, else to the interface that
/// holds our address.
fn attach_kernel<'a>(
    loaded: &'a crate::fastpath::Loaded,
    options: &ReplicaOptions,
    address: SocketAddrV4,
) -> anyhow::Result<kernel::Attached<'a>> {
    let iface = match &options.iface {
        Some(iface) => iface.clone(),
        None => kernel::interface_of(address)?,
    };
    let attached = kernel::attach(loaded, &iface)?;
    log::info!(
        "electrode replica {}: eBPF programs attached to {} (XDP {} mode{})",
        options.index,
        attached.iface,
        attached.xdp.mode(),
        if cfg!(feature = "tc_broadcast") { ", TC egress" } else { "" }
    );
    Ok(attached)
}

/// The core's configuration from the command line.
fn core_config(options: &ReplicaOptions, kernel_fast_reply: bool) -> vr::Config {
    let mut config = vr::Config::new(options.config.replica_count() as u8, options.index as u8);
    config.checkpoint_interval_ops = options.checkpoint_interval_ops;
    config.kernel_fast_reply = kernel_fast_reply;
    config.accept_data_loss = options.accept_data_loss;
    // Tests evict with a small client table instead of 65,536 fresh ids.
    #[cfg(feature = "test-faults")]
    if let Some(max) = std::env::var("ELECTRODE_TEST_CLIENT_TABLE_MAX").ok().and_then(|v| v.parse().ok()) {
        config.client_table_max = max;
    }
    config
}

fn log_start(options: &ReplicaOptions, cpu: usize, address: SocketAddrV4, boot_wait: Duration) {
    let index = options.index;
    let config = &options.config;
    log::info!(
        "electrode replica {index} on {address} (cpu {cpu}, app {:?}, f {}, cluster {:#010x}, fast paths: {}): recovering",
        options.app,
        config.f,
        config.cluster_id,
        crate::compiled_fast_paths()
    );
    if options.accept_data_loss {
        log::warn!(
            "electrode replica {index}: --accept-data-loss: if more than f replicas lost their memory while a \
             peer holds state, this replica joins a view change with an empty log after {boot_wait:?} of \
             recovering; acknowledged writes held only by the replicas without memory are lost"
        );
    }
}

/// The checks every received datagram passes before anything else sees
/// it, whether it came by the socket or by the kernel's request intake:
/// it decodes, and members only: a replica message must come from that
/// replica's configured address (`peers`), clients may only send requests
/// and status queries. Returns the decoded datagram, or why it is dropped.
pub fn screen(
    datagram: &[u8],
    from: SocketAddr,
    cluster_id: u32,
    peers: &[SocketAddrV4],
    index: u8,
) -> Result<(wire::Envelope, Decoded), &'static str> {
    let (envelope, decoded) = wire::decode(datagram, cluster_id).map_err(|error| error.reason())?;
    let sender = envelope.sender;
    if sender == CLIENT_SENDER {
        if !matches!(envelope.msg_type, MsgType::Request | MsgType::StatusRequest) {
            return Err("replica message from a client");
        }
    } else {
        let claimed = peers.get(sender as usize).copied().map(SocketAddr::V4);
        if claimed != Some(from) {
            return Err("sender address is not the replica's");
        }
        if sender == index {
            return Err("from ourselves");
        }
    }
    Ok((envelope, decoded))
}

/// A client request that passed [`screen`], on its way to the core: only
/// the leader binds the client id to `from` (a follower ignores requests,
/// so a forger who sprays every replica cannot bind a victim's id at a
/// follower first); a request for an id bound to another address is
/// dropped. Socket datagrams and the kernel intake's records both go
/// through this.
pub fn admit_request(
    core: &mut Replica,
    clients: &mut super::client_addresses::ClientAddresses,
    request: wire::Request,
    from: SocketAddr,
    out: &mut Vec<Action>,
) -> Result<(), &'static str> {
    if core.is_leader() && clients.on_request(request.client_id, from).is_err() {
        return Err("client id bound to another address");
    }
    core.on_request(request, out);
    Ok(())
}

/// How long a recovery waits before `--accept-data-loss` acts (and before
/// a boot goes on without view 0's leader).
fn boot_wait(config: &vr::Config) -> Duration {
    TICK.saturating_mul(config.boot_wait_ticks.try_into().unwrap_or(u32::MAX))
}

impl<'k> Runtime<'k> {
    fn new(
        options: &ReplicaOptions,
        socket: UdpSocket,
        core: Replica,
        kernel: Option<Kernel<'k>>,
        metrics: Option<metrics::Shared>,
    ) -> anyhow::Result<Runtime<'k>> {
        let config = &options.config;
        let index = options.index as u8;
        Ok(Runtime {
            kernel,
            burst_batching: options.burst_batching,
            spin: options.spin,
            socket,
            peers: config.replicas.clone(),
            index,
            cluster_id: config.cluster_id,
            encoder: Encoder::new(config.cluster_id, index),
            reassembler: Reassembler::new(REASSEMBLY_BYTES_MAX),
            core,
            clients: ClientAddresses::new(CLIENT_ADDRESSES_MAX, IDS_PER_ADDRESS_MAX),
            counts: DatagramCounts::default(),
            actions: Vec::with_capacity(64),
            datagrams: Vec::with_capacity(8),
            sends: os::SendBatch::new(),
            metrics,
            latency: LatencyRing::default(),
            #[cfg(feature = "test-faults")]
            faults: super::faults::Faults::from_env()?,
        })
    }

    /// One round per wake-up: wait for the next input, run the ticks that
    /// are due, then the periodic jobs and the log of what changed. Each
    /// input is handed to the core and its actions carried out at once.
    fn event_loop(&mut self, report_interval: Option<Duration>) -> anyhow::Result<()> {
        let waiter = os::Waiter::new(&self.socket)?;
        for fd in self.kernel.as_ref().map(Kernel::wait_fds).unwrap_or_default() {
            waiter.add(fd)?;
        }
        let mut burst = os::RecvBatch::new(BURST_MAX);
        let now = Instant::now();
        let mut schedule = Schedule {
            tick: now,
            publish: now,
            kernel_read: now,
            report: report_interval.map(|interval| now + interval),
            report_interval,
        };
        let mut transitions = Transitions::new(&self.core, boot_wait(self.core.config()));
        self.core.start(&mut self.actions);
        self.execute_actions()?;
        self.flush_sends();
        while !os::stop_requested() {
            if self.wait_for_input(&waiter, &schedule)? {
                self.on_burst(&mut burst)?;
            }
            let now = Instant::now();
            self.run_due_ticks(&mut schedule.tick, now)?;
            self.after_round(&mut schedule, now);
            transitions.log(&self.core);
            self.report(&mut schedule, now);
        }
        Ok(())
    }

    /// Sleeps until a datagram, a request in the kernel's ring, or the next
    /// tick, on a precise timer (the socket's read timeout, kept as a
    /// backstop, sleeps whole jiffies). True when input came.
    fn wait_for_input(&self, waiter: &os::Waiter, schedule: &Schedule) -> anyhow::Result<bool> {
        let wait = schedule.tick.saturating_duration_since(Instant::now()).min(RECV_TIMEOUT);
        // A kernel ring never wakes us (fast_intake): we sleep only once
        // it is empty (bpf/electrode.h, "Wake-ups").
        let ready = self.spin_before_sleep(waiter, wait)?
            || !self.kernel.as_ref().is_none_or(Kernel::may_sleep)
            || waiter.wait(wait)?;
        if let Some(kernel) = &self.kernel {
            kernel.on_wake();
        }
        Ok(ready)
    }

    /// A leader with ops in flight expects their acks within a round trip;
    /// a wake-up from another CPU costs more than that here (docs/PLATFORM.md, "Wake-ups").
    /// So it polls its socket (and the kernel's ring) with zero-timeout
    /// waits for up to `spin` (at most `wait`), yielding the CPU between
    /// polls to whatever else is runnable on it, before it sleeps. True
    /// when input came.
    fn spin_before_sleep(&self, waiter: &os::Waiter, wait: Duration) -> anyhow::Result<bool> {
        if self.spin.is_zero() || !self.core.is_leader() || self.core.op() <= self.core.commit() {
            return Ok(false);
        }
        let deadline = Instant::now() + self.spin.min(wait);
        loop {
            if waiter.wait(Duration::ZERO)? || self.kernel.as_ref().is_some_and(Kernel::has_input) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::yield_now();
        }
    }

    /// A wake-up: what the kernel took, then what waits in the socket (one
    /// recvmmsg), prepared together as one batch: under load this
    /// amortizes a Prepare and its acks over many requests.
    fn on_burst(&mut self, burst: &mut os::RecvBatch) -> anyhow::Result<()> {
        if self.burst_batching {
            self.core.hold_prepares();
        }
        self.hand_over_kernel_input(false)?;
        for i in 0..burst.recv(&self.socket)? {
            match burst.get(i) {
                (datagram, Some(from)) => self.on_datagram(datagram, from)?,
                (_, None) => self.counts.drop("sender address not IPv4"),
            }
        }
        self.core.release_prepares(&mut self.actions);
        self.execute_actions()?;
        self.after_input()?;
        self.flush_sends();
        Ok(())
    }

    /// Catches up on ticks a few at a time, reading the socket in between:
    /// after a stall of our own (a large snapshot encoded, the process
    /// paused) the datagrams waiting in the socket, the leader's among
    /// them, must count before the time we missed, or a follower would time
    /// its leader out for our own pause.
    fn run_due_ticks(&mut self, next_tick: &mut Instant, now: Instant) -> anyhow::Result<()> {
        let mut ticks = 0;
        while *next_tick <= now && ticks < TICKS_PER_ROUND_MAX {
            self.on_tick()?;
            *next_tick += TICK;
            ticks += 1;
        }
        if now.saturating_duration_since(*next_tick) > STALL_FORGOTTEN {
            // A stall this long is our own pause, not the others'
            // silence: it does not count towards any timeout.
            *next_tick = now + TICK;
        }
        Ok(())
    }

    fn on_tick(&mut self) -> anyhow::Result<()> {
        // Requests the kernel took outside a wake-up's burst are prepared
        // together too, as a burst of the socket would be.
        self.hand_over_kernel_input(self.burst_batching)?;
        self.core.on_tick(&mut self.actions);
        self.execute_actions()?;
        let mut input = Vec::new();
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.on_tick(&mut input)?;
        }
        for item in input {
            self.feed(item)?;
        }
        self.execute_actions()?;
        self.after_input()?;
        self.flush_sends();
        Ok(())
    }

    /// The end of a round: send what the fault layer delayed, observe
    /// commit latency, copy the numbers for scrapes when due.
    fn after_round(&mut self, schedule: &mut Schedule, now: Instant) {
        #[cfg(feature = "test-faults")]
        if let Some(faults) = self.faults.as_mut() {
            faults.flush_due(&self.socket);
        }
        if self.metrics.is_none() {
            return;
        }
        self.latency.on_commit(self.core.view(), self.core.commit(), now);
        if now >= schedule.publish {
            let read_kernel = now >= schedule.kernel_read;
            if read_kernel {
                schedule.kernel_read = now + metrics::KERNEL_READ_INTERVAL;
            }
            self.publish_metrics(read_kernel);
            schedule.publish = now + metrics::PUBLISH_INTERVAL;
        }
    }

    /// With `--report-interval`: the counters, when due.
    fn report(&self, schedule: &mut Schedule, now: Instant) {
        if let (Some(at), Some(interval)) = (schedule.report, schedule.report_interval) {
            if now >= at {
                log::info!("electrode replica {}: {}", self.index, self.counts.summary());
                schedule.report = Some(now + interval);
            }
        }
    }

    /// Copies the numbers for scrapes; skipped (until the next interval) if
    /// a scrape holds the lock: the replica thread never waits for one.
    fn publish_metrics(&mut self, read_kernel: bool) {
        let Some(shared) = &self.metrics else { return };
        let started = Instant::now();
        // Read the maps before taking the lock (syscalls).
        let kernel = match (&self.kernel, read_kernel) {
            (Some(kernel), true) => match kernel.kernel_counters() {
                Ok(counters) => Some(counters.named()),
                Err(error) => {
                    log::warn!("electrode replica {}: reading eBPF counters: {error:#}", self.index);
                    None
                }
            },
            _ => None,
        };
        let Ok(mut snapshot) = shared.try_lock() else { return };
        snapshot.fill(&self.core, &self.counts, &self.latency.histogram);
        if kernel.is_some() {
            snapshot.kernel = kernel;
        }
        snapshot.published = Some(Instant::now());
        snapshot.publish_seconds = started.elapsed().as_secs_f64();
    }

    /// The exit lines: the datagram counts for people, then the same as
    /// one JSON line for scripts and tests, then the kernel's.
    fn log_exit(&self) {
        let index = self.index;
        log::info!("electrode replica {index}: stopped; {}", self.counts.summary());
        log::info!("electrode replica {index}: exit counters {}", self.counts.exit_json());
        if let Some(kernel) = &self.kernel {
            log::info!("electrode replica {index}: kernel paths {:?}", kernel.counts());
            match kernel.kernel_counters() {
                Ok(counters) => {
                    let pairs: Vec<String> = counters
                        .named()
                        .into_iter()
                        .filter(|(_, v)| *v > 0)
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    log::info!("electrode replica {index}: eBPF counters: {}", pairs.join(" "));
                }
                Err(error) => log::warn!("electrode replica {index}: reading eBPF counters: {error:#}"),
            }
        }
        #[cfg(feature = "test-faults")]
        if let Some(faults) = &self.faults {
            log::info!("electrode replica {index}: test faults {:?}", faults.counts);
        }
    }

    /// Hands the core what the kernel did and took on its behalf, before
    /// any other input: the Prepares it acked (so the core never mistakes
    /// a logged op for a gap) and the requests it took (so the core never
    /// sees a view change before a request that arrived in the old view).
    /// `batch_requests`: hold Prepares around them (outside a wake-up's
    /// burst, which holds already).
    fn hand_over_kernel_input(&mut self, batch_requests: bool) -> anyhow::Result<()> {
        let mut input = Vec::new();
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.before_input(&mut self.core, &mut self.actions, &mut input)?;
        }
        self.execute_actions()?;
        if input.is_empty() {
            return Ok(());
        }
        if batch_requests {
            self.core.hold_prepares();
        }
        for item in input {
            self.feed(item)?;
        }
        if batch_requests {
            self.core.release_prepares(&mut self.actions);
        }
        self.execute_actions()
    }

    /// One input the kernel took: a datagram goes through the same checks
    /// as the socket's (decode, membership, client binding, the core's
    /// session rules), an ack it counted straight to the core.
    fn feed(&mut self, input: KernelInput) -> anyhow::Result<()> {
        match input {
            KernelInput::Datagram { datagram, from } => {
                let from = SocketAddr::V4(from);
                match self.accept(&datagram, from) {
                    Some((sender, message)) => self.deliver(sender, message, from),
                    None => Ok(()),
                }
            }
            KernelInput::PrepareOk(ack) => {
                self.core.on_message(ack.replica, Message::PrepareOk(ack), &mut self.actions);
                Ok(())
            }
        }
    }

    /// A datagram from the socket: once it is a whole message, the kernel's
    /// input first, then the message.
    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) -> anyhow::Result<()> {
        let Some((sender, message)) = self.accept(datagram, from) else { return Ok(()) };
        self.hand_over_kernel_input(false)?;
        self.deliver(sender, message, from)
    }

    /// Counts a datagram and makes it a message for the core: it passes
    /// [`screen`], and a chunk is reassembled. None when it is dropped
    /// (counted) or its message is not complete yet.
    fn accept(&mut self, datagram: &[u8], from: SocketAddr) -> Option<(u8, Message)> {
        self.counts.received += 1;
        let (envelope, decoded) = match screen(datagram, from, self.cluster_id, &self.peers, self.index) {
            Ok(ok) => ok,
            Err(reason) => {
                self.counts.drop(reason);
                return None;
            }
        };
        self.counts.by_type[envelope.msg_type as usize] += 1;
        let message = match decoded {
            Decoded::Message(message) => message,
            Decoded::Chunk(chunk) => match self.reassembler.push(&envelope, chunk) {
                Ok(message) => message?,
                Err(error) => {
                    self.counts.drop(error.reason());
                    return None;
                }
            },
        };
        Some((envelope.sender, message))
    }

    /// Hands one message to the core (a status query is answered here),
    /// with what the kernel kept for it, and carries out the core's
    /// actions.
    fn deliver(&mut self, sender: u8, message: Message, from: SocketAddr) -> anyhow::Result<()> {
        let mut kept = Vec::new();
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.on_message_passed(&message, sender, &mut kept)?;
        }
        match message {
            Message::Request(request) => {
                // Replies go only where the id's first request came from.
                if let Err(reason) =
                    admit_request(&mut self.core, &mut self.clients, request, from, &mut self.actions)
                {
                    self.counts.drop(reason);
                }
            }
            Message::StatusRequest(query) => self.answer_status(query.nonce, from),
            other => self.core.on_message(sender, other, &mut self.actions),
        }
        for item in kept {
            self.feed(item)?;
        }
        self.execute_actions()?;
        self.after_input()
    }

    /// After each input: the kernel follows the core's role, view and
    /// commit.
    fn after_input(&mut self) -> anyhow::Result<()> {
        match self.kernel.as_mut() {
            Some(kernel) => kernel.after_input(&self.core),
            None => Ok(()),
        }
    }

    fn answer_status(&mut self, nonce: u64, to: SocketAddr) {
        let core = &self.core;
        let reply = Message::StatusReply(StatusReply {
            view: core.view(),
            nonce,
            op: core.op(),
            commit: core.commit(),
            digest: core.digest(),
            status: core.status().wire(),
            replica: self.index,
            catching_up: core.catching_up() && core.status() == vr::Status::Normal,
            waiting_for: core.recovery_blocked().map(|holder| wire::StateHolder {
                replica: holder.replica,
                view: holder.view,
                op: holder.op,
            }),
        });
        self.send_to(to, &reply);
    }

    fn execute_actions(&mut self) -> anyhow::Result<()> {
        // Executing an action can produce more (on_kernel_disarmed); run
        // them in order, batch after batch, with a bound on the rounds.
        for _round in 0..8 {
            if self.actions.is_empty() {
                return Ok(());
            }
            assert!(self.actions.len() <= ACTIONS_MAX, "core produced {} actions", self.actions.len());
            let mut actions = std::mem::take(&mut self.actions);
            for action in actions.drain(..) {
                self.execute(action)?;
            }
            if self.actions.is_empty() {
                self.actions = actions; // keep the allocation
            }
        }
        panic!("core kept producing actions for 8 rounds");
    }

    fn execute(&mut self, action: Action) -> anyhow::Result<()> {
        match action {
            Action::Send { to, message } => {
                if let Some(peer) = self.peers.get(to as usize).copied() {
                    self.send_to(SocketAddr::V4(peer), &message);
                }
            }
            Action::SendAll { message } => self.send_all(&message),
            Action::Reply { client_id, reply } => {
                if let Some(client) = self.clients.address(client_id) {
                    self.send_to(client, &Message::Reply(reply));
                }
            }
            Action::KernelArm(_) | Action::KernelDisarm => match self.kernel.as_mut() {
                Some(kernel) => kernel.on_action(&action, &mut self.core, &mut self.actions)?,
                // Without a kernel fast path the core runs with
                // kernel_fast_reply = false and never arms; a disarm
                // request is answered at once with nothing acked.
                None => {
                    if action == Action::KernelDisarm {
                        self.core.on_kernel_disarmed(Vec::new(), &mut self.actions);
                    }
                }
            },
        }
        Ok(())
    }

    /// A message to every other replica: fanned out by the kernel when it
    /// can (tc_broadcast), else one copy per follower.
    fn send_all(&mut self, message: &Message) {
        if let (Message::Prepare(prepare), Some(_)) = (message, &self.metrics) {
            self.latency.on_prepare_sent(prepare.view, prepare.op, Instant::now());
        }
        if let Some(plan) = self.kernel.as_mut().and_then(Kernel::broadcast_plan) {
            return self.send_marked(message, plan);
        }
        self.encode(message, 0);
        let datagrams = std::mem::take(&mut self.datagrams);
        for i in 0..self.peers.len() {
            if i != self.index as usize {
                let peer = SocketAddr::V4(self.peers[i]);
                for d in &datagrams {
                    self.transmit(peer, d);
                }
            }
        }
        self.datagrams = datagrams;
    }

    /// One send, marked: the TC egress program copies it to every follower
    /// whose MAC it knows; the others get it by unicast.
    fn send_marked(&mut self, message: &Message, plan: BroadcastPlan) {
        self.encode(message, wire::consts::FLAG_BROADCAST as u8);
        let datagrams = std::mem::take(&mut self.datagrams);
        if datagrams.is_empty() {
            return;
        }
        let target = SocketAddr::V4(self.peers[plan.marked_to]);
        for d in &datagrams {
            self.transmit(target, d);
        }
        self.datagrams = datagrams;
        for i in plan.unicast {
            self.send_to(SocketAddr::V4(self.peers[i]), message);
        }
    }

    fn encode(&mut self, message: &Message, flags: u8) {
        self.datagrams.clear();
        if let Err(error) = self.encoder.encode_flags(message, flags, &mut self.datagrams) {
            // Our own message is too large: a bug or an oversized state.
            log::error!("electrode replica {}: cannot encode {:?}: {error}", self.index, message.msg_type());
            self.datagrams.clear();
        }
    }

    fn send_to(&mut self, to: SocketAddr, message: &Message) {
        self.encode(message, 0);
        let datagrams = std::mem::take(&mut self.datagrams);
        for d in &datagrams {
            self.transmit(to, d);
        }
        self.datagrams = datagrams;
    }

    /// Queues a datagram; the event loop sends each round's with one
    /// sendmmsg (flush_sends).
    fn transmit(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.counts.sent += 1;
        #[cfg(feature = "test-faults")]
        if let Some(faults) = self.faults.as_mut() {
            faults.send(&self.socket, to, datagram);
            return;
        }
        if self.sends.is_full() {
            self.flush_sends();
        }
        if !self.sends.push(to, datagram) && self.socket.send_to(datagram, to).is_err() {
            self.counts.send_errors += 1;
        }
    }

    fn flush_sends(&mut self) {
        self.counts.send_errors += self.sends.flush(&self.socket);
    }
}
