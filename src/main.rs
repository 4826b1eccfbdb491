//! The `electrode` command: one binary for replicas, clients and operators.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use std::time::Duration;

use electrode::app::kv::{KvOp, KvResult};
use electrode::app::AppKind;
use electrode::client::{self, LoadOptions};
use electrode::config::Config;
use electrode::status;
use electrode::transport::replica::ReplicaOptions;

/// Viewstamped Replication with eBPF fast paths (Electrode, NSDI 2023).
#[derive(Parser, Debug)]
#[command(name = "electrode", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one replica (needs root only when a fast path is compiled in).
    Replica {
        /// Cluster configuration.
        #[arg(short, long, default_value = "config.txt")]
        config: PathBuf,
        /// This replica's index in the configuration (0-based).
        #[arg(short, long)]
        index: usize,
        /// CPU to pin the replica thread to [default: index % CPU count].
        #[arg(long)]
        cpu: Option<usize>,
        /// Replicated application.
        #[arg(long, value_enum, default_value = "kv")]
        app: AppKind,
        /// Take a snapshot and trim the log every this many committed ops.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
        checkpoint_ops: u64,
        /// Print datagram counters every this many seconds (0: only at exit).
        #[arg(long, default_value_t = 0)]
        report_s: u64,
        /// Interface for the eBPF fast paths [default: the one holding the
        /// replica's address]; unused in a build without fast paths.
        #[arg(long)]
        iface: Option<String>,
        /// Do not hold requests of a burst to prepare them as one batch
        /// (the leader then prepares each request as it arrives).
        #[arg(long)]
        no_burst_batching: bool,
        /// Leader with ops in flight: poll for input this many microseconds
        /// (yielding the CPU between polls) before sleeping, since their
        /// acks are due within a round trip and a wake-up from another CPU
        /// costs more (0: always sleep).
        #[arg(long, value_name = "US", default_value_t = 50)]
        spin_us: u64,
        /// Serve Prometheus metrics (OpenMetrics text) at
        /// http://ADDR/metrics, e.g. 127.0.0.1:9464, from a separate thread
        /// (the replica thread only copies its numbers every 100 ms).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Least severe log lines printed (to stderr, timestamped).
        #[arg(long, value_enum, default_value = "info")]
        log_level: LogLevel,
        /// Continue from the survivors' history after more than f replicas
        /// lost their memory; acknowledged writes held only by the replicas
        /// that lost it are LOST.
        ///
        /// Every replica starts without memory. When more than f of them
        /// lost it at once (killed or restarted together) while another
        /// replica still holds state, no protocol can tell which writes were
        /// acknowledged, so the restarted replicas wait and log why
        /// (`electrode status` shows them blocked) instead of booting an
        /// empty cluster beside the survivors. With this flag, after 1 s of
        /// recovering this replica joins a view change with an empty log and
        /// the cluster continues from the most advanced survivor's history:
        /// writes that only the replicas without memory held are gone.
        /// Restart with it as few replicas as needed for a quorum with the
        /// replicas that still hold state: f+1 minus the holders (f = 1 with
        /// one survivor: one replica); the others then recover normally.
        /// With no replica holding state (one was down at the first start)
        /// it also lets this replica boot once f others answered without
        /// memory. Do not keep it in a replica's standing configuration: it
        /// stops the replica from waiting for replicas it cannot hear.
        #[arg(long)]
        accept_data_loss: bool,
    },
    /// Run a KV load against the cluster (closed loop, or open loop at
    /// --rate), or one KV command.
    Client {
        /// Cluster configuration.
        #[arg(short, long, default_value = "config.txt")]
        config: PathBuf,
        /// Operations in total (across threads), warm-up included
        /// [default: 10000, or no limit with --duration].
        #[arg(short = 'n', long = "requests")]
        requests: Option<u64>,
        /// Start no operation after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        /// Give up with an error when no replica has answered for this long
        /// (once the cluster has answered: at least the 20 s operation deadline).
        #[arg(long, global = true, value_name = "MS", default_value_t = client::UNREACHABLE_DEFAULT.as_millis() as u64,
              value_parser = clap::value_parser!(u64).range(1..))]
        unreachable_ms: u64,
        /// Leading operations excluded from the statistics.
        #[arg(short, long, default_value_t = 0)]
        warmup: u64,
        /// Client threads, each driving --sessions requests outstanding over
        /// one socket.
        #[arg(short, long, default_value_t = 1)]
        threads: usize,
        /// Client sessions per thread: each is its own client id with one
        /// request outstanding, so a thread keeps this many requests in
        /// flight (batched sends and receives). At most 4096 per thread (the
        /// ids the leader binds to one address) and 65536 in all.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=client::SESSIONS_PER_THREAD_MAX as u64))]
        sessions: u64,
        /// Open loop: send requests at this total rate (split across the
        /// threads) at fixed intended times, answered or not; latency counts
        /// from each request's intended send time, so waiting for a free
        /// session counts [default: closed loop, each session sends when
        /// its last request is answered].
        #[arg(long, value_name = "OPS_PER_S",
              value_parser = clap::value_parser!(u64).range(1..=client::RATE_MAX_OPS_PER_S))]
        rate: Option<u64>,
        /// Bytes of each written value (at most 505 with the default --keys:
        /// a cas carries two values in one 1024-byte operation).
        #[arg(long, default_value_t = 16)]
        value_size: usize,
        /// Number of distinct keys.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        keys: u64,
        /// Application the replicas run (null: raw protocol numbers).
        #[arg(long, value_enum, default_value = "kv")]
        app: AppKind,
        /// Print the results as one JSON object.
        #[arg(long)]
        json: bool,
        /// Write every operation as one JSON object per line to FILE.
        #[arg(long, value_name = "FILE")]
        history: Option<PathBuf>,
        /// Pin client threads to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
        /// Put each of the --keys keys once (--value-size bytes each) and
        /// stop: loads a state of about keys x value-size bytes.
        #[arg(long, conflicts_with_all = ["requests", "duration"])]
        fill: bool,
        /// One KV command instead of a load: put KEY VALUE | get KEY | del KEY.
        #[command(subcommand)]
        op: Option<KvCommand>,
    },
    /// Check that a client history (`client --history FILE`) is
    /// linearizable against the KV model.
    CheckHistory {
        /// JSON-lines history written by `electrode client --history`
        /// (several files: histories of one cluster, checked as one).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the verdict (and a violation's report) as one JSON object.
        #[arg(long)]
        json: bool,
        /// Checker threads [default: one per CPU].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        threads: Option<u64>,
    },
    /// Show view, status, op, commit, state digest and role of every
    /// replica; exit 1 if fewer than a quorum answer, they disagree on the
    /// view, two show different histories (different digests at one
    /// commit, or a follower committed past its leader's op), or a
    /// replica's recovery is blocked (see replica --accept-data-loss).
    Status {
        /// Cluster configuration.
        #[arg(short, long, default_value = "config.txt")]
        config: PathBuf,
        /// Wait at most this long for the replicas (queried all at once);
        /// as long again if a leader is asked once more to confirm that a
        /// follower is ahead of it.
        #[arg(long, value_name = "MS", default_value_t = status::STATUS_TIMEOUT_DEFAULT.as_millis() as u64,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout_ms: u64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print the counters of the electrode programs attached to an interface.
    Stats {
        /// Interface whose XDP/tc programs to read (in this network namespace).
        #[arg(long)]
        iface: String,
        /// Report again every interval, with per-second rates, until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Seconds between reports (implies --watch) [default: 1].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        interval_s: Option<u64>,
        /// Stop after this many reports (implies --watch).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Print each report as one JSON object (one per line).
        #[arg(long)]
        json: bool,
    },
    /// Validate a cluster configuration and print the cluster.
    CheckConfig {
        /// Cluster configuration (`f <n>` then 2f+1 `replica <host>:<port>`).
        #[arg(short, long, default_value = "config.txt")]
        config: PathBuf,
    },
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    println!(
        "{}: f = {}, {} replicas, cluster id {:#010x}, fast paths compiled in: {}",
        path.display(),
        config.f,
        config.replica_count(),
        config.cluster_id,
        electrode::compiled_fast_paths()
    );
    for (index, address) in config.replicas.iter().enumerate() {
        println!("  replica {index}  {address}{}", if index == 0 { "  (leader of view 0)" } else { "" });
    }
    Ok(())
}

/// `electrode check-history`: exit 0 if linearizable, 1 with a bounded
/// report if not (or undecided), a one-line error for an unreadable file.
fn check_history(files: &[PathBuf], json: bool, threads: Option<u64>) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let mut ops = Vec::new();
    let mut notes = Vec::new();
    for file in files {
        let reader = std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        );
        let history = electrode::history::read(reader).with_context(|| file.display().to_string())?;
        if let Some(line) = history.truncated_final_line {
            notes
                .push(format!("{}: final line {line} cut short (a killed client?), skipped", file.display()));
        }
        ops.extend(history.ops);
    }
    let read_s = start.elapsed().as_secs_f64();
    let threads =
        threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |t| t as usize);
    let verdict = electrode::check::check_with_threads(&ops, threads);
    let check_s = start.elapsed().as_secs_f64() - read_s;
    let pending = ops.iter().filter(|o| o.ret.is_none()).count();
    let names = files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" ");
    if json {
        let mut out = match &verdict {
            Ok(()) => serde_json::json!({ "linearizable": true }),
            Err(violation) => violation.to_json(),
        };
        out["operations"] = ops.len().into();
        out["without_reply"] = pending.into();
        out["notes"] = notes.into();
        out["read_s"] = read_s.into();
        out["check_s"] = check_s.into();
        println!("{out}");
    } else {
        for note in &notes {
            eprintln!("electrode: note: {note}");
        }
    }
    match verdict {
        Ok(()) => {
            if !json {
                println!(
                    "{names}: linearizable ({} operations, {pending} without a reply; read {read_s:.2} s, checked {check_s:.2} s)",
                    ops.len()
                );
            }
            Ok(())
        }
        Err(violation) => {
            if !json {
                println!("{names}: {violation}");
            }
            let what = if violation.search_limit { "undecided (search limit)" } else { "not linearizable" };
            anyhow::bail!("{names}: {what} on key {:?}", electrode::check::readable(&violation.key))
        }
    }
}

/// `--log-level` of the replica.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Replica logs: `<UTC time, µs> <LEVEL> <message>` on stderr.
fn init_logging(level: LogLevel) {
    use std::io::Write;
    let filter = match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(filter)
        .format(|buf, record| {
            writeln!(buf, "{} {:<5} {}", buf.timestamp_micros(), record.level(), record.args())
        })
        .target(env_logger::Target::Stderr)
        .init();
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Store VALUE under KEY.
    Put { key: String, value: String },
    /// Print the value of KEY.
    Get { key: String },
    /// Delete KEY.
    Del { key: String },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replica {
            config,
            index,
            cpu,
            app,
            checkpoint_ops,
            report_s,
            iface,
            no_burst_batching,
            spin_us,
            metrics,
            log_level,
            accept_data_loss,
        } => {
            init_logging(log_level);
            let config = Config::load(&config)?;
            electrode::transport::replica::run(ReplicaOptions {
                config,
                index,
                cpu,
                app,
                checkpoint_interval_ops: checkpoint_ops,
                report_interval: (report_s > 0).then(|| Duration::from_secs(report_s)),
                iface,
                burst_batching: !no_burst_batching,
                metrics,
                spin: Duration::from_micros(spin_us),
                accept_data_loss,
            })
        }
        Command::Client { config, op: Some(op), unreachable_ms, .. } => {
            let config = Config::load(&config)?;
            let op = match op {
                KvCommand::Put { key, value } => {
                    KvOp::Put { key: key.into_bytes(), value: value.into_bytes() }
                }
                KvCommand::Get { key } => KvOp::Get { key: key.into_bytes() },
                KvCommand::Del { key } => KvOp::Del { key: key.into_bytes() },
            };
            match client::run_one(&config, op, Duration::from_millis(unreachable_ms))? {
                KvResult::Value(Some(v)) => println!("{}", String::from_utf8_lossy(&v)),
                KvResult::Value(None) => println!("(absent)"),
                KvResult::Stored => println!("stored"),
                KvResult::Deleted(true) => println!("deleted"),
                KvResult::Deleted(false) => println!("(absent)"),
                KvResult::Swapped(s) => println!("{}", if s { "swapped" } else { "not swapped" }),
                KvResult::BadOp => {
                    anyhow::bail!("the replicas rejected the operation (are they running --app kv?)")
                }
            }
            Ok(())
        }
        Command::Client {
            config,
            op: None,
            requests,
            duration,
            unreachable_ms,
            warmup,
            threads,
            sessions,
            rate,
            value_size,
            keys,
            app,
            json,
            history,
            cpu,
            fill,
        } => {
            let duration = match duration {
                Some(s) if !(s.is_finite() && s > 0.0) => {
                    anyhow::bail!("--duration {s}: must be a positive number of seconds")
                }
                Some(s) => Some(Duration::from_secs_f64(s)),
                None => None,
            };
            let options = LoadOptions {
                config: Config::load(&config)?,
                requests: if fill {
                    Some(keys)
                } else if duration.is_some() {
                    requests
                } else {
                    Some(requests.unwrap_or(10_000))
                },
                duration,
                unreachable: Duration::from_millis(unreachable_ms),
                warmup,
                threads,
                sessions: sessions as usize,
                rate_ops_per_s: rate,
                value_size,
                keys,
                app,
                json,
                history,
                cpu,
                fill,
            };
            let report = client::run_load(&options)?;
            report.print(json)?;
            if report.failed > 0 {
                anyhow::bail!(
                    "{} operations failed: {} got no reply within the deadline, {} got \"session evicted\"",
                    report.failed,
                    report.failed - report.sessions_evicted,
                    report.sessions_evicted
                );
            }
            Ok(())
        }
        Command::CheckHistory { files, json, threads } => check_history(&files, json, threads),
        Command::Status { config, timeout_ms, json } => {
            let config = Config::load(&config)?;
            let timeout = Duration::from_millis(timeout_ms);
            let health = status::survey(&config, timeout)?;
            if json {
                println!("{}", serde_json::to_string(&health)?);
            } else {
                health.print();
            }
            match health.problem() {
                Some(problem) => anyhow::bail!("status: {problem}"),
                None => Ok(()),
            }
        }
        Command::Stats { iface, watch, interval_s, count, json } => {
            electrode::stats::run(&electrode::stats::StatsOptions {
                iface,
                watch: watch || interval_s.is_some() || count.is_some(),
                interval: Duration::from_secs(interval_s.unwrap_or(1)),
                count,
                json,
            })
        }
        Command::CheckConfig { config } => check_config(&config).context("check-config"),
    }
}

/// Help and version print as clap renders them; a usage error prints one
/// line naming the problem and exits with 2.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let problem = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("electrode: {problem} (see electrode --help)");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    if !matches!(cli.command, Command::Replica { .. }) {
        // A command whose output is piped into `head` ends quietly when the
        // reader goes, as other command-line tools do, instead of panicking
        // in println! on EPIPE (Rust ignores SIGPIPE by default). A replica
        // keeps ignoring it: a closed log pipe must not kill it.
        // SAFETY: setting a signal's disposition to the default action.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("electrode: {error:#}");
            ExitCode::from(1)
        }
    }
}
