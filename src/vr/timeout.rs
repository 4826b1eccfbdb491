//! A timer counted in ticks (TigerBeetle's `Timeout`). The core has no
//! clock: each timer counts the ticks it saw since it (re)started and fires
//! once `after` of them passed. A stopped timer counts nothing and never
//! fires, so a handler runs only while its timer runs.
//!
//! The replica's timers run in the status they belong to (see
//! `Replica::set_status`); `Replica::tick` ticks them all and then calls the
//! handler (`on_<name>_timeout`) of each one that fired.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Timeout {
    /// Ticks after which it fires (some timers set it anew: randomized,
    /// backed off, or following a smoothed round trip).
    pub(super) after: u64,
    ticks: u64,
    ticking: bool,
}

impl Timeout {
    /// A stopped timer that fires `after` ticks once started.
    pub(super) fn new(after: u64) -> Timeout {
        Timeout { after, ticks: 0, ticking: false }
    }

    /// A timer running from now.
    pub(super) fn started(after: u64) -> Timeout {
        Timeout { after, ticks: 0, ticking: true }
    }

    /// Runs from zero (whether it ran or not).
    pub(super) fn start(&mut self) {
        self.ticks = 0;
        self.ticking = true;
    }

    /// Stops and forgets its ticks.
    pub(super) fn stop(&mut self) {
        self.ticks = 0;
        self.ticking = false;
    }

    /// Counts from zero again; only a running timer is reset.
    pub(super) fn reset(&mut self) {
        assert!(self.ticking, "reset of a stopped timeout");
        self.ticks = 0;
    }

    /// One tick passed (nothing while stopped).
    pub(super) fn tick(&mut self) {
        if self.ticking {
            self.ticks += 1;
        }
    }

    /// Running and `after` ticks passed. It stays fired until reset,
    /// started again or stopped.
    pub(super) fn fired(&self) -> bool {
        self.ticking && self.ticks >= self.after
    }

    /// Whether the next tick fires it.
    pub(super) fn fires_on_next_tick(&self) -> bool {
        self.ticking && self.ticks + 1 >= self.after
    }

    pub(super) fn ticking(&self) -> bool {
        self.ticking
    }

    /// Ticks since it (re)started; 0 while stopped.
    pub(super) fn ticks(&self) -> u64 {
        self.ticks
    }
}

#[cfg(test)]
mod tests {
    use super::Timeout;

    #[test]
    fn fires_after_its_ticks_while_running() {
        let mut timeout = Timeout::new(2);
        timeout.tick();
        timeout.tick();
        assert!(!timeout.fired(), "a stopped timeout never fires");
        timeout.start();
        timeout.tick();
        assert!(!timeout.fired() && timeout.fires_on_next_tick());
        timeout.tick();
        assert!(timeout.fired());
        timeout.tick();
        assert!(timeout.fired(), "fired until reset");
        timeout.reset();
        assert_eq!(timeout.ticks(), 0);
        assert!(!timeout.fired());
        timeout.stop();
        assert!(!timeout.ticking() && timeout.ticks() == 0);
    }

    #[test]
    fn after_zero_fires_at_once() {
        assert!(Timeout::started(0).fired());
        assert!(!Timeout::new(0).fired());
    }
}
