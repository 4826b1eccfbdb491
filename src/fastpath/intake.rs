//! fast_intake: the leader's request intake in the kernel (cargo feature
//! `fast_intake`).
//!
//! While armed, the XDP program copies every well-formed client Request
//! the socket would have delivered, with its source address, into the
//! `intake_ring` ring buffer and drops it from the stack. This module arms
//! and disarms it through the `intake_config` map and drains the ring; the
//! runtime feeds each [`IntakeRecord`] to the same code as a socket
//! datagram, with the record's source as the sender address. The rules and
//! the handover are the fast_intake section of `bpf/electrode.h`; in short:
//!
//! 1. [`IntakePath::arm`] with the view this replica leads in normal status
//!    and its own address;
//! 2. [`IntakePath::drain`] at every wake-up and before every other input;
//! 3. on any view or status change, [`IntakePath::disarm`]: the kernel stops
//!    taking requests and the ring is drained completely (no record can
//!    still be in flight when it returns); feed what it returns.
//!
//! The kernel never wakes the consumer: it takes requests into the ring
//! only while user space says it is awake ([`IntakePath::wake`]), and user
//! space sleeps only after [`IntakePath::may_sleep`] found the ring empty;
//! while it sleeps, requests go by the socket (electrode.h, "Wake-ups").

use std::collections::VecDeque;
use std::mem::{offset_of, size_of};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::{AsRawLibbpf, MapCore, MapFlags, RingBuffer, RingBufferBuilder};

use super::load::Loaded;
use super::skel::types::{electrode_intake_config, electrode_intake_record};
use crate::wire::consts::MAX_REQUEST_DATAGRAM;

/// Bytes of one `intake_config` value.
const CONFIG_LEN: usize = size_of::<electrode_intake_config>();
/// Bytes of one ring record (fixed: bpf_ringbuf_reserve needs a constant).
pub const RECORD_LEN: usize = size_of::<electrode_intake_record>();
/// The map has one entry.
const CONFIG_KEY: [u8; 4] = 0u32.to_ne_bytes();
/// How long a disarm waits for a CPU that reserved a ring record to submit
/// or discard it (a few instructions later, with softirqs off).
const RESERVED_RECORD_WAIT: Duration = Duration::from_millis(200);

/// What the kernel was armed with, read in one locked copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntakeConfig {
    /// Whether the kernel takes Requests.
    pub armed: bool,
    /// The view this replica leads; every record carries it.
    pub view: u64,
    /// The replica's own IPv4 address: requests must be sent to it.
    pub self_ip: Ipv4Addr,
}

impl IntakeConfig {
    fn encode(&self) -> [u8; CONFIG_LEN] {
        type C = electrode_intake_config;
        let mut value = [0u8; CONFIG_LEN];
        let mut put = |offset: usize, bytes: &[u8]| {
            value[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        // The lock bytes stay zero: a BPF_F_LOCK update never copies them.
        put(offset_of!(C, armed), &u32::from(self.armed).to_ne_bytes());
        put(offset_of!(C, view), &self.view.to_ne_bytes());
        put(offset_of!(C, self_ip), &self.self_ip.octets()); // network order
        value
    }

    fn decode(value: &[u8]) -> Result<IntakeConfig> {
        type C = electrode_intake_config;
        ensure!(
            value.len() == CONFIG_LEN,
            "map intake_config: value of {} bytes, want {CONFIG_LEN}",
            value.len()
        );
        let mut armed = [0u8; 4];
        armed.copy_from_slice(&value[offset_of!(C, armed)..][..4]);
        let mut view = [0u8; 8];
        view.copy_from_slice(&value[offset_of!(C, view)..][..8]);
        let mut ip = [0u8; 4];
        ip.copy_from_slice(&value[offset_of!(C, self_ip)..][..4]);
        Ok(IntakeConfig {
            armed: u32::from_ne_bytes(armed) != 0,
            view: u64::from_ne_bytes(view),
            self_ip: Ipv4Addr::from(ip),
        })
    }
}

/// One Request the kernel took off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntakeRecord {
    /// The view the kernel was armed for when it took it.
    pub view: u64,
    /// Source IPv4 address and UDP port: the sender, as recvfrom reports it.
    pub from: SocketAddrV4,
    /// The UDP payload, exactly as the socket would have delivered it.
    pub datagram: Vec<u8>,
}

/// The record in one ring sample, if its lengths are possible.
pub fn parse_record(record: &[u8]) -> Option<IntakeRecord> {
    type R = electrode_intake_record;
    if record.len() < RECORD_LEN {
        return None;
    }
    let mut view = [0u8; 8];
    view.copy_from_slice(&record[offset_of!(R, view)..][..8]);
    let mut ip = [0u8; 4];
    ip.copy_from_slice(&record[offset_of!(R, src_ip)..][..4]);
    let mut port = [0u8; 2];
    port.copy_from_slice(&record[offset_of!(R, src_port)..][..2]);
    let mut len = [0u8; 2];
    len.copy_from_slice(&record[offset_of!(R, len)..][..2]);
    let len = usize::from(u16::from_ne_bytes(len));
    if len > MAX_REQUEST_DATAGRAM as usize {
        return None;
    }
    let data = offset_of!(R, data);
    Some(IntakeRecord {
        view: u64::from_ne_bytes(view),
        from: SocketAddrV4::new(Ipv4Addr::from(ip), u16::from_be_bytes(port)),
        datagram: record.get(data..data + len)?.to_vec(),
    })
}

impl Loaded {
    /// Reads `intake_config` in one locked copy.
    pub fn intake_config(&self) -> Result<IntakeConfig> {
        let value = self
            .skel()
            .maps
            .intake_config
            .lookup(&CONFIG_KEY, MapFlags::LOCK)
            .context("read map intake_config[0] (BPF_F_LOCK)")?
            .context("read map intake_config[0]: no such entry")?;
        IntakeConfig::decode(&value)
    }

    fn write_intake_config(&self, config: &IntakeConfig) -> Result<()> {
        self.skel()
            .maps
            .intake_config
            .update(&CONFIG_KEY, &config.encode(), MapFlags::LOCK)
            .with_context(|| format!("write map intake_config[0] (BPF_F_LOCK): {config:?}"))
    }

    /// The leader's intake: arming, disarming and the ring consumer. At
    /// most one exists per [`Loaded`] at a time (one consumer position).
    pub fn intake_path(&self) -> Result<IntakePath<'_>> {
        ensure!(
            !self.intake_path_taken().swap(true, Ordering::AcqRel),
            "map intake_ring already has a consumer (one IntakePath per loaded object)"
        );
        match IntakePath::new(self) {
            Ok(path) => Ok(path),
            Err(error) => {
                self.intake_path_taken().store(false, Ordering::Release);
                Err(error)
            }
        }
    }
}

/// Records consumed from the ring and not yet handed out, in ring order.
#[derive(Default)]
struct Inbox {
    records: VecDeque<IntakeRecord>,
    /// Samples whose lengths are impossible (only a broken kernel side).
    undecodable: u64,
}

fn lock(inbox: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    // A poisoned lock only means a panic elsewhere while holding it.
    inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Arms, disarms and drains the intake of one [`Loaded`].
pub struct IntakePath<'obj> {
    loaded: &'obj Loaded,
    ring: RingBuffer<'static>,
    inbox: Arc<Mutex<Inbox>>,
    /// `electrode_intake_awake` in the object's mmapped .bss, shared with
    /// the kernel.
    awake: &'obj AtomicU32,
}

impl<'obj> IntakePath<'obj> {
    fn new(loaded: &'obj Loaded) -> Result<IntakePath<'obj>> {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let sink = Arc::clone(&inbox);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&loaded.skel().maps.intake_ring, move |sample: &[u8]| {
                let mut inbox = lock(&sink);
                match parse_record(sample) {
                    Some(record) => inbox.records.push_back(record),
                    None => inbox.undecodable += 1,
                }
                0
            })
            .context("consume map intake_ring")?;
        let ring = builder.build().context("mmap ring buffer intake_ring")?;
        let Some(bss) = loaded.skel().maps.bss_data.as_deref() else {
            bail!("eBPF object electrode.bpf.o: map .bss is not memory-mapped (electrode_intake_awake)");
        };
        let flag: *const u32 = &bss.electrode_intake_awake;
        // SAFETY: the field lives in the .bss mmap as long as `loaded`; it
        // is 4-aligned (u32 in a #[repr(C)] struct), only ever accessed
        // through this atomic on the user side (the kernel reads it), and
        // AtomicU32 has u32's layout.
        let awake = unsafe { AtomicU32::from_ptr(flag.cast_mut()) };
        Ok(IntakePath { loaded, ring, inbox, awake })
    }

    /// Lets the kernel take Requests sent to `self_ip`, tagged with `view`.
    /// Refused while armed (disarm first: records of the old arm must be
    /// drained before a new view's) and before the replica address table
    /// is written.
    pub fn arm(&self, view: u64, self_ip: Ipv4Addr) -> Result<()> {
        self.loaded.ensure_members("arm fast intake")?;
        let current = self.loaded.intake_config()?;
        ensure!(!current.armed, "arm fast intake: already armed ({current:?}); disarm and drain first");
        self.loaded.write_intake_config(&IntakeConfig { armed: true, view, self_ip })
    }

    /// Stops the kernel from taking Requests (one locked write), then
    /// drains the ring completely, waiting for a CPU between its re-check
    /// and its submit. Returns every record not handed out yet.
    pub fn disarm(&mut self) -> Result<Vec<IntakeRecord>> {
        let current = self.loaded.intake_config()?;
        self.loaded.write_intake_config(&IntakeConfig { armed: false, ..current })?;
        self.drain_completely()?;
        Ok(lock(&self.inbox).records.drain(..).collect())
    }

    /// User space is awake: the kernel puts requests in the ring (without
    /// waking anyone) from now on. Call on every wake-up, before reading
    /// the ring or the socket.
    pub fn wake(&self) {
        self.awake.store(1, Ordering::SeqCst);
    }

    /// About to sleep: the kernel passes requests to the socket from now
    /// on. Returns false (and stays awake) when a record was reserved or
    /// submitted meanwhile: drain instead of sleeping. The handshake's
    /// other half is in bpf/intake.h (electrode.h, "Wake-ups").
    pub fn may_sleep(&self) -> bool {
        self.awake.store(0, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.pending() {
            self.wake();
            return false;
        }
        true
    }

    /// Whether the ring holds anything not consumed yet: a record reserved
    /// (even one not submitted yet), submitted or discarded.
    pub fn pending(&self) -> bool {
        // SAFETY: ring 0 exists (new added exactly one map) and lives as
        // long as `self.ring`; the position reads are atomic loads in libbpf.
        unsafe {
            let ring = libbpf_sys::ring_buffer__ring(self.ring.as_libbpf_object().as_ptr(), 0);
            !ring.is_null() && libbpf_sys::ring__consumer_pos(ring) != libbpf_sys::ring__producer_pos(ring)
        }
    }

    /// Records the kernel submitted, without blocking, in ring order.
    pub fn drain(&mut self) -> Result<Vec<IntakeRecord>> {
        self.consume()?;
        Ok(lock(&self.inbox).records.drain(..).collect())
    }

    /// Samples skipped because their lengths were impossible.
    pub fn undecodable(&self) -> u64 {
        lock(&self.inbox).undecodable
    }

    /// The ring map's fd. The kernel submits without wake-ups (see
    /// [`IntakePath::may_sleep`]), so waiting on it alone would miss
    /// records; the runtime registers it with epoll only as a backstop.
    pub fn ring_fd(&self) -> BorrowedFd<'_> {
        self.loaded.skel().maps.intake_ring.as_fd()
    }

    fn consume(&self) -> Result<()> {
        let consumed = self.ring.consume_raw();
        if consumed < 0 {
            bail!("consume ring buffer intake_ring: {}", std::io::Error::from_raw_os_error(-consumed));
        }
        Ok(())
    }

    /// Consumes until the consumer position reaches the producer position.
    fn drain_completely(&self) -> Result<()> {
        // SAFETY: ring 0 exists (build added exactly one map) and lives as
        // long as `self.ring`; the position reads are atomic loads in libbpf.
        let ring = unsafe { libbpf_sys::ring_buffer__ring(self.ring.as_libbpf_object().as_ptr(), 0) };
        ensure!(!ring.is_null(), "ring buffer intake_ring: libbpf has no ring 0");
        let deadline = Instant::now() + RESERVED_RECORD_WAIT;
        loop {
            self.consume()?;
            // SAFETY: `ring` is valid (above).
            let (consumer, producer) =
                unsafe { (libbpf_sys::ring__consumer_pos(ring), libbpf_sys::ring__producer_pos(ring)) };
            if consumer == producer {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "drain ring buffer intake_ring: a record reserved at position {consumer} \
                     (producer at {producer}) was neither submitted nor discarded within {:?}",
                    RESERVED_RECORD_WAIT
                );
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for IntakePath<'_> {
    fn drop(&mut self) {
        self.loaded.intake_path_taken().store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_config_survives_encode_and_decode() {
        let config =
            IntakeConfig { armed: true, view: 0x0102_0304_0506_0708, self_ip: Ipv4Addr::new(10, 1, 2, 3) };
        let value = config.encode();
        assert_eq!(value.len(), 24, "bpf/electrode.h asserts 24 bytes");
        assert_eq!(&value[..4], &[0; 4], "lock bytes are never written");
        assert_eq!(&value[16..20], &[10, 1, 2, 3], "self_ip in network order");
        assert_eq!(IntakeConfig::decode(&value).expect("decodes"), config);
        assert!(IntakeConfig::decode(&value[..23]).is_err());
    }

    #[test]
    fn records_with_impossible_lengths_are_rejected() {
        assert_eq!(RECORD_LEN, 1488);
        let mut sample = vec![0u8; RECORD_LEN];
        sample[..8].copy_from_slice(&9u64.to_ne_bytes());
        sample[8..12].copy_from_slice(&[10, 0, 0, 7]);
        sample[12..14].copy_from_slice(&4242u16.to_be_bytes());
        sample[14..16].copy_from_slice(&5u16.to_ne_bytes());
        sample[16..21].copy_from_slice(b"hello");
        let record = parse_record(&sample).expect("a possible record");
        assert_eq!(record.view, 9);
        assert_eq!(record.from, SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 7), 4242));
        assert_eq!(record.datagram, b"hello");
        sample[14..16].copy_from_slice(&(MAX_REQUEST_DATAGRAM as u16 + 1).to_ne_bytes());
        assert_eq!(parse_record(&sample), None);
        assert_eq!(parse_record(&sample[..RECORD_LEN - 1]), None);
    }
}
