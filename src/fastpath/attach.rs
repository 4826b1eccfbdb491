//! Attaching `electrode_xdp` to an interface, with a guard that detaches it.
//!
//! Native (driver) XDP is tried first through a bpf_link: the kernel detaches
//! a link when its last fd closes, so even a crashed replica leaves no
//! program behind. If that fails (driver without XDP support that refuses,
//! MTU too large for native XDP, old kernel), the program is attached in
//! generic (SKB) mode through netlink, which outlives the process, so the
//! guard detaches it explicitly in `Drop`.

use std::fmt;
use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use libbpf_rs::{Link, Program, Xdp, XdpFlags};

use super::load::Loaded;

/// tc filter handle of `electrode_tc` ("e1ec"): a filter found at this
/// handle and [`TC_PRIORITY`] is ours, e.g. left by a kill -9'd run.
pub const TC_HANDLE: u32 = 0xe1ec;
/// tc filter priority of `electrode_tc`: 1, so it runs before other
/// egress filters and they see the rewritten copies.
pub const TC_PRIORITY: u32 = 1;

/// Where in the receive path the program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before an skb exists.
    Native,
    /// After the skb is built (works on any device, slower).
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// `electrode_xdp` attached to one interface; dropping this detaches it.
/// Borrows the [`Loaded`] object so the program outlives its attachment.
#[must_use = "dropping the attachment detaches the program at once"]
pub struct XdpAttachment<'obj> {
    ifindex: u32,
    mode: XdpMode,
    how: How<'obj>,
}

enum How<'obj> {
    /// Closing the link detaches.
    Link(Link),
    /// Netlink attachment in SKB mode; detached by hand.
    Netlink(Xdp<'obj>),
    /// Already detached by [`XdpAttachment::detach`].
    Detached,
}

impl XdpAttachment<'_> {
    /// Interface the program is attached to (in the caller's netns).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode the kernel actually attached in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Detaches now, reporting failure (`Drop` can only print it).
    pub fn detach(mut self) -> Result<()> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.how, How::Detached) {
            How::Link(link) => link.detach().with_context(|| {
                format!("detach XDP link of prog electrode_xdp from ifindex {}", self.ifindex)
            }),
            How::Netlink(xdp) => {
                xdp.detach(ifindex_i32(self.ifindex)?, XdpFlags::SKB_MODE).with_context(|| {
                    format!("detach generic XDP prog electrode_xdp from ifindex {}", self.ifindex)
                })
            }
            How::Detached => Ok(()),
        }
    }
}

impl Drop for XdpAttachment<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.detach_inner() {
            eprintln!("electrode: {error:#}");
        }
    }
}

impl Loaded {
    /// Attaches `electrode_xdp` to the interface named `iface` in the calling
    /// thread's network namespace, native mode first, generic as fallback.
    pub fn attach_xdp_iface(&self, iface: &str) -> Result<XdpAttachment<'_>> {
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .with_context(|| format!("attach XDP prog electrode_xdp: no interface {iface:?}"))?;
        self.attach_xdp(ifindex).with_context(|| format!("attach XDP prog electrode_xdp to {iface}"))
    }

    /// Attaches `electrode_xdp` to `ifindex`, native mode first, generic as
    /// fallback; [`XdpAttachment::mode`] tells which one the kernel used.
    pub fn attach_xdp(&self, ifindex: u32) -> Result<XdpAttachment<'_>> {
        let prog = &self.skel().progs.electrode_xdp;
        let ifindex_c = ifindex_i32(ifindex)?;
        // A link created without mode flags is native when the driver
        // implements XDP and generic otherwise; the query below says which.
        let native_error = match prog.attach_xdp(ifindex_c) {
            Ok(link) => {
                let mode = attached_mode(prog, ifindex)?;
                return Ok(XdpAttachment { ifindex, mode, how: How::Link(link) });
            }
            Err(error) => error,
        };
        let xdp = Xdp::new(prog.as_fd());
        // UPDATE_IF_NOEXIST: never replace somebody else's program.
        match xdp.attach(ifindex_c, XdpFlags::SKB_MODE | XdpFlags::UPDATE_IF_NOEXIST) {
            Ok(()) => Ok(XdpAttachment { ifindex, mode: XdpMode::Generic, how: How::Netlink(xdp) }),
            Err(generic_error) => bail!(
                "attach XDP prog electrode_xdp to ifindex {ifindex}: native (bpf_link) failed: \
                 {native_error}; generic (netlink, SKB mode) failed: {generic_error}"
            ),
        }
    }

    /// Attaches `electrode_xdp` to `ifindex` in generic (SKB) mode only,
    /// e.g. where native XDP_TX would need a program on the peer veth.
    pub fn attach_xdp_generic(&self, ifindex: u32) -> Result<XdpAttachment<'_>> {
        let prog = &self.skel().progs.electrode_xdp;
        let xdp = Xdp::new(prog.as_fd());
        xdp.attach(ifindex_i32(ifindex)?, XdpFlags::SKB_MODE | XdpFlags::UPDATE_IF_NOEXIST)
            .with_context(|| format!("attach generic XDP prog electrode_xdp to ifindex {ifindex}"))?;
        Ok(XdpAttachment { ifindex, mode: XdpMode::Generic, how: How::Netlink(xdp) })
    }
}

/// Which slot of `ifindex` holds `prog` (native or generic).
fn attached_mode(prog: &Program<'_>, ifindex: u32) -> Result<XdpMode> {
    let prog_id = Program::id_from_fd(prog.as_fd()).context("id of prog electrode_xdp")?;
    let info = Xdp::new(prog.as_fd())
        .query(ifindex_i32(ifindex)?, XdpFlags::NONE)
        .with_context(|| format!("query XDP programs of ifindex {ifindex}"))?;
    if info.drv_prog_id == prog_id {
        Ok(XdpMode::Native)
    } else if info.skb_prog_id == prog_id {
        Ok(XdpMode::Generic)
    } else {
        bail!(
            "ifindex {ifindex}: prog electrode_xdp (id {prog_id}) attached but found in neither \
             the native (id {}) nor the generic (id {}) slot",
            info.drv_prog_id,
            info.skb_prog_id
        )
    }
}

fn ifindex_i32(ifindex: u32) -> Result<i32> {
    i32::try_from(ifindex).with_context(|| format!("ifindex {ifindex} does not fit a C int"))
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
