//! The one seeded random number generator of the tests (the simulator's
//! fault schedules, the fuzzers' frames, the boot orders): splitmix64, the
//! runtime's own generator, so a seed replays everywhere.

use electrode::transport::os::SplitMix;

pub struct Rng(SplitMix);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// True with probability `ppm` / 1_000_000.
    pub fn ppm(&mut self, ppm: u64) -> bool {
        self.below(1_000_000) < ppm
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Seed, frame count and generator of a fuzz test: ELECTRODE_FUZZ_SEED and
/// ELECTRODE_FUZZ_FRAMES, else `default_seed` and 10^5.
pub fn fuzz_plan(default_seed: u64) -> (u64, u64, Rng) {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse().ok());
    let seed = env("ELECTRODE_FUZZ_SEED").unwrap_or(default_seed);
    let frames = env("ELECTRODE_FUZZ_FRAMES").unwrap_or(100_000);
    eprintln!("fuzz seed {seed} ({frames} frames); replay with ELECTRODE_FUZZ_SEED={seed}");
    (seed, frames, Rng::new(seed))
}
