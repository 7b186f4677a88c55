//! Signing helpers for the core tests (jwt-simple as the signer; the committed fixtures in
//! tests/fixtures/jwt use an independent implementation).
#![allow(dead_code)]

use jwt_authn_core::b64::encode;
use serde_json::{json, Value};

pub fn token(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let signing_input = format!(
        "{}.{}",
        encode(header.to_string().as_bytes()),
        encode(claims.to_string().as_bytes())
    );
    let sig = sign(signing_input.as_bytes());
    format!("{signing_input}.{}", encode(&sig))
}

pub fn hs256(key: &[u8], header: Value, claims: Value) -> String {
    token(header, claims, |input| hmac(key, input))
}

/// HMAC-SHA256, written out (RFC 2104) so the tests do not depend on the code under test.
pub fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

pub fn oct_jwks(key: &[u8], kid: &str) -> String {
    json!({"keys":[{"kty":"oct","k":encode(key),"kid":kid,"alg":"HS256"}]}).to_string()
}
