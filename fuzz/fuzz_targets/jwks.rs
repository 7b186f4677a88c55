//! jwt-authn-core's JWKS parser (`parse_jwks`) on arbitrary documents, remote (`allow_oct`
//! false) and inline (true).
//!
//! Oracle: an accepted set has 1..=MAX_KEYS keys, no two with the same `kid`, no shared secret
//! from a remote document, never secrets mixed with public keys; every key accepts only the
//! algorithms of its own family; parsing is deterministic.
#![no_main]

use jwt_authn_core::alg::Alg;
use jwt_authn_core::jwk::{parse_jwks, KeyMaterial, MAX_KEYS};
use libfuzzer_sys::fuzz_target;

const ALGS: [&str; 12] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let allow_oct = flag & 1 == 1;
    let parsed = parse_jwks(text, allow_oct);
    assert_eq!(
        format!("{parsed:?}"),
        format!("{:?}", parse_jwks(text, allow_oct)),
        "not deterministic"
    );
    let Ok(set) = parsed else {
        return;
    };
    assert!(
        !set.keys.is_empty() && set.keys.len() <= MAX_KEYS,
        "{} keys",
        set.keys.len()
    );
    let mut kids: Vec<&str> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
    let n = kids.len();
    kids.sort_unstable();
    kids.dedup();
    assert_eq!(kids.len(), n, "duplicate kid accepted");
    let octs = set
        .keys
        .iter()
        .filter(|k| matches!(k.material, KeyMaterial::Oct(_)))
        .count();
    assert!(allow_oct || octs == 0, "a remote JWKS gave a shared secret");
    assert!(
        octs == 0 || octs == set.keys.len(),
        "secrets mixed with public keys"
    );
    for key in &set.keys {
        for name in ALGS {
            let alg = Alg::parse(name).expect("alg");
            if key.accepts(alg) {
                assert_eq!(alg.family(), key.material.family(), "{name} on {key:?}");
                assert!(key.alg.is_none_or(|own| own == alg));
            }
        }
    }
});
