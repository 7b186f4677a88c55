//! `meshward test FILE...`: run scenario files and report each case — on the terminal, and for CI
//! as a JUnit XML file (`--junit`), optionally one shard of the files (`--shard I/N`). `--native`
//! runs the native differential of mesh files and spiffe-authz-tcp files
//! ([`meshward_scenario::native`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use clap::Args;
use meshward_scenario::suite::{run_file, FileReport, Targets};
use meshward_scenario::tcp::{is_tcp_file, TcpScenario};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

#[derive(Args)]
pub struct TestArgs {
    /// Scenario files (YAML).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Also run every case through a real Envoy 1.40 ($MESHWARD_ENVOY or the project's .venv)
    /// and fail on any difference between the harness and Envoy in what a case checks.
    #[arg(long)]
    envoy: bool,
    /// The native differential: does Istio's own enforcement do what meshward does? For mesh
    /// scenario files (Istio YAML), every case through meshward's filters (the harness) and
    /// through a real Envoy 1.40 running what istiod would render for the workload's port instead
    /// (`meshward render --native`: PeerAuthentication's filter chains, Istio's path handling,
    /// jwt_authn, RBAC); for TCP scenario files whose chain is one spiffe-authz-tcp, the network
    /// RBAC istiod would render for the same policies. A case fails where the two answer
    /// differently (HTTP: the status, or whether the upstream was reached; TCP: whether the
    /// connection went through), except a case marked `stricterThanIstio: <why>`, where meshward
    /// must refuse what native Istio lets through. Runs instead of the normal run (the cases'
    /// expectations are not checked); with --envoy, in addition to it. Other chain files are
    /// refused. Needs Envoy, as --envoy does.
    #[arg(long)]
    native: bool,
    /// Directory holding the filters' release .wasm files.
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
    /// Print every case, not only failures.
    #[arg(short, long)]
    verbose: bool,
    /// Also write a JUnit XML report to this file: one <testsuite> per scenario file, one
    /// <testcase> per case, the diff as the <failure> message.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Run only shard I of N (1-based), to split a large suite across CI jobs. Files are sorted
    /// by path and file k (0-based) goes to shard k mod N + 1: the N shards together run every
    /// case exactly once. A shard takes whole files, as a file's cases share one chain and run in
    /// order.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
}

/// `--shard I/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected I/N, e.g. 2/3"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: I is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: N is not a number"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("`{s}`: need 1 ≤ I ≤ N"));
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// This shard's files: sorted by path, every N-th one starting at I-1.
    pub fn select(self, files: &[PathBuf]) -> Vec<PathBuf> {
        let mut sorted = files.to_vec();
        sorted.sort();
        sorted.dedup();
        sorted
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index - 1)
            .map(|(_, f)| f)
            .collect()
    }
}

/// The filter the native differential renders as Envoy's network RBAC.
const NATIVE_FILTER: &str = "spiffe-authz-tcp";

/// `--native`: why `file` cannot take the native differential, if it cannot. A TCP file that
/// does not load is let through: the differential reports why, per case.
fn native_refusal(file: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => return Some(format!("{}: {e}", file.display())),
    };
    if meshward_scenario::mesh::is_mesh_file(&text) {
        return None;
    }
    if !is_tcp_file(&text) {
        return Some(format!(
            "{}: --native takes mesh scenario files (Istio YAML, rendered as istiod would) and TCP \
             scenario files (`network: true`) whose chain is one `{NATIVE_FILTER}`; a chain of \
             HTTP filters has no native counterpart to render (run it without --native)",
            file.display()
        ));
    }
    let scenario = TcpScenario::load(file).ok()?;
    match scenario.chain.as_slice() {
        [entry] if entry.filter.as_deref() == Some(NATIVE_FILTER) => None,
        _ => Some(format!(
            "{}: --native takes a chain of exactly one `filter: {NATIVE_FILTER}` (the filter \
             whose policies have a native counterpart, Envoy's network RBAC)",
            file.display()
        )),
    }
}

/// Returns Ok(true) when every case passed.
pub fn test(args: TestArgs) -> Result<bool> {
    let targets = if args.envoy {
        Targets::HarnessAndEnvoy
    } else {
        Targets::Harness
    };
    let files = match args.shard {
        Some(shard) => shard.select(&args.files),
        None => args.files.clone(),
    };
    if args.native {
        // Refused before anything runs: a partial run would look like a pass of fewer files.
        let refusals: Vec<String> = files.iter().filter_map(|f| native_refusal(f)).collect();
        if !refusals.is_empty() {
            bail!("{}", refusals.join("\n"));
        }
    }
    let (mut passed, mut failed) = (0, 0);
    let mut reports = Vec::new();
    for file in &files {
        let wasm_dir = meshward_scenario::wasm_dir(args.wasm_dir.as_deref(), file)?;
        let mut runs = Vec::new();
        if !args.native || args.envoy {
            let report = run_file(file, &wasm_dir, targets, args.verbose);
            runs.push((file.display().to_string(), report));
        }
        if args.native {
            let mesh = std::fs::read_to_string(file)
                .is_ok_and(|t| meshward_scenario::mesh::is_mesh_file(&t));
            let report = if mesh {
                meshward_scenario::mesh::run_native_file(file, &wasm_dir, args.verbose)
            } else {
                meshward_scenario::native::run_file(file, &wasm_dir, args.verbose)
            };
            runs.push((format!("{} (native differential)", file.display()), report));
        }
        for (suite, report) in runs {
            print!("{}", report.text);
            passed += report.passed;
            failed += report.failed;
            reports.push((suite, report));
        }
    }
    if let Some(shard) = args.shard {
        println!(
            "shard {}/{}: {} of {} files",
            shard.index,
            shard.count,
            files.len(),
            args.files.len()
        );
    }
    println!("{passed} passed, {failed} failed");
    if let Some(path) = &args.junit {
        write_junit(path, &reports)?;
    }
    Ok(failed == 0)
}

/// The JUnit XML report: suite = scenario file (`FILE (native differential)` for --native),
/// case = scenario case.
pub fn junit_report(reports: &[(String, FileReport)]) -> Report {
    let mut report = Report::new("meshward test");
    for (name, r) in reports {
        let mut suite = TestSuite::new(name.as_str());
        for case in &r.cases {
            let status = match &case.failure {
                None => TestCaseStatus::success(),
                Some(diff) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(diff.as_str());
                    s.set_type("meshward scenario mismatch");
                    s.set_description(diff.as_str());
                    s
                }
            };
            let mut tc = TestCase::new(case.name.as_str(), status);
            tc.set_classname(name.as_str());
            suite.add_test_case(tc);
        }
        report.add_test_suite(suite);
    }
    report
}

fn write_junit(path: &Path, reports: &[(String, FileReport)]) -> Result<()> {
    let xml = junit_report(reports)
        .to_string()
        .context("serializing the JUnit report")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, xml).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| PathBuf::from(format!("s/{i:02}.yaml")))
            .collect()
    }

    #[test]
    fn shards_partition_the_files_whatever_their_order() {
        let all = files(10);
        let mut reversed = all.clone();
        reversed.reverse();
        let mut seen = Vec::new();
        for i in 1..=3 {
            let shard: Shard = format!("{i}/3").parse().unwrap();
            assert_eq!(shard.select(&all), shard.select(&reversed));
            seen.extend(shard.select(&all));
        }
        seen.sort();
        assert_eq!(seen, all);
    }

    #[test]
    fn bad_shards_are_refused_with_the_reason() {
        for (s, why) in [
            ("0/3", "1 ≤ I ≤ N"),
            ("4/3", "1 ≤ I ≤ N"),
            ("1/0", "1 ≤ I ≤ N"),
            ("x/3", "I is not a number"),
            ("2", "expected I/N"),
        ] {
            let e = s.parse::<Shard>().unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
