//! The per-CPU `counters` map (classifier reasons and fast-path outcomes),
//! summed over CPUs.
//!
//! The kernel owns the map and only ever adds; user space only reads (see
//! "Maps and their owners" in `bpf/electrode.h`), so a snapshot is a plain
//! sum and the difference of two snapshots is what happened in between.
//!
//! The counters themselves are `enum electrode_counter` in
//! `bpf/electrode.h`: build.rs generates from it the fields of
//! [`Counters`] (and of its groups, [`QuorumPruneCounters`] and
//! [`IntakeCounters`]), their docs, a `CNT_*` constant per slot and
//! [`NAMED`], the slot and name of every counter (the generated file is
//! `$OUT_DIR/electrode_counters.rs`; `cargo doc` shows it here). Everything
//! in this file is written over those, so a new counter is one line in the
//! header.

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::load::Loaded;
use crate::wire::MsgType;

include!(concat!(env!("OUT_DIR"), "/electrode_counters.rs"));

/// Number of message types (ELECTRODE_MSG_TYPE_MAX).
const MSG_TYPE_COUNT: usize = MsgType::ALL.len();

/// Sum of the counters whose name (within the group) starts with `prefix`:
/// `pass_` for frames passed on to the stack, `drop_` for frames dropped
/// (the naming rule of `enum electrode_counter`).
fn sum_prefixed(fields: &[(&str, u64)], prefix: &str) -> u64 {
    fields.iter().filter(|(name, _)| name.starts_with(prefix)).map(|(_, value)| value).sum()
}

impl IntakeCounters {
    /// Every Request the fast path decided on.
    pub fn total(&self) -> u64 {
        self.fields().iter().map(|(_, value)| value).sum()
    }

    /// Requests that went on to the stack and the socket.
    pub fn passed(&self) -> u64 {
        sum_prefixed(&self.fields(), "pass_")
    }
}

impl QuorumPruneCounters {
    /// Every PrepareOK the fast path decided on.
    pub fn total(&self) -> u64 {
        self.fields().iter().map(|(_, value)| value).sum()
    }

    /// PrepareOKs that went on to user space.
    pub fn passed(&self) -> u64 {
        sum_prefixed(&self.fields(), "pass_")
    }

    /// PrepareOKs dropped in the kernel.
    pub fn dropped(&self) -> u64 {
        sum_prefixed(&self.fields(), "drop_")
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
        self.named().iter().map(|(_, value)| value).sum()
    }

    /// What was counted after `earlier` was taken (counters only grow; a
    /// wrap of a u64 counter is not a concern).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut delta = self.clone();
        for (slot, then) in delta.messages.iter_mut().zip(&earlier.messages) {
            *slot = slot.wrapping_sub(*then);
        }
        for (index, _) in NAMED {
            if let (Some(slot), Some(then)) = (delta.counter_mut(index), earlier.counter(index)) {
                *slot = slot.wrapping_sub(then);
            }
        }
        delta.unassigned = self.unassigned.wrapping_sub(earlier.unassigned);
        delta
    }

    /// Adds `value` to the counter of slot `index`: a message type (its
    /// number is its slot), a named counter, or `unassigned`.
    fn add(&mut self, index: u32, value: u64) {
        let slot = match self.counter_mut(index) {
            Some(slot) => slot,
            None => match u8::try_from(index).ok().and_then(MsgType::from_u8) {
                Some(msg_type) => self.messages_mut(msg_type),
                None => &mut self.unassigned,
            },
        };
        *slot += value;
    }

    /// Every counter with its name, in slot order: message types by wire
    /// name, then the counters of `enum electrode_counter` by the names
    /// users see (a group's carry its prefix, e.g. `quorum_prune.`), then
    /// `unassigned`. Names are the field paths of this struct, so text,
    /// JSON and metrics output agree.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let messages = MsgType::ALL.iter().map(|msg_type| (msg_type.name(), self.messages(*msg_type)));
        let counters = NAMED.iter().map(|(index, name)| (*name, self.counter(*index).unwrap_or(0)));
        messages.chain(counters).chain([("unassigned", self.unassigned)]).collect()
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
        counters.add(0, 6);
        counters.add(CNT_MAX, 1);
        assert_eq!(counters.unassigned, 7, "slot 0 and slots past the counters are unused");
        assert_eq!(CNT_FIRST as usize, MSG_TYPE_COUNT + 1, "counters follow the message types");
        assert_eq!(CNT_MAX, CNT_FIRST + NAMED.len() as u32, "one slot per counter, no gaps");
    }

    #[test]
    fn each_slot_feeds_the_field_its_name_says() {
        let mut counters = Counters::default();
        counters.add(CNT_CLASSIFY_FOREIGN, 1);
        counters.add(CNT_CLASSIFY_UNKNOWN_TYPE, 2);
        counters.add(CNT_REPLY_TX, 3);
        counters.add(CNT_REPLY_PASS_OP_LIMIT, 4);
        counters.add(CNT_TC_MAC_LEARNED, 5);
        counters.add(CNT_QP_DROP_FOREIGN_SOURCE, 6);
        counters.add(CNT_INTAKE_PASS_ASLEEP, 7);
        assert_eq!((counters.foreign, counters.unknown_type), (1, 2));
        assert_eq!((counters.fast_reply_tx, counters.pass_op_limit), (3, 4));
        assert_eq!(counters.tc_mac_learned, 5);
        assert_eq!(counters.quorum_prune.drop_foreign_source, 6);
        assert_eq!(counters.intake.pass_asleep, 7);
        for (index, name) in NAMED {
            let mut counters = Counters::default();
            counters.add(index, 1);
            let named = counters.named();
            assert_eq!(named.iter().find(|(_, value)| *value == 1), Some(&(name, 1)), "slot {index}");
        }
    }

    /// Counters with 1, 2, 3... in the slots `slots`, in order.
    fn numbered(slots: std::ops::RangeInclusive<u32>) -> Counters {
        let mut counters = Counters::default();
        for (value, index) in slots.enumerate() {
            counters.add(index, value as u64 + 1);
        }
        counters
    }

    #[test]
    fn quorum_prune_verdicts_sum_by_name() {
        let counters = numbered(CNT_QP_PASS_QUORUM..=CNT_QP_PASS_GAP);
        let qp = &counters.quorum_prune;
        assert_eq!((qp.pass_quorum, qp.pass_after_quorum), (1, 2));
        assert_eq!((qp.drop_below_quorum, qp.drop_redundant), (3, 4));
        assert_eq!((qp.pass_window, qp.pass_view), (5, 6));
        assert_eq!((qp.pass_disarmed, qp.pass_not_member), (7, 8));
        assert_eq!((qp.drop_foreign_source, qp.pass_gap), (9, 10));
        assert_eq!((qp.passed(), qp.dropped()), (1 + 2 + 5 + 6 + 7 + 8 + 10, 3 + 4 + 9));
        assert_eq!(qp.total(), 55);
        assert_eq!(counters.unassigned, 0);
        let later =
            Counters { quorum_prune: QuorumPruneCounters { pass_view: 9, ..qp.clone() }, ..counters.clone() };
        assert_eq!(
            later.since(&counters).quorum_prune,
            QuorumPruneCounters { pass_view: 3, ..Default::default() }
        );
    }

    #[test]
    fn intake_verdicts_sum_by_name() {
        let counters = numbered(CNT_INTAKE_RING..=CNT_INTAKE_PASS_ASLEEP);
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
        // Every field that a slot feeds is listed (all nonzero, unassigned by slot 0).
        assert!(named.iter().all(|(_, value)| *value > 0), "{named:?}");
    }

    #[test]
    fn add_per_cpu_sums_cpus_and_refuses_short_values() {
        let mut counters = Counters::default();
        let per_cpu = vec![3u64.to_ne_bytes().to_vec(), 4u64.to_ne_bytes().to_vec()];
        counters.add_per_cpu(CNT_CLASSIFY_FOREIGN, &per_cpu).expect("8-byte values");
        assert_eq!(counters.foreign, 7);
        assert!(counters.add_per_cpu(CNT_CLASSIFY_FOREIGN, &[vec![1, 2, 3]]).is_err());
    }

    #[test]
    fn since_is_the_difference_field_by_field() {
        let mut earlier = Counters::default();
        earlier.add(CNT_CLASSIFY_FOREIGN, 2);
        earlier.add(CNT_TC_COPIES, 4);
        earlier.add(u32::from(MsgType::Prepare as u8), 5);
        let mut later = earlier.clone();
        later.add(CNT_CLASSIFY_FOREIGN, 1);
        later.add(CNT_INTAKE_RING, 6);
        later.add(0, 2);
        later.add(u32::from(MsgType::Prepare as u8), 3);
        let mut expected = Counters { foreign: 1, unassigned: 2, ..Counters::default() };
        expected.intake.ring = 6;
        *expected.messages_mut(MsgType::Prepare) = 3;
        assert_eq!(later.since(&earlier), expected);
    }
}
