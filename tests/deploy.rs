//! Deployment tests (root; CI never skips them), built with `fast_paths`:
//!
//! - A cluster of replicas started as an unprivileged user (`nobody`) with
//!   exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (what
//!   packaging/electrode-replica@.service grants), via `setpriv`, serves a
//!   client load through all three fast paths; without any one of the
//!   three a replica stops with one line naming it.
//! - tc_broadcast's follower MACs come from the neighbour table before any
//!   datagram from the followers arrives.
//!
//! Every wait is bounded; processes are killed by PID and namespaces
//! removed on every exit path.

mod cluster;
mod common;

use std::ffi::CString;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cluster::{Cluster, BIN};
use common::{read_in_background, require_root, run, veth_pair, MAC_B};
use electrode::fastpath::{LoadOptions, Loaded};

/// What the systemd unit grants (setpriv spelling).
const CAPS: [&str; 3] = ["bpf", "perfmon", "net_admin"];
/// CapEff/CapPrm/CapAmb/CapBnd of a replica with exactly CAPS: bits 12
/// (NET_ADMIN), 38 (PERFMON), 39 (BPF).
const CAPS_MASK: &str = "000000c000001000";
const SETTLE: Duration = Duration::from_secs(30);

/// uid and gid of `nobody` (every Debian has it; the test never adds users
/// to the machine).
fn nobody() -> (u32, u32) {
    let name = CString::new("nobody").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once,
    // before any other call that could reuse its static buffer.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!entry.is_null(), "no user 'nobody' on this machine: create one (useradd --system nobody)");
    // SAFETY: non-null pointer to the passwd entry just returned.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// `ip netns exec NS setpriv ... BIN replica ...` with exactly `caps`
/// (inheritable, ambient and bounding set) as `nobody`.
fn capped_replica(cluster: &Cluster, bin: &Path, index: usize, caps: &[&str]) -> Command {
    let (uid, gid) = nobody();
    let set =
        std::iter::once("-all".to_string()).chain(caps.iter().map(|c| format!("+{c}"))).collect::<Vec<_>>();
    let set = set.join(",");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &cluster.ns_replica(index), "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg(bin)
        .arg("replica")
        .arg("-c")
        .arg(&cluster.config_path)
        .args(["-i", &index.to_string(), "--cpu", if index == 0 { "0" } else { "1" }])
        .args(["--checkpoint-ops", "500"]);
    command
}

/// The replica binary and config where `nobody` can read them (the target
/// directory may be under /root).
fn readable_by_nobody(cluster: &Cluster) -> PathBuf {
    std::fs::set_permissions(&cluster.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&cluster.config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin = cluster.dir.join("electrode");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Replicas this test started; Drop kills what is still running (by PID).
/// Declared after the Cluster, so it drops first.
struct Replicas(Vec<Option<Child>>);

impl Replicas {
    fn start(&mut self, cluster: &Cluster, bin: &Path, index: usize) {
        let log = File::options().create(true).append(true).open(cluster.log_path(index)).unwrap();
        let child =
            capped_replica(cluster, bin, index, &CAPS).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.0[index] = Some(child);
    }

    fn pid(&self, index: usize) -> u32 {
        self.0[index].as_ref().expect("running").id()
    }

    /// SIGTERM and a bounded wait: the replica prints its counters.
    fn stop(&mut self, index: usize) -> std::process::ExitStatus {
        let mut child = self.0[index].take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        wait_bounded(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("replica {index} ignored SIGTERM"))
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in self.0.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn wait_for_log(cluster: &Cluster, index: usize, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cluster.log(index).contains(text) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("replica {index} never logged {text:?}:\n{}", cluster.log(index));
}

/// The `name:` line of /proc/PID/status, tabs and all.
fn proc_status(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default().trim().to_string()
}

#[test]
fn replicas_with_only_bpf_perfmon_net_admin_serve_through_the_fast_paths() {
    require_root!();
    let (uid, _) = nobody();
    let cluster = Cluster::up("d", 1, 41);
    let bin = readable_by_nobody(&cluster);
    let mut replicas = Replicas((0..3).map(|_| None).collect());

    // The leader first, alone: its follower MACs can come only from the
    // neighbour table (cluster.sh sets static entries), no follower runs.
    replicas.start(&cluster, &bin, 0);
    wait_for_log(&cluster, 0, "recovering");
    let log = cluster.log(0);
    assert!(
        log.contains("tc_broadcast: MACs of replicas [1, 2] from the neighbour table"),
        "leader did not learn its followers' MACs from the neighbour table:\n{log}"
    );
    let pid = replicas.pid(0);
    assert_eq!(proc_status(pid, "Uid:").split_whitespace().next(), Some(uid.to_string().as_str()));
    for set in ["CapEff:", "CapPrm:", "CapAmb:", "CapBnd:"] {
        assert_eq!(proc_status(pid, set), CAPS_MASK, "{set} of the replica");
    }
    assert_eq!(proc_status(pid, "CapInh:"), CAPS_MASK);

    replicas.start(&cluster, &bin, 1);
    replicas.start(&cluster, &bin, 2);
    cluster.wait_normal(SETTLE);
    let history = cluster.dir.join("history.jsonl");
    let r = cluster.run_load("-n 2000 -t 2 --keys 20", &history, Duration::from_secs(120));
    assert_eq!(r["ops"], 2000);
    let commit = cluster.wait_converged(SETTLE);
    assert_eq!(cluster::assert_linearizable(&history), 2000);
    for i in 0..3 {
        assert!(replicas.stop(i).success(), "replica {i} did not exit cleanly:\n{}", cluster.log(i));
        let log = cluster.log(i);
        // CAP_NET_ADMIN lets SO_RCVBUFFORCE pass net.core.rmem_max.
        assert!(!log.contains("buffer of"), "replica {i} could not force its socket buffers:\n{log}");
        assert!(!log.contains("libbpf"), "replica {i}: libbpf complained:\n{log}");
    }

    let leader = cluster.ebpf_counters(0);
    let counter = |c: &std::collections::HashMap<String, u64>, name: &str| c.get(name).copied().unwrap_or(0);
    let (marked, copies) = (counter(&leader, "tc_marked"), counter(&leader, "tc_copies"));
    let passed = counter(&leader, "quorum_prune.pass_quorum");
    let pruned =
        counter(&leader, "quorum_prune.drop_redundant") + counter(&leader, "quorum_prune.drop_below_quorum");
    let acked: Vec<u64> =
        [1, 2].iter().map(|f| counter(&cluster.ebpf_counters(*f), "fast_reply_tx")).collect();
    eprintln!(
        "capabilities-only cluster (uid {uid}, caps {CAPS:?}): 2000 ops, {} ops/s, commit {commit}; \
         tc_broadcast marked {marked} copies {copies}; quorum_prune passed {passed} pruned {pruned}; \
         fast_reply acked {acked:?}",
        r["throughput_ops_per_s"]
    );
    assert!(marked * 10 >= commit * 8, "leader broadcast only {marked} times for {commit} ops: {leader:?}");
    assert!(copies >= 2 * marked * 9 / 10, "TC made {copies} copies of {marked} marked sends");
    assert_eq!(counter(&leader, "tc_error"), 0);
    assert!(passed * 10 >= commit * 8, "only {passed} quorum acks for {commit} ops: {leader:?}");
    assert!(pruned * 10 >= commit * 8, "only {pruned} acks pruned for {commit} ops: {leader:?}");
    for (f, tx) in acked.iter().enumerate() {
        assert!(tx * 10 >= commit * 8, "follower {}: kernel acked only {tx} of {commit}", f + 1);
    }

    // Without any one capability: exit 1, one line that names it, no
    // panic, no libbpf log.
    for missing in CAPS {
        let caps: Vec<&str> = CAPS.iter().copied().filter(|c| *c != missing).collect();
        let mut child = capped_replica(&cluster, &bin, 0, &caps)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let reader = read_in_background(child.stderr.take().unwrap());
        let status =
            wait_bounded(&mut child, Duration::from_secs(10)).expect("replica without a capability exits");
        let text = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
        eprintln!("without CAP_{}: exit {:?}, stderr: {text}", missing.to_uppercase(), status.code());
        assert_eq!(status.code(), Some(1), "{text}");
        let wanted = format!("lacks CAP_{}", missing.to_uppercase());
        // The buffer warning may come first where net.core.rmem_max is low
        // (without CAP_NET_ADMIN); the error itself is one line.
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("warning: ")).collect();
        assert_eq!(lines.len(), 1, "not one line: {text}");
        assert!(lines[0].starts_with("electrode: ") && lines[0].contains(&wanted), "{text}");
        assert!(!text.contains("panicked") && !text.contains("libbpf"), "{text}");
    }
}

#[test]
fn follower_macs_come_from_the_neighbour_table_before_any_datagram() {
    require_root!();
    // veth-a (leader, 10.213.0.1) <-> veth-b (follower 1, 10.213.0.2), static
    // neighbours both ways; follower 2 has only a static entry; follower 3
    // none at all.
    let netns = veth_pair([10, 213, 0, 1], [10, 213, 0, 2]);
    let mac_2 = [0x02, 0x77, 0, 0, 0, 0x33];
    #[rustfmt::skip]
    run("ip", &["-n", netns.name(0), "neigh", "replace", "10.213.0.3", "lladdr", "02:77:00:00:00:33",
        "dev", "veth-a", "nud", "permanent"]);
    let netns = &netns;
    thread::scope(|scope| {
        scope
            .spawn(move || {
                netns.enter(0);
                let port = 7001;
                let members: Vec<std::net::SocketAddrV4> = (1..=4)
                    .map(|host| std::net::SocketAddrV4::new([10, 213, 0, host].into(), port))
                    .collect();
                let loaded = Loaded::load(LoadOptions { port, cluster_id: 0x0de9_1070, replica_count: 4 })
                    .expect("load");
                loaded.set_members(&members).expect("members");
                let targets: Vec<(u8, std::net::SocketAddrV4)> =
                    (1..4).map(|i| (i, members[i as usize])).collect();
                loaded.set_broadcast_targets(0, port, &targets).expect("targets");
                // Not attached yet: no interface to look on.
                assert_eq!(loaded.learn_broadcast_macs_from_neighbours().unwrap(), Vec::<u8>::new());

                let ifindex = nix::net::if_::if_nametoindex("veth-a").expect("veth-a");
                let guard = loaded.attach_tc(ifindex).expect("attach tc");
                assert_eq!(loaded.broadcast_macs().unwrap(), vec![None; 4]);
                assert_eq!(loaded.learn_broadcast_macs_from_neighbours().unwrap(), vec![1, 2]);
                assert_eq!(loaded.broadcast_macs().unwrap(), vec![None, Some(MAC_B), Some(mac_2), None]);
                assert_eq!(loaded.broadcast_coverage().unwrap(), vec![false, true, true, false]);
                // Nothing came from the followers: the kernel learned nothing.
                assert_eq!(loaded.counters().unwrap().tc_mac_learned, 0);
                // Known slots are left alone; the unknown one stays unknown.
                assert_eq!(loaded.learn_broadcast_macs_from_neighbours().unwrap(), Vec::<u8>::new());
                guard.detach().expect("detach");
                assert_eq!(loaded.learn_broadcast_macs_from_neighbours().unwrap(), Vec::<u8>::new());
            })
            .join()
            .expect("test thread in its netns");
    });
}
