//! The storage layer (issue 22): what a replica keeps on disk.
//!
//! - [`disk`]: one append-only file behind the [`disk::Disk`] trait, with a
//!   real implementation ([`disk::FileDisk`]: `pwrite` + `fdatasync`) and a
//!   seeded fault model ([`disk::MemDisk`]: unsynced writes lost whole or torn
//!   at a crash, bit flips and misdirected reads) for tests and the simulator;
//! - [`journal`]: the durable log of VR entries over a `Disk`, every record
//!   checksummed and chained to its predecessor, appended with group commit.
//!
//! Every byte on disk is covered by [`checksum`]; all integers are
//! little-endian and fixed-width.

pub mod disk;
pub mod journal;

/// The checksum of everything on disk: xxh3-128, stored little-endian.
pub fn checksum(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}
