//! Operator commands against a namespace cluster of real replicas (root;
//! run under `flock /tmp/electrode-netns.lock`): a client killed by SIGKILL
//! leaves a history check-history accepts, `--duration` bounds a run,
//! `status` answers within its timeout with the right verdict when
//! replicas are down, and a client against a dead cluster stops with one
//! error.

mod cluster;
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{Cluster, BIN};
use common::require_root;

const SETTLE: Duration = Duration::from_secs(30);

fn check_history(files: &[&std::path::Path], json: bool) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-history").args(files);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

#[test]
fn killed_client_leaves_a_history_that_checks() {
    require_root!();
    let cluster = Cluster::running("o", 1, 21, SETTLE);
    let history = cluster.dir.join("killed.jsonl");
    let mut child = cluster
        .client_command("-n 10000000 -t 4 --keys 10", &history)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has written a good share of operations.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&history).map_or(0, |m| m.len()) < 200_000 {
        assert!(Instant::now() < deadline, "client wrote no history\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The PID of `client_command`'s child is the client itself.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
    let text = std::fs::read_to_string(&history).unwrap();
    let invokes = text.matches("\"type\":\"invoke\"").count();
    assert!(invokes > 500, "{invokes} operations on file");

    let out = check_history(&[&history], false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(": linearizable ("), "{stdout}");

    // A final line cut in the middle (a kill during the write) is skipped
    // and reported; the rest still checks.
    let cut = cluster.dir.join("cut.jsonl");
    let last_line = text.trim_end().rfind('\n').unwrap() + 1;
    std::fs::write(&cut, &text[..last_line + (text.len() - last_line) / 2]).unwrap();
    let out = check_history(&[&cut], true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["linearizable"], true);
    assert!(verdict["notes"][0].as_str().unwrap().contains("cut short"), "{verdict}");

    // A later run against the same cluster checks together with it.
    let after = cluster.dir.join("after.jsonl");
    let r = cluster.run_load("--duration 1 -t 2 --keys 10", &after, Duration::from_secs(60));
    assert!(r["ops"].as_u64().unwrap() > 100, "{r}");
    assert!(r["elapsed_s"].as_f64().unwrap() < 2.0, "--duration 1 ran {r}");
    let out = check_history(&[&history, &after], false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

fn status_json(cluster: &Cluster, timeout_ms: u64) -> (Option<i32>, serde_json::Value, String, Duration) {
    let start = Instant::now();
    let out = cluster
        .client(&["status", "--json", "--timeout-ms", &timeout_ms.to_string()], Duration::from_secs(10));
    let elapsed = start.elapsed();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), json, String::from_utf8_lossy(&out.stderr).into_owned(), elapsed)
}

#[test]
fn status_of_a_half_down_cluster_and_a_client_of_a_dead_one() {
    require_root!();
    let mut cluster = Cluster::running("s", 1, 22, SETTLE);
    let (code, json, _, _) = status_json(&cluster, 300);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["healthy"], true);
    // Replica logs are timestamped and levelled.
    let log = cluster.log(0);
    let first = log.lines().find(|l| l.contains("electrode replica 0 on")).unwrap_or_else(|| panic!("{log}"));
    let (stamp, rest) = first.split_once(' ').unwrap();
    assert!(stamp.len() == 27 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{first}");
    assert!(rest.starts_with("INFO  electrode replica 0 on"), "{first}");
    let roles: Vec<&str> = (0..3).map(|i| json["replicas"][i]["role"].as_str().unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "{json}");

    // One follower down: a quorum answers, exit 0, within the timeout.
    cluster.kill_replica(2);
    let (code, json, _, elapsed) = status_json(&cluster, 300);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["replicas"][2]["reachable"], false);
    assert_eq!(json["answered"], 2);
    // The timeout plus process start-up in a namespace.
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");

    // Two down: no quorum, exit 1 and one line saying so.
    cluster.kill_replica(1);
    let (code, json, stderr, elapsed) = status_json(&cluster, 300);
    assert_eq!(code, Some(1), "{json}");
    assert_eq!(json["quorum_answered"], false);
    assert_eq!(
        stderr.trim(),
        "electrode: status: only 1 of 3 replicas answered within 300 ms, fewer than a quorum of 2"
    );
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");

    // Everything down: the client stops with one error, exit 1.
    cluster.kill_replica(0);
    let start = Instant::now();
    let out = cluster.client(&["client", "-n", "10", "--unreachable-ms", "1000"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no replica answered at all within 1.0 s"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let (code, json, _, _) = status_json(&cluster, 200);
    assert_eq!(code, Some(1));
    assert_eq!(json["answered"], 0);
}
