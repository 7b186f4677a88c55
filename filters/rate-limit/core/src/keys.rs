//! Which buckets a request draws from.
//!
//! Descriptors are tried in order; the first one whose `match` accepts the request *and* whose
//! key has a value for it wins, and the request draws from that descriptor's bucket for each of
//! its distinct values (a repeated header, a comma-separated list: every value is charged). A
//! descriptor whose key has no value (no mTLS peer, no verified JWT, header absent) does not
//! match: the next one is tried. The default bucket is charged too, always (Envoy's
//! `always_consume_default_token_bucket`), or with that off only when no descriptor matched: a
//! client that invents a fresh key value per request still meets the overall limit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshward_common::header_name;
use meshward_common::identity::RequestIdentity;
use meshward_common::path::normalize;

use crate::config::{Config, Descriptor, IpMask, DEFAULT_BUCKET};
use crate::key_spec::KeySpec;

/// Most distinct key values one request may name for its descriptor (repeated header lines and
/// comma-separated elements together). Each one is a bucket to charge; a request naming more is
/// refused ([`Unchargeable::TooManyValues`]) rather than charged for only some of them.
pub const MAX_KEY_VALUES: usize = 8;

/// What the identity jwt-authn published looks like to this filter.
#[derive(Debug, Clone, PartialEq)]
pub enum IdentityFact {
    /// No identity was published (no verified token).
    Absent,
    Present(RequestIdentity),
    /// Bytes were published but do not parse: the request cannot be shown to be anonymous, so
    /// it is refused ([`Unchargeable::IdentityUnreadable`]) instead of falling to another bucket.
    Unreadable,
}

/// The request facts keys and matches read, fetched lazily by the adapter (each host call only
/// when a descriptor needs it).
pub trait RequestFacts {
    /// The mTLS peer's URI SAN; `None` without mTLS.
    fn source_principal(&mut self) -> Option<String>;
    /// The downstream IP address (no port).
    fn source_ip(&mut self) -> Option<String>;
    /// Every request header line (name, value) in the host's order, repeated names kept.
    fn headers(&mut self) -> &[(Vec<u8>, Vec<u8>)];
    /// The identity jwt-authn published for this request.
    fn identity(&mut self) -> IdentityFact;
    /// The raw request `:path` (normalized here with `meshward_common::path` before matching).
    fn path(&mut self) -> Option<String>;
    fn method(&mut self) -> Option<String>;
    /// Whether a fact could not be read (a host error, answered above as "no value"): the
    /// request is then charged nothing ([`crate::Verdict::FactUnavailable`]), since a fact that
    /// could not be read must not move it to another (looser) bucket. Plain data never fails.
    fn read_failed(&self) -> bool {
        false
    }
}

/// A bucket a request draws from: a bucket id and the key value (empty for the default bucket).
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

/// Why a request cannot be charged: the adapter refuses it (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchargeable {
    /// The winning descriptor's key has more than [`MAX_KEY_VALUES`] distinct values.
    TooManyValues { descriptor: usize },
    /// A descriptor reads the identity, and the published identity does not parse.
    IdentityUnreadable { descriptor: usize },
}

/// Every bucket a request must take a token from, in charging order: one per distinct value of
/// the first matching descriptor's key, then the default bucket (when no descriptor matched, or
/// `alwaysConsumeDefaultTokenBucket`). Never empty unless the default bucket is off and a
/// descriptor matched with values (then not empty either).
pub fn choose(
    cfg: &Config,
    facts: &mut dyn RequestFacts,
) -> Result<Vec<BucketChoice>, Unchargeable> {
    let mut charges = Vec::new();
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
        let values = key_values(d, facts)
            .map_err(|()| Unchargeable::IdentityUnreadable { descriptor: i })?;
        if values.is_empty() {
            continue;
        }
        if values.len() > MAX_KEY_VALUES {
            return Err(Unchargeable::TooManyValues { descriptor: i });
        }
        // Descriptor ids start at 1 (0 is the default bucket); MAX_DESCRIPTORS keeps this in u16.
        let Some(bucket) = u16::try_from(i).ok().and_then(|i| i.checked_add(1)) else {
            continue;
        };
        charges.extend(
            values
                .into_iter()
                .map(|value| BucketChoice { bucket, value }),
        );
        break;
    }
    if charges.is_empty() || cfg.always_consume_default {
        charges.push(BucketChoice::default_bucket());
    }
    Ok(charges)
}

/// The distinct key values of a descriptor for this request (empty: the key has no value);
/// `Err` when the identity it needs is present but unreadable.
fn key_values(d: &Descriptor, facts: &mut dyn RequestFacts) -> Result<Vec<Vec<u8>>, ()> {
    let one = |v: Option<Vec<u8>>| -> Vec<Vec<u8>> { v.into_iter().collect() };
    Ok(match &d.key {
        KeySpec::SourcePrincipal => one(facts.source_principal().map(String::into_bytes)),
        KeySpec::SourceIp => one(facts
            .source_ip()
            .and_then(|ip| masked_ip(&ip, d.ip_mask))
            .map(String::into_bytes)),
        KeySpec::RequestHeader(name) => header_key_values(facts.headers(), name),
        KeySpec::AuthPrincipal => match facts.identity() {
            IdentityFact::Absent => Vec::new(),
            IdentityFact::Present(id) => vec![id.principal.into_bytes()],
            IdentityFact::Unreadable => return Err(()),
        },
        KeySpec::AuthClaim(path) => {
            let id = match facts.identity() {
                IdentityFact::Absent => return Ok(Vec::new()),
                IdentityFact::Present(id) => id,
                IdentityFact::Unreadable => return Err(()),
            };
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            one(match id.claim_values(&segments).as_slice() {
                [] => None,
                [single] => Some(single.clone().into_bytes()),
                // A list claim keys by the whole list, unambiguously encoded.
                many => serde_json::to_vec(many).ok(),
            })
        }
    })
}

/// The key values of `request.headers[name]`: every line whose name folds to `name`'s (case,
/// `_`/`-`), each split into its comma-separated elements (a backend may join repeated lines or
/// split a list and read any one element), optional whitespace trimmed, duplicates removed, in
/// order of appearance. An empty value or element is the value `""`.
pub fn header_key_values(headers: &[(Vec<u8>, Vec<u8>)], name: &str) -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = Vec::new();
    for (n, v) in headers {
        // CGI's `HTTP_X_API_KEY` is both `x-api-key` and `x_api_key`.
        if !header_name::same(n, name.as_bytes()) {
            continue;
        }
        for element in v.split(|b| *b == b',') {
            let element = trim_ows(element);
            if !values.iter().any(|seen| seen.as_slice() == element) {
                values.push(element.to_vec());
            }
        }
    }
    values
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The key value of an address under a mask: the address itself at full length, else the
/// network (`2001:db8:1:2::/64`). IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a dual-stack
/// listener reports for IPv4 clients) are IPv4 addresses: masking them to /64 would put every
/// IPv4 client in one bucket. `None` for text that is no IP address.
pub fn masked_ip(ip: &str, mask: IpMask) -> Option<String> {
    let ip: IpAddr = ip.parse().ok()?;
    Some(match ip.to_canonical() {
        IpAddr::V4(v4) if mask.v4 >= 32 => v4.to_string(),
        IpAddr::V4(v4) => {
            let bits = u32::from(v4)
                & u32::MAX
                    .checked_shl(32u32.saturating_sub(u32::from(mask.v4)))
                    .unwrap_or(0);
            format!("{}/{}", Ipv4Addr::from(bits), mask.v4)
        }
        IpAddr::V6(v6) if mask.v6 >= 128 => v6.to_string(),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6)
                & u128::MAX
                    .checked_shl(128u32.saturating_sub(u32::from(mask.v6)))
                    .unwrap_or(0);
            format!("{}/{}", Ipv6Addr::from(bits), mask.v6)
        }
    })
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
        pub headers: Vec<(Vec<u8>, Vec<u8>)>,
        pub identity: Option<IdentityFact>,
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
        fn headers(&mut self) -> &[(Vec<u8>, Vec<u8>)] {
            self.calls.push("header");
            &self.headers
        }
        fn identity(&mut self) -> IdentityFact {
            self.calls.push("identity");
            self.identity.clone().unwrap_or(IdentityFact::Absent)
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

    fn identity(claims: serde_json::Value) -> IdentityFact {
        match claims {
            serde_json::Value::Object(m) => {
                IdentityFact::Present(RequestIdentity::from_claims(m).unwrap())
            }
            _ => unreachable!(),
        }
    }

    fn header(name: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
        (name.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    /// The one descriptor bucket a request charges besides the default one.
    fn only(charges: Result<Vec<BucketChoice>, Unchargeable>) -> BucketChoice {
        let mut charges = charges.unwrap();
        assert_eq!(charges.pop(), Some(BucketChoice::default_bucket()));
        assert_eq!(charges.len(), 1, "{charges:?}");
        charges.pop().unwrap()
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
            r#"[{"key":"source.principal"},{"key":"request.headers[x-api-key]"},{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}}]"#,
        );
        let mut f = Facts {
            ip: Some("10.0.0.1".into()),
            ..Default::default()
        };
        assert_eq!(
            only(choose(&c, &mut f)),
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
            only(choose(&c, &mut f)),
            BucketChoice {
                bucket: 1,
                value: b"spiffe://td/ns/a/sa/b".to_vec()
            }
        );
        assert_eq!(f.calls, vec!["principal"]);
        let mut f = Facts {
            headers: vec![header("x-api-key", "k1")],
            ..Default::default()
        };
        assert_eq!(only(choose(&c, &mut f)).bucket, 2);
    }

    #[test]
    fn no_value_anywhere_is_the_default_bucket() {
        let c = cfg(r#"[{"key":"source.principal"},{"key":"request.auth.principal"}]"#);
        let mut f = Facts::default();
        assert_eq!(choose(&c, &mut f), Ok(vec![BucketChoice::default_bucket()]));
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
            only(choose(&c, &mut f)),
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
            only(choose(&c, &mut f)),
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
            only(choose(&c, &mut f)),
            BucketChoice {
                bucket: 3,
                value: b"i/alice".to_vec()
            }
        );
    }

    #[test]
    fn match_restricts_a_descriptor() {
        let c = cfg(
            r#"[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"},"match":{"paths":["/api/*"],"methods":["POST"]}},{"key":"request.headers[x-k]"}]"#,
        );
        let base = || Facts {
            ip: Some("1.2.3.4".into()),
            headers: vec![header("x-k", "v")],
            path: Some("/api/x".into()),
            method: Some("POST".into()),
            ..Default::default()
        };
        assert_eq!(only(choose(&c, &mut base())).bucket, 1);
        assert_eq!(
            only(choose(
                &c,
                &mut Facts {
                    method: Some("GET".into()),
                    ..base()
                }
            ))
            .bucket,
            2
        );
        assert_eq!(
            only(choose(
                &c,
                &mut Facts {
                    path: Some("/other".into()),
                    ..base()
                }
            ))
            .bucket,
            2
        );
        assert_eq!(
            only(choose(
                &c,
                &mut Facts {
                    path: None,
                    ..base()
                }
            ))
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

    fn cfg_with(extra: &str, descriptors: &str) -> Config {
        Config::parse(
            format!(
                r#"{{"tokenBucket":{{"maxTokens":1,"fillInterval":"1s"}},"descriptors":{descriptors}{extra}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn the_default_bucket_is_charged_after_the_descriptor_unless_turned_off() {
        let d = r#"[{"key":"request.headers[x-api-key]"}]"#;
        let keyed = || Facts {
            headers: vec![header("x-api-key", "k1")],
            ..Default::default()
        };
        let key = BucketChoice {
            bucket: 1,
            value: b"k1".to_vec(),
        };
        let on = cfg_with("", d);
        assert!(on.always_consume_default);
        assert_eq!(
            choose(&on, &mut keyed()),
            Ok(vec![key.clone(), BucketChoice::default_bucket()])
        );
        let off = cfg_with(r#","alwaysConsumeDefaultTokenBucket":false"#, d);
        assert_eq!(choose(&off, &mut keyed()), Ok(vec![key]));
        // No descriptor matched: the default bucket either way.
        assert_eq!(
            choose(&off, &mut Facts::default()),
            Ok(vec![BucketChoice::default_bucket()])
        );
    }

    #[test]
    fn every_value_of_a_header_is_charged_under_every_spelling() {
        let c = cfg(r#"[{"key":"request.headers[X-Api-Key]"}]"#);
        let values = |headers: Vec<(Vec<u8>, Vec<u8>)>| {
            let mut f = Facts {
                headers,
                ..Default::default()
            };
            let mut charges = choose(&c, &mut f).unwrap();
            assert_eq!(charges.pop(), Some(BucketChoice::default_bucket()));
            charges
                .into_iter()
                .map(|b| {
                    assert_eq!(b.bucket, 1);
                    String::from_utf8(b.value).unwrap()
                })
                .collect::<Vec<_>>()
        };
        // A decoy first does not hide the drained key.
        assert_eq!(
            values(vec![
                header("x-api-key", "decoy"),
                header("x-api-key", "drained")
            ]),
            ["decoy", "drained"]
        );
        // Spellings a CGI-style backend folds into X_API_KEY.
        for name in [
            "x_api_key",
            "X_API_KEY",
            "x-api_key",
            "X-API-KEY",
            "x_Api-KEY",
        ] {
            assert_eq!(
                values(vec![header("x-other", "o"), header(name, "drained")]),
                ["drained"],
                "{name}"
            );
        }
        assert_eq!(
            values(vec![
                header("x-api-key", "decoy"),
                header("x_api_key", "drained")
            ]),
            ["decoy", "drained"]
        );
        // A comma-joined list: each element, whitespace trimmed, duplicates once.
        assert_eq!(
            values(vec![header("x-api-key", "decoy , drained,\tdecoy")]),
            ["decoy", "drained"]
        );
        // Empty values and elements are the value "".
        assert_eq!(values(vec![header("x-api-key", "")]), [""]);
        assert_eq!(values(vec![header("x-api-key", "a,")]), ["a", ""]);
        // Other names are not the key, not even close ones.
        assert!(values(vec![header("x-api-keys", "k"), header("xapikey", "k")]).is_empty());
    }

    #[test]
    fn too_many_distinct_values_are_refused() {
        let c = cfg(r#"[{"key":"source.principal"},{"key":"request.headers[x-api-key]"}]"#);
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut f = Facts {
            headers: vec![header("x-api-key", &list(MAX_KEY_VALUES))],
            ..Default::default()
        };
        assert_eq!(choose(&c, &mut f).unwrap().len(), MAX_KEY_VALUES + 1);
        let mut f = Facts {
            headers: vec![header("x-api-key", &list(MAX_KEY_VALUES + 1))],
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &mut f),
            Err(Unchargeable::TooManyValues { descriptor: 1 })
        );
        // Repeats of one value are one value.
        let mut f = Facts {
            headers: (0..50).map(|_| header("x-api-key", "same")).collect(),
            ..Default::default()
        };
        assert_eq!(choose(&c, &mut f).unwrap().len(), 2);
    }

    #[test]
    fn an_unreadable_identity_is_refused_not_anonymous() {
        let c = cfg(r#"[{"key":"request.auth.principal"},{"key":"request.headers[x-k]"}]"#);
        let mut f = Facts {
            identity: Some(IdentityFact::Unreadable),
            headers: vec![header("x-k", "v")],
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &mut f),
            Err(Unchargeable::IdentityUnreadable { descriptor: 0 })
        );
        let c = cfg(r#"[{"key":"request.auth.claims[tenant]"}]"#);
        let mut f = Facts {
            identity: Some(IdentityFact::Unreadable),
            ..Default::default()
        };
        assert_eq!(
            choose(&c, &mut f),
            Err(Unchargeable::IdentityUnreadable { descriptor: 0 })
        );
        // A descriptor that wins before any identity key never reads it.
        let c = cfg(r#"[{"key":"request.headers[x-k]"},{"key":"request.auth.principal"}]"#);
        let mut f = Facts {
            identity: Some(IdentityFact::Unreadable),
            headers: vec![header("x-k", "v")],
            ..Default::default()
        };
        assert_eq!(only(choose(&c, &mut f)).bucket, 1);
    }

    #[test]
    fn source_ip_keys_are_masked() {
        let mask = |v4, v6| IpMask { v4, v6 };
        assert_eq!(
            masked_ip("10.1.2.3", IpMask::default()).as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(
            masked_ip("10.1.2.3", mask(24, 128)).as_deref(),
            Some("10.1.2.0/24")
        );
        assert_eq!(
            masked_ip("10.1.2.3", mask(1, 128)).as_deref(),
            Some("0.0.0.0/1")
        );
        assert_eq!(
            masked_ip("2001:db8:1:2:aaaa::1", mask(32, 64)).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            masked_ip("2001:db8:1:2:ffff:ffff:ffff:ffff", mask(32, 64)),
            masked_ip("2001:db8:1:2::9", mask(32, 64))
        );
        assert_ne!(
            masked_ip("2001:db8:1:3::1", mask(32, 64)),
            masked_ip("2001:db8:1:2::1", mask(32, 64))
        );
        // Full length: the canonical text, whatever the spelling.
        assert_eq!(
            masked_ip("2001:DB8:0:0::1", IpMask::default()).as_deref(),
            Some("2001:db8::1")
        );
        // An IPv4 client on a dual-stack listener is an IPv4 address, masked as one.
        assert_eq!(
            masked_ip("::ffff:10.1.2.3", mask(32, 64)).as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(
            masked_ip("::ffff:10.1.2.3", mask(16, 64)).as_deref(),
            Some("10.1.0.0/16")
        );
        assert_eq!(masked_ip("not-an-ip", IpMask::default()), None);
        // Through choose, with the descriptor's mask.
        let c = cfg(
            r#"[{"key":"source.ip","sourceIp":{"trustedAddress":"XFF_NUM_TRUSTED_HOPS","ipv6PrefixLength":64}}]"#,
        );
        let mut f = Facts {
            ip: Some("2001:db8:1:2:3:4:5:6".into()),
            ..Default::default()
        };
        assert_eq!(only(choose(&c, &mut f)).value, b"2001:db8:1:2::/64");
    }
}
