//! Fuzzes the datagram decoder, the reassembler and the state-blob parser.
//! Run: `cargo +nightly fuzz run decode` from the repository root (needs
//! `cargo install cargo-fuzz` and a nightly toolchain).
#![no_main]

use electrode::wire::{decode, Decoded, Reassembler};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The header's cluster-id bytes pick the cluster so wrong-cluster paths are hit too.
    let cluster = data.get(8..12).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let mut reassembler = Reassembler::new(1 << 20);
    if let Ok((envelope, Decoded::Chunk(chunk))) = decode(data, cluster) {
        let _ = reassembler.push(&envelope, chunk);
    }
    let _ = electrode::wire::decode_state(data);
});
