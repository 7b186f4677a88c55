//! Which bucket a request draws from.
//!
//! Descriptors are tried in order; the first one whose `match` accepts the request *and* whose
//! key has a value for it wins, and the request draws from that descriptor's bucket for that value.
//! A descriptor whose key has no value (no mTLS peer, no verified JWT, header absent) does not
//! match: the next one is tried, and when none matches the request draws from the default bucket.

use std::fmt;

use meshward_common::identity::RequestIdentity;
use meshward_common::path::normalize;
use meshward_common::ConfigError;

use crate::config::{Config, DEFAULT_BUCKET};

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

/// The request facts keys and matches read, fetched lazily by the adapter (each host call only
/// when a descriptor needs it).
pub trait RequestFacts {
    /// The mTLS peer's URI SAN; `None` without mTLS.
    fn source_principal(&mut self) -> Option<String>;
    /// The downstream IP address (no port).
    fn source_ip(&mut self) -> Option<String>;
    /// The first value of a request header (lowercase name).
    fn header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// The identity jwt-authn published for this request.
    fn identity(&mut self) -> Option<RequestIdentity>;
    /// The raw request `:path` (normalized here with `meshward_common::path` before matching).
    fn path(&mut self) -> Option<String>;
    fn method(&mut self) -> Option<String>;
}

/// The bucket a request draws from: a bucket id and the key value (empty for the default bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketChoice {
    pub bucket: u16,
    pub value: Vec<u8>,
}

impl BucketChoice {
    pub fn default_bucket() -> Self {
        Self {
            bucket: DEFAULT_BUCKET,
            value: Vec::new(),
        }
    }
    pub fn is_default(&self) -> bool {
        self.bucket == DEFAULT_BUCKET
    }
}

/// First matching descriptor with a key value, else the default bucket.
pub fn choose(cfg: &Config, facts: &mut dyn RequestFacts) -> BucketChoice {
    for (i, d) in cfg.descriptors.iter().enumerate() {
        if !d.paths.is_empty() {
            let Some(raw) = facts.path() else { continue };
            match normalize(&raw) {
                Ok(path) if !d.paths.iter().any(|m| m.matches(path.path())) => continue,
                Ok(_) => {}
                // A path that cannot be normalized (`%2F`, `\`, bad escapes …) cannot be shown
                // to be outside the descriptor's paths: it counts as inside, so that odd
                // spellings cannot escape a path-scoped bucket.
                Err(_) => {}
            }
        }
        if !d.methods.is_empty() {
            let Some(method) = facts.method() else {
                continue;
            };
            if !d.methods.iter().any(|m| m.matches(&method)) {
                continue;
            }
        }
        let Some(value) = key_value(&d.key, facts) else {
            continue;
        };
        // Descriptor ids start at 1 (0 is the default bucket); MAX_DESCRIPTORS keeps this in u16.
        let Some(bucket) = u16::try_from(i).ok().and_then(|i| i.checked_add(1)) else {
            continue;
        };
        return BucketChoice { bucket, value };
    }
    BucketChoice::default_bucket()
}

fn key_value(key: &KeySpec, facts: &mut dyn RequestFacts) -> Option<Vec<u8>> {
    match key {
        KeySpec::SourcePrincipal => facts.source_principal().map(String::into_bytes),
        KeySpec::SourceIp => facts.source_ip().map(String::into_bytes),
        KeySpec::RequestHeader(name) => facts.header(name),
        KeySpec::AuthPrincipal => facts.identity().map(|id| id.principal.into_bytes()),
        KeySpec::AuthClaim(path) => {
            let id = facts.identity()?;
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            match id.claim_values(&segments).as_slice() {
                [] => None,
                [one] => Some(one.clone().into_bytes()),
                // A list claim keys by the whole list, unambiguously encoded.
                many => serde_json::to_vec(many).ok(),
            }
        }
    }
}

/// The IP of an Envoy `source.address` (`ip:port`, `[v6]:port`, or a bare IP).
pub fn ip_of_address(address: &str) -> Option<String> {
    if let Ok(sock) = address.parse::<std::net::SocketAddr>() {
        return Some(sock.ip().to_string());
    }
    address
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    pub struct Facts {
        pub principal: Option<String>,
        pub ip: Option<String>,
        pub headers: Vec<(String, Vec<u8>)>,
        pub identity: Option<RequestIdentity>,
        pub path: Option<String>,
        pub method: Option<String>,
        pub calls: Vec<&'static str>,
    }

    impl RequestFacts for Facts {
        fn source_principal(&mut self) -> Option<String> {
            self.calls.push("principal");
            self.principal.clone()
        }
        fn source_ip(&mut self) -> Option<String> {
            self.calls.push("ip");
            self.ip.clone()
        }
        fn header(&mut self, name: &str) -> Option<Vec<u8>> {
            self.calls.push("header");
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        }
        fn identity(&mut self) -> Option<RequestIdentity> {
            self.calls.push("identity");
            self.identity.clone()
        }
        fn path(&mut self) -> Option<String> {
            self.path.clone()
        }
        fn method(&mut self) -> Option<String> {
            self.method.clone()
        }
    }

    fn cfg(descriptors: &str) -> Config {
        Config::parse(
            format!(r#"{{"tokenBucket":{{"maxTokens":1,"fillInterval":"1s"}},"descriptors":{descriptors}}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    fn identity(claims: serde_json::Value) -> RequestIdentity {
        match claims {
            serde_json::Value::Object(m) => RequestIdentity::from_claims(m).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn parses_every_key_form() {
        assert_eq!(
            KeySpec::parse("k", "source.principal").unwrap(),
            KeySpec::SourcePrincipal
        );
        assert_eq!(KeySpec::parse("k", "source.ip").unwrap(), KeySpec::SourceIp);
        assert_eq!(
            KeySpec::parse("k", "request.headers[X-Api-Key]").unwrap(),
            KeySpec::RequestHeader("x-api-key".into())
        );
        assert_eq!(
            KeySpec::parse("k", "request.auth.principal").unwrap(),
            KeySpec::AuthPrincipal
        );
        assert_eq!(
            KeySpec::parse("k", "request.auth.claims[org][team]").unwrap(),
            KeySpec::AuthClaim(vec!["org".into(), "team".into()])
        );
        for bad in [
            "source.port",
            "",
            "request.headers",
            "request.headers[]",
            "request.headers[a][b]",
            "request.headers[a b]",
            "request.headers[a]x",
            "request.auth.claims",
            "request.auth.claims[]",
            "request.auth.claims[a",
            "request.auth.claims[[a]]",
            "Source.Principal",
        ] {
            let err = KeySpec::parse("descriptors[3].key", bad).unwrap_err();
            assert_eq!(err.field, "descriptors[3].key", "{bad}");
        }
        let spec = KeySpec::parse("k", "request.auth.claims[a][b]").unwrap();
        assert_eq!(spec.to_string(), "request.auth.claims[a][b]");
    }

    #[test]
    fn first_descriptor_with_a_value_wins() {
        let c = cfg(
            r#"[{"key":"source.principal"},{"key":"request.headers[x-api-key]"},{"key":"source.ip"}]"#,
        );
        let mut f = Facts {
            ip: Some("10.0.0.1".into()),
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &mut f),
            BucketChoice {
                bucket: 3,
                value: b"10.0.0.1".to_vec()
            }
        );
        // Facts are read lazily and in order.
        assert_eq!(f.calls, vec!["principal", "header", "ip"]);
        let mut f = Facts {
            principal: Some("spiffe://td/ns/a/sa/b".into()),
            ip: Some("10.0.0.1".into()),
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &mut f),
            BucketChoice {
                bucket: 1,
                value: b"spiffe://td/ns/a/sa/b".to_vec()
            }
        );
        assert_eq!(f.calls, vec!["principal"]);
        let mut f = Facts {
            headers: vec![("x-api-key".into(), b"k1".to_vec())],
            ..Default::default()
        };
        assert_eq!(choose(&c, &mut f).bucket, 2);
    }

    #[test]
    fn no_value_anywhere_is_the_default_bucket() {
        let c = cfg(r#"[{"key":"source.principal"},{"key":"request.auth.principal"}]"#);
        let mut f = Facts::default();
        assert!(choose(&c, &mut f).is_default());
    }

    #[test]
    fn identity_keys() {
        let c = cfg(
            r#"[{"key":"request.auth.claims[tenant]"},{"key":"request.auth.claims[groups]"},{"key":"request.auth.principal"}]"#,
        );
        let mut f = Facts {
            identity: Some(identity(json!({"iss":"i","sub":"alice","tenant":"t1"}))),
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &mut f),
            BucketChoice {
                bucket: 1,
                value: b"t1".to_vec()
            }
        );
        let mut f = Facts {
            identity: Some(identity(
                json!({"iss":"i","sub":"alice","groups":["a","b"]}),
            )),
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &mut f),
            BucketChoice {
                bucket: 2,
                value: br#"["a","b"]"#.to_vec()
            }
        );
        let mut f = Facts {
            identity: Some(identity(json!({"iss":"i","sub":"alice"}))),
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &mut f),
            BucketChoice {
                bucket: 3,
                value: b"i/alice".to_vec()
            }
        );
    }

    #[test]
    fn match_restricts_a_descriptor() {
        let c = cfg(
            r#"[{"key":"source.ip","match":{"paths":["/api/*"],"methods":["POST"]}},{"key":"request.headers[x-k]"}]"#,
        );
        let base = || Facts {
            ip: Some("1.2.3.4".into()),
            headers: vec![("x-k".into(), b"v".to_vec())],
            path: Some("/api/x".into()),
            method: Some("POST".into()),
            ..Default::default()
        };
        assert_eq!(choose(&c, &mut base()).bucket, 1);
        assert_eq!(
            choose(
                &c,
                &mut Facts {
                    method: Some("GET".into()),
                    ..base()
                }
            )
            .bucket,
            2
        );
        assert_eq!(
            choose(
                &c,
                &mut Facts {
                    path: Some("/other".into()),
                    ..base()
                }
            )
            .bucket,
            2
        );
        assert_eq!(
            choose(
                &c,
                &mut Facts {
                    path: None,
                    ..base()
                }
            )
            .bucket,
            2
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(ip_of_address("10.1.2.3:5555").as_deref(), Some("10.1.2.3"));
        assert_eq!(ip_of_address("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(ip_of_address("fe80::1").as_deref(), Some("fe80::1"));
        assert_eq!(ip_of_address("127.0.0.2").as_deref(), Some("127.0.0.2"));
        assert_eq!(ip_of_address("pipe:/x"), None);
    }
}
