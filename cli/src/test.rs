//! `meshward test FILE...`: run scenario files and report each case.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use meshward_scenario::default_wasm_dir;
use meshward_scenario::suite::{run_file, Targets};

#[derive(Args)]
pub struct TestArgs {
    /// Scenario files (YAML).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Also run every case through a real Envoy 1.40 ($MESHWARD_ENVOY or the project's .venv)
    /// and fail on any difference between the harness and Envoy in what a case checks.
    #[arg(long)]
    envoy: bool,
    /// Directory holding the filters' release .wasm files.
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
    /// Print every case, not only failures.
    #[arg(short, long)]
    verbose: bool,
}

/// Returns Ok(true) when every case passed.
pub fn test(args: TestArgs) -> Result<bool> {
    let targets = if args.envoy {
        Targets::HarnessAndEnvoy
    } else {
        Targets::Harness
    };
    let (mut passed, mut failed) = (0, 0);
    for file in &args.files {
        let wasm_dir = args
            .wasm_dir
            .clone()
            .unwrap_or_else(|| default_wasm_dir(file));
        let report = run_file(file, &wasm_dir, targets, args.verbose);
        print!("{}", report.text);
        passed += report.passed;
        failed += report.failed;
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}
