//! The Istio security resources meshward reads, field for field as `security.istio.io/v1` and
//! `v1beta1` define them (the same schema in both versions). Every field Istio defines is here, so
//! that a typo is an "unknown field" error and a real field meshward cannot evaluate is reported
//! by name ([`crate::support`]) instead of being dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a resource came from, for every message about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// Index in a `kind: List`'s `items`, when the resource came from one.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {} (line {})",
            self.file.display(),
            self.document,
            self.line
        )?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

/// `kind namespace/name`, how every message names a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ResourceId {
    /// `namespace/name`, the form scenario files use in `decidedBy`.
    pub fn short(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    AuthorizationPolicy,
    RequestAuthentication,
    PeerAuthentication,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::PeerAuthentication => "PeerAuthentication",
        })
    }
}

/// One loaded resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub id: ResourceId,
    pub meta: Metadata,
    pub origin: Origin,
    pub spec: Spec,
}

#[derive(Debug, Clone)]
pub enum Spec {
    Authorization(AuthorizationPolicySpec),
    RequestAuthentication(RequestAuthenticationSpec),
    Peer(PeerAuthenticationSpec),
}

impl Resource {
    pub fn authorization(&self) -> Option<&AuthorizationPolicySpec> {
        match &self.spec {
            Spec::Authorization(s) => Some(s),
            _ => None,
        }
    }
    pub fn request_authentication(&self) -> Option<&RequestAuthenticationSpec> {
        match &self.spec {
            Spec::RequestAuthentication(s) => Some(s),
            _ => None,
        }
    }
    pub fn peer(&self) -> Option<&PeerAuthenticationSpec> {
        match &self.spec {
            Spec::Peer(s) => Some(s),
            _ => None,
        }
    }

    /// The Istio dry-run annotation (`istio.io/dry-run: "true"`): the policy is evaluated in
    /// shadow mode only and never enforced.
    pub fn dry_run(&self) -> bool {
        self.meta
            .annotations
            .get("istio.io/dry-run")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// The document around a spec. `metadata` keeps only what selection reads; the other Kubernetes
/// metadata (uid, resourceVersion, managedFields…) and `status` are accepted and ignored, because
/// `kubectl get -o yaml` output is what people often commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Option<S>,
    #[serde(default)]
    pub status: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339; istiod lets the oldest of two competing PeerAuthentications win.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub provider: Option<Provider>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl AuthorizationPolicySpec {
    pub fn has_target_refs(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Provider {
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<From>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<To>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct From {
    #[serde(default)]
    pub source: Source,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct To {
    #[serde(default)]
    pub operation: Operation,
}

macro_rules! string_lists {
    ($(#[$m:meta])* pub struct $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, Deserialize, Serialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            $(
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                pub $field: Vec<String>,
            )*
        }
    };
}

string_lists! {
    /// `rules[].from[].source`.
    pub struct Source {
        principals, not_principals, request_principals, not_request_principals,
        namespaces, not_namespaces, service_accounts, not_service_accounts,
        ip_blocks, not_ip_blocks, remote_ip_blocks, not_remote_ip_blocks,
        trust_domains, not_trust_domains,
    }
}

string_lists! {
    /// `rules[].to[].operation`.
    pub struct Operation {
        hosts, not_hosts, ports, not_ports, methods, not_methods, paths, not_paths,
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

impl RequestAuthenticationSpec {
    pub fn has_target_refs(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRule {
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_original_token: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mtls: Option<MutualTls>,
    /// Keyed by the workload's port (the container port a request arrives on). Keys may be
    /// numbers (`9090:`) or strings (`"9090":`, as `kubectl get -o yaml` writes them).
    #[serde(default, deserialize_with = "port_keyed")]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// `PeerAuthentication.mtls.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Inherit from the parent scope.
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MtlsMode::Unset => "UNSET",
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        })
    }
}

/// A map keyed by port, whether YAML wrote the keys as numbers or as strings.
fn port_keyed<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<BTreeMap<u32, MutualTls>, D::Error> {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Port(u32);
    impl<'de> Deserialize<'de> for Port {
        fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Port;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a port number")
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Port, E> {
                    u32::try_from(v)
                        .map(Port)
                        .map_err(|_| E::custom(format!("{v} is not a port")))
                }
                fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Port, E> {
                    u32::try_from(v)
                        .map(Port)
                        .map_err(|_| E::custom(format!("{v} is not a port")))
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Port, E> {
                    v.parse()
                        .map(Port)
                        .map_err(|_| E::custom(format!("`{v}` is not a port")))
                }
            }
            de.deserialize_any(V)
        }
    }
    let map: BTreeMap<Port, MutualTls> = BTreeMap::deserialize(de)?;
    Ok(map.into_iter().map(|(k, v)| (k.0, v)).collect())
}
