//! Running whole scenario files: in the harness, and optionally in real Envoy with a parity check.
//! Shared by `meshward test` and the test suites, so both report the same way.

use std::fmt::Write as _;
use std::path::Path;

use crate::{check, parity, render, run_cases, EnvoyTarget, HarnessTarget, Observed, Scenario};

/// The outcome of one scenario file.
#[derive(Debug, Default)]
pub struct FileReport {
    pub passed: usize,
    pub failed: usize,
    /// Human-readable lines: the file name, then each failing case with its diff (and every
    /// passing case when `verbose`).
    pub text: String,
    /// Every case in file order with its verdict (for machine-readable reports: `--junit`).
    pub cases: Vec<CaseReport>,
}

/// One case's verdict.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub name: String,
    /// `None`: passed. `Some(diff)`: what differed (expectation or harness ≠ Envoy), as printed
    /// under the case's name; or why no case could run.
    pub failure: Option<String>,
}

/// The name a failure that is not one case's (the file does not load, the chain does not
/// start) is reported under.
pub const FILE_LEVEL: &str = "(the whole file)";

impl FileReport {
    /// Records a passing case; `line` (already formatted) goes to the text when `verbose`.
    pub fn pass(&mut self, name: &str, verbose: bool, line: impl FnOnce() -> String) {
        self.passed += 1;
        if verbose {
            let _ = writeln!(self.text, "{}", line());
        }
        self.cases.push(CaseReport {
            name: name.to_string(),
            failure: None,
        });
    }

    /// Records a failing case: `header` is its first text line, `diff` what follows.
    pub fn fail(&mut self, name: &str, header: &str, diff: &str) {
        self.failed += 1;
        if diff.is_empty() {
            let _ = writeln!(self.text, "{header}");
        } else {
            let _ = writeln!(self.text, "{header}\n{diff}");
        }
        self.cases.push(CaseReport {
            name: name.to_string(),
            failure: Some(if diff.trim().is_empty() {
                header.trim().to_string()
            } else {
                diff.trim_end().to_string()
            }),
        });
    }
}

/// Where the cases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    Harness,
    /// The harness and real Envoy; a case passes only if both meet the expectation and agree.
    HarnessAndEnvoy,
}

/// Run every case of a scenario file and compare with its expectations.
pub fn run_file(file: &Path, wasm_dir: &Path, targets: Targets, verbose: bool) -> FileReport {
    if std::fs::read_to_string(file).is_ok_and(|t| crate::mesh::is_mesh_file(&t)) {
        return crate::mesh::run_file(file, wasm_dir, targets, verbose);
    }
    if std::fs::read_to_string(file).is_ok_and(|t| crate::tcp::is_tcp_file(&t)) {
        return crate::tcp::run_file(file, wasm_dir, targets, verbose);
    }
    let mut report = FileReport::default();
    let scenario = match Scenario::load(file).and_then(|mut s| {
        let pulled = crate::oci::pull_modules(&mut s)?;
        Ok((s, pulled))
    }) {
        Ok(s) => s,
        Err(e) => {
            report.failed = 1;
            let _ = writeln!(report.text, "FAIL  {e:#}");
            report.cases.push(CaseReport {
                name: FILE_LEVEL.to_string(),
                failure: Some(format!("{e:#}")),
            });
            return report;
        }
    };
    let (scenario, pulled) = scenario;
    let _ = writeln!(report.text, "{}", file.display());
    for p in &pulled {
        let _ = writeln!(
            report.text,
            "  module {} ⇒ {} ({}; {} bytes)",
            p.reference, p.manifest_digest, p.how, p.bytes
        );
    }
    if scenario.start_fails {
        start_must_fail(&scenario, wasm_dir, targets, verbose, &mut report);
        return report;
    }
    let every_case_fails = |report: &mut FileReport, where_: &str, e: anyhow::Error| {
        report.failed += scenario.cases.len().max(1);
        let _ = writeln!(report.text, "  FAIL  (every case, {where_}) {e:#}");
        let why = format!("every case fails ({where_}): {e:#}");
        let names: Vec<String> = if scenario.cases.is_empty() {
            vec![FILE_LEVEL.to_string()]
        } else {
            scenario.cases.iter().map(|c| c.name.clone()).collect()
        };
        for name in names {
            report.cases.push(CaseReport {
                name,
                failure: Some(why.clone()),
            });
        }
    };
    let harness = match HarnessTarget::start(&scenario, wasm_dir)
        .and_then(|target| run_cases(&target, &scenario))
    {
        Ok(o) => o,
        Err(e) => {
            every_case_fails(&mut report, "harness", e);
            return report;
        }
    };
    let harness_only = scenario.clock.is_some();
    if harness_only && targets == Targets::HarnessAndEnvoy {
        let _ = writeln!(
            report.text,
            "  (harness only: the scenario pins the clock, which Envoy's cannot be)"
        );
    }
    let in_envoy: Option<Vec<Observed>> = match targets {
        _ if harness_only => None,
        Targets::Harness => None,
        Targets::HarnessAndEnvoy => match EnvoyTarget::start(&scenario, wasm_dir)
            .and_then(|target| run_cases(&target, &scenario))
        {
            Ok(o) => Some(o),
            Err(e) => {
                every_case_fails(&mut report, "envoy", e);
                return report;
            }
        },
    };
    for (i, case) in scenario.cases.iter().enumerate() {
        let mut diff = String::new();
        if let Some(seen) = harness.get(i) {
            let m = check(&case.expect, seen);
            if !m.is_empty() {
                let _ = write!(diff, "   in the harness:\n{}", render(&m));
            }
            if let Some(envoy_seen) = in_envoy.as_ref().and_then(|e| e.get(i)) {
                let m = check(&case.expect, envoy_seen);
                if !m.is_empty() {
                    let _ = write!(diff, "   in Envoy:\n{}", render(&m));
                }
                let p = parity(&case.expect, seen, envoy_seen);
                if !p.is_empty() {
                    let _ = write!(diff, "   harness ≠ Envoy:\n{}", render(&p));
                }
            }
        }
        if diff.is_empty() {
            report.pass(&case.name, verbose, || format!("  ok    {}", case.name));
        } else {
            report.fail(&case.name, &format!("  FAIL  {}", case.name), &diff);
        }
    }
    report
}

/// A `startFails` file: the chain must fail to start in each target (one case in the report).
fn start_must_fail(
    scenario: &Scenario,
    wasm_dir: &Path,
    targets: Targets,
    verbose: bool,
    report: &mut FileReport,
) {
    let mut diff = String::new();
    match HarnessTarget::start(scenario, wasm_dir) {
        Ok(_) => diff.push_str("   in the harness: the chain started (expected it to fail)\n"),
        Err(e) if verbose => {
            let _ = writeln!(report.text, "  harness refused: {e:#}");
        }
        Err(_) => {}
    }
    if targets == Targets::HarnessAndEnvoy {
        if let Err(e) = EnvoyTarget::expect_start_failure(scenario, wasm_dir) {
            let _ = writeln!(diff, "   in Envoy: {e:#}");
        }
    }
    let name = "the chain does not start";
    if diff.is_empty() {
        report.pass(name, verbose, || format!("  ok    {name}"));
    } else {
        report.fail(name, &format!("  FAIL  {name}"), &diff);
    }
}
