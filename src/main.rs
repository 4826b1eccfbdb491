//! The `electrode` command: one binary for replicas, clients and operators.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use electrode::config::Config;

/// Viewstamped Replication with eBPF fast paths (Electrode, NSDI 2023).
#[derive(Parser, Debug)]
#[command(name = "electrode", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a cluster configuration and print the cluster.
    CheckConfig {
        /// Cluster configuration (`f <n>` then 2f+1 `replica <host>:<port>`).
        #[arg(short, long, default_value = "config.txt")]
        config: PathBuf,
    },
}

fn check_config(path: &PathBuf) -> anyhow::Result<()> {
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("electrode: {error:#}");
            ExitCode::from(1)
        }
    }
}
