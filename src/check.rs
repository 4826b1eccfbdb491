//! Linearizability checker for KV histories ([`crate::history::Operation`]).
//!
//! Every KV op touches one key and linearizability is compositional
//! (Herlihy & Wing), so each key is checked alone, keys in parallel, against
//! a register `Option<value>` with the semantics of [`KvStore::apply`].
//!
//! Per key, the history is cut into segments at every point no operation
//! spans: each completed operation before the cut returned before every
//! operation after it was invoked. The states a segment can end in (the
//! register value, and which operations without a reply already took
//! effect) are the states the next segment starts from, so a long history
//! costs the sum of its segments, not their product. Within a segment the
//! search is Wing & Gong's with Lowe's memoization (WGL, as in Knossos and
//! Porcupine): depth-first over which operation takes effect next,
//! remembering every (set of linearized operations, register value)
//! already explored. An operation without a reply may take effect at any
//! time after its invocation, or never; one the replicas rejected
//! (`KvResult::BadOp`) had no effect and is ignored.
//!
//! On a violation the report is a small window of the failing segment
//! (see [`Violation`]) that fails on its own, from the values the register
//! may hold before it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::app::kv::{KvOp, KvResult};
use crate::history::Operation;

/// Most (linearized set, value) states explored per segment before giving up.
pub const SEARCH_STATES_MAX: usize = 4_000_000;
/// Most states spent listing every state a segment can end in; past it
/// (many concurrent operations on one key) the search looks for one way
/// through the segment from each start, as plain WGL does, and a failure
/// after that is reported as undecided rather than as a violation.
pub const SEGMENT_STATES_EXACT_MAX: usize = 100_000;
/// Most operations a violation report lists.
pub const WINDOW_MAX: usize = 50;
/// Most possible prior values a violation report lists.
const VALUES_BEFORE_MAX: usize = 8;
/// Stack of a checking thread: the search recurses once per operation of
/// a segment.
const CHECK_STACK_BYTES: usize = 256 << 20;

/// Why a history is not (or could not be shown) linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: Vec<u8>,
    /// Operations on the key in the whole history.
    pub key_ops: usize,
    /// A window of the key's operations that is not linearizable by itself,
    /// by invocation time: the failing segment, shortened while it still
    /// fails. Shortening keeps it sound: later writes in the segment whose
    /// interval reaches into the window become operations without a result
    /// ([`WindowOp::result_ignored`]), and reads are dropped only while the
    /// rest still fails. At most [`WINDOW_MAX`] listed.
    pub window: Vec<WindowOp>,
    /// Operations in the window (may exceed `window.len()`).
    pub window_len: usize,
    /// Values the register may hold before the window (None: absent),
    /// at most a few.
    pub values_before: Vec<Option<Vec<u8>>>,
    /// How many values it may hold before the window.
    pub values_before_len: usize,
    /// The window fails whatever the value before it (then
    /// `values_before` is empty).
    pub any_value_before: bool,
    /// True when the search limit was hit rather than a proof of violation.
    pub search_limit: bool,
}

/// One operation of a violation report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowOp {
    pub op: Operation,
    /// The window does not hold it to its result (only to its interval).
    pub result_ignored: bool,
}

/// Bytes as text when printable UTF-8, else `0x` and hex.
pub fn readable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

fn readable_value(value: &Option<Vec<u8>>) -> String {
    value.as_ref().map_or("absent".to_string(), |v| format!("{:?}", readable(v)))
}

fn describe_op(op: &KvOp) -> String {
    match op {
        KvOp::Get { .. } => "get".to_string(),
        KvOp::Del { .. } => "del".to_string(),
        KvOp::Put { value, .. } => format!("put {:?}", readable(value)),
        KvOp::Cas { expected, value, .. } => format!("cas {:?} -> {:?}", readable(expected), readable(value)),
    }
}

fn describe_result(result: &Option<KvResult>) -> String {
    match result {
        None => "no reply".to_string(),
        Some(KvResult::Value(v)) => readable_value(v),
        Some(KvResult::Stored) => "stored".to_string(),
        Some(KvResult::Deleted(existed)) => (if *existed { "deleted" } else { "was absent" }).to_string(),
        Some(KvResult::Swapped(swapped)) => (if *swapped { "swapped" } else { "not swapped" }).to_string(),
        Some(KvResult::BadOp) => "rejected".to_string(),
    }
}

/// The JSON shape of a report (`electrode check-history --json`).
#[derive(Serialize)]
struct ViolationJson {
    linearizable: bool,
    search_limit: bool,
    key: String,
    key_ops: usize,
    window_len: usize,
    values_before: Vec<Option<String>>,
    values_before_len: usize,
    any_value_before: bool,
    window: Vec<WindowOpJson>,
}

#[derive(Serialize)]
struct WindowOpJson {
    client: u64,
    seq: u64,
    op: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected: Option<String>,
    /// As in the history file: get's value or null, put true, del/cas
    /// true/false; absent if the operation got no reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    /// The replicas rejected it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    rejected: bool,
    result_ignored: bool,
    invoke_ns: u64,
    return_ns: Option<u64>,
}

impl Violation {
    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let window = self
            .window
            .iter()
            .map(|w| {
                let (value, expected) = match &w.op.op {
                    KvOp::Get { .. } | KvOp::Del { .. } => (None, None),
                    KvOp::Put { value, .. } => (Some(readable(value)), None),
                    KvOp::Cas { expected, value, .. } => (Some(readable(value)), Some(readable(expected))),
                };
                WindowOpJson {
                    client: w.op.client_id,
                    seq: w.op.request_number,
                    op: w.op.op.kind().to_string(),
                    value,
                    expected,
                    result: w.op.result.as_ref().and_then(|r| match r {
                        KvResult::Value(v) => Some(v.as_deref().map(readable).into()),
                        KvResult::Stored => Some(true.into()),
                        KvResult::Deleted(flag) | KvResult::Swapped(flag) => Some((*flag).into()),
                        KvResult::BadOp => None,
                    }),
                    rejected: w.op.result == Some(KvResult::BadOp),
                    result_ignored: w.result_ignored,
                    invoke_ns: w.op.invoke,
                    return_ns: w.op.ret,
                }
            })
            .collect();
        serde_json::to_value(ViolationJson {
            linearizable: false,
            search_limit: self.search_limit,
            key: readable(&self.key),
            key_ops: self.key_ops,
            window_len: self.window_len,
            values_before: self.values_before.iter().map(|v| v.as_deref().map(readable)).collect(),
            values_before_len: self.values_before_len,
            any_value_before: self.any_value_before,
            window,
        })
        .unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what =
            if self.search_limit { "linearizability undecided (search limit)" } else { "not linearizable" };
        let before: Vec<String> = self.values_before.iter().map(readable_value).collect();
        let more = if self.values_before_len > before.len() {
            format!(" and {} more", self.values_before_len - before.len())
        } else {
            String::new()
        };
        if self.search_limit {
            write!(
                f,
                "{what} on key {:?}: the search gave up in a stretch of {} of its {} operations where \
                 operations overlap without a break (first {} listed):",
                readable(&self.key),
                self.window_len,
                self.key_ops,
                self.window.len()
            )?;
        }
        let from = if self.any_value_before {
            "whatever the value before it".to_string()
        } else {
            format!("from the value before it (one of: {}{more})", before.join(", "))
        };
        if !self.search_limit {
            write!(
                f,
                "{what} on key {:?}: a window of {} of its {} operations fails by itself, {from}:",
                readable(&self.key),
                self.window_len,
                self.key_ops,
            )?;
        }
        for w in &self.window {
            let o = &w.op;
            let ret = o.ret.map_or("-".to_string(), |r| r.to_string());
            let ignored = if w.result_ignored { " (result not held to)" } else { "" };
            write!(
                f,
                "\n  client {} #{} {} -> {}{ignored} [{}, {}]",
                o.client_id,
                o.request_number,
                describe_op(&o.op),
                describe_result(&o.result),
                o.invoke,
                ret
            )?;
        }
        if self.window_len > self.window.len() {
            write!(f, "\n  ... and {} more operations", self.window_len - self.window.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// Checks a whole history: keys in parallel, on every CPU.
pub fn check(ops: &[Operation]) -> Result<(), Violation> {
    check_with_threads(ops, std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// [`check`] on `threads` threads; the reported violation is the one of
/// the smallest failing key whatever the thread count.
pub fn check_with_threads(ops: &[Operation], threads: usize) -> Result<(), Violation> {
    let mut by_key: FxHashMap<&[u8], Vec<&Operation>> = FxHashMap::default();
    for op in ops {
        by_key.entry(op.op.key()).or_default().push(op);
    }
    let mut keys: Vec<(&[u8], Vec<&Operation>)> = by_key.into_iter().collect();
    // Largest keys first, so one big key does not start last.
    keys.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let next = AtomicUsize::new(0);
    let violations: Mutex<BTreeMap<Vec<u8>, Violation>> = Mutex::new(BTreeMap::new());
    let work = || loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some((key, key_ops)) = keys.get(index) else { return };
        if let Err(violation) = check_key(key, key_ops) {
            violations.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_vec(), violation);
        }
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.clamp(1, keys.len().max(1)))
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(CHECK_STACK_BYTES)
                    .spawn_scoped(scope, work)
                    .expect("spawning a checker thread")
            })
            .collect();
        for handle in handles {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let violations = violations.into_inner().unwrap_or_else(|p| p.into_inner());
    match violations.into_iter().next() {
        Some((_, violation)) => Err(violation),
        None => Ok(()),
    }
}

/// Register values are interned per key.
type Value = Option<u32>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Put(u32),
    Del,
    Cas(u32, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Value(Value),
    Stored,
    Deleted(bool),
    Swapped(bool),
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
struct Op {
    kind: Kind,
    /// None: no reply; may take effect after `invoke`, or never.
    result: Option<Outcome>,
    invoke: u64,
    /// u64::MAX without a reply.
    ret: u64,
    /// Index in the key's operations.
    origin: usize,
}

impl Op {
    /// Whether its recorded result says it changed nothing.
    fn is_read(&self) -> bool {
        matches!(
            (self.kind, self.result),
            (Kind::Get, _)
                | (Kind::Cas(..), Some(Outcome::Swapped(false)))
                | (Kind::Del, Some(Outcome::Deleted(false)))
        )
    }
}

/// The sequential register: [`crate::app::kv::KvStore::apply`] on one key.
fn step(value: Value, kind: Kind) -> (Value, Outcome) {
    match kind {
        Kind::Get => (value, Outcome::Value(value)),
        Kind::Put(v) => (Some(v), Outcome::Stored),
        Kind::Del => (None, Outcome::Deleted(value.is_some())),
        Kind::Cas(expected, v) if value == Some(expected) => (Some(v), Outcome::Swapped(true)),
        Kind::Cas(..) => (value, Outcome::Swapped(false)),
    }
}

/// Bits over the operations of a search (carried pending ones first).
type Bits = Vec<u64>;

fn bit(bits: &Bits, i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set_bit(bits: &mut Bits, i: usize) {
    if bits.len() <= i / 64 {
        bits.resize(i / 64 + 1, 0);
    }
    bits[i / 64] |= 1 << (i % 64);
}

fn clear_bit(bits: &mut Bits, i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

/// The words of `bits` up to its last nonzero one.
fn trim(bits: &[u64]) -> &[u64] {
    let len = bits.iter().rposition(|w| *w != 0).map_or(0, |i| i + 1);
    &bits[..len]
}

fn trimmed(mut bits: Bits) -> Bits {
    while bits.last() == Some(&0) {
        bits.pop();
    }
    bits
}

/// A state between segments: the value, and which carried operations
/// (without a reply) already took effect.
type Frontier = FxHashSet<(Value, Bits)>;

/// Whether every bit of `a` is in `b`.
fn subset(a: &Bits, b: &Bits) -> bool {
    a.iter().enumerate().all(|(i, w)| w & !b.get(i).copied().unwrap_or(0) == 0)
}

/// Keeps, per value, only the states that do not dominate-lose: a state
/// whose carried operations that took effect include another's (same
/// value) can do nothing the other cannot, since an operation without a
/// reply may also never take effect.
fn minimal(frontier: Frontier) -> Frontier {
    let mut states: Vec<(Value, Bits)> = frontier.into_iter().collect();
    states.sort_by_key(|(value, bits)| (*value, bits.iter().map(|w| w.count_ones()).sum::<u32>()));
    let mut kept: Vec<(Value, Bits)> = Vec::new();
    for (value, bits) in states {
        if !kept.iter().any(|(v, k)| *v == value && subset(k, &bits)) {
            kept.push((value, bits));
        }
    }
    kept.into_iter().collect()
}

/// Why a segment could not be completed.
#[derive(Debug, PartialEq, Eq)]
enum SegmentError {
    NotLinearizable,
    SearchLimit,
}

/// The search over one segment: `carried` (pending operations of earlier
/// segments) and `ops` (the segment's own, by invocation).
struct Search<'a> {
    carried: &'a [Op],
    ops: &'a [Op],
    /// (value, segment ops linearized) as one word string -> the sets of
    /// carried operations that had taken effect when it was explored (an
    /// antichain).
    seen: FxHashMap<Vec<u64>, Vec<Bits>>,
    /// The key of `seen` being looked up, reused.
    scratch: Vec<u64>,
    states: usize,
    /// (value, carried taken effect, segment ops linearized).
    ends: FxHashSet<(Value, Bits, Bits)>,
    completed_left: usize,
    /// States allowed before SearchLimit.
    limit: usize,
    /// Stop at the first way through (a partial list of ends).
    first_only: bool,
}

impl Search<'_> {
    /// Explores from a state; false if it was explored before, or a state
    /// with the same value and fewer carried operations taken effect was.
    fn first_visit(&mut self, carried_bits: &Bits, seg_bits: &Bits, value: Value) -> bool {
        self.scratch.clear();
        self.scratch.push(value.map_or(u64::MAX, u64::from));
        self.scratch.extend_from_slice(trim(seg_bits));
        let carried_now = trim(carried_bits);
        match self.seen.get_mut(&self.scratch[..]) {
            Some(sets) => {
                if sets.iter().any(|seen| subset(seen, carried_bits)) {
                    return false;
                }
                sets.retain(|seen| !subset(carried_bits, seen));
                sets.push(carried_now.to_vec());
            }
            None => {
                self.seen.insert(self.scratch.clone(), vec![carried_now.to_vec()]);
            }
        }
        self.states += 1;
        true
    }

    /// `after_carried`: the last operation linearized was a carried one.
    fn dfs(
        &mut self,
        carried_bits: &mut Bits,
        seg_bits: &mut Bits,
        value: Value,
        after_carried: bool,
    ) -> Result<(), SegmentError> {
        if self.completed_left == 0 {
            // The rest of the segment is pending operations: leave them to
            // the next segment, which may still linearize them.
            self.ends.insert((value, trimmed(carried_bits.clone()), trimmed(seg_bits.clone())));
            return Ok(());
        }
        if self.first_only && !self.ends.is_empty() {
            return Ok(());
        }
        if !self.first_visit(carried_bits, seg_bits, value) {
            return Ok(());
        }
        if self.states > self.limit {
            return Err(SegmentError::SearchLimit);
        }
        // The next operation must be invoked before every unlinearized
        // completed operation returned (else that one precedes it).
        // Operations before the first unlinearized one are all done; past
        // the horizon found so far none can lower it (ret > invoke).
        let first = seg_bits
            .iter()
            .position(|w| *w != u64::MAX)
            .map_or(seg_bits.len() * 64, |i| i * 64 + seg_bits[i].trailing_ones() as usize);
        let mut horizon = u64::MAX;
        for j in first..self.ops.len() {
            if self.ops[j].invoke > horizon {
                break;
            }
            if !bit(seg_bits, j) {
                horizon = horizon.min(self.ops[j].ret);
            }
        }
        // The segment's operations first, the carried ones after: the
        // first visit of a state then tends to have the fewest carried
        // operations taken effect, which prunes the rest.
        // A completed operation that may go next, returns what it
        // recorded and leaves the value as it is (a read, a failed cas, a
        // del of an absent key) goes next in some linearization if any
        // exists: moved to the front of one, it changes no other result and
        // breaks no real-time order (it was invoked before every pending
        // completed operation returned). So it is the only choice here.
        for i in first..self.ops.len() {
            let op = self.ops[i];
            if op.invoke > horizon {
                break;
            }
            if bit(seg_bits, i) || op.result.is_none() {
                continue;
            }
            let (after, outcome) = step(value, op.kind);
            if after == value && op.result == Some(outcome) {
                set_bit(seg_bits, i);
                self.completed_left -= 1;
                let found = self.dfs(carried_bits, seg_bits, value, false);
                clear_bit(seg_bits, i);
                self.completed_left += 1;
                return found;
            }
        }
        for i in first..self.ops.len() {
            let op = self.ops[i];
            if op.invoke > horizon {
                break; // Sorted by invocation.
            }
            if bit(seg_bits, i) {
                continue;
            }
            let (after, outcome) = step(value, op.kind);
            if op.result.is_some_and(|r| r != outcome) {
                continue;
            }
            set_bit(seg_bits, i);
            let completed = op.result.is_some();
            if completed {
                self.completed_left -= 1;
            }
            let found = self.dfs(carried_bits, seg_bits, after, false);
            clear_bit(seg_bits, i);
            if completed {
                self.completed_left += 1;
            }
            found?;
        }
        for i in 0..self.carried.len() {
            if bit(carried_bits, i) {
                continue;
            }
            let kind = self.carried[i].kind;
            // A put or del sets the value whatever it was: right after
            // another carried operation it reaches what it reaches alone,
            // with one more operation spent (a dominated state).
            if after_carried && matches!(kind, Kind::Put(_) | Kind::Del) {
                continue;
            }
            let (after, _) = step(value, kind);
            set_bit(carried_bits, i);
            let found = self.dfs(carried_bits, seg_bits, after, true);
            clear_bit(carried_bits, i);
            found?;
        }
        Ok(())
    }
}

/// Ends of a segment: all of them within `limit` states, else (`first_only`)
/// at least one from every start state that has one.
fn search_segment(
    carried: &[Op],
    start: &Frontier,
    ops: &[Op],
    limit: usize,
    first_only: bool,
) -> Result<FxHashSet<(Value, Bits, Bits)>, SegmentError> {
    // Most segments are one completed operation from one state.
    if let ([op], true, Some((value, consumed))) = (ops, carried.is_empty(), start.iter().next()) {
        if start.len() == 1 && op.result.is_some() {
            let (after, outcome) = step(*value, op.kind);
            if op.result != Some(outcome) {
                return Err(SegmentError::NotLinearizable);
            }
            return Ok(FxHashSet::from_iter([(after, consumed.clone(), vec![1])]));
        }
    }
    let mut search = Search {
        carried,
        ops,
        seen: FxHashMap::default(),
        scratch: Vec::new(),
        states: 0,
        ends: FxHashSet::default(),
        completed_left: ops.iter().filter(|o| o.result.is_some()).count(),
        limit,
        first_only,
    };
    let mut ends = FxHashSet::default();
    for (value, consumed) in start {
        let mut carried_bits = consumed.clone();
        search.dfs(&mut carried_bits, &mut Bits::new(), *value, false)?;
        if first_only {
            ends.extend(search.ends.drain());
            search.seen.clear();
        }
    }
    if first_only {
        search.ends = ends;
    }
    if search.ends.is_empty() {
        return Err(SegmentError::NotLinearizable);
    }
    Ok(search.ends)
}

/// The key's operations in search form, by invocation; values interned.
fn prepare<'a>(key_ops: &[&'a Operation]) -> (Vec<Op>, Vec<Vec<u8>>) {
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut ids: FxHashMap<&'a [u8], u32> = FxHashMap::default();
    let mut intern = |bytes: &'a [u8]| -> u32 {
        *ids.entry(bytes).or_insert_with(|| {
            values.push(bytes.to_vec());
            (values.len() - 1) as u32
        })
    };
    let mut ops = Vec::with_capacity(key_ops.len());
    for (origin, &o) in key_ops.iter().enumerate() {
        if o.result == Some(KvResult::BadOp) {
            continue; // Rejected by the replicas: no effect.
        }
        let kind = match &o.op {
            KvOp::Get { .. } => Kind::Get,
            KvOp::Del { .. } => Kind::Del,
            KvOp::Put { value, .. } => Kind::Put(intern(value)),
            KvOp::Cas { expected, value, .. } => Kind::Cas(intern(expected), intern(value)),
        };
        if kind == Kind::Get && o.result.is_none() {
            continue; // A read without a reply constrains nothing.
        }
        let result = o.result.as_ref().map(|r| match r {
            KvResult::Value(v) => Outcome::Value(v.as_deref().map(&mut intern)),
            KvResult::Stored => Outcome::Stored,
            KvResult::Deleted(existed) => Outcome::Deleted(*existed),
            KvResult::Swapped(swapped) => Outcome::Swapped(*swapped),
            KvResult::BadOp => unreachable!("skipped above"),
        });
        let ret = match (o.result.is_some(), o.ret) {
            (true, Some(ret)) => ret,
            _ => u64::MAX,
        };
        ops.push(Op { kind, result, invoke: o.invoke, ret, origin });
    }
    ops.sort_by_key(|o| (o.invoke, o.origin));
    (ops, values)
}

/// Where segments start: before each op that every completed op before it
/// precedes in real time.
fn segment_starts(ops: &[Op]) -> Vec<usize> {
    let mut starts = vec![0];
    let mut last_return: Option<u64> = None;
    for (i, op) in ops.iter().enumerate() {
        if i > 0 && last_return.is_some_and(|r| r < op.invoke) {
            starts.push(i);
            last_return = None;
        }
        if op.result.is_some() {
            last_return = Some(last_return.map_or(op.ret, |r| r.max(op.ret)));
        }
    }
    starts
}

/// Drops carried operations that took effect in every state.
fn compact(carried: &mut Vec<Op>, frontier: Frontier) -> Frontier {
    let everywhere: Vec<bool> =
        (0..carried.len()).map(|i| frontier.iter().all(|(_, bits)| bit(bits, i))).collect();
    if !everywhere.contains(&true) {
        return frontier;
    }
    let kept: Vec<usize> = (0..carried.len()).filter(|i| !everywhere[*i]).collect();
    *carried = kept.iter().map(|i| carried[*i]).collect();
    frontier
        .into_iter()
        .map(|(value, bits)| {
            let mut new_bits = Bits::new();
            for (to, from) in kept.iter().enumerate() {
                if bit(&bits, *from) {
                    set_bit(&mut new_bits, to);
                }
            }
            (value, trimmed(new_bits))
        })
        .collect()
}

/// Ok if the key's operations are linearizable.
fn check_key(key: &[u8], key_ops: &[&Operation]) -> Result<(), Violation> {
    let (ops, values) = prepare(key_ops);
    let starts = segment_starts(&ops);
    let mut carried: Vec<Op> = Vec::new();
    let mut frontier: Frontier = FxHashSet::from_iter([(None, Bits::new())]);
    // Some frontier was cut short (see SEGMENT_STATES_EXACT_MAX).
    let mut approximate = false;
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(ops.len());
        let segment = &ops[start..end];
        let mut ends = search_segment(&carried, &frontier, segment, SEGMENT_STATES_EXACT_MAX, false);
        if ends == Err(SegmentError::SearchLimit) {
            approximate = true;
            ends = search_segment(&carried, &frontier, segment, SEARCH_STATES_MAX, true);
        }
        if approximate && ends == Err(SegmentError::NotLinearizable) {
            ends = Err(SegmentError::SearchLimit);
        }
        match ends {
            Ok(ends) => {
                // Pending operations of this segment not yet linearized
                // are carried: they get bit numbers after the old ones.
                let base = carried.len();
                let pending: Vec<Op> = segment.iter().filter(|o| o.result.is_none()).copied().collect();
                let positions: Vec<usize> =
                    (0..segment.len()).filter(|j| segment[*j].result.is_none()).collect();
                carried.extend(pending);
                frontier = ends
                    .into_iter()
                    .map(|(value, carried_bits, seg_bits)| {
                        let mut new_bits = carried_bits;
                        for (k, j) in positions.iter().enumerate() {
                            if bit(&seg_bits, *j) {
                                set_bit(&mut new_bits, base + k);
                            }
                        }
                        (value, trimmed(new_bits))
                    })
                    .collect();
                frontier = minimal(frontier);
                frontier = compact(&mut carried, frontier);
            }
            Err(error) => {
                let search_limit = error == SegmentError::SearchLimit;
                return Err(report(key, key_ops, &values, &carried, &frontier, segment, search_limit));
            }
        }
    }
    Ok(())
}

/// Whether `window` fails from `frontier` on its own.
fn fails(carried: &[Op], frontier: &Frontier, window: &[Op]) -> bool {
    search_segment(carried, frontier, window, SEGMENT_STATES_EXACT_MAX, false)
        == Err(SegmentError::NotLinearizable)
}

/// The window of prefix `k` of a failing segment: its first `k` operations
/// held to their results, plus the later writes invoked before they all
/// returned, as operations without a result (a relaxation: if the segment
/// were linearizable, this window would be too). Returns the window and
/// which of its operations are relaxed.
fn prefix_window(segment: &[Op], k: usize) -> Vec<(Op, bool)> {
    let last_return = segment[..k].iter().filter(|o| o.result.is_some()).map(|o| o.ret).max().unwrap_or(0);
    let mut window: Vec<(Op, bool)> = segment[..k].iter().map(|o| (*o, false)).collect();
    for op in &segment[k..] {
        if op.invoke <= last_return && !op.is_read() {
            window.push((Op { result: None, ret: u64::MAX, ..*op }, op.result.is_some()));
        }
    }
    window
}

fn ops_of(window: &[(Op, bool)]) -> Vec<Op> {
    let mut ops: Vec<Op> = window.iter().map(|(o, _)| *o).collect();
    ops.sort_by_key(|o| (o.invoke, o.origin));
    ops
}

/// Shortens a failing segment to a small window that still fails.
/// A value no operation of the window mentions: stands for all of them.
const OTHER_VALUE: u32 = u32::MAX;

/// Window `segment[a..k]` of prefix window `prefix` (of `k`), started
/// mid-segment: the earlier writes still running at its first invocation
/// join it as operations without a result, and the register may hold any
/// value before it (those the window mentions, absent, or another).
fn suffix_window(segment: &[Op], prefix: &[(Op, bool)], a: usize) -> (Vec<(Op, bool)>, Frontier) {
    let first = segment[a].invoke;
    let mut window: Vec<(Op, bool)> = prefix.iter().filter(|(o, _)| o.invoke >= first).copied().collect();
    for op in &segment[..a] {
        if op.ret >= first && !op.is_read() {
            window.push((Op { result: None, ret: u64::MAX, ..*op }, op.result.is_some()));
        }
    }
    let mut values: HashSet<Value> = HashSet::from([None, Some(OTHER_VALUE)]);
    for (op, _) in &window {
        match op.kind {
            Kind::Put(v) => {
                values.insert(Some(v));
            }
            Kind::Cas(e, v) => {
                values.extend([Some(e), Some(v)]);
            }
            Kind::Get | Kind::Del => {}
        }
        if let Some(Outcome::Value(v)) = op.result {
            values.insert(v);
        }
    }
    (window, values.into_iter().map(|v| (v, Bits::new())).collect())
}

/// A failing window: (operations, whether each is relaxed), the states
/// before it, and whether those are "any value".
type Window = (Vec<(Op, bool)>, Frontier, bool);

fn shrink(carried: &[Op], frontier: &Frontier, segment: &[Op]) -> Window {
    let fails_at = |k: usize| fails(carried, frontier, &ops_of(&prefix_window(segment, k)));
    // The shortest failing prefix, looked for one by one up to a bound,
    // then by doubling and bisection (a failing prefix is a real failure
    // either way; bisection may not find the very shortest).
    let linear_max = segment.len().min(2 * WINDOW_MAX);
    let mut k = (1..=linear_max).find(|k| fails_at(*k));
    if k.is_none() && segment.len() > linear_max {
        let mut high = linear_max * 2;
        while high < segment.len() && !fails_at(high) {
            high *= 2;
        }
        let mut high = high.min(segment.len());
        let mut low = high / 2;
        while low + 1 < high {
            let mid = (low + high) / 2;
            if fails_at(mid) {
                high = mid;
            } else {
                low = mid;
            }
        }
        k = Some(high);
    }
    let k = k.unwrap_or(segment.len());
    let mut window = prefix_window(segment, k);
    let mut before = frontier.clone();
    let mut any_before = false;
    // The latest start that still fails, from any value (without carried
    // operations: a window from mid-segment sees them as earlier writes).
    if carried.is_empty() {
        for a in (k.saturating_sub(2 * WINDOW_MAX).max(1)..k).rev() {
            let (candidate, start) = suffix_window(segment, &window, a);
            if fails(carried, &start, &ops_of(&candidate)) {
                (window, before, any_before) = (candidate, start, true);
                break;
            }
        }
    }
    let frontier = &before;
    // Drop reads that the failure does not need (removing a read can only
    // make a history easier to linearize, so the rest still proves it).
    let mut i = 0;
    while i < window.len() {
        if window[i].0.is_read() && window.len() > 1 {
            let mut without = window.clone();
            without.remove(i);
            if fails(carried, frontier, &ops_of(&without)) {
                window = without;
                continue;
            }
        }
        i += 1;
    }
    window.sort_by_key(|(o, _)| (o.invoke, o.origin));
    (window, before, any_before)
}

fn report(
    key: &[u8],
    key_ops: &[&Operation],
    values: &[Vec<u8>],
    carried: &[Op],
    frontier: &Frontier,
    segment: &[Op],
    search_limit: bool,
) -> Violation {
    let (window, before, any_value_before) = if search_limit {
        (segment.iter().map(|o| (*o, false)).collect(), frontier.clone(), false)
    } else {
        shrink(carried, frontier, segment)
    };
    // Carried operations without a reply belong to the window too: they
    // may take effect inside it.
    let mut listed: Vec<WindowOp> =
        carried.iter().map(|o| WindowOp { op: key_ops[o.origin].clone(), result_ignored: false }).collect();
    listed.extend(
        window
            .iter()
            .map(|(o, relaxed)| WindowOp { op: key_ops[o.origin].clone(), result_ignored: *relaxed }),
    );
    let window_len = listed.len();
    listed.truncate(WINDOW_MAX);
    let mut before: Vec<Value> = if any_value_before {
        Vec::new()
    } else {
        before.iter().map(|(v, _)| *v).collect::<HashSet<_>>().into_iter().collect()
    };
    before.sort();
    let values_before_len = before.len();
    Violation {
        key: key.to_vec(),
        key_ops: key_ops.len(),
        window: listed,
        window_len,
        values_before: before
            .into_iter()
            .take(VALUES_BEFORE_MAX)
            .map(|v| v.map(|id| values[id as usize].clone()))
            .collect(),
        values_before_len,
        any_value_before,
        search_limit,
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

#[cfg(test)]
mod search_tests {
    use super::*;
    use crate::app::kv::KvStore;
    use crate::history::generate_valid;
    use crate::transport::os::SplitMix;

    /// Reference: every order of the operations that respects real time,
    /// each operation without a reply taken or left out, no memo.
    fn brute_force(ops: &[Operation]) -> bool {
        let ops: Vec<&Operation> = ops.iter().filter(|o| o.result != Some(KvResult::BadOp)).collect();
        fn go(ops: &[&Operation], done: &mut Vec<bool>, store: &KvStore) -> bool {
            let left: Vec<usize> = (0..ops.len()).filter(|i| !done[*i] && ops[*i].result.is_some()).collect();
            if left.is_empty() {
                return true;
            }
            let horizon = left.iter().map(|i| ops[*i].ret.unwrap()).min().unwrap();
            for i in 0..ops.len() {
                if done[i] || ops[i].invoke > horizon {
                    continue;
                }
                let mut next = store.clone();
                let result = next.apply(&ops[i].op);
                if ops[i].result.as_ref().is_some_and(|r| *r != result) {
                    continue;
                }
                done[i] = true;
                let ok = go(ops, done, &next);
                done[i] = false;
                if ok {
                    return true;
                }
            }
            false
        }
        go(&ops, &mut vec![false; ops.len()], &KvStore::default())
    }

    /// Breaks one result of a history at random.
    fn corrupt(ops: &mut [Operation], rng: &mut SplitMix) {
        let completed: Vec<usize> = (0..ops.len()).filter(|i| ops[*i].result.is_some()).collect();
        if completed.is_empty() {
            return;
        }
        let i = completed[rng.below(completed.len() as u64) as usize];
        let values: Vec<Vec<u8>> = ops
            .iter()
            .filter_map(|o| match &o.op {
                KvOp::Put { value, .. } | KvOp::Cas { value, .. } => Some(value.clone()),
                _ => None,
            })
            .collect();
        let result = ops[i].result.clone().unwrap();
        ops[i].result = Some(match result {
            KvResult::Value(_) if !values.is_empty() && rng.below(3) > 0 => {
                KvResult::Value(Some(values[rng.below(values.len() as u64) as usize].clone()))
            }
            KvResult::Value(Some(_)) => KvResult::Value(None),
            KvResult::Value(None) => KvResult::Value(Some(b"never".to_vec())),
            KvResult::Deleted(existed) => KvResult::Deleted(!existed),
            KvResult::Swapped(swapped) => KvResult::Swapped(!swapped),
            KvResult::Stored => KvResult::Stored,
            KvResult::BadOp => KvResult::BadOp,
        });
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let (mut valid, mut invalid) = (0, 0);
        for seed in 0..3000u64 {
            let mut rng = SplitMix(seed);
            let n = 1 + rng.below(7) as usize;
            let mut ops = generate_valid(seed, n, 1 + rng.below(4), 1 + rng.below(2));
            // Pending operations more often than the generator makes them.
            for o in ops.iter_mut() {
                if rng.below(6) == 0 {
                    o.result = None;
                    o.ret = None;
                }
            }
            if seed % 2 == 1 {
                corrupt(&mut ops, &mut rng);
            }
            let expected = brute_force(&ops);
            let got = check_with_threads(&ops, 1);
            assert_eq!(
                got.is_ok(),
                expected,
                "seed {seed}: checker {got:?}, brute force {expected}\n{ops:#?}"
            );
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        assert!(valid > 1000 && invalid > 300, "{valid} valid, {invalid} invalid");
    }

    #[test]
    fn accepts_generated_histories_hot_keys_and_many_clients() {
        for (seed, ops, clients, keys) in [
            (1, 10_000, 8, 100),
            (2, 1_500, 8, 1),
            (3, 5_000, 16, 4),
            (4, 20_000, 4, 1000),
            (5, 1_000, 16, 1),
        ] {
            let history = generate_valid(seed, ops, clients, keys);
            check(&history).unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        }
    }

    #[test]
    fn finds_a_stale_read_in_a_large_history_and_reports_a_small_window() {
        let mut history = generate_valid(7, 100_000, 8, 20);
        // A get late in the history returns the key's first written value.
        let at = history.len() - 500;
        let index = (at..history.len())
            .find(|i| matches!(history[*i].op, KvOp::Get { .. }) && history[*i].result.is_some())
            .unwrap();
        let key = history[index].op.key().to_vec();
        let first = history
            .iter()
            .find_map(|o| match &o.op {
                KvOp::Put { key: k, value } if *k == key && o.result.is_some() => Some(value.clone()),
                _ => None,
            })
            .unwrap();
        history[index].result = Some(KvResult::Value(Some(first.clone())));
        let violation = check(&history).unwrap_err();
        assert!(!violation.search_limit);
        assert_eq!(violation.key, key);
        assert!(violation.window_len <= 10, "window of {}: {violation}", violation.window_len);
        assert!(violation.window.iter().any(|w| w.op == history[index]), "{violation}");
        let text = violation.to_string();
        assert!(
            text.starts_with(&format!("not linearizable on key {:?}", String::from_utf8_lossy(&key))),
            "{text}"
        );
        assert!(text.contains(&format!("get -> {:?}", String::from_utf8_lossy(&first))), "{text}");
        let json = violation.to_json();
        assert_eq!(json["linearizable"], false);
        assert_eq!(json["key"], String::from_utf8_lossy(&key).as_ref());
        assert_eq!(json["window"].as_array().unwrap().len(), violation.window.len());
        let stale =
            json["window"].as_array().unwrap().iter().find(|w| w["seq"] == history[index].request_number);
        assert_eq!(stale.unwrap()["result"], String::from_utf8_lossy(&first).as_ref(), "{json}");
    }

    #[test]
    fn finds_a_lost_write_in_a_long_chain_and_reports_its_window() {
        // 300 puts of one key, each overlapping its neighbours: one long
        // segment. A read in the middle sees a value overwritten long ago.
        let put = |i: u64| Operation {
            client_id: i % 3,
            request_number: i,
            op: KvOp::Put { key: vec![0xff, 0x00], value: vec![0x01, i as u8] },
            result: Some(KvResult::Stored),
            invoke: 10 * i,
            ret: Some(10 * i + 15),
        };
        let mut ops: Vec<Operation> = (0..300).map(put).collect();
        ops.push(Operation {
            client_id: 9,
            request_number: 1,
            op: KvOp::Get { key: vec![0xff, 0x00] },
            result: Some(KvResult::Value(Some(vec![0x01, 3]))),
            invoke: 1501,
            ret: Some(1502),
        });
        let violation = check(&ops).unwrap_err();
        assert!(!violation.search_limit, "{violation}");
        assert!(violation.window.len() <= WINDOW_MAX && violation.window_len <= 8, "{violation}");
        let text = violation.to_string();
        assert!(text.contains("on key \"0xff00\""), "keys and values in hex when not printable: {text}");
        assert!(text.contains("get -> \"0x0103\""), "{text}");
        assert!(text.lines().count() <= WINDOW_MAX + 2, "{text}");
        // 12 puts all concurrent (every order possible), then a read that
        // sees none of them: a lost write.
        let mut ops: Vec<Operation> =
            (0..12).map(|i| Operation { invoke: i, ret: Some(100 + i), ..put(i) }).collect();
        ops.push(Operation {
            client_id: 9,
            request_number: 1,
            op: KvOp::Get { key: vec![0xff, 0x00] },
            result: Some(KvResult::Value(None)),
            invoke: 500,
            ret: Some(501),
        });
        let violation = check(&ops).unwrap_err();
        assert!(!violation.search_limit, "{violation}");
        assert!(violation.to_string().contains("get -> absent"), "{violation}");
    }

    #[test]
    fn rejected_operations_had_no_effect() {
        let ops = vec![
            Operation {
                client_id: 1,
                request_number: 1,
                op: KvOp::Put { key: b"k".to_vec(), value: b"v".to_vec() },
                result: Some(KvResult::BadOp),
                invoke: 0,
                ret: Some(1),
            },
            Operation {
                client_id: 2,
                request_number: 1,
                op: KvOp::Get { key: b"k".to_vec() },
                result: Some(KvResult::Value(None)),
                invoke: 2,
                ret: Some(3),
            },
        ];
        check(&ops).unwrap();
    }

    #[test]
    fn readable_bytes() {
        assert_eq!(readable(b"key-1"), "key-1");
        assert_eq!(readable(&[0, 1, 0xfe]), "0x0001fe");
        assert_eq!(readable("é".as_bytes()), "é");
        assert_eq!(readable(b"a\nb"), "0x610a62");
    }
}
