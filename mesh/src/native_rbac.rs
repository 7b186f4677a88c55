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
/// (Kubernetes has no such pair; here one action's filter would keep one policy's rules under
/// both) and the `when` keys istiod renders but this module does not model
/// (`source.serviceAccount`, `source.trustDomain`, `experimental.envoy.filters.*`).
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
    fn when_keys_istiod_renders_but_this_does_not_model_are_errors() {
        for key in [
            "source.serviceAccount",
            "source.trustDomain",
            "experimental.envoy.filters.network.mysql_proxy[db.table]",
        ] {
            let c = config(
                json!({"policies": [{"name": "p", "action": "DENY", "rules": [
                    {"when": [{"key": key, "values": ["x"]}]},
                ]}]}),
            );
            let e = network_rbac_filters(&c).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
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
