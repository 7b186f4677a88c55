//! `meshward lint`: the traps people fall into with Istio security resources, found without a
//! workload. Each finding names the resource and the field.
//!
//! With no workload given, lint reasons about every workload a policy could apply to: its
//! namespace (every namespace for the root namespace) and its selector. A PeerAuthentication or a
//! RequestAuthentication "could apply to the same workloads" when the two selectors have no label
//! key with conflicting values (some workload could carry both). The mTLS mode of such a workload
//! is not recomputed here: lint builds the representative workloads and asks [`crate::select`],
//! so that lint and `meshward test` can never disagree on how istiod composes the modes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::resource::{
    Action, AuthorizationPolicySpec, Kind, MtlsMode, Origin, Resource, ResourceId, Rule,
    WorkloadSelector,
};
use crate::select::{select, MeshSettings, Workload};
use crate::support;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One trap, in one field of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub resource: ResourceId,
    pub origin: Origin,
    /// The field path, as Istio's schema spells it: `spec.rules[0].from[0].source.principals`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: field `{}`: {}",
            self.severity, self.origin, self.resource, self.field, self.message
        )
    }
}

/// Every finding for `resources`, sorted by file and line (a resource's own findings keep the
/// order of the rules below).
pub fn lint(resources: &[Resource], mesh: &MeshSettings) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in resources {
        let mut push = |severity: Severity, field: String, message: String| {
            out.push(Finding {
                severity,
                resource: r.id.clone(),
                origin: r.origin.clone(),
                field,
                message,
            })
        };
        if r.meta.namespace.is_none() {
            push(
                Severity::Warning,
                "metadata.namespace".into(),
                "missing: assumed `default` (kubectl applies it to the current context's \
                 namespace, which may be another)"
                    .into(),
            );
        }
        unsupported(r, &mut push);
        match r.id.kind {
            Kind::AuthorizationPolicy => {
                if let Some(spec) = r.authorization() {
                    permissive_trap(r, spec, resources, mesh, &mut push);
                    request_identity(r, spec, resources, mesh, &mut push);
                    unmatchable_paths(spec, &mut push);
                }
            }
            Kind::PeerAuthentication => peer_conflicts(r, resources, mesh, &mut push),
            Kind::RequestAuthentication => {}
        }
    }
    out.sort_by(|a, b| {
        (&a.origin.file, a.origin.line, a.origin.item).cmp(&(
            &b.origin.file,
            b.origin.line,
            b.origin.item,
        ))
    });
    out
}

type Push<'p> = dyn FnMut(Severity, String, String) + 'p;

fn selector_of(r: &Resource) -> Option<&WorkloadSelector> {
    match (r.authorization(), r.request_authentication(), r.peer()) {
        (Some(a), _, _) => a.selector.as_ref(),
        (_, Some(q), _) => q.selector.as_ref(),
        (_, _, Some(p)) => p.selector.as_ref(),
        _ => None,
    }
}

/// Some workload could carry both selectors' labels: no key with two different values.
fn compatible(a: Option<&WorkloadSelector>, b: Option<&WorkloadSelector>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return true;
    };
    a.match_labels
        .iter()
        .all(|(k, v)| b.match_labels.get(k).is_none_or(|w| w == v))
}

// ---------------------------------------------------------------------------------------------
// Rule 4: what meshward cannot evaluate or does not apply.

fn unsupported(r: &Resource, push: &mut Push<'_>) {
    if let Some(spec) = r.authorization() {
        if spec.action == Action::Custom {
            let provider = spec.provider.as_ref().map_or("", |p| p.name.as_str());
            push(
                Severity::Warning,
                "spec.action".into(),
                format!(
                    "CUSTOM delegates to the external authorizer `{provider}`, which meshward does \
                     not run: each case must state its answer (`customAuthz: allow|deny`)"
                ),
            );
        }
        target_refs(
            spec.target_ref.is_some(),
            !spec.target_refs.is_empty(),
            push,
        );
        if r.dry_run() {
            push(
                Severity::Warning,
                "metadata.annotations[istio.io/dry-run]".into(),
                "shadow mode: Istio only logs what this policy would decide and never enforces it; \
                 meshward does not apply it"
                    .into(),
            );
        }
        for (i, rule) in spec.rules.iter().enumerate() {
            for (j, from) in rule.from.iter().enumerate() {
                let s = &from.source;
                for (name, values) in [
                    ("trustDomains", &s.trust_domains),
                    ("notTrustDomains", &s.not_trust_domains),
                ] {
                    if !values.is_empty() {
                        push(
                            Severity::Error,
                            format!("spec.rules[{i}].from[{j}].source.{name}"),
                            "meshward cannot evaluate trust domains (use principals \
                             `<trust domain>/*`)"
                                .into(),
                        );
                    }
                }
            }
            for (k, c) in rule.when.iter().enumerate() {
                if !support::when_key_supported(&c.key) {
                    push(
                        Severity::Error,
                        format!("spec.rules[{i}].when[{k}].key"),
                        format!("meshward cannot evaluate the condition key `{}`", c.key),
                    );
                }
            }
        }
    }
    if let Some(spec) = r.request_authentication() {
        target_refs(
            spec.target_ref.is_some(),
            !spec.target_refs.is_empty(),
            push,
        );
        for (i, rule) in spec.jwt_rules.iter().enumerate() {
            if !rule.space_delimited_claims.is_empty() {
                push(
                    Severity::Error,
                    format!("spec.jwtRules[{i}].spaceDelimitedClaims"),
                    "meshward cannot evaluate space-delimited claims".into(),
                );
            }
        }
    }
}

fn target_refs(one: bool, many: bool, push: &mut Push<'_>) {
    for (set, field) in [(one, "spec.targetRef"), (many, "spec.targetRefs")] {
        if set {
            push(
                Severity::Warning,
                field.into(),
                "binds to gateways and waypoints: never applied to a sidecar, and meshward does \
                 not evaluate it"
                    .into(),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 1: the permissive-mode trap.

/// A field of a rule that reads the peer identity; `negative` for the `not…` forms.
struct Read {
    rule: usize,
    field: String,
    negative: bool,
}

fn peer_reads(spec: &AuthorizationPolicySpec) -> Vec<Read> {
    let mut reads = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        for (j, from) in rule.from.iter().enumerate() {
            let s = &from.source;
            for (name, values, negative) in [
                ("principals", &s.principals, false),
                ("notPrincipals", &s.not_principals, true),
                ("namespaces", &s.namespaces, false),
                ("notNamespaces", &s.not_namespaces, true),
                ("serviceAccounts", &s.service_accounts, false),
                ("notServiceAccounts", &s.not_service_accounts, true),
            ] {
                if !values.is_empty() {
                    reads.push(Read {
                        rule: i,
                        field: format!("spec.rules[{i}].from[{j}].source.{name}"),
                        negative,
                    });
                }
            }
        }
        for (k, c) in rule.when.iter().enumerate() {
            if c.key != "source.principal" && c.key != "source.namespace" {
                continue;
            }
            for (name, values, negative) in [
                ("values", &c.values, false),
                ("notValues", &c.not_values, true),
            ] {
                if !values.is_empty() {
                    reads.push(Read {
                        rule: i,
                        field: format!("spec.rules[{i}].when[{k}].{name}"),
                        negative,
                    });
                }
            }
        }
    }
    reads
}

/// Ports a rule is limited to by `to[].operation.ports` (`None`: any port).
fn rule_ports(rule: &Rule) -> Option<BTreeSet<u16>> {
    let limited = !rule.to.is_empty()
        && rule
            .to
            .iter()
            .all(|t| !t.operation.ports.is_empty() && t.operation.not_ports.is_empty());
    limited.then(|| {
        rule.to
            .iter()
            .flat_map(|t| t.operation.ports.iter())
            .filter_map(|p| p.parse().ok())
            .collect()
    })
}

/// Ports of a place where the mode is not STRICT.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ports {
    One(u16),
    /// Every port but these (their port-level mode is set apart).
    AllBut(Vec<u16>),
}

impl Ports {
    fn meets(&self, limit: Option<&BTreeSet<u16>>) -> bool {
        match (self, limit) {
            (_, None) => true,
            (Ports::One(p), Some(l)) => l.contains(p),
            (Ports::AllBut(ex), Some(l)) => l.iter().any(|p| !ex.contains(p)),
        }
    }
}

/// Where a policy applies and the mTLS mode is not STRICT: (cause, ports, scope).
fn non_strict_places(
    r: &Resource,
    resources: &[Resource],
    mesh: &MeshSettings,
) -> Vec<(String, Ports, String)> {
    let root = mesh.root_namespace.as_str();
    let own = selector_of(r)
        .map(|s| s.match_labels.clone())
        .unwrap_or_default();
    // `None`: a namespace no resource names (only the mesh-level policy reaches it).
    let namespaces: Vec<Option<&str>> = if r.id.namespace == root {
        let mut named: BTreeSet<&str> = resources.iter().map(|x| x.id.namespace.as_str()).collect();
        named.insert(root);
        named.into_iter().map(Some).chain([None]).collect()
    } else {
        vec![Some(r.id.namespace.as_str())]
    };
    let mut places = Vec::new();
    for ns in namespaces {
        // The representative workloads: the policy's own labels, and those plus each
        // workload-level PeerAuthentication's that could select the same workloads. Every
        // workload the policy could apply to gets the mode of one of these (istiod takes the
        // oldest selecting PeerAuthentication, and it selects its own representative too).
        let mut label_sets = vec![own.clone()];
        for p in resources {
            let Some(spec) = p.peer() else { continue };
            let Some(sel) = spec
                .selector
                .as_ref()
                .filter(|s| !s.match_labels.is_empty())
            else {
                continue;
            };
            if Some(p.id.namespace.as_str()) == ns && compatible(selector_of(r), Some(sel)) {
                let mut labels = own.clone();
                labels.extend(sel.match_labels.clone());
                label_sets.push(labels);
            }
        }
        let scope = match ns {
            Some(n) => format!("namespace {n}"),
            None => "every other namespace".to_string(),
        };
        for labels in label_sets {
            let workload = Workload {
                // No namespace is spelled with a space, so this one matches no resource.
                namespace: ns.unwrap_or("any other").to_string(),
                service_account: String::new(),
                labels,
                port: 0,
            };
            let selection = select(resources, mesh, &workload);
            let port_level: BTreeMap<u16, MtlsMode> = selection
                .peer
                .workload
                .and_then(|w| w.peer())
                .map(|p| {
                    p.port_level_mtls
                        .iter()
                        .filter_map(|(port, m)| Some((u16::try_from(*port).ok()?, m.mode)))
                        .filter(|(_, m)| *m != MtlsMode::Unset)
                        .collect()
                })
                .unwrap_or_default();
            let listed: Vec<u16> = port_level.keys().copied().collect();
            let other = (1..=u16::MAX).find(|p| !port_level.contains_key(p));
            let ports = listed
                .iter()
                .map(|p| (*p, Ports::One(*p)))
                .chain(other.map(|p| (p, Ports::AllBut(listed.clone()))));
            for (port, which) in ports {
                let mode = selection.peer.mode(port);
                if mode.mode == MtlsMode::Strict {
                    continue;
                }
                let cause = match (mode.decided_by, &which) {
                    (None, _) => "no PeerAuthentication: PERMISSIVE by default".to_string(),
                    (Some(by), Ports::One(p)) => {
                        format!(
                            "PeerAuthentication {} sets port {p} {}",
                            by.id.short(),
                            mode.mode
                        )
                    }
                    (Some(by), Ports::AllBut(_)) => {
                        format!("PeerAuthentication {}: {}", by.id.short(), mode.mode)
                    }
                };
                places.push((cause, which, scope.clone()));
            }
        }
    }
    // Deduplicated in the order found (the namespaces' order, for the message).
    let mut unique = Vec::new();
    for place in places {
        if !unique.contains(&place) {
            unique.push(place);
        }
    }
    unique
}

fn permissive_trap(
    r: &Resource,
    spec: &AuthorizationPolicySpec,
    resources: &[Resource],
    mesh: &MeshSettings,
    push: &mut Push<'_>,
) {
    if spec.has_target_refs() {
        return; // not a sidecar's policy (reported under rule 4)
    }
    let reads = peer_reads(spec);
    if reads.is_empty() {
        return;
    }
    let places = non_strict_places(r, resources, mesh);
    let mesh_wide = r.id.namespace == mesh.root_namespace;
    for read in reads {
        let consequence = match (spec.action, read.negative) {
            (Action::Allow, false) => {
                "plaintext callers carry no identity: this rule never matches them".to_string()
            }
            (Action::Allow, true) => "plaintext callers carry no identity, so they are never in \
                                      this list: this rule matches every plaintext caller"
                .to_string(),
            // A negated identity matches plaintext callers: a DENY then covers them too.
            (_, true) => continue,
            (action, false) => format!(
                "plaintext callers carry no identity: this {action} never fires for plaintext \
                 callers (they escape it)"
            ),
        };
        let limit = spec.rules.get(read.rule).and_then(rule_ports);
        // Group the scopes by cause, for a root-namespace policy that spans namespaces.
        let mut by_cause: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (cause, ports, scope) in &places {
            if ports.meets(limit.as_ref()) {
                let scopes = by_cause.entry(cause).or_default();
                if !scopes.contains(&scope.as_str()) {
                    scopes.push(scope);
                }
            }
        }
        if by_cause.is_empty() {
            continue;
        }
        let wheres: Vec<String> = by_cause
            .into_iter()
            .map(|(cause, scopes)| {
                if mesh_wide {
                    format!("{cause} ({})", scopes.join(", "))
                } else {
                    cause.to_string()
                }
            })
            .collect();
        push(
            Severity::Warning,
            read.field,
            format!(
                "{consequence}; mTLS is not STRICT where it applies: {}",
                wheres.join("; ")
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 2: request identity without a RequestAuthentication.

/// What a `requestPrincipals` pattern needs of a token's issuer. As the filter does (and Istio),
/// the pattern is split at its last `/`; the issuer part is `*`, `prefix*`, `*suffix` or exact.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Issuer {
    Any,
    Prefix(String),
    Suffix(String),
    Exact(String),
    /// Not `<issuer>/<subject>`: no request principal can match it.
    Malformed(String),
}

impl Issuer {
    fn of(pattern: &str) -> Issuer {
        if pattern == "*" {
            return Issuer::Any;
        }
        let Some((iss, _)) = pattern.rsplit_once('/') else {
            return Issuer::Malformed(pattern.to_string());
        };
        if iss == "*" {
            Issuer::Any
        } else if let Some(p) = iss.strip_suffix('*') {
            Issuer::Prefix(p.to_string())
        } else if let Some(s) = iss.strip_prefix('*') {
            Issuer::Suffix(s.to_string())
        } else {
            Issuer::Exact(iss.to_string())
        }
    }

    fn fits(&self, issuer: &str) -> bool {
        match self {
            Issuer::Any => true,
            Issuer::Prefix(p) => issuer.starts_with(p.as_str()),
            Issuer::Suffix(s) => issuer.ends_with(s.as_str()),
            Issuer::Exact(e) => issuer == e,
            Issuer::Malformed(_) => false,
        }
    }

    fn text(&self) -> String {
        match self {
            Issuer::Any => "any issuer".into(),
            Issuer::Prefix(p) => format!("issuer `{p}*`"),
            Issuer::Suffix(s) => format!("issuer `*{s}`"),
            Issuer::Exact(e) => format!("issuer `{e}`"),
            Issuer::Malformed(m) => format!("`{m}` (not `<issuer>/<subject>`)"),
        }
    }
}

fn request_identity(
    r: &Resource,
    spec: &AuthorizationPolicySpec,
    resources: &[Resource],
    mesh: &MeshSettings,
    push: &mut Push<'_>,
) {
    if spec.has_target_refs() {
        return;
    }
    let root = mesh.root_namespace.as_str();
    // The issuers of every RequestAuthentication that could apply to a workload of this policy.
    let issuers: Vec<&str> = resources
        .iter()
        .filter(|q| {
            q.request_authentication()
                .is_some_and(|s| !s.has_target_refs())
                && (q.id.namespace == r.id.namespace
                    || q.id.namespace == root
                    || r.id.namespace == root)
                && compatible(selector_of(r), selector_of(q))
        })
        .flat_map(|q| q.request_authentication().into_iter())
        .flat_map(|s| s.jwt_rules.iter().map(|j| j.issuer.as_str()))
        .collect();
    // (field, the issuers a positive list needs — empty for a negated list)
    let mut reads: Vec<(String, Vec<Issuer>, bool)> = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        for (j, from) in rule.from.iter().enumerate() {
            let s = &from.source;
            let at = format!("spec.rules[{i}].from[{j}].source");
            if !s.request_principals.is_empty() {
                let need = s.request_principals.iter().map(|p| Issuer::of(p)).collect();
                reads.push((format!("{at}.requestPrincipals"), need, false));
            }
            if !s.not_request_principals.is_empty() {
                reads.push((format!("{at}.notRequestPrincipals"), Vec::new(), true));
            }
        }
        for (k, c) in rule.when.iter().enumerate() {
            if !c.key.starts_with("request.auth.") {
                continue;
            }
            if !c.values.is_empty() {
                let need = if c.key == "request.auth.principal" {
                    c.values.iter().map(|p| Issuer::of(p)).collect()
                } else {
                    vec![Issuer::Any]
                };
                reads.push((format!("spec.rules[{i}].when[{k}].values"), need, false));
            }
            if !c.not_values.is_empty() {
                reads.push((
                    format!("spec.rules[{i}].when[{k}].notValues"),
                    Vec::new(),
                    true,
                ));
            }
        }
    }
    let deny_like = spec.action != Action::Allow;
    for (field, need, negative) in reads {
        let message = if negative {
            if !issuers.is_empty() {
                continue;
            }
            let why = "no RequestAuthentication applies to these workloads, so no request \
                       principal ever exists and every request is outside this list";
            if deny_like {
                format!("fires for every request: {why}")
            } else {
                format!("matches every request: {why}")
            }
        } else {
            if need.iter().any(|n| issuers.iter().any(|i| n.fits(i))) {
                continue;
            }
            let wanted: Vec<String> = need.iter().map(Issuer::text).collect();
            let why = format!(
                "no RequestAuthentication validates tokens of {} for these workloads",
                wanted.join(" or ")
            );
            if deny_like {
                format!("never fires (no request principal ever exists): {why}")
            } else {
                format!("never matches: {why}")
            }
        };
        push(Severity::Error, field, message);
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 3: paths a normalized request can never match.

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Why no normalized request path can ever equal (or start / end with) this pattern.
fn unmatchable_path(value: &str) -> Option<String> {
    if value == "*" {
        return None;
    }
    // Which end of the body is cut by the `*`: that segment is incomplete and may be anything.
    let (body, open_start, open_end) = if let Some(b) = value.strip_prefix('*') {
        (b, true, false)
    } else if let Some(b) = value.strip_suffix('*') {
        (b, false, true)
    } else {
        (value, false, false)
    };
    if let Some(at) = body.find('?') {
        return Some(if at + 1 == body.len() && !open_end {
            "a trailing `?` starts an (empty) query, which is never part of the matched path".into()
        } else {
            "`?` starts the query, which is never part of the matched path".into()
        });
    }
    if body.contains('#') {
        return Some("`#` starts a fragment, which is dropped before matching".into());
    }
    if body.contains('\\') {
        return Some("a `\\` never reaches matching (Istio turns it into `/`)".into());
    }
    let bytes = body.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b != b'%' {
            continue;
        }
        let hex = body
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b'/') | Some(b'\\') => {
                return Some(format!(
                    "the escaped slash `{}` never reaches matching (requests with one are \
                     refused or decoded)",
                    body.get(i..i + 3).unwrap_or("%")
                ))
            }
            Some(c) if is_unreserved(c) => {
                return Some(format!(
                    "`{}` is decoded to `{}` before matching",
                    body.get(i..i + 3).unwrap_or("%"),
                    char::from(c)
                ))
            }
            _ => {}
        }
    }
    if body.contains(';') {
        return Some(
            "a path with `;` parameters is refused before matching (backends read it differently)"
                .into(),
        );
    }
    if body.contains("//") {
        return Some("`//` is merged into `/`".into());
    }
    let segments: Vec<&str> = body.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let dot = segments.iter().enumerate().any(|(i, s)| {
        let open = (open_start && i == 0) || (open_end && i == last);
        !open && (*s == "." || *s == "..")
    });
    if dot {
        return Some("`.` and `..` segments are resolved".into());
    }
    if !open_start && !body.starts_with('/') {
        return Some("a request path always starts with `/`".into());
    }
    None
}

fn unmatchable_paths(spec: &AuthorizationPolicySpec, push: &mut Push<'_>) {
    for (i, rule) in spec.rules.iter().enumerate() {
        let mut values: Vec<(String, &String)> = Vec::new();
        for (j, to) in rule.to.iter().enumerate() {
            for (name, list) in [
                ("paths", &to.operation.paths),
                ("notPaths", &to.operation.not_paths),
            ] {
                for (k, v) in list.iter().enumerate() {
                    values.push((format!("spec.rules[{i}].to[{j}].operation.{name}[{k}]"), v));
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            if c.key != "request.headers[:path]" {
                continue;
            }
            for (name, list) in [("values", &c.values), ("notValues", &c.not_values)] {
                for (k, v) in list.iter().enumerate() {
                    values.push((format!("spec.rules[{i}].when[{j}].{name}[{k}]"), v));
                }
            }
        }
        for (field, value) in values {
            if let Some(why) = unmatchable_path(value) {
                push(
                    Severity::Error,
                    field,
                    format!(
                        "`{value}` can never match: Istio normalizes request paths before \
                         matching, and {why}"
                    ),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 5: PeerAuthentications istiod ignores or ranks.

fn peer_conflicts(r: &Resource, resources: &[Resource], mesh: &MeshSettings, push: &mut Push<'_>) {
    let Some(spec) = r.peer() else { return };
    let root = mesh.root_namespace.as_str();
    let has_selector = |s: Option<&WorkloadSelector>| s.is_some_and(|s| !s.match_labels.is_empty());
    let selected = has_selector(spec.selector.as_ref());
    if selected && r.id.namespace == root {
        push(
            Severity::Warning,
            "spec.selector".into(),
            format!(
                "istiod ignores a PeerAuthentication with a selector in the root namespace \
                 `{root}`"
            ),
        );
        return;
    }
    let age = |x: &Resource| {
        (
            x.meta.creation_timestamp.clone(),
            x.id.name.clone(),
            x.id.namespace.clone(),
        )
    };
    // Reported on the one that loses, naming the one istiod takes.
    for other in resources {
        let Some(o) = other.peer() else { continue };
        if std::ptr::eq(other, r)
            || other.id.namespace != r.id.namespace
            || has_selector(o.selector.as_ref()) != selected
            || (selected && !compatible(spec.selector.as_ref(), o.selector.as_ref()))
            || age(other) >= age(r)
        {
            continue;
        }
        let (field, level) = match (selected, r.id.namespace == root) {
            (true, _) => ("spec.selector", "for the workloads both select"),
            (false, true) => ("metadata.namespace", "mesh-wide"),
            (false, false) => ("metadata.namespace", "namespace-wide"),
        };
        let how = if other.meta.creation_timestamp.is_some() || r.meta.creation_timestamp.is_some()
        {
            "oldest"
        } else {
            "oldest (no creationTimestamp: the first by name)"
        };
        push(
            Severity::Warning,
            field.into(),
            format!(
                "{} and {} both apply {level}: istiod takes the {how}, {}, and ignores this one",
                r.id,
                other.id,
                other.id.short()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load_text, Loaded};
    use std::path::Path;

    fn lint_yaml(yaml: &str) -> Vec<Finding> {
        let mut loaded = Loaded::default();
        load_text(Path::new("t.yaml"), yaml, &mut loaded).unwrap();
        lint(&loaded.resources, &MeshSettings::default())
    }

    fn doc(kind: &str, ns: &str, name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
        )
    }
    fn ap(ns: &str, name: &str, spec: &str) -> String {
        doc("AuthorizationPolicy", ns, name, spec)
    }
    fn pa(ns: &str, name: &str, spec: &str) -> String {
        doc("PeerAuthentication", ns, name, spec)
    }
    fn ra(ns: &str, name: &str, spec: &str) -> String {
        doc("RequestAuthentication", ns, name, spec)
    }

    /// The findings on `field` (exact), as their Display lines.
    fn on(findings: &[Finding], field: &str) -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.field == field)
            .map(|f| f.to_string())
            .collect()
    }

    const PRINCIPALS: &str = "spec.rules[0].from[0].source.principals";
    const ALLOW_PRINCIPAL: &str =
        "{rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/checkout]}}]}]}";
    const STRICT: &str = "{mtls: {mode: STRICT}}";

    #[test]
    fn display_names_severity_origin_resource_field_and_message() {
        let f = lint_yaml(&ap("payments", "p", ALLOW_PRINCIPAL));
        assert_eq!(
            on(&f, PRINCIPALS),
            [
                "warning: t.yaml: document 1 (line 2): AuthorizationPolicy payments/p: field \
              `spec.rules[0].from[0].source.principals`: plaintext callers carry no identity: \
              this rule never matches them; mTLS is not STRICT where it applies: no \
              PeerAuthentication: PERMISSIVE by default"
            ]
        );
    }

    #[test]
    fn permissive_trap_by_action_and_mode() {
        // Namespace STRICT: nothing to report.
        let f = lint_yaml(
            &[
                ap("payments", "p", ALLOW_PRINCIPAL),
                pa("payments", "ns", STRICT),
            ]
            .concat(),
        );
        assert!(on(&f, PRINCIPALS).is_empty(), "{f:?}");
        // Mesh STRICT but the namespace PERMISSIVE: named.
        let f = lint_yaml(
            &[
                ap("payments", "p", ALLOW_PRINCIPAL),
                pa("istio-system", "mesh", STRICT),
                pa("payments", "ns", "{mtls: {mode: PERMISSIVE}}"),
            ]
            .concat(),
        );
        let got = on(&f, PRINCIPALS);
        assert_eq!(got.len(), 1, "{f:?}");
        assert!(
            got[0].ends_with("PeerAuthentication payments/ns: PERMISSIVE"),
            "{got:?}"
        );
        // DENY with principals: plaintext callers escape it; AUDIT likewise; namespaces and a
        // `source.principal` condition read the identity too.
        let f = lint_yaml(&ap(
            "payments",
            "d",
            "{action: DENY, rules: [{from: [{source: {namespaces: [shop]}}], when: [{key: source.principal, values: ['*']}]}]}",
        ));
        let got = on(&f, "spec.rules[0].from[0].source.namespaces");
        assert!(
            got[0].contains("this DENY never fires for plaintext callers (they escape it)"),
            "{got:?}"
        );
        assert_eq!(on(&f, "spec.rules[0].when[0].values").len(), 1);
        let f = lint_yaml(&ap(
            "payments",
            "a",
            "{action: AUDIT, rules: [{from: [{source: {principals: ['*']}}]}]}",
        ));
        assert!(on(&f, PRINCIPALS)[0].contains("this AUDIT never fires"));
        // notPrincipals in a DENY covers plaintext callers: the safe direction.
        let f = lint_yaml(&ap(
            "payments",
            "d",
            "{action: DENY, rules: [{from: [{source: {notPrincipals: [x/ns/a/sa/b]}}]}]}",
        ));
        assert!(f.is_empty(), "{f:?}");
        // notPrincipals in an ALLOW lets every plaintext caller in.
        let f = lint_yaml(&ap(
            "payments",
            "a",
            "{rules: [{from: [{source: {notPrincipals: [x/ns/a/sa/b]}}]}]}",
        ));
        assert!(on(&f, "spec.rules[0].from[0].source.notPrincipals")[0]
            .contains("this rule matches every plaintext caller"));
        // A rule without identity: nothing.
        let f = lint_yaml(&ap(
            "payments",
            "a",
            "{rules: [{to: [{operation: {methods: [GET]}}]}]}",
        ));
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn permissive_trap_follows_workload_selectors_and_ports() {
        let strict_wl_permissive_port = pa(
            "payments",
            "ledger",
            "{selector: {matchLabels: {app: ledger}}, mtls: {mode: STRICT}, portLevelMtls: {9090: {mode: PERMISSIVE}}}",
        );
        let selected = ap(
            "payments",
            "p",
            "{selector: {matchLabels: {app: ledger}}, rules: [{from: [{source: {principals: ['*']}}]}]}",
        );
        let f = lint_yaml(
            &[
                selected.clone(),
                pa("payments", "ns", STRICT),
                strict_wl_permissive_port.clone(),
            ]
            .concat(),
        );
        let got = on(&f, PRINCIPALS);
        assert_eq!(got.len(), 1, "{f:?}");
        assert!(
            got[0].ends_with("PeerAuthentication payments/ledger sets port 9090 PERMISSIVE"),
            "{got:?}"
        );
        // Limited to another port: the PERMISSIVE port is not where the rule applies.
        let on_8080 = ap(
            "payments",
            "p",
            "{selector: {matchLabels: {app: ledger}}, rules: [{from: [{source: {principals: ['*']}}], to: [{operation: {ports: ['8080']}}]}]}",
        );
        let f = lint_yaml(
            &[
                on_8080,
                pa("payments", "ns", STRICT),
                strict_wl_permissive_port.clone(),
            ]
            .concat(),
        );
        assert!(on(&f, PRINCIPALS).is_empty(), "{f:?}");
        // A workload PeerAuthentication whose selector conflicts with the policy's cannot select
        // the same workloads.
        let f = lint_yaml(
            &[
                selected.clone(),
                pa("payments", "ns", STRICT),
                pa(
                    "payments",
                    "web",
                    "{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}",
                ),
            ]
            .concat(),
        );
        assert!(on(&f, PRINCIPALS).is_empty(), "{f:?}");
        // A namespace-wide policy covers workloads that a compatible workload PeerAuthentication
        // selects.
        let f = lint_yaml(
            &[
                ap(
                    "payments",
                    "p",
                    "{rules: [{from: [{source: {principals: ['*']}}]}]}",
                ),
                pa("payments", "ns", STRICT),
                pa(
                    "payments",
                    "web",
                    "{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}",
                ),
            ]
            .concat(),
        );
        assert!(
            on(&f, PRINCIPALS)[0].ends_with("PeerAuthentication payments/web: DISABLE"),
            "{f:?}"
        );
    }

    #[test]
    fn permissive_trap_for_a_mesh_wide_policy_names_the_namespaces() {
        let policy = ap("istio-system", "m", ALLOW_PRINCIPAL);
        let f = lint_yaml(&[policy.clone(), pa("istio-system", "mesh", STRICT)].concat());
        assert!(on(&f, PRINCIPALS).is_empty(), "{f:?}");
        let f = lint_yaml(
            &[
                policy.clone(),
                pa("istio-system", "mesh", STRICT),
                pa("legacy", "open", "{mtls: {mode: DISABLE}}"),
            ]
            .concat(),
        );
        let got = on(&f, PRINCIPALS);
        assert!(
            got[0].ends_with("PeerAuthentication legacy/open: DISABLE (namespace legacy)"),
            "{got:?}"
        );
        let f = lint_yaml(&policy);
        let got = on(&f, PRINCIPALS);
        assert!(
            got[0].ends_with(
                "no PeerAuthentication: PERMISSIVE by default (namespace istio-system, every other namespace)"
            ),
            "{got:?}"
        );
    }

    #[test]
    fn request_identity_needs_a_request_authentication_for_the_issuer() {
        let rp = "spec.rules[0].from[0].source.requestPrincipals";
        let allow = ap(
            "payments",
            "p",
            "{selector: {matchLabels: {app: ledger}}, rules: [{from: [{source: {requestPrincipals: ['https://idp.example.com/*']}}]}]}",
        );
        let f = lint_yaml(&allow);
        assert_eq!(
            on(&f, rp),
            [
                "error: t.yaml: document 1 (line 2): AuthorizationPolicy payments/p: field \
              `spec.rules[0].from[0].source.requestPrincipals`: never matches: no \
              RequestAuthentication validates tokens of issuer `https://idp.example.com` for \
              these workloads"
            ]
        );
        // Another issuer, another namespace, a conflicting selector or targetRefs do not count.
        let f = lint_yaml(
            &[
                allow.clone(),
                ra("payments", "other", "{jwtRules: [{issuer: https://other.example.com}]}"),
                ra("shop", "elsewhere", "{jwtRules: [{issuer: https://idp.example.com}]}"),
                ra("payments", "web", "{selector: {matchLabels: {app: web}}, jwtRules: [{issuer: https://idp.example.com}]}"),
                ra("payments", "gw", "{targetRefs: [{kind: Gateway, name: gw}], jwtRules: [{issuer: https://idp.example.com}]}"),
            ]
            .concat(),
        );
        assert_eq!(on(&f, rp).len(), 1, "{f:?}");
        // The root namespace's RequestAuthentication for the issuer does.
        let f = lint_yaml(
            &[
                allow,
                ra(
                    "istio-system",
                    "idp",
                    "{jwtRules: [{issuer: https://idp.example.com}]}",
                ),
            ]
            .concat(),
        );
        assert!(on(&f, rp).is_empty(), "{f:?}");
        // DENY; `*` needs any rule; a `request.auth.claims` condition too.
        let f = lint_yaml(&ap(
            "payments",
            "d",
            "{action: DENY, rules: [{from: [{source: {requestPrincipals: ['*']}}], when: [{key: 'request.auth.claims[group]', values: [admin]}]}]}",
        ));
        assert!(on(&f, rp)[0].contains("never fires (no request principal ever exists): no RequestAuthentication validates tokens of any issuer"), "{f:?}");
        assert_eq!(on(&f, "spec.rules[0].when[0].values").len(), 1, "{f:?}");
        // Issuer patterns: prefix and suffix.
        let idp = ra(
            "payments",
            "idp",
            "{jwtRules: [{issuer: 'https://idp.example.com'}]}",
        );
        for (pattern, found) in [
            ("https://idp.*/*", false),
            ("https://other*/*", true),
            ("*example.com/alice", false),
            ("*example.org/alice", true),
            ("noslash", true),
        ] {
            let f = lint_yaml(&[
                ap("payments", "p", &format!("{{rules: [{{from: [{{source: {{requestPrincipals: ['{pattern}']}}}}]}}]}}")),
                idp.clone(),
            ]
            .concat());
            assert_eq!(!on(&f, rp).is_empty(), found, "{pattern}: {f:?}");
        }
        // notRequestPrincipals in a DENY with no RequestAuthentication denies everything.
        let f = lint_yaml(&ap(
            "payments",
            "d",
            "{action: DENY, rules: [{from: [{source: {notRequestPrincipals: ['*']}}]}]}",
        ));
        assert!(
            on(&f, "spec.rules[0].from[0].source.notRequestPrincipals")[0]
                .contains("fires for every request")
        );
    }

    #[test]
    fn unmatchable_paths_are_errors_and_good_ones_are_not() {
        for bad in [
            "/a//b", "/a/./b", "/a/../b", "/..", "/a%2Fb", "/a%5cb", "/%41dmin", "/a;x", "/admin?",
            "/a?x=1", "/a#f", "/a\\b", "admin", "admin*", "*/../x",
        ] {
            let f = lint_yaml(&ap(
                "ns",
                "p",
                &format!("{{rules: [{{to: [{{operation: {{paths: ['{bad}']}}}}]}}]}}"),
            ));
            let got = on(&f, "spec.rules[0].to[0].operation.paths[0]");
            assert_eq!(got.len(), 1, "{bad}: {f:?}");
            assert!(
                got[0].starts_with("error: ")
                    && got[0].contains(&format!("`{bad}` can never match")),
                "{got:?}"
            );
        }
        for good in [
            "*",
            "/",
            "/admin",
            "/admin/*",
            "*.html",
            "/api/.well-known*",
            "*.",
            "/a%20b",
            "/a%3Ab",
            "/{*}/x",
            "/a.b/c..",
        ] {
            let f = lint_yaml(&ap(
                "ns",
                "p",
                &format!("{{rules: [{{to: [{{operation: {{notPaths: ['{good}']}}}}]}}]}}"),
            ));
            assert!(f.is_empty(), "{good}: {f:?}");
        }
        let f = lint_yaml(&ap(
            "ns",
            "p",
            "{rules: [{when: [{key: 'request.headers[:path]', values: [/ok, '/admin?']}]}]}",
        ));
        let got = on(&f, "spec.rules[0].when[0].values[1]");
        assert!(got[0].contains("a trailing `?`"), "{got:?}");
        assert_eq!(f.len(), 1, "{f:?}");
    }

    #[test]
    fn what_meshward_cannot_evaluate_or_does_not_apply() {
        let f = lint_yaml(
            &[
                ap("ns", "c", "{action: CUSTOM, provider: {name: opa}, rules: [{}]}"),
                ap("ns", "gw", "{targetRefs: [{kind: Gateway, name: gw}], rules: [{from: [{source: {principals: ['*']}}]}]}"),
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: shadow, namespace: ns, annotations: {istio.io/dry-run: 'true'}}\nspec: {}\n".to_string(),
                ap("ns", "td", "{rules: [{from: [{source: {trustDomains: [a]}}], when: [{key: 'request.regex.headers[x]', values: [y]}, {key: source.ip, values: [10.0.0.1]}]}]}"),
                ra("ns", "sd", "{jwtRules: [{issuer: i, spaceDelimitedClaims: [scope]}]}"),
            ]
            .concat(),
        );
        let lines: Vec<String> = f.iter().map(|f| f.to_string()).collect();
        assert!(
            on(&f, "spec.action")[0].contains("`customAuthz: allow|deny`"),
            "{lines:#?}"
        );
        assert!(
            on(&f, "spec.targetRefs")[0].starts_with("warning: ")
                && on(&f, "spec.targetRefs")[0].contains("never applied to a sidecar")
        );
        // A targetRefs policy is not a sidecar's: no permissive-mode finding for it.
        assert!(on(&f, PRINCIPALS).is_empty(), "{lines:#?}");
        assert!(on(&f, "metadata.annotations[istio.io/dry-run]")[0].contains("never enforces"));
        assert!(on(&f, "spec.rules[0].from[0].source.trustDomains")[0].starts_with("error: "));
        assert_eq!(on(&f, "spec.rules[0].when[0].key").len(), 1, "{lines:#?}");
        assert!(on(&f, "spec.rules[0].when[1].key").is_empty(), "{lines:#?}");
        assert!(on(&f, "spec.jwtRules[0].spaceDelimitedClaims")[0].contains("cannot evaluate"));
        // A plain policy has none of these.
        let f = lint_yaml(
            &[
                ap(
                    "ns",
                    "a",
                    "{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
                ),
                ra("ns", "r", "{jwtRules: [{issuer: i}]}"),
            ]
            .concat(),
        );
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn missing_namespace_competing_and_ignored_peer_authentications() {
        let f = lint_yaml(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: DENY}\n",
        );
        assert!(
            on(&f, "metadata.namespace")[0].contains("assumed `default`"),
            "{f:?}"
        );
        let f = lint_yaml(&ap("ns", "a", "{action: DENY}"));
        assert!(f.is_empty(), "{f:?}");

        let f = lint_yaml(
            &[
                pa("payments", "b", "{mtls: {mode: DISABLE}}"),
                pa("payments", "a", STRICT),
                pa(
                    "payments",
                    "w1",
                    "{selector: {matchLabels: {app: ledger}}, mtls: {mode: STRICT}}",
                ),
                pa(
                    "payments",
                    "w2",
                    "{selector: {matchLabels: {tier: db}}, mtls: {mode: STRICT}}",
                ),
                pa(
                    "payments",
                    "w3",
                    "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}",
                ),
                pa(
                    "istio-system",
                    "root-selected",
                    "{selector: {matchLabels: {app: x}}, mtls: {mode: STRICT}}",
                ),
            ]
            .concat(),
        );
        let lines: Vec<String> = f.iter().map(|f| f.to_string()).collect();
        // The newer namespace-wide policy loses to the older one, named.
        let ns = on(&f, "metadata.namespace");
        assert_eq!(ns.len(), 1, "{lines:#?}");
        assert!(
            ns[0].contains("PeerAuthentication payments/b: field"),
            "{ns:?}"
        );
        assert!(
            ns[0].contains(
                "istiod takes the oldest (no creationTimestamp: the first by name), payments/a"
            ),
            "{ns:?}"
        );
        // w2 ({tier: db}) overlaps w1 ({app: ledger}); w3 ({app: web}) conflicts with w1 and
        // loses only to w2.
        let sel: Vec<&Finding> = f.iter().filter(|f| f.field == "spec.selector").collect();
        let pairs: Vec<(String, bool)> = sel
            .iter()
            .map(|f| (f.resource.name.clone(), f.message.contains("payments/w1")))
            .collect();
        assert_eq!(
            pairs,
            [
                ("w2".to_string(), true),
                ("w3".to_string(), false),
                ("root-selected".to_string(), false)
            ],
            "{lines:#?}"
        );
        assert!(sel[2].message.contains("istiod ignores"), "{lines:#?}");
    }

    #[test]
    fn findings_are_sorted_by_file_and_line() {
        // Resources in the order given (b.yaml first), findings by file, then line.
        let mut loaded = Loaded::default();
        let b = [
            ap("ns", "b1", "{action: CUSTOM, provider: {name: x}}"),
            ap("ns", "b2", "{rules: [{to: [{operation: {paths: [a]}}]}]}"),
        ]
        .concat();
        load_text(Path::new("b.yaml"), &b, &mut loaded).unwrap();
        let a = ap(
            "ns",
            "a1",
            "{rules: [{to: [{operation: {paths: ['/a?']}}]}]}",
        );
        load_text(Path::new("a.yaml"), &a, &mut loaded).unwrap();
        let f = lint(&loaded.resources, &MeshSettings::default());
        let at: Vec<String> = f
            .iter()
            .map(|f| format!("{}:{}", f.origin.file.display(), f.origin.line))
            .collect();
        assert_eq!(at, ["a.yaml:2", "b.yaml:2", "b.yaml:7"], "{f:?}");
    }
}
