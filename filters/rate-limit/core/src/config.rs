//! pluginConfig: parsing (strict JSON, camelCase, unknown fields rejected) and validation.
//!
//! Names follow Envoy's `local_ratelimit` where there is one (`tokenBucket`, `maxTokens`,
//! `tokensPerFill`, `fillInterval`, `statusCode`, `DRAFT_VERSION_03`).

use meshward_common::matchers::{parse_list, MatchOptions, StringMatcher};
use meshward_common::{parse_json, ConfigError};
use serde::Deserialize;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

use crate::bucket::TokenBucket;
use crate::key_spec::KeySpec;
use crate::layout::{TableLayout, FORMAT_VERSION};

/// Default `maxKeys`.
pub const DEFAULT_MAX_KEYS: u32 = 10_000;
/// Largest `maxKeys`: 125,000 shared-data entries of ~210 bytes (see docs/rate-limit.md).
pub const MAX_MAX_KEYS: u32 = 1_000_000;
/// Most descriptors one config may list (bucket ids are `u16`; a long list is a config mistake).
pub const MAX_DESCRIPTORS: usize = 64;
const MIN_FILL_INTERVAL_NS: u64 = 1_000_000; // 1 ms
const MAX_FILL_INTERVAL_NS: u64 = 366 * 24 * 3600 * 1_000_000_000; // a (leap) year

/// Which rate-limit headers responses carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum HeaderStyle {
    #[default]
    #[serde(rename = "NONE")]
    None,
    /// `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` (Envoy's DRAFT_VERSION_03).
    #[serde(rename = "DRAFT_VERSION_03")]
    DraftVersion03,
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    #[serde(rename = "IETF")]
    Ietf,
}

// The `schemars` attributes only shape policies/rate-limit/schema.json (feature `schema`); they
// restate the checks in `Config::parse` so that editors flag mistakes early.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        title = "meshward rate-limit pluginConfig",
        description = "Local token-bucket rate limiting per key (identity, header, claim, address), shared by the proxy's workers."
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    /// The bucket of requests no descriptor matches, and the default of every descriptor.
    #[cfg_attr(feature = "schema", schemars(required))]
    token_bucket: Option<RawBucket>,
    /// Keys to limit by, first match wins; each distinct key value gets its own bucket.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 64)))]
    descriptors: Vec<RawDescriptor>,
    /// How many key values (buckets) are tracked at once.
    #[cfg_attr(
        feature = "schema",
        schemars(range(min = 1, max = 1_000_000), extend("default" = 10_000))
    )]
    max_keys: Option<u64>,
    /// Rate-limit headers on responses.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "NONE")))]
    rate_limit_headers: HeaderStyle,
    /// Status of a rejection; below 400 means 429, as in Envoy.
    #[cfg_attr(feature = "schema", schemars(range(max = 599), extend("default" = 429)))]
    status_code: Option<u64>,
    /// Count and log, but never reject.
    #[serde(default)]
    shadow: bool,
    /// Charge the default bucket on every request, also when a descriptor matched (Envoy's
    /// `always_consume_default_token_bucket`). Off, a client that invents a new key value per
    /// request gets a fresh bucket each time and no overall limit applies.
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    always_consume_default_token_bucket: Option<bool>,
}

/// A duration: a decimal number and one of `ns`, `us`, `ms`, `s`, `m`, `h`, `d`; 1ms to 366d.
#[cfg(feature = "schema")]
const DURATION_PATTERN: &str = r"^[0-9]+(\.[0-9]{1,18})?(ns|us|ms|s|m|h|d)$";

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBucket {
    /// The bucket's capacity (the burst).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 4_294_967_295_u64)))]
    max_tokens: u64,
    /// Tokens added every `fillInterval`.
    #[cfg_attr(
        feature = "schema",
        schemars(range(min = 1, max = 4_294_967_295_u64), extend("default" = 1))
    )]
    tokens_per_fill: Option<u64>,
    /// e.g. `1s`, `250ms`, `1.5m`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = DURATION_PATTERN)))]
    fill_interval: String,
}

/// The key forms [`KeySpec::parse`] accepts.
#[cfg(feature = "schema")]
const KEY_PATTERN: &str = r"^(source\.principal|source\.ip|request\.auth\.principal|request\.headers\[[-!#$%&'*+.^_`|~0-9A-Za-z]+\]|request\.auth\.claims(\[[^\[\]]+\])+)$";

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDescriptor {
    /// `source.principal`, `source.ip`, `request.auth.principal`, `request.auth.claims[NAME]` or
    /// `request.headers[NAME]`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = KEY_PATTERN)))]
    key: String,
    /// This descriptor's bucket; default: the top-level `tokenBucket`.
    token_bucket: Option<RawBucket>,
    /// Only requests matching this use the descriptor.
    #[serde(rename = "match")]
    request_match: Option<RawMatch>,
    /// Required with `key: source.ip` (and only allowed there): where the address comes from
    /// and how much of it is the key.
    source_ip: Option<RawSourceIp>,
}

/// How the listener sets the downstream address. Under Envoy's default `use_remote_address:
/// false`, `source.address` is the last `x-forwarded-for` entry the client sent, so a `source.ip`
/// key is only a limit when the listener sets the address itself; the config must say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TrustedAddress {
    /// The HTTP connection manager has `use_remote_address: true` and no proxy in front: the
    /// address is the TCP peer.
    #[serde(rename = "USE_REMOTE_ADDRESS")]
    UseRemoteAddress,
    /// `use_remote_address: true` with `xff_num_trusted_hops` equal to the number of trusted
    /// proxies in front, each of which appends the address it saw to `x-forwarded-for`.
    #[serde(rename = "XFF_NUM_TRUSTED_HOPS")]
    XffNumTrustedHops,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSourceIp {
    /// The acknowledgement that the listener, not the client, sets the address (required).
    #[cfg_attr(feature = "schema", schemars(required))]
    trusted_address: Option<TrustedAddress>,
    /// Key IPv4 clients by this prefix (Envoy's `v4_prefix_mask_len`).
    #[cfg_attr(
        feature = "schema",
        schemars(range(min = 1, max = 32), extend("default" = 32))
    )]
    ipv4_prefix_length: Option<u64>,
    /// Key IPv6 clients by this prefix (Envoy's `v6_prefix_mask_len`); 64 keeps one client from
    /// rotating through the addresses of its /64.
    #[cfg_attr(
        feature = "schema",
        schemars(range(min = 1, max = 128), extend("default" = 128))
    )]
    ipv6_prefix_length: Option<u64>,
}

/// The prefix lengths a `source.ip` key is masked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpMask {
    pub v4: u8,
    pub v6: u8,
}

impl Default for IpMask {
    fn default() -> Self {
        Self { v4: 32, v6: 128 }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMatch {
    /// Istio string matches on the path (query stripped): exact, `prefix*`, `*suffix` or `*`.
    /// Empty: any path.
    #[serde(default)]
    paths: Vec<String>,
    /// Istio string matches on the method. Empty: any method.
    #[serde(default)]
    methods: Vec<String>,
}

/// One compiled descriptor: requests it matches and whose key value is present draw from a bucket
/// of their own per distinct value.
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub key: KeySpec,
    pub bucket: TokenBucket,
    /// Any of these must match the request path (query stripped); empty = any path.
    pub paths: Vec<StringMatcher>,
    /// Any of these must match the method; empty = any method.
    pub methods: Vec<StringMatcher>,
    /// `source.ip` keys: the prefix lengths the address is masked to (unused by other keys).
    pub ip_mask: IpMask,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub default_bucket: TokenBucket,
    pub descriptors: Vec<Descriptor>,
    pub layout: TableLayout,
    pub headers: HeaderStyle,
    /// Status of a rejection (400..=599; Envoy maps anything below 400 to 429, so do we).
    pub status: u16,
    pub shadow: bool,
    /// Charge the default bucket also when a descriptor matched (`alwaysConsumeDefaultTokenBucket`).
    pub always_consume_default: bool,
    /// Identifies the bucket semantics (table geometry, keys, bucket parameters): the shared-data
    /// namespace, so that a config with different buckets never reads another's state.
    pub state_id: u64,
}

/// Bucket id of the default bucket; descriptor `i` has id `i + 1`.
pub const DEFAULT_BUCKET: u16 = 0;

impl Config {
    /// The JSON Schema of the pluginConfig (policies/rate-limit/schema.json).
    #[cfg(feature = "schema")]
    pub fn json_schema() -> schemars::Schema {
        schemars::schema_for!(RawConfig)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_json(bytes)?;
        // Required, like Envoy's token_bucket; checked here so that the error names the field.
        let raw_bucket = raw
            .token_bucket
            .as_ref()
            .ok_or_else(|| ConfigError::new("tokenBucket", "required"))?;
        let default_bucket = compile_bucket(raw_bucket).map_err(|e| e.within("tokenBucket"))?;
        if raw.descriptors.len() > MAX_DESCRIPTORS {
            return Err(ConfigError::new(
                "descriptors",
                format!("at most {MAX_DESCRIPTORS} descriptors"),
            ));
        }
        let descriptors = raw
            .descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| {
                compile_descriptor(d, default_bucket)
                    .map_err(|e| e.within(&format!("descriptors[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_keys = match raw.max_keys {
            None => DEFAULT_MAX_KEYS,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_MAX_KEYS).contains(n))
                .ok_or_else(|| {
                    ConfigError::new("maxKeys", format!("must be 1..={MAX_MAX_KEYS}"))
                })?,
        };
        let status = match raw.status_code {
            None => 429,
            Some(s) if s < 400 => 429,
            Some(s) => u16::try_from(s).ok().filter(|s| *s <= 599).ok_or_else(|| {
                ConfigError::new("statusCode", "must be an HTTP status below 600")
            })?,
        };
        let layout = TableLayout::for_max_keys(max_keys);
        let state_id = state_id(&layout, default_bucket, &descriptors);
        Ok(Self {
            default_bucket,
            descriptors,
            layout,
            headers: raw.rate_limit_headers,
            status,
            shadow: raw.shadow,
            always_consume_default: raw.always_consume_default_token_bucket.unwrap_or(true),
            state_id,
        })
    }

    /// The bucket parameters of a bucket id.
    pub fn bucket(&self, id: u16) -> Option<&TokenBucket> {
        match usize::from(id).checked_sub(1) {
            None => Some(&self.default_bucket),
            Some(i) => self.descriptors.get(i).map(|d| &d.bucket),
        }
    }
}

fn compile_descriptor(
    raw: &RawDescriptor,
    default: TokenBucket,
) -> Result<Descriptor, ConfigError> {
    let key = KeySpec::parse("key", &raw.key)?;
    let bucket = match &raw.token_bucket {
        Some(b) => compile_bucket(b).map_err(|e| e.within("tokenBucket"))?,
        None => default,
    };
    let (paths, methods) = match &raw.request_match {
        None => (Vec::new(), Vec::new()),
        Some(m) => (
            parse_list("match.paths", &m.paths, &MatchOptions::new())?,
            parse_list("match.methods", &m.methods, &MatchOptions::new())?,
        ),
    };
    let ip_mask = match (&key, &raw.source_ip) {
        (KeySpec::SourceIp, None) => {
            return Err(ConfigError::new("sourceIp.trustedAddress", SOURCE_IP_WHY));
        }
        (KeySpec::SourceIp, Some(s)) => compile_source_ip(s)?,
        (_, Some(_)) => {
            return Err(ConfigError::new(
                "sourceIp",
                "only allowed with `key: source.ip`",
            ));
        }
        (_, None) => IpMask::default(),
    };
    Ok(Descriptor {
        key,
        bucket,
        paths,
        methods,
        ip_mask,
    })
}

/// Why a `source.ip` key needs `sourceIp.trustedAddress` (the config error says it in full).
const SOURCE_IP_WHY: &str = "required for `key: source.ip`: under Envoy's default \
    `use_remote_address: false` the downstream address is the last `x-forwarded-for` entry the \
    client sent, so every client could pick its own bucket. Configure the listener's HTTP \
    connection manager with `use_remote_address: true` (and `xff_num_trusted_hops` for trusted \
    proxies in front), then state it here: USE_REMOTE_ADDRESS or XFF_NUM_TRUSTED_HOPS";

fn compile_source_ip(raw: &RawSourceIp) -> Result<IpMask, ConfigError> {
    if raw.trusted_address.is_none() {
        return Err(ConfigError::new("sourceIp.trustedAddress", SOURCE_IP_WHY));
    }
    let length = |field: &str, value: Option<u64>, max: u8| match value {
        None => Ok(max),
        Some(n) => u8::try_from(n)
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ConfigError::new(field, format!("must be 1..={max}"))),
    };
    Ok(IpMask {
        v4: length("sourceIp.ipv4PrefixLength", raw.ipv4_prefix_length, 32)?,
        v6: length("sourceIp.ipv6PrefixLength", raw.ipv6_prefix_length, 128)?,
    })
}

fn compile_bucket(raw: &RawBucket) -> Result<TokenBucket, ConfigError> {
    let max_tokens = u32::try_from(raw.max_tokens)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ConfigError::new("maxTokens", "must be 1..=4294967295"))?;
    let per_fill = u32::try_from(raw.tokens_per_fill.unwrap_or(1))
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ConfigError::new("tokensPerFill", "must be 1..=4294967295"))?;
    let interval = parse_duration(&raw.fill_interval)
        .filter(|ns| (MIN_FILL_INTERVAL_NS..=MAX_FILL_INTERVAL_NS).contains(ns))
        .ok_or_else(|| {
            ConfigError::new(
                "fillInterval",
                format!(
                    "`{}`: expected a duration from 1ms to 366d such as `1s`, `250ms`, `1.5m`",
                    raw.fill_interval
                ),
            )
        })?;
    TokenBucket::new(max_tokens, per_fill, interval)
        .ok_or_else(|| ConfigError::new("", "invalid token bucket"))
}

/// A duration string (`1s`, `250ms`, `1.5m`…) in nanoseconds: the shared parser.
pub use meshward_common::duration::parse_nanos as parse_duration;

/// A stable hash of everything that gives stored bucket state its meaning.
fn state_id(layout: &TableLayout, default: TokenBucket, descriptors: &[Descriptor]) -> u64 {
    let mut h = SipHasher13::new_with_keys(0x6d65_7368_7761_7264, 0x7261_7465_6c69_6d74);
    let bucket = |h: &mut SipHasher13, b: &TokenBucket| {
        h.write_u32(b.max_tokens());
        h.write_u32(b.tokens_per_fill());
        h.write_u64(b.fill_interval_ns());
    };
    h.write_u8(FORMAT_VERSION);
    h.write_u32(layout.sets());
    h.write_u8(layout.ways());
    bucket(&mut h, &default);
    h.write_usize(descriptors.len());
    for d in descriptors {
        let key = d.key.to_string();
        h.write_usize(key.len());
        h.write(key.as_bytes());
        bucket(&mut h, &d.bucket);
        // A masked address is another key value: another prefix length, another table.
        if d.key == KeySpec::SourceIp {
            h.write_u8(d.ip_mask.v4);
            h.write_u8(d.ip_mask.v6);
        }
    }
    h.finish128().h1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::parse(json.as_bytes())
    }

    const MIN: &str = r#"{"tokenBucket":{"maxTokens":10,"tokensPerFill":5,"fillInterval":"1s"}}"#;

    #[test]
    fn the_issue_example_parses() {
        let cfg = parse(
            r#"{"tokenBucket":{"maxTokens":100,"tokensPerFill":100,"fillInterval":"1s"},
            "descriptors":[
              {"key":"source.principal","tokenBucket":{"maxTokens":20,"tokensPerFill":20,"fillInterval":"1s"}},
              {"key":"request.auth.principal"},
              {"key":"request.headers[x-api-key]"},
              {"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}},
              {"key":"request.auth.claims[tenant]","match":{"paths":["/api/*"],"methods":["POST"]}}],
            "maxKeys":10000,"rateLimitHeaders":"DRAFT_VERSION_03","statusCode":429,"shadow":false}"#,
        )
        .unwrap();
        assert_eq!(cfg.descriptors.len(), 5);
        assert_eq!(cfg.bucket(1).unwrap().max_tokens(), 20);
        assert_eq!(cfg.bucket(2).unwrap(), &cfg.default_bucket);
        assert!(cfg.bucket(6).is_none());
        assert_eq!(cfg.headers, HeaderStyle::DraftVersion03);
        assert_eq!(cfg.layout.capacity(), 10_000);
        assert_eq!(cfg.descriptors[4].paths.len(), 1);
    }

    #[test]
    fn defaults() {
        let cfg = parse(MIN).unwrap();
        assert_eq!(cfg.status, 429);
        assert_eq!(cfg.headers, HeaderStyle::None);
        assert!(!cfg.shadow);
        assert_eq!(cfg.layout.capacity(), DEFAULT_MAX_KEYS);
        let cfg = parse(r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"}}"#).unwrap();
        assert_eq!(cfg.default_bucket.tokens_per_fill(), 1);
    }

    #[test]
    fn status_below_400_becomes_429() {
        let with = |s: &str| parse(&MIN.replace("}}", &format!("}},\"statusCode\":{s}}}")));
        assert_eq!(with("200").unwrap().status, 429);
        assert_eq!(with("0").unwrap().status, 429);
        assert_eq!(with("503").unwrap().status, 503);
        assert_eq!(with("600").unwrap_err().field, "statusCode");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{}"#, "tokenBucket"),
            (
                r#"{"tokenBucket":{"maxTokens":0,"fillInterval":"1s"}}"#,
                "tokenBucket.maxTokens",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":5000000000,"fillInterval":"1s"}}"#,
                "tokenBucket.maxTokens",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"tokensPerFill":0,"fillInterval":"1s"}}"#,
                "tokenBucket.tokensPerFill",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1"}}"#,
                "tokenBucket.fillInterval",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"0s"}}"#,
                "tokenBucket.fillInterval",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"999us"}}"#,
                "tokenBucket.fillInterval",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"367d"}}"#,
                "tokenBucket.fillInterval",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s","burst":2}}"#,
                "tokenBucket.burst",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"maxKeys":0}"#,
                "maxKeys",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"maxKeys":1000001}"#,
                "maxKeys",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"rateLimitHeaders":"draft"}"#,
                "rateLimitHeaders",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"descriptors":[{"key":"source.port"}]}"#,
                "descriptors[0].key",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}},{"key":"request.headers[]"}]}"#,
                "descriptors[1].key",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"},"tokenBucket":{"maxTokens":1,"fillInterval":"x"}}]}"#,
                "descriptors[0].tokenBucket.fillInterval",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"},"match":{"paths":["/a*b"]}}]}"#,
                "descriptors[0].match.paths[0]",
            ),
            (
                r#"{"tokenBucket":{"maxTokens":1,"fillInterval":"1s"},"descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"},"match":{"hosts":[]}}]}"#,
                "descriptors[0].match.hosts",
            ),
        ];
        for (json, field) in cases {
            let err = parse(json).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    const B: &str = r#""tokenBucket":{"maxTokens":1,"fillInterval":"1s"}"#;

    #[test]
    fn source_ip_needs_the_listener_statement_and_valid_prefixes() {
        let with = |d: &str| parse(&format!(r#"{{{B},"descriptors":[{d}]}}"#));
        let err = with(r#"{"key":"source.ip"}"#).unwrap_err();
        assert_eq!(err.field, "descriptors[0].sourceIp.trustedAddress");
        // The message says why, and what to do.
        let text = err.to_string();
        for words in [
            "x-forwarded-for",
            "use_remote_address",
            "USE_REMOTE_ADDRESS",
        ] {
            assert!(text.contains(words), "{text}");
        }
        for (d, field) in [
            (
                r#"{"key":"source.ip","sourceIp":{}}"#,
                "descriptors[0].sourceIp.trustedAddress",
            ),
            (
                r#"{"key":"source.ip","sourceIp":{"trustedAddress":"yes"}}"#,
                "descriptors[0].sourceIp.trustedAddress",
            ),
            (
                r#"{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS","ipv6PrefixLength":129}}"#,
                "descriptors[0].sourceIp.ipv6PrefixLength",
            ),
            (
                r#"{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS","ipv6PrefixLength":0}}"#,
                "descriptors[0].sourceIp.ipv6PrefixLength",
            ),
            (
                r#"{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS","ipv4PrefixLength":33}}"#,
                "descriptors[0].sourceIp.ipv4PrefixLength",
            ),
            (
                r#"{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS","ipv4PrefixLength":0}}"#,
                "descriptors[0].sourceIp.ipv4PrefixLength",
            ),
            (
                r#"{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS","mask":1}}"#,
                "descriptors[0].sourceIp.mask",
            ),
            (
                r#"{"key":"source.principal","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}}"#,
                "descriptors[0].sourceIp",
            ),
        ] {
            assert_eq!(with(d).unwrap_err().field, field, "{d}");
        }
        let cfg = with(
            r#"{"key":"source.ip","sourceIp":{"trustedAddress":"XFF_NUM_TRUSTED_HOPS","ipv4PrefixLength":24,"ipv6PrefixLength":64}}"#,
        )
        .unwrap();
        assert_eq!(cfg.descriptors[0].ip_mask, IpMask { v4: 24, v6: 64 });
        let full =
            with(r#"{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}}"#)
                .unwrap();
        assert_eq!(full.descriptors[0].ip_mask, IpMask { v4: 32, v6: 128 });
        // Another mask is another key: a fresh table.
        assert_ne!(cfg.state_id, full.state_id);
    }

    #[test]
    fn the_default_bucket_is_always_charged_unless_turned_off() {
        assert!(parse(MIN).unwrap().always_consume_default);
        let off = parse(&format!(
            r#"{{{B},"alwaysConsumeDefaultTokenBucket":false}}"#
        ))
        .unwrap();
        assert!(!off.always_consume_default);
        let err = parse(&format!(
            r#"{{{B},"alwaysConsumeDefaultTokenBucket":"no"}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field, "alwaysConsumeDefaultTokenBucket");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Some(1_000_000_000));
        assert_eq!(parse_duration("0.25s"), Some(250_000_000));
        assert_eq!(parse_duration("100ms"), Some(100_000_000));
        assert_eq!(parse_duration("1.5m"), Some(90_000_000_000));
        assert_eq!(parse_duration("2h"), Some(7_200_000_000_000));
        assert_eq!(parse_duration("1d"), Some(86_400_000_000_000));
        assert_eq!(parse_duration("7ns"), Some(7));
        for bad in [
            "",
            "s",
            "1",
            "1.s",
            ".5s",
            "-1s",
            "1 s",
            "1sec",
            "1e3s",
            "99999999999999999999999h",
            "1.2.3s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn state_id_follows_bucket_semantics_only() {
        let a = parse(MIN).unwrap().state_id;
        let shadow = parse(&MIN.replace("}}", "},\"shadow\":true}"))
            .unwrap()
            .state_id;
        assert_eq!(a, shadow);
        let other = parse(&MIN.replace("\"maxTokens\":10", "\"maxTokens\":11"))
            .unwrap()
            .state_id;
        assert_ne!(a, other);
        let keys = parse(&MIN.replace("}}", "},\"maxKeys\":64}"))
            .unwrap()
            .state_id;
        assert_ne!(a, keys);
    }
}

#[cfg(test)]
mod policy_files {
    use super::*;

    /// The example policies shipped in policies/rate-limit/ are valid.
    #[test]
    fn shipped_policies_parse() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../policies/rate-limit");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") && !path.ends_with("schema.json") {
                let bytes = std::fs::read(&path).unwrap();
                Config::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 2);
    }
}
