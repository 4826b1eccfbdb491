//! `electrode status`: asks every replica at once for view, status, op,
//! commit and state digest, waits at most `--timeout-ms` for the answers
//! (re-sending to the silent ones), and prints a table or JSON. The verdict
//! ([`Health`]) says whether a quorum answered, whether the answering
//! replicas agree on the view, and whether any recovery is blocked (more
//! than f replicas lost their memory beside a replica holding state);
//! `main` turns a bad one into exit status 1.

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
    let mut encoder = Encoder::new(config.cluster_id, CLIENT_SENDER);
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
    /// Normal but still fetching the state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catching_up: Option<bool>,
    /// Recovering and waiting: more than f replicas lost their memory
    /// while `state_holder` holds state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_blocked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_holder: Option<HolderStatus>,
}

/// The replica holding state that a blocked recovery reported.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct HolderStatus {
    pub replica: usize,
    pub view: u64,
    pub op: u64,
}

impl ReplicaStatus {
    /// The last column of the table: the role, and for a replica that
    /// cannot serve yet what it waits for.
    fn role_detail(&self) -> Option<String> {
        let role = self.role?;
        Some(match (self.state_holder, self.catching_up) {
            (Some(h), _) => format!("{role}: waiting, replica {} holds op {}", h.replica, h.op),
            (None, Some(true)) => format!("{role}, catching up"),
            _ => role.to_string(),
        })
    }
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
    /// quorum_answered && views_agree && recovery_blocked is empty.
    pub healthy: bool,
    /// Replicas whose recovery is blocked (they wait for the operator:
    /// `electrode replica --accept-data-loss`).
    pub recovery_blocked: Vec<usize>,
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
                catching_up: reply.as_ref().map(|r| r.catching_up),
                recovery_blocked: reply.as_ref().map(|r| r.waiting_for.is_some()),
                state_holder: reply.as_ref().and_then(|r| r.waiting_for).map(|h| HolderStatus {
                    replica: h.replica.into(),
                    view: h.view,
                    op: h.op,
                }),
            })
            .collect();
        let recovery_blocked: Vec<usize> =
            replicas.iter().filter(|r| r.recovery_blocked == Some(true)).map(|r| r.replica).collect();
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
            healthy: answered >= quorum && views_agree && recovery_blocked.is_empty(),
            recovery_blocked,
        }
    }

    /// One line naming what is wrong, None if healthy.
    pub fn problem(&self) -> Option<String> {
        // First: blocked replicas also report view 0 beside the holder's
        // view, and the view disagreement would hide the reason.
        if let Some(blocked) = self.blocked_problem() {
            return Some(blocked);
        }
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

    /// The line for blocked recoveries: who waits, beside whom.
    fn blocked_problem(&self) -> Option<String> {
        let who = match self.recovery_blocked.as_slice() {
            [] => return None,
            [one] => format!("replica {one} is"),
            [first @ .., last] => {
                let first: Vec<String> = first.iter().map(usize::to_string).collect();
                format!("replicas {} and {last} are", first.join(", "))
            }
        };
        // Blocked replicas may have heard different holders: name the
        // most advanced, the one the cluster would continue from.
        let holder = match self.replicas.iter().filter_map(|r| r.state_holder).max_by_key(|h| (h.view, h.op))
        {
            Some(h) => format!("replica {} holds op {}", h.replica, h.op),
            None => "a peer holds state".to_string(),
        };
        Some(format!(
            "{who} blocked: more than f replicas lost their memory; {holder} (see --accept-data-loss)"
        ))
    }

    /// Prints the table.
    pub fn print(&self) {
        println!(
            "replica  address                  view status               op     commit digest             role"
        );
        for r in &self.replicas {
            match (r.view, r.status, r.op, r.commit, &r.digest, r.role_detail()) {
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
        StatusReply {
            view,
            nonce: 1,
            op: 10,
            commit: 9,
            digest: 0xab,
            status: status as u8,
            replica,
            catching_up: false,
            waiting_for: None,
        }
    }

    /// Parsed in memory: tests run in parallel, and a file shared by them
    /// was removed under another's feet.
    fn config() -> Config {
        let text = "f 1\nreplica 10.0.0.1:7001\nreplica 10.0.0.2:7001\nreplica 10.0.0.3:7001\n";
        Config::parse(std::path::Path::new("config.txt"), text).unwrap()
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

    fn blocked(replica: u8, holder: u8, view: u64, op: u64) -> StatusReply {
        StatusReply {
            view: 0,
            op: 0,
            commit: 0,
            waiting_for: Some(wire::StateHolder { replica: holder, view, op }),
            ..reply(replica, 0, consts::STATUS_RECOVERING)
        }
    }

    #[test]
    fn blocked_recoveries_are_named_with_the_holder_and_unhealthy() {
        let config = config();
        let timeout = Duration::from_millis(300);
        let holder = StatusReply { op: 15376, commit: 15370, ..reply(1, 4, consts::STATUS_NORMAL) };
        // Replicas 0 and 2 lost their memory beside replica 1: one line
        // naming both and the holder, before the views (0 vs 4) disagree.
        let health = Health::new(
            &config,
            &[Some(blocked(0, 1, 4, 15376)), Some(holder), Some(blocked(2, 1, 4, 15376))],
            timeout,
        );
        assert!(!health.healthy);
        assert_eq!(health.recovery_blocked, vec![0, 2]);
        assert_eq!(
            health.problem().unwrap(),
            "replicas 0 and 2 are blocked: more than f replicas lost their memory; replica 1 holds op 15376 \
             (see --accept-data-loss)"
        );
        assert_eq!(
            health.replicas[0].role_detail().unwrap(),
            "recovering: waiting, replica 1 holds op 15376"
        );
        assert_eq!(health.replicas[1].role_detail().unwrap(), "leader");
        let json = serde_json::to_value(&health).unwrap();
        assert_eq!(json["recovery_blocked"], serde_json::json!([0, 2]));
        assert_eq!(json["replicas"][2]["recovery_blocked"], true);
        assert_eq!(
            json["replicas"][2]["state_holder"],
            serde_json::json!({"replica": 1, "view": 4, "op": 15376})
        );
        assert_eq!(json["replicas"][1]["recovery_blocked"], false);
        assert!(json["replicas"][1].get("state_holder").is_none());

        // One blocked replica, the holder unreachable, and two holders
        // heard: the most advanced one is named, even without a quorum.
        let health = Health::new(&config, &[None, None, Some(blocked(2, 0, 2, 900))], timeout);
        assert_eq!(
            health.problem().unwrap(),
            "replica 2 is blocked: more than f replicas lost their memory; replica 0 holds op 900 \
             (see --accept-data-loss)"
        );
        let health =
            Health::new(&config, &[None, Some(blocked(1, 0, 2, 900)), Some(blocked(2, 1, 3, 15))], timeout);
        assert!(health.problem().unwrap().contains("replica 1 holds op 15 "), "{:?}", health.problem());
    }

    #[test]
    fn a_catching_up_follower_says_so_and_stays_healthy() {
        let config = config();
        let timeout = Duration::from_millis(300);
        let normal = consts::STATUS_NORMAL;
        let catching_up = StatusReply { catching_up: true, ..reply(2, 3, normal) };
        let health = Health::new(&config, &[Some(reply(0, 3, normal)), None, Some(catching_up)], timeout);
        assert!(health.healthy && health.problem().is_none());
        assert_eq!(health.replicas[2].role_detail().unwrap(), "follower, catching up");
        assert_eq!(health.replicas[0].role_detail().unwrap(), "leader");
        let json = serde_json::to_value(&health).unwrap();
        assert_eq!(json["replicas"][2]["catching_up"], true);
        assert_eq!(json["replicas"][0]["catching_up"], false);
        assert!(json["replicas"][1].get("catching_up").is_none());
    }
}
