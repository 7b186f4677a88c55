//! `meshward`: run proxy-wasm filters natively the way Envoy runs them.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use meshward_cli as cli;

/// mimalloc, not glibc's malloc: a request through the harness makes many small, short-lived
/// allocations, and `meshward bench` measured glibc's allocator as the largest single cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SCENARIO_HELP: &str = "\
A scenario file (YAML) holds one filter chain and the cases to send through it:

  description: header-limits with a 64 KiB budget
  listener: {maxRequestHeadersKb: 96, maxHeadersCount: 100, port: 18080}   # optional
  chain:                                   # request order
    - filter: header-limits                # <wasm dir>/header_limits.wasm, or `module: x.wasm`
      config: {maxRequestHeadersKb: 64}    # pluginConfig inline, or `configFile: policy.json`
  cases:
    - name: a 70 KB header is refused
      advance: 500ms                       # optional: let time pass first (virtual; Envoy sleeps)
      request:
        method: GET                        # default GET
        path: /                            # request-target, byte for byte
        authority: example.com             # default example.com
        headers:                           # a list: order kept, duplicates allowed
          - {name: x-big, repeat: a, times: 71680}
          - {name: x-a, value: '1'}
        tls: {peer: 'spiffe://cluster.local/ns/default/sa/frontend'}   # mTLS; {} = TLS, no client cert
        source: 127.0.0.2                  # client address (loopback)
      expect:
        status: 431                        # 200 = the echo upstream answered
        upstream: false                    # default: status == 200
        body: {contains: Request Header Fields Too Large}
        upstreamHeaders: {present: [], absent: [], equal: {}}   # as the upstream received them
        responseHeaders: {present: [], absent: [], equal: {}}
        metrics: {header_limits.rejected.size: 1}              # cumulative

Paths are relative to the scenario file. Filters named by `filter:` are looked up in the wasm
directory (--wasm-dir, $MESHWARD_WASM_DIR, or target/wasm32-wasip1/release of the enclosing
workspace). `filter: meshward` is the bundle (meshward.wasm): the four checks in one module, its
config one section per check ({headerLimits: {…}, jwtAuthn: {…}, spiffeAuthz: {…},
rateLimit: {…}}, each optional; see docs/bundle.md). The upstream is an echo server: it answers 200 with a JSON copy of the request.
See docs/scenarios.md for every field.

An installed meshward (scripts/install.sh) carries the filters, as `meshward --version` says,
and when no wasm directory is given and the workspace's holds none of them it uses its own
copies, written once to $XDG_CACHE_HOME/meshward/ (~/.cache/meshward/).

A mesh scenario tests Istio resources instead of a chain: the AuthorizationPolicy,
RequestAuthentication and PeerAuthentication YAML that applies to the workload (as istiod
selects it) becomes the jwt-authn and spiffe-authz chain and the listener's mTLS mode:

  mesh:
    resources: [policies/]                 # files and directories of Istio YAML
    rootNamespace: istio-system            # default
    trustDomain: cluster.local             # default
    jwks: {'https://idp.example.com/jwks.json': {bodyFile: jwks.json}}   # what each jwksUri answers
  workload: {namespace: payments, serviceAccount: ledger, labels: {app: ledger}, port: 9080}
  cases:
    - name: checkout reads the ledger
      request:
        from: {namespace: shop, serviceAccount: checkout}   # or: plaintext, or {spiffe: URI}
        port: 9080                         # default workload.port
        method: GET
        path: /ledger/42
      customAuthz: allow                   # the external authorizer's answer, when a CUSTOM policy matches
      expect:
        status: 200                        # or refused: true (the connection is refused)
        decidedBy: payments/ledger-read    # or 'payments/ledger-read rules[0]', or none

See docs/istio.md.";

#[derive(Parser)]
#[command(
    name = "meshward",
    version = cli::version(),
    about = "Run proxy-wasm filters natively, the way Envoy runs them: test and benchmark meshward policies on a laptop."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files through the harness (and with --envoy, through real Envoy too).
    #[command(after_long_help = SCENARIO_HELP)]
    Test(cli::TestArgs),
    /// One request against Istio resources: what the .wasm filters answer, which policy decides,
    /// and for every applicable policy whether each rule matched or the first condition that failed.
    Explain(cli::ExplainArgs),
    /// The traps in Istio security YAML (the permissive-mode trap, request principals nobody
    /// validates, paths a normalized request never matches, what meshward cannot evaluate), each
    /// with its resource and field. Exits 1 on errors; with --strict, on warnings too.
    Lint(cli::LintArgs),
    /// With --native: the Envoy configuration istiod would give a mesh scenario's workload (its
    /// inbound filter chains, path handling, jwt_authn and RBAC filters) — what
    /// `meshward test --native` runs in Envoy beside meshward's filters.
    Render(cli::RenderArgs),
    /// Send one request through a filter chain and print what happened.
    Run(cli::RunArgs),
    /// What Envoy 1.40 would say about a module: unsupported imports, missing exports, and
    /// whether on_configure accepts a config; for meshward's filters, also what the config needs
    /// from the listener (verified client certificates, a client address the client cannot set).
    Check(cli::CheckArgs),
    /// Requests per second, latency and CPU per request of a scenario's requests through its chain (the harness);
    /// `meshward bench envoy`: meshward against Envoy's native filters in a real Envoy;
    /// `meshward bench tcp`: spiffe-authz-tcp against native network RBAC, per connection.
    Bench(cli::BenchCli),
    /// Render an Istio WasmPlugin resource for a filter, a policy file and an image; or, with
    /// --from-istio, the WasmPlugins of one workload from the Istio YAML in Git.
    #[command(
        override_usage = "meshward wasmplugin --filter <FILTER> --policy <POLICY> --image <IMAGE> [OPTIONS]\n       \
        meshward wasmplugin --from-istio <PATH>... --workload <NS/SA> --label <KEY=VALUE>... \
        --image-prefix <oci://HOST/REPO> (--tag <TAG> | --digest <FILTER=DIGEST>...) [OPTIONS]"
    )]
    Wasmplugin(cli::WasmPluginCommand),
    /// Build, push and verify OCI images of filters for Istio's WasmPlugin (`url: oci://…`).
    Image {
        #[command(subcommand)]
        command: cli::image::ImageCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<bool> = match cli.command {
        Command::Test(args) => cli::test(args),
        Command::Explain(args) => cli::explain(args).map(|()| true),
        Command::Lint(args) => cli::lint(args),
        Command::Render(args) => cli::render(args).map(|()| true),
        Command::Run(args) => cli::run(args).map(|()| true),
        Command::Check(args) => cli::check(args),
        Command::Bench(args) => cli::bench(args).map(|()| true),
        Command::Wasmplugin(args) => cli::wasmplugin(args).map(|()| true),
        Command::Image { command } => cli::image::run(command).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("meshward: {e:#}");
            ExitCode::from(2)
        }
    }
}
