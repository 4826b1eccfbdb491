//! tc_broadcast's adapter (leader): armed while this replica leads a view
//! in normal status; a message for all followers is sent once, marked, to
//! one follower whose MAC the kernel learned (the TC egress program copies
//! it to the others it knows), and unicast to the followers it has not
//! learned yet.

use std::net::SocketAddrV4;

use anyhow::Result;

use super::{BroadcastPlan, KernelPath, KernelPathCounts};
use crate::config::Config;
use crate::fastpath::Loaded;
use crate::vr::{Replica, Status};

/// Ticks between two re-reads of the MACs the kernel learned.
const COVERAGE_POLL_TICKS: u64 = 5;

/// Ticks between two looks at the neighbour table while a follower's MAC
/// is unknown (one netlink dump: cheap, but not every 5 ms).
const NEIGHBOUR_POLL_TICKS: u64 = 1000;

pub struct Broadcast<'a> {
    loaded: &'a Loaded,
    index: u8,
    replica_count: usize,
    /// The view it is armed for.
    view: Option<u64>,
    /// Followers whose MAC the kernel knows (they get the marked copy).
    coverage: Vec<bool>,
    broadcasts: u64,
    broadcast_unicasts: u64,
}

impl<'a> Broadcast<'a> {
    pub fn new(loaded: &'a Loaded, config: &Config, index: u8) -> Result<Broadcast<'a>> {
        let targets: Vec<(u8, SocketAddrV4)> = config
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index as usize)
            .map(|(i, a)| (i as u8, *a))
            .collect();
        loaded.set_broadcast_targets(index, config.replicas[index as usize].port(), &targets)?;
        learn_macs_from_neighbours(loaded, index);
        Ok(Broadcast {
            loaded,
            index,
            replica_count: config.replica_count(),
            view: None,
            coverage: vec![false; config.replica_count()],
            broadcasts: 0,
            broadcast_unicasts: 0,
        })
    }

    fn followers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.replica_count).filter(|i| *i != self.index as usize)
    }
}

/// Fills unknown follower MACs from the neighbour table; a failure is
/// printed, never fatal (datagrams still teach the kernel).
fn learn_macs_from_neighbours(loaded: &Loaded, index: u8) {
    match loaded.learn_broadcast_macs_from_neighbours() {
        Ok(filled) if filled.is_empty() => {}
        Ok(filled) => eprintln!(
            "electrode replica {index}: tc_broadcast: MACs of replicas {filled:?} from the neighbour table"
        ),
        Err(error) => {
            eprintln!("electrode replica {index}: tc_broadcast: neighbour table not read: {error:#}")
        }
    }
}

impl KernelPath for Broadcast<'_> {
    fn after_input(&mut self, core: &Replica) -> Result<()> {
        let leading = core.is_leader() && core.status() == Status::Normal;
        let wanted = leading.then(|| core.view());
        if wanted != self.view {
            self.loaded.arm_broadcast(wanted.is_some())?;
            self.view = wanted;
            if wanted.is_some() {
                self.coverage = self.loaded.broadcast_coverage()?;
            }
        }
        Ok(())
    }

    /// Every few ticks: the MACs the kernel learned on its own; now and
    /// then, while a follower is unknown, the neighbour table.
    fn on_tick(&mut self, tick: u64, _input: &mut Vec<super::KernelInput>) -> Result<()> {
        if tick % COVERAGE_POLL_TICKS != 0 {
            return Ok(());
        }
        if tick % NEIGHBOUR_POLL_TICKS == 0 && self.coverage.iter().filter(|c| !**c).count() > 1 {
            // A follower still unknown (the entry for self is always
            // false): its ARP entry may have appeared since.
            learn_macs_from_neighbours(self.loaded, self.index);
        }
        if self.view.is_some() {
            self.coverage = self.loaded.broadcast_coverage()?;
        }
        Ok(())
    }

    fn broadcast_plan(&mut self) -> Option<BroadcastPlan> {
        self.view?;
        let marked_to = self.followers().find(|i| self.coverage[*i])?;
        let unicast: Vec<usize> = self.followers().filter(|i| !self.coverage[*i]).collect();
        self.broadcasts += 1;
        self.broadcast_unicasts += unicast.len() as u64;
        Some(BroadcastPlan { marked_to, unicast })
    }

    fn add_counts(&self, counts: &mut KernelPathCounts) {
        counts.broadcasts += self.broadcasts;
        counts.broadcast_unicasts += self.broadcast_unicasts;
    }
}
