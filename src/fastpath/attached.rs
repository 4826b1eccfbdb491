//! What the kernel says is attached to an interface: the electrode programs
//! there (attached by another process, nothing pinned) and their `counters`
//! map. The XDP slots of the interface come from netlink (bpf_xdp_query),
//! the TC egress filter from our fixed handle/priority (bpf_tc_query), and
//! the map from the program's own map ids. `electrode stats` reads counters
//! this way; [`super::attach`] uses the same queries to find a stale
//! program before it attaches.
//!
//! Both programs of one loaded object share one `counters` map, so the
//! totals count each distinct map once.

use std::ffi::CStr;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapHandle};

use super::counters::Counters;

/// tc filter handle of `electrode_tc` ("e1ec"): a filter found at this
/// handle and [`TC_PRIORITY`] is ours, e.g. left by a kill -9'd run.
/// Defined here, in every build, because `electrode stats` looks for the
/// filter in any build; `broadcast` attaches it there.
pub const TC_HANDLE: u32 = 0xe1ec;
/// tc filter priority of `electrode_tc`: 1, so it runs before other
/// egress filters and they see the rewritten copies.
pub const TC_PRIORITY: u32 = 1;

/// Kernel names of the electrode programs (BPF_OBJ_NAME_LEN is 16, and
/// both fit).
pub(super) const XDP_PROG_NAME: &str = "electrode_xdp";
const TC_PROG_NAME: &str = "electrode_tc";
const COUNTERS_MAP_NAME: &str = "counters";

/// Where a program found on the interface is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP in the driver.
    XdpNative,
    /// XDP after the skb is built.
    XdpGeneric,
    /// XDP offloaded to the NIC.
    XdpOffload,
    /// clsact egress filter at [`TC_HANDLE`]/[`TC_PRIORITY`].
    TcEgress,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::XdpNative => f.write_str("xdp native"),
            Hook::XdpGeneric => f.write_str("xdp generic"),
            Hook::XdpOffload => f.write_str("xdp offload"),
            Hook::TcEgress => write!(f, "tc egress handle {TC_HANDLE:#x} priority {TC_PRIORITY}"),
        }
    }
}

/// One electrode program attached to the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedProgram {
    pub hook: Hook,
    /// Kernel program name (`electrode_xdp` or `electrode_tc`).
    pub name: String,
    pub prog_id: u32,
    /// Id of the program's `counters` map.
    pub counters_map_id: u32,
}

/// The electrode programs attached to one interface of the calling
/// thread's network namespace.
#[derive(Clone, Debug)]
pub struct InterfacePrograms {
    pub iface: String,
    pub ifindex: u32,
    pub programs: Vec<AttachedProgram>,
}

impl InterfacePrograms {
    /// Looks up `iface` and the electrode programs on it. Errors when the
    /// interface does not exist or carries no electrode program (naming
    /// any foreign program found instead).
    pub fn find(iface: &str) -> Result<InterfacePrograms> {
        let ifindex =
            nix::net::if_::if_nametoindex(iface).with_context(|| format!("no interface {iface:?}"))?;
        let ifindex_c =
            i32::try_from(ifindex).with_context(|| format!("ifindex {ifindex} does not fit a C int"))?;
        let mut candidates =
            xdp_prog_ids(ifindex_c).with_context(|| format!("query XDP programs of {iface}"))?;
        if let Some(id) =
            tc_egress_prog_id(ifindex_c).with_context(|| format!("query tc egress of {iface}"))?
        {
            candidates.push((Hook::TcEgress, id));
        }

        let mut programs = Vec::new();
        let mut foreign = Vec::new();
        for (hook, prog_id) in candidates {
            let want = if hook == Hook::TcEgress { TC_PROG_NAME } else { XDP_PROG_NAME };
            let info = prog_info(prog_id).with_context(|| format!("info of prog id {prog_id} on {iface}"))?;
            if info.name != want {
                foreign.push(format!("{hook} prog {:?} (id {prog_id})", info.name));
                continue;
            }
            let counters_map_id = counters_map_id(&info.map_ids)
                .with_context(|| format!("prog {want} (id {prog_id}) on {iface}"))?;
            programs.push(AttachedProgram { hook, name: info.name, prog_id, counters_map_id });
        }
        if programs.is_empty() {
            if foreign.is_empty() {
                bail!("no electrode program attached to {iface}");
            }
            bail!("no electrode program attached to {iface} (found {})", foreign.join(", "));
        }
        Ok(InterfacePrograms { iface: iface.to_string(), ifindex, programs })
    }

    /// The distinct `counters` maps of the programs, in program order.
    pub fn counters_map_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::new();
        for program in &self.programs {
            if !ids.contains(&program.counters_map_id) {
                ids.push(program.counters_map_id);
            }
        }
        ids
    }

    /// Sums the `counters` maps of the programs (each distinct map once).
    pub fn read_counters(&self) -> Result<Counters> {
        let mut total = Counters::default();
        for map_id in self.counters_map_ids() {
            let map = MapHandle::from_map_id(map_id)
                .with_context(|| format!("open map counters (id {map_id}) of {}", self.iface))?;
            total.add_map(&map).with_context(|| format!("map id {map_id} of {}", self.iface))?;
        }
        Ok(total)
    }
}

/// (hook, prog id) of every occupied XDP slot of `ifindex`.
pub(super) fn xdp_prog_ids(ifindex: i32) -> Result<Vec<(Hook, u32)>> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: `opts` is a valid bpf_xdp_query_opts whose `sz` is its own
    // size; libbpf writes only into it during the call.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex, 0, &mut opts) };
    if rc < 0 {
        return Err(std::io::Error::from_raw_os_error(-rc)).context("bpf_xdp_query");
    }
    let slots = [
        (Hook::XdpNative, opts.drv_prog_id),
        (Hook::XdpGeneric, opts.skb_prog_id),
        (Hook::XdpOffload, opts.hw_prog_id),
    ];
    Ok(slots.into_iter().filter(|(_, id)| *id != 0).collect())
}

/// The prog id of the clsact egress filter at our handle/priority, if any.
fn tc_egress_prog_id(ifindex: i32) -> Result<Option<u32>> {
    let hook = libbpf_sys::bpf_tc_hook {
        sz: size_of::<libbpf_sys::bpf_tc_hook>() as libbpf_sys::size_t,
        ifindex,
        attach_point: libbpf_sys::BPF_TC_EGRESS,
        ..Default::default()
    };
    let mut opts = libbpf_sys::bpf_tc_opts {
        sz: size_of::<libbpf_sys::bpf_tc_opts>() as libbpf_sys::size_t,
        handle: TC_HANDLE,
        priority: TC_PRIORITY,
        ..Default::default()
    };
    // Without clsact the kernel refuses the query, and libbpf's default
    // printer would put that netlink message on stderr. Absence is an
    // answer here, so libbpf is muted for this one call.
    // SAFETY: `hook` and `opts` are valid and sized; libbpf reads `hook`
    // and writes only into `opts` during the call.
    let rc = libbpf_muted(|| unsafe { libbpf_sys::bpf_tc_query(&hook, &mut opts) });
    match rc {
        0 => Ok(Some(opts.prog_id)),
        // No filter there (ENOENT), or no clsact qdisc at all (EINVAL).
        rc if rc == -libc::ENOENT || rc == -libc::EINVAL => Ok(None),
        rc => Err(std::io::Error::from_raw_os_error(-rc)).context("bpf_tc_query"),
    }
}

pub(super) struct ProgInfo {
    pub(super) name: String,
    map_ids: Vec<u32>,
}

/// Name and map ids of the program with id `prog_id`.
pub(super) fn prog_info(prog_id: u32) -> Result<ProgInfo> {
    // SAFETY: bpf_prog_get_fd_by_id has no memory preconditions.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(prog_id) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd)).context("bpf_prog_get_fd_by_id");
    }
    // SAFETY: a non-negative return is a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };

    // First call: learn the name and how many maps; second: fetch their ids.
    let mut info = libbpf_sys::bpf_prog_info::default();
    get_info(&fd, &mut info)?;
    let mut map_ids = vec![0u32; info.nr_map_ids as usize];
    let mut with_maps = libbpf_sys::bpf_prog_info {
        nr_map_ids: info.nr_map_ids,
        map_ids: map_ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    get_info(&fd, &mut with_maps)?;
    // The program cannot gain maps after load, but never read past the buffer.
    map_ids.truncate((with_maps.nr_map_ids as usize).min(map_ids.len()));

    // SAFETY: the kernel NUL-terminates the name within BPF_OBJ_NAME_LEN.
    let name = unsafe { CStr::from_ptr(info.name.as_ptr()) }.to_string_lossy().into_owned();
    Ok(ProgInfo { name, map_ids })
}

fn get_info(fd: &OwnedFd, info: &mut libbpf_sys::bpf_prog_info) -> Result<()> {
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is a valid bpf_prog_info of `len` bytes; any array
    // pointer in it points to a buffer of the length it announces.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), info, &mut len) };
    if rc < 0 {
        return Err(std::io::Error::from_raw_os_error(-rc)).context("bpf_prog_get_info_by_fd");
    }
    Ok(())
}

/// The id of the map named `counters` among `map_ids`.
fn counters_map_id(map_ids: &[u32]) -> Result<u32> {
    for &map_id in map_ids {
        let map = MapHandle::from_map_id(map_id).with_context(|| format!("open map id {map_id}"))?;
        if map.name() == COUNTERS_MAP_NAME {
            return Ok(map_id);
        }
    }
    bail!("no map named {COUNTERS_MAP_NAME} among its {} maps", map_ids.len())
}

/// Runs `f` with libbpf's message printer off, then puts back exactly the
/// printer that was there. For calls whose failure is an expected answer
/// (a query for something that may be absent). Not for loads: the verifier
/// log is worth seeing.
pub(crate) fn libbpf_muted<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: libbpf_set_print only swaps a function pointer (None: no
    // printing); the previous one is restored before returning.
    let printer = unsafe { libbpf_sys::libbpf_set_print(None) };
    let result = f();
    // SAFETY: as above; `printer` came from libbpf itself.
    unsafe { libbpf_sys::libbpf_set_print(printer) };
    result
}
