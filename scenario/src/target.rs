//! Where a scenario's cases run. The harness ([`HarnessTarget`](crate::HarnessTarget)) and a real
//! Envoy ([`EnvoyTarget`](crate::EnvoyTarget)) both start from the scenario's chain, listener and
//! clusters, answer each case with an [`Observed`], and are checked by the same rules.

use anyhow::Result;

use crate::check::Observed;
use crate::model::{Case, Scenario};

/// A started filter chain that answers a scenario's cases, one after the other (state such as
/// metrics, shared data and the clock carries over from case to case, as in one proxy).
pub trait Target {
    /// Send one case's request (after its `advance`, `repeat` times) and observe what the client
    /// and the upstream saw.
    fn run_case(&self, case: &Case) -> Result<Observed>;
}

/// Every case of `scenario` on `target`, in order; one observation per case.
pub fn run_cases(target: &dyn Target, scenario: &Scenario) -> Result<Vec<Observed>> {
    scenario
        .cases
        .iter()
        .map(|case| target.run_case(case))
        .collect()
}
