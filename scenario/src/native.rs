//! The native differential: a TCP scenario file whose chain is spiffe-authz-tcp, run once through
//! meshward (the harness, which the parity suites hold to Envoy) and once through real Envoy with
//! the Envoy network RBAC filters istiod would render for the same policies
//! ([`meshward_mesh::native_rbac`]) in place of the wasm filter. Per case the two must agree on
//! whether the connection went through; a case marked `stricterThanIstio: <why>` must show
//! meshward refusing what native RBAC lets through (so the mark cannot go stale).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::suite::{FileReport, FILE_LEVEL};
use crate::tcp::{fail_every_case, run_envoy_with, run_harness, TcpObserved, TcpScenario};

/// The filter whose native counterpart is rendered.
const FILTER: &str = "spiffe-authz-tcp";

/// The native network filters for the scenario's chain (one spiffe-authz-tcp entry).
pub fn native_filters(scenario: &TcpScenario) -> Result<Vec<Value>> {
    let [entry] = scenario.chain.as_slice() else {
        bail!("the native differential takes a chain of exactly one `{FILTER}`");
    };
    if entry.filter.as_deref() != Some(FILTER) {
        bail!("the native differential renders `{FILTER}` only");
    }
    let base = scenario.path.parent().unwrap_or(Path::new("."));
    let bytes = entry.config_bytes(base)?;
    let raw: spiffe_authz_core::RawConfig =
        serde_json::from_slice(&bytes).context("the spiffe-authz-tcp config")?;
    meshward_mesh::native_rbac::network_rbac_filters(&raw)
}

/// Whether the connection went through: some of what the client sent reached the upstream.
fn went_through(seen: &TcpObserved) -> bool {
    !seen.upstream_received.is_empty()
}

fn verdict(through: bool) -> &'static str {
    if through {
        "allowed"
    } else {
        "refused"
    }
}

/// Run `file` through meshward and through native RBAC, and compare case by case.
pub fn run_file(file: &Path, wasm_dir: &Path, verbose: bool) -> FileReport {
    let mut report = FileReport::default();
    let _ = writeln!(report.text, "{} (native differential)", file.display());
    let scenario = match TcpScenario::load(file) {
        Ok(s) => s,
        Err(e) => {
            report.fail(FILE_LEVEL, &format!("  FAIL  {e:#}"), "");
            return report;
        }
    };
    if let Some(case) = scenario.cases.iter().find(|c| c.send.is_empty()) {
        let why = format!(
            "  FAIL  case `{}` sends nothing: the differential needs bytes to see go through",
            case.name
        );
        report.fail(FILE_LEVEL, &why, "");
        return report;
    }
    let meshward = match run_harness(&scenario, wasm_dir) {
        Ok(o) => o,
        Err(e) => {
            fail_every_case(&mut report, &scenario, "meshward", &e);
            return report;
        }
    };
    let native =
        match native_filters(&scenario).and_then(|filters| run_envoy_with(&scenario, filters)) {
            Ok(o) => o,
            Err(e) => {
                fail_every_case(&mut report, &scenario, "native RBAC", &e);
                return report;
            }
        };
    for ((case, m), n) in scenario.cases.iter().zip(&meshward).zip(&native) {
        let (m, n) = (went_through(m), went_through(n));
        let diff = match (&case.stricter_than_istio, m == n) {
            (None, true) => None,
            (None, false) => Some(format!(
                "   meshward {}, native RBAC {}",
                verdict(m),
                verdict(n)
            )),
            (Some(_), _) if !m && n => None,
            (Some(why), _) => Some(format!(
                "   marked stricterThanIstio ({why}), but meshward {} and native RBAC {}",
                verdict(m),
                verdict(n)
            )),
        };
        match diff {
            None => report.pass(&case.name, verbose, || match &case.stricter_than_istio {
                Some(why) => format!(
                    "  ok    {} (meshward refused, native RBAC allowed: stricter on purpose: {})",
                    case.name,
                    why.trim()
                ),
                None => format!("  ok    {} (both {})", case.name, verdict(n)),
            }),
            Some(diff) => report.fail(&case.name, &format!("  FAIL  {}", case.name), &diff),
        }
    }
    report
}
