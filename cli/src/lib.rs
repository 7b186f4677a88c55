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
