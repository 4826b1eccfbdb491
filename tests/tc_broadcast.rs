//! tc_broadcast tests (root): `electrode_tc` on crafted frames with
//! BPF_PROG_TEST_RUN, MAC learning by `electrode_xdp`, the clsact attach
//! guard, and one sendto fanned out to every follower across namespaces.
//!
//! Test runs of a tc program clone to the `lo` of the calling thread's netns
//! (PLATFORM gotcha 3), so every test runs on a thread inside a throwaway
//! namespace of its own. Checksums are checked with the independent
//! implementation below, never with the kernel's.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::{require_root, run, Netns};
use electrode::fastpath::{tc_action, xdp_action, Counters, LoadOptions, Loaded};
use electrode::wire::{self, consts, Message};

const PORT: u16 = 7447;
const CLUSTER_ID: u32 = 0x00c0_ffee;
const HDR_OFF: usize = 14 + 20 + 8;
/// Offset of the flags byte in a frame without IP options.
const FLAGS_OFF: usize = HDR_OFF + 7;
const BROADCAST: u8 = consts::FLAG_BROADCAST as u8;

/// One end of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Endpoint {
    mac: [u8; 6],
    addr: SocketAddrV4,
}

fn endpoint(index: u8, port: u16) -> Endpoint {
    Endpoint {
        mac: [0x02, 0xe1, 0x7c, 0, 0, index],
        addr: SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 10 + index), port),
    }
}

// ---------------------------------------------------------------------------
// Frames and an independent checksum
// ---------------------------------------------------------------------------

/// Ones' complement sum of `bytes` (odd length padded with a zero byte),
/// not yet folded.
fn sum16(bytes: &[u8]) -> u32 {
    bytes.chunks(2).map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// IPv4 pseudo-header + UDP header + payload, for the UDP checksum.
fn udp_sum(frame: &[u8]) -> u32 {
    let ip = &frame[14..34];
    let udp = &frame[34..];
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    sum16(&ip[12..20]) + 17 + udp_len as u32 + sum16(&udp[..udp_len])
}

fn ip_checksum_valid(frame: &[u8]) -> bool {
    fold(sum16(&frame[14..34])) == 0xffff
}

/// A UDP checksum of 0 means none (IPv4); otherwise the sum must be 0xffff.
fn udp_checksum_valid(frame: &[u8]) -> bool {
    frame[40..42] == [0, 0] || fold(udp_sum(frame)) == 0xffff
}

/// Eth + IPv4 (no options, DF) + UDP from `src` to `dst` carrying `payload`,
/// IP checksum right, UDP checksum right (or 0 without `udp_checksum`).
fn frame(src: Endpoint, dst: Endpoint, payload: &[u8], udp_checksum: bool) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.mac);
    f.extend_from_slice(&src.mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src.addr.ip().octets());
    f.extend_from_slice(&dst.addr.ip().octets());
    let ip_check = !fold(sum16(&f[14..34]));
    f[24..26].copy_from_slice(&ip_check.to_be_bytes());
    f.extend_from_slice(&src.addr.port().to_be_bytes());
    f.extend_from_slice(&dst.addr.port().to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    if udp_checksum {
        let check = match !fold(udp_sum(&f)) {
            0 => 0xffff, // 0 means "no checksum": send its other form
            check => check,
        };
        f[40..42].copy_from_slice(&check.to_be_bytes());
    }
    f
}

/// `msg` from replica `sender` as one datagram with header `flags`.
fn datagram(sender: u8, msg: &Message, flags: u8) -> Vec<u8> {
    let mut out = Vec::new();
    wire::Encoder::new(CLUSTER_ID, sender).encode_flags(msg, flags, &mut out).expect("encode");
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn prepare(op: u64) -> Message {
    let request = wire::Request { client_id: 7, request_number: op, op: b"put k v".to_vec() };
    Message::Prepare(wire::Prepare { view: 0, op, commit: op - 1, batch: vec![request] })
}

fn prepare_ok(replica: u8) -> Message {
    Message::PrepareOk(wire::PrepareOk { view: 0, op: 1, replica })
}

// ---------------------------------------------------------------------------
// Fixture harness
// ---------------------------------------------------------------------------

fn load(replica_count: u32) -> Loaded {
    Loaded::load(LoadOptions { port: PORT, cluster_id: CLUSTER_ID, replica_count })
        .expect("load electrode eBPF object")
}

/// Loaded with the replica address table written (member i at
/// `members[i]`), as the runtime does before it arms anything.
fn load_with_members(members: &[SocketAddrV4]) -> Loaded {
    let loaded = load(members.len() as u32);
    loaded.set_members(members).expect("write replica_addrs");
    loaded
}

/// Runs `body` on a thread inside a fresh namespace (lo up), so tc test
/// runs can clone to lo and nothing leaks into the caller's namespace.
fn in_netns<T: Send>(body: impl FnOnce(&Netns) -> T + Send) -> T {
    let netns = Netns::create(&["tc"]);
    let netns = &netns;
    thread::scope(|scope| {
        scope
            .spawn(move || {
                netns.enter(0);
                body(netns)
            })
            .join()
            .expect("test thread in its netns")
    })
}

/// The leader (replica 0) and followers 1..replica_count, follower i on
/// port PORT + i; targets set and armed.
fn leader_with_targets(replica_count: u8) -> (Loaded, Endpoint, Vec<Endpoint>) {
    let leader = endpoint(0, PORT);
    let followers: Vec<Endpoint> = (1..replica_count).map(|i| endpoint(i, PORT + u16::from(i))).collect();
    let members: Vec<SocketAddrV4> = [leader].iter().chain(&followers).map(|e| e.addr).collect();
    let loaded = load_with_members(&members);
    let targets: Vec<(u8, SocketAddrV4)> =
        followers.iter().enumerate().map(|(i, f)| (i as u8 + 1, f.addr)).collect();
    loaded.set_broadcast_targets(0, PORT, &targets).expect("set targets");
    assert!(!loaded.broadcast_armed().expect("armed?"), "setting targets leaves it disarmed");
    loaded.arm_broadcast(true).expect("arm");
    (loaded, leader, followers)
}

/// Feeds electrode_xdp one valid PrepareOK from `follower` (replica
/// `index`): the learning path.
fn teach(loaded: &Loaded, leader: Endpoint, index: u8, follower: Endpoint) {
    let bytes = datagram(index, &prepare_ok(index), 0);
    let (verdict, _) = loaded.test_run_xdp(&frame(follower, leader, &bytes, true)).expect("xdp test run");
    assert_eq!(verdict, xdp_action::PASS);
}

/// Runs `input` through electrode_tc, returning verdict, output and the
/// counter deltas.
fn tc_run(loaded: &Loaded, input: &[u8]) -> (u32, Vec<u8>, Counters) {
    let before = loaded.counters().expect("counters");
    let (verdict, out) = loaded.test_run_tc(input).expect("tc test run");
    (verdict, out, loaded.counters().expect("counters").since(&before))
}

/// What one copy for `follower` must be, byte for byte: the marked frame
/// with the follower's MAC, IP and port, the flag cleared, and checksums
/// recomputed from scratch (0 stays 0).
fn expected_copy(leader: Endpoint, follower: Endpoint, payload: &[u8], udp_checksum: bool) -> Vec<u8> {
    let mut unmarked = payload.to_vec();
    unmarked[7] &= !BROADCAST;
    frame(leader, follower, &unmarked, udp_checksum)
}

// ---------------------------------------------------------------------------
// Fixture tests
// ---------------------------------------------------------------------------

#[test]
fn one_copy_is_rewritten_exactly_with_valid_checksums() {
    if !require_root("one_copy_is_rewritten_exactly_with_valid_checksums") {
        return;
    }
    in_netns(|_| {
        let (loaded, leader, followers) = leader_with_targets(3);
        for (i, follower) in followers.iter().enumerate() {
            teach(&loaded, leader, i as u8 + 1, *follower);
        }
        assert_eq!(loaded.broadcast_coverage().expect("coverage"), [false, true, true]);

        for udp_checksum in [true, false] {
            let payload = datagram(0, &prepare(1), BROADCAST);
            // Addressed to follower 1, as the runtime would; the kernel
            // clones for follower 1 and sends the original to follower 2.
            let input = frame(leader, followers[0], &payload, udp_checksum);
            assert!(udp_checksum_valid(&input) && ip_checksum_valid(&input));
            let (verdict, out, delta) = tc_run(&loaded, &input);
            assert_eq!(verdict, tc_action::OK, "the last copy leaves as the original");
            let expected = expected_copy(leader, followers[1], &payload, udp_checksum);
            assert_eq!(out, expected, "copy for follower 2 (udp checksum {udp_checksum})");
            assert!(ip_checksum_valid(&out), "IP checksum");
            assert!(udp_checksum_valid(&out), "UDP checksum");
            assert_eq!(out[40..42] == [0, 0], !udp_checksum, "0 (no checksum) stays 0, others never 0");
            let want = Counters { tc_marked: 1, tc_copies: 2, ..Counters::default() };
            assert_eq!(delta, want, "counters (udp checksum {udp_checksum})");
        }
    });
}

#[test]
fn one_follower_gets_the_original_and_nine_replicas_fan_out_to_eight() {
    if !require_root("one_follower_gets_the_original_and_nine_replicas_fan_out_to_eight") {
        return;
    }
    in_netns(|_| {
        // Only follower 1 known: no clone at all.
        let (loaded, leader, followers) = leader_with_targets(3);
        teach(&loaded, leader, 1, followers[0]);
        assert_eq!(loaded.broadcast_coverage().expect("coverage"), [false, true, false]);
        let payload = datagram(0, &prepare(2), BROADCAST);
        let (verdict, out, delta) = tc_run(&loaded, &frame(leader, followers[1], &payload, true));
        assert_eq!(verdict, tc_action::OK);
        assert_eq!(out, expected_copy(leader, followers[0], &payload, true));
        assert_eq!(delta, Counters { tc_marked: 1, tc_copies: 1, ..Counters::default() });

        // 9 replicas, leader is replica 4: 8 copies, the original for replica 8.
        let leader = endpoint(4, PORT);
        let others: Vec<(u8, Endpoint)> =
            (0..9u8).filter(|&i| i != 4).map(|i| (i, endpoint(i, PORT + 100 + u16::from(i)))).collect();
        let members: Vec<SocketAddrV4> = (0..9u8)
            .map(|i| if i == 4 { leader.addr } else { endpoint(i, PORT + 100 + u16::from(i)).addr })
            .collect();
        let loaded = load_with_members(&members);
        let targets: Vec<(u8, SocketAddrV4)> = others.iter().map(|(i, e)| (*i, e.addr)).collect();
        loaded.set_broadcast_targets(4, PORT, &targets).expect("targets");
        loaded.arm_broadcast(true).expect("arm");
        for (i, e) in &others {
            teach(&loaded, leader, *i, *e);
        }
        let coverage = loaded.broadcast_coverage().expect("coverage");
        assert_eq!(coverage, (0..9).map(|i| i != 4).collect::<Vec<_>>());
        let payload = datagram(4, &prepare(3), BROADCAST);
        let (verdict, out, delta) = tc_run(&loaded, &frame(leader, others[0].1, &payload, true));
        assert_eq!(verdict, tc_action::OK);
        assert_eq!(out, expected_copy(leader, others[7].1, &payload, true));
        assert_eq!(delta, Counters { tc_marked: 1, tc_copies: 8, ..Counters::default() });
    });
}

#[test]
fn unmarked_foreign_malformed_and_disarmed_pass_untouched() {
    if !require_root("unmarked_foreign_malformed_and_disarmed_pass_untouched") {
        return;
    }
    in_netns(|_| {
        let (loaded, leader, followers) = leader_with_targets(3);
        for (i, follower) in followers.iter().enumerate() {
            teach(&loaded, leader, i as u8 + 1, *follower);
        }
        let to = followers[0];
        let marked = datagram(0, &prepare(1), BROADCAST);
        let unmarked = datagram(0, &prepare(1), 0);
        let other_port = Endpoint { addr: SocketAddrV4::new(*leader.addr.ip(), PORT + 50), ..leader };
        let mut wrong_length = marked.clone();
        wrong_length[13] ^= 1; // body_len no longer matches the UDP length
        let other_cluster = {
            let mut out = Vec::new();
            wire::Encoder::new(CLUSTER_ID + 1, 0).encode_flags(&prepare(1), BROADCAST, &mut out).unwrap();
            out.remove(0)
        };
        let mut bad_magic = marked.clone();
        bad_magic[0] ^= 0xff;
        let mut arp = frame(leader, to, &marked, false);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let mut fragment = frame(leader, to, &marked, false);
        fragment[20] = 0x20; // more fragments
        let cases: Vec<(&str, Vec<u8>, Counters)> = vec![
            (
                "unmarked",
                frame(leader, to, &unmarked, true),
                Counters { tc_pass_unmarked: 1, ..Counters::default() },
            ),
            (
                "marked, other source port",
                frame(other_port, to, &marked, true),
                Counters { tc_pass_other: 1, ..Counters::default() },
            ),
            ("ARP ethertype", arp, Counters { tc_pass_other: 1, ..Counters::default() }),
            (
                "marked, body_len wrong",
                frame(leader, to, &wrong_length, true),
                Counters { tc_malformed: 1, ..Counters::default() },
            ),
            (
                "marked, other cluster",
                frame(leader, to, &other_cluster, true),
                Counters { tc_malformed: 1, ..Counters::default() },
            ),
            (
                "marked, bad magic",
                frame(leader, to, &bad_magic, true),
                Counters { tc_malformed: 1, ..Counters::default() },
            ),
            ("marked fragment", fragment, Counters { tc_malformed: 1, ..Counters::default() }),
            (
                "marked, truncated frame",
                frame(leader, to, &marked, true)[..HDR_OFF + 10].to_vec(),
                Counters { tc_malformed: 1, ..Counters::default() },
            ),
        ];
        for (what, input, want) in &cases {
            let (verdict, out, delta) = tc_run(&loaded, input);
            assert_eq!(verdict, tc_action::OK, "{what}");
            assert_eq!(&out, input, "{what}: untouched");
            assert_eq!(&delta, want, "{what}: counters");
        }

        // Disarmed (a follower, or a leader mid view change): untouched.
        loaded.arm_broadcast(false).expect("disarm");
        let input = frame(leader, to, &marked, true);
        let (verdict, out, delta) = tc_run(&loaded, &input);
        assert_eq!((verdict, &out), (tc_action::OK, &input), "disarmed");
        assert_eq!(delta, Counters { tc_marked: 1, tc_no_target: 1, ..Counters::default() });

        // Armed, but no MAC learned yet: untouched too (the runtime
        // unicasts to such followers instead of marking).
        let (fresh, leader, followers) = leader_with_targets(3);
        let input = frame(leader, followers[0], &marked, true);
        let (verdict, out, delta) = tc_run(&fresh, &input);
        assert_eq!((verdict, &out), (tc_action::OK, &input), "no MAC known");
        assert_eq!(delta, Counters { tc_marked: 1, tc_no_target: 1, ..Counters::default() });
        assert_eq!(input[FLAGS_OFF] & BROADCAST, BROADCAST);
    });
}

#[test]
fn macs_are_learned_only_from_the_configured_address_and_follow_changes() {
    if !require_root("macs_are_learned_only_from_the_configured_address_and_follow_changes") {
        return;
    }
    in_netns(|_| {
        let (loaded, leader, followers) = leader_with_targets(3);
        let learned = |loaded: &Loaded| loaded.counters().expect("counters").tc_mac_learned;
        let f1 = followers[0];
        let bytes = datagram(1, &prepare_ok(1), 0);

        // Claims to be replica 1 but comes from another port / IP: ignored.
        let wrong_port = Endpoint { addr: SocketAddrV4::new(*f1.addr.ip(), 9), ..f1 };
        loaded.test_run_xdp(&frame(wrong_port, leader, &bytes, true)).expect("xdp");
        let wrong_ip = Endpoint { addr: followers[1].addr, ..f1 };
        loaded.test_run_xdp(&frame(wrong_ip, leader, &bytes, true)).expect("xdp");
        // Replica 2's address but sender 1 in the header: ignored.
        let f2_as_1 = Endpoint { addr: followers[1].addr, ..f1 };
        loaded.test_run_xdp(&frame(f2_as_1, leader, &bytes, true)).expect("xdp");
        // A client (sender 255) from follower 1's address: ignored.
        let request = Message::Request(wire::Request { client_id: 1, request_number: 1, op: b"x".to_vec() });
        let mut client = Vec::new();
        wire::Encoder::new(CLUSTER_ID, wire::CLIENT_SENDER).encode(&request, &mut client).unwrap();
        loaded.test_run_xdp(&frame(f1, leader, &client[0], true)).expect("xdp");
        // Malformed from the right address: ignored.
        loaded.test_run_xdp(&frame(f1, leader, &bytes[..bytes.len() - 1], true)).expect("xdp");
        assert_eq!(loaded.broadcast_macs().expect("macs"), [None, None, None]);
        assert_eq!(learned(&loaded), 0);

        teach(&loaded, leader, 1, f1);
        teach(&loaded, leader, 1, f1); // same MAC again: no write
        assert_eq!(loaded.broadcast_macs().expect("macs"), [None, Some(f1.mac), None]);
        assert_eq!(learned(&loaded), 1);

        // The follower moved to another NIC (or next hop): refreshed.
        let moved = Endpoint { mac: [0x02, 0xe1, 0x7c, 0xff, 0, 1], ..f1 };
        teach(&loaded, leader, 1, moved);
        assert_eq!(loaded.broadcast_macs().expect("macs"), [None, Some(moved.mac), None]);
        assert_eq!(learned(&loaded), 2);

        // Re-setting the same targets keeps the MAC; a new address forgets it.
        let same = [(1, f1.addr), (2, followers[1].addr)];
        loaded.set_broadcast_targets(0, PORT, &same).expect("targets");
        assert_eq!(loaded.broadcast_macs().expect("macs")[1], Some(moved.mac));
        let other = [(1, SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 99), PORT)), (2, followers[1].addr)];
        loaded.set_broadcast_targets(0, PORT, &other).expect("targets");
        assert_eq!(loaded.broadcast_macs().expect("macs")[1], None);

        // Bad tables are refused.
        assert!(loaded.set_broadcast_targets(0, PORT, &[(0, f1.addr)]).is_err(), "self as target");
        assert!(loaded.set_broadcast_targets(0, PORT, &[(3, f1.addr)]).is_err(), "index >= count");
        assert!(loaded.set_broadcast_targets(0, PORT, &[(1, f1.addr), (1, f1.addr)]).is_err(), "twice");
        assert!(loaded.set_broadcast_targets(3, PORT, &[]).is_err(), "self index >= count");
    });
}

// ---------------------------------------------------------------------------
// Attach guard
// ---------------------------------------------------------------------------

#[test]
fn tc_guard_removes_its_filter_and_only_its_own_qdisc_and_replaces_a_leaked_filter() {
    if !require_root("tc_guard_removes_its_filter_and_only_its_own_qdisc_and_replaces_a_leaked_filter") {
        return;
    }
    in_netns(|netns| {
        let ns = netns.name(0).to_string();
        run("ip", &["-n", &ns, "link", "add", "tcg0", "type", "veth", "peer", "name", "tcg1"]);
        let ifindex = nix::net::if_::if_nametoindex("tcg0").expect("ifindex of tcg0");
        let qdiscs = || run("tc", &["-n", &ns, "qdisc", "show", "dev", "tcg0"]);
        let filters = || run("tc", &["-n", &ns, "filter", "show", "dev", "tcg0", "egress"]);
        let ours = || filters().matches("handle 0xe1ec electrode_tc").count();
        let (first, second) = (load(3), load(3));

        // Nothing there: the guard creates clsact and removes both.
        let guard = first.attach_tc(ifindex).expect("attach");
        assert!(guard.created_qdisc());
        assert!(qdiscs().contains("clsact"), "{}", qdiscs());
        assert_eq!(ours(), 1, "{}", filters());
        drop(guard);
        assert_eq!(ours(), 0, "{}", filters());
        assert!(!qdiscs().contains("clsact"), "qdisc we created stays: {}", qdiscs());

        // Somebody else's clsact: only our filter goes.
        run("tc", &["-n", &ns, "qdisc", "add", "dev", "tcg0", "clsact"]);
        let guard = first.attach_tc(ifindex).expect("attach");
        assert!(!guard.created_qdisc());
        guard.detach().expect("detach");
        assert_eq!(ours(), 0, "{}", filters());
        assert!(qdiscs().contains("clsact"), "foreign qdisc removed: {}", qdiscs());
        run("tc", &["-n", &ns, "qdisc", "del", "dev", "tcg0", "clsact"]);

        // A run that died without cleanup (kill -9): its filter stays; the
        // next run replaces it in place and removes it on exit.
        std::mem::forget(first.attach_tc(ifindex).expect("attach"));
        assert_eq!(ours(), 1);
        let guard = second.attach_tc(ifindex).expect("attach over a leaked filter");
        assert_eq!(ours(), 1, "replaced, not added: {}", filters());
        drop(guard);
        assert_eq!(ours(), 0, "{}", filters());

        // A guard whose filter another run replaced leaves that one alone.
        let older = first.attach_tc(ifindex).expect("attach");
        let newer = second.attach_tc(ifindex).expect("attach");
        drop(older);
        assert_eq!(ours(), 1, "the newer run's filter must survive: {}", filters());
        drop(newer);
        assert_eq!(ours(), 0, "{}", filters());
        run("tc", &["-n", &ns, "qdisc", "del", "dev", "tcg0", "clsact"]);

        assert!(first.attach_tc(999_999).is_err(), "no such interface");
    });
}

/// Set (to a netns name) only in the child process of
/// `a_restart_after_kill_9_replaces_the_leaked_filter`.
const KILL9_CHILD_NETNS: &str = "ELECTRODE_TC_KILL9_CHILD_NETNS";

/// The child of `a_restart_after_kill_9_replaces_the_leaked_filter`: attaches
/// electrode_tc to tcg0 in the given netns, says so, and waits to be
/// killed. A no-op in a normal test run.
#[test]
fn kill9_child_attaches_and_waits() {
    let Ok(ns) = std::env::var(KILL9_CHILD_NETNS) else {
        return;
    };
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).expect("open netns");
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    let loaded = load(3);
    let ifindex = nix::net::if_::if_nametoindex("tcg0").expect("ifindex of tcg0");
    let _guard = loaded.attach_tc(ifindex).expect("attach in child");
    println!("attached");
    std::io::Write::flush(&mut std::io::stdout()).expect("flush");
    thread::sleep(Duration::from_secs(60)); // killed long before
}

#[test]
fn a_restart_after_kill_9_replaces_the_leaked_filter() {
    if !require_root("a_restart_after_kill_9_replaces_the_leaked_filter") {
        return;
    }
    in_netns(|netns| {
        let ns = netns.name(0).to_string();
        run("ip", &["-n", &ns, "link", "add", "tcg0", "type", "veth", "peer", "name", "tcg1"]);
        let filters = || run("tc", &["-n", &ns, "filter", "show", "dev", "tcg0", "egress"]);
        let ours = || filters().matches("handle 0xe1ec electrode_tc").count();

        let stderr = attach_in_child_and_kill_9(&ns);
        assert_eq!(ours(), 1, "the killed run leaves its filter: {}", filters());
        assert!(!stderr.contains("libbpf"), "first run: library output: {stderr}");

        // A restart (itself killed) replaces it with one line and no
        // library output ("Exclusivity flag on" for the existing clsact).
        let first_id = prog_id_in(&filters());
        let stderr = attach_in_child_and_kill_9(&ns);
        assert!(!stderr.contains("libbpf"), "restart: library output: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|line| line.contains("electrode:")).collect();
        assert_eq!(lines.len(), 1, "restart: one line, got {stderr}");
        assert!(
            lines[0].contains(&format!("replaced a stale tc egress filter (prog id {first_id}")),
            "{stderr}"
        );
        assert_eq!(ours(), 1, "replaced, not added: {}", filters());

        let stale_id = prog_id_in(&filters());
        assert_ne!(stale_id, first_id);

        let loaded = load(3);
        let ifindex = nix::net::if_::if_nametoindex("tcg0").expect("ifindex of tcg0");
        let guard = loaded.attach_tc(ifindex).expect("attach after kill -9");
        assert!(!guard.created_qdisc(), "the killed run created clsact");
        assert_eq!(ours(), 1, "replaced, not added: {}", filters());
        assert_ne!(prog_id_in(&filters()), stale_id, "still the killed run's program");
        drop(guard);
        assert_eq!(ours(), 0, "{}", filters());
    });
}

/// Runs `kill9_child_attaches_and_waits` in `ns`, waits until it attached,
/// kills it with SIGKILL (no Drop runs) and returns its stderr.
fn attach_in_child_and_kill_9(ns: &str) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "kill9_child_attaches_and_waits", "--nocapture", "--test-threads=1"])
        .env(KILL9_CHILD_NETNS, ns)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let attached = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .any(|line| line.trim_end().ends_with("attached"));
    child.kill().expect("kill -9 the child"); // SIGKILL: no Drop runs
    child.wait().expect("reap child");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("child stderr"), &mut stderr)
        .expect("child stderr");
    assert!(attached, "child never attached; stderr: {stderr}");
    stderr
}

/// The `id N` of the electrode filter in `tc filter show` output.
fn prog_id_in(shown: &str) -> u32 {
    let after = shown.split("direct-action not_in_hw id ").nth(1).expect("a filter with a prog id");
    after.split_whitespace().next().and_then(|id| id.parse().ok()).expect("prog id")
}

// ---------------------------------------------------------------------------
// Fan-out across namespaces
// ---------------------------------------------------------------------------

/// UDP InDatagrams and InCsumErrors of namespace `ns`.
fn udp_snmp(ns: &str) -> (u64, u64) {
    let snmp = run("ip", &["netns", "exec", ns, "cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp: "));
    let names: Vec<&str> = udp.next().expect("Udp names").split_whitespace().collect();
    let values: Vec<&str> = udp.next().expect("Udp values").split_whitespace().collect();
    let field = |name: &str| -> u64 {
        let at = names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("no {name}"));
        values[at].parse().expect("number")
    };
    (field("InDatagrams"), field("InCsumErrors"))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// A bridge namespace, the leader (replica 0) and `replica_count - 1`
/// followers, each on a veth into the bridge, in 10.201.`net`.0/24. The
/// leader runs electrode_xdp (learning) and electrode_tc on its veth; the
/// followers teach it their MACs by sending it one PrepareOK each; then the
/// leader sends `rounds` marked Prepares, one sendto each, to follower 1.
///
/// Every follower must receive each Prepare exactly once, unmarked, and no
/// UDP checksum error. The bridge's ports towards the followers have TX
/// checksum offload off, so the bridge finishes a CHECKSUM_PARTIAL
/// checksum in software and the follower verifies it: a wrong
/// pseudo-header fix-up shows as InCsumErrors. `leader_offload` false makes
/// the leader's socket checksum in full instead (the other skb state).
fn fan_out(test: &str, net: u8, replica_count: u8, leader_offload: bool, rounds: u64) {
    if !require_root(test) {
        return;
    }
    let mut suffixes = vec!["br".to_string()];
    suffixes.extend((0..replica_count).map(|i| format!("r{i}")));
    let netns = Netns::create(&suffixes.iter().map(String::as_str).collect::<Vec<_>>());
    let replica_ns = |i: u8| netns.name(usize::from(i) + 1).to_string();
    let bridge = netns.name(0).to_string();
    let ip_of = |i: u8| Ipv4Addr::new(10, 201, net, 10 + i);
    let mac_of = |i: u8| [0x02, 0xe1, net, 0, 0, i];
    let addr_of = |i: u8| SocketAddrV4::new(ip_of(i), PORT + u16::from(i));

    run("ip", &["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
    run("ip", &["-n", &bridge, "link", "set", "br0", "up"]);
    for i in 0..replica_count {
        let (ns, port) = (replica_ns(i), format!("p{i}"));
        #[rustfmt::skip]
        run("ip", &["link", "add", "eth0", "netns", &ns, "address", &mac_text(mac_of(i)), "type", "veth",
            "peer", "name", &port, "netns", &bridge]);
        run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", ip_of(i)), "dev", "eth0"]);
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &bridge, "link", "set", &port, "master", "br0", "up"]);
        if i > 0 {
            run("ip", &["netns", "exec", &bridge, "ethtool", "-K", &port, "tx", "off"]);
        }
        // Static neighbours for the kernel stack only (no ARP in the way);
        // electrode_tc learns MACs on its own.
        let (from, to) = if i == 0 { continue } else { (i, 0) };
        for (a, b) in [(from, to), (to, from)] {
            #[rustfmt::skip]
            run("ip", &["-n", &replica_ns(a), "neigh", "replace", &ip_of(b).to_string(), "lladdr",
                &mac_text(mac_of(b)), "dev", "eth0", "nud", "permanent"]);
        }
    }
    if !leader_offload {
        run("ip", &["netns", "exec", &replica_ns(0), "ethtool", "-K", "eth0", "tx", "off"]);
    }

    let netns = &netns;
    let (received, delta) = thread::scope(|scope| {
        scope
            .spawn(move || {
                let followers: Vec<(u8, UdpSocket)> = (1..replica_count)
                    .map(|i| {
                        netns.enter(usize::from(i) + 1);
                        let socket = UdpSocket::bind(addr_of(i)).expect("bind follower");
                        socket.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
                        (i, socket)
                    })
                    .collect();
                netns.enter(1); // the leader's; guards must drop in it
                let members: Vec<SocketAddrV4> = (0..replica_count).map(addr_of).collect();
                let loaded = load_with_members(&members);
                let targets: Vec<(u8, SocketAddrV4)> = (1..replica_count).map(|i| (i, addr_of(i))).collect();
                loaded.set_broadcast_targets(0, PORT, &targets).expect("targets");
                loaded.arm_broadcast(true).expect("arm");
                let ifindex = nix::net::if_::if_nametoindex("eth0").expect("leader eth0");
                let _xdp = loaded.attach_xdp(ifindex).expect("attach electrode_xdp");
                let _tc = loaded.attach_tc(ifindex).expect("attach electrode_tc");
                let leader = UdpSocket::bind(addr_of(0)).expect("bind leader");

                for (i, socket) in &followers {
                    socket.send_to(&datagram(*i, &prepare_ok(*i), 0), addr_of(0)).expect("teach");
                }
                let deadline = Instant::now() + Duration::from_secs(5);
                let all: Vec<bool> = (0..replica_count).map(|i| i != 0).collect();
                while loaded.broadcast_coverage().expect("coverage") != all {
                    assert!(Instant::now() < deadline, "MACs not learned: {:?}", loaded.broadcast_macs());
                    thread::sleep(Duration::from_millis(10));
                }
                let macs = loaded.broadcast_macs().expect("macs");
                for i in 1..replica_count {
                    assert_eq!(macs[usize::from(i)], Some(mac_of(i)), "learned MAC of {i}");
                }

                let before = loaded.counters().expect("counters");
                for op in 1..=rounds {
                    leader.send_to(&datagram(0, &prepare(op), BROADCAST), addr_of(1)).expect("sendto");
                }
                let mut received = Vec::new();
                for (i, socket) in &followers {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 2048];
                    while let Ok((len, from)) = socket.recv_from(&mut buf) {
                        assert_eq!(from, std::net::SocketAddr::V4(addr_of(0)), "copy to {i} from the leader");
                        got.push(buf[..len].to_vec());
                    }
                    received.push((*i, got));
                }
                (received, loaded.counters().expect("counters").since(&before))
            })
            .join()
            .expect("test thread")
    });

    for (i, got) in &received {
        let (in_datagrams, in_csum_errors) = udp_snmp(&replica_ns(*i));
        assert_eq!(
            got.len() as u64,
            rounds,
            "follower {i}: copies received (UDP InDatagrams {in_datagrams}, InCsumErrors {in_csum_errors})"
        );
        for (op, copy) in (1..=rounds).zip(got) {
            let want = datagram(0, &prepare(op), 0);
            assert!(copy == &want, "follower {i}, op {op}: got {copy:02x?}, want {want:02x?}");
        }
    }
    let followers = u64::from(replica_count) - 1;
    assert_eq!(delta.tc_marked, rounds, "{delta:?}");
    assert_eq!(delta.tc_copies, rounds * followers, "{delta:?}");
    assert_eq!((delta.tc_error, delta.tc_no_target, delta.tc_malformed), (0, 0, 0), "{delta:?}");
    assert!(delta.tc_pass_unmarked >= rounds * (followers - 1), "clones re-enter once: {delta:?}");
    for i in 1..replica_count {
        let (in_datagrams, in_csum_errors) = udp_snmp(&replica_ns(i));
        assert_eq!(in_csum_errors, 0, "follower {i}: UDP InCsumErrors");
        assert_eq!(in_datagrams, rounds, "follower {i}: UDP InDatagrams");
    }
}

#[test]
fn one_sendto_reaches_every_follower_f1() {
    fan_out("one_sendto_reaches_every_follower_f1", 1, 3, true, 5);
}

#[test]
fn one_sendto_reaches_every_follower_f1_full_software_checksum() {
    fan_out("one_sendto_reaches_every_follower_f1_full_software_checksum", 2, 3, false, 5);
}

#[test]
fn one_sendto_reaches_every_follower_f2() {
    fan_out("one_sendto_reaches_every_follower_f2", 3, 5, true, 5);
}

#[test]
fn one_sendto_reaches_every_follower_f3() {
    fan_out("one_sendto_reaches_every_follower_f3", 4, 7, true, 5);
}

#[test]
fn one_sendto_reaches_every_follower_nine_replicas() {
    fan_out("one_sendto_reaches_every_follower_nine_replicas", 5, 9, true, 50);
}

/// The membership rule (issue 12): a MAC is learned only from the address
/// the replica address table holds for that replica, even when the
/// broadcast target says otherwise; and nothing is learned before the table
/// is written.
#[test]
fn macs_are_learned_only_from_the_address_table_entry() {
    if !require_root("macs_are_learned_only_from_the_address_table_entry") {
        return;
    }
    in_netns(|_| {
        let leader = endpoint(0, PORT);
        let f1 = endpoint(1, PORT + 1);
        let f2 = endpoint(2, PORT + 2);
        let bytes = datagram(1, &prepare_ok(1), 0);
        let learned = |loaded: &Loaded| loaded.counters().expect("counters").tc_mac_learned;

        // No table yet: the target alone teaches nothing (and nothing arms).
        let loaded = load(3);
        loaded.set_broadcast_targets(0, PORT, &[(1, f1.addr), (2, f2.addr)]).expect("targets");
        assert!(loaded.arm_broadcast(true).is_err(), "arm before the address table");
        loaded.test_run_xdp(&frame(f1, leader, &bytes, true)).expect("xdp");
        assert_eq!(learned(&loaded), 0);
        assert_eq!(loaded.broadcast_macs().expect("macs"), [None, None, None]);

        // The table puts replica 1 on another port than its target.
        let moved = SocketAddrV4::new(*f1.addr.ip(), PORT + 50);
        loaded.set_members(&[leader.addr, moved, f2.addr]).expect("table");
        loaded.test_run_xdp(&frame(f1, leader, &bytes, true)).expect("xdp");
        assert_eq!(learned(&loaded), 0);
        assert_eq!(loaded.broadcast_macs().expect("macs"), [None, None, None]);

        // Table and target agree for replica 2: learned.
        teach(&loaded, leader, 2, f2);
        assert_eq!(learned(&loaded), 1);
        assert_eq!(loaded.broadcast_macs().expect("macs"), [None, None, Some(f2.mac)]);
    });
}
