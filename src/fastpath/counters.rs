//! The per-CPU `counters` map (classifier reasons and fast-path outcomes),
//! summed over CPUs.
//!
//! The kernel owns the map and only ever adds; user space only reads (see
//! the ownership table in `bpf/electrode.h`), so a snapshot is a plain sum
//! and the difference of two snapshots is what happened in between.

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::load::Loaded;
use crate::wire::consts::CNT_INTAKE_PASS_ASLEEP;
use crate::wire::consts::{
    CNT_BAD_MAGIC, CNT_FAST_REPLY_TX, CNT_FOREIGN, CNT_MALFORMED, CNT_MAX, CNT_PASS_BAD_BATCH,
    CNT_PASS_BAD_CHECKSUM, CNT_PASS_DISARMED, CNT_PASS_GAP, CNT_PASS_IP_OPTIONS, CNT_PASS_NOT_LEADER,
    CNT_PASS_OP_LIMIT, CNT_PASS_RINGBUF_FULL, CNT_PASS_VIEW, CNT_REACK_TX, CNT_TC_COPIES, CNT_TC_ERROR,
    CNT_TC_MAC_LEARNED, CNT_TC_MALFORMED, CNT_TC_MARKED, CNT_TC_NO_TARGET, CNT_TC_PASS_OTHER,
    CNT_TC_PASS_UNMARKED, CNT_UNKNOWN_TYPE, CNT_WRONG_CLUSTER,
};
use crate::wire::consts::{
    CNT_INTAKE_PASS_BAD_BODY, CNT_INTAKE_PASS_BAD_CHECKSUM, CNT_INTAKE_PASS_DISARMED,
    CNT_INTAKE_PASS_NOT_CLIENT, CNT_INTAKE_PASS_NOT_FOR_US, CNT_INTAKE_PASS_RINGBUF_FULL, CNT_INTAKE_RING,
};
use crate::wire::consts::{
    CNT_QP_DROP_BELOW_QUORUM, CNT_QP_DROP_FOREIGN_SOURCE, CNT_QP_DROP_REDUNDANT, CNT_QP_PASS_AFTER_QUORUM,
    CNT_QP_PASS_DISARMED, CNT_QP_PASS_GAP, CNT_QP_PASS_NOT_MEMBER, CNT_QP_PASS_QUORUM, CNT_QP_PASS_VIEW,
    CNT_QP_PASS_WINDOW,
};
use crate::wire::MsgType;

/// Number of message types (ELECTRODE_MSG_TYPE_MAX).
const MSG_TYPE_COUNT: usize = MsgType::ALL.len();

/// Frames the classifier saw, by what they were, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Well-formed datagrams of our cluster, indexed by `MsgType as usize - 1`;
    /// read them with [`Counters::messages`].
    pub messages: [u64; MSG_TYPE_COUNT],
    /// Not UDP/IPv4 to our port: ARP, IPv6, other ports, runts.
    pub foreign: u64,
    /// Our port, but truncated, fragmented or with inconsistent lengths.
    pub malformed: u64,
    /// Our port, wrong magic or protocol version.
    pub bad_magic: u64,
    /// Our port, well formed, another cluster id.
    pub wrong_cluster: u64,
    /// Our port, type 0 or above the highest known type.
    pub unknown_type: u64,
    /// fast_reply: in-order Prepares logged to the ring and acked by XDP_TX.
    pub fast_reply_tx: u64,
    /// fast_reply: retransmitted (already acked) Prepares re-acked by XDP_TX.
    pub reack_tx: u64,
    /// fast_reply: Prepares of another view than the armed one, passed.
    pub pass_view: u64,
    /// fast_reply: Prepares beyond the next op (a gap), passed.
    pub pass_gap: u64,
    /// fast_reply: Prepares while disarmed (not a normal follower), passed.
    pub pass_disarmed: u64,
    /// fast_reply: in-order Prepares that found the ring buffer full, passed.
    pub pass_ringbuf_full: u64,
    /// fast_reply: Prepares not from the armed leader's address and index, passed.
    pub pass_not_leader: u64,
    /// fast_reply: Prepares with IPv4 options (no in-place rewrite), passed.
    pub pass_ip_options: u64,
    /// fast_reply: Prepares whose body lengths (batch length, request
    /// count, request sizes) user space could not decode: passed, not acked.
    pub pass_bad_batch: u64,
    /// fast_reply: Prepares with a full UDP checksum that does not verify:
    /// passed, not acked (the kernel stack then checks it too).
    pub pass_bad_checksum: u64,
    /// fast_reply: a Prepare for op 2^64 - 1 (next_op would wrap): passed,
    /// not acked.
    pub pass_op_limit: u64,
    /// Slots of the map no reason uses; nonzero means the C and Rust sides
    /// disagree about the indices.
    pub unassigned: u64,
    /// tc_broadcast: marked datagrams from our port seen on egress.
    pub tc_marked: u64,
    /// tc_broadcast: copies sent to followers (clones plus the original, rewritten for the last).
    pub tc_copies: u64,
    /// tc_broadcast: a rewrite helper or the clone failed; the packet was dropped.
    pub tc_error: u64,
    /// tc_broadcast: marked, but disarmed or no follower MAC known; passed as is.
    pub tc_no_target: u64,
    /// tc_broadcast: unmarked electrode datagrams from our port (each clone re-enters once).
    pub tc_pass_unmarked: u64,
    /// tc_broadcast: egress frames that are not UDP/IPv4 from our port.
    pub tc_pass_other: u64,
    /// tc_broadcast: from our port but not a well-formed datagram of our cluster.
    pub tc_malformed: u64,
    /// tc_broadcast: follower MACs the XDP classifier stored (new or changed).
    pub tc_mac_learned: u64,
    /// fast_quorum_prune verdicts on PrepareOKs (rules in `bpf/electrode.h`).
    pub quorum_prune: QuorumPruneCounters,
    /// fast_intake verdicts on Requests (rules in `bpf/electrode.h`).
    pub intake: IntakeCounters,
}

/// What fast_intake did with the Requests the classifier counted (counter
/// indices 53..59).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntakeCounters {
    /// Copied into `intake_ring` and dropped from the stack.
    pub ring: u64,
    /// Passed: not armed (a follower, a view change).
    pub pass_disarmed: u64,
    /// Passed: the header's sender is a replica id (user space applies the
    /// membership rule).
    pub pass_not_client: u64,
    /// Passed: another destination address, a martian source, an IPv4
    /// total length or header checksum the stack would refuse.
    pub pass_not_for_us: u64,
    /// Passed: body lengths wire::decode refuses for a Request.
    pub pass_bad_body: u64,
    /// Passed: a full UDP checksum that does not verify.
    pub pass_bad_checksum: u64,
    /// Passed: no room in `intake_ring` (the request goes by the socket).
    pub pass_ringbuf_full: u64,
    /// Passed: user space was asleep; the socket wakes it (electrode.h,
    /// "Wake-ups").
    pub pass_asleep: u64,
}

impl IntakeCounters {
    /// Every Request the fast path decided on.
    pub fn total(&self) -> u64 {
        self.ring + self.passed()
    }

    /// Requests that went on to the stack and the socket.
    pub fn passed(&self) -> u64 {
        self.pass_disarmed
            + self.pass_not_client
            + self.pass_not_for_us
            + self.pass_bad_body
            + self.pass_bad_checksum
            + self.pass_ringbuf_full
            + self.pass_asleep
    }

    fn since(&self, earlier: &IntakeCounters) -> IntakeCounters {
        IntakeCounters {
            ring: self.ring.wrapping_sub(earlier.ring),
            pass_disarmed: self.pass_disarmed.wrapping_sub(earlier.pass_disarmed),
            pass_not_client: self.pass_not_client.wrapping_sub(earlier.pass_not_client),
            pass_not_for_us: self.pass_not_for_us.wrapping_sub(earlier.pass_not_for_us),
            pass_bad_body: self.pass_bad_body.wrapping_sub(earlier.pass_bad_body),
            pass_bad_checksum: self.pass_bad_checksum.wrapping_sub(earlier.pass_bad_checksum),
            pass_ringbuf_full: self.pass_ringbuf_full.wrapping_sub(earlier.pass_ringbuf_full),
            pass_asleep: self.pass_asleep.wrapping_sub(earlier.pass_asleep),
        }
    }

    fn slot(&mut self, index: u32) -> Option<&mut u64> {
        Some(match index {
            CNT_INTAKE_RING => &mut self.ring,
            CNT_INTAKE_PASS_DISARMED => &mut self.pass_disarmed,
            CNT_INTAKE_PASS_NOT_CLIENT => &mut self.pass_not_client,
            CNT_INTAKE_PASS_NOT_FOR_US => &mut self.pass_not_for_us,
            CNT_INTAKE_PASS_BAD_BODY => &mut self.pass_bad_body,
            CNT_INTAKE_PASS_BAD_CHECKSUM => &mut self.pass_bad_checksum,
            CNT_INTAKE_PASS_RINGBUF_FULL => &mut self.pass_ringbuf_full,
            CNT_INTAKE_PASS_ASLEEP => &mut self.pass_asleep,
            _ => return None,
        })
    }
}

/// What fast_quorum_prune did with the PrepareOKs the classifier counted
/// (counter indices 32..39).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumPruneCounters {
    /// Passed: completed the quorum of at least one op.
    pub pass_quorum: u64,
    /// Passed: a repeated ack of an op that already has a quorum (the
    /// follower answered a retransmitted Prepare).
    pub pass_after_quorum: u64,
    /// Dropped: a new ack, recorded; its op is still short of a quorum.
    pub drop_below_quorum: u64,
    /// Dropped: a duplicate, a late follower's ack, or an op below the window.
    pub drop_redundant: u64,
    /// Passed: op at or beyond the top of the window.
    pub pass_window: u64,
    /// Passed: another view than the armed one.
    pub pass_view: u64,
    /// Passed: the path is disarmed.
    pub pass_disarmed: u64,
    /// Passed: cannot be credited to a follower (self, not a member, sender
    /// and replica differ, odd body length).
    pub pass_not_member: u64,
    /// Dropped, nothing recorded: claims replica r, but its source IPv4
    /// address or UDP port is not r's configured one (membership rule).
    pub drop_foreign_source: u64,
    /// Passed, nothing recorded: a follower's negative ack (GAP flag).
    pub pass_gap: u64,
}

impl QuorumPruneCounters {
    /// Every PrepareOK the fast path decided on.
    pub fn total(&self) -> u64 {
        self.passed() + self.dropped()
    }

    /// PrepareOKs that went on to user space.
    pub fn passed(&self) -> u64 {
        self.pass_quorum
            + self.pass_after_quorum
            + self.pass_window
            + self.pass_view
            + self.pass_disarmed
            + self.pass_not_member
            + self.pass_gap
    }

    /// PrepareOKs dropped in the kernel.
    pub fn dropped(&self) -> u64 {
        self.drop_below_quorum + self.drop_redundant + self.drop_foreign_source
    }

    fn since(&self, earlier: &QuorumPruneCounters) -> QuorumPruneCounters {
        QuorumPruneCounters {
            pass_quorum: self.pass_quorum.wrapping_sub(earlier.pass_quorum),
            pass_after_quorum: self.pass_after_quorum.wrapping_sub(earlier.pass_after_quorum),
            drop_below_quorum: self.drop_below_quorum.wrapping_sub(earlier.drop_below_quorum),
            drop_redundant: self.drop_redundant.wrapping_sub(earlier.drop_redundant),
            pass_window: self.pass_window.wrapping_sub(earlier.pass_window),
            pass_view: self.pass_view.wrapping_sub(earlier.pass_view),
            pass_disarmed: self.pass_disarmed.wrapping_sub(earlier.pass_disarmed),
            pass_not_member: self.pass_not_member.wrapping_sub(earlier.pass_not_member),
            drop_foreign_source: self.drop_foreign_source.wrapping_sub(earlier.drop_foreign_source),
            pass_gap: self.pass_gap.wrapping_sub(earlier.pass_gap),
        }
    }

    fn slot(&mut self, index: u32) -> Option<&mut u64> {
        Some(match index {
            CNT_QP_PASS_QUORUM => &mut self.pass_quorum,
            CNT_QP_PASS_AFTER_QUORUM => &mut self.pass_after_quorum,
            CNT_QP_DROP_BELOW_QUORUM => &mut self.drop_below_quorum,
            CNT_QP_DROP_REDUNDANT => &mut self.drop_redundant,
            CNT_QP_PASS_WINDOW => &mut self.pass_window,
            CNT_QP_PASS_VIEW => &mut self.pass_view,
            CNT_QP_PASS_DISARMED => &mut self.pass_disarmed,
            CNT_QP_PASS_NOT_MEMBER => &mut self.pass_not_member,
            CNT_QP_DROP_FOREIGN_SOURCE => &mut self.drop_foreign_source,
            CNT_QP_PASS_GAP => &mut self.pass_gap,
            _ => return None,
        })
    }
}

impl Counters {
    /// Datagrams of type `msg_type`.
    pub fn messages(&self, msg_type: MsgType) -> u64 {
        self.messages[msg_type as usize - 1]
    }

    /// Mutable count of `msg_type` (to build expectations).
    pub fn messages_mut(&mut self, msg_type: MsgType) -> &mut u64 {
        &mut self.messages[msg_type as usize - 1]
    }

    /// Every frame counted, whatever its reason.
    pub fn total(&self) -> u64 {
        self.messages.iter().sum::<u64>()
            + self.foreign
            + self.malformed
            + self.bad_magic
            + self.wrong_cluster
            + self.unknown_type
            + self.fast_reply_tx
            + self.reack_tx
            + self.pass_view
            + self.pass_gap
            + self.pass_disarmed
            + self.pass_ringbuf_full
            + self.pass_not_leader
            + self.pass_ip_options
            + self.pass_bad_batch
            + self.pass_bad_checksum
            + self.pass_op_limit
            + self.unassigned
            + self.quorum_prune.total()
            + self.intake.total()
            + self.tc_marked
            + self.tc_copies
            + self.tc_error
            + self.tc_no_target
            + self.tc_pass_unmarked
            + self.tc_pass_other
            + self.tc_malformed
            + self.tc_mac_learned
    }

    /// What was counted after `earlier` was taken (counters only grow; a
    /// wrap of a u64 counter is not a concern).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut messages = [0; MSG_TYPE_COUNT];
        for (slot, (now, then)) in messages.iter_mut().zip(self.messages.iter().zip(&earlier.messages)) {
            *slot = now.wrapping_sub(*then);
        }
        Counters {
            messages,
            foreign: self.foreign.wrapping_sub(earlier.foreign),
            malformed: self.malformed.wrapping_sub(earlier.malformed),
            bad_magic: self.bad_magic.wrapping_sub(earlier.bad_magic),
            wrong_cluster: self.wrong_cluster.wrapping_sub(earlier.wrong_cluster),
            unknown_type: self.unknown_type.wrapping_sub(earlier.unknown_type),
            fast_reply_tx: self.fast_reply_tx.wrapping_sub(earlier.fast_reply_tx),
            reack_tx: self.reack_tx.wrapping_sub(earlier.reack_tx),
            pass_view: self.pass_view.wrapping_sub(earlier.pass_view),
            pass_gap: self.pass_gap.wrapping_sub(earlier.pass_gap),
            pass_disarmed: self.pass_disarmed.wrapping_sub(earlier.pass_disarmed),
            pass_ringbuf_full: self.pass_ringbuf_full.wrapping_sub(earlier.pass_ringbuf_full),
            pass_not_leader: self.pass_not_leader.wrapping_sub(earlier.pass_not_leader),
            pass_ip_options: self.pass_ip_options.wrapping_sub(earlier.pass_ip_options),
            pass_bad_batch: self.pass_bad_batch.wrapping_sub(earlier.pass_bad_batch),
            pass_bad_checksum: self.pass_bad_checksum.wrapping_sub(earlier.pass_bad_checksum),
            pass_op_limit: self.pass_op_limit.wrapping_sub(earlier.pass_op_limit),
            unassigned: self.unassigned.wrapping_sub(earlier.unassigned),
            quorum_prune: self.quorum_prune.since(&earlier.quorum_prune),
            intake: self.intake.since(&earlier.intake),
            tc_marked: self.tc_marked.wrapping_sub(earlier.tc_marked),
            tc_copies: self.tc_copies.wrapping_sub(earlier.tc_copies),
            tc_error: self.tc_error.wrapping_sub(earlier.tc_error),
            tc_no_target: self.tc_no_target.wrapping_sub(earlier.tc_no_target),
            tc_pass_unmarked: self.tc_pass_unmarked.wrapping_sub(earlier.tc_pass_unmarked),
            tc_pass_other: self.tc_pass_other.wrapping_sub(earlier.tc_pass_other),
            tc_malformed: self.tc_malformed.wrapping_sub(earlier.tc_malformed),
            tc_mac_learned: self.tc_mac_learned.wrapping_sub(earlier.tc_mac_learned),
        }
    }

    fn add(&mut self, index: u32, value: u64) {
        if let Some(slot) = self.quorum_prune.slot(index) {
            *slot += value;
            return;
        }
        if let Some(slot) = self.intake.slot(index) {
            *slot += value;
            return;
        }
        let slot = match index {
            CNT_FOREIGN => &mut self.foreign,
            CNT_MALFORMED => &mut self.malformed,
            CNT_BAD_MAGIC => &mut self.bad_magic,
            CNT_WRONG_CLUSTER => &mut self.wrong_cluster,
            CNT_UNKNOWN_TYPE => &mut self.unknown_type,
            CNT_FAST_REPLY_TX => &mut self.fast_reply_tx,
            CNT_REACK_TX => &mut self.reack_tx,
            CNT_PASS_VIEW => &mut self.pass_view,
            CNT_PASS_GAP => &mut self.pass_gap,
            CNT_PASS_DISARMED => &mut self.pass_disarmed,
            CNT_PASS_RINGBUF_FULL => &mut self.pass_ringbuf_full,
            CNT_PASS_NOT_LEADER => &mut self.pass_not_leader,
            CNT_PASS_IP_OPTIONS => &mut self.pass_ip_options,
            CNT_PASS_BAD_BATCH => &mut self.pass_bad_batch,
            CNT_PASS_BAD_CHECKSUM => &mut self.pass_bad_checksum,
            CNT_PASS_OP_LIMIT => &mut self.pass_op_limit,
            CNT_TC_MARKED => &mut self.tc_marked,
            CNT_TC_COPIES => &mut self.tc_copies,
            CNT_TC_ERROR => &mut self.tc_error,
            CNT_TC_NO_TARGET => &mut self.tc_no_target,
            CNT_TC_PASS_UNMARKED => &mut self.tc_pass_unmarked,
            CNT_TC_PASS_OTHER => &mut self.tc_pass_other,
            CNT_TC_MALFORMED => &mut self.tc_malformed,
            CNT_TC_MAC_LEARNED => &mut self.tc_mac_learned,
            other => match u8::try_from(other).ok().and_then(MsgType::from_u8) {
                Some(msg_type) => self.messages_mut(msg_type),
                None => &mut self.unassigned,
            },
        };
        *slot += value;
    }
}

impl Counters {
    /// Reads a `counters` map (the skeleton's, or one opened by id from a
    /// program attached by another process) and sums every slot over the
    /// CPUs. One slot mapping serves both.
    pub fn from_map(map: &impl MapCore) -> Result<Counters> {
        let mut counters = Counters::default();
        counters.add_map(map)?;
        Ok(counters)
    }

    /// Adds every slot of a `counters` map, summed over the CPUs (to total
    /// the maps of several loaded objects).
    pub fn add_map(&mut self, map: &impl MapCore) -> Result<()> {
        for index in 0..CNT_MAX {
            let per_cpu = map
                .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
                .with_context(|| format!("read map counters[{index}]"))?
                .with_context(|| format!("read map counters[{index}]: no such slot"))?;
            self.add_per_cpu(index, &per_cpu)?;
        }
        Ok(())
    }

    /// Adds the per-CPU values of slot `index` (8 native-endian bytes each).
    pub fn add_per_cpu(&mut self, index: u32, per_cpu: &[Vec<u8>]) -> Result<()> {
        for value in per_cpu {
            let bytes: [u8; 8] = value.get(..8).and_then(|b| b.try_into().ok()).with_context(|| {
                format!("read map counters[{index}]: value of {} bytes, want 8", value.len())
            })?;
            self.add(index, u64::from_ne_bytes(bytes));
        }
        Ok(())
    }

    /// Every counter with its name, in map order of the groups: message
    /// types by wire name, classifier reasons, fast_reply, quorum_prune
    /// (`quorum_prune.` prefix), tc_broadcast, fast_intake (`intake.`
    /// prefix), then `unassigned`. Names
    /// are the field paths of this struct, so text and JSON output agree.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let mut named: Vec<(&'static str, u64)> =
            MsgType::ALL.iter().map(|msg_type| (msg_type.name(), self.messages(*msg_type))).collect();
        let qp = &self.quorum_prune;
        named.extend([
            ("foreign", self.foreign),
            ("malformed", self.malformed),
            ("bad_magic", self.bad_magic),
            ("wrong_cluster", self.wrong_cluster),
            ("unknown_type", self.unknown_type),
            ("fast_reply_tx", self.fast_reply_tx),
            ("reack_tx", self.reack_tx),
            ("pass_view", self.pass_view),
            ("pass_gap", self.pass_gap),
            ("pass_disarmed", self.pass_disarmed),
            ("pass_ringbuf_full", self.pass_ringbuf_full),
            ("pass_not_leader", self.pass_not_leader),
            ("pass_ip_options", self.pass_ip_options),
            ("pass_bad_batch", self.pass_bad_batch),
            ("pass_bad_checksum", self.pass_bad_checksum),
            ("pass_op_limit", self.pass_op_limit),
            ("quorum_prune.pass_quorum", qp.pass_quorum),
            ("quorum_prune.pass_after_quorum", qp.pass_after_quorum),
            ("quorum_prune.drop_below_quorum", qp.drop_below_quorum),
            ("quorum_prune.drop_redundant", qp.drop_redundant),
            ("quorum_prune.pass_window", qp.pass_window),
            ("quorum_prune.pass_view", qp.pass_view),
            ("quorum_prune.pass_disarmed", qp.pass_disarmed),
            ("quorum_prune.pass_not_member", qp.pass_not_member),
            ("quorum_prune.drop_foreign_source", qp.drop_foreign_source),
            ("quorum_prune.pass_gap", qp.pass_gap),
            ("tc_marked", self.tc_marked),
            ("tc_copies", self.tc_copies),
            ("tc_error", self.tc_error),
            ("tc_no_target", self.tc_no_target),
            ("tc_pass_unmarked", self.tc_pass_unmarked),
            ("tc_pass_other", self.tc_pass_other),
            ("tc_malformed", self.tc_malformed),
            ("tc_mac_learned", self.tc_mac_learned),
            ("intake.ring", self.intake.ring),
            ("intake.pass_disarmed", self.intake.pass_disarmed),
            ("intake.pass_not_client", self.intake.pass_not_client),
            ("intake.pass_not_for_us", self.intake.pass_not_for_us),
            ("intake.pass_bad_body", self.intake.pass_bad_body),
            ("intake.pass_bad_checksum", self.intake.pass_bad_checksum),
            ("intake.pass_ringbuf_full", self.intake.pass_ringbuf_full),
            ("intake.pass_asleep", self.intake.pass_asleep),
            ("unassigned", self.unassigned),
        ]);
        named
    }
}

impl Loaded {
    /// Reads the `counters` map and sums every slot over the CPUs.
    pub fn counters(&self) -> Result<Counters> {
        Counters::from_map(&self.skel().maps.counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_slot_lands_in_exactly_one_field() {
        for index in 0..CNT_MAX {
            let mut counters = Counters::default();
            counters.add(index, 1);
            assert_eq!(counters.total(), 1, "slot {index}");
        }
        let mut counters = Counters::default();
        for msg_type in MsgType::ALL {
            counters.add(u32::from(msg_type as u8), 10 + msg_type as u64);
        }
        for msg_type in MsgType::ALL {
            assert_eq!(counters.messages(msg_type), 10 + msg_type as u64);
        }
        counters.add(CNT_FOREIGN, 1);
        counters.add(CNT_MALFORMED, 2);
        counters.add(CNT_BAD_MAGIC, 3);
        counters.add(CNT_WRONG_CLUSTER, 4);
        counters.add(CNT_UNKNOWN_TYPE, 5);
        counters.add(CNT_MAX - 1, 6);
        let reasons = (counters.foreign, counters.malformed, counters.bad_magic);
        assert_eq!(reasons, (1, 2, 3));
        assert_eq!((counters.wrong_cluster, counters.unknown_type), (4, 5));
        assert_eq!(counters.unassigned, 6);
        for (offset, index) in [
            CNT_FAST_REPLY_TX,
            CNT_REACK_TX,
            CNT_PASS_VIEW,
            CNT_PASS_GAP,
            CNT_PASS_DISARMED,
            CNT_PASS_RINGBUF_FULL,
            CNT_PASS_NOT_LEADER,
            CNT_PASS_IP_OPTIONS,
            CNT_PASS_BAD_BATCH,
            CNT_PASS_BAD_CHECKSUM,
            CNT_PASS_OP_LIMIT,
        ]
        .into_iter()
        .enumerate()
        {
            counters.add(index, 10 * (offset as u64 + 1));
        }
        let fast = (counters.fast_reply_tx, counters.reack_tx, counters.pass_view, counters.pass_gap);
        assert_eq!(fast, (10, 20, 30, 40));
        let passed = (counters.pass_disarmed, counters.pass_ringbuf_full, counters.pass_not_leader);
        assert_eq!(passed, (50, 60, 70));
        assert_eq!(counters.pass_ip_options, 80);
        assert_eq!((counters.pass_bad_batch, counters.pass_bad_checksum), (90, 100));
        assert_eq!(counters.pass_op_limit, 110);
        assert_eq!(counters.unassigned, 6, "every fast_reply index has its own field");
    }

    #[test]
    fn quorum_prune_slots_land_in_their_named_fields() {
        let mut counters = Counters::default();
        for (value, index) in (CNT_QP_PASS_QUORUM..=CNT_QP_PASS_NOT_MEMBER).enumerate() {
            counters.add(index, value as u64 + 1);
        }
        let qp = &counters.quorum_prune;
        assert_eq!((qp.pass_quorum, qp.pass_after_quorum), (1, 2));
        assert_eq!((qp.drop_below_quorum, qp.drop_redundant), (3, 4));
        assert_eq!((qp.pass_window, qp.pass_view), (5, 6));
        assert_eq!((qp.pass_disarmed, qp.pass_not_member), (7, 8));
        assert_eq!((qp.passed(), qp.dropped()), (1 + 2 + 5 + 6 + 7 + 8, 3 + 4));
        assert_eq!(counters.unassigned, 0);
        counters.add(CNT_QP_DROP_FOREIGN_SOURCE, 9);
        let qp = &counters.quorum_prune;
        assert_eq!(qp.drop_foreign_source, 9);
        assert_eq!(qp.dropped(), 3 + 4 + 9);
        assert_eq!(counters.unassigned, 0);
        let later =
            Counters { quorum_prune: QuorumPruneCounters { pass_view: 9, ..qp.clone() }, ..counters.clone() };
        assert_eq!(
            later.since(&counters).quorum_prune,
            QuorumPruneCounters { pass_view: 3, ..Default::default() }
        );
    }

    #[test]
    fn intake_slots_land_in_their_named_fields() {
        let mut counters = Counters::default();
        for (value, index) in (CNT_INTAKE_RING..=CNT_INTAKE_PASS_ASLEEP).enumerate() {
            counters.add(index, value as u64 + 1);
        }
        let intake = &counters.intake;
        assert_eq!((intake.ring, intake.pass_disarmed, intake.pass_not_client), (1, 2, 3));
        assert_eq!((intake.pass_not_for_us, intake.pass_bad_body, intake.pass_bad_checksum), (4, 5, 6));
        assert_eq!((intake.pass_ringbuf_full, intake.pass_asleep), (7, 8));
        assert_eq!((intake.passed(), intake.total()), (2 + 3 + 4 + 5 + 6 + 7 + 8, 36));
        assert_eq!(counters.unassigned, 0);
        let named = counters.named();
        assert!(named.contains(&("intake.pass_not_for_us", 4)), "{named:?}");
    }

    #[test]
    fn named_lists_every_slot_once_under_a_unique_name() {
        let mut counters = Counters::default();
        for index in 0..CNT_MAX {
            counters.add(index, 1u64 << (index % 32));
        }
        let named = counters.named();
        assert_eq!(named.iter().map(|(_, value)| value).sum::<u64>(), counters.total());
        let mut names: Vec<&str> = named.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), named.len(), "names are unique");
        // Every field that a slot feeds is listed (all nonzero but unassigned's share).
        assert!(named.iter().all(|(_, value)| *value > 0), "{named:?}");
    }

    #[test]
    fn add_per_cpu_sums_cpus_and_refuses_short_values() {
        let mut counters = Counters::default();
        let per_cpu = vec![3u64.to_ne_bytes().to_vec(), 4u64.to_ne_bytes().to_vec()];
        counters.add_per_cpu(CNT_FOREIGN, &per_cpu).expect("8-byte values");
        assert_eq!(counters.foreign, 7);
        assert!(counters.add_per_cpu(CNT_FOREIGN, &[vec![1, 2, 3]]).is_err());
    }

    #[test]
    fn since_is_the_difference_field_by_field() {
        let mut earlier = Counters::default();
        earlier.add(CNT_FOREIGN, 2);
        earlier.add(u32::from(MsgType::Prepare as u8), 5);
        let mut later = earlier.clone();
        later.add(CNT_FOREIGN, 1);
        later.add(u32::from(MsgType::Prepare as u8), 3);
        let mut expected = Counters { foreign: 1, ..Counters::default() };
        *expected.messages_mut(MsgType::Prepare) = 3;
        assert_eq!(later.since(&earlier), expected);
    }
}
