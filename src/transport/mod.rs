//! The runtime around the pure core: sockets, threads, clocks.

pub mod client_addresses;
pub mod counts;
#[cfg(feature = "test-faults")]
pub mod faults;
pub mod kernel;
pub mod metrics;
pub mod os;
pub mod replica;
pub mod transitions;
