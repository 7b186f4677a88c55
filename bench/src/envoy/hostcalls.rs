//! Host calls and wasm instructions per request per filter, for each configuration with wasm
//! filters: Envoy has no counter for them, so the same modules with the same configurations get
//! the same requests in the harness, whose count of `env.proxy_*` calls per filter is exact
//! (`Outcome::filter_hostcalls`), and which meters the wasm instructions each filter executes
//! (`Outcome::filter_fuel`, when [`meshward_harness::meter_guest_instructions`] came first).

use anyhow::{anyhow, Context, Result};
use meshward_harness::{ClockMode, FilterSpec, Host, Request, Tls};
use meshward_rig::Request as RigRequest;

use crate::envoy::setups::WasmEntry;
use crate::envoy::CLIENT_SPIFFE_ID;

/// What each wasm filter of a chain did for the measured request (chain order).
#[derive(Debug, Default)]
pub struct Counted {
    pub hostcalls: Vec<(String, u64)>,
    /// Empty unless the harness meters instructions.
    pub fuel: Vec<(String, u64)>,
}

/// The host calls (and wasm instructions) each filter of `chain` spends on the last of `sample`,
/// after the ones before it (which warm the caches). Empty for a chain without wasm filters.
pub fn count(chain: &[WasmEntry], sample: &[RigRequest], metered: bool) -> Result<Counted> {
    if chain.is_empty() {
        return Ok(Counted::default());
    }
    // Wall-clock time, as in Envoy: the tokens were signed at bench time.
    let mut builder = Host::builder().clock(ClockMode::Real);
    for w in chain {
        builder = builder.filter(
            FilterSpec::from_file(&w.module)
                .with_context(|| format!("loading {}", w.module.display()))?
                .name(&w.filter)
                .config_json(&w.config),
        );
    }
    let host = builder.build().context("starting the harness")?;
    let mut last = None;
    for request in sample {
        last = Some(host.send(&to_harness(request)?));
    }
    let outcome = last.ok_or_else(|| anyhow!("no request to count host calls with"))?;
    if outcome.status() != 200 {
        return Err(anyhow!(
            "the harness answered the measured request with {} (Envoy: 200)",
            outcome.status()
        ));
    }
    Ok(Counted {
        hostcalls: outcome.filter_hostcalls,
        fuel: if metered {
            outcome.filter_fuel
        } else {
            Vec::new()
        },
    })
}

/// The benchmark's request as the harness takes it, over mTLS from the benchmark client.
fn to_harness(r: &RigRequest) -> Result<Request> {
    let target = std::str::from_utf8(&r.target).context("request-target")?;
    let mut out = Request::new(&r.method, target).tls(Tls::peer(CLIENT_SPIFFE_ID));
    if let Some(authority) = &r.authority {
        out = out.authority(authority);
    }
    for (name, value) in &r.headers {
        out = out.header(
            std::str::from_utf8(name).context("header name")?,
            std::str::from_utf8(value).context("header value")?,
        );
    }
    Ok(out)
}
