//! `meshward wasmplugin`: the flags, and the command over meshward-oci's renderer (see
//! [`meshward_oci::wasmplugin`]); `--check-wasm` also starts the filter in the harness. For
//! spiffe-authz-tcp the renderer checks the policy with the filter's parser, and the command
//! prints (stderr) which rules read HTTP-only fields and what that does on TCP.
//!
//! tests/tests/examples.rs parses the command lines at the top of examples/istio/*.yaml with
//! [`WasmPluginArgs`] and renders them with [`WasmPluginArgs::plugin`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};
use meshward_harness::{FilterSpec, Host, HostError};
use meshward_oci::wasmplugin::{
    check_policy, read_policy, render, Filter, Phase, PluginOptions, PluginType,
};
use serde_json::Value as Json;

#[derive(Args, Debug, Clone)]
pub struct WasmPluginArgs {
    /// The meshward filter, or `meshward`: the bundle of all four in one module (meshward.wasm).
    /// `spiffe-authz-tcp` (spiffe_authz_tcp.wasm) renders a `type: NETWORK` plugin for TCP
    /// services.
    #[arg(long, value_enum)]
    pub filter: FilterArg,
    /// Its pluginConfig: a JSON policy file (e.g. policies/header-limits/strict.json; for the
    /// bundle, one section per check, e.g. policies/meshward/all-four.json; spiffe-authz-tcp
    /// takes spiffe-authz's, e.g. policies/spiffe-authz/tcp-postgres.json).
    #[arg(long)]
    pub policy: PathBuf,
    /// The module: oci://HOST/REPO:TAG (or @sha256:…), or an http(s):// or file:// URL.
    #[arg(long)]
    pub image: String,
    /// The expected checksum, 64 hex digits. For oci:// the image MANIFEST digest that
    /// `meshward image push` prints as "WasmPlugin sha256", not the module's hash.
    #[arg(long)]
    pub sha256: Option<String>,
    /// metadata.name [default: meshward-<filter>; meshward for the bundle].
    #[arg(long)]
    pub name: Option<String>,
    /// metadata.namespace [default: none, i.e. kubectl's current namespace].
    #[arg(long)]
    pub namespace: Option<String>,
    /// A workload label KEY=VALUE for selector.matchLabels (repeatable). None: every workload in
    /// the namespace (the whole mesh in Istio's root namespace).
    #[arg(long = "selector", value_name = "KEY=VALUE")]
    pub selectors: Vec<String>,
    /// Where Istio inserts the filter [default: header-limits, jwt-authn and the bundle AUTHN,
    /// spiffe-authz and spiffe-authz-tcp AUTHZ, rate-limit STATS].
    #[arg(long, value_enum, ignore_case = true)]
    pub phase: Option<PhaseArg>,
    /// Order within the phase, higher first [default: header-limits and the bundle 1000,
    /// jwt-authn 900, spiffe-authz and spiffe-authz-tcp 500, rate-limit 100].
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Only traffic to this port (repeatable; match[].ports). None: every inbound port. For
    /// spiffe-authz-tcp give the TCP service's ports: Istio also puts NETWORK plugins in front
    /// of the HTTP connection manager of HTTP ports.
    #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Write the YAML here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Also start this .wasm in the harness with the policy, so that a policy the filter rejects
    /// fails here rather than in a proxy log.
    #[arg(long, value_name = "FILE.wasm")]
    pub check_wasm: Option<PathBuf>,
}

impl WasmPluginArgs {
    /// The renderer's options (everything but the policy file and the output).
    pub fn plugin(&self) -> PluginOptions {
        PluginOptions {
            filter: self.filter.0,
            image: self.image.clone(),
            sha256: self.sha256.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            selectors: self.selectors.clone(),
            phase: self.phase.map(|p| p.0),
            priority: self.priority,
            ports: self.ports.clone(),
        }
    }
}

/// `--filter`: a [`Filter`] by its name (`header-limits`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterArg(pub Filter);

impl ValueEnum for FilterArg {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [FilterArg; 6] = [
            FilterArg(Filter::HeaderLimits),
            FilterArg(Filter::JwtAuthn),
            FilterArg(Filter::SpiffeAuthz),
            FilterArg(Filter::RateLimit),
            FilterArg(Filter::Bundle),
            FilterArg(Filter::SpiffeAuthzTcp),
        ];
        &ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.name()))
    }
}

/// `--phase`: a WasmPlugin [`Phase`], spelled as in the CRD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseArg(pub Phase);

impl ValueEnum for PhaseArg {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [PhaseArg; 4] = [
            PhaseArg(Phase::Unspecified),
            PhaseArg(Phase::Authn),
            PhaseArg(Phase::Authz),
            PhaseArg(Phase::Stats),
        ];
        &ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        // Without the full stop, as clap prints the doc comment of a derived value.
        let help = self.0.description().trim_end_matches('.');
        Some(PossibleValue::new(self.0.as_str()).help(help))
    }
}

/// Runs the command: render, optionally check the policy with the real filter, write.
pub fn wasmplugin(args: WasmPluginArgs) -> Result<()> {
    let policy = read_policy(&args.policy)?;
    let filter = args.filter.0;
    let notes = check_policy(filter, &policy)?;
    if let Some(wasm) = &args.check_wasm {
        check_with_filter(wasm, filter, &policy)?;
    }
    let yaml = render(&args.plugin(), &policy)?;
    // Not errors: istiod renders such rules the same way for TCP (docs/deploy.md).
    for note in &notes {
        eprintln!("meshward: note: {}: {note}", filter.name());
    }
    if filter.plugin_type() == PluginType::Network && args.ports.is_empty() {
        eprintln!(
            "meshward: note: no --port: Istio inserts a NETWORK plugin on every inbound port of \
             the workload, HTTP ports (in front of the HTTP connection manager) included"
        );
    }
    // The command line heads the file, so the resource says where it came from (and the
    // examples test can re-render it).
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let out = format!("# meshward {}\n{yaml}", argv.join(" "));
    if args.sha256.is_none() && !args.image.contains("@sha256:") {
        eprintln!(
            "meshward: note: no --sha256 and no @sha256: digest in --image: the proxy will not \
             verify what it pulls (use the \"WasmPlugin sha256\" from `meshward image push`)"
        );
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            print!("{out}");
            Ok(())
        }
    }
}

/// Starts the filter in the harness with `policy`: its own on_configure decides.
fn check_with_filter(wasm: &Path, filter: Filter, policy: &Json) -> Result<()> {
    let spec = FilterSpec::from_file(wasm)
        .with_context(|| format!("loading {}", wasm.display()))?
        .name(filter.name())
        .config_json(&policy.to_string());
    match Host::builder().filter(spec).build() {
        Ok(_) => Ok(()),
        Err(HostError::ConfigRejected { logs, .. }) => {
            let lines: Vec<String> = logs.iter().map(|l| l.message.clone()).collect();
            bail!(
                "{} rejects the policy:\n  {}",
                filter.name(),
                lines.join("\n  ")
            )
        }
        Err(e) => Err(anyhow!(e).context(format!("starting {}", wasm.display()))),
    }
}
