//! The load generator (`electrode client --sessions`, `--rate`) on network
//! namespaces (root; run under `flock /tmp/electrode-netns.lock`):
//!
//! - against a fake leader in a namespace of its own, which checks VR's
//!   client rules on every request it sees (request numbers from 1, one
//!   outstanding per client id), loses first copies, forges replies from a
//!   foreign address, evicts a session and stalls on demand: the counts the
//!   client reports are the fake's, its history is complete, its CPU figure
//!   is the kernel's, and an open loop keeps its timetable and counts a
//!   stall's queueing in its latency where a closed loop hides it;
//! - against a real cluster: many sessions per thread and an open loop,
//!   with histories that must be linearizable.

mod cluster;
mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{assert_linearizable_together, Cluster};
use common::{read_in_background, require_root, Netns};
use electrode::wire::{self, Decoded, Message, Reply};

const BIN: &str = env!("CARGO_BIN_EXE_electrode");
const LEADER_PORT: u16 = 7001;
const FORGER_PORT: u16 = 7999;

/// What the fake leader does besides answering at once.
#[derive(Clone, Default)]
struct Behaviour {
    /// Answer after this long (requests pile up meanwhile).
    reply_delay: Duration,
    /// Lose the first copy of every Nth new request (0: none); the client's
    /// re-send (to every replica) gets the reply.
    drop_first_copy_every: u64,
    /// Answer every lost request at once from a foreign address.
    forge_dropped: bool,
    /// The first client id to reach this request number is answered
    /// "session evicted".
    evict_at: Option<u64>,
    /// Hold every reply due in (start, start + length) after the first
    /// request until the end of that window.
    stall: Option<(Duration, Duration)>,
}

/// What the fake leader saw.
#[derive(Debug, Default)]
struct Seen {
    new_requests: u64,
    /// Arrival of each new request (first copy) after the first one.
    arrivals: Vec<Duration>,
    ids: HashSet<u64>,
    /// Most client ids with a request outstanding at once.
    max_outstanding: usize,
    dropped: u64,
    forged: u64,
    evicted: Vec<u64>,
    /// Broken client rules, described.
    violations: Vec<String>,
}

#[derive(Default)]
struct IdState {
    next: u64,
    pending: Option<u64>,
    /// The pending request's reply is queued (not lost).
    queued: bool,
    answered: u64,
    evicted: Option<u64>,
}

struct FakeLeader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Seen>>,
}

impl FakeLeader {
    /// Starts the fake on 127.0.0.1:LEADER_PORT in namespace `ns`; it is
    /// listening when this returns.
    fn start(netns: &Arc<Netns>, cluster_id: u32, behaviour: Behaviour) -> FakeLeader {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let stop = stop.clone();
            let netns = netns.clone();
            std::thread::spawn(move || {
                netns.enter(0);
                let socket = UdpSocket::bind(("127.0.0.1", LEADER_PORT)).unwrap();
                let forger = UdpSocket::bind(("127.0.0.1", FORGER_PORT)).unwrap();
                socket.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
                ready_tx.send(()).unwrap();
                serve(&socket, &forger, cluster_id, &behaviour, &stop)
            })
        };
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("fake leader did not start");
        FakeLeader { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("fake leader panicked")
    }
}

impl Drop for FakeLeader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn reply_datagram(cluster_id: u32, client_id: u64, request_number: u64, session_evicted: bool) -> Vec<u8> {
    let reply = Reply { view: 0, client_id, request_number, result: Vec::new(), session_evicted };
    common::datagram_from(cluster_id, 0, 0, &Message::Reply(reply))
}

fn serve(
    socket: &UdpSocket,
    forger: &UdpSocket,
    cluster_id: u32,
    behaviour: &Behaviour,
    stop: &AtomicBool,
) -> Seen {
    let mut seen = Seen::default();
    let mut ids: HashMap<u64, IdState> = HashMap::new();
    // (due, client, request number, to, evicted), in due order.
    let mut replies: VecDeque<(Instant, u64, u64, SocketAddr, bool)> = VecDeque::new();
    let mut first: Option<Instant> = None;
    let mut outstanding = 0usize;
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while replies.front().is_some_and(|r| r.0 <= now) {
            let (_, client_id, request_number, to, evicted) = replies.pop_front().unwrap();
            socket.send_to(&reply_datagram(cluster_id, client_id, request_number, evicted), to).unwrap();
            let state = ids.get_mut(&client_id).unwrap();
            if state.pending == Some(request_number) {
                state.pending = None;
                state.answered = request_number;
                outstanding -= 1;
            }
        }
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(_) => continue, // the 1 ms timeout: send what is due
        };
        let Ok((_, Decoded::Message(Message::Request(request)))) = wire::decode(&buf[..len], cluster_id)
        else {
            seen.violations.push(format!("not a request from {from}"));
            continue;
        };
        let now = Instant::now();
        let start = *first.get_or_insert(now);
        let due = match behaviour.stall {
            Some((after, length)) if now > start + after && now < start + after + length => {
                start + after + length
            }
            _ => now + behaviour.reply_delay,
        };
        let (id, number) = (request.client_id, request.request_number);
        let state = ids.entry(id).or_insert(IdState { next: 1, ..IdState::default() });
        if let Some(evicted) = state.evicted {
            if number == evicted {
                socket.send_to(&reply_datagram(cluster_id, id, number, true), from).unwrap();
            } else {
                seen.violations.push(format!("client {id:x}: request {number} after its eviction"));
            }
            continue;
        }
        if number > 0 && number == state.answered {
            // A re-send that crossed our reply: answer again, as the
            // replicas' client table does.
            replies.push_back((due, id, number, from, false));
            continue;
        }
        if state.pending == Some(number) {
            if !state.queued {
                state.queued = true;
                replies.push_back((due, id, number, from, false));
            }
            continue;
        }
        if number != state.next {
            seen.violations.push(format!("client {id:x}: request {number}, expected {}", state.next));
            continue;
        }
        if let Some(pending) = state.pending {
            seen.violations.push(format!("client {id:x}: request {number} while {pending} is outstanding"));
        }
        seen.new_requests += 1;
        seen.arrivals.push(now - start);
        seen.ids.insert(id);
        state.next = number + 1;
        if behaviour.evict_at == Some(number) && seen.evicted.is_empty() {
            state.evicted = Some(number);
            seen.evicted.push(id);
            socket.send_to(&reply_datagram(cluster_id, id, number, true), from).unwrap();
            continue;
        }
        state.pending = Some(number);
        outstanding += 1;
        seen.max_outstanding = seen.max_outstanding.max(outstanding);
        let every = behaviour.drop_first_copy_every;
        if every > 0 && seen.new_requests % every == 0 {
            seen.dropped += 1;
            state.queued = false;
            if behaviour.forge_dropped {
                forger.send_to(&reply_datagram(cluster_id, id, number, false), from).unwrap();
                seen.forged += 1;
            }
        } else {
            state.queued = true;
            replies.push_back((due, id, number, from, false));
        }
    }
    seen
}

/// The stage of a fake-leader test: a namespace of its own, a directory
/// `electrode-loadgen-<pid>-<tag>`, and in it a config of three replicas on
/// 127.0.0.1 of which only the first (the fake leader) answers. Returns
/// them with the config's path and cluster id.
fn fake_stage(tag: &str) -> (Arc<Netns>, PathBuf, PathBuf, u32) {
    let netns = Arc::new(Netns::create(&["lg"]));
    let dir = std::env::temp_dir().join(format!("electrode-loadgen-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.txt");
    std::fs::write(
        &path,
        format!("f 1\nreplica 127.0.0.1:{LEADER_PORT}\nreplica 127.0.0.1:7002\nreplica 127.0.0.1:7003\n"),
    )
    .unwrap();
    let cluster_id = electrode::config::Config::load(&path).unwrap().cluster_id;
    (netns, dir, path, cluster_id)
}

/// A client run: exit code, stdout, stderr, and its CPU time as the
/// kernel accounted it to the process (wait4).
struct ClientRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    cpu: Duration,
}

// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_client(ns: &str, config: &Path, args: &[&str]) -> ClientRun {
    let mut child = Command::new("timeout")
        .args(["120", "ip", "netns", "exec", ns, BIN, "client", "-c"])
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = read_in_background(child.stdout.take().unwrap());
    let err = read_in_background(child.stderr.take().unwrap());
    let mut status = 0;
    // SAFETY: rusage is plain old data, filled by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, valid pointers. `timeout` waits for
    // the client, so the client's CPU time is in the child's usage.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    let time = |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
    ClientRun {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
    }
}

fn json(run: &ClientRun) -> serde_json::Value {
    let line = run.stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout, run.stderr))
}

/// The history file's lines as JSON values.
fn history_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Most operations in flight at once in a history (by invoke and return
/// times; an operation without a return is in flight to the end).
fn max_concurrency(ops: &[electrode::history::Operation]) -> usize {
    let mut events: Vec<(u64, i64)> = Vec::new();
    for o in ops {
        events.push((o.invoke, 1));
        events.push((o.ret.unwrap_or(u64::MAX), -1));
    }
    events.sort_unstable();
    let (mut now, mut max) = (0i64, 0i64);
    for (_, step) in events {
        now += step;
        max = max.max(now);
    }
    max as usize
}

fn read_ops(path: &Path) -> Vec<electrode::history::Operation> {
    electrode::history::read_history(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap()
}

#[test]
fn sessions_share_a_socket_follow_vr_client_rules_and_count_what_happened() {
    require_root!();
    let (netns, dir, config, cluster_id) = fake_stage("rules");
    let behaviour = Behaviour {
        reply_delay: Duration::from_millis(2),
        drop_first_copy_every: 10,
        forge_dropped: true,
        evict_at: Some(3),
        ..Behaviour::default()
    };
    let fake = FakeLeader::start(&netns, cluster_id, behaviour);
    let history = dir.join("history.jsonl");
    let run = run_client(
        netns.name(0),
        &config,
        &[
            "-n",
            "3000",
            "-t",
            "2",
            "--sessions",
            "8",
            "--app",
            "null",
            "--json",
            "--history",
            history.to_str().unwrap(),
        ],
    );
    let seen = fake.finish();
    eprintln!(
        "fake leader saw {} requests, {} ids, max outstanding {}, dropped {}, forged {}; client: {}",
        seen.new_requests,
        seen.ids.len(),
        seen.max_outstanding,
        seen.dropped,
        seen.forged,
        run.stdout.trim()
    );
    assert!(
        seen.violations.is_empty(),
        "client broke VR's client rules: {:?}",
        &seen.violations[..seen.violations.len().min(10)]
    );
    // The one evicted operation fails the run (exit 1), after the report.
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("session evicted"), "{}", run.stderr);
    let r = json(&run);
    assert_eq!(
        (r["ops"].as_u64(), r["failed"].as_u64(), r["sessions_evicted"].as_u64()),
        (Some(3000), Some(1), Some(1))
    );
    assert_eq!(
        (r["threads"].as_u64(), r["sessions"].as_u64(), r["open_loop"].as_bool()),
        (Some(2), Some(8), Some(false))
    );
    // Every operation reached the leader once as new, from 16 sessions at
    // once over the two sockets, plus the evicted session's successor.
    assert_eq!(seen.new_requests, 3000);
    assert_eq!(seen.ids.len(), 17);
    assert_eq!(seen.max_outstanding, 16);
    assert_eq!(seen.evicted.len(), 1);
    // Each lost first copy took a re-send; no forged reply was taken (the
    // session would have moved on to its next request, a violation above).
    assert!(seen.dropped >= 290 && seen.forged == seen.dropped, "{seen:?}");
    let retries = r["retries"].as_u64().unwrap();
    assert!(retries >= seen.dropped, "{retries} retries for {} lost requests", seen.dropped);

    // The history: an invoke and a completion per operation, the evicted
    // one a timeout "session evicted", one session's operations in turn.
    let lines = history_lines(&history);
    let invokes = lines.iter().filter(|l| l["type"] == "invoke").count();
    let oks = lines.iter().filter(|l| l["type"] == "ok").count();
    let evicted: Vec<_> = lines.iter().filter(|l| l["error"] == "session evicted").collect();
    assert_eq!((invokes, oks, evicted.len()), (3000, 2999, 1));
    assert_eq!(evicted[0]["seq"], 3);
    assert_eq!(evicted[0]["client"], seen.evicted[0]);
    let ops = read_ops(&history);
    let mut by_client: HashMap<u64, Vec<&electrode::history::Operation>> = HashMap::new();
    for o in &ops {
        by_client.entry(o.client_id).or_default().push(o);
    }
    assert_eq!(by_client.len(), 17);
    for (client, mut list) in by_client {
        list.sort_by_key(|o| o.request_number);
        for (i, pair) in list.windows(2).enumerate() {
            assert_eq!(pair[0].request_number, i as u64 + 1, "client {client:x}: numbers from 1, no gap");
            let ret = pair[0].ret.expect("only the evicted op, a session's last, has no return");
            assert!(ret <= pair[1].invoke, "client {client:x}: requests {} and {} overlap", i + 1, i + 2);
        }
    }
    assert!(max_concurrency(&ops) >= 16, "sessions ran one at a time: {}", max_concurrency(&ops));

    // Its own CPU figure is RUSAGE_SELF: within what the kernel charged
    // the process (which adds `ip netns exec`, start and exit).
    let reported = Duration::from_secs_f64(r["client_cpu_s"].as_f64().unwrap());
    eprintln!("client CPU: reported {reported:?}, kernel (wait4) {:?}", run.cpu);
    assert!(reported <= run.cpu + Duration::from_millis(5), "reported {reported:?} > kernel {:?}", run.cpu);
    assert!(
        reported * 2 + Duration::from_millis(20) >= run.cpu,
        "reported {reported:?} of kernel {:?}",
        run.cpu
    );
    let per_op = r["client_cpu_us_per_op"].as_f64().unwrap();
    assert!((per_op - reported.as_secs_f64() * 1e6 / 3000.0).abs() < 0.01, "{per_op} us/op");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn open_loop_keeps_the_timetable_and_counts_a_stall_that_a_closed_loop_hides() {
    require_root!();
    let (netns, dir, config, cluster_id) = fake_stage("open");

    // 2000 requests at 2000/s from 2 threads x 4 sessions: one second,
    // evenly spread, whatever the replies do.
    let fake = FakeLeader::start(&netns, cluster_id, Behaviour::default());
    let run = run_client(
        netns.name(0),
        &config,
        &["-n", "2000", "--rate", "2000", "-t", "2", "--sessions", "4", "--app", "null", "--json"],
    );
    let seen = fake.finish();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let r = json(&run);
    eprintln!("open loop 2000/s: {r}");
    assert_eq!(
        (r["ops"].as_u64(), r["failed"].as_u64(), r["unsent"].as_u64()),
        (Some(2000), Some(0), Some(0))
    );
    assert_eq!((r["open_loop"].as_bool(), r["offered_ops_per_s"].as_f64()), (Some(true), Some(2000.0)));
    let elapsed = r["elapsed_s"].as_f64().unwrap();
    // The last request is due at 1999/2000 s: the run cannot be shorter.
    assert!((0.9995..1.5).contains(&elapsed), "elapsed {elapsed} s");
    let throughput = r["throughput_ops_per_s"].as_f64().unwrap();
    assert!((1333.0..=2001.0).contains(&throughput), "{throughput} ops/s");
    assert_eq!(seen.new_requests, 2000);
    let span = seen.arrivals.last().unwrap().as_secs_f64();
    assert!(span >= 0.99, "requests arrived within {span} s");
    // Per 100 ms, 200 requests are due; lateness on a busy machine bunches
    // a few, it never sends ahead of the timetable.
    for window in 0..9 {
        let (from, to) = (Duration::from_millis(window * 100), Duration::from_millis(window * 100 + 100));
        let count = seen.arrivals.iter().filter(|a| **a >= from && **a < to).count();
        assert!((120..=260).contains(&count), "{count} requests in window {window} (200 due): {r}");
    }

    // A leader stall of 200 ms, 300 ms in, at 1000 requests/s with one
    // session: the ~200 requests due meanwhile queue behind the one in
    // flight, and their latency counts from when they were due.
    let stall = Some((Duration::from_millis(300), Duration::from_millis(200)));
    let fake = FakeLeader::start(&netns, cluster_id, Behaviour { stall, ..Behaviour::default() });
    let run = run_client(
        netns.name(0),
        &config,
        &["--duration", "1.5", "--rate", "1000", "-t", "1", "--sessions", "1", "--app", "null", "--json"],
    );
    fake.finish();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let open = json(&run);
    eprintln!("open loop through a 200 ms stall: {open}");
    assert_eq!(open["ops"].as_u64().unwrap() + open["unsent"].as_u64().unwrap(), 1500, "{open}");
    assert!(open["unsent"].as_u64().unwrap() <= 10, "the backlog is sent within the run: {open}");
    // Late because the one session was busy, not because the client was.
    let waited = open["late_sends"].as_u64().unwrap() - open["late_sends_client_behind"].as_u64().unwrap();
    assert!(waited >= 150, "{open}");
    assert!(open["p99_us"].as_f64().unwrap() >= 150_000.0, "{open}");
    assert!((190_000.0..400_000.0).contains(&open["max_us"].as_f64().unwrap()), "{open}");

    // The same stall in a closed loop: one request waits 200 ms, the rest
    // never see it (the client sent nothing meanwhile): p99 stays small.
    let fake = FakeLeader::start(&netns, cluster_id, Behaviour { stall, ..Behaviour::default() });
    let run = run_client(
        netns.name(0),
        &config,
        &["--duration", "1.5", "-t", "1", "--sessions", "1", "--app", "null", "--json"],
    );
    fake.finish();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let closed = json(&run);
    eprintln!("closed loop through a 200 ms stall: {closed}");
    assert!(closed["max_us"].as_f64().unwrap() >= 190_000.0, "{closed}");
    assert!(closed["p99_us"].as_f64().unwrap() < 50_000.0, "{closed}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn many_sessions_and_an_open_loop_on_a_real_cluster_are_linearizable() {
    require_root!();
    let cluster = Cluster::running("lg", 1, 41, Duration::from_secs(30));
    let closed_history = cluster.dir.join("closed.jsonl");
    let closed =
        cluster.run_load("-n 6000 -t 2 --sessions 16 --keys 100", &closed_history, Duration::from_secs(180));
    eprintln!("2 threads x 16 sessions, closed loop: {closed}");
    assert_eq!((closed["ops"].as_u64(), closed["failed"].as_u64()), (Some(6000), Some(0)));
    let ops = read_ops(&closed_history);
    assert_eq!(ops.len(), 6000);
    assert_eq!(ops.iter().map(|o| o.client_id).collect::<HashSet<_>>().len(), 32);
    assert!(max_concurrency(&ops) >= 8, "sessions ran one at a time: {}", max_concurrency(&ops));

    let open_history = cluster.dir.join("open.jsonl");
    let args = "--duration 2 --rate 2000 -t 2 --sessions 8 --keys 100";
    let open = cluster.run_load(args, &open_history, Duration::from_secs(180));
    eprintln!("2 threads x 8 sessions, open loop at 2000/s: {open}");
    let sent = open["ops"].as_u64().unwrap();
    assert_eq!(sent + open["unsent"].as_u64().unwrap(), 4000, "{open}");
    assert_eq!(open["failed"].as_u64(), Some(0));
    let throughput = open["throughput_ops_per_s"].as_f64().unwrap();
    assert!((1600.0..=2001.0).contains(&throughput), "{throughput} ops/s offered 2000: {open}");
    assert!(open["client_cpu_us_per_op"].as_f64().unwrap() > 0.0, "{open}");
    assert_eq!(read_ops(&open_history).len() as u64, sent);

    let checked = assert_linearizable_together(&[&closed_history, &open_history]);
    assert_eq!(checked as u64, 6000 + sent);
    let commit = cluster.wait_converged(Duration::from_secs(30));
    assert!(commit >= 1, "commit {commit}");
}
