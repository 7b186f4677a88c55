//! pluginConfig: Istio `RequestAuthentication.jwtRules` (camelCase) plus `clockSkewSeconds` and
//! `requireToken`, parsed strictly and compiled into [`Config`].

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use meshward_common::{parse_json, ConfigError};
use serde::Deserialize;
use serde_json::Value;

use crate::duration::parse_millis;
pub use crate::extract::fold_header_name;
use crate::jwk::{parse_jwks, KeySet};

pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;
pub const DEFAULT_FETCH_TIMEOUT_MS: u64 = 5_000;
/// Istio's value for remote JWKS (`policy_applier.go`); Envoy's own default is 600 s.
pub const DEFAULT_CACHE_DURATION_MS: u64 = 300_000;
/// `jwksMaxStale` default: a day of IdP outage is survived; a key revoked at the IdP stops being
/// trusted here at most a day (plus the cache duration) later even if the IdP never comes back.
pub const DEFAULT_MAX_STALE_MS: u64 = 86_400_000;
const MAX_MAX_STALE_MS: u64 = 7 * 86_400_000;
const MAX_RULES: usize = 4096;
const MAX_URI_LEN: usize = 2048;

// The `schemars` attributes only shape policies/jwt-authn/schema.json (feature `schema`); they
// restate the checks in `compile` so that editors flag mistakes early.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        title = "meshward jwt-authn pluginConfig",
        description = "JWT authentication: Istio RequestAuthentication `jwtRules` (camelCase), plus `clockSkewSeconds` and `requireToken`."
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    /// One rule per issuer, as in Istio's `RequestAuthentication.spec.jwtRules`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 4096)))]
    jwt_rules: Vec<RawRule>,
    /// Tolerance for `exp`/`nbf`, in seconds.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 3600), extend("default" = 60)))]
    clock_skew_seconds: Option<u64>,
    /// Deny (401) requests without any token; by default they pass unauthenticated (Istio's
    /// behaviour: pair with an AuthorizationPolicy that requires a request principal).
    #[serde(default)]
    require_token: bool,
}

/// A duration as Istio writes it: a decimal number and `ms`, `s`, `m` or `h`.
#[cfg(feature = "schema")]
const DURATION_PATTERN: &str = r"^[0-9]{1,9}(\.[0-9]{1,9})?(ms|s|m|h)$";

/// A header (or cookie) name: `^[-_A-Za-z0-9]+$`.
#[cfg(feature = "schema")]
const NAME_PATTERN: &str = r"^[-_A-Za-z0-9]+$";

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    /// The `iss` a token must carry; unique across rules.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    issuer: String,
    /// Accepted `aud` values; empty: any audience.
    #[serde(default)]
    audiences: Vec<String>,
    /// Istio writes the JWKS as a JSON string; an object is accepted too (handy in YAML).
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("type" = ["string", "object"]), extend("description" = "An inline JWKS, as a JSON string (Istio's form) or an object. Exactly one of `jwks` and `jwksUri`."))
    )]
    jwks: Option<Value>,
    /// Where to fetch the JWKS from (http:// or https://). Exactly one of `jwks` and `jwksUri`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 2048)))]
    jwks_uri: Option<String>,
    /// The Envoy cluster for the JWKS fetch; default `outbound|<port>||<host>` of `jwksUri`.
    /// Required for a loopback or link-local host.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    jwks_cluster: Option<String>,
    /// Timeout of the JWKS fetch (`jwksUri` only), at most 60s.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = DURATION_PATTERN), extend("default" = "5s"))
    )]
    timeout: Option<String>,
    /// How long a fetched JWKS is used (`jwksUri` only), 1s to 24h.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = DURATION_PATTERN), extend("default" = "300s"))
    )]
    jwks_cache_duration: Option<String>,
    /// How long past `jwksCacheDuration` the last good JWKS is still used while every refresh
    /// fails (`jwksUri` only), 0s to 168h. After it the keys are dropped and tokens of this issuer
    /// get 401 `Jwks remote fetch is failed` until a fetch succeeds.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = DURATION_PATTERN), extend("default" = "24h"))
    )]
    jwks_max_stale: Option<String>,
    /// Headers to read the token from. Default, with `fromParams` and `fromCookies` empty too:
    /// `Authorization: Bearer …` and the `access_token` query parameter.
    #[serde(default)]
    from_headers: Vec<RawHeaderLocation>,
    /// Query parameters to read the token from.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(inner(regex(pattern = r"^[^&=#]+$"))))]
    from_params: Vec<String>,
    /// Cookies to read the token from.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(inner(regex(pattern = NAME_PATTERN))))]
    from_cookies: Vec<String>,
    /// Forward the verified payload (base64url JSON) to the upstream in this header.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = NAME_PATTERN)))]
    output_payload_to_header: Option<String>,
    /// Copy claims of the verified token into request headers.
    #[serde(default)]
    output_claim_to_headers: Vec<RawClaimHeader>,
    /// Keep the token in the request forwarded upstream (default: removed).
    #[serde(default)]
    forward_original_token: bool,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHeaderLocation {
    /// The header's name.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = NAME_PATTERN)))]
    name: String,
    /// The exact, case-sensitive value prefix before the token (e.g. `Bearer `).
    #[serde(default)]
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawClaimHeader {
    /// The request header to set.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = NAME_PATTERN)))]
    header: String,
    /// The claim, nested claims separated by `.` (e.g. `realm.role`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    claim: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub rules: Vec<Rule>,
    /// Every token location, in config order, deduplicated; each knows which rules read it.
    pub locations: Vec<Location>,
    /// Names of every configured output header, folded ([`fold_header_name`]: lower case, `_`
    /// as `-`): a request header that folds to one of them is removed from every request.
    pub output_headers: Vec<String>,
    pub clock_skew_secs: u64,
    pub require_token: bool,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub payload_header: Option<String>,
    /// (lower-cased header, claim path split at `.`)
    pub claim_headers: Vec<(String, Vec<String>)>,
    pub forward: bool,
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Inline(Arc<KeySet>),
    Remote(RemoteSpec),
}

/// Where and how to fetch a remote JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    pub uri: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub cache_duration_ms: u64,
    /// Last good keys stay in use at most this long after they expire (`jwksMaxStale`).
    pub max_stale_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationKind {
    /// Lower-cased header name and the exact, case-sensitive value prefix.
    Header {
        name: String,
        prefix: String,
    },
    Param(String),
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub kind: LocationKind,
    /// Indices of the rules that read tokens from here: a token found here must have one of
    /// their issuers.
    pub rules: Vec<usize>,
}

/// Headers an output may never name: pseudo-headers are not `[-_A-Za-z0-9]`, these would break
/// the request framing or routing.
const RESERVED_OUTPUT_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
];

impl Config {
    /// The JSON Schema of the pluginConfig (policies/jwt-authn/schema.json).
    #[cfg(feature = "schema")]
    pub fn json_schema() -> schemars::Schema {
        schemars::schema_for!(RawConfig)
    }

    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig = parse_json(bytes)?;
        compile(raw)
    }

    /// The request headers (names as given) that a backend folding case and `_`/`-` would read
    /// as one of the output headers: a client must never supply those, token or not.
    pub fn spoofed_output_headers(&self, headers: &[(&str, &str)]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (name, _) in headers {
            if !name.starts_with(':')
                && self
                    .output_headers
                    .iter()
                    .any(|o| meshward_common::header_name::same(name.as_bytes(), o.as_bytes()))
                && !out.iter().any(|o| o == name)
            {
                out.push((*name).to_string());
            }
        }
        out
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.jwt_rules.len() > MAX_RULES {
        return Err(ConfigError::new(
            "jwtRules",
            format!("at most {MAX_RULES} rules"),
        ));
    }
    let clock_skew_secs = raw.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECS);
    if clock_skew_secs > 3_600 {
        return Err(ConfigError::new("clockSkewSeconds", "at most 3600"));
    }
    let mut rules = Vec::with_capacity(raw.jwt_rules.len());
    let mut locations: Vec<Location> = Vec::new();
    let mut output_headers: Vec<String> = Vec::new();
    // Folded output header → the rule that writes it.
    let mut output_owner: Vec<(String, usize)> = Vec::new();
    for (i, raw_rule) in raw.jwt_rules.into_iter().enumerate() {
        let field = format!("jwtRules[{i}]");
        let (rule, rule_locations) = compile_rule(raw_rule).map_err(|e| e.within(&field))?;
        if rules.iter().any(|r: &Rule| r.issuer == rule.issuer) {
            return Err(ConfigError::new(
                format!("{field}.issuer"),
                "duplicate issuer",
            ));
        }
        for kind in rule_locations {
            match locations.iter_mut().find(|l| l.kind == kind) {
                Some(existing) => existing.rules.push(i),
                None => locations.push(Location {
                    kind,
                    rules: vec![i],
                }),
            }
        }
        // One output header, one issuer: a header two issuers may write tells the upstream
        // nothing about who vouched for its value (a partner IdP could assert a corp e-mail).
        let outputs = rule
            .payload_header
            .iter()
            .map(|h| ("outputPayloadToHeader".to_string(), h))
            .chain(
                rule.claim_headers
                    .iter()
                    .enumerate()
                    .map(|(k, (h, _))| (format!("outputClaimToHeaders[{k}].header"), h)),
            );
        for (at, header) in outputs {
            let folded = fold_header_name(header);
            if let Some((_, other)) = output_owner.iter().find(|(h, _)| *h == folded) {
                return Err(ConfigError::new(
                    format!("{field}.{at}"),
                    format!(
                        "`{header}` is also an output header of jwtRules[{other}]: two rules may \
                         not share an output header (compared ignoring case and `_`/`-`)"
                    ),
                ));
            }
            output_owner.push((folded.clone(), i));
            if !output_headers.contains(&folded) {
                output_headers.push(folded);
            }
        }
        rules.push(rule);
    }
    // Output headers are removed from every request before tokens are read: one that is also a
    // token location would delete the token. Two token headers that fold to one name would read
    // the same request headers as two locations.
    let mut token_headers: Vec<(String, &str)> = Vec::new();
    for location in &locations {
        if let LocationKind::Header { name, .. } = &location.kind {
            let folded = fold_header_name(name);
            if output_headers.contains(&folded) {
                return Err(ConfigError::new(
                    "jwtRules",
                    format!("header `{name}` is both a token location and an output header"),
                ));
            }
            if let Some((_, other)) = token_headers
                .iter()
                .find(|(f, n)| *f == folded && *n != name.as_str())
            {
                return Err(ConfigError::new(
                    "jwtRules",
                    format!(
                        "token headers `{other}` and `{name}` differ only in `_`/`-`: \
                         spell them the same"
                    ),
                ));
            }
            token_headers.push((folded, name));
        }
    }
    Ok(Config {
        rules,
        locations,
        output_headers,
        clock_skew_secs,
        require_token: raw.require_token,
    })
}

fn compile_rule(raw: RawRule) -> Result<(Rule, Vec<LocationKind>), ConfigError> {
    if raw.issuer.is_empty() {
        return Err(ConfigError::new("issuer", "must not be empty"));
    }
    for (j, aud) in raw.audiences.iter().enumerate() {
        if aud.is_empty() {
            return Err(ConfigError::new(
                format!("audiences[{j}]"),
                "must not be empty",
            ));
        }
    }
    let keys = match (raw.jwks, raw.jwks_uri) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "jwksUri",
                "set either `jwks` or `jwksUri`, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                "jwksUri",
                "one of `jwks` or `jwksUri` is required",
            ))
        }
        (Some(jwks), None) => {
            if raw.jwks_cluster.is_some()
                || raw.timeout.is_some()
                || raw.jwks_cache_duration.is_some()
                || raw.jwks_max_stale.is_some()
            {
                return Err(ConfigError::new(
                    "jwks",
                    "`jwksCluster`, `timeout`, `jwksCacheDuration` and `jwksMaxStale` only apply \
                     to `jwksUri`",
                ));
            }
            let text = match jwks {
                Value::String(s) => s,
                other @ Value::Object(_) => other.to_string(),
                _ => {
                    return Err(ConfigError::new(
                        "jwks",
                        "must be a JWKS (JSON string or object)",
                    ))
                }
            };
            let set =
                parse_jwks(&text, true).map_err(|e| ConfigError::new("jwks", e.to_string()))?;
            KeySource::Inline(Arc::new(set))
        }
        (None, Some(uri)) => KeySource::Remote(compile_remote(
            &uri,
            raw.jwks_cluster,
            raw.timeout.as_deref(),
            raw.jwks_cache_duration.as_deref(),
            raw.jwks_max_stale.as_deref(),
        )?),
    };
    let mut kinds = Vec::new();
    for (j, h) in raw.from_headers.iter().enumerate() {
        if !is_header_name(&h.name) {
            return Err(ConfigError::new(
                format!("fromHeaders[{j}].name"),
                "must match ^[-_A-Za-z0-9]+$",
            ));
        }
        if h.prefix.chars().any(char::is_control) {
            return Err(ConfigError::new(
                format!("fromHeaders[{j}].prefix"),
                "control characters",
            ));
        }
        kinds.push(LocationKind::Header {
            name: h.name.to_ascii_lowercase(),
            prefix: h.prefix.clone(),
        });
    }
    for (j, p) in raw.from_params.iter().enumerate() {
        if p.is_empty() || p.contains(['&', '=', '#']) {
            return Err(ConfigError::new(
                format!("fromParams[{j}]"),
                "must be a query parameter name",
            ));
        }
        kinds.push(LocationKind::Param(p.clone()));
    }
    for (j, c) in raw.from_cookies.iter().enumerate() {
        if !is_header_name(c) {
            return Err(ConfigError::new(
                format!("fromCookies[{j}]"),
                "must match ^[-_A-Za-z0-9]+$",
            ));
        }
        kinds.push(LocationKind::Cookie(c.clone()));
    }
    if kinds.is_empty() {
        kinds.push(LocationKind::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        });
        kinds.push(LocationKind::Param("access_token".into()));
    }
    let payload_header = match raw.output_payload_to_header {
        None => None,
        Some(h) => Some(output_header(&h).ok_or_else(|| {
            ConfigError::new(
                "outputPayloadToHeader",
                "must match ^[-_A-Za-z0-9]+$ and not be a reserved header",
            )
        })?),
    };
    let mut claim_headers = Vec::new();
    for (j, ch) in raw.output_claim_to_headers.iter().enumerate() {
        let header = output_header(&ch.header).ok_or_else(|| {
            ConfigError::new(
                format!("outputClaimToHeaders[{j}].header"),
                "must match ^[-_A-Za-z0-9]+$ and not be a reserved header",
            )
        })?;
        let path: Vec<String> = ch.claim.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                format!("outputClaimToHeaders[{j}].claim"),
                "empty claim name",
            ));
        }
        let folded = fold_header_name(&header);
        if payload_header.as_deref().map(fold_header_name) == Some(folded.clone())
            || claim_headers
                .iter()
                .any(|(h, _): &(String, Vec<String>)| fold_header_name(h) == folded)
        {
            return Err(ConfigError::new(
                format!("outputClaimToHeaders[{j}].header"),
                "duplicate output header",
            ));
        }
        claim_headers.push((header, path));
    }
    let rule = Rule {
        issuer: raw.issuer,
        audiences: raw.audiences,
        keys,
        payload_header,
        claim_headers,
        forward: raw.forward_original_token,
    };
    Ok((rule, kinds))
}

fn output_header(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    (is_header_name(name) && !RESERVED_OUTPUT_HEADERS.contains(&lower.as_str())).then_some(lower)
}

fn compile_remote(
    uri: &str,
    cluster: Option<String>,
    timeout: Option<&str>,
    cache: Option<&str>,
    max_stale: Option<&str>,
) -> Result<RemoteSpec, ConfigError> {
    if uri.len() > MAX_URI_LEN {
        return Err(ConfigError::new(
            "jwksUri",
            format!("longer than {MAX_URI_LEN} characters"),
        ));
    }
    let parsed = parse_http_uri(uri).ok_or_else(|| {
        ConfigError::new(
            "jwksUri",
            "must be an absolute http:// or https:// URI with a host",
        )
    })?;
    let cluster = match cluster {
        Some(c) if c.is_empty() => {
            return Err(ConfigError::new("jwksCluster", "must not be empty"))
        }
        Some(c) => c,
        None => {
            // SSRF guard (Istio 2026-003): without an explicit cluster the fetch goes wherever the
            // URI points; refuse loopback, link-local and unspecified hosts.
            if is_internal_host(&parsed.host) {
                return Err(ConfigError::new(
                    "jwksUri",
                    "loopback/link-local host: set `jwksCluster` explicitly to allow it",
                ));
            }
            format!("outbound|{}||{}", parsed.port, parsed.host)
        }
    };
    let timeout_ms = match timeout {
        None => DEFAULT_FETCH_TIMEOUT_MS,
        Some(t) => parse_millis(t)
            .filter(|ms| (1..=60_000).contains(ms))
            .ok_or_else(|| {
                ConfigError::new("timeout", "a duration like `5s` or `500ms`, at most 60s")
            })?,
    };
    let cache_duration_ms = match cache {
        None => DEFAULT_CACHE_DURATION_MS,
        Some(t) => parse_millis(t)
            .filter(|ms| (1_000..=86_400_000).contains(ms))
            .ok_or_else(|| {
                ConfigError::new("jwksCacheDuration", "a duration between 1s and 24h")
            })?,
    };
    let max_stale_ms = match max_stale {
        None => DEFAULT_MAX_STALE_MS,
        Some(t) => parse_millis(t)
            .filter(|ms| *ms <= MAX_MAX_STALE_MS)
            .ok_or_else(|| {
                ConfigError::new("jwksMaxStale", "a duration between 0s and 7d (168h)")
            })?,
    };
    Ok(RemoteSpec {
        uri: uri.to_string(),
        cluster,
        authority: parsed.authority,
        path: parsed.path,
        timeout_ms,
        cache_duration_ms,
        max_stale_ms,
    })
}

struct HttpUri {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

fn parse_http_uri(uri: &str) -> Option<HttpUri> {
    let (rest, default_port) = if let Some(r) = uri.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = uri.strip_prefix("http://") {
        (r, 80)
    } else {
        return None;
    };
    if uri.bytes().any(|b| b <= b' ' || b == 0x7f) || uri.contains('#') {
        return None;
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inner, after) = v6.split_once(']')?;
        inner.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => default_port,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        (format!("[{inner}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return None;
    }
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Some(HttpUri {
        host: host.to_ascii_lowercase(),
        port,
        authority: authority.to_string(),
        path,
    })
}

fn is_internal_host(host: &str) -> bool {
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.');
    if bare == "localhost" || bare.ends_with(".localhost") || bare == "metadata.google.internal" {
        return true;
    }
    if let Ok(v4) = bare.parse::<Ipv4Addr>() {
        return v4.is_loopback() || v4.is_link_local() || v4.is_unspecified();
    }
    if let Ok(v6) = bare.parse::<Ipv6Addr>() {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return v4.is_loopback() || v4.is_link_local() || v4.is_unspecified();
        }
        let link_local = v6
            .segments()
            .first()
            .is_some_and(|s| (s & 0xffc0) == 0xfe80);
        return v6.is_loopback() || v6.is_unspecified() || link_local;
    }
    // Decimal/hex/octal IPv4 spellings (`2130706433`, `0x7f.1`) that resolvers may still accept.
    bare.bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b'x' || b == b'X')
        && bare.bytes().any(|b| b.is_ascii_digit())
        && !bare.contains("..")
        && bare.split('.').all(|p| {
            p.bytes().all(|b| b.is_ascii_digit()) || p.starts_with("0x") || p.starts_with("0X")
        })
}
