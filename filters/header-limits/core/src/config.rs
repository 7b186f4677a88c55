//! pluginConfig of header-limits: parsing (strict JSON) and validation into [`Config`].

use meshward_common::{parse_json, ConfigError};
use serde::Deserialize;

/// Envoy's `max_request_headers_kb` default.
pub const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
/// Envoy's `max_request_headers_kb` upper bound.
pub const MAX_REQUEST_HEADERS_KB_LIMIT: u32 = 8192;
/// Envoy's `max_headers_count` default.
pub const DEFAULT_MAX_HEADERS_COUNT: u32 = 100;

/// What to do with a regular (non-pseudo) header whose name contains `_`, like Envoy's
/// `headers_with_underscores_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnderscoreAction {
    /// Let it through.
    #[default]
    Allow,
    /// Answer 400 `Bad Request`.
    RejectRequest,
    /// Remove every such header (all values) and continue.
    DropHeader,
}

/// The validated limits (the filter's configuration). Sizes are in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Reject when Σ (len(name) + len(value)) over all entries is greater than this.
    pub max_request_headers_bytes: usize,
    /// Reject when the number of entries is greater than this.
    pub max_headers_count: usize,
    /// Reject when any single value is longer than this.
    pub max_header_value_bytes: Option<usize>,
    /// Reject when the `:path` value (path and query) is longer than this.
    pub max_path_bytes: Option<usize>,
    pub headers_with_underscores_action: UnderscoreAction,
    /// Refuse (400) control bytes 0x01–0x1F (HTAB included) and 0x7F in any header name or value.
    /// NUL, CR and LF are refused whatever this says.
    pub reject_control_characters: bool,
}

impl Default for Config {
    /// Envoy's HCM defaults: 60 KiB, 100 headers, no per-value or path limit, underscores allowed;
    /// plus control characters refused (the one default that is stricter than Envoy).
    fn default() -> Self {
        Self {
            max_request_headers_bytes: kib(DEFAULT_MAX_REQUEST_HEADERS_KB),
            max_headers_count: usize_of(DEFAULT_MAX_HEADERS_COUNT),
            max_header_value_bytes: None,
            max_path_bytes: None,
            headers_with_underscores_action: UnderscoreAction::Allow,
            reject_control_characters: true,
        }
    }
}

/// The JSON document as written by the user (camelCase, unknown fields rejected).
// The `schemars` attributes only shape policies/header-limits/schema.json (feature `schema`);
// they restate the checks in `Config::parse` so that editors flag mistakes early.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(
        title = "meshward header-limits pluginConfig",
        description = "Request header limits in the spirit of Envoy's HTTP connection manager. Every field is optional; `{}` means Envoy's defaults."
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    /// Reject (431) when the sum of header name and value lengths exceeds this many KiB, like
    /// Envoy's `max_request_headers_kb`.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 8192), extend("default" = 60)))]
    max_request_headers_kb: Option<u32>,
    /// Reject (431) when the request has more header entries than this, like Envoy's
    /// `max_headers_count`.
    #[cfg_attr(feature = "schema", schemars(range(min = 1), extend("default" = 100)))]
    max_headers_count: Option<u32>,
    /// Reject (431) when any single header value is longer than this many bytes. Absent: no limit.
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    max_header_value_bytes: Option<u32>,
    /// Reject (431) when `:path` (path and query) is longer than this many bytes. Absent: no limit.
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    max_path_bytes: Option<u32>,
    /// What to do with a header whose name contains `_`, like Envoy's
    /// `headers_with_underscores_action`.
    #[cfg_attr(feature = "schema", schemars(extend("default" = "ALLOW")))]
    headers_with_underscores_action: Option<UnderscoreAction>,
    /// Reject (400) a request whose header names or values contain a control byte 0x01–0x1F
    /// (horizontal tab included) or 0x7F. NUL, CR and LF are always rejected.
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    reject_control_characters: Option<bool>,
}

impl Config {
    /// The JSON Schema of the pluginConfig (policies/header-limits/schema.json).
    #[cfg(feature = "schema")]
    pub fn json_schema() -> schemars::Schema {
        schemars::schema_for!(RawConfig)
    }

    /// Parse and validate the pluginConfig bytes. An empty configuration means Envoy's defaults.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_json(bytes)?;
        let kb = raw
            .max_request_headers_kb
            .unwrap_or(DEFAULT_MAX_REQUEST_HEADERS_KB);
        if !(1..=MAX_REQUEST_HEADERS_KB_LIMIT).contains(&kb) {
            return Err(ConfigError::new(
                "maxRequestHeadersKb",
                format!("{kb} is out of range 1..={MAX_REQUEST_HEADERS_KB_LIMIT}"),
            ));
        }
        let count = raw.max_headers_count.unwrap_or(DEFAULT_MAX_HEADERS_COUNT);
        if count == 0 {
            return Err(ConfigError::new("maxHeadersCount", "must be at least 1"));
        }
        Ok(Self {
            max_request_headers_bytes: kib(kb),
            max_headers_count: usize_of(count),
            max_header_value_bytes: positive("maxHeaderValueBytes", raw.max_header_value_bytes)?,
            max_path_bytes: positive("maxPathBytes", raw.max_path_bytes)?,
            headers_with_underscores_action: raw
                .headers_with_underscores_action
                .unwrap_or_default(),
            // On unless switched off: a backend that reads a control byte as a separator or
            // drops it sees another value than the one the policies behind us matched.
            reject_control_characters: raw.reject_control_characters.unwrap_or(true),
        })
    }
}

/// An optional byte limit must be at least 1: a 0 would reject every request (`:path` is never
/// empty), which is a typo rather than a policy.
fn positive(field: &str, value: Option<u32>) -> Result<Option<usize>, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::new(
            field,
            "must be at least 1 (omit it for no limit)",
        )),
        other => Ok(other.map(usize_of)),
    }
}

/// `kb * 1024`; `kb` is at most 8192 here, but saturate rather than trust that.
fn kib(kb: u32) -> usize {
    usize_of(kb).saturating_mul(1024)
}

/// u32 → usize without a cast that could truncate (usize is at least 32 bits on our targets; a
/// 16-bit target would saturate, which only makes the limit larger than asked, never panic).
fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> ConfigError {
        Config::parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn empty_config_is_envoy_defaults() {
        for doc in ["", "{}", " \n"] {
            let l = Config::parse(doc.as_bytes()).unwrap();
            assert_eq!(l, Config::default());
            assert_eq!(l.max_request_headers_bytes, 60 * 1024);
            assert_eq!(l.max_headers_count, 100);
            assert_eq!(l.max_header_value_bytes, None);
            assert_eq!(l.max_path_bytes, None);
            assert_eq!(l.headers_with_underscores_action, UnderscoreAction::Allow);
        }
    }

    #[test]
    fn all_fields() {
        let l = Config::parse(
            br#"{"maxRequestHeadersKb":64,"maxHeadersCount":50,"maxHeaderValueBytes":8192,
                 "maxPathBytes":2048,"headersWithUnderscoresAction":"REJECT_REQUEST"}"#,
        )
        .unwrap();
        assert_eq!(l.max_request_headers_bytes, 65536);
        assert_eq!(l.max_headers_count, 50);
        assert_eq!(l.max_header_value_bytes, Some(8192));
        assert_eq!(l.max_path_bytes, Some(2048));
        assert_eq!(
            l.headers_with_underscores_action,
            UnderscoreAction::RejectRequest
        );
        let drop = Config::parse(br#"{"headersWithUnderscoresAction":"DROP_HEADER"}"#).unwrap();
        assert_eq!(
            drop.headers_with_underscores_action,
            UnderscoreAction::DropHeader
        );
    }

    #[test]
    fn kb_bounds() {
        assert_eq!(
            err(r#"{"maxRequestHeadersKb":0}"#).field,
            "maxRequestHeadersKb"
        );
        assert_eq!(
            err(r#"{"maxRequestHeadersKb":8193}"#).field,
            "maxRequestHeadersKb"
        );
        assert_eq!(
            err(r#"{"maxRequestHeadersKb":-1}"#).field,
            "maxRequestHeadersKb"
        );
        let min = Config::parse(br#"{"maxRequestHeadersKb":1}"#).unwrap();
        assert_eq!(min.max_request_headers_bytes, 1024);
        let max = Config::parse(br#"{"maxRequestHeadersKb":8192}"#).unwrap();
        assert_eq!(max.max_request_headers_bytes, 8192 * 1024);
    }

    #[test]
    fn count_and_byte_limits_must_be_positive() {
        assert_eq!(err(r#"{"maxHeadersCount":0}"#).field, "maxHeadersCount");
        assert_eq!(
            err(r#"{"maxHeaderValueBytes":0}"#).field,
            "maxHeaderValueBytes"
        );
        assert_eq!(err(r#"{"maxPathBytes":0}"#).field, "maxPathBytes");
        let one = Config::parse(br#"{"maxHeadersCount":1,"maxPathBytes":1}"#).unwrap();
        assert_eq!((one.max_headers_count, one.max_path_bytes), (1, Some(1)));
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = err(r#"{"maxHeadersCount":"x"}"#);
        assert_eq!(e.field, "maxHeadersCount");
        assert!(e.to_string().contains("maxHeadersCount"), "{e}");
        assert_eq!(err(r#"{"maxPathBytes":1.5}"#).field, "maxPathBytes");
        assert_eq!(
            err(r#"{"headersWithUnderscoresAction":"allow"}"#).field,
            "headersWithUnderscoresAction"
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = err(r#"{"maxRequestHeadersKB":64}"#);
        assert_eq!(e.field, "maxRequestHeadersKB");
    }

    #[test]
    fn not_an_object() {
        assert!(Config::parse(b"[]").is_err());
        assert!(Config::parse(b"{").is_err());
    }
    #[test]
    fn shipped_policies_parse() {
        let default = include_str!("../../../../policies/header-limits/default.json");
        assert_eq!(
            Config::parse(default.as_bytes()).unwrap(),
            Config::default()
        );
        let strict = include_str!("../../../../policies/header-limits/strict.json");
        let strict = Config::parse(strict.as_bytes()).unwrap();
        assert_eq!(
            strict,
            Config {
                max_request_headers_bytes: 64 * 1024,
                max_headers_count: 50,
                max_header_value_bytes: Some(8192),
                max_path_bytes: Some(2048),
                headers_with_underscores_action: UnderscoreAction::RejectRequest,
                reject_control_characters: true,
            }
        );
    }

    #[test]
    fn control_characters_are_refused_unless_switched_off() {
        assert!(Config::parse(b"{}").unwrap().reject_control_characters);
        let on = Config::parse(br#"{"rejectControlCharacters":true}"#).unwrap();
        assert!(on.reject_control_characters);
        let off = Config::parse(br#"{"rejectControlCharacters":false}"#).unwrap();
        assert!(!off.reject_control_characters);
        assert_eq!(
            err(r#"{"rejectControlCharacters":"no"}"#).field,
            "rejectControlCharacters"
        );
        assert_eq!(
            err(r#"{"rejectControlChars":false}"#).field,
            "rejectControlChars"
        );
    }
}
