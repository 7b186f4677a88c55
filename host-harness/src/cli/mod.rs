//! The `meshward` subcommands (the binary's, not the library's).

mod bench;
mod bench_envoy;
mod check;
mod run;
mod test;
mod wasmplugin;

pub use bench_envoy::{run as bench, BenchCli};
pub use check::{run as check, CheckArgs};
pub use run::{run, RunArgs};
pub use test::{test, TestArgs};
pub use wasmplugin::{wasmplugin, WasmPluginArgs};
