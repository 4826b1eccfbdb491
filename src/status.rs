//! `electrode status`: asks every replica at once for view, status, op,
//! commit and state digest, waits at most `--timeout-ms` for the answers
//! (re-sending to the silent ones), and prints a table or JSON. The verdict
//! ([`Health`]) says whether a quorum answered, whether the answering
//! replicas agree on the view, whether two of them show different
//! histories, and whether any recovery is blocked (more than f replicas
//! lost their memory beside a replica holding state); `main` turns a bad
//! one into exit status 1.

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
    ask(config, &vec![true; config.replica_count()], timeout)
}

/// Queries every replica, then asks once more the leaders that a follower
/// looks ahead of (see [`leaders_to_recheck`]), within another `timeout`
/// if there are any, and judges the answers.
pub fn survey(config: &Config, timeout: Duration) -> anyhow::Result<Health> {
    let replies = query(config, timeout)?;
    let recheck = leaders_to_recheck(&replies);
    let later =
        if recheck.iter().any(|r| *r) { ask(config, &recheck, timeout)? } else { vec![None; replies.len()] };
    Ok(Health::new(config, &replies, &later, timeout))
}

/// Queries the replicas `which` marks (with a fresh nonce, so answers to
/// an earlier query are ignored); `None` for the others and the silent.
fn ask(config: &Config, which: &[bool], timeout: Duration) -> anyhow::Result<Vec<Option<StatusReply>>> {
    assert_eq!(which.len(), config.replica_count());
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
    while replies.iter().zip(which).any(|(reply, asked)| *asked && reply.is_none()) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if now >= resend_at {
            for (i, address) in config.replicas.iter().enumerate() {
                if which[i] && replies[i].is_none() {
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
            if reply.nonce == nonce && expected == Some(from) && which[index] {
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

/// The leader replica `follower`'s answer names: normal status in the
/// same view, `None` if the leader did not answer so.
fn leader_of<'a>(replies: &'a [Option<StatusReply>], follower: &StatusReply) -> Option<&'a StatusReply> {
    let leader = (follower.view % replies.len() as u64) as usize;
    replies[leader]
        .as_ref()
        .filter(|l| u32::from(l.status) == consts::STATUS_NORMAL && l.view == follower.view)
}

/// Normal followers whose commit is above the op of their normal leader
/// (same view) in `replies`: which leaders to ask again before calling it
/// divergence. A leader's op never decreases in a view and a follower
/// commits only what its leader prepared, so a follower's commit is at
/// most its leader's op at the moment the follower answered; but the
/// replicas answer at different moments (a lost query is re-sent a third
/// of the timeout later), and a leader that answered earlier may have
/// prepared and committed more since. A leader's answer to a query sent
/// after the follower's answer arrived has no such excuse.
pub fn leaders_to_recheck(replies: &[Option<StatusReply>]) -> Vec<bool> {
    let mut recheck = vec![false; replies.len()];
    for follower in replies.iter().flatten() {
        if u32::from(follower.status) != consts::STATUS_NORMAL {
            continue;
        }
        if let Some(leader) = leader_of(replies, follower) {
            if leader.replica != follower.replica && follower.commit > leader.op {
                recheck[leader.replica as usize] = true;
            }
        }
    }
    recheck
}

/// Evidence that the replicas hold two histories, as one line; None if
/// none. `later` holds answers to queries sent after every answer of
/// `replies` arrived (see [`leaders_to_recheck`]).
fn divergence(replies: &[Option<StatusReply>], later: &[Option<StatusReply>]) -> Option<String> {
    let normal: Vec<&StatusReply> =
        replies.iter().flatten().filter(|r| u32::from(r.status) == consts::STATUS_NORMAL).collect();
    // The state at a commit is the same on every replica, whatever view
    // each is in: committed ops survive view changes. Different digests at
    // different commits are normal (one replica is behind).
    for (k, a) in normal.iter().enumerate() {
        for b in &normal[k + 1..] {
            if a.commit == b.commit && a.digest != b.digest {
                return Some(format!(
                    "replicas {} and {} disagree at commit {}: state digests {:016x} and {:016x} (two histories)",
                    a.replica, b.replica, a.commit, a.digest, b.digest
                ));
            }
        }
    }
    for follower in &normal {
        let Some(leader) = leader_of(later, follower) else { continue };
        if leader.replica != follower.replica && follower.commit > leader.op {
            return Some(format!(
                "replica {} (follower, commit {}) is ahead of its leader replica {} (op {}) in view {}: two histories",
                follower.replica, follower.commit, leader.replica, leader.op, follower.view
            ));
        }
    }
    None
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
    /// Two replicas in normal status show different histories: different
    /// state digests at the same commit, or a follower that committed past
    /// what its leader holds (confirmed by asking the leader again).
    pub diverged: bool,
    pub timeout_ms: u64,
    /// quorum_answered && views_agree && !diverged && recovery_blocked is
    /// empty.
    pub healthy: bool,
    /// Why `diverged`, for problem(); not in the JSON (diverged is).
    #[serde(skip)]
    divergence: Option<String>,
    /// Replicas whose recovery is blocked (they wait for the operator:
    /// `electrode replica --accept-data-loss`).
    pub recovery_blocked: Vec<usize>,
}

impl Health {
    /// Judges `replies` (one per replica); `later` holds the answers of
    /// the leaders asked again after all of `replies` arrived (see
    /// [`survey`]), `None` for the others.
    pub fn new(
        config: &Config,
        replies: &[Option<StatusReply>],
        later: &[Option<StatusReply>],
        timeout: Duration,
    ) -> Health {
        let n = config.replica_count();
        assert_eq!(replies.len(), n);
        assert_eq!(later.len(), n);
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
        let divergence = divergence(replies, later);
        let diverged = divergence.is_some();
        Health {
            replicas,
            answered,
            quorum,
            quorum_answered: answered >= quorum,
            views_agree,
            diverged,
            timeout_ms: timeout.as_millis() as u64,
            healthy: answered >= quorum && views_agree && !diverged && recovery_blocked.is_empty(),
            divergence,
            recovery_blocked,
        }
    }

    /// One line naming what is wrong, None if healthy. Divergence comes
    /// first: it is a safety violation, the others cost only progress.
    pub fn problem(&self) -> Option<String> {
        if let Some(divergence) = &self.divergence {
            return Some(divergence.clone());
        }
        // Next: blocked replicas also report view 0 beside the holder's
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
        let none = [None, None, None];
        let healthy = Health::new(
            &config,
            &[Some(reply(0, 3, normal)), None, Some(reply(2, 3, normal))],
            &none,
            timeout,
        );
        assert!(healthy.healthy && healthy.problem().is_none());
        let lonely = Health::new(&config, &[Some(reply(0, 3, normal)), None, None], &none, timeout);
        assert_eq!(
            lonely.problem().unwrap(),
            "only 1 of 3 replicas answered within 300 ms, fewer than a quorum of 2"
        );
        let split = Health::new(
            &config,
            &[Some(reply(0, 3, normal)), Some(reply(1, 4, normal)), None],
            &none,
            timeout,
        );
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
        assert_eq!(json["diverged"], false);
        assert!(json.get("divergence").is_none());
    }

    /// A normal replica of view 3 (replica 0 leads it) at `op`, `commit`.
    fn at(replica: u8, op: u64, commit: u64, digest: u64) -> Option<StatusReply> {
        Some(StatusReply {
            view: 3,
            nonce: 1,
            op,
            commit,
            digest,
            status: consts::STATUS_NORMAL as u8,
            replica,
            catching_up: false,
            waiting_for: None,
        })
    }

    #[test]
    fn different_digests_at_the_same_commit_are_two_histories() {
        let config = config();
        let timeout = Duration::from_millis(300);
        let none = [None, None, None];
        let replies =
            [at(0, 15_400, 15_376, 0xa400), at(1, 15_376, 15_376, 0x4ee0), at(2, 15_380, 15_370, 7)];
        let health = Health::new(&config, &replies, &none, timeout);
        assert!(health.quorum_answered && health.views_agree);
        assert!(health.diverged && !health.healthy);
        assert_eq!(
            health.problem().unwrap(),
            "replicas 0 and 1 disagree at commit 15376: state digests 000000000000a400 and \
             0000000000004ee0 (two histories)"
        );
        let json = serde_json::to_value(&health).unwrap();
        assert_eq!((json["diverged"].clone(), json["healthy"].clone()), (true.into(), false.into()));
        // Views do not matter: a committed op's state is the same in all.
        let mut other_view = replies.clone();
        other_view[1].as_mut().unwrap().view = 4;
        let health = Health::new(&config, &other_view, &none, timeout);
        assert!(health.diverged && health.problem().unwrap().starts_with("replicas 0 and 1 disagree"));
        // A replica not in normal status is not compared (its numbers are
        // those of a state it is leaving or has not reached).
        let mut recovering = replies.clone();
        recovering[1].as_mut().unwrap().status = consts::STATUS_RECOVERING as u8;
        assert!(!Health::new(&config, &recovering, &none, timeout).diverged);
    }

    #[test]
    fn different_digests_at_different_commits_are_healthy() {
        let config = config();
        let timeout = Duration::from_millis(300);
        // Followers behind their leader, each at its own commit: normal.
        let replies = [at(0, 2001, 2000, 1), at(1, 2001, 1999, 2), at(2, 1990, 1985, 3)];
        assert_eq!(leaders_to_recheck(&replies), vec![false; 3]);
        let health = Health::new(&config, &replies, &[None, None, None], timeout);
        assert!(health.healthy && !health.diverged);
        assert_eq!(health.problem(), None);
    }

    #[test]
    fn a_follower_ahead_of_its_leader_is_two_histories_once_the_leader_confirms() {
        let config = config();
        let timeout = Duration::from_millis(300);
        let replies = [at(0, 2001, 2000, 1), at(1, 15_376, 15_376, 2), at(2, 2001, 1990, 3)];
        // Only the leader of the follower's view is asked again.
        assert_eq!(leaders_to_recheck(&replies), vec![true, false, false]);
        // Unconfirmed (the leader did not answer again), no verdict.
        let unconfirmed = Health::new(&config, &replies, &[None, None, None], timeout);
        assert!(unconfirmed.healthy && !unconfirmed.diverged);
        // The leader moved on in the meantime: it answered first and was
        // busy. Normal.
        let moved_on = [at(0, 15_400, 15_390, 9), None, None];
        assert!(Health::new(&config, &replies, &moved_on, timeout).healthy);
        // The leader changed view since: not comparable.
        let mut next_view = moved_on.clone();
        next_view[0] = at(0, 2001, 2000, 1);
        next_view[0].as_mut().unwrap().view = 6;
        assert!(!Health::new(&config, &replies, &next_view, timeout).diverged);
        // Asked after the follower answered, the leader still holds less
        // than the follower committed.
        let confirmed = [at(0, 2001, 2000, 1), None, None];
        let health = Health::new(&config, &replies, &confirmed, timeout);
        assert!(health.diverged && !health.healthy);
        assert_eq!(
            health.problem().unwrap(),
            "replica 1 (follower, commit 15376) is ahead of its leader replica 0 (op 2001) in view 3: two \
             histories"
        );
        // Divergence is named before views that disagree.
        let mut split = replies.clone();
        split[2].as_mut().unwrap().view = 4;
        let health = Health::new(&config, &split, &confirmed, timeout);
        assert!(!health.views_agree);
        assert!(health.problem().unwrap().starts_with("replica 1 (follower, commit 15376) is ahead"));
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
            &[None, None, None],
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
        let health =
            Health::new(&config, &[None, None, Some(blocked(2, 0, 2, 900))], &[None, None, None], timeout);
        assert_eq!(
            health.problem().unwrap(),
            "replica 2 is blocked: more than f replicas lost their memory; replica 0 holds op 900 \
             (see --accept-data-loss)"
        );
        let health = Health::new(
            &config,
            &[None, Some(blocked(1, 0, 2, 900)), Some(blocked(2, 1, 3, 15))],
            &[None, None, None],
            timeout,
        );
        assert!(health.problem().unwrap().contains("replica 1 holds op 15 "), "{:?}", health.problem());
    }

    #[test]
    fn a_catching_up_follower_says_so_and_stays_healthy() {
        let config = config();
        let timeout = Duration::from_millis(300);
        let normal = consts::STATUS_NORMAL;
        let catching_up = StatusReply { catching_up: true, ..reply(2, 3, normal) };
        let health = Health::new(
            &config,
            &[Some(reply(0, 3, normal)), None, Some(catching_up)],
            &[None, None, None],
            timeout,
        );
        assert!(health.healthy && health.problem().is_none());
        assert_eq!(health.replicas[2].role_detail().unwrap(), "follower, catching up");
        assert_eq!(health.replicas[0].role_detail().unwrap(), "leader");
        let json = serde_json::to_value(&health).unwrap();
        assert_eq!(json["replicas"][2]["catching_up"], true);
        assert_eq!(json["replicas"][0]["catching_up"], false);
        assert!(json["replicas"][1].get("catching_up").is_none());
    }
}
