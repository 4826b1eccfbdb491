//! What the storage layer costs on this machine's disk (numbers, no
//! assertions): the journal's group commit (4 KiB entries, a flush every 1,
//! 8 and 64 entries: entries/s, µs per fdatasync and per write), a
//! superblock store (write, sync, rename, sync of the directory), and a
//! 256 MiB snapshot written, installed and verified.
//!
//!     cargo run --release --example storage_bench [-- DIR]
//!
//! DIR (default: the system temp directory) should be on the disk the data
//! directories will use; the bench works in a fresh subdirectory it removes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use electrode::storage::disk::{Disk, FileDisk};
use electrode::storage::journal::{Entry, Journal, HEADER_BYTES};
use electrode::storage::snapshot_file::{SnapshotReader, SnapshotWriter};
use electrode::storage::superblock::Superblock;

/// A FileDisk that times its writes and syncs.
struct TimedDisk {
    inner: FileDisk,
    write_time: Duration,
    sync_time: Duration,
    syncs: u64,
}

impl Disk for TimedDisk {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let start = Instant::now();
        let result = self.inner.write_at(offset, bytes);
        self.write_time += start.elapsed();
        result
    }
    fn sync(&mut self) -> Result<()> {
        let start = Instant::now();
        let result = self.inner.sync();
        self.sync_time += start.elapsed();
        self.syncs += 1;
        result
    }
    fn truncate(&mut self, len_bytes: u64) -> Result<()> {
        self.inner.truncate(len_bytes)
    }
}

fn group_commit(dir: &Path) -> Result<()> {
    const ENTRY_BYTES: usize = 4096;
    for batch in [1u64, 8, 64] {
        let disk = TimedDisk {
            inner: FileDisk::open(&dir.join(format!("journal-{batch}")))?,
            write_time: Duration::ZERO,
            sync_time: Duration::ZERO,
            syncs: 0,
        };
        let (mut journal, _) = Journal::open(disk, ENTRY_BYTES as u32)?;
        let total = if batch == 1 { 2_000 } else { 8_192 };
        let body = vec![0xA5u8; ENTRY_BYTES];
        let start = Instant::now();
        for op in 1..=total {
            journal.append(&Entry { op, view: 0, body: body.clone() })?;
            if op % batch == 0 {
                journal.flush_and_sync()?;
            }
        }
        let elapsed = start.elapsed();
        let disk = journal.into_disk();
        let syncs = disk.syncs.max(1) as f64;
        println!(
            "journal, a flush every {batch:>2}: {total} entries of 4 KiB in {:.3} s: {:.0} entries/s; \
             {} syncs, {:.1} µs per fdatasync, {:.1} µs per write of {} KiB",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            disk.syncs,
            disk.sync_time.as_secs_f64() * 1e6 / syncs,
            disk.write_time.as_secs_f64() * 1e6 / syncs,
            batch * (ENTRY_BYTES + HEADER_BYTES) as u64 / 1024
        );
    }
    Ok(())
}

fn superblock_stores(dir: &Path) -> Result<()> {
    let mut superblock = Superblock::initial();
    superblock.store(dir)?;
    let stores = 200;
    let start = Instant::now();
    for _ in 0..stores {
        superblock = Superblock { durable_op: superblock.durable_op + 1, ..superblock.successor() };
        superblock.store(dir)?;
    }
    let elapsed = start.elapsed();
    println!(
        "superblock: {stores} stores in {elapsed:?}: {:.0} µs each",
        elapsed.as_secs_f64() * 1e6 / stores as f64
    );
    Ok(())
}

fn snapshot(dir: &Path) -> Result<()> {
    let chunk: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 + 3) as u8).collect();
    let chunks = 256;
    let start = Instant::now();
    let mut writer = SnapshotWriter::create(dir, 1, 1)?;
    for _ in 0..chunks {
        writer.write_chunk(&chunk)?;
    }
    writer.finish()?;
    let written = start.elapsed();
    let start = Instant::now();
    SnapshotReader::open(dir)?.context("the snapshot just written is missing")?.verify()?;
    let verified = start.elapsed();
    let mib_per_s = |d: Duration| chunks as f64 / d.as_secs_f64();
    println!(
        "snapshot: {chunks} MiB written and installed in {written:?} ({:.0} MiB/s), verified in \
         {verified:?} ({:.0} MiB/s, page cache)",
        mib_per_s(written),
        mib_per_s(verified)
    );
    Ok(())
}

/// A fresh directory under `parent`, removed on drop (also on an error).
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> Result<()> {
    let parent = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let work = WorkDir(parent.join(format!("electrode-storage-bench-{}", std::process::id())));
    std::fs::create_dir_all(&work.0).with_context(|| format!("cannot create {}", work.0.display()))?;
    println!("in {}", work.0.display());
    group_commit(&work.0)?;
    superblock_stores(&work.0)?;
    snapshot(&work.0)
}
