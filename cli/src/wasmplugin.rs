//! `meshward wasmplugin`: the flags, and the command over meshward-oci's renderer (see
//! [`meshward_oci::wasmplugin`]); `--check-wasm` also starts the filter in the harness. For
//! spiffe-authz-tcp the renderer checks the policy with the filter's parser, and the command
//! prints (stderr) which rules read HTTP-only fields and what that does on TCP.
//!
//! `--from-istio` ([`FromIstioArgs`], [`from_istio`]) renders the WasmPlugins of one workload
//! instead, from the Istio YAML in Git: the chain meshward-mesh selects and compiles for it, with
//! the very pluginConfigs a mesh scenario of that workload runs (tests/tests/wasmplugin_from_istio.rs
//! compares them with the runner's).
//!
//! tests/tests/examples.rs parses the command lines at the top of examples/istio/*.yaml with
//! [`WasmPluginArgs`] and renders them with [`WasmPluginArgs::plugin`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};
use meshward_harness::{FilterSpec, Host, HostError};
use meshward_mesh::{deployment, select, CustomPolicies, MeshSettings, Workload};
use meshward_oci::wasmplugin::{
    check_dns_label, check_policy, parse_label, read_policy, render, Filter, Phase, PluginOptions,
    PluginType,
};
use serde_json::Value as Json;

/// `meshward wasmplugin`: one plugin from `--filter`, `--policy` and `--image`, or a workload's
/// plugins from `--from-istio`.
#[derive(Args, Debug, Clone)]
pub struct WasmPluginCommand {
    /// One plugin (absent with --from-istio).
    #[command(flatten)]
    pub single: Option<WasmPluginArgs>,
    /// Write the YAML here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(
        flatten,
        next_help_heading = "A workload's plugins from Istio resources (instead of --filter, --policy, --image)"
    )]
    pub from_istio: FromIstioArgs,
}

/// `--from-istio`: the WasmPlugins for one workload, from the Istio YAML in Git.
///
/// Every flag here conflicts with every flag of [`WasmPluginArgs`]: `--from-istio`'s conflict
/// waives clap's required `--filter`, `--policy` and `--image`, and the others' keeps them from
/// being ignored beside `--filter` (their `requires = "from_istio"` alone would be waived the same
/// way). What `--from-istio` itself needs (`--workload`, `--image-prefix`) [`from_istio`]
/// checks: clap's message for a missing required argument would also list the waived ones.
#[derive(Args, Debug, Clone)]
pub struct FromIstioArgs {
    /// Istio YAML: files and directories, as a mesh scenario's `mesh.resources` — or one mesh
    /// scenario file, which then gives the resources, --workload, --label, --tcp-port and
    /// --root-namespace (deploy exactly the workload it tests). The
    /// AuthorizationPolicies and RequestAuthentications that apply to --workload (as istiod
    /// selects them) become a jwt-authn plugin (when a RequestAuthentication applies), a
    /// spiffe-authz plugin and, with --tcp-port, a spiffe-authz-tcp NETWORK plugin, in one
    /// multi-document YAML; their pluginConfigs are the ones `meshward test` runs for a mesh
    /// scenario of that workload. PeerAuthentication stays with Istio. A CUSTOM policy that
    /// applies is refused (see --leave-custom-to-istio).
    #[arg(
        long = "from-istio",
        value_name = "PATH",
        num_args = 1..,
        conflicts_with = "WasmPluginArgs"
    )]
    pub from_istio: Vec<PathBuf>,
    /// The workload as NAMESPACE/SERVICEACCOUNT (a mesh scenario's workload.namespace and
    /// .serviceAccount): every plugin's metadata.namespace; the service account names them,
    /// meshward-<sa>-<filter>.
    #[arg(
        long,
        value_name = "NS/SA",
        requires = "from_istio",
        conflicts_with = "WasmPluginArgs"
    )]
    pub workload: Option<String>,
    /// A label of the workload's pods, KEY=VALUE (repeatable, at least one; workload.labels):
    /// which resources' selectors match, and every plugin's selector.matchLabels.
    #[arg(
        long = "label",
        value_name = "KEY=VALUE",
        requires = "from_istio",
        conflicts_with = "WasmPluginArgs"
    )]
    pub labels: Vec<String>,
    /// A port the workload's Service declares TCP (repeatable; workload.tcpPorts): adds the
    /// spiffe-authz-tcp NETWORK plugin with match.ports = these ports (give the Service port;
    /// keep it equal to the targetPort). The HTTP plugins need no exclusion: Istio inserts them
    /// only into HTTP connection managers, which a TCP port's chain does not have.
    #[arg(long = "tcp-port", value_name = "PORT", requires = "from_istio", conflicts_with = "WasmPluginArgs",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub tcp_ports: Vec<u16>,
    /// Pin jwt-authn and spiffe-authz to these ports (repeatable; match.ports, the container
    /// port) [default: none, every HTTP port of the workload, as `meshward test` runs the chain
    /// on every port not in tcpPorts].
    #[arg(long = "http-port", value_name = "PORT", requires = "from_istio", conflicts_with = "WasmPluginArgs",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub http_ports: Vec<u16>,
    /// Where `meshward image push` put the filters: each plugin's url is
    /// <PREFIX>/<filter>:<tag> (jwt-authn, spiffe-authz, spiffe-authz-tcp), or
    /// <PREFIX>/<filter>@sha256:<digest> with --digest and no --tag.
    #[arg(
        long = "image-prefix",
        value_name = "oci://HOST/REPO",
        requires = "from_istio",
        conflicts_with = "WasmPluginArgs"
    )]
    pub image_prefix: Option<String>,
    /// The images' tag (every plugin's).
    #[arg(long, requires = "from_istio", conflicts_with = "WasmPluginArgs")]
    pub tag: Option<String>,
    /// FILTER=DIGEST (repeatable): the "WasmPlugin sha256" `meshward image push` printed for that
    /// filter's image (the manifest digest). It becomes the plugin's sha256, which the proxy
    /// checks; without --tag it also pins the url. A filter without one is not verified (a
    /// note).
    #[arg(
        long = "digest",
        value_name = "FILTER=DIGEST",
        requires = "from_istio",
        conflicts_with = "WasmPluginArgs"
    )]
    pub digests: Vec<String>,
    /// The mesh's root namespace (its policies apply mesh-wide).
    #[arg(
        long,
        value_name = "NS",
        default_value = "istio-system",
        requires = "from_istio",
        conflicts_with = "WasmPluginArgs"
    )]
    pub root_namespace: String,
    /// A CUSTOM policy that applies is then not an error: it stays with Istio, whose ext_authz
    /// runs before every plugin, and spiffe-authz carries it as AUDIT — the chain `meshward
    /// test` runs for `customAuthz: allow` (keep the policy applied).
    #[arg(long, requires = "from_istio", conflicts_with = "WasmPluginArgs")]
    pub leave_custom_to_istio: bool,
    /// metadata.name is <PREFIX>-<filter> [default: meshward-<service account>].
    #[arg(
        long,
        value_name = "PREFIX",
        requires = "from_istio",
        conflicts_with = "WasmPluginArgs"
    )]
    pub name_prefix: Option<String>,
}

/// One rendered plugin of [`from_istio`].
#[derive(Debug, Clone)]
pub struct RenderedPlugin {
    pub filter: Filter,
    /// Its pluginConfig, as compiled.
    pub config: Json,
    /// The WasmPlugin YAML document (no leading `---`).
    pub yaml: String,
}

/// What [`from_istio`] renders.
#[derive(Debug, Clone)]
pub struct FromIstio {
    /// In chain order: jwt-authn (if any), spiffe-authz, spiffe-authz-tcp (with --tcp-port).
    pub plugins: Vec<RenderedPlugin>,
    /// What the reader should know (stderr, `meshward: note: …`).
    pub notes: Vec<String>,
}

impl FromIstio {
    /// One multi-document YAML.
    pub fn yaml(&self) -> String {
        let docs: Vec<&str> = self.plugins.iter().map(|p| p.yaml.as_str()).collect();
        docs.join("---\n")
    }
}

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

/// Runs the command: one plugin, or with --from-istio a workload's plugins.
pub fn wasmplugin(command: WasmPluginCommand) -> Result<()> {
    // The command line heads the file, so the resource says where it came from (and the
    // examples test can re-render it).
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let head = format!("# meshward {}\n", argv.join(" "));
    let yaml = match &command.single {
        Some(args) => single(args)?,
        None => {
            let rendered = from_istio(&command.from_istio)?;
            for note in &rendered.notes {
                eprintln!("meshward: note: {note}");
            }
            rendered.yaml()
        }
    };
    let out = format!("{head}{yaml}");
    match &command.output {
        Some(path) => {
            std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            print!("{out}");
            Ok(())
        }
    }
}

/// One plugin: render, optionally check the policy with the real filter; notes on stderr.
fn single(args: &WasmPluginArgs) -> Result<String> {
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
    if args.sha256.is_none() && !args.image.contains("@sha256:") {
        eprintln!(
            "meshward: note: no --sha256 and no @sha256: digest in --image: the proxy will not \
             verify what it pulls (use the \"WasmPlugin sha256\" from `meshward image push`)"
        );
    }
    Ok(yaml)
}

/// The filters `--from-istio` may render, by name (for --digest).
const FROM_ISTIO_FILTERS: [Filter; 3] = [
    Filter::JwtAuthn,
    Filter::SpiffeAuthz,
    Filter::SpiffeAuthzTcp,
];

/// `--from-istio`: select and compile the resources for the workload as the mesh scenario runner
/// does ([`meshward_mesh::deployment`]), then render one plugin per filter of the chain. Refuses,
/// naming the resource, what cannot be deployed as tested (a CUSTOM policy, unless
/// --leave-custom-to-istio).
pub fn from_istio(args: &FromIstioArgs) -> Result<FromIstio> {
    if args.from_istio.is_empty() {
        bail!("--from-istio: give the Istio YAML files or directories");
    }
    if let Some(from_scenario) = scenario_args(args)? {
        return from_istio(&from_scenario);
    }
    let workload_arg = args
        .workload
        .as_deref()
        .ok_or_else(|| anyhow!("--from-istio needs --workload NAMESPACE/SERVICEACCOUNT"))?;
    let (namespace, service_account) = workload_arg
        .split_once('/')
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains('/'))
        .ok_or_else(|| anyhow!("--workload {workload_arg}: expected NAMESPACE/SERVICEACCOUNT"))?;
    check_dns_label("--workload", namespace)?;
    let mut labels = BTreeMap::new();
    for pair in &args.labels {
        let (key, value) = parse_label("--label", pair)?;
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            bail!("--label {pair}: the label is given twice");
        }
    }
    if labels.is_empty() {
        bail!(
            "--from-istio needs the workload's labels (--label KEY=VALUE): they select the \
             resources, and without them the plugins would select every workload of namespace \
             `{namespace}`"
        );
    }
    check_ports("--tcp-port", &args.tcp_ports)?;
    check_ports("--http-port", &args.http_ports)?;
    if let Some(p) = args.tcp_ports.iter().find(|p| args.http_ports.contains(p)) {
        bail!("--http-port {p} and --tcp-port {p}: a port is HTTP or TCP, not both");
    }
    let images = Images::parse(args)?;
    let prefix = args
        .name_prefix
        .clone()
        .unwrap_or_else(|| format!("meshward-{service_account}"));

    let loaded = meshward_mesh::load(&args.from_istio)?;
    let workload = Workload {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        labels,
        // Not read by select or compile (the port of a scenario's requests).
        port: args.http_ports.first().copied().unwrap_or(0),
    };
    workload.check()?;
    let mesh = MeshSettings {
        root_namespace: args.root_namespace.clone(),
        ..MeshSettings::default()
    };
    let selection = select(&loaded.resources, &mesh, &workload);
    let custom = if args.leave_custom_to_istio {
        CustomPolicies::LeaveToIstio
    } else {
        CustomPolicies::Refuse
    };
    let deployment =
        deployment(&selection, custom).with_context(|| format!("workload {workload_arg}"))?;

    let mut notes: Vec<String> = loaded.notes.clone();
    // As `meshward test` reports them: selector misses are many and expected.
    for (r, why) in &selection.not_applied {
        if !why.starts_with("selector") {
            notes.push(format!("not applied: {}: {why}", r.id));
        }
    }
    let applied: Vec<String> = selection
        .authorization
        .iter()
        .chain(&selection.request_authentication)
        .map(|r| r.id.to_string())
        .collect();
    notes.push(format!(
        "{workload_arg}: {}",
        if applied.is_empty() {
            "no AuthorizationPolicy or RequestAuthentication applies".to_string()
        } else {
            format!("from {}", applied.join(", "))
        }
    ));
    notes.extend(deployment.notes.iter().cloned());

    let compiled = &deployment.compiled;
    let mut chain: Vec<(Filter, &Json, &[u16])> = Vec::new();
    match &compiled.jwt_authn {
        Some(config) => chain.push((Filter::JwtAuthn, config, &args.http_ports)),
        None => notes.push(
            "no RequestAuthentication applies: no jwt-authn plugin (spiffe-authz sees no request \
             principal, as in `meshward test`)"
                .to_string(),
        ),
    }
    chain.push((
        Filter::SpiffeAuthz,
        &compiled.spiffe_authz,
        &args.http_ports,
    ));
    if !args.tcp_ports.is_empty() {
        // The runner's TCP scenarios feed spiffe-authz-tcp the same config.
        chain.push((
            Filter::SpiffeAuthzTcp,
            &compiled.spiffe_authz,
            &args.tcp_ports,
        ));
        if args.http_ports.is_empty() {
            notes.push(
                "the HTTP plugins carry no match.ports: a WasmPlugin's match selects \
                 ports and cannot exclude the TCP ones, and need not: istiod inserts HTTP \
                 plugins only into HTTP connection managers, which the chain of a port the \
                 Service declares TCP does not have (--http-port pins them to listed ports)"
                    .to_string(),
            );
        }
    }

    let mut plugins = Vec::new();
    for (filter, config, ports) in chain {
        let name = format!("{prefix}-{}", filter.name());
        check_dns_label("metadata.name", &name).with_context(|| {
            format!(
                "naming the {} plugin (<--name-prefix>-<filter>, by default \
                 meshward-<service account>-<filter>): choose another --name-prefix",
                filter.name()
            )
        })?;
        // spiffe-authz-tcp: the TCP rules' notes (HTTP-only fields), as `--filter
        // spiffe-authz-tcp` prints them.
        let filter_notes = check_policy(filter, config)
            .with_context(|| format!("the compiled AuthorizationPolicies of {workload_arg}"))?;
        for note in filter_notes {
            notes.push(format!("{}: {note}", filter.name()));
        }
        let (image, sha256) = images.of(filter)?;
        let options = PluginOptions {
            filter,
            image,
            sha256,
            name: Some(name),
            namespace: Some(namespace.to_string()),
            selectors: args.labels.clone(),
            phase: None,
            priority: None,
            ports: ports.to_vec(),
        };
        let yaml = render(&options, config)
            .with_context(|| format!("rendering the {} WasmPlugin", filter.name()))?;
        plugins.push(RenderedPlugin {
            filter,
            config: config.clone(),
            yaml,
        });
    }
    notes.extend(images.notes(&plugins));
    Ok(FromIstio { plugins, notes })
}

/// `--from-istio SCENARIO.yaml`: a mesh scenario file alone stands for its Istio YAML, workload
/// (namespace, service account, labels), TCP ports and root namespace — deploy exactly the
/// workload that was tested. `None` when the paths are Istio YAML.
fn scenario_args(args: &FromIstioArgs) -> Result<Option<FromIstioArgs>> {
    let [file] = args.from_istio.as_slice() else {
        return Ok(None);
    };
    let is_scenario = file.is_file()
        && std::fs::read_to_string(file).is_ok_and(|t| meshward_scenario::mesh::is_mesh_file(&t));
    if !is_scenario {
        return Ok(None);
    }
    if args.workload.is_some() || !args.labels.is_empty() || !args.tcp_ports.is_empty() {
        bail!(
            "--from-istio {}: a mesh scenario file gives the workload, its labels and its TCP \
             ports; drop --workload, --label and --tcp-port (or name the Istio YAML instead)",
            file.display()
        );
    }
    let scenario = meshward_scenario::mesh::MeshScenario::load(file)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let w = &scenario.workload;
    let mut out = args.clone();
    out.from_istio = scenario
        .mesh
        .resources
        .iter()
        .map(|r| base.join(r))
        .collect();
    out.workload = Some(format!("{}/{}", w.namespace, w.service_account));
    out.labels = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.tcp_ports = w.tcp_ports.clone();
    out.root_namespace = scenario.mesh.root_namespace.clone();
    Ok(Some(out))
}

fn check_ports(flag: &str, ports: &[u16]) -> Result<()> {
    for (i, p) in ports.iter().enumerate() {
        if ports.iter().take(i).any(|q| q == p) {
            bail!("{flag} {p}: the port is given twice");
        }
    }
    Ok(())
}

/// The image of each filter: --image-prefix, --tag, --digest.
struct Images {
    prefix: String,
    tag: Option<String>,
    /// Filter → 64 lowercase hex digits.
    digests: Vec<(Filter, String)>,
}

impl Images {
    fn parse(args: &FromIstioArgs) -> Result<Self> {
        let raw = args
            .image_prefix
            .as_deref()
            .ok_or_else(|| anyhow!("--from-istio needs --image-prefix oci://HOST/REPO"))?;
        let prefix = raw.trim_end_matches('/');
        let rest = prefix.strip_prefix("oci://").unwrap_or("");
        let last = rest.rsplit_once('/').map_or("", |(_, last)| last);
        if rest.is_empty()
            || rest.contains('@')
            || last.contains(':')
            || rest.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            bail!(
                "--image-prefix {raw}: expected oci://HOST/REPO (no tag or digest: the plugins' \
                 images are <prefix>/<filter>:<tag>)"
            );
        }
        if let Some(tag) = &args.tag {
            let ok = tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                bail!("--tag {tag}: not an OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})");
            }
        }
        let mut digests: Vec<(Filter, String)> = Vec::new();
        for pair in &args.digests {
            let (name, digest) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("--digest {pair}: expected FILTER=DIGEST"))?;
            let filter = FROM_ISTIO_FILTERS
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| {
                    anyhow!(
                        "--digest {pair}: `{name}` is not one of {}",
                        FROM_ISTIO_FILTERS.map(Filter::name).join(", ")
                    )
                })?;
            let hex = digest
                .strip_prefix("sha256:")
                .unwrap_or(digest)
                .to_ascii_lowercase();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("--digest {pair}: expected 64 hex digits (sha256: prefix optional)");
            }
            if digests.iter().any(|(f, _)| *f == filter) {
                bail!("--digest {pair}: {name} is given twice");
            }
            digests.push((filter, hex));
        }
        Ok(Self {
            prefix: prefix.to_string(),
            tag: args.tag.clone(),
            digests,
        })
    }

    fn digest(&self, filter: Filter) -> Option<&String> {
        self.digests
            .iter()
            .find(|(f, _)| *f == filter)
            .map(|(_, d)| d)
    }

    /// (url, sha256) of `filter`'s plugin.
    fn of(&self, filter: Filter) -> Result<(String, Option<String>)> {
        let repo = format!("{}/{}", self.prefix, filter.name());
        let digest = self.digest(filter).cloned();
        let url = match (&self.tag, &digest) {
            (Some(tag), _) => format!("{repo}:{tag}"),
            (None, Some(d)) => format!("{repo}@sha256:{d}"),
            (None, None) => bail!(
                "the {} image {repo}: give --tag, or --digest {}=<WasmPlugin sha256>",
                filter.name(),
                filter.name()
            ),
        };
        Ok((url, digest))
    }

    /// Digests that pin nothing rendered, and plugins the proxy will not verify.
    fn notes(&self, plugins: &[RenderedPlugin]) -> Vec<String> {
        let mut notes = Vec::new();
        for (filter, _) in &self.digests {
            if !plugins.iter().any(|p| p.filter == *filter) {
                notes.push(format!(
                    "--digest {}=…: no {} plugin for this workload",
                    filter.name(),
                    filter.name()
                ));
            }
        }
        let unverified: Vec<&str> = plugins
            .iter()
            .filter(|p| self.digest(p.filter).is_none())
            .map(|p| p.filter.name())
            .collect();
        if !unverified.is_empty() {
            notes.push(format!(
                "no --digest for {}: the proxy will not verify what it pulls (use the \
                 \"WasmPlugin sha256\" from `meshward image push`)",
                unverified.join(", ")
            ));
        }
        notes
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
