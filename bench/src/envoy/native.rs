//! Envoy's native counterparts of meshward's filters, as the benchmark configures them (RBAC for
//! spiffe-authz, jwt_authn, local_ratelimit, the HCM's codec limits), and the matching meshward
//! policies where they are written inline.

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Map, Value};

pub(super) fn yaml(text: &str) -> Result<Value> {
    serde_yaml_ng::from_str(text).context("parsing a native filter's YAML")
}

/// meshward's rate-limit with one bucket that never empties, and Envoy's `local_ratelimit` with
/// the same bucket: both add the DRAFT_VERSION_03 `x-ratelimit-*` headers.
pub(super) const RATE_LIMIT_POLICY: &str = r#"{"tokenBucket":{"maxTokens":4294967295,"tokensPerFill":4294967295,"fillInterval":"1s"},"rateLimitHeaders":"DRAFT_VERSION_03"}"#;

pub(super) const LOCAL_RATELIMIT: &str = r#"
name: local_ratelimit
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
  stat_prefix: local_ratelimit
  token_bucket: {max_tokens: 4294967295, tokens_per_fill: 4294967295, fill_interval: 1s}
  filter_enabled:
    runtime_key: local_ratelimit_enabled
    default_value: {numerator: 100, denominator: HUNDRED}
  filter_enforced:
    runtime_key: local_ratelimit_enforced
    default_value: {numerator: 100, denominator: HUNDRED}
  enable_x_ratelimit_headers: DRAFT_VERSION_03
"#;

/// `policies/spiffe-authz/mesh-10.json` as Istio would translate it to Envoy RBAC: the AUDIT
/// policy in a LOG filter, the DENY policies in a DENY filter, the ALLOW policies in an ALLOW
/// filter (`requireMtls` is the listener's required client certificate; `requestPrincipals` and
/// `request.auth.audiences` read jwt_authn's payload metadata).
pub(super) const RBAC: &str = r#"
- name: rbac-audit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      action: LOG
      policies:
        audit-admin-api:
          permissions:
          - or_rules: {rules: [{url_path: {path: {exact: /admin}}}, {url_path: {path: {prefix: /admin/}}}]}
          principals: [{any: true}]
- name: rbac-deny
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      action: DENY
      policies:
        deny-admin-outside-ops:
          permissions:
          - or_rules: {rules: [{url_path: {path: {exact: /admin}}}, {url_path: {path: {prefix: /admin/}}}]}
          principals:
          - not_id: {authenticated: {principal_name: {safe_regex: {regex: ".*/ns/ops/.*"}}}}
        deny-debug-header:
          permissions: [{header: {name: x-debug, present_match: true}}]
          principals: [{any: true}]
        deny-blocked-clients:
          permissions: [{any: true}]
          principals:
          - or_ids:
              ids:
              - remote_ip: {address_prefix: 203.0.113.0, prefix_len: 24}
              - remote_ip: {address_prefix: 198.51.100.0, prefix_len: 24}
- name: rbac-allow
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      action: ALLOW
      policies:
        frontend-reads-catalog:
          permissions:
          - and_rules:
              rules:
              - or_rules: {rules: [{header: {name: ":method", string_match: {exact: GET}}}, {header: {name: ":method", string_match: {exact: HEAD}}}]}
              - or_rules:
                  rules:
                  - url_path: {path: {prefix: /api/v1/products/}}
                  - uri_template:
                      name: uri-template
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                        path_template: "/api/v1/categories/*"
          principals:
          - authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/default/sa/frontend"}}
        cart-writes-orders:
          permissions:
          - and_rules:
              rules:
              - or_rules: {rules: [{header: {name: ":method", string_match: {exact: POST}}}, {header: {name: ":method", string_match: {exact: PUT}}}]}
              - or_rules:
                  rules:
                  - url_path: {path: {exact: /api/v1/orders}}
                  - uri_template:
                      name: uri-template
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                        path_template: "/api/v1/orders/*"
              - or_rules: {rules: [{header: {name: x-tenant, string_match: {exact: acme}}}, {header: {name: x-tenant, string_match: {exact: globex}}}]}
          principals:
          - or_ids:
              ids:
              - authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/shop/sa/cart"}}
              - authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/shop/sa/checkout"}}
        users-own-profile:
          permissions:
          - and_rules:
              rules:
              - or_rules: {rules: [{header: {name: ":method", string_match: {exact: GET}}}, {header: {name: ":method", string_match: {exact: PATCH}}}]}
              - uri_template:
                  name: uri-template
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                    path_template: "/users/*/profile"
          principals:
          - and_ids:
              ids:
              - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: jwt_payload}, {key: iss}], value: {string_match: {exact: "https://idp.example.com"}}}
              - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: jwt_payload}, {key: aud}], value: {string_match: {exact: shop}}}
        ops-full-access:
          permissions:
          - and_rules:
              rules:
              - or_rules:
                  rules:
                  - header: {name: ":authority", string_match: {suffix: ".internal.example.com", ignore_case: true}}
                  - header: {name: ":authority", string_match: {exact: admin.example.com, ignore_case: true}}
              - or_rules: {rules: [{destination_port: 8443}, {destination_port: 8080}]}
          principals:
          - authenticated: {principal_name: {safe_regex: {regex: ".*/ns/ops/.*"}}}
        probes:
          permissions:
          - and_rules:
              rules:
              - header: {name: ":method", string_match: {exact: GET}}
              - or_rules: {rules: [{url_path: {path: {exact: /healthz}}}, {url_path: {path: {exact: /readyz}}}, {url_path: {path: {exact: /metrics}}}]}
          principals:
          - or_ids:
              ids:
              - direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}
              - direct_remote_ip: {address_prefix: 127.0.0.1, prefix_len: 32}
        static-assets:
          permissions:
          - and_rules:
              rules:
              - header: {name: ":method", string_match: {exact: GET}}
              - or_rules:
                  rules:
                  - uri_template:
                      name: uri-template
                      typed_config:
                        "@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                        path_template: "/static/**"
                  - url_path: {path: {suffix: .css}}
                  - url_path: {path: {suffix: .js}}
              - not_rule: {header: {name: ":authority", string_match: {exact: admin.example.com, ignore_case: true}}}
          principals:
          - authenticated: {principal_name: {safe_regex: {regex: ".+"}}}
"#;

pub(super) fn rbac_filters() -> Result<Vec<Value>> {
    match yaml(RBAC)? {
        Value::Array(filters) => Ok(filters),
        _ => Err(anyhow!("the RBAC YAML is not a list")),
    }
}

/// Envoy's jwt_authn with the JWKS, issuer, audience and output headers of
/// `policies/jwt-authn/inline-fixture-keys.json`, and a verified-token cache of the same size as
/// jwt-authn's (256).
pub(super) fn jwt_authn(policy: &Value) -> Result<Value> {
    let rule = &policy["jwtRules"][0];
    let jwks = rule["jwks"]
        .as_str()
        .ok_or_else(|| anyhow!("inline-fixture-keys.json: jwtRules[0].jwks is not a string"))?;
    Ok(json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "idp": {
                    "issuer": rule["issuer"],
                    "audiences": rule["audiences"],
                    "local_jwks": {"inline_string": jwks},
                    "forward_payload_header": "x-jwt-payload",
                    "claim_to_headers": [{"header_name": "x-jwt-sub", "claim_name": "sub"}],
                    "payload_in_metadata": "jwt_payload",
                    "jwt_cache_config": {"jwt_cache_size": 256},
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}],
        }
    }))
}

pub(super) fn hcm(fields: Value) -> Map<String, Value> {
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Envoy's HCM limits equivalent to `strict.json` (`maxHeaderValueBytes` and `maxPathBytes` have
/// no native counterpart).
pub(super) fn native_limits() -> Map<String, Value> {
    hcm(json!({
        "max_request_headers_kb": 64,
        "common_http_protocol_options": {
            "max_headers_count": 50,
            "headers_with_underscores_action": "REJECT_REQUEST",
        },
    }))
}

/// The codec limits of a listener where meshward's header-limits decides (above its policy).
pub(super) fn codec_above_policy() -> Map<String, Value> {
    hcm(json!({"max_request_headers_kb": 96}))
}
