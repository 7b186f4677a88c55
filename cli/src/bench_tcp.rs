//! `meshward bench tcp`: spiffe-authz-tcp against Envoy's native network RBAC in one real Envoy,
//! per connection (see `meshward_bench::tcp`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use meshward_bench::tcp::{self as bench, TcpBenchOptions};

use crate::bench_envoy::{command_line, seconds};

#[derive(Args)]
pub struct BenchTcpArgs {
    /// Envoy worker threads (`--concurrency`).
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Closed-loop client threads; each opens a connection, completes a full mTLS handshake,
    /// writes 64 bytes, reads the echo and closes, then starts over.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Interleaved rounds over every configuration.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per configuration per round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Warm-up seconds per configuration.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Directory holding spiffe_authz_tcp.wasm and meshward_test_sdk_network.wasm
    /// (scripts/build-wasm.sh builds them).
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
    /// The Markdown file whose `meshward bench tcp` section (between its marker comments) is
    /// replaced, or appended if it has none.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Print the table only; write no file.
    #[arg(long)]
    no_write: bool,
}

pub fn run_tcp(args: BenchTcpArgs) -> Result<()> {
    let mut options = TcpBenchOptions {
        concurrency: args.concurrency.max(1),
        clients: args.clients.max(1),
        rounds: args.rounds,
        round: seconds(args.seconds, "--seconds")?,
        warmup: seconds(args.warmup, "--warmup")?,
        command: command_line(),
        ..TcpBenchOptions::default()
    };
    if let Some(dir) = args.wasm_dir {
        options.wasm_dir = dir;
    }
    let report = bench::run(&options)?;
    let section = bench::render(&report);
    print!("{section}");
    if !args.no_write {
        bench::update_file(&args.out, &section)?;
        eprintln!("wrote the table into {}", args.out.display());
    }
    Ok(())
}
