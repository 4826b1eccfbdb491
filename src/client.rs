//! The client: a closed-loop KV load generator and one-shot KV commands.
//!
//! Each client thread has its own socket and client id and one request
//! outstanding. It sends to the replica it believes leads (view % n, learned
//! from replies), and on timeout re-sends the same request number to every
//! replica, so a view change or a lost datagram costs one timeout. The
//! replicas' client table makes re-sends at-most-once.
//!
//! A cluster that never answers ends the run with one error after
//! `--unreachable-ms` (by default the first seven sends of the retry
//! schedule, about 3 s); a cluster that answered and then falls silent for
//! the per-operation deadline ends it the same way.

use std::fs::File;
use std::io::IsTerminal;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
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
use crate::transport::os::{self, SplitMix};
use crate::wire::{self, Decoded, Encoder, Message, Request, CLIENT_SENDER, MAX_DATAGRAM_LEN};

/// First re-send after this long without a reply until a round trip has
/// been measured; then the measured retransmission timeout (RttEstimator).
/// Doubles on every re-send up to the max.
const RETRY_INITIAL: Duration = Duration::from_millis(50);
/// Floor of the measured retransmission timeout: one scheduler tick of
/// slack over round trips of ~0.1 ms on a quiet cluster.
const RTO_MIN: Duration = Duration::from_millis(1);
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
enum CallOutcome {
    Reply(Vec<u8>),
    /// No reply within OPERATION_DEADLINE.
    Timeout,
    /// The replicas no longer know this client id (their client table
    /// evicted it): this request was not executed now, an earlier copy may
    /// have been, and every later request of the id is refused the same way.
    SessionEvicted,
}

/// A replica endpoint seen from one client socket.
struct Session<'a> {
    liveness: &'a Liveness,
    socket: UdpSocket,
    waiter: os::Waiter,
    replicas: Vec<SocketAddrV4>,
    cluster_id: u32,
    encoder: Encoder,
    leader: usize,
    client_id: u64,
    buf: Vec<u8>,
    out: Vec<Vec<u8>>,
    retries: u64,
    rtt: RttEstimator,
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

impl<'a> Session<'a> {
    fn new(config: &Config, client_id: u64, liveness: &'a Liveness) -> anyhow::Result<Session<'a>> {
        let socket = UdpSocket::bind("0.0.0.0:0").context("binding client socket")?;
        // A backstop only: the wait for a reply is an epoll (os::Waiter).
        socket.set_read_timeout(Some(Duration::from_millis(100))).context("setting client timeout")?;
        Ok(Session {
            liveness,
            waiter: os::Waiter::new(&socket)?,
            socket,
            replicas: config.replicas.clone(),
            cluster_id: config.cluster_id,
            encoder: Encoder::new(config.cluster_id, CLIENT_SENDER),
            leader: 0,
            client_id,
            buf: vec![0; MAX_DATAGRAM_LEN + 1],
            out: Vec::new(),
            retries: 0,
            rtt: RttEstimator::default(),
        })
    }

    fn send(&mut self, request: &Request, to_all: bool) -> anyhow::Result<()> {
        self.out.clear();
        self.encoder.encode(&Message::Request(request.clone()), &mut self.out).context("encoding request")?;
        let targets: Vec<SocketAddrV4> =
            if to_all { self.replicas.clone() } else { vec![self.replicas[self.leader]] };
        for target in targets {
            for datagram in &self.out {
                // A send error (e.g. no route yet) is like a lost datagram:
                // the retry timer covers it.
                let _ = self.socket.send_to(datagram, SocketAddr::V4(target));
            }
        }
        Ok(())
    }

    /// Sends `op` as request `request_number` and waits for its reply;
    /// an error if the whole cluster stays silent (see [`Liveness`]).
    fn call(&mut self, request_number: u64, op: Vec<u8>) -> anyhow::Result<CallOutcome> {
        let request = Request { client_id: self.client_id, request_number, op };
        let start = Instant::now();
        let mut wait = self.rtt.rto();
        let mut resent = false;
        let mut resend_at = start + wait;
        self.send(&request, false)?;
        loop {
            let now = Instant::now();
            if let Some(silence) = self.liveness.silent_for(now) {
                let answered = self.liveness.answered.load(Ordering::Relaxed);
                return Err(unreachable_error(&self.replicas, silence, answered));
            }
            if now >= start + OPERATION_DEADLINE {
                return Ok(CallOutcome::Timeout);
            }
            if now >= resend_at {
                self.retries += 1;
                // The first re-send goes to the leader only (a lost datagram
                // is the likely cause, and a spurious re-send then costs the
                // others nothing); later ones to every replica, to find a
                // new leader.
                self.send(&request, resent)?;
                resent = true;
                wait = (wait * 2).min(self.rtt.backoff_max());
                resend_at = now + wait;
            }
            // Wake at least every 100 ms to notice a silence seen by all threads.
            let timeout = resend_at
                .saturating_duration_since(now)
                .clamp(Duration::from_micros(100), Duration::from_millis(100));
            // epoll, not a socket read timeout: that sleeps whole jiffies
            // (4 ms at HZ=250), which made a 1 ms retransmission take 4-8.
            if !self.waiter.wait(timeout)? {
                continue;
            }
            let len = match self.socket.recv_from(&mut self.buf) {
                // Replies count only from the configured replicas: anyone
                // else could answer for them.
                Ok((len, SocketAddr::V4(from))) if self.replicas.contains(&from) => len,
                Ok(_) => continue,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(e).context("receiving reply"),
            };
            let Ok((_, Decoded::Message(Message::Reply(reply)))) =
                wire::decode(&self.buf[..len], self.cluster_id)
            else {
                continue; // not for us, or malformed: ignore
            };
            if reply.client_id != self.client_id || reply.request_number != request_number {
                continue; // a late reply to an earlier request
            }
            self.leader = (reply.view % self.replicas.len() as u64) as usize;
            if !resent {
                self.rtt.sample(start.elapsed());
            }
            self.liveness.replied();
            if reply.session_evicted {
                return Ok(CallOutcome::SessionEvicted);
            }
            return Ok(CallOutcome::Reply(reply.result));
        }
    }
}

/// One thread's share of the load.
struct ThreadResult {
    histogram: Histogram<u64>,
    measured_start: Option<Instant>,
    end: Instant,
    measured_ops: u64,
    retries: u64,
    failed: u64,
    sessions_evicted: u64,
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
    /// No operation starts after this.
    stop_at: Option<Instant>,
}

fn run_thread(shared: &Shared<'_>, thread: usize, ops: u64, warmup: u64) -> anyhow::Result<ThreadResult> {
    let options = shared.options;
    if let Some(cpu) = options.cpu {
        os::pin_to_cpu(cpu)?;
    }
    let mut client_id = os::random_seed() ^ (thread as u64).rotate_left(48);
    let mut session = Session::new(&options.config, client_id, &shared.liveness)?;
    let mut workload = Workload {
        rng: SplitMix(client_id),
        keys: options.keys,
        value_size: options.value_size,
        app: options.app,
        last_written: None,
        fill: options.fill.then_some((thread as u64, options.threads as u64)),
    };
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let mut measured_start = None;
    let mut failed = 0;
    let mut evicted = 0;
    let mut issued: u64 = 0;
    // Request numbers of the current session (client id), from 1.
    let mut first_i = 0;
    for i in 0..ops {
        if shared.stop_at.is_some_and(|stop| Instant::now() >= stop) {
            break;
        }
        if i == warmup {
            measured_start = Some(Instant::now());
        }
        let request_number = i - first_i + 1;
        let op = workload.next(client_id, request_number);
        // The invoke line is on file before the request leaves: an
        // operation that took effect is never missing from the history.
        if let Some(history) = &shared.history {
            history.invoke(client_id, request_number, &op, os::monotonic_nanos())?;
        }
        let started = Instant::now();
        issued += 1;
        let reply = session.call(request_number, op.encode());
        let ret = os::monotonic_nanos();
        let completion = match &reply {
            Ok(CallOutcome::Reply(bytes)) if options.app == AppKind::Kv => Completion::Ok(
                KvResult::decode(bytes).with_context(|| format!("undecodable KV result {bytes:?}"))?,
            ),
            Ok(CallOutcome::Reply(_)) => Completion::Ok(KvResult::Value(None)),
            Ok(CallOutcome::Timeout) | Err(_) => {
                failed += 1;
                Completion::Timeout
            }
            Ok(CallOutcome::SessionEvicted) => {
                failed += 1;
                evicted += 1;
                eprintln!("client {client_id:x}: request {request_number} failed: session evicted");
                Completion::SessionEvicted
            }
        };
        if let Some(history) = &shared.history {
            history.complete(client_id, request_number, &op, &completion, ret)?;
        }
        if completion == Completion::SessionEvicted {
            // The id is dead for the replicas: go on as a new client.
            client_id = os::random_seed() ^ (thread as u64).rotate_left(48);
            session.client_id = client_id;
            first_i = i + 1;
        }
        let reply = reply?;
        if matches!(reply, CallOutcome::Reply(_)) && i >= warmup {
            let micros = started.elapsed().as_micros().max(1) as u64;
            histogram.saturating_record(micros);
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(ThreadResult {
        histogram,
        measured_start,
        end: Instant::now(),
        measured_ops: issued.saturating_sub(warmup),
        retries: session.retries,
        failed,
        sessions_evicted: evicted,
    })
}

/// Runs the closed-loop load and prints (or returns) the report.
pub fn run_load(options: &LoadOptions) -> anyhow::Result<LoadReport> {
    if options.threads == 0 {
        bail!("--threads must be at least 1");
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
    let base = Instant::now();
    let shared = Arc::new(Shared {
        options,
        liveness: Liveness::new(options.unreachable),
        history,
        done: AtomicU64::new(0),
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

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let (mut retries, mut failed, mut measured_ops, mut sessions_evicted) = (0, 0, 0, 0);
    let mut measured_start: Option<Instant> = None;
    let mut end = base;
    for result in results {
        let r = result?;
        histogram.add(&r.histogram).context("merging histograms")?;
        retries += r.retries;
        failed += r.failed;
        sessions_evicted += r.sessions_evicted;
        measured_ops += r.measured_ops;
        if let Some(s) = r.measured_start {
            measured_start = Some(measured_start.map_or(s, |m| m.min(s)));
        }
        end = end.max(r.end);
    }
    let elapsed = end.duration_since(measured_start.unwrap_or(base)).as_secs_f64().max(1e-9);
    let q = |quantile: f64| histogram.value_at_quantile(quantile) as f64;
    Ok(LoadReport {
        ops: measured_ops,
        warmup: options.warmup,
        threads: options.threads,
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
    })
}

impl LoadReport {
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        println!(
            "{} ops ({} warm-up excluded), {} client threads, app {}: {:.3} s, {:.0} ops/s",
            self.ops, self.warmup, self.threads, self.app, self.elapsed_s, self.throughput_ops_per_s
        );
        println!(
            "latency us: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        );
        println!(
            "retries {}  failed {} (sessions evicted {})",
            self.retries, self.failed, self.sessions_evicted
        );
        Ok(())
    }
}

/// One KV command (`electrode client put K V` etc.); prints the result.
pub fn run_one(config: &Config, op: KvOp, unreachable: Duration) -> anyhow::Result<KvResult> {
    check_op_limits(&op)?;
    let client_id = os::random_seed();
    let liveness = Liveness::new(unreachable);
    let mut session = Session::new(config, client_id, &liveness)?;
    match session.call(1, op.encode())? {
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
        let mut encoder = Encoder::new(1, CLIENT_SENDER);
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
    fn unreachable_default_is_the_retry_schedule() {
        // 50 + 100 + 200 + 400 + 800 + 800 + 800 ms.
        assert_eq!(UNREACHABLE_DEFAULT, Duration::from_millis(3150));
        assert_eq!(retry_schedule(0), Duration::ZERO);
    }
}
