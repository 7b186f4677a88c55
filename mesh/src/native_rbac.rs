//! AuthorizationPolicies as Envoy's own RBAC filters, written the way istiod writes them for a
//! sidecar: the HTTP filters (`envoy.filters.http.rbac`, [`http_rbac_filters`]) on an HTTP port
//! and the network filters (`envoy.filters.network.rbac`, [`network_rbac_filters`]) in front of
//! `tcp_proxy` on a TCP port. This is what Istio itself would enforce, not what meshward enforces:
//! the native differential runs it in real Envoy beside meshward's filters.
//!
//! It follows istiod (istio/istio `pilot/pkg/security/authz/builder/builder.go`,
//! `model/{model,generator,permission,principal,util}.go`, `matcher/*.go`, read at master 86c9f01,
//! August 2026) rule for rule. What TCP changes:
//!
//! - an ALLOW rule with an HTTP-only field (hosts, methods, paths, requestPrincipals, their
//!   `not*`, `when` keys `request.headers[…]` and `request.auth.*`) is dropped whole: it can allow
//!   nothing on TCP (a narrower ALLOW);
//! - in DENY and AUDIT rules only the HTTP-only field is dropped, and the rest of the rule still
//!   applies (a wider DENY); a rule left with no condition on one side matches anything there.
//!
//! The same treatment applies, on HTTP too, to a value istiod cannot convert (an `ipBlocks` entry
//! that is not an address or CIDR, a port that is not a number up to 65535, a `when` key
//! `request.headers` without `[name]`), and a rule with a `when` key istiod does not know is
//! dropped whole for every action. meshward's spiffe-authz refuses such configs outright
//! (`spiffe_authz_core::Config::compile`); this module does not check them, it renders.
//!
//! Policy names are istiod's `ns[<namespace>]-policy[<name>]-rule[<i>]` ([`policy_name`]). A
//! spiffe-authz pluginConfig has no namespace: its policies render in the one namespace
//! [`POLICY_NAMESPACE`]. Principals are rendered as written: this is istiod with no trust-domain
//! aliases (with aliases, istiod rewrites `<trust domain>/…` principals and adds one copy per alias).
//! `requestPrincipals` and `request.auth.*` match the JWT payload that istiod's `jwt_authn`
//! providers put in dynamic metadata (`payload_in_metadata: payload`, see [`crate::native_http`]),
//! as istiod renders them for upstream Envoy.
//!
//! Of a spiffe-authz pluginConfig's own fields: `dryRun: true` puts every policy in
//! `shadow_rules`, as istiod does for a policy annotated `istio.io/dry-run: "true"`. `requireMtls`
//! is not RBAC: in Istio it is PeerAuthentication STRICT, the listener requiring a client
//! certificate before any filter runs. `numTrustedProxies` has no TCP meaning (there is no
//! `x-forwarded-for`; Envoy's `remote_ip` is the direct peer unless PROXY protocol says otherwise)
//! and `pathParameters` is about HTTP paths: both are ignored.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use spiffe_authz_core::config::{Action, PolicyConfig, RawConfig, RuleConfig};

use crate::resource::{Condition, From, Operation, Rule, Source, To};

/// The namespace in every policy name rendered from a spiffe-authz pluginConfig (istiod uses the
/// AuthorizationPolicy's).
pub const POLICY_NAMESPACE: &str = "meshward";

/// istiod's `RBACTCPFilterStatPrefix`.
const TCP_STAT_PREFIX: &str = "tcp.";
/// The dynamic metadata jwt_authn writes the verified payload to (istiod's
/// `filters.EnvoyJwtFilterName` and `EnvoyJwtFilterPayload`).
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
pub const JWT_PAYLOAD_KEY: &str = "payload";

/// Which filter chain the RBAC filters are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Http,
    Tcp,
}

/// One AuthorizationPolicy (ALLOW, DENY or AUDIT) as the builder takes it.
#[derive(Debug, Clone)]
pub struct NativePolicy {
    pub namespace: String,
    pub name: String,
    pub action: Action,
    /// `istio.io/dry-run: "true"`: the policy's rules go to `shadow_rules`.
    pub dry_run: bool,
    pub rules: Vec<Rule>,
}

/// The Envoy network filters istiod would put in front of tcp_proxy for a spiffe-authz
/// pluginConfig's policies: one `envoy.filters.network.rbac` per action that has policies, AUDIT
/// (`LOG`) first, then DENY, then ALLOW. Errors only for what this renderer cannot say faithfully:
/// two policies with one name (Kubernetes has no such pair; here one action's filter would keep
/// one policy's rules under both) and `experimental.envoy.filters.*` keys (dynamic metadata of
/// filters a sidecar may not have).
pub fn network_rbac_filters(config: &RawConfig) -> Result<Vec<Value>> {
    let mut seen = BTreeSet::new();
    for p in &config.policies {
        if !seen.insert(p.name.as_str()) {
            bail!("two policies are named `{}`", p.name);
        }
    }
    let policies: Vec<NativePolicy> = config
        .policies
        .iter()
        .map(|p| from_plugin_config(p, config.dry_run))
        .collect();
    rbac_filters(&policies, Chain::Tcp)
}

/// [`network_rbac_filters`] as a YAML list (for docs and the CLI).
pub fn network_rbac_yaml(config: &RawConfig) -> Result<String> {
    Ok(serde_yaml_ng::to_string(&network_rbac_filters(config)?)?)
}

/// The HTTP RBAC filters istiod would put in a sidecar's inbound HTTP filter chain for these
/// policies (after `jwt_authn`, before the router): AUDIT, DENY, ALLOW, one filter per action
/// that has policies. CUSTOM policies are not taken: istiod renders them as `ext_authz`, an
/// external authorizer this renderer has no stand-in for.
pub fn http_rbac_filters(policies: &[NativePolicy]) -> Result<Vec<Value>> {
    rbac_filters(policies, Chain::Http)
}

/// istiod's `Builder.build` + `buildHTTP`/`buildTCP` for ALLOW, DENY and AUDIT.
pub fn rbac_filters(policies: &[NativePolicy], chain: Chain) -> Result<Vec<Value>> {
    let mut filters = Vec::new();
    for (action, envoy_action) in [
        (Action::Audit, "LOG"),
        (Action::Deny, "DENY"),
        (Action::Allow, "ALLOW"),
    ] {
        let mut enforced: Option<Map<String, Value>> = None;
        let mut shadow: Option<Map<String, Value>> = None;
        for p in policies.iter().filter(|p| p.action == action) {
            let target = if p.dry_run {
                shadow.get_or_insert_with(Map::new)
            } else {
                enforced.get_or_insert_with(Map::new)
            };
            add_policy(target, p, chain)?;
        }
        if enforced.is_none() && shadow.is_none() {
            continue;
        }
        filters.push(filter(envoy_action, enforced, shadow, chain));
    }
    Ok(filters)
}

/// The RBAC policy name of rule `rule` of policy `policy` of a spiffe-authz pluginConfig.
pub fn policy_name(policy: &str, rule: usize) -> String {
    istio_policy_name(POLICY_NAMESPACE, policy, rule)
}

/// istiod's `policyName`: `ns[<namespace>]-policy[<name>]-rule[<i>]`.
pub fn istio_policy_name(namespace: &str, policy: &str, rule: usize) -> String {
    format!("ns[{namespace}]-policy[{policy}]-rule[{rule}]")
}

/// A spiffe-authz policy in the resource model (the field names are Istio's in both).
fn from_plugin_config(p: &PolicyConfig, dry_run: bool) -> NativePolicy {
    NativePolicy {
        namespace: POLICY_NAMESPACE.into(),
        name: p.name.clone(),
        action: p.action,
        dry_run,
        rules: p.rules.iter().map(rule_from_config).collect(),
    }
}

fn rule_from_config(r: &RuleConfig) -> Rule {
    Rule {
        from: r
            .from
            .iter()
            .map(|f| {
                let s = &f.source;
                From {
                    source: Source {
                        principals: s.principals.clone(),
                        not_principals: s.not_principals.clone(),
                        request_principals: s.request_principals.clone(),
                        not_request_principals: s.not_request_principals.clone(),
                        namespaces: s.namespaces.clone(),
                        not_namespaces: s.not_namespaces.clone(),
                        ip_blocks: s.ip_blocks.clone(),
                        not_ip_blocks: s.not_ip_blocks.clone(),
                        remote_ip_blocks: s.remote_ip_blocks.clone(),
                        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
                        ..Source::default()
                    },
                }
            })
            .collect(),
        to: r
            .to
            .iter()
            .map(|t| {
                let o = &t.operation;
                To {
                    operation: Operation {
                        hosts: o.hosts.clone(),
                        not_hosts: o.not_hosts.clone(),
                        ports: o.ports.clone(),
                        not_ports: o.not_ports.clone(),
                        methods: o.methods.clone(),
                        not_methods: o.not_methods.clone(),
                        paths: o.paths.clone(),
                        not_paths: o.not_paths.clone(),
                    },
                }
            })
            .collect(),
        when: r
            .when
            .iter()
            .map(|c| Condition {
                key: c.key.clone(),
                values: c.values.clone(),
                not_values: c.not_values.clone(),
            })
            .collect(),
    }
}

fn filter(
    envoy_action: &str,
    enforced: Option<Map<String, Value>>,
    shadow: Option<Map<String, Value>>,
    chain: Chain,
) -> Value {
    let mut typed = Map::new();
    let (filter_name, filter_type) = match chain {
        Chain::Http => (
            "envoy.filters.http.rbac",
            "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        ),
        Chain::Tcp => (
            "envoy.filters.network.rbac",
            "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        ),
    };
    typed.insert("@type".into(), filter_type.into());
    if chain == Chain::Tcp {
        typed.insert("stat_prefix".into(), TCP_STAT_PREFIX.into());
    }
    // Written out even when empty: an ALLOW filter with no policies denies every request, an
    // absent `rules` enforces nothing (protobuf JSON would omit both defaults; Envoy reads either).
    if let Some(policies) = enforced {
        typed.insert(
            "rules".into(),
            json!({"action": envoy_action, "policies": policies}),
        );
    }
    if let Some(policies) = shadow {
        typed.insert(
            "shadow_rules".into(),
            json!({"action": envoy_action, "policies": policies}),
        );
        // istiod's shadowRuleStatPrefix: none for LOG.
        let prefix = match envoy_action {
            "ALLOW" => Some("istio_dry_run_allow_"),
            "DENY" => Some("istio_dry_run_deny_"),
            _ => None,
        };
        if let Some(prefix) = prefix {
            typed.insert("shadow_rules_stat_prefix".into(), prefix.into());
        }
    }
    json!({"name": filter_name, "typed_config": typed})
}

fn add_policy(
    policies: &mut Map<String, Value>,
    policy: &NativePolicy,
    chain: Chain,
) -> Result<()> {
    if policy.rules.is_empty() {
        // istiod's rbacPolicyMatchNever: an ALLOW policy without rules allows nothing (and still
        // makes the ALLOW filter deny whatever no other ALLOW policy allows).
        policies.insert(
            istio_policy_name(&policy.namespace, &policy.name, 0),
            json!({
                "permissions": [{"not_rule": {"any": true}}],
                "principals": [{"not_id": {"any": true}}],
            }),
        );
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        // A rule istiod skips leaves no entry; the policy's other rules still count.
        if let Some(generated) = generate(rule, policy, chain)? {
            policies.insert(
                istio_policy_name(&policy.namespace, &policy.name, i),
                generated,
            );
        }
    }
    Ok(())
}

/// Which half of an Envoy policy a field lands in; the JSON names differ between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Permission,
    Principal,
}

impl Side {
    fn any(self) -> Value {
        json!({"any": true})
    }

    fn and(self, items: Vec<Value>) -> Value {
        match self {
            Self::Permission => json!({"and_rules": {"rules": items}}),
            Self::Principal => json!({"and_ids": {"ids": items}}),
        }
    }

    fn or(self, items: Vec<Value>) -> Value {
        match self {
            Self::Permission => json!({"or_rules": {"rules": items}}),
            Self::Principal => json!({"or_ids": {"ids": items}}),
        }
    }

    fn not(self, item: Value) -> Value {
        match self {
            Self::Permission => json!({"not_rule": item}),
            Self::Principal => json!({"not_id": item}),
        }
    }
}

/// istiod's generators (`model/generator.go`), one per attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Generator {
    SourcePrincipal,
    SourceNamespace,
    /// `serviceAccounts` / `source.serviceAccount`: a bare name is in the policy's namespace.
    ServiceAccount,
    TrustDomain,
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    Sni,
    Host,
    Method,
    Path,
    /// `request.headers[<name>]` with the key as written (the name is checked when rendering).
    RequestHeader(String),
    // istiod's "extended" generators: all values of a field become one matcher.
    RequestPrincipal,
    Audiences,
    Presenter,
    /// `request.auth.claims[…]` with the key as written.
    Claims(String),
}

impl Generator {
    fn http_only(&self) -> bool {
        matches!(
            self,
            Self::Host
                | Self::Method
                | Self::Path
                | Self::RequestHeader(_)
                | Self::RequestPrincipal
                | Self::Audiences
                | Self::Presenter
                | Self::Claims(_)
        )
    }

    fn extended(&self) -> bool {
        matches!(
            self,
            Self::RequestPrincipal | Self::Audiences | Self::Presenter | Self::Claims(_)
        )
    }

    /// One value as an Envoy permission or principal; `None` where istiod's generator returns an
    /// error (an address, port or key it cannot parse).
    fn render(&self, value: &str, policy_namespace: &str) -> Option<Value> {
        match self {
            // The sidecar form: the peer principal is the client certificate's URI SAN. Where the
            // TLS peer is not the client (waypoints, a sidecar's HBONE inbound) istiod matches the
            // `io.istio.peer_principal` filter state instead, which carries the same principal but
            // is set by Istio's own Envoy filters; ours has none, so it would never be set.
            Self::SourcePrincipal => Some(authenticated(string_matcher(value, "spiffe://"))),
            Self::SourceNamespace => {
                let namespace = value
                    .split('*')
                    .map(quote_meta)
                    .collect::<Vec<_>>()
                    .join(".*");
                Some(authenticated(regex(&format!(".*/ns/{namespace}/.*"))))
            }
            Self::ServiceAccount => {
                let (ns, sa) = value.split_once('/').unwrap_or((policy_namespace, value));
                Some(authenticated(regex(&format!(
                    "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                    quote_meta(ns),
                    quote_meta(sa)
                ))))
            }
            Self::TrustDomain => Some(authenticated(if value == "*" {
                json!({"prefix": "spiffe://"})
            } else if let Some((before, after)) = value.split_once('*') {
                regex(&format!(
                    "spiffe://{}[^/]*{}/.*",
                    quote_meta(before),
                    quote_meta(after)
                ))
            } else {
                json!({"prefix": format!("spiffe://{value}/")})
            })),
            Self::SourceIp => Some(json!({"direct_remote_ip": cidr_range(value)?})),
            Self::RemoteIp => Some(json!({"remote_ip": cidr_range(value)?})),
            Self::DestinationIp => Some(json!({"destination_ip": cidr_range(value)?})),
            Self::DestinationPort => Some(json!({"destination_port": port(value)?})),
            Self::Sni => Some(json!({"requested_server_name": string_matcher(value, "")})),
            Self::Host => Some(json!({"header": header_matcher(":authority", value, true)})),
            Self::Method => Some(json!({"header": header_matcher(":method", value, false)})),
            Self::Path => Some(path_matcher(value)),
            Self::RequestHeader(key) => {
                let name = in_brackets(key.strip_prefix("request.headers")?)?;
                Some(json!({"header": header_matcher(name, value, false)}))
            }
            Self::RequestPrincipal | Self::Audiences | Self::Presenter | Self::Claims(_) => None,
        }
    }

    /// An extended generator's one matcher for all of a field's values; `None` on istiod's error
    /// (a claim key it cannot parse).
    fn render_all(&self, values: &[String]) -> Option<Value> {
        match self {
            Self::RequestPrincipal => {
                let mut or: Vec<Value> = values.iter().map(|v| request_principal(v)).collect();
                if or.len() == 1 {
                    return or.pop();
                }
                Some(Side::Principal.or(or))
            }
            Self::Audiences => Some(jwt_claim_list(&["aud"], values)),
            Self::Presenter => Some(jwt_claim_list(&["azp"], values)),
            Self::Claims(key) => {
                let claims = nested_brackets(key.strip_prefix("request.auth.claims")?)?;
                let claims: Vec<&str> = claims.iter().map(String::as_str).collect();
                Some(jwt_claim_list(&claims, values))
            }
            _ => None,
        }
    }
}

/// One field of a rule (`principals`/`notPrincipals`, a `when` entry, …).
#[derive(Debug, Clone)]
struct Field<'a> {
    generator: Generator,
    values: &'a [String],
    not_values: &'a [String],
}

fn field<'a>(generator: Generator, values: &'a [String], not_values: &'a [String]) -> Field<'a> {
    Field {
        generator,
        values,
        not_values,
    }
}

/// What istiod's `model.New` makes of a `when` key.
enum WhenKey {
    Field(Side, Generator),
    /// `model.New` fails with "unknown attribute": the rule is skipped, whatever the action.
    Unknown,
    /// istiod renders it, this module does not: an error rather than a guess.
    NotModelled(&'static str),
}

/// istiod's switch in `model.New`, in its order (the prefix cases make the order matter).
fn when_key(key: &str) -> WhenKey {
    use Generator as G;
    let (side, generator) = match key {
        "destination.ip" => (Side::Permission, G::DestinationIp),
        "destination.port" => (Side::Permission, G::DestinationPort),
        "connection.sni" => (Side::Permission, G::Sni),
        _ if key.starts_with("experimental.envoy.filters.") => {
            return WhenKey::NotModelled(
                "istiod matches the dynamic metadata of an Envoy filter for it, which the \
                 rendered chain may not have",
            )
        }
        "source.ip" => (Side::Principal, G::SourceIp),
        "remote.ip" => (Side::Principal, G::RemoteIp),
        "source.namespace" => (Side::Principal, G::SourceNamespace),
        "source.trustDomain" => (Side::Principal, G::TrustDomain),
        "source.serviceAccount" => (Side::Principal, G::ServiceAccount),
        "source.principal" => (Side::Principal, G::SourcePrincipal),
        "request.auth.principal" => (Side::Principal, G::RequestPrincipal),
        "request.auth.audiences" => (Side::Principal, G::Audiences),
        "request.auth.presenter" => (Side::Principal, G::Presenter),
        _ if key.starts_with("request.headers") => {
            (Side::Principal, G::RequestHeader(key.to_string()))
        }
        _ if key.starts_with("request.auth.claims") => {
            (Side::Principal, G::Claims(key.to_string()))
        }
        _ => return WhenKey::Unknown,
    };
    WhenKey::Field(side, generator)
}

/// istiod's `model.New` and `Generate` for one rule: `None` if istiod skips it.
fn generate(rule: &Rule, policy: &NativePolicy, chain: Chain) -> Result<Option<Value>> {
    let keys: Vec<(&Condition, WhenKey)> =
        rule.when.iter().map(|c| (c, when_key(&c.key))).collect();
    // istiod stops at the first unknown key, whatever comes after it.
    if keys.iter().any(|(_, k)| matches!(k, WhenKey::Unknown)) {
        return Ok(None);
    }
    // `when` conditions go after the `from`/`to` fields of every copy they join.
    let mut when_permissions = Vec::new();
    let mut when_principals = Vec::new();
    for (c, key) in keys {
        let (side, generator) = match key {
            WhenKey::Field(side, generator) => (side, generator),
            WhenKey::NotModelled(why) => bail!("`when` key `{}` is not modelled: {why}", c.key),
            WhenKey::Unknown => return Ok(None),
        };
        let f = field(generator, &c.values, &c.not_values);
        match side {
            Side::Permission => when_permissions.push(f),
            Side::Principal => when_principals.push(f),
        }
    }

    // One Envoy principal per `from` and one permission per `to`, each the AND of its fields in
    // istiod's order (`insertFront` in reverse); no `from` (or no `to`) is one entry with the
    // `when` fields alone.
    let mut principals = Vec::new();
    for from in &rule.from {
        let s = &from.source;
        let mut fields = vec![
            field(Generator::SourcePrincipal, &s.principals, &s.not_principals),
            field(
                Generator::RequestPrincipal,
                &s.request_principals,
                &s.not_request_principals,
            ),
            field(
                Generator::ServiceAccount,
                &s.service_accounts,
                &s.not_service_accounts,
            ),
            field(
                Generator::TrustDomain,
                &s.trust_domains,
                &s.not_trust_domains,
            ),
            field(Generator::SourceNamespace, &s.namespaces, &s.not_namespaces),
            field(
                Generator::RemoteIp,
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
            ),
            field(Generator::SourceIp, &s.ip_blocks, &s.not_ip_blocks),
        ];
        fields.extend(when_principals.iter().cloned());
        principals.push(fields);
    }
    if rule.from.is_empty() {
        principals.push(when_principals);
    }
    let mut permissions = Vec::new();
    for to in &rule.to {
        let o = &to.operation;
        let mut fields = vec![
            field(Generator::Host, &o.hosts, &o.not_hosts),
            field(Generator::Method, &o.methods, &o.not_methods),
            field(Generator::Path, &o.paths, &o.not_paths),
            field(Generator::DestinationPort, &o.ports, &o.not_ports),
        ];
        fields.extend(when_permissions.iter().cloned());
        permissions.push(fields);
    }
    if rule.to.is_empty() {
        permissions.push(when_permissions);
    }

    let ctx = Context {
        chain,
        action: policy.action,
        namespace: &policy.namespace,
    };
    let mut rendered_permissions = Vec::new();
    for fields in &permissions {
        let Some(p) = and_of(Side::Permission, fields, &ctx) else {
            return Ok(None);
        };
        rendered_permissions.push(p);
    }
    let mut rendered_principals = Vec::new();
    for fields in &principals {
        let Some(p) = and_of(Side::Principal, fields, &ctx) else {
            return Ok(None);
        };
        rendered_principals.push(p);
    }
    Ok(Some(json!({
        "permissions": rendered_permissions,
        "principals": rendered_principals,
    })))
}

struct Context<'a> {
    chain: Chain,
    action: Action,
    namespace: &'a str,
}

/// istiod's `generatePermission`/`generatePrincipal`: the AND of each field's `or` of its values
/// and `not(or)` of its not-values (an extended field's one matcher and its `not`), `any` if
/// nothing is left. `None` when a field cannot be rendered in an ALLOW rule (istiod's
/// `checkError`: the whole rule goes; an HTTP-only field on TCP is such a field); in DENY and
/// AUDIT such a value (or extended field) is left out, which widens the rule.
fn and_of(side: Side, fields: &[Field<'_>], ctx: &Context<'_>) -> Option<Value> {
    let mut and = Vec::new();
    for f in fields {
        for (values, negate) in [(f.values, false), (f.not_values, true)] {
            if values.is_empty() {
                continue;
            }
            let unrenderable = ctx.chain == Chain::Tcp && f.generator.http_only();
            let rendered = if f.generator.extended() {
                let one = if unrenderable {
                    None
                } else {
                    f.generator.render_all(values)
                };
                match one {
                    Some(m) => Some(m),
                    None if ctx.action == Action::Allow => return None,
                    None => None,
                }
            } else {
                let mut or = Vec::new();
                for v in values {
                    let one = if unrenderable {
                        None
                    } else {
                        f.generator.render(v, ctx.namespace)
                    };
                    match one {
                        Some(rendered) => or.push(rendered),
                        None if ctx.action == Action::Allow => return None,
                        None => {}
                    }
                }
                (!or.is_empty()).then(|| side.or(or))
            };
            if let Some(m) = rendered {
                and.push(if negate { side.not(m) } else { m });
            }
        }
    }
    if and.is_empty() {
        and.push(side.any());
    }
    Some(side.and(and))
}

fn authenticated(principal_name: Value) -> Value {
    json!({"authenticated": {"principal_name": principal_name}})
}

fn regex(regex: &str) -> Value {
    json!({"safe_regex": {"regex": regex}})
}

/// istiod's `StringMatcherWithPrefix`: `*` is any non-empty value (the prefix is not required),
/// `*x` ends with `x` (a regex after the prefix), `x*` starts with prefix + `x`, else exact.
fn string_matcher(value: &str, prefix: &str) -> Value {
    if value == "*" {
        return regex(".+");
    }
    if let Some(suffix) = value.strip_prefix('*') {
        if prefix.is_empty() {
            return json!({"suffix": suffix});
        }
        return regex(&format!("{prefix}.*{}", quote_meta(suffix)));
    }
    if let Some(start) = value.strip_suffix('*') {
        return json!({"prefix": format!("{prefix}{start}")});
    }
    json!({"exact": format!("{prefix}{value}")})
}

/// istiod's `HeaderMatcher` (and `HostMatcher`, which ignores case): `*` is presence, `*x` a
/// suffix, `x*` a prefix, else exact.
fn header_matcher(name: &str, value: &str, ignore_case: bool) -> Value {
    if value == "*" {
        return json!({"name": name, "present_match": true});
    }
    let mut m = if let Some(suffix) = value.strip_prefix('*') {
        json!({"suffix": suffix})
    } else if let Some(start) = value.strip_suffix('*') {
        json!({"prefix": start})
    } else {
        json!({"exact": value})
    };
    if ignore_case {
        m["ignore_case"] = json!(true);
    }
    json!({"name": name, "string_match": m})
}

/// istiod's path permission: a `{*}`/`{**}` template is Envoy's `uri_template` matcher, anything
/// else a `url_path` (the path without the query) string matcher.
fn path_matcher(value: &str) -> Value {
    if value.contains("{*}") || value.contains("{**}") {
        let template = value.replace("{**}", "**").replace("{*}", "*");
        return json!({"uri_template": {
            "name": "uri-template",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                "path_template": template,
            },
        }});
    }
    json!({"url_path": {"path": string_matcher(value, "")}})
}

/// istiod's `requestPrincipalGenerator` for one value: `iss/sub` split at the last `/` (issuers
/// are URLs), each half matched against the JWT payload jwt_authn put in metadata.
fn request_principal(value: &str) -> Value {
    let any = regex(".+");
    let (found, iss, sub) = match value.rfind('/') {
        Some(i) => (true, &value[..i], &value[i + 1..]),
        None => (false, value, ""),
    };
    let (match_iss, match_sub) = if value == "*" {
        (any.clone(), any)
    } else if value.starts_with('*') {
        if found {
            let m_iss = if iss == "*" {
                any
            } else {
                json!({"suffix": iss.trim_start_matches('*')})
            };
            (m_iss, json!({"exact": sub}))
        } else {
            (any, json!({"suffix": value.trim_start_matches('*')}))
        }
    } else if value.ends_with('*') {
        if found {
            let m_sub = if sub == "*" {
                any
            } else {
                json!({"prefix": sub.trim_end_matches('*')})
            };
            (json!({"exact": iss}), m_sub)
        } else {
            (json!({"prefix": value.trim_end_matches('*')}), any)
        }
    } else {
        (json!({"exact": iss}), json!({"exact": sub}))
    };
    let claim = |name: &str, m: Value| {
        json!({"metadata": {
            "filter": JWT_FILTER,
            "path": [{"key": JWT_PAYLOAD_KEY}, {"key": name}],
            "value": {"string_match": m},
        }})
    };
    Side::Principal.and(vec![claim("iss", match_iss), claim("sub", match_sub)])
}

/// istiod's `MetadataListValueMatcherForJWTClaims`: the claim at `path` in the JWT payload is one
/// of `values` as a string, or a list holding one.
fn jwt_claim_list(path: &[&str], values: &[String]) -> Value {
    let mut matchers: Vec<Value> = values
        .iter()
        .map(|v| json!({"string_match": string_matcher(v, "")}))
        .collect();
    let value = if matchers.len() == 1 {
        matchers.pop().unwrap_or(Value::Null)
    } else {
        json!({"or_match": {"value_matchers": matchers}})
    };
    let mut keys = vec![json!({"key": JWT_PAYLOAD_KEY})];
    keys.extend(path.iter().map(|k| json!({"key": k})));
    json!({"metadata": {
        "filter": JWT_FILTER,
        "path": keys,
        "value": {"or_match": {"value_matchers": [
            {"list_match": {"one_of": value.clone()}},
            value,
        ]}},
    }})
}

/// istiod's `extractNameInBrackets`: `[name]` ⇒ `name`.
fn in_brackets(s: &str) -> Option<&str> {
    s.strip_prefix('[')?.strip_suffix(']')
}

/// istiod's `extractNameInNestedBrackets`: `[a][b]` ⇒ `a`, `b`; anything else is one
/// `[name]` or an error.
fn nested_brackets(s: &str) -> Option<Vec<String>> {
    let mut claims = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').and_then(|r| {
            let end = r.find(']')?;
            let name = r.get(..end)?;
            (!name.contains('[')).then_some((name, r.get(end + 1..)?))
        });
        match inner {
            Some((name, after)) => {
                claims.push(name.to_string());
                rest = after;
            }
            None => return in_brackets(s).map(|n| vec![n.to_string()]),
        }
    }
    Some(claims)
}
/// Go's `regexp.QuoteMeta`.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// istiod's `util.AddrStrToCidrRange` (Go's `netip`): a CIDR as written (the address is not
/// masked), a bare address as a /32 or /128; `None` where Go's parser fails.
fn cidr_range(value: &str) -> Option<Value> {
    use std::net::{IpAddr, Ipv6Addr};
    let (address, prefix_len) = match value.rsplit_once('/') {
        Some((address, bits)) => {
            // netip.ParsePrefix: decimal, no sign, no leading zero, no zone on the address.
            let canonical = bits == "0" || !bits.starts_with('0');
            if bits.is_empty() || !canonical || !bits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let address: IpAddr = address.parse().ok()?;
            let bits: u32 = bits.parse().ok()?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return None;
            }
            (address, bits)
        }
        None => {
            // netip.ParseAddr takes an IPv6 zone (`fe80::1%eth0`), which PrefixFrom drops.
            let address = match value.split_once('%') {
                Some((v6, zone)) if !zone.is_empty() => IpAddr::V6(v6.parse::<Ipv6Addr>().ok()?),
                Some(_) => return None,
                None => value.parse().ok()?,
            };
            (address, if address.is_ipv4() { 32 } else { 128 })
        }
    };
    Some(json!({"address_prefix": address.to_string(), "prefix_len": prefix_len}))
}

/// istiod's `convertToPort`: `strconv.ParseUint(v, 10, 32)` up to 65535 (0 and leading zeros
/// pass).
fn port(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u32>().ok().filter(|p| *p <= 65535)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v: Value) -> RawConfig {
        serde_json::from_value(v).unwrap()
    }

    fn filters(v: Value) -> Vec<Value> {
        network_rbac_filters(&config(v)).unwrap()
    }

    /// The `policies` of the one filter for one policy `p`.
    fn policies(action: &str, rules: Value) -> Value {
        let f = filters(json!({"policies": [{"name": "p", "action": action, "rules": rules}]}));
        assert_eq!(f.len(), 1, "{f:#?}");
        f[0]["typed_config"]["rules"]["policies"].clone()
    }

    /// The Envoy policy for policy `p`'s one rule (`Null` if istiod skips it).
    fn rule(action: &str, rule: Value) -> Value {
        policies(action, json!([rule]))["ns[meshward]-policy[p]-rule[0]"].clone()
    }

    fn any_permission() -> Value {
        json!([{"and_rules": {"rules": [{"any": true}]}}])
    }

    fn any_principal() -> Value {
        json!([{"and_ids": {"ids": [{"any": true}]}}])
    }

    /// A policy whose permission is `any` and whose one principal is the AND of `ids`.
    fn principals_only(ids: Value) -> Value {
        json!({"permissions": any_permission(), "principals": [{"and_ids": {"ids": ids}}]})
    }

    /// A policy whose principal is `any` and whose one permission is the AND of `rules`.
    fn permissions_only(rules: Value) -> Value {
        json!({"permissions": [{"and_rules": {"rules": rules}}], "principals": any_principal()})
    }

    fn authn(principal_name: Value) -> Value {
        json!({"authenticated": {"principal_name": principal_name}})
    }

    fn cidr(address_prefix: &str, prefix_len: u32) -> Value {
        json!({"address_prefix": address_prefix, "prefix_len": prefix_len})
    }

    #[test]
    fn an_allow_policy_is_one_filter_in_istiods_shape() {
        let f = filters(json!({"policies": [{
            "name": "read",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/checkout"]}}]}],
        }]}));
        assert_eq!(
            f,
            vec![json!({
                "name": "envoy.filters.network.rbac",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                    "stat_prefix": "tcp.",
                    "rules": {"action": "ALLOW", "policies": {
                        "ns[meshward]-policy[read]-rule[0]": {
                            "permissions": [{"and_rules": {"rules": [{"any": true}]}}],
                            "principals": [{"and_ids": {"ids": [{"or_ids": {"ids": [
                                {"authenticated": {"principal_name":
                                    {"exact": "spiffe://cluster.local/ns/shop/sa/checkout"}}},
                            ]}}]}}],
                        },
                    }},
                },
            })]
        );
    }

    #[test]
    fn principals_take_istios_four_forms_after_the_spiffe_prefix() {
        let got = rule(
            "ALLOW",
            json!({"from": [{"source": {
                "principals": ["*", "cluster.local/ns/shop/*", "*/ns/shop/sa/checkout",
                    "*.corp/ns/x/sa/y", "td/ns/a/sa/b"],
                "notPrincipals": ["cluster.local/ns/blocked/sa/*"],
            }}]}),
        );
        assert_eq!(
            got,
            principals_only(json!([
                {"or_ids": {"ids": [
                    // `*` is any non-empty principal, without the prefix.
                    authn(json!({"safe_regex": {"regex": ".+"}})),
                    authn(json!({"prefix": "spiffe://cluster.local/ns/shop/"})),
                    // A suffix after a prefix is a regex, the suffix quoted.
                    authn(json!({"safe_regex": {"regex": "spiffe://.*/ns/shop/sa/checkout"}})),
                    authn(json!({"safe_regex": {"regex": r"spiffe://.*\.corp/ns/x/sa/y"}})),
                    authn(json!({"exact": "spiffe://td/ns/a/sa/b"})),
                ]}},
                {"not_id": {"or_ids": {"ids": [
                    authn(json!({"prefix": "spiffe://cluster.local/ns/blocked/sa/"})),
                ]}}},
            ]))
        );
    }

    #[test]
    fn namespaces_are_a_regex_on_the_principal() {
        let got = rule(
            "ALLOW",
            json!({"from": [{"source": {
                "namespaces": ["prod", "team-*", "a.b"],
                "notNamespaces": ["kube-system"],
            }}]}),
        );
        let ns = |r: &str| authn(json!({"safe_regex": {"regex": r}}));
        assert_eq!(
            got,
            principals_only(json!([
                {"or_ids": {"ids": [ns(".*/ns/prod/.*"), ns(".*/ns/team-.*/.*"), ns(r".*/ns/a\.b/.*")]}},
                {"not_id": {"or_ids": {"ids": [ns(".*/ns/kube-system/.*")]}}},
            ]))
        );
    }

    #[test]
    fn ip_blocks_are_the_direct_peer_and_remote_ip_blocks_the_remote_ip() {
        let got = rule(
            "ALLOW",
            json!({"from": [{"source": {
                "ipBlocks": ["10.0.0.1", "10.1.2.3/16", "2001:DB8::1", "2001:db8:0:0::/32"],
                "notIpBlocks": ["10.0.0.9"],
                "remoteIpBlocks": ["203.0.113.0/24"],
                "notRemoteIpBlocks": ["203.0.113.7"],
            }}]}),
        );
        let direct = |a: &str, l: u32| json!({"direct_remote_ip": cidr(a, l)});
        let remote = |a: &str, l: u32| json!({"remote_ip": cidr(a, l)});
        assert_eq!(
            got,
            principals_only(json!([
                // remoteIpBlocks before ipBlocks: istiod's order.
                {"or_ids": {"ids": [remote("203.0.113.0", 24)]}},
                {"not_id": {"or_ids": {"ids": [remote("203.0.113.7", 32)]}}},
                // A bare address is a /32 or /128; a CIDR keeps its address unmasked.
                {"or_ids": {"ids": [
                    direct("10.0.0.1", 32),
                    direct("10.1.2.3", 16),
                    direct("2001:db8::1", 128),
                    direct("2001:db8::", 32),
                ]}},
                {"not_id": {"or_ids": {"ids": [direct("10.0.0.9", 32)]}}},
            ]))
        );
    }

    #[test]
    fn cidr_ranges_parse_as_gos_netip_does() {
        assert_eq!(cidr_range("10.0.0.0/0"), Some(cidr("10.0.0.0", 0)));
        assert_eq!(
            cidr_range("::ffff:1.2.3.4"),
            Some(cidr("::ffff:1.2.3.4", 128))
        );
        // ParseAddr takes an IPv6 zone and PrefixFrom drops it; ParsePrefix refuses one.
        assert_eq!(cidr_range("fe80::1%eth0"), Some(cidr("fe80::1", 128)));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "010.0.0.1",
            "1.2.3.4%eth0",
            "fe80::1%",
            "fe80::1%eth0/64",
            "::/129",
            "example.com",
        ] {
            assert_eq!(cidr_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn ports_are_destination_ports() {
        let got = rule(
            "ALLOW",
            json!({"to": [{"operation": {"ports": ["8080", "0443"], "notPorts": ["9090"]}}]}),
        );
        assert_eq!(
            got,
            permissions_only(json!([
                {"or_rules": {"rules": [{"destination_port": 8080}, {"destination_port": 443}]}},
                {"not_rule": {"or_rules": {"rules": [{"destination_port": 9090}]}}},
            ]))
        );
        assert_eq!(port("0"), Some(0));
        for bad in ["", "+80", "-1", "65536", "99999999999999999999", "http"] {
            assert_eq!(port(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_tcp_when_key_with_values_and_not_values() {
        let got = rule(
            "ALLOW",
            json!({"when": [
                {"key": "destination.ip", "values": ["10.0.0.0/8"], "notValues": ["10.9.0.0/16"]},
                {"key": "destination.port", "values": ["8080"], "notValues": ["8081"]},
                {"key": "connection.sni", "values": ["*.shop.svc"], "notValues": ["admin.*"]},
                {"key": "source.ip", "values": ["10.0.0.1"], "notValues": ["10.0.0.2"]},
                {"key": "remote.ip", "values": ["203.0.113.0/24"], "notValues": ["203.0.113.7"]},
                {"key": "source.namespace", "values": ["shop"], "notValues": ["shop-dev*"]},
                {"key": "source.principal", "values": ["cluster.local/ns/shop/sa/checkout"],
                    "notValues": ["*"]},
            ]}),
        );
        let or_rules = |r: Value| json!({"or_rules": {"rules": [r]}});
        let not_rule = |r: Value| json!({"not_rule": {"or_rules": {"rules": [r]}}});
        let or_ids = |r: Value| json!({"or_ids": {"ids": [r]}});
        let not_id = |r: Value| json!({"not_id": {"or_ids": {"ids": [r]}}});
        assert_eq!(
            got,
            json!({
                "permissions": [{"and_rules": {"rules": [
                    or_rules(json!({"destination_ip": cidr("10.0.0.0", 8)})),
                    not_rule(json!({"destination_ip": cidr("10.9.0.0", 16)})),
                    or_rules(json!({"destination_port": 8080})),
                    not_rule(json!({"destination_port": 8081})),
                    // No prefix for SNI: `*x` is a plain suffix.
                    or_rules(json!({"requested_server_name": {"suffix": ".shop.svc"}})),
                    not_rule(json!({"requested_server_name": {"prefix": "admin."}})),
                ]}}],
                "principals": [{"and_ids": {"ids": [
                    or_ids(json!({"direct_remote_ip": cidr("10.0.0.1", 32)})),
                    not_id(json!({"direct_remote_ip": cidr("10.0.0.2", 32)})),
                    or_ids(json!({"remote_ip": cidr("203.0.113.0", 24)})),
                    not_id(json!({"remote_ip": cidr("203.0.113.7", 32)})),
                    or_ids(authn(json!({"safe_regex": {"regex": ".*/ns/shop/.*"}}))),
                    not_id(authn(json!({"safe_regex": {"regex": ".*/ns/shop-dev.*/.*"}}))),
                    or_ids(authn(json!({"exact": "spiffe://cluster.local/ns/shop/sa/checkout"}))),
                    not_id(authn(json!({"safe_regex": {"regex": ".+"}}))),
                ]}}],
            })
        );
    }

    #[test]
    fn each_from_and_to_is_one_principal_and_permission_with_the_when_fields_after() {
        let got = rule(
            "ALLOW",
            json!({
                "from": [
                    {"source": {"ipBlocks": ["10.0.0.1"], "principals": ["a/ns/b/sa/c"]}},
                    {"source": {"namespaces": ["n"]}},
                ],
                "to": [{"operation": {"ports": ["80"]}}, {"operation": {"ports": ["443"]}}],
                "when": [
                    {"key": "source.ip", "values": ["10.0.0.2"]},
                    {"key": "destination.port", "values": ["8080"]},
                ],
            }),
        );
        let port = |p: u32| json!({"or_rules": {"rules": [{"destination_port": p}]}});
        let ip = |a: &str| json!({"or_ids": {"ids": [{"direct_remote_ip": cidr(a, 32)}]}});
        assert_eq!(
            got,
            json!({
                "permissions": [
                    {"and_rules": {"rules": [port(80), port(8080)]}},
                    {"and_rules": {"rules": [port(443), port(8080)]}},
                ],
                "principals": [
                    {"and_ids": {"ids": [
                        {"or_ids": {"ids": [authn(json!({"exact": "spiffe://a/ns/b/sa/c"}))]}},
                        ip("10.0.0.1"),
                        ip("10.0.0.2"),
                    ]}},
                    {"and_ids": {"ids": [
                        {"or_ids": {"ids": [authn(json!({"safe_regex": {"regex": ".*/ns/n/.*"}}))]}},
                        ip("10.0.0.2"),
                    ]}},
                ],
            })
        );
    }

    #[test]
    fn an_allow_rule_with_methods_is_skipped_and_the_policys_other_rules_stay() {
        let got = policies(
            "ALLOW",
            json!([
                {"to": [{"operation": {"methods": ["GET"], "ports": ["80"]}}]},
                {"to": [{"operation": {"ports": ["443"]}}]},
            ]),
        );
        assert_eq!(
            got,
            json!({"ns[meshward]-policy[p]-rule[1]": permissions_only(json!([
                {"or_rules": {"rules": [{"destination_port": 443}]}},
            ]))})
        );
    }

    #[test]
    fn an_allow_policy_whose_only_rule_is_skipped_leaves_an_allow_filter_that_denies_all() {
        let f = filters(json!({"policies": [
            {"name": "get", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
        ]}));
        assert_eq!(
            f,
            vec![json!({
                "name": "envoy.filters.network.rbac",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                    "stat_prefix": "tcp.",
                    "rules": {"action": "ALLOW", "policies": {}},
                },
            })]
        );
    }

    #[test]
    fn a_deny_rule_loses_its_methods_and_matches_any_operation() {
        let got = rule(
            "DENY",
            json!({"to": [{"operation": {"methods": ["DELETE"]}}]}),
        );
        assert_eq!(
            got,
            json!({"permissions": any_permission(), "principals": any_principal()})
        );
        // Only the HTTP-only field goes; the ports stay.
        let got = rule(
            "DENY",
            json!({"to": [{"operation": {"methods": ["DELETE"], "ports": ["80"]}}]}),
        );
        assert_eq!(
            got,
            permissions_only(json!([{"or_rules": {"rules": [{"destination_port": 80}]}}]))
        );
    }

    #[test]
    fn a_deny_rule_on_request_principals_alone_matches_any_principal() {
        let got = rule(
            "DENY",
            json!({"from": [{"source": {"requestPrincipals": ["https://issuer/*"]}}],
                   "to": [{"operation": {"ports": ["5432"]}}]}),
        );
        assert_eq!(
            got,
            json!({
                "permissions": [{"and_rules": {"rules": [
                    {"or_rules": {"rules": [{"destination_port": 5432}]}},
                ]}}],
                "principals": any_principal(),
            })
        );
    }

    #[test]
    fn audit_is_a_log_filter_that_drops_http_fields_like_deny() {
        let rule = json!({"from": [{"source": {"requestPrincipals": ["*"]}}],
                          "to": [{"operation": {"paths": ["/admin"]}}]});
        let f = filters(json!({"policies": [{"name": "p", "action": "AUDIT", "rules": [rule]}]}));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0]["typed_config"]["rules"]["action"], "LOG");
        assert_eq!(
            f[0]["typed_config"]["rules"]["policies"]["ns[meshward]-policy[p]-rule[0]"],
            json!({"permissions": any_permission(), "principals": any_principal()})
        );
    }

    #[test]
    fn a_request_header_condition_skips_an_allow_rule_and_is_dropped_from_a_deny_rule() {
        let with_header = json!({"when": [
            {"key": "request.headers[x-role]", "values": ["admin"]},
            {"key": "source.ip", "values": ["10.0.0.1"]},
        ]});
        assert_eq!(policies("ALLOW", json!([with_header.clone()])), json!({}));
        assert_eq!(
            rule("DENY", with_header),
            principals_only(json!([
                {"or_ids": {"ids": [{"direct_remote_ip": cidr("10.0.0.1", 32)}]}},
            ]))
        );
    }

    #[test]
    fn every_http_only_field_skips_allow_and_widens_deny_and_audit() {
        let fields = [
            json!({"to": [{"operation": {"hosts": ["a.example"]}}]}),
            json!({"to": [{"operation": {"notHosts": ["a.example"]}}]}),
            json!({"to": [{"operation": {"methods": ["GET"]}}]}),
            json!({"to": [{"operation": {"notMethods": ["GET"]}}]}),
            json!({"to": [{"operation": {"paths": ["/a"]}}]}),
            json!({"to": [{"operation": {"notPaths": ["/a"]}}]}),
            json!({"from": [{"source": {"requestPrincipals": ["iss/sub"]}}]}),
            json!({"from": [{"source": {"notRequestPrincipals": ["iss/sub"]}}]}),
            json!({"when": [{"key": "request.headers[x-a]", "notValues": ["b"]}]}),
            json!({"when": [{"key": "request.auth.principal", "values": ["iss/sub"]}]}),
            json!({"when": [{"key": "request.auth.audiences", "values": ["aud"]}]}),
            json!({"when": [{"key": "request.auth.presenter", "notValues": ["web"]}]}),
            json!({"when": [{"key": "request.auth.claims[groups]", "values": ["ops"]}]}),
        ];
        let everything = json!({"permissions": any_permission(), "principals": any_principal()});
        for r in fields {
            assert_eq!(policies("ALLOW", json!([r.clone()])), json!({}), "{r}");
            assert_eq!(rule("DENY", r.clone()), everything, "{r}");
            assert_eq!(rule("AUDIT", r.clone()), everything, "{r}");
        }
    }

    #[test]
    fn a_value_istiod_cannot_parse_skips_an_allow_rule_and_is_dropped_from_a_deny_rule() {
        let bad_port = json!({"to": [{"operation": {"ports": ["80", "http"]}}]});
        assert_eq!(policies("ALLOW", json!([bad_port.clone()])), json!({}));
        assert_eq!(
            rule("DENY", bad_port),
            permissions_only(json!([{"or_rules": {"rules": [{"destination_port": 80}]}}]))
        );
        let bad_ip = json!({"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]});
        assert_eq!(policies("ALLOW", json!([bad_ip.clone()])), json!({}));
        assert_eq!(
            rule("DENY", bad_ip),
            principals_only(json!([{"any": true}]))
        );
    }

    #[test]
    fn an_unknown_when_key_skips_the_rule_for_every_action() {
        let unknown = json!({"when": [
            {"key": "source.ip", "values": ["10.0.0.1"]},
            {"key": "source.port", "values": ["1234"]},
        ]});
        for action in ["ALLOW", "DENY", "AUDIT"] {
            assert_eq!(
                policies(action, json!([unknown.clone()])),
                json!({}),
                "{action}"
            );
        }
    }

    #[test]
    fn experimental_envoy_filter_keys_are_errors() {
        let key = "experimental.envoy.filters.network.mysql_proxy[db.table]";
        let c = config(
            json!({"policies": [{"name": "p", "action": "DENY", "rules": [
                {"when": [{"key": key, "values": ["x"]}]},
            ]}]}),
        );
        let e = network_rbac_filters(&c).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }

    #[test]
    fn service_account_and_trust_domain_keys_render_as_istiod_does() {
        let got = rule(
            "ALLOW",
            json!({"when": [
                {"key": "source.serviceAccount", "values": ["shop/checkout", "cart"]},
                {"key": "source.trustDomain", "values": ["*", "td.local", "prod-*.corp"]},
            ]}),
        );
        assert_eq!(
            got,
            principals_only(json!([
                {"or_ids": {"ids": [
                    authn(json!({"safe_regex": {"regex": "spiffe://.+/ns/shop/(.+/|)sa/checkout(/.+)?"}})),
                    authn(json!({"safe_regex": {"regex": "spiffe://.+/ns/meshward/(.+/|)sa/cart(/.+)?"}})),
                ]}},
                {"or_ids": {"ids": [
                    authn(json!({"prefix": "spiffe://"})),
                    authn(json!({"prefix": "spiffe://td.local/"})),
                    authn(json!({"safe_regex": {"regex": "spiffe://prod-[^/]*\\.corp/.*"}})),
                ]}},
            ]))
        );
    }

    /// The HTTP Envoy policy for rule 0 of policy `shop/p` (`Null` if istiod skips it).
    fn http_rule(action: Action, rule: Value) -> Value {
        let p = NativePolicy {
            namespace: "shop".into(),
            name: "p".into(),
            action,
            dry_run: false,
            rules: vec![serde_json::from_value(rule).unwrap()],
        };
        let f = http_rbac_filters(&[p]).unwrap();
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0]["name"], "envoy.filters.http.rbac");
        assert!(f[0]["typed_config"].get("stat_prefix").is_none());
        f[0]["typed_config"]["rules"]["policies"]["ns[shop]-policy[p]-rule[0]"].clone()
    }

    #[test]
    fn hosts_ignore_case_and_methods_do_not() {
        let got = http_rule(
            Action::Allow,
            json!({"to": [{"operation": {
                "hosts": ["cart.shop", "*.shop", "cart.*", "*"],
                "notMethods": ["DELETE", "*"],
            }}]}),
        );
        let host = |m: Value| json!({"header": {"name": ":authority", "string_match": m}});
        assert_eq!(
            got,
            permissions_only(json!([
                {"or_rules": {"rules": [
                    host(json!({"exact": "cart.shop", "ignore_case": true})),
                    host(json!({"suffix": ".shop", "ignore_case": true})),
                    host(json!({"prefix": "cart.", "ignore_case": true})),
                    {"header": {"name": ":authority", "present_match": true}},
                ]}},
                {"not_rule": {"or_rules": {"rules": [
                    {"header": {"name": ":method", "string_match": {"exact": "DELETE"}}},
                    {"header": {"name": ":method", "present_match": true}},
                ]}}},
            ]))
        );
    }

    #[test]
    fn hosts_with_ports_are_matched_as_written_against_the_authority() {
        // istiod adds no port variants: `cart.shop` does not match `cart.shop:8080`, which is why
        // people write `cart.shop:*` too.
        let got = http_rule(
            Action::Allow,
            json!({"to": [{"operation": {"hosts": ["cart.shop:8080", "cart.shop:*"]}}]}),
        );
        let host = |m: Value| json!({"header": {"name": ":authority", "string_match": m}});
        assert_eq!(
            got,
            permissions_only(json!([{"or_rules": {"rules": [
                host(json!({"exact": "cart.shop:8080", "ignore_case": true})),
                host(json!({"prefix": "cart.shop:", "ignore_case": true})),
            ]}}]))
        );
    }

    #[test]
    fn paths_are_url_path_matchers_and_templates_uri_templates() {
        let got = http_rule(
            Action::Deny,
            json!({"to": [{"operation": {
                "paths": ["/admin", "/admin/*", "*/secret", "*", "/v1/{*}/keys", "/{**}/raw"],
                "ports": ["8080"],
            }}]}),
        );
        let template = |t: &str| {
            json!({"uri_template": {"name": "uri-template", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                "path_template": t,
            }}})
        };
        assert_eq!(
            got,
            permissions_only(json!([
                {"or_rules": {"rules": [
                    {"url_path": {"path": {"exact": "/admin"}}},
                    {"url_path": {"path": {"prefix": "/admin/"}}},
                    {"url_path": {"path": {"suffix": "/secret"}}},
                    {"url_path": {"path": {"safe_regex": {"regex": ".+"}}}},
                    template("/v1/*/keys"),
                    template("/**/raw"),
                ]}},
                {"or_rules": {"rules": [{"destination_port": 8080}]}},
            ]))
        );
    }

    #[test]
    fn request_principals_split_at_the_last_slash_into_iss_and_sub_metadata() {
        let got = http_rule(
            Action::Allow,
            json!({"from": [{"source": {
                "requestPrincipals": ["https://idp/alice", "https://idp/*", "*/alice", "*"],
                "notRequestPrincipals": ["https://bad/mallory"],
            }}]}),
        );
        let claim = |name: &str, m: Value| {
            json!({"metadata": {"filter": "envoy.filters.http.jwt_authn",
                "path": [{"key": "payload"}, {"key": name}], "value": {"string_match": m}}})
        };
        let pair = |iss: Value, sub: Value| json!({"and_ids": {"ids": [claim("iss", iss), claim("sub", sub)]}});
        let any = json!({"safe_regex": {"regex": ".+"}});
        assert_eq!(
            got,
            principals_only(json!([
                {"or_ids": {"ids": [
                    pair(json!({"exact": "https://idp"}), json!({"exact": "alice"})),
                    pair(json!({"exact": "https://idp"}), any.clone()),
                    pair(any.clone(), json!({"exact": "alice"})),
                    pair(any.clone(), any),
                ]}},
                {"not_id": pair(json!({"exact": "https://bad"}), json!({"exact": "mallory"}))},
            ]))
        );
    }

    #[test]
    fn request_headers_and_claims_are_principals_after_the_source_fields() {
        let got = http_rule(
            Action::Allow,
            json!({
                "from": [{"source": {"namespaces": ["shop"]}}],
                "when": [
                    {"key": "request.headers[X-Tenant]", "values": ["acme", "*-beta"]},
                    {"key": "request.auth.claims[groups]", "values": ["admins"]},
                    {"key": "request.auth.claims[realm][role]", "values": ["a", "b*"]},
                    {"key": "request.auth.audiences", "notValues": ["legacy"]},
                ],
            }),
        );
        let list = |path: Value, value: Value| {
            json!({"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": path,
                "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": value.clone()}}, value]}}}})
        };
        assert_eq!(
            got,
            principals_only(json!([
                {"or_ids": {"ids": [authn(json!({"safe_regex": {"regex": ".*/ns/shop/.*"}}))]}},
                {"or_ids": {"ids": [
                    {"header": {"name": "X-Tenant", "string_match": {"exact": "acme"}}},
                    {"header": {"name": "X-Tenant", "string_match": {"suffix": "-beta"}}},
                ]}},
                list(json!([{"key": "payload"}, {"key": "groups"}]), json!({"string_match": {"exact": "admins"}})),
                list(
                    json!([{"key": "payload"}, {"key": "realm"}, {"key": "role"}]),
                    json!({"or_match": {"value_matchers": [
                        {"string_match": {"exact": "a"}}, {"string_match": {"prefix": "b"}},
                    ]}}),
                ),
                {"not_id": list(json!([{"key": "payload"}, {"key": "aud"}]), json!({"string_match": {"exact": "legacy"}}))},
            ]))
        );
    }

    #[test]
    fn a_malformed_header_key_skips_an_allow_rule_and_is_dropped_from_a_deny_rule() {
        let rule = json!({"to": [{"operation": {"methods": ["GET"]}}],
            "when": [{"key": "request.headers", "values": ["x"]}]});
        assert_eq!(http_rule(Action::Allow, rule.clone()), Value::Null);
        let deny = http_rule(Action::Deny, rule);
        assert_eq!(deny["principals"], any_principal());
    }

    #[test]
    fn two_policies_with_one_name_are_an_error() {
        let c = config(json!({"policies": [
            {"name": "p", "rules": [{}]},
            {"name": "p", "action": "DENY", "rules": [{}]},
        ]}));
        let e = network_rbac_filters(&c).unwrap_err().to_string();
        assert!(e.contains("`p`"), "{e}");
    }

    #[test]
    fn a_policy_without_rules_is_istios_match_never() {
        let never = json!({
            "permissions": [{"not_rule": {"any": true}}],
            "principals": [{"not_id": {"any": true}}],
        });
        let f = filters(json!({"policies": [{"name": "nothing", "rules": []}]}));
        assert_eq!(
            f,
            vec![json!({
                "name": "envoy.filters.network.rbac",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                    "stat_prefix": "tcp.",
                    "rules": {"action": "ALLOW", "policies": {
                        "ns[meshward]-policy[nothing]-rule[0]": never.clone(),
                    }},
                },
            })]
        );
        // `rules` left out is the same; in a DENY policy it denies nothing.
        let f = filters(json!({"policies": [{"name": "p", "action": "DENY"}]}));
        assert_eq!(
            f[0]["typed_config"]["rules"],
            json!({"action": "DENY", "policies": {"ns[meshward]-policy[p]-rule[0]": never}})
        );
    }

    #[test]
    fn an_empty_rule_matches_everything() {
        assert_eq!(
            rule("ALLOW", json!({})),
            json!({"permissions": any_permission(), "principals": any_principal()})
        );
    }

    #[test]
    fn filters_come_log_then_deny_then_allow_one_per_action_present() {
        let f = filters(json!({"policies": [
            {"name": "a", "action": "ALLOW", "rules": [{}]},
            {"name": "d", "action": "DENY", "rules": [{}]},
            {"name": "x", "action": "AUDIT", "rules": [{}]},
            {"name": "b", "action": "ALLOW", "rules": [{}, {}]},
        ]}));
        let shape: Vec<(String, Vec<String>)> = f
            .iter()
            .map(|f| {
                let rules = &f["typed_config"]["rules"];
                let names = rules["policies"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
                (rules["action"].as_str().unwrap().to_string(), names)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("LOG".into(), vec!["ns[meshward]-policy[x]-rule[0]".into()]),
                ("DENY".into(), vec!["ns[meshward]-policy[d]-rule[0]".into()]),
                (
                    "ALLOW".into(),
                    vec![
                        "ns[meshward]-policy[a]-rule[0]".into(),
                        "ns[meshward]-policy[b]-rule[0]".into(),
                        "ns[meshward]-policy[b]-rule[1]".into(),
                    ]
                ),
            ]
        );
        let only_deny =
            filters(json!({"policies": [{"name": "d", "action": "DENY", "rules": [{}]}]}));
        assert_eq!(only_deny.len(), 1);
        assert_eq!(only_deny[0]["typed_config"]["rules"]["action"], "DENY");
        assert_eq!(filters(json!({"policies": []})), Vec::<Value>::new());
    }

    #[test]
    fn dry_run_puts_the_rules_in_shadow_rules_with_istios_stat_prefixes() {
        let f = filters(json!({"dryRun": true, "policies": [
            {"name": "a", "action": "ALLOW", "rules": [{}]},
            {"name": "d", "action": "DENY", "rules": [{}]},
            {"name": "x", "action": "AUDIT", "rules": [{}]},
        ]}));
        let everything = json!({"permissions": any_permission(), "principals": any_principal()});
        let filter =
            |typed: Value| json!({"name": "envoy.filters.network.rbac", "typed_config": typed});
        assert_eq!(
            f,
            vec![
                // istiod sets no shadow prefix for LOG.
                filter(json!({
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                    "stat_prefix": "tcp.",
                    "shadow_rules": {"action": "LOG", "policies": {
                        "ns[meshward]-policy[x]-rule[0]": everything.clone(),
                    }},
                })),
                filter(json!({
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                    "stat_prefix": "tcp.",
                    "shadow_rules": {"action": "DENY", "policies": {
                        "ns[meshward]-policy[d]-rule[0]": everything.clone(),
                    }},
                    "shadow_rules_stat_prefix": "istio_dry_run_deny_",
                })),
                filter(json!({
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
                    "stat_prefix": "tcp.",
                    "shadow_rules": {"action": "ALLOW", "policies": {
                        "ns[meshward]-policy[a]-rule[0]": everything,
                    }},
                    "shadow_rules_stat_prefix": "istio_dry_run_allow_",
                })),
            ]
        );
    }

    #[test]
    fn require_mtls_trusted_proxies_and_path_parameters_change_nothing() {
        let policies = json!([{"name": "p", "rules": [{"from": [{"source": {"remoteIpBlocks": ["10.0.0.0/8"]}}]}]}]);
        assert_eq!(
            filters(json!({"policies": policies.clone(), "requireMtls": false,
                           "numTrustedProxies": 2, "pathParameters": "STRIP"})),
            filters(json!({"policies": policies}))
        );
    }

    #[test]
    fn yaml_is_the_same_list() {
        let c = config(json!({"policies": [
            {"name": "p", "action": "DENY", "rules": [{"to": [{"operation": {"ports": ["22"]}}]}]},
        ]}));
        let yaml = network_rbac_yaml(&c).unwrap();
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, Value::Array(network_rbac_filters(&c).unwrap()));
        assert!(yaml.contains("name: envoy.filters.network.rbac"), "{yaml}");
    }

    #[test]
    fn quote_meta_escapes_what_gos_does() {
        assert_eq!(
            quote_meta(r"a.b+c*d?e(f)g|h[i]j{k}l^m$n\o-p/q"),
            r"a\.b\+c\*d\?e\(f\)g\|h\[i\]j\{k\}l\^m\$n\\o-p/q"
        );
    }
}
