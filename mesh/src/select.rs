//! Which resources apply to a workload, exactly as istiod decides (read from istio/istio
//! `pilot/pkg/model/authorization.go`, `authentication.go`, `policyattachment.go` and
//! `pilot/pkg/security/authn/policy_applier.go`; each rule is pinned by a test below):
//!
//! - Policies in the workload's namespace and in the root namespace are candidates; a root-namespace
//!   policy applies mesh-wide.
//! - No `selector` ⇒ every workload of the namespace (or of the mesh); `selector.matchLabels` must be
//!   a subset of the workload's labels (an empty one selects everything).
//! - `targetRef`/`targetRefs` bind to gateways and waypoints: a sidecar never takes them.
//! - PeerAuthentication: the workload-level policy (a non-empty selector, not in the root namespace)
//!   beats the namespace-level one, which beats the mesh-level one (root namespace, no selector);
//!   within a level the oldest wins; `UNSET` inherits from the level above; `portLevelMtls` (on a
//!   workload-level policy only) sets the mode of one port, `UNSET` there inherits the workload's;
//!   PERMISSIVE when nothing says otherwise. A root-namespace PeerAuthentication with a selector is
//!   ignored (istiod skips it).

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::resource::{Action, Kind, MtlsMode, Resource, WorkloadSelector};

/// The label that makes a workload a Gateway API gateway (istiod then uses `targetRefs`).
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// A sidecar-injected workload, as a request arriving on one of its ports sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// The port requests arrive on by default (`workload.port`).
    pub port: u16,
}

impl Workload {
    /// Refuse what meshward does not model: gateways (their policies bind through `targetRefs`).
    pub fn check(&self) -> Result<()> {
        if self.namespace.is_empty() {
            bail!("workload.namespace: must not be empty");
        }
        if self.labels.contains_key(GATEWAY_NAME_LABEL) {
            bail!(
                "workload.labels: `{GATEWAY_NAME_LABEL}` makes this a Gateway API gateway; meshward \
                 models sidecars only (gateway policies bind through targetRefs)"
            );
        }
        Ok(())
    }
}

/// Mesh-wide settings (MeshConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    pub root_namespace: String,
    pub trust_domain: String,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".to_string(),
            trust_domain: "cluster.local".to_string(),
        }
    }
}

/// What applies to one workload.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    /// Applicable AuthorizationPolicies in evaluation order: CUSTOM, DENY, ALLOW, AUDIT; within an
    /// action in Envoy's RBAC policy order (`ns[NS]-policy[NAME]`), which decides only which
    /// policy is reported when several match.
    pub authorization: Vec<&'a Resource>,
    /// Applicable RequestAuthentications (all their `jwtRules` apply together).
    pub request_authentication: Vec<&'a Resource>,
    pub peer: PeerSelection<'a>,
    /// Candidates (in the workload's or the root namespace) that do not apply, with why.
    pub not_applied: Vec<(&'a Resource, String)>,
}

/// The PeerAuthentications that count for a workload, one per level.
#[derive(Debug, Clone, Default)]
pub struct PeerSelection<'a> {
    pub mesh: Option<&'a Resource>,
    pub namespace: Option<&'a Resource>,
    pub workload: Option<&'a Resource>,
}

/// A port's mTLS mode and the resource that set it (`None`: nothing did; PERMISSIVE).
#[derive(Debug, Clone, Copy)]
pub struct PortMode<'a> {
    pub mode: MtlsMode,
    pub decided_by: Option<&'a Resource>,
}

impl<'a> PeerSelection<'a> {
    /// The effective mode on `port`.
    pub fn mode(&self, port: u16) -> PortMode<'a> {
        let mut out = PortMode {
            mode: MtlsMode::Permissive,
            decided_by: None,
        };
        for r in [self.mesh, self.namespace, self.workload]
            .into_iter()
            .flatten()
        {
            let mode = r
                .peer()
                .and_then(|p| p.mtls)
                .map_or(MtlsMode::Unset, |m| m.mode);
            if mode != MtlsMode::Unset {
                out = PortMode {
                    mode,
                    decided_by: Some(r),
                };
            }
        }
        if let Some(w) = self.workload {
            let port_mode = w
                .peer()
                .and_then(|p| p.port_level_mtls.get(&u32::from(port)))
                .map(|m| m.mode);
            match port_mode {
                Some(MtlsMode::Unset) | None => {}
                Some(mode) => {
                    out = PortMode {
                        mode,
                        decided_by: Some(w),
                    }
                }
            }
        }
        out
    }
}

fn selects(selector: Option<&WorkloadSelector>, workload: &Workload) -> bool {
    selector.is_none_or(|s| {
        s.match_labels
            .iter()
            .all(|(k, v)| workload.labels.get(k) == Some(v))
    })
}

fn selector_text(selector: Option<&WorkloadSelector>) -> String {
    let labels: Vec<String> = selector
        .map(|s| {
            s.match_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        })
        .unwrap_or_default();
    labels.join(",")
}

fn action_rank(a: Action) -> u8 {
    match a {
        Action::Custom => 0,
        Action::Deny => 1,
        Action::Allow => 2,
        Action::Audit => 3,
    }
}

/// Envoy's RBAC filter keeps policies in a map keyed `ns[NS]-policy[NAME]-rule[i]`.
pub fn rbac_key(r: &Resource) -> String {
    format!("ns[{}]-policy[{}]", r.id.namespace, r.id.name)
}

/// Select what applies to `workload` among `resources`.
pub fn select<'a>(
    resources: &'a [Resource],
    mesh: &MeshSettings,
    workload: &Workload,
) -> Selection<'a> {
    let mut selection = Selection {
        authorization: Vec::new(),
        request_authentication: Vec::new(),
        peer: PeerSelection::default(),
        not_applied: Vec::new(),
    };
    let root = mesh.root_namespace.as_str();
    // PeerAuthentication candidates per level, oldest first (istiod sorts by creation time, then
    // name, then namespace; a missing timestamp is the zero time).
    let mut peer_levels: [Vec<&Resource>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for r in resources {
        let ns = r.id.namespace.as_str();
        if ns != workload.namespace && ns != root {
            continue;
        }
        let skip = |why: String, sel: &mut Selection<'a>| sel.not_applied.push((r, why));
        match r.id.kind {
            Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                let (selector, target_refs) = match (r.authorization(), r.request_authentication())
                {
                    (Some(a), _) => (a.selector.as_ref(), a.has_target_refs()),
                    (_, Some(q)) => (q.selector.as_ref(), q.has_target_refs()),
                    _ => continue,
                };
                if target_refs {
                    skip(
                        "targetRefs: binds to gateways and waypoints, never to a sidecar".into(),
                        &mut selection,
                    );
                    continue;
                }
                if !selects(selector, workload) {
                    skip(
                        format!(
                            "selector {{{}}} does not match the workload's labels",
                            selector_text(selector)
                        ),
                        &mut selection,
                    );
                    continue;
                }
                if r.id.kind == Kind::AuthorizationPolicy {
                    if r.dry_run() {
                        skip(
                            "istio.io/dry-run: shadow mode, never enforced".into(),
                            &mut selection,
                        );
                        continue;
                    }
                    selection.authorization.push(r);
                } else {
                    selection.request_authentication.push(r);
                }
            }
            Kind::PeerAuthentication => {
                let Some(p) = r.peer() else { continue };
                let has_selector = p
                    .selector
                    .as_ref()
                    .is_some_and(|s| !s.match_labels.is_empty());
                let level = match (has_selector, ns == root) {
                    (false, true) => 0,
                    (false, false) => 1,
                    (true, false) => 2,
                    (true, true) => {
                        skip(
                            "a PeerAuthentication with a selector in the root namespace is \
                             ignored by istiod"
                                .into(),
                            &mut selection,
                        );
                        continue;
                    }
                };
                if has_selector && !selects(p.selector.as_ref(), workload) {
                    skip(
                        format!(
                            "selector {{{}}} does not match the workload's labels",
                            selector_text(p.selector.as_ref())
                        ),
                        &mut selection,
                    );
                    continue;
                }
                if let Some(list) = peer_levels.get_mut(level) {
                    list.push(r);
                }
            }
        }
    }
    for list in &mut peer_levels {
        list.sort_by(|a, b| {
            (&a.meta.creation_timestamp, &a.id.name, &a.id.namespace).cmp(&(
                &b.meta.creation_timestamp,
                &b.id.name,
                &b.id.namespace,
            ))
        });
        for shadowed in list.iter().skip(1) {
            selection.not_applied.push((
                shadowed,
                format!(
                    "another PeerAuthentication at the same level is older and wins ({})",
                    list.first().map(|w| w.id.to_string()).unwrap_or_default()
                ),
            ));
        }
    }
    let [mesh_level, ns_level, workload_level] = peer_levels;
    selection.peer = PeerSelection {
        mesh: mesh_level.first().copied(),
        namespace: ns_level.first().copied(),
        workload: workload_level.first().copied(),
    };
    selection.authorization.sort_by_key(|r| {
        (
            r.authorization().map_or(9, |a| action_rank(a.action)),
            rbac_key(r),
        )
    });
    selection
        .request_authentication
        .sort_by_key(|r| r.id.clone());
    selection
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load_text, Loaded};
    use std::path::Path;

    fn resources(yaml: &str) -> Vec<Resource> {
        let mut loaded = Loaded::default();
        load_text(Path::new("t.yaml"), yaml, &mut loaded).unwrap();
        loaded.resources
    }

    fn workload(ns: &str, labels: &[(&str, &str)]) -> Workload {
        Workload {
            namespace: ns.into(),
            service_account: "sa".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port: 8080,
        }
    }

    fn ap(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
        )
    }
    fn pa(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
        )
    }

    fn names(rs: &[&Resource]) -> Vec<String> {
        rs.iter().map(|r| r.id.short()).collect()
    }

    #[test]
    fn namespace_and_root_namespace_policies_apply_others_do_not() {
        let rs = resources(
            &[
                ap("payments", "ns-wide", "{}"),
                ap("istio-system", "mesh-wide", "{action: DENY, rules: [{}]}"),
                ap("shop", "elsewhere", "{}"),
            ]
            .concat(),
        );
        let sel = select(&rs, &MeshSettings::default(), &workload("payments", &[]));
        assert_eq!(
            names(&sel.authorization),
            ["istio-system/mesh-wide", "payments/ns-wide"]
        );
        // A configurable root namespace: istio-system is then an ordinary namespace.
        let mesh = MeshSettings {
            root_namespace: "mesh-root".into(),
            ..MeshSettings::default()
        };
        let sel = select(&rs, &mesh, &workload("payments", &[]));
        assert_eq!(names(&sel.authorization), ["payments/ns-wide"]);
    }

    #[test]
    fn selector_must_be_a_subset_of_the_labels_also_from_the_root_namespace() {
        let rs = resources(
            &[
                ap(
                    "payments",
                    "v1-only",
                    "{selector: {matchLabels: {app: ledger, version: v1}}}",
                ),
                ap("payments", "empty-selector", "{selector: {}}"),
                ap(
                    "istio-system",
                    "root-selected",
                    "{selector: {matchLabels: {app: ledger}}}",
                ),
                ap(
                    "istio-system",
                    "root-other",
                    "{selector: {matchLabels: {app: web}}}",
                ),
            ]
            .concat(),
        );
        let sel = select(
            &rs,
            &MeshSettings::default(),
            &workload(
                "payments",
                &[("app", "ledger"), ("version", "v1"), ("x", "y")],
            ),
        );
        assert_eq!(
            names(&sel.authorization),
            [
                "istio-system/root-selected",
                "payments/empty-selector",
                "payments/v1-only"
            ]
        );
        let sel = select(
            &rs,
            &MeshSettings::default(),
            &workload("payments", &[("app", "ledger")]),
        );
        assert_eq!(
            names(&sel.authorization),
            ["istio-system/root-selected", "payments/empty-selector"]
        );
        let why: Vec<String> = sel.not_applied.iter().map(|(_, w)| w.clone()).collect();
        assert!(
            why.iter().any(|w| w.contains("app=ledger,version=v1")),
            "{why:?}"
        );
    }

    #[test]
    fn target_refs_never_apply_to_a_sidecar_and_dry_run_is_not_enforced() {
        let rs = resources(
            &[
                ap(
                    "payments",
                    "gw",
                    "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}",
                ),
                ap("payments", "svc", "{targetRef: {kind: Service, group: '', name: ledger}}"),
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: shadow, namespace: payments, annotations: {istio.io/dry-run: \"true\"}}\nspec: {action: DENY, rules: [{}]}\n".to_string(),
            ]
            .concat(),
        );
        let sel = select(&rs, &MeshSettings::default(), &workload("payments", &[]));
        assert!(sel.authorization.is_empty());
        assert_eq!(sel.not_applied.len(), 3);
        assert!(sel.not_applied[0].1.contains("targetRefs"));
        assert!(sel.not_applied[2].1.contains("dry-run"));
    }

    #[test]
    fn evaluation_order_is_custom_deny_allow_audit() {
        let rs = resources(
            &[
                ap("ns", "a-audit", "{action: AUDIT}"),
                ap("ns", "b-allow", "{}"),
                ap("ns", "c-deny", "{action: DENY}"),
                ap("ns", "d-custom", "{action: CUSTOM, provider: {name: opa}}"),
                ap("istio-system", "z-deny", "{action: DENY}"),
            ]
            .concat(),
        );
        let sel = select(&rs, &MeshSettings::default(), &workload("ns", &[]));
        assert_eq!(
            names(&sel.authorization),
            [
                "ns/d-custom",
                "istio-system/z-deny",
                "ns/c-deny",
                "ns/b-allow",
                "ns/a-audit"
            ]
        );
    }

    #[test]
    fn request_authentications_apply_by_namespace_selector_and_never_by_target_refs() {
        let ra = |ns: &str, name: &str, spec: &str| {
            format!(
                "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
            )
        };
        let rs = resources(
            &[
                ra("istio-system", "mesh-idp", "{jwtRules: [{issuer: a, jwks: '{}'}]}"),
                ra("payments", "ledger-idp", "{selector: {matchLabels: {app: ledger}}, jwtRules: [{issuer: b, jwks: '{}'}]}"),
                ra("payments", "web-idp", "{selector: {matchLabels: {app: web}}, jwtRules: [{issuer: c, jwks: '{}'}]}"),
                ra("payments", "gw-idp", "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}], jwtRules: [{issuer: d, jwks: '{}'}]}"),
                ra("shop", "other-ns", "{jwtRules: [{issuer: e, jwks: '{}'}]}"),
            ]
            .concat(),
        );
        let sel = select(
            &rs,
            &MeshSettings::default(),
            &workload("payments", &[("app", "ledger")]),
        );
        assert_eq!(
            names(&sel.request_authentication),
            ["istio-system/mesh-idp", "payments/ledger-idp"]
        );
        let skipped: Vec<String> = sel.not_applied.iter().map(|(r, _)| r.id.short()).collect();
        assert_eq!(skipped, ["payments/web-idp", "payments/gw-idp"]);
    }

    fn mode(rs: &[Resource], w: &Workload, port: u16) -> (MtlsMode, Option<String>) {
        let sel = select(rs, &MeshSettings::default(), w);
        let m = sel.peer.mode(port);
        (m.mode, m.decided_by.map(|r| r.id.short()))
    }

    #[test]
    fn peer_authentication_precedence_inheritance_and_ports() {
        let w = workload("payments", &[("app", "ledger")]);
        // Nothing: PERMISSIVE, decided by nobody.
        assert_eq!(mode(&[], &w, 8080), (MtlsMode::Permissive, None));
        let mesh = pa("istio-system", "mesh", "{mtls: {mode: STRICT}}");
        let ns = pa("payments", "ns", "{mtls: {mode: PERMISSIVE}}");
        let wl = pa(
            "payments",
            "wl",
            "{selector: {matchLabels: {app: ledger}}, mtls: {mode: UNSET}, portLevelMtls: {9090: {mode: DISABLE}, 9091: {mode: UNSET}}}",
        );
        let rs = resources(&mesh);
        assert_eq!(
            mode(&rs, &w, 8080),
            (MtlsMode::Strict, Some("istio-system/mesh".into()))
        );
        // Namespace beats mesh.
        let rs = resources(&[mesh.clone(), ns.clone()].concat());
        assert_eq!(
            mode(&rs, &w, 8080),
            (MtlsMode::Permissive, Some("payments/ns".into()))
        );
        // Workload UNSET inherits the namespace's mode; its ports set their own; a port UNSET
        // inherits the workload's (inherited) mode.
        let rs = resources(&[mesh.clone(), ns.clone(), wl.clone()].concat());
        assert_eq!(
            mode(&rs, &w, 8080),
            (MtlsMode::Permissive, Some("payments/ns".into()))
        );
        assert_eq!(
            mode(&rs, &w, 9090),
            (MtlsMode::Disable, Some("payments/wl".into()))
        );
        assert_eq!(
            mode(&rs, &w, 9091),
            (MtlsMode::Permissive, Some("payments/ns".into()))
        );
        // A namespace UNSET inherits the mesh's.
        let rs = resources(&[mesh.clone(), pa("payments", "ns", "{mtls: {mode: UNSET}}")].concat());
        assert_eq!(
            mode(&rs, &w, 8080),
            (MtlsMode::Strict, Some("istio-system/mesh".into()))
        );
        // The workload policy does not select another workload.
        let other = workload("payments", &[("app", "web")]);
        let rs = resources(&[mesh.clone(), wl.clone()].concat());
        assert_eq!(
            mode(&rs, &other, 9090),
            (MtlsMode::Strict, Some("istio-system/mesh".into()))
        );
        // A root-namespace policy with a selector is ignored, even for a matching workload.
        let rs = resources(&pa(
            "istio-system",
            "root-selected",
            "{selector: {matchLabels: {app: ledger}}, mtls: {mode: STRICT}}",
        ));
        assert_eq!(mode(&rs, &w, 8080), (MtlsMode::Permissive, None));
    }

    #[test]
    fn oldest_peer_authentication_wins_within_a_level() {
        let w = workload("payments", &[]);
        let rs = resources(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: b-newer, namespace: payments, creationTimestamp: '2026-02-01T00:00:00Z'}\nspec: {mtls: {mode: DISABLE}}\n\
             ---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: c-older, namespace: payments, creationTimestamp: '2025-02-01T00:00:00Z'}\nspec: {mtls: {mode: STRICT}}\n",
        );
        assert_eq!(
            mode(&rs, &w, 1),
            (MtlsMode::Strict, Some("payments/c-older".into()))
        );
        let sel = select(&rs, &MeshSettings::default(), &w);
        assert!(
            sel.not_applied[0].1.contains("older"),
            "{:?}",
            sel.not_applied
        );
        // Without timestamps the first by name wins.
        let rs = resources(
            &[
                pa("payments", "b", "{mtls: {mode: DISABLE}}"),
                pa("payments", "a", "{mtls: {mode: STRICT}}"),
            ]
            .concat(),
        );
        assert_eq!(
            mode(&rs, &w, 1),
            (MtlsMode::Strict, Some("payments/a".into()))
        );
    }

    #[test]
    fn gateways_are_refused() {
        let w = workload("x", &[(GATEWAY_NAME_LABEL, "gw")]);
        assert!(w.check().unwrap_err().to_string().contains("gateway"));
    }
}
