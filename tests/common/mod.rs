//! Helpers shared by the integration tests: the root policy, a hand-rolled
//! Ethernet/IPv4/UDP frame builder, one sample message per type, and
//! throwaway network namespaces.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use electrode::wire::{self, Message, MsgType};

/// Whether a root-only test may run. Not root: prints a loud skip and
/// returns false, except under `CI=true`, where skipping would hide a broken
/// runner, so the test fails instead.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root (BPF_PROG_TEST_RUN, XDP, netns) and CI=true forbids skipping");
    }
    // Straight to the stderr handle: libtest captures eprintln! of passing
    // tests, which would make the skip silent.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test} needs root (BPF_PROG_TEST_RUN, XDP, netns); run as root to test it"
    );
    false
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const ELECTRODE_HDR_LEN: usize = 24;
/// Offset of the electrode header in a frame from [`udp4_frame`].
pub const HDR_OFF: usize = ETH_LEN + IPV4_LEN + UDP_LEN;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_LLDP: u16 = 0x88cc;

pub const MAC_A: [u8; 6] = [0x02, 0xe1, 0, 0, 0, 0x01];
pub const MAC_B: [u8; 6] = [0x02, 0xe1, 0, 0, 0, 0x02];
pub const IP_A: [u8; 4] = [10, 200, 1, 1];
pub const IP_B: [u8; 4] = [10, 200, 1, 2];

/// Ethernet header from A to B with `ethertype`.
pub fn eth(ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_LEN);
    frame.extend_from_slice(&MAC_B);
    frame.extend_from_slice(&MAC_A);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// IPv4 options and fragment fields of [`udp4_frame_with`].
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Shape {
    /// Bytes of IP options (a multiple of 4, filled with NOP).
    pub options_len: usize,
    /// The 16-bit flags + fragment offset field (0x4000 = DF).
    pub frag_off: u16,
    pub protocol: u8,
}

impl Default for Ipv4Shape {
    fn default() -> Ipv4Shape {
        Ipv4Shape { options_len: 0, frag_off: 0x4000, protocol: 17 }
    }
}

/// Eth + IPv4 (A -> B) + UDP (`src_port` -> `dst_port`) + `payload`, all
/// lengths and the IP checksum consistent; UDP checksum 0 (none, legal on
/// IPv4).
pub fn udp4_frame(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    udp4_frame_with(Ipv4Shape::default(), 40000, dst_port, payload)
}

pub fn udp4_frame_with(shape: Ipv4Shape, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    assert!(shape.options_len % 4 == 0 && shape.options_len <= 40);
    let ip_len = IPV4_LEN + shape.options_len;
    let total_len = ip_len + UDP_LEN + payload.len();
    let mut frame = eth(ETHERTYPE_IPV4);
    let ip_start = frame.len();
    frame.push(0x40 | (ip_len / 4) as u8); // version 4, IHL
    frame.push(0); // TOS
    frame.extend_from_slice(&(total_len as u16).to_be_bytes());
    frame.extend_from_slice(&0x1234u16.to_be_bytes()); // id
    frame.extend_from_slice(&shape.frag_off.to_be_bytes());
    frame.push(64); // TTL
    frame.push(shape.protocol);
    frame.extend_from_slice(&[0, 0]); // checksum, below
    frame.extend_from_slice(&IP_A);
    frame.extend_from_slice(&IP_B);
    frame.resize(ip_start + ip_len, 1); // options: NOP
    let checksum = ipv4_checksum(&frame[ip_start..ip_start + ip_len]);
    frame[ip_start + 10..ip_start + 12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&src_port.to_be_bytes());
    frame.extend_from_slice(&dst_port.to_be_bytes());
    frame.extend_from_slice(&((UDP_LEN + payload.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Eth + IPv6 (fe80::1 -> fe80::2) + UDP to `dst_port` + `payload`.
pub fn udp6_frame(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = eth(ETHERTYPE_IPV6);
    frame.extend_from_slice(&[0x60, 0, 0, 0]); // version 6
    frame.extend_from_slice(&((UDP_LEN + payload.len()) as u16).to_be_bytes());
    frame.push(17); // next header: UDP
    frame.push(64); // hop limit
    let mut src = [0u8; 16];
    src[0] = 0xfe;
    src[1] = 0x80;
    let mut dst = src;
    src[15] = 1;
    dst[15] = 2;
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&dst_port.to_be_bytes());
    frame.extend_from_slice(&((UDP_LEN + payload.len()) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// ARP request: who has B? tell A.
pub fn arp_frame() -> Vec<u8> {
    let mut frame = eth(ETHERTYPE_ARP);
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    frame.extend_from_slice(&MAC_A);
    frame.extend_from_slice(&IP_A);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&IP_B);
    frame.resize(60, 0); // minimum Ethernet frame
    frame
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// One message of every type, with small but non-empty contents.
pub fn sample_messages() -> Vec<Message> {
    let request = wire::Request { client_id: 7, request_number: 3, op: b"put k v".to_vec() };
    let state = wire::StateBlob {
        checkpoint_op: 2,
        snapshot: b"snapshot".to_vec(),
        entries: vec![wire::LogEntry { op: 3, view: 1, batch: vec![request.clone()] }],
    };
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
        Message::DoViewChange(wire::DoViewChange {
            view: 2,
            last_normal_view: 1,
            op: 3,
            commit: 2,
            replica: 1,
            state: state.clone(),
        }),
        Message::StartView(wire::StartView { view: 2, op: 3, commit: 2, state: state.clone() }),
        Message::GetState(wire::GetState { view: 2, op: 1, replica: 2 }),
        Message::NewState(wire::NewState {
            view: 2,
            op: 3,
            commit: 2,
            head: 4,
            kind: wire::NewStateKind::Page,
            state: state.clone(),
        }),
        Message::Recovery(wire::Recovery { nonce: 99, replica: 2 }),
        Message::RecoveryResponse(wire::RecoveryResponse {
            view: 2,
            nonce: 99,
            op: 3,
            commit: 2,
            replica: 0,
            status: 1,
            state,
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

/// `msg` encoded as exactly one datagram of `cluster_id`.
pub fn datagram(cluster_id: u32, msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    wire::Encoder::new(cluster_id, 1).encode(msg, &mut out).expect("sample messages encode");
    assert_eq!(out.len(), 1, "{:?} should fit one datagram", msg.msg_type());
    out.remove(0)
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

/// Runs `ip` (or another tool) and fails loudly with its stderr.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Network namespaces named `el-t-<pid>-<n><suffix>` (`n` counts the sets
/// this process made, so parallel tests never share one), deleted on drop
/// (also when the test panics), which removes their veths and XDP programs.
pub struct Netns {
    names: Vec<String>,
}

impl Netns {
    /// Creates one namespace per suffix, `lo` up. The guard exists before the
    /// first `ip netns add`, so a failure half-way still cleans up.
    pub fn create(suffixes: &[&str]) -> Netns {
        static SETS_CREATED: AtomicUsize = AtomicUsize::new(0);
        let set = SETS_CREATED.fetch_add(1, Ordering::Relaxed);
        let mut netns = Netns { names: Vec::new() };
        for suffix in suffixes {
            let name = format!("el-t-{}-{set}{suffix}", std::process::id());
            // A previous run with the same pid that died hard: start clean.
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            run("ip", &["netns", "add", &name]);
            netns.names.push(name.clone());
            run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        }
        netns
    }

    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Moves the calling thread into namespace `index` (for good: call it
    /// on a thread made for that purpose).
    pub fn enter(&self, index: usize) {
        let path = format!("/var/run/netns/{}", self.names[index]);
        let file = File::open(&path).unwrap_or_else(|error| panic!("open {path}: {error}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|error| panic!("setns into {path}: {error}"));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.names {
            match Command::new("ip").args(["netns", "del", name]).output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!(
                    "cleanup: ip netns del {name} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                ),
                Err(error) => eprintln!("cleanup: cannot run ip netns del {name}: {error}"),
            }
        }
    }
}

/// Namespaces a and b joined by veth-a (`ip_a`) <-> veth-b (`ip_b`), both
/// /24, MACs MAC_A and MAC_B, with no IPv6 and static neighbours, so the
/// only frames on the wire are the test's own.
pub fn veth_pair(ip_a: [u8; 4], ip_b: [u8; 4]) -> Netns {
    let netns = Netns::create(&["a", "b"]);
    let (ns_a, ns_b) = (netns.name(0).to_string(), netns.name(1).to_string());
    let mac = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
    for ns in [&ns_a, &ns_b] {
        // Link-local IPv6 chatter (DAD, MLD, RS) would land in the foreign
        // counter at times we do not control.
        for key in ["all", "default"] {
            let setting = format!("net.ipv6.conf.{key}.disable_ipv6=1");
            run("ip", &["netns", "exec", ns, "sysctl", "-qw", &setting]);
        }
    }
    // Created straight inside the namespaces: no name clash in the root one.
    #[rustfmt::skip]
    run("ip", &["link", "add", "veth-a", "netns", &ns_a, "address", &mac(MAC_A), "type", "veth",
        "peer", "name", "veth-b", "netns", &ns_b, "address", &mac(MAC_B)]);
    for (ns, dev, own, peer, peer_mac) in
        [(&ns_a, "veth-a", ip_a, ip_b, MAC_B), (&ns_b, "veth-b", ip_b, ip_a, MAC_A)]
    {
        let own = format!("{}/24", ip(own));
        run("ip", &["-n", ns, "addr", "add", &own, "dev", dev]);
        run("ip", &["-n", ns, "link", "set", dev, "up"]);
        // Static neighbours: no ARP frames in the counts.
        #[rustfmt::skip]
        run("ip", &["-n", ns, "neigh", "replace", &ip(peer), "lladdr", &mac(peer_mac), "dev", dev,
            "nud", "permanent"]);
    }
    netns
}

// ---------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------

/// xorshift64*: seeded, so a failure replays with ELECTRODE_FUZZ_SEED.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Seed and frame count of a fuzz test: ELECTRODE_FUZZ_SEED and
/// ELECTRODE_FUZZ_FRAMES, else `default_seed` and 10^5.
pub fn fuzz_plan(default_seed: u64) -> (u64, u64) {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse().ok());
    let seed = env("ELECTRODE_FUZZ_SEED").unwrap_or(default_seed);
    let frames = env("ELECTRODE_FUZZ_FRAMES").unwrap_or(100_000);
    eprintln!("fuzz seed {seed} ({frames} frames); replay with ELECTRODE_FUZZ_SEED={seed}");
    (seed, frames)
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
