//! The per-request verdict: extraction, claims, keys, outputs, response shaping, cache.

#![allow(clippy::restriction)] // a test: the filter crates' no-panic lints are for Envoy

mod common;

use common::{hs256, oct_jwks, token};
use jwt_authn_core::b64::encode;
use jwt_authn_core::engine::www_authenticate;
use jwt_authn_core::{AuthError, Authenticator, Config, KeyLookup, Keys, Request, Stats, Verdict};
use jwt_simple::prelude::*;
use serde_json::{json, Value};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const ISS: &str = "https://idp.example.com";
const NOW: u64 = 1_700_000_000;

struct NoRemote;
impl KeyLookup for NoRemote {
    fn remote_keys(&self, _: usize) -> Keys<'_> {
        Keys::Failed
    }
    fn may_refetch_for_kid(&self, _: usize) -> bool {
        false
    }
}

fn config(extra: Value) -> Config {
    let mut rule = json!({"issuer": ISS, "jwks": oct_jwks(KEY, "k1")});
    if let (Value::Object(r), Value::Object(e)) = (&mut rule, extra) {
        r.extend(e);
    }
    Config::parse(json!({"jwtRules":[rule]}).to_string().as_bytes()).unwrap()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISS, "sub": "alice", "exp": NOW + 3600});
    if let (Value::Object(m), Value::Object(e)) = (&mut c, extra) {
        m.extend(e);
    }
    c
}

fn good(extra: Value) -> String {
    hs256(KEY, json!({"alg":"HS256","kid":"k1"}), claims(extra))
}

fn run(auth: &mut Authenticator, headers: &[(&str, &str)], path: &str) -> Verdict {
    let headers: Vec<(&str, &str)> = headers.to_vec();
    let req = Request {
        headers: &headers,
        path,
        scheme: "https",
        authority: "api.example.com",
    };
    auth.decide(&req, NOW, &NoRemote, false, &mut Stats::default())
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn denied(v: &Verdict) -> (u32, &'static str) {
    match v {
        Verdict::Deny(d) => (d.status, d.body),
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn valid_token_allows_and_publishes_identity() {
    let mut auth = Authenticator::new(config(json!({})));
    let t = good(json!({"aud":"orders","azp":"web"}));
    let Verdict::Allow {
        identity,
        remove_headers,
        ..
    } = run(&mut auth, &[("authorization", &bearer(&t))], "/")
    else {
        panic!()
    };
    let id = identity.unwrap();
    assert_eq!(id.principal, format!("{ISS}/alice"));
    assert_eq!(id.aud, vec!["orders"]);
    assert_eq!(id.azp.as_deref(), Some("web"));
    assert_eq!(
        remove_headers,
        vec!["authorization"],
        "token stripped by default"
    );
}

#[test]
fn missing_token() {
    let mut lax = Authenticator::new(config(json!({})));
    assert!(matches!(
        run(&mut lax, &[], "/"),
        Verdict::Allow { identity: None, .. }
    ));
    assert!(matches!(
        run(&mut lax, &[("authorization", "Basic abc")], "/"),
        Verdict::Allow { identity: None, .. }
    ));
    let mut strict = Authenticator::new(
        Config::parse(
            json!({"requireToken": true, "jwtRules":[{"issuer":ISS,"jwks":oct_jwks(KEY,"k1")}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap(),
    );
    let v = run(&mut strict, &[], "/x?y=1");
    assert_eq!(denied(&v), (401, "Jwt is missing"));
    let Verdict::Deny(d) = v else { panic!() };
    assert_eq!(
        d.www_authenticate,
        "Bearer realm=\"https://api.example.com/x?y=1\""
    );
}

#[test]
fn refusals_with_envoy_texts() {
    let mut auth = Authenticator::new(config(json!({"audiences":["orders"]})));
    let mut check = |t: String, expected: (u32, &str)| {
        assert_eq!(
            denied(&run(&mut auth, &[("authorization", &bearer(&t))], "/")),
            expected,
            "{t}"
        );
    };
    let aud = json!({"aud":"orders"});
    check(
        hs256(
            KEY,
            json!({"alg":"HS256"}),
            claims(json!({"aud":"payments"})),
        ),
        (403, "Audiences in Jwt are not allowed"),
    );
    check(
        hs256(KEY, json!({"alg":"HS256"}), claims(json!({}))),
        (403, "Audiences in Jwt are not allowed"),
    );
    check(
        hs256(
            KEY,
            json!({"alg":"HS256"}),
            claims(json!({"aud":"orders","exp": NOW - 61})),
        ),
        (401, "Jwt is expired"),
    );
    check(
        hs256(
            KEY,
            json!({"alg":"HS256"}),
            claims(json!({"aud":"orders","nbf": NOW + 61})),
        ),
        (401, "Jwt not yet valid"),
    );
    check(
        hs256(
            KEY,
            json!({"alg":"HS256"}),
            claims(json!({"aud":"orders","iss":"https://evil"})),
        ),
        (401, "Jwt issuer is not configured"),
    );
    check(
        hs256(
            KEY,
            json!({"alg":"HS256"}),
            claims(json!({"aud":"orders","iss":""})),
        ),
        (401, "Jwt issuer is not configured"),
    );
    let mut no_iss = claims(aud.clone());
    no_iss.as_object_mut().unwrap().remove("iss");
    check(
        hs256(KEY, json!({"alg":"HS256"}), no_iss),
        (401, "Jwt issuer is not configured"),
    );
    check(
        hs256(
            b"another-key-another-key-another!",
            json!({"alg":"HS256"}),
            claims(aud.clone()),
        ),
        (401, "Jwt verification fails"),
    );
    check(
        hs256(
            KEY,
            json!({"alg":"HS256","kid":"other"}),
            claims(aud.clone()),
        ),
        (401, "Jwks doesn't have key to match kid or alg from Jwt"),
    );
    let none = format!(
        "{}.{}.",
        encode(br#"{"alg":"none"}"#),
        encode(claims(aud.clone()).to_string().as_bytes())
    );
    check(
        none.clone(),
        (401, "Jwt is not in the form of Header.Payload.Signature"),
    );
    check(
        format!("{none}c2ln"),
        (401, "Jwt header [alg] field value is invalid"),
    );
    check(
        hs256(KEY, json!({"alg":"HS384"}), claims(aud.clone())),
        (401, "Jwks doesn't have key to match kid or alg from Jwt"),
    );
    check(
        format!("{}x", good(aud.clone())),
        (401, "Jwt verification fails"),
    );
    check(
        "a.b".into(),
        (401, "Jwt is not in the form of Header.Payload.Signature"),
    );
    let padded = claims(json!({"aud":"orders","pad":"x".repeat(9000)}));
    check(
        hs256(KEY, json!({"alg":"HS256"}), padded),
        (401, "Jwt is not in the form of Header.Payload.Signature"),
    );
    // Edges of the 60 s skew are accepted.
    for edge in [
        json!({"aud":"orders","exp": NOW - 60}),
        json!({"aud":"orders","nbf": NOW + 60}),
    ] {
        let t = hs256(KEY, json!({"alg":"HS256"}), claims(edge));
        assert!(matches!(
            run(&mut auth, &[("authorization", &bearer(&t))], "/"),
            Verdict::Allow { .. }
        ));
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let kp = RS256KeyPair::generate(2048).unwrap();
    let c = kp.public_key().to_components();
    let jwks =
        json!({"keys":[{"kty":"RSA","n":encode(&c.n),"e":encode(&c.e),"kid":"r1"}]}).to_string();
    let config = Config::parse(
        json!({"jwtRules":[{"issuer":ISS,"jwks":jwks}]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let mut auth = Authenticator::new(config);
    let pem = kp.public_key().to_pem().unwrap();
    for secret in [
        pem.as_bytes().to_vec(),
        kp.public_key().to_der().unwrap(),
        c.n.clone(),
    ] {
        let forged = hs256(
            &secret,
            json!({"alg":"HS256","kid":"r1"}),
            claims(json!({})),
        );
        assert_eq!(
            denied(&run(&mut auth, &[("authorization", &bearer(&forged))], "/")).1,
            "Jwks doesn't have key to match kid or alg from Jwt"
        );
    }
    // The genuine RS256 token passes.
    let real = kp
        .with_key_id("r1")
        .sign(JWTClaims {
            issuer: Some(ISS.into()),
            subject: Some("bob".into()),
            ..Claims::create(Duration::from_hours(1))
        })
        .unwrap();
    let headers = [("authorization", bearer(&real))];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let v = {
        let h: Vec<(&str, &str)> = headers.to_vec();
        let now = Clock::now_since_epoch().as_secs();
        auth.decide(
            &Request {
                headers: &h,
                path: "/",
                scheme: "http",
                authority: "a",
            },
            now,
            &NoRemote,
            false,
            &mut Stats::default(),
        )
    };
    assert!(
        matches!(v, Verdict::Allow { identity: Some(ref id), .. } if id.sub.as_deref() == Some("bob")),
        "{v:?}"
    );
}

#[test]
fn several_locations_must_carry_one_token() {
    let mut auth = Authenticator::new(config(
        json!({"fromHeaders":[{"name":"x-jwt","prefix":""}], "fromParams":["token"]}),
    ));
    let alice = good(json!({}));
    let bob = good(json!({"sub":"bob"}));
    let bad = hs256(
        b"another-key-another-key-another!",
        json!({"alg":"HS256"}),
        claims(json!({})),
    );
    // One token in two locations: one identity; the header copy is stripped, the query left
    // (Envoy).
    let v = run(&mut auth, &[("x-jwt", &alice)], &format!("/?token={alice}"));
    let Verdict::Allow {
        identity,
        remove_headers,
        ..
    } = v
    else {
        panic!("{v:?}")
    };
    assert_eq!(identity.unwrap().sub.as_deref(), Some("alice"));
    assert_eq!(remove_headers, vec!["x-jwt"]);
    // Two different tokens: two identities in one request ⇒ 401, whichever verifies.
    for (header, param) in [(&alice, &bob), (&alice, &bad), (&bad, &alice)] {
        assert_eq!(
            denied(&run(
                &mut auth,
                &[("x-jwt", header)],
                &format!("/?token={param}")
            )),
            (401, "Jwt verification fails")
        );
    }
    // The default Bearer location is not read when fromHeaders/fromParams are configured.
    assert!(matches!(
        run(&mut auth, &[("authorization", &bearer(&bad))], "/"),
        Verdict::Allow { identity: None, .. }
    ));
}

#[test]
fn two_rules_two_tokens_is_one_too_many() {
    let other_key = b"ffffffffffffffffffffffffffffffff";
    let config = Config::parse(
        json!({"jwtRules":[
            {"issuer": ISS, "jwks": oct_jwks(KEY, "k1"),
             "outputClaimToHeaders":[{"header":"x-corp-email","claim":"email"}]},
            {"issuer": "https://partner", "jwks": oct_jwks(other_key, "k2"),
             "fromHeaders":[{"name":"x-partner-token","prefix":""}],
             "outputClaimToHeaders":[{"header":"x-partner-email","claim":"email"}]}
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let mut auth = Authenticator::new(config);
    let corp = good(json!({"email":"alice@corp"}));
    let partner = hs256(
        other_key,
        json!({"alg":"HS256"}),
        claims(json!({"iss":"https://partner","sub":"ceo","email":"ceo@corp"})),
    );
    assert_eq!(
        denied(&run(
            &mut auth,
            &[
                ("authorization", &bearer(&corp)),
                ("x-partner-token", &partner)
            ],
            "/"
        )),
        (401, "Jwt verification fails")
    );
    // Alone, each one's outputs come from that token only.
    let Verdict::Allow {
        identity,
        set_headers,
        ..
    } = run(&mut auth, &[("x-partner-token", &partner)], "/")
    else {
        panic!()
    };
    assert_eq!(identity.unwrap().iss, "https://partner");
    assert_eq!(
        set_headers,
        vec![("x-partner-email".to_string(), "ceo@corp".to_string())]
    );
}

#[test]
fn an_identity_the_readers_cannot_parse_is_refused() {
    let mut auth = Authenticator::new(config(json!({})));
    let nested = |depth: usize| {
        let mut v = json!("x");
        for _ in 0..depth {
            v = json!({ "n": v });
        }
        v
    };
    let ok = good(json!({"deep": nested(125)}));
    let Verdict::Allow {
        identity,
        identity_bytes,
        ..
    } = run(&mut auth, &[("authorization", &bearer(&ok))], "/")
    else {
        panic!()
    };
    let bytes = identity_bytes.unwrap();
    assert_eq!(
        meshward_common::identity::RequestIdentity::read(Some(&bytes)).unwrap(),
        identity.as_deref().cloned()
    );
    // 126 deep: the payload parses (1 + 126 containers), the published form would not.
    let deep = good(json!({"deep": nested(126)}));
    assert_eq!(
        denied(&run(&mut auth, &[("authorization", &bearer(&deep))], "/")),
        (401, "Jwt payload is an invalid Base64 or an invalid JSON")
    );
    // Again from the verified-token cache: still refused.
    assert_eq!(
        denied(&run(&mut auth, &[("authorization", &bearer(&deep))], "/")).0,
        401
    );
}

#[test]
fn spoofed_output_headers_in_any_spelling_are_listed_for_removal() {
    let auth = Authenticator::new(config(json!({
        "outputPayloadToHeader": "x-jwt-payload",
        "outputClaimToHeaders": [{"header":"X-Jwt-Sub","claim":"sub"}]
    })));
    let headers: Vec<(&str, &str)> = [
        ("x_jwt_sub", "a"),
        ("X_JWT_SUB", "a"),
        ("x-jwt_sub", "a"),
        ("x-jwt-sub", "a"),
        ("x_jwt_payload", "e30"),
        ("x-jwt-subject", "keep"),
        ("x_other", "keep"),
        (":path", "/"),
    ]
    .to_vec();
    assert_eq!(
        auth.config.spoofed_output_headers(&headers),
        [
            "x_jwt_sub",
            "X_JWT_SUB",
            "x-jwt_sub",
            "x-jwt-sub",
            "x_jwt_payload"
        ]
    );
}

#[test]
fn location_is_bound_to_its_rules_issuer() {
    let other_key = b"ffffffffffffffffffffffffffffffff";
    let config = Config::parse(json!({"jwtRules":[
        {"issuer": ISS, "jwks": oct_jwks(KEY, "k1")},
        {"issuer": "https://other", "jwks": oct_jwks(other_key, "k2"), "fromHeaders":[{"name":"x-other","prefix":""}]}
    ]}).to_string().as_bytes()).unwrap();
    let mut auth = Authenticator::new(config);
    let other = hs256(
        other_key,
        json!({"alg":"HS256"}),
        claims(json!({"iss":"https://other"})),
    );
    assert!(matches!(
        run(&mut auth, &[("x-other", &other)], "/"),
        Verdict::Allow {
            identity: Some(_),
            ..
        }
    ));
    // A token of issuer 2 in issuer 1's location is an unknown issuer there.
    assert_eq!(
        denied(&run(&mut auth, &[("authorization", &bearer(&other))], "/")).1,
        "Jwt issuer is not configured"
    );
}

#[test]
fn outputs_and_forwarding() {
    let mut auth = Authenticator::new(config(json!({
        "outputPayloadToHeader": "x-jwt-payload",
        "outputClaimToHeaders": [{"header":"x-jwt-sub","claim":"sub"},{"header":"x-tenant","claim":"org.tenant"},
                                  {"header":"x-admin","claim":"admin"},{"header":"x-groups","claim":"groups"}],
        "forwardOriginalToken": true
    })));
    assert_eq!(
        auth.config.output_headers,
        [
            "x-jwt-payload",
            "x-jwt-sub",
            "x-tenant",
            "x-admin",
            "x-groups"
        ]
    );
    let t = good(json!({"org":{"tenant":"t1"},"admin":true,"groups":["a"]}));
    let Verdict::Allow {
        remove_headers,
        set_headers,
        ..
    } = run(&mut auth, &[("authorization", &bearer(&t))], "/")
    else {
        panic!()
    };
    assert!(
        remove_headers.is_empty(),
        "forwardOriginalToken keeps the header"
    );
    let get = |n: &str| {
        set_headers
            .iter()
            .find(|(h, _)| h == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("x-jwt-payload"),
        Some(t.split('.').nth(1).unwrap().to_string())
    );
    assert_eq!(get("x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(get("x-tenant").as_deref(), Some("t1"));
    assert_eq!(get("x-admin").as_deref(), Some("true"));
    assert_eq!(get("x-groups"), None, "arrays are not emitted");
}

#[test]
fn cache_hits_skip_verification_but_recheck_time() {
    let mut auth = Authenticator::new(config(json!({})));
    let t = good(json!({"exp": NOW + 10}));
    let value = bearer(&t);
    let h = vec![("authorization", value.as_str())];
    let req = Request {
        headers: &h,
        path: "/",
        scheme: "http",
        authority: "a",
    };
    let mut stats = Stats::default();
    assert!(matches!(
        auth.decide(&req, NOW, &NoRemote, false, &mut stats),
        Verdict::Allow { .. }
    ));
    assert!(matches!(
        auth.decide(&req, NOW + 1, &NoRemote, false, &mut stats),
        Verdict::Allow { .. }
    ));
    assert_eq!(
        stats,
        Stats {
            cache_hits: 1,
            cache_misses: 1
        }
    );
    let v = auth.decide(&req, NOW + 71, &NoRemote, false, &mut stats);
    assert_eq!(denied(&v).1, "Jwt is expired");
}

/// Once a token is cached, any other string — the same header and payload with another
/// signature, a truncated or extended signature, a changed payload — is checked in full and
/// refused: the cache answers for exactly the token it verified.
#[test]
fn a_forged_token_never_hits_a_cached_one() {
    let mut auth = Authenticator::new(config(json!({})));
    let t = good(json!({"exp": NOW + 10}));
    let allowed = |auth: &mut Authenticator, token: &str| {
        let value = bearer(token);
        let h = vec![("authorization", value.as_str())];
        let req = Request::from_headers(&h);
        let mut stats = Stats::default();
        let v = auth.decide(&req, NOW, &NoRemote, false, &mut stats);
        (matches!(v, Verdict::Allow { .. }), stats)
    };
    assert!(allowed(&mut auth, &t).0);
    let (head, sig) = t.rsplit_once('.').unwrap();
    let mut flipped: Vec<char> = sig.chars().collect();
    flipped[5] = if flipped[5] == 'A' { 'B' } else { 'A' };
    let payload_swapped = {
        let other = good(json!({"exp": NOW + 10, "sub": "mallory"}));
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[1] = other.split('.').nth(1).unwrap();
        parts.join(".")
    };
    for forged in [
        format!("{head}.{}", flipped.iter().collect::<String>()),
        format!("{head}.{}", &sig[..sig.len() - 4]),
        format!("{t}AAAA"),
        payload_swapped,
    ] {
        let (ok, stats) = allowed(&mut auth, &forged);
        assert!(!ok, "{forged} allowed");
        assert_eq!(stats.cache_hits, 0, "{forged} hit the cache");
    }
    let (ok, stats) = allowed(&mut auth, &t);
    assert!(ok);
    assert_eq!(stats.cache_hits, 1, "the real token still hits");
}

#[test]
fn realm_is_escaped_and_truncated() {
    assert_eq!(
        www_authenticate(AuthError::Expired, "http", "h", "/a\"b"),
        "Bearer realm=\"http://h/a\\\"b\", error=\"invalid_token\""
    );
    let long = format!("/{}", "p".repeat(400));
    let header = www_authenticate(AuthError::Missing, "http", "h", &long);
    assert_eq!(header.len(), "Bearer realm=\"http://h\"".len() + 256);
}

#[test]
fn es256_and_eddsa_tokens() {
    let es = ES256KeyPair::generate().with_key_id("e1");
    let p = es.public_key().public_key().to_bytes_uncompressed();
    let ed = Ed25519KeyPair::generate().with_key_id("d1");
    let jwks = json!({"keys":[
        {"kty":"EC","crv":"P-256","x":encode(&p[1..33]),"y":encode(&p[33..65]),"kid":"e1"},
        {"kty":"OKP","crv":"Ed25519","x":encode(&ed.public_key().to_bytes()),"kid":"d1"}
    ]})
    .to_string();
    let config = Config::parse(
        json!({"jwtRules":[{"issuer":ISS,"jwks":jwks}]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let mut auth = Authenticator::new(config);
    let now = Clock::now_since_epoch().as_secs();
    let c = || {
        Claims::create(Duration::from_hours(1))
            .with_issuer(ISS)
            .with_subject("carol")
    };
    for t in [es.sign(c()).unwrap(), ed.sign(c()).unwrap()] {
        let value = bearer(&t);
        let h = vec![("authorization", value.as_str())];
        let v = auth.decide(
            &Request {
                headers: &h,
                path: "/",
                scheme: "http",
                authority: "a",
            },
            now,
            &NoRemote,
            false,
            &mut Stats::default(),
        );
        assert!(
            matches!(
                v,
                Verdict::Allow {
                    identity: Some(_),
                    ..
                }
            ),
            "{v:?}"
        );
    }
    // A token claiming ES256 but carrying the EdDSA key's kid has no candidate key.
    let swapped = token(
        json!({"alg":"ES256","kid":"d1"}),
        json!({"iss":ISS}),
        |_| vec![0; 64],
    );
    let value = bearer(&swapped);
    let h = vec![("authorization", value.as_str())];
    let v = auth.decide(
        &Request {
            headers: &h,
            path: "/",
            scheme: "http",
            authority: "a",
        },
        now,
        &NoRemote,
        false,
        &mut Stats::default(),
    );
    assert_eq!(
        denied(&v).1,
        "Jwks doesn't have key to match kid or alg from Jwt"
    );
}

#[test]
fn the_request_is_read_from_its_header_map() {
    let h: Vec<(&str, &str)> = [
        (":Path", "/a?b=c"),
        (":scheme", "http"),
        ("X-Forwarded-Proto", "https"),
        (":authority", "api.example.com"),
        (":path", "/second"),
    ]
    .to_vec();
    let req = Request::from_headers(&h);
    assert_eq!(
        (req.path, req.scheme, req.authority),
        ("/a?b=c", "https", "api.example.com")
    );
    assert_eq!(req.header(":method"), None);
    let bare: Vec<(&str, &str)> = vec![(":scheme", "http2")];
    let req = Request::from_headers(&bare);
    assert_eq!((req.path, req.scheme, req.authority), ("", "http2", ""));
    let req = Request::from_headers(&[]);
    assert_eq!(req.scheme, "http");
}
