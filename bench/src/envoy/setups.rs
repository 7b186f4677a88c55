//! The benchmark's listeners (one per filter chain, each mTLS with a required client certificate)
//! and its configurations (a listener plus the requests sent to it), with the checks that prove a
//! listener really applies its filters.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Map, Value};

use crate::envoy::native::{
    codec_above_policy, jwt_authn, native_limits, rbac_filters, yaml, LOCAL_RATELIMIT,
    RATE_LIMIT_POLICY,
};
use crate::envoy::tokens::{self, Alg};
use meshward_rig::Certs;
use meshward_rig::Request;
use meshward_rig::WasmFilter;

/// The SPIFFE ID of the benchmark client (allowed by `mesh-10.json`'s `frontend-reads-catalog`).
pub const CLIENT_SPIFFE_ID: &str = "spiffe://cluster.local/ns/default/sa/frontend";
/// The request path of every measured request (a catalog read).
pub const PATH: &str = "/api/v1/products/42?view=full";

/// Where the inputs live.
pub struct Inputs {
    /// The filters' release `.wasm` files (and `meshward_test_noop.wasm`).
    pub wasm_dir: PathBuf,
    /// The repository root (policies/ and tests/fixtures/jwt/keys/).
    pub repo: PathBuf,
    /// Where modules derived for the run are written (the trimmed no-op).
    pub scratch: PathBuf,
}

/// One Envoy listener: its name (also its stat prefix), its HTTP filters before the router and
/// the HCM fields it sets.
pub struct ListenerSpec {
    pub name: &'static str,
    pub filters: Vec<Value>,
    pub hcm: Map<String, Value>,
    /// Its wasm filters, in order (to count their host calls in the harness).
    pub wasm: Vec<WasmEntry>,
}

/// A wasm filter of a listener: plugin name, module and configuration.
#[derive(Debug, Clone)]
pub struct WasmEntry {
    pub filter: String,
    pub module: PathBuf,
    pub config: String,
}

/// What a configuration sends and expects during the sanity checks.
pub struct Check {
    pub what: String,
    pub request: Request,
    pub status: u16,
    /// A response header that must be present (e.g. the rate limiter's `x-ratelimit-limit`).
    pub header: Option<&'static str>,
}

/// One measured row: a listener and the requests sent to it.
pub struct Setup {
    pub name: String,
    pub listener: &'static str,
    /// `meshward`, `native` or `floor`.
    pub side: &'static str,
    /// Serialized keep-alive requests, cycled.
    pub requests: Vec<Vec<u8>>,
    /// The first two of them, unserialized (to count host calls in the harness: the first warms
    /// the caches, the second is counted — a cold pool's second token is still a miss).
    pub sample: Vec<Request>,
    pub checks: Vec<Check>,
}

/// The 20 request headers of a typical browser-originated API call (those of
/// `benches/scenarios/header-limits-20.yaml`, with a real bearer token and the client address a
/// trusted front proxy appended to `x-forwarded-for`).
pub(crate) fn base_request(token: &str) -> Request {
    Request::get(PATH)
        .close(false)
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, deflate, br")
        .header("accept-language", "en-US,en;q=0.9")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) meshward-bench/1.0",
        )
        .header("authorization", format!("Bearer {token}"))
        .header("cookie", "session=abc123; theme=dark; consent=yes")
        .header("x-forwarded-for", "192.0.2.10")
        .header("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")
        .header("x-b3-spanid", "e457b5a2e4d86bd1")
        .header("x-b3-sampled", "1")
        .header(
            "traceparent",
            "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
        )
        .header("x-tenant", "acme")
        .header("x-client-version", "4.12.0")
        .header("cache-control", "no-cache")
        .header("pragma", "no-cache")
        .header("origin", "https://shop.example.com")
        .header("referer", "https://shop.example.com/cart")
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-site", "same-site")
        .header("x-api-key", "k-3f9a0c7e")
}

fn without_header(request: &Request, name: &str) -> Request {
    let mut r = request.clone();
    r.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()));
    r
}

fn with_token(request: &Request, token: &str) -> Request {
    let mut r = without_header(request, "authorization");
    r.headers.push((
        b"authorization".to_vec(),
        format!("Bearer {token}").into_bytes(),
    ));
    r
}

pub(crate) fn closing(request: Request) -> Request {
    request.close(true)
}

fn read_policy(inputs: &Inputs, rel: &str) -> Result<String> {
    let path = inputs.repo.join(rel);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn wasm(inputs: &Inputs, filter: &str, file: &str, config: &str) -> Result<WasmEntry> {
    let module = inputs.wasm_dir.join(file);
    if !module.is_file() {
        return Err(anyhow!(
            "{} is missing: run scripts/build-wasm.sh (or pass --wasm-dir)",
            module.display()
        ));
    }
    Ok(WasmEntry {
        filter: filter.to_string(),
        module,
        config: config.to_string(),
    })
}

/// The no-op module with every event callback but `proxy_on_request_headers` removed, as
/// scripts/build-wasm.sh trims the shipped filters: the floor of a filter that handles only the
/// request headers, beside the SDK's (every callback exported) in the same run.
pub(crate) fn trimmed_noop(inputs: &Inputs) -> Result<WasmEntry> {
    let noop = wasm(inputs, "noop", "meshward_test_noop.wasm", "")?;
    request_headers_only(
        inputs,
        &noop,
        "meshward_test_noop_request_headers_only.wasm",
    )
}

/// `entry` with its module trimmed to `proxy_on_request_headers` among the event callbacks
/// (`meshward_trim_callbacks::keep_only`), written to the scratch directory as `file`.
pub(crate) fn request_headers_only(
    inputs: &Inputs,
    entry: &WasmEntry,
    file: &str,
) -> Result<WasmEntry> {
    let bytes = std::fs::read(&entry.module)
        .with_context(|| format!("reading {}", entry.module.display()))?;
    let trimmed = meshward_trim_callbacks::keep_only(&bytes, &["proxy_on_request_headers"])
        .map_err(|e| anyhow!("trimming {}: {e}", entry.module.display()))?;
    let module = inputs.scratch.join(file);
    std::fs::write(&module, &trimmed.wasm)
        .with_context(|| format!("writing {}", module.display()))?;
    Ok(WasmEntry {
        module,
        ..entry.clone()
    })
}

/// A listener whose HTTP filters are exactly `wasm`.
pub(crate) fn wasm_listener(
    name: &'static str,
    wasm: Vec<WasmEntry>,
    hcm: Map<String, Value>,
) -> Result<ListenerSpec> {
    let filters = wasm
        .iter()
        .map(|w| {
            // One VM per listener and filter: rate-limit's shared data and token caches stay
            // separate.
            WasmFilter::new(&w.filter, &w.module, &w.config)
                .vm_id(&format!("{name}.{}", w.filter))
                .to_json()
                .map(|mut v| {
                    v["name"] = json!(format!("{name}.{}", w.filter));
                    v
                })
        })
        .collect::<Result<_>>()?;
    Ok(ListenerSpec {
        name,
        filters,
        hcm,
        wasm,
    })
}

pub(crate) fn native_listener(
    name: &'static str,
    filters: Vec<Value>,
    hcm: Map<String, Value>,
) -> ListenerSpec {
    ListenerSpec {
        name,
        filters,
        hcm,
        wasm: Vec::new(),
    }
}

/// The listeners and the configurations.
pub struct Plan {
    pub listeners: Vec<ListenerSpec>,
    pub setups: Vec<Setup>,
}

/// Builds every listener and configuration; `jwt_pool` distinct tokens per algorithm for the cold
/// JWT rows.
pub fn plan(inputs: &Inputs, jwt_pool: usize) -> Result<Plan> {
    let header_limits = read_policy(inputs, "policies/header-limits/strict.json")?;
    let mesh10 = read_policy(inputs, "policies/spiffe-authz/mesh-10.json")?;
    let jwt_policy_text = read_policy(inputs, "policies/jwt-authn/inline-fixture-keys.json")?;
    let jwt_policy: Value =
        serde_json::from_str(&jwt_policy_text).context("parsing inline-fixture-keys.json")?;
    let keys = inputs.repo.join("tests/fixtures/jwt/keys");
    let warm = tokens::sign_pool(&keys, Alg::Rs256, 1)?
        .pop()
        .ok_or_else(|| anyhow!("no token signed"))?;
    let cold_rs = tokens::sign_pool(&keys, Alg::Rs256, jwt_pool)?;
    let cold_es = tokens::sign_pool(&keys, Alg::Es256, jwt_pool)?;

    let hl = wasm(
        inputs,
        "header-limits",
        "header_limits.wasm",
        &header_limits,
    )?;
    let sa = wasm(inputs, "spiffe-authz", "spiffe_authz.wasm", &mesh10)?;
    let jwt = wasm(inputs, "jwt-authn", "jwt_authn.wasm", &jwt_policy_text)?;
    let rl = wasm(inputs, "rate-limit", "rate_limit.wasm", RATE_LIMIT_POLICY)?;
    // The same four policies as one module's sections (filters/bundle, docs/bundle.md).
    let section = |text: &str, what: &str| -> Result<Value> {
        serde_json::from_str(text).with_context(|| format!("parsing the {what} policy"))
    };
    let bundle_config = json!({
        "headerLimits": section(&header_limits, "header-limits")?,
        "jwtAuthn": section(&jwt_policy_text, "jwt-authn")?,
        "spiffeAuthz": section(&mesh10, "spiffe-authz")?,
        "rateLimit": section(RATE_LIMIT_POLICY, "rate-limit")?,
    })
    .to_string();
    let bundle = wasm(inputs, "meshward", "meshward.wasm", &bundle_config)?;
    let native_jwt = jwt_authn(&jwt_policy)?;
    let native_rl = yaml(LOCAL_RATELIMIT)?;

    let mut full_native = vec![native_jwt.clone()];
    full_native.extend(rbac_filters()?);
    full_native.push(native_rl.clone());

    let listeners = vec![
        native_listener("router", vec![], Map::new()),
        wasm_listener(
            "noop",
            vec![wasm(inputs, "noop", "meshward_test_noop.wasm", "")?],
            Map::new(),
        )?,
        wasm_listener("noop-trimmed", vec![trimmed_noop(inputs)?], Map::new())?,
        wasm_listener("header-limits", vec![hl.clone()], codec_above_policy())?,
        native_listener("hcm-limits", vec![], native_limits()),
        wasm_listener("spiffe-authz", vec![sa.clone()], Map::new())?,
        native_listener("rbac", rbac_filters()?, Map::new()),
        wasm_listener("jwt-authn", vec![jwt.clone()], Map::new())?,
        native_listener("native-jwt-authn", vec![native_jwt], Map::new()),
        wasm_listener("rate-limit", vec![rl.clone()], Map::new())?,
        native_listener("local-ratelimit", vec![native_rl], Map::new()),
        wasm_listener(
            "meshward-chain",
            vec![hl, jwt, sa, rl],
            codec_above_policy(),
        )?,
        wasm_listener("meshward-bundle", vec![bundle], codec_above_policy())?,
        native_listener("native-chain", full_native, native_limits()),
    ];

    let base = base_request(&warm);
    let one = |r: &Request| vec![r.clone()];
    let pool = |tokens: &[String]| -> Vec<Request> {
        tokens.iter().map(|t| with_token(&base, t)).collect()
    };
    let ok = || Check {
        what: "the measured request passes (200)".into(),
        request: closing(base.clone()),
        status: 200,
        header: None,
    };
    let too_many_headers = || {
        let mut r = closing(base.clone());
        for i in 0..40 {
            r = r.header(format!("x-extra-{i}"), "1");
        }
        Check {
            what: "61 headers (policy: 50) → 431".into(),
            request: r,
            status: 431,
            header: None,
        }
    };
    let debug_denied = || Check {
        what: "x-debug header (deny-debug-header) → 403".into(),
        request: closing(base.clone()).header("x-debug", "1"),
        status: 403,
        header: None,
    };
    let post_denied = || {
        let mut r = closing(base.clone());
        r.method = "POST".into();
        r.target = b"/api/v1/orders".to_vec();
        Check {
            what: "frontend POST /api/v1/orders (no ALLOW policy) → 403".into(),
            request: r,
            status: 403,
            header: None,
        }
    };
    let no_token = || Check {
        what: "no token → 401".into(),
        request: closing(without_header(&base, "authorization")),
        status: 401,
        header: None,
    };
    let bad_token = || Check {
        what: "a forged token (bad signature) → 401".into(),
        request: closing(with_token(&base, &forge(&warm))),
        status: 401,
        header: None,
    };
    let token_ok = |what: &str, token: &str| Check {
        what: format!("{what} → 200"),
        request: closing(with_token(&base, token)),
        status: 200,
        header: None,
    };
    let rate_headers = || Check {
        what: "the response carries x-ratelimit-limit".into(),
        request: closing(base.clone()),
        status: 200,
        header: Some("x-ratelimit-limit"),
    };
    let first = |v: &[String]| v.first().cloned().unwrap_or_default();
    let jwt_checks = || {
        vec![
            ok(),
            no_token(),
            bad_token(),
            token_ok("a cold RS256 token", &first(&cold_rs)),
            token_ok("a cold ES256 token", &first(&cold_es)),
        ]
    };
    let chain_checks = || {
        vec![
            rate_headers(),
            no_token(),
            too_many_headers(),
            debug_denied(),
        ]
    };
    let setup = |name: &str, listener, side, requests: Vec<Request>, checks| Setup {
        name: name.to_string(),
        listener,
        side,
        // One request: it is sent twice (the count is of the warm second one).
        sample: requests.iter().cycle().take(2).cloned().collect(),
        requests: requests.iter().map(Request::to_bytes).collect(),
        checks,
    };
    let n = jwt_pool;
    let setups = vec![
        setup("router only", "router", "floor", one(&base), vec![ok()]),
        setup("no-op wasm", "noop", "floor", one(&base), vec![ok()]),
        setup(
            "no-op wasm, request-headers callback only",
            "noop-trimmed",
            "floor",
            one(&base),
            vec![ok()],
        ),
        setup(
            "header-limits (strict.json)",
            "header-limits",
            "meshward",
            one(&base),
            vec![ok(), too_many_headers()],
        ),
        setup(
            "HCM limits (same limits)",
            "hcm-limits",
            "native",
            one(&base),
            vec![ok(), too_many_headers()],
        ),
        setup(
            "spiffe-authz (mesh-10.json)",
            "spiffe-authz",
            "meshward",
            one(&base),
            vec![ok(), debug_denied(), post_denied()],
        ),
        setup(
            "RBAC (mesh-10 as Istio translates it)",
            "rbac",
            "native",
            one(&base),
            vec![ok(), debug_denied(), post_denied()],
        ),
        setup(
            "jwt-authn warm (one RS256 token)",
            "jwt-authn",
            "meshward",
            one(&base),
            jwt_checks(),
        ),
        setup(
            "jwt_authn warm (one RS256 token)",
            "native-jwt-authn",
            "native",
            one(&base),
            jwt_checks(),
        ),
        setup(
            &format!("jwt-authn cold RS256 ({n} tokens)"),
            "jwt-authn",
            "meshward",
            pool(&cold_rs),
            vec![],
        ),
        setup(
            &format!("jwt_authn cold RS256 ({n} tokens)"),
            "native-jwt-authn",
            "native",
            pool(&cold_rs),
            vec![],
        ),
        setup(
            &format!("jwt-authn cold ES256 ({n} tokens)"),
            "jwt-authn",
            "meshward",
            pool(&cold_es),
            vec![],
        ),
        setup(
            &format!("jwt_authn cold ES256 ({n} tokens)"),
            "native-jwt-authn",
            "native",
            pool(&cold_es),
            vec![],
        ),
        setup(
            "rate-limit (bucket never empties)",
            "rate-limit",
            "meshward",
            one(&base),
            vec![rate_headers()],
        ),
        setup(
            "local_ratelimit (bucket never empties)",
            "local-ratelimit",
            "native",
            one(&base),
            vec![rate_headers()],
        ),
        setup(
            "meshward chain (header-limits → jwt-authn → spiffe-authz → rate-limit)",
            "meshward-chain",
            "meshward",
            one(&base),
            chain_checks(),
        ),
        setup(
            "meshward bundle (the four checks in meshward.wasm)",
            "meshward-bundle",
            "meshward",
            one(&base),
            chain_checks(),
        ),
        setup(
            &format!("meshward bundle cold RS256 ({n} tokens)"),
            "meshward-bundle",
            "meshward",
            pool(&cold_rs),
            vec![],
        ),
        setup(
            "native chain (HCM limits → jwt_authn → RBAC → local_ratelimit)",
            "native-chain",
            "native",
            one(&base),
            chain_checks(),
        ),
        setup(
            &format!("native chain cold RS256 ({n} tokens)"),
            "native-chain",
            "native",
            pool(&cold_rs),
            vec![],
        ),
    ];
    Ok(Plan { listeners, setups })
}

/// The token with its signature's first character changed (still base64url, wrong signature).
fn forge(token: &str) -> String {
    let Some(dot) = token.rfind('.') else {
        return format!("{token}x");
    };
    let (head, sig) = token.split_at(dot + 1);
    let mut sig: Vec<u8> = sig.bytes().collect();
    if let Some(c) = sig.first_mut() {
        *c = if *c == b'A' { b'B' } else { b'A' };
    }
    format!("{head}{}", String::from_utf8_lossy(&sig))
}

/// The listener JSON: mTLS (client certificate required, verified against the rig's CA), one HCM
/// with `spec`'s filters then the router to the `upstream` cluster.
pub fn listener_json(spec: &ListenerSpec, certs: &Certs) -> Value {
    let mut http_filters = spec.filters.clone();
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": spec.name,
        "codec_type": "AUTO",
        "route_config": {
            "name": spec.name,
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
            }],
        },
        "http_filters": http_filters,
    });
    if let Some(map) = hcm.as_object_mut() {
        for (k, v) in &spec.hcm {
            map.insert(k.clone(), v.clone());
        }
    }
    json!({
        "name": format!("bench-{}", spec.name),
        "stat_prefix": format!("bench-{}", spec.name),
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{
            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": true,
                    "common_tls_context": {
                        "tls_certificates": [{
                            "certificate_chain": {"filename": certs.server_cert_pem()},
                            "private_key": {"filename": certs.server_key_pem()},
                        }],
                        "validation_context": {"trusted_ca": {"filename": certs.ca_pem()}},
                    }
                }
            },
        }],
    })
}
