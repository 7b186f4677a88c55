//! `meshward bench envoy`: meshward's filters against Envoy's native filters in one real Envoy
//! (see `meshward_bench::envoy`), and `meshward bench SCENARIO` (the harness bench) under
//! the same `bench` command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use meshward_bench::envoy::{self as bench, BenchOptions};

use crate::bench::{run_bench, BenchArgs};
use crate::bench_tcp::{run_tcp, BenchTcpArgs};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchCli {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    harness: Option<BenchArgs>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// meshward's filters, their chain and the bundle in a real Envoy 1.40 against Envoy's native
    /// filters (RBAC, jwt_authn, local_ratelimit, HCM limits), side by side in interleaved rounds:
    /// Envoy CPU per request, host calls and wasm instructions per request per filter (counted in
    /// the harness), Envoy RSS per chain at --concurrency 2, module sizes; writes a Markdown table
    /// into BENCHMARKS.md.
    Envoy(BenchEnvoyArgs),
    /// spiffe-authz-tcp against Envoy's native network RBAC (the same policies as istiod renders
    /// them) in a real Envoy 1.40, per mTLS connection through tcp_proxy, beside tcp_proxy alone
    /// and a no-op wasm network filter: connections/s, connection time, Envoy CPU per connection,
    /// Envoy RSS; writes a Markdown table into BENCHMARKS.md.
    Tcp(BenchTcpArgs),
    /// The price of each proxy-wasm crossing in a real Envoy 1.40: one listener per kind of host
    /// call (a test module making it --calls times per request) beside the router alone and the
    /// no-op module with and without its unhandled callbacks, in interleaved rounds; prints Envoy
    /// CPU per host call and per VM entry and writes a Markdown table into BENCHMARKS.md.
    Abi(BenchAbiArgs),
}

/// What `bench envoy` and `bench abi` share: the Envoy, the load, the rounds, the output.
#[derive(Args)]
pub struct RoundArgs {
    /// Envoy worker threads (`--concurrency`).
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Keep-alive mTLS connections of the load generator (one thread each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Interleaved rounds over every configuration.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per configuration per round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Warm-up seconds per configuration.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The Markdown file whose generated section (between marker comments) is replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Print the table only; write no file.
    #[arg(long)]
    no_write: bool,
}

impl RoundArgs {
    /// The benchmark options these arguments give (the rest at their defaults).
    fn options(&self, wasm_dir: Option<PathBuf>) -> Result<BenchOptions> {
        let mut options = BenchOptions {
            concurrency: self.concurrency.max(1),
            connections: self.connections.max(1),
            rounds: self.rounds,
            round: seconds(self.seconds, "--seconds")?,
            warmup: seconds(self.warmup, "--warmup")?,
            command: command_line(),
            ..BenchOptions::default()
        };
        if let Some(dir) = wasm_dir {
            options.wasm_dir = dir;
        }
        Ok(options)
    }

    /// Prints `section` and, unless `--no-write`, puts it into `--out` with `update`.
    fn report(&self, section: &str, update: fn(&Path, &str) -> Result<()>) -> Result<()> {
        print!("{section}");
        if !self.no_write {
            update(&self.out, section)?;
            eprintln!("wrote the table into {}", self.out.display());
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct BenchAbiArgs {
    #[command(flatten)]
    rounds: RoundArgs,
    /// Host calls of the measured kind per request (the price of one is the row's extra CPU
    /// divided by this).
    #[arg(long, default_value_t = 50)]
    calls: u32,
    /// Directory holding meshward_test_noop.wasm and meshward_test_hostcall_cost.wasm
    /// (scripts/build-wasm.sh builds them).
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct BenchEnvoyArgs {
    #[command(flatten)]
    rounds: RoundArgs,
    /// Distinct tokens per algorithm for the cold JWT rows (must exceed 256, the caches' size).
    #[arg(long, default_value_t = 1024)]
    jwt_pool: usize,
    /// Directory holding the filters' release .wasm files and meshward_test_noop.wasm
    /// (scripts/build-wasm.sh builds them).
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
}

pub fn run(args: BenchCli) -> Result<()> {
    match (args.command, args.harness) {
        (Some(BenchCommand::Envoy(envoy)), _) => run_envoy(envoy),
        (Some(BenchCommand::Tcp(tcp)), _) => run_tcp(tcp),
        (Some(BenchCommand::Abi(abi)), _) => run_abi(abi),
        (None, Some(harness)) => run_bench(harness),
        (None, None) => {
            bail!("give a scenario file (meshward bench SCENARIO), `meshward bench envoy`, `meshward bench tcp` or `meshward bench abi`")
        }
    }
}

/// How this run was invoked, `meshward …`, for the report's reproduce line.
pub(crate) fn command_line() -> String {
    std::iter::once("meshward".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn seconds(value: f64, flag: &str) -> Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!("{flag} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

fn run_envoy(args: BenchEnvoyArgs) -> Result<()> {
    let options = BenchOptions {
        jwt_pool: args.jwt_pool,
        ..args.rounds.options(args.wasm_dir)?
    };
    let report = bench::run(&options)?;
    args.rounds
        .report(&bench::render(&report), bench::update_file)
}

fn run_abi(args: BenchAbiArgs) -> Result<()> {
    let options = args.rounds.options(args.wasm_dir)?;
    let report = bench::abi::run(&options, args.calls)?;
    args.rounds
        .report(&bench::abi::render(&report), bench::abi::update_file)
}
