//! fast_intake's adapter (leader): armed while this replica leads a view
//! in normal status; the requests the kernel takes off the wire are handed
//! to the runtime before every other input (the core never sees a view
//! change before a request that arrived in the old view); disarmed, and
//! drained completely, after any input that changed the view or status.
//! The kernel never wakes the runtime for a request: it takes requests
//! only while the runtime is awake (bpf/electrode.h, fast_intake
//! "Wake-ups"), and the runtime sleeps only once the ring is empty.

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use anyhow::{Context, Result};

use super::{Actions, Inputs, KernelInput, KernelPath, KernelPathCounts};
use crate::config::Config;
use crate::fastpath::{IntakePath, IntakeRecord, Loaded};
use crate::vr::{Replica, Status};

pub struct Intake<'a> {
    intake: IntakePath<'a>,
    address: Ipv4Addr,
    /// View the intake is armed for.
    armed: Option<u64>,
    /// Requests drained by a disarm, not handed over yet.
    backlog: Vec<IntakeRecord>,
    arms: u64,
    disarms: u64,
    requests_from_intake: u64,
    intake_other_view: u64,
}

impl<'a> Intake<'a> {
    pub fn new(loaded: &'a Loaded, config: &Config, index: u8) -> Result<Intake<'a>> {
        Ok(Intake {
            intake: loaded.intake_path()?,
            address: *config.replicas[index as usize].ip(),
            armed: None,
            backlog: Vec::new(),
            arms: 0,
            disarms: 0,
            requests_from_intake: 0,
            intake_other_view: 0,
        })
    }
}

impl KernelPath for Intake<'_> {
    /// The requests the kernel took since the last call, in the order it
    /// took them (those a disarm drained first); the runtime feeds each to
    /// the same code as a socket datagram from `record.from`.
    fn before_input(&mut self, _core: &mut Replica, _out: &mut Actions, input: &mut Inputs) -> Result<()> {
        let mut records = std::mem::take(&mut self.backlog);
        if let Some(view) = self.armed {
            let drained = self.intake.drain().context("draining the request intake")?;
            self.intake_other_view += drained.iter().filter(|r| r.view != view).count() as u64;
            records.extend(drained);
        }
        self.requests_from_intake += records.len() as u64;
        input.extend(
            records.into_iter().map(|r| KernelInput::Datagram { datagram: r.datagram, from: r.from }),
        );
        Ok(())
    }

    fn after_input(&mut self, core: &Replica) -> Result<()> {
        let leading = core.is_leader() && core.status() == Status::Normal;
        let wanted = leading.then(|| core.view());
        if wanted == self.armed {
            return Ok(());
        }
        if self.armed.is_some() {
            // Disarm, drain completely: nothing the kernel took stays
            // behind; it is handed over before the next input.
            let drained = self.intake.disarm().context("disarming the request intake")?;
            self.backlog.extend(drained);
            self.armed = None;
            self.disarms += 1;
        }
        if let Some(view) = wanted {
            self.intake.arm(view, self.address)?;
            self.armed = Some(view);
            self.arms += 1;
        }
        Ok(())
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.intake.ring_fd())
    }

    /// False when the intake holds a request (reserved or submitted) to
    /// drain first; the kernel passes requests to the socket while we
    /// sleep.
    fn may_sleep(&self) -> bool {
        self.intake.may_sleep()
    }

    fn has_input(&self) -> bool {
        self.intake.pending()
    }

    /// Awake again: the kernel puts requests in the ring from now on.
    fn on_wake(&self) {
        self.intake.wake();
    }

    fn add_counts(&self, counts: &mut KernelPathCounts) {
        counts.arms += self.arms;
        counts.disarms += self.disarms;
        counts.requests_from_intake += self.requests_from_intake;
        counts.intake_other_view += self.intake_other_view;
    }
}
