//! `meshward bench SCENARIO`: a scenario's requests through its chain, as fast as the harness goes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use meshward_bench::{bench, BenchOptions};
use meshward_scenario::harness;
use meshward_scenario::{wasm_dir, Scenario};

#[derive(Args)]
pub struct BenchArgs {
    /// A scenario file: its chain, and its cases' requests (cycled).
    scenario: PathBuf,
    /// Only the case with this name (default: every case, in turn).
    #[arg(long)]
    case: Option<String>,
    /// Total requests.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Stop after this many seconds even if --count is not reached.
    #[arg(long)]
    seconds: Option<f64>,
    /// Sending threads (one worker VM each).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Directory holding the filters' release .wasm files. Default: $MESHWARD_WASM_DIR, else the
    /// enclosing workspace's target/wasm32-wasip1/release, else (an installed meshward, when that
    /// holds none of them) the filters it carries.
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
    /// Also count the wasm instructions each filter executes per request (wasmtime fuel, about
    /// one per wasm operator): its own work, unmoved by the machine's load. Metered code runs
    /// slower, so the times printed beside are not the unmetered ones.
    #[arg(long)]
    fuel: bool,
}

pub fn run_bench(args: BenchArgs) -> Result<()> {
    if args.fuel && !meshward_harness::meter_guest_instructions() {
        bail!("--fuel: a module was compiled before metering was turned on");
    }
    let mut scenario = Scenario::load(&args.scenario)?;
    meshward_scenario::oci::pull_modules(&mut scenario)?;
    if let Some(name) = &args.case {
        scenario.cases.retain(|c| &c.name == name);
    }
    if scenario.cases.is_empty() {
        bail!("no case to send");
    }
    scenario.workers = Some(args.threads.max(1) as u32);
    let wasm_dir = wasm_dir(args.wasm_dir.as_deref(), &args.scenario)?;
    let host = harness::build_host(&scenario, &wasm_dir)?;
    let requests = scenario
        .cases
        .iter()
        .map(|c| harness::to_request(&c.request))
        .collect::<Result<Vec<_>>>()?;
    let report = bench(
        &host,
        &BenchOptions {
            requests,
            count: Some(args.count),
            duration: args.seconds.map(Duration::from_secs_f64),
            threads: args.threads.max(1),
        },
    );
    println!(
        "scenario: {} ({} case(s), {} thread(s))",
        args.scenario.display(),
        scenario.cases.len(),
        args.threads
    );
    println!(
        "requests: {} in {:.3} s",
        report.requests,
        report.elapsed.as_secs_f64()
    );
    println!("requests/s: {:.0}", report.requests_per_second);
    println!(
        "cpu per request: {:?} ({:.0} requests per CPU-second of a sending thread)",
        report.cpu_per_request(),
        report.requests_per_cpu_second()
    );
    println!(
        "latency p50 {:?}  p99 {:?}  p999 {:?}",
        report.p50, report.p99, report.p999
    );
    for ((filter, mean), (_, calls)) in report
        .per_filter_mean
        .iter()
        .zip(&report.per_filter_hostcalls)
    {
        println!("filter {filter}: mean {mean:?} and {calls:.1} host calls per request");
    }
    if args.fuel {
        for (filter, fuel) in &report.per_filter_fuel {
            println!("filter {filter}: {fuel:.0} wasm instructions per request (fuel)");
        }
    }
    if report.status_changes > 0 {
        println!(
            "note: {} request(s) got another status than the first",
            report.status_changes
        );
    }
    Ok(())
}
