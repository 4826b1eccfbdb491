//! tc_broadcast tests (root): `electrode_tc` on crafted frames with
//! BPF_PROG_TEST_RUN, MAC learning by `electrode_xdp`, the clsact attach
//! guard, one sendto fanned out to every follower across namespaces, and
//! a fuzz of both programs against a model (10^5 frames,
//! ELECTRODE_FUZZ_SEED / ELECTRODE_FUZZ_FRAMES to replay or resize).
//!
//! Test runs of a tc program clone to the `lo` of the calling thread's netns
//! (docs/PLATFORM.md gotcha 3), so every test runs on a thread inside a throwaway
//! namespace of its own. Checksums are checked with the independent
//! implementation below, never with the kernel's; the fuzz model also
//! repeats the kernel helpers' incremental arithmetic, the only way to
//! predict the bytes of a frame whose checksum was wrong to begin with.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    datagram_from, ip_checksum_valid, ipv4_checksum, load, load_with_members, require_root, run,
    udp_checksum_valid, udp_partial_checksum, Netns, Udp4, UdpCheck, CLUSTER_ID, HDR_OFF, PORT,
};
use electrode::fastpath::{tc_action, xdp_action, Counters, Loaded};
use electrode::wire::{self, consts, Message};

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

/// Eth + IPv4 (no options, DF) + UDP from `src` to `dst` carrying `payload`,
/// IP checksum right, UDP checksum right (or 0 without `udp_checksum`).
fn frame(src: Endpoint, dst: Endpoint, payload: &[u8], udp_checksum: bool) -> Vec<u8> {
    let udp_check = if udp_checksum { UdpCheck::Full } else { UdpCheck::None };
    let (src_mac, dst_mac, src, dst) = (src.mac, dst.mac, src.addr, dst.addr);
    Udp4 { src_mac, dst_mac, src, dst, udp_check, ..Udp4::new(dst.port(), payload) }.bytes()
}

/// `msg` from replica `sender` as one datagram with header `flags`.
fn datagram(sender: u8, msg: &Message, flags: u8) -> Vec<u8> {
    datagram_from(CLUSTER_ID, sender, flags, msg)
}

fn prepare(op: u64) -> Message {
    let request = wire::Request { client_id: 7, request_number: op, op: b"put k v".to_vec() };
    Message::Prepare(wire::Prepare { view: 0, op, commit: op - 1, batch: vec![request] })
}

fn prepare_ok(replica: u8) -> Message {
    Message::PrepareOk(wire::PrepareOk { view: 0, op: 1, replica, gap: false })
}

// ---------------------------------------------------------------------------
// Fixture harness
// ---------------------------------------------------------------------------

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

/// `in_netns`, with a veth pair tcg0 <-> tcg1 in the namespace (named to
/// `body`) for attach tests.
fn in_netns_with_tcg0<T: Send>(body: impl FnOnce(&str) -> T + Send) -> T {
    in_netns(|netns| {
        let ns = netns.name(0);
        run("ip", &["-n", ns, "link", "add", "tcg0", "type", "veth", "peer", "name", "tcg1"]);
        body(ns)
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

/// `leader_with_targets`, every follower's MAC learned.
fn leader_knowing_every_follower(replica_count: u8) -> (Loaded, Endpoint, Vec<Endpoint>) {
    let (loaded, leader, followers) = leader_with_targets(replica_count);
    for (i, follower) in followers.iter().enumerate() {
        teach(&loaded, leader, i as u8 + 1, *follower);
    }
    (loaded, leader, followers)
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
    require_root!();
    in_netns(|_| {
        let (loaded, leader, followers) = leader_knowing_every_follower(3);
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
    require_root!();
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
    require_root!();
    in_netns(|_| {
        let (loaded, leader, followers) = leader_knowing_every_follower(3);
        let to = followers[0];
        let marked = datagram(0, &prepare(1), BROADCAST);
        let unmarked = datagram(0, &prepare(1), 0);
        let other_port = Endpoint { addr: SocketAddrV4::new(*leader.addr.ip(), PORT + 50), ..leader };
        let mut wrong_length = marked.clone();
        wrong_length[13] ^= 1; // body_len no longer matches the UDP length
        let other_cluster = datagram_from(CLUSTER_ID + 1, 0, BROADCAST, &prepare(1));
        let mut bad_magic = marked.clone();
        bad_magic[0] ^= 0xff;
        let mut arp = frame(leader, to, &marked, false);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let mut fragment = frame(leader, to, &marked, false);
        fragment[20] = 0x20; // more fragments
        let unmarked_passes = Counters { tc_pass_unmarked: 1, ..Counters::default() };
        let other = Counters { tc_pass_other: 1, ..Counters::default() };
        let malformed = Counters { tc_malformed: 1, ..Counters::default() };
        let cases: Vec<(&str, Vec<u8>, Counters)> = vec![
            ("unmarked", frame(leader, to, &unmarked, true), unmarked_passes),
            ("marked, other source port", frame(other_port, to, &marked, true), other.clone()),
            ("ARP ethertype", arp, other),
            ("marked, body_len wrong", frame(leader, to, &wrong_length, true), malformed.clone()),
            ("marked, other cluster", frame(leader, to, &other_cluster, true), malformed.clone()),
            ("marked, bad magic", frame(leader, to, &bad_magic, true), malformed.clone()),
            ("marked fragment", fragment, malformed.clone()),
            ("marked, truncated frame", frame(leader, to, &marked, true)[..HDR_OFF + 10].to_vec(), malformed),
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
    require_root!();
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
        let client = datagram_from(CLUSTER_ID, wire::CLIENT_SENDER, 0, &request);
        loaded.test_run_xdp(&frame(f1, leader, &client, true)).expect("xdp");
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
    require_root!();
    in_netns_with_tcg0(|ns| {
        let ifindex = nix::net::if_::if_nametoindex("tcg0").expect("ifindex of tcg0");
        let qdiscs = || run("tc", &["-n", ns, "qdisc", "show", "dev", "tcg0"]);
        let filters = || run("tc", &["-n", ns, "filter", "show", "dev", "tcg0", "egress"]);
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
        run("tc", &["-n", ns, "qdisc", "add", "dev", "tcg0", "clsact"]);
        let guard = first.attach_tc(ifindex).expect("attach");
        assert!(!guard.created_qdisc());
        guard.detach().expect("detach");
        assert_eq!(ours(), 0, "{}", filters());
        assert!(qdiscs().contains("clsact"), "foreign qdisc removed: {}", qdiscs());
        run("tc", &["-n", ns, "qdisc", "del", "dev", "tcg0", "clsact"]);

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
        run("tc", &["-n", ns, "qdisc", "del", "dev", "tcg0", "clsact"]);

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
    let Some(ns) = child_spec(KILL9_CHILD_NETNS) else {
        return;
    };
    enter_netns(&ns);
    let loaded = load(3);
    let ifindex = nix::net::if_::if_nametoindex("tcg0").expect("ifindex of tcg0");
    let _guard = loaded.attach_tc(ifindex).expect("attach in child");
    announce_and_wait("attached");
}

#[test]
fn a_restart_after_kill_9_replaces_the_leaked_filter() {
    require_root!();
    in_netns_with_tcg0(|ns| {
        let filters = || run("tc", &["-n", ns, "filter", "show", "dev", "tcg0", "egress"]);
        let ours = || filters().matches("handle 0xe1ec electrode_tc").count();

        let stderr = attach_in_child_and_kill_9(ns);
        assert_eq!(ours(), 1, "the killed run leaves its filter: {}", filters());
        assert!(!stderr.contains("libbpf"), "first run: library output: {stderr}");

        // A restart (itself killed) replaces it with one line and no
        // library output ("Exclusivity flag on" for the existing clsact).
        let first_id = prog_id_in(&filters());
        let stderr = attach_in_child_and_kill_9(ns);
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
    run_child_and_kill_9("kill9_child_attaches_and_waits", KILL9_CHILD_NETNS, ns, "attached").1
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
fn fan_out(net: u8, replica_count: u8, leader_offload: bool, rounds: u64) {
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

/// One root test per row: `name: (net, replica_count, leader_offload,
/// rounds)` of `fan_out`.
macro_rules! fan_out_tests {
    ($($name:ident: $args:expr;)*) => {
        $(
            #[test]
            fn $name() {
                require_root!();
                let (net, replica_count, leader_offload, rounds) = $args;
                fan_out(net, replica_count, leader_offload, rounds);
            }
        )*
    };
}

fan_out_tests! {
    one_sendto_reaches_every_follower_f1: (1, 3, true, 5);
    one_sendto_reaches_every_follower_f1_full_software_checksum: (2, 3, false, 5);
    one_sendto_reaches_every_follower_f2: (3, 5, true, 5);
    one_sendto_reaches_every_follower_f3: (4, 7, true, 5);
    one_sendto_reaches_every_follower_nine_replicas: (5, 9, true, 50);
}

/// The membership rule (issue 12): a MAC is learned only from the address
/// the replica address table holds for that replica, even when the
/// broadcast target says otherwise; and nothing is learned before the table
/// is written.
#[test]
fn macs_are_learned_only_from_the_address_table_entry() {
    require_root!();
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

// ---------------------------------------------------------------------------
// Fuzz against a model (issue 12 item 6)
// ---------------------------------------------------------------------------
//
// `TcModel` is bpf/tc_broadcast.h read rule by rule: for any frame, what
// electrode_tc returns, the bytes it leaves, the clones it sends and the
// counter it bumps; for any frame electrode_xdp sees, what broadcast_learn
// stores in broadcast_macs. The fuzz drives both programs with the same
// maps and user-space calls (targets, arm, disarm) the runtime makes, and
// compares verdict, bytes, clones and MACs after every frame, the counters
// every few frames. The clones are read from `lo` (LoTap below).
//
// What a test run cannot show, so the model leaves it out:
// - clones re-entering electrode_tc: a test run's clones go to `lo`, where
//   nothing is attached (the fan_out tests count the re-entry on a veth);
// - CHECKSUM_PARTIAL and CHECKSUM_COMPLETE skbs: a test run's skb is always
//   CHECKSUM_NONE, so the helpers always update the checksum in the packet
//   (fan_out checks a partial checksum end to end, on the receivers);
// - rewrite helpers failing: every offset they get lies inside a length
//   the program has checked, so they cannot fail on a test run's linear
//   skb. The one failure the fuzz can cause is bpf_clone_redirect's: with
//   `lo` down every clone is refused;
// - the checks that only a map user space never writes could trip
//   (a target at or above replica_count, or at self_index: both refused by
//   set_broadcast_targets): the model has them, no frame can tell.

use common::{
    announce_and_wait, child_spec, classify, enter_netns, fuzz_plan, run_child_and_kill_9, sample_messages,
    Rng,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const MAX_REPLICAS: usize = consts::MAX_REPLICAS as usize;
/// Frames per loaded object; each object gets a new replica count.
const FUZZ_FRAMES_PER_LOAD: u64 = 5_000;
/// Reading the per-CPU counters takes 64 map lookups, more than half of a
/// frame's time in a debug build, so they are compared every few frames;
/// a mismatch names every frame since the last comparison.
const COUNTER_CHECK_EVERY: usize = 4;

// Checksum arithmetic exactly as the kernel helpers do it
// (include/net/checksum.h). They update a checksum incrementally, so on a
// fuzzed frame whose checksum was already wrong only the same arithmetic
// predicts the result, and 0 versus 0xffff depends on its details. Words
// are taken from the packet as the CPU loads them (native byte order), as
// the kernel does.

fn csum_add(a: u32, b: u32) -> u32 {
    let sum = a.wrapping_add(b);
    sum.wrapping_add(u32::from(sum < b))
}

fn csum_fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The packet bytes of a 2- or 4-byte field as the helper's `from`/`to`
/// argument (a 2-byte one is widened: inet_proto_csum_replace2 calls
/// inet_proto_csum_replace4).
fn csum_word(bytes: &[u8]) -> u32 {
    match bytes.len() {
        2 => u32::from(u16::from_ne_bytes([bytes[0], bytes[1]])),
        4 => u32::from_ne_bytes(bytes.try_into().expect("4 bytes")),
        len => panic!("a {len}-byte checksum word"),
    }
}

/// csum_replace4 on the checksum at `at`: bpf_l3_csum_replace, and
/// bpf_l4_csum_replace on an skb that is not CHECKSUM_PARTIAL.
fn csum_replace(frame: &mut [u8], at: usize, from: u32, to: u32) {
    let sum = u32::from(u16::from_ne_bytes([frame[at], frame[at + 1]]));
    let new = csum_fold(csum_add(csum_add(!sum, !from), to));
    frame[at..at + 2].copy_from_slice(&new.to_ne_bytes());
}

/// bpf_l4_csum_replace with BPF_F_MARK_MANGLED_0: a 0 ("no checksum") UDP
/// checksum stays 0, and a result of 0 is stored as 0xffff.
fn l4_csum_replace(frame: &mut [u8], at: usize, from: u32, to: u32) {
    if frame[at..at + 2] == [0, 0] {
        return;
    }
    csum_replace(frame, at, from, to);
    if frame[at..at + 2] == [0, 0] {
        frame[at..at + 2].copy_from_slice(&[0xff, 0xff]);
    }
}

/// What user space last wrote to broadcast_config.
#[derive(Clone, Copy, Debug, Default)]
struct ConfigModel {
    self_port: u16,
    self_index: u8,
    replica_count: u8,
    armed: bool,
}

/// The kernel state electrode_tc and broadcast_learn read, as the model
/// tracks it from the calls the fuzz makes.
#[derive(Debug)]
struct TcModel {
    /// The replica count the object was loaded with (rodata; user space
    /// also writes it into every broadcast_config).
    replica_count: u8,
    /// replica_addrs, once written.
    members: Option<Vec<SocketAddrV4>>,
    config: ConfigModel,
    targets: [Option<SocketAddrV4>; MAX_REPLICAS],
    macs: [Option<[u8; 6]>; MAX_REPLICAS],
    /// Whether the namespace's `lo`, where test-run clones go, is up.
    lo_up: bool,
}

/// What one BPF_PROG_TEST_RUN must give.
#[derive(Debug, PartialEq)]
enum Want {
    /// The kernel refuses a frame shorter than an Ethernet header (EINVAL).
    Refused,
    /// An IPv4 (IPv6) frame shorter than its network header: kernels with
    /// the 2026 test_run fix ("reject ... short network headers", in
    /// 6.18.y) refuse it, older ones run it and the program passes it as
    /// not ours.
    ShortNetworkHeader,
    Ran {
        verdict: u32,
        out: Vec<u8>,
        clones: Vec<Vec<u8>>,
        /// Boxed: Counters holds every counter of the map.
        counters: Box<Counters>,
    },
}

impl TcModel {
    fn new(replica_count: u8) -> TcModel {
        TcModel {
            replica_count,
            members: None,
            config: ConfigModel::default(),
            targets: [None; MAX_REPLICAS],
            macs: [None; MAX_REPLICAS],
            lo_up: true,
        }
    }

    /// Loaded::set_broadcast_targets: config rewritten disarmed; a target
    /// whose address changed (a slot not in use counts as 0.0.0.0:0)
    /// forgets its MAC.
    fn set_targets(&mut self, self_index: u8, self_port: u16, targets: &[(u8, SocketAddrV4)]) {
        let mut wanted = [None; MAX_REPLICAS];
        for &(index, addr) in targets {
            wanted[usize::from(index)] = Some(addr);
        }
        for (index, addr) in wanted.iter().enumerate() {
            if self.targets[index] != *addr {
                self.macs[index] = None;
            }
        }
        self.targets = wanted;
        self.config = ConfigModel { self_port, self_index, replica_count: self.replica_count, armed: false };
    }

    /// Loaded::arm_broadcast: false when it must refuse (no address table,
    /// or no targets set yet), which writes nothing.
    fn arm(&mut self, armed: bool) -> bool {
        if armed && (self.members.is_none() || self.config.self_port == 0) {
            return false;
        }
        self.config.armed = armed;
        self.config.replica_count = self.replica_count;
        true
    }

    /// electrode_tc on `frame` (an skb with `gso_size`).
    fn tc(&self, frame: &[u8], gso_size: u32) -> Want {
        if frame.len() < 14 {
            return Want::Refused;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if (ethertype == 0x0800 && frame.len() < 14 + 20) || (ethertype == 0x86dd && frame.len() < 14 + 40) {
            return Want::ShortNetworkHeader;
        }
        let untouched = |counters| Want::Ran {
            verdict: tc_action::OK,
            out: frame.to_vec(),
            clones: vec![],
            counters: Box::new(counters),
        };
        let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
        let other = Counters { tc_pass_other: 1, ..Counters::default() };
        // Ethernet, IPv4 and UDP headers must load, UDP from our port.
        if be16(12) != 0x0800 || frame.len() < 34 {
            return untouched(other);
        }
        let (version, ihl) = (frame[14] >> 4, usize::from(frame[14] & 0x0f));
        if version != 4 || frame[23] != 17 || ihl < 5 {
            return untouched(other);
        }
        let udp = 14 + 4 * ihl;
        if frame.len() < udp + 8 || be16(udp) != self.config.self_port {
            return untouched(other);
        }
        // From our port: a well-formed datagram of our cluster, or counted.
        let udp_len = usize::from(be16(udp + 4));
        let hdr = udp + 8;
        if gso_size != 0
            || be16(20) & 0x3fff != 0
            || !(8 + 24..=8 + wire::MAX_DATAGRAM_LEN).contains(&udp_len)
            || udp + udp_len > frame.len()
            || frame[hdr..hdr + 4] != consts::MAGIC.to_be_bytes()
            || u32::from(frame[hdr + 4]) != consts::PROTOCOL_VERSION
            || frame[hdr + 8..hdr + 12] != CLUSTER_ID.to_be_bytes()
            || usize::from(be16(hdr + 12)) + 24 + 8 != udp_len
        {
            return untouched(Counters { tc_malformed: 1, ..Counters::default() });
        }
        let flags = frame[hdr + 7];
        if flags & BROADCAST == 0 {
            return untouched(Counters { tc_pass_unmarked: 1, ..Counters::default() });
        }
        let mut counters = Counters { tc_marked: 1, ..Counters::default() };
        let config = self.config;
        let eligible: Vec<usize> = (0..MAX_REPLICAS)
            .filter(|&i| {
                config.armed
                    && i < usize::from(config.replica_count)
                    && i != usize::from(config.self_index)
                    && self.targets[i].is_some()
                    && self.macs[i].is_some()
            })
            .collect();
        if eligible.is_empty() {
            counters.tc_no_target = 1;
            return untouched(counters);
        }

        // The flag goes first, then each follower in index order: MAC, IP
        // (pseudo-header and IP checksum), port; a clone for all but the
        // last, which leaves as the original.
        let mut out = frame.to_vec();
        let udp_check = udp + 6;
        let word = hdr + 6; // sender and flags: one 16-bit word of the sum
        let cleared = [frame[word], flags & !BROADCAST];
        let old = csum_word(&out[word..word + 2]);
        l4_csum_replace(&mut out, udp_check, old, csum_word(&cleared));
        out[word..word + 2].copy_from_slice(&cleared);
        let mut clones = Vec::new();
        for (k, &index) in eligible.iter().enumerate() {
            let addr = self.targets[index].expect("eligible");
            out[..6].copy_from_slice(&self.macs[index].expect("eligible"));
            let ip = addr.ip().octets();
            if out[30..34] != ip {
                let (old, new) = (csum_word(&out[30..34]), csum_word(&ip));
                l4_csum_replace(&mut out, udp_check, old, new);
                csum_replace(&mut out, 24, old, new);
                out[30..34].copy_from_slice(&ip);
            }
            let port = addr.port().to_be_bytes();
            if out[udp + 2..udp + 4] != port {
                let old = csum_word(&out[udp + 2..udp + 4]);
                l4_csum_replace(&mut out, udp_check, old, csum_word(&port));
                out[udp + 2..udp + 4].copy_from_slice(&port);
            }
            if k + 1 < eligible.len() {
                if !self.lo_up {
                    // Refused: no copy for this follower, none for the rest.
                    counters.tc_error = 1;
                    return Want::Ran { verdict: tc_action::SHOT, out, clones, counters: Box::new(counters) };
                }
                clones.push(out.clone());
            }
            counters.tc_copies += 1; // sent: a clone, or the original (last)
        }
        Want::Ran { verdict: tc_action::OK, out, clones, counters: Box::new(counters) }
    }

    /// electrode_xdp on `frame` as far as tc_broadcast sees it: None if the
    /// kernel refuses the test run, else whether broadcast_learn stored a
    /// new MAC (the model's MACs are updated).
    fn xdp(&mut self, frame: &[u8]) -> Option<bool> {
        if frame.len() < 14 {
            return None;
        }
        Some(self.learn(frame))
    }

    fn learn(&mut self, frame: &[u8]) -> bool {
        // parse_frame (bpf/parse.h): a well-formed datagram to our port.
        let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
        if be16(12) != 0x0800 || frame.len() < 34 || frame[23] != 17 || frame[14] >> 4 != 4 {
            return false;
        }
        let udp = 14 + 4 * usize::from(frame[14] & 0x0f);
        if udp < 34 || frame.len() < udp + 8 || be16(udp + 2) != PORT || be16(20) & 0x3fff != 0 {
            return false;
        }
        let udp_len = usize::from(be16(udp + 4));
        if !(8 + 24..=8 + wire::MAX_DATAGRAM_LEN).contains(&udp_len) || udp + udp_len > frame.len() {
            return false;
        }
        let Some((_, sender, _, _)) = classify(&frame[udp + 8..udp + udp_len], CLUSTER_ID) else {
            return false;
        };
        // broadcast_learn: a follower's target, and the source is both its
        // configured address (membership rule) and its target address.
        let index = usize::from(sender);
        let config = self.config;
        if index >= MAX_REPLICAS
            || index >= usize::from(config.replica_count)
            || index == usize::from(config.self_index)
        {
            return false;
        }
        let Some(target) = self.targets[index] else { return false };
        let member = self.members.as_ref().and_then(|members| members.get(index).copied());
        let ip: [u8; 4] = frame[26..30].try_into().expect("4 bytes");
        let source = SocketAddrV4::new(Ipv4Addr::from(ip), be16(udp));
        if index >= usize::from(self.replica_count) || member != Some(source) || target != source {
            return false;
        }
        let mac: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
        if self.macs[index] == Some(mac) {
            return false;
        }
        self.macs[index] = Some(mac);
        true
    }
}

/// The tc_broadcast counters of `counters`, others zero.
fn tc_part(counters: &Counters) -> Counters {
    Counters {
        tc_marked: counters.tc_marked,
        tc_copies: counters.tc_copies,
        tc_error: counters.tc_error,
        tc_no_target: counters.tc_no_target,
        tc_pass_unmarked: counters.tc_pass_unmarked,
        tc_pass_other: counters.tc_pass_other,
        tc_malformed: counters.tc_malformed,
        tc_mac_learned: counters.tc_mac_learned,
        ..Counters::default()
    }
}

fn add_tc(total: &mut Counters, delta: &Counters) {
    total.tc_marked += delta.tc_marked;
    total.tc_copies += delta.tc_copies;
    total.tc_error += delta.tc_error;
    total.tc_no_target += delta.tc_no_target;
    total.tc_pass_unmarked += delta.tc_pass_unmarked;
    total.tc_pass_other += delta.tc_pass_other;
    total.tc_malformed += delta.tc_malformed;
    total.tc_mac_learned += delta.tc_mac_learned;
}

/// Every frame sent on the namespace's `lo`, where a test run's clones go
/// (docs/PLATFORM.md gotcha 3). The packet socket gets each clone synchronously,
/// inside bpf_clone_redirect (dev_queue_xmit_nit runs before
/// loopback_xmit), so after a test run its clones are all queued, in the
/// order they were made. A classic BPF filter keeps only PACKET_OUTGOING:
/// the same frames coming back in through `lo` are not clones.
struct LoTap(OwnedFd);

impl LoTap {
    fn open() -> LoTap {
        let all = i32::from((libc::ETH_P_ALL as u16).to_be());
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, all)
        };
        assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a socket we just opened and own.
        let tap = LoTap(unsafe { OwnedFd::from_raw_fd(fd) });
        let filter = [
            libc::sock_filter {
                code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                jt: 0,
                jf: 0,
                k: (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32,
            },
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: u32::from(libc::PACKET_OUTGOING),
            },
            libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: u32::MAX },
            libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 },
        ];
        let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
        tap.set_option(libc::SO_ATTACH_FILTER, &program);
        tap.set_option(libc::SO_RCVBUFFORCE, &(8i32 << 20));
        let lo = nix::net::if_::if_nametoindex("lo").expect("ifindex of lo");
        // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        address.sll_ifindex = lo as i32;
        // SAFETY: address is a valid sockaddr_ll of the length given.
        let bound = unsafe {
            libc::bind(
                tap.0.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(bound, 0, "bind packet socket to lo: {}", std::io::Error::last_os_error());
        tap.drain(); // anything from before the filter
        tap
    }

    fn set_option<T>(&self, name: libc::c_int, value: &T) {
        // SAFETY: value points to a live T of the length given.
        let set = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (value as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "setsockopt {name} on the packet socket: {}", std::io::Error::last_os_error());
    }

    /// Brings `lo` up or down (SIOCSIFFLAGS, in the calling thread's
    /// namespace). Down, it refuses every clone.
    fn set_lo_up(&self, up: bool) {
        // SAFETY: ifreq is plain old data; all zeroes is valid.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
            *slot = *byte as libc::c_char;
        }
        // SAFETY: request is a valid ifreq naming lo; the kernel fills
        // ifru_flags, the union member read and written below.
        unsafe {
            assert_eq!(
                libc::ioctl(self.0.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request),
                0,
                "SIOCGIFFLAGS lo"
            );
            let flags = &mut request.ifr_ifru.ifru_flags;
            *flags = if up {
                *flags | libc::IFF_UP as libc::c_short
            } else {
                *flags & !(libc::IFF_UP as libc::c_short)
            };
            let set = libc::ioctl(self.0.as_raw_fd(), libc::SIOCSIFFLAGS, &request);
            assert_eq!(set, 0, "SIOCSIFFLAGS lo: {}", std::io::Error::last_os_error());
        }
    }

    /// The frames queued since the last call.
    fn drain(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: buf is writable for its whole length.
            let len = unsafe {
                libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            };
            if len >= 0 {
                frames.push(buf[..len as usize].to_vec());
                continue;
            }
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EAGAIN) => return frames,
                // Reported once after `lo` went down; the socket is bound
                // again when it comes up.
                Some(libc::ENETDOWN) | Some(libc::EINTR) => continue,
                _ => panic!("recv on the packet socket: {error}"),
            }
        }
    }
}

/// What the fuzz reached, so a change that makes it miss a path fails.
#[derive(Debug, Default)]
struct FuzzReach {
    tc_frames: u64,
    xdp_frames: u64,
    /// Frames BPF_PROG_TEST_RUN refused (too short).
    refused: u64,
    /// Marked frames rewritten for at least one follower.
    fanned_out: u64,
    /// Clones seen on `lo`.
    clones: u64,
    fanned_out_with_ip_options: u64,
    /// Frames run as a GSO skb.
    gso: u64,
    /// Objects loaded (one replica count each).
    loads: u64,
    /// Frames fanned out while `lo` was down.
    fanned_out_lo_down: u64,
}

/// The messages frames are made of: one of every type, and Prepares from
/// one small request to a datagram nearly full.
fn fuzz_messages(rng: &mut Rng) -> Vec<Message> {
    let mut messages = sample_messages();
    for (requests, op_len_max) in [(1u64, 200u64), (3, 30), (12, 60), (32, 12)] {
        let batch = (0..requests)
            .map(|i| wire::Request {
                client_id: rng.next_u64(),
                request_number: i + 1,
                op: vec![b'a' + (i % 26) as u8; rng.below(op_len_max) as usize],
            })
            .collect();
        let op = 1 + rng.below(1000);
        messages.push(Message::Prepare(wire::Prepare { view: rng.below(4), op, commit: op - 1, batch }));
    }
    messages
}

/// `frame` with IP options inserted after the 20-byte IPv4 header, its
/// length fields and checksum fixed (the UDP checksum does not cover them).
fn with_ip_options(mut frame: Vec<u8>, options: &[u8]) -> Vec<u8> {
    assert!(options.len() % 4 == 0 && options.len() <= 40);
    let ihl = 5 + options.len() / 4;
    frame.splice(34..34, options.iter().copied());
    frame[14] = 0x40 | ihl as u8;
    let total_len = (frame.len() - 14) as u16;
    frame[16..18].copy_from_slice(&total_len.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let check = ipv4_checksum(&frame[14..14 + 4 * ihl]);
    frame[24..26].copy_from_slice(&check.to_be_bytes());
    frame
}

/// Spoils a frame the way a sender or the network might: IP options, then
/// (each with `percent` chance) one header field off, random bytes
/// anywhere, a cut or trailing bytes. Returns what it did.
fn mutate(rng: &mut Rng, frame: &mut Vec<u8>, percent: u64) -> Vec<&'static str> {
    let mut done = Vec::new();
    if rng.percent(8) {
        let len = 4 * (1 + rng.below(10) as usize);
        let options: Vec<u8> =
            if rng.percent(50) { vec![1; len] } else { (0..len).map(|_| rng.next_u64() as u8).collect() };
        *frame = with_ip_options(std::mem::take(frame), &options);
        done.push("ip options");
    }
    let udp = 14 + 4 * usize::from(frame[14] & 0x0f);
    let hdr = udp + 8;
    if rng.percent(percent) {
        #[rustfmt::skip]
        let fields = [
            ("ethertype", 12, 2), ("ip version/ihl", 14, 1), ("ip fragment", 20, 2), ("ip protocol", 23, 1),
            ("ip checksum", 24, 2), ("ip daddr", 30, 4), ("udp source", udp, 2), ("udp dest", udp + 2, 2),
            ("udp length", udp + 4, 2), ("udp checksum", udp + 6, 2), ("magic", hdr, 4),
            ("version", hdr + 4, 1), ("sender/flags", hdr + 6, 2), ("cluster", hdr + 8, 4),
            ("body_len", hdr + 12, 2),
        ];
        let (what, at, len) = *rng.pick(&fields);
        if at + len <= frame.len() {
            let byte = at + rng.below(len as u64) as usize;
            frame[byte] = match rng.below(3) {
                0 => frame[byte] ^ (1 << rng.below(8)),
                1 => frame[byte].wrapping_add(1),
                _ => rng.next_u64() as u8,
            };
            done.push(what);
        }
    }
    if rng.percent(percent) {
        for _ in 0..=rng.below(3) {
            let at = rng.below(frame.len() as u64) as usize;
            frame[at] = rng.next_u64() as u8;
        }
        done.push("random bytes");
    }
    if rng.percent(percent / 3) {
        frame.truncate(rng.below(frame.len() as u64) as usize);
        done.push("cut");
    } else if rng.percent(percent / 4) {
        for _ in 0..=rng.below(40) {
            frame.push(rng.next_u64() as u8);
        }
        done.push("trailing bytes");
    }
    done
}

/// One loaded object (one replica count), its model, and the addresses.
struct FuzzLoad {
    loaded: Loaded,
    model: TcModel,
    /// Replica i's configured address (in replica_addrs once
    /// `model.members` says so).
    plan: Vec<SocketAddrV4>,
    /// Third octet of every address and fourth of every MAC of this load.
    net: u8,
    /// The tc_broadcast counters so far, as the model counts them.
    want: Counters,
    /// Frames since the counters were last compared.
    unchecked: Vec<FrameNote>,
}

impl FuzzLoad {
    /// Loads the object for 1 to 9 replicas, then does what a replica's
    /// start does, with steps left out now and then: the address table,
    /// the targets, arming.
    fn start(rng: &mut Rng) -> FuzzLoad {
        let replica_count = match rng.below(10) {
            0 => 1,
            1 => 2,
            _ => 3 + rng.below(7) as u8,
        };
        let net = rng.below(250) as u8;
        let same_port = rng.percent(50);
        let plan: Vec<SocketAddrV4> = (0..replica_count)
            .map(|i| {
                let port = if same_port { PORT } else { PORT + u16::from(i) };
                SocketAddrV4::new(Ipv4Addr::new(10, 201, net, 10 + i), port)
            })
            .collect();
        let mut fuzz = FuzzLoad {
            loaded: load(u32::from(replica_count)),
            model: TcModel::new(replica_count),
            plan,
            net,
            want: Counters::default(),
            unchecked: Vec::new(),
        };
        if rng.percent(90) {
            fuzz.loaded.set_members(&fuzz.plan).expect("write replica_addrs");
            fuzz.model.members = Some(fuzz.plan.clone());
        }
        if rng.percent(85) {
            let self_index = rng.below(u64::from(replica_count)) as u8;
            fuzz.set_targets(rng, self_index);
            if rng.percent(80) {
                fuzz.arm(true);
            }
        }
        fuzz
    }

    fn mac_of(&self, index: u8, which: u8) -> [u8; 6] {
        [0x02, 0xe1, 0x7c, self.net, which, index]
    }

    fn self_index(&self) -> u8 {
        self.model.config.self_index
    }

    /// New targets for `self_index` (disarms): most followers, most at
    /// their configured address, some at another.
    fn set_targets(&mut self, rng: &mut Rng, self_index: u8) {
        let mut targets = Vec::new();
        for (index, addr) in self.plan.iter().enumerate() {
            let index = index as u8;
            if index == self_index || !rng.percent(85) {
                continue;
            }
            let addr = match rng.below(20) {
                0 => SocketAddrV4::new(*addr.ip(), addr.port().wrapping_add(1000)),
                1 => SocketAddrV4::new(Ipv4Addr::new(10, 201, self.net, 100 + index), addr.port()),
                _ => *addr,
            };
            targets.push((index, addr));
        }
        let self_port = self.plan[usize::from(self_index)].port();
        self.loaded.set_broadcast_targets(self_index, self_port, &targets).expect("set targets");
        self.model.set_targets(self_index, self_port, &targets);
    }

    fn arm(&mut self, armed: bool) {
        let want = self.model.arm(armed);
        let got = self.loaded.arm_broadcast(armed);
        assert_eq!(got.is_ok(), want, "arm_broadcast({armed}): {got:?}, model {:?}", self.model);
    }

    /// What user space does between datagrams, now and then: arm, disarm,
    /// new targets; and `lo` going down (clones fail) and up.
    fn user_space(&mut self, rng: &mut Rng, tap: &LoTap) {
        // Disarmed stretches are short (a view change), armed ones long.
        let flip_arm = if self.model.config.armed { rng.below(1000) == 0 } else { rng.percent(2) };
        if flip_arm {
            self.arm(!self.model.config.armed);
        } else if rng.below(1000) == 0 {
            let self_index = if rng.percent(90) {
                self.self_index()
            } else {
                rng.below(u64::from(self.model.replica_count)) as u8
            };
            self.set_targets(rng, self_index);
            if rng.percent(70) {
                self.arm(true);
            }
        } else {
            return self.toggle_lo(rng, tap);
        }
        assert_eq!(self.loaded.broadcast_armed().expect("armed?"), self.model.config.armed);
        self.check_macs(&"after a user-space call");
        let covered: Vec<bool> = (0..usize::from(self.model.replica_count))
            .map(|i| self.model.targets[i].is_some() && self.model.macs[i].is_some())
            .collect();
        assert_eq!(self.loaded.broadcast_coverage().expect("coverage"), covered, "{:?}", self.model);
    }

    fn toggle_lo(&mut self, rng: &mut Rng, tap: &LoTap) {
        let flip = if self.model.lo_up { rng.below(1000) == 0 } else { rng.percent(3) };
        if flip {
            self.model.lo_up = !self.model.lo_up;
            tap.set_lo_up(self.model.lo_up);
        }
    }

    fn check_macs(&self, context: &dyn std::fmt::Display) {
        let got = self.loaded.broadcast_macs().expect("broadcast_macs");
        let want = &self.model.macs[..usize::from(self.model.replica_count)];
        assert_eq!(got, want, "{context}: learned MACs, model {:?}", self.model);
    }

    /// Compares the counters with the model's, naming every frame since
    /// the last comparison if they differ.
    fn check_counters(&mut self) {
        let got = tc_part(&self.loaded.counters().expect("counters"));
        if got != self.want {
            let frames: Vec<String> = self
                .unchecked
                .iter()
                .map(|note| format!("{note}\n  counted {:?}", tc_part(&note.counted)))
                .collect();
            panic!(
                "tc_broadcast counters {got:?}, the model counted {:?}, after these frames:\n{}\nmodel {:?}",
                self.want,
                frames.join("\n"),
                self.model
            );
        }
        self.unchecked.clear();
    }

    /// Counters are compared every COUNTER_CHECK_EVERY frames.
    fn counted(&mut self, mut note: FrameNote, counted: Counters) {
        add_tc(&mut self.want, &counted);
        note.counted = counted;
        self.unchecked.push(note);
        if self.unchecked.len() >= COUNTER_CHECK_EVERY {
            self.check_counters();
        }
    }

    /// A datagram towards the leader, mostly from a member's address and
    /// MAC, sometimes claiming another's, sometimes spoilt.
    fn xdp_input(&self, rng: &mut Rng, messages: &[Message]) -> (Vec<u8>, Vec<&'static str>) {
        let replica_count = self.model.replica_count;
        let sender = match rng.below(20) {
            0 => wire::CLIENT_SENDER,
            1 => rng.next_u64() as u8,
            _ => rng.below(u64::from(replica_count)) as u8,
        };
        let any_member = *rng.pick(&self.plan);
        let own = self.plan.get(usize::from(sender)).copied().unwrap_or(any_member);
        let stranger = Ipv4Addr::new(10, 201, self.net, 200 + rng.below(50) as u8);
        let target = self.model.targets.get(usize::from(sender)).copied().flatten();
        let source = match rng.below(10) {
            0 => any_member,
            1 => SocketAddrV4::new(*own.ip(), rng.next_u64() as u16),
            2 => SocketAddrV4::new(stranger, own.port()),
            3 => target.unwrap_or(own),
            _ => own,
        };
        let mac = if rng.percent(85) {
            self.mac_of(sender, rng.below(2) as u8)
        } else {
            [0x02, 0xe1, 0x7c, self.net, 0xfe, rng.next_u64() as u8]
        };
        let cluster_id = if rng.percent(97) { CLUSTER_ID } else { rng.next_u64() as u32 };
        let flags = if rng.percent(90) { 0 } else { rng.next_u64() as u8 };
        let payload = datagram_from(cluster_id, sender, flags, rng.pick(messages));
        let leader = self.plan[usize::from(self.self_index())];
        let port = if rng.percent(95) { PORT } else { rng.next_u64() as u16 };
        let to = Endpoint {
            mac: self.mac_of(self.self_index(), 0xee),
            addr: SocketAddrV4::new(*leader.ip(), port),
        };
        let mut input = frame(Endpoint { mac, addr: source }, to, &payload, rng.percent(50));
        let done = mutate(rng, &mut input, 5);
        (input, done)
    }

    /// A datagram the leader sends: mostly from its port, mostly marked,
    /// to a member or anywhere, sometimes spoilt; and its skb's gso_size.
    fn tc_input(&self, rng: &mut Rng, messages: &[Message]) -> (Vec<u8>, u32, Vec<&'static str>) {
        let self_index = self.self_index();
        let sender = if rng.percent(90) { self_index } else { rng.next_u64() as u8 };
        let flags = match rng.below(20) {
            0..=11 => BROADCAST,
            12..=16 => 0,
            _ => rng.next_u64() as u8,
        };
        let cluster_id = if rng.percent(97) { CLUSTER_ID } else { CLUSTER_ID ^ (1 << rng.below(32)) };
        let mut payload = datagram_from(cluster_id, sender, flags, rng.pick(messages));
        let mut done = Vec::new();
        if rng.percent(2) {
            // Around the largest datagram, lengths consistent.
            let len = wire::MAX_DATAGRAM_LEN - 12 + rng.below(24) as usize;
            payload.resize(len, 0x5a);
            payload[12..14].copy_from_slice(&((len - 24) as u16).to_be_bytes());
            done.push("long");
        }
        let own = self.plan[usize::from(self_index)];
        let port = match rng.below(20) {
            0 => rng.next_u64() as u16,
            1 => 0,
            2 => rng.pick(&self.plan).port(),
            _ => self.model.config.self_port,
        };
        let ip = if rng.percent(95) { *own.ip() } else { Ipv4Addr::from(rng.next_u64() as u32) };
        let to = if rng.percent(80) {
            *rng.pick(&self.plan)
        } else {
            SocketAddrV4::new(Ipv4Addr::from(rng.next_u64() as u32), rng.next_u64() as u16)
        };
        let source = Endpoint { mac: self.mac_of(self_index, 0xee), addr: SocketAddrV4::new(ip, port) };
        let mac = [0x02, 0xe1, 0x7c, self.net, 0xdd, rng.next_u64() as u8];
        let mut input = frame(source, Endpoint { mac, addr: to }, &payload, rng.percent(60));
        if input[40..42] == [0, 0] && rng.percent(30) {
            // What a CHECKSUM_PARTIAL skb carries, or anything.
            let check = if rng.percent(50) { udp_partial_checksum(&input) } else { rng.next_u64() as u16 };
            input[40..42].copy_from_slice(&check.to_be_bytes());
            done.push("udp checksum not full");
        }
        let gso_size = if rng.percent(2) { 1 + rng.below(1500) as u32 } else { 0 };
        if rng.percent(1) {
            // An IHL below 5 whose "UDP header" holds our port all the same.
            let ihl = 1 + rng.below(4) as usize;
            input[14] = 0x40 | ihl as u8;
            input[14 + 4 * ihl..][..2].copy_from_slice(&self.model.config.self_port.to_be_bytes());
            done.push("ihl below 5");
        }
        done.extend(mutate(rng, &mut input, 10));
        (input, gso_size, done)
    }

    /// electrode_xdp on the frame: verdict, learned MACs and counters as
    /// the model says.
    fn run_xdp(&mut self, note: FrameNote) {
        let input = &note.input;
        let got = self.loaded.test_run_xdp(input);
        let counted = match self.model.xdp(input) {
            None => {
                assert!(got.is_err(), "{note}: a {}-byte frame must be refused: {got:?}", input.len());
                Counters::default()
            }
            Some(learned) => {
                let (verdict, _) = got.unwrap_or_else(|error| panic!("{note}: xdp test run: {error:#}"));
                assert_eq!(verdict, xdp_action::PASS, "{note}: verdict");
                Counters { tc_mac_learned: u64::from(learned), ..Counters::default() }
            }
        };
        self.check_macs(&note);
        self.counted(note, counted);
    }

    /// electrode_tc on the frame: verdict, output, clones and counters as
    /// the model says. Returns what the model counted (None: refused).
    fn run_tc(&mut self, note: FrameNote, tap: &LoTap) -> Option<Counters> {
        let input = &note.input;
        let want = self.model.tc(input, note.gso_size);
        let got = self.loaded.test_run_tc_gso(input, note.gso_size);
        let clones = tap.drain();
        let model = &self.model;
        let counted = match want {
            Want::Refused => {
                assert!(got.is_err(), "{note}: a {}-byte frame must be refused: {got:?}", input.len());
                assert!(clones.is_empty(), "{note}: clones of a refused frame");
                None
            }
            Want::ShortNetworkHeader => {
                assert!(clones.is_empty(), "{note}: clones of a short frame");
                let passed = got.ok().inspect(|(verdict, out)| {
                    assert_eq!(
                        (*verdict, out.as_slice()),
                        (tc_action::OK, &input[..]),
                        "{note}: short frame"
                    );
                });
                passed.map(|_| Counters { tc_pass_other: 1, ..Counters::default() })
            }
            Want::Ran { verdict, out, clones: want_clones, counters } => {
                let (got_verdict, got_out) =
                    got.unwrap_or_else(|error| panic!("{note}: tc test run: {error:#}"));
                assert_eq!(got_verdict, verdict, "{note}: verdict, model {model:?}");
                assert_eq!(got_out, out, "{note}: output frame, model {model:?}");
                assert_eq!(clones, want_clones, "{note}: clones on lo, model {model:?}");
                // The independent checksum check too, where the input's
                // checksums were right.
                if counters.tc_copies > 0
                    && input[14] == 0x45
                    && ip_checksum_valid(input)
                    && udp_checksum_valid(input)
                {
                    for copy in clones.iter().chain([&got_out]) {
                        assert!(
                            ip_checksum_valid(copy) && udp_checksum_valid(copy),
                            "{note}: checksums of {copy:02x?}"
                        );
                    }
                }
                Some(*counters)
            }
        };
        self.counted(note, counted.clone().unwrap_or_default());
        counted
    }
}

/// A frame the fuzz ran, as a failure names it.
struct FrameNote {
    n: u64,
    seed: u64,
    /// "tc", "xdp", or "xdp (teach)".
    program: &'static str,
    gso_size: u32,
    /// The mutations it went through.
    done: Vec<&'static str>,
    input: Vec<u8>,
    /// What the model counted for it.
    counted: Counters,
}

impl FrameNote {
    fn new(n: u64, seed: u64, program: &'static str, input: Vec<u8>) -> FrameNote {
        FrameNote { n, seed, program, gso_size: 0, done: Vec::new(), input, counted: Counters::default() }
    }
}

impl std::fmt::Display for FrameNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let FrameNote { n, seed, program, gso_size, done, input, .. } = self;
        write!(f, "frame {n} (seed {seed}), {program}, gso_size {gso_size}, {done:?}: {input:02x?}")
    }
}

/// The fuzz body, on a thread in a namespace of its own.
fn fuzz_tc_broadcast(seed: u64, frames: u64) -> (Counters, FuzzReach) {
    let mut rng = Rng::new(seed);
    let tap = LoTap::open();
    let messages = fuzz_messages(&mut rng);
    let (mut total, mut reach) = (Counters::default(), FuzzReach::default());
    let mut n = 0u64;
    while n < frames {
        let mut fuzz = FuzzLoad::start(&mut rng);
        reach.loads += 1;
        // Most followers teach their MAC first, as they do by sending.
        for index in 0..fuzz.model.replica_count {
            if index == fuzz.self_index() || !rng.percent(80) {
                continue;
            }
            let source = Endpoint { mac: fuzz.mac_of(index, 0), addr: fuzz.plan[usize::from(index)] };
            let leader = fuzz.plan[usize::from(fuzz.self_index())];
            let to = Endpoint {
                mac: fuzz.mac_of(fuzz.self_index(), 0xee),
                addr: SocketAddrV4::new(*leader.ip(), PORT),
            };
            let input = frame(source, to, &datagram(index, &prepare_ok(index), 0), true);
            fuzz.run_xdp(FrameNote::new(n, seed, "xdp (teach)", input));
        }
        let end = frames.min(n + FUZZ_FRAMES_PER_LOAD);
        while n < end {
            fuzz.user_space(&mut rng, &tap);
            if rng.percent(25) {
                let (input, done) = fuzz.xdp_input(&mut rng, &messages);
                reach.xdp_frames += 1;
                reach.refused += u64::from(input.len() < 14);
                fuzz.run_xdp(FrameNote { done, ..FrameNote::new(n, seed, "xdp", input) });
            } else {
                let (input, gso_size, done) = fuzz.tc_input(&mut rng, &messages);
                let options = input.len() > 14 && input[14] != 0x45;
                let note = FrameNote { gso_size, done, ..FrameNote::new(n, seed, "tc", input) };
                reach.tc_frames += 1;
                reach.gso += u64::from(gso_size != 0);
                match fuzz.run_tc(note, &tap) {
                    None => reach.refused += 1,
                    Some(counted) if counted.tc_marked == 1 && counted.tc_no_target == 0 => {
                        reach.fanned_out += 1;
                        // Every copy sent but the original is a clone.
                        reach.clones += counted.tc_copies - u64::from(counted.tc_error == 0);
                        reach.fanned_out_with_ip_options += u64::from(options);
                        reach.fanned_out_lo_down += u64::from(!fuzz.model.lo_up);
                    }
                    Some(_) => {}
                }
            }
            n += 1;
        }
        fuzz.check_counters();
        add_tc(&mut total, &fuzz.want);
        if !fuzz.model.lo_up {
            tap.set_lo_up(true);
        }
    }
    (total, reach)
}

#[test]
fn fuzzed_egress_frames_and_learning_match_the_model() {
    require_root!();
    let (seed, frames, _) = fuzz_plan(0x7cb0_5eed);
    let started = Instant::now();
    let (total, reach) = in_netns(|_| fuzz_tc_broadcast(seed, frames));
    eprintln!("{frames} frames in {:.1?}: {total:?}, {reach:?}", started.elapsed());
    // Every path, often enough to mean something (10^5 frames: >= 100).
    let least = frames / 1000;
    #[rustfmt::skip]
    let paths = [
        ("pass_other", total.tc_pass_other), ("malformed", total.tc_malformed),
        ("pass_unmarked", total.tc_pass_unmarked), ("no_target", total.tc_no_target),
        ("marked", total.tc_marked), ("error", total.tc_error), ("mac_learned", total.tc_mac_learned),
        ("fanned out", reach.fanned_out), ("clones", reach.clones), ("refused", reach.refused),
        ("fanned out with IP options", reach.fanned_out_with_ip_options), ("gso", reach.gso),
    ];
    for (path, count) in paths {
        assert!(count >= least, "seed {seed}: {path} reached {count} times, want >= {least}: {reach:?}");
    }
}
