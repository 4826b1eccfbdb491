//! Writes a linearizable KV history of N operations (JSON lines, the
//! `electrode client --history` format) for timing `electrode check-history`:
//!
//!     cargo run --release --example history_gen -- 1000000 /tmp/h.jsonl [clients] [keys] [seed]

use std::io::{BufWriter, Write};

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        anyhow::bail!("usage: history_gen OPS FILE [CLIENTS=8] [KEYS=100] [SEED=1]");
    }
    let number = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i).map_or(Ok(default), |s| {
            s.parse().with_context(|| format!("argument {i}: {s:?} is not a number"))
        })
    };
    let ops = number(1, 0)? as usize;
    let (clients, keys, seed) = (number(3, 8)?, number(4, 100)?, number(5, 1)?);
    let history = electrode::history::generate_valid(seed, ops, clients, keys);
    let file = std::fs::File::create(&args[2]).with_context(|| format!("creating {}", args[2]))?;
    let mut out = BufWriter::new(file);
    electrode::history::write_history(&mut out, &history)?;
    out.flush()?;
    eprintln!("{}: {} operations, {clients} clients, {keys} keys, seed {seed}", args[2], history.len());
    Ok(())
}
