//! The client: a closed-loop KV load generator and one-shot KV commands.
//!
//! Each client thread has its own socket and client id and one request
//! outstanding. It sends to the replica it believes leads (view % n, learned
//! from replies), and on timeout re-sends the same request number to every
//! replica, so a view change or a lost datagram costs one timeout. The
//! replicas' client table makes re-sends at-most-once.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::app::kv::{KvOp, KvResult};
use crate::app::AppKind;
use crate::config::Config;
use crate::history::{write_history, Operation};
use crate::transport::os::{self, SplitMix};
use crate::wire::{self, Decoded, Encoder, Message, Request, CLIENT_SENDER, MAX_DATAGRAM_LEN};

/// First re-send after this long without a reply; doubles up to the max.
const RETRY_INITIAL: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_millis(800);
/// An operation that has no reply after this long is given up (recorded
/// without a return in the history) and counted as failed.
const OPERATION_DEADLINE: Duration = Duration::from_secs(20);
/// Progress line interval on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// What `electrode client` runs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub config: Config,
    pub requests: u64,
    pub warmup: u64,
    pub threads: usize,
    pub value_size: usize,
    pub keys: u64,
    pub app: AppKind,
    pub json: bool,
    pub history: Option<PathBuf>,
    pub cpu: Option<usize>,
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
    pub failed: u64,
}

/// A replica endpoint seen from one client socket.
struct Session {
    socket: UdpSocket,
    replicas: Vec<SocketAddrV4>,
    cluster_id: u32,
    encoder: Encoder,
    leader: usize,
    client_id: u64,
    buf: Vec<u8>,
    out: Vec<Vec<u8>>,
    retries: u64,
}

impl Session {
    fn new(config: &Config, client_id: u64) -> anyhow::Result<Session> {
        let socket = UdpSocket::bind("0.0.0.0:0").context("binding client socket")?;
        Ok(Session {
            socket,
            replicas: config.replicas.clone(),
            cluster_id: config.cluster_id,
            encoder: Encoder::new(config.cluster_id, CLIENT_SENDER),
            leader: 0,
            client_id,
            buf: vec![0; MAX_DATAGRAM_LEN + 1],
            out: Vec::new(),
            retries: 0,
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

    /// Sends `op` as request `request_number` and waits for its reply.
    /// None if the deadline passed.
    fn call(&mut self, request_number: u64, op: Vec<u8>) -> anyhow::Result<Option<Vec<u8>>> {
        let request = Request { client_id: self.client_id, request_number, op };
        let start = Instant::now();
        let mut wait = RETRY_INITIAL;
        let mut resend_at = start + wait;
        self.send(&request, false)?;
        loop {
            let now = Instant::now();
            if now >= start + OPERATION_DEADLINE {
                return Ok(None);
            }
            if now >= resend_at {
                self.retries += 1;
                self.send(&request, true)?;
                wait = (wait * 2).min(RETRY_MAX);
                resend_at = now + wait;
            }
            let timeout = resend_at.saturating_duration_since(now).max(Duration::from_micros(100));
            self.socket.set_read_timeout(Some(timeout)).context("setting client timeout")?;
            let len = match self.socket.recv_from(&mut self.buf) {
                Ok((len, _)) => len,
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
            return Ok(Some(reply.result));
        }
    }
}

/// One thread's share of the load.
struct ThreadResult {
    histogram: Histogram<u64>,
    history: Vec<Operation>,
    measured_start: Option<Instant>,
    end: Instant,
    measured_ops: u64,
    retries: u64,
    failed: u64,
}

struct Workload {
    rng: SplitMix,
    keys: u64,
    value_size: usize,
    app: AppKind,
    last_written: Option<(Vec<u8>, Vec<u8>)>,
}

impl Workload {
    /// Mostly puts and gets, with some compare-and-swap and deletes so the
    /// history exercises every KV operation.
    fn next(&mut self, client_id: u64, request_number: u64) -> KvOp {
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

fn run_thread(
    options: &LoadOptions,
    thread: usize,
    ops: u64,
    warmup: u64,
    done: &AtomicU64,
) -> anyhow::Result<ThreadResult> {
    if let Some(cpu) = options.cpu {
        os::pin_to_cpu(cpu)?;
    }
    let client_id = os::random_seed() ^ (thread as u64).rotate_left(48);
    let mut session = Session::new(&options.config, client_id)?;
    let mut workload = Workload {
        rng: SplitMix(client_id),
        keys: options.keys,
        value_size: options.value_size,
        app: options.app,
        last_written: None,
    };
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let mut history = Vec::with_capacity(if options.history.is_some() { ops as usize } else { 0 });
    let mut measured_start = None;
    let mut failed = 0;
    for i in 0..ops {
        if i == warmup {
            measured_start = Some(Instant::now());
        }
        let request_number = i + 1;
        let op = workload.next(client_id, request_number);
        let invoke = os::monotonic_nanos();
        let started = Instant::now();
        let reply = session.call(request_number, op.encode())?;
        let ret = os::monotonic_nanos();
        let result = match &reply {
            Some(bytes) if options.app == AppKind::Kv => {
                Some(KvResult::decode(bytes).with_context(|| format!("undecodable KV result {bytes:?}"))?)
            }
            Some(_) => Some(KvResult::Value(None)),
            None => {
                failed += 1;
                None
            }
        };
        if reply.is_some() && i >= warmup {
            let micros = started.elapsed().as_micros().max(1) as u64;
            histogram.saturating_record(micros);
        }
        if options.history.is_some() {
            let returned = result.is_some();
            history.push(Operation {
                client_id,
                request_number,
                op,
                result,
                invoke,
                ret: returned.then_some(ret),
            });
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(ThreadResult {
        histogram,
        history,
        measured_start,
        end: Instant::now(),
        measured_ops: ops.saturating_sub(warmup),
        retries: session.retries,
        failed,
    })
}

/// Runs the closed-loop load and prints (or returns) the report.
pub fn run_load(options: &LoadOptions) -> anyhow::Result<LoadReport> {
    if options.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if options.value_size > wire::MAX_OP_LEN - 64 {
        bail!("--value-size {} too large: at most {}", options.value_size, wire::MAX_OP_LEN - 64);
    }
    if options.warmup >= options.requests {
        bail!("--warmup {} must be less than -n {}", options.warmup, options.requests);
    }
    let base = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let threads = options.threads as u64;
    let results: Vec<anyhow::Result<ThreadResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.threads)
            .map(|t| {
                let share = options.requests / threads + u64::from((t as u64) < options.requests % threads);
                let warmup = options.warmup / threads + u64::from((t as u64) < options.warmup % threads);
                let done = Arc::clone(&done);
                scope.spawn(move || run_thread(options, t, share, warmup.min(share), &done))
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
                let n = done.load(Ordering::Relaxed);
                eprint!("\r  {n}/{} ops, {:.1} s", options.requests, base.elapsed().as_secs_f64());
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
    let mut history = Vec::new();
    let (mut retries, mut failed, mut measured_ops) = (0, 0, 0);
    let mut measured_start: Option<Instant> = None;
    let mut end = base;
    for result in results {
        let r = result?;
        histogram.add(&r.histogram).context("merging histograms")?;
        history.extend(r.history);
        retries += r.retries;
        failed += r.failed;
        measured_ops += r.measured_ops;
        if let Some(s) = r.measured_start {
            measured_start = Some(measured_start.map_or(s, |m| m.min(s)));
        }
        end = end.max(r.end);
    }
    if let Some(path) = &options.history {
        history.sort_by_key(|o| o.invoke);
        let file = File::create(path).with_context(|| format!("creating history file {}", path.display()))?;
        let mut writer = BufWriter::new(file);
        write_history(&mut writer, &history).with_context(|| format!("writing {}", path.display()))?;
        writer.flush().with_context(|| format!("writing {}", path.display()))?;
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
        println!("retries {}  failed {}", self.retries, self.failed);
        Ok(())
    }
}

/// One KV command (`electrode client put K V` etc.); prints the result.
pub fn run_one(config: &Config, op: KvOp) -> anyhow::Result<KvResult> {
    let client_id = os::random_seed();
    let mut session = Session::new(config, client_id)?;
    let reply = session.call(1, op.encode())?.context("no reply from the cluster within the deadline")?;
    KvResult::decode(&reply).with_context(|| format!("undecodable result {reply:?}"))
}
