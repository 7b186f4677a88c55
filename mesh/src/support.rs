//! What meshward cannot evaluate, named by resource and field. Istio fields that the filters do
//! not implement are errors, never silently dropped: a dropped ALLOW condition widens access, a
//! dropped DENY condition narrows protection.

use anyhow::{bail, Result};

use crate::resource::Resource;

/// `when` keys the spiffe-authz filter evaluates (its config refuses the others too; checking
/// here gives the resource's own field path and a reason in Istio's terms).
const WHEN_KEYS: [&str; 9] = [
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
];

/// Whether spiffe-authz evaluates a `when` key (the one list, for compile and lint).
pub fn when_key_supported(key: &str) -> bool {
    WHEN_KEYS.contains(&key)
        || key == "connection.sni"
        || key.starts_with("request.headers[")
        || key.starts_with("request.auth.claims[")
}

pub fn check_authorization(r: &Resource) -> Result<()> {
    let Some(spec) = r.authorization() else {
        return Ok(());
    };
    for (i, rule) in spec.rules.iter().enumerate() {
        for (j, from) in rule.from.iter().enumerate() {
            let s = &from.source;
            if !s.trust_domains.is_empty() || !s.not_trust_domains.is_empty() {
                bail!(
                    "{}: {}: field `spec.rules[{i}].from[{j}].source.trustDomains`: not supported \
                     by meshward (use principals `<trust domain>/*`)",
                    r.origin,
                    r.id
                );
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            if !when_key_supported(&c.key) {
                bail!(
                    "{}: {}: field `spec.rules[{i}].when[{j}].key`: `{}` is not supported by \
                     meshward (Istio would skip the whole rule, which narrows an ALLOW and \
                     widens nothing for a DENY)",
                    r.origin,
                    r.id,
                    c.key
                );
            }
        }
    }
    Ok(())
}

pub fn check_request_authentication(r: &Resource) -> Result<()> {
    let Some(spec) = r.request_authentication() else {
        return Ok(());
    };
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        if !rule.space_delimited_claims.is_empty() {
            bail!(
                "{}: {}: field `spec.jwtRules[{i}].spaceDelimitedClaims`: not supported by meshward",
                r.origin,
                r.id
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list here and the filter's own (`spiffe_authz_core::SUPPORTED_WHEN_KEYS`) must not
    /// drift: every key accepted here compiles in the filter, for HTTP and for TCP.
    #[test]
    fn every_supported_key_compiles_in_the_filter() {
        let extra = [
            "connection.sni",
            "request.headers[x-team]",
            "request.auth.claims[groups]",
        ];
        for key in WHEN_KEYS.iter().copied().chain(extra) {
            assert!(when_key_supported(key), "{key}");
            let value = match key {
                k if k.ends_with(".ip") => "10.0.0.1",
                k if k.ends_with(".port") => "80",
                "source.principal" => "cluster.local/ns/a/sa/b",
                "request.auth.principal" => "https://idp.example.com/alice",
                _ => "x",
            };
            let doc = serde_json::json!({"policies": [{"name": "p", "rules": [
                {"when": [{"key": key, "values": [value]}]}
            ]}]})
            .to_string();
            for protocol in [
                spiffe_authz_core::Protocol::Http,
                spiffe_authz_core::Protocol::Tcp,
            ] {
                spiffe_authz_core::Config::parse_for(doc.as_bytes(), protocol)
                    .unwrap_or_else(|e| panic!("{key} ({protocol:?}): {e}"));
            }
        }
        assert!(!when_key_supported("source.serviceAccount"));
    }
}
