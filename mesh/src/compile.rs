//! The meshward filter chain a workload's resources become: jwt-authn from the
//! RequestAuthentications, spiffe-authz from the AuthorizationPolicies (with `requireMtls: false`,
//! because PeerAuthentication decides that, at the listener). The configs are the filters' own
//! pluginConfig JSON, checked here by the very cores the `.wasm` files are built from, so a resource
//! the filters would refuse is an error naming the resource and its field.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::resource::{Action, JwtRule, Resource, ResourceId, Rule, Source};
use crate::select::Selection;
use crate::support;

/// How CUSTOM policies are compiled. A CUSTOM policy delegates to an external authorizer meshward
/// does not run, so each case states the answer: with `Allows`, a CUSTOM policy is an AUDIT policy
/// (its match is seen and counted, and decides nothing); with `Denies`, it is a DENY policy placed
/// before every other (CUSTOM runs first in Istio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CustomAnswer {
    Allows,
    Denies,
}

/// One AuthorizationPolicy as a spiffe-authz policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// The policy's name in the filter config and its metric (`<namespace>.<name>`).
    pub filter_name: String,
    pub resource: ResourceId,
    /// The action as the resource wrote it.
    pub action: Action,
}

/// A remote JWKS the chain will fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    pub uri: String,
    /// The Envoy cluster jwt-authn calls (`outbound|<port>||<host>`, as Istio names it).
    pub cluster: String,
}

/// A workload's chain.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// jwt-authn's pluginConfig; `None` when no RequestAuthentication applies.
    pub jwt_authn: Option<Value>,
    /// spiffe-authz's pluginConfig.
    pub spiffe_authz: Value,
    /// In the filter config's order.
    pub policies: Vec<CompiledPolicy>,
    pub jwks: Vec<JwksSource>,
    /// Which RequestAuthentication each issuer comes from.
    pub issuers: BTreeMap<String, ResourceId>,
}

impl Compiled {
    /// The compiled policy a filter policy name stands for.
    pub fn policy(&self, filter_name: &str) -> Option<&CompiledPolicy> {
        self.policies.iter().find(|p| p.filter_name == filter_name)
    }
}

/// The filter chain for a selection.
pub fn compile(selection: &Selection<'_>, custom: CustomAnswer) -> Result<Compiled> {
    let mut policies = Vec::new();
    let mut configs = Vec::new();
    // CUSTOM first in both variants: as DENY it must be the first DENY (Istio asks the external
    // authorizer before any DENY); as AUDIT its place does not matter.
    for r in &selection.authorization {
        let Some(spec) = r.authorization() else {
            continue;
        };
        support::check_authorization(r)?;
        let action = match (spec.action, custom) {
            (Action::Custom, CustomAnswer::Allows) => "AUDIT",
            (Action::Custom, CustomAnswer::Denies) => "DENY",
            (Action::Allow, _) => "ALLOW",
            (Action::Deny, _) => "DENY",
            (Action::Audit, _) => "AUDIT",
        };
        let filter_name = format!("{}.{}", r.id.namespace, r.id.name);
        let rules: Vec<Value> = spec
            .rules
            .iter()
            .map(|rule| rule_json(rule, &r.id.namespace))
            .collect::<Result<_>>()?;
        configs.push(json!({"name": filter_name, "action": action, "rules": rules}));
        policies.push(CompiledPolicy {
            filter_name,
            resource: r.id.clone(),
            action: spec.action,
        });
    }
    let spiffe_authz = json!({"requireMtls": false, "policies": configs});
    if let Err(e) = spiffe_authz_core::Config::parse(spiffe_authz.to_string().as_bytes()) {
        return Err(map_filter_error(&e, &policies, &selection.authorization));
    }

    let mut rules: Vec<(JwtRule, &Resource, usize)> = Vec::new();
    for r in &selection.request_authentication {
        let Some(spec) = r.request_authentication() else {
            continue;
        };
        support::check_request_authentication(r)?;
        for (i, rule) in spec.jwt_rules.iter().enumerate() {
            if let Some((same, other, j)) = rules.iter().find(|(q, _, _)| q.issuer == rule.issuer) {
                if same == rule {
                    continue;
                }
                bail!(
                    "{}: field `spec.jwtRules[{i}].issuer`: `{}` is also the issuer of {} \
                     jwtRules[{j}] with other settings; meshward's jwt-authn takes one rule per \
                     issuer (Envoy would try both)",
                    r.id,
                    rule.issuer,
                    other.id
                );
            }
            rules.push((rule.clone(), r, i));
        }
    }
    // Istio sorts the rules by issuer.
    rules.sort_by(|a, b| a.0.issuer.cmp(&b.0.issuer));
    let mut issuers = BTreeMap::new();
    let mut jwks = Vec::new();
    let jwt_authn = if rules.is_empty() {
        None
    } else {
        let mut out = Vec::new();
        for (rule, r, _) in &rules {
            issuers.insert(rule.issuer.clone(), r.id.clone());
            if let Some(uri) = &rule.jwks_uri {
                jwks.push(JwksSource {
                    uri: uri.clone(),
                    cluster: istio_cluster_name(uri)?,
                });
            }
            let mut v = serde_json::to_value(rule)?;
            if let Some(map) = v.as_object_mut() {
                // Checked empty by `support`.
                map.remove("spaceDelimitedClaims");
            }
            out.push(v);
        }
        let config = json!({"jwtRules": out});
        if let Err(e) = jwt_authn_core::config::Config::parse(config.to_string().as_bytes()) {
            return Err(map_jwt_error(&e, &rules));
        }
        Some(config)
    };
    Ok(Compiled {
        jwt_authn,
        spiffe_authz,
        policies,
        jwks,
        issuers,
    })
}

/// Istio's name for the cluster of a JWKS URI: `outbound|<port>||<host>` (jwt-authn's default).
pub fn istio_cluster_name(uri: &str) -> Result<String> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| anyhow!("jwksUri `{uri}` is not an http(s) URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h.to_string(), p.parse::<u16>().ok())
        }
        _ => (authority.to_string(), None),
    };
    let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok(format!("outbound|{port}||{host}"))
}

fn rule_json(rule: &Rule, policy_namespace: &str) -> Result<Value> {
    let mut rule = rule.clone();
    for from in &mut rule.from {
        service_accounts_as_principals(&mut from.source, policy_namespace);
    }
    Ok(serde_json::to_value(rule)?)
}

/// Istio matches `serviceAccounts: [ns/sa]` as `spiffe://<any trust domain>/ns/<ns>/sa/<sa>`
/// (a bare `sa` is in the policy's namespace): the principal suffix form says exactly that for
/// SPIFFE IDs of the Kubernetes shape.
fn service_accounts_as_principals(source: &mut Source, policy_namespace: &str) {
    let as_principal = |sa: &String| match sa.split_once('/') {
        Some((ns, name)) => format!("*/ns/{ns}/sa/{name}"),
        None => format!("*/ns/{policy_namespace}/sa/{sa}"),
    };
    let principals: Vec<String> = source.service_accounts.iter().map(as_principal).collect();
    let not_principals: Vec<String> = source
        .not_service_accounts
        .iter()
        .map(as_principal)
        .collect();
    source.principals.extend(principals);
    source.not_principals.extend(not_principals);
    source.service_accounts.clear();
    source.not_service_accounts.clear();
}

/// Splits `policies[3].rules[0]…` into 3 and `rules[0]…`.
fn split_index<'a>(field: &'a str, list: &str) -> Option<(usize, &'a str)> {
    let rest = field.strip_prefix(list)?.strip_prefix('[')?;
    let (index, after) = rest.split_once(']')?;
    Some((index.parse().ok()?, after.trim_start_matches('.')))
}

/// A spiffe-authz config error on `policies[i]…` ⇒ the resource and its `spec.…` field.
fn map_filter_error(
    e: &meshward_common::ConfigError,
    policies: &[CompiledPolicy],
    resources: &[&Resource],
) -> anyhow::Error {
    let found =
        split_index(&e.field, "policies").and_then(|(i, field)| Some((policies.get(i)?, field)));
    match found {
        Some((p, field)) => {
            let origin = resources
                .iter()
                .find(|r| r.id == p.resource)
                .map(|r| format!("{}: ", r.origin))
                .unwrap_or_default();
            anyhow!(
                "{origin}{}: field `spec.{field}`: {} (meshward's spiffe-authz refuses it)",
                p.resource,
                e.reason
            )
        }
        None => anyhow!("spiffe-authz refuses the compiled policies: {e}"),
    }
}

/// A jwt-authn config error on `jwtRules[i]…` ⇒ the resource and its own rule index.
fn map_jwt_error(
    e: &meshward_common::ConfigError,
    rules: &[(JwtRule, &Resource, usize)],
) -> anyhow::Error {
    let found =
        split_index(&e.field, "jwtRules").and_then(|(i, field)| Some((rules.get(i)?, field)));
    match found {
        Some(((_, r, j), field)) => {
            let dot = if field.is_empty() { "" } else { "." };
            anyhow!(
                "{}: {}: field `spec.jwtRules[{j}]{dot}{field}`: {} (meshward's jwt-authn refuses it)",
                r.origin,
                r.id,
                e.reason
            )
        }
        None => anyhow!("jwt-authn refuses the compiled rules: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load_text, Loaded};
    use crate::select::{select, MeshSettings, Workload};
    use std::path::Path;

    fn compiled(yaml: &str, custom: CustomAnswer) -> Result<Compiled> {
        let mut loaded = Loaded::default();
        load_text(Path::new("t.yaml"), yaml, &mut loaded)?;
        let w = Workload {
            namespace: "payments".into(),
            service_account: "ledger".into(),
            labels: [("app".to_string(), "ledger".to_string())].into(),
            port: 9080,
        };
        let sel = select(&loaded.resources, &MeshSettings::default(), &w);
        compile(&sel, custom)
    }

    const POLICIES: &str = "\
apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: opa, namespace: payments}\nspec: {action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {paths: [/payouts/*]}}]}]}\n\
---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: read, namespace: payments}\nspec: {rules: [{from: [{source: {serviceAccounts: [shop/checkout, auditor]}}]}]}\n";

    #[test]
    fn custom_is_audit_or_first_deny_and_service_accounts_are_principals() {
        let c = compiled(POLICIES, CustomAnswer::Allows).unwrap();
        assert_eq!(c.spiffe_authz["requireMtls"], json!(false));
        assert_eq!(c.spiffe_authz["policies"][0]["name"], json!("payments.opa"));
        assert_eq!(c.spiffe_authz["policies"][0]["action"], json!("AUDIT"));
        assert_eq!(
            c.spiffe_authz["policies"][1]["rules"][0]["from"][0]["source"]["principals"],
            json!(["*/ns/shop/sa/checkout", "*/ns/payments/sa/auditor"])
        );
        let c = compiled(POLICIES, CustomAnswer::Denies).unwrap();
        assert_eq!(c.spiffe_authz["policies"][0]["action"], json!("DENY"));
        assert_eq!(
            c.policy("payments.read").unwrap().resource.short(),
            "payments/read"
        );
        assert!(c.jwt_authn.is_none());
    }

    #[test]
    fn a_path_the_filter_refuses_names_the_resource_and_field() {
        let err = compiled(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: payments}\nspec: {rules: [{to: [{operation: {paths: [/ok, /a//b]}}]}]}\n",
            CustomAnswer::Allows,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("AuthorizationPolicy payments/p"), "{err}");
        assert!(
            err.contains("spec.rules[0].to[0].operation.paths[1]"),
            "{err}"
        );
    }

    #[test]
    fn jwt_rules_merge_sorted_by_issuer_and_name_their_cluster() {
        let c = compiled(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: b, namespace: payments}\nspec: {jwtRules: [{issuer: https://z.example.com, jwksUri: 'https://idp.example.com:8443/keys'}]}\n\
             ---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: a, namespace: istio-system}\nspec: {jwtRules: [{issuer: https://a.example.com, jwksUri: 'http://keys.example.com/jwks.json'}]}\n",
            CustomAnswer::Allows,
        )
        .unwrap();
        let jwt = c.jwt_authn.unwrap();
        assert_eq!(jwt["jwtRules"][0]["issuer"], json!("https://a.example.com"));
        assert_eq!(
            c.jwks
                .iter()
                .map(|j| j.cluster.as_str())
                .collect::<Vec<_>>(),
            [
                "outbound|80||keys.example.com",
                "outbound|8443||idp.example.com"
            ]
        );
        assert_eq!(c.issuers["https://z.example.com"].short(), "payments/b");
    }

    #[test]
    fn one_issuer_in_two_resources_with_other_settings_is_an_error() {
        let err = compiled(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: b, namespace: payments}\nspec: {jwtRules: [{issuer: i, jwks: '{}', audiences: [x]}]}\n\
             ---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: a, namespace: payments}\nspec: {jwtRules: [{issuer: i, jwks: '{}'}]}\n",
            CustomAnswer::Allows,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is also the issuer of"), "{err}");
    }
}
