//! Harness of the end-to-end tests: a real cluster of `electrode replica`
//! processes in network namespaces (scripts/cluster.sh), clients in the
//! client namespace, and cleanup on every exit path (Drop kills the
//! processes it started, by PID, and removes the namespaces).

#![allow(dead_code)]

use std::fs::File;
use std::io::BufReader;
use std::net::{SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use electrode::check;
use electrode::history::read_history;

use crate::common::{in_namespace, read_in_background, Udp4};

pub const BIN: &str = env!("CARGO_BIN_EXE_electrode");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A unique namespace prefix per test process and cluster.
fn prefix(tag: &str) -> String {
    format!("e{}{}-", std::process::id() % 100_000, tag)
}

/// One row of `electrode status`: view, status, op, commit, digest.
pub type StatusRow = (u64, String, u64, u64, String);

pub struct Cluster {
    pub prefix: String,
    pub config_path: PathBuf,
    pub config: electrode::config::Config,
    pub dir: PathBuf,
    replicas: Vec<Option<Child>>,
    /// CPU each replica is pinned to.
    cpus: Vec<usize>,
    extra_env: Vec<(String, String)>,
    /// Extra command-line arguments of each replica (e.g. --metrics).
    extra_args: Vec<Vec<String>>,
    /// PIDs of `start_load` clients still running, killed by Drop so that
    /// a failing test leaves no client behind.
    loads: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
}

impl Cluster {
    /// [`Cluster::up`], every replica started, all normal in one view
    /// within `settle`.
    pub fn running(tag: &str, f: usize, subnet: u8, settle: Duration) -> Cluster {
        let mut cluster = Cluster::up(tag, f, subnet);
        cluster.start_all();
        cluster.wait_normal(settle);
        cluster
    }

    /// Brings up namespaces for `f` (2f+1 replicas on 10.99.<tag>.0/24).
    pub fn up(tag: &str, f: usize, subnet: u8) -> Cluster {
        let prefix = prefix(tag);
        let dir = std::env::temp_dir().join(format!("electrode-{prefix}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = format!("f {f}\n");
        for i in 0..2 * f + 1 {
            text.push_str(&format!("replica 10.99.{subnet}.{}:7001\n", 11 + i));
        }
        let config_path = dir.join("config.txt");
        std::fs::write(&config_path, &text).unwrap();
        let config = electrode::config::Config::load(&config_path).unwrap();
        let n = config.replica_count();
        let cluster = Cluster {
            prefix: prefix.clone(),
            config_path: config_path.clone(),
            config,
            dir,
            replicas: (0..n).map(|_| None).collect(),
            cpus: (0..n).map(|i| usize::from(i != 0)).collect(),
            extra_env: Vec::new(),
            extra_args: (0..n).map(|_| Vec::new()).collect(),
            loads: Default::default(),
        };
        let status = Command::new("bash")
            .arg(format!("{ROOT}/scripts/cluster.sh"))
            .arg("up")
            .arg(&config_path)
            .env("ELECTRODE_NS_PREFIX", &prefix)
            .status()
            .unwrap();
        assert!(status.success(), "cluster.sh up failed");
        cluster
    }

    pub fn ns_replica(&self, i: usize) -> String {
        format!("{}r{i}", self.prefix)
    }

    pub fn ns_client(&self) -> String {
        format!("{}cl", self.prefix)
    }

    /// Environment for replicas started from now on.
    pub fn set_replica_env(&mut self, key: &str, value: &str) {
        self.extra_env.push((key.to_string(), value.to_string()));
    }

    /// Extra arguments for replica `i` when it is next started.
    pub fn set_replica_args(&mut self, i: usize, args: &[&str]) {
        self.extra_args[i] = args.iter().map(|a| a.to_string()).collect();
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("replica{i}.log"))
    }

    pub fn start_replica(&mut self, i: usize) {
        assert!(self.replicas[i].is_none(), "replica {i} already running");
        let log = File::options().create(true).append(true).open(self.log_path(i)).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_replica(i), BIN, "replica"])
            .arg("-c")
            .arg(&self.config_path)
            .args(["-i", &i.to_string(), "--cpu", &self.cpus[i].to_string(), "--checkpoint-ops", "500"])
            .args(&self.extra_args[i])
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.replicas[i] = Some(cmd.spawn().unwrap());
    }

    pub fn start_all(&mut self) {
        for i in 0..self.replicas.len() {
            self.start_replica(i);
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill_replica(&mut self, i: usize) {
        if let Some(mut child) = self.replicas[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the replica prints its counters and exits 0.
    pub fn stop_replica(&mut self, i: usize) -> std::process::ExitStatus {
        let mut child = self.replicas[i].take().expect("replica running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("replica {i} did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Runs the binary in the client namespace, bounded by `timeout`.
    pub fn client(&self, args: &[&str], timeout: Duration) -> Output {
        let mut full: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        full.extend([std::ffi::OsStr::new("-c"), self.config_path.as_os_str()]);
        self.run_in_client_namespace(&full, timeout)
    }

    /// One KV command of `electrode client` (`put K V`, `get K`, `del K`):
    /// it gives up after `unreachable` without an answer, and is killed
    /// after `timeout`. (`-c` goes before the command: `client` puts it
    /// last, where the KV subcommand does not take it.)
    pub fn kv(&self, command: &[&str], unreachable: Duration, timeout: Duration) -> Output {
        let unreachable_ms = unreachable.as_millis().to_string();
        let mut full: Vec<&std::ffi::OsStr> = vec![
            "client".as_ref(),
            "-c".as_ref(),
            self.config_path.as_os_str(),
            "--unreachable-ms".as_ref(),
            unreachable_ms.as_ref(),
        ];
        full.extend(command.iter().map(std::ffi::OsStr::new));
        self.run_in_client_namespace(&full, timeout)
    }

    fn run_in_client_namespace(&self, args: &[&std::ffi::OsStr], timeout: Duration) -> Output {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns_client(), BIN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + timeout;
        let out_thread = read_in_background(child.stdout.take().unwrap());
        let err_thread = read_in_background(child.stderr.take().unwrap());
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("client {args:?} did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output { status, stdout: out_thread.join().unwrap(), stderr: err_thread.join().unwrap() }
    }

    /// `electrode status` rows: (view, status, op, commit, digest) or None.
    pub fn status(&self) -> Vec<Option<StatusRow>> {
        let out = self.client(&["status"], Duration::from_secs(10));
        // Exit 1 is a verdict (no quorum, views differ, two histories), not a failure.
        assert!(
            matches!(out.status.code(), Some(0 | 1)) && !out.stdout.is_empty(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .skip(1)
            .map(|line| {
                let w: Vec<&str> = line.split_whitespace().collect();
                if w.len() >= 7 && w[2] != "unreachable" {
                    Some((
                        w[2].parse().ok()?,
                        w[3].to_string(),
                        w[4].parse().ok()?,
                        w[5].parse().ok()?,
                        w[6].to_string(),
                    ))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Waits until every running replica is normal in one view.
    pub fn wait_normal(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = self.status();
            let running: Vec<_> =
                last.iter().enumerate().filter(|(i, _)| self.replicas[*i].is_some()).collect();
            if running.iter().all(|(_, s)| s.as_ref().is_some_and(|s| s.1 == "normal"))
                && running.windows(2).all(|w| w[0].1.as_ref().map(|s| s.0) == w[1].1.as_ref().map(|s| s.0))
            {
                self.assert_binary_has_our_fast_paths();
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("cluster not normal within {timeout:?}: {last:?}\n{}", self.logs());
    }

    /// The replicas run the fast paths this test was built with. The binary
    /// sits at one path of the target directory for every feature set; a
    /// build with other features (another `cargo test --features`, or
    /// another worktree sharing CARGO_TARGET_DIR) replaces it, and a test
    /// of a fast path would then pass on the baseline without a word.
    pub fn assert_binary_has_our_fast_paths(&self) {
        let expected = format!("fast paths: {})", electrode::compiled_fast_paths());
        for i in (0..self.replicas.len()).filter(|i| self.replicas[*i].is_some()) {
            let log = self.log(i);
            let started = log.lines().rev().find(|l| l.contains("fast paths: ")).unwrap_or("");
            assert!(
                started.contains(&expected),
                "replica {i} does not run the fast paths of this build ({expected}): {started}\n\
                 {BIN} was rebuilt with other features meanwhile; rerun"
            );
        }
    }

    /// Waits until all replicas report the same commit and digest, and
    /// returns that commit.
    pub fn wait_converged(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = self.status();
            if last.iter().all(Option::is_some) {
                let rows: Vec<_> = last.iter().flatten().collect();
                let first = rows[0];
                if first.3 > 0 && rows.iter().all(|r| r.1 == "normal" && r.3 == first.3 && r.4 == first.4) {
                    return first.3;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("replicas did not converge within {timeout:?}: {last:?}\n{}", self.logs());
    }

    pub fn logs(&self) -> String {
        (0..self.replicas.len()).map(|i| format!("--- replica {i} log ---\n{}", self.log(i))).collect()
    }

    /// The eBPF counters a stopped replica printed (`eBPF counters:` line of
    /// its log, `name=value` pairs); empty for the userspace baseline.
    pub fn ebpf_counters(&self, i: usize) -> std::collections::HashMap<String, u64> {
        let log = self.log(i);
        let line = log.lines().rev().find(|l| l.contains("eBPF counters:")).unwrap_or("");
        let pairs = line.split_once("eBPF counters:").map_or("", |(_, rest)| rest);
        pairs
            .split_whitespace()
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    /// The runtime's exit counters of a stopped replica: the JSON of its
    /// last `exit counters {..}` line (`received`, `sent`, `send_errors`,
    /// `messages` by type, `dropped` by reason); Null when absent.
    pub fn exit_counters(&self, i: usize) -> serde_json::Value {
        let log = self.log(i);
        log.lines()
            .rev()
            .find_map(|l| l.split_once(": exit counters ").map(|(_, json)| json))
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// A message-type count (`prepare_ok`, ...) or `received` / `sent` /
    /// `send_errors` from a stopped replica's exit counters, 0 when absent.
    pub fn datagram_count(&self, i: usize, name: &str) -> u64 {
        let counters = self.exit_counters(i);
        counters.get(name).or_else(|| counters["messages"].get(name)).and_then(|n| n.as_u64()).unwrap_or(0)
    }

    /// Runs `nft -f -` with `rules` inside namespace `ns`.
    pub fn nft(&self, ns: &str, rules: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "nft failed in {ns}");
    }

    /// Packets the nft `counter drop` rules of namespace `ns` dropped.
    pub fn nft_dropped(&self, ns: &str) -> u64 {
        self.nft_counted(ns, &["list", "ruleset"])
    }

    /// The packet counts summed over what `nft ARGS` lists in `ns`.
    fn nft_counted(&self, ns: &str, args: &[&str]) -> u64 {
        let out = Command::new("ip").args(["netns", "exec", ns, "nft"]).args(args).output().unwrap();
        assert!(out.status.success(), "nft {args:?} failed in {ns}");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// A UDP socket created inside the client namespace (the calling thread
    /// enters the namespace; the socket keeps it).
    pub fn client_socket(&self) -> UdpSocket {
        in_namespace(&self.ns_client(), || UdpSocket::bind("0.0.0.0:0").unwrap())
    }

    pub fn replica_address(&self, i: usize) -> SocketAddrV4 {
        self.config.replicas[i]
    }

    pub fn ns_bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// Cuts replica `isolated` off from `others`, both directions, with
    /// nftables in the BRIDGE namespace (bridge family, forward hook). The
    /// rules sit between the hosts, before any XDP program on a replica:
    /// a rule in the replica's own namespace would run after its XDP and
    /// would not stop the kernel fast paths. `heal` removes them.
    pub fn cut_off(&self, isolated: usize, others: &[usize]) {
        let me = self.replica_address(isolated).ip().to_string();
        let them: Vec<String> = others.iter().map(|i| self.replica_address(*i).ip().to_string()).collect();
        let set = them.join(", ");
        let rules = format!(
            "table bridge cut {{\n chain forward {{\n  type filter hook forward priority 0;\n  \
             ip saddr {me} ip daddr {{ {set} }} counter drop\n  \
             ip saddr {{ {set} }} ip daddr {me} counter drop\n }}\n}}\n"
        );
        self.nft(&self.ns_bridge(), &rules);
    }

    /// Removes the rules of `cut_off`; returns the packets they dropped.
    pub fn heal(&self) -> u64 {
        let dropped = self.nft_dropped(&self.ns_bridge());
        self.nft(&self.ns_bridge(), "delete table bridge cut\n");
        dropped
    }

    /// Joins a load of `start_load`: the client exited 0 and no operation
    /// failed. Returns its report.
    pub fn finish_load(&self, load: std::thread::JoinHandle<Output>) -> serde_json::Value {
        self.load_report(&load.join().expect("the load thread"))
    }

    /// Runs `electrode client ARGS --json --history HISTORY` (ARGS split at
    /// spaces) from the client namespace, killed after `timeout`, and checks
    /// it as `finish_load` does. Returns its report.
    pub fn run_load(&self, args: &str, history: &Path, timeout: Duration) -> serde_json::Value {
        let mut full: Vec<&std::ffi::OsStr> = vec!["client".as_ref()];
        full.extend(args.split_whitespace().map(std::ffi::OsStr::new));
        full.extend(["--json".as_ref(), "--history".as_ref(), history.as_os_str()]);
        full.extend(["-c".as_ref(), self.config_path.as_os_str()]);
        self.load_report(&self.run_in_client_namespace(&full, timeout))
    }

    /// The report of a finished load, which must have exited 0 with no
    /// failed operation.
    fn load_report(&self, out: &Output) -> serde_json::Value {
        assert!(
            out.status.success(),
            "client failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        let r = report(out);
        assert_eq!(r["failed"], 0, "operations failed: {r}");
        r
    }

    /// Drops `percent`% of the datagrams between any two replicas, each
    /// direction drawn on its own (nftables `numgen random`), in the BRIDGE
    /// namespace for the same reason as `cut_off`: a rule inside a
    /// replica's namespace runs after its XDP program and would spare the
    /// Prepares and PrepareOKs the kernel fast paths answer. Client
    /// datagrams pass untouched. `lossless` removes the rule.
    pub fn lossy_replica_links(&self, percent: u32) {
        assert!(percent < 100, "loss of {percent}% leaves no link");
        let replicas: Vec<String> =
            (0..self.replicas.len()).map(|i| self.replica_address(i).ip().to_string()).collect();
        let set = replicas.join(", ");
        let rules = format!(
            "table bridge lossy {{\n chain forward {{\n  type filter hook forward priority 0;\n  \
             ip saddr {{ {set} }} ip daddr {{ {set} }} numgen random mod 100 < {percent} counter drop\n }}\n}}\n"
        );
        self.nft(&self.ns_bridge(), &rules);
    }

    /// Removes the rule of `lossy_replica_links`; returns the datagrams it
    /// dropped.
    pub fn lossless(&self) -> u64 {
        let dropped = self.nft_counted(&self.ns_bridge(), &["list", "table", "bridge", "lossy"]);
        self.nft(&self.ns_bridge(), "delete table bridge lossy\n");
        dropped
    }

    /// Starts a closed-loop KV load from the client namespace in its own
    /// thread (so a test can act while it is in flight); join for the
    /// output. Bounded: the client gives up an operation after its own
    /// deadline, and `client` kills it after LOAD_TIMEOUT.
    pub fn start_load(&self, n: u64, threads: u64, history: &Path) -> std::thread::JoinHandle<Output> {
        self.start_load_with(&format!("-n {n} -t {threads} --keys 20"), history)
    }

    /// `ip netns exec <client namespace> electrode client ARGS --history
    /// HISTORY -c CONFIG` (ARGS split at spaces), not yet started. `ip
    /// netns exec` execs the client, so the child's PID is the client's.
    pub fn client_command(&self, args: &str, history: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns_client(), BIN, "client"]).args(args.split_whitespace());
        command.arg("--history").arg(history).arg("-c").arg(&self.config_path);
        command
    }

    /// As `start_load`, of `electrode client ARGS --json --history HISTORY`
    /// (ARGS split at spaces).
    pub fn start_load_with(&self, args: &str, history: &Path) -> std::thread::JoinHandle<Output> {
        let client = self.client_command(&format!("{args} --json"), history);
        let child = Command::new("timeout")
            .arg("300")
            .arg(client.get_program())
            .args(client.get_args())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.loads.lock().unwrap().push(pid);
        let loads = self.loads.clone();
        std::thread::spawn(move || {
            let out = child.wait_with_output().unwrap();
            loads.lock().unwrap().retain(|p| *p != pid);
            out
        })
    }

    /// A runtime drop counter of a stopped replica (`dropped` of its exit
    /// counters), 0 when absent.
    pub fn runtime_dropped(&self, i: usize, reason: &str) -> u64 {
        self.exit_counters(i)["dropped"][reason].as_u64().unwrap_or(0)
    }

    /// A raw IPv4 socket (IPPROTO_RAW, the test writes the IP header)
    /// inside the client namespace: it sends datagrams whose source is
    /// another host's address, as corruption on the wire or a spoofing
    /// host on the same L2 would. Only to this cluster's namespaces.
    pub fn raw_client_socket(&self) -> socket2::Socket {
        in_namespace(&self.ns_client(), || {
            let raw = Some(socket2::Protocol::from(libc::IPPROTO_RAW));
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, raw).unwrap()
        })
    }
}

/// Sends `payload` as one UDP datagram from `from` to `to` through a
/// socket of [`Cluster::raw_client_socket`] (IPv4 header built here, UDP
/// checksum 0: none, legal on IPv4).
pub fn send_spoofed(socket: &socket2::Socket, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
    let packet = Udp4 { src: from, dst: to, ip_id: 0, ..Udp4::new(to.port(), payload) }.ip_packet();
    let _ = socket.send_to(&packet, &socket2::SockAddr::from(to));
}

/// CLOCK_MONOTONIC in milliseconds: the clock of the `[ms]` stamps the
/// replicas write on their status lines (one clock for every process of
/// the machine, so a test's instants and a replica's lines compare).
pub fn monotonic_ms() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as f64 * 1e3 + t.tv_nsec() as f64 / 1e6
}

impl Cluster {
    /// The `[ms]` stamps of replica `i`'s log lines that contain `needle`
    /// and are stamped after `after_ms` (lines without a stamp are skipped),
    /// with the line, in log order.
    pub fn log_stamps(&self, i: usize, needle: &str, after_ms: f64) -> Vec<(f64, String)> {
        let tag = format!("electrode replica {i}: [");
        self.log(i)
            .lines()
            .filter(|line| line.contains(needle))
            .filter_map(|line| {
                let rest = &line[line.find(&tag)? + tag.len()..];
                let stamp: f64 = rest[..rest.find(']')?].parse().ok()?;
                (stamp > after_ms).then(|| (stamp, line.to_string()))
            })
            .collect()
    }

    /// The replicas' logs hold no panic (a replica that panicked in a
    /// thread may still exit through its signal handler).
    pub fn assert_no_panic(&self) {
        for i in 0..self.replicas.len() {
            let log = self.log(i);
            assert!(!log.contains("panicked"), "replica {i} panicked:\n{log}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // `timeout` passes SIGTERM on to the client it runs.
        for pid in self.loads.lock().map(|l| l.clone()).unwrap_or_default() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for i in 0..self.replicas.len() {
            self.kill_replica(i);
        }
        let _ = Command::new("bash")
            .arg(format!("{ROOT}/scripts/cluster.sh"))
            .arg("down")
            .env("ELECTRODE_NS_PREFIX", &self.prefix)
            .stdout(Stdio::null())
            .status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("test artefacts kept in {}", self.dir.display());
        }
    }
}

/// The client's --json report.
pub fn report(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("client output is not JSON ({e}): {text}\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

/// Reads a history file and checks it with the simulator's checker.
pub fn assert_linearizable(path: &Path) -> usize {
    assert_linearizable_together(&[path])
}

/// Checks the histories of successive client runs against one cluster as
/// one history (their times come from one system-wide monotonic clock).
pub fn assert_linearizable_together(paths: &[&Path]) -> usize {
    let mut ops = Vec::new();
    for path in paths {
        ops.extend(read_history(BufReader::new(File::open(path).unwrap())).unwrap());
    }
    let path = paths.last().expect("a history");
    assert!(!ops.is_empty(), "empty history");
    if let Err(violation) = check::check(&ops) {
        panic!("history {} is not linearizable: {violation}", path.display());
    }
    ops.len()
}
