//! JWK → key conversion: every key type, and the ways a JWK can be wrong.

#![allow(clippy::restriction)] // a test: the filter crates' no-panic lints are for Envoy

use jwt_authn_core::alg::Alg;
use jwt_authn_core::b64::encode;
use jwt_authn_core::jwk::{parse_jwk, parse_jwks, JwksError, KeyMaterial};
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn ec_jwk() -> Value {
    let kp = ES256KeyPair::generate();
    let point = kp.public_key().public_key().to_bytes_uncompressed();
    json!({"kty":"EC","crv":"P-256","x":encode(&point[1..33]),"y":encode(&point[33..65]),"kid":"e1"})
}

#[test]
fn rsa_from_n_e() {
    let kp = RS256KeyPair::generate(2048).unwrap();
    let c = kp.public_key().to_components();
    let good = json!({"kty":"RSA","n":encode(&c.n),"e":encode(&c.e),"alg":"RS256","use":"sig"});
    let key = parse_jwk(&obj(good.clone()), false).unwrap();
    assert!(matches!(key.material, KeyMaterial::Rsa { .. }));
    assert!(key.accepts(Alg::RS256));
    assert!(!key.accepts(Alg::PS256), "JWK alg binds");
    assert!(!key.accepts(Alg::HS256));
    let no_alg = parse_jwk(
        &obj(json!({"kty":"RSA","n":encode(&c.n),"e":encode(&c.e)})),
        false,
    )
    .unwrap();
    assert!(
        no_alg.accepts(Alg::PS512) && no_alg.accepts(Alg::RS384) && !no_alg.accepts(Alg::ES256)
    );

    let mut missing_n = good.clone();
    missing_n.as_object_mut().unwrap().remove("n");
    assert!(parse_jwk(&obj(missing_n), false)
        .unwrap_err()
        .0
        .contains("`n` is missing"));
    let mut bad_b64 = good.clone();
    bad_b64["e"] = json!("AQ+B");
    assert!(parse_jwk(&obj(bad_b64), false)
        .unwrap_err()
        .0
        .contains("base64url"));
    let mut e3 = good.clone();
    e3["e"] = json!("Aw");
    assert!(parse_jwk(&obj(e3), false).is_err(), "e = 3 refused");
    let mut short = good.clone();
    short["n"] = json!(encode(&c.n[..128]));
    assert!(
        parse_jwk(&obj(short), false).is_err(),
        "1024-bit modulus refused"
    );
    let mut wrong_alg = good.clone();
    wrong_alg["alg"] = json!("ES256");
    assert!(parse_jwk(&obj(wrong_alg), false).is_err());
    let mut private = good.clone();
    private["d"] = json!("AQAB");
    assert!(parse_jwk(&obj(private), false)
        .unwrap_err()
        .0
        .contains("private"));
    let mut enc = good.clone();
    enc["use"] = json!("enc");
    assert!(parse_jwk(&obj(enc), false).is_err());
    let mut ops = good;
    ops["key_ops"] = json!(["encrypt"]);
    assert!(parse_jwk(&obj(ops.clone()), false).is_err());
    ops["key_ops"] = json!(["verify"]);
    assert!(parse_jwk(&obj(ops), false).is_ok());
}

#[test]
fn ec_from_x_y() {
    let good = ec_jwk();
    let key = parse_jwk(&obj(good.clone()), false).unwrap();
    assert!(matches!(key.material, KeyMaterial::P256(_)));
    assert!(key.accepts(Alg::ES256) && !key.accepts(Alg::ES384));

    let mut wrong_crv = good.clone();
    wrong_crv["crv"] = json!("P-384");
    assert!(parse_jwk(&obj(wrong_crv), false)
        .unwrap_err()
        .0
        .contains("48 bytes"));
    let mut unknown_crv = good.clone();
    unknown_crv["crv"] = json!("secp256k1");
    assert!(parse_jwk(&obj(unknown_crv), false).is_err());
    let mut short_x = good.clone();
    short_x["x"] = json!(encode(&[1u8; 31]));
    assert!(parse_jwk(&obj(short_x), false).is_err());
    let mut off_curve = good.clone();
    off_curve["y"] = json!(encode(&[7u8; 32]));
    assert!(parse_jwk(&obj(off_curve), false)
        .unwrap_err()
        .0
        .contains("not a point"));
    let mut no_y = good.clone();
    no_y.as_object_mut().unwrap().remove("y");
    assert!(parse_jwk(&obj(no_y), false).is_err());
    let mut alg_mismatch = good;
    alg_mismatch["alg"] = json!("ES384");
    assert!(parse_jwk(&obj(alg_mismatch), false).is_err());

    let kp = ES384KeyPair::generate();
    let p = kp.public_key().public_key().to_bytes_uncompressed();
    let p384 = json!({"kty":"EC","crv":"P-384","x":encode(&p[1..49]),"y":encode(&p[49..97])});
    assert!(parse_jwk(&obj(p384), false).unwrap().accepts(Alg::ES384));
}

#[test]
fn okp_and_oct() {
    let kp = Ed25519KeyPair::generate();
    let x = kp.public_key().to_bytes();
    let key = parse_jwk(
        &obj(json!({"kty":"OKP","crv":"Ed25519","x":encode(&x)})),
        false,
    )
    .unwrap();
    assert!(key.accepts(Alg::EdDSA));
    assert!(parse_jwk(
        &obj(json!({"kty":"OKP","crv":"X25519","x":encode(&x)})),
        false
    )
    .is_err());
    assert!(parse_jwk(
        &obj(json!({"kty":"OKP","crv":"Ed25519","x":encode(&x[..31])})),
        false
    )
    .is_err());
    assert!(parse_jwk(&obj(json!({"kty":"OKP","x":encode(&x)})), false).is_err());

    let k = encode(&[9u8; 32]);
    assert!(parse_jwk(&obj(json!({"kty":"oct","k":k})), false)
        .unwrap_err()
        .0
        .contains("inline"));
    let oct = parse_jwk(&obj(json!({"kty":"oct","k":k})), true).unwrap();
    assert!(
        oct.accepts(Alg::HS256) && !oct.accepts(Alg::HS384),
        "a 32-byte key is too short for HS384"
    );
    assert!(!oct.accepts(Alg::RS256));
    assert!(parse_jwk(&obj(json!({"kty":"oct","k":encode(&[9u8; 31])})), true).is_err());
    assert!(
        parse_jwk(&obj(json!({"kty":"oct","k":k,"alg":"HS512"})), true).is_err(),
        "HS512 needs 64 bytes"
    );
    assert!(parse_jwk(&obj(json!({"kty":"oct","k":k,"alg":"A256GCM"})), true).is_err());
    assert!(parse_jwk(&obj(json!({"k":k})), true)
        .unwrap_err()
        .0
        .contains("kty"));
    assert!(parse_jwk(&obj(json!({"kty":"OCT","k":k})), true).is_err());
}

#[test]
fn key_sets() {
    let ec = ec_jwk();
    let oct = json!({"kty":"oct","k":encode(&[1u8; 32])});
    assert!(parse_jwks(&json!({"keys":[ec.clone()]}).to_string(), false).is_ok());
    assert_eq!(parse_jwks("[]", false).unwrap_err(), JwksError::NotJson);
    assert_eq!(parse_jwks("{}", false).unwrap_err(), JwksError::NoKeysArray);
    assert_eq!(parse_jwks("nope", false).unwrap_err(), JwksError::NotJson);
    assert!(matches!(
        parse_jwks(r#"{"keys":[]}"#, false).unwrap_err(),
        JwksError::NoUsableKeys(_)
    ));
    assert!(matches!(
        parse_jwks(&json!({"keys":[ec.clone(), ec.clone()]}).to_string(), false).unwrap_err(),
        JwksError::DuplicateKid(_)
    ));
    assert_eq!(
        parse_jwks(&json!({"keys":[ec.clone(), oct]}).to_string(), true).unwrap_err(),
        JwksError::MixedSymmetric
    );
    // An unusable key is skipped (and reported); the usable one stays.
    let set = parse_jwks(
        &json!({"keys":[{"kty":"EC","crv":"P-521"}, ec, 5]}).to_string(),
        false,
    )
    .unwrap();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.skipped.len(), 2);
    let huge = format!(r#"{{"keys":[],"pad":"{}"}}"#, "a".repeat(300 * 1024));
    assert_eq!(parse_jwks(&huge, false).unwrap_err(), JwksError::TooLarge);
}
