//! The `meshward` subcommands (the binary's, not the library's).

mod bench;
mod check;
mod run;
mod test;
mod wasmplugin;

pub use bench::{run_bench, BenchArgs};
pub use check::{run as check, CheckArgs};
pub use run::{run, RunArgs};
pub use test::{test, TestArgs};
pub use wasmplugin::{wasmplugin, WasmPluginArgs};
