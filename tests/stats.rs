//! `electrode stats` against programs another process attached (root):
//! the classifier is loaded and attached to veth-b in namespace b by a
//! thread of this test, datagrams come from namespace a, and the built
//! binary, run in namespace b, must find the programs with nothing pinned
//! and report exactly what was sent. Also its one-line errors for an
//! interface without a program and for a missing interface.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use electrode::fastpath::{LoadOptions, Loaded};
use electrode::wire::MsgType;
use serde_json::Value;

const PORT: u16 = 7452;
const FOREIGN_PORT: u16 = 7453;
const CLUSTER_ID: u32 = 0x00c0_ffee;
const IP_STATS_A: [u8; 4] = [10, 202, 1, 1];
const IP_STATS_B: [u8; 4] = [10, 202, 1, 2];

/// (destination port, payload) of each datagram namespace a sends.
type Datagrams = Vec<(u16, Vec<u8>)>;
/// Counter values by `electrode stats` name; unnamed counters are zero.
type Expected = Vec<(&'static str, u64)>;

/// What namespace a sends, and the counters (by `electrode stats` name)
/// it must move. Prepare and PrepareOK are left out: their fast-path
/// verdicts depend on the features built in.
fn traffic() -> (Datagrams, Expected) {
    let samples = sample_messages();
    let request = datagram(CLUSTER_ID, &samples[MsgType::Request as usize - 1]);
    let commit = datagram(CLUSTER_ID, &samples[MsgType::Commit as usize - 1]);
    let mut bad_magic = request.clone();
    bad_magic[0] ^= 0xff;
    let wrong_cluster = datagram(CLUSTER_ID + 1, &samples[MsgType::Request as usize - 1]);
    let truncated = request[..ELECTRODE_HDR_LEN - 4].to_vec();

    let mut datagrams = Vec::new();
    datagrams.extend(std::iter::repeat_n((PORT, request.clone()), 5));
    datagrams.extend(std::iter::repeat_n((PORT, commit), 3));
    datagrams.extend(std::iter::repeat_n((FOREIGN_PORT, request), 2));
    datagrams.extend(std::iter::repeat_n((PORT, bad_magic), 2));
    datagrams.push((PORT, wrong_cluster));
    datagrams.push((PORT, truncated));
    let mut expected = vec![
        ("request", 5),
        ("commit", 3),
        ("foreign", 2),
        ("bad_magic", 2),
        ("wrong_cluster", 1),
        ("malformed", 1),
    ];
    if cfg!(feature = "fast_intake") {
        // Nothing armed the intake: each Request also gets its verdict.
        expected.push(("intake.pass_disarmed", 5));
    }
    (datagrams, expected)
}

/// `electrode <args>` inside namespace `ns`.
fn electrode_in(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_electrode")])
        .args(args)
        .output()
        .expect("run ip netns exec electrode")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `stats --watch` in `ns` until its first line, then sends SIGINT;
/// returns that line and the exit status. Bounded: a child that does not
/// print or exit in time is killed.
fn interrupt_watch(ns: &str) -> (String, ExitStatus) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_electrode"), "stats", "--iface", "veth-b", "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn stats --watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let (line_tx, line_rx) = mpsc::channel();
    // Detached: it ends at EOF, when the child exits (or is killed).
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = line_tx.send(line);
    });
    let first_line = line_rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    // `ip netns exec` execs the binary, so the child's pid is electrode's.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait().expect("wait for stats --watch") {
            Some(status) => return (first_line, status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                return (first_line, child.wait().expect("reap stats --watch"));
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The JSON objects of a `--json` run, one per line.
fn reports(output: &Output) -> Vec<Value> {
    text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect()
}

/// Counters the test traffic must leave alone: everything outside
/// tc_broadcast (the egress filter may see frames the kernel sends).
fn must_match(name: &str) -> bool {
    !name.starts_with("tc_")
}

/// Whether `report` shows exactly `expected` (others zero).
fn counts_match(report: &Value, expected: &[(&str, u64)]) -> bool {
    let Some(counters) = report["counters"].as_object() else {
        return false;
    };
    counters.iter().filter(|(name, _)| must_match(name)).all(|(name, value)| {
        let want = expected.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
        value.as_u64() == Some(want)
    })
}

#[test]
fn stats_reads_the_counters_of_programs_attached_by_another_process() {
    require_root!();
    let netns = veth_pair(IP_STATS_A, IP_STATS_B);
    let (ns_a, ns_b) = (netns.name(0).to_string(), netns.name(1).to_string());
    let (datagrams, expected) = traffic();
    let (attached_tx, attached_rx) = mpsc::channel::<u32>();

    let netns = &netns;
    let (once, text_once, watched, interrupted, no_program, missing) = thread::scope(|scope| {
        // Dropped on every exit of this closure (panics too), which lets
        // the owner thread detach and end.
        let (done_tx, done_rx) = mpsc::channel::<()>();
        scope.spawn(move || {
            netns.enter(1);
            let loaded = Loaded::load(LoadOptions { port: PORT, cluster_id: CLUSTER_ID, replica_count: 3 })
                .expect("load electrode eBPF object");
            let attachment = loaded.attach_xdp_iface("veth-b").expect("attach XDP to veth-b");
            #[cfg(feature = "tc_broadcast")]
            let tc = loaded.attach_tc(attachment.ifindex()).expect("attach tc to veth-b");
            // Bound sockets: no ICMP port-unreachable back to a.
            let _sockets: Vec<UdpSocket> = [PORT, FOREIGN_PORT]
                .map(|port| {
                    UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(IP_STATS_B), port)).expect("bind")
                })
                .into();
            attached_tx.send(attachment.ifindex()).expect("signal attached");
            let _ = done_rx.recv_timeout(Duration::from_secs(60));
            #[cfg(feature = "tc_broadcast")]
            tc.detach().expect("detach tc");
            attachment.detach().expect("detach XDP");
        });
        attached_rx.recv_timeout(Duration::from_secs(30)).expect("programs attached in ns b");

        scope
            .spawn(|| {
                netns.enter(0);
                let socket =
                    UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(IP_STATS_A), 0)).expect("bind a");
                for (port, bytes) in &datagrams {
                    let to = SocketAddrV4::new(Ipv4Addr::from(IP_STATS_B), *port);
                    socket.send_to(bytes, to).expect("send from ns a");
                }
            })
            .join()
            .expect("sender thread");

        // The counters may trail the sends by a little (another CPU).
        let deadline = Instant::now() + Duration::from_secs(5);
        let once = loop {
            let output = electrode_in(&ns_b, &["stats", "--iface", "veth-b", "--json"]);
            let matched = output.status.success()
                && reports(&output).first().is_some_and(|r| counts_match(r, &expected));
            if matched || Instant::now() >= deadline {
                break output;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let text_once = electrode_in(&ns_b, &["stats", "--iface", "veth-b"]);
        let watched = electrode_in(&ns_b, &["stats", "--iface", "veth-b", "--count", "2", "--json"]);
        let interrupted = interrupt_watch(&ns_b);
        let no_program = electrode_in(&ns_a, &["stats", "--iface", "veth-a"]);
        let missing = electrode_in(&ns_b, &["stats", "--iface", "no-such-if"]);
        drop(done_tx);
        (once, text_once, watched, interrupted, no_program, missing)
    });

    // Once, as JSON: exactly the traffic, and the programs by name.
    assert!(once.status.success(), "stats failed: {}", text(&once.stderr));
    let report = reports(&once).pop().expect("one report");
    assert!(counts_match(&report, &expected), "expected {expected:?}, got {report}");
    let sent = datagrams.len() as u64;
    let xdp_total: u64 = report["counters"]
        .as_object()
        .expect("counters object")
        .iter()
        // (A path's verdict on a datagram, e.g. intake.pass_disarmed on a
        // Request, is a second count of it, after the classifier's.)
        .filter(|(name, _)| must_match(name) && !name.starts_with("intake."))
        .map(|(_, value)| value.as_u64().expect("counts are integers"))
        .sum();
    assert_eq!(xdp_total, sent, "every datagram counted once: {report}");
    let programs = report["programs"].as_array().expect("programs array");
    assert_eq!(programs[0]["name"], "electrode_xdp", "{report}");
    assert!(programs[0]["hook"].as_str().is_some_and(|h| h.starts_with("xdp ")), "{report}");
    let want_programs = if cfg!(feature = "tc_broadcast") { 2 } else { 1 };
    assert_eq!(programs.len(), want_programs, "{report}");
    if cfg!(feature = "tc_broadcast") {
        assert_eq!(programs[1]["name"], "electrode_tc", "{report}");
        assert_eq!(programs[0]["counters_map_id"], programs[1]["counters_map_id"], "one shared map");
    }

    // Once, as text: every nonzero counter by name.
    assert!(text_once.status.success(), "stats failed: {}", text(&text_once.stderr));
    let table = text(&text_once.stdout);
    assert!(table.starts_with("veth-b (ifindex "), "{table}");
    assert!(table.contains("electrode_xdp"), "{table}");
    for (name, count) in &expected {
        let row = table.lines().find(|line| line.split_whitespace().next() == Some(name));
        let row = row.unwrap_or_else(|| panic!("no row {name} in\n{table}"));
        assert!(row.trim_end().ends_with(&format!(" {count}")), "{name}: {row}");
    }
    assert!(!table.lines().any(|line| line.trim_start().starts_with("unknown_type")), "{table}");

    // --count 2: two reports a second apart, the second with rates (the
    // traffic is over, so every rate is zero).
    assert!(watched.status.success(), "stats --count 2 failed: {}", text(&watched.stderr));
    let watched = reports(&watched);
    assert_eq!(watched.len(), 2, "{watched:?}");
    assert!(watched[0].get("per_second").is_none(), "{}", watched[0]);
    assert!(counts_match(&watched[1], &expected), "{}", watched[1]);
    let elapsed = watched[1]["elapsed_s"].as_f64().expect("elapsed_s");
    assert!((0.9..5.0).contains(&elapsed), "interval {elapsed} s");
    assert_eq!(watched[1]["per_second"]["request"], 0.0, "{}", watched[1]);

    // --watch until Ctrl-C: a clean exit.
    let (first_line, status) = interrupted;
    assert!(first_line.starts_with("veth-b (ifindex "), "first report: {first_line:?}");
    assert!(status.success(), "SIGINT during --watch: {status:?}");

    // Errors: one line, exit 1, naming the interface.
    for (output, iface, words) in [
        (&no_program, "veth-a", "no electrode program attached to veth-a"),
        (&missing, "no-such-if", "no-such-if"),
    ] {
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{iface}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{iface}: one line: {stderr:?}");
        assert!(stderr.starts_with("electrode: ") && stderr.contains(words), "{iface}: {stderr}");
        assert!(output.stdout.is_empty(), "{iface}: nothing on stdout");
    }
}
