//! Opening, configuring and loading the eBPF object.
//!
//! libbpf-rs skeletons borrow their `OpenObject` storage (`ElectrodeSkel<'obj>`
//! points into a caller-provided `MaybeUninit<OpenObject>`). A replica wants
//! one value that owns everything, so [`Loaded`] keeps that storage on the
//! heap next to the skeleton and frees it only after the skeleton is gone.

use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{OpenObject, ProgramInput};

use super::skel::{ElectrodeSkel, ElectrodeSkelBuilder};
use crate::wire::MAX_REPLICA_COUNT;

/// Read-only settings baked into the programs before load (the `rodata`
/// rows of the ownership table in `bpf/electrode.h`). They cannot change
/// afterwards: the verifier may have specialised code on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// UDP port the replicas listen on; other ports count as foreign.
    pub port: u16,
    /// Cluster id every header must carry.
    pub cluster_id: u32,
    /// Replicas in the cluster (2f + 1).
    pub replica_count: u32,
}

/// The loaded eBPF object: programs and maps, live in the kernel until this
/// value is dropped (attachments borrow it, so they go first).
pub struct Loaded {
    // `skel` borrows from `storage`: the `'static` is a promise kept by
    // `Drop`, which drops `skel` before freeing `storage`. Never hand out the
    // `'static`; accessors shorten it to `&self`.
    skel: ManuallyDrop<ElectrodeSkel<'static>>,
    // From `Box::into_raw`, so moving `Loaded` never moves the object and no
    // `Box` asserts uniqueness while the skeleton points into it.
    storage: NonNull<MaybeUninit<OpenObject>>,
    options: LoadOptions,
    /// Whether `replica_addrs` was written (once, before any arm).
    members_set: std::sync::atomic::AtomicBool,
    /// Whether a `FollowerPath` (the one consumer of `prepare_ring`) exists.
    #[cfg(feature = "fast_reply")]
    follower_path_taken: std::sync::atomic::AtomicBool,
    /// Whether an `IntakePath` (the one consumer of `intake_ring`) exists.
    #[cfg(feature = "fast_intake")]
    intake_path_taken: std::sync::atomic::AtomicBool,
    /// Interface `electrode_tc` is attached to (0: none), for the
    /// neighbour-table lookup of follower MACs.
    #[cfg(feature = "tc_broadcast")]
    tc_ifindex: std::sync::atomic::AtomicU32,
}

impl Loaded {
    /// Opens the skeleton, writes `options` into its rodata and loads it.
    pub fn load(options: LoadOptions) -> Result<Loaded> {
        ensure!(options.port != 0, "load eBPF object: UDP port 0 is not a port");
        ensure!(
            options.replica_count >= 1 && options.replica_count as usize <= MAX_REPLICA_COUNT,
            "load eBPF object: replica count {} is outside 1..={MAX_REPLICA_COUNT}",
            options.replica_count
        );

        let storage = NonNull::from(Box::leak(Box::new(MaybeUninit::<OpenObject>::uninit())));
        // SAFETY: `storage` is a fresh heap allocation that nothing else
        // references; the skeleton's borrow of it ends in `Drop` (or below,
        // on error) before it is freed.
        let object: &'static mut MaybeUninit<OpenObject> = unsafe { &mut *storage.as_ptr() };
        match open_and_load(object, options) {
            Ok(skel) => Ok(Loaded {
                skel: ManuallyDrop::new(skel),
                storage,
                options,
                members_set: std::sync::atomic::AtomicBool::new(false),
                #[cfg(feature = "fast_reply")]
                follower_path_taken: std::sync::atomic::AtomicBool::new(false),
                #[cfg(feature = "fast_intake")]
                intake_path_taken: std::sync::atomic::AtomicBool::new(false),
                #[cfg(feature = "tc_broadcast")]
                tc_ifindex: std::sync::atomic::AtomicU32::new(0),
            }),
            Err(error) => {
                // SAFETY: the failed open/load dropped everything that
                // borrowed `storage` (libbpf-rs drops the OpenObject inside
                // it on error), so it is ours again; a MaybeUninit needs no
                // drop of its contents.
                drop(unsafe { Box::from_raw(storage.as_ptr()) });
                Err(error)
            }
        }
    }

    /// The settings the programs were loaded with.
    pub fn options(&self) -> LoadOptions {
        self.options
    }

    pub(crate) fn members_set(&self) -> &std::sync::atomic::AtomicBool {
        &self.members_set
    }

    #[cfg(feature = "fast_reply")]
    pub(crate) fn follower_path_taken(&self) -> &std::sync::atomic::AtomicBool {
        &self.follower_path_taken
    }

    #[cfg(feature = "fast_intake")]
    pub(crate) fn intake_path_taken(&self) -> &std::sync::atomic::AtomicBool {
        &self.intake_path_taken
    }

    #[cfg(feature = "tc_broadcast")]
    pub(crate) fn tc_ifindex(&self) -> &std::sync::atomic::AtomicU32 {
        &self.tc_ifindex
    }

    /// The skeleton, for the rest of `fastpath`.
    pub(crate) fn skel(&self) -> &ElectrodeSkel<'_> {
        &self.skel
    }

    /// Runs `electrode_xdp` once on `frame` with BPF_PROG_TEST_RUN and
    /// returns its verdict (XDP_* action) and the frame as the program left
    /// it. Counters and other maps are updated as for a real packet (on the
    /// CPU the test run uses).
    pub fn test_run_xdp(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        // The program may grow the frame (bpf_xdp_adjust_head/tail); the
        // kernel refuses a test run whose output does not fit (ENOSPC), and a
        // test frame is at most one page, so one page of slack is enough.
        let mut data_out = vec![0u8; frame.len() + 4096];
        let input =
            ProgramInput { data_in: Some(frame), data_out: Some(&mut data_out), ..ProgramInput::default() };
        let output = self.skel.progs.electrode_xdp.test_run(input).with_context(|| {
            format!("BPF_PROG_TEST_RUN of prog electrode_xdp on a {}-byte frame", frame.len())
        })?;
        let Some(data) = output.data else {
            bail!("BPF_PROG_TEST_RUN of prog electrode_xdp returned no output data");
        };
        Ok((output.return_value, data.to_vec()))
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: `skel` is dropped exactly once, here, and before the
        // storage it borrows; `storage` came from `Box::leak` in `load` and
        // is freed exactly once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.skel);
            drop(Box::from_raw(self.storage.as_ptr()));
        }
    }
}

fn open_and_load(
    object: &'static mut MaybeUninit<OpenObject>,
    options: LoadOptions,
) -> Result<ElectrodeSkel<'static>> {
    let mut open = ElectrodeSkelBuilder::default()
        .open(object)
        .context("open eBPF object electrode.bpf.o (skeleton)")?;
    let Some(rodata) = open.maps.rodata_data.as_deref_mut() else {
        bail!("open eBPF object electrode.bpf.o: map .rodata is not memory-mapped");
    };
    rodata.electrode_port = options.port;
    rodata.cluster_id = options.cluster_id;
    rodata.replica_count = options.replica_count;
    open.load().context(
        "load eBPF object electrode.bpf.o into the kernel (needs root or CAP_BPF; \
         a verifier log is printed above on rejection)",
    )
}
