//! What istiod gives a sidecar for one inbound port, in Envoy's own terms: the filter chains
//! PeerAuthentication asks for, the HTTP connection manager's path handling, `jwt_authn` from the
//! RequestAuthentications and the RBAC filters from the AuthorizationPolicies. The native
//! differential runs it in real Envoy beside meshward's filters; `meshward render --native`
//! prints it.
//!
//! Read from istio/istio at master 86c9f01 (August 2026):
//! - `pilot/pkg/security/authn/policy_applier.go` (`convertToEnvoyJwtConfig`): one provider
//!   `origins-<i>` per jwtRule (rules sorted by issuer), the payload in dynamic metadata under
//!   `payload`, `space_delimited_claims` `permission` and `scope`; the requirement "any one
//!   provider, or for every provider a valid token or none" — a request without a token passes,
//!   a bad token is refused; CORS preflights bypass.
//! - `pilot/pkg/model/jwks_resolver.go`: by default (`PILOT_JWT_ENABLE_REMOTE_JWKS=false`) istiod
//!   fetches each `jwksUri` itself and inlines the keys (`local_jwks`); when the fetch fails it
//!   inlines a public key whose private half was thrown away, so every token fails.
//! - `pilot/pkg/networking/core/listener_builder.go`: sidecar path normalization BASE —
//!   `normalize_path: true`, `merge_slashes: false`, escaped slashes kept.
//! - `pilot/pkg/security/authn/utils` and the inbound listener: STRICT is one TLS filter chain
//!   requiring a client certificate, PERMISSIVE a `tls_inspector` and a TLS and a plaintext chain,
//!   DISABLE plaintext.
//! - `pilot/pkg/security/authz/builder`: [`crate::native_rbac`].
//!
//! Not rendered: CUSTOM policies (istiod's `ext_authz` to an external authorizer; the notes say
//! so), Istio's own proxy filters (`istio_authn`, metadata exchange, stats), and the SDS
//! certificates (`default`, `ROOTCA`), which the rig replaces with its own files.

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::native_rbac::{self, Chain, NativePolicy, JWT_PAYLOAD_KEY};
use crate::resource::{Action, JwtRule, MtlsMode};
use crate::select::Selection;

/// A JWKS whose private key was discarded when it was made (an RSA key generated for meshward):
/// what istiod inlines when it cannot fetch a `jwksUri`, so that no token verifies.
pub const PUBLIC_ONLY_JWKS: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"zPDZSR-L3Y_NcGkIMOyrcPls5spJJuSvd1DhBijYhg5lyTpf33ZVpHrREwA6U2szQuv6OAjidBWyFnDmUbcIV5OeT7J4beiFtF2AUKo6m0_g_1Oep2ARVa7UbOA61h056rJ2b79RXb6WV38BbO--_aHmZkgxFn3n0VL0VPLqCcDuyfixIACCyGtgoZnHEykd-y8A5VcoD0xprJ-TRjchxO7Q7y4mW5IYBeW5NoZDg950bA0EmgFw-2KqBAQWgBEdoDIw_LLXlNbXVN0ocMobFutmI0mO7Tbte9MM-8OErPhfTsPTkmgaeTpl8MZkSfvBQ_TasW6KUJnfjlnXrNkthw"}]}"#;

/// One inbound port as istiod renders it for the sidecar.
#[derive(Debug, Clone)]
pub struct InboundPort {
    pub port: u16,
    pub chain: Chain,
    /// PeerAuthentication's effective mode for the port (never UNSET: PERMISSIVE by default).
    pub mode: MtlsMode,
    /// HTTP: the filters before the router (`jwt_authn`, then RBAC: AUDIT, DENY, ALLOW). TCP: the
    /// network RBAC filters before `tcp_proxy`.
    pub filters: Vec<Value>,
    /// What is not rendered and why (CUSTOM policies).
    pub notes: Vec<String>,
}

/// The HTTP connection manager fields istiod sets for path handling on a sidecar (mesh path
/// normalization BASE, the default).
pub fn hcm_path_settings() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("normalize_path".into(), json!(true));
    m.insert("merge_slashes".into(), json!(false));
    m.insert(
        "path_with_escaped_slashes_action".into(),
        json!("KEEP_UNCHANGED"),
    );
    m
}

/// The policies istiod's builder takes for the workload: the applicable ALLOW, DENY and AUDIT
/// policies and the dry-run ones (as shadow rules). CUSTOM policies are left out with a note.
pub fn native_policies(selection: &Selection<'_>) -> (Vec<NativePolicy>, Vec<String>) {
    let mut policies = Vec::new();
    let mut notes = Vec::new();
    let dry_run = selection
        .not_applied
        .iter()
        .filter(|(r, _)| r.dry_run())
        .map(|(r, _)| (*r, true));
    let applied = selection.authorization.iter().map(|r| (*r, false));
    for (r, dry_run) in applied.chain(dry_run) {
        let Some(spec) = r.authorization() else {
            continue;
        };
        let action = match spec.action {
            Action::Allow => spiffe_authz_core::config::Action::Allow,
            Action::Deny => spiffe_authz_core::config::Action::Deny,
            Action::Audit => spiffe_authz_core::config::Action::Audit,
            Action::Custom => {
                notes.push(format!(
                    "{}: CUSTOM is istiod's ext_authz to an external authorizer, not rendered: \
                     natively, as if the authorizer allowed",
                    r.id
                ));
                continue;
            }
        };
        policies.push(NativePolicy {
            namespace: r.id.namespace.clone(),
            name: r.id.name.clone(),
            action,
            dry_run,
            rules: spec.rules.clone(),
        });
    }
    (policies, notes)
}

/// istiod's `jwt_authn` filter for the workload's RequestAuthentications; `None` when none
/// applies. `jwks(uri)` is what fetching that `jwksUri` gives istiod (`None`: the fetch fails).
pub fn jwt_authn_filter(
    selection: &Selection<'_>,
    jwks: &dyn Fn(&str) -> Option<String>,
) -> Option<Value> {
    let mut rules: Vec<&JwtRule> = selection
        .request_authentication
        .iter()
        .filter_map(|r| r.request_authentication())
        .flat_map(|spec| spec.jwt_rules.iter())
        .collect();
    if rules.is_empty() {
        return None;
    }
    // istiod's slices.SortBy on the issuer (stable: equal issuers keep their order).
    rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    let mut providers = Map::new();
    let mut inner_and = Vec::new();
    let mut outer_or = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = format!("origins-{i}");
        providers.insert(name.clone(), provider(rule, jwks));
        inner_and.push(json!({"requires_any": {"requirements": [
            {"provider_name": name},
            {"allow_missing": {}},
        ]}}));
        outer_or.push(json!({"provider_name": name}));
    }
    let requires = if inner_and.len() == 1 {
        inner_and.pop().unwrap_or(Value::Null)
    } else {
        outer_or.push(json!({"requires_all": {"requirements": inner_and}}));
        json!({"requires_any": {"requirements": outer_or}})
    };
    Some(json!({
        "name": native_rbac::JWT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": requires}],
            "bypass_cors_preflight": true,
        },
    }))
}

fn provider(rule: &JwtRule, jwks: &dyn Fn(&str) -> Option<String>) -> Value {
    let mut p = Map::new();
    p.insert("issuer".into(), json!(rule.issuer));
    if !rule.audiences.is_empty() {
        p.insert("audiences".into(), json!(rule.audiences));
    }
    if rule.forward_original_token {
        p.insert("forward".into(), json!(true));
    }
    if let Some(h) = &rule.output_payload_to_header {
        p.insert("forward_payload_header".into(), json!(h));
    }
    p.insert("payload_in_metadata".into(), json!(JWT_PAYLOAD_KEY));
    let mut claims: Vec<String> = rule.space_delimited_claims.clone();
    claims.extend(["permission".to_string(), "scope".to_string()]);
    claims.sort();
    claims.dedup();
    p.insert(
        "normalize_payload_in_metadata".into(),
        json!({"space_delimited_claims": claims}),
    );
    if !rule.output_claim_to_headers.is_empty() {
        let c: Vec<Value> = rule
            .output_claim_to_headers
            .iter()
            .map(|c| json!({"header_name": c.header, "claim_name": c.claim}))
            .collect();
        p.insert("claim_to_headers".into(), json!(c));
    }
    if !rule.from_headers.is_empty() {
        let h: Vec<Value> = rule
            .from_headers
            .iter()
            .map(|h| json!({"name": h.name, "value_prefix": h.prefix}))
            .collect();
        p.insert("from_headers".into(), json!(h));
    }
    if !rule.from_params.is_empty() {
        p.insert("from_params".into(), json!(rule.from_params));
    }
    if !rule.from_cookies.is_empty() {
        p.insert("from_cookies".into(), json!(rule.from_cookies));
    }
    // istiod's BuildLocalJwks: inline keys as written, else what istiod's own fetch got, else the
    // public-only key set.
    let keys = match (&rule.jwks, &rule.jwks_uri) {
        (Some(inline), _) if !inline.is_empty() => inline.clone(),
        (_, Some(uri)) => jwks(uri).unwrap_or_else(|| PUBLIC_ONLY_JWKS.to_string()),
        _ => PUBLIC_ONLY_JWKS.to_string(),
    };
    p.insert("local_jwks".into(), json!({"inline_string": keys}));
    Value::Object(p)
}

/// Port `port` of the selected workload as istiod renders it: `tcp` when the Service declares it
/// TCP (network RBAC before tcp_proxy; RequestAuthentication does not apply), else HTTP.
pub fn inbound_port(
    selection: &Selection<'_>,
    port: u16,
    tcp: bool,
    jwks: &dyn Fn(&str) -> Option<String>,
) -> Result<InboundPort> {
    let mode = match selection.peer.mode(port).mode {
        MtlsMode::Unset => MtlsMode::Permissive,
        m => m,
    };
    let (policies, notes) = native_policies(selection);
    let chain = if tcp { Chain::Tcp } else { Chain::Http };
    let mut filters = Vec::new();
    if !tcp {
        filters.extend(jwt_authn_filter(selection, jwks));
    }
    filters.extend(native_rbac::rbac_filters(&policies, chain)?);
    Ok(InboundPort {
        port,
        chain,
        mode,
        filters,
        notes,
    })
}

impl InboundPort {
    /// The port's listener as istiod shapes it: its listener filters and filter chains, with the
    /// HTTP connection manager (or tcp_proxy) and the filters. Certificates are the SDS secrets
    /// istiod names (`default`, `ROOTCA`).
    pub fn listener(&self) -> Value {
        let terminal = match self.chain {
            Chain::Http => {
                let mut filters = self.filters.clone();
                filters.push(json!({
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }));
                let mut hcm = Map::new();
                hcm.insert(
                    "@type".into(),
                    json!("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
                );
                hcm.insert(
                    "stat_prefix".into(),
                    json!(format!("inbound_0.0.0.0_{}", self.port)),
                );
                hcm.extend(hcm_path_settings());
                hcm.insert("use_remote_address".into(), json!(false));
                hcm.insert("http_filters".into(), json!(filters));
                vec![json!({
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                })]
            }
            Chain::Tcp => {
                let mut filters = self.filters.clone();
                filters.push(json!({
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": format!("inbound|{}||", self.port),
                        "cluster": format!("inbound|{}||", self.port),
                    },
                }));
                filters
            }
        };
        let tls = json!({
            "filter_chain_match": {"destination_port": self.port, "transport_protocol": "tls"},
            "filters": terminal,
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": true,
                    "common_tls_context": {
                        "tls_certificate_sds_secret_configs": [{"name": "default"}],
                        "validation_context_sds_secret_config": {"name": "ROOTCA"},
                    },
                },
            },
        });
        let plaintext = json!({
            "filter_chain_match": {"destination_port": self.port, "transport_protocol": "raw_buffer"},
            "filters": terminal,
        });
        let chains = match self.mode {
            MtlsMode::Strict => vec![tls],
            MtlsMode::Disable => vec![plaintext],
            MtlsMode::Permissive | MtlsMode::Unset => vec![tls, plaintext],
        };
        json!({
            "name": format!("virtualInbound port {} ({})", self.port, self.mode),
            "listener_filters": [{
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
            }],
            "filter_chains": chains,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load_text, Loaded};
    use crate::select::{select, MeshSettings, Workload};
    use std::collections::BTreeMap;
    use std::path::Path;

    fn loaded(yaml: &str) -> Loaded {
        let mut l = Loaded::default();
        load_text(Path::new("t.yaml"), yaml, &mut l).unwrap();
        l
    }

    fn workload() -> Workload {
        Workload {
            namespace: "shop".into(),
            service_account: "cart".into(),
            labels: BTreeMap::from([("app".to_string(), "cart".to_string())]),
            port: 8080,
        }
    }

    fn port(yaml: &str, tcp: bool) -> InboundPort {
        let l = loaded(yaml);
        let sel = select(&l.resources, &MeshSettings::default(), &workload());
        let jwks = |uri: &str| (uri == "https://idp/keys").then(|| "{\"keys\":[]}".to_string());
        inbound_port(&sel, 8080, tcp, &jwks).unwrap()
    }

    const RA: &str = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
        metadata: {name: jwt, namespace: shop}\nspec:\n  jwtRules:\n";

    #[test]
    fn one_jwt_rule_is_one_provider_with_allow_missing() {
        let p = port(
            &format!("{RA}  - {{issuer: https://idp, jwksUri: https://idp/keys, audiences: [cart], forwardOriginalToken: true}}\n"),
            false,
        );
        assert_eq!(p.filters.len(), 1, "{:#?}", p.filters);
        assert_eq!(
            p.filters[0]["typed_config"],
            json!({
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"origins-0": {
                    "issuer": "https://idp",
                    "audiences": ["cart"],
                    "forward": true,
                    "payload_in_metadata": "payload",
                    "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]},
                    "local_jwks": {"inline_string": "{\"keys\":[]}"},
                }},
                "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                    {"provider_name": "origins-0"}, {"allow_missing": {}},
                ]}}}],
                "bypass_cors_preflight": true,
            })
        );
    }

    #[test]
    fn several_rules_sort_by_issuer_and_any_one_or_all_valid_or_missing() {
        let p = port(
            &format!(
                "{RA}  - {{issuer: https://z, jwks: '{{\"keys\":[]}}', fromHeaders: [{{name: x-jwt, prefix: 'Bearer '}}], fromParams: [t]}}\n  \
                 - {{issuer: https://a, jwksUri: https://down/keys, outputPayloadToHeader: x-payload, \
                 outputClaimToHeaders: [{{header: x-sub, claim: sub}}]}}\n"
            ),
            false,
        );
        let c = &p.filters[0]["typed_config"];
        assert_eq!(c["providers"]["origins-0"]["issuer"], "https://a");
        assert_eq!(
            c["providers"]["origins-0"]["local_jwks"]["inline_string"], PUBLIC_ONLY_JWKS,
            "a failed fetch inlines the public-only key set"
        );
        assert_eq!(
            c["providers"]["origins-0"]["forward_payload_header"],
            "x-payload"
        );
        assert_eq!(
            c["providers"]["origins-0"]["claim_to_headers"],
            json!([{"header_name": "x-sub", "claim_name": "sub"}])
        );
        assert_eq!(c["providers"]["origins-1"]["issuer"], "https://z");
        assert_eq!(
            c["providers"]["origins-1"]["from_headers"],
            json!([{"name": "x-jwt", "value_prefix": "Bearer "}])
        );
        assert_eq!(c["providers"]["origins-1"]["from_params"], json!(["t"]));
        let either = |n: &str| json!({"requires_any": {"requirements": [{"provider_name": n}, {"allow_missing": {}}]}});
        assert_eq!(
            c["rules"][0]["requires"],
            json!({"requires_any": {"requirements": [
                {"provider_name": "origins-0"},
                {"provider_name": "origins-1"},
                {"requires_all": {"requirements": [either("origins-0"), either("origins-1")]}},
            ]}})
        );
    }

    const AP: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n";

    #[test]
    fn http_policies_render_after_jwt_authn_audit_deny_allow_and_custom_is_a_note() {
        let yaml = format!(
            "{AP}metadata: {{name: allow-get, namespace: shop}}\nspec: {{rules: [{{to: [{{operation: {{methods: [GET]}}}}]}}]}}\n---\n\
             {AP}metadata: {{name: no-admin, namespace: shop}}\nspec: {{action: DENY, rules: [{{to: [{{operation: {{paths: ['/admin/*']}}}}]}}]}}\n---\n\
             {AP}metadata: {{name: ext, namespace: shop}}\nspec: {{action: CUSTOM, provider: {{name: opa}}, rules: [{{}}]}}\n---\n\
             {AP}metadata: {{name: shadow, namespace: shop, annotations: {{istio.io/dry-run: 'true'}}}}\nspec: {{action: DENY, rules: [{{}}]}}\n---\n\
             {RA}  - {{issuer: https://idp, jwksUri: https://idp/keys}}\n"
        );
        let p = port(&yaml, false);
        let names: Vec<&str> = p
            .filters
            .iter()
            .filter_map(|f| f["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "envoy.filters.http.jwt_authn",
                "envoy.filters.http.rbac",
                "envoy.filters.http.rbac"
            ]
        );
        let deny = &p.filters[1]["typed_config"];
        assert_eq!(deny["rules"]["action"], "DENY");
        assert!(deny["rules"]["policies"]["ns[shop]-policy[no-admin]-rule[0]"].is_object());
        assert!(deny["shadow_rules"]["policies"]["ns[shop]-policy[shadow]-rule[0]"].is_object());
        assert_eq!(deny["shadow_rules_stat_prefix"], "istio_dry_run_deny_");
        assert_eq!(
            deny["rules"]["policies"]["ns[shop]-policy[no-admin]-rule[0]"]["permissions"],
            json!([{"and_rules": {"rules": [{"or_rules": {"rules": [
                {"url_path": {"path": {"prefix": "/admin/"}}},
            ]}}]}}])
        );
        let allow = &p.filters[2]["typed_config"];
        assert_eq!(allow["rules"]["action"], "ALLOW");
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].contains("shop/ext"), "{:?}", p.notes);
    }

    #[test]
    fn a_tcp_port_has_no_jwt_authn_and_network_rbac() {
        let yaml = format!(
            "{AP}metadata: {{name: allow-get, namespace: shop}}\nspec: {{rules: [{{from: [{{source: {{namespaces: [shop]}}}}]}}]}}\n---\n\
             {RA}  - {{issuer: https://idp, jwksUri: https://idp/keys}}\n"
        );
        let p = port(&yaml, true);
        assert_eq!(p.filters.len(), 1);
        assert_eq!(p.filters[0]["name"], "envoy.filters.network.rbac");
        assert!(p.filters[0]["typed_config"]["rules"]["policies"]
            ["ns[shop]-policy[allow-get]-rule[0]"]
            .is_object());
    }

    #[test]
    fn peer_authentication_modes_are_istios_filter_chains() {
        let pa = |mode: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa, namespace: shop}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
            )
        };
        let chains = |p: &InboundPort| -> Vec<String> {
            p.listener()["filter_chains"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    c["filter_chain_match"]["transport_protocol"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        let strict = port(&pa("STRICT"), false);
        assert_eq!(chains(&strict), ["tls"]);
        let tls = &strict.listener()["filter_chains"][0]["transport_socket"]["typed_config"];
        assert_eq!(tls["require_client_certificate"], true);
        assert_eq!(
            chains(&port(&pa("PERMISSIVE"), false)),
            ["tls", "raw_buffer"]
        );
        assert_eq!(
            chains(&port("", false)),
            ["tls", "raw_buffer"],
            "PERMISSIVE by default"
        );
        assert_eq!(chains(&port(&pa("DISABLE"), false)), ["raw_buffer"]);
        let hcm = &strict.listener()["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["normalize_path"], true);
        assert_eq!(hcm["merge_slashes"], false);
        assert_eq!(hcm["path_with_escaped_slashes_action"], "KEEP_UNCHANGED");
        let last = hcm["http_filters"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["name"], "envoy.filters.http.router");
    }
}
