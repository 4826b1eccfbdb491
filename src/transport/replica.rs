//! The replica process: one blocking thread, pinned to a CPU, that owns the
//! UDP socket and the VR core. It reads the clock (the core never does),
//! turns elapsed time into ticks, feeds datagrams to the core and executes
//! the core's actions.
//!
//! One thread on purpose: on a 2-vCPU machine every cross-thread hand-off is
//! a wake-up (~40 us across CPUs, PLATFORM.md), more than a whole VR round.
//! The one other thread, with `--metrics`, answers scrapes from a copy this
//! thread makes every 100 ms without waiting (transport/metrics.rs).

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::kernel::{self, Kernel};
use super::metrics::{self, LatencyRing};
use super::os;
use crate::app::AppKind;
use crate::config::Config;
use crate::vr::{self, Action, Replica};
use crate::wire::{
    self, Decoded, Encoder, Message, MsgType, Reassembler, StatusReply, CLIENT_SENDER, MAX_DATAGRAM_LEN,
};

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
const _: () = assert!(CLIENT_ADDRESSES_MAX / super::client_addresses::IDS_PER_ADDRESS_MAX >= 16);
/// Bytes of partial large messages held at once (view change, state
/// transfer): a few full transfers of a checkpoint plus log.
const REASSEMBLY_BYTES_MAX: usize = 256 << 20;
/// Most datagrams read in one burst (without blocking) before the leader
/// prepares what the burst brought: bounds the delay of the first request.
const BURST_MAX: usize = 64;
/// Ticks run per round of the event loop when behind (see event_loop): a
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

/// Datagrams the runtime handled, by outcome.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub received: u64,
    pub by_type: [u64; MsgType::ALL.len() + 1],
    pub dropped: HashMap<&'static str, u64>,
    pub sent: u64,
    pub send_errors: u64,
}

impl Counters {
    fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    pub fn summary(&self) -> String {
        let mut parts = vec![format!("received {}", self.received), format!("sent {}", self.sent)];
        for t in MsgType::ALL {
            let n = self.by_type[t as usize];
            if n > 0 {
                parts.push(format!("{} {}", t.name(), n));
            }
        }
        let mut drops: Vec<_> = self.dropped.iter().collect();
        drops.sort();
        for (reason, n) in drops {
            parts.push(format!("dropped[{reason}] {n}"));
        }
        if self.send_errors > 0 {
            parts.push(format!("send errors {}", self.send_errors));
        }
        parts.join(", ")
    }
}

struct Runtime<'k> {
    kernel: Option<Kernel<'k>>,
    burst_batching: bool,
    spin: Duration,
    socket: UdpSocket,
    peers: Vec<SocketAddrV4>,
    index: u8,
    encoder: Encoder,
    reassembler: Reassembler,
    core: Replica,
    clients: super::client_addresses::ClientAddresses,
    counters: Counters,
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
    cluster_id: u32,
    /// Set while requests from the kernel's intake are being fed (their
    /// own before_input must not drain the ring again).
    #[cfg(feature = "fast_intake")]
    pumping_intake: bool,
    /// Set while a wake-up's burst is handled under one hold of Prepares.
    #[cfg(feature = "fast_intake")]
    in_burst: bool,
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
    let shared_metrics = match options.metrics {
        Some(address) => {
            let shared = metrics::Shared::default();
            let bound = metrics::serve(address, shared.clone())?;
            log::info!("electrode replica {}: metrics on http://{bound}/metrics", options.index);
            Some(shared)
        }
        None => None,
    };
    os::pin_to_cpu(cpu)?;
    os::install_stop_handler()?;
    let address = config.replicas[options.index];
    let socket = os::bind_udp(address, Some(RECV_TIMEOUT))?;

    let index = options.index as u8;
    // The eBPF object and its attachments live until this function returns;
    // their Drop detaches everything on every exit path.
    let loaded;
    let attached;
    let mut kernel_paths = None;
    if FAST_PATHS_COMPILED {
        loaded = kernel::load(config, options.index)?;
        let iface = match &options.iface {
            Some(iface) => iface.clone(),
            None => kernel::interface_of(address)?,
        };
        attached = kernel::attach(&loaded, &iface)?;
        log::info!(
            "electrode replica {index}: eBPF programs attached to {} (XDP {} mode{})",
            attached.iface,
            attached.xdp.mode(),
            if cfg!(feature = "tc_broadcast") { ", TC egress" } else { "" }
        );
        kernel_paths = Some(Kernel::new(&loaded, config, options.index)?);
    }
    let mut vr_config = vr::Config::new(config.replica_count() as u8, index);
    vr_config.checkpoint_interval_ops = options.checkpoint_interval_ops;
    vr_config.kernel_fast_reply = kernel_paths.as_ref().is_some_and(Kernel::fast_reply);
    vr_config.accept_data_loss = options.accept_data_loss;
    // Tests evict with a small client table instead of 65,536 fresh ids.
    #[cfg(feature = "test-faults")]
    if let Some(max) = std::env::var("ELECTRODE_TEST_CLIENT_TABLE_MAX").ok().and_then(|v| v.parse().ok()) {
        vr_config.client_table_max = max;
    }
    let nonce = os::random_seed();
    let boot_wait = boot_wait(&vr_config);
    let core = Replica::new(vr_config, options.app.build(), nonce);
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

    let mut runtime = Runtime {
        kernel: kernel_paths,
        burst_batching: options.burst_batching,
        spin: options.spin,
        socket,
        peers: config.replicas.clone(),
        index,
        encoder: Encoder::new(config.cluster_id, index),
        reassembler: Reassembler::new(REASSEMBLY_BYTES_MAX),
        core,
        clients: super::client_addresses::ClientAddresses::new(
            CLIENT_ADDRESSES_MAX,
            super::client_addresses::IDS_PER_ADDRESS_MAX,
        ),
        counters: Counters::default(),
        actions: Vec::with_capacity(64),
        datagrams: Vec::with_capacity(8),
        sends: os::SendBatch::new(),
        metrics: shared_metrics,
        latency: LatencyRing::default(),
        #[cfg(feature = "test-faults")]
        faults: super::faults::Faults::from_env()?,
        cluster_id: config.cluster_id,
        #[cfg(feature = "fast_intake")]
        pumping_intake: false,
        #[cfg(feature = "fast_intake")]
        in_burst: false,
    };
    let result = runtime.event_loop(config.cluster_id, options.report_interval);
    log::info!("electrode replica {index}: stopped; {}", runtime.counters.summary());
    if let Some(kernel) = &runtime.kernel {
        log::info!("electrode replica {index}: kernel paths {:?}", kernel.counters);
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
    if let Some(faults) = &runtime.faults {
        log::info!("electrode replica {index}: test faults {:?}", faults.counts);
    }
    result
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

/// CLOCK_MONOTONIC in milliseconds, as log lines show it: the same clock in
/// every process of the machine, so lines of different replicas compare.
fn clock_ms() -> String {
    let nanos = os::monotonic_nanos();
    format!("{}.{:03}", nanos / 1_000_000, (nanos / 1_000) % 1_000)
}

impl Runtime<'_> {
    fn event_loop(&mut self, cluster_id: u32, report_interval: Option<Duration>) -> anyhow::Result<()> {
        let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
        let mut burst = os::RecvBatch::new(BURST_MAX - 1);
        let mut next_tick = Instant::now();
        let mut next_report = report_interval.map(|i| Instant::now() + i);
        let mut last_status = (self.core.view(), self.core.status());
        // Commit when the view last changed; u64::MAX once a commit in the
        // view has been reported.
        let mut commit_in_view = u64::MAX;
        let mut catching_up = false;
        // The holder a blocked recovery waits for, as last logged: the
        // status stays (view 0, recovering) while blocked, so the line
        // above never says why.
        let mut blocked_by = None;
        let mut next_publish = Instant::now();
        let mut next_kernel_read = Instant::now();
        let waiter = os::Waiter::new(&self.socket)?;
        // With fast_intake the loop also registers the request ring (the
        // kernel never wakes it: see below), and on each wake-up drains the
        // ring, then reads the socket without blocking (one recvmmsg of up
        // to BURST_MAX).
        let mut intake_burst = None;
        if let Some(fd) = self.kernel.as_ref().and_then(Kernel::intake_fd) {
            waiter.add(fd)?;
            intake_burst = Some(os::RecvBatch::new(BURST_MAX));
        }
        self.core.start(&mut self.actions);
        self.execute_actions()?;
        self.flush_sends();
        while !os::stop_requested() {
            // Sleep until a datagram or the next tick, on a precise timer
            // (the socket's read timeout, kept as a backstop, sleeps whole
            // jiffies).
            let wait = next_tick.saturating_duration_since(Instant::now()).min(RECV_TIMEOUT);
            let received = if let Some(burst) = intake_burst.as_mut() {
                // The kernel takes requests into the ring only while we
                // are awake, and never wakes us for one: we sleep only
                // once the ring is empty (bpf/electrode.h, "Wake-ups").
                let ready = if self.spin_before_sleep(&waiter, wait)? {
                    true
                } else if self.kernel.as_ref().is_none_or(Kernel::intake_may_sleep) {
                    waiter.wait(wait)?
                } else {
                    true
                };
                if let Some(kernel) = self.kernel.as_ref() {
                    kernel.intake_wake();
                }
                if ready {
                    self.on_wake_with_intake(burst)?;
                }
                Err(std::io::ErrorKind::TimedOut.into())
            } else if self.spin_before_sleep(&waiter, wait)? || waiter.wait(wait)? {
                self.socket.recv_from(&mut buf)
            } else {
                Err(std::io::ErrorKind::TimedOut.into())
            };
            match received {
                Ok((len, from)) => {
                    // Read what else is waiting, then prepare it all as one
                    // batch: under load this amortizes a Prepare and its
                    // acks over many requests.
                    if self.burst_batching {
                        self.core.hold_prepares();
                    }
                    self.on_datagram(&buf[..len], from, cluster_id)?;
                    // The rest of the burst with one recvmmsg.
                    for i in 0..burst.recv(&self.socket)? {
                        match burst.get(i) {
                            (datagram, Some(from)) => self.on_datagram(datagram, from, cluster_id)?,
                            (_, None) => self.counters.drop("sender address not IPv4"),
                        }
                    }
                    self.core.release_prepares(&mut self.actions);
                    self.execute_actions()?;
                    self.after_input()?;
                    self.flush_sends();
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => return Err(error).context("receiving from the replica socket"),
            }
            let now = Instant::now();
            // Catch up on ticks a few at a time, reading the socket in
            // between: after a stall of our own (a large snapshot encoded,
            // the process paused) the datagrams waiting in the socket, the
            // leader's among them, must count before the time we missed,
            // or a follower would time its leader out for our own pause.
            let mut ticks = 0;
            while next_tick <= now && ticks < TICKS_PER_ROUND_MAX {
                self.before_input()?;
                self.core.on_tick(&mut self.actions);
                self.execute_actions()?;
                if let Some(kernel) = self.kernel.as_mut() {
                    for (from, ack) in kernel.on_tick(&self.core)? {
                        self.core.on_message(from, Message::PrepareOk(ack), &mut self.actions);
                    }
                }
                self.execute_actions()?;
                self.after_input()?;
                self.flush_sends();
                next_tick += TICK;
                ticks += 1;
            }
            if now.saturating_duration_since(next_tick) > STALL_FORGOTTEN {
                // A stall this long is our own pause, not the others'
                // silence: it does not count towards any timeout.
                next_tick = now + TICK;
            }
            #[cfg(feature = "test-faults")]
            if let Some(faults) = self.faults.as_mut() {
                faults.flush_due(&self.socket);
            }
            if self.metrics.is_some() {
                self.latency.on_commit(self.core.view(), self.core.commit(), now);
            }
            if self.metrics.is_some() && now >= next_publish {
                let read_kernel = now >= next_kernel_read;
                if read_kernel {
                    next_kernel_read = now + metrics::KERNEL_READ_INTERVAL;
                }
                self.publish_metrics(read_kernel);
                next_publish = now + metrics::PUBLISH_INTERVAL;
            }
            let status = (self.core.view(), self.core.status());
            if status != last_status {
                let (why, from) = self.core.last_transition();
                let from = from.map(|r| format!(" (replica {r})")).unwrap_or_default();
                log::info!(
                    "electrode replica {}: [{}] view {} {} (op {}, commit {}): {why}{from}",
                    self.index,
                    clock_ms(),
                    status.0,
                    status.1.name(),
                    self.core.op(),
                    self.core.commit()
                );
                last_status = status;
                commit_in_view = self.core.commit();
            }
            if self.core.catching_up() != catching_up {
                catching_up = self.core.catching_up();
                log::info!(
                    "electrode replica {}: [{}] view {} {} (op {}, commit {})",
                    self.index,
                    clock_ms(),
                    status.0,
                    if catching_up { "catching up: fetching the state" } else { "caught up" },
                    self.core.op(),
                    self.core.commit()
                );
            }
            let blocked = self.core.recovery_blocked();
            if blocked.map(|h| h.replica) != blocked_by {
                blocked_by = blocked.map(|h| h.replica);
                if let Some(holder) = blocked {
                    self.log_blocked(holder);
                }
            }
            if status.1 == vr::Status::Normal
                && commit_in_view != u64::MAX
                && self.core.commit() > commit_in_view
            {
                // The first op committed in this view: the view change (or
                // recovery) is over for clients (bench/liveness.sh).
                log::info!(
                    "electrode replica {}: [{}] view {} first commit (op {})",
                    self.index,
                    clock_ms(),
                    status.0,
                    self.core.commit()
                );
                commit_in_view = u64::MAX;
            }
            if let (Some(at), Some(interval)) = (next_report, report_interval) {
                if now >= at {
                    log::info!("electrode replica {}: {}", self.index, self.counters.summary());
                    next_report = Some(now + interval);
                }
            }
        }
        Ok(())
    }

    /// One line for an operator: the cluster waits for them, and this says
    /// why and what their choices are.
    fn log_blocked(&self, holder: vr::PeerState) {
        let next = if self.core.config().accept_data_loss {
            format!(
                "--accept-data-loss is set: after {:?} of recovering this replica joins a view change with an \
                 empty log and the cluster continues from the survivors' history",
                boot_wait(self.core.config())
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
        snapshot.fill(&self.core, &self.counters, &self.latency.histogram);
        if kernel.is_some() {
            snapshot.kernel = kernel;
        }
        snapshot.published = Some(Instant::now());
        snapshot.publish_seconds = started.elapsed().as_secs_f64();
    }

    /// A leader with ops in flight expects their acks within a round trip;
    /// a wake-up from another CPU costs more than that here (PLATFORM.md).
    /// So it polls its socket (and the intake ring) with zero-timeout
    /// waits for up to `spin` (at most `wait`), yielding the CPU between
    /// polls to whatever else is runnable on it, before it sleeps. True
    /// when input came.
    fn spin_before_sleep(&self, waiter: &os::Waiter, wait: Duration) -> anyhow::Result<bool> {
        if self.spin.is_zero() || !self.core.is_leader() || self.core.op() <= self.core.commit() {
            return Ok(false);
        }
        let deadline = Instant::now() + self.spin.min(wait);
        loop {
            if waiter.wait(Duration::ZERO)? || self.kernel.as_ref().is_some_and(Kernel::intake_pending) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::yield_now();
        }
    }

    /// A wake-up with fast_intake: the requests the kernel took, then what
    /// waits in the socket, prepared together as one burst.
    fn on_wake_with_intake(&mut self, burst: &mut os::RecvBatch) -> anyhow::Result<()> {
        if self.burst_batching {
            self.core.hold_prepares();
        }
        #[cfg(feature = "fast_intake")]
        {
            self.in_burst = true;
        }
        let pumped = self.pump_intake();
        #[cfg(feature = "fast_intake")]
        {
            self.in_burst = false;
        }
        pumped?;
        for i in 0..burst.recv(&self.socket)? {
            match burst.get(i) {
                (datagram, Some(from)) => self.on_datagram(datagram, from, self.cluster_id)?,
                (_, None) => self.counters.drop("sender address not IPv4"),
            }
        }
        self.core.release_prepares(&mut self.actions);
        self.execute_actions()?;
        self.after_input()?;
        self.flush_sends();
        Ok(())
    }

    /// Feeds the requests the kernel's intake took (and those its last
    /// disarm drained) to the same code as socket datagrams, with the
    /// record's source as the sender: decode, membership, client binding,
    /// the core's session rules.
    fn pump_intake(&mut self) -> anyhow::Result<()> {
        #[cfg(feature = "fast_intake")]
        if !self.pumping_intake {
            let Some(kernel) = self.kernel.as_mut() else { return Ok(()) };
            let records = kernel.take_requests()?;
            // Requests drained outside a wake-up's burst (before a tick or
            // a socket datagram) are prepared together too, as a burst of
            // the socket would be: one hold around them.
            let batch = self.burst_batching && !self.in_burst && !records.is_empty();
            if batch {
                self.core.hold_prepares();
            }
            self.pumping_intake = true;
            let mut result = Ok(());
            for record in &records {
                result = self.on_datagram(&record.datagram, SocketAddr::V4(record.from), self.cluster_id);
                if result.is_err() {
                    break;
                }
            }
            self.pumping_intake = false;
            if batch {
                self.core.release_prepares(&mut self.actions);
            }
            result?;
            self.execute_actions()?;
        }
        Ok(())
    }

    /// Hands the core what the kernel acked (fast_reply) and the requests
    /// it took (fast_intake) before any other input: the core never sees a
    /// view change before a request that arrived in the old view.
    fn before_input(&mut self) -> anyhow::Result<()> {
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.before_input(&mut self.core, &mut self.actions)?;
        }
        self.pump_intake()
    }

    fn after_input(&mut self) -> anyhow::Result<()> {
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.after_input(&self.core)?;
        }
        Ok(())
    }

    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr, cluster_id: u32) -> anyhow::Result<()> {
        self.counters.received += 1;
        let (envelope, decoded) = match screen(datagram, from, cluster_id, &self.peers, self.index) {
            Ok(ok) => ok,
            Err(reason) => {
                self.counters.drop(reason);
                return Ok(());
            }
        };
        let sender = envelope.sender;
        self.counters.by_type[envelope.msg_type as usize] += 1;
        let message = match decoded {
            Decoded::Message(message) => message,
            Decoded::Chunk(chunk) => match self.reassembler.push(&envelope, chunk) {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.counters.drop(error.reason());
                    return Ok(());
                }
            },
        };
        self.before_input()?;
        match message {
            Message::Request(request) => {
                // Replies go only where the id's first request came from.
                if let Err(reason) =
                    admit_request(&mut self.core, &mut self.clients, request, from, &mut self.actions)
                {
                    self.counters.drop(reason);
                    return Ok(());
                }
            }
            Message::StatusRequest(query) => {
                let reply = Message::StatusReply(StatusReply {
                    view: self.core.view(),
                    nonce: query.nonce,
                    op: self.core.op(),
                    commit: self.core.commit(),
                    digest: self.core.digest(),
                    status: self.core.status().wire(),
                    replica: self.index,
                    catching_up: self.core.catching_up() && self.core.status() == vr::Status::Normal,
                    waiting_for: self.core.recovery_blocked().map(|holder| wire::StateHolder {
                        replica: holder.replica,
                        view: holder.view,
                        op: holder.op,
                    }),
                });
                self.send_to(from, &reply);
            }
            #[cfg(feature = "fast_quorum_prune")]
            Message::PrepareOk(ack) => {
                let (view, op) = (ack.view, ack.op);
                self.core.on_message(sender, Message::PrepareOk(ack), &mut self.actions);
                if let Some(kernel) = self.kernel.as_mut() {
                    for extra in kernel.completing_acks(view, op, sender)? {
                        let from = extra.replica;
                        self.core.on_message(from, Message::PrepareOk(extra), &mut self.actions);
                    }
                }
            }
            other => self.core.on_message(sender, other, &mut self.actions),
        }
        self.execute_actions()?;
        self.after_input()
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
            Action::SendAll { message } => {
                if let (Message::Prepare(prepare), Some(_)) = (&message, &self.metrics) {
                    self.latency.on_prepare_sent(prepare.view, prepare.op, Instant::now());
                }
                #[cfg(feature = "tc_broadcast")]
                if let Some((first, unicast)) = self.kernel.as_mut().and_then(Kernel::broadcast_plan) {
                    // One send, marked: the TC egress program copies it to
                    // every follower whose MAC it knows.
                    self.datagrams.clear();
                    let flag = crate::wire::consts::FLAG_BROADCAST as u8;
                    if let Err(error) = self.encoder.encode_flags(&message, flag, &mut self.datagrams) {
                        log::error!(
                            "electrode replica {}: cannot encode {:?}: {error}",
                            self.index,
                            message.msg_type()
                        );
                        return Ok(());
                    }
                    let datagrams = std::mem::take(&mut self.datagrams);
                    let target = SocketAddr::V4(self.peers[first]);
                    for d in &datagrams {
                        self.transmit(target, d);
                    }
                    self.datagrams = datagrams;
                    for i in unicast {
                        self.send_to(SocketAddr::V4(self.peers[i]), &message);
                    }
                    return Ok(());
                }
                self.encode(&message);
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
            Action::Reply { client_id, reply } => {
                if let Some(client) = self.clients.address(client_id) {
                    self.send_to(client, &Message::Reply(reply));
                }
            }
            Action::KernelArm(_) | Action::KernelDisarm => match self.kernel.as_mut() {
                Some(kernel) => kernel.execute(&action, &mut self.core, &mut self.actions)?,
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

    fn encode(&mut self, message: &Message) {
        self.datagrams.clear();
        if let Err(error) = self.encoder.encode(message, &mut self.datagrams) {
            // Our own message is too large: a bug or an oversized state.
            log::error!("electrode replica {}: cannot encode {:?}: {error}", self.index, message.msg_type());
            self.datagrams.clear();
        }
    }

    fn send_to(&mut self, to: SocketAddr, message: &Message) {
        self.encode(message);
        let datagrams = std::mem::take(&mut self.datagrams);
        for d in &datagrams {
            self.transmit(to, d);
        }
        self.datagrams = datagrams;
    }

    /// Queues a datagram; the event loop sends each round's with one
    /// sendmmsg (flush_sends).
    fn transmit(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.counters.sent += 1;
        #[cfg(feature = "test-faults")]
        if let Some(faults) = self.faults.as_mut() {
            faults.send(&self.socket, to, datagram);
            return;
        }
        if self.sends.is_full() {
            self.flush_sends();
        }
        if !self.sends.push(to, datagram) && self.socket.send_to(datagram, to).is_err() {
            self.counters.send_errors += 1;
        }
    }

    fn flush_sends(&mut self) {
        self.counters.send_errors += self.sends.flush(&self.socket);
    }
}
