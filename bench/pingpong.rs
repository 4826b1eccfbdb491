//! The floor: blocking UDP round trips between two hosts with plain sockets,
//! the same topology and payload size class as electrode's, no protocol.
//!
//!   pingpong server ADDR                 # echo until SIGTERM / 60 s idle
//!   pingpong client ADDR -n N [-w W]     # prints one JSON object
//!
//! Built as a cargo example (`cargo build --release --example pingpong`);
//! bench/run.sh runs the server in a replica namespace and the client in the
//! client namespace, pinned as electrode's leader and client are.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const PAYLOAD_BYTES: usize = 64;
const IDLE_EXIT: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pingpong server ADDR | pingpong client ADDR -n N [-w WARMUP]";
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
            let mut n = 20_000u64;
            let mut warmup = 1000u64;
            let mut i = 3;
            while i + 1 < args.len() {
                match args[i].as_str() {
                    "-n" => n = args[i + 1].parse()?,
                    "-w" => warmup = args[i + 1].parse()?,
                    other => anyhow::bail!("unknown option {other}: {usage}"),
                }
                i += 2;
            }
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
            let elapsed = measured_start.elapsed().as_secs_f64();
            println!(
                "{{\"ops\":{n},\"elapsed_s\":{elapsed:.6},\"throughput_ops_per_s\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"lost\":{lost}}}",
                n as f64 / elapsed,
                histogram.value_at_quantile(0.5),
                histogram.value_at_quantile(0.99),
                histogram.max()
            );
            Ok(())
        }
        _ => anyhow::bail!(usage),
    }
}
