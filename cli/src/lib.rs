//! The `meshward` command line: argument parsing and printing over the libraries that do the work
//! (meshward-scenario, meshward-bench, meshward-harness, meshward-oci). A library too, so that the
//! suites parse command lines exactly as the binary does (tests/tests/examples.rs,
//! tests/tests/oci_registry.rs).

mod bench;
mod bench_envoy;
mod bench_tcp;
mod check;
mod explain;
pub mod image;
mod lint;
mod render;
mod run;
mod test;
pub mod wasmplugin;

pub use bench_envoy::{run as bench, BenchCli};
pub use check::{run as check, CheckArgs};
pub use explain::{run as explain, ExplainArgs};
pub use lint::{run as lint, LintArgs};
pub use render::{run as render, RenderArgs};
pub use run::{run, RunArgs};
pub use test::{test, TestArgs};
pub use wasmplugin::{wasmplugin, WasmPluginArgs, WasmPluginCommand};

/// The version `meshward --version` prints, and whether the binary carries its filters: an
/// installed one (scripts/install.sh) does, and runs anywhere; one built by `cargo build` reads
/// them from the wasm directory.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| match meshward_rig::embedded_filters() {
        Some(filters) => format!(
            "{} (carries its filters: {}; sha256 {})",
            env!("CARGO_PKG_VERSION"),
            filters
                .modules
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", "),
            filters.short_sha256()
        ),
        None => format!(
            "{} (no filters embedded: they are read from the wasm directory)",
            env!("CARGO_PKG_VERSION")
        ),
    })
}
