//! `electrode status`: asks every replica at once for view, status, op,
//! commit and state digest, waits at most `--timeout-ms` for the answers
//! (re-sending to the silent ones), and prints a table or JSON. The verdict
//! ([`Health`]) says whether a quorum answered and whether the answering
//! replicas agree on the view; `main` turns a bad one into exit status 1.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::transport::os;
use crate::wire::{self, consts, Decoded, Encoder, Message, StatusReply, StatusRequest, CLIENT_SENDER};

/// Default of `--timeout-ms`: a replica on a live network answers in well
/// under a millisecond, so this only bounds the wait for dead ones.
pub const STATUS_TIMEOUT_DEFAULT: Duration = Duration::from_millis(300);
/// Queries are re-sent to silent replicas this many times per timeout
/// (a lost datagram costs a fraction of the timeout, not all of it).
const STATUS_SENDS: u32 = 3;

/// Queries every replica; `None` for those that did not answer in `timeout`.
pub fn query(config: &Config, timeout: Duration) -> anyhow::Result<Vec<Option<StatusReply>>> {
    let socket = UdpSocket::bind("0.0.0.0:0").context("binding status socket")?;
    let nonce = os::random_seed();
    let encoder = Encoder::new(config.cluster_id, CLIENT_SENDER);
    let mut datagrams = Vec::new();
    encoder.encode(&Message::StatusRequest(StatusRequest { nonce }), &mut datagrams).context("encoding")?;
    let mut replies: Vec<Option<StatusReply>> = vec![None; config.replica_count()];
    let start = Instant::now();
    let deadline = start + timeout;
    let resend_interval = (timeout / STATUS_SENDS).max(Duration::from_millis(1));
    let mut resend_at = start;
    let mut buf = vec![0u8; wire::MAX_DATAGRAM_LEN + 1];
    while replies.iter().any(Option::is_none) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if now >= resend_at {
            for (i, address) in config.replicas.iter().enumerate() {
                if replies[i].is_none() {
                    for d in &datagrams {
                        let _ = socket.send_to(d, SocketAddr::V4(*address));
                    }
                }
            }
            resend_at = now + resend_interval;
        }
        let wait =
            resend_at.min(deadline).saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
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

/// What a replica is doing: only a normal replica leads or follows; one in
/// a view change or recovering serves no requests whatever its view says.
pub fn role(reply: &StatusReply, index: usize, replica_count: usize) -> &'static str {
    match u32::from(reply.status) {
        consts::STATUS_NORMAL if reply.view % replica_count as u64 == index as u64 => "leader",
        consts::STATUS_NORMAL => "follower",
        consts::STATUS_VIEW_CHANGE => "view-changing",
        consts::STATUS_RECOVERING => "recovering",
        _ => "unknown",
    }
}

/// One replica in `--json` output.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub replica: usize,
    pub address: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The cluster as seen by one status query.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Health {
    pub replicas: Vec<ReplicaStatus>,
    pub answered: usize,
    /// f + 1.
    pub quorum: usize,
    pub quorum_answered: bool,
    /// Every answering replica reports the same view.
    pub views_agree: bool,
    pub timeout_ms: u64,
    /// quorum_answered && views_agree.
    pub healthy: bool,
}

impl Health {
    pub fn new(config: &Config, replies: &[Option<StatusReply>], timeout: Duration) -> Health {
        let n = config.replica_count();
        let replicas: Vec<ReplicaStatus> = replies
            .iter()
            .enumerate()
            .map(|(i, reply)| ReplicaStatus {
                replica: i,
                address: config.replicas[i].to_string(),
                reachable: reply.is_some(),
                view: reply.as_ref().map(|r| r.view),
                status: reply.as_ref().map(|r| status_name(r.status)),
                role: reply.as_ref().map(|r| role(r, i, n)),
                op: reply.as_ref().map(|r| r.op),
                commit: reply.as_ref().map(|r| r.commit),
                digest: reply.as_ref().map(|r| format!("{:016x}", r.digest)),
            })
            .collect();
        let answered = replies.iter().flatten().count();
        let quorum = config.f + 1;
        let mut views = replies.iter().flatten().map(|r| r.view);
        let first = views.next();
        let views_agree = views.all(|v| Some(v) == first);
        Health {
            replicas,
            answered,
            quorum,
            quorum_answered: answered >= quorum,
            views_agree,
            timeout_ms: timeout.as_millis() as u64,
            healthy: answered >= quorum && views_agree,
        }
    }

    /// One line naming what is wrong, None if healthy.
    pub fn problem(&self) -> Option<String> {
        if !self.quorum_answered {
            return Some(format!(
                "only {} of {} replicas answered within {} ms, fewer than a quorum of {}",
                self.answered,
                self.replicas.len(),
                self.timeout_ms,
                self.quorum
            ));
        }
        if !self.views_agree {
            let views: Vec<String> = self
                .replicas
                .iter()
                .filter_map(|r| r.view.map(|v| format!("replica {} view {v}", r.replica)))
                .collect();
            return Some(format!("replicas disagree on the view: {}", views.join(", ")));
        }
        None
    }

    /// Prints the table.
    pub fn print(&self) {
        println!(
            "replica  address                  view status               op     commit digest             role"
        );
        for r in &self.replicas {
            match (r.view, r.status, r.op, r.commit, &r.digest, r.role) {
                (Some(view), Some(status), Some(op), Some(commit), Some(digest), Some(role)) => println!(
                    "{:<8} {:<22} {:>6} {:<12} {:>10} {:>10} {:<18} {}",
                    r.replica, r.address, view, status, op, commit, digest, role
                ),
                _ => println!(
                    "{:<8} {:<22} unreachable (no answer within {} ms)",
                    r.replica, r.address, self.timeout_ms
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(replica: u8, view: u64, status: u32) -> StatusReply {
        StatusReply { view, nonce: 1, op: 10, commit: 9, digest: 0xab, status: status as u8, replica }
    }

    fn config() -> Config {
        let path = std::env::temp_dir().join(format!("electrode-status-{}.txt", std::process::id()));
        std::fs::write(&path, "f 1\nreplica 10.0.0.1:7001\nreplica 10.0.0.2:7001\nreplica 10.0.0.3:7001\n")
            .unwrap();
        let config = Config::load(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        config
    }

    #[test]
    fn only_a_normal_replica_leads() {
        assert_eq!(role(&reply(1, 1, consts::STATUS_NORMAL), 1, 3), "leader");
        assert_eq!(role(&reply(0, 1, consts::STATUS_NORMAL), 0, 3), "follower");
        assert_eq!(role(&reply(1, 1, consts::STATUS_RECOVERING), 1, 3), "recovering");
        assert_eq!(role(&reply(1, 1, consts::STATUS_VIEW_CHANGE), 1, 3), "view-changing");
        assert_eq!(role(&reply(1, 1, 0), 1, 3), "unknown");
    }

    #[test]
    fn health_needs_a_quorum_in_one_view() {
        let config = config();
        let timeout = Duration::from_millis(300);
        let normal = consts::STATUS_NORMAL;
        let healthy =
            Health::new(&config, &[Some(reply(0, 3, normal)), None, Some(reply(2, 3, normal))], timeout);
        assert!(healthy.healthy && healthy.problem().is_none());
        let lonely = Health::new(&config, &[Some(reply(0, 3, normal)), None, None], timeout);
        assert_eq!(
            lonely.problem().unwrap(),
            "only 1 of 3 replicas answered within 300 ms, fewer than a quorum of 2"
        );
        let split =
            Health::new(&config, &[Some(reply(0, 3, normal)), Some(reply(1, 4, normal)), None], timeout);
        assert_eq!(
            split.problem().unwrap(),
            "replicas disagree on the view: replica 0 view 3, replica 1 view 4"
        );
        let json = serde_json::to_value(&split).unwrap();
        assert_eq!(json["healthy"], false);
        assert_eq!(json["replicas"][2]["reachable"], false);
        assert!(json["replicas"][2].get("view").is_none());
        assert_eq!(json["replicas"][1]["role"], "leader");
        assert_eq!(json["replicas"][0]["digest"], "00000000000000ab");
    }
}
