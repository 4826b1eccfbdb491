//! The replicated application: a deterministic state machine.
//!
//! The VR core executes committed operations through [`App`], in op order,
//! on every replica; snapshots let the log be trimmed and let a lagging or
//! recovering replica catch up.

pub mod kv;

use std::fmt;

/// A snapshot that cannot be restored (it came from the network).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError(pub &'static str);

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad snapshot: {}", self.0)
    }
}

impl std::error::Error for RestoreError {}

/// A deterministic state machine. Same operations in the same order give
/// the same results and the same digest on every replica.
pub trait App: Send {
    /// Applies one committed operation and returns its result. Must not
    /// panic on any input: operations come from clients.
    fn execute(&mut self, op: &[u8]) -> Vec<u8>;
    /// Serializes the whole state.
    fn snapshot(&self) -> Vec<u8>;
    /// Appends the same bytes as `snapshot` to `out` (saves a copy of the
    /// whole state when the caller frames it).
    fn snapshot_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.snapshot());
    }
    /// Freezes the state as it is now, to be encoded piece by piece later
    /// (the same bytes as `snapshot`) while execution goes on. Must cost
    /// far less than encoding: a replica streams its state to a lagging peer
    /// from its only thread. The default encodes eagerly (for small states).
    fn freeze(&self) -> Box<dyn SnapshotSource> {
        Box::new(EncodedSnapshot { bytes: self.snapshot(), sent: 0 })
    }
    /// Replaces the state with a snapshot; rejects malformed bytes without
    /// changing anything.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;
    /// A short digest of the state, equal on replicas with equal state.
    fn digest(&self) -> u64;
}

/// A state frozen by [`App::freeze`]: its encoding, produced in order.
pub trait SnapshotSource: Send {
    /// Bytes of the whole encoding, known before any is produced.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends the next bytes of the encoding to `out`: at least `want`
    /// of them unless fewer are left (then all that are left).
    fn encode_next(&mut self, out: &mut Vec<u8>, want: usize);
}

/// A snapshot encoded up front (the default of [`App::freeze`]).
struct EncodedSnapshot {
    bytes: Vec<u8>,
    sent: usize,
}

impl SnapshotSource for EncodedSnapshot {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn encode_next(&mut self, out: &mut Vec<u8>, want: usize) {
        let end = self.sent.saturating_add(want).min(self.bytes.len());
        out.extend_from_slice(&self.bytes[self.sent..end]);
        self.sent = end;
    }
}

/// The application of raw protocol benchmarks: every op returns an empty
/// result and there is no state (as the original artifact's null app).
#[derive(Clone, Debug, Default)]
pub struct NullApp {
    executed: u64,
}

impl App for NullApp {
    fn execute(&mut self, _op: &[u8]) -> Vec<u8> {
        self.executed += 1;
        Vec::new()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.executed.to_be_bytes().to_vec()
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let bytes: [u8; 8] = snapshot.try_into().map_err(|_| RestoreError("null app snapshot is 8 bytes"))?;
        self.executed = u64::from_be_bytes(bytes);
        Ok(())
    }
    fn digest(&self) -> u64 {
        self.executed
    }
}

/// Which application a replica runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AppKind {
    /// Key-value store (get, put, del, cas).
    Kv,
    /// Empty replies, no state: raw protocol cost.
    Null,
}

impl AppKind {
    pub fn build(self) -> Box<dyn App> {
        match self {
            AppKind::Kv => Box::new(kv::KvStore::default()),
            AppKind::Null => Box::new(NullApp::default()),
        }
    }
}

/// 64-bit FNV-1a: a stable, dependency-free digest for state comparison
/// (not a security boundary).
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut hash = seed;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// FNV-1a offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl<T: App + ?Sized> App for Box<T> {
    fn execute(&mut self, op: &[u8]) -> Vec<u8> {
        (**self).execute(op)
    }
    fn snapshot(&self) -> Vec<u8> {
        (**self).snapshot()
    }
    fn snapshot_into(&self, out: &mut Vec<u8>) {
        (**self).snapshot_into(out)
    }
    fn freeze(&self) -> Box<dyn SnapshotSource> {
        (**self).freeze()
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        (**self).restore(snapshot)
    }
    fn digest(&self) -> u64 {
        (**self).digest()
    }
}
