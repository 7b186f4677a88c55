//! The scenario files of one folder under tests/scenarios/, each run through the harness AND a
//! real Envoy 1.40 with the same module and config. A case fails if either run misses its
//! expectation or if the two runs differ in anything the case checks. Envoy missing ⇒ failure,
//! never a skip.

use std::path::PathBuf;

use meshward_rig::default_wasm_dir;
use meshward_scenario::suite::{run_file, Targets};

use crate::repo;

/// Runs every `*.yaml` in `tests/scenarios/<dir>` in both targets; panics with the full report
/// when a case fails or none ran. Returns the number of cases that passed in both.
pub fn parity_suite(dir: &str) -> usize {
    let root = repo();
    let scenario_dir = root.join("tests/scenarios").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&scenario_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", scenario_dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no scenario files in {}",
        scenario_dir.display()
    );
    let wasm_dir = default_wasm_dir(&root);
    let (mut passed, mut failed, mut text) = (0, 0, String::new());
    for file in &files {
        let report = run_file(file, &wasm_dir, Targets::HarnessAndEnvoy, true);
        passed += report.passed;
        failed += report.failed;
        text.push_str(&report.text);
    }
    println!("{text}\n{dir}: {passed} passed, {failed} failed");
    assert_eq!(failed, 0, "{dir}: {failed} case(s) failed:\n{text}");
    assert!(passed > 0, "{dir}: no case ran");
    passed
}
