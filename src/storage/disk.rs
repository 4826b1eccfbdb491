//! One append-only file, behind a trait so tests and the simulator can swap
//! the real disk for a seeded fault model.
//!
//! [`FileDisk`] is the real thing: `pread`/`pwrite` through
//! `std::os::unix::fs::FileExt`, and `sync` = `File::sync_data` (fdatasync:
//! it also makes a changed file length durable, so appends and truncations
//! need nothing more).
//!
//! [`MemDisk`] models what a disk may do to data that was written but not yet
//! synced, after TigerBeetle's VOPR storage faults. It keeps the synced image
//! and the pending (unsynced) writes and truncations apart; [`MemDisk::crash`]
//! replays the pending operations over the synced image, each one
//! independently surviving whole, being lost, or (writes only) surviving
//! torn. A torn write keeps a **prefix** of its bytes cut at a sector
//! boundary: `sector_bytes` (default 512, the smallest unit a disk writes
//! atomically; set it to 1 for byte granularity, a harsher model). Tearing
//! that keeps a later sector but loses an earlier one (reordered sector
//! writes) is not modelled; a lost write followed by a surviving write at a
//! higher offset leaves a hole of zeros, as a file system with delayed
//! allocation may. Reads may, rarely and when configured, return one flipped
//! bit or the bytes of another offset (a misdirected read). All choices come
//! from a splitmix64 generator over the seed, so a seed replays exactly.

use anyhow::{bail, ensure, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One append-only file. Offsets and lengths are bytes.
pub trait Disk {
    /// A name for error messages (the path of a file).
    fn name(&self) -> &str;
    /// The length as reads see it now, including unsynced writes.
    fn len(&self) -> u64;
    /// Whether the file is empty (see `len`).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; an error if that runs past `len()`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `bytes` at `offset` <= `len()`: an append, or an overwrite of
    /// the (unsynced) tail. Not durable until `sync`.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()>;
    /// Makes every earlier write and truncation durable (fdatasync).
    fn sync(&mut self) -> Result<()>;
    /// Sets the length to `len_bytes` <= `len()`. Not durable until `sync`.
    fn truncate(&mut self, len_bytes: u64) -> Result<()>;
}

/// A real file.
pub struct FileDisk {
    file: File,
    name: String,
    len_bytes: u64,
}

impl FileDisk {
    /// Opens `path` for reading and writing, creating it if absent. A newly
    /// created file is synced together with its directory, so its name
    /// survives a crash as well as the data later synced into it.
    pub fn open(path: &Path) -> Result<FileDisk> {
        let name = path.display().to_string();
        let created = OpenOptions::new().read(true).write(true).create_new(true).open(path);
        let file = match created {
            Ok(file) => {
                file.sync_all().with_context(|| format!("{name}: sync_all"))?;
                let dir = parent_dir(path);
                File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .with_context(|| format!("{}: sync of the directory", dir.display()))?;
                file
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| format!("{name}: open"))?,
            Err(e) => return Err(e).with_context(|| format!("{name}: create")),
        };
        let len_bytes = file.metadata().with_context(|| format!("{name}: metadata"))?.len();
        Ok(FileDisk { file, name, len_bytes })
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Disk for FileDisk {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.len_bytes
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        ensure!(
            end.is_some_and(|end| end <= self.len_bytes),
            "{}: read of {} bytes at offset {offset} past the length {}",
            self.name,
            buf.len(),
            self.len_bytes
        );
        self.file
            .read_exact_at(buf, offset)
            .with_context(|| format!("{}: read at offset {offset}", self.name))
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        ensure!(
            offset <= self.len_bytes,
            "{}: write at offset {offset} past the length {} (append-only)",
            self.name,
            self.len_bytes
        );
        self.file
            .write_all_at(bytes, offset)
            .with_context(|| format!("{}: write at offset {offset}", self.name))?;
        self.len_bytes = self.len_bytes.max(offset + bytes.len() as u64);
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.file.sync_data().with_context(|| format!("{}: fdatasync", self.name))
    }

    fn truncate(&mut self, len_bytes: u64) -> Result<()> {
        ensure!(
            len_bytes <= self.len_bytes,
            "{}: truncate to {len_bytes} beyond the length {}",
            self.name,
            self.len_bytes
        );
        self.file
            .set_len(len_bytes)
            .with_context(|| format!("{}: truncate to offset {len_bytes}", self.name))?;
        self.len_bytes = len_bytes;
        Ok(())
    }
}

/// splitmix64: a tiny, good-enough, self-contained generator; the only
/// source of randomness in [`MemDisk`], so a seed replays exactly.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (the modulo bias is irrelevant for tests).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }

    /// True with probability `ppm` / 1,000,000.
    pub fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }
}

/// How [`MemDisk`] misbehaves. The default is a perfect disk apart from crashes.
#[derive(Clone, Debug)]
pub struct MemDiskFaults {
    /// Chance per read (out of 1,000,000) that one random bit of the returned
    /// bytes is flipped. The medium is not changed: a re-read may be clean.
    pub read_bit_flip_ppm: u32,
    /// Chance per read (out of 1,000,000) that the bytes of another offset of
    /// the same length are returned instead.
    pub read_misdirect_ppm: u32,
    /// The granularity at which a pending write tears at a crash: 512 (a
    /// sector) or 1 (any byte).
    pub sector_bytes: u64,
}

impl Default for MemDiskFaults {
    fn default() -> MemDiskFaults {
        MemDiskFaults { read_bit_flip_ppm: 0, read_misdirect_ppm: 0, sector_bytes: 512 }
    }
}

#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, bytes: Vec<u8> },
    Truncate { len_bytes: u64 },
}

/// What became of pending operations at the last crash (for tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub writes_whole: u32,
    pub writes_lost: u32,
    pub writes_torn: u32,
    pub truncations_kept: u32,
    pub truncations_lost: u32,
}

/// An in-memory disk with seeded faults (see the module comment).
pub struct MemDisk {
    /// What survives a crash.
    synced: Vec<u8>,
    /// What reads see: `synced` with `pending` applied.
    current: Vec<u8>,
    pending: Vec<Pending>,
    rng: SplitMix64,
    pub faults: MemDiskFaults,
    sync_count: u64,
    write_count: u64,
    read_faults_injected: u64,
    /// The 1-based number of the sync that fails instead of syncing, as if
    /// power were cut just before it.
    fail_sync_number: Option<u64>,
    /// Set by a failed sync: every operation fails until `crash`.
    failed: bool,
}

impl MemDisk {
    pub fn new(seed: u64) -> MemDisk {
        MemDisk::with_faults(seed, MemDiskFaults::default())
    }

    pub fn with_faults(seed: u64, faults: MemDiskFaults) -> MemDisk {
        assert!(faults.sector_bytes > 0);
        MemDisk {
            synced: Vec::new(),
            current: Vec::new(),
            pending: Vec::new(),
            rng: SplitMix64::new(seed),
            faults,
            sync_count: 0,
            write_count: 0,
            read_faults_injected: 0,
            fail_sync_number: None,
            failed: false,
        }
    }

    /// Syncs that succeeded so far.
    pub fn sync_count(&self) -> u64 {
        self.sync_count
    }

    /// Calls to `write_at` so far.
    pub fn write_count(&self) -> u64 {
        self.write_count
    }

    pub fn read_faults_injected(&self) -> u64 {
        self.read_faults_injected
    }

    /// Makes the `number`-th sync (counting successful ones, 1-based) fail
    /// without syncing; every later operation fails until `crash`.
    pub fn fail_sync_number(&mut self, number: u64) {
        self.fail_sync_number = Some(number);
    }

    /// Whether writes or truncations are waiting for a sync.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The durable image (what a crash now would leave, before faults).
    pub fn synced_image(&self) -> &[u8] {
        &self.synced
    }

    /// Changes bytes of the medium itself, synced and current alike, as a
    /// latent sector error or a misdirected write would: for corruption tests.
    pub fn corrupt(&mut self, offset: u64, bytes: &[u8]) {
        let start = usize::try_from(offset).expect("offset fits usize");
        let end = start + bytes.len();
        assert!(end <= self.synced.len(), "corrupt only synced bytes");
        assert!(end <= self.current.len());
        self.synced[start..end].copy_from_slice(bytes);
        self.current[start..end].copy_from_slice(bytes);
    }

    /// Power cut: each pending operation, in order, survives whole, is lost,
    /// or (a write) survives torn, as the seeded generator decides.
    pub fn crash(&mut self) -> CrashReport {
        let mut report = CrashReport::default();
        let mut image = std::mem::take(&mut self.synced);
        for pending in std::mem::take(&mut self.pending) {
            match pending {
                Pending::Write { offset, bytes } => {
                    let cut = self.torn_cut(offset, bytes.len() as u64);
                    let keep_len = match self.rng.below(3) {
                        0 => {
                            report.writes_lost += 1;
                            0
                        }
                        1 => {
                            report.writes_whole += 1;
                            bytes.len()
                        }
                        _ => match cut {
                            Some(cut) => {
                                report.writes_torn += 1;
                                cut as usize
                            }
                            // Within one sector: atomic, so whole or lost.
                            None => {
                                report.writes_lost += 1;
                                0
                            }
                        },
                    };
                    if keep_len > 0 {
                        apply_write(&mut image, offset, &bytes[..keep_len]);
                    }
                }
                Pending::Truncate { len_bytes } => {
                    if self.rng.below(2) == 0 {
                        report.truncations_kept += 1;
                        image.truncate(len_bytes as usize);
                    } else {
                        report.truncations_lost += 1;
                    }
                }
            }
        }
        self.current = image.clone();
        self.synced = image;
        self.failed = false;
        self.fail_sync_number = None;
        report
    }

    /// A cut strictly inside a write of `len` bytes at `offset`, at a sector
    /// boundary of the file, as a count of kept bytes; None if the write lies
    /// within one sector.
    fn torn_cut(&mut self, offset: u64, len: u64) -> Option<u64> {
        if len < 2 {
            return None;
        }
        let sector = self.faults.sector_bytes;
        let first_boundary = (offset / sector + 1) * sector;
        let end = offset + len;
        if first_boundary >= end {
            return None;
        }
        let boundaries = (end - 1 - first_boundary) / sector + 1;
        let boundary = first_boundary + self.rng.below(boundaries) * sector;
        Some(boundary - offset)
    }

    fn check_not_failed(&self) -> Result<()> {
        if self.failed {
            bail!("memdisk: the disk failed (simulated power cut); crash() first");
        }
        Ok(())
    }
}

fn apply_write(image: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = offset as usize;
    if image.len() < start {
        // An earlier extending write was lost: a hole reads as zeros.
        image.resize(start, 0);
    }
    let end = start + bytes.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(bytes);
}

impl Disk for MemDisk {
    fn name(&self) -> &str {
        "memdisk"
    }

    fn len(&self) -> u64 {
        self.current.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_not_failed()?;
        let len = self.current.len() as u64;
        let end = offset.checked_add(buf.len() as u64);
        ensure!(
            end.is_some_and(|end| end <= len),
            "memdisk: read of {} bytes at offset {offset} past the length {len}",
            buf.len()
        );
        let mut source = offset;
        if !buf.is_empty() && self.rng.chance_ppm(self.faults.read_misdirect_ppm) {
            source = self.rng.below(len - buf.len() as u64 + 1);
            self.read_faults_injected += 1;
        }
        let start = source as usize;
        buf.copy_from_slice(&self.current[start..start + buf.len()]);
        if !buf.is_empty() && self.rng.chance_ppm(self.faults.read_bit_flip_ppm) {
            let bit = self.rng.below(buf.len() as u64 * 8);
            buf[(bit / 8) as usize] ^= 1 << (bit % 8);
            self.read_faults_injected += 1;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.check_not_failed()?;
        ensure!(
            offset <= self.current.len() as u64,
            "memdisk: write at offset {offset} past the length {} (append-only)",
            self.current.len()
        );
        self.write_count += 1;
        apply_write(&mut self.current, offset, bytes);
        self.pending.push(Pending::Write { offset, bytes: bytes.to_vec() });
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.check_not_failed()?;
        if self.fail_sync_number == Some(self.sync_count + 1) {
            self.failed = true;
            bail!("memdisk: sync failed (simulated power cut)");
        }
        self.sync_count += 1;
        self.synced.clone_from(&self.current);
        self.pending.clear();
        Ok(())
    }

    fn truncate(&mut self, len_bytes: u64) -> Result<()> {
        self.check_not_failed()?;
        ensure!(
            len_bytes <= self.current.len() as u64,
            "memdisk: truncate to {len_bytes} beyond the length {}",
            self.current.len()
        );
        self.current.truncate(len_bytes as usize);
        self.pending.push(Pending::Truncate { len_bytes });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::TestDir;

    fn read_all(disk: &mut dyn Disk) -> Vec<u8> {
        let mut buf = vec![0; disk.len() as usize];
        disk.read_at(0, &mut buf).unwrap();
        buf
    }

    #[test]
    fn file_disk_writes_reads_truncates_and_reopens() {
        let dir = TestDir::new("disk");
        let path = dir.path.join("log");
        let mut disk = FileDisk::open(&path).unwrap();
        assert!(disk.is_empty());
        disk.write_at(0, b"hello world").unwrap();
        disk.write_at(5, b", disk").unwrap();
        disk.sync().unwrap();
        assert_eq!(read_all(&mut disk), b"hello, disk");
        assert!(disk.write_at(100, b"x").is_err(), "no holes");
        assert!(disk.read_at(5, &mut [0; 7]).is_err(), "no reads past the end");
        disk.truncate(5).unwrap();
        disk.sync().unwrap();
        drop(disk);
        let mut disk = FileDisk::open(&path).unwrap();
        assert_eq!(disk.len(), 5);
        assert_eq!(read_all(&mut disk), b"hello");
    }

    #[test]
    fn mem_disk_crash_keeps_synced_and_decides_pending_by_seed() {
        let mut totals = CrashReport::default();
        for seed in 0..300 {
            let mut disk = MemDisk::new(seed);
            disk.write_at(0, &[1; 1000]).unwrap();
            disk.sync().unwrap();
            disk.write_at(1000, &[2; 2000]).unwrap();
            let report = disk.crash();
            let image = read_all(&mut disk);
            assert!(image.len() >= 1000);
            assert!(image[..1000].iter().all(|&b| b == 1), "synced bytes survive");
            assert!(image[1000..].iter().all(|&b| b == 2));
            let kept = image.len() - 1000;
            assert!(
                kept == 0 || kept == 2000 || (1000 + kept) % 512 == 0,
                "a torn write ends at a sector boundary: {kept}"
            );
            totals.writes_whole += report.writes_whole;
            totals.writes_lost += report.writes_lost;
            totals.writes_torn += report.writes_torn;
            // The same seed decides the same way.
            let mut again = MemDisk::new(seed);
            again.write_at(0, &[1; 1000]).unwrap();
            again.sync().unwrap();
            again.write_at(1000, &[2; 2000]).unwrap();
            assert_eq!(again.crash(), report);
            assert_eq!(read_all(&mut again), image);
        }
        assert!(totals.writes_whole > 50, "{totals:?}");
        assert!(totals.writes_lost > 50, "{totals:?}");
        assert!(totals.writes_torn > 50, "{totals:?}");
    }

    #[test]
    fn mem_disk_lost_write_before_surviving_one_leaves_zeros() {
        let mut seen_hole = false;
        for seed in 0..200 {
            let mut disk =
                MemDisk::with_faults(seed, MemDiskFaults { sector_bytes: 1, ..MemDiskFaults::default() });
            disk.write_at(0, &[7; 10]).unwrap();
            disk.write_at(10, &[8; 10]).unwrap();
            disk.crash();
            let image = read_all(&mut disk);
            if image.len() == 20 && image[..10] == [0; 10] {
                seen_hole = true;
            }
        }
        assert!(seen_hole);
    }

    #[test]
    fn mem_disk_failed_sync_fails_everything_until_crash() {
        let mut disk = MemDisk::new(1);
        disk.fail_sync_number(2);
        disk.write_at(0, b"a").unwrap();
        disk.sync().unwrap();
        disk.write_at(1, b"b").unwrap();
        assert!(disk.sync().is_err());
        assert!(disk.write_at(2, b"c").is_err());
        assert!(disk.read_at(0, &mut [0; 1]).is_err());
        disk.crash();
        assert_eq!(disk.sync_count(), 1);
        assert!(disk.len() == 1 || disk.len() == 2);
        disk.write_at(disk.len(), b"c").unwrap();
        disk.sync().unwrap();
    }

    #[test]
    fn mem_disk_truncation_unsynced_may_be_lost() {
        let (mut kept, mut lost) = (0, 0);
        for seed in 0..100 {
            let mut disk = MemDisk::new(seed);
            disk.write_at(0, &[3; 100]).unwrap();
            disk.sync().unwrap();
            disk.truncate(40).unwrap();
            assert_eq!(disk.len(), 40);
            disk.crash();
            match disk.len() {
                40 => kept += 1,
                100 => lost += 1,
                other => panic!("length {other}"),
            }
        }
        assert!(kept > 20 && lost > 20);
    }

    #[test]
    fn mem_disk_read_faults_are_rare_seeded_and_leave_the_medium_alone() {
        let faults =
            MemDiskFaults { read_bit_flip_ppm: 100_000, read_misdirect_ppm: 100_000, sector_bytes: 512 };
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut disk = MemDisk::with_faults(9, faults.clone());
        disk.write_at(0, &data).unwrap();
        disk.sync().unwrap();
        let (mut flipped, mut misdirected, mut clean) = (0, 0, 0);
        for i in 0..1000u64 {
            let offset = i % 4000;
            let mut buf = [0u8; 64];
            disk.read_at(offset, &mut buf).unwrap();
            let want = &data[offset as usize..offset as usize + 64];
            let differing_bits: u32 = buf.iter().zip(want).map(|(a, b)| (a ^ b).count_ones()).sum();
            match differing_bits {
                0 => clean += 1,
                1 => flipped += 1,
                _ => misdirected += 1,
            }
        }
        assert!(clean > 700, "{clean}");
        assert!(flipped > 30, "{flipped}");
        assert!(misdirected > 30, "{misdirected}");
        assert_eq!(disk.synced_image(), &data[..]);
        // A misdirected read may also be flipped: two faults, one read.
        assert!(disk.read_faults_injected() >= 1000 - clean);
    }
}
