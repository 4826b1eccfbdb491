//! The floor: blocking UDP round trips between two hosts with plain sockets,
//! the same topology and payload size class as electrode's, no protocol;
//! and, with the fast_reply feature, one XDP_TX round trip: a Prepare to a
//! follower whose XDP program logs it and answers the PrepareOK itself.
//!
//!   pingpong server ADDR                 # echo until SIGTERM / 60 s idle
//!   pingpong client ADDR -n N [-w W]     # prints one JSON object
//!   pingpong xdp-follower CONFIG         # replica 1 of CONFIG: attach, arm, drain
//!   pingpong xdp-leader CONFIG -n N [-w W]  # as replica 0: Prepares to replica 1
//!
//! Built as a cargo example (`cargo build --release --example pingpong`,
//! with `--features fast_reply` for the xdp modes); bench/run.sh runs the
//! server in a replica namespace and the client in the client namespace,
//! pinned as electrode's leader and client are, and the xdp pair in the
//! namespaces of replicas 0 and 1, pinned as the leader and a follower.

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const PAYLOAD_BYTES: usize = 64;
const IDLE_EXIT: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pingpong server ADDR | pingpong client ADDR -n N [-w WARMUP] \
                 | pingpong xdp-follower CONFIG | pingpong xdp-leader CONFIG -n N [-w WARMUP]";
    let (Some(mode), Some(addr)) = (args.get(1), args.get(2)) else { anyhow::bail!(usage) };
    match mode.as_str() {
        "server" => {
            let socket = UdpSocket::bind(addr)?;
            socket.set_read_timeout(Some(IDLE_EXIT))?;
            let mut buf = [0u8; 2048];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                socket.send_to(&buf[..len], from)?;
            }
            Ok(())
        }
        "client" => {
            let (n, warmup) = counts(&args[3..], usage)?;
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            socket.connect(addr)?;
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
            let payload = [7u8; PAYLOAD_BYTES];
            let mut buf = [0u8; 2048];
            let mut lost = 0u64;
            let start = Instant::now();
            let mut measured_start = start;
            for k in 0..warmup + n {
                if k == warmup {
                    measured_start = Instant::now();
                }
                let t = Instant::now();
                socket.send(&payload)?;
                if socket.recv(&mut buf).is_err() {
                    lost += 1;
                    continue;
                }
                if k >= warmup {
                    histogram.saturating_record(t.elapsed().as_nanos() as u64 / 1000);
                }
            }
            print_json(n, measured_start.elapsed().as_secs_f64(), &histogram, lost);
            Ok(())
        }
        "xdp-follower" => xdp::follower(Path::new(addr)),
        "xdp-leader" => {
            let (n, warmup) = counts(&args[3..], usage)?;
            xdp::leader(Path::new(addr), n, warmup)
        }
        _ => anyhow::bail!(usage),
    }
}

/// `-n N` and `-w WARMUP` (defaults 20,000 and 1,000).
fn counts(args: &[String], usage: &str) -> anyhow::Result<(u64, u64)> {
    let (mut n, mut warmup) = (20_000u64, 1000u64);
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{} needs a value: {usage}", args[i]))?;
        match args[i].as_str() {
            "-n" => n = value.parse()?,
            "-w" => warmup = value.parse()?,
            other => anyhow::bail!("unknown option {other}: {usage}"),
        }
        i += 2;
    }
    Ok((n, warmup))
}

fn print_json(n: u64, elapsed: f64, histogram: &Histogram<u64>, lost: u64) {
    println!(
        "{{\"ops\":{n},\"elapsed_s\":{elapsed:.6},\"throughput_ops_per_s\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"lost\":{lost}}}",
        n as f64 / elapsed,
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
}

#[cfg(not(feature = "fast_reply"))]
mod xdp {
    use std::path::Path;

    pub fn follower(_config: &Path) -> anyhow::Result<()> {
        anyhow::bail!("xdp-follower needs the fast_reply feature (cargo build --example pingpong --features fast_reply)")
    }

    pub fn leader(_config: &Path, _n: u64, _warmup: u64) -> anyhow::Result<()> {
        anyhow::bail!(
            "xdp-leader needs the fast_reply feature (cargo build --example pingpong --features fast_reply)"
        )
    }
}

/// One XDP_TX round trip through electrode's own fast_reply program: the
/// in-order Prepare is logged to the ring buffer and rewritten into the
/// PrepareOK by XDP, as on a follower of a running cluster.
#[cfg(feature = "fast_reply")]
mod xdp {
    use std::net::UdpSocket;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use anyhow::{ensure, Context};
    use electrode::config::Config;
    use electrode::transport::kernel;
    use electrode::wire::{self, Decoded, Encoder, Message, Prepare, Request};
    use hdrhistogram::Histogram;

    const LEADER: usize = 0;
    const FOLLOWER: usize = 1;
    const VIEW: u64 = 0;

    fn config(path: &Path) -> anyhow::Result<Config> {
        let config = Config::load(path).map_err(|error| anyhow::anyhow!("{error}"))?;
        ensure!(config.replica_count() > FOLLOWER, "{}: needs at least two replicas", path.display());
        Ok(config)
    }

    /// Replica 1: loads and attaches the programs, arms the follower path
    /// for view 0 from op 1 with replica 0 as the leader, and drains the
    /// ring every millisecond, until SIGTERM or 60 s without a Prepare.
    pub fn follower(path: &Path) -> anyhow::Result<()> {
        let config = config(path)?;
        let address = config.replicas[FOLLOWER];
        let loaded = kernel::load(&config, FOLLOWER)?;
        let iface = kernel::interface_of(address)?;
        let _attached = kernel::attach(&loaded, &iface)?;
        let mut path = loaded.follower_path()?;
        path.arm_follower(VIEW, 1, config.replicas[LEADER], LEADER as u8, FOLLOWER as u8)?;
        let mut last = Instant::now();
        while last.elapsed() < super::IDLE_EXIT {
            std::thread::sleep(Duration::from_millis(1));
            if !path.drain_prepares(usize::MAX)?.is_empty() {
                last = Instant::now();
            }
        }
        Ok(())
    }

    /// Replica 0: sends Prepares of one 64-byte request to replica 1 from
    /// replica 0's configured address (the membership rule), one at a time,
    /// and times each until its PrepareOK.
    pub fn leader(path: &Path, n: u64, warmup: u64) -> anyhow::Result<()> {
        let config = config(path)?;
        let socket = UdpSocket::bind(config.replicas[LEADER]).context("bind replica 0's address")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        socket.connect(config.replicas[FOLLOWER])?;
        let encoder = Encoder::new(config.cluster_id, LEADER as u8);
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
        let mut buf = [0u8; 2048];
        let mut datagrams = Vec::new();
        let (mut lost, mut op) = (0u64, 0u64);
        let mut measured_start = Instant::now();
        for k in 0..warmup + n {
            if k == warmup {
                measured_start = Instant::now();
            }
            op += 1;
            let request = Request { client_id: 1, request_number: op, op: vec![7u8; super::PAYLOAD_BYTES] };
            let prepare = Prepare { view: VIEW, op, commit: 0, batch: vec![request] };
            datagrams.clear();
            encoder.encode(&Message::Prepare(prepare), &mut datagrams)?;
            ensure!(datagrams.len() == 1, "a Prepare of one request is one datagram");
            let t = Instant::now();
            socket.send(&datagrams[0])?;
            let acked = loop {
                let Ok(len) = socket.recv(&mut buf) else { break false };
                match wire::decode(&buf[..len], config.cluster_id) {
                    Ok((_, Decoded::Message(Message::PrepareOk(ok)))) if ok.op == op => break true,
                    _ => continue, // an older op's late ack
                }
            };
            if !acked {
                // Lost, or not acked by XDP: the follower expects this op
                // again (its next_op did not move), so send it next.
                lost += 1;
                op -= 1;
                continue;
            }
            if k >= warmup {
                histogram.saturating_record(t.elapsed().as_nanos() as u64 / 1000);
            }
        }
        super::print_json(n, measured_start.elapsed().as_secs_f64(), &histogram, lost);
        Ok(())
    }
}
