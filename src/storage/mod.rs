//! The storage layer (issue 22): what a replica keeps on disk. Library code
//! with its own tests; not wired into the replica yet (docs/DURABILITY.md
//! is the plan the wiring follows).
//!
//! - [`atomic`]: small records (identity, superblock, snapshot headers)
//!   replaced atomically: temp file, sync, rename, sync of the directory;
//! - [`datadir`]: a replica's data directory: the lock that keeps a second
//!   process out and the identity record checked at every start;
//! - [`disk`]: one append-only file behind the [`disk::Disk`] trait, with a
//!   real implementation ([`disk::FileDisk`]: `pwrite` + `fdatasync`) and a
//!   seeded fault model ([`disk::MemDisk`]: unsynced writes lost whole or torn
//!   at a crash, bit flips and misdirected reads) for tests and the simulator;
//! - [`journal`]: the durable log of VR entries over a `Disk`, every record
//!   checksummed and chained to its predecessor, appended with group commit;
//! - [`superblock`]: the replica's small durable state (view, last normal
//!   view, commit, the journal's acknowledged watermark, the snapshot's op),
//!   replaced atomically, with the rule a successor must follow;
//! - [`snapshot_file`]: the checkpoint on disk, written and read as a stream
//!   of chunks (it can be a GiB) with a checksummed trailer, installed
//!   atomically like the small files.
//!
//! Shared conventions of every file here: integers little-endian and
//! fixed-width; every record starts with a magic and a format version; every
//! length read from disk is checked against a bound before it is used (a
//! corrupt file never panics and never makes us allocate more than the bound);
//! errors are one line naming the file and the byte offset; the checksum of
//! anything on disk is [`checksum`].

pub mod atomic;
pub mod datadir;
pub mod disk;
pub mod journal;
pub mod snapshot_file;
pub mod superblock;
#[cfg(test)]
mod testing;

/// The checksum of every byte range on disk: xxh3-128, stored little-endian.
/// 128 bits so that an accidental match of a corrupt record is out of reach
/// (TigerBeetle's choice too), at memory speed.
pub fn checksum(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}
