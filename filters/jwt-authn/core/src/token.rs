//! Compact JWS parsing, before any key is touched: three non-empty canonical base64url sections,
//! a JSON header with a supported string `alg`, and (for JWTs) a JSON-object payload.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::alg::Alg;
use crate::b64::decode_segment;
use crate::status::AuthError;

/// Tokens longer than this are refused before any parsing (Envoy has no bound; 8 KiB covers
/// real-world access tokens and caps the work an attacker can ask for).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The JWS header members jwt-simple reads, with the same types: anything this accepts, jwt-simple
/// accepts too, so a later serde error from jwt-simple can only come from the payload (see
/// `verify::verify_signature`).
#[derive(Debug, Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    cty: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    x5c: Option<Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    jku: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    jwk: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    x5u: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    x5t: Option<String>,
    #[serde(default, rename = "x5t#S256")]
    #[allow(dead_code)]
    x5t_s256: Option<String>,
    #[serde(default)]
    salt: Option<String>,
}

/// A syntactically valid JWS (signature not checked yet).
#[derive(Debug, Clone)]
pub struct Jws<'a> {
    pub raw: &'a str,
    pub alg: Alg,
    pub kid: Option<String>,
    pub payload_b64: &'a str,
    pub payload: Vec<u8>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Split and decode a compact JWS; checks header and signature encoding, not the payload's JSON.
pub fn parse_jws(token: &str) -> Result<Jws<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::BadFormat);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::BadFormat);
    };
    // An empty payload is a valid JWS (Wycheproof has such vectors); as a JWT it then fails
    // claims parsing. An empty header or signature is malformed.
    if header_b64.is_empty() || sig_b64.is_empty() {
        return Err(AuthError::BadFormat);
    }
    let header_bytes = decode_segment(header_b64).ok_or(AuthError::HeaderParse)?;
    let header: RawHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| AuthError::HeaderParse)?;
    let alg = Alg::parse(&header.alg).ok_or(AuthError::AlgNotImplemented)?;
    // RFC 7515 §4.1.11: we understand no extension, so any `crit` entry makes the token unusable.
    if header.crit.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(AuthError::HeaderParse);
    }
    // jwt-simple refuses a `typ` that is not JWT (or `…+jwt`); say so at parse time.
    if let Some(typ) = &header.typ {
        let upper = typ.to_ascii_uppercase();
        if upper != "JWT" && !upper.ends_with("+JWT") {
            return Err(AuthError::HeaderParse);
        }
    }
    // jwt-simple decodes a `salt` member for every algorithm and refuses the token when it is not
    // base64url; refuse it here so that both signature paths (`verify`) agree.
    if let Some(salt) = &header.salt {
        decode_segment(salt).ok_or(AuthError::HeaderParse)?;
    }
    let payload = decode_segment(payload_b64).ok_or(AuthError::PayloadParse)?;
    let signature = decode_segment(sig_b64).ok_or(AuthError::SignatureParse)?;
    let signing_input = token
        .get(..header_b64.len() + 1 + payload_b64.len())
        .ok_or(AuthError::BadFormat)?;
    Ok(Jws {
        raw: token,
        alg,
        kid: header.kid,
        payload_b64,
        payload,
        signing_input,
        signature,
    })
}

/// The registered claims we act on, with Envoy's type rules, plus the whole payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub all: Map<String, Value>,
}

/// Parse the payload as a JWT claims set: a JSON object whose `iss`, `sub`, `jti` are strings,
/// `exp`, `nbf`, `iat` non-negative integers and `aud` a string or a list of strings.
pub fn parse_claims(payload: &[u8]) -> Result<Claims, AuthError> {
    let Ok(Value::Object(all)) = serde_json::from_slice::<Value>(payload) else {
        return Err(AuthError::PayloadParse);
    };
    for name in ["iss", "sub", "jti"] {
        if all.get(name).is_some_and(|v| !v.is_string()) {
            return Err(AuthError::PayloadParse);
        }
    }
    let time = |name: &str| -> Result<Option<u64>, AuthError> {
        match all.get(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(AuthError::PayloadParse),
        }
    };
    let exp = time("exp")?;
    let nbf = time("nbf")?;
    time("iat")?;
    let aud = match all.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(item.as_str().ok_or(AuthError::PayloadParse)?.to_string());
            }
            out
        }
        Some(_) => return Err(AuthError::PayloadParse),
    };
    let iss = all.get("iss").and_then(Value::as_str).map(str::to_string);
    Ok(Claims {
        iss,
        aud,
        exp,
        nbf,
        all,
    })
}

/// Envoy's time rules: `now + skew < nbf` ⇒ not yet valid; `exp` set and `now > exp + skew` ⇒
/// expired. `iat` is not checked. A token without `exp` does not expire (Istio's default).
pub fn check_time(claims: &Claims, now_secs: u64, skew_secs: u64) -> Result<(), AuthError> {
    if let Some(nbf) = claims.nbf {
        if now_secs.saturating_add(skew_secs) < nbf {
            return Err(AuthError::NotYetValid);
        }
    }
    if let Some(exp) = claims.exp {
        if now_secs > exp.saturating_add(skew_secs) {
            return Err(AuthError::Expired);
        }
    }
    Ok(())
}

/// Any-of audience check; no configured audiences ⇒ not checked (Envoy).
pub fn check_audience(claims: &Claims, audiences: &[String]) -> Result<(), AuthError> {
    if audiences.is_empty() || claims.aud.iter().any(|a| audiences.contains(a)) {
        Ok(())
    } else {
        Err(AuthError::AudienceNotAllowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b64::encode;

    fn jws(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            encode(header.as_bytes()),
            encode(payload.as_bytes())
        )
    }

    #[test]
    fn format_errors() {
        assert_eq!(parse_jws("a.b").unwrap_err(), AuthError::BadFormat);
        assert_eq!(parse_jws("a.b.c.d").unwrap_err(), AuthError::BadFormat);
        assert_eq!(parse_jws(".b.c").unwrap_err(), AuthError::BadFormat);
        assert_eq!(parse_jws("a.b.").unwrap_err(), AuthError::BadFormat);
        assert_eq!(parse_jws("").unwrap_err(), AuthError::BadFormat);
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(parse_jws(&long).unwrap_err(), AuthError::BadFormat);
    }

    #[test]
    fn header_rules() {
        assert_eq!(
            parse_jws(&jws(r#"{"alg":"none"}"#, "{}")).unwrap_err(),
            AuthError::AlgNotImplemented
        );
        assert_eq!(
            parse_jws(&jws(r#"{"alg":"ES512"}"#, "{}")).unwrap_err(),
            AuthError::AlgNotImplemented
        );
        assert_eq!(
            parse_jws(&jws(r#"{"alg":5}"#, "{}")).unwrap_err(),
            AuthError::HeaderParse
        );
        assert_eq!(
            parse_jws(&jws(r#"{"kid":"a"}"#, "{}")).unwrap_err(),
            AuthError::HeaderParse
        );
        assert_eq!(
            parse_jws(&jws(r#"{"alg":"RS256","kid":7}"#, "{}")).unwrap_err(),
            AuthError::HeaderParse
        );
        assert_eq!(
            parse_jws(&jws(r#"{"alg":"RS256","crit":["exp"]}"#, "{}")).unwrap_err(),
            AuthError::HeaderParse
        );
        assert_eq!(
            parse_jws(&jws(r#"{"alg":"RS256","typ":"JOSE+JSON"}"#, "{}")).unwrap_err(),
            AuthError::HeaderParse
        );
        assert_eq!(
            parse_jws(&jws(r#"{"alg":"RS256","jwk":{"kty":"EC"}}"#, "{}")).unwrap_err(),
            AuthError::HeaderParse
        );
        let token = jws(r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#, "{}");
        let ok = parse_jws(&token).unwrap();
        assert_eq!(ok.alg, Alg::RS256);
        assert_eq!(ok.kid.as_deref(), Some("k1"));
        let bad_sig = format!("{}.{}.c2ln=", encode(br#"{"alg":"RS256"}"#), encode(b"{}"));
        assert_eq!(parse_jws(&bad_sig).unwrap_err(), AuthError::SignatureParse);
        let bad_payload = format!("{}.e30?.c2ln", encode(br#"{"alg":"RS256"}"#));
        assert_eq!(
            parse_jws(&bad_payload).unwrap_err(),
            AuthError::PayloadParse
        );
    }

    #[test]
    fn claim_types() {
        let c =
            parse_claims(br#"{"iss":"i","aud":["a","b"],"exp":10,"nbf":5,"x":{"y":1}}"#).unwrap();
        assert_eq!(c.iss.as_deref(), Some("i"));
        assert_eq!(c.aud, vec!["a", "b"]);
        assert_eq!((c.exp, c.nbf), (Some(10), Some(5)));
        for bad in [
            &br#"[1]"#[..],
            br#""s""#,
            br#"{"iss":5}"#,
            br#"{"sub":true}"#,
            br#"{"jti":{}}"#,
            br#"{"exp":"10"}"#,
            br#"{"exp":-1}"#,
            br#"{"nbf":1.5}"#,
            br#"{"iat":"x"}"#,
            br#"{"aud":5}"#,
            br#"{"aud":["a",5]}"#,
            b"not json",
        ] {
            assert_eq!(
                parse_claims(bad).unwrap_err(),
                AuthError::PayloadParse,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_claims(br#"{"aud":"x"}"#).unwrap().aud, vec!["x"]);
    }

    #[test]
    fn time_edges_follow_envoy() {
        let c = parse_claims(br#"{"exp":1000,"nbf":500}"#).unwrap();
        // nbf: valid from nbf - skew.
        assert_eq!(check_time(&c, 439, 60), Err(AuthError::NotYetValid));
        assert_eq!(check_time(&c, 440, 60), Ok(()));
        // exp: valid until exp + skew inclusive.
        assert_eq!(check_time(&c, 1060, 60), Ok(()));
        assert_eq!(check_time(&c, 1061, 60), Err(AuthError::Expired));
        assert_eq!(check_time(&c, 1001, 0), Err(AuthError::Expired));
        let no_exp = parse_claims(br#"{}"#).unwrap();
        assert_eq!(check_time(&no_exp, u64::MAX, 60), Ok(()));
        let huge = parse_claims(format!(r#"{{"exp":{}}}"#, u64::MAX).as_bytes()).unwrap();
        assert_eq!(check_time(&huge, u64::MAX, 60), Ok(()));
    }

    #[test]
    fn audience_any_of() {
        let c = parse_claims(br#"{"aud":["a","b"]}"#).unwrap();
        assert_eq!(check_audience(&c, &["b".into(), "z".into()]), Ok(()));
        assert_eq!(
            check_audience(&c, &["z".into()]),
            Err(AuthError::AudienceNotAllowed)
        );
        assert_eq!(check_audience(&c, &[]), Ok(()));
        let none = parse_claims(br#"{}"#).unwrap();
        assert_eq!(
            check_audience(&none, &["a".into()]),
            Err(AuthError::AudienceNotAllowed)
        );
    }
}
