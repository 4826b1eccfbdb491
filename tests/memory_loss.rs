//! More than f replicas lose their memory at once (root, namespaces): of a
//! three-replica cluster (f = 1) holding `answer = 42` and a few thousand
//! ops, replicas 0 and 2 are killed with -9 together and restarted within a
//! second; replica 1 keeps its state. The restarted pair must not boot an
//! empty cluster beside it (the rule before issue 20 did, and a get then
//! read `(absent)`): both wait, log why naming replica 1, and `electrode
//! status` exits 1 naming the blocked state. The operator then restarts
//! replica 0 with `--accept-data-loss`: the cluster continues from replica
//! 1's history (nothing was lost, since all three had converged before the
//! kill), replica 2 recovers, `answer` is still 42, a load runs, the
//! replicas converge and the histories before and after check as one.
//!
//! CI runs it for the userspace build and for every fast-path feature
//! (scripts/test.sh).

mod cluster;
mod common;

use std::time::{Duration, Instant};

use cluster::{assert_linearizable_together, Cluster};
use common::require_root;

const SETTLE: Duration = Duration::from_secs(30);
/// The blocked state is reached within a few Recovery rounds (30 ms apart).
const BLOCKED_WITHIN: Duration = Duration::from_secs(10);
/// From the restart with --accept-data-loss to every replica normal in one
/// view: the 1 s boot wait, a view change or two, replica 2's recovery.
const NORMAL_AFTER_ACCEPT_WITHIN: Duration = Duration::from_secs(10);
/// A KV command waits this long for any answer before giving up.
const GET_UNREACHABLE: Duration = Duration::from_millis(1500);
const LOAD_OPS: u64 = 3000;

/// The waiting line (src/transport/transitions.rs) naming `holder`, if `log`
/// holds it.
fn waiting_line(log: &str, holder: usize) -> Option<&str> {
    let needle =
        format!("recovering: waiting: more than f replicas lost their memory; replica {holder} holds");
    log.lines().find(|line| line.contains(&needle))
}

/// The lines of replica `i`'s latest start (its log file is appended to
/// across restarts).
fn latest_start(log: &str, i: usize) -> &str {
    let start = format!("electrode replica {i} on ");
    log.rfind(&start).map_or(log, |at| &log[at..])
}

fn load(cluster: &Cluster, n: u64, history: &std::path::Path) -> serde_json::Value {
    let r = cluster.finish_load(cluster.start_load(n, 4, history));
    assert_eq!(r["ops"], n, "{r}");
    r
}

#[test]
fn more_than_f_replicas_without_memory_wait_for_the_operator_and_lose_nothing_held_by_a_survivor() {
    require_root!();
    let mut cluster = Cluster::running("ml", 1, 23, SETTLE);

    let out = cluster.kv(&["put", "answer", "42"], Duration::from_secs(5), Duration::from_secs(30));
    assert!(out.status.success(), "put failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "stored");
    let history_before = cluster.dir.join("history-before.jsonl");
    let r = load(&cluster, LOAD_OPS, &history_before);
    let commit_before = cluster.wait_converged(SETTLE);
    println!(
        "before: {LOAD_OPS} ops at {} ops/s, converged at commit {commit_before}",
        r["throughput_ops_per_s"]
    );

    // Replicas 0 and 2 lose their memory together; replica 1 holds state.
    let killed = Instant::now();
    cluster.kill_replica(0);
    cluster.kill_replica(2);
    cluster.start_replica(0);
    cluster.start_replica(2);
    let restart_took = killed.elapsed();
    assert!(restart_took < Duration::from_secs(1), "kill and restart took {restart_took:?}");

    // Both wait and say why, naming replica 1.
    let deadline = Instant::now() + BLOCKED_WITHIN;
    let lines = loop {
        let lines: Vec<Option<String>> =
            [0, 2].iter().map(|i| waiting_line(&cluster.log(*i), 1).map(str::to_string)).collect();
        if lines.iter().all(Option::is_some) {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "replicas 0 and 2 did not both log the waiting line naming replica 1 within {BLOCKED_WITHIN:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("blocked: both waiting lines {} ms after the kill", killed.elapsed().as_millis());
    for line in lines.iter().flatten() {
        println!("  {line}");
        assert!(line.contains("--accept-data-loss"), "the line names no way out: {line}");
    }
    // No restarted replica booted a history of its own.
    for i in [0, 2] {
        let log = cluster.log(i);
        assert!(!latest_start(&log, i).contains("booted"), "replica {i} booted beside replica 1\n{log}");
    }

    // `electrode status`: exit 1, the blocked pair and the holder named.
    let out = cluster.client(&["status"], Duration::from_secs(10));
    let (table, error) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("status while blocked (exit {:?}):\n{table}{error}", out.status.code());
    assert_eq!(out.status.code(), Some(1), "{table}{error}");
    assert!(
        error.contains(
            "replicas 0 and 2 are blocked: more than f replicas lost their memory; replica 1 holds op "
        ),
        "{error}"
    );
    for i in [0, 2] {
        let row = table.lines().find(|l| l.starts_with(&format!("{i} "))).unwrap_or("");
        assert!(
            row.contains("recovering: waiting, replica 1 holds op "),
            "row of replica {i}: {row}\n{table}"
        );
    }
    let out = cluster.client(&["status", "--json"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["healthy"], false, "{json}");
    assert_eq!(json["recovery_blocked"], serde_json::json!([0, 2]), "{json}");
    let held_op = json["replicas"][0]["state_holder"]["op"].as_u64().unwrap_or(0);
    assert_eq!(json["replicas"][0]["state_holder"]["replica"], 1, "{json}");
    assert!(
        held_op >= commit_before,
        "replica 1 holds op {held_op}, below the commit {commit_before}: {json}"
    );

    // Reads are not served from an empty history: the get finds nobody to
    // answer (or, were the cluster live, 42), never `(absent)`.
    let asked = Instant::now();
    let out = cluster.kv(&["get", "answer"], GET_UNREACHABLE, Duration::from_secs(30));
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!(
        "get while blocked: exit {:?} after {} ms: {answer:?} {}",
        out.status.code(),
        asked.elapsed().as_millis(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert_ne!(answer, "(absent)", "a blocked cluster served an empty history\n{}", cluster.logs());
    assert!(!out.status.success() || answer == "42", "get while blocked: {answer:?}");

    // The operator accepts the loss on replica 0 only (f+1 = 2 with the
    // one holder): the cluster continues from replica 1's history.
    cluster.kill_replica(0);
    cluster.set_replica_args(0, &["--accept-data-loss"]);
    let accepted = Instant::now();
    cluster.start_replica(0);
    cluster.wait_normal(NORMAL_AFTER_ACCEPT_WITHIN);
    let normal_after = accepted.elapsed();
    println!(
        "accept-data-loss on replica 0: all three normal in one view {} ms after its restart",
        normal_after.as_millis()
    );
    assert!(
        latest_start(&cluster.log(0), 0)
            .contains("accepted data loss: joining a view change with an empty log"),
        "replica 0 came back some other way\n{}",
        cluster.log(0)
    );

    let out = cluster.kv(&["get", "answer"], Duration::from_secs(5), Duration::from_secs(30));
    assert!(out.status.success(), "get failed: {}\n{}", String::from_utf8_lossy(&out.stderr), cluster.logs());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{}", cluster.logs());

    let history_after = cluster.dir.join("history-after.jsonl");
    let r = load(&cluster, 1000, &history_after);
    let commit_after = cluster.wait_converged(SETTLE);
    println!("after: 1000 ops at {} ops/s, converged at commit {commit_after}", r["throughput_ops_per_s"]);
    // Commit counts batches, not operations: it moved on from where it was.
    assert!(commit_after > commit_before, "commit {commit_after} after 1000 more ops on {commit_before}");
    // One history: the ops before the loss are all there (a second, empty
    // history would fail this, reads returning nothing for written keys).
    let ops = assert_linearizable_together(&[&history_before, &history_after]);
    println!("histories before and after: {ops} ops, linearizable together");
    cluster.assert_no_panic();
}
