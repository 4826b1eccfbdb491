//! eBPF tests (root): `electrode_xdp` on crafted frames with
//! BPF_PROG_TEST_RUN, and on a real veth pair between two namespaces.
//!
//! Each test loads its own object, so its counters are its own and tests can
//! run in parallel. Expected counts follow `bpf/parse.h` exactly: a frame is
//! foreign until its UDP header (complete) names our port, and from there on
//! anything wrong with it is ours (malformed, bad magic, wrong cluster,
//! unknown type).

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use electrode::fastpath::{xdp_action, Counters, Loaded, XdpMode};
use electrode::wire::{consts, MsgType};

/// Runs `frame` through the program: it must pass unchanged (the
/// classifier never modifies frames), and the counters must move by
/// exactly `expected`.
#[track_caller]
fn expect_counts(loaded: &Loaded, what: &str, frame: &[u8], expected: Counters) {
    expect_unchanged(loaded, what, frame, xdp_action::PASS, expected);
}

fn one_message(msg_type: MsgType) -> Counters {
    let mut counters = Counters::default();
    add_message(&mut counters, msg_type);
    counters
}

/// One well-formed datagram of `msg_type`. Built with fast_quorum_prune, a
/// PrepareOK also gets that path's verdict: passed, as nothing armed it
/// (and so does a Request with fast_intake).
fn add_message(counters: &mut Counters, msg_type: MsgType) {
    *counters.messages_mut(msg_type) += 1;
    if cfg!(feature = "fast_reply") && msg_type == MsgType::Prepare {
        counters.pass_disarmed += 1;
    }
    if cfg!(feature = "fast_quorum_prune") && msg_type == MsgType::PrepareOk {
        counters.quorum_prune.pass_disarmed += 1;
    }
    if cfg!(feature = "fast_intake") && msg_type == MsgType::Request {
        counters.intake.pass_disarmed += 1;
    }
}

fn one_foreign() -> Counters {
    Counters { foreign: 1, ..Counters::default() }
}

fn one_malformed() -> Counters {
    Counters { malformed: 1, ..Counters::default() }
}

fn one_bad_magic() -> Counters {
    Counters { bad_magic: 1, ..Counters::default() }
}

/// A valid Prepare frame: the reference the broken variants start from.
fn prepare_frame() -> Vec<u8> {
    let prepare = sample_messages().remove(MsgType::Prepare as usize - 1);
    udp4_frame(PORT, &datagram(CLUSTER_ID, &prepare))
}

/// `frame` with the electrode header byte at `offset` (from the header
/// start) set to `value`.
fn with_header_byte(mut frame: Vec<u8>, offset: usize, value: u8) -> Vec<u8> {
    frame[HDR_OFF + offset] = value;
    frame
}

#[test]
fn every_message_type_passes_and_counts_as_its_type() {
    require_root!();
    let loaded = load(3);
    for msg in sample_messages() {
        let msg_type = msg.msg_type();
        let frame = udp4_frame(PORT, &datagram(CLUSTER_ID, &msg));
        expect_counts(&loaded, msg_type.name(), &frame, one_message(msg_type));
    }
}

#[test]
fn smallest_body_of_every_type_counts_and_one_byte_less_is_malformed() {
    require_root!();
    let loaded = load(3);
    for msg_type in MsgType::ALL {
        for (body_len, expected) in
            [(msg_type.body_min(), one_message(msg_type)), (msg_type.body_min() - 1, one_malformed())]
        {
            let mut payload = header(msg_type as u8, CLUSTER_ID, body_len);
            payload.resize(ELECTRODE_HDR_LEN + body_len, 0);
            let what = format!("{} with a {body_len}-byte body", msg_type.name());
            expect_counts(&loaded, &what, &udp4_frame(PORT, &payload), expected);
        }
    }
}

/// An electrode header with valid magic and version.
fn header(msg_type: u8, cluster_id: u32, body_len: usize) -> Vec<u8> {
    let mut hdr = Vec::with_capacity(ELECTRODE_HDR_LEN);
    hdr.extend_from_slice(&consts::MAGIC.to_be_bytes());
    hdr.push(consts::PROTOCOL_VERSION as u8);
    hdr.push(msg_type);
    hdr.push(1); // sender
    hdr.push(0); // flags
    hdr.extend_from_slice(&cluster_id.to_be_bytes());
    hdr.extend_from_slice(&(body_len as u16).to_be_bytes());
    hdr.extend_from_slice(&[0, 0]); // pad
    hdr.extend_from_slice(&0u64.to_be_bytes()); // view
    assert_eq!(hdr.len(), ELECTRODE_HDR_LEN);
    hdr
}

#[test]
fn truncation_at_each_header_is_foreign_before_the_udp_port_and_malformed_after() {
    require_root!();
    let loaded = load(3);
    let frame = prepare_frame();
    let cases = [
        // Until the whole UDP header is there, nobody can tell it is ours.
        ("end of Ethernet header", ETH_LEN, one_foreign()),
        ("inside IPv4 header", ETH_LEN + IPV4_LEN / 2, one_foreign()),
        ("end of IPv4 header", ETH_LEN + IPV4_LEN, one_foreign()),
        ("inside UDP header", ETH_LEN + IPV4_LEN + UDP_LEN / 2, one_foreign()),
        // Our port: a UDP length beyond the frame is malformed.
        ("end of UDP header", HDR_OFF, one_malformed()),
        ("inside electrode header", HDR_OFF + ELECTRODE_HDR_LEN / 2, one_malformed()),
        ("end of electrode header", HDR_OFF + ELECTRODE_HDR_LEN, one_malformed()),
        ("inside fixed body", HDR_OFF + ELECTRODE_HDR_LEN + 8, one_malformed()),
        ("last byte of body missing", frame.len() - 1, one_malformed()),
    ];
    for (what, len, expected) in cases {
        expect_counts(&loaded, what, &frame[..len], expected);
    }
}

#[test]
fn runt_frames_are_refused_by_the_kernel_test_run() {
    require_root!();
    // BPF_PROG_TEST_RUN wants at least an Ethernet header (EINVAL below
    // ETH_HLEN), so a runt cannot reach the program this way; a real NIC
    // never delivers one either. The program's own check (foreign) is
    // therefore only reachable through the ETH_LEN case above.
    let loaded = load(3);
    let frame = prepare_frame();
    let before = loaded.counters().expect("read counters");
    assert!(loaded.test_run_xdp(&frame[..ETH_LEN - 1]).is_err());
    assert_eq!(loaded.counters().expect("read counters").since(&before), Counters::default());
}

#[test]
fn consistent_but_wrong_lengths_are_malformed() {
    require_root!();
    let loaded = load(3);
    let datagram_bytes = datagram(CLUSTER_ID, &sample_messages()[MsgType::Commit as usize - 1]);

    // Frame, IP and UDP agree, but the datagram is shorter than a header.
    let short = udp4_frame(PORT, &datagram_bytes[..ELECTRODE_HDR_LEN - 1]);
    expect_counts(&loaded, "datagram shorter than the header", &short, one_malformed());

    // body_len says one byte more / less than the UDP length carries.
    let body_len = datagram_bytes.len() - ELECTRODE_HDR_LEN;
    for claimed in [body_len + 1, body_len - 1] {
        let mut bytes = datagram_bytes.clone();
        bytes[12..14].copy_from_slice(&(claimed as u16).to_be_bytes());
        let what = format!("body_len {claimed} for a {body_len}-byte body");
        expect_counts(&loaded, &what, &udp4_frame(PORT, &bytes), one_malformed());
    }

    // Larger than any datagram we send (we never fragment).
    let body_len = consts::MAX_BODY as usize + 1;
    let mut oversize = header(MsgType::Request as u8, CLUSTER_ID, body_len);
    oversize.resize(ELECTRODE_HDR_LEN + body_len, 0);
    let frame = udp4_frame(PORT, &oversize);
    expect_counts(&loaded, "datagram above MAX_DATAGRAM", &frame, one_malformed());
}

#[test]
fn fragments_are_malformed() {
    require_root!();
    let loaded = load(3);
    let payload = datagram(CLUSTER_ID, &sample_messages()[MsgType::Commit as usize - 1]);
    for (what, frag_off) in [("more-fragments flag", 0x2000), ("non-zero offset", 0x0010)] {
        let shape = Ipv4Shape { frag_off, ..Ipv4Shape::default() };
        let frame = udp4_frame_with(shape, 40000, PORT, &payload);
        expect_counts(&loaded, what, &frame, one_malformed());
    }
}

#[test]
fn ip_options_and_ethernet_padding_do_not_hide_a_valid_datagram() {
    require_root!();
    let loaded = load(3);
    let commit = &sample_messages()[MsgType::Commit as usize - 1];
    let payload = datagram(CLUSTER_ID, commit);
    let shape = Ipv4Shape { options_len: 8, ..Ipv4Shape::default() };
    let frame = udp4_frame_with(shape, 40000, PORT, &payload);
    expect_counts(&loaded, "8 bytes of IP options", &frame, one_message(MsgType::Commit));

    let mut padded = udp4_frame(PORT, &payload);
    padded.extend_from_slice(&[0; 12]);
    expect_counts(&loaded, "Ethernet trailer padding", &padded, one_message(MsgType::Commit));
}

#[test]
fn bad_magic_version_cluster_and_type_are_counted_by_reason() {
    require_root!();
    let loaded = load(3);
    let frame = prepare_frame();

    let bad_magic = with_header_byte(frame.clone(), 0, b'X');
    expect_counts(&loaded, "bad magic", &bad_magic, one_bad_magic());
    let bad_version = with_header_byte(frame.clone(), 4, consts::PROTOCOL_VERSION as u8 + 1);
    expect_counts(&loaded, "bad version", &bad_version, one_bad_magic());

    let other_cluster =
        udp4_frame(PORT, &datagram(CLUSTER_ID + 1, &sample_messages()[MsgType::Prepare as usize - 1]));
    let wrong_cluster = Counters { wrong_cluster: 1, ..Counters::default() };
    expect_counts(&loaded, "other cluster id", &other_cluster, wrong_cluster);

    let unknown_type = Counters { unknown_type: 1, ..Counters::default() };
    for msg_type in [0, consts::MSG_TYPE_MAX as u8 + 1, 255] {
        let frame = with_header_byte(frame.clone(), 5, msg_type);
        let what = format!("message type {msg_type}");
        expect_counts(&loaded, &what, &frame, unknown_type.clone());
    }
}

#[test]
fn other_ports_protocols_and_ethertypes_are_foreign() {
    require_root!();
    let loaded = load(3);
    let payload = datagram(CLUSTER_ID, &sample_messages()[MsgType::Prepare as usize - 1]);

    expect_counts(&loaded, "other UDP port", &udp4_frame(PORT + 1, &payload), one_foreign());
    let tcp = Ipv4Shape { protocol: 6, ..Ipv4Shape::default() };
    let frame = udp4_frame_with(tcp, 40000, PORT, &payload);
    expect_counts(&loaded, "TCP to our port", &frame, one_foreign());
    expect_counts(&loaded, "IPv6 UDP to our port", &udp6_frame(PORT, &payload), one_foreign());
    expect_counts(&loaded, "ARP", &arp_frame(), one_foreign());
    let mut lldp = eth(ETHERTYPE_LLDP);
    lldp.resize(60, 0);
    expect_counts(&loaded, "LLDP ethertype", &lldp, one_foreign());
}

// ---------------------------------------------------------------------------
// A real interface
// ---------------------------------------------------------------------------

/// What the sender puts on the wire, and what the classifier must count.
fn veth_traffic() -> (Vec<(u16, Vec<u8>)>, Counters) {
    let mut datagrams = Vec::new();
    let mut expected = Counters::default();
    for round in 0..3 {
        for msg in sample_messages() {
            datagrams.push((PORT, datagram(CLUSTER_ID, &msg)));
            add_message(&mut expected, msg.msg_type());
        }
        let prepare = datagram(CLUSTER_ID, &sample_messages()[MsgType::Prepare as usize - 1]);
        datagrams.push((PORT + 1 + round, prepare.clone()));
        expected.foreign += 1;
        let mut bad_magic = prepare.clone();
        bad_magic[0] ^= 0xff;
        datagrams.push((PORT, bad_magic));
        expected.bad_magic += 1;
        let other = datagram(CLUSTER_ID + 1, &sample_messages()[0]);
        datagrams.push((PORT, other));
        expected.wrong_cluster += 1;
        datagrams.push((PORT, prepare[..ELECTRODE_HDR_LEN - 4].to_vec()));
        expected.malformed += 1;
    }
    (datagrams, expected)
}

#[test]
fn veth_between_namespaces_counts_real_traffic_and_detaches() {
    require_root!();
    let netns = veth_pair(IP_A, IP_B);
    let ns_b = netns.name(1).to_string();

    let (datagrams, expected) = veth_traffic();
    let to_port = datagrams.iter().filter(|(port, _)| *port == PORT).count();
    let (attached_tx, attached_rx) = mpsc::channel::<()>();
    let (sent_tx, sent_rx) = mpsc::channel::<()>();

    let (netns, datagrams_sent, expected_total) = (&netns, &datagrams, expected.total());
    let (counted, received, shown_while_attached) = thread::scope(|scope| {
        let receiver = scope.spawn(move || {
            netns.enter(1);
            let loaded = load(3);
            let attachment = loaded.attach_xdp_iface("veth-b").expect("attach to veth-b");
            eprintln!("veth-b: electrode_xdp attached in {} mode", attachment.mode());
            let shown = run("ip", &["link", "show", "dev", "veth-b"]);
            let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(IP_B), PORT))
                .expect("bind receiver in ns b");
            socket.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
            attached_tx.send(()).expect("signal attached");
            sent_rx.recv_timeout(Duration::from_secs(10)).expect("sender finished");

            // Every datagram to PORT reaches the socket: XDP_PASS really passes.
            let mut received = 0;
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(5);
            while received < to_port && Instant::now() < deadline {
                if socket.recv(&mut buf).is_ok() {
                    received += 1;
                }
            }
            // The counters may trail the socket by a little on another CPU.
            let mut counted = loaded.counters().expect("read counters");
            for _ in 0..50 {
                if counted.total() >= expected_total {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
                counted = loaded.counters().expect("read counters");
            }
            attachment.detach().expect("detach from veth-b");
            (counted, received, shown)
        });
        let sender = scope.spawn(move || {
            netns.enter(0);
            let socket =
                UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(IP_A), 0)).expect("bind sender in ns a");
            attached_rx.recv_timeout(Duration::from_secs(10)).expect("receiver attached");
            for (port, bytes) in datagrams_sent {
                socket
                    .send_to(bytes, SocketAddrV4::new(Ipv4Addr::from(IP_B), *port))
                    .expect("send from ns a");
            }
            sent_tx.send(()).expect("signal sent");
        });
        sender.join().expect("sender thread");
        receiver.join().expect("receiver thread")
    });

    assert!(shown_while_attached.contains("prog/xdp"), "attached: {shown_while_attached}");
    assert_eq!(received, to_port, "datagrams to port {PORT} delivered to the socket in ns b");
    assert_eq!(counted, expected, "counters after {} datagrams", datagrams.len());
    let shown_after = run("ip", &["-n", &ns_b, "link", "show", "dev", "veth-b"]);
    assert!(!shown_after.contains("xdp"), "still attached after detach: {shown_after}");
}

#[test]
fn dropping_an_attachment_detaches_in_native_and_generic_mode() {
    require_root!();
    let netns = veth_pair(IP_A, IP_B);
    let netns = &netns;
    thread::scope(|scope| {
        scope
            .spawn(move || {
                netns.enter(1);
                let loaded = load(3);
                let shown = || run("ip", &["link", "show", "dev", "veth-b"]);

                let native = loaded.attach_xdp_iface("veth-b").expect("attach");
                assert_eq!(native.mode(), XdpMode::Native, "veth implements native XDP");
                assert!(shown().contains("prog/xdp"), "native: {}", shown());
                drop(native);
                assert!(!shown().contains("xdp"), "native after drop: {}", shown());

                let ifindex = nix::net::if_::if_nametoindex("veth-b").expect("ifindex");
                let generic = loaded.attach_xdp_generic(ifindex).expect("attach generic");
                assert_eq!(generic.mode(), XdpMode::Generic);
                assert_eq!(generic.ifindex(), ifindex);
                assert!(shown().contains("xdpgeneric"), "generic: {}", shown());
                // Never replaces a program that is already there.
                assert!(loaded.attach_xdp_generic(ifindex).is_err());
                drop(generic);
                assert!(!shown().contains("xdp"), "generic after drop: {}", shown());

                assert!(loaded.attach_xdp_iface("no-such-if").is_err());
            })
            .join()
            .expect("thread in ns b");
    });
}

// ---------------------------------------------------------------------------
// Attachments never outlive their replica (issue 12)
// ---------------------------------------------------------------------------

/// Set only in the child process of the kill -9 tests:
/// `<netns>:<native|generic|any>`. The child attaches electrode_xdp to
/// veth-b in that namespace (any: native first, generic as fallback, after
/// replacing a stale program), prints `attached <mode>` and waits to be
/// killed.
const XDP_CHILD: &str = "ELECTRODE_XDP_KILL9_CHILD";

/// The child of the kill -9 tests; a no-op in a normal test run.
#[test]
fn xdp_child_attaches_and_waits() {
    let Some(spec) = child_spec(XDP_CHILD) else {
        return;
    };
    let (ns, mode) = spec.split_once(':').expect("<netns>:<mode>");
    enter_netns(ns);
    let loaded = load(3);
    let ifindex = nix::net::if_::if_nametoindex("veth-b").expect("ifindex of veth-b");
    let attachment = match mode {
        "generic" => loaded.attach_xdp_generic(ifindex),
        "native" | "any" => loaded.attach_xdp(ifindex),
        other => panic!("unknown mode {other}"),
    }
    .expect("attach in child");
    announce_and_wait(&format!("attached {}", attachment.mode()));
}

/// Runs the child in `ns` with `mode`, waits for its `attached <mode>` line,
/// kills it with SIGKILL (no Drop runs) and returns the mode it printed and
/// everything it wrote on stderr.
fn attach_in_child_and_kill_9(ns: &str, mode: &str) -> (String, String) {
    run_child_and_kill_9("xdp_child_attaches_and_waits", XDP_CHILD, &format!("{ns}:{mode}"), "attached ")
}

/// `ip -j link show dev veth-b` in `ns`: the XDP part of the JSON, if any.
fn xdp_on_veth_b(ns: &str) -> Option<String> {
    let shown = run("ip", &["-n", ns, "-j", "-d", "link", "show", "dev", "veth-b"]);
    shown.find("\"xdp\"").map(|at| shown[at..].chars().take(160).collect())
}

/// Waits (a little: the kernel releases a dead process's fds right after
/// the kill) until veth-b in `ns` has no XDP program.
fn wait_until_no_xdp(ns: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let shown = xdp_on_veth_b(ns);
        if shown.is_none() || Instant::now() > deadline {
            return shown;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn assert_quiet(stderr: &str, what: &str) {
    assert!(!stderr.contains("libbpf"), "{what}: library output on stderr: {stderr}");
    assert!(!stderr.contains("electrode:"), "{what}: unexpected message: {stderr}");
}

/// A child attaches in `mode` (veth implements native XDP) and is killed,
/// twice: each time its program must go with it, quietly.
fn kill_9_takes_the_program_along(mode: &str) {
    let netns = veth_pair(IP_A, IP_B);
    let ns = netns.name(1);
    for run in ["first run", "restart"] {
        let (attached, stderr) = attach_in_child_and_kill_9(ns, mode);
        assert_eq!(attached, mode, "{run}");
        assert_quiet(&stderr, run);
        assert_eq!(wait_until_no_xdp(ns), None, "{run}: program outlived the kill -9'd process");
    }
}

#[test]
fn native_xdp_of_a_kill_9_replica_is_gone_and_a_restart_attaches() {
    require_root!();
    kill_9_takes_the_program_along("native");
}

#[test]
fn generic_xdp_of_a_kill_9_replica_is_gone_and_a_restart_attaches() {
    require_root!();
    kill_9_takes_the_program_along("generic");
}

/// An older build attached in generic mode through netlink, which outlived
/// it; the next run replaces that program (either slot) with one line and
/// no library output, and its own attachment dies with it again.
#[test]
fn a_stale_netlink_attachment_is_replaced_with_one_line() {
    require_root!();
    let netns = veth_pair(IP_A, IP_B);
    let ns = netns.name(1).to_string();
    for (flags, stale_mode) in
        [(libbpf_rs::XdpFlags::SKB_MODE, "generic"), (libbpf_rs::XdpFlags::DRV_MODE, "native")]
    {
        // The stale program: attached through netlink by a loaded object
        // that is then dropped (as an older build's process exiting).
        let (netns_ref, stale_flags) = (&netns, flags);
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    netns_ref.enter(1);
                    let loaded = load(3);
                    let ifindex = nix::net::if_::if_nametoindex("veth-b").expect("ifindex");
                    libbpf_rs::Xdp::new(loaded.xdp_prog_fd())
                        .attach(ifindex as i32, stale_flags)
                        .expect("netlink attach of the stale program");
                })
                .join()
                .expect("thread in ns b");
        });
        let stale = xdp_on_veth_b(&ns).expect("the stale program stays after its process");
        let (mode, stderr) = attach_in_child_and_kill_9(&ns, "any");
        assert_eq!(mode, "native", "{stale_mode}: replaced, then native first");
        assert!(!stderr.contains("libbpf"), "{stale_mode}: library output: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|line| line.contains("electrode:")).collect();
        assert_eq!(lines.len(), 1, "{stale_mode}: one line, got {stderr}");
        assert!(lines[0].contains("replaced a stale electrode_xdp"), "{stale_mode}: {}", lines[0]);
        assert!(lines[0].contains(&format!("{stale_mode} mode")), "{stale_mode}: {} (was {stale})", lines[0]);
        assert_eq!(wait_until_no_xdp(&ns), None, "{stale_mode}: the replacement outlived its process");
    }
}
