//! JWTs for the jwt-authn / jwt_authn configurations, signed at bench time from the fixture keys in
//! `tests/fixtures/jwt/keys/` (the JWKS in `policies/jwt-authn/inline-fixture-keys.json` holds
//! their public halves under the same `kid`s).

use std::path::Path;

use anyhow::{Context, Result};
use jwt_simple::prelude::*;

/// Issuer and audience every token carries (those of the inline-fixture-keys policy).
pub const ISSUER: &str = "https://idp.example.com";
pub const AUDIENCE: &str = "orders";

/// The signing algorithm of a token pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

/// Signs `count` distinct tokens (subjects `user-0` …, valid for a day) with the fixture key of
/// `alg` found in `keys_dir` (`rsa-1.pem`, kid `rsa-1`; `ec-1.pem`, kid `ec-1`).
pub fn sign_pool(keys_dir: &Path, alg: Alg, count: usize) -> Result<Vec<String>> {
    let read = |name: &str| {
        let path = keys_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let claims = |i: usize| {
        Claims::create(Duration::from_hours(24))
            .with_issuer(ISSUER)
            .with_audience(AUDIENCE)
            .with_subject(format!("user-{i}"))
            .with_jwt_id(format!("bench-{i}"))
    };
    match alg {
        Alg::Rs256 => {
            let key = RS256KeyPair::from_pem(&read("rsa-1.pem")?)
                .map_err(|e| anyhow::anyhow!("loading rsa-1.pem: {e}"))?
                .with_key_id("rsa-1");
            (0..count)
                .map(|i| {
                    key.sign(claims(i))
                        .map_err(|e| anyhow::anyhow!("signing an RS256 token: {e}"))
                })
                .collect()
        }
        Alg::Es256 => {
            let key = ES256KeyPair::from_pem(&read("ec-1.pem")?)
                .map_err(|e| anyhow::anyhow!("loading ec-1.pem: {e}"))?
                .with_key_id("ec-1");
            (0..count)
                .map(|i| {
                    key.sign(claims(i))
                        .map_err(|e| anyhow::anyhow!("signing an ES256 token: {e}"))
                })
                .collect()
        }
    }
}
