//! Test-only fault layer for outgoing datagrams (cargo feature
//! `test-faults`, used by the end-to-end tests; never in a release build).
//!
//! This kernel has no netem to delay or reorder packets, so the sender
//! misbehaves instead: with a seed from `ELECTRODE_TEST_FAULTS` it drops,
//! duplicates and delays datagrams, and receivers (and the XDP fast paths)
//! see loss, duplicates and reordering on real sockets.
//!
//! `ELECTRODE_TEST_FAULTS=seed=7,drop=2,dup=2,delay=5,delay_ms=3` (percent).

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::os::SplitMix;

/// Most datagrams held back for delay; beyond that they are sent at once.
const DELAYED_MAX: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultSpec {
    pub seed: u64,
    pub drop_percent: u64,
    pub duplicate_percent: u64,
    pub delay_percent: u64,
    pub delay_ms: u64,
}

impl FaultSpec {
    pub fn parse(text: &str) -> anyhow::Result<FaultSpec> {
        let mut spec = FaultSpec { delay_ms: 2, ..FaultSpec::default() };
        for item in text.split(',').filter(|s| !s.is_empty()) {
            let (key, value) =
                item.split_once('=').with_context(|| format!("fault item {item:?} is not key=value"))?;
            let value: u64 =
                value.parse().with_context(|| format!("fault value {value:?} is not a number"))?;
            match key {
                "seed" => spec.seed = value,
                "drop" => spec.drop_percent = value,
                "dup" => spec.duplicate_percent = value,
                "delay" => spec.delay_percent = value,
                "delay_ms" => spec.delay_ms = value,
                other => bail!("unknown fault {other:?} (seed, drop, dup, delay, delay_ms)"),
            }
        }
        Ok(spec)
    }
}

/// Counts of what the layer did.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultCounts {
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
}

pub struct Faults {
    spec: FaultSpec,
    rng: SplitMix,
    delayed: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
    pub counts: FaultCounts,
}

impl Faults {
    /// From the environment; None when the variable is unset.
    pub fn from_env() -> anyhow::Result<Option<Faults>> {
        match std::env::var("ELECTRODE_TEST_FAULTS") {
            Ok(text) => {
                let spec = FaultSpec::parse(&text).context("ELECTRODE_TEST_FAULTS")?;
                Ok(Some(Faults {
                    rng: SplitMix(spec.seed),
                    spec,
                    delayed: VecDeque::new(),
                    counts: FaultCounts::default(),
                }))
            }
            Err(_) => Ok(None),
        }
    }

    /// Sends `datagram` through the faults.
    pub fn send(&mut self, socket: &UdpSocket, to: SocketAddr, datagram: &[u8]) {
        if self.rng.below(100) < self.spec.drop_percent {
            self.counts.dropped += 1;
            return;
        }
        if self.rng.below(100) < self.spec.delay_percent && self.delayed.len() < DELAYED_MAX {
            self.counts.delayed += 1;
            let due = Instant::now() + Duration::from_millis(self.spec.delay_ms);
            self.delayed.push_back((due, to, datagram.to_vec()));
            return;
        }
        let _ = socket.send_to(datagram, to);
        if self.rng.below(100) < self.spec.duplicate_percent {
            self.counts.duplicated += 1;
            let _ = socket.send_to(datagram, to);
        }
    }

    /// Sends the delayed datagrams that are due.
    pub fn flush_due(&mut self, socket: &UdpSocket) {
        let now = Instant::now();
        while self.delayed.front().is_some_and(|(due, _, _)| *due <= now) {
            if let Some((_, to, datagram)) = self.delayed.pop_front() {
                let _ = socket.send_to(&datagram, to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_rejects_unknown_keys() {
        let spec = FaultSpec::parse("seed=7,drop=2,dup=3,delay=5,delay_ms=4").unwrap();
        assert_eq!(
            spec,
            FaultSpec { seed: 7, drop_percent: 2, duplicate_percent: 3, delay_percent: 5, delay_ms: 4 }
        );
        assert!(FaultSpec::parse("lose=1").is_err());
        assert!(FaultSpec::parse("drop").is_err());
    }
}
