//! Descriptor keys as written in the config (`source.ip`, `request.headers[x-api-key]`, …): what
//! `config` parses and `keys` reads a request's values of. Its own module so that `config` and
//! `keys` both depend on it and not on each other.

use std::fmt;

use meshward_common::ConfigError;

/// A descriptor key: where the bucket's key value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// `source.principal`: the peer's URI SAN (SPIFFE ID), only on an mTLS connection.
    SourcePrincipal,
    /// `source.ip`: the downstream address without its port.
    SourceIp,
    /// `request.headers[name]` (name lowercased at config time).
    RequestHeader(String),
    /// `request.auth.principal`: `iss/sub` of the token jwt-authn verified.
    AuthPrincipal,
    /// `request.auth.claims[a][b]…`: a (nested) claim of the verified token.
    AuthClaim(Vec<String>),
}

impl KeySpec {
    /// Parse a key; errors name `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::new(field, format!("`{text}`: {why}"));
        match text {
            "source.principal" => return Ok(Self::SourcePrincipal),
            "source.ip" => return Ok(Self::SourceIp),
            "request.auth.principal" => return Ok(Self::AuthPrincipal),
            _ => {}
        }
        if let Some(rest) = text.strip_prefix("request.headers") {
            let names = brackets(rest).ok_or_else(|| bad("expected `request.headers[<name>]`"))?;
            let [name] = names.as_slice() else {
                return Err(bad("expected exactly one header name"));
            };
            if !name.bytes().all(is_header_name_byte) {
                return Err(bad("not a valid header name"));
            }
            return Ok(Self::RequestHeader(name.to_ascii_lowercase()));
        }
        if let Some(rest) = text.strip_prefix("request.auth.claims") {
            let path =
                brackets(rest).ok_or_else(|| bad("expected `request.auth.claims[<name>]…`"))?;
            return Ok(Self::AuthClaim(path));
        }
        Err(bad(
            "unknown key; expected source.principal, source.ip, request.headers[<name>], \
             request.auth.principal or request.auth.claims[<name>]",
        ))
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SourcePrincipal => f.write_str("source.principal"),
            Self::SourceIp => f.write_str("source.ip"),
            Self::RequestHeader(name) => write!(f, "request.headers[{name}]"),
            Self::AuthPrincipal => f.write_str("request.auth.principal"),
            Self::AuthClaim(path) => {
                f.write_str("request.auth.claims")?;
                path.iter().try_for_each(|p| write!(f, "[{p}]"))
            }
        }
    }
}

/// `[a][b]` ⇒ `["a", "b"]`; `None` unless the whole text is one or more non-empty bracketed parts.
fn brackets(mut text: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    while !text.is_empty() {
        let inner = text.strip_prefix('[')?;
        let end = inner.find(']')?;
        let part = inner.get(..end)?;
        if part.is_empty() || part.contains('[') {
            return None;
        }
        parts.push(part.to_string());
        text = inner.get(end.saturating_add(1)..)?;
    }
    (!parts.is_empty()).then_some(parts)
}

/// RFC 9110 token characters.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
