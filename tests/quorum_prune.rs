//! fast_quorum_prune fixtures (root): `electrode_xdp` built with
//! -DFAST_QUORUM_PRUNE on crafted PrepareOKs with BPF_PROG_TEST_RUN.
//!
//! Every frame is checked three ways: the verdict, the exact counter deltas
//! (the classifier still counts each PrepareOK; the prune path adds one
//! verdict counter), and the quorum state user space reads back from the
//! maps. The rules under test are the table in the "fast_quorum_prune"
//! section of `bpf/electrode.h`. Each test loads its own object.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use electrode::fastpath::quorum::{LeaderState, WINDOW_OPS};
use electrode::fastpath::{xdp_action, Counters, Loaded, QuorumPruneCounters};
use electrode::wire::consts::PREPARE_OK_GAP;
use electrode::wire::{self, Message, MsgType};

const PASS: u32 = xdp_action::PASS;
const DROP: u32 = xdp_action::DROP;

/// Replica `r` sends from IP_A, port MEMBER_PORT_BASE + r (the membership
/// table below).
const MEMBER_PORT_BASE: u16 = 40000;

fn member(replica: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(IP_A), MEMBER_PORT_BASE + u16::from(replica))
}

/// Loaded, with the replica address table written (as the runtime does
/// before it arms anything).
fn load(replica_count: u32) -> Loaded {
    load_with_members(&(0..replica_count as u8).map(member).collect::<Vec<_>>())
}

/// The electrode datagram of a PrepareOK sent by `replica` (header sender
/// and body replica agree, as a real follower sends it).
fn ack_datagram(view: u64, op: u64, replica: u8) -> Vec<u8> {
    let msg = Message::PrepareOk(wire::PrepareOk { view, op, replica, gap: false });
    datagram_from(CLUSTER_ID, replica, 0, &msg)
}

/// A PrepareOK of `replica` from its configured address.
fn ack(view: u64, op: u64, replica: u8) -> Vec<u8> {
    from_member(replica, &ack_datagram(view, op, replica))
}

/// `datagram` sent from replica `replica`'s configured address.
fn from_member(replica: u8, datagram: &[u8]) -> Vec<u8> {
    sent_from(member(replica), datagram)
}

/// `datagram` sent from `source` to us (B:PORT).
fn sent_from(source: SocketAddrV4, datagram: &[u8]) -> Vec<u8> {
    Udp4 { src: source, ..Udp4::new(PORT, datagram) }.bytes()
}

/// One prune verdict counter set to 1.
fn one(field: fn(&mut QuorumPruneCounters) -> &mut u64) -> QuorumPruneCounters {
    let mut counters = QuorumPruneCounters::default();
    *field(&mut counters) = 1;
    counters
}

/// `pass_quorum()` and so on: that one prune verdict counter set to 1.
macro_rules! one_counter {
    ($($name:ident),*) => {
        $(fn $name() -> QuorumPruneCounters {
            one(|c| &mut c.$name)
        })*
    };
}

one_counter!(
    pass_quorum,
    pass_after_quorum,
    drop_below_quorum,
    drop_redundant,
    pass_window,
    pass_view,
    pass_disarmed,
    pass_not_member,
    drop_foreign_source
);

/// Runs a well-formed PrepareOK `frame`: the verdict must be `verdict`,
/// the frame unchanged, the classifier must count one PrepareOK and the
/// prune path exactly `prune`.
#[track_caller]
fn expect(loaded: &Loaded, what: &str, frame: &[u8], verdict: u32, prune: QuorumPruneCounters) {
    let mut expected = Counters { quorum_prune: prune, ..Counters::default() };
    *expected.messages_mut(MsgType::PrepareOk) = 1;
    expect_counts(loaded, what, frame, verdict, expected);
}

#[track_caller]
fn expect_counts(loaded: &Loaded, what: &str, frame: &[u8], verdict: u32, expected: Counters) {
    expect_unchanged(loaded, &format!("{what} (verdict 1 = DROP, 2 = PASS)"), frame, verdict, expected);
}

fn state(loaded: &Loaded) -> LeaderState {
    loaded.leader_state().expect("read qp_config and qp_state")
}

#[track_caller]
fn expect_acks(loaded: &Loaded, op: u64, expected: Option<u32>) {
    let got = loaded.quorum_acks(op).expect("read quorum acks");
    assert_eq!(got, expected, "ack bitmap of op {op}: got {got:?}, want {expected:?}");
}

/// Per-replica highest vouched op, padded to MAX_REPLICAS.
fn acked(prefix: &[u64]) -> [u64; 9] {
    let mut all = [0; 9];
    all[..prefix.len()].copy_from_slice(prefix);
    all
}

#[test]
fn f1_first_follower_ack_completes_the_quorum_and_the_second_is_dropped() {
    require_root!();
    let loaded = load(3);
    loaded.arm_leader(0, 1, 1, 3, 0).expect("arm");

    expect(&loaded, "op 1 from replica 1", &ack(0, 1, 1), PASS, pass_quorum());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (1, acked(&[0, 1, 0])));
    expect_acks(&loaded, 1, Some(0b010));

    expect(&loaded, "op 1 from replica 2 (late)", &ack(0, 1, 2), DROP, drop_redundant());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (1, acked(&[0, 1, 1])));
    expect_acks(&loaded, 1, Some(0b110));

    expect(&loaded, "op 2 from replica 2", &ack(0, 2, 2), PASS, pass_quorum());
    expect(&loaded, "op 2 from replica 1 (late)", &ack(0, 2, 1), DROP, drop_redundant());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (2, acked(&[0, 2, 2])));
    expect_acks(&loaded, 2, Some(0b110));
    expect_acks(&loaded, 3, Some(0));
}

#[test]
fn f2_second_follower_ack_completes_the_quorum_and_duplicates_are_dropped() {
    require_root!();
    let loaded = load(5);
    loaded.arm_leader(5, 1, 2, 5, 0).expect("arm");

    expect(&loaded, "op 1 from replica 1", &ack(5, 1, 1), DROP, drop_below_quorum());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (0, acked(&[0, 1])));
    expect_acks(&loaded, 1, Some(0b0_0010));

    expect(&loaded, "op 1 from replica 1 again", &ack(5, 1, 1), DROP, drop_redundant());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (0, acked(&[0, 1])));
    expect_acks(&loaded, 1, Some(0b0_0010));

    expect(&loaded, "op 1 from replica 3", &ack(5, 1, 3), PASS, pass_quorum());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (1, acked(&[0, 1, 0, 1])));
    expect_acks(&loaded, 1, Some(0b0_1010));

    expect(&loaded, "op 1 from replica 2 (late)", &ack(5, 1, 2), DROP, drop_redundant());
    expect(&loaded, "op 1 from replica 4 (late)", &ack(5, 1, 4), DROP, drop_redundant());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (1, acked(&[0, 1, 1, 1, 1])));
    expect_acks(&loaded, 1, Some(0b1_1110));
}

#[test]
fn an_ack_for_op_n_vouches_for_every_earlier_op_of_its_replica() {
    require_root!();
    let loaded = load(5);
    loaded.arm_leader(0, 1, 2, 5, 0).expect("arm");

    expect(&loaded, "op 4 from replica 1", &ack(0, 4, 1), DROP, drop_below_quorum());
    for op in 1..=4 {
        expect_acks(&loaded, op, Some(0b0_0010));
    }
    // Replica 2 vouches for 1..=2: both reach f = 2 with one ack, one pass.
    expect(&loaded, "op 2 from replica 2", &ack(0, 2, 2), PASS, pass_quorum());
    assert_eq!(state(&loaded).quorum_op, 2);
    expect_acks(&loaded, 1, Some(0b0_0110));
    expect_acks(&loaded, 2, Some(0b0_0110));
    expect_acks(&loaded, 3, Some(0b0_0010));

    expect(&loaded, "op 1 from replica 3 (late)", &ack(0, 1, 3), DROP, drop_redundant());
    expect(&loaded, "op 3 from replica 3", &ack(0, 3, 3), PASS, pass_quorum());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (3, acked(&[0, 4, 2, 3])));
    expect_acks(&loaded, 3, Some(0b0_1010));
    expect_acks(&loaded, 4, Some(0b0_0010));

    expect(&loaded, "op 4 from replica 4", &ack(0, 4, 4), PASS, pass_quorum());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (4, acked(&[0, 4, 2, 3, 4])));
    expect_acks(&loaded, 4, Some(0b1_0010));
}

#[test]
fn acks_outside_the_window_pass_above_and_record_below_and_the_window_advances() {
    require_root!();
    let loaded = load(3);
    loaded.arm_leader(0, 1, 1, 3, 0).expect("arm");

    let top = 1 + WINDOW_OPS; // first op above the window
    expect(&loaded, "first op above the window", &ack(0, top, 1), PASS, pass_window());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (0, acked(&[])));
    expect_acks(&loaded, top, None);

    expect(&loaded, "last op of the window", &ack(0, top - 1, 1), PASS, pass_quorum());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (top - 1, acked(&[0, top - 1])));

    // User space committed ops below 60: a first ack of one drops, but
    // acked_op records how far that follower got.
    loaded.advance_window(60).expect("advance");
    assert_eq!(state(&loaded).window_base_op, 60);
    expect(&loaded, "op below the new base", &ack(0, 59, 2), DROP, drop_redundant());
    assert_eq!(state(&loaded).acked_op, acked(&[0, top - 1, 59]), "a lagging follower's position");
    expect_acks(&loaded, 59, None);
    expect_acks(&loaded, 60, Some(0b010));

    expect(&loaded, "last op of the moved window", &ack(0, 60 + WINDOW_OPS - 1, 2), PASS, pass_quorum());
    expect(&loaded, "first op above the moved window", &ack(0, 60 + WINDOW_OPS, 2), PASS, pass_window());
    assert_eq!(state(&loaded).quorum_op, 60 + WINDOW_OPS - 1);
    assert!(loaded.advance_window(59).is_err(), "the window never moves down");
    assert_eq!(state(&loaded).window_base_op, 60);
}

#[test]
fn acks_of_another_view_pass_and_leave_the_state_alone() {
    require_root!();
    let loaded = load(3);
    loaded.arm_leader(3, 1, 1, 3, 0).expect("arm");
    expect(&loaded, "older view", &ack(2, 1, 1), PASS, pass_view());
    expect(&loaded, "newer view", &ack(4, 1, 1), PASS, pass_view());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (0, acked(&[])));
    expect_acks(&loaded, 1, Some(0));
    expect(&loaded, "the armed view", &ack(3, 1, 1), PASS, pass_quorum());
}

#[test]
fn acks_that_cannot_be_credited_to_a_follower_pass() {
    require_root!();
    let loaded = load(3);
    loaded.arm_leader(0, 1, 1, 3, 0).expect("arm");

    expect(&loaded, "from the leader itself", &ack(0, 1, 0), PASS, pass_not_member());
    expect(&loaded, "from replica 3 of 3", &ack(0, 1, 3), PASS, pass_not_member());
    expect(&loaded, "from the client id", &ack(0, 1, 255), PASS, pass_not_member());

    // Header sender 2 claims an ack of replica 1.
    let mut spoofed = ack_datagram(0, 1, 1);
    spoofed[6] = 2;
    expect(&loaded, "sender != replica", &from_member(1, &spoofed), PASS, pass_not_member());

    // A 17-byte body: the classifier accepts it (>= the fixed part), user
    // space decodes only exactly 16, so the kernel must not count it.
    let mut long = ack_datagram(0, 1, 1);
    long.push(0);
    long[12..14].copy_from_slice(&17u16.to_be_bytes());
    expect(&loaded, "body one byte long", &from_member(1, &long), PASS, pass_not_member());

    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (0, acked(&[])));
    expect_acks(&loaded, 1, Some(0));
}

#[test]
fn truncated_and_foreign_prepare_oks_pass_counted_by_the_classifier() {
    require_root!();
    let loaded = load(3);
    loaded.arm_leader(0, 1, 1, 3, 0).expect("arm");
    let frame = ack(0, 1, 1);
    let malformed = Counters { malformed: 1, ..Counters::default() };
    for len in [HDR_OFF + ELECTRODE_HDR_LEN, HDR_OFF + ELECTRODE_HDR_LEN + 8, frame.len() - 1] {
        let what = format!("PrepareOK cut to {len} of {} bytes", frame.len());
        expect_counts(&loaded, &what, &frame[..len], PASS, malformed.clone());
    }
    let mut bad_magic = frame.clone();
    bad_magic[HDR_OFF] ^= 0xff;
    expect_counts(&loaded, "bad magic", &bad_magic, PASS, Counters { bad_magic: 1, ..Counters::default() });
    let mut other_cluster = frame.clone();
    other_cluster[HDR_OFF + 8] ^= 0xff;
    let wrong_cluster = Counters { wrong_cluster: 1, ..Counters::default() };
    expect_counts(&loaded, "another cluster", &other_cluster, PASS, wrong_cluster);
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (0, acked(&[])));
    // The intact frame still completes the quorum.
    expect(&loaded, "intact", &frame, PASS, pass_quorum());
}

#[test]
fn disarmed_every_ack_passes_and_nothing_is_recorded() {
    require_root!();
    let loaded = load(3);
    let fresh = state(&loaded);
    assert!(!fresh.armed);
    assert_eq!((fresh.generation, fresh.quorum_op, fresh.acked_op), (0, 0, acked(&[])));
    expect(&loaded, "never armed", &ack(0, 1, 1), PASS, pass_disarmed());
    expect_acks(&loaded, 1, None);

    loaded.arm_leader(0, 1, 1, 3, 0).expect("arm");
    expect(&loaded, "armed", &ack(0, 1, 1), PASS, pass_quorum());
    loaded.disarm_leader().expect("disarm");
    expect(&loaded, "disarmed, replica 2", &ack(0, 1, 2), PASS, pass_disarmed());
    expect(&loaded, "disarmed, replica 1", &ack(0, 2, 1), PASS, pass_disarmed());
    let after = state(&loaded);
    assert!(!after.armed);
    // What was counted while armed stays readable, untouched by the rest.
    assert_eq!((after.generation, after.quorum_op, after.acked_op), (1, 1, acked(&[0, 1])));
    expect_acks(&loaded, 1, None);
    assert!(loaded.advance_window(2).is_err(), "a disarmed window does not move");
}

#[test]
fn a_new_view_rearms_with_its_own_window_and_forgets_the_old_acks() {
    require_root!();
    let loaded = load(3);
    loaded.arm_leader(0, 1, 1, 3, 0).expect("arm view 0");
    expect(&loaded, "view 0 op 1", &ack(0, 1, 1), PASS, pass_quorum());
    expect(&loaded, "view 0 op 2", &ack(0, 2, 1), PASS, pass_quorum());

    // View change: the old leader disarms; replica 0 leads again in view 3.
    loaded.disarm_leader().expect("disarm");
    assert!(loaded.arm_leader(1, 3, 1, 3, 0).is_err(), "replica 0 does not lead view 1");
    loaded.arm_leader(3, 3, 1, 3, 0).expect("arm view 3");
    let armed = state(&loaded);
    assert_eq!((armed.armed, armed.generation, armed.view, armed.window_base_op), (true, 2, 3, 3));
    assert_eq!((armed.quorum_op, armed.acked_op), (0, acked(&[])), "acks of view 0 do not count");
    expect_acks(&loaded, 3, Some(0));

    expect(&loaded, "view 0 ack after the change", &ack(0, 3, 1), PASS, pass_view());
    expect(&loaded, "view 3 op 3 from replica 2", &ack(3, 3, 2), PASS, pass_quorum());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (3, acked(&[0, 0, 3])));
    expect(&loaded, "view 3 op 3 from replica 1 (late)", &ack(3, 3, 1), DROP, drop_redundant());
    expect_acks(&loaded, 3, Some(0b110));
}

#[test]
fn a_lost_quorum_ack_is_recovered_from_the_map_and_by_retransmission() {
    require_root!();
    let loaded = load(5);
    loaded.arm_leader(0, 1, 2, 5, 0).expect("arm");
    expect(&loaded, "op 1 from replica 1", &ack(0, 1, 1), DROP, drop_below_quorum());
    // Passed by XDP, then lost (say the socket buffer was full).
    expect(&loaded, "op 1 from replica 2", &ack(0, 1, 2), PASS, pass_quorum());
    expect(&loaded, "op 1 from replica 3 (late)", &ack(0, 1, 3), DROP, drop_redundant());

    // Rule 1: on the prepare timeout, user space reads the quorum itself and
    // counts it (here: 3 followers >= f = 2), whatever reached its socket.
    let bitmap = loaded.quorum_acks(1).expect("read").expect("op 1 is in the window");
    assert_eq!(bitmap, 0b0_1110);
    assert!(bitmap.count_ones() >= 2);

    // Rule 2: the leader retransmits Prepare 1; followers that had acked it
    // ack again, and those repeats of an op with a quorum pass.
    expect(&loaded, "re-ack of replica 1", &ack(0, 1, 1), PASS, pass_after_quorum());
    expect(&loaded, "re-ack of replica 2", &ack(0, 1, 2), PASS, pass_after_quorum());
    // A follower acking op 1 for the first time adds nothing: dropped.
    expect(&loaded, "first ack of replica 4", &ack(0, 1, 4), DROP, drop_redundant());
    assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (1, acked(&[0, 1, 1, 1, 1])));

    // Once user space has committed op 1 and moved the window, a repeat of
    // a follower's last ack still passes (a follower past a gap re-acks its
    // head: the leader re-sends what it lacks), and a late first ack moves
    // acked_op (how far that follower got) and drops.
    loaded.advance_window(3).expect("advance");
    expect(&loaded, "re-ack after commit", &ack(0, 1, 1), PASS, pass_after_quorum());
    expect(&loaded, "late ack after commit", &ack(0, 2, 3), DROP, drop_redundant());
    assert_eq!(state(&loaded).acked_op, acked(&[0, 1, 1, 2, 1]));
    expect(&loaded, "its repeat", &ack(0, 2, 3), PASS, pass_after_quorum());
    expect(&loaded, "an older one", &ack(0, 1, 3), DROP, drop_redundant());
}

#[test]
fn arm_refuses_configs_the_kernel_could_not_count() {
    require_root!();
    let loaded = load(5);
    let cases = [
        ("window base 0", (0, 0, 2, 5, 0)),
        ("window base 2^62", (0, 1 << 62, 2, 5, 0)),
        ("f = 0", (0, 1, 0, 5, 0)),
        ("f = replica count", (0, 1, 5, 5, 0)),
        ("self is not a replica", (5, 1, 2, 5, 5)),
        ("too many replicas", (0, 1, 2, 10, 0)),
        ("not the leader of the view", (1, 1, 2, 5, 0)),
    ];
    for (what, (view, base, f, replicas, self_index)) in cases {
        assert!(loaded.arm_leader(view, base, f, replicas, self_index).is_err(), "{what}");
        assert!(!state(&loaded).armed, "{what}: a refused arm leaves the path disarmed");
    }
    loaded.arm_leader(6, 1, 2, 5, 1).expect("replica 1 leads view 6");
    let armed = state(&loaded);
    assert_eq!((armed.view, armed.self_index, armed.quorum_followers, armed.replica_count), (6, 1, 2, 5));
    expect(&loaded, "ack from replica 0, a follower now", &ack(6, 1, 0), DROP, drop_below_quorum());
    expect(&loaded, "ack from replica 1, the leader", &ack(6, 1, 1), PASS, pass_not_member());
    expect(&loaded, "ack from replica 4", &ack(6, 1, 4), PASS, pass_quorum());
    expect_acks(&loaded, 1, Some(0b1_0001));
}

/// Issue 12: an isolated leader committed on PrepareOKs with every field
/// right but the source address. The kernel must record nothing from an
/// address or port that is not the claimed replica's, drop it under its own
/// counter, and still count the genuine ack.
#[test]
fn acks_from_an_address_or_port_that_is_not_the_replicas_record_nothing() {
    require_root!();
    for (f, replicas) in [(1, 3), (2, 5)] {
        let loaded = load(replicas);
        loaded.arm_leader(0, 1, f, replicas, 0).expect("arm");
        let forged = [
            ("wrong source port", from_member(1, &ack_datagram(0, 1, 1))[..].to_vec(), 1u8),
            (
                "wrong source port",
                sent_from(
                    SocketAddrV4::new(Ipv4Addr::from(IP_A), member(1).port() + 100),
                    &ack_datagram(0, 1, 1),
                ),
                1,
            ),
            (
                "wrong source address",
                sent_from(
                    SocketAddrV4::new(Ipv4Addr::new(10, 200, 1, 99), member(2).port()),
                    &ack_datagram(0, 1, 2),
                ),
                2,
            ),
            ("another member's address", from_member(2, &ack_datagram(0, 1, 1)), 1),
            ("the leader's own address", from_member(0, &ack_datagram(0, 2, 2)), 2),
        ];
        // The first entry is the genuine frame, kept to prove the forgeries
        // differ from it only in the source.
        let (_, genuine, _) = &forged[0];
        assert_eq!(genuine, &ack(0, 1, 1));
        for (what, frame, replica) in &forged[1..] {
            assert_ne!(frame, &ack(0, 1, *replica), "{what}: differs from the genuine ack");
            let what = format!("f = {f}: {what}");
            expect(&loaded, &what, frame, DROP, drop_foreign_source());
            assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (0, acked(&[])), "{what}");
        }
        expect_acks(&loaded, 1, Some(0));
        let named = loaded.counters().expect("counters").named();
        assert!(
            named.contains(&("quorum_prune.drop_foreign_source", 4)),
            "f = {f}: electrode stats shows the drops by name: {named:?}"
        );

        // The same acks from the replicas' own addresses count.
        let verdict = if f == 1 { (PASS, pass_quorum()) } else { (DROP, drop_below_quorum()) };
        expect(&loaded, "genuine ack of replica 1", &ack(0, 1, 1), verdict.0, verdict.1);
        if f == 2 {
            expect(&loaded, "genuine ack of replica 2", &ack(0, 1, 2), PASS, pass_quorum());
        }
        assert_eq!(state(&loaded).quorum_op, 1, "f = {f}");
    }
}

/// Before the address table is written nothing may be armed, and a program
/// attached that early trusts no sender.
#[test]
fn nothing_arms_before_the_address_table_and_an_empty_table_trusts_nobody() {
    require_root!();
    let loaded = common::load(3);
    let refused = loaded.arm_leader(0, 1, 1, 3, 0).expect_err("arm before set_members");
    assert!(format!("{refused:#}").contains("replica_addrs"), "{refused:#}");
    assert!(!state(&loaded).armed);
    assert_eq!(loaded.members().expect("read table"), vec![None; 9]);

    let members = [member(0), member(1), member(2)];
    assert!(loaded.set_members(&members[..2]).is_err(), "one address per replica");
    assert!(loaded.set_members(&[member(0), member(1), member(1)]).is_err(), "duplicate address");
    loaded.set_members(&members).expect("write replica_addrs");
    assert!(loaded.set_members(&members).is_err(), "written once");
    let table = loaded.members().expect("read table");
    assert_eq!(&table[..3], &members.map(Some)[..]);
    assert_eq!(&table[3..], &[None; 6]);
    loaded.arm_leader(0, 1, 1, 3, 0).expect("arm after set_members");
    expect(&loaded, "genuine ack", &ack(0, 1, 1), PASS, pass_quorum());
}

/// Issue 12, extreme numbers: an op or view near 2^64 from a member never
/// wraps the window test (op >= base + 64) into a counted ack, at the
/// lowest and at the highest window base arm accepts, and a view of
/// u64::MAX is just a view.
#[test]
fn ops_and_views_near_u64_max_never_wrap_into_a_counted_ack() {
    require_root!();
    let top = u64::MAX;
    let highest_base = (1u64 << 62) - 1;
    for base in [1, highest_base] {
        let loaded = load(3);
        loaded.arm_leader(0, base, 1, 3, 0).expect("arm");
        for op in [top, top - 1, top - WINDOW_OPS, top - WINDOW_OPS + 1, base + WINDOW_OPS, 1 << 63] {
            let what = format!("base {base}, op {op}");
            expect(&loaded, &what, &ack(0, op, 1), PASS, pass_window());
            assert_eq!((state(&loaded).quorum_op, state(&loaded).acked_op), (0, acked(&[])), "{what}");
        }
        expect(&loaded, "view u64::MAX", &ack(top, base, 1), PASS, pass_view());
        expect(&loaded, "top of the window", &ack(0, base + WINDOW_OPS - 1, 1), PASS, pass_quorum());
        assert_eq!(state(&loaded).quorum_op, base + WINDOW_OPS - 1);
    }
    // u64::MAX % 3 == 0: replica 0 leads view u64::MAX.
    let loaded = load(3);
    loaded.arm_leader(top, 1, 1, 3, 0).expect("arm for view u64::MAX");
    expect(&loaded, "view 0 while armed for u64::MAX", &ack(0, 1, 1), PASS, pass_view());
    expect(&loaded, "view u64::MAX, op u64::MAX", &ack(top, top, 1), PASS, pass_window());
    expect(&loaded, "view u64::MAX, op 1", &ack(top, 1, 1), PASS, pass_quorum());
    assert!(loaded.arm_leader(top, 1 << 62, 1, 3, 0).is_err(), "window base 2^62 is refused");
}

// ---------------------------------------------------------------------------
// Fuzz against a model (issue 12: acked_op moves only for members)
// ---------------------------------------------------------------------------

/// The rules of `bpf/parse.h` and the fast_quorum_prune table of
/// `bpf/electrode.h`, in Rust, on the leader's side.
struct PruneModel {
    view: u64,
    base: u64,
    f: u64,
    replicas: u8,
    self_index: u8,
    quorum_op: u64,
    acked_op: [u64; 9],
}

impl PruneModel {
    fn quorum_of(&self) -> u64 {
        let followers = |i: usize| i < usize::from(self.replicas) && i != usize::from(self.self_index);
        let mut best = 0;
        for i in (0..9).filter(|i| followers(*i)) {
            let candidate = self.acked_op[i];
            let at_least = (0..9).filter(|j| followers(*j) && self.acked_op[*j] >= candidate).count() as u64;
            if at_least >= self.f && candidate >= best {
                best = candidate;
            }
        }
        best
    }

    /// The verdict for `datagram` from `source`, updating the state.
    fn run(&mut self, datagram: &[u8], source: SocketAddrV4) -> u32 {
        let Some((msg_type, sender, view, body)) = classify(datagram, CLUSTER_ID) else { return PASS };
        if msg_type != MsgType::PrepareOk as u8 {
            return PASS;
        }
        if view != self.view {
            return PASS;
        }
        let replica = body[8];
        if body.len() != 16
            || body[9] & !(PREPARE_OK_GAP as u8) != 0
            || replica != sender
            || replica >= self.replicas
            || replica == self.self_index
            || replica >= 9
        {
            return PASS;
        }
        if source != member(replica) {
            return DROP;
        }
        if body[9] & PREPARE_OK_GAP as u8 != 0 {
            return PASS; // a follower's negative ack: nothing recorded
        }
        let op = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
        if op >= self.base + WINDOW_OPS {
            return PASS;
        }
        let quorum_before = self.quorum_op.max(self.base - 1);
        let slot = usize::from(replica);
        if op < self.base {
            // Committed: a repeat of the follower's last ack passes (a gap
            // signal); a first ack moves acked_op and drops.
            if op == self.acked_op[slot] {
                return PASS;
            }
            self.acked_op[slot] = self.acked_op[slot].max(op);
            return DROP;
        }
        if op <= self.acked_op[slot] {
            return if op <= quorum_before { PASS } else { DROP };
        }
        self.acked_op[slot] = op;
        let after = self.quorum_of();
        self.quorum_op = self.quorum_op.max(after);
        if after > quorum_before {
            PASS
        } else {
            DROP
        }
    }
}

#[test]
fn fuzzed_prepare_oks_move_acked_op_only_as_the_model_says() {
    require_root!();
    let (seed, frames, mut rng) = fuzz_plan(0x5eed_e1ec);
    let (replicas, f, view) = (5u8, 2u64, 7u64);
    let loaded = load(u32::from(replicas));
    let self_index = (view % u64::from(replicas)) as u8;
    loaded.arm_leader(view, 1, f as u32, u32::from(replicas), u32::from(self_index)).expect("arm");
    let mut model = PruneModel { view, base: 1, f, replicas, self_index, quorum_op: 0, acked_op: [0; 9] };
    let before = loaded.counters().expect("counters");
    let mut dropped = 0u64;
    for n in 0..frames {
        // Mostly a PrepareOK near the window, sometimes anything.
        let replica = rng.below(u64::from(replicas) + 1) as u8;
        let op = match rng.below(10) {
            0 => rng.next_u64(),
            1 => u64::MAX - rng.below(3),
            _ => (model.base + rng.below(WINDOW_OPS + 8)).saturating_sub(4),
        };
        let ack_view = if rng.percent(90) { view } else { [0, view + 1, u64::MAX][rng.below(3) as usize] };
        let mut datagram = ack_datagram(ack_view, op, replica);
        if rng.percent(5) {
            datagram[6] = rng.below(10) as u8; // sender differs from replica
        }
        if rng.percent(5) {
            // Body byte 9: the flags (GAP, or bits nobody knows).
            datagram[24 + 9] = [PREPARE_OK_GAP as u8, 2, 0x81][rng.below(3) as usize];
        }
        if rng.percent(15) {
            for _ in 0..=rng.below(3) {
                let at = rng.below(datagram.len() as u64) as usize;
                datagram[at] = rng.next_u64() as u8;
            }
        }
        if rng.percent(3) {
            datagram.truncate(rng.below(datagram.len() as u64) as usize);
        } else if rng.percent(3) {
            datagram.push(rng.next_u64() as u8);
        }
        let source = match rng.below(10) {
            0 => SocketAddrV4::new(Ipv4Addr::from(IP_A), 40000 + rng.below(10) as u16), // any member's port
            1 => SocketAddrV4::new(Ipv4Addr::from(IP_A), rng.next_u64() as u16),
            2 => SocketAddrV4::new(Ipv4Addr::new(10, 200, 1, 99), member(replica).port()),
            _ => member(replica),
        };
        let frame = sent_from(source, &datagram);
        let want = model.run(&datagram, source);
        let (got, _) = loaded.test_run_xdp(&frame).expect("BPF_PROG_TEST_RUN");
        assert_eq!(got, want, "frame {n} (seed {seed}): verdict for {datagram:02x?} from {source}");
        dropped += u64::from(got == DROP);
        if n % 997 == 0 {
            let state = state(&loaded);
            assert_eq!(
                (state.quorum_op, state.acked_op),
                (model.quorum_op, model.acked_op),
                "frame {n}, seed {seed}"
            );
            // User space commits and moves the window now and then.
            let committed = model.quorum_op.max(model.base - 1);
            if committed + 1 > model.base && rng.percent(50) {
                model.base = committed + 1;
                loaded.advance_window(model.base).expect("advance");
            }
        }
    }
    let state = state(&loaded);
    assert_eq!((state.quorum_op, state.acked_op), (model.quorum_op, model.acked_op), "end, seed {seed}");
    assert!(model.quorum_op > 100, "the fuzz reached quorums ({})", model.quorum_op);
    let counted_foreign =
        loaded.counters().expect("counters").since(&before).quorum_prune.drop_foreign_source;
    assert!(
        dropped > frames / 10 && counted_foreign > frames / 100,
        "{dropped} dropped, {counted_foreign} forged"
    );
}

#[test]
fn a_gap_ack_always_passes_and_records_nothing_and_unknown_flags_are_not_credited() {
    require_root!();
    let loaded = load(3);
    loaded.arm_leader(0, 1, 1, 3, 0).expect("arm");
    expect(&loaded, "op 2 from replica 1", &ack(0, 2, 1), PASS, pass_quorum());
    let flagged = |op: u64, replica: u8, flags: u8| {
        let mut datagram = ack_datagram(0, op, replica);
        datagram[24 + 9] = flags;
        from_member(replica, &datagram)
    };
    // Replica 2 holds Prepares past a gap at 2: its negative ack for op 1
    // (below the quorum: a plain late ack would drop) reaches user space.
    let gap = one(|c| &mut c.pass_gap);
    expect(&loaded, "gap ack of replica 2", &flagged(1, 2, PREPARE_OK_GAP as u8), PASS, gap);
    assert_eq!(state(&loaded).acked_op, acked(&[0, 2, 0]), "a gap ack records nothing");
    let not_member = one(|c| &mut c.pass_not_member);
    expect(&loaded, "unknown flag bit", &flagged(3, 2, 2), PASS, not_member.clone());
    expect(&loaded, "gap plus an unknown bit", &flagged(3, 2, 3), PASS, not_member);
    assert_eq!(state(&loaded).acked_op, acked(&[0, 2, 0]), "nothing credited for unknown flags");
}
