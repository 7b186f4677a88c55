//! The per-field matchers spiffe-authz needs on top of `meshward_common::matchers`: principals
//! (validated as SPIFFE IDs), request principals (`iss/sub`), hosts (`host:port`), ports, paths
//! (with `{*}`/`{**}` templates) and IP blocks. Each is compiled once, at configure time.

use std::net::IpAddr;
use std::str::FromStr;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use meshward_common::identity::RequestIdentity;
use meshward_common::matchers::{MatchKind, MatchOptions, StringMatcher};
use meshward_common::path::PathParameters;
use meshward_common::spiffe::{SpiffeId, SCHEME_PREFIX};
use meshward_common::ConfigError;

/// Istio's principal forms on the peer's SPIFFE ID: `td/ns/x/sa/y` means `spiffe://td/ns/x/sa/y`.
pub fn principal(field: &str, pattern: &str) -> Result<StringMatcher, ConfigError> {
    if pattern.starts_with(SCHEME_PREFIX) {
        return Err(ConfigError::new(
            field,
            format!("`{pattern}`: write principals without `spiffe://` (Istio adds it)"),
        ));
    }
    let matcher = StringMatcher::parse(field, pattern, &MatchOptions::new().prefix(SCHEME_PREFIX))?;
    // An exact principal that is not a valid SPIFFE ID can never equal a verified peer: that is a
    // typo (say an upper-case trust domain), not a policy.
    if let MatchKind::Exact(id) = matcher.kind() {
        if let Err(e) = SpiffeId::parse(id) {
            return Err(ConfigError::new(
                field,
                format!("`{pattern}` is not a valid SPIFFE ID ({e}), so no peer could match it"),
            ));
        }
    }
    Ok(matcher)
}

/// A `requestPrincipals` entry. As in Istio, the pattern is split at its last `/` into an issuer
/// and a subject pattern, each matched on its own against the verified token's `iss` and `sub`
/// (so an issuer `https://a/b` with subject `c` is not the issuer `https://a` with subject `b/c`).
/// `*` alone needs both to be non-empty.
#[derive(Debug, Clone)]
pub struct RequestPrincipal {
    iss: StringMatcher,
    sub: StringMatcher,
}

impl RequestPrincipal {
    pub fn parse(field: &str, pattern: &str) -> Result<Self, ConfigError> {
        let opts = MatchOptions::new();
        if pattern == "*" {
            let any = StringMatcher::parse(field, "*", &opts)?;
            return Ok(Self {
                iss: any.clone(),
                sub: any,
            });
        }
        let Some((iss, sub)) = pattern.rsplit_once('/') else {
            return Err(ConfigError::new(
                field,
                format!("`{pattern}`: a request principal is `<issuer>/<subject>` (or `*`)"),
            ));
        };
        let part = |p: &str, what: &str| {
            StringMatcher::parse(field, p, &opts).map_err(|e| {
                ConfigError::new(
                    field,
                    format!("`{pattern}`: the {what} part `{p}`: {}", e.reason),
                )
            })
        };
        Ok(Self {
            iss: part(iss, "issuer")?,
            sub: part(sub, "subject")?,
        })
    }

    pub fn matches(&self, identity: &RequestIdentity) -> bool {
        self.iss.matches(&identity.iss) && self.sub.matches(identity.sub.as_deref().unwrap_or(""))
    }
}

/// `hosts`: ASCII-case-insensitive on `:authority`. A pattern also matches the authority without
/// its port (`example.com` matches `example.com:8080`, Istio's advice after CVE-2021-39155) and
/// without one trailing dot (`example.com.` is the same name in DNS).
pub fn host(field: &str, pattern: &str) -> Result<StringMatcher, ConfigError> {
    StringMatcher::parse(field, pattern, &MatchOptions::new().ignore_case())
}

/// The spellings of one authority a host pattern is tried against.
pub fn host_forms(authority: &str) -> [&str; 3] {
    let without_port = strip_port(authority);
    let without_dot = without_port.strip_suffix('.').unwrap_or(without_port);
    [authority, without_port, without_dot]
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // `[v6]` or `[v6]:port`: the port can only follow the bracket.
        return match authority.find(']') {
            Some(end) => authority.get(..end.saturating_add(1)).unwrap_or(authority),
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some((host, "")) => host,
        _ => authority,
    }
}

/// `ports` / `destination.port` values: a decimal port 1–65535.
pub fn port(field: &str, value: &str) -> Result<u16, ConfigError> {
    match value.parse::<u16>() {
        Ok(p) if p > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(ConfigError::new(
            field,
            format!("`{value}` is not a port number (1-65535)"),
        )),
    }
}

/// `ipBlocks` and `source.ip`-style values: an address (`10.0.0.1`) or a CIDR (`10.0.0.0/8`).
pub fn ip_block(field: &str, value: &str) -> Result<IpNet, ConfigError> {
    if let Ok(net) = IpNet::from_str(value) {
        return Ok(net);
    }
    match IpAddr::from_str(value) {
        Ok(addr) => Ok(IpNet::from(addr)),
        Err(_) => Err(ConfigError::new(
            field,
            format!("`{value}` is not an IP address or CIDR block"),
        )),
    }
}

/// Whether `ip` is in any of `blocks`; an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
/// dual-stack listener reports for IPv4 clients) counts as its IPv4 address.
pub fn ip_in(blocks: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    blocks.iter().any(|b| b.contains(&ip))
}

/// `paths` / `notPaths`: Istio's string forms, or a path template with `{*}` (exactly one
/// non-empty segment) and `{**}` (the rest of the path, possibly empty; only as the last segment).
/// Matched against the normalized path.
#[derive(Debug, Clone, Default)]
pub struct PathSet {
    strings: Vec<StringMatcher>,
    templates: Option<GlobSet>,
}

impl PathSet {
    pub fn parse(
        field: &str,
        patterns: &[String],
        params: PathParameters,
    ) -> Result<Self, ConfigError> {
        let mut strings = Vec::new();
        let mut globs = GlobSetBuilder::new();
        let mut any_template = false;
        for (i, pattern) in patterns.iter().enumerate() {
            let field = format!("{field}[{i}]");
            if pattern.contains('{') || pattern.contains('}') {
                globs.add(template_glob(&field, pattern, params)?);
                any_template = true;
                continue;
            }
            let matcher = StringMatcher::parse(&field, pattern, &MatchOptions::new())?;
            match matcher.kind() {
                MatchKind::Exact(p) | MatchKind::Prefix(p) => {
                    check_normalized(&field, pattern, p, params)?
                }
                MatchKind::Suffix { suffix, .. } => check_suffix(&field, pattern, suffix)?,
                MatchKind::Presence { .. } => {}
            }
            strings.push(matcher);
        }
        let templates = if any_template {
            Some(
                globs
                    .build()
                    .map_err(|e| ConfigError::new(field, e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Self { strings, templates })
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty() && self.templates.is_none()
    }

    pub fn matches(&self, path: &str) -> bool {
        self.strings.iter().any(|m| m.matches(path))
            || self.templates.as_ref().is_some_and(|t| t.is_match(path))
    }
}

/// Requests are matched after normalization, so a pattern that normalization would change can
/// never match (`/a/../b`, `/a?x`, `/%61`): tell the author instead of silently missing.
fn check_normalized(
    field: &str,
    pattern: &str,
    literal: &str,
    params: PathParameters,
) -> Result<(), ConfigError> {
    if !literal.starts_with('/') {
        return Err(ConfigError::new(
            field,
            format!("`{pattern}`: a path must start with `/`"),
        ));
    }
    match meshward_common::path::normalize_with(literal, params) {
        // `path()` excludes any `?query`/`#fragment`, which a normalized path never contains.
        Ok(n) if n.path() == literal => Ok(()),
        Ok(n) => Err(ConfigError::new(
            field,
            format!(
                "`{pattern}` is not a normalized path, requests are matched after normalization \
                 (write `{}`)",
                n.path()
            ),
        )),
        Err(e) => Err(ConfigError::new(
            field,
            format!("`{pattern}`: {e}; no request can match it"),
        )),
    }
}

fn check_suffix(field: &str, pattern: &str, suffix: &str) -> Result<(), ConfigError> {
    let bad = suffix.contains(['?', '#', '\\', ';']) || suffix.contains("//");
    if bad {
        return Err(ConfigError::new(
            field,
            format!("`{pattern}`: `?`, `#`, `\\`, `;` and `//` never occur in a normalized path"),
        ));
    }
    Ok(())
}

/// A `request.headers[:path]` value is matched against the normalized path and against the
/// normalized path with its `?query`: an exact or prefix pattern whose path part (before any `?`)
/// normalization would change can never match, like such a `paths` entry.
pub fn check_path_value(
    field: &str,
    matcher: &StringMatcher,
    params: PathParameters,
) -> Result<(), ConfigError> {
    match matcher.kind() {
        MatchKind::Exact(p) | MatchKind::Prefix(p) => {
            let path_part = p.split('?').next().unwrap_or_default();
            if !p.starts_with('/') {
                return Err(ConfigError::new(
                    field,
                    format!("`{p}`: a `:path` value must start with `/`"),
                ));
            }
            check_normalized(field, p, path_part, params)
        }
        MatchKind::Suffix { .. } | MatchKind::Presence { .. } => Ok(()),
    }
}

fn template_glob(
    field: &str,
    pattern: &str,
    params: PathParameters,
) -> Result<globset::Glob, ConfigError> {
    let err = |why: &str| ConfigError::new(field, format!("`{pattern}`: {why}"));
    if !pattern.starts_with('/') {
        return Err(err("a path template must start with `/`"));
    }
    let segments: Vec<&str> = pattern.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut glob = String::with_capacity(pattern.len().saturating_mul(2));
    for (i, segment) in segments.iter().enumerate() {
        glob.push('/');
        match *segment {
            "{*}" => glob.push_str("?*"),
            "{**}" if i == last => glob.push_str("**"),
            "{**}" => return Err(err("`{**}` must be the last segment")),
            s if s.contains(['{', '}', '*']) => {
                return Err(err("`{*}` and `{**}` must each be a whole segment, and no other `*`, `{` or `}` may appear"))
            }
            s => {
                check_normalized(field, pattern, &format!("/{s}"), params)?;
                glob.push_str(&globset::escape(s));
            }
        }
    }
    if pattern.contains("//") {
        return Err(err("`//` never occurs in a normalized path"));
    }
    GlobBuilder::new(&glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| err(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn principals_follow_istio_and_must_be_spiffe_ids() {
        let p = principal("f", "cluster.local/ns/a/sa/b").unwrap();
        assert!(p.matches("spiffe://cluster.local/ns/a/sa/b"));
        assert!(!p.matches("spiffe://cluster.local/ns/a/sa/bb"));
        let prefix = principal("f", "cluster.local/ns/a/*").unwrap();
        assert!(prefix.matches("spiffe://cluster.local/ns/a/sa/x"));
        assert!(!prefix.matches("spiffe://cluster.local/ns/ab/sa/x"));
        let suffix = principal("f", "*/sa/admin").unwrap();
        assert!(suffix.matches("spiffe://td/ns/x/sa/admin"));
        assert!(!suffix.matches("spiffe://td/ns/x/sa/xadmin/y"));
        assert!(principal("f", "*").unwrap().matches("spiffe://td/x"));

        for bad in [
            "Cluster.local/ns/a/sa/b",
            "cluster.local/ns//sa/b",
            "td/ns/a/",
            "td:80/x",
        ] {
            let e =
                principal("policies[0].rules[0].from[0].source.principals[1]", bad).unwrap_err();
            assert_eq!(e.field, "policies[0].rules[0].from[0].source.principals[1]");
            assert!(e.reason.contains("not a valid SPIFFE ID"), "{bad}: {e}");
        }
        assert!(principal("f", "spiffe://td/x")
            .unwrap_err()
            .reason
            .contains("without `spiffe://`"));
        assert!(principal("f", "a*b").unwrap_err().reason.contains("a*b"));
    }

    fn identity(iss: &str, sub: Option<&str>) -> RequestIdentity {
        let mut claims = json!({"iss": iss});
        if let Some(s) = sub {
            claims["sub"] = json!(s);
        }
        RequestIdentity::from_claims(claims.as_object().unwrap().clone()).unwrap()
    }

    #[test]
    fn request_principals_split_at_the_last_slash() {
        let rp = |p: &str| RequestPrincipal::parse("f", p).unwrap();
        let alice = identity("https://idp.example.com", Some("alice"));
        assert!(rp("https://idp.example.com/alice").matches(&alice));
        assert!(!rp("https://idp.example.com/bob").matches(&alice));
        assert!(rp("https://idp.example.com/*").matches(&alice));
        assert!(rp("*/alice").matches(&alice));
        assert!(rp("https://*/alice").matches(&alice));
        assert!(rp("https://idp.example.com/al*").matches(&alice));
        assert!(rp("*").matches(&alice));
        // No subject: `*` and `iss/*` need one.
        let nosub = identity("https://idp.example.com", None);
        assert!(!rp("*").matches(&nosub));
        assert!(!rp("https://idp.example.com/*").matches(&nosub));
        // The issuer/subject split is not the joined string.
        let tricky = identity("https://idp.example.com/alice", Some("x"));
        assert!(!rp("https://idp.example.com/alice/x")
            .matches(&identity("https://idp.example.com", Some("alice/x"))));
        assert!(rp("https://idp.example.com/alice/x").matches(&tricky));

        assert!(RequestPrincipal::parse("f", "noslash").is_err());
        assert!(RequestPrincipal::parse("f", "iss/a*b").is_err());
        assert!(RequestPrincipal::parse("f", "iss/").is_err());
    }

    #[test]
    fn hosts_ignore_case_port_and_trailing_dot() {
        let h = host("f", "example.com").unwrap();
        let any = |a: &str| host_forms(a).iter().any(|f| h.matches(f));
        assert!(any("example.com"));
        assert!(any("EXAMPLE.Com"));
        assert!(any("example.com:8080"));
        assert!(any("example.com."));
        assert!(any("example.com.:80"));
        assert!(any("example.com:"));
        assert!(!any("example.com.evil"));
        assert!(!any("example.com:80x"));
        assert!(!any("xexample.com"));
        assert_eq!(host_forms("[::1]:80"), ["[::1]:80", "[::1]", "[::1]"]);
        assert_eq!(host_forms("[::1]"), ["[::1]", "[::1]", "[::1]"]);
        let with_port = host("f", "example.com:8080").unwrap();
        assert!(host_forms("example.com:8080")
            .iter()
            .any(|f| with_port.matches(f)));
        assert!(!host_forms("example.com")
            .iter()
            .any(|f| with_port.matches(f)));
        let suffix = host("f", "*.example.com").unwrap();
        assert!(host_forms("API.example.com:443")
            .iter()
            .any(|f| suffix.matches(f)));
    }

    #[test]
    fn ports_and_ip_blocks() {
        assert_eq!(port("f", "8080").unwrap(), 8080);
        for bad in ["0", "65536", "-1", "+80", "80a", "", " 80"] {
            assert!(port("f", bad).is_err(), "{bad}");
        }
        let blocks = vec![
            ip_block("f", "10.0.0.0/8").unwrap(),
            ip_block("f", "192.168.1.7").unwrap(),
        ];
        assert!(ip_in(&blocks, "10.1.2.3".parse().unwrap()));
        assert!(ip_in(&blocks, "192.168.1.7".parse().unwrap()));
        assert!(!ip_in(&blocks, "192.168.1.8".parse().unwrap()));
        assert!(ip_in(&blocks, "::ffff:10.9.9.9".parse().unwrap()));
        let v6 = vec![ip_block("f", "2001:db8::/32").unwrap()];
        assert!(ip_in(&v6, "2001:db8::1".parse().unwrap()));
        assert!(!ip_in(&v6, "10.0.0.1".parse().unwrap()));
        // Host bits set are accepted, as Envoy's CidrRange masks them.
        assert!(ip_in(
            &[ip_block("f", "10.1.2.3/8").unwrap()],
            "10.200.0.1".parse().unwrap()
        ));
        for bad in ["10.0.0.0/33", "10.0.0", "example.com", "", "10.0.0.1/"] {
            assert!(ip_block("f", bad).is_err(), "{bad}");
        }
    }

    fn paths(p: &[&str]) -> PathSet {
        PathSet::parse(
            "paths",
            &p.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            PathParameters::Reject,
        )
        .unwrap()
    }

    #[test]
    fn path_string_forms() {
        let exact = paths(&["/admin"]);
        assert!(exact.matches("/admin"));
        assert!(!exact.matches("/admin/"));
        assert!(!exact.matches("/ADMIN"));
        let prefix = paths(&["/admin/*"]);
        assert!(prefix.matches("/admin/"));
        assert!(prefix.matches("/admin/x/y"));
        assert!(!prefix.matches("/admin"));
        let suffix = paths(&["*.php"]);
        assert!(suffix.matches("/a/b.php"));
        assert!(!suffix.matches("/a/b.phps"));
        assert!(paths(&["*"]).matches("/"));
    }

    #[test]
    fn path_templates() {
        let one = paths(&["/api/{*}/items"]);
        assert!(one.matches("/api/v1/items"));
        assert!(!one.matches("/api/v1/x/items"));
        assert!(!one.matches("/api//items"));
        assert!(!one.matches("/api/items"));
        let tail = paths(&["/api/{**}"]);
        assert!(tail.matches("/api/v1"));
        assert!(tail.matches("/api/v1/x/y"));
        assert!(tail.matches("/api/"));
        assert!(!tail.matches("/api"));
        assert!(!tail.matches("/apix/y"));
        let mixed = paths(&["/users/{*}/{**}", "/health"]);
        assert!(mixed.matches("/users/7/orders/1"));
        assert!(mixed.matches("/health"));
        assert!(!mixed.matches("/users/7"));
        // Glob syntax in literal segments is literal.
        let lit = paths(&["/a[b]/{*}"]);
        assert!(lit.matches("/a[b]/x"));
        assert!(!lit.matches("/ab/x"));
    }

    #[test]
    fn bad_paths_are_config_errors() {
        let bad = |p: &str| {
            PathSet::parse(
                "policies[0].rules[0].to[0].operation.paths",
                &[p.to_string()],
                PathParameters::Reject,
            )
            .unwrap_err()
        };
        for p in [
            "/a/{**}/b",
            "/a{*}",
            "/a/{*}x",
            "/a/{x}",
            "a/{*}",
            "/a/*/{*}",
            "/a//{*}",
        ] {
            let e = bad(p);
            assert_eq!(
                e.field, "policies[0].rules[0].to[0].operation.paths[0]",
                "{p}"
            );
        }
        for p in [
            "admin", "/a/../b", "/a?x", "/%61", "/a//b", "/a%2Fb", "a*b", "*?x", "/a#f", "/a;b",
            "/a%3Bb", "*;x", "/a;x/{*}",
        ] {
            assert!(
                PathSet::parse("p", &[p.to_string()], PathParameters::Reject).is_err(),
                "{p}"
            );
        }
        assert!(bad("/a/../b").reason.contains("write `/b`"));
        // A pattern with a parameter can never match either way: refused, it says what to write.
        assert!(bad("/a;b").reason.contains("path parameter"));
        let strip = PathSet::parse("p", &["/a;b".to_string()], PathParameters::Strip).unwrap_err();
        assert!(strip.reason.contains("write `/a`"), "{strip}");
    }
}
