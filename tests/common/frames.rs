//! Hand-rolled Ethernet/IPv4/UDP frames and the one independent Internet
//! checksum (RFC 1071) the fixtures check the kernel's against.

use std::net::{Ipv4Addr, SocketAddrV4};

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

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

/// Ones' complement sum of the big-endian 16-bit words of `bytes` (an odd
/// last byte padded with zero), not yet folded.
pub fn sum16(bytes: &[u8]) -> u32 {
    bytes.chunks(2).map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))).sum()
}

/// `sum` folded to 16 bits (not inverted).
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The IPv4 pseudo-header's part of a UDP checksum, not yet folded.
pub fn pseudo_sum(src: [u8; 4], dst: [u8; 4], udp_len: usize) -> u32 {
    sum16(&src) + sum16(&dst) + 17 + udp_len as u32
}

/// The checksum field of an IPv4 header whose own field is 0.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    !fold(sum16(header))
}

/// The full UDP checksum of `udp` (header, checksum field 0, and payload)
/// from `src` to `dst`; a result of 0 is sent as 0xffff (0 means none).
pub fn udp_checksum(src: [u8; 4], dst: [u8; 4], udp: &[u8]) -> u16 {
    match !fold(pseudo_sum(src, dst, udp.len()) + sum16(udp)) {
        0 => 0xffff,
        check => check,
    }
}

/// The IPv4 source and destination of a frame from [`Udp4`].
fn ip_addresses(frame: &[u8]) -> ([u8; 4], [u8; 4]) {
    let ip = &frame[ETH_LEN..];
    (ip[12..16].try_into().expect("4 bytes"), ip[16..20].try_into().expect("4 bytes"))
}

/// Whether the IPv4 header of `frame` (no options) verifies: the sum over
/// it, checksum included, is 0xffff.
pub fn ip_checksum_valid(frame: &[u8]) -> bool {
    fold(sum16(&frame[ETH_LEN..ETH_LEN + IPV4_LEN])) == 0xffff
}

/// Whether the UDP checksum of `frame` (IPv4 without options, UDP to the
/// end of `udp_end`) verifies the way a receiver checks it.
fn udp_sum_verifies(frame: &[u8], udp_end: usize) -> bool {
    let (src, dst) = ip_addresses(frame);
    let udp = &frame[ETH_LEN + IPV4_LEN..udp_end];
    fold(pseudo_sum(src, dst, udp.len()) + sum16(udp)) == 0xffff
}

/// The UDP checksum of `frame` (no IP options) is present and verifies
/// over the rest of the frame.
pub fn udp_checksum_present_and_valid(frame: &[u8]) -> bool {
    let udp = ETH_LEN + IPV4_LEN;
    frame[udp + 6..udp + 8] != [0, 0] && udp_sum_verifies(frame, frame.len())
}

/// The UDP checksum of `frame` (no IP options) is 0 (none, legal on IPv4)
/// or verifies over the UDP length the header gives.
pub fn udp_checksum_valid(frame: &[u8]) -> bool {
    let udp = ETH_LEN + IPV4_LEN;
    let udp_len = usize::from(u16::from_be_bytes([frame[udp + 4], frame[udp + 5]]));
    frame[udp + 6..udp + 8] == [0, 0] || udp_sum_verifies(frame, udp + udp_len)
}

/// The UDP checksum rule of fast_reply and fast_intake (bpf/electrode.h,
/// "UDP checksum"): 0 and the CHECKSUM_PARTIAL value are skipped, anything
/// else must verify. `frame` has no IP options; UDP runs to its end.
pub fn udp_checksum_acceptable(frame: &[u8]) -> bool {
    let udp = ETH_LEN + IPV4_LEN;
    let field = u16::from_be_bytes([frame[udp + 6], frame[udp + 7]]);
    field == 0 || field == udp_partial_checksum(frame) || udp_sum_verifies(frame, frame.len())
}

/// The CHECKSUM_PARTIAL value of `frame` (no IP options, UDP to its end):
/// the folded pseudo-header sum a local socket leaves for the NIC.
pub fn udp_partial_checksum(frame: &[u8]) -> u16 {
    let (src, dst) = ip_addresses(frame);
    fold(pseudo_sum(src, dst, frame.len() - ETH_LEN - IPV4_LEN))
}

/// `frame` (Eth + 20-byte IPv4 + UDP to its end) with its UDP checksum
/// field set as `check` says (recomputed from the bytes as they are).
pub fn with_udp_check(mut frame: Vec<u8>, check: UdpCheck) -> Vec<u8> {
    let udp = ETH_LEN + IPV4_LEN;
    let (src, dst) = ip_addresses(&frame);
    frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
    let field = check.field(src, dst, &frame[udp..]);
    frame[udp + 6..udp + 8].copy_from_slice(&field.to_be_bytes());
    frame
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// Ethernet header from A to B with `ethertype`.
pub fn eth(ethertype: u16) -> Vec<u8> {
    eth_between(MAC_A, MAC_B, ethertype)
}

fn eth_between(src: [u8; 6], dst: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_LEN);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// How the UDP checksum field of a frame is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpCheck {
    None,
    /// The folded pseudo-header sum (CHECKSUM_PARTIAL from a local socket).
    Partial,
    Full,
    /// A full checksum that does not verify.
    Wrong,
}

impl UdpCheck {
    /// The field for `udp` (its own field 0) from `src` to `dst`.
    fn field(self, src: [u8; 4], dst: [u8; 4], udp: &[u8]) -> u16 {
        match self {
            UdpCheck::None => 0,
            UdpCheck::Partial => fold(pseudo_sum(src, dst, udp.len())),
            UdpCheck::Full => udp_checksum(src, dst, udp),
            UdpCheck::Wrong => udp_checksum(src, dst, udp) ^ 0x0101,
        }
    }
}

/// One Eth + IPv4 + UDP frame: addresses, IPv4 shape and checksum choices
/// around a payload. [`Udp4::new`] is A -> B, DF, no options, no UDP
/// checksum; the fields say what differs.
#[derive(Clone, Debug)]
pub struct Udp4 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The IPv4 identification field.
    pub ip_id: u16,
    /// Bytes of IP options (a multiple of 4, filled with NOP).
    pub options_len: usize,
    /// The 16-bit flags + fragment offset field (0x4000 = DF).
    pub frag_off: u16,
    pub protocol: u8,
    /// Added to the IPv4 total length (the header checksum covers the
    /// changed length, so only the length is wrong).
    pub tot_len_delta: i32,
    pub bad_ip_checksum: bool,
    pub udp_check: UdpCheck,
    pub payload: Vec<u8>,
}

impl Udp4 {
    /// MAC_A, IP_A:40000 -> MAC_B, IP_B:`dst_port`.
    pub fn new(dst_port: u16, payload: &[u8]) -> Udp4 {
        Udp4 {
            src_mac: MAC_A,
            dst_mac: MAC_B,
            src: SocketAddrV4::new(Ipv4Addr::from(IP_A), 40000),
            dst: SocketAddrV4::new(Ipv4Addr::from(IP_B), dst_port),
            ip_id: 0x1234,
            options_len: 0,
            frag_off: 0x4000,
            protocol: 17,
            tot_len_delta: 0,
            bad_ip_checksum: false,
            udp_check: UdpCheck::None,
            payload: payload.to_vec(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut frame = eth_between(self.src_mac, self.dst_mac, ETHERTYPE_IPV4);
        frame.extend_from_slice(&self.ip_packet());
        frame
    }

    /// The IPv4 packet of [`Udp4::bytes`], without the Ethernet header.
    pub fn ip_packet(&self) -> Vec<u8> {
        assert!(self.options_len % 4 == 0 && self.options_len <= 40);
        let (src, dst) = (self.src.ip().octets(), self.dst.ip().octets());
        let ip_len = IPV4_LEN + self.options_len;
        let udp_len = UDP_LEN + self.payload.len();
        let tot_len = (ip_len + udp_len) as i32 + self.tot_len_delta;
        let mut packet = vec![0x40 | (ip_len / 4) as u8, 0]; // version 4, IHL; TOS
        packet.extend_from_slice(&(tot_len as u16).to_be_bytes());
        packet.extend_from_slice(&self.ip_id.to_be_bytes());
        packet.extend_from_slice(&self.frag_off.to_be_bytes());
        packet.extend_from_slice(&[64, self.protocol, 0, 0]); // TTL, protocol, checksum below
        packet.extend_from_slice(&src);
        packet.extend_from_slice(&dst);
        packet.resize(ip_len, 1); // options: NOP
        let mut check = ipv4_checksum(&packet);
        if self.bad_ip_checksum {
            check ^= 0x0100;
        }
        packet[10..12].copy_from_slice(&check.to_be_bytes());
        packet.extend_from_slice(&self.src.port().to_be_bytes());
        packet.extend_from_slice(&self.dst.port().to_be_bytes());
        packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0]);
        packet.extend_from_slice(&self.payload);
        let field = self.udp_check.field(src, dst, &packet[ip_len..]);
        packet[ip_len + 6..ip_len + 8].copy_from_slice(&field.to_be_bytes());
        packet
    }

    /// Whether `udp_check` is a value the kernel treats as a full checksum
    /// that does not verify (a Wrong one can collide with 0 or Partial).
    pub fn udp_check_fails(&self) -> bool {
        if self.udp_check != UdpCheck::Wrong {
            return false;
        }
        let bytes = self.bytes();
        let at = ETH_LEN + IPV4_LEN + self.options_len + 6;
        let field = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let partial = Udp4 { udp_check: UdpCheck::Partial, ..self.clone() }.bytes();
        field != 0 && field != u16::from_be_bytes([partial[at], partial[at + 1]])
    }
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

/// Eth + IPv4 (A -> B) + UDP (40000 -> `dst_port`) + `payload`, all
/// lengths and the IP checksum consistent; UDP checksum 0 (none, legal on
/// IPv4).
pub fn udp4_frame(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    Udp4::new(dst_port, payload).bytes()
}

/// As [`udp4_frame`], from `src_port` and with `shape`.
pub fn udp4_frame_with(shape: Ipv4Shape, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Udp4::new(dst_port, payload);
    frame.src.set_port(src_port);
    frame.options_len = shape.options_len;
    frame.frag_off = shape.frag_off;
    frame.protocol = shape.protocol;
    frame.bytes()
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
