//! The bundle's configuration: one section per check, each exactly the configuration of the
//! separate filter, parsed by that filter's own `Config::parse`.
//!
//! ```json
//! {"headerLimits": {…}, "jwtAuthn": {…}, "spiffeAuthz": {…}, "rateLimit": {…}}
//! ```
//!
//! A missing section is a check that does not run; a present one is parsed even when it is
//! `null` or `{}` (so `"jwtAuthn": null` is refused by jwt-authn's parser rather than quietly
//! turning authentication off). Unknown keys are refused, and so is a configuration with no
//! section at all (a bundle that checks nothing is a mistake, not a pass-through).

use meshward_common::config::{parse_json, ConfigError};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The sections' keys, in the order the checks run.
pub const SECTIONS: [&str; 4] = ["headerLimits", "jwtAuthn", "spiffeAuthz", "rateLimit"];

/// A parsed bundle configuration: the enabled checks.
#[derive(Debug)]
pub struct BundleConfig {
    pub header_limits: Option<header_limits_core::Config>,
    pub jwt_authn: Option<jwt_authn_core::Config>,
    pub spiffe_authz: Option<spiffe_authz_core::Config>,
    pub rate_limit: Option<rate_limit_core::Config>,
}

/// The document's shape: each section kept as its raw JSON text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Sections {
    #[serde(default, deserialize_with = "present")]
    header_limits: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    jwt_authn: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    spiffe_authz: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Box<RawValue>>,
}

/// A section that is present, whatever its value (`null` included: `Option`'s own
/// deserializer would take `null` for "absent").
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Parse one section with its filter's parser; its error names the section as the first part of
/// the field path (`jwtAuthn.jwtRules[0].issuer`).
fn section<T>(
    name: &str,
    raw: Option<Box<RawValue>>,
    parse: impl FnOnce(&[u8]) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(raw) => parse(raw.get().as_bytes())
            .map(Some)
            .map_err(|e| e.within(name)),
    }
}

impl BundleConfig {
    /// Parse and validate the bundle's pluginConfig (empty = `{}`, which enables nothing and is
    /// refused).
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let sections: Sections = parse_json(bytes)?;
        let config = Self {
            header_limits: section(
                "headerLimits",
                sections.header_limits,
                header_limits_core::Config::parse,
            )?,
            jwt_authn: section(
                "jwtAuthn",
                sections.jwt_authn,
                jwt_authn_core::Config::parse,
            )?,
            spiffe_authz: section(
                "spiffeAuthz",
                sections.spiffe_authz,
                spiffe_authz_core::Config::parse,
            )?,
            rate_limit: section(
                "rateLimit",
                sections.rate_limit,
                rate_limit_core::Config::parse,
            )?,
        };
        if config.enabled().is_empty() {
            return Err(ConfigError::new(
                "",
                format!(
                    "no check enabled: give at least one of {}",
                    SECTIONS.map(|s| format!("`{s}`")).join(", ")
                ),
            ));
        }
        Ok(config)
    }

    /// The keys of the enabled sections, in the order the checks run.
    pub fn enabled(&self) -> Vec<&'static str> {
        let on = [
            self.header_limits.is_some(),
            self.jwt_authn.is_some(),
            self.spiffe_authz.is_some(),
            self.rate_limit.is_some(),
        ];
        SECTIONS
            .iter()
            .zip(on)
            .filter_map(|(name, on)| on.then_some(*name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        BundleConfig::parse(text.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn sections_are_parsed_by_their_filters_in_order() {
        let config = BundleConfig::parse(
            br#"{"rateLimit": {"tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}},
                 "headerLimits": {}}"#,
        )
        .unwrap();
        assert_eq!(config.enabled(), ["headerLimits", "rateLimit"]);
        assert!(config.jwt_authn.is_none() && config.spiffe_authz.is_none());
        let all = BundleConfig::parse(
            br#"{"headerLimits": {}, "jwtAuthn": {}, "spiffeAuthz": {},
                 "rateLimit": {"tokenBucket": {"maxTokens": 1, "fillInterval": "1s"}}}"#,
        )
        .unwrap();
        assert_eq!(all.enabled(), SECTIONS);
    }

    #[test]
    fn an_unknown_section_is_named() {
        let e = error(r#"{"headerLimits": {}, "jwtAuthN": {}}"#);
        assert!(e.contains("field `jwtAuthN`"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn nothing_enabled_is_refused() {
        for text in ["", " ", "{}"] {
            let e = error(text);
            assert!(e.contains("no check enabled"), "{text:?}: {e}");
        }
        for text in ["[]", "null", "3", r#"{"headerLimits": {}} x"#] {
            assert!(BundleConfig::parse(text.as_bytes()).is_err(), "{text}");
        }
    }

    #[test]
    fn a_sections_own_error_is_prefixed_with_the_section() {
        let e = error(r#"{"headerLimits": {"maxRequestHeadersKb": 0}}"#);
        assert!(
            e.contains("field `headerLimits.maxRequestHeadersKb`"),
            "{e}"
        );
        let e = error(r#"{"jwtAuthn": {"jwtRules": [{"issuer": ""}]}}"#);
        assert!(e.contains("field `jwtAuthn.jwtRules[0]"), "{e}");
        let e = error(r#"{"spiffeAuthz": {"policies": [{"name": "p", "action": "deny"}]}}"#);
        assert!(e.contains("field `spiffeAuthz.policies[0].action`"), "{e}");
        // rate-limit refuses `{}` (a bucket is required), as the separate filter does.
        let e = error(r#"{"rateLimit": {}}"#);
        assert!(e.contains("field `rateLimit"), "{e}");
    }

    #[test]
    fn a_null_section_is_its_filters_error_not_a_disabled_check() {
        let e = error(r#"{"headerLimits": {}, "jwtAuthn": null}"#);
        assert!(e.contains("field `jwtAuthn`"), "{e}");
        let e = error(r#"{"headerLimits": {}, "headerLimits": {}}"#);
        assert!(e.contains("duplicate field"), "{e}");
    }
}
