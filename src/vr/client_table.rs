//! The client table (VRR section 4.1): for each client, the number of its
//! latest executed request and that request's result, so a retransmitted
//! request is answered from the table instead of being executed twice.
//!
//! The table is replicated state: every replica updates it when it executes
//! an op, so it is part of a checkpoint. [`encode_checkpoint`] and
//! [`decode_checkpoint`] put it next to the application snapshot.

use std::collections::BTreeMap;

use xxhash_rust::xxh3::Xxh3;

use crate::app::{App, SnapshotSource};
use crate::wire::MAX_RESULT_LEN;

/// What the table remembers of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientEntry {
    pub request_number: u64,
    /// The op whose batch held the request: eviction picks the oldest.
    pub op: u64,
    pub result: Vec<u8>,
}

/// Client id -> latest executed request. A BTreeMap keeps iteration (and so
/// snapshots and eviction) identical on every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTable {
    entries: BTreeMap<u64, ClientEntry>,
}

impl ClientTable {
    pub fn get(&self, client_id: u64) -> Option<&ClientEntry> {
        self.entries.get(&client_id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records an executed request. When a new client would exceed
    /// `entries_max`, the client whose latest request is oldest is forgotten
    /// (deterministically, so all replicas forget the same one): a late
    /// retransmission from it could then execute again, the price of a
    /// bounded table.
    pub fn insert(&mut self, client_id: u64, entry: ClientEntry, entries_max: usize) {
        assert!(entries_max > 0);
        if !self.entries.contains_key(&client_id) && self.entries.len() >= entries_max {
            let oldest = self.entries.iter().min_by_key(|(id, e)| (e.op, **id)).map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.entries.remove(&id);
            }
        }
        self.entries.insert(client_id, entry);
        assert!(self.entries.len() <= entries_max);
    }
}

const CHECKPOINT_MAGIC: u32 = 0x4556_5232; // "EVR2"

/// Bytes before the application snapshot: magic, then its length.
const CHECKPOINT_HEADER_LEN: usize = 12;

/// Serializes an application snapshot and the client table into the
/// snapshot bytes of a [`crate::wire::StateBlob`]. Never empty (the magic
/// alone is 4 bytes): an empty snapshot in a blob means "no checkpoint, the
/// entries continue the asker's log".
pub fn encode_checkpoint(app_snapshot: &[u8], table: &ClientTable) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_LEN + 4 + app_snapshot.len() + table.len() * 32);
    out.extend_from_slice(&CHECKPOINT_MAGIC.to_be_bytes());
    out.extend_from_slice(&(app_snapshot.len() as u64).to_be_bytes());
    out.extend_from_slice(app_snapshot);
    encode_table(&mut out, table);
    out
}

/// A checkpoint frozen at one op and encoded only as far as it is read:
/// the same bytes as [`encode_checkpoint`] of the app's snapshot and the
/// table at the freeze. Freezing costs a copy of the client table (bounded
/// by its entry limit), not of the application state, so a replica can
/// serve a GiB state from its only thread a window at a time while it
/// goes on executing.
pub struct CheckpointStream {
    app: Box<dyn SnapshotSource>,
    /// End of the application snapshot in `bytes`.
    app_end: usize,
    /// The encoded client table, appended after the application snapshot.
    table: Vec<u8>,
    /// What has been encoded so far: a prefix of the checkpoint.
    bytes: Vec<u8>,
    total: usize,
    hasher: Xxh3,
}

impl CheckpointStream {
    /// Freezes `app` and `table`; None when memory for the whole encoding
    /// cannot be reserved (so a transfer never dies half-way for lack of it).
    pub fn new(app: &dyn App, table: &ClientTable) -> Option<CheckpointStream> {
        let app = app.freeze();
        let app_len = usize::try_from(app.len()).ok()?;
        let mut table_bytes = Vec::new();
        encode_table(&mut table_bytes, table);
        let app_end = CHECKPOINT_HEADER_LEN.checked_add(app_len)?;
        let total = app_end.checked_add(table_bytes.len())?;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(total).ok()?;
        bytes.extend_from_slice(&CHECKPOINT_MAGIC.to_be_bytes());
        bytes.extend_from_slice(&(app_len as u64).to_be_bytes());
        let mut stream =
            CheckpointStream { app, app_end, table: table_bytes, bytes, total, hasher: Xxh3::new() };
        stream.hasher.update(&stream.bytes);
        Some(stream)
    }

    /// Bytes of the whole checkpoint.
    pub fn len(&self) -> u64 {
        self.total as u64
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Encodes the checkpoint at least up to byte `until` (or its end).
    pub fn encode_until(&mut self, until: u64) {
        let until = usize::try_from(until).unwrap_or(usize::MAX).min(self.total);
        while self.bytes.len() < until {
            let before = self.bytes.len();
            if before < self.app_end {
                let want = (until - before).min(self.app_end - before);
                self.app.encode_next(&mut self.bytes, want);
                assert!(self.bytes.len() > before, "the app's snapshot ended before its stated length");
                assert!(self.bytes.len() <= self.app_end, "the app's snapshot exceeds its stated length");
            } else {
                self.bytes.extend_from_slice(&self.table);
                self.table = Vec::new();
            }
            self.hasher.update(&self.bytes[before..]);
        }
        assert!(self.bytes.len() <= self.total);
    }

    /// What is encoded so far.
    pub fn encoded(&self) -> &[u8] {
        &self.bytes
    }

    /// The digest of the whole checkpoint ([`checkpoint_digest`]), known
    /// once it is all encoded.
    pub fn digest(&self) -> Option<u64> {
        (self.bytes.len() == self.total).then(|| nonzero_digest(self.hasher.digest()))
    }
}

/// The digest a streamed checkpoint is verified by: xxh3, at memory speed
/// on GiB states, never 0 (0 on the wire means "not known yet").
pub fn checkpoint_digest(bytes: &[u8]) -> u64 {
    nonzero_digest(xxhash_rust::xxh3::xxh3_64(bytes))
}

fn nonzero_digest(digest: u64) -> u64 {
    digest.max(1)
}

fn encode_table(out: &mut Vec<u8>, table: &ClientTable) {
    out.extend_from_slice(&(table.entries.len() as u32).to_be_bytes());
    for (client_id, entry) in &table.entries {
        out.extend_from_slice(&client_id.to_be_bytes());
        out.extend_from_slice(&entry.request_number.to_be_bytes());
        out.extend_from_slice(&entry.op.to_be_bytes());
        out.extend_from_slice(&(entry.result.len() as u32).to_be_bytes());
        out.extend_from_slice(&entry.result);
    }
}

/// Why checkpoint bytes were rejected (they come from the network).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointError(pub &'static str);

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], CheckpointError> {
        if self.rest.len() < len {
            return Err(CheckpointError("checkpoint truncated"));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, CheckpointError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

/// Splits checkpoint bytes into the application snapshot and the client
/// table. Rejects malformed bytes, duplicate or unordered client ids and
/// tables larger than `entries_max` without panicking.
pub fn decode_checkpoint(bytes: &[u8], entries_max: usize) -> Result<(&[u8], ClientTable), CheckpointError> {
    let mut cursor = Cursor { rest: bytes };
    if cursor.u32()? != CHECKPOINT_MAGIC {
        return Err(CheckpointError("checkpoint magic"));
    }
    let app_len = usize::try_from(cursor.u64()?).map_err(|_| CheckpointError("app snapshot over memory"))?;
    let app = cursor.take(app_len)?;
    let count = cursor.u32()? as usize;
    if count > entries_max {
        return Err(CheckpointError("client table over its bound"));
    }
    let mut table = ClientTable::default();
    let mut previous: Option<u64> = None;
    for _ in 0..count {
        let client_id = cursor.u64()?;
        if previous.is_some_and(|p| p >= client_id) {
            return Err(CheckpointError("client ids not ascending"));
        }
        previous = Some(client_id);
        let request_number = cursor.u64()?;
        let op = cursor.u64()?;
        let result_len = cursor.u32()? as usize;
        if result_len > MAX_RESULT_LEN {
            return Err(CheckpointError("result over its limit"));
        }
        let result = cursor.take(result_len)?.to_vec();
        table.entries.insert(client_id, ClientEntry { request_number, op, result });
    }
    if !cursor.rest.is_empty() {
        return Err(CheckpointError("checkpoint has trailing bytes"));
    }
    Ok((app, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_every_truncation() {
        let mut table = ClientTable::default();
        for id in 0..5u64 {
            table.insert(
                id * 7,
                ClientEntry { request_number: id, op: 10 + id, result: vec![id as u8; 3] },
                8,
            );
        }
        let bytes = encode_checkpoint(b"app-state", &table);
        let (app, decoded) = decode_checkpoint(&bytes, 8).unwrap();
        assert_eq!(app, b"app-state");
        assert_eq!(decoded, table);
        for cut in 0..bytes.len() {
            assert!(decode_checkpoint(&bytes[..cut], 8).is_err(), "cut at {cut} accepted");
        }
        assert!(decode_checkpoint(&bytes, 4).is_err(), "over the bound accepted");
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_checkpoint(&trailing, 8).is_err());
    }

    #[test]
    fn full_table_evicts_the_client_with_the_oldest_op() {
        let mut table = ClientTable::default();
        table.insert(1, ClientEntry { request_number: 1, op: 5, result: vec![] }, 2);
        table.insert(2, ClientEntry { request_number: 1, op: 3, result: vec![] }, 2);
        table.insert(3, ClientEntry { request_number: 1, op: 9, result: vec![] }, 2);
        assert!(table.get(2).is_none());
        assert!(table.get(1).is_some() && table.get(3).is_some());
        // Updating a known client never evicts.
        table.insert(1, ClientEntry { request_number: 2, op: 10, result: vec![] }, 2);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_stream_encodes_the_checkpoint_at_its_freeze_and_knows_the_digest_only_at_the_end() {
        use crate::app::kv::{KvOp, KvStore};
        let mut store = KvStore::default();
        for i in 0..3_000u32 {
            store.apply(&KvOp::Put { key: i.to_be_bytes().to_vec(), value: vec![7; 200] });
        }
        let mut table = ClientTable::default();
        table.insert(9, ClientEntry { request_number: 4, op: 2, result: b"ok".to_vec() }, 8);
        let expected = encode_checkpoint(&store.snapshot(), &table);
        let mut stream = CheckpointStream::new(&store, &table).unwrap();
        assert_eq!(stream.len(), expected.len() as u64);
        // Writes after the freeze reach neither the app part nor the table.
        store.apply(&KvOp::Put { key: b"later".to_vec(), value: b"x".to_vec() });
        table.insert(10, ClientEntry { request_number: 1, op: 3, result: Vec::new() }, 8);
        let mut until = 0;
        while stream.digest().is_none() {
            until += 1000;
            stream.encode_until(until);
            assert!(stream.encoded().len() as u64 >= until.min(stream.len()));
            assert_eq!(stream.encoded(), &expected[..stream.encoded().len()]);
            assert!(until < 10 * expected.len() as u64, "the stream never ends");
        }
        assert_eq!(stream.encoded(), &expected[..]);
        assert_eq!(stream.digest(), Some(checkpoint_digest(&expected)));
        assert_ne!(checkpoint_digest(&expected), 0);
        stream.encode_until(u64::MAX);
        assert_eq!(stream.encoded(), &expected[..]);
    }
}
