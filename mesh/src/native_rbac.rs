//! spiffe-authz policies as Envoy's own network RBAC filters: what istiod puts in front of
//! `tcp_proxy` on a sidecar's inbound TCP filter chain for the same AuthorizationPolicy specs.
//!
//! This follows istiod's TCP builder (istio/istio `pilot/pkg/security/authz/builder/builder.go`,
//! `model/{model,generator,permission,principal,util}.go`, `matcher/string.go`, read at master
//! 86c9f01, August 2026) rule for rule, so the output is what Istio would enforce, not what
//! meshward's filter enforces. The two differ where a field means nothing without HTTP:
//!
//! - an ALLOW rule with an HTTP-only field (hosts, methods, paths, requestPrincipals, their
//!   `not*`, `when` keys `request.headers[…]` and `request.auth.*`) is dropped whole: it can allow
//!   nothing on TCP (a narrower ALLOW);
//! - in DENY and AUDIT rules only the HTTP-only field is dropped, and the rest of the rule still
//!   applies (a wider DENY); a rule left with no condition on one side matches anything there.
//!
//! The same treatment applies to a value istiod cannot convert (an `ipBlocks` entry that is not an
//! address or CIDR, a port that is not a number up to 65535), and a rule with a `when` key istiod
//! does not know is dropped whole for every action. meshward's spiffe-authz refuses such configs
//! outright (`spiffe_authz_core::Config::compile`); this module does not check them, it renders.
//!
//! Policy names: `ns[meshward]-policy[<policy name>]-rule[<rule index>]` ([`policy_name`]), as
//! istiod's `ns[<namespace>]-policy[<name>]-rule[<i>]` with the one namespace `meshward` (a
//! pluginConfig has no namespace). Principals are rendered as written: this is istiod with the
//! default trust domain `cluster.local` and no trust-domain aliases (with another trust domain,
//! istiod rewrites `cluster.local/…` principals to it and adds one copy per alias).
//!
//! Of the pluginConfig's own fields: `dryRun: true` puts every policy in `shadow_rules`, as istiod
//! does for a policy annotated `istio.io/dry-run: "true"`. `requireMtls` is not RBAC: in Istio it is
//! PeerAuthentication STRICT, the listener requiring a client certificate before any filter runs.
//! `numTrustedProxies` has no TCP meaning (there is no `x-forwarded-for`; Envoy's `remote_ip` is the
//! direct peer unless PROXY protocol says otherwise) and `pathParameters` is about HTTP paths: both
//! are ignored.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use spiffe_authz_core::config::{Action, ConditionConfig, PolicyConfig, RawConfig, RuleConfig};

/// The namespace in every policy name (istiod uses the AuthorizationPolicy's).
pub const POLICY_NAMESPACE: &str = "meshward";

const FILTER_NAME: &str = "envoy.filters.network.rbac";
const FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
/// istiod's `RBACTCPFilterStatPrefix`.
const STAT_PREFIX: &str = "tcp.";

/// The Envoy network filters istiod would put in front of tcp_proxy for these policies: one
/// `envoy.filters.network.rbac` per action that has policies, AUDIT (`LOG`) first, then DENY, then
/// ALLOW. Errors only for what this renderer cannot say faithfully: two policies with one name
/// (their rules would share policy names) and the `when` keys istiod renders but meshward does not
/// model (`source.serviceAccount`, `source.trustDomain`, `experimental.envoy.filters.*`).
pub fn network_rbac_filters(config: &RawConfig) -> Result<Vec<Value>> {
    let mut seen = BTreeSet::new();
    for p in &config.policies {
        if !seen.insert(p.name.as_str()) {
            bail!("two policies are named `{}`", p.name);
        }
    }
    let mut filters = Vec::new();
    for (action, envoy_action) in [
        (Action::Audit, "LOG"),
        (Action::Deny, "DENY"),
        (Action::Allow, "ALLOW"),
    ] {
        let mut policies = Map::new();
        let mut any = false;
        for p in config.policies.iter().filter(|p| p.action == action) {
            any = true;
            add_policy(&mut policies, p)?;
        }
        if !any {
            continue;
        }
        filters.push(filter(envoy_action, policies, config.dry_run));
    }
    Ok(filters)
}

/// [`network_rbac_filters`] as a YAML list (for docs and the CLI).
pub fn network_rbac_yaml(config: &RawConfig) -> Result<String> {
    Ok(serde_yaml_ng::to_string(&network_rbac_filters(config)?)?)
}

/// The RBAC policy name of rule `rule` of policy `policy` (istiod's `policyName`).
pub fn policy_name(policy: &str, rule: usize) -> String {
    format!("ns[{POLICY_NAMESPACE}]-policy[{policy}]-rule[{rule}]")
}

fn filter(envoy_action: &str, policies: Map<String, Value>, dry_run: bool) -> Value {
    // Written out even when empty: an ALLOW filter with no policies denies every connection, an
    // absent `rules` enforces nothing (protobuf JSON would omit both defaults; Envoy reads either).
    let rules = json!({"action": envoy_action, "policies": policies});
    let mut typed = Map::new();
    typed.insert("@type".into(), FILTER_TYPE.into());
    typed.insert("stat_prefix".into(), STAT_PREFIX.into());
    if dry_run {
        typed.insert("shadow_rules".into(), rules);
        // istiod's shadowRuleStatPrefix: none for LOG.
        let prefix = match envoy_action {
            "ALLOW" => Some("istio_dry_run_allow_"),
            "DENY" => Some("istio_dry_run_deny_"),
            _ => None,
        };
        if let Some(prefix) = prefix {
            typed.insert("shadow_rules_stat_prefix".into(), prefix.into());
        }
    } else {
        typed.insert("rules".into(), rules);
    }
    json!({"name": FILTER_NAME, "typed_config": typed})
}

fn add_policy(policies: &mut Map<String, Value>, policy: &PolicyConfig) -> Result<()> {
    if policy.rules.is_empty() {
        // istiod's rbacPolicyMatchNever: an ALLOW policy without rules allows nothing (and still
        // makes the ALLOW filter deny whatever no other ALLOW policy allows).
        policies.insert(
            policy_name(&policy.name, 0),
            json!({
                "permissions": [{"not_rule": {"any": true}}],
                "principals": [{"not_id": {"any": true}}],
            }),
        );
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        // A rule istiod skips leaves no entry; the policy's other rules still count.
        if let Some(generated) = generate(rule, policy.action)? {
            policies.insert(policy_name(&policy.name, i), generated);
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

/// istiod's generators that can say something on TCP, plus one for all those that cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generator {
    SourcePrincipal,
    SourceNamespace,
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    Sni,
    HttpOnly,
}

impl Generator {
    /// One value as an Envoy permission or principal; `None` where istiod's generator returns an
    /// error (an HTTP-only key on TCP, an address or port it cannot parse).
    fn render(self, value: &str) -> Option<Value> {
        match self {
            // In a sidecar the peer principal is the client certificate's URI SAN. Newer istiod
            // may match the `io.istio.peer_principal` filter state instead, which Istio's own
            // filters set to the same value; our Envoy has no filter that sets it, so this is
            // the `authenticated` form istiod uses for sidecars.
            Self::SourcePrincipal => Some(authenticated(string_matcher(value, "spiffe://"))),
            Self::SourceNamespace => {
                let namespace = value
                    .split('*')
                    .map(quote_meta)
                    .collect::<Vec<_>>()
                    .join(".*");
                Some(authenticated(regex(&format!(".*/ns/{namespace}/.*"))))
            }
            Self::SourceIp => Some(json!({"direct_remote_ip": cidr_range(value)?})),
            Self::RemoteIp => Some(json!({"remote_ip": cidr_range(value)?})),
            Self::DestinationIp => Some(json!({"destination_ip": cidr_range(value)?})),
            Self::DestinationPort => Some(json!({"destination_port": port(value)?})),
            Self::Sni => Some(json!({"requested_server_name": string_matcher(value, "")})),
            Self::HttpOnly => None,
        }
    }
}

/// One field of a rule (`principals`/`notPrincipals`, a `when` entry, …).
#[derive(Debug, Clone, Copy)]
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
            return WhenKey::NotModelled("istiod matches Envoy dynamic metadata for it")
        }
        "source.ip" => (Side::Principal, G::SourceIp),
        "remote.ip" => (Side::Principal, G::RemoteIp),
        "source.namespace" => (Side::Principal, G::SourceNamespace),
        "source.trustDomain" | "source.serviceAccount" => {
            return WhenKey::NotModelled(
                "istiod renders it from the policy's namespace and the trust domain aliases",
            )
        }
        "source.principal" => (Side::Principal, G::SourcePrincipal),
        "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
            (Side::Principal, G::HttpOnly)
        }
        _ if key.starts_with("request.headers") || key.starts_with("request.auth.claims") => {
            (Side::Principal, G::HttpOnly)
        }
        _ => return WhenKey::Unknown,
    };
    WhenKey::Field(side, generator)
}

/// istiod's `model.New` and `Generate(forTCP=true)` for one rule: `None` if istiod skips it.
fn generate(rule: &RuleConfig, action: Action) -> Result<Option<Value>> {
    let keys: Vec<(&ConditionConfig, WhenKey)> =
        rule.when.iter().map(|c| (c, when_key(&c.key))).collect();
    // istiod stops at the first unknown key, whatever comes after it.
    if keys.iter().any(|(_, k)| matches!(k, WhenKey::Unknown)) {
        return Ok(None);
    }
    // `when` conditions go after the `from`/`to` fields of every copy they join.
    let mut when_permissions = Vec::new();
    let mut when_principals = Vec::new();
    for (c, key) in &keys {
        let (side, generator) = match key {
            WhenKey::Field(side, generator) => (*side, *generator),
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
    // istiod's order; no `from` (or no `to`) is one entry with the `when` fields alone.
    let mut principals = Vec::new();
    for from in &rule.from {
        let s = &from.source;
        let mut fields = vec![
            field(Generator::SourcePrincipal, &s.principals, &s.not_principals),
            field(
                Generator::HttpOnly,
                &s.request_principals,
                &s.not_request_principals,
            ),
            field(Generator::SourceNamespace, &s.namespaces, &s.not_namespaces),
            field(
                Generator::RemoteIp,
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
            ),
            field(Generator::SourceIp, &s.ip_blocks, &s.not_ip_blocks),
        ];
        fields.extend_from_slice(&when_principals);
        principals.push(fields);
    }
    if rule.from.is_empty() {
        principals.push(when_principals);
    }
    let mut permissions = Vec::new();
    for to in &rule.to {
        let o = &to.operation;
        let mut fields = vec![
            field(Generator::HttpOnly, &o.hosts, &o.not_hosts),
            field(Generator::HttpOnly, &o.methods, &o.not_methods),
            field(Generator::HttpOnly, &o.paths, &o.not_paths),
            field(Generator::DestinationPort, &o.ports, &o.not_ports),
        ];
        fields.extend_from_slice(&when_permissions);
        permissions.push(fields);
    }
    if rule.to.is_empty() {
        permissions.push(when_permissions);
    }

    let mut rendered_permissions = Vec::new();
    for fields in &permissions {
        let Some(p) = and_of(Side::Permission, fields, action) else {
            return Ok(None);
        };
        rendered_permissions.push(p);
    }
    let mut rendered_principals = Vec::new();
    for fields in &principals {
        let Some(p) = and_of(Side::Principal, fields, action) else {
            return Ok(None);
        };
        rendered_principals.push(p);
    }
    Ok(Some(json!({
        "permissions": rendered_permissions,
        "principals": rendered_principals,
    })))
}

/// istiod's `generatePermission`/`generatePrincipal`: the AND of each field's `or` of its values
/// and `not(or)` of its not-values, `any` if nothing is left. `None` when a value cannot be
/// rendered in an ALLOW rule (istiod's `checkError`: the whole rule goes); in DENY and AUDIT such
/// a value is left out, which widens the rule.
fn and_of(side: Side, fields: &[Field<'_>], action: Action) -> Option<Value> {
    let mut and = Vec::new();
    for f in fields {
        for (values, negate) in [(f.values, false), (f.not_values, true)] {
            let mut or = Vec::new();
            for v in values {
                match f.generator.render(v) {
                    Some(rendered) => or.push(rendered),
                    None if action == Action::Allow => return None,
                    None => {}
                }
            }
            if or.is_empty() {
                continue;
            }
            let or = side.or(or);
            and.push(if negate { side.not(or) } else { or });
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
