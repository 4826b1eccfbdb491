//! fast_intake fixtures (root): `electrode_xdp` built with -DFAST_INTAKE on
//! crafted Requests with BPF_PROG_TEST_RUN.
//!
//! Each frame is checked for its verdict, the intake counter it adds, and
//! the ring record user space drains (datagram, source, view). A fuzzer
//! compares 10^5 random and mutated frames with a Rust model of the rules
//! (the fast_intake table of `bpf/electrode.h`), and a differential test
//! sends one hostile request stream through the userspace path and through
//! the intake and compares what the core gets and answers.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use common::*;
use electrode::fastpath::{xdp_action, IntakeCounters, IntakePath, IntakeRecord, Loaded};
use electrode::transport::client_addresses::ClientAddresses;
use electrode::transport::replica::{admit_request, screen};
use electrode::vr::{self, Action, Replica};
use electrode::wire::{self, Decoded, Message, MsgType};

const PASS: u32 = xdp_action::PASS;
const DROP: u32 = xdp_action::DROP;
/// The leader's own address (requests are sent to it).
const SELF_IP: [u8; 4] = [10, 200, 1, 2];
const CLIENT_IP: [u8; 4] = [10, 200, 1, 50];
const VIEW: u64 = 3;

fn member(replica: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 200, 1, 1 + replica), PORT)
}

fn load() -> Loaded {
    load_with_members(&(0..3).map(member).collect::<Vec<_>>())
}

fn request_datagram(client_id: u64, request_number: u64, op: &[u8]) -> Vec<u8> {
    let request = wire::Request { client_id, request_number, op: op.to_vec() };
    datagram_from(CLUSTER_ID, wire::CLIENT_SENDER, 0, &Message::Request(request))
}

/// A frame to us (SELF_IP:PORT, which is B) from `src` around `datagram`.
type Frame = Udp4;

fn frame_from(src: SocketAddrV4, datagram: Vec<u8>) -> Frame {
    Udp4 { src, ..Udp4::new(PORT, &datagram) }
}

/// Client 7's request `request_number` of `op`, from CLIENT_IP:40001.
fn request_frame(request_number: u64, op: &[u8]) -> Frame {
    frame_from(client(40001), request_datagram(7, request_number, op))
}

fn client(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(CLIENT_IP), port)
}

/// Runs `frame`, returns the verdict, the intake counters it added and the
/// records drained right after.
fn run(
    loaded: &Loaded,
    path: &mut IntakePath<'_>,
    frame: &Frame,
) -> (u32, IntakeCounters, Vec<IntakeRecord>) {
    let (verdict, _, added) = xdp_run(loaded, &frame.bytes());
    (verdict, added.intake, path.drain().expect("drain"))
}

/// Armed for VIEW at SELF_IP, with user space awake (the kernel takes
/// requests into the ring only then).
fn armed(loaded: &Loaded) -> IntakePath<'_> {
    let path = loaded.intake_path().expect("intake path");
    path.arm(VIEW, Ipv4Addr::from(SELF_IP)).expect("arm");
    path.wake();
    path
}

#[test]
fn a_request_is_taken_with_its_source_only_while_armed() {
    require_root!();
    let loaded = load();
    let mut path = loaded.intake_path().expect("intake path");
    let frame = request_frame(1, b"put k v");

    let (verdict, added, records) = run(&loaded, &mut path, &frame);
    assert_eq!((verdict, added.pass_disarmed, added.total()), (PASS, 1, 1), "disarmed");
    assert!(records.is_empty());

    path.arm(VIEW, Ipv4Addr::from(SELF_IP)).expect("arm");
    assert!(path.arm(VIEW, Ipv4Addr::from(SELF_IP)).is_err(), "arm is refused while armed");
    path.wake();
    let (verdict, added, records) = run(&loaded, &mut path, &frame);
    assert_eq!((verdict, added.ring, added.total()), (DROP, 1, 1));
    let want = IntakeRecord { view: VIEW, from: client(40001), datagram: frame.payload.clone() };
    assert_eq!(records, vec![want]);

    // Every shape of valid checksum and IPv4 options are taken as well.
    for udp_check in [UdpCheck::Partial, UdpCheck::Full] {
        for options_len in [0, 4, 40] {
            let frame = Frame { udp_check, options_len, ..frame.clone() };
            let (verdict, added, records) = run(&loaded, &mut path, &frame);
            assert_eq!((verdict, added.ring), (DROP, 1), "{udp_check:?}, {options_len} bytes of options");
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].datagram, frame.payload);
        }
    }
    // The largest request there is.
    let big = frame_from(client(40002), request_datagram(8, 1, &[b'x'; 1024]));
    assert_eq!(big.payload.len(), wire::consts::MAX_REQUEST_DATAGRAM as usize);
    let (verdict, _, records) = run(&loaded, &mut path, &Frame { udp_check: UdpCheck::Full, ..big.clone() });
    assert_eq!((verdict, records.len()), (DROP, 1));
    assert_eq!(records[0].datagram, big.payload);

    // Disarm: passes again, and what was queued comes back from disarm.
    let (verdict, ..) = {
        let (verdict, _) = loaded.test_run_xdp(&frame.bytes()).expect("run");
        (verdict, ())
    };
    assert_eq!(verdict, DROP);
    let drained = path.disarm().expect("disarm");
    assert_eq!(drained.len(), 1, "the record taken before the disarm is handed out by it");
    assert!(!loaded.intake_config().expect("config").armed);
    let (verdict, added, records) = run(&loaded, &mut path, &frame);
    assert_eq!((verdict, added.pass_disarmed, records.len()), (PASS, 1, 0));
    assert_eq!(path.undecodable(), 0);
}

#[test]
fn requests_the_stack_or_decode_would_refuse_pass_counted() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded);
    let good = request_frame(1, b"get k");
    let mut from_replica = good.payload.clone();
    from_replica[6] = 1; // sender: replica 1
                         // op_len 1025 > MAX_OP_SIZE, lengths otherwise consistent (the
                         // encoder refuses to build it).
    let mut long_op = request_datagram(7, 1, &[b'x'; 1024]);
    long_op.push(b'x');
    long_op[12..14].copy_from_slice(&(24u16 + 1025).to_be_bytes());
    long_op[24 + 16..24 + 18].copy_from_slice(&1025u16.to_be_bytes());
    let mut short_op = good.payload.clone();
    short_op[24 + 16..24 + 18].copy_from_slice(&4u16.to_be_bytes()); // op_len 4, 5 bytes follow
    let mut long_claim = good.payload.clone();
    long_claim[24 + 16..24 + 18].copy_from_slice(&6u16.to_be_bytes()); // op_len beyond the body

    type Case = (&'static str, Frame, fn(&IntakeCounters) -> u64);
    let cases: Vec<Case> = vec![
        ("sender is a replica id", Frame { payload: from_replica, ..good.clone() }, |c| c.pass_not_client),
        (
            "another destination",
            Frame { dst: SocketAddrV4::new(Ipv4Addr::new(10, 200, 1, 3), PORT), ..good.clone() },
            |c| c.pass_not_for_us,
        ),
        ("loopback source", Frame { src: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9), ..good.clone() }, |c| {
            c.pass_not_for_us
        }),
        ("source 0.0.0.0", Frame { src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9), ..good.clone() }, |c| {
            c.pass_not_for_us
        }),
        (
            "multicast source",
            Frame { src: SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), 9), ..good.clone() },
            |c| c.pass_not_for_us,
        ),
        ("broadcast source", Frame { src: SocketAddrV4::new(Ipv4Addr::BROADCAST, 9), ..good.clone() }, |c| {
            c.pass_not_for_us
        }),
        (
            "our own source",
            Frame { src: SocketAddrV4::new(Ipv4Addr::from(SELF_IP), 9), ..good.clone() },
            |c| c.pass_not_for_us,
        ),
        ("IPv4 total length short", Frame { tot_len_delta: -1, ..good.clone() }, |c| c.pass_not_for_us),
        ("IPv4 total length long", Frame { tot_len_delta: 2, ..good.clone() }, |c| c.pass_not_for_us),
        ("IPv4 header checksum", Frame { bad_ip_checksum: true, ..good.clone() }, |c| c.pass_not_for_us),
        ("op longer than the limit", Frame { payload: long_op, ..good.clone() }, |c| c.pass_bad_body),
        ("body longer than the op", Frame { payload: short_op, ..good.clone() }, |c| c.pass_bad_body),
        ("op longer than the body", Frame { payload: long_claim, ..good.clone() }, |c| c.pass_bad_body),
        ("UDP checksum does not verify", Frame { udp_check: UdpCheck::Wrong, ..good.clone() }, |c| {
            c.pass_bad_checksum
        }),
    ];
    for (what, frame, counter) in cases {
        let (verdict, added, records) = run(&loaded, &mut path, &frame);
        assert_eq!(verdict, PASS, "{what}");
        assert_eq!((counter(&added), added.total()), (1, 1), "{what}: {added:?}");
        assert!(records.is_empty(), "{what}");
    }
    // Not a Request, or not ours at all: the intake does not look.
    let status_request = Message::StatusRequest(wire::StatusRequest { nonce: 5 });
    let status = datagram_from(CLUSTER_ID, wire::CLIENT_SENDER, 0, &status_request);
    let mut wrong_cluster = good.payload.clone();
    wrong_cluster[8] ^= 1;
    for (what, frame) in [
        ("status request", Frame { payload: status, ..good.clone() }),
        ("another port", Frame { dst: SocketAddrV4::new(Ipv4Addr::from(SELF_IP), PORT + 1), ..good.clone() }),
        ("another cluster", Frame { payload: wrong_cluster, ..good.clone() }),
        ("truncated header", Frame { payload: good.payload[..30].to_vec(), ..good.clone() }),
    ] {
        let (verdict, added, records) = run(&loaded, &mut path, &frame);
        assert_eq!((verdict, added.total(), records.len()), (PASS, 0, 0), "{what}");
    }
}

#[test]
fn a_full_ring_passes_requests_to_the_socket() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded);
    let capacity = wire::consts::INTAKE_RING_BYTES as usize / (electrode::fastpath::intake::RECORD_LEN + 8);
    let before = loaded.counters().expect("counters");
    for n in 0..capacity + 10 {
        let frame = request_frame(n as u64 + 1, b"get k");
        let (verdict, _) = loaded.test_run_xdp(&frame.bytes()).expect("run");
        assert_eq!(verdict, if n < capacity { DROP } else { PASS }, "request {n} of a ring for {capacity}");
    }
    let added = loaded.counters().expect("counters").since(&before).intake;
    assert_eq!((added.ring, added.pass_ringbuf_full), (capacity as u64, 10));
    let records = path.drain().expect("drain");
    let numbers: Vec<u64> = records
        .iter()
        .map(|r| match wire::decode(&r.datagram, CLUSTER_ID) {
            Ok((_, Decoded::Message(Message::Request(request)))) => request.request_number,
            other => panic!("not a request: {other:?}"),
        })
        .collect();
    assert_eq!(numbers, (1..=capacity as u64).collect::<Vec<_>>(), "in arrival order");
    let frame = request_frame(9999, b"get k");
    assert_eq!(loaded.test_run_xdp(&frame.bytes()).expect("run").0, DROP, "room again once drained");
}

#[test]
fn a_sleeping_consumer_gets_requests_by_the_socket_and_sleeps_only_on_an_empty_ring() {
    require_root!();
    let loaded = load();
    let mut path = armed(&loaded);
    let frame = request_frame(1, b"put k v");

    // Asleep (the ring empty): the socket gets it, and wakes user space.
    assert!(path.may_sleep(), "an empty ring lets user space sleep");
    let (verdict, added, records) = run(&loaded, &mut path, &frame);
    assert_eq!((verdict, added.pass_asleep, added.total(), records.len()), (PASS, 1, 1, 0));
    assert!(!path.pending(), "the discarded reservation was consumed by the drain");

    // Awake: the ring takes it, and user space may not sleep until it has
    // drained (may_sleep refuses and leaves it awake).
    path.wake();
    let (verdict, _) = loaded.test_run_xdp(&frame.bytes()).expect("run");
    assert_eq!(verdict, DROP);
    assert!(path.pending());
    assert!(!path.may_sleep(), "a record waits: drain before sleeping");
    let (verdict, added, records) = run(&loaded, &mut path, &frame);
    assert_eq!((verdict, added.ring, records.len()), (DROP, 1, 2), "still awake after a refused sleep");
    assert!(!path.pending());
    assert!(path.may_sleep());
    let (verdict, added, _) = run(&loaded, &mut path, &frame);
    assert_eq!((verdict, added.pass_asleep), (PASS, 1));
}

#[test]
fn arming_needs_the_replica_address_table_and_one_consumer() {
    require_root!();
    let loaded = common::load(3);
    let path = loaded.intake_path().expect("intake path");
    assert!(path.arm(VIEW, Ipv4Addr::from(SELF_IP)).is_err(), "no arm before set_members");
    assert!(loaded.intake_path().is_err(), "one consumer of intake_ring");
    drop(path);
    assert!(loaded.intake_path().is_ok(), "free again once dropped");
}

/// The fast_intake table of `bpf/electrode.h` in Rust: the verdict and the
/// counter for `frame`, armed for VIEW at SELF_IP.
fn model(frame: &Frame) -> (u32, Option<&'static str>) {
    if frame.dst.port() != PORT || frame.payload.len() > wire::MAX_DATAGRAM_LEN {
        return (PASS, None);
    }
    let Some((msg_type, sender, _, body)) = classify(&frame.payload, CLUSTER_ID) else {
        return (PASS, None);
    };
    if msg_type != MsgType::Request as u8 {
        return (PASS, None);
    }
    if sender != wire::CLIENT_SENDER {
        return (PASS, Some("not_client"));
    }
    let source = frame.src.ip().octets();
    if frame.dst.ip().octets() != SELF_IP
        || source == SELF_IP
        || [0, 127].contains(&source[0])
        || source[0] >= 224
        || frame.tot_len_delta != 0
        || frame.bad_ip_checksum
    {
        return (PASS, Some("not_for_us"));
    }
    let op_len = usize::from(u16::from_be_bytes([body[16], body[17]]));
    if op_len > wire::MAX_OP_LEN || body.len() != 24 + op_len {
        return (PASS, Some("bad_body"));
    }
    if frame.udp_check_fails() {
        return (PASS, Some("bad_checksum"));
    }
    (DROP, Some("ring"))
}

fn counter_name(added: &IntakeCounters) -> Option<&'static str> {
    let named = [
        ("ring", added.ring),
        ("not_client", added.pass_not_client),
        ("not_for_us", added.pass_not_for_us),
        ("bad_body", added.pass_bad_body),
        ("bad_checksum", added.pass_bad_checksum),
        ("disarmed", added.pass_disarmed),
        ("ringbuf_full", added.pass_ringbuf_full),
        ("asleep", added.pass_asleep),
    ];
    assert!(added.total() <= 1, "one intake counter per frame: {added:?}");
    named.iter().find(|(_, n)| *n == 1).map(|(name, _)| *name)
}

/// A random frame around a request: mostly valid, often a little wrong.
fn random_frame(rng: &mut Rng) -> Frame {
    let op_len = match rng.below(10) {
        0 => 1024 - rng.below(3) as usize,
        1 => 0,
        _ => rng.below(64) as usize,
    };
    let op: Vec<u8> = (0..op_len).map(|_| rng.next_u64() as u8).collect();
    let mut datagram = request_datagram(rng.below(8), rng.below(5), &op);
    if rng.percent(10) {
        for _ in 0..=rng.below(3) {
            let at = rng.below(datagram.len() as u64) as usize;
            datagram[at] = rng.next_u64() as u8;
        }
    }
    if rng.percent(5) {
        // A body length or op length off by a little, or a sender id.
        let (at, value) = match rng.below(3) {
            0 => (12, (datagram.len() as u16 - 24).wrapping_add(rng.below(3) as u16).wrapping_sub(1)),
            1 => (24 + 16, (op_len as u16).wrapping_add(rng.below(3) as u16).wrapping_sub(1)),
            _ => (6, u16::from_be_bytes([[0, 1, 2, 254, 255][rng.below(5) as usize], datagram[7]])),
        };
        datagram[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }
    if rng.percent(3) {
        datagram.truncate(rng.below(datagram.len() as u64) as usize);
    } else if rng.percent(3) {
        datagram.push(rng.next_u64() as u8);
    }
    let src_ip = match rng.below(20) {
        0 => [127, 0, 0, 1],
        1 => [0, 0, 0, 0],
        2 => [224 + rng.below(32) as u8, 1, 2, 3],
        3 => SELF_IP,
        4 => (rng.next_u64() as u32).to_be_bytes(),
        _ => CLIENT_IP,
    };
    let mut frame = frame_from(SocketAddrV4::new(Ipv4Addr::from(src_ip), rng.next_u64() as u16), datagram);
    if rng.percent(5) {
        frame.dst.set_ip(Ipv4Addr::new(10, 200, 1, rng.below(4) as u8));
    }
    if rng.percent(2) {
        frame.dst.set_port(rng.next_u64() as u16);
    }
    frame.options_len = [0, 0, 0, 4, 40][rng.below(5) as usize];
    if rng.percent(3) {
        frame.tot_len_delta = [-2, -1, 1, 8][rng.below(4) as usize];
    }
    frame.bad_ip_checksum = rng.percent(3);
    frame.udp_check = [UdpCheck::None, UdpCheck::Partial, UdpCheck::Full, UdpCheck::Full, UdpCheck::Wrong]
        [rng.below(5) as usize];
    frame
}

#[test]
fn fuzzed_requests_are_taken_exactly_as_the_model_says() {
    require_root!();
    let (seed, frames, mut rng) = fuzz_plan(0x001a_7a4e);
    let loaded = load();
    let mut path = armed(&loaded);
    let mut taken = 0u64;
    let mut expected = Vec::new();
    for n in 0..frames {
        let frame = random_frame(&mut rng);
        let (want, want_counter) = model(&frame);
        let before = loaded.counters().expect("counters");
        let (got, _) = loaded.test_run_xdp(&frame.bytes()).expect("BPF_PROG_TEST_RUN");
        let added = loaded.counters().expect("counters").since(&before).intake;
        assert_eq!(
            (got, counter_name(&added)),
            (want, want_counter),
            "frame {n} (seed {seed}): {frame:02x?}"
        );
        if got == DROP {
            taken += 1;
            expected.push(IntakeRecord { view: VIEW, from: frame.src, datagram: frame.payload.clone() });
        }
        if n % 64 == 63 {
            assert_eq!(path.drain().expect("drain"), std::mem::take(&mut expected), "frame {n}, seed {seed}");
        }
    }
    assert_eq!(path.drain().expect("drain"), expected, "end, seed {seed}");
    assert!(
        taken > frames / 10 && taken < frames * 9 / 10,
        "{taken} of {frames} taken: both outcomes covered"
    );
}

/// What one datagram does to a core, through the runtime's own checks
/// (screen, admit_request): the reason it was dropped, or the actions.
fn feed(
    core: &mut Replica,
    clients: &mut ClientAddresses,
    datagram: &[u8],
    from: SocketAddrV4,
) -> Result<Vec<Action>, &'static str> {
    let peers: Vec<SocketAddrV4> = (0..1).map(member).collect();
    let (_, decoded) = screen(datagram, SocketAddr::V4(from), CLUSTER_ID, &peers, 0)?;
    let mut out = Vec::new();
    match decoded {
        Decoded::Message(Message::Request(request)) => {
            admit_request(core, clients, request, SocketAddr::V4(from), &mut out)?;
        }
        Decoded::Message(other) => return Ok(vec![Action::Send { to: 255, message: other }]),
        Decoded::Chunk(_) => return Err("chunk"),
    }
    Ok(out)
}

fn leader_core() -> Replica {
    let (core, _) = booted_core(vr::Config::new(1, 0));
    assert!(core.is_leader(), "a single replica leads at once");
    core
}

#[test]
fn the_same_hostile_stream_gives_the_core_the_same_input_by_socket_and_by_intake() {
    require_root!();
    let (seed, frames, mut rng) = fuzz_plan(0xd1ff);
    let frames = frames / 10;
    let loaded = load();
    let mut path = armed(&loaded);
    // Two cores, one per path, and their client bindings.
    let (mut core_socket, mut core_intake) = (leader_core(), leader_core());
    let mut clients_socket = ClientAddresses::new(8, 8);
    let mut clients_intake = ClientAddresses::new(8, 8);
    let mut next_number = [1u64; 6];
    let (mut by_intake, mut by_socket, mut replies) = (0u64, 0u64, 0u64);
    for n in 0..frames {
        // Six client sessions at two addresses (one forger reusing ids),
        // in-order numbers with repeats, plus hostile variants.
        let session = rng.below(6) as usize;
        let from = match rng.below(10) {
            0 => client(50000 + rng.below(6) as u16), // someone else's address
            _ => client(40000 + session as u16),
        };
        let number = match rng.below(20) {
            0 => 0,
            1 => u64::MAX,
            2 => next_number[session].saturating_sub(1),
            _ => {
                next_number[session] += u64::from(rng.percent(70));
                next_number[session]
            }
        };
        let op = format!("put k{} v{n}", rng.below(4));
        let mut frame = frame_from(from, request_datagram(session as u64, number, op.as_bytes()));
        frame.udp_check = [UdpCheck::None, UdpCheck::Partial, UdpCheck::Full][rng.below(3) as usize];
        let flip = rng.below(frame.payload.len() as u64) as usize;
        match rng.below(25) {
            0 => frame.payload[6] = 0, // claims to be replica 0 (from a client's address)
            1 => frame.payload[24 + 16] = 0x7f, // op_len far beyond the body
            2 => frame.payload.truncate(40),
            3 => frame.payload[flip] ^= 0x55,
            _ => {}
        }
        // What the socket gets (every frame here is one the stack delivers),
        // and what the intake hands over instead of it.
        let socket_input = (frame.payload.clone(), frame.src);
        let (verdict, _) = loaded.test_run_xdp(&frame.bytes()).expect("run");
        let intake_input = if verdict == DROP {
            by_intake += 1;
            let mut records = path.drain().expect("drain");
            assert_eq!(records.len(), 1, "frame {n}");
            let record = records.remove(0);
            assert_eq!(record.view, VIEW);
            (record.datagram, record.from)
        } else {
            by_socket += 1;
            assert!(path.drain().expect("drain").is_empty(), "frame {n}");
            socket_input.clone()
        };
        assert_eq!(
            intake_input, socket_input,
            "frame {n} (seed {seed}): the same bytes from the same source"
        );
        let socket = feed(&mut core_socket, &mut clients_socket, &socket_input.0, socket_input.1);
        let intake = feed(&mut core_intake, &mut clients_intake, &intake_input.0, intake_input.1);
        assert_eq!(socket, intake, "frame {n} (seed {seed}): the core's answer");
        replies +=
            socket.map_or(0, |out| out.iter().filter(|a| matches!(a, Action::Reply { .. })).count() as u64);
        if n % 8 == 7 {
            let (mut tick_socket, mut tick_intake) = (Vec::new(), Vec::new());
            core_socket.on_tick(&mut tick_socket);
            core_intake.on_tick(&mut tick_intake);
            assert_eq!(tick_socket, tick_intake, "tick after frame {n} (seed {seed})");
            replies += tick_socket.iter().filter(|a| matches!(a, Action::Reply { .. })).count() as u64;
        }
    }
    assert_eq!(core_socket.commit(), core_intake.commit());
    assert_eq!(core_socket.digest(), core_intake.digest());
    assert!(
        by_intake > frames / 2 && by_socket > frames / 20,
        "{by_intake} by intake, {by_socket} by socket"
    );
    eprintln!(
        "{by_intake} by intake, {by_socket} by socket, {replies} replies, commit {}",
        core_socket.commit()
    );
    assert!(
        replies > frames / 10 && core_socket.commit() > frames / 20,
        "the core answered ({replies} replies)"
    );
}
