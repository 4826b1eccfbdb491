//! One sample message of every type, messages as single datagrams, and
//! the classifier's rules (`bpf/parse.h`) in Rust.

use electrode::wire::{self, DoViewChange, Message, MsgType, NewState};

/// One message of every type, with small but non-empty contents.
pub fn sample_messages() -> Vec<Message> {
    let request = wire::Request { client_id: 7, request_number: 3, op: b"put k v".to_vec() };
    let state = wire::StateBlob {
        checkpoint_op: 2,
        snapshot: b"snapshot".to_vec(),
        entries: vec![wire::LogEntry { op: 3, view: 1, batch: vec![request.clone()] }],
    };
    // The view-change family: view 2, op 3, commit 2, and this state.
    let (view, op, commit) = (2, 3, 2);
    let blob = || state.clone();
    let messages = vec![
        Message::Request(request.clone()),
        Message::Reply(wire::Reply {
            view: 1,
            client_id: 7,
            request_number: 3,
            result: b"ok".to_vec(),
            session_evicted: false,
        }),
        Message::Prepare(wire::Prepare { view: 1, op: 3, commit: 2, batch: vec![request] }),
        Message::PrepareOk(wire::PrepareOk { view: 1, op: 3, replica: 2, gap: false }),
        Message::Commit(wire::Commit { view: 1, commit: 3 }),
        Message::StartViewChange(wire::StartViewChange { view: 2, replica: 1 }),
        Message::DoViewChange(DoViewChange {
            view,
            last_normal_view: 1,
            op,
            commit,
            replica: 1,
            state: blob(),
        }),
        Message::StartView(wire::StartView { view, op, commit, state: blob() }),
        Message::GetState(wire::GetState { view, op: 1, replica: 2 }),
        Message::NewState(NewState {
            view,
            op,
            commit,
            head: 4,
            kind: wire::NewStateKind::Page,
            state: blob(),
        }),
        Message::Recovery(wire::Recovery { nonce: 99, replica: 2 }),
        Message::RecoveryResponse(wire::RecoveryResponse {
            view,
            nonce: 99,
            op,
            commit,
            replica: 0,
            status: 1,
            state: blob(),
        }),
        Message::StatusRequest(wire::StatusRequest { nonce: 5 }),
        Message::StatusReply(wire::StatusReply {
            view: 2,
            nonce: 5,
            op: 3,
            commit: 2,
            digest: 0xfeed,
            status: 1,
            replica: 0,
            catching_up: false,
            waiting_for: None,
        }),
        Message::SnapshotRequest(wire::SnapshotRequest { view: 2, snapshot_op: 8, offset: 2048, replica: 1 }),
        Message::SnapshotChunk(wire::SnapshotChunk {
            view: 2,
            snapshot_op: 8,
            total_len: 3000,
            digest: 0xbeef,
            offset: 2048,
            replica: 0,
            data: vec![7; 3000 - 2048],
        }),
    ];
    let types: Vec<MsgType> = messages.iter().map(Message::msg_type).collect();
    assert_eq!(types, MsgType::ALL, "one sample per type, in type order");
    messages
}

/// `msg` encoded as exactly one datagram of `cluster_id`, from replica 1.
pub fn datagram(cluster_id: u32, msg: &Message) -> Vec<u8> {
    datagram_from(cluster_id, 1, 0, msg)
}

/// `msg` encoded by `sender` (a replica index or `wire::CLIENT_SENDER`)
/// with header `flags`, as exactly one datagram of `cluster_id`.
pub fn datagram_from(cluster_id: u32, sender: u8, flags: u8, msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    wire::Encoder::new(cluster_id, sender).encode_flags(msg, flags, &mut out).expect("the message encodes");
    assert_eq!(out.len(), 1, "{:?} should fit one datagram", msg.msg_type());
    out.remove(0)
}

/// The classifier's view of a datagram (rules of `bpf/parse.h`): (type,
/// sender, view, body) if it is a well-formed electrode datagram of
/// `cluster_id`.
pub fn classify(datagram: &[u8], cluster_id: u32) -> Option<(u8, u8, u64, &[u8])> {
    let field = |at: usize, len: usize| datagram.get(at..at + len);
    if datagram.len() < 24 || field(0, 4)? != wire::consts::MAGIC.to_be_bytes() {
        return None;
    }
    if datagram[4] != wire::consts::PROTOCOL_VERSION as u8 || field(8, 4)? != cluster_id.to_be_bytes() {
        return None;
    }
    let msg_type = datagram[5];
    let body_len = usize::from(u16::from_be_bytes([datagram[12], datagram[13]]));
    if msg_type == 0 || u32::from(msg_type) > wire::consts::MSG_TYPE_MAX || 24 + body_len != datagram.len() {
        return None;
    }
    let msg = MsgType::ALL.iter().find(|t| **t as u8 == msg_type)?;
    if body_len < msg.body_min() {
        return None;
    }
    let view = u64::from_be_bytes(field(16, 8)?.try_into().ok()?);
    Some((msg_type, datagram[6], view, &datagram[24..]))
}
