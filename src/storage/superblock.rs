//! The replica's small durable state, `DIR/superblock`: the view it may never
//! go back from, the journal's acknowledged watermark, and where the snapshot
//! stands. Replaced whole and atomically on every change.
//!
//! Design decisions (read before wiring this in):
//! - **One file replaced by rename** ([`super::atomic`]'s framed record and
//!   `write_atomically`), not TigerBeetle's copies written in place. Over a
//!   file system, rename gives old-or-new after any crash, so a superblock
//!   that fails its checksum is never a torn write: it is real corruption
//!   (a flipped bit, a misdirected write), and [`Superblock::load`] refuses
//!   it with one line naming the file and offset. With two alternating
//!   copies a checksum failure of the newer copy looks exactly like a write
//!   torn by a crash, and the reader falls back to the older copy: after rot
//!   of a completed write, that silently takes the replica back to an older
//!   view, which VR forbids (it could deny a DoViewChange it sent).
//!   TigerBeetle needs copies because it writes a raw block device with no
//!   rename, and it writes several copies of each sequence to tell the two
//!   cases apart; that is more machinery than one rename. The price is the
//!   cost of a store: temp file write + `sync_all` + rename + directory
//!   `sync_all` (two syncs and a metadata update, where copies in place need
//!   one fdatasync), paid once per group commit if `durable_op` is stored
//!   before each batch of acks. Measured here (ext4 on virtio, 2 shared
//!   CPUs): 560-590 µs per store, against ~185 µs for the journal's
//!   fdatasync (`cargo run --release --example storage_bench`). So storing it per batch triples the latency of
//!   a group commit; if the wiring's measurements say that matters, switch
//!   to copies written in place with one fdatasync (new magic/version), with
//!   TigerBeetle's rule that a copy is trusted only if enough copies of its
//!   sequence agree.
//! - **Payload** (72 bytes, little-endian), in the record `ELTRD-SB` version 1:
//!   `sequence u64 | view u64 | last_normal_view u64 | commit u64 |
//!   durable_op u64 | journal_head_checksum u128 | snapshot_op u64 |
//!   snapshot_digest u64`.
//! - **Meaning of each field** (the wiring must keep to it):
//!   - `sequence`: +1 on every store ([`Superblock::successor`]); only to
//!     check and to read in a debugger.
//!   - `view`: stored *before* the replica sends StartViewChange,
//!     DoViewChange or PrepareOK in it.
//!   - `last_normal_view`: the view whose log the journal holds (the VR
//!     core's `last_normal_view`), stored with the log it vouches for.
//!   - `durable_op`: the "acknowledged up to" watermark of `journal.rs`: ops
//!     <= it are on this disk (journal or snapshot). Stored *after* the
//!     journal's `flush_and_sync` returned it and *before* any ack naming an
//!     op up to it is sent. After `Journal::open`, a journal ending below
//!     it lost acknowledged entries: repair from peers or refuse to start.
//!   - `journal_head_checksum`: the `checksum` of the journal record at
//!     `durable_op` (0 if that op is not in the journal, e.g. an empty
//!     journal right after a snapshot): after `Journal::open`, a record at
//!     `durable_op` with another checksum is a stale or foreign journal.
//!     (`Journal` does not yet expose a record's checksum: the wiring adds
//!     that accessor.)
//!   - `commit`: the highest op known committed **and** durable here: the
//!     wiring stores `min(core commit, durable_op)`, so `commit <=
//!     durable_op` always holds (a follower may learn a commit beyond its
//!     log; that number is re-learned from peers after a restart anyway).
//!   - `snapshot_op`, `snapshot_digest`: the op and state digest of the
//!     `snapshot` file ([`super::snapshot_file`]), which must match them;
//!     0 and 0 when there is none. The snapshot is installed (renamed) first,
//!     then the superblock names it: a crash between the two leaves a
//!     snapshot newer than the superblock says, harmless since the journal
//!     still holds those ops until the superblock names the snapshot and the
//!     journal is trimmed after it.
//! - **Invariants of one superblock** ([`Superblock::check`], on load and
//!   asserted on store): `last_normal_view <= view`, `snapshot_op <= commit
//!   <= durable_op`.
//! - **Rule between two stores** ([`Superblock::check_successor`]):
//!   `sequence` is old + 1; `view`, `last_normal_view`, `commit`,
//!   `snapshot_op` never go back; `durable_op` may go back only when
//!   `last_normal_view` increases (and, by the invariants, never below the
//!   old commit). Why `last_normal_view` and not `view`: in VR a suffix
//!   above commit may be replaced only when the replica adopts the log of a
//!   newer view, which is exactly when it becomes normal in that view
//!   (StartView, a new leader taking the best DoViewChange log, or
//!   NewState catching up in `transfer.rs`), i.e. when `last_normal_view`
//!   rises. `view` is the wrong trigger: the superblock already holds view
//!   v (stored before DoViewChange in v) when StartView(v) truncates the
//!   log, so `view` does not change at the truncation; and a view that
//!   rises while the replica is not normal (StartViewChange) must not let
//!   it drop entries it acknowledged under its old `last_normal_view`, which
//!   a later view change may still choose. A state transfer that rewrites
//!   entries in place while keeping its old `last_normal_view`
//!   (`install_page`) must store the superblock only once the journal is
//!   back at or above the old `durable_op`.
//! - **A fresh directory** has no `superblock`: `load` returns None. The
//!   wiring stores the first superblock (all zeros but `sequence` 1) at the
//!   first start, before the journal holds anything, so "no superblock but
//!   a journal" never happens legitimately and should be refused.

use super::atomic::{self, read_checked, write_record};
use anyhow::{anyhow, bail, Result};
use std::io;
use std::path::Path;

/// The file in the data directory.
pub const SUPERBLOCK_FILE: &str = "superblock";
const MAGIC: [u8; atomic::MAGIC_LEN] = *b"ELTRD-SB";
const VERSION: u32 = 1;
/// The payload: seven u64 and one u128.
pub const PAYLOAD_LEN: usize = 7 * 8 + 16;

/// The replica's small durable state (see the module comment for what each
/// field means and when it is stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    pub sequence: u64,
    pub view: u64,
    pub last_normal_view: u64,
    pub commit: u64,
    pub durable_op: u64,
    pub journal_head_checksum: u128,
    pub snapshot_op: u64,
    pub snapshot_digest: u64,
}

impl Superblock {
    /// The first superblock of a fresh directory: sequence 1, all else zero.
    pub fn initial() -> Superblock {
        Superblock { sequence: 1, ..Superblock::default() }
    }

    /// A copy with the sequence advanced, for the caller to change and store.
    pub fn successor(&self) -> Superblock {
        Superblock { sequence: self.sequence + 1, ..*self }
    }

    /// Reads `dir/superblock`: None if it does not exist (a fresh
    /// directory); an error naming the file and byte offset if it is
    /// corrupt or breaks an invariant. Never resets anything.
    pub fn load(dir: &Path) -> Result<Option<Superblock>> {
        let path = dir.join(SUPERBLOCK_FILE);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("{}: {e}", path.display()),
        }
        let payload = read_checked(&path, &MAGIC, VERSION, PAYLOAD_LEN)?;
        let superblock = Superblock::decode(&path, &payload)?;
        superblock.check().map_err(|e| {
            anyhow!("{}: byte {}: invalid superblock: {e}", path.display(), atomic::HEADER_LEN)
        })?;
        Ok(Some(superblock))
    }

    /// Replaces `dir/superblock` atomically; durable when it returns Ok. On
    /// an error the file is the old or the new one: the caller must not
    /// retry as if the old one stood, but stop (like a failed fsync).
    pub fn store(&self, dir: &Path) -> Result<()> {
        if let Err(e) = self.check() {
            panic!("storing an invalid superblock {self:?}: {e}");
        }
        write_record(dir, SUPERBLOCK_FILE, &MAGIC, VERSION, &self.encode())
    }

    /// Test-only [`Superblock::store`] that stops after `crash_at`, leaving
    /// the directory as a power cut there would ([`atomic::CrashAt`]).
    #[cfg(any(test, feature = "test-faults"))]
    pub fn store_crashing(&self, dir: &Path, crash_at: atomic::CrashAt) -> Result<()> {
        assert!(self.check().is_ok(), "storing an invalid superblock {self:?}");
        let bytes = atomic::encode_record(&MAGIC, VERSION, &self.encode());
        atomic::write_atomically_crashing(dir, SUPERBLOCK_FILE, &bytes, crash_at)
    }

    /// The invariants of one superblock (see the module comment).
    pub fn check(&self) -> Result<()> {
        if self.last_normal_view > self.view {
            bail!("last normal view {} above view {}", self.last_normal_view, self.view);
        }
        if self.snapshot_op > self.commit {
            bail!("snapshot op {} above commit {}", self.snapshot_op, self.commit);
        }
        if self.commit > self.durable_op {
            bail!("commit {} above durable op {}", self.commit, self.durable_op);
        }
        Ok(())
    }

    /// Whether `new` may replace `old` (see the module comment for the rule
    /// and why): an error saying which field went back.
    pub fn check_successor(old: &Superblock, new: &Superblock) -> Result<()> {
        new.check()?;
        if new.sequence != old.sequence.wrapping_add(1) {
            bail!("sequence {} does not follow {}", new.sequence, old.sequence);
        }
        let never_back = [
            ("view", old.view, new.view),
            ("last normal view", old.last_normal_view, new.last_normal_view),
            ("commit", old.commit, new.commit),
            ("snapshot op", old.snapshot_op, new.snapshot_op),
        ];
        for (name, old_value, new_value) in never_back {
            if new_value < old_value {
                bail!("{name} goes back from {old_value} to {new_value}");
            }
        }
        if new.durable_op < old.durable_op {
            if new.last_normal_view <= old.last_normal_view {
                bail!(
                    "durable op goes back from {} to {} without a newer normal view (last normal view {})",
                    old.durable_op,
                    new.durable_op,
                    new.last_normal_view
                );
            }
            // Implied by new.commit >= old.commit and new.check(); kept as
            // the statement of the rule: committed ops are never dropped.
            assert!(new.durable_op >= old.commit);
        }
        Ok(())
    }

    fn encode(&self) -> [u8; PAYLOAD_LEN] {
        let mut bytes = [0u8; PAYLOAD_LEN];
        bytes[0..8].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.view.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.last_normal_view.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.commit.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.durable_op.to_le_bytes());
        bytes[40..56].copy_from_slice(&self.journal_head_checksum.to_le_bytes());
        bytes[56..64].copy_from_slice(&self.snapshot_op.to_le_bytes());
        bytes[64..72].copy_from_slice(&self.snapshot_digest.to_le_bytes());
        bytes
    }

    /// `payload` passed its checksum, so a wrong length is a format this
    /// build does not know.
    fn decode(path: &Path, payload: &[u8]) -> Result<Superblock> {
        if payload.len() != PAYLOAD_LEN {
            bail!(
                "{}: byte {}: superblock payload is {} bytes, not {PAYLOAD_LEN}",
                path.display(),
                atomic::HEADER_LEN,
                payload.len()
            );
        }
        let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
        Ok(Superblock {
            sequence: u64_at(0),
            view: u64_at(8),
            last_normal_view: u64_at(16),
            commit: u64_at(24),
            durable_op: u64_at(32),
            journal_head_checksum: u128::from_le_bytes(payload[40..56].try_into().expect("16 bytes")),
            snapshot_op: u64_at(56),
            snapshot_digest: u64_at(64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::atomic::{encode_record, temp_name, CrashAt};
    use crate::storage::testing::{one_line_error, TestDir};
    use std::fs;

    fn sample() -> Superblock {
        Superblock {
            sequence: 7,
            view: 5,
            last_normal_view: 4,
            commit: 90,
            durable_op: 100,
            journal_head_checksum: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            snapshot_op: 64,
            snapshot_digest: 0xdead_beef_cafe_f00d,
        }
    }

    #[test]
    fn a_fresh_directory_has_none_and_a_store_round_trips() {
        let dir = TestDir::new("sb-roundtrip");
        assert_eq!(Superblock::load(&dir.path).unwrap(), None);
        Superblock::initial().store(&dir.path).unwrap();
        assert_eq!(Superblock::load(&dir.path).unwrap(), Some(Superblock::initial()));
        let superblock = sample();
        superblock.store(&dir.path).unwrap();
        assert_eq!(Superblock::load(&dir.path).unwrap(), Some(superblock));
        let max = Superblock {
            sequence: u64::MAX,
            view: u64::MAX,
            last_normal_view: u64::MAX,
            commit: u64::MAX,
            durable_op: u64::MAX,
            journal_head_checksum: u128::MAX,
            snapshot_op: u64::MAX,
            snapshot_digest: u64::MAX,
        };
        max.store(&dir.path).unwrap();
        assert_eq!(Superblock::load(&dir.path).unwrap(), Some(max));
        let names: Vec<_> = fs::read_dir(&dir.path).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [SUPERBLOCK_FILE]);
    }

    #[test]
    fn a_crash_at_every_step_of_a_store_leaves_the_old_or_the_new_superblock() {
        let old = sample();
        let new = Superblock { durable_op: 130, commit: 120, journal_head_checksum: 9, ..old.successor() };
        for crash_at in CrashAt::ALL {
            for has_old in [false, true] {
                let dir = TestDir::new("sb-crash");
                if has_old {
                    old.store(&dir.path).unwrap();
                }
                new.store_crashing(&dir.path, crash_at).unwrap();
                let loaded = Superblock::load(&dir.path).unwrap();
                let renamed = matches!(crash_at, CrashAt::AfterRename | CrashAt::AfterDirSync);
                let expected = match (renamed, has_old) {
                    (true, _) => Some(new),
                    (false, true) => Some(old),
                    (false, false) => None,
                };
                assert_eq!(loaded, expected, "{crash_at:?} old={has_old}");
                // The next store goes through, over any temp file left.
                let newer = new.successor();
                newer.store(&dir.path).unwrap();
                assert_eq!(Superblock::load(&dir.path).unwrap(), Some(newer));
                assert!(!dir.path.join(temp_name(SUPERBLOCK_FILE)).exists(), "{crash_at:?}");
            }
        }
    }

    #[test]
    fn every_flipped_bit_is_an_error_naming_the_file_never_a_reset() {
        let dir = TestDir::new("sb-flip");
        let path = dir.path.join(SUPERBLOCK_FILE);
        sample().store(&dir.path).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), atomic::HEADER_LEN + PAYLOAD_LEN + atomic::CHECKSUM_LEN);
        for position in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[position] ^= 1 << bit;
                fs::write(&path, &flipped).unwrap();
                let text = one_line_error(Superblock::load(&dir.path));
                assert!(text.starts_with(&format!("{}: byte ", path.display())), "{text}");
                // Nothing was rewritten.
                assert_eq!(fs::read(&path).unwrap(), flipped);
            }
        }
        for len in 0..bytes.len() {
            fs::write(&path, &bytes[..len]).unwrap();
            one_line_error(Superblock::load(&dir.path));
        }
        fs::write(&path, &bytes).unwrap();
        assert_eq!(Superblock::load(&dir.path).unwrap(), Some(sample()));
    }

    #[test]
    fn a_record_that_breaks_an_invariant_is_refused_on_load_and_on_store() {
        let dir = TestDir::new("sb-invariant");
        let bad = Superblock { commit: 101, ..sample() };
        let bytes = encode_record(&MAGIC, VERSION, &bad.encode());
        fs::write(dir.path.join(SUPERBLOCK_FILE), bytes).unwrap();
        let text = one_line_error(Superblock::load(&dir.path));
        assert!(text.contains("invalid superblock: commit 101 above durable op 100"), "{text}");
        let stored = std::panic::catch_unwind(|| bad.store(&dir.path));
        assert!(stored.is_err(), "store of an invalid superblock must assert");
        one_line_error(Superblock { last_normal_view: 6, ..sample() }.check());
        one_line_error(Superblock { snapshot_op: 91, ..sample() }.check());
    }

    #[test]
    fn check_successor_accepts_progress_and_refuses_going_back() {
        let old = sample();
        let ok = |new: Superblock| Superblock::check_successor(&old, &new).unwrap();
        let refused = |new: Superblock, what: &str| {
            let text = one_line_error(Superblock::check_successor(&old, &new));
            assert!(text.contains(what), "{new:?}: {text}");
        };
        let next = old.successor();
        ok(next);
        ok(Superblock { view: 6, ..next });
        ok(Superblock { view: 6, last_normal_view: 6, ..next });
        ok(Superblock { durable_op: 140, commit: 130, snapshot_op: 128, snapshot_digest: 1, ..next });
        ok(Superblock { journal_head_checksum: 0, ..next });
        // View change truncation: StartView(5) after our DoViewChange in 5
        // (view already stored) replaces our uncommitted suffix from view 4.
        ok(Superblock { last_normal_view: 5, durable_op: 95, ..next });
        ok(Superblock { view: 9, last_normal_view: 9, durable_op: 90, ..next });
        // Stored later, after a further StartViewChange.
        ok(Superblock { view: 7, last_normal_view: 5, durable_op: 95, ..next });

        refused(old, "sequence 7 does not follow 7");
        refused(Superblock { sequence: 9, ..next }, "sequence 9 does not follow 7");
        refused(Superblock { view: 4, last_normal_view: 3, ..next }, "view goes back from 5 to 4");
        refused(Superblock { last_normal_view: 3, ..next }, "last normal view goes back from 4 to 3");
        refused(Superblock { commit: 89, ..next }, "commit goes back from 90 to 89");
        refused(Superblock { snapshot_op: 0, ..next }, "snapshot op goes back from 64 to 0");
        // A lower durable op without a newer normal view: a lost write, or a
        // truncation of entries acknowledged under the current log.
        refused(Superblock { durable_op: 99, ..next }, "durable op goes back from 100 to 99");
        refused(Superblock { view: 6, durable_op: 95, ..next }, "without a newer normal view");
        // Never below commit, even in a new view.
        refused(
            Superblock { view: 6, last_normal_view: 6, durable_op: 89, ..next },
            "commit 90 above durable op 89",
        );
        refused(
            Superblock { view: 6, last_normal_view: 6, durable_op: 89, commit: 89, ..next },
            "commit goes back",
        );
        // The new one must itself be valid.
        refused(Superblock { last_normal_view: 6, ..next }, "last normal view 6 above view 5");
    }
}
