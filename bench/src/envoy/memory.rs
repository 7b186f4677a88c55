//! Envoy's resident memory per configuration: one Envoy per configuration, holding only its
//! listener, at `--concurrency 2` (a VM per wasm filter on the main thread and on each worker),
//! after traffic has gone through both workers. The difference to the router-only Envoy is what
//! the filters cost in memory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use meshward_rig::{Certs, Client, Envoy, EnvoyConfig};

use crate::envoy::load::{self, Load};
use crate::envoy::setups::{listener_json, Plan};
use crate::envoy::{rss_kib, BenchOptions};

/// Worker threads of the memory measurement (the issue's `--concurrency 2`).
pub const CONCURRENCY: u32 = 2;

/// One configuration's resident memory.
#[derive(Debug, Clone)]
pub struct Memory {
    pub name: String,
    pub listener: String,
    /// VmRSS after the warm traffic, KiB.
    pub rss_kib: u64,
}

/// The RSS of an Envoy holding only `listener` of `plan`, for each `(name, listener)`.
pub fn measure(
    plan: &Plan,
    which: &[(&str, &str)],
    upstream: std::net::SocketAddr,
    certs: &Certs,
    client_cert: &meshward_rig::ClientCert,
    options: &BenchOptions,
) -> Result<Vec<Memory>> {
    let mut out = Vec::new();
    for (name, listener) in which {
        let spec = plan
            .listeners
            .iter()
            .find(|l| l.name == *listener)
            .ok_or_else(|| anyhow!("no listener {listener}"))?;
        let setup = plan
            .setups
            .iter()
            .find(|s| s.listener == *listener)
            .ok_or_else(|| anyhow!("no configuration on listener {listener}"))?;
        let config = EnvoyConfig::new(upstream)
            .concurrency(CONCURRENCY)
            .component_log_levels("wasm:warn")
            .raw_listener(listener_json(spec, certs));
        let envoy = Envoy::start(&config).with_context(|| format!("Envoy for {listener}"))?;
        let addr = crate::envoy::listener_addresses(&envoy, 1)?
            .first()
            .map(|(_, a)| *a)
            .ok_or_else(|| anyhow!("listener {listener} not bound"))?;
        // Enough connections that both workers serve some (Envoy spreads connections over them).
        load::run(
            &Load {
                client: Client::tls(addr, certs, Some(client_cert))?,
                requests: Arc::new(setup.requests.clone()),
                connections: options.connections.max(4),
                duration: options.warmup.max(Duration::from_millis(500)),
                expect_status: 200,
            },
            &mut crate::envoy::nothing,
            &mut crate::envoy::nothing,
        )
        .with_context(|| format!("traffic for the memory of {listener}"))?;
        out.push(Memory {
            name: name.to_string(),
            listener: listener.to_string(),
            rss_kib: rss_kib(envoy.pid())?,
        });
    }
    Ok(out)
}
