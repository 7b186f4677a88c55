//! `meshward check MODULE [--config FILE]`: what Envoy 1.40 would say about a module, before you
//! find it in a proxy log.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use meshward_harness::{check, FilterSpec};

#[derive(Args)]
pub struct CheckArgs {
    /// The proxy-wasm module (.wasm).
    module: PathBuf,
    /// pluginConfig file to run `proxy_on_configure` with.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Ok(true) when Envoy would load and configure the module.
pub fn run(args: CheckArgs) -> Result<bool> {
    let mut spec = FilterSpec::from_file(&args.module)?;
    if let Some(file) = &args.config {
        spec = spec
            .config(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?);
    }
    let report = check(&spec);
    let m = &report.module;
    println!("module: {}", args.module.display());
    println!(
        "abi: {}",
        m.abi
            .map(|a| format!("{a:?}"))
            .unwrap_or_else(|| "none (no proxy_abi_version_* export)".into())
    );
    if m.unsupported_imports.is_empty() {
        println!("imports: all satisfied by Envoy 1.40");
    } else {
        println!("imports Envoy 1.40 does not provide:");
        for (module, name) in &m.unsupported_imports {
            println!("  {module}.{name}");
        }
    }
    if !m.missing_exports.is_empty() {
        println!("missing exports: {}", m.missing_exports.join(", "));
    }
    for line in &report.logs {
        println!("log [{}] {:?}: {}", line.plugin, line.level, line.message);
    }
    match &report.error {
        None => println!("on_configure: accepted"),
        Some(e) => println!("error: {e}"),
    }
    Ok(report.is_ok() && m.unsupported_imports.is_empty() && m.missing_exports.is_empty())
}
