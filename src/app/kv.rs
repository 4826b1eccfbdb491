//! A key-value store over byte strings: get, put, delete, compare-and-swap.
//!
//! Operations and results have a small binary encoding shared by clients
//! and replicas ([`KvOp::encode`], [`KvResult::decode`]). Decoding is total:
//! malformed input becomes an error value, never a panic.

use std::ops::Bound;
use std::sync::Arc;

use imbl::OrdMap;

use super::{App, RestoreError, SnapshotSource};

/// Largest key, in bytes (a key and a value must fit one request).
pub const KEY_LEN_MAX: usize = 256;

const TAG_GET: u8 = 1;
const TAG_PUT: u8 = 2;
const TAG_DEL: u8 = 3;
const TAG_CAS: u8 = 4;

/// One KV operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    Get {
        key: Vec<u8>,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Del {
        key: Vec<u8>,
    },
    /// Sets `value` if the key currently holds `expected`.
    Cas {
        key: Vec<u8>,
        expected: Vec<u8>,
        value: Vec<u8>,
    },
}

/// The outcome of a KV operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// Get: the value, or None if absent.
    Value(Option<Vec<u8>>),
    /// Put done.
    Stored,
    /// Del: whether the key existed.
    Deleted(bool),
    /// Cas: whether it swapped.
    Swapped(bool),
    /// The operation could not be decoded.
    BadOp,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    if input.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([input[0], input[1]]) as usize;
    let rest = &input[2..];
    if rest.len() < len {
        return None;
    }
    let (bytes, tail) = rest.split_at(len);
    *input = tail;
    Some(bytes)
}

impl KvOp {
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Del { key } | KvOp::Cas { key, .. } => key,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            KvOp::Get { .. } => "get",
            KvOp::Put { .. } => "put",
            KvOp::Del { .. } => "del",
            KvOp::Cas { .. } => "cas",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.key().len());
        match self {
            KvOp::Get { key } => {
                out.push(TAG_GET);
                put_bytes(&mut out, key);
            }
            KvOp::Put { key, value } => {
                out.push(TAG_PUT);
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            KvOp::Del { key } => {
                out.push(TAG_DEL);
                put_bytes(&mut out, key);
            }
            KvOp::Cas { key, expected, value } => {
                out.push(TAG_CAS);
                put_bytes(&mut out, key);
                put_bytes(&mut out, expected);
                put_bytes(&mut out, value);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<KvOp> {
        let (&tag, mut rest) = bytes.split_first()?;
        let key = take_bytes(&mut rest)?.to_vec();
        if key.len() > KEY_LEN_MAX {
            return None;
        }
        let op = match tag {
            TAG_GET => KvOp::Get { key },
            TAG_PUT => KvOp::Put { key, value: take_bytes(&mut rest)?.to_vec() },
            TAG_DEL => KvOp::Del { key },
            TAG_CAS => {
                let expected = take_bytes(&mut rest)?.to_vec();
                KvOp::Cas { key, expected, value: take_bytes(&mut rest)?.to_vec() }
            }
            _ => return None,
        };
        rest.is_empty().then_some(op)
    }
}

const RESULT_VALUE_NONE: u8 = 1;
const RESULT_VALUE_SOME: u8 = 2;
const RESULT_STORED: u8 = 3;
const RESULT_DELETED: u8 = 4;
const RESULT_NOT_FOUND: u8 = 5;
const RESULT_SWAPPED: u8 = 6;
const RESULT_NOT_SWAPPED: u8 = 7;
const RESULT_BAD_OP: u8 = 8;

impl KvResult {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            KvResult::Value(None) => vec![RESULT_VALUE_NONE],
            KvResult::Value(Some(v)) => {
                let mut out = vec![RESULT_VALUE_SOME];
                out.extend_from_slice(v);
                out
            }
            KvResult::Stored => vec![RESULT_STORED],
            KvResult::Deleted(true) => vec![RESULT_DELETED],
            KvResult::Deleted(false) => vec![RESULT_NOT_FOUND],
            KvResult::Swapped(true) => vec![RESULT_SWAPPED],
            KvResult::Swapped(false) => vec![RESULT_NOT_SWAPPED],
            KvResult::BadOp => vec![RESULT_BAD_OP],
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<KvResult> {
        let (&tag, rest) = bytes.split_first()?;
        let result = match tag {
            RESULT_VALUE_SOME => return Some(KvResult::Value(Some(rest.to_vec()))),
            RESULT_VALUE_NONE => KvResult::Value(None),
            RESULT_STORED => KvResult::Stored,
            RESULT_DELETED => KvResult::Deleted(true),
            RESULT_NOT_FOUND => KvResult::Deleted(false),
            RESULT_SWAPPED => KvResult::Swapped(true),
            RESULT_NOT_SWAPPED => KvResult::Swapped(false),
            RESULT_BAD_OP => KvResult::BadOp,
            _ => return None,
        };
        rest.is_empty().then_some(result)
    }
}

/// Keys and values are shared, not copied, between the live map and a
/// frozen one: copying a tree node on the first write after a freeze then
/// costs reference counts, not the bytes of its entries.
type Bytes = Arc<[u8]>;

/// The store. An ordered map keeps snapshots independent of insertion
/// order; a persistent one (clone in O(1)) lets [`App::freeze`] hand the
/// state at one op to a snapshot stream while writes go on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: OrdMap<Bytes, Bytes>,
    /// Sum (wrapping) of entry_hash over the entries: independent of order
    /// and kept up to date by every write, so a digest costs nothing at any
    /// state size (status queries ask for it).
    digest: u64,
    /// Bytes of the entries in a snapshot (8 + key + value each), kept up
    /// to date by every write: a snapshot reserves its buffer without a
    /// sizing pass over the whole map.
    encoded_len: usize,
}

/// xxh3 of one entry (key length, key, value).
fn entry_hash(key: &[u8], value: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(key.len() as u32).to_be_bytes());
    hasher.update(key);
    hasher.update(value);
    hasher.digest()
}

impl KvStore {
    /// Applies a decoded op (also the sequential model of the checker).
    pub fn apply(&mut self, op: &KvOp) -> KvResult {
        match op {
            KvOp::Get { key } => KvResult::Value(self.map.get(key.as_slice()).map(|v| v.to_vec())),
            KvOp::Put { key, value } => {
                self.set(key, value);
                KvResult::Stored
            }
            KvOp::Del { key } => match self.map.remove(key.as_slice()) {
                Some(old) => {
                    self.encoded_len -= 8 + key.len() + old.len();
                    self.digest = self.digest.wrapping_sub(entry_hash(key, &old));
                    KvResult::Deleted(true)
                }
                None => KvResult::Deleted(false),
            },
            KvOp::Cas { key, expected, value } => {
                if self.map.get(key.as_slice()).is_some_and(|v| **v == **expected) {
                    self.set(key, value);
                    KvResult::Swapped(true)
                } else {
                    KvResult::Swapped(false)
                }
            }
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        if let Some(old) = self.map.insert(Bytes::from(key), Bytes::from(value)) {
            self.encoded_len -= 8 + key.len() + old.len();
            self.digest = self.digest.wrapping_sub(entry_hash(key, &old));
        }
        self.encoded_len += 8 + key.len() + value.len();
        self.digest = self.digest.wrapping_add(entry_hash(key, value));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl App for KvStore {
    fn execute(&mut self, op: &[u8]) -> Vec<u8> {
        match KvOp::decode(op) {
            Some(op) => self.apply(&op).encode(),
            None => KvResult::BadOp.encode(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.snapshot_into(&mut out);
        out
    }

    fn snapshot_into(&self, out: &mut Vec<u8>) {
        out.reserve(8 + self.encoded_len);
        out.extend_from_slice(&(self.map.len() as u64).to_be_bytes());
        for (k, v) in &self.map {
            encode_entry(out, k, v);
        }
    }

    fn freeze(&self) -> Box<dyn SnapshotSource> {
        Box::new(FrozenKv {
            map: self.map.clone(),
            len: 8 + self.encoded_len as u64,
            header_sent: false,
            last_key: None,
        })
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], RestoreError> {
            if input.len() < len {
                return Err(RestoreError("kv snapshot truncated"));
            }
            let (head, tail) = input.split_at(len);
            *input = tail;
            Ok(head)
        }
        fn take_u32(input: &mut &[u8]) -> Result<usize, RestoreError> {
            let b = take(input, 4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        let mut input = snapshot;
        let count_bytes = take(&mut input, 8)?;
        let mut count_array = [0u8; 8];
        count_array.copy_from_slice(count_bytes);
        let count = u64::from_be_bytes(count_array);
        let mut restored = KvStore::default();
        for _ in 0..count {
            let key_len = take_u32(&mut input)?;
            let key = take(&mut input, key_len)?;
            let value_len = take_u32(&mut input)?;
            let value = take(&mut input, value_len)?;
            restored.set(key, value);
        }
        if !input.is_empty() {
            return Err(RestoreError("kv snapshot has trailing bytes"));
        }
        *self = restored;
        Ok(())
    }

    fn digest(&self) -> u64 {
        self.digest
    }
}

fn encode_entry(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// The store at one op, encoded in key order as `snapshot_into` does, a
/// few entries per call: each call resumes after the last key it wrote
/// (O(log n)), so no borrow of the map outlives a call.
struct FrozenKv {
    map: OrdMap<Bytes, Bytes>,
    len: u64,
    header_sent: bool,
    last_key: Option<Bytes>,
}

impl SnapshotSource for FrozenKv {
    fn len(&self) -> u64 {
        self.len
    }

    fn encode_next(&mut self, out: &mut Vec<u8>, want: usize) {
        let start = out.len();
        if !self.header_sent {
            out.extend_from_slice(&(self.map.len() as u64).to_be_bytes());
            self.header_sent = true;
        }
        let from = match &self.last_key {
            Some(key) => Bound::Excluded(&**key),
            None => Bound::Unbounded,
        };
        let mut last = None;
        for (key, value) in self.map.range::<_, [u8]>((from, Bound::Unbounded)) {
            if out.len() - start >= want {
                break;
            }
            encode_entry(out, key, value);
            last = Some(key.clone());
        }
        if last.is_some() {
            self.last_key = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_and_apply() {
        let ops = [
            KvOp::Put { key: b"k".to_vec(), value: b"v1".to_vec() },
            KvOp::Get { key: b"k".to_vec() },
            KvOp::Cas { key: b"k".to_vec(), expected: b"v1".to_vec(), value: b"v2".to_vec() },
            KvOp::Cas { key: b"k".to_vec(), expected: b"v1".to_vec(), value: b"v3".to_vec() },
            KvOp::Del { key: b"k".to_vec() },
            KvOp::Del { key: b"k".to_vec() },
        ];
        let expected = [
            KvResult::Stored,
            KvResult::Value(Some(b"v1".to_vec())),
            KvResult::Swapped(true),
            KvResult::Swapped(false),
            KvResult::Deleted(true),
            KvResult::Deleted(false),
        ];
        let mut store = KvStore::default();
        for (op, want) in ops.iter().zip(expected.iter()) {
            assert_eq!(KvOp::decode(&op.encode()).as_ref(), Some(op));
            let result = KvResult::decode(&store.execute(&op.encode())).unwrap();
            assert_eq!(&result, want);
        }
        assert!(store.is_empty());
    }

    #[test]
    fn snapshot_restores_equal_state_and_rejects_garbage() {
        let mut a = KvStore::default();
        for i in 0..50u32 {
            a.apply(&KvOp::Put { key: i.to_be_bytes().to_vec(), value: vec![i as u8; i as usize] });
        }
        let mut b = KvStore::default();
        b.restore(&a.snapshot()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        let snap = a.snapshot();
        for cut in 0..snap.len() {
            let mut c = KvStore::default();
            assert!(c.restore(&snap[..cut]).is_err(), "truncated at {cut} accepted");
            assert!(c.is_empty());
        }
        assert_eq!(KvStore::default().execute(&[9, 9, 9]), KvResult::BadOp.encode());
    }

    #[test]
    fn a_frozen_store_encodes_its_state_at_the_freeze_in_any_piece_sizes() {
        let mut store = KvStore::default();
        for i in 0..2_000u32 {
            store.apply(&KvOp::Put {
                key: i.to_be_bytes().to_vec(),
                value: vec![i as u8; (i % 300) as usize],
            });
        }
        let expected = store.snapshot();
        for want in [1usize, 7, 100, 4096, 1 << 20] {
            let mut frozen = store.freeze();
            assert_eq!(frozen.len(), expected.len() as u64);
            // Writes after the freeze do not reach it.
            let mut live = store.clone();
            let mut out = Vec::new();
            for round in 0..10_000u32 {
                if out.len() as u64 >= frozen.len() {
                    break;
                }
                live.apply(&KvOp::Put { key: round.to_be_bytes().to_vec(), value: b"later".to_vec() });
                live.apply(&KvOp::Del { key: (round + 1).to_be_bytes().to_vec() });
                let before = out.len();
                frozen.encode_next(&mut out, want);
                assert!(out.len() > before, "no progress with want {want}");
                if (out.len() as u64) < frozen.len() {
                    assert!(out.len() - before >= want, "short piece with want {want}");
                }
            }
            assert_eq!(out, expected, "want {want}");
            let after = out.len();
            frozen.encode_next(&mut out, 100);
            assert_eq!(out.len(), after, "bytes past the end");
        }
    }
}
