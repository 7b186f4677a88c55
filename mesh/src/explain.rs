//! The account of one request: every applicable AuthorizationPolicy, whether each rule matched,
//! and for each rule that did not the first condition that failed, from spiffe-authz's own core
//! ([`spiffe_authz_core::explain`]) on the very config the filter runs. The verdict people see is
//! the filter's (the caller runs the `.wasm`); this module says why.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result};
use meshward_common::identity::RequestIdentity;
use meshward_common::spiffe::SpiffeId;
use serde_json::{Map, Value};
use spiffe_authz_core::{explain, Explanation, PlainFacts};

use crate::compile::Compiled;
use crate::resource::Action;
use crate::select::Selection;

/// One request as spiffe-authz sees it behind jwt-authn.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// The peer's URI SAN over mTLS; `None` for plaintext.
    pub peer: Option<String>,
    pub method: String,
    /// The request-target as sent.
    pub path: String,
    pub authority: String,
    pub port: u16,
    pub source_ip: Option<IpAddr>,
    /// The local address the request arrived on.
    pub destination_ip: Option<IpAddr>,
    /// Request headers (names lower-cased by the caller or not; compared case-insensitively).
    pub headers: Vec<(String, String)>,
    /// The verified token's claims, when jwt-authn let a token through (it publishes them).
    pub claims: Option<Map<String, Value>>,
}

/// spiffe-authz's explanation of `facts` under `compiled`.
pub fn explain_request(compiled: &Compiled, facts: &RequestFacts) -> Result<Explanation> {
    let config =
        spiffe_authz_core::Config::parse_explainable(compiled.spiffe_authz.to_string().as_bytes())
            .context("spiffe-authz config")?;
    let headers: Vec<(String, Vec<u8>)> = facts
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let identity = facts.claims.clone().and_then(RequestIdentity::from_claims);
    let peer = facts.peer.as_deref().and_then(|p| SpiffeId::parse(p).ok());
    let plain = PlainFacts {
        mtls: facts.peer.is_some(),
        peer,
        method: Some(&facts.method),
        path: Some(&facts.path),
        host: Some(&facts.authority),
        destination_port: Some(facts.port),
        source_ip: facts.source_ip,
        destination_ip: facts.destination_ip,
        headers: &headers,
        identity: identity.as_ref(),
        identity_unreadable: false,
        sni: None,
    };
    Ok(explain(&config, &plain))
}

/// The claims of a JWT's payload (not verified here: the caller passes them only when jwt-authn
/// verified the token).
pub fn token_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = jwt_authn_core::b64::decode_segment(payload)?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The policies' part of `meshward explain`: one block per applicable AuthorizationPolicy in
/// evaluation order, then the resources that do not apply and why.
pub fn render(selection: &Selection<'_>, compiled: &Compiled, explanation: &Explanation) -> String {
    let mut out = String::new();
    if let Some(stop) = &explanation.stopped_before_policies {
        let _ = writeln!(out, "stopped before any policy: {stop}");
    }
    if explanation.policies.is_empty() && compiled.policies.is_empty() {
        let _ = writeln!(
            out,
            "no AuthorizationPolicy applies: every request is allowed"
        );
    }
    for trace in &explanation.policies {
        let Some(p) = compiled.policy(&trace.name) else {
            continue;
        };
        let custom = match (p.action, trace.action) {
            (Action::Custom, spiffe_authz_core::Action::Deny) => {
                " (external authorizer answers deny)"
            }
            (Action::Custom, _) => " (external authorizer answers allow)",
            _ => "",
        };
        let state = if trace.rules.is_empty() {
            "no rules: matches nothing".to_string()
        } else if trace.matched {
            let rule = trace
                .rules
                .iter()
                .find(|r| r.matched)
                .map(|r| format!(" rules[{}]", r.index))
                .unwrap_or_default();
            format!("MATCHED{rule}")
        } else {
            "no match".to_string()
        };
        let _ = writeln!(out, "  {} {}{custom}: {state}", p.action, p.resource);
        for rule in &trace.rules {
            match &rule.failed {
                None => {
                    let _ = writeln!(out, "    rules[{}]: matched", rule.index);
                }
                Some(f) => {
                    let _ = writeln!(out, "    rules[{}].{f}", rule.index);
                }
            }
        }
    }
    if !selection.not_applied.is_empty() {
        let _ = writeln!(out, "not applied to this workload:");
        for (r, why) in &selection.not_applied {
            let _ = writeln!(out, "  {}: {why}", r.id);
        }
    }
    out
}
