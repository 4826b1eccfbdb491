//! End-to-end tests on a namespace cluster of real replica processes (root;
//! CI runs them and never skips). Every client run records a history that
//! must pass the simulator's linearizability checker. Every wait is bounded
//! and the cluster is torn down on every exit path.
//!
//! Built with the `test-faults` feature (see Cargo.toml), which compiles the
//! seeded fault layer into the replica binary these tests start.

mod cluster;
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use cluster::{assert_linearizable, assert_linearizable_together, report, Cluster};
use common::require_root;
use electrode::wire::consts::QP_WINDOW;
use electrode::wire::{Commit, Encoder, Message, PrepareOk, Request, CLIENT_SENDER};

const LOAD_TIMEOUT: Duration = Duration::from_secs(180);
const SETTLE: Duration = Duration::from_secs(30);

fn run_load(cluster: &Cluster, n: u64, threads: u64, history: &std::path::Path) -> serde_json::Value {
    let out = cluster.client(
        &[
            "client",
            "-n",
            &n.to_string(),
            "-t",
            &threads.to_string(),
            "--keys",
            "20",
            "--json",
            "--history",
            history.to_str().unwrap(),
        ],
        LOAD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    report(&out)
}

#[test]
fn normal_load_commits_everything_and_replicas_agree() {
    if !require_root("normal_load_commits_everything_and_replicas_agree") {
        return;
    }
    let mut cluster = Cluster::up("n", 1, 1);
    cluster.start_all();
    cluster.wait_normal(SETTLE);
    let history = cluster.dir.join("history.jsonl");
    let r = run_load(&cluster, 3000, 4, &history);
    assert_eq!(r["ops"], 3000);
    assert_eq!(r["failed"], 0);
    let commit = cluster.wait_converged(SETTLE);
    let ops = assert_linearizable(&history);
    assert_eq!(ops, 3000);
    eprintln!("normal: 3000 ops, commit {commit}, {} ops/s", r["throughput_ops_per_s"]);
    for i in 0..3 {
        assert!(cluster.stop_replica(i).success(), "replica {i} did not exit cleanly");
        assert!(cluster.log(i).contains("stopped; received"), "no counters in log {i}");
    }
    assert_fast_paths_carried_the_load(&cluster, commit);
}

/// With a fast path compiled in, the normal-case load must have taken it:
/// (fast_reply) the followers' kernels answered most Prepares; (quorum
/// prune) the leader's user space saw about one PrepareOK per op instead of
/// 2f; (tc_broadcast) the leader sent most Prepares once, copied by TC.
fn assert_fast_paths_carried_the_load(cluster: &Cluster, ops: u64) {
    let leader = 0;
    let followers = [1, 2];
    if cfg!(feature = "fast_reply") {
        for f in followers {
            let c = cluster.ebpf_counters(f);
            let tx = c.get("fast_reply_tx").copied().unwrap_or(0);
            let user_prepares = cluster.datagram_count(f, "prepare");
            eprintln!("fast_reply: follower {f}: kernel acked {tx} Prepares, user space got {user_prepares}, {ops} ops");
            assert!(
                tx * 10 >= ops * 8,
                "follower {f}: only {tx} of {ops} Prepares took the fast path: {c:?}"
            );
        }
    }
    if cfg!(feature = "fast_quorum_prune") {
        let c = cluster.ebpf_counters(leader);
        let passed = c.get("quorum_prune.pass_quorum").copied().unwrap_or(0);
        let dropped = c.get("quorum_prune.drop_redundant").copied().unwrap_or(0)
            + c.get("quorum_prune.drop_below_quorum").copied().unwrap_or(0);
        let user_acks = cluster.datagram_count(leader, "prepare_ok");
        eprintln!(
            "quorum_prune: leader passed {passed}, dropped {dropped}, user-space acks {user_acks}, {ops} ops"
        );
        assert!(passed * 10 >= ops * 8, "leader: only {passed} quorum acks for {ops} ops: {c:?}");
        assert!(dropped * 10 >= ops * 8, "leader: only {dropped} acks pruned for {ops} ops: {c:?}");
        assert!(user_acks * 10 <= ops * 13, "leader user space got {user_acks} acks for {ops} ops");
    }
    if cfg!(feature = "tc_broadcast") {
        let c = cluster.ebpf_counters(leader);
        let marked = c.get("tc_marked").copied().unwrap_or(0);
        let copies = c.get("tc_copies").copied().unwrap_or(0);
        eprintln!("tc_broadcast: leader marked {marked} sends, TC made {copies} copies, {ops} ops");
        assert!(marked * 10 >= ops * 8, "leader broadcast only {marked} times for {ops} ops: {c:?}");
        assert!(copies >= 2 * marked * 9 / 10, "TC made {copies} copies of {marked} marked sends");
        assert_eq!(c.get("tc_error").copied().unwrap_or(0), 0);
    }
}

#[test]
fn leader_crash_view_change_and_recovery() {
    if !require_root("leader_crash_view_change_and_recovery") {
        return;
    }
    let mut cluster = Cluster::up("k", 1, 2);
    cluster.start_all();
    cluster.wait_normal(SETTLE);
    let history = cluster.dir.join("history.jsonl");
    let ns = cluster.ns_client();
    let config = cluster.config_path.clone();
    let hist = history.clone();
    // The load runs in its own thread so the test can crash the leader
    // while it is in flight.
    let load = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                cluster::BIN,
                "client",
                "-n",
                "40000",
                "-t",
                "4",
                "--keys",
                "20",
                "--json",
            ])
            .arg("--history")
            .arg(&hist)
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    if load.is_finished() {
        let out = load.join().unwrap();
        panic!(
            "the load finished before the leader was killed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    cluster.kill_replica(0);
    // The survivors form view 1; the client follows the new leader.
    std::thread::sleep(Duration::from_millis(1500));
    cluster.start_replica(0);
    let out = load.join().unwrap();
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    let r = report(&out);
    assert_eq!(r["failed"], 0);
    assert_linearizable(&history);
    let commit = cluster.wait_converged(SETTLE);
    let status = cluster.status();
    let view = status[1].as_ref().unwrap().0;
    assert!(view >= 1, "no view change happened: {status:?}");
    assert!(cluster.log(0).contains("normal"), "restarted replica 0 never recovered:\n{}", cluster.log(0));
    eprintln!("crash: view {view}, commit {commit}, retries {}", r["retries"]);

    // A follower killed with -9 and restarted at once attaches cleanly
    // (nothing pinned, nothing left behind) and catches up.
    let follower = (0..3).find(|i| *i as u64 != view % 3).unwrap();
    cluster.kill_replica(follower);
    cluster.start_replica(follower);
    let history_after = cluster.dir.join("history-after.jsonl");
    let r = run_load(&cluster, 1000, 2, &history_after);
    assert_eq!(r["failed"], 0);
    // The second load reads what the first wrote: one history.
    assert_linearizable_together(&[&history, &history_after]);
    let after = cluster.wait_converged(SETTLE);
    assert!(after >= commit + 1000, "commit {after} after 1000 more ops on {commit}");
    assert!(
        !cluster.log(follower).contains("Error"),
        "restarted follower {follower} reported an error:\n{}",
        cluster.log(follower)
    );

    // After the view change the kernel paths were re-armed for the new
    // leader and carried the rest of the load: most ops ran in the new view.
    for i in 0..3 {
        assert!(cluster.stop_replica(i).success(), "replica {i} did not exit cleanly");
    }
    let new_leader = (view % 3) as usize;
    let steady = (0..3).find(|i| *i != new_leader && *i != follower).unwrap();
    if cfg!(feature = "fast_reply") {
        let tx = cluster.ebpf_counters(steady).get("fast_reply_tx").copied().unwrap_or(0);
        eprintln!("crash: follower {steady} kernel acked {tx} Prepares over {after} ops");
        assert!(tx * 10 >= after * 7, "fast_reply carried only {tx} of {after} ops across the view change");
    }
    if cfg!(feature = "fast_quorum_prune") {
        let c = cluster.ebpf_counters(new_leader);
        let passed = c.get("quorum_prune.pass_quorum").copied().unwrap_or(0);
        eprintln!("crash: new leader {new_leader} passed {passed} quorum acks over {after} ops");
        assert!(passed * 2 >= after, "new leader pruned for only {passed} of {after} ops: {c:?}");
    }
    if cfg!(feature = "tc_broadcast") {
        let c = cluster.ebpf_counters(new_leader);
        let marked = c.get("tc_marked").copied().unwrap_or(0);
        eprintln!("crash: new leader {new_leader} broadcast {marked} times over {after} ops");
        assert!(marked * 2 >= after, "new leader broadcast only {marked} times for {after} ops: {c:?}");
    }
}

#[test]
fn loss_duplicates_and_reordering_do_not_lose_operations() {
    if !require_root("loss_duplicates_and_reordering_do_not_lose_operations") {
        return;
    }
    let mut cluster = Cluster::up("l", 1, 3);
    // 5% random loss on input in every namespace: both ways on every link.
    let rules = "table inet lossy {\n chain input {\n  type filter hook input priority 0;\n  \
                 meta l4proto udp numgen random mod 100 < 5 counter drop\n }\n}\n";
    for i in 0..3 {
        cluster.nft(&cluster.ns_replica(i), rules);
    }
    cluster.nft(&cluster.ns_client(), rules);
    // And the transport's own faults: duplicates and delays (reordering).
    cluster.set_replica_env("ELECTRODE_TEST_FAULTS", "seed=11,drop=1,dup=5,delay=10,delay_ms=3");
    cluster.start_all();
    cluster.wait_normal(SETTLE);
    let history = cluster.dir.join("history.jsonl");
    let r = run_load(&cluster, 2000, 4, &history);
    assert_eq!(r["failed"], 0);
    assert!(r["retries"].as_u64().unwrap() > 0, "5% loss but no client retry: {r}");
    let dropped: u64 = (0..3).map(|i| cluster.nft_dropped(&cluster.ns_replica(i))).sum::<u64>()
        + cluster.nft_dropped(&cluster.ns_client());
    assert!(dropped > 100, "nftables dropped only {dropped} datagrams");
    eprintln!("loss: nftables dropped {dropped} datagrams, client retried {}", r["retries"]);
    assert_linearizable(&history);
    cluster.wait_converged(SETTLE);
    for i in 0..3 {
        assert!(cluster.stop_replica(i).success());
        let log = cluster.log(i);
        assert!(log.contains("test faults FaultCounts"), "fault layer not active:\n{log}");
    }
}

#[test]
fn hostile_datagrams_are_counted_and_change_nothing() {
    if !require_root("hostile_datagrams_are_counted_and_change_nothing") {
        return;
    }
    let mut cluster = Cluster::up("h", 1, 4);
    cluster.start_all();
    cluster.wait_normal(SETTLE);
    let socket = cluster.client_socket();
    let targets: Vec<SocketAddr> = (0..3).map(|i| SocketAddr::V4(cluster.replica_address(i))).collect();
    let cluster_id = cluster.config.cluster_id;
    let history = cluster.dir.join("history.jsonl");
    let sent = std::thread::scope(|scope| {
        let attacker = scope.spawn(move || {
            // Valid-looking datagrams to mutate: a forged PrepareOk and
            // Commit claiming to be replica 1 (from the wrong address),
            // and a request.
            let mut templates = Vec::new();
            Encoder::new(cluster_id, 1)
                .encode(&Message::PrepareOk(PrepareOk { view: 0, op: 1_000_000, replica: 1 }), &mut templates)
                .unwrap();
            Encoder::new(cluster_id, 1)
                .encode(&Message::Commit(Commit { view: 0, commit: 1_000_000 }), &mut templates)
                .unwrap();
            Encoder::new(cluster_id, CLIENT_SENDER)
                .encode(
                    &Message::Request(Request {
                        client_id: 42,
                        request_number: 1,
                        op: b"\x09garbage".to_vec(),
                    }),
                    &mut templates,
                )
                .unwrap();
            let mut x: u64 = 0x1234_5678;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut sent = 0u64;
            for i in 0..20_000u64 {
                let mut d = if i % 3 == 0 {
                    (0..(next() % 1500) as usize).map(|_| next() as u8).collect::<Vec<u8>>()
                } else {
                    templates[(next() % templates.len() as u64) as usize].clone()
                };
                if i % 3 == 1 && !d.is_empty() {
                    let at = (next() % d.len() as u64) as usize;
                    d[at] = next() as u8;
                }
                let _ = socket.send_to(&d, targets[(i % 3) as usize]);
                sent += 1;
                if i % 200 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            sent
        });
        let r = run_load(&cluster, 2000, 2, &history);
        assert_eq!(r["failed"], 0);
        attacker.join().unwrap()
    });
    assert_linearizable(&history);
    cluster.wait_converged(SETTLE);
    let mut dropped = 0u64;
    for i in 0..3 {
        assert!(cluster.stop_replica(i).success(), "replica {i} crashed under hostile input");
        let log = cluster.log(i);
        dropped += log
            .lines()
            .filter(|l| l.contains("stopped;"))
            .flat_map(|l| l.split(", "))
            .filter(|p| p.starts_with("dropped["))
            .filter_map(|p| p.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    eprintln!("hostile: sent {sent}, replicas counted {dropped} dropped");
    assert!(dropped >= sent / 2, "sent {sent} hostile datagrams, only {dropped} counted as dropped");
}

/// Issue 12: a host that is not a member must not be able to commit for a
/// leader cut off from its followers. The leader is isolated (nftables on
/// the bridge, before any XDP on a replica) while the client namespace
/// sends it PrepareOKs that are right in every field (cluster id, view,
/// every op of its window, each follower's id as sender and replica) but
/// the source address. Its commit must not move, the history must stay
/// linearizable, and the forgeries must have been dropped by the
/// membership rule: in the kernel (quorum_prune.drop_foreign_source) when
/// fast_quorum_prune is built in, else by the runtime ("sender address is
/// not the replica's").
#[test]
fn forged_acks_cannot_commit_for_an_isolated_leader() {
    if !require_root("forged_acks_cannot_commit_for_an_isolated_leader") {
        return;
    }
    const ISOLATION: Duration = Duration::from_secs(4);
    const FORGED_MAX: u64 = 200_000;
    let mut cluster = Cluster::up("f", 1, 5);
    cluster.start_all();
    cluster.wait_normal(SETTLE);
    let (leader, followers) = (0usize, [1usize, 2]);
    let history = cluster.dir.join("history.jsonl");
    let load = cluster.start_load(40_000, 4, &history);
    std::thread::sleep(Duration::from_millis(700));
    assert!(!load.is_finished(), "the load finished before the cut: make it longer");
    cluster.cut_off(leader, &followers);
    // Acks already on their way at the cut may still complete ops: let
    // them land, then take the baseline.
    std::thread::sleep(Duration::from_millis(300));
    let before = cluster.status()[leader].clone().expect("the isolated leader answers status");
    let (view, _, _, commit_before, _) = before.clone();
    let socket = cluster.client_socket();
    let target = SocketAddr::V4(cluster.replica_address(leader));
    let cluster_id = cluster.config.cluster_id;
    let started = std::time::Instant::now();
    let (mut sent, mut op_max, mut rounds) = (0u64, 0u64, 0u64);
    let mut datagrams = Vec::new();
    while started.elapsed() < ISOLATION && sent < FORGED_MAX {
        // The leader's window as it stands: every op it may have
        // prepared, from its commit up to the pipeline bound.
        let (_, status, op, commit, _) = cluster.status()[leader].clone().expect("leader status");
        assert_eq!(status, "normal", "the isolated leader left its view");
        op_max = op_max.max(op);
        rounds += 1;
        for op in commit + 1..=commit + QP_WINDOW as u64 {
            for r in followers {
                datagrams.clear();
                Encoder::new(cluster_id, r as u8)
                    .encode(&Message::PrepareOk(PrepareOk { view, op, replica: r as u8 }), &mut datagrams)
                    .unwrap();
                for d in &datagrams {
                    let _ = socket.send_to(d, target);
                    sent += 1;
                }
            }
            // Paced, so the leader's socket buffer never drops one and
            // every forgery is counted somewhere.
            if op % 16 == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }
    let after = cluster.status()[leader].clone().expect("the isolated leader answers status");
    let cut_dropped = cluster.heal();
    eprintln!(
        "forged acks: {sent} forged PrepareOKs in {rounds} rounds over {:?}; leader view {view}, \
         commit {commit_before} before, {} after (op up to {op_max}); the cut dropped {cut_dropped} packets",
        started.elapsed(),
        after.3
    );
    assert_eq!(after.0, view, "the isolated leader changed view during the isolation");
    assert!(op_max > commit_before, "the leader had no uncommitted op: the forgeries tested nothing");
    assert_eq!(after.3, commit_before, "the isolated leader committed with forged acks");
    assert!(cut_dropped > 0, "the bridge rules dropped nothing: the leader was not isolated");

    let out = load.join().unwrap();
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    let r = report(&out);
    assert_eq!(r["failed"], 0);
    assert_linearizable(&history);
    let commit = cluster.wait_converged(SETTLE);
    for i in 0..3 {
        assert!(cluster.stop_replica(i).success(), "replica {i} did not exit cleanly");
    }
    cluster.assert_no_panic();
    let kernel = cluster.ebpf_counters(leader).get("quorum_prune.drop_foreign_source").copied().unwrap_or(0);
    let runtime = cluster.runtime_dropped(leader, "sender address is not the replica's");
    eprintln!(
        "forged acks: sent {sent}; dropped by the kernel (drop_foreign_source) {kernel}, by the runtime \
         (sender address is not the replica's) {runtime}; final commit {commit}, client retries {}",
        r["retries"]
    );
    // Each forgery is dropped once, by one of the two, and nothing else
    // from a wrong address arrived.
    assert!(kernel + runtime <= sent, "{kernel} + {runtime} drops for {sent} forgeries");
    assert!((kernel + runtime) * 100 >= sent * 99, "only {kernel} + {runtime} of {sent} forgeries dropped");
    if cfg!(feature = "fast_quorum_prune") {
        assert!(kernel * 100 >= sent * 99, "the kernel dropped only {kernel} of {sent} forged acks");
    } else {
        assert_eq!(kernel, 0);
    }
}
