//! `electrode stats`: the counters of the electrode programs attached to an
//! interface (by a running replica, or anything else that loaded them),
//! once or every interval with per-second rates until Ctrl-C.
//!
//! Finding the programs and reading their maps is
//! [`crate::fastpath::attached`]; this module only schedules and prints.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::fastpath::{Counters, InterfacePrograms};
use crate::transport::os;

/// What `electrode stats` was asked for.
#[derive(Clone, Debug)]
pub struct StatsOptions {
    pub iface: String,
    /// Report every `interval` until SIGINT/SIGTERM (or `count` reports).
    pub watch: bool,
    pub interval: Duration,
    /// With `watch`: stop after this many reports.
    pub count: Option<u64>,
    /// One JSON object per report instead of a table.
    pub json: bool,
}

/// Granularity of the wait between reports: how late Ctrl-C is noticed.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Runs the command: errors (no interface, no electrode program, a map
/// that vanished mid-watch) come back as one line for `main`.
pub fn run(options: &StatsOptions) -> Result<()> {
    let programs = InterfacePrograms::find(&options.iface)?;
    if options.watch {
        // Before the first report: a Ctrl-C right after it must not kill
        // us half-way through a line.
        os::install_stop_handler()?;
    }
    let started = Instant::now();
    let mut previous = (started, programs.read_counters()?);
    print_report(options, &programs, &previous.1, None);
    if !options.watch {
        return Ok(());
    }
    let mut reports = 1u64;
    while options.count.is_none_or(|count| reports < count) {
        if !sleep_unless_stopped(options.interval) {
            break;
        }
        let now = (Instant::now(), programs.read_counters()?);
        let rates = Rates {
            elapsed: now.0 - previous.0,
            since_start: now.0 - started,
            delta: now.1.since(&previous.1),
        };
        print_report(options, &programs, &now.1, Some(&rates));
        previous = now;
        reports += 1;
    }
    Ok(())
}

/// What changed between two reports.
struct Rates {
    elapsed: Duration,
    since_start: Duration,
    delta: Counters,
}

impl Rates {
    fn per_second(&self, delta: u64) -> f64 {
        delta as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sleeps `duration`; false if SIGINT/SIGTERM arrived first.
fn sleep_unless_stopped(duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    while !os::stop_requested() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(STOP_POLL));
    }
    false
}

fn print_report(
    options: &StatsOptions,
    programs: &InterfacePrograms,
    totals: &Counters,
    rates: Option<&Rates>,
) {
    if options.json {
        println!("{}", json_report(programs, totals, rates));
    } else {
        print!("{}", text_report(programs, totals, rates));
    }
}

/// The table: a header naming the interface and its programs, then one row
/// per nonzero counter (with the per-second rate when watching).
fn text_report(programs: &InterfacePrograms, totals: &Counters, rates: Option<&Rates>) -> String {
    let mut out = String::new();
    let _ = write!(out, "{} (ifindex {})", programs.iface, programs.ifindex);
    if let Some(rates) = rates {
        let _ = write!(out, "  t={:.1}s", rates.since_start.as_secs_f64());
    }
    out.push('\n');
    for program in &programs.programs {
        let _ = writeln!(
            out,
            "  {:<14} prog id {:<6} map id {:<6} {}",
            program.name, program.prog_id, program.counters_map_id, program.hook
        );
    }
    let deltas = rates.map(|rates| rates.delta.named());
    let rows: Vec<(usize, &'static str, u64)> = totals
        .named()
        .into_iter()
        .enumerate()
        .filter(|(_, (_, total))| *total != 0)
        .map(|(at, (name, total))| (at, name, total))
        .collect();
    let name_width = rows.iter().map(|(_, name, _)| name.len()).max().unwrap_or(0).max("counter".len());
    match rates {
        Some(_) => {
            let _ = writeln!(out, "  {:<name_width$}  {:>14}  {:>12}", "counter", "total", "per second");
        }
        None => {
            let _ = writeln!(out, "  {:<name_width$}  {:>14}", "counter", "total");
        }
    }
    for (at, name, total) in &rows {
        let _ = write!(out, "  {name:<name_width$}  {total:>14}");
        if let (Some(rates), Some(deltas)) = (rates, &deltas) {
            let _ = write!(out, "  {:>12.1}", rates.per_second(deltas[*at].1));
        }
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("  (every counter is zero)\n");
    }
    out
}

/// One object: the interface, its programs, every counter by name (zeros
/// too, so a reader need not know the names), and when watching the
/// seconds since the previous report and each counter's rate.
fn json_report(programs: &InterfacePrograms, totals: &Counters, rates: Option<&Rates>) -> Value {
    let list: Vec<Value> = programs
        .programs
        .iter()
        .map(|program| {
            json!({
                "name": program.name,
                "prog_id": program.prog_id,
                "hook": program.hook.to_string(),
                "counters_map_id": program.counters_map_id,
            })
        })
        .collect();
    let counters: Map<String, Value> =
        totals.named().into_iter().map(|(name, value)| (name.to_string(), json!(value))).collect();
    let mut report = json!({
        "iface": programs.iface,
        "ifindex": programs.ifindex,
        "programs": list,
        "counters": counters,
        "total": totals.total(),
    });
    if let Some(rates) = rates {
        let per_second: Map<String, Value> = rates
            .delta
            .named()
            .into_iter()
            .map(|(name, delta)| (name.to_string(), json!(rates.per_second(delta))))
            .collect();
        report["elapsed_s"] = json!(rates.elapsed.as_secs_f64());
        report["per_second"] = Value::Object(per_second);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastpath::{AttachedProgram, Hook};
    use crate::wire::MsgType;

    fn programs() -> InterfacePrograms {
        InterfacePrograms {
            iface: "veth-b".to_string(),
            ifindex: 7,
            programs: vec![AttachedProgram {
                hook: Hook::XdpNative,
                name: "electrode_xdp".to_string(),
                prog_id: 41,
                counters_map_id: 17,
            }],
        }
    }

    #[test]
    fn text_lists_nonzero_counters_by_name_and_rates_when_watching() {
        let mut totals = Counters { foreign: 2, ..Counters::default() };
        *totals.messages_mut(MsgType::PrepareOk) = 30;
        totals.quorum_prune.drop_below_quorum = 5;
        let once = text_report(&programs(), &totals, None);
        assert!(once.starts_with("veth-b (ifindex 7)\n"), "{once}");
        assert!(once.contains("electrode_xdp  prog id 41"), "{once}");
        assert!(once.contains("xdp native"), "{once}");
        assert!(once.contains("prepare_ok"), "{once}");
        assert!(once.contains("quorum_prune.drop_below_quorum"), "{once}");
        assert!(!once.contains("malformed"), "zero rows are left out: {once}");
        assert!(!once.contains("per second"), "{once}");

        let mut delta = Counters::default();
        *delta.messages_mut(MsgType::PrepareOk) = 10;
        let rates = Rates { elapsed: Duration::from_secs(2), since_start: Duration::from_secs(4), delta };
        let watched = text_report(&programs(), &totals, Some(&rates));
        let row = watched.lines().find(|line| line.trim_start().starts_with("prepare_ok")).expect("row");
        assert!(row.trim_end().ends_with("5.0"), "10 in 2 s: {row}");
        assert!(watched.contains("t=4.0s"), "{watched}");
    }

    #[test]
    fn json_names_every_counter_and_rates_when_watching() {
        let totals = Counters { bad_magic: 3, tc_copies: 4, ..Counters::default() };
        let once = json_report(&programs(), &totals, None);
        assert_eq!(once["counters"]["bad_magic"], 3);
        assert_eq!(once["counters"]["tc_copies"], 4);
        assert_eq!(once["counters"]["request"], 0);
        assert_eq!(once["counters"].as_object().map(Map::len), Some(totals.named().len()));
        assert_eq!(once["total"], 7);
        assert_eq!(once["programs"][0]["prog_id"], 41);
        assert!(once.get("per_second").is_none());
        let rates = Rates {
            elapsed: Duration::from_millis(500),
            since_start: Duration::from_secs(1),
            delta: Counters { bad_magic: 1, ..Counters::default() },
        };
        let watched = json_report(&programs(), &totals, Some(&rates));
        assert_eq!(watched["per_second"]["bad_magic"], 2.0);
    }
}
