//! The kernel's IPv4 neighbour table (ARP cache), read over rtnetlink: one
//! RTM_GETNEIGH dump on a NETLINK_ROUTE socket, by hand with libc.
//!
//! tc_broadcast needs each follower's next-hop MAC before it can fan out to
//! it. `electrode_xdp` learns it from the follower's first datagram; the
//! neighbour table usually knows it earlier (static entries, ARP done by the
//! boot handshake), so the first broadcast already reaches every follower.
//!
//! Why by hand: a dump request is one 28-byte message and the answer a flat
//! list of `ndmsg` records with two attributes we read (NDA_DST,
//! NDA_LLADDR); a netlink crate would add a dependency tree for ~60 lines
//! of parsing, which [`parse_neighbours`] does with bounds checks on every
//! field and unit tests on crafted bytes.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

/// One usable entry of the neighbour table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

// uapi/linux/netlink.h and rtnetlink.h / neighbour.h.
const NLMSG_HDR_BYTES: usize = 16;
const NDMSG_BYTES: usize = 12;
const RTA_HDR_BYTES: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// States whose MAC is worth sending to: confirmed (REACHABLE), possibly
/// stale but last known (STALE, DELAY, PROBE) or set by hand (PERMANENT).
/// INCOMPLETE and FAILED carry no MAC; NOARP entries are not Ethernet peers.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;

/// Bound on receive calls of one dump (a table of 10^5 entries takes a few
/// hundred): a kernel that never says DONE cannot keep us here.
const DUMP_RECV_MAX: usize = 10_000;

/// Dumps the IPv4 neighbour table of the calling thread's network namespace
/// and returns its usable entries (state in NUD_USABLE, a 6-byte MAC that is
/// not all zero). Each receive waits at most one second.
pub fn ipv4_neighbours() -> Result<Vec<Neighbour>> {
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a NETLINK_ROUTE socket");
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: valid fd, a timeval of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setting the netlink receive timeout");
    }

    let seq: u32 = 1;
    let request = dump_request(seq);
    // SAFETY: valid fd; the kernel (the default destination of an unbound
    // netlink socket's send) reads `request.len()` bytes of it.
    let sent = unsafe { libc::send(socket.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent != request.len() as isize {
        return Err(std::io::Error::last_os_error()).context("sending RTM_GETNEIGH dump request");
    }

    let mut neighbours = Vec::new();
    let mut buffer = vec![0u8; 64 << 10];
    for _ in 0..DUMP_RECV_MAX {
        // SAFETY: valid fd, `buffer` is writable for its length.
        let got = unsafe { libc::recv(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if got < 0 {
            return Err(std::io::Error::last_os_error()).context("receiving the neighbour table dump");
        }
        if parse_neighbours(&buffer[..got as usize], seq, &mut neighbours)? {
            return Ok(neighbours);
        }
    }
    bail!("neighbour table dump did not end after {DUMP_RECV_MAX} receives")
}

/// The RTM_GETNEIGH dump request for AF_INET (nlmsghdr + ndmsg).
fn dump_request(seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR_BYTES + NDMSG_BYTES;
    let mut request = Vec::with_capacity(len);
    request.extend_from_slice(&(len as u32).to_ne_bytes());
    request.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&seq.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
    request.push(libc::AF_INET as u8); // ndm_family
    request.resize(len, 0); // pads, ifindex 0 (all), state, flags, type
    request
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Netlink aligns every message and attribute to 4 bytes.
fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Parses one received datagram of the dump answering `seq`, appending the
/// usable entries to `out`. Returns true at NLMSG_DONE. Malformed lengths
/// are an error, never a panic; messages of another sequence are skipped.
pub fn parse_neighbours(datagram: &[u8], seq: u32, out: &mut Vec<Neighbour>) -> Result<bool> {
    let mut at = 0;
    while at + NLMSG_HDR_BYTES <= datagram.len() {
        let len = u32_at(datagram, at).context("nlmsg length")? as usize;
        let kind = u16_at(datagram, at + 4).context("nlmsg type")?;
        let flags = u16_at(datagram, at + 6).context("nlmsg flags")?;
        let message_seq = u32_at(datagram, at + 8).context("nlmsg seq")?;
        if len < NLMSG_HDR_BYTES || at + len > datagram.len() {
            bail!(
                "netlink message of length {len} at byte {at} does not fit the {}-byte datagram",
                datagram.len()
            );
        }
        let body = &datagram[at + NLMSG_HDR_BYTES..at + len];
        at += align4(len);
        if message_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).map_or(0, |e| e as i32);
                if errno == 0 {
                    continue; // an ack
                }
                return Err(std::io::Error::from_raw_os_error(-errno)).context("RTM_GETNEIGH dump");
            }
            RTM_NEWNEIGH => {
                if let Some(neighbour) = parse_ndmsg(body) {
                    out.push(neighbour);
                }
            }
            _ => {}
        }
        if flags & NLM_F_MULTI == 0 && kind != RTM_NEWNEIGH {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One RTM_NEWNEIGH body: Some if it is a usable IPv4 entry.
fn parse_ndmsg(body: &[u8]) -> Option<Neighbour> {
    if body.len() < NDMSG_BYTES || i32::from(*body.first()?) != libc::AF_INET {
        return None;
    }
    let ifindex = u32_at(body, 4)?;
    let state = u16_at(body, 8)?;
    if state & NUD_USABLE == 0 {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    let mut at = NDMSG_BYTES;
    while at + RTA_HDR_BYTES <= body.len() {
        let len = usize::from(u16_at(body, at)?);
        let kind = u16_at(body, at + 2)? & 0x3fff; // without NLA_F_NESTED/NET_BYTEORDER
        if len < RTA_HDR_BYTES || at + len > body.len() {
            return None;
        }
        let data = &body[at + RTA_HDR_BYTES..at + len];
        match kind {
            NDA_DST => ip = <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from),
            NDA_LLADDR => mac = <[u8; 6]>::try_from(data).ok(),
            _ => {}
        }
        at += align4(len);
    }
    let mac = mac.filter(|m| *m != [0; 6])?;
    Some(Neighbour { ifindex, ip: ip?, mac })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((RTA_HDR_BYTES + data.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(align4(out.len()), 0);
        out
    }

    fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDR_BYTES + body.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(body);
        out.resize(align4(out.len()), 0);
        out
    }

    fn neigh(family: u8, ifindex: u32, state: u16, ip: Option<[u8; 4]>, mac: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend_from_slice(&state.to_ne_bytes());
        body.extend_from_slice(&[0, 1]); // flags, type
        if let Some(ip) = ip {
            body.extend_from_slice(&attribute(NDA_DST, &ip));
        }
        if let Some(mac) = mac {
            body.extend_from_slice(&attribute(NDA_LLADDR, mac));
        }
        message(RTM_NEWNEIGH, NLM_F_MULTI, 7, &body)
    }

    const MAC: [u8; 6] = [2, 0x77, 0, 0, 0, 0x11];

    #[test]
    fn request_is_a_dump_of_ipv4_neighbours() {
        let request = dump_request(9);
        assert_eq!(request.len(), 28);
        assert_eq!(u32_at(&request, 0), Some(28));
        assert_eq!(u16_at(&request, 4), Some(RTM_GETNEIGH));
        assert_eq!(u16_at(&request, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(u32_at(&request, 8), Some(9));
        assert_eq!(i32::from(request[16]), libc::AF_INET);
    }

    #[test]
    fn keeps_usable_entries_and_stops_at_done() {
        let mut datagram = neigh(libc::AF_INET as u8, 3, 0x80, Some([10, 0, 0, 2]), Some(&MAC));
        datagram.extend(neigh(libc::AF_INET as u8, 3, 0x02, Some([10, 0, 0, 3]), Some(&[9; 6])));
        // Incomplete (no MAC), failed, NOARP, all-zero MAC, IPv6, short MAC: skipped.
        datagram.extend(neigh(libc::AF_INET as u8, 3, 0x01, Some([10, 0, 0, 4]), None));
        datagram.extend(neigh(libc::AF_INET as u8, 3, 0x20, Some([10, 0, 0, 5]), Some(&MAC)));
        datagram.extend(neigh(libc::AF_INET as u8, 3, 0x40, Some([10, 0, 0, 6]), Some(&MAC)));
        datagram.extend(neigh(libc::AF_INET as u8, 3, 0x80, Some([10, 0, 0, 7]), Some(&[0; 6])));
        datagram.extend(neigh(libc::AF_INET6 as u8, 3, 0x80, Some([10, 0, 0, 8]), Some(&MAC)));
        datagram.extend(neigh(libc::AF_INET as u8, 3, 0x80, Some([10, 0, 0, 9]), Some(&MAC[..4])));
        let mut out = Vec::new();
        assert!(!parse_neighbours(&datagram, 7, &mut out).unwrap());
        assert_eq!(
            out,
            vec![
                Neighbour { ifindex: 3, ip: Ipv4Addr::new(10, 0, 0, 2), mac: MAC },
                Neighbour { ifindex: 3, ip: Ipv4Addr::new(10, 0, 0, 3), mac: [9; 6] },
            ]
        );
        let done = message(NLMSG_DONE, NLM_F_MULTI, 7, &0u32.to_ne_bytes());
        assert!(parse_neighbours(&done, 7, &mut out).unwrap());
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn other_sequences_are_skipped_and_errors_reported() {
        let mut out = Vec::new();
        let stale = message(NLMSG_DONE, NLM_F_MULTI, 6, &0u32.to_ne_bytes());
        assert!(!parse_neighbours(&stale, 7, &mut out).unwrap());
        let error = message(NLMSG_ERROR, 0, 7, &(-libc::EPERM).to_ne_bytes());
        let text = format!("{:#}", parse_neighbours(&error, 7, &mut out).unwrap_err());
        assert!(text.contains("RTM_GETNEIGH"), "{text}");
    }

    #[test]
    fn truncated_and_lying_lengths_never_panic() {
        let full = neigh(libc::AF_INET as u8, 3, 0x80, Some([10, 0, 0, 2]), Some(&MAC));
        for cut in 0..full.len() {
            let mut out = Vec::new();
            let _ = parse_neighbours(&full[..cut], 7, &mut out);
            assert!(out.is_empty(), "a cut at {cut} yielded {out:?}");
        }
        // Attribute length larger than the message: the entry is dropped.
        let mut lying = full.clone();
        let attribute_at = NLMSG_HDR_BYTES + NDMSG_BYTES;
        lying[attribute_at..attribute_at + 2].copy_from_slice(&200u16.to_ne_bytes());
        let mut out = Vec::new();
        assert!(!parse_neighbours(&lying, 7, &mut out).unwrap());
        assert!(out.is_empty());
        // Message length 0 or past the end: an error.
        let mut zero = full;
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse_neighbours(&zero, 7, &mut Vec::new()).is_err());
    }

    #[test]
    fn reads_the_table_of_this_namespace() {
        // Unprivileged and harmless: a dump of our own namespace's table.
        let neighbours = ipv4_neighbours().expect("dump");
        assert!(neighbours.iter().all(|n| n.mac != [0; 6]));
    }
}
