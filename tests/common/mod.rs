//! The one harness of the integration tests (`mod common;` in each test
//! file): the root policy, frames and the Internet checksum, one sample
//! message per type and one-message datagrams, the BPF_PROG_TEST_RUN
//! fixture, throwaway network namespaces, a kill -9'd child process, a
//! booted VR core and the seeded random number generator. The namespace
//! cluster of `electrode replica` processes is `tests/cluster`.
#![allow(dead_code)] // each test binary uses a different subset
#![allow(unused_imports)] // and so of the re-exports below

mod booted;
mod child;
mod fixture;
mod frames;
mod messages;
mod netns;
mod rng;

pub use booted::booted_core;
pub use child::{announce_and_wait, child_spec, read_in_background, run_child_and_kill_9};
pub use fixture::{expect_unchanged, load, load_with_members, xdp_run, CLUSTER_ID, PORT};
pub use frames::*;
pub use messages::{classify, datagram, datagram_from, sample_messages};
pub use netns::{enter_netns, in_namespace, run, veth_pair, Netns};
pub use rng::{fuzz_plan, Rng};

use std::io::Write as _;

/// `require_root!();` first in a root-only test: returns from it unless
/// [`root_allowed`] (with the test's own name) lets it run.
#[allow(unused_macros)] // the simulator includes common too
macro_rules! require_root {
    () => {
        if !$crate::common::root_allowed({
            fn here() {}
            let path = std::any::type_name_of_val(&here);
            let test = path.strip_suffix("::here").unwrap_or(path);
            test.rsplit("::").next().unwrap_or(test)
        }) {
            return;
        }
    };
}
pub(crate) use require_root;

/// Whether a root-only test may run. Not root: prints a loud skip and
/// returns false, except under `CI=true`, where skipping would hide a broken
/// runner, so the test fails instead.
pub fn root_allowed(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root (BPF_PROG_TEST_RUN, XDP, netns) and CI=true forbids skipping");
    }
    // Straight to the stderr handle: libtest captures eprintln! of passing
    // tests, which would make the skip silent.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test} needs root (BPF_PROG_TEST_RUN, XDP, netns); run as root to test it"
    );
    false
}
