//! The client: a KV load generator and one-shot KV commands.
//!
//! Each load thread drives `--sessions` client sessions over one UDP
//! socket. A session is a client id with at most one request outstanding
//! (VR's rule); a thread sends its sessions' requests with sendmmsg, reads
//! replies with recvmmsg (never blocking but in the one wait of a round) and
//! matches them to sessions by client id and request number, and sleeps
//! until a reply, a re-send timer or the next scheduled send. The CPU time
//! of the whole client process is reported per operation, so a run shows
//! whether the client could have been the bottleneck. Requests go to the replica
//! believed to lead (view % n, learned from replies); on timeout a session
//! re-sends the same request number to every replica, so a view change or
//! a lost datagram costs one timeout. The replicas' client table makes
//! re-sends at-most-once.
//!
//! Closed loop (the default): a session sends its next request as soon as
//! the last one is answered. Open loop (`--rate`): requests are due at
//! fixed times of a timetable ([`Schedule`]) whether or not earlier ones
//! were answered; a due request waits for a free session of its thread, and
//! its latency counts from the time it was due, so waiting counts (no
//! coordinated omission, as in wrk2).
//!
//! A cluster that never answers ends the run with one error after
//! `--unreachable-ms` (by default the first seven sends of the retry
//! schedule, about 3 s); a cluster that answered and then falls silent for
//! the per-operation deadline ends it the same way.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::app::kv::{KvOp, KvResult};
use crate::app::AppKind;
use crate::config::Config;
use crate::history::{Completion, HistoryWriter};
use crate::transport::os::{self, RecvBatch, SendBatch, SplitMix};
use crate::wire::{self, Decoded, Encoder, Message, Request, CLIENT_SENDER};

/// First re-send after this long without a reply until a round trip has
/// been measured; then the measured retransmission timeout (RttEstimator).
/// Doubles on every re-send up to the max.
const RETRY_INITIAL: Duration = Duration::from_millis(50);
/// Floor of the measured retransmission timeout, over round trips of
/// ~0.1-0.2 ms on a quiet cluster (p99 ~0.3 ms at saturation). Waits are
/// hrtimers, so it is exact. With 1 ms, a client whose request or reply
/// was lost (19% of operations at 10% loss) waited 1 ms or more for each:
/// 18,508 ops/s with 10% loss on the client's datagrams only, against
/// 30,808 with 0.5 ms (all fast paths, 8 threads, one run each); without
/// loss a spurious re-send stays rare (116 of ~220,000 operations).
const RTO_MIN: Duration = Duration::from_micros(500);
const RETRY_MAX: Duration = Duration::from_millis(800);
/// An operation that has no reply after this long is given up (recorded
/// without a return in the history) and counted as failed.
const OPERATION_DEADLINE: Duration = Duration::from_secs(20);
/// Sends (first one and re-sends) before a cluster that never answered is
/// declared unreachable: the default of `--unreachable-ms`.
const UNREACHABLE_SENDS: u32 = 7;

/// How long the retry schedule takes to make `sends` sends: the wait after
/// each one, doubling from RETRY_INITIAL up to RETRY_MAX.
pub const fn retry_schedule(sends: u32) -> Duration {
    let mut total = Duration::ZERO;
    let mut wait = RETRY_INITIAL;
    let mut i = 0;
    while i < sends {
        total = total.saturating_add(wait);
        wait = if wait.as_nanos() * 2 > RETRY_MAX.as_nanos() { RETRY_MAX } else { wait.saturating_mul(2) };
        i += 1;
    }
    total
}

/// Default of `--unreachable-ms` (3,150 ms).
pub const UNREACHABLE_DEFAULT: Duration = retry_schedule(UNREACHABLE_SENDS);

/// Length of the keys the load uses for `keys` distinct keys (`key-<n>`).
pub fn load_key_len(keys: u64) -> usize {
    format!("key-{}", keys.saturating_sub(1)).len()
}

/// Largest `--value-size` the encoder accepts with `keys` keys: the
/// largest operation of the load is a cas carrying two values (expected and
/// new) and the longest key, it must fit MAX_OP_LEN, and a get's result
/// carrying one value must fit MAX_RESULT_LEN.
pub fn value_size_max(keys: u64) -> usize {
    let key = vec![b'k'; load_key_len(keys)];
    let cas_overhead = KvOp::Cas { key, expected: Vec::new(), value: Vec::new() }.encode().len();
    let result_overhead = KvResult::Value(Some(Vec::new())).encode().len();
    (wire::MAX_OP_LEN.saturating_sub(cas_overhead) / 2)
        .min(wire::MAX_RESULT_LEN.saturating_sub(result_overhead))
}

/// Checks one operation against the encoder's limits before it is sent.
pub fn check_op_limits(op: &KvOp) -> anyhow::Result<()> {
    if op.key().len() > crate::app::kv::KEY_LEN_MAX {
        bail!("key of {} bytes too long: at most {}", op.key().len(), crate::app::kv::KEY_LEN_MAX);
    }
    let len = op.encode().len();
    if len > wire::MAX_OP_LEN {
        bail!(
            "{} of {len} encoded bytes too large: an operation is at most {} bytes",
            op.kind(),
            wire::MAX_OP_LEN
        );
    }
    Ok(())
}

/// Progress line interval on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// A thread wakes at least this often, to notice a silence all threads see.
const POLL_MAX: Duration = Duration::from_millis(100);

/// Most datagrams one recvmmsg reads.
const RECV_BATCH_MAX: usize = 64;

/// Client sessions of one run at most: the replicas' client table holds
/// 65,536 ids (vr::Config::client_table_max); more sessions would evict
/// each other and fail with "session evicted".
pub const SESSIONS_MAX: usize = 1 << 16;

/// Client sessions of one thread at most: all its ids share its socket's
/// address, and the leader keeps at most this many ids bound per address
/// (transport::client_addresses); with more, a new id would forget the
/// binding of a request still in flight and its reply would be dropped.
pub const SESSIONS_PER_THREAD_MAX: usize = crate::transport::client_addresses::IDS_PER_ADDRESS_MAX;

/// Largest `--rate`: one request per nanosecond, where the timetable's
/// resolution ends.
pub const RATE_MAX_OPS_PER_S: u64 = 1_000_000_000;

/// An open-loop send this long after its intended time counts as late
/// (its thread had no free session, or was not scheduled in time).
pub const LATE_SEND_AFTER: Duration = Duration::from_millis(1);

/// Latencies are recorded up to an hour (an overloaded open loop queues
/// without bound; larger values are recorded as an hour).
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// What `electrode client` runs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub config: Config,
    /// Operations in total; None: until `duration` ends.
    pub requests: Option<u64>,
    /// Start no operation after this long.
    pub duration: Option<Duration>,
    /// Give up when no replica has answered for this long.
    pub unreachable: Duration,
    pub warmup: u64,
    pub threads: usize,
    /// Client sessions per thread, each with one request outstanding.
    pub sessions: usize,
    /// Open loop at this many requests per second in total; None: closed loop.
    pub rate_ops_per_s: Option<u64>,
    pub value_size: usize,
    pub keys: u64,
    pub app: AppKind,
    pub json: bool,
    pub history: Option<PathBuf>,
    pub cpu: Option<usize>,
    /// Put every key once (key-0 .. key-<keys-1>, --value-size bytes) and
    /// stop: loads a state of keys x value-size bytes (benchmarks, tests).
    pub fill: bool,
}

/// Results of a load run (`--json` prints exactly this).
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub ops: u64,
    pub warmup: u64,
    pub threads: usize,
    /// Client sessions per thread.
    pub sessions: usize,
    pub app: String,
    pub elapsed_s: f64,
    pub throughput_ops_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub retries: u64,
    /// Operations without a known outcome: timeouts and evicted sessions.
    pub failed: u64,
    /// Of `failed`: requests answered "session evicted".
    pub sessions_evicted: u64,
    /// `--rate` given: latencies count from each request's intended send time.
    pub open_loop: bool,
    /// The `--rate` (None in a closed loop).
    pub offered_ops_per_s: Option<f64>,
    /// Open loop: measured requests sent more than LATE_SEND_AFTER after
    /// their intended time.
    pub late_sends: u64,
    /// Of `late_sends`: those for which a session was free at the intended
    /// time, so the client itself was behind (not scheduled in time, or
    /// busy); the others waited for a session (the cluster answered slower
    /// than the rate needs with this many sessions).
    pub late_sends_client_behind: u64,
    /// Open loop with --duration: requests due before the end that were
    /// never sent (no session was free in time); not in `ops`.
    pub unsent: u64,
    /// Open loop: how late requests left (sent - intended), p99 and max.
    pub send_lag_p99_us: Option<f64>,
    pub send_lag_max_us: Option<f64>,
    /// The client process's own CPU time (user + system, getrusage
    /// RUSAGE_SELF) over the run, warm-up included.
    pub client_cpu_s: f64,
    /// `client_cpu_s` per operation that ended (warm-up included).
    pub client_cpu_us_per_op: Option<f64>,
    /// `client_cpu_s` over the run's wall time: CPUs the client kept busy.
    pub client_cpus_busy: f64,
}

/// Whether the cluster answers, shared by the client threads: any reply
/// to any thread counts.
pub struct Liveness {
    start: Instant,
    /// Nanoseconds after `start` of the latest reply.
    last_reply_ns: AtomicU64,
    answered: AtomicBool,
    /// Silence allowed before the first reply.
    unreachable: Duration,
}

impl Liveness {
    pub fn new(unreachable: Duration) -> Liveness {
        Liveness {
            start: Instant::now(),
            last_reply_ns: AtomicU64::new(0),
            answered: AtomicBool::new(false),
            unreachable,
        }
    }

    fn replied(&self) {
        self.answered.store(true, Ordering::Relaxed);
        self.last_reply_ns.fetch_max(self.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// The silence that counts as down, if it has been reached.
    fn silent_for(&self, now: Instant) -> Option<Duration> {
        let (allowed, since) = if self.answered.load(Ordering::Relaxed) {
            (
                self.unreachable.max(OPERATION_DEADLINE),
                Duration::from_nanos(self.last_reply_ns.load(Ordering::Relaxed)),
            )
        } else {
            (self.unreachable, Duration::ZERO)
        };
        (now.saturating_duration_since(self.start + since) >= allowed).then_some(allowed)
    }
}

/// The one error of a cluster that does not answer.
fn unreachable_error(replicas: &[SocketAddrV4], silence: Duration, answered_before: bool) -> anyhow::Error {
    let addresses = replicas.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let when = if answered_before { "any more" } else { "at all" };
    anyhow::anyhow!(
        "no replica answered {when} within {:.1} s (replicas {addresses}): check that the replicas are running \
         (electrode status), that this host reaches those addresses (network namespace, firewall), and that \
         -c names this cluster's configuration",
        silence.as_secs_f64()
    )
}

/// The outcome of one operation.
#[derive(Debug)]
enum CallOutcome {
    Reply(Vec<u8>),
    /// No reply within OPERATION_DEADLINE.
    Timeout,
    /// The replicas no longer know this client id (their client table
    /// evicted it): this request was not executed now, an earlier copy may
    /// have been, and every later request of the id is refused the same way.
    SessionEvicted,
}

/// The retransmission timeout from measured round trips, as TCP computes
/// it (RFC 6298): srtt + 4 rttvar, sampled only from requests answered
/// without a re-send (Karn). A lost datagram then costs about a round trip
/// or two here, not a fixed 50 ms.
#[derive(Clone, Copy, Debug, Default)]
struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimator {
    fn rto(&self) -> Duration {
        match self.srtt {
            Some(srtt) => (srtt + 4 * self.rttvar).clamp(RTO_MIN, RETRY_MAX),
            None => RETRY_INITIAL,
        }
    }

    /// Cap of the doubling re-send wait. Once the cluster has answered,
    /// re-sends (to every replica) keep coming every 8 retransmission
    /// timeouts at most (at least 4 ms, at most RETRY_INITIAL): a request
    /// that waits for a stalled commit, then loses its reply, is asked for
    /// again within a few ms instead of after a backoff that grew during the
    /// wait, and a new leader is found within that of the view change. A
    /// cluster never heard from is probed with the full backoff.
    fn backoff_max(&self) -> Duration {
        if self.srtt.is_some() {
            (8 * self.rto()).clamp(Duration::from_millis(4), RETRY_INITIAL)
        } else {
            RETRY_MAX
        }
    }

    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let deviation = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + deviation) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }
}

/// The open-loop timetable (`--rate`): request `i` of the whole run is due
/// `i / rate` seconds after the start (floored to the nanosecond), and
/// thread `t` of `T` sends the requests `i = t, t + T, t + 2T, ...`, so the
/// threads together keep the rate and none of them bunches its sends.
/// Integer arithmetic throughout: no drift over long runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    rate_ops_per_s: u64,
    threads: u64,
    thread: u64,
}

const NANOS_PER_S: u128 = 1_000_000_000;

impl Schedule {
    pub fn new(rate_ops_per_s: u64, threads: u64, thread: u64) -> Schedule {
        assert!((1..=RATE_MAX_OPS_PER_S).contains(&rate_ops_per_s), "rate {rate_ops_per_s}");
        assert!(thread < threads, "thread {thread} of {threads}");
        Schedule { rate_ops_per_s, threads, thread }
    }

    /// When this thread's request `k` (from 0) is due, after the start
    /// (Duration::MAX if that is beyond what a Duration holds).
    pub fn intended(&self, k: u64) -> Duration {
        let index = u128::from(k) * u128::from(self.threads) + u128::from(self.thread);
        index
            .checked_mul(NANOS_PER_S)
            .map(|ns| ns / u128::from(self.rate_ops_per_s))
            .and_then(|ns| u64::try_from(ns).ok())
            .map_or(Duration::MAX, Duration::from_nanos)
    }

    /// How many of this thread's requests are due `elapsed` after the
    /// start: the k with `intended(k) <= elapsed`.
    pub fn due(&self, elapsed: Duration) -> u64 {
        // floor(i * 1e9 / rate) <= e  <=>  i * 1e9 < (e + 1) * rate
        // <=>  i <= ((e + 1) * rate - 1) / 1e9: the last index due.
        let rate = u128::from(self.rate_ops_per_s);
        let last = elapsed.as_nanos().saturating_add(1).saturating_mul(rate).saturating_sub(1) / NANOS_PER_S;
        let thread = u128::from(self.thread);
        if last < thread {
            return 0;
        }
        u64::try_from((last - thread) / u128::from(self.threads) + 1).unwrap_or(u64::MAX)
    }
}

/// A request in flight on one session.
struct InFlight {
    request_number: u64,
    op: KvOp,
    /// Its datagrams, kept for re-sends.
    datagrams: Vec<Vec<u8>>,
    /// Latency counts from here: the open-loop timetable's time, or when
    /// it was sent (closed loop).
    intended: Instant,
    sent: Instant,
    resend_at: Instant,
    /// The wait before the next re-send (doubles on each).
    wait: Duration,
    /// Re-sent at least once: its round trip is no RTT sample (Karn).
    resent: bool,
    /// Counted in the statistics (not warm-up).
    measured: bool,
}

/// One client session: a client id with at most one request outstanding,
/// as VR requires (the replicas keep one request number and reply per id).
struct ClientSession {
    client_id: u64,
    /// Request numbers of an id count from 1.
    next_request_number: u64,
    rtt: RttEstimator,
    in_flight: Option<InFlight>,
}

/// An operation that ended (a reply, the deadline, or an eviction).
struct Finished {
    client_id: u64,
    request_number: u64,
    op: KvOp,
    outcome: CallOutcome,
    intended: Instant,
    done: Instant,
    measured: bool,
}

/// Queues one datagram, sending the batch first when it is full.
fn queue(batch: &mut SendBatch, socket: &UdpSocket, to: SocketAddrV4, datagram: &[u8]) {
    if batch.is_full() {
        // A refused datagram (no route yet, full buffer) is like a lost
        // one: the retry timer covers it.
        batch.flush(socket);
    }
    let queued = batch.push(SocketAddr::V4(to), datagram);
    assert!(queued, "an IPv4 datagram fits a batch just flushed");
}

/// The client sessions of one thread over one UDP socket: requests leave
/// with sendmmsg, replies are read with recvmmsg and matched
/// to their session by client id and request number. Every session's id is
/// bound at the leader to this socket's address (the replicas allow any
/// number of ids per address).
struct Driver<'a> {
    liveness: &'a Liveness,
    socket: UdpSocket,
    replicas: Vec<SocketAddrV4>,
    cluster_id: u32,
    encoder: Encoder,
    /// The replica believed to lead (view % n of the latest reply).
    leader: usize,
    /// Whether `leader` came from a reply (else it is only a first guess).
    leader_known: bool,
    sessions: Vec<ClientSession>,
    by_client_id: HashMap<u64, usize>,
    /// Sessions without a request in flight and since when, longest idle
    /// first.
    idle: VecDeque<(usize, Instant)>,
    send: SendBatch,
    recv: RecvBatch,
    recv_batch: usize,
    /// Waits for the socket on an hrtimer (see os::Waiter).
    waiter: os::Waiter,
    retries: u64,
    /// Operations ended during the last `turn`, for the caller to take.
    finished: Vec<Finished>,
    /// Mixed into new client ids: threads never share one even if the
    /// seed source were weak.
    id_salt: u64,
}

impl<'a> Driver<'a> {
    fn new(
        config: &Config,
        liveness: &'a Liveness,
        sessions: usize,
        id_salt: u64,
    ) -> anyhow::Result<Driver<'a>> {
        assert!(sessions >= 1);
        let socket = os::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), None)
            .context("binding client socket")?;
        let waiter = os::Waiter::new(&socket)?;
        let recv_batch = sessions.clamp(1, RECV_BATCH_MAX);
        let created = Instant::now();
        let mut driver = Driver {
            liveness,
            socket,
            replicas: config.replicas.clone(),
            cluster_id: config.cluster_id,
            encoder: Encoder::new(config.cluster_id, CLIENT_SENDER),
            leader: 0,
            leader_known: false,
            sessions: Vec::with_capacity(sessions),
            by_client_id: HashMap::with_capacity(sessions),
            idle: (0..sessions).map(|s| (s, created)).collect(),
            send: SendBatch::new(),
            recv: RecvBatch::new(recv_batch),
            recv_batch,
            waiter,
            retries: 0,
            finished: Vec::with_capacity(sessions),
            id_salt,
        };
        for s in 0..sessions {
            let client_id = driver.new_client_id();
            driver.by_client_id.insert(client_id, s);
            driver.sessions.push(ClientSession {
                client_id,
                next_request_number: 1,
                rtt: RttEstimator::default(),
                in_flight: None,
            });
        }
        Ok(driver)
    }

    /// A random client id no session of this thread holds (never 0).
    fn new_client_id(&self) -> u64 {
        loop {
            let id = os::random_seed() ^ self.id_salt.rotate_left(48);
            if id != 0 && !self.by_client_id.contains_key(&id) {
                return id;
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.sessions.len() - self.idle.len()
    }

    /// The session the next request takes: the longest idle.
    fn idle_session(&self) -> Option<usize> {
        self.idle.front().map(|(s, _)| *s)
    }

    /// Client id and request number the next request of session `s` gets.
    fn next_request(&self, s: usize) -> (u64, u64) {
        (self.sessions[s].client_id, self.sessions[s].next_request_number)
    }

    /// Starts `op` on idle session `s` (queued to the leader, sent by the
    /// next `turn`); `intended`: the open-loop time, None for now. Its
    /// invoke line is on file before the request leaves, so an operation
    /// that took effect is never missing from the history. Returns the
    /// send time and since when the session was idle.
    fn start(
        &mut self,
        s: usize,
        op: KvOp,
        intended: Option<Instant>,
        measured: bool,
        history: Option<&HistoryWriter<File>>,
    ) -> anyhow::Result<(Instant, Instant)> {
        let Some(&(idle, idle_since)) = self.idle.front() else { panic!("start without an idle session") };
        assert_eq!(idle, s, "start takes the session idle_session gave");
        assert!(self.sessions[s].in_flight.is_none());
        let session = &mut self.sessions[s];
        let client_id = session.client_id;
        let request_number = session.next_request_number;
        session.next_request_number =
            request_number.checked_add(1).context("request numbers of one client id used up")?;
        let mut datagrams = Vec::with_capacity(1);
        self.encoder
            .encode(&Message::Request(Request { client_id, request_number, op: op.encode() }), &mut datagrams)
            .context("encoding request")?;
        if let Some(history) = history {
            history.invoke(client_id, request_number, &op, os::monotonic_nanos())?;
        }
        // Until a reply says who leads, ask every replica (the others drop
        // it): a client started after a view change would otherwise wait
        // out a first timeout at a replica that no longer leads.
        let targets =
            if self.leader_known { &self.replicas[self.leader..=self.leader] } else { &self.replicas[..] };
        for target in targets {
            for datagram in &datagrams {
                queue(&mut self.send, &self.socket, *target, datagram);
            }
        }
        let sent = Instant::now();
        let session = &mut self.sessions[s];
        let wait = session.rtt.rto();
        session.in_flight = Some(InFlight {
            request_number,
            op,
            datagrams,
            intended: intended.unwrap_or(sent),
            sent,
            resend_at: sent + wait,
            wait,
            resent: false,
            measured,
        });
        self.idle.pop_front();
        Ok((sent, idle_since))
    }

    /// One round: sends what is queued, re-sends what is due (to every
    /// replica), gives up what passed the deadline, waits for replies until
    /// `wake_by`, the next timer or POLL_MAX, and reads every reply waiting.
    /// Ended operations are left in `finished`. An error when the cluster is
    /// silent (see [`Liveness`]).
    ///
    /// Waiting for a reply, a re-send timer or an open-loop send time is an
    /// epoll_pwait2 on an hrtimer (os::Waiter): exact to the timer slack,
    /// and measured here as cheap as a blocking recvmmsg with a socket
    /// receive timeout, which sleeps whole jiffies (4 ms at HZ=250: every
    /// 1 ms re-send left 4-8 ms late).
    fn turn(&mut self, wake_by: Option<Instant>) -> anyhow::Result<()> {
        self.send.flush(&self.socket);
        let now = Instant::now();
        if let Some(silence) = self.liveness.silent_for(now) {
            let answered = self.liveness.answered.load(Ordering::Relaxed);
            return Err(unreachable_error(&self.replicas, silence, answered));
        }
        let mut next_timer = self.next_timer().map_or(now + POLL_MAX, |timer| timer.min(now + POLL_MAX));
        if next_timer <= now {
            // Read first: a reply that waits in the socket (this thread was
            // not running) must not be taken for a loss and re-sent.
            self.receive()?;
            let now = Instant::now();
            self.on_timers(now);
            self.send.flush(&self.socket);
            next_timer = self.next_timer().map_or(now + POLL_MAX, |timer| timer.min(now + POLL_MAX));
        }
        let now = Instant::now();
        let timeout = wake_by.map_or(next_timer, |wake| wake.min(next_timer)).saturating_duration_since(now);
        if !self.finished.is_empty() || timeout.is_zero() {
            return self.receive();
        }
        self.waiter.wait(timeout)?;
        self.receive()
    }

    /// The earliest re-send or deadline of the requests in flight.
    fn next_timer(&self) -> Option<Instant> {
        self.sessions
            .iter()
            .filter_map(|session| session.in_flight.as_ref())
            .map(|request| request.resend_at.min(request.sent + OPERATION_DEADLINE))
            .min()
    }

    /// Ends requests past the deadline and queues the re-sends that are due.
    fn on_timers(&mut self, now: Instant) {
        for s in 0..self.sessions.len() {
            let session = &mut self.sessions[s];
            let Some(request) = session.in_flight.as_mut() else { continue };
            if now >= request.sent + OPERATION_DEADLINE {
                self.finish(s, CallOutcome::Timeout, now);
                continue;
            }
            if now >= request.resend_at {
                self.retries += 1;
                request.wait = (request.wait * 2).min(session.rtt.backoff_max());
                request.resend_at = now + request.wait;
                // The first re-send goes to the leader only when a reply
                // told us who leads (a lost datagram is then the likely
                // cause, and a spurious re-send costs the others nothing);
                // otherwise, and from the second on, to every replica, to
                // find the leader.
                let targets = if request.resent || !self.leader_known {
                    &self.replicas[..]
                } else {
                    &self.replicas[self.leader..=self.leader]
                };
                request.resent = true;
                for replica in targets {
                    for datagram in &request.datagrams {
                        queue(&mut self.send, &self.socket, *replica, datagram);
                    }
                }
            }
        }
    }

    /// Reads and handles every datagram waiting.
    fn receive(&mut self) -> anyhow::Result<()> {
        let mut answered = false;
        loop {
            let got = self.recv.recv(&self.socket).context("receiving replies")?;
            let now = Instant::now();
            for i in 0..got {
                let (bytes, from) = self.recv.get(i);
                // Replies count only from the configured replicas: anyone
                // else could answer for them.
                let Some(SocketAddr::V4(from)) = from else { continue };
                if !self.replicas.contains(&from) {
                    continue;
                }
                let Ok((_, Decoded::Message(Message::Reply(reply)))) = wire::decode(bytes, self.cluster_id)
                else {
                    continue; // not a reply, or malformed: ignore
                };
                answered |= self.on_reply(reply, now);
            }
            // A short batch emptied the socket; with nothing in flight no
            // reply of ours can be waiting.
            if got < self.recv_batch || self.in_flight() == 0 {
                break;
            }
        }
        if answered {
            self.liveness.replied();
        }
        Ok(())
    }

    /// A reply: ends its session's request if it is the one in flight
    /// (anything else is a late duplicate or not ours). True if it did.
    fn on_reply(&mut self, reply: wire::Reply, now: Instant) -> bool {
        let Some(&s) = self.by_client_id.get(&reply.client_id) else { return false };
        let session = &mut self.sessions[s];
        let Some(request) = session.in_flight.as_ref() else { return false };
        if request.request_number != reply.request_number {
            return false;
        }
        if !request.resent {
            session.rtt.sample(now.saturating_duration_since(request.sent));
        }
        self.leader = (reply.view % self.replicas.len() as u64) as usize;
        self.leader_known = true;
        let outcome = if reply.session_evicted {
            CallOutcome::SessionEvicted
        } else {
            CallOutcome::Reply(reply.result)
        };
        self.finish(s, outcome, now);
        true
    }

    /// Ends session `s`'s request; an evicted session goes on under a new
    /// client id (the old one is dead for the replicas).
    fn finish(&mut self, s: usize, outcome: CallOutcome, now: Instant) {
        let session = &mut self.sessions[s];
        let request = session.in_flight.take().expect("finishing a request in flight");
        let client_id = session.client_id;
        if matches!(outcome, CallOutcome::SessionEvicted) {
            let renewed = self.new_client_id();
            self.by_client_id.remove(&client_id);
            self.by_client_id.insert(renewed, s);
            let session = &mut self.sessions[s];
            session.client_id = renewed;
            session.next_request_number = 1;
        }
        self.idle.push_back((s, now));
        assert!(self.idle.len() <= self.sessions.len());
        self.finished.push(Finished {
            client_id,
            request_number: request.request_number,
            op: request.op,
            outcome,
            intended: request.intended,
            done: now,
            measured: request.measured,
        });
    }

    /// (client id, request number, op) of every request in flight.
    fn in_flight_requests(&self) -> impl Iterator<Item = (u64, u64, &KvOp)> {
        self.sessions.iter().filter_map(|session| {
            session.in_flight.as_ref().map(|r| (session.client_id, r.request_number, &r.op))
        })
    }
}

/// One thread's share of the load.
struct ThreadResult {
    histogram: Histogram<u64>,
    /// Open loop: how late each measured request left (sent - intended).
    send_lag: Histogram<u64>,
    measured_start: Option<Instant>,
    end: Instant,
    measured_ops: u64,
    /// Operations ended (warm-up included), for the CPU per op.
    completed: u64,
    retries: u64,
    failed: u64,
    sessions_evicted: u64,
    late_sends: u64,
    late_sends_client_behind: u64,
    unsent: u64,
}

struct Workload {
    rng: SplitMix,
    keys: u64,
    value_size: usize,
    app: AppKind,
    last_written: Option<(Vec<u8>, Vec<u8>)>,
    /// --fill: (next key, step between this thread's keys).
    fill: Option<(u64, u64)>,
}

impl Workload {
    /// Mostly puts and gets, with some compare-and-swap and deletes so the
    /// history exercises every KV operation.
    fn next(&mut self, client_id: u64, request_number: u64) -> KvOp {
        if let Some((next, step)) = self.fill.as_mut() {
            let key = format!("key-{next}").into_bytes();
            *next += *step;
            let mut value = format!("{client_id:x}-{request_number}").into_bytes();
            value.resize(self.value_size.max(value.len()), b'.');
            return KvOp::Put { key, value };
        }
        let key = format!("key-{}", self.rng.below(self.keys.max(1))).into_bytes();
        if self.app == AppKind::Null {
            return KvOp::Get { key };
        }
        let mut value = format!("{client_id:x}-{request_number}").into_bytes();
        if value.len() < self.value_size {
            value.resize(self.value_size, b'.');
        }
        match self.rng.below(100) {
            0..=44 => {
                self.last_written = Some((key.clone(), value.clone()));
                KvOp::Put { key, value }
            }
            45..=89 => KvOp::Get { key },
            90..=94 => match self.last_written.take() {
                Some((key, expected)) => {
                    self.last_written = Some((key.clone(), value.clone()));
                    KvOp::Cas { key, expected, value }
                }
                None => KvOp::Get { key },
            },
            _ => KvOp::Del { key },
        }
    }
}

/// What the client threads share.
struct Shared<'a> {
    options: &'a LoadOptions,
    liveness: Liveness,
    history: Option<HistoryWriter<File>>,
    /// Operations completed, for the progress line.
    done: AtomicU64,
    /// The start of the run; the open-loop timetable counts from here.
    base: Instant,
    /// No operation starts after this.
    stop_at: Option<Instant>,
}

fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3).context("histogram")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Lets this thread's timed waits end on time: the default timer slack
/// (50 µs) would make every open-loop send up to 50 µs late.
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument; failure only
    // leaves the default slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// User + system CPU time of this whole process so far.
fn process_cpu_time() -> Duration {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer; it cannot fail so.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// This thread's requests: `ops` of them at most (its share of -n),
/// the first `warmup` not measured.
fn run_thread(shared: &Shared<'_>, thread: usize, ops: u64, warmup: u64) -> anyhow::Result<ThreadResult> {
    let options = shared.options;
    if let Some(cpu) = options.cpu {
        os::pin_to_cpu(cpu)?;
    }
    let schedule =
        options.rate_ops_per_s.map(|rate| Schedule::new(rate, options.threads as u64, thread as u64));
    if schedule.is_some() {
        tighten_timer_slack();
    }
    let mut driver = Driver::new(&options.config, &shared.liveness, options.sessions, thread as u64)?;
    let mut workload = Workload {
        rng: SplitMix(os::random_seed()),
        keys: options.keys,
        value_size: options.value_size,
        app: options.app,
        last_written: None,
        fill: options.fill.then_some((thread as u64, options.threads as u64)),
    };
    // Open loop with --duration: only the requests due before its end.
    let limit = match (schedule, options.duration) {
        (Some(schedule), Some(duration)) => {
            ops.min(schedule.due(duration.saturating_sub(Duration::from_nanos(1))))
        }
        _ => ops,
    };
    let history = shared.history.as_ref();
    let mut histogram = latency_histogram()?;
    let mut send_lag = latency_histogram()?;
    let mut measured_start = None;
    let (mut failed, mut evicted, mut completed) = (0, 0, 0);
    let (mut late_sends, mut late_sends_client_behind) = (0, 0);
    let mut started: u64 = 0;
    loop {
        let now = Instant::now();
        let stopped = shared.stop_at.is_some_and(|stop| now >= stop);
        if !stopped {
            let startable = match schedule {
                None => limit,
                Some(schedule) => schedule.due(now.saturating_duration_since(shared.base)).min(limit),
            };
            while started < startable {
                let Some(s) = driver.idle_session() else { break };
                let intended = schedule.map(|schedule| {
                    shared.base.checked_add(schedule.intended(started)).unwrap_or(now).min(now)
                });
                if started == warmup {
                    measured_start = Some(intended.unwrap_or(now));
                }
                let (client_id, request_number) = driver.next_request(s);
                let op = workload.next(client_id, request_number);
                let measured = started >= warmup;
                let (sent, idle_since) = driver.start(s, op, intended, measured, history)?;
                if let (Some(intended), true) = (intended, measured) {
                    let lag = sent.saturating_duration_since(intended);
                    send_lag.saturating_record(micros(lag));
                    if lag > LATE_SEND_AFTER {
                        late_sends += 1;
                        // The longest idle session was free by then.
                        if idle_since <= intended {
                            late_sends_client_behind += 1;
                        }
                    }
                }
                started += 1;
            }
        }
        if (stopped || started >= limit) && driver.in_flight() == 0 {
            break;
        }
        // Open loop: wake for the next intended send if a session is free
        // to take it (if none is, a reply frees one first).
        let wake_by = match schedule {
            Some(schedule) if !stopped && started < limit && driver.idle_session().is_some() => {
                Some(shared.base.checked_add(schedule.intended(started)).unwrap_or(now))
            }
            _ => None,
        };
        if let Err(error) = driver.turn(wake_by) {
            // The cluster went silent: what is in flight ends without a reply.
            if let Some(history) = history {
                let ret = os::monotonic_nanos();
                for (client_id, request_number, op) in driver.in_flight_requests() {
                    history.complete(client_id, request_number, op, &Completion::Timeout, ret)?;
                }
            }
            return Err(error);
        }
        for finished in driver.finished.drain(..) {
            let ret = os::monotonic_nanos();
            let completion = match &finished.outcome {
                CallOutcome::Reply(bytes) if options.app == AppKind::Kv => Completion::Ok(
                    KvResult::decode(bytes).with_context(|| format!("undecodable KV result {bytes:?}"))?,
                ),
                CallOutcome::Reply(_) => Completion::Ok(KvResult::Value(None)),
                CallOutcome::Timeout => {
                    failed += 1;
                    Completion::Timeout
                }
                CallOutcome::SessionEvicted => {
                    failed += 1;
                    evicted += 1;
                    eprintln!(
                        "client {:x}: request {} failed: session evicted",
                        finished.client_id, finished.request_number
                    );
                    Completion::SessionEvicted
                }
            };
            if let Some(history) = history {
                history.complete(
                    finished.client_id,
                    finished.request_number,
                    &finished.op,
                    &completion,
                    ret,
                )?;
            }
            if matches!(finished.outcome, CallOutcome::Reply(_)) && finished.measured {
                let latency = finished.done.saturating_duration_since(finished.intended);
                histogram.saturating_record(micros(latency).max(1));
            }
            completed += 1;
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(ThreadResult {
        histogram,
        send_lag,
        measured_start,
        end: Instant::now(),
        measured_ops: started.saturating_sub(warmup),
        completed,
        retries: driver.retries,
        failed,
        sessions_evicted: evicted,
        late_sends,
        late_sends_client_behind,
        unsent: if schedule.is_some() { limit - started } else { 0 },
    })
}

/// Runs the load and returns the report.
pub fn run_load(options: &LoadOptions) -> anyhow::Result<LoadReport> {
    if options.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if options.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    if options.sessions > SESSIONS_PER_THREAD_MAX {
        bail!(
            "--sessions {}: at most {SESSIONS_PER_THREAD_MAX} per thread, the ids the leader binds to one address",
            options.sessions
        );
    }
    let sessions_total = options.threads.saturating_mul(options.sessions);
    if sessions_total > SESSIONS_MAX {
        bail!(
            "{} threads x {} sessions = {sessions_total} client sessions: at most {SESSIONS_MAX}, what the \
             replicas' client table holds (more would evict each other)",
            options.threads,
            options.sessions
        );
    }
    if let Some(rate) = options.rate_ops_per_s {
        if !(1..=RATE_MAX_OPS_PER_S).contains(&rate) {
            bail!("--rate {rate}: must be 1 to {RATE_MAX_OPS_PER_S} operations per second");
        }
    }
    let value_max = value_size_max(options.keys);
    if options.value_size > value_max {
        bail!(
            "--value-size {} too large: at most {value_max} with --keys {} (a cas carries two values in one {}-byte operation)",
            options.value_size,
            options.keys,
            wire::MAX_OP_LEN
        );
    }
    if options.requests.is_some_and(|n| options.warmup >= n) {
        bail!("--warmup {} must be less than -n {}", options.warmup, options.requests.unwrap_or(0));
    }
    if options.requests.is_none() && options.duration.is_none() {
        bail!("give -n or --duration (or both)");
    }
    if options.fill && (options.requests != Some(options.keys) || options.app != AppKind::Kv) {
        bail!("--fill puts each of the --keys keys once: it takes no -n or --duration and needs --app kv");
    }
    let history = match &options.history {
        Some(path) => Some(HistoryWriter::new(
            File::create(path).with_context(|| format!("creating history file {}", path.display()))?,
        )),
        None => None,
    };
    let cpu_before = process_cpu_time();
    let base = Instant::now();
    let shared = Arc::new(Shared {
        options,
        liveness: Liveness::new(options.unreachable),
        history,
        done: AtomicU64::new(0),
        base,
        stop_at: options.duration.map(|d| base + d),
    });
    let threads = options.threads as u64;
    let results: Vec<anyhow::Result<ThreadResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.threads)
            .map(|t| {
                let share = match options.requests {
                    Some(n) => n / threads + u64::from((t as u64) < n % threads),
                    None => u64::MAX,
                };
                let warmup = options.warmup / threads + u64::from((t as u64) < options.warmup % threads);
                let shared = Arc::clone(&shared);
                scope.spawn(move || run_thread(&shared, t, share, warmup.min(share)))
            })
            .collect();
        let progress = std::io::stderr().is_terminal() && !options.json;
        let mut last_print = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            if progress
                && last_print.elapsed() >= PROGRESS_INTERVAL
                && base.elapsed() > Duration::from_secs(2)
            {
                let n = shared.done.load(Ordering::Relaxed);
                let total = options.requests.map_or(String::new(), |r| format!("/{r}"));
                eprint!("\r  {n}{total} ops, {:.1} s", base.elapsed().as_secs_f64());
                last_print = Instant::now();
            }
        }
        if progress && base.elapsed() > Duration::from_secs(2) {
            eprintln!();
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked"))))
            .collect()
    });
    let wall = base.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_before);

    let mut histogram = latency_histogram()?;
    let mut send_lag = latency_histogram()?;
    let (mut retries, mut failed, mut measured_ops, mut sessions_evicted) = (0, 0, 0, 0);
    let (mut completed, mut late_sends, mut late_sends_client_behind, mut unsent) = (0, 0, 0, 0);
    let mut measured_start: Option<Instant> = None;
    let mut end = base;
    for result in results {
        let r = result?;
        histogram.add(&r.histogram).context("merging histograms")?;
        send_lag.add(&r.send_lag).context("merging histograms")?;
        retries += r.retries;
        failed += r.failed;
        sessions_evicted += r.sessions_evicted;
        measured_ops += r.measured_ops;
        completed += r.completed;
        late_sends += r.late_sends;
        late_sends_client_behind += r.late_sends_client_behind;
        unsent += r.unsent;
        if let Some(s) = r.measured_start {
            measured_start = Some(measured_start.map_or(s, |m| m.min(s)));
        }
        end = end.max(r.end);
    }
    let elapsed = end.saturating_duration_since(measured_start.unwrap_or(base)).as_secs_f64().max(1e-9);
    let q = |quantile: f64| histogram.value_at_quantile(quantile) as f64;
    let open_loop = options.rate_ops_per_s.is_some();
    Ok(LoadReport {
        ops: measured_ops,
        warmup: options.warmup,
        threads: options.threads,
        sessions: options.sessions,
        app: format!("{:?}", options.app).to_lowercase(),
        elapsed_s: elapsed,
        throughput_ops_per_s: (measured_ops - failed.min(measured_ops)) as f64 / elapsed,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: histogram.max() as f64,
        retries,
        failed,
        sessions_evicted,
        open_loop,
        offered_ops_per_s: options.rate_ops_per_s.map(|rate| rate as f64),
        late_sends,
        late_sends_client_behind,
        unsent,
        send_lag_p99_us: open_loop.then(|| send_lag.value_at_quantile(0.99) as f64),
        send_lag_max_us: open_loop.then(|| send_lag.max() as f64),
        client_cpu_s: cpu.as_secs_f64(),
        client_cpu_us_per_op: (completed > 0).then(|| cpu.as_secs_f64() * 1e6 / completed as f64),
        client_cpus_busy: cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
    })
}

impl LoadReport {
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        let mode = if self.open_loop { "open loop" } else { "closed loop" };
        println!(
            "{} ops ({} warm-up excluded), {} client threads x {} session{}, {mode}, app {}: {:.3} s, {:.0} ops/s",
            self.ops,
            self.warmup,
            self.threads,
            self.sessions,
            if self.sessions == 1 { "" } else { "s" },
            self.app,
            self.elapsed_s,
            self.throughput_ops_per_s
        );
        if let Some(offered) = self.offered_ops_per_s {
            println!(
                "offered {offered:.0} ops/s, achieved {:.0}; sent over {} ms late {} ({} with a session free: \
                 the client behind), never sent {}; send lag us p99 {:.0} max {:.0}",
                self.throughput_ops_per_s,
                LATE_SEND_AFTER.as_millis(),
                self.late_sends,
                self.late_sends_client_behind,
                self.unsent,
                self.send_lag_p99_us.unwrap_or(0.0),
                self.send_lag_max_us.unwrap_or(0.0)
            );
        }
        let from = if self.open_loop { " (from each request's intended send time)" } else { "" };
        println!(
            "latency us{from}: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        );
        println!(
            "retries {}  failed {} (sessions evicted {})",
            self.retries, self.failed, self.sessions_evicted
        );
        match self.client_cpu_us_per_op {
            Some(per_op) => println!(
                "client CPU {per_op:.2} us/op ({:.3} s user+sys, {:.2} CPUs busy)",
                self.client_cpu_s, self.client_cpus_busy
            ),
            None => println!("client CPU {:.3} s user+sys, no operation completed", self.client_cpu_s),
        }
        Ok(())
    }
}

/// One KV command (`electrode client put K V` etc.); returns the result.
pub fn run_one(config: &Config, op: KvOp, unreachable: Duration) -> anyhow::Result<KvResult> {
    check_op_limits(&op)?;
    let liveness = Liveness::new(unreachable);
    let mut driver = Driver::new(config, &liveness, 1, 0)?;
    driver.start(0, op, None, true, None)?;
    let finished = loop {
        driver.turn(None)?;
        if let Some(finished) = driver.finished.pop() {
            break finished;
        }
    };
    match finished.outcome {
        CallOutcome::Reply(reply) => {
            KvResult::decode(&reply).with_context(|| format!("undecodable result {reply:?}"))
        }
        CallOutcome::Timeout => bail!("no reply from the cluster within {} s", OPERATION_DEADLINE.as_secs()),
        CallOutcome::SessionEvicted => bail!("session evicted: the replicas no longer know this client"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest cas and the largest get result of a load with `keys`
    /// keys and values of `value_size` bytes, through the real encoder.
    fn encode_worst_case(keys: u64, value_size: usize) -> Result<(), wire::EncodeError> {
        let key = format!("key-{}", keys - 1).into_bytes();
        let value = vec![b'v'; value_size];
        let op = KvOp::Cas { key, expected: value.clone(), value: value.clone() }.encode();
        let mut out = Vec::new();
        let encoder = Encoder::new(1, CLIENT_SENDER);
        encoder.encode(&Message::Request(Request { client_id: 1, request_number: 1, op }), &mut out)?;
        let result = KvResult::Value(Some(value)).encode();
        let reply = wire::Reply { view: 0, client_id: 1, request_number: 1, result, session_evicted: false };
        encoder.encode(&Message::Reply(reply), &mut out)
    }

    #[test]
    fn retransmission_timeout_follows_measured_round_trips() {
        let mut rtt = RttEstimator::default();
        assert_eq!(rtt.rto(), RETRY_INITIAL, "nothing measured yet");
        for _ in 0..50 {
            rtt.sample(Duration::from_micros(150));
        }
        // Steady 150 us round trips: the floor, not 50 ms.
        assert_eq!(rtt.rto(), RTO_MIN);
        for _ in 0..50 {
            rtt.sample(Duration::from_millis(20));
        }
        let rto = rtt.rto();
        assert!(rto >= Duration::from_millis(20) && rto < Duration::from_millis(40), "{rto:?}");
        for _ in 0..50 {
            rtt.sample(Duration::from_secs(5));
        }
        assert_eq!(rtt.rto(), RETRY_MAX, "capped");
    }

    #[test]
    fn value_size_max_is_the_encoder_limit() {
        for keys in [1, 10, 1000, 1_000_000, u64::MAX] {
            let max = value_size_max(keys);
            assert!(max > 0);
            encode_worst_case(keys, max)
                .unwrap_or_else(|e| panic!("keys {keys}: max {max} must encode: {e}"));
            assert!(encode_worst_case(keys, max + 1).is_err(), "keys {keys}: {} must not encode", max + 1);
        }
        assert_eq!(value_size_max(1000), 505);
    }

    #[test]
    fn one_operation_is_checked_before_it_is_sent() {
        let fits = KvOp::Put { key: b"k".to_vec(), value: vec![b'v'; wire::MAX_OP_LEN - 6] };
        check_op_limits(&fits).unwrap();
        let over = KvOp::Put { key: b"k".to_vec(), value: vec![b'v'; wire::MAX_OP_LEN - 5] };
        let error = check_op_limits(&over).unwrap_err().to_string();
        assert_eq!(error, "put of 1025 encoded bytes too large: an operation is at most 1024 bytes");
        let long_key = KvOp::Get { key: vec![b'k'; crate::app::kv::KEY_LEN_MAX + 1] };
        assert!(check_op_limits(&long_key).unwrap_err().to_string().contains("key of 257 bytes too long"));
    }

    #[test]
    fn schedule_spreads_the_rate_over_the_threads() {
        // 3000 ops/s on 3 threads: one request every 333,333.3 ns in turn.
        let threads: Vec<Schedule> = (0..3).map(|t| Schedule::new(3000, 3, t)).collect();
        let ns = |t: usize, k: u64| threads[t].intended(k).as_nanos();
        assert_eq!((ns(0, 0), ns(1, 0), ns(2, 0)), (0, 333_333, 666_666));
        assert_eq!((ns(0, 1), ns(1, 1), ns(2, 1)), (1_000_000, 1_333_333, 1_666_666));
        // Each thread keeps a third of the rate.
        assert_eq!(threads[2].intended(1000), Duration::from_nanos(1_000_666_666));
        // No drift: integer arithmetic, exact at whole seconds however long.
        let slow = Schedule::new(7, 1, 0);
        assert_eq!(slow.intended(1), Duration::from_nanos(142_857_142));
        assert_eq!(slow.intended(7), Duration::from_secs(1));
        assert_eq!(slow.intended(7 * 86_400 * 365), Duration::from_secs(86_400 * 365));
    }

    #[test]
    fn schedule_due_counts_the_intended_times() {
        let mut rng = SplitMix(1);
        let mut cases =
            vec![(1, 1, 0), (1000, 1, 0), (3000, 3, 2), (RATE_MAX_OPS_PER_S, 1, 0), (999_983, 7, 6)];
        for _ in 0..200 {
            let threads = 1 + rng.below(16);
            cases.push((1 + rng.below(RATE_MAX_OPS_PER_S), threads, rng.below(threads)));
        }
        for (rate, threads, thread) in cases {
            let schedule = Schedule::new(rate, threads, thread);
            // And one far k (rate 1 on 16 threads: ~136 years in, within a Duration).
            for k in (0..200).chain([rng.below(1 << 28)]) {
                let at = schedule.intended(k);
                assert_eq!(schedule.due(at), k + 1, "rate {rate}, thread {thread}/{threads}, k {k}");
                if k > 0 {
                    // One nanosecond earlier request k is not due yet.
                    assert!(at > schedule.intended(k - 1), "rate {rate}: intended times strictly rise");
                    assert_eq!(schedule.due(at - Duration::from_nanos(1)), k, "rate {rate} k {k}");
                }
            }
            if thread > 0 && schedule.intended(0) > Duration::ZERO {
                assert_eq!(schedule.due(Duration::ZERO), 0);
            }
        }
    }

    #[test]
    fn schedule_threads_partition_the_runs_requests() {
        // The threads' due counts add up to the whole run's: floor(i / rate)
        // seconds for request i, counted by brute force.
        for (rate, threads) in [(1000, 1), (1000, 3), (2000, 2), (7, 4), (123_457, 5)] {
            let whole = |elapsed: Duration| {
                (0u128..).take_while(|i| i * NANOS_PER_S / u128::from(rate) <= elapsed.as_nanos()).count()
                    as u64
            };
            for elapsed_us in [0, 1, 499, 500, 1000, 1001, 12_345, 200_000] {
                let elapsed = Duration::from_micros(elapsed_us);
                let sum: u64 = (0..threads).map(|t| Schedule::new(rate, threads, t).due(elapsed)).sum();
                assert_eq!(sum, whole(elapsed), "rate {rate} threads {threads} at {elapsed:?}");
            }
        }
        // --rate 2000 --duration 2 on 2 threads: the requests due before
        // the end (as run_thread limits them) are exactly 4000.
        let end = Duration::from_secs(2) - Duration::from_nanos(1);
        assert_eq!((0..2).map(|t| Schedule::new(2000, 2, t).due(end)).sum::<u64>(), 4000);
    }

    #[test]
    fn schedule_extremes_saturate_instead_of_overflowing() {
        let schedule = Schedule::new(1, u64::MAX, u64::MAX - 1);
        assert_eq!(schedule.intended(u64::MAX), Duration::MAX);
        assert_eq!(schedule.due(Duration::ZERO), 0);
        let fast = Schedule::new(RATE_MAX_OPS_PER_S, 1, 0);
        assert_eq!(fast.due(Duration::MAX), u64::MAX);
        assert_eq!(fast.intended(u64::MAX), Duration::from_nanos(u64::MAX));
        assert_eq!(Schedule::new(1, 1, 0).due(Duration::MAX), u64::MAX);
    }

    #[test]
    fn sessions_max_is_the_replicas_client_table() {
        assert_eq!(SESSIONS_MAX, crate::vr::Config::new(3, 0).client_table_max);
        // `client --help` and the README state the per-thread bound in digits.
        assert_eq!(SESSIONS_PER_THREAD_MAX, 4096);
        assert_eq!(SESSIONS_MAX % SESSIONS_PER_THREAD_MAX, 0);
    }

    #[test]
    fn process_cpu_time_counts_this_process() {
        // Spin for 30 ms of this thread's CPU time (another clock than
        // getrusage's), not of wall time: on a loaded machine a wall-clock
        // spin may get a fraction of a CPU. Bounded by 10 s of wall time.
        let thread_cpu = || {
            let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: a valid clock id and pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
        };
        let before = process_cpu_time();
        let (start, start_cpu) = (Instant::now(), thread_cpu());
        let mut x = 0u64;
        while thread_cpu() - start_cpu < Duration::from_millis(30)
            && start.elapsed() < Duration::from_secs(10)
        {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let spun = thread_cpu() - start_cpu;
        let spent = process_cpu_time().saturating_sub(before);
        assert!(spun >= Duration::from_millis(30), "no 30 ms of CPU in 10 s: {spun:?}");
        assert!(spent >= Duration::from_millis(20), "30 ms of spinning counted as {spent:?}");
    }

    #[test]
    fn unreachable_default_is_the_retry_schedule() {
        // 50 + 100 + 200 + 400 + 800 + 800 + 800 ms.
        assert_eq!(UNREACHABLE_DEFAULT, Duration::from_millis(3150));
        assert_eq!(retry_schedule(0), Duration::ZERO);
    }
}
