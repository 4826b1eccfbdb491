//! Attaching `electrode_xdp` to an interface, with a guard that detaches it.
//!
//! Both modes go through a bpf_link (BPF_LINK_CREATE with the mode flag):
//! the kernel detaches a link when its last fd closes, so a replica that
//! dies, even by kill -9, leaves no program behind that would go on acking
//! Prepares for it (issue 12). libbpf-rs 0.27's `Program::attach_xdp` takes
//! no mode flags, so the link is created with libbpf-sys directly. Native
//! (driver) mode is tried first, generic (SKB) mode is the fallback.
//!
//! At attach time a stale `electrode_xdp` in either slot (netlink-attached
//! by an older build, which outlived its process) is replaced, with one
//! line on stderr. Anything else is never touched: a foreign program, or an
//! electrode program held by a live link (a running replica).

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};
use libbpf_rs::{Program, Xdp, XdpFlags};

use super::attached::{libbpf_muted, prog_info, xdp_prog_ids, Hook, XDP_PROG_NAME};
use super::load::Loaded;

/// Where in the receive path the program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before an skb exists.
    Native,
    /// After the skb is built (works on any device, slower).
    Generic,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            XdpMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }
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
    /// The bpf_link fd; None once detached.
    link: Option<OwnedFd>,
    _loaded: std::marker::PhantomData<&'obj Loaded>,
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
        let Some(link) = self.link.take() else { return Ok(()) };
        // Detach explicitly (another fd to the link, e.g. a tool reading
        // it, would keep it attached past our close), then close.
        // SAFETY: `link` is an open bpf_link fd we own.
        let rc = unsafe { libbpf_sys::bpf_link_detach(link.as_raw_fd()) };
        drop(link);
        if rc < 0 {
            return Err(std::io::Error::from_raw_os_error(-rc)).with_context(|| {
                format!(
                    "detach XDP link of prog electrode_xdp ({} mode) from ifindex {}",
                    self.mode, self.ifindex
                )
            });
        }
        Ok(())
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
    /// Either way through a bpf_link, after replacing a stale electrode
    /// program (see the module doc).
    pub fn attach_xdp(&self, ifindex: u32) -> Result<XdpAttachment<'_>> {
        self.remove_stale_xdp(ifindex)?;
        let native_error = match self.link_xdp(ifindex, XdpMode::Native) {
            Ok(attachment) => return Ok(attachment),
            Err(error) => error,
        };
        self.link_xdp(ifindex, XdpMode::Generic).map_err(|generic_error| {
            anyhow::anyhow!(
                "attach XDP prog electrode_xdp to ifindex {ifindex}: native mode failed: {native_error:#}; \
                 generic mode failed: {generic_error:#}"
            )
        })
    }

    /// Attaches `electrode_xdp` to `ifindex` in generic (SKB) mode only,
    /// e.g. where native XDP_TX would need a program on the peer veth.
    pub fn attach_xdp_generic(&self, ifindex: u32) -> Result<XdpAttachment<'_>> {
        self.remove_stale_xdp(ifindex)?;
        self.link_xdp(ifindex, XdpMode::Generic)
    }

    /// The fd of the loaded `electrode_xdp` program (borrowed from this
    /// object), for queries; tests use it to attach the program the way an
    /// older build did (netlink) and check it is replaced.
    pub fn xdp_prog_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.skel().progs.electrode_xdp.as_fd()
    }

    /// BPF_LINK_CREATE of `electrode_xdp` on `ifindex` in `mode`.
    fn link_xdp(&self, ifindex: u32, mode: XdpMode) -> Result<XdpAttachment<'_>> {
        let prog = &self.skel().progs.electrode_xdp;
        let opts = libbpf_sys::bpf_link_create_opts {
            sz: size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t,
            flags: mode.flags(),
            ..Default::default()
        };
        // SAFETY: `opts` is a valid, sized bpf_link_create_opts that libbpf
        // only reads during the call; the prog fd is open (owned by `self`).
        let fd = unsafe {
            libbpf_sys::bpf_link_create(
                prog.as_fd().as_raw_fd(),
                ifindex_i32(ifindex)?,
                libbpf_sys::BPF_XDP,
                &opts,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::from_raw_os_error(-fd)).with_context(|| {
                format!("bpf_link_create of prog electrode_xdp on ifindex {ifindex} in {mode} mode")
            });
        }
        // SAFETY: a non-negative return is a new link fd nobody else owns.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        let attachment = XdpAttachment { ifindex, mode, link: Some(link), _loaded: std::marker::PhantomData };
        let found = attached_mode(prog, ifindex)?;
        if found != mode {
            bail!(
                "ifindex {ifindex}: prog electrode_xdp linked in {mode} mode but found in the {found} slot"
            );
        }
        Ok(attachment)
    }

    /// Removes an `electrode_xdp` that a dead run left attached through
    /// netlink (older builds did that in generic mode, and it survived
    /// kill -9), in either slot, with one line on stderr. Refuses a foreign
    /// program, and an electrode program held by a live link.
    fn remove_stale_xdp(&self, ifindex: u32) -> Result<()> {
        let ifindex_c = ifindex_i32(ifindex)?;
        let slots =
            xdp_prog_ids(ifindex_c).with_context(|| format!("query XDP programs of ifindex {ifindex}"))?;
        for (hook, prog_id) in slots {
            let mode = match hook {
                Hook::XdpNative => XdpMode::Native,
                Hook::XdpGeneric => XdpMode::Generic,
                other => bail!("ifindex {ifindex}: {other} prog id {prog_id} is there; not touching it"),
            };
            let info = prog_info(prog_id).with_context(|| format!("info of XDP prog id {prog_id}"))?;
            if info.name != XDP_PROG_NAME {
                bail!(
                    "ifindex {ifindex} already has XDP prog {:?} (id {prog_id}, {mode} mode), not ours: \
                     not replacing it",
                    info.name
                );
            }
            // SAFETY: bpf_prog_get_fd_by_id has no memory preconditions.
            let old = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(prog_id) };
            if old < 0 {
                continue; // gone meanwhile
            }
            // SAFETY: a non-negative return is a new fd nobody else owns.
            let old = unsafe { OwnedFd::from_raw_fd(old) };
            let opts = libbpf_sys::bpf_xdp_attach_opts {
                sz: size_of::<libbpf_sys::bpf_xdp_attach_opts>() as libbpf_sys::size_t,
                old_prog_fd: old.as_raw_fd(),
                ..Default::default()
            };
            // Only this program, only if still there (XDP_FLAGS_REPLACE via
            // old_prog_fd). A live link refuses with EBUSY; that refusal is
            // an answer, so libbpf does not print the kernel's message.
            // SAFETY: `opts` is valid and sized; libbpf only reads it.
            let rc = libbpf_muted(|| unsafe { libbpf_sys::bpf_xdp_detach(ifindex_c, mode.flags(), &opts) });
            if rc == -libc::EBUSY {
                bail!(
                    "ifindex {ifindex} already has electrode_xdp (prog id {prog_id}, {mode} mode) held by a live \
                     bpf_link: another replica is running on this interface"
                );
            }
            if rc < 0 {
                return Err(std::io::Error::from_raw_os_error(-rc)).with_context(|| {
                    format!("detach stale electrode_xdp (prog id {prog_id}) from ifindex {ifindex}")
                });
            }
            eprintln!(
                "electrode: replaced a stale electrode_xdp (prog id {prog_id}, {mode} mode) that an earlier run \
                 left attached to ifindex {ifindex}"
            );
        }
        Ok(())
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
