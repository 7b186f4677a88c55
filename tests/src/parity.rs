//! The scenario files of one folder under tests/scenarios/, each run through the harness AND a
//! real Envoy 1.40 with the same module and config. A case fails if either run misses its
//! expectation or if the two runs differ in anything the case checks. Envoy missing ⇒ failure,
//! never a skip.

use meshward_rig::default_wasm_dir;
use meshward_scenario::suite::{run_file, Targets};

use crate::repo;

/// Runs every `*.yaml` in `tests/scenarios/<dir>` in both targets; panics with the full report
/// when a case fails or none ran. Returns the number of cases that passed in both.
pub fn parity_suite(dir: &str) -> usize {
    let root = repo();
    let scenario_dir = root.join("tests/scenarios").join(dir);
    let files = crate::yaml_files(&scenario_dir);
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

/// Runs one file, `tests/scenarios/<dir>/<name>.yaml`, in both targets; panics with its report
/// when a case fails or none ran. For folders whose files each have a test of their own.
pub fn parity_file(dir: &str, name: &str) -> usize {
    let root = repo();
    let file = root
        .join("tests/scenarios")
        .join(dir)
        .join(format!("{name}.yaml"));
    let report = run_file(
        &file,
        &default_wasm_dir(&root),
        Targets::HarnessAndEnvoy,
        true,
    );
    println!(
        "{}\n{name}: {} passed, {} failed",
        report.text, report.passed, report.failed
    );
    assert_eq!(
        report.failed, 0,
        "{name}: {} case(s) failed:\n{}",
        report.failed, report.text
    );
    assert!(report.passed > 0, "{name}: no case ran");
    report.passed
}

/// Every `*.yaml` of `tests/scenarios/<dir>` has a test: `source` (the test file's text) calls
/// `scenario("<stem>")` for it.
pub fn assert_every_file_has_its_test(dir: &str, source: &str) {
    let dir = repo().join("tests/scenarios").join(dir);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let stem = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let call = format!("scenario(\"{stem}\")");
        assert!(
            source.contains(&call),
            "{} has no test: add one calling {call}",
            path.display()
        );
    }
}
