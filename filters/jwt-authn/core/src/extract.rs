//! Token extraction from the configured locations.
//!
//! The rule (docs/jwt-authn.md, "Token locations"): **a configured location that is present must
//! yield exactly one clean token, or the request is refused (401)**. "Present" is judged the way
//! the most permissive backend behind the proxy would judge it, because a token this filter does
//! not see but the backend does is an unverified identity reaching the backend:
//!
//! - header: every header whose name equals the configured one after folding case and `_`/`-`
//!   (CGI-style servers read `x_token` as `x-token`) is a copy of the location. The location is
//!   present when a copy contains the prefix (Envoy looks for it anywhere in the value) or a
//!   comma-separated element of a copy starts with the prefix's scheme word in any case
//!   (`bearer x`, `Bearer  x`); with an empty prefix every copy is present. Clean: exactly one
//!   copy, spelled as configured (case aside), whose value is the exact prefix followed by one
//!   run of `[A-Za-z0-9._-]` and nothing else.
//! - query parameter: every `&`- or `;`-separated pair whose name, percent-decoded (as Envoy
//!   does), folded to lower case and with `.`, ` `, `+`, `[`, `-` read as `_` (PHP's and form
//!   decoders' spellings), equals the configured name folded the same way. Clean: exactly one
//!   such pair, whose decoded name is the configured name and whose decoded value is a token.
//! - cookie: every `;`- or `,`-separated pair of every `cookie` header whose name, folded like a
//!   parameter name, equals the configured one. Clean: exactly one, named exactly, value a
//!   token (optionally in one pair of double quotes).
//!
//! A location that is absent yields nothing (Envoy: `Authorization: Basic …` is not a bearer
//! token). Several locations may each yield a token; [`crate::engine`] then requires them to be
//! one and the same token (one request, one identity).

use std::borrow::Cow;

use crate::config::{Location, LocationKind};
use crate::status::AuthError;

/// One token found in the request: borrowed from the header it came in, owned when decoding
/// made it (a percent-encoded parameter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    pub token: Cow<'a, str>,
    /// Index into `Config::locations`.
    pub location: usize,
}

const fn is_jwt_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// [`is_jwt_byte`] for every byte value, as a table: every byte of every token of every request
/// is checked, and one lookup costs less than the four comparisons (in wasm).
// Evaluated at compile time: an index out of bounds would fail the build, not panic.
#[allow(clippy::indexing_slicing)]
static JWT_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_jwt_byte(b as u8);
        b += 1;
    }
    table
};

/// `text` when it is one non-empty run of JWT characters, nothing else.
fn clean_token(text: &str) -> Option<&str> {
    let clean = text
        .bytes()
        .all(|b| JWT_BYTES.get(usize::from(b)).copied().unwrap_or(false));
    (!text.is_empty() && clean).then_some(text)
}

/// Header names as a CGI-style backend reads them: case-insensitive, `_` ≡ `-`.
pub use meshward_common::header_name::fold as fold_header_name;
use meshward_common::header_name::same as same_header;

/// One byte of a parameter or cookie name as [`fold_param_name`] maps it, for a name with
/// nothing to decode and no bracket (UTF-8 sequences are left alone, as there).
fn fold_param_byte(b: u8) -> u8 {
    match b {
        b'.' | b' ' | b'+' | b'[' | b'-' => b'_',
        b => b.to_ascii_lowercase(),
    }
}

/// Whether parameter or cookie name `key` folds to `folded` (already folded): byte by byte,
/// without a folded copy, unless `key` has something to decode or a bracket (every query
/// parameter of every request comes through here).
fn same_param_name(key: &str, folded: &str) -> bool {
    if key.contains(['%', '[']) {
        return fold_param_name(key) == folded;
    }
    key.len() == folded.len()
        && key
            .bytes()
            .zip(folded.bytes())
            .all(|(k, f)| fold_param_byte(k) == f)
}

/// Percent-decode once (either hex case); malformed escapes stay as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|h| char::from(*h).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|l| char::from(*l).to_digit(16));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(((hi << 4) | lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parameter or cookie name as the most permissive decoder reads it: percent-decoded until it
/// no longer changes (bounded), without a PHP array suffix (`name[]`, `name[0]`), lower case, and
/// `.`, ` `, `+`, `[`, `-` as `_`.
fn fold_param_name(name: &str) -> String {
    let mut decoded = name.to_string();
    // Without a `%` there is nothing to decode (the common case: every query parameter of every
    // request is folded).
    for _ in 0..if name.contains('%') { 3 } else { 0 } {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    // PHP reads `name[...]=v` as an array under `name`: the part before a bracketed suffix is
    // the name it binds.
    if let Some((head, tail)) = decoded.split_once('[') {
        if !head.is_empty() && tail.contains(']') {
            decoded = head.to_string();
        }
    }
    decoded
        .chars()
        .map(|c| match c {
            '.' | ' ' | '+' | '[' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The prefix's scheme word (`Bearer` of `Bearer `), or `None` for a prefix of only spaces.
fn scheme_word(prefix: &str) -> Option<&str> {
    let word = prefix.trim();
    (!word.is_empty()).then_some(word)
}

fn starts_with_ignore_case(text: &str, start: &str) -> bool {
    text.get(..start.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(start))
}

/// Whether a header value carries this location's token in some spelling.
fn header_present(value: &str, prefix: &str) -> bool {
    let Some(word) = scheme_word(prefix) else {
        return true;
    };
    value.contains(prefix)
        || value
            .split(',')
            .any(|part| starts_with_ignore_case(part.trim_start(), word))
}

/// The token of a clean header value: exactly `prefix` + token (a prefix without a trailing
/// space may be followed by one).
fn header_token<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let value = value.trim_matches([' ', '\t']);
    let rest = value.strip_prefix(prefix)?;
    let rest = if !prefix.is_empty() && !prefix.ends_with(' ') {
        rest.strip_prefix(' ').unwrap_or(rest)
    } else {
        rest
    };
    clean_token(rest)
}

fn query_of(path: &str) -> &str {
    path.split_once('?')
        .map_or("", |(_, q)| q.split_once('#').map_or(q, |(q, _)| q))
}

/// Tokens in location order, at most one per location. `Err` when a present location does not
/// yield exactly one clean token.
pub fn extract<'a>(
    locations: &[Location],
    headers: &[(&'a str, &'a str)],
    path: &'a str,
) -> Result<Vec<Found<'a>>, AuthError> {
    let mut found = Vec::new();
    for (i, location) in locations.iter().enumerate() {
        let token = match &location.kind {
            LocationKind::Header { name, prefix } => header_location(headers, name, prefix)?,
            LocationKind::Param(param) => param_location(path, param)?,
            LocationKind::Cookie(cookie) => cookie_location(headers, cookie)?,
        };
        if let Some(token) = token {
            found.push(Found { token, location: i });
        }
    }
    Ok(found)
}

fn header_location<'a>(
    headers: &[(&'a str, &'a str)],
    name: &str,
    prefix: &str,
) -> Result<Option<Cow<'a, str>>, AuthError> {
    // Compared folded byte by byte, without a folded copy of any header name.
    let is_copy = |(n, _): &&(&'a str, &'a str)| {
        !n.starts_with(':') && same_header(n.as_bytes(), name.as_bytes())
    };
    if !headers
        .iter()
        .filter(is_copy)
        .any(|(_, v)| header_present(v, prefix))
    {
        return Ok(None);
    }
    let mut copies = headers.iter().filter(is_copy);
    match (copies.next(), copies.next()) {
        (Some((n, v)), None) if n.eq_ignore_ascii_case(name) => header_token(v, prefix)
            .map(|t| Some(Cow::Borrowed(t)))
            .ok_or(AuthError::BadFormat),
        _ => Err(AuthError::BadFormat),
    }
}

fn param_location<'a>(path: &'a str, param: &str) -> Result<Option<Cow<'a, str>>, AuthError> {
    let folded = fold_param_name(param);
    let matches: Vec<(&str, &str)> = query_of(path)
        .split(['&', ';'])
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(key, _)| same_param_name(key, &folded))
        .collect();
    match matches.as_slice() {
        [] => Ok(None),
        [(key, value)] if percent_decode(key) == param => clean_token(&percent_decode(value))
            .map(|t| Some(Cow::Owned(t.to_string())))
            .ok_or(AuthError::BadFormat),
        _ => Err(AuthError::BadFormat),
    }
}

fn cookie_location<'a>(
    headers: &[(&'a str, &'a str)],
    cookie: &str,
) -> Result<Option<Cow<'a, str>>, AuthError> {
    let folded = fold_param_name(cookie);
    let matches: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(n, _)| same_header(n.as_bytes(), b"cookie"))
        .flat_map(|(_, v)| v.split([';', ',']))
        .map(|pair| {
            let pair = pair.trim_matches([' ', '\t']);
            pair.split_once('=').unwrap_or((pair, ""))
        })
        .filter(|(key, _)| same_param_name(key.trim_end(), &folded))
        .collect();
    match matches.as_slice() {
        [] => Ok(None),
        [(key, value)] if *key == cookie => {
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            clean_token(value)
                .map(|t| Some(Cow::Borrowed(t)))
                .ok_or(AuthError::BadFormat)
        }
        _ => Err(AuthError::BadFormat),
    }
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

    fn bearer() -> Location {
        loc(LocationKind::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        })
    }

    fn tokens(
        locs: &[Location],
        headers: &[(&str, &str)],
        path: &str,
    ) -> Result<Vec<String>, AuthError> {
        extract(locs, headers, path).map(|f| f.into_iter().map(|f| f.token.into_owned()).collect())
    }

    #[test]
    fn a_clean_bearer_header_yields_its_token() {
        let locs = [bearer()];
        assert_eq!(
            tokens(&locs, &[("authorization", "Bearer a.b.c")], "/"),
            Ok(vec!["a.b.c".into()])
        );
        assert_eq!(
            tokens(&locs, &[("Authorization", "Bearer t")], "/"),
            Ok(vec!["t".into()])
        );
        // Not a bearer credential at all: absent, as in Envoy.
        assert_eq!(
            tokens(&locs, &[("authorization", "Basic YWxhZGRpbjpvcGVu")], "/"),
            Ok(vec![])
        );
        assert_eq!(
            tokens(&locs, &[("authorization", "Negotiate abc")], "/"),
            Ok(vec![])
        );
        assert_eq!(tokens(&locs, &[], "/"), Ok(vec![]));
    }

    #[test]
    fn a_present_header_without_exactly_one_clean_token_is_refused() {
        let locs = [bearer()];
        for value in [
            "Bearer a.b.c junk",
            "Bearer a.b.c,x.y.z",
            "Bearer \"a.b.c\"",
            "Bearer  a.b.c",
            "bearer a.b.c",
            "BEARER a.b.c",
            "Bearer",
            "Bearer ",
            "Bearer a.b.c!",
            "Bearer a+b/c",
            "Basic x, Bearer a.b.c",
            "Basic x,bearer a.b.c",
            "x Bearer a.b.c",
            "Bearer a.b.c\u{fffd}",
        ] {
            assert_eq!(
                tokens(&locs, &[("authorization", value)], "/"),
                Err(AuthError::BadFormat),
                "{value:?}"
            );
        }
    }

    #[test]
    fn repeated_or_respelled_headers_are_refused() {
        let locs = [bearer()];
        let twice = [("authorization", "Bearer a"), ("authorization", "Bearer a")];
        assert_eq!(tokens(&locs, &twice, "/"), Err(AuthError::BadFormat));
        let two = [("authorization", "Bearer a"), ("authorization", "Bearer b")];
        assert_eq!(tokens(&locs, &two, "/"), Err(AuthError::BadFormat));
        let decoy = [("authorization", "Basic x"), ("authorization", "Bearer b")];
        assert_eq!(tokens(&locs, &decoy, "/"), Err(AuthError::BadFormat));
        let custom = [loc(LocationKind::Header {
            name: "x-partner-token".into(),
            prefix: String::new(),
        })];
        assert_eq!(
            tokens(&custom, &[("x-partner-token", "a.b.c")], "/"),
            Ok(vec!["a.b.c".into()])
        );
        for name in ["x_partner_token", "X_PARTNER_TOKEN", "x-partner_token"] {
            assert_eq!(
                tokens(&custom, &[(name, "a.b.c")], "/"),
                Err(AuthError::BadFormat),
                "{name}"
            );
            assert_eq!(
                tokens(
                    &custom,
                    &[("x-partner-token", "a.b.c"), (name, "f.o.rged")],
                    "/"
                ),
                Err(AuthError::BadFormat),
                "{name}"
            );
        }
        assert_eq!(
            tokens(&custom, &[("x-partner-token", "")], "/"),
            Err(AuthError::BadFormat)
        );
    }

    #[test]
    fn query_names_and_values_are_decoded_and_must_be_single() {
        let locs = [loc(LocationKind::Param("access_token".into()))];
        assert_eq!(
            tokens(&locs, &[], "/p?x=1&access_token=b.b.b&access_tokenx=z#f"),
            Ok(vec!["b.b.b".into()])
        );
        assert_eq!(
            tokens(&locs, &[], "/p?access_token=%61.b.c"),
            Ok(vec!["a.b.c".into()])
        );
        assert_eq!(tokens(&locs, &[], "/p?x=access_token"), Ok(vec![]));
        assert_eq!(tokens(&locs, &[], "/#access_token=x"), Ok(vec![]));
        // Decoded names are the configured name, as in Envoy: the token is read (and verified).
        for path in [
            "/?acc%65ss_token=f.o.o",
            "/?access%5Ftoken=f.o.o",
            "/?%61ccess_token=f.o.o",
        ] {
            assert_eq!(tokens(&locs, &[], path), Ok(vec!["f.o.o".into()]), "{path}");
        }
        for path in [
            "/?ACC%45SS_TOKEN=f.o.o",
            "/?access%255Ftoken=f.o.o",
            "/?Access_Token=f.o.o",
            "/?access.token=f.o.o",
            "/?access-token=f.o.o",
            "/?access+token=f.o.o",
            "/?access%20token=f.o.o",
            "/?access[token=f.o.o",
            "/?access_token[]=f.o.o",
            "/?access_token%5B0%5D=f.o.o",
            "/?access_token=a.b.c&access_token=a.b.c",
            "/?access_token=a.b.c&access_token=d.e.f",
            "/?x=1;access_token=a.b.c&access_token=d.e.f",
            "/?access_token=",
            "/?access_token",
            "/?access_token=a.b.c%20x",
            "/?access_token=a.b.c%00",
            "/?access_token=%22a.b.c%22",
            "/?access_token=a.b.c+x",
        ] {
            assert_eq!(
                tokens(&locs, &[], path),
                Err(AuthError::BadFormat),
                "{path}"
            );
        }
    }

    #[test]
    fn cookies_must_be_single_and_clean() {
        let locs = [loc(LocationKind::Cookie("session".into()))];
        let c = |v: &str| tokens(&locs, &[("cookie", v)], "/");
        assert_eq!(
            c("a=1; session=\"c.c.c\"; other=x"),
            Ok(vec!["c.c.c".into()])
        );
        assert_eq!(c("a=1; session=c.c.c"), Ok(vec!["c.c.c".into()]));
        assert_eq!(c("sessionx=a; xsession=b"), Ok(vec![]));
        for v in [
            "session=a.a.a; session=b.b.b",
            "session=a.a.a; session=a.a.a",
            "Session=a.a.a",
            "sess%69on=a.a.a",
            "session=",
            "session=a.a.a x",
            "session=\"a.a.a",
            "a=1, session=a.a.a, session=b",
        ] {
            assert_eq!(c(v), Err(AuthError::BadFormat), "{v}");
        }
        assert_eq!(
            tokens(
                &locs,
                &[("cookie", "session=a.a.a"), ("cookie", "session=b.b.b")],
                "/"
            ),
            Err(AuthError::BadFormat)
        );
    }

    #[test]
    fn locations_yield_in_config_order() {
        let locs = [
            bearer(),
            loc(LocationKind::Param("access_token".into())),
            loc(LocationKind::Cookie("session".into())),
        ];
        let found = extract(
            &locs,
            &[
                ("cookie", "a=1; session=c.c.c"),
                ("authorization", "Bearer a.a.a"),
            ],
            "/p?access_token=b.b.b",
        )
        .unwrap();
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.token.as_ref(), f.location))
            .collect();
        assert_eq!(got, [("a.a.a", 0), ("b.b.b", 1), ("c.c.c", 2)]);
    }

    #[test]
    fn the_token_byte_table_is_the_predicate() {
        for b in 0..=255u8 {
            assert_eq!(JWT_BYTES[usize::from(b)], is_jwt_byte(b), "{b:#04x}");
        }
    }

    #[test]
    fn folding_helpers() {
        assert_eq!(fold_header_name("X_Jwt-SUB"), "x-jwt-sub");
        assert_eq!(percent_decode("%41%4a%zz%"), "AJ%zz%");
        assert_eq!(fold_param_name("ACC%45SS.Token"), "access_token");
        assert_eq!(fold_param_name("access_token[x]"), "access_token");
        assert_eq!(fold_param_name("[x]"), "_x]");
    }

    /// The byte-by-byte comparison is the folded comparison, for every spelling a client may
    /// send: case, the `_` look-alikes, encodings, brackets, non-ASCII text.
    #[test]
    fn comparing_param_names_folds_as_fold_param_name() {
        let names = [
            "access_token",
            "ACCESS_TOKEN",
            "access.token",
            "access token",
            "access+token",
            "access-token",
            "access[token",
            "access_token[]",
            "access_token[0]",
            "acc%65ss_token",
            "acc%2565ss_token",
            "%61ccess_token",
            "access_tokeN",
            "access_toke",
            "access_tokens",
            "accéss_token",
            "ACCÉSS_TOKEN",
            "ß",
            "SS",
            "",
            "[",
            "[]",
            "_",
            ".",
            "%",
            "%zz",
            "access\u{17f}token",
            "K",
            "\u{212a}",
            "a.b-c+d e[f]",
        ];
        for key in names {
            for target in names {
                let folded = fold_param_name(target);
                assert_eq!(
                    same_param_name(key, &folded),
                    fold_param_name(key) == folded,
                    "{key:?} against {target:?}"
                );
            }
        }
    }
}
