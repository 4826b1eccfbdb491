//! Small OS helpers of the runtime: sockets, CPU pinning, stop signals,
//! a monotonic clock and a seed source.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffers: a burst of ELECTRODE_PIPELINE_MAX full Prepares per peer
/// (64 x 1.5 KB x 8 peers ~ 768 KB) plus client traffic; 4 MiB leaves room.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Sets both socket buffers to SOCKET_BUFFER_BYTES. The plain options are
/// capped by net.core.{r,w}mem_max (~208 KiB by default), too small for a
/// burst of state-transfer chunks; with CAP_NET_ADMIN the FORCE variants
/// pass the cap. One warning when the buffers stay smaller.
fn set_buffers(socket: &Socket, address: SocketAddrV4) {
    let wanted = SOCKET_BUFFER_BYTES as libc::c_int;
    for (force, plain, name) in
        [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "receive"), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "send")]
    {
        let set = |option| {
            // SAFETY: a valid socket fd, a c_int option value of the right size.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(socket),
                    libc::SOL_SOCKET,
                    option,
                    (&wanted as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            set(plain);
        }
        let got =
            if plain == libc::SO_RCVBUF { socket.recv_buffer_size() } else { socket.send_buffer_size() };
        // The kernel reports twice the value set (bookkeeping overhead).
        if let Some(got) = got.ok().filter(|got| *got < SOCKET_BUFFER_BYTES) {
            log::warn!(
                "{name} buffer of {address} is {} KiB, not {} KiB (no CAP_NET_ADMIN and \
                 net.core.{}mem_max is lower): state transfers will be slower; raise it with sysctl",
                got >> 10,
                SOCKET_BUFFER_BYTES >> 10,
                if plain == libc::SO_RCVBUF { "r" } else { "w" }
            );
        }
    }
}

/// Binds a UDP socket to `address` with large buffers. A missing local
/// address is reported as such (the usual mistake: wrong namespace/host).
pub fn bind_udp(address: SocketAddrV4, read_timeout: Option<Duration>) -> anyhow::Result<UdpSocket> {
    let socket =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).context("creating UDP socket")?;
    set_buffers(&socket, address);
    if let Err(error) = socket.bind(&SocketAddr::V4(address).into()) {
        if error.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
            bail!("address {address} is not an address of this host (wrong host or network namespace?)");
        }
        if error.raw_os_error() == Some(libc::EADDRINUSE) {
            bail!("address {address} is already in use (another replica running?)");
        }
        return Err(error).with_context(|| format!("binding UDP socket to {address}"));
    }
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(read_timeout).context("setting socket read timeout")?;
    Ok(socket)
}

/// Sleeps until one socket has a datagram to read or a timeout passes, on
/// a high-resolution timer (epoll_pwait2(2): to within the timer slack,
/// 50 us by default). A socket read timeout (SO_RCVTIMEO) sleeps whole
/// jiffies instead: 4 ms at this kernel's HZ=250, which made every "1 ms"
/// timer (a tick, a retransmission) fire after 4-8 ms. ppoll(2) is as
/// precise but measured ~11 us of CPU per wait here against ~6.5 us for
/// epoll (the socket stays registered between waits).
pub struct Waiter {
    epoll: OwnedFd,
}

impl Waiter {
    pub fn new(socket: &impl AsRawFd) -> anyhow::Result<Waiter> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("creating an epoll instance");
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
        // SAFETY: valid descriptors and a valid event.
        if unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event) } < 0 {
            return Err(std::io::Error::last_os_error()).context("registering the socket with epoll");
        }
        Ok(Waiter { epoll })
    }

    /// Also wakes for `fd` (level-triggered EPOLLIN): the fast_intake ring
    /// buffer map, which the kernel makes readable for the first record
    /// after the ring was drained empty.
    pub fn add(&self, fd: std::os::fd::BorrowedFd<'_>) -> anyhow::Result<()> {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 1 };
        // SAFETY: valid descriptors and a valid event.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut event) }
            < 0
        {
            return Err(std::io::Error::last_os_error()).context("registering a ring buffer with epoll");
        }
        Ok(())
    }

    /// True if the socket (or an added fd) is readable, false once
    /// `timeout` passed (or a signal came) first.
    pub fn wait(&self, timeout: Duration) -> anyhow::Result<bool> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }];
        let spec = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(i32::try_from(timeout.subsec_nanos()).unwrap_or(0)),
        };
        // SAFETY: one valid event slot, a valid timespec, no signal mask.
        let ready = unsafe {
            libc::epoll_pwait2(self.epoll.as_raw_fd(), events.as_mut_ptr(), 1, &spec, std::ptr::null())
        };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(error).context("waiting for the socket (epoll_pwait2)");
        }
        Ok(ready > 0)
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu} is out of range"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning to CPU {cpu} (does it exist? see nproc)"))
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the stop flag instead of killing us.
pub fn install_stop_handler() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(on_stop_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("installing {signal} handler"))?;
    }
    Ok(())
}

/// Whether SIGINT/SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The system-wide monotonic clock (CLOCK_MONOTONIC) in nanoseconds: one
/// clock for every thread and process on the machine, so the histories of
/// successive client runs can be checked together.
pub fn monotonic_nanos() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// A seed that differs between runs and processes (nonces, client ids).
pub fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok()
    {
        return u64::from_ne_bytes(bytes);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

/// splitmix64: a small seeded generator for workloads and fault injection.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Datagrams queued during one round of the event loop and sent with one
/// sendmmsg(2): under load a batch's replies and Prepares cost one syscall
/// instead of one each. IPv4 destinations only (the replica socket is
/// IPv4); `push` refuses others and the caller sends those itself.
pub struct SendBatch {
    datagrams: Vec<Vec<u8>>,
    addresses: Vec<libc::sockaddr_in>,
    len: usize,
}

/// Most datagrams one sendmmsg call takes here.
pub const SEND_BATCH_MAX: usize = 64;

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            datagrams: (0..SEND_BATCH_MAX)
                .map(|_| Vec::with_capacity(crate::wire::MAX_DATAGRAM_LEN))
                .collect(),
            // SAFETY: sockaddr_in is plain old data; all zeroes is valid.
            addresses: vec![unsafe { std::mem::zeroed() }; SEND_BATCH_MAX],
            len: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.len == SEND_BATCH_MAX
    }

    /// Queues `datagram` for `to`; false (nothing queued) for a non-IPv4
    /// address or a full batch.
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        let SocketAddr::V4(to) = to else { return false };
        if self.is_full() {
            return false;
        }
        let buf = &mut self.datagrams[self.len];
        buf.clear();
        buf.extend_from_slice(datagram);
        let address = &mut self.addresses[self.len];
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        address.sin_port = to.port().to_be();
        address.sin_addr = libc::in_addr { s_addr: u32::from(*to.ip()).to_be() };
        self.len += 1;
        true
    }

    /// Sends what is queued; returns how many datagrams the kernel refused.
    pub fn flush(&mut self, socket: &UdpSocket) -> u64 {
        let mut iovecs: Vec<libc::iovec> = self.datagrams[..self.len]
            .iter()
            .map(|d| libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = (0..self.len)
            .map(|i| {
                // SAFETY: msghdr is plain old data; all zeroes is valid.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_name = (&mut self.addresses[i] as *mut libc::sockaddr_in).cast();
                header.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                header.msg_iov = &mut iovecs[i];
                header.msg_iovlen = 1;
                libc::mmsghdr { msg_hdr: header, msg_len: 0 }
            })
            .collect();
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
        let mut at = 0;
        let mut refused = 0;
        while at < self.len {
            // SAFETY: headers[at..len] point into buffers and addresses that
            // live until this function returns.
            let sent =
                unsafe { libc::sendmmsg(fd, headers[at..].as_mut_ptr(), (self.len - at) as libc::c_uint, 0) };
            if sent > 0 {
                at += sent as usize;
            } else if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            } else {
                // This datagram failed (e.g. no route): skip it, as a failed
                // sendto would, and send the rest.
                refused += 1;
                at += 1;
            }
        }
        self.len = 0;
        refused
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

/// Receive buffers for recvmmsg(2): everything waiting on the socket read
/// with one syscall.
pub struct RecvBatch {
    buffers: Vec<Vec<u8>>,
    addresses: Vec<libc::sockaddr_storage>,
    lengths: Vec<usize>,
    len: usize,
}

impl RecvBatch {
    pub fn new(count: usize) -> RecvBatch {
        RecvBatch {
            buffers: (0..count).map(|_| vec![0u8; crate::wire::MAX_DATAGRAM_LEN + 1]).collect(),
            // SAFETY: sockaddr_storage is plain old data; zeroes are valid.
            addresses: vec![unsafe { std::mem::zeroed() }; count],
            lengths: vec![0; count],
            len: 0,
        }
    }

    /// Reads what is waiting, without blocking; returns how many datagrams.
    pub fn recv(&mut self, socket: &UdpSocket) -> anyhow::Result<usize> {
        self.recv_flags(socket, libc::MSG_DONTWAIT).context("receiving datagrams")
    }

    fn recv_flags(&mut self, socket: &UdpSocket, flags: libc::c_int) -> std::io::Result<usize> {
        let count = self.buffers.len();
        let mut iovecs: Vec<libc::iovec> = self
            .buffers
            .iter_mut()
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = (0..count)
            .map(|i| {
                // SAFETY: msghdr is plain old data; all zeroes is valid.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_name = (&mut self.addresses[i] as *mut libc::sockaddr_storage).cast();
                header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                header.msg_iov = &mut iovecs[i];
                header.msg_iovlen = 1;
                libc::mmsghdr { msg_hdr: header, msg_len: 0 }
            })
            .collect();
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
        // SAFETY: every header points at a live buffer and address.
        let got = unsafe {
            libc::recvmmsg(fd, headers.as_mut_ptr(), count as libc::c_uint, flags, std::ptr::null_mut())
        };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            self.len = 0;
            return match error.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        self.len = got as usize;
        for (i, header) in headers.iter().take(self.len).enumerate() {
            self.lengths[i] = header.msg_len as usize;
        }
        Ok(self.len)
    }

    /// Datagram `i` of the last `recv` and its sender (None: not IPv4/6).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        assert!(i < self.len);
        let storage = &self.addresses[i];
        let from = match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in (family AF_INET).
                let v4 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
            }
            _ => None,
        };
        (&self.buffers[i][..self.lengths[i].min(self.buffers[i].len())], from)
    }
}
