//! `meshward render --native SCENARIO`: the Envoy configuration istiod would give the workload of
//! a mesh scenario — its inbound listeners (PeerAuthentication's filter chains) with the HTTP
//! connection manager's path handling, `jwt_authn` and the RBAC filters, or on a TCP port the
//! network RBAC filters. This is what `meshward test --native` runs in Envoy beside meshward.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use meshward_scenario::mesh::MeshScenario;

#[derive(Args)]
pub struct RenderArgs {
    /// Render what native Istio (istiod) would configure, instead of meshward's filters. The only
    /// rendering there is today; the flag says which one you get.
    #[arg(long, required = true)]
    native: bool,
    /// A mesh scenario file: its Istio YAML, its workload, and the ports its cases use.
    scenario: PathBuf,
}

pub fn run(args: RenderArgs) -> Result<()> {
    if !args.native {
        bail!("give --native (the rendering istiod would give the workload)");
    }
    let scenario = MeshScenario::load(&args.scenario)?;
    print!("{}", meshward_scenario::mesh::render_native(&scenario)?);
    Ok(())
}
