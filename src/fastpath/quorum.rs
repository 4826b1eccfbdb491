//! fast_quorum_prune from user space: the leader arms the XDP program with
//! its view, window and quorum size, moves the window as ops commit,
//! disarms on a view change, and reads back which followers the kernel saw
//! ack an op (the acks it dropped), so the core counts the quorum itself.
//!
//! The maps and the rules are described in the "fast_quorum_prune" section
//! of `bpf/electrode.h`. In short: `qp_config` is written only here,
//! `qp_state` only by the kernel, both read and written under their
//! bpf_spin_lock (`MapFlags::LOCK`), so neither side overwrites the other.
//! This module assumes one writer of `qp_config` (the replica's runtime
//! thread): its read-modify-write of the config is not atomic against a
//! second user-space writer.
//!
//! What the runtime has to do with it (not done here):
//! - after a view change makes this replica leader (normal status reached):
//!   `arm_leader(view, commit + 1, f, replica_count, self_index)`, with
//!   `Config::pipeline_max <= WINDOW_OPS`;
//! - after each commit: `advance_window(commit + 1)`;
//! - when it starts a view change or learns of a higher view: `disarm_leader`;
//! - on every PrepareOK that reaches its socket while armed: give the core
//!   that PrepareOK and one per replica in `quorum_acks(op)` (the acks the
//!   kernel dropped); the core counts them against its own quorum rule;
//! - on a prepare timeout while armed: the same `quorum_acks` read before it
//!   retransmits, so a lost quorum-completing ack never stalls a commit.

use std::mem::{offset_of, size_of};

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::load::Loaded;
use super::types::{electrode_qp_config, electrode_qp_state};
use crate::wire::consts::{PIPELINE_MAX, QP_WINDOW};
use crate::wire::MAX_REPLICA_COUNT;

/// Ops the window covers: `[window_base_op, window_base_op + WINDOW_OPS)`.
pub const WINDOW_OPS: u64 = QP_WINDOW as u64;

// The kernel window must hold every op the core may have in flight; the
// header asserts the same on the C side.
const _: () = assert!(QP_WINDOW == PIPELINE_MAX, "quorum prune window is the pipeline bound");

/// Window bases stay below this (QP_OP_LIMIT in `bpf/quorum_prune.h`): the
/// kernel compares ops by the sign of their difference, without branches.
const OP_LIMIT: u64 = 1 << 62;

/// Bitmap of replica indices: bit `r` set means replica `r` vouched for
/// the op (its PrepareOK for this op or a later one reached the kernel).
pub type AckBitmap = u32;

const _: () = assert!(MAX_REPLICA_COUNT <= AckBitmap::BITS as usize, "one bit per replica");

/// What the leader armed, and what the kernel has counted under that arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderState {
    /// The kernel prunes PrepareOKs (otherwise it passes them all).
    pub armed: bool,
    /// Bumped by every [`Loaded::arm_leader`]; the kernel state follows it.
    pub generation: u64,
    /// The view this replica leads.
    pub view: u64,
    /// Lowest uncommitted op; the window is `[base, base + WINDOW_OPS)`.
    pub window_base_op: u64,
    /// f: follower acks that make a quorum.
    pub quorum_followers: u32,
    /// Replicas in the cluster.
    pub replica_count: u32,
    /// This leader's replica index.
    pub self_index: u32,
    /// Highest op acked by at least f followers under this arm (0: none).
    pub quorum_op: u64,
    /// Highest op each replica vouched for under this arm (0: none).
    pub acked_op: [u64; MAX_REPLICA_COUNT],
}

impl LeaderState {
    /// Followers that vouched for `op` under this arm, or `None` when the
    /// path is disarmed or `op` lies outside the window (the kernel passed
    /// those acks, or counted them under an older base: it cannot tell).
    pub fn acks(&self, op: u64) -> Option<AckBitmap> {
        if !self.armed || op < self.window_base_op || op - self.window_base_op >= WINDOW_OPS {
            return None;
        }
        let mut bitmap = 0;
        for (replica, acked) in self.acked_op.iter().enumerate() {
            let follower = replica < self.replica_count as usize && replica != self.self_index as usize;
            if follower && *acked >= op {
                bitmap |= 1 << replica;
            }
        }
        Some(bitmap)
    }
}

const KEY: [u8; 4] = 0u32.to_ne_bytes();

impl Loaded {
    /// Starts pruning as leader of `view`: PrepareOKs of that view for ops in
    /// `[window_base_op, window_base_op + WINDOW_OPS)` are counted, and only
    /// the one completing a quorum of `quorum_followers` (f) follower acks is
    /// passed. Forgets every ack counted under a previous arm.
    pub fn arm_leader(
        &self,
        view: u64,
        window_base_op: u64,
        quorum_followers: u32,
        replica_count: u32,
        self_index: u32,
    ) -> Result<()> {
        let what = format!(
            "arm quorum prune (view {view}, window base {window_base_op}, f {quorum_followers}, \
             {replica_count} replicas, self {self_index})"
        );
        self.ensure_members(&what)?;
        ensure!(window_base_op >= 1, "{what}: ops start at 1");
        ensure!(window_base_op < OP_LIMIT, "{what}: window base at or above 2^62");
        ensure!(
            (1..=MAX_REPLICA_COUNT as u32).contains(&replica_count),
            "{what}: replica count outside 1..={MAX_REPLICA_COUNT}"
        );
        ensure!(self_index < replica_count, "{what}: self index is not a replica");
        ensure!(
            view % u64::from(replica_count) == u64::from(self_index),
            "{what}: replica {self_index} does not lead view {view}"
        );
        ensure!(
            quorum_followers >= 1 && quorum_followers < replica_count,
            "{what}: f must be 1..={} followers",
            replica_count.saturating_sub(1)
        );
        let mut config = self.read_qp_config().with_context(|| what.clone())?;
        config.armed = 1;
        config.generation += 1;
        config.view = view;
        config.window_base_op = window_base_op;
        config.quorum_followers = quorum_followers;
        config.replica_count = replica_count;
        config.self_index = self_index;
        self.write_qp_config(&config).with_context(|| what)
    }

    /// Moves the window up to `new_base_op` (the lowest op not yet
    /// committed). Acks for ops below it are dropped from then on; the
    /// window never moves down.
    pub fn advance_window(&self, new_base_op: u64) -> Result<()> {
        let what = format!("advance quorum prune window to op {new_base_op}");
        let mut config = self.read_qp_config().with_context(|| what.clone())?;
        ensure!(config.armed == 1, "{what}: not armed");
        ensure!(
            new_base_op >= config.window_base_op,
            "{what}: below the current base {}",
            config.window_base_op
        );
        ensure!(new_base_op < OP_LIMIT, "{what}: at or above 2^62");
        config.window_base_op = new_base_op;
        self.write_qp_config(&config).with_context(|| what)
    }

    /// Stops pruning: every PrepareOK passes to user space. Called when this
    /// replica stops leading (view change starts); the counted acks stay
    /// readable until the next arm.
    pub fn disarm_leader(&self) -> Result<()> {
        let mut config = self.read_qp_config().context("disarm quorum prune")?;
        config.armed = 0;
        self.write_qp_config(&config).context("disarm quorum prune")
    }

    /// The armed config and the kernel's counts under it.
    pub fn leader_state(&self) -> Result<LeaderState> {
        let config = self.read_qp_config()?;
        let state = self.read_qp_state()?;
        // The kernel resets its state on the first ack after an arm: until
        // then, what it holds belongs to an older arm and counts nothing.
        let current = state.generation == config.generation;
        let mut acked_op = [0; MAX_REPLICA_COUNT];
        if current {
            acked_op.copy_from_slice(&state.acked_op[..MAX_REPLICA_COUNT]);
        }
        Ok(LeaderState {
            armed: config.armed != 0,
            generation: config.generation,
            view: config.view,
            window_base_op: config.window_base_op,
            quorum_followers: config.quorum_followers,
            replica_count: config.replica_count,
            self_index: config.self_index,
            quorum_op: if current { state.quorum_op } else { 0 },
            acked_op,
        })
    }

    /// Followers the kernel saw vouch for `op` (see [`LeaderState::acks`]).
    pub fn quorum_acks(&self, op: u64) -> Result<Option<AckBitmap>> {
        Ok(self.leader_state()?.acks(op))
    }

    fn read_qp_config(&self) -> Result<electrode_qp_config> {
        let bytes = lookup_locked(&self.skel().maps.qp_config, "qp_config")?;
        let field = Fields { bytes: &bytes };
        Ok(electrode_qp_config {
            armed: field.u32(offset_of!(electrode_qp_config, armed)),
            generation: field.u64(offset_of!(electrode_qp_config, generation)),
            view: field.u64(offset_of!(electrode_qp_config, view)),
            window_base_op: field.u64(offset_of!(electrode_qp_config, window_base_op)),
            quorum_followers: field.u32(offset_of!(electrode_qp_config, quorum_followers)),
            replica_count: field.u32(offset_of!(electrode_qp_config, replica_count)),
            self_index: field.u32(offset_of!(electrode_qp_config, self_index)),
            ..electrode_qp_config::default()
        })
    }

    fn write_qp_config(&self, config: &electrode_qp_config) -> Result<()> {
        let mut bytes = vec![0u8; size_of::<electrode_qp_config>()];
        let mut put =
            |offset: usize, value: &[u8]| bytes[offset..offset + value.len()].copy_from_slice(value);
        // The lock word is skipped by a BPF_F_LOCK update; pad stays zero.
        put(offset_of!(electrode_qp_config, armed), &config.armed.to_ne_bytes());
        put(offset_of!(electrode_qp_config, generation), &config.generation.to_ne_bytes());
        put(offset_of!(electrode_qp_config, view), &config.view.to_ne_bytes());
        put(offset_of!(electrode_qp_config, window_base_op), &config.window_base_op.to_ne_bytes());
        put(offset_of!(electrode_qp_config, quorum_followers), &config.quorum_followers.to_ne_bytes());
        put(offset_of!(electrode_qp_config, replica_count), &config.replica_count.to_ne_bytes());
        put(offset_of!(electrode_qp_config, self_index), &config.self_index.to_ne_bytes());
        self.skel()
            .maps
            .qp_config
            .update(&KEY, &bytes, MapFlags::LOCK)
            .context("write map qp_config[0] (BPF_F_LOCK)")
    }

    fn read_qp_state(&self) -> Result<electrode_qp_state> {
        let bytes = lookup_locked(&self.skel().maps.qp_state, "qp_state")?;
        let field = Fields { bytes: &bytes };
        let mut state = electrode_qp_state {
            generation: field.u64(offset_of!(electrode_qp_state, generation)),
            quorum_op: field.u64(offset_of!(electrode_qp_state, quorum_op)),
            ..electrode_qp_state::default()
        };
        for (index, acked) in state.acked_op.iter_mut().enumerate() {
            *acked = field.u64(offset_of!(electrode_qp_state, acked_op) + index * size_of::<u64>());
        }
        Ok(state)
    }
}

/// Entry 0 of a spin-locked ARRAY map, copied under its lock, checked to
/// have the size of `T`.
fn lookup_locked<T>(map: &T, name: &str) -> Result<Vec<u8>>
where
    T: MapCore,
{
    let bytes = map
        .lookup(&KEY, MapFlags::LOCK)
        .with_context(|| format!("read map {name}[0] (BPF_F_LOCK)"))?
        .with_context(|| format!("read map {name}[0]: no such entry"))?;
    let want = map.value_size() as usize;
    if bytes.len() != want {
        bail!("read map {name}[0]: value of {} bytes, want {want}", bytes.len());
    }
    Ok(bytes)
}

/// Host-order fields of a map value whose size was checked against the
/// skeleton type, so every in-struct offset is in bounds.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl Fields<'_> {
    fn u32(&self, offset: usize) -> u32 {
        let mut word = [0; 4];
        word.copy_from_slice(&self.bytes[offset..offset + 4]);
        u32::from_ne_bytes(word)
    }

    fn u64(&self, offset: usize) -> u64 {
        let mut word = [0; 8];
        word.copy_from_slice(&self.bytes[offset..offset + 8]);
        u64::from_ne_bytes(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_values_match_the_header_sizes() {
        assert_eq!(size_of::<electrode_qp_config>(), 48);
        assert_eq!(size_of::<electrode_qp_state>(), 24 + 8 * MAX_REPLICA_COUNT);
        assert_eq!(std::mem::size_of_val(&electrode_qp_state::default().acked_op), 8 * MAX_REPLICA_COUNT);
    }

    fn state(acked_op: [u64; MAX_REPLICA_COUNT]) -> LeaderState {
        LeaderState {
            armed: true,
            generation: 1,
            view: 5,
            window_base_op: 10,
            quorum_followers: 2,
            replica_count: 5,
            self_index: 0,
            quorum_op: 0,
            acked_op,
        }
    }

    #[test]
    fn acks_are_the_followers_that_vouched_for_the_op_inside_the_window() {
        // Self (0) and non-members (5..) never count, whatever they hold.
        let leader = state([99, 12, 10, 0, 13, 99, 99, 99, 99]);
        assert_eq!(leader.acks(10), Some(0b1_0110));
        assert_eq!(leader.acks(12), Some(0b1_0010));
        assert_eq!(leader.acks(13), Some(0b1_0000));
        assert_eq!(leader.acks(14), Some(0));
        assert_eq!(leader.acks(9), None, "below the window");
        assert_eq!(leader.acks(10 + WINDOW_OPS - 1), Some(0));
        assert_eq!(leader.acks(10 + WINDOW_OPS), None, "above the window");
        assert_eq!(LeaderState { armed: false, ..leader }.acks(10), None);
    }
}
