//! `electrode replica --metrics ADDR`: the replica's state and counters in
//! the Prometheus text format (OpenMetrics 1.0, which Prometheus scrapes).
//!
//! The replica thread never waits for a scrape: it copies its numbers into a
//! [`Snapshot`] every [`PUBLISH_INTERVAL`] with `try_lock` (a scrape that
//! holds the lock only delays the copy to the next interval), and a separate
//! small thread answers HTTP GET /metrics from the last copy. The text is
//! written by the `prometheus-client` crate (the Prometheus project's Rust
//! client), not by hand.
//!
//! Prepare→commit latency is measured here, not in the core (which has no
//! clock): [`LatencyRing`] records when the leader first sends each Prepare
//! and observes it when the commit number passes that op.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::counts::DatagramCounts;
use crate::vr::{Replica, ReplicaStats, Status};
use crate::wire::MsgType;

/// How often the replica thread copies its numbers for scrapes: far below
/// a scrape interval (15 s by default in Prometheus), far above the cost of
/// a copy (a few µs, see `electrode_metrics_publish_seconds`).
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// How often the eBPF maps are read (one syscall per map, per-CPU values).
pub const KERNEL_READ_INTERVAL: Duration = Duration::from_secs(1);
/// Prepares whose send time is remembered; more than the pipeline ever
/// holds (older ones are forgotten, not observed).
const LATENCY_RING_MAX: usize = 4096;
/// Upper bounds of the latency histogram's buckets: 10 µs doubling to
/// ~0.33 s (then +Inf).
const LATENCY_BUCKET_COUNT: usize = 16;
const LATENCY_BUCKET_FIRST_SECONDS: f64 = 10e-6;
/// Bytes of an HTTP request head we read before answering.
const REQUEST_HEAD_MAX: usize = 8192;
/// A scraper that sends nothing for this long is dropped (one thread serves
/// scrapes one at a time).
const SCRAPE_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Prepare→commit latencies in fixed buckets, owned by the replica thread.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    /// Per-bucket (not cumulative) counts; the last is +Inf.
    pub buckets: [u64; LATENCY_BUCKET_COUNT + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

fn bucket_bound_seconds(i: usize) -> f64 {
    LATENCY_BUCKET_FIRST_SECONDS * (1u64 << i) as f64
}

impl LatencyHistogram {
    pub fn observe(&mut self, seconds: f64) {
        let i = (0..LATENCY_BUCKET_COUNT)
            .find(|&i| seconds <= bucket_bound_seconds(i))
            .unwrap_or(LATENCY_BUCKET_COUNT);
        self.buckets[i] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

/// Send times of the leader's Prepares, oldest first: O(1) per op, bounded.
#[derive(Debug, Default)]
pub struct LatencyRing {
    sent: VecDeque<(u64, Instant)>,
    /// Highest op ever recorded: retransmissions are not first sends.
    op_max: u64,
    /// View of the recorded ops; a view change forgets them (their ops may
    /// be replaced, and the new leader's commit says nothing of our send).
    view: u64,
    pub histogram: LatencyHistogram,
}

impl LatencyRing {
    /// The leader sent a Prepare of `op` in `view` to all followers.
    pub fn on_prepare_sent(&mut self, view: u64, op: u64, now: Instant) {
        if view != self.view {
            self.sent.clear();
            self.view = view;
        }
        if op <= self.op_max {
            return;
        }
        self.op_max = op;
        if self.sent.len() == LATENCY_RING_MAX {
            self.sent.pop_front();
        }
        self.sent.push_back((op, now));
    }

    /// The commit number is now `commit` in `view`.
    pub fn on_commit(&mut self, view: u64, commit: u64, now: Instant) {
        if view != self.view {
            self.sent.clear();
            self.view = view;
            return;
        }
        while let Some(&(op, sent)) = self.sent.front() {
            if op > commit {
                break;
            }
            self.sent.pop_front();
            self.histogram.observe(now.saturating_duration_since(sent).as_secs_f64());
        }
    }
}

/// What a scrape shows: a copy of the replica thread's numbers.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub replica: u8,
    pub view: u64,
    pub status: Option<Status>,
    pub leader: bool,
    pub op: u64,
    pub commit: u64,
    pub checkpoint_op: u64,
    pub catching_up: bool,
    /// Recovering and blocked (vr::Replica::recovery_blocked).
    pub recovery_blocked: bool,
    pub client_table_entries: usize,
    pub counters: DatagramCounts,
    pub stats: ReplicaStats,
    /// eBPF map counters by name (fast-path builds), read every
    /// KERNEL_READ_INTERVAL.
    pub kernel: Option<Vec<(&'static str, u64)>>,
    pub latency: LatencyHistogram,
    /// How long the last copy took on the replica thread.
    pub publish_seconds: f64,
    pub published: Option<Instant>,
}

impl Snapshot {
    /// Copies the core's and the runtime's numbers in place (reusing the
    /// allocations of the previous copy).
    pub fn fill(&mut self, core: &Replica, counters: &DatagramCounts, latency: &LatencyHistogram) {
        self.replica = core.index();
        self.view = core.view();
        self.status = Some(core.status());
        self.leader = core.is_leader();
        self.op = core.op();
        self.commit = core.commit();
        self.checkpoint_op = core.checkpoint_op();
        self.catching_up = core.catching_up();
        self.recovery_blocked = core.recovery_blocked().is_some();
        self.client_table_entries = core.client_table_len();
        self.counters.clone_from(counters);
        self.stats.clone_from(&core.stats);
        self.latency.clone_from(latency);
    }
}

pub type Shared = Arc<Mutex<Snapshot>>;

/// A histogram already counted elsewhere, encoded by prometheus-client.
#[derive(Debug)]
struct FixedHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for FixedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn labelled_counter<'a>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let family = Family::<Labels, Counter<u64>>::default();
    for (value, n) in values {
        family.get_or_create(&vec![(label, value.to_string())]).inc_by(n);
    }
    registry.register(name, help, family);
}

fn labelled_gauge<'a>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) {
    let family = Family::<Labels, Gauge<i64>>::default();
    for (value, n) in values {
        family.get_or_create(&vec![(label, value.to_string())]).set(n);
    }
    registry.register(name, help, family);
}

/// The OpenMetrics text of one snapshot (counters get `_total`, the
/// histogram `_seconds`, from prometheus-client).
pub fn encode(snapshot: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("electrode");
    register_state(&mut registry, snapshot);
    register_datagrams(&mut registry, &snapshot.counters);
    register_core_stats(&mut registry, &snapshot.stats);
    if let Some(kernel) = &snapshot.kernel {
        labelled_counter(
            &mut registry,
            "kernel_events",
            "eBPF fast-path counters merged over CPUs from the maps: datagrams by type and outcomes",
            "event",
            kernel.iter().map(|(k, v)| (*k, *v)),
        );
    }
    register_timing(&mut registry, snapshot);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String");
    text
}

/// The replica's role, view, status and log position.
fn register_state(registry: &mut Registry, s: &Snapshot) {
    gauge(registry, "replica_index", "This replica's index in the configuration", s.replica.into());
    gauge(registry, "view_number", "Current view number", s.view as i64);
    let status = s.status.unwrap_or(Status::Recovering);
    labelled_gauge(
        registry,
        "status",
        "Replica status: 1 for the current one",
        "status",
        [Status::Normal, Status::ViewChange, Status::Recovering]
            .map(|st| (st.name(), i64::from(st == status))),
    );
    labelled_gauge(
        registry,
        "role",
        "Role: 1 for the current one (leader: normal status and leader of the view)",
        "role",
        [("leader", i64::from(s.leader)), ("follower", i64::from(!s.leader))],
    );
    gauge(registry, "op_number", "Highest op in the log", s.op as i64);
    gauge(registry, "commit_number", "Highest committed op", s.commit as i64);
    gauge(registry, "checkpoint_op_number", "Op of the last checkpoint", s.checkpoint_op as i64);
    gauge(
        registry,
        "catching_up",
        "1 while normal but still fetching the state (after recovery or joining a view)",
        i64::from(s.catching_up),
    );
    gauge(
        registry,
        "recovery_blocked",
        "1 while recovering and waiting: more than f replicas lost their memory and a peer holds state \
         (see --accept-data-loss)",
        i64::from(s.recovery_blocked),
    );
    gauge(registry, "client_table_entries", "Clients in the client table", s.client_table_entries as i64);
}

/// What the runtime counted of the datagrams it handled.
fn register_datagrams(registry: &mut Registry, c: &DatagramCounts) {
    counter(registry, "datagrams_received", "Datagrams read from the socket (user space)", c.received);
    labelled_counter(
        registry,
        "datagrams_accepted",
        "Datagrams decoded and accepted from a member or client, by message type (user space)",
        "type",
        MsgType::ALL.iter().map(|t| (t.name(), c.by_type[*t as usize])),
    );
    let mut drops: Vec<(&str, u64)> = c.dropped.iter().map(|(k, v)| (*k, *v)).collect();
    drops.sort_unstable();
    labelled_counter(
        registry,
        "datagrams_dropped",
        "Datagrams dropped in user space, by reason",
        "reason",
        drops,
    );
    counter(registry, "datagrams_sent", "Datagrams queued for sending", c.sent);
    counter(registry, "datagram_send_errors", "Datagrams the socket refused", c.send_errors);
}

/// What the core counted.
fn register_core_stats(registry: &mut Registry, st: &ReplicaStats) {
    for (name, help, value) in [
        ("view_changes_started", "View changes this replica started or joined", st.view_changes_started),
        ("views_started", "Views this replica entered in normal status", st.views_started),
        ("state_transfers", "State transfers (GetState rounds) started", st.state_transfers),
        (
            "view_change_repairs",
            "View changes whose new leader fetched committed ops it lacked",
            st.view_change_repairs,
        ),
        (
            "snapshots_installed",
            "Snapshots pulled completely, verified and installed",
            st.snapshots_installed,
        ),
        (
            "snapshot_chunks_received",
            "Snapshot chunks received (duplicates included)",
            st.snapshot_chunks_received,
        ),
        ("recoveries", "Recoveries (restarts without memory) completed", st.recoveries),
        ("checkpoints", "Checkpoints taken", st.checkpoints),
        ("prepares_sent", "Prepares sent as leader", st.prepares_sent),
        ("requests_batched", "Client requests prepared in batches", st.requests_batched),
        (
            "core_dropped_inputs",
            "Inputs the VR core ignored (stale view, wrong status, bounds)",
            st.dropped_inputs,
        ),
    ] {
        counter(registry, name, help, value);
    }
}

/// Commit latency, and how old and how costly this copy of the numbers is.
fn register_timing(registry: &mut Registry, s: &Snapshot) {
    let l = &s.latency;
    let buckets = (0..=LATENCY_BUCKET_COUNT)
        .map(|i| (if i < LATENCY_BUCKET_COUNT { bucket_bound_seconds(i) } else { f64::MAX }, l.buckets[i]))
        .collect();
    registry.register_with_unit(
        "prepare_commit_latency",
        "Leader: time from first sending a Prepare to committing its op",
        Unit::Seconds,
        FixedHistogram { sum: l.sum_seconds, count: l.count, buckets },
    );
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(s.publish_seconds);
    registry.register_with_unit(
        "metrics_publish",
        "Time the replica thread took for its last copy of these numbers",
        Unit::Seconds,
        g,
    );
    let age = s.published.map(|at| at.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(age);
    registry.register_with_unit(
        "metrics_snapshot_age",
        "Age of the numbers in this scrape",
        Unit::Seconds,
        g,
    );
}

/// Binds `address` and serves GET /metrics from `shared` on a new thread.
/// Call before pinning the replica thread, so this thread may run on any CPU.
pub fn serve(address: SocketAddr, shared: Shared) -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind(address).with_context(|| format!("binding the metrics address {address}"))?;
    let bound = listener.local_addr().context("metrics listener address")?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(error) = answer(stream, &shared) {
                            log::debug!("metrics: {error:#}");
                        }
                    }
                    Err(error) => log::warn!("metrics: accepting a connection: {error}"),
                }
            }
        })
        .context("starting the metrics thread")?;
    Ok(bound)
}

/// One HTTP/1.0-style exchange: read the request head, answer, close.
fn answer(mut stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(SCRAPE_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        anyhow::ensure!(head.len() <= REQUEST_HEAD_MAX, "request head over {REQUEST_HEAD_MAX} bytes");
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, content_type, body) = if method != b"GET" {
        ("405 Method Not Allowed", "text/plain", "only GET\n".to_string())
    } else if path == b"/metrics" {
        // Copy under the lock, encode outside it: the replica thread's
        // try_lock fails only for the copy's duration.
        let snapshot = shared.lock().map_err(|_| anyhow::anyhow!("metrics lock poisoned"))?.clone();
        ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", encode(&snapshot))
    } else {
        ("404 Not Found", "text/plain", "GET /metrics\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_observes_first_sends_once_when_committed() {
        let mut ring = LatencyRing::default();
        let t0 = Instant::now();
        ring.on_prepare_sent(0, 1, t0);
        ring.on_prepare_sent(0, 2, t0);
        ring.on_prepare_sent(0, 1, t0); // retransmission
        ring.on_commit(0, 1, t0 + Duration::from_micros(50));
        assert_eq!(ring.histogram.count, 1);
        ring.on_commit(0, 2, t0 + Duration::from_micros(70));
        assert_eq!(ring.histogram.count, 2);
        ring.on_commit(0, 2, t0 + Duration::from_micros(90));
        assert_eq!(ring.histogram.count, 2);
        ring.on_prepare_sent(0, 3, t0);
        ring.on_commit(1, 3, t0); // view changed: forgotten
        assert_eq!(ring.histogram.count, 2);
        assert!(ring.sent.is_empty());
    }

    #[test]
    fn ring_is_bounded() {
        let mut ring = LatencyRing::default();
        let t0 = Instant::now();
        for op in 1..=(LATENCY_RING_MAX as u64 + 10) {
            ring.on_prepare_sent(0, op, t0);
        }
        assert_eq!(ring.sent.len(), LATENCY_RING_MAX);
    }

    #[test]
    fn encoding_has_types_and_samples() {
        let mut snapshot = Snapshot::default();
        snapshot.latency.observe(0.0001);
        snapshot.latency.observe(10.0);
        snapshot.counters.by_type[MsgType::Prepare as usize] = 3;
        snapshot.counters.dropped.insert("bad magic", 2);
        let text = encode(&snapshot);
        assert!(text.contains("# TYPE electrode_commit_number gauge"), "{text}");
        assert!(text.contains("# TYPE electrode_prepare_commit_latency_seconds histogram"), "{text}");
        assert!(text.contains("electrode_prepare_commit_latency_seconds_count 2"), "{text}");
        assert!(text.contains("electrode_prepare_commit_latency_seconds_bucket{le=\"+Inf\"} 2"), "{text}");
        assert!(text.contains("electrode_datagrams_dropped_total{reason=\"bad magic\"} 2"), "{text}");
        assert!(text.contains("electrode_status{status=\"recovering\"} 1"), "{text}");
        assert!(text.contains("electrode_recovery_blocked 0"), "{text}");
        snapshot.recovery_blocked = true;
        assert!(encode(&snapshot).contains("electrode_recovery_blocked 1"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
