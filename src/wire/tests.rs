use super::*;
use crate::fastpath::types as skel;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

// ---------------------------------------------------------------------------
// Layout: the Rust mirrors agree with the C header (via the skeleton's BTF).
// ---------------------------------------------------------------------------

macro_rules! same_layout {
    ($mirror:ident, [$($field:ident),* $(,)?]) => {{
        assert_eq!(
            size_of::<layout::$mirror>(),
            size_of::<skel::$mirror>(),
            concat!("size of ", stringify!($mirror), " differs between bpf/electrode.h and src/wire")
        );
        $(assert_eq!(
            offset_of!(layout::$mirror, $field),
            offset_of!(skel::$mirror, $field),
            concat!("offset of ", stringify!($mirror), ".", stringify!($field))
        );)*
    }};
}

#[test]
fn layout_matches_the_c_header() {
    same_layout!(electrode_hdr, [magic, version, msg_type, sender, flags, cluster_id, body_len, pad, view]);
    same_layout!(electrode_request, [client_id, request_number, op_len, pad]);
    same_layout!(electrode_reply, [client_id, request_number, result_len, status, pad]);
    same_layout!(electrode_prepare, [op, commit, request_count, batch_len, pad]);
    same_layout!(electrode_prepare_ok, [op, replica, pad]);
    same_layout!(electrode_commit, [commit]);
    same_layout!(electrode_start_view_change, [replica, pad]);
    same_layout!(electrode_chunk, [transfer_id, total_len, offset, len, pad]);
    same_layout!(electrode_do_view_change, [last_normal_view, op, commit, replica, pad, chunk]);
    same_layout!(electrode_start_view, [op, commit, chunk]);
    same_layout!(electrode_get_state, [op, replica, pad]);
    same_layout!(electrode_new_state, [op, commit, head, kind, chunk]);
    same_layout!(electrode_recovery, [nonce, replica, pad]);
    same_layout!(electrode_recovery_response, [nonce, op, commit, replica, status, pad, chunk]);
    same_layout!(electrode_status_request, [nonce]);
    same_layout!(
        electrode_status_reply,
        [
            nonce,
            op,
            commit,
            digest,
            status,
            replica,
            catching_up,
            waiting,
            holder,
            pad,
            holder_view,
            holder_op
        ]
    );
    same_layout!(electrode_snapshot_request, [snapshot_op, offset, replica, pad]);
    same_layout!(electrode_snapshot_chunk, [snapshot_op, total_len, digest, offset, len, replica, pad]);
    same_layout!(electrode_state_blob, [checkpoint_op, snapshot_len, entry_count]);
    same_layout!(electrode_log_entry, [op, view, request_count, batch_len, pad]);
}

#[test]
fn every_type_has_a_distinct_number_and_round_trips() {
    for (i, t) in MsgType::ALL.iter().enumerate() {
        assert_eq!(*t as u8 as usize, i + 1);
        assert_eq!(MsgType::from_u8(*t as u8), Some(*t));
    }
    assert_eq!(MsgType::ALL.len(), MSG_TYPE_MAX as usize);
    assert_eq!(MsgType::from_u8(0), None);
    assert_eq!(MsgType::from_u8(MSG_TYPE_MAX as u8 + 1), None);
}

// ---------------------------------------------------------------------------
// Round trip of every message type.
// ---------------------------------------------------------------------------

const CLUSTER: u32 = 0xC0FFEE;
const REPLICAS: u8 = 5;

fn request() -> impl Strategy<Value = Request> {
    (any::<u64>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(client_id, request_number, op)| Request { client_id, request_number, op })
}

fn batch() -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec(request(), 1..=8)
}

fn state() -> impl Strategy<Value = StateBlob> {
    (
        0u64..1_000_000,
        prop::collection::vec(any::<u8>(), 0..3000),
        prop::collection::vec((any::<u64>(), batch()), 0..12),
    )
        .prop_map(|(checkpoint_op, snapshot, raw)| StateBlob {
            checkpoint_op,
            snapshot,
            entries: raw
                .into_iter()
                .enumerate()
                .map(|(i, (view, batch))| LogEntry { op: checkpoint_op + 1 + i as u64, view, batch })
                .collect(),
        })
}

/// A message and the replica that may send it.
fn message() -> impl Strategy<Value = (u8, Message)> {
    let r = 0..REPLICAS;
    prop_oneof![
        request().prop_map(|m| (CLIENT_SENDER, Message::Request(m))),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..=MAX_RESULT_LEN),
            any::<bool>(),
            r.clone()
        )
            .prop_map(|(view, client_id, request_number, result, session_evicted, s)| {
                // An eviction carries no result.
                let result = if session_evicted { Vec::new() } else { result };
                (s, Message::Reply(Reply { view, client_id, request_number, result, session_evicted }))
            }),
        (any::<u64>(), any::<u64>(), any::<u64>(), batch(), r.clone()).prop_map(
            |(view, op, commit, batch, s)| (s, Message::Prepare(Prepare { view, op, commit, batch }))
        ),
        (any::<u64>(), any::<u64>(), r.clone(), any::<bool>())
            .prop_map(|(view, op, s, gap)| (s, Message::PrepareOk(PrepareOk { view, op, replica: s, gap }))),
        (any::<u64>(), any::<u64>(), r.clone())
            .prop_map(|(view, commit, s)| (s, Message::Commit(Commit { view, commit }))),
        (any::<u64>(), r.clone())
            .prop_map(|(view, s)| (s, Message::StartViewChange(StartViewChange { view, replica: s }))),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), state(), r.clone()).prop_map(
            |(view, last_normal_view, op, commit, state, s)| {
                (
                    s,
                    Message::DoViewChange(DoViewChange {
                        view,
                        last_normal_view,
                        op,
                        commit,
                        replica: s,
                        state,
                    }),
                )
            }
        ),
        (any::<u64>(), any::<u64>(), any::<u64>(), state(), r.clone()).prop_map(
            |(view, op, commit, state, s)| (s, Message::StartView(StartView { view, op, commit, state }))
        ),
        (any::<u64>(), any::<u64>(), r.clone())
            .prop_map(|(view, op, s)| (s, Message::GetState(GetState { view, op, replica: s }))),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), 0u8..3, state(), r.clone()).prop_map(
            |(view, op, commit, head, kind, state, s)| {
                let kind =
                    [NewStateKind::Page, NewStateKind::SnapshotOffer, NewStateKind::Repair][kind as usize];
                (s, Message::NewState(NewState { view, op, commit, head, kind, state }))
            }
        ),
        (any::<u64>(), r.clone())
            .prop_map(|(nonce, s)| (s, Message::Recovery(Recovery { nonce, replica: s }))),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), state(), r.clone(), 1u8..=3).prop_map(
            |(view, nonce, op, commit, state, s, status)| {
                (
                    s,
                    Message::RecoveryResponse(RecoveryResponse {
                        view,
                        nonce,
                        op,
                        commit,
                        replica: s,
                        status,
                        state,
                    }),
                )
            }
        ),
        any::<u64>().prop_map(|nonce| (CLIENT_SENDER, Message::StatusRequest(StatusRequest { nonce }))),
        (
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), 1u8..=3, r.clone()),
            any::<bool>(),
            proptest::option::of((r.clone(), any::<u64>(), any::<u64>())),
        )
            .prop_map(|((view, nonce, op, commit, digest, status, s), catching_up, holder)| {
                let waiting_for = holder.map(|(replica, view, op)| StateHolder { replica, view, op });
                let reply = StatusReply {
                    view,
                    nonce,
                    op,
                    commit,
                    digest,
                    status,
                    replica: s,
                    catching_up,
                    waiting_for,
                };
                (s, Message::StatusReply(reply))
            }),
        (any::<u64>(), any::<u64>(), any::<u64>(), r.clone()).prop_map(|(view, snapshot_op, offset, s)| {
            (s, Message::SnapshotRequest(SnapshotRequest { view, snapshot_op, offset, replica: s }))
        }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            0u64..1 << 40,
            1usize..=SNAPSHOT_CHUNK_LEN,
            any::<bool>(),
            r
        )
            .prop_map(|(view, snapshot_op, digest, chunk, len, last, s)| {
                // A full chunk somewhere inside, or the short last one.
                let offset = chunk * SNAPSHOT_CHUNK_LEN as u64;
                let total_len =
                    if last { offset + len as u64 } else { offset + 2 * SNAPSHOT_CHUNK_LEN as u64 };
                let len = if last { len } else { SNAPSHOT_CHUNK_LEN };
                let data = (0..len).map(|i| (i * 7 + chunk as usize) as u8).collect();
                let m = SnapshotChunk { view, snapshot_op, total_len, digest, offset, replica: s, data };
                (s, Message::SnapshotChunk(m))
            }),
    ]
}

/// Encodes, decodes every datagram, reassembles; returns the message.
fn round_trip(sender: u8, msg: &Message, shuffle_seed: u64) -> Message {
    let encoder = Encoder::new(CLUSTER, sender);
    let mut datagrams = Vec::new();
    encoder.encode(msg, &mut datagrams).unwrap();
    // Deliver chunks in a seed-dependent order, with a duplicate.
    let n = datagrams.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = shuffle_seed | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    if n > 1 {
        order.insert(1, order[0]);
    }
    let mut reassembler = Reassembler::new(MAX_TRANSFER_LEN);
    let mut result = None;
    for (k, i) in order.into_iter().enumerate() {
        let d = &datagrams[i];
        assert!(d.len() <= MAX_DATAGRAM_LEN);
        let (env, decoded) = decode(d, CLUSTER).unwrap();
        assert_eq!(env.sender, sender);
        assert_eq!(env.msg_type, msg.msg_type());
        match decoded {
            Decoded::Message(m) => {
                assert_eq!(n, 1);
                result = Some(m);
            }
            Decoded::Chunk(chunk) => {
                if let Some(m) = reassembler.push(&env, chunk).unwrap() {
                    assert!(result.is_none(), "completed twice at datagram {k}");
                    result = Some(m);
                }
            }
        }
    }
    assert_eq!(reassembler.bytes_used(), 0);
    result.expect("message completed")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips((sender, msg) in message(), seed in any::<u64>()) {
        prop_assert_eq!(round_trip(sender, &msg, seed), msg);
    }
}

#[test]
fn large_state_is_chunked_within_the_datagram_limit() {
    let state = StateBlob { checkpoint_op: 7, snapshot: vec![0xAB; 100_000], entries: Vec::new() };
    let msg = Message::StartView(StartView { view: 3, op: 7, commit: 7, state });
    let mut datagrams = Vec::new();
    Encoder::new(CLUSTER, 1).encode(&msg, &mut datagrams).unwrap();
    assert_eq!(datagrams.len(), (100_000 + 16usize).div_ceil(CHUNK_LEN));
    assert!(datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM_LEN));
    assert_eq!(round_trip(1, &msg, 99), msg);
}

#[test]
fn oversize_single_datagram_messages_are_refused_by_the_encoder() {
    let big = Request { client_id: 1, request_number: 1, op: vec![0; MAX_OP_LEN + 1] };
    let mut out = Vec::new();
    let enc = Encoder::new(CLUSTER, CLIENT_SENDER);
    assert_eq!(enc.encode(&Message::Request(big), &mut out), Err(EncodeError::OverLimit));
    let batch = vec![Request { client_id: 1, request_number: 1, op: vec![0; 500] }; 3];
    let prepare = Message::Prepare(Prepare { view: 0, op: 1, commit: 0, batch });
    assert_eq!(enc.encode(&prepare, &mut out), Err(EncodeError::TooLarge));
    assert!(out.is_empty());
}

// ---------------------------------------------------------------------------
// Hostile input: decode never panics and says which check failed.
// ---------------------------------------------------------------------------

fn valid_datagrams() -> Vec<Vec<u8>> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = message();
    let mut out = Vec::new();
    for _ in 0..200 {
        let (sender, msg) = strategy.new_tree(&mut runner).unwrap().current();
        Encoder::new(CLUSTER, sender).encode(&msg, &mut out).unwrap();
    }
    out
}

#[test]
fn decode_rejects_each_broken_check_by_name() {
    let enc = Encoder::new(CLUSTER, 1);
    let mut out = Vec::new();
    enc.encode(&Message::Commit(Commit { view: 1, commit: 2 }), &mut out).unwrap();
    let good = out.pop().unwrap();
    assert!(decode(&good, CLUSTER).is_ok());
    assert_eq!(decode(&good[..23], CLUSTER).unwrap_err(), DecodeError::ShortHeader);
    assert_eq!(decode(&good, CLUSTER + 1).unwrap_err(), DecodeError::WrongCluster);
    let mut bad = good.clone();
    bad[0] ^= 1;
    assert_eq!(decode(&bad, CLUSTER).unwrap_err(), DecodeError::BadMagic);
    let mut bad = good.clone();
    bad[4] = 9;
    assert_eq!(decode(&bad, CLUSTER).unwrap_err(), DecodeError::BadVersion);
    let mut bad = good.clone();
    bad[5] = 0;
    assert_eq!(decode(&bad, CLUSTER).unwrap_err(), DecodeError::UnknownType(0));
    let mut bad = good.clone();
    bad.push(0);
    assert_eq!(decode(&bad, CLUSTER).unwrap_err(), DecodeError::BodyLength);
    let mut bad = good.clone();
    bad[6] = MAX_REPLICAS as u8;
    assert_eq!(decode(&bad, CLUSTER).unwrap_err(), DecodeError::BadReplica);
    assert_eq!(decode(&vec![0; MAX_DATAGRAM_LEN + 1], CLUSTER).unwrap_err(), DecodeError::TooLong);

    // A PrepareOk whose body replica disagrees with the header sender.
    enc.encode(&Message::PrepareOk(PrepareOk { view: 1, op: 2, replica: 1, gap: false }), &mut out).unwrap();
    let mut ok = out.pop().unwrap();
    ok[HDR_LEN + 8] = 2;
    assert_eq!(decode(&ok, CLUSTER).unwrap_err(), DecodeError::BadReplica);
    // Flag bits other than GAP are refused, as the kernel refuses to credit them.
    for flags in [2u8, 0x80, 3] {
        let mut ok = out_flags(&enc, flags);
        assert_eq!(decode(&ok, CLUSTER).unwrap_err(), DecodeError::UnknownFlags, "flags {flags:#x}");
        ok[HDR_LEN + 9] = 1;
        assert!(matches!(
            decode(&ok, CLUSTER),
            Ok((_, Decoded::Message(Message::PrepareOk(PrepareOk { gap: true, .. }))))
        ));
    }

    // A Prepare whose batch claims more requests than the limit.
    let p = Prepare {
        view: 1,
        op: 1,
        commit: 0,
        batch: vec![Request { client_id: 1, request_number: 1, op: vec![] }],
    };
    enc.encode(&Message::Prepare(p), &mut out).unwrap();
    let mut prep = out.pop().unwrap();
    prep[HDR_LEN + 16..HDR_LEN + 18].copy_from_slice(&(MAX_BATCH as u16 + 1).to_be_bytes());
    assert_eq!(decode(&prep, CLUSTER).unwrap_err(), DecodeError::OverLimit);

    // Reply status: an eviction round-trips; an unknown status, or an
    // eviction that carries a result, is rejected.
    let evicted = Reply { view: 1, client_id: 8, request_number: 4, result: vec![], session_evicted: true };
    enc.encode(&Message::Reply(evicted.clone()), &mut out).unwrap();
    let reply = out.pop().unwrap();
    let status_at = HDR_LEN + std::mem::offset_of!(layout::electrode_reply, status);
    assert_eq!(reply[status_at], REPLY_SESSION_EVICTED as u8);
    assert_eq!(decode(&reply, CLUSTER).unwrap().1, Decoded::Message(Message::Reply(evicted)));
    let mut bad = reply.clone();
    bad[status_at] = 2;
    assert_eq!(decode(&bad, CLUSTER).unwrap_err(), DecodeError::BadReplyStatus);
    let with_result =
        Reply { view: 1, client_id: 8, request_number: 4, result: b"x".to_vec(), session_evicted: false };
    enc.encode(&Message::Reply(with_result), &mut out).unwrap();
    let mut bad = out.pop().unwrap();
    bad[status_at] = REPLY_SESSION_EVICTED as u8;
    assert_eq!(decode(&bad, CLUSTER).unwrap_err(), DecodeError::BadReplyStatus);
    let evicted_with_result =
        Reply { view: 1, client_id: 8, request_number: 4, result: b"x".to_vec(), session_evicted: true };
    assert!(enc.encode(&Message::Reply(evicted_with_result), &mut out).is_err());

    // StatusReply: its two flags are 0 or 1, a holder is a replica id.
    let holder = StateHolder { replica: 1, view: 3, op: 15376 };
    let blocked = StatusReply {
        view: 0,
        nonce: 7,
        op: 0,
        commit: 0,
        digest: 0,
        status: STATUS_RECOVERING as u8,
        replica: 1,
        catching_up: false,
        waiting_for: Some(holder),
    };
    enc.encode(&Message::StatusReply(blocked.clone()), &mut out).unwrap();
    let good = out.pop().unwrap();
    assert_eq!(decode(&good, CLUSTER).unwrap().1, Decoded::Message(Message::StatusReply(blocked)));
    let at = |field| HDR_LEN + field;
    for (field, value, error) in [
        (std::mem::offset_of!(layout::electrode_status_reply, catching_up), 2, DecodeError::UnknownFlags),
        (std::mem::offset_of!(layout::electrode_status_reply, waiting), 2, DecodeError::UnknownFlags),
        (
            std::mem::offset_of!(layout::electrode_status_reply, holder),
            MAX_REPLICAS as u8,
            DecodeError::BadReplica,
        ),
    ] {
        let mut bad = good.clone();
        bad[at(field)] = value;
        assert_eq!(decode(&bad, CLUSTER).unwrap_err(), error, "field at {field}");
    }
}

#[test]
fn a_million_random_and_mutated_datagrams_never_panic() {
    let valid = valid_datagrams();
    let mut reassembler = Reassembler::new(1 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(MAX_DATAGRAM_LEN + 8);
    for i in 0..1_000_000u64 {
        buf.clear();
        match i % 4 {
            // Pure noise of any length, sometimes with a valid magic.
            0 => {
                let len = (next() % (MAX_DATAGRAM_LEN as u64 + 8)) as usize;
                buf.extend((0..len).map(|_| next() as u8));
                if len >= 4 && next() % 2 == 0 {
                    buf[..4].copy_from_slice(&MAGIC.to_be_bytes());
                }
            }
            // Truncated valid datagram.
            1 => {
                let d = &valid[(next() % valid.len() as u64) as usize];
                buf.extend_from_slice(&d[..(next() % (d.len() as u64 + 1)) as usize]);
            }
            // Valid datagram with a few bytes flipped (often lengths/counts).
            _ => {
                let d = &valid[(next() % valid.len() as u64) as usize];
                buf.extend_from_slice(d);
                for _ in 0..1 + next() % 3 {
                    let at = (next() % buf.len() as u64) as usize;
                    buf[at] = next() as u8;
                }
            }
        }
        match decode(&buf, CLUSTER) {
            Ok((env, Decoded::Chunk(chunk))) => {
                accepted += 1;
                let _ = reassembler.push(&env, chunk);
                assert!(reassembler.bytes_used() <= 1 << 20);
            }
            Ok(_) => accepted += 1,
            Err(e) => {
                assert!(!e.reason().is_empty());
                rejected += 1;
            }
        }
    }
    assert!(accepted > 1000 && rejected > 100_000, "accepted {accepted} rejected {rejected}");
}

#[test]
fn reassembly_is_bounded_and_rejects_forged_chunks() {
    let env = Envelope { msg_type: MsgType::StartView, sender: 1, flags: 0, view: 1 };
    let chunk = |id: u32, total: u32, offset: u32, len: usize| Chunk {
        head: ChunkedHead::StartView { op: 1, commit: 1 },
        transfer_id: id,
        total_len: total,
        offset,
        data: vec![0; len],
    };
    let mut r = Reassembler::new(10 * CHUNK_LEN);
    // A transfer larger than the budget is refused outright.
    assert_eq!(r.push(&env, chunk(1, 11 * CHUNK_LEN as u32, 0, CHUNK_LEN)), Err(DecodeError::OverLimit));
    // Many partial transfers never exceed the budget: the oldest is evicted.
    for id in 0..100 {
        assert_eq!(r.push(&env, chunk(id, 4 * CHUNK_LEN as u32, 0, CHUNK_LEN)), Ok(None));
        assert!(r.bytes_used() <= 10 * CHUNK_LEN);
    }
    // Offsets not on a chunk boundary are forged.
    assert_eq!(r.push(&env, chunk(500, 4 * CHUNK_LEN as u32, 7, 10)), Err(DecodeError::BadChunk));
    // A complete transfer whose blob is garbage is rejected, not panicked on.
    let mut r = Reassembler::new(MAX_TRANSFER_LEN);
    assert_eq!(r.push(&env, chunk(9, 40, 0, 40)), Err(DecodeError::BadState));
    assert_eq!(r.bytes_used(), 0);
}

/// A PrepareOk from replica 1 with its flags byte set to `flags`.
fn out_flags(enc: &Encoder, flags: u8) -> Vec<u8> {
    let mut out = Vec::new();
    enc.encode(&Message::PrepareOk(PrepareOk { view: 1, op: 2, replica: 1, gap: false }), &mut out).unwrap();
    let mut ok = out.pop().unwrap();
    ok[HDR_LEN + 9] = flags;
    ok
}

// ---------------------------------------------------------------------------
// Transfer ids: a function of the message, so resends fill each other's gaps.
// ---------------------------------------------------------------------------

/// A StartView whose state takes `chunks` chunks, the snapshot filled from
/// `fill` so two calls with different fills differ only in payload bytes.
fn chunked_start_view(chunks: usize, fill: u8) -> Message {
    // The state blob's fixed part is 16 bytes; the snapshot makes up the rest.
    let snapshot = (0..chunks * CHUNK_LEN - 16).map(|i| (i as u8).wrapping_mul(31) ^ fill).collect();
    let state = StateBlob { checkpoint_op: 40, snapshot, entries: Vec::new() };
    Message::StartView(StartView { view: 6, op: 40, commit: 40, state })
}

/// The transfer id every chunk of `datagrams` carries (asserted equal).
fn transfer_id_of(datagrams: &[Vec<u8>]) -> u32 {
    let ids: Vec<u32> = datagrams
        .iter()
        .map(|d| match decode(d, CLUSTER).unwrap().1 {
            Decoded::Chunk(chunk) => chunk.transfer_id,
            Decoded::Message(m) => panic!("expected a chunk, got {m:?}"),
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one transfer, one id: {ids:?}");
    ids[0]
}

#[test]
fn encoding_a_message_twice_gives_the_same_datagrams() {
    let msg = chunked_start_view(5, 0);
    let encoder = Encoder::new(CLUSTER, 1);
    let (mut first, mut second, mut restarted) = (Vec::new(), Vec::new(), Vec::new());
    encoder.encode(&msg, &mut first).unwrap();
    encoder.encode(&msg, &mut second).unwrap();
    // A new encoder (a restarted process) too: nothing depends on history.
    Encoder::new(CLUSTER, 1).encode(&msg, &mut restarted).unwrap();
    assert_eq!(first.len(), 5);
    assert_eq!(first, second);
    assert_eq!(first, restarted);
    assert_eq!(transfer_id_of(&first), transfer_id_of(&second));
}

#[test]
fn a_lossy_message_reassembles_from_the_chunks_of_two_sends() {
    let msg = chunked_start_view(24, 0);
    let encoder = Encoder::new(CLUSTER, 1);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    encoder.encode(&msg, &mut first).unwrap();
    encoder.encode(&msg, &mut second).unwrap();
    let n = first.len();
    assert_eq!(n, 24);
    // Seeded xorshift: the first send loses a random half of the chunks; the
    // second loses a random half too, but only among those the first
    // delivered, so neither send is whole and together they are.
    let mut x: u64 = 0x0DDC_0FFE_E15E_ED01;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let lost_first = &order[..n / 2];
    let delivered_first = &order[n / 2..];
    let mut lost_second: Vec<usize> = delivered_first.to_vec();
    for i in (1..lost_second.len()).rev() {
        lost_second.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    lost_second.truncate(n / 2);
    assert!(lost_first.iter().all(|i| !lost_second.contains(i)));

    let mut reassembler = Reassembler::new(MAX_TRANSFER_LEN);
    let mut push = |d: &Vec<u8>| {
        let (env, decoded) = decode(d, CLUSTER).unwrap();
        match decoded {
            Decoded::Chunk(chunk) => reassembler.push(&env, chunk).unwrap(),
            Decoded::Message(m) => panic!("expected a chunk, got {m:?}"),
        }
    };
    for (i, d) in first.iter().enumerate() {
        if !lost_first.contains(&i) {
            assert_eq!(push(d), None, "the first send lost half its chunks");
        }
    }
    let mut result = None;
    let mut delivered_second = 0;
    for (i, d) in second.iter().enumerate() {
        if lost_second.contains(&i) {
            continue;
        }
        delivered_second += 1;
        if let Some(m) = push(d) {
            assert!(result.is_none(), "completed twice");
            result = Some(m);
        }
    }
    assert_eq!(delivered_second, n - n / 2);
    assert_eq!(result, Some(msg), "the union of both sends' chunks is the message");
}

#[test]
fn different_messages_of_the_same_length_get_different_transfer_ids() {
    let encoder = Encoder::new(CLUSTER, 1);
    let id = |msg: &Message| {
        let mut out = Vec::new();
        encoder.encode(msg, &mut out).unwrap();
        (out.iter().map(Vec::len).collect::<Vec<_>>(), transfer_id_of(&out))
    };
    let base = chunked_start_view(3, 0);
    let (base_lens, base_id) = id(&base);
    // Same length, same head: only the payload differs.
    let payload = chunked_start_view(3, 1);
    // Same payload, another view; same payload, another head field.
    let Message::StartView(mut view) = base.clone() else { unreachable!() };
    view.view += 1;
    let Message::StartView(mut head) = base.clone() else { unreachable!() };
    head.commit -= 1;
    for other in [payload, Message::StartView(view), Message::StartView(head)] {
        let (lens, other_id) = id(&other);
        assert_eq!(lens, base_lens, "same datagram lengths");
        assert_ne!(other_id, base_id, "{other:?}");
    }
}
