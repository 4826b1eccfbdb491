//! A replica's data directory (issue 22, Deliver item 1): where everything it
//! keeps on disk lives, claimed by one process at a time and marked with the
//! identity of the replica it belongs to.
//!
//! Design decisions (read before building on this):
//! - **Where**: `--data-dir DIR`, or [`default_data_dir`] =
//!   `STATE_DIR/cluster-<id>/replica-<index>` under [`DEFAULT_STATE_DIR`], so
//!   replicas of one or several clusters on one host never share one.
//! - **Created** (with missing parents, mode 0700, each new entry's parent
//!   synced) only when the caller says this may be a first start (`create`);
//!   otherwise a missing directory or identity is an error: a restart must
//!   never be mistaken for a first start (etcd's `new`/`existing` lesson).
//! - **Lock**: `DIR/lock`, held with `flock(LOCK_EX | LOCK_NB)` for the life
//!   of the [`DataDir`] and released by the kernel when the process dies, so
//!   a stale lock file after `kill -9` never blocks a restart. flock, not
//!   fcntl locks: a flock belongs to the open file description, so a second
//!   open in the same process conflicts too (tested) and closing some other
//!   descriptor of the file does not drop it. The file is never removed
//!   (removing it would let two processes lock two different inodes). Not
//!   safe on NFS. libc's `flock` rather than `File::try_lock` because the
//!   crate's rust-version (1.85) predates it.
//! - **Identity record** `DIR/identity` (framed and replaced by
//!   [`super::atomic`]): cluster id, replica index, replica count, and the
//!   configuration's digest ([`config_digest`]), written at the first start,
//!   compared at every later one; a mismatch is one line naming what differs.
//!   A corrupt record is refused with its checksum error, never rewritten.
//!   Changing any replica's address or `f` changes the digest, so such a
//!   directory is refused: reconfiguration is not supported.
//! - **Foreign directories**: an existing non-empty directory without an
//!   identity record is refused, before anything is created in it, unless
//!   all it holds is our own `lock` and `identity.tmp` (a first start that
//!   died before its identity record's rename).
//! - **fresh()** is true when this open wrote the identity: a first start.
//!   Files other modules keep here are theirs to name; `lock`, `identity`
//!   and `identity.tmp` are taken.

use super::atomic::{self, read_checked, sync_dir, write_record};
use anyhow::{anyhow, bail, Result};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where replicas keep their data directories unless told otherwise (see
/// [`default_data_dir`]).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/electrode";
/// The lock file, held by the process using the directory.
pub const LOCK_FILE: &str = "lock";
/// The identity record.
pub const IDENTITY_FILE: &str = "identity";

const IDENTITY_MAGIC: [u8; atomic::MAGIC_LEN] = *b"ELTRD-ID";
const IDENTITY_VERSION: u32 = 1;
/// cluster_id u32 | replica_index u8 | replica_count u8 | reserved [2] (zero) |
/// config_digest u64.
const IDENTITY_LEN: usize = 16;

/// Whose a data directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: u32,
    pub replica_index: u8,
    pub replica_count: u8,
    /// [`config_digest`] of the configuration the directory was made for.
    pub config_digest: u64,
}

impl Identity {
    fn encode(&self) -> [u8; IDENTITY_LEN] {
        let mut bytes = [0u8; IDENTITY_LEN];
        bytes[0..4].copy_from_slice(&self.cluster_id.to_le_bytes());
        bytes[4] = self.replica_index;
        bytes[5] = self.replica_count;
        bytes[8..16].copy_from_slice(&self.config_digest.to_le_bytes());
        bytes
    }

    /// `payload` passed its checksum, so a wrong length or reserved byte is a
    /// format this build does not know rather than corruption.
    fn decode(path: &Path, payload: &[u8]) -> Result<Identity> {
        let shown = path.display();
        let record_offset = atomic::HEADER_LEN;
        if payload.len() != IDENTITY_LEN {
            bail!(
                "{shown}: byte {record_offset}: identity payload is {} bytes, not {IDENTITY_LEN}",
                payload.len()
            );
        }
        if payload[6..8] != [0, 0] {
            bail!("{shown}: byte {}: reserved bytes are not zero", record_offset + 6);
        }
        Ok(Identity {
            cluster_id: u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes")),
            replica_index: payload[4],
            replica_count: payload[5],
            config_digest: u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes")),
        })
    }
}

/// The digest of a cluster configuration stored in each replica's identity
/// record: xxh3-64 over a canonical encoding, all integers little-endian:
/// the tag `electrode-config-v1`, `cluster_id` u32, `f` u64, the number of
/// addresses u64, then per address in replica-index order: family u8 (4 or
/// 6), the address's octets (4 or 16), port u16. IPv6 flow info and scope id
/// are left out. The encoding is on disk (through the digest): changing it
/// makes every existing directory look foreign; the test pins its value.
pub fn config_digest(addresses: &[SocketAddr], f: usize, cluster_id: u32) -> u64 {
    let mut bytes = Vec::with_capacity(64 + addresses.len() * 19);
    bytes.extend_from_slice(b"electrode-config-v1");
    bytes.extend_from_slice(&cluster_id.to_le_bytes());
    bytes.extend_from_slice(&(f as u64).to_le_bytes());
    bytes.extend_from_slice(&(addresses.len() as u64).to_le_bytes());
    for address in addresses {
        match address {
            SocketAddr::V4(v4) => {
                bytes.push(4);
                bytes.extend_from_slice(&v4.ip().octets());
            }
            SocketAddr::V6(v6) => {
                bytes.push(6);
                bytes.extend_from_slice(&v6.ip().octets());
            }
        }
        bytes.extend_from_slice(&address.port().to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// `state_dir/cluster-<id>/replica-<index>`: the data directory a replica
/// uses when not given one.
pub fn default_data_dir(state_dir: &Path, cluster_id: u32, replica_index: u8) -> PathBuf {
    state_dir.join(format!("cluster-{cluster_id}")).join(format!("replica-{replica_index}"))
}

/// An open, locked data directory whose identity matched (or was just
/// written). The lock is held until this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    identity: Identity,
    fresh: bool,
    /// Holds the flock; closing it releases it.
    _lock: File,
}

impl DataDir {
    /// Opens the data directory `path` for the replica `identity`: creates it
    /// and its identity record if `create` allows (a first start), takes its
    /// lock, checks its identity. Every error is one line.
    pub fn open(path: &Path, identity: &Identity, create: bool) -> Result<DataDir> {
        assert!(identity.replica_index < identity.replica_count, "{identity:?}");
        let shown = path.display();
        match fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => bail!("data directory {shown} is not a directory"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    bail!("data directory {shown} does not exist, and this start may not create one (not a first start)");
                }
                create_directory(path)?;
            }
            Err(e) => bail!("data directory {shown}: {e}"),
        }
        // Before the lock file is created: never drop a file into someone
        // else's directory.
        refuse_if_foreign(path)?;
        let lock = lock(path)?;

        let identity_path = path.join(IDENTITY_FILE);
        let exists = match fs::symlink_metadata(&identity_path) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => bail!("{}: {e}", identity_path.display()),
        };
        let fresh = if exists {
            let payload = read_checked(&identity_path, &IDENTITY_MAGIC, IDENTITY_VERSION, IDENTITY_LEN)?;
            let stored = Identity::decode(&identity_path, &payload)?;
            check_identity(path, &stored, identity)?;
            false
        } else {
            // Again under the lock, in case it changed since.
            refuse_if_foreign(path)?;
            if !create {
                bail!("data directory {shown} has no identity record, and this start may not create one (not a first start)");
            }
            write_record(path, IDENTITY_FILE, &IDENTITY_MAGIC, IDENTITY_VERSION, &identity.encode())?;
            true
        };
        Ok(DataDir { path: path.to_path_buf(), identity: *identity, fresh, _lock: lock })
    }

    /// The directory, as given to [`DataDir::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity it was opened with (equal to the stored one).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// True when this open wrote the identity record: a first start, with
    /// nothing else on disk yet.
    pub fn fresh(&self) -> bool {
        self.fresh
    }
}

/// Creates `path` and its missing parents (mode 0700), then syncs the parent
/// of each new directory so the new entries survive a power cut.
fn create_directory(path: &Path) -> Result<()> {
    let missing: Vec<&Path> = path
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .take_while(|a| fs::metadata(a).is_err())
        .collect();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| anyhow!("data directory {}: cannot create: {e}", path.display()))?;
    for dir in missing {
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

/// Refuses a directory that holds files but no identity record, unless they
/// are our own lock and a first start's unfinished identity record.
fn refuse_if_foreign(path: &Path) -> Result<()> {
    let shown = path.display();
    let entries = fs::read_dir(path).map_err(|e| anyhow!("data directory {shown}: cannot list: {e}"))?;
    let identity_temp = atomic::temp_name(IDENTITY_FILE);
    let mut foreign = false;
    for entry in entries {
        let entry = entry.map_err(|e| anyhow!("data directory {shown}: cannot list: {e}"))?;
        let name = entry.file_name();
        if name == IDENTITY_FILE {
            return Ok(());
        }
        foreign |= name != LOCK_FILE && name != identity_temp.as_str();
    }
    if foreign {
        bail!("{shown} is not an electrode data directory (no identity record); refusing to use it");
    }
    Ok(())
}

/// Opens (creating if needed) and locks `path/lock`.
fn lock(path: &Path) -> Result<File> {
    let lock_path = path.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| anyhow!("{}: cannot open lock file: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own, no memory passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "data directory {} is in use by another process (lock {} held)",
                path.display(),
                lock_path.display()
            );
        }
        bail!("{}: cannot lock: {e}", lock_path.display());
    }
    Ok(file)
}

/// One line naming the first field that differs.
fn check_identity(path: &Path, stored: &Identity, wanted: &Identity) -> Result<()> {
    let shown = path.display();
    if (stored.cluster_id, stored.replica_index) != (wanted.cluster_id, wanted.replica_index) {
        bail!(
            "data directory {shown} belongs to cluster {} replica {}, not cluster {} replica {}",
            stored.cluster_id,
            stored.replica_index,
            wanted.cluster_id,
            wanted.replica_index
        );
    }
    if stored.replica_count != wanted.replica_count {
        bail!(
            "data directory {shown} was made for a cluster of {} replicas, not {}; use the directory of this configuration or a new one",
            stored.replica_count,
            wanted.replica_count
        );
    }
    if stored.config_digest != wanted.config_digest {
        bail!(
            "data directory {shown} was made for another configuration (digest {:016x}, this one's is {:016x}); use the directory of this configuration or a new one",
            stored.config_digest,
            wanted.config_digest
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::atomic::{encode_record, write_atomically_crashing, CrashAt};
    use crate::storage::testing::{entries, one_line_error, TestDir};
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn identity(cluster_id: u32, replica_index: u8) -> Identity {
        Identity { cluster_id, replica_index, replica_count: 3, config_digest: 0x1234_5678_9abc_def0 }
    }

    #[test]
    fn first_open_creates_the_directory_and_its_identity_and_later_opens_check_it() {
        let root = TestDir::new("datadir-create");
        let path = root.path.join("state/cluster-7/replica-1");
        let first = DataDir::open(&path, &identity(7, 1), true).unwrap();
        assert!(first.fresh());
        assert_eq!(first.path(), path);
        assert_eq!(*first.identity(), identity(7, 1));
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(entries(&path), [IDENTITY_FILE, LOCK_FILE]);
        drop(first);

        let again = DataDir::open(&path, &identity(7, 1), true).unwrap();
        assert!(!again.fresh());
        drop(again);
        let restart = DataDir::open(&path, &identity(7, 1), false).unwrap();
        assert!(!restart.fresh());
    }

    #[test]
    fn an_existing_empty_directory_is_taken_at_a_first_start() {
        let root = TestDir::new("datadir-empty");
        let opened = DataDir::open(&root.path, &identity(7, 0), true).unwrap();
        assert!(opened.fresh());
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_lives_even_in_the_same_process() {
        let root = TestDir::new("datadir-lock");
        let path = root.path.join("d");
        let first = DataDir::open(&path, &identity(7, 1), true).unwrap();
        let text = one_line_error(DataDir::open(&path, &identity(7, 1), true));
        assert_eq!(
            text,
            format!(
                "data directory {} is in use by another process (lock {} held)",
                path.display(),
                path.join("lock").display()
            )
        );
        // The refused open closed its own descriptor of the lock file: with
        // fcntl locks that would have released ours, with flock it does not.
        let again = one_line_error(DataDir::open(&path, &identity(7, 1), true));
        assert_eq!(again, text);
        drop(first);
        let second = DataDir::open(&path, &identity(7, 1), true).unwrap();
        assert!(!second.fresh());
    }

    #[test]
    fn another_process_cannot_take_the_lock_while_it_is_held() {
        let root = TestDir::new("datadir-lock-process");
        let opened = DataDir::open(&root.path, &identity(7, 1), true).unwrap();
        let lock_path = root.path.join(LOCK_FILE);
        // util-linux's flock(1), if installed: -n fails with 1 at once.
        let try_lock = || Command::new("flock").arg("-n").arg(&lock_path).arg("true").status();
        let Ok(held) = try_lock() else {
            eprintln!(
                "flock(1) not installed: the cross-process lock is covered only by the in-process test"
            );
            return;
        };
        assert_eq!(held.code(), Some(1), "flock -n got a lock we hold");
        drop(opened);
        assert!(try_lock().unwrap().success(), "the lock outlived its DataDir");
    }

    #[test]
    fn another_replicas_or_clusters_directory_is_refused_naming_the_field() {
        let root = TestDir::new("datadir-identity");
        let shown = root.path.display().to_string();
        drop(DataDir::open(&root.path, &identity(7, 2), true).unwrap());

        let text = one_line_error(DataDir::open(&root.path, &identity(7, 1), true));
        assert_eq!(
            text,
            format!("data directory {shown} belongs to cluster 7 replica 2, not cluster 7 replica 1")
        );
        let text = one_line_error(DataDir::open(&root.path, &identity(8, 2), true));
        assert_eq!(
            text,
            format!("data directory {shown} belongs to cluster 7 replica 2, not cluster 8 replica 2")
        );

        let five = Identity { replica_count: 5, ..identity(7, 2) };
        let text = one_line_error(DataDir::open(&root.path, &five, true));
        assert_eq!(
            text,
            format!(
                "data directory {shown} was made for a cluster of 3 replicas, not 5; use the directory of this configuration or a new one"
            )
        );

        let other = Identity { config_digest: 0xff, ..identity(7, 2) };
        let text = one_line_error(DataDir::open(&root.path, &other, true));
        assert_eq!(
            text,
            format!(
                "data directory {shown} was made for another configuration (digest 123456789abcdef0, this one's is 00000000000000ff); use the directory of this configuration or a new one"
            )
        );
        // Refusals wrote nothing: the right replica still opens it.
        assert!(!DataDir::open(&root.path, &identity(7, 2), false).unwrap().fresh());
    }

    #[test]
    fn a_foreign_directory_is_refused_and_left_untouched() {
        let root = TestDir::new("datadir-foreign");
        fs::write(root.path.join("notes.txt"), "mine").unwrap();
        let text = one_line_error(DataDir::open(&root.path, &identity(7, 1), true));
        assert_eq!(
            text,
            format!(
                "{} is not an electrode data directory (no identity record); refusing to use it",
                root.path.display()
            )
        );
        assert_eq!(entries(&root.path), ["notes.txt"], "no lock file dropped into it");
    }

    #[test]
    fn our_own_lock_and_an_unfinished_identity_record_are_not_foreign() {
        let root = TestDir::new("datadir-ours");
        fs::write(root.path.join(LOCK_FILE), "").unwrap();
        assert!(DataDir::open(&root.path, &identity(7, 1), true).unwrap().fresh());

        // A first start that lost power at each step of its identity write.
        for crash_at in CrashAt::ALL {
            let root = TestDir::new("datadir-first-crash");
            let record = encode_record(&IDENTITY_MAGIC, IDENTITY_VERSION, &identity(7, 1).encode());
            write_atomically_crashing(&root.path, IDENTITY_FILE, &record, crash_at).unwrap();
            let opened = DataDir::open(&root.path, &identity(7, 1), true).unwrap();
            let renamed = matches!(crash_at, CrashAt::AfterRename | CrashAt::AfterDirSync);
            assert_eq!(opened.fresh(), !renamed, "{crash_at:?}");
            assert_eq!(entries(&root.path), [IDENTITY_FILE, LOCK_FILE], "{crash_at:?}");
        }
    }

    #[test]
    fn without_create_a_missing_or_empty_directory_is_refused() {
        let root = TestDir::new("datadir-nocreate");
        let missing = root.path.join("missing");
        let text = one_line_error(DataDir::open(&missing, &identity(7, 1), false));
        assert_eq!(
            text,
            format!(
                "data directory {} does not exist, and this start may not create one (not a first start)",
                missing.display()
            )
        );
        assert!(!missing.exists());
        let text = one_line_error(DataDir::open(&root.path, &identity(7, 1), false));
        assert_eq!(
            text,
            format!(
                "data directory {} has no identity record, and this start may not create one (not a first start)",
                root.path.display()
            )
        );
        assert!(!root.path.join(IDENTITY_FILE).exists());
    }

    #[test]
    fn a_corrupt_identity_record_is_refused_and_never_rewritten() {
        let root = TestDir::new("datadir-corrupt");
        drop(DataDir::open(&root.path, &identity(7, 1), true).unwrap());
        let identity_path = root.path.join(IDENTITY_FILE);
        let good = fs::read(&identity_path).unwrap();
        for position in 0..good.len() {
            let mut corrupt = good.clone();
            corrupt[position] ^= 0x10;
            fs::write(&identity_path, &corrupt).unwrap();
            let text = one_line_error(DataDir::open(&root.path, &identity(7, 1), true));
            assert!(text.starts_with(&format!("{}: byte ", identity_path.display())), "{text}");
            assert_eq!(fs::read(&identity_path).unwrap(), corrupt, "rewritten");
        }
        fs::write(&identity_path, &good[..good.len() - 3]).unwrap();
        let text = one_line_error(DataDir::open(&root.path, &identity(7, 1), true));
        assert!(text.contains("torn write"), "{text}");
        // A valid record with a nonzero reserved byte: a format we do not know.
        let mut payload = identity(7, 1).encode();
        payload[6] = 1;
        fs::write(&identity_path, encode_record(&IDENTITY_MAGIC, IDENTITY_VERSION, &payload)).unwrap();
        let text = one_line_error(DataDir::open(&root.path, &identity(7, 1), true));
        assert_eq!(text, format!("{}: byte 22: reserved bytes are not zero", identity_path.display()));
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_refused() {
        let root = TestDir::new("datadir-file");
        let path = root.path.join("d");
        fs::write(&path, "").unwrap();
        let text = one_line_error(DataDir::open(&path, &identity(7, 1), true));
        assert_eq!(text, format!("data directory {} is not a directory", path.display()));
    }

    #[test]
    fn default_directories_differ_per_cluster_and_replica() {
        let state = Path::new(DEFAULT_STATE_DIR);
        assert_eq!(default_data_dir(state, 7, 1), Path::new("/var/lib/electrode/cluster-7/replica-1"));
        let mut all = Vec::new();
        for cluster_id in [7, 8, 70] {
            for replica_index in 0..3 {
                all.push(default_data_dir(state, cluster_id, replica_index));
            }
        }
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count);
    }

    #[test]
    fn the_config_digest_is_pinned_and_sees_every_input() {
        let addresses: Vec<SocketAddr> = ["10.77.0.11:7001", "10.77.0.12:7001", "10.77.0.13:7001"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let digest = config_digest(&addresses, 1, 7);
        // On disk in every identity record: a change here makes every
        // existing data directory "another configuration".
        assert_eq!(digest, PINNED_DIGEST, "config digest encoding changed: {digest:#018x}");
        assert_eq!(config_digest(&addresses, 1, 7), digest);
        assert_ne!(config_digest(&addresses, 1, 8), digest);
        assert_ne!(config_digest(&addresses, 2, 7), digest);
        assert_ne!(config_digest(&addresses[..2], 1, 7), digest);
        let mut swapped = addresses.clone();
        swapped.swap(0, 1);
        assert_ne!(config_digest(&swapped, 1, 7), digest);
        let mut port = addresses.clone();
        port[2].set_port(7002);
        assert_ne!(config_digest(&port, 1, 7), digest);
        let mapped: Vec<SocketAddr> = ["[::ffff:10.77.0.11]:7001", "10.77.0.12:7001", "10.77.0.13:7001"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_ne!(config_digest(&mapped, 1, 7), digest);
    }

    const PINNED_DIGEST: u64 = 0xb8fb_f146_5b92_af89;
}
