//! The pluginConfig as the user writes it: an Istio `AuthorizationPolicy` `spec` per entry (no
//! `selector`/`targetRefs`: the WasmPlugin's own selector scopes it), plus a name.
//!
//! These types only mirror the JSON; [`crate::Config::compile`] validates them. An empty
//! list is the same as an absent one, as in Istio's protobuf (`principals: []` sets nothing).

use serde::Deserialize;

// The `schemars` attributes only shape policies/spiffe-authz/schema.json (feature `schema`).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        title = "meshward spiffe-authz pluginConfig",
        description = "Authorization on the peer's SPIFFE ID and the request: Istio AuthorizationPolicy specs (without selector/targetRefs), evaluated as Istio does: any matching DENY denies; else, if there are ALLOW policies, one must match."
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    /// Istio AuthorizationPolicy specs, each with a name.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// No verified SPIFFE peer ⇒ 403 before any policy is looked at. Default true.
    #[serde(default = "default_true")]
    pub require_mtls: bool,
    /// Evaluate, count and log, but never deny, reject or rewrite.
    #[serde(default)]
    pub dry_run: bool,
    /// How many proxies in front of this one append to `x-forwarded-for` and are trusted to; the
    /// direct peer is the innermost. 0 (default): the remote address is the direct peer and
    /// `x-forwarded-for` is ignored.
    #[serde(default)]
    pub num_trusted_proxies: u32,
    /// Path parameters (`/a;x=1/b`) in a request a path rule looks at: `REJECT` (default) answers
    /// 400 to any `;` or `%3B` in the path; `STRIP` removes `;…` from every segment before
    /// matching and forwards the stripped path (`%3B` is still refused).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "REJECT")))]
    pub path_parameters: PathParametersConfig,
}

/// How a `;` in the path is treated: REJECT (default) answers 400 to any `;` or `%3B` in the
/// path; STRIP removes `;params` from every segment before matching and forwards the stripped
/// path (`%3B` is still refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathParametersConfig {
    // Refuse (400) any `;` or `%3B` in the path, as Spring Security's StrictHttpFirewall does.
    #[default]
    Reject,
    // Remove `;params` from every segment before dot segments are resolved; the stripped,
    // normalized path is matched and forwarded. `%3B` is still refused.
    Strip,
}

impl PathParametersConfig {
    pub fn mode(self) -> meshward_common::path::PathParameters {
        match self {
            Self::Reject => meshward_common::path::PathParameters::Reject,
            Self::Strip => meshward_common::path::PathParameters::Strip,
        }
    }
}

fn default_true() -> bool {
    true
}

impl RawConfig {
    /// The JSON Schema of the pluginConfig (policies/spiffe-authz/schema.json).
    #[cfg(feature = "schema")]
    pub fn json_schema() -> schemars::Schema {
        schemars::schema_for!(RawConfig)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyConfig {
    /// Names the policy in logs and metrics.
    pub name: String,
    /// ALLOW (default), DENY or AUDIT, as in Istio.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "ALLOW")))]
    pub action: Action,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConfig {
    #[serde(default)]
    pub from: Vec<FromConfig>,
    #[serde(default)]
    pub to: Vec<ToConfig>,
    #[serde(default)]
    pub when: Vec<ConditionConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FromConfig {
    pub source: SourceConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToConfig {
    pub operation: OperationConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceConfig {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OperationConfig {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// Strings, as in Istio (`"8080"`).
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConditionConfig {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}
