//! Durable storage (issue 22): small records replaced atomically, the replica's
//! data directory, and (other modules) the log and its disk access.
//!
//! Shared conventions of every file here: integers little-endian and
//! fixed-width; every record starts with a magic and a format version; every
//! length read from disk is checked against a bound before it is used (a
//! corrupt file never panics and never makes us allocate more than the bound);
//! errors are one line naming the file and the byte offset; the checksum of
//! anything on disk is [`checksum`].

pub mod atomic;
pub mod datadir;

/// The checksum of every byte range on disk: xxh3-128, stored little-endian.
/// 128 bits so that an accidental match of a corrupt record is out of reach
/// (TigerBeetle's choice too), at memory speed.
pub fn checksum(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}
