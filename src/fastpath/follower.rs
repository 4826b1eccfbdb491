//! fast_reply: the follower's side of the kernel handover (cargo feature
//! `fast_reply`).
//!
//! The XDP program acks in-order Prepares of the armed view by itself and
//! hands each acked Prepare to user space through the `prepare_ring` ring
//! buffer. This module arms and disarms it through the `follower_state` map
//! and drains the ring. The handover rule is the ownership table in
//! `bpf/electrode.h`; in short, with [`FollowerPath`]:
//!
//! 1. [`FollowerPath::disarm_follower`]: the kernel stops acking, and the
//!    ring is drained completely into this value (so no acked op can still
//!    be in flight when it returns);
//! 2. [`FollowerPath::drain_prepares`] until empty: append them all to the log;
//! 3. act (view change, state transfer, ...);
//! 4. [`FollowerPath::arm_follower`] with the new view, leader and
//!    `next_op` = log head + 1.
//!
//! While armed, call [`FollowerPath::drain_prepares`] on a timer or on each
//! Commit: the kernel wakes the ring's epoll fd only when it is more than
//! half full.
//!
//! The map is read and written only with `BPF_F_LOCK` (the kernel holds the
//! value's `bpf_spin_lock` during each copy), so neither side ever sees a
//! half-written state.

use std::collections::VecDeque;
use std::mem::{offset_of, size_of};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::{AsRawLibbpf, MapCore, MapFlags, RingBuffer, RingBufferBuilder};

use super::load::Loaded;
use super::skel::types::{electrode_follower_state, electrode_prepare_record};
use crate::wire::{self, Decoded, Message, MAX_DATAGRAM_LEN, MAX_REPLICA_COUNT};

/// Bytes of one `follower_state` value.
const STATE_LEN: usize = size_of::<electrode_follower_state>();
/// Bytes of one ring record (fixed: bpf_ringbuf_reserve needs a constant).
const RECORD_LEN: usize = size_of::<electrode_prepare_record>();
/// Offset of the datagram in a ring record.
const RECORD_DATA_OFF: usize = offset_of!(electrode_prepare_record, data);
/// The map has one entry.
const STATE_KEY: [u8; 4] = 0u32.to_ne_bytes();
/// How long a disarm waits for a CPU that reserved a ring record to submit
/// or discard it. The kernel does that a few instructions later with
/// softirqs off, so hitting this means the kernel side is broken.
const RESERVED_RECORD_WAIT: Duration = Duration::from_millis(200);

/// What the kernel was armed with, read in one locked copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerState {
    /// Whether the kernel acks in-order Prepares of `view`.
    pub armed: bool,
    pub view: u64,
    /// The op the kernel acks next. While armed it is the kernel's and moves
    /// on its own; after [`FollowerPath::disarm_follower`] it is exact: every
    /// op below it is logged or drained into the [`FollowerPath`].
    pub next_op: u64,
    /// Address Prepares must come from.
    pub leader: SocketAddrV4,
    pub leader_index: u8,
    pub self_index: u8,
}

impl FollowerState {
    fn encode(&self) -> [u8; STATE_LEN] {
        type S = electrode_follower_state;
        let mut value = [0u8; STATE_LEN];
        let mut put = |offset: usize, bytes: &[u8]| {
            value[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        // The lock bytes stay zero: a BPF_F_LOCK update never copies them.
        put(offset_of!(S, armed), &u32::from(self.armed).to_ne_bytes());
        put(offset_of!(S, view), &self.view.to_ne_bytes());
        put(offset_of!(S, next_op), &self.next_op.to_ne_bytes());
        // Network order: the kernel compares them with packet fields as is.
        put(offset_of!(S, leader_ip), &self.leader.ip().octets());
        put(offset_of!(S, leader_port), &self.leader.port().to_be_bytes());
        put(offset_of!(S, leader_index), &[self.leader_index]);
        put(offset_of!(S, self_index), &[self.self_index]);
        value
    }

    fn decode(value: &[u8]) -> Result<FollowerState> {
        type S = electrode_follower_state;
        ensure!(
            value.len() == STATE_LEN,
            "map follower_state: value of {} bytes, want {STATE_LEN}",
            value.len()
        );
        let bytes = |offset: usize, len: usize| &value[offset..offset + len];
        let u64_at = |offset: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes(offset, 8));
            u64::from_ne_bytes(word)
        };
        let mut armed = [0u8; 4];
        armed.copy_from_slice(bytes(offset_of!(S, armed), 4));
        let mut ip = [0u8; 4];
        ip.copy_from_slice(bytes(offset_of!(S, leader_ip), 4));
        let mut port = [0u8; 2];
        port.copy_from_slice(bytes(offset_of!(S, leader_port), 2));
        Ok(FollowerState {
            armed: u32::from_ne_bytes(armed) != 0,
            view: u64_at(offset_of!(S, view)),
            next_op: u64_at(offset_of!(S, next_op)),
            leader: SocketAddrV4::new(Ipv4Addr::from(ip), u16::from_be_bytes(port)),
            leader_index: value[offset_of!(S, leader_index)],
            self_index: value[offset_of!(S, self_index)],
        })
    }
}

impl Loaded {
    /// Reads `follower_state` in one locked copy.
    pub fn follower_state(&self) -> Result<FollowerState> {
        let value = self
            .skel()
            .maps
            .follower_state
            .lookup(&STATE_KEY, MapFlags::LOCK)
            .context("read map follower_state[0] (BPF_F_LOCK)")?
            .context("read map follower_state[0]: no such entry")?;
        FollowerState::decode(&value)
    }

    fn write_follower_state(&self, state: &FollowerState) -> Result<()> {
        self.skel()
            .maps
            .follower_state
            .update(&STATE_KEY, &state.encode(), MapFlags::LOCK)
            .with_context(|| format!("write map follower_state[0] (BPF_F_LOCK): {state:?}"))
    }

    /// The follower fast path: arming, disarming and the ring consumer. At
    /// most one exists per [`Loaded`] at a time (a ring buffer has one
    /// consumer position).
    pub fn follower_path(&self) -> Result<FollowerPath<'_>> {
        ensure!(
            !self.follower_path_taken().swap(true, Ordering::AcqRel),
            "map prepare_ring already has a consumer (one FollowerPath per loaded object)"
        );
        match FollowerPath::new(self) {
            Ok(path) => Ok(path),
            Err(error) => {
                self.follower_path_taken().store(false, Ordering::Release);
                Err(error)
            }
        }
    }
}

/// Datagrams consumed from the ring and not yet handed out, in ring (= op)
/// order. Shared with the ring buffer's callback.
#[derive(Default)]
struct Inbox {
    datagrams: VecDeque<Vec<u8>>,
    /// Records or datagrams that were not an acked Prepare. Only a broken
    /// kernel side can produce one; never a panic (see `fault`).
    undecodable: u64,
    /// (view, op) the next drained record must be: set by each arm, moved
    /// by every Prepare handed out. The kernel acks in op order from the
    /// armed next_op, and reserves ring records in that order.
    expected: Option<(u64, u64)>,
    /// Set by the first record that breaks the log prefix; from then on
    /// drain_prepares refuses (the replica must give up its log).
    fault: Option<String>,
}

/// The longest prefix of `datagrams` user space can log: Prepares of
/// `cluster_id` that decode, of the expected view, with consecutive ops
/// from the expected op (when `expected` is None, from the first one's op
/// in its view). Returns the Prepares, where the next record is expected,
/// and why it stopped if a record broke the prefix. Never panics.
pub fn log_prefix(
    datagrams: impl IntoIterator<Item = Vec<u8>>,
    cluster_id: u32,
    expected: Option<(u64, u64)>,
) -> (Vec<wire::Prepare>, Option<(u64, u64)>, Option<String>) {
    let mut prepares = Vec::new();
    let mut expected = expected;
    for (index, datagram) in datagrams.into_iter().enumerate() {
        let prepare = match wire::decode(&datagram, cluster_id) {
            Ok((_, Decoded::Message(Message::Prepare(prepare)))) => prepare,
            Ok((envelope, _)) => {
                let why = format!("record {index} is a {:?}, not a Prepare", envelope.msg_type);
                return (prepares, expected, Some(why));
            }
            Err(error) => {
                let at = expected
                    .map_or(String::new(), |(view, op)| format!(" (expected op {op} of view {view})"));
                return (prepares, expected, Some(format!("record {index} does not decode: {error:?}{at}")));
            }
        };
        let (view, op) = expected.unwrap_or((prepare.view, prepare.op));
        if prepare.view != view || prepare.op != op {
            let why = format!(
                "record {index} is op {} of view {}, expected op {op} of view {view}",
                prepare.op, prepare.view
            );
            return (prepares, expected, Some(why));
        }
        let Some(next) = op.checked_add(1) else {
            // The kernel never acks it (fast_reply.h); the core could not
            // hold an op after it.
            return (
                prepares,
                expected,
                Some(format!("record {index} is op {op}, the last op there can be")),
            );
        };
        expected = Some((view, next));
        prepares.push(prepare);
    }
    (prepares, expected, None)
}

fn lock(inbox: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    // A poisoned lock only means a panic elsewhere while holding it; the
    // queue itself is always consistent.
    inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Arms, disarms and drains the follower fast path of one [`Loaded`].
pub struct FollowerPath<'obj> {
    loaded: &'obj Loaded,
    ring: RingBuffer<'static>,
    inbox: Arc<Mutex<Inbox>>,
}

impl<'obj> FollowerPath<'obj> {
    fn new(loaded: &'obj Loaded) -> Result<FollowerPath<'obj>> {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let sink = Arc::clone(&inbox);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&loaded.skel().maps.prepare_ring, move |record: &[u8]| {
                let mut inbox = lock(&sink);
                match record_datagram(record) {
                    Some(datagram) => inbox.datagrams.push_back(datagram.to_vec()),
                    None => inbox.undecodable += 1,
                }
                0
            })
            .context("consume map prepare_ring")?;
        let ring = builder.build().context("mmap ring buffer prepare_ring")?;
        Ok(FollowerPath { loaded, ring, inbox })
    }

    /// Lets the kernel ack Prepares of `view` from `leader` (replica
    /// `leader_index`), starting at op `next_op`, as replica `self_index`.
    /// One locked write, with armed = 1. Refused while armed (the kernel
    /// owns next_op then) and while drained Prepares wait in this value
    /// (they must be in the log before the kernel acks past them).
    pub fn arm_follower(
        &self,
        view: u64,
        next_op: u64,
        leader: SocketAddrV4,
        leader_index: u8,
        self_index: u8,
    ) -> Result<()> {
        self.loaded.ensure_members("arm fast reply")?;
        ensure!(next_op >= 1, "arm fast reply: next_op 0 (ops start at 1)");
        ensure!(
            usize::from(leader_index) < MAX_REPLICA_COUNT && usize::from(self_index) < MAX_REPLICA_COUNT,
            "arm fast reply: replica index {leader_index} or {self_index} beyond {MAX_REPLICA_COUNT} replicas"
        );
        ensure!(leader_index != self_index, "arm fast reply: replica {self_index} is the leader itself");
        let current = self.loaded.follower_state()?;
        ensure!(!current.armed, "arm fast reply: already armed ({current:?}); disarm and drain first");
        let waiting = lock(&self.inbox).datagrams.len();
        ensure!(waiting == 0, "arm fast reply: {waiting} drained Prepares not yet taken by drain_prepares");
        let state = FollowerState { armed: true, view, next_op, leader, leader_index, self_index };
        self.loaded.write_follower_state(&state)?;
        lock(&self.inbox).expected = Some((view, next_op));
        Ok(())
    }

    /// Stops the kernel acking and drains the ring completely into this
    /// value; take the Prepares with [`FollowerPath::drain_prepares`]. When
    /// it returns, the map's next_op is exact: every op below it is logged
    /// or waiting here, and no CPU will ack another.
    ///
    /// Why next_op needs fixing: the disarm is a locked read followed by a
    /// locked write with armed = 0, and a CPU may ack an op between the two;
    /// the write then carries the next_op read before it. Such an op's
    /// record is in the ring, so the drain finds it and next_op is set past
    /// the highest op drained (the kernel no longer writes: it is disarmed).
    pub fn disarm_follower(&self) -> Result<()> {
        let before = self.loaded.follower_state()?;
        if !before.armed {
            return self.drain_ring_completely().map(|_| ());
        }
        let disarmed = FollowerState { armed: false, ..before };
        self.loaded.write_follower_state(&disarmed)?;
        let drained = self.drain_ring_completely()?;
        let cluster_id = self.loaded.options().cluster_id;
        let highest =
            drained.iter().filter_map(|datagram| prepare_op(datagram, cluster_id, before.view)).max();
        if let Some(op) = highest.filter(|op| *op >= disarmed.next_op) {
            let exact = FollowerState { next_op: op + 1, ..disarmed };
            self.loaded.write_follower_state(&exact)?;
        }
        Ok(())
    }

    /// The state the kernel is armed with (one locked read).
    pub fn follower_state(&self) -> Result<FollowerState> {
        self.loaded.follower_state()
    }

    /// Takes up to `max` acked Prepares, oldest (lowest op) first, without
    /// blocking: those a disarm drained first, then whatever the ring holds
    /// now. Only the valid contiguous prefix ([`log_prefix`]: decodes, the
    /// armed view, consecutive ops from the armed next_op) is returned. A
    /// record that breaks it is counted ([`FollowerPath::undecodable`]),
    /// it and the records after it are discarded, and [`FollowerPath::fault`]
    /// says why; every later call fails. The kernel acked those ops, so the
    /// caller must give up its log (bpf/electrode.h, fast_reply: the
    /// replica exits and restarts into recovery).
    pub fn drain_prepares(&mut self, max: usize) -> Result<Vec<wire::Prepare>> {
        if let Some(fault) = self.fault() {
            bail!("drain prepare_ring: the kernel acked a Prepare user space cannot log: {fault}");
        }
        let datagrams = self.take_datagrams(max)?;
        Ok(self.track(datagrams.into_iter()))
    }

    /// Moves the expected (view, op) past `datagrams`, recording a fault at
    /// the first that breaks the prefix; returns the prefix.
    fn track(&self, datagrams: impl Iterator<Item = Vec<u8>>) -> Vec<wire::Prepare> {
        let cluster_id = self.loaded.options().cluster_id;
        let mut inbox = lock(&self.inbox);
        let (prepares, expected, fault) = log_prefix(datagrams, cluster_id, inbox.expected);
        inbox.expected = expected;
        if fault.is_some() {
            inbox.undecodable += 1;
            inbox.fault = fault;
            inbox.datagrams.clear();
        }
        prepares
    }

    /// Why the acked log broke (a record the kernel acked that user space
    /// cannot log), if it did.
    pub fn fault(&self) -> Option<String> {
        lock(&self.inbox).fault.clone()
    }

    /// Like [`FollowerPath::drain_prepares`], but the datagrams as the
    /// kernel recorded them (header included), undecoded; they count as
    /// handed out (the expected next op moves past them, a broken one
    /// records the fault).
    pub fn drain_datagrams(&mut self, max: usize) -> Result<Vec<Vec<u8>>> {
        let datagrams = self.take_datagrams(max)?;
        self.track(datagrams.iter().cloned());
        Ok(datagrams)
    }

    fn take_datagrams(&mut self, max: usize) -> Result<Vec<Vec<u8>>> {
        let waiting = lock(&self.inbox).datagrams.len();
        if waiting < max {
            self.consume(max - waiting)?;
        }
        let mut inbox = lock(&self.inbox);
        let take = max.min(inbox.datagrams.len());
        Ok(inbox.datagrams.drain(..take).collect())
    }

    /// Ring records or datagrams skipped because they were not a Prepare.
    pub fn undecodable(&self) -> u64 {
        lock(&self.inbox).undecodable
    }

    /// Readable when the kernel wakes the consumer (ring more than half
    /// full), for an event loop; then call [`FollowerPath::drain_prepares`].
    pub fn epoll_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: libbpf owns this epoll fd and closes it when `self.ring`
        // is freed, which the borrow of `self` outlives.
        unsafe { BorrowedFd::borrow_raw(self.ring.epoll_fd()) }
    }

    /// Consumes up to `max` records into the inbox without blocking.
    fn consume(&self, max: usize) -> Result<()> {
        let consumed = self.ring.consume_raw_n(max);
        if consumed < 0 {
            bail!("consume ring buffer prepare_ring: {}", std::io::Error::from_raw_os_error(-consumed));
        }
        Ok(())
    }

    /// Consumes until the consumer position reaches the producer position:
    /// a record that a CPU reserved but has not submitted (or discarded) yet
    /// stops `consume`, so it waits for it. Returns the datagrams consumed.
    fn drain_ring_completely(&self) -> Result<Vec<Vec<u8>>> {
        let first_new = lock(&self.inbox).datagrams.len();
        // SAFETY: ring 0 exists (build added exactly one map) and lives as
        // long as `self.ring`; the position reads are atomic loads in libbpf.
        let ring = unsafe { libbpf_sys::ring_buffer__ring(self.ring.as_libbpf_object().as_ptr(), 0) };
        ensure!(!ring.is_null(), "ring buffer prepare_ring: libbpf has no ring 0");
        let deadline = Instant::now() + RESERVED_RECORD_WAIT;
        loop {
            self.consume(usize::MAX)?;
            // SAFETY: `ring` is valid (above).
            let (consumer, producer) =
                unsafe { (libbpf_sys::ring__consumer_pos(ring), libbpf_sys::ring__producer_pos(ring)) };
            if consumer == producer {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "drain ring buffer prepare_ring: a record reserved at position {consumer} \
                     (producer at {producer}) was neither submitted nor discarded within {:?}",
                    RESERVED_RECORD_WAIT
                );
            }
            std::thread::yield_now();
        }
        Ok(lock(&self.inbox).datagrams.range(first_new..).cloned().collect())
    }
}

impl Drop for FollowerPath<'_> {
    fn drop(&mut self) {
        self.loaded.follower_path_taken().store(false, Ordering::Release);
    }
}

/// The datagram inside one ring record, if the record is well formed.
fn record_datagram(record: &[u8]) -> Option<&[u8]> {
    if record.len() < RECORD_LEN {
        return None;
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&record[offset_of!(electrode_prepare_record, len)..][..4]);
    let len = usize::try_from(u32::from_ne_bytes(len)).ok()?;
    if len > MAX_DATAGRAM_LEN {
        return None;
    }
    record.get(RECORD_DATA_OFF..RECORD_DATA_OFF + len)
}

/// The op of `datagram` if it is a Prepare of `view` in `cluster_id`.
fn prepare_op(datagram: &[u8], cluster_id: u32, view: u64) -> Option<u64> {
    match wire::decode(datagram, cluster_id) {
        Ok((_, Decoded::Message(Message::Prepare(prepare)))) if prepare.view == view => Some(prepare.op),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_state_survives_encode_and_decode() {
        let state = FollowerState {
            armed: true,
            view: 0x0102_0304_0506_0708,
            next_op: 77,
            leader: SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 7447),
            leader_index: 2,
            self_index: 1,
        };
        let value = state.encode();
        assert_eq!(value.len(), 32, "bpf/electrode.h asserts 32 bytes");
        assert_eq!(&value[..4], &[0; 4], "lock bytes are never written");
        assert_eq!(&value[24..28], &[10, 1, 2, 3], "leader_ip in network order");
        assert_eq!(&value[28..30], &7447u16.to_be_bytes(), "leader_port in network order");
        assert_eq!(FollowerState::decode(&value).expect("decodes"), state);
        assert!(FollowerState::decode(&value[..31]).is_err());
    }

    fn datagram(view: u64, op: u64) -> Vec<u8> {
        let request = wire::Request { client_id: 1, request_number: op, op: b"put k v".to_vec() };
        let prepare = wire::Prepare { view, op, commit: 0, batch: vec![request] };
        let mut out = Vec::new();
        wire::Encoder::new(7, 0).encode(&Message::Prepare(prepare), &mut out).expect("encodes");
        out.remove(0)
    }

    fn ops(prepares: &[wire::Prepare]) -> Vec<u64> {
        prepares.iter().map(|p| p.op).collect()
    }

    #[test]
    fn log_prefix_stops_at_the_first_record_that_cannot_be_logged() {
        let mut corrupt = datagram(3, 5);
        corrupt[24 + 16..24 + 18].copy_from_slice(&0u16.to_be_bytes()); // request_count 0
        type Case = (&'static str, Vec<Vec<u8>>, Vec<u64>);
        let cases: Vec<Case> = vec![
            ("all in order", vec![datagram(3, 4), datagram(3, 5), datagram(3, 6)], vec![4, 5, 6]),
            ("undecodable", vec![datagram(3, 4), corrupt, datagram(3, 6)], vec![4]),
            ("a gap", vec![datagram(3, 4), datagram(3, 6)], vec![4]),
            ("a repeat", vec![datagram(3, 4), datagram(3, 4)], vec![4]),
            ("another view", vec![datagram(3, 4), datagram(2, 5)], vec![4]),
            ("not the armed next op", vec![datagram(3, 5)], vec![]),
            ("truncated", vec![datagram(3, 4)[..30].to_vec()], vec![]),
            ("empty record", vec![Vec::new()], vec![]),
        ];
        for (what, datagrams, want) in cases {
            let (prepares, expected, fault) = log_prefix(datagrams, 7, Some((3, 4)));
            assert_eq!(ops(&prepares), want, "{what}");
            assert_eq!(
                expected,
                Some((3, 4 + want.len() as u64)),
                "{what}: where the next record must start"
            );
            assert_eq!(fault.is_some(), what != "all in order", "{what}: {fault:?}");
        }
        let (prepares, expected, fault) = log_prefix(vec![datagram(3, 9), datagram(3, 10)], 7, None);
        assert_eq!((ops(&prepares), expected, fault), (vec![9, 10], Some((3, 11)), None));
        let (prepares, expected, fault) = log_prefix(vec![datagram(3, u64::MAX)], 7, Some((3, u64::MAX)));
        assert_eq!((ops(&prepares), expected), (vec![], Some((3, u64::MAX))));
        assert!(fault.is_some(), "no op can follow u64::MAX");
    }

    #[test]
    fn ring_records_with_impossible_lengths_are_rejected() {
        assert_eq!(RECORD_LEN, 1480);
        let mut record = vec![0u8; RECORD_LEN];
        record[..4].copy_from_slice(&5u32.to_ne_bytes());
        record[RECORD_DATA_OFF..RECORD_DATA_OFF + 5].copy_from_slice(b"hello");
        assert_eq!(record_datagram(&record), Some(&b"hello"[..]));
        record[..4].copy_from_slice(&(MAX_DATAGRAM_LEN as u32 + 1).to_ne_bytes());
        assert_eq!(record_datagram(&record), None);
        assert_eq!(record_datagram(&record[..RECORD_LEN - 1]), None);
    }
}
