//! `electrode replica --metrics ADDR` on the namespace cluster (root): the
//! leader's scrape parses as Prometheus text and its numbers move under a
//! client load (commit, datagrams by type, the prepare→commit histogram).

mod cluster;
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cluster::Cluster;
use common::require_root;

const SETTLE: Duration = Duration::from_secs(30);
const METRICS_PORT: u16 = 9464;

/// GET `path` from `address` inside namespace `ns` (a thread that joins
/// the namespace, so no curl is needed). Returns (status line, body).
fn http_get(ns: &str, address: &str, path: &str) -> (String, String) {
    let (ns, address, path) = (ns.to_string(), address.to_string(), path.to_string());
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut stream = TcpStream::connect(&address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP head");
        (head.lines().next().unwrap().to_string(), body.to_string())
    })
    .join()
    .unwrap()
}

/// Samples by their full name with labels (`name{a="b"}`), after checking
/// the text format: every family has `# HELP` and `# TYPE` of a known type,
/// every sample belongs to a declared family and has a numeric value, and
/// the text ends with `# EOF`.
fn parse(text: &str) -> HashMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no # EOF:\n{text}");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps = 0;
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert!(["gauge", "counter", "histogram"].contains(&kind), "type {kind} in {line:?}");
            assert!(name.starts_with("electrode_"), "{line:?}");
            types.insert(name.to_string(), kind.to_string());
        } else if line.starts_with("# HELP ") {
            helps += 1;
        } else if line == "# EOF" || line.starts_with("# UNIT ") {
        } else {
            // name{labels} value
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad metric name in {line:?}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels in {line:?}");
                    for pair in labels[1..labels.len() - 1].split("\",") {
                        let (key, _) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {line:?}"));
                        assert!(
                            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                            "bad label name in {line:?}"
                        );
                    }
                }
            }
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| types.contains_key(*f)))
                .unwrap_or(name);
            let kind = types.get(family).unwrap_or_else(|| panic!("sample {line:?} of an undeclared family"));
            if name.ends_with("_total") {
                assert_eq!(kind, "counter", "{line:?}");
            }
            samples.insert(series.to_string(), value);
        }
    }
    assert_eq!(helps, types.len(), "a # HELP per # TYPE");
    samples
}

fn scrape(cluster: &Cluster, i: usize) -> (String, HashMap<String, f64>) {
    let address = format!("{}:{METRICS_PORT}", cluster.replica_address(i).ip());
    let (status, body) = http_get(&cluster.ns_client(), &address, "/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
    let samples = parse(&body);
    (body, samples)
}

fn get(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no {series} in {samples:?}"))
}

#[test]
fn metrics_parse_and_move_under_load() {
    require_root!();
    let mut cluster = Cluster::up("m", 1, 19);
    for i in 0..3 {
        let address = format!("{}:{METRICS_PORT}", cluster.replica_address(i).ip());
        cluster.set_replica_args(i, &["--metrics", &address]);
    }
    cluster.start_all();
    cluster.wait_normal(SETTLE);
    std::thread::sleep(Duration::from_millis(300)); // a publish after normal

    let (_, before) = scrape(&cluster, 0);
    assert_eq!(get(&before, "electrode_status{status=\"normal\"}"), 1.0);
    assert_eq!(get(&before, "electrode_role{role=\"leader\"}"), 1.0);
    assert_eq!(get(&before, "electrode_catching_up"), 0.0);
    assert_eq!(get(&before, "electrode_recovery_blocked"), 0.0);
    let (_, follower) = scrape(&cluster, 1);
    assert_eq!(get(&follower, "electrode_role{role=\"follower\"}"), 1.0);
    let (status, _) = http_get(
        &cluster.ns_client(),
        &format!("{}:{METRICS_PORT}", cluster.replica_address(0).ip()),
        "/nothing",
    );
    assert_eq!(status, "HTTP/1.0 404 Not Found");

    // A scrape while the load runs (printed: the README's sample).
    let history = cluster.dir.join("history.jsonl");
    let load = cluster.start_load(20_000, 4, &history);
    std::thread::sleep(Duration::from_millis(1500));
    let (during_text, during) = scrape(&cluster, 0);
    eprintln!("--- scrape of the leader under load ---\n{during_text}--- end of scrape ---");
    cluster.finish_load(load);
    std::thread::sleep(Duration::from_millis(300));
    let (_, after) = scrape(&cluster, 0);

    let moved = |series: &str| {
        let (b, d, a) = (get(&before, series), get(&during, series), get(&after, series));
        eprintln!("{series}: before {b}, under load {d}, after {a}");
        assert!(b <= d && d <= a, "{series} went back: {b} {d} {a}");
        a - b
    };
    assert!(moved("electrode_commit_number") >= 1.0);
    assert!(moved("electrode_op_number") >= 1.0);
    assert!(moved("electrode_datagrams_accepted_total{type=\"request\"}") >= 20_000.0);
    assert!(moved("electrode_datagrams_received_total") >= 20_000.0);
    assert!(moved("electrode_datagrams_sent_total") >= 20_000.0);
    assert!(moved("electrode_prepares_sent_total") >= 1.0);
    let latency_count = moved("electrode_prepare_commit_latency_seconds_count");
    assert!(latency_count >= 1.0);
    assert!(moved("electrode_prepare_commit_latency_seconds_sum") > 0.0);
    assert_eq!(
        get(&after, "electrode_prepare_commit_latency_seconds_bucket{le=\"+Inf\"}"),
        get(&after, "electrode_prepare_commit_latency_seconds_count")
    );
    // Every op the leader prepared in this view and committed is observed.
    let prepared = moved("electrode_prepares_sent_total");
    assert!(latency_count <= prepared, "{latency_count} latencies for {prepared} Prepares");
    assert!(get(&after, "electrode_client_table_entries") >= 1.0);
    assert_eq!(get(&after, "electrode_view_number"), get(&before, "electrode_view_number"));
    if get(&after, "electrode_commit_number") >= 1000.0 {
        assert!(get(&after, "electrode_checkpoint_op_number") >= 500.0, "--checkpoint-ops 500");
    }
    if !cfg!(feature = "fast_quorum_prune") || !cfg!(feature = "fast_reply") {
        assert!(moved("electrode_datagrams_accepted_total{type=\"prepare_ok\"}") >= 1.0);
    }
    if electrode::transport::replica::FAST_PATHS_COMPILED {
        // Merged from the maps at most a second late.
        std::thread::sleep(Duration::from_millis(1100));
        let (_, late) = scrape(&cluster, 0);
        let kernel: f64 =
            late.iter().filter(|(k, _)| k.starts_with("electrode_kernel_events_total")).map(|(_, v)| v).sum();
        assert!(kernel >= 20_000.0, "kernel counters: {kernel}");
    }
    // The copy is cheap on the replica thread.
    let publish = get(&after, "electrode_metrics_publish_seconds");
    eprintln!("publish on the replica thread took {:.1} µs", publish * 1e6);
    assert!(publish < 0.002, "publishing took {publish} s");
    for i in 0..3 {
        assert!(cluster.stop_replica(i).success(), "replica {i} did not exit cleanly");
    }
}
