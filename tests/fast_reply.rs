//! fast_reply fixtures (root): the follower XDP path on crafted frames with
//! BPF_PROG_TEST_RUN (repeat = 1: a repeated run would see the rewritten
//! frame, docs/PLATFORM.md gotcha 3).
//!
//! Each test loads its own object, so its maps and counters are its own. The
//! expected PrepareOK frames are built here byte by byte, and checksums are
//! verified by summing, independently of the kernel's code.
#![cfg(feature = "fast_reply")]

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use electrode::fastpath::{xdp_action, Counters, FollowerPath, Loaded};
use electrode::wire::{self, consts, Decoded, Message, MsgType};

/// The leader sends from A (common::IP_A) on this port; we are B.
const LEADER_PORT: u16 = 7446;
const LEADER_INDEX: u8 = 0;
const SELF_INDEX: u8 = 2;
const VIEW: u64 = 5;

/// Loaded, with the replica address table written (as the runtime does
/// before it arms anything): replica 0 (the leader) and 1 send from A, on
/// their own ports; we (2) are B.
fn load() -> Loaded {
    load_with_members(&[leader(), replica_1(), SocketAddrV4::new(Ipv4Addr::from(IP_B), PORT)])
}

fn leader() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(IP_A), LEADER_PORT)
}

/// Replica 1, the leader of view VIEW + 1 in some tests.
fn replica_1() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(IP_A), LEADER_PORT + 10)
}

fn arm(path: &FollowerPath<'_>, view: u64, next_op: u64) {
    path.arm_follower(view, next_op, leader(), LEADER_INDEX, SELF_INDEX).expect("arm fast reply");
}

/// The follower path of `loaded`, armed in VIEW at `next_op`.
fn armed(loaded: &Loaded, next_op: u64) -> FollowerPath<'_> {
    let path = loaded.follower_path().expect("follower path");
    arm(&path, VIEW, next_op);
    path
}

/// A Prepare of `view` and `op` with one small request, from `sender`.
fn prepare(view: u64, op: u64) -> wire::Prepare {
    let request = wire::Request { client_id: 9, request_number: op, op: format!("put k{op} v").into_bytes() };
    wire::Prepare { view, op, commit: op - 1, batch: vec![request] }
}

fn prepare_datagram(sender: u8, prepare: &wire::Prepare) -> Vec<u8> {
    datagram_from(CLUSTER_ID, sender, 0, &Message::Prepare(prepare.clone()))
}

/// The frame the leader sends: A:LEADER_PORT -> B:PORT.
fn frame_of(datagram: &[u8]) -> Vec<u8> {
    udp4_frame_with(Ipv4Shape::default(), LEADER_PORT, PORT, datagram)
}

fn prepare_frame(view: u64, op: u64) -> Vec<u8> {
    frame_of(&prepare_datagram(LEADER_INDEX, &prepare(view, op)))
}

// ---------------------------------------------------------------------------
// Independent checksums and the expected PrepareOK
// ---------------------------------------------------------------------------

/// The PrepareOK B -> A acking `ack_op` in `view`, as the kernel must emit it.
fn expected_prepare_ok(view: u64, ack_op: u64) -> Vec<u8> {
    expected_prepare_ok_to(view, ack_op, LEADER_PORT)
}

/// The PrepareOK for a Prepare sent from IP_A port `leader_port`.
fn expected_prepare_ok_to(view: u64, ack_op: u64, leader_port: u16) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&consts::MAGIC.to_be_bytes());
    payload.push(consts::PROTOCOL_VERSION as u8);
    payload.push(consts::MSG_PREPARE_OK as u8);
    payload.push(SELF_INDEX);
    payload.push(0); // flags
    payload.extend_from_slice(&CLUSTER_ID.to_be_bytes());
    payload.extend_from_slice(&16u16.to_be_bytes()); // body_len
    payload.extend_from_slice(&[0, 0]);
    payload.extend_from_slice(&view.to_be_bytes());
    payload.extend_from_slice(&ack_op.to_be_bytes());
    payload.push(SELF_INDEX);
    payload.extend_from_slice(&[0; 7]);
    assert_eq!(payload.len(), 40);
    // The same bytes as user space would send (cross-check of the layout).
    let ok = Message::PrepareOk(wire::PrepareOk { view, op: ack_op, replica: SELF_INDEX, gap: false });
    assert_eq!(
        datagram_from(CLUSTER_ID, SELF_INDEX, 0, &ok),
        payload,
        "hand-built PrepareOK equals wire::Encoder's"
    );

    // Back to the sender; IP id and DF of the Prepare kept.
    let frame = Udp4 {
        src_mac: MAC_B,
        dst_mac: MAC_A,
        src: SocketAddrV4::new(Ipv4Addr::from(IP_B), PORT),
        dst: SocketAddrV4::new(Ipv4Addr::from(IP_A), leader_port),
        udp_check: UdpCheck::Full,
        ..Udp4::new(leader_port, &payload)
    };
    frame.bytes()
}

/// Checksums of an emitted frame verify the way a receiver checks them: the
/// sum over the covered bytes, checksum included, is 0xffff.
#[track_caller]
fn assert_checksums_valid(frame: &[u8]) {
    assert!(ip_checksum_valid(frame), "IPv4 header checksum");
    assert!(udp_checksum_present_and_valid(frame), "UDP checksum must be present and verify");
}

// ---------------------------------------------------------------------------
// Running frames
// ---------------------------------------------------------------------------

fn one_prepare() -> Counters {
    let mut counters = Counters::default();
    *counters.messages_mut(MsgType::Prepare) = 1;
    counters
}

/// Runs `frame`; it must be answered by XDP_TX with exactly `expected`, and
/// the counters must move by `counted`.
#[track_caller]
fn expect_tx(loaded: &Loaded, what: &str, frame: &[u8], expected: &[u8], counted: Counters) {
    let (verdict, out, delta) = xdp_run(loaded, frame);
    assert_eq!(verdict, xdp_action::TX, "{what}: verdict");
    assert_eq!(out, expected, "{what}: PrepareOK bytes");
    assert_checksums_valid(&out);
    assert_eq!(delta, counted, "{what}: counter deltas");
}

/// Runs `frame`; it must pass unchanged, counters moving by `counted`.
#[track_caller]
fn expect_pass(loaded: &Loaded, what: &str, frame: &[u8], counted: Counters) {
    expect_unchanged(loaded, what, frame, xdp_action::PASS, counted);
}

#[track_caller]
fn assert_state(path: &FollowerPath<'_>, armed: bool, view: u64, next_op: u64) {
    let state = path.follower_state().expect("read follower_state");
    assert_eq!((state.armed, state.view, state.next_op), (armed, view, next_op), "follower_state");
}

#[track_caller]
fn assert_state_from(path: &FollowerPath<'_>, armed: bool, view: u64, next_op: u64, from: SocketAddrV4) {
    let state = path.follower_state().expect("read follower_state");
    assert_eq!((state.armed, state.view, state.next_op), (armed, view, next_op), "follower_state");
    assert_eq!(state.leader, from, "follower_state leader address");
}

#[track_caller]
fn assert_ring_empty(path: &mut FollowerPath<'_>) {
    assert_eq!(path.drain_datagrams(usize::MAX).expect("drain"), Vec::<Vec<u8>>::new(), "ring");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn in_order_prepare_becomes_the_exact_prepare_ok_and_one_ring_record() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 10);
    assert_state(&path, true, VIEW, 10);
    let sent = prepare(VIEW, 10);
    let datagram = prepare_datagram(LEADER_INDEX, &sent);
    let counted = Counters { fast_reply_tx: 1, ..one_prepare() };
    expect_tx(&loaded, "op 10", &frame_of(&datagram), &expected_prepare_ok(VIEW, 10), counted);
    assert_state(&path, true, VIEW, 11);
    assert_eq!(path.drain_datagrams(usize::MAX).expect("drain"), vec![datagram], "one ring record");
    assert_ring_empty(&mut path);

    // The next one, through the decoding drain.
    let counted = Counters { fast_reply_tx: 1, ..one_prepare() };
    expect_tx(&loaded, "op 11", &prepare_frame(VIEW, 11), &expected_prepare_ok(VIEW, 11), counted);
    assert_state(&path, true, VIEW, 12);
    assert_eq!(path.drain_prepares(usize::MAX).expect("drain"), vec![prepare(VIEW, 11)]);
    assert_eq!(path.undecodable(), 0);
}

#[test]
fn largest_prepare_is_recorded_whole_and_answered() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 1);
    let largest = largest_prepare(VIEW, 1);
    let datagram = prepare_datagram(LEADER_INDEX, &largest);
    assert_eq!(datagram.len(), wire::MAX_DATAGRAM_LEN);
    let counted = Counters { fast_reply_tx: 1, ..one_prepare() };
    expect_tx(&loaded, "1472-byte Prepare", &frame_of(&datagram), &expected_prepare_ok(VIEW, 1), counted);
    assert_eq!(path.drain_prepares(usize::MAX).expect("drain"), vec![largest]);
}

/// A Prepare of exactly ELECTRODE_MAX_DATAGRAM bytes: two requests, the
/// first with a maximal op, the second filling the rest.
fn largest_prepare(view: u64, op: u64) -> wire::Prepare {
    let entry = 24; // struct electrode_request
    let first = wire::Request { client_id: 1, request_number: op, op: vec![b'a'; wire::MAX_OP_LEN] };
    let rest = wire::MAX_PREPARE_BATCH_LEN - (entry + wire::MAX_OP_LEN) - entry;
    let second = wire::Request { client_id: 2, request_number: op, op: vec![b'b'; rest] };
    wire::Prepare { view, op, commit: op - 1, batch: vec![first, second] }
}

#[test]
fn duplicate_is_reacked_cumulatively_without_a_ring_record() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 10);
    let tx = Counters { fast_reply_tx: 1, ..one_prepare() };
    expect_tx(&loaded, "op 10", &prepare_frame(VIEW, 10), &expected_prepare_ok(VIEW, 10), tx.clone());
    expect_tx(&loaded, "op 11", &prepare_frame(VIEW, 11), &expected_prepare_ok(VIEW, 11), tx);
    assert_eq!(path.drain_prepares(usize::MAX).expect("drain").len(), 2);

    // A retransmit of 10 (our ack was lost) and one of an op acked long
    // before this arming: both answered with the cumulative ack 11.
    let reack = Counters { reack_tx: 1, ..one_prepare() };
    for op in [10, 3] {
        let what = format!("retransmitted op {op}");
        expect_tx(&loaded, &what, &prepare_frame(VIEW, op), &expected_prepare_ok(VIEW, 11), reack.clone());
        assert_state(&path, true, VIEW, 12);
        assert_ring_empty(&mut path);
    }
}

#[test]
fn gap_passes_and_is_counted() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 10);
    let gap = Counters { pass_gap: 1, ..one_prepare() };
    for op in [11, 12, u64::MAX] {
        expect_pass(&loaded, &format!("op {op} with next_op 10"), &prepare_frame(VIEW, op), gap.clone());
        assert_state(&path, true, VIEW, 10);
        assert_ring_empty(&mut path);
    }
}

#[test]
fn other_view_passes_and_is_counted() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 10);
    let other_view = Counters { pass_view: 1, ..one_prepare() };
    for view in [VIEW - 1, VIEW + 1] {
        for op in [9, 10] {
            let what = format!("view {view} op {op}");
            expect_pass(&loaded, &what, &prepare_frame(view, op), other_view.clone());
            assert_state(&path, true, VIEW, 10);
            assert_ring_empty(&mut path);
        }
    }
}

#[test]
fn disarmed_passes_and_is_counted() {
    require_root!();
    let loaded = load();
    let mut path = loaded.follower_path().expect("follower path");
    let disarmed = Counters { pass_disarmed: 1, ..one_prepare() };
    expect_pass(&loaded, "never armed", &prepare_frame(VIEW, 1), disarmed.clone());
    assert_state(&path, false, 0, 0);

    arm(&path, VIEW, 1);
    path.disarm_follower().expect("disarm");
    assert_state(&path, false, VIEW, 1);
    for op in [0, 1, 2] {
        expect_pass(
            &loaded,
            &format!("disarmed, op {op}"),
            &prepare_frame(VIEW, op.max(1)),
            disarmed.clone(),
        );
    }
    assert_state(&path, false, VIEW, 1);
    assert_ring_empty(&mut path);
}

#[test]
fn prepare_not_from_the_leader_passes_and_is_counted() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 10);
    let not_leader = Counters { pass_not_leader: 1, ..one_prepare() };
    let datagram = prepare_datagram(LEADER_INDEX, &prepare(VIEW, 10));

    let other_port = udp4_frame_with(Ipv4Shape::default(), LEADER_PORT + 1, PORT, &datagram);
    expect_pass(&loaded, "other source port", &other_port, not_leader.clone());

    // Source address 10.200.1.3 (the program does not check the IPv4
    // checksum, so the header is patched without recomputing it).
    let mut other_ip = frame_of(&datagram);
    other_ip[ETH_LEN + 15] = 3;
    expect_pass(&loaded, "other source IP", &other_ip, not_leader.clone());

    let other_sender = frame_of(&prepare_datagram(1, &prepare(VIEW, 10)));
    expect_pass(&loaded, "other sender index", &other_sender, not_leader);

    assert_state(&path, true, VIEW, 10);
    assert_ring_empty(&mut path);
}

#[test]
fn ip_options_pass_and_are_counted() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 10);
    let shape = Ipv4Shape { options_len: 8, ..Ipv4Shape::default() };
    let frame =
        udp4_frame_with(shape, LEADER_PORT, PORT, &prepare_datagram(LEADER_INDEX, &prepare(VIEW, 10)));
    expect_pass(&loaded, "8 bytes of IP options", &frame, Counters { pass_ip_options: 1, ..one_prepare() });
    assert_state(&path, true, VIEW, 10);
    assert_ring_empty(&mut path);
}

#[test]
fn truncation_at_every_header_and_body_boundary_passes_and_is_counted() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 10);
    let frame = prepare_frame(VIEW, 10);
    let foreign = Counters { foreign: 1, ..Counters::default() };
    let malformed = Counters { malformed: 1, ..Counters::default() };
    let body = HDR_OFF + ELECTRODE_HDR_LEN;
    let cases = [
        ("end of Ethernet header", ETH_LEN, &foreign),
        ("inside IPv4 header", ETH_LEN + IPV4_LEN / 2, &foreign),
        ("end of IPv4 header", ETH_LEN + IPV4_LEN, &foreign),
        ("inside UDP header", ETH_LEN + IPV4_LEN + UDP_LEN / 2, &foreign),
        ("end of UDP header", HDR_OFF, &malformed),
        ("inside electrode header", HDR_OFF + ELECTRODE_HDR_LEN / 2, &malformed),
        ("end of electrode header", body, &malformed),
        ("inside Prepare fixed part (after op)", body + 8, &malformed),
        ("end of Prepare fixed part", body + 24, &malformed),
        ("inside request entry", body + 24 + 12, &malformed),
        ("end of request entry", body + 48, &malformed),
        ("last byte of body missing", frame.len() - 1, &malformed),
    ];
    for (what, len, counted) in cases {
        expect_pass(&loaded, what, &frame[..len], counted.clone());
    }

    // Frame, IP, UDP and body_len all agree, but the body is shorter than
    // the fixed part of a Prepare: malformed, never read by the fast path.
    let datagram = prepare_datagram(LEADER_INDEX, &prepare(VIEW, 10));
    for body_len in [0, 8, 23] {
        let mut short = datagram[..ELECTRODE_HDR_LEN + body_len].to_vec();
        short[12..14].copy_from_slice(&(body_len as u16).to_be_bytes());
        let what = format!("consistent {body_len}-byte Prepare body");
        expect_pass(&loaded, &what, &frame_of(&short), malformed.clone());
    }
    assert_state(&path, true, VIEW, 10);
    assert_ring_empty(&mut path);
}

#[test]
fn full_ring_buffer_passes_and_is_counted_until_drained() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 1);
    // Each record takes sizeof(electrode_prepare_record) + the ring's 8-byte
    // header, rounded to 8.
    let record_bytes = (4 + 4 + wire::MAX_DATAGRAM_LEN + 8).next_multiple_of(8);
    let capacity = consts::RINGBUF_BYTES as usize / record_bytes;
    assert!(capacity >= 2 * consts::PIPELINE_MAX as usize, "room for two pipelines");

    let tx = Counters { fast_reply_tx: 1, ..one_prepare() };
    let mut sent = Vec::new();
    let mut op = 1;
    let full = loop {
        assert!(op <= 4 * capacity as u64, "the ring never filled after {op} Prepares");
        let largest = largest_prepare(VIEW, op);
        let frame = frame_of(&prepare_datagram(LEADER_INDEX, &largest));
        let before = loaded.counters().expect("read counters");
        let (verdict, _) = loaded.test_run_xdp(&frame).expect("BPF_PROG_TEST_RUN");
        let delta = loaded.counters().expect("read counters").since(&before);
        if verdict != xdp_action::TX {
            break (verdict, delta, frame);
        }
        assert_eq!(delta, tx, "op {op}: counter deltas");
        sent.push(largest);
        op += 1;
    };
    assert_eq!(sent.len(), capacity, "records that fit in ELECTRODE_RINGBUF_BYTES");
    let (verdict, delta, frame) = full;
    assert_eq!(verdict, xdp_action::PASS, "ring full: verdict");
    assert_eq!(delta, Counters { pass_ringbuf_full: 1, ..one_prepare() }, "ring full: counters");
    assert_state(&path, true, VIEW, op);
    expect_pass(&loaded, "still full", &frame, Counters { pass_ringbuf_full: 1, ..one_prepare() });

    // Draining frees the ring; nothing acked was lost, in op order.
    let first_half = path.drain_prepares(capacity / 2).expect("drain half");
    assert_eq!(first_half.len(), capacity / 2);
    let rest = path.drain_prepares(usize::MAX).expect("drain rest");
    let drained: Vec<wire::Prepare> = first_half.into_iter().chain(rest).collect();
    assert_eq!(drained, sent, "every acked Prepare, in order");
    expect_tx(&loaded, "after the drain", &frame, &expected_prepare_ok(VIEW, op), tx);
    assert_state(&path, true, VIEW, op + 1);
}

#[test]
fn arm_disarm_drain_rearm_keeps_next_op_continuous() {
    require_root!();
    let loaded = load();
    let mut path = loaded.follower_path().expect("follower path");
    assert!(loaded.follower_path().is_err(), "one ring consumer per loaded object");
    arm(&path, VIEW, 1);
    assert!(path.arm_follower(VIEW, 7, leader(), LEADER_INDEX, SELF_INDEX).is_err(), "armed: refused");
    assert!(path.arm_follower(VIEW + 1, 1, leader(), SELF_INDEX, SELF_INDEX).is_err(), "self as leader");

    let tx = Counters { fast_reply_tx: 1, ..one_prepare() };
    for op in 1..=3 {
        expect_tx(
            &loaded,
            &format!("op {op}"),
            &prepare_frame(VIEW, op),
            &expected_prepare_ok(VIEW, op),
            tx.clone(),
        );
    }
    // Op 1 is taken while armed (the periodic drain), 2 and 3 by the disarm.
    assert_eq!(path.drain_prepares(1).expect("drain"), vec![prepare(VIEW, 1)]);
    path.disarm_follower().expect("disarm");
    assert_state(&path, false, VIEW, 4);
    let disarmed = Counters { pass_disarmed: 1, ..one_prepare() };
    expect_pass(&loaded, "op 4 while disarmed", &prepare_frame(VIEW, 4), disarmed);
    assert!(
        path.arm_follower(VIEW + 1, 4, leader(), LEADER_INDEX, SELF_INDEX).is_err(),
        "re-arm refused while drained Prepares wait"
    );
    assert_eq!(path.drain_prepares(usize::MAX).expect("drain"), vec![prepare(VIEW, 2), prepare(VIEW, 3)]);

    // The new view's leader is replica 1, at its own address; next_op
    // continues from the log head (3).
    let view = VIEW + 1;
    path.arm_follower(view, 4, replica_1(), 1, SELF_INDEX).expect("re-arm");
    assert_state_from(&path, true, view, 4, replica_1());
    let not_leader = Counters { pass_not_leader: 1, ..one_prepare() };
    expect_pass(&loaded, "old leader index", &prepare_frame(view, 4), not_leader.clone());
    let datagram = prepare_datagram(1, &prepare(view, 4));
    expect_pass(&loaded, "new leader index, old leader's address", &frame_of(&datagram), not_leader);
    let frame = udp4_frame_with(Ipv4Shape::default(), replica_1().port(), PORT, &datagram);
    let ok = expected_prepare_ok_to(view, 4, replica_1().port());
    expect_tx(&loaded, "op 4 in the new view", &frame, &ok, tx);
    assert_state_from(&path, true, view, 5, replica_1());
    assert_eq!(path.drain_prepares(usize::MAX).expect("drain"), vec![prepare(view, 4)]);

    // Disarming an idle path leaves next_op as it was.
    path.disarm_follower().expect("disarm");
    path.disarm_follower().expect("disarm twice");
    assert_state_from(&path, false, view, 5, replica_1());
    assert_ring_empty(&mut path);
    drop(path);
    let path = loaded.follower_path().expect("a new consumer after the first is dropped");
    assert_state_from(&path, false, view, 5, replica_1());
}

#[test]
fn other_messages_still_pass_while_armed() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 3);
    for msg in sample_messages() {
        if msg.msg_type() == MsgType::Prepare {
            continue;
        }
        let frame = udp4_frame_with(Ipv4Shape::default(), LEADER_PORT, PORT, &datagram(CLUSTER_ID, &msg));
        let mut counted = Counters::default();
        *counted.messages_mut(msg.msg_type()) = 1;
        // Built with fast_quorum_prune too, a PrepareOK meets that
        // (unarmed) path and passes as disarmed there.
        if cfg!(feature = "fast_quorum_prune") && msg.msg_type() == MsgType::PrepareOk {
            counted.quorum_prune.pass_disarmed = 1;
        }
        // With fast_intake, a Request meets that (unarmed) path.
        if cfg!(feature = "fast_intake") && msg.msg_type() == MsgType::Request {
            counted.intake.pass_disarmed = 1;
        }
        expect_pass(&loaded, msg.msg_type().name(), &frame, counted);
    }
    assert_state(&path, true, VIEW, 3);
    assert_ring_empty(&mut path);
}

// ---------------------------------------------------------------------------
// Differential: kernel path vs user space only
// ---------------------------------------------------------------------------

/// A follower core (replica SELF_INDEX of 3) booted into view 0, normal.
fn booted_follower(kernel_fast_reply: bool) -> (electrode::vr::Replica, Vec<electrode::vr::Action>) {
    let mut config = electrode::vr::Config::new(3, SELF_INDEX);
    config.kernel_fast_reply = kernel_fast_reply;
    booted_core(config)
}

/// Runs the core's kernel actions against the map, as the runtime does.
fn run_kernel_actions(
    core: &mut electrode::vr::Replica,
    path: &mut FollowerPath<'_>,
    mut actions: Vec<electrode::vr::Action>,
) {
    use electrode::vr::Action;
    for _round in 0..16 {
        let mut more = Vec::new();
        for action in actions.drain(..) {
            match action {
                Action::KernelArm(arm) => {
                    path.arm_follower(arm.view, arm.next_op, leader(), arm.leader, SELF_INDEX).expect("arm")
                }
                Action::KernelDisarm => {
                    path.disarm_follower().expect("disarm");
                    let acked = path.drain_prepares(usize::MAX).expect("drain");
                    core.on_kernel_disarmed(acked, &mut more);
                }
                Action::Send { .. } | Action::SendAll { .. } | Action::Reply { .. } => {}
            }
        }
        if more.is_empty() {
            return;
        }
        actions = more;
    }
    panic!("kernel actions did not settle");
}

#[test]
fn kernel_path_and_user_space_end_with_identical_logs_and_commit() {
    require_root!();
    // One recorded trace of the leader's Prepares (view 0): in order, a
    // duplicate, a swapped pair, and an op held back behind five others.
    const OPS: u64 = 60;
    let mut trace: Vec<u64> = Vec::new();
    for op in 1..=OPS {
        match op {
            30 => trace.extend([31, 30]),
            31 => {}
            45 => {}
            51 => trace.extend([45, 51]),
            _ => trace.push(op),
        }
        if op == 10 {
            trace.push(10);
        }
    }
    let prepares: Vec<wire::Prepare> = trace.iter().map(|op| prepare(0, *op)).collect();

    // Through the kernel: XDP first; what it passes goes to the core.
    let loaded = load();
    let mut path = loaded.follower_path().expect("follower path");
    let (mut kernel_core, actions) = booted_follower(true);
    run_kernel_actions(&mut kernel_core, &mut path, actions);
    assert!(path.follower_state().expect("state").armed, "the booted follower armed the kernel");
    let (mut tx, mut passed) = (0, 0);
    for prepare in &prepares {
        let frame = frame_of(&prepare_datagram(LEADER_INDEX, prepare));
        let (verdict, _) = loaded.test_run_xdp(&frame).expect("test_run");
        let mut out = Vec::new();
        // The runtime drains the ring before every input.
        let acked = path.drain_prepares(usize::MAX).expect("drain");
        kernel_core.on_kernel_prepares(acked, &mut out);
        if verdict == xdp_action::TX {
            tx += 1;
        } else {
            assert_eq!(verdict, xdp_action::PASS);
            passed += 1;
            kernel_core.on_message(LEADER_INDEX, Message::Prepare(prepare.clone()), &mut out);
        }
        run_kernel_actions(&mut kernel_core, &mut path, out);
    }
    let mut out = Vec::new();
    let acked = path.drain_prepares(usize::MAX).expect("drain");
    kernel_core.on_kernel_prepares(acked, &mut out);
    run_kernel_actions(&mut kernel_core, &mut path, out);

    // Through user space only.
    let (mut user_core, _) = booted_follower(false);
    for prepare in &prepares {
        user_core.on_message(LEADER_INDEX, Message::Prepare(prepare.clone()), &mut Vec::new());
    }

    // The leader's commit reaches both.
    let commit = Message::Commit(wire::Commit { view: 0, commit: OPS });
    let mut out = Vec::new();
    kernel_core.on_message(LEADER_INDEX, commit.clone(), &mut out);
    run_kernel_actions(&mut kernel_core, &mut path, out);
    user_core.on_message(LEADER_INDEX, commit, &mut Vec::new());

    assert!(tx >= 50, "only {tx} of {} Prepares took the kernel path ({passed} passed)", prepares.len());
    assert!(passed >= 3, "the gap, swap and hold-back should reach user space ({passed} passed)");
    assert_eq!(kernel_core.op(), OPS);
    assert_eq!(user_core.op(), OPS);
    assert_eq!(kernel_core.commit(), OPS);
    assert_eq!(user_core.commit(), OPS);
    assert_eq!(kernel_core.digest(), user_core.digest());
    for op in 1..=OPS {
        assert_eq!(kernel_core.committed_entry(op), user_core.committed_entry(op), "log entry {op} differs");
        assert!(kernel_core.committed_entry(op).is_some(), "entry {op} missing");
    }
}

/// The membership rule (issue 12): the leader's id is believed only from
/// the address table's entry for it, whatever address the follower path was
/// armed with; the same Prepare from the table's address is acked.
#[test]
fn prepare_from_an_armed_address_that_is_not_the_leaders_configured_one_passes() {
    require_root!();
    let loaded = load();
    let mut path = loaded.follower_path().expect("follower path");
    let elsewhere = SocketAddrV4::new(Ipv4Addr::from(IP_A), LEADER_PORT + 20);
    path.arm_follower(VIEW, 10, elsewhere, LEADER_INDEX, SELF_INDEX).expect("arm");
    let datagram = prepare_datagram(LEADER_INDEX, &prepare(VIEW, 10));
    let frame = udp4_frame_with(Ipv4Shape::default(), elsewhere.port(), PORT, &datagram);
    let not_leader = Counters { pass_not_leader: 1, ..one_prepare() };
    expect_pass(&loaded, "armed address, not the configured one", &frame, not_leader);
    assert_state(&path, true, VIEW, 10);
    assert_ring_empty(&mut path);

    path.disarm_follower().expect("disarm");
    arm(&path, VIEW, 10);
    let tx = Counters { fast_reply_tx: 1, ..one_prepare() };
    expect_tx(&loaded, "configured address", &prepare_frame(VIEW, 10), &expected_prepare_ok(VIEW, 10), tx);
    assert_state(&path, true, VIEW, 11);
}

// ---------------------------------------------------------------------------
// Issue 12: the kernel acks only what user space can log
// ---------------------------------------------------------------------------

/// Offsets in an electrode datagram (header, then struct electrode_prepare,
/// then the first struct electrode_request).
const BODY_LEN_OFF: usize = 12;
const REQUEST_COUNT_OFF: usize = 24 + 16;
const BATCH_LEN_OFF: usize = 24 + 18;
const FIRST_OP_LEN_OFF: usize = 48 + 16;

fn put_u16(datagram: &mut [u8], offset: usize, value: u16) {
    datagram[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

fn get_u16(datagram: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([datagram[offset], datagram[offset + 1]])
}

/// `datagram` with `extra` bytes appended and body_len matching, so the
/// header and UDP lengths stay consistent.
fn grown(mut datagram: Vec<u8>, extra: usize) -> Vec<u8> {
    datagram.resize(datagram.len() + extra, b'z');
    let body_len = (datagram.len() - 24) as u16;
    put_u16(&mut datagram, BODY_LEN_OFF, body_len);
    datagram
}

/// A Prepare of two requests ("put k v" and a 5-byte op).
fn two_request_prepare(view: u64, op: u64) -> wire::Prepare {
    let mut prepare = prepare(view, op);
    prepare.batch.push(wire::Request { client_id: 10, request_number: 1, op: b"get k".to_vec() });
    prepare
}

#[test]
fn prepare_whose_body_user_space_cannot_decode_is_passed_not_acked() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 10);
    let one = prepare_datagram(LEADER_INDEX, &prepare(VIEW, 10));
    let two = prepare_datagram(LEADER_INDEX, &two_request_prepare(VIEW, 10));
    let batch_len = get_u16(&one, BATCH_LEN_OFF);
    let op_len = get_u16(&one, FIRST_OP_LEN_OFF);

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut patch = |what: &'static str, base: &[u8], offset: usize, value: u16| {
        let mut datagram = base.to_vec();
        put_u16(&mut datagram, offset, value);
        cases.push((what, datagram));
    };
    patch("batch_len one short of the body", &one, BATCH_LEN_OFF, batch_len - 1);
    patch("batch_len one beyond the body", &one, BATCH_LEN_OFF, batch_len + 1);
    patch("batch_len 0", &one, BATCH_LEN_OFF, 0);
    patch("batch_len 65535", &one, BATCH_LEN_OFF, u16::MAX);
    patch("request_count 0", &one, REQUEST_COUNT_OFF, 0);
    patch("request_count 2 for one request", &one, REQUEST_COUNT_OFF, 2);
    patch("request_count 1 for two requests", &two, REQUEST_COUNT_OFF, 1);
    patch("request_count 33 (over MAX_BATCH)", &one, REQUEST_COUNT_OFF, 33);
    patch("request_count 65535", &one, REQUEST_COUNT_OFF, u16::MAX);
    patch("op_len one beyond the batch", &one, FIRST_OP_LEN_OFF, op_len + 1);
    patch("op_len one short of the batch", &one, FIRST_OP_LEN_OFF, op_len - 1);
    patch("op_len 65535", &one, FIRST_OP_LEN_OFF, u16::MAX);
    // Batch and body grown together by one byte the requests do not cover.
    let mut tail = grown(one.clone(), 1);
    put_u16(&mut tail, BATCH_LEN_OFF, batch_len + 1);
    cases.push(("a byte after the last request", tail));
    // One request of MAX_OP_SIZE + 1 bytes, every length consistent.
    let max_op = wire::Request { client_id: 1, request_number: 1, op: vec![b'x'; wire::MAX_OP_LEN] };
    let mut over =
        prepare_datagram(LEADER_INDEX, &wire::Prepare { batch: vec![max_op], ..prepare(VIEW, 10) });
    over = grown(over, 1);
    let over_batch = get_u16(&over, BATCH_LEN_OFF) + 1;
    put_u16(&mut over, BATCH_LEN_OFF, over_batch);
    put_u16(&mut over, FIRST_OP_LEN_OFF, wire::MAX_OP_LEN as u16 + 1);
    cases.push(("op_len MAX_OP_SIZE + 1", over));

    let bad_batch = Counters { pass_bad_batch: 1, ..one_prepare() };
    for (what, datagram) in &cases {
        assert!(wire::decode(datagram, CLUSTER_ID).is_err(), "{what}: user space must refuse it too");
        expect_pass(&loaded, what, &frame_of(datagram), bad_batch.clone());
        assert_state(&path, true, VIEW, 10);
        assert_ring_empty(&mut path);
    }
    // A retransmission of an acked op with a broken body is not re-acked either.
    let tx = Counters { fast_reply_tx: 1, ..one_prepare() };
    expect_tx(&loaded, "valid op 10", &frame_of(&one), &expected_prepare_ok(VIEW, 10), tx.clone());
    let mut broken = one.clone();
    put_u16(&mut broken, REQUEST_COUNT_OFF, 0);
    expect_pass(&loaded, "broken retransmission", &frame_of(&broken), bad_batch);
    let eleven = prepare_datagram(LEADER_INDEX, &two_request_prepare(VIEW, 11));
    expect_tx(&loaded, "valid two-request op 11", &frame_of(&eleven), &expected_prepare_ok(VIEW, 11), tx);
    assert_eq!(
        path.drain_prepares(usize::MAX).expect("drain"),
        vec![prepare(VIEW, 10), two_request_prepare(VIEW, 11)]
    );
    assert_eq!(path.undecodable(), 0);
}

#[test]
fn largest_batch_of_max_batch_requests_is_acked() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 1);
    // 32 requests of 20 bytes (32 x 44 = 1408 of 1424 batch bytes), then
    // an odd total length (one op one byte shorter) for the checksum's tail.
    let full: Vec<wire::Request> = (0..consts::MAX_BATCH as u64)
        .map(|i| wire::Request { client_id: i, request_number: 1, op: vec![b'o'; 20] })
        .collect();
    let mut odd = full.clone();
    odd[31].op.pop();
    let tx = Counters { fast_reply_tx: 1, ..one_prepare() };
    let mut sent = Vec::new();
    for (op, batch) in [(1, full), (2, odd)] {
        let prepare = wire::Prepare { view: VIEW, op, commit: 0, batch };
        let datagram = prepare_datagram(LEADER_INDEX, &prepare);
        let frame = with_udp_check(frame_of(&datagram), UdpCheck::Full);
        expect_tx(
            &loaded,
            &format!("32 requests, op {op}"),
            &frame,
            &expected_prepare_ok(VIEW, op),
            tx.clone(),
        );
        sent.push(prepare);
    }
    assert_eq!(path.drain_prepares(usize::MAX).expect("drain"), sent);
}

#[test]
fn prepare_with_a_full_udp_checksum_that_does_not_verify_is_passed_not_acked() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded, 10);
    let good = with_udp_check(prepare_frame(VIEW, 10), UdpCheck::Full);
    // One bit of the batch flipped after the checksum was computed: every
    // length still right, so only the checksum can tell.
    let last = good.len() - 1;
    let mut flipped = good.clone();
    flipped[last] ^= 0x01;
    let bad_checksum = Counters { pass_bad_checksum: 1, ..one_prepare() };
    expect_pass(&loaded, "batch bit flipped", &flipped, bad_checksum.clone());
    let mut flipped_op = good.clone();
    flipped_op[ETH_LEN + IPV4_LEN + UDP_LEN + 24 + 7] ^= 0x01; // op 10 -> 11
    expect_pass(&loaded, "op bit flipped", &flipped_op, Counters { pass_gap: 1, ..one_prepare() });
    assert_state(&path, true, VIEW, 10);
    assert_ring_empty(&mut path);

    let tx = Counters { fast_reply_tx: 1, ..one_prepare() };
    expect_tx(&loaded, "full checksum that verifies", &good, &expected_prepare_ok(VIEW, 10), tx.clone());
    let partial = with_udp_check(prepare_frame(VIEW, 11), UdpCheck::Partial);
    expect_tx(&loaded, "CHECKSUM_PARTIAL from a local socket", &partial, &expected_prepare_ok(VIEW, 11), tx);
    assert_eq!(path.drain_prepares(usize::MAX).expect("drain"), vec![prepare(VIEW, 10), prepare(VIEW, 11)]);
}

/// Issue 12: drain_prepares used to skip an undecodable record, and the next
/// valid one tripped the core's `assert_eq!(prepare.op, self.op + 1)`. The
/// drain now hands the core only the contiguous prefix, which it appends
/// without a gap, and records the fault the runtime then exits on.
#[test]
fn an_unloggable_record_stops_the_prefix_so_the_core_never_sees_a_gap() {
    let (mut core, _) = booted_follower(true);
    let mut out = Vec::new();
    // The core armed the kernel at op 1 of view 0; records for ops 1..=3,
    // the second with a request count of 0.
    let mut records: Vec<Vec<u8>> =
        (1..=3).map(|op| prepare_datagram(LEADER_INDEX, &prepare(0, op))).collect();
    records[1][24 + 16..24 + 18].copy_from_slice(&0u16.to_be_bytes());
    let (prefix, expected, fault) =
        electrode::fastpath::follower::log_prefix(records, CLUSTER_ID, Some((0, 1)));
    assert_eq!(prefix, vec![prepare(0, 1)]);
    assert_eq!(expected, Some((0, 2)));
    assert!(fault.expect("a fault").contains("record 1 does not decode"));
    core.on_kernel_prepares(prefix, &mut out);
    assert_eq!(core.op(), 1, "the prefix is in the log, nothing after it");
}

/// Issue 12, extreme numbers: with next_op at 2^64 - 1 an in-order Prepare
/// would set next_op = op + 1 = 0, after which op 0 would be acked as in
/// order. The kernel passes op u64::MAX instead, and views near the top are
/// compared, never added to.
#[test]
fn ops_and_views_near_u64_max_never_wrap_into_an_ack() {
    require_root!();
    let loaded = load();
    let mut path = loaded.follower_path().expect("follower path");
    let top = u64::MAX;
    arm(&path, top, top - 1);
    let tx = Counters { fast_reply_tx: 1, ..one_prepare() };
    expect_tx(&loaded, "op 2^64 - 2", &prepare_frame(top, top - 1), &expected_prepare_ok(top, top - 1), tx);
    assert_state(&path, true, top, top);
    let limit = Counters { pass_op_limit: 1, ..one_prepare() };
    expect_pass(&loaded, "op 2^64 - 1", &prepare_frame(top, top), limit.clone());
    assert_state(&path, true, top, top);
    expect_pass(&loaded, "op 2^64 - 1 again", &prepare_frame(top, top), limit);
    let reack = Counters { reack_tx: 1, ..one_prepare() };
    let zero = frame_of(&prepare_datagram(LEADER_INDEX, &wire::Prepare { commit: 0, ..prepare(top, 1) }));
    let mut zero_op = zero.clone();
    zero_op[HDR_OFF + 24..HDR_OFF + 32].copy_from_slice(&0u64.to_be_bytes()); // op 0
    expect_tx(&loaded, "op 0 is old news, not in order", &zero_op, &expected_prepare_ok(top, top - 1), reack);
    assert_state(&path, true, top, top);
    let view = Counters { pass_view: 1, ..one_prepare() };
    expect_pass(&loaded, "view 2^64 - 2", &prepare_frame(top - 1, top - 1), view);
    assert_eq!(path.drain_prepares(usize::MAX).expect("drain"), vec![prepare(top, top - 1)]);
    assert_eq!(path.fault(), None);
}

// ---------------------------------------------------------------------------
// Fuzz against a model (issue 12: next_op advances only on well-formed
// in-order Prepares from the leader's address)
// ---------------------------------------------------------------------------

#[test]
fn fuzzed_prepares_are_acked_only_when_user_space_can_log_them() {
    require_root!();
    let (seed, frames, mut rng) = fuzz_plan(0xfa57_4e91);
    let loaded = load();
    let mut path = loaded.follower_path().expect("follower path");
    let mut next_op = 1_000u64;
    arm(&path, VIEW, next_op);
    let (mut acked, mut reacked) = (0u64, 0u64);
    for n in 0..frames {
        let op = match rng.below(20) {
            0 => rng.next_u64(),
            1 => u64::MAX - rng.below(2),
            _ => next_op + rng.below(5) - 2,
        };
        let view = if rng.percent(95) { VIEW } else { [0, VIEW + 1, u64::MAX][rng.below(3) as usize] };
        let most = if rng.percent(10) { 32 } else { 3 };
        let requests = 1 + rng.below(most);
        let batch: Vec<wire::Request> = (0..requests)
            .map(|i| wire::Request {
                client_id: rng.next_u64(),
                request_number: i,
                op: vec![b'a' + (i % 26) as u8; rng.below(if requests > 3 { 20 } else { 200 }) as usize],
            })
            .collect();
        let prepare = wire::Prepare { view, op, commit: op.saturating_sub(1), batch };
        let sender = if rng.percent(95) { LEADER_INDEX } else { rng.below(4) as u8 };
        let mut datagram = prepare_datagram(sender, &prepare);
        let full_checksum = rng.percent(30);
        let partial_checksum = !full_checksum && rng.percent(30);
        let mutate = rng.percent(30);
        let mut mutations = Vec::new();
        if mutate && !full_checksum {
            for _ in 0..=rng.below(3) {
                mutations.push((rng.below(datagram.len() as u64) as usize, rng.next_u64() as u8));
            }
            for (at, value) in &mutations {
                datagram[*at] = *value;
            }
            if rng.percent(10) {
                datagram.truncate(rng.below(datagram.len() as u64) as usize);
            }
        }
        let source = match rng.below(20) {
            0 => replica_1(),
            1 => SocketAddrV4::new(Ipv4Addr::from(IP_A), rng.next_u64() as u16),
            _ => leader(),
        };
        let mut frame = udp4_frame_with(Ipv4Shape::default(), source.port(), PORT, &datagram);
        if full_checksum {
            frame = with_udp_check(frame, UdpCheck::Full);
            if mutate {
                // Corruption after the checksum was computed.
                let at = HDR_OFF + rng.below(datagram.len() as u64) as usize;
                frame[at] ^= 1 << rng.below(8);
                mutations.push((at - HDR_OFF, frame[at]));
            }
        } else if partial_checksum {
            frame = with_udp_check(frame, UdpCheck::Partial);
        }
        let sent = frame[HDR_OFF..].to_vec();

        // The model: the classifier, the leader rule, then what user space
        // can decode (wire::decode is the oracle), then the op.
        let decoded = match wire::decode(&sent, CLUSTER_ID) {
            Ok((_, Decoded::Message(Message::Prepare(p)))) => Some(p),
            _ => None,
        };
        let is_prepare = classify(&sent, CLUSTER_ID).is_some_and(|(t, ..)| t == MsgType::Prepare as u8);
        let sender_ok = sent.get(6) == Some(&LEADER_INDEX) && source == leader();
        let want = match (is_prepare, sender_ok, &decoded) {
            (true, true, Some(p)) if p.view == VIEW => {
                if p.op < next_op {
                    Some(next_op - 1)
                } else if p.op == next_op && p.op != u64::MAX && udp_checksum_acceptable(&frame) {
                    Some(p.op)
                } else {
                    None
                }
            }
            _ => None,
        };
        let (verdict, out) = loaded.test_run_xdp(&frame).expect("BPF_PROG_TEST_RUN");
        let context = format!("frame {n} (seed {seed}): op {op}, mutations {mutations:?}, from {source}");
        match want {
            Some(ack) => {
                assert_eq!(verdict, xdp_action::TX, "{context}: must be acked");
                assert_eq!(&out[HDR_OFF + 24..HDR_OFF + 32], &ack.to_be_bytes(), "{context}: acked op");
                if ack == next_op {
                    acked += 1;
                    next_op += 1;
                    let logged = path.drain_prepares(usize::MAX).expect("drain");
                    assert_eq!(logged, vec![decoded.clone().expect("decoded")], "{context}: logged");
                } else {
                    reacked += 1;
                }
            }
            None => {
                assert_eq!(verdict, xdp_action::PASS, "{context}: must not be acked");
            }
        }
        if n % 1009 == 0 {
            assert_state(&path, true, VIEW, next_op);
            assert_ring_empty(&mut path);
        }
    }
    assert_state(&path, true, VIEW, next_op);
    assert_eq!(path.fault(), None);
    assert!(acked > frames / 10 && reacked > frames / 20, "{acked} acked, {reacked} re-acked");
}
