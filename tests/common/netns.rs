//! Throwaway network namespaces and the commands that set them up.

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::frames::{MAC_A, MAC_B};

/// Runs `ip` (or another tool) and fails loudly with its stderr.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Network namespaces named `el-t-<pid>-<n><suffix>` (`n` counts the sets
/// this process made, so parallel tests never share one), deleted on drop
/// (also when the test panics), which removes their veths and XDP programs.
pub struct Netns {
    names: Vec<String>,
}

impl Netns {
    /// Creates one namespace per suffix, `lo` up. The guard exists before the
    /// first `ip netns add`, so a failure half-way still cleans up.
    pub fn create(suffixes: &[&str]) -> Netns {
        static SETS_CREATED: AtomicUsize = AtomicUsize::new(0);
        let set = SETS_CREATED.fetch_add(1, Ordering::Relaxed);
        let mut netns = Netns { names: Vec::new() };
        for suffix in suffixes {
            let name = format!("el-t-{}-{set}{suffix}", std::process::id());
            // A previous run with the same pid that died hard: start clean.
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            run("ip", &["netns", "add", &name]);
            netns.names.push(name.clone());
            run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        }
        netns
    }

    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Moves the calling thread into namespace `index` (for good: call it
    /// on a thread made for that purpose).
    pub fn enter(&self, index: usize) {
        enter_netns(&self.names[index]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.names {
            match Command::new("ip").args(["netns", "del", name]).output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!(
                    "cleanup: ip netns del {name} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                ),
                Err(error) => eprintln!("cleanup: cannot run ip netns del {name}: {error}"),
            }
        }
    }
}

/// Namespaces a and b joined by veth-a (`ip_a`) <-> veth-b (`ip_b`), both
/// /24, MACs MAC_A and MAC_B, with no IPv6 and static neighbours, so the
/// only frames on the wire are the test's own.
pub fn veth_pair(ip_a: [u8; 4], ip_b: [u8; 4]) -> Netns {
    let netns = Netns::create(&["a", "b"]);
    let (ns_a, ns_b) = (netns.name(0).to_string(), netns.name(1).to_string());
    let mac = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
    for ns in [&ns_a, &ns_b] {
        // Link-local IPv6 chatter (DAD, MLD, RS) would land in the foreign
        // counter at times we do not control.
        for key in ["all", "default"] {
            let setting = format!("net.ipv6.conf.{key}.disable_ipv6=1");
            run("ip", &["netns", "exec", ns, "sysctl", "-qw", &setting]);
        }
    }
    // Created straight inside the namespaces: no name clash in the root one.
    #[rustfmt::skip]
    run("ip", &["link", "add", "veth-a", "netns", &ns_a, "address", &mac(MAC_A), "type", "veth",
        "peer", "name", "veth-b", "netns", &ns_b, "address", &mac(MAC_B)]);
    for (ns, dev, own, peer, peer_mac) in
        [(&ns_a, "veth-a", ip_a, ip_b, MAC_B), (&ns_b, "veth-b", ip_b, ip_a, MAC_A)]
    {
        let own = format!("{}/24", ip(own));
        run("ip", &["-n", ns, "addr", "add", &own, "dev", dev]);
        run("ip", &["-n", ns, "link", "set", dev, "up"]);
        // Static neighbours: no ARP frames in the counts.
        #[rustfmt::skip]
        run("ip", &["-n", ns, "neigh", "replace", &ip(peer), "lladdr", &mac(peer_mac), "dev", dev,
            "nud", "permanent"]);
    }
    netns
}

/// Moves the calling thread into the namespace `name` (for good: call it on
/// a thread made for that purpose, or in a child process).
pub fn enter_netns(name: &str) {
    let path = format!("/var/run/netns/{name}");
    let file = File::open(&path).unwrap_or_else(|error| panic!("open {path}: {error}"));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|error| panic!("setns into {path}: {error}"));
}

/// Runs `make` on a thread inside namespace `name` and returns what it
/// made (a socket keeps the namespace it was created in).
pub fn in_namespace<T: Send + 'static>(name: &str, make: impl FnOnce() -> T + Send + 'static) -> T {
    let name = name.to_string();
    std::thread::spawn(move || {
        enter_netns(&name);
        make()
    })
    .join()
    .expect("thread in its namespace")
}
