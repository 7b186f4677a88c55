//! Config validation: every rule of the brief, with the offending field named.

#![allow(clippy::restriction)] // a test: the filter crates' no-panic lints are for Envoy

use jwt_authn_core::config::{KeySource, LocationKind};
use jwt_authn_core::Config;
use serde_json::{json, Value};

const JWKS: &str = r#"{"keys":[{"kty":"oct","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#;

fn parse(v: Value) -> Result<Config, meshward_common::ConfigError> {
    Config::parse(v.to_string().as_bytes())
}

fn field(v: Value) -> String {
    parse(v).unwrap_err().field
}

#[test]
fn defaults() {
    let c = parse(json!({"jwtRules":[{"issuer":"i","jwksUri":"https://idp.example.com/jwks"}]}))
        .unwrap();
    assert_eq!(c.clock_skew_secs, 60);
    assert!(!c.require_token);
    let KeySource::Remote(r) = &c.rules[0].keys else {
        panic!()
    };
    assert_eq!(r.cluster, "outbound|443||idp.example.com");
    assert_eq!(
        (r.authority.as_str(), r.path.as_str()),
        ("idp.example.com", "/jwks")
    );
    assert_eq!((r.timeout_ms, r.cache_duration_ms), (5_000, 300_000));
    assert_eq!(
        c.locations[0].kind,
        LocationKind::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into()
        }
    );
    assert_eq!(
        c.locations[1].kind,
        LocationKind::Param("access_token".into())
    );
    let c = parse(json!({"jwtRules":[{"issuer":"i","jwksUri":"http://idp:8080?x=1","timeout":"1.5s","jwksCacheDuration":"10m"}]})).unwrap();
    let KeySource::Remote(r) = &c.rules[0].keys else {
        panic!()
    };
    assert_eq!(
        (
            r.cluster.as_str(),
            r.path.as_str(),
            r.timeout_ms,
            r.cache_duration_ms
        ),
        ("outbound|8080||idp", "/?x=1", 1_500, 600_000)
    );
    assert!(parse(json!({})).unwrap().rules.is_empty());
    assert!(parse(
        json!({"jwtRules":[{"issuer":"i","jwks":serde_json::from_str::<Value>(JWKS).unwrap()}]})
    )
    .is_ok());
}

#[test]
fn errors_name_the_field() {
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"","jwks":JWKS}]})),
        "jwtRules[0].issuer"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i"}]})),
        "jwtRules[0].jwksUri"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"jwksUri":"https://a/"}]})),
        "jwtRules[0].jwksUri"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwks":"{}"}]})),
        "jwtRules[0].jwks"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"timeout":"5s"}]})),
        "jwtRules[0].jwks"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwksUri":"ftp://a/"}]})),
        "jwtRules[0].jwksUri"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwksUri":"https://u@a/"}]})),
        "jwtRules[0].jwksUri"
    );
    for internal in [
        "http://localhost/j",
        "http://127.0.0.1:9/j",
        "http://169.254.169.254/latest",
        "http://[::1]/j",
        "http://[fe80::1]/j",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://metadata.google.internal/",
    ] {
        assert_eq!(
            field(json!({"jwtRules":[{"issuer":"i","jwksUri":internal}]})),
            "jwtRules[0].jwksUri",
            "{internal}"
        );
    }
    assert!(parse(
        json!({"jwtRules":[{"issuer":"i","jwksUri":"http://127.0.0.1:9/j","jwksCluster":"jwks"}]})
    )
    .is_ok());
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwksUri":"https://a/","timeout":"5"}]})),
        "jwtRules[0].timeout"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwksUri":"https://a/","jwksCacheDuration":"0s"}]})),
        "jwtRules[0].jwksCacheDuration"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"fromHeaders":[{"name":"bad name"}]}]})),
        "jwtRules[0].fromHeaders[0].name"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"outputPayloadToHeader":"x y"}]})),
        "jwtRules[0].outputPayloadToHeader"
    );
    assert_eq!(
        field(
            json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"outputClaimToHeaders":[{"header":"host","claim":"sub"}]}]})
        ),
        "jwtRules[0].outputClaimToHeaders[0].header"
    );
    assert_eq!(
        field(
            json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"outputClaimToHeaders":[{"header":"x-a","claim":"a..b"}]}]})
        ),
        "jwtRules[0].outputClaimToHeaders[0].claim"
    );
    assert_eq!(
        field(
            json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"outputPayloadToHeader":"authorization"}]})
        ),
        "jwtRules"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwks":JWKS},{"issuer":"i","jwks":JWKS}]})),
        "jwtRules[1].issuer"
    );
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"bogus":1}]})),
        "jwtRules[0].bogus"
    );
    assert_eq!(
        field(json!({"clockSkewSeconds": 99999})),
        "clockSkewSeconds"
    );
    assert_eq!(field(json!({"requireToken": "yes"})), "requireToken");
}

#[test]
fn committed_policies_parse() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../policies/jwt-authn");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // schema.json is the JSON Schema of these files, not a policy.
        if path.ends_with("schema.json") {
            continue;
        }
        let config = Config::parse(&std::fs::read(&path).unwrap());
        assert!(config.is_ok(), "{}: {:?}", path.display(), config.err());
        n += 1;
    }
    assert!(n >= 2);
}

#[test]
fn two_rules_may_not_share_an_output_header_in_any_spelling() {
    let rule = |iss: &str, header: &str, from: &str| {
        json!({"issuer": iss, "jwks": JWKS,
               "fromHeaders": [{"name": from, "prefix": "Bearer "}],
               "outputClaimToHeaders": [{"header": header, "claim": "email"}]})
    };
    for other in [
        "x-user-email",
        "X-User-Email",
        "x_user_email",
        "X_USER-EMAIL",
    ] {
        let err = parse(json!({"jwtRules": [
            rule("corp", "x-user-email", "authorization"),
            rule("partner", other, "x-partner-token"),
        ]}))
        .unwrap_err();
        assert_eq!(
            err.field, "jwtRules[1].outputClaimToHeaders[0].header",
            "{other}"
        );
        assert!(err.to_string().contains("jwtRules[0]"), "{err}");
    }
    // The payload header counts too.
    let err = parse(json!({"jwtRules": [
        {"issuer": "corp", "jwks": JWKS, "outputPayloadToHeader": "x-jwt-payload"},
        {"issuer": "partner", "jwks": JWKS, "fromHeaders": [{"name": "x-p"}],
         "outputPayloadToHeader": "X_JWT_PAYLOAD"},
    ]}))
    .unwrap_err();
    assert_eq!(err.field, "jwtRules[1].outputPayloadToHeader");
    // Distinct names are fine.
    let ok = parse(json!({"jwtRules": [
        rule("corp", "x-corp-email", "authorization"),
        rule("partner", "x-partner-email", "x-partner-token"),
    ]}))
    .unwrap();
    assert_eq!(ok.output_headers, ["x-corp-email", "x-partner-email"]);
}

#[test]
fn output_and_token_headers_compare_folded() {
    // Within a rule.
    assert_eq!(
        field(
            json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"outputClaimToHeaders":[
            {"header":"x-sub","claim":"sub"},{"header":"X_SUB","claim":"email"}]}]})
        ),
        "jwtRules[0].outputClaimToHeaders[1].header"
    );
    // An output header that folds to a token header.
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwks":JWKS,
            "fromHeaders":[{"name":"x-token"}],
            "outputClaimToHeaders":[{"header":"X_TOKEN","claim":"sub"}]}]})),
        "jwtRules"
    );
    // Two token headers that differ only in `_`/`-`.
    assert_eq!(
        field(json!({"jwtRules":[
            {"issuer":"a","jwks":JWKS,"fromHeaders":[{"name":"x-token"}]},
            {"issuer":"b","jwks":JWKS,"fromHeaders":[{"name":"x_token"}]}]})),
        "jwtRules"
    );
}

#[test]
fn jwks_max_stale() {
    let remote = |extra: Value| {
        let mut rule = json!({"issuer":"i","jwksUri":"https://idp.example.com/jwks"});
        if let (Value::Object(r), Value::Object(e)) = (&mut rule, extra) {
            r.extend(e);
        }
        parse(json!({ "jwtRules": [rule] }))
    };
    let stale = |c: &Config| match &c.rules[0].keys {
        jwt_authn_core::config::KeySource::Remote(spec) => spec.max_stale_ms,
        _ => panic!(),
    };
    assert_eq!(
        stale(&remote(json!({})).unwrap()),
        86_400_000,
        "default 24h"
    );
    assert_eq!(stale(&remote(json!({"jwksMaxStale":"0s"})).unwrap()), 0);
    assert_eq!(
        stale(&remote(json!({"jwksMaxStale":"168h"})).unwrap()),
        604_800_000
    );
    for bad in ["169h", "-1s", "soon", ""] {
        assert_eq!(
            remote(json!({ "jwksMaxStale": bad })).unwrap_err().field,
            "jwtRules[0].jwksMaxStale",
            "{bad}"
        );
    }
    assert_eq!(
        field(json!({"jwtRules":[{"issuer":"i","jwks":JWKS,"jwksMaxStale":"1h"}]})),
        "jwtRules[0].jwks"
    );
}
