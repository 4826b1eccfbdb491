//! Boot without races (root, namespaces): the three replicas of a cluster
//! are started 20 times, each time in a random order with random delays
//! between them. Every boot must end with all three normal in view 0 under
//! replica 0 within 2 s of the last start: a cluster boots only once every
//! replica answered that it is without memory, so the ones up early wait
//! (recovering) for the last, however late it starts.
//!
//! CI runs it for the userspace build and for `fast_paths` (scripts/test.sh).

mod cluster;
mod common;

use std::time::{Duration, Instant};

use cluster::Cluster;
use common::{require_root, Rng};

const BOOTS: usize = 20;
const SETTLED_WITHIN: Duration = Duration::from_secs(2);

#[test]
fn boots_in_random_orders_all_end_normal_in_one_view() {
    require_root!();
    let seed = std::env::var("ELECTRODE_BOOT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    eprintln!("boot seed {seed} (ELECTRODE_BOOT_SEED replays it)");
    let mut rng = Rng::new(seed);
    let mut cluster = Cluster::up("b", 1, 18);
    let mut leaders = Vec::new();
    for boot in 0..BOOTS {
        let mut order = [0usize, 1, 2];
        for i in (1..3).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        // Even boots: back to back within 150 ms (as a person or a script
        // starts them); odd boots: up to 600 ms apart.
        let spread_ms = if boot % 2 == 0 { 75 } else { 600 };
        let delays: Vec<u64> = (0..2).map(|_| rng.below(spread_ms)).collect();
        for (k, i) in order.iter().enumerate() {
            if k > 0 {
                std::thread::sleep(Duration::from_millis(delays[k - 1]));
            }
            cluster.start_replica(*i);
        }
        let started = Instant::now();
        let view = loop {
            let status = cluster.status();
            let views: Vec<Option<u64>> =
                status.iter().map(|s| s.as_ref().filter(|s| s.1 == "normal").map(|s| s.0)).collect();
            if views.iter().all(|v| v.is_some() && *v == views[0]) {
                break views[0].unwrap();
            }
            assert!(
                started.elapsed() < SETTLED_WITHIN,
                "boot {boot} (order {order:?}, delays {delays:?} ms): not all normal in one view within \
                 {SETTLED_WITHIN:?}: {status:?}\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        eprintln!(
            "boot {boot}: order {order:?}, delays {delays:?} ms: view {view} (leader {}) after {:.0?}",
            view % 3,
            started.elapsed()
        );
        assert_eq!(
            view,
            0,
            "boot {boot} (order {order:?}, delays {delays:?} ms): view {view}\n{}",
            cluster.logs()
        );
        leaders.push(view % 3);
        for i in 0..3 {
            cluster.kill_replica(i);
        }
        // A fresh log per boot: the next boot's lines start clean.
        for i in 0..3 {
            let _ = std::fs::remove_file(cluster.log_path(i));
        }
    }
    eprintln!("{BOOTS} boots, leaders {leaders:?}");
}
