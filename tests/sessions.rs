//! Client sessions (issue 12 item 5): at-most-once under forgery and
//! eviction. The core test runs everywhere; the namespace tests need root
//! (CI runs them).

mod cluster;
mod common;

use electrode::app::kv::{KvOp, KvResult};
use electrode::vr::{Action, Config, Replica};
use electrode::wire::{Reply, Request};

/// A single replica (it commits alone) with a client table of `table_max`.
fn single_replica(table_max: usize) -> Replica {
    let config = Config { client_table_max: table_max, ..Config::new(1, 0) };
    common::booted_core(config).0
}

/// Hands `request` to the core; returns the replies it produced.
fn submit(core: &mut Replica, client_id: u64, request_number: u64, op: &KvOp) -> Vec<Reply> {
    let mut out = Vec::new();
    core.on_request(Request { client_id, request_number, op: op.encode() }, &mut out);
    out.into_iter()
        .filter_map(|action| match action {
            Action::Reply { reply, .. } => Some(reply),
            _ => None,
        })
        .collect()
}

fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put { key: key.into(), value: value.into() }
}

fn cas(key: &str, expected: &str, value: &str) -> KvOp {
    KvOp::Cas { key: key.into(), expected: expected.into(), value: value.into() }
}

fn get(core: &mut Replica, client_id: u64, key: &str) -> Option<Vec<u8>> {
    let replies = submit(core, client_id, 1, &KvOp::Get { key: key.into() });
    assert_eq!(replies.len(), 1);
    match KvResult::decode(&replies[0].result) {
        Some(KvResult::Value(value)) => value,
        other => panic!("get answered {other:?}"),
    }
}

/// An honest client's cas executes but its reply is lost; fresh ids fill the
/// client table and evict it; someone puts the old value back; the
/// retransmitted cas must not swap a second time: it gets "session evicted".
#[test]
fn evicted_clients_retransmission_is_answered_evicted_and_not_executed_again() {
    const TABLE_MAX: usize = 8;
    const HONEST: u64 = 0x1000;
    let mut core = single_replica(TABLE_MAX);
    assert_eq!(submit(&mut core, HONEST, 1, &put("k", "a")).len(), 1);
    // Request 2, not idempotent: executed, its reply lost on the way.
    let first = submit(&mut core, HONEST, 2, &cas("k", "a", "b"));
    assert_eq!(KvResult::decode(&first[0].result), Some(KvResult::Swapped(true)));
    // A flood of fresh client ids (one request each) evicts the honest one.
    for id in 0..TABLE_MAX as u64 {
        assert_eq!(submit(&mut core, 0x9000 + id, 1, &put("flood", "x")).len(), 1);
    }
    // Another client restores the value the cas expects.
    assert_eq!(submit(&mut core, 0x2000, 1, &put("k", "a")).len(), 1);
    // The honest client's retransmission of request 2.
    let again = submit(&mut core, HONEST, 2, &cas("k", "a", "b"));
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].session_evicted, "retransmission not answered evicted: {again:?}");
    assert!(again[0].result.is_empty());
    assert_eq!(again[0].request_number, 2);
    // Executed once: the value put back after the first swap is still there.
    assert_eq!(get(&mut core, 0x3000, "k"), Some(b"a".to_vec()));
    assert_eq!(core.stats.sessions_evicted_replies, 1);
    // The next request of the evicted session is refused too (it never
    // executes: the client must start a new session).
    let next = submit(&mut core, HONEST, 3, &put("k", "c"));
    assert!(next[0].session_evicted);
    assert_eq!(get(&mut core, 0x3001, "k"), Some(b"a".to_vec()));
}

/// A forged request number u64::MAX for a victim's id is dropped by the core:
/// the victim's next requests still execute.
#[test]
fn forged_max_request_number_does_not_lock_out_the_victim() {
    const VICTIM: u64 = 0x77;
    let mut core = single_replica(16);
    assert_eq!(submit(&mut core, VICTIM, 1, &put("v", "1")).len(), 1);
    assert!(submit(&mut core, VICTIM, u64::MAX, &put("v", "forged")).is_empty());
    let replies = submit(&mut core, VICTIM, 2, &put("v", "2"));
    assert_eq!(replies.len(), 1);
    assert!(!replies[0].session_evicted);
    assert_eq!(get(&mut core, 0x78, "v"), Some(b"2".to_vec()));
}

// ---------------------------------------------------------------------------
// Namespace cluster (root)
// ---------------------------------------------------------------------------

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cluster::{assert_linearizable, report, Cluster};
use common::require_root;
use electrode::wire::{Decoded, Message, CLIENT_SENDER};

const SETTLE: Duration = Duration::from_secs(30);

fn encode_request(cluster: &Cluster, client_id: u64, request_number: u64, op: &KvOp) -> Vec<u8> {
    let request = Request { client_id, request_number, op: op.encode() };
    common::datagram_from(cluster.config.cluster_id, CLIENT_SENDER, 0, &Message::Request(request))
}

fn send_to_all(cluster: &Cluster, socket: &UdpSocket, datagram: &[u8]) {
    for i in 0..cluster.config.replica_count() {
        let _ = socket.send_to(datagram, SocketAddr::V4(cluster.replica_address(i)));
    }
}

/// Replies for `client_id` that arrive on `socket` within `wait`.
fn replies_for(cluster: &Cluster, socket: &UdpSocket, client_id: u64, wait: Duration) -> Vec<Reply> {
    let end = Instant::now() + wait;
    let mut buf = vec![0; 2048];
    let mut replies = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        socket.set_read_timeout(Some(left)).unwrap();
        let Ok(len) = socket.recv(&mut buf) else { break };
        if let Ok((_, Decoded::Message(Message::Reply(reply)))) =
            electrode::wire::decode(&buf[..len], cluster.config.cluster_id)
        {
            if reply.client_id == client_id {
                replies.push(reply);
            }
        }
    }
    replies
}

/// Sends request `request_number` (to every replica, re-sent every 100 ms)
/// until its reply comes; panics after 5 s.
fn call(cluster: &Cluster, socket: &UdpSocket, client_id: u64, request_number: u64, op: &KvOp) -> Reply {
    let datagram = encode_request(cluster, client_id, request_number, op);
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        send_to_all(cluster, socket, &datagram);
        let replies = replies_for(cluster, socket, client_id, Duration::from_millis(100));
        if let Some(reply) = replies.into_iter().find(|r| r.request_number == request_number) {
            return reply;
        }
    }
    panic!("no reply to client {client_id:x} request {request_number}\n{}", cluster.logs());
}

/// The client ids of a load's history file (from its invoke lines).
fn history_clients(path: &std::path::Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ids: Vec<u64> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["type"] == "invoke")
        .filter_map(|v| v["client"].as_u64())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// While a load runs, another source port sends requests carrying the load's
/// client ids, with request number u64::MAX and with the next numbers: the
/// replicas drop them (bound to the load's address), no reply is redirected
/// to the forger, and the load completes without a failure.
#[test]
fn forged_requests_with_a_victims_id_are_dropped_and_redirect_nothing() {
    require_root!();
    let mut cluster = Cluster::running("sf", 1, 51, SETTLE);
    let history = cluster.dir.join("victim.jsonl");
    let load = cluster.start_load(4000, 2, &history);
    let forger = cluster.client_socket();
    let start = Instant::now();
    let mut victims = Vec::new();
    while victims.len() < 2 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
        victims = history_clients(&history);
    }
    assert_eq!(victims.len(), 2, "the load's client ids never appeared in {}", history.display());
    let mut sent = 0u64;
    let mut redirected = 0usize;
    while !load.is_finished() && start.elapsed() < Duration::from_secs(120) {
        for &victim in &victims {
            let put = put("key-1", "forged");
            send_to_all(&cluster, &forger, &encode_request(&cluster, victim, u64::MAX, &put));
            // Request numbers the victim is about to use.
            for number in [2, 50, 500, 1000, 1500, 1999, 2000] {
                send_to_all(&cluster, &forger, &encode_request(&cluster, victim, number, &put));
            }
            sent += 8 * cluster.config.replica_count() as u64;
            redirected += replies_for(&cluster, &forger, victim, Duration::from_millis(5)).len();
        }
    }
    let r = cluster.finish_load(load);
    assert_eq!(r["ops"], 4000, "{r}");
    assert_eq!(redirected, 0, "{redirected} of the victim's replies went to the forger");
    let mut dropped = 0;
    for i in 0..cluster.config.replica_count() {
        assert!(cluster.stop_replica(i).success(), "replica {i} exited badly\n{}", cluster.logs());
        dropped += cluster.runtime_dropped(i, "client id bound to another address");
    }
    eprintln!("forgery: sent {sent} forged requests, replicas dropped {dropped} as bound elsewhere, redirected {redirected}");
    assert!(dropped > 0, "no forged request counted as bound to another address\n{}", cluster.logs());
    assert_linearizable(&history);
}

/// An honest client's cas executes and its reply is lost; fresh client ids
/// flood a small client table (ELECTRODE_TEST_CLIENT_TABLE_MAX) and evict
/// it; the value is put back; the retransmitted cas gets "session evicted"
/// and does not swap again. Then a real `electrode client` load under a
/// continuing flood reports its evictions as failures and exits non-zero.
#[test]
fn eviction_flood_never_executes_a_retransmission_twice() {
    require_root!();
    const TABLE_MAX: u64 = 16;
    let mut cluster = Cluster::up("se", 1, 52);
    cluster.set_replica_env("ELECTRODE_TEST_CLIENT_TABLE_MAX", &TABLE_MAX.to_string());
    cluster.start_all();
    cluster.wait_normal(SETTLE);
    let honest = cluster.client_socket();
    let other = cluster.client_socket();
    const HONEST: u64 = 0x4845_4f4e_4553_5400;
    let first = call(&cluster, &honest, HONEST, 1, &put("k", "a"));
    assert!(!first.session_evicted);
    // The cas executes; the test never reads its reply (lost).
    send_to_all(&cluster, &honest, &encode_request(&cluster, HONEST, 2, &cas("k", "a", "b")));
    std::thread::sleep(Duration::from_millis(300));
    for id in 0..4 * TABLE_MAX {
        let reply = call(&cluster, &other, 0x0f10_0d00_0000 + id, 1, &put("flood", "x"));
        assert!(!reply.session_evicted);
    }
    let restored = call(&cluster, &other, 0x5e7, 1, &put("k", "a"));
    assert!(!restored.session_evicted);
    // Drain the lost reply, then retransmit the cas.
    let _ = replies_for(&cluster, &honest, HONEST, Duration::from_millis(100));
    let again = call(&cluster, &honest, HONEST, 2, &cas("k", "a", "b"));
    assert!(again.session_evicted, "retransmission not answered evicted: {again:?}");
    let value = call(&cluster, &other, 0x6e7, 1, &KvOp::Get { key: b"k".to_vec() });
    assert_eq!(
        KvResult::decode(&value.result),
        Some(KvResult::Value(Some(b"a".to_vec()))),
        "cas executed twice"
    );

    // A real client under a continuing flood of fresh ids.
    let history = cluster.dir.join("evicted.jsonl");
    let load = cluster.start_load(300, 1, &history);
    let flood = cluster.client_socket();
    let mut id = 0x0710_0d00_0000_u64;
    while !load.is_finished() {
        // Bursts of fresh ids, each waited for (closed loop: the flood
        // evicts the client between its requests without starving it).
        for _ in 0..2 * TABLE_MAX {
            id += 1;
            // To every replica: whoever leads now (a view change may happen
            // under this load) takes them.
            send_to_all(&cluster, &flood, &encode_request(&cluster, id, 1, &put("flood", "y")));
        }
        let mut buf = vec![0; 2048];
        flood.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        for _ in 0..2 * TABLE_MAX {
            if flood.recv(&mut buf).is_err() {
                break;
            }
        }
    }
    let out = load.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "evicted load exited 0: {stderr}");
    let r = report(&out);
    let evicted = r["sessions_evicted"].as_u64().unwrap_or(0);
    eprintln!("eviction: {r}");
    assert!(evicted > 0, "no eviction reported: {r} {stderr}");
    assert!(stderr.contains("session evicted"), "{stderr}");
    let text = std::fs::read_to_string(&history).unwrap();
    assert!(text.contains(r#""error":"session evicted""#), "history lacks the eviction");
    for i in 0..cluster.config.replica_count() {
        assert!(cluster.stop_replica(i).success(), "replica {i} exited badly\n{}", cluster.logs());
    }
    assert_linearizable(&history);
}
