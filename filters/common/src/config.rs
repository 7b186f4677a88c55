//! Config errors that name the offending field.
//!
//! Every filter parses its pluginConfig JSON into typed config with `serde` (`deny_unknown_fields`,
//! camelCase) and then validates it. Both steps report a [`ConfigError`] whose `field` is a dotted
//! path into the config (`policies[1].rules[0].when[2].key`) so that the log line Envoy prints on a
//! rejected `on_configure` tells the user exactly what to fix.

use std::fmt;

/// A rejected configuration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `policies[0].rules[1].to[0].operation.paths[2]`.
    /// Empty when the document as a whole is unusable (not JSON, not an object).
    pub field: String,
    /// Human-readable reason.
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefix the field path with a parent path segment (`parent` + `.` + field).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid config: {}", self.reason)
        } else {
            write!(f, "invalid config: field `{}`: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parse a pluginConfig JSON document into `T`, turning serde's error into a [`ConfigError`] that
/// names the field. An empty configuration is parsed as `{}` (Envoy passes an empty buffer when
/// no configuration is set).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.inner().to_string();
        ConfigError::new(field_of(&path, &reason), reason)
    })?;
    de.end().map_err(|e| ConfigError::new("", e.to_string()))?;
    Ok(value)
}

/// serde_path_to_error reports an unknown field at its parent (`.` for the top level); name the
/// unknown field itself, which is what the user has to delete or fix.
fn field_of(path: &str, reason: &str) -> String {
    let parent = if path == "." { "" } else { path };
    match reason
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        // Newer serde_path_to_error already ends the path with the unknown field itself.
        Some(unknown) if parent == unknown || parent.ends_with(&format!(".{unknown}")) => {
            parent.to_string()
        }
        Some(unknown) if parent.is_empty() => unknown.to_string(),
        Some(unknown) => format!("{parent}.{unknown}"),
        None => parent.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Inner {
        max_count: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Outer {
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn names_a_mistyped_field() {
        let err =
            parse_json::<Outer>(br#"{"items":[{"maxCount":1},{"maxCount":"x"}]}"#).unwrap_err();
        assert_eq!(err.field, "items[1].maxCount");
        assert!(err.reason.contains("invalid type"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn names_an_unknown_field() {
        let err = parse_json::<Outer>(br#"{"itemz":[]}"#).unwrap_err();
        assert_eq!(err.field, "itemz");
        let err = parse_json::<Outer>(br#"{"items":[{"maxCount":1,"extra":2}]}"#).unwrap_err();
        assert_eq!(err.field, "items[0].extra");
        assert!(err.to_string().contains("field `items[0].extra`"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn empty_config_is_an_empty_object() {
        assert!(parse_json::<Outer>(b"").is_ok());
        assert!(parse_json::<Outer>(b"  ").is_ok());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn trailing_garbage_is_rejected() {
        assert!(parse_json::<Outer>(b"{} x").is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn within_prefixes_paths() {
        assert_eq!(ConfigError::new("a", "r").within("p[0]").field, "p[0].a");
        assert_eq!(ConfigError::new("[2]", "r").within("p").field, "p[2]");
        assert_eq!(ConfigError::new("", "r").within("p").field, "p");
    }
}
