//! Linearizability checker for KV histories ([`crate::history::Operation`]).
//!
//! Every KV op touches one key and linearizability is compositional
//! (Herlihy & Wing), so each key is checked alone against a register
//! `Option<Vec<u8>>` with the semantics of [`KvStore::apply`]. The search is
//! Wing & Gong's, with Lowe's memoization (WGL): depth-first over which
//! operation takes effect next, remembering every (set of linearized
//! operations, register value) already explored. An operation without a
//! return may take effect at any time after its invocation, or never.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::app::kv::{KvOp, KvResult, KvStore};
use crate::history::Operation;

/// Most (linearized set, value) states explored per key before giving up.
pub const SEARCH_STATES_MAX: usize = 4_000_000;

/// Why a history is not (or could not be shown) linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: Vec<u8>,
    /// The operations on that key, by invocation time.
    pub ops: Vec<Operation>,
    /// True when the search limit was hit rather than a proof of violation.
    pub search_limit: bool,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what =
            if self.search_limit { "linearizability undecided (search limit)" } else { "not linearizable" };
        write!(f, "{what} on key {:?} ({} ops):", String::from_utf8_lossy(&self.key), self.ops.len())?;
        for o in &self.ops {
            let result = match &o.result {
                Some(r) => format!("{r:?}"),
                None => "pending".to_string(),
            };
            let ret = o.ret.map_or("-".to_string(), |r| r.to_string());
            write!(
                f,
                "\n  client {} #{} {:?} -> {} [{}, {}]",
                o.client_id, o.request_number, o.op, result, o.invoke, ret
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// Checks a whole history, key by key.
pub fn check(ops: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.op.key()).or_default().push(op);
    }
    for (key, mut key_ops) in by_key {
        key_ops.sort_by_key(|o| o.invoke);
        if let Err(search_limit) = check_key(&key_ops) {
            return Err(Violation {
                key: key.to_vec(),
                ops: key_ops.into_iter().cloned().collect(),
                search_limit,
            });
        }
    }
    Ok(())
}

/// The register model: one key of a KvStore.
fn apply(value: &Option<Vec<u8>>, op: &KvOp) -> (Option<Vec<u8>>, KvResult) {
    let mut store = KvStore::default();
    if let Some(v) = value {
        store.apply(&KvOp::Put { key: op.key().to_vec(), value: v.clone() });
    }
    let result = store.apply(op);
    let after = match store.apply(&KvOp::Get { key: op.key().to_vec() }) {
        KvResult::Value(v) => v,
        KvResult::Stored | KvResult::Deleted(_) | KvResult::Swapped(_) | KvResult::BadOp => None,
    };
    (after, result)
}

struct Search<'a> {
    ops: &'a [&'a Operation],
    done: Vec<u64>,
    seen: HashSet<(Vec<u64>, Option<Vec<u8>>)>,
    /// Completed operations not yet linearized.
    completed_left: usize,
}

impl Search<'_> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    /// Ok(true): linearizable from here; Err(()) search limit.
    fn dfs(&mut self, value: Option<Vec<u8>>) -> Result<bool, ()> {
        if self.completed_left == 0 {
            return Ok(true);
        }
        if !self.seen.insert((self.done.clone(), value.clone())) {
            return Ok(false);
        }
        if self.seen.len() > SEARCH_STATES_MAX {
            return Err(());
        }
        // The next op must be invoked before every pending completed op
        // returned (else that one precedes it in real time).
        let horizon = (0..self.ops.len())
            .filter(|i| !self.is_done(*i))
            .filter_map(|i| self.ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            let op = self.ops[i];
            if op.invoke > horizon {
                break; // Sorted by invocation.
            }
            if self.is_done(i) {
                continue;
            }
            let (after, result) = apply(&value, &op.op);
            if op.result.as_ref().is_some_and(|r| *r != result) {
                continue;
            }
            self.flip(i);
            let completed = op.result.is_some();
            if completed {
                self.completed_left -= 1;
            }
            let found = self.dfs(after);
            self.flip(i);
            if completed {
                self.completed_left += 1;
            }
            if found? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Ok if linearizable; Err(search_limit) otherwise.
fn check_key(ops: &[&Operation]) -> Result<(), bool> {
    let mut search = Search {
        ops,
        done: vec![0; ops.len().div_ceil(64)],
        seen: HashSet::new(),
        completed_left: ops.iter().filter(|o| o.result.is_some()).count(),
    };
    match search.dfs(None) {
        Ok(true) => Ok(()),
        Ok(false) => Err(false),
        Err(()) => Err(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<u8> {
        b"k".to_vec()
    }
    fn put(client: u64, v: &str, invoke: u64, ret: Option<u64>) -> Operation {
        Operation {
            client_id: client,
            request_number: invoke,
            op: KvOp::Put { key: key(), value: v.as_bytes().to_vec() },
            result: ret.map(|_| KvResult::Stored),
            invoke,
            ret,
        }
    }
    fn get(client: u64, v: Option<&str>, invoke: u64, ret: u64) -> Operation {
        Operation {
            client_id: client,
            request_number: invoke,
            op: KvOp::Get { key: key() },
            result: Some(KvResult::Value(v.map(|s| s.as_bytes().to_vec()))),
            invoke,
            ret: Some(ret),
        }
    }
    fn cas(client: u64, from: &str, to: &str, swapped: bool, invoke: u64, ret: u64) -> Operation {
        Operation {
            client_id: client,
            request_number: invoke,
            op: KvOp::Cas { key: key(), expected: from.as_bytes().to_vec(), value: to.as_bytes().to_vec() },
            result: Some(KvResult::Swapped(swapped)),
            invoke,
            ret: Some(ret),
        }
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        let ops = vec![put(1, "a", 0, Some(2)), get(2, Some("a"), 3, 4), get(2, None, 5, 6)];
        // The last get sees None after a put: only fine if something deleted.
        assert!(check(&ops).is_err());
        let ops = vec![
            put(1, "a", 0, Some(10)),
            get(2, None, 1, 2),      // before the put took effect
            get(3, Some("a"), 3, 4), // after
            Operation {
                client_id: 4,
                request_number: 1,
                op: KvOp::Del { key: key() },
                result: Some(KvResult::Deleted(true)),
                invoke: 11,
                ret: Some(12),
            },
            get(2, None, 13, 14),
        ];
        check(&ops).unwrap();
        // Other keys are independent.
        let mut other = put(9, "z", 0, Some(1));
        other.op = KvOp::Put { key: b"other".to_vec(), value: b"z".to_vec() };
        let mut with_other = ops.clone();
        with_other.push(other);
        check(&with_other).unwrap();
    }

    #[test]
    fn stale_read_is_caught() {
        let ops = vec![put(1, "a", 0, Some(1)), put(1, "b", 2, Some(3)), get(2, Some("a"), 4, 5)];
        let violation = check(&ops).unwrap_err();
        assert!(!violation.search_limit);
        assert_eq!(violation.key, key());
        assert!(violation.to_string().contains("not linearizable on key \"k\""));
    }

    #[test]
    fn lost_write_is_caught() {
        // Both puts returned before the reads, yet a read sees neither.
        let ops = vec![put(1, "a", 0, Some(1)), put(2, "b", 0, Some(1)), get(3, None, 2, 3)];
        assert!(check(&ops).is_err());
        // A read that sees either final value is fine.
        let ops = vec![put(1, "a", 0, Some(1)), put(2, "b", 0, Some(1)), get(3, Some("a"), 2, 3)];
        check(&ops).unwrap();
    }

    #[test]
    fn both_cas_succeeding_is_caught() {
        let ops = vec![put(1, "x", 0, Some(1)), cas(2, "x", "y", true, 2, 5), cas(3, "x", "z", true, 2, 5)];
        assert!(check(&ops).is_err());
        let ops = vec![put(1, "x", 0, Some(1)), cas(2, "x", "y", true, 2, 5), cas(3, "x", "z", false, 2, 5)];
        check(&ops).unwrap();
    }

    #[test]
    fn pending_ops_may_happen_or_not() {
        // A pending put explains a later read of its value...
        let ops = vec![put(1, "a", 0, None), get(2, Some("a"), 5, 6)];
        check(&ops).unwrap();
        // ...or never happens.
        let ops = vec![put(1, "a", 0, None), get(2, None, 5, 6)];
        check(&ops).unwrap();
        // But not before it was invoked.
        let ops = vec![get(2, Some("a"), 0, 1), put(1, "a", 2, None)];
        assert!(check(&ops).is_err());
        // And once seen it cannot be unseen.
        let ops = vec![put(1, "a", 0, None), get(2, Some("a"), 5, 6), get(2, None, 7, 8)];
        assert!(check(&ops).is_err());
    }
}
