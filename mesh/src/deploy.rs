//! What a workload's resources deploy as: the chain [`compile`] gives for it — the very configs
//! the mesh scenario runner feeds to jwt-authn, spiffe-authz and spiffe-authz-tcp — with what
//! cannot be deployed as tested refused, and what the cluster must provide said
//! (`meshward wasmplugin --from-istio` renders the WasmPlugins from it).
//!
//! - CUSTOM: meshward deploys no external authorizer; the runner only simulates its answer
//!   (`customAuthz`). A CUSTOM policy that applies is refused unless it is left to Istio
//!   ([`CustomPolicies::LeaveToIstio`]): istiod keeps its ext_authz filter in front of the
//!   plugins, and spiffe-authz gets the chain the runner runs for `customAuthz: allow` (the CUSTOM
//!   policy as AUDIT), so together they do what the runner tested for either answer.
//! - A remote `jwksUri`: jwt-authn fetches it from the sidecar, through the cluster
//!   `outbound|<port>||<host>`; that the cluster exists is the mesh's business (a note).
//! - PeerAuthentication is not part of the chain (spiffe-authz runs with `requireMtls: false`):
//!   it stays with Istio, at the listener, as the runner's listener modes model it.

use anyhow::{bail, Result};

use crate::compile::{compile, Compiled, CustomAnswer};
use crate::resource::{Action, Resource, ResourceId};
use crate::select::Selection;

/// What to do with CUSTOM AuthorizationPolicies that apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomPolicies {
    /// Fail, naming them: the deployment would not be what the tests ran unless Istio's ext_authz
    /// stays.
    Refuse,
    /// Istio's ext_authz keeps enforcing them; spiffe-authz carries them as AUDIT.
    LeaveToIstio,
}

/// A workload's chain as deployed.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// [`compile`] with [`CustomAnswer::Allows`]: what the runner runs unless a case says
    /// `customAuthz: deny`.
    pub compiled: Compiled,
    /// The CUSTOM policies left to Istio (empty unless [`CustomPolicies::LeaveToIstio`]).
    pub custom: Vec<ResourceId>,
    /// What the reader must know or provide (no error).
    pub notes: Vec<String>,
}

/// Istio's order of the inbound HTTP filters, for the messages: current istiod puts the CUSTOM
/// ext_authz filter right after metadata exchange, before the AUTHN phase
/// (`buildHTTPConnectionManager`, pilot/pkg/networking/core/listener_builder.go; TCP likewise,
/// `buildCompleteNetworkFilters`).
const CUSTOM_ORDER: &str = "istiod puts its ext_authz filter in front of every WasmPlugin phase, \
    and a request (or connection) passes only if the external authorizer and meshward both allow it";

/// The deployment of `selection`, or an error naming what cannot be deployed as tested.
pub fn deployment(selection: &Selection<'_>, custom: CustomPolicies) -> Result<Deployment> {
    let customs: Vec<&Resource> = selection
        .authorization
        .iter()
        .copied()
        .filter(|r| {
            r.authorization()
                .is_some_and(|a| a.action == Action::Custom)
        })
        .collect();
    if !customs.is_empty() && custom == CustomPolicies::Refuse {
        let names: Vec<String> = customs.iter().map(|r| custom_text(r)).collect();
        bail!(
            "{} {} to the workload, and cannot be deployed as tested: meshward deploys no \
             external authorizer (its tests only simulate the answer, `customAuthz`). Istio's \
             own CUSTOM enforcement keeps doing that: \
             {CUSTOM_ORDER}. Keep the policy applied and pass --leave-custom-to-istio to render \
             spiffe-authz with it as AUDIT (the chain `meshward test` runs for `customAuthz: \
             allow`; a denial is Istio's, before meshward's plugins)",
            names.join(", "),
            if names.len() == 1 { "applies" } else { "apply" },
        );
    }
    let compiled = compile(selection, CustomAnswer::Allows)?;
    let mut notes = Vec::new();
    for r in &customs {
        notes.push(format!(
            "{} stays with Istio: {CUSTOM_ORDER}; spiffe-authz carries it as AUDIT (counted, \
             deciding nothing)",
            custom_text(r)
        ));
    }
    if selection.authorization.is_empty() {
        notes.push(
            "no AuthorizationPolicy applies: spiffe-authz allows every request, as Istio does"
                .to_string(),
        );
    }
    for source in &compiled.jwks {
        let from = selection
            .request_authentication
            .iter()
            .find(|r| {
                r.request_authentication().is_some_and(|q| {
                    q.jwt_rules
                        .iter()
                        .any(|rule| rule.jwks_uri.as_deref() == Some(source.uri.as_str()))
                })
            })
            .map(|r| format!(" ({})", r.id))
            .unwrap_or_default();
        let host = source.cluster.rsplit("||").next().unwrap_or_default();
        let port = source
            .cluster
            .strip_prefix("outbound|")
            .and_then(|rest| rest.split('|').next())
            .unwrap_or_default();
        let tls = if source.uri.starts_with("https://") {
            format!(
                "; and, for https, the cluster must originate TLS (a DestinationRule for \
                 `{host}` with `tls.mode: SIMPLE`): the filter's call leaves through it as \
                 plain HTTP"
            )
        } else {
            String::new()
        };
        notes.push(format!(
            "jwksUri `{}`{from}: jwt-authn fetches it from the sidecar, through the cluster \
             `{}` (Istio's own RequestAuthentication has istiod fetch it). The cluster exists \
             only if the mesh knows the host: a ServiceEntry (an external IdP) or a Service \
             (one in the mesh) for `{host}` port {port}{tls}. Without it every fetch fails and \
             tokens of that issuer get 401, as `meshward test` shows for a jwksUri with no \
             answer",
            source.uri, source.cluster
        ));
    }
    let peers: Vec<String> = [
        selection.peer.mesh,
        selection.peer.namespace,
        selection.peer.workload,
    ]
    .into_iter()
    .flatten()
    .map(|r| r.id.to_string())
    .collect();
    if !peers.is_empty() {
        notes.push(format!(
            "mTLS stays with Istio ({}): spiffe-authz runs with `requireMtls: false`, as in \
             `meshward test`, whose listeners take each port's mode from the PeerAuthentications",
            peers.join(", ")
        ));
    }
    Ok(Deployment {
        compiled,
        custom: customs.iter().map(|r| r.id.clone()).collect(),
        notes,
    })
}

/// `AuthorizationPolicy ns/name (CUSTOM, provider p)`.
fn custom_text(r: &Resource) -> String {
    let provider = r
        .authorization()
        .and_then(|a| a.provider.as_ref())
        .map(|p| format!(", provider `{}`", p.name))
        .unwrap_or_default();
    format!("{} (CUSTOM{provider})", r.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load_text, Loaded};
    use crate::select::{select, MeshSettings, Workload};
    use serde_json::json;
    use std::path::Path;

    fn loaded(yaml: &str) -> Loaded {
        let mut loaded = Loaded::default();
        load_text(Path::new("t.yaml"), yaml, &mut loaded).unwrap();
        loaded
    }

    fn ledger() -> Workload {
        Workload {
            namespace: "payments".into(),
            service_account: "ledger".into(),
            labels: [("app".to_string(), "ledger".to_string())].into(),
            port: 9080,
        }
    }

    const CUSTOM: &str = "\
apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: opa, namespace: payments}\nspec: {action: CUSTOM, provider: {name: ext-authz-opa}, rules: [{to: [{operation: {paths: [/payouts/*]}}]}]}\n\
---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: read, namespace: payments}\nspec: {rules: [{from: [{source: {namespaces: [shop]}}]}]}\n";

    #[test]
    fn a_custom_policy_is_refused_naming_it_unless_left_to_istio() {
        let l = loaded(CUSTOM);
        let sel = select(&l.resources, &MeshSettings::default(), &ledger());
        let e = deployment(&sel, CustomPolicies::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "AuthorizationPolicy payments/opa (CUSTOM, provider `ext-authz-opa`) applies"
            ) && e.contains("meshward deploys no external authorizer")
                && e.contains("in front of every WasmPlugin phase")
                && e.contains("--leave-custom-to-istio"),
            "{e}"
        );
        let d = deployment(&sel, CustomPolicies::LeaveToIstio).unwrap();
        // Exactly the runner's chain for `customAuthz: allow`.
        let allows = compile(&sel, CustomAnswer::Allows).unwrap();
        assert_eq!(d.compiled.spiffe_authz, allows.spiffe_authz);
        assert_eq!(
            d.compiled.spiffe_authz["policies"][0]["action"],
            json!("AUDIT")
        );
        assert_eq!(d.custom.len(), 1);
        assert!(
            d.notes.iter().any(
                |n| n.starts_with("AuthorizationPolicy payments/opa (CUSTOM")
                    && n.contains("stays with Istio")
            ),
            "{:#?}",
            d.notes
        );
    }

    #[test]
    fn without_custom_nothing_is_refused_and_the_chain_is_compile_s() {
        let l = loaded(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: read, namespace: payments}\nspec: {rules: [{from: [{source: {namespaces: [shop]}}]}]}\n",
        );
        let sel = select(&l.resources, &MeshSettings::default(), &ledger());
        let d = deployment(&sel, CustomPolicies::Refuse).unwrap();
        assert_eq!(
            d.compiled.spiffe_authz,
            compile(&sel, CustomAnswer::Allows).unwrap().spiffe_authz
        );
        assert!(d.custom.is_empty());
        assert!(d.notes.is_empty(), "{:#?}", d.notes);
        // Nothing applies: still a plugin, and a note.
        let sel = select(&[], &MeshSettings::default(), &ledger());
        let d = deployment(&sel, CustomPolicies::Refuse).unwrap();
        assert_eq!(d.compiled.spiffe_authz["policies"], json!([]));
        assert!(d.notes[0].starts_with("no AuthorizationPolicy applies"));
    }

    #[test]
    fn a_remote_jwks_is_a_note_naming_its_cluster_and_resource() {
        let l = loaded(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: payments}\nspec: {jwtRules: [{issuer: https://idp.example.com, jwksUri: 'https://idp.example.com/keys'}, {issuer: in-mesh, jwksUri: 'http://keys.auth:8080/jwks'}]}\n\
             ---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
        );
        let sel = select(&l.resources, &MeshSettings::default(), &ledger());
        let d = deployment(&sel, CustomPolicies::Refuse).unwrap();
        assert!(d.compiled.jwt_authn.is_some());
        let jwks: Vec<&String> = d
            .notes
            .iter()
            .filter(|n| n.starts_with("jwksUri"))
            .collect();
        assert_eq!(jwks.len(), 2, "{:#?}", d.notes);
        // In the config's order: by issuer.
        assert!(
            jwks[0].contains("`outbound|443||idp.example.com`")
                && jwks[0].contains("tls.mode: SIMPLE"),
            "{}",
            jwks[0]
        );
        assert!(
            jwks[1].contains("`http://keys.auth:8080/jwks` (RequestAuthentication payments/jwt)")
                && jwks[1].contains("`outbound|8080||keys.auth`")
                && jwks[1].contains("`keys.auth` port 8080")
                && !jwks[1].contains("originate TLS"),
            "{}",
            jwks[1]
        );
        assert!(
            d.notes.iter().any(|n| n
                .starts_with("mTLS stays with Istio (PeerAuthentication istio-system/default)")),
            "{:#?}",
            d.notes
        );
    }
}
