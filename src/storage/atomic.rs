//! Atomic replacement of a small file (identity record, superblock, snapshot
//! header) and the framed, checksummed record such a file holds.
//!
//! Design decisions (read before building on this):
//! - **Replacement** is the classic sequence: write `NAME.tmp` in the same
//!   directory (created or truncated: a stale temp file left by a crash is
//!   simply overwritten, so it never needs cleaning first), `sync_all` it,
//!   `rename` it over `NAME`, then `sync_all` the directory so the rename
//!   itself survives a power cut. After any crash the target is the old
//!   complete file or the new complete file, never a mix; `NAME.tmp` may be
//!   left behind (absent, empty, partial or complete) and is never read.
//! - **Record frame**: `magic [8] | version u32 | payload_len u32 | payload |
//!   checksum u128`, little-endian, the checksum ([`super::checksum`], xxh3-128)
//!   over every byte before it. The file must be exactly one record: a
//!   shorter file is a torn write, a longer one is refused too.
//! - **Reading** checks, in order: length of the header, magic, version (this
//!   build's one version; a format that gains a version turns `version` into a
//!   set), `payload_len` against the caller's bound (before allocating: a
//!   corrupt length never makes us read or allocate more than the bound),
//!   the file's exact length, then the checksum. Every error is one line
//!   `FILE: byte OFFSET: what failed`.
//! - **Crash injection** ([`CrashAt`], [`write_atomically_crashing`], built for
//!   unit tests and under the `test-faults` feature for integration tests)
//!   stops the sequence after a step, modelling a power cut simply: what was
//!   not yet synced is lost. A crash before the temp file's sync leaves it
//!   empty or torn (a prefix); a crash after the rename but before the
//!   directory sync is modelled as the rename having survived
//!   (`AfterTempSync` is the state where it did not).
//! - Files are created with mode 0600: the data directory is the replica's
//!   alone.
//! - The whole content is one slice in memory: right for small records. A
//!   large snapshot (issue 22 item 3, up to GiBs) needs a streaming writer
//!   with the same steps (temp, sync, rename, directory sync) and a record
//!   per chunk, not this function.

use anyhow::{anyhow, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Length of a record's magic, its first bytes.
pub const MAGIC_LEN: usize = 8;
/// magic | version u32 | payload_len u32.
pub const HEADER_LEN: usize = MAGIC_LEN + 4 + 4;
/// The trailing xxh3-128 checksum.
pub const CHECKSUM_LEN: usize = 16;
/// Appended to a file's name for its replacement in progress.
pub const TEMP_SUFFIX: &str = ".tmp";

/// The name of `name`'s temporary file, in the same directory.
pub fn temp_name(name: &str) -> String {
    format!("{name}{TEMP_SUFFIX}")
}

/// Replaces `dir/name` by `bytes` atomically and durably: when this returns
/// Ok, a power cut leaves the new content; if it fails or the machine dies
/// during it, `dir/name` is the old content (or still absent).
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_steps(dir, name, bytes, None)
}

/// A step of [`write_atomically`] after which a test makes the machine "lose
/// power" ([`write_atomically_crashing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashAt {
    /// The temp file exists, empty.
    AfterTempCreate,
    /// The temp file holds only a prefix of the bytes: written but not
    /// synced, so the disk kept part of it (torn).
    AfterTempWrite,
    /// The temp file is complete and synced; no rename yet (also the state
    /// of a rename that was done but lost with the unsynced directory).
    AfterTempSync,
    /// Renamed, directory not yet synced; modelled as the rename surviving.
    AfterRename,
    /// Every step done: the same as a completed write.
    AfterDirSync,
}

impl CrashAt {
    /// Every step, in the order of the sequence.
    pub const ALL: [CrashAt; 5] = [
        CrashAt::AfterTempCreate,
        CrashAt::AfterTempWrite,
        CrashAt::AfterTempSync,
        CrashAt::AfterRename,
        CrashAt::AfterDirSync,
    ];
}

/// Test-only [`write_atomically`] that stops after `crash_at`, leaving the
/// directory as a power cut at that point would (see [`CrashAt`]). Returns Ok
/// when it "crashed" as asked; the caller then reads the directory as a
/// restarted process would.
#[cfg(any(test, feature = "test-faults"))]
pub fn write_atomically_crashing(dir: &Path, name: &str, bytes: &[u8], crash_at: CrashAt) -> Result<()> {
    write_steps(dir, name, bytes, Some(crash_at))
}

fn write_steps(dir: &Path, name: &str, bytes: &[u8], crash_at: Option<CrashAt>) -> Result<()> {
    // Names are our own constants: a separator would put the temp file in
    // another directory, where the rename is no longer atomic.
    assert!(!name.is_empty(), "empty file name");
    assert!(!name.contains('/'), "file name {name:?} has a separator");
    assert!(name != "." && name != "..", "file name {name:?}");
    let temp_path = dir.join(temp_name(name));
    let target_path = dir.join(name);
    let temp_shown = temp_path.display();

    let mut temp = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp_path)
        .map_err(|e| anyhow!("{temp_shown}: cannot create: {e}"))?;
    if crash_at == Some(CrashAt::AfterTempCreate) {
        return Ok(());
    }
    if crash_at == Some(CrashAt::AfterTempWrite) {
        let torn_len = bytes.len() / 2;
        temp.write_all(&bytes[..torn_len]).map_err(|e| anyhow!("{temp_shown}: cannot write: {e}"))?;
        return Ok(());
    }
    temp.write_all(bytes).map_err(|e| anyhow!("{temp_shown}: cannot write: {e}"))?;
    temp.sync_all().map_err(|e| anyhow!("{temp_shown}: cannot sync: {e}"))?;
    drop(temp);
    if crash_at == Some(CrashAt::AfterTempSync) {
        return Ok(());
    }
    fs::rename(&temp_path, &target_path)
        .map_err(|e| anyhow!("{temp_shown}: cannot rename to {}: {e}", target_path.display()))?;
    if crash_at == Some(CrashAt::AfterRename) {
        return Ok(());
    }
    sync_dir(dir)?;
    Ok(())
}

/// Makes the entries of `dir` (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let shown = dir.display();
    let handle = File::open(dir).map_err(|e| anyhow!("{shown}: cannot open directory to sync it: {e}"))?;
    handle.sync_all().map_err(|e| anyhow!("{shown}: cannot sync directory: {e}"))
}

/// The bytes of one record: header, payload, checksum.
pub fn encode_record(magic: &[u8; MAGIC_LEN], version: u32, payload: &[u8]) -> Vec<u8> {
    let payload_len = u32::try_from(payload.len()).expect("record payload over 4 GiB");
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + CHECKSUM_LEN);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&payload_len.to_le_bytes());
    bytes.extend_from_slice(payload);
    let sum = super::checksum(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

/// [`write_atomically`] of one record.
pub fn write_record(
    dir: &Path,
    name: &str,
    magic: &[u8; MAGIC_LEN],
    version: u32,
    payload: &[u8],
) -> Result<()> {
    write_atomically(dir, name, &encode_record(magic, version, payload))
}

/// Reads the record in `path` and returns its payload, checked (see the
/// module's notes); reads at most one record of `payload_len_max`, plus one
/// byte to see that nothing follows.
pub fn read_checked(
    path: &Path,
    magic: &[u8; MAGIC_LEN],
    version: u32,
    payload_len_max: usize,
) -> Result<Vec<u8>> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| anyhow!("{shown}: cannot open: {e}"))?;
    let frame_len_max = (HEADER_LEN + CHECKSUM_LEN).saturating_add(payload_len_max) as u64;
    let mut bytes = Vec::new();
    file.take(frame_len_max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow!("{shown}: cannot read: {e}"))?;
    decode_record(path, &bytes, magic, version, payload_len_max).map(<[u8]>::to_vec)
}

/// Checks `bytes` as the whole content of the record file `path` (named in
/// errors) and returns its payload.
pub fn decode_record<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: &[u8; MAGIC_LEN],
    version: u32,
    payload_len_max: usize,
) -> Result<&'a [u8]> {
    let corrupt = |offset: usize, what: String| anyhow!("{}: byte {offset}: {what}", path.display());
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(corrupt(
            bytes.len(),
            format!(
                "file ends after {} bytes, a record has at least {} (torn write?)",
                bytes.len(),
                HEADER_LEN + CHECKSUM_LEN
            ),
        ));
    }
    let found_magic = &bytes[..MAGIC_LEN];
    if found_magic != magic {
        return Err(corrupt(
            0,
            format!("bad magic \"{}\" (expected \"{}\")", found_magic.escape_ascii(), magic.escape_ascii()),
        ));
    }
    let found_version = u32::from_le_bytes(bytes[MAGIC_LEN..MAGIC_LEN + 4].try_into().expect("4 bytes"));
    if found_version != version {
        return Err(corrupt(
            MAGIC_LEN,
            format!("unknown format version {found_version} (this build reads version {version})"),
        ));
    }
    let payload_len =
        u32::from_le_bytes(bytes[MAGIC_LEN + 4..HEADER_LEN].try_into().expect("4 bytes")) as usize;
    if payload_len > payload_len_max {
        return Err(corrupt(
            MAGIC_LEN + 4,
            format!("payload length {payload_len} over the bound {payload_len_max}"),
        ));
    }
    let record_len = HEADER_LEN + payload_len + CHECKSUM_LEN;
    if bytes.len() < record_len {
        return Err(corrupt(
            bytes.len(),
            format!("file ends after {} bytes, the record needs {record_len} (torn write?)", bytes.len()),
        ));
    }
    if bytes.len() > record_len {
        return Err(corrupt(record_len, "trailing bytes after the record".to_string()));
    }
    let checksum_offset = HEADER_LEN + payload_len;
    let stored = u128::from_le_bytes(bytes[checksum_offset..].try_into().expect("16 bytes"));
    let computed = super::checksum(&bytes[..checksum_offset]);
    if stored != computed {
        return Err(corrupt(
            checksum_offset,
            format!("checksum mismatch (stored {stored:032x}, computed {computed:032x})"),
        ));
    }
    Ok(&bytes[HEADER_LEN..checksum_offset])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{entries, one_line_error, TestDir};
    use std::path::PathBuf;

    const MAGIC: [u8; MAGIC_LEN] = *b"TESTREC1";
    const VERSION: u32 = 3;
    const NAME: &str = "snapshot";

    /// A test directory, the path of a record in it, and the bytes of a
    /// record holding `payload` (not written yet).
    fn record_file(label: &str, payload: &[u8]) -> (TestDir, PathBuf, Vec<u8>) {
        let dir = TestDir::new(label);
        let path = dir.path.join(NAME);
        (dir, path, encode_record(&MAGIC, VERSION, payload))
    }

    /// Writes `bytes` as the file at `path` and returns the one-line error
    /// of reading it back as a record of at most `payload_len_max` bytes.
    fn error_reading(path: &Path, bytes: impl AsRef<[u8]>, payload_len_max: usize) -> String {
        fs::write(path, bytes).unwrap();
        one_line_error(read_checked(path, &MAGIC, VERSION, payload_len_max))
    }

    #[test]
    fn record_round_trips_and_the_temp_file_is_gone() {
        let dir = TestDir::new("roundtrip");
        write_record(&dir.path, NAME, &MAGIC, VERSION, b"first").unwrap();
        assert_eq!(read_checked(&dir.path.join(NAME), &MAGIC, VERSION, 64).unwrap(), b"first");
        write_record(&dir.path, NAME, &MAGIC, VERSION, b"second, longer").unwrap();
        assert_eq!(read_checked(&dir.path.join(NAME), &MAGIC, VERSION, 64).unwrap(), b"second, longer");
        write_record(&dir.path, NAME, &MAGIC, VERSION, b"").unwrap();
        assert_eq!(read_checked(&dir.path.join(NAME), &MAGIC, VERSION, 0).unwrap(), b"");
        assert_eq!(entries(&dir.path), [NAME]);
    }

    #[test]
    fn a_stale_longer_temp_file_is_overwritten_not_kept() {
        let dir = TestDir::new("stale");
        fs::write(dir.path.join(temp_name(NAME)), vec![0xAB; 1000]).unwrap();
        write_record(&dir.path, NAME, &MAGIC, VERSION, b"new").unwrap();
        assert_eq!(read_checked(&dir.path.join(NAME), &MAGIC, VERSION, 64).unwrap(), b"new");
        assert_eq!(entries(&dir.path), [NAME]);
    }

    // Issue 22, item 6: "a crash at every step of a snapshot write (temp,
    // sync, rename) leaves a loadable directory".
    #[test]
    fn a_crash_at_every_step_leaves_the_old_or_the_new_record_and_the_next_write_succeeds() {
        let old = b"old snapshot: op 100";
        let new = b"new snapshot: op 200, a longer payload";
        let newer = b"newer snapshot: op 300";
        for crash_at in CrashAt::ALL {
            for has_old in [false, true] {
                let dir = TestDir::new("crash");
                let target = dir.path.join(NAME);
                if has_old {
                    write_record(&dir.path, NAME, &MAGIC, VERSION, old).unwrap();
                }
                write_atomically_crashing(&dir.path, NAME, &encode_record(&MAGIC, VERSION, new), crash_at)
                    .unwrap();

                // The "restarted process" reads what the power cut left.
                let renamed = matches!(crash_at, CrashAt::AfterRename | CrashAt::AfterDirSync);
                let read = read_checked(&target, &MAGIC, VERSION, 64);
                match (renamed, has_old) {
                    (true, _) => assert_eq!(read.unwrap(), new, "{crash_at:?} old={has_old}"),
                    (false, true) => assert_eq!(read.unwrap(), old, "{crash_at:?} old={has_old}"),
                    (false, false) => {
                        assert!(!target.exists(), "{crash_at:?}: a target appeared without its rename");
                        one_line_error(read);
                    }
                }
                let temp_left = dir.path.join(temp_name(NAME)).exists();
                assert_eq!(temp_left, !renamed, "{crash_at:?} old={has_old}");

                write_record(&dir.path, NAME, &MAGIC, VERSION, newer).unwrap();
                assert_eq!(read_checked(&target, &MAGIC, VERSION, 64).unwrap(), newer);
                assert_eq!(entries(&dir.path), [NAME], "{crash_at:?}: the stale temp file is gone");
            }
        }
    }

    #[test]
    fn a_torn_temp_file_is_a_prefix_of_the_record_and_fails_its_check() {
        let dir = TestDir::new("torn");
        let bytes = encode_record(&MAGIC, VERSION, b"0123456789abcdef0123456789");
        write_atomically_crashing(&dir.path, NAME, &bytes, CrashAt::AfterTempWrite).unwrap();
        let temp_path = dir.path.join(temp_name(NAME));
        let torn = fs::read(&temp_path).unwrap();
        assert!(torn.len() < bytes.len());
        assert_eq!(torn[..], bytes[..torn.len()]);
        one_line_error(read_checked(&temp_path, &MAGIC, VERSION, 64));
    }

    #[test]
    fn a_flipped_bit_in_any_byte_is_detected() {
        let (_dir, path, bytes) = record_file("bitflip", b"identity: 7 1 3");
        for position in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[position] ^= 1 << bit;
                let text = error_reading(&path, &flipped, 64);
                assert!(text.starts_with(&format!("{}: byte ", path.display())), "{text}");
            }
        }
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read_checked(&path, &MAGIC, VERSION, 64).unwrap(), b"identity: 7 1 3");
    }

    #[test]
    fn truncation_at_every_length_and_trailing_bytes_are_detected() {
        let (_dir, path, bytes) = record_file("truncate", b"some payload");
        for len in 0..bytes.len() {
            let text = error_reading(&path, &bytes[..len], 64);
            assert!(text.contains("file ends after"), "{len}: {text}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let text = error_reading(&path, &longer, 64);
        assert!(text.contains("trailing bytes"), "{text}");
    }

    #[test]
    fn each_failure_names_the_file_the_offset_and_what_failed() {
        let dir = TestDir::new("errors");
        let path = dir.path.join(NAME);
        let shown = path.display().to_string();
        let bytes = encode_record(&MAGIC, VERSION, b"payload");
        let check = |content: &[u8], expected: &str| {
            let text = error_reading(&path, content, 16);
            assert_eq!(text, format!("{shown}: {expected}"));
        };
        check(&bytes[..10], "byte 10: file ends after 10 bytes, a record has at least 32 (torn write?)");
        let mut bad = bytes.clone();
        bad[0] = b'X';
        check(&bad, "byte 0: bad magic \"XESTREC1\" (expected \"TESTREC1\")");
        let mut bad = bytes.clone();
        bad[8] = 4;
        check(&bad, "byte 8: unknown format version 4 (this build reads version 3)");
        let mut bad = bytes.clone();
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        check(&bad, "byte 12: payload length 4294967295 over the bound 16");
        check(
            &bytes[..bytes.len() - 1],
            "byte 38: file ends after 38 bytes, the record needs 39 (torn write?)",
        );
        let mut bad = bytes.clone();
        bad[HEADER_LEN] ^= 1;
        let text = { error_reading(&path, &bad, 16) };
        assert!(text.starts_with(&format!("{shown}: byte 23: checksum mismatch (stored ")), "{text}");
        let text = one_line_error(read_checked(&dir.path.join("absent"), &MAGIC, VERSION, 16));
        assert!(text.contains("absent: cannot open: "), "{text}");
    }

    #[test]
    fn a_huge_file_is_read_only_up_to_the_bound() {
        let dir = TestDir::new("huge");
        let path = dir.path.join(NAME);
        // A valid header claiming a small payload, then 1 MiB of junk: refused
        // after reading at most one bounded record plus a byte.
        let mut bytes = encode_record(&MAGIC, VERSION, b"ok");
        bytes.resize(1 << 20, 0x55);
        let text = error_reading(&path, &bytes, 16);
        assert!(text.contains("trailing bytes"), "{text}");
    }
}
