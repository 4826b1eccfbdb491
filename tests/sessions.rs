//! Client sessions (issue 12 item 5): at-most-once under forgery and
//! eviction. The core test runs everywhere; the namespace tests need root
//! (CI runs them).

mod cluster;
mod common;

use electrode::app::kv::{KvOp, KvResult, KvStore};
use electrode::vr::{Action, Config, Replica};
use electrode::wire::{Reply, Request};

/// A single replica (it commits alone) with a client table of `table_max`.
fn single_replica(table_max: usize) -> Replica {
    let mut config = Config::new(1, 0);
    config.client_table_max = table_max;
    let mut core = Replica::new(config, Box::new(KvStore::default()), 1);
    let mut out = Vec::new();
    core.start(&mut out);
    core
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
