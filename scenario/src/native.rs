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

use crate::check::Observed;
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
    compare_tcp(
        &scenario,
        &meshward,
        &native,
        "native RBAC",
        verbose,
        &mut report,
    );
    report
}

/// Per TCP case: meshward and the native rendering agree on whether the connection went through,
/// or the case is marked `stricterThanIstio` and meshward refused what the native side let in.
pub(crate) fn compare_tcp(
    scenario: &TcpScenario,
    meshward: &[TcpObserved],
    native: &[TcpObserved],
    native_name: &str,
    verbose: bool,
    report: &mut FileReport,
) {
    for ((case, m), n) in scenario.cases.iter().zip(meshward).zip(native) {
        let m = verdict(went_through(m));
        let n = verdict(went_through(n));
        judge(
            &case.name,
            case.stricter_than_istio.as_deref(),
            (m, m == "allowed"),
            n,
            native_name,
            verbose,
            report,
        );
    }
}

/// One HTTP answer in a line: `refused` (no HTTP response), or the status and whether the
/// request reached the upstream.
pub(crate) fn http_answer(seen: &Observed) -> String {
    if seen.refused {
        return "connection refused".into();
    }
    let reached = if seen.reached_upstream {
        "reached the upstream"
    } else {
        "did not reach the upstream"
    };
    format!("{} ({reached})", seen.status)
}

/// Per HTTP case: meshward and native Istio give the same status (and the request reaches the
/// upstream in both or neither), or the case is marked `stricterThanIstio` and meshward kept from
/// the upstream what native Istio let through.
pub(crate) fn compare_http(
    case: &str,
    stricter_than_istio: Option<&str>,
    meshward: &Observed,
    native: &Observed,
    verbose: bool,
    report: &mut FileReport,
) {
    let m = http_answer(meshward);
    let n = http_answer(native);
    judge(
        case,
        stricter_than_istio,
        (&m, meshward.reached_upstream),
        &n,
        "native Istio",
        verbose,
        report,
    );
}

/// The verdict on one case of either kind: each side's answer in words (and whether meshward let
/// the caller through). A `stricterThanIstio` mark holds where meshward refused and native Istio
/// answered otherwise (let it through, or refused it differently).
fn judge(
    case: &str,
    stricter_than_istio: Option<&str>,
    (m, m_through): (&str, bool),
    n: &str,
    native_name: &str,
    verbose: bool,
    report: &mut FileReport,
) {
    let diff = match (stricter_than_istio, m == n) {
        (None, true) => None,
        (None, false) => Some(format!("   meshward: {m}\n   {native_name}: {n}")),
        // meshward refused, and native Istio let it through or refused differently.
        (Some(_), false) if !m_through => None,
        (Some(why), _) => Some(format!(
            "   marked stricterThanIstio ({}), but meshward: {m}; {native_name}: {n}",
            why.trim()
        )),
    };
    match diff {
        None => report.pass(case, verbose, || match stricter_than_istio {
            Some(why) => format!(
                "  ok    {case} (meshward {m}, {native_name} {n}: meshward stricter on purpose: {})",
                why.trim()
            ),
            None => format!("  ok    {case} (both {n})"),
        }),
        Some(diff) => report.fail(case, &format!("  FAIL  {case}"), &diff),
    }
}
