//! Token extraction from the configured locations (Envoy `extractor.cc` semantics):
//! - header: the value must start with the exact, case-sensitive prefix (else the header is
//!   skipped); after it, leading non-JWT characters are skipped and the contiguous
//!   `[A-Za-z0-9._-]` run is the token; every copy of a repeated header is read;
//! - query parameter: exact name, raw (not percent-decoded) value;
//! - cookie: exact name in any `cookie` header.

use crate::config::{Location, LocationKind};

/// One token found in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    /// Index into `Config::locations`.
    pub location: usize,
}

fn is_jwt_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn jwt_run(text: &str) -> Option<&str> {
    let start = text.find(is_jwt_char)?;
    let rest = text.get(start..)?;
    let end = rest.find(|c: char| !is_jwt_char(c)).unwrap_or(rest.len());
    rest.get(..end).filter(|t| !t.is_empty())
}

/// Tokens in location order (then header-copy / parameter order), duplicates of the same token
/// string at the same location collapsed.
pub fn extract(locations: &[Location], headers: &[(String, String)], path: &str) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    let mut push = |token: &str, location: usize| {
        if !found
            .iter()
            .any(|f| f.location == location && f.token == token)
        {
            found.push(Found {
                token: token.to_string(),
                location,
            });
        }
    };
    let query = path
        .split_once('?')
        .map(|(_, q)| q.split_once('#').map_or(q, |(q, _)| q));
    for (i, location) in locations.iter().enumerate() {
        match &location.kind {
            LocationKind::Header { name, prefix } => {
                for (_, value) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    if let Some(token) = value.strip_prefix(prefix.as_str()).and_then(jwt_run) {
                        push(token, i);
                    }
                }
            }
            LocationKind::Param(param) => {
                for pair in query.into_iter().flat_map(|q| q.split('&')) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if key == param {
                        if let Some(token) = jwt_run(value) {
                            push(token, i);
                        }
                    }
                }
            }
            LocationKind::Cookie(cookie) => {
                for (_, value) in headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
                {
                    for pair in value.split(';') {
                        let Some((key, value)) = pair.trim().split_once('=') else {
                            continue;
                        };
                        if key == cookie {
                            let value = value.trim_matches('"');
                            if let Some(token) = jwt_run(value) {
                                push(token, i);
                            }
                        }
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(kind: LocationKind) -> Location {
        Location {
            kind,
            rules: vec![0],
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn bearer() -> Location {
        loc(LocationKind::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        })
    }

    #[test]
    fn header_prefix_is_exact() {
        let locs = [bearer()];
        let tokens = |v: &str| extract(&locs, &h(&[("authorization", v)]), "/");
        assert_eq!(tokens("Bearer a.b.c")[0].token, "a.b.c");
        assert!(
            tokens("bearer a.b.c").is_empty(),
            "prefix is case-sensitive"
        );
        assert!(tokens("Basic a.b.c").is_empty());
        assert!(tokens("Bearer").is_empty());
        assert!(tokens("Bearer ").is_empty());
        assert_eq!(tokens("Bearer \"a.b.c\" trailing")[0].token, "a.b.c");
        assert_eq!(tokens("Bearer a.b.c,x.y.z")[0].token, "a.b.c");
        assert_eq!(
            extract(&locs, &h(&[("Authorization", "Bearer t")]), "/")[0].token,
            "t"
        );
    }

    #[test]
    fn repeated_headers_each_count() {
        let locs = [bearer()];
        let found = extract(
            &locs,
            &h(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            "/",
        );
        assert_eq!(
            found.iter().map(|f| f.token.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let same = extract(
            &locs,
            &h(&[("authorization", "Bearer a"), ("authorization", "Bearer a")]),
            "/",
        );
        assert_eq!(same.len(), 1);
    }

    #[test]
    fn params_and_cookies() {
        let locs = [
            bearer(),
            loc(LocationKind::Param("access_token".into())),
            loc(LocationKind::Cookie("session".into())),
        ];
        let found = extract(
            &locs,
            &h(&[
                ("cookie", "a=1; session=\"c.c.c\"; other=x"),
                ("authorization", "Bearer a.a.a"),
            ]),
            "/p?x=1&access_token=b.b.b&access_tokenx=z#frag",
        );
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.token.as_str(), f.location))
            .collect();
        assert_eq!(got, [("a.a.a", 0), ("b.b.b", 1), ("c.c.c", 2)]);
        assert!(extract(&locs, &[], "/?access_token=").is_empty());
        assert!(extract(&locs, &[], "/#access_token=x").is_empty());
        assert!(extract(&locs, &h(&[("cookie", "sessionx=a; xsession=b")]), "/").is_empty());
    }
}
