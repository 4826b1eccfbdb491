//! `electrode status`: asks every replica for view, status, op, commit and
//! state digest, and prints a table. Unreachable replicas show as such
//! after a bounded wait.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Config;
use crate::transport::os;
use crate::wire::{self, consts, Decoded, Encoder, Message, StatusReply, StatusRequest, CLIENT_SENDER};

/// How long to wait for all replicas; queries are re-sent every interval.
pub const STATUS_WAIT: Duration = Duration::from_millis(1500);
const STATUS_RESEND: Duration = Duration::from_millis(300);

/// Queries every replica; `None` for those that did not answer in time.
pub fn query(config: &Config) -> anyhow::Result<Vec<Option<StatusReply>>> {
    let socket = UdpSocket::bind("0.0.0.0:0").context("binding status socket")?;
    let nonce = os::random_seed();
    let mut encoder = Encoder::new(config.cluster_id, CLIENT_SENDER);
    let mut datagrams = Vec::new();
    encoder.encode(&Message::StatusRequest(StatusRequest { nonce }), &mut datagrams).context("encoding")?;
    let mut replies: Vec<Option<StatusReply>> = vec![None; config.replica_count()];
    let start = Instant::now();
    let mut resend_at = start;
    let mut buf = vec![0u8; wire::MAX_DATAGRAM_LEN + 1];
    while replies.iter().any(Option::is_none) && start.elapsed() < STATUS_WAIT {
        if Instant::now() >= resend_at {
            for (i, address) in config.replicas.iter().enumerate() {
                if replies[i].is_none() {
                    for d in &datagrams {
                        let _ = socket.send_to(d, SocketAddr::V4(*address));
                    }
                }
            }
            resend_at = Instant::now() + STATUS_RESEND;
        }
        let wait = resend_at.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).context("setting timeout")?;
        let Ok((len, from)) = socket.recv_from(&mut buf) else { continue };
        if let Ok((_, Decoded::Message(Message::StatusReply(reply)))) =
            wire::decode(&buf[..len], config.cluster_id)
        {
            let index = reply.replica as usize;
            let expected = config.replicas.get(index).map(|a| SocketAddr::V4(*a));
            if reply.nonce == nonce && expected == Some(from) {
                replies[index] = Some(reply);
            }
        }
    }
    Ok(replies)
}

fn status_name(status: u8) -> &'static str {
    match u32::from(status) {
        consts::STATUS_NORMAL => "normal",
        consts::STATUS_VIEW_CHANGE => "view-change",
        consts::STATUS_RECOVERING => "recovering",
        _ => "unknown",
    }
}

/// Prints the table.
pub fn print(config: &Config, replies: &[Option<StatusReply>]) {
    println!(
        "replica  address                  view status               op     commit digest             role"
    );
    for (i, reply) in replies.iter().enumerate() {
        let address = config.replicas[i].to_string();
        match reply {
            Some(r) => {
                let leader = r.view % config.replica_count() as u64 == i as u64;
                println!(
                    "{:<8} {:<22} {:>6} {:<12} {:>10} {:>10} {:<18} {}",
                    i,
                    address,
                    r.view,
                    status_name(r.status),
                    r.op,
                    r.commit,
                    format!("{:016x}", r.digest),
                    if leader { "leader" } else { "follower" }
                );
            }
            None => println!(
                "{:<8} {:<22} unreachable (no answer within {} ms)",
                i,
                address,
                STATUS_WAIT.as_millis()
            ),
        }
    }
}
